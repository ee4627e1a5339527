"""TSDiff at sampling time: energies, self-guidance against an exact Gaussian conditional,
missing-value scenarios, and predict / refine / synthesize on a tiny trained model."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

import polydiff
from polydiff import FieldSpec, GaussianProcess, Masked, sample
from polydiff_timeseries import Forecast, missing_mask, predict, refine
from polydiff_timeseries.baselines import LinearForecaster, seasonal_naive
from polydiff_timeseries.genmetrics import linear_predictive_score, tstr
from polydiff_timeseries.metrics import forecast_metrics
from polydiff_timeseries.tsdiff import observation_energy, quantile_levels, raw_windows, self_guidance

L, CTX, RHO = 12, 8, 0.9


def test_energies_and_levels():
    q = quantile_levels(2, 3)
    torch.testing.assert_close(q, torch.tensor([0.25, 0.5, 0.75, 0.25, 0.5, 0.75], dtype=torch.float64))
    x0 = torch.zeros(2, 4, 1)
    obs = torch.tensor([1.0, -1.0, 2.0, 5.0]).reshape(1, 4, 1).expand(2, 4, 1)
    mask = torch.tensor([1.0, 1.0, 1.0, 0.0]).reshape(1, 4, 1).expand(2, 4, 1)
    torch.testing.assert_close(observation_energy(x0, obs, mask, "mse"), torch.tensor([6.0, 6.0]))
    e = observation_energy(x0, obs, mask, "quantile", torch.tensor([0.1, 0.9]))
    torch.testing.assert_close(e, torch.tensor([0.1 * 3 + 0.9 * 1, 0.9 * 3 + 0.1 * 1]))
    with pytest.raises(ValueError, match="allowed"):
        observation_energy(x0, obs, mask, "l1")


def test_missing_scenarios():
    assert missing_mask(6, "BM-B", 2)[0].tolist() == [False, False, True, True, True, True]
    assert missing_mask(6, "BM-E", 2)[0].tolist() == [True, True, True, True, False, False]
    rm = missing_mask(50, "RM", 10, n=3, seed=1)
    assert (rm.sum(1) == 40).all() and not (rm[0] == rm[1]).all()
    assert missing_mask(5, "none")[0].all()
    with pytest.raises(ValueError, match="allowed"):
        missing_mask(5, "XX")


def _gaussian_ar():
    """Exact denoiser of stationary AR(1) windows x ~ N(0, S), S_ij = rho^|i-j|."""
    i = torch.arange(L, dtype=torch.float64)
    cov = RHO ** (i[:, None] - i[None]).abs()
    proc = GaussianProcess("vp_linear")
    fields = {"x": FieldSpec(proc, Masked("observed"), "eps")}

    def model(state, t):
        x = state["x"][..., 0].double()
        c = proc.coefs(t.double().reshape(-1, 1, 1))
        a, s = c.alpha, c.sigma
        gain = a * cov[None] @ torch.linalg.inv(a**2 * cov[None] + s**2 * torch.eye(L, dtype=torch.float64)[None])
        x0 = (gain @ x[..., None])[..., 0]
        return {"x": ((x - a[:, :, 0] * x0) / s[:, :, 0])[..., None].to(state["x"].dtype)}

    return cov, fields, model


def test_self_guidance_approaches_the_exact_conditional():
    cov, fields, model = _gaussian_ar()
    y = torch.tensor([0.5, 0.8, 1.0, 1.4, 1.2, 1.6, 1.9, 2.0], dtype=torch.float64)
    cond_mean = cov[CTX:, :CTX] @ torch.linalg.solve(cov[:CTX, :CTX], y)
    cond_std = torch.sqrt(torch.diag(cov[CTX:, CTX:] - cov[CTX:, :CTX] @ torch.linalg.solve(cov[:CTX, :CTX],
                                                                                            cov[:CTX, CTX:])))
    b = 200
    obs = torch.zeros(b, L, 1)
    obs[:, :CTX, 0] = y.float()
    mask = torch.zeros(b, L, 1)
    mask[:, :CTX] = 1
    st = {"x": (b, L, 1), "observed": torch.ones(b, L, 1), "y_obs": obs, "y_mask": mask,
          "q": quantile_levels(1, b).float()}
    free = sample(model, fields, st, sampler="ddpm", steps=50, seed=0)["x"][..., 0].double()
    assert float(free[:, CTX].mean().abs()) < 0.25  # unguided: the stationary mean 0
    out = sample(model, fields, st, sampler="ddpm", steps=50, seed=0,
                 wrap_model=self_guidance(fields, "mse", 1.0))["x"][..., 0].double()
    assert float((out[:, :CTX] - y).abs().mean()) < 0.4
    assert float((out[:, CTX:].mean(0) - cond_mean).abs().max()) < 0.3
    assert float((out[:, CTX:].std(0) - cond_std).abs().max()) < 0.25
    # quantile guidance: the sample with level k/(S+1) lands at that quantile, so levels and
    # horizon values are positively rank-correlated
    qo = sample(model, fields, st, sampler="ddpm", steps=50, seed=0,
                wrap_model=self_guidance(fields, "quantile", 4.0))["x"][..., 0].double()
    r = np.corrcoef(np.argsort(np.argsort(qo[:, CTX].numpy())), np.arange(b))[0, 1]
    assert r > 0.3
    # a DDIM step with guidance equals TSDiff's: eps + scale * sigma * grad E
    t = torch.full((4,), 0.4)
    small = {k: (v[:4] if isinstance(v, torch.Tensor) else v) for k, v in st.items()}
    small["x"] = torch.randn(4, L, 1)
    wrapped = self_guidance(fields, "mse", 2.0)(model)
    eps_g = wrapped(small, t)["x"].double()
    xs = small["x"].double().requires_grad_(True)
    c = fields["x"].process.coefs(t.double().reshape(-1, 1, 1))
    e = model({**small, "x": xs}, t)["x"].double()
    x0 = (xs - c.sigma * e) / c.alpha
    grad, = torch.autograd.grad(observation_energy(x0, obs[:4].double(), mask[:4].double(), "mse").sum(), xs)
    torch.testing.assert_close(eps_g, (e + 2.0 * c.sigma * grad).detach(), atol=1e-4, rtol=1e-4)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny TSDiff trained with polydiff.train on the embedded AR data (about 10 s)."""
    out = tmp_path_factory.mktemp("tsdiff")
    cfg = {"modality": "timeseries",
           "data": {"name": "ar", "context": 20, "horizon": 5, "stride": 5, "n_series": 20, "length": 150,
                    "season": 5},
           "model": {"name": "tsdiff", "hidden": 16, "depth": 1, "state": 16, "emb_dim": 16},
           "process": {"schedule": "tsdiff", "n": 20},
           "train": {"max_steps": 150, "batch_size": 32, "lr": 3e-3, "ema": 0.9, "checkpoint_every": 150,
                     "progress": False, "logger": "none"},
           "sample": {"num": 8, "sampler": "ddpm", "steps": 20}}
    run = polydiff.train(cfg, out, verbose=False)
    gen = polydiff.load(run.checkpoint)
    data = gen.modality.dataset("ar", **{k: v for k, v in cfg["data"].items() if k != "name"})
    return gen, data


def test_predict_refine_end_to_end(tiny):
    gen, data = tiny
    w = raw_windows(data.test)[:6, :, 0]
    ctx, y = w[:, :20], w[:, 20:]
    fc = predict(gen, ctx, num_samples=8, steps=20, seed=0)
    assert fc.samples.shape == (6, 8, 5) and np.isfinite(fc.samples).all()
    again = predict(gen, ctx, num_samples=8, steps=20, seed=0)
    np.testing.assert_allclose(again.samples, fc.samples, rtol=1e-5, atol=1e-5)
    m = fc.metrics(y, ctx, 5)
    assert 0 < m["crps"] < 1 and np.isfinite(m["mase"])
    # missing values in the context (BM-E) and a too-short history padded as missing
    obs = missing_mask(20, "BM-E", 5, n=6)
    fm = predict(gen, ctx, num_samples=4, steps=20, observed=obs)
    assert np.isfinite(fm.samples).all()
    with pytest.warns(UserWarning, match="shorter than the model's context"):
        short = predict(gen, ctx[:, -12:], num_samples=4, steps=20)
    assert short.samples.shape == (6, 4, 5)
    with pytest.raises(ValueError, match=r"context: 2 channels, the model has 1"):
        predict(gen, np.stack([ctx, ctx], -1), num_samples=2, steps=2)
    with pytest.raises(ValueError, match=r"expected an array of shape \(T,\), \(N, T\) or \(N, T, channels\)"):
        predict(gen, ctx[:, :, None, None], num_samples=2, steps=2)
    # refinement of a seasonal-naive forecast, both variants, moves it
    base = seasonal_naive(ctx, 5, 5)
    for method in ("langevin", "ml"):
        r = refine(gen, ctx, base, num_samples=4, iterations=3, method=method)
        assert r.samples.shape == (6, 4, 5) and np.isfinite(r.samples).all()
        assert np.abs(r.samples - base).mean() > 1e-4
    with pytest.raises(ValueError, match="do not match"):
        refine(gen, ctx, base[:, :, :3])


def test_predict_names_what_is_wrong_with_its_arguments(tiny):
    gen, data = tiny
    ctx = raw_windows(data.test)[:2, :20, 0]
    for options, message in (({"num_samples": 0}, "num_samples must be a positive integer, got 0"),
                             ({"num_samples": 2.5}, "num_samples must be a positive integer, got 2.5"),
                             ({"batch_size": 0}, "batch_size must be a positive integer, got 0"),
                             ({"seed": "a"}, r"seed must be an integer \(or None for a fresh one\), got 'a'"),
                             ({"seed": 1.5}, "seed must be an integer"),
                             ({"observed": np.ones((2, 5))},
                              r"observed: expected a mask of shape \(N, context\) = \(2, 20\), .* got shape \(2, 5\)")):
        with pytest.raises(ValueError, match=message):
            predict(gen, ctx, **{"num_samples": 2, "steps": 4, **options})
    with pytest.raises(ValueError, match=r"context: no series \(an empty context\)"):
        predict(gen, ctx[:0], num_samples=2, steps=4)
    # seed None draws a fresh seed, as generate does; the device is predict's own argument
    fc = predict(gen, ctx, num_samples=2, steps=4, seed=None, device="cpu")
    assert fc.samples.shape == (2, 2, 5) and np.isfinite(fc.samples).all()
    # a history shorter than the context is padded with the command line's warning, at the caller's line
    with pytest.warns(UserWarning, match=r"^context: 2 of 2 series shorter than the model's context of 20 steps: "
                                         r"16 step\(s\) in all padded at the front as missing$") as caught:
        predict(gen, ctx[:, -12:], num_samples=2, steps=4)
    assert [w.filename for w in caught if "shorter" in str(w.message)] == [__file__]


def test_frames_in_and_out(tiny):
    gen, _ = tiny
    idx = pd.date_range("2024-01-01", periods=30, freq="D")
    df = pd.concat([pd.DataFrame({"item_id": k, "timestamp": idx, "target": 2 + np.sin(np.arange(30.0) + j)})
                    for j, k in enumerate(["a", "b"])])
    fc = predict(gen, df, num_samples=5, steps=20)
    frame = fc.to_frame()
    assert list(frame.columns[:3]) == ["item_id", "timestamp", "mean"] and "0.5" in frame.columns
    assert frame["timestamp"].iloc[0] == pd.Timestamp("2024-01-31") and len(frame) == 2 * 5
    assert (frame["0.9"] >= frame["0.1"]).all()
    assert isinstance(fc, Forecast) and fc.ids == ["a", "b"]
    # a pytorch-forecasting TimeSeriesDataSet is accepted as the history too
    pf = pytest.importorskip("pytorch_forecasting")
    long = pd.DataFrame({"series": np.repeat(["0", "1"], 30), "time_idx": np.tile(np.arange(30), 2),
                         "value": np.concatenate([2 + np.sin(np.arange(30.0)), 3 + np.cos(np.arange(30.0))])})
    ds = pf.TimeSeriesDataSet(long, time_idx="time_idx", target="value", group_ids=["series"],
                              max_encoder_length=20, max_prediction_length=5, time_varying_unknown_reals=["value"])
    fts = predict(gen, ds, num_samples=4, steps=20)
    assert fts.samples.shape == (2, 4, 5) and fts.index[0][0] == 30


def test_synthesize_tstr_and_lps(tiny):
    gen, data = tiny
    syn = gen.generate(64, seed=0)
    assert syn.shape == (64, 25, 1)
    real = data.test.tensors["x"].numpy()
    lps = linear_predictive_score(syn, real, 20)
    assert np.isfinite(lps) and lps > 0
    res = tstr(syn, real, 20)
    assert res["crps"] == pytest.approx(lps)
    # a linear model trained on the real training windows is a sane reference point
    lin = LinearForecaster(20).fit(data.train.tensors["x"].numpy())
    pred = lin.predict(real[:, :20])
    ref = forecast_metrics(real[:, 20:, 0], pred[:, None, :, 0])["crps"]
    assert ref < 1.0


def test_forecast_command_and_native_observations(tiny, tmp_path, capsys):
    """`polydiff timeseries forecast CKPT SERIES.csv` (a plugin subcommand) and `polydiff sample
    CKPT --observed SERIES.csv` (the plugin turns its own file into an observation)."""
    from polydiff.cli import main as cli

    gen, data = tiny
    w = raw_windows(data.test)[:1, :, 0][0]
    idx = pd.date_range("2024-01-01", periods=20, freq="D")
    series = tmp_path / "history.csv"
    pd.DataFrame({"timestamp": idx, "value": w[:20]}).to_csv(series, index=False)
    out = tmp_path / "fc.csv"
    assert cli(["timeseries", "forecast", str(gen.checkpoint), str(series), "--num-samples", "8", "--steps", "20",
                "--out", str(out)]) == 0
    frame = pd.read_csv(out)
    assert list(frame.columns[:3]) == ["item_id", "timestamp", "mean"] and len(frame) == 5
    assert frame["timestamp"].iloc[0] == "2024-01-21" and (frame["0.9"] >= frame["0.1"]).all()
    capsys.readouterr()  # the forecast is not replaced without --overwrite; --steps 0 is refused, not "every step"
    assert cli(["timeseries", "forecast", str(gen.checkpoint), str(series), "--steps", "20", "--out", str(out)]) == 2
    assert "fc.csv already exists; pass --overwrite" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli(["timeseries", "forecast", str(gen.checkpoint), str(series), "--steps", "0", "--out", str(out)])
    assert "argument --steps: expected a positive integer, got 0" in capsys.readouterr().err
    with pytest.raises(ValueError, match="steps must be a positive integer, got 0"):
        predict(gen, w[:20], num_samples=2, steps=0)
    same = predict(gen, pd.read_csv(series, parse_dates=["timestamp"]).set_index("timestamp")["value"].to_numpy(),
                   num_samples=8, steps=20, seed=0)
    np.testing.assert_allclose(frame["mean"].to_numpy(), same.mean[0], rtol=1e-4, atol=1e-4)
    # inpainting the horizon from the observed history, with the core's sampler
    obs = gen.modality.observation(series, gen.info)
    assert obs.masks["x"][:20].all() and not obs.masks["x"][20:].any()
    samples = tmp_path / "samples"
    assert cli(["sample", str(gen.checkpoint), "--num", "4", "--observed", str(series), "--out", str(samples)]) == 0
    x = gen.modality.read(samples)
    np.testing.assert_allclose(x[:, :20, 0], np.broadcast_to(obs.values["x"][:20, 0].numpy(), (4, 20)), atol=1e-5)
    assert np.std(x[:, 20:, 0], axis=0).mean() > 1e-3  # the horizon is generated, not copied
    # the samples are in model units; the metadata says how to bring them back to the file's
    meta = json.loads((samples / "polydiff.json").read_text())["observed_meta"]
    assert meta["columns"] == ["value"] and len(meta["loc"]) == len(meta["scale"]) == 1
    np.testing.assert_allclose(x[0, :20, 0] * meta["scale"][0] + meta["loc"][0], w[:20], rtol=1e-5, atol=1e-5)
    bad = tmp_path / "two.csv"
    pd.DataFrame({"timestamp": idx, "a": w[:20], "b": w[:20]}).to_csv(bad, index=False)
    capsys.readouterr()
    assert cli(["sample", str(gen.checkpoint), "--observed", str(bad), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "two.csv: 2 value columns, the model has 1 channel(s)" in err and "timeseries forecast" in err


def test_modality_contract(tmp_path):
    from polydiff.testing import check_modality
    from polydiff_timeseries import TimeSeriesModality

    rep = check_modality(TimeSeriesModality(), tmp_path, data={"name": "ar", "context": 12, "horizon": 4,
                                                               "n_series": 8, "length": 60},
                         model={"name": "tsdiff", "hidden": 8, "depth": 1, "state": 8, "emb_dim": 8},
                         process={"schedule": "tsdiff", "n": 10})
    assert rep.objects.shape == (4, 16, 1)


def test_model_level_evaluation_from_the_command_line(tiny, tmp_path, capsys):
    """`polydiff evaluate CKPT --option ...`: generation metrics plus held-out forecasts."""
    import json

    from polydiff.cli import main as cli

    gen, data = tiny
    out = tmp_path / "m.json"
    assert cli(["evaluate", str(gen.checkpoint), "--num", "16", "--option", "num_samples=4", "--option", "windows=3",
                "--option", "steps=20", "--json", str(out)]) == 0
    m = json.loads(out.read_text())["metrics"]
    assert m["forecast_windows"] == 3 and 0 < m["forecast_crps"] < 2 and "discriminative" in m
    fc = predict(gen, raw_windows(data.test)[:3, :20, 0], num_samples=4, steps=20, seed=0)
    assert m["forecast_crps"] == pytest.approx(fc.metrics(raw_windows(data.test)[:3, 20:, 0],
                                                          raw_windows(data.test)[:3, :20, 0], 5)["crps"])
    capsys.readouterr()
    assert cli(["evaluate", str(gen.checkpoint), "--option", "nope=1"]) == 2
    assert "nope" in capsys.readouterr().err


def test_s4d_kernel_matches_the_complex_formula_and_is_cached_only_in_inference():
    """The real-arithmetic kernel equals S4D's complex ZOH kernel written directly; in inference
    (no gradients, or frozen parameters) it is computed once per length, and recomputed when a
    parameter changes."""
    from polydiff_timeseries.nets import S4D

    torch.manual_seed(0)
    layer = S4D(8, state=16)
    with torch.no_grad():
        layer.log_a_re.add_(0.3 * torch.randn_like(layer.log_a_re))
        layer.a_im.add_(torch.randn_like(layer.a_im))
    dt = torch.exp(layer.log_dt.double())[:, None]
    a = torch.complex(-torch.exp(layer.log_a_re.double()), layer.a_im.double())
    c = torch.view_as_complex(layer.c.double().contiguous()) * (torch.exp(dt * a) - 1) / a
    want = 2 * torch.einsum("hdn,dnl->hdl", c, torch.exp(dt[..., None] * a[..., None] * torch.arange(40))).real
    got = layer.kernel(40)
    assert got.dtype == torch.float32 and got.requires_grad  # training: differentiable, not cached
    assert torch.allclose(got.double(), want, atol=1e-5 * want.abs().max().item())
    assert layer._kernel is None

    layer.eval()
    with torch.no_grad():
        first = layer.kernel(40)
        assert layer.kernel(40) is first and layer.kernel(24) is not first
        assert torch.equal(layer.kernel(40), first)
        layer.d.add_(1.0)  # not a kernel parameter: the cache holds
        assert layer.kernel(40) is layer.kernel(40)
        cached = layer.kernel(40)
        layer.log_dt.add_(0.1)  # a kernel parameter changed in place: recomputed
        again = layer.kernel(40)
    assert again is not cached and not torch.allclose(again, cached)
    with torch.no_grad():
        cached = layer.kernel(40)
        layer.half().float()  # parameters rounded and replaced: recomputed from the rounded values
        assert layer.kernel(40) is not cached
        layer.train().eval()
        assert layer._kernel is None
    # gradients on in eval mode: a kernel is built with its graph while its parameters train,
    # and cached once they are frozen (guidance differentiates to the input only)
    assert layer.kernel(40).requires_grad and layer._kernel is None
    layer.requires_grad_(False)
    frozen = layer.kernel(40)
    assert not frozen.requires_grad and layer.kernel(40) is frozen
    u = torch.randn(2, 8, 40, requires_grad=True)
    (g,) = torch.autograd.grad(layer(u).sum(), u)  # the input's gradient through the cached kernel
    layer.requires_grad_(True)
    (g_live,) = torch.autograd.grad(layer(u).sum(), u)
    assert layer._kernel[1] is frozen and torch.allclose(g, g_live, atol=1e-6)
