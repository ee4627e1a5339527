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
may hold fields with different schedules (different ``lam`` at the same time).

Ends of the grid where ``lam`` is infinite (``alpha(t) = 0`` at the noise end of a rectified
flow, ``sigma(s) = 0`` at its data end) have no finite log-SNR step: there the methods take
their first-order (DDIM) step, which is exact in that limit, and only higher-order terms are
dropped. History nodes keep ``lam`` clipped to +-30 (a node at ``lam = -30`` stands for one at
``-inf``; the model output there differs by ``O(e^-30)``).

The helpers below (:func:`phi`, :func:`lagrange_weights`, :func:`step_order`) are shared with
:mod:`polydiff.samplers.multistep`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from ..processes.gaussian import Coefs
from .base import StepContext, register

LAM_CLIP = 30.0
_SERIES_TERMS = 16

Number = float | Tensor


# ----------------------------------------------------------------------------- shared helpers
def phi(k: int, z: Tensor) -> Tensor:
    """``phi_k(z) = sum_j z^j / (j + k)!`` (so ``phi_0 = e^z``, ``phi_1 = (e^z - 1) / z``).

    The closed form ``(e^z - sum_{j<k} z^j / j!) / z^k`` cancels catastrophically for small
    ``|z|``; a Taylor series is used there instead, so high-order coefficients stay accurate in
    float32 at many steps.
    """
    small = z.abs() < 1
    zs = torch.where(small, z, torch.zeros_like(z))
    zl = torch.where(small, torch.ones_like(z), z)
    series = torch.full_like(z, 1 / math.factorial(k + _SERIES_TERMS - 1))
    for j in range(_SERIES_TERMS - 2, -1, -1):
        series = series * zs + 1 / math.factorial(j + k)
    closed = torch.expm1(zl) if k > 0 else torch.exp(zl)
    for j in range(1, k):
        closed = closed - zl**j / math.factorial(j)
    return torch.where(small, series, closed / zl**k)


def lagrange_weights(nodes: Sequence[Number], moments: Sequence[Number]) -> list[Number]:
    """Weights ``w_k`` with ``sum_k w_k p(nodes[k]) = sum_j c_j moments[j]`` for every
    polynomial ``p(v) = sum_j c_j v^j`` of degree below ``len(nodes)``.

    With ``moments[j] = int v^j w(v) dv`` this integrates the Lagrange interpolant of values at
    ``nodes`` against the weight ``w``; with UniPC's order conditions as moments it is the
    closed-form solution of its small Vandermonde system. Works elementwise on tensors.
    """
    out: list[Number] = []
    for k, a in enumerate(nodes):
        poly: list[Number] = [1.0]  # prod_{l != k} (v - n_l), lowest degree first
        den: Number = 1.0
        for m, c in enumerate(nodes):
            if m == k:
                continue
            poly = [(poly[j - 1] if j > 0 else 0.0) - (c * poly[j] if j < len(poly) else 0.0)
                    for j in range(len(poly) + 1)]
            den = den * (a - c)
        out.append(sum(p * mo for p, mo in zip(poly, moments)) / den)
    return out


def step_order(order: int, ctx: StepContext, available: int, below: int | None = 15) -> int:
    """Order a multistep method uses at this step: at most ``available`` model outputs
    (warm-up) and, with option ``lower_order_final`` on a grid of fewer than ``below`` steps
    (any grid when ``below`` is None), at most the number of steps left (order 1 on the last
    step, 2 on the one before). diffusers uses ``below=15`` for DPM-Solver++ and no bound for
    UniPC; polydiff follows each method's reference."""
    k = min(order, available)
    if ctx.options.get("lower_order_final", False) and (below is None or ctx.n < below):
        k = min(k, ctx.n - ctx.i)
    return max(k, 1)


def check_option(name: str, value: object, allowed: Sequence[object]) -> None:
    """Raise a ValueError naming the allowed values of a sampler option."""
    if value not in allowed:
        raise ValueError(f"option {name}={value!r} is not allowed; choose one of {', '.join(map(repr, allowed))}")


def clip_lam(lam: Tensor) -> Tensor:
    """``lam`` limited to +-30, so that ends with ``alpha = 0`` or ``sigma = 0`` stay finite."""
    return lam.clamp(-LAM_CLIP, LAM_CLIP)


def lam_step(ct: Coefs, cs: Coefs) -> tuple[Tensor, Tensor, Tensor]:
    """``(h, e^-h, ok)``: the clipped (finite) log-SNR step for coefficients, the exact
    ``e^-h`` (0 at an infinite end) and where the step is finite (higher orders allowed)."""
    raw = cs.lam - ct.lam
    return clip_lam(cs.lam) - clip_lam(ct.lam), torch.exp(-raw), torch.isfinite(raw)


def data_first_order(x: Tensor, d: Tensor, ct: Coefs, cs: Coefs, emh: Tensor) -> Tensor:
    """DDIM in data-prediction form, ``(sigma_s / sigma_t) x + alpha_s (1 - e^-h) x0``: finite
    where ``alpha_t = 0`` or ``sigma_s = 0``."""
    return (cs.sigma / ct.sigma) * x + cs.alpha * (1 - emh) * d


# ----------------------------------------------------------------------------- singlestep DPM-Solver
def _intermediate(ctx: StepContext, ct: Coefs, cs: Coefs, r: float) -> tuple[Tensor, Coefs]:
    """The time at fraction ``r`` of the reference field's log-SNR step, and the packed
    schedule values there (each field's own ``lam`` at that time)."""
    if ctx.t_of_lam is None:
        raise ValueError("singlestep DPM-Solver needs StepContext.t_of_lam (the driver passes the reference "
                         "schedule's inverse log-SNR)")
    lt, ls = clip_lam(ct.lam[:, :1]), clip_lam(cs.lam[:, :1])  # column 0 is the reference field
    u = ctx.t_of_lam(lt + r * (ls - lt)).to(ct.lam.dtype)
    return u, ctx.coefs(u.reshape(-1))


def _dpm_solver(x: Tensor, d: Tensor, e: Tensor, ct: Coefs, cs: Coefs, ctx: StepContext, order: int) -> Tensor:
    """Singlestep DPM-Solver of order 1-3 in noise-prediction form (Lu et al. 2022, Alg. 1-2).

    The first-order part is written ``alpha_s x0 + sigma_s eps`` (DDIM exactly). Intermediate
    stages sit at ``r1 = 1/2`` (order 2) or ``1/3, 2/3`` (order 3) of the reference field's
    log-SNR step; the coefficients use each element's actual ``lam`` there, so fields with other
    schedules stay consistent (second order at least; third order holds for fields whose
    log-SNR is an affine function of the reference's).
    """
    ddim = cs.alpha * d + cs.sigma * e
    if order == 1:
        return ddim
    h, _, ok = lam_step(ct, cs)
    lt = clip_lam(ct.lam)
    if order == 2:
        u1, c1 = _intermediate(ctx, ct, cs, 0.5)
        h1 = clip_lam(c1.lam) - lt
        x1 = torch.where(ok, c1.alpha * d + c1.sigma * e, x)  # DDIM to s1
        _, e1 = ctx.denoise(x1, u1)
        corr = cs.sigma * h * phi(1, h) * h / (2 * h1) * (e1 - e)
        return torch.where(ok, ddim - corr, ddim)
    u1, c1 = _intermediate(ctx, ct, cs, 1 / 3)
    u2, c2 = _intermediate(ctx, ct, cs, 2 / 3)
    h1, h2 = clip_lam(c1.lam) - lt, clip_lam(c2.lam) - lt
    x1 = torch.where(ok, c1.alpha * d + c1.sigma * e, x)
    _, e1 = ctx.denoise(x1, u1)
    x2 = c2.alpha * d + c2.sigma * e - c2.sigma * h2**2 * phi(2, h2) / h1 * (e1 - e)
    x2 = torch.where(ok, x2, x)
    _, e2 = ctx.denoise(x2, u2)
    corr = cs.sigma * h**2 * phi(2, h) / h2 * (e2 - e)
    return torch.where(ok, ddim - corr, ddim)


@register("dpm_solver1", "DPM-Solver-1 (singlestep, noise prediction): identical to DDIM")
def dpm_solver1(x: Tensor, d: Tensor, e: Tensor, ct: Coefs, cs: Coefs, hist: object, ctx: StepContext):
    return _dpm_solver(x, d, e, ct, cs, ctx, 1), hist


@register("dpm_solver2", "DPM-Solver-2 (Lu et al. 2022): singlestep 2nd order, midpoint in log-SNR, 2 NFE/step",
          nfe_per_step=2)
def dpm_solver2(x: Tensor, d: Tensor, e: Tensor, ct: Coefs, cs: Coefs, hist: object, ctx: StepContext):
    return _dpm_solver(x, d, e, ct, cs, ctx, 2), hist


@register("dpm_solver3", "DPM-Solver-3 (Lu et al. 2022): singlestep 3rd order, stages at 1/3 and 2/3, 3 NFE/step",
          nfe_per_step=3)
def dpm_solver3(x: Tensor, d: Tensor, e: Tensor, ct: Coefs, cs: Coefs, hist: object, ctx: StepContext):
    return _dpm_solver(x, d, e, ct, cs, ctx, 3), hist


# ----------------------------------------------------------------------------- multistep DPM-Solver++
def _push(hist: tuple | None, item: tuple, keep: int) -> tuple:
    """Newest-first history of at most ``keep`` entries."""
    return ((item,) + (hist or ()))[:keep]


@register("dpm++2m", "DPM-Solver++(2M): 2nd-order multistep, data prediction (Lu et al. 2022)",
          lower_order_final=True)
def dpmpp_2m(x: Tensor, d: Tensor, e: Tensor, ct: Coefs, cs: Coefs, hist: tuple | None, ctx: StepContext):
    """``x_s = (sigma_s/sigma_t) x + alpha_s (1 - e^-h) D`` with ``D = x0 + (x0 - x0_prev) h / (2 h_prev)``
    (the 'midpoint' form of the paper, k-diffusion and diffusers)."""
    h, emh, ok = lam_step(ct, cs)
    x_s = data_first_order(x, d, ct, cs, emh)
    lam = clip_lam(ct.lam)
    if step_order(2, ctx, 1 + len(hist or ())) == 2:
        d_prev, lam_prev = hist[0]
        corr = cs.alpha * (1 - emh) * h / (2 * (lam - lam_prev)) * (d - d_prev)
        x_s = torch.where(ok, x_s + corr, x_s)
    return x_s, _push(hist, (d, lam), 1)


@register("dpm++3m", "DPM-Solver++(3M): 3rd-order multistep, data prediction, exact Lagrange integration",
          lower_order_final=True)
def dpmpp_3m(x: Tensor, d: Tensor, e: Tensor, ct: Coefs, cs: Coefs, hist: tuple | None, ctx: StepContext):
    """The data prediction interpolated through the last three outputs as a polynomial in
    ``lam`` and integrated exactly against ``e^(tau - h)``: the moments are
    ``int_0^1 e^(-h (1 - v)) v^j dv = j! phi_{j+1}(-h)``. (dpm-solver's / diffusers' 3M weights
    the second-difference term by half of this exact integral, which is second order only.)
    """
    return _dpmpp_multistep(x, d, ct, cs, hist, ctx, 3)


def _dpmpp_multistep(x: Tensor, d: Tensor, ct: Coefs, cs: Coefs, hist: tuple | None, ctx: StepContext,
                     order: int) -> tuple[Tensor, tuple]:
    h, emh, ok = lam_step(ct, cs)
    x_s = data_first_order(x, d, ct, cs, emh)
    lam = clip_lam(ct.lam)
    k = step_order(order, ctx, 1 + len(hist or ()))
    if k > 1:
        prev = hist[: k - 1]
        nodes = [0.0] + [(lp - lam) / h for _, lp in prev]
        moments = [math.factorial(j) * phi(j + 1, -h) for j in range(k)]
        w = lagrange_weights(nodes, moments)
        corr = sum(wk * (dk - d) for wk, (dk, _) in zip(w[1:], prev))
        x_s = torch.where(ok, x_s + cs.alpha * h * corr, x_s)
    return x_s, _push(hist, (d, lam), order - 1)


@register("dpm++2m_sde", "SDE-DPM-Solver++(2M) (Lu et al. 2022): stochastic 2nd-order multistep, data prediction",
          stochastic=True, lower_order_final=True, solver_type="midpoint")
def dpmpp_2m_sde(x: Tensor, d: Tensor, e: Tensor, ct: Coefs, cs: Coefs, hist: tuple | None, ctx: StepContext):
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
