"""Fuzzing the crystals plugin's readers of users' files with :func:`polydiff.fuzz.fuzz_reader`:
CIF (one or several data blocks), POSCAR, multi-frame extended XYZ, CSV tables of CIF strings
with property columns, pymatgen JSON, and the modality's read of a samples folder
(``polydiff evaluate DIR --modality crystals``). Random, truncated and mutated inputs must end in
a :class:`~polydiff_crystals.crystal_io.CrystalFileError` (or another ValueError / OSError)
naming the file, or in structures that are crystals (sites, elements only, and for a POSCAR the
elements it names; a finite cell of positive volume, finite coordinates, a name, float
properties), as many as the file holds (fewer only with a warning naming the file).

The valid inputs are built here with pymatgen (rock salt and a cubic perovskite); the mutations
are seeded, so runs repeat. ``POLYDIFF_FUZZ_EXAMPLES`` overrides the example counts (longer runs).
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure
from pymatgen.core.periodic_table import DummySpecies
from pymatgen.io.cif import CifWriter
from pymatgen.io.vasp import Poscar

from polydiff.fuzz import DEFAULT_EXPECTED, fuzz_reader
from polydiff_crystals.crystal_io import CrystalFileError, read_cif_csv, read_structures
from polydiff_crystals.modality import CrystalsModality, Undecodable

pytestmark = pytest.mark.usefixtures("one_thread")

EXPECTED = (CrystalFileError, *DEFAULT_EXPECTED)
CIF_TOKENS = (b"data_", b"loop_", b"_cell_length_a", b"_cell_angle_gamma", b"_atom_site_fract_x", b"?", b".",
              b"\n;\n", b"90.0", b"0.0", b"-5.64", b"_chemical_formula_sum", b"Xx", b"(3)")
XYZ_TOKENS = (b"Lattice=", b'Lattice="0 0 0 0 0 0 0 0 0"', b"Properties=species:S:1:pos:R:3", b"name=", b"name=7 ",
              b"energy=", b"pbc=", b'"', b"=", b"Xx", b"X ", b"0\n", b"\n\n", b"VEC1 1 0 0\n")
POSCAR_TOKENS = (b"Direct", b"Cartesian", b"Selective dynamics\n", b"0.0", b"-1.0", b"Xx", b"T T F", b"  0  0  0\n",
                 b"0.0\n")


# -- valid inputs -----------------------------------------------------------------------------------

def rocksalt() -> Structure:
    s = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    s.properties = {"name": "NaCl"}
    return s


def perovskite() -> Structure:
    s = Structure(Lattice.cubic(3.905), ["Sr", "Ti", "O", "O", "O"],
                  [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    s.properties = {"name": "SrTiO3"}
    return s


def cif_bytes(*structures: Structure) -> bytes:
    return "".join(str(CifWriter(s)) for s in structures).encode()


def poscar_bytes(structure: Structure) -> bytes:
    """A VASP 5 POSCAR (a line of element symbols, none after the coordinates: without that line
    the elements cannot be told)."""
    lines = Poscar(structure, comment=structure.properties["name"]).get_str().splitlines()
    head = 8  # comment, scale, 3 lattice vectors, symbols, counts, Direct
    return "\n".join([*lines[:head], *(" ".join(line.split()[:3]) for line in lines[head:])]).encode() + b"\n"


def extxyz_bytes(*structures: Structure) -> bytes:
    import ase
    import ase.io

    frames = []
    for k, s in enumerate(structures):
        atoms = ase.Atoms([site.specie.symbol for site in s], positions=s.cart_coords, cell=s.lattice.matrix,
                          pbc=True)
        atoms.info.update({"name": s.properties["name"], "energy": -3.5 + k})
        frames.append(atoms)
    buf = io.StringIO()
    ase.io.write(buf, frames, format="extxyz")
    return buf.getvalue().encode()


def csv_bytes(*structures: Structure) -> bytes:
    buf = io.StringIO()
    table = csv.writer(buf, lineterminator="\n")
    table.writerow(["material_id", "formation_energy", "band_gap", "formula", "cif"])
    for k, s in enumerate(structures):
        table.writerow([f"mp-{k + 1}", -1.5 + k, 0.25 * k, s.composition.reduced_formula, str(CifWriter(s))])
    return buf.getvalue().encode()


# -- records: how many structures the bytes hold (None: the reader must refuse them) ---------------

def _text(data: bytes) -> str | None:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None


def _csv_rows(data: bytes, reader: Any = csv.reader) -> list[Any] | None:
    """The rows of a CSV table (``reader``: ``csv.reader`` or ``csv.DictReader``); None when
    the bytes are not UTF-8 or not CSV (the reader must refuse them)."""
    text = _text(data)
    if text is None:
        return None
    try:
        return list(reader(io.StringIO(text, newline="")))
    except csv.Error:
        return None


def cif_records(name: str, data: bytes) -> int | None:
    """The data blocks: lines starting with ``data_`` outside ``;`` text fields (CIF 1.1)."""
    text = _text(data)
    if text is None:
        return None
    n, in_field = 0, False
    for line in text.splitlines():
        if line.startswith(";"):
            in_field = not in_field
        elif not in_field and line.lstrip().lower().startswith("data_"):
            n += 1
    return n


def xyz_records(name: str, data: bytes) -> int | None:
    """The frames: an atom-count line, a comment line and that many atom lines each (blank lines
    between frames allowed); None when the count lines do not add up (the reader must refuse)."""
    text = _text(data)
    if text is None:
        return None
    lines = text.split("\n")  # as ASE reads them ("\r\n" too: its "\r" is stripped)
    i = frames = 0
    while i < len(lines):
        if not lines[i].strip():
            i += 1
            continue
        try:
            n = int(lines[i])
        except ValueError:
            return None
        if n < 0 or i + 1 + n >= len(lines):
            return None
        i, frames = i + 2 + n, frames + 1
    return frames


def csv_cif_records(name: str, data: bytes) -> int | None:
    """The non-empty data rows of the table (a CIF cell spans lines inside its quotes)."""
    rows = _csv_rows(data)
    return None if rows is None else sum(1 for row in rows[1:] if row)


def json_records(name: str, data: bytes) -> int | None:
    text = _text(data)
    try:
        value = json.loads(text) if text is not None else None
    except ValueError:
        return None
    return len(value) if isinstance(value, list) else 1


# -- consistency of what was read ------------------------------------------------------------------

def check_crystals(objects: list[Any]) -> None:
    """Every object is a crystal (or a samples folder's Undecodable row) a caller can use."""
    assert isinstance(objects, list), type(objects)
    for k, s in enumerate(objects):
        if isinstance(s, Undecodable):
            assert isinstance(s.name, str) and isinstance(s.reason, str), f"object {k}: {s!r}"
            continue
        assert isinstance(s, Structure), f"object {k} is a {type(s).__name__}"
        assert len(s) > 0, f"structure {k} has no sites"
        dummies = [str(sp) for sp in s.composition if isinstance(sp, DummySpecies)]
        assert not dummies, f"structure {k}: species that are no elements: {dummies}"
        name = s.properties.get("name")
        assert isinstance(name, str) and name, f"structure {k}: name {name!r}"
        props = {key: v for key, v in s.properties.items() if key != "name"}
        assert all(isinstance(v, float) for v in props.values()), f"structure {k}: properties {props}"
        matrix, volume = s.lattice.matrix, s.lattice.volume
        assert np.isfinite(matrix).all() and math.isfinite(volume) and volume > 0, \
            f"structure {k} ({name}): a degenerate cell {matrix.tolist()} (volume {volume})"
        assert np.isfinite(s.frac_coords).all() and np.isfinite(s.cart_coords).all(), \
            f"structure {k} ({name}): coordinates not finite"


# -- one test per reader ---------------------------------------------------------------------------

@pytest.mark.parametrize("blocks", [1, 2])
def test_fuzz_cif(tmp_path, blocks):
    structures = [rocksalt(), perovskite()][:blocks]
    report = fuzz_reader(read_structures, {"crystals.cif": cif_bytes(*structures)}, tmp_path, examples=100,
                         expected=EXPECTED, records=cif_records, check=check_crystals, tokens=CIF_TOKENS,
                         name=f"read_structures(cif, {blocks} block(s))")
    print(report)


class _WithText(list):
    """Structures read, with the text of their file (to check the elements against it)."""

    text = ""


def _read_poscar(path: Path) -> _WithText:
    out = _WithText(read_structures(path))
    out.text = path.read_text(errors="replace")
    return out


def _check_poscar(structures: _WithText) -> None:
    """Crystals whose elements the file names (pymatgen invents H, He, Li... where it cannot tell)."""
    check_crystals(structures)
    named = set(re.findall(r"[A-Z][a-z]?", structures.text))
    for s in structures:
        invented = sorted({el.symbol for el in s.composition.elements} - named)
        assert not invented, f"elements {invented} that the file does not name"


def test_fuzz_poscar(tmp_path):
    report = fuzz_reader(_read_poscar, {"POSCAR": poscar_bytes(perovskite())}, tmp_path, examples=200,
                         expected=EXPECTED, records=lambda name, data: 1, check=_check_poscar,
                         tokens=POSCAR_TOKENS, name="read_structures(POSCAR)")
    print(report)


def test_fuzz_extxyz(tmp_path):
    report = fuzz_reader(read_structures, {"frames.extxyz": extxyz_bytes(rocksalt(), perovskite())}, tmp_path,
                         examples=200, expected=EXPECTED, records=xyz_records, check=check_crystals,
                         tokens=XYZ_TOKENS, name="read_structures(extxyz)")
    print(report)


def test_fuzz_cif_csv(tmp_path):
    report = fuzz_reader(lambda p: read_cif_csv(p)[0], {"table.csv": csv_bytes(rocksalt(), perovskite())}, tmp_path,
                         examples=100, expected=EXPECTED, records=csv_cif_records, check=check_crystals,
                         tokens=(*CIF_TOKENS, b'"', b'""', b"mp-1"), name="read_cif_csv")
    print(report)


def test_fuzz_json(tmp_path):
    valid = json.dumps([s.as_dict() for s in (rocksalt(), perovskite())]).encode()
    report = fuzz_reader(read_structures, {"crystals.json": valid}, tmp_path, examples=150, expected=EXPECTED,
                         records=json_records, check=check_crystals,
                         tokens=(b'"@class"', b'"Structure"', b'"lattice"', b'"sites"', b"null", b"[]", b"{}"),
                         name="read_structures(json)")
    print(report)


# -- the modality's read of a samples folder (polydiff evaluate DIR --modality crystals) -----------

def _samples_folder(tmp_path) -> dict[str, bytes]:
    """A samples folder as ``CrystalsModality.write`` leaves it (a CIF per crystal, summary.csv,
    undecodable.csv), plus a POSCAR and a two-frame extXYZ file of the user's."""
    out = tmp_path / "valid"
    CrystalsModality().write([rocksalt(), perovskite(), Undecodable("sample2", "lattice: the angles do not form a "
                                                                               "cell")], out)
    files = {p.name: p.read_bytes() for p in sorted(out.iterdir())}
    assert set(files) == {"NaCl.cif", "SrTiO3.cif", "summary.csv", "undecodable.csv"}, sorted(files)
    files["extra.vasp"] = poscar_bytes(perovskite())
    files["frames.extxyz"] = extxyz_bytes(perovskite(), rocksalt())
    return files


def _undecodable_records(data: bytes) -> int | None:
    rows = _csv_rows(data, csv.DictReader)
    if rows is None:
        return None
    if rows and not {"name", "reason"} <= set(rows[0]):
        return None
    return len(rows)


def _summary_records(data: bytes) -> int | None:
    text = _text(data)
    if text is None:
        return None
    try:  # the header alone decides
        header = next(csv.reader(io.StringIO(text, newline="")), [])
    except csv.Error:
        return None
    return None if "cif" in [h.strip() for h in header] else 0  # a table with a cif column holds structures


def _folder_records(valid: dict[str, bytes]) -> Any:
    def one(name: str, data: bytes) -> int | None:
        if name.endswith(".cif"):
            return cif_records(name, data)
        if name == "extra.vasp":
            return 1
        if name.endswith(".extxyz"):
            return xyz_records(name, data)
        if name == "undecodable.csv":
            return _undecodable_records(data)
        return _summary_records(data)

    def records(target: str, data: bytes) -> int | None:
        counts = [one(name, data if name == target else content) for name, content in valid.items()]
        return None if None in counts else sum(counts)

    return records


def test_fuzz_modality_read_folder(tmp_path):
    valid = _samples_folder(tmp_path)
    report = fuzz_reader(CrystalsModality().read, valid, tmp_path / "fuzz", folder=True, examples=100,
                         expected=EXPECTED, records=_folder_records(valid), check=check_crystals,
                         tokens=(*CIF_TOKENS, *XYZ_TOKENS, b"name,reason\n", b"cif"), name="crystals read(folder)")
    print(report)
