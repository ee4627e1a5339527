"""What ``calibrate_grid`` costs and what it saves: model calls of the fit against the network
evaluations per sample the fitted grid saves over the default grid of the same sampler.

For exact Gaussian-mixture denoisers (``toy.gmm.ExactDenoiser``, VP ``vp_discrete``) in 2 and
16 dimensions and DPM-Solver++(2M) / UniPC at K = 5, 8 and 10 steps:

- cost: rows the model evaluates during the fit (pilot batch x (reference steps + trial grids
  x steps)), counted by a wrapper;
- quality: path error (RMS distance to a 400-step DPM-Solver++(2M) solution from the same prior
  draws, 2000 fresh samples) of the fitted K-step grid and of the default grid (what
  ``polydiff.sample`` walks when no grid is named) at K steps;
- saving: the smallest M >= K whose default grid reaches the fitted grid's error (searched up
  to 200 steps), so every sample saves (M - K) x NFE/step evaluations; break-even: the number of
  samples after which the fit has paid for itself.

    python bench/calibrate.py [--pilot 256] [--trials 150] [--reference-steps 200] [--dims 2,16] [--stem calibrate]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import command_line, environment, header, publish

from polydiff import GaussianProcess, calibrate_grid, make_grid, sample
from polydiff.samplers import get_sampler
from polydiff.toy.gmm import ExactDenoiser, GaussianMixture


class Counted:
    """A model that counts the rows it evaluates."""

    def __init__(self, model: Any) -> None:
        self.model, self.rows = model, 0

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.rows += x.shape[0]
        return self.model(x, t)


def path_error(model: Any, process: Any, dim: int, grid: torch.Tensor, sampler: str, n: int = 2000,
               seed: int = 11) -> float:
    fine = sample(model, process, (n, dim), sampler="dpm++2m", steps=400, seed=seed, dtype=torch.float64)
    out = sample(model, process, (n, dim), sampler=sampler, grid=grid, seed=seed, dtype=torch.float64)
    return float(((out - fine) ** 2).mean().sqrt())


def run(args: argparse.Namespace) -> dict[str, Any]:
    rows = []
    for dim in args.dims:
        gmm = GaussianMixture.random(dim=dim, seed=dim)
        process = GaussianProcess("vp_discrete")
        model = ExactDenoiser(gmm, process, "eps")
        s = process.schedule
        for sampler in ("dpm++2m", "unipc"):
            nfe = get_sampler(sampler).nfe_per_step
            for k in (5, 8, 10):
                counted = Counted(model)
                t0 = time.perf_counter()
                grid = calibrate_grid(counted, process, (args.pilot, dim), k, sampler=sampler, seed=0,
                                      max_trials=args.trials, reference_steps=args.reference_steps)
                secs = time.perf_counter() - t0
                fitted = path_error(model, process, dim, grid, sampler)
                default = path_error(model, process, dim, make_grid(s, k, s.sampling_grid(sampler, k)), sampler)
                m = None
                for steps in range(k, 201):
                    if path_error(model, process, dim, make_grid(s, steps, s.sampling_grid(sampler, steps)),
                                  sampler) <= fitted:
                        m = steps
                        break
                saved = None if m is None else (m - k) * nfe
                rows.append({"dim": dim, "sampler": sampler, "steps": k, "fit_model_rows": counted.rows,
                             "fit_seconds": secs, "fitted_error": fitted, "default_error": default,
                             "default_steps_to_match": m, "nfe_saved_per_sample": saved,
                             "break_even_samples": None if not saved else counted.rows / saved})
                print(f"d={dim} {sampler} K={k}: fit {counted.rows} rows, error {fitted:.4f} vs default "
                      f"{default:.4f}, default needs {m} steps", file=sys.stderr, flush=True)
    return {"rows": rows, "pilot": args.pilot, "trials": args.trials, "reference_steps": args.reference_steps}


def render(res: dict[str, Any]) -> str:
    lines = header("calibrate_grid: cost of the fit against the sampling it saves", res["environment"])
    lines += [f"Pilot batch {res['pilot']}, at most {res['trials']} trial grids, {res['reference_steps']}-step "
              "reference. Path error: "
              "RMS distance to a 400-step DPM-Solver++(2M) solution, 2000 fresh samples. Default = the grid "
              "`polydiff.sample` walks for the sampler and step count.", "",
              "| dim | sampler | K | fit cost (model rows) | fit s | error fitted | error default K | default steps "
              "for the fitted error | NFE saved / sample | break-even samples |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        m = r["default_steps_to_match"]
        be = r["break_even_samples"]
        lines.append(f"| {r['dim']} | {r['sampler']} | {r['steps']} | {r['fit_model_rows']:,} | "
                     f"{r['fit_seconds']:.1f} | "
                     f"{r['fitted_error']:.4f} | {r['default_error']:.4f} | {'>200' if m is None else m} | "
                     f"{'n/a' if r['nfe_saved_per_sample'] is None else r['nfe_saved_per_sample']} | "
                     f"{'n/a' if be is None else f'{be:,.0f}'} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pilot", type=int, default=256)
    p.add_argument("--trials", type=int, default=150)
    p.add_argument("--dims", type=lambda s: [int(v) for v in s.split(",")], default=[2, 16])
    p.add_argument("--reference-steps", type=int, default=200)
    p.add_argument("--stem", default="calibrate", help="results file stem in bench/results (default calibrate)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    res = {"environment": environment(command_line("calibrate.py", argv)), **run(args)}
    publish(args.stem, res, render(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
