"""Forecast metrics against the golden gluonts / properscoring values (shared fixture) and
against properscoring itself on fresh samples."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from polydiff_timeseries import Forecast
from polydiff_timeseries import metrics as M

FIXTURE = Path(os.environ.get("POLYDIFF_SHARED", Path(__file__).resolve().parents[3] / "shared")) / \
    "fixtures" / "forecast_metrics"
TOL = {"atol": 1e-9, "rtol": 1e-7}


@pytest.fixture(scope="module")
def golden():
    if not (FIXTURE / "data.npz").is_file():
        pytest.skip(f"shared fixture not found at {FIXTURE}")
    with np.load(FIXTURE / "data.npz", allow_pickle=False) as z:
        data = {k: z[k] for k in z.files}
    expected = json.loads((FIXTURE / "expected.json").read_text())
    return data, expected


@pytest.mark.shared
def test_gluonts_key_metrics(golden):
    data, exp = golden
    h = int(data["history_length"])
    y, hist, s = data["target"][:, h:], data["target"][:, :h], data["samples"]
    key = exp["gluonts_evaluator"]["key_metrics"]
    np.testing.assert_allclose(M.mean_weighted_quantile_loss(y, s), key["mean_wQuantileLoss"], **TOL)
    np.testing.assert_allclose(M.nrmse(y, s), key["NRMSE"], **TOL)
    np.testing.assert_allclose(M.nd(y, s), key["ND"], **TOL)
    np.testing.assert_allclose(M.mase(y, s, hist, 24), key["MASE"], **TOL)
    agg = exp["gluonts_evaluator"]["aggregate_all"]
    for q, w in M.weighted_quantile_losses(y, s).items():
        np.testing.assert_allclose(w, agg[f"wQuantileLoss[{q}]"], **TOL)
        np.testing.assert_allclose(M.coverage(y, s, q), agg[f"Coverage[{q}]"], **TOL)
    items = exp["gluonts_evaluator"]["per_item"]
    for i, item in enumerate(items):
        np.testing.assert_allclose(M.seasonal_error(hist[i], 24)[0], item["seasonal_error"], **TOL)
        np.testing.assert_allclose(M.mase(y[i:i + 1], s[i:i + 1], hist[i:i + 1], 24), item["MASE"], **TOL)


@pytest.mark.shared
def test_nearest_rank_convention_is_what_the_fixture_checks(golden):
    data, exp = golden
    h = int(data["history_length"])
    y, s = data["target"][:, h:], data["samples"]
    wrong = exp["tolerance"]["if_linear_interpolated_quantiles_were_used_instead"]["mean_wQuantileLoss"]
    interp = np.mean([M.quantile_loss(y, np.quantile(s, q, axis=1), q) / np.abs(y).sum() for q in M.QUANTILES])
    np.testing.assert_allclose(interp, wrong, **TOL)  # linear interpolation reproduces the "wrong" value
    assert abs(M.mean_weighted_quantile_loss(y, s) - wrong) > 1e-5
    idx = exp["quantile_convention"]["sorted_index_for_S50"]
    srt = np.sort(s, axis=1)
    for q, i in idx.items():
        np.testing.assert_array_equal(M.sample_quantile(s, float(q)), srt[:, i])


@pytest.mark.shared
def test_crps_ensemble_matches_properscoring_golden(golden):
    data, exp = golden
    h = int(data["history_length"])
    y, s = data["target"][:, h:], data["samples"]
    ps = exp["properscoring_crps_ensemble"]
    crps = M.crps_ensemble(y, s)
    np.testing.assert_allclose(crps, np.asarray(ps["per_point"]), **TOL)
    np.testing.assert_allclose(crps.mean(), ps["mean_all_points"], **TOL)
    np.testing.assert_allclose(crps.mean(1), ps["mean_per_series"], **TOL)


def test_quantile_crps_tracks_ensemble_crps():
    """The quantile-loss CRPS approximates the ensemble CRPS (both normalised by sum |y|)."""
    rng = np.random.default_rng(0)
    y = 10 + rng.normal(size=(20, 24))
    s = 10 + rng.normal(size=(20, 200, 24)) * 1.3 + 0.2
    m = M.forecast_metrics(y, s, history=10 + rng.normal(size=(20, 100)), season=1)
    assert abs(m["crps"] - m["crps_ensemble"]) / m["crps_ensemble"] < 0.1
    # a sharper, calibrated forecast scores better than a biased one
    assert M.mean_weighted_quantile_loss(y, s) < M.mean_weighted_quantile_loss(y, s + 3)


def test_against_properscoring_if_installed():
    ps = pytest.importorskip("properscoring")
    rng = np.random.default_rng(1)
    y = rng.normal(size=(3, 7))
    s = rng.normal(size=(3, 31, 7)) * 2
    ref = ps.crps_ensemble(y, np.moveaxis(s, 1, -1), axis=-1)
    np.testing.assert_allclose(M.crps_ensemble(y, s), ref, **TOL)


def test_shapes_and_errors():
    with pytest.raises(ValueError, match=r"target \(N, H\)"):
        M.nd(np.ones((2, 3)), np.ones((2, 5, 4)))
    with pytest.raises(ValueError, match="finite"):
        M.nd(np.array([[1.0, np.nan]]), np.ones((1, 3, 2)))
    x = np.arange(24.0).reshape(2, 4, 3)
    assert M.flatten_channels(x).shape == (6, 4)
    np.testing.assert_array_equal(M.flatten_channels(x)[1], x[0, :, 1])
    # seasonal error falls back to lag 1 when the history is too short for the season
    np.testing.assert_allclose(M.seasonal_error(np.array([[0.0, 2.0, 4.0]]), 24), [2.0])


def test_seasons_and_quantile_levels_outside_their_range_are_named():
    rng = np.random.default_rng(0)
    fc = Forecast(rng.normal(size=(3, 5, 4)), ["a", "b", "c"])
    target, history = rng.normal(size=(3, 4)), rng.normal(size=(3, 12))
    for season in (0, -1, 2.5):
        with pytest.raises(ValueError, match=rf"season must be a positive integer .*got {season}"):
            fc.metrics(target, history, season=season)
    assert np.isfinite(fc.metrics(target, history, season=np.int64(4))["mase"])
    for q in (1.5, -0.1, float("nan")):
        with pytest.raises(ValueError, match=r"quantile levels must lie in \[0, 1\]"):
            fc.quantile(q)
    with pytest.raises(ValueError, match=r"quantile levels must lie in \[0, 1\], got 2"):
        fc.to_frame(quantiles=[0.5, 2])
    assert fc.quantile(1).shape == (3, 4)


def test_a_forecast_shows_its_shape_not_its_samples():
    assert repr(Forecast(np.zeros((8, 100, 10)), [str(i) for i in range(8)])) == \
        "Forecast(8 series x 100 samples x 10 steps, ids=['0', '1', '2', '3', ...])"
    assert repr(Forecast(np.zeros((1, 2, 3)), ["x/0"])) == "Forecast(1 series x 2 samples x 3 steps, ids=['x/0'])"
