"""Molecule-generation metrics: EDM's stability, validity, uniqueness and novelty, plus
distribution metrics against reference molecules.

EDM definitions (Hoogeboom et al. 2022, "Equivariant Diffusion for Molecule Generation in 3D",
github.com/ehoogeboom/e3_diffusion_for_molecules, ``qm9/bond_analyze.py``, ``qm9/analyze.py``,
``qm9/rdkit_functions.py``), reproduced exactly because published numbers use them:

* **Bond order from a distance** (:func:`bond_order`): the distance in Angstrom is multiplied by
  100 *in its own dtype* and compared with a strict ``<`` against ``length + margin`` in pm
  (margins 10 / 5 / 3 pm for single / double / triple). The dtype matters at exact thresholds:
  ``100 * 1.06`` is 106.0 in float64 (no H-O bond, the test is ``< 106``) but 105.99999 in float32
  (a bond). Comparing in Angstrom against ``(length + margin) / 100`` rounds differently; don't.
* **Stability** (:func:`stability`): an atom is stable when the sum of its inferred bond orders
  equals its allowed valence (H 1, C 4, N 3, O 2, F 1; P, Hg, Bi allow two values). A molecule is
  stable when all its atoms are; a lone atom has no bonds and so is unstable. ``atm_stable`` pools
  atoms over all molecules (stable atoms / atoms), ``mol_stable`` is the fraction of stable
  molecules.
* **Validity** (:func:`validity`): an RDKit graph from the inferred bonds (no formal charges, no
  hydrogens added) is valid when ``SanitizeMol`` succeeds on the whole graph. RDKit fills implicit
  hydrogens on under-bonded atoms, so only over-valent atoms fail (a lone C is valid, SMILES ``C``).
  The SMILES kept is that of the largest fragment (the first of equal ones, RDKit's fragment
  order), canonical, with the molecule's hydrogens written as explicit ``[H]`` atoms.
* **Uniqueness**: distinct valid SMILES / valid molecules. **Novelty**: unique valid SMILES not
  in the training set / unique valid SMILES. Both sides are canonicalised with
  :func:`canonical_smiles` first (EDM compared raw strings, which only works when the training
  SMILES were written by the same code).

Differences from EDM's code, on purpose:

* Fixed bug: EDM's validity takes distances from ``torch.cdist``, which switches to a less accurate
  matrix-product path (``|x|^2 + |y|^2 - 2 x.y``) above 25 atoms, so for QM9's larger molecules the
  validity graph can differ from the stability graph near a threshold. Here both use exact
  pairwise differences, ``sqrt((dx^2 + dy^2) + dz^2)`` in the chosen dtype, the same arithmetic
  as EDM's per-pair ``check_stability`` (float32 when EDM is given float32 positions, as in its
  sampling pipeline; float64 by default here).
* Atom pairs are looked up with the lower atomic number first, as EDM's graph builder does (its
  element encoders are in atomic-number order); EDM's ``bonds2`` lists C=S only under C, so the
  table here holds that length for both orders. Pairs missing from the tables never bond (EDM's
  ``check_exists``); elements without an allowed valence are never stable (EDM raises).
* Formal charges are ignored by stability and validity, as in EDM.
* A molecule with non-finite (NaN or infinite) coordinates is not a molecule: it has no bonds,
  no stable atoms and is invalid (EDM's code finds no bonds either and so calls the lone atoms
  valid). :func:`edm_metrics` and :func:`evaluate_molecules` warn how many there are, and how
  many have no atoms: those are valid with an empty SMILES, as in EDM's ``compute_validity``,
  and not stable (EDM's ``check_stability`` calls them stable, 0 of 0 atoms).

Distribution metrics (:func:`distribution_metrics`) compare samples with reference molecules (the
data), using each molecule's own ``bonds`` when set, else :func:`infer_bonds`: bond-length and
bond-angle 1-Wasserstein distances per kind, averaged with the kinds' reference frequencies; total
variation between element frequencies; mean MMFF94 energy per atom of valid samples, with the
number (``mmff_n``) and share of valid samples (``mmff_frac``) MMFF94 could score. Undefined
values are NaN, never a placeholder constant.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .molecule import ATOMIC_NUMBER, PERIODIC, Molecule

# -- tables -------------------------------------------------------------------------------------

# Typical bond lengths in pm (EDM qm9/bond_analyze.py, which takes them from
# wiredchemist.com/chemistry/data/bond_energies_lengths.html and
# chemistry-reference.com/tables/Bond%20Lengths%20and%20Enthalpies.pdf). Re-typed as
# "element-element:pm" with the lower atomic number first.
_SINGLE_PM = """
H-H:74 H-B:119 H-C:109 H-N:101 H-O:96 H-F:92 H-Si:148 H-P:144 H-S:134 H-Cl:127 H-As:152 H-Br:141 H-I:161
B-Cl:175
C-C:154 C-N:147 C-O:143 C-F:135 C-Si:185 C-P:184 C-S:182 C-Cl:177 C-Br:194 C-I:214
N-N:145 N-O:140 N-F:136 N-P:177 N-S:168 N-Cl:175 N-Br:214 N-I:222
O-O:148 O-F:142 O-Si:163 O-P:163 O-S:151 O-Cl:164 O-Br:172 O-I:194
F-F:142 F-Si:160 F-P:156 F-S:158 F-Cl:166 F-Br:178 F-I:187
Si-Si:233 Si-S:200 Si-Cl:202 Si-Br:215 Si-I:243
P-P:221 P-S:210 P-Cl:203 P-Br:222
S-S:204 S-Cl:207 S-Br:225 S-I:234
Cl-Cl:199 Cl-Br:214 Br-Br:228 I-I:266
"""
_DOUBLE_PM = "C-C:134 C-N:129 C-O:120 C-S:160 N-N:125 N-O:121 O-O:121 O-P:150 P-S:186"
_TRIPLE_PM = "C-C:120 C-N:116 C-O:113 N-N:110"


def _parse_table(text: str) -> dict[tuple[str, str], int]:
    """``"A-B:n ..."`` to a dict holding n under both (A, B) and (B, A)."""
    out: dict[tuple[str, str], int] = {}
    for token in text.split():
        pair, pm = token.split(":")
        a, b = pair.split("-")
        out[(a, b)] = out[(b, a)] = int(pm)
    return out


#: Typical bond lengths in pm by bond order (1, 2, 3), keyed by element pair (both orders).
BOND_LENGTHS: dict[int, dict[tuple[str, str], int]] = {
    1: _parse_table(_SINGLE_PM), 2: _parse_table(_DOUBLE_PM), 3: _parse_table(_TRIPLE_PM)}
#: pm added to the single / double / triple length to get EDM's (strict) upper threshold.
MARGINS: tuple[int, int, int] = (10, 5, 3)
#: Number of bond orders an atom must have to be stable (EDM's ``allowed_bonds``).
ALLOWED_VALENCE: dict[str, int | tuple[int, ...]] = {
    "H": 1, "B": 3, "C": 4, "N": 3, "O": 2, "F": 1, "Al": 3, "Si": 4, "P": (3, 5), "S": 4, "Cl": 1,
    "As": 3, "Br": 1, "I": 1, "Hg": (1, 2), "Bi": (3, 5)}

# thresholds (length + margin, pm) as (3, Z, Z) matrices; -inf where a pair has no entry
_THRESHOLDS = np.full((3, len(PERIODIC), len(PERIODIC)), -np.inf)
for _k, _margin in enumerate(MARGINS):
    for (_a, _b), _pm in BOND_LENGTHS[_k + 1].items():
        _THRESHOLDS[_k, ATOMIC_NUMBER[_a], ATOMIC_NUMBER[_b]] = _pm + _margin
# allowed valences as a (Z, 2) matrix (-1: no second value; -2: element never stable)
_VALENCE = np.full((len(PERIODIC), 2), -2, dtype=np.int64)
for _el, _v in ALLOWED_VALENCE.items():
    _vals = (_v,) if isinstance(_v, int) else tuple(_v)
    _VALENCE[ATOMIC_NUMBER[_el]] = (_vals[0], _vals[1] if len(_vals) > 1 else -1)


def _pair_key(a: str, b: str) -> tuple[str, str]:
    """The element pair with the lower atomic number first (EDM's lookup order)."""
    return (a, b) if ATOMIC_NUMBER[a] <= ATOMIC_NUMBER[b] else (b, a)


# -- bonds and stability ------------------------------------------------------------------------


def bond_order(a: str, b: str, distance: Any) -> int:
    """EDM's bond order (0 none, 1, 2, 3) of elements ``a``, ``b`` at ``distance`` Angstrom.

    ``distance`` may be a Python float, a NumPy scalar or a 0-d torch tensor: ``100 * distance``
    is computed in that dtype and compared with ``length + margin`` (pm) by a strict ``<``, the
    single threshold first, so results at exact thresholds depend on the dtype as EDM's do."""
    key = _pair_key(a, b)
    d = 100 * distance
    order = 0
    for k in (1, 2, 3):
        length = BOND_LENGTHS[k].get(key)
        if length is None or not bool(d < length + MARGINS[k - 1]):
            break
        order = k
    return order


def pairwise_distances(positions: np.ndarray, dtype: Any = np.float64) -> np.ndarray:
    """(N, N) distances computed in ``dtype`` as ``sqrt((dx^2 + dy^2) + dz^2)``: the arithmetic of
    EDM's per-pair ``check_stability`` (not the matrix-product shortcut ``torch.cdist`` takes
    above 25 atoms)."""
    p = np.asarray(positions).astype(dtype, copy=False)
    diff = p[:, None, :] - p[None, :, :]
    sq = diff * diff
    return np.sqrt((sq[..., 0] + sq[..., 1]) + sq[..., 2])


def infer_bonds(mol: Molecule, dtype: Any = np.float64) -> np.ndarray:
    """(N, N) symmetric int bond orders from interatomic distances computed in ``dtype`` with
    EDM's thresholds (:func:`bond_order` for every pair, vectorised); none for non-finite
    coordinates."""
    n = len(mol)
    if n < 2 or not np.isfinite(mol.positions).all():
        return np.zeros((n, n), dtype=np.int64)
    z = mol.numbers
    d = 100 * pairwise_distances(mol.positions, dtype)
    thr = _THRESHOLDS[:, z[:, None], z[None, :]].astype(d.dtype)  # integers and -inf: exact
    order = np.where(d < thr[0], np.where(d < thr[1], np.where(d < thr[2], 3, 2), 1), 0)
    np.fill_diagonal(order, 0)
    return order.astype(np.int64)


def _stable_atoms(mol: Molecule, bonds: np.ndarray) -> np.ndarray:
    """(N,) bool: the atom's bond-order sum is one of its allowed valences."""
    if len(mol) == 0:
        return np.zeros(0, dtype=bool)
    valence = bonds.sum(axis=1)
    allowed = _VALENCE[mol.numbers]
    return (valence == allowed[:, 0]) | (valence == allowed[:, 1])


def stability(mol: Molecule, dtype: Any = np.float64) -> tuple[bool, int, int]:
    """EDM's ``check_stability``: (molecule stable, number of stable atoms, number of atoms), from
    bonds inferred from distances in ``dtype`` (``mol.bonds`` is not used)."""
    stable = _stable_atoms(mol, infer_bonds(mol, dtype))
    n_stable = int(stable.sum())
    return n_stable == len(mol) and len(mol) > 0, n_stable, len(mol)


# -- validity and SMILES ------------------------------------------------------------------------


def _edm_graph(mol: Molecule, bonds: np.ndarray) -> Any:
    """The unsanitised RDKit graph EDM validates: elements only (no charges, no conformer), bonds
    added row by row over the lower triangle as EDM's ``build_molecule`` does."""
    from rdkit import Chem

    kinds = {1: Chem.BondType.SINGLE, 2: Chem.BondType.DOUBLE, 3: Chem.BondType.TRIPLE}
    rw = Chem.RWMol()
    for s in mol.symbols:
        rw.AddAtom(Chem.Atom(s))
    ii, jj = np.nonzero(np.tril(bonds, -1))
    for i, j in zip(ii.tolist(), jj.tolist()):
        rw.AddBond(i, j, kinds[int(bonds[i, j])])
    return rw.GetMol()


@dataclass
class _Assessment:
    """Everything the EDM metrics need of one molecule, computed once."""

    n_atoms: int
    n_stable_atoms: int
    stable: bool
    valid: bool
    smiles: str | None
    n_fragments: int  # of the validity graph (0 when invalid)


def _assess(mol: Molecule, dtype: Any = np.float64) -> _Assessment:
    from rdkit import Chem, rdBase

    if not np.isfinite(mol.positions).all():  # no bonds, no stable atom, not valid
        return _Assessment(len(mol), 0, False, False, None, 0)
    bonds = infer_bonds(mol, dtype)
    stable = _stable_atoms(mol, bonds)
    n_stable = int(stable.sum())
    graph = _edm_graph(mol, bonds)
    valid, smiles, n_frags = False, None, 0
    with rdBase.BlockLogs():
        try:
            Chem.SanitizeMol(graph)
            valid = True
        except ValueError:  # RDKit's MolSanitizeException family
            pass
        if valid:
            frags = Chem.GetMolFrags(graph, asMols=True)
            n_frags = len(frags)
            largest = max(frags, key=lambda m: m.GetNumAtoms(), default=graph)  # first of equals
            try:
                Chem.SanitizeMol(largest)
                smiles = Chem.MolToSmiles(largest)
            except ValueError:  # not seen in practice; EDM keeps the molecule valid with no SMILES
                smiles = None
    return _Assessment(len(mol), n_stable, n_stable == len(mol) and len(mol) > 0, valid, smiles, n_frags)


def _assess_all(mols: Sequence[Molecule], dtype: Any) -> list[_Assessment]:
    """:func:`_assess` of every molecule, with a warning counting those with non-finite
    coordinates or no atoms (see the module docstring)."""
    lost = sum(not np.isfinite(m.positions).all() for m in mols)
    empty = sum(len(m) == 0 for m in mols)
    if lost:
        warnings.warn(f"{lost} of {len(mols)} molecules have non-finite coordinates (NaN or inf): invalid and "
                      "unstable", stacklevel=3)
    if empty:
        warnings.warn(f"{empty} of {len(mols)} molecules have no atoms: valid with an empty SMILES, as EDM's "
                      "compute_validity counts them, and not stable", stacklevel=3)
    _warn_units(mols)
    return [_assess(m, dtype) for m in mols]


def _warn_units(mols: Sequence[Molecule], most: int = 200) -> None:
    """A warning when the median nearest-neighbour distance (over up to ``most`` molecules) is
    under 0.5 A, where bonded atoms are 0.9-1.6 A apart: coordinates in nanometres would make
    every molecule invalid without any other sign."""
    near = []
    for m in mols[:most]:
        if len(m) > 1 and np.isfinite(m.positions).all():
            d = pairwise_distances(m.positions, np.float64)
            np.fill_diagonal(d, np.inf)
            near.append(d.min(1))
    if near and (median := float(np.median(np.concatenate(near)))) < 0.5:
        warnings.warn(f"the median distance of an atom to its nearest neighbour is {median:.3g} Angstrom, where bonded "
                      "atoms are 0.9-1.6 apart: are the coordinates in nanometres? The metrics read Angstrom (a "
                      "generator whose atoms collapse looks the same)", stacklevel=4)


def validity(mol: Molecule, dtype: Any = np.float64) -> tuple[bool, str | None]:
    """EDM's validity: (RDKit sanitises the inferred graph, SMILES of its largest fragment with
    explicit hydrogens or None when invalid). Distances in ``dtype``; ``mol.bonds`` not used;
    non-finite coordinates are invalid."""
    a = _assess(mol, dtype)
    return a.valid, a.smiles


def canonical_smiles(smiles: str) -> str | None:
    """RDKit's canonical SMILES with hydrogens made implicit and without stereo marks, so that
    SMILES written with or without explicit ``[H]`` atoms or stereo compare equal (molecules
    built from generated coordinates carry no stereo marks); None when RDKit cannot parse it."""
    from rdkit import Chem, rdBase

    with rdBase.BlockLogs():
        m = Chem.MolFromSmiles(smiles)
    return None if m is None else Chem.MolToSmiles(m, isomericSmiles=False)


# -- EDM summary --------------------------------------------------------------------------------


def _ratio(num: float, den: float) -> float:
    return num / den if den else math.nan


def _edm_summary(assessed: Sequence[_Assessment], train_smiles: Iterable[str] | None) -> dict[str, float]:
    n = len(assessed)
    n_atoms = sum(a.n_atoms for a in assessed)
    valid = [a.smiles for a in assessed if a.valid]
    unique = set(valid)
    if train_smiles is None or not unique:
        novelty = math.nan
    else:
        train = {c for c in map(canonical_smiles, train_smiles) if c is not None}
        novel = sum(1 for s in unique if s is None or (canonical_smiles(s) or s) not in train)
        novelty = novel / len(unique)
    return {
        "atm_stable": _ratio(sum(a.n_stable_atoms for a in assessed), n_atoms),
        "mol_stable": _ratio(sum(a.stable for a in assessed), n),
        "validity": _ratio(len(valid), n),
        "uniqueness": _ratio(len(unique), len(valid)),
        "novelty": novelty,
        "n_valid": float(len(valid)),
        "n_unique": float(len(unique)),
    }


def edm_metrics(mols: Sequence[Molecule], train_smiles: Iterable[str] | None = None,
                dtype: Any = np.float64) -> dict[str, float]:
    """EDM's sample metrics: ``atm_stable`` (pooled over atoms), ``mol_stable``, ``validity``,
    ``uniqueness`` (unique valid / valid), ``novelty`` (unique valid not in ``train_smiles`` /
    unique valid; NaN without ``train_smiles``), ``n_valid``, ``n_unique``. Ratios with a zero
    denominator are NaN."""
    return _edm_summary(_assess_all(mols, dtype), train_smiles)


def per_molecule_flags(mols: Sequence[Molecule], dtype: Any = np.float64) -> dict[str, list]:
    """Per-molecule EDM results, for finding which samples fail: ``stable``, ``valid``,
    ``smiles``, ``n_atoms``, ``n_stable_atoms`` (lists in the order of ``mols``)."""
    assessed = [_assess(m, dtype) for m in mols]
    return {"stable": [a.stable for a in assessed], "valid": [a.valid for a in assessed],
            "smiles": [a.smiles for a in assessed], "n_atoms": [a.n_atoms for a in assessed],
            "n_stable_atoms": [a.n_stable_atoms for a in assessed]}


# -- distribution metrics -----------------------------------------------------------------------


def _bonds_of(mol: Molecule) -> np.ndarray:
    """The molecule's own bonds when set, else inferred ones; none for non-finite coordinates
    (not a molecule, see the module docstring: its own bonds would add NaN lengths and angles)."""
    if not np.isfinite(mol.positions).all():
        return np.zeros((len(mol), len(mol)), dtype=np.int64)
    return mol.bonds if mol.bonds is not None else infer_bonds(mol)


def wasserstein1(a: Any, b: Any) -> float:
    """1-Wasserstein distance between the empirical distributions of samples ``a`` and ``b``:
    the integral over u in [0, 1] of |Q_a(u) - Q_b(u)| with the step quantile functions, exact
    on the grid of both sample sizes' breakpoints. NaN if either is empty."""
    a = np.sort(np.asarray(a, dtype=np.float64).ravel())
    b = np.sort(np.asarray(b, dtype=np.float64).ravel())
    n, m = len(a), len(b)
    if n == 0 or m == 0:
        return math.nan
    # quantile breakpoints k/n and l/m as integers over the common denominator n*m
    cuts = np.union1d(np.arange(n + 1, dtype=np.int64) * m, np.arange(m + 1, dtype=np.int64) * n)
    left, width = cuts[:-1], np.diff(cuts)
    return float(np.sum(width / (n * m) * np.abs(a[left // m] - b[left // n])))


def bond_lengths(mols: Iterable[Molecule]) -> dict[tuple[str, str, int], np.ndarray]:
    """Bond lengths (Angstrom) by kind (element, element, order), elements in atomic-number
    order."""
    out: dict[tuple[str, str, int], list[np.ndarray]] = {}
    for mol in mols:
        bonds = _bonds_of(mol)
        ii, jj = np.nonzero(np.triu(bonds, 1))
        if len(ii) == 0:
            continue
        lengths = np.linalg.norm(mol.positions[ii] - mol.positions[jj], axis=1)
        for i, j, d in zip(ii.tolist(), jj.tolist(), lengths):
            key = (*_pair_key(mol.symbols[i], mol.symbols[j]), int(bonds[i, j]))
            out.setdefault(key, []).append(d)
    return {k: np.asarray(v) for k, v in out.items()}


def bond_angles(mols: Iterable[Molecule]) -> dict[tuple[str, str, str], np.ndarray]:
    """Angles (degrees) between every two bonds sharing an atom, by (neighbour, centre,
    neighbour) elements, neighbours in atomic-number order; bond orders are not part of the
    kind."""
    out: dict[tuple[str, str, str], list[float]] = {}
    for mol in mols:
        bonds = _bonds_of(mol)
        for c in range(len(mol)):
            nb = np.nonzero(bonds[c])[0]
            if len(nb) < 2:
                continue
            u = mol.positions[nb] - mol.positions[c]
            u = u / np.linalg.norm(u, axis=1, keepdims=True)
            ii, kk = np.triu_indices(len(nb), 1)
            cos = np.clip(np.einsum("ij,ij->i", u[ii], u[kk]), -1.0, 1.0)
            for i, k, ang in zip(nb[ii].tolist(), nb[kk].tolist(), np.degrees(np.arccos(cos))):
                x, y = _pair_key(mol.symbols[i], mol.symbols[k])
                out.setdefault((x, mol.symbols[c], y), []).append(float(ang))
    return {k: np.asarray(v) for k, v in out.items()}


def _weighted_w1(sample: dict[Any, np.ndarray], reference: dict[Any, np.ndarray]) -> float:
    """Mean W1 over kinds present in both, weighted by the kinds' reference counts; NaN if none."""
    kinds = [k for k in reference if k in sample]
    if not kinds:
        return math.nan
    w = np.array([len(reference[k]) for k in kinds], dtype=np.float64)
    w1 = np.array([wasserstein1(sample[k], reference[k]) for k in kinds])
    return float(np.sum(w * w1) / np.sum(w))


def bond_length_w1(mols: Sequence[Molecule], reference: Sequence[Molecule]) -> float:
    """Reference-frequency-weighted mean over bond kinds of the W1 distance (Angstrom) between
    sample and reference bond lengths. Kinds absent from either side are left out; NaN if no
    kind is shared."""
    return _weighted_w1(bond_lengths(mols), bond_lengths(reference))


def bond_angle_w1(mols: Sequence[Molecule], reference: Sequence[Molecule]) -> float:
    """As :func:`bond_length_w1` for bond angles (degrees) keyed by element triple."""
    return _weighted_w1(bond_angles(mols), bond_angles(reference))


def atom_type_tv(mols: Sequence[Molecule], reference: Sequence[Molecule]) -> float:
    """Total variation distance (half the L1 distance) between the element frequencies of the
    samples and the reference, pooled over atoms; NaN if either has no atoms."""
    p = Counter(s for m in mols for s in m.symbols)
    q = Counter(s for m in reference for s in m.symbols)
    np_, nq = sum(p.values()), sum(q.values())
    if not np_ or not nq:
        return math.nan
    return 0.5 * sum(abs(p[s] / np_ - q[s] / nq) for s in set(p) | set(q))


def _connectivity(assessed: Sequence[_Assessment]) -> float:
    valid = [a for a in assessed if a.valid]
    return _ratio(sum(a.n_fragments == 1 for a in valid), len(valid))


def connectivity(mols: Sequence[Molecule], dtype: Any = np.float64) -> float:
    """Fraction of EDM-valid molecules whose inferred bond graph is a single fragment; NaN when
    none is valid."""
    return _connectivity([_assess(m, dtype) for m in mols])


def mmff_energy(mol: Molecule) -> float | None:
    """MMFF94 energy (kcal/mol) of the molecule as given (its atoms, formal charges, ``bonds``
    when set else inferred ones, positions; no hydrogens added), or None when RDKit cannot
    sanitise it or set MMFF up."""
    from rdkit import Chem, rdBase
    from rdkit.Chem import rdForceFieldHelpers as ffh

    with rdBase.BlockLogs():
        rd = mol.to_rdkit(bonds=_bonds_of(mol))
        try:
            Chem.SanitizeMol(rd)
        except ValueError:
            return None
        props = ffh.MMFFGetMoleculeProperties(rd)
        if props is None:
            return None
        ff = ffh.MMFFGetMoleculeForceField(rd, props)
        if ff is None:
            return None
        return float(ff.CalcEnergy())


def _mmff_per_atom(mols: Sequence[Molecule], valid: Sequence[bool]) -> dict[str, float]:
    """``mmff_energy_per_atom`` (mean over the valid, non-empty molecules MMFF can be set up
    for; NaN when none), ``mmff_n`` (how many those are) and ``mmff_frac`` (``mmff_n`` over the
    valid, non-empty molecules; NaN when there are none)."""
    energies, tried = [], 0
    for mol, ok in zip(mols, valid):
        if not (ok and len(mol)):
            continue
        tried += 1
        e = mmff_energy(mol)
        if e is not None:
            energies.append(e / len(mol))
    return {"mmff_energy_per_atom": float(np.mean(energies)) if energies else math.nan,
            "mmff_n": float(len(energies)), "mmff_frac": _ratio(len(energies), tried)}


def mmff_energy_per_atom(mols: Sequence[Molecule], dtype: Any = np.float64) -> float:
    """Mean over EDM-valid molecules of MMFF94 energy / number of atoms (kcal/mol), skipping
    those MMFF cannot be set up for; NaN when none can. :func:`distribution_metrics` reports
    how many were scored (``mmff_n``, ``mmff_frac``)."""
    return _mmff_per_atom(mols, [_assess(m, dtype).valid for m in mols])["mmff_energy_per_atom"]


def distribution_metrics(mols: Sequence[Molecule], reference: Sequence[Molecule],
                         valid: Sequence[bool] | None = None) -> dict[str, float]:
    """``bond_length_w1``, ``bond_angle_w1``, ``atom_type_tv`` against ``reference`` and
    ``mmff_energy_per_atom`` of the valid samples (``valid`` flags, computed when not given),
    with ``mmff_n`` (the number of molecules that energy averages: valid ones MMFF94 cannot be
    set up for, e.g. with boron, are left out) and ``mmff_frac`` (``mmff_n`` / valid)."""
    if valid is None:
        valid = [_assess(m).valid for m in mols]
    return {
        "bond_length_w1": bond_length_w1(mols, reference),
        "bond_angle_w1": bond_angle_w1(mols, reference),
        "atom_type_tv": atom_type_tv(mols, reference),
        **_mmff_per_atom(mols, valid),
    }


def evaluate_molecules(mols: Sequence[Molecule], reference: Sequence[Molecule] | None = None,
                       train_smiles: Iterable[str] | None = None, dtype: Any = np.float64) -> dict[str, float]:
    """All metrics of generated ``mols``: :func:`edm_metrics` and ``connectivity`` always, and
    :func:`distribution_metrics` when ``reference`` molecules are given. NaN where undefined."""
    mols = list(mols)
    assessed = _assess_all(mols, dtype)
    out = _edm_summary(assessed, train_smiles)
    out["connectivity"] = _connectivity(assessed)
    if reference is not None:
        out.update(distribution_metrics(mols, list(reference), [a.valid for a in assessed]))
    return out


__all__ = [
    "ALLOWED_VALENCE",
    "BOND_LENGTHS",
    "MARGINS",
    "atom_type_tv",
    "bond_angle_w1",
    "bond_angles",
    "bond_length_w1",
    "bond_lengths",
    "bond_order",
    "canonical_smiles",
    "connectivity",
    "distribution_metrics",
    "edm_metrics",
    "evaluate_molecules",
    "infer_bonds",
    "mmff_energy",
    "mmff_energy_per_atom",
    "pairwise_distances",
    "per_molecule_flags",
    "stability",
    "validity",
    "wasserstein1",
]
