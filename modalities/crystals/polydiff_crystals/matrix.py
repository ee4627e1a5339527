"""DiffCrysGen's crystal-as-a-matrix representation: encode, scale, decode.

DiffCrysGen (Mal et al. 2025) writes a whole crystal as one fixed-size real matrix and diffuses
it with a single Gaussian process, so one denoiser predicts elements, lattice, coordinates and
occupancies together. The layout follows DiffCrysGen's ``invert_pcr.InvertPCR`` (its "IRCR"),
with ``C = max(3, max_elements)`` columns; the defaults give DiffCrysGen's (136, 3) matrix:

=====================================  ============  =============================================
rows                                    default rows  content
=====================================  ============  =============================================
``[0, n_elements)``                     0..93         element one-hot: column j has a 1 in row Z-1
                                                      for the j-th distinct element (by
                                                      electronegativity, then Z); empty columns 0
``n_elements``                          94            lattice lengths a, b, c (angstrom)
``n_elements + 1``                      95            lattice angles alpha, beta, gamma (degrees)
next ``max_sites``                      96..115       fractional x, y, z of site i (in [0, 1)),
                                                      sites grouped by element column; 0 if unused
next ``max_sites``                      116..135      occupancy: a 1 in column j when site i holds
                                                      the element of column j; 0 if unused
next ``len(properties)``                (none)        one property per row, repeated in every column
=====================================  ============  =============================================

Columns past the third of the lattice and coordinate rows, and past ``max_elements`` of the
element and occupancy rows, are 0 (only when ``max_elements != 3``).

For diffusion each row is MinMax-scaled to [-1, 1] over all training matrices and columns
(:class:`RowScaler`; DiffCrysGen's ``utils.minmax`` then ``2 x - 1``). Decoding (in unscaled
units, DiffCrysGen's rules with a threshold of 0.5): an element column holds the argmax row of its
entries >= 0.5, or nothing; a site is present when its largest occupancy entry is >= 0.5 and then
holds the element of that column (a site pointing at an empty column is dropped, as DiffCrysGen's
``get_atomic_numbers`` drops Z = 0). Each undecodable matrix gets a reason instead of an exception.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pymatgen.core import Element, Lattice, Structure

NAN = "NaN"
NO_ELEMENT = "no element above threshold"
BAD_LENGTH = "lattice length <= 0"
BAD_ANGLES = "angles do not form a valid cell"
NO_SITE = "no occupied site"
EMPTY_COLUMN = "occupied sites point to empty element columns"
REASONS = (NAN, NO_ELEMENT, BAD_LENGTH, BAD_ANGLES, NO_SITE, EMPTY_COLUMN)


class MatrixError(ValueError):
    """A structure that does not fit the matrix layout (too many sites or elements, Z too large, disorder)."""


@dataclass(frozen=True)
class MatrixSpec:
    """Size of the matrix representation (see the module docstring for the layout table).

    ``properties`` names entries of ``Structure.properties`` stored one per row after the sites
    (DiffCrysGen's optional property block)."""

    max_elements: int = 3
    max_sites: int = 20
    n_elements: int = 94
    properties: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("max_elements", "max_sites", "n_elements"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise ValueError(f"MatrixSpec.{name} must be a positive integer, got {value!r}")
        if self.n_elements > 118:
            raise ValueError(f"MatrixSpec.n_elements must be <= 118, got {self.n_elements}")
        object.__setattr__(self, "properties", tuple(str(p) for p in self.properties))
        if len(set(self.properties)) != len(self.properties):
            raise ValueError(f"MatrixSpec.properties has duplicates: {list(self.properties)}")

    @property
    def cols(self) -> int:
        """Columns: one per element slot, at least 3 (x, y, z and a, b, c share them)."""
        return max(3, self.max_elements)

    @property
    def lattice_row(self) -> int:
        """Row of a, b, c; alpha, beta, gamma are in the next one."""
        return self.n_elements

    @property
    def coord_row(self) -> int:
        """First row of fractional coordinates."""
        return self.n_elements + 2

    @property
    def occupancy_row(self) -> int:
        """First row of the site-element occupancy block."""
        return self.coord_row + self.max_sites

    @property
    def property_row(self) -> int:
        """First property row."""
        return self.occupancy_row + self.max_sites

    @property
    def rows(self) -> int:
        """Total rows: elements, 2 lattice rows, coordinates, occupancies, properties."""
        return self.property_row + len(self.properties)

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols) of one matrix: (136, 3) by default."""
        return self.rows, self.cols

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (stored as the dataset info's ``"matrix"`` entry)."""
        return {"max_elements": self.max_elements, "max_sites": self.max_sites, "n_elements": self.n_elements,
                "properties": list(self.properties)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MatrixSpec:
        """Inverse of :meth:`to_dict`; missing keys take the defaults, unknown keys are an error."""
        unknown = sorted(set(d) - {"max_elements", "max_sites", "n_elements", "properties"})
        if unknown:
            raise ValueError(f"matrix spec: unknown keys {unknown}; allowed: max_elements, max_sites, n_elements, "
                             "properties")
        return cls(int(d.get("max_elements", 3)), int(d.get("max_sites", 20)), int(d.get("n_elements", 94)),
                   tuple(d.get("properties", ())))


def _name(structure: Structure) -> str:
    props = getattr(structure, "properties", None) or {}
    return str(props.get("name", "<unnamed structure>"))


def _electronegativity(el: Element) -> float:
    x = el.X
    return float(x) if x is not None and math.isfinite(x) else math.inf


def encode(structure: Structure, spec: MatrixSpec = MatrixSpec()) -> np.ndarray:
    """The (rows, cols) float64 matrix of an ordered ``structure``.

    Raises :class:`MatrixError` naming ``structure.properties["name"]`` when it does not fit."""
    name = _name(structure)
    if not structure.is_ordered:
        raise MatrixError(f"{name}: disordered (partially occupied) sites are not supported")
    n = len(structure)
    if n == 0:
        raise MatrixError(f"{name}: no sites")
    if n > spec.max_sites:
        raise MatrixError(f"{name}: {n} sites > max_sites {spec.max_sites}")
    zs = []
    for site in structure:
        z = int(getattr(site.specie, "Z", 0) or 0)
        if not 1 <= z <= spec.n_elements:
            raise MatrixError(f"{name}: element {site.specie} (Z={z}) is outside Z 1..{spec.n_elements}")
        zs.append(z)
    elements = sorted({Element.from_Z(z) for z in zs}, key=lambda e: (_electronegativity(e), e.Z))
    if len(elements) > spec.max_elements:
        raise MatrixError(f"{name}: {len(elements)} elements ({', '.join(e.symbol for e in elements)}) > "
                          f"max_elements {spec.max_elements}")
    column = {e.Z: j for j, e in enumerate(elements)}
    frac = np.mod(np.asarray(structure.frac_coords, dtype=np.float64), 1.0)
    frac[frac >= 1.0 - 1e-12] = 0.0  # mod can round 1 - tiny up to 1.0
    order = sorted(range(n), key=lambda i: (column[zs[i]], *np.round(frac[i], 8)))

    m = np.zeros(spec.shape, dtype=np.float64)
    for j, e in enumerate(elements):
        m[e.Z - 1, j] = 1.0
    lat = structure.lattice
    m[spec.lattice_row, :3] = lat.abc
    m[spec.lattice_row + 1, :3] = lat.angles
    for k, i in enumerate(order):
        m[spec.coord_row + k, :3] = frac[i]
        m[spec.occupancy_row + k, column[zs[i]]] = 1.0
    props = getattr(structure, "properties", None) or {}
    for k, prop in enumerate(spec.properties):
        if prop not in props:
            raise MatrixError(f"{name}: property {prop!r} missing (has {sorted(props)})")
        try:
            value = float(props[prop])
        except (TypeError, ValueError) as exc:
            raise MatrixError(f"{name}: property {prop!r} is not a number: {props[prop]!r}") from exc
        if not math.isfinite(value):
            raise MatrixError(f"{name}: property {prop!r} is {value}")
        m[spec.property_row + k, :] = value
    return m


def encode_all(structures: Iterable[Structure], spec: MatrixSpec = MatrixSpec()
               ) -> tuple[np.ndarray, list[tuple[str, str]]]:
    """Encode many structures: ``(matrices (B, rows, cols), skipped [(name, reason)])``.

    Structures that do not fit are skipped, listed and counted in a warning."""
    out, skipped = [], []
    for s in structures:
        try:
            out.append(encode(s, spec))
        except MatrixError as exc:
            skipped.append((_name(s), str(exc)))
    if skipped:
        warnings.warn(f"encode_all: skipped {len(skipped)} structure(s) that do not fit the {spec.shape} matrix "
                      f"(first: {skipped[0][1]})", stacklevel=2)
    arr = np.stack(out) if out else np.zeros((0, *spec.shape))
    return arr, skipped


@dataclass
class RowScaler:
    """Per-row MinMax scaling to [-1, 1], fitted over all matrices and columns of a training set.

    A constant row (e.g. an element that never occurs) keeps a span of 1, as scikit-learn's
    MinMaxScaler does, so it maps to -1 without dividing by zero. Works on numpy arrays and
    torch tensors of shape (..., rows, cols)."""

    low: np.ndarray
    high: np.ndarray

    def __post_init__(self) -> None:
        self.low = np.asarray(self.low, dtype=np.float64).reshape(-1)
        self.high = np.asarray(self.high, dtype=np.float64).reshape(-1)
        if self.low.shape != self.high.shape:
            raise ValueError(f"RowScaler: low has {self.low.size} rows, high has {self.high.size}")
        if not (np.isfinite(self.low).all() and np.isfinite(self.high).all()):
            raise ValueError("RowScaler: low/high must be finite")
        if (self.high < self.low).any():
            raise ValueError(f"RowScaler: high < low in rows {np.flatnonzero(self.high < self.low).tolist()}")

    @classmethod
    def fit(cls, matrices: np.ndarray) -> RowScaler:
        """Row minima and maxima of ``matrices`` (N, rows, cols)."""
        m = np.asarray(matrices, dtype=np.float64)
        if m.ndim != 3 or m.shape[0] == 0:
            raise ValueError(f"RowScaler.fit needs matrices of shape (N>0, rows, cols), got {m.shape}")
        if not np.isfinite(m).all():
            raise ValueError("RowScaler.fit: matrices contain NaN or inf")
        return cls(m.min(axis=(0, 2)), m.max(axis=(0, 2)))

    @property
    def span(self) -> np.ndarray:
        s = self.high - self.low
        return np.where(s > 0, s, 1.0)

    def _cast(self, v: np.ndarray, like: Any) -> Any:
        v = v[:, None]
        if isinstance(like, np.ndarray):
            return v.astype(like.dtype if np.issubdtype(like.dtype, np.floating) else np.float64)
        import torch

        return torch.as_tensor(v, dtype=like.dtype if like.is_floating_point() else torch.float32, device=like.device)

    def _check(self, x: Any) -> None:
        if x.shape[-2] != self.low.size:
            raise ValueError(f"RowScaler was fitted on {self.low.size} rows, got a matrix of shape {tuple(x.shape)}")

    def transform(self, x: Any) -> Any:
        """Unscaled -> [-1, 1] (training data; other data may leave the interval)."""
        x = np.asarray(x, dtype=np.float64) if not hasattr(x, "shape") else x
        self._check(x)
        return 2.0 * (x - self._cast(self.low, x)) / self._cast(self.span, x) - 1.0

    def inverse(self, x: Any) -> Any:
        """[-1, 1] -> unscaled units."""
        x = np.asarray(x, dtype=np.float64) if not hasattr(x, "shape") else x
        self._check(x)
        return (x + 1.0) * 0.5 * self._cast(self.span, x) + self._cast(self.low, x)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (stored in the dataset info)."""
        return {"kind": "row_minmax", "range": [-1.0, 1.0], "low": self.low.tolist(), "high": self.high.tolist()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RowScaler:
        """Inverse of :meth:`to_dict`."""
        if d.get("kind", "row_minmax") != "row_minmax" or "low" not in d or "high" not in d:
            raise ValueError(f"not a row_minmax scaler: keys {sorted(d)}, kind {d.get('kind')!r}")
        return cls(np.asarray(d["low"], dtype=np.float64), np.asarray(d["high"], dtype=np.float64))


def cell_is_valid(angles: Sequence[float], tol: float = 1e-6) -> bool:
    """Whether three angles (degrees) form a cell of positive volume: each in (0, 180) and the
    metric's normalised determinant ``1 - sum cos^2 + 2 prod cos`` above ``tol``."""
    if not all(0.0 < a < 180.0 for a in angles):
        return False
    ca, cb, cg = (math.cos(math.radians(a)) for a in angles)
    return 1.0 - ca * ca - cb * cb - cg * cg + 2.0 * ca * cb * cg > tol


def decode(matrix: np.ndarray, spec: MatrixSpec = MatrixSpec(), threshold: float = 0.5
           ) -> tuple[Structure | None, str | None]:
    """``(structure, None)`` from an unscaled matrix, or ``(None, reason)`` with one of
    :data:`REASONS`. Properties come back in ``structure.properties`` (row means)."""
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape != spec.shape:
        raise ValueError(f"decode: matrix of shape {m.shape}, the spec needs {spec.shape}")
    if not np.isfinite(m).all():
        return None, NAN
    e = spec.max_elements
    block = m[:spec.n_elements, :e]
    rows = block.argmax(axis=0)
    z_of_column = [int(r) + 1 if block[r, j] >= threshold else 0 for j, r in enumerate(rows)]
    if not any(z_of_column):
        return None, NO_ELEMENT
    abc = m[spec.lattice_row, :3]
    angles = m[spec.lattice_row + 1, :3]
    if (abc <= 0).any():
        return None, BAD_LENGTH
    if not cell_is_valid(angles):
        return None, BAD_ANGLES
    occ = m[spec.occupancy_row:spec.occupancy_row + spec.max_sites, :e]
    present = occ.max(axis=1) >= threshold
    if not present.any():
        return None, NO_SITE
    cols = occ.argmax(axis=1)
    keep = [i for i in range(spec.max_sites) if present[i] and z_of_column[cols[i]]]
    if not keep:
        return None, EMPTY_COLUMN
    frac = np.mod(m[spec.coord_row:spec.coord_row + spec.max_sites, :3][keep], 1.0)
    species = [Element.from_Z(z_of_column[cols[i]]) for i in keep]
    props = {p: float(m[spec.property_row + k].mean()) for k, p in enumerate(spec.properties)}
    lattice = Lattice.from_parameters(*abc, *angles)
    return Structure(lattice, species, frac, properties=props), None


def decode_all(matrices: Iterable[np.ndarray], spec: MatrixSpec = MatrixSpec(), threshold: float = 0.5
               ) -> tuple[list[Structure | None], list[str | None], Counter[str]]:
    """Decode many unscaled matrices: ``(structures, reasons, Counter of reasons)``; entries
    align with the input, None where undecodable / decodable. Warns with the count of failures."""
    structures, reasons = [], []
    for m in matrices:
        s, r = decode(m, spec, threshold)
        structures.append(s)
        reasons.append(r)
    counts = Counter(r for r in reasons if r is not None)
    if counts:
        warnings.warn(f"decode_all: {sum(counts.values())} of {len(reasons)} matrices undecodable: "
                      + ", ".join(f"{k} x{v}" for k, v in counts.most_common()), stacklevel=2)
    return structures, reasons, counts
