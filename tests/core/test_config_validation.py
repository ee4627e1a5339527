"""Every recipe value and every option is checked against the annotations of what receives it:
wrongly typed values are one-line errors naming the file, the key, the expected type (and the
allowed values), never a TypeError from deep inside a factory."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import polydiff
from polydiff import cli
from polydiff import registry as reg
from polydiff.config import ConfigError, build_data, build_fields, build_network, from_dict, load_config
from polydiff.processes.gaussian import SCHEDULES
from polydiff.samplers import SAMPLERS

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[2]
GMM = ROOT / "configs" / "toy" / "gmm.yaml"
SRC = "configs/x.yaml"
TOY = yaml.safe_load(GMM.read_text())
HAS_GRAPHS = "graphs" in polydiff.available_modalities()
needs_graphs = pytest.mark.skipif(not HAS_GRAPHS, reason="the graphs plugin is not installed")
# the GDSS community-small recipe on the embedded generator (no shared data folder needed)
GRAPHS = {"modality": "graphs",
          "data": {"name": "community_small", "max_nodes": 20, "max_feat_num": None, "drop_isolated": True},
          "model": {"name": "gdss", "x_net": "gcn", "depth": 2, "nhid": 8, "adim": 8, "num_layers": 2},
          "process": {"x": {"schedule": "vp_linear", "beta_min": 0.1, "beta_max": 1.0},
                      "adj": {"schedule": "vp_linear", "beta_min": 0.1, "beta_max": 1.0}, "unit_prior": True},
          "loss": {"weighting": "snr", "time_density": "uniform"},
          "train": {"max_steps": 10, "batch_size": 8, "lr": 0.01},
          "sample": {"num": 4, "sampler": "pc", "steps": 10, "grid": "uniform_t", "t_min": 1.0e-4,
                     "n_corrector": 1, "snr": 0.05, "scale_eps": 0.7}}


def with_value(recipe: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A deep copy of ``recipe`` with ``section.key`` set to ``value``."""
    out = copy.deepcopy(recipe)
    section, key = path.split(".")
    out.setdefault(section, {})[key] = value
    return out


def one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg and "Traceback" not in msg, msg
    return msg


def run(capsys, *argv: Any) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code: int, err: str) -> str:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("polydiff: error: ") and "Traceback" not in err, err
    return lines[0][len("polydiff: error: "):]


# ---------------------------------------------------------------------------------------------
# every section, from a dict
# ---------------------------------------------------------------------------------------------

TOY_CASES = [
    ("train.batch_size", "big", "expected an integer, got 'big'"),
    ("train.lr", [1e-3], "expected a number, got [0.001]"),
    ("train.progress", "yes", "expected true or false, got 'yes'"),
    ("train.precision", 8, "expected one of 32, 64, bf16-mixed, 16-mixed, bf16-true, 16-true, got 8"),
    ("train.logger", "wandb", "expected one of csv, tensorboard, none, got 'wandb'"),
    ("loss.cond_drop", "some", "expected a number, got 'some'"),
    ("loss.field_weights", {"x": "heavy"}, "expected a mapping of strings to numbers or null, got {'x': 'heavy'}"),
    ("loss.manifold_weighting", "x1", "expected one of x0, velocity, got 'x1'"),
    ("loss.weighting", 3, "expected a string, got 3"),
    ("sample.steps", "many", "expected an integer, got 'many'"),
    ("sample.batch_size", "all", "expected an integer or null, got 'all'"),
    ("sample.final_zero", 1, "expected true or false or null, got 1"),
    ("sample.t_min", "low", "expected a number or null, got 'low'"),
    ("sample.grid", 3, "expected a string or a Tensor or null, got 3"),
    ("sample.lower_order_final", "no", "expected true or false, got 'no'"),  # an option of dpm++2m
    ("data.k", "eight", "expected an integer, got 'eight'"),
    ("data.spread", [1, 2], "expected a number, got [1, 2]"),
    ("data.seed", True, "expected an integer, got True"),
    ("model.hidden", "wide", "expected an integer, got 'wide'"),
    ("model.conditional", "no", "expected true or false, got 'no'"),
    ("model.time_embedding", 4, "expected a string, got 4"),
    ("process.schedule", 5, "expected a string, got 5"),
    ("process.prediction", None, "expected a string, got None"),
]


@pytest.mark.parametrize(("key", "value", "expected"), TOY_CASES, ids=[c[0] for c in TOY_CASES])
def test_wrong_types_in_the_toy_recipe_are_one_line_errors(key, value, expected):
    with pytest.raises(ConfigError) as err:
        from_dict(with_value(TOY, key, value), SRC)
    assert one_line(err) == f"{SRC}: {key}: {expected}"


@pytest.mark.parametrize(("key", "value", "expected"), [
    ("train.lr", float("nan"), "expected a number (not NaN), got nan"),
    ("train.weight_decay", -1e-4, "expected a non-negative number, got -0.0001"),
    ("train.grad_clip", float("inf"), "expected a non-negative number, got inf"),
    ("sample.batch_size", 0, "expected a positive integer or null, got 0"),
])
def test_numbers_out_of_range_are_named(key, value, expected):
    with pytest.raises(ConfigError) as err:
        from_dict(with_value(TOY, key, value), SRC)
    assert one_line(err) == f"{SRC}: {key}: {expected}"


def test_options_of_weightings_samplers_and_objectives_are_typed():
    loss = {"weighting": "min_snr", "gamma": "big"}
    with pytest.raises(ConfigError, match=r"^configs/x\.yaml: loss\.gamma: expected a number, got 'big'$"):
        from_dict({**TOY, "loss": loss}, SRC)
    with pytest.raises(ConfigError, match=r"^configs/x\.yaml: loss\.p_std: expected a number, got None$"):
        from_dict({**TOY, "loss": {"time_density": "lognormal", "p_std": None}}, SRC)
    with pytest.raises(ConfigError, match=r"^configs/x\.yaml: sample\.eta: expected a number, got 'abc'$"):
        from_dict({**TOY, "sample": {"sampler": "ddim", "eta": "abc"}}, SRC)
    with pytest.raises(ConfigError, match=r"^configs/x\.yaml: sample\.n_corrector: expected an integer, got 1\.5$"):
        from_dict({**TOY, "sample": {"sampler": "pc", "n_corrector": 1.5}}, SRC)
    with pytest.raises(ConfigError, match=r"^configs/x\.yaml: loss\.techniques\.immiscible: expected true or false"):
        from_dict({**TOY, "loss": {"techniques": {"immiscible": "yes"}}}, SRC)


@needs_graphs
@pytest.mark.parametrize(("key", "value", "expected"), [
    ("data.max_nodes", "abc", "expected an integer or null, got 'abc'"),
    ("data.drop_isolated", "sometimes", "expected true or false or null, got 'sometimes'"),
    ("data.num_graphs", 2.5, "expected an integer or null, got 2.5"),
    ("model.x_net", 3, "expected a string, got 3"),
    ("model.depth", "deep", "expected an integer, got 'deep'"),
    ("model.x_depth", [2], "expected an integer or null, got [2]"),
    ("process.x", "vp", "expected a mapping or null, got 'vp'"),
    ("process.unit_prior", "yes", "expected true or false, got 'yes'"),
    ("sample.snr", "abc", "expected a number, got 'abc'"),
    ("sample.n_corrector", 1.5, "expected an integer, got 1.5"),
    ("train.ema", "high", "expected a number, got 'high'"),
    ("loss.time_density", None, "expected a string, got None"),
])
def test_wrong_types_in_a_graphs_recipe_are_one_line_errors(key, value, expected):
    with pytest.raises(ConfigError) as err:
        from_dict(with_value(GRAPHS, key, value), "graphs.yaml")
    assert one_line(err) == f"graphs.yaml: {key}: {expected}"


# ---------------------------------------------------------------------------------------------
# correct values are accepted and converted
# ---------------------------------------------------------------------------------------------

def test_correct_values_are_converted_to_the_annotated_types(tmp_path):
    f = tmp_path / "r.yaml"
    f.write_text("modality: toy\n"
                 "data: {name: gmm, n: 200, spread: 3, std: 1e-1, k: 4.0}\n"  # 1e-1: a string in YAML 1.1
                 "model: {name: mlp, hidden: 16, depth: 1}\n"
                 "loss: {weighting: min_snr, gamma: 3, field_weights: {x: 2}}\n"
                 "train: {lr: 1e-3, max_steps: 1e2, precision: 32, devices: [0, 1]}\n"
                 "sample: {sampler: pc, snr: 1, batch_size: null, t_min: null, final_zero: true}\n")
    assert yaml.safe_load(f.read_text())["data"]["std"] == "1e-1"
    cfg = load_config(f)
    data = cfg.data.options
    assert data == {"n": 200, "spread": 3.0, "std": 0.1, "k": 4}
    assert isinstance(data["spread"], float) and isinstance(data["k"], int)
    assert cfg.loss.options == {"gamma": 3.0} and isinstance(cfg.loss.options["gamma"], float)
    assert cfg.loss.field_weights == {"x": 2.0} and isinstance(cfg.loss.field_weights["x"], float)
    assert cfg.train.lr == 1e-3 and cfg.train.max_steps == 100 and cfg.train.precision == "32"
    assert cfg.train.devices == [0, 1] and isinstance(cfg.train.devices, list)  # a list stays a list
    assert cfg.sample.options == {"snr": 1.0, "t_min": None, "final_zero": True}
    assert isinstance(cfg.sample.options["snr"], float) and cfg.sample.batch_size is None
    # the factories receive the converted values, and the recipe round-trips
    toy = polydiff.load_modality("toy")
    bundle = build_data(cfg, toy)
    assert bundle.info["n"] == 200 and bundle.info["num_classes"] == 4
    fields = build_fields(cfg, toy, bundle.info)
    assert build_network(cfg, toy, bundle.info, fields) is not None
    assert from_dict(cfg.to_dict(), str(f)) == cfg


@needs_graphs
def test_optional_values_of_a_graphs_recipe_accept_null():
    cfg = from_dict(with_value(GRAPHS, "model.x_depth", None), "graphs.yaml")
    assert cfg.data.options["max_feat_num"] is None and cfg.model.options["x_depth"] is None
    cfg = from_dict(with_value(GRAPHS, "data.max_nodes", "20"), "graphs.yaml")
    assert cfg.data.options["max_nodes"] == 20
    assert from_dict(with_value(GRAPHS, "sample.snr", 1), "graphs.yaml").sample.options["snr"] == 1.0


def test_values_a_factory_cannot_build_from_name_the_section_and_the_options(monkeypatch):
    cfg = from_dict(with_value(TOY, "model.hidden", -2), SRC)  # an integer, but no network has -2 units
    toy = polydiff.load_modality("toy")
    with pytest.raises(ConfigError) as err:
        build_network(cfg, toy, {"dim": 2}, build_fields(cfg, toy, {"dim": 2}))
    assert one_line(err) == f"{SRC}: model: model.hidden must be a positive integer, got -2"  # the toy checks it

    def broken(info, fields, **options):  # a factory that fails inside torch, without naming the value
        raise RuntimeError("Trying to create tensor with negative dimension -2: [-2, 2]")

    monkeypatch.setattr(type(toy), "networks", lambda self: {"mlp": broken})
    with pytest.raises(ConfigError) as err:
        build_network(cfg, toy, {"dim": 2}, build_fields(cfg, toy, {"dim": 2}))
    assert one_line(err).startswith(f"{SRC}: model: network 'mlp' cannot be built with hidden=-2, depth=3, ")
    assert "RuntimeError: " in str(err.value)


def test_programmatic_changes_are_checked_when_the_run_is_built():
    cfg = from_dict(TOY, SRC)
    cfg.model.options["depth"] = "two"
    toy = polydiff.load_modality("toy")
    with pytest.raises(ConfigError, match=r"^configs/x\.yaml: model\.depth: expected an integer, got 'two'$"):
        build_network(cfg, toy, {"dim": 2}, build_fields(cfg, toy, {"dim": 2}))
    cfg.process["beta_min"] = "low"  # a schedule option: checked by the schedule registry
    cfg.process["schedule"] = "vp_linear"
    with pytest.raises(ConfigError, match=r"process: schedule 'vp_linear' option beta_min: expected a number, "
                                          r"got 'low'$"):
        build_fields(cfg, toy, {"dim": 2})


# ---------------------------------------------------------------------------------------------
# YAML errors, overrides, plugins
# ---------------------------------------------------------------------------------------------

def test_yaml_errors_name_the_file_line_and_column(tmp_path):
    f = tmp_path / "r.yaml"
    f.write_text("modality: toy\ntrain:\n  lr: [1, 2\n  seed: 0\n")
    with pytest.raises(ConfigError) as err:
        load_config(f)
    assert one_line(err) == (f"{f}: not valid YAML at line 4, column 7: expected ',' or ']', but got ':' "
                             "(while parsing a flow sequence at line 3, column 7)")
    with pytest.raises(ConfigError) as err:
        load_config(GMM, ["model.name=a: b: c"])
    msg = one_line(err)
    assert msg.startswith(f"{GMM}: --set model.name: 'a: b: c' is not valid YAML at column 5: "), msg
    assert msg.endswith("quote a string value") and "unicode string" not in msg
    assert load_config(GMM, ["model.name='mlp'"]).model.name == "mlp"
    # a key given twice: plain YAML keeps the last silently (a second train: section dropped the first)
    for text, where in [("modality: toy\ntrain:\n  lr: 0.002\n  lr: 0.003\n", "line 4, column 3: the key 'lr'"),
                        ("train: {lr: 0.002}\ndata: {name: gmm}\ntrain: {max_steps: 3}\n",
                         "line 3, column 1: the key 'train'"),
                        ("train: {lr: 0.1, lr: 0.2}\n", "line 1, column 18: the key 'lr'")]:
        f.write_text(text)
        with pytest.raises(ConfigError, match=rf"r\.yaml: not valid YAML at {where} is given twice"):
            load_config(f)
    f.write_bytes(b"train: {lr: \xff}\n")
    with pytest.raises(ConfigError, match=r"r\.yaml: not a text file"):
        load_config(f)


def test_missing_plugins_say_to_install_from_the_folder(monkeypatch):
    monkeypatch.setattr(reg, "_entry_points", dict)
    with pytest.raises(reg.ModalityNotFound) as err:
        reg.load_modality("galaxies")
    msg = str(err.value)
    assert "no polydiff modality 'galaxies' is installed" in msg and "pip install polydiff-" not in msg
    assert "pip install -e modalities/galaxies" in msg and "not from PyPI" in msg
    monkeypatch.setattr(reg, "_entry_points", lambda: {"toy": None})
    with pytest.raises(reg.ModalityNotFound, match=r"'toyy' is installed \(installed: toy\)\. Did you mean 'toy'\?"):
        reg.load_modality("toyy")  # a typo gets the name, not an install hint

    class Broken:
        dist = None

        def load(self):
            raise ModuleNotFoundError("No module named 'torch_geometric'", name="torch_geometric")

    monkeypatch.setattr(reg, "_entry_points", lambda: {"graphs": Broken()})
    with pytest.raises(reg.ModalityNotFound) as err:
        reg.load_modality("graphs")
    msg = str(err.value)
    assert "needs the module 'torch_geometric'" in msg and "pip install polydiff-" not in msg
    assert f"pip install -e {ROOT / 'modalities' / 'graphs'}" in msg


# ---------------------------------------------------------------------------------------------
# sampler options and registries
# ---------------------------------------------------------------------------------------------

def test_sampler_options_are_checked_against_their_defaults():
    pc = SAMPLERS.get("pc")
    with pytest.raises(polydiff.RegistryError) as err:
        pc.options({"snr": "abc"})
    assert str(err.value) == ("sampler 'pc' option snr: expected a number, got 'abc'; options: denoise=False, "
                              "n_corrector=1, norm='batch', predictor='reverse', scale_eps=1.0, snr=0.16")
    with pytest.raises(polydiff.RegistryError, match=r"option n_corrector: expected an integer, got True"):
        pc.options({"n_corrector": True})
    with pytest.raises(polydiff.RegistryError, match=r"option norm: expected a string, got 3"):
        pc.options({"norm": 3})
    opts = pc.options({"snr": 1, "n_corrector": 2.0, "scale_eps": "1e-1"})
    assert opts["snr"] == 1.0 and isinstance(opts["snr"], float) and opts["n_corrector"] == 2
    assert opts["scale_eps"] == 0.1
    assert SAMPLERS.get("ctm").options({"t_end": "anything"})["t_end"] == "anything"  # a None default
    with pytest.raises(polydiff.RegistryError, match="has no option snrr"):
        pc.options({"snrr": 0.1})


def test_registry_build_checks_option_types():
    with pytest.raises(polydiff.RegistryError, match=r"^schedule 'vp_linear' option beta_min: expected a number, "
                                                     r"got 'abc'$"):
        SCHEDULES.build("vp_linear", beta_min="abc")
    assert SCHEDULES.build("vp_linear", beta_min=1).beta_min == 1.0


def test_check_value_and_describe_type():
    assert reg.check_value("1e-3", float) == 1e-3 and reg.check_value(2, float) == 2.0
    assert reg.check_value("1e3", int) == 1000 and reg.check_value(None, int | None) is None
    assert reg.check_value(None, int, default=None) is None  # a None default allows None
    assert reg.check_value(32, Literal["32", "64"]) == "32"
    for value, hint in [(True, int), (1, bool), ("yes", bool), (2.5, int), ("ab", list[str]), (1.0, str)]:
        with pytest.raises(reg.ValueMismatch):
            reg.check_value(value, hint)
    assert reg.describe_type(int | None) == "an integer or null"
    assert reg.describe_type(list[int]) == "a list of integers"
    assert reg.describe_type(dict[str, Any] | None) == "a mapping or null"
    assert reg.describe_type(tuple[float, float]) == "a list of 2 numbers"
    assert reg.describe_type(Path) == "a path"
    assert reg.describe_type(Literal["a", "b"]) == "one of a, b"


def test_unresolvable_annotations_are_checked_by_name_only():
    def factory(width: int = 1, thing: NotDefined = None, plain=3) -> None:  # noqa: F821
        """``NotDefined`` does not resolve: ``thing`` is passed through unchecked."""

    hints = reg.param_hints(factory)
    assert hints == {"width": int}
    assert reg.check_options(factory, {"width": "2", "thing": "x", "plain": "y"}) == {"width": 2, "thing": "x",
                                                                                      "plain": "y"}
    with pytest.raises(reg.ValueMismatch) as err:
        reg.check_options(factory, {"width": "wide"})
    assert err.value.name == "width" and str(err.value) == "expected an integer, got 'wide'"


# ---------------------------------------------------------------------------------------------
# the command line: one line, exit status 2
# ---------------------------------------------------------------------------------------------

def test_polydiff_train_set_with_wrong_types(tmp_path, capsys):
    out = tmp_path / "o"
    code, _, err = run(capsys, "train", GMM, "--set", "model.hidden=wide", "--out", out)
    assert one_line_error(code, err) == f"{GMM} (with --set): model.hidden: expected an integer, got 'wide'"
    code, _, err = run(capsys, "train", GMM, "--set", "data.k=abc", "--out", out)
    assert one_line_error(code, err) == f"{GMM} (with --set): data.k: expected an integer, got 'abc'"
    code, _, err = run(capsys, "train", GMM, "--set", "sample.sampler=pc", "--set", "sample.snr=abc", "--out", out)
    assert one_line_error(code, err) == f"{GMM} (with --set): sample.snr: expected a number, got 'abc'"
    code, _, err = run(capsys, "train", GMM, "--set", "train.lr=[1,", "--out", out)
    assert "--set train.lr: '[1,' is not valid YAML at column 4" in one_line_error(code, err)
    assert not out.exists()


@needs_graphs
def test_polydiff_train_set_with_wrong_types_in_a_graphs_recipe(tmp_path, capsys):
    recipe = ROOT / "configs" / "graphs" / "community_small_gdss.yaml"
    embedded = ["--set", "data.name=community_small", "--set", "data.max_feat_num=null"]
    code, _, err = run(capsys, "train", recipe, *embedded, "--set", "data.max_nodes=abc", "--out", tmp_path / "o")
    assert one_line_error(code, err) == f"{recipe} (with --set): data.max_nodes: expected an integer or null, got 'abc'"
    code, _, err = run(capsys, "train", recipe, *embedded, "--set", "model.nhid=wide", "--out", tmp_path / "o")
    assert one_line_error(code, err) == f"{recipe} (with --set): model.nhid: expected an integer, got 'wide'"


@pytest.fixture(scope="module")
def toy_checkpoint(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run")
    cfg = from_dict(with_value(with_value(with_value(TOY, "train.max_steps", 2), "model.hidden", 8),
                               "train.progress", False), "tiny.yaml")
    cfg.data.options["n"] = 200
    return polydiff.train(cfg, out, verbose=False).checkpoint


def test_polydiff_sample_option_with_wrong_types(toy_checkpoint, tmp_path, capsys):
    code, _, err = run(capsys, "sample", toy_checkpoint, "--num", 4, "--steps", 2, "--sampler", "pc",
                       "--option", "snr=abc", "--out", tmp_path / "s")
    assert one_line_error(code, err) == ("sampler 'pc' option snr: expected a number, got 'abc'; options: "
                                         "denoise=False, n_corrector=1, norm='batch', predictor='reverse', "
                                         "scale_eps=1.0, snr=0.16")
    code, _, err = run(capsys, "sample", toy_checkpoint, "--num", 4, "--steps", 2, "--sampler", "ddim",
                       "--option", "eta=[1]", "--out", tmp_path / "s")
    assert one_line_error(code, err).startswith("sampler 'ddim' option eta: expected a number, got [1]")
    assert not (tmp_path / "s").exists() and not (tmp_path / "s.partial").exists()  # no samples, no partial ones
    gen = polydiff.load(toy_checkpoint)  # keyword options of the Python API: the same check
    with pytest.raises(polydiff.RegistryError, match="sampler 'pc' option snr: expected a number"):
        gen.generate(2, sampler="pc", steps=2, snr="abc")
    code, _, err = run(capsys, "sample", toy_checkpoint, "--num", 4, "--steps", 2, "--sampler", "pc",
                       "--option", "snr=1", "--out", tmp_path / "ok")
    assert code == 0, err


# ---------------------------------------------------------------------------------------------
# random values in random keys: accepted (and the run builds) or a ConfigError naming the key
# ---------------------------------------------------------------------------------------------

KEYS = [f"{section}.{key}" for section in ("data", "model", "process", "loss", "train", "sample")
        for key in TOY[section]]
SCALARS = (st.none() | st.booleans() | st.integers(-3, 12) | st.floats(-4, 4, allow_nan=False)
           | st.sampled_from(["", "abc", "1e-3", "32", "gmm", "mlp", "ddim", "eps", "true"]))
NESTED = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.sampled_from(["x", "a", "k"]), inner, max_size=2), max_leaves=4)
VALUES = st.one_of(SCALARS, SCALARS, SCALARS, NESTED)  # mostly scalars: more recipes get as far as the build
BASE = with_value(with_value(TOY, "data.n", 64), "model.hidden", 8)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(KEYS), VALUES), min_size=1, max_size=2))
def test_random_values_are_accepted_or_named(changes):
    recipe = BASE
    for key, value in changes:
        recipe = with_value(recipe, key, value)
    try:
        cfg = from_dict(recipe, SRC)
    except ConfigError as err:
        msg = str(err)
        assert msg.startswith(f"{SRC}: ") and "\n" not in msg, msg
        assert any(key in msg or f"'{key}'" in msg for key, _ in changes), (changes, msg)
        return
    toy = polydiff.load_modality("toy")
    try:  # range problems (k = -1, an unknown schedule ...) are the factories' to report, naming the section
        bundle = build_data(cfg, toy)
        fields = build_fields(cfg, toy, bundle.info)
        build_network(cfg, toy, bundle.info, fields)
    except ConfigError as err:
        assert any(str(err).startswith(f"{SRC}: {key.split('.')[0]}") or f"'{key}'" in str(err)
                   for key, _ in changes), (changes, str(err))


def test_max_minutes_stops_training_and_saves_the_last_checkpoint(tmp_path):
    """train.max_minutes: a wall-time budget (benchmarks train rivals for equal time)."""
    import polydiff

    recipe = {"modality": "toy", "data": {"name": "gmm", "k": 2, "dim": 2, "n": 256},
              "model": {"name": "mlp", "hidden": 8, "depth": 1},
              "train": {"max_steps": 10**6, "max_minutes": 0.03, "batch_size": 16, "accelerator": "cpu", "devices": 1,
                        "threads": 1, "checkpoint_every": 10**6, "progress": False, "logger": "none"}}
    run = polydiff.train(recipe, tmp_path / "run", fresh=True, verbose=False)
    assert 0 < run.step < 10**6 and run.checkpoint.name == "last.ckpt" and run.checkpoint.is_file()
    # the budget is this call's: a resumed run trains on for its own budget (Lightning's
    # max_time would restore the first call's elapsed time and stop at once)
    more = polydiff.train(recipe, tmp_path / "run", verbose=False)
    assert more.resumed_from is not None and more.step > run.step + 5, (run.step, more.step)
    with pytest.raises(ConfigError, match=r"train\.max_minutes"):
        from_dict({**recipe, "train": {"max_minutes": -1}})


def test_a_recipe_grid_may_be_a_list_of_times():
    """docs/recipes.md: sample.grid is a grid name or a list of times (the list was refused)."""
    cfg = from_dict({"modality": "toy", "sample": {"sampler": "unipc", "grid": [0.99, 0.5, 0.1, 0.001]}},
                    source="r.yaml")
    assert cfg.sample.options["grid"] == [0.99, 0.5, 0.1, 0.001]
    for bad in ([0.5, 0.9], [1.0, "x"], [0.5], [1.0, float("nan")]):
        with pytest.raises(ConfigError, match=r"r\.yaml: sample\.grid: a list of times must hold at least 2 finite "
                                              r"numbers, strictly decreasing"):
            from_dict({"modality": "toy", "sample": {"grid": bad}}, source="r.yaml")


@pytest.mark.parametrize(("section", "expected"), [
    ({"field_weights": {"x": float("nan")}}, r"loss\.field_weights\.x: expected a finite number >= 0, got nan"),
    ({"field_weights": {"x": -1}}, r"loss\.field_weights\.x: expected a finite number >= 0, got -1"),
    ({"techniques": {"self_condition": 1.5}}, r"loss\.techniques\.self_condition: expected a probability in \[0, 1\]"),
    ({"techniques": {"cond_drop": 2.0}}, r"loss\.techniques\.cond_drop: expected a probability in \[0, 1\]"),
])
def test_loss_weights_and_technique_probabilities_are_checked(section, expected):
    """NaN field weights trained until 'diverged', negative ones to a negative loss, and
    probabilities above 1 trained as if 1."""
    with pytest.raises(ConfigError, match=expected):
        from_dict({"modality": "toy", "loss": section}, SRC)
    with pytest.raises(ConfigError, match=r"loss\.p_std: expected a number \(not NaN\), got nan"):
        from_dict({"modality": "toy", "loss": {"time_density": "lognormal", "p_std": float("nan")}}, SRC)


def test_a_field_weight_for_no_field_is_an_error():
    import torch

    from polydiff.losses import diffusion_loss
    from polydiff.random import Noise
    from polydiff.state import as_fields

    fields = as_fields(polydiff.GaussianProcess(polydiff.VPLinear()))
    with pytest.raises(KeyError, match=r"loss\.field_weights names \['y'\], which are not fields of the state"):
        diffusion_loss(lambda st, t: {"x": torch.zeros_like(st["x"])}, fields, {"x": torch.zeros(4, 2)},
                       Noise(4, seed=0), field_weights={"y": 2.0})


def test_a_recipe_must_name_its_modality(tmp_path):
    """An empty (or truncated) recipe file once trained the toy model with every default."""
    for text in ("", "# nothing yet\n", "train: {max_steps: 3}\n"):
        f = tmp_path / "r.yaml"
        f.write_text(text)
        with pytest.raises(ConfigError) as err:
            load_config(f)
        msg = one_line(err)
        assert msg.startswith(f"{f}: modality: missing; name the plugin") and "toy" in msg, msg
    with pytest.raises(ConfigError, match="modality: missing"):
        from_dict({"train": {"max_steps": 3}}, "<config>")
    assert from_dict({"modality": "toy"}, "<config>").modality == "toy"


def test_sample_compile_and_time_range_fail_before_training(tmp_path):
    """sample.compile=maxautotune and sample.t_min=-1 trained the whole run, then failed at sampling."""
    with pytest.raises(ConfigError, match=r"r\.yaml: sample\.compile: expected one of .*, got 'maxautotune'"):
        from_dict({"modality": "toy", "sample": {"compile": "maxautotune"}}, "r.yaml")
    assert from_dict({"modality": "toy", "sample": {"compile": "loop"}}, "r.yaml").sample.options["compile"] == "loop"
    recipe = {"modality": "toy", "data": {"name": "gmm", "k": 2, "dim": 2, "n": 64},
              "model": {"name": "mlp", "hidden": 8, "depth": 1},
              "train": {"max_steps": 2, "batch_size": 16, "progress": False, "logger": "none", "threads": 1}}
    for sample, msg in [({"t_min": -1.0}, r"sample\.t_min: t_min and t_max must lie in the schedule's time range"),
                        ({"grid": [0.999, 0.5, 1e-4]}, r"sample\.grid: a user grid must lie in the schedule's time")]:
        out = tmp_path / "run"
        with pytest.raises(ConfigError, match=msg):
            polydiff.train({**recipe, "sample": sample}, out, verbose=False)
        assert not out.exists()
