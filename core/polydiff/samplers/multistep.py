"""Multistep samplers on the noise prediction (DEIS, PNDM / PLMS, GHVB) and UniPC.

DEIS, PLMS and GHVB work in the coordinates of DDIM's ODE, ``y = x / alpha`` and
``rho = sigma / alpha``, where the probability-flow ODE is ``dy/drho = eps``. One step combines
the current and stored noise predictions into an ``eps_hat`` and moves along it exactly as
DDIM does (the "transfer" of PNDM):

    y_s = y_t + (rho_s - rho_t) eps_hat,  i.e.  x_s = alpha_s x0_hat + sigma_s eps_hat,
    x0_hat = x0 + rho_t (eps - eps_hat).

With ``eps_hat = eps`` every one of them is DDIM. UniPC (Zhao et al. 2023) works on the data
prediction in log-SNR like DPM-Solver++ and adds a corrector that reuses the next model call.

Every method carries its history explicitly (newest first) and takes lower orders while it
warms up (PLMS by default spends one extra model call instead, as diffusers does) and, with
``lower_order_final`` on grids of fewer than 15 steps, on the last steps.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor

from ..processes.gaussian import Coefs
from .base import StepContext, register
from .coefs import (
    LAM_CLIP,
    check_option,
    clip_lam,
    data_first_order,
    lagrange_weights,
    lam_step,
    phi,
    phis,
    step_order,
)

_RHO_MAX = math.exp(LAM_CLIP)


def _rho(c: Coefs) -> Tensor:
    """``sigma / alpha``, capped where ``alpha = 0`` (a node there weighs ~``e^-30``)."""
    return (c.sigma / c.alpha).clamp(max=_RHO_MAX)


def _transfer(d: Tensor, e: Tensor, e_hat: Tensor | None, ct: Coefs, cs: Coefs) -> Tensor:
    """DDIM's move along ``eps_hat`` (``None``: along ``eps`` itself, exactly DDIM)."""
    if e_hat is None:
        return torch.addcmul(cs.sigma * e, cs.alpha, d)
    return torch.addcmul(cs.sigma * e_hat, cs.alpha, torch.addcmul(d, _rho(ct), e - e_hat))


# ----------------------------------------------------------------------------- DEIS
@register("deis", "DEIS (Zhang & Chen 2022): Lagrange polynomial of eps in log rho (default, as diffusers' "
          "DEISMultistepScheduler) or in rho = sigma/alpha, integrated exactly in rho; order 1 is DDIM",
          order=3, lower_order_final=True, space="logrho")
def deis(x: Tensor, d: Tensor, e: Tensor, ct: Coefs, cs: Coefs,
         hist: tuple | None, ctx: StepContext) -> tuple[Tensor, object]:
    """``eps_hat`` is the mean over ``[rho_t, rho_s]`` of the polynomial through the last
    ``order`` noise predictions (variable steps, per element), as a function of:

    - ``space="logrho"`` (default; DEIS's "log-rho AB", diffusers' only formulation):
      ``log rho = -lam``. In ``v = (lam - lam_t) / h`` the mean of ``v^j`` is
      ``j! phi_{j+1}(h) / phi_1(h)``, which makes this the multistep DPM-Solver on the noise
      prediction with exact Lagrange integration;
    - ``space="rho"``: ``rho`` itself, where the mean of ``v^j`` is ``1 / (j + 1)`` (the
      "rho-AB" variant; on evenly spaced ``rho`` it is PLMS).
    """
    order, space = ctx.options["order"], ctx.options["space"]
    check_option("order", order, (1, 2, 3))
    check_option("space", space, ("logrho", "rho"))
    hist = hist or ()
    if space == "rho":
        node_t = _rho(ct)
        width = _rho(cs) - node_t
    else:
        width, node_t = lam_step(ct, cs)[0], clip_lam(ct.lam)
    k = step_order(order, ctx, 1 + len(hist))
    e_hat = None
    if k > 1:
        prev = hist[: k - 1]
        nodes = [0.0] + [(nk - node_t) / width for _, nk in prev]
        if space == "rho":
            moments: list = [1 / (j + 1) for j in range(k)]
        else:
            m = phis(width, k)
            moments = [1.0] + [math.factorial(j) * m[..., j] / m[..., 0] for j in range(1, k)]
        e_hat = e
        for wk, (ek, _) in zip(lagrange_weights(nodes, moments, start=1), prev):
            e_hat = torch.addcmul(e_hat, wk, ek - e)
    return _transfer(d, e, e_hat, ct, cs), ((e, node_t), *hist)[: max(order - 1, 0)]


# ----------------------------------------------------------------------------- PLMS and GHVB
_AB_BACKWARD = (1.0, 1 / 2, 5 / 12, 3 / 8)  # Adams-Bashforth in backward differences (GHVB eq. 15)


@functools.lru_cache(maxsize=64)
def ghvb_weights(order: int, beta: float) -> tuple[float, ...]:
    """Weights of ``v_n, v_{n-1}, ...`` in GHVB's update (Wizadwongsa et al. 2023, eq. 16-19):
    the AB series multiplied by the momentum operator ``beta + (1 - beta) Delta``, truncated to
    ``order`` terms, divided back. ``beta = 1`` gives the Adams-Bashforth (PLMS) weights."""
    q = [1.0] + [(beta * _AB_BACKWARD[j] + (1 - beta) * _AB_BACKWARD[j - 1]) / beta for j in range(1, order)]
    return tuple((-1) ** m * sum(q[j] * math.comb(j, m) for j in range(m, order)) for m in range(order))


def _momentum(x: Tensor, d: Tensor, e: Tensor, ct: Coefs, cs: Coefs, hist: tuple | None, ctx: StepContext,
              order: int, beta: float) -> tuple[Tensor, tuple]:
    """``v = (1 - beta) v_prev + beta eps`` (``v`` starts at the first ``eps``), then
    ``eps_hat = sum_m w_m v_{n-m}`` and DDIM's transfer along ``eps_hat``."""
    hist = hist or ()
    v = e if not hist or beta == 1 else (1 - beta) * hist[0] + beta * e
    k = step_order(order, ctx, 1 + len(hist))
    vs = (v, *hist)
    e_hat = None
    if hist:  # (k > 1 needs a history)
        w = ghvb_weights(k, beta)
        e_hat = vs[0] if w[0] == 1 else w[0] * vs[0]
        for wm, vm in zip(w[1:], vs[1:]):
            e_hat = torch.add(e_hat, vm, alpha=wm)
    return _transfer(d, e, e_hat, ct, cs), vs[: max(order - 1, 1)]


@register("pndm", "PLMS / pseudo linear multistep (Liu et al. 2022): Adams-Bashforth on eps with DDIM's transfer; "
          "warm-up by a pseudo improved Euler step (as diffusers / LDM, N + 1 calls) or lower-order AB",
          order=4, lower_order_final=False, warmup="improved_euler")
def pndm(x: Tensor, d: Tensor, e: Tensor, ct: Coefs, cs: Coefs,
         hist: tuple | None, ctx: StepContext) -> tuple[Tensor, object]:
    """Fixed Adams-Bashforth weights (55, -59, 37, -9) / 24 for order 4, as in PLMS: they
    assume evenly spaced steps, so on other grids the method is consistent but of low order.

    ``warmup="improved_euler"`` (default): the first step is PNDM's pseudo improved Euler
    (DDIM to ``s``, one more model call there, then DDIM's transfer from ``t`` along the mean of
    the two noise predictions; only the first is kept), then AB2, AB3, AB4: the PLMS of LDM and
    diffusers' PNDMScheduler with ``skip_prk_steps`` (one extra model call in all).
    From a time with ``alpha = 0`` (a rectified flow's noise end) the first step is DDIM.
    ``warmup="ab"``: AB1 (DDIM) to AB3 on the first steps, one call per step. Neither runs
    PNDM's pseudo Runge-Kutta warm-up (12 calls). diffusers keeps the full order to the end
    (``lower_order_final=False``)."""
    order, warmup = ctx.options["order"], ctx.options["warmup"]
    check_option("order", order, (1, 2, 3, 4))
    check_option("warmup", warmup, ("improved_euler", "ab"))
    if hist is None and order > 1 and warmup == "improved_euler" and ctx.n > 1:
        _, e1 = ctx.denoise(_transfer(d, e, None, ct, cs), ctx.s, x0=False)
        half = 0.5 * (ct.alpha > 0).to(e.dtype)  # from alpha = 0 (infinite rho) only DDIM is finite
        return _transfer(d, e, torch.lerp(e, e1, half), ct, cs), (e,)
    return _momentum(x, d, e, ct, cs, hist, ctx, order, 1.0)


@register("ghvb", "generalised heavy-ball momentum on PLMS (Wizadwongsa et al. 2023): order + beta; beta = 1 is PLMS",
          order=4, beta=0.8, lower_order_final=True)
def ghvb(x: Tensor, d: Tensor, e: Tensor, ct: Coefs, cs: Coefs,
         hist: tuple | None, ctx: StepContext) -> tuple[Tensor, object]:
    """GHVB ``order - 1 + beta`` ("GHVB 1.8" is order 2, beta 0.8): the velocity is an
    exponential moving average of ``eps``, combined by AB-like weights so the method keeps
    order ``order`` (on evenly spaced steps) with a larger stability region; beta = 1 is PLMS
    and ``order = 1, beta = 1`` is DDIM."""
    order, beta = ctx.options["order"], float(ctx.options["beta"])
    check_option("order", order, (1, 2, 3, 4))
    if not 0 < beta <= 1:
        raise ValueError(f"option beta={beta!r} must lie in (0, 1]")
    return _momentum(x, d, e, ct, cs, hist, ctx, order, beta)


# ----------------------------------------------------------------------------- UniPC
def _unipc_update(base: Tensor, m0: Tensor, others: list[tuple[Tensor, Tensor]], lam0: Tensor, h: Tensor,
                  alpha_s: Tensor, variant: str, n_eq: int, extra: Tensor | None) -> Tensor:
    """``base + alpha_s B(h) sum_k rho_k D_k`` with ``D_k = (m_k - m0) / r_k`` over the stored
    outputs (``r_k = (lam_k - lam0) / h < 0``) and, for the corrector, the new output at
    ``r = 1``; ``rho`` solves UniPC's ``n_eq`` order conditions in closed form."""
    nodes = [(lk - lam0) / h for _, lk in others]
    diffs = [(mk - m0) / rk for (mk, _), rk in zip(others, nodes)]
    if extra is not None:
        nodes.append(1.0)
        diffs.append(extra - m0)
    if n_eq == 1:  # the official implementation's fixed choice for UniP-2 / UniC-1
        rho = [0.5]
        b_h = h if variant == "bh1" else -torch.expm1(-h)
    else:  # B(h) b_i = h i! phi_{i+1}(-h) for both variants
        rho = lagrange_weights(nodes, [math.factorial(i) * phi(i + 1, -h) for i in range(1, n_eq + 1)])
        b_h = h
    return base + alpha_s * b_h * sum(r * dk for r, dk in zip(rho, diffs))


@register("unipc", "UniPC (Zhao et al. 2023): UniP predictor + UniC corrector reusing the next model call, "
          "data prediction, order 1-3, variant bh1/bh2", order=2, variant="bh2", lower_order_final=True,
          disable_corrector=False)
def unipc(x: Tensor, d: Tensor, e: Tensor, ct: Coefs, cs: Coefs,
          hist: tuple | None, ctx: StepContext) -> tuple[Tensor, object]:
    """UniPC-p with the UniC corrector (one model call per step, order ``p + 1``).

    The corrector of the previous step needs the model output at the point it predicted,
    which is the ``d`` this step receives; so the step first corrects ``x`` (recomputing the
    previous step from its stored start with the new output as an extra node), then predicts
    from the corrected ``x`` with ``d`` still taken at the uncorrected point, as UniPC does.
    The returned ``x`` is the uncorrected prediction (the point the model is evaluated at next).
    """
    o = ctx.options
    order, variant = o["order"], o["variant"]
    check_option("order", order, (1, 2, 3))
    check_option("variant", variant, ("bh1", "bh2"))
    outs: tuple = ()
    if hist is not None:
        x_start, sigma0, lam0_raw, outs, p_prev, finite_prev = hist
        if not o["disable_corrector"]:
            h_raw = ct.lam - lam0_raw
            lam0 = clip_lam(lam0_raw)
            h = clip_lam(ct.lam) - lam0
            m0 = outs[0][0]
            base = (ct.sigma / sigma0) * x_start + ct.alpha * (1 - torch.exp(-h_raw)) * m0
            corrected = _unipc_update(base, m0, list(outs[1:p_prev]), lam0, h, ct.alpha, variant, p_prev, d)
            # the corrected step is finite on the grid's inner steps (known there: no full-size where)
            x = corrected if finite_prev else torch.where(torch.isfinite(h_raw), corrected, base)
    lam = clip_lam(ct.lam)
    outs = ((d, lam), *outs)
    k = step_order(order, ctx, len(outs), below=None)  # UniPC lowers the final orders at any step count
    h, emh, ok = lam_step(ct, cs)
    x_s = data_first_order(x, d, ct, cs, emh)
    if k > 1:
        x_p = _unipc_update(x_s, d, list(outs[1:k]), lam, h, cs.alpha, variant, k - 1, None)
        x_s = x_p if ctx.finite else torch.where(ok, x_p, x_s)
    return x_s, (x, ct.sigma, ct.lam, outs[:order], k, ctx.finite)
