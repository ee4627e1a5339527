"""Crystal datasets: the CDVAE benchmarks (perov_5, carbon_24), an embedded default set built from
pymatgen's AFLOW prototype library, and random symmetric crystals from pyxtal.

Everything returns pymatgen :class:`~pymatgen.core.Structure` objects with ``properties["name"]``
and, where known, float properties (``"formation_energy"`` eV/atom, ``"band_gap"`` eV,
``"energy_per_atom"`` eV/atom). The CDVAE sets, slow to parse, are cached as compact JSON (exact
float ``repr``) under :func:`crystal_cache_dir`, keyed by the CSV file's SHA-256 and the options;
a cache file that cannot be read is ignored with a warning and rebuilt.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import importlib.util
import json
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pymatgen.core import Element, Lattice, Structure

from polydiff.plugin import atomic_write, shared_file

from .crystal_io import read_cif_csv, structure_name

__all__ = [
    "CDVAE_COLUMNS",
    "cdvae_canonical",
    "cdvae_crystals",
    "crystal_cache_dir",
    "default_crystals",
    "min_distance",
    "random_crystals",
    "reduced_cells",
    "similar_elements",
]

CACHE_VERSION = 1
CDVAE_SPLITS = ("val", "test")
# CSV column -> property. perov_5: heat_ref is the formation energy (eV/atom) CDVAE trains on;
# ind_gap is the fundamental (indirect) band gap, dir_gap the direct gap; heat_all is kept as is.
CDVAE_COLUMNS: dict[str, dict[str, str]] = {
    "perov_5": {"heat_ref": "formation_energy", "ind_gap": "band_gap", "dir_gap": "direct_gap",
                "heat_all": "heat_all"},
    "carbon_24": {"energy_per_atom": "energy_per_atom"},
}


# ---------------------------------------------------------------------------------------------- caching


def crystal_cache_dir() -> Path:
    """Where crystal sets are cached: ``crystals/`` under polydiff's cache folder
    (:func:`polydiff.plugin.cache_dir`: ``$POLYDIFF_CACHE_DIR``, else ``$XDG_CACHE_HOME/polydiff``,
    else ``~/.cache/polydiff``)."""
    from polydiff.plugin import cache_dir

    return cache_dir() / "crystals"


def _to_record(s: Structure) -> dict[str, Any]:
    return {"lattice": s.lattice.matrix.tolist(), "z": [int(z) for z in s.atomic_numbers],
            "frac": s.frac_coords.tolist(), "properties": dict(s.properties)}


def _from_record(r: dict[str, Any]) -> Structure:
    return Structure(Lattice(r["lattice"]), r["z"], r["frac"], properties=dict(r["properties"]))


def _cached(file: Path, key: dict[str, Any], build: Callable[[], tuple[list[Structure], list[str]]],
            also: Sequence[Path] = ()) -> tuple[list[Structure], list[str]]:
    """(structures, notes) stored in ``file`` under ``key``, or ``build()``'s (then stored).
    ``also`` are other cache files tried first whose ``"structures"`` list starts with the
    wanted one (a cache of the whole file serves any ``n``); ``key["n"]`` then cuts it."""
    for candidate in (*also, file):
        if not candidate.is_file():
            continue
        try:
            stored = json.loads(candidate.read_text(encoding="utf-8"))
            if stored["key"] | {"n": key.get("n")} != key:
                continue
            records = stored["structures"]
            n = key.get("n")
            if candidate != file and n is not None:
                if stored["key"].get("n") is not None or stored["notes"]:
                    continue  # with skipped rows the first n structures are not the first n rows
                records = records[:n]
            return [_from_record(r) for r in records], list(stored["notes"])
        except (OSError, ValueError, KeyError, TypeError, IndexError) as err:
            warnings.warn(f"ignoring the unreadable crystal cache file {candidate} ({type(err).__name__}: {err}); "
                          "rebuilding it", stacklevel=3)
    structures, notes = build()
    payload = {"key": key, "notes": notes, "structures": [_to_record(s) for s in structures]}
    try:
        atomic_write(file, json.dumps(payload, separators=(",", ":")))
    except OSError as err:
        warnings.warn(f"could not write the crystal cache {file} ({err}); the set will be rebuilt next time",
                      stacklevel=3)
    return structures, notes


def _digest(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------- CDVAE


def cdvae_crystals(dataset: str, split: str, *, n: int | None = None, path: str | Path | None = None,
                   cache_dir: str | Path | None = None) -> list[Structure]:
    """The CDVAE benchmark crystals ``dataset`` (``"perov_5"`` or ``"carbon_24"``), ``split``
    (``"val"`` or ``"test"``), built as CDVAE builds them (``build_crystal(cif, niggli=True,
    primitive=False)``: parse the CIF, Niggli-reduce, rebuild the lattice from its six parameters
    in pymatgen's canonical orientation, same species and fractional coordinates).

    ``n`` keeps the first ``n`` rows (file order); ``path`` replaces the shared CSV
    (``shared/data/crystals_cdvae/<dataset>/<split>.csv``). Names are the ``material_id``s;
    properties: perov_5 ``formation_energy`` (= ``heat_ref``, eV/atom), ``band_gap``
    (= ``ind_gap``, the fundamental gap, eV), ``direct_gap`` (= ``dir_gap``) and ``heat_all``;
    carbon_24 ``energy_per_atom``. Parsing thousands of CIFs is slow, so the result is cached per
    (file SHA-256, options) under ``cache_dir`` (default :func:`crystal_cache_dir`)."""
    if dataset not in CDVAE_COLUMNS:
        raise ValueError(f"unknown CDVAE dataset {dataset!r} (choose one of {', '.join(CDVAE_COLUMNS)})")
    if split not in CDVAE_SPLITS and not (split == "train" and path is not None):
        extra = (" (train.csv is not part of the shared copy of the CDVAE data; pass path= to your own copy)"
                 if split == "train" else "")
        raise ValueError(f"unknown split {split!r} (choose one of {', '.join(CDVAE_SPLITS)}){extra}")
    if n is not None and n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    file = Path(path) if path is not None else shared_file("data", "crystals_cdvae", dataset, f"{split}.csv")
    if not file.is_file():
        raise FileNotFoundError(f"{file}: no such CSV file")
    columns = CDVAE_COLUMNS[dataset]
    key = {"kind": "cdvae", "version": CACHE_VERSION, "sha256": _sha256(file), "columns": columns,
           "niggli": True, "primitive": False, "n": n}
    folder = Path(cache_dir) if cache_dir is not None else crystal_cache_dir()
    stem = f"cdvae-{dataset}-{split}-{key['sha256'][:12]}"
    full = folder / f"{stem}-{_digest(key | {'n': None})}.json"
    target = full if n is None else folder / f"{stem}-{_digest(key)}.json"

    def build() -> tuple[list[Structure], list[str]]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            raw, _ = read_cif_csv(file, limit=n, columns=columns)
        return [cdvae_canonical(s) for s in raw], [str(w.message) for w in caught]

    structures, notes = _cached(target, key, build, also=(full,) if n is not None else ())
    for note in notes:
        warnings.warn(note, stacklevel=2)
    return structures


def cdvae_canonical(structure: Structure) -> Structure:
    """``structure`` Niggli-reduced and rebuilt from its lattice parameters (pymatgen's canonical
    orientation), keeping species, fractional coordinates and properties (CDVAE's
    ``build_crystal`` with ``niggli=True, primitive=False``)."""
    reduced = structure.get_reduced_structure()
    return Structure(Lattice.from_parameters(*reduced.lattice.parameters), reduced.species, reduced.frac_coords,
                     properties=dict(structure.properties))


def reduced_cells(structures: Sequence[Structure], source: Path) -> list[Structure]:
    """Every structure in its canonical Niggli-reduced cell (:func:`cdvae_canonical`); a
    ValueError naming ``source`` and the structure when pymatgen cannot reduce its lattice."""
    out = []
    for k, s in enumerate(structures):
        try:
            out.append(cdvae_canonical(s))
        except (ValueError, ArithmeticError) as err:
            raise ValueError(f"{source}: crystal {structure_name(s, f'#{k}')!r}: its cell cannot be Niggli-reduced "
                             f"({err}); pass data.options.niggli=false to train on the cells as given") from None
    return out


# ---------------------------------------------------------------------------------------------- default set

DEFAULT_VARIANTS = 6
# the elements a substitution may bring in: Z <= 83 plus Th and U, without H, Tc, Pm and the noble gases
_SUBSTITUTABLE_MAX_Z = 83
_EXCLUDED = {"H", "Tc", "Pm"}
_ACTINOIDS_KEPT = {"Th", "U"}


@functools.cache
def _pool() -> tuple[Element, ...]:
    out = []
    for z in range(1, 93):
        el = Element.from_Z(z)
        if el.symbol in _EXCLUDED or el.group == 18:
            continue
        if z <= _SUBSTITUTABLE_MAX_Z or el.symbol in _ACTINOIDS_KEPT:
            out.append(el)
    return tuple(out)


def similar_elements(symbol: str) -> list[str]:
    """The elements that may replace ``symbol`` in the default set (the substitution rule):
    the same group of the periodic table at most two rows away (s, p and d blocks; same group
    means the same valence-shell pattern and usually the same common oxidation state); within
    the lanthanoids, or the actinoids, at most two atomic numbers away. H and the noble gases
    are never replaced; H, the noble gases, Tc, Pm and the elements after Bi other than Th and U
    are never brought in."""
    return list(_similar(symbol))


@functools.cache
def _similar(symbol: str) -> tuple[str, ...]:
    el = Element(symbol)
    if el.symbol == "H" or el.group == 18:
        return ()
    out = []
    for other in _pool():
        if other == el:
            continue
        if el.is_lanthanoid or el.is_actinoid:
            same = (other.is_lanthanoid and el.is_lanthanoid) or (other.is_actinoid and el.is_actinoid)
            if same and abs(other.Z - el.Z) <= 2:
                out.append(other.symbol)
        elif not (other.is_lanthanoid or other.is_actinoid) and other.group == el.group and \
                abs(other.row - el.row) <= 2:
            out.append(other.symbol)
    return tuple(out)


def _radius(el: Element) -> float:
    r = el.atomic_radius or el.atomic_radius_calculated
    if r is None:
        raise ValueError(f"no atomic radius for {el}")
    return float(r)


def min_distance(structure: Structure) -> float:
    """The smallest periodic distance between two different sites (pymatgen ``distance_matrix``,
    diagonal excluded; ``inf`` for one site)."""
    if len(structure) < 2:
        return float("inf")
    d = structure.distance_matrix.copy()
    np.fill_diagonal(d, np.inf)
    return float(d.min())


def _prototype_file() -> Path:
    # find_spec of the subpackage imports only its parents: importing it would load (slowly) all its tables
    spec = importlib.util.find_spec("pymatgen.analysis.prototypes")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("pymatgen.analysis.prototypes not found (pymatgen too old?)")
    return Path(next(iter(spec.submodule_search_locations))) / "aflow_prototypes.json.gz"


def _sane(s: Structure) -> bool:
    a, b, c, alpha, beta, gamma = s.lattice.parameters
    return (min(a, b, c) >= 1.0 and max(a, b, c) <= 30.0 and all(20.0 <= x <= 160.0 for x in (alpha, beta, gamma))
            and 3.0 <= s.volume / len(s) <= 150.0 and min_distance(s) >= 0.5)


def _prototypes(max_sites: int, max_elements: int) -> list[tuple[str, Structure]]:
    """(AFLOW label, structure) of the ordered library prototypes within the limits and sane."""
    raw = json.loads(gzip.decompress(_prototype_file().read_bytes()))
    out = []
    for entry in raw:
        snl = entry["snl"]
        species = [site["species"] for site in snl["sites"]]
        if any(len(sp) != 1 or sp[0]["occu"] != 1 for sp in species):
            continue
        symbols = [sp[0]["element"] for sp in species]
        if len(symbols) > max_sites or len(set(symbols)) > max_elements:
            continue
        lattice = Lattice(snl["lattice"]["matrix"])
        s = Structure(Lattice.from_parameters(*lattice.parameters), symbols, [site["abc"] for site in snl["sites"]])
        if _sane(s):
            out.append((entry["tags"]["aflow"], s))
    return out


def _variants(s: Structure, rng: np.random.Generator, tries: int, keep: int) -> list[dict[str, str]]:
    """Up to ``keep`` distinct one-to-one element maps (not the identity) drawn with ``rng``."""
    elements = sorted({site.specie.symbol for site in s})
    options = {e: [e, *similar_elements(e)] for e in elements}
    if all(len(o) == 1 for o in options.values()):
        return []
    seen, out = set(), []
    for _ in range(tries):
        mapping = {e: options[e][int(rng.integers(len(options[e])))] for e in elements}
        image = tuple(mapping[e] for e in elements)
        if image == tuple(elements) or len(set(image)) < len(image) or image in seen:
            continue
        seen.add(image)
        out.append(mapping)
        if len(out) == keep:
            break
    return out


def substitute(s: Structure, mapping: dict[str, str]) -> Structure:
    """``s`` with its elements replaced by ``mapping`` and its lattice scaled isotropically by
    (sum of new atomic volumes / sum of old ones)^(1/3), radii from pymatgen's ``atomic_radius``."""
    old = [site.specie for site in s]
    new = [Element(mapping[e.symbol]) for e in old]
    scale = (sum(_radius(e) ** 3 for e in new) / sum(_radius(e) ** 3 for e in old)) ** (1 / 3)
    a, b, c, alpha, beta, gamma = s.lattice.parameters
    lattice = Lattice.from_parameters(a * scale, b * scale, c * scale, alpha, beta, gamma)
    return Structure(lattice, new, s.frac_coords)


def _build_default(seed: int, max_sites: int, max_elements: int, variants: int) -> list[Structure]:
    rng = np.random.default_rng(seed)
    out, used = [], set()
    for label, proto in _prototypes(max_sites, max_elements):
        base = label
        k = 1
        while base in used:
            k += 1
            base = f"{label}.{k}"
        used.add(base)
        proto.properties = {"name": base}
        out.append(proto)
        for mapping in _variants(proto, rng, tries=4 * variants, keep=variants):
            s = substitute(proto, mapping)
            if not _sane(s):
                continue
            name = f"{base}~{s.composition.reduced_formula}"
            while name in used:
                name += "'"
            used.add(name)
            s.properties = {"name": name}
            out.append(s)
    return out


def default_crystals(n: int | None = None, *, seed: int = 0, max_sites: int = 20, max_elements: int = 3
                     ) -> list[Structure]:
    """The embedded default crystal set, built offline from pymatgen's AFLOW prototype library
    (``pymatgen/analysis/prototypes/aflow_prototypes.json.gz``) in well under a second.

    Kept: ordered prototypes with at most ``max_sites`` sites and ``max_elements`` elements and a
    sane cell (lengths 1-30 A, angles 20-160 deg, 3-150 A^3 per atom, sites >= 0.5 A apart), each
    rebuilt in pymatgen's canonical lattice orientation. Each prototype then gets up to 6 seeded
    substitution variants: every element is independently kept or replaced by one of
    :func:`similar_elements` (same group, at most two rows away; lanthanoids / actinoids by
    neighbours), maps that merge two elements are dropped, and the lattice is scaled by the
    cube root of the ratio of summed atomic volumes (pymatgen atomic radii); variants failing the
    same sanity checks (in particular two sites closer than 0.5 A) are dropped. Names: the AFLOW
    label (``.2``... for a repeated label), ``<label>~<formula>`` for a variant of the prototype
    named ``<label>``.

    Measured with the defaults (seed 0): 244 prototypes, 1,505 structures, 90 space groups by
    AFLOW label (88 distinct found by spglib at symprec 0.1 on the prototypes), all 7 crystal
    systems. ``n`` draws ``n`` of them without replacement (seeded, in set order)."""
    if max_sites < 1 or max_elements < 1:
        raise ValueError(f"max_sites and max_elements must be >= 1, got {max_sites}, {max_elements}")
    structures = _build_default(seed, max_sites, max_elements, DEFAULT_VARIANTS)
    if n is None or n >= len(structures):
        if n is not None and n > len(structures):
            warnings.warn(f"asked for {n} default crystals, the set has {len(structures)}", stacklevel=2)
        return structures
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    pick = np.sort(np.random.default_rng([seed, 1]).choice(len(structures), size=n, replace=False))
    return [structures[i] for i in pick]


# ---------------------------------------------------------------------------------------------- random


def random_crystals(n: int, *, seed: int = 0, elements: Sequence[str] = ("Si", "O"), max_sites: int = 12
                    ) -> list[Structure]:
    """``n`` random symmetric crystals from pyxtal: a random space group (1-230) and a random
    composition of ``elements`` (a random non-empty subset, counts such that the conventional
    cell has at most ``max_sites`` sites), seeded. Generations pyxtal cannot make (incompatible
    Wyckoff multiplicities, no placement found) are skipped and counted in a warning; after
    ``50 * n + 50`` attempts whatever was made is returned."""
    from pyxtal import pyxtal

    if n < 0 or max_sites < 1 or not elements:
        raise ValueError(f"need n >= 0, max_sites >= 1 and some elements, got {n}, {max_sites}, {elements}")
    for e in elements:
        Element(e)  # a clear error for an unknown symbol
    rng = np.random.default_rng(seed)
    out: list[Structure] = []
    failed, attempts = 0, 0
    while len(out) < n and attempts < 50 * n + 50:
        attempts += 1
        group = int(rng.integers(1, 231))
        k = int(rng.integers(1, len(elements) + 1))
        chosen = sorted(rng.choice(len(elements), size=k, replace=False).tolist())
        counts = _random_counts(rng, k, max_sites)
        crystal = pyxtal()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                crystal.from_random(3, group, [elements[i] for i in chosen], counts, random_state=rng)
            if not crystal.valid:
                raise ValueError("pyxtal gave an invalid crystal")
            s = crystal.to_pymatgen()
        except Exception:  # pyxtal raises many kinds for impossible combinations
            failed += 1
            continue
        if len(s) > max_sites:
            failed += 1
            continue
        s.properties = {"name": f"random-{seed}-{len(out)}-{s.composition.reduced_formula}-sg{group}"}
        out.append(s)
    if failed:
        warnings.warn(f"random_crystals: skipped {failed} of {attempts} generations pyxtal could not make"
                      + (f"; made only {len(out)} of {n}" if len(out) < n else ""), stacklevel=2)
    return out


def _random_counts(rng: np.random.Generator, k: int, max_sites: int) -> list[int]:
    total = int(rng.integers(k, max(k, max_sites) + 1))
    cuts = np.sort(rng.choice(np.arange(1, total), size=k - 1, replace=False)) if k > 1 else np.array([], int)
    return np.diff(np.concatenate([[0], cuts, [total]])).astype(int).tolist()
