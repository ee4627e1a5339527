"""bench/timeseries.py's speed section on its own: ours is timed, a missing TSDiff reference is
reported as such (never a made-up ratio), and the sections it did not run are kept from the
previous report."""

from __future__ import annotations

import json

import pytest


def test_speed_section_alone_keeps_the_previous_report_and_says_when_the_reference_is_missing(tmp_path, monkeypatch,
                                                                                              bench_module):
    monkeypatch.setenv("TSDIFF_VENV", str(tmp_path / "no_venv"))
    monkeypatch.setenv("TSDIFF_REF", str(tmp_path / "no_checkout"))
    bench = bench_module("timeseries")
    budget = {"rounds": 2, "steps": 1, "warmup": 1, "batch": 4, "num": 2, "series": 1, "num_samples": 2,
              "sample_repeats": 1, "threads": 1}
    monkeypatch.setitem(bench.BUDGETS["quick"], "speed", budget)
    out, md = tmp_path / "ts.json", tmp_path / "ts.md"
    previous = {"command": "python bench/timeseries.py --quick", "mode": "quick", "budgets": {},
                "environment": {"platform": "p", "torch": "t", "cpus": 2, "jobs": 1, "threads": 1,
                                "load_average_at_start": 0.0},
                "total_seconds": 60.0, "forecasting": [], "generation": []}
    out.write_text(json.dumps(previous))

    skip = "forecasting,generation,pacodi_speed"
    assert bench.main(["--quick", "--skip", skip, "--json", str(out), "--md", str(md)]) == 0
    res = json.loads(out.read_text())
    assert res["command"] == previous["command"] and res["total_seconds"] == 60.0  # the header stays
    sp = res["speed"]
    assert len(sp["ours"]) == 1 and sp["tsdiff"] == [] and "missing" in sp["tsdiff_missing"]
    ours = sp["ours"][0]
    assert ours["train_step_s"] > 0 and ours["sample_s"] > 0 and ours["forecast_s"] > 0
    assert ours["params"] > 0 and len(ours["train_step_s_all"]) == budget["steps"]
    assert all(v["tsdiff"] is None and v["ratio"] is None and v["at_most"] is None for v in sp["summary"].values())
    text = md.read_text()
    assert "## Speed against TSDiff's own code" in text and "Not measured: TSDiff's reference is missing" in text

    with pytest.raises(SystemExit):  # a misspelt section is an error, not a silently empty run
        bench.main(["--quick", "--skip", "forcasting", "--json", str(out), "--md", str(md)])
