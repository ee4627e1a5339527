"""Training objectives: denoising score matching / flow matching for Gaussian fields, the
masked-diffusion ELBO for absorbing fields, geodesic flow matching for manifold fields.

One call, :func:`diffusion_loss`, draws one time per sample, corrupts every field of the
state with its own process, calls the network once and sums the per-field losses. Gaussian
losses are written in the network's own parametrisation with an optional weighting expressed
in x0-space, ``w(t) * |x0_hat - x0|^2``, so that "eps-MSE", "v-MSE", "flow matching",
"min-SNR" and "EDM" weightings are all the same code with a different ``w``.

Plugins extend training in two documented ways:

- **loss terms**: a network may return extra outputs named ``loss/<name>`` (a per-sample (B,)
  tensor or a scalar: a property regressor's error, a block-size classifier's cross-entropy,
  an auxiliary term); :func:`diffusion_loss` adds their means, weighted by ``terms[name]``
  (recipe: ``loss.terms``; default 1), and logs them;
- **objectives**: a whole training objective registered in :data:`OBJECTIVES` (recipe:
  ``loss.objective``), e.g. consistency-trajectory distillation from a frozen teacher.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from .parametrization import from_x0_eps, x0_error_scale
from .processes.categorical import Absorbing
from .processes.gaussian import Coefs, Schedule
from .random import Noise
from .registry import Registry
from .state import FieldSpec, State

WEIGHTINGS: Registry = Registry("loss weighting")
TIME_DENSITIES: Registry = Registry("training time density")
OBJECTIVES: Registry = Registry("training objective", providers=["polydiff.distill"])  # ctm
TERM_PREFIX = "loss/"
MANIFOLD_WEIGHTINGS = ("x0", "velocity")


@WEIGHTINGS.register("prediction", "plain MSE in the network's own parametrisation (eps-, v- or velocity-MSE)")
def w_prediction(c: Coefs, kind: str, **_: float) -> Tensor:
    return 1 / x0_error_scale(kind, c) ** 2


@WEIGHTINGS.register("snr", "x0-space weight SNR = (alpha/sigma)^2 (equals eps-MSE)")
def w_snr(c: Coefs, kind: str, **_: float) -> Tensor:
    return (c.alpha / c.sigma) ** 2


@WEIGHTINGS.register("min_snr", "min(SNR, gamma) in x0-space (Hang et al. 2023), gamma = 5")
def w_min_snr(c: Coefs, kind: str, gamma: float = 5.0, **_: float) -> Tensor:
    return torch.clamp((c.alpha / c.sigma) ** 2, max=gamma)


@WEIGHTINGS.register("velocity", "x0-space weight 1 / max(sigma, sigma_min)^2, sigma_min 0.1: the velocity MSE of "
                     "the linear interpolant (rectified flow) predicted in x0, clipped near the data as FrameFlow")
def w_velocity(c: Coefs, kind: str, sigma_min: float = 0.1, **_: float) -> Tensor:
    """For ``x_t = (1 - t) x0 + t eps`` the velocity error is the x0 error over ``t``
    (= sigma): local geometry at low noise weighs up to ``1 / sigma_min^2`` times more than
    the global layout at high noise."""
    return 1.0 / torch.clamp(c.sigma, min=sigma_min) ** 2


@WEIGHTINGS.register("edm", "EDM: (s^2 + sd^2) / (s sd)^2 with s = sigma/alpha (Karras et al. 2022)")
def w_edm(c: Coefs, kind: str, sigma_data: float = 0.5, **_: float) -> Tensor:
    s = c.sigma / c.alpha
    return (s**2 + sigma_data**2) / (s * sigma_data) ** 2


@WEIGHTINGS.register("x0", "uniform x0-space MSE")
def w_x0(c: Coefs, kind: str, **_: float) -> Tensor:
    return torch.ones_like(c.alpha)


@TIME_DENSITIES.register("uniform", "t ~ U(t_train_min, t_max)")
def td_uniform(s: Schedule, u: Tensor, n: Tensor, **_: float) -> Tensor:
    return s.t_train_min + (s.t_max - s.t_train_min) * u


@TIME_DENSITIES.register("lognormal", "EDM: log(sigma/alpha) ~ N(p_mean, p_std^2)")
def td_lognormal(s: Schedule, u: Tensor, n: Tensor, p_mean: float = -1.2, p_std: float = 1.2, **_: float) -> Tensor:
    t = s.t_of_lam(-(p_mean + p_std * n))
    return t.clamp(s.t_train_min, s.t_max)


@TIME_DENSITIES.register("logit_normal", "rectified flow (SD3): t = sigmoid(m + s n)")
def td_logit_normal(s: Schedule, u: Tensor, n: Tensor, m: float = 0.0, std: float = 1.0, **_: float) -> Tensor:
    return torch.sigmoid(m + std * n).clamp(s.t_train_min, s.t_max)


@TIME_DENSITIES.register("log_logistic", "BESO: log(sigma/alpha) logistic(loc, scale), clipped to the schedule")
def td_log_logistic(s: Schedule, u: Tensor, n: Tensor, loc: float = math.log(0.5), scale: float = 0.5,
                    **_: float) -> Tensor:
    log_sigma = loc + scale * (torch.log(u) - torch.log1p(-u))
    return s.t_of_lam(-log_sigma).clamp(s.t_train_min, s.t_max)


@TIME_DENSITIES.register("uniform_logsnr", "log-SNR uniform between the schedule's ends")
def td_uniform_logsnr(s: Schedule, u: Tensor, n: Tensor, **_: float) -> Tensor:
    hi = s.lam(torch.tensor(s.t_train_min, dtype=u.dtype, device=u.device))
    lo = torch.clamp(s.lam(torch.tensor(s.t_max, dtype=u.dtype, device=u.device)), min=-10.0)
    return s.t_of_lam(lo + (hi - lo) * u).clamp(s.t_train_min, s.t_max)


def sample_time(fields: Mapping[str, FieldSpec], noise: Noise, density: str = "uniform",
                **options: float) -> Tensor:
    """One time per sample (B,), float64, drawn from ``density`` in the time of the first
    Gaussian field (or uniformly in [0, 1] for states without Gaussian fields)."""
    u = noise.rand(())
    n = noise.randn((), torch.float64)
    ref = next((f.process.schedule for f in fields.values() if f.kind == "gaussian"), None)
    if ref is None:
        return u.clamp(1e-4, 1.0)
    return TIME_DENSITIES.get(density)(ref, u, n, **options)


def prediction_shape(spec: FieldSpec, x: Tensor) -> tuple[int, ...]:
    """The shape a network's prediction for a field of value ``x`` must have: ``x``'s own, plus
    a last axis of logits over the vocabulary for a categorical field."""
    return (*x.shape, spec.process.vocab) if spec.kind == "categorical" else tuple(x.shape)


def check_prediction_shape(key: str, spec: FieldSpec, pred: Tensor, x: Tensor) -> None:
    """Raise ValueError naming the field when a prediction has the wrong shape (a mismatch would
    otherwise broadcast silently or fail deep inside the loss)."""
    want = prediction_shape(spec, x)
    if tuple(pred.shape) != want:
        raise ValueError(f"the network's prediction for field {key!r} has shape {tuple(pred.shape)}; the field "
                         f"needs {want}" + (" (the field's value, then logits over the vocabulary)"
                                            if spec.kind == "categorical" else " (the field's own shape)"))


def gaussian_loss(pred: Tensor, x0: Tensor, eps: Tensor, x_t: Tensor, c: Coefs, spec: FieldSpec, state: State,
                  weighting: str = "prediction", **options: float) -> Tensor:
    """Per-sample loss (B,) of one Gaussian field, averaged over its free entries."""
    target = from_x0_eps(x0, eps, spec.prediction, c)
    if weighting == "prediction":
        w = 1.0
    else:
        w = WEIGHTINGS.get(weighting)(c, spec.prediction, **options) * x0_error_scale(spec.prediction, c) ** 2
    err = w * (pred - target) ** 2
    mask = spec.structure.weights(x0, state)
    return (err * mask).flatten(1).sum(1) / mask.flatten(1).sum(1).clamp_min(1)


def masked_elbo(logits: Tensor, x0: Tensor, x_t: Tensor, t: Tensor, process: Absorbing,
                mask: Tensor | None = None) -> Tensor:
    """MDLM's continuous-time ELBO for absorbing diffusion, per sample (B,), in nats/token.

    SUBS parametrisation: only masked positions contribute, each with weight
    ``-alpha'(t) / (1 - alpha(t))`` times ``-log p(x0)``.
    """
    logp = torch.log_softmax(logits.float(), dim=-1).gather(-1, x0[..., None]).squeeze(-1)
    tt = t.to(logp.dtype).reshape(-1, 1)
    w = -process.schedule.dalpha(tt) / (1 - process.schedule.alpha(tt)).clamp_min(1e-6)
    is_masked = (x_t == process.mask_id).to(logp.dtype)
    valid = torch.ones_like(logp) if mask is None else mask.to(logp.dtype)
    return (w * is_masked * -logp * valid).sum(1) / valid.sum(1).clamp_min(1)


def categorical_ce(logits: Tensor, x0: Tensor, mask: Tensor | None = None) -> Tensor:
    """Cross-entropy of the clean tokens, per sample (B,) (the uniform process's simple loss)."""
    nll = torch.nn.functional.cross_entropy(logits.float().transpose(1, -1), x0, reduction="none")
    valid = torch.ones_like(nll) if mask is None else mask.to(nll.dtype)
    return (nll * valid).sum(1) / valid.sum(1).clamp_min(1)


def corrupt(fields: Mapping[str, FieldSpec], batch: State, t: Tensor, noise: Noise) -> tuple[State, dict[str, Any]]:
    """Noise every field of ``batch`` to time ``t`` (B,); returns the noisy state and, per
    field, what its loss needs (eps for Gaussian fields, the prior draw for manifold ones)."""
    noisy: State = dict(batch)
    aux: dict[str, Any] = {}
    for k, f in fields.items():
        x0 = batch[k]
        p = f.process
        if f.kind == "gaussian":
            eps = f.structure.noise(noise.randn(x0.shape[1:], x0.dtype).to(x0.device), batch)
            c = p.coefs(t.to(x0.dtype).reshape(-1, *([1] * (x0.dim() - 1))))
            noisy[k] = c.alpha * x0 + c.sigma * eps
            aux[k] = (eps, c)
        elif f.kind == "categorical":
            u = noise.rand(x0.shape[1:]).to(x0.device)
            if isinstance(p, Absorbing):
                noisy[k] = p.q_sample(x0, t, u)
            else:
                noisy[k] = p.q_sample(x0, t, u, noise.rand(x0.shape[1:]).to(x0.device))
        else:
            shape = tuple(x0.shape)
            draw = noise.rand(shape[1:], x0.dtype) if p.prior_kind == "uniform" else noise.randn(shape[1:], x0.dtype)
            x1 = p.manifold.prior(shape, draw.to(x0.device))
            noisy[k] = p.interpolate(x0, x1, t.to(x0.dtype))
    return noisy, aux


def diffusion_loss(model: Callable[..., Mapping[str, Tensor]], fields: Mapping[str, FieldSpec], batch: State,
                   noise: Noise, *, cond: Any = None, weighting: str = "prediction", time_density: str = "uniform",
                   field_weights: Mapping[str, float] | None = None, terms: Mapping[str, float] | None = None,
                   manifold_weighting: str = "x0", t: Tensor | None = None,
                   **options: float) -> tuple[Tensor, dict[str, Tensor]]:
    """The loss of one batch: mean over samples of the (weighted) sum of per-field losses, plus
    the network's ``loss/<name>`` outputs weighted by ``terms`` (default 1).

    ``model(noisy_state, t[, cond]) -> {field: prediction}``. Manifold fields are scored by the
    squared geodesic distance of the predicted clean point, averaged over their present entries
    (their structure's mask), weighted ``"x0"`` (plainly) or ``"velocity"`` (by
    ``(kappa'(t) / kappa(t))^2``, clipped at 100: the error of the implied velocity, as flow
    matching on manifolds weights it). Returns the scalar loss and per-field / per-term mean
    losses for logging.
    """
    if manifold_weighting not in MANIFOLD_WEIGHTINGS:
        raise ValueError(f"manifold_weighting must be one of {', '.join(MANIFOLD_WEIGHTINGS)}, got "
                         f"{manifold_weighting!r}")
    dens_opts = {k: v for k, v in options.items() if k in ("p_mean", "p_std", "m", "std", "loc", "scale")}
    w_opts = {k: v for k, v in options.items() if k not in dens_opts}
    if t is None:
        t = sample_time(fields, noise, time_density, **dens_opts)
    t = t.to(next(iter(batch.values())).device)
    noisy, aux = corrupt(fields, batch, t, noise)
    tm = t.to(torch.float32)
    out = model(noisy, tm) if cond is None else model(noisy, tm, cond)
    logs: dict[str, Tensor] = {}
    total = torch.zeros((), device=t.device)
    for k, f in fields.items():
        if k not in out:
            raise KeyError(f"the network returned no prediction for field {k!r} (got {sorted(out)})")
        x0 = batch[k]
        check_prediction_shape(k, f, out[k], x0)
        if f.kind == "gaussian":
            eps, c = aux[k]
            per = gaussian_loss(out[k].to(x0.dtype), x0, eps, noisy[k], c, f, batch, weighting, **w_opts)
        elif f.kind == "categorical":
            mask = batch.get(getattr(f.structure, "mask", None) or "", None)
            per = masked_elbo(out[k], x0, noisy[k], t, f.process, mask) if isinstance(f.process, Absorbing) \
                else categorical_ce(out[k], x0, mask)
        else:
            per = geodesic_loss(out[k].to(x0.dtype), x0, t, f, batch, manifold_weighting)
        logs[k] = per.mean()
        total = total + (1.0 if field_weights is None else field_weights.get(k, 1.0)) * per.mean()
    for key, value in out.items():
        if key.startswith(TERM_PREFIX):
            name = key[len(TERM_PREFIX):]
            term = value.float().mean()
            logs[name] = term.detach()
            total = total + (1.0 if terms is None else terms.get(name, 1.0)) * term
    unknown = sorted(set(terms or ()) - {key[len(TERM_PREFIX):] for key in out if key.startswith(TERM_PREFIX)})
    if unknown:
        raise KeyError(f"loss.terms names {unknown}, but the network returned no such loss/<name> output "
                       f"(it returned {sorted(out)})")
    unknown = sorted(set(field_weights or ()) - set(fields))
    if unknown:  # a misspelt field would weigh nothing, silently
        raise KeyError(f"loss.field_weights names {unknown}, which are not fields of the state (fields: "
                       f"{', '.join(fields)})")
    return total, logs


def geodesic_loss(pred: Tensor, x0: Tensor, t: Tensor, spec: FieldSpec, state: State,
                  weighting: str = "x0") -> Tensor:
    """Per-sample squared geodesic distance between predicted and true clean points of a
    manifold field, averaged over its present points, optionally weighted by time. A point is
    an entry of the field, or for manifolds with a tangent shape (SO(3): tangent vectors (3,)
    for points (3, 3)) the group of entries one tangent vector describes, whose squared
    distance is summed over its tangent coordinates."""
    v = spec.process.manifold.log(x0, pred)
    tangent = spec.process.manifold.tangent_shape
    err = v**2 if tangent is None else (v**2).sum(tuple(range(-len(tangent), 0)))
    err = err.reshape(err.shape[0], -1) if err.dim() < 2 else err  # one point per sample: (B, 1)
    w = spec.structure.weights(err, state)
    per = (err * w).flatten(1).sum(1) / w.flatten(1).sum(1).clamp_min(1)
    if weighting == "velocity":
        tt = t.to(per.dtype)
        scale = spec.process.dkappa(tt) / spec.process.kappa(tt).clamp_min(1e-12)
        per = per * (scale**2).clamp(max=100.0)
    return per


@OBJECTIVES.register("denoising", "denoising score matching / flow matching / masked ELBO (diffusion_loss)")
def denoising() -> None:
    """The default objective: :func:`diffusion_loss` with the recipe's weighting, time density,
    field weights, loss terms and techniques. (The trainer runs it directly.)"""
    return None
