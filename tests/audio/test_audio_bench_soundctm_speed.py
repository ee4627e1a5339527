"""bench/audio.py's soundctm_speed part: both of our sizes are timed, and a missing SoundCTM
reference is reported as such (never a made-up ratio)."""

from __future__ import annotations


def test_soundctm_speed_times_ours_and_says_when_the_reference_is_missing(tmp_path, monkeypatch, bench_module):
    monkeypatch.setenv("SOUNDCTM_VENV", str(tmp_path / "no_venv"))
    monkeypatch.setenv("SOUNDCTM_REF", str(tmp_path / "no_checkout"))
    bench = bench_module("audio")
    b = {**bench.SOUNDCTM_SPEED["quick"], "n": 32}

    res = bench.soundctm_speed(b, tmp_path / "work")
    assert res["soundctm"] == [] and "SoundCTM's reference is missing" in res["soundctm_missing"]
    recipe, equal = res["ours"][0], res["ours_equal_params"][0]
    assert recipe["channels"] == [64, 128, 128] and equal["channels"] == bench.EQUAL_PARAMS
    assert equal["params"] > 4 * recipe["params"]
    for row in (recipe, equal):
        assert row["train_step_s"] > 0 and len(row["train_step_s_all"]) == b["steps"]
        for k in (1, 2):
            assert row[f"sample_{k}_s"] > 0 and row[f"sample_{k}_batched_s"] > 0
            assert row[f"sample_{k}_nfe_per_sound"] == k and row[f"sample_{k}_batched_nfe_per_sound"] == k
        assert row["sample_default_s"] > 0
    assert all(v["soundctm"] is None and v["ratio"] is None for v in res["summary"].values())
    env = {"commit": "0123456789", "date": "d", "cpus": 2}
    text = "\n".join(bench.soundctm_speed_section({**res, "budget": b, "environment": env, "command": "c"}))
    assert "## Speed against SoundCTM's own code" in text
    assert "Not measured: SoundCTM's reference is missing" in text
