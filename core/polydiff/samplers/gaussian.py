"""First-order and Runge-Kutta Gaussian samplers: DDIM / DDPM, PF-ODE Euler and Heun,
Euler-Maruyama.

All steps share the signature documented in :mod:`polydiff.samplers.base`. ODE methods here
integrate the probability-flow ODE in ``t`` on ``x`` itself, whose velocity is
``dalpha x0 + dsigma eps``: for rectified flow this is the usual flow-matching Euler, for
EDM (sigma = t) it is EDM's Euler/Heun. Exponential-integrator methods (DDIM, DPM-Solver, ...)
are invariant to the parametrisation of time.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..processes.gaussian import Coefs
from .base import StepContext, register

History = object


def _velocity(d: Tensor, e: Tensor, c: Coefs) -> Tensor:
    """PF-ODE velocity ``dx/dt`` of the affine path."""
    return c.dalpha * d + c.dsigma * e


@register("ddim", "DDIM (Song et al.): deterministic for eta = 0, DDPM's posterior for eta = 1", eta=0.0)
@register("ddpm", "ancestral DDPM: a draw from the posterior q(x_s | x_t, x0_hat) (= DDIM, eta 1)",
          stochastic=True, eta=1.0)
def ddim(x: Tensor, d: Tensor, e: Tensor, ct: Coefs, cs: Coefs, hist: History, ctx: StepContext):
    eta = ctx.options["eta"]
    if eta == 0:
        return cs.alpha * d + cs.sigma * e, hist
    c2 = eta**2 * -torch.expm1(-2 * (cs.lam - ct.lam))  # eta^2 x (posterior var / sigma_s^2)
    return cs.alpha * d + cs.sigma * (torch.sqrt(1 - c2) * e + torch.sqrt(c2) * ctx.noise()), hist


@register("euler", "probability-flow ODE, explicit Euler in t (flow matching's default)")
def euler(x: Tensor, d: Tensor, e: Tensor, ct: Coefs, cs: Coefs, hist: History, ctx: StepContext):
    return x + (ctx.s - ctx.t) * _velocity(d, e, ct), hist


@register("heun", "probability-flow ODE, Heun's 2nd-order method in t (EDM's deterministic sampler)",
          nfe_per_step=2)
def heun(x: Tensor, d: Tensor, e: Tensor, ct: Coefs, cs: Coefs, hist: History, ctx: StepContext):
    dt = ctx.s - ctx.t
    v1 = _velocity(d, e, ct)
    x1 = x + dt * v1
    d2, e2 = ctx.denoise(x1, ctx.s)
    return x + dt * 0.5 * (v1 + _velocity(d2, e2, cs)), hist


@register("euler_maruyama", "reverse-time SDE of the forward process, Euler-Maruyama", stochastic=True)
def euler_maruyama(x: Tensor, d: Tensor, e: Tensor, ct: Coefs, cs: Coefs, hist: History, ctx: StepContext):
    dt = ctx.s - ctx.t  # negative
    f = ct.dalpha / ct.alpha
    g2 = 2 * ct.sigma * ct.dsigma - 2 * f * ct.sigma**2
    score = -e / ct.sigma
    return x + dt * (f * x - g2 * score) + torch.sqrt(-dt * g2) * ctx.noise(), hist


@register("dpm++2m", "DPM-Solver++(2M): 2nd-order multistep, data prediction (Lu et al. 2022)",
          lower_order_final=True)
def dpmpp_2m(x: Tensor, d: Tensor, e: Tensor, ct: Coefs, cs: Coefs, hist: History, ctx: StepContext):
    h = cs.lam - ct.lam
    first = hist is None or (ctx.options["lower_order_final"] and ctx.i == ctx.n - 1 and ctx.n < 15)
    if first:
        D = d
    else:
        d_prev, h_prev = hist
        r = h_prev / h
        D = d + (d - d_prev) / (2 * r)
    return (cs.sigma / ct.sigma) * x - cs.alpha * torch.expm1(-h) * D, (d, h)
