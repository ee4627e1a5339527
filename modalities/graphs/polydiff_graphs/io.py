"""Graph and molecule files: graph6, GraphML, edge lists, SMILES and SDF, written atomically.

Every writer renders the whole file in memory, writes it to a temporary file in the target
folder and ``os.replace``-s it into place, so a crash never leaves a half-written file.
Readers name the file and line of a malformed entry. Formats:

- ``.g6``: one graph6 string per line (an optional ``>>graph6<<`` header is accepted), nodes
  in sorted order;
- ``.graphml``: one document with one ``<graph>`` per sample; node / edge / graph attributes
  kept (molecular graphs keep ``atom`` and ``bond``);
- ``.edgelist`` (also ``.edges`` / ``.txt``): ``u v`` per line (comma or whitespace separated, an
  optional third numeric field is kept as ``weight``); ``# graph <i> nodes=<n>`` starts a new
  graph with nodes 0..n-1 (isolated nodes survive); other ``#`` lines are comments. Without
  headers the whole file is one graph, its node names relabelled 0..n-1 (numeric ones in order);
- ``.smi`` / ``.csv`` / ``.sdf``: molecules (see :mod:`.chem`); SMILES of invalid molecular
  graphs cannot be written, so writers skip them and say how many.
"""

from __future__ import annotations

import io
import re
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import networkx as nx
from rdkit import Chem

from polydiff.plugin import atomic_write

from .chem import ATOM, graph_to_mol, read_sdf, read_smiles

GRAPH_SUFFIXES = (".g6", ".graph6", ".graphml", ".edgelist", ".edges", ".txt", ".json")
MOLECULE_SUFFIXES = (".smi", ".csv", ".sdf", ".sd")
_HEADER = re.compile(r"^#\s*graph\b(.*)$", re.IGNORECASE)
_NODES = re.compile(r"nodes\s*=\s*(\d+)")


def is_molecular(graphs: Sequence[nx.Graph]) -> bool:
    """Whether the graphs carry atom tokens (molecular graphs)."""
    return any(ATOM in d for g in graphs for _, d in g.nodes(data=True))


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


def read_graph6(path: str | Path) -> list[nx.Graph]:
    """Graphs of a graph6 file; a malformed line raises ValueError naming file and line."""
    path = Path(path)
    out = []
    with path.open("rb") as f:
        for n, raw in enumerate(f, start=1):
            line = raw.strip()
            if line.startswith(b">>graph6<<"):
                line = line[len(b">>graph6<<"):]
            if not line:
                continue
            try:
                out.append(nx.from_graph6_bytes(line))
            except Exception as err:  # networkx raises NetworkXError / ValueError / IndexError
                raise ValueError(f"{path}:{n}: not a graph6 string ({err}): {line[:40]!r}") from None
    return out


# -- GraphML ------------------------------------------------------------------------------------

_GRAPHML_NS = "http://graphml.graphdrawing.org/xmlns"


def _graphml_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "long"
    if isinstance(value, float):
        return "double"
    return "string"


def _graphml_text(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def write_graphml(graphs: Sequence[nx.Graph], path: str | Path) -> Path:
    """All graphs in one GraphML document (one ``<graph>`` each), attributes kept."""
    keys: dict[tuple[str, str], tuple[str, str]] = {}

    def key(domain: str, name: str, value: Any) -> str:
        if (domain, name) not in keys:
            keys[(domain, name)] = (f"d{len(keys)}", _graphml_type(value))
        return keys[(domain, name)][0]

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
    for (domain, name), (kid, kind) in keys.items():
        root.append(ET.Element("key", {"id": kid, "for": domain, "attr.name": name, "attr.type": kind}))
    root.extend(bodies)
    ET.indent(root)
    return atomic_write(path, '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n")


def read_graphml(path: str | Path) -> list[nx.Graph]:
    """Every graph of a GraphML file, nodes relabelled 0..n-1 (numeric ids in numeric order)."""
    path = Path(path)
    reader = nx.readwrite.graphml.GraphMLReader(node_type=str)
    try:
        graphs = list(reader(path=str(path)))
    except ET.ParseError as err:
        line = err.position[0] if err.position else "?"
        raise ValueError(f"{path}:{line}: malformed GraphML ({err})") from None
    out = []
    for g in graphs:
        g = nx.Graph(g)
        for key in ("node_default", "edge_default"):  # the reader's own bookkeeping, not graph data
            g.graph.pop(key, None)
        try:
            g = nx.relabel_nodes(g, {v: int(v) for v in g.nodes()})
        except ValueError:
            pass
        out.append(_relabel(g))
    return out


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


def read_edge_list(path: str | Path) -> list[nx.Graph]:
    """Graphs of an edge-list file (format in the module doc); errors name file and line."""
    path = Path(path)
    graphs: list[tuple[nx.Graph, int | None]] = []
    current: nx.Graph | None = None
    declared: int | None = None
    with path.open() as f:
        for n, line in enumerate(f, start=1):
            text = line.strip()
            if not text:
                continue
            header = _HEADER.match(text)
            if header:
                m = _NODES.search(header.group(1))
                declared = int(m.group(1)) if m else None
                current = nx.Graph()
                if declared is not None:
                    current.add_nodes_from(range(declared))
                graphs.append((current, declared))
                continue
            if text.startswith("#") or text.startswith("%"):
                continue
            fields = [t for t in re.split(r"[,\s]+", text) if t]
            if len(fields) not in (2, 3):
                raise ValueError(f"{path}:{n}: expected 'u v' or 'u v weight', got {text!r}")
            if current is None:
                current = nx.Graph()
                graphs.append((current, None))
            u, v = fields[0], fields[1]
            if declared is not None:
                try:
                    u, v = int(u), int(v)
                except ValueError:
                    raise ValueError(f"{path}:{n}: node ids must be integers 0..{declared - 1}, got {text!r}") from None
                if not (0 <= u < declared and 0 <= v < declared):
                    raise ValueError(f"{path}:{n}: edge ({u}, {v}) outside nodes 0..{declared - 1}")
            attrs = {}
            if len(fields) == 3:
                try:
                    attrs["weight"] = float(fields[2])
                except ValueError:
                    raise ValueError(f"{path}:{n}: the third field must be a number, got {fields[2]!r}") from None
            current.add_edge(u, v, **attrs)
    out = []
    for g, declared_n in graphs:
        if declared_n is None:
            try:
                g = nx.relabel_nodes(g, {v: int(v) for v in g.nodes()})
            except ValueError:
                out.append(nx.convert_node_labels_to_integers(g))
                continue
        out.append(_relabel(g))
    return out


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


def read_graphs(path: str | Path) -> list[nx.Graph]:
    """Graphs or molecular graphs from a file (by suffix) or a directory.

    A directory written by :func:`write_graphs` / :func:`write_molecules` is read from its
    most faithful file (``*.graphml``, else ``*.g6``, ``*.edgelist``, ``*.smi``, ``*.sdf``);
    invalid SMILES / SDF records are skipped with a warning that counts them.
    """
    path = Path(path)
    if path.is_dir():
        for suffix in (".graphml", ".g6", ".edgelist", ".smi", ".sdf"):
            found = sorted(path.glob(f"*{suffix}"))
            if found:
                return [g for f in found for g in read_graphs(f)]
        raise FileNotFoundError(f"{path}: no graph or molecule files (*.graphml, *.g6, *.edgelist, *.smi, *.sdf)")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix in (".g6", ".graph6"):
        return read_graph6(path)
    if suffix == ".graphml":
        return read_graphml(path)
    if suffix == ".json":
        from .data import graphs_from_json

        return graphs_from_json(path)
    if suffix in (".smi", ".csv"):
        return read_smiles(path)[0]
    if suffix in (".sdf", ".sd"):
        return read_sdf(path)[0]
    return read_edge_list(path)
