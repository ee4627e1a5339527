"""Conformers and data sets: ETKDG + MMFF embedding (sane geometry, determinism), the disk cache
(hits, corrupt files rebuilt), the default set, QM9 CSV reading with clear errors, canonical
SMILES, and (with ../shared) QM9 molecules and the conformer pipeline against DFT geometries."""

from __future__ import annotations

import csv
import math
import time
import warnings

import numpy as np
import pytest

from polydiff.plugin import shared_dir
from polydiff_molecules import Molecule
from polydiff_molecules.data import (
    DEFAULT_SET_SIZE,
    QM9_PROPERTIES,
    conformer_check,
    conformers,
    default_molecules,
    embed_smiles,
    qm9_dft,
    qm9_molecules,
    smiles_of,
    train_smiles,
)
from polydiff_molecules.molio import MoleculeFileError

pytestmark = pytest.mark.usefixtures("one_thread")

QM9 = shared_dir() / "data" / "qm9" / "qm9_sample20k.csv"
QM9_DFT = shared_dir() / "data" / "qm9" / "qm9_3d_sample128.extxyz"
HEADER = "mol_id,smiles,A,B,C,mu,alpha,homo,lumo,gap,r2,zpve,u0,u298,h298,g298,cv"


def needs_qm9(test):
    skip = pytest.mark.skipif(not QM9.is_file(), reason=f"shared data file {QM9} not found (set POLYDIFF_SHARED to "
                              "the shared folder)")
    return skip(pytest.mark.shared(test))


def needs_qm9_dft(test):
    skip = pytest.mark.skipif(not QM9_DFT.is_file(), reason=f"shared data file {QM9_DFT} not found (set "
                              "POLYDIFF_SHARED to the shared folder)")
    return skip(pytest.mark.shared(test))


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One conformer cache for the module's default-set tests."""
    return tmp_path_factory.mktemp("cache")


def distance(mol: Molecule, i: int, j: int) -> float:
    return float(np.linalg.norm(mol.positions[i] - mol.positions[j]))


def same(a: list[Molecule], b: list[Molecule]) -> bool:
    return len(a) == len(b) and all(
        x.symbols == y.symbols and x.name == y.name and x.properties == y.properties
        and np.array_equal(x.positions, y.positions) and np.array_equal(x.charges, y.charges)
        and np.array_equal(x.bonds, y.bonds) for x, y in zip(a, b))


# -- embedding ------------------------------------------------------------------------------------

def test_embed_smiles_geometry():
    ethane = embed_smiles("CC", name="ethane", properties={"x": 1.0})
    assert ethane.symbols == ("C", "C", *["H"] * 6) and ethane.name == "ethane" and ethane.properties == {"x": 1.0}
    assert 1.50 < distance(ethane, 0, 1) < 1.56 and ethane.bonds[0, 1] == 1
    assert all(1.08 < distance(ethane, 0, h) < 1.11 for h in (2, 3, 4))
    benzene = embed_smiles("c1ccccc1")
    ring = benzene.bonds[:6, :6]
    assert sorted(ring[np.triu_indices(6, 1)][ring[np.triu_indices(6, 1)] > 0].tolist()) == [1, 1, 1, 2, 2, 2]
    assert all(1.37 < distance(benzene, i, j) < 1.41 for i, j in zip(*np.nonzero(np.triu(ring))))
    acetate = embed_smiles("CC(=O)[O-]")
    assert acetate.charges.sum() == -1 and sorted(acetate.charges[:4].tolist()) == [-1, 0, 0, 0]
    assert embed_smiles("C1CC") is None and embed_smiles("") is None
    # deterministic for a seed; the MMFF step changes the ETKDG geometry
    np.testing.assert_array_equal(embed_smiles("CCO", seed=4).positions, embed_smiles("CCO", seed=4).positions)
    flexible = [embed_smiles("CCCCO", seed=k).positions for k in range(3)]  # RDKit's seeds 0 and 1 coincide
    assert not np.allclose(flexible[0], flexible[1]) and not np.allclose(flexible[1], flexible[2])
    raw = embed_smiles("CCO", seed=4, optimize=False)
    assert not np.allclose(raw.positions, embed_smiles("CCO", seed=4).positions)


def test_conformer_cache_hits_and_rebuilds(tmp_path, monkeypatch):
    smiles = ["CCO", "c1ccncc1", "CC(=O)N", "C1CC", "OCC(O)CO", "CC#N", "C1CCOC1", "CC(C)C(=O)O", "FC(F)F", "NCCO",
              "CC(C)(C)c1ccc(O)cc1", "O=C1CCCCC1"]
    names = [f"m{k}" for k in range(len(smiles))]
    props = [{"k": float(k)} for k in range(len(smiles))]
    start = time.perf_counter()
    first, failed = conformers(smiles, cache_dir=tmp_path, names=names, properties=props)
    cold = time.perf_counter() - start
    assert failed == [3] and [m.name for m in first] == [n for k, n in enumerate(names) if k != 3]
    assert first[0].properties == {"k": 0.0} and first[0].symbols[:3] == ("C", "C", "O")
    (file,) = (tmp_path / "molecules").glob("conformers-*.npz")
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again, failed_again = conformers(smiles, cache_dir=tmp_path, names=names, properties=props)
    warm = time.perf_counter() - start
    assert failed_again == [3] and same(first, again) and warm < cold / 3, (warm, cold)
    # names and properties are not part of the key; the seed is
    bare, _ = conformers(smiles, cache_dir=tmp_path)
    assert [m.name for m in bare] == [""] * 11 and np.array_equal(bare[1].positions, first[1].positions)
    other, _ = conformers(smiles, seed=1, cache_dir=tmp_path)
    assert len(list((tmp_path / "molecules").glob("*.npz"))) == 2
    assert not np.allclose(other[10].positions, first[10].positions)
    # a corrupt cache file is reported and rebuilt (garbage, truncation, another list's file)
    good = file.read_bytes()
    other_file = next(p for p in (tmp_path / "molecules").glob("*.npz") if p != file)
    for bad in (b"garbage", good[:len(good) // 2], other_file.read_bytes()):
        file.write_bytes(bad)
        with pytest.warns(UserWarning, match=rf"conformer cache .*{file.name} is corrupt .*rebuilding it"):
            rebuilt, _ = conformers(smiles, cache_dir=tmp_path, names=names, properties=props)
        assert same(rebuilt, first) and file.read_bytes() == good
    # the cache folder from the environment
    monkeypatch.setenv("POLYDIFF_CACHE", str(tmp_path / "env"))
    conformers(["C"])
    assert len(list((tmp_path / "env" / "molecules").glob("conformers-*.npz"))) == 1
    with pytest.raises(ValueError, match="2 names for 1 SMILES"):
        conformers(["C"], names=["a", "b"])


# -- the default set ------------------------------------------------------------------------------

def test_default_molecules_small(cache):
    five = default_molecules(n=5, cache_dir=cache)
    assert len(five) == 5 and all(m.name.startswith("NCI_") for m in five)
    for m in five:
        assert set(m.symbols) <= {"H", "C", "N", "O", "F"} and sum(s != "H" for s in m.symbols) <= 9
        assert m.bonds is not None and np.isfinite(m.positions).all()
    assert same(five, default_molecules(n=5, cache_dir=cache))
    cho = default_molecules(n=4, max_heavy=4, elements=("C", "H", "O"), cache_dir=cache)
    assert len(cho) == 4 and all(set(m.symbols) <= {"C", "H", "O"} and sum(s != "H" for s in m.symbols) <= 4
                                 for m in cho)


def test_default_set_size(cache):
    full = default_molecules(cache_dir=cache)
    assert len(full) == DEFAULT_SET_SIZE == 517
    assert [m.name for m in full[:5]] == [m.name for m in default_molecules(n=5, cache_dir=cache)]
    names = [m.name for m in full]
    assert len(set(names)) == len(names) and sum(n.startswith("g2_") for n in names) == 93
    by_name = {m.name: m for m in full}
    benzene, methyl = by_name["g2_C6H6"], by_name["g2_CH3"]
    assert benzene.bonds is not None and benzene.bonds[:6, :6].sum() == 18 and methyl.bonds is None
    assert all(sum(s != "H" for s in m.symbols) <= 9 and set(m.symbols) <= {"H", "C", "N", "O", "F"} for m in full)


# -- QM9 ------------------------------------------------------------------------------------------

def test_qm9_csv_errors(tmp_path):
    row = "gdb_1,CCO,1,2,3,1.5,20.0,-0.25,0.05,0.3,100,0.1,-100,-100,-100,-100,12.5"
    cases = [
        ([HEADER, row, row.replace(",1.5,", ",abc,")], r"q\.csv:3: property mu = 'abc' is not a finite number"),
        ([HEADER, row.replace(",12.5", ",nan")], r"q\.csv:2: property cv = 'nan' is not a finite number"),
        ([HEADER.replace(",cv", ""), row], r"q\.csv:1: missing column\(s\) cv"),
        ([HEADER, "gdb_1,CCO,1"], r"q\.csv:2: 3 cells, the header has 17"),
        ([HEADER, row.replace(",CCO,", ",,")], r"q\.csv:2: empty SMILES"),
        ([HEADER], r"q\.csv: no molecules"),
        ([], r"q\.csv: empty file"),
    ]
    for lines, match in cases:
        (tmp_path / "q.csv").write_text("\n".join(lines) + "\n")
        with pytest.raises(MoleculeFileError, match=match):
            qm9_molecules(tmp_path / "q.csv", cache_dir=tmp_path)
    with pytest.raises(MoleculeFileError, match=r"nowhere\.csv: QM9 CSV not found"):
        qm9_molecules(tmp_path / "nowhere.csv")
    (tmp_path / "q.csv").write_text("\n".join([HEADER, row, row.replace("gdb_1,CCO", "gdb_2,C1CC")]) + "\n")
    with pytest.warns(UserWarning, match=r"q\.csv: 1 of 2 QM9 molecules could not be embedded .*\(gdb_2\)"):
        (mol,) = qm9_molecules(tmp_path / "q.csv", cache_dir=tmp_path)
    assert mol.name == "gdb_1" and mol.properties == dict(zip(QM9_PROPERTIES, (1.5, 20.0, -0.25, 0.05, 0.3, 12.5)))


@needs_qm9
def test_qm9_molecules(tmp_path):
    mols = qm9_molecules(n=5, cache_dir=tmp_path)
    assert len(mols) == 5 and all(m.name.startswith("gdb_") for m in mols)
    with open(QM9, newline="") as f:
        rows = {r["mol_id"]: r for r in csv.DictReader(f)}
    for m in mols:
        row = rows[m.name]
        assert m.properties == {p: float(row[p]) for p in QM9_PROPERTIES}
        assert smiles_of(m) == smiles_of(embed_smiles(row["smiles"]))  # the graph survives embedding
        assert set(m.symbols) <= {"H", "C", "N", "O", "F"} and sum(s != "H" for s in m.symbols) <= 9
    assert [m.name for m in qm9_molecules(n=5, cache_dir=tmp_path)] == [m.name for m in mols]
    assert [m.name for m in qm9_molecules(n=5, seed=1, cache_dir=tmp_path)] != [m.name for m in mols]
    assert qm9_molecules(n=3, properties=("gap",), cache_dir=tmp_path)[0].properties.keys() == {"gap"}


@needs_qm9_dft
def test_conformer_pipeline_against_dft():
    dft = qm9_dft()
    assert len(dft) == 128 and dft[0].name == "qm9_624" and dft[0].properties["energy"] == -307.529289
    stats = conformer_check(dft)
    # measured (RDKit 2026.09, seed 0): 127 of 128 ok, median 0.35 A, mean 0.43 A, bond MAE 0.010 A
    assert stats["n_ok"] >= 125 and stats["n_ok"] + stats["n_failed"] == 128
    assert stats["median_rmsd"] < 0.45 and stats["mean_rmsd"] < 0.55 and stats["max_rmsd"] < 2.5
    assert stats["bond_mae"] < 0.02
    lone = conformer_check([Molecule(("N",), [[0.0, 0.0, 0.0]])])
    assert lone["n_ok"] == 0 and lone["n_failed"] == 1 and math.isnan(lone["median_rmsd"])


# -- SMILES for novelty ---------------------------------------------------------------------------

def test_smiles_of_and_train_smiles():
    ethanol = embed_smiles("OCC")
    assert smiles_of(ethanol) == "CCO"
    guessed = Molecule(ethanol.symbols, ethanol.positions)  # no bonds: inferred from the geometry
    assert smiles_of(guessed) == "CCO"
    ammonium = embed_smiles("C[NH3+]")
    assert smiles_of(ammonium) == "C[NH3+]"
    star = np.zeros((6, 6), dtype=int)
    star[0, 1:] = star[1:, 0] = 1
    pentavalent = Molecule(("C", "H", "H", "H", "H", "H"), np.eye(6, 3), bonds=star)
    assert smiles_of(pentavalent) is None
    assert train_smiles([ethanol, guessed, pentavalent, ammonium]) == ["CCO", "C[NH3+]"]
