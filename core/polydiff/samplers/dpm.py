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

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from ..processes.gaussian import Coefs
from .base import StepContext, register

LAM_CLIP = 30.0
_SERIES_TERMS = 16

Number = float | Tensor


# ----------------------------------------------------------------------------- shared helpers
# Every tensor operation costs a dispatch (microseconds on CPU) whatever its size, and the
# coefficients below are (1, 1) or (B, 1) tensors: the helpers keep their operation count low
# (one Taylor evaluation for all phi_k, no arithmetic with exact Python zeros and ones), and
# the steps select between branches on the small coefficients, not with a full-size
# ``torch.where`` on the state (several times the cost of an elementwise pass on CPU).
@functools.lru_cache(maxsize=64)
def _taylor(k_max: int, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor]:
    """Exponents ``0 .. N-1`` and the ``(N, k_max)`` Taylor coefficients ``1 / (j + k)!`` of
    ``phi_1 .. phi_kmax`` (cached per dtype and device)."""
    powers = torch.arange(_SERIES_TERMS, dtype=dtype, device=device)
    coef = [[1 / math.factorial(j + k) for k in range(1, k_max + 1)] for j in range(_SERIES_TERMS)]
    return powers, torch.tensor(coef, dtype=dtype, device=device)


def phis(z: Tensor, k_max: int) -> Tensor:
    """``phi_1(z) .. phi_kmax(z)`` stacked on a new last dimension (see :func:`phi`).

    For ``|z| < 1`` a Taylor series (one power table and one matrix product for all ``k``);
    elsewhere ``phi_1 = (e^z - 1) / z`` and ``phi_{k+1} = (phi_k - 1/k!) / z``, the closed
    form, whose cancellation is mild there.
    """
    powers, coef = _taylor(k_max, z.dtype, z.device)
    series = (z.unsqueeze(-1) ** powers) @ coef
    closed = [torch.expm1(z) / z]
    for k in range(1, k_max):
        closed.append((closed[-1] - 1 / math.factorial(k)) / z)
    return torch.where((z.abs() < 1).unsqueeze(-1), series, torch.stack(closed, dim=-1))


def phi(k: int, z: Tensor) -> Tensor:
    """``phi_k(z) = sum_j z^j / (j + k)!`` (so ``phi_0 = e^z``, ``phi_1 = (e^z - 1) / z``).

    The closed form ``(e^z - sum_{j<k} z^j / j!) / z^k`` cancels catastrophically for small
    ``|z|``; a Taylor series is used there instead, so high-order coefficients stay accurate in
    float32 at many steps.
    """
    return torch.exp(z) if k == 0 else phis(z, k)[..., k - 1]


def _is_num(v: Number, value: float) -> bool:
    return not isinstance(v, Tensor) and v == value


def _mul(a: Number, b: Number) -> Number:
    """``a * b`` without a tensor operation where either factor is an exact Python 0 or 1."""
    if _is_num(a, 0.0) or _is_num(b, 0.0):
        return 0.0
    return b if _is_num(a, 1.0) else a if _is_num(b, 1.0) else a * b


def _sub(a: Number, b: Number) -> Number:
    """``a - b`` without a tensor operation where either term is an exact Python 0."""
    return a if _is_num(b, 0.0) else -b if _is_num(a, 0.0) else a - b


def lagrange_weights(nodes: Sequence[Number], moments: Sequence[Number], start: int = 0) -> list[Number]:
    """Weights ``w_k`` with ``sum_k w_k p(nodes[k]) = sum_j c_j moments[j]`` for every
    polynomial ``p(v) = sum_j c_j v^j`` of degree below ``len(nodes)``.

    With ``moments[j] = int v^j w(v) dv`` this integrates the Lagrange interpolant of values at
    ``nodes`` against the weight ``w``; with UniPC's order conditions as moments it is the
    closed-form solution of its small Vandermonde system. Works elementwise on tensors; nodes
    and moments may mix tensors and Python numbers. Only the weights of ``nodes[start:]`` are
    returned (methods that combine differences to the first node need no weight for it).
    """
    out: list[Number] = []
    for k, a in enumerate(nodes):
        if k < start:
            continue
        poly: list[Number] = [1.0]  # prod_{l != k} (v - n_l), lowest degree first
        den: Number = 1.0
        for m, c in enumerate(nodes):
            if m == k:
                continue
            poly = [_sub(poly[j - 1] if j > 0 else 0.0, _mul(c, poly[j]) if j < len(poly) else 0.0)
                    for j in range(len(poly) + 1)]
            den = _mul(den, _sub(a, c))
        num: Number = 0.0
        for p, mo in zip(poly, moments):
            term = _mul(p, mo)
            num = term if _is_num(num, 0.0) else num if _is_num(term, 0.0) else num + term
        out.append(num / den)
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


def _lam_step(ct: Coefs, cs: Coefs) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """:func:`lam_step` plus the clipped ``lam_t`` it is built on: ``(h, e^-h, ok, lam_t)``."""
    neg = ct.lam - cs.lam  # -h, exactly
    lt = clip_lam(ct.lam)
    return clip_lam(cs.lam) - lt, torch.exp(neg), torch.isfinite(neg), lt


def lam_step(ct: Coefs, cs: Coefs) -> tuple[Tensor, Tensor, Tensor]:
    """``(h, e^-h, ok)``: the clipped (finite) log-SNR step for coefficients, the exact
    ``e^-h`` (0 at an infinite end) and where the step is finite (higher orders allowed)."""
    return _lam_step(ct, cs)[:3]


def lam_node(c: Coefs) -> Tensor:
    """A multistep method's history node: the clipped log-SNR of a step's start."""
    return clip_lam(c.lam)


def coef_table(ctx: StepContext, key: Any, fn: Callable[..., Any], ct: Coefs, cs: Coefs,
               prev: Sequence[Tensor] = (), stages: Sequence[Coefs] = (), rs: tuple[float, ...] = (),
               node: Callable[[Coefs], Tensor] = lam_node, n_prev: int | None = None) -> Any:
    """``fn(ct, cs, prev, stages)``: a step's coefficients, which depend only on the grid.

    ``fn`` must be elementwise in its tensors, so that it can run on schedule values stacked
    over all steps: on the grid the driver evaluates it once per ``key`` for every step, with
    ``prev[j]`` = ``node`` at the ``j + 1``-th grid time before each step's start (what a
    multistep history holds) and ``stages`` the schedule values at fractions ``rs`` of each
    step (singlestep stages), and returns this step's slice. Off the grid (``ctx.table`` is
    None: steering's transition densities) it runs on this step's own ``ct``, ``cs``, history
    nodes ``prev`` and ``stages``. ``key`` names ``fn`` with its parameters. ``n_prev``: how
    many history nodes the table holds (default ``len(prev)``); a method whose order grows
    while its history fills gives its full count, so that one table serves every step, and
    ``fn`` computes the coefficients of every order its ``prev`` allows.
    """
    if ctx.table is not None and ctx.n > 1:  # (a one-step grid gains nothing from a table)
        n = len(prev) if n_prev is None else n_prev
        return ctx.table(key, fn, n, tuple(rs), node if n else None)
    return fn(ct, cs, list(prev), list(stages))


def data_first_order(x: Tensor, d: Tensor, ct: Coefs, cs: Coefs, emh: Tensor) -> Tensor:
    """DDIM in data-prediction form, ``(sigma_s / sigma_t) x + alpha_s (1 - e^-h) x0``: finite
    where ``alpha_t = 0`` or ``sigma_s = 0``."""
    return torch.addcmul((cs.sigma / ct.sigma) * x, cs.alpha * (1 - emh), d)


def _ddim(d: Tensor, e: Tensor, c: Coefs) -> Tensor:
    """``alpha x0 + sigma eps``: DDIM's (and DPM-Solver-1's) move to the time of ``c``."""
    return torch.addcmul(c.sigma * e, c.alpha, d)


# ----------------------------------------------------------------------------- singlestep DPM-Solver
@functools.lru_cache(maxsize=64)
def stage_fractions(rs: tuple[float, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
    """Stage fractions as a tensor, made once per tuple, dtype and device."""
    return torch.tensor(rs, dtype=dtype, device=device)


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
    """Singlestep DPM-Solver of order 1-3 in noise-prediction form (Lu et al. 2022, Alg. 1-2).

    The first-order part is written ``alpha_s x0 + sigma_s eps`` (DDIM exactly). Intermediate
    stages sit at ``r1 = 1/2`` (order 2) or ``1/3, 2/3`` (order 3) of the reference field's
    log-SNR step; the coefficients use each element's actual ``lam`` there, so fields with other
    schedules stay consistent (second order at least; third order holds for fields whose
    log-SNR is an affine function of the reference's). Where the step is infinite (``ok``
    false) the stages are evaluated at ``x`` itself and the result is DDIM; there every
    correction's coefficient is zeroed (it may be infinite), so the stages stay finite.
    """
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


@register("dpm_solver1", "DPM-Solver-1 (singlestep, noise prediction): identical to DDIM")
def dpm_solver1(x: Tensor, d: Tensor, e: Tensor, ct: Coefs, cs: Coefs, hist: object, ctx: StepContext):
    return _dpm_solver(x, d, e, ct, cs, ctx, 1), hist


@register("dpm_solver2", "DPM-Solver-2 (Lu et al. 2022): singlestep 2nd order, 2 NFE/step; stage at the log-SNR "
          "midpoint (stages='logsnr') or at the middle point of a twice finer grid (stages='grid', as diffusers)",
          nfe_per_step=2, stages="logsnr")
def dpm_solver2(x: Tensor, d: Tensor, e: Tensor, ct: Coefs, cs: Coefs, hist: object, ctx: StepContext):
    return _dpm_solver(x, d, e, ct, cs, ctx, 2), hist


@register("dpm_solver3", "DPM-Solver-3 (Lu et al. 2022): singlestep 3rd order, 3 NFE/step; stages at 1/3 and 2/3 "
          "of the log-SNR step (stages='logsnr') or the inner points of a 3x finer grid (stages='grid', diffusers)",
          nfe_per_step=3, stages="logsnr")
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
    hist = hist or ()
    ratio, b, lam, w = coef_table(ctx, "dpm++2m", _dpmpp_2m_coefs, ct, cs, [lp for _, lp in hist[:1]], n_prev=1)
    x_s = torch.addcmul(ratio * x, b, d)
    if step_order(2, ctx, 1 + len(hist)) == 2:
        x_s = torch.addcmul(x_s, w, d - hist[0][0], value=0.5)
    return x_s, _push(hist, (d, lam), 1)


def _dpmpp_2m_coefs(ct: Coefs, cs: Coefs, prev: list[Tensor], stages: list[Coefs]) -> tuple[Any, ...]:
    """``(sigma_s / sigma_t, alpha_s (1 - e^-h), lam_t, w)`` with the second-order weight
    ``w = alpha_s (1 - e^-h) h / h_prev`` (None at first order), zero where the step is infinite."""
    h, emh, ok, lam = _lam_step(ct, cs)
    b = cs.alpha * (1 - emh)
    w = torch.where(ok, b * h / (lam - prev[0]), 0.0) if prev else None
    return cs.sigma / ct.sigma, b, lam, w


@register("dpm++3m", "DPM-Solver++(3M): multistep on the last 3 data predictions (Lu et al. 2022); variant "
          "published (the dpm-solver / diffusers update, observed order 2) or lagrange (exact integration, order 3)",
          lower_order_final=True, variant="published")
def dpmpp_3m(x: Tensor, d: Tensor, e: Tensor, ct: Coefs, cs: Coefs, hist: tuple | None, ctx: StepContext):
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
    h, emh, ok, lam = _lam_step(ct, cs)
    top = 1 + len(prev)
    ws: list[list[Tensor]] = [[]]
    if top > 1:
        nodes = [0.0] + [(lp - lam) / h for lp in prev]
        m = phis(-h, 1 if top == 2 and not exact else top)
        g = torch.where(ok, cs.alpha * h, 0.0)
        for k in range(2, top + 1):
            if exact:
                moments = [_mul(math.factorial(j), m[..., j]) for j in range(k)]
            elif k == 2:
                moments = [m[..., 0], 0.5 * m[..., 0]]
            else:
                moments = [m[..., j] for j in range(k)]
            ws.append([g * wk for wk in lagrange_weights(nodes[:k], moments, start=1)])
    return cs.sigma / ct.sigma, cs.alpha * (1 - emh), lam, ws


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
