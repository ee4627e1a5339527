"""Smoke test of the default-against-default benchmark's EDM mode (bench/defaults.py --edm,
loaded by path): ours walks ``vp_quadratic`` for the solvers of EDM's rule and Karras' grid for
the others, and the report says so."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "defaults.py"

pytestmark = pytest.mark.usefixtures("one_thread")


def _load():
    if "bench_defaults" not in sys.modules:
        spec = importlib.util.spec_from_file_location("bench_defaults", SCRIPT)
        mod = importlib.util.module_from_spec(spec)
        sys.modules["bench_defaults"] = mod
        spec.loader.exec_module(mod)
    return sys.modules["bench_defaults"]


def test_edm_mode_compares_the_default_with_karras_and_diffusers():
    bench = _load()
    res = bench.run_edm([2], [5, 8], ["multiscale"], ("dpm++2m", "heun"), 1, {"vp_quadratic": {"grid": "vp_quadratic"}})
    rows = {(r["algorithm"], r["nfe"]): r for r in res["rows"]}
    assert [r["ours_grid"] for r in res["rows"]] == ["vp_quadratic", "vp_quadratic", "karras", "karras"]
    for nfe in (5, 8):
        solver, heun = rows["dpm++2m", nfe], rows["heun", nfe]
        assert solver["ours"]["sw2"] == solver["also"]["vp_quadratic"]["sw2"] != solver["before"]["sw2"]
        assert heun["ours"]["sw2"] == heun["before"]["sw2"] != heun["also"]["vp_quadratic"]["sw2"]
        assert heun["diffusers"] is None and heun["pass"] is None  # diffusers has no EDM Heun
    res["rows"] = [r for r in res["rows"] if r["algorithm"] == "dpm++2m"]
    for r in res["rows"]:  # diffusers' EDM DPM-Solver++(2M) ran, and every error is a real number
        assert r["diffusers"] is not None and r["pass"] is not None
        assert all(0 < r[k]["sw2"] < 5 for k in ("ours", "before", "diffusers"))
    env = {"command": "python bench/defaults.py --edm", "commit": "abc", "dirty": False, "date": "today",
           "python": "3", "torch": "2", "cpus": 2, "platform": "linux"}
    text = bench.markdown_edm({**res, "environment": env}, "T", "o", "b")
    assert "### dpm++2m" in text and "`vp_quadratic` at every step count / before" in text
    assert "Ours passes" in text and "| multiscale | 2 |" in text
