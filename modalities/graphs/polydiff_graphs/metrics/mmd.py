"""Kernels and the MMD estimator of the graph-generation literature (GraphRNN, GDSS).

- ``gaussian_emd``: ``exp(-EMD(p, q)^2 / (2 sigma^2))`` on 1-D pmfs, EMD with ground distance
  ``|i - j| / distance_scaling``. For 1-D pmfs of equal mass that EMD is the L1 distance of the
  cumulative sums (Vallender 1973), so no transport solver is needed; GDSS calls ``pyemd`` with
  a Toeplitz cost matrix and gets the same numbers.
- ``gaussian``: the plain L2 Gaussian ``exp(-||x - y||^2 / (2 sigma^2))`` (orbit features).
- ``mmd``: the biased V-statistic ``mean K(x, x') + mean K(y, y') - 2 mean K(x, y)`` (i == j
  terms included, not square-rooted), as GDSS's ``compute_mmd``. Histograms are zero-padded to a
  common length and, when ``is_hist``, each is normalised to a pmf first.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.spatial.distance import cdist

KERNELS = ("gaussian_emd", "gaussian", "gaussian_tv")


def pad_stack(vectors: Sequence[np.ndarray], length: int | None = None) -> np.ndarray:
    """(len(vectors), L) float64 array of 1-D vectors zero-padded to the longest (or ``length``)."""
    length = max([len(v) for v in vectors] + [length or 0, 1])
    out = np.zeros((len(vectors), length))
    for i, v in enumerate(vectors):
        out[i, : len(v)] = np.asarray(v, dtype=np.float64)
    return out


def emd_1d(p: np.ndarray, q: np.ndarray, distance_scaling: float = 1.0) -> float:
    """Earth mover's distance between two 1-D pmfs on bins 0, 1, ... (ground distance |i-j|/scaling)."""
    p, q = pad_stack([p, q])
    return float(np.abs(np.cumsum(p - q)).sum() / distance_scaling)


def kernel_matrix(x: np.ndarray, y: np.ndarray, kernel: str = "gaussian_emd", sigma: float = 1.0,
                  distance_scaling: float = 1.0) -> np.ndarray:
    """Pairwise kernel values between the rows of ``x`` (n, L) and ``y`` (m, L)."""
    if kernel == "gaussian_emd":
        dist = cdist(np.cumsum(x, 1), np.cumsum(y, 1), "cityblock") / distance_scaling
    elif kernel == "gaussian":
        dist = cdist(x, y, "euclidean")
    elif kernel == "gaussian_tv":
        dist = cdist(x, y, "cityblock") / 2
    else:
        raise ValueError(f"unknown kernel {kernel!r}; allowed: {', '.join(KERNELS)}")
    return np.exp(-dist * dist / (2 * sigma * sigma))


def mmd(samples1: Sequence[np.ndarray], samples2: Sequence[np.ndarray], kernel: str = "gaussian_emd",
        sigma: float = 1.0, distance_scaling: float = 1.0, is_hist: bool = True) -> float:
    """Biased squared MMD between two sets of 1-D descriptors (histograms or feature vectors)."""
    if len(samples1) == 0 or len(samples2) == 0:
        raise ValueError(f"MMD needs two non-empty sets, got {len(samples1)} and {len(samples2)} descriptors")
    both = pad_stack(list(samples1) + list(samples2))
    if is_hist:
        both = both / both.sum(1, keepdims=True)
    x, y = both[: len(samples1)], both[len(samples1):]
    opts = {"kernel": kernel, "sigma": sigma, "distance_scaling": distance_scaling}
    kxx, kyy, kxy = kernel_matrix(x, x, **opts), kernel_matrix(y, y, **opts), kernel_matrix(x, y, **opts)
    return float(kxx.mean() + kyy.mean() - 2 * kxy.mean())
