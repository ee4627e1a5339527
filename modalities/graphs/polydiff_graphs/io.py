"""Graph and molecule files: graph6, GraphML, edge lists, SMILES and SDF, written atomically.

Every writer renders the whole file in memory, writes it to a temporary file in the target
folder and ``os.replace``-s it into place, so a crash never leaves a half-written file.
Readers name the file and line of a malformed entry; read as samples (``complete=True``, what
``polydiff evaluate`` does), a file cut off while it was written is an error. Formats:

- ``.g6``: one graph6 string per line (an optional ``>>graph6<<`` header is accepted), nodes
  in sorted order;
- ``.graphml``: one document with one ``<graph>`` per sample; node / edge / graph attributes
  kept (molecular graphs keep ``atom`` and ``bond``);
- ``.edgelist`` (also ``.edges`` / ``.txt``): ``u v`` per line (comma or whitespace separated, an
  optional third numeric field is kept as ``weight``, or a data dict as networkx's
  ``write_edgelist`` writes it, ``0 1 {}`` / ``0 1 {'weight': 1.0}``, whose number and string
  values are kept as edge attributes); ``# graph <i> nodes=<n>`` starts a new graph with nodes
  0..n-1 (isolated nodes survive); other ``#`` lines are comments. Without headers the whole
  file is one graph, its node names relabelled 0..n-1 (numeric ones in order);
- ``.smi`` / ``.csv`` / ``.sdf``: molecules (see :mod:`.chem`); SMILES of invalid molecular
  graphs cannot be written, so writers skip them and say how many.

Folders are read by :func:`read_graphs` (the rules are in its docstring).
"""

from __future__ import annotations

import ast
import io
import json
import math
import numbers
import re
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
from rdkit import Chem

from polydiff.plugin import atomic_write, natural_key

from .chem import ATOM, graph_to_mol, is_placeholder, read_sdf, read_smiles, read_text, set_origin, text_lines

GRAPH_SUFFIXES = (".g6", ".graph6", ".graphml", ".edgelist", ".edges", ".txt", ".json")
MOLECULE_SUFFIXES = (".smi", ".csv", ".sdf", ".sd")
# a folder holding the same graphs in several formats (same stem) is read from the first here
FAITHFUL_ORDER = (".graphml", ".json", ".g6", ".graph6", ".edgelist", ".edges", ".txt", ".smi", ".csv", ".sdf",
                  ".sd")
# files of a samples folder that hold no graphs: not reported as ignored
QUIET_NAMES = ("polydiff.json",)
QUIET_SUFFIXES = (".png",)
MAX_DATA_CHARS = 10_000  # an edge-list data dict longer than this is not an edge's attributes
_HEADER = re.compile(r"^#\s*graph\b(.*)$", re.IGNORECASE)
_NODES = re.compile(r"nodes\s*=\s*(\d+)")
_LINE_END = re.compile(r"\r\n|\r|\n")
MAX_NODES = 1_000_000  # a larger declared node count is a typo or a corrupted file, not a graph to build


def is_molecular(graphs: Sequence[nx.Graph]) -> bool:
    """Whether the graphs carry atom tokens (molecular graphs), or hold placeholders for
    unreadable molecule records (:func:`.chem.is_placeholder`)."""
    return any(ATOM in d for g in graphs for _, d in g.nodes(data=True)) or any(is_placeholder(g) for g in graphs)


def _relabel(graph: nx.Graph) -> nx.Graph:
    try:
        return nx.convert_node_labels_to_integers(graph, ordering="sorted")
    except TypeError:
        return nx.convert_node_labels_to_integers(graph)


# -- graph6 -------------------------------------------------------------------------------------


def write_graph6(graphs: Sequence[nx.Graph], path: str | Path) -> Path:
    """One graph6 line per graph (attributes are not kept)."""
    lines = [nx.to_graph6_bytes(nx.Graph(g), nodes=sorted(g.nodes()), header=False) for g in graphs]
    return atomic_write(path, b"".join(lines))


def read_graph6(path: str | Path, complete: bool = False) -> list[nx.Graph]:
    """Graphs of a graph6 file; a malformed line raises ValueError naming file and line.
    ``complete``: a last line without a line end is an error (see :func:`check_ended`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such graph6 file")
    data = path.read_bytes()
    if not data.strip():
        raise ValueError(f"{path}: the file is empty")
    if complete:
        check_ended(path, data.decode("latin-1"), "graph6 string")
    out = []
    for n, raw in enumerate(data.split(b"\n"), start=1):
        line = raw.strip()
        if line.startswith(b">>graph6<<"):
            line = line[len(b">>graph6<<"):]
        if not line:
            continue
        bad = next((i for i, c in enumerate(line) if not 63 <= c <= 126), None)
        if bad is not None:  # networkx checks the upper bound only and decodes the rest silently
            raise ValueError(f"{path}:{n}: not a graph6 string: byte {line[bad]:#04x} at column {bad + 1} is outside "
                             f"the graph6 range 63..126: {line[:40]!r}")
        try:
            out.append(set_origin(nx.from_graph6_bytes(line), f"{path}:{n}"))
        except Exception as err:  # networkx raises NetworkXError / ValueError / IndexError
            raise ValueError(f"{path}:{n}: not a graph6 string ({err}): {line[:40]!r}") from None
    return out


# -- GraphML ------------------------------------------------------------------------------------

_GRAPHML_NS = "http://graphml.graphdrawing.org/xmlns"


def _graphml_type(value: Any) -> str:
    """GraphML's type of a value (numpy scalars as the Python numbers they are)."""
    if isinstance(value, (bool, np.bool_)):
        return "boolean"
    if isinstance(value, numbers.Integral):
        return "long"
    if isinstance(value, numbers.Real):
        return "double"
    return "string"


def _graphml_text(value: Any) -> str:
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value)).lower()
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
        return repr(float(value))  # every digit: the value reads back exactly
    return str(value)


def write_graphml(graphs: Sequence[nx.Graph], path: str | Path) -> Path:
    """All graphs in one GraphML document (one ``<graph>`` each), attributes kept: one key per
    attribute name and value type, so an attribute holding 1 on one edge and 0.5 on another
    reads back as both (as networkx writes them)."""
    keys: dict[tuple[str, str, str], str] = {}

    def key(domain: str, name: str, value: Any) -> str:
        return keys.setdefault((domain, name, _graphml_type(value)), f"d{len(keys)}")

    root = ET.Element("graphml", xmlns=_GRAPHML_NS)
    bodies = []
    for i, g in enumerate(graphs):
        el = ET.Element("graph", id=f"G{i}", edgedefault="undirected")
        for name, value in g.graph.items():
            ET.SubElement(el, "data", key=key("graph", name, value)).text = _graphml_text(value)
        for v, d in sorted(g.nodes(data=True), key=lambda item: item[0]):
            node = ET.SubElement(el, "node", id=str(v))
            for name, value in d.items():
                ET.SubElement(node, "data", key=key("node", name, value)).text = _graphml_text(value)
        for u, v, d in g.edges(data=True):
            edge = ET.SubElement(el, "edge", source=str(u), target=str(v))
            for name, value in d.items():
                ET.SubElement(edge, "data", key=key("edge", name, value)).text = _graphml_text(value)
        bodies.append(el)
    for (domain, name, kind), kid in keys.items():
        root.append(ET.Element("key", {"id": kid, "for": domain, "attr.name": name, "attr.type": kind}))
    root.extend(bodies)
    ET.indent(root)
    return atomic_write(path, '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n")


def read_graphml(path: str | Path) -> list[nx.Graph]:
    """Every graph of a GraphML file, nodes relabelled 0..n-1 (numeric ids in numeric order).

    Errors name the file: malformed XML (with the line), GraphML that networkx cannot read, an
    edge naming an undeclared node, a node declared twice. Self-loops and parallel edges are
    dropped with a warning that counts them (the graphs here are simple)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such GraphML file")
    data = path.read_bytes()
    if not data.strip():
        raise ValueError(f"{path}: the file is empty")
    try:
        root = ET.parse(path).getroot()
    except LookupError as err:  # an XML declaration naming an unknown encoding
        raise ValueError(f"{path}:1: malformed GraphML ({err})") from None
    except ET.ParseError as err:
        line = err.position[0] if err.position else "?"
        last = len(data.rstrip().splitlines())
        cut = "; the document ends early, so the file looks cut off" if err.position and line >= last else ""
        raise ValueError(f"{path}:{line}: malformed GraphML ({err}){cut}") from None
    ns = f"{{{_GRAPHML_NS}}}"
    elements = root.findall(f"{ns}graph")
    reader = nx.readwrite.graphml.GraphMLReader(node_type=str)
    try:
        graphs = list(reader(path=str(path)))
    except Exception as err:  # networkx raises NetworkXError, KeyError, ValueError, TypeError...
        raise ValueError(f"{path}: not a GraphML file polydiff can read ({type(err).__name__}: {err})") from None
    if len(graphs) != len(elements):
        raise ValueError(f"{path}: {len(elements)} <graph> elements but {len(graphs)} graphs read")
    out, loops, parallel = [], [], 0
    for i, (el, g) in enumerate(zip(elements, graphs)):
        ids = [node.get("id") for node in el.iter(f"{ns}node")]
        twice = sorted({str(v) for v in ids if ids.count(v) > 1})
        if twice:
            raise ValueError(f"{path}: graph {i + 1} ({el.get('id')!r}) declares node {twice[0]!r} twice")
        undeclared = sorted(str(v) for v in set(g.nodes()) - set(ids))
        if undeclared:
            raise ValueError(f"{path}: graph {i + 1} ({el.get('id')!r}) has edges to undeclared node(s) "
                             f"{', '.join(map(repr, undeclared[:5]))}")
        simple = nx.Graph(g)
        parallel += g.number_of_edges() - simple.number_of_edges()  # multigraphs, reciprocal directed edges
        if nx.number_of_selfloops(simple):
            loops.append((i + 1, nx.number_of_selfloops(simple)))
            simple.remove_edges_from(list(nx.selfloop_edges(simple)))
        for key in ("node_default", "edge_default"):  # the reader's own bookkeeping, not graph data
            simple.graph.pop(key, None)
        out.append(set_origin(_relabel(_int_ids(simple)), f"{path}: graph {i + 1} ({el.get('id')!r})"))
    warn_dropped(path, loops, parallel)
    return out


def _int_ids(g: nx.Graph) -> nx.Graph:
    """Numeric string ids as integers (when that maps no two ids to the same number)."""
    try:
        mapping = {v: int(v) for v in g.nodes()}
    except (TypeError, ValueError):
        return g
    return nx.relabel_nodes(g, mapping) if len(set(mapping.values())) == len(mapping) else g


def warn_dropped(source: str | Path, loops: Sequence[tuple[Any, int]], parallel: int, where: str = "graph",
                  stacklevel: int = 3) -> None:
    """One warning naming the file (or other source) that counts the self-loops (``(where,
    count)`` pairs) and the parallel or repeated edges dropped while reading it."""
    parts = []
    if loops:
        total = sum(k for _, k in loops)
        places = ", ".join(str(w) for w, _ in loops[:8]) + (" ..." if len(loops) > 8 else "")
        parts.append(f"dropped {total} self-loop(s) ({where} {places}): polydiff's graphs are simple")
    if parallel:
        parts.append(f"merged {parallel} repeated edge(s) into one edge per node pair")
    if parts:
        warnings.warn(f"{source}: " + "; ".join(parts), stacklevel=stacklevel)


def simple_graphs(graphs: Sequence[nx.Graph], source: str) -> list[nx.Graph]:
    """The graphs as simple undirected ``nx.Graph``-s: self-loops dropped and parallel or
    reciprocal directed edges merged, with one warning naming ``source`` that counts them
    (graphs given in memory; the file readers warn the same way)."""
    out, loops, parallel = [], [], 0
    for i, g in enumerate(graphs):
        if type(g) is nx.Graph and not nx.number_of_selfloops(g):
            out.append(g)  # already simple: no copy
            continue
        simple = nx.Graph(g)
        parallel += g.number_of_edges() - simple.number_of_edges()
        k = nx.number_of_selfloops(simple)
        if k:
            loops.append((i, k))
            simple.remove_edges_from(list(nx.selfloop_edges(simple)))
        out.append(simple)
    warn_dropped(source, loops, parallel, stacklevel=4)
    return out


def check_ended(path: Path, text: str, what: str = "record") -> None:
    """A samples file whose last line has no line end was cut off while it was written (every
    writer here ends its lines): a ``ValueError`` naming the file and that line, not a
    shorter read or a half-written record read as a whole one."""
    lines = _LINE_END.split(text)
    if lines[-1].strip():
        raise ValueError(f"{path}:{len(lines)}: the last line has no line end, so the file looks cut off while it "
                         f"was written (a half-written {what}); regenerate it, or end the line if it is complete")


# -- edge lists ---------------------------------------------------------------------------------


def write_edge_list(graphs: Sequence[nx.Graph], path: str | Path) -> Path:
    """``# graph i nodes=n`` headers followed by ``u v`` lines (nodes relabelled 0..n-1)."""
    buf = io.StringIO()
    for i, g in enumerate(graphs):
        g = _relabel(g)
        buf.write(f"# graph {i} nodes={g.number_of_nodes()}\n")
        for u, v in sorted(tuple(sorted(e)) for e in g.edges()):
            buf.write(f"{u} {v}\n")
    return atomic_write(path, buf.getvalue())


def read_edge_list(path: str | Path, complete: bool = False) -> list[nx.Graph]:
    """Graphs of an edge-list file (format in the module doc); errors name file and line.
    Self-loops and repeated edges are dropped with one warning that counts them and names their
    lines (the graphs here are simple). ``complete``: a last line without a line end is an
    error (see :func:`check_ended`)."""
    path = Path(path)
    text = read_text(path, "edge-list file")
    if complete:
        check_ended(path, text, "edge")
    graphs: list[tuple[nx.Graph, int | None, int]] = []
    current: nx.Graph | None = None
    declared: int | None = None
    loops: list[tuple[int, int]] = []
    repeated = 0
    for n, line in text_lines(text):
        text_ = line.strip()
        if not text_:
            continue
        header = _HEADER.match(text_)
        if header:
            m = _NODES.search(header.group(1))
            declared = int(m.group(1)) if m else None
            if declared is not None and declared > MAX_NODES:
                raise ValueError(f"{path}:{n}: nodes={declared} is more than polydiff reads ({MAX_NODES:,})")
            current = nx.Graph()
            if declared is not None:
                current.add_nodes_from(range(declared))
            graphs.append((current, declared, n))
            continue
        if text_.startswith("#") or text_.startswith("%"):
            continue
        head, brace, data = text_.partition("{")
        fields = [t for t in re.split(r"[,\s]+", head) if t]
        if len(fields) not in (2, 3) or (brace and len(fields) != 2):
            raise ValueError(f"{path}:{n}: expected 'u v' or 'u v weight' (or 'u v {{data}}'), got {text_!r}")
        if current is None:
            current = nx.Graph()
            graphs.append((current, None, n))
        u, v = fields[0], fields[1]
        if declared is not None:
            try:
                u, v = int(u), int(v)
            except ValueError:
                raise ValueError(f"{path}:{n}: node ids must be integers 0..{declared - 1}, got {text_!r}") from None
            if not (0 <= u < declared and 0 <= v < declared):
                raise ValueError(f"{path}:{n}: edge ({u}, {v}) outside nodes 0..{declared - 1}")
        attrs = _edge_data(path, n, brace + data) if brace else {}
        if len(fields) == 3:
            try:
                attrs["weight"] = float(fields[2])
            except ValueError:
                raise ValueError(f"{path}:{n}: the third field must be a number, got {fields[2]!r}") from None
            if not math.isfinite(attrs["weight"]):
                raise ValueError(f"{path}:{n}: the weight must be a finite number, got {fields[2]!r}")
        if u == v:
            loops.append((n, 1))
            current.add_node(u)
            continue
        repeated += current.has_edge(u, v)
        current.add_edge(u, v, **attrs)
    out = []
    for i, (g, declared_n, start) in enumerate(graphs):
        origin = f"{path}:{start} (graph {i})"
        if declared_n is None:
            ids = _int_ids(g)
            if ids is g and all(_is_int(v) for v in g.nodes()):
                raise ValueError(f"{path}: node ids {_same_number(g)} name the same number; write each node one way")
            out.append(set_origin(_relabel(ids) if ids is not g else nx.convert_node_labels_to_integers(g), origin))
            continue
        out.append(set_origin(_relabel(g), origin))
    if not out:
        raise ValueError(f"{path}: no graphs (no edges and no '# graph' headers, only blank or comment lines)")
    warn_dropped(path, loops, repeated, where="line")
    return out


def _edge_data(path: Path, n: int, text: str) -> dict[str, Any]:
    """The attributes of an edge from the data dict networkx's ``write_edgelist`` writes
    (``{}``, ``{'weight': 1.0}``): a Python literal read safely; numbers (finite) and strings
    are kept, anything else is a ValueError naming file and line."""
    shown = text if len(text) <= 60 else text[:57] + "..."
    if len(text) > MAX_DATA_CHARS:
        raise ValueError(f"{path}:{n}: the edge data dict is {len(text):,} characters long: {shown!r}")
    try:
        data = ast.literal_eval(text)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        raise ValueError(f"{path}:{n}: the edge data must be a dict like {{'weight': 1.0}} (as networkx's "
                         f"write_edgelist writes it), got {shown!r}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}:{n}: the edge data must be a dict like {{'weight': 1.0}}, got {shown!r}")
    attrs: dict[str, Any] = {}
    for key, value in data.items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"{path}:{n}: edge attribute names must be strings, got {key!r}")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ValueError(f"{path}:{n}: edge attribute {key!r} must be a finite number, got {value!r}")
        elif not isinstance(value, (str, bool)):
            raise ValueError(f"{path}:{n}: edge attribute {key!r} must be a number or a string, got {value!r:.40}")
        attrs[key] = float(value) if key == "weight" and not isinstance(value, (str, bool)) else value
    return attrs


def _check_sdf_ended(path: Path) -> None:
    """An SDF samples file cut off while it was written: its last record has no ``$$$$`` line."""
    text = read_text(path, "SDF file")
    check_ended(path, text, "SDF record")
    lines = _LINE_END.split(text.rstrip())
    if lines[-1].strip() != "$$$$":
        raise ValueError(f"{path}:{len(lines)}: the last SDF record has no '$$$$' end line, so the file looks cut "
                         "off while it was written; regenerate it")


def _is_int(v: Any) -> bool:
    try:
        int(v)
    except (TypeError, ValueError):
        return False
    return True


def _same_number(g: nx.Graph) -> str:
    seen: dict[int, Any] = {}
    for v in g.nodes():
        if int(v) in seen:
            return f"{seen[int(v)]!r} and {v!r}"
        seen[int(v)] = v
    return "?"


# -- molecules ----------------------------------------------------------------------------------


def write_smiles(graphs: Sequence[nx.Graph], path: str | Path) -> tuple[Path, int]:
    """Canonical SMILES of the valid molecular graphs (``smiles index`` lines, index = position
    in ``graphs``); returns the path and the number of invalid graphs left out."""
    lines, skipped = ["smiles\tindex"], 0
    for i, g in enumerate(graphs):
        mol = graph_to_mol(g)
        if mol is None:
            skipped += 1
            continue
        lines.append(f"{Chem.MolToSmiles(mol, isomericSmiles=False)}\t{i}")
    return atomic_write(path, "\n".join(lines) + "\n"), skipped


def write_sdf(graphs: Sequence[nx.Graph], path: str | Path) -> tuple[Path, int]:
    """SDF (2-D coordinates) of the valid molecular graphs, ``_Name`` = index in ``graphs``;
    returns the path and the number of invalid graphs left out."""
    from rdkit.Chem import AllChem

    buf, skipped = io.StringIO(), 0
    writer = Chem.SDWriter(buf)
    for i, g in enumerate(graphs):
        mol = graph_to_mol(g)
        if mol is None:
            skipped += 1
            continue
        AllChem.Compute2DCoords(mol)
        mol.SetProp("_Name", str(i))
        writer.write(mol)
    writer.close()
    return atomic_write(path, buf.getvalue()), skipped


# -- whole sample sets --------------------------------------------------------------------------


def write_graphs(graphs: Sequence[nx.Graph], out_dir: str | Path, stem: str = "samples",
                 formats: Sequence[str] = ("g6", "graphml", "edgelist")) -> list[Path]:
    """Write generic graphs in the chosen formats (``g6``, ``graphml``, ``edgelist``)."""
    writers = {"g6": write_graph6, "graphml": write_graphml, "edgelist": write_edge_list}
    unknown = [f for f in formats if f not in writers]
    if unknown:
        raise ValueError(f"unknown graph format(s) {unknown}; allowed: {', '.join(writers)}")
    out_dir = Path(out_dir)
    return [writers[f](graphs, out_dir / f"{stem}.{f}") for f in formats]


def write_molecules(graphs: Sequence[nx.Graph], out_dir: str | Path, stem: str = "samples") -> list[Path]:
    """Molecular graphs as GraphML (all, lossless), SMILES and SDF (valid ones; a warning counts the rest)."""
    out_dir = Path(out_dir)
    paths = [write_graphml(graphs, out_dir / f"{stem}.graphml")]
    smi, skipped = write_smiles(graphs, out_dir / f"{stem}.smi")
    sdf, _ = write_sdf(graphs, out_dir / f"{stem}.sdf")
    if skipped:
        warnings.warn(f"{skipped} of {len(graphs)} molecular graphs are invalid: left out of {smi.name} and "
                      f"{sdf.name} (kept in {paths[0].name})", stacklevel=2)
    return [*paths, smi, sdf]


def read_graphs(path: str | Path, complete: bool = False, keep_invalid: bool = False) -> list[nx.Graph]:
    """Graphs or molecular graphs from a file (by suffix, case-insensitive) or a folder.

    A folder: its graph and molecule files (``.graphml``, ``.json``, ``.g6`` / ``.graph6``,
    ``.edgelist`` / ``.edges`` / ``.txt``, ``.smi``, ``.csv``, ``.sdf`` / ``.sd``) are grouped by
    stem; every stem is read, each from its most faithful file (:data:`FAITHFUL_ORDER`), since
    :func:`write_graphs` / :func:`write_molecules` write the same graphs in several formats under
    one stem. Stems are read in natural order (case-insensitive, ``g2`` before ``g10``). Other
    files, ``.json`` files that are not graphs JSON and subfolders are ignored with one warning
    that counts and names them (not ``polydiff.json``, ``.png`` plots or hidden files).

    Invalid SMILES / SDF records are skipped with a warning that counts them, or with
    ``keep_invalid`` (generated samples) kept as placeholders that count as invalid molecules
    (see :mod:`.chem`). ``complete`` (samples files): a file cut off while it was written is an
    error -- a line-based file (graph6, edge list, SMILES) whose last line has no line end, an SDF
    file whose last record has no ``$$$$`` line (GraphML and JSON cut off are malformed anyway).
    """
    path = Path(path)
    if path.is_dir():
        files = folder_graph_files(path)
        return [g for f in files for g in read_graphs(f, complete, keep_invalid)]
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix in (".g6", ".graph6"):
        graphs = read_graph6(path, complete)
    elif suffix == ".graphml":
        graphs = read_graphml(path)
    elif suffix == ".json":
        from .data import graphs_from_json

        graphs = graphs_from_json(path)
    elif suffix in (".smi", ".csv"):
        if complete:
            check_ended(path, read_text(path, "SMILES file"), "SMILES")
        graphs = read_smiles(path, keep_invalid=keep_invalid)[0]
    elif suffix in (".sdf", ".sd"):
        if complete:
            _check_sdf_ended(path)
        graphs = read_sdf(path, keep_invalid)[0]
    elif suffix in (".edgelist", ".edges", ".txt", ".el", ""):
        graphs = read_edge_list(path, complete)
    else:  # a plot or another tool's file read as an edge list said "not UTF-8" or "bad line"
        raise ValueError(f"{path}: not a graph file (suffix {suffix!r}); graphs are read from .graphml, .json, .g6 / "
                         ".graph6, .edgelist / .edges / .txt (edge lists), .smi / .csv (SMILES) or .sdf / .sd")
    if not graphs:
        raise ValueError(f"{path}: no graphs in the file")
    return graphs


def _is_graphs_json(path: Path) -> bool:
    """False for a ``.json`` file that is readable JSON but not a graphs file (no ``"graphs"``),
    e.g. metrics written beside the samples; True otherwise (a broken one is read, and fails)."""
    try:
        data = json.loads(path.read_bytes())
    except (ValueError, OSError):
        return True
    return not isinstance(data, dict) or "graphs" in data


def folder_graph_files(folder: Path) -> list[Path]:
    """The files :func:`read_graphs` reads from ``folder`` (see there), with one warning naming
    what it leaves out; FileNotFoundError naming the folder when there are none."""
    stems: dict[str, list[Path]] = {}
    ignored: list[str] = []
    subfolders: list[str] = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            subfolders.append(entry.name + "/")
            continue
        suffix = entry.suffix.lower()
        if entry.name.lower() in QUIET_NAMES or suffix in QUIET_SUFFIXES:
            continue
        if suffix not in FAITHFUL_ORDER or not entry.is_file() or (suffix == ".json" and not _is_graphs_json(entry)):
            ignored.append(entry.name)
            continue
        stems.setdefault(entry.stem, []).append(entry)
    files = [min(group, key=lambda f: (FAITHFUL_ORDER.index(f.suffix.lower()), f.name))
             for _, group in sorted(stems.items(), key=lambda item: natural_key(item[0]))]
    left = ignored + subfolders
    if left and files:
        parts = []
        if ignored:
            parts.append(f"{len(ignored)} file(s) that are not graph or molecule files")
        if subfolders:
            parts.append(f"{len(subfolders)} subfolder(s) (folders are not read recursively)")
        names = ", ".join(left[:8]) + (f" (and {len(left) - 8} more)" if len(left) > 8 else "")
        warnings.warn(f"{folder}: ignored {' and '.join(parts)}: {names}", stacklevel=3)
    if not files:
        found = f"; it holds {', '.join(left[:8])}{' ...' if len(left) > 8 else ''}" if left else ""
        raise FileNotFoundError(f"{folder}: no graph or molecule files ({', '.join('*' + s for s in FAITHFUL_ORDER)})"
                                f"{found}")
    return files
