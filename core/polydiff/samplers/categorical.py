"""Categorical samplers: ancestral, tau-leaping and the first-hitting sampler.

Every draw is made in float64 (:func:`polydiff.random.sample_categorical`). Ancestral and
tau-leaping steps share the signature ``step(tokens, p0, t, s, process, noise) -> tokens``
with ``p0`` the model's clean-token probabilities (B, L, V) and ``t``, ``s`` (B,) times, so
they run inside the common driver next to Gaussian fields. The first-hitting sampler has its
own loop: it is exact for absorbing processes and needs no grid.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ..processes.categorical import Absorbing, CategoricalProcess
from ..random import Noise, sample_categorical
from .base import register


@register("ancestral", "exact posterior step p(x_s | x_t) of the discrete process (D3PM / MDLM)",
          kind="categorical", stochastic=True)
def ancestral(x: Tensor, p0: Tensor, t: Tensor, s: Tensor, process: CategoricalProcess, noise: Noise) -> Tensor:
    probs = process.posterior_probs(x, p0, t, s)
    return sample_categorical(probs, noise.rand(x.shape[1:]).to(x.device))


@register("tau_leaping", "tau-leaping: at most one jump per token, probability rate x dt (Campbell et al.)",
          kind="categorical", stochastic=True)
def tau_leaping(x: Tensor, p0: Tensor, t: Tensor, s: Tensor, process: CategoricalProcess, noise: Noise) -> Tensor:
    dt = (t - s).reshape(-1, *([1] * (x.dim() - 1)))[..., None]
    jump = process.reverse_rates(x, p0, t) * dt
    total = jump.sum(-1, keepdim=True)
    scale = torch.where(total > 1, 1 / total, torch.ones_like(total))  # leap probabilities clipped at 1
    jump = jump * scale
    stay = torch.nn.functional.one_hot(x, process.n_states).double() * (1 - jump.sum(-1, keepdim=True))
    return sample_categorical(jump + stay, noise.rand(x.shape[1:]).to(x.device))


def first_hitting(model: Callable[..., Tensor], process: Absorbing, shape: tuple[int, int], *,
                  seed: int | Tensor | None = None, generator: torch.Generator | None = None,
                  tokens_per_step: int = 1, cond: Any = None, device: torch.device | str = "cpu",
                  dtype: torch.dtype = torch.float32, x: Tensor | None = None) -> Tensor:
    """First-hitting sampler for absorbing (masked) diffusion (Zheng et al., 2024).

    With ``n`` masked tokens at time ``t``, all stay masked until ``s`` with probability
    ``((1 - alpha_s) / (1 - alpha_t))**n``, so the time of the next unmasking is drawn
    exactly, ``1 - alpha_s = (1 - alpha_t) u**(1/n)``; one masked position, chosen uniformly,
    is then filled from the model's clean-token distribution. The result has the law of the
    ancestral sampler with infinitely many steps, in ``L / tokens_per_step`` model calls.
    ``tokens_per_step > 1`` unmasks several tokens per call (an approximation).

    ``model(tokens, t[, cond]) -> logits (B, L, V)``. ``x`` may hold a partially masked start
    (infilling); times are per sample.
    """
    B, L = shape
    noise = Noise(B, seed=seed, generator=generator, device=device)
    x = process.prior_sample((B, L), device=device) if x is None else x.clone()
    t = torch.ones(B, dtype=torch.float64, device=device)
    most = int((x == process.mask_id).sum(1).max())  # once, before the loop
    steps = -(-most // tokens_per_step)
    for _ in range(steps):
        masked = x == process.mask_id
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
        logits = model(x, tm) if cond is None else model(x, tm, cond)
        p0 = torch.softmax(logits.to(torch.float64), dim=-1)
        # choose which masked positions to reveal: uniformly at random (random keys)
        keys = torch.where(masked, noise.rand((L,)).to(x.device), torch.full_like(t[:, None].expand(B, L), 2.0))
        order = torch.argsort(keys, dim=1)
        rank = torch.argsort(order, dim=1)
        reveal = masked & (rank < k.long()[:, None])
        draw = sample_categorical(p0, noise.rand((L,)).to(x.device))
        x = torch.where(reveal, draw, x)
        t = s
    return x
