"""Graph files: round trips (graph6, GraphML, edge list), atomic writes, errors naming file and
line, directories, and PNG plots."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest

from polydiff_graphs.chem import graph_smiles, smiles_to_graphs
from polydiff_graphs.io import (
    atomic_write,
    read_edge_list,
    read_graph6,
    read_graphml,
    read_graphs,
    write_edge_list,
    write_graph6,
    write_graphml,
    write_graphs,
    write_molecules,
)
from polydiff_graphs.plot import plot_graphs, plot_molecules

PNG = b"\x89PNG\r\n\x1a\n"


def _samples() -> list[nx.Graph]:
    with_isolated = nx.path_graph(3)
    with_isolated.add_node(3)
    return [nx.cycle_graph(5), with_isolated, nx.empty_graph(1), nx.petersen_graph()]


def _same(a: list[nx.Graph], b: list[nx.Graph]) -> bool:
    return [(g.number_of_nodes(), sorted(map(tuple, map(sorted, g.edges())))) for g in a] == \
        [(g.number_of_nodes(), sorted(map(tuple, map(sorted, g.edges())))) for g in b]


@pytest.mark.parametrize("write, read, suffix", [(write_graph6, read_graph6, "g6"),
                                                 (write_graphml, read_graphml, "graphml"),
                                                 (write_edge_list, read_edge_list, "edgelist")])
def test_graph_round_trips(tmp_path, write, read, suffix):
    graphs = _samples()
    path = write(graphs, tmp_path / f"s.{suffix}")
    assert _same(read(path), graphs)
    assert _same(read_graphs(path), graphs)
    assert [p.name for p in tmp_path.iterdir()] == [f"s.{suffix}"]      # no temporary files left


def test_graphml_keeps_attributes(tmp_path):
    mols, _ = smiles_to_graphs(["O=[N+]([O-])c1ccccc1", "C#N"])
    g = nx.Graph(label=3)
    g.add_node(0, weight=1.5, name="a")
    g.add_node(1, flag=True)
    g.add_edge(0, 1, kind="x")
    back = read_graphml(write_graphml([*mols, g], tmp_path / "m.graphml"))
    assert [graph_smiles(m) for m in back[:2]] == [graph_smiles(m) for m in mols]
    assert back[0].nodes[1]["atom"] == "N+" and back[1].edges[0, 1]["bond"] == 3
    assert back[2].graph["label"] == 3 and back[2].nodes[0] == {"weight": 1.5, "name": "a"}
    assert back[2].nodes[1]["flag"] is True and back[2].edges[0, 1]["kind"] == "x"
    # one attribute with values of several types (and numpy scalars) keeps each value and type
    mixed = nx.path_graph(4)
    for (u, v), value in zip(mixed.edges, [1, 0.5, "a"]):
        mixed.edges[u, v]["capacity"] = value
    mixed.nodes[0].update(count=np.int64(3), x=np.float32(0.1), ok=np.bool_(True))
    (got,) = read_graphml(write_graphml([mixed], tmp_path / "mixed.graphml"))
    assert [got.edges[e]["capacity"] for e in [(0, 1), (1, 2), (2, 3)]] == [1, 0.5, "a"]
    assert got.nodes[0] == {"count": 3, "x": float(np.float32(0.1)), "ok": True}
    assert type(got.nodes[0]["count"]) is int and type(got.edges[0, 1]["capacity"]) is int


def test_atomic_write_replaces_whole_files(tmp_path):
    path = atomic_write(tmp_path / "sub" / "f.txt", "one\n")
    atomic_write(path, b"two\n")
    assert path.read_text() == "two\n" and [p.name for p in path.parent.iterdir()] == ["f.txt"]


def test_users_edge_lists(tmp_path):
    f = tmp_path / "user.txt"
    f.write_text("% a comment\nalice bob\nbob, carol\ncarol dave 2.5\n\n")
    [g] = read_edge_list(f)
    assert g.number_of_nodes() == 4 and g.number_of_edges() == 3 and g.edges[2, 3]["weight"] == 2.5
    numeric = tmp_path / "numeric.edges"
    numeric.write_text("10 2\n2 7\n")
    [h] = read_graphs(numeric)
    assert sorted(tuple(sorted(e)) for e in h.edges()) == [(0, 1), (0, 2)]   # ids 2, 7, 10 -> 0, 1, 2


@pytest.mark.parametrize("text, message", [
    ("0 1\n1 2 3 4\n", r"bad.edgelist:2: expected 'u v' or 'u v weight'"),
    ("0 1\n1\n", r"bad.edgelist:2: expected 'u v'"),
    ("0 1\n1 2 heavy\n", r"bad.edgelist:2: the third field must be a number"),
    ("# graph 0 nodes=3\n0 1\n1 3\n", r"bad.edgelist:3: edge \(1, 3\) outside nodes 0..2"),
    ("# graph 0 nodes=3\n0 b\n", r"bad.edgelist:2: node ids must be integers"),
])
def test_edge_list_errors_name_file_and_line(tmp_path, text, message):
    f = tmp_path / "bad.edgelist"
    f.write_text(text)
    with pytest.raises(ValueError, match=message):
        read_edge_list(f)


def test_graph6_and_graphml_errors_name_file_and_line(tmp_path):
    g6 = tmp_path / "bad.g6"
    g6.write_bytes(b">>graph6<<Dhc\n\nD??\nZZ\x01\n")
    with pytest.raises(ValueError, match=r"bad.g6:4: not a graph6 string"):
        read_graph6(g6)
    ml = tmp_path / "bad.graphml"
    ml.write_text('<?xml version="1.0"?>\n<graphml>\n<graph edgedefault="undirected">\n<node id="0">\n</graphml>\n')
    with pytest.raises(ValueError, match=r"bad.graphml:5: malformed GraphML"):
        read_graphml(ml)


def test_sample_directories(tmp_path):
    paths = write_graphs(_samples(), tmp_path / "graphs")
    assert sorted(p.name for p in paths) == ["samples.edgelist", "samples.g6", "samples.graphml"]
    assert _same(read_graphs(tmp_path / "graphs"), _samples())
    mols, _ = smiles_to_graphs(["CCO", "c1ccccc1"])
    bad = nx.Graph()
    bad.add_node(0, atom="O")
    bad.add_nodes_from([(i, {"atom": "C"}) for i in (1, 2, 3)])
    bad.add_edges_from([(0, i, {"bond": 1}) for i in (1, 2, 3)])        # trivalent neutral O
    with pytest.warns(UserWarning, match="1 of 3 molecular graphs are invalid"):
        paths = write_molecules([*mols, bad], tmp_path / "mols")
    assert sorted(p.name for p in paths) == ["samples.graphml", "samples.sdf", "samples.smi"]
    back = read_graphs(tmp_path / "mols")                                # GraphML: all three, lossless
    assert [graph_smiles(g) for g in back] == ["CCO", "c1ccccc1", None]
    assert [graph_smiles(g) for g in read_graphs(tmp_path / "mols" / "samples.smi")] == ["CCO", "c1ccccc1"]
    with pytest.raises(FileNotFoundError, match="no graph or molecule files"):
        read_graphs(tmp_path)


def test_plots(tmp_path):
    pytest.importorskip("matplotlib", reason="optional extra 'plot' (matplotlib) not installed")
    path = plot_graphs(_samples(), tmp_path / "g.png")
    assert path.read_bytes()[:8] == PNG
    mols, _ = smiles_to_graphs(["CCO", "c1ccccc1", "C#N"])
    bad = nx.Graph([(0, 1, {"bond": 3}), (1, 2, {"bond": 3})])
    nx.set_node_attributes(bad, "O", "atom")
    path = plot_molecules([*mols, bad], tmp_path / "m.png")
    assert path.read_bytes()[:8] == PNG
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.png", "m.png"]      # no temporary files left
    # with a row of data above the samples: a taller picture (graphs) / one more row of cells (molecules)
    from PIL import Image

    with_ref = plot_graphs(_samples(), tmp_path / "g_ref.png", reference=_samples()[:2])
    assert Image.open(with_ref).size[1] > Image.open(tmp_path / "g.png").size[1]
    with_ref = plot_molecules([*mols, bad], tmp_path / "m_ref.png", reference=mols[:1])
    assert Image.open(with_ref).size[1] > Image.open(tmp_path / "m.png").size[1]


def test_an_unknown_suffix_is_named_not_read_as_an_edge_list(tmp_path):
    """A plot passed as graphs said "fc.png:1: not UTF-8 text"; edge lists keep their suffixes."""
    png = tmp_path / "fc.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(ValueError, match=r"fc\.png: not a graph file \(suffix '\.png'\); graphs are read from"):
        read_graphs(png)
    for name in ("g.el", "g.edges", "g"):
        (tmp_path / name).write_text("0 1\n1 2\n")
        assert read_graphs(tmp_path / name)[0].number_of_edges() == 2
