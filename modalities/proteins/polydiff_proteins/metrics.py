"""Quality, distribution and diversity metrics of protein backbones: generated samples against
a reference set (and optionally a training set).

* geometry: bond length / angle deviations from the ideal values of :mod:`.geometry`, CA-CA
  deviation and valid fraction, CA steric clashes and chain breaks;
* Ramachandran (phi, psi) histograms compared by Jensen-Shannon divergence;
* secondary structure by DSSP (``pydssp``, full backbones) and by P-SEA on CA atoms
  (``biotite.structure.annotate_sse``, CA traces too);
* radius of gyration against the compact-globule scaling ``2.2 L^0.38``;
* TM-scores (``tmtools``, TM-align): pairwise diversity, clusters, novelty to a training set;
* designability (self-consistency) through user-supplied design / fold callables.

Conventions. Structures are :class:`~.geometry.Backbone` objects: full N, CA, C, O backbones or
CA traces. A metric that needs N / C / O is NaN for a CA trace (and computed over the full
members of a mixed set), never a constant. Residues ``i`` and ``i + 1`` of one backbone count as
bonded unless their residue numbers jump (``res_ids[i + 1] - res_ids[i] > 1`` or negative:
missing residues); bond, angle, CA-CA and dihedral statistics use bonded pairs only, while chain
breaks are geometric and counted between all consecutive residues. Set-level means pool all
bonds / residues / pairs of the set (for samples of one length this equals FrameDiff's mean of
per-structure means). Distances in Angstrom, angles in degrees.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pydssp
import tmtools
from biotite.structure import AtomArray, annotate_sse
from scipy.sparse.csgraph import connected_components
from scipy.spatial.distance import jensenshannon

from .geometry import ANGLES, BONDS, CA_CA, Backbone, backbone_dihedrals

CA_CA_TOL = 0.1  # FrameDiff's ca_ca_valid tolerance: d < CA_CA + tol
CLASH_CA = 3.0  # CA-CA closer than this between residues |i - j| >= 2 is a clash
CLASH_CA_FRAMEDIFF = 1.5  # FrameDiff's ca_ca_clashes threshold (all pairs i < j)
BREAK_C_N = 2.0  # peptide C(i)-N(i+1) longer than this is a chain break (full backbones)
BREAK_CA_CA = 4.2  # CA(i)-CA(i+1) longer than this is a chain break (CA traces)
RG_PREFACTOR, RG_EXPONENT = 2.2, 0.38  # Rg ~ 2.2 L^0.38 A for compact globular proteins
DSSP_MIN_LENGTH = 6  # pydssp fails below 6 residues; shorter chains count as all loop
NOVEL_TM = 0.5  # a sample whose max TM-score to the training set is below this is novel

GEOMETRY_KEYS = ("bond_n_ca", "bond_ca_c", "bond_c_n", "angle_n_ca_c", "angle_ca_c_n", "angle_c_n_ca",
                 "ca_ca_dev", "ca_ca_valid", "clashes_per_res", "ca_clash_pair_frac", "breaks_per_res")
SS_KEYS = ("dssp_helix", "dssp_strand", "dssp_loop", "psea_helix", "psea_strand", "psea_loop")


def _check(backbones: Sequence[Backbone], what: str = "backbones") -> list[Backbone]:
    """The backbones as a list; ValueError for an empty set (every metric needs one structure)
    and for a backbone with NaN or infinite coordinates (:func:`_finite`)."""
    out = list(backbones)
    if not out:
        raise ValueError(f"{what}: empty list of backbones")
    for i, bb in enumerate(out):
        _finite(bb, f"{what}[{i}]")
    return out


def _finite(bb: Backbone, where: str) -> None:
    """ValueError naming a backbone with NaN or infinite coordinates (a diverged sample): TM-align
    never returns on NaN, and every other metric would turn it into a number or a set-wide NaN."""
    bad = np.nonzero(~np.isfinite(bb.atoms).all(axis=(1, 2)))[0]
    if len(bad):
        raise ValueError(f"{where} ({bb.name or 'unnamed'}): residue {int(bad[0])} has NaN or infinite coordinates "
                         f"({len(bad)} of {len(bb)} residues); leave the backbone out to score the others")


def _warn_units(backbones: Sequence[Backbone], what: str) -> None:
    """A warning when the median CA-CA distance of bonded residues is under 1.5 A (ideal: 3.8):
    coordinates in nanometres would pass every check (CA-CA valid, no breaks) unnoticed."""
    d = [np.linalg.norm(np.diff(bb.ca, axis=0), axis=-1)[bonded_pairs(bb)] for bb in backbones if len(bb) > 1]
    if d and (median := float(np.median(np.concatenate(d)))) < 1.5:
        warnings.warn(f"{what}: the median CA-CA distance of consecutive residues is {median:.3g}, where proteins "
                      f"have {CA_CA}: are the coordinates in nanometres? The metrics read Angstrom", stacklevel=3)


def _mean(values: Sequence[float] | np.ndarray) -> float:
    """Mean that is NaN (without a warning) for no values."""
    a = np.asarray(values, dtype=np.float64)
    return float(a.mean()) if a.size else math.nan


def _nanmean(values: Sequence[float] | np.ndarray) -> float:
    """Mean of the finite values; NaN (without a warning) when there are none."""
    a = np.asarray(values, dtype=np.float64)
    a = a[np.isfinite(a)]
    return float(a.mean()) if a.size else math.nan


def bonded_pairs(backbone: Backbone) -> np.ndarray:
    """``(L - 1,)`` bool: whether residues ``i`` and ``i + 1`` are sequence neighbours (residue
    numbers step by 0 (insertion codes) or 1), i.e. whether a peptide bond is expected."""
    step = np.diff(np.asarray(backbone.res_ids))
    return (step >= 0) & (step <= 1)


def _angle(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Angles ``a-b-c`` in degrees of points ``(..., 3)``."""
    u, v = a - b, c - b
    cos = (u * v).sum(-1) / (np.linalg.norm(u, axis=-1) * np.linalg.norm(v, axis=-1))
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def _dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.linalg.norm(a - b, axis=-1)


# ---------------------------------------------------------------------------------------------
# geometry
# ---------------------------------------------------------------------------------------------

def ca_clashes(backbone: Backbone, threshold: float = CLASH_CA, min_separation: int = 2) -> int:
    """Number of CA pairs ``i < j`` with ``j - i >= min_separation`` closer than ``threshold``.

    The default (3.0 A, ``|i - j| >= 2``) flags only true overlaps: non-adjacent CA atoms of
    real proteins stay above ~3.5 A (i, i+2 at >= ~4.5 A). FrameDiff's ``ca_ca_clashes``
    counts all pairs (``min_separation=1``) below 1.5 A instead; see :func:`geometry_metrics`."""
    ca = backbone.ca
    d = _dist(ca[:, None], ca[None])
    i, j = np.triu_indices(len(ca), k=min_separation)
    return int((d[i, j] < threshold).sum())


def chain_breaks(backbone: Backbone) -> int:
    """Number of chain breaks between consecutive residues: peptide C(i)-N(i+1) > 2.0 A for
    full backbones, CA(i)-CA(i+1) > 4.2 A for CA traces."""
    if len(backbone) < 2:
        return 0
    if backbone.full:
        d = _dist(backbone.atom("C")[:-1], backbone.atom("N")[1:])
        return int((d > BREAK_C_N).sum())
    return int((_dist(backbone.ca[:-1], backbone.ca[1:]) > BREAK_CA_CA).sum())


def _geometry_terms(bb: Backbone) -> dict[str, np.ndarray]:
    """Per-bond / per-angle absolute deviations and CA-CA distances of one backbone."""
    bonded = bonded_pairs(bb)
    ca = bb.ca
    out = {"ca_ca": _dist(ca[:-1], ca[1:])[bonded]}
    if bb.full:
        n, c = bb.atom("N"), bb.atom("C")
        out["bond_n_ca"] = np.abs(_dist(n, ca) - BONDS["N-CA"])
        out["bond_ca_c"] = np.abs(_dist(ca, c) - BONDS["CA-C"])
        out["bond_c_n"] = np.abs(_dist(c[:-1], n[1:])[bonded] - BONDS["C-N"])
        out["angle_n_ca_c"] = np.abs(_angle(n, ca, c) - ANGLES["N-CA-C"])
        out["angle_ca_c_n"] = np.abs(_angle(ca[:-1], c[:-1], n[1:])[bonded] - ANGLES["CA-C-N"])
        out["angle_c_n_ca"] = np.abs(_angle(c[:-1], n[1:], ca[1:])[bonded] - ANGLES["C-N-CA"])
    return out


def geometry_metrics(backbones: Sequence[Backbone]) -> dict[str, float]:
    """Local geometry of a set of backbones, pooled over all its bonds / residues / pairs.

    * ``bond_n_ca``, ``bond_ca_c``, ``bond_c_n`` (peptide bond, bonded neighbours only):
      mean ``|d - ideal|`` (A); ``angle_n_ca_c``, ``angle_ca_c_n``, ``angle_c_n_ca``: mean
      ``|angle - ideal|`` (degrees); all NaN when no member is a full backbone.
    * ``ca_ca_dev``, ``ca_ca_valid``: FrameDiff's ``ca_ca_distance`` convention
      (``analysis/metrics.py`` of jasonkyuyim/se3_diffusion): mean ``|d - 3.80|`` over
      consecutive CA pairs and the fraction with ``d < 3.80 + 0.1`` (one-sided, as there: too
      short pairs count as valid). FrameDiff's ideal is 3.8021 A, ours :data:`.geometry.CA_CA`.
    * ``clashes_per_res``: CA pairs ``|i - j| >= 2`` closer than 3.0 A (:func:`ca_clashes`) per
      residue; ``ca_clash_pair_frac``: FrameDiff's ``ca_ca_clashes`` rate, the fraction of all
      CA pairs ``i < j`` closer than 1.5 A.
    * ``breaks_per_res``: :func:`chain_breaks` per residue.
    """
    bbs = _check(backbones)
    terms: dict[str, list[np.ndarray]] = {}
    for bb in bbs:
        for k, v in _geometry_terms(bb).items():
            terms.setdefault(k, []).append(v)

    def pooled(key: str) -> np.ndarray:
        return np.concatenate(terms[key]) if key in terms else np.empty(0)

    out = {k: _mean(pooled(k)) for k in GEOMETRY_KEYS[:6]}
    ca_ca = pooled("ca_ca")
    out["ca_ca_dev"] = _mean(np.abs(ca_ca - CA_CA))
    out["ca_ca_valid"] = _mean(ca_ca < CA_CA + CA_CA_TOL)
    residues = sum(len(bb) for bb in bbs)
    pairs = sum(len(bb) * (len(bb) - 1) // 2 for bb in bbs)
    out["clashes_per_res"] = sum(ca_clashes(bb) for bb in bbs) / residues
    fd = sum(ca_clashes(bb, CLASH_CA_FRAMEDIFF, min_separation=1) for bb in bbs)
    out["ca_clash_pair_frac"] = fd / pairs if pairs else math.nan
    out["breaks_per_res"] = sum(chain_breaks(bb) for bb in bbs) / residues
    return out


# ---------------------------------------------------------------------------------------------
# Ramachandran
# ---------------------------------------------------------------------------------------------

def ramachandran(backbones: Sequence[Backbone]) -> tuple[np.ndarray, np.ndarray]:
    """``(phi, psi)`` in degrees of all residues with both angles defined (non-terminal, both
    neighbours bonded) of the full backbones of the set; CA traces contribute nothing."""
    phis, psis = [], []
    for bb in _check(backbones):
        if not bb.full or len(bb) < 3:
            continue
        phi, psi, _ = backbone_dihedrals(bb.atoms)
        bonded = bonded_pairs(bb)
        ok = np.zeros(len(bb), dtype=bool)
        ok[1:-1] = bonded[:-1] & bonded[1:]
        phis.append(np.degrees(phi[ok]))
        psis.append(np.degrees(psi[ok]))
    if not phis:
        return np.empty(0), np.empty(0)
    return np.concatenate(phis), np.concatenate(psis)


def ramachandran_histogram(phi: np.ndarray, psi: np.ndarray, bins: int = 36) -> np.ndarray:
    """``(bins, bins)`` probabilities of (phi, psi) on the torus ``[-180, 180)^2`` (angles are
    wrapped, so +180 falls into the first bin); no pseudo-count."""
    phi, psi = ((np.asarray(a, np.float64) + 180.0) % 360.0 - 180.0 for a in (phi, psi))
    h, _, _ = np.histogram2d(phi, psi, bins=bins, range=[[-180.0, 180.0], [-180.0, 180.0]])
    return h / h.sum()


def ramachandran_distance(samples: Sequence[Backbone], reference: Sequence[Backbone], bins: int = 36) -> float:
    """Jensen-Shannon divergence (base 2, in [0, 1]) between the 2-D (phi, psi) histograms of
    samples and reference (``bins`` x ``bins`` cells of the torus, 10 degrees by default).

    No pseudo-count: JSD is finite with empty cells (``0 log 0 = 0``), so none is needed and
    identical sets give exactly 0, disjoint ones exactly 1. NaN when either side has no
    dihedrals (CA traces)."""
    p_phi, p_psi = ramachandran(samples)
    q_phi, q_psi = ramachandran(reference)
    if not p_phi.size or not q_phi.size:
        return math.nan
    p = ramachandran_histogram(p_phi, p_psi, bins).ravel()
    q = ramachandran_histogram(q_phi, q_psi, bins).ravel()
    return float(jensenshannon(p, q, base=2.0) ** 2)  # scipy returns the distance, sqrt(JSD)


# ---------------------------------------------------------------------------------------------
# secondary structure
# ---------------------------------------------------------------------------------------------

def dssp(backbone: Backbone) -> np.ndarray:
    """DSSP 3-state string per residue (``'H'`` helix (alpha, 3-10 and pi), ``'E'`` strand,
    ``'-'`` loop) by ``pydssp.assign`` on the N, CA, C, O atoms (its input order); chains shorter
    than 6 residues, which pydssp cannot process, are all loop. ValueError for CA traces."""
    if not backbone.full:
        raise ValueError(f"backbone {backbone.name!r}: DSSP needs N, CA, C, O atoms, got a CA trace")
    if len(backbone) < DSSP_MIN_LENGTH:
        return np.full(len(backbone), "-")
    return np.asarray(pydssp.assign(backbone.atoms, out_type="c3"))


def _ca_atom_array(backbone: Backbone) -> AtomArray:
    """A biotite AtomArray of the CA atoms (residue name GLY: P-SEA reads only CA coordinates;
    residue numbers renumbered 1.. with a one-number jump at each numbering gap, so biotite sees
    the same discontinuities as :func:`bonded_pairs` and no duplicated numbers)."""
    n = len(backbone)
    arr = AtomArray(n)
    arr.coord = backbone.ca.astype(np.float32)
    steps = np.concatenate([[1], np.where(bonded_pairs(backbone), 1, 2)])
    arr.res_id = np.cumsum(steps)
    arr.chain_id = np.full(n, backbone.chain or "A")
    arr.res_name = np.full(n, "GLY")
    arr.atom_name = np.full(n, "CA")
    arr.element = np.full(n, "C")
    arr.hetero = np.zeros(n, dtype=bool)
    return arr


def psea(backbone: Backbone) -> np.ndarray:
    """P-SEA per residue (``'a'`` helix, ``'b'`` strand, ``'c'`` coil) from the CA atoms by
    ``biotite.structure.annotate_sse``; works for CA traces (chains of <= 5 residues: coil)."""
    return np.asarray(annotate_sse(_ca_atom_array(backbone)))


def ss_fractions(backbone: Backbone) -> dict[str, float]:
    """Helix / strand / loop fractions of one backbone by DSSP (NaN for a CA trace) and P-SEA."""
    out = dict.fromkeys(SS_KEYS[:3], math.nan)
    if backbone.full:
        d = dssp(backbone)
        out.update(dssp_helix=float(np.mean(d == "H")), dssp_strand=float(np.mean(d == "E")),
                   dssp_loop=float(np.mean(d == "-")))
    p = psea(backbone)
    out.update(psea_helix=float(np.mean(p == "a")), psea_strand=float(np.mean(p == "b")),
               psea_loop=float(np.mean(p == "c")))
    return out


def _ss_table(backbones: Sequence[Backbone]) -> dict[str, np.ndarray]:
    rows = [ss_fractions(bb) for bb in _check(backbones)]
    return {k: np.array([r[k] for r in rows]) for k in SS_KEYS}


def secondary_structure(backbones: Sequence[Backbone]) -> dict[str, float]:
    """Mean per-structure fractions ``dssp_helix``, ``dssp_strand``, ``dssp_loop`` (over the full
    backbones; NaN if none) and ``psea_helix``, ``psea_strand``, ``psea_loop`` (all members)."""
    return {k: _nanmean(v) for k, v in _ss_table(backbones).items()}


def _tv(p: dict[str, float], q: dict[str, float], method: str) -> float:
    keys = [f"{method}_{s}" for s in ("helix", "strand", "loop")]
    return 0.5 * float(sum(abs(p[k] - q[k]) for k in keys))


def ss_distance(samples: Sequence[Backbone], reference: Sequence[Backbone], method: str = "dssp") -> float:
    """Total-variation distance (in [0, 1]) between the mean helix / strand / loop compositions
    of samples and reference by ``method`` ``"dssp"`` (NaN for CA traces) or ``"psea"``."""
    if method not in ("dssp", "psea"):
        raise ValueError(f"method must be 'dssp' or 'psea', got {method!r}")
    return _tv(secondary_structure(samples), secondary_structure(reference), method)


# ---------------------------------------------------------------------------------------------
# radius of gyration
# ---------------------------------------------------------------------------------------------

def radius_of_gyration(backbones: Sequence[Backbone]) -> np.ndarray:
    """Per-structure radius of gyration (A) of the CA atoms: RMS distance to their centroid."""
    return np.array([float(np.sqrt(((bb.ca - bb.ca.mean(0)) ** 2).sum(-1).mean())) for bb in _check(backbones)])


def rg_ratio(backbones: Sequence[Backbone]) -> np.ndarray:
    """Per-structure ``Rg / (2.2 L^0.38)``: ~1 for a compact globular fold, > 1 for extended or
    elongated ones. The empirical scaling of folded globular proteins is that of Kuszewski,
    Gronenborn & Clore (J. Am. Chem. Soc. 121, 2337 (1999), as in XPLOR-NIH's Rg restraint)
    also used in Skolnick's group's structure prediction; it is derived for all-atom Rg, the
    CA-only Rg differs from it by a few percent."""
    bbs = _check(backbones)
    length = np.array([len(bb) for bb in bbs], dtype=np.float64)
    return radius_of_gyration(bbs) / (RG_PREFACTOR * length**RG_EXPONENT)


def rg_metrics(backbones: Sequence[Backbone]) -> dict[str, float]:
    """``rg_mean`` (A), ``rg_ratio`` (mean of :func:`rg_ratio`) and ``rg_abs_log_ratio`` = mean
    ``|log rg_ratio|`` (0 for ideally compact, length-independent; compare to the reference's)
    over the structures with Rg > 0 (a single residue has none: its log would be infinite)."""
    bbs = _check(backbones)
    ratio = rg_ratio(bbs)
    return {"rg_mean": _mean(radius_of_gyration(bbs)), "rg_ratio": _mean(ratio),
            "rg_abs_log_ratio": _mean(np.abs(np.log(ratio[ratio > 0])))}


# ---------------------------------------------------------------------------------------------
# TM-score: diversity, clusters, novelty
# ---------------------------------------------------------------------------------------------

def tm_score(a: Backbone, b: Backbone) -> tuple[float, float]:
    """TM-align (``tmtools.tm_align``) of the CA atoms of ``a`` and ``b`` with their sequences:
    the TM-scores normalised by the length of ``a`` and by that of ``b``. NaN for a chain of
    fewer than 3 residues (TM-align refuses those). Costs O(L_a L_b)."""
    if len(a) < 3 or len(b) < 3:
        return math.nan, math.nan
    _finite(a, "tm_score: a")
    _finite(b, "tm_score: b")
    res = tmtools.tm_align(np.ascontiguousarray(a.ca), np.ascontiguousarray(b.ca), a.sequence, b.sequence)
    return float(res.tm_norm_chain1), float(res.tm_norm_chain2)


def pairwise_tm(backbones: Sequence[Backbone]) -> np.ndarray:
    """Symmetric ``(n, n)`` TM-score matrix, each entry the mean of the two normalisations (by
    either chain's length; symmetric, and equal to both for chains of one length); diagonal 1.
    All ``n (n - 1) / 2`` pairs are aligned: subsample large sets (:func:`tm_subset`)."""
    bbs = _check(backbones)
    n = len(bbs)
    m = np.eye(n)
    for i in range(n):
        for j in range(i + 1, n):
            m[i, j] = m[j, i] = _mean(tm_score(bbs[i], bbs[j]))
    return m


def tm_subset(n: int, max_pairs: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of a random subset (seeded) of ``m <= n`` structures with ``m (m - 1) / 2
    <= max_pairs``: all ``n`` when they fit. A random subset's mean pairwise TM-score is an
    unbiased estimate of the whole set's."""
    if max_pairs < 1:
        raise ValueError(f"max_pairs must be >= 1, got {max_pairs}")
    m = int((1 + math.isqrt(1 + 8 * max_pairs)) // 2)  # largest m with m (m - 1) / 2 <= max_pairs
    if n <= m:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=m, replace=False))


def _offdiag_mean(m: np.ndarray) -> float:
    i, j = np.triu_indices(len(m), k=1)
    return _nanmean(m[i, j])


def _clusters(m: np.ndarray, threshold: float) -> float:
    """Connected components of the graph with an edge where TM-score >= threshold; NaN when a
    TM-score is NaN (a chain under 3 residues): an unknown edge could join two components, and
    counting it as absent would report more clusters (more diversity) than measured."""
    if np.isnan(m).any():
        return math.nan
    return float(connected_components(m >= threshold, directed=False)[0])


def diversity(backbones: Sequence[Backbone], max_pairs: int = 300, seed: int = 0) -> float:
    """Mean pairwise TM-score (:func:`pairwise_tm`) of the set: lower is more diverse. Over a
    seeded random subset (:func:`tm_subset`) when there are more than ``max_pairs`` pairs; NaN
    for a single structure."""
    bbs = _check(backbones)
    idx = tm_subset(len(bbs), max_pairs, seed)
    return _offdiag_mean(pairwise_tm([bbs[i] for i in idx]))


def tm_clusters(backbones: Sequence[Backbone], threshold: float = 0.5, max_pairs: int = 300,
                seed: int = 0) -> float:
    """Number of clusters by single-linkage clustering at TM-score ``threshold``: two structures
    share a cluster when a chain of pairs with TM-score (:func:`pairwise_tm`) >= threshold joins
    them (connected components). FrameDiff counted clusters with MaxCluster at TM 0.5; single
    linkage is the most permissive linkage, so it gives the fewest clusters. For more than
    ``max_pairs`` pairs the count is that of a seeded random subset (:func:`tm_subset`). NaN when
    a structure of that set has fewer than 3 residues (its TM-scores are NaN)."""
    bbs = _check(backbones)
    idx = tm_subset(len(bbs), max_pairs, seed)
    return _clusters(pairwise_tm([bbs[i] for i in idx]), threshold)


def novelty(samples: Sequence[Backbone], train: Sequence[Backbone], max_pairs: int = 1000,
            seed: int = 0) -> np.ndarray:
    """Per sample, the maximum TM-score to the training set, normalised by the sample's length
    (as a search of a sample against the PDB reports it): 1 for a copy of a training structure,
    below 0.5 for a novel fold.

    Costs ``len(samples) * len(train)`` alignments; above ``max_pairs`` a seeded random subset of
    the samples is evaluated (the others are NaN: the mean stays unbiased), and if the training
    set alone exceeds ``max_pairs`` it is subsampled too (then the maxima are lower bounds)."""
    smp, trn = _check(samples, "samples"), _check(train, "train")
    rng = np.random.default_rng(seed)
    if len(trn) > max_pairs:
        trn = [trn[i] for i in np.sort(rng.choice(len(trn), size=max_pairs, replace=False))]
    keep = max(1, max_pairs // len(trn))
    idx = np.arange(len(smp)) if len(smp) <= keep else np.sort(rng.choice(len(smp), size=keep, replace=False))
    out = np.full(len(smp), math.nan)
    for i in idx:
        scores = [s for s in (tm_score(smp[i], t)[0] for t in trn) if math.isfinite(s)]
        out[i] = max(scores) if scores else math.nan
    return out


# ---------------------------------------------------------------------------------------------
# designability
# ---------------------------------------------------------------------------------------------

def kabsch_rmsd(x: np.ndarray, y: np.ndarray) -> float:
    """RMSD (A) of points ``x`` and ``y`` ``(N, 3)`` after the optimal rigid superposition of
    ``x`` onto ``y`` (Kabsch: SVD of the covariance, reflections excluded)."""
    x = np.asarray(x, np.float64) - np.mean(x, axis=0)
    y = np.asarray(y, np.float64) - np.mean(y, axis=0)
    u, _, vt = np.linalg.svd(x.T @ y)
    d = np.sign(np.linalg.det(u @ vt)) or 1.0
    rot = u @ np.diag([1.0, 1.0, d]) @ vt  # x @ rot is the superposed x
    return float(np.sqrt(((x @ rot - y) ** 2).sum(-1).mean()))


@dataclass
class Designability:
    """Self-consistency (designability) of backbones, FrameDiff's protocol: for each backbone
    ``design`` proposes sequences (FrameDiff: 8 ProteinMPNN sequences), ``fold`` predicts each
    one's structure (FrameDiff: ESMFold); scRMSD is the smallest Kabsch-superposed CA RMSD of a
    prediction to the backbone, and a backbone is designable when scRMSD < ``threshold`` (2 A).
    (FrameDiff's code reports the mean CA deviation after superposition; this is the RMSD.)

    No weights are shipped: plug in your own models, e.g. with ProteinMPNN and ESMFold::

        import esm  # fair-esm with its ESMFold extras
        esmfold = esm.pretrained.esmfold_v1().eval().cuda()

        def design(bb):  # sequences for bb.atoms (L, 4, 3); e.g. ProteinMPNN, 8 at T = 0.1
            return my_proteinmpnn(bb.atoms, num_seqs=8)

        def fold(seq):  # CA coordinates (L, 3), or a backbone (L, 4, 3) of N, CA, C, O
            with torch.no_grad():
                out = esmfold.infer([seq])
            return out["positions"][-1, 0, :, 1].cpu().numpy()  # atom14 index 1 = CA

        result = Designability(design, fold)(backbones)
        result["designable_frac"], result["sc_rmsd"]
    """

    design: Callable[[Backbone], list[str]]
    fold: Callable[[str], np.ndarray]
    threshold: float = 2.0

    def sc_rmsd(self, backbone: Backbone) -> float:
        """Smallest CA RMSD between the backbone and the folds of its designed sequences."""
        seqs = list(self.design(backbone))
        if not seqs:
            raise ValueError(f"backbone {backbone.name!r}: design returned no sequences")
        best = math.inf
        for seq in seqs:
            pred = np.asarray(self.fold(seq), dtype=np.float64)
            if pred.ndim == 3 and pred.shape[1:] == (4, 3):
                pred = pred[:, 1]
            if pred.ndim != 2 or pred.shape[1] != 3:
                raise ValueError(f"backbone {backbone.name!r}: fold must return (L, 3) CA or (L, 4, 3) "
                                 f"N/CA/C/O coordinates, got shape {pred.shape}")
            if len(pred) != len(backbone):
                raise ValueError(f"backbone {backbone.name!r}: fold returned {len(pred)} residues for a "
                                 f"backbone of {len(backbone)}")
            best = min(best, kabsch_rmsd(pred, backbone.ca))
        return best

    def summary(self, backbones: Sequence[Backbone]) -> tuple[np.ndarray, dict[str, float]]:
        """Per-backbone scRMSD and the set's ``designable_frac``, ``sc_rmsd_mean``, ``sc_rmsd_median``."""
        sc = np.array([self.sc_rmsd(bb) for bb in _check(backbones)])
        return sc, {"designable_frac": float((sc < self.threshold).mean()), "sc_rmsd_mean": float(sc.mean()),
                    "sc_rmsd_median": float(np.median(sc))}

    def __call__(self, backbones: Sequence[Backbone]) -> dict[str, object]:
        """``sc_rmsd`` and ``designable`` per backbone (lists), ``designable_frac``, ``sc_rmsd_mean``
        and ``sc_rmsd_median``."""
        sc, stats = self.summary(backbones)
        return {"sc_rmsd": sc.tolist(), "designable": (sc < self.threshold).tolist(), **stats}


# ---------------------------------------------------------------------------------------------
# everything at once
# ---------------------------------------------------------------------------------------------

def _set_metrics(bbs: list[Backbone], max_tm_pairs: int, seed: int) -> dict[str, float]:
    """The one-set metrics (geometry, secondary structure, Rg, TM diversity and clusters)."""
    out: dict[str, float] = {"n": float(len(bbs)), "mean_length": _mean([len(bb) for bb in bbs])}
    out |= geometry_metrics(bbs)
    out |= secondary_structure(bbs)
    out |= rg_metrics(bbs)
    idx = tm_subset(len(bbs), max_tm_pairs, seed)
    tm = pairwise_tm([bbs[i] for i in idx])
    clusters = _clusters(tm, NOVEL_TM)
    out |= {"tm_diversity": _offdiag_mean(tm), "tm_clusters": float(clusters),
            "tm_cluster_frac": clusters / len(idx), "tm_n": float(len(idx))}
    return out


def evaluate_backbones(samples: Sequence[Backbone], reference: Sequence[Backbone],
                       train: Sequence[Backbone] | None = None, max_tm_pairs: int = 300, *,
                       max_novelty_pairs: int = 1000, designability: Designability | None = None,
                       bins: int = 36, seed: int = 0) -> dict[str, float]:
    """All metrics as one flat dict of floats.

    Sample-side: ``n``, ``mean_length``, :func:`geometry_metrics`, :func:`secondary_structure`,
    :func:`rg_metrics`, ``tm_diversity`` (:func:`diversity`), ``tm_clusters`` /
    ``tm_cluster_frac`` (single linkage at TM 0.5, :func:`tm_clusters`; NaN when a chain of the
    set has under 3 residues) over ``tm_n`` structures (a seeded subset when there are more than
    ``max_tm_pairs`` pairs). The same for the reference
    with a ``ref_`` prefix. Comparisons: ``rama_jsd`` (:func:`ramachandran_distance`),
    ``dssp_ss_distance`` / ``psea_ss_distance`` (:func:`ss_distance`). With ``train``:
    ``novelty_max_tm`` (mean of :func:`novelty`) and ``novel_frac`` (max TM < 0.5) over
    ``novelty_n`` samples (at most ``max_novelty_pairs // len(train)``, a seeded subset); with
    ``designability``: ``designable_frac``, ``sc_rmsd_mean``, ``sc_rmsd_median``. Keys that need
    what is not there (full backbones, a training set, design models) are NaN.
    ValueError for an empty samples / reference / train list."""
    smp, ref = _check(samples, "samples"), _check(reference, "reference")
    for what, bbs in (("samples", smp), ("reference", ref)):
        _warn_units(bbs, what)
    out = _set_metrics(smp, max_tm_pairs, seed)
    ref_out = _set_metrics(ref, max_tm_pairs, seed)
    out |= {f"ref_{k}": v for k, v in ref_out.items()}
    out["rama_jsd"] = ramachandran_distance(smp, ref, bins)
    out["dssp_ss_distance"] = _tv(out, ref_out, "dssp")
    out["psea_ss_distance"] = _tv(out, ref_out, "psea")
    out["novelty_max_tm"] = out["novel_frac"] = out["novelty_n"] = math.nan
    if train is not None:
        best = novelty(smp, train, max_novelty_pairs, seed)
        best = best[np.isfinite(best)]
        out["novelty_max_tm"] = _mean(best)
        out["novel_frac"] = _mean(best < NOVEL_TM)
        out["novelty_n"] = float(len(best))
    out["designable_frac"] = out["sc_rmsd_mean"] = out["sc_rmsd_median"] = math.nan
    if designability is not None:
        out |= designability.summary(smp)[1]
    return out


def per_backbone_flags(backbones: Sequence[Backbone]) -> dict[str, list]:
    """Per-structure values for reports (``polydiff evaluate --json``): ``name``, ``length``,
    ``rg`` (A), ``rg_ratio``, ``clashes`` (:func:`ca_clashes`), ``breaks`` (:func:`chain_breaks`),
    ``dssp_helix`` / ``dssp_strand`` (NaN for CA traces) and ``psea_helix`` / ``psea_strand``."""
    bbs = _check(backbones)
    ss = _ss_table(bbs)
    return {
        "name": [bb.name for bb in bbs],
        "length": [len(bb) for bb in bbs],
        "rg": radius_of_gyration(bbs).tolist(),
        "rg_ratio": rg_ratio(bbs).tolist(),
        "clashes": [ca_clashes(bb) for bb in bbs],
        "breaks": [chain_breaks(bb) for bb in bbs],
        **{k: ss[k].tolist() for k in ("dssp_helix", "dssp_strand", "psea_helix", "psea_strand")},
    }
