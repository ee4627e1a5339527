"""bench/timeseries.py's pacodi_speed section: our DDPM and SDE PaCoDi are timed, and a missing
PaCoDi reference is reported as such (never a made-up ratio)."""

from __future__ import annotations


def test_pacodi_speed_times_ours_and_says_when_the_reference_is_missing(tmp_path, monkeypatch, bench_module):
    monkeypatch.setenv("PACODI_VENV", str(tmp_path / "no_venv"))
    monkeypatch.setenv("PACODI_REF", str(tmp_path / "no_checkout"))
    bench = bench_module("timeseries")
    b = bench.BUDGETS["quick"]["pacodi_speed"]

    res = bench.pacodi_speed(b, tmp_path)
    assert res["pacodi"] == [] and "missing" in res["pacodi_missing"] and len(res["ours"]) == 1
    ours = res["ours"][0]
    assert len(ours["train_step_s_all"]) == len(ours["sde_train_step_s_all"]) == b["steps"]
    for key in ("train_step_s", "sde_train_step_s", "sample_s", "sample_sde_s"):
        assert ours[key] > 0
    assert (ours["sample_sampler"], ours["sample_steps"]) == ("ddpm", res["size"]["ddpm_steps"])
    assert (ours["sample_sde_sampler"], ours["sample_sde_steps"]) == ("euler_maruyama", res["size"]["sde_steps"])
    assert ours["model"]["hidden"] == res["size"]["hidden"] and ours["params"] > 0
    assert set(res["summary"]) == set(bench.PACODI_ROWS)
    assert all(v["pacodi"] is None and v["ratio"] is None for v in res["summary"].values())
    section = {**res, "budget": b, "command": "c", "environment": {"cpus": 2, "load_average_at_start": 0.0}}
    text = "\n".join(bench.pacodi_speed_section(section))
    assert "## Speed against PaCoDi's own code" in text and "Not measured: PaCoDi's reference is missing" in text
    assert res["ours_equal_params"] == [] and "summary_equal_params" not in res  # no count to match


def test_equal_parameter_width_is_the_smallest_with_at_least_the_references_count(bench_module):
    bench = bench_module("timeseries")
    hidden, count = bench._pacodi_equal_params_width(275_402)  # PaCoDi at our recipe's widths
    smaller, below = bench._pacodi_equal_params_width(1)
    assert count >= 275_402 and hidden % 4 == 0 and hidden < 64  # ours at width 64 has 327,050
    assert smaller == 4 and below < count
    assert bench._pacodi_equal_params_width(count) == (hidden, count)
    assert bench._pacodi_equal_params_width(count + 1)[0] > hidden
