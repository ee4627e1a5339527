"""Flow matching on manifolds: the hooks the proteins (SO(3), SE(3)) and crystals (torus)
work fills in.

A :class:`Manifold` gives ``exp``, ``log``, a projection to the manifold and a prior draw.
:class:`GeodesicFlow` turns any manifold into a field process: the geodesic interpolant
``x_t = exp_{x0}(t log_{x0}(x1))`` between data ``x0`` and a prior draw ``x1``, its
conditional velocity, and the geodesic Euler step samplers use. ``rate`` lets a field move
faster early (FrameFlow's exponential rate schedule for rotations). Euclidean space and the
flat torus are provided here; other manifolds plug in by subclassing.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


class Manifold:
    """The operations a manifold-valued field needs.

    ``prior_draw`` says which draws :meth:`prior` turns into prior points ("uniform": uniforms
    in (0, 1), "normal": standard normals, both of the point shape); ``tangent_shape`` is the
    shape of tangent vectors replacing the point's trailing dimensions (None: the same shape);
    :meth:`origin` is the point padded entries are held at.
    """

    prior_draw: str = "uniform"
    tangent_shape: tuple[int, ...] | None = None

    def exp(self, x: Tensor, v: Tensor) -> Tensor:
        """The point reached from ``x`` along the geodesic with tangent vector ``v``."""
        raise NotImplementedError

    def log(self, x: Tensor, y: Tensor) -> Tensor:
        """Tangent vector at ``x`` pointing to ``y`` along the minimising geodesic."""
        raise NotImplementedError

    def project(self, x: Tensor) -> Tensor:
        """``x`` mapped back onto the manifold (wrapping, renormalising); the identity by default."""
        return x

    def prior(self, shape: tuple[int, ...], u: Tensor) -> Tensor:
        """A prior draw from uniforms or normals ``u`` (``prior_draw`` says which)."""
        raise NotImplementedError

    def origin(self, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device | str) -> Tensor:
        """The point padded (masked-out) entries hold: zeros by default."""
        return torch.zeros(shape, dtype=dtype, device=device)

    def riemannian_grad(self, x: Tensor, euclidean_grad: Tensor) -> Tensor:
        """The Riemannian gradient at ``x``, a tangent vector, of a function whose Euclidean gradient
        with respect to the point's embedding coordinates is ``euclidean_grad`` (same shape as ``x``).

        It is the tangent vector ``g`` with ``<g, v> = d/ds f(exp(x, s v))`` at ``s = 0`` for every tangent
        vector ``v``, in the metric whose norm of ``log(x, y)`` is the geodesic distance; gradient guidance
        moves clean estimates along it.
        """
        raise NotImplementedError(f"{type(self).__name__} has no riemannian_grad")


class Euclidean(Manifold):
    """Flat R^n: exp and log are addition and subtraction, the prior is N(0, I)."""

    prior_draw = "normal"

    def exp(self, x: Tensor, v: Tensor) -> Tensor:
        return x + v

    def log(self, x: Tensor, y: Tensor) -> Tensor:
        return y - x

    def prior(self, shape: tuple[int, ...], u: Tensor) -> Tensor:
        return u  # standard normal draws

    def riemannian_grad(self, x: Tensor, euclidean_grad: Tensor) -> Tensor:
        """Flat space: the Euclidean gradient itself."""
        return euclidean_grad


class FlatTorus(Manifold):
    """``[0, period)^d`` with wrap-around: fractional coordinates of crystals, torsion angles."""

    def __init__(self, period: float = 1.0) -> None:
        self.period = period

    def exp(self, x: Tensor, v: Tensor) -> Tensor:
        return torch.remainder(x + v, self.period)

    def log(self, x: Tensor, y: Tensor) -> Tensor:
        d = y - x
        return d - self.period * torch.round(d / self.period)

    def project(self, x: Tensor) -> Tensor:
        return torch.remainder(x, self.period)

    def prior(self, shape: tuple[int, ...], u: Tensor) -> Tensor:
        return u * self.period  # uniform draws in (0, 1)

    def riemannian_grad(self, x: Tensor, euclidean_grad: Tensor) -> Tensor:
        """The torus is flat in its coordinates (``log`` is the wrapped coordinate difference): the
        gradient with respect to the coordinates itself."""
        return euclidean_grad

    def __repr__(self) -> str:
        return f"FlatTorus(period={self.period})"


class GeodesicFlow:
    """A field process: geodesic interpolation between data (t = 0) and the prior (t = 1).

    ``rate`` > 0 uses ``kappa(t) = (exp(rate t) - 1) / (exp(rate) - 1)`` instead of ``t`` as
    the interpolation fraction: sampling backwards from the prior, the remaining distance to the
    predicted clean point shrinks by ``exp(-rate dt)`` per step ``dt`` (FrameFlow's exponential
    rate schedule for rotations, ``d x / d s = rate log_x(x0_hat)`` in its time ``s = 1 - t``),
    so the field settles early, long before ``t`` reaches 0.

    ``sample_rate`` (default: ``rate``) is the rate :meth:`step` uses, so a model trained on one
    path can be sampled on another: FrameFlow and FlowMM train on the linear path (``rate`` 0)
    and sample at an exponential rate (e.g. 10).
    """

    kind = "manifold"
    t_min, t_max = 0.0, 1.0

    def __init__(self, manifold: Manifold, prior: str | None = None, rate: float = 0.0,
                 sample_rate: float | None = None) -> None:
        prior = manifold.prior_draw if prior is None else prior
        if prior not in ("uniform", "normal"):
            raise ValueError(f"prior must be 'uniform' or 'normal', got {prior!r}")
        self.manifold, self.prior_kind, self.rate = manifold, prior, rate
        self.sample_rate = rate if sample_rate is None else sample_rate

    def kappa(self, t: Tensor, rate: float | None = None) -> Tensor:
        """The interpolation fraction at ``t`` for ``rate`` (default: the training path's)."""
        rate = self.rate if rate is None else rate
        if rate == 0:
            return t
        return torch.expm1(rate * t) / math.expm1(rate)

    def dkappa(self, t: Tensor) -> Tensor:
        """``d kappa / dt``, the speed of the schedule along the geodesic."""
        if self.rate == 0:
            return torch.ones_like(t)
        return self.rate * torch.exp(self.rate * t) / math.expm1(self.rate)

    def interpolate(self, x0: Tensor, x1: Tensor, t: Tensor) -> Tensor:
        """The point a fraction ``kappa(t)`` of the way along the geodesic from ``x0`` to ``x1``."""
        v = self.manifold.log(x0, x1)
        return self.manifold.exp(x0, _expand(self.kappa(t), v) * v)

    def velocity(self, x_t: Tensor, x0: Tensor, t: Tensor) -> Tensor:
        """Conditional velocity ``d x_t / dt`` at ``x_t`` of the path through ``x0`` (a tangent
        vector at ``x_t``)."""
        v = self.manifold.log(x_t, x0)
        k, dk = _expand(self.kappa(t), v), _expand(self.dkappa(t), v)
        return -dk / k.clamp_min(1e-12) * v

    def step(self, x: Tensor, x0_hat: Tensor, t: Tensor, s: Tensor) -> Tensor:
        """Geodesic step from ``t`` towards the predicted clean point, landing at time ``s``:
        the exact move along the geodesic to ``x0_hat`` by fraction ``1 - kappa(s)/kappa(t)``
        (kappa at ``sample_rate``)."""
        v = self.manifold.log(x, x0_hat)
        kt, ks = _expand(self.kappa(t, self.sample_rate), v), _expand(self.kappa(s, self.sample_rate), v)
        frac = 1 - ks / kt.clamp_min(1e-12)
        return self.manifold.exp(x, frac * v)

    def __repr__(self) -> str:
        return (f"GeodesicFlow({self.manifold!r}, prior={self.prior_kind!r}, rate={self.rate}, "
                f"sample_rate={self.sample_rate})")


def _expand(v: Tensor, x: Tensor) -> Tensor:
    if v.dim() == 0:
        return v
    return v.reshape(*v.shape, *([1] * (x.dim() - v.dim())))
