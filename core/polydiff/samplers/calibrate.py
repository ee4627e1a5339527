"""Few-step time grids fitted to one model: :func:`calibrate_grid`.

At 5-10 model evaluations, where the grid puts its times matters as much as the solver: the
best placement depends on the data (sharp, low-dimensional modes want steps where the
trajectories bend, smooth high-dimensional data hardly cares). ``calibrate_grid`` fits the
``K - 1`` interior times of a ``K``-step grid to one model and one deterministic sampler:

1. solve the probability-flow ODE accurately once on a small pilot batch (``reference_steps``
   steps of DPM-Solver++(2M), from the same prior draw);
2. search the interior times, parametrised by the log of their spacing in log-SNR (so they stay
   ordered and inside the end points), to minimise the RMS distance between the few-step
   solution and the accurate one at the data end. The search is a derivative-free pattern
   search (coordinate moves, halving the move size when a sweep brings no gain): it needs no
   gradient through the model.

The cost is ``reference_steps`` model calls once plus ``steps`` per trial on the pilot batch
(at most ``max_trials``); the result is an ordinary grid tensor for ``sample(..., grid=...)``,
worth storing next to the checkpoint. ``bench/calibrate.py`` weighs the cost against the
evaluations it saves over the default grid (Gaussian mixtures in 2 and 16 dimensions,
DPM-Solver++(2M) and UniPC at 5-10 steps, pilot 256): the fit takes 0.16-0.41 M model rows and
saves up to 5 NFE per sample (a 10-step UniPC grid that matches the default's 15 steps), so it
pays off after about 50k-170k samples; with a pilot of 64 and 60 trials it costs 10x less and
keeps most of the gain, except where it overfits the small pilot. A 100-step reference is as good
as 200 there (the default). The objective, the global error of the actual solver,
is the one that optimised-step-schedule methods approximate (Watson et al. 2021, "Learning to
efficiently sample from diffusion probabilistic models"; Sabour et al. 2024, "Align Your
Steps"); it is evaluated here directly because the pilot batch is small. Gaussian fields only
enter the objective; a grid fitted on one pilot batch should be checked on fresh seeds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from ..grids import make_grid
from ..registry import seed_value, whole_number
from ..state import as_fields
from .base import get_sampler
from .driver import Model, sample


def _gaussian_error(a: Any, b: Any, names: list[str] | None) -> float:
    """RMS difference over the Gaussian fields of two final states (or two tensors)."""
    if names is None:
        return float(((a.double() - b.double()) ** 2).mean().sqrt())
    num = sum(float(((a[k].double() - b[k].double()) ** 2).sum()) for k in names)
    den = sum(a[k].numel() for k in names)
    return math.sqrt(num / max(den, 1))


def calibrate_grid(model: Model, process: Any, shape_or_state: tuple[int, ...] | Tensor | Mapping[str, Any],
                   steps: int, *,
                   sampler: str = "dpm++2m", grid: str | Tensor | None = None, reference_steps: int = 100,
                   max_trials: int = 150, tol: float = 0.02, seed: int | None = 0, prediction: str = "eps",
                   t_max: float | None = None, t_min: float | None = None, final_zero: bool = False,
                   progress: Callable[[int, float], None] | None = None, **options: Any) -> Tensor:
    """A ``steps``-step grid for ``sampler`` fitted to ``model`` on a pilot batch.

    Args:
        model, process, shape_or_state, prediction: as for :func:`polydiff.sample`; the batch
            of ``shape_or_state`` is the pilot batch (a few hundred samples are enough).
        steps: grid intervals of the fitted grid (NFE = ``steps * nfe_per_step``).
        sampler: a deterministic Gaussian sampler; ``options`` are its options.
        grid, t_max, t_min, final_zero: the starting grid (default: the schedule's
            ``calibration_grid``, for most the one :func:`polydiff.sample` walks for this sampler
            and step count; Karras' for EDM) and its fixed end points.
        reference_steps: DPM-Solver++(2M) steps of the accurate pilot solution.
        max_trials, tol: stop after this many trial grids, or when the move size (in log
            spacing units) falls below ``tol``.
        seed: the pilot batch's seed (None: a fresh one, the same for every trial). progress:
            called as ``progress(trials, error)``.

    Returns: the fitted grid, a float64 tensor of ``steps + 1`` decreasing times.
    """
    sdef = get_sampler(sampler)
    if sdef.kind != "gaussian" or sdef.stochastic:
        raise ValueError(f"calibrate_grid fits deterministic Gaussian samplers; {sampler!r} is "
                         f"{'stochastic' if sdef.stochastic else sdef.kind}")
    steps = whole_number("steps", steps, low=None)
    if steps < 2:
        raise ValueError(f"steps must be at least 2 to calibrate a grid, got {steps} (a grid of one step has no "
                         "interior time to fit)")
    if isinstance(max_trials, bool) or not isinstance(max_trials, int) or max_trials < 1:
        raise ValueError(f"max_trials must be a positive integer, got {max_trials!r} (0 returned the starting grid)")
    if not (isinstance(tol, (int, float)) and math.isfinite(tol) and tol > 0):
        raise ValueError(f"tol must be a positive number, got {tol!r}")
    if whole_number("reference_steps", reference_steps) < steps:
        raise ValueError(f"reference_steps ({reference_steps}) must be at least steps ({steps}): the reference "
                         "solution has to be finer than the grid fitted to it")
    seed = seed_value(seed)  # None draws one seed for the reference and every trial alike
    fields = as_fields(process, prediction)
    names = None if not isinstance(shape_or_state, Mapping) else [k for k, f in fields.items()
                                                                    if f.kind == "gaussian"]
    schedule = next((f.process.schedule for f in fields.values() if f.kind == "gaussian"), None)
    if schedule is None:
        raise ValueError("calibrate_grid needs at least one Gaussian field")
    if grid is None:  # the schedule's calibration grid (most: the one sample() walks), ending where sample() ends
        t_min = schedule.sampling_defaults(sampler, steps, None, t_min)[1]
        grid = schedule.calibration_grid(sampler, steps)
    base = make_grid(schedule, steps, grid, t_max=t_max, t_min=t_min, final_zero=final_zero)
    fixed_zero = bool(base[-1] <= 0)  # a final sigma = 0 step keeps its place; its predecessor is fitted
    knots = base[:-1] if fixed_zero else base
    if knots.shape[0] < 3:
        raise ValueError("the grid has no interior time to fit (steps too small for final_zero)")
    lam = schedule.lam(knots).clamp(-30.0, 30.0)
    lo, hi = float(lam[0]), float(lam[-1])
    common = {"prediction": prediction, "seed": seed}
    ref_grid = make_grid(schedule, reference_steps, "uniform_logsnr", t_max=float(knots[0]), t_min=float(knots[-1]))
    reference = sample(model, process, shape_or_state, sampler="dpm++2m", grid=ref_grid, **common)

    def grid_of(z: Tensor) -> Tensor:
        w = torch.softmax(z, 0)
        inner = schedule.t_of_lam(lo + (hi - lo) * torch.cumsum(w, 0)[:-1])
        out = torch.cat([knots[:1], inner, knots[-1:]])
        return torch.cat([out, base[-1:]]) if fixed_zero else out

    trials = 0

    def error(z: Tensor) -> float:
        nonlocal trials
        trials += 1
        g = grid_of(z)
        if not bool((g[1:] < g[:-1]).all()):  # spacing below float resolution
            return math.inf
        out = sample(model, process, shape_or_state, sampler=sampler, grid=g, **common, **options)
        e = _gaussian_error(out, reference, names)
        return e if math.isfinite(e) else math.inf

    z = torch.log(torch.diff(lam).double().clamp(min=1e-6))
    best = error(z)
    if progress is not None:
        progress(trials, best)
    move = 0.5
    while move >= tol and trials < max_trials:
        improved = False
        for i in range(z.shape[0]):
            for sgn in (1.0, -1.0):
                if trials >= max_trials:  # never one trial more than asked (the bar read 151/150)
                    break
                trial = z.clone()
                trial[i] += sgn * move
                e = error(trial)
                if e < best:
                    z, best, improved = trial, e, True
                    break
            if trials >= max_trials:
                break
        if progress is not None:
            progress(trials, best)
        if not improved:
            move /= 2
    return grid_of(z)
