"""Smoke test of the default-against-default benchmark's EDM mode (bench/defaults.py --edm,
loaded by path): ours is the old default below the log-SNR rule's step count and the log-SNR
grid from it, and the report says so."""

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
    res = bench.run_edm([2], [5, 8], ["multiscale"], ("dpm++2m",), 1, {"uniform_logsnr": {"grid": "uniform_logsnr"}})
    few, more = res["rows"]
    assert (few["nfe"], few["ours_grid"], more["ours_grid"]) == (5, "karras", "uniform_logsnr")
    assert few["ours"]["sw2"] == few["before"]["sw2"]  # below the rule: the old default exactly
    assert more["ours"]["sw2"] == more["also"]["uniform_logsnr"]["sw2"]
    assert more["ours"]["sw2"] != more["before"]["sw2"]
    for r in res["rows"]:  # diffusers' EDM DPM-Solver++(2M) ran, and every error is a real number
        assert r["diffusers"] is not None and r["pass"] is not None
        assert all(0 < r[k]["sw2"] < 5 for k in ("ours", "before", "diffusers"))
    env = {"command": "python bench/defaults.py --edm", "commit": "abc", "dirty": False, "date": "today",
           "python": "3", "torch": "2", "cpus": 2, "platform": "linux"}
    text = bench.markdown_edm({**res, "environment": env}, "T", "o", "b")
    assert "### dpm++2m" in text and "`uniform_logsnr` at every step count / before" in text
    assert "Ours passes" in text and "| multiscale | 2 |" in text
