"""Sample-set distances shared by the core, the toy modality and the benchmarks."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor


def flat(x: Tensor | np.ndarray | Mapping[str, Tensor], keys: Sequence[str] | None = None) -> Tensor:
    """Samples (N, ...) or a state's float fields as one float64 (N, D) tensor."""
    if isinstance(x, Mapping):
        keys = sorted(k for k, v in x.items() if v.is_floating_point()) if keys is None else keys
        return torch.cat([flat(x[k]) for k in keys], 1)
    x = torch.as_tensor(np.ascontiguousarray(x) if isinstance(x, np.ndarray) else x)  # views with negative strides
    return x.reshape(x.shape[0], math.prod(x.shape[1:])).double()


def directions(dim: int, projections: int, seed: int = 0) -> Tensor:
    """``projections`` random unit vectors in R^dim (float64 columns), reproducible from ``seed``."""
    theta = torch.randn(dim, projections, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return theta / theta.norm(dim=0, keepdim=True)


def wasserstein_1d(sorted_a: Tensor, sorted_b: Tensor, p: int = 2) -> Tensor:
    """``W_p^p`` between the empirical distributions of the sorted columns ``(n, P)`` and
    ``(m, P)`` (equal weights), per column: exactly ``int_0^1 |F_a^-1(u) - F_b^-1(u)|^p du``,
    over the pieces between the levels ``i/n`` and ``j/m`` where both quantile functions are
    constant (the sorted values paired one to one when ``n == m``)."""
    n, m = sorted_a.shape[0], sorted_b.shape[0]
    if n == m:
        return ((sorted_a - sorted_b).abs() ** p).mean(0)
    dev = sorted_a.device
    levels = torch.cat([torch.arange(1, n + 1, device=dev, dtype=torch.float64) / n,
                        torch.arange(1, m + 1, device=dev, dtype=torch.float64) / m]).unique()  # sorted
    width = torch.diff(levels, prepend=levels.new_zeros(1))
    keep = width > 1e-15  # i/n == j/m up to rounding
    levels, width = levels[keep], width[keep]
    mid = levels - width / 2
    ia = (mid * n).floor().long().clamp(0, n - 1)
    ib = (mid * m).floor().long().clamp(0, m - 1)
    return (width[:, None] * (sorted_a[ia] - sorted_b[ib]).abs() ** p).sum(0) / width.sum()


def sliced_wasserstein(a: Tensor | np.ndarray | Mapping[str, Tensor], b: Tensor | np.ndarray | Mapping[str, Tensor],
                       *, projections: int = 256, p: int = 2, seed: int = 0, dirs: Tensor | None = None) -> float:
    """Sliced Wasserstein-p distance between two sample sets (N, ...) and (M, ...).

    ``(mean over random unit directions of W_p^p between the 1-D projections)^(1/p)`` (Bonneel
    et al. 2015); each 1-D ``W_p`` is exact between the two empirical distributions, of equal
    sizes or not (:func:`wasserstein_1d`).
    """
    a, b = flat(a), flat(b)
    if len(a) == 0 or len(b) == 0:
        raise ValueError(f"sliced Wasserstein distance of an empty sample set ({len(a)} and {len(b)} samples)")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"sample sets of dimension {a.shape[1]} and {b.shape[1]} cannot be compared")
    theta = directions(a.shape[1], projections, seed) if dirs is None else dirs.double()
    theta = theta.to(a.device)
    pa = torch.sort(a @ theta, 0)[0]
    pb = torch.sort(b.to(a.device) @ theta, 0)[0]
    return float(wasserstein_1d(pa, pb, p).mean() ** (1 / p))
