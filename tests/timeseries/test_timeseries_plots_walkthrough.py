"""The time-series figures (walkthrough defects): samples.png labels its axes (time step,
value, saying how the values are scaled) and marks where the context ends when the windows
have a horizon; the forecast plot labels its x axis, with the series' dates when it has them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("matplotlib")

import polydiff
from polydiff.testing import kept_figures
from polydiff_timeseries import plot as P


@pytest.fixture
def drawn(monkeypatch):
    return kept_figures(monkeypatch, P)


def _context_lines(ax):
    return [line for line in ax.get_lines() if line.get_label() == "context | horizon"]


def test_samples_axes_labels_and_context_line(tmp_path, drawn):
    rng = np.random.default_rng(0)
    P.plot_samples(rng.normal(size=(4, 30, 1)), rng.normal(size=(4, 30, 1)), tmp_path / "s.png", context=24,
                   scaling="mean")
    real, synthetic = drawn[0].axes
    assert real.get_xlabel() == synthetic.get_xlabel() == "time step"
    assert real.get_ylabel() == "value (mean-scaled)"
    for ax in (real, synthetic):
        (line,) = _context_lines(ax)
        assert line.get_xdata()[0] == pytest.approx(23.5)
        assert ax.get_legend() is not None


def test_samples_without_horizon_or_scaling(tmp_path, drawn):
    rng = np.random.default_rng(0)
    P.plot_samples(rng.normal(size=(4, 30)), None, tmp_path / "a.png", context=30, scaling="none")
    P.plot_samples(rng.normal(size=(4, 30)), None, tmp_path / "b.png")
    (a,), (b,) = drawn[0].axes, drawn[1].axes
    assert not _context_lines(a) and not _context_lines(b)  # a context as long as the window: no horizon
    assert a.get_ylabel() == "value" and b.get_ylabel() == "value (model units)"
    assert a.get_xlabel() == b.get_xlabel() == "time step"


def test_modality_plot_reads_context_and_scaling_from_info(tmp_path, drawn):
    rng = np.random.default_rng(0)
    ts = polydiff.load_modality("timeseries")
    info = {"context": 20, "horizon": 5, "scaling": {"kind": "standard"}}
    ts.plot(rng.normal(size=(3, 25, 1)), tmp_path / "s.png", reference=rng.normal(size=(3, 25, 1)), info=info)
    real, synthetic = drawn[0].axes
    assert real.get_ylabel() == "value (standard-scaled)"
    assert _context_lines(real) and _context_lines(synthetic)
    ts.plot(rng.normal(size=(3, 25, 1)), tmp_path / "t.png")  # as polydiff sample calls it: no info
    assert drawn[1].axes[0].get_xlabel() == "time step"


def test_forecast_x_axis_steps_or_dates(tmp_path, drawn):
    rng = np.random.default_rng(0)
    hist, samples = rng.normal(size=(2, 12)), rng.normal(size=(2, 20, 4))
    P.plot_forecast(hist, samples, tmp_path / "f.png")
    axes = drawn[0].axes
    assert axes[-1].get_xlabel() == "step" and all(ax.get_ylabel() == "value" for ax in axes)
    assert axes[0].get_lines()[0].get_xdata()[-1] == 11  # history at steps 0..11, forecast 12..15

    dates = [pd.date_range("2024-03-01", periods=4, freq="D")] * 2
    P.plot_forecast(hist, samples, tmp_path / "d.png", index=dates)
    ax = drawn[1].axes[-1]
    assert ax.get_xlabel() == "time"
    history_x = ax.get_lines()[0].get_xdata()
    assert pd.Timestamp(history_x[-1]) == pd.Timestamp("2024-02-29")  # history continues back from the dates
    assert pd.Timestamp(history_x[0]) == pd.Timestamp("2024-02-18")

    steps = [pd.RangeIndex(100, 104)] * 2  # histories with integer time stamps
    P.plot_forecast(hist, samples, tmp_path / "r.png", index=steps)
    ax = drawn[2].axes[-1]
    assert ax.get_xlabel() == "step" and ax.get_lines()[0].get_xdata()[0] == 88
