"""Figures: forecasts with 50% / 90% intervals over their history, and real vs synthetic windows."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib  # noqa: F401  (at the top: without matplotlib this module does not import, and callers skip the plot)
import numpy as np
import pandas as pd

from polydiff.plugin import new_figure, save_figure

from .metrics import sample_quantile


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)


def _times(n_hist: int, horizon: int, index: pd.Index | None) -> tuple[Any, Any, str]:
    """x values of a history of ``n_hist`` steps and of its forecast, and the x label: the
    forecast's timestamps ``index`` (:attr:`.Forecast.index`) continued back over the history
    when they are dates with a frequency, else step numbers (``index``'s when it has them)."""
    if isinstance(index, pd.DatetimeIndex) and index.freq is not None and len(index) == horizon:
        return pd.date_range(end=index[0] - index.freq, periods=n_hist, freq=index.freq), index, "time"
    first = int(index[0]) if isinstance(index, pd.RangeIndex) and len(index) == horizon else n_hist
    return np.arange(first - n_hist, first), np.arange(first, first + horizon), "step"


def plot_forecast(history: np.ndarray, samples: np.ndarray, path: Path, target: np.ndarray | None = None,
                  titles: Sequence[str] | None = None, max_series: int = 6,
                  index: Sequence[pd.Index] | None = None) -> Path:
    """One panel per series: the history, the median forecast with 50% and 90% intervals
    (nearest-rank quantiles of the sample paths) and, when given, the true future.
    ``history`` (N, T), ``samples`` (N, S, H), ``target`` (N, H); ``index``: per series the
    forecast's timestamps (:attr:`.Forecast.index`), which then label the x axis."""
    hist = np.atleast_2d(np.asarray(history, np.float64))
    s = np.asarray(samples, np.float64)
    s = s[None] if s.ndim == 2 else s
    n = min(len(s), max_series)
    fig = new_figure(figsize=(9, 2.2 * n))
    axes = fig.subplots(n, 1, squeeze=False)
    for i in range(n):
        ax = axes[i, 0]
        t_h, t_f, xlabel = _times(hist.shape[1], s.shape[2], None if index is None else index[i])
        ax.set_ylabel("value", fontsize=8)
        if i == n - 1:
            ax.set_xlabel(xlabel)
        ax.plot(t_h, hist[i], color="0.2", lw=1, label="history")
        q = {p: sample_quantile(s[i:i + 1], p)[0] for p in (0.05, 0.25, 0.5, 0.75, 0.95)}
        ax.fill_between(t_f, q[0.05], q[0.95], color="C0", alpha=0.2, label="90% interval")
        ax.fill_between(t_f, q[0.25], q[0.75], color="C0", alpha=0.4, label="50% interval")
        ax.plot(t_f, q[0.5], color="C0", lw=1.5, label="median")
        if target is not None:
            ax.plot(t_f, np.atleast_2d(target)[i], color="C3", lw=1, label="actual")
        if titles is not None:
            ax.set_title(str(titles[i]), fontsize=9)
        if i == 0:
            ax.legend(loc="upper left", fontsize=7, ncol=5)
    return _save(fig, path)


def value_label(scaling: str | None) -> str:
    """The y label of windows in model units: ``scaling`` is the dataset's scaling kind
    (``info["scaling"]["kind"]``; None: unknown)."""
    if scaling is None:
        return "value (model units)"
    return "value" if scaling == "none" else f"value ({scaling}-scaled)"


def plot_samples(synthetic: np.ndarray, reference: np.ndarray | None, path: Path, n: int = 8,
                 channel: int = 0, context: int | None = None, scaling: str | None = None) -> Path:
    """Real (grey, left) and synthetic (blue, right) windows of one channel, against the time
    step; a dashed line where the first ``context`` steps end and the horizon begins (when the
    windows are longer); the values in model units, as ``scaling`` (see :func:`value_label`)."""
    syn = np.asarray(synthetic, np.float64)
    syn = syn[..., None] if syn.ndim == 2 else syn
    cols = 2 if reference is not None else 1
    fig = new_figure(figsize=(5 * cols, 3))
    axes = fig.subplots(1, cols, squeeze=False, sharey=True)
    if reference is not None:
        ref = np.asarray(reference, np.float64)
        ref = ref[..., None] if ref.ndim == 2 else ref
        for w in ref[:n]:
            axes[0, 0].plot(w[:, channel], color="0.4", lw=0.8)
        axes[0, 0].set_title("real")
    for w in syn[:n]:
        axes[0, cols - 1].plot(w[:, channel], color="C0", lw=0.8)
    axes[0, cols - 1].set_title("synthetic")
    for ax in axes[0]:
        ax.set_xlabel("time step")
        if context is not None and 0 < context < syn.shape[1]:
            ax.axvline(context - 0.5, color="k", ls="--", lw=0.8, label="context | horizon")
            ax.legend(loc="upper left", fontsize=7)
    axes[0, 0].set_ylabel(value_label(scaling))
    return _save(fig, path)
