"""bench/metrics_reference.py's own pieces (the published metric code itself runs only in the benchmark):
the fresh inputs are seeded and cover what they say, the comparison finds every kind of difference, and our
side of the comparison reads the same keys the reference side writes."""

from __future__ import annotations

import math

import numpy as np
import pytest

WATER = (["O", "H", "H"], [[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]])
ROCK_SALT = {"frac_coords": [[0, 0, 0], [0.5, 0.5, 0.5]], "atom_types": [11, 17], "lengths": [4.0, 4.0, 4.0],
             "angles": [60.0, 60.0, 60.0]}  # fmt: skip


def test_compare_values_finds_every_kind_of_difference(bench_module):
    mr = bench_module("metrics_reference")
    same = {"flag": True, "count": 3, "smiles": "CO", "x": 0.5, "missing": math.nan}
    assert mr.compare_values(dict(same), same) == {}
    assert mr.compare_values({**same, "x": 0.5 + 1e-12}, same) == {}
    for key, value in (("flag", False), ("count", 4), ("smiles", "OC"), ("x", 0.5 + 1e-6), ("missing", 0.0)):
        assert set(mr.compare_values({**same, key: value}, same)) == {key}
    assert set(mr.compare_values({}, same)) == set(same)  # a key we do not report is a disagreement
    assert mr.compare_values({"x": math.inf}, {"x": math.inf}) == {}
    assert set(mr.compare_values({"x": -math.inf}, {"x": math.inf})) == {"x"}
    assert set(mr.compare_values({"x": 1e300}, {"x": math.inf})) == {"x"}
    assert mr.fingerprint_gap([np.ones(3), None], [np.ones(3) + 1e-3, np.zeros(3)]) == pytest.approx(1e-3 / 1.001)


def test_molecule_inputs_are_seeded_and_cover_every_kind(bench_module):
    mr = bench_module("metrics_reference")
    frames = [WATER, (["C", "O"], [[0.0, 0.0, 0.0], [1.2, 0.0, 0.0]])]
    a, b, c = (mr.molecule_inputs(frames, seed, n_random=5) for seed in (0, 0, 1))
    assert a == b and a != c
    assert len(a) == 2 + 8 * 2 + 2 + 5  # frames, 8 noise scales, re-typed, random clouds
    assert a[0]["positions"] == WATER[1]
    assert all(set(m["elements"]) <= set("HCNOF") for m in a)
    for m, (elements, positions) in zip(a[18:20], frames):  # re-typed: one atom at most, positions kept
        assert sum(x != y for x, y in zip(m["elements"], elements)) <= 1 and m["positions"] == positions


def test_broken_crystals_are_seeded_and_damaged(bench_module):
    mr = bench_module("metrics_reference")
    first = mr.broken_crystals([ROCK_SALT], 12, np.random.RandomState(0))
    assert first == mr.broken_crystals([ROCK_SALT], 12, np.random.RandomState(0))
    assert all(set(c) == set(ROCK_SALT) for c in first)
    assert sum(c != ROCK_SALT for c in first) >= 10  # every kind changes something (a swap may redraw the same type)
    assert all(np.prod(c["lengths"]) < np.prod(ROCK_SALT["lengths"]) * 0.6**3 + 1e-9 for c in first[3::6])


def test_our_side_reports_the_reference_keys(bench_module):
    mr = bench_module("metrics_reference")
    mols = [{"name": "water", "elements": WATER[0], "positions": WATER[1]}]
    ours = mr.ours_molecules(mols)
    assert set(ours["per"][0]) == {f"{k}{s}" for k in ("stable", "n_stable", "smiles") for s in ("32", "64")}
    assert ours["per"][0]["stable32"] and ours["per"][0]["smiles64"] == "[H]O[H]"
    assert set(ours["summary"]) == {"mol_stable", "atm_stable", "validity", "uniqueness"}


def test_graph_sets_are_seeded_and_hold_the_edge_cases(bench_module):
    mr = bench_module("metrics_reference")
    a, b, c = mr.graph_sets(0, size=8), mr.graph_sets(0, size=8), mr.graph_sets(1, size=8)
    assert a == b and a != c
    assert set(a) >= {"community", "erdos_renyi", "trees", "edgeless_and_cliques"}
    assert all(len(v) == 8 for v in a.values())
    for items in a.values():
        assert all(0 <= u < g["n"] and 0 <= v < g["n"] and u != v for g in items for u, v in g["edges"])
    assert all(len(g["edges"]) == g["n"] - 1 for g in a["trees"])
    ours = mr.ours_graphs(a)
    assert all(v == 0.0 for v in ours["community"].values())  # the reference set against itself
    assert all(v > 0 for name in ("trees", "edgeless_and_cliques") for v in ours[name].values())


def test_forecast_cases_are_seeded_and_ours_reports_their_keys(bench_module):
    mr = bench_module("metrics_reference")
    a, b = mr.forecast_cases(0), mr.forecast_cases(0)
    assert a == b and a != mr.forecast_cases(1)
    sizes = {len(c["samples"][0]) for c in a.values()}
    assert {1, 2, 7, 200} <= sizes
    assert any(c["season"] >= len(c["history"][0]) for c in a.values())  # seasonal error falls back to lag 1
    ours = mr.ours_forecasts(a)
    flat = mr._flat(ours["a constant history (MASE infinite)"])
    assert flat["MASE[0]"] == math.inf and math.isfinite(flat["MASE[1]"])
    assert {"mean_wQuantileLoss", "ND", "NRMSE", "MASE", "wQuantileLoss[0.5]", "Coverage[0.9]", "CRPS sum"} <= set(flat)
