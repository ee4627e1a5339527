"""``polydiff.metrics.wasserstein_1d`` is exact for samples of unequal sizes: checked to about
1e-12 against scipy's W_1 and, for any p, against the equal-size formula on samples whose
points are repeated to a common size (each of n points lcm/n times: the same distribution)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import wasserstein_distance

from polydiff.metrics import wasserstein_1d

# (n, m): coprime, sharing a factor (levels i/n == j/m coincide), one point, and one much larger set
SIZES = [(3, 7), (6, 4), (12, 18), (1, 5), (5, 1), (2, 1000), (97, 101), (10, 40), (499, 503)]


def _columns(rng: np.random.Generator, n: int, m: int, columns: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Two sample sets (n, P) and (m, P) of different spread and location, with some ties."""
    a = rng.normal(size=(n, columns))
    b = 1.7 * rng.standard_t(3, size=(m, columns)) + 0.4
    if m > 2:
        b[1] = b[0]  # a repeated value
    return a, b


def _w(a: np.ndarray, b: np.ndarray, p: int) -> np.ndarray:
    """``wasserstein_1d`` of the samples (sorted here, column by column), as float64 numbers."""
    sa = torch.sort(torch.from_numpy(a), 0)[0]
    sb = torch.sort(torch.from_numpy(b), 0)[0]
    return wasserstein_1d(sa, sb, p).numpy()


def _repeated(a: np.ndarray, b: np.ndarray, p: int) -> np.ndarray:
    """``W_p^p`` per column by the equal-size formula after repeating the sorted points of
    both sets to the least common multiple of their sizes."""
    n, m = len(a), len(b)
    size = math.lcm(n, m)
    ra = np.repeat(np.sort(a, 0), size // n, axis=0)
    rb = np.repeat(np.sort(b, 0), size // m, axis=0)
    return (np.abs(ra - rb) ** p).mean(0)


@pytest.mark.parametrize("n, m", SIZES)
def test_w1_equals_scipy(n, m):
    a, b = _columns(np.random.default_rng(n * 1000 + m), n, m)
    want = [wasserstein_distance(a[:, j], b[:, j]) for j in range(a.shape[1])]
    np.testing.assert_allclose(_w(a, b, 1), want, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("p", [1, 2, 3])
@pytest.mark.parametrize("n, m", SIZES)
def test_wp_equals_the_equal_size_formula_on_repeated_samples(n, m, p):
    a, b = _columns(np.random.default_rng(n * 1000 + m + 7), n, m)
    np.testing.assert_allclose(_w(a, b, p), _repeated(a, b, p), rtol=1e-12, atol=1e-14)


def test_known_values_and_symmetry():
    """Hand-computed cases: {0, 2} vs {1}: every point moves by 1; {0} vs {0, 0, 3}: a third
    of the mass moves by 3, so W_1 = 1 and W_2^2 = 3."""
    one = np.array([[1.0]])
    np.testing.assert_allclose(_w(np.array([[0.0], [2.0]]), one, 2), [1.0], rtol=1e-15)
    a, b = np.array([[0.0]]), np.array([[0.0], [0.0], [3.0]])
    np.testing.assert_allclose(_w(a, b, 1), [1.0], rtol=1e-14)
    np.testing.assert_allclose(_w(a, b, 2), [3.0], rtol=1e-14)
    x, y = _columns(np.random.default_rng(3), 9, 14)
    np.testing.assert_allclose(_w(x, y, 2), _w(y, x, 2), rtol=1e-13)  # symmetric in its arguments
    np.testing.assert_allclose(_w(x, np.repeat(x, 3, 0), 2), 0.0, atol=1e-15)  # the same distribution

