"""The core as a plugin platform: the declared plugin API, the contract test kit, plugin
registrations seen by recipes, the module structure, and the regressions the issue listed."""

from __future__ import annotations

import ast
import importlib.util
import io
import json
import os
import subprocess
import sys
import zipfile
from contextlib import redirect_stdout
from importlib.metadata import EntryPoint
from pathlib import Path

import numpy as np
import pytest
import torch
from tokens_plugin import MAX_LEN, TokensModality

import polydiff
from polydiff import registry
from polydiff.cli import main as cli
from polydiff.config import ConfigError, from_dict, load_config
from polydiff.plugin import TensorStates
from polydiff.testing import check_modality

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "core" / "polydiff"


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def tokens_plugin(monkeypatch):
    """Register tests/core/tokens_plugin.py as the installed plugin "tokens"."""
    real = registry._entry_points

    def eps():
        return {**real(), "tokens": EntryPoint("tokens", "tokens_plugin:TokensModality", registry.ENTRY_POINT_GROUP)}

    monkeypatch.setattr(registry, "_entry_points", eps)
    return TokensModality()


TINY_TOKENS = {"modality": "tokens", "data": {"n": 60}, "model": {"hidden": 16},
               "train": {"max_steps": 3, "batch_size": 8, "progress": False, "logger": "none", "checkpoint_every": 3},
               "sample": {"num": 5, "sampler": "first_hitting"}}


# ------------------------------------------------------------------------------ the contract kit
def test_contract_kit_passes_the_toy_and_a_categorical_plugin(tmp_path, tokens_plugin):
    toy = check_modality(polydiff.load_modality("toy"), tmp_path / "toy", data={"n": 64, "n_test": 32},
                         model={"hidden": 16, "depth": 1, "emb_dim": 8})
    plots = importlib.util.find_spec("matplotlib") is not None  # the toy draws with it when installed
    assert len(toy.checked) == 8 + plots and toy.objects.shape == (4, 2)
    assert plots == any(c.startswith("plot writes a PNG") for c in toy.checked)
    rep = check_modality(tokens_plugin, tmp_path / "tokens", data={"n": 40}, model={"hidden": 8}, steps=3)
    assert all(len(s) == int(m.sum()) for s, m in zip(rep.objects, rep.state["mask"], strict=True))
    assert (rep.state["tokens"][rep.state["mask"] == 0] == 0).all()  # padding never drawn


def test_contract_kit_catches_broken_plugins(tmp_path, tokens_plugin):
    class LosesOne(TokensModality):
        def write(self, objects, out_dir):
            return super().write(list(objects)[:-1], out_dir)

    with pytest.raises(AssertionError, match="read back 3 objects of the 4"):
        check_modality(LosesOne(), tmp_path / "a", data={"n": 40}, model={"hidden": 8})

    class Silent(TokensModality):
        def read(self, path):
            try:
                return super().read(path)
            except ValueError:
                return []

    with pytest.raises(AssertionError, match="raised no error and no warning"):
        check_modality(Silent(), tmp_path / "b", data={"n": 40}, model={"hidden": 8})

    class WrongShape(TokensModality):
        def prior_state(self, n, info, generator=None, condition=None):
            return {**super().prior_state(n, info, generator), "tokens": (n, MAX_LEN + 1)}

    with pytest.raises(AssertionError, match="prior_state: field 'tokens' has shape"):
        check_modality(WrongShape(), tmp_path / "c", data={"n": 40}, model={"hidden": 8})

    class Downloads(TokensModality):
        def datasets(self):
            def fetch(**_):
                import socket

                socket.create_connection(("127.0.0.1", 9), timeout=0.1)

            return {"web": fetch}

    with pytest.raises(AssertionError, match="must load offline"):
        check_modality(Downloads(), tmp_path / "d")


# ------------------------------------------------------------------------------ categorical fields
def test_first_hitting_is_a_registered_sampler_everywhere(tmp_path, tokens_plugin):
    """Recipes, Generator.generate and `polydiff sample` reach the first-hitting sampler; an
    all-categorical recipe names it as its sampler; padding is never drawn; one model call per
    generated token."""
    assert polydiff.SAMPLERS.get("first_hitting").loop == "own"
    cfg = from_dict(TINY_TOKENS)
    run = polydiff.train(cfg, tmp_path / "run", verbose=False)
    gen = polydiff.load(run.checkpoint)
    gen.net.calls = 0
    state = gen.sample_states(6, seed=3)
    mask = state["mask"].bool()
    assert gen.net.calls == int(mask.sum(1).max())  # one token per call, the longest string's length
    assert (state["tokens"][~mask] == 0).all() and (state["tokens"][mask] < 3).all()
    strings = gen.generate(6, seed=3)
    assert [len(s) for s in strings] == mask.sum(1).tolist()
    assert gen.generate(6, seed=3) == strings and gen.generate(3, seed=3) == strings[:3]
    with redirect_stdout(io.StringIO()):
        assert cli(["sample", str(run.checkpoint), "--num", "4", "--out", str(tmp_path / "s")]) == 0
    assert len((tmp_path / "s" / "samples.txt").read_text().splitlines()) == 4
    # the ancestral sampler on the same grid-free recipe, and a Gaussian sampler for mixed states
    assert len(gen.generate(3, sampler="ancestral", steps=4, seed=0)) == 3
    with pytest.raises(ConfigError, match="runs its own loop"):
        from_dict({**TINY_TOKENS, "sample": {"sampler": "ddpm", "categorical": "first_hitting"}})


def test_categorical_priors_and_steps_respect_masks(tokens_plugin):
    fields = tokens_plugin.fields({})
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1]]).float()
    seen = []

    def model(state, t):
        seen.append(state["tokens"].clone())
        return {"tokens": torch.zeros(2, MAX_LEN, 3)}

    for sampler, extra in (("ancestral", {}), ("tau_leaping", {}), ("ddpm", {"categorical": "ancestral"})):
        seen.clear()
        out = polydiff.sample(model, fields, {"tokens": (2, MAX_LEN), "mask": mask}, sampler=sampler, steps=4, seed=0,
                              **extra)
        assert all((x[0, 3:] == 0).all() for x in seen)  # padding holds token 0 at every step, never the mask id
        assert (out["tokens"][0, 3:] == 0).all() and (out["tokens"][mask.bool()] < 3).all()


def test_log_likelihood_of_categorical_fields_is_the_elbo(tokens_plugin):
    fields = tokens_plugin.fields({})
    data = tokens_plugin.dataset(n=20).train.tensors
    logits = torch.randn(MAX_LEN, 3, generator=torch.Generator().manual_seed(0)).double()

    def fixed(state, t):  # ignores its input: the ELBO is then sum_l -log p_l(x_l) (alpha(0) - alpha(1))
        return {"tokens": logits.expand(state["tokens"].shape[0], -1, -1)}

    res = polydiff.log_likelihood(fixed, fields, data, steps=256)
    lp = torch.log_softmax(logits, -1)
    exact = -(lp.gather(1, data["tokens"].T).T * data["mask"]).sum(1) * (1 - fields["tokens"].process.alpha(
        torch.tensor(1.0, dtype=torch.float64)))
    assert torch.allclose(res.nll, exact, atol=4 * float(res.stderr.max()) + 1e-3)
    assert torch.equal(res.tokens, data["mask"].sum(1).double()) and (res.perplexity > 1).all()


# ------------------------------------------------------------------------------ recipes and plugins
def test_plugin_sampler_names_are_known_before_the_recipe_is_checked():
    """A recipe naming a sampler its plugin registers (GDSS's s4) is checked after the plugin is
    imported, even in a fresh interpreter that never imported it."""
    if "graphs" not in polydiff.available_modalities():
        pytest.skip("the graphs plugin is not installed")
    code = ("import sys; from polydiff.config import from_dict; "
            "assert 'polydiff_graphs' not in sys.modules; "
            "cfg = from_dict({'modality': 'graphs', 'sample': {'sampler': 's4', 'snr': 0.1}}); "
            "print(cfg.sample.sampler, 'polydiff_graphs' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["s4", "True"]
    with pytest.raises(ConfigError, match=r"modality: no polydiff modality 'nope' is installed"):
        from_dict({"modality": "nope"}, source="r.yaml")


def test_another_plugins_sampler_serves_a_toy_model(tmp_path):
    """``polydiff samplers`` lists graphs' s4; a toy checkpoint sampled with it in a fresh
    interpreter (which never imported the graphs plugin) finds it too."""
    if "graphs" not in polydiff.available_modalities():
        pytest.skip("the graphs plugin is not installed")
    ckpt = tmp_path / "run"
    polydiff.train({"modality": "toy", "data": {"name": "gmm", "k": 2, "dim": 2},
                    "model": {"name": "mlp", "hidden": 8, "depth": 1},
                    "train": {"max_steps": 2, "batch_size": 16, "accelerator": "cpu", "devices": 1, "threads": 1,
                              "progress": False, "logger": "none"}}, ckpt, fresh=True, verbose=False)
    code = ("import sys, polydiff; gen = polydiff.load(sys.argv[1]); "
            "assert 'polydiff_graphs' not in sys.modules; "
            "x = gen.generate(3, sampler='s4', steps=2, seed=0); print(x.shape, 'polydiff_graphs' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code, str(ckpt / "checkpoints" / "last.ckpt")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["(3,", "2)", "True"]


def test_a_registry_imports_elsewhere_once_on_a_miss():
    calls = []

    def import_elsewhere() -> str:
        calls.append(1)
        reg.register("late")(object)
        return " (plugin 'broken' could not be imported)"

    reg = registry.Registry("thing", on_miss=import_elsewhere)
    reg.register("early")(int)
    assert "early" in reg and calls == []                 # a known name imports nothing
    assert reg.get("late") is object and calls == [1]     # the first miss imports, and finds it
    with pytest.raises(registry.RegistryError, match=r"unknown thing 'nope'\. Allowed: early, late \(plugin "
                                                     r"'broken' could not be imported\)"):
        reg.get("nope")
    assert "nope" not in reg and calls == [1]             # once


def test_recipes_ship_as_package_data_and_resolve_by_name():
    recipes = polydiff.load_modality("toy").recipes()
    assert set(recipes) >= {"gmm", "gmm_flow"} and all(p.is_file() for p in recipes.values())
    assert recipes["gmm"].parent == CORE / "toy" / "recipes"
    cfg = load_config("toy:gmm", ["train.max_steps=7"])
    assert cfg.modality == "toy" and cfg.train.max_steps == 7 and cfg.source.endswith("gmm.yaml")
    assert (ROOT / "configs" / "toy" / "gmm.yaml").resolve() == recipes["gmm"].resolve()  # the layout's path
    with pytest.raises(ConfigError, match="ships no recipe 'nope'; recipes: gmm, gmm_flow"):
        load_config("toy:nope")


@pytest.mark.slow
def test_recipes_work_from_an_installed_wheel(tmp_path):
    """Built as a wheel and installed (not editable), a plugin still finds its recipes."""
    plugin = ROOT / "examples" / "third_party_plugin"
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                            str(tmp_path / "wheels"), str(plugin)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "wheels").glob("*.whl")
    assert "polydiff_spirals/recipes/spirals.yaml" in zipfile.ZipFile(wheel).namelist()
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as z:
        z.extractall(site)
    code = ("import polydiff_spirals, polydiff; from polydiff.config import recipe_path; "
            "m = polydiff_spirals.SpiralsModality(); print(polydiff_spirals.__file__); print(m.recipes()['spirals'])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(site)})
    assert done.returncode == 0, done.stderr
    module, recipe = done.stdout.split()
    assert module.startswith(str(site)) and recipe.startswith(str(site)) and Path(recipe).is_file()


def test_shared_dir_helper(monkeypatch, tmp_path):
    from polydiff.files import shared_dir, shared_file

    monkeypatch.setenv("POLYDIFF_SHARED", str(tmp_path / "elsewhere"))
    assert shared_dir() == tmp_path / "elsewhere"
    with pytest.raises(FileNotFoundError, match=r"expected .*elsewhere/data/x\.csv\. Set POLYDIFF_SHARED"):
        shared_file("data", "x.csv")
    monkeypatch.delenv("POLYDIFF_SHARED")
    (tmp_path / "shared" / "fixtures").mkdir(parents=True)
    (tmp_path / "work" / "deep").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "work" / "deep")
    assert shared_dir() == tmp_path / "shared"  # found beside a parent of the working directory


def test_plugin_commands_and_sampler_listing(capsys):
    if "spirals" not in polydiff.available_modalities():
        pytest.skip("examples/third_party_plugin is not installed")
    pts = Path(os.environ.get("TMPDIR", "/tmp")) / f"pts-{os.getpid()}.csv"
    pts.write_text("x,y\n3,4\n0,0\n")
    try:
        assert cli(["spirals", "stats", str(pts)]) == 0
        assert "2 points, mean radius 2.5000" in capsys.readouterr().out
    finally:
        pts.unlink()
    with pytest.raises(SystemExit):
        cli(["spirals", "--help"])
    assert "stats" in capsys.readouterr().out
    assert cli(["samplers", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["ddim"]["plugin"] == "polydiff" and rows["first_hitting"]["loop"] == "own"
    if "graphs" in polydiff.available_modalities():
        assert rows["s4"]["plugin"] == "graphs"
        assert cli(["samplers"]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert any(ln.startswith("s4 ") and ln.endswith("(graphs plugin)") for ln in lines)


# ------------------------------------------------------------------------------ the structure
def _plugin_sources() -> list[Path]:
    files = sorted(ROOT.glob("modalities/*/polydiff_*/**/*.py"))
    return files + sorted((ROOT / "examples" / "third_party_plugin").glob("polydiff_*/**/*.py"))


def test_plugins_import_only_the_plugin_api():
    """First-party plugins (and the example third-party one) import polydiff.plugin only."""
    bad = []
    for f in _plugin_sources():
        for node in ast.walk(ast.parse(f.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
            for name in names:
                if (name == "polydiff" or name.startswith("polydiff.")) and name != "polydiff.plugin":
                    bad.append(f"{f.relative_to(ROOT)}:{node.lineno}: {name}")
    assert _plugin_sources() and not bad, "private polydiff imports in plugins:\n" + "\n".join(bad)


# The core's modules from the bottom up: a module may import (at module level) only modules of a
# lower layer. Packages' __init__ sit above their submodules.
LAYERS = [
    ["version", "errors", "progress", "registry", "random", "files", "metrics"],
    ["processes.gaussian", "processes.categorical", "processes.manifold"],
    ["processes.so3", "parametrization"],
    ["processes", "structures", "grids"],
    ["state"],
    ["data", "estimates", "conditions", "nn.egnn"],
    ["nn", "losses", "energy", "quantize"],
    ["elbo"],
    ["samplers.base"],
    ["samplers.coefs"],
    ["samplers.plan", "samplers.gaussian", "samplers.dpm", "samplers.multistep", "samplers.timeshift"],
    ["samplers.driver", "samplers.categorical"],
    ["samplers.calibrate", "samplers.ctm"],
    ["samplers", "guidance", "techniques"],
    ["likelihood", "diagnostics", "steering"],
    ["config", "modality"],
    ["checkpoints", "distill", "distributed"],
    ["training", "generator"],
    ["testing", "fuzz", "toy.gmm"],
    ["toy.data"],
    ["toy.rotations"],
    ["toy", "cli"],
    ["plugin"],
    [""],  # polydiff/__init__
]


def _module_name(path: Path) -> str:
    rel = path.relative_to(CORE).with_suffix("")
    parts = list(rel.parts[:-1]) if rel.name == "__init__" else list(rel.parts)
    return ".".join(parts)


def _imports(path: Path, module: str) -> list[str]:
    """polydiff modules imported at module level (not inside functions) by a core file."""
    parts = module.split(".") if module else []
    package = parts if path.name == "__init__.py" else parts[:-1]
    out = []
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join([*base, *(node.module.split(".") if node.module else [])])
                # `from . import x` imports the submodule x, not (for this check) the package itself
                out += ([target] if node.module else []) + [f"{target}.{a.name}".strip(".") for a in node.names]
            elif (node.module or "").startswith("polydiff"):
                target = node.module[len("polydiff"):].lstrip(".")
                out += [target] + [f"{target}.{a.name}".strip(".") for a in node.names]
        elif isinstance(node, ast.Import):
            out += [a.name[len("polydiff"):].lstrip(".") for a in node.names if a.name.startswith("polydiff")]
    return out


def _core_graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in CORE.rglob("*.py")}
    return {m: {i for i in _imports(p, m) if i in files} for m, p in files.items()}


def test_no_core_module_imports_from_above_it():
    layer = {m: i for i, names in enumerate(LAYERS) for m in names}
    graph = _core_graph()
    missing = sorted(set(graph) - set(layer))
    assert not missing, f"core modules missing from the layer list: {missing}"
    bad = [f"{m} (layer {layer[m]}) imports {i} (layer {layer[i]})" for m, deps in graph.items() for i in deps
           if i != m and layer[i] >= layer[m]]
    assert not bad, "\n".join(bad)


def test_training_does_not_import_sampling_at_module_level():
    graph = _core_graph()
    seen, todo = set(), ["training"]
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo += [d for d in graph[m] if d]
    forbidden = sorted(m for m in seen if m in ("generator", "steering", "guidance") or m.startswith("samplers"))
    assert not forbidden, f"training imports {forbidden} at module level (through {sorted(seen)})"
    assert "checkpoints" in seen  # checkpoint I/O from its own module


def test_one_atomic_write_helper():
    """Temp-file-and-rename lives in polydiff.files; nothing else in the core or plugins writes
    its own temp files."""
    sources = [*CORE.rglob("*.py"), *_plugin_sources()]
    offenders = [str(p.relative_to(ROOT)) for p in sources if p.name != "files.py"
                 and any(w in p.read_text() for w in ("os.replace(", "mkstemp(", "tmp.replace(", ".tmp-"))]
    assert not offenders, offenders


# ------------------------------------------------------------------------------ regressions
def test_float64_solver_with_a_float32_network():
    """The solver runs in float64, the network receives its own dtype (state and time)."""
    net = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))
    seen = []

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body = net

        def forward(self, x, t):
            seen.append((x.dtype, t.dtype))
            return self.body(x) * t[:, None]

    process = polydiff.GaussianProcess("vp_cosine")
    x64 = polydiff.sample(Net(), process, (64, 2), sampler="dpm++2m", steps=6, seed=0, dtype=torch.float64)
    assert x64.dtype == torch.float64 and set(seen) == {(torch.float32, torch.float32)}
    x32 = polydiff.sample(Net(), process, (64, 2), sampler="dpm++2m", steps=6, seed=0)
    assert torch.allclose(x64.float(), x32, atol=1e-4)
    seen.clear()
    polydiff.sample(Net().double(), process, (4, 2), steps=2, seed=0)  # a float64 network gets float64
    assert set(seen) == {(torch.float64, torch.float64)}


def test_loss_terms_from_the_network():
    fields = {"x": polydiff.FieldSpec(polydiff.GaussianProcess("vp_cosine"))}
    batch = {"x": torch.randn(8, 3)}

    def net(state, t):
        return {"x": torch.zeros_like(state["x"]), "loss/aux": torch.full((8,), 2.0)}

    base, _ = polydiff.losses.diffusion_loss(lambda s, t: {"x": torch.zeros_like(s["x"])}, fields, batch,
                                             polydiff.Noise(8, seed=0))
    total, logs = polydiff.losses.diffusion_loss(net, fields, batch, polydiff.Noise(8, seed=0))
    assert torch.allclose(total, base + 2.0) and float(logs["aux"]) == 2.0
    half, _ = polydiff.losses.diffusion_loss(net, fields, batch, polydiff.Noise(8, seed=0), terms={"aux": 0.5})
    assert torch.allclose(half, base + 1.0)
    with pytest.raises(KeyError, match="no such loss/<name> output"):
        polydiff.losses.diffusion_loss(net, fields, batch, polydiff.Noise(8, seed=0), terms={"typo": 1.0})


def test_augmentation_hook_is_seeded_per_step():
    from polydiff.data import rotate
    from polydiff.training import StepBatches

    pos = torch.randn(20, 5, 3)
    mask = torch.ones(20, 5)
    mask[:, 4] = 0
    pos = pos * mask[..., None]
    ds = TensorStates(pos=pos, mask=mask)
    sb = StepBatches(ds, 4, seed=1, augment=rotate("pos", mask="mask"))
    a, b, c = sb.batch(3), sb.batch(3), sb.batch(4)
    assert torch.equal(a["pos"], b["pos"]) and not torch.equal(a["pos"], c["pos"])
    raw = StepBatches(ds, 4, seed=1).batch(3)
    m = raw["mask"].bool()
    # a rotation about the masked centre: pairwise distances kept, padding zero, data changed
    d0, d1 = torch.cdist(raw["pos"], raw["pos"]), torch.cdist(a["pos"], a["pos"])
    keep = m[:, :, None] & m[:, None, :]
    assert torch.allclose(d0[keep], d1[keep], atol=1e-5) and (a["pos"][~m] == 0).all()
    assert not torch.allclose(a["pos"], raw["pos"])


def test_energy_parametrisation_in_training_and_sampling():
    from polydiff.energy import EnergyModel, forces

    class Quadratic(torch.nn.Module):  # E = |x|^2 / (2 s^2): score -x / s^2
        def __init__(self):
            super().__init__()
            self.log_s = torch.nn.Parameter(torch.tensor(0.3))

        def forward(self, state, t):
            return 0.5 * (state["x"] ** 2).sum(1) / torch.exp(2 * self.log_s)

    fields = {"x": polydiff.FieldSpec(polydiff.GaussianProcess("vp_cosine"), prediction="score")}
    model = EnergyModel(Quadratic(), fields)
    x = torch.randn(5, 2)
    f = forces(model, {"x": x})["x"]
    assert torch.allclose(f, -x / torch.exp(torch.tensor(0.6)), atol=1e-6)
    with torch.no_grad():  # inside sampling's no_grad the score still comes from the gradient
        out = polydiff.sample(model, fields, {"x": (16, 2)}, steps=4, seed=0)
    assert torch.isfinite(out["x"]).all()
    loss, _ = polydiff.losses.diffusion_loss(model, fields, {"x": torch.randn(32, 2)}, polydiff.Noise(32, seed=0))
    loss.backward()  # the loss reaches the energy's parameters through the gradient
    assert model.energy.log_s.grad is not None and float(model.energy.log_s.grad.abs()) > 0
    with pytest.raises(ValueError, match="prediction='score'"):
        EnergyModel(Quadratic(), {"x": polydiff.FieldSpec(polydiff.GaussianProcess("vp_cosine"))})


# ------------------------------------------------------------------------------ the command line
def test_evaluate_users_files_with_per_sample_flags(tmp_path, capsys):
    """`polydiff evaluate FOLDER --modality NAME [--reference PATH]` on files another tool wrote."""
    from polydiff.toy import GaussianMixture

    gmm = GaussianMixture.random(k=3, dim=2, seed=0)
    pts = gmm.sample(50, torch.Generator().manual_seed(1)).numpy()
    ref = gmm.sample(80, torch.Generator().manual_seed(2)).numpy()
    folder, ref_file = tmp_path / "mine", tmp_path / "ref.csv"
    folder.mkdir()
    np.savetxt(folder / "points.csv", pts, delimiter=",", header="a,b", comments="")
    np.savetxt(ref_file, ref, delimiter=",")
    out = tmp_path / "m.json"
    assert cli(["evaluate", str(folder / "points.csv"), "--modality", "toy", "--reference", str(ref_file),
                "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["modality"] == "toy" and res["num"] == 50 and res["metrics"]["sw2"] > 0
    # without --reference: the modality's embedded default data, whose info gives per-point flags
    assert cli(["evaluate", str(folder / "points.csv"), "--modality", "toy", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert len(res["per_sample"]["loglik"]) == 50 and len(res["per_sample"]["component"]) == 50
    capsys.readouterr()
    assert cli(["evaluate", str(folder)]) == 2
    assert "--modality NAME" in capsys.readouterr().err
    (folder / "points.csv").write_text("a,b\n1,2\n3,oops\n")
    assert cli(["evaluate", str(folder / "points.csv"), "--modality", "toy"]) == 2
    assert "points.csv:3" in capsys.readouterr().err


def test_top_level_names_are_the_public_api():
    """``dir(polydiff)`` (what tab completion offers) is ``__all__``, every name of which
    resolves; the module's own helpers (importlib, typing names) are not offered."""
    assert dir(polydiff) == sorted(polydiff.__all__)
    for name in polydiff.__all__:
        assert getattr(polydiff, name) is not None, name
    assert not {"importlib", "Any", "TYPE_CHECKING", "annotations"} & set(dir(polydiff))


@pytest.mark.parametrize("argv", [
    ("crystals", "regressor", "--threads", "0"), ("crystals", "regressor", "--n", "-3"),
    ("crystals", "regressor", "--hidden", "0"), ("crystals", "wyckoff", "x.cif", "--symprec", "-1"),
    ("crystals", "wyckoff", "x.cif", "--symprec", "nan"), ("molecules", "regressor", "--steps", "0"),
    ("molecules", "property", "--num", "0"), ("audio", "autoencoder", "--threads", "0"),
    ("audio", "separate", "c.ckpt", "m.wav", "--scale", "nan"), ("timeseries", "forecast", "--scale", "inf")])
def test_plugin_counts_and_scales_are_checked_by_the_parser(argv, capsys):
    """--threads 0 ended in a torch traceback, --n -3 trained on all but 3 crystals, --symprec -1
    crashed spglib (a segfault), --scale nan wrote an all-empty forecast."""
    if argv[0] not in polydiff.available_modalities():
        pytest.skip(f"the {argv[0]} plugin is not installed")
    with pytest.raises(SystemExit) as stop:
        cli(list(argv))
    flag = next(a for a in argv if a.startswith("--"))
    assert stop.value.code == 2 and f"argument {flag}" in capsys.readouterr().err


def test_sampler_options_must_be_finite():
    """eta=nan (or inf) wrote all-NaN samples with exit 0; an infinite default (EDM's s_tmax) stays allowed."""
    for value in (float("nan"), "inf", "-Infinity"):
        with pytest.raises(registry.RegistryError,
                           match=r"sampler 'ddim' option eta: expected a (finite number|number \(not NaN\))"):
            polydiff.SAMPLERS.get("ddim").options({"eta": value})
    assert polydiff.SAMPLERS.get("edm").options({"s_tmax": float("inf")})["s_tmax"] == float("inf")
