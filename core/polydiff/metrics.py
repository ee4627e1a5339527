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


def gaussian_fit(x: np.ndarray | Tensor, name: str = "x") -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D) of a set of vectors (N, D), N >= 2, in float64:
    the Gaussian that Fréchet distances compare. A ValueError naming ``name`` for another shape
    or for NaN / infinite values."""
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] < 2:
        raise ValueError(f"frechet_distance: set {name} must be (N, D) with N >= 2, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"frechet_distance: set {name} contains NaN or infinite values")
    return a.mean(0), np.atleast_2d(np.cov(a, rowvar=False))


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, *,
                     eps: float = 1e-6) -> float:
    """Fréchet distance (squared 2-Wasserstein) between the Gaussians N(mu1, sigma1) and
    N(mu2, sigma2): ``|mu1 - mu2|^2 + tr(sigma1) + tr(sigma2) - 2 tr((sigma1 sigma2)^(1/2))``.

    The FID / FAD / context-FID formula: the square root of the product is
    ``scipy.linalg.sqrtm`` with its imaginary part dropped; where it is not finite (a singular
    product), ``eps`` is added to both diagonals and the root taken again, as pytorch-fid does.
    Scalars are 1-D Gaussians (``sigma`` a variance). Not clipped at 0: identical inputs give
    0 up to rounding.
    """
    from scipy import linalg

    m1, m2 = np.atleast_1d(np.asarray(mu1, dtype=np.float64)), np.atleast_1d(np.asarray(mu2, dtype=np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, dtype=np.float64)), np.atleast_2d(np.asarray(sigma2, dtype=np.float64))
    if m1.ndim != 1 or m2.ndim != 1 or m1.shape != m2.shape:
        raise ValueError(f"frechet_distance: dimensions differ (means of shapes {m1.shape} and {m2.shape})")
    d = m1.shape[0]
    if s1.shape != (d, d) or s2.shape != (d, d):
        raise ValueError(f"frechet_distance: covariances must be ({d}, {d}), got {s1.shape} and {s2.shape}")
    if not all(np.isfinite(v).all() for v in (m1, m2, s1, s2)):
        raise ValueError("frechet_distance: NaN or infinite means or covariances")
    covmean = linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():
        off = np.eye(d) * eps
        covmean = linalg.sqrtm((s1 + off) @ (s2 + off))
    diff = m1 - m2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(np.real(covmean)))


def frechet_distance_of_sets(a: np.ndarray | Tensor, b: np.ndarray | Tensor, *, eps: float = 1e-6) -> float:
    """:func:`frechet_distance` between the Gaussians fitted (:func:`gaussian_fit`) to two sets
    of vectors (N, D) and (M, D), e.g. embeddings of generated and real samples."""
    return frechet_distance(*gaussian_fit(a, "a"), *gaussian_fit(b, "b"), eps=eps)
