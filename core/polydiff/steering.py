"""Steering: Feynman-Kac / sequential Monte Carlo particles, inpainting by replacement, and the
superposition of models.

:func:`steer` runs a :class:`polydiff.samplers.SamplingLoop` on ``K`` particles per sample.
After every step each :class:`Potential` adds a log-weight increment; samples whose effective
sample size falls below ``ess_threshold * K`` are resampled (systematic resampling, within
each sample's own particles), and one particle per sample is drawn from the final weights.
Observed fields / entries are written in along a forward-noised path (RePaint's replacement,
with ``repaint`` resampling jumps) and, with ``observation_weights``, weighted by the model's
transition density of the observed entries (SMCDiff, Trippe et al. 2023), which makes
replacement asymptotically exact.

Potentials (what target each reaches is stated on each class):

- :class:`RewardTilt`: FK steering (Singhal et al. 2025) toward ``p(x) exp(beta r(x))``.
- :class:`Anneal`: ``p^beta`` with Feynman-Kac corrector weights (Skreta et al. 2025).
- :class:`ProductOfExperts`: ``p1 p2`` of two models, likewise.
- :class:`Superposition`: mixture ("or") or equal-density ("and") superposition of models
  with the Itô density estimator (Skreta et al. 2025, SuperDiff); no weights.

:func:`controlled_sample` composes guidance wrappers and these potentials behind one call: the
entry point of ``Generator.generate`` and ``polydiff sample``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import count
from typing import Any, NamedTuple

import torch
from torch import Tensor

from .guidance import (
    Model,
    Observation,
    ObservedPath,
    Scale,
    Wrapper,
    as_observation,
    call,
    classifier_free,
    compose,
    field_coefs,
    gaussian_names,
    log_normal,
    make_condition,
    reconstruction_guidance,
    tree_map,
    with_x0_eps,
    x0_eps,
)
from .random import Noise
from .registry import whole_number
from .samplers.base import SampleSettings, settings_of
from .samplers.driver import SamplingLoop, model_dtype_of, prepare, sample
from .state import FieldSpec, State, as_fields

_ids = count()


# --------------------------------------------------------------------------------------------
# weights and resampling
# --------------------------------------------------------------------------------------------
def ess(logw: Tensor) -> Tensor:
    """Effective sample size of each row of log-weights (G, K): ``(sum w)^2 / sum w^2``."""
    return torch.exp(2 * torch.logsumexp(logw, -1) - torch.logsumexp(2 * logw, -1))


def systematic_resample(logw: Tensor, u: Tensor) -> Tensor:
    """Systematic resampling of each row of log-weights (G, K) with one uniform per row (G,):
    ancestor indices (G, K) in [0, K). Low variance, and no host synchronisation."""
    k = logw.shape[-1]
    cdf = torch.cumsum(torch.softmax(logw.double(), -1), -1)
    cdf[..., -1] = 1.0
    pos = (u.double().reshape(-1, 1) + torch.arange(k, device=logw.device, dtype=torch.float64)) / k
    return torch.searchsorted(cdf, pos.contiguous()).clamp_max(k - 1)


def _logmeanexp(logw: Tensor) -> Tensor:
    return torch.logsumexp(logw, -1) - math.log(logw.shape[-1])


# --------------------------------------------------------------------------------------------
# potentials
# --------------------------------------------------------------------------------------------
class StepInfo(NamedTuple):
    """What a potential sees after step ``i`` (from ``t`` to ``s``)."""

    i: int
    t: Tensor
    s: Tensor
    before: State  # the state at t
    x0: dict[str, Tensor]  # clean estimates at t (probabilities for categorical fields)
    out: Mapping[str, Tensor]  # the model's raw outputs at (before, t), extra keys included
    state: State  # the state at s
    loop: SamplingLoop


class Potential:
    """A Feynman-Kac potential: optional model wrapper (the proposal), prior scale, and a
    per-step log-weight increment with a carried per-particle tensor (re-indexed on
    resampling; written into the state under ``state_key`` when that is set)."""

    prior_scale: float = 1.0
    state_key: str | None = None
    width: int = 1

    def wrap(self, model: Model, fields: Mapping[str, FieldSpec], adapt: Callable[[Any], Model]) -> Model:
        """The proposal: the model the sampler calls (``adapt`` turns another model into a callable)."""
        return model

    def init(self, loop: SamplingLoop) -> Tensor:
        """The carried per-particle tensor (B, width) before the first step."""
        return torch.zeros(loop.batch, self.width, dtype=torch.float64, device=loop.ts.device)

    def step(self, info: StepInfo, carry: Tensor) -> tuple[Tensor, Tensor]:
        """The step's log-weight increment (B,) and the new carry."""
        return torch.zeros(info.loop.batch, dtype=torch.float64, device=carry.device), carry

    def final(self, state: State, carry: Tensor, loop: SamplingLoop) -> Tensor:
        """The last log-weight increment (B,), on the final sample."""
        return torch.zeros(loop.batch, dtype=torch.float64, device=carry.device)


class RewardTilt(Potential):
    """FK steering toward ``p(x) exp(beta r(x))`` (Singhal et al. 2025, difference potential).

    Intermediate potentials ``G_i = exp(beta r(x0_hat_i))`` (``on="x0"``, the clean estimates;
    ``on="xt"`` the noisy state) enter through increments ``beta (r_i - r_{i-1})``, and the
    last increment uses the final sample, so the product of weights telescopes to
    ``exp(beta r(x_final))``: with an exact stochastic sampler the weighted particles target
    ``p_model(x) exp(beta r(x)) / Z`` for any intermediate choice; the intermediate potentials
    only steer the particles early. ``reward(state) -> (B,)``; under ``on="x0"`` categorical
    fields hold clean-token probabilities, in the final state tokens.
    """

    def __init__(self, reward: Callable[[State], Tensor], beta: float = 1.0, on: str = "x0") -> None:
        if on not in ("x0", "xt"):
            raise ValueError(f"on must be 'x0' or 'xt', got {on!r}")
        self.reward, self.beta, self.on = reward, beta, on

    def step(self, info: StepInfo, carry: Tensor) -> tuple[Tensor, Tensor]:
        st = {**info.before, **info.x0} if self.on == "x0" else info.before
        g = self.beta * self.reward(st).double()
        return g - carry[:, 0], g[:, None]

    def final(self, state: State, carry: Tensor, loop: SamplingLoop) -> Tensor:
        return self.beta * self.reward(state).double() - carry[:, 0]


def _g2(spec: FieldSpec, t: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
    """Forward SDE drift coefficient f and squared diffusion g^2 of a field at time t."""
    tt = t.to(torch.float64)
    tt = tt.reshape(-1, *([1] * (like.dim() - 1))) if tt.dim() else tt
    f, g2 = spec.process.schedule.drift_diffusion(tt)
    return f.to(like.dtype), g2.to(like.dtype)


def _sum(x: Tensor) -> Tensor:
    return x.flatten(1).sum(1)


def _scores(out: Mapping[str, Tensor], state: State, t: Tensor, fields: Mapping[str, FieldSpec],
            names: Sequence[str]) -> dict[str, Tensor]:
    """Projected scores ``-eps / sigma`` of the Gaussian fields."""
    est = x0_eps(out, state, t, fields, names)
    return {k: -fields[k].structure.project(est[k][1], state) / field_coefs(fields[k], t, state[k]).sigma
            for k in names}


def _dt(info: StepInfo) -> Tensor:
    """Positive step ``t - s`` as a per-sample (B,) float64 tensor."""
    d = (info.t - info.s).double()
    return d.expand(info.loop.batch) if d.dim() == 0 else d


class _RatePotential(Potential):
    """A potential whose log-weight grows at a rate the wrapped model returns (extra output)."""

    def __init__(self) -> None:
        self.key = f"__rate{next(_ids)}"

    def step(self, info: StepInfo, carry: Tensor) -> tuple[Tensor, Tensor]:
        return info.out[self.key].double() * _dt(info), carry


class Anneal(_RatePotential):
    """Annealing to ``p^beta`` (low temperature for beta > 1) with Feynman-Kac corrector weights
    (Skreta et al. 2025, "Feynman-Kac correctors in diffusion").

    The proposal is the reverse SDE with the score scaled by beta and the forward diffusion
    ``g``; for it, the weights of the marginals ``p_t^beta`` grow at the rate
    ``beta (beta - 1) g^2 |score|^2 / 2`` (the divergence terms cancel), and the prior is
    ``N(0, sigma_max^2 / beta)``. Exact in the limit of small steps for Euler-Maruyama / DDPM
    (the samplers that simulate this SDE); Gaussian fields only.
    """

    def __init__(self, beta: float) -> None:
        super().__init__()
        self.beta = beta
        self.prior_scale = beta**-0.5

    def wrap(self, model: Model, fields: Mapping[str, FieldSpec], adapt: Callable[[Any], Model]) -> Model:
        names, b = gaussian_names(fields), self.beta

        def annealed(state: State, t: Tensor, cond: Any = None) -> dict[str, Tensor]:
            out = call(model, state, t, cond)
            est = x0_eps(out, state, t, fields, names)
            new, rate = {}, 0
            for k in names:
                e = fields[k].structure.project(est[k][1], state)
                c = field_coefs(fields[k], t, state[k])
                new[k] = ((state[k] - c.sigma * b * e) / c.alpha, b * e)
                rate = rate + _sum(_g2(fields[k], t, e)[1] * (e / c.sigma) ** 2)
            res = with_x0_eps(out, state, t, fields, new)
            res[self.key] = 0.5 * b * (b - 1) * rate
            return res

        return annealed


class ProductOfExperts(_RatePotential):
    """The product ``p1 p2`` of the sampled model and ``other`` (a model with the same call
    convention), with Feynman-Kac corrector weights (Skreta et al. 2025).

    The proposal is the reverse SDE with the summed scores; the weights of the marginals
    ``p1_t p2_t`` grow at the rate ``g^2 <score1, score2>``, and the prior is
    ``N(0, sigma_max^2 / 2)``. Exact in the small-step limit for Euler-Maruyama / DDPM.
    """

    prior_scale = 0.5**0.5

    def __init__(self, other: Any) -> None:
        super().__init__()
        self.other = other

    def wrap(self, model: Model, fields: Mapping[str, FieldSpec], adapt: Callable[[Any], Model]) -> Model:
        names, other = gaussian_names(fields), adapt(self.other)

        def product(state: State, t: Tensor, cond: Any = None) -> dict[str, Tensor]:
            o1, o2 = call(model, state, t, cond), call(other, state, t, cond)
            s1, s2 = _scores(o1, state, t, fields, names), _scores(o2, state, t, fields, names)
            new, rate = {}, 0
            for k in names:
                c = field_coefs(fields[k], t, state[k])
                e = -c.sigma * (s1[k] + s2[k])
                new[k] = ((state[k] - c.sigma * e) / c.alpha, e)
                rate = rate + _sum(_g2(fields[k], t, e)[1] * s1[k] * s2[k])
            res = with_x0_eps(o1, state, t, fields, new)
            res[self.key] = rate
            return res

        return product


class Superposition(Potential):
    """Superposition of the sampled model with ``others`` (SuperDiff, Skreta et al. 2025, "The
    superposition of diffusion models using the Itô density estimator").

    Along the sampled path each model's log-density is tracked by the Itô density estimator
    ``d log q_i = <score_i, dx> + (f <x, score_i> - g^2 |score_i|^2 / 2) dtau`` (exact for any
    drift when the path has the forward diffusion ``g``: Euler-Maruyama / DDPM), and the scores
    are combined with weights ``kappa``:

    - ``mode="or"``: ``kappa = softmax(log q_i + log w_i)``, the mixture ``sum w_i p_i``
      (exact: the mixture's score is this combination);
    - ``mode="and"`` (two models): ``kappa`` chosen so that the two log-densities are driven
      back to equality each step, sampling where both models agree (SuperDiff's AND,
      approximate by nature: it is not the normalised product, see :class:`ProductOfExperts`).

    No importance weights: one particle per sample suffices.
    """

    def __init__(self, others: Sequence[Any], mode: str = "or", weights: Sequence[float] | None = None) -> None:
        if mode not in ("or", "and"):
            raise ValueError(f"mode must be 'or' or 'and', got {mode!r}")
        self.others, self.mode = list(others), mode
        self.n = 1 + len(self.others)
        if mode == "and" and self.n != 2:
            raise ValueError("mode='and' combines exactly two models")
        w = torch.ones(self.n, dtype=torch.float64) if weights is None else torch.as_tensor(weights).double()
        self.log_w = torch.log(w / w.sum())
        self.width = self.n + 1  # log q_i, then the next step's size
        self.state_key = f"__superdiff{next(_ids)}"
        self.fields: Mapping[str, FieldSpec] = {}

    def wrap(self, model: Model, fields: Mapping[str, FieldSpec], adapt: Callable[[Any], Model]) -> Model:
        models = [model, *[adapt(m) for m in self.others]]
        names, key, n = gaussian_names(fields), self.state_key, self.n
        self.fields, self.names = fields, names

        def superposed(state: State, t: Tensor, cond: Any = None) -> dict[str, Tensor]:
            outs = [call(m, state, t, cond) for m in models]
            scores = [_scores(o, state, t, fields, names) for o in outs]
            carry = state[key]
            logq = carry[:, :n]
            if self.mode == "or":
                kappa = torch.softmax(logq + self.log_w.to(logq.device), -1)
            else:
                dt = carry[:, n]
                num = sum(_sum(_g2(fields[k], t, scores[0][k])[1] * (scores[0][k] - scores[1][k]) ** 2).double()
                          for k in names)
                k1 = 0.5 - (logq[:, 0] - logq[:, 1]) / (dt * num).clamp_min(1e-12)
                kappa = torch.stack([k1, 1 - k1], -1)
            new, res = {}, dict(outs[0])
            for k in names:
                x = state[k]
                c = field_coefs(fields[k], t, x)
                kk = kappa.to(x.dtype)
                s = sum(kk[:, j].reshape(-1, *([1] * (x.dim() - 1))) * scores[j][k] for j in range(n))
                new[k] = ((x + c.sigma**2 * s) / c.alpha, -c.sigma * s)
                for j in range(n):
                    res[f"{key}:{j}:{k}"] = scores[j][k]
            return with_x0_eps(res, state, t, fields, new)

        return superposed

    def init(self, loop: SamplingLoop) -> Tensor:
        c = super().init(loop)
        c[:, -1] = (loop.ts[0] - loop.ts[1]).double().reshape(-1)
        return c

    def step(self, info: StepInfo, carry: Tensor) -> tuple[Tensor, Tensor]:
        dt, logq = _dt(info), carry[:, : self.n].clone()
        for j in range(self.n):
            for k in self.names:
                s = info.out[f"{self.state_key}:{j}:{k}"]
                x, y = info.before[k], info.state[k]
                f, g2 = _g2(self.fields[k], info.t, s)
                dx = _sum(s * (y - x)).double()
                logq[:, j] += dx + dt * _sum(f * x * s - 0.5 * g2 * s * s).double()
        loop, i = info.loop, info.i
        nxt = (loop.ts[i + 1] - loop.ts[i + 2]).double() if i + 2 <= loop.n else torch.zeros((), dtype=torch.float64)
        carry = torch.cat([logq, nxt.to(carry.device).expand(carry.shape[0]).reshape(-1, 1)], 1)
        return torch.zeros_like(dt), carry


# --------------------------------------------------------------------------------------------
# the runner
# --------------------------------------------------------------------------------------------
@dataclass
class SMCResult:
    """Everything :func:`steer` knows at the end."""

    samples: Tensor | State  # one particle per sample, drawn from the final weights
    particles: State  # all B*K final particles (sample-major)
    log_weights: Tensor  # (B, K) final log-weights
    log_evidence: Tensor  # (B,) estimate of log Z (the normaliser of the potentials)
    ess: Tensor  # (steps, B) effective sample size after each step, before resampling


def _transition(loop: SamplingLoop, i: int, x_t: Tensor, hist: Any, before: State) -> tuple[Tensor, Tensor]:
    """Mean and standard deviation of the Gaussian step ``i`` from ``x_t`` (packed): the step
    re-run with zero and with unit noise (valid for one-draw steps, ``x_s = m + std * z``)."""
    ct, cs = loop.coefs[i], loop.coefs[i + 1]
    d, e = loop.split(loop.last, x_t, ct, before)
    ctx = loop.context(i, loop.ts[i], loop.ts[i + 1], before)
    zero, one = torch.zeros_like(x_t), torch.ones_like(x_t)
    m, _ = loop.gdef.step(x_t, d, e, ct, cs, hist, ctx._replace(noise=lambda: zero))
    p, _ = loop.gdef.step(x_t, d, e, ct, cs, hist, ctx._replace(noise=lambda: one))
    return m, p - m


def _batch(spec: Mapping[str, Any]) -> int:
    for v in spec.values():
        if isinstance(v, Tensor) and v.dim():
            return int(v.shape[0])
        if isinstance(v, (tuple, list, torch.Size)):
            return int(v[0])
    raise ValueError("the state gives no field shape or tensor to read the batch size from")


def _expand_spec(spec: Mapping[str, Any], k: int, batch: int) -> dict[str, Any]:
    out = {}
    for name, v in spec.items():
        if isinstance(v, Tensor):
            out[name] = v.repeat_interleave(k, 0) if v.dim() and v.shape[0] == batch else v
        elif isinstance(v, (tuple, list, torch.Size)):
            out[name] = (int(v[0]) * k, *v[1:])
        else:
            out[name] = v
    return out


def _particle_seeds(seed: int | Tensor | None, batch: int, k: int) -> int | Tensor | None:
    if seed is None or k == 1:
        return seed
    s = torch.as_tensor(seed, dtype=torch.long)
    base = s * 1_000_003 + torch.arange(batch) if s.dim() == 0 else s.reshape(batch)
    return (base.repeat_interleave(k) * 7_919 + torch.arange(k).repeat(batch)) ^ 0x5DEECE66D


def _group_seed(seed: int | Tensor | None, batch: int) -> int | Tensor | None:
    if seed is None:
        return None
    s = torch.as_tensor(seed, dtype=torch.long)
    return (s * 1_000_003 + torch.arange(batch) if s.dim() == 0 else s.reshape(batch)) * 31 + 0xC0FFEE


STEER_DEFAULTS = SampleSettings(sampler="euler_maruyama", steps=50)


def steer(model: Model, process: Any, shape_or_state: tuple[int, ...] | Mapping[str, Any],
          settings: SampleSettings | None = None, *, particles: int = 1, potentials: Sequence[Potential] = (),
          ess_threshold: float = 0.5, observed: Observation | Mapping[str, Any] | None = None, repaint: int = 1,
          jump: int = 1, observation_weights: bool = False, wrap_model: Wrapper | None = None,
          prediction: str = "eps", seed: int | Tensor | None = None, generator: torch.Generator | None = None,
          cond: Any = None, device: torch.device | str | None = None, model_dtype: torch.dtype | None = None,
          callback: Callable[[dict[str, Any]], None] | None = None, return_result: bool = False,
          **keywords: Any) -> Tensor | State | SMCResult:
    """Sample with ``particles`` particles per sample, potentials, resampling and observations.

    Arguments as :func:`polydiff.sample` (``settings`` default to Euler-Maruyama with 50 steps,
    a stochastic sampler, as resampling needs), plus:

    - ``potentials``: :class:`Potential` objects; their log-weight increments add up.
    - ``ess_threshold``: resample a sample's particles when their ESS < threshold * K.
    - ``observed``: observed fields / entries (:class:`polydiff.guidance.Observation`, a dict, or
      a file), written in after every step along a forward-noised path; the output holds them
      exactly. ``repaint`` > 1: RePaint's resampling; every ``jump`` steps the state is taken
      back ``jump`` steps by the forward process and those steps are redone, ``repaint - 1``
      times (Lugmayr et al. 2022 use jump 10, repaint 10); no particles or potentials then.
    - ``observation_weights``: weight particles by the sampler's transition density of the
      observed entries (SMCDiff); needs a stochastic one-draw sampler (Euler-Maruyama, DDPM,
      DDIM with eta > 0, SDE-DPM-Solver++) and diagonal structures (plain or masked fields).
    - ``return_result``: return an :class:`SMCResult` instead of the samples.

    The sampler should be stochastic when particles are resampled: a deterministic one keeps
    duplicates identical (the result is then weighted importance sampling over the prior).
    """
    settings = settings_of(STEER_DEFAULTS if settings is None else settings, **keywords)
    k = particles
    if k < 1:
        raise ValueError(f"particles must be >= 1, got {k}")
    if repaint > 1 and (k > 1 or potentials):
        raise ValueError("RePaint's resampling (repaint > 1) is a heuristic of its own: use it without particles "
                         "and potentials (SMC inpainting is observation_weights=True)")
    if repaint > 1 and observed is None:
        raise ValueError("repaint > 1 needs observed=")
    single = not isinstance(shape_or_state, Mapping)
    spec = {"x": tuple(shape_or_state)} if single else dict(shape_or_state)
    batch = _batch(spec)
    fields = as_fields(process, prediction)
    pots = list(potentials)

    def adapt(m: Any) -> Model:
        if not single:
            return m
        (name,) = fields
        return lambda st, t, c=None: {name: m(st[name], t) if c is None else m(st[name], t, c)}

    wrap = compose(wrap_model, *[(lambda m, p=p: p.wrap(m, fields, adapt)) for p in pots])
    spec_k = _expand_spec(spec, k, batch)
    shape_k = spec_k["x"] if single else spec_k
    state_model, fields, state, noise, name = prepare(model, process, shape_k, prediction=prediction,
                                                      seed=_particle_seeds(seed, batch, k), generator=generator,
                                                      dtype=settings.dtype, device=device, wrap_model=wrap)
    scale = math.prod(p.prior_scale for p in pots)
    if scale != 1.0:
        for f_name, f in fields.items():
            if f.kind == "gaussian" and not isinstance(spec_k.get(f_name), Tensor):
                state[f_name] = state[f_name] * scale
    cond_k = tree_map(lambda v: v.repeat_interleave(k, 0), cond, batch) if k > 1 else cond
    loop = SamplingLoop(state_model, fields, state, noise, settings, cond=cond_k,
                        model_dtype=model_dtype or model_dtype_of(model))
    dev = loop.ts.device
    gnoise = Noise(batch, seed=_group_seed(seed, batch), generator=generator, device=dev)
    path = None
    if observed is not None:
        path = ObservedPath(as_observation(observed), fields, loop.state, gnoise, k)
        path.start(loop.ts, loop.state)
        loop.state = path.apply(loop.state)
    if observation_weights:
        if path is None:
            raise ValueError("observation_weights needs observed=")
        if not (loop.gdef.stochastic or loop.opts.get("eta", 0) > 0):
            raise ValueError(f"observation_weights needs a stochastic sampler, not {settings.sampler!r}")
        path.check_weights()
    carries = [p.init(loop) for p in pots]
    _write_carries(loop, pots, carries)
    weighted = k > 1 and (bool(pots) or observation_weights)
    logw = torch.zeros(batch, k, dtype=torch.float64, device=dev)
    log_z = torch.zeros(batch, dtype=torch.float64, device=dev)
    offsets = (torch.arange(batch, device=dev) * k)[:, None]
    ess_hist, passes, i = [], [0] * (loop.n + 1), 0
    while i < loop.n:
        t, s = loop.ts[i], loop.ts[i + 1]
        before, x_t, hist = dict(loop.state), loop.x, loop.hist
        x0 = loop.step(i)
        if path is not None:
            path.advance(i, loop.state, keep=jump)
            if observation_weights and not (loop.final_zero and i == loop.n - 1):
                mean, std = _transition(loop, i, x_t, hist, before)
                y, m = path.packed(loop.packer, mean)
                logw += log_normal(y, mean, std, m).double().reshape(batch, k)
            loop.state = path.apply(loop.state)
        info = StepInfo(i, t, s, before, x0, loop.last, loop.state, loop)
        for j, p in enumerate(pots):
            inc, carries[j] = p.step(info, carries[j])
            logw += inc.reshape(batch, k)
        if weighted:
            e = ess(logw)
            ess_hist.append(e)
            need = e < ess_threshold * k
            idx = systematic_resample(logw, gnoise.rand(()).to(dev))
            idx = torch.where(need[:, None], idx, torch.arange(k, device=dev).expand(batch, k))
            log_z = log_z + torch.where(need, _logmeanexp(logw), torch.zeros_like(log_z))
            logw = torch.where(need[:, None], torch.zeros_like(logw), logw)
            flat = (idx + offsets).reshape(-1)
            loop.select(flat)
            carries = [c[flat] for c in carries]
        _write_carries(loop, pots, carries)
        if callback is not None:
            callback({"i": i, "t": t, "s": s, "state": loop.state, "x0": x0, "log_weights": logw})
        i += 1
        if repaint > 1 and i % jump == 0 and i < loop.n and passes[i] < repaint - 1:
            passes[i] += 1  # RePaint: go back `jump` steps by the forward process, then redo them
            for j in range(i - 1, i - 1 - jump, -1):
                loop.renoise(j)
            i -= jump
    final = loop.finish()
    for j, p in enumerate(pots):
        logw += p.final(final, carries[j], loop).reshape(batch, k)
    if path is not None:
        final = path.apply(final, clean=True)
    final = {key: v for key, v in final.items() if not key.startswith("__")}
    log_z = log_z + _logmeanexp(logw)
    u = gnoise.rand(()).to(dev)
    cdf = torch.cumsum(torch.softmax(logw, -1), -1)
    pick = torch.searchsorted(cdf, u.double()[:, None]).clamp_max(k - 1)[:, 0] + offsets[:, 0]
    chosen = {key: v[pick] if isinstance(v, Tensor) and v.dim() and v.shape[0] == batch * k else v
              for key, v in final.items()}
    out = chosen[name] if name is not None else chosen
    if return_result:
        e = torch.stack(ess_hist) if ess_hist else torch.full((0, batch), float(k), dtype=torch.float64)
        return SMCResult(out, final, logw, log_z, e)
    return out


def _write_carries(loop: SamplingLoop, pots: Sequence[Potential], carries: Sequence[Tensor]) -> None:
    keyed = [(p.state_key, c) for p, c in zip(pots, carries) if p.state_key is not None]
    if keyed:
        st = loop.state
        for key, c in keyed:
            st[key] = c
        loop.state = st


# --------------------------------------------------------------------------------------------
# one entry point for generate() and the CLI
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Control:
    """Inference-time control of one run, all off by default (see :func:`controlled_sample`).

    - ``guidance_scale``: classifier-free guidance on the condition entries ``condition_keys``
      (default: the keys of the ``condition`` given to :func:`controlled_sample`), or between
      the model and ``uncond_model``, or on the driver's ``cond`` with ``null``.
    - ``guidance``: extra model wrappers (e.g. :func:`polydiff.guidance.gradient_guidance`
      partials); ``wrap_model``: one more, applied first.
    - ``observed``: observed fields / entries (dict, :class:`Observation` or a .pt / .npz file);
      ``inpaint`` is ``"replace"`` (RePaint-style replacement; ``repaint`` / ``jump``), ``"smc"``
      (replacement with SMCDiff weights, the default when ``particles`` > 1) or ``"guidance"``
      (reconstruction guidance with ``observation_scale``).
    - ``particles``, ``reward`` / ``beta``, ``potentials``, ``ess_threshold``: SMC steering
      (:func:`steer`); ``reward`` adds a :class:`RewardTilt`.
    """

    guidance_scale: Scale | None = None
    condition_keys: Sequence[str] | None = None
    null: Any = None
    uncond_model: Any = None
    guidance: Wrapper | Sequence[Wrapper] | None = None
    observed: Observation | Mapping[str, Any] | str | None = None
    inpaint: str | None = None
    repaint: int = 1
    jump: int = 1
    observation_scale: Scale = 1.0
    particles: int | None = None
    reward: Callable[[State], Tensor] | None = None
    beta: float = 1.0
    potentials: Sequence[Potential] = ()
    ess_threshold: float = 0.5
    wrap_model: Wrapper | None = None

    def __post_init__(self) -> None:
        for name in ("particles", "repaint", "jump"):
            if getattr(self, name) is not None:
                whole_number(name, getattr(self, name))

    @property
    def active(self) -> bool:
        """Whether anything is switched on (otherwise the run is plain :func:`polydiff.sample`)."""
        return self != Control()


CONTROL_NAMES = tuple(Control.__dataclass_fields__)
RUN_NAMES = ("prediction", "seed", "generator", "cond", "device", "model_dtype", "callback")


def control_of(control: Control | None = None, **keywords: Any) -> Control:
    """``control`` (default: none) with the :class:`Control` fields given as keywords set."""
    base = control if control is not None else Control()
    given = {k: v for k, v in keywords.items() if k in CONTROL_NAMES}
    unknown = sorted(set(keywords) - set(CONTROL_NAMES))
    if unknown:
        raise TypeError(f"unknown control options {unknown}; allowed: {', '.join(CONTROL_NAMES)}")
    return dataclasses.replace(base, **given) if given else base


def _all_absorbing(fields: Mapping[str, FieldSpec]) -> bool:
    from .processes import Absorbing

    return all(isinstance(f.process, Absorbing) for f in fields.values())


def _given_tokens(fields: Mapping[str, FieldSpec], spec: dict[str, Any], obs: Observation,
                  device: Any) -> dict[str, Any]:
    """``spec`` with each observed absorbing field given as a start tensor: the observed tokens,
    the mask token elsewhere."""
    for name in obs.values:
        if name not in fields:
            raise KeyError(f"observed {name!r} is not a field of the state; fields: {sorted(fields)}")
        given = spec[name]
        like = given if isinstance(given, Tensor) else \
            torch.full(tuple(given), fields[name].process.mask_id, dtype=torch.long, device=device or "cpu")
        v, m = obs.expand(name, like)
        spec[name] = torch.where(m, v.long(), like)
    return spec


def controlled_sample(model: Model, process: Any, shape_or_state: tuple[int, ...] | Mapping[str, Any],
                      settings: SampleSettings | None = None, control: Control | None = None, *,
                      condition: Mapping[str, Any] | Sequence[str] | None = None,
                      **keywords: Any) -> Tensor | State | SMCResult:
    """:func:`polydiff.sample` with guidance, conditioning, inpainting and steering switched on
    by a :class:`Control` (or its fields as keywords); with none of them it is exactly ``sample``.

    ``condition``: ``{key: value}`` or ``["key=value", ...]`` added to the state as (B,)
    condition entries (when the state is given as a dict); classifier-free guidance guides on
    them unless ``condition_keys`` says otherwise. Other keywords: :class:`SampleSettings`
    fields, sampler options, and ``prediction`` / ``seed`` / ``generator`` / ``cond`` /
    ``device`` / ``model_dtype`` / ``callback`` as for :func:`polydiff.sample`.
    """
    ctl = control_of(control, **{k: v for k, v in keywords.items() if k in CONTROL_NAMES})
    run = {k: v for k, v in keywords.items() if k in RUN_NAMES}
    rest = {k: v for k, v in keywords.items() if k not in CONTROL_NAMES and k not in RUN_NAMES}
    fields = as_fields(process, run.get("prediction", "eps"))
    single = not isinstance(shape_or_state, Mapping)
    condition_keys = ctl.condition_keys
    if condition is not None:
        if single:
            raise ValueError("condition= needs the state as a dict (conditions are entries of the state)")
        shape_or_state = dict(shape_or_state)
        cond_entries = make_condition(condition, _batch(shape_or_state), run.get("device") or "cpu")
        shape_or_state.update(cond_entries)
        condition_keys = list(cond_entries) if condition_keys is None else condition_keys
    wrappers: list[Wrapper | None] = [ctl.wrap_model]
    if ctl.guidance_scale is not None:
        uncond = ctl.uncond_model
        if uncond is not None and single:
            (fname,) = fields
            raw = ctl.uncond_model
            uncond = lambda st, t: {fname: raw(st[fname], t)}  # noqa: E731
        wrappers.append(lambda m: classifier_free(m, fields, ctl.guidance_scale, keys=condition_keys, null=ctl.null,
                                                  uncond_model=uncond))
    if ctl.guidance is not None:
        wrappers.extend(ctl.guidance if isinstance(ctl.guidance, Sequence) else [ctl.guidance])
    k = ctl.particles or 1
    mode = ctl.inpaint or ("smc" if k > 1 else "replace")
    if mode not in ("replace", "smc", "guidance"):
        raise ValueError(f"inpaint must be 'replace', 'smc' or 'guidance', got {ctl.inpaint!r}")
    obs = as_observation(ctl.observed) if ctl.observed is not None else None
    if obs is not None and mode == "guidance":
        wrappers.append(lambda m: reconstruction_guidance(m, fields, obs, scale=ctl.observation_scale))
    pots = list(ctl.potentials) + ([RewardTilt(ctl.reward, ctl.beta)] if ctl.reward is not None else [])
    wrap = compose(*wrappers)
    if obs is not None and mode == "replace" and k == 1 and not pots and not single and _all_absorbing(fields):
        # masked diffusion never re-masks a token: observed tokens in the start state are the exact
        # conditional (any absorbing sampler, first_hitting's own loop included)
        shape_or_state, obs = _given_tokens(fields, dict(shape_or_state), obs, run.get("device")), None
    if k == 1 and not pots and (obs is None or mode == "guidance"):
        return sample(model, process, shape_or_state, settings, wrap_model=wrap, **run, **rest)
    return steer(model, process, shape_or_state, settings, particles=k, potentials=pots,
                 ess_threshold=ctl.ess_threshold, observed=obs if mode != "guidance" else None, repaint=ctl.repaint,
                 jump=ctl.jump, observation_weights=obs is not None and mode == "smc" and k > 1, wrap_model=wrap,
                 **run, **rest)
