"""Molecules as graphs: RDKit molecules <-> networkx molecular graphs, SMILES / SDF reading.

A *molecular graph* is an ``nx.Graph`` over heavy atoms 0..n-1 with the node attribute
``atom`` (an atom token: the element symbol, plus the formal charge when non-zero, e.g. ``"C"``,
``"N+"``, ``"O-"``) and the edge attribute ``bond`` (the Kekulé bond order 1, 2 or 3), the
representation GDSS and PARD generate. Hydrogens stay implicit: RDKit recomputes them from the
valences when the graph is turned back into a molecule, so a charged token such as ``N+``
round-trips ``[NH3+]`` / ``[nH+]`` and ``O-`` round-trips ``[O-]``. Stereochemistry is dropped.

Read as generated samples (``keep_invalid=True``, what ``polydiff evaluate`` does), a SMILES
entry or SDF record that is not a valid molecule becomes a *placeholder*: an empty graph whose
graph attribute ``invalid`` says where it came from and why (:func:`invalid_placeholder`).
:func:`graph_to_mol` returns None for it, so it counts as an invalid sample in every validity.
Read as training data, such records are skipped and counted instead.
"""

from __future__ import annotations

import contextlib
import io
import re
import warnings
import weakref
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import networkx as nx
from rdkit import Chem, RDLogger

from polydiff.plugin import csv_rows

ATOM = "atom"
BOND = "bond"
BOND_TYPES = {1: Chem.BondType.SINGLE, 2: Chem.BondType.DOUBLE, 3: Chem.BondType.TRIPLE}
_TOKEN = re.compile(r"^([A-Z][a-z]?)([+-]\d*)?$")
INVALID = "invalid"  # graph attribute of a placeholder for an unreadable record (its place and reason)
_ORIGINS: weakref.WeakKeyDictionary[nx.Graph, str] = weakref.WeakKeyDictionary()


def invalid_placeholder(reason: str) -> nx.Graph:
    """An empty graph standing for a record that is not a valid molecule (``reason``: its
    place and why), kept so that it counts as an invalid sample."""
    g = nx.Graph()
    g.graph[INVALID] = reason
    return g


def is_placeholder(graph: nx.Graph) -> bool:
    """Whether ``graph`` is a placeholder for an unreadable record (:func:`invalid_placeholder`)."""
    return bool(graph.graph.get(INVALID))


def set_origin(graph: nx.Graph, origin: str) -> nx.Graph:
    """Remember where a graph was read (``"file:line"``, ``"file: graph 3"``) for later
    messages, without touching its attributes (writers keep those); returns ``graph``."""
    _ORIGINS[graph] = origin
    return graph


def origin_of(graph: nx.Graph) -> str | None:
    """Where a reader found ``graph`` (see :func:`set_origin`), None when not read from a file."""
    return _ORIGINS.get(graph)


@contextlib.contextmanager
def quiet_rdkit() -> Iterator[None]:
    """Silence RDKit's own error log (we report problems ourselves)."""
    RDLogger.DisableLog("rdApp.*")
    try:
        yield
    finally:
        RDLogger.EnableLog("rdApp.*")


def read_text(path: str | Path, what: str = "file") -> str:
    """The text of a UTF-8 file (a byte-order mark dropped). A missing file, an empty one and
    bytes that are not UTF-8 are errors naming the file (and the line of the first bad byte)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such {what}")
    data = path.read_bytes()
    if not data.strip():
        raise ValueError(f"{path}: the file is empty")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        raise ValueError(f"{path}:{line}: not UTF-8 text (byte {data[err.start]:#04x} at offset {err.start})") \
            from None


def text_lines(text: str) -> Iterator[tuple[int, str]]:
    """``(line number, line)`` of a text, split at ``\\n``, ``\\r\\n`` and ``\\r`` as editors count lines."""
    return enumerate(io.StringIO(text, newline=None), start=1)


def atom_token(symbol: str, charge: int = 0) -> str:
    """``"N"``, ``"N+"``, ``"O-"``, ``"Fe+2"``: element symbol plus formal charge when non-zero."""
    if charge == 0:
        return symbol
    sign = "+" if charge > 0 else "-"
    return f"{symbol}{sign}{abs(charge) if abs(charge) > 1 else ''}"


def parse_token(token: str) -> tuple[str, int]:
    """Inverse of :func:`atom_token`: ``"N+"`` -> ``("N", 1)``."""
    m = _TOKEN.match(token)
    if not m:
        raise ValueError(f"bad atom token {token!r}: expected an element symbol with an optional charge like 'N+'")
    sign = m.group(2) or ""
    charge = 0 if not sign else (1 if sign[0] == "+" else -1) * int(sign[1:] or 1)
    return m.group(1), charge


def token_sort_key(token: str) -> tuple[int, int]:
    """Order atom tokens by atomic number, then charge (used to build vocabularies)."""
    symbol, charge = parse_token(token)
    return Chem.GetPeriodicTable().GetAtomicNumber(symbol), charge


def mol_to_graph(mol: Chem.Mol) -> nx.Graph:
    """Heavy-atom molecular graph with Kekulé bond orders (raises ValueError if it cannot be kekulised)."""
    if mol.GetNumAtoms() != mol.GetNumHeavyAtoms():
        mol = Chem.RemoveHs(mol, sanitize=False)
    mol = Chem.Mol(mol)
    try:
        Chem.Kekulize(mol, clearAromaticFlags=True)
    except Exception as err:  # RDKit raises KekulizeException (a ValueError subclass in recent versions)
        raise ValueError(f"cannot kekulise {Chem.MolToSmiles(mol)!r}: {err}") from None
    g = nx.Graph()
    atoms = [mol.GetAtomWithIdx(i) for i in range(mol.GetNumAtoms())]
    g.add_nodes_from((i, {ATOM: atom_token(a.GetSymbol(), a.GetFormalCharge())}) for i, a in enumerate(atoms))
    edges = []
    for bond in (mol.GetBondWithIdx(i) for i in range(mol.GetNumBonds())):
        order = bond.GetBondTypeAsDouble()
        if order not in (1.0, 2.0, 3.0):
            raise ValueError(f"unsupported bond type {bond.GetBondType()} in {Chem.MolToSmiles(mol)!r}")
        edges.append((bond.GetBeginAtomIdx(), bond.GetEndAtomIdx(), {BOND: int(order)}))
    g.add_edges_from(edges)
    return g


def build_mol(graph: nx.Graph) -> Chem.RWMol:
    """The unsanitised RDKit molecule of a molecular graph: atoms in sorted node order, bonds
    added as GDSS's ``construct_mol`` adds them (by the larger atom index, then the smaller, the
    larger one first), so that an atom lists its bonds in GDSS's order and the valency
    correction breaks ties as GDSS's does."""
    nodes = sorted(graph.nodes())
    index = {v: i for i, v in enumerate(nodes)}
    mol = Chem.RWMol()
    for v in nodes:
        symbol, charge = parse_token(graph.nodes[v].get(ATOM, "C"))
        atom = Chem.Atom(symbol)
        atom.SetFormalCharge(charge)
        mol.AddAtom(atom)
    bonds = []
    for u, v, d in graph.edges(data=True):
        raw = float(d.get(BOND, 1))
        if u == v or raw == 0:
            continue
        if raw not in BOND_TYPES:  # 1.5 would round to 2: aromatic bonds must be kekulised first
            raise ValueError(f"bond order {d.get(BOND)!r} between {u} and {v}: expected 1, 2 or 3 (Kekulé orders)")
        i, j = sorted((index[u], index[v]))
        bonds.append((j, i, BOND_TYPES[int(raw)]))
    for j, i, kind in sorted(bonds, key=lambda b: (b[0], b[1])):
        mol.AddBond(j, i, kind)
    return mol


def graph_to_mol(graph: nx.Graph) -> Chem.Mol | None:
    """The sanitised molecule of a molecular graph, or None if RDKit rejects it (valence, ...).

    No correction is attempted: this is the "validity without correction" test. Valences are
    checked as GDSS's ``check_valency`` checks them (RDKit's property step alone) before the
    full sanitisation, whose clean-up step would otherwise rewrite a neutral five-valent N
    (``N(=O)=O``) into a charged nitro group and accept it. A placeholder for an unreadable
    record (:func:`is_placeholder`) is None.
    """
    if graph.number_of_nodes() == 0 or is_placeholder(graph):
        return None
    mol = build_mol(graph).GetMol()
    with quiet_rdkit():
        try:
            Chem.SanitizeMol(Chem.Mol(mol), sanitizeOps=Chem.SanitizeFlags.SANITIZE_PROPERTIES)
            Chem.SanitizeMol(mol)
        except Exception:  # RDKit raises AtomValenceException, KekulizeException, ...
            return None
    return mol


def canonical_smiles(mol: Chem.Mol | None) -> str | None:
    """Canonical SMILES without stereochemistry (None for None)."""
    return None if mol is None else Chem.MolToSmiles(mol, isomericSmiles=False)


def canonical_set(smiles: Iterable[str]) -> set[str]:
    """The canonical forms (:func:`canonical_smiles`) of SMILES spelled any way, for novelty
    against a training list (``OCC`` and ``CCO`` are one molecule); unparsable entries are left
    out (they cannot equal a valid sample)."""
    out = set()
    with quiet_rdkit():
        for s in smiles:
            c = canonical_smiles(Chem.MolFromSmiles(s)) if s else None
            if c is not None:
                out.add(c)
    return out


def graph_smiles(graph: nx.Graph) -> str | None:
    """Canonical SMILES of a molecular graph, None if invalid."""
    return canonical_smiles(graph_to_mol(graph))


def _parse(mol: Chem.Mol | None) -> nx.Graph | None:
    if mol is None:
        return None
    try:
        return mol_to_graph(mol)
    except ValueError:
        return None


def smiles_to_graphs(smiles: Sequence[str], source: str = "<smiles>", lines: Sequence[int] | None = None,
                     keep_invalid: bool = False) -> tuple[list[nx.Graph], int]:
    """Parse SMILES into molecular graphs. Invalid ones are reported in one warning
    (``source:line``) and counted; they are skipped, or with ``keep_invalid`` kept in place as
    placeholders (:func:`invalid_placeholder`). Returns ``(graphs, n_invalid)``."""
    graphs, bad = [], []
    with quiet_rdkit():
        for i, s in enumerate(smiles):
            where = f"{source}:{lines[i] if lines is not None else i + 1}"
            graph = _parse(Chem.MolFromSmiles(s) if s else None)
            if graph is None:
                bad.append(f"{where}: {s!r}")
                if keep_invalid:
                    graphs.append(set_origin(invalid_placeholder(f"{where}: invalid SMILES {s!r}"), where))
            else:
                graphs.append(set_origin(graph, where))
    if bad:
        more = f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""
        what = ("kept {} invalid SMILES of {} as invalid samples (they count against validity)" if keep_invalid
                else "skipped {} invalid SMILES of {}").format(len(bad), len(smiles))
        warnings.warn(f"{what}: " + "; ".join(bad[:5]) + more, stacklevel=2)
    return graphs, len(bad)


def read_smiles_column(path: str | Path, column: str | None = None) -> tuple[list[str], list[int]]:
    """SMILES strings and their line numbers from a ``.smi`` file (first token per line; a
    ``smiles`` header and ``#`` comments are skipped) or a CSV with a ``smiles`` column
    (``column`` to choose another). Malformed CSV rows raise ValueError naming file and line."""
    path = Path(path)
    text = read_text(path, "SMILES file")
    if path.suffix.lower() == ".csv":
        return _read_csv_smiles(path, text, column)
    smiles, lines = [], []
    for n, line in text_lines(text):
        text_ = line.strip()
        if not text_ or text_.startswith("#"):
            continue
        token = text_.split()[0]
        if n == 1 and token.lower() == "smiles":
            continue
        smiles.append(token)
        lines.append(n)
    return smiles, lines


def _read_csv_smiles(path: Path, text: str, column: str | None) -> tuple[list[str], list[int]]:
    records = [(line, row) for line, row in csv_rows(path, text) if any(c.strip() for c in row)]
    if not records:
        raise ValueError(f"{path}: the file is empty")
    (hline, header), rows = records[0], records[1:]
    names = [h.strip() for h in header]
    wanted = column or next((h for h in names if h.lower() == "smiles"), None)
    if wanted is None or wanted not in names:
        hint = "" if column else (
            "; a .csv file is read as molecules, one SMILES per row in a column named 'smiles' (graphs as edge "
            "lists are read from .edgelist, .edges or .txt files, 'u v' per line, or from .g6, .graphml, .json)")
        raise ValueError(f"{path}:{hline}: no {'column ' + repr(column) if column else 'smiles column'}; "
                         f"columns: {', '.join(names)}{hint}")
    col = names.index(wanted)
    smiles, lines = [], []
    for line, row in rows:
        if len(row) != len(names):
            raise ValueError(f"{path}:{line}: expected {len(names)} fields, got {len(row)}: {','.join(row)!r}")
        smiles.append(row[col].strip())
        lines.append(line)
    return smiles, lines


def read_smiles(path: str | Path, column: str | None = None,
                keep_invalid: bool = False) -> tuple[list[nx.Graph], int]:
    """Molecular graphs from a SMILES file; returns ``(graphs, n_invalid)`` (invalid entries
    skipped, or kept as placeholders with ``keep_invalid``; see :func:`smiles_to_graphs`)."""
    smiles, lines = read_smiles_column(path, column)
    return smiles_to_graphs(smiles, str(path), lines, keep_invalid)


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0].strip() if text else type(err).__name__


def _sdf_record(supplier: Chem.SDMolSupplier, i: int) -> tuple[nx.Graph | None, str]:
    """Record ``i`` as a molecular graph, or None and why not. The record is parsed as written
    (hydrogens kept, not sanitised), then sanitised, then stripped of hydrogens: RDKit's own
    hydrogen removal would otherwise drop an explicit H that breaks a valence and hide the error."""
    try:
        mol = supplier[i]
    except Exception as err:  # RDKit raises on some malformed records instead of returning None
        return None, f"not a readable MDL record ({_first_line(err)})"
    if mol is None:
        return None, "not a readable MDL record"
    try:
        Chem.SanitizeMol(mol)
        mol = Chem.RemoveHs(mol)
    except Exception as err:  # AtomValenceException, KekulizeException, ...
        return None, _first_line(err)
    try:
        return mol_to_graph(mol), ""
    except ValueError as err:
        return None, str(err)


def read_sdf(path: str | Path, keep_invalid: bool = False) -> tuple[list[nx.Graph], int]:
    """Molecular graphs from an SDF file. Records that are unreadable or not valid molecules
    (a valence error, also one made by explicit hydrogens) are reported (line, record number,
    reason) in one warning and counted; they are skipped, or with ``keep_invalid`` kept in place
    as placeholders (:func:`invalid_placeholder`). Returns ``(graphs, n_invalid)``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such SDF file")
    data = path.read_bytes()
    if not data.strip():
        raise ValueError(f"{path}: the file is empty")
    starts = _sdf_record_lines(data)
    graphs, bad = [], []
    with quiet_rdkit():
        supplier = Chem.SDMolSupplier(str(path), sanitize=False, removeHs=False)
        n = len(supplier)
        for i in range(n):
            where = f"{path}:{starts[i] if i < len(starts) else '?'} (record {i + 1})"
            graph, why = _sdf_record(supplier, i)
            if graph is not None:
                graphs.append(set_origin(graph, where))
                continue
            bad.append(f"{where}: {why}")
            if keep_invalid:
                graphs.append(set_origin(invalid_placeholder(f"{where}: {why}"), where))
    if bad:
        more = f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""
        what = (f"kept {len(bad)} invalid SDF records of {n} as invalid samples (they count against validity)"
                if keep_invalid
                else f"skipped {len(bad)} unreadable SDF records of {n}")
        warnings.warn(f"{what}: " + "; ".join(bad[:5]) + more, stacklevel=2)
    return graphs, len(bad)


def _sdf_record_lines(data: bytes) -> list[int]:
    """First line number of every SDF record (line 1, then the line after each ``$$$$``)."""
    text = data.decode("utf-8", errors="replace")
    return [1] + [n + 1 for n, line in text_lines(text) if line.startswith("$$$$")]
