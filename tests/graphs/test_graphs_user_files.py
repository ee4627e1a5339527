"""Users' own graph and molecule files (QA of ``polydiff evaluate FILES --modality graphs`` and of
training on users' files): invalid generated molecules count as invalid samples, folders are
read whole, networkx edge lists, JSON / size / CSV errors that name the file and the record."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import networkx as nx
import pytest
from rdkit import Chem

from polydiff_graphs import GraphsModality
from polydiff_graphs.chem import INVALID, graph_smiles, is_placeholder, read_sdf, read_smiles, smiles_to_graphs
from polydiff_graphs.data import graph_file, graphs_from_json, smiles_file
from polydiff_graphs.io import read_edge_list, read_graphs, write_graph6, write_graphml, write_graphs, write_molecules

pytestmark = pytest.mark.usefixtures("one_thread")

MOLS = ["CCO", "c1ccccc1", "CC(=O)O", "CCN", "C1CCCCC1"]


@pytest.fixture(scope="module")
def modality() -> GraphsModality:
    return GraphsModality()


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def _hidden_valence_sdf(path: Path) -> Path:
    """An SDF record of ethane whose first carbon holds 5 explicit H (6 bonds): RDKit's H removal
    on reading would turn it into a valid 'CC'."""
    mol = Chem.RWMol(Chem.AddHs(Chem.MolFromSmiles("CC")))
    h = mol.AddAtom(Chem.Atom(1))
    mol.AddBond(0, h, Chem.BondType.SINGLE)
    mol.UpdatePropertyCache(strict=False)
    good = Chem.MolToMolBlock(Chem.MolFromSmiles("CCO"))
    path.write_text(good + "$$$$\n" + Chem.MolToMolBlock(mol, kekulize=False) + "$$$$\n")
    return path


# -- item 1: invalid generated molecules are invalid samples --------------------------------------

def test_invalid_smiles_count_as_invalid_samples_in_evaluate(modality, tmp_path):
    f = tmp_path / "gen.smi"
    f.write_text("CCO\nc1ccccc1\nC1CC\nCC(=O)O\n\nXyz\n")
    with pytest.warns(UserWarning, match=r"kept 2 invalid SMILES of 5 as invalid samples.*gen\.smi:3: 'C1CC'.*"
                                         r"gen\.smi:6: 'Xyz'"):
        graphs = modality.read(f)
    assert len(graphs) == 5 and [is_placeholder(g) for g in graphs] == [False, False, True, False, True]
    assert graphs[2].graph[INVALID].endswith("gen.smi:3: invalid SMILES 'C1CC'")
    reference = _quiet(smiles_to_graphs, MOLS)[0]
    metrics = modality.evaluate(graphs, reference, {})
    assert metrics["validity"] == pytest.approx(0.6) and metrics["validity_corrected"] == pytest.approx(0.6)
    flags = modality.flags(graphs, {})
    assert flags["valid"] == [True, True, False, True, False] and flags["smiles"][2] is None
    # the distribution metrics describe the molecules read: the placeholders change none of them
    read = [g for g in graphs if not is_placeholder(g)]
    plain = modality.evaluate(read, reference, {})
    for key in ("nspdk", "atom_tv", "bond_tv", "atoms_mean", "uniqueness"):
        assert metrics[key] == pytest.approx(plain[key]), key
    # training data: still skipped and counted
    with pytest.warns(UserWarning, match=r"skipped 2 invalid SMILES of 5"):
        assert len(read_smiles(f)[0]) == 3
    with pytest.warns(UserWarning, match=r"skipped 2 invalid SMILES of 5"):
        assert len(read_graphs(f)) == 3


def test_only_invalid_samples_give_validity_zero(modality, tmp_path):
    f = tmp_path / "bad.smi"
    f.write_text("Xyz\nC1CC\n")
    graphs = _quiet(modality.read, f)
    metrics = modality.evaluate(graphs, _quiet(smiles_to_graphs, MOLS)[0], {})
    assert metrics["validity"] == 0 and math.isnan(metrics["uniqueness"]) and math.isnan(metrics["nspdk"])


def test_reference_placeholders_are_left_out(modality, tmp_path):
    ref = tmp_path / "ref.smi"
    ref.write_text("\n".join(MOLS) + "\nXyz\n")
    reference = _quiet(modality.read, ref)
    assert sum(map(is_placeholder, reference)) == 1
    graphs = _quiet(smiles_to_graphs, MOLS[:3])[0]
    with pytest.warns(UserWarning, match=r"left 1 invalid molecule record\(s\) out of the reference .*ref\.smi:6"):
        with_bad = modality.evaluate(graphs, reference, {})
    clean = modality.evaluate(graphs, [g for g in reference if not is_placeholder(g)], {})
    assert with_bad == pytest.approx(clean)


def test_sdf_hydrogens_cannot_hide_a_valence_error(modality, tmp_path):
    f = _hidden_valence_sdf(tmp_path / "hv.sdf")
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable SDF records of 2: .*hv\.sdf:\d+ \(record 2\): "
                                         r".*valence"):
        graphs, bad = read_sdf(f)
    assert bad == 1 and [graph_smiles(g) for g in graphs] == ["CCO"]
    with pytest.warns(UserWarning, match=r"kept 1 invalid SDF records of 2 as invalid samples"):
        samples = modality.read(f)
    assert [graph_smiles(g) for g in samples] == ["CCO", None]
    assert modality.evaluate(samples, _quiet(smiles_to_graphs, MOLS)[0], {})["validity"] == pytest.approx(0.5)


def test_sdf_explicit_hydrogens_of_valid_molecules_still_read(tmp_path):
    f = tmp_path / "h.sdf"
    f.write_text("".join(Chem.MolToMolBlock(Chem.AddHs(Chem.MolFromSmiles(s))) + "$$$$\n" for s in MOLS))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        graphs, bad = read_sdf(f)
    assert bad == 0 and [graph_smiles(g) for g in graphs] == [graph_smiles(g) for g in smiles_to_graphs(MOLS)[0]]


def test_placeholders_survive_a_graphml_round_trip(modality, tmp_path):
    f = tmp_path / "gen.smi"
    f.write_text("CCO\nXyz\n")
    graphs = _quiet(modality.read, f)
    _quiet(modality.write, graphs, tmp_path / "out")
    back = modality.read(tmp_path / "out")
    assert [is_placeholder(g) for g in back] == [False, True]


# -- item 2: folders -------------------------------------------------------------------------------

def test_folder_reads_every_stem_from_its_most_faithful_file(modality, tmp_path):
    d = tmp_path / "mixed"
    d.mkdir()
    write_graphml([nx.cycle_graph(5), nx.path_graph(3)], d / "a.graphml")
    write_graph6([nx.complete_graph(4)], d / "B.G6")                       # suffixes case-insensitive
    write_graph6([nx.star_graph(3)], d / "c.graph6")
    (d / "d.edges").write_text("0 1\n1 2\n")
    (d / "e.edgelist").write_text("0 1 {}\n")
    (d / "f.json").write_text('{"graphs": [{"n": 2, "edges": [[0, 1]]}]}\n')
    write_graphs([nx.cycle_graph(6)], d, stem="samples")                  # one graph in 3 formats
    (d / "polydiff.json").write_text("{}")
    (d / "samples.png").write_bytes(b"\x89PNG")
    with warnings.catch_warnings():
        warnings.simplefilter("error")                                    # nothing is left out
        graphs = read_graphs(d)
    assert [g.number_of_nodes() for g in graphs] == [5, 3, 4, 4, 3, 2, 2, 6]
    assert len(modality.read(d)) == 8
    bundle = graph_file(str(d), split="spectre")                          # training reads the same
    assert sum(bundle.info["splits"].values()) == 8


def test_folder_names_what_it_ignores(tmp_path):
    d = tmp_path / "f"
    (d / "sub").mkdir(parents=True)
    write_graph6([nx.path_graph(4)], d / "g.g6")
    write_graph6([nx.path_graph(5)], d / "sub" / "h.g6")
    (d / "notes.md").write_text("hello\n")
    (d / "metrics.json").write_text('{"validity": 1}\n')                   # JSON, but not graphs
    with pytest.warns(UserWarning, match=r"ignored 2 file\(s\) that are not graph or molecule files and 1 "
                                         r"subfolder\(s\).*metrics\.json, notes\.md, sub/"):
        graphs = read_graphs(d)
    assert len(graphs) == 1
    empty = tmp_path / "none"
    empty.mkdir()
    (empty / "notes.md").write_text("x\n")
    with pytest.raises(FileNotFoundError, match=r"none: no graph or molecule files .*; it holds notes\.md"):
        read_graphs(empty)


def test_samples_folder_of_molecules_reads_graphml_only(modality, tmp_path):
    graphs = _quiet(smiles_to_graphs, MOLS)[0]
    write_molecules(graphs, tmp_path / "m")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        back = modality.read(tmp_path / "m")
    assert [graph_smiles(g) for g in back] == [graph_smiles(g) for g in graphs]


# -- item 3: networkx edge lists ------------------------------------------------------------------

def test_networkx_default_edge_lists_read(tmp_path):
    g = nx.Graph([(0, 1), (1, 2)])
    g.add_edge(2, 3, weight=2.5)
    f = tmp_path / "nx.edgelist"
    nx.write_edgelist(g, f)                                               # '0 1 {}' / "2 3 {'weight': 2.5}"
    [back] = read_edge_list(f)
    assert sorted(back.edges()) == [(0, 1), (1, 2), (2, 3)] and back.edges[2, 3]["weight"] == 2.5
    f.write_text("0 1 {'bond': 2, 'label': 'x'}\n")
    [back] = read_edge_list(f)
    assert back.edges[0, 1] == {"bond": 2, "label": "x"}


@pytest.mark.parametrize("line, message", [
    ("0 1 {'weight': 1.0\n", r"the edge data must be a dict"),
    ("0 1 [1, 2]\n", r"expected 'u v' or 'u v weight' \(or 'u v \{data\}'\)"),
    ("0 1 {'weight': [1]}\n", r"edge attribute 'weight' must be a number or a string"),
    ("0 1 {'weight': float('nan')}\n", r"the edge data must be a dict"),
    ("0 1 {1: 2}\n", r"edge attribute names must be strings"),
    ("0 1 2 {}\n", r"expected 'u v' or 'u v weight' \(or 'u v \{data\}'\)"),
])
def test_bad_edge_data_names_file_and_line(tmp_path, line, message):
    f = tmp_path / "bad.edgelist"
    f.write_text("0 1 {}\n" + line)
    with pytest.raises(ValueError, match=rf"bad\.edgelist:2: {message}"):
        read_edge_list(f)


# -- item 4: JSON errors ---------------------------------------------------------------------------

@pytest.mark.parametrize("graph, message", [
    ('{"edges": [[0, 1]]}', r'missing "n"'),
    ('{"n": 3}', r'missing "edges"'),
    ('{"n": "3", "edges": []}', r'"n" must be an integer'),
    ('{"n": 3, "edges": [[0, 1, 2]]}', r'"edges"\[0\] must be a pair \[u, v\] of node ids, got \[0, 1, 2\]'),
    ('{"n": 3, "edges": [[0, 1], [0, "a"]]}', r'"edges"\[1\] must be a pair'),
    ('{"n": 3, "edges": [[0, 5]]}', r'"edges"\[0\] \[0, 5\] is outside nodes 0..2'),
    ('{"n": 3, "edges": [], "node_labels": [1]}', r'"node_labels" must be a list of n=3 labels'),
    ('[1, 2]', r"expected an object"),
])
def test_json_errors_name_file_graph_and_field(tmp_path, graph, message):
    f = tmp_path / "g.json"
    f.write_text('{"graphs": [{"n": 2, "edges": [[0, 1]]}, ' + graph + "]}\n")
    with pytest.raises(ValueError, match=rf"g\.json: graph 1: {message}"):
        graphs_from_json(f)


# -- item 5: graphs larger than the recipe's limit ------------------------------------------------

def test_too_large_graphs_name_the_file_and_graph(tmp_path):
    f = tmp_path / "big.edgelist"
    write_graphs([nx.path_graph(4)] * 6 + [nx.path_graph(30)] + [nx.path_graph(4)] * 3, tmp_path, stem="big",
                 formats=("edgelist",))
    with pytest.raises(ValueError, match=r"big\.edgelist\): graphs have up to 30 nodes .* max_nodes=20 is too "
                                         r"small \(first too large: .*big\.edgelist:25 \(graph 6\), 30 nodes"):
        graph_file(str(f), max_nodes=20, max_feat_num=10)
    with pytest.raises(ValueError, match=r"max_feat_num=2 .* too small \(first too large: .*big\.edgelist:1 "
                                         r"\(graph 0\), 4 nodes, degree 2\)"):
        graph_file(str(f), max_nodes=40, max_feat_num=2)
    mols = tmp_path / "m.smi"
    mols.write_text("smiles\n" + "\n".join(MOLS) + "\n")
    with pytest.raises(ValueError, match=r"max_nodes=5 is too small \(first too large: .*m\.smi:3, 6 heavy atoms\)"):
        smiles_file(str(mols), max_nodes=5)


# -- item 6: a CSV edge list -----------------------------------------------------------------------

def test_csv_edge_list_error_says_how_csv_is_read(tmp_path):
    f = tmp_path / "edges.csv"
    f.write_text("source,target\n0,1\n1,2\n")
    with pytest.raises(ValueError, match=r"edges\.csv:1: no smiles column; columns: source, target; a \.csv file is "
                                         r"read as molecules.*\.edgelist, \.edges or \.txt"):
        read_graphs(f)
