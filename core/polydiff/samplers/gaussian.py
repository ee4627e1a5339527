"""First-order, Runge-Kutta and stochastic Gaussian samplers: DDIM / DDPM, PF-ODE Euler, Heun
and adaptive Dormand-Prince (rk45), EDM's churned Heun, Euler-Maruyama and Song et al.'s
predictor-corrector.

All steps share the signature documented in :mod:`polydiff.samplers.base`. ODE methods here
integrate the probability-flow ODE in ``t`` on ``x`` itself, whose velocity is
``dalpha x0 + dsigma eps``: for rectified flow this is the usual flow-matching Euler, for
EDM (sigma = t) it is EDM's Euler/Heun. Exponential-integrator methods (DDIM, DPM-Solver, ...)
are invariant to the parametrisation of time (see :mod:`polydiff.samplers.dpm` and
:mod:`polydiff.samplers.multistep`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..processes.gaussian import Coefs
from .base import StepContext, register
from .coefs import check_option, clip_lam

History = object


def _velocity(d: Tensor, e: Tensor, c: Coefs) -> Tensor:
    """PF-ODE velocity ``dx/dt`` of the affine path."""
    return torch.addcmul(c.dsigma * e, c.dalpha, d)


@register("ddim", "DDIM (Song et al.): deterministic for eta = 0, DDPM's posterior for eta = 1", eta=0.0)
@register("ddpm", "ancestral DDPM: a draw from the posterior q(x_s | x_t, x0_hat) (= DDIM, eta 1)",
          stochastic=True, eta=1.0)
def ddim(x: Tensor, d: Tensor, e: Tensor, ct: Coefs, cs: Coefs,
         hist: History, ctx: StepContext) -> tuple[Tensor, object]:
    eta = ctx.options["eta"]
    if eta == 0:
        return cs.alpha * d + cs.sigma * e, hist
    c2 = eta**2 * -torch.expm1(-2 * (cs.lam - ct.lam))  # eta^2 x (posterior var / sigma_s^2)
    return cs.alpha * d + cs.sigma * (torch.sqrt(1 - c2) * e + torch.sqrt(c2) * ctx.noise()), hist


@register("euler", "probability-flow ODE, explicit Euler in t (flow matching's default)")
def euler(x: Tensor, d: Tensor, e: Tensor, ct: Coefs, cs: Coefs,
          hist: History, ctx: StepContext) -> tuple[Tensor, object]:
    return torch.addcmul(x, ctx.s - ctx.t, _velocity(d, e, ct)), hist


@register("heun", "probability-flow ODE, Heun's 2nd-order method in t (EDM's deterministic sampler)",
          nfe_per_step=2)
def heun(x: Tensor, d: Tensor, e: Tensor, ct: Coefs, cs: Coefs,
         hist: History, ctx: StepContext) -> tuple[Tensor, object]:
    dt = ctx.s - ctx.t
    v1 = _velocity(d, e, ct)
    d2, e2 = ctx.denoise(torch.addcmul(x, dt, v1), ctx.s)
    return torch.addcmul(x, dt, v1.add_(_velocity(d2, e2, cs)), value=0.5), hist  # v1 is ours: summed in place


@register("euler_maruyama", "reverse-time SDE of the forward process, Euler-Maruyama (denoise: no noise on "
          "the last step)", stochastic=True, denoise=False)
def euler_maruyama(x: Tensor, d: Tensor, e: Tensor, ct: Coefs, cs: Coefs,
                   hist: History, ctx: StepContext) -> tuple[Tensor, object]:
    """``x += (f x - g^2 score) dt + g sqrt(-dt) z`` with the forward drift ``f = alpha'/alpha``
    and ``g^2 = (sigma^2)' - 2 f sigma^2``; ``denoise=True`` returns the last step's mean
    (score_sde's and GDSS's ``noise_removal``)."""
    mean, std = _euler_maruyama(x, e, ct, ctx)
    return _add_noise(mean, std, ctx), hist


def _euler_maruyama(x: Tensor, e: Tensor, ct: Coefs, ctx: StepContext) -> tuple[Tensor, Tensor]:
    """Mean and noise scale of an Euler-Maruyama step of the reverse SDE from ``t`` to ``s``."""
    dt = ctx.s - ctx.t  # negative
    f = ct.dalpha / ct.alpha
    g2 = 2 * ct.sigma * ct.dsigma - 2 * f * ct.sigma**2
    score = -e / ct.sigma
    return x + dt * (f * x - g2 * score), torch.sqrt(-dt * g2)


def _add_noise(mean: Tensor, std: Tensor, ctx: StepContext) -> Tensor:
    """``mean + std z``, except on the last step of a sampler run with ``denoise=True``."""
    if ctx.options.get("denoise") and ctx.i == ctx.n - 1:
        return mean
    return mean + std * ctx.noise()


# ----------------------------------------------------------------------------- adaptive RK45
# Dormand & Prince (1980) 5(4) pair: stage nodes, stage weights, 5th-order weights (also the
# last stage, evaluated at the new point: "first same as last") and 5th-minus-4th weights.
_DP_C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0)
_DP_A = (
    (),
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
    (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
)
_DP_E = (71 / 57600, 0.0, -71 / 16695, 71 / 1920, -17253 / 339200, 22 / 525, -1 / 40)
_RK45_MAX_STEPS = 100_000


def _rms(v: Tensor) -> float:
    return float(torch.sqrt(torch.mean(v * v)))


@register("rk45", "probability-flow ODE, adaptive Dormand-Prince 5(4) in each grid interval (NFE 0 = adaptive; "
          "syncs to the host for step-size control)",
          nfe_per_step=0, rtol=1e-5, atol=1e-5)
def rk45(x: Tensor, d: Tensor, e: Tensor, ct: Coefs, cs: Coefs,
         hist: History, ctx: StepContext) -> tuple[Tensor, object]:
    """Adaptive Dormand-Prince 5(4) on the PF-ODE ``dx/dt = dalpha x0 + dsigma eps`` from ``t``
    to ``s`` (the whole way with ``steps=1``). ``nfe_per_step = 0`` means adaptive: each
    accepted or rejected sub-step costs 6 model calls.

    Step-size control follows Hairer, Norsett & Wanner (RMS error scaled by
    ``atol + rtol |x|``, safety 0.9, growth in [0.2, 5]); the error is one norm over the whole
    batch, so sub-steps are shared by all samples. Unlike every other method here, this step
    reads the error norm back to the host (``float(...)``) to choose the next sub-step: it
    cannot be captured in a CUDA graph.
    """
    rtol, atol = ctx.options["rtol"], ctx.options["atol"]
    span = ctx.s - ctx.t

    def f(xu: Tensor, tau: float) -> Tensor:  # dx / dtau, tau in [0, 1]
        u = ctx.t + tau * span
        du, eu = ctx.denoise(xu, u)
        return span * _velocity(du, eu, ctx.coefs(u if u.dim() == 0 else u.reshape(-1)))

    k1 = span * _velocity(d, e, ct)
    scale = atol + rtol * x.abs()
    d0, d1 = _rms(x / scale), _rms(k1 / scale)
    dtau = 1.0 if d0 < 1e-5 or d1 < 1e-5 else min(1.0, 0.01 * d0 / d1)
    tau = 0.0
    for _ in range(_RK45_MAX_STEPS):
        if tau >= 1.0:
            return x, hist
        dtau = min(dtau, 1.0 - tau)
        ks = [k1]
        for row, c in zip(_DP_A[1:], _DP_C[1:]):
            xi = x + dtau * sum(a * k for a, k in zip(row, ks) if a != 0.0)
            ks.append(f(xi, tau + c * dtau))
        x_new = xi  # the last stage was evaluated at the 5th-order solution
        err = dtau * sum(w * k for w, k in zip(_DP_E, ks) if w != 0.0)
        ratio = _rms(err / (atol + rtol * torch.maximum(x.abs(), x_new.abs())))
        if ratio <= 1.0:
            tau = 1.0 if dtau >= 1.0 - tau else tau + dtau
            x, k1 = x_new, ks[-1]
        dtau *= min(5.0, max(0.2, 0.9 * (ratio if ratio > 0 else 1e-10) ** -0.2))
    raise RuntimeError(f"rk45 took more than {_RK45_MAX_STEPS} sub-steps in one grid interval; loosen rtol/atol")


# ----------------------------------------------------------------------------- EDM
@register("edm", "EDM sampler (Karras et al. 2022, Alg. 2): Heun with stochastic churn s_churn, s_tmin, s_tmax, "
          "s_noise; deterministic Heun for s_churn = 0", nfe_per_step=2, stochastic=True,
          lazy=lambda o: o["s_churn"] > 0, s_churn=0.0, s_tmin=0.0, s_tmax=math.inf, s_noise=1.0)
def edm(x: Tensor, d: Tensor, e: Tensor, ct: Coefs, cs: Coefs,
        hist: History, ctx: StepContext) -> tuple[Tensor, object]:
    """Karras et al.'s Algorithm 2 for any affine schedule.

    Churn raises the noise level from ``rho = sigma/alpha`` to ``rho (1 + gamma)``, with
    ``gamma = min(s_churn / n, sqrt(2) - 1)`` where ``s_tmin <= rho <= s_tmax`` (EDM's sigma),
    mapped back to a time ``t_hat`` through the reference schedule and capped at the grid's
    first time (the process ``t_max`` unless a lower ``t_max`` was asked for). The state gets the
    forward transition noise from ``t`` to ``t_hat`` (times ``s_noise``), then a Heun step goes
    from ``t_hat`` to ``s``; the last step is Euler where ``sigma(s) = 0``.

    With churn the step evaluates at ``(x_hat, t_hat)`` itself (``lazy``: on an all-Gaussian
    state the loop makes no call at ``(x, t)``), so every step costs 2 model calls, as in EDM's
    code; on a state with other fields the loop's call at ``(x, t)`` is still made (they use it)
    and a churned step costs 3.
    """
    o = ctx.options
    t_top = ctx.t if hist is None else hist
    t = ctx.t
    if o["s_churn"] > 0:
        if ctx.t_of_lam is None:
            raise ValueError("edm with s_churn > 0 needs StepContext.t_of_lam")
        lam = clip_lam(ct.lam[:, :1])  # reference field
        rho = torch.exp(-lam)
        inside = (rho >= o["s_tmin"]) & (rho <= o["s_tmax"])
        gamma = torch.where(inside, min(o["s_churn"] / ctx.n, math.sqrt(2) - 1), 0.0)
        t_hat = torch.minimum(ctx.t_of_lam(lam - torch.log1p(gamma)).to(lam.dtype), t_top)
        moved = torch.isfinite(t_hat) & (t_hat > t)
        t_hat = torch.where(moved, t_hat, t.expand_as(t_hat))
        c_hat = ctx.coefs(t_hat.reshape(-1))
        ratio = c_hat.alpha / ct.alpha
        std = torch.sqrt((c_hat.sigma**2 - (ratio * ct.sigma) ** 2).clamp_min(0))
        x = torch.where(moved, ratio * x + std * o["s_noise"] * ctx.noise(), x)
        d, e = ctx.denoise(x, t_hat)
        ct, t = c_hat, t_hat
    dt = ctx.s - t
    v1 = _velocity(d, e, ct)
    x1 = torch.addcmul(x, dt, v1)
    d2, e2 = ctx.denoise(x1, ctx.s)
    x2 = torch.addcmul(x, dt, v1.add_(_velocity(d2, e2, cs)), value=0.5)
    # sigma(s) = 0 is only possible at the end of a (strictly decreasing) grid
    return (torch.where(cs.sigma > 0, x2, x1) if ctx.i == ctx.n - 1 else x2), t_top


# ----------------------------------------------------------------------------- predictor-corrector
@register("pc", "predictor-corrector (Song et al. 2021): n_corrector Langevin steps at signal-to-noise snr "
          "(GDSS's scale_eps), then a reverse-diffusion (or euler) predictor; 1 + n_corrector NFE/step",
          nfe_per_step=2, stochastic=True, n_corrector=1, snr=0.16, scale_eps=1.0, norm="batch",
          predictor="reverse", denoise=False)
def pc(x: Tensor, d: Tensor, e: Tensor, ct: Coefs, cs: Coefs, hist: History, ctx: StepContext) -> tuple[Tensor, object]:
    """Langevin corrector then reverse-diffusion predictor (score_sde's PC sampler).

    Corrector: ``x += eps_L score + sqrt(2 eps_L) scale_eps z`` with
    ``eps_L = 2 (snr ||z|| / ||score||)^2``, norms per sample and per field (score_sde takes
    batch means; GDSS scales the noise by ``scale_eps``). Predictor: the reverse of the forward
    transition ``x_t = a x_s + b z`` (``a = alpha_t / alpha_s``, ``b^2 = sigma_t^2 - a^2 sigma_s^2``),
    ``x_s = (x + b^2 score) / a + b z``, written in ``(x0, eps)`` so it stays finite where
    ``alpha_t = 0``. Registered ``nfe_per_step`` is for the default ``n_corrector = 1``.

    ``norm="batch"`` (default) takes the norms' batch means per field, as score_sde and GDSS do;
    ``norm="sample"`` keeps every sample independent of its batch, but per-sample norms
    concentrate only when a field has many entries: on a field of a few dimensions, a sample
    where the score nearly vanishes (a mode centre) gets a huge Langevin step.

    ``predictor="euler"``: an Euler-Maruyama step of the reverse SDE instead (score_sde's and
    GDSS's ``EulerMaruyamaPredictor``; GDSS's community-small and ego-small configs use it).
    ``denoise=True``: the last step returns the predictor's mean, without noise (their
    ``noise_removal``).
    """
    o = ctx.options
    check_option("norm", o["norm"], ("batch", "sample"))
    check_option("predictor", o["predictor"], ("reverse", "euler"))
    n_corr = int(o["n_corrector"])
    for j in range(n_corr):
        if j > 0:
            d, e = ctx.denoise(x, ctx.t)
        score = -e / ct.sigma
        z = ctx.noise()
        nz, ns = ctx.field_norm(z), ctx.field_norm(score)
        if o["norm"] == "batch":
            nz, ns = nz.mean(0, keepdim=True), ns.mean(0, keepdim=True)
        eps_l = 2 * (o["snr"] * nz / ns.clamp_min(1e-30)) ** 2
        x = x + eps_l * score + torch.sqrt(2 * eps_l) * o["scale_eps"] * z
    if n_corr > 0:
        d, e = ctx.denoise(x, ctx.t)
    if o["predictor"] == "euler":
        mean, std = _euler_maruyama(x, e, ct, ctx)
    else:
        mean = cs.alpha * d + (ct.alpha * cs.sigma**2 / (cs.alpha * ct.sigma)) * e
        std = torch.sqrt((ct.sigma**2 - (ct.alpha * cs.sigma / cs.alpha) ** 2).clamp_min(0))
    return _add_noise(mean, std, ctx), hist
