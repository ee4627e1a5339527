"""Categorical samplers: ancestral, tau-leaping and the first-hitting sampler.

Every draw is made in float64 (:func:`polydiff.random.sample_categorical`). Ancestral and
tau-leaping steps share the signature ``step(tokens, p0, t, s, process, ctx) -> tokens``
with ``p0`` the model's clean-token probabilities (B, L, V), ``t``, ``s`` (B,) times and a
:class:`~polydiff.samplers.base.CategoricalContext`, so they run inside the common loop next
to Gaussian fields (which keeps tokens outside a field's mask as they are). The first-hitting
sampler has its own loop (registered with ``loop="own"``): it is exact for absorbing
processes, needs no grid, and is chosen with ``sampler="first_hitting"`` for states whose
fields are all absorbing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from ..processes.categorical import Absorbing, CategoricalProcess
from ..random import Noise, sample_categorical
from ..registry import no_option
from ..state import FieldSpec, State, field_mask
from .base import CategoricalContext, SampleSettings, register


@register("ancestral", "exact posterior step p(x_s | x_t) of the discrete process (D3PM / MDLM)",
          kind="categorical", stochastic=True)
def ancestral(x: Tensor, p0: Tensor, t: Tensor, s: Tensor, process: CategoricalProcess,
              ctx: CategoricalContext) -> Tensor:
    probs = process.posterior_probs(x, p0, t, s)
    return sample_categorical(probs, ctx.noise.rand(x.shape[1:]).to(x.device))


@register("tau_leaping", "tau-leaping: at most one jump per token, probability rate x dt (Campbell et al.)",
          kind="categorical", stochastic=True)
def tau_leaping(x: Tensor, p0: Tensor, t: Tensor, s: Tensor, process: CategoricalProcess,
                ctx: CategoricalContext) -> Tensor:
    noise = ctx.noise
    dt = (t - s).reshape(-1, *([1] * (x.dim() - 1)))[..., None]
    jump = process.reverse_rates(x, p0, t) * dt
    total = jump.sum(-1, keepdim=True)
    scale = torch.where(total > 1, 1 / total, torch.ones_like(total))  # leap probabilities clipped at 1
    jump = jump * scale
    stay = torch.nn.functional.one_hot(x, process.n_states).double() * (1 - jump.sum(-1, keepdim=True))
    return sample_categorical(jump + stay, noise.rand(x.shape[1:]).to(x.device))


def first_hitting(model: Callable[..., Tensor], process: Absorbing, shape: tuple[int, ...], *,
                  seed: int | Tensor | None = None, generator: torch.Generator | None = None,
                  tokens_per_step: int = 1, cond: Any = None, device: torch.device | str = "cpu",
                  dtype: torch.dtype = torch.float32, x: Tensor | None = None, valid: Tensor | None = None,
                  noise: Noise | None = None, precision: str = "float64") -> Tensor:
    """First-hitting sampler for absorbing (masked) diffusion (Zheng et al., 2024).

    With ``n`` masked tokens at time ``t``, all stay masked until ``s`` with probability
    ``((1 - alpha_s) / (1 - alpha_t))**n``, so the time of the next unmasking is drawn
    exactly, ``1 - alpha_s = (1 - alpha_t) u**(1/n)``; one masked position, chosen uniformly,
    is then filled from the model's clean-token distribution. The result has the law of the
    ancestral sampler with infinitely many steps, in ``L / tokens_per_step`` model calls.
    ``tokens_per_step > 1`` unmasks several tokens per call (an approximation).

    ``model(tokens, t[, cond]) -> logits (*shape, V)``. ``x`` may hold a partially masked start
    (infilling); ``valid`` (bool, broadcasting against ``shape``) marks the positions that are
    generated (padding outside it is never unmasked); times are per sample. ``noise`` replaces
    ``seed`` / ``generator`` by an existing stream.

    ``precision``: the categorical draws. ``"float64"`` (the default) draws by inverse CDF in
    float64, exact. ``"float32"`` draws as MDLM's released sampler did, an exponential race
    (Gumbel-max) in float32 with float32 uniforms (multiples of 2^-24, so the exponentials stop
    near 6e-8, i.e. the Gumbel noise is cut off near 16.6): the truncated tail lowers the
    effective temperature (Zheng et al. 2024 traced MDLM's low generative perplexity to it);
    an option only so that the effect can be measured.
    """
    if precision not in ("float64", "float32"):
        raise ValueError(f"first_hitting: precision must be 'float64' or 'float32', got {precision!r}")
    B = shape[0]
    if noise is None:
        noise = Noise(B, seed=seed, generator=generator, device=device)
    x = process.prior_sample(tuple(shape), device=device) if x is None else x.clone()
    flat = x.reshape(B, -1)
    L = flat.shape[1]
    ok = torch.ones_like(flat, dtype=torch.bool) if valid is None else valid.expand_as(x).reshape(B, -1)
    if valid is not None:
        flat = torch.where(ok | (flat != process.mask_id), flat, torch.zeros_like(flat))  # padding: token 0
    t = torch.ones(B, dtype=torch.float64, device=flat.device)
    most = int(((flat == process.mask_id) & ok).sum(1).max())  # once, before the loop
    steps = -(-most // tokens_per_step)
    for _ in range(steps):
        masked = (flat == process.mask_id) & ok
        n = masked.sum(1).clamp_min(1).double()
        u = noise.rand(())
        alpha_t = process.alpha(t)
        k = torch.minimum(n, torch.full_like(n, float(tokens_per_step)))
        # time at which the k-th of n masked tokens unmasks: the k-th order statistic, drawn via
        # the minimum when k = 1 (exact) and its expectation-matched power otherwise
        new_one_minus = (1 - alpha_t) * u ** (k / n)
        s = process.schedule.t_of_alpha((1 - new_one_minus).clamp(max=1.0)).clamp(0, 1)
        s = torch.where(masked.any(1), s, t)
        tm = s.to(dtype)
        cur = flat.reshape(x.shape)
        logits = model(cur, tm) if cond is None else model(cur, tm, cond)
        p0 = torch.softmax(logits.to(torch.float64), dim=-1).reshape(B, L, -1)
        # choose which masked positions to reveal: uniformly at random (random keys)
        keys = torch.where(masked, noise.rand((L,)).to(flat.device), torch.full_like(t[:, None].expand(B, L), 2.0))
        order = torch.argsort(keys, dim=1)
        rank = torch.argsort(order, dim=1)
        reveal = masked & (rank < k.long()[:, None])
        if precision == "float64":
            draw = sample_categorical(p0, noise.rand((L,)).to(flat.device))
        else:
            draw = _gumbel_max_float32(logits.reshape(B, L, -1), noise.rand((L, p0.shape[-1])).to(flat.device))
        flat = torch.where(reveal, draw, flat)
        t = s
    return flat.reshape(x.shape)


def _gumbel_max_float32(logits: Tensor, u: Tensor) -> Tensor:
    """The draw of MDLM / SEDD / EDLM's released samplers, ``argmax(p / (1e-10 - log(u + 1e-10)))``
    (an exponential race, i.e. Gumbel-max) computed in float32 with float32 uniforms as
    ``torch.rand`` makes them (multiples of 2^-24 in [0, 1)): the exponentials cannot fall below
    about 6e-8, which truncates the race's tail."""
    u32 = (torch.floor(u * 2**24) / 2**24).float()
    probs = torch.softmax(logits.float(), dim=-1)
    return torch.argmax(probs / (1e-10 - torch.log(u32 + 1e-10)), dim=-1)


@register("first_hitting", "first-hitting sampler for absorbing fields (Zheng et al. 2024): one token unmasked per "
          "model call at its exactly drawn first-hitting time; no grid (steps is ignored)",
          kind="categorical", stochastic=True, loop="own", uses_steps=False, tokens_per_step=1, precision="float64")
def first_hitting_loop(model: Callable[..., Any], fields: Mapping[str, FieldSpec], state: State, noise: Noise,
                       settings: SampleSettings, *, cond: Any = None,
                       callback: Callable[[dict[str, Any]], None] | None = None) -> State:
    """:func:`first_hitting` on a state-level model: the state's one absorbing field is
    generated (its masked positions inside the field's mask), every other entry is passed
    through; ``model(state, t[, cond]) -> {field: logits}``."""
    names = list(fields)
    if len(names) != 1 or not isinstance(fields[names[0]].process, Absorbing):
        def kind(k: str) -> str:
            f = fields[k]
            return f.kind if f.kind != "categorical" else f"categorical, {type(f.process).__name__} noise"

        raise ValueError("sampler 'first_hitting' generates one absorbing (masked) categorical field; this state has "
                         f"fields {', '.join(f'{k} ({kind(k)})' for k in names)}")
    (name,) = names
    opts = {"tokens_per_step": 1, "precision": "float64", **dict(settings.options)}
    unknown = sorted(set(opts) - {"tokens_per_step", "precision"})
    if unknown:
        raise ValueError(no_option("sampler 'first_hitting'", unknown, ["tokens_per_step", "precision"]))
    spec = fields[name]
    x = state[name]
    valid = field_mask(spec, state, x)
    aux = {k: v for k, v in state.items() if k != name}
    calls = [0]

    def field_model(tokens: Tensor, t: Tensor, c: Any = None) -> Tensor:
        st = {**aux, name: tokens}
        out = model(st, t) if c is None else model(st, t, c)
        if callback is not None:
            callback({"i": calls[0], "t": t, "state": st, "out": out})
        calls[0] += 1
        return out[name]

    tokens = first_hitting(field_model, spec.process, tuple(x.shape), noise=noise,
                           tokens_per_step=int(opts["tokens_per_step"]), cond=cond, dtype=settings.dtype, x=x,
                           valid=valid, precision=str(opts["precision"]))
    return {**state, name: tokens}
