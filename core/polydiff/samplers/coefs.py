"""Coefficient maths shared by the Gaussian samplers: log-SNR steps, the phi functions of
exponential integrators, Lagrange / moment weights of multistep methods, the order a method may
use at a step, and :func:`coef_table`, through which a method's grid-only coefficients are
computed once per grid.

Ends of the grid where ``lam`` is infinite (``alpha(t) = 0`` at the noise end of a rectified
flow, ``sigma(s) = 0`` at its data end) have no finite log-SNR step: methods take their
first-order (DDIM) step there, which is exact in that limit. History nodes keep ``lam``
clipped to +-30 (a node at ``lam = -30`` stands for one at ``-inf``; the model output there
differs by ``O(e^-30)``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from ..processes.gaussian import Coefs
from .base import StepContext

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


def is_number(v: Number, value: float) -> bool:
    """``v`` is the plain number ``value`` (a tensor never is: checking it would sync the host)."""
    return not isinstance(v, Tensor) and v == value


def lazy_mul(a: Number, b: Number) -> Number:
    """``a * b`` without a tensor operation where either factor is an exact Python 0 or 1."""
    if is_number(a, 0.0) or is_number(b, 0.0):
        return 0.0
    return b if is_number(a, 1.0) else a if is_number(b, 1.0) else a * b


def lazy_sub(a: Number, b: Number) -> Number:
    """``a - b`` without a tensor operation where either term is an exact Python 0."""
    return a if is_number(b, 0.0) else -b if is_number(a, 0.0) else a - b


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
            poly = [lazy_sub(poly[j - 1] if j > 0 else 0.0, lazy_mul(c, poly[j]) if j < len(poly) else 0.0)
                    for j in range(len(poly) + 1)]
            den = lazy_mul(den, lazy_sub(a, c))
        num: Number = 0.0
        for p, mo in zip(poly, moments):
            term = lazy_mul(p, mo)
            num = term if is_number(num, 0.0) else num if is_number(term, 0.0) else num + term
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


def log_snr_step(ct: Coefs, cs: Coefs) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """:func:`lam_step` plus the clipped ``lam_t`` it is built on: ``(h, e^-h, ok, lam_t)``."""
    neg = ct.lam - cs.lam  # -h, exactly
    lt = clip_lam(ct.lam)
    return clip_lam(cs.lam) - lt, torch.exp(neg), torch.isfinite(neg), lt


def lam_step(ct: Coefs, cs: Coefs) -> tuple[Tensor, Tensor, Tensor]:
    """``(h, e^-h, ok)``: the clipped (finite) log-SNR step for coefficients, the exact
    ``e^-h`` (0 at an infinite end) and where the step is finite (higher orders allowed)."""
    return log_snr_step(ct, cs)[:3]


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


@functools.lru_cache(maxsize=64)
def stage_fractions(rs: tuple[float, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
    """Stage fractions as a tensor, made once per tuple, dtype and device."""
    return torch.tensor(rs, dtype=dtype, device=device)
