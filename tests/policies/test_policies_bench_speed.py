"""bench/policies.py's speed part: both of our shapes are timed, and a missing BESO reference is
reported as such (never a made-up ratio)."""

from __future__ import annotations


def test_speed_part_times_ours_and_says_when_the_beso_reference_is_missing(tmp_path, monkeypatch, bench_module):
    monkeypatch.setenv("BESO_VENV", str(tmp_path / "no_venv"))
    monkeypatch.setenv("BESO_REF", str(tmp_path / "no_checkout"))
    bench = bench_module("policies")

    res = bench.speed(True, 1, tmp_path)
    assert res["beso"] == [] and "missing" in res["beso_missing"]
    same, recipe = res["ours_same"][0], res["ours_recipe"][0]
    assert same["horizon"] == 5 and same["obs_steps"] == 5 and same["actions_per_decision"] == 1
    assert recipe["actions_per_decision"] > 1 and recipe["tokens"] != same["tokens"]
    for row in (same, recipe):
        assert row["train_step_s"] > 0 and row["decision_s"] > 0 and row["nfe_per_decision"] == 3
    assert all("ratio" not in v for v in res["summary"].values()) and "beso" not in res["summary"]
    text = "\n".join(bench._speed_section(res, {"command": "c", "commit": "0123456789", "date": "d"}))
    assert "Not measured: BESO's reference is missing" in text
