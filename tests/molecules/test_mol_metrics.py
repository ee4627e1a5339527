"""Molecule metrics: the EDM golden fixture (stability, validity, SMILES, summaries, bond orders
at exact thresholds in every dtype), hand-built molecules, novelty / uniqueness, W1 against
SciPy, MMFF against RDKit, and the distribution metrics."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from polydiff.plugin import shared_dir
from polydiff_molecules import Molecule, from_rdkit
from polydiff_molecules.metrics import (
    ALLOWED_VALENCE,
    BOND_LENGTHS,
    MARGINS,
    atom_type_tv,
    bond_angle_w1,
    bond_angles,
    bond_length_w1,
    bond_lengths,
    bond_order,
    canonical_smiles,
    connectivity,
    distribution_metrics,
    edm_metrics,
    evaluate_molecules,
    infer_bonds,
    mmff_energy,
    mmff_energy_per_atom,
    per_molecule_flags,
    stability,
    validity,
    wasserstein1,
)

pytestmark = pytest.mark.usefixtures("one_thread")

FIX = shared_dir() / "fixtures" / "mol_stability"


def needs_fixture(test):
    """Mark a test as needing ../shared (the golden fixture) and skip it when absent."""
    skip = pytest.mark.skipif(not FIX.is_dir(), reason=f"shared fixture {FIX} not found "
                                                      "(set POLYDIFF_SHARED to the shared folder)")
    return skip(pytest.mark.shared(test))


def read_xyz(path) -> list[Molecule]:
    """Multi-frame XYZ: count line, comment line (first word = name), then ``El x y z`` lines."""
    lines = path.read_text().splitlines()
    mols, i = [], 0
    while i < len(lines):
        if not lines[i].strip():
            i += 1
            continue
        n = int(lines[i])
        rows = [line.split() for line in lines[i + 2:i + 2 + n]]
        mols.append(Molecule(tuple(r[0] for r in rows), np.array([[float(x) for x in r[1:4]] for r in rows]),
                             name=lines[i + 1].split()[0]))
        i += 2 + n
    return mols


@pytest.fixture(scope="module")
def fixture_data():
    expected = json.loads((FIX / "expected.json").read_text())
    mols = read_xyz(FIX / "molecules.xyz")
    assert [m.name for m in mols] == [e["id"] for e in expected["per_molecule"]]
    return mols, expected


# -- hand-built molecules ------------------------------------------------------------------------

S8 = math.sqrt(8.0) / 3.0  # sin of the tetrahedral angle's supplement


def ethane(cc: float = 1.54, ch: float = 1.09) -> Molecule:
    pos = [[0, 0, 0], [cc, 0, 0]]
    for k in range(3):
        phi = math.radians(120 * k)
        pos.append([-ch / 3, ch * S8 * math.cos(phi), ch * S8 * math.sin(phi)])
    for k in range(3):
        phi = math.radians(120 * k + 60)
        pos.append([cc + ch / 3, ch * S8 * math.cos(phi), ch * S8 * math.sin(phi)])
    return Molecule(("C", "C", "H", "H", "H", "H", "H", "H"), np.array(pos), name="ethane")


def ethene(cc: float = 1.34, ch: float = 1.09) -> Molecule:
    c, s = ch * math.cos(math.radians(60)), ch * math.sin(math.radians(60))
    pos = [[0, 0, 0], [cc, 0, 0], [-c, s, 0], [-c, -s, 0], [cc + c, s, 0], [cc + c, -s, 0]]
    return Molecule(("C", "C", "H", "H", "H", "H"), np.array(pos), name="ethene")


def ethyne(cc: float = 1.20, ch: float = 1.06) -> Molecule:
    pos = [[0, 0, 0], [cc, 0, 0], [-ch, 0, 0], [cc + ch, 0, 0]]
    return Molecule(("C", "C", "H", "H"), np.array(pos), name="ethyne")


def water(oh: float = 0.9572, angle: float = 104.52) -> Molecule:
    h = math.radians(angle / 2)
    pos = [[0, 0, 0], [oh * math.sin(h), oh * math.cos(h), 0], [-oh * math.sin(h), oh * math.cos(h), 0]]
    return Molecule(("O", "H", "H"), np.array(pos), name="water")


def ammonium(nh: float = 1.03) -> Molecule:
    dirs = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]]) / math.sqrt(3)
    return Molecule(("N", "H", "H", "H", "H"), np.vstack([[0, 0, 0], nh * dirs]), name="NH4")


def borane(bh: float = 1.19) -> Molecule:
    """Planar BH3: B-H at the table's single-bond length, EDM-valid (boron valence 3)."""
    ang = np.radians([0.0, 120.0, 240.0])
    return Molecule(("B", "H", "H", "H"), np.vstack([[0, 0, 0], bh * np.stack([np.cos(ang), np.sin(ang),
                                                                                np.zeros(3)], 1)]), name="BH3")


def ffh_energy(rd) -> float:
    """RDKit's own MMFF94 energy of an RDKit molecule (kcal/mol)."""
    from rdkit.Chem import rdForceFieldHelpers as ffh

    return ffh.MMFFGetMoleculeForceField(rd, ffh.MMFFGetMoleculeProperties(rd)).CalcEnergy()


def shifted(mol: Molecule, offset) -> Molecule:
    return Molecule(mol.symbols, mol.positions + np.asarray(offset, dtype=np.float64), name=mol.name)


def joined(*mols: Molecule) -> Molecule:
    return Molecule(sum((m.symbols for m in mols), ()), np.vstack([m.positions for m in mols]))


def rdkit_molecule(smiles: str, seed: int = 7) -> tuple[Molecule, object]:
    """(Molecule, RDKit Mol) with explicit H and one ETKDG conformer."""
    from rdkit import Chem
    from rdkit.Chem import AllChem

    rd = Chem.AddHs(Chem.MolFromSmiles(smiles))
    assert AllChem.EmbedMolecule(rd, randomSeed=seed) == 0
    return from_rdkit(rd, name=smiles), rd


# -- the golden fixture ---------------------------------------------------------------------------


@needs_fixture
@pytest.mark.parametrize("dtype,suffix", [(np.float32, ""), (np.float64, "_float64")])
def test_fixture_per_molecule(fixture_data, dtype, suffix):
    mols, expected = fixture_data
    flags = per_molecule_flags(mols, dtype=dtype)
    for i, (mol, e) in enumerate(zip(mols, expected["per_molecule"])):
        assert flags["n_atoms"][i] == e["n_atoms"] == len(mol)
        assert stability(mol, dtype) == (e["mol_stable" + suffix], e["n_stable_atoms" + suffix], e["n_atoms"]), e["id"]
        assert validity(mol, dtype) == (e["valid" + suffix], e["smiles" + suffix]), e["id"]
        assert (flags["stable"][i], flags["n_stable_atoms"][i], flags["valid"][i], flags["smiles"][i]) == \
            (e["mol_stable" + suffix], e["n_stable_atoms" + suffix], e["valid" + suffix], e["smiles" + suffix])


@needs_fixture
def test_fixture_bond_counts(fixture_data):
    mols, expected = fixture_data
    for mol, e in zip(mols, expected["per_molecule"]):
        upper = np.triu(infer_bonds(mol, np.float32), 1)
        got = {name: int((upper == k).sum()) for k, name in ((1, "single"), (2, "double"), (3, "triple"))}
        assert got == e["n_bonds_by_order"], e["id"]
        assert np.array_equal(infer_bonds(mol, np.float32), infer_bonds(mol, np.float64)), e["id"]


SUBSETS = {
    "all_53": lambda s: True,
    "all_except_edge_48": lambda s: s != "edge",
    "original": lambda s: s == "original",
    "noise_0.05": lambda s: s == "noise_0.05",
    "noise_0.2": lambda s: s == "noise_0.2",
    "edge": lambda s: s == "edge",
}


@needs_fixture
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fixture_summaries(fixture_data, dtype):
    mols, expected = fixture_data
    assert set(SUBSETS) == set(expected["summary"])
    for name, keep in SUBSETS.items():
        sub = [m for m, e in zip(mols, expected["per_molecule"]) if keep(e["subset"])]
        want = expected["summary"][name]
        got = edm_metrics(sub, dtype=dtype)
        assert len(sub) == want["n_molecules"]
        for ours, theirs in (("atm_stable", "atm_stable"), ("mol_stable", "mol_stable"),
                             ("validity", "validity"), ("uniqueness", "uniqueness_of_valid")):
            assert got[ours] == pytest.approx(want[theirs], abs=1e-12), (name, ours)
        assert (got["n_valid"], got["n_unique"]) == (want["n_valid"], want["n_unique_valid"])
        assert math.isnan(got["novelty"])  # no training SMILES given
    batch = expected["analyze_stability_for_molecules_all"]
    got = edm_metrics(mols, dtype=dtype)
    assert got["mol_stable"] == pytest.approx(batch["validity_dict"]["mol_stable"], abs=1e-12)
    assert got["atm_stable"] == pytest.approx(batch["validity_dict"]["atm_stable"], abs=1e-12)
    validity_, uniqueness, _ = batch["rdkit_metrics_[validity,uniqueness,novelty_vs_empty_list]"]
    assert (got["validity"], got["uniqueness"]) == pytest.approx((validity_, uniqueness), abs=1e-12)


@needs_fixture
def test_fixture_bond_order_table(fixture_data):
    _, expected = fixture_data
    kinds = {"python_float": float, "numpy_float32": np.float32,
             "torch_float32": lambda x: torch.tensor(x, dtype=torch.float32),
             "torch_float64": lambda x: torch.tensor(x, dtype=torch.float64)}
    assert len(expected["bond_order_table"]) > 100
    for e in expected["bond_order_table"]:
        a, b = e["atom1"], e["atom2"]
        for name, thr in e["thresholds_pm"].items():
            k = {"single": 1, "double": 2, "triple": 3}[name]
            assert BOND_LENGTHS[k][(a, b)] + MARGINS[k - 1] == thr
        assert set(e["order"]) == set(kinds)
        for kind, make in kinds.items():
            assert bond_order(a, b, make(e["distance_A"])) == e["order"][kind], (e, kind)
            assert bond_order(b, a, make(e["distance_A"])) == e["order"][kind], (e, kind)


# -- bond orders, bonds and stability -------------------------------------------------------------


def test_tables_are_symmetric_and_valences_cover_the_elements():
    assert MARGINS == (10, 5, 3)
    for table in BOND_LENGTHS.values():
        for (a, b), pm in table.items():
            assert table[(b, a)] == pm
    assert BOND_LENGTHS[1][("C", "H")] == 109 and BOND_LENGTHS[2][("S", "C")] == 160
    assert BOND_LENGTHS[3][("N", "N")] == 110
    assert {k: ALLOWED_VALENCE[k] for k in "HCNOF"} == {"H": 1, "C": 4, "N": 3, "O": 2, "F": 1}
    assert ALLOWED_VALENCE["P"] == (3, 5)


def test_bond_order_at_exact_thresholds_depends_on_dtype():
    # 100 * 1.06 is 106.0 in float64 (not < 106) but 105.99999 in float32
    assert bond_order("H", "O", 1.06) == 0
    assert bond_order("O", "H", np.float64(1.06)) == 0
    assert bond_order("H", "O", np.float32(1.06)) == 1
    assert bond_order("H", "O", torch.tensor(1.06)) == 1
    # 100 * 1.16 is 115.99999999999999 in float64 (triple) but 116.0 in float32 (double)
    assert bond_order("C", "O", 1.16) == 3
    assert bond_order("C", "O", np.float32(1.16)) == 2
    assert bond_order("C", "C", 1.54) == 1 and bond_order("C", "C", 1.34) == 2 and bond_order("C", "C", 1.20) == 3
    assert bond_order("C", "C", 1.64) == 0 and bond_order("C", "F", 1.2) == 1  # C-F: single bonds only
    assert bond_order("S", "C", 1.62) == bond_order("C", "S", 1.62) == 2
    assert bond_order("H", "Hg", 0.5) == 0  # no table entry: never bonded


def test_hydrocarbons_at_table_lengths():
    cases = [(ethane(), 1, "[H]C([H])([H])C([H])([H])[H]"), (ethene(), 2, "[H]C([H])=C([H])[H]"),
             (ethyne(), 3, "[H]C#C[H]")]
    for mol, cc, smiles in cases:
        for dtype in (np.float32, np.float64):
            bonds = infer_bonds(mol, dtype)
            assert bonds[0, 1] == bonds[1, 0] == cc
            assert np.array_equal(bonds, bonds.T) and not np.any(np.diag(bonds))
            assert int(np.triu(bonds, 1).astype(bool).sum()) == len(mol) - 1
            assert stability(mol, dtype) == (True, len(mol), len(mol))
            assert validity(mol, dtype) == (True, smiles)


def test_vectorised_bonds_equal_the_pair_loop():
    """infer_bonds(float32) equals bond_order on EDM's per-pair float32 distances, also above 25
    atoms and far from the origin."""
    rs = np.random.RandomState(3)
    mol, _ = rdkit_molecule("CCCCCCCCCO")  # 30 atoms
    mols = [mol, shifted(mol, [300.0, -120.0, 55.0])]
    for n in (5, 30):
        symbols = tuple(rs.choice(list("HCNOF"), size=n))
        mols.append(Molecule(symbols, rs.uniform(0, 0.9 * n ** (1 / 3) * 1.3, size=(n, 3))))
    for mol in mols:
        for dtype in (np.float32, np.float64):
            p = mol.positions.astype(dtype)
            want = np.zeros((len(mol), len(mol)), dtype=np.int64)
            for i in range(len(mol)):
                for j in range(i + 1, len(mol)):
                    d = np.sqrt(np.sum((p[i] - p[j]) ** 2))
                    want[i, j] = want[j, i] = bond_order(mol.symbols[i], mol.symbols[j], d)
            assert np.array_equal(infer_bonds(mol, dtype), want)
    assert stability(mols[0]) == stability(mols[1]) == (True, 30, 30)
    assert validity(mols[0]) == validity(mols[1])


def test_edge_cases():
    single = Molecule(("C",), np.zeros((1, 3)))
    assert stability(single) == (False, 0, 1) and validity(single) == (True, "C")
    far = Molecule(("H", "H"), np.array([[0, 0, 0], [5.0, 0, 0]]))
    assert stability(far) == (False, 0, 2) and validity(far) == (True, "[HH]")
    h2 = Molecule(("H", "H"), np.array([[0, 0, 0], [0.74, 0, 0]]))
    assert stability(h2) == (True, 2, 2) and validity(h2) == (True, "[H][H]")
    nh4 = ammonium()
    assert stability(nh4) == (False, 4, 5) and validity(nh4) == (False, None)
    # charges are ignored, as in EDM: NH4+ with its charge is still invalid
    charged = Molecule(nh4.symbols, nh4.positions, charges=[1, 0, 0, 0, 0])
    assert validity(charged) == (False, None)
    # given bonds are ignored by stability / validity (distances decide)
    wrong = Molecule(h2.symbols, h2.positions, bonds=np.zeros((2, 2), dtype=int))
    assert stability(wrong) == (True, 2, 2)
    empty = Molecule((), np.zeros((0, 3)))
    assert stability(empty) == (False, 0, 0)
    # an unknown-valence element bonds by the table but is never stable
    assert stability(Molecule(("Hg", "Cl"), np.array([[0, 0, 0], [2.3, 0, 0]])))[1] == 0


def test_non_finite_coordinates_are_invalid_and_empty_molecules_valid_as_in_edm():
    """EDM's code finds no bond at NaN / inf distances and calls the lone atoms a valid molecule;
    here they are invalid. An empty molecule stays valid with SMILES '', as EDM's
    compute_validity has it. Both are counted in a warning."""
    lost = [Molecule(("C", "C", "O"), np.full((3, 3), v)) for v in (np.nan, np.inf)]
    for mol in lost:
        assert validity(mol) == (False, None) and stability(mol) == (False, 0, 3)
    assert per_molecule_flags(lost)["valid"] == [False, False]
    empty = Molecule((), np.zeros((0, 3)))
    assert validity(empty) == (True, "")
    with pytest.warns(UserWarning) as caught:
        got = edm_metrics([*lost, ethane(), empty])
    said = [str(w.message) for w in caught]
    assert said == ["2 of 4 molecules have non-finite coordinates (NaN or inf): invalid and unstable",
                    "1 of 4 molecules have no atoms: valid with an empty SMILES, as EDM's compute_validity counts "
                    "them, and not stable"]
    assert (got["validity"], got["n_valid"], got["atm_stable"]) == (0.5, 2.0, 8 / 14)
    with pytest.warns(UserWarning, match="1 of 1 molecules have non-finite"):
        assert evaluate_molecules(lost[:1])["validity"] == 0.0


def test_largest_fragment_and_ties():
    methane_water = joined(ethane(), shifted(water(), [10, 0, 0]))
    assert validity(methane_water) == (True, "[H]C([H])([H])C([H])([H])[H]")
    hf = Molecule(("H", "F"), np.array([[0, 0, 0], [0.92, 0, 0]]))
    h2 = Molecule(("H", "H"), np.array([[0, 0, 0], [0.74, 0, 0]]))
    assert validity(joined(h2, shifted(hf, [5, 0, 0]))) == (True, "[H][H]")  # first of equal size
    assert validity(joined(hf, shifted(h2, [5, 0, 0]))) == (True, "[H]F")
    assert connectivity([methane_water, ethane(), ammonium()]) == 0.5
    assert math.isnan(connectivity([ammonium()]))


# -- EDM summaries: uniqueness and novelty --------------------------------------------------------


def test_uniqueness_and_novelty():
    e = ethane()
    perm = [7, 3, 1, 5, 0, 2, 6, 4]
    e2 = Molecule(tuple(e.symbols[i] for i in perm), e.positions[perm] + 3.0)
    mols = [e, e2, ethene(), ammonium()]
    got = edm_metrics(mols, train_smiles=["CC", "not a smiles"])
    assert (got["validity"], got["n_valid"], got["n_unique"]) == (0.75, 3.0, 2.0)
    assert got["uniqueness"] == pytest.approx(2 / 3)
    assert got["novelty"] == 0.5  # ethane is in the training set (written without H), ethene is not
    assert got["mol_stable"] == 0.75 and got["atm_stable"] == pytest.approx(26 / 27)
    explicit = edm_metrics(mols, train_smiles=["[H]C([H])=C([H])[H]", "[H]C([H])([H])C([H])([H])[H]"])
    assert explicit["novelty"] == 0.0
    assert math.isnan(edm_metrics(mols)["novelty"])
    none_valid = edm_metrics([ammonium()], train_smiles=["C"])
    assert none_valid["validity"] == 0.0
    assert math.isnan(none_valid["uniqueness"]) and math.isnan(none_valid["novelty"])
    nothing = edm_metrics([])
    assert all(math.isnan(nothing[k]) for k in ("atm_stable", "mol_stable", "validity", "uniqueness"))
    assert canonical_smiles("[H]C([H])([H])[H]") == canonical_smiles("C") == "C"
    assert canonical_smiles("C1CC") is None


def test_per_molecule_flags():
    flags = per_molecule_flags([ethene(), ammonium(), Molecule(("O",), np.zeros((1, 3)))])
    assert flags == {"stable": [True, False, False], "valid": [True, False, True],
                     "smiles": ["[H]C([H])=C([H])[H]", None, "O"], "n_atoms": [6, 5, 1],
                     "n_stable_atoms": [6, 4, 0]}


# -- distribution metrics -------------------------------------------------------------------------


def test_wasserstein1_against_scipy():
    from scipy.stats import wasserstein_distance

    rs = np.random.RandomState(0)
    for n, m in [(1, 1), (1, 7), (5, 3), (40, 17), (200, 333), (1000, 1000)]:
        a, b = rs.normal(0, 1, n), rs.gamma(2.0, 1.0, m)
        assert wasserstein1(a, b) == pytest.approx(wasserstein_distance(a, b), rel=1e-12, abs=1e-14)
    ties_a, ties_b = rs.randint(0, 4, 50).astype(float), rs.randint(1, 6, 21).astype(float)
    assert wasserstein1(ties_a, ties_b) == pytest.approx(wasserstein_distance(ties_a, ties_b), rel=1e-12)
    a = rs.normal(size=30)
    assert wasserstein1(a, a[::-1]) == 0.0
    assert wasserstein1(a, a + 0.25) == pytest.approx(0.25)
    assert math.isnan(wasserstein1([], [1.0]))


def test_bond_lengths_and_angles():
    w = water()
    angles = bond_angles([w])
    assert list(angles) == [("H", "O", "H")]
    assert angles[("H", "O", "H")] == pytest.approx([104.52], abs=1e-9)
    lengths = bond_lengths([w, ethene()])
    assert lengths[("H", "O", 1)] == pytest.approx([0.9572, 0.9572])
    assert lengths[("C", "C", 2)] == pytest.approx([1.34])
    assert lengths[("H", "C", 1)] == pytest.approx([1.09] * 4)
    ang = bond_angles([ethane()])
    assert ang[("H", "C", "H")] == pytest.approx([109.4712206] * 6, abs=1e-6)
    assert ang[("H", "C", "C")] == pytest.approx([109.4712206] * 6, abs=1e-6)
    # given bonds are used when set: no bonds, no lengths
    assert bond_lengths([Molecule(w.symbols, w.positions, bonds=np.zeros((3, 3), dtype=int))]) == {}


def test_distribution_metrics_hand_values():
    ref = [ethane(), ethane(), water()]
    assert bond_length_w1(ref, ref) == 0.0 and bond_angle_w1(ref, ref) == 0.0 and atom_type_tv(ref, ref) == 0.0
    # one kind stretched: C-C by 0.02; C-H and O-H unchanged. Weighted by reference counts (2 C-C, 12 C-H, 2 O-H)
    sample = [ethane(cc=1.56), water()]
    assert bond_length_w1(sample, ref) == pytest.approx(0.02 * 2 / 16)
    # water angle 100 vs 104.52; ethane angles unchanged (only H-O-H is shared)
    assert bond_angle_w1([water(angle=100.0)], ref) == pytest.approx(4.52)
    methane_like = [Molecule(("C", "H", "H", "H", "H"), np.zeros((5, 3)))]
    assert atom_type_tv(methane_like, [water()]) == pytest.approx(0.5 * (0.2 + abs(0.8 - 2 / 3) + 1 / 3))
    assert math.isnan(bond_length_w1([Molecule(("C",), np.zeros((1, 3)))], ref))
    assert math.isnan(atom_type_tv([], ref))


def test_a_lost_molecule_with_its_own_bonds_adds_no_lengths_and_odd_bond_orders_are_refused():
    """A NaN molecule carrying a bond matrix turned the set's bond-length and angle distances
    into NaN; an aromatic 1.5 was cast to 1, and 4 or -1 became bond kinds of their own."""
    ref = [ethane(), water()]
    w = water()
    bonded = np.array([[0, 1, 1], [1, 0, 0], [1, 0, 0]])
    lost = Molecule(w.symbols, np.full((3, 3), np.nan), bonds=bonded)
    assert bond_length_w1([ethane(cc=1.56), lost], ref) == bond_length_w1([ethane(cc=1.56)], ref)
    assert bond_angle_w1([water(angle=100.0), lost], ref) == pytest.approx(4.52)
    for order in (1.5, 4, -1):
        with pytest.raises(ValueError, match=f"bond order {order}; orders are 0"):
            Molecule(w.symbols, w.positions, bonds=bonded * order)
    with pytest.raises(ValueError, match="symmetric"):
        Molecule(w.symbols, w.positions, bonds=np.array([["1"] * 3] * 3))
    assert Molecule(w.symbols, w.positions, bonds=bonded.astype(float)).bonds.dtype == np.int64


def test_mmff_against_rdkit():
    from rdkit.Chem import rdForceFieldHelpers as ffh

    mol, rd = rdkit_molecule("OCC(C)=O")
    want = ffh.MMFFGetMoleculeForceField(rd, ffh.MMFFGetMoleculeProperties(rd)).CalcEnergy()
    assert mmff_energy(mol) == pytest.approx(want, rel=1e-10)
    inferred = Molecule(mol.symbols, mol.positions)  # bonds inferred from the ETKDG geometry
    assert np.array_equal(infer_bonds(inferred), mol.bonds)
    assert mmff_energy(inferred) == pytest.approx(want, rel=1e-10)
    assert mmff_energy_per_atom([mol, ammonium()]) == pytest.approx(want / len(mol), rel=1e-10)
    assert mmff_energy(ammonium()) is None  # does not sanitise
    assert math.isnan(mmff_energy_per_atom([ammonium()]))


def test_molecules_mmff_cannot_type_are_counted():
    """Borane is EDM-valid but MMFF94 has no boron type: the energy averages the other valid
    molecule alone, and ``mmff_n`` / ``mmff_frac`` say so (1 of 2 valid; NH4 is not valid)."""
    mol, rd = rdkit_molecule("OCC(C)=O")
    want = ffh_energy(rd) / len(mol)
    bh3 = borane()
    assert validity(bh3)[0] and mmff_energy(bh3) is None
    dist = distribution_metrics([mol, bh3, ammonium()], [mol])
    assert dist["mmff_energy_per_atom"] == pytest.approx(want, rel=1e-10)
    assert (dist["mmff_n"], dist["mmff_frac"]) == (1.0, 0.5)
    alone = distribution_metrics([bh3], [mol])
    assert math.isnan(alone["mmff_energy_per_atom"]) and (alone["mmff_n"], alone["mmff_frac"]) == (0.0, 0.0)
    none_valid = distribution_metrics([ammonium()], [mol])
    assert none_valid["mmff_n"] == 0.0 and math.isnan(none_valid["mmff_frac"])


def test_evaluate_molecules():
    ref = [rdkit_molecule(s, seed=i)[0] for i, s in enumerate(["CCO", "CC=O", "CC#N", "CCN"])]
    samples = [Molecule(m.symbols, m.positions) for m in ref] + [ammonium()]
    out = evaluate_molecules(samples, train_smiles=["CCO"])
    assert set(out) == {"atm_stable", "mol_stable", "validity", "uniqueness", "novelty", "n_valid", "n_unique",
                        "connectivity"}
    assert (out["validity"], out["uniqueness"], out["novelty"], out["connectivity"]) == (0.8, 1.0, 0.75, 1.0)
    full = evaluate_molecules(samples, reference=ref)
    assert {k: full[k] for k in out if k != "novelty"} == {k: out[k] for k in out if k != "novelty"}
    assert full["bond_length_w1"] > 0 and full["bond_angle_w1"] > 0  # NH4's N-H bonds and angles against CCN's
    same = evaluate_molecules(samples[:4], reference=ref)
    assert (same["bond_length_w1"], same["bond_angle_w1"], same["atom_type_tv"]) == (0.0, 0.0, 0.0)
    ref_counts, sample_counts = {"C": 8, "H": 20, "O": 2, "N": 2}, {"C": 8, "H": 24, "O": 2, "N": 3}
    tv = 0.5 * sum(abs(ref_counts[k] / 32 - sample_counts[k] / 37) for k in ref_counts)
    assert full["atom_type_tv"] == pytest.approx(tv)
    dist = distribution_metrics(samples, ref)
    assert dist == {k: full[k] for k in dist}
    assert np.isfinite(full["mmff_energy_per_atom"])
    assert (full["mmff_n"], full["mmff_frac"]) == (4.0, 1.0)  # the four valid ones, all typed
    empty = evaluate_molecules([], reference=ref)
    assert empty["mmff_n"] == 0.0
    assert all(math.isnan(v) for k, v in empty.items() if k not in ("n_valid", "n_unique", "mmff_n"))


def test_nanometre_coordinates_are_warned_about():
    """Molecules in nm were all invalid without any other sign."""
    nm = [Molecule(m.symbols, m.positions / 10) for m in (ethane(), water())]
    with pytest.warns(UserWarning, match=r"nearest neighbour is 0\.109 Angstrom.*nanometres"):
        evaluate_molecules(nm)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        evaluate_molecules([ethane(), water()])
