"""Wyckoff letters and their equivalent relabellings (polydiff_crystals.wyckoff).

Structures are built from Wyckoff positions of 18 space groups (all seven crystal systems); every normaliser
element must turn them into the same crystal (StructureMatcher) with the predicted letters.  The derived letter
permutations are compared with pymatgen's independent table for all 230 groups."""

import gzip
import json
from collections import Counter
from importlib import resources

import numpy as np
import pandas as pd
import pytest
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Lattice, Structure
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

from polydiff.plugin import shared_dir
from polydiff_crystals import wyckoff as W

pytestmark = pytest.mark.usefixtures("one_thread")

PEROV = shared_dir() / "data" / "crystals_cdvae" / "perov_5" / "val.csv"


def needs_perov(test):
    skip = pytest.mark.skipif(not PEROV.is_file(), reason=f"shared data {PEROV} not found (set POLYDIFF_SHARED)")
    return skip(pytest.mark.shared(test))


T = (0.23, 0.37, 0.11)  # free parameters of positions without any
# (space group, lattice parameters, [(species, Wyckoff letter, free parameters)])
CASES = [
    (2, (4.3, 5.1, 5.9, 82, 77, 68), [("Na", "a", T), ("Cl", "d", T), ("O", "i", (0.21, 0.33, 0.41))]),
    (14, (5.2, 6.1, 7.3, 90, 104, 90), [("Fe", "a", T), ("Co", "d", T), ("O", "e", (0.23, 0.11, 0.31))]),
    (15, (6.3, 5.7, 7.1, 90, 107, 90), [("Mg", "a", T), ("Si", "e", (0, 0.37, 0)), ("O", "f", (0.21, 0.13, 0.07))]),
    (47, (3.1, 3.9, 4.7, 90, 90, 90), [("Li", "a", T), ("Na", "h", T), ("K", "u", (0, 0.22, 0.31))]),
    (
        62,
        (5.5, 7.7, 5.4, 90, 90, 90),
        [("Ca", "c", (0.06, 0, 0.98)), ("Ti", "b", T), ("O", "c", (0.48, 0, 0.08)), ("O", "d", (0.30, 0.05, 0.70))],
    ),
    (63, (3.9, 10.2, 4.6, 90, 90, 90), [("U", "c", (0, 0.36, 0)), ("Al", "a", T), ("Si", "f", (0, 0.13, 0.06))]),
    (123, (3.9, 3.9, 4.4, 90, 90, 90), [("Ba", "a", T), ("Ti", "d", T), ("O", "e", T), ("S", "g", (0, 0, 0.27))]),
    (139, (4.0, 4.0, 13.1, 90, 90, 90), [("Th", "a", T), ("Cr", "d", T), ("Si", "e", (0, 0, 0.38))]),
    (
        143,
        (4.1, 4.1, 5.3, 90, 90, 120),
        [("Fe", "a", (0, 0, 0)), ("Co", "b", (0, 0, 0.31)), ("O", "d", (0.31, 0.12, 0.6))],
    ),
    (166, (3.0, 3.0, 15.6, 90, 90, 120), [("Li", "a", T), ("Co", "b", T), ("O", "c", (0, 0, 0.24))]),
    (167, (4.76, 4.76, 13.0, 90, 90, 120), [("Al", "c", (0, 0, 0.352)), ("O", "e", (0.306, 0, 0))]),
    (191, (3.3, 3.3, 3.6, 90, 90, 120), [("Al", "a", T), ("B", "d", T), ("Ga", "c", T)]),
    (194, (3.6, 3.6, 5.0, 90, 90, 120), [("Ni", "a", T), ("As", "c", T)]),
    (208, (6.5, 6.5, 6.5, 90, 90, 90), [("Na", "a", T), ("Cl", "b", T), ("O", "k", (0, 0.13, 0))]),
    (221, (3.9, 3.9, 3.9, 90, 90, 90), [("Sr", "a", T), ("Ti", "b", T), ("O", "c", T)]),
    (225, (5.8, 5.8, 5.8, 90, 90, 90), [("Na", "a", T), ("Cl", "b", T), ("F", "c", T)]),
    (227, (8.1, 8.1, 8.1, 90, 90, 90), [("Mg", "a", T), ("Al", "d", T), ("O", "e", (0.263, 0, 0))]),
    (229, (5.9, 5.9, 5.9, 90, 90, 90), [("Fe", "a", T), ("Al", "b", T)]),
]
IDS = [str(c[0]) for c in CASES]


def build(sg: int, params, sites) -> Structure:
    """A structure with atoms on the given Wyckoff positions, in the standard setting of ``sg``."""
    g = W.space_group(sg)
    species, coords = [], []
    for sp, letter, t in sites:
        w = g.wyckoff(letter)
        pts = np.mod(w.ops[:, :, :3] @ np.asarray(t, float) + w.ops[:, :, 3], 1.0)
        uniq: list[np.ndarray] = []
        for q in pts:
            if not any(np.allclose((q - u + 0.5) % 1 - 0.5, 0, atol=1e-6) for u in uniq):
                uniq.append(q)
        assert len(uniq) == w.multiplicity, (sg, letter)
        species += [sp] * len(uniq)
        coords += uniq
    s = Structure(Lattice.from_parameters(*params), species, coords)
    assert (s.distance_matrix + 100 * np.eye(len(s))).min() > 1.0  # no colliding atoms
    return s


def species_letters(structure: Structure, letters) -> Counter:
    return Counter(zip((str(s) for s in structure.species), letters, strict=True))


def pymatgen_table() -> dict[int, set[tuple]]:
    path = resources.files("pymatgen.analysis.prototypes") / "wyckoff-position-relabelings.json.gz"
    if not path.is_file():
        pytest.skip(f"pymatgen table {path} not found")
    with gzip.open(str(path), "rt") as f:
        raw = json.load(f)
    # layout: {"<space group>": [{"<ord(old letter)>": "<new letter>", ...}, ...]}
    return {int(n): {key({chr(int(k)): v for k, v in m.items()}) for m in maps} for n, maps in raw.items()}


def key(m) -> tuple:
    return tuple(sorted(m.items()))


@pytest.fixture(scope="module")
def matchers():
    return StructureMatcher(), StructureMatcher(scale=False)


@pytest.mark.parametrize(("sg", "params", "sites"), CASES, ids=IDS)
def test_every_normaliser_element_gives_same_crystal(sg, params, sites, matchers):
    std, number, letters = W.standardize(build(sg, params, sites))
    assert number == sg
    assert letters == W.assign_letters(std, sg)  # spglib's letters = our own in the standard setting
    elements = W.normaliser_elements(sg)
    assert len(elements) >= 1
    seen = set()
    for el in elements:
        new, new_letters = W.apply_normaliser(std, sg, el, letters)
        assert np.allclose(new.lattice.matrix, std.lattice.matrix)  # isometries keep the lattice
        for m in matchers:
            assert m.fit(std, new), (el.matrix.tolist(), el.shift)
        assert new_letters == [el.relabelling[x] for x in letters]
        assert W.assign_letters(new, sg) == new_letters  # prediction = letters read off the moved crystal
        # a fresh symmetry analysis agrees (spglib keeps the origin of a cell already in a standard setting)
        n2, spg_letters = W.wyckoff_letters(new)
        assert n2 == sg
        assert species_letters(new, spg_letters) == species_letters(new, new_letters)
        seen.add(tuple(new_letters))
    # every distinct relabelling of the occupied letters shows up among the elements
    expected = {tuple(r[x] for x in letters) for r in W.wyckoff_relabellings(sg)}
    assert seen == expected


@pytest.mark.parametrize(("sg", "params", "sites"), [c for c in CASES if c[0] in (47, 62)], ids=["47", "62"])
def test_axis_permutations_reexpress_orthorhombic_crystal(sg, params, sites, matchers):
    std, _, letters = W.standardize(build(sg, params, sites))
    generic = W.normaliser_elements(sg)
    extended = W.normaliser_elements(sg, axis_permutations=True)
    assert len(extended) >= len(generic)
    for el in extended:
        new, new_letters = W.apply_normaliser(std, sg, el, letters)
        assert sorted(new.lattice.abc) == pytest.approx(sorted(std.lattice.abc))
        for m in matchers:
            assert m.fit(std, new)
        assert W.assign_letters(new, sg) == new_letters
        assert W.wyckoff_letters(new)[0] == sg
    if sg == 47:  # Pmmm: all six axis permutations keep the symbol
        assert len({tuple(np.round(W.apply_normaliser(std, sg, el)[0].lattice.abc, 6)) for el in extended}) == 6


def test_relabellings_match_pymatgen_table():
    table = pymatgen_table()
    assert sorted(table) == list(range(1, 231))
    differ = []
    for n in range(1, 231):
        ours = {key(m) for m in W.wyckoff_relabellings(n)}
        theirs = table[n]
        assert ours <= theirs, n  # every relabelling we derive is in the table
        if ours != theirs:
            differ.append(n)
        system = W.space_group(n).crystal_system
        if system == "orthorhombic":
            # the table also permutes axes (an isometry only for a = b = c): with those the sets agree
            assert {key(m) for m in W.wyckoff_relabellings(n, axis_permutations=True)} == theirs, n
        elif n != 15:
            assert ours == theirs, n
    # C2/c: the table adds x -> (-x - z + 1/4, -y + 1/4, -z), a change to another C-centred cell (isometric only
    # for a special metric, c cos(beta) = -a/2); that element generates the rest
    extra = W.induced_relabelling(15, [[-1, 0, -1], [0, -1, 0], [0, 0, -1]], [0.25, 0.25, 0.0])
    base = [dict(m) for m in W.wyckoff_relabellings(15)]
    closure = {key(m) for m in base} | {key({k: r[extra[k]] for k in extra}) for r in base}
    assert closure == table[15]
    assert 15 in differ and all(n == 15 or 16 <= n <= 74 for n in differ)


def test_relabelling_group_properties():
    from pyxtal.symmetry import Group

    for n in range(1, 231):
        g = W.space_group(n)
        rels = W.wyckoff_relabellings(n)
        keys = {key(m) for m in rels}
        assert len(keys) == len(rels)
        assert rels[0] == {w.letter: w.letter for w in g.wyckoffs}  # identity first
        site = {}
        for wp in Group(n).Wyckoff_positions:
            wp.get_site_symmetry()
            site[wp.letter] = (wp.multiplicity, wp.site_symm)
        for r in rels:
            assert sorted(r) == sorted(r.values()) == sorted(site)  # a permutation of all letters
            assert all(site[a] == site[b] for a, b in r.items()), (n, r)  # multiplicity and site symmetry kept
            for r2 in rels:
                assert key({a: r2[r[a]] for a in r}) in keys  # closed under composition


def test_all_groups_and_options():
    for n in range(1, 231):
        rels = W.wyckoff_relabellings(n)
        proper = W.wyckoff_relabellings(n, proper_only=True)
        assert {key(m) for m in proper} <= {key(m) for m in rels}
        assert all(el.proper for el in W.normaliser_elements(n, proper_only=True))
        mult = [w.multiplicity for w in W.space_group(n).wyckoffs]
        assert mult == sorted(mult)  # letters run from special to general (assign_letters relies on it)
    assert len(W.wyckoff_relabellings(1)) == 1
    assert len(W.wyckoff_relabellings(2)) == 8  # the eight inversion centres of P-1 are interchangeable
    # I4_132: only improper maps (a chiral crystal onto its mirror image) swap 8a and 8b
    assert any(r["a"] == "b" for r in W.wyckoff_relabellings(214))
    assert not any(r["a"] == "b" for r in W.wyckoff_relabellings(214, proper_only=True))


@pytest.mark.filterwarnings("ignore:Set OLD_ERROR_HANDLING:DeprecationWarning")  # spglib via pymatgen
def test_wyckoff_letters_like_spacegroup_analyzer():
    for sg, params, sites in CASES[::3]:
        s = build(sg, params, sites)
        number, letters = W.wyckoff_letters(s)
        sga = SpacegroupAnalyzer(s, symprec=0.1)
        assert number == sga.get_space_group_number()
        sym = sga.get_symmetrized_structure()
        theirs = [w.lstrip("0123456789") for w in sym.wyckoff_symbols]
        per_site = [""] * len(s)
        for group, w in zip(sym.equivalent_indices, theirs, strict=True):
            for i in group:
                per_site[i] = w
        # same labelling, or an equivalent one (the origin spglib picks may differ between Hall settings)
        assert any([r[x] for x in per_site] == letters for r in W.wyckoff_relabellings(number))


def test_augmentation_is_seeded(matchers):
    sg, params, sites = next(c for c in CASES if c[0] == 225)
    s = build(sg, params, sites)
    a = W.wyckoff_augment(s, np.random.default_rng(7))
    b = W.wyckoff_augment(s, np.random.default_rng(7))
    assert a[1] == b[1] == 225 and a[2] == b[2]
    assert np.array_equal(a[0].frac_coords, b[0].frac_coords)
    drawn = {tuple(W.wyckoff_augment(s, np.random.default_rng(seed))[2]) for seed in range(16)}
    assert len(drawn) == 2  # rock salt + fluorite-like F: {a, b} swapped or not
    for out, letters in W.augment_all(s):
        assert all(m.fit(s, out) for m in matchers)
        assert W.assign_letters(out, 225) == letters
    assert len(W.augment_all(s)) == 2
    # a crystal on letters no relabelling moves has a single description
    bcc = Structure(Lattice.cubic(3.0), ["Fe", "Fe"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    assert len(W.augment_all(bcc)) == 1


@needs_perov
def test_perovskites_augment_to_same_crystal(matchers):
    frame = pd.read_csv(PEROV, nrows=12)
    for i, cif in enumerate(frame["cif"]):
        s = Structure.from_str(cif, fmt="cif")
        outs = W.augment_all(s)
        assert 1 <= len(outs) <= len(W.wyckoff_relabellings(W.wyckoff_letters(s)[0]))
        for out, letters in outs:
            assert matchers[0].fit(s, out), i
            assert W.assign_letters(out, W.wyckoff_letters(s)[0]) == letters


def test_bad_input():
    with pytest.raises(ValueError, match=r"1\.\.230"):
        W.space_group(231)
    with pytest.raises(ValueError, match="does not normalise"):
        W.induced_relabelling(62, np.eye(3), [0.25, 0, 0])
    with pytest.raises(ValueError, match="determinant"):
        W.induced_relabelling(62, 2 * np.eye(3), [0, 0, 0])
    s = Structure(Lattice.cubic(4.0), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    std, n, letters = W.standardize(s)
    with pytest.raises(ValueError, match="another space group"):
        W.apply_normaliser(std, n, W.normaliser_elements(225)[0], letters)
    with pytest.raises(ValueError, match="letters for a structure"):
        W.apply_normaliser(std, n, W.normaliser_elements(n)[0], letters[:1])
    disordered = Structure(Lattice.cubic(4.0), [{"Na": 0.5, "K": 0.5}], [[0, 0, 0]])
    with pytest.raises(ValueError, match="ordered"):
        W.standardize(disordered)
    # a generated sample that is no crystal (the matrix model returns these), or no structure at all
    from polydiff_crystals import Undecodable

    with pytest.raises(TypeError, match=r"need a pymatgen Structure; sample_0003 is Undecodable \(lattice: bad\)"):
        W.wyckoff_letters(Undecodable("sample_0003", "lattice: bad"))
    with pytest.raises(TypeError, match="need a pymatgen Structure; got str"):
        W.standardize("NaCl")
