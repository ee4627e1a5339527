"""Discrete processes over tokens: absorbing (mask) and uniform.

``alpha(t)`` is the probability that a token still carries its clean value at time ``t``
(1 at t = 0, 0 at t = 1). Absorbing noise replaces a token by the mask id; uniform noise by a
uniformly drawn token. Both give closed-form marginals, posteriors and reverse rates, which
the categorical samplers and the masked-diffusion ELBO use. All probability arithmetic that
feeds a draw is done in float64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..registry import Registry

MASK_SCHEDULES: Registry = Registry("masking schedule")


class MaskSchedule:
    """``alpha(t)`` (probability of keeping the clean token) and its derivative."""

    def alpha(self, t: Tensor) -> Tensor:
        """Probability that a token is still clean at time ``t`` (1 at t = 0, near 0 at t = 1)."""
        raise NotImplementedError

    def dalpha(self, t: Tensor) -> Tensor:
        """``d alpha / dt`` (negative): how fast tokens are masked; the ELBO's weight."""
        raise NotImplementedError

    def t_of_alpha(self, alpha: Tensor) -> Tensor:
        """The inverse of :meth:`alpha`, for samplers that step in alpha (first hitting)."""
        raise NotImplementedError


@MASK_SCHEDULES.register("linear", "alpha = 1 - (1 - eps) t (MDLM's log-linear noise)")
@dataclass
class LinearMask(MaskSchedule):
    eps: float = 1e-3

    def alpha(self, t: Tensor) -> Tensor:
        return 1 - (1 - self.eps) * t

    def dalpha(self, t: Tensor) -> Tensor:
        return torch.full_like(t, -(1 - self.eps))

    def t_of_alpha(self, alpha: Tensor) -> Tensor:
        return (1 - alpha) / (1 - self.eps)


@MASK_SCHEDULES.register("cosine", "alpha = cos(pi t / 2)")
@dataclass
class CosineMask(MaskSchedule):
    def alpha(self, t: Tensor) -> Tensor:
        return torch.cos(0.5 * math.pi * t)

    def dalpha(self, t: Tensor) -> Tensor:
        return -0.5 * math.pi * torch.sin(0.5 * math.pi * t)

    def t_of_alpha(self, alpha: Tensor) -> Tensor:
        return torch.arccos(alpha.clamp(-1, 1)) * 2 / math.pi


class CategoricalProcess:
    """Common part of the absorbing and uniform processes over ``vocab`` clean tokens."""

    kind = "categorical"
    t_min, t_max = 0.0, 1.0

    def __init__(self, vocab: int, schedule: MaskSchedule | str = "linear") -> None:
        if vocab < 1:
            raise ValueError(f"vocab must be positive, got {vocab}")
        self.vocab = vocab
        self.schedule = MASK_SCHEDULES.build(schedule) if isinstance(schedule, str) else schedule

    @property
    def n_states(self) -> int:
        """Number of token values a noisy sequence may hold."""
        return self.vocab

    def alpha(self, t: Tensor) -> Tensor:
        """Probability that a token is still clean at ``t`` (the schedule's ``alpha``)."""
        return self.schedule.alpha(t)

    def rate(self, t: Tensor) -> Tensor:
        """Corruption rate ``-alpha'(t) / alpha(t)``."""
        return -self.schedule.dalpha(t) / self.schedule.alpha(t)


class Absorbing(CategoricalProcess):
    """Masked (absorbing-state) diffusion: tokens jump once, to ``mask_id`` (= vocab)."""

    @property
    def mask_id(self) -> int:
        """The mask token's index: one past the vocabulary."""
        return self.vocab

    @property
    def n_states(self) -> int:
        return self.vocab + 1

    def prior_sample(self, shape: tuple[int, ...], device: torch.device | str = "cpu") -> Tensor:
        """The prior at t = 1: every token masked."""
        return torch.full(shape, self.mask_id, dtype=torch.long, device=device)

    def q_sample(self, x0: Tensor, t: Tensor, u: Tensor) -> Tensor:
        """Corrupt ``x0`` (B, L) at times ``t`` (B,) with uniforms ``u`` (B, L)."""
        keep = u < _bcast(self.alpha(t), x0)
        return torch.where(keep, x0, torch.full_like(x0, self.mask_id))

    def posterior_probs(self, x_t: Tensor, p0: Tensor, t: Tensor, s: Tensor) -> Tensor:
        """``p(x_s | x_t)`` over ``n_states`` given the clean-token distribution ``p0`` (B, L, V).

        A masked token unmasks to ``v`` with probability ``(alpha_s - alpha_t) / (1 - alpha_t)
        * p0(v)`` and stays masked otherwise; an unmasked token stays.
        """
        a_t = _bcast(self.alpha(t), x_t).double()
        a_s = _bcast(self.alpha(s), x_t).double()
        move = ((a_s - a_t) / (1 - a_t).clamp_min(1e-30)).clamp(0, 1)
        probs = torch.cat([p0.double() * move[..., None], (1 - move)[..., None]], dim=-1)
        keep = torch.nn.functional.one_hot(x_t, self.n_states).double()
        masked = (x_t == self.mask_id)[..., None]
        return torch.where(masked, probs, keep)

    def reverse_rates(self, x_t: Tensor, p0: Tensor, t: Tensor) -> Tensor:
        """Backward jump rates out of ``x_t`` (B, L, n_states), zero on the diagonal."""
        a_t = _bcast(self.alpha(t), x_t).double()
        da = _bcast(self.schedule.dalpha(t), x_t).double()
        r = (-da / (1 - a_t).clamp_min(1e-30))[..., None] * p0.double()
        r = torch.cat([r, torch.zeros_like(r[..., :1])], dim=-1)
        return r * (x_t == self.mask_id)[..., None]


class Uniform(CategoricalProcess):
    """Uniform-noise discrete diffusion: a corrupted token is uniform over the vocabulary."""

    def prior_sample(self, shape: tuple[int, ...], u: Tensor | None = None,
                     device: torch.device | str = "cpu") -> Tensor:
        """The prior at t = 1: tokens uniform over the vocabulary (from uniforms ``u`` when given)."""
        if u is None:
            return torch.randint(0, self.vocab, shape, device=device)
        return torch.clamp((u * self.vocab).long(), max=self.vocab - 1)

    def q_sample(self, x0: Tensor, t: Tensor, u: Tensor, u2: Tensor) -> Tensor:
        """Corrupt ``x0`` (B, L) at ``t`` (B,): keep a token where ``u < alpha(t)``, else draw it from ``u2``."""
        keep = u < _bcast(self.alpha(t), x0)
        rnd = torch.clamp((u2 * self.vocab).long(), max=self.vocab - 1)
        return torch.where(keep, x0, rnd)

    def _q(self, a: Tensor) -> tuple[Tensor, Tensor]:
        """``q(x_t = x0 | x0)`` and ``q(x_t = y != x0 | x0)`` for keep-probability ``a``."""
        return a + (1 - a) / self.vocab, (1 - a) / self.vocab

    def posterior_probs(self, x_t: Tensor, p0: Tensor, t: Tensor, s: Tensor) -> Tensor:
        """``p(x_s | x_t) = sum_x0 p0(x0) q(x_t | x_s) q(x_s | x0) / q(x_t | x0)``."""
        V = self.vocab
        a_t = _bcast(self.alpha(t), x_t).double()[..., None]
        a_s = _bcast(self.alpha(s), x_t).double()[..., None]
        a_ts = a_t / a_s
        p0 = p0.double()
        onehot_t = torch.nn.functional.one_hot(x_t, V).double()
        same, diff = self._q(a_t)
        q_t_given_x0 = onehot_t * same + (1 - onehot_t) * diff  # as a function of x0 = k
        ratio = p0 / q_t_given_x0  # p0(x0) / q(x_t | x0)
        # q(x_s = k | x0) = a_s [k = x0] + (1 - a_s) / V
        inner = a_s * ratio + (1 - a_s) / V * ratio.sum(-1, keepdim=True)
        # q(x_t | x_s = k) = a_ts [x_t = k] + (1 - a_ts) / V
        trans = a_ts * onehot_t + (1 - a_ts) / V
        probs = trans * inner
        return probs / probs.sum(-1, keepdim=True)

    def reverse_rates(self, x_t: Tensor, p0: Tensor, t: Tensor) -> Tensor:
        """Backward rates ``R(x -> y) = beta / V * sum_x0 p0(x0) q(y | x0) / q(x | x0)``."""
        V = self.vocab
        a_t = _bcast(self.alpha(t), x_t).double()[..., None]
        beta = _bcast(self.rate(t), x_t).double()[..., None]
        onehot_t = torch.nn.functional.one_hot(x_t, V).double()
        same, diff = self._q(a_t)
        ratio = p0.double() / (onehot_t * same + (1 - onehot_t) * diff)
        score = a_t * ratio + (1 - a_t) / V * ratio.sum(-1, keepdim=True)  # sum_x0 ratio q(y|x0)
        rates = beta / V * score
        return rates * (1 - onehot_t)


def _bcast(v: Tensor, x: Tensor) -> Tensor:
    """A per-sample (B,) or per-token (B, L) value broadcast against tokens ``x`` (B, L)."""
    if v.dim() == 0:
        return v.expand_as(x)
    return v.reshape(*v.shape, *([1] * (x.dim() - v.dim()))).expand_as(x)
