"""Silent data problems of the graphs plugin (issue #18, item 6): self-loops dropped without a
word, a split that leaves no test graphs, samples files cut off mid-line, and a condition given
to an unconditional graph model -- each an error or a warning with counts."""

from __future__ import annotations

import dataclasses

import networkx as nx
import pytest

from polydiff.config import from_dict
from polydiff.generator import Generator
from polydiff_graphs import GraphsModality
from polydiff_graphs.data import graph_bundle, graphs_from_json, split_indices
from polydiff_graphs.io import read_edge_list, read_graphml, read_graphs, write_graphs, write_molecules

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def modality() -> GraphsModality:
    return GraphsModality()


# -- self-loops -----------------------------------------------------------------------------------

def test_edge_list_self_loops_warn_with_file_and_count(tmp_path):
    f = tmp_path / "loops.edgelist"
    f.write_text("# graph 0 nodes=3\n0 1\n1 1\n2 2\n# graph 1 nodes=2\n0 1\n")
    with pytest.warns(UserWarning, match=r"loops\.edgelist: dropped 2 self-loop\(s\) \(line 3, 4\)"):
        graphs = read_edge_list(f)
    assert [g.number_of_edges() for g in graphs] == [1, 1] and graphs[0].number_of_nodes() == 3
    f = tmp_path / "plain.txt"                                       # no headers: one graph
    f.write_text("a b\nb b\nb c\n")
    with pytest.warns(UserWarning, match=r"plain\.txt: dropped 1 self-loop\(s\) \(line 2\)"):
        graphs = read_graphs(f)
    assert graphs[0].number_of_nodes() == 3 and nx.number_of_selfloops(graphs[0]) == 0


def test_graphml_and_json_self_loops_warn_with_file_and_count(tmp_path):
    g = nx.Graph([(0, 1), (1, 2)])
    g.add_edge(2, 2)
    g.add_edge(0, 0)
    f = tmp_path / "loops.graphml"
    nx.write_graphml(g, f)
    with pytest.warns(UserWarning, match=r"loops\.graphml: dropped 2 self-loop\(s\) \(graph 1\)"):
        graphs = read_graphml(f)
    assert nx.number_of_selfloops(graphs[0]) == 0 and graphs[0].number_of_edges() == 2
    f = tmp_path / "loops.json"
    f.write_text('{"graphs": [{"n": 2, "edges": [[0, 1]]}, {"n": 3, "edges": [[0, 1], [2, 2]]}]}\n')
    with pytest.warns(UserWarning, match=r"loops\.json: dropped 1 self-loop\(s\) \(graph 1\)"):
        graphs = graphs_from_json(f)
    assert [g.number_of_edges() for g in graphs] == [1, 1]


def test_in_memory_graphs_with_self_loops_warn_with_counts():
    multi = nx.MultiGraph([(0, 1), (0, 1), (1, 1), (1, 2)])
    graphs = [multi] + [nx.path_graph(4)] * 5
    with pytest.warns(UserWarning, match=r"dataset 'mine': dropped 1 self-loop\(s\) \(graph 0\).*merged 1 repeated"):
        data = graph_bundle(graphs, "mine", {"name": "mine"})
    everything = data.train.graphs + data.test.graphs
    assert all(type(g) is nx.Graph and nx.number_of_selfloops(g) == 0 for g in everything)
    assert float(data.train.tensors["adj"].diagonal(dim1=1, dim2=2).abs().sum()) == 0.0


# -- splits and the reference set -----------------------------------------------------------------

def test_split_that_leaves_no_test_graphs_is_an_error(modality, tmp_path):
    with pytest.raises(ValueError, match=r"dataset 'community_small' has 4 graph\(s\): the 'gdss' split with "
                                         r"test_fraction=0\.2 leaves the test split empty; need at least 5 graphs"):
        modality.dataset("community_small", num_graphs=4)
    with pytest.raises(ValueError, match=r"dataset 'planar' has 2 graph\(s\): the 'spectre' split .* need at least "
                                         r"3 graphs"):
        modality.dataset("planar", num_graphs=2, num_nodes=8)
    f = tmp_path / "one.edgelist"
    f.write_text("0 1\n1 2\n")
    with pytest.raises(ValueError, match=r"dataset 'graph_file' \(.*one\.edgelist\) has 1 graph\(s\)"):
        modality.dataset("graph_file", path=str(f))
    with pytest.raises(ValueError, match="leaves the training split empty"):
        split_indices(3, "spectre", test_fraction=0.9)
    with pytest.raises(ValueError, match=r"test_fraction=0 leaves the test split empty; raise test_fraction"):
        split_indices(10, "gdss", test_fraction=0)
    assert split_indices(5, "gdss") == {"train": [1, 2, 3, 4], "val": [], "test": [0]}


def test_molecules_split_that_leaves_no_test_molecules_is_an_error(modality, tmp_path):
    f = tmp_path / "mols.smi"
    f.write_text("CCO\nCCN\nc1ccccc1\n")
    with pytest.raises(ValueError, match=r"dataset 'smiles_file' \(.*mols\.smi\) has 3 graph\(s\).*"
                                         r"test_fraction=0\.1 .* need at least 10 graphs"):
        modality.dataset("smiles_file", path=str(f))
    data = modality.dataset("smiles_file", path=str(f), test_fraction=0.34)
    assert len(data.test) == 1 and len(data.train) == 2


def test_reference_fallback_to_training_graphs_warns(modality):
    data = modality.dataset("community_small", num_graphs=10)
    assert len(modality.reference(data)) == 2
    with pytest.warns(UserWarning, match=r"dataset 'community_small' has no test or validation split: evaluating "
                                         r"against its training data \(8 items\)"):
        ref = modality.reference(dataclasses.replace(data, test=None))
    assert len(ref) == 8


# -- samples files cut off mid-line ---------------------------------------------------------------

def _cut(path, keep: int = 3) -> None:
    """Drop the last line end and a few characters before it (a writer killed mid-line)."""
    data = path.read_bytes()
    path.write_bytes(data[:len(data) - keep])


@pytest.mark.parametrize("fmt,suffix", [("g6", ".g6"), ("edgelist", ".edgelist")])
def test_truncated_graph_samples_are_an_error(modality, tmp_path, fmt, suffix):
    graphs = [nx.cycle_graph(12), nx.path_graph(14), nx.star_graph(10)]
    (path,) = write_graphs(graphs, tmp_path, formats=(fmt,))
    assert len(modality.read(path)) == 3
    whole = path.read_bytes()
    last = whole.count(b"\n")
    for keep in (3, 1):                                              # cut mid-line, or only the last line end
        path.write_bytes(whole)
        _cut(path, keep)
        with pytest.raises(ValueError, match=rf"samples{suffix}:{last}: the last line has no line end, so the file "
                                             r"looks cut off"):
            modality.read(path)
    assert len(read_graphs(path)) == 3                               # as a user's dataset file it still reads


def test_truncated_molecule_samples_are_an_error(modality, tmp_path):
    from polydiff_graphs.chem import smiles_to_graphs

    mols, _ = smiles_to_graphs(["CCO", "c1ccccc1O", "CC(=O)Nc1ccc(O)cc1"])
    paths = {p.suffix: p for p in write_molecules(mols, tmp_path)}
    assert len(modality.read(paths[".smi"])) == 3 and len(modality.read(paths[".sdf"])) == 3
    _cut(paths[".smi"], 2)                                           # 'CC(=O)Nc1ccc(O)cc1\t2' -> '...cc1\t'
    with pytest.raises(ValueError, match=r"samples\.smi:\d+: the last line has no line end, so the file looks cut "
                                         r"off while it was written \(a half-written SMILES\)"):
        modality.read(paths[".smi"])
    text = paths[".sdf"].read_text()
    paths[".sdf"].write_text(text[:text.rindex("$$$$")])             # the last record lost its end line
    with pytest.raises(ValueError, match=r"samples\.sdf:\d+: the last SDF record has no '\$\$\$\$' end line"):
        modality.read(paths[".sdf"])


def test_truncated_samples_folder_is_an_error(modality, tmp_path):
    write_graphs([nx.cycle_graph(5), nx.path_graph(4)], tmp_path / "run")
    assert len(modality.read(tmp_path / "run")) == 2
    _cut(tmp_path / "run" / "samples.graphml", 40)
    with pytest.raises(ValueError, match=r"samples\.graphml:\d+: malformed GraphML .*looks cut off"):
        modality.read(tmp_path / "run")


# -- conditions -----------------------------------------------------------------------------------

def test_condition_on_a_graph_model_is_an_error(modality):
    data = modality.dataset("community_small", num_graphs=10)
    fields = modality.fields(data.info)
    model = {"name": "gdss", "nhid": 4, "adim": 4, "num_layers": 2, "depth": 2}
    net = modality.network("gdss", data.info, fields, **{k: v for k, v in model.items() if k != "name"})
    cfg = from_dict({"modality": "graphs", "data": {"name": "community_small", "num_graphs": 10}, "model": model},
                    source="g.yaml")
    gen = Generator(modality, cfg, data.info, fields, net)
    with pytest.raises(ValueError, match=r"unknown condition 'label': the model is unconditional"):
        gen.generate(2, condition={"label": 3}, steps=2)
