"""Guidance and conditioning: wrappers ``Model -> Model`` around the state-level model.

Every wrapper takes the state-level model ``model(state, t[, cond]) -> {field: prediction}``
(what :func:`polydiff.sample` builds internally; pass a wrapper as ``wrap_model=``) and
returns another one with the same signature, so guidance is independent of the sampler and
of the modality. Predictions stay in each field's own parametrisation: a wrapper converts
Gaussian predictions to ``(x0, eps)`` with the field's schedule, changes them, and converts
back.

- :func:`classifier_free`: classifier-free guidance (Ho & Salimans 2022) in one batched
  conditional / unconditional pass, scalar, per-field or time-dependent scale; or guidance
  between a conditional and a separate unconditional (or weaker) model. Manifold fields are
  guided in the tangent space at their current point.
- :func:`gradient_guidance`: the gradient of any differentiable log-potential (a classifier's
  log-probability, a regressor's Gaussian log-likelihood, a reward) on the clean estimate
  ``x0_hat`` (DPS, Chung et al. 2023) or on ``x_t`` (classifier guidance, Dhariwal & Nichol
  2021) added to the score; manifold fields named in ``keys`` move along the Riemannian
  gradient.
- :func:`token_guidance`: the same for masked categorical fields: a first-order estimate of
  the log-potential's change from unmasking each token tilts its logits.
- :func:`reconstruction_guidance`: gradient guidance toward observed entries of a state.
- :class:`Observation` and :class:`ObservedPath`: observed fields / entries (masks) and their
  forward-noised path (a geodesic path for manifold fields, e.g. fixed motif frames), for
  inpainting by replacement (RePaint, Lugmayr et al. 2022), see :func:`polydiff.steering.steer`.

Conditions are ordinary entries of the state (``state["label"]``); a dropped condition is
written with a sentinel, ``-1`` for integer labels and NaN for real values, which
:class:`polydiff.nn.ConditionEmbedding` maps to its learned null embedding.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .conditions import NULL_CLASS, drop_condition, make_condition, null_state, null_value, parse_condition
from .estimates import (
    Model,
    Wrapper,
    batch_of,
    call,
    compose,
    field_coefs,
    gaussian_names,
    state_dtype,
    tree_cat,
    tree_map,
    with_x0_eps,
    x0_eps,
)
from .files import read_npz
from .processes.gaussian import Coefs
from .random import Noise
from .state import FieldSpec, State

Scale = float | Tensor | Mapping[str, float] | Callable[[Tensor], Tensor]
LogPotential = Callable[[State, Tensor], Tensor]

# re-exported: condition helpers and estimates are part of the guidance API users know
__all__ = ["NULL_CLASS", "LogPotential", "Model", "Observation", "ObservedPath", "Scale", "Wrapper", "as_observation",
           "batch_of", "call", "classifier_free", "classifier_potential", "compose", "drop_condition", "field_coefs",
           "gaussian_names", "gradient_guidance", "guide", "index_mask", "interval", "load_observed", "log_normal",
           "make_condition", "null_state", "null_value", "operator_potential", "parse_condition",
           "reconstruction_guidance", "state_dtype", "token_guidance", "tree_cat", "tree_map", "with_x0_eps", "x0_eps"]


# --------------------------------------------------------------------------------------------
# scales
# --------------------------------------------------------------------------------------------
def _scale_at(scale: Scale, t: Tensor, key: str, default: float, like: Tensor) -> Tensor | float:
    """The guidance scale of field ``key`` at time ``t``, broadcast against ``like``."""
    if isinstance(scale, Mapping):
        scale = scale.get(key, default)
    if callable(scale):
        scale = scale(t)
    if isinstance(scale, Tensor) and scale.dim() > 0:
        return scale.to(like.dtype).reshape(-1, *([1] * (like.dim() - 1)))
    return scale


def interval(scale: float, t_lo: float, t_hi: float, outside: float = 1.0) -> Callable[[Tensor], Tensor]:
    """A time-dependent scale: ``scale`` for ``t_lo <= t <= t_hi``, ``outside`` elsewhere
    (guidance in a limited interval, Kynkäänniemi et al. 2024)."""

    def fn(t: Tensor) -> Tensor:
        inside = (t >= t_lo) & (t <= t_hi)
        return torch.where(inside, torch.full_like(t, scale), torch.full_like(t, outside))

    return fn


# --------------------------------------------------------------------------------------------
# classifier-free guidance
# --------------------------------------------------------------------------------------------
def guide(cond_out: Mapping[str, Tensor], uncond_out: Mapping[str, Tensor], fields: Mapping[str, FieldSpec],
          scale: Scale, t: Tensor, *, state: State | None = None) -> dict[str, Tensor]:
    """``uncond + w (cond - uncond)`` per field.

    Gaussian predictions are combined in their own parametrisation (every parametrisation is
    affine in ``(x0, eps)`` at fixed ``x_t``, so this equals guidance on eps, x0 or the score);
    categorical fields combine log-probabilities. Manifold fields are guided in the tangent
    space at their current point ``x_t = state[k]`` (so ``state`` is needed for them unless
    their scale is exactly 0 or 1):
    ``exp_{x_t}(v_u + w (v_c - v_u))`` with ``v = log_{x_t}(clean prediction)``. The geodesic
    step moves along ``log_{x_t}(x0_hat)`` by a fraction that depends on time only, so this is
    guidance on the geodesic velocity; ``w = 1`` gives the conditional prediction and ``w = 0``
    the unconditional one. Extra outputs come from ``cond_out``.
    """
    out = dict(cond_out)
    for k, f in fields.items():
        if k not in cond_out:
            continue
        c, u = cond_out[k], uncond_out[k]
        if f.kind == "manifold":
            out[k] = _tangent_guide(f.process.manifold, state, c, u, scale, t, k)
            continue
        if f.kind == "categorical":
            c, u = torch.log_softmax(c.float(), -1), torch.log_softmax(u.float(), -1)
        w = _scale_at(scale, t, k, 1.0, c)
        out[k] = u + w * (c - u)
    return out


def _tangent_guide(manifold: Any, state: State | None, c: Tensor, u: Tensor, scale: Scale, t: Tensor,
                   key: str) -> Tensor:
    """Classifier-free guidance of manifold field ``key`` in the tangent space at ``state[key]``."""
    fixed = scale.get(key, 1.0) if isinstance(scale, Mapping) else scale
    if isinstance(fixed, (int, float)) and fixed in (0, 1):
        return c if fixed == 1 else u  # the conditional / unconditional prediction exactly
    if state is None or key not in state:
        raise ValueError(f"guiding the manifold field {key!r} happens in the tangent space at its current point: "
                         "pass the state the predictions were made at, guide(..., state=state)")
    x = state[key]
    dt = x.dtype if x.is_floating_point() else c.dtype
    xx = x.to(dt)
    vc, vu = manifold.log(xx, c.to(dt)), manifold.log(xx, u.to(dt))
    w = _scale_at(scale, t, key, 1.0, vc)
    return manifold.exp(xx, vu + w * (vc - vu)).to(c.dtype)


def classifier_free(model: Model, fields: Mapping[str, FieldSpec], scale: Scale, *,
                    keys: Sequence[str] | None = None, null: Any = None, uncond_model: Model | None = None,
                    batched: bool = True) -> Model:
    """Classifier-free guidance: ``pred_u + scale * (pred_c - pred_u)``.

    The unconditional prediction comes from (in order of precedence):

    - ``uncond_model(state, t)``: a separate unconditional (or weaker, "autoguidance")
      model; scale 1 is the conditional model, 0 the other one, and values in between
      interpolate;
    - ``keys``: condition entries of the state, dropped with the null sentinel (-1 / NaN);
    - ``null``: the driver-level ``cond`` argument replaced by ``null`` (a value, or a
      callable ``cond -> null cond``).

    With ``batched`` the two passes are one call on a doubled batch. ``scale`` is a float, a
    ``{field: scale}`` dict (fields not named get 1, i.e. the conditional prediction) or a
    callable of the (B,) time such as :func:`interval`. Manifold fields are guided with the
    same scale in the tangent space at their current point (see :func:`guide`).
    """
    if uncond_model is None and keys is None and null is None:
        raise ValueError("classifier-free guidance needs condition keys (keys=), a null cond (null=) "
                         "or an unconditional model (uncond_model=)")

    def guided(state: State, t: Tensor, cond: Any = None, **kw: Any) -> dict[str, Tensor]:
        # kw: the target time s= of a two-time model, passed through (doubled with the batch)
        if uncond_model is not None:
            oc, ou = call(model, state, t, cond, **kw), uncond_model(state, t, **kw)
        else:
            if keys is not None:
                nstate, ncond = null_state(state, keys), cond
            else:
                nstate, ncond = state, (null(cond) if callable(null) else null)
            if batched:
                b = batch_of(state)
                tt = t.expand(b) if t.dim() == 0 else t
                both = call(model, tree_cat(state, nstate, b), torch.cat([tt, tt]),
                            None if cond is None else tree_cat(cond, ncond, b), **tree_cat(kw, kw, b))
                oc = {k: v[:b] if isinstance(v, Tensor) and v.dim() and v.shape[0] == 2 * b else v
                      for k, v in both.items()}
                ou = {k: v[b:] if isinstance(v, Tensor) and v.dim() and v.shape[0] == 2 * b else v
                      for k, v in both.items()}
            else:
                oc, ou = call(model, state, t, cond, **kw), call(model, nstate, t, ncond, **kw)
        return guide(oc, ou, fields, scale, t, state=state)

    return guided


# --------------------------------------------------------------------------------------------
# gradient guidance
# --------------------------------------------------------------------------------------------
def gradient_guidance(model: Model, fields: Mapping[str, FieldSpec], potential: LogPotential, *,
                      scale: Scale = 1.0, on: str = "x0", backprop: bool = True, data_std: float = 1.0,
                      keys: Sequence[str] | None = None) -> Model:
    """Add ``scale * grad_{x_t} log G`` to the score of the Gaussian fields (and move the clean
    estimates of the manifold fields named in ``keys`` along the Riemannian gradient).

    ``potential(state, t) -> (B,)`` is a differentiable log-potential: a classifier's
    ``log p(y | x)``, a regressor's Gaussian log-likelihood, ``beta * reward``. With
    ``on="x0"`` it sees the clean estimates (the other entries of the state unchanged) and the
    gradient flows back through the model to ``x_t`` (DPS; ``backprop=False`` skips the
    model's Jacobian and uses that of Gaussian data of std ``data_std``,
    ``d x0 / d x_t = alpha v / (alpha^2 v + sigma^2)`` with ``v = data_std^2``: cheaper, and
    ``1 / alpha`` at low noise). With
    ``on="xt"`` it sees the noisy state: a noise-aware classifier (Dhariwal & Nichol 2021); with
    the exact noisy classifier and scale 1 this samples the exact conditional.

    The score changes by ``scale * g``: ``eps -> eps - scale sigma g`` and
    ``x0 -> x0 + scale (sigma^2 / alpha) g``. ``scale`` may depend on time (a callable).

    ``keys`` picks the guided fields (default: every Gaussian field); it may name manifold
    fields, which are guided through their clean prediction ``x0_hat`` with the Riemannian
    gradient ``g = manifold.riemannian_grad(x, dlog G / dx)`` (the Euclidean gradient with
    respect to the point's embedding turned into a tangent vector at ``x``):

    - ``on="xt"``: ``g`` at ``x_t``, ``x0_hat -> exp_{x_t}(log_{x_t}(x0_hat) + scale g)``. The
      geodesic step from ``t`` to ``s`` moves by ``(1 - kappa(s) / kappa(t)) log_{x_t}(x0_hat)``,
      so the step's velocity gains ``scale g`` in the same proportion as its pull to the data;
    - ``on="x0"``: ``g`` at the clean estimate (the potential sees ``x0_hat``; no gradient
      through the model for these fields), ``x0_hat -> exp_{x0_hat}(scale g)``: a Riemannian
      gradient-ascent step of length ``scale |g|`` on the clean estimate, which the sampler then
      heads for.

    Both are heuristics in the spirit of DPS / classifier guidance (the manifold analogue of the
    exact Gaussian identity does not hold): ``scale`` is a step size in tangent units.
    """
    if on not in ("x0", "xt"):
        raise ValueError(f"on must be 'x0' or 'xt', got {on!r}")
    names, mnames = _guided_names(fields, keys)

    def guided(state: State, t: Tensor, cond: Any = None, **kw: Any) -> dict[str, Tensor]:
        with torch.enable_grad():
            xs = {k: state[k].detach().requires_grad_(True) for k in names}
            st = {**state, **xs}
            if on == "xt":
                zm = {k: state[k].detach().requires_grad_(True) for k in mnames}
                val = potential({**st, **zm}, t)
                grads = torch.autograd.grad(val.sum(), [xs[k] for k in names] + [zm[k] for k in mnames],
                                            allow_unused=True)
                with torch.no_grad():
                    out = call(model, state, t, cond, **kw)
            elif backprop:
                out = call(model, st, t, cond, **kw)
                est = x0_eps(out, st, t, fields, names)
                zm = _clean_leaves(out, state, mnames)
                val = potential({**st, **{k: est[k][0] for k in names}, **zm}, t)
                grads = torch.autograd.grad(val.sum(), [xs[k] for k in names] + [zm[k] for k in mnames],
                                            allow_unused=True)
                out = {k: v.detach() if isinstance(v, Tensor) else v for k, v in out.items()}
            else:
                with torch.no_grad():
                    out = call(model, state, t, cond, **kw)
                est = x0_eps(out, state, t, fields, names)
                z = {k: est[k][0].detach().requires_grad_(True) for k in names}
                zm = _clean_leaves(out, state, mnames)
                val = potential({**state, **z, **zm}, t)
                grads = torch.autograd.grad(val.sum(), [z[k] for k in names] + [zm[k] for k in mnames],
                                            allow_unused=True)
                grads = [g * _tweedie_jacobian(field_coefs(fields[k], t, state[k]), data_std) if g is not None
                         else None for k, g in zip(names, grads)] + list(grads[len(names):])
        est = x0_eps(out, state, t, fields, names)
        new = {}
        for k, g in zip(names, grads):
            if g is None:
                continue
            d, e = est[k]
            c = field_coefs(fields[k], t, state[k])
            w = _scale_at(scale, t, k, 0.0, d)
            g = g.detach().to(d.dtype)
            # w sigma^2 / alpha, taken as 0 where the scale is 0 (a scale that vanishes with
            # alpha, e.g. scale * alpha_t, stays finite at the noise end of a flow)
            wt = torch.as_tensor(w, dtype=d.dtype, device=d.device)
            push = torch.where(wt == 0, torch.zeros((), dtype=d.dtype, device=d.device), wt * c.sigma**2 / c.alpha)
            new[k] = (d + push * g, e - w * c.sigma * g)
        res = with_x0_eps(out, state, t, fields, new)
        for k, g in zip(mnames, grads[len(names):]):
            if g is not None:
                res[k] = _riemannian_push(fields[k].process.manifold, state[k], out[k], g.detach(), scale, t, k, on)
        return res

    return guided


def token_guidance(model: Model, fields: Mapping[str, FieldSpec], potential: LogPotential, *,
                   keys: Sequence[str], scale: Scale = 1.0) -> Model:
    """Guide masked (absorbing) categorical fields by a differentiable log-potential, which
    :func:`gradient_guidance` cannot move (their states are discrete).

    ``potential(state, t) -> (B,)`` sees every field in ``keys`` as a float one-hot
    ``(..., vocab + 1)`` (the last column is the mask token), so it can be differentiated in
    the tokens. With ``g`` its gradient there, the logits of every still-masked token gain
    ``scale * (g_v - g_mask)``: the first-order (Taylor) estimate of how much unmasking the
    token as class ``v`` changes ``log G`` (the discrete analogue of classifier guidance, as
    in DiGress's regressor guidance, Vignac et al. 2023, and TAG, Nisonoff et al. 2025). With
    ``scale = 1`` the predicted clean-token distribution is tilted by the estimated likelihood
    ratio; tokens already unmasked are left alone (an absorbing process never changes them).
    ``scale`` may be per field or depend on time, as for :func:`gradient_guidance`; compose the
    two wrappers (:func:`compose`) to guide positions and tokens together."""
    from .processes.categorical import Absorbing

    keys = list(keys)
    bad = [k for k in keys if k not in fields or not isinstance(fields[k].process, Absorbing)]
    if bad or not keys:
        absorbing = [k for k, f in fields.items() if isinstance(f.process, Absorbing)]
        raise ValueError(f"token guidance needs masked (absorbing) categorical fields in keys; got {keys}, "
                         f"the absorbing fields are {absorbing}")

    def guided(state: State, t: Tensor, cond: Any = None, **kw: Any) -> dict[str, Tensor]:
        out = dict(call(model, state, t, cond, **kw))
        dtype = state_dtype(state)
        with torch.enable_grad():
            hot = {}
            for k in keys:
                proc = fields[k].process
                tok = state[k].long().clamp(0, proc.mask_id)
                hot[k] = torch.nn.functional.one_hot(tok, proc.vocab + 1).to(dtype).requires_grad_(True)
            val = potential({**state, **hot}, t)
            grads = torch.autograd.grad(val.sum(), [hot[k] for k in keys], allow_unused=True)
        for k, g in zip(keys, grads):
            if g is None:
                continue
            if k not in out:
                raise KeyError(f"the model returned no prediction for field {k!r} (got {sorted(out)})")
            proc, logits = fields[k].process, out[k]
            gain = (g[..., :proc.vocab] - g[..., proc.mask_id:proc.mask_id + 1]).detach().to(logits.dtype)
            masked = (state[k] == proc.mask_id)[..., None]
            w = _scale_at(scale, t, k, 0.0, logits)
            out[k] = logits + torch.where(masked, w * gain, torch.zeros((), dtype=logits.dtype, device=logits.device))
        return out

    return guided


def _guided_names(fields: Mapping[str, FieldSpec], keys: Sequence[str] | None) -> tuple[list[str], list[str]]:
    """The Gaussian and the manifold fields gradient guidance acts on (by default every
    Gaussian field and no manifold field)."""
    if keys is None:
        names, mnames = gaussian_names(fields), []
    else:
        ok = [k for k, f in fields.items() if f.kind in ("gaussian", "manifold")]
        bad = [k for k in keys if k not in ok]
        if bad:
            raise KeyError(f"{bad} are not Gaussian or manifold fields; those fields: {ok}")
        names = [k for k in keys if fields[k].kind == "gaussian"]
        mnames = [k for k in keys if fields[k].kind == "manifold"]
    if not names and not mnames:
        raise ValueError("gradient guidance has no field to guide: the state has no Gaussian field (name manifold "
                         "fields in keys=)")
    return names, mnames


def _clean_leaves(out: Mapping[str, Tensor], state: State, names: Sequence[str]) -> dict[str, Tensor]:
    """The manifold fields' clean predictions as leaves to differentiate the potential at."""
    for k in names:
        if k not in out:
            raise KeyError(f"the model returned no prediction for field {k!r} (got {sorted(out)})")
    return {k: out[k].detach().to(state[k].dtype).requires_grad_(True) for k in names}


def _riemannian_push(manifold: Any, x: Tensor, x0: Tensor, grad: Tensor, scale: Scale, t: Tensor, key: str,
                     on: str) -> Tensor:
    """A manifold field's clean estimate moved along the Riemannian gradient (see
    :func:`gradient_guidance`)."""
    d = x0.to(x.dtype)
    at = x if on == "xt" else d
    g = manifold.riemannian_grad(at, grad.to(x.dtype))
    w = _scale_at(scale, t, key, 0.0, g)
    moved = manifold.exp(x, manifold.log(x, d) + w * g) if on == "xt" else manifold.exp(d, w * g)
    return moved.to(x0.dtype)


def _tweedie_jacobian(c: Coefs, data_std: float) -> Tensor:
    """``d E[x0 | x_t] / d x_t`` for Gaussian data of std ``data_std`` (a scalar per entry)."""
    v = data_std**2
    return c.alpha * v / (c.alpha**2 * v + c.sigma**2)


def classifier_potential(log_prob: Callable[[State, Tensor], Tensor], target: Tensor | int) -> LogPotential:
    """``log p(target | x)`` from a classifier ``log_prob(state, t) -> (B, C)`` log-probabilities."""

    def pot(state: State, t: Tensor) -> Tensor:
        lp = log_prob(state, t)
        idx = torch.as_tensor(target, device=lp.device).long().expand(lp.shape[0])
        return lp.gather(1, idx[:, None])[:, 0]

    return pot


def operator_potential(operator: Callable[[State], Tensor], y: Tensor, std: float | Tensor = 1.0) -> LogPotential:
    """``log N(y; A(x), std^2)`` for a differentiable observation operator ``A(state)``
    (e.g. a sum of tracks, a subsampling, a property predictor); use with
    :func:`gradient_guidance` for reconstruction guidance under any operator."""

    def pot(state: State, t: Tensor) -> Tensor:
        r = (y.to(state_dtype(state)) - operator(state)) / std
        return -0.5 * r.flatten(1).pow(2).sum(1)

    return pot


# --------------------------------------------------------------------------------------------
# observations: fixed fields and fixed entries
# --------------------------------------------------------------------------------------------
@dataclass
class Observation:
    """Observed (clean) values of some fields of a state, with masks of the observed entries.

    ``values[k]`` has the field's shape with or without the batch dimension (or a batch of
    one); ``masks[k]`` (bool, True = observed) broadcasts against it; a missing mask means the
    whole field is given. Build masks with :func:`index_mask`, e.g. "the first 100 time steps"
    is ``index_mask(shape, 1, slice(0, 100))`` and "tracks 1 and 4" ``index_mask(shape, 0, [1, 4])``.
    For a manifold field a mask selects whole points (see :meth:`expand_points`): ``(N,)`` for
    the rotations of a ``(B, N, 3, 3)`` field. ``meta``: plain facts a reader of the samples
    needs (e.g. the scale a plugin applied to observed values), written by ``polydiff sample
    --observed`` into the samples' metadata as ``observed_meta``.
    """

    values: dict[str, Tensor]
    masks: dict[str, Tensor] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def expand(self, name: str, like: Tensor, repeat: int = 1) -> tuple[Tensor, Tensor]:
        """``(values, mask)`` of field ``name`` broadcast to ``like`` (B, ...); per-sample rows are
        repeated ``repeat`` times when ``like`` holds ``repeat`` particles per sample."""
        v = self.values[name].to(like.device)
        v = v.to(like.dtype)
        if v.dim() == like.dim() - 1:
            v = v[None]
        m = self.masks.get(name)
        m = torch.ones((), dtype=torch.bool, device=like.device) if m is None else m.to(like.device).bool()
        if m.dim() == like.dim() - 1:
            m = m[None]
        return _broadcast(name, v, m, like, repeat)

    def expand_points(self, name: str, like: Tensor, manifold: Any, repeat: int = 1) -> tuple[Tensor, Tensor]:
        """:meth:`expand` for a manifold field, whose entries are whole points (a rotation is one
        entry of a (B, N, 3, 3) field): the mask has the entries' shape, with or without the batch
        dimension ((N,) or (B, N) there), or the points' full shape if it is constant over each
        point. Returns ``(values, mask)`` broadcast to ``like``."""
        v = self.values[name].to(device=like.device, dtype=like.dtype)
        if v.dim() == like.dim() - 1:
            v = v[None]
        ne = _entry_ndim(manifold, like)  # leading dims of `like` that index points, batch included
        m = self.masks.get(name)
        m = torch.ones((), dtype=torch.bool, device=like.device) if m is None else m.to(like.device).bool()
        if m.dim() > ne:  # a mask of the points' shape: one value per point
            if m.dim() == like.dim() - 1:
                m = m[None]
            try:
                full = m.expand(*m.shape[:1], *like.shape[1:]).flatten(ne)
            except RuntimeError as err:
                raise ValueError(f"observed field {name!r}: mask {tuple(m.shape)} does not broadcast against the "
                                 f"field's shape {tuple(like.shape)}") from err
            if not torch.equal(full.all(-1), full.any(-1)):
                raise ValueError(f"observed manifold field {name!r}: the mask must observe whole points (each point "
                                 "of the field is one entry), not some of a point's coordinates")
            m = full.all(-1)
        elif m.dim() == ne - 1:
            m = m[None]
        m = m.reshape(*m.shape, *([1] * (like.dim() - m.dim())))
        return _broadcast(name, v, m, like, repeat)


def _broadcast(name: str, v: Tensor, m: Tensor, like: Tensor, repeat: int) -> tuple[Tensor, Tensor]:
    """Observed values and mask of field ``name`` broadcast to ``like`` (B, ...), per-sample rows
    repeated ``repeat`` times for particles."""
    if repeat > 1:
        v, m = (u.repeat_interleave(repeat, 0) if u.dim() and u.shape[0] * repeat == like.shape[0] else u
                for u in (v, m))
    try:
        return v.expand_as(like), m.expand_as(like)
    except RuntimeError as err:
        raise ValueError(f"observed field {name!r}: values {tuple(v.shape)} / mask {tuple(m.shape)} do not "
                         f"broadcast against the field's shape {tuple(like.shape)}") from err


def _entry_ndim(manifold: Any, like: Tensor) -> int:
    """How many leading dimensions of a manifold field's tensor index its points (batch
    included): all of them when tangent vectors have the points' shape (a torus is a product of
    circles), else those its tangent vectors keep (``(B, N, 3, 3)`` rotations: 2)."""
    if manifold.tangent_shape is None:
        return like.dim()
    probe = manifold.log(like[:1], like[:1])
    return probe.dim() - len(manifold.tangent_shape)


def as_observation(observed: Observation | Mapping[str, Any] | str | Path) -> Observation:
    """Normalise ``{field: values}``, ``{field: (values, mask)}``, an :class:`Observation` or a
    file (see :func:`load_observed`)."""
    if isinstance(observed, Observation):
        return checked_observation(observed)
    if isinstance(observed, (str, Path)):
        return load_observed(observed)
    values, masks = {}, {}
    for k, v in observed.items():
        if isinstance(v, (tuple, list)):
            values[k], masks[k] = torch.as_tensor(v[0]), torch.as_tensor(v[1]).bool()
        else:
            values[k] = torch.as_tensor(v)
    return checked_observation(Observation(values, masks))


def checked_observation(obs: Observation, where: str = "") -> Observation:
    """``obs`` ready to sample with: a field without a mask gets one where its values are NaN
    (NaN = not observed, as in a time series' gaps); unobserved non-finite values are set to 0,
    which nothing reads but which would turn ``mask * (values - x)`` into NaN. A non-finite
    *observed* value (an infinity, or NaN under a True mask) is a ValueError (``where``
    prefixes it: the file), since every sample would come out NaN."""
    values, masks = dict(obs.values), dict(obs.masks)
    for k, v in obs.values.items():
        if not v.is_floating_point():
            continue
        finite = torch.isfinite(v)
        if bool(finite.all()):
            continue
        if k not in masks:
            masks[k] = ~torch.isnan(v)
        try:
            f, observed = torch.broadcast_tensors(finite, masks[k].bool())
        except RuntimeError:  # a manifold field's point mask: Observation.expand_points sorts it out
            continue
        bad = observed & ~f
        if bool(bad.any()):
            first = tuple(bad.nonzero()[0].tolist())
            raise ValueError(f"{where}observed values of {k!r} are not finite at {int(bad.sum())} observed "
                             f"entr{'y' if int(bad.sum()) == 1 else 'ies'} (the first at index {first}); NaN may stand "
                             "only where the mask is False")
        if f.shape == v.shape:
            values[k] = torch.where(finite, v, torch.zeros((), dtype=v.dtype))
    return Observation(values, masks, dict(obs.meta))


def index_mask(shape: Sequence[int], dim: int, index: int | slice | Sequence[int] | Tensor) -> Tensor:
    """A bool mask of ``shape`` that is True at ``index`` along ``dim`` (an observation operator
    "these steps / tracks / residues are known")."""
    m = torch.zeros(tuple(shape), dtype=torch.bool)
    sl: list[Any] = [slice(None)] * len(shape)
    sl[dim] = torch.as_tensor(index) if isinstance(index, (list, tuple)) else index
    m[tuple(sl)] = True
    return m


def load_observed(path: str | Path) -> Observation:
    """Read observations from a ``.pt`` (a dict of tensors) or ``.npz`` file: entry ``k`` holds
    the values of field ``k`` and ``k_mask`` (or ``k.mask``) its mask (True = observed); without
    a mask, NaN values are the unobserved entries (see :func:`checked_observation`)."""
    path = Path(path)
    if path.suffix == ".npz":
        raw: Any = read_npz(path)
    elif path.suffix in (".pt", ".pth"):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file")
        try:
            raw = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # pickle / zip / tensor errors of a damaged or foreign file
            raise ValueError(f"{path}: not a readable .pt file of tensors ({type(err).__name__}: "
                             f"{str(err).splitlines()[0] if str(err) else ''})") from None
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: expected a dict of tensors (field -> values), got a {type(raw).__name__}")
    else:
        raise ValueError(f"{path}: observations are read from .pt or .npz files")
    tensors = {}
    for k, v in raw.items():
        if not isinstance(k, str):
            raise ValueError(f"{path}: entry {k!r}: keys name fields (strings)")
        if isinstance(v, np.ndarray) and v.dtype.byteorder == (">" if sys.byteorder == "little" else "<"):
            v = v.astype(v.dtype.newbyteorder("="))  # big-endian arrays are legal .npz
        try:
            tensors[k] = torch.as_tensor(v)
        except (TypeError, ValueError, RuntimeError) as err:
            kind = f"{v.dtype} values" if isinstance(v, np.ndarray) else f"a {type(v).__name__}"
            raise ValueError(f"{path}: entry {k!r} holds {kind}, not an array of numbers ({err})") from None
    values = {k: v for k, v in tensors.items() if not (k.endswith("_mask") or k.endswith(".mask"))}
    masks = {}
    for k, v in tensors.items():
        for suf in ("_mask", ".mask"):
            if k.endswith(suf):
                base = k[: -len(suf)]
                if base not in values:
                    raise KeyError(f"{path}: mask {k!r} has no values entry {base!r}")
                masks[base] = v.bool()
    return checked_observation(Observation(values, masks), f"{path}: ")


class ObservedPath:
    """The observed values of the Gaussian and manifold fields along one path of the forward
    process, drawn from the noise end back to the data end, plus clean observed tokens.

    Gaussian fields: :meth:`start` draws ``y_t ~ N(alpha_t y, sigma_t^2)`` at the grid's first
    time; :meth:`advance` draws the next point from the forward process's bridge
    ``q(y_s | y_t, y)`` (the DDPM posterior), so the sequence is an exact forward path whatever
    the grid. Manifold fields (observed entries are whole points, e.g. motif residues' frames):
    :meth:`start` draws one prior point ``x1`` per observed entry and the path is the geodesic
    interpolant ``y_t = exp_y(kappa(t) log_y(x1))`` of the field's flow, the same path training
    noises data along, ending at the clean value ``y``. One path is shared by the ``repeat``
    consecutive particles of each sample (``noise`` has one stream per sample). :meth:`apply`
    writes it into a state (replacement, as in RePaint and SMCDiff).
    """

    def __init__(self, obs: Observation, fields: Mapping[str, FieldSpec], state: State, noise: Noise,
                 repeat: int = 1) -> None:
        self.fields, self.noise, self.repeat = fields, noise, repeat
        unknown = [k for k in obs.values if k not in fields]
        if unknown:
            raise KeyError(f"observed {unknown} are not fields of the state; fields: {sorted(fields)}")
        self.obs = {k: obs.expand_points(k, state[k], fields[k].process.manifold, repeat)
                    if fields[k].kind == "manifold" else obs.expand(k, state[k], repeat) for k in obs.values}
        self.gauss = [k for k in self.obs if fields[k].kind == "gaussian"]
        self.manifold = [k for k in self.obs if fields[k].kind == "manifold"]
        self.x1: dict[str, Tensor] = {}
        self.y: dict[str, Tensor] = {}

    def _z(self, k: str, state: State) -> Tensor:
        shape = self.obs[k][0].shape[1:]
        z = self.noise.randn(shape, self.obs[k][0].dtype).to(self.obs[k][0].device)
        z = z.repeat_interleave(self.repeat, 0) if self.repeat > 1 else z
        return self.fields[k].structure.noise(z, state)

    def _prior(self, k: str) -> Tensor:
        """One prior point per observed entry of manifold field ``k`` (shared by the particles)."""
        v = self.obs[k][0]
        p = self.fields[k].process
        shape = tuple(v.shape)
        u = self.noise.rand(shape[1:], v.dtype) if p.prior_kind == "uniform" else self.noise.randn(shape[1:], v.dtype)
        u = u.to(v.device)
        u = u.repeat_interleave(self.repeat, 0) if self.repeat > 1 else u
        return p.manifold.project(p.manifold.prior(shape, u))

    def _geodesic(self, k: str, t: Tensor) -> Tensor:
        """The observed points of manifold field ``k`` at time ``t`` on their geodesic path."""
        v = self.obs[k][0]
        return self.fields[k].process.interpolate(v, self.x1[k], t.to(v.dtype))

    def start(self, ts: Tensor, state: State) -> None:
        """Draw the path's first point, at the grid's first time ``ts[0]``."""
        self.ts, self.history = ts, {0: {}}
        for k in self.gauss:
            v = self.obs[k][0]
            c = field_coefs(self.fields[k], ts[0], v)
            self.history[0][k] = c.alpha * v + c.sigma * self._z(k, state)
        for k in self.manifold:
            self.x1[k] = self._prior(k)
            self.history[0][k] = self._geodesic(k, ts[0])
        self.y = self.history[0]

    def advance(self, i: int, state: State, keep: int = 1) -> None:
        """Move to ``ts[i + 1]``: reuse the point drawn there before (RePaint's passes go over
        the same path), else draw it from the bridge; points more than ``keep`` steps behind
        are forgotten."""
        if i + 1 not in self.history:
            t, s, new = self.ts[i], self.ts[i + 1], {}
            for k in self.gauss:
                v = self.obs[k][0]
                ct, cs = field_coefs(self.fields[k], t, v), field_coefs(self.fields[k], s, v)
                eps = (self.history[i][k] - ct.alpha * v) / ct.sigma
                c2 = -torch.expm1(-2 * (cs.lam - ct.lam))  # posterior variance / sigma_s^2
                new[k] = cs.alpha * v + cs.sigma * (torch.sqrt(1 - c2) * eps + torch.sqrt(c2) * self._z(k, state))
            for k in self.manifold:
                new[k] = self._geodesic(k, s)
            self.history[i + 1] = new
            for j in [j for j in self.history if j < i + 1 - keep]:
                del self.history[j]
        self.y = self.history[i + 1]

    def apply(self, state: State, clean: bool = False) -> State:
        """``state`` with the observed entries replaced (clean values when ``clean``)."""
        out = dict(state)
        for k, (v, m) in self.obs.items():
            src = v if clean or (k not in self.gauss and k not in self.manifold) else self.y[k]
            out[k] = torch.where(m, src.to(state[k].dtype), state[k])
        return out

    def check_weights(self) -> None:
        """Raise unless observation weights (SMCDiff) can be computed: they are the Gaussian
        transition densities of observed Gaussian entries, so an observation of manifold fields
        alone has none."""
        if not self.gauss and self.manifold:
            raise ValueError(f"observation weights (SMCDiff) are Gaussian transition densities of observed Gaussian "
                             f"entries; this observation only has manifold fields ({', '.join(self.manifold)}): use "
                             "replacement without weights (inpaint='replace', observation_weights=False)")

    def packed(self, packer: Any, like: Tensor) -> tuple[Tensor, Tensor]:
        """The current noisy observed values and the observed-entry mask, packed like the
        Gaussian state ``like`` (B, D) (zeros elsewhere); manifold fields are not covered (see
        :meth:`check_weights`)."""
        self.check_weights()
        ys, ms = {}, {}
        for k in packer.names:
            if k in self.gauss:
                ys[k], ms[k] = self.y[k].to(like.dtype), self.obs[k][1].to(like.dtype)
            else:
                z = like.new_zeros((like.shape[0], *packer.shapes[k]))
                ys[k], ms[k] = z, z
        return packer.pack(ys), packer.pack(ms)


def reconstruction_guidance(model: Model, fields: Mapping[str, FieldSpec],
                            observed: Observation | Mapping[str, Any], *, scale: Scale = 1.0, std: float = 0.0,
                            data_std: float = 1.0, backprop: bool = True) -> Model:
    """Guidance toward observed entries of Gaussian fields: the gradient of
    ``log N(y; mask * x0_hat, r_t^2)`` with ``r_t^2 = std^2 + data_std^2 sigma^2 / (alpha^2 data_std^2 +
    sigma^2)`` (the variance of ``x0 | x_t`` for Gaussian data, as in PiGDM, Song et al. 2023).
    Approximate by nature: use replacement with SMC (:func:`polydiff.steering.steer`) where the
    exact conditional matters."""
    obs = as_observation(observed)
    names = [k for k in obs.values if fields[k].kind == "gaussian"]
    if not names:
        raise ValueError("reconstruction guidance needs at least one observed Gaussian field")

    def pot(state: State, t: Tensor) -> Tensor:
        total = 0
        for k in names:
            x = state[k]
            v, m = obs.expand(k, x)
            c = field_coefs(fields[k], t, x)
            r2 = std**2 + data_std**2 * c.sigma**2 / (c.alpha**2 * data_std**2 + c.sigma**2)
            total = total - 0.5 * (m * (v - x) ** 2 / r2).flatten(1).sum(1)
        return total

    return gradient_guidance(model, fields, pot, scale=scale, on="x0", backprop=backprop, data_std=data_std,
                             keys=names)


def log_normal(x: Tensor, mean: Tensor, std: Tensor, mask: Tensor) -> Tensor:
    """Per-sample ``sum mask * log N(x; mean, std^2)`` over (B, D) tensors (entries with
    ``std = 0`` or ``mask = 0`` count zero)."""
    ok = (mask > 0) & (std > 0)
    s = torch.where(ok, std, torch.ones_like(std))
    lp = -0.5 * ((x - mean) / s) ** 2 - torch.log(s) - 0.5 * math.log(2 * math.pi)
    return torch.where(ok, lp, torch.zeros_like(lp)).sum(1)
