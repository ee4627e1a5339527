"""The built-in toy modality: datasets, files, metrics, network, conditions."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import polydiff
from polydiff.config import ConfigError, build_data, from_dict
from polydiff.guidance import null_state
from polydiff.nn import ConditionEmbedding, precondition, shared_time
from polydiff.toy import ToyModality
from polydiff.toy.data import point_metrics, read_points, sliced_wasserstein, write_points
from polydiff.toy.gmm import ExactDenoiser, GaussianMixture


@pytest.fixture(scope="module")
def toy() -> ToyModality:
    return polydiff.load_modality("toy")


def test_plugin_found_through_entry_point(toy):
    assert "toy" in polydiff.available_modalities()
    assert isinstance(toy, ToyModality)
    d = toy.describe()
    assert d["datasets"] == ["gmm", "csv", "rotations"] and d["networks"] == ["mlp", "so3_mlp", "two_time_mlp"]
    assert "gmm" in d["recipes"]


def test_gmm_dataset_is_reproducible_and_labelled(toy):
    a, b = toy.dataset("gmm", k=3, n=500, seed=4), toy.dataset(None, k=3, n=500, seed=4)
    assert torch.equal(a.train[7]["x"], b.train[7]["x"])
    assert a.train[0]["x"].shape == (2,) and a.train[0]["label"].dtype == torch.long
    labels = a.train.tensors["label"]
    assert set(labels.tolist()) <= {0, 1, 2}
    assert a.info["conditions"] == {"label": {"kind": "class", "num_classes": 3}}
    json.dumps(a.info)  # stored in checkpoints: must be JSON-able
    # labels really are the components: points sit near their component's mean
    means = torch.tensor(a.info["gmm"]["means"])
    x = a.train.tensors["x"].double()
    assert float((x - means[labels]).norm(dim=1).mean()) < 1.0


def test_csv_dataset_with_labels(tmp_path, toy):
    f = tmp_path / "pts.csv"
    f.write_text("a,b,kind\n0.5,1,cat\n-1,2.5,dog\n\n3,4,cat\n")
    data = toy.dataset("csv", path=str(f), label="kind")
    assert torch.allclose(data.train.tensors["x"], torch.tensor([[0.5, 1.0], [-1.0, 2.5], [3.0, 4.0]]))
    assert data.train.tensors["label"].tolist() == [0, 1, 0]
    assert data.info["classes"] == ["cat", "dog"] and data.info["dim"] == 2


def test_csv_errors_name_file_and_line(tmp_path, toy):
    f = tmp_path / "bad.csv"
    f.write_text("x,y\n1,2\n3,oops\n")
    with pytest.raises(ValueError, match=r"bad\.csv:3: not a number: 'oops'"):
        toy.dataset("csv", path=str(f))
    f.write_text("1,2\n3,4,5\n")
    with pytest.raises(ValueError, match=r"bad\.csv:2: expected 2 fields, got 3"):
        toy.dataset("csv", path=str(f))
    with pytest.raises(FileNotFoundError, match="no such CSV file"):
        toy.dataset("csv", path=str(tmp_path / "missing.csv"))


def test_csv_errors_through_a_recipe_name_the_recipe(tmp_path, toy):
    cfg = from_dict({"modality": "toy", "data": {"name": "csv", "path": str(tmp_path / "none.csv")}}, source="r.yaml")
    with pytest.raises(ConfigError, match=r"r\.yaml: data: .*none\.csv: no such CSV file"):
        build_data(cfg, toy)
    cfg = from_dict({"modality": "toy", "data": {"name": "gmm", "kk": 3}}, source="r.yaml")
    with pytest.raises(ConfigError, match=r"r\.yaml: unknown key 'data\.kk' for dataset 'gmm' \(did you mean 'k'\?\); "
                                          r"allowed: k, dim.*"
                                          r"--set '~data\.kk'"):
        build_data(cfg, toy)


def test_write_read_roundtrip_leaves_no_temp_files(tmp_path, toy):
    x = np.random.default_rng(0).normal(size=(50, 3))
    (path,) = toy.write(x, tmp_path)
    assert path.name == "samples.csv"
    assert [p.name for p in tmp_path.iterdir()] == ["samples.csv"]
    np.testing.assert_array_equal(toy.read(tmp_path), x)  # repr() of floats round-trips exactly
    np.testing.assert_array_equal(read_points(write_points(x[:, :1], tmp_path / "one.csv")), x[:, :1])


def test_sliced_wasserstein_of_a_shift():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4000, 1))
    assert sliced_wasserstein(a, a + 0.5) == pytest.approx(0.5, abs=1e-9)
    assert sliced_wasserstein(a, a) == 0.0
    b = rng.normal(size=(3000, 2))
    assert sliced_wasserstein(b, rng.normal(size=(1000, 2))) < 0.1


def test_sliced_wasserstein_is_exact_for_sets_of_different_sizes():
    """Each 1-D distance is the exact W_p between the two empirical distributions: a set and the
    same set repeated are at distance 0 (interpolated quantiles gave 0.15-0.2), and in 1-D the
    W_1 equals scipy's for any pair of sizes."""
    from scipy.stats import wasserstein_distance

    from polydiff.metrics import wasserstein_1d

    rng = np.random.default_rng(1)
    x = rng.normal(size=(10, 3))
    assert sliced_wasserstein(x, np.repeat(x, 100, 0)) == pytest.approx(0, abs=1e-12)
    assert sliced_wasserstein([[0.0], [1.0]], [[0.0]] * 500 + [[1.0]] * 500) == pytest.approx(0, abs=1e-12)
    for n, m in ((3, 7), (2, 1000), (6, 4), (50, 50)):
        a, b = rng.normal(size=n), rng.normal(size=m) + 0.3
        sa, sb = torch.sort(torch.tensor(a)[:, None], 0)[0], torch.sort(torch.tensor(b)[:, None], 0)[0]
        assert float(wasserstein_1d(sa, sb, p=1)) == pytest.approx(wasserstein_distance(a, b), rel=1e-12)
    # W_2 of two point masses of unequal sizes: {0} vs {1, 1, 1}: 1; {0, 2} vs {1}: 1
    assert sliced_wasserstein([[0.0], [2.0]], [[1.0]]) == pytest.approx(1.0, rel=1e-12)
    assert sliced_wasserstein(x[::-1], x) == pytest.approx(0, abs=1e-12)  # a reversed view (negative strides)
    with pytest.raises(ValueError, match="empty sample set"):
        sliced_wasserstein(np.zeros((0, 3)), x)


def test_metrics_tell_good_from_bad_samples(toy):
    data = toy.dataset("gmm", n=2000)
    gmm = GaussianMixture(*(torch.tensor(data.info["gmm"][k]) for k in ("weights", "means", "stds")))
    ref = toy.reference(data)
    good = gmm.sample(3000, torch.Generator().manual_seed(5)).numpy()
    bad = good * 1.5 + 0.3
    mg, mb = toy.evaluate(good, ref, data.info), toy.evaluate(bad, ref, data.info)
    assert mg["sw2"] < 0.1 < mb["sw2"]
    assert mg["mean_error"] < 0.1 < mb["mean_error"]
    assert mg["cov_error"] < 0.1 < mb["cov_error"]
    assert mg["loglik"] == pytest.approx(mg["loglik_ref"], abs=0.1) and mb["loglik"] < mg["loglik"] - 1
    with pytest.raises(ValueError, match="same D"):
        point_metrics(good[:, :1], ref)


def test_exact_denoiser_samples_evaluate_well(toy):
    """Sampling the toy's own fields with the exact denoiser: no training error, good metrics."""
    data = toy.dataset("gmm", n=10000)  # a reference of 2000 points: SW2 noise floor ~0.05
    gmm = GaussianMixture(*(torch.tensor(data.info["gmm"][k]) for k in ("weights", "means", "stds")))
    fields = toy.fields(data.info, schedule="vp_cosine", prediction="eps")
    model = ExactDenoiser(gmm, fields["x"].process, "eps")
    x = polydiff.sample(model, fields["x"].process, (2000, 2), sampler="dpm++2m", steps=40, seed=0)
    ref = toy.reference(data)
    m = toy.evaluate(toy.to_native({"x": x}, data.info), ref, data.info)
    floor = toy.evaluate(gmm.sample(2000, torch.Generator().manual_seed(5)).numpy(), ref, data.info)["sw2"]
    assert m["sw2"] < 1.6 * floor and m["loglik"] > m["loglik_ref"] - 0.2  # exact draws: sw2 ~0.08


def test_preconditioning_bounds_x0_near_pure_noise(toy):
    """Near t_max (alpha ~ 0.008 for vp_cosine) a raw eps-network's error is amplified by
    sigma / alpha in x0; the preconditioned network's x0 stays bounded even far from the data."""
    data = toy.dataset("gmm", n=500)
    fields = toy.fields(data.info, schedule="vp_cosine", prediction="eps")
    p = fields["x"].process
    x = 4 * torch.randn(256, 2, generator=torch.Generator().manual_seed(0))
    t = torch.full((256,), p.t_max)
    c = p.coefs(t.double()[:, None])
    x0 = {}
    for pre in (True, False):
        torch.manual_seed(0)
        net = toy.network("mlp", data.info, fields, hidden=32, depth=2, precondition=pre)
        with torch.no_grad():
            eps = net({"x": x}, t)["x"].double()
        x0[pre] = (x.double() - c.sigma * eps) / c.alpha
    assert float(x0[True].abs().max()) < 10 < 100 < float(x0[False].abs().max())


@pytest.mark.parametrize(("schedule", "prediction"), [("linear", "velocity"), ("edm", "x0"), ("ve", "v")])
def test_network_is_finite_at_both_ends(toy, schedule, prediction):
    data = toy.dataset("gmm", n=500)
    fields = toy.fields(data.info, schedule=schedule, prediction=prediction)
    net = toy.network("mlp", data.info, fields, hidden=16, depth=1)
    p = fields["x"].process
    x = torch.randn(8, 2) * p.schedule.prior_std()
    for t in (p.t_max, p.t_min, 0.0 if schedule != "edm" else p.t_min):
        with torch.no_grad():
            assert torch.isfinite(net({"x": x}, torch.full((8,), float(t)))["x"]).all(), t


def test_shared_time_reads_strides_not_values():
    b = 5
    one = torch.full((1,), 0.3).expand(b)  # how samplers pass a grid time
    assert shared_time(one, b).shape == (1,) and float(shared_time(one, b)) == pytest.approx(0.3)
    assert shared_time(torch.tensor(0.3), b).shape == (1,) and shared_time(0.3, b).shape == (1,)
    same_values = one.contiguous()  # equal values in separate memory: not provably shared, kept per sample
    assert shared_time(same_values, b).shape == (b,)
    per_sample = torch.rand(b)
    assert shared_time(per_sample, b) is per_sample or torch.equal(shared_time(per_sample, b), per_sample)
    with pytest.raises(ValueError, match="batch of 5"):
        shared_time(torch.rand(3), b)


@pytest.mark.parametrize("conditional", [False, True])
def test_network_with_a_shared_time_equals_per_sample_times(toy, conditional):
    """A batch sharing one time embeds it once and broadcasts: the same outputs as per-sample times."""
    data = toy.dataset("gmm", n=200)
    fields = toy.fields(data.info)
    torch.manual_seed(0)
    net = toy.network("mlp", data.info, fields, hidden=16, depth=2, conditional=conditional)
    for p in net.parameters():  # the last layers start at zero: make every path count
        p.data.normal_(0, 0.3)
    x = torch.randn(6, 2)
    state = {"x": x, "label": torch.tensor([0, 1, 2, 0, -1, 1])} if conditional else {"x": x}
    shared = torch.full((1,), 0.4).expand(6)
    with torch.no_grad():
        a, b = net(state, shared)["x"], net(state, shared.contiguous())["x"]
    assert a.shape == b.shape == (6, 2)
    torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    assert not torch.allclose(a[0], a[1])


def test_precondition_is_exact_for_the_ideal_output():
    """If F is the ideal output, (x0, eps) are recovered exactly, for any alpha, sigma."""
    x0, eps = torch.randn(16, 3, dtype=torch.float64), torch.randn(16, 3, dtype=torch.float64)
    for a, s in ((1.0, 1e-4), (0.6, 0.8), (1e-4, 1.0), (1.0, 50.0)):
        alpha, sigma, sd = torch.tensor(a, dtype=torch.float64), torch.tensor(s, dtype=torch.float64), 0.7
        x = alpha * x0 + sigma * eps
        v = alpha**2 * sd**2 + sigma**2
        f = (x0 - alpha * sd**2 / v * x) / (sigma * sd / v.sqrt())  # the output that gives x0 exactly
        d, e = precondition(f, x, alpha, sigma, sd)
        torch.testing.assert_close(d, x0)
        torch.testing.assert_close(e, eps, atol=1e-10, rtol=1e-10)


def test_condition_embedding_null_and_dropout():
    specs = {"label": {"kind": "class", "num_classes": 4}, "temp": {"kind": "scalar", "low": 0, "high": 2},
             "vec": {"kind": "vector", "dim": 3}}
    torch.manual_seed(0)
    emb = ConditionEmbedding(specs, 8)
    with torch.no_grad():
        for p in emb.null.values():
            p.normal_()
    state = {"label": torch.tensor([0, 3, 1]), "temp": torch.tensor([0.5, 1.0, 1.5]), "vec": torch.randn(3, 3)}
    full = emb(state, 3)
    dropped = null_state(state, list(specs), torch.tensor([False, True, False]))  # the guidance sentinels
    assert dropped["label"].tolist() == [0, -1, 1] and torch.isnan(dropped["temp"][1])
    out = emb(dropped, 3)
    torch.testing.assert_close(out[[0, 2]], full[[0, 2]])
    null = emb({}, 3)  # absent keys: the null embedding for everyone
    torch.testing.assert_close(out[1], null[1])
    assert not torch.allclose(full[1], null[1])
    assert state["label"].tolist() == [0, 3, 1]  # the input state is not modified


def test_prior_state_with_condition(toy):
    info = toy.dataset("gmm", k=3, n=100).info
    spec = toy.prior_state(4, info, condition={"label": 2})
    assert spec["x"] == (4, 2) and spec["label"].tolist() == [2, 2, 2, 2]
    assert toy.prior_state(2, info, condition={"label": [0, 1]})["label"].tolist() == [0, 1]
    with pytest.raises(ValueError, match=r"whole number in -1\.\.2"):
        toy.prior_state(2, info, condition={"label": 5})
    with pytest.raises(ValueError, match="unknown condition 'colour'"):
        toy.prior_state(2, info, condition={"colour": 1})


def test_plot(tmp_path, toy):
    x = np.random.default_rng(0).normal(size=(100, 2))
    out = toy.plot(x, tmp_path / "p.png", reference=x + 1)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert out is None
    else:
        assert out is not None and out.stat().st_size > 1000
