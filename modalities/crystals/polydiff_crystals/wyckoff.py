"""Wyckoff letters of crystals and their equivalent relabellings, derived from Euclidean normalisers.

WyCryst-P describes a crystal by its space group and the Wyckoff letters of its sites, and augments its data with
every equivalent relabelling of those letters: the same crystal can be described with its origin (and axes) placed
differently, and then different letters label the same orbits.  This module derives those relabellings itself, from
each space group's operations and Wyckoff positions, with no table of relabellings.

How it works
------------
* **Setting.**  Every group is used in one fixed standard setting: the one of pyxtal's ``Group(n)`` (ITA standard:
  unique axis b, cell choice 1, origin choice 2, hexagonal axes for rhombohedral groups).  Its general position gives
  the operations modulo the lattice (centring translations included); its Wyckoff positions give letters,
  multiplicities and the coordinate triplets of every orbit point.  Structures are brought into the same setting by
  spglib (``get_symmetry_dataset(..., hall_number=...)`` with pyxtal's Hall number), so coordinates, operations and
  letters all refer to one frame.
* **Normaliser.**  An affine map ``x -> P x + p`` of fractional coordinates relabels Wyckoff positions when it maps
  the group onto itself (conjugating every operation gives an operation of the group, modulo the centred lattice,
  and ``P`` maps the centred lattice onto itself).  We keep the elements that are *isometries of a generic lattice of
  the crystal system*: ``P`` has entries in {-1, 0, 1} and ``P^T G P = G`` for the metric ``G`` of a conventional
  cell with generic parameters of that system (triclinic: all six free; monoclinic: beta free; orthorhombic: a, b,
  c distinct; tetragonal: a = b; trigonal and hexagonal: a = b, gamma = 120 deg; cubic).  Such a map is a Euclidean
  motion of every crystal of the system, so the moved crystal is congruent to the original with the same lattice
  (``StructureMatcher`` matches it, also with ``scale=False``): this is the Euclidean normaliser for the generic
  metric (ITA Vol. A, Part 15).  Maps that are isometries only of special metrics, or affine maps that are none
  (monoclinic cell-choice changes, the GL(3, Z) part of the triclinic normaliser), are left out.
* **Axis permutations (option).**  ``axis_permutations=True`` adds, for orthorhombic groups, the signed axis
  permutations that normalise the group (Pmmm: all six).  They are no isometry of an a != b != c lattice, so
  :func:`apply_normaliser` re-expresses the unchanged crystal in the permuted basis (lattice parameters permuted).
  WyCryst-P's normaliser table includes them; the default leaves them out so that a description keeps its lattice.
* **Translations.**  The shift ``p`` is searched on the grid (Z/24)^3 (the 230 settings need denominators 2, 3, 4
  and 6).  Along polar axes (fixed by every rotation) any shift normalises the group and changes no letter; those
  shifts are fixed to 0.  Candidates are reduced to one per coset of the group (elements that differ by a group
  operation act alike on letters).
* **Improper maps.**  The Euclidean normaliser may contain orientation-reversing maps, which take a chiral crystal
  to its mirror image (in I4_132 only they swap 8a and 8b).  They are included by default, as in ITA and WyCryst;
  ``proper_only=True`` keeps ``det P = +1``.
* **Letters.**  An element maps a generic point of each Wyckoff position to a generic point of a position with the
  same multiplicity; the letter of that image (the position whose coordinate triplets it satisfies modulo the
  lattice) gives the induced permutation ``{old letter: new letter}``.

Checks (tests/crystals/test_cry_wyckoff.py): for all 230 groups the derived permutations are a subset of pymatgen's
table ``analysis/prototypes/wyckoff-position-relabelings.json.gz`` and equal to it, except that the table also
permutes orthorhombic axes (equal with ``axis_permutations=True``) and adds to C2/c the cell change
``x -> (-x - z + 1/4, -y + 1/4, -z)`` (an isometry only when c cos(beta) = -a/2).  All 230 groups take about 5 s
on one core, after about 3 s loading pyxtal's data; results are cached per process.

Public: :func:`space_group`, :func:`normaliser_elements`, :func:`wyckoff_relabellings`, :func:`induced_relabelling`,
:func:`assign_letters`, :func:`standardize`, :func:`wyckoff_letters`, :func:`apply_normaliser`,
:func:`wyckoff_augment`, :func:`augment_all`.
"""

from __future__ import annotations

import itertools
import warnings
from dataclasses import dataclass, field
from functools import cache
from types import MappingProxyType

import numpy as np
import spglib
from pymatgen.core import Lattice, Structure

__all__ = [
    "NormaliserElement",
    "SpaceGroupInfo",
    "WyckoffPosition",
    "apply_normaliser",
    "assign_letters",
    "augment_all",
    "induced_relabelling",
    "normaliser_elements",
    "space_group",
    "standardize",
    "wyckoff_augment",
    "wyckoff_letters",
    "wyckoff_relabellings",
]

GRID = 24  # denominator of the searched normaliser shifts
# a generic point of every Wyckoff position: its free parameters take these values
_GENERIC = np.array([0.1137, 0.2719, 0.3853])


@dataclass(frozen=True)
class WyckoffPosition:
    """One Wyckoff position: ``ops[i]`` (3 x 4 affine) maps the free parameters to the i-th point of the orbit."""

    letter: str
    multiplicity: int
    ops: np.ndarray  # (multiplicity, 3, 4)
    # projectors onto the complement of each op's direction space: a point x lies on op i's subspace when
    # projectors[i] @ (x - ops[i, :, 3]) vanishes (modulo the lattice)
    projectors: np.ndarray = field(repr=False, compare=False, default=None)

    def __post_init__(self) -> None:
        if self.projectors is None:
            a = self.ops[:, :, :3]
            object.__setattr__(self, "projectors", np.eye(3) - np.einsum("mij,mjk->mik", a, np.linalg.pinv(a)))
        for arr in (self.ops, self.projectors):
            arr.setflags(write=False)


@dataclass(frozen=True)
class SpaceGroupInfo:
    """A space group in its standard setting: operations modulo the lattice, centring vectors, Wyckoff positions."""

    number: int
    hall_number: int
    crystal_system: str
    rotations: np.ndarray  # (k, 3, 3) int, one per coset of the lattice incl. centring
    translations: np.ndarray  # (k, 3) in [0, 1)
    centring: np.ndarray  # (c, 3) in [0, 1), the zero vector first
    wyckoffs: tuple[WyckoffPosition, ...]  # in letter order a, b, c, ...

    @property
    def letters(self) -> tuple[str, ...]:
        return tuple(w.letter for w in self.wyckoffs)

    def wyckoff(self, letter: str) -> WyckoffPosition:
        """The Wyckoff position with this letter."""
        for w in self.wyckoffs:
            if w.letter == letter:
                return w
        raise KeyError(f"space group {self.number} has no Wyckoff letter {letter!r}")


@dataclass(frozen=True)
class NormaliserElement:
    """An element ``x -> matrix @ x + shift`` of the Euclidean normaliser and the letter permutation it induces."""

    matrix: np.ndarray  # (3, 3) int
    shift: np.ndarray  # (3,) in [0, 1)
    relabelling: MappingProxyType  # old letter -> new letter (read-only)

    def __post_init__(self) -> None:
        for arr in (self.matrix, self.shift):
            arr.setflags(write=False)
        if not isinstance(self.relabelling, MappingProxyType):
            object.__setattr__(self, "relabelling", MappingProxyType(dict(self.relabelling)))

    @property
    def proper(self) -> bool:
        return round(float(np.linalg.det(self.matrix))) == 1

    def apply(self, frac_coords: np.ndarray) -> np.ndarray:
        """Image of fractional coordinates (n, 3), wrapped into [0, 1)."""
        out = np.asarray(frac_coords, dtype=float) @ self.matrix.T + self.shift
        return _wrap(out)


def _wrap(x: np.ndarray) -> np.ndarray:
    """Fractional coordinates in [0, 1), with values within 1e-8 of 1 sent to 0."""
    y = np.mod(x, 1.0)
    y[np.abs(y - 1.0) < 1e-8] = 0.0
    return y


# ------------------------------------------------------------------------------------------ space group data


@cache
def space_group(number: int) -> SpaceGroupInfo:
    """Operations and Wyckoff positions of space group ``number`` (1-230) in pyxtal's standard setting."""
    if not isinstance(number, (int, np.integer)) or not 1 <= int(number) <= 230:
        raise ValueError(f"space group number must be an integer in 1..230, got {number!r}")
    from pyxtal.symmetry import Group  # deferred: pyxtal is slow to import

    group = Group(int(number))
    wyckoffs = []
    for wp in group.Wyckoff_positions:
        ops = np.array([op.affine_matrix[:3, :] for op in wp.ops], dtype=float)
        wyckoffs.append(WyckoffPosition(wp.letter, int(wp.multiplicity), ops))
    wyckoffs.sort(key=lambda w: _letter_index(w.letter))
    general = wyckoffs[-1].ops
    rotations = np.rint(general[:, :, :3]).astype(int)
    translations = _wrap(general[:, :, 3])
    is_translation = np.all(rotations == np.eye(3, dtype=int), axis=(1, 2))
    centring = translations[is_translation]
    centring = centring[np.argsort(np.abs(centring).sum(axis=1), kind="stable")]
    # one operation per rotation (coset of the centred lattice)
    keep, seen = [], set()
    for i, r in enumerate(rotations):
        key = r.tobytes()
        if key not in seen:
            seen.add(key)
            keep.append(i)
    return SpaceGroupInfo(
        number=int(number),
        hall_number=int(group.hall_number),
        crystal_system=str(group.lattice_type),
        rotations=rotations[keep],
        translations=translations[keep],
        centring=centring,
        wyckoffs=tuple(wyckoffs),
    )


def _letter_index(letter: str) -> int:
    """ITA order of Wyckoff letters: a..z, then A (only Pmmm's general position)."""
    return ord(letter) - ord("a") if letter.islower() else 26 + ord(letter) - ord("A")


def _generic_metric(system: str) -> np.ndarray:
    """Metric tensor of a conventional cell with generic parameters for the crystal system."""
    params = {
        "triclinic": (1.0, 1.17, 1.31, 73.1, 81.7, 97.3),
        "monoclinic": (1.0, 1.17, 1.31, 90.0, 103.7, 90.0),
        "orthorhombic": (1.0, 1.17, 1.31, 90.0, 90.0, 90.0),
        "tetragonal": (1.0, 1.0, 1.31, 90.0, 90.0, 90.0),
        "trigonal": (1.0, 1.0, 1.31, 90.0, 90.0, 120.0),
        "hexagonal": (1.0, 1.0, 1.31, 90.0, 90.0, 120.0),
        "cubic": (1.0, 1.0, 1.0, 90.0, 90.0, 90.0),
    }
    if system not in params:
        raise ValueError(f"unknown crystal system {system!r}")
    m = Lattice.from_parameters(*params[system]).matrix
    return m @ m.T


def _unimodular() -> np.ndarray:
    """All 3 x 3 matrices with entries -1, 0, 1 and determinant +-1."""
    mats = np.array(list(itertools.product((-1, 0, 1), repeat=9)), dtype=int).reshape(-1, 3, 3)
    return mats[np.abs(np.rint(np.linalg.det(mats))) == 1]


def _preserving(mats: np.ndarray, metric: np.ndarray) -> np.ndarray:
    """The matrices P with P^T G P = G."""
    kept = np.einsum("nji,jk,nkl->nil", mats, metric, mats)
    return mats[np.all(np.abs(kept - metric) < 1e-9, axis=(1, 2))]


@cache
def _candidate_matrices(system: str, axis_permutations: bool) -> np.ndarray:
    """Linear parts to try: the isometries of the system's generic conventional metric (its holohedry), plus for
    orthorhombic systems with ``axis_permutations`` the signed permutations of the axes."""
    if axis_permutations and system == "orthorhombic":
        system = "cubic"
    return _preserving(_unimodular(), _generic_metric(system))


# ------------------------------------------------------------------------------------------ normaliser


def _to_grid(x: np.ndarray) -> np.ndarray:
    """Fractional vectors as integers modulo GRID (they must lie on the grid)."""
    k = np.asarray(x) * GRID
    if np.abs(k - np.rint(k)).max(initial=0.0) > 1e-6:
        raise RuntimeError(f"translation {x} is not a multiple of 1/{GRID}")
    return np.mod(np.rint(k).astype(np.int64), GRID)


def _grid_key(k: np.ndarray) -> np.ndarray:
    """One integer per grid vector (..., 3) reduced modulo GRID."""
    k = np.mod(k, GRID)
    return (k[..., 0] * GRID + k[..., 1]) * GRID + k[..., 2]


def _rot_key(r: np.ndarray) -> np.ndarray:
    """One integer per integer matrix (..., 3, 3) with entries in -9..9."""
    digits = (r.reshape(*r.shape[:-2], 9) + 9).astype(np.int64)
    return digits @ (19 ** np.arange(9, dtype=np.int64))


@dataclass(frozen=True)
class _Tables:
    """Integer look-up tables of a space group for the normaliser search (translations in GRID units)."""

    rot_keys: np.ndarray  # (k,) key of each rotation
    sorted_keys: np.ndarray  # rot_keys sorted
    order: np.ndarray  # argsort of rot_keys
    trans: np.ndarray  # (k, 3) int
    centring: np.ndarray  # (c, 3) int
    centring_keys: np.ndarray  # (c,)


@cache
def _tables(number: int) -> _Tables:
    g = space_group(number)
    keys = _rot_key(g.rotations)
    order = np.argsort(keys)
    centring = _to_grid(g.centring)
    return _Tables(keys, keys[order], order, _to_grid(g.translations), centring, _grid_key(centring))


def _polar_axes(g: SpaceGroupInfo) -> list[int]:
    """Basis axes fixed by every rotation: shifts along them normalise the group for any length."""
    return [k for k in range(3) if all(np.array_equal(r[:, k], np.eye(3, dtype=int)[:, k]) for r in g.rotations)]


def _shift_grid(g: SpaceGroupInfo) -> np.ndarray:
    """Candidate shifts in GRID units: (Z/GRID)^3, with 0 along polar axes."""
    axes = [[0] if k in _polar_axes(g) else range(GRID) for k in range(3)]
    return np.array(list(itertools.product(*axes)), dtype=np.int64)


def _valid_shifts(g: SpaceGroupInfo, p: np.ndarray, shifts: np.ndarray) -> np.ndarray | None:
    """Shifts s (GRID units) for which x -> p x + s normalises the group (None when p's linear part does not)."""
    tab = _tables(g.number)
    if not np.all(np.isin(_grid_key(tab.centring @ p.T), tab.centring_keys)):
        return None  # p does not map the centred lattice onto itself
    p_inv = np.rint(np.linalg.inv(p)).astype(np.int64)
    conj = np.einsum("ij,kjl,lm->kim", p, g.rotations, p_inv)
    keys = _rot_key(conj)
    pos = np.minimum(np.searchsorted(tab.sorted_keys, keys), len(keys) - 1)
    if not np.array_equal(tab.sorted_keys[pos], keys):
        return None  # some conjugated rotation is not a rotation of the group
    target = tab.trans[tab.order[pos]]
    # conjugate of (r, t) is (r2, p t + (1 - r2) s): its translation must equal the group's one for r2, modulo
    # the centred lattice.  Filter op by op while many candidates remain, then all remaining ops at once.
    mats = np.eye(3, dtype=np.int64) - conj
    bases = tab.trans @ p.T - target
    # most restrictive conditions first: (1 - r2) of high rank leaves few shifts
    first = np.argsort(-np.linalg.matrix_rank(mats.astype(float)), kind="stable")
    mats, bases = mats[first], bases[first]
    cand = shifts
    i = 0
    while i < len(mats) and cand.shape[0] > 64:
        cand = cand[np.isin(_grid_key(bases[i] + cand @ mats[i].T), tab.centring_keys)]
        i += 1
    if i < len(mats) and cand.shape[0]:
        d = bases[None, i:] + np.einsum("kij,nj->nki", mats[i:], cand)
        cand = cand[np.all(np.isin(_grid_key(d), tab.centring_keys), axis=1)]
    return cand


def _coset_keys(g: SpaceGroupInfo, p: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """A key per shift s (GRID units) that is equal for (p, s) and (p', s') exactly when they differ by an operation
    of the group: the smallest key over the coset {(p r, p t + s + c)}."""
    tab = _tables(g.number)
    rot = _rot_key(np.einsum("ij,kjl->kil", p, g.rotations))  # (k,)
    trans = (tab.trans @ p.T)[None, :, None, :] + shifts[:, None, None, :] + tab.centring[None, None, :, :]
    tkey = _grid_key(trans).min(axis=2)  # (n, k)
    return (rot[None, :] * GRID**3 + tkey).min(axis=1)


_INT_SHIFTS = np.array(list(itertools.product(range(-2, 3), repeat=3)), dtype=float)


def _point_in_position(x: np.ndarray, w: WyckoffPosition, tol: float) -> bool:
    """Whether the point x (fractional) lies on the orbit of w's representative subspaces, modulo the lattice:
    some lattice vector n puts x + n - b_i in the direction space of op i."""
    d = x - w.ops[:, :, 3]
    d = (d - np.round(d))[:, None, :] + _INT_SHIFTS[None, :, :]  # (m, s, 3)
    resid = np.einsum("mij,msj->msi", w.projectors, d)
    return bool((np.abs(resid).max(axis=-1) < tol).any())


def _letter_of_point(g: SpaceGroupInfo, x: np.ndarray, tol: float) -> str | None:
    """Letter of the most special Wyckoff position through x (letters run from special to general)."""
    for w in g.wyckoffs:
        if _point_in_position(x, w, tol):
            return w.letter
    return None


def _relabelling(g: SpaceGroupInfo, p: np.ndarray, s: np.ndarray) -> dict[str, str]:
    """Letter permutation induced by x -> p x + s, from the image of a generic point of every Wyckoff position."""
    out = {}
    for w in g.wyckoffs:
        point = w.ops[0, :, :3] @ _GENERIC + w.ops[0, :, 3]
        image = _wrap(p @ point + s)
        for v in g.wyckoffs:
            if v.multiplicity == w.multiplicity and _point_in_position(image, v, 1e-6):
                out[w.letter] = v.letter
                break
        else:
            raise RuntimeError(
                f"space group {g.number}: image of Wyckoff {w.letter} under ({p.tolist()}, {s}) "
                "lies on no Wyckoff position of the same multiplicity"
            )
    if sorted(out.values()) != sorted(out):
        raise RuntimeError(f"space group {g.number}: ({p.tolist()}, {s}) does not permute the Wyckoff letters")
    return out


@cache
def normaliser_elements(
    spacegroup: int, proper_only: bool = False, axis_permutations: bool = False
) -> tuple[NormaliserElement, ...]:
    """One element per coset of the group in its (generic-metric, discrete) Euclidean normaliser, identity first.

    Different cosets may induce the same letter permutation (they then describe the crystal with different but
    equally labelled coordinates).  ``proper_only`` drops orientation-reversing elements (mirror images).
    ``axis_permutations`` adds, for orthorhombic groups, the elements that permute the axes: they re-express the
    crystal in another orthorhombic basis of the same setting (the lattice parameters are permuted)."""
    g = space_group(spacegroup)
    shifts = _shift_grid(g)
    mats = _candidate_matrices(g.crystal_system, axis_permutations)
    # simple representatives first: the identity, then the group's own rotations, then the rest, fewest -1 first
    in_group = np.isin(_rot_key(mats), _tables(g.number).rot_keys)
    is_identity = np.all(mats == np.eye(3, dtype=int), axis=(1, 2))
    negatives = (mats < 0).sum(axis=(1, 2))
    reps: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for i in np.lexsort((negatives, ~in_group, ~is_identity)):
        p = mats[i]
        if proper_only and round(np.linalg.det(p)) != 1:
            continue
        valid = _valid_shifts(g, p, shifts)
        if valid is None or not len(valid):
            continue
        valid = valid[np.argsort(np.abs(np.where(valid > GRID // 2, valid - GRID, valid)).sum(axis=1), kind="stable")]
        for key, s in zip(_coset_keys(g, p, valid).tolist(), valid, strict=True):
            reps.setdefault(key, (p, s / GRID))
    return tuple(NormaliserElement(p.copy(), s, _relabelling(g, p, s)) for p, s in reps.values())


def induced_relabelling(spacegroup: int, matrix: np.ndarray, shift: np.ndarray) -> dict[str, str]:
    """Letter permutation ``{old: new}`` induced by the affine map ``x -> matrix @ x + shift``, which must map the
    group onto itself (any such map: no metric condition; ``shift`` a multiple of 1/24)."""
    g = space_group(spacegroup)
    p = np.asarray(matrix)
    if p.shape != (3, 3) or np.abs(p - np.rint(p)).max() > 1e-9 or abs(round(np.linalg.det(p))) != 1:
        raise ValueError(f"matrix must be an integer 3 x 3 matrix with determinant +-1, got {p.tolist()}")
    p = np.rint(p).astype(np.int64)
    s = _to_grid(np.asarray(shift, dtype=float).reshape(1, 3))
    valid = _valid_shifts(g, p, s)
    if valid is None or not len(valid):
        raise ValueError(f"x -> {p.tolist()} x + {np.asarray(shift).tolist()} does not normalise group {g.number}")
    return _relabelling(g, p, s[0] / GRID)


def _relabelling_key(m: dict[str, str]) -> tuple[str, ...]:
    return tuple(m[k] for k in sorted(m, key=_letter_index))


@cache
def _distinct(spacegroup: int, proper_only: bool, axis_permutations: bool) -> tuple[NormaliserElement, ...]:
    """The first normaliser element of every distinct letter permutation (identity first)."""
    out, seen = [], set()
    for el in normaliser_elements(spacegroup, proper_only, axis_permutations):
        key = _relabelling_key(el.relabelling)
        if key not in seen:
            seen.add(key)
            out.append(el)
    return tuple(out)


def wyckoff_relabellings(
    spacegroup: int, proper_only: bool = False, axis_permutations: bool = False
) -> list[dict[str, str]]:
    """Distinct Wyckoff-letter permutations ``{old: new}`` induced by the Euclidean normaliser, identity first
    (options as in :func:`normaliser_elements`)."""
    return [dict(el.relabelling) for el in _distinct(spacegroup, proper_only, axis_permutations)]


# ------------------------------------------------------------------------------------------ structures


def assign_letters(structure: Structure, spacegroup: int, tol: float = 1e-3) -> list[str]:
    """Wyckoff letter of every site of a structure that is already in the standard setting of ``spacegroup``.

    No symmetry search and no change of setting: each site gets the most special Wyckoff position of the group
    whose representative coordinates it satisfies (modulo the lattice, within ``tol`` in fractional units)."""
    g = space_group(spacegroup)
    letters = []
    for i, x in enumerate(_wrap(structure.frac_coords.copy())):
        letter = _letter_of_point(g, x, tol)
        if letter is None:
            raise ValueError(f"site {i} at {x.tolist()} lies on no Wyckoff position of space group {spacegroup}")
        letters.append(letter)
    return letters


def _spglib_cell(structure: Structure) -> tuple[tuple, list]:
    """spglib cell of an ordered structure, with one type number per distinct species."""
    if not isinstance(structure, Structure):
        from .modality import Undecodable

        got = f"{structure.name} is Undecodable ({structure.reason})" if isinstance(structure, Undecodable) \
            else f"got {type(structure).__name__}"
        raise TypeError(f"Wyckoff letters need a pymatgen Structure; {got}")
    if not structure.is_ordered:
        raise ValueError("Wyckoff letters need an ordered structure (every site one species)")
    kinds: list = []
    types = []
    for site in structure:
        sp = site.specie
        if sp not in kinds:
            kinds.append(sp)
        types.append(kinds.index(sp) + 1)
    return (structure.lattice.matrix.copy(), structure.frac_coords.copy(), types), kinds


def _dataset(structure: Structure, symprec: float, angle_tolerance: float):
    """spglib dataset in pyxtal's standard setting of the structure's space group."""
    cell, kinds = _spglib_cell(structure)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # spglib's notice about its error handling, per call
        ds = spglib.get_symmetry_dataset(cell, symprec=symprec, angle_tolerance=angle_tolerance)
        if ds is None:
            raise ValueError(f"spglib found no symmetry at symprec={symprec}: {spglib.get_error_message()}")
        hall = space_group(int(ds.number)).hall_number
        if ds.hall_number != hall:
            ds = spglib.get_symmetry_dataset(cell, symprec=symprec, angle_tolerance=angle_tolerance, hall_number=hall)
            if ds is None:
                raise ValueError(f"spglib could not use Hall number {hall}: {spglib.get_error_message()}")
    return ds, kinds


def wyckoff_letters(structure: Structure, symprec: float = 0.1, angle_tolerance: float = 5.0) -> tuple[int, list[str]]:
    """Space group number and the Wyckoff letter of every input site, in site order (as WyCryst reads them from
    ``SpacegroupAnalyzer(...).get_symmetrized_structure().wyckoff_symbols``).  The letters refer to the setting of
    :func:`space_group`; spglib picks the origin, so which of the equivalent labellings comes out is its choice (for
    groups with two origin choices it can differ from SpacegroupAnalyzer's, which uses origin choice 1)."""
    ds, _ = _dataset(structure, symprec, angle_tolerance)
    return int(ds.number), [str(w) for w in ds.wyckoffs]


def standardize(
    structure: Structure, symprec: float = 0.1, angle_tolerance: float = 5.0
) -> tuple[Structure, int, list[str]]:
    """Conventional cell in the standard setting (symmetrised), its space group and the letter of each of its sites.

    The letters are spglib's, carried from the input sites to the conventional-cell sites through the primitive
    cell; :func:`assign_letters` on the returned structure gives the same letters."""
    ds, kinds = _dataset(structure, symprec, angle_tolerance)
    species = [kinds[t - 1] for t in ds.std_types]
    std = Structure(Lattice(ds.std_lattice), species, _wrap(np.array(ds.std_positions)))
    by_prim = {int(p): str(w) for p, w in zip(ds.mapping_to_primitive, ds.wyckoffs, strict=True)}
    letters = [by_prim[int(p)] for p in ds.std_mapping_to_primitive]
    return std, int(ds.number), letters


def apply_normaliser(
    structure_std: Structure, spacegroup: int, op: NormaliserElement, letters: list[str] | None = None
) -> tuple[Structure, list[str]]:
    """Apply a normaliser element ``x -> P x + p`` to a structure in the standard setting of ``spacegroup``.

    Fractional coordinates become ``P x + p`` and the site order is kept.  When P is an isometry of the structure's
    lattice (always, unless ``axis_permutations`` elements are used on a crystal with a != b != c) the lattice is
    kept and the crystal is moved by that isometry; otherwise the lattice becomes ``P^-T M`` (rows = lattice
    vectors), which re-expresses the unchanged crystal in the new basis.  Returns the new structure and its letters:
    ``letters`` relabelled, or :func:`assign_letters` of the input relabelled when ``letters`` is None."""
    g = space_group(spacegroup)
    if set(op.relabelling) != set(g.letters):
        raise ValueError(f"normaliser element belongs to another space group than {spacegroup}")
    if letters is None:
        letters = assign_letters(structure_std, spacegroup)
    if len(letters) != len(structure_std):
        raise ValueError(f"{len(letters)} letters for a structure of {len(structure_std)} sites")
    matrix = structure_std.lattice.matrix
    metric = matrix @ matrix.T
    p = op.matrix.astype(float)
    if np.allclose(p.T @ metric @ p, metric, rtol=1e-8, atol=1e-8 * float(np.abs(metric).max())):
        lattice = structure_std.lattice
    else:
        lattice = Lattice(np.linalg.inv(p).T @ matrix)
    new = Structure(
        lattice,
        [site.species for site in structure_std],
        op.apply(structure_std.frac_coords),
        site_properties=structure_std.site_properties or None,
    )
    return new, [op.relabelling[x] for x in letters]


def wyckoff_augment(
    structure: Structure,
    rng: np.random.Generator,
    symprec: float = 0.1,
    proper_only: bool = False,
    axis_permutations: bool = False,
) -> tuple[Structure, int, list[str]]:
    """An equivalent description of the crystal under a random Wyckoff relabelling, uniform over the distinct
    letter permutations of its group (the identity included): the transformed standard structure, its space group
    and its per-site letters.  Options as in :func:`normaliser_elements`."""
    std, sg, letters = standardize(structure, symprec)
    elements = _distinct(sg, proper_only, axis_permutations)
    el = elements[int(rng.integers(len(elements)))]
    new, new_letters = apply_normaliser(std, sg, el, letters)
    return new, sg, new_letters


def augment_all(
    structure: Structure, symprec: float = 0.1, proper_only: bool = False, axis_permutations: bool = False
) -> list[tuple[Structure, list[str]]]:
    """Every distinct equivalent description (WyCryst's duplicate-every-relabelling augmentation): the standard
    structure under each distinct letter permutation of its group, identity first, dropping permutations that give
    an already seen per-site letter list.  Options as in :func:`normaliser_elements`."""
    std, sg, letters = standardize(structure, symprec)
    out, seen = [], set()
    for el in _distinct(sg, proper_only, axis_permutations):
        new, new_letters = apply_normaliser(std, sg, el, letters)
        if tuple(new_letters) not in seen:
            seen.add(tuple(new_letters))
            out.append((new, new_letters))
    return out
