"""Reading and writing users' molecule files: XYZ / extended XYZ, SDF (MOL), SMILES, folders.

Readers return :class:`~polydiff_molecules.molecule.Molecule` objects (or ``(smiles, name)``
pairs for SMILES files). Everything wrong with a file ends in a :class:`MoleculeFileError` (a
``ValueError``, so one of the command line's ``USER_ERRORS``) whose message starts with the
file's path and names the line or record (1-based); records that can be skipped (an SDF record
RDKit cannot parse, an invalid SMILES) are skipped and counted in **one** warning naming the
file and the records. Writers go through :func:`polydiff.plugin.atomic_write` (a temporary file,
then a rename), and writing what was read writes the same bytes again.

Formats:

- **XYZ** (:func:`read_xyz`, :func:`write_xyz`): frames of ``count`` / ``comment`` / ``El x y z``
  lines. The comment of a plain XYZ file is the molecule's name. A comment holding
  ``key=value`` pairs is read as **extended XYZ** (as ASE writes it): ``Properties=`` (e.g.
  ``species:S:1:pos:R:3:mulliken_charge:R:1``) names the per-atom columns (``species`` or
  ``Z``, ``pos``, and ``charges`` / ``formal_charges`` as integer formal charges; other columns
  are ignored); numeric values become ``properties`` floats; the name is ``name=`` or else a
  first bare token (``"pub000 source=... frame=100"`` reads as ``pub000``). Values may be
  double-quoted (``pbc="F F F"``, backslash escapes). XYZ holds no bonds: molecules read back
  have ``bonds=None``.
- **SDF / MOL** (:func:`read_sdf`, :func:`write_sdf`): V2000 or V3000 through RDKit, unsanitised
  so that invalid chemistry survives; bonds (kekulised), formal charges, the title line as the
  name and SD data fields that parse as numbers as properties. Coordinates have 4 decimals.
- **SMILES** (:func:`read_smiles`, :func:`write_smiles`): one ``SMILES [name]`` per line
  (whitespace separated; the name is the rest of the line), ``#`` comments, an optional header
  line starting with ``smiles``.
- :func:`read_molecules` reads any of these (SMILES embedded in 3-D by
  :func:`polydiff_molecules.data.conformers`) or a folder of them; :func:`write_molecules`
  writes one file per molecule.
"""

from __future__ import annotations

import contextlib
import math
import re
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from polydiff.plugin import atomic_write, natural_key, read_text, unique_stems

from .molecule import ATOMIC_NUMBER, PERIODIC, Molecule

__all__ = [
    "MOLECULE_SUFFIXES",
    "SDF_SUFFIXES",
    "SMILES_SUFFIXES",
    "XYZ_SUFFIXES",
    "MoleculeFileError",
    "read_molecules",
    "read_sdf",
    "read_smiles",
    "read_xyz",
    "write_molecules",
    "write_sdf",
    "write_smiles",
    "write_xyz",
]

XYZ_SUFFIXES = (".xyz", ".extxyz")
SDF_SUFFIXES = (".sdf", ".sd", ".mol")
SMILES_SUFFIXES = (".smi", ".smiles")
MOLECULE_SUFFIXES = XYZ_SUFFIXES + SDF_SUFFIXES + SMILES_SUFFIXES
"""File types :func:`read_molecules` reads (by suffix, case-insensitive)."""

DECIMALS = 10  # XYZ coordinates are written with this many decimals
_LINES = re.compile(r"\r\n|\r|\n")
_QUOTED = r'"(?:[^"\\]|\\.)*"'
_TOKEN = re.compile(rf'({_QUOTED}|[^\s="]+)=({_QUOTED}|\S*)|({_QUOTED}|\S+)')
_PLAIN_KEY = re.compile(r'[^\s="\\]+')
_CHARGE_COLUMNS = ("charges", "formal_charges", "formal_charge")
_SHOWN = 5  # problems listed in one warning or error message


class MoleculeFileError(ValueError):
    """A molecule file that cannot be read: the message starts with the file's path and names
    the line or record (1-based) and what is wrong."""


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------

def _text(path: Path) -> str:
    """The UTF-8 text of a user's file, or a MoleculeFileError naming it."""
    if not path.exists():
        raise MoleculeFileError(f"{path}: no such file")
    if not path.is_file():
        raise MoleculeFileError(f"{path}: not a file")
    try:
        return read_text(path, error=MoleculeFileError)
    except OSError as err:
        raise MoleculeFileError(f"{path}: cannot read the file ({err.strerror or err})") from None


def _show(line: str, n: int = 60) -> str:
    return repr(line if len(line) <= n else line[:n] + "...")


def _listing(items: Sequence[str], n: int = _SHOWN) -> str:
    more = f"; and {len(items) - n} more" if len(items) > n else ""
    return "; ".join(items[:n]) + more


@contextlib.contextmanager
def quiet_rdkit() -> Iterator[None]:
    """Silence RDKit's C++ log (parse errors of skipped records are reported by the caller)."""
    from rdkit import rdBase

    blocker = rdBase.BlockLogs()
    try:
        yield
    finally:
        del blocker


def _molecules(mols: Molecule | Iterable[Molecule]) -> list[Molecule]:
    out = [mols] if isinstance(mols, Molecule) else list(mols)
    bad = [type(m).__name__ for m in out if not isinstance(m, Molecule)]
    if bad:
        raise TypeError(f"expected Molecule objects, got {bad[0]}")
    if not out:
        raise ValueError("no molecules to write")
    return out


def _one_line(text: str) -> str:
    """``text`` without line breaks (names and titles are one line in every format)."""
    return " ".join(_LINES.split(str(text))).strip()


def _element(token: str) -> str | None:
    """The element symbol of an XYZ species token (a symbol in any case, or an atomic number)."""
    if token.isascii() and token.isdigit():
        z = int(token)
        return PERIODIC[z] if 0 < z < len(PERIODIC) else None
    symbol = token[:1].upper() + token[1:].lower()
    return symbol if symbol in ATOMIC_NUMBER else None


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value


def _quote(value: str) -> str:
    if _PLAIN_KEY.fullmatch(value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


# ---------------------------------------------------------------------------------------------
# XYZ
# ---------------------------------------------------------------------------------------------

def _comment(comment: str) -> tuple[str, dict[str, float], str | None]:
    """(name, numeric properties, ``Properties`` spec or None) of an XYZ comment line."""
    pairs: list[tuple[str, str]] = []
    bare: list[str] = []
    first_bare = None
    for k, match in enumerate(_TOKEN.finditer(comment)):
        if match.group(1) is not None:
            pairs.append((_unquote(match.group(1)), _unquote(match.group(2))))
        else:
            bare.append(_unquote(match.group(3)))
            if k == 0:
                first_bare = bare[0]
    if not pairs:  # plain XYZ: the comment is the name
        return comment.strip(), {}, None
    values = dict(pairs)
    name = values.get("name", first_bare or "")
    props: dict[str, float] = {}
    for key, value in pairs:
        if key in ("name", "Properties"):
            continue
        try:
            props[key] = float(value)
        except ValueError:
            continue  # pbc="F F F", Lattice, strings and flags: not scalar properties
    return name, props, values.get("Properties")


def _columns(spec: str, path: Path, line: int) -> tuple[int, int, int | None, int | None, int]:
    """(species column, pos column, charges column or None, Z column or None, total columns)
    of an extended-XYZ ``Properties`` spec."""
    parts = spec.split(":")
    if len(parts) % 3 or not spec:
        raise MoleculeFileError(f"{path}:{line}: Properties={spec!r} is not a list of name:type:columns triples")
    found: dict[str, tuple[int, str, int]] = {}
    col = 0
    for i in range(0, len(parts), 3):
        name, kind, cols = parts[i], parts[i + 1], parts[i + 2]
        if kind not in ("S", "R", "I", "L") or not (cols.isascii() and cols.isdigit()) or int(cols) < 1:
            raise MoleculeFileError(f"{path}:{line}: Properties column {name!r} has type {kind!r} and width "
                                    f"{cols!r} (expected a type S, R, I or L and a positive width)")
        found.setdefault(name, (col, kind, int(cols)))
        col += int(cols)
    species = found.get("species")
    z = found.get("Z")
    pos = found.get("pos") or found.get("positions")
    if pos is None or pos[1:] != ("R", 3):
        raise MoleculeFileError(f"{path}:{line}: Properties={spec!r} has no pos:R:3 column")
    if species is not None and species[1:] != ("S", 1):
        raise MoleculeFileError(f"{path}:{line}: Properties={spec!r}: species must be S:1")
    if species is None and (z is None or z[1:] != ("I", 1)):
        raise MoleculeFileError(f"{path}:{line}: Properties={spec!r} has neither species:S:1 nor Z:I:1")
    charges = next((found[c] for c in _CHARGE_COLUMNS if c in found and found[c][2] == 1), None)
    return (species[0] if species else -1, pos[0], charges[0] if charges else None,
            None if species else z[0], col)


def read_xyz(path: str | Path) -> list[Molecule]:
    """The frames of a (multi-frame, plain or extended) XYZ file, in file order.

    Plain comments are names; extended comments give properties, the name and the columns
    (see the module docstring). Species may be symbols in any case or atomic numbers. Blank
    lines between frames are tolerated. Raises :class:`MoleculeFileError` naming the file,
    the line and the frame for a count line that is not a positive integer, a file ending
    inside a frame, an atom line with a wrong number of fields, an unknown element, a
    coordinate that is not a finite number or a bad ``Properties`` spec, and for a file with
    no frame."""
    path = Path(path)
    lines = _LINES.split(_text(path))
    mols: list[Molecule] = []
    i = 0
    while i < len(lines):
        if not lines[i].strip():
            i += 1
            continue
        frame, start = len(mols) + 1, i + 1
        where = f"{path}:{start}: frame {frame}"
        try:
            n = int(lines[i].strip())
        except ValueError:
            raise MoleculeFileError(f"{where}: expected the number of atoms, got {_show(lines[i])}") from None
        if n < 1:
            raise MoleculeFileError(f"{where}: the atom count must be positive, got {n}")
        block = lines[i + 2:i + 2 + n]
        got = next((k for k, s in enumerate(block) if not s.strip()), len(block))
        if got < n:
            raise MoleculeFileError(f"{path}:{i + 3 + got}: frame {frame} (line {start}) announces {n} atoms but "
                                    f"only {got} atom lines follow (truncated file or wrong count?)")
        name, props, spec = _comment(lines[i + 1])
        cols = _columns(spec, path, i + 2) if spec is not None else None
        symbols, pos, charges = [], np.empty((n, 3)), np.zeros(n, dtype=np.int64)
        for k in range(n):
            lineno = i + 3 + k
            fields = lines[i + 2 + k].split()
            at = f"{path}:{lineno}: frame {frame}, atom {k + 1}"
            if cols is None:
                if len(fields) < 4:
                    raise MoleculeFileError(f"{at}: expected 'element x y z', got {_show(lines[i + 2 + k])}")
                s_col, p_col, q_col, z_col = 0, 1, None, None
            else:
                s_col, p_col, q_col, z_col, total = cols
                if len(fields) != total:
                    raise MoleculeFileError(f"{at}: expected {total} fields (Properties), got {len(fields)}")
            token = fields[s_col] if z_col is None else fields[z_col]
            symbol = _element(token)
            if symbol is None:
                raise MoleculeFileError(f"{at}: unknown element {token!r}")
            try:
                xyz = [float(v) for v in fields[p_col:p_col + 3]]
            except ValueError:
                raise MoleculeFileError(f"{at}: coordinates are not numbers: {_show(lines[i + 2 + k])}") from None
            if not all(math.isfinite(v) for v in xyz):
                raise MoleculeFileError(f"{at}: coordinates are not finite: {_show(lines[i + 2 + k])}")
            if q_col is not None:
                try:
                    q = float(fields[q_col])
                except ValueError:
                    q = math.nan
                if not (math.isfinite(q) and q == int(q) and abs(q) <= 8):
                    raise MoleculeFileError(f"{at}: formal charge {fields[q_col]!r} is not a small integer")
                charges[k] = int(q)
            symbols.append(symbol)
            pos[k] = xyz
        mols.append(Molecule(tuple(symbols), pos, charges, None, props, name))
        i += 2 + n
    if not mols:
        raise MoleculeFileError(f"{path}: no molecules (empty XYZ file)")
    return mols


def _xyz_frame(mol: Molecule, extended: bool) -> str:
    name = _one_line(mol.name)
    charged = bool(np.any(mol.charges))
    if extended:
        parts = ["Properties=species:S:1:pos:R:3" + (":charges:I:1" if charged else "")]
        if name:
            parts.append(f"name={_quote(name)}")
        for key, value in mol.properties.items():
            key = _one_line(key)
            if key in ("name", "Properties") or not key:
                raise ValueError(f"molecule {mol.name!r}: property name {key!r} cannot be written to extended XYZ")
            parts.append(f"{_quote(key)}={float(value)!r}")
        comment = " ".join(parts)
    else:
        comment = name
    rows = [str(len(mol)), comment]
    for k, (s, p) in enumerate(zip(mol.symbols, mol.positions)):
        row = f"{s} {p[0]:.{DECIMALS}f} {p[1]:.{DECIMALS}f} {p[2]:.{DECIMALS}f}"
        rows.append(row + (f" {int(mol.charges[k])}" if extended and charged else ""))
    return "\n".join(rows) + "\n"


def write_xyz(mols: Molecule | Iterable[Molecule], path: str | Path, extended: bool = True) -> Path:
    """Write molecules as one multi-frame XYZ file (atomically) and return its path.

    Coordinates have 10 decimals. ``extended`` (default) writes ASE-style extended XYZ:
    ``Properties=species:S:1:pos:R:3`` (``:charges:I:1`` when a formal charge is not zero),
    ``name=`` and the properties as ``key=value`` with the shortest exact float text, so a round
    trip keeps names, charges and properties exactly and positions to 1e-10 A. Plain XYZ writes
    the name as the comment (properties and charges are lost). Bonds are never written."""
    text = "".join(_xyz_frame(m, extended) for m in _molecules(mols))
    return atomic_write(path, text)


# ---------------------------------------------------------------------------------------------
# SDF
# ---------------------------------------------------------------------------------------------

def _record_starts(lines: list[str]) -> list[int]:
    """The 1-based first line of each SDF record (records end with a ``$$$$`` line)."""
    starts, new = [], True
    for k, line in enumerate(lines):
        if new:
            starts.append(k + 1)
            new = False
        if line.startswith("$$$$"):
            new = True
    return starts


def _sdf_molecule(mol: Any) -> Molecule:
    """A Molecule from one unsanitised SDF record (ValueError saying why not)."""
    from .molecule import from_rdkit

    if mol.GetNumAtoms() == 0:
        raise ValueError("no atoms")
    if mol.GetNumConformers() == 0:
        raise ValueError("no coordinates")
    pos = mol.GetConformer().GetPositions()
    if not np.isfinite(pos).all():
        raise ValueError("coordinates are not finite")
    props: dict[str, float] = {}
    for key in mol.GetPropNames():
        try:
            props[str(key)] = float(mol.GetProp(key).strip())
        except (ValueError, RuntimeError):
            continue  # text fields are not scalar properties
    name = mol.GetProp("_Name").strip() if mol.HasProp("_Name") else ""
    try:
        out = from_rdkit(mol, name=name, properties=props)
        if mol.GetNumBonds() == 0 and mol.GetNumAtoms() > 1:
            out.bonds = None  # an empty bond block: bonds unknown (inferred where needed), as in XYZ files
        return out
    except ValueError:
        raise
    except Exception as err:  # RDKit's KekulizeException and other C++ errors
        raise ValueError(f"{type(err).__name__}: {str(err).strip() or 'RDKit error'}") from None


def read_sdf(path: str | Path) -> list[Molecule]:
    """The molecules of an SDF (or MOL) file, V2000 or V3000, read by RDKit unsanitised.

    Hydrogens are kept as written, bonds are kekulised (a record of several atoms with an empty
    bond block has unknown bonds, ``bonds=None``, as :func:`write_sdf` writes a molecule
    without bonds and as an XYZ file reads, so metrics infer them from distances alike), formal
    charges kept, the title line is
    the name and SD data fields whose value parses as a float become properties. Records RDKit
    cannot parse (or that have no atoms, non-finite coordinates, unknown elements or bond types
    other than single / double / triple / aromatic) are skipped and reported in one warning naming
    the file and the record numbers (and their first lines). Raises :class:`MoleculeFileError`
    for an unreadable or empty file or one without a usable record."""
    from rdkit import Chem

    path = Path(path)
    text = _text(path)
    if not text.strip():
        raise MoleculeFileError(f"{path}: empty file")
    starts = _record_starts(_LINES.split(text))
    mols: list[Molecule] = []
    skipped: list[str] = []
    with quiet_rdkit():
        try:
            supplier = Chem.SDMolSupplier()
            supplier.SetData(text, sanitize=False, removeHs=False)
            total = len(supplier)
        except Exception as err:
            raise MoleculeFileError(f"{path}: not an SDF file RDKit can read ({type(err).__name__}: "
                                    f"{str(err).strip()[:200]})") from None
        for k in range(total):
            where = f"record {k + 1}" + (f" (line {starts[k]})" if k < len(starts) else "")
            try:
                rd = supplier[k]
            except Exception as err:
                skipped.append(f"{where}: {type(err).__name__}")
                continue
            if rd is None:
                skipped.append(f"{where}: RDKit cannot parse it")
                continue
            try:
                mols.append(_sdf_molecule(rd))
            except ValueError as err:
                skipped.append(f"{where}: {err}")
    if not mols:
        why = f" ({_listing(skipped)})" if skipped else ""
        raise MoleculeFileError(f"{path}: no readable molecule in {total} SDF record(s){why}")
    if skipped:
        warnings.warn(f"{path}: skipped {len(skipped)} of {total} SDF records that could not be read: "
                      f"{_listing(skipped)}", stacklevel=2)
    return mols


def _sd_block(mol: Molecule, v3000: bool) -> str:
    from rdkit import Chem

    try:
        rd = mol.to_rdkit()
    except KeyError as err:
        raise ValueError(f"molecule {mol.name!r}: bond order {err} cannot be written (orders are 0-3)") from None
    rd.SetProp("_Name", _one_line(mol.name))
    try:
        block = Chem.MolToMolBlock(rd, includeStereo=False, kekulize=False, forceV3000=v3000)
    except Exception as err:
        raise ValueError(f"molecule {mol.name!r}: RDKit cannot write it as a MOL block ({type(err).__name__}: "
                         f"{err})") from None
    fields = []
    for key, value in mol.properties.items():
        if not key or any(c in key for c in "<>\r\n"):
            raise ValueError(f"molecule {mol.name!r}: property name {key!r} cannot be an SD field name")
        fields.append(f">  <{key}>\n{float(value)!r}\n\n")
    return block + "".join(fields) + "$$$$\n"


def write_sdf(mols: Molecule | Iterable[Molecule], path: str | Path, v3000: bool = False) -> Path:
    """Write molecules as one SDF file (atomically) through RDKit and return its path.

    Each record is RDKit's MOL block of :meth:`Molecule.to_rdkit` (unsanitised; V2000, or V3000
    when ``v3000`` or when RDKit needs it for more than 999 atoms) with the molecule's formal
    charges and bonds: ``mol.bonds`` when set, **else no bonds at all** (infer them first, e.g.
    with RDKit's ``rdDetermineBonds``, if the file should have them), followed by the properties
    as SD data fields (shortest exact float text). Coordinates have 4 decimals (the MOL format's
    precision); reading the file and writing it again gives the same bytes."""
    text = "".join(_sd_block(m, v3000) for m in _molecules(mols))
    return atomic_write(path, text)


# ---------------------------------------------------------------------------------------------
# SMILES
# ---------------------------------------------------------------------------------------------

def read_smiles(path: str | Path) -> list[tuple[str, str]]:
    """``(smiles, name)`` of each line of a SMILES file, in file order.

    A line is ``SMILES`` or ``SMILES name`` (whitespace separated; the name is the rest of the
    line, "" when absent); blank lines and lines starting with ``#`` are ignored, and so is a
    first line whose first field is ``smiles`` (any case: a header). Each SMILES is checked with
    RDKit (sanitised); invalid ones are skipped and reported in one warning naming the file
    and the line numbers. Raises :class:`MoleculeFileError` for an unreadable file, one with no
    SMILES, or one whose SMILES are all invalid."""
    from rdkit import Chem

    path = Path(path)
    out: list[tuple[str, str]] = []
    bad: list[str] = []
    first = True
    with quiet_rdkit():
        for lineno, line in enumerate(_LINES.split(_text(path)), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split(None, 1)
            if first and parts[0].lower() == "smiles":
                first = False
                continue
            first = False
            smiles, name = parts[0], parts[1].strip() if len(parts) > 1 else ""
            try:
                ok = Chem.MolFromSmiles(smiles) is not None
            except Exception:
                ok = False
            if ok:
                out.append((smiles, name))
            else:
                bad.append(f"line {lineno}: {_show(smiles, 40)}")
    total = len(out) + len(bad)
    if not out:
        why = f": all {total} are invalid ({_listing(bad)})" if bad else ""
        raise MoleculeFileError(f"{path}: no valid SMILES{why}")
    if bad:
        warnings.warn(f"{path}: skipped {len(bad)} of {total} SMILES that RDKit cannot read; without a 3-D "
                      "molecule they are left out of everything that follows, every metric including validity "
                      f"(to score SMILES validity use --modality graphs or text): {_listing(bad)}", stacklevel=2)
    return out


def write_smiles(mols: Molecule | Iterable[Molecule], path: str | Path) -> Path:
    """Write one ``SMILES<TAB>name`` line per molecule (atomically) and return the path.

    The SMILES is :func:`polydiff_molecules.data.smiles_of` (canonical, sanitised, without
    stereo; bonds inferred from the geometry when ``mol.bonds`` is None). A molecule that does
    not sanitise is written as a comment line ``# invalid <name or index>``, so the file keeps
    one line per molecule while :func:`read_smiles` reads only the valid ones."""
    from .data import smiles_of

    rows = []
    for k, mol in enumerate(_molecules(mols)):
        name = _one_line(mol.name)
        smiles = smiles_of(mol)
        if smiles is None:
            rows.append(f"# invalid {name or k}")
        else:
            rows.append(f"{smiles}\t{name}" if name else smiles)
    return atomic_write(path, "\n".join(rows) + "\n")


# ---------------------------------------------------------------------------------------------
# any file, folders, one file per molecule
# ---------------------------------------------------------------------------------------------

def _read_file(path: Path, seed: int) -> list[Molecule]:
    suffix = path.suffix.lower()
    if suffix in XYZ_SUFFIXES:
        return read_xyz(path)
    if suffix in SDF_SUFFIXES:
        return read_sdf(path)
    if suffix in SMILES_SUFFIXES:
        from .data import conformers

        pairs = read_smiles(path)
        mols, failed = conformers([s for s, _ in pairs], seed=seed,
                                  names=[n or f"{path.stem}_{k:04d}" for k, (_, n) in enumerate(pairs)])
        if not mols:
            raise MoleculeFileError(f"{path}: none of the {len(pairs)} SMILES could be embedded in 3-D")
        if failed:
            shown = [f"{pairs[k][0]}" for k in failed]
            warnings.warn(f"{path}: {len(failed)} of {len(pairs)} SMILES could not be embedded in 3-D and were "
                          "skipped (left out of every metric, validity included): "
                          f"{_listing(shown)}", stacklevel=3)
        return mols
    raise MoleculeFileError(f"{path}: not a molecule file (expected one of {', '.join(MOLECULE_SUFFIXES)})")


def read_molecules(path: str | Path, seed: int = 0) -> list[Molecule]:
    """The molecules of a file (by suffix: ``.xyz`` / ``.extxyz``, ``.sdf`` / ``.sd`` /
    ``.mol``, ``.smi`` / ``.smiles``) or of every such file of a folder (sorted by name; other
    and hidden files are ignored).

    SMILES are embedded in 3-D (ETKDG + MMFF with ``seed``, cached; see
    :func:`polydiff_molecules.data.conformers`); those that fail are skipped with a warning. In
    a folder, files that cannot be read are skipped and reported by name in one warning; a
    :class:`MoleculeFileError` when none can be read, the folder has no molecule file or the
    path does not exist."""
    path = Path(path)
    if path.is_file():
        return _read_file(path, seed)
    if not path.is_dir():
        raise MoleculeFileError(f"{path}: no such file or folder")
    files = sorted((p for p in path.iterdir()
                    if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in MOLECULE_SUFFIXES),
                   key=natural_key)  # the written order: sample_9999 before sample_10000
    if not files:
        raise MoleculeFileError(f"{path}: no molecule files (expected {', '.join(MOLECULE_SUFFIXES)})")
    mols: list[Molecule] = []
    bad: list[str] = []
    for file in files:
        try:
            mols.extend(_read_file(file, seed))
        except (ValueError, OSError) as err:
            msg = str(err)
            bad.append(f"{file.name}{msg.removeprefix(str(file))}" if msg.startswith(str(file)) else
                       f"{file.name}: {msg}")
    if not mols:
        raise MoleculeFileError(f"{path}: none of the {len(files)} molecule files could be read: {_listing(bad)}")
    if bad:
        warnings.warn(f"{path}: skipped {len(bad)} of {len(files)} files that could not be read: {_listing(bad)}",
                      stacklevel=2)
    return mols


def write_molecules(mols: Molecule | Iterable[Molecule], out_dir: str | Path, fmt: str = "sdf") -> list[Path]:
    """Write each molecule to its own file ``out_dir/<name>.<fmt>`` (``fmt`` ``"sdf"`` or
    ``"xyz"``; each written atomically) and return the paths in order.

    The file stem is the name made portable and unique by :func:`polydiff.plugin.unique_stems`
    (``sample_0000``, ``sample_0001`` ... by position for unnamed molecules; a repeated name gets
    ``-2``, ``-3`` ...), so no file overwrites another."""
    if fmt not in ("sdf", "xyz"):
        raise ValueError(f"fmt must be 'sdf' or 'xyz', got {fmt!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    items = list(_molecules(mols))
    paths: list[Path] = []
    for mol, stem in zip(items, unique_stems([_one_line(m.name) for m in items]), strict=True):
        path = out_dir / f"{stem}.{fmt}"
        paths.append(write_sdf(mol, path) if fmt == "sdf" else write_xyz(mol, path))
    return paths
