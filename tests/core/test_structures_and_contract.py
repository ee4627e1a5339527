"""Field structures hold during sampling whatever the network does, the contract kit accepts
variable-size plugins and names what a broken one gets wrong, and plugin loading, metric
output, collation, augmentation and recipe overrides fail with errors that say what to fix."""

from __future__ import annotations

import dataclasses
import os
import re
import warnings
from importlib.metadata import EntryPoint
from pathlib import Path

import numpy as np
import pytest
import torch
from clouds_plugin import CloudsModality, OffsetNet

import polydiff
from polydiff import registry
from polydiff.cli import main as cli
from polydiff.config import LossConfig, SampleConfig, TrainConfig, apply_overrides
from polydiff.data import default_collate, rotate
from polydiff.modality import check_metrics
from polydiff.plugin import FieldSpec, GaussianProcess, Masked, Symmetric, ZeroCoM, sample
from polydiff.techniques import Techniques
from polydiff.testing import NO_FROM_NATIVE, NOT_ENCODABLE, ROUND_TRIP, check_modality

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.usefixtures("one_thread")


def _ones(state, t):  # a network that ignores every structure: 1 everywhere, padding included
    return {k: torch.ones_like(v) for k, v in state.items() if k != "mask"}


@pytest.mark.parametrize("sampler", ["euler", "ddim", "dpm++2m", "heun", "unipc", "euler_maruyama"])
@pytest.mark.parametrize("prediction", ["velocity", "x0", "eps"])
def test_samplers_project_predictions_onto_the_field_structure(sampler, prediction):
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 0]], dtype=torch.bool)
    m = mask[..., None].double()
    for structure, shape in [(ZeroCoM("mask"), (2, 5, 3)), (Masked("mask"), (2, 5, 3)), (Symmetric("mask"), (2, 5, 5))]:
        field = FieldSpec(GaussianProcess("vp_linear"), structure, prediction)
        x = sample(_ones, {"x": field}, {"x": shape, "mask": mask}, sampler=sampler, steps=4, seed=0)["x"].double()
        name = type(structure).__name__
        assert torch.isfinite(x).all()
        if name == "Symmetric":
            pair = m * m.transpose(1, 2)
            assert float((x * (1 - pair)).abs().max()) == 0.0, name
            assert torch.allclose(x, x.transpose(1, 2)) and float(torch.diagonal(x, 0, 1, 2).abs().max()) == 0.0
        else:
            assert float((x * (1 - m)).abs().max()) == 0.0, name  # padding held at zero
        if name == "ZeroCoM":
            # float32 rounding of a centred sum of a few atoms: a few 1e-7 relative (measured up to 1.0e-6)
            assert float(((x * m).sum(1) / m.sum(1)).abs().max()) < 1e-5 * max(1.0, float(x.abs().max()))
        assert float(x.abs().max()) > 1e-3  # the present entries are not all zero


def test_contract_kit_accepts_samples_padded_to_the_largest_size_drawn(tmp_path):
    for n, seed in [(1, 0), (4, 5), (3, 2)]:
        rep = check_modality(CloudsModality(), tmp_path / f"{n}-{seed}", data={"n": 48}, model={"hidden": 8}, n=n,
                             seed=seed, low_precision=False, bad_files=False)
        assert rep.state["mask"].shape[1] == int(rep.state["mask"].sum(1).max())  # not the data's width, in general
        # the network adds an offset everywhere, yet the samples keep a zero centre of mass and zero padding
        assert rep.metrics["centre_offset"] < 1e-5
    assert "state=" not in repr(rep) and "paths=" in repr(rep)  # the report's repr leaves out tensors and objects


class _WrongShape(CloudsModality):
    def networks(self):
        return {"offset": lambda info, fields, **options: OffsetNet(out=3)}


class _NoMask(CloudsModality):
    def prior_state(self, n, info, generator=None, condition=None):
        out = super().prior_state(n, info, generator, condition)
        return {"pos": out["pos"]}


class _ListMetrics(CloudsModality):
    def evaluate(self, objects, reference, info):
        return [1.0]


class _ArrayMetric(CloudsModality):
    def evaluate(self, objects, reference, info):
        return {"points": np.array([1.0, 2.0])}


class _Drifts(CloudsModality):
    def sample(self, net, fields, spec, settings, control, *, seed, device):
        out = super().sample(net, fields, spec, settings, control, seed=seed, device=device)
        return {**out, "pos": out["pos"] + 1.0}


class _Converts(CloudsModality):
    """Clouds that convert objects back to states: positions padded to the largest cloud, a mask."""

    def from_native(self, objects, info):
        width = max(len(c) for c in objects)
        pos = torch.zeros(len(objects), width, 2, dtype=torch.float64)
        mask = torch.zeros(len(objects), width, dtype=torch.bool)
        for i, cloud in enumerate(objects):
            pos[i, : len(cloud)] = torch.tensor(cloud, dtype=torch.float64).reshape(-1, 2)
            mask[i, : len(cloud)] = True
        return {"pos": pos, "mask": mask}


class _RoundsOnWrite(_Converts):
    def write(self, objects, out_dir):  # lossy but idempotent: the files written again agree, the states do not
        return super().write([[[round(x, 1), round(y, 1)] for x, y in c] for c in objects], out_dir)


class _FromNativeFails(_Converts):
    def from_native(self, objects, info):
        raise ValueError("clouds need at least 7 points")


class _RejectsOnlySamples(_Converts):  # objects read back are tuples, the sampled ones lists
    def read(self, path):
        return [tuple(c) for c in super().read(path)]

    def from_native(self, objects, info):
        if not any(isinstance(c, tuple) for c in objects):
            raise ValueError("clouds need at least 7 points")
        return super().from_native([list(c) for c in objects], info)


class _ReadsBackTuples(_Converts):
    def read(self, path):
        return [tuple(c) for c in super().read(path)]

    def from_native(self, objects, info):
        if any(isinstance(c, tuple) for c in objects):
            raise ValueError("a cloud is a tuple")
        return super().from_native(objects, info)


@pytest.mark.parametrize("broken, part, words", [
    (_WrongShape, "network", "field 'pos' has shape"),
    (_NoMask, "prior_state", "no tensor 'mask'"),
    (_ListMetrics, "evaluate", "returned a list"),
    (_ArrayMetric, "evaluate", "metric 'points'"),
    (_Drifts, "sampling", "leaves its structure ZeroCoM"),
    (_RoundsOnWrite, "write then read", "the objects read back differ from those written: entry 'pos'"),
    (_RejectsOnlySamples, "write then read", "rejects the sampled objects (clouds need at least 7 points) but "
                                             "accepts the objects read back"),
    (_ReadsBackTuples, "write then read", "from_native rejects the objects read back: a cloud is a tuple"),
])
def test_contract_kit_names_the_broken_part(tmp_path, broken, part, words):
    with pytest.raises(AssertionError, match=rf"modality contract: {part}: .*{re.escape(words)}"):
        check_modality(broken(), tmp_path, data={"n": 48}, model={"hidden": 8}, low_precision=False,
                       bad_files=False)


def test_contract_kit_compares_states_read_back_only_where_from_native_exists(tmp_path):
    """A modality without from_native has its files compared, and the report says that the
    states were not: it does not claim the full round trip."""
    options = {"data": {"n": 48}, "model": {"hidden": 8}, "low_precision": False, "bad_files": False}
    states = check_modality(_Converts(), tmp_path / "converts", **options).checked
    files = check_modality(CloudsModality(), tmp_path / "files", **options).checked
    assert ROUND_TRIP == "write then read round-trips"  # the label the plugins' tests look for
    assert ROUND_TRIP in states and NO_FROM_NATIVE not in states
    assert NO_FROM_NATIVE in files and ROUND_TRIP not in files
    assert len(states) == len(files)
    rejected = check_modality(_FromNativeFails(), tmp_path / "rejected", **options).checked
    assert NOT_ENCODABLE in rejected and ROUND_TRIP not in rejected and len(rejected) == len(files)


def test_a_prediction_of_the_wrong_shape_is_named_in_training():
    mod = CloudsModality()
    data = mod.dataset()
    fields = mod.fields(data.info)
    batch = default_collate([data.train[i] for i in range(4)])
    with pytest.raises(ValueError, match=r"prediction for field 'pos' has shape \(4, 6, 1\); the field needs "
                                         r"\(4, 6, 2\)"):
        polydiff.plugin.diffusion_loss(OffsetNet(out=1), fields, batch, polydiff.Noise(4, seed=0))


def test_collate_and_augmentation_errors_name_the_entry():
    a = {"pos": torch.zeros(5, 3), "mask": torch.ones(5)}
    b = {"pos": torch.zeros(4, 3), "mask": torch.ones(4)}
    with pytest.raises(ValueError, match=r"entry 'pos': item 1 has shape \(4, 3\), item 0 \(5, 3\); pad"):
        default_collate([a, b])
    with pytest.raises(ValueError, match=r"item 1 has the entries \['pos'\], item 0 \['mask', 'pos'\]"):
        default_collate([a, {"pos": torch.zeros(5, 3)}])
    with pytest.raises(KeyError, match=r"rotate\('pos', mask='mask'\) needs the entries \['mask'\]"):
        rotate("pos", mask="mask")({"pos": torch.zeros(2, 5, 3)}, torch.Generator())


def test_metrics_must_be_numbers_on_the_command_line(tmp_path, monkeypatch, capsys):
    real = registry._entry_points

    def eps():
        return {**real(), "clouds": EntryPoint("clouds", "test_structures_and_contract:_ArrayMetricClouds",
                                               registry.ENTRY_POINT_GROUP)}

    monkeypatch.setattr(registry, "_entry_points", eps)
    (tmp_path / "c.txt").write_text("0,0 1,0 0,1\n")
    assert cli(["evaluate", str(tmp_path / "c.txt"), "--modality", "clouds"]) == 2
    err = capsys.readouterr().err
    assert "modality 'clouds': evaluate gave the metric 'points' the value array([1., 2.])" in err
    assert check_metrics({"a": 1, "b": float("nan"), "c": np.float64(2.0), "d": float("inf")}, "x")["a"] == 1
    with pytest.raises(ValueError, match="metric 'ok'"):
        check_metrics({"ok": True}, "x")


class _ArrayMetricClouds(_ArrayMetric):
    pass


class _Misnamed(CloudsModality):
    name = "points"


def _not_a_modality():
    return 42


@pytest.mark.parametrize("target, words", [
    ("clouds_plugin:CloudModality", "names 'CloudModality', which the module 'clouds_plugin' does not define"),
    ("clouds_plugn:CloudsModality", "names the module 'clouds_plugn', which does not exist"),
    ("test_structures_and_contract:_not_a_modality", "gives a int, not a modality"),
    ("test_structures_and_contract:_Misnamed", "gives a modality named 'points'; its name must be the entry point's"),
])
def test_broken_entry_points_say_what_to_fix(monkeypatch, capsys, target, words):
    real = registry._entry_points
    monkeypatch.setattr(registry, "_entry_points",
                        lambda: {**real(), "clouds": EntryPoint("clouds", target, registry.ENTRY_POINT_GROUP)})
    with pytest.raises(registry.ModalityNotFound, match=re.escape(words)):
        registry.load_modality("clouds")
    assert cli(["clouds", "--help"]) == 2  # the plugin's commands: one line, no traceback
    assert words in capsys.readouterr().err


def test_a_dependency_missing_from_a_plugin_is_named_once(monkeypatch, tmp_path):
    (tmp_path / "needs_dep.py").write_text("import not_installed_dep_xyz\nclass M: ...\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    real = registry._entry_points
    monkeypatch.setattr(registry, "_entry_points",
                        lambda: {**real(), "clouds": EntryPoint("clouds", "needs_dep:M", registry.ENTRY_POINT_GROUP)})
    with pytest.raises(registry.ModalityNotFound, match="needs the module 'not_installed_dep_xyz', which is not "
                                                        "installed; installing the plugin pulls in") as err:
        registry.load_modality("clouds")
    assert str(err.value).count("not installed") == 1 and "Reinstalling" not in str(err.value)


def test_overrides_from_python_and_option_typos():
    raw = {"train": {"max_steps": 10}}
    assert apply_overrides(raw, {"train.max_steps": 3, "sample.sampler": "heun"}) == \
        {"train": {"max_steps": 3}, "sample": {"sampler": "heun"}}
    assert apply_overrides(raw, "train.max_steps=4") == {"train": {"max_steps": 4}}
    from polydiff.config import load_config

    assert load_config("toy:gmm", {"train.max_steps": 3, "sample.steps": 7}).train.max_steps == 3  # a recipe path too
    reg = registry.Registry("thing")
    reg.register("x")(lambda schedule=1, steps=2: schedule)
    with pytest.raises(registry.RegistryError, match=r"thing 'x' has no option schedul \(did you mean schedule\?\); "
                                                     r"allowed: schedule, steps"):
        reg.build("x", schedul=2)
    with pytest.raises(registry.RegistryError, match=r"sampler 'ddim' has no option etta \(did you mean eta\?\)"):
        polydiff.SAMPLERS.get("ddim").options({"etta": 0.5})


def test_every_recipe_key_is_documented():
    text = (ROOT / "docs" / "recipes.md").read_text()
    for section, cls in [("train", TrainConfig), ("loss", LossConfig), ("sample", SampleConfig),
                         ("loss.techniques", Techniques)]:
        for f in dataclasses.fields(cls):
            if section in ("loss", "sample") and f.name == "options":
                continue  # the section's other keys: written as "any other key"
            assert f"`{f.name}`" in text, f"docs/recipes.md does not name {section}.{f.name}"


def test_csv_rows_take_line_breaks_in_quoted_fields_and_name_an_open_quote(tmp_path):
    from polydiff.files import csv_rows

    f = tmp_path / "c.csv"
    text = 'name,caption\r\n\r\na,"two\nlines"\nb,"say ""hi"""\n,\n'
    assert csv_rows(f, text) == [(1, ["name", "caption"]), (3, ["a", "two\nlines"]), (5, ["b", 'say "hi"']),
                                 (6, ["", ""])]
    with pytest.raises(ValueError, match=r"c\.csv:3: not a readable CSV record \(.*; a quote left open\?\)"):
        csv_rows(f, 'name,caption\nx,1\na,"never closed\nb,2\n')
    with pytest.raises(ValueError, match=r"c\.csv:2: not a readable CSV record"):
        csv_rows(f, 'name,caption\na,"closed" late,1\n')


def test_text_files_are_utf8_whatever_the_locale(tmp_path):
    """atomic_write's text and the recipes are UTF-8 (what read_text reads), also under an
    ASCII locale (C, no coercion), where the locale's encoding would fail on 'café'."""
    import subprocess
    import sys

    (tmp_path / "r.yaml").write_text("modality: toy\ndata: {name: gmm}\n# café\n", encoding="utf-8")
    code = ("import sys, pathlib; from polydiff.files import atomic_write; from polydiff.config import load_config; "
            "p = atomic_write(pathlib.Path(sys.argv[1]) / 'c.txt', 'caf\\u00e9'); "
            "print(p.read_bytes().hex(), load_config(sys.argv[1] + '/r.yaml').modality)")
    env = {**os.environ, "LC_ALL": "C", "PYTHONCOERCECLOCALE": "0", "PYTHONUTF8": "0"}
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["café".encode().hex(), "toy"]


def test_read_npz_names_every_kind_of_bad_file(tmp_path):
    from polydiff.guidance import load_observed
    from polydiff.plugin import read_npz

    good = tmp_path / "good.npz"
    np.savez(good, x=np.arange(6.0).reshape(2, 3), x_mask=np.ones((2, 3), bool))
    assert sorted(read_npz(good)) == ["x", "x_mask"]
    obs = load_observed(good)
    assert torch.equal(obs.values["x"], torch.arange(6.0, dtype=torch.float64).reshape(2, 3))
    cases = {"empty.npz": (b"", "the file is empty"),
             "cut.npz": (good.read_bytes()[:200], "a cut-off or damaged zip archive"),
             "garbage.npz": (b"PK\x03\x04garbage", "a cut-off or damaged zip archive"),
             "text.npz": (b"\xff\xfe\x00garbage", "not a zip archive")}
    for name, (data, words) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ValueError, match=re.escape(f"{tmp_path / name}: not a readable .npz file ({words}")):
            read_npz(tmp_path / name)
    central = good.read_bytes().index(b"PK\x01\x02")  # the first member's central directory entry
    for name, offset, value in (("encrypted.npz", 8, 1), ("method.npz", 10, 99)):  # zipfile: RuntimeError,
        data = bytearray(good.read_bytes())                                        # NotImplementedError
        data[central + offset] |= value
        (tmp_path / name).write_bytes(bytes(data))
        with pytest.raises(ValueError, match=re.escape(f"{tmp_path / name}: not a readable .npz file")):
            read_npz(tmp_path / name)
    np.save(tmp_path / "lone.npy", np.zeros(3))
    (tmp_path / "lone.npz").write_bytes((tmp_path / "lone.npy").read_bytes())
    with pytest.raises(ValueError, match=r"a single \.npy array"):
        read_npz(tmp_path / "lone.npz")
    np.savez(tmp_path / "objects.npz", x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="pickled Python objects, which are refused as unsafe"):
        read_npz(tmp_path / "objects.npz")
    (tmp_path / "bad.pt").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match=r"bad.pt: not a readable .pt file"):
        load_observed(tmp_path / "bad.pt")


def test_observations_refuse_non_finite_observed_values_and_odd_entries(tmp_path):
    """A NaN where the mask is True would make every sample NaN; where it is False it is a gap,
    read as 0 (reconstruction guidance multiplies the mask into values - x)."""
    from polydiff.guidance import as_observation, load_observed

    f = tmp_path / "obs.npz"
    np.savez(f, x=np.array([np.nan, 0.5], np.float32), x_mask=np.array([True, False]))
    with pytest.raises(ValueError, match=r"obs\.npz: observed values of 'x' are not finite at 1 observed entry "
                                         r"\(the first at index \(0,\)\); NaN may stand only where the mask is False"):
        load_observed(f)
    np.savez(f, x=np.array([[0.5, np.inf], [1.0, np.nan]]), x_mask=np.array([[True, False], [True, False]]))
    assert load_observed(f).values["x"].tolist() == [[0.5, 0.0], [1.0, 0.0]]
    with pytest.raises(ValueError, match=r"^observed values of 'x' are not finite at 2 observed entries"):
        as_observation({"x": torch.tensor([float("inf"), -float("inf"), 1.0])})  # no mask: an infinity is observed
    obs = as_observation({"x": torch.tensor([float("nan"), 2.0])})   # no mask: NaN is a gap
    assert obs.values["x"].tolist() == [0.0, 2.0] and obs.masks["x"].tolist() == [False, True]
    np.savez(f, x=np.arange(3.0).astype(">f8"), x_mask=np.array([True, True, False]))  # big-endian is legal
    assert load_observed(f).values["x"].tolist() == [0.0, 1.0, 2.0]
    for name, raw, words in [("str.pt", {"x": "abc"}, r"entry 'x' holds a str, not an array of numbers"),
                             ("key.pt", {0: torch.zeros(2)}, r"entry 0: keys name fields \(strings\)"),
                             ("ragged.pt", {"x": [[1.0, 2.0], [3.0]]}, r"entry 'x' holds a list, not an array")]:
        torch.save(raw, tmp_path / name)
        with pytest.raises(ValueError, match=rf"{name.replace('.', '[.]')}: {words}"):
            load_observed(tmp_path / name)


def test_evaluate_json_must_not_replace_its_inputs(tmp_path, capsys):
    target = tmp_path / "points.csv"
    target.write_text("x,y\n0.1,0.2\n0.3,0.4\n")
    before = target.read_bytes()
    assert cli(["evaluate", str(target), "--modality", "toy", "--json", str(target)]) == 2
    assert "--json" in capsys.readouterr().err and target.read_bytes() == before


def test_evaluating_files_without_a_reference_says_what_they_are_compared_with(tmp_path, capsys):
    points = tmp_path / "points.csv"
    points.write_text("x0,x1\n0.1,0.2\n0.3,0.4\n0.5,0.1\n")
    with pytest.warns(UserWarning, match=re.escape("compared with the embedded default dataset of modality 'toy' "
                                                   "('gmm'); give --reference PATH")):
        assert cli(["evaluate", str(points), "--modality", "toy"]) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cli(["evaluate", str(points), "--modality", "toy", "--reference", str(points)]) == 0


class _WithOption(CloudsModality):
    def evaluate(self, objects, reference, info, radius: float = 1.0, exact: bool = False):
        return {**super().evaluate(objects, reference, info), "radius": radius, "exact": float(exact)}


def test_evaluation_options_are_evaluates_own_keywords():
    """Keywords of a plugin's ``evaluate`` after ``info`` are its evaluation options: checked by name
    (a near miss suggested) and converted to their annotated types; the default ``evaluate_model``
    passes them through the generator."""
    from polydiff.modality import evaluation_options

    mod = _WithOption()
    assert evaluation_options(mod, {}) == {}
    assert evaluation_options(mod, {"radius": 2, "exact": True}) == {"radius": 2.0, "exact": True}
    assert isinstance(evaluation_options(mod, {"radius": 2})["radius"], float)
    with pytest.raises(ValueError, match=r"modality 'clouds' has no option radus \(did you mean radius\?\); "
                                         r"allowed: radius, exact"):
        evaluation_options(mod, {"radus": 2.0})
    with pytest.raises(ValueError, match="evaluation option radius"):
        evaluation_options(mod, {"radius": "wide"})
    with pytest.raises(ValueError, match="has no option radius; allowed: none"):
        evaluation_options(CloudsModality(), {"radius": 2.0})

    class Gen:  # the two calls the default evaluate_model makes
        def generate(self, num, seed):
            return [[[0.0, 1.0], [0.0, -1.0]]] * num

        def evaluate(self, objects, **options):
            return mod.evaluate(objects, objects, {}, **evaluation_options(mod, options))

    assert mod.evaluate_model(Gen(), num=3, seed=0, radius=4)["radius"] == 4.0


_PLOT_SCRIPT = r'''
import sys
from pathlib import Path

import matplotlib

from polydiff.plugin import new_figure, save_figure
from polydiff.testing import _plot_leaves_matplotlib_alone

matplotlib.use("svg")  # the user's choice (a notebook's would be inline)


class Good:
    def plot(self, objects, path, reference=None):
        fig = new_figure(figsize=(2, 2))
        fig.subplots().plot(objects)
        return save_figure(fig, path)


class SwitchesBackend:
    def plot(self, objects, path, reference=None):
        matplotlib.use("Agg")
        return Good().plot(objects, path)


class LeavesFigureOpen:
    def plot(self, objects, path, reference=None):
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots()
        ax.plot(objects)
        fig.savefig(path, format="png")
        return path


out = Path(sys.argv[1])
print("good", _plot_leaves_matplotlib_alone(Good(), [1, 2, 3], None, out / "good.png"))
print("backend still", matplotlib.get_backend())
for bad in (SwitchesBackend(), LeavesFigureOpen()):
    try:
        _plot_leaves_matplotlib_alone(bad, [1, 2, 3], None, out / "bad.png")
        print(type(bad).__name__, "passed")
    except AssertionError as err:
        print(type(bad).__name__, "failed:", err)
'''


def test_contract_plot_check_catches_a_backend_switch_and_open_figures(tmp_path):
    """A plot must not switch the user's matplotlib backend (it would stop a notebook's inline
    plots) nor leave pyplot figures open; ``new_figure`` + ``save_figure`` do neither. Run in a
    fresh interpreter: the check compares matplotlib's process-wide state."""
    import subprocess
    import sys

    pytest.importorskip("matplotlib")
    script = tmp_path / "plot_check.py"
    script.write_text(_PLOT_SCRIPT)
    res = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0] == "good True" and lines[1] == "backend still svg"
    assert lines[2].startswith("SwitchesBackend failed:") and "backend" in lines[2]
    assert lines[3].startswith("LeavesFigureOpen failed:") and "figures open" in lines[3]
