"""Probabilistic forecast metrics with gluonts' definitions (as used by TSDiff and PaCoDi).

Shapes: ``target`` (N, H) (N series, H horizon steps), ``samples`` (N, S, H) (S sample paths),
``history`` (N, T) for MASE's seasonal error. Multivariate data is scored by treating every
channel as its own series (flatten (N, H, C) to (N * C, H) first: :func:`flatten_channels`).

Conventions that matter (gluonts 0.17 ``Evaluator`` / ``SampleForecast``):

- a quantile of S samples is the **nearest rank** ``sort(samples)[round((S - 1) q)]`` with
  numpy's round-half-to-even, no interpolation; the "median" of ND and MASE is that quantile
  at 0.5 (the lower median for even S), not ``np.median``;
- ``QuantileLoss[q] = 2 sum |(q_hat - y) ((y <= q_hat) - q)|`` pooled over series,
  ``wQuantileLoss[q] = QuantileLoss[q] / sum |y|`` and ``mean_wQuantileLoss`` (the "CRPS" of
  the TSDiff and PaCoDi tables) is their plain mean over q = 0.1 .. 0.9;
- ``ND = sum |y - median| / sum |y|``; ``NRMSE = sqrt(mean_i MSE_i) / mean_i mean |y_i|`` with
  the sample **mean** as point forecast; ``MASE = mean_i (mean |y_i - median_i| / e_i)`` with the
  seasonal error ``e_i = mean |h_t - h_{t-m}|`` over the history only (m = 1 when the history
  is not longer than the season).

:func:`crps_ensemble` is the independent check: the ensemble CRPS ``E|X - y| - E|X - X'| / 2``
with equal weights (properscoring's ``crps_ensemble``, not the "fair" estimator).
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import numpy as np

QUANTILES: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def _check(target: np.ndarray, samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(target, dtype=np.float64)
    s = np.asarray(samples, dtype=np.float64)
    if y.ndim == 1:
        y = y[None]
    if s.ndim == 2 and y.shape[0] == 1:
        s = s[None]
    if s.ndim != 3 or y.ndim != 2 or s.shape[0] != y.shape[0] or s.shape[2] != y.shape[1]:
        raise ValueError(f"expected target (N, H) and samples (N, S, H), got {y.shape} and {s.shape}")
    if not (np.isfinite(y).all() and np.isfinite(s).all()):
        raise ValueError("target and samples must be finite (drop or impute NaNs before scoring)")
    return y, s


def flatten_channels(x: np.ndarray, sample_axis: bool = False) -> np.ndarray:
    """(N, H, C) -> (N * C, H), or (N, S, H, C) -> (N * C, S, H) with ``sample_axis``: every
    channel becomes its own series (gluonts' convention for multivariate scoring)."""
    x = np.asarray(x)
    if sample_axis:
        return np.moveaxis(x, -1, 1).reshape(-1, x.shape[1], x.shape[2]) if x.ndim == 4 else x
    return np.moveaxis(x, -1, 1).reshape(-1, x.shape[1]) if x.ndim == 3 else x


def sample_quantile(samples: np.ndarray, q: float, axis: int = 1) -> np.ndarray:
    """gluonts' nearest-rank quantile of sample paths along ``axis`` (no interpolation); ``q``
    in [0, 1]."""
    if isinstance(q, bool) or not isinstance(q, numbers.Real) or not 0 <= q <= 1:
        raise ValueError(f"quantile levels must lie in [0, 1], got {q!r}")
    s = np.sort(np.asarray(samples, dtype=np.float64), axis=axis)
    idx = int(np.round((s.shape[axis] - 1) * q))
    return np.take(s, idx, axis=axis)


def quantile_loss(target: np.ndarray, forecast: np.ndarray, q: float) -> float:
    """gluonts' ``2 * sum |(q_hat - y) * ((y <= q_hat) - q)|`` (the pinball loss, doubled)."""
    y, f = np.asarray(target, np.float64), np.asarray(forecast, np.float64)
    return float(2.0 * np.sum(np.abs((f - y) * ((y <= f).astype(np.float64) - q))))


def weighted_quantile_losses(target: np.ndarray, samples: np.ndarray,
                             quantiles: Sequence[float] = QUANTILES) -> dict[float, float]:
    """``wQuantileLoss[q]`` per quantile, pooled over series."""
    y, s = _check(target, samples)
    denom = np.sum(np.abs(y))
    return {q: quantile_loss(y, sample_quantile(s, q), q) / denom for q in quantiles}


def mean_weighted_quantile_loss(target: np.ndarray, samples: np.ndarray,
                                quantiles: Sequence[float] = QUANTILES) -> float:
    """The "CRPS" of TSDiff / PaCoDi tables: mean over ``quantiles`` of ``wQuantileLoss``."""
    return float(np.mean(list(weighted_quantile_losses(target, samples, quantiles).values())))


crps_quantile = mean_weighted_quantile_loss


def nd(target: np.ndarray, samples: np.ndarray) -> float:
    """Normalised deviation ``sum |y - median| / sum |y|`` (nearest-rank median)."""
    y, s = _check(target, samples)
    return float(np.sum(np.abs(y - sample_quantile(s, 0.5))) / np.sum(np.abs(y)))


def nrmse(target: np.ndarray, samples: np.ndarray) -> float:
    """``sqrt(mean_i MSE_i) / mean_i mean |y_i|`` with the sample mean as point forecast."""
    y, s = _check(target, samples)
    mse = np.mean((y - s.mean(axis=1)) ** 2, axis=1)
    return float(np.sqrt(np.mean(mse)) / np.mean(np.mean(np.abs(y), axis=1)))


def seasonal_error(history: np.ndarray, season: int) -> np.ndarray:
    """``mean |h_t - h_{t-m}|`` per series (N,); m = 1 when the history is not longer than m.
    ``season``: a positive whole number of steps."""
    if isinstance(season, bool) or not isinstance(season, numbers.Integral) or season < 1:
        raise ValueError(f"season must be a positive integer (the seasonal period in steps; 1 without one), "
                         f"got {season!r}")
    h = np.asarray(history, dtype=np.float64)
    h = h[None] if h.ndim == 1 else h
    m = season if season < h.shape[1] else 1
    return np.mean(np.abs(h[:, m:] - h[:, :-m]), axis=1)


def mase(target: np.ndarray, samples: np.ndarray, history: np.ndarray, season: int = 1) -> float:
    """Mean over series of ``mean |y - median| / seasonal_error(history, season)``."""
    y, s = _check(target, samples)
    err = seasonal_error(history, season)
    if err.shape[0] != y.shape[0]:
        raise ValueError(f"history has {err.shape[0]} series, target {y.shape[0]}")
    with np.errstate(divide="ignore", invalid="ignore"):
        per = np.mean(np.abs(y - sample_quantile(s, 0.5)), axis=1) / err
    return float(np.mean(per))


def crps_ensemble(target: np.ndarray, samples: np.ndarray) -> np.ndarray:
    """Per-point ensemble CRPS ``E|X - y| - E|X - X'| / 2`` (N, H), computed from sorted
    samples in O(S log S): ``E|X - X'| = 2 / S^2 sum_i (2 i - S - 1) x_(i)``."""
    y, s = _check(target, samples)
    n = s.shape[1]
    first = np.mean(np.abs(s - y[:, None, :]), axis=1)
    srt = np.sort(s, axis=1)
    w = (2 * np.arange(1, n + 1) - n - 1).astype(np.float64)
    spread = 2.0 / n**2 * np.einsum("nsh,s->nh", srt, w)
    return first - 0.5 * spread


def coverage(target: np.ndarray, samples: np.ndarray, q: float) -> float:
    """Fraction of points below the nearest-rank quantile ``q`` (calibration check)."""
    y, s = _check(target, samples)
    return float(np.mean(y <= sample_quantile(s, q)))


def forecast_metrics(target: np.ndarray, samples: np.ndarray, history: np.ndarray | None = None,
                     season: int = 1, quantiles: Sequence[float] = QUANTILES) -> dict[str, float]:
    """CRPS (mean wQuantileLoss), ND, NRMSE, MASE (when ``history`` is given), the ensemble
    CRPS normalised like the quantile version (``sum CRPS / sum |y|``) and 50 / 90% coverage."""
    y, s = _check(target, samples)
    out = {"crps": mean_weighted_quantile_loss(y, s, quantiles), "nd": nd(y, s), "nrmse": nrmse(y, s)}
    if history is not None:
        out["mase"] = mase(y, s, history, season)
    out["crps_ensemble"] = float(np.sum(crps_ensemble(y, s)) / np.sum(np.abs(y)))
    out["coverage_50"] = coverage(y, s, 0.75) - coverage(y, s, 0.25)
    out["coverage_90"] = coverage(y, s, 0.95) - coverage(y, s, 0.05)
    return out
