"""The rotation group SO(3) as a :class:`~polydiff.processes.manifold.Manifold`, with the Haar prior and IGSO(3).

Points are rotation matrices of shape ``(..., 3, 3)``. Tangent vectors at ``R`` are **body-frame axis-angle
3-vectors** ``v`` (shape ``(..., 3)``): ``exp(R, v) = R @ exp_map(v)`` and ``log(R, S) = log_map(R^T S)``, so the
geodesic distance between ``R`` and ``S`` is ``|log(R, S)|``, the angle of the relative rotation ``R^T S``.

The IGSO(3) distribution (the heat kernel on SO(3), as used for rotation noise by FrameDiff / FrameFlow / FoldFlow /
RFdiffusion) is parameterised by ``eps``, the standard deviation of each axis-angle component when ``eps`` is small:
with respect to the normalised Haar measure its density depends only on the rotation angle ``omega`` and is

    f(omega; eps) = sum_{l >= 0} (2l + 1) exp(-l (l + 1) eps^2 / 2) sin((l + 1/2) omega) / sin(omega / 2).

The angle of a Haar-uniform rotation has density ``(1 - cos omega) / pi`` on ``[0, pi]``; the IGSO(3) angle density
is that times ``f``.

All helpers work on any leading batch shape, in float32 or float64, without Python loops over the batch or host
syncs; they are differentiable away from genuine singularities (and have finite gradients at the identity).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .manifold import Manifold

__all__ = [
    "SO3",
    "angle",
    "exp_map",
    "haar_angle_density",
    "hat",
    "igso3_angle_density",
    "igso3_density",
    "igso3_log_density",
    "igso3_terms",
    "log_map",
    "matrix_to_quaternion",
    "project_so3",
    "quaternion_to_matrix",
    "random_rotation",
    "sample_igso3",
    "vee",
]

# Below this squared angle exp_map uses Taylor series (error ~ a^6 / 5040, far below float64 round-off).
_EXP_TAYLOR_A2 = 1e-8
# Below this squared quaternion vector norm log_map uses a Taylor series for angle / |xyz|.
_LOG_TAYLOR_N2 = 1e-12
# IGSO(3): eps below this uses the image (Poisson-dual) sum, at or above it the character series.
IGSO3_SMALL_EPS = 1.0
# IGSO(3) character series: keep terms until (2l + 1)^2 exp(-l (l + 1) eps^2 / 2) < this.
IGSO3_SERIES_TOL = 1e-12
# Image terms k = -K..K of the Poisson-dual sum (relative truncation error <= exp(-4 pi^2 / eps^2) for K = 2).
_IGSO3_IMAGES = 2


# ----------------------------------------------------------------------------------------------------------------
# Small helpers
# ----------------------------------------------------------------------------------------------------------------


def hat(v: Tensor) -> Tensor:
    """Skew-symmetric matrices ``(..., 3, 3)`` with ``hat(v) @ w == cross(v, w)`` for vectors ``(..., 3)``."""
    x, y, z = v.unbind(-1)
    o = torch.zeros_like(x)
    return torch.stack([o, -z, y, z, o, -x, -y, x, o], dim=-1).unflatten(-1, (3, 3))


def vee(S: Tensor) -> Tensor:
    """Inverse of :func:`hat`: the vector of the skew part ``(S - S^T) / 2`` of matrices ``(..., 3, 3)``."""
    return 0.5 * torch.stack(
        [S[..., 2, 1] - S[..., 1, 2], S[..., 0, 2] - S[..., 2, 0], S[..., 1, 0] - S[..., 0, 1]], dim=-1
    )


def _safe_norm(x: Tensor, keepdim: bool = False) -> Tensor:
    """Euclidean norm over the last dim whose gradient is 0 (not NaN) at the zero vector."""
    n2 = (x * x).sum(-1, keepdim=keepdim)
    pos = n2 > 0
    return torch.where(pos, torch.sqrt(torch.where(pos, n2, torch.ones_like(n2))), torch.zeros_like(n2))


def exp_map(v: Tensor) -> Tensor:
    """Rotation matrices ``(..., 3, 3)`` of axis-angle vectors ``(..., 3)`` (Rodrigues' formula).

    Uses ``sin(a)/a`` and ``(1 - cos a)/a^2 = 2 sin^2(a/2)/a^2`` (no cancellation), switching to their Taylor series
    for tiny angles so both the value and the gradient are finite at ``v = 0``.
    """
    a2 = (v * v).sum(-1, keepdim=True).unsqueeze(-1)  # (..., 1, 1)
    small = a2 < _EXP_TAYLOR_A2
    a2_safe = torch.where(small, torch.ones_like(a2), a2)
    a = torch.sqrt(a2_safe)
    sinc = torch.where(small, 1 - a2 / 6 + a2 * a2 / 120, torch.sin(a) / a)
    cosc = torch.where(small, 0.5 - a2 / 24 + a2 * a2 / 720, 2 * torch.sin(0.5 * a) ** 2 / a2_safe)
    eye = torch.eye(3, dtype=v.dtype, device=v.device)
    outer = v.unsqueeze(-1) * v.unsqueeze(-2)
    return eye + sinc * hat(v) + cosc * (outer - a2 * eye)


def quaternion_to_matrix(q: Tensor) -> Tensor:
    """Rotation matrices ``(..., 3, 3)`` of quaternions ``(..., 4)`` in ``(w, x, y, z)`` order.

    ``q`` is normalised first, so any nonzero scale and either sign give the same rotation.
    """
    q = q / _safe_norm(q, keepdim=True).clamp_min(torch.finfo(q.dtype).tiny)
    w, x, y, z = q.unbind(-1)
    xx, yy, zz = x * x, y * y, z * z
    xy, xz, yz = x * y, x * z, y * z
    wx, wy, wz = w * x, w * y, w * z
    rows = [
        1 - 2 * (yy + zz), 2 * (xy - wz), 2 * (xz + wy),
        2 * (xy + wz), 1 - 2 * (xx + zz), 2 * (yz - wx),
        2 * (xz - wy), 2 * (yz + wx), 1 - 2 * (xx + yy),
    ]  # fmt: skip
    return torch.stack(rows, dim=-1).unflatten(-1, (3, 3))


def matrix_to_quaternion(R: Tensor) -> Tensor:
    """Unit quaternions ``(..., 4)``, ``(w, x, y, z)`` with ``w >= 0``, of rotation matrices ``(..., 3, 3)``.

    Builds ``4 q_i q_j`` from the entries of ``R`` and reads ``q`` off the row of the largest ``4 q_k^2`` (which is
    at least 1), so no branch divides by a small number; gradients flow only through that row.
    """
    r = R.flatten(-2)
    r00, r01, r02, r10, r11, r12, r20, r21, r22 = r.unbind(-1)
    one = torch.ones_like(r00)
    # m[i][j] = 4 q_i q_j for an exact rotation
    entries = [
        one + r00 + r11 + r22, r21 - r12, r02 - r20, r10 - r01,
        r21 - r12, one + r00 - r11 - r22, r01 + r10, r02 + r20,
        r02 - r20, r01 + r10, one - r00 + r11 - r22, r12 + r21,
        r10 - r01, r02 + r20, r12 + r21, one - r00 - r11 + r22,
    ]  # fmt: skip
    m = torch.stack(entries, dim=-1).unflatten(-1, (4, 4))
    diag = torch.diagonal(m, dim1=-2, dim2=-1)
    k = diag.argmax(-1, keepdim=True)  # (..., 1)
    row = torch.gather(m, -2, k.unsqueeze(-1).expand(*k.shape[:-1], 1, 4)).squeeze(-2)
    d = torch.gather(diag, -1, k).clamp_min(torch.finfo(R.dtype).eps)
    q = row / (2 * torch.sqrt(d))
    q = q / _safe_norm(q, keepdim=True).clamp_min(torch.finfo(R.dtype).tiny)
    return torch.where(q[..., :1] < 0, -q, q)


def log_map(R: Tensor) -> Tensor:
    """Axis-angle vectors ``(..., 3)`` (angle in ``[0, pi]``) of rotation matrices ``(..., 3, 3)``.

    Goes through :func:`matrix_to_quaternion` (largest-component branch), then ``angle = 2 atan2(|xyz|, w)``: this is
    accurate near angle 0 (Taylor series for ``angle / |xyz|``) and near angle ``pi``, where the usual
    ``(R - R^T) / (2 sin a)`` breaks down. At exactly ``pi`` the sign of the axis is arbitrary.
    """
    q = matrix_to_quaternion(R)
    w, xyz = q[..., :1], q[..., 1:]
    n2 = (xyz * xyz).sum(-1, keepdim=True)
    small = n2 < _LOG_TAYLOR_N2
    n = torch.sqrt(torch.where(small, torch.ones_like(n2), n2))
    w_safe = torch.where(small, w, torch.ones_like(w))  # w ~ 1 whenever small
    taylor = 2 / w_safe * (1 - n2 / (3 * w_safe * w_safe))
    ratio = torch.where(small, taylor, 2 * torch.atan2(n, w) / n)
    return xyz * ratio


def angle(R: Tensor) -> Tensor:
    """Rotation angles ``(...)`` in ``[0, pi]`` of matrices ``(..., 3, 3)``: ``atan2(|vee(R)|, (tr R - 1) / 2)``.

    Stable at both ends, unlike ``acos`` of the trace.
    """
    s = _safe_norm(vee(R))
    c = 0.5 * (R[..., 0, 0] + R[..., 1, 1] + R[..., 2, 2] - 1)
    return torch.atan2(s, c)


def project_so3(M: Tensor) -> Tensor:
    """Nearest rotation (in Frobenius norm) to each matrix ``(..., 3, 3)``, by SVD with the determinant fixed to +1.

    ``M = U S V^T`` gives ``U V^T``; where that has determinant -1 the last left singular vector is negated.
    """
    U, _, Vh = torch.linalg.svd(M)
    det = torch.linalg.det(U @ Vh)
    sign = torch.where(det < 0, -torch.ones_like(det), torch.ones_like(det))
    U = torch.cat([U[..., :2], U[..., 2:] * sign[..., None, None]], dim=-1)
    return U @ Vh


def random_rotation(
    shape: tuple[int, ...] | torch.Size,
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Haar-uniform rotations ``(*shape, 3, 3)``: normalised 4-D standard Gaussian quaternions."""
    q = torch.randn(*shape, 4, generator=generator, dtype=dtype, device=device)
    return quaternion_to_matrix(q)


# ----------------------------------------------------------------------------------------------------------------
# The manifold
# ----------------------------------------------------------------------------------------------------------------


class SO3(Manifold):
    """Rotation matrices ``(..., 3, 3)``; tangent vectors are body-frame axis-angle vectors ``(..., 3)``.

    ``exp(R, v) = R @ exp_map(v)``, ``log(R, S) = log_map(R^T S)`` (the minimising geodesic; at angle ``pi`` one of
    the two), so ``|log(R, S)|`` is the geodesic distance. The prior is the Haar measure, drawn from standard normals
    of the point shape (``prior_draw = "normal"``); ``tangent_shape`` tells field processes that the trailing
    ``(3, 3)`` of points becomes ``(3,)`` in tangent vectors.
    """

    prior_draw = "normal"
    tangent_shape: tuple[int, ...] = (3,)

    def exp(self, x: Tensor, v: Tensor) -> Tensor:
        """Move from rotations ``x`` along body-frame axis-angle vectors ``v``."""
        return x @ exp_map(v)

    def log(self, x: Tensor, y: Tensor) -> Tensor:
        """Body-frame axis-angle vector at ``x`` pointing to ``y`` along the minimising geodesic."""
        return log_map(x.transpose(-1, -2) @ y)

    def project(self, x: Tensor) -> Tensor:
        """Nearest rotation (re-orthonormalises matrices that drifted off SO(3))."""
        return project_so3(x)

    def prior(self, shape: tuple[int, ...], u: Tensor) -> Tensor:
        """Haar-uniform rotations of ``shape`` (ending in ``(3, 3)``) from standard normals ``u`` of that shape.

        The first 4 of each point's 9 normals form a Gaussian quaternion; the result is a pure function of ``u``,
        so seeded (counter-based) noise gives reproducible priors.
        """
        if tuple(shape[-2:]) != (3, 3) or tuple(u.shape[-2:]) != (3, 3):
            raise ValueError(f"SO3 points end in (3, 3); got shape {tuple(shape)} and u {tuple(u.shape)}")
        return quaternion_to_matrix(u.flatten(-2)[..., :4])

    def origin(
        self, shape: tuple[int, ...], dtype: torch.dtype | None = None, device: torch.device | str | None = None
    ) -> Tensor:
        """Identity matrices of ``shape`` (ending in ``(3, 3)``): the value padded entries are held at."""
        return torch.eye(3, dtype=dtype, device=device).expand(*shape).clone()

    def riemannian_grad(self, x: Tensor, euclidean_grad: Tensor) -> Tensor:
        """Body-frame Riemannian gradient ``2 vee(R^T G)`` (shape ``(..., 3)``) from the Euclidean gradient
        ``G`` of a function of the matrix entries.

        Moving along ``v`` changes ``f`` at the rate ``<G, R hat(v)>_F = <R^T G, hat(v)>_F = 2 vee(R^T G) . v``:
        only the skew part of ``R^T G`` counts, and the factor 2 is there because the metric in which ``|v|`` is
        the rotation angle (``|log(R, S)|`` the geodesic distance) is half the Frobenius one.
        """
        return 2 * vee(x.transpose(-1, -2) @ euclidean_grad)

    def dist(self, x: Tensor, y: Tensor) -> Tensor:
        """Geodesic distance: the angle of ``x^T y``, in ``[0, pi]``."""
        return angle(x.transpose(-1, -2) @ y)

    def __repr__(self) -> str:
        return "SO3()"


# ----------------------------------------------------------------------------------------------------------------
# Haar and IGSO(3) on angles
# ----------------------------------------------------------------------------------------------------------------


def haar_angle_density(omega: Tensor) -> Tensor:
    """Density ``(1 - cos omega) / pi`` of the rotation angle of a Haar-uniform rotation, on ``[0, pi]``."""
    return (1 - torch.cos(omega)) / math.pi


def igso3_terms(eps: float, tol: float = IGSO3_SERIES_TOL) -> int:
    """Number of character-series terms ``l = 0 .. L-1`` for IGSO(3) with concentration ``eps``.

    ``L`` is the smallest ``l >= 1`` with ``(2l + 1)^2 exp(-l (l + 1) eps^2 / 2) < tol``: since
    ``|sin((l + 1/2) w) / sin(w / 2)| <= 2l + 1``, that bounds the first dropped term, and ``f(0) >= 1``, so the
    truncated tail is ~``tol`` relative to the peak of the density.
    """
    if eps <= 0:
        raise ValueError(f"eps must be positive, got {eps}")
    e2 = eps * eps
    n = 1
    while True:  # fixed point of n (n + 1) = 2 (log(1/tol) + 2 log(2n + 1)) / eps^2, increasing in n
        x = 2 * (math.log(1 / tol) + 2 * math.log(2 * n + 1)) / e2
        m = max(1, math.ceil((-1 + math.sqrt(1 + 4 * x)) / 2))
        if m <= n:
            break
        n = m
    while n > 1 and (2 * n - 1) ** 2 * math.exp(-(n - 1) * n * e2 / 2) < tol:
        n -= 1
    return n


def _series_f(w: Tensor, e: Tensor, terms: int) -> Tensor:
    """Character series, rewritten as a cosine series ``T_0 + 2 sum_k T_k cos(k w)`` with tail sums ``T_k``.

    (``sin((l + 1/2) w) / sin(w / 2) = 1 + 2 sum_{k=1}^{l} cos(k w)``, so there is no division and ``w = 0`` is
    fine.)
    """
    l = torch.arange(terms, dtype=torch.float64, device=w.device)
    c = (2 * l + 1) * torch.exp(-l * (l + 1) * (e.unsqueeze(-1) ** 2) / 2)  # (..., L)
    tails = c.flip(-1).cumsum(-1).flip(-1)  # T_k = sum_{l >= k} c_l
    cos = torch.cos(w.unsqueeze(-1) * l[1:])
    return tails[..., 0] + 2 * (tails[..., 1:] * cos).sum(-1)


def _w_over_sin_half(w: Tensor) -> Tensor:
    """``w / sin(w / 2)``, equal to 2 at ``w = 0``."""
    return 2 / torch.sinc(w / (2 * math.pi))


def _image_log_f(w: Tensor, e: Tensor) -> Tensor:
    """``log f`` from the Poisson-dual (image) form of the heat kernel, accurate for small and moderate ``eps``.

    Poisson summation of the character series over half-integers gives, exactly,

        f(w) = sqrt(2 pi) eps^-3 exp(eps^2 / 8) / sin(w / 2)
               * sum_k (-1)^k (w + 2 pi k) exp(-(w + 2 pi k)^2 / (2 eps^2))

    (the ``k = 0`` term alone is the Gaussian ``2 sqrt(2 pi) eps^-3 exp(-w^2 / (2 eps^2))`` near ``w = 0``). We keep
    ``|k| <= 2``, whose relative truncation error is below ``exp(-4 pi^2 / eps^2)`` (< 1e-17 for ``eps <= 1``), and
    evaluate it in log space relative to the ``k = 0`` Gaussian, so tails far below float64's range stay finite.
    The image terms are smooth and even in ``w``; they are evaluated at ``max(w, 1e-4)`` to avoid ``0 / 0``.
    """
    e2 = e * e
    w = w.clamp(0, math.pi)
    wc = w.clamp_min(1e-4)
    s = _w_over_sin_half(w)
    sin_half = torch.sin(wc / 2)
    for k in range(-_IGSO3_IMAGES, _IGSO3_IMAGES + 1):
        if k == 0:
            continue
        shifted = wc + 2 * math.pi * k
        rel = torch.exp(-(shifted * shifted - w * w) / (2 * e2))  # <= 1 for w in [0, pi]
        s = s + (-1) ** k * shifted * rel / sin_half
    const = 0.5 * math.log(2 * math.pi) - 3 * torch.log(e) + e2 / 8
    return const - w * w / (2 * e2) + torch.log(s.clamp_min(1e-300))


def _igso3_log_f(omega: Tensor, eps: float | Tensor, terms: int | None, method: str) -> Tensor:
    """``log f(omega; eps)`` in float64, broadcasting ``omega`` with ``eps``."""
    if method not in ("auto", "series", "images"):
        raise ValueError(f"method must be 'auto', 'series' or 'images', got {method!r}")
    w = torch.as_tensor(omega).to(torch.float64)
    e = torch.as_tensor(eps, dtype=torch.float64, device=w.device)
    w, e = torch.broadcast_tensors(w, e)
    if terms is not None or method == "series":
        n = terms if terms is not None else igso3_terms(float(e.min()))
        return torch.log(_series_f(w, e, n).clamp_min(1e-300))
    if method == "images":
        return _image_log_f(w, e)
    small = e < IGSO3_SMALL_EPS
    if not isinstance(eps, Tensor) or e.numel() == 1:
        small_all = bool(small.reshape(-1)[0]) if e.numel() else True
        if small_all:
            return _image_log_f(w, e)
        return torch.log(_series_f(w, e, igso3_terms(float(e.reshape(-1)[0]))).clamp_min(1e-300))
    e_big = e.clamp_min(IGSO3_SMALL_EPS)
    series = torch.log(_series_f(w, e_big, igso3_terms(float(e_big.min()))).clamp_min(1e-300))
    return torch.where(small, _image_log_f(w, e.clamp_max(IGSO3_SMALL_EPS)), series)


def _out_dtype(omega: Tensor | float) -> torch.dtype:
    if isinstance(omega, Tensor) and omega.is_floating_point():
        return omega.dtype
    return torch.float64


def igso3_density(omega: Tensor | float, eps: float | Tensor, terms: int | None = None, method: str = "auto") -> Tensor:
    """IGSO(3) density ``f(omega; eps)`` with respect to the normalised Haar measure, at angles in ``[0, pi]``.

    ``eps`` (> 0, a float or a tensor broadcasting with ``omega``) is the standard deviation parameter of the
    series ``sum_l (2l + 1) exp(-l (l + 1) eps^2 / 2) sin((l + 1/2) omega) / sin(omega / 2)``.

    Evaluation (in float64, returned in ``omega``'s floating dtype):

    * ``eps >= IGSO3_SMALL_EPS`` (= 1.0): the character series with :func:`igso3_terms` terms (tail below ~1e-12
      relative to the peak); a few terms suffice here.
    * ``eps < IGSO3_SMALL_EPS``: the exact Poisson-dual image sum (see ``_image_log_f``), truncated to ``|k| <= 2``
      (relative error < 1e-17). It is the small-eps Gaussian expansion plus its wrap-around corrections; unlike the
      series it needs no more work as ``eps -> 0`` and keeps relative accuracy in the far tail.

    ``terms`` forces the series with that many terms; ``method`` (``"auto"``, ``"series"``, ``"images"``) forces
    one form. With a tensor ``eps`` choosing the series length reads its minimum on the host.
    """
    return torch.exp(_igso3_log_f(omega, eps, terms, method)).to(_out_dtype(omega))


def igso3_angle_density(
    omega: Tensor | float, eps: float | Tensor, terms: int | None = None, method: str = "auto"
) -> Tensor:
    """Density of the rotation angle of an IGSO(3) rotation: ``haar_angle_density(omega) * igso3_density(...)``.

    Integrates to 1 over ``[0, pi]``; see :func:`igso3_density` for ``eps``, ``terms`` and ``method``.
    """
    w = torch.as_tensor(omega).to(torch.float64)
    p = haar_angle_density(w) * torch.exp(_igso3_log_f(w, eps, terms, method))
    return p.to(_out_dtype(omega))


def igso3_log_density(R: Tensor, eps: float | Tensor, terms: int | None = None, method: str = "auto") -> Tensor:
    """Log IGSO(3) density (centred at the identity, w.r.t. normalised Haar measure) of rotation matrices ``R``.

    Returns shape ``R.shape[:-2]`` in ``R``'s dtype; small ``eps`` stays finite far in the tail.
    """
    w = angle(R.to(torch.float64))
    return _igso3_log_f(w, eps, terms, method).to(R.dtype)


def _inverse_cdf_tables(eps: Tensor, grid: int) -> tuple[Tensor, Tensor]:
    """Angle grids ``(U, grid)`` and their normalised cumulative-trapezoid CDFs for each value of ``eps`` ``(U,)``.

    The grid spans ``[0, min(pi, 12 eps)]`` (the mass beyond 12 eps is ~exp(-72)), so small ``eps`` stay resolved.
    """
    hi = torch.clamp(12 * eps, max=math.pi)
    frac = torch.linspace(0, 1, grid, dtype=torch.float64, device=eps.device)
    w = hi.unsqueeze(-1) * frac  # (U, grid)
    p = haar_angle_density(w) * torch.exp(_igso3_log_f(w, eps.unsqueeze(-1), None, "auto"))
    steps = 0.5 * (p[..., 1:] + p[..., :-1]) * (w[..., 1:] - w[..., :-1])
    cdf = torch.cat([torch.zeros_like(p[..., :1]), steps.cumsum(-1)], dim=-1)
    return w, cdf / cdf[..., -1:]


def sample_igso3(
    shape: tuple[int, ...] | torch.Size,
    eps: float | Tensor,
    u: Tensor | None = None,
    generator: torch.Generator | None = None,
    grid: int = 2048,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """IGSO(3) rotations ``(*shape, 3, 3)`` centred at the identity.

    The angle is drawn by inverse CDF (cumulative trapezoid of :func:`igso3_angle_density` on a ``grid``-point
    angle grid, linear interpolation of the inverse) and the axis uniformly on the sphere. Randomness comes from
    uniforms ``u`` of shape ``(*shape, 3)`` (one for the angle, two for the axis), making the draw a pure function
    of ``u``, or else from ``generator`` (float64 uniforms on ``device``). ``eps`` may be a float or a tensor
    broadcasting to ``shape`` (one table per distinct value, found with ``torch.unique``, a host sync). The result
    has ``dtype``, else ``u``'s floating dtype, else the default dtype, and lives on ``u``'s device when given.
    """
    shape = tuple(shape)
    if u is None:
        out_dtype = dtype or torch.get_default_dtype()
        u = torch.rand(*shape, 3, generator=generator, dtype=torch.float64, device=device)
    elif tuple(u.shape) != (*shape, 3):
        raise ValueError(f"u must have shape {(*shape, 3)}, got {tuple(u.shape)}")
    else:
        out_dtype = dtype or (u.dtype if u.is_floating_point() else torch.get_default_dtype())
    u = u.to(torch.float64)
    dev = u.device
    e = torch.as_tensor(eps, dtype=torch.float64, device=dev)
    if e.numel() == 1:
        values, inv = e.reshape(1), torch.zeros(shape, dtype=torch.long, device=dev)
    else:
        values, inv = torch.unique(e.broadcast_to(shape), return_inverse=True)
    w_tab, cdf = _inverse_cdf_tables(values, grid)
    # One sorted 1-D array: table i occupies [2i, 2i + 1]; search u + 2 * (its table) in it.
    offset = 2 * torch.arange(values.numel(), dtype=torch.float64, device=dev)
    flat_cdf = (cdf + offset.unsqueeze(-1)).reshape(-1)
    ua = u[..., 0]
    idx = torch.searchsorted(flat_cdf, (ua + 2 * inv).reshape(-1)).reshape(ua.shape)
    idx = torch.minimum(torch.maximum(idx, inv * grid + 1), inv * grid + grid - 1)
    w_flat, c_flat = w_tab.reshape(-1), cdf.reshape(-1)
    c0, c1 = c_flat[idx - 1], c_flat[idx]
    w0, w1 = w_flat[idx - 1], w_flat[idx]
    frac = ((ua - c0) / (c1 - c0).clamp_min(1e-300)).clamp(0, 1)
    omega = w0 + frac * (w1 - w0)
    z = 1 - 2 * u[..., 1]
    phi = 2 * math.pi * u[..., 2]
    r = torch.sqrt((1 - z * z).clamp_min(0))
    axis = torch.stack([r * torch.cos(phi), r * torch.sin(phi), z], dim=-1)
    return exp_map(omega.unsqueeze(-1) * axis).to(out_dtype)
