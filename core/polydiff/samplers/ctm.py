"""Sampling with two-time models ``G(x_t, t, s)``: consistency trajectory models' gamma-sampling
(Kim et al. 2024, "Consistency trajectory models", Algorithm: gamma-sampling).

The sampling loop makes no model call of its own for this method (``loop="calls"``): each grid
step calls ``ctx.jump`` (one call ``model(state, t[, cond], s=...)`` of the two-time model, see
:mod:`polydiff.distill` for the parametrisation). From ``t`` to ``s``:

- ``gamma = 0``: ``x_s = G(x_t, t, s)``, deterministic; one grid step is one-step generation and
  a grid of K steps is K jumps along the learnt trajectory;
- ``0 < gamma <= 1``: jump to the time ``s_hat`` whose noise-to-signal ratio ``sigma / alpha`` is
  ``sqrt(1 - gamma^2)`` times that of ``s`` (``lam_hat = lam_s - log sqrt(1 - gamma^2)`` through the
  reference schedule's inverse log-SNR), then add fresh forward noise from ``s_hat`` to ``s``:
  ``x_s = (alpha_s / alpha_hat) x_hat + sqrt(sigma_s^2 - (alpha_s sigma_hat / alpha_hat)^2) z``.
  ``gamma = 1`` jumps to the data end and re-noises: consistency models' multistep sampling.

``s_hat`` is never below the data end ``t_end`` (option; default the reference schedule's
``t_min``, where its default grids end and where :func:`polydiff.distill.ctm_loss` trains the
jumps to end) nor above ``s``. The last grid step is always the deterministic jump to the grid's
end (no noise after it). Registered as deterministic (its default ``gamma = 0``); like ``ddim``
with ``eta > 0`` it is stochastic for ``gamma > 0``. Nothing is read back to the host.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..processes.gaussian import Coefs
from .base import StepContext, register


def _jump(ctx: StepContext, x: Tensor, u: Tensor, v: Tensor) -> Tensor:
    try:
        return ctx.jump(x, u, v)
    except TypeError as err:
        if "'s'" not in str(err):
            raise
        raise ValueError(f"sampler 'ctm' needs a two-time model G(x_t, t, s), called as model(state, t[, cond], "
                        f"s=...); this model takes no s (wrap an ordinary denoiser with polydiff.distill.TwoTime, "
                        f"which makes ctm DDIM, or use ddim): {err}") from err


def data_end_of(ctx: StepContext) -> float:
    """The data end of gamma-sampling: the option ``t_end``, else the reference schedule's ``t_min``."""
    given = ctx.options.get("t_end")
    if given is not None:
        return float(given)
    schedule = getattr(ctx.t_of_lam, "__self__", None)
    return float(getattr(schedule, "t_min", 0.0))


@register("ctm", "two-time models G(x_t, t, s) (consistency trajectory models): jumps along the trajectory; "
          "gamma = 0 deterministic (1 step = one-step generation), gamma in (0, 1] CTM's gamma-sampling "
          "(stochastic; gamma = 1: consistency-model multistep); t_end: data end (default: schedule t_min)",
          loop="calls", gamma=0.0, t_end=None)
def ctm(x: Tensor, d: Tensor | None, e: Tensor | None, ct: Coefs, cs: Coefs,
        hist: object, ctx: StepContext) -> tuple[Tensor, object]:
    gamma = float(ctx.options["gamma"])
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"ctm: gamma must lie in [0, 1], got {gamma}")
    if ctx.jump is None:
        raise ValueError("sampler 'ctm' needs a sampling loop that provides StepContext.jump")
    if gamma == 0.0 or ctx.i == ctx.n - 1:
        return _jump(ctx, x, ctx.t, ctx.s), hist
    if ctx.t_of_lam is None:
        raise ValueError("ctm with gamma > 0 needs StepContext.t_of_lam (a reference Gaussian schedule)")
    lam_s = cs.lam[:, :1]  # the reference (first packed) field's log-SNR at s
    shift = math.inf if gamma == 1.0 else -0.5 * math.log1p(-gamma * gamma)  # -log sqrt(1 - gamma^2)
    s_col = ctx.s.reshape(-1, 1).to(lam_s.dtype).expand_as(lam_s)
    s_hat = ctx.t_of_lam(lam_s + shift).to(lam_s.dtype)
    s_hat = torch.minimum(torch.nan_to_num(s_hat, nan=-math.inf).clamp_min(data_end_of(ctx)), s_col)
    x_hat = _jump(ctx, x, ctx.t, s_hat)
    c_hat = ctx.coefs(s_hat)
    ratio = cs.alpha / c_hat.alpha
    std = torch.sqrt((cs.sigma**2 - (ratio * c_hat.sigma) ** 2).clamp_min(0))
    return torch.addcmul(ratio * x_hat, std, ctx.noise()), hist
