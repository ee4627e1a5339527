"""Fuzzing the core's own inputs: checkpoints, recipes, grid files, samples folders (with their
``polydiff.json``) and the command line's flags. Mutated files end in a typed error naming the
file; random flag values end in exit status 2 with one line naming the flag (or run), never in
a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import polydiff
from polydiff import cli
from polydiff.config import ConfigError, load_config
from polydiff.errors import CheckpointError
from polydiff.fuzz import csv_records, fuzz_reader

pytestmark = pytest.mark.usefixtures("one_thread")

RECIPE = {
    "modality": "toy",
    "data": {"name": "gmm", "k": 4, "dim": 2, "n": 256},
    "model": {"name": "mlp", "hidden": 8, "depth": 1},
    "train": {"max_steps": 2, "batch_size": 16, "accelerator": "cpu", "devices": 1, "threads": 1,
              "checkpoint_every": 2, "progress": False, "logger": "none"},
    "sample": {"steps": 2, "num": 3},
}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fuzz-run") / "run"
    polydiff.train(RECIPE, out, fresh=True, verbose=False)
    return out


def test_fuzz_checkpoints(run_dir, tmp_path):
    """A damaged checkpoint is a CheckpointError naming it. (A flipped byte inside the weights
    can still load: only the zip structure and the pickle are checked.)"""
    valid = {"last.ckpt": (run_dir / "checkpoints" / "last.ckpt").read_bytes()}
    print(fuzz_reader(lambda p: polydiff.load(p), valid, tmp_path, examples=40, expected=(CheckpointError,),
                      count=lambda g: 1, records=lambda n, d: None, name="polydiff.load(checkpoint)",
                      tokens=(b"PK\x03\x04", b"\x80\x02", b"polydiff")))


def test_fuzz_recipes(run_dir, tmp_path):
    """Mutated recipes (YAML) are one ConfigError naming the file, or a valid recipe."""
    valid = {"recipe.yaml": (run_dir / "config.yaml").read_bytes()}
    print(fuzz_reader(load_config, valid, tmp_path, examples=120, expected=(ConfigError,), count=lambda c: 1,
                      records=lambda n, d: None, name="load_config(recipe)",
                      tokens=(b": ", b"- ", b"{", b"}", b"[", b"]", b"null", b"true", b"!!python/object", b"&a",
                              b"*a", b"max_steps: -1\n", b"  lr: abc\n", b"sampler: nope\n")))


def test_fuzz_grid_files(tmp_path):
    valid = {"grid.json": json.dumps({"grid": [1.0, 0.5, 0.1, 0.001], "steps": 3}).encode()}
    print(fuzz_reader(cli.read_grid, valid, tmp_path, examples=80, expected=(ValueError,),
                      count=lambda g: 1, records=lambda n, d: None, name="read_grid"))


def test_fuzz_samples_folders(run_dir, tmp_path):
    """A samples folder written by `polydiff sample`, its data file or its polydiff.json
    mutated: evaluating it is a clear error naming the file, or a count that matches."""
    out = tmp_path / "samples"
    assert cli.main(["sample", str(run_dir / "checkpoints" / "last.ckpt"), "--out", str(out), "--quiet"]) == 0
    valid = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.suffix in (".csv", ".json")}
    assert set(valid) >= {"samples.csv", "polydiff.json"}

    def rows(name: str, data: bytes) -> int | None:
        return csv_records(name, data) if name == "samples.csv" else None

    print(fuzz_reader(lambda p: polydiff.generator.evaluate_samples(p), valid, tmp_path / "fuzz", folder=True,
                      examples=60, expected=(ValueError, OSError, KeyError), count=lambda ev: ev.num,
                      records=rows, name="evaluate_samples(samples folder)", timeout=20.0))


FLAGS = {
    "--num": st.sampled_from(["-1", "0", "1", "3", "2.5", "abc", "", "1e3", "nan"]),
    "--steps": st.sampled_from(["-3", "0", "1", "2", "x", "inf"]),
    "--seed": st.sampled_from(["-1", "0", "7", "1.5", "seed"]),
    "--batch-size": st.sampled_from(["-2", "0", "1", "2", "many"]),
    "--threads": st.sampled_from(["-2", "0", "1", "two"]),
    "--sampler": st.sampled_from(["euler", "heun", "dpm++2m", "nope", "", "ancestral"]),
    "--option": st.sampled_from(["eta=0.5", "eta=abc", "snr=1", "=", "noequals", "churn=-1"]),
    "--condition": st.sampled_from(["label=1", "label=abc", "nope=2", "label"]),
    "--guidance-scale": st.sampled_from(["-1", "0", "1.5", "nan", "w"]),
    "--particles": st.sampled_from(["0", "2", "-4", "p"]),
}


@settings(max_examples=60, deadline=None, database=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
@given(flags=st.dictionaries(st.sampled_from(sorted(FLAGS)), st.none(), max_size=4).flatmap(
    lambda keys: st.fixed_dictionaries({k: FLAGS[k] for k in keys})))
def test_fuzz_sample_flags(flags, run_dir, tmp_path_factory):
    """Random flag values for `polydiff sample`: it writes the samples (status 0) or prints one
    line naming a flag or an option (status 2) -- never a traceback, never a silent default."""
    import contextlib
    import io

    out = tmp_path_factory.mktemp("flags") / "samples"
    argv = ["sample", str(run_dir / "checkpoints" / "last.ckpt"), "--out", str(out), "--quiet"]
    for k, v in flags.items():
        argv += [k, v] if not v.startswith("-") else [f"{k}={v}"]
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = cli.main(argv)
        except SystemExit as exc:  # argparse's own errors
            code = exc.code
    lines = err.getvalue().strip().splitlines()
    assert code in (0, 2), (argv, code, err.getvalue())
    if code == 2:
        assert lines and lines[-1].startswith("polydiff") and "error" in lines[-1], (argv, err.getvalue())
        assert "Traceback" not in err.getvalue(), (argv, err.getvalue())
        assert not out.exists()
    else:
        meta = json.loads((out / "polydiff.json").read_text())
        assert meta["num"] == int(flags.get("--num", RECIPE["sample"]["num"]))
        if "--steps" in flags:
            assert meta["steps"] == int(flags["--steps"])
