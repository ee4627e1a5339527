"""Gaussian processes in one affine form: ``x_t = alpha(t) x_0 + sigma(t) eps``.

A schedule is a small object giving ``alpha``, ``sigma``, their time derivatives, the half
log-SNR ``lam = log(alpha / sigma)`` and its inverse. Every Gaussian sampler and loss in
polydiff is written against this interface only, so VP, VE, EDM and flow-matching
interpolants share one implementation. Time runs from data (``t_min``) to noise (``t_max``);
for the EDM schedule ``t`` is sigma itself.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from ..registry import Registry

SCHEDULES: Registry = Registry("schedule")


class Schedule:
    """Base class: subclasses give ``log_alpha``, ``sigma`` and derivatives, and ``t_of_lam``."""

    t_min: float = 1e-3  # default end of sampling grids (data side)
    t_max: float = 1.0  # prior side
    t_train_min: float = 1e-5  # smallest time drawn in training
    default_grid: str = "uniform_logsnr"  # the grid make_grid builds unless told otherwise

    def sampling_grid(self, sampler: str, steps: int) -> str:
        """The grid :func:`polydiff.sample` walks with ``sampler`` in ``steps`` steps when the
        caller names none: the schedule's ``default_grid`` unless a schedule knows better."""
        return self.default_grid

    def calibration_grid(self, sampler: str, steps: int) -> str:
        """The grid :func:`polydiff.calibrate_grid` starts its search from when the caller names
        none: the one :func:`polydiff.sample` walks (:meth:`sampling_grid`) unless a schedule
        knows a better start."""
        return self.sampling_grid(sampler, steps)

    def sampling_t_min(self, sampler: str, steps: int) -> float | None:
        """Where that default grid ends on the data side when the caller names no ``t_min``
        (None: the schedule's ``t_min``)."""
        return None

    def sampling_defaults(self, sampler: str, steps: int, grid: str | Tensor | None,
                          t_min: float | None) -> tuple[str | Tensor, float | None]:
        """``(grid, t_min)`` as a run walks them: with no grid named, the default grid and its end
        (:meth:`sampling_grid`, :meth:`sampling_t_min`, unless ``t_min`` is given); else as given."""
        if grid is not None:
            return grid, t_min
        return self.sampling_grid(sampler, steps), self.sampling_t_min(sampler, steps) if t_min is None else t_min

    def alpha(self, t: Tensor) -> Tensor:
        """Signal scale ``alpha(t)`` of ``x_t = alpha x0 + sigma eps``."""
        return torch.exp(self.log_alpha(t))

    def log_alpha(self, t: Tensor) -> Tensor:
        """``log alpha(t)``; a schedule gives whichever of the two is stable in closed form."""
        return torch.log(self.alpha(t))

    def sigma(self, t: Tensor) -> Tensor:
        """Noise scale ``sigma(t)`` of ``x_t = alpha x0 + sigma eps``."""
        raise NotImplementedError

    def dalpha(self, t: Tensor) -> Tensor:
        """d alpha / dt."""
        raise NotImplementedError

    def dsigma(self, t: Tensor) -> Tensor:
        """d sigma / dt."""
        raise NotImplementedError

    def lam(self, t: Tensor) -> Tensor:
        """Half log-SNR, ``log(alpha / sigma)``; decreasing in t."""
        return self.log_alpha(t) - torch.log(self.sigma(t))

    def t_of_lam(self, lam: Tensor) -> Tensor:
        """Inverse of :meth:`lam`."""
        raise NotImplementedError

    def values(self, t: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """``(alpha, sigma, lam, dalpha, dsigma)`` at ``t``. A schedule whose pieces share work
        (log alpha, a table lookup) defines ``_values`` to do it once, giving the methods' bits;
        it serves that class only, as a subclass may redefine a method."""
        if self._own_values is not None:
            return self._own_values(t)
        return self.alpha(t), self.sigma(t), self.lam(t), self.dalpha(t), self.dsigma(t)

    _own_values: ClassVar[Callable[..., Any] | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._own_values = cls.__dict__.get("_values")  # the class's own, never a parent's

    def prior_std(self) -> float:
        """Standard deviation of the prior at ``t_max`` (the data term is neglected)."""
        return float(self.sigma(torch.tensor(self.t_max, dtype=torch.float64)))

    def drift_diffusion(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """Forward SDE ``dx = f x dt + g dW``: returns ``(f, g**2)`` with the same marginals."""
        a, s = self.alpha(t), self.sigma(t)
        f = self.dalpha(t) / a
        g2 = 2 * s * self.dsigma(t) - 2 * f * s**2
        return f, g2

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"


# samplers measured worse on the quadratic grid than on log-SNR (bench/samplers.py: DPM-Solver++(3M)
# at 64-D NFE 50 path error 0.024 vs 0.0015, DEIS at 64-D NFE 10): they keep the schedule default
QUADRATIC_WORSE = ("dpm++3m", "deis")
# few-step exceptions: uniform t (diffusers' own spacing) at this many steps or fewer
UNIFORM_T_STEPS = {"dpm++2m": 5, "dpm++3m": 5, "dpm_solver2": 3, "dpm_solver3": 3}


# EDM: these samplers end their default grid at SDE_END x sigma_min (EDM.sampling_t_min)
SDE_END, SDE_END_SAMPLERS = 2.5, ("dpm++2m_sde",)
# EDM: these samplers walk the vp_quadratic grid by default (EDM.sampling_grid); DDIM is Euler there (alpha = 1)
EDM_VPQ_SAMPLERS = ("dpm++2m", "unipc", "dpm++3m", "euler", "ddim")
# ... except from this many steps on, where they walk the uniform log-SNR grid (third order, as QUADRATIC_WORSE)
EDM_LOGSNR_FROM = {"dpm++3m": 15}


def ddpm_sampling_grid(sampler: str, steps: int, default: str = "uniform_logsnr") -> str:
    """Few-step defaults of DDPM's linear-beta family (``bench/defaults.py``, worst per-mode
    error on nine Gaussian-mixture targets against diffusers' defaults, and ``bench/samplers.py``'s
    default-against-default table): the quadratic grid beats the log-SNR grid for DDIM at every
    NFE and for the multistep solvers at NFE <= 10 (median error 0.72 / 0.75 / 0.70 of diffusers'
    at NFE 5 for DDIM / DPM-Solver++(2M) / UniPC, against 0.89 / 1.18 / 0.83 with log-SNR), and
    is within a few percent of log-SNR beyond. The other samplers diffusers shares (DDPM, Euler,
    Heun, ...) gain from it too. The exceptions (:data:`UNIFORM_T_STEPS`) take diffusers' own
    uniform spacing in t at few steps: DPM-Solver++(2M) and (3M) at <= 5 steps (on the quadratic
    grid each loses one target in nine at NFE 5, the 16-D multi-scale mixture; on log-SNR 3M
    loses five, and ``bench/samplers.py``'s 64-D mixture), and singlestep DPM-Solver at <= 3
    steps (<= 5-7 model calls with :func:`polydiff.samplers.for_budget`), whose final first-order
    step then crosses the low-noise end in one step (quadratic: SW2 0.56 / 0.41 against
    diffusers' 0.15 / 0.14 at NFE 5 on ``bench/samplers.py``'s 2-D / 64-D mixtures). The
    third-order multistep solvers in :data:`QUADRATIC_WORSE` lose on the quadratic grid and keep
    ``default`` beyond that."""
    if steps <= UNIFORM_T_STEPS.get(sampler, 0):
        return "uniform_t"
    return default if sampler in QUADRATIC_WORSE else "quadratic"


@SCHEDULES.register("vp_linear", "variance preserving, linear beta(t) (DDPM / score_sde VP-SDE)")
@dataclass(repr=False)
class VPLinear(Schedule):
    beta_min: float = 0.1
    beta_max: float = 20.0

    def sampling_grid(self, sampler: str, steps: int) -> str:
        return ddpm_sampling_grid(sampler, steps, self.default_grid)

    def log_alpha(self, t: Tensor) -> Tensor:
        return -0.25 * t**2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def alpha(self, t: Tensor) -> Tensor:
        return torch.exp(self.log_alpha(t))

    def sigma(self, t: Tensor) -> Tensor:
        return torch.sqrt(torch.clamp(-torch.expm1(2 * self.log_alpha(t)), min=0))

    def dalpha(self, t: Tensor) -> Tensor:
        return self.alpha(t) * (-0.5 * t * (self.beta_max - self.beta_min) - 0.5 * self.beta_min)

    def dsigma(self, t: Tensor) -> Tensor:
        return -self.alpha(t) * self.dalpha(t) / self.sigma(t)

    def lam(self, t: Tensor) -> Tensor:
        la = self.log_alpha(t)
        return la - 0.5 * torch.log(-torch.expm1(2 * la))

    def _values(self, t: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        # log alpha, alpha and sigma once: a training step's coefficients in a third of the operations
        la = self.log_alpha(t)
        a, e = torch.exp(la), -torch.expm1(2 * la)
        s = torch.sqrt(torch.clamp(e, min=0))
        da = a * (-0.5 * t * (self.beta_max - self.beta_min) - 0.5 * self.beta_min)
        return a, s, la - 0.5 * torch.log(e), da, -a * da / s

    def t_of_lam(self, lam: Tensor) -> Tensor:
        big = torch.nn.functional.softplus(-2 * lam)  # = -2 log alpha
        d = self.beta_max - self.beta_min
        return 2 * big / (self.beta_min + torch.sqrt(self.beta_min**2 + 2 * d * big))


@SCHEDULES.register("vp_cosine", "variance preserving, cosine alpha (improved DDPM)")
@dataclass(repr=False)
class VPCosine(Schedule):
    s: float = 0.008
    t_max: float = 0.9946  # alpha(1) = 0 exactly; stop just short (as iDDPM clips beta at 0.999)

    def _phase(self, t: Tensor) -> Tensor:
        return (t + self.s) / (1 + self.s) * math.pi / 2

    def _c0(self) -> float:
        return math.log(math.cos(self.s / (1 + self.s) * math.pi / 2))

    def log_alpha(self, t: Tensor) -> Tensor:
        return torch.log(torch.cos(self._phase(t))) - self._c0()

    def sigma(self, t: Tensor) -> Tensor:
        return torch.sqrt(torch.clamp(-torch.expm1(2 * self.log_alpha(t)), min=0))

    def dalpha(self, t: Tensor) -> Tensor:
        k = math.pi / 2 / (1 + self.s)
        return -torch.sin(self._phase(t)) * k * math.exp(-self._c0())

    def dsigma(self, t: Tensor) -> Tensor:
        return -self.alpha(t) * self.dalpha(t) / self.sigma(t)

    def _values(self, t: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        la = self.log_alpha(t)
        a, s, da = torch.exp(la), torch.sqrt(torch.clamp(-torch.expm1(2 * la), min=0)), self.dalpha(t)
        return a, s, la - torch.log(s), da, -a * da / s

    def t_of_lam(self, lam: Tensor) -> Tensor:
        log_alpha = -0.5 * torch.nn.functional.softplus(-2 * lam)
        phase = torch.arccos(torch.exp(log_alpha + self._c0()))
        return phase * 2 * (1 + self.s) / math.pi - self.s


@SCHEDULES.register("subvp", "sub-variance-preserving SDE (score_sde): sigma = 1 - alpha^2")
@dataclass(repr=False)
class SubVP(VPLinear):
    """VP's alpha (linear beta) with ``sigma = 1 - alpha^2``."""

    def sampling_grid(self, sampler: str, steps: int) -> str:
        return self.default_grid  # the few-step defaults were measured for VP only

    def sigma(self, t: Tensor) -> Tensor:
        return torch.clamp(-torch.expm1(2 * self.log_alpha(t)), min=0)

    def dsigma(self, t: Tensor) -> Tensor:
        return -2 * self.alpha(t) * self.dalpha(t)

    def lam(self, t: Tensor) -> Tensor:
        return self.log_alpha(t) - torch.log(self.sigma(t))

    def t_of_lam(self, lam: Tensor) -> Tensor:
        # alpha / (1 - alpha^2) = e^lam  ->  alpha = 2 / (e^-lam + sqrt(e^-2lam + 4)); then VP's inverse
        el = torch.exp(-lam)
        alpha = 2 / (el + torch.sqrt(el**2 + 4))
        return super().t_of_lam(torch.log(alpha) - 0.5 * torch.log(-torch.expm1(2 * torch.log(alpha))))


@SCHEDULES.register("ve", "variance exploding (NCSN / score_sde VE): alpha = 1, geometric sigma")
@dataclass(repr=False)
class VE(Schedule):
    sigma_min: float = 0.01
    sigma_max: float = 50.0
    t_min: float = 0.0  # sigma(0) = sigma_min > 0 already

    def log_alpha(self, t: Tensor) -> Tensor:
        return torch.zeros_like(t)

    def alpha(self, t: Tensor) -> Tensor:
        return torch.ones_like(t)

    def sigma(self, t: Tensor) -> Tensor:
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** t

    def dalpha(self, t: Tensor) -> Tensor:
        return torch.zeros_like(t)

    def dsigma(self, t: Tensor) -> Tensor:
        return self.sigma(t) * math.log(self.sigma_max / self.sigma_min)

    def lam(self, t: Tensor) -> Tensor:
        return -torch.log(self.sigma(t))

    def t_of_lam(self, lam: Tensor) -> Tensor:
        return (-lam - math.log(self.sigma_min)) / math.log(self.sigma_max / self.sigma_min)


@SCHEDULES.register("edm", "EDM / Karras: alpha = 1, sigma = t (t is the noise level itself)")
@dataclass(repr=False)
class EDM(Schedule):
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    sigma_data: float = 0.5  # used by EDM preconditioning and weighting
    p_mean: float = -1.2  # log-normal training density of sigma
    p_std: float = 1.2
    rho: float = 7.0  # the Karras grid's spacing exponent (BESO: 5)

    def __post_init__(self) -> None:
        if self.rho <= 0:
            raise ValueError(f"rho must be positive, got {self.rho}")
        self.t_min, self.t_max, self.t_train_min = self.sigma_min, self.sigma_max, self.sigma_min
        self.default_grid = "karras"

    def sampling_grid(self, sampler: str, steps: int) -> str:
        """Karras' grid, except for the samplers of :data:`EDM_VPQ_SAMPLERS` (DPM-Solver++(2M) /
        (3M), UniPC, Euler and DDIM, which is Euler when alpha = 1): they walk ``vp_quadratic``,
        the noise levels of linear-beta DDPM's quadratic grid (the VP default), dense around noise
        levels of order one where the trajectories bend and coarse at both ends, where they are
        straight. DPM-Solver++(3M), like VP's third-order solvers (:data:`QUADRATIC_WORSE`), takes
        the uniform log-SNR grid instead from :data:`EDM_LOGSNR_FROM` steps. Measured default
        against default (``bench/defaults.py --edm``: SW2 to the data on three mixture families in
        2, 16 and 64 dimensions, sigma 0.002-80, nine targets, NFE 5-50): at 5-10 NFE the error
        is a median 0.61-0.67 of Karras' for (2M), 0.49-0.63 for UniPC, 0.28-0.58 for (3M) and
        0.76-0.80 for Euler (for the multistep solvers 0.42-0.91 of the default before, log-SNR
        from 7 steps), at 15-50 NFE a median 0.83-1.01; worse than Karras' beyond the noise in
        none of 288 cells, and no worse than diffusers' EDM defaults in all 216 where diffusers
        has the algorithm. On ``vp_quadratic`` (3M) loses to log-SNR from 15 NFE (median 1.19x),
        Heun loses to Karras at few steps (3.7x at 5 NFE) and DEIS at 8-10 NFE (1.1x): they keep
        those grids, as EDM's own churned sampler keeps Karras'."""
        if sampler not in EDM_VPQ_SAMPLERS:
            return self.default_grid
        return "uniform_logsnr" if steps >= EDM_LOGSNR_FROM.get(sampler, steps + 1) else "vp_quadratic"

    def calibration_grid(self, sampler: str, steps: int) -> str:
        """Karras' grid at every step count: fitted from it (``bench/samplers.py``'s EDM
        mixtures, 10 steps, 150 trials) UniPC's pilot error reaches 0.010 / 0.009 in 2 / 64
        dimensions, against 0.014 / 0.013 from ``vp_quadratic`` and 0.022 / 0.056 from the log-SNR
        grid, where the pattern search stalls (DPM-Solver++(2M): 0.033 / 0.088 against 0.032 /
        0.086 and 0.035 / 0.090)."""
        return self.default_grid

    def sampling_t_min(self, sampler: str, steps: int) -> float | None:
        """SDE-DPM-Solver++(2M) ends its default grid at :data:`SDE_END` x ``sigma_min``: measured
        default against default (``bench/samplers.py`` and ``bench/defaults.py --sde``, three
        mixture families in 2, 16 and 64 dimensions at 5-50 NFE), the sliced W2 to the data is
        lower than with the grid ending at ``sigma_min`` in 29 of 36 cells (17 of 18 at 5-10 NFE)
        and no worse than diffusers' default in all 36 (at 2-D, 5 NFE it was before). Ending at
        5 x ``sigma_min`` loses the multiscale mixture (a component of std 0.02) at 2-D, 5 NFE."""
        return SDE_END * self.sigma_min if sampler in SDE_END_SAMPLERS else None

    def log_alpha(self, t: Tensor) -> Tensor:
        return torch.zeros_like(t)

    def alpha(self, t: Tensor) -> Tensor:
        return torch.ones_like(t)

    def sigma(self, t: Tensor) -> Tensor:
        return t

    def dalpha(self, t: Tensor) -> Tensor:
        return torch.zeros_like(t)

    def dsigma(self, t: Tensor) -> Tensor:
        return torch.ones_like(t)

    def lam(self, t: Tensor) -> Tensor:
        return -torch.log(t)

    def t_of_lam(self, lam: Tensor) -> Tensor:
        return torch.exp(-lam)


@SCHEDULES.register("linear", "linear interpolant / rectified flow: alpha = 1 - t, sigma = t")
@dataclass(repr=False)
class LinearInterpolant(Schedule):
    t_min: float = 0.0
    default_grid: str = "uniform_t"

    def alpha(self, t: Tensor) -> Tensor:
        return 1 - t

    def log_alpha(self, t: Tensor) -> Tensor:
        return torch.log1p(-t)

    def sigma(self, t: Tensor) -> Tensor:
        return t

    def dalpha(self, t: Tensor) -> Tensor:
        return -torch.ones_like(t)

    def dsigma(self, t: Tensor) -> Tensor:
        return torch.ones_like(t)

    def lam(self, t: Tensor) -> Tensor:
        return torch.log1p(-t) - torch.log(t)

    def t_of_lam(self, lam: Tensor) -> Tensor:
        return torch.sigmoid(-lam)


@SCHEDULES.register("stochastic_interpolant",
                    "x_t = (1-t) x0 + t x1 + gamma(t) z with gamma = sqrt(a t (1-t)); Gaussian x1")
@dataclass(repr=False)
class StochasticInterpolant(LinearInterpolant):
    """Albergo & Vanden-Eijnden's interpolant with a Gaussian base: its marginals are affine,
    with ``alpha = 1 - t`` and ``sigma = sqrt(t**2 + gamma(t)**2)``; ``a`` tunes gamma."""

    a: float = 1.0

    def sigma(self, t: Tensor) -> Tensor:
        return torch.sqrt(t**2 + self.a * t * (1 - t))

    def dsigma(self, t: Tensor) -> Tensor:
        return (2 * t + self.a * (1 - 2 * t)) / (2 * self.sigma(t))

    def lam(self, t: Tensor) -> Tensor:
        return self.log_alpha(t) - torch.log(self.sigma(t))

    def t_of_lam(self, lam: Tensor) -> Tensor:
        # (1-t)^2 e^{-2 lam} = (1-a) t^2 + a t ; solve the quadratic for t in [0, 1]
        r = torch.exp(-2 * lam)
        qa, qb, qc = r - (1 - self.a), -(2 * r + self.a), r
        disc = torch.sqrt(torch.clamp(qb**2 - 4 * qa * qc, min=0))
        return 2 * qc / (-qb + disc)  # the root in [0, 1], stable form


class DiscreteVP(Schedule):
    """A discrete DDPM schedule (``betas``) made continuous the DPM-Solver way: ``log alpha``
    interpolated piecewise-linearly at ``t_k = (k + 1) / N`` (index k = 0..N-1, and alpha(0) = 1).
    Lets polydiff sample models trained with integer timesteps: ``k = N t - 1``."""

    def __init__(self, betas: Tensor) -> None:
        betas = torch.as_tensor(betas, dtype=torch.float64)
        self.n = len(betas)
        # log alpha at t_k = k / N for k = 0..N, with alpha(0) = 1 so that sigma(0) = 0
        self.t_grid = torch.linspace(0.0, 1.0, self.n + 1, dtype=torch.float64)
        cum = 0.5 * torch.cumsum(torch.log1p(-betas), 0)
        self.log_alpha_grid = torch.cat([torch.zeros(1, dtype=torch.float64), cum])
        self.t_min, self.t_max = 1.0 / self.n, 1.0
        self._cache: dict[tuple[torch.device, torch.dtype], tuple[Tensor, ...]] = {}

    def sampling_grid(self, sampler: str, steps: int) -> str:
        return ddpm_sampling_grid(sampler, steps, self.default_grid)

    def _tables(self, like: Tensor) -> tuple[Tensor, ...]:
        """The interpolation tables on ``like``'s device and dtype, made once per pair: knots
        ``t_k``, ``log alpha`` there and its slopes, and the same reversed (for ``t_of_lam``)."""
        key = (like.device, like.dtype)
        if key not in self._cache:
            xs, ys = self.t_grid, self.log_alpha_grid
            slope = torch.diff(ys) / torch.diff(xs)
            rx, ry = torch.flip(ys, [0]), torch.flip(xs, [0])
            self._cache[key] = tuple(v.to(like.device, like.dtype)
                                     for v in (xs, ys, slope, rx, ry, torch.diff(ry) / torch.diff(rx)))
        return self._cache[key]

    def _interp(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """``log alpha`` at ``t`` and its slope."""
        xs, la, slopes = self._tables(t)[:3]
        i = torch.clamp(torch.searchsorted(xs, t.contiguous(), right=False), 1, self.n) - 1
        slope = slopes[i]
        return torch.addcmul(la[i], slope, t - xs[i]), slope

    def log_alpha(self, t: Tensor) -> Tensor:
        return self._interp(t)[0]

    def alpha(self, t: Tensor) -> Tensor:
        return torch.exp(self.log_alpha(t))

    def sigma(self, t: Tensor) -> Tensor:
        return torch.sqrt(torch.clamp(-torch.expm1(2 * self.log_alpha(t)), min=0))

    def dalpha(self, t: Tensor) -> Tensor:
        la, slope = self._interp(t)
        return torch.exp(la) * slope

    def dsigma(self, t: Tensor) -> Tensor:
        return -self.alpha(t) * self.dalpha(t) / self.sigma(t)

    def lam(self, t: Tensor) -> Tensor:
        la = self.log_alpha(t)
        return la - 0.5 * torch.log(-torch.expm1(2 * la))

    def _values(self, t: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        la, slope = self._interp(t)
        alpha, e = torch.exp(la), -torch.expm1(2 * la)
        sigma = torch.sqrt(torch.clamp(e, min=0))
        dalpha = alpha * slope
        return alpha, sigma, la - 0.5 * torch.log(e), dalpha, -alpha * dalpha / sigma  # lam as lam() has it

    def t_of_lam(self, lam: Tensor) -> Tensor:
        log_alpha = -0.5 * torch.nn.functional.softplus(-2 * lam)
        xs, ts, slopes = self._tables(lam)[3:]
        i = torch.clamp(torch.searchsorted(xs, log_alpha.contiguous()), 1, self.n) - 1
        return torch.addcmul(ts[i], slopes[i], log_alpha - xs[i])

    def __repr__(self) -> str:
        return f"DiscreteVP(n={self.n})"


@SCHEDULES.register("vp_discrete", "DDPM's discrete linear betas (1e-4..0.02, N=1000) made continuous")
def vp_discrete(n: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> DiscreteVP:
    return DiscreteVP(torch.linspace(beta_start, beta_end, n, dtype=torch.float64))


@SCHEDULES.register("vp_discrete_cosine", "improved DDPM's discrete squared-cosine betas (N=100, capped at 0.999; "
                                          "Diffusion Policy's default) made continuous")
def vp_discrete_cosine(n: int = 100, offset: float = 0.008, max_beta: float = 0.999) -> DiscreteVP:
    """Betas ``1 - abar(k+1)/abar(k)`` with ``abar(u) = cos((u/N + s) / (1 + s) pi/2)^2``
    (Nichol & Dhariwal 2021), capped at ``max_beta``."""
    u = torch.arange(n + 1, dtype=torch.float64) / n
    abar = torch.cos((u + offset) / (1 + offset) * math.pi / 2) ** 2
    return DiscreteVP((1 - abar[1:] / abar[:-1]).clamp(max=max_beta))


@dataclass
class Coefs:
    """Schedule values at one time, already broadcast to a field (or a packed flat state)."""

    alpha: Tensor
    sigma: Tensor
    lam: Tensor
    dalpha: Tensor
    dsigma: Tensor


class GaussianProcess:
    """The forward process of one continuous field: a schedule plus noise draws."""

    kind = "gaussian"

    def __init__(self, schedule: Schedule | str = "vp_linear", **options: float) -> None:
        self.schedule = SCHEDULES.build(schedule, **options) if isinstance(schedule, str) else schedule
        if options and not isinstance(schedule, str):
            raise TypeError("options are only accepted together with a schedule name")

    @property
    def t_min(self) -> float:
        return self.schedule.t_min

    @property
    def t_max(self) -> float:
        return self.schedule.t_max

    def coefs(self, t: Tensor) -> Coefs:
        """Every schedule value a sampler or loss needs at ``t``, in one call."""
        return Coefs(*self.schedule.values(t))

    def marginal(self, x0: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """``x_t = alpha(t) x0 + sigma(t) eps`` with ``t`` of shape (B,) or (B, ...)."""
        t = expand_t(t, x0)
        return self.schedule.alpha(t) * x0 + self.schedule.sigma(t) * eps

    def prior_sample(self, shape: tuple[int, ...], generator: torch.Generator | None = None,
                     dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> Tensor:
        """A draw from the prior at ``t_max``: N(0, sigma(t_max)^2)."""
        return self.schedule.prior_std() * torch.randn(shape, generator=generator, dtype=dtype, device=device)

    def __repr__(self) -> str:
        return f"GaussianProcess({self.schedule!r})"


def expand_t(t: Tensor, x: Tensor) -> Tensor:
    """Broadcast a time of shape (B,) or (B, ...) against a field ``x`` of shape (B, ...)."""
    if t.dim() == 0:
        return t
    if t.dim() > x.dim() or t.shape[0] != x.shape[0]:
        raise ValueError(f"time of shape {tuple(t.shape)} does not broadcast against a field of shape "
                         f"{tuple(x.shape)}: use (B,) or (B, ...) per-element times")
    return t.reshape(*t.shape, *([1] * (x.dim() - t.dim())))
