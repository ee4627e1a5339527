"""The ``polydiff`` command: end to end, listings, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest
import torch

import polydiff
from polydiff import cli
from polydiff.config import ConfigError

ROOT = Path(__file__).resolve().parents[2]
GMM = ROOT / "configs" / "toy" / "gmm.yaml"
FAST = ["--set", "train.progress=false", "--set", "model.hidden=32", "--set", "model.depth=2"]


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code: int, err: str) -> str:
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("polydiff: error: ") and "Traceback" not in err, err
    return lines[0]


def test_train_sample_evaluate_end_to_end(tmp_path, capsys):
    """The acceptance path (with fewer steps): train the recipe, sample 500 points, evaluate."""
    out = tmp_path / "run"
    t0 = time.perf_counter()
    code, text, _ = run(capsys, "train", GMM, "--out", out, "--set", "train.max_steps=300", *FAST)
    assert code == 0 and "trained to step 300" in text
    ckpt = out / "checkpoints" / "last.ckpt"
    code, text, _ = run(capsys, "sample", ckpt, "--num", 500, "--out", out / "samples")
    assert code == 0 and "wrote 500 samples" in text
    assert (out / "samples" / "samples.csv").is_file() and (out / "samples" / "polydiff.json").is_file()
    code, text, _ = run(capsys, "evaluate", out / "samples", "--json", out / "metrics.json")
    elapsed = time.perf_counter() - t0
    assert code == 0 and "sw2:" in text and "loglik:" in text
    m = json.loads((out / "metrics.json").read_text())["metrics"]
    assert m["n"] == 500
    # 300 steps of a small MLP put the samples near the mixture (an untrained one: loglik < -20)
    assert m["loglik"] > m["loglik_ref"] - 4 and m["sw2"] < 0.5, m
    assert elapsed < 120, elapsed  # the acceptance bound is one minute for the full recipe on an idle CPU

    # a second `train` on the same folder resumes; a longer run continues from step 300
    code, text, _ = run(capsys, "train", GMM, "--out", out, "--set", "train.max_steps=310", *FAST)
    assert code == 0 and "resuming from" in text and "trained to step 310" in text
    # evaluating a checkpoint samples it first
    code, text, _ = run(capsys, "evaluate", ckpt, "--num", 200)
    assert code == 0 and "n: 200" in text
    # sampler and options from the command line; existing output is protected
    code, text, _ = run(capsys, "sample", ckpt, "--num", 20, "--sampler", "ddim", "--steps", 5,
                        "--option", "eta=1", "--out", out / "samples")
    assert "already exists" in one_line_error(code, _)
    code, text, _ = run(capsys, "sample", ckpt, "--num", 20, "--sampler", "ddim", "--steps", 5,
                        "--option", "eta=1", "--out", out / "samples", "--overwrite")
    assert code == 0
    assert json.loads((out / "samples" / "polydiff.json").read_text())["options"] == {"eta": 1}
    code, _, err = run(capsys, "sample", ckpt, "--num", 10, "--steps", 4, "--condition", "label=1",
                       "--guidance-scale", 2, "--out", tmp_path / "guided")  # an unconditional model: refused
    assert "unknown condition 'label'" in one_line_error(code, err) and not (tmp_path / "guided").exists()
    code, _, err = run(capsys, "sample", ckpt, "--num", 5, "--guidance-scale", 2, "--out", tmp_path / "s1")
    assert "this toy model takes none" in one_line_error(code, err)
    # inpainting from an observation file: the observed coordinate is reproduced, the other varies

    obs = tmp_path / "obs.npz"
    np.savez(obs, x=np.tile([[1.5, 0.0]], (12, 1)).astype("float32"), x_mask=np.tile([[True, False]], (12, 1)))
    code, text, _ = run(capsys, "sample", ckpt, "--num", 12, "--sampler", "ddpm", "--steps", 20,
                        "--observed", obs, "--out", tmp_path / "inpaint")
    assert code == 0
    pts = np.loadtxt(tmp_path / "inpaint" / "samples.csv", delimiter=",", skiprows=1)
    assert np.allclose(pts[:, 0], 1.5, atol=1e-4) and pts[:, 1].std() > 0
    # the same from the modality's own file format: a CSV row whose empty cells are generated
    (tmp_path / "obs.csv").write_text("x0,x1\n,-0.75\n")
    code, text, _ = run(capsys, "sample", ckpt, "--num", 12, "--sampler", "ddpm", "--steps", 20,
                        "--observed", tmp_path / "obs.csv", "--out", tmp_path / "inpaint_csv")
    pts = np.loadtxt(tmp_path / "inpaint_csv" / "samples.csv", delimiter=",", skiprows=1)
    assert code == 0 and np.allclose(pts[:, 1], -0.75, atol=1e-4) and pts[:, 0].std() > 0
    assert json.loads((tmp_path / "inpaint_csv" / "polydiff.json").read_text())["observed"].endswith("obs.csv")
    (tmp_path / "obs.csv").write_text("x0,x1\n1,2,3\n")
    code, _, err = run(capsys, "sample", ckpt, "--observed", tmp_path / "obs.csv", "--out", tmp_path / "x")
    assert "obs.csv:2: expected 2 cells, got 3" in one_line_error(code, err)
    # model-level evaluation options: the toy modality takes none, and says so for a checkpoint and for files
    code, _, err = run(capsys, "evaluate", ckpt, "--option", "depth=3")
    assert "the evaluation of modality 'toy' has no option depth; allowed: none" in one_line_error(code, err)
    code, _, err = run(capsys, "evaluate", tmp_path / "inpaint_csv", "--option", "depth=3")
    assert "the evaluation of modality 'toy' has no option depth; allowed: none" in one_line_error(code, err)
    code, text, _ = run(capsys, "sample", ckpt, "--num", 12, "--sampler", "ddpm", "--steps", 10, "--particles", 4,
                        "--observed", obs, "--out", tmp_path / "smc")
    assert code == 0
    assert json.loads((tmp_path / "smc" / "polydiff.json").read_text())["particles"] == 4
    # a few-step grid fitted to the checkpoint, then used for sampling; bad grid files are refused
    code, text, _ = run(capsys, "calibrate", ckpt, "--steps", 4, "--sampler", "unipc", "--pilot", 64,
                        "--out", tmp_path / "grid.json")
    assert code == 0 and "grid for unipc with 4 steps" in text
    g = json.loads((tmp_path / "grid.json").read_text())
    assert len(g["grid"]) == 5 and all(b < a for a, b in zip(g["grid"], g["grid"][1:], strict=False))
    code, text, _ = run(capsys, "sample", ckpt, "--num", 16, "--grid", tmp_path / "grid.json",
                        "--out", tmp_path / "fitted")
    meta = json.loads((tmp_path / "fitted" / "polydiff.json").read_text())
    assert code == 0 and meta["sampler"] == "unipc" and meta["steps"] == 4
    with pytest.warns(UserWarning, match=r"was fitted for unipc; --sampler ddim walks it as given"):
        code, _, _ = run(capsys, "sample", ckpt, "--num", 4, "--grid", tmp_path / "grid.json", "--sampler", "ddim",
                         "--out", tmp_path / "other_sampler")
    assert code == 0
    (tmp_path / "bare.json").write_text(json.dumps(g["grid"]))  # the list of times alone is a grid file too
    code, _, _ = run(capsys, "sample", ckpt, "--num", 16, "--grid", tmp_path / "bare.json", "--sampler", "unipc",
                     "--out", tmp_path / "bare")
    assert code == 0 and (tmp_path / "bare" / "samples.csv").read_bytes() == \
        (tmp_path / "fitted" / "samples.csv").read_bytes()
    gen = polydiff.load(ckpt)  # and from Python, a list of times
    assert np.array_equal(gen.generate(4, seed=0, sampler="unipc", grid=g["grid"]),
                          gen.generate(4, seed=0, sampler="unipc", grid=torch.tensor(g["grid"], dtype=torch.float64)))
    with pytest.raises(ValueError, match="a user grid must be a list of times"):
        gen.generate(2, seed=0, grid=[1.0, "x"])
    (tmp_path / "bad.json").write_text(json.dumps({"grid": [1.0, 0.5, 0.7]}))
    code, _, err = run(capsys, "sample", ckpt, "--num", 5, "--grid", tmp_path / "bad.json", "--out", tmp_path / "s4")
    assert "bad.json: field 'grid' must be strictly decreasing" in one_line_error(code, err)
    (tmp_path / "far.json").write_text(json.dumps({"grid": [5.0, 0.5, 0.001]}))
    code, _, err = run(capsys, "sample", ckpt, "--num", 5, "--grid", tmp_path / "far.json", "--out", tmp_path / "s5")
    assert "far.json: a user grid must lie in the schedule's time range" in one_line_error(code, err)
    code, _, err = run(capsys, "calibrate", ckpt, "--steps", 4, "--sampler", "ddpm", "--out", tmp_path / "g2.json")
    assert "deterministic" in one_line_error(code, err) and not (tmp_path / "g2.json").exists()
    code, _, err = run(capsys, "sample", ckpt, "--num", 5, "--option", "etaa=1", "--out", tmp_path / "s2")
    assert "has no option etaa" in one_line_error(code, err)
    code, _, err = run(capsys, "sample", ckpt, "--num", 5, "--sampler", "eulr", "--out", tmp_path / "s3")
    assert "unknown sampler 'eulr'" in one_line_error(code, err)
    assert not (tmp_path / "s3").exists()


def test_bad_recipes_exit_2_with_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("modality: toy\ntrain:\n  lrr: 0.1\n")
    code, _, err = run(capsys, "train", bad, "--out", tmp_path / "o")
    line = one_line_error(code, err)
    assert f"{bad}: unknown key 'train.lrr' (did you mean 'lr'?); allowed: max_steps" in line
    code, _, err = run(capsys, "train", GMM, "--set", "train.lr=abc", "--out", tmp_path / "o")
    assert "gmm.yaml (with --set): train.lr: expected a number, got 'abc'" in one_line_error(code, err)
    code, _, err = run(capsys, "train", GMM, "--set", "sample.sampler=nope", "--out", tmp_path / "o")
    assert "sample.sampler: unknown sampler 'nope'" in one_line_error(code, err)
    code, _, err = run(capsys, "train", GMM, "--set", "data.name=mnist", "--out", tmp_path / "o")
    assert "data.name: modality 'toy' has no dataset 'mnist'; allowed: gmm, csv" in one_line_error(code, err)
    code, _, err = run(capsys, "train", GMM, "--set", "modality=galaxies", "--out", tmp_path / "o")
    assert "no polydiff modality 'galaxies' is installed" in one_line_error(code, err)
    code, _, err = run(capsys, "train", GMM, "--set", "train.accelerator=tpu", "--out", tmp_path / "o",
                       "--set", "train.progress=false")
    assert "train:" in one_line_error(code, err)
    code, _, err = run(capsys, "train", tmp_path / "none.yaml")
    assert "no such config file" in one_line_error(code, err)
    assert not (tmp_path / "o" / "checkpoints").exists()
    with pytest.raises(ConfigError):  # --debug: the traceback instead of one line
        cli.main(["train", str(bad), "--debug"])


def test_missing_dependency_is_one_line(monkeypatch, capsys):
    def needs_rdkit(*args, **kwargs):
        raise ModuleNotFoundError("No module named 'rdkit'", name="rdkit")

    monkeypatch.setattr(cli, "parse_command", needs_rdkit)
    code, _, err = run(capsys, "sample", "any.ckpt")
    line = one_line_error(code, err)
    assert "No module named 'rdkit' (a missing dependency: install it" in line and "Traceback" not in err
    with pytest.raises(ModuleNotFoundError):  # --debug: the traceback
        cli.main(["sample", "any.ckpt", "--debug"])


def test_bad_files_exit_2(tmp_path, capsys):
    code, _, err = run(capsys, "sample", tmp_path / "none.ckpt", "--num", 3)
    assert "no such checkpoint file" in one_line_error(code, err)
    fake = tmp_path / "fake.ckpt"
    fake.write_text("not a checkpoint")
    code, _, err = run(capsys, "evaluate", fake)
    assert "fake.ckpt: not a readable checkpoint" in one_line_error(code, err)
    code, _, err = run(capsys, "evaluate", tmp_path)
    assert "polydiff.json" in one_line_error(code, err)
    code, _, err = run(capsys, "evaluate", tmp_path / "nothing")
    assert "no such checkpoint, file or folder" in one_line_error(code, err)
    with pytest.raises(SystemExit) as exit_:
        cli.main([])  # argparse: usage and status 2
    assert exit_.value.code == 2


def test_a_fresh_process_lists_lightly_and_exits_2_without_traceback(tmp_path):
    """In a new interpreter: `modalities` imports no training machinery (Lightning), and a bad
    recipe gives status 2 and one line on stderr."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("modality: toy\ntrain: {max_steps: many}\n")
    script = ("import sys; from polydiff.cli import main; main(['modalities']); "
              "print('LIGHTNING', 'lightning' in sys.modules); sys.exit(main(['train', sys.argv[1]]))")
    proc = subprocess.run([sys.executable, "-c", script, str(bad)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert "toy  (polydiff.toy:ToyModality)" in proc.stdout and "LIGHTNING False" in proc.stdout
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"polydiff: error: {bad}: train.max_steps: expected an integer, got 'many'"


def test_modalities_lists_plugins_and_reports_broken_ones(capsys, monkeypatch):
    code, out, _ = run(capsys, "modalities")
    assert code == 0 and "toy  (polydiff.toy:ToyModality)" in out
    assert "datasets: gmm, csv" in out and "networks: mlp" in out and "toy:gmm" in out
    # a plugin that fails to import is reported, the others are still listed
    real = cli.available_modalities()
    fake = types.SimpleNamespace(name="broken", target="broken_pkg:Modality", distribution=None)
    monkeypatch.setattr(cli, "available_modalities", lambda: {**real, "broken": fake})
    real_load = cli.load_modality

    def load(name):
        if name == "broken":
            raise ModuleNotFoundError("No module named 'broken_pkg'")
        return real_load(name)

    monkeypatch.setattr(cli, "load_modality", load)
    monkeypatch.setattr(cli, "plugins_fingerprint", lambda: "with a broken plugin")  # not the cached listing
    code, out, _ = run(capsys, "modalities", "--json")
    data = json.loads(out)
    assert code == 0 and "broken_pkg" in data["broken"]["error"]
    assert data["toy"]["datasets"] == ["gmm", "csv", "rotations"]


def test_samplers_listing(capsys):
    code, out, _ = run(capsys, "samplers")
    assert code == 0
    line = next(ln for ln in out.splitlines() if ln.startswith("heun "))
    assert "gaussian" in line and " 2 " in line and "ODE" in line
    assert any(ln.startswith("ddim ") and "eta=0.0" in ln for ln in out.splitlines())
    code, out, _ = run(capsys, "samplers", "--json")
    rows = {r["name"]: r for r in json.loads(out)}
    assert rows["ddpm"]["stochastic"] and rows["ancestral"]["kind"] == "categorical"


# ------------------------------------------------------------------------------ a quick start
def test_help_and_cached_listings_do_not_import_torch(tmp_path):
    """`polydiff --help` never imports torch; `modalities` and `samplers` import every plugin
    once, then answer from the cache (the same text) without torch."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "POLYDIFF_CACHE_DIR": str(tmp_path / "cache")}
    script = ("import sys; from polydiff.cli import main\n"
              "for argv in sys.argv[1:]:\n"
              "    try:\n"
              "        main(argv.split())\n"
              "    except SystemExit:\n"
              "        pass\n"
              "    print('TORCH', 'torch' in sys.modules, flush=True)\n")

    def run_(*argvs):
        proc = subprocess.run([sys.executable, "-c", script, *argvs], capture_output=True, text=True, timeout=120,
                              env=env)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    assert run_("--help").endswith("TORCH False\n")
    first = run_("modalities", "samplers")
    assert "TORCH True" in first and "toy  (polydiff.toy:ToyModality)" in first and "dpm++2m" in first
    second = run_("modalities", "samplers")
    assert "TORCH True" not in second
    assert second.replace("TORCH False", "") == first.replace("TORCH True", "").replace("TORCH False", "")


def test_listing_cache_is_keyed_by_the_installed_plugins(tmp_path, monkeypatch, capsys):
    from polydiff import registry

    monkeypatch.setenv("POLYDIFF_CACHE_DIR", str(tmp_path))
    fake = {"fake": {"target": "fake_pkg:Fake", "distribution": None, "datasets": ["d"], "networks": ["n"]}}
    (tmp_path / "modalities.json").write_text(json.dumps({"key": "k1", "value": fake}))
    monkeypatch.setattr(cli, "plugins_fingerprint", lambda: "k1")
    assert run(capsys, "modalities")[1].startswith("fake  (fake_pkg:Fake)")
    monkeypatch.setattr(cli, "plugins_fingerprint", lambda: "k2")  # a plugin changed: listed afresh
    out = run(capsys, "modalities")[1]
    assert "fake" not in out and "toy  (polydiff.toy:ToyModality)" in out
    assert json.loads((tmp_path / "modalities.json").read_text())["key"] == "k2"
    (tmp_path / "modalities.json").write_text("{not json")  # a damaged cache is rebuilt
    assert run(capsys, "modalities")[1] == out
    # the fingerprint changes with the entry points (and is stable otherwise)
    assert registry.plugins_fingerprint() == registry.plugins_fingerprint()
    before = registry.plugins_fingerprint()
    eps = registry._entry_points()
    monkeypatch.setattr(registry, "_entry_points", lambda: {**eps, "extra": eps["toy"]})
    assert registry.plugins_fingerprint() != before


def test_grid_files_with_a_byte_order_mark_read_and_bad_fields_are_named(tmp_path):
    from polydiff.cli import read_grid

    bom = tmp_path / "bom.json"
    bom.write_bytes(b"\xef\xbb\xbf" + json.dumps({"grid": [1.0, 0.5, 0.001], "sampler": "unipc"}).encode())
    assert read_grid(bom) == {"grid": [1.0, 0.5, 0.001], "sampler": "unipc"}  # Windows editors write the BOM
    (tmp_path / "s.json").write_text(json.dumps({"grid": [1.0, 0.5], "sampler": 5}))
    with pytest.raises(ValueError, match=r"s\.json: field 'sampler' must be a sampler's name, got 5"):
        read_grid(tmp_path / "s.json")
    (tmp_path / "latin.json").write_bytes(b'{"grid": [1.0, 0.5], "note": "caf\xe9"}')
    with pytest.raises(ValueError, match=r"latin\.json:1: not UTF-8 text"):
        read_grid(tmp_path / "latin.json")
    with pytest.raises(FileNotFoundError, match=r"missing\.json: no such grid file"):
        read_grid(tmp_path / "missing.json")


def test_a_new_users_wrong_paths_get_the_fix(tmp_path, capsys):
    """From a walkthrough: each mistake once pointed the wrong way."""
    out = tmp_path / "run"
    code, _, _ = run(capsys, "train", GMM, "--out", out, "--set", "train.max_steps=2", *FAST)
    assert code == 0
    code, _, _ = run(capsys, "sample", out / "checkpoints" / "last.ckpt", "--num", 6, "--steps", 2)
    assert code == 0 and (out / "samples" / "samples.csv").is_file()
    # the recipe passed as a checkpoint: said "samples already exists ... --overwrite" first
    code, _, err = run(capsys, "sample", out / "config.yaml", "--num", 4)
    assert "config.yaml: not a readable checkpoint" in one_line_error(code, err)
    # an .npz passed as a checkpoint: torch's C++ assertion text leaked
    np.savez(tmp_path / "eps.npz", a=np.zeros(3))
    code, _, err = run(capsys, "sample", tmp_path / "eps.npz", "--num", 2)
    msg = one_line_error(code, err)
    assert "eps.npz: not a readable checkpoint (a zip archive without torch's data.pkl" in msg and "enforce" not in msg
    # a run folder to evaluate: "--modality" did not help; name its checkpoint and samples
    code, _, err = run(capsys, "evaluate", out)
    msg = one_line_error(code, err)
    assert "a training run's folder" in msg and str(out / "checkpoints" / "last.ckpt") in msg, msg
    code, _, err = run(capsys, "evaluate", out, "--num", 3)
    assert f"such as {out / 'checkpoints' / 'last.ckpt'}); {out} is not one" in one_line_error(code, err)
    # one file of a samples folder: the folder's polydiff.json names the modality
    code, text, _ = run(capsys, "evaluate", out / "samples" / "samples.csv")
    assert code == 0 and "n: 6" in text
    # a folder of the user's own file under another name is read; two are named
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "pts.csv").write_bytes((out / "samples" / "samples.csv").read_bytes())
    code, text, _ = run(capsys, "evaluate", mine, "--modality", "toy")
    assert code == 0 and "n: 6" in text
    (mine / "more.csv").write_bytes((mine / "pts.csv").read_bytes())
    code, _, err = run(capsys, "evaluate", mine, "--modality", "toy")
    assert "holds 2: more.csv, pts.csv; pass the file itself" in one_line_error(code, err)
    # training a finished run again said "trained to step 2" as if it had
    code, text, _ = run(capsys, "train", GMM, "--out", out, "--set", "train.max_steps=2", *FAST)
    assert code == 0 and "at train.max_steps (2) already, so nothing is trained; raise train.max_steps" in text
    # a shipped recipe's bare name
    code, _, err = run(capsys, "train", "gmm")
    assert "gmm: no such config file; did you mean toy:gmm?" in one_line_error(code, err)
