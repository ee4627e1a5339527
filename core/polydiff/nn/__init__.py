"""Small shared network pieces: time embeddings, a residual MLP, condition embeddings.

Conditions are ordinary entries of the state (``state["label"]``, ``state["temperature"]``),
described in a dataset's ``info["conditions"]`` by specs such as ``{"kind": "class",
"num_classes": 8}``, ``{"kind": "scalar", "low": 0, "high": 1}`` or ``{"kind": "vector",
"dim": 16}``. A *dropped* condition (classifier-free guidance) is written in place with a
sentinel, ``-1`` for class labels and NaN for real values, or left out of the state
altogether; :class:`ConditionEmbedding` maps both to a learned null embedding (Ho & Salimans
2022, "Classifier-free diffusion guidance"). Conditions are dropped by
:func:`polydiff.guidance.null_state` when guiding and :func:`polydiff.guidance.drop_condition`
when training with ``loss.cond_drop``.

Equivariant layers for point sets live in :mod:`polydiff.nn.egnn` and are re-exported here:
:class:`EGNNLayer` (one masked E(n)-equivariant message-passing step, Satorras et al. 2021) and
:class:`EGNN` (an embedding, a stack of those layers and an output head).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from .egnn import EGNN as EGNN
from .egnn import EGNNLayer as EGNNLayer


def time_input(schedule: Any, t: Tensor) -> Tensor:
    """A schedule-independent scalar time input: ``-lam(t) / 4`` clamped to [-6, 6].

    For ``alpha = 1`` this is EDM's ``c_noise = log(sigma) / 4`` (Karras et al. 2022); using the
    log-SNR makes VP, VE, EDM and flow-matching times look alike to the network.
    """
    lam = schedule.lam(t.to(torch.float64))
    return torch.nan_to_num(-lam / 4, nan=0.0, posinf=6.0, neginf=-6.0).clamp(-6.0, 6.0).to(torch.float32)


def shared_time(t: Tensor | float, batch: int) -> Tensor:
    """Times ``t`` (a scalar, (1,) or (B,)) as one time (1,) when they are provably the same for
    the whole batch, else as (B,).

    Samplers pass a grid time as a stride-0 view of one value (and dynamics one fixed time), so
    a network that embeds ``shared_time(t, B)`` computes its time embedding, and every layer that
    depends on time alone (FiLM projections, schedule coefficients), once per batch instead of
    once per sample, and broadcasts the (1, ...) result. The test reads strides, never values:
    no host synchronisation, and a graph under ``torch.compile``. Training's per-sample times
    are (B,) and pass through unchanged."""
    t = torch.as_tensor(t).reshape(-1)
    if t.numel() == 1 or (t.numel() > 1 and t.stride(0) == 0):
        return t[:1]
    if t.numel() != batch:
        raise ValueError(f"times must be a scalar, (1,) or ({batch},) for a batch of {batch}; got {t.numel()}")
    return t


def at_least_float32(x: Tensor) -> Tensor:
    """``x`` in float32 when its dtype is lower (bfloat16, float16), else unchanged: for the
    parts of a network that must not run in low precision (small guards such as 1e-8 round to
    0 in float16; geometry, volumes and time features lose too much in bfloat16)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def input_scale(alpha: Tensor, sigma: Tensor, sigma_data: float) -> Tensor:
    """EDM's ``c_in = 1 / sqrt(alpha^2 sigma_data^2 + sigma^2)``: unit-variance network inputs."""
    return torch.rsqrt(alpha**2 * sigma_data**2 + sigma**2)


def precondition(out: Tensor, x: Tensor, alpha: Tensor, sigma: Tensor, sigma_data: float) -> tuple[Tensor, Tensor]:
    """EDM's preconditioning for any affine process ``x = alpha x0 + sigma eps``: turn a raw
    network output ``out = F(c_in x)`` into well-conditioned estimates ``(x0, eps)``.

    With ``v = alpha^2 sigma_data^2 + sigma^2`` (Karras et al. 2022, Table 1, written for
    ``alpha != 1``): ``x0 = alpha sigma_data^2 / v * x + sigma sigma_data / sqrt(v) * F`` and,
    solving ``x = alpha x0 + sigma eps`` without dividing by a small alpha or sigma,
    ``eps = sigma / v * x - alpha sigma_data / sqrt(v) * F``. A bounded ``F`` gives bounded
    estimates at both ends of the path, where a raw eps-network's error is amplified by
    ``sigma / alpha`` (the outliers of eps-prediction near pure noise).
    ``alpha`` and ``sigma`` broadcast against ``x``.
    """
    v = alpha**2 * sigma_data**2 + sigma**2
    r = torch.rsqrt(v)
    x0 = alpha * sigma_data**2 / v * x + sigma * sigma_data * r * out
    eps = sigma / v * x - alpha * sigma_data * r * out
    return x0, eps


class SinusoidalEmbedding(nn.Module):
    """Transformer-style features ``[cos(w_i s x), sin(w_i s x)]`` with geometric frequencies
    ``w_i = max_period^(-i / half)`` (Vaswani et al. 2017; DDPM's timestep embedding)."""

    def __init__(self, dim: int, scale: float = 100.0, max_period: float = 10_000.0) -> None:
        super().__init__()
        half = dim // 2
        self.register_buffer("freqs", scale * torch.exp(-math.log(max_period) * torch.arange(half) / half),
                             persistent=False)
        self.dim = dim

    def forward(self, x: Tensor) -> Tensor:
        arg = x.reshape(-1, 1).float() * self.freqs
        emb = torch.cat([torch.cos(arg), torch.sin(arg)], dim=-1)
        return nn.functional.pad(emb, (0, self.dim - emb.shape[-1]))


class FourierEmbedding(nn.Module):
    """Random Fourier features ``[cos(2 pi W x), sin(2 pi W x)]`` with fixed ``W ~ N(0, std^2)``
    (Tancik et al. 2020; score_sde's Gaussian Fourier projection). ``W`` is seeded, and saved."""

    def __init__(self, dim: int, std: float = 1.0, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("w", std * torch.randn(dim // 2, generator=g))
        self.dim = dim

    def forward(self, x: Tensor) -> Tensor:
        arg = 2 * math.pi * x.reshape(-1, 1).float() * self.w
        emb = torch.cat([torch.cos(arg), torch.sin(arg)], dim=-1)
        return nn.functional.pad(emb, (0, self.dim - emb.shape[-1]))


class TimeEmbedding(nn.Module):
    """Scalar time input -> features (sinusoidal or Fourier) -> a two-layer MLP."""

    def __init__(self, dim: int, kind: str = "sinusoidal", **options: float) -> None:
        super().__init__()
        kinds = {"sinusoidal": SinusoidalEmbedding, "fourier": FourierEmbedding}
        if kind not in kinds:
            raise ValueError(f"unknown time embedding {kind!r}; allowed: {', '.join(kinds)}")
        self.features = kinds[kind](dim, **options)
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, x: Tensor) -> Tensor:
        feats = self.features(x)  # float32 features: a bf16 phase would be coarse
        return self.mlp(feats.to(self.mlp[0].weight.dtype) if isinstance(self.mlp[0], nn.Linear) else feats)


class ResidualBlock(nn.Module):
    """``h + W2 silu(W1 (norm(h) * (1 + scale) + shift))`` with FiLM scale/shift from an embedding."""

    def __init__(self, hidden: int, emb_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden, elementwise_affine=False)
        self.film = nn.Linear(emb_dim, 2 * hidden)
        self.fc1 = nn.Linear(hidden, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        nn.init.zeros_(self.fc2.weight)  # each block starts as the identity
        nn.init.zeros_(self.fc2.bias)

    def forward(self, h: Tensor, emb: Tensor) -> Tensor:
        scale, shift = self.film(emb).chunk(2, dim=-1)
        return h + self.fc2(nn.functional.silu(self.fc1(self.norm(h) * (1 + scale) + shift)))


class ResidualMLP(nn.Module):
    """A residual MLP ``(x (B, in), emb (B, emb_dim)) -> (B, out)``: the denoiser of vectors.
    ``emb`` may be (1, emb_dim), one embedding for the whole batch (:func:`shared_time`): it is
    broadcast, and its FiLM projections are computed once."""

    def __init__(self, in_dim: int, out_dim: int, hidden: int = 128, depth: int = 3, emb_dim: int = 64) -> None:
        super().__init__()
        self.inp = nn.Linear(in_dim, hidden)
        self.blocks = nn.ModuleList(ResidualBlock(hidden, emb_dim) for _ in range(depth))
        self.out = nn.Sequential(nn.LayerNorm(hidden), nn.SiLU(), nn.Linear(hidden, out_dim))

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        dt = self.inp.weight.dtype  # inputs in the network's own dtype (it may run in bf16)
        h, emb = self.inp(x.to(dt)), emb.to(dt)
        for block in self.blocks:
            h = block(h, emb)
        return self.out(h)


class ConditionEmbedding(nn.Module):
    """Embed the condition entries of a state, summed into one (B, dim) vector.

    ``specs`` maps state keys to ``{"kind": "class", "num_classes": K}``, ``{"kind":
    "scalar", "low": a, "high": b, "basis": 16}`` (a Gaussian radial-basis expansion over
    [a, b], as SchNet expands distances), ``{"kind": "vector", "dim": d}`` or ``{"kind":
    "tokens", "num_classes": V}`` (a (B, L) sequence of token ids such as a tokenised caption,
    0 = padding: the mean of its token embeddings through an MLP, a bag of words). A key missing
    from the state, a label of -1, a NaN value or a token row without any token >= 1 selects
    that key's learned null embedding.
    """

    def __init__(self, specs: Mapping[str, Mapping[str, Any]], dim: int) -> None:
        super().__init__()
        self.specs = {k: dict(v) for k, v in specs.items()}
        self.embed = nn.ModuleDict()
        self.null = nn.ParameterDict()
        for key, spec in self.specs.items():
            kind = spec.get("kind")
            if kind == "class":
                self.embed[key] = nn.Embedding(int(spec["num_classes"]), dim)
            elif kind == "scalar":
                n = int(spec.get("basis", 16))
                lo, hi = float(spec.get("low", 0.0)), float(spec.get("high", 1.0))
                self.register_buffer(f"centres_{key}", torch.linspace(lo, hi, n), persistent=False)
                self.embed[key] = nn.Sequential(nn.Linear(n, dim), nn.SiLU(), nn.Linear(dim, dim))
            elif kind == "vector":
                self.embed[key] = nn.Sequential(nn.Linear(int(spec["dim"]), dim), nn.SiLU(), nn.Linear(dim, dim))
            elif kind == "tokens":
                mlp = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))
                self.embed[key] = nn.ModuleDict({"words": nn.Embedding(int(spec["num_classes"]), dim, padding_idx=0),
                                                 "mlp": mlp})
            else:
                raise ValueError(f"condition {key!r}: unknown kind {kind!r}; allowed: class, scalar, vector, tokens")
            self.null[key] = nn.Parameter(torch.zeros(dim))
        self.dim = dim

    def forward(self, state: Mapping[str, Tensor], batch: int) -> Tensor:
        out = None
        for key, spec in self.specs.items():
            null = self.null[key].expand(batch, -1)
            if key not in state:
                e = null
            elif spec["kind"] == "class":
                v = state[key].reshape(batch).long()
                keep = v >= 0
                e = torch.where(keep[:, None], self.embed[key](v.clamp_min(0)), null)
            elif spec["kind"] == "tokens":
                v = state[key].reshape(batch, -1).long()
                words = (v >= 1).to(null.dtype)
                n = words.sum(1, keepdim=True)
                bag = (self.embed[key]["words"](v.clamp(0, int(spec["num_classes"]) - 1)) * words[..., None]).sum(1)
                e = torch.where(n > 0, self.embed[key]["mlp"](bag / n.clamp_min(1)), null)
            else:
                v = state[key].reshape(batch, -1).to(null.dtype)  # the embedding's dtype (it may run in bf16)
                keep = ~torch.isnan(v).any(-1)
                v = torch.nan_to_num(v)
                if spec["kind"] == "scalar":
                    c = getattr(self, f"centres_{key}")
                    width = (c[-1] - c[0]) / max(len(c) - 1, 1)
                    v = torch.exp(-0.5 * ((v[:, :1] - c) / width) ** 2)
                e = torch.where(keep[:, None], self.embed[key](v), null)
            out = e if out is None else out + e
        if out is None:
            raise ValueError("ConditionEmbedding has no condition specs")
        return out
