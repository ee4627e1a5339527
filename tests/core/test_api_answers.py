"""How the Python API answers misuse: one line naming the argument, key or value at fault,
before any work is done, never a deep traceback or a silently different result."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import polydiff
from polydiff.data import condition_values, object_sizes
from polydiff.grids import make_grid
from polydiff.modality import check_objects
from polydiff.processes import VPCosine
from polydiff.toy.data import point_metrics

pytestmark = pytest.mark.usefixtures("one_thread")

RECIPE = {"modality": "toy", "data": {"name": "gmm", "k": 4, "dim": 2},
          "model": {"name": "mlp", "hidden": 16, "depth": 1, "conditional": True},
          "loss": {"cond_drop": 0.2},
          "train": {"max_steps": 4, "batch_size": 32, "accelerator": "cpu", "devices": 1, "threads": 1,
                    "checkpoint_every": 4, "progress": False, "logger": "none"},
          "sample": {"steps": 3, "num": 4, "sampler": "dpm++2m"}}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return polydiff.train(RECIPE, tmp_path_factory.mktemp("answers") / "run", verbose=False)


@pytest.fixture(scope="module")
def gen(run):
    return polydiff.load(run)  # a Run loads its last checkpoint


def one(gen, **kw):
    return gen.generate(2, seed=0, steps=2, progress=False, **kw)


def test_misspelled_keywords_get_did_you_mean_not_a_sampler_error(gen):
    with pytest.raises(TypeError, match=r"unknown keyword 'stpes' .did you mean 'steps'"):
        one(gen, stpes=3)
    with pytest.raises(TypeError, match="did you mean 'batch_size'"):
        one(gen, batchsize=3)
    # the nearest name is another sampler's option: the sampler's own error, which lists its options
    with pytest.raises(KeyError, match="has no option etaa"):
        one(gen, etaa=1)
    assert one(gen, sampler="ddim", eta=0.5).shape == (2, 2)


@pytest.mark.parametrize("seed", ["a", 1.5, True])
def test_seed_must_be_an_integer(gen, seed):
    with pytest.raises(ValueError, match="seed must be an integer"):
        gen.generate(2, seed=seed, progress=False)


def test_numpy_seed_and_labels_are_numbers(gen):
    a = gen.generate(2, seed=np.int64(3), steps=2, condition={"label": np.int64(1)}, progress=False)
    b = gen.generate(2, seed=3, steps=2, condition={"label": 1}, progress=False)
    np.testing.assert_array_equal(a, b)
    per_sample = gen.generate(2, seed=3, steps=2, condition={"label": [1, 1]}, progress=False)
    np.testing.assert_array_equal(a, per_sample)


@pytest.mark.parametrize("label", [2.9, True, "a", None, [0, 1, 2], 99])
def test_labels_are_whole_numbers_in_range_never_truncated(gen, label):
    with pytest.raises(ValueError, match=r"condition 'label': expected a whole number in -1\.\.3"):
        one(gen, condition={"label": label})


def test_condition_must_be_a_dict(gen):
    with pytest.raises(ValueError, match="condition must be a dict"):
        one(gen, condition="label")


def test_guidance_needs_a_condition_value_and_a_number(gen):
    with pytest.raises(ValueError, match="no sample is given a value, so guidance would change nothing"):
        one(gen, guidance_scale=2.0)
    guided = one(gen, guidance_scale=2.0, condition={"label": 1})
    assert np.isfinite(guided).all() and not np.array_equal(guided, one(gen, condition={"label": 1}))
    for bad in ("2", float("nan"), True):
        with pytest.raises(ValueError, match="guidance_scale must be a number"):
            one(gen, guidance_scale=bad, condition={"label": 1})
    plain = polydiff.load(gen.checkpoint)
    plain.info.pop("conditions")
    with pytest.raises(ValueError, match="this toy model takes none"):
        one(plain, guidance_scale=2.0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the answer of a machine without CUDA")
def test_missing_devices_are_named(gen):
    with pytest.raises(ValueError, match="device 'cuda': torch sees no CUDA GPU"):
        one(gen, device="cuda")
    with pytest.raises(ValueError, match="device 'cuda'"):
        polydiff.load(gen.checkpoint, device="cuda")
    with pytest.raises(ValueError, match="'gpu' is not a torch device"):
        gen.to("gpu")


def test_times_outside_the_schedule_are_refused(gen):
    for kw in ({"t_min": -1.0}, {"t_max": 5.0}, {"t_min": float("nan")}):
        with pytest.raises(ValueError, match="must lie in the schedule's time range"):
            one(gen, **kw)
    assert len(make_grid(VPCosine(), 4, "uniform_t", t_min=0.0)) == 5


def test_load_takes_a_path_or_a_run_only(run):
    assert polydiff.load(run.checkpoint).step == polydiff.load(run).step
    with pytest.raises(TypeError, match="checkpoint must be a path or the Run"):
        polydiff.load(5)


def test_train_refuses_a_non_bool_fresh_and_a_file_as_run_folder(run, tmp_path):
    before = sorted(p.name for p in (run.out_dir / "checkpoints").iterdir())
    with pytest.raises(TypeError, match="fresh must be True or False"):
        polydiff.train(RECIPE, run.out_dir, fresh="no", verbose=False)
    assert sorted(p.name for p in (run.out_dir / "checkpoints").iterdir()) == before  # nothing deleted
    (tmp_path / "afile").write_text("mine")
    with pytest.raises(NotADirectoryError, match="the run folder is a file"):
        polydiff.train(RECIPE, tmp_path / "afile", verbose=False)
    assert (tmp_path / "afile").read_text() == "mine"


def test_plots_are_written_in_the_format_their_suffix_names(gen, tmp_path):
    x = one(gen)
    heads = {".pdf": b"%PDF", ".svg": b"<?xml", ".png": b"\x89PNG", "": b"\x89PNG"}
    for suffix, head in heads.items():
        path = gen.plot(x, tmp_path / f"fig{suffix}")
        assert path.read_bytes().startswith(head), suffix
    with pytest.raises(ValueError, match=r"matplotlib writes no \.xyz figures"):
        gen.plot(x, tmp_path / "fig.xyz")
    with pytest.raises(IsADirectoryError, match="a folder; give the figure a file name"):
        gen.plot(x, tmp_path)


def test_a_streamed_run_records_the_seed_it_drew(gen, tmp_path):
    gen.generate_to(tmp_path / "s", 3, steps=2, progress=False)
    meta = json.loads((tmp_path / "s" / "polydiff.json").read_text())
    again = gen.generate(3, seed=meta["seed"], steps=2, progress=False)
    got = np.loadtxt(tmp_path / "s" / "samples.csv", delimiter=",", skiprows=1, ndmin=2)
    np.testing.assert_allclose(got[:, :2], again, rtol=1e-5, atol=1e-6)


def test_condition_values_checks_and_warns():
    assert condition_values(3, np.float32(0.5), name="gap").tolist() == [0.5] * 3
    assert condition_values(2, torch.tensor([1, 2]), name="c", kind="class", low=0, high=2).dtype == torch.long
    for bad in ("a", None, True, float("inf"), [1.0, 2.0, 3.0], [[1.0], [2.0]]):
        with pytest.raises(ValueError, match="condition 'gap': expected a finite number"):
            condition_values(2, bad, name="gap")
    with pytest.warns(UserWarning, match="25 lies outside the training data's range 0.1 to 0.4"):
        condition_values(2, 25.0, name="gap", trained=(0.1, 0.4))
    with pytest.warns(UserWarning, match="beyond the largest size in the training data .2."):
        assert object_sizes(2, {"size_hist": [0, 1, 1]}, None, np.int64(5), name="atoms").tolist() == [5, 5]


def test_foreign_objects_are_refused_by_the_declared_types():
    mod = SimpleNamespace(name="words", native_types=lambda info: (str,))
    check_objects(mod, ["a", "b"], {})
    with pytest.raises(TypeError, match=r"objects: expected a list of str .* got str"):
        check_objects(mod, "ab", {})
    with pytest.raises(TypeError, match=r"reference\[1\]: expected a str .* got int"):
        check_objects(mod, ["a", 2], {}, "reference")
    with pytest.raises(ValueError, match="an empty list"):
        check_objects(mod, [], {})
    check_objects(SimpleNamespace(name="points", native_types=lambda info: None), np.zeros((2, 2)), {})


def test_non_finite_points_are_named_when_evaluated():
    x = np.random.default_rng(0).normal(size=(5, 2))
    x[1, 0] = np.nan
    with pytest.warns(UserWarning, match="1 of 5 samples have non-finite coordinates"):
        assert np.isnan(point_metrics(x, np.zeros((4, 2)) + np.arange(4)[:, None])["sw2"])


def test_an_observation_file_is_read_as_the_cli_reads_it(gen, tmp_path):
    torch.save({"x": torch.tensor([[0.5, float("nan")]])}, tmp_path / "obs.pt")
    x = gen.generate(3, seed=1, steps=2, observed=tmp_path / "obs.pt", progress=False)
    np.testing.assert_allclose(x[:, 0], 0.5, atol=1e-5)  # the observed coordinate is kept
    assert np.isfinite(x).all() and np.ptp(x[:, 1]) > 0  # NaN without a mask: generated (it came out NaN)
    with pytest.raises(FileNotFoundError, match=r"obs\.csv: no such observation file"):
        gen.generate(3, seed=1, steps=2, observed=str(tmp_path / "obs.csv"), progress=False)


def test_calibrate_grid_checks_its_pilot_and_seed(gen):
    """pilot=0 fitted a grid to an empty batch; seed=None reached torch.manual_seed."""
    for kw, msg in [({"pilot": 0}, "pilot must be a positive integer, got 0"),
                    ({"pilot": 2.5}, "pilot must be a positive integer"),
                    ({"seed": 1.5}, "seed must be an integer")]:
        with pytest.raises(ValueError, match=msg):
            gen.calibrate_grid(4, "unipc", max_trials=1, reference_steps=8, progress=False, **kw)
    grid = gen.calibrate_grid(4, "unipc", pilot=8, seed=None, max_trials=1, reference_steps=8, progress=False)
    assert grid.shape == (5,)
