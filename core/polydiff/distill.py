"""Distillation into two-time models: consistency trajectory models (Kim et al. 2024, "Consistency
trajectory models: learning probability flow ODE trajectory of diffusion", ICLR).

A two-time model ``G(x_t, t, s)`` maps a state at time ``t`` to time ``s <= t`` along a teacher's
probability-flow ODE: ``G(x_T, T, t_end)`` is one-step generation, a chain of jumps is deterministic
multi-step sampling and the ``ctm`` sampler adds CTM's gamma-sampling (:mod:`polydiff.samplers.ctm`).

Parametrisation (the one the sampling loop's ``ctx.jump`` assumes): the network is called
``net(state, t[, cond], s=s)`` and returns, per Gaussian field, the field's own prediction (eps, x0,
v, ...) *at time t*, which is converted to ``(x0, eps)`` with the schedule at ``t`` and moved to
``s`` by the DDIM formula ``G = alpha_s x0 + sigma_s eps``. So ``G(x, t, t) = x`` for every
network, and with ``s = t`` the network is an ordinary denoiser (CTM's ``G = (s/t) x + (1 - s/t) g``
for EDM is this formula with ``alpha = 1``, ``sigma = t``).

The objective ``ctm`` (:func:`ctm_loss`, registered in :data:`polydiff.losses.OBJECTIVES`) draws
``t > s >= t_end`` and ``u`` in ``[s, t)`` per sample from the training noise stream, solves the
frozen teacher's ODE from ``x_t`` to ``u`` with a few steps of a deterministic core sampler on
per-sample grids, and regresses ``G_theta(x_t, t, s)`` onto ``G_sg(x_u, u, s)`` (``u = s``, the
default, is direct regression onto the teacher's ODE solution), both mapped to the data end with
the stop-gradient student ``G_sg(., s, t_end)`` (CTM's soft consistency) unless ``compare="s"``,
under a pluggable distance (a callable or a name in :data:`DISTANCES`: ``l2`` by default,
``l1``, ``pseudo_huber``; plugins register e.g. a distance in a teacher's feature space), plus
``dsm_weight`` times the student's own denoising loss at ``s = t``. Gaussian fields only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .estimates import call, field_coefs
from .grids import LAM_LOW  # per-sample teacher grids start no lower in log-SNR, as the core's grids
from .losses import OBJECTIVES, corrupt, gaussian_loss, sample_time
from .nn import ConditionEmbedding, ResidualMLP, TimeEmbedding, input_scale, precondition, time_input
from .parametrization import from_x0_eps, to_x0_eps
from .random import Noise
from .registry import Registry
from .samplers.base import get_sampler
from .samplers.coefs import LAM_CLIP
from .samplers.driver import sample
from .state import FieldSpec, State

Model = Callable[..., Any]
DISTANCES: Registry = Registry("distillation distance")
COMPARE = ("data", "s")
LAM_SAFE = 9.0  # the teacher stops at sigma/alpha = e^-9 where the data end has sigma = 0, then finishes by DDIM


# ---------------------------------------------------------------------------------------------
# two-time models
# ---------------------------------------------------------------------------------------------

class TwoTime(nn.Module):
    """An ordinary denoiser as a two-time model that ignores ``s``: ``G(x, t, s)`` is then one DDIM
    step of the denoiser (tests, teachers, and the ``ctm`` sampler on a one-time network)."""

    def __init__(self, model: Model) -> None:
        super().__init__()
        self.model = model

    def forward(self, *args: Any, s: Tensor | None = None, **kwargs: Any) -> Any:
        return self.model(*args, **kwargs)


class TwoTimeMLP(nn.Module):
    """``G(x_t, t, s)`` for a vector field (B, D): ``forward(state, t, cond=None, s=None) -> {field:
    prediction at t}`` (``s = None``: ``s = t``, the ordinary denoiser).

    Like :class:`polydiff.toy.ToyMLP` (EDM input scaling ``c_in(t)``, log-SNR time inputs, EDM's
    skip / output scaling at ``t``), with a second time embedding for ``s`` added to that of ``t``.
    The preconditioning makes the clean estimate ``c_skip(t) x + c_out(t) F`` well behaved at both
    ends, and the DDIM jump makes ``G(x, t, t) = x`` whatever ``F`` is.
    """

    def __init__(self, dim: int, fields: Mapping[str, FieldSpec], sigma_data: float = 1.0, hidden: int = 128,
                 depth: int = 3, emb_dim: int = 64, time_embedding: str = "sinusoidal",
                 conditions: Mapping[str, Any] | None = None, field: str = "x") -> None:
        super().__init__()
        if field not in fields or fields[field].kind != "gaussian":
            raise ValueError(f"TwoTimeMLP needs a Gaussian field {field!r}; got fields {sorted(fields)}")
        self.field, self.process, self.prediction = field, fields[field].process, fields[field].prediction
        self.sigma_data = sigma_data
        self.time = TimeEmbedding(emb_dim, time_embedding)
        self.target = TimeEmbedding(emb_dim, time_embedding)
        self.cond = ConditionEmbedding(conditions, emb_dim) if conditions else None
        self.mlp = ResidualMLP(dim, dim, hidden, depth, emb_dim)

    def forward(self, state: Mapping[str, Tensor], t: Tensor, cond: Any = None,
                s: Tensor | None = None) -> dict[str, Tensor]:
        x = state[self.field]
        b = x.shape[0]
        tt = t.reshape(-1).expand(b).to(torch.float64)
        ss = tt if s is None else s.reshape(-1).expand(b).to(torch.float64)
        c = self.process.coefs(tt[:, None])
        sched = self.process.schedule
        emb = self.time(time_input(sched, tt)) + self.target(time_input(sched, ss))
        if self.cond is not None:
            emb = emb + self.cond(state, b)
        out = self.mlp(x * input_scale(c.alpha, c.sigma, self.sigma_data).to(x.dtype), emb)
        x0, eps = precondition(out.double(), x.double(), c.alpha, c.sigma, self.sigma_data)
        return {self.field: from_x0_eps(x0, eps, self.prediction, c).to(x.dtype)}


def _col(t: Tensor, like: Tensor) -> Tensor:
    """A (B,) time shaped to broadcast against a field (B, ...)."""
    return t.reshape(-1, *([1] * (like.dim() - 1)))


def gaussian_only(fields: Mapping[str, FieldSpec], what: str = "distillation") -> None:
    """Raise a clear error for fields that are not Gaussian (two-time models here are Gaussian only)."""
    other = [f"{k} ({f.kind})" for k, f in fields.items() if f.kind != "gaussian"]
    if other:
        raise ValueError(f"{what} supports Gaussian fields only; this state also has {', '.join(other)}")


def estimates(model: Model, fields: Mapping[str, FieldSpec], state: State, t: Tensor, s: Tensor | None = None, *,
              cond: Any = None) -> dict[str, tuple[Tensor, Tensor]]:
    """``(x0, eps)`` per Gaussian field from one call of ``model`` at (B,) times ``t`` (and target
    times ``s`` for a two-time model; None: an ordinary call), converted with the schedule at ``t``
    and projected onto each field's structure."""
    kw = {} if s is None else {"s": s.to(torch.float32)}
    out = call(model, state, t.to(torch.float32), cond, **kw)
    res = {}
    for k, f in fields.items():
        if k not in out:
            raise KeyError(f"the model returned no prediction for field {k!r} (got {sorted(out)})")
        x = state[k]
        x0, eps = to_x0_eps(out[k].to(x.dtype), f.prediction, x, field_coefs(f, t, x))
        res[k] = f.structure.project(x0, state), f.structure.project(eps, state)
    return res


def jump(model: Model, fields: Mapping[str, FieldSpec], state: State, t: Tensor, s: Tensor, *, cond: Any = None,
         frozen: bool = False) -> dict[str, Tensor]:
    """``G(x_t, t, s)``: every Gaussian field of ``state`` (at (B,) times ``t``) moved to ``s`` by one
    call of the two-time ``model`` (``model(state, t[, cond], s=s)``, then DDIM with the schedule at
    ``s``). ``frozen``: the model's weights are held fixed (stop-gradient ``G_sg``; gradients still
    flow through ``state``)."""
    call = _frozen(model) if frozen else model
    try:
        est = estimates(call, fields, state, t, s, cond=cond)
    except TypeError as err:
        if "'s'" not in str(err):
            raise
        raise TypeError(f"a two-time model G(x_t, t, s) is needed (called as model(state, t[, cond], s=s)); "
                        f"wrap an ordinary denoiser with polydiff.distill.TwoTime or use a two-time network ({err})"
                        ) from err
    res = {}
    for k, (d, e) in est.items():
        c = field_coefs(fields[k], s, d)
        res[k] = torch.addcmul(c.sigma * e, c.alpha, d)
    return res


def _frozen(model: Model) -> Model:
    """``model`` with its parameters detached (a functional call), for stop-gradient targets."""
    if not isinstance(model, nn.Module):
        return model
    from torch.distributed.fsdp import FullyShardedDataParallel

    if any(isinstance(m, FullyShardedDataParallel) for m in model.modules()):
        # the functional call swaps in detached flat shards, which FSDP's gather then overwrites in
        # place under autograd's feet (torch fails the backward); refuse before that, on every rank
        raise ValueError("the CTM objective's stop-gradient student calls (G_sg: the network with detached "
                         "weights) do not run on an FSDP-sharded network: train distillation with "
                         "train.strategy: ddp (the student has the teacher's size)")
    params = {n: p.detach() for n, p in model.named_parameters()}

    def call(*args: Any, **kwargs: Any) -> Any:
        return torch.func.functional_call(model, params, args, kwargs)

    return call


# ---------------------------------------------------------------------------------------------
# the teacher's ODE on per-sample grids
# ---------------------------------------------------------------------------------------------

def per_sample_grid(schedule: Any, t: Tensor, u: Tensor, steps: int, kind: str | None = None) -> Tensor:
    """A (steps+1, B) float64 grid from ``t`` to ``u`` (B,) per sample, ends exact, spaced like the
    core's grid ``kind`` (default: the schedule's default grid): ``uniform_t``, ``uniform_logsnr``
    (log-SNR clipped to [-10, 30] as the core's grid clips it) or ``karras`` (rho = 7 in sigma/alpha)."""
    if steps < 1:
        raise ValueError(f"teacher_steps must be >= 1, got {steps}")
    kind = kind or schedule.default_grid
    t64, u64 = t.to(torch.float64), u.to(torch.float64)
    r = torch.linspace(0, 1, steps + 1, dtype=torch.float64, device=t64.device)[:, None]
    if kind == "uniform_t":
        grid = t64 + r * (u64 - t64)
    elif kind in ("uniform_logsnr", "karras"):
        lt = schedule.lam(t64).nan_to_num(nan=-LAM_CLIP).clamp(-LAM_CLIP, LAM_CLIP)
        lu = schedule.lam(u64).nan_to_num(nan=LAM_CLIP).clamp(-LAM_CLIP, LAM_CLIP)
        lt = torch.maximum(lt, torch.minimum(torch.full_like(lu, LAM_LOW), lu - 1.0))  # skip the flat alpha ~ 0 end
        if kind == "karras":
            rho = 7.0
            hi, lo = torch.exp(-lt / rho), torch.exp(-lu / rho)  # (sigma/alpha)^(1/rho) at t and u
            grid = schedule.t_of_lam(-rho * torch.log(hi + r * (lo - hi)))
        else:
            grid = schedule.t_of_lam(lt + r * (lu - lt))
    else:
        raise ValueError(f"per-sample teacher grids are uniform_t, uniform_logsnr or karras; got {kind!r}")
    grid[0], grid[-1] = t64, u64
    return grid


def teacher_solve(teacher: Model, fields: Mapping[str, FieldSpec], state: State, t: Tensor, u: Tensor, *,
                  sampler: str = "heun", steps: int = 16, cond: Any = None) -> dict[str, Tensor]:
    """The teacher's probability-flow ODE solution from ``state`` at (B,) times ``t`` to ``u < t``:
    ``steps`` steps of the deterministic core ``sampler`` on per-sample grids spaced like the
    schedule's default grid (:func:`per_sample_grid`; one :func:`polydiff.sample` call). Where
    ``sigma(u) = 0`` (the data end of an interpolant) the solve stops at ``sigma/alpha = e^-9`` and
    finishes with one DDIM step of the teacher, so no sampler evaluates the teacher where its noise
    estimate is undefined. No gradients."""
    gaussian_only(fields, "the teacher's ODE")
    sdef = get_sampler(sampler)
    if sdef.kind != "gaussian" or sdef.stochastic or sdef.loop != "grid":
        raise ValueError(f"teacher_sampler must be a deterministic Gaussian ODE sampler (heun, dpm++2m, euler, "
                         f"ddim, ...); {sampler!r} is not")
    names = list(fields)
    ref = fields[names[0]].process.schedule
    like = state[names[0]]
    with torch.no_grad():
        c_u = field_coefs(fields[names[0]], u, like)
        zero = (c_u.sigma.reshape(-1) == 0)
        safe = torch.minimum(ref.t_of_lam(torch.full_like(u, LAM_SAFE, dtype=torch.float64)), 0.5 * t.double())
        u_ode = torch.where(zero, safe, u.double())
        grid = per_sample_grid(ref, t, u_ode, steps)
        spec = {k: (v.detach() if isinstance(v, Tensor) else v) for k, v in state.items()}
        out = sample(teacher, dict(fields), spec, sampler=sampler, steps=steps, grid=grid, seed=0, cond=cond,
                     dtype=like.dtype)
        res = {k: out[k] for k in names}
        if bool(zero.any()):  # finish with DDIM from the safe time (one teacher call at u_ode)
            est = estimates(teacher, fields, {**spec, **res}, u_ode, cond=cond)
            for k, (d, e) in est.items():
                c = field_coefs(fields[k], u, d)
                res[k] = torch.where(_col(zero, d), torch.addcmul(c.sigma * e, c.alpha, d), res[k])
    return res


# ---------------------------------------------------------------------------------------------
# distances
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Comparison:
    """What a distance may use besides the two sets of fields it compares: the field specs, the
    batch (masks, conditions), the (B,) time both sides are at (the data end, or ``s``), the
    teacher (e.g. for distances in its feature space) and the condition passed to the models."""

    fields: Mapping[str, FieldSpec]
    state: State
    time: Tensor
    teacher: Model | None = None
    cond: Any = None


Distance = Callable[[Mapping[str, Tensor], Mapping[str, Tensor], Comparison], Tensor]


def _per_field(pred: Mapping[str, Tensor], target: Mapping[str, Tensor], cmp: Comparison,
               fn: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
    """Sum over fields of ``fn(error, weights)`` (per sample) with each structure's weights."""
    total = None
    for k, f in cmp.fields.items():
        err = pred[k] - target[k]
        w = f.structure.weights(err, cmp.state)
        per = fn(err, w)
        total = per if total is None else total + per
    return total


def _mean(v: Tensor, w: Tensor) -> Tensor:
    """Per-sample weighted mean over a field's entries."""
    return (v * w).flatten(1).sum(1) / w.flatten(1).sum(1).clamp_min(1)


@DISTANCES.register("l2", "mean squared error over each field's free entries, summed over fields")
def l2_distance(pred: Mapping[str, Tensor], target: Mapping[str, Tensor], cmp: Comparison) -> Tensor:
    return _per_field(pred, target, cmp, lambda e, w: _mean(e * e, w))


@DISTANCES.register("l1", "mean absolute error over each field's free entries, summed over fields")
def l1_distance(pred: Mapping[str, Tensor], target: Mapping[str, Tensor], cmp: Comparison) -> Tensor:
    return _per_field(pred, target, cmp, lambda e, w: _mean(e.abs(), w))


@DISTANCES.register("pseudo_huber", "iCT's sqrt(|e|^2 + c^2) - c per field, c = 0.00054 sqrt(free entries)")
def pseudo_huber_distance(pred: Mapping[str, Tensor], target: Mapping[str, Tensor], cmp: Comparison) -> Tensor:
    def fn(e: Tensor, w: Tensor) -> Tensor:
        c = 0.00054 * torch.sqrt(w.flatten(1).sum(1))
        return torch.sqrt((e * e * w).flatten(1).sum(1) + c * c) - c

    return _per_field(pred, target, cmp, fn)


def get_distance(distance: str | Distance) -> Distance:
    """A distance given by name (:data:`DISTANCES`) or as a callable ``(pred, target, cmp) -> (B,)``."""
    return DISTANCES.get(distance) if isinstance(distance, str) else distance


# ---------------------------------------------------------------------------------------------
# the CTM objective
# ---------------------------------------------------------------------------------------------

def data_end(fields: Mapping[str, FieldSpec], t_end: float | None = None) -> float:
    """The data end of a two-time model's jumps: ``t_end``, else the reference schedule's ``t_min``
    (where the default sampling grids end; the ``ctm`` sampler's default data end too)."""
    if t_end is not None:
        return float(t_end)
    ref = next(f.process.schedule for f in fields.values() if f.kind == "gaussian")
    return float(ref.t_min)


def ctm_loss(student: Model, teacher: Model, fields: Mapping[str, FieldSpec], batch: State, noise: Noise, *,
             cond: Any = None, teacher_fields: Mapping[str, FieldSpec] | None = None, teacher_sampler: str = "heun",
             teacher_steps: int = 16, distance: str | Distance = "l2", dsm_weight: float = 1.0,
             dsm_weighting: str = "prediction", u_fraction: float = 1.0, u_random: bool = False,
             compare: str = "data", p_end: float = 0.25, p_max: float = 0.25, t_density: str = "uniform",
             t_end: float | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """CTM's loss for one batch: ``d(G_sg(G_theta(x_t, t, s), s, t_end), G_sg(G_sg(x_u, u, s), s, t_end))``
    plus ``dsm_weight`` times the student's denoising loss at ``s = t``; returns ``(loss, logs)``.

    Per sample, from the ``noise`` stream only: ``t = t_max`` with probability ``p_max`` (where every
    few-step grid starts; 0 gives CTM's plain density) else from the time density ``t_density``
    (kept above the data end ``t_end``), ``s = t_end`` with probability ``p_end`` (the jump one-step
    generation uses) else uniform in ``[t_end, t)``, ``u = t - f (t - s)`` with ``f = u_fraction``
    (times a uniform draw if ``u_random``: CTM's ``u ~ U[s, t)``), ``x_t`` by the forward process.
    ``x_u`` is the frozen teacher's ODE solution (:func:`teacher_solve`, ``teacher_steps`` steps of
    ``teacher_sampler``). ``u = s`` (``u_fraction = 1``, the default) regresses onto the teacher's
    solution itself; ``u > s`` bootstraps the rest with the stop-gradient student (sg of the current
    weights, not an EMA). ``compare="data"`` maps both sides to ``t_end`` with the stop-gradient
    student (CTM's soft consistency), ``"s"`` compares at ``s``. ``distance``: a name in
    :data:`DISTANCES` or a callable ``(pred, target, Comparison) -> (B,)``. The denoising term uses
    the student's prediction at ``s = t`` with the core's weighting ``dsm_weighting``.
    """
    gaussian_only(fields)
    if compare not in COMPARE:
        raise ValueError(f"compare must be one of {', '.join(COMPARE)}, got {compare!r}")
    if not 0.0 < u_fraction <= 1.0:
        raise ValueError(f"u_fraction must lie in (0, 1], got {u_fraction}")
    if not (0.0 <= p_end <= 1.0 and 0.0 <= p_max <= 1.0):
        raise ValueError(f"p_end and p_max must be probabilities, got {p_end} and {p_max}")
    dist = get_distance(distance)
    tfields = dict(teacher_fields or fields)
    names = list(fields)
    like = batch[names[0]]
    ref = fields[names[0]].process.schedule
    end = data_end(fields, t_end)
    # times: t above the data end, s in [t_end, t), u in [s, t)
    t = sample_time(fields, noise, t_density).to(like.device)
    t = torch.maximum(t, torch.full_like(t, end + 1e-3 * (ref.t_max - end)))
    r_s, at_end, r_u, at_max = (noise.rand(()).to(like.device) for _ in range(4))
    t = torch.where(at_max < p_max, torch.full_like(t, ref.t_max), t)
    s = torch.where(at_end < p_end, torch.full_like(t, end), end + 0.999 * r_s * (t - end))
    f = u_fraction * (r_u.clamp_min(1e-3) if u_random else torch.ones_like(r_u))
    u = s + (1 - f) * (t - s)  # f = 1: u = s exactly
    endv = torch.full_like(t, end)
    noisy, aux = corrupt(fields, batch, t, noise)
    # target: the teacher's ODE solution at u, moved on to s by the frozen student where u > s
    with torch.no_grad():
        x_u = teacher_solve(teacher, tfields, noisy, t, u, sampler=teacher_sampler, steps=teacher_steps, cond=cond)
        target = {k: v.to(like.dtype) for k, v in x_u.items()}
        if u_random or u_fraction < 1.0:
            later = u > s
            g = jump(student, fields, {**batch, **target}, torch.where(later, u, t), s, cond=cond, frozen=True)
            target = {k: torch.where(_col(later, v), g[k], v) for k, v in target.items()}
    pred = jump(student, fields, noisy, t, s, cond=cond)
    at = s
    if compare == "data":  # soft consistency: both sides to the data end by G_sg(., s, t_end)
        moved = s > end
        s_eval = torch.where(moved, s, t)  # G(x, s, s) = x: skip the call's value where s is the end
        pred = _to_end(student, fields, batch, pred, s_eval, endv, moved, cond)
        with torch.no_grad():
            target = _to_end(student, fields, batch, target, s_eval, endv, moved, cond)
        at = endv
    per = dist(pred, target, Comparison(fields, batch, at, teacher, cond))
    ctm_term = per.mean()
    logs: dict[str, Tensor] = {"ctm": ctm_term.detach()}
    loss = ctm_term
    if dsm_weight > 0:
        out = call(student, noisy, t.to(torch.float32), cond, s=t.to(torch.float32))
        dsm = torch.zeros((), device=like.device)
        for k, spec in fields.items():
            eps, c = aux[k]
            dsm = dsm + gaussian_loss(out[k].to(batch[k].dtype), batch[k], eps, noisy[k], c, spec, batch,
                                      dsm_weighting).mean()
        logs["dsm"] = dsm.detach()
        loss = loss + dsm_weight * dsm
    return loss, logs


def _to_end(student: Model, fields: Mapping[str, FieldSpec], batch: State, x: Mapping[str, Tensor], s_eval: Tensor,
            end: Tensor, moved: Tensor, cond: Any) -> dict[str, Tensor]:
    g = jump(student, fields, {**batch, **x}, s_eval, end, cond=cond, frozen=True)
    return {k: torch.where(_col(moved, v), g[k], v) for k, v in x.items()}


class CTMObjective:
    """The registered ``ctm`` objective built once per run: ``objective(net, batch, noise) -> (loss,
    logs)`` with a frozen teacher (moved to the batch's device on first use). Deliberately not an
    ``nn.Module``: the teacher must not become part of the student's weights or checkpoints."""

    def __init__(self, teacher: Model, fields: Mapping[str, FieldSpec], teacher_fields: Mapping[str, FieldSpec],
                 **options: Any) -> None:
        self.teacher, self.fields, self.teacher_fields = teacher, dict(fields), dict(teacher_fields)
        self.options = options
        self._device: torch.device | None = None

    def __call__(self, net: Model, batch: State, noise: Noise) -> tuple[Tensor, dict[str, Tensor]]:
        dev = next(iter(batch.values())).device
        if isinstance(self.teacher, nn.Module) and self._device != dev:
            self.teacher.to(dev)
            self._device = dev
        return ctm_loss(net, self.teacher, self.fields, batch, noise, teacher_fields=self.teacher_fields,
                        **self.options)


def load_teacher(teacher: str | Path | Model, fields: Mapping[str, FieldSpec]) -> tuple[Model, dict[str, FieldSpec]]:
    """A frozen teacher (eval mode, no gradients) and its fields: a checkpoint path, loaded with
    :func:`polydiff.checkpoints.load_network` (EMA weights) and checked to generate the same fields
    with the same schedules, or a state-level callable (taken to share ``fields``)."""
    if isinstance(teacher, (str, Path)):
        from .checkpoints import load_network

        if not Path(teacher).exists():
            raise ValueError(f"loss.teacher: {teacher}: no such checkpoint (train the teacher first, or point "
                             "loss.teacher at its checkpoint)")
        loaded = load_network(teacher)
        net, tfields = loaded.net, loaded.fields
        for k, f in fields.items():
            tf = tfields.get(k)
            if tf is None or tf.kind != f.kind or repr(tf.process) != repr(f.process):
                got = "no such field" if tf is None else repr(tf.process)
                raise ValueError(f"teacher {teacher}: field {k!r} must have the student's process {f.process!r}; "
                                 f"the teacher has {got}")
    else:
        net, tfields = teacher, dict(fields)
    if isinstance(net, nn.Module):
        net.requires_grad_(False).eval()
    return net, dict(tfields)


@OBJECTIVES.register("ctm", "consistency trajectory distillation of a frozen teacher into a two-time model "
                            "G(x_t, t, s) (Kim et al. 2024); loss.teacher: the teacher checkpoint")
def ctm(fields: Mapping[str, FieldSpec], info: Mapping[str, Any] | None = None, teacher: str | Model | None = None,
        teacher_steps: int = 16, teacher_sampler: str = "heun", distance: str | Distance = "l2",
        dsm_weight: float = 1.0, dsm_weighting: str = "prediction", u_fraction: float = 1.0, u_random: bool = False,
        compare: str = "data", p_end: float = 0.25, p_max: float = 0.25, t_density: str = "uniform",
        t_end: float | None = None) -> CTMObjective:
    """Build the ``ctm`` objective (see :func:`ctm_loss` for the options). ``teacher``: a checkpoint
    path (the recipe's ``loss.teacher``) or a state-level callable; the student network must be a
    two-time model (e.g. the toy modality's ``two_time_mlp``)."""
    gaussian_only(fields)
    if teacher is None:
        raise ValueError("objective 'ctm' needs a teacher: set loss.teacher to a checkpoint path")
    if compare not in COMPARE:
        raise ValueError(f"compare must be one of {', '.join(COMPARE)}, got {compare!r}")
    if not (0.0 < u_fraction <= 1.0 and 0.0 <= p_end <= 1.0 and 0.0 <= p_max <= 1.0 and teacher_steps >= 1
            and dsm_weight >= 0):
        raise ValueError(f"ctm: need 0 < u_fraction <= 1 (got {u_fraction}), p_end and p_max in [0, 1] (got {p_end}, "
                         f"{p_max}), teacher_steps >= 1 (got {teacher_steps}) and dsm_weight >= 0 (got {dsm_weight})")
    get_distance(distance)
    sdef = get_sampler(teacher_sampler)
    if sdef.kind != "gaussian" or sdef.stochastic or sdef.loop != "grid":
        raise ValueError(f"teacher_sampler must be a deterministic Gaussian ODE sampler (heun, dpm++2m, euler, ...); "
                         f"{teacher_sampler!r} is not")
    net, tfields = load_teacher(teacher, fields)
    return CTMObjective(net, fields, tfields, teacher_sampler=teacher_sampler, teacher_steps=int(teacher_steps),
                        distance=distance, dsm_weight=float(dsm_weight), dsm_weighting=dsm_weighting,
                        u_fraction=float(u_fraction), u_random=bool(u_random), compare=compare, p_end=float(p_end),
                        p_max=float(p_max), t_density=t_density, t_end=None if t_end is None else float(t_end))


__all__ = ["DISTANCES", "CTMObjective", "Comparison", "TwoTime", "TwoTimeMLP", "ctm", "ctm_loss", "data_end",
           "estimates", "gaussian_only", "get_distance", "jump", "load_teacher", "per_sample_grid", "teacher_solve"]
