"""Field structures: which noise a field admits and which subspace it lives in.

A structure maps i.i.d. normal draws to admissible noise (``noise``), projects a tensor onto
the field's subspace (``project``), and tells which entries are free (``weights``) and how
many degrees of freedom a sample has (``dof``). Masks are other entries of the state,
named by key, of shape (B, N): node or atom flags, token padding.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

State = Mapping[str, Tensor]


def _mask_for(x: Tensor, state: State, key: str | None, dims: int = 1) -> Tensor | None:
    """The (B, N) mask ``state[key]`` broadcast against ``x`` (B, N, ...)."""
    if key is None:
        return None
    if key not in state:
        raise KeyError(f"structure needs the mask {key!r} in the state; state has {sorted(state)}")
    m = state[key].to(x.dtype)
    return m.reshape(*m.shape, *([1] * (x.dim() - m.dim())))


@dataclass(frozen=True)
class Plain:
    """Unconstrained: every entry is free."""

    # squared norm of the full tensor per unit squared norm over the free entries (2 for a
    # symmetric matrix, whose free entries each appear twice); used by likelihoods
    noise_gain = 1.0

    def noise(self, z: Tensor, state: State) -> Tensor:
        """Admissible noise from i.i.d. normal draws ``z`` (here: ``z`` itself)."""
        return z

    def project(self, x: Tensor, state: State) -> Tensor:
        """``x`` projected onto the field's subspace; samplers apply it to every prediction."""
        return x

    def weights(self, x: Tensor, state: State) -> Tensor:
        """1 where an entry is free, 0 where it is held (losses average over the free ones)."""
        return torch.ones_like(x)

    def dof(self, x: Tensor, state: State) -> Tensor:
        """Degrees of freedom per sample (B,), for likelihoods and per-dimension losses."""
        return torch.full((x.shape[0],), float(x[0].numel()), device=x.device)


@dataclass(frozen=True)
class Masked(Plain):
    """Padded sets: entries where ``state[mask]`` is 0 are held at zero."""

    mask: str = "mask"

    def noise(self, z: Tensor, state: State) -> Tensor:
        return z * _mask_for(z, state, self.mask)

    def project(self, x: Tensor, state: State) -> Tensor:
        return x * _mask_for(x, state, self.mask)

    def weights(self, x: Tensor, state: State) -> Tensor:
        return _mask_for(x, state, self.mask).expand_as(x)

    def dof(self, x: Tensor, state: State) -> Tensor:
        return self.weights(x, state).flatten(1).sum(1)


@dataclass(frozen=True)
class ZeroCoM(Plain):
    """Coordinates (B, N, D) with zero (masked) centre of mass: the translation-invariant
    subspace used by E(3)-equivariant molecule models."""

    mask: str | None = None

    def project(self, x: Tensor, state: State) -> Tensor:
        m = _mask_for(x, state, self.mask)
        if m is None:
            return x - x.mean(dim=1, keepdim=True)
        n = m.sum(dim=1, keepdim=True).clamp_min(1)
        return (x - (x * m).sum(dim=1, keepdim=True) / n) * m

    def noise(self, z: Tensor, state: State) -> Tensor:
        return self.project(z, state)

    def weights(self, x: Tensor, state: State) -> Tensor:
        m = _mask_for(x, state, self.mask)
        return torch.ones_like(x) if m is None else m.expand_as(x)

    def dof(self, x: Tensor, state: State) -> Tensor:
        m = _mask_for(x, state, self.mask)
        n = torch.full((x.shape[0],), float(x.shape[1]), device=x.device) if m is None else m.flatten(1).sum(1)
        return (n - 1) * x.shape[-1]


@dataclass(frozen=True)
class Symmetric(Plain):
    """Adjacency-like fields (B, N, N) or (B, N, N, C): symmetric, zero diagonal, rows and
    columns of absent nodes held at zero. Off-diagonal noise has unit variance."""

    mask: str | None = None
    noise_gain = 2.0

    def _pair_mask(self, x: Tensor, state: State) -> Tensor:
        n = x.shape[1]
        off = 1 - torch.eye(n, device=x.device, dtype=x.dtype)
        pm = off.reshape(1, n, n, *([1] * (x.dim() - 3)))
        if self.mask is not None:
            m = state[self.mask].to(x.dtype)
            pm = pm * (m[:, :, None] * m[:, None, :]).reshape(x.shape[0], n, n, *([1] * (x.dim() - 3)))
        return pm

    def noise(self, z: Tensor, state: State) -> Tensor:
        upper = torch.triu(z.movedim((1, 2), (-2, -1)), diagonal=1).movedim((-2, -1), (1, 2))
        return (upper + upper.transpose(1, 2)) * self._pair_mask(z, state)

    def project(self, x: Tensor, state: State) -> Tensor:
        return 0.5 * (x + x.transpose(1, 2)) * self._pair_mask(x, state)

    def weights(self, x: Tensor, state: State) -> Tensor:
        return self._pair_mask(x, state).expand_as(x)

    def dof(self, x: Tensor, state: State) -> Tensor:
        return 0.5 * self.weights(x, state).flatten(1).sum(1)


STRUCTURES = {"plain": Plain, "masked": Masked, "zero_com": ZeroCoM, "symmetric": Symmetric}


def masked_mean(x: Tensor, w: Tensor) -> Tensor:
    """Per-sample mean of ``x`` over entries with weight ``w``: shape (B,)."""
    w = w.expand_as(x)
    return (x * w).flatten(1).sum(1) / w.flatten(1).sum(1).clamp_min(1e-12)
