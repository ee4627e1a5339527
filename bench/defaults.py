"""Few-step sampling, default against default: what a user gets from polydiff's default time
grid against what they get from diffusers' default scheduler settings, for the algorithms the
two libraries share (DDIM, DPM-Solver++(2M), UniPC), on three families of Gaussian mixtures
with exact scores. The measurement behind issue 11's first section and behind the few-step
defaults of DDPM's linear-beta family.

- **Ours**: ``polydiff.sample`` with no grid named, i.e. the grid its plan takes from
  ``Schedule.sampling_grid(sampler, steps)``. For ``vp_discrete`` (and ``vp_linear``) that is
  the quadratic grid in t, except uniform t for DPM-Solver++(2M) at <= 5 steps
  (``polydiff.processes.gaussian.ddpm_sampling_grid``); t = 1 to t = 1e-3. ``--candidates``
  runs our samplers again on other grids, among them ``uniform_logsnr``, the default before.

    python bench/defaults.py                 # 3 families x d in (2, 16, 64) x NFE in (5, 10, 20, 50)
    python bench/defaults.py --quick         # d = 2, NFE 5 and 10
    python bench/defaults.py --candidates uniform_logsnr,uniform_t,quadratic   # also other grids
    python bench/defaults.py --sde           # SDE-DPM-Solver++(2M) on EDM, SW2 over 5 noise repeats
    python bench/defaults.py --edm           # six ODE samplers on EDM: vp_quadratic, Karras and log-SNR grids

- **Targets** (``toy.gmm.GaussianMixture``, diagonal components): ``random`` (the sampler
  benchmark's: 4 components, means in [-2, 2]^d, per-axis std 0.15-0.45); ``anisotropic``
  (ill-conditioned: per-axis std log-uniform in [0.01, 1], a 100:1 condition number inside each
  component); ``multiscale`` (4 isotropic components of std 0.02, 0.1, 0.5 and 1.0).
- **Process**: DDPM's 1000 linear betas (``vp_discrete``; diffusers' schedulers see exactly the
  same ``alphas_cumprod``), exact denoiser, the same initial points (exact draws of ``p(x_1)``)
  for both libraries.
- **Metric**: the worst per-mode error. Samples are assigned to their most likely component
  under the true mixture; for each component ``k``: ``|w_hat - w| / w`` plus the RMS over axes of
  ``(mean_hat - mean) / std`` plus the mean over axes of ``|log(std_hat / std)|`` (scale-free, so
  narrow and wide modes count alike); the table shows the maximum over components. ``floor``:
  the same metric for exact samples of the same size (sampling noise).
- **Pass**: ours <= max(1.1 x diffusers, diffusers + floor).

Writes ``bench/results/defaults.json`` and ``bench/results/defaults.md``.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import samplers as B
from common import command_line, environment, header, publish

from polydiff.toy.gmm import GaussianMixture

ALGORITHMS = ("ddim", "dpm++2m", "unipc")
EDM_NFES = [5, 6, 7, 8, 10, 15, 20, 50]  # --edm: dense at few steps, where the grids differ most


def family(name: str, dim: int, seed: int = 0) -> GaussianMixture:
    """One of the three target families in ``dim`` dimensions."""
    g = torch.Generator().manual_seed(1000 * dim + seed)
    if name == "random":
        return B.make_mixture(dim)
    k = 4
    means = (torch.rand(k, dim, generator=g, dtype=torch.float64) * 4 - 2)
    weights = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    if name == "anisotropic":
        stds = torch.exp(torch.rand(k, dim, generator=g, dtype=torch.float64) * math.log(100.0)) * 0.01
    elif name == "multiscale":
        stds = torch.tensor([0.02, 0.1, 0.5, 1.0], dtype=torch.float64)[:, None].expand(k, dim).clone()
    else:
        raise ValueError(f"unknown target family {name!r}")
    return GaussianMixture(weights, means, stds)


def worst_mode_error(x: torch.Tensor, gmm: GaussianMixture) -> float:
    """The worst per-component error of samples ``x`` (see the module docstring)."""
    x = x.double()
    w, mu, sd = gmm.weights.double(), gmm.means.double(), gmm.stds.double()
    logp = (torch.log(w)[None] - 0.5 * (((x[:, None] - mu[None]) / sd[None]) ** 2).sum(-1)
            - torch.log(sd).sum(-1)[None])
    assign = logp.argmax(1)
    worst = 0.0
    for k in range(len(w)):
        xs = x[assign == k]
        if len(xs) < 3:
            return math.inf  # a mode lost
        weight = abs(len(xs) / len(x) - float(w[k])) / float(w[k])
        mean = float((((xs.mean(0) - mu[k]) / sd[k]) ** 2).mean().sqrt())
        spread = float(torch.log(xs.std(0) / sd[k]).abs().mean())
        worst = max(worst, weight + mean + spread)
    return worst


CANDIDATES = {"uniform_logsnr": {"grid": "uniform_logsnr"}, "uniform_t": {"grid": "uniform_t"},
              "quadratic": {"grid": "quadratic"}, "logsnr+zero": {"grid": "uniform_logsnr", "final_zero": True}}
"""Other grids measured for our samplers beside the default (``--candidates``): ``uniform_logsnr``
(the default before the few-step defaults) and the alternatives the defaults were chosen from."""


def run(dims: list[int], nfes: list[int], families: list[str], n: int,
        candidates: list[str] = ()) -> dict[str, Any]:
    proc = B.make_process("vp_discrete")
    specs = {s.algorithm: s for s in B.diffusers_specs() if s.family == "vp" and s.algorithm in ALGORITHMS}
    rows = []
    for fam in families:
        for dim in dims:
            gmm = family(fam, dim)
            target = B.Target(dim, "vp_discrete", gmm, proc)
            x_init = target.exact(n, 1.0, seed=7).float()
            floor = worst_mode_error(gmm.sample(n, torch.Generator().manual_seed(8)), gmm)
            for alg in ALGORITHMS:
                for nfe in nfes:
                    t0 = time.perf_counter()
                    # no grid named: the plan's default, as for a user of polydiff.sample
                    ours = worst_mode_error(B.run_ours(proc, gmm, alg, x_init, steps=nfe).x, gmm)
                    theirs = worst_mode_error(B.run_diffusers(specs[alg], gmm, proc, x_init, nfe).x, gmm)
                    ok = ours <= max(1.1 * theirs, theirs + floor)
                    alt = {c: worst_mode_error(B.run_ours(proc, gmm, alg, x_init, steps=nfe, **CANDIDATES[c]).x, gmm)
                           for c in candidates}
                    rows.append({"family": fam, "dim": dim, "algorithm": alg, "nfe": nfe, "ours": ours,
                                 "ours_grid": proc.schedule.sampling_grid(alg, nfe),
                                 "diffusers": theirs, "floor": floor, "pass": ok, "candidates": alt,
                                 "seconds": time.perf_counter() - t0})
                    print(f"[defaults] {fam} d={dim} {alg} nfe={nfe}: ours {ours:.3f} diffusers {theirs:.3f} "
                          f"floor {floor:.3f} {'pass' if ok else 'MISS'}", file=sys.stderr, flush=True)
    return {"n": n, "process": "vp_discrete", "rows": rows}


SDE_ALGORITHM = "dpm++2m_sde"
# --edm: the samplers of EDM.sampling_grid's vp_quadratic rule (DDIM, the same as Euler there, left out),
# and Heun and DEIS, which keep Karras' grid: the vp_quadratic row shows why
EDM_ALGORITHMS = ("dpm++2m", "unipc", "dpm++3m", "euler", "heun", "deis")
KEYS = ("ours", "before", "diffusers")  # the runs of an EDM row, in the order the report shows them


def _summary(xs: list[torch.Tensor], ev: Any, gmm: GaussianMixture) -> dict[str, float] | None:
    """Mean SW2 (its spread over noise repeats) and worst per-mode error of runs; None for no runs."""
    if not xs:
        return None
    sw = [ev.metrics(x)["sw2"] for x in xs]
    return {"sw2": statistics.fmean(sw), "sw2_std": statistics.stdev(sw) if len(sw) > 1 else 0.0,
            "worst_mode": statistics.fmean(worst_mode_error(x, gmm) for x in xs)}


def run_edm(dims: list[int], nfes: list[int], families: list[str], algorithms: tuple[str, ...],
            repeats: int, also: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Solvers on EDM (sigma 0.002-80), default against default: ours with no grid named
    (``EDM.sampling_grid`` to ``EDM.sampling_t_min``); ``before``, the default before those rules
    (Karras rho 7 to sigma_min); diffusers' ``EDMDPMSolverMultistepScheduler`` defaults (final
    sigma 0) where it has the algorithm. A stochastic sampler's errors are averaged over
    ``repeats`` runs with fresh noise (seeds 0..R-1) from the same initial points; SW2 against
    the data with the sampler benchmark's samples, projections and margin (two standard errors of
    the difference, at least the deterministic one). ``also``: other settings of ours run beside
    (name: sample keywords), reported in the row's ``also``."""
    from polydiff.samplers import SAMPLERS, for_budget

    proc = B.make_process("edm")
    sched = proc.schedule
    specs = {s.algorithm: B.default_spec(s) for s in B.diffusers_specs()
             if s.family == "edm" and s.algorithm in algorithms}
    also = also or {}
    variants = {"ours": {}, "before": {"grid": sched.default_grid, "t_min": sched.t_min}, **also}
    rows = []
    for fam in families:
        for dim in dims:
            gmm = B.make_mixture(dim) if fam == "random" else family(fam, dim)
            target = B.Target(dim, "edm", gmm, proc)
            n = B.DEFAULT_SAMPLES.get(dim, 4_000)
            ev = B.Evaluator(target, 0.0, n, B.directions(dim, 256, 7), seed=202)
            x_init = target.exact(n, sched.t_max, 303).float()

            for alg in algorithms:
                reps = repeats if SAMPLERS.get(alg).stochastic else 1
                for nfe in nfes:
                    t0 = time.perf_counter()
                    plan = for_budget(alg, nfe)
                    steps = plan.pop("steps")
                    runs: dict[str, list[torch.Tensor]] = {name: [] for name in (*variants, "diffusers")}
                    dspec = None
                    if alg in specs:
                        k_inf = B.default_steps(specs[alg], nfe)
                        dspec = replace(specs[alg], steps_for_nfe=lambda _n, k=k_inf: k)
                    for r in range(reps):
                        for name, kw in variants.items():
                            runs[name].append(B.run_ours(proc, gmm, alg, x_init, steps=steps, seed=r, **kw, **plan).x)
                        if dspec is not None:
                            runs["diffusers"].append(B.run_diffusers(dspec, gmm, proc, x_init, nfe, seed=r).x)
                    row: dict[str, Any] = {"family": fam, "dim": dim, "algorithm": alg, "nfe": nfe, "n": n,
                                           "repeats": reps, "stochastic": reps > 1, "floor": ev.floor,
                                           "ours_grid": sched.sampling_grid(alg, steps),
                                           "ours_t_min": sched.sampling_t_min(alg, steps),
                                           **{key: _summary(runs[key], ev, gmm) for key in KEYS},
                                           "also": {name: _summary(runs[name], ev, gmm) for name in also}}
                    against = row["diffusers"] or row["before"]  # no diffusers scheduler: the old default
                    row["margin"] = B.error_margin({**row, "diffusers": against})
                    judged = row["diffusers"] is not None
                    row["pass"] = row["ours"]["sw2"] <= against["sw2"] + row["margin"] if judged else None
                    row["pass_before"] = row["before"]["sw2"] <= against["sw2"] + row["margin"] if judged else None
                    row["seconds"] = time.perf_counter() - t0
                    rows.append(row)
                    sw = {key: "-" if row[key] is None else f"{row[key]['sw2']:.3f}" for key in KEYS}
                    verdict = {True: "pass", False: "MISS", None: ""}[row["pass"]]
                    print(f"[defaults edm] {fam} d={dim} {alg} nfe={nfe}: ours {sw['ours']} ({row['ours_grid']}) "
                          f"before {sw['before']} diffusers {sw['diffusers']} (margin {row['margin']:.3f}) {verdict}",
                          file=sys.stderr, flush=True)
    return {"process": "edm", "algorithms": list(algorithms), "rows": rows}


def markdown_edm(res: dict[str, Any], title: str, ours: str, before: str) -> str:
    """One table per algorithm: SW2 (worst per-mode error) ours / before / diffusers per target
    and NFE. ``ours`` and ``before`` say in words what the two polydiff runs walked."""
    lines = header(title, res["environment"])
    rows = res["rows"]
    judged = [r for r in rows if r["pass"] is not None]
    stoch = [r for r in rows if r["stochastic"]]
    noise = (f" Stochastic samplers: each error the mean over {stoch[0]['repeats']} runs with fresh noise from the "
             "same initial points." if stoch else " Every run starts from the same initial points.")
    lines += [f"EDM (sigma 0.002-80), SW2 to the data.{noise} Ours: `polydiff.sample` with no grid named ({ours}); "
              f"before: {before}; diffusers: `EDMDPMSolverMultistepScheduler` defaults (final sigma 0; `-` where "
              "diffusers has no EDM scheduler for the algorithm). Cells: SW2 ours / before / diffusers (worst per-mode "
              "error in brackets, same order). Pass: ours <= diffusers + margin (two standard errors of the "
              "difference, at least the deterministic one). "
              f"**Ours passes {sum(r['pass'] for r in judged)} of {len(judged)} cells, before "
              f"{sum(r['pass_before'] for r in judged)}; ours below before in "
              f"{sum(r['ours']['sw2'] < r['before']['sw2'] for r in rows)} of {len(rows)}, above it by more than "
              f"the margin in {sum(r['ours']['sw2'] > r['before']['sw2'] + r['margin'] for r in rows)}.**", ""]
    nfes = sorted({r["nfe"] for r in rows})
    for alg in dict.fromkeys(r["algorithm"] for r in rows):
        sub = [r for r in rows if r["algorithm"] == alg]
        ratios = {k: [r["ours"]["sw2"] / r["before"]["sw2"] for r in sub if r["nfe"] == k] for k in nfes}
        grids = {k: "/".join(dict.fromkeys(r["ours_grid"] for r in sub if r["nfe"] == k)) for k in nfes}
        lines += [f"### {alg}", "",
                  "Ours / before (median over targets, range), and ours' grid: " + "; ".join(
                      f"NFE {k} {statistics.median(v):.2f} ({min(v):.2f}-{max(v):.2f}, {grids[k]})"
                      for k, v in ratios.items() if v) + ".", ""]
        for name in dict.fromkeys(a for r in sub for a in r.get("also", {})):
            alt = {k: [r["also"][name]["sw2"] / r["before"]["sw2"] for r in sub if r["nfe"] == k] for k in nfes}
            lines += [f"`{name}` at every step count / before: " + "; ".join(
                f"NFE {k} {statistics.median(v):.2f} ({min(v):.2f}-{max(v):.2f})" for k, v in alt.items() if v)
                + ".", ""]
        lines += ["| target | d | " + " | ".join(f"NFE {k}" for k in nfes) + " |", "|---|---|" + "---|" * len(nfes)]
        for fam in dict.fromkeys(r["family"] for r in sub):
            for dim in sorted({r["dim"] for r in sub if r["family"] == fam}):
                cells = []
                for k in nfes:
                    r = next((r for r in sub if r["family"] == fam and r["dim"] == dim and r["nfe"] == k), None)
                    if r is None:
                        cells.append("")
                        continue
                    cells.append(" / ".join("-" if r[v] is None else f"{r[v]['sw2']:.3f}" for v in KEYS)
                                 + " (" + " / ".join("-" if r[v] is None else f"{r[v]['worst_mode']:.2f}"
                                                     for v in KEYS)
                                 + ")" + (" MISS" if r["pass"] is False else ""))
                lines.append(f"| {fam} | {dim} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def default_grids(rows: list[dict[str, Any]]) -> str:
    """Which grid the default took, per algorithm and NFE, in words: the most common one, then
    the exceptions."""
    used = {(r["algorithm"], r["nfe"]): r.get("ours_grid", "?") for r in rows}
    names = list(used.values())
    main = max(dict.fromkeys(names), key=names.count)
    other = [f"`{g}` for {alg} at NFE {k}" for (alg, k), g in used.items() if g != main]
    return f"`{main}`" + (", except " + ", ".join(other) if other else "")


def markdown(res: dict[str, Any]) -> str:
    lines = header("Few-step sampling, default against default (polydiff vs diffusers)", res["environment"])
    rows = res["rows"]
    passed = sum(r["pass"] for r in rows)
    lines += [f"Worst per-mode error (lower is better), ours / diffusers, {res['n']} samples per run, the same "
              "initial points; `floor`: exact samples of the same size. Pass: ours <= max(1.1 x diffusers, "
              f"diffusers + floor). **{passed} of {len(rows)} cells pass.** polydiff: `polydiff.sample` with no "
              "grid named, i.e. the grid its plan takes from `Schedule.sampling_grid(sampler, steps)`, from t = 1 to "
              f"t = 1e-3 ({default_grids(rows)}); diffusers: each scheduler's default settings.", ""]
    nfes = sorted({r["nfe"] for r in rows})
    for fam in dict.fromkeys(r["family"] for r in rows):
        for dim in sorted({r["dim"] for r in rows if r["family"] == fam}):
            sub = [r for r in rows if r["family"] == fam and r["dim"] == dim]
            lines += [f"### {fam}, d = {dim} (floor {sub[0]['floor']:.3f})", "",
                      "| algorithm | " + " | ".join(f"NFE {k}" for k in nfes) + " |",
                      "|---|" + "---|" * len(nfes)]
            for alg in ALGORITHMS:
                cells = []
                for k in nfes:
                    r = next((r for r in sub if r["algorithm"] == alg and r["nfe"] == k), None)
                    cells.append("" if r is None else
                                 f"{r['ours']:.3f} / {r['diffusers']:.3f}{'' if r['pass'] else ' MISS'}")
                lines.append(f"| {alg} | " + " | ".join(cells) + " |")
            lines.append("")
    names = sorted({c for r in rows for c in r.get("candidates", {})})
    if names:
        total = sum(r["pass"] for r in rows)
        per = {c: sum(r["candidates"][c] <= max(1.1 * r["diffusers"], r["diffusers"] + r["floor"]) for r in rows)
               for c in names}
        lines += ["## Other grids for our samplers", "",
                  "Cells passing (same rule) with each grid instead of the default, per algorithm and NFE "
                  f"(out of {len({(r['family'], r['dim']) for r in rows})} targets each); `default` is the grid "
                  "named in its column (`uniform_logsnr` was the default of every schedule before the few-step "
                  f"defaults). All cells: default {total}, " + ", ".join(f"{c} {v}" for c, v in per.items())
                  + f" of {len(rows)}.", "",
                  "| algorithm | NFE | default | " + " | ".join(names) + " |", "|---|---|---|" + "---|" * len(names)]
        for alg in ALGORITHMS:
            for k in nfes:
                sub = [r for r in rows if r["algorithm"] == alg and r["nfe"] == k]

                def passes(err_of: Any, sub: list[dict[str, Any]] = sub) -> int:
                    return sum(err_of(r) <= max(1.1 * r["diffusers"], r["diffusers"] + r["floor"]) for r in sub)

                cells = [str(passes(lambda r, c=c: r["candidates"][c])) for c in names]
                grids = "/".join(dict.fromkeys(r.get("ours_grid", "?") for r in sub))
                lines.append(f"| {alg} | {k} | {passes(lambda r: r['ours'])} ({grids}) | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="d = 2, NFE 5 and 10")
    p.add_argument("--samples", type=int, default=8000, help="samples per run (default 8000)")
    p.add_argument("--candidates", default="", help=f"also measure these grids for ours: {', '.join(CANDIDATES)}")
    p.add_argument("--sde", action="store_true", help="SDE-DPM-Solver++(2M) on EDM instead (defaults_sde.*)")
    p.add_argument("--edm", action="store_true", help="six ODE samplers on EDM instead: vp_quadratic, "
                   "Karras and log-SNR grids (defaults_edm.*)")
    p.add_argument("--repeats", type=int, default=5, help="noise repeats per SDE cell (default 5)")
    args = p.parse_args(argv)
    unknown = [c for c in args.candidates.split(",") if c and c not in CANDIDATES]
    if unknown:
        p.error(f"unknown candidate grid {', '.join(unknown)}; allowed: {', '.join(CANDIDATES)}")
    torch.set_num_threads(2)
    dims, nfes = ([2], [5, 10]) if args.quick else ([2, 16, 64], [5, 10, 20, 50])
    families = ["random", "anisotropic", "multiscale"]
    if args.sde:
        res = {"environment": environment(command_line("defaults.py", argv)),
               **run_edm(dims, nfes, families, (SDE_ALGORITHM,), args.repeats)}
        text = markdown_edm(res, "Few-step SDE sampling on EDM, default against default (polydiff vs diffusers)",
                            f"Karras rho 7 to sigma {res['rows'][0]['ours_t_min']:g}, `EDM.sampling_t_min`",
                            "the same grid to sigma_min 0.002 (the default until this table)")
        publish("defaults_sde_quick" if args.quick else "defaults_sde", res, text)
        return 0
    if args.edm:
        nfes = [5, 10] if args.quick else EDM_NFES
        res = {"environment": environment(command_line("defaults.py", argv)),
               **run_edm(dims, nfes, families, EDM_ALGORITHMS, 1,
                         {"vp_quadratic": {"grid": "vp_quadratic"}, "uniform_logsnr": {"grid": "uniform_logsnr"}})}
        text = markdown_edm(res, "Few-step ODE sampling on EDM, default against default (polydiff vs diffusers)",
                            "`EDM.sampling_grid`: `vp_quadratic` for DPM-Solver++(2M), UniPC, Euler (and DDIM) "
                            "and for (3M) below 15 steps (log-SNR from there), Karras rho 7 for the others",
                            "Karras rho 7 (EDM's grid); `uniform_logsnr`: the multistep solvers' default from 7 "
                            "steps before this table")
        publish("defaults_edm_quick" if args.quick else "defaults_edm", res, text)
        return 0
    res = {"environment": environment(command_line("defaults.py", argv)),
           **run(dims, nfes, ["random", "anisotropic", "multiscale"], args.samples,
                 [c for c in args.candidates.split(",") if c])}
    publish("defaults_quick" if args.quick else "defaults", res, markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
