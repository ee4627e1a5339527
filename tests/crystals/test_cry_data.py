"""Crystal datasets: the embedded default set (size, determinism, limits, 0.5 A distances, the
substitution rule), random pyxtal crystals, and the CDVAE loader (Niggli-reduced canonical
structures, property names, the parse cache and its recovery from a corrupt file, and with
../shared the exact arrays of the crystal_metrics fixture)."""

from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Element, Lattice, Structure
from pymatgen.io.cif import CifWriter

from polydiff.plugin import shared_dir
from polydiff_crystals import data
from polydiff_crystals.data import cdvae_crystals, default_crystals, min_distance, random_crystals, similar_elements

pytestmark = pytest.mark.usefixtures("one_thread")

FIX = shared_dir() / "fixtures" / "crystal_metrics"
CDVAE = shared_dir() / "data" / "crystals_cdvae"


def needs_fixture(test):
    skip = pytest.mark.skipif(not FIX.is_dir() or not CDVAE.is_dir(), reason=f"shared fixture {FIX} or data {CDVAE} "
                              "not found (set POLYDIFF_SHARED to the shared folder)")
    return skip(pytest.mark.shared(test))


@pytest.fixture(scope="module")
def default_set() -> list[Structure]:
    return default_crystals()


def names(structures: list[Structure]) -> list[str]:
    return [s.properties["name"] for s in structures]


def test_default_set_size_limits_and_distances(default_set: list[Structure]) -> None:
    assert 1000 <= len(default_set) <= 3000
    assert len(set(names(default_set))) == len(default_set)
    prototypes = [s for s in default_set if "~" not in s.properties["name"]]
    assert 150 <= len(prototypes) < len(default_set)
    for s in default_set:
        assert len(s) <= 20 and len(s.composition.elements) <= 3 and s.is_ordered
        assert min_distance(s) >= 0.5, s.properties["name"]
    small = default_crystals(max_sites=6, max_elements=2)
    assert 0 < len(small) < len(default_set)
    assert all(len(s) <= 6 and len(s.composition.elements) <= 2 for s in small)


def test_default_set_is_deterministic_per_seed(default_set: list[Structure]) -> None:
    again = default_crystals()
    assert names(again) == names(default_set)
    for a, b in zip(default_set, again, strict=True):
        assert np.array_equal(a.lattice.matrix, b.lattice.matrix) and np.array_equal(a.frac_coords, b.frac_coords)
        assert a.species == b.species
    other = default_crystals(seed=1)
    assert names(other) != names(default_set)
    pick = names(default_crystals(50))  # a seeded draw from the set, in set order
    order = {name: i for i, name in enumerate(names(default_set))}
    assert len(set(pick)) == 50 and [order[p] for p in pick] == sorted(order[p] for p in pick)


def test_substitutions_follow_the_rule(default_set: list[Structure]) -> None:
    parents = {s.properties["name"]: s for s in default_set if "~" not in s.properties["name"]}
    variants = [s for s in default_set if "~" in s.properties["name"]]
    assert len(variants) > 500
    for v in variants:
        parent = parents[v.properties["name"].split("~")[0]]
        assert len(v) == len(parent)
        np.testing.assert_allclose(v.frac_coords, parent.frac_coords, atol=1e-12)
        mapping: dict[str, str] = {}
        for old, new in zip(parent.species, v.species, strict=True):
            Element(new.symbol)  # a real element
            assert mapping.setdefault(old.symbol, new.symbol) == new.symbol  # consistent per element
        assert len(set(mapping.values())) == len(mapping)  # one-to-one
        assert any(a != b for a, b in mapping.items())
        for a, b in mapping.items():
            assert a == b or b in similar_elements(a), (v.properties["name"], a, b)
        # the cell is scaled isotropically: same angles, one length ratio
        np.testing.assert_allclose(v.lattice.angles, parent.lattice.angles, atol=1e-9)
        ratio = np.array(v.lattice.abc) / np.array(parent.lattice.abc)
        np.testing.assert_allclose(ratio, ratio[0], rtol=1e-9)


def test_similar_elements_rule() -> None:
    assert {"O", "Se", "Te"} <= set(similar_elements("S")) and "Cl" not in similar_elements("S")
    assert set(similar_elements("Si")) == {"C", "Ge", "Sn"}
    assert similar_elements("H") == [] and similar_elements("Ar") == []
    assert set(similar_elements("Ce")) <= {"La", "Pr", "Nd"}
    for symbol in ("Fe", "Na", "O", "Cu", "La", "U"):
        for other in similar_elements(symbol):
            assert other != symbol and Element(other).Z <= 92


def test_random_crystals() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # failed generations are counted in a warning
        made = random_crystals(3, seed=5, max_sites=8)
        again = random_crystals(3, seed=5, max_sites=8)
    assert len(made) == 3
    for s, t in zip(made, again, strict=True):
        assert 1 <= len(s) <= 8 and {e.symbol for e in s.composition.elements} <= {"Si", "O"}
        assert s.properties["name"] == t.properties["name"]
        assert np.allclose(s.frac_coords, t.frac_coords) and np.allclose(s.lattice.matrix, t.lattice.matrix)


# CDVAE -------------------------------------------------------------------------------------------------------


def skewed_examples() -> list[Structure]:
    """Crystals given in non-reduced, oddly oriented cells (a loader must Niggli-reduce them)."""
    rocksalt = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    prim = rocksalt.get_primitive_structure()
    skew = prim.copy()
    skew.make_supercell([[1, 1, 0], [0, 1, 0], [0, 0, 1]])  # same cell volume, a longer a vector
    cubic = Structure(Lattice.from_parameters(3.9, 3.9, 3.9, 90, 90, 90), ["Sr", "Ti", "O", "O", "O"],
                      [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    cubic.make_supercell([[1, 0, 1], [0, 1, 0], [0, 0, 1]])
    return [skew, cubic]


def write_perov_csv(path: Path) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["", "material_id", "cif", "formula", "heat_all", "heat_ref", "dir_gap", "ind_gap"])
        for i, s in enumerate(skewed_examples()):
            w.writerow([i, 100 + i, str(CifWriter(s)), s.composition.reduced_formula, 1.5 + i, -0.5 - i, 2.0, 1.0 + i])
    return path


def test_cdvae_loader_reduces_and_names(tmp_path: Path) -> None:
    file = write_perov_csv(tmp_path / "val.csv")
    got = cdvae_crystals("perov_5", "val", path=file, cache_dir=tmp_path / "cache")
    assert [s.properties for s in got] == [
        {"name": "100", "formation_energy": -0.5, "band_gap": 1.0, "direct_gap": 2.0, "heat_all": 1.5},
        {"name": "101", "formation_energy": -1.5, "band_gap": 2.0, "direct_gap": 2.0, "heat_all": 2.5}]
    matcher = StructureMatcher(primitive_cell=False, scale=False)
    for original, s in zip(skewed_examples(), got, strict=True):
        assert matcher.fit(original, s)  # the same crystal, same cell volume
        assert s.volume == pytest.approx(original.volume, rel=1e-7)  # CIF: 8 decimals
        niggli = original.lattice.get_niggli_reduced_lattice()
        np.testing.assert_allclose(sorted(s.lattice.abc), sorted(niggli.abc), atol=1e-6)
        # canonical orientation: c along z, a in the xz plane (pymatgen's Lattice.from_parameters)
        m = s.lattice.matrix
        np.testing.assert_allclose([m[2, 0], m[2, 1], m[0, 1]], 0.0, atol=1e-12)
    assert max(got[0].lattice.abc) < max(skewed_examples()[0].lattice.abc)


def test_cdvae_cache_is_used_identical_and_recovers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    file = write_perov_csv(tmp_path / "test.csv")
    cache = tmp_path / "cache"
    calls = []
    parse = data.read_cif_csv
    monkeypatch.setattr(data, "read_cif_csv", lambda *a, **k: calls.append(1) or parse(*a, **k))
    first = cdvae_crystals("perov_5", "test", path=file, cache_dir=cache)
    second = cdvae_crystals("perov_5", "test", path=file, cache_dir=cache)
    one = cdvae_crystals("perov_5", "test", path=file, cache_dir=cache, n=1)  # served by the full file's cache
    assert len(calls) == 1 and len(one) == 1
    for a, b in zip(first, second, strict=True):
        assert np.array_equal(a.lattice.matrix, b.lattice.matrix) and np.array_equal(a.frac_coords, b.frac_coords)
        assert a.species == b.species and a.properties == b.properties
    assert np.array_equal(one[0].frac_coords, first[0].frac_coords)
    files = sorted(cache.glob("*.json"))
    assert len(files) == 1
    files[0].write_text('{"key": {"kind": "cdvae"}, "structures": [')  # a truncated cache file
    with pytest.warns(UserWarning, match="ignoring the unreadable crystal cache file"):
        rebuilt = cdvae_crystals("perov_5", "test", path=file, cache_dir=cache)
    assert len(calls) == 2 and names(rebuilt) == names(first)
    json.loads(files[0].read_text())  # rewritten whole
    file.write_text(file.read_text().replace("-0.5", "-0.75"))  # a changed file is a new cache key
    assert cdvae_crystals("perov_5", "test", path=file, cache_dir=cache)[0].properties["formation_energy"] == -0.75
    assert len(calls) == 3


def test_cdvae_argument_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"train\.csv is not part of the shared copy"):
        cdvae_crystals("perov_5", "train")
    with pytest.raises(ValueError, match=r"unknown CDVAE dataset 'mp_20'"):
        cdvae_crystals("mp_20", "val")
    with pytest.raises(FileNotFoundError, match=r"nothing\.csv"):
        cdvae_crystals("carbon_24", "val", path=tmp_path / "nothing.csv")


def fixture_rows(dataset: str, split: str) -> list[dict[str, str]]:
    with open(CDVAE / dataset / f"{split}.csv", newline="") as f:
        return list(csv.DictReader(f))


@needs_fixture
@pytest.mark.parametrize(("dataset", "split", "key", "first"), [
    ("carbon_24", "test", "carbon_generated_test40", 0), ("perov_5", "val", "perov_reference_val40", 100)])
def test_cdvae_reproduces_fixture_arrays(tmp_path: Path, dataset: str, split: str, key: str, first: int) -> None:
    refs = json.loads((FIX / "structures.json").read_text())[key]
    got = cdvae_crystals(dataset, split, n=first + len(refs), cache_dir=tmp_path)
    cached = cdvae_crystals(dataset, split, n=first + len(refs), cache_dir=tmp_path)
    rows = fixture_rows(dataset, split)
    assert len(got) == first + len(refs)
    for ref, s, c, row in zip(refs, got[first:], cached[first:], rows[first:], strict=False):
        name = s.properties["name"]
        assert ref["source"].endswith(f"material_id={name}") and row["material_id"] == name
        assert list(s.atomic_numbers) == ref["atom_types"]
        np.testing.assert_allclose(s.lattice.abc, ref["lengths"], atol=1e-8, rtol=0)
        np.testing.assert_allclose(s.lattice.angles, ref["angles"], atol=1e-8, rtol=0)
        # Coordinates are CDVAE's unwrapped values: on or next to a cell face the reference holds 0.0 or 1.0
        # depending on the BLAS kernel that ran pymatgen's Niggli reduction (both are the same site), so the
        # comparison is modulo whole lattice vectors; everywhere else this is an exact-value comparison.
        d = s.frac_coords - np.array(ref["frac_coords"])
        assert np.abs(d - np.round(d)).max() < 1e-8
        assert np.abs(d).max() < 1e-8 or np.all(np.isin(np.round(d), [-1.0, 0.0, 1.0]))
        assert np.array_equal(c.frac_coords, s.frac_coords) and np.array_equal(c.lattice.matrix, s.lattice.matrix)
        if dataset == "perov_5":
            assert s.properties["formation_energy"] == float(row["heat_ref"])
            assert s.properties["band_gap"] == float(row["ind_gap"])
            assert s.properties["direct_gap"] == float(row["dir_gap"])
            assert s.properties["heat_all"] == float(row["heat_all"])
        else:
            assert s.properties["energy_per_atom"] == float(row["energy_per_atom"])
