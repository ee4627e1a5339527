"""Sampler benchmark: every Gaussian sampler against exact targets, and side by side with
diffusers' schedulers on the same exact model and the same time grid.

    python bench/samplers.py            # full run (about 20-30 minutes on 2 CPU cores)
    python bench/samplers.py --quick    # CI smoke configuration (a few minutes)

Run as a script, it writes bench/results/samplers.json (every number) and samplers.md (the
report, headed by the exact command) unless ``--json`` / ``--md`` name other files;
``--render JSON`` only re-renders the report from a results file. ``main(argv)`` writes only
the files it is given (and prints the report when there are none); ``run(Config)`` returns
the results.

Why exact targets: :class:`polydiff.toy.gmm.ExactDenoiser` returns the exact ``E[x0 | x_t]`` of
a Gaussian mixture, and every run starts from exact draws of the marginal ``p(x_t)`` at the
grid's first time (not from the N(0, sigma_max^2) prior), so all the error measured here is
the solver's, plus the Monte-Carlo noise of the estimate, which is reported as a floor.

Metrics, between ``n`` generated samples and ``n`` exact draws of the marginal at the grid's
last time (the data itself when the grid ends at sigma = 0):

- ``sw2``: sliced Wasserstein-2, the root mean over random unit directions of the squared
  1-D W2 distance of the projections, each exact from sorted samples (Bonneel et al. 2015);
- the floor: the same between two independent exact sample sets (its mean and spread over
  replicates); ``sw2_excess = sqrt(max(sw2^2 - floor_rms^2, 0))`` removes the part of the
  squared distance that finite samples contribute on their own;
- ``mean_err`` (L2) and ``cov_err`` (relative Frobenius) against the exact moments;
- ``path_rmse`` (deterministic samplers): RMS per coordinate of ``x - x_ref`` where ``x_ref``
  is a converged solution of the probability-flow ODE from the same initial points. It has
  no sampling floor, so it resolves solver differences far below what SW2 can.

Overhead: the model is wrapped in a timer accumulating its own ``time.perf_counter`` time;
the per-step solver overhead is ``(total - model time) / steps`` on the same grid for both
libraries, from repeats of ours and diffusers interleaved so that load from other processes
hits both alike (medians reported). In the comparison both draw noise from a seeded
``torch.Generator``; polydiff's per-sample counter-based seeds (batch-independent samples, the
default with ``seed=``) cost extra per draw and are used in the polydiff-only tables.

Diffusers is a bench-only dependency; only its public scheduler API is used
(``set_timesteps`` / ``scale_model_input`` / ``step``).
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from polydiff.grids import make_grid
from polydiff.metrics import directions, sliced_wasserstein
from polydiff.processes import GaussianProcess
from polydiff.samplers import SAMPLERS, calibrate_grid, for_budget, sample
from polydiff.toy.gmm import ExactDenoiser, GaussianMixture

RESULTS = Path(__file__).resolve().parent / "results"

DEFAULT_DIMS = (2, 64)
DEFAULT_NFE = (5, 10, 20, 50)
DEFAULT_PROCESSES = ("vp_discrete", "edm")
DEFAULT_SAMPLES = {2: 10_000, 64: 4_000}
ADAPTIVE_TOLS = (1e-2, 1e-3, 1e-4, 1e-5)
# the default grids in words, for the report (Schedule.sampling_grid)
RULE_VP = ("for `vp_discrete` quadratic in t, uniform t for DPM-Solver++(2M) / (3M) at <= 5 steps and singlestep "
           "DPM-Solver at <= 3 steps")
RULE_EDM = ("for EDM `vp_quadratic` for DPM-Solver++(2M), UniPC, Euler and DDIM and for (3M) below 15 steps "
            "(uniform log-SNR from there), Karras rho 7 for the others")
# extra option sets benched as separate rows (label: (sampler, options)), when the sampler exists:
# EDM's stochastic setting (Karras et al. 2022, Table 5, ImageNet-64)
VARIANTS = {"edm(churn)": ("edm", {"s_churn": 40.0, "s_tmin": 0.05, "s_tmax": 50.0, "s_noise": 1.003})}
REFERENCE_STEPS = 1000  # the 1000-step Euler / DDIM references of the acceptance target
ACCEPT_RATIO = 1.5  # target (a): 10-NFE DPM-Solver++(2M) / UniPC within 1.5x of 1000-step Euler
OVERHEAD_TOL = 1.10  # target (b): timing noise allowed on per-step overhead medians
FITTED = ("dpm++2m", "unipc")  # target (a)'s samplers, also run on fitted grids
EQUIV_TOL = 1e-4  # per-sample RMS |ours - diffusers| (99th percentile) for same-maths pairs (float32)


# --------------------------------------------------------------------------- targets

@dataclass
class Target:
    """A Gaussian mixture seen through one Gaussian process."""

    dim: int
    process_name: str
    gmm: GaussianMixture
    process: GaussianProcess

    @property
    def name(self) -> str:
        return f"gmm{self.dim}d-{self.process_name}"

    def coefs(self, t: float) -> tuple[float, float]:
        """``(alpha(t), sigma(t))`` of the process."""
        tt = torch.tensor(t, dtype=torch.float64)
        s = self.process.schedule
        return float(s.alpha(tt)), float(s.sigma(tt))

    def exact(self, n: int, t: float, seed: int) -> Tensor:
        """``n`` exact draws of ``p(x_t)`` (float64)."""
        a, s = self.coefs(t)
        return self.gmm.sample(n, torch.Generator().manual_seed(seed), alpha=a, sigma=s)


def make_process(name: str) -> GaussianProcess:
    """The benchmark's processes: EDM with sigma in [0.002, 80] (Karras rho-7 grid by default),
    otherwise a registered schedule with its defaults (``vp_discrete``: DDPM's 1000 betas)."""
    if name == "edm":
        return GaussianProcess("edm", sigma_min=0.002, sigma_max=80.0)
    return GaussianProcess(name)


def make_mixture(dim: int, seed: int | None = None) -> GaussianMixture:
    """The fixed-seed target: ``GaussianMixture.random`` with its defaults (4 components, means
    in [-2, 2]^d, per-axis std 0.15..0.45, uneven weights), seeded by the dimension."""
    return GaussianMixture.random(dim=dim, seed=dim if seed is None else seed)


# --------------------------------------------------------------------------- metrics

def moment_errors(x: Tensor, mean: Tensor, cov: Tensor) -> tuple[float, float]:
    """``(||mean_hat - mean||, ||cov_hat - cov||_F / ||cov||_F)``."""
    x = x.double()
    return float((x.mean(0) - mean).norm()), float((torch.cov(x.T).reshape(cov.shape) - cov).norm() / cov.norm())


class Evaluator:
    """Exact reference draws at one time, shared projection directions
    (:func:`polydiff.metrics.directions`) and the noise floor. SW2 is
    :func:`polydiff.metrics.sliced_wasserstein` on equal-size sets, so each 1-D W2 is exact
    from the sorted projections."""

    def __init__(self, target: Target, t: float, n: int, dirs: Tensor, *, seed: int = 0,
                 replicates: int = 5) -> None:
        self.t, self.dirs = t, dirs
        self.ref = target.exact(n, t, seed)
        self.mean, self.cov = target.gmm.moments(*target.coefs(t))
        self.floor_rms = 0.0
        reps = [self.metrics(target.exact(n, t, seed + 1 + r)) for r in range(replicates)]
        sw = [r["sw2"] for r in reps]
        self.floor_rms = math.sqrt(sum(v * v for v in sw) / len(sw))
        self.floor = {"sw2": statistics.fmean(sw), "sw2_std": statistics.stdev(sw) if len(sw) > 1 else 0.0,
                      "sw2_rms": self.floor_rms, "mean_err": statistics.fmean(r["mean_err"] for r in reps),
                      "cov_err": statistics.fmean(r["cov_err"] for r in reps), "replicates": replicates}

    def metrics(self, x: Tensor) -> dict[str, float]:
        if not bool(torch.isfinite(x).all()):
            nan = float("nan")
            return {"sw2": nan, "sw2_excess": nan, "mean_err": nan, "cov_err": nan, "finite": False}
        if x.shape != self.ref.shape:
            raise ValueError(f"{tuple(x.shape)} samples against an exact set of {tuple(self.ref.shape)}: "
                             "the SW2 here is exact only between equal-size sets")
        sw = sliced_wasserstein(x, self.ref, dirs=self.dirs)
        me, ce = moment_errors(x, self.mean, self.cov)
        return {"sw2": sw, "sw2_excess": math.sqrt(max(sw * sw - self.floor_rms**2, 0.0)), "mean_err": me,
                "cov_err": ce}


def rmse(x: Tensor, y: Tensor) -> float:
    """Root mean square difference per coordinate."""
    return float(((x.double() - y.double()) ** 2).mean().sqrt())


# --------------------------------------------------------------------------- running samplers

class ExactModel(ExactDenoiser):
    """:class:`~polydiff.toy.gmm.ExactDenoiser` (eps prediction) with a fast path for the common
    case where every sample is at the same time: the mixture's noisy moments are then formed
    once, not per sample (3-5x faster at d = 64). Same values; per-sample times fall back to
    the parent."""

    def __init__(self, gmm: GaussianMixture, process: GaussianProcess) -> None:
        super().__init__(gmm, process, "eps")

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        t = torch.as_tensor(t)
        if t.dim() > 0:
            flat = t.reshape(-1)
            if not bool((flat == flat[0]).all()):
                return super().forward(x, t)
            t = flat[0]
        c = self.process.coefs(t.to(torch.float64))
        xf = x.reshape(x.shape[0], -1)
        x0 = self.gmm.denoise(xf, c.alpha, c.sigma)
        return ((xf.double() - c.alpha * x0) / c.sigma).to(x.dtype).reshape(x.shape)


class Timed:
    """Wrap a callable; accumulate its own wall time (``perf_counter``) and its call count."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn, self.seconds, self.calls = fn, 0.0, 0

    def __call__(self, *args: Any) -> Any:
        t0 = time.perf_counter()
        out = self.fn(*args)
        self.seconds += time.perf_counter() - t0
        self.calls += 1
        return out


@dataclass
class Run:
    """One sampling run: the samples, model evaluations, grid steps and timings."""

    x: Tensor
    nfe: int
    steps: int
    seconds: float
    model_seconds: float

    @property
    def overhead_per_step(self) -> float:
        return (self.seconds - self.model_seconds) / max(self.steps, 1)


def run_ours(process: GaussianProcess, gmm: GaussianMixture, sampler: str, x_init: Tensor, *, steps: int = 10,
             grid: str | Tensor | None = None, seed: int = 0, dtype: torch.dtype = torch.float32,
             torch_rng: bool = False, **options: Any) -> Run:
    """``polydiff.sample`` from the given initial points with the exact denoiser (eps prediction).

    ``torch_rng`` draws noise from a seeded ``torch.Generator`` (what diffusers uses) instead of
    polydiff's per-sample counter-based seeds, so overhead comparisons measure the solvers alone.
    """
    den = ExactModel(gmm, process)
    model = Timed(lambda st, t: {"x": den(st["x"], t)})
    rng = {"generator": torch.Generator().manual_seed(seed)} if torch_rng else {"seed": seed}
    t0 = time.perf_counter()
    out = sample(model, {"x": process}, {"x": x_init.to(dtype)}, sampler=sampler, steps=steps, grid=grid,
                 dtype=dtype, **rng, **options)["x"]
    total = time.perf_counter() - t0
    n_steps = grid.shape[0] - 1 if isinstance(grid, Tensor) else steps
    return Run(out, model.calls, n_steps, total, model.seconds)


def is_adaptive(name: str) -> bool:
    """Adaptive-step samplers (e.g. rk45: ``nfe_per_step = 0``) take tolerances, not step counts."""
    sdef = SAMPLERS.get(name)
    return sdef.nfe_per_step == 0 or "rtol" in sdef.defaults


def gaussian_samplers() -> list[str]:
    """Every registered Gaussian sampler of ordinary denoisers, read from the registry at call
    time (samplers that make their own calls of a two-time model, such as ``ctm``, need a
    distilled network and are benchmarked in bench/distill.py)."""
    return [n for n in SAMPLERS if SAMPLERS.get(n).kind == "gaussian" and SAMPLERS.get(n).loop == "grid"]


def _err(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"[:300]


# --------------------------------------------------------------------------- accuracy tables

@dataclass
class Config:
    """What to run; ``quick`` is the CI smoke configuration."""

    dims: Sequence[int] = DEFAULT_DIMS
    processes: Sequence[str] = DEFAULT_PROCESSES
    nfe: Sequence[int] = DEFAULT_NFE
    samples: int | None = None  # None: DEFAULT_SAMPLES per dimension
    samplers: Sequence[str] | None = None  # None: every Gaussian sampler in the registry
    projections: int = 256
    replicates: int = 5  # exact-vs-exact floor replicates
    path_steps: int = 1000  # steps of the converged ODE reference for path_rmse (comparisons: half)
    reference_steps: int = REFERENCE_STEPS
    repeats: int = 5  # interleaved timing repeats in the diffusers comparison
    diffusers: bool = True
    defaults: bool = True  # also compare default against default (our plan grid, diffusers' default settings)
    fitted: bool = True  # also run target (a)'s samplers on grids fitted with calibrate_grid
    pilot: int = 1024  # pilot samples of the fitted grids
    fit_reference_steps: int = 250
    # target (a) over independent replicate pairs (initial points, exact reference set): the
    # 1000-step Euler SW2 sits at the sampling floor, so one pair gives a noisy denominator
    a_replicates: int = 10
    seed: int = 0
    dtype: torch.dtype = torch.float32
    log: Callable[[str], None] = field(default=lambda msg: print(msg, file=sys.stderr, flush=True))

    def n(self, dim: int) -> int:
        return self.samples if self.samples is not None else DEFAULT_SAMPLES.get(dim, 4_000)


def reference_grid(target: Target) -> str:
    """The grid of the long reference runs (the converged ODE solution, the 1000-step Euler and
    DDIM): the schedule's ``default_grid`` (``make_grid``'s default: uniform log-SNR for VP,
    Karras for EDM), named, so that the yardstick stays put when the plan's default grid (what
    the samplers under test walk) changes."""
    return target.process.schedule.default_grid


def plan_grid(target: Target, sampler: str, steps: int) -> str:
    """The grid ``polydiff.sample`` walks with ``sampler`` in ``steps`` steps when no grid is
    named: ``Schedule.sampling_grid`` (e.g. for ``vp_discrete`` quadratic in t, uniform t for
    DPM-Solver++(2M) / (3M) at <= 5 steps and singlestep DPM-Solver at <= 3 steps; Karras for
    EDM)."""
    return target.process.schedule.sampling_grid(sampler, steps)


def path_reference(target: Target, x_init: Tensor, steps: int) -> tuple[Tensor, float] | None:
    """A converged PF-ODE solution from ``x_init`` on :func:`reference_grid`: DPM-Solver++(2M)
    with ``steps`` steps in float64; its own error is estimated against ``steps // 2`` steps
    (second order: error(steps) ~ |x(steps) - x(steps/2)| / 3)."""
    grid = reference_grid(target)
    try:
        fine = run_ours(target.process, target.gmm, "dpm++2m", x_init, steps=steps, grid=grid, dtype=torch.float64).x
        half = run_ours(target.process, target.gmm, "dpm++2m", x_init, steps=steps // 2, grid=grid,
                        dtype=torch.float64).x
    except Exception:  # no reference solver: the path metric is left out
        return None
    return fine, rmse(fine, half) / 3


def _row(ev: Evaluator, r: Run, ref: Tensor | None, stochastic: bool, **extra: Any) -> dict[str, Any]:
    row = {**extra, "steps": r.steps, "nfe": r.nfe, **ev.metrics(r.x), "seconds": r.seconds,
           "model_seconds": r.model_seconds}
    row["path_rmse"] = rmse(r.x, ref) if ref is not None and not stochastic else None
    return row


def accuracy(target: Target, cfg: Config, samplers: Sequence[str]) -> dict[str, Any]:
    """Every sampler at every NFE on the grid a user gets, the plan's default (:func:`plan_grid`,
    ``t_max -> t_min``); the long references on :func:`reference_grid`."""
    sched = target.process.schedule
    g = make_grid(sched, 2)
    t_start, t_end = float(g[0]), float(g[-1])
    n = cfg.n(target.dim)
    x_init = target.exact(n, t_start, cfg.seed + 101).to(cfg.dtype)
    dirs = directions(target.dim, cfg.projections, cfg.seed + 7)
    ev = Evaluator(target, t_end, n, dirs, seed=cfg.seed + 202, replicates=cfg.replicates)
    cfg.log(f"[{target.name}] n={n}, t {t_start:g} -> {t_end:g}, SW2 floor {ev.floor['sw2']:.4g} "
            f"+- {ev.floor['sw2_std']:.2g}")
    pref = path_reference(target, x_init, cfg.path_steps)
    ref = pref[0] if pref else None
    out: dict[str, Any] = {
        "name": target.name, "dim": target.dim, "process": target.process_name, "n": n,
        "mixture": target.gmm.to_dict(), "t_start": t_start, "t_end": t_end, "grid": "plan default",
        "reference_grid": reference_grid(target),
        "floor": ev.floor,
        "path_reference": {"sampler": "dpm++2m", "steps": cfg.path_steps, "dtype": "float64",
                           "estimated_rmse": pref[1]} if pref else None,
        "references": {}, "samplers": {}}
    for name in ("euler", "ddim"):
        if name not in SAMPLERS:
            continue
        try:
            r = run_ours(target.process, target.gmm, name, x_init, steps=cfg.reference_steps,
                         grid=reference_grid(target), seed=cfg.seed, dtype=cfg.dtype)
            out["references"][f"{name}_{cfg.reference_steps}"] = _row(ev, r, ref, False, sampler=name,
                                                                       grid=reference_grid(target))
        except Exception as err:  # a broken reference is reported, not fatal
            out["references"][f"{name}_{cfg.reference_steps}"] = {"skipped": _err(err)}
    for label, name, options in bench_rows(samplers):
        sdef = SAMPLERS.get(name)
        entry: dict[str, Any] = {"sampler": name, "options": options, "stochastic": sdef.stochastic,
                                 "nfe_per_step": sdef.nfe_per_step, "description": sdef.description, "runs": []}
        out["samplers"][label] = entry
        try:
            noisy = sdef.stochastic and _draws_noise(target, name, x_init, cfg, options)
            entry["draws_noise"] = noisy
            if is_adaptive(name):
                entry["adaptive"] = True
                for tol in ADAPTIVE_TOLS:
                    opts = {**options, "rtol": tol, **({"atol": tol} if "atol" in sdef.defaults else {})}
                    r = run_ours(target.process, target.gmm, name, x_init, steps=1, seed=cfg.seed, dtype=cfg.dtype,
                                 **opts)
                    entry["runs"].append(_row(ev, r, ref, noisy, tol=tol))
            else:
                for nfe in cfg.nfe:
                    plan = for_budget(name, nfe, **options)  # the steps (and orders) that spend the budget
                    r = run_ours(target.process, target.gmm, name, x_init, seed=cfg.seed, dtype=cfg.dtype, **plan)
                    entry["runs"].append(_row(ev, r, ref, noisy, nfe_target=nfe,
                                              grid=plan_grid(target, name, plan["steps"]),
                                              **({"orders": list(plan["orders"])} if "orders" in plan else {})))
        except Exception as err:
            entry["skipped"] = _err(err)
            cfg.log(f"[{target.name}] {label}: skipped ({entry['skipped']})")
            continue
        cells = ", ".join(f"{r.get('nfe_target', r.get('tol'))}:{r['sw2']:.4g}" for r in entry["runs"])
        cfg.log(f"[{target.name}] {label}: {cells}")
    if cfg.fitted:
        out["fitted"] = {name: fitted_run(target, cfg, name, x_init, ev, ref) for name in FITTED if name in samplers}
    if cfg.a_replicates > 0 and any(name in samplers for name in FITTED) and "euler" in SAMPLERS:
        grids = {name: torch.tensor(r["grid"], dtype=torch.float64) for name, r in out.get("fitted", {}).items()}
        out["replicated"] = replicated_a(target, cfg, [s for s in FITTED if s in samplers], grids, t_start, t_end,
                                         dirs)
    return out


def replicated_a(target: Target, cfg: Config, names: Sequence[str], grids: dict[str, Tensor], t_start: float,
                 t_end: float, dirs: Tensor, nfe: int = 10) -> dict[str, Any]:
    """Target (a) over ``cfg.a_replicates`` independent replicate pairs: fresh exact initial
    points and a fresh exact reference set per replicate (other seeds than the tables'), every
    run of a replicate from the same points against the same set. Returns per run label the SW2
    of each replicate, and the exact-vs-exact floor per replicate."""
    n = cfg.n(target.dim)
    runs: list[tuple[str, str, dict[str, Any]]] = [(f"euler_{cfg.reference_steps}", "euler",
                                                    {"steps": cfg.reference_steps, "grid": reference_grid(target)})]
    for name in names:
        runs.append((f"{name} default", name, for_budget(name, nfe)))  # no grid named: the plan's default
        if name in grids:
            runs.append((f"{name} fitted", name, {"grid": grids[name]}))
    out: dict[str, Any] = {"replicates": cfg.a_replicates, "nfe": nfe, "sw2": {label: [] for label, _, _ in runs},
                           "floor": []}
    t0 = time.perf_counter()
    for r in range(cfg.a_replicates):
        x_init = target.exact(n, t_start, cfg.seed + 5000 + r).to(cfg.dtype)
        ev = Evaluator(target, t_end, n, dirs, seed=cfg.seed + 7000 + 10 * r, replicates=1)
        out["floor"].append(ev.floor["sw2"])
        for label, name, kw in runs:
            out["sw2"][label].append(ev.metrics(run_ours(target.process, target.gmm, name, x_init, seed=cfg.seed,
                                                         dtype=cfg.dtype, **kw).x)["sw2"])
    out["seconds"] = time.perf_counter() - t0
    cfg.log(f"[{target.name}] target (a) over {cfg.a_replicates} replicate pairs: " + ", ".join(
        f"{label} {statistics.fmean(v):.4g}" for label, v in out["sw2"].items()))
    return out


def ratio_ci(num: Sequence[float], den: Sequence[float], draws: int = 4000, seed: int = 0) -> tuple[float, float]:
    """95% bootstrap interval of ``mean(num) / mean(den)`` over paired replicates."""
    g = torch.Generator().manual_seed(seed)
    a, b = torch.tensor(num, dtype=torch.float64), torch.tensor(den, dtype=torch.float64)
    idx = torch.randint(0, len(a), (draws, len(a)), generator=g)
    ratios = a[idx].mean(1) / b[idx].mean(1)
    lo, hi = torch.quantile(ratios, torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
    return lo, hi


def fitted_run(target: Target, cfg: Config, name: str, x_init: Tensor, ev: Evaluator, ref: Tensor | None,
               nfe: int = 10) -> dict[str, Any]:
    """``name`` at ``nfe`` on a grid fitted by :func:`polydiff.calibrate_grid` to this target's
    model on a separate pilot batch (``cfg.pilot`` prior draws, another seed), then run from the
    benchmark's own initial points. Records the fit's cost in model calls and seconds."""
    steps = for_budget(name, nfe)["steps"]
    trials = [0]
    t0 = time.perf_counter()
    grid = calibrate_grid(ExactModel(target.gmm, target.process), target.process, (cfg.pilot, target.dim), steps,
                          sampler=name, seed=cfg.seed + 303, reference_steps=cfg.fit_reference_steps,
                          progress=lambda n, _: trials.__setitem__(0, n))
    fit_seconds = time.perf_counter() - t0
    r = run_ours(target.process, target.gmm, name, x_init, grid=grid, seed=cfg.seed, dtype=cfg.dtype)
    row = _row(ev, r, ref, False, nfe_target=nfe, grid=[float(v) for v in grid],
               fit={"pilot": cfg.pilot, "trials": trials[0], "reference_steps": cfg.fit_reference_steps,
                    "model_calls": cfg.fit_reference_steps + trials[0] * steps, "seconds": fit_seconds})
    cfg.log(f"[{target.name}] {name} on a fitted grid: SW2 {row['sw2']:.4g} @ {nfe} NFE "
            f"({trials[0]} trials, {fit_seconds:.1f} s)")
    return row


def bench_rows(samplers: Sequence[str]) -> list[tuple[str, str, dict[str, Any]]]:
    """``(label, sampler, options)`` for every sampler with its defaults, plus the option
    variants of :data:`VARIANTS` whose sampler is in the list."""
    rows = [(name, name, {}) for name in samplers]
    rows += [(label, name, dict(opts)) for label, (name, opts) in VARIANTS.items() if name in samplers]
    return rows


def _draws_noise(target: Target, name: str, x_init: Tensor, cfg: Config, options: dict[str, Any]) -> bool:
    """Whether a sampler registered as stochastic actually draws noise with these options (EDM's
    sampler is deterministic Heun without churn): two seeds, a few steps, same result or not."""
    sdef = SAMPLERS.get(name)
    kw: dict[str, Any] = {"steps": 1} if is_adaptive(name) else {"steps": 4}
    if is_adaptive(name) and "rtol" in sdef.defaults:
        kw.update(rtol=1e-2, **({"atol": 1e-2} if "atol" in sdef.defaults else {}))
    x = x_init[:64]
    a = run_ours(target.process, target.gmm, name, x, seed=cfg.seed, dtype=cfg.dtype, **options, **kw).x
    b = run_ours(target.process, target.gmm, name, x, seed=cfg.seed + 1, dtype=cfg.dtype, **options, **kw).x
    return not torch.equal(a, b)


# --------------------------------------------------------------------------- diffusers side by side

VP_BETAS = {"num_train_timesteps": 1000, "beta_start": 1e-4, "beta_end": 0.02, "beta_schedule": "linear",
            "prediction_type": "epsilon"}
EDM_SIGMAS = {"sigma_min": 0.002, "sigma_max": 80.0, "sigma_data": 0.5, "rho": 7.0, "prediction_type": "epsilon"}


@dataclass(frozen=True)
class Spec:
    """One of our samplers next to the diffusers scheduler that implements the same algorithm.

    ``family``: ``"vp"`` DDPM's discrete betas with integer timesteps k (our ``vp_discrete`` at
    t = (k+1)/1000); ``"ve"`` the same betas in diffusers' sigma = sigma/alpha coordinates (our
    EDM process, t = sigma); ``"edm"`` EDM's own schedulers (our EDM process). ``end``: both end
    at sigma = 0 (``"zero"``) or at timestep 0, t = 1/1000 (``"k0"``). ``identical``: the same
    formulas on the same grid, so samples from the same initial points must agree.
    ``default_stride``: diffusers' singlestep schedulers spend one timestep per model call, so an
    order-k step spans k timesteps and uses the ones inside as its stages (ours with
    ``stages="grid"``); our default places the stages itself (in log-SNR), on every k-th timestep.
    """

    algorithm: str
    scheduler: str
    family: str
    config: dict[str, Any]
    end: str = "zero"
    options: dict[str, Any] = field(default_factory=dict)
    step_kwargs: dict[str, Any] = field(default_factory=dict)
    identical: bool = False
    steps_for_nfe: Callable[[int], int] = lambda nfe: nfe
    default_stride: int = 0  # > 0: also run our default options on every k-th timestep (informational)
    sde: bool = False  # draws noise: compared by SW2 averaged over repeats with fresh noise
    note: str = ""
    equiv_tol: float = EQUIV_TOL  # same-maths tolerance (looser only where the note says why)

    @property
    def label(self) -> str:
        return f"{self.algorithm} / {self.scheduler} ({self.family})"


def diffusers_specs() -> list[Spec]:
    """The pairs compared; only those whose sampler is registered are run."""
    dpm = {**VP_BETAS, "timestep_spacing": "linspace", "final_sigmas_type": "sigma_min", "lower_order_final": True}
    edm_dpm = {**EDM_SIGMAS, "final_sigmas_type": "zero", "lower_order_final": True}
    leading = {**VP_BETAS, "timestep_spacing": "leading"}
    single = {**VP_BETAS, "algorithm_type": "dpmsolver", "final_sigmas_type": "sigma_min", "lower_order_final": False}
    return [
        Spec("ddim", "DDIMScheduler", "vp", {**leading, "clip_sample": False, "set_alpha_to_one": True},
             step_kwargs={"eta": 0.0}, identical=True),
        Spec("ddpm", "DDPMScheduler", "vp", {**leading, "clip_sample": False, "variance_type": "fixed_small"},
             sde=True),
        Spec("euler", "EDMEulerScheduler", "edm", dict(EDM_SIGMAS), identical=True),
        Spec("euler", "EulerDiscreteScheduler", "ve", {**VP_BETAS, "timestep_spacing": "linspace"}, identical=True),
        Spec("heun", "HeunDiscreteScheduler", "ve", {**VP_BETAS, "timestep_spacing": "linspace"}, identical=True,
             steps_for_nfe=lambda nfe: (nfe + 1) // 2, note="N timesteps: N-1 Heun steps and a final Euler step"),
        Spec("dpm++2m", "DPMSolverMultistepScheduler", "vp",
             {**dpm, "algorithm_type": "dpmsolver++", "solver_order": 2}, end="k0", identical=True),
        Spec("dpm++2m", "EDMDPMSolverMultistepScheduler", "edm",
             {**edm_dpm, "algorithm_type": "dpmsolver++", "solver_order": 2}, identical=True),
        Spec("dpm++3m", "DPMSolverMultistepScheduler", "vp",
             {**dpm, "algorithm_type": "dpmsolver++", "solver_order": 3}, end="k0", identical=True,
             note="the published 3M (our default); variant='lagrange' integrates the interpolant exactly"),
        Spec("dpm++3m", "EDMDPMSolverMultistepScheduler", "edm",
             {**edm_dpm, "algorithm_type": "dpmsolver++", "solver_order": 3}, identical=True),
        Spec("dpm++2m_sde", "DPMSolverMultistepScheduler", "vp",
             {**dpm, "algorithm_type": "sde-dpmsolver++", "solver_order": 2}, end="k0", sde=True),
        Spec("dpm++2m_sde", "EDMDPMSolverMultistepScheduler", "edm",
             {**edm_dpm, "algorithm_type": "sde-dpmsolver++", "solver_order": 2}, sde=True),
        Spec("unipc", "UniPCMultistepScheduler", "vp",
             {**dpm, "solver_order": 2, "solver_type": "bh2", "predict_x0": True}, end="k0", identical=True),
        Spec("deis", "DEISMultistepScheduler", "vp",
             {**VP_BETAS, "timestep_spacing": "linspace", "solver_order": 3, "lower_order_final": True}, end="k0",
             identical=True, equiv_tol=1e-3,
             note="log-rho DEIS (our default); diffusers' DEIS always ends at timestep 0; its float32 closed-form "
                  "log-rho integrals cancel at small steps (4e-4 apart at 50 NFE, 1e-6 with its sigmas in float64), "
                  "hence a same-maths tolerance of 1e-3 for this pair"),
        Spec("edm", "HeunDiscreteScheduler", "ve", {**VP_BETAS, "timestep_spacing": "linspace"}, identical=True,
             steps_for_nfe=lambda nfe: (nfe + 1) // 2, note="our edm sampler without churn is Heun"),
        Spec("dpm_solver1", "DPMSolverSinglestepScheduler", "vp", {**single, "solver_order": 1}, end="k0",
             identical=True),
        Spec("dpm_solver2", "DPMSolverSinglestepScheduler", "vp", {**single, "solver_order": 2}, end="k0",
             options={"stages": "grid"}, identical=True, steps_for_nfe=lambda nfe: 2 * max(nfe // 2, 1),
             default_stride=2, note="stages='grid' (diffusers' placement: the middle timestep); our default, the "
                                    "paper's log-SNR midpoint, is reported beside it"),
        Spec("dpm_solver3", "DPMSolverSinglestepScheduler", "vp", {**single, "solver_order": 3}, end="k0",
             options={"stages": "grid"}, steps_for_nfe=lambda nfe: 3 * max(nfe // 3, 1), default_stride=3,
             note="stages='grid' (diffusers' placement: the inner timesteps); not the same maths because the "
                  "second stage is the paper's phi_2 update, diffusers' a midpoint one; our default (the paper's "
                  "stages at 1/3 and 2/3 of the log-SNR step) is reported beside it"),
        Spec("pndm", "PNDMScheduler", "vp", {**leading, "skip_prk_steps": True, "set_alpha_to_one": True},
             steps_for_nfe=lambda nfe: max(nfe - 1, 2),
             note="PLMS with the improved-Euler warm-up (N+1 calls) in both; not the same maths only because our "
                  "driver ends a grid at sigma = 0 with the clean estimate, where diffusers' last AB4 step "
                  "extrapolates eps (with set_alpha_to_one=False, steps_offset=1 the samples agree)"),
    ]


def _scheduler(spec: Spec) -> Any:
    import diffusers

    return getattr(diffusers, spec.scheduler)(**spec.config)


def _set(sched: Any, spec: Spec, nfe: int) -> None:
    sched.set_timesteps(spec.steps_for_nfe(nfe))


def _unique(v: Tensor) -> Tensor:
    return torch.unique_consecutive(v)


def diffusers_grid(sched: Any, spec: Spec) -> Tensor:
    """The scheduler's time grid in our time: vp -> t = (k+1)/1000 then the end point; ve/edm ->
    t = sigma (diffusers' sigmas already end at 0)."""
    if spec.family == "vp":
        ks = _unique(sched.timesteps.to(torch.int64)).to(torch.float64)
        end = torch.tensor([0.0 if spec.end == "zero" else 1e-3], dtype=torch.float64)
        return torch.cat([(ks + 1) / 1000, end])
    return _unique(sched.sigmas.to(torch.float64))


def grid_mismatch(sched: Any, spec: Spec, grid: Tensor, process: GaussianProcess) -> float:
    """Max |lam_ours(t) - lam_diffusers| over the grid points where both are finite: checks that
    the two libraries step between the same noise levels."""
    s = process.schedule
    lam_ours = s.lam(grid)
    if spec.family == "vp":
        sig = getattr(sched, "sigmas", None)
        if sig is not None and len(sig) == len(grid):  # solvers stepping on VE sigmas
            lam_diff = -torch.log(sig.to(torch.float64))
        else:
            acp = sched.alphas_cumprod.to(torch.float64)
            ks = torch.clamp(torch.round(grid * 1000 - 1).to(torch.int64), min=0)
            lam_diff = 0.5 * torch.log(acp[ks] / (1 - acp[ks]))
    else:
        lam_diff = -torch.log(_unique(sched.sigmas.to(torch.float64)))
    ok = torch.isfinite(lam_ours) & torch.isfinite(lam_diff)
    return float((lam_ours[ok] - lam_diff[ok]).abs().max()) if bool(ok.any()) else 0.0


def _adapter(sched: Any, spec: Spec, gmm: GaussianMixture, process: GaussianProcess) -> Callable[[Tensor, Any], Tensor]:
    """The exact model in the form each diffusers family expects: (model input, timestep) -> output."""
    den = ExactModel(gmm, process)
    if spec.family == "vp":
        def vp(xin: Tensor, k: Tensor) -> Tensor:
            return den(xin, (torch.as_tensor(k).to(torch.float64) + 1) / 1000)
        return vp
    if spec.family == "ve":
        def ve(xin: Tensor, k: Tensor) -> Tensor:  # xin = x / sqrt(sigma^2 + 1), output eps
            sig = sched.sigmas[sched.step_index].to(torch.float64)
            return den(xin * torch.sqrt(sig**2 + 1).to(xin.dtype), sig)
        return ve
    sd = sched.config.sigma_data

    def edm(xin: Tensor, k: Tensor) -> Tensor:  # EDM preconditioning: xin = c_in x, output F
        sig = sched.sigmas[sched.step_index].to(torch.float64)
        x = xin.double() * torch.sqrt(sig**2 + sd**2)
        d = gmm.denoise(x, torch.tensor(1.0, dtype=torch.float64), sig)
        c_skip, c_out = sd**2 / (sig**2 + sd**2), sig * sd / torch.sqrt(sig**2 + sd**2)
        return ((d - c_skip * x) / c_out).to(xin.dtype)
    return edm


def run_diffusers(spec: Spec, gmm: GaussianMixture, process: GaussianProcess, x_init: Tensor, nfe: int, *,
                  seed: int = 0, sched: Any = None) -> Run:
    """Diffusers' own loop (``scale_model_input``, model, ``step``) from ``x_init``; the
    scheduler is built outside the timing, ``set_timesteps`` inside it."""
    sched = _scheduler(spec) if sched is None else sched
    model = Timed(_adapter(sched, spec, gmm, process))
    kwargs = dict(spec.step_kwargs)
    if "generator" in inspect.signature(sched.step).parameters:
        kwargs["generator"] = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    _set(sched, spec, nfe)
    x = x_init.clone()
    for k in sched.timesteps:
        xin = sched.scale_model_input(x, k)
        x = sched.step(model(xin, k), k, x, **kwargs).prev_sample
    total = time.perf_counter() - t0
    return Run(x, model.calls, diffusers_grid(sched, spec).shape[0] - 1, total, model.seconds)


def _mean_metrics(rows: list[dict[str, float]]) -> tuple[dict[str, float], float]:
    """Metrics averaged over repeats, and the standard deviation of their SW2."""
    mean = {k: statistics.fmean(r[k] for r in rows) for k in ("sw2", "sw2_excess", "mean_err", "cov_err")}
    return mean, statistics.stdev(r["sw2"] for r in rows) if len(rows) > 1 else 0.0


def _family_process(spec: Spec) -> GaussianProcess:
    return make_process("vp_discrete") if spec.family == "vp" else make_process("edm")


def converged(process: GaussianProcess, gmm: GaussianMixture, x_init: Tensor, grid: Tensor, steps: int) -> Tensor:
    """A converged PF-ODE solution over the span of ``grid`` (same end: at sigma = 0 the clean
    estimate at the last positive time): DPM-Solver++(2M), ``steps`` log-SNR steps, float64."""
    zero = float(grid[-1]) == 0.0
    t_last = float(grid[-2] if zero else grid[-1])
    fine = make_grid(process.schedule, steps, "uniform_logsnr", t_max=float(grid[0]), t_min=t_last)
    if zero:
        fine = torch.cat([fine, fine.new_zeros(1)])
    return run_ours(process, gmm, "dpm++2m", x_init, grid=fine, dtype=torch.float64).x


def compare_diffusers(dims: Sequence[int], cfg: Config, samplers: Sequence[str]) -> dict[str, Any]:
    """Ours and diffusers on the same exact model, grid and initial points, per spec, dim, NFE."""
    try:
        import diffusers
        from diffusers.utils import logging as dlog
    except ImportError as err:
        return {"skipped": f"diffusers is not installed ({err}); `pip install polydiff[bench]`"}
    dlog.set_verbosity_error()
    out: dict[str, Any] = {"version": diffusers.__version__, "rows": [], "skipped": []}
    printed: set[str] = set()
    evaluators: dict[tuple, Evaluator] = {}
    paths: dict[tuple, Tensor] = {}
    for spec in diffusers_specs():
        if spec.algorithm not in samplers:
            out["skipped"].append({"spec": spec.label, "reason": f"sampler {spec.algorithm!r} is not registered"})
            continue
        process = _family_process(spec)
        for dim in dims:
            gmm, n = make_mixture(dim), cfg.n(dim)
            target = Target(dim, spec.family, gmm, process)
            dirs = directions(dim, cfg.projections, cfg.seed + 7)
            for nfe in cfg.nfe:
                try:
                    row = _compare_one(spec, target, nfe, n, dirs, cfg, evaluators, paths, printed)
                except Exception as err:
                    out["skipped"].append({"spec": spec.label, "dim": dim, "nfe": nfe, "reason": _err(err)})
                    cfg.log(f"[diffusers] {spec.label} d={dim} nfe={nfe}: skipped ({_err(err)})")
                    continue
                out["rows"].append(row)
                cfg.log(f"[diffusers] {spec.label} d={dim} nfe={nfe}: sw2 {row['ours']['sw2']:.4g} vs "
                        f"{row['diffusers']['sw2']:.4g}, path {_f(row['ours']['path_rmse'])} vs "
                        f"{_f(row['diffusers']['path_rmse'])}, max|diff| {row['max_abs_diff']:.2e}, overhead "
                        f"{row['ours']['overhead_per_step_s'] * 1e6:.0f} vs "
                        f"{row['diffusers']['overhead_per_step_s'] * 1e6:.0f} us/step")
    if cfg.defaults:
        out["defaults"] = compare_defaults(dims, cfg, samplers)
    return out


def _compare_one(spec: Spec, target: Target, nfe: int, n: int, dirs: Tensor, cfg: Config,
                 evaluators: dict[tuple, Evaluator], paths: dict[tuple, Tensor], printed: set[str]) -> dict[str, Any]:
    process, gmm, dim = target.process, target.gmm, target.dim
    sched = _scheduler(spec)
    _set(sched, spec, nfe)
    grid = diffusers_grid(sched, spec)
    mismatch = grid_mismatch(sched, spec, grid, process)
    if spec.label not in printed:  # show once that both libraries walk the same grid
        printed.add(spec.label)
        cfg.log(f"[diffusers] {spec.label} @ {nfe} NFE\n  diffusers timesteps: "
                f"{[round(float(v), 4) for v in sched.timesteps]}\n  our grid t: "
                f"{[round(float(v), 6) for v in grid]}\n  max |lam_ours - lam_diffusers| = {mismatch:.2e}")
    t_start, t_end = float(grid[0]), float(grid[-1])
    key = (dim, spec.family, round(t_end, 9))
    if key not in evaluators:
        evaluators[key] = Evaluator(target, t_end, n, dirs, seed=cfg.seed + 202, replicates=cfg.replicates)
    ev = evaluators[key]
    x_init = target.exact(n, t_start, cfg.seed + 303).to(cfg.dtype)
    ours_runs, theirs_runs = [], []
    for rep in range(max(cfg.repeats, 1)):  # interleaved, so load from elsewhere hits both alike
        seed = cfg.seed + (rep if spec.sde else 0)  # fresh noise per repeat for SDE methods
        ours_runs.append(run_ours(process, gmm, spec.algorithm, x_init, grid=grid, seed=seed, dtype=cfg.dtype,
                                  torch_rng=True, **spec.options))
        theirs_runs.append(run_diffusers(spec, gmm, process, x_init, nfe, seed=seed))
    ours, theirs = ours_runs[0], theirs_runs[0]
    mo, mt = ev.metrics(ours.x), ev.metrics(theirs.x)
    if spec.sde:  # average the error over the repeats' independent noise
        mo, so = _mean_metrics([ev.metrics(r.x) for r in ours_runs])
        mt, st = _mean_metrics([ev.metrics(r.x) for r in theirs_runs])
        mo["sw2_std"], mt["sw2_std"] = so, st
        mo["path_rmse"] = mt["path_rmse"] = None
    else:
        pkey = (dim, spec.family, round(t_start, 9), tuple(round(float(v), 9) for v in grid[-2:]))
        if pkey not in paths:
            paths[pkey] = converged(process, gmm, x_init, grid, max(cfg.path_steps // 2, 50))
        mo["path_rmse"], mt["path_rmse"] = rmse(ours.x, paths[pkey]), rmse(theirs.x, paths[pkey])
    default = None
    if spec.default_stride:  # our default options (e.g. the paper's stage placement) on the same grid
        k = spec.default_stride
        r = run_ours(process, gmm, spec.algorithm, x_init, grid=torch.cat([grid[:-1][::k], grid[-1:]]),
                     seed=cfg.seed, dtype=cfg.dtype, torch_rng=True)
        default = {**ev.metrics(r.x), "nfe": r.nfe, "path_rmse": None if spec.sde else rmse(r.x, paths[pkey])}
    oo = statistics.median(r.overhead_per_step for r in ours_runs)
    ot = statistics.median(r.overhead_per_step for r in theirs_runs)
    return {
        "algorithm": spec.algorithm, "scheduler": spec.scheduler, "family": spec.family, "config": spec.config,
        "identical": spec.identical, "equiv_tol": spec.equiv_tol, "stochastic": spec.sde, "note": spec.note,
        "dim": dim, "n": n,
        "nfe_target": nfe, "steps": ours.steps, "t_start": t_start, "t_end": t_end,
        "grid": [float(v) for v in grid], "grid_lam_mismatch": mismatch, "floor": ev.floor,
        "ours": {**mo, "nfe": ours.nfe, "overhead_per_step_s": oo,
                 "seconds": statistics.median(r.seconds for r in ours_runs)},
        "diffusers": {**mt, "nfe": theirs.nfe, "overhead_per_step_s": ot,
                      "seconds": statistics.median(r.seconds for r in theirs_runs)},
        "error_ratio": mo["sw2"] / mt["sw2"] if mt["sw2"] > 0 else float("nan"),
        "path_ratio": mo["path_rmse"] / mt["path_rmse"] if mo["path_rmse"] is not None and mt["path_rmse"] else None,
        "overhead_ratio": oo / ot if ot > 0 else float("nan"),
        "max_abs_diff": float((ours.x.double() - theirs.x.double()).abs().max()),
        "max_abs": float(theirs.x.abs().max()), "rmse_diff": rmse(ours.x, theirs.x),
        "diff_p99": float(((ours.x.double() - theirs.x.double()) ** 2).mean(1).sqrt().quantile(0.99)),
        "repeats": len(ours_runs), "ours_default": default,
    }


# --------------------------------------------------------------------------- default against default

# the settings of a spec's config that define the model (betas or sigma range, what the network
# predicts) or name the algorithm (DPM-Solver's type and order, UniPC's variant): kept when
# comparing default against default; every other setting takes the scheduler's own default
DEFAULT_KEEP = frozenset({"num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "prediction_type",
                          "sigma_min", "sigma_max", "sigma_data", "algorithm_type", "solver_order", "solver_type",
                          "predict_x0", "variance_type"})


def default_spec(spec: Spec) -> Spec:
    """``spec`` with diffusers' default settings: :data:`DEFAULT_KEEP` of its config, the
    scheduler's defaults for the rest (timestep spacing, final sigma, lower-order final steps,
    PNDM's Runge-Kutta warm-up, ...), except ``clip_sample=False`` (DDIM's and DDPM's default
    clips x0 to [-1, 1], a setting for images scaled to that range, not for these mixtures) and
    ``final_sigmas_type="sigma_min"`` for the singlestep ``dpmsolver`` (diffusers refuses its
    default ``"zero"`` there)."""
    config = {k: v for k, v in spec.config.items() if k in DEFAULT_KEEP}
    if "clip_sample" in spec.config:
        config["clip_sample"] = False
    if spec.scheduler == "DPMSolverSinglestepScheduler" and config.get("algorithm_type") == "dpmsolver":
        config["final_sigmas_type"] = "sigma_min"
    return replace(spec, config=config, options={})


def default_steps(spec: Spec, nfe: int) -> int:
    """Diffusers' ``num_inference_steps`` for an NFE budget: the most whose timesteps (one
    model call each) fit in ``nfe``; ValueError if none does (PNDM's default Runge-Kutta
    warm-up alone takes 12 calls)."""
    sched = _scheduler(spec)
    for n in range(nfe, 0, -1):
        try:
            sched.set_timesteps(n)
        except Exception:  # too few steps for this scheduler
            continue
        if len(sched.timesteps) <= nfe:
            return n
    raise ValueError(f"no number of steps of {spec.scheduler} with its defaults fits in {nfe} model calls")


def model_process(spec: Spec) -> str:
    """The model a spec's scheduler samples, as our process: DDPM's betas (``vp``, and ``ve``,
    the same betas in diffusers' sigma coordinates) or EDM's sigma range."""
    return "edm" if spec.family == "edm" else "vp_discrete"


def compare_defaults(dims: Sequence[int], cfg: Config, samplers: Sequence[str]) -> dict[str, Any]:
    """Default against default, for every algorithm shared with diffusers: our sampler as
    ``polydiff.sample`` runs it when told only the sampler and the steps (the plan's default
    grid, :func:`plan_grid`, and default options), against the spec's scheduler with its default
    settings (:func:`default_spec`), at the same NFE, from the same initial points (exact draws
    at our schedule's ``t_max``: diffusers' first timestep for linspace spacing; its default
    leading spacing starts lower, treating them as its first timestep's, as a user's noise is).
    SW2 and moments against the data (t = 0; we end at t_min, diffusers where its defaults end),
    path RMSE against a converged ODE solution from the initial points to sigma = 0."""
    out: dict[str, Any] = {"rows": [], "skipped": []}
    evaluators: dict[int, Evaluator] = {}
    paths: dict[tuple[int, str], Tensor] = {}
    for base in diffusers_specs():
        if base.algorithm not in samplers:
            continue  # compare_diffusers reports it
        spec = default_spec(base)
        for dim in dims:
            gmm, n = make_mixture(dim), cfg.n(dim)
            target = Target(dim, model_process(spec), gmm, make_process(model_process(spec)))
            dirs = directions(dim, cfg.projections, cfg.seed + 7)
            for nfe in cfg.nfe:
                try:
                    row = _default_one(spec, target, nfe, n, dirs, cfg, evaluators, paths)
                except Exception as err:
                    out["skipped"].append({"spec": spec.label, "dim": dim, "nfe": nfe, "reason": _err(err)})
                    cfg.log(f"[defaults] {spec.label} d={dim} nfe={nfe}: skipped ({_err(err)})")
                    continue
                out["rows"].append(row)
                cfg.log(f"[defaults] {spec.label} d={dim} nfe={nfe} ({row['ours']['nfe']}/{row['diffusers']['nfe']}): "
                        f"sw2 {row['ours']['sw2']:.4g} ({row['ours']['grid']}) vs {row['diffusers']['sw2']:.4g}, "
                        f"path {_f(row['ours']['path_rmse'])} vs {_f(row['diffusers']['path_rmse'])}")
    return out


def _default_one(spec: Spec, target: Target, nfe: int, n: int, dirs: Tensor, cfg: Config,
                 evaluators: dict[int, Evaluator], paths: dict[tuple[int, str], Tensor]) -> dict[str, Any]:
    process, gmm, dim, sched_t = target.process, target.gmm, target.dim, target.process.schedule
    if dim not in evaluators:  # the data: the same for every process
        evaluators[dim] = Evaluator(target, 0.0, n, dirs, seed=cfg.seed + 202, replicates=cfg.replicates)
    ev = evaluators[dim]
    x_init = target.exact(n, sched_t.t_max, cfg.seed + 303).to(cfg.dtype)
    # ours: the steps that spend the budget (polydiff.samplers.for_budget: NFE // nfe_per_step, singlestep
    # DPM-Solver with per-step orders), fewer while the run spends more than nfe calls (PLMS's warm-up)
    plan = for_budget(spec.algorithm, nfe)
    steps = plan.pop("steps")

    def run(k: int, seed: int) -> Run:
        return run_ours(process, gmm, spec.algorithm, x_init, steps=k, seed=seed, dtype=cfg.dtype, **plan)

    ours_runs = [run(steps, cfg.seed)]
    while ours_runs[0].nfe > nfe and steps > 1 and "orders" not in plan:
        steps -= 1
        ours_runs = [run(steps, cfg.seed)]
    # diffusers: its default timesteps for the most inference steps that fit in nfe calls
    n_inf = default_steps(spec, nfe)
    dspec = replace(spec, steps_for_nfe=lambda _nfe, k=n_inf: k)
    sched = _scheduler(dspec)
    _set(sched, dspec, nfe)
    timesteps = [float(v) for v in sched.timesteps]
    x_theirs = x_init
    if spec.family == "ve":  # diffusers' sigma coordinates: x / alpha at its first sigma (t = 1 for linspace)
        x_theirs = x_init * float(torch.sqrt(1 + sched.sigmas[0].double() ** 2))
    dproc = _family_process(spec)
    theirs_runs = [run_diffusers(dspec, gmm, dproc, x_theirs, nfe, seed=cfg.seed)]
    repeats = max(cfg.repeats, 1) if spec.sde else 1
    for rep in range(1, repeats):  # SDE methods: fresh noise per repeat, error averaged
        ours_runs.append(run(steps, cfg.seed + rep))
        theirs_runs.append(run_diffusers(dspec, gmm, dproc, x_theirs, nfe, seed=cfg.seed + rep))
    if spec.sde:
        mo, so = _mean_metrics([ev.metrics(r.x) for r in ours_runs])
        mt, st = _mean_metrics([ev.metrics(r.x) for r in theirs_runs])
        mo["sw2_std"], mt["sw2_std"] = so, st
        mo["path_rmse"] = mt["path_rmse"] = None
    else:
        mo, mt = ev.metrics(ours_runs[0].x), ev.metrics(theirs_runs[0].x)
        pkey = (dim, target.process_name)
        if pkey not in paths:
            span = torch.tensor([sched_t.t_max, sched_t.t_min, 0.0], dtype=torch.float64)
            paths[pkey] = converged(process, gmm, x_init, span, max(cfg.path_steps // 2, 50))
        mo["path_rmse"], mt["path_rmse"] = rmse(ours_runs[0].x, paths[pkey]), rmse(theirs_runs[0].x, paths[pkey])
    row = {"algorithm": spec.algorithm, "scheduler": spec.scheduler, "family": spec.family,
           "model": target.process_name, "config": spec.config, "stochastic": spec.sde,
           "dim": dim, "n": n, "nfe_target": nfe, "floor": ev.floor, "repeats": len(ours_runs),
           "ours": {**mo, "nfe": ours_runs[0].nfe, "steps": steps, "grid": plan_grid(target, spec.algorithm, steps),
                    **({"orders": list(plan["orders"])} if "orders" in plan else {})},
           "diffusers": {**mt, "nfe": theirs_runs[0].nfe, "num_inference_steps": n_inf, "timesteps": timesteps},
           "error_ratio": mo["sw2"] / mt["sw2"] if mt["sw2"] > 0 else float("nan"),
           "path_ratio": mo["path_rmse"] / mt["path_rmse"] if mo["path_rmse"] is not None and mt["path_rmse"]
           else None}
    row["margin"] = error_margin(row)
    return row


# --------------------------------------------------------------------------- acceptance checks

def _find(runs: list[dict[str, Any]], nfe: int) -> dict[str, Any] | None:
    return next((r for r in runs if r.get("nfe_target") == nfe), None)


def _num(v: Any) -> float:
    """A number from the results (JSON turns non-finite values into null)."""
    return float("nan") if v is None else float(v)


def equivalent(row: dict[str, Any]) -> bool:
    """Samples of a same-maths pair agree to float32 precision: the 99th percentile over samples
    of the per-sample RMS difference is at most ``EQUIV_TOL`` times the samples' scale
    (``max(1, max |x|)``: a diverging run has large values and proportionally large rounding).
    Not the max: the probability-flow ODE of a mixture amplifies rounding for the rare samples on
    the boundary between two components (ours in float32 and in float64 differ there as much);
    a different algorithm differs by 1e-3..1e-1 for most samples."""
    scale = max(1.0, _num(row.get("max_abs", 1.0)))
    return _num(row.get("diff_p99", row.get("rmse_diff"))) <= row.get("equiv_tol", EQUIV_TOL) * scale


def _all(flags: list[bool | None]) -> str:
    """'pass' if every flag is True, 'FAIL' if any is False, else 'incomplete' (or 'not run')."""
    if all(f is None for f in flags):
        return "not run"
    if any(f is False for f in flags):
        return "FAIL"
    return "pass" if all(f is True for f in flags) else "incomplete"


def error_margin(row: dict[str, Any]) -> float:
    """Statistical allowance for ``ours <= diffusers``: two standard deviations of a difference.

    Deterministic pairs (one run each, same initial points): 2*sqrt(2)*s_floor, with s_floor the
    spread of the exact-vs-exact SW2 over replicate sample sets. Stochastic pairs (SW2 averaged
    over R repeats with fresh noise): 2*sqrt((s_ours^2 + s_diffusers^2) / R), and at least the
    deterministic margin.
    """
    base = 2 * math.sqrt(2) * _num(row["floor"]["sw2_std"])
    if not row["stochastic"]:
        return base
    r = max(row["repeats"], 1)
    return max(base, 2 * math.sqrt((_num(row["ours"]["sw2_std"]) ** 2 + _num(row["diffusers"]["sw2_std"]) ** 2) / r))


def _sem(v: Sequence[float]) -> float:
    """Standard error of the mean."""
    return statistics.stdev(v) / math.sqrt(len(v)) if len(v) > 1 else math.nan


def check_targets(result: dict[str, Any]) -> dict[str, Any]:
    """(a) 10-NFE DPM-Solver++(2M) and UniPC within ``ACCEPT_RATIO`` of the SW2 of the
    1000-step Euler reference on every target; (b) per shared algorithm: our SW2 no worse than
    diffusers' beyond the statistical margin, our per-step overhead no larger (up to
    ``OVERHEAD_TOL``), and same-maths pairs agreeing sample by sample."""
    ref_key = f"euler_{result['config']['reference_steps']}"
    a_rows = []
    for tg in result["targets"]:
        ref = tg["references"].get(ref_key, {})
        for name in ("dpm++2m", "unipc"):
            entry = tg["samplers"].get(name)
            run = _find(entry["runs"], 10) if entry and "runs" in entry else None
            if run is None or "sw2" not in ref:
                a_rows.append({"target": tg["name"], "sampler": name, "status": "not run", "ok": None})
                continue
            ratio = _num(run["sw2"]) / _num(ref["sw2"])
            ok = bool(ratio <= ACCEPT_RATIO)
            within = [r["nfe_target"] for r in entry["runs"] if _num(r["sw2"]) <= ACCEPT_RATIO * _num(ref["sw2"])]
            a_rows.append({"target": tg["name"], "sampler": name, "grid": run.get("grid", tg.get("grid")),
                           "sw2": run["sw2"], "reference_sw2": ref["sw2"],
                           "floor": tg["floor"]["sw2"], "floor_std": tg["floor"]["sw2_std"], "ratio": ratio,
                           "path_rmse": run.get("path_rmse"), "reference_path_rmse": ref.get("path_rmse"),
                           "first_nfe_within": min(within) if within else None,
                           "status": "pass" if ok else "FAIL", "ok": ok})
    fit_rows = []
    for tg in result["targets"]:
        ref = tg["references"].get(ref_key, {})
        for name, run in tg.get("fitted", {}).items():
            ratio = _num(run["sw2"]) / _num(ref["sw2"]) if "sw2" in ref else math.nan
            ok = bool(ratio <= ACCEPT_RATIO)
            fit_rows.append({"target": tg["name"], "sampler": name, "sw2": run["sw2"], "reference_sw2": ref.get("sw2"),
                             "ratio": ratio, "path_rmse": run.get("path_rmse"),
                             "reference_path_rmse": ref.get("path_rmse"), "fit": run["fit"],
                             "status": "pass" if ok else "FAIL", "ok": ok})
    rep_rows = []
    for tg in result["targets"]:
        rep = tg.get("replicated")
        if not rep:
            continue
        den = rep["sw2"].get(ref_key)
        for label, vals in rep["sw2"].items():
            if label == ref_key or not den:
                continue
            name, grid = label.split(" ")
            ratio = statistics.fmean(vals) / statistics.fmean(den)
            lo, hi = ratio_ci(vals, den)
            ok = bool(ratio <= ACCEPT_RATIO)
            rep_rows.append({"target": tg["name"], "sampler": name, "grid": grid, "sw2_mean": statistics.fmean(vals),
                             "sw2_sem": _sem(vals), "reference_mean": statistics.fmean(den),
                             "reference_sem": _sem(den), "reference_range": [min(den), max(den)],
                             "floor_mean": statistics.fmean(rep["floor"]),
                             "ratio": ratio, "ratio_ci": [lo, hi], "replicates": len(vals),
                             "status": "pass" if ok else "FAIL", "ok": ok})
    b_rows = []
    for row in result.get("diffusers", {}).get("rows", []):
        margin = error_margin(row)
        err_ok = bool(_num(row["ours"]["sw2"]) <= _num(row["diffusers"]["sw2"]) + margin)
        ovh_ok = bool(_num(row["overhead_ratio"]) <= OVERHEAD_TOL)
        eq_ok = equivalent(row) if row["identical"] else None
        b_rows.append({"algorithm": row["algorithm"], "scheduler": row["scheduler"], "family": row["family"],
                       "dim": row["dim"], "nfe": row["nfe_target"], "margin": margin, "error_ok": err_ok,
                       "overhead_ok": ovh_ok, "equivalent": eq_ok, "error_ratio": row["error_ratio"],
                       "path_ratio": row.get("path_ratio"),
                       "overhead_ratio": row["overhead_ratio"], "max_abs_diff": row["max_abs_diff"]})
    d_flags = [default_flags(r) for r in result.get("diffusers", {}).get("defaults", {}).get("rows", [])]
    return {"a": a_rows, "a_fitted": fit_rows, "a_replicated": rep_rows, "b": b_rows,
            "defaults": {"cells": len(d_flags), "ours_le_diffusers": sum(f["ok"] for f in d_flags),
                         "ours_le_diffusers_strict": sum(f["strict"] for f in d_flags),
                         "path_cells": sum(f["path"] is not None for f in d_flags),
                         "path_ours_le_diffusers": sum(bool(f["path"]) for f in d_flags)},
            "a_status": _all([r["ok"] for r in a_rows]),
            "a_fitted_status": _all([r["ok"] for r in fit_rows]),
            "a_replicated_default_status": _all([r["ok"] for r in rep_rows if r["grid"] == "default"]),
            "a_replicated_fitted_status": _all([r["ok"] for r in rep_rows if r["grid"] == "fitted"]),
            "b_error_status": _all([r["error_ok"] for r in b_rows]),
            "b_overhead_status": _all([r["overhead_ok"] for r in b_rows]),
            "b_equivalence_status": _all([r["equivalent"] for r in b_rows if r["equivalent"] is not None])}


# --------------------------------------------------------------------------- environment, run, report

def _loadavg() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def environment(command: str) -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import diffusers
        dver = diffusers.__version__
    except ImportError:
        dver = None
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"command": command, "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
            "python": platform.python_version(), "torch": torch.__version__, "diffusers": dver,
            "platform": platform.platform(), "cpu": cpu, "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
            "load_average_start": _loadavg(),
            "git_commit": commit}


def run(cfg: Config | None = None, command: str = "python bench/samplers.py") -> dict[str, Any]:
    """The whole benchmark; returns a JSON-ready dict (see :func:`to_markdown`)."""
    cfg = cfg or Config()
    t0 = time.perf_counter()
    available = gaussian_samplers()
    wanted = list(cfg.samplers) if cfg.samplers else available
    samplers = [s for s in wanted if s in available]
    result: dict[str, Any] = {
        "environment": environment(command),
        "config": {"dims": list(cfg.dims), "processes": list(cfg.processes), "nfe": list(cfg.nfe),
                   "samples": {d: cfg.n(d) for d in cfg.dims}, "projections": cfg.projections,
                   "replicates": cfg.replicates, "path_steps": cfg.path_steps,
                   "reference_steps": cfg.reference_steps, "repeats": cfg.repeats, "seed": cfg.seed,
                   "dtype": str(cfg.dtype).replace("torch.", ""), "samplers": samplers,
                   "registry": available, "margin_rule": "see error_margin()",
                   "overhead_tolerance": OVERHEAD_TOL, "accept_ratio": ACCEPT_RATIO,
                   "pilot": cfg.pilot if cfg.fitted else None, "a_replicates": cfg.a_replicates},
        "missing": [s for s in wanted if s not in available],
        "targets": [],
    }
    for dim in cfg.dims:
        for proc in cfg.processes:
            target = Target(dim, proc, make_mixture(dim), make_process(proc))
            result["targets"].append(accuracy(target, cfg, samplers))
    if cfg.diffusers:
        result["diffusers"] = compare_diffusers(cfg.dims, cfg, samplers)
    result["checks"] = check_targets(result)
    result["seconds"] = time.perf_counter() - t0
    result["environment"]["load_average_end"] = _loadavg()
    return result


def _f(v: Any, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if not math.isfinite(v):
            return "nan"
        return f"{v:.{digits}g}"
    return str(v)


def to_markdown(res: dict[str, Any]) -> str:
    """A readable report: command, targets (pass/fail), accuracy tables, diffusers comparison."""
    env, cfg = res["environment"], res["config"]
    L = ["# Sampler benchmark", "", f"Produced by: `{env['command']}`", "",
         f"{env['date_utc']} UTC; torch {env['torch']}, diffusers {env['diffusers']}, Python {env['python']}; "
         f"{env['cpu']} ({env['cpu_count']} cores, {env['torch_threads']} torch threads, "
         f"OMP_NUM_THREADS={env['OMP_NUM_THREADS']}); commit {env['git_commit']}; "
         f"total {res['seconds'] / 60:.1f} min; load average (1, 5, 15 min) {env.get('load_average_start')} at the "
         f"start, {env.get('load_average_end')} at the end (timings are medians of interleaved repeats, but a "
         "loaded machine makes them noisier).", ""]
    ch = res["checks"]
    ref = f"{cfg['reference_steps']}-step Euler"
    L += ["## Targets", "",
          f"(a) At 10 NFE, `dpm++2m` and `unipc` within {ACCEPT_RATIO}x of the SW2 of {ref} on every target "
          "(same initial points, same n, same exact reference set), on the default grids: what `polydiff.sample` "
          "walks when no grid is named (`Schedule.sampling_grid`; the grid column), the reference on the "
          f"schedule's `default_grid`: **{ch['a_status']}**", "",
          f"| target | sampler | grid | SW2 @10 | {ref} SW2 | floor | ratio | path RMSE @10 | {ref} path RMSE | "
          "status | first NFE within |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in ch["a"]:
        L.append(f"| {r['target']} | {r['sampler']} | {r.get('grid') or '-'} | {_f(r.get('sw2'))} | "
                 f"{_f(r.get('reference_sw2'))} | "
                 f"{_f(r.get('floor'))} +- {_f(r.get('floor_std'), 2)} | {_f(r.get('ratio'))} | "
                 f"{_f(r.get('path_rmse'))} | {_f(r.get('reference_path_rmse'))} | {r['status']} | "
                 f"{_f(r.get('first_nfe_within'))} |")
    if ch.get("a_fitted"):
        L += ["", f"(a') The same at 10 NFE on grids fitted to each target's model with `polydiff.calibrate_grid` "
              f"(pilot of {cfg.get('pilot')} prior draws with another seed; the fit's model calls are on the pilot "
              f"batch): **{ch['a_fitted_status']}**", "",
              f"| target | sampler | SW2 @10 | {ref} SW2 | ratio | path RMSE @10 | {ref} path RMSE | fit: trials, "
              "model calls, s | status |", "|---|---|---|---|---|---|---|---|---|"]
        for r in ch["a_fitted"]:
            f = r["fit"]
            L.append(f"| {r['target']} | {r['sampler']} | {_f(r['sw2'])} | {_f(r.get('reference_sw2'))} | "
                     f"{_f(r['ratio'])} | {_f(r.get('path_rmse'))} | {_f(r.get('reference_path_rmse'))} | "
                     f"{f['trials']}, {f['model_calls']}, {f['seconds']:.1f} | {r['status']} |")
    if ch.get("a_replicated"):
        reps = ch["a_replicated"][0]["replicates"]
        L += ["", f"(a'') Target (a) over {reps} independent replicate pairs (fresh exact initial points and a fresh "
              "exact reference set per replicate, every run of a replicate from the same points against the same set; "
              f"the grids fitted above; `default`: no grid named, the plan's default as in (a)): ratio of the mean "
              f"SW2 to the mean SW2 of {ref}, with a 95% bootstrap interval. Default grids: "
              f"**{ch['a_replicated_default_status']}**; fitted grids: **{ch['a_replicated_fitted_status']}**.", "",
              "One pair (tables (a), (a')) gives a noisy denominator: the long reference's SW2 is at the sampling "
              "floor (exact-vs-exact column) and varies between pairs as much as the floor does (range column; "
              "per-replicate values in the JSON).", "",
              f"| target | sampler | grid | mean SW2 @10 | {ref} mean SW2 | its range over pairs | exact-vs-exact "
              "mean | ratio | 95% interval | status |", "|---|---|---|---|---|---|---|---|---|---|"]
        for r in ch["a_replicated"]:
            lo, hi = r["reference_range"]
            L.append(f"| {r['target']} | {r['sampler']} | {r['grid']} | {_f(r['sw2_mean'])} +- {_f(r['sw2_sem'], 2)} "
                     f"| {_f(r['reference_mean'])} +- {_f(r['reference_sem'], 2)} | {_f(lo)}-{_f(hi)} | "
                     f"{_f(r['floor_mean'])} | {_f(r['ratio'])} | {_f(r['ratio_ci'][0])}-{_f(r['ratio_ci'][1])} | "
                     f"{r['status']} |")
    b = ch["b"]
    L += ["", "(b) For every algorithm shared with diffusers: our SW2 no worse than diffusers' "
          f"(**{ch['b_error_status']}**), our per-step overhead no larger (**{ch['b_overhead_status']}**); "
          f"same-maths pairs agree sample by sample (**{ch['b_equivalence_status']}**).", "",
          "Error margin (two standard deviations of a difference of two estimates): deterministic methods, "
          "ours <= diffusers + 2*sqrt(2)*s with s the standard deviation of the exact-vs-exact SW2 over independent "
          "replicate sample sets (both start from the same points, so for same-maths pairs the margin is "
          "immaterial); stochastic methods, SW2 averaged over the R timing repeats with fresh noise and margin "
          "2*sqrt((s_ours^2 + s_diffusers^2)/R) (at least the deterministic one). Overhead: medians of interleaved "
          "repeats, ours <= "
          f"{OVERHEAD_TOL:.2f} x diffusers (timing noise). Same maths: the 99th percentile over samples of the "
          f"per-sample RMS difference <= {EQUIV_TOL:g} x max(1, max |x|) (the largest elementwise difference is "
          "reported too; it can be larger for the rare samples on the boundary between two mixture components, "
          "where the ODE amplifies float32 rounding: there our float32 and float64 runs differ as much).", ""]
    fails = [r for r in b if not r["error_ok"] or r["equivalent"] is False]
    if b:
        L.append(f"Error and equivalence: {len(b) - len(fails)} of {len(b)} rows pass."
                 + (" The others:" if fails else ""))
        if fails:
            L += ["", "| algorithm | scheduler | d | NFE | SW2 ratio | margin | path ratio | error | same maths |",
                  "|---|---|---|---|---|---|---|---|---|"]
            for r in fails:
                eq = "-" if r["equivalent"] is None else ("ok" if r["equivalent"] else "MISMATCH")
                L.append(f"| {r['algorithm']} | {r['scheduler']} | {r['dim']} | {r['nfe']} | {_f(r['error_ratio'])} | "
                         f"{_f(r['margin'])} | {_f(r.get('path_ratio'))} | {'ok' if r['error_ok'] else 'FAIL'} | "
                         f"{eq} |")
        L += ["", f"Overhead: {sum(r['overhead_ok'] for r in b)} of {len(b)} rows within {OVERHEAD_TOL:.2f}x. "
              "Ratio ours / diffusers per pair (median over dimensions and NFE, range):", "",
              "| algorithm | scheduler | median ratio | min | max | rows within |", "|---|---|---|---|---|---|"]
        for key in dict.fromkeys((r["algorithm"], r["scheduler"]) for r in b):
            rs = [r for r in b if (r["algorithm"], r["scheduler"]) == key]
            ratios = [_num(r["overhead_ratio"]) for r in rs]
            L.append(f"| {key[0]} | {key[1]} | {_f(statistics.median(ratios))} | {_f(min(ratios))} | "
                     f"{_f(max(ratios))} | {sum(r['overhead_ok'] for r in rs)}/{len(rs)} |")
    L += ["", "## Method", "",
          "Targets: Gaussian mixtures `GaussianMixture.random(dim=d, seed=d)` (4 components, means in "
          "[-2, 2]^d, per-axis std 0.15..0.45), model = `ExactDenoiser` (exact E[x0|x_t], eps prediction), "
          "so all error is the solver's. "
          "Runs start from exact draws of p(x_t) at the grid's first time. SW2: sliced Wasserstein-2 with "
          f"{cfg['projections']} random directions, exact 1-D W2 from sorted samples, n generated vs n exact samples "
          "of the marginal at the grid's last time. Floor: the same between two exact sets "
          f"(mean +- std over {cfg['replicates']} replicates); `excess` = sqrt(max(SW2^2 - floor_rms^2, 0)). "
          "Path RMSE (deterministic samplers only): RMS per coordinate against a converged ODE solution "
          f"(DPM-Solver++(2M), {cfg['path_steps']} steps, float64) from the same initial points; no sampling floor. "
          "Every sampler gets the steps that spend its NFE budget, `polydiff.samplers.for_budget`: NFE // "
          "nfe_per_step steps, and singlestep DPM-Solver every call, DPM-Solver-fast's per-step orders with a "
          "first-order last step (e.g. 3, 1, 1 at NFE 5; the JSON records them); a cell shows the actual NFE in "
          "brackets when it differs. Our grids: what `polydiff.sample` walks when no grid is named, the plan's "
          f"default (`Schedule.sampling_grid(sampler, steps)`: {RULE_VP}; {RULE_EDM}; "
          "singlestep steps as wide as their model calls), from t_max to t_min with no final sigma = 0 step; "
          "the long references (1000-step Euler / DDIM, the converged ODE solution) on the schedule's "
          "`default_grid` (uniform log-SNR for VP, Karras for EDM), which the plan's default does not move. "
          f"Solver dtype {cfg['dtype']}.", ""]
    if res.get("missing"):
        L += [f"Requested but not registered: {', '.join(res['missing'])}.", ""]
    for tg in res["targets"]:
        L += _target_tables(tg, cfg)
    if "diffusers" in res:
        L += _diffusers_tables(res["diffusers"])
    return "\n".join(L) + "\n"


def _cell(r: dict[str, Any], key: str) -> str:
    s = _f(r.get(key))
    if r.get("nfe_target") is not None and r["nfe"] != r["nfe_target"]:
        s += f" ({r['nfe']})"
    return s


def _target_tables(tg: dict[str, Any], cfg: dict[str, Any]) -> list[str]:
    fl = tg["floor"]
    nfes = cfg["nfe"]
    pr = tg.get("path_reference") or {}
    L = [f"## {tg['name']}: d = {tg['dim']}, process `{tg['process']}`", "",
         f"n = {tg['n']}, grid {_grids_used(tg)}, from t = {tg['t_start']:g} to {tg['t_end']:g}"
         + (f" (references: `{tg['reference_grid']}`)" if tg.get("reference_grid") else "") + ". "
         f"SW2 floor (exact vs exact) {_f(fl['sw2'])} +- {_f(fl['sw2_std'], 2)}; mean-error floor "
         f"{_f(fl['mean_err'])}, covariance-error floor {_f(fl['cov_err'])}. Path reference estimated RMSE "
         f"{_f(pr.get('estimated_rmse'))}.", ""]
    head = "| sampler | " + " | ".join(f"NFE {n}" for n in nfes) + " |"
    sep = "|---|" + "---|" * len(nfes)
    for key, title in (("sw2", "SW2"), ("path_rmse", "path RMSE (deterministic samplers)")):
        L += [f"{title}:", "", head, sep]
        for name, e in tg["samplers"].items():
            if e.get("adaptive") or "skipped" in e or (key == "path_rmse" and e.get("draws_noise")):
                continue
            cells = []
            for nfe in nfes:
                r = _find(e["runs"], nfe)
                cells.append(_cell(r, key) if r else "-")
            L.append(f"| {_label(name, e)} | " + " | ".join(cells) + " |")
        for ref_name, r in tg["references"].items():
            if "skipped" not in r:
                L.append(f"| {ref_name.replace('_', ' @ ')} steps | {_f(r.get(key))} (all columns) |"
                         + " |" * (len(nfes) - 1))
        L.append("")
    L += ["Mean / covariance error at 10 NFE:", "", "| sampler | mean err | cov err | SW2 excess |",
          "|---|---|---|---|"]
    for name, e in tg["samplers"].items():
        r = _find(e.get("runs", []), 10)
        if r:
            L.append(f"| {name} | {_f(r['mean_err'])} | {_f(r['cov_err'])} | {_f(r['sw2_excess'])} |")
    L.append("")
    adaptive = {n: e for n, e in tg["samplers"].items() if e.get("adaptive") and "skipped" not in e}
    if adaptive:
        L += ["Adaptive samplers (actual NFE per tolerance):", "", "| sampler | tol | NFE | SW2 | path RMSE |",
              "|---|---|---|---|---|"]
        for name, e in adaptive.items():
            for r in e["runs"]:
                L.append(f"| {name} | {r['tol']:g} | {r['nfe']} | {_f(r['sw2'])} | {_f(r['path_rmse'])} |")
        L.append("")
    skipped = {n: e["skipped"] for n, e in tg["samplers"].items() if "skipped" in e}
    if skipped:
        L += ["Skipped: " + "; ".join(f"`{n}`: {why}" for n, why in skipped.items()), ""]
    return L


def _grids_used(tg: dict[str, Any]) -> str:
    """The grids of a target's table in words: the plan's default, the most common grid, then
    the exceptions (results without per-run grids: the target's grid)."""
    used = {(name, r["nfe_target"]): r["grid"] for name, e in tg["samplers"].items() for r in e.get("runs", [])
            if r.get("grid") and r.get("nfe_target") is not None}
    if not used:
        return f"`{tg['grid']}`"
    names = list(used.values())
    main = max(dict.fromkeys(names), key=names.count)
    other: dict[str, list[str]] = {}
    for (name, nfe), g in used.items():
        if g != main:
            other.setdefault(g, []).append(f"{name} @ {nfe}")
    return f"the plan's default (`{main}`" + "".join(f"; `{g}` for {', '.join(v)}" for g, v in other.items()) + ")"


def _label(name: str, entry: dict[str, Any]) -> str:
    return f"{name} (SDE)" if entry.get("draws_noise") else name


def _diffusers_tables(dz: dict[str, Any]) -> list[str]:
    if isinstance(dz.get("skipped"), str):
        return ["## Side by side with diffusers", "", f"Not run: {dz['skipped']}", ""]
    L = ["## Side by side with diffusers", "",
         f"diffusers {dz['version']}. Same exact model, same grid (diffusers' timesteps k mapped to t = (k+1)/1000 "
         "for VP, sigmas for VE/EDM; `dlam` = max |lam_ours - lam_diffusers| over the grid), same initial points "
         "(exact draws at the first grid time), both ending at the same time (sigma = 0, or timestep 0 where "
         "diffusers ends there). SW2 against exact samples at that time; path RMSE against a converged ODE "
         "solution over the same span from the same points (deterministic methods). `max|diff|`: largest "
         "elementwise difference between our samples and diffusers', `diff p99` the 99th percentile over samples "
         "of the per-sample RMS difference; `same "
         "maths`: pairs implementing identical formulas, whose samples must agree to float32 precision. "
         "Stochastic methods: SW2 averaged over the "
         "repeats (fresh noise each).", "",
         "| algorithm | diffusers scheduler | d | NFE ours/theirs | SW2 ours | SW2 diffusers | SW2 ratio | "
         "path ours | path diffusers | path ratio | diff p99 | max abs diff | same maths | dlam |",
         "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in dz["rows"]:
        same = ("yes, " + ("ok" if equivalent(r) else "**MISMATCH**")) if r["identical"] else "no"
        o, t = r["ours"], r["diffusers"]
        L.append(f"| {r['algorithm']} | {r['scheduler']} ({r['family']}) | {r['dim']} | {o['nfe']}/{t['nfe']} | "
                 f"{_f(o['sw2'])} | {_f(t['sw2'])} | {_f(r['error_ratio'])} | {_f(o.get('path_rmse'))} | "
                 f"{_f(t.get('path_rmse'))} | {_f(r.get('path_ratio'))} | {_f(r.get('diff_p99'), 2)} | "
                 f"{_f(r['max_abs_diff'], 2)} | {same} | "
                 f"{_f(r['grid_lam_mismatch'], 2)} |")
    defaults = [r for r in dz["rows"] if r.get("ours_default")]
    if defaults:
        L += ["", "Our default options on the same model, grid and initial points, where the compared row sets "
              "options to match diffusers (singlestep DPM-Solver: `stages='grid'` above, the paper's log-SNR "
              "stage placement here, on every k-th timestep):", "",
              "| algorithm | d | NFE | SW2 default | SW2 diffusers | path default | path diffusers | path ratio |",
              "|---|---|---|---|---|---|---|---|"]
        for r in defaults:
            o, t = r["ours_default"], r["diffusers"]
            pr = _num(o.get("path_rmse")) / _num(t.get("path_rmse")) if t.get("path_rmse") else None
            L.append(f"| {r['algorithm']} | {r['dim']} | {o['nfe']} | {_f(o['sw2'])} | {_f(t['sw2'])} | "
                     f"{_f(o.get('path_rmse'))} | {_f(t.get('path_rmse'))} | {_f(pr)} |")
    if dz.get("defaults"):
        L += _defaults_tables(dz["defaults"])
    L += ["", "Per-step solver overhead (total minus model time, per grid step; microseconds, medians of "
          "interleaved repeats):", "",
          "| algorithm | diffusers scheduler | d | NFE | ours | diffusers | ratio |", "|---|---|---|---|---|---|---|"]
    for r in dz["rows"]:
        o, t = r["ours"], r["diffusers"]
        L.append(f"| {r['algorithm']} | {r['scheduler']} ({r['family']}) | {r['dim']} | {r['nfe_target']} | "
                 f"{o['overhead_per_step_s'] * 1e6:.0f} | {t['overhead_per_step_s'] * 1e6:.0f} | "
                 f"{_f(r['overhead_ratio'])} |")
    L.append("")
    notes = sorted({f"{r['algorithm']} / {r['scheduler']}: {r['note']}" for r in dz["rows"] if r.get("note")})
    if notes:
        L += ["Notes: " + "; ".join(notes) + ".", ""]
    if dz.get("skipped"):
        L += ["Skipped comparisons: " + "; ".join(
            f"{s['spec']}" + (f" d={s['dim']} NFE {s['nfe']}" if "dim" in s else "") + f": {s['reason']}"
            for s in dz["skipped"]), ""]
    return L


def default_flags(row: dict[str, Any]) -> dict[str, bool | None]:
    """A default-against-default row: our SW2 no larger than diffusers' up to the margin
    (``ok``), strictly (``strict``); our path RMSE no larger (``path``, None for SDE methods)."""
    o, t = _num(row["ours"]["sw2"]), _num(row["diffusers"]["sw2"])
    path = None if row.get("path_ratio") is None else _num(row["path_ratio"]) <= 1.0
    return {"ok": o <= t + _num(row["margin"]), "strict": o <= t, "path": path}


def _defaults_tables(dd: dict[str, Any]) -> list[str]:
    """The default-against-default table and its summary."""
    rows = dd["rows"]
    L = ["", "### Default against default", "",
         "What a user of each library gets for the same model and budget: our sampler as `polydiff.sample` runs it "
         "when told only the sampler and the NFE budget (the steps of `polydiff.samplers.for_budget`, with "
         "singlestep DPM-Solver's per-step orders; the plan's default grid, `Schedule.sampling_grid`: "
         f"{RULE_VP}; {RULE_EDM}; default "
         "options; t_max to t_min, no final sigma = 0 step), against the scheduler above with its default settings "
         "(only the model's betas / sigmas and prediction type and the settings that name the algorithm, such as "
         "`algorithm_type` and `solver_order`, are set; `clip_sample=False` where it exists; everything else, e.g. "
         "`timestep_spacing`, `final_sigmas_type`, PNDM's Runge-Kutta warm-up, is diffusers' default). Same NFE "
         "(diffusers: the most inference steps whose model calls fit; both actual counts shown), same exact "
         "model, same initial points: exact draws at our t_max (t = 1 for DDPM's betas, sigma = 80 for EDM; "
         "diffusers' first timestep with linspace spacing, scaled to its sigma coordinates for the VE-form "
         "schedulers; its default leading spacing for DDIM / DDPM / PNDM starts lower, from the same points, as a "
         "user's noise does). Errors against the data (t = 0) for both: SW2 (exact set and floor as above), path "
         "RMSE against a converged ODE solution from the initial points to sigma = 0 (so it also counts where a "
         "library starts or stops off the exact flow). `ours <= diffusers`: SW2 no larger, up to the margin of "
         "target (b).", ""]
    if not rows:
        return [*L, "No rows.", ""]
    def count(rs: list[dict[str, Any]], key: str) -> str:
        flags = [f[key] for f in map(default_flags, rs) if f[key] is not None]
        return f"{sum(flags)} of {len(flags)}"

    L += [f"**SW2: ours <= diffusers in {count(rows, 'ok')} cells within the margin, {count(rows, 'strict')} "
          f"strictly; path RMSE (deterministic methods): ours <= diffusers in {count(rows, 'path')}.**", "",
          "| algorithm | diffusers scheduler (model) | SW2 ours <= diffusers (margin) | strictly | median SW2 ratio "
          "| path ours <= diffusers | median path ratio |", "|---|---|---|---|---|---|---|"]
    for key in dict.fromkeys((r["algorithm"], r["scheduler"], r["model"]) for r in rows):
        rs = [r for r in rows if (r["algorithm"], r["scheduler"], r["model"]) == key]
        pr = [_num(r["path_ratio"]) for r in rs if r.get("path_ratio") is not None]
        sw = statistics.median(_num(r["error_ratio"]) for r in rs)
        L.append(f"| {key[0]} | {key[1]} ({key[2]}) | {count(rs, 'ok')} | {count(rs, 'strict')} | {_f(sw)} | "
                 f"{count(rs, 'path')} | {_f(statistics.median(pr)) if pr else '-'} |")
    L += ["", "| algorithm | diffusers scheduler (model) | d | NFE ours/theirs | our grid | SW2 ours | SW2 diffusers "
          "| SW2 ratio | margin | path ours | path diffusers | path ratio | ours <= diffusers |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        o, t = r["ours"], r["diffusers"]
        L.append(f"| {r['algorithm']} | {r['scheduler']} ({r['model']}) | {r['dim']} | {o['nfe']}/{t['nfe']} | "
                 f"{o['grid']} | {_f(o['sw2'])} | {_f(t['sw2'])} | {_f(r['error_ratio'])} | {_f(r['margin'], 2)} | "
                 f"{_f(o.get('path_rmse'))} | {_f(t.get('path_rmse'))} | {_f(r.get('path_ratio'))} | "
                 f"{'yes' if default_flags(r)['ok'] else '**no**'} |")
    if dd.get("skipped"):
        L += ["", "Skipped: " + "; ".join(f"{s['spec']} d={s['dim']} NFE {s['nfe']}: {s['reason']}"
                                          for s in dd["skipped"])]
    L.append("")
    return L


def _clean(v: Any) -> Any:
    """JSON-safe: non-finite floats become null, tuples lists, dict keys strings."""
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    return v


def write(result: dict[str, Any], json_path: str | Path | None, md_path: str | Path | None) -> None:
    """Write the JSON (every number) and the markdown report."""
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(_clean(result), indent=1) + "\n")
    if md_path:
        Path(md_path).parent.mkdir(parents=True, exist_ok=True)
        Path(md_path).write_text(to_markdown(result))


def _ints(s: str) -> list[int]:
    return [int(v) for v in s.split(",") if v.strip()]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bench/samplers.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--json", metavar="FILE", help="write every number here (script default: bench/results/)")
    p.add_argument("--md", metavar="FILE", help="write the markdown report here (script default: bench/results/)")
    p.add_argument("--quick", action="store_true",
                   help="CI smoke: all samplers, d=2 only, NFE 5,10, n=1000, short references")
    p.add_argument("--dims", type=_ints, help="comma list of dimensions (default 2,64)")
    p.add_argument("--nfe", type=_ints, help="comma list of NFE budgets (default 5,10,20,50)")
    p.add_argument("--samples", type=int, help="samples per run (default 10000 for d=2, 4000 otherwise)")
    p.add_argument("--samplers", help="comma list of samplers (default: every Gaussian sampler registered)")
    p.add_argument("--processes", help="comma list of processes (default vp_discrete,edm; also vp_linear)")
    p.add_argument("--repeats", type=int, help="interleaved timing repeats in the diffusers comparison (default 5)")
    p.add_argument("--projections", type=int, help="SW2 projection directions (default 256)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-diffusers", action="store_true", help="skip the side-by-side comparison")
    p.add_argument("--no-fitted", action="store_true", help="skip the fitted-grid runs of target (a)")
    p.add_argument("--a-replicates", type=int, help="replicate pairs for target (a) (default 10; 0 skips them)")
    p.add_argument("--render", metavar="JSON", help="only re-render the report (--md, --json) from a results file")
    return p


def config_from_args(args: argparse.Namespace) -> Config:
    cfg = Config()
    if args.quick:
        cfg = Config(dims=(2,), nfe=(5, 10), samples=1000, replicates=3, path_steps=200, repeats=2, projections=128,
                     pilot=128, fit_reference_steps=100, a_replicates=2)
    if args.dims:
        cfg.dims = args.dims
    if args.nfe:
        cfg.nfe = args.nfe
    if args.samples:
        cfg.samples = args.samples
    if args.samplers:
        cfg.samplers = [s.strip() for s in args.samplers.split(",") if s.strip()]
    if args.processes:
        cfg.processes = [s.strip() for s in args.processes.split(",") if s.strip()]
    if args.repeats:
        cfg.repeats = args.repeats
    if args.projections:
        cfg.projections = args.projections
    cfg.seed = args.seed
    cfg.diffusers = not args.no_diffusers
    cfg.fitted = not args.no_fitted
    if args.a_replicates is not None:
        cfg.a_replicates = args.a_replicates
    return cfg


def command_line(argv: Sequence[str] | None) -> str:
    """How this run was invoked, for the report's header: ``python <this script> ARGS``, the
    script's path relative to the working directory."""
    env = " ".join(f"{k}={os.environ[k]}" for k in ("OMP_NUM_THREADS",) if k in os.environ)
    rest = list(sys.argv[1:]) if argv is None else list(argv)
    return (env + " " if env else "") + shlex.join(["python", os.path.relpath(__file__), *rest])


def default_args(argv: Sequence[str]) -> list[str]:
    """``argv`` plus ``--json`` / ``--md`` pointing into bench/results (relative to the cwd)
    where not given: what running the script writes."""
    out = list(argv)
    for flag, name in (("--json", "samplers.json"), ("--md", "samplers.md")):
        if flag not in out and not any(a.startswith(flag + "=") for a in out):
            out += [flag, os.path.relpath(RESULTS / name)]
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parse ``argv`` (default ``sys.argv[1:]``), run or re-render, write the files
    named by ``--json`` / ``--md`` (print the report when neither is given)."""
    args = parser().parse_args(argv)
    if args.render:
        result = json.loads(Path(args.render).read_text())
        result["checks"] = check_targets(result)
    else:
        result = run(config_from_args(args), command=command_line(argv))
    write(result, args.json, args.md)
    ch = result["checks"]
    print(f"targets: (a) {ch['a_status']} (replicated: default grids {ch.get('a_replicated_default_status')}, "
          f"fitted {ch.get('a_replicated_fitted_status')}); (b) error {ch['b_error_status']}, "
          f"overhead {ch['b_overhead_status']}, equivalence {ch['b_equivalence_status']}; default against default: "
          f"ours <= diffusers in {ch['defaults']['ours_le_diffusers']} of {ch['defaults']['cells']} cells; "
          f"{result['seconds']:.0f} s", file=sys.stderr)
    if not args.json and not args.md:
        print(to_markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(default_args(sys.argv[1:])))
