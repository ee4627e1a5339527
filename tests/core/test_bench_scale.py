"""bench/scale.py: the ``train_compile`` part times training eager and compiled per recipe, and
the report renders it while keeping the published parts that were not rerun."""

from __future__ import annotations

import argparse
import json

import pytest

pytestmark = pytest.mark.usefixtures("one_thread")


def test_timed_training_times_each_step(tmp_path, bench_module, monkeypatch):
    scale = bench_module("scale")
    monkeypatch.setattr(scale, "TRAIN_COMPILE_STEPS", {"warmup": 1, "timed": 3, "rounds": 1})
    cfg = scale.recipe("toy", "gmm", train={"batch_size": 16})
    row = scale._timed_training(cfg, tmp_path / "run", 1, False)
    assert len(row["steps_s"]) == 1 + 3  # warm-up and timed steps; the checkpoint's step is not timed
    assert row["first_s"] == row["steps_s"][0] and 0 < row["step_s"] <= max(row["steps_s"][1:])


def test_report_renders_train_compile_and_keeps_published_parts(tmp_path, bench_module, monkeypatch):
    scale = bench_module("scale")
    root, runs = tmp_path / "root", tmp_path / "runs"
    (root / "bench" / "results").mkdir(parents=True)
    runs.mkdir()
    shard = {"num": 100, "batch": 50, "steps": 5, "identical": True,
             "rows": [{"processes": 1, "threads_each": 2, "wall_s": 1.5, "samples_per_s": 66.0}]}
    (root / "bench" / "results" / "scale.json").write_text(json.dumps({"environment": {}, "shard": shard}))
    compiled = {"threads": 1, "warmup": 3, "timed": 10, "rounds": 2, "models": {
        "toy": {"recipe": "toy:gmm", "eager_step_s": 0.02, "compiled_step_s": 0.01, "speedup": 2.0, "compile_s": 5.0,
                "break_even_steps": 500.0},
        "timeseries": {"recipe": "timeseries:x", "eager_step_s": 0.1, "compiled_step_s": 0.12, "speedup": 0.83,
                       "compile_s": 40.0, "break_even_steps": None},
        "audio": {"recipe": "audio:y", "rows": {}, "error": "BackendCompilerFailed: boom"}}}
    (runs / "train_compile.json").write_text(json.dumps(compiled))
    written = {}
    monkeypatch.setattr(scale, "ROOT", root)
    monkeypatch.setattr(scale, "publish", lambda stem, res, md: written.update(stem=stem, res=res, md=md))
    scale.part_report(argparse.Namespace(runs=runs))
    md = written["md"]
    assert "## Sharded sampling" in md and written["res"]["shard"] == shard  # kept from the published results
    assert "## Training compiled" in md
    assert "| toy:gmm | 0.02 | 0.01 | 2x | 5 | 500 |" in md
    assert "| timeseries:x | 0.1 | 0.12 | 0.83x | 40 | never |" in md
    assert "| audio:y | error: BackendCompilerFailed: boom |" in md
