"""Reading protein backbones from PDB / mmCIF files and writing them as PDB.

:func:`read_backbones` turns one structure file (``.pdb``, ``.ent``, ``.cif``, ``.mmcif``, each
optionally gzipped) into one :class:`~polydiff_proteins.geometry.Backbone` per protein chain of
its first model, and a :class:`ReadReport` of everything it dropped or found suspicious
(incomplete residues, non-standard residues, chain breaks, chains too short to use), so that a
data set of real files can be cleaned without reading a single traceback. Parsing is done by
biotite; every failure of a file ends in a ``ValueError`` whose message starts with the file's
path (``ValueError`` is one of the command line's ``USER_ERRORS``). :func:`read_folder` reads
every structure file of a folder, skipping (with a warning) those that fail.

:func:`write_pdb` writes backbones as fixed-column PDB ``ATOM`` records (byte-identical for the
same backbones, written atomically), which every viewer and structure tool reads.
"""

from __future__ import annotations

import gzip
import io
import itertools
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from polydiff.plugin import atomic_write, natural_key

from .geometry import ATOMS, Backbone

__all__ = [
    "MODIFIED",
    "ONE_LETTER",
    "STRUCTURE_SUFFIXES",
    "THREE_LETTER",
    "ChainBreak",
    "ReadReport",
    "ResidueProblem",
    "backbones_to_pdb_string",
    "dropped_summary",
    "read_backbones",
    "read_folder",
    "write_pdb",
]

ONE_LETTER: dict[str, str] = {
    "ALA": "A", "ARG": "R", "ASN": "N", "ASP": "D", "CYS": "C", "GLN": "Q", "GLU": "E", "GLY": "G",
    "HIS": "H", "ILE": "I", "LEU": "L", "LYS": "K", "MET": "M", "PHE": "F", "PRO": "P", "SER": "S",
    "THR": "T", "TRP": "W", "TYR": "Y", "VAL": "V", "UNK": "X",
}
"""The standard amino acids' one-letter codes (``UNK``, an unknown amino acid, is ``X``)."""

THREE_LETTER: dict[str, str] = {v: k for k, v in ONE_LETTER.items()}
"""One-letter code -> residue name for writing; letters not in it are written as ``UNK``."""

MODIFIED: dict[str, str] = {
    "MSE": "MET",  # selenomethionine
    "FME": "MET",  # N-formylmethionine
    "SEP": "SER",  # phosphoserine
    "TPO": "THR",  # phosphothreonine
    "PTR": "TYR",  # phosphotyrosine
    "TYS": "TYR",  # sulfotyrosine
    "HYP": "PRO",  # 4-hydroxyproline
    "MLY": "LYS",  # N-dimethyllysine
    "M3L": "LYS",  # N-trimethyllysine
    "ALY": "LYS",  # N-acetyllysine
    "KCX": "LYS",  # lysine NZ-carboxylic acid
    "CSO": "CYS",  # S-hydroxycysteine
    "CSD": "CYS",  # 3-sulfinoalanine
    "CME": "CYS",  # S,S-(2-hydroxyethyl)thiocysteine
    "OCS": "CYS",  # cysteine sulfonic acid
    "CYX": "CYS",  # disulfide-bonded cysteine (Amber)
    "HIC": "HIS",  # 4-methylhistidine
    "HID": "HIS", "HIE": "HIS", "HIP": "HIS",  # Amber protonation states
    "HSD": "HIS", "HSE": "HIS", "HSP": "HIS",  # CHARMM protonation states
    "CGU": "GLU",  # gamma-carboxyglutamic acid
    "NLE": "LEU",  # norleucine
}
"""Common modified / force-field residue names and their parent amino acid, used by
``nonstandard="map"`` (the residue keeps its coordinates and gets the parent's one-letter code)."""

STRUCTURE_SUFFIXES = (".pdb", ".ent", ".cif", ".mmcif")
"""File types :func:`read_backbones` reads (each also gzipped, ``.pdb.gz``...)."""

WATERS = frozenset({"HOH", "WAT", "DOD", "H2O", "SOL", "TIP", "TIP3"})
MAX_C_N = 2.0  # A: a longer C(i)-N(i+1) distance is a chain break (peptide bond 1.33 A)
MAX_CA_CA = 4.2  # A: a longer CA(i)-CA(i+1) distance breaks a CA trace (trans 3.80 A, cis 2.9 A)
_BACKBONE = frozenset(ATOMS)
_ELEMENT = {"N": "N", "CA": "C", "C": "C", "O": "O"}
_CHAIN_IDS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


# ---------------------------------------------------------------------------------------------
# the report
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ResidueProblem:
    """A residue that was dropped: its chain, number (and insertion code), name and why."""

    chain: str
    res_id: int
    res_name: str
    problem: str
    ins_code: str = ""

    def __str__(self) -> str:
        return f"{self.chain} {self.res_name} {self.res_id}{self.ins_code}: {self.problem}"


@dataclass(frozen=True)
class ChainBreak:
    """A gap between two consecutive kept residues of a chain: the residue numbers (with
    insertion codes) before and after it and the C-N (or, in CA traces, CA-CA) distance."""

    chain: str
    before: str
    after: str
    distance: float

    def __str__(self) -> str:
        return f"{self.chain} {self.before}-{self.after} ({self.distance:.1f} A)"


@dataclass
class ReadReport:
    """What reading one structure file found.

    ``problems``: residues dropped (incomplete backbone, non-finite coordinates, rejected
    non-standard residues); ``breaks``: chain breaks between kept residues; ``skipped``:
    ``(chain, reason)`` of protein chains (or segments) that gave no backbone; ``error``: why the
    whole file was skipped (set by :func:`read_folder` only); ``counts``: ``chains`` (backbones
    returned), ``residues`` (in them), ``waters`` and ``hetero`` (non-protein residues ignored),
    ``mapped`` (modified residues read as their parent), ``dropped`` (residues dropped).
    A report is true (:attr:`ok`) when nothing was dropped, broken, skipped or failed."""

    file: Path
    problems: list[ResidueProblem] = field(default_factory=list)
    breaks: list[ChainBreak] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    error: str | None = None
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        ("chains", "residues", "waters", "hetero", "mapped", "dropped"), 0))

    @property
    def ok(self) -> bool:
        """No residue problems, chain breaks, skipped chains or file error."""
        return not (self.problems or self.breaks or self.skipped or self.error)

    def __bool__(self) -> bool:
        return self.ok

    def summary(self) -> str:
        """One readable paragraph: what was read, what was ignored and every problem (the first
        few of each kind)."""
        name = Path(self.file).name
        if self.error:
            return f"{name}: not read: {self.error}"
        c = self.counts
        parts = [f"{name}: {c['chains']} chain(s) with {c['residues']} residues read"]
        if c["mapped"]:
            parts.append(f"{c['mapped']} modified residue(s) read as their parent amino acid")
        if c["waters"] or c["hetero"]:
            parts.append(f"{c['waters']} water(s) and {c['hetero']} other non-protein residue(s) ignored")
        if self.problems:
            parts.append(f"{len(self.problems)} residue(s) dropped ({_first(self.problems)})")
        if self.breaks:
            parts.append(f"{len(self.breaks)} chain break(s) ({_first(self.breaks)})")
        if self.skipped:
            parts.append(f"{len(self.skipped)} chain(s) skipped ({_first(f'{k}: {why}' for k, why in self.skipped)})")
        if self.ok:
            parts.append("no problems")
        return "; ".join(parts) + "."


def _first(items: Iterable[Any], n: int = 5) -> str:
    items = [str(x) for x in items]
    more = f"; and {len(items) - n} more" if len(items) > n else ""
    return "; ".join(items[:n]) + more


# ---------------------------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------------------------

def _kind(path: Path) -> tuple[str, bool]:
    """``("pdb" | "cif", gzipped)`` from the file name."""
    name = path.name.lower()
    gz = name.endswith(".gz")
    stem = name[:-3] if gz else name
    for suffix in STRUCTURE_SUFFIXES:
        if stem.endswith(suffix):
            return ("cif" if suffix in (".cif", ".mmcif") else "pdb"), gz
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    raise ValueError(f"{path}: not a structure file (expected one of {', '.join(STRUCTURE_SUFFIXES)}, "
                     "optionally .gz)")


def _stem(path: Path) -> str:
    name = path.name[:-3] if path.name.lower().endswith(".gz") else path.name
    return Path(name).stem


def _parse(path: Path) -> Any:
    """The first model of the file as a biotite ``AtomArray`` (altlocs resolved by occupancy);
    a ValueError naming the file for anything that is not a readable structure."""
    kind, gz = _kind(path)
    if not path.exists():
        raise ValueError(f"{path}: no such file")
    if not path.is_file():
        raise ValueError(f"{path}: not a file")
    try:
        data = path.read_bytes()
        if gz:
            data = gzip.decompress(data)
    except Exception as err:  # OSError, gzip's BadGzipFile / EOFError / zlib.error
        raise ValueError(f"{path}: cannot read the file ({type(err).__name__}: {err})") from err
    if not data.strip():
        raise ValueError(f"{path}: empty file")
    text = data.decode("utf-8", errors="replace")
    if kind == "pdb" and not any(line.startswith(("ATOM", "HETATM")) for line in text.splitlines()):
        raise ValueError(f"{path}: no ATOM or HETATM records (not a PDB file?)")
    if kind == "pdb":
        _check_truncated(path, text)
    try:
        import biotite.structure.io.pdb as pdb
        import biotite.structure.io.pdbx as pdbx

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # biotite's notes on guessed elements and the like
            if kind == "pdb":
                atoms = pdb.PDBFile.read(io.StringIO(text)).get_structure(
                    model=1, altloc="occupancy", extra_fields=["occupancy"])
            else:
                atoms = pdbx.get_structure(pdbx.CIFFile.read(io.StringIO(text)), model=1, altloc="occupancy",
                                           use_author_fields=True)
        coord = np.asarray(atoms.coord, dtype=np.float64)
        if coord.ndim != 2 or coord.shape[1:] != (3,):
            raise ValueError(f"coordinates of shape {coord.shape}")
    except Exception as err:
        what = "PDB" if kind == "pdb" else "mmCIF"
        msg = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        where = _bad_coordinate_line(text) if kind == "pdb" else None
        if where is not None:
            raise ValueError(f"{path}:{where[0]}: cannot parse as PDB: {where[1]}") from err
        raise ValueError(f"{path}: cannot parse as {what} ({type(err).__name__}: {msg})") from err
    if len(atoms) == 0:
        raise ValueError(f"{path}: no atoms in the first model")
    return atoms


_COORD_RECORDS = ("ATOM  ", "HETATM")
SAME_PLACE = 1.0  # A: two residues with one number whose backbone atoms are this close are one place


def _check_truncated(path: Path, text: str) -> None:
    """Raise a ValueError naming the file and line when a PDB text was cut off mid-record.

    A file that does not end with a newline was cut off when its last line is only the start of
    a coordinate record name (``"ATO"``), or an ``ATOM`` / ``HETATM`` record without its full
    coordinates (fewer than 54 columns) or shorter than every other coordinate record of the
    file (cut in its occupancy, B-factor or element). (A file cut exactly at a line end cannot
    be told from a complete one without an ``END`` record, which many tools leave out, so it is
    not flagged.)"""
    if not text or text.endswith(("\n", "\r")):
        return
    lines = text.splitlines()
    last = lines[-1].rstrip()
    if not last:
        return
    cut_record = False
    if last.startswith(_COORD_RECORDS):
        others = [len(x.rstrip()) for x in lines[:-1] if x.startswith(_COORD_RECORDS)]
        cut_record = len(last) < 54 or (bool(others) and len(last) < min(others))
    cut_name = len(last) < 6 and any(r.startswith(last) and r.rstrip() != last for r in _COORD_RECORDS)
    if cut_record or cut_name:
        raise ValueError(f"{path}:{len(lines)}: truncated file: the last line is an incomplete "
                         f"{'coordinate record' if cut_record else 'record'} ({last[:40]!r}) and the file does not "
                         "end with a newline")


def _bad_coordinate_line(text: str) -> tuple[int, str] | None:
    """``(line number, what is wrong)`` of the first ATOM / HETATM record whose coordinates
    (columns 31-54) or occupancy (columns 55-60, which choose among alternate locations) are
    not numbers, None if there is none."""
    for number, line in enumerate(text.splitlines(), start=1):
        if line.startswith(_COORD_RECORDS):
            cols, occupancy = line[30:54], line[54:60]
            try:
                [float(cols[i:i + 8]) for i in (0, 8, 16)]
            except ValueError:
                return number, f"the coordinates (columns 31-54) are not numbers ({cols!r})"
            try:
                float(occupancy)
            except ValueError:
                what = "missing" if not occupancy.strip() else f"not a number ({occupancy!r})"
                return number, f"the occupancy (columns 55-60) is {what}"
    return None


@dataclass
class _Residue:
    chain: str
    res_id: int
    ins_code: str
    name: str
    atoms: dict[str, np.ndarray]

    @property
    def label(self) -> str:
        return f"{self.res_id}{self.ins_code}"


def _split_repeats(starts: np.ndarray, names: np.ndarray, atom_names: np.ndarray) -> list[int]:
    """Residue starts, also where biotite's residue (one chain, number and insertion code)
    changes its residue name or repeats an atom name: consecutive residues that share a number
    are then read as the residues they are."""
    out = []
    for a, b in itertools.pairwise(starts.tolist()):
        out.append(a)
        seen: set[str] = set()
        for i in range(a, b):
            atom = str(atom_names[i]).strip().upper()
            if i > out[-1] and (atom in seen or names[i] != names[i - 1]):
                out.append(i)
                seen = set()
            seen.add(atom)
    return [*out, int(starts[-1])]


def _residues(atoms: Any, report: ReadReport, decimals: int | None = None) -> dict[str, list[_Residue]]:
    """Protein residues by chain, in file order; counts waters and other residues in ``report``.

    A residue is protein when its name is a standard or known modified amino acid (or ``UNK``)
    and it has at least one of N, CA, C, O, or when an unknown name has N, CA and C. Records of
    one (chain, number, insertion code) that come back later with other atoms of the same
    residue name are merged into the residue; a later residue with the same key is another
    residue (numbering that repeats, or an insertion code lost), unless its first backbone atom
    in common lies within :data:`SAME_PLACE` of the earlier one's (microheterogeneity, a
    repeated record): then it is reported and dropped."""
    import biotite.structure as struc

    starts = struc.get_residue_starts(atoms, add_exclusive_stop=True)
    chain_ids, res_ids, ins = atoms.chain_id, atoms.res_id, atoms.ins_code
    names, atom_names, coord = atoms.res_name, atoms.atom_name, atoms.coord
    blank = "A" if "A" not in set(chain_ids.tolist()) else "_"
    chains: dict[str, list[_Residue]] = {}
    seen: dict[tuple[str, int, str], list[_Residue]] = {}
    for a, b in itertools.pairwise(_split_repeats(starts, names, atom_names)):
        name = str(names[a]).strip().upper()
        bb: dict[str, np.ndarray] = {}
        for i in range(a, b):
            atom = str(atom_names[i]).strip().upper()
            if atom in _BACKBONE and atom not in bb:
                xyz = np.asarray(coord[i], dtype=np.float64)
                bb[atom] = xyz if decimals is None else np.round(xyz, decimals)
        known = name in ONE_LETTER or name in MODIFIED
        if not (bb and known) and not {"N", "CA", "C"} <= bb.keys():
            report.counts["waters" if name in WATERS else "hetero"] += 1
            continue
        chain = str(chain_ids[a]).strip() or blank
        key = (chain, int(res_ids[a]), str(ins[a]).strip())
        earlier = seen.setdefault(key, [])
        last = earlier[-1] if earlier else None
        if last is not None and last.name == name and not bb.keys() & last.atoms.keys():
            for atom, xyz in bb.items():  # one residue's records split in the file
                last.atoms.setdefault(atom, xyz)
            continue
        clash = next(((old, at) for old in earlier for at in ("CA", "N", "C", "O")
                      if at in bb and at in old.atoms and np.linalg.norm(bb[at] - old.atoms[at]) < SAME_PLACE), None)
        if clash is not None:  # microheterogeneity or a repeated record: two residues in one place
            report.problems.append(ResidueProblem(
                chain, key[1], name, f"a second residue numbered {key[1]}{key[2]} in the place of {clash[0].name} "
                f"({clash[1]} within {SAME_PLACE} A): the first kept", key[2]))
            continue
        # a new residue (one whose number repeats elsewhere, e.g. numbering that wraps past 9999, is another)
        earlier.append(_Residue(chain, key[1], key[2], name, bb))
        chains.setdefault(chain, []).append(earlier[-1])
    return chains


def read_backbones(path: str | Path, chains: Sequence[str] | None = None, nonstandard: str = "map",
                   split_breaks: bool = False, min_residues: int = 2) -> tuple[list[Backbone], ReadReport]:
    """The backbones of the protein chains of a structure file's first model, and a report.

    Reads ``.pdb`` / ``.ent`` / ``.cif`` / ``.mmcif`` (optionally ``.gz``) with biotite, with
    author chain ids and residue numbers. One :class:`Backbone` per protein chain (``chains``:
    only those ids), named ``<file stem>_<chain>`` (the file stem alone for a file of one
    chain, so files written by :func:`write_pdb` read back under their names; a blank chain id
    reads as ``A``):

    - alternate locations: per residue, the altloc with the highest total occupancy is kept
      (biotite's ``altloc="occupancy"``; on a tie the alphabetically first id);
    - non-standard residues: ``nonstandard="map"`` reads the modified residues of
      :data:`MODIFIED` as their parent amino acid and unknown names with N, CA and C as ``X``;
      ``"reject"`` reports and drops them (which breaks the chain there);
    - residues lacking any of N, CA, C, O (or with non-finite coordinates) are reported and
      dropped; a chain none of whose residues has N, C or O is read as a CA trace
      (``atom_names == ("CA",)``), needing only CA;
    - breaks (C(i)-N(i+1) > 2.0 A; in CA traces CA-CA > 4.2 A) are reported; with
      ``split_breaks`` the chain is split there into backbones ``<name>_seg1``, ``_seg2``...
      (only chains that have a break);
    - chains (or segments) of fewer than ``min_residues`` usable residues are skipped and reported;
      waters and other non-protein residues are ignored and counted.

    Raises ``ValueError`` starting with the path for a missing, empty, unreadable or
    unparsable file and for one without a usable protein chain.
    """
    path = Path(path)
    if nonstandard not in ("map", "reject"):
        raise ValueError(f"nonstandard must be 'map' or 'reject', got {nonstandard!r}")
    wanted = None if chains is None else [str(c) for c in ([chains] if isinstance(chains, str) else chains)]
    atoms = _parse(path)
    report = ReadReport(path)
    # biotite parses in float32: PDB's columns hold exactly 3 decimals, which rounding restores
    by_chain = _residues(atoms, report, 3 if _kind(path)[0] == "pdb" else None)
    if not by_chain:
        raise ValueError(f"{path}: no protein chain ({report.counts['waters']} waters, "
                         f"{report.counts['hetero']} other residues)")
    single = len(by_chain) == 1  # a one-chain file names its backbone after the file alone
    if wanted is not None:
        missing = [c for c in wanted if c not in by_chain]
        if len(missing) == len(wanted):
            raise ValueError(f"{path}: no protein chain {', '.join(wanted)} (protein chains in the file: "
                             f"{', '.join(by_chain)})")
        report.skipped.extend((c, "no such protein chain in the file") for c in missing)
        by_chain = {c: r for c, r in by_chain.items() if c in wanted}
    stem = _stem(path)
    out: list[Backbone] = []
    for chain, residues in by_chain.items():
        name = stem if single else f"{stem}_{chain}"
        out.extend(_chain_backbones(name, chain, residues, nonstandard, split_breaks, report, min_residues))
    report.counts["dropped"] = len(report.problems)
    report.counts["chains"] = len(out)
    report.counts["residues"] = sum(len(b) for b in out)
    if not out:
        raise ValueError(f"{path}: no protein chain with at least {min_residues} usable residue(s) "
                         f"({_first(f'{k}: {why}' for k, why in report.skipped)})")
    return out, report


def _chain_backbones(name: str, chain: str, residues: list[_Residue], nonstandard: str, split: bool,
                     report: ReadReport, min_residues: int = 2) -> list[Backbone]:
    """The backbone(s) of one chain's residues, reporting dropped residues, breaks and skips."""
    ca_trace = not any(r.atoms.keys() & {"N", "C", "O"} for r in residues)
    need = ("CA",) if ca_trace else ATOMS
    kept: list[tuple[_Residue, str]] = []
    for r in residues:
        if r.name in ONE_LETTER:
            letter = ONE_LETTER[r.name]
        elif nonstandard == "reject":
            report.problems.append(ResidueProblem(chain, r.res_id, r.name, "non-standard residue rejected",
                                                  r.ins_code))
            continue
        else:
            letter = ONE_LETTER[MODIFIED[r.name]] if r.name in MODIFIED else "X"
        lacking = [a for a in need if a not in r.atoms]
        if lacking:
            problem = f"missing {', '.join(lacking)}"
        elif not all(np.isfinite(r.atoms[a]).all() for a in need):
            problem = "non-finite coordinates"
        else:
            if r.name in MODIFIED:
                report.counts["mapped"] += 1
            kept.append((r, letter))
            continue
        report.problems.append(ResidueProblem(chain, r.res_id, r.name, problem, r.ins_code))
    if not kept:
        report.skipped.append((chain, "no usable residue"))
        return []
    xyz = np.stack([np.stack([r.atoms[a] for a in need]) for r, _ in kept])
    if ca_trace:
        dist = np.linalg.norm(xyz[1:, 0] - xyz[:-1, 0], axis=-1)
        limit = MAX_CA_CA
    else:
        dist = np.linalg.norm(xyz[1:, 0] - xyz[:-1, 2], axis=-1)  # N(i+1) - C(i)
        limit = MAX_C_N
    cuts = [i + 1 for i in np.flatnonzero(dist > limit)]
    report.breaks.extend(ChainBreak(chain, kept[i - 1][0].label, kept[i][0].label, float(dist[i - 1]))
                         for i in cuts)
    bounds = list(zip([0, *cuts], [*cuts, len(kept)])) if split and cuts else [(0, len(kept))]
    out = []
    for k, (a, b) in enumerate(bounds, start=1):
        label, bb_name = (f"{chain} seg{k}", f"{name}_seg{k}") if len(bounds) > 1 else (chain, name)
        if b - a < min_residues:
            report.skipped.append((label, f"{b - a} usable residue(s) (fewer than {min_residues})"))
            continue
        out.append(Backbone(atoms=xyz[a:b], sequence="".join(s for _, s in kept[a:b]), chain=chain, name=bb_name,
                            atom_names=tuple(need), res_ids=np.array([r.res_id for r, _ in kept[a:b]])))
    return out


def read_folder(folder: str | Path, **options: Any) -> tuple[list[Backbone], list[ReadReport]]:
    """The backbones of every structure file (:data:`STRUCTURE_SUFFIXES`, optionally ``.gz``)
    directly in ``folder``, in sorted file-name order, and one report per file.

    ``options`` go to :func:`read_backbones`. A file that fails is skipped, its report holding
    the reason (``error``); skipped files and chains are counted in one warning naming them.
    Raises ``ValueError`` naming the folder when it holds no structure file or none of them
    gives a backbone."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder}: no such folder")
    files = []
    for p in sorted(folder.iterdir(), key=natural_key):  # the written order: sample_9999 before sample_10000
        try:
            _kind(p)
        except ValueError:
            continue
        if p.is_file():
            files.append(p)
    if not files:
        raise ValueError(f"{folder}: no structure files ({', '.join(STRUCTURE_SUFFIXES)}, optionally .gz)")
    backbones: list[Backbone] = []
    reports: list[ReadReport] = []
    for p in files:
        try:
            got, report = read_backbones(p, **options)
        except ValueError as err:
            reports.append(ReadReport(p, error=str(err)))
            continue
        backbones.extend(got)
        reports.append(report)
    failed = [r for r in reports if r.error]
    chains = sum(len(r.skipped) for r in reports)
    if failed or chains:
        names = _first((_reason(r) for r in failed), 3)
        warnings.warn(f"{folder}: skipped {len(failed)} of {len(files)} files that could not be read"
                      f"{f' ({names})' if failed else ''} and {chains} chain(s) or segment(s)"
                      f"{f' in {_first((r.file.name for r in reports if r.skipped), 10)}' if chains else ''}",
                      stacklevel=2)
    if not backbones:
        raise ValueError(f"{folder}: no usable protein chain in {len(files)} structure files "
                         f"({_first((r.summary() for r in failed), 3)})")
    return backbones, reports


def _reason(report: ReadReport) -> str:
    """``file: why`` (or ``file:line: why``) of a file that was not read."""
    error, full = str(report.error or ""), str(report.file)
    return f"{report.file.name}{error[len(full):]}" if error.startswith(full) else f"{report.file.name}: {error}"


def dropped_summary(reports: Iterable[ReadReport], n: int = 5, breaks: bool = True) -> str | None:
    """One line counting the residues dropped and (with ``breaks``) the chain breaks found in
    ``reports``, naming the files and the first ``n`` residues and breaks; None when there are none."""
    reports = [r for r in reports if not r.error]
    problems = [f"{r.file.name}: {x}" for r in reports for x in r.problems]
    breaks = [f"{r.file.name}: {x}" for r in reports for x in r.breaks] if breaks else []
    if not problems and not breaks:
        return None
    files = {r.file.name for r in reports if r.problems or (breaks and r.breaks)}
    parts = []
    if problems:
        parts.append(f"{len(problems)} residue(s) dropped ({_first(problems, n)})")
    if breaks:
        parts.append(f"{len(breaks)} chain break(s) ({_first(breaks, n)})")
    return f"{' and '.join(parts)} in {len(files)} file(s)"


# ---------------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------------

def _atom_field(name: str, element: str) -> str:
    """Columns 13-16: names of one-letter elements shorter than 4 characters start in column 14."""
    return f" {name:<3s}" if len(element) == 1 and len(name) < 4 else f"{name:<4s}"


def _chain_ids(backbones: Sequence[Backbone]) -> list[str]:
    """Each backbone's own chain id when they are single characters and distinct, else A, B, ..."""
    own = [b.chain for b in backbones]
    if all(len(c) == 1 and c.strip() for c in own) and len(set(own)) == len(own):
        return own
    if len(backbones) > len(_CHAIN_IDS):
        raise ValueError(f"{len(backbones)} chains do not fit the PDB format's {len(_CHAIN_IDS)} chain ids")
    return list(_CHAIN_IDS[:len(backbones)])


def _insertion_codes(res_ids: np.ndarray, label: str) -> list[str]:
    """Column 27 of each residue: blank for the first residue of a number, then ``A``, ``B``...
    for later ones (52, 52A), so that residues sharing a number stay apart when read back."""
    seen: dict[int, int] = {}
    codes = []
    for r in res_ids.tolist():
        k = seen.get(int(r), 0)
        if k > 26:
            raise ValueError(f"backbone {label!r}: residue number {r} is used {k + 1} times; insertion codes "
                             "(A-Z) tell at most 27 apart")
        codes.append(" " if k == 0 else chr(ord("A") + k - 1))
        seen[int(r)] = k + 1
    return codes


def backbones_to_pdb_string(backbones: Backbone | Sequence[Backbone]) -> str:
    """PDB text of one or several backbones (chains of one structure): fixed-column ``ATOM``
    records (occupancy 1.00, B-factor 0.00), ``TER`` after each chain, ``END``.

    Residue names come from the one-letter sequence (:data:`THREE_LETTER`; ``UNK`` for others);
    a residue number that repeats gets insertion codes (52, 52A, 52B...).
    Raises ``ValueError`` naming the backbone when a coordinate is not finite or does not fit
    the ``%8.3f`` field, or a residue number does not fit the 4-column field."""
    bbs = [backbones] if isinstance(backbones, Backbone) else list(backbones)
    if not bbs:
        raise ValueError("no backbones to write")
    lines: list[str] = []
    serial = 0
    for bb, chain in zip(bbs, _chain_ids(bbs)):
        label = bb.name or f"chain {bb.chain}"
        x = np.asarray(bb.atoms, dtype=np.float64)
        if not np.isfinite(x).all():
            raise ValueError(f"backbone {label!r}: non-finite coordinates cannot be written to PDB")
        if (x <= -999.9995).any() or (x >= 9999.9995).any():
            raise ValueError(f"backbone {label!r}: coordinates beyond [-999.999, 9999.999] A do not fit the PDB "
                             f"format's %8.3f fields (range {x.min():.1f} to {x.max():.1f})")
        res_ids = np.asarray(bb.res_ids)
        if len(res_ids) and (res_ids.min() < -999 or res_ids.max() > 9999):
            raise ValueError(f"backbone {label!r}: residue numbers beyond -999..9999 do not fit the PDB format")
        if serial + x.shape[0] * x.shape[1] + 1 > 99999:
            raise ValueError(f"backbone {label!r}: more than 99999 atoms and TER records do not fit the PDB format")
        fields = [(_atom_field(a, _ELEMENT.get(a, a[:1])), _ELEMENT.get(a, a[:1])) for a in bb.atom_names]
        res_name = "UNK"
        codes = _insertion_codes(res_ids, label)
        for i, letter in enumerate(bb.sequence):
            res_name = THREE_LETTER.get(letter.upper(), "UNK")
            for j, (atom, element) in enumerate(fields):
                serial += 1
                xi, yi, zi = x[i, j]
                lines.append(f"ATOM  {serial:5d} {atom} {res_name:>3s} {chain}{int(res_ids[i]):4d}{codes[i]}   "
                             f"{xi:8.3f}{yi:8.3f}{zi:8.3f}{1.0:6.2f}{0.0:6.2f}          {element:>2s}  ")
        serial += 1
        last = int(res_ids[-1]) if len(res_ids) else 0
        lines.append(f"TER   {serial:5d}      {res_name:>3s} {chain}{last:4d}".ljust(80))
    lines.append("END".ljust(80))
    return "\n".join(lines) + "\n"


def write_pdb(backbones: Backbone | Sequence[Backbone], path: str | Path) -> Path:
    """Write one backbone, or several as the chains of one structure, to a PDB file atomically
    (see :func:`backbones_to_pdb_string`; the same backbones give the same bytes). Returns the path."""
    return atomic_write(path, backbones_to_pdb_string(backbones))
