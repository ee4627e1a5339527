"""bench/proteins.py's speed section against FrameFlow's own code: ours is timed (the recipe's
blocks and the equal-parameter variant), a missing FrameFlow reference is reported as such (never
a made-up ratio), and an unknown part is an error."""

from __future__ import annotations

import sys

import pytest


def test_speed_part_times_ours_and_says_when_the_reference_is_missing(tmp_path, monkeypatch, capsys, bench_module):
    monkeypatch.setenv("FRAMEFLOW_VENV", str(tmp_path / "no_venv"))
    monkeypatch.setenv("FRAMEFLOW_REF", str(tmp_path / "no_checkout"))
    bench = bench_module("proteins")
    budget = {"rounds": 2, "steps": 1, "warmup": 1, "batch": 2, "length": 20, "num": 1, "sample_repeats": 1,
              "threads": 1, "equal_params_blocks": 2}
    out = bench.speed(budget, tmp_path)
    assert out["frameflow"] == [] and "missing" in out["frameflow_missing"]
    assert len(out["ours"]) == 1 and len(out["ours_equal_params"]) == 1  # stops after the first round
    recipe, deeper = out["ours"][0], out["ours_equal_params"][0]
    assert recipe["blocks"] == 4 and deeper["blocks"] == 2 and deeper["params"] < recipe["params"]
    assert recipe["train_step_s"] > 0 and recipe["sample_s"] > 0 and len(recipe["train_step_s_all"]) == 1
    assert all(v["frameflow"] is None and v["ratio"] is None and v["at_most"] is None
               for v in out["summary"].values())
    text = "\n".join(bench.speed_section({**out, "budget": budget, "command": "c"}))
    assert "## Speed against FrameFlow's own code" in text and "Not measured: FrameFlow's reference is missing" in text

    with pytest.raises(SystemExit):  # a misspelt part is an error, not a silently empty run
        bench.main(["--quick", "--parts", "sped"])
    capsys.readouterr()


def test_frameflow_stand_ins_only_name_what_is_not_called(monkeypatch, bench_module):
    monkeypatch.delitem(sys.modules, "torch_scatter", raising=False)
    ref = bench_module("frameflow_reference")
    ref.install_stand_ins()
    try:
        import torch_scatter

        with pytest.raises(NotImplementedError, match="does not call it"):
            torch_scatter.scatter_add(None, None)
    finally:
        sys.modules.pop("torch_scatter", None)
