"""Time-series data: embedded and shared sources, frames and files, clear errors, windows."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from polydiff_timeseries import data as D
from polydiff_timeseries.modality import TimeSeriesModality, read_windows, write_windows

SHARED = Path(os.environ.get("POLYDIFF_SHARED", Path(__file__).resolve().parents[3] / "shared"))
needs_shared = pytest.mark.skipif(not (SHARED / "data" / "timeseries").is_dir(), reason="shared data not found")


@pytest.mark.parametrize("name,length,season", [("sunspots", 309, 1), ("nile", 100, 1), ("elnino", 732, 12),
                                                ("co2", 2284, 1), ("macrodata", 203, 4), ("elec_equip", 257, 12)])
def test_statsmodels_series(name, length, season):
    ss = D.statsmodels_series(name)
    assert len(ss) == 1 and ss.values[0].shape[0] == length
    assert np.isfinite(ss.values[0]).all()  # co2's 59 missing weeks are interpolated
    assert ss.season == season


def test_generated_series():
    ar = D.ar_series(5, 120, season=10, seed=1)
    assert len(ar) == 5 and ar.values[0].shape == (120, 1) and (np.asarray(ar.values) > 0).mean() > 0.95
    again = D.ar_series(5, 120, season=10, seed=1)
    np.testing.assert_array_equal(ar.values[3], again.values[3])
    sine = D.sine_series(1, 100, channels=3)
    assert sine.values[0].shape == (100, 3) and np.abs(sine.values[0]).max() <= 1


def test_long_frame_roundtrip_and_univariate():
    ss = D.ar_series(3, 30)
    df = ss.to_long()
    assert list(df.columns) == ["item_id", "timestamp", "target"]
    back = D.from_long(df, "target")
    assert back.ids == ss.ids
    np.testing.assert_allclose(back.values[2], ss.values[2])
    idx = pd.date_range("2024-01-01", periods=48, freq="h")
    wide = pd.DataFrame({"a": np.arange(48.0), "b": np.arange(48.0) * 2}, index=idx)
    uni = D.from_wide(wide)
    assert uni.ids == ["a", "b"] and uni.freq == "h" and uni.season == 24
    multi = D.from_wide(wide, multivariate=True)
    assert len(multi) == 1 and multi.channels == 2


def test_irregular_timestamps_error_names_series_and_row(tmp_path):
    ts = list(pd.date_range("2024-01-01", periods=10, freq="h"))
    ts[6] = ts[6] + pd.Timedelta("30min")
    df = pd.DataFrame({"item_id": "s1", "timestamp": ts, "target": np.arange(10.0)})
    f = tmp_path / "irregular.csv"
    df.to_csv(f, index=False)
    with pytest.raises(D.DataError, match=r"irregular.csv: series 's1'.*irregular timestamps.*before line 8 "):
        D.read_series(f, "target", id_col="item_id")
    # duplicates / unsorted rows are named too
    df2 = pd.DataFrame({"timestamp": [ts[0], ts[2], ts[1]], "target": [1.0, 2, 3]})
    with pytest.raises(D.DataError, match="strictly increasing"):
        D.from_long(df2, id_col=None)
    # regularize=True reindexes onto the common step; the gaps become NaNs
    gaps = pd.DataFrame({"timestamp": pd.to_datetime(["2024-01-01 00:00", "2024-01-01 01:00",
                                                      "2024-01-01 03:00", "2024-01-01 04:00"]),
                         "target": [1.0, 2.0, 4.0, 5.0]})
    ss = D.from_long(gaps, id_col=None, regularize=True, nan="mask")
    assert ss.values[0].shape == (5, 1) and np.isnan(ss.values[0][2, 0]) and ss.freq == "h"
    # calendar steps vary in length: monthly data with a missing month is monthly with one gap (the
    # greatest common step of months, one day, made 701 steps of 23 values)
    for freq in ("MS", "QE", "B"):
        idx = pd.date_range("2020-01-01", periods=24, freq=freq).delete(5)
        ss = D.from_long(pd.DataFrame({"timestamp": idx, "target": np.arange(23.0)}), id_col=None, regularize=True,
                         nan="mask")
        assert ss.freq == freq and ss.values[0].shape == (24, 1)
        assert np.isnan(ss.values[0][5, 0]) and np.array_equal(np.delete(ss.values[0][:, 0], 5), np.arange(23.0))
    # a typo in the time column would allocate 1e11 steps: an error naming the row
    typo = pd.DataFrame({"timestamp": [0, 1, 2, 100_000_000_000], "target": [1.0, 2, 3, 4]})
    with pytest.raises(D.DataError, match=r"regularize=True would make 100,000,000,001 time steps from 4 rows; the "
                                          r"widest gap, 99999999998 steps, is before row 3"):
        D.from_long(typo, id_col=None, regularize=True, nan="mask")


def test_nan_policies(tmp_path):
    idx = pd.date_range("2024-01-01", periods=6, freq="D")
    df = pd.DataFrame({"timestamp": idx, "load": [1.0, 2.0, np.nan, 4.0, 5.0, 6.0]})
    f = tmp_path / "nans.csv"
    df.to_csv(f, index=False)
    with pytest.raises(D.DataError, match=r"nans.csv.*column 'load'.*1 missing.*first at line 4 "):
        D.read_series(f, "load")
    ss = D.read_series(f, "load", nan="interpolate")
    assert ss.values[0][2, 0] == pytest.approx(3.0)
    masked = D.read_series(f, "load", nan="mask")
    assert np.isnan(masked.values[0][2, 0])
    with pytest.raises(D.DataError, match="not a number"):
        D.from_long(pd.DataFrame({"timestamp": idx[:2], "target": ["1", "x"]}), id_col=None)


def test_too_short_series_error_and_drop():
    ss = D.SeriesSet([np.ones((100, 1)), np.ones((20, 1))], ["long", "short"],
                     [pd.RangeIndex(100), pd.RangeIndex(20)], ["target"], source="mine.csv")
    with pytest.raises(D.DataError, match=r"mine.csv: series 'short' has 20 time steps.*needs 35"):
        D.split_windows(ss, 30, 5, test_windows=1)
    with pytest.warns(UserWarning, match="dropped"):
        sp = D.split_windows(ss, 30, 5, test_windows=1, drop_short=True)
    assert set(sp["train"].series.tolist()) == {0}


def test_windows_splits_and_mean_scaling():
    v = np.arange(100.0)[:, None] + 1
    ss = D.SeriesSet([v], ["s"], [pd.RangeIndex(100)], ["target"])
    sp = D.split_windows(ss, 20, 5, stride=5, test_windows=2, val_windows=1)
    assert sp["test"].end.tolist() == [95, 100]
    assert sp["val"].end.tolist() == [90]
    assert sp["train"].end.max() <= 85  # training windows end before the first validation target
    sc = D.Scaler("mean", context=15)
    scaled, loc, scale = D.scale_windows(sp["test"].windows, sc)
    np.testing.assert_allclose(scaled * scale[:, None], sp["test"].windows)
    np.testing.assert_allclose(scale[:, 0], [np.mean(np.arange(76.0, 91.0)), np.mean(np.arange(81.0, 96.0))])
    assert (loc == 0).all()
    mm = D.Scaler("minmax").fit([v])
    s2, _, _ = D.scale_windows(sp["train"].windows, mm)
    assert s2.min() >= -1 and s2.max() <= 1


def test_modality_dataset_bundle_and_missing_values(tmp_path):
    m = TimeSeriesModality()
    b = m.dataset("ar", n_series=4, length=120)
    assert b.info["length"] == 50 and b.info["channels"] == 1 and len(b.test) == 8
    item = b.train[0]
    assert item["x"].shape == (50, 1) and item["observed"].shape == (50, 1)
    # NaNs kept as unobserved entries (masked field) with nan="mask"
    idx = pd.date_range("2024-01-01", periods=80, freq="h")
    vals = np.sin(np.arange(80.0)) + 2
    vals[10] = np.nan
    pd.DataFrame({"timestamp": idx, "y": vals}).to_csv(tmp_path / "m.csv", index=False)
    b2 = m.dataset("file", path=str(tmp_path / "m.csv"), target="y", context=12, horizon=4, nan="mask")
    assert b2.info["has_missing"] and float(b2.train.tensors["observed"].min()) == 0.0
    assert torch.isfinite(b2.train.tensors["x"]).all()
    with pytest.raises(ValueError, match="spectral representation needs complete windows"):
        m.fields(b2.info, representation="spectral")


def test_write_read_windows(tmp_path):
    w = np.random.default_rng(0).normal(size=(3, 7, 2))
    w[0, 0, 0] = float(np.float32(0.1))                         # a float32 sample's value, as to_native gives it
    w[1, 2] = [1e300, -1e-300]
    f = write_windows(w, tmp_path / "s.csv")
    assert np.array_equal(read_windows(f), w)                  # the same floats, not 9 digits of them
    w[2, 3, 1], w[2, 4, 0] = np.nan, -np.inf                   # a diverged sample reads back as it was written
    got = read_windows(write_windows(w, tmp_path / "d.csv"))
    assert np.array_equal(got, w, equal_nan=True)
    with pytest.raises(ValueError, match=r"generation_metrics: synthetic window 2 holds NaN or infinite values"):
        TimeSeriesModality().evaluate(got, w[:2], {})


@pytest.mark.shared
@needs_shared
def test_shared_loaders():
    e = D.ett("ETTh1")
    assert e.values[0].shape == (17420, 7) and e.freq == "h" and e.columns[-1] == "OT"
    x = D.exchange_rate()
    assert x.values[0].shape == (7588, 8)
    b = TimeSeriesModality().dataset("etth2", context=48, horizon=24, columns=["OT"], max_steps=2000)
    assert b.info["n_series"] == 1 and len(b.test) == 7


def test_shared_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv("POLYDIFF_SHARED", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="POLYDIFF_SHARED"):
        D.ett("ETTh1")
