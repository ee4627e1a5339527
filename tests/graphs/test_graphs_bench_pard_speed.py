"""bench/graphs.py's part pard_speed: our side is timed, a missing PARD reference is reported as
such (never a made-up ratio), and running the part alone keeps the other parts' results."""

from __future__ import annotations

import json

TINY = {"rounds": 2, "threads": 1, "warmup": 1, "steps": 1, "batch": 8, "num": 2, "sample_steps": 2,
        "sample_repeats": 1}


def test_pard_speed_times_ours_reports_the_missing_reference_and_keeps_other_parts(tmp_path, monkeypatch,
                                                                                   bench_module):
    monkeypatch.setenv("PARD_VENV", str(tmp_path / "no_venv"))
    monkeypatch.setenv("PARD_REF", str(tmp_path / "no_checkout"))
    bench = bench_module("graphs")
    monkeypatch.setitem(bench.BUDGETS["quick"], "pard_speed", TINY)
    other = {"command": "python bench/graphs.py --parts speed", "budget": {}, "gdss": [],
             "gdss_missing": "GDSS's reference is missing (the venv x)"}
    results, report = tmp_path / "graphs.json", tmp_path / "graphs.md"
    results.write_text(json.dumps({"parts": {"speed": other}}))

    assert bench.main(["--quick", "--parts", "pard_speed", "--json", str(results), "--md", str(report),
                       "--work", str(tmp_path / "work")]) == 0

    parts = json.loads(results.read_text())["parts"]
    assert parts["speed"] == other
    res = parts["pard_speed"]
    assert res["pard"] == [] and res["pard_missing"].startswith("PARD's reference is missing")
    assert len(res["ours"]) == 1 and res["order"] == [["ours", "pard"]]  # stops after the first round
    ours = res["ours"][0]
    assert ours["train_step_s"] > 0 and len(ours["train_step_s_all"]) == TINY["steps"]
    assert ours["sample_s"] > 0 and ours["num"] == 2 and ours["network_calls"] > TINY["sample_steps"]
    assert 0 < ours["nodes_per_graph"] <= ours["forced_nodes_per_graph"]  # the training graphs' blocks
    assert ours["model"]["hidden"] == 64 and ours["params"]["total"] > 0
    assert all(v["pard"] is None and v["ratio"] is None and v["at_most"] is None for v in res["summary"].values())
    text = report.read_text()
    assert "## Speed against PARD's own code" in text and "Not measured: PARD's reference is missing" in text
    assert "## Speed against GDSS's own code" in text
