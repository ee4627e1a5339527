"""Time grids: explicit tensors of times from the noise end to the data end.

Every grid is a 1-D tensor ``t_0 > t_1 > ... > t_K`` (K steps) in the time of a reference
Gaussian schedule; a user tensor is accepted as is. Log-SNR, Karras and ``vp_quadratic`` grids
are spaced in ``lam`` (or ``sigma / alpha``) and mapped back through the schedule's inverse, so
they mean the same thing for VP, VE, EDM and interpolants. ``final_zero`` appends t = 0
(sigma = 0): the last step then returns the model's clean estimate, as k-diffusion and
diffusers do.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .processes.gaussian import Schedule, VPLinear
from .registry import Registry

GRIDS: Registry = Registry("time grid")
LAM_LOW = -10.0  # log-SNR grids start no lower: alpha(t_max) = 0 (rectified flow) has lam = -inf


@GRIDS.register("uniform_t", "evenly spaced in t")
def uniform_t(schedule: Schedule, steps: int, t_max: float, t_min: float) -> Tensor:
    """``steps + 1`` times evenly spaced from ``t_max`` down to ``t_min``."""
    return torch.linspace(t_max, t_min, steps + 1, dtype=torch.float64)


@GRIDS.register("uniform_logsnr", "evenly spaced in log-SNR (DPM-Solver's 'logSNR' skip type)")
def uniform_logsnr(schedule: Schedule, steps: int, t_max: float, t_min: float) -> Tensor:
    """``steps + 1`` times evenly spaced in log-SNR, ends exact (the log-SNR start clipped at ``LAM_LOW``)."""
    lo = schedule.lam(torch.tensor(t_max, dtype=torch.float64))
    hi = schedule.lam(torch.tensor(t_min, dtype=torch.float64))
    lo = torch.clamp(lo, min=LAM_LOW)  # alpha(t_max) = 0 (rectified flow): start from a finite lam
    grid = schedule.t_of_lam(torch.linspace(float(lo), float(hi), steps + 1, dtype=torch.float64))
    grid[0], grid[-1] = t_max, t_min
    return grid


@GRIDS.register("karras", "Karras et al. rho-spaced noise levels sigma/alpha (rho: the schedule's, else 7)")
def karras(schedule: Schedule, steps: int, t_max: float, t_min: float, rho: float | None = None) -> Tensor:
    """``steps + 1`` times whose noise levels ``sigma / alpha`` follow Karras et al.'s rho-spacing."""
    rho = float(getattr(schedule, "rho", 7.0)) if rho is None else rho
    s_max = torch.exp(-schedule.lam(torch.tensor(t_max, dtype=torch.float64))).clamp(max=1e4)
    s_min = torch.exp(-schedule.lam(torch.tensor(t_min, dtype=torch.float64)))
    r = torch.linspace(0, 1, steps + 1, dtype=torch.float64)
    sig = (s_max ** (1 / rho) + r * (s_min ** (1 / rho) - s_max ** (1 / rho))) ** rho
    grid = schedule.t_of_lam(-torch.log(sig))
    grid[0], grid[-1] = t_max, t_min
    return grid


@GRIDS.register("quadratic", "quadratically spaced in t (dense near the data end; DDIM's 'quad')")
def quadratic(schedule: Schedule, steps: int, t_max: float, t_min: float) -> Tensor:
    """``steps + 1`` times quadratically spaced in t, dense near ``t_min``."""
    r = torch.linspace(1, 0, steps + 1, dtype=torch.float64)
    return t_min + (t_max - t_min) * r**2


@GRIDS.register("vp_quadratic", "the noise levels of DDPM's quadratic grid (VP, linear beta), carried to "
                "any schedule through log-SNR")
def vp_quadratic(schedule: Schedule, steps: int, t_max: float, t_min: float) -> Tensor:
    """DDPM's quadratic grid (DDIM's 'quad': quadratic in the time of the linear-beta VP
    schedule, beta 0.1-20, the continuous form of 1000 betas from 1e-4 to 0.02) between the
    noise levels of ``t_max`` and ``t_min``, mapped back through log-SNR. It gives any schedule
    the noise levels that linear-beta DDPM's few-step default walks: coarse at both ends, dense
    around noise levels of order one. For ``vp_linear`` it is ``quadratic`` itself."""
    ref = VPLinear()
    lam = schedule.lam(torch.tensor([t_max, t_min], dtype=torch.float64)).clamp(min=LAM_LOW)
    hi, lo = ref.t_of_lam(lam)
    grid = schedule.t_of_lam(ref.lam(quadratic(ref, steps, float(hi), float(lo))))
    grid[0], grid[-1] = t_max, t_min
    return grid


def make_grid(schedule: Schedule, steps: int, kind: str | Tensor | None = None, *,
              t_max: float | None = None, t_min: float | None = None, final_zero: bool = False,
              **options: float) -> Tensor:
    """Build a grid of ``steps`` intervals for ``schedule`` (float64, decreasing).

    ``kind`` is a registered grid name, a user grid (a tensor or a list of times, returned as a
    float64 tensor after validation), or None
    for the schedule's default (log-SNR for VP/VE, Karras for EDM, uniform t for interpolants).
    """
    kind = schedule.default_grid if kind is None else kind
    if isinstance(kind, (list, tuple)):  # times written out: a user grid
        try:
            kind = torch.tensor([float(v) for v in kind], dtype=torch.float64)
        except (TypeError, ValueError):
            raise ValueError(f"a user grid must be a list of times, got {list(kind)!r}") from None
    if isinstance(kind, Tensor):
        grid = kind.to(torch.float64)
        if grid.dim() not in (1, 2) or grid.shape[0] < 2:
            raise ValueError(f"a user grid must have shape (K+1,) or (K+1, B) with K >= 1, got {tuple(grid.shape)}")
        if not bool((grid[1:] < grid[:-1]).all()):
            raise ValueError("a user grid must be strictly decreasing (noise end first)")
        lo, hi, top = float(grid.min()), float(grid.max()), float(schedule.t_max)
        if lo < 0 or hi > top * (1 + 1e-6):
            raise ValueError(f"a user grid must lie in the schedule's time range [0, {top:g}] "
                             f"({type(schedule).__name__}), got times from {hi:g} down to {lo:g}")
        return grid
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    t_max = schedule.t_max if t_max is None else t_max
    t_min = schedule.t_min if t_min is None else t_min
    top = float(schedule.t_max)
    if not (0 <= t_min and t_max <= top * (1 + 1e-6)):  # also refuses NaN
        raise ValueError(f"t_min and t_max must lie in the schedule's time range [0, {top:g}] "
                         f"({type(schedule).__name__}), got t_max {t_max:g}, t_min {t_min:g}")
    if t_min <= 0 and kind in ("uniform_logsnr", "karras", "vp_quadratic"):
        t_min = 1e-3 * t_max  # log-SNR is infinite at t = 0
    if not t_max > t_min:
        raise ValueError(f"t_max ({t_max}) must exceed t_min ({t_min})")
    if final_zero and t_min <= 0:  # the grid already ends at sigma = 0
        final_zero = False
    grid = GRIDS.get(kind)(schedule, steps - int(final_zero), t_max, t_min, **options)
    if final_zero:
        grid = torch.cat([grid, grid.new_zeros(1)])
    return grid
