"""Backbone metrics of the proteins plugin, checked against hand computations and independent
implementations (biotite's angles / dihedrals / superposition, a hand-written JSD): ideal
helices, strands and a hairpin built by NeRF, perturbed chains, TM-score invariances,
clustering, novelty, the designability hook with stand-in models, CA traces, and real PDB files
of ../shared."""

from __future__ import annotations

import math
from pathlib import Path

import biotite.structure as struc
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from polydiff.plugin import shared_dir
from polydiff_proteins import metrics as M
from polydiff_proteins.geometry import ANGLES, BONDS, CA_CA, Backbone, build_backbone

pytestmark = pytest.mark.usefixtures("one_thread")

PROTEINS = shared_dir() / "data" / "proteins"


def chain(phi: float | list[float], psi: float | list[float], length: int | None = None, name: str = "") -> Backbone:
    """A backbone with ideal geometry and the given dihedrals in degrees (scalars: ``length``
    residues of the same angles)."""
    phi_a = np.full(length, phi, float) if length else np.asarray(phi, float)
    psi_a = np.full(length, psi, float) if length else np.asarray(psi, float)
    return Backbone(build_backbone(np.radians(phi_a), np.radians(psi_a)), name=name)


def helix(length: int = 30, name: str = "helix") -> Backbone:
    return chain(-57.0, -47.0, length, name)


def strand(length: int = 30, name: str = "strand") -> Backbone:
    return chain(-120.0, 130.0, length, name)


def hairpin(arm: int = 8) -> Backbone:
    """Two strands (-120, 130) joined by a type I' turn (60, 30), (90, 0)."""
    phi = [-120.0] * arm + [60.0, 90.0] + [-120.0] * arm
    psi = [130.0] * arm + [30.0, 0.0] + [130.0] * arm
    return chain(phi, psi, name="hairpin")


def ca_trace(bb: Backbone) -> Backbone:
    return Backbone(bb.ca[:, None], atom_names=("CA",), name=f"{bb.name}_ca", res_ids=bb.res_ids)


def moved(bb: Backbone, atoms: np.ndarray, name: str = "moved") -> Backbone:
    return Backbone(atoms, atom_names=bb.atom_names, name=name, res_ids=bb.res_ids)


def atom_array(bb: Backbone) -> struc.AtomArray:
    """All backbone atoms of ``bb`` as a biotite AtomArray (GLY residues)."""
    n_res, n_at = bb.atoms.shape[:2]
    arr = struc.AtomArray(n_res * n_at)
    arr.coord = bb.atoms.reshape(-1, 3)
    arr.res_id = np.repeat(np.arange(1, n_res + 1), n_at)
    arr.chain_id = np.full(len(arr), "A")
    arr.res_name = np.full(len(arr), "GLY")
    arr.atom_name = np.tile(np.array(bb.atom_names), n_res)
    arr.element = np.array([a[0] for a in arr.atom_name])
    arr.hetero = np.zeros(len(arr), bool)
    return arr


def rigid(x: np.ndarray, seed: int) -> np.ndarray:
    """``x`` (..., 3) under a random rotation and translation."""
    rot = Rotation.random(random_state=seed).as_matrix()
    return x @ rot.T + np.array([10.0, -4.0, 7.0])


# ---------------------------------------------------------------------------------------------
# geometry
# ---------------------------------------------------------------------------------------------

def ideal_ca_ca() -> float:
    """CA(i)-CA(i+1) of an ideal trans peptide by plane geometry: CA at the origin, C on the x
    axis, N and the next CA turned by the bond angles, CA(i+1) trans to CA(i) about C-N."""
    c = np.array([BONDS["CA-C"], 0.0])
    a1 = math.pi - math.radians(ANGLES["CA-C-N"])  # direction of C->N
    n = c + BONDS["C-N"] * np.array([math.cos(a1), math.sin(a1)])
    a2 = a1 - (math.pi - math.radians(ANGLES["C-N-CA"]))  # trans: turn back the other way
    ca2 = n + BONDS["N-CA"] * np.array([math.cos(a2), math.sin(a2)])
    return float(np.linalg.norm(ca2))


@pytest.mark.parametrize("make", [helix, strand, hairpin])
def test_ideal_chains_have_ideal_geometry(make):
    bb = make()
    g = M.geometry_metrics([bb])
    for key in ("bond_n_ca", "bond_ca_c", "bond_c_n"):
        assert g[key] < 1e-9, key
    for key in ("angle_n_ca_c", "angle_ca_c_n", "angle_c_n_ca"):
        assert g[key] < 1e-6, key
    d = ideal_ca_ca()
    assert d == pytest.approx(3.80, abs=0.01)
    assert g["ca_ca_dev"] == pytest.approx(abs(d - CA_CA), abs=1e-9)
    assert g["ca_ca_valid"] == 1.0
    assert g["clashes_per_res"] == g["ca_clash_pair_frac"] == g["breaks_per_res"] == 0.0


def test_bonds_and_angles_match_biotite():
    rng = np.random.default_rng(0)
    bb = helix(20)
    noisy = moved(bb, bb.atoms + rng.normal(0.0, 0.05, bb.atoms.shape))
    g = M.geometry_metrics([noisy])
    arr = atom_array(noisy)
    at = lambda i, name: 4 * i + "N CA C O".split().index(name)  # noqa: E731
    L = len(noisy)
    bonds = {"bond_n_ca": ([(at(i, "N"), at(i, "CA")) for i in range(L)], BONDS["N-CA"]),
             "bond_ca_c": ([(at(i, "CA"), at(i, "C")) for i in range(L)], BONDS["CA-C"]),
             "bond_c_n": ([(at(i, "C"), at(i + 1, "N")) for i in range(L - 1)], BONDS["C-N"])}
    for key, (idx, ideal) in bonds.items():
        want = np.abs(struc.index_distance(arr, np.array(idx)) - ideal).mean()
        assert g[key] == pytest.approx(want, rel=1e-5), key
    angles = {"angle_n_ca_c": ([(at(i, "N"), at(i, "CA"), at(i, "C")) for i in range(L)], "N-CA-C"),
              "angle_ca_c_n": ([(at(i, "CA"), at(i, "C"), at(i + 1, "N")) for i in range(L - 1)], "CA-C-N"),
              "angle_c_n_ca": ([(at(i, "C"), at(i + 1, "N"), at(i + 1, "CA")) for i in range(L - 1)], "C-N-CA")}
    for key, (idx, name) in angles.items():
        want = np.abs(np.degrees(struc.index_angle(arr, np.array(idx))) - ANGLES[name]).mean()
        assert want > 0.5  # the noise is visible, so the comparison means something
        assert g[key] == pytest.approx(want, rel=1e-4), key


def test_dihedrals_match_biotite():
    rng = np.random.default_rng(1)
    bb = hairpin()
    noisy = moved(bb, bb.atoms + rng.normal(0.0, 0.1, bb.atoms.shape))
    phi, psi = M.ramachandran([noisy])
    b_phi, b_psi, _ = struc.dihedral_backbone(atom_array(noisy))
    np.testing.assert_allclose(phi, np.degrees(b_phi[1:-1]), atol=1e-4)
    np.testing.assert_allclose(psi, np.degrees(b_psi[1:-1]), atol=1e-4)
    h_phi, h_psi = M.ramachandran([helix(10)])
    assert len(h_phi) == 8
    np.testing.assert_allclose(h_phi, -57.0, atol=1e-6)
    np.testing.assert_allclose(h_psi, -47.0, atol=1e-6)


def test_moved_residue_is_a_break_and_clash_counts():
    bb = helix(30)
    atoms = bb.atoms.copy()
    atoms[15] += np.array([3.0, 0.0, 0.0])
    broken = moved(bb, atoms)
    assert M.chain_breaks(bb) == 0
    assert M.chain_breaks(broken) == 2  # the peptide bonds to both neighbours stretch past 2 A
    assert M.chain_breaks(ca_trace(broken)) >= 1  # CA(i)-CA(i+1) > 4.2 A
    g = M.geometry_metrics([broken])
    assert g["breaks_per_res"] == pytest.approx(2 / 30)
    assert g["bond_c_n"] > 0.05 and g["ca_ca_valid"] < 1.0
    # a residue put 1 A from a non-neighbour's CA: one clash, also by FrameDiff's 1.5 A rule
    atoms = bb.atoms.copy()
    atoms[20] += bb.ca[10] + np.array([1.0, 0.0, 0.0]) - bb.ca[20]
    clash = moved(bb, atoms)
    assert M.ca_clashes(clash) == 1 + M.ca_clashes(clash, threshold=0.0)
    want = clash_count_by_hand(clash.ca)
    assert M.ca_clashes(clash) == want >= 1
    g = M.geometry_metrics([clash])
    assert g["clashes_per_res"] == pytest.approx(want / 30)
    assert g["ca_clash_pair_frac"] == pytest.approx(1 / (30 * 29 / 2))
    flags = M.per_backbone_flags([bb, broken, clash])
    assert flags["breaks"] == [0, 2, M.chain_breaks(clash)] and flags["clashes"][2] == want


def clash_count_by_hand(ca: np.ndarray, threshold: float = M.CLASH_CA) -> int:
    return sum(float(np.linalg.norm(ca[i] - ca[j])) < threshold
               for i in range(len(ca)) for j in range(i + 2, len(ca)))


def test_clash_of_second_neighbours():
    ca = helix(12).ca.copy()
    ca[7] = ca[5] + 2.0 * (ca[6] - ca[5]) / np.linalg.norm(ca[6] - ca[5])  # i, i+2 at 2 A
    bb = Backbone(ca[:, None], atom_names=("CA",))
    want = clash_count_by_hand(ca)
    assert M.ca_clashes(bb) == want >= 1
    assert M.ca_clashes(bb, min_separation=1) == want + 1  # the neighbours 6, 7 are 1.8 A apart


def test_numbering_gap_is_a_break_but_not_a_bad_bond():
    a, b = helix(10).atoms, helix(10).atoms + np.array([30.0, 0.0, 0.0])
    bb = Backbone(np.concatenate([a, b]), res_ids=np.r_[1:11, 21:31])
    g = M.geometry_metrics([bb])
    assert M.chain_breaks(bb) == 1 and g["breaks_per_res"] == pytest.approx(1 / 20)
    assert g["bond_c_n"] < 1e-9 and g["ca_ca_valid"] == 1.0  # the gap pair is no peptide bond
    assert len(M.ramachandran([bb])[0]) == 16  # 8 non-terminal residues per segment


def test_ca_traces_have_nan_full_backbone_metrics():
    bb = ca_trace(helix(30))
    g = M.geometry_metrics([bb])
    for key in M.GEOMETRY_KEYS[:6]:
        assert math.isnan(g[key]), key
    assert g["ca_ca_valid"] == 1.0 and math.isfinite(g["ca_ca_dev"])
    ss = M.ss_fractions(bb)
    assert all(math.isnan(ss[k]) for k in ("dssp_helix", "dssp_strand", "dssp_loop"))
    assert ss["psea_helix"] > 0.9
    assert math.isnan(M.ramachandran_distance([bb], [helix()]))
    with pytest.raises(ValueError, match="CA trace"):
        M.dssp(bb)
    # a mixed set: full-backbone metrics over its full member only
    mixed = M.geometry_metrics([bb, helix(30)])
    assert mixed["bond_c_n"] < 1e-9


# ---------------------------------------------------------------------------------------------
# secondary structure, Ramachandran, Rg
# ---------------------------------------------------------------------------------------------

def test_helix_secondary_structure():
    bb = helix(30)
    d = M.dssp(bb)
    assert set(d[1:-1]) == {"H"} and d[0] == "-"
    ss = M.ss_fractions(bb)
    assert ss["dssp_helix"] == pytest.approx(28 / 30)
    assert ss["psea_helix"] > 0.9 and ss["psea_strand"] == 0.0
    assert ss["psea_helix"] == M.ss_fractions(ca_trace(bb))["psea_helix"]  # P-SEA reads only CA
    for key in ("dssp", "psea"):
        assert sum(ss[f"{key}_{s}"] for s in ("helix", "strand", "loop")) == pytest.approx(1.0)
    assert M.dssp(helix(5)).tolist() == ["-"] * 5  # too short for pydssp: all loop


def test_strand_and_hairpin_secondary_structure():
    ss = M.ss_fractions(strand(30))
    assert ss["psea_strand"] > 0.85 and ss["psea_helix"] == 0.0
    assert ss["dssp_strand"] == 0.0  # a lone strand has no partner: no DSSP ladder
    d = M.dssp(hairpin(8))
    assert "H" not in d
    assert "E" in d[:8] and "E" in d[10:]  # both arms pair across the turn
    agg = M.secondary_structure([helix(30), strand(30)])
    assert agg["dssp_helix"] == pytest.approx(14 / 30)
    assert M.ss_distance([helix()], [helix()]) == 0.0
    assert M.ss_distance([helix()], [strand()], "psea") > 0.85
    with pytest.raises(ValueError, match="method"):
        M.ss_distance([helix()], [helix()], "stride")


def jsd_by_hand(p: np.ndarray, q: np.ndarray) -> float:
    m = (p + q) / 2
    kl = lambda a: sum(x * math.log2(x / y) for x, y in zip(a, m) if x > 0)  # noqa: E731
    return 0.5 * kl(p) + 0.5 * kl(q)


def test_ramachandran_distance():
    h, s = helix(12), strand(12)
    assert M.ramachandran_distance([h, s], [h, s]) == 0.0
    assert M.ramachandran_distance([h], [s]) == pytest.approx(1.0)
    # reference half helix, half strand: p = (1, 0), q = (1/2, 1/2) over two occupied cells
    want = jsd_by_hand(np.array([1.0, 0.0]), np.array([0.5, 0.5]))
    assert M.ramachandran_distance([h], [h, s]) == pytest.approx(want)
    assert 0.0 < want < 1.0
    # the torus: +180 and -180 fall into the same cell
    hist = M.ramachandran_histogram(np.array([180.0, -180.0]), np.array([-180.0, 179.9]), bins=36)
    assert hist[0, 0] == 0.5 and hist[0, 35] == 0.5


def test_radius_of_gyration_by_hand():
    square = np.array([[0, 0, 0], [2, 0, 0], [2, 2, 0], [0, 2, 0]], float)
    bb = Backbone(square[:, None], atom_names=("CA",))
    assert M.radius_of_gyration([bb])[0] == pytest.approx(math.sqrt(2.0))
    assert M.rg_ratio([bb])[0] == pytest.approx(math.sqrt(2.0) / (2.2 * 4**0.38))
    h = helix(40)
    ca = h.ca
    want = math.sqrt(sum(float(np.sum((x - ca.mean(0)) ** 2)) for x in ca) / len(ca))
    assert M.radius_of_gyration([h])[0] == pytest.approx(want)
    assert M.rg_ratio([strand(40)])[0] > M.rg_ratio([h])[0]  # an extended chain is less compact
    r = M.rg_metrics([h])
    assert r["rg_abs_log_ratio"] == pytest.approx(abs(math.log(r["rg_ratio"])))


# ---------------------------------------------------------------------------------------------
# TM-score
# ---------------------------------------------------------------------------------------------

def test_tm_score_invariances():
    h = helix(40)
    assert M.tm_score(h, h) == pytest.approx((1.0, 1.0))
    copy = moved(h, rigid(h.atoms, seed=3))
    assert M.tm_score(h, copy) == pytest.approx((1.0, 1.0), abs=1e-6)
    assert max(M.tm_score(h, strand(40))) < 0.35
    short = helix(20)
    by_a, by_b = M.tm_score(short, h)
    assert by_a > 0.9 and by_b < by_a  # normalised by the longer chain it is lower
    assert all(math.isnan(x) for x in M.tm_score(helix(2), h))


def test_pairwise_tm_and_clusters_of_two_groups():
    rng = np.random.default_rng(4)
    h, s = helix(40), hairpin(12)
    group_h = [moved(h, rigid(h.atoms + rng.normal(0, 0.2, h.atoms.shape), seed=i), f"h{i}") for i in range(3)]
    group_s = [moved(s, rigid(s.atoms + rng.normal(0, 0.2, s.atoms.shape), seed=9 + i), f"s{i}") for i in range(3)]
    bbs = group_h + group_s
    tm = M.pairwise_tm(bbs)
    np.testing.assert_allclose(tm, tm.T)
    np.testing.assert_allclose(np.diag(tm), 1.0)
    assert tm[:3, :3].min() > 0.8 and tm[3:, 3:].min() > 0.8 and tm[:3, 3:].max() < 0.5
    assert M.tm_clusters(bbs, threshold=0.5) == 2
    assert M.tm_clusters(bbs, threshold=0.99) == 6
    within = np.concatenate([tm[:3, :3][np.triu_indices(3, 1)], tm[3:, 3:][np.triu_indices(3, 1)]])
    assert M.diversity(bbs) == pytest.approx(np.mean(np.r_[within, tm[:3, 3:].ravel()]))


def test_clusters_are_nan_when_a_tm_score_is_unknown():
    """A chain under 3 residues has NaN TM-scores: its edges are unknown, so the cluster count
    (and fraction) is NaN, not the maximum-diversity count of a graph without those edges."""
    h = helix(30)
    bbs = [h, moved(h, rigid(h.atoms, seed=1), "h1"), helix(2, "short")]
    assert math.isnan(M.tm_clusters(bbs))
    assert M.tm_clusters(bbs[:2]) == 1.0  # the measurable pair alone: one cluster
    out = M.evaluate_backbones([h, helix(2, "short")], [h, strand(30)])
    assert math.isnan(out["tm_clusters"]) and math.isnan(out["tm_cluster_frac"]) and math.isnan(out["tm_diversity"])
    assert out["ref_tm_clusters"] == 2.0 and out["ref_tm_cluster_frac"] == 1.0 and out["tm_n"] == 2.0


def test_non_finite_backbones_are_named_not_scored():
    """TM-align never returned on a NaN coordinate (so ``polydiff evaluate`` hung on one diverged
    sample); every metric now names such a backbone instead."""
    h = helix(30)
    bad = Backbone(h.atoms.copy(), name="sample_0003")
    bad.atoms[5, 1, 0] = np.nan
    with pytest.raises(ValueError, match=r"tm_score: a \(sample_0003\): residue 5 has NaN"):
        M.tm_score(bad, h)
    with pytest.raises(ValueError, match=r"samples\[1\] \(sample_0003\): residue 5 has NaN or infinite"):
        M.evaluate_backbones([h, bad], [h])
    bad.atoms[5, 1, 0] = np.inf
    for fn in (M.diversity, M.geometry_metrics, M.rg_metrics, M.secondary_structure):
        with pytest.raises(ValueError, match=r"backbones\[0\] \(sample_0003\)"):
            fn([bad, h])


def test_a_single_residue_leaves_the_log_rg_ratio_finite_and_novelty_says_how_many_it_scored():
    one = Backbone(np.zeros((1, 1, 3)), atom_names=("CA",), name="one")
    r = M.rg_metrics([one, helix(40)])
    assert r["rg_abs_log_ratio"] == pytest.approx(M.rg_metrics([helix(40)])["rg_abs_log_ratio"])
    train = [helix(30, "t0"), hairpin(10), strand(24, "t2")]
    out = M.evaluate_backbones(train * 4, train, train=train, max_novelty_pairs=6)
    assert out["novelty_n"] == 2.0 and out["novelty_max_tm"] == pytest.approx(1.0)


def test_tm_subset():
    idx = M.tm_subset(100, max_pairs=300, seed=0)
    assert len(idx) == 25 and len(set(idx.tolist())) == 25 and (np.diff(idx) > 0).all()
    np.testing.assert_array_equal(idx, M.tm_subset(100, 300, seed=0))
    assert not np.array_equal(idx, M.tm_subset(100, 300, seed=1))
    np.testing.assert_array_equal(M.tm_subset(25, 300), np.arange(25))
    assert len(M.tm_subset(100, 299)) == 24
    with pytest.raises(ValueError):
        M.tm_subset(10, 0)


def test_novelty():
    train = [helix(30, "t0"), hairpin(10), strand(24, "t2")]
    np.testing.assert_allclose(M.novelty(train, train), 1.0)
    copy = moved(train[1], rigid(train[1].atoms, seed=5))
    assert M.novelty([copy], train)[0] == pytest.approx(1.0, abs=1e-6)
    assert M.novelty([helix(30)], [strand(30)])[0] < 0.5
    # over budget: a subset of the samples is evaluated, the rest is NaN
    part = M.novelty(train * 4, train, max_pairs=6, seed=0)
    assert np.isfinite(part).sum() == 2 and np.nanmin(part) == pytest.approx(1.0)


# ---------------------------------------------------------------------------------------------
# designability
# ---------------------------------------------------------------------------------------------

def test_kabsch_rmsd_matches_biotite():
    rng = np.random.default_rng(6)
    x = rng.normal(0, 5, (30, 3))
    y = rigid(x + rng.normal(0, 0.5, x.shape), seed=7)
    fitted, _ = struc.superimpose(y, x)
    assert M.kabsch_rmsd(x, y) == pytest.approx(float(struc.rmsd(y, fitted)), rel=1e-5)
    assert M.kabsch_rmsd(x, rigid(x, seed=8)) == pytest.approx(0.0, abs=1e-9)
    assert M.kabsch_rmsd(x, -x) > 1.0  # a mirror image is no rotation


def test_designability_with_stand_in_models():
    bbs = [helix(30, "a"), hairpin(8)]
    rng = np.random.default_rng(8)
    by_seq = {bb.sequence + bb.name: bb for bb in bbs}

    def design(bb: Backbone) -> list[str]:
        return [bb.sequence + bb.name] * 2

    def good_fold(seq: str) -> np.ndarray:
        ca = by_seq[seq].ca
        return rigid(ca + rng.normal(0, 0.1, ca.shape), seed=len(seq))

    def random_fold(seq: str) -> np.ndarray:
        return rng.normal(0, 10, (len(by_seq[seq]), 3))

    good = M.Designability(design, good_fold)(bbs)
    assert good["designable_frac"] == 1.0 and good["designable"] == [True, True]
    assert max(good["sc_rmsd"]) < 0.5
    bad = M.Designability(design, random_fold)(bbs)
    assert bad["designable_frac"] == 0.0 and min(bad["sc_rmsd"]) > 2.0
    full = M.Designability(design, lambda seq: by_seq[seq].atoms)(bbs)  # (L, 4, 3) backbones
    assert full["sc_rmsd"] == pytest.approx([0.0, 0.0], abs=1e-9)
    short = M.Designability(design, lambda seq: by_seq[seq].ca[:-1])
    with pytest.raises(ValueError, match=r"'hairpin'.*17 residues for a backbone of 18"):
        short([bbs[1], bbs[0]])
    with pytest.raises(ValueError, match="no sequences"):
        M.Designability(lambda bb: [], good_fold)(bbs)


# ---------------------------------------------------------------------------------------------
# evaluate_backbones / per_backbone_flags
# ---------------------------------------------------------------------------------------------

def test_evaluate_backbones():
    samples = [helix(30, "s0"), hairpin(10), strand(26, "s2")]
    reference = [helix(32, "r0"), hairpin(9)]
    out = M.evaluate_backbones(samples, reference, train=reference)
    assert all(isinstance(v, float) for v in out.values())
    assert out["n"] == 3.0 and out["mean_length"] == pytest.approx((30 + 22 + 26) / 3)
    for key in (*M.GEOMETRY_KEYS, *M.SS_KEYS, "rg_mean", "tm_diversity", "rama_jsd", "novelty_max_tm"):
        assert math.isfinite(out[key]), key
        if key not in ("rama_jsd", "novelty_max_tm"):
            assert math.isfinite(out[f"ref_{key}"]), key
    assert out["ref_dssp_helix"] == pytest.approx(M.secondary_structure(reference)["dssp_helix"])
    assert out["tm_clusters"] == 3.0 and out["ref_tm_clusters"] == 2.0
    assert out["novelty_max_tm"] == pytest.approx(np.mean(M.novelty(samples, reference)))
    assert math.isnan(out["designable_frac"])
    alone = M.evaluate_backbones(samples, samples)
    assert alone["rama_jsd"] == 0.0 and alone["dssp_ss_distance"] == 0.0 and math.isnan(alone["novel_frac"])


def test_evaluate_ca_traces_and_empty():
    samples = [ca_trace(helix(30)), ca_trace(strand(30))]
    out = M.evaluate_backbones(samples, [helix(30), strand(30)])
    for key in (*M.GEOMETRY_KEYS[:6], "dssp_helix", "dssp_loop", "rama_jsd", "dssp_ss_distance"):
        assert math.isnan(out[key]), key
    for key in ("ca_ca_dev", "psea_helix", "psea_strand", "rg_mean", "tm_diversity", "ref_dssp_helix"):
        assert math.isfinite(out[key]), key
    assert out["psea_ss_distance"] == pytest.approx(0.0)
    flags = M.per_backbone_flags(samples)
    assert flags["length"] == [30, 30] and all(math.isnan(x) for x in flags["dssp_helix"])
    assert flags["psea_helix"][0] > 0.9
    with pytest.raises(ValueError, match="empty"):
        M.evaluate_backbones([], [helix()])
    with pytest.raises(ValueError, match="reference"):
        M.evaluate_backbones([helix()], [])
    with pytest.raises(ValueError, match="empty"):
        M.per_backbone_flags([])


# ---------------------------------------------------------------------------------------------
# real structures of ../shared
# ---------------------------------------------------------------------------------------------

def read_backbone(path: Path) -> Backbone:
    """N / CA / C / O (or CA only) of the first chain of a PDB file's ATOM records (a tiny
    test-local reader, alternate locations ignored)."""
    residues: dict[tuple[str, str], dict[str, list[float]]] = {}
    chain_id = None
    for line in path.read_text().splitlines():
        if not line.startswith("ATOM") or line[16] not in " A":
            continue
        chain_id = chain_id or line[21]
        name = line[12:16].strip()
        if line[21] == chain_id and name in ("N", "CA", "C", "O"):
            key = (line[22:26], line[26])
            residues.setdefault(key, {})[name] = [float(line[i:i + 8]) for i in (30, 38, 46)]
    keys = list(residues)
    names = ("N", "CA", "C", "O") if all(len(residues[k]) == 4 for k in keys) else ("CA",)
    atoms = np.array([[residues[k][a] for a in names] for k in keys])
    return Backbone(atoms, atom_names=names, name=path.stem, res_ids=np.array([int(k[0]) for k in keys]))


def shared(test):
    skip = pytest.mark.skipif(not PROTEINS.is_dir(), reason=f"shared protein data {PROTEINS} not found")
    return skip(pytest.mark.shared(test))


@shared
def test_real_structures():
    bbs = [read_backbone(p) for p in sorted(PROTEINS.glob("*.pdb"))]
    full = [bb for bb in bbs if bb.full]
    traces = [bb for bb in bbs if not bb.full]
    assert len(full) >= 5 and traces
    for bb in full:
        g = M.geometry_metrics([bb])
        assert max(g["bond_n_ca"], g["bond_ca_c"], g["bond_c_n"]) < 0.03, bb.name
        assert max(g["angle_n_ca_c"], g["angle_ca_c_n"], g["angle_c_n_ca"]) < 4.0, bb.name
        assert g["ca_ca_valid"] == 1.0 and g["clashes_per_res"] == 0.0, bb.name
        gaps = int((np.diff(bb.res_ids) > 1).sum())
        assert M.chain_breaks(bb) == gaps, bb.name  # breaks exactly at missing residues
        assert 0.85 < M.rg_ratio([bb])[0] < 1.25, bb.name  # compact globular folds
        ss = M.ss_fractions(bb)
        assert ss["dssp_helix"] + ss["dssp_strand"] > 0.4, bb.name
        assert abs(ss["dssp_helix"] - ss["psea_helix"]) < 0.15, bb.name
    for bb in traces:
        ss = M.ss_fractions(bb)
        assert math.isnan(ss["dssp_helix"]) and math.isfinite(ss["psea_helix"])
    out = M.evaluate_backbones(full[:4], full[4:], train=full)
    assert out["novelty_max_tm"] == pytest.approx(1.0) and out["novel_frac"] == 0.0
    assert out["tm_diversity"] < 0.6 and out["rama_jsd"] < 0.5


def test_nanometre_coordinates_are_warned_about():
    """Backbones in nm passed every check unnoticed (CA-CA valid 1.0, no breaks)."""
    h = helix(30)
    nm = Backbone(h.atoms / 10, name="nm")
    with pytest.warns(UserWarning, match=r"samples: the median CA-CA distance .* is 0\.38.*nanometres"):
        M.evaluate_backbones([nm], [h])
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        M.evaluate_backbones([h], [h])
