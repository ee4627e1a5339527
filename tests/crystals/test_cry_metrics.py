"""Tests of the crystal-generation metrics (polydiff_crystals.metrics).

Hand-built cases check periodic validity (boundary and skewed-cell minimum images), SMACT rules, matching-based
uniqueness / novelty, space-group statistics and coverage arithmetic. The shared fixture (values computed with
CDVAE's own code) checks every per-structure flag and number, our own fingerprints, and all five comparison cases
to 1e-8.
"""

import itertools
import json
import math
import time
from collections import Counter

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from polydiff.plugin import shared_dir
from polydiff_crystals import metrics as M

pytestmark = pytest.mark.usefixtures("one_thread")

FIX = shared_dir() / "fixtures" / "crystal_metrics"
SETS = [
    "carbon_generated_test40",
    "carbon_reference_val40",
    "perov_generated_test40",
    "perov_reference_val40",
    "broken8",
]
CASES = {
    "carbon_test40_vs_val40": (["carbon_generated_test40"], "carbon_reference_val40", "carbon"),
    "carbon_val40_vs_val40": (["carbon_reference_val40"], "carbon_reference_val40", "carbon_24"),
    "perov_test40_vs_val40": (["perov_generated_test40"], "perov_reference_val40", "perovskite"),
    "perov_test40+broken8_vs_val40": (["perov_generated_test40", "broken8"], "perov_reference_val40", "perov_5"),
    "perov_val40_vs_val40": (["perov_reference_val40"], "perov_reference_val40", "perovskite"),
}
COV_KEYS = ["cov_recall", "cov_precision", "amsd_recall", "amsd_precision", "amcd_recall", "amcd_precision"]
DIST_KEYS = ["struc_recall_dist", "struc_precision_dist", "comp_recall_dist", "comp_precision_dist"]
TOL = 1e-8


def needs_fixture(test):
    skip = pytest.mark.skipif(
        not FIX.is_dir(), reason=f"shared fixture {FIX} not found (set POLYDIFF_SHARED to the shared folder)"
    )
    return skip(pytest.mark.shared(test))


def close(a, b, tol=TOL):
    return abs(a - b) <= tol * max(1.0, abs(b))


# ------------------------------------------------------------------------------------------------ hand-built cases


def brute_force_min_distance(structure):
    """Independent minimum-image distance: all pairs, all images in -3..3 along each axis."""
    m = structure.lattice.matrix
    frac = structure.frac_coords
    best = math.inf
    for i, j in itertools.combinations(range(len(structure)), 2):
        for n in itertools.product(range(-3, 4), repeat=3):
            best = min(best, float(np.linalg.norm((frac[j] - frac[i] + np.array(n)) @ m)))
    return best


def rock_salt(a=5.64):
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(a), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def test_pair_close_only_across_boundary_is_invalid():
    s = Structure(Lattice.cubic(4.0), ["Na", "Cl"], [[0.01, 0.5, 0.5], [0.99, 0.5, 0.5]])
    assert np.linalg.norm(s.cart_coords[0] - s.cart_coords[1]) > 3.9  # far apart without periodicity
    assert M.min_periodic_distance(s) == pytest.approx(0.08, abs=1e-9)
    assert not M.structure_validity(s)
    assert M.structure_validity(s, cutoff=0.05)


def test_skewed_monoclinic_needs_true_minimum_image():
    s = Structure(Lattice.from_parameters(5.0, 4.0, 4.5, 90, 170, 90), ["Na", "Cl"], [[0, 0, 0], [0.55, 0, 0.5]])
    diff = s.frac_coords[1] - s.frac_coords[0]
    naive = float(np.linalg.norm((diff - np.round(diff)) @ s.lattice.matrix))
    assert naive > 4.0  # the round(frac difference) convention misses the close image
    true_min = brute_force_min_distance(s)
    assert true_min < 0.5
    assert M.min_periodic_distance(s) == pytest.approx(true_min, abs=1e-9)
    assert not M.structure_validity(s)


def test_rock_salt_is_valid():
    s = rock_salt()
    assert M.min_periodic_distance(s) == pytest.approx(2.82, abs=1e-9)
    assert M.structure_validity(s)
    elems, comps = M.reduced_composition([site.specie.Z for site in s])
    assert (elems, comps) == ((11, 17), (1, 1))
    assert M.composition_validity(elems, comps)
    flags = M.per_crystal_flags([s, None])
    assert flags["constructed"] == [True, False]
    assert flags["valid"] == [True, False]
    assert flags["spacegroup"] == [225, None]
    assert flags["n_elements"][0] == 2
    assert flags["density"][0] == pytest.approx(s.density)


def test_single_atom_and_tiny_cells():
    one = Structure(Lattice.cubic(3.0), ["Cu"], [[0, 0, 0]])
    assert M.min_periodic_distance(one) == math.inf
    assert M.structure_validity(one)  # only self-images exist, which CDVAE does not check
    tiny = Structure(Lattice.cubic(0.4), ["Cu"], [[0, 0, 0]])
    assert not M.structure_validity(tiny)  # volume 0.064 < 0.1


def test_cells_under_the_minimum_volume_are_fingerprinted_as_cdvae_does():
    """CDVAE builds a cell under 0.1 A^3 before its volume check: not constructed, not valid, but fingerprinted,
    so it takes part in COV's distances. Ours gives the same fingerprint as matminer on that structure (arrays and
    Structure inputs alike); a cell CrystalNN would need minutes for is left out with a warning."""
    from matminer.featurizers.site.fingerprint import CrystalNNFingerprint

    tiny = Structure(Lattice.cubic(0.45), ["C"], [[0, 0, 0]])  # 0.091 A^3
    arrays = {"frac_coords": [[0, 0, 0]], "atom_types": [6], "lengths": [0.45] * 3, "angles": [90] * 3}
    assert M.crystal_from_arrays(**arrays) == (None, "unrealistically_small_lattice")
    want = np.asarray(CrystalNNFingerprint.from_preset("ops").featurize(tiny, 0))
    for item in (tiny, arrays):
        struct_fps, comp_fps = M.fingerprints([item])
        assert struct_fps[0] is not None and comp_fps[0] is not None
        assert np.abs(struct_fps[0] - want).max() <= 1e-9
    flags = M.per_crystal_flags([arrays], fingerprints=M.fingerprints([arrays]))
    assert (flags["constructed"], flags["struct_valid"], flags["valid"], flags["fingerprint_ok"]) == (
        [False], [False], [False], [True]
    )
    # the reference is a buildable cell just over the limit, fingerprinted alike: only the tiny sample covers it
    just_over = Structure(Lattice.cubic(0.47), ["C"], [[0, 0, 0]])
    result = M.evaluate_crystals([arrays, Structure(Lattice.cubic(3.0), ["C"], [[0, 0, 0]])], [just_over],
                                 cutoffs="carbon")  # fmt: skip
    assert (result["n_fingerprint_failed"], result["valid"], result["struct_valid"]) == (0.0, 0.5, 0.5)
    assert (result["cov_recall"], result["cov_precision"]) == (1.0, 0.5)
    far_too_small = Structure(Lattice.cubic(0.05), ["C"], [[0, 0, 0]])
    assert M._crystalnn_cost(far_too_small) > M.CRYSTALNN_BUDGET >= M._crystalnn_cost(tiny)
    with pytest.warns(UserWarning, match="far under"):
        assert M.fingerprints([far_too_small]) == ([None], [None])


def test_a_progress_bar_shows_for_a_minute_of_fingerprints(monkeypatch):
    """CrystalNN takes about 0.4 s per crystal: evaluating against the default data's 150 reference
    crystals shows a bar (it had none below 200), a handful of crystals none."""
    bars = []
    monkeypatch.setattr(M, "_compute_batch", lambda batch: [(np.zeros(61), np.zeros(132))] * len(batch))
    monkeypatch.setattr(M, "_progress_bar", lambda total, desc: bars.append(total))
    monkeypatch.setattr(M, "_FP_CACHE", {})
    crystals = [Structure(Lattice.cubic(3.0 + 0.01 * i), ["Na"], [[0, 0, 0]]) for i in range(155)]
    M.fingerprints(crystals[:5])
    assert bars == []
    M.fingerprints(crystals[5:])
    assert bars == [150]


def test_cells_with_a_very_long_axis_are_skipped_not_hung_on():
    """A site not enclosed by its neighbours within 7 A (an unbounded Voronoi cell) makes pymatgen's VoronoiNN
    double its radius up to the cell's diagonal: with a 10^4 A axis CrystalNN runs for hours (CDVAE too). Such a
    cell gets no fingerprint, with a warning; a layer with a usual vacuum gap, and a large bulk cell, are
    fingerprinted as usual."""

    def slab(c: float, z: float = 0.3) -> Structure:
        return Structure(Lattice.orthorhombic(3, 3, c), ["C", "O"], [[0, 0, 0], [0.5, 0.5, z]])

    assert M._enclosed_sites(slab(1e4), 7.0) == 0  # each site sees only its own plane
    assert M._enclosed_sites(slab(1e4, 1e-4), 7.0) == 0  # two planes 1 A apart: both sites open on one side
    assert M._enclosed_sites(slab(6.0, 0.5), 7.0) == 2
    bulk = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    big = bulk * (4, 4, 4)  # 512 sites: looked at site by site, all enclosed, so costed at 7 A
    assert M._enclosed_sites(big, 7.0) == len(big)
    assert M._crystalnn_cost(big) == pytest.approx(len(big) ** 2 * 4 / 3 * math.pi * 7.0**3 / big.volume)
    graphene = Structure(Lattice.hexagonal(2.46, 23.35), ["C", "C"], [[0, 0, 0.5], [1 / 3, 2 / 3, 0.5]])
    for cheap in (slab(40.0), graphene, big):
        assert M._crystalnn_cost(cheap) <= M.CRYSTALNN_BUDGET
    assert M._crystalnn_cost(slab(1e4)) > M.CRYSTALNN_BUDGET
    assert M._crystalnn_cost(slab(1e4, 1e-4)) > M.CRYSTALNN_BUDGET
    start = time.perf_counter()
    with pytest.warns(UserWarning, match="very long axis"):
        struct_fps, comp_fps = M.fingerprints([slab(1e4), slab(1e4, 1e-4), graphene])
    assert struct_fps[:2] == [None, None] and comp_fps[:2] == [None, None]
    assert struct_fps[2] is not None and comp_fps[2] is not None
    assert time.perf_counter() - start < 60


@pytest.mark.parametrize(
    ("elements", "counts", "expected"),
    [
        (["Rb", "Li", "F"], [1, 1, 3], False),  # +1 +1 -3: no neutral combination
        (["Li", "Na", "O"], [1, 1, 3], False),
        (["K", "Mg", "O"], [1, 1, 3], True),  # passes with O(-1), as smact 2.2.1 allows
        (["Na", "Cl"], [4, 4], True),  # gcd-reduced to NaCl
        (["Cu", "Zn"], [3, 1], True),  # all metals: valid as an alloy
        (["Fe", "Al"], [3, 1], True),
        (["C"], [24], True),  # single element
        (["O"], [2], True),
        (["Na", "Cl", "Cl"], [1, 1, 1], False),  # merged: NaCl2
        ([26, 8], [2, 3], True),  # atomic numbers work too: Fe2O3
    ],
)
def test_composition_validity(elements, counts, expected):
    assert M.composition_validity(elements, counts) is expected


def test_crystal_from_arrays_reasons():
    frac, types = np.array([[0, 0, 0], [0.5, 0.5, 0.5]]), np.array([11, 17])
    s, reason = M.crystal_from_arrays(frac, types, [4, 4, 4], [90, 90, 90])
    assert reason is None and isinstance(s, Structure) and s.volume == pytest.approx(64)
    assert M.crystal_from_arrays(frac, types, [-4, 4, 4], [90, 90, 90]) == (None, "non_positive_lattice")
    assert M.crystal_from_arrays(frac, types, [0, 4, 4], [90, 90, 90]) == (None, "unrealistically_small_lattice")
    assert M.crystal_from_arrays(frac, types, [0.3, 0.3, 0.3], [90, 90, 90]) == (None, "unrealistically_small_lattice")
    assert M.crystal_from_arrays(frac, types, [np.nan, 4, 4], [90, 90, 90]) == (None, "non_finite_values")
    assert M.crystal_from_arrays(frac, [11, 0], [4, 4, 4], [90, 90, 90]) == (None, "invalid_atom_types")
    with pytest.raises(ValueError, match="frac_coords"):
        M.crystal_from_arrays(frac[:1], types, [4, 4, 4], [90, 90, 90])
    # a crystal that cannot be built keeps its composition verdict, as in CDVAE
    flags = M.per_crystal_flags([{"frac_coords": frac, "atom_types": types, "lengths": [-4, 4, 4], "angles": [90] * 3}])
    assert flags["constructed"] == [False] and flags["comp_valid"] == [True] and flags["valid"] == [False]
    assert flags["reason"] == ["non_positive_lattice"]


def test_symbols_ions_and_bad_histograms():
    """Element symbols in the arrays made every crystal silently invalid; Fe2+ and Fe3+ counted
    as two elements; a histogram with a negative count gave a total variation."""
    frac = np.array([[0, 0, 0], [0.5, 0.5, 0.5]])
    by_symbol, reason = M.crystal_from_arrays(frac, ["Na", "Cl"], [4, 4, 4], [90] * 3)
    assert reason is None and by_symbol == M.crystal_from_arrays(frac, [11, 17], [4, 4, 4], [90] * 3)[0]
    with pytest.raises(ValueError, match="'Qq' is not an element symbol"):
        M.crystal_from_arrays(frac, ["Na", "Qq"], [4, 4, 4], [90] * 3)
    with pytest.raises(ValueError, match="booleans"):
        M.crystal_from_arrays(frac, [True, True], [4, 4, 4], [90] * 3)
    from pymatgen.core import Species

    cell = [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0, 0], [0, 0.5, 0.5]]
    ions = Structure(Lattice.cubic(4.2), [Species("Fe", 2), Species("Fe", 3), Species("O", -2), Species("O", -2)], cell)
    plain = Structure(Lattice.cubic(4.2), ["Fe", "Fe", "O", "O"], cell)
    assert M.per_crystal_flags([ions])["n_elements"] == [2]
    assert M.num_elements_wdist([ions], [plain]) == 0.0
    with pytest.raises(ValueError, match="space group 1 has count -1"):
        M.spacegroup_tv({1: -1, 225: 2}, {225: 1})
    assert M.spacegroup_tv({1: 1, 225: 1}, {225: 1}) == 0.5


def moved_copy(s, seed=0):
    """The same crystal, rotated in space and translated: a duplicate for StructureMatcher."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    lattice = Lattice(s.lattice.matrix @ q.T)
    return Structure(lattice, s.species, (s.frac_coords + rng.uniform(size=3)) % 1.0)


def test_uniqueness_and_novelty_with_moved_duplicates():
    salt = rock_salt()
    cscl_type = Structure(Lattice.cubic(3.3), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    overlapping = Structure(Lattice.cubic(4.0), ["Na", "Cl"], [[0, 0, 0], [0.05, 0, 0]])
    generated = [salt, moved_copy(salt), cscl_type, moved_copy(cscl_type, seed=1), overlapping, None]
    assert M.uniqueness(generated) == pytest.approx(2 / 4)  # 4 valid, two of them duplicates
    assert M.uniqueness(generated, valid=[True] * 5 + [False]) == pytest.approx(3 / 5)
    assert M.novelty(generated, train=[moved_copy(salt, seed=2)]) == pytest.approx(2 / 4)
    assert M.novelty(generated, train=[Structure(Lattice.cubic(3.0), ["K", "Br"], [[0, 0, 0], [0.5] * 3])]) == 1.0
    assert math.isnan(M.uniqueness([None, overlapping]))


def test_spacegroup_statistics():
    assert M.spacegroup_tv(Counter({225: 4}), Counter({225: 2})) == 0.0
    assert M.spacegroup_tv(Counter({1: 2, 225: 2}), Counter({225: 4})) == pytest.approx(0.5)
    assert M.spacegroup_tv(Counter({1: 1}), Counter({2: 3})) == pytest.approx(1.0)
    assert M.spacegroup_tv(Counter({1: 1, 2: 3}), Counter({1: 3, 2: 1})) == pytest.approx(0.5)
    salt = rock_salt()
    p1_lattice = Lattice.from_parameters(4.1, 5.3, 6.2, 71, 83, 97)
    p1 = Structure(p1_lattice, ["Na", "Cl", "O"], [[0, 0, 0], [0.31, 0.17, 0.43], [0.62, 0.55, 0.21]])
    assert M.spacegroup_number(salt) == 225 and M.spacegroup_number(p1) == 1
    assert M.spacegroup_distribution([salt, p1, salt]) == Counter({225: 2, 1: 1})
    assert M.spacegroup_tv([salt, p1], [salt]) == pytest.approx(0.5)
    assert M.symmetric_share([salt, p1, salt, salt]) == pytest.approx(0.75)
    assert M.symmetric_share(Counter({1: 3, 62: 1})) == pytest.approx(0.25)


def test_hit_rate():
    assert M.hit_rate([1.0, 2.0, 3.0, float("nan"), None], 1.5, 3.0) == pytest.approx(2 / 5)
    assert M.hit_rate([0.5, 0.5], 0.5, 0.5) == 1.0
    assert math.isnan(M.hit_rate([], 0, 1))


def test_coverage_thresholds_minima_separately():
    means, stds = M._scaler()

    def raw(z):  # a raw Magpie vector whose scaled form is z
        return means + stds * np.asarray(z, dtype=float)

    e = np.eye(132)
    gt_struct = [np.zeros(61), np.full(61, 1.0)]
    gt_comp = [raw(0 * e[0]), raw(10 * e[0])]
    # pred 0: structure close to gt 0, composition close to gt 1; pred 1: the reverse; pred 2 fingerprint failed
    pred_struct = [np.full(61, 0.01), np.full(61, 0.99), None]
    pred_comp = [raw(9 * e[0]), raw(1 * e[0]), None]
    res = M.coverage(pred_struct, pred_comp, gt_struct, gt_comp, 0.2, 2.0, with_distances=True)
    # each gt has a close structure and a close composition, but from different preds; each pred is close in
    # structure to one gt and in composition to the other. CDVAE counts both (a joint rule would give 0 and 0).
    assert res["cov_recall"] == 1.0
    assert res["cov_precision"] == pytest.approx(2 / 3)  # the failed pred stays in the denominator
    assert res["amsd_recall"] == pytest.approx(0.01 * math.sqrt(61))
    assert res["amcd_recall"] == pytest.approx(1.0)
    assert len(res["struc_precision_dist"]) == 2  # the failed pred left the matrices
    assert M.coverage(pred_struct, pred_comp, gt_struct, gt_comp, 0.2, 2.0, n_pred_total=2)["cov_precision"] == 1.0
    tight = M.coverage(pred_struct, pred_comp, gt_struct, gt_comp, 0.05, 2.0)
    assert tight["cov_recall"] == 0.0 and tight["cov_precision"] == 0.0
    with pytest.raises(ValueError, match="reference"):
        M.coverage(pred_struct, pred_comp, [*gt_struct, None], [*gt_comp, None], 0.2, 2.0)


def test_scale_composition_and_diversity():
    means, stds = M._scaler()
    raw = means + 2 * stds
    raw[5] = np.nan
    scaled = M.scale_composition(raw)
    assert scaled[5] == 0.0 and np.allclose(np.delete(scaled, 5), 2.0)
    assert M.struct_diversity([np.zeros(3), np.ones(3), np.zeros(3)]) == pytest.approx(2 * math.sqrt(3) / 3)
    assert math.isnan(M.comp_diversity([means]))
    assert M.COV_CUTOFFS["mp_20"] == M.COV_CUTOFFS["mp20"] == (0.4, 10.0)
    assert M.COV_CUTOFFS["carbon_24"] == M.COV_CUTOFFS["perov_5"] == (0.2, 4.0)


# ------------------------------------------------------------------------------------------------ shared fixture


@pytest.fixture(scope="module")
def fixture_data():
    structures = json.loads((FIX / "structures.json").read_text())
    expected = json.loads((FIX / "expected.json").read_text())
    fps = json.loads((FIX / "fingerprints.json").read_text())
    arrays = {
        name: [{k: rec[k] for k in ("frac_coords", "atom_types", "lengths", "angles")} for rec in structures[name]]
        for name in SETS
    }
    ids = {name: [rec["id"] for rec in structures[name]] for name in SETS}

    def as_array(v, dtype=float):
        return None if v is None else np.asarray(v, dtype=dtype)

    given = {
        name: (
            [as_array(r["struct_fp"]) for r in fps[name]],
            [as_array(r["comp_fp_raw"]) for r in fps[name]],
            [as_array(r["comp_fp_scaled"]) for r in fps[name]],
        )
        for name in SETS
    }
    for name in SETS:
        assert [r["id"] for r in fps[name]] == ids[name]
    return {"arrays": arrays, "ids": ids, "expected": expected, "fps": given}


@pytest.fixture(scope="module")
def our_fingerprints(fixture_data):
    """Our own fingerprints of every perovskite-type structure (88) and the first 4 carbon ones."""
    names = ["perov_generated_test40", "perov_reference_val40", "broken8"]
    out = {name: M.fingerprints(fixture_data["arrays"][name]) for name in names}
    out["carbon_generated_test40"] = M.fingerprints(fixture_data["arrays"]["carbon_generated_test40"][:4])
    return out


@needs_fixture
@pytest.mark.parametrize("name", SETS)
def test_per_structure_flags(fixture_data, name):
    expected = fixture_data["expected"]["per_structure"][name]
    struct_fps, comp_fps, _ = fixture_data["fps"][name]
    flags = M.per_crystal_flags(fixture_data["arrays"][name], fingerprints=(struct_fps, comp_fps))
    assert len(expected) == len(flags["valid"])
    for i, exp in enumerate(expected):
        where = exp["id"]
        for key in ("constructed", "comp_valid", "struct_valid", "valid", "fingerprint_ok"):
            assert flags[key][i] is exp[key], (where, key)
        elems, comps = M.reduced_composition(fixture_data["arrays"][name][i]["atom_types"])
        assert (list(elems), list(comps)) == (exp["elems"], exp["comps"]), where
        if not exp["constructed"]:
            assert flags["reason"][i] == exp["invalid_reason"] and flags["min_distance"][i] is None
            continue
        assert abs(flags["min_distance"][i] - exp["min_pbc_distance"]) <= 1e-9, where
        assert abs(flags["volume"][i] - exp["volume"]) <= 1e-9, where
        assert close(flags["density"][i], exp["density"]), where
        assert flags["n_elements"][i] == exp["n_elements"], where


@needs_fixture
def test_cif_structures_give_the_same_flags(fixture_data):
    """Structure inputs (read from the fixture's CIFs) follow the same path as arrays."""
    ids = fixture_data["ids"]["broken8"][:7]  # broken_07 has no CIF (negative lattice)
    structures = [Structure.from_file(FIX / "cifs" / f"{i}.cif") for i in ids]
    flags = M.per_crystal_flags(structures)
    expected = fixture_data["expected"]["per_structure"]["broken8"][:7]
    assert flags["comp_valid"] == [e["comp_valid"] for e in expected]
    assert flags["struct_valid"] == [e["struct_valid"] for e in expected]
    assert np.allclose(flags["min_distance"], [e["min_pbc_distance"] for e in expected], atol=1e-7)


@needs_fixture
def test_our_fingerprints_match_cdvae(fixture_data, our_fingerprints):
    checked = 0
    for name, (struct_fps, comp_fps) in our_fingerprints.items():
        ref_struct, ref_raw, ref_scaled = fixture_data["fps"][name]
        for i, (s, c) in enumerate(zip(struct_fps, comp_fps)):
            where = fixture_data["ids"][name][i]
            if ref_struct[i] is None:
                assert s is None and c is None, where
                continue
            assert s.shape == (61,) and c.shape == (132,), where
            assert np.abs(s - ref_struct[i]).max() <= TOL, where
            assert np.abs(c - ref_raw[i]).max() <= TOL * np.abs(ref_raw[i]).max(), where
            assert np.abs(M.scale_composition(c) - ref_scaled[i]).max() <= TOL, where
            checked += 1
    assert checked >= 20


def _case_inputs(fixture_data, case, source):
    pred_names, gt_name, cutoffs = CASES[case]
    gen = [a for n in pred_names for a in fixture_data["arrays"][n]]
    ref = fixture_data["arrays"][gt_name]
    gen_fps = tuple([f for n in pred_names for f in source[n][k]] for k in (0, 1))
    ref_fps = tuple(source[gt_name][k] for k in (0, 1))
    return gen, ref, gen_fps, ref_fps, cutoffs


def _check_case(result, expected):
    extras = expected["geneval_extras_no_subsampling"]
    want = {**expected["validity"], **expected["cov"], **{k.removesuffix("_all_valid"): v for k, v in extras.items()}}
    bad = {k: (result[k], v) for k, v in want.items() if not close(result[k], v)}
    assert not bad
    assert result["n"] == expected["n_pred"] and result["n_valid"] == expected["n_valid"]
    assert result["n_fingerprint_failed"] == expected["n_pred_fingerprint_failed"]


@needs_fixture
@pytest.mark.parametrize("case", list(CASES))
def test_cases_with_fixture_fingerprints(fixture_data, case):
    gen, ref, gen_fps, ref_fps, cutoffs = _case_inputs(fixture_data, case, fixture_data["fps"])
    expected = fixture_data["expected"]["results"][case]
    result = M.evaluate_crystals(
        gen, ref, cutoffs=cutoffs, generated_fingerprints=gen_fps, reference_fingerprints=ref_fps
    )
    _check_case(result, expected)
    assert 0 < result["unique"] <= 1 and 0 <= result["spacegroup_tv"] <= 1
    cov = M.coverage(*gen_fps, *ref_fps, *M.COV_CUTOFFS[cutoffs], n_pred_total=len(gen), with_distances=True)
    for key in DIST_KEYS:
        assert np.abs(cov[key] - np.asarray(expected["cov_distances"][key])).max() <= TOL, key
    joint = fixture_data["expected"]["diagnostics_not_reference"]["joint_pair_cov"].get(case)
    if joint and joint["cov_recall_joint"] != expected["cov"]["cov_recall"]:
        assert not close(cov["cov_recall"], joint["cov_recall_joint"])


@needs_fixture
def test_end_to_end_with_our_fingerprints(fixture_data, our_fingerprints):
    """perov test40 + broken8 vs val40 with fingerprints computed here (broken_04 sits on a CrystalNN branch)."""
    case = "perov_test40+broken8_vs_val40"
    gen, ref, *_ = _case_inputs(fixture_data, case, our_fingerprints)
    result = M.evaluate_crystals(gen, ref, cutoffs="perovskite")  # fingerprints come from the in-process cache
    _check_case(result, fixture_data["expected"]["results"][case])


@needs_fixture
def test_subsampled_distribution_metrics(fixture_data):
    gen, ref, gen_fps, ref_fps, cutoffs = _case_inputs(fixture_data, "perov_val40_vs_val40", fixture_data["fps"])
    kwargs = {"cutoffs": cutoffs, "generated_fingerprints": gen_fps, "reference_fingerprints": ref_fps}
    full = M.evaluate_crystals(gen, ref, **kwargs)
    assert M.evaluate_crystals(gen, ref, n_wasserstein=39, **kwargs)["wdist_density"] == pytest.approx(
        full["wdist_density"], abs=1e-12
    )
    a = M.evaluate_crystals(gen, ref, n_wasserstein=10, seed=3, **kwargs)
    b = M.evaluate_crystals(gen, ref, n_wasserstein=10, seed=3, **kwargs)
    c = M.evaluate_crystals(gen, ref, n_wasserstein=10, seed=4, **kwargs)
    assert a == b
    assert a["wdist_density"] != c["wdist_density"]
    assert a["cov_recall"] == full["cov_recall"]  # COV never subsamples
    # the first 5 val crystals against a training set of the first 3: 2 of 5 are novel
    train = [M.crystal_from_arrays(**r)[0] for r in ref[:3]]
    kwargs["generated_fingerprints"] = tuple(x[:5] for x in gen_fps)
    assert M.evaluate_crystals(gen[:5], ref, train=train, **kwargs)["novel"] == pytest.approx(2 / 5)


def test_split_composition_validity_equals_cdvae_exhaustive_loop_and_is_fast():
    """The polynomial SMACT check gives CDVAE's exhaustive answer on random compositions, and
    a 12-element composition (an untrained model's sample) takes milliseconds, not hours."""
    import math
    import random
    import time

    from pymatgen.core import Element

    from polydiff_crystals import metrics as M

    rng = random.Random(1)
    zs = [z for z in range(1, 84) if (d := M._smact_data(Element.from_Z(z).symbol)) is not None and d[1] is not None]
    compared = 0
    for _ in range(800):
        els = rng.sample(zs, rng.choice([2, 3, 3, 4]))
        cnt = [rng.randint(1, 6) for _ in els]
        data = [M._smact_data(Element.from_Z(z).symbol) for z in els]
        g = math.gcd(*cnt)
        red = [c // g for c in cnt]
        states, enegs = [d[0] for d in data], [d[1] for d in data]
        assert M._split_validity(states, enegs, red) == M._exhaustive_validity(states, enegs, red), (els, cnt)
        compared += 1
    assert compared == 800
    t = time.process_time()  # CPU time: other work on the machine does not count against the bound
    M.composition_validity(["K", "Xe", "I", "Na", "Cl", "O", "S", "Fe", "Mn", "Ti", "N", "F"], [9, 1, 2, 3, 4, 5, 6,
                                                                                              7, 8, 9, 10, 11])
    assert time.process_time() - t < 2.0
