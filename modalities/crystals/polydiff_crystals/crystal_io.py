"""Crystal files: CIF, POSCAR/CONTCAR, extended XYZ, CSV tables of CIF strings, and pymatgen JSON.

The native object is a pymatgen :class:`~pymatgen.core.Structure`; its metadata lives in
``structure.properties``: ``"name"`` (always) and float properties where known
(``"formation_energy"`` eV/atom, ``"band_gap"`` eV, ``"energy_per_atom"`` ...).

Reading is forgiving where datasets are usually dirty and strict elsewhere: an unparsable CIF
(a file, a data block or a CSV row) is skipped with its reason, and the skips are counted and
reported with one warning per file; any other malformed input (a POSCAR, an extXYZ frame without
a cell, a non-numeric property cell) raises :class:`CrystalFileError` naming the file and the
line, frame, row or column. A parsed structure that is no crystal (no sites, an unknown element,
a cell that is not finite or has no volume, coordinates that are not finite) counts as malformed
too. Writing goes through :func:`polydiff.plugin.atomic_write`, so an existing file is replaced
only by a complete new one.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pymatgen.core import Lattice, Structure
from pymatgen.io.cif import CifWriter
from pymatgen.io.vasp import Poscar

from polydiff.plugin import atomic_write, natural_key, read_text, unique_stems

__all__ = [
    "STRUCTURE_SUFFIXES",
    "SUMMARY_COLUMNS",
    "CrystalFileError",
    "read_cif_csv",
    "read_structures",
    "structure_name",
    "write_structures",
]

STRUCTURE_SUFFIXES = (".cif", ".vasp", ".poscar", ".extxyz", ".xyz", ".csv", ".json")
SUMMARY_COLUMNS = ("name", "formula", "spacegroup_symbol", "spacegroup_number", "density", "volume", "n_sites",
                   "n_elements")
WRITE_FORMATS = {"cif": ".cif", "poscar": ".vasp", "extxyz": ".extxyz"}
_SHOWN_REASONS = 3  # skip reasons quoted in a warning


class CrystalFileError(ValueError):
    """A crystal file that cannot be read: the message starts with the file's path and names the
    line, data block, frame, row or column where known, and what is wrong."""


class _NoCifColumn(CrystalFileError):
    """A CSV file without a ``cif`` column (a folder scan skips such tables, e.g. a summary)."""


def structure_name(structure: Structure, default: str = "structure") -> str:
    """The ``"name"`` property of ``structure``, or ``default``."""
    name = (structure.properties or {}).get("name")
    return str(name) if name not in (None, "") else default


# ---------------------------------------------------------------------------------------------- reading


OWN_TABLES = ("summary.csv", "undecodable.csv")  # written beside the structures by write_structures / polydiff
SAMPLES_METADATA = "polydiff.json"  # a samples folder's metadata (`polydiff sample`): never a structure file


def read_structures(path: Path | str, *, properties: Sequence[str] | None = None) -> list[Structure]:
    """The structures of a file, or of every structure file of a folder (not recursive, sorted by
    name; hidden files ignored, other files skipped with a count).

    Formats by name: ``.cif`` (several data blocks give several structures), ``POSCAR*`` /
    ``CONTCAR*`` / ``*.vasp`` / ``*.poscar``, ``.extxyz`` / ``.xyz`` (ASE extended XYZ with a
    ``Lattice``; several frames allowed), ``.csv`` (a ``cif`` column, see :func:`read_cif_csv`),
    ``.json`` (pymatgen Structure dicts, one or a list). ``properties`` names the numeric
    properties to keep (CSV columns, extXYZ info keys, JSON properties); ``None`` keeps all.
    Names: the file stem, ``<stem>_<k>`` for the k-th (0-based) block or frame of a file holding
    several, the CSV ``material_id`` column, else ``row<k>``. Unparsable CIFs are skipped and
    reported (one warning per file); if nothing at all could be read, :class:`CrystalFileError`.
    """
    path = Path(path)
    if not path.exists():
        raise CrystalFileError(f"{path}: no such file or folder")
    if path.is_dir():
        return _read_folder(path, properties)
    if _format_of(path) is None:
        raise CrystalFileError(f"{path}: not a crystal file (expected .cif, POSCAR/CONTCAR, .vasp, .poscar, "
                               ".extxyz, .xyz, .csv or .json)")
    structures, reasons = _read_file(path, properties)
    if not structures:
        raise CrystalFileError(f"{path}: no structure could be read: {_listing(reasons)}")
    _report(path, reasons, len(structures))
    return structures


def read_cif_csv(path: Path | str, *, limit: int | None = None, columns: Mapping[str, str] | None = None
                 ) -> tuple[list[Structure], int]:
    """The structures of a CSV table with a ``cif`` column of CIF strings, and the number of rows
    skipped because their CIF could not be parsed (reported in one warning).

    ``limit`` reads only the first ``limit`` data rows (file order). ``columns`` maps a CSV column
    to a property name (e.g. ``{"heat_ref": "formation_energy"}``); a named column that is absent,
    or a cell that is not a number, is a :class:`CrystalFileError` naming the row and column
    (empty cells leave the property unset). Without ``columns`` every column except ``cif``,
    ``material_id`` and an unnamed index is kept under its own name when most of its cells are
    numbers (its other cells are then errors); columns of mostly text are ignored.
    Names come from ``material_id``, else ``row<k>`` (k the 0-based data row)."""
    path = Path(path)
    structures, reasons = _read_csv(path, limit=limit, columns=columns)
    _report(path, reasons, len(structures))
    return structures, len(reasons)


def _read_folder(folder: Path, properties: Sequence[str] | None) -> list[Structure]:
    files = sorted((p for p in folder.iterdir()
                    if p.is_file() and not p.name.startswith(".") and p.name != SAMPLES_METADATA),
                   key=natural_key)  # the written order: sample_9999 before sample_10000
    unrelated = [p.name for p in files if _format_of(p) is None and p.suffix.lower() != ".png"]  # plots: ours
    if unrelated:
        warnings.warn(f"{folder}: skipped {len(unrelated)} file(s) that are not crystal files: "
                      f"{_listing(unrelated)}", stacklevel=3)
    out: list[Structure] = []
    all_reasons: list[str] = []
    tables: list[str] = []
    failed: list[str] = []  # whole files that could not be read (POSCAR, extXYZ, JSON, not UTF-8...)
    for file in files:
        if _format_of(file) is None:
            continue
        try:
            structures, reasons = _read_file(file, properties)
        except _NoCifColumn:
            if file.name not in OWN_TABLES:  # polydiff's own tables beside the CIFs are expected
                tables.append(file.name)
            continue
        except CrystalFileError as err:
            if _format_of(file) == "csv":  # a table's bad property cell or header: the user must fix it
                raise
            failed.append(f"{file.name}{str(err)[len(str(file)):]}" if str(err).startswith(str(file))
                          else f"{file.name}: {err}")
            continue
        _report(file, reasons, len(structures), stacklevel=4)
        out.extend(structures)
        all_reasons.extend(f"{file.name}: {r}" for r in reasons)
    if tables:
        warnings.warn(f"{folder}: skipped {len(tables)} CSV file(s) without a 'cif' column (not structure "
                      f"tables): {_listing(tables)}", stacklevel=3)
    if failed and out:
        n_files = sum(_format_of(p) is not None for p in files)
        warnings.warn(f"{folder}: skipped {len(failed)} of {n_files} crystal file(s) that could not be read: "
                      f"{_listing(failed)}", stacklevel=3)
    all_reasons.extend(failed)
    if not out:
        detail = f": {_listing(all_reasons)}" if all_reasons else " (no crystal files found)"
        raise CrystalFileError(f"{folder}: no structure could be read{detail}")
    return out


def _format_of(path: Path) -> str | None:
    name, suffix = path.name.upper(), path.suffix.lower()
    if suffix == ".cif":
        return "cif"
    if name.startswith(("POSCAR", "CONTCAR")) or suffix in (".vasp", ".poscar"):
        return "poscar"
    if suffix in (".extxyz", ".xyz"):
        return "extxyz"
    if suffix == ".csv":
        return "csv"
    if suffix == ".json":
        return "json"
    return None


def _read_file(path: Path, properties: Sequence[str] | None) -> tuple[list[Structure], list[str]]:
    """(structures, skip reasons) of one file."""
    fmt = _format_of(path)
    if fmt == "cif":
        return _read_cif_file(path)
    if fmt == "csv":
        columns = None if properties is None else {p: p for p in properties}
        return _read_csv(path, limit=None, columns=columns)
    if fmt == "poscar":
        return [_read_poscar(path)], []
    if fmt == "extxyz":
        return _read_extxyz(path, properties), []
    return _read_json(path, properties), []


def _report(path: Path, reasons: list[str], n_read: int, stacklevel: int = 3) -> None:
    if reasons:
        warnings.warn(f"{path}: skipped {len(reasons)} of {len(reasons) + n_read} structures that could not be "
                      f"read: {_listing(reasons)}", stacklevel=stacklevel)


def _listing(items: Sequence[str]) -> str:
    shown = "; ".join(items[:_SHOWN_REASONS])
    return shown + (f"; ... ({len(items) - _SHOWN_REASONS} more)" if len(items) > _SHOWN_REASONS else "")


def _named(structure: Structure, name: str, props: Mapping[str, Any] | None = None) -> Structure:
    structure.properties = {"name": name, **(props or {})}
    return structure


# CIF ----------------------------------------------------------------------------------------------------


def parse_cif(text: str, first_line: int = 1) -> Structure:
    """One ordered structure from CIF text (its first data block), as pymatgen's
    ``Structure.from_str(text, fmt="cif")`` builds it. A ValueError gives the reason: a cell
    field or loop rows missing (lines counted from ``first_line``, the text's first line in its
    file), else pymatgen's message and the warnings it raised while failing; or, when the CIF
    states ``_chemical_formula_sum``, a composition that disagrees with it (rows lost)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            structure = Structure.from_str(text, fmt="cif")
        except Exception as err:  # any parser failure is a reason to skip this CIF
            found = _cif_problem(text, first_line)
            if found:
                raise ValueError(found) from None
            said = list(dict.fromkeys(" ".join(str(w.message).split()) for w in caught))
            said = [m for m in said if not m.startswith("Issues encountered")] or said  # that one repeats the rest
            detail = f" ({'; '.join(said)})" if said else ""
            reason = f"{type(err).__name__}: {err}{detail}"
            raise ValueError(reason if len(reason) <= 300 else reason[:297] + "...") from None
    problem = _structure_problem(structure)
    if problem:
        raise ValueError(problem)
    if not structure.is_ordered:
        raise ValueError("partial occupancies (disordered sites) are not supported")
    mismatch = _formula_mismatch(text, structure)
    if mismatch:
        raise ValueError(mismatch)
    return structure


def _structure_problem(structure: Structure) -> str | None:
    """Why a parsed ``structure`` is no usable crystal, or None: no sites, a species that is no
    element (pymatgen's dummy species for an unknown symbol such as ``Xx``), a cell that is not
    finite or has no volume (dependent lattice vectors, a zero scale), coordinates not finite."""
    from pymatgen.core.periodic_table import DummySpecies

    if len(structure) == 0:
        return "no atom sites"
    dummies = sorted({sp.symbol for site in structure for sp in site.species if isinstance(sp, DummySpecies)})
    if dummies:
        return f"unknown element(s) {', '.join(map(repr, dummies))}"
    problem = _cell_problem(structure.lattice.matrix)
    if problem:
        return problem
    if not (np.isfinite(structure.frac_coords).all() and np.isfinite(structure.cart_coords).all()):
        return "atom coordinates that are not finite (NaN or infinite)"
    return None


def _cell_problem(matrix: Any) -> str | None:
    """Why a 3x3 lattice ``matrix`` (rows the cell vectors) is no crystal cell, or None: entries
    that are not finite, or no volume (linearly dependent vectors)."""
    matrix = np.asarray(matrix, dtype=float)
    if not np.isfinite(matrix).all():
        return f"the cell is not finite (lattice vectors {matrix.tolist()})"
    volume = abs(float(np.linalg.det(matrix)))
    if not (math.isfinite(volume) and volume > 0):
        return f"the cell has no volume (dependent lattice vectors {matrix.tolist()})"
    return None


_CELL_FIELDS = ("_cell_length_a", "_cell_length_b", "_cell_length_c", "_cell_angle_alpha", "_cell_angle_beta",
                "_cell_angle_gamma")
_TOKEN = re.compile(r"'[^']*'|\"[^\"]*\"|\S+")


def _cif_problem(text: str, first_line: int = 1) -> str | None:
    """Why a CIF that pymatgen could not parse is broken, where it can be told: a missing cell
    field, or a loop whose values do not fill its last row (a file cut off), with its line."""
    lines = text.splitlines()
    tags = {line.split()[0].lower() for line in lines if line.strip().startswith("_")}
    missing = [f for f in _CELL_FIELDS if f not in tags]
    if missing:
        return f"no {', '.join(missing)} field (a crystal cell needs {', '.join(_CELL_FIELDS)})"
    i = 0
    while i < len(lines):
        if lines[i].strip().lower() != "loop_":
            i += 1
            continue
        start, columns, j = i, [], i + 1
        while j < len(lines) and lines[j].strip().startswith("_"):
            columns.append(lines[j].split()[0])
            j += 1
        values, last = 0, None
        while j < len(lines):
            line = lines[j].strip()
            if line.startswith("_") or line.lower().startswith(("loop_", "data_")):
                break
            if line.startswith(";"):  # a text field runs to the next line starting with ';'
                j += 1
                while j < len(lines) and not lines[j].startswith(";"):
                    j += 1
                values, last = values + 1, j
            elif line and not line.startswith("#"):
                tokens = _TOKEN.findall(line)
                cut = next((k for k, t in enumerate(tokens) if t.startswith("#")), len(tokens))
                values, last = values + cut, j
            j += 1
        if columns and values % len(columns):
            return (f"the loop at line {start + first_line} ({columns[0]} ...) has {len(columns)} columns but "
                    f"{values} values: its last row (line {(last or start) + first_line}) is incomplete (the file "
                    "is cut off?)")
        if columns and not values:
            return f"the loop at line {start + first_line} ({columns[0]} ...) has no rows (the file is cut off?)"
        i = j
    return None


def _formula_mismatch(text: str, structure: Structure) -> str | None:
    """When the CIF states ``_chemical_formula_sum``, why the parsed structure's composition
    disagrees with it (elements missing or extra, other ratios), else None (as pymatgen's
    ``CifParser.check``, 1 % tolerance on the ratios; an unreadable formula is not checked)."""
    from pymatgen.core import Composition

    lines = text.splitlines()
    for i, line in enumerate(lines):
        parts = line.strip().split(None, 1)
        if parts and parts[0].lower() == "_chemical_formula_sum":
            value = parts[1] if len(parts) > 1 else (lines[i + 1] if i + 1 < len(lines) else "")
            break
    else:
        return None
    value = value.strip().strip(";").strip().strip("'\"").strip()
    try:
        stated = Composition(value).remove_charges()
        got = structure.composition.remove_charges()
    except Exception:  # not a formula pymatgen reads: nothing to check against
        return None
    if not value or not stated.num_atoms:
        return None
    a = {str(e): float(n) for e, n in stated.items()}
    b = {str(e): float(n) for e, n in got.items()}
    if a.keys() != b.keys():
        lost, extra = sorted(a.keys() - b.keys()), sorted(b.keys() - a.keys())
        what = "; ".join(x for x in (f"missing {', '.join(lost)}" if lost else "",
                                     f"extra {', '.join(extra)}" if extra else "") if x)
        return (f"the atom sites give {got.formula} but _chemical_formula_sum is {value!r} ({what}: rows lost, "
                "the file cut off?)")
    ratios = [b[e] / a[e] for e in a]
    if max(ratios) > min(ratios) * 1.01:
        return (f"the atom sites give {got.formula} but _chemical_formula_sum is {value!r} (other ratios: rows "
                "lost, the file cut off?)")
    return None


def cif_blocks(text: str) -> list[tuple[int, str]]:
    """The data blocks of CIF text as (1-based line of ``data_``, block text); text before the
    first block (comments) goes with it, and a ``data_`` inside a ``;`` text field is not a block."""
    lines = text.splitlines(keepends=True)
    starts, in_field = [], False
    for i, line in enumerate(lines):
        if line.startswith(";"):
            in_field = not in_field
        elif not in_field and line.lstrip().lower().startswith("data_"):
            starts.append(i)
    if not starts:
        return []
    bounds = [0, *starts[1:], len(lines)]
    return [(starts[k] + 1, "".join(lines[bounds[k]:bounds[k + 1]])) for k in range(len(starts))]


def _read_cif_file(path: Path) -> tuple[list[Structure], list[str]]:
    blocks = cif_blocks(read_text(path, CrystalFileError))
    if not blocks:
        return [], ["no 'data_' block (not a CIF file?)"]
    out, reasons = [], []
    for k, (line, block) in enumerate(blocks):
        try:
            structure = parse_cif(block, 1 if k == 0 else line)  # the first block holds the text before it
        except ValueError as err:
            reasons.append(f"data block {k} (line {line}): {err}")
            continue
        out.append(_named(structure, path.stem if len(blocks) == 1 else f"{path.stem}_{k}"))
    return out, reasons


# CSV ----------------------------------------------------------------------------------------------------

_SKIP_AUTO = {"", "cif", "material_id"}


def _read_csv(path: Path, *, limit: int | None, columns: Mapping[str, str] | None
              ) -> tuple[list[Structure], list[str]]:
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    reader = csv.reader(io.StringIO(read_text(path, CrystalFileError), newline=""))
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise CrystalFileError(f"{path}: empty CSV file (expected a header with a 'cif' column)") from None
    if "cif" not in header:
        raise _NoCifColumn(f"{path}: no 'cif' column (columns found: {', '.join(map(repr, header))})")
    if columns is not None:
        missing = [c for c in columns if c not in header]
        if missing:
            raise CrystalFileError(f"{path}: no column {', '.join(map(repr, missing))} (columns found: "
                                   f"{', '.join(map(repr, header))})")
    rows: list[tuple[int, int, list[str]]] = []  # (data row, line, cells)
    try:
        end = reader.line_num
        for cells in reader:
            if limit is not None and len(rows) >= limit:
                break
            line, end = end + 1, reader.line_num  # a record starts on the line after the previous one ends
            if cells:
                rows.append((len(rows), line, cells))
    except csv.Error as err:
        raise CrystalFileError(f"{path}:{reader.line_num}: not a readable CSV row ({err})") from None
    if columns is None:
        columns = {c: c for c in header if c not in _SKIP_AUTO and _numeric_column(header.index(c), rows)}
    where = {c: header.index(c) for c in columns}
    i_cif, i_id = header.index("cif"), header.index("material_id") if "material_id" in header else None
    out, reasons = [], []
    for k, line, cells in rows:
        if len(cells) != len(header):
            reasons.append(f"row {k} (line {line}): {len(cells)} cells, the header has {len(header)}")
            continue
        props = {}
        for column, prop in columns.items():
            cell = cells[where[column]].strip()
            if cell:
                try:
                    props[prop] = float(cell)
                except ValueError:
                    raise CrystalFileError(f"{path}: row {k} (line {line}), column {column!r}: not a number: "
                                           f"{cell[:40]!r}") from None
                if not math.isfinite(props[prop]):  # an empty cell is the way to say "unknown"
                    raise CrystalFileError(f"{path}: row {k} (line {line}), column {column!r}: not a finite number: "
                                           f"{cell[:40]!r} (leave the cell empty for an unknown value)")
        try:
            structure = parse_cif(cells[i_cif])
        except ValueError as err:
            reasons.append(f"row {k} (line {line}): {err}")
            continue
        name = cells[i_id].strip() if i_id is not None else ""
        out.append(_named(structure, name or f"row{k}", props))
    return out, reasons


def _numeric_column(i: int, rows: list[tuple[int, int, list[str]]]) -> bool:
    """Whether most non-empty cells of column ``i`` are numbers (a property column, whose other
    cells are then errors), rather than text (a formula, a note: ignored)."""
    numbers = texts = 0
    for _, _, cells in rows:
        cell = cells[i].strip() if i < len(cells) else ""
        if cell:
            try:
                float(cell)
                numbers += 1
            except ValueError:
                texts += 1
    return numbers > texts


# POSCAR, extXYZ, JSON -------------------------------------------------------------------------------------


def _read_poscar(path: Path) -> Structure:
    """The structure of a POSCAR; a malformed file, one without element symbols (VASP 4:
    pymatgen would invent H, He, Li...) or a structure that is no crystal is a CrystalFileError."""
    text = read_text(path, CrystalFileError)
    overrun = _poscar_overrun(text)  # before pymatgen: it builds a list of that many symbols first
    if overrun:
        raise CrystalFileError(f"{path}:{overrun}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            structure = Poscar.from_str(text).structure
        except Exception as err:  # pymatgen raises many kinds for a bad POSCAR
            where = _poscar_problem(text.splitlines())
            if where:
                raise CrystalFileError(f"{path}:{where}") from None
            raise CrystalFileError(f"{path}: not a readable POSCAR ({type(err).__name__}: {err})") from None
    if any(str(w.message).startswith("Elements in POSCAR cannot be determined") for w in caught):
        raise CrystalFileError(f"{path}: no element symbols (a VASP 4 POSCAR: add a line of symbols above the "
                               "atom counts)")
    problem = _structure_problem(structure)
    if problem:
        raise CrystalFileError(f"{path}: {problem}")
    return _named(structure, path.stem if path.suffix.lower() in (".vasp", ".poscar") else path.name)


def _poscar_overrun(text: str) -> str | None:
    """``"LINE: why"`` when the atom counts (the first line of whole numbers from line 6 on, where
    pymatgen looks for them) announce more atoms than the file has lines, else None."""
    lines = text.splitlines()
    for k in range(5, min(len(lines), 16)):
        try:
            total = sum(int(x) for x in lines[k].split("#")[0].split())
        except ValueError:
            continue
        if total > len(lines):
            return f"{k + 1}: {total} atoms announced but the file has {len(lines)} lines (cut off?)"
        return None
    return None


def _read_extxyz(path: Path, properties: Sequence[str] | None) -> list[Structure]:
    import ase.io

    text = read_text(path, CrystalFileError)
    layout = _xyz_layout(text.split("\n"))  # before ASE: a huge atom count would keep it reading for ever
    if layout:
        raise CrystalFileError(f"{path}: {layout}")
    try:
        frames = ase.io.read(io.StringIO(text), index=":", format="extxyz")
    except Exception as err:  # ASE raises many kinds for a bad file
        where = _xyz_problem(text.splitlines())
        if where:
            raise CrystalFileError(f"{path}: {where}") from None
        raise CrystalFileError(f"{path}: not a readable extended XYZ file ({type(err).__name__}: {err})") from None
    if not frames:
        raise CrystalFileError(f"{path}: no frames")
    out = []
    for k, atoms in enumerate(frames):
        if atoms.cell.rank < 3:
            raise CrystalFileError(f"{path}: frame {k}: no 3-D cell (a crystal needs Lattice=\"ax ay az bx by bz "
                                   "cx cy cz\" in the frame's comment line)")
        props = {key: float(v) for key, v in atoms.info.items() if key != "name" and _is_number(v)}
        if atoms.calc is not None:
            props.update({key: float(v) for key, v in atoms.calc.results.items() if key != "name" and _is_number(v)})
        if properties is not None:
            props = {key: v for key, v in props.items() if key in properties}
        name = atoms.info.get("name")
        if not isinstance(name, str) or not name:
            name = path.stem if len(frames) == 1 else f"{path.stem}_{k}"
        problem = _cell_problem(atoms.cell.array)  # before Structure: a singular cell fails in its inversion
        if problem:
            raise CrystalFileError(f"{path}: frame {k}: {problem}")
        structure = Structure(Lattice(atoms.cell.array), atoms.get_chemical_symbols(), atoms.positions,
                              coords_are_cartesian=True)
        problem = _structure_problem(structure)
        if problem:
            raise CrystalFileError(f"{path}: frame {k}: {problem}")
        out.append(_named(structure, name, props))
    return out


def _numbers(lines: list[str], k: int, n: int, what: str) -> str | None:
    """Why line ``k`` (0-based) does not start with ``n`` numbers (``"LINE: why"``), or None."""
    if k >= len(lines):
        return f"{len(lines)}: the file ends before the {what} (line {k + 1}; cut off?)"
    parts = lines[k].split()
    try:
        if len(parts) < n:
            raise ValueError
        [float(x) for x in parts[:n]]
    except ValueError:
        return f"{k + 1}: expected {n} number(s) ({what}), got {lines[k].strip()[:40]!r}"
    return None


def _poscar_problem(lines: list[str]) -> str | None:
    """``"LINE: why"`` for the first malformed line of a POSCAR's header and coordinates, None
    if none is found (the reason is then pymatgen's)."""
    found = _numbers(lines, 1, 1, "the scale factor") or next(
        (w for k in (2, 3, 4) if (w := _numbers(lines, k, 3, "a lattice vector"))), None)
    if found:
        return found
    k = 5
    if k < len(lines) and lines[k].split() and not lines[k].split()[0].lstrip("+-").isdigit():
        k += 1  # VASP 5: a line of element symbols before the counts
    if k >= len(lines):
        return f"{len(lines)}: the file ends before the atom counts (line {k + 1}; cut off?)"
    try:
        total = sum(int(x) for x in lines[k].split())
    except ValueError:
        return f"{k + 1}: expected the atom counts (integers), got {lines[k].strip()[:40]!r}"
    k += 1
    if k < len(lines) and lines[k].strip()[:1] in ("S", "s"):
        k += 1  # selective dynamics
    k += 1  # Direct / Cartesian
    for i in range(k, k + total):
        if found := _numbers(lines, i, 3, f"the coordinates of atom {i - k + 1}"):
            return found
    return None


def _xyz_problem(lines: list[str]) -> str | None:
    """``"frame K (line L): why"`` for the first frame of an (extended) XYZ text whose atom
    count, atom lines or length is wrong, None if none is found (the reason is then ASE's)."""
    i, k = 0, 0
    while i < len(lines):
        if not lines[i].strip():
            i += 1
            continue
        try:
            n = int(lines[i])  # the count line holds the count alone
        except ValueError:
            return f"frame {k} (line {i + 1}): expected the atom count, got {lines[i].strip()[:40]!r}"
        if i + 1 + n >= len(lines):
            return (f"frame {k} (line {i + 1}): {n} atoms announced but the file ends after line {len(lines)} "
                    "(cut off?)")
        for j in range(i + 2, i + 2 + n):
            parts = lines[j].split()
            try:
                if len(parts) < 4:
                    raise ValueError
                [float(x) for x in parts[1:4]]
            except ValueError:
                return f"frame {k} (line {j + 1}): expected an element and 3 coordinates, got {lines[j].strip()[:40]!r}"
        i, k = i + 2 + n, k + 1
    return None


def _xyz_layout(lines: list[str]) -> str | None:
    """Why the frames of an extended XYZ text (``lines`` split on ``\\n``, as ASE reads them) do not
    add up, walking them as ASE does, or None: an atom count that is negative or runs past the end
    of the file, or text after the blank line at which ASE stops (it would drop the frames there).
    A count line that is not a number is left to ASE (and :func:`_xyz_problem`) to explain."""
    i = k = 0
    end = len(lines) - (lines[-1] == "")  # the last line ends with the text's final newline
    while i < len(lines) and lines[i].strip():
        try:
            n = int(lines[i])
        except ValueError:
            return None
        if n < 0:
            return f"frame {k} (line {i + 1}): a negative atom count ({n})"
        if i + 1 + n >= end:
            return f"frame {k} (line {i + 1}): {n} atoms announced but the file ends after line {end} (cut off?)"
        i, k = i + 2 + n, k + 1
        while i < len(lines) and lines[i].lstrip().startswith("VEC"):
            i += 1
    rest = next((j for j in range(i, len(lines)) if lines[j].strip()), None)
    if rest is None:
        return None
    where = f"after frame {k - 1}" if k else "before the first frame"
    return f"line {rest + 1}: text after the blank line {i + 1}, where ASE ends the file {where} (remove blank lines)"


def _is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    try:
        return isinstance(value, int | float) or (hasattr(value, "shape") and value.shape == () and
                                                  math.isfinite(float(value)))
    except (TypeError, ValueError):
        return False


def _read_json(path: Path, properties: Sequence[str] | None) -> list[Structure]:
    try:
        data = json.loads(read_text(path, CrystalFileError))
    except json.JSONDecodeError as err:
        raise CrystalFileError(f"{path}:{err.lineno}: not JSON ({err.msg})") from None
    items = data if isinstance(data, list) else [data]
    out = []
    for k, item in enumerate(items):
        try:
            structure = Structure.from_dict(item)
        except Exception as err:  # from_dict raises many kinds for a wrong dict
            raise CrystalFileError(f"{path}: record {k}: not a pymatgen Structure dict "
                                   f"({type(err).__name__}: {err})") from None
        problem = _structure_problem(structure)
        if problem:
            raise CrystalFileError(f"{path}: record {k}: {problem}")
        props = dict(structure.properties or {})
        name = props.pop("name", None) or (path.stem if len(items) == 1 else f"{path.stem}_{k}")
        props = {key: float(v) for key, v in props.items() if _is_number(v) and
                 (properties is None or key in properties)}
        out.append(_named(structure, str(name), props))
    return out


# ---------------------------------------------------------------------------------------------- writing


def write_structures(structures: Sequence[Structure], out_dir: Path, *,
                     flags: Mapping[str, Sequence[Any]] | None = None, fmt: str = "cif") -> list[Path]:
    """Write each structure to ``out_dir/<name>.<ext>`` (``fmt`` ``"cif"`` via pymatgen's
    CifWriter, ``"poscar"`` as ``.vasp``, ``"extxyz"``) and a ``summary.csv`` (columns
    :data:`SUMMARY_COLUMNS`, then one per entry of ``flags``), each file atomically. Names are
    the ``"name"`` properties made filesystem-safe and unique (``-2``, ``-3`` ... suffixes); the
    summary's ``name`` column holds them. The space group comes from spglib (symprec 0.1) and is
    left empty where that fails. Returns the paths, the summary last."""
    if fmt not in WRITE_FORMATS:
        raise ValueError(f"unknown crystal file format {fmt!r} (choose one of {', '.join(WRITE_FORMATS)})")
    flags = dict(flags or {})
    for key, values in flags.items():
        if len(values) != len(structures):
            raise ValueError(f"flag {key!r} has {len(values)} values for {len(structures)} structures")
        if key in SUMMARY_COLUMNS:
            raise ValueError(f"flag {key!r} clashes with a summary column ({', '.join(SUMMARY_COLUMNS)})")
    out_dir = Path(out_dir)
    names = unique_stems([structure_name(s, f"structure{i}") for i, s in enumerate(structures)], "structure{i}")
    paths = []
    for structure, name in zip(structures, names, strict=True):
        path = out_dir / f"{name}{WRITE_FORMATS[fmt]}"
        atomic_write(path, _writer(structure, name, fmt))
        paths.append(path)
    table = io.StringIO()
    writer = csv.writer(table, lineterminator="\n")
    writer.writerow([*SUMMARY_COLUMNS, *flags])
    for i, (structure, name) in enumerate(zip(structures, names, strict=True)):
        writer.writerow([name, *summary_row(structure), *(flags[k][i] for k in flags)])
    paths.append(atomic_write(out_dir / "summary.csv", table.getvalue()))
    return paths


def summary_row(structure: Structure) -> list[Any]:
    """formula, spacegroup_symbol, spacegroup_number, density, volume, n_sites, n_elements."""
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # spglib's notice about its error handling
            analyzer = SpacegroupAnalyzer(structure, symprec=0.1)
            symbol, number = analyzer.get_space_group_symbol(), analyzer.get_space_group_number()
    except Exception:  # spglib fails on degenerate cells: leave the cells empty
        symbol, number = "", ""
    return [structure.composition.reduced_formula, symbol, number, float(structure.density),
            float(structure.volume), len(structure), len(structure.composition.elements)]


def _writer(structure: Structure, name: str, fmt: str) -> Callable[[Path], None]:
    """A function writing ``structure`` to a given (temporary) path in ``fmt``."""
    if fmt == "cif":
        return lambda tmp: CifWriter(structure).write_file(tmp)
    if fmt == "poscar":
        return lambda tmp: Poscar(structure, comment=name).write_file(tmp, significant_figures=16)

    def write_extxyz(tmp: Path) -> None:
        import ase
        import ase.io

        atoms = ase.Atoms([site.specie.symbol for site in structure], positions=structure.cart_coords,
                          cell=structure.lattice.matrix, pbc=True)
        atoms.info.update({k: v for k, v in (structure.properties or {}).items() if _is_number(v)})
        atoms.info["name"] = name
        ase.io.write(tmp, atoms, format="extxyz")

    return write_extxyz
