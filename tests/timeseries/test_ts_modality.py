"""The plugin through the core: entry point, CLI train / sample / evaluate of a tiny PaCoDi,
generation metrics, plots and the pytorch-forecasting bridge."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from polydiff.cli import main
from polydiff_timeseries import genmetrics as G
from polydiff_timeseries.modality import TimeSeriesModality
from polydiff_timeseries.plot import plot_forecast, plot_samples


def test_listed_by_polydiff_modalities(capsys):
    assert main(["modalities", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)["timeseries"]
    assert "error" not in info
    assert info["datasets"][0] == "ar" and {"sunspots", "etth1", "exchange_rate", "file"} <= set(info["datasets"])
    assert info["networks"] == ["tsdiff", "transformer", "pacodi"]
    assert {"tsdiff_ar", "pacodi_sine", "pacodi_sine_sde", "timedomain_sine"} <= set(info["recipes"])


@pytest.mark.parametrize("recipe,extra", [("pacodi_sine", ["model.depth=1", "model.hidden=16"]),
                                          ("tsdiff_ar", ["data.n_series=10", "data.length=120",
                                                         "model.hidden=16", "model.depth=1"])])
def test_cli_train_sample_evaluate(tmp_path, recipe, extra, capsys):
    out = tmp_path / "run"
    sets = ["train.max_steps=30", "train.checkpoint_every=30", "train.progress=false", "train.logger=none",
            "data.length=600" if recipe.startswith("pacodi") else "data.stride=10", *extra]
    args = ["train", f"configs/timeseries/{recipe}.yaml", "--out", str(out), "--fresh"]
    for s in sets:
        args += ["--set", s]
    assert main(args) == 0
    ckpt = out / "checkpoints" / "last.ckpt"
    assert main(["sample", str(ckpt), "--num", "40", "--steps", "10", "--out", str(tmp_path / "s"), "--plot"]) == 0
    windows = TimeSeriesModality().read(tmp_path / "s")
    assert windows.shape[0] == 40 and np.isfinite(windows).all()
    assert (tmp_path / "s" / "samples.png").is_file()
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "s"), "--json", str(tmp_path / "m.json")]) == 0
    metrics = json.loads((tmp_path / "m.json").read_text())["metrics"]
    assert {"discriminative", "predictive", "context_fid", "acf_error"} <= set(metrics)
    assert ("lps" in metrics) == recipe.startswith("tsdiff")


def test_generation_metrics_separate_good_from_bad():
    rng = np.random.default_rng(0)
    t = np.arange(24)

    def sines(n, seed):
        r = np.random.default_rng(seed)
        return np.sin(r.uniform(0, 0.3, (n, 1, 2)) * t[None, :, None] + r.uniform(0, 6, (n, 1, 2)))

    real, same = sines(300, 1), sines(300, 2)
    noise = rng.normal(size=(300, 24, 2)) * 0.7
    assert G.discriminative_score(same, real, steps=150) < G.discriminative_score(noise, real, steps=150)
    # (the predictive score of independent channels: each one's own next value)
    assert G.predictive_score(same, real, steps=150, target="all") < \
        G.predictive_score(noise, real, steps=150, target="all")
    enc = G.train_encoder(real, steps=60)
    assert G.context_fid(same, real, enc) < G.context_fid(noise, real, enc)
    # seeded: the caller's torch stream neither changes the scores nor is moved by them
    torch.manual_seed(0)
    expected_next = torch.rand(3)
    torch.manual_seed(0)
    d1, p1 = G.discriminative_score(same, real, steps=20), G.predictive_score(same, real, steps=20)
    assert torch.equal(torch.rand(3), expected_next)
    torch.manual_seed(77)
    assert (d1, p1) == (G.discriminative_score(same, real, steps=20), G.predictive_score(same, real, steps=20))
    m = G.marginal_metrics(same, real)
    assert m["acf_error"] < G.marginal_metrics(noise, real)["acf_error"]
    win = np.concatenate([real, same])[..., :1]
    assert G.linear_predictive_score(win, real[..., :1], 18) < G.linear_predictive_score(
        rng.normal(size=(600, 24, 1)), real[..., :1], 18)


def test_plots(tmp_path):
    rng = np.random.default_rng(0)
    p = plot_forecast(rng.normal(size=(2, 30)), rng.normal(size=(2, 50, 6)), tmp_path / "f.png",
                      target=rng.normal(size=(2, 6)), titles=["a", "b"])
    assert p is not None and p.stat().st_size > 1000
    assert plot_samples(rng.normal(size=(5, 24, 2)), rng.normal(size=(5, 24, 2)), tmp_path / "s.png").is_file()


def test_pytorch_forecasting_bridge_and_deepar():
    pytest.importorskip("pytorch_forecasting")
    from pytorch_forecasting import TimeSeriesDataSet
    from pytorch_forecasting.data.examples import generate_ar_data

    from polydiff_timeseries.baselines import DeepARForecaster, from_timeseries_dataset

    df = generate_ar_data(seasonality=10, timesteps=60, n_series=3, seed=1)
    ds = TimeSeriesDataSet(df, time_idx="time_idx", target="value", group_ids=["series"], max_encoder_length=20,
                           max_prediction_length=5, time_varying_unknown_reals=["value"])
    ss = from_timeseries_dataset(ds)
    assert len(ss) == 3 and ss.values[0].shape == (60, 1)
    np.testing.assert_allclose(ss.values[1][:, 0], df[df.series == 1].sort_values("time_idx").value, rtol=1e-6)
    assert ss.season == 1 and ss.freq is None
    rng = np.random.default_rng(0)
    w = 1 + 0.3 * np.sin(np.arange(15)[None] / 2 + rng.uniform(0, 6, (64, 1))) + 0.05 * rng.normal(size=(64, 15))
    model = DeepARForecaster(10, 5, hidden=8, layers=1, max_steps=3, batch_size=32).fit(w)
    s = model.predict(w[:5, :10], num_samples=7)
    assert s.shape == (5, 7, 5) and np.isfinite(s).all()


def test_predictive_score_is_timegans_last_channel_from_the_others():
    """TimeGAN's predictive score: the last channel's next value from the other channels. Windows
    where it follows the first channel are told from windows where it does not, although both
    have the same marginals; one channel: the next value from the values before."""
    r = np.random.default_rng(0)

    def windows(n, linked):
        lead = np.sin(r.uniform(0.1, 0.4, (n, 1)) * np.arange(25)[None] + r.uniform(0, 6, (n, 1)))
        follow = lead[:, :-1] if linked else r.permutation(lead)[:, :-1]
        return np.stack([lead[:, 1:], follow], -1)  # channel 1 at step t+1 = channel 0 at step t

    real, good, broken = windows(300, True), windows(300, True), windows(300, False)
    assert G.predictive_score(good, real, steps=200) < 0.5 * G.predictive_score(broken, real, steps=200)
    one = real[..., :1]
    assert G.predictive_score(one, one, steps=200) < G.predictive_score(r.normal(size=one.shape), one, steps=200)


def test_generation_metrics_of_too_few_or_too_short_windows_are_nan_with_a_warning():
    """One window (either side) leaves the covariance-based scores undefined, and one-step
    windows the lagged ones: NaN with one warning naming them, the other metrics still computed
    (this was a sqrtm 'Internal error' or 'need at least one array to stack')."""
    r = np.random.default_rng(0)
    with pytest.warns(UserWarning, match=r"discriminative, context_fid: NaN \(undefined for 1 generated window"):
        m = G.generation_metrics(r.normal(size=(1, 8, 2)), r.normal(size=(10, 8, 2)), steps=5)
    assert math.isnan(m["context_fid"]) and math.isnan(m["discriminative"])
    assert np.isfinite([m["mean_error"], m["acf_error"], m["predictive"]]).all()
    with pytest.warns(UserWarning, match=r"predictive, predictive_all, acf_error: NaN \(undefined for windows "
                                         r"of 1 step"):
        m = G.generation_metrics(r.normal(size=(5, 1, 2)), r.normal(size=(10, 1, 2)), steps=5)
    assert math.isnan(m["predictive"]) and math.isnan(m["predictive_all"]) and math.isnan(m["acf_error"])
    assert np.isfinite(m["context_fid"])
