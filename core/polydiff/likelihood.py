"""Exact log-likelihoods through the probability-flow ODE.

Along the PF-ODE ``dx/dt = v(x, t) = alpha'(t) x0_hat + sigma'(t) eps_hat`` the log-density
obeys ``d log p_t(x_t) / dt = -div v``, so

    log p_{t_min}(x) = log p_{t_max}(x(t_max)) + int_{t_min}^{t_max} div v(x(t), t) dt,

with ``x(t)`` the ODE solution started at the data point (Song et al. 2021, Sec. 4.3; Chen et
al. 2018 for the divergence). The ODE is solved in float64 with classical Runge-Kutta 4 on a
fine grid (uniform in log-SNR by default), the divergence is exact (one vector-Jacobian product
per free dimension) or Hutchinson's estimate (Grathwohl et al. 2019) with probes held fixed
along the path, and the prior at ``t_max`` is ``N(0, sigma(t_max)^2)``.

Structured fields are handled in their own coordinates: the divergence is the trace of the
Jacobian restricted to the field's subspace (masked entries, zero centre of mass, symmetric
matrices), the prior counts only the free dimensions, and bits per dimension divide by
``structure.dof``. Every Gaussian field of the state takes part; other entries (masks,
conditions) are held fixed. States of categorical fields get the continuous-time ELBO instead
(:mod:`polydiff.elbo`): an upper bound on the negative log-likelihood, with perplexity.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import torch
from torch import Tensor

from .elbo import CategoricalELBO, categorical_elbo
from .estimates import call, field_coefs, x0_eps
from .grids import make_grid
from .random import Noise
from .samplers.driver import prepare
from .state import FieldSpec, Packer, State, as_fields


class Likelihood(NamedTuple):
    """Per-sample results of :func:`log_likelihood`."""

    log_prob: Tensor  # (B,) nats: log-density at t_min over the free dimensions
    bpd: Tensor  # (B,) bits per free dimension
    dof: Tensor  # (B,) free dimensions
    prior: Tensor  # (B,) prior log-density at the ODE's end point
    end: Tensor | State  # the point reached at t_max
    nfe: int  # model evaluations


def prior_log_prob(fields: Mapping[str, FieldSpec], state: State, t_max: Tensor) -> Tensor:
    """``log N(x; 0, sigma(t_max)^2)`` of the Gaussian fields over their free dimensions."""
    total = 0
    for k, f in fields.items():
        if f.kind != "gaussian":
            continue
        x = state[k]
        var = f.process.schedule.sigma(t_max.to(torch.float64)).to(x.dtype) ** 2
        w = f.structure.weights(x, state)
        dof = f.structure.dof(x, state).to(x.dtype)
        total = total - 0.5 * (w * x * x).flatten(1).sum(1) / (var * getattr(f.structure, "noise_gain", 1.0)) \
            - 0.5 * dof * torch.log(2 * math.pi * var)
    return total


def log_likelihood(model: Callable[..., Any], process: Any, x: Tensor | Mapping[str, Any], *,
                   prediction: str = "eps", cond: Any = None, steps: int = 128, grid: str | Tensor | None = None,
                   t_min: float | None = None, t_max: float | None = None, divergence: str = "exact",
                   probes: int = 1, seed: int = 0, dtype: torch.dtype = torch.float64,
                   prior: Callable[[State], Tensor] | None = None) -> Likelihood | CategoricalELBO:
    """Log-likelihood of data under a trained model: via the probability-flow ODE for Gaussian
    fields; for states whose fields are all categorical, the continuous-time ELBO (an upper
    bound on the negative log-likelihood, with perplexity and bits per token) of
    :func:`polydiff.elbo.categorical_elbo`, integrated over ``steps`` stratified times.

    Args:
        model, process, prediction, cond: as for :func:`polydiff.sample` (a single field given
            as a tensor ``x`` of shape (B, ...), or a state dict of tensors).
        steps, grid: the RK4 grid (``steps`` intervals; 4 model calls each).
        t_min, t_max: integration range (the schedule's by default; ``t_min`` > 0 is needed
            where ``sigma = 0`` makes the model's input degenerate). The result is the density
            of the noisy marginal at ``t_min``.
        divergence: ``"exact"`` (one vector-Jacobian product per dimension; small fields) or
            ``"hutchinson"`` (``probes`` Gaussian probes per sample, fixed along the path).
        prior: ``prior(state_at_t_max) -> (B,)`` instead of ``N(0, sigma(t_max)^2)``.

    Returns: a :class:`Likelihood` (log-density in nats, bits per free dimension, ...).
    """
    if divergence not in ("exact", "hutchinson"):
        raise ValueError(f"divergence must be 'exact' or 'hutchinson', got {divergence!r}")
    kinds = {f.kind for f in as_fields(process, prediction).values()}
    if kinds == {"categorical"}:
        data = x if isinstance(x, Mapping) else {"x": x}
        fields = as_fields(process, prediction, name="x")
        smodel = model if isinstance(x, Mapping) else (lambda st, t, c=None: {
            "x": model(st["x"], t) if c is None else model(st["x"], t, c)})
        return categorical_elbo(smodel, fields, dict(data), steps=steps, seed=seed, cond=cond,
                                t_min=0.0 if t_min is None else t_min, t_max=1.0 if t_max is None else t_max)
    single = not isinstance(x, Mapping)
    data = {"x": x} if single else dict(x)
    spec = tuple(x.shape) if single else data
    device = next(v.device for v in data.values() if isinstance(v, Tensor))
    smodel, fields, state, _, name = prepare(model, process, spec, prediction=prediction, seed=seed, dtype=dtype,
                                             device=device)
    if single:
        state = {name: x.to(device=device, dtype=dtype)}
    bad = [k for k, f in fields.items() if f.kind != "gaussian"]
    if bad:
        raise ValueError(f"fields {bad} are not Gaussian: the PF-ODE likelihood covers Gaussian fields only")
    state = {k: v.to(dtype) if k in fields else v for k, v in state.items()}
    for k, f in fields.items():
        state[k] = f.structure.project(state[k], state)
    packer = Packer(fields, state)
    batch = state[packer.names[0]].shape[0]
    aux = {k: v for k, v in state.items() if k not in fields}
    ref = fields[packer.names[0]].process.schedule
    t_max = ref.t_max if t_max is None else t_max
    t_min = (ref.t_min if ref.t_min > 0 else 1e-4 * t_max) if t_min is None else t_min
    ts = make_grid(ref, steps, grid, t_max=t_max, t_min=t_min).flip(0).to(device)

    def project(v: Tensor) -> Tensor:
        st = {**aux, **packer.unpack(v)}
        return packer.pack({k: fields[k].structure.project(st[k], st) for k in packer.names})

    dim = packer.pack(state).shape[1]
    if divergence == "exact":
        eye = torch.eye(dim, dtype=dtype, device=device)
        vecs = [project(eye[j].expand(batch, dim)) for j in range(dim)]
    else:
        noise = Noise(batch, seed=seed, device=device)
        vecs = [project(noise.randn((dim,), dtype).to(device)) for _ in range(probes)]
    nfe = 0

    def velocity(xp: Tensor, t: Tensor) -> Tensor:
        nonlocal nfe
        nfe += 1
        st = {**aux, **packer.unpack(xp)}
        tb = t.to(dtype).expand(batch)
        est = x0_eps(call(smodel, st, tb, cond), st, tb, fields, packer.names)
        v = {}
        for k in packer.names:
            c = field_coefs(fields[k], tb, st[k])
            v[k] = fields[k].structure.project(c.dalpha * est[k][0] + c.dsigma * est[k][1], st)
        return packer.pack(v)

    def f(xp: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        with torch.enable_grad():
            xr = xp.detach().requires_grad_(True)
            v = velocity(xr, t)
            div = torch.zeros(batch, dtype=dtype, device=device)
            for j, u in enumerate(vecs):
                (g,) = torch.autograd.grad(v, xr, u, retain_graph=j < len(vecs) - 1)
                div = div + (g * u).sum(1)
        return v.detach(), div if divergence == "exact" else div / len(vecs)

    xp = packer.pack(state)
    delta = torch.zeros(batch, dtype=dtype, device=device)
    for i in range(len(ts) - 1):
        t0, t1 = ts[i], ts[i + 1]
        h = t1 - t0
        k1, d1 = f(xp, t0)
        k2, d2 = f(xp + 0.5 * h * k1, t0 + 0.5 * h)
        k3, d3 = f(xp + 0.5 * h * k2, t0 + 0.5 * h)
        k4, d4 = f(xp + h * k3, t1)
        xp = xp + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        delta = delta + h / 6 * (d1 + 2 * d2 + 2 * d3 + d4)
    end = {**aux, **packer.unpack(xp)}
    lp_prior = prior(end) if prior is not None else prior_log_prob(fields, end, ts[-1])
    log_prob = lp_prior.to(dtype) + delta
    dof = sum(fields[k].structure.dof(state[k], state).to(dtype) for k in packer.names)
    bpd = -log_prob / (dof * math.log(2))
    return Likelihood(log_prob, bpd, dof, lp_prior, end[name] if single else end, nfe)
