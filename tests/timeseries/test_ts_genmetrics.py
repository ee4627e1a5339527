"""Generation metrics against their definitions: the marginal / autocorrelation errors on a
hand-computed case and against loops, and the shared Fréchet distance (context-FID, audio FD)
against closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from polydiff.plugin import frechet_distance, frechet_distance_of_sets, gaussian_fit
from polydiff_timeseries import genmetrics as G

pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------------------------------------
# marginal_metrics
# ---------------------------------------------------------------------------------------------

def _stack(windows: list[list[float]]) -> np.ndarray:
    """(N, L) windows of one channel -> (N, L, 2), the second channel ten times the first."""
    a = np.array(windows, dtype=np.float64)
    return np.stack([a, 10 * a], -1)


def test_marginal_metrics_by_hand():
    """real windows 1,2,3 and 3,2,1; synthetic 0,0,3 and 2,4,0 (channel 2 = 10 x channel 1).
    Channel 1: real mean 2, std sqrt(4/6); synthetic mean 9/6, std sqrt(15.5/6).
    Lag-1 / lag-2 autocorrelations (centred products over L - k, variance over L):
    real (0, -1.5) for both windows; synthetic (-0.25, -1) and (-0.75, 0), mean (-0.5, -0.5).
    Channel 2 has 10 x the mean and std gaps and the same autocorrelations."""
    real = _stack([[1, 2, 3], [3, 2, 1]])
    syn = _stack([[0, 0, 3], [2, 4, 0]])
    std_gap = math.sqrt(15.5 / 6) - math.sqrt(4 / 6)
    m = G.marginal_metrics(syn, real)
    assert m["mean_error"] == pytest.approx((0.5 + 5.0) / 2, rel=1e-12)
    assert m["std_error"] == pytest.approx((std_gap + 10 * std_gap) / 2, rel=1e-12)
    assert m["acf_error"] == pytest.approx((0.5 + 1.0) / 2, rel=1e-9)      # lags 1 and 2 (L - 1 = 2 < 5)
    assert G.marginal_metrics(syn, real, lags=1)["acf_error"] == pytest.approx(0.5, rel=1e-9)
    # symmetric in its two arguments, 0 against itself
    assert G.marginal_metrics(real, syn) == pytest.approx(m, rel=1e-12)
    assert G.marginal_metrics(real, real) == {"mean_error": 0.0, "std_error": 0.0, "acf_error": 0.0}


def _marginals_by_loops(syn: np.ndarray, real: np.ndarray, lags: int) -> dict[str, float]:
    """The definition with explicit loops over channels, windows, lags and steps."""
    n_ch, length = syn.shape[2], syn.shape[1]
    k_max = min(lags, length - 1)

    def moments(x: np.ndarray, c: int) -> tuple[float, float]:
        v = [float(t) for t in x[:, :, c].ravel()]
        mean = sum(v) / len(v)
        return mean, math.sqrt(sum((t - mean) ** 2 for t in v) / len(v))

    def acf(x: np.ndarray, c: int, k: int) -> float:
        vals = []
        for w in x[:, :, c]:
            mean = sum(w) / length
            xc = [t - mean for t in w]
            lagged = sum(xc[t] * xc[t - k] for t in range(k, length)) / (length - k)
            vals.append(lagged / (sum(t * t for t in xc) / length))
        return sum(vals) / len(vals)

    me = sum(abs(moments(syn, c)[0] - moments(real, c)[0]) for c in range(n_ch)) / n_ch
    se = sum(abs(moments(syn, c)[1] - moments(real, c)[1]) for c in range(n_ch)) / n_ch
    ae = sum(abs(acf(syn, c, k) - acf(real, c, k)) for c in range(n_ch) for k in range(1, k_max + 1)) / (n_ch * k_max)
    return {"mean_error": me, "std_error": se, "acf_error": ae}


@pytest.mark.parametrize("lags", [1, 3, 50])
def test_marginal_metrics_match_loops(lags):
    rng = np.random.default_rng(lags)
    real = rng.normal(size=(7, 9, 3)).cumsum(1)
    syn = 0.5 * rng.normal(size=(4, 9, 3)) + 1               # fewer windows than the real set
    got = G.marginal_metrics(syn, real, lags=lags)
    want = _marginals_by_loops(syn, real, lags)
    assert got == pytest.approx(want, rel=1e-9)
    assert min(want.values()) > 0.05                         # not a trivially zero case


def test_marginal_metrics_of_one_step_windows_have_no_acf():
    m = G.marginal_metrics(np.ones((3, 1, 2)), np.zeros((4, 1, 2)))
    assert m["mean_error"] == 1.0 and m["std_error"] == 0.0 and math.isnan(m["acf_error"])


# ---------------------------------------------------------------------------------------------
# the shared Fréchet distance
# ---------------------------------------------------------------------------------------------

def _spd(rng: np.random.Generator, d: int) -> np.ndarray:
    a = rng.normal(size=(d, d))
    return a @ a.T + 0.5 * np.eye(d)


def test_frechet_of_identical_gaussians_is_zero():
    rng = np.random.default_rng(0)
    mu, s = rng.normal(size=6), _spd(rng, 6)
    assert abs(frechet_distance(mu, s, mu, s)) < 1e-9 * np.trace(s)


@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")   # the product is singular
def test_frechet_of_diagonal_covariances():
    """Commuting (here diagonal) covariances: |mu1 - mu2|^2 + sum (sqrt s1 - sqrt s2)^2, also with
    zero variances (a singular product)."""
    mu1, mu2 = np.array([0.5, -1.0, 2.0, 0.0]), np.array([1.5, 1.0, 2.0, -3.0])
    v1, v2 = np.array([1.0, 0.0, 4.0, 2.25]), np.array([0.0, 9.0, 1.0, 2.25])
    want = float(((mu1 - mu2) ** 2).sum() + ((np.sqrt(v1) - np.sqrt(v2)) ** 2).sum())
    assert want == pytest.approx(1 + 4 + 0 + 9 + 1 + 9 + 1 + 0)
    assert frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(want, rel=1e-9)
    # rotated into a common non-diagonal basis: still commuting, the same distance
    q, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(4, 4)))
    got = frechet_distance(q @ mu1, q @ np.diag(v1) @ q.T, q @ mu2, q @ np.diag(v2) @ q.T)
    assert got == pytest.approx(want, rel=1e-6)


def test_frechet_of_1d_gaussians():
    """N(1, 2^2) and N(-0.5, 0.5^2): (m1 - m2)^2 + (sd1 - sd2)^2 = 2.25 + 2.25, as scalars or arrays."""
    assert frechet_distance(1.0, 4.0, -0.5, 0.25) == pytest.approx(4.5, rel=1e-12)
    assert frechet_distance(np.array([1.0]), np.array([[4.0]]), np.array([-0.5]), np.array([[0.25]])) == \
        pytest.approx(4.5, rel=1e-12)
    # one-column sets: the Gaussians fitted to them (unbiased variance)
    a, b = np.array([[0.0], [2.0], [4.0]]), np.array([[1.0], [1.0], [4.0], [6.0]])
    va, vb = 8.0 / 2, 18.0 / 3         # a: mean 2, squared deviations 4, 0, 4; b: mean 3, 4, 4, 1, 9
    want = (2.0 - 3.0) ** 2 + (math.sqrt(va) - math.sqrt(vb)) ** 2
    assert vb == pytest.approx(np.var(b, ddof=1))
    assert frechet_distance_of_sets(a, b) == pytest.approx(want, rel=1e-9)


def test_frechet_of_non_commuting_2x2_covariances():
    """2 x 2: tr (S1 S2)^(1/2) = sqrt(tr(S1 S2) + 2 sqrt(det S1 det S2)) (the eigenvalues of S1 S2
    are those of the positive definite S1^(1/2) S2 S1^(1/2))."""
    s1, s2 = np.array([[2.0, 0.5], [0.5, 1.0]]), np.array([[1.0, -0.3], [-0.3, 3.0]])
    assert not np.allclose(s1 @ s2, s2 @ s1)
    mu1, mu2 = np.array([0.0, 1.0]), np.array([2.0, -1.0])
    root_trace = math.sqrt(np.trace(s1 @ s2) + 2 * math.sqrt(np.linalg.det(s1) * np.linalg.det(s2)))
    want = 8.0 + np.trace(s1) + np.trace(s2) - 2 * root_trace
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(want, rel=1e-9)
    assert frechet_distance(mu2, s2, mu1, s1) == pytest.approx(want, rel=1e-9)


def test_gaussian_fit_is_the_mean_and_unbiased_covariance():
    x = np.random.default_rng(2).normal(size=(11, 3))
    mu, s = gaussian_fit(x)
    centred = x - x.sum(0) / 11
    np.testing.assert_allclose(mu, x.sum(0) / 11, rtol=1e-12)
    np.testing.assert_allclose(s, centred.T @ centred / 10, rtol=1e-12)


def test_frechet_retries_a_singular_product_with_a_diagonal_offset(monkeypatch):
    """Where the root of the product is not finite, ``eps`` is added to both diagonals (as
    pytorch-fid does): the second root is of (S1 + eps I)(S2 + eps I)."""
    from scipy import linalg

    calls: list[np.ndarray] = []
    sqrtm = linalg.sqrtm

    def failing_once(m: np.ndarray) -> np.ndarray:
        calls.append(np.array(m))
        return np.full(m.shape, np.nan) if len(calls) == 1 else sqrtm(m)

    monkeypatch.setattr(linalg, "sqrtm", failing_once)
    v1, v2, eps = np.array([1.0, 4.0]), np.array([9.0, 0.0]), 0.01
    got = frechet_distance(np.zeros(2), np.diag(v1), np.ones(2), np.diag(v2), eps=eps)
    assert len(calls) == 2
    np.testing.assert_allclose(calls[0], np.diag(v1 * v2))
    np.testing.assert_allclose(calls[1], np.diag((v1 + eps) * (v2 + eps)))
    assert got == pytest.approx(2 + v1.sum() + v2.sum() - 2 * np.sqrt((v1 + eps) * (v2 + eps)).sum(), rel=1e-9)


def test_frechet_errors():
    with pytest.raises(ValueError, match="dimensions differ"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))
    with pytest.raises(ValueError, match=r"covariances must be \(2, 2\)"):
        frechet_distance(np.zeros(2), np.eye(3), np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match="NaN"):
        frechet_distance(np.zeros(2), np.full((2, 2), np.nan), np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match="set a must be"):
        frechet_distance_of_sets(np.zeros((1, 2)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="set b contains NaN"):
        frechet_distance_of_sets(np.zeros((3, 2)), np.full((4, 2), np.inf))


def test_context_fid_is_the_frechet_distance_of_the_encoder_embeddings():
    """context_fid with a given encoder: the closed form tr sqrt(S1^(1/2) S2 S1^(1/2)) (eigenvalues
    of a symmetric matrix) on the embeddings, computed here without the shared function."""
    rng = np.random.default_rng(3)
    real, syn = rng.normal(size=(40, 12, 2)), 1.5 * rng.normal(size=(30, 12, 2)) + 0.2
    torch.manual_seed(0)
    enc = G.WindowEncoder(2, hidden=8, out=4, depth=2).eval()
    with torch.no_grad():
        fr = enc(torch.from_numpy(real).float()).double().numpy()
        fs = enc(torch.from_numpy(syn).float()).double().numpy()
    c1, c2 = np.cov(fr, rowvar=False), np.cov(fs, rowvar=False)
    w, v = np.linalg.eigh(c1)
    half = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    root_trace = np.sqrt(np.clip(np.linalg.eigvalsh(half @ c2 @ half), 0, None)).sum()
    d = fr.mean(0) - fs.mean(0)
    want = d @ d + np.trace(c1) + np.trace(c2) - 2 * root_trace
    assert want > 0.01
    assert G.context_fid(syn, real, enc) == pytest.approx(want, rel=1e-6)


# ---------------------------------------------------------------------------------------------
# the TimeGAN scores' held-out split and inputs
# ---------------------------------------------------------------------------------------------

class _OneAnswer(torch.nn.Module):
    """A 'classifier' that answers real for every window (its only weight has no say in the sign)."""

    def __init__(self, inp: int, hidden: int, out: int) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ones(*x.shape[:2], 1) + 0 * self.w


def test_discriminative_score_holds_out_as_many_real_as_synthetic_windows(monkeypatch):
    """TimeGAN splits each set 80 / 20 on its own, so always answering one class is accuracy
    0.5 (score 0). Splitting the pooled windows gave it |share of real - 0.5|, nonzero for most
    seeds (all five balanced by chance: about 0.3^5)."""
    monkeypatch.setattr(G, "_GRU", _OneAnswer)
    rng = np.random.default_rng(0)
    real, syn = rng.normal(size=(20, 6, 1)), rng.normal(size=(25, 6, 1))
    assert [G.discriminative_score(syn, real, steps=2, seed=s) for s in range(5)] == [0.0] * 5


def test_time_series_scores_refuse_inputs_they_would_misread():
    rng = np.random.default_rng(1)
    real = rng.normal(size=(6, 5, 2))
    nan = real.copy()
    nan[3, 2, 1] = np.nan
    for fn in (G.discriminative_score, G.predictive_score):
        with pytest.raises(ValueError, match="synthetic window 3 holds NaN"):
            fn(nan, real, steps=1)
        with pytest.raises(ValueError, match=r"are \(5, 2\) \(length, channels\), real ones \(5, 1\)"):
            fn(real, real[..., :1], steps=1)
    with pytest.raises(ValueError, match="at least 2 synthetic window"):
        G.discriminative_score(real[:1], real, steps=1)
    with pytest.raises(ValueError, match="at least 2 step"):
        G.predictive_score(real[:, :1], real[:, :1], steps=1)
    with pytest.raises(ValueError, match=r"marginal_metrics: synthetic windows are \(5, 2\)"):
        G.marginal_metrics(real, real[..., :1])
    with pytest.raises(ValueError, match="real window 3 holds NaN"):
        G.generation_metrics(real, nan, steps=1)


def test_generation_metrics_report_progress_while_their_networks_train(monkeypatch):
    """`polydiff evaluate` of time series was silent for 45 s while four networks trained."""
    from polydiff_timeseries import genmetrics

    seen = []

    class Recorder:
        def __init__(self, total, desc, unit, enabled=None):
            seen.append((total, desc))

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return None

        def update(self, k):
            seen.append(k)

    monkeypatch.setattr(genmetrics, "Progress", Recorder)
    rng = np.random.default_rng(0)
    genmetrics.generation_metrics(rng.normal(size=(6, 8, 1)), rng.normal(size=(6, 8, 1)), steps=2)
    assert seen[0][0] == 4 and "training their networks" in seen[0][1] and seen[1:] == [1, 1, 1, 1]
