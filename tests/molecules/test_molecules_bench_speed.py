"""bench/molecules.py's speed part against PropMolFlow's own code: our molecules written in
PropMolFlow's processed format (one row per bonded pair i < j, one-hot types, index ranges), ours
timed at the recipe's and at about equal parameters, and a missing PropMolFlow reference reported as
such (never a made-up ratio)."""

from __future__ import annotations

import argparse

import numpy as np
import torch

from polydiff_molecules.molecule import Molecule


def _water() -> Molecule:
    bonds = np.array([[0, 1, 1], [1, 0, 0], [1, 0, 0]])
    return Molecule(("O", "H", "H"), np.array([[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]]), bonds=bonds, name="w")


def _formaldehyde() -> Molecule:
    bonds = np.array([[0, 2, 1, 1], [2, 0, 0, 0], [1, 0, 0, 0], [1, 0, 0, 0]])
    pos = np.array([[0, 0, 0], [1.2, 0, 0], [-0.5, 0.9, 0], [-0.5, -0.9, 0]])
    return Molecule(("C", "O", "H", "H"), pos, charges=np.array([0, 0, 0, 0]), bonds=bonds, name="f")


def test_write_molecules_in_propmolflow_format(tmp_path, bench_module):
    ref = bench_module("propmolflow_reference")
    chloro = Molecule(("C", "Cl"), np.array([[0, 0, 0], [1.8, 0, 0]]), bonds=np.array([[0, 1], [1, 0]]))
    unbonded = Molecule(("C", "H"), np.array([[0, 0, 0], [1.1, 0, 0]]))
    assert ref.write_molecules([_water(), chloro, unbonded, _formaldehyde()], tmp_path) == 2  # Cl and no bonds skipped
    d = torch.load(tmp_path / "train_data_processed.pt")
    assert d["node_idx_array"].tolist() == [[0, 3], [3, 7]] and d["edge_idx_array"].tolist() == [[0, 2], [2, 5]]
    assert d["positions"].shape == (7, 3) and d["positions"].dtype == torch.float32
    elements = ("C", "H", "N", "O", "F")  # PropMolFlow's QM9 atom map
    assert [elements[i] for i in d["atom_types"].float().argmax(1).tolist()] == ["O", "H", "H", "C", "O", "H", "H"]
    assert d["bond_idxs"].tolist() == [[0, 1], [0, 2], [0, 1], [0, 2], [0, 3]]  # i < j, indices per molecule
    assert d["bond_types"].tolist() == [1, 1, 2, 1, 1] and d["atom_charges"].tolist() == [0] * 7


def test_propmolflow_part_times_ours_and_says_when_the_reference_is_missing(tmp_path, monkeypatch, bench_module):
    monkeypatch.setenv("PROPMOLFLOW_VENV", str(tmp_path / "no_venv"))
    monkeypatch.setenv("PROPMOLFLOW_REF", str(tmp_path / "no_checkout"))
    bench = bench_module("molecules")
    budget = {"rounds": 2, "steps": 1, "warmup": 1, "batch": 2, "num": 2, "sample_steps": 2, "sample_repeats": 1,
              "threads": 1, "equal_params_layers": 2}
    monkeypatch.setitem(bench.PMF_BUDGETS, "quick", budget)
    out = bench.part_propmolflow(argparse.Namespace(quick=True), tmp_path)
    assert out["propmolflow"] == [] and "missing" in out["propmolflow_missing"]
    assert len(out["ours"]) == 1 and len(out["ours_equal_params"]) == 1 and out["molecules"] > 100
    recipe, other = out["ours"][0], out["ours_equal_params"][0]
    assert recipe["layers"] == 4 and other["layers"] == 2 and other["params"] < recipe["params"]
    assert recipe["train_step_s"] > 0 and recipe["sample_s"] > 0 and len(out["sizes"]) == 2
    assert all(v["propmolflow"] is None and v["ratio"] is None for v in out["summary"].values())
    text = "\n".join(bench.propmolflow_section(out))
    assert "## Speed against PropMolFlow's own code" in text
    assert "Not measured: PropMolFlow's reference is missing" in text
