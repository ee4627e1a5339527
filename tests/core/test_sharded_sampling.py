"""Sharded sampling: ``polydiff sample --processes 2`` (two CPU processes, gloo) writes the
same bytes as one process, resumes an interrupted run whose parts have gaps, and fails on
every rank, with one clear error, when rank 0 cannot open the output."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import polydiff
from polydiff import generator as G
from polydiff.cli import _without
from polydiff.distributed import world

pytestmark = pytest.mark.usefixtures("one_thread")

RECIPE = {
    "modality": "toy",
    "data": {"name": "gmm", "k": 4, "dim": 2},
    "model": {"name": "mlp", "hidden": 16, "depth": 1},
    "train": {"max_steps": 4, "batch_size": 32, "accelerator": "cpu", "devices": 1, "threads": 1,
              "checkpoint_every": 4, "progress": False, "logger": "none"},
    "sample": {"steps": 4, "num": 13},
}
POLYDIFF = Path(sys.executable).parent / "polydiff"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sharded") / "run"
    polydiff.train(RECIPE, out, fresh=True, verbose=False)
    return out / "checkpoints" / "last.ckpt"


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def sample(ckpt: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [str(POLYDIFF), "sample", str(ckpt), "--out", str(out), "--seed", "5", "--batch-size", "3",
           "--threads", "1", "--quiet", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def _interrupted_at_write(ckpt: Path, monkeypatch: pytest.MonkeyPatch, call: int) -> G.Generator:
    """The checkpoint's generator, whose ``call``-th write of a chunk raises KeyboardInterrupt (a Ctrl-C)."""
    gen = polydiff.load(ckpt)
    real_write, calls = gen.modality.write, []

    def failing_write(objects, folder):
        calls.append(1)
        if len(calls) == call:
            raise KeyboardInterrupt
        return real_write(objects, folder)

    monkeypatch.setattr(gen.modality, "write", failing_write)
    return gen


def test_two_processes_write_the_bytes_of_one(ckpt, tmp_path):
    one = sample(ckpt, tmp_path / "one")
    two = sample(ckpt, tmp_path / "two", "--processes", "2")
    assert one.returncode == 0, one.stderr
    assert two.returncode == 0, two.stderr
    assert two.stdout.count("wrote 13 samples") == 1  # rank 0 reports, once
    a, b = snapshot(tmp_path / "one"), snapshot(tmp_path / "two")
    assert sorted(a) == sorted(b) and a == b
    assert not (tmp_path / "two.partial").exists()
    # a different seed gives different samples, so the equality above could fail
    three = sample(ckpt, tmp_path / "three", "--processes", "2", "--seed", "6")
    assert three.returncode == 0, three.stderr
    assert snapshot(tmp_path / "three")["samples.csv"] != a["samples.csv"]


def test_interrupted_run_with_gaps_resumes_sharded(ckpt, tmp_path, monkeypatch):
    whole = sample(ckpt, tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr
    gen = _interrupted_at_write(ckpt, monkeypatch, 4)
    with pytest.raises(KeyboardInterrupt):
        gen.generate_to(tmp_path / "cut", 13, seed=5, batch_size=3, progress=False)
    partial = tmp_path / "cut.partial"
    parts = sorted(p.name for p in partial.iterdir() if p.name.startswith("part-"))
    assert parts == ["part-000000000000-000000000003", "part-000000000003-000000000006",
                     "part-000000000006-000000000009"]
    shutil.rmtree(partial / parts[1])  # a gap, as a sharded run leaves when one rank lags
    stored = G._read_partial(partial)
    assert [lo for lo, _, _ in G._parts(partial, stored)] == [0, 6]
    resumed = sample(ckpt, tmp_path / "cut", "--processes", "2", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "(6 from the interrupted run, 7 new)" in resumed.stdout
    assert snapshot(tmp_path / "cut") == snapshot(tmp_path / "whole")


def test_a_part_off_the_chunk_grid_is_refused(ckpt, tmp_path):
    gen = polydiff.load(ckpt)
    out = tmp_path / "s"
    gen.generate_to(out, 6, seed=1, batch_size=3, progress=False)
    partial = tmp_path / "s.partial"
    partial.mkdir()
    (partial / G.PARTIAL_FILE).write_text('{"format": 1, "num": 6, "request": {"num": 6, "batch_size": 3}}')
    (partial / "part-000000000001-000000000004").mkdir()
    with pytest.raises(ValueError, match="not a chunk of 3 of samples"):
        G._parts(partial, G._read_partial(partial))


def test_rank0_failure_is_one_error_on_every_rank(ckpt, tmp_path):
    busy = tmp_path / "mine"
    busy.mkdir()
    (busy / "notes.txt").write_text("keep me")
    got = sample(ckpt, busy, "--processes", "2", "--overwrite")
    assert got.returncode == 2
    lines = [ln for ln in got.stderr.strip().splitlines() if ln.startswith("polydiff: error:")]
    assert lines and all("mine" in ln for ln in lines), got.stderr
    assert any("rank 0" in ln for ln in lines) or len(lines) == 1
    assert (busy / "notes.txt").read_text() == "keep me"


def test_helpers_without_a_group():
    assert world() == (0, 1)
    assert _without(["sample", "c", "--processes", "2", "--num", "3"], "--processes") == ["sample", "c", "--num", "3"]
    assert _without(["--processes=2", "x"], "--processes") == ["x"]


def test_resume_alone_takes_the_interrupted_runs_sampler_and_steps(ckpt, tmp_path, monkeypatch):
    """`--resume` with no other flag was refused ("settings.steps: 20 (now 4)"): only num, seed
    and batch size came from the interrupted run."""
    whole = sample(ckpt, tmp_path / "whole", "--num", "7", "--sampler", "ddim", "--steps", "4")
    assert whole.returncode == 0, whole.stderr
    gen = _interrupted_at_write(ckpt, monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        gen.generate_to(tmp_path / "cut", 7, seed=5, batch_size=3, sampler="ddim", steps=4, progress=False)
    cmd = [str(POLYDIFF), "sample", str(ckpt), "--out", str(tmp_path / "cut"), "--resume", "--threads", "1", "--quiet"]
    resumed = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert snapshot(tmp_path / "cut")["samples.csv"] == snapshot(tmp_path / "whole")["samples.csv"]
