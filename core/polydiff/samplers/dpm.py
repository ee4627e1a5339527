"""Exponential-integrator samplers in log-SNR: singlestep DPM-Solver and multistep DPM-Solver++.

Both integrate the probability-flow ODE exactly in its linear part and approximate only the
model's output as a polynomial in the half log-SNR ``lam = log(alpha / sigma)``:

- noise prediction (DPM-Solver, Lu et al. 2022, "DPM-Solver: a fast ODE solver for diffusion
  probabilistic model sampling in around 10 steps"):
  ``x_s = (alpha_s / alpha_t) x_t - sigma_s int_0^h e^(h - tau) eps(lam_t + tau) dtau``,
- data prediction (DPM-Solver++, Lu et al. 2022, "DPM-Solver++: fast solver for guided
  sampling of diffusion probabilistic models"):
  ``x_s = (sigma_s / sigma_t) x_t + alpha_s int_0^h e^(tau - h) x0(lam_t + tau) dtau``,

with ``h = lam_s - lam_t``. Every coefficient is computed per element, because a packed state
may hold fields with different schedules (different ``lam`` at the same time). The shared
coefficient maths (phi functions, log-SNR steps, Lagrange weights, grid tables) is in
:mod:`polydiff.samplers.coefs`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from ..processes.gaussian import Coefs
from .base import StepContext, register
from .coefs import (
    check_option,
    clip_lam,
    coef_table,
    lagrange_weights,
    lam_step,
    lazy_mul,
    log_snr_step,
    phi,
    phis,
    stage_fractions,
    step_order,
)


def _ddim(d: Tensor, e: Tensor, c: Coefs) -> Tensor:
    """``alpha x0 + sigma eps``: DDIM's (and DPM-Solver-1's) move to the time of ``c``."""
    return torch.addcmul(c.sigma * e, c.alpha, d)


# ----------------------------------------------------------------------------- singlestep DPM-Solver
def _intermediate(ctx: StepContext, ct: Coefs, cs: Coefs, rs: tuple[float, ...]) -> list[tuple[Tensor, Coefs]]:
    """The times at fractions ``rs`` of the reference field's (clipped) log-SNR step from
    ``ct`` to ``cs`` (one inverse-lam evaluation for all of them), and the packed schedule
    values there (each field's own ``lam`` at that time)."""
    if ctx.stages is not None:  # precomputed by the driver for the whole grid
        return ctx.stages(rs)
    if ctx.t_of_lam is None:
        raise ValueError("singlestep DPM-Solver needs StepContext.t_of_lam (the driver passes the reference "
                         "schedule's inverse log-SNR)")
    lt, ls = clip_lam(ct.lam)[:, :1], clip_lam(cs.lam)[:, :1]  # column 0 is the reference field
    us = ctx.t_of_lam(lt + stage_fractions(rs, lt.dtype, lt.device) * (ls - lt)).to(lt.dtype)  # (rows, len(rs))
    # one shared time stays a scalar, so its schedule values stay (1, D) broadcasts
    us = us.reshape(len(rs)) if us.shape[0] == 1 else us.t()
    return [(u, ctx.coefs(u)) for u in us.unbind(0)]


def _dpm_solver(x: Tensor, d: Tensor, e: Tensor, ct: Coefs, cs: Coefs, ctx: StepContext, order: int) -> Tensor:
    """Singlestep DPM-Solver of order 1-3 in noise-prediction form (Lu et al. 2022, Alg. 1-2);
    with option ``orders`` the step takes its own order from it (:func:`step_orders`).

    The first-order part is written ``alpha_s x0 + sigma_s eps`` (DDIM exactly). Intermediate
    stages sit at ``r1 = 1/2`` (order 2) or ``1/3, 2/3`` (order 3) of the reference field's
    log-SNR step; the coefficients use each element's actual ``lam`` there, so fields with other
    schedules stay consistent (second order at least; third order holds for fields whose
    log-SNR is an affine function of the reference's). Where the step is infinite (``ok``
    false) the stages are evaluated at ``x`` itself and the result is DDIM; there every
    correction's coefficient is zeroed (it may be infinite), so the stages stay finite.
    """
    order = step_orders(ctx, order)
    ddim = _ddim(d, e, cs)
    if order == 1:
        return ddim
    check_option("stages", ctx.options["stages"], ("logsnr", "grid"))
    rs = (0.5,) if order == 2 else (1 / 3, 2 / 3)
    stages = _intermediate(ctx, ct, cs, rs)
    keep, *ks = coef_table(ctx, ("dpm_solver", order), _singlestep_coefs, ct, cs, stages=[c for _, c in stages],
                           rs=rs)

    def guard(stage: Tensor) -> Tensor:
        # lam is infinite only where alpha = 0 (the largest time) or sigma = 0 (time 0), so
        # only a grid's first or last step can be infinite: finite steps skip the full-size lerp
        return stage if ctx.finite or ctx.i not in (0, ctx.n - 1) else torch.lerp(x, stage, keep)

    if order == 2:
        ((u1, c1),) = stages
        _, e1 = ctx.denoise(guard(_ddim(d, e, c1)), u1, x0=False)  # DDIM to s1
        return torch.addcmul(ddim, ks[0], e1 - e, value=-0.5)
    (u1, c1), (u2, c2) = stages
    _, e1 = ctx.denoise(guard(_ddim(d, e, c1)), u1, x0=False)
    x2 = torch.addcmul(_ddim(d, e, c2), ks[0], e1 - e, value=-1)
    _, e2 = ctx.denoise(guard(x2), u2, x0=False)
    return torch.addcmul(ddim, ks[1], e2 - e, value=-1)


def _singlestep_coefs(ct: Coefs, cs: Coefs, prev: list[Tensor], stages: list[Coefs]) -> tuple[Tensor, ...]:
    """``(keep, k...)``: 1 where the step is finite (0 where lam is infinite: the stages are
    then taken at ``x`` itself) and the correction weights of DPM-Solver-2
    (``sigma_s (e^h - 1) h / h1``, with ``h phi_1(h) = e^h - 1``) or -3
    (``sigma_s2 h2^2 phi_2(h2) / h1`` and ``sigma_s h^2 phi_2(h) / h2``), zeroed where the step
    is infinite (they may be infinite there)."""
    lt = clip_lam(ct.lam)
    h, ok = clip_lam(cs.lam) - lt, torch.isfinite(cs.lam - ct.lam)
    keep = ok.to(ct.alpha.dtype)  # lerp weight 1 (the stage) where ok, 0 (x itself) elsewhere: exact either way
    if len(stages) == 1:
        return keep, torch.where(ok, cs.sigma * torch.expm1(h) * h / (clip_lam(stages[0].lam) - lt), 0.0)
    c1, c2 = stages
    h1, h2 = clip_lam(c1.lam) - lt, clip_lam(c2.lam) - lt
    p2 = phis(torch.stack(torch.broadcast_tensors(h2, h)), 2)[..., 1]  # phi_2 at h2 and h
    return (keep, torch.where(ok, c2.sigma * h2**2 * p2[0] / h1, 0.0),
            torch.where(ok, cs.sigma * h**2 * p2[1] / h2, 0.0))


def budget_orders(order: int, nfe: int) -> tuple[int, ...]:
    """Per-step orders that spend exactly ``nfe`` model calls with singlestep DPM-Solver of at
    most ``order``: as many steps of ``order`` as fit before a final first-order step, the calls
    left over in one step of their own order before it. This is DPM-Solver-fast's plan (Lu et
    al. 2022, Sec. 3.4: ``3, ..., 3, 2, 1`` for a multiple of 3, ``3, ..., 3, 1`` for one more)
    with a first-order step always last, as in diffusers' ``lower_order_final`` (a final
    second-order step, the paper's ``3, ..., 3, 2`` for ``3K + 2``, measured several times
    worse at 5 NFE in ``bench/samplers.py``'s default-against-default table; ``3, ..., 3, 1, 1``
    here). Order 2: ``2, ..., 2, 1`` for an odd budget, ``2, ..., 2, 1, 1`` for an even one."""
    if order not in (1, 2, 3):
        raise ValueError(f"singlestep DPM-Solver has orders 1-3, got {order}")
    if nfe < 1:
        raise ValueError(f"an NFE budget must be >= 1, got {nfe}")
    whole, rest = divmod(nfe - 1, order)
    return (order,) * whole + ((rest,) if rest else ()) + (1,)


def step_orders(ctx: StepContext, order: int) -> int:
    """The order of this step: ``order`` itself, or with option ``orders`` (one order per grid
    step, each 1..``order``) its entry for this step."""
    orders = ctx.options.get("orders")
    if orders is None:
        return order
    if len(orders) != ctx.n:
        raise ValueError(f"option orders lists {len(orders)} steps, the grid has {ctx.n}; give one order per step "
                         "(polydiff.samplers.for_budget plans them for an NFE budget)")
    k = orders[ctx.i]
    if k not in range(1, order + 1):
        raise ValueError(f"option orders: step {ctx.i} has order {k!r}; this sampler takes 1..{order}")
    return int(k)


def _singlestep_budget(order: int):
    """The ``budget`` of singlestep DPM-Solver of ``order``: every call spent (:func:`budget_orders`),
    unless the options name the orders already."""
    def budget(nfe: int, options: Mapping[str, Any]) -> tuple[int, dict[str, Any]]:
        if options.get("orders") is not None:
            return len(options["orders"]), dict(options)
        orders = budget_orders(order, nfe)
        return len(orders), {**options, "orders": orders}
    return budget


_ORDERS_DOC = ("; option orders: one order per step (None: all of the method's; polydiff.samplers.for_budget spends "
               "an NFE budget DPM-Solver-fast's way, ending with a first-order step), each step as wide in the "
               "grid as its calls")


@register("dpm_solver1", "DPM-Solver-1 (singlestep, noise prediction): identical to DDIM")
def dpm_solver1(x: Tensor, d: Tensor, e: Tensor, ct: Coefs, cs: Coefs,
                hist: object, ctx: StepContext) -> tuple[Tensor, object]:
    return _dpm_solver(x, d, e, ct, cs, ctx, 1), hist


@register("dpm_solver2", "DPM-Solver-2 (Lu et al. 2022): singlestep 2nd order, 2 NFE/step; stage at the log-SNR "
          "midpoint (stages='logsnr') or at the middle point of a twice finer grid (stages='grid', as diffusers)"
          + _ORDERS_DOC, nfe_per_step=2, budget=_singlestep_budget(2), stages="logsnr", orders=None)
def dpm_solver2(x: Tensor, d: Tensor, e: Tensor, ct: Coefs, cs: Coefs,
                hist: object, ctx: StepContext) -> tuple[Tensor, object]:
    return _dpm_solver(x, d, e, ct, cs, ctx, 2), hist


@register("dpm_solver3", "DPM-Solver-3 (Lu et al. 2022): singlestep 3rd order, 3 NFE/step; stages at 1/3 and 2/3 "
          "of the log-SNR step (stages='logsnr') or the inner points of a 3x finer grid (stages='grid', diffusers)"
          + _ORDERS_DOC, nfe_per_step=3, budget=_singlestep_budget(3), stages="logsnr", orders=None)
def dpm_solver3(x: Tensor, d: Tensor, e: Tensor, ct: Coefs, cs: Coefs,
                hist: object, ctx: StepContext) -> tuple[Tensor, object]:
    return _dpm_solver(x, d, e, ct, cs, ctx, 3), hist


# ----------------------------------------------------------------------------- multistep DPM-Solver++
def _push(hist: tuple | None, item: tuple, keep: int) -> tuple:
    """Newest-first history of at most ``keep`` entries."""
    return ((item,) + (hist or ()))[:keep]


@register("dpm++2m", "DPM-Solver++(2M): 2nd-order multistep, data prediction (Lu et al. 2022)",
          lower_order_final=True)
def dpmpp_2m(x: Tensor, d: Tensor, e: Tensor, ct: Coefs, cs: Coefs,
             hist: tuple | None, ctx: StepContext) -> tuple[Tensor, object]:
    """``x_s = (sigma_s/sigma_t) x + alpha_s (1 - e^-h) D`` with ``D = x0 + (x0 - x0_prev) h / (2 h_prev)``
    (the 'midpoint' form of the paper, k-diffusion and diffusers)."""
    hist = hist or ()
    ratio, b, lam, w = coef_table(ctx, "dpm++2m", _dpmpp_2m_coefs, ct, cs, [lp for _, lp in hist[:1]], n_prev=1)
    x_s = torch.addcmul(ratio * x, b, d)
    if step_order(2, ctx, 1 + len(hist)) == 2:
        x_s = torch.addcmul(x_s, w, d - hist[0][0], value=0.5)
    return x_s, _push(hist, (d, lam), 1)


def _dpmpp_2m_coefs(ct: Coefs, cs: Coefs, prev: list[Tensor], stages: list[Coefs]) -> tuple[Any, ...]:
    """``(sigma_s / sigma_t, alpha_s (1 - e^-h), lam_t, w)`` with the second-order weight
    ``w = alpha_s (1 - e^-h) h / h_prev`` (None at first order), zero where the step is infinite."""
    h, emh, ok, lam = log_snr_step(ct, cs)
    b = cs.alpha * (1 - emh)
    w = torch.where(ok, b * h / (lam - prev[0]), 0.0) if prev else None
    return cs.sigma / ct.sigma, b, lam, w


@register("dpm++3m", "DPM-Solver++(3M): multistep on the last 3 data predictions (Lu et al. 2022); variant "
          "published (the dpm-solver / diffusers update, observed order 2) or lagrange (exact integration, order 3)",
          lower_order_final=True, variant="published")
def dpmpp_3m(x: Tensor, d: Tensor, e: Tensor, ct: Coefs, cs: Coefs,
             hist: tuple | None, ctx: StepContext) -> tuple[Tensor, object]:
    """The data prediction as the polynomial in ``v = (lam - lam_t) / h`` through the last
    three outputs, ``x0 ~ c_0 + c_1 v + c_2 v^2``, integrated against ``e^(tau - h)``.

    ``variant="published"`` (default): the update of the DPM-Solver++ paper, the official
    DPM-Solver code and diffusers, ``x_s = (sigma_s/sigma_t) x + alpha_s h (phi_1 D0 + phi_2 D1
    + phi_3 D2)`` (``phi_k`` at ``-h``; ``D1 = c_1``, ``D2 = c_2`` are its finite differences),
    with the midpoint 2M update (``D1`` weighted by ``phi_1 / 2``) while only two outputs
    exist or on the second-to-last step of a short grid. The exact weight of ``c_2`` is
    ``2 phi_3``: the published update halves it, an ``O(h^3)`` local error.
    ``variant="lagrange"``: the exact integral, moments ``j! phi_{j+1}(-h)`` at every order.
    """
    variant = ctx.options["variant"]
    check_option("variant", variant, ("published", "lagrange"))
    return _dpmpp_multistep(x, d, ct, cs, hist, ctx, 3, exact=variant == "lagrange")


def _dpmpp_multistep(x: Tensor, d: Tensor, ct: Coefs, cs: Coefs, hist: tuple | None, ctx: StepContext,
                     order: int, exact: bool = True) -> tuple[Tensor, tuple]:
    """DPM-Solver++ of ``order`` on the last outputs: ``sum_j c_j moment_j`` with the moments
    ``int_0^1 e^(-h (1 - v)) v^j dv = j! phi_{j+1}(-h)`` (``exact``) or the published ones
    (``phi_1, phi_1 / 2`` at order 2, ``phi_1, phi_2, phi_3`` at order 3)."""
    hist = hist or ()
    k = step_order(order, ctx, 1 + len(hist))
    ratio, b, lam, ws = coef_table(ctx, ("dpm++", order, exact), functools.partial(_dpmpp_coefs, exact=exact),
                                   ct, cs, [lp for _, lp in hist[: order - 1]], n_prev=order - 1)
    x_s = torch.addcmul(ratio * x, b, d)
    for wk, (dk, _) in zip(ws[k - 1], hist[: k - 1]):
        x_s = torch.addcmul(x_s, wk, dk - d)
    return x_s, _push(hist, (d, lam), order - 1)


def _dpmpp_coefs(ct: Coefs, cs: Coefs, prev: list[Tensor], stages: list[Coefs], *, exact: bool) -> tuple[Any, ...]:
    """``(sigma_s / sigma_t, alpha_s (1 - e^-h), lam_t, ws)`` with ``ws[k - 1]`` the weights of
    ``x0_j - x0`` per history node at order ``k``, for every order the history nodes ``prev``
    allow (shared pieces computed once for all of them)."""
    h, emh, ok, lam = log_snr_step(ct, cs)
    top = 1 + len(prev)
    ws: list[list[Tensor]] = [[]]
    if top > 1:
        nodes = [0.0] + [(lp - lam) / h for lp in prev]
        m = phis(-h, 1 if top == 2 and not exact else top)
        g = torch.where(ok, cs.alpha * h, 0.0)
        for k in range(2, top + 1):
            if exact:
                moments = [lazy_mul(math.factorial(j), m[..., j]) for j in range(k)]
            elif k == 2:
                moments = [m[..., 0], 0.5 * m[..., 0]]
            else:
                moments = [m[..., j] for j in range(k)]
            ws.append([g * wk for wk in lagrange_weights(nodes[:k], moments, start=1)])
    return cs.sigma / ct.sigma, cs.alpha * (1 - emh), lam, ws


@register("dpm++2m_sde", "SDE-DPM-Solver++(2M) (Lu et al. 2022): stochastic 2nd-order multistep, data prediction",
          stochastic=True, lower_order_final=True, solver_type="midpoint")
def dpmpp_2m_sde(x: Tensor, d: Tensor, e: Tensor, ct: Coefs, cs: Coefs,
                 hist: tuple | None, ctx: StepContext) -> tuple[Tensor, object]:
    """Exact solution of the data-prediction SDE's linear part,
    ``x_s = (sigma_s/sigma_t) e^-h x + alpha_s (1 - e^-2h) x0 + sigma_s sqrt(1 - e^-2h) z``,
    plus a multistep first-derivative term: ``solver_type="midpoint"`` (diffusers' and
    k-diffusion's default) weights ``D1 = (x0 - x0_prev) h / h_prev`` by ``(1 - e^-2h) / 2``,
    ``"heun"`` by the exact ``1 - (1 - e^-2h) / (2h)``.
    """
    solver = ctx.options["solver_type"]
    check_option("solver_type", solver, ("midpoint", "heun"))
    h, emh, ok = lam_step(ct, cs)
    one_m = 1 - emh**2
    x_s = (cs.sigma / ct.sigma) * emh * x + cs.alpha * one_m * d
    lam = clip_lam(ct.lam)
    if step_order(2, ctx, 1 + len(hist or ())) == 2:
        d_prev, lam_prev = hist[0]
        d1 = (d - d_prev) * h / (lam - lam_prev)
        w = 0.5 * one_m if solver == "midpoint" else 2 * h * phi(2, -2 * h)  # = 1 - (1 - e^-2h) / (2h)
        x_s = torch.where(ok, x_s + cs.alpha * w * d1, x_s)
    x_s = x_s + cs.sigma * torch.sqrt(one_m.clamp_min(0)) * ctx.noise()
    return x_s, _push(hist, (d, lam), 1)
