"""Sample-set distances shared by the core, the toy modality and the benchmarks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor


def flat(x: Tensor | np.ndarray | Mapping[str, Tensor], keys: Sequence[str] | None = None) -> Tensor:
    """Samples (N, ...) or a state's float fields as one float64 (N, D) tensor."""
    if isinstance(x, Mapping):
        keys = sorted(k for k, v in x.items() if v.is_floating_point()) if keys is None else keys
        return torch.cat([torch.as_tensor(x[k]).reshape(x[k].shape[0], -1).double() for k in keys], 1)
    x = torch.as_tensor(x)
    return x.reshape(x.shape[0], -1).double()


def directions(dim: int, projections: int, seed: int = 0) -> Tensor:
    """``projections`` random unit vectors in R^dim (float64 columns), reproducible from ``seed``."""
    theta = torch.randn(dim, projections, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return theta / theta.norm(dim=0, keepdim=True)


def quantiles(sorted_x: Tensor, m: int) -> Tensor:
    """Empirical quantiles of the sorted columns (n, P) at levels ``(i + 1/2) / m``, linearly
    interpolated (the sorted values themselves when ``m == n``)."""
    n = sorted_x.shape[0]
    if n == m:
        return sorted_x
    q = (torch.arange(m, dtype=torch.float64, device=sorted_x.device) + 0.5) / m
    pos = (q * n - 0.5).clamp(0, n - 1)
    lo = pos.floor().long()
    hi = (lo + 1).clamp_max(n - 1)
    w = (pos - lo)[:, None]
    return sorted_x[lo] * (1 - w) + sorted_x[hi] * w


def sliced_wasserstein(a: Tensor | np.ndarray | Mapping[str, Tensor], b: Tensor | np.ndarray | Mapping[str, Tensor],
                       *, projections: int = 256, p: int = 2, seed: int = 0, dirs: Tensor | None = None) -> float:
    """Sliced Wasserstein-p distance between two sample sets (N, ...) and (M, ...).

    ``(mean over random unit directions of W_p^p between the 1-D projections)^(1/p)``; each
    1-D W_p is exact from sorted samples when N = M, and compared at common quantile levels
    otherwise (Bonneel et al. 2015).
    """
    a, b = flat(a), flat(b)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"sample sets of dimension {a.shape[1]} and {b.shape[1]} cannot be compared")
    theta = directions(a.shape[1], projections, seed) if dirs is None else dirs.double()
    theta = theta.to(a.device)
    m = max(len(a), len(b))
    pa = quantiles(torch.sort(a @ theta, 0)[0], m)
    pb = quantiles(torch.sort(b.to(a.device) @ theta, 0)[0], m)
    return float(((pa - pb).abs() ** p).mean() ** (1 / p))
