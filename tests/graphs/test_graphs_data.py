"""Generators (statistics, determinism), splits, dense conversions, and the loaders of
../shared (counts checked against shared/data/README.md)."""

from __future__ import annotations

import json

import networkx as nx
import numpy as np
import pytest
import torch

from polydiff.plugin import shared_dir
from polydiff_graphs.chem import ATOM, graph_smiles, read_smiles_column, smiles_to_graphs
from polydiff_graphs.convert import (
    bond_channels,
    dense_to_graphs,
    dense_to_mol_graphs,
    graphs_to_dense,
    graphs_to_pyg,
    mol_graphs_to_dense,
)
from polydiff_graphs.data import (
    DATASETS,
    community_graphs,
    ego_graphs,
    grid_graphs,
    load_gdss_graphs,
    load_nci,
    load_qm9,
    load_spectre_community,
    load_zinc250k,
    planar_graphs,
    sbm_graphs,
    shared_file,
    split_indices,
    train_graphs,
)

DATA = shared_dir() / "data"


def needs_shared(test):
    """Mark a test as needing ../shared/data and skip it when absent."""
    skip = pytest.mark.skipif(not DATA.is_dir(), reason=f"shared data folder {DATA} not found "
                                                        "(set POLYDIFF_SHARED to the shared folder)")
    return skip(pytest.mark.shared(test))


def _edges(graphs):
    return [sorted(g.edges()) for g in graphs]


# -- generators ---------------------------------------------------------------------------------


def test_community_small_statistics_and_determinism():
    graphs = community_graphs(seed=3)
    assert len(graphs) == 100
    assert _edges(graphs) == _edges(community_graphs(seed=3)) and _edges(graphs) != _edges(community_graphs(seed=4))
    for g in graphs:
        n = g.number_of_nodes()
        assert 12 <= n <= 20 and n % 2 == 0
        half = n // 2
        bridges = [(u, v) for u, v in g.edges() if (u < half) != (v < half)]
        assert len(bridges) >= 1
    within = [sum(1 for u, v in g.edges() if (u < g.number_of_nodes() // 2) == (v < g.number_of_nodes() // 2))
              / (2 * (g.number_of_nodes() // 2) * (g.number_of_nodes() // 2 - 1) / 2) for g in graphs]
    assert np.mean(within) == pytest.approx(0.7, abs=0.03)       # gnp(size, 0.7) inside communities


def test_grid_graphs_enumerate_all_pairs():
    graphs = grid_graphs()
    assert len(graphs) == 100
    shapes = {tuple(sorted(d for _, d in g.degree())[:4]) for g in graphs}
    assert shapes == {(2, 2, 2, 2)}                                   # four corners each
    sizes = sorted(g.number_of_nodes() for g in graphs)
    assert sizes == sorted(m * n for m in range(10, 20) for n in range(10, 20))
    for g in graphs:  # an m x n grid: 2(m - 2) + 2(n - 2) nodes of degree 3 and 2mn - m - n edges
        m_plus_n = sum(1 for _, d in g.degree() if d == 3) // 2 + 4
        assert g.number_of_edges() == 2 * g.number_of_nodes() - m_plus_n


def test_planar_graphs():
    graphs = planar_graphs(10, seed=1)
    assert _edges(graphs) == _edges(planar_graphs(10, seed=1))
    for g in graphs:
        assert g.number_of_nodes() == 64 and nx.is_connected(g) and nx.check_planarity(g)[0]
        assert 64 * 2 <= g.number_of_edges() <= 3 * 64 - 6


def test_sbm_graphs():
    graphs = sbm_graphs(20, seed=2)
    assert _edges(graphs) == _edges(sbm_graphs(20, seed=2))
    for g in graphs:
        assert 40 <= g.number_of_nodes() <= 200 and nx.is_connected(g)
    density = np.mean([nx.density(g) for g in graphs])
    assert 0.03 < density < 0.2


def test_ego_graphs():
    graphs = ego_graphs(50, seed=0)
    assert _edges(graphs) == _edges(ego_graphs(50, seed=0))
    sizes = [g.number_of_nodes() for g in graphs]
    assert min(sizes) >= 4 and max(sizes) <= 18 and np.median(sizes) <= 8     # heavy-tailed, mostly small
    for g in graphs:
        assert max(d for _, d in g.degree()) == g.number_of_nodes() - 1       # the ego sees everyone
    assert sum(sum(nx.triangles(g).values()) > 0 for g in graphs) > 10           # clustered, not just stars


def test_splits():
    gdss = split_indices(100, "gdss")
    assert gdss["test"] == list(range(20)) and gdss["train"] == list(range(20, 100)) and gdss["val"] == []
    spectre = split_indices(200, "spectre", seed=5)
    assert [len(spectre[k]) for k in ("train", "val", "test")] == [128, 32, 40]
    assert sorted(spectre["train"] + spectre["val"] + spectre["test"]) == list(range(200))
    assert spectre == split_indices(200, "spectre", seed=5) != split_indices(200, "spectre", seed=6)
    with pytest.raises(ValueError, match="allowed: gdss, spectre"):
        split_indices(10, "random")


# -- dense conversions --------------------------------------------------------------------------


def test_graphs_dense_round_trip():
    graphs = [nx.path_graph(3), nx.complete_graph(4), nx.empty_graph(2)]
    dense = graphs_to_dense(graphs, max_nodes=5, max_feat_num=4)
    assert dense["x"].shape == (3, 5, 4) and dense["adj"].shape == (3, 5, 5) and dense["mask"].shape == (3, 5)
    assert dense["mask"].sum(1).tolist() == [3, 4, 2]
    assert torch.equal(dense["adj"], dense["adj"].transpose(1, 2))
    # one-hot degree (GDSS init: deg), zero rows on padding
    assert dense["x"][0, :3].argmax(-1).tolist() == [1, 2, 1] and dense["x"][0, 3:].abs().sum() == 0
    assert dense["x"][1, :4].argmax(-1).tolist() == [3, 3, 3, 3]
    back = dense_to_graphs(dense["adj"], dense["mask"])
    assert [g.number_of_nodes() for g in back] == [3, 4, 2] and _edges(back) == _edges(graphs)
    assert [g.number_of_nodes() for g in dense_to_graphs(dense["adj"], dense["mask"], drop_isolated=True)] == [3, 4, 1]
    with pytest.raises(ValueError, match="max_feat_num=3"):
        graphs_to_dense(graphs, max_feat_num=3)
    with pytest.raises(ValueError, match="max_nodes=3"):
        graphs_to_dense(graphs, max_nodes=3)
    data = graphs_to_pyg(graphs)
    assert [d.num_nodes for d in data] == [3, 4, 2] and [d.edge_index.shape[1] for d in data] == [4, 12, 0]


def test_molecules_dense_round_trip():
    graphs, _ = smiles_to_graphs(["C#N", "O=[N+]([O-])c1ccccc1", "CCO"])
    vocab = ["C", "N", "N+", "O", "O-"]
    dense = mol_graphs_to_dense(graphs, vocab, max_nodes=12)
    assert dense["x"].shape == (3, 12, 5) and dense["adj"].max() == 3            # the triple bond
    channels = bond_channels(dense["adj"])
    assert channels.shape == (3, 4, 12, 12) and torch.all(channels.sum(1) == 1)
    back = dense_to_mol_graphs(dense["x"], dense["adj"], vocab, dense["mask"])
    assert [graph_smiles(g) for g in back] == [graph_smiles(g) for g in graphs]
    # noisy values are quantised like GDSS's quantize_mol
    noisy = dense_to_mol_graphs(dense["x"] * 0.9, dense["adj"] + 0.3 * (dense["adj"] > 0), vocab, dense["mask"])
    assert [graph_smiles(g) for g in noisy] == [graph_smiles(g) for g in graphs]
    with pytest.raises(ValueError, match=r"atom token\(s\) \['O-'\] not in the vocabulary"):
        mol_graphs_to_dense(graphs, ["C", "N", "N+", "O"])


def test_dataset_factories_and_info():
    data = DATASETS["community_small"]()
    info = json.loads(json.dumps(data.info))              # JSON-able (saved in checkpoints)
    assert info["kind"] == "graph" and info["splits"] == {"train": 80, "val": 0, "test": 20}
    assert info["max_nodes"] == 20 and data.train.tensors["x"].shape[-1] == info["max_feat_num"]
    assert sum(info["node_count_hist"]) == 80
    item = data.train[0]
    assert set(item) == {"x", "adj", "mask"} and item["adj"].shape == (20, 20)
    assert _edges(train_graphs(info)) == _edges(data.train.graphs)     # rebuilt for novelty
    planar = DATASETS["planar"](num_graphs=20)
    assert planar.info["validity"] == "planar" and planar.info["splits"] == {"train": 13, "val": 3, "test": 4}


def test_embedded_molecules():
    with pytest.warns(UserWarning, match="skipped 8 invalid SMILES"):   # RDKit's NCI file holds 8 bad SMILES
        graphs, bad = load_nci()
    assert bad == 8 and 4500 < len(graphs) < 4800
    assert max(g.number_of_nodes() for g in graphs) <= 38
    assert {d[ATOM].rstrip("+-") for g in graphs for _, d in g.nodes(data=True)} <= {
        "C", "N", "O", "F", "P", "S", "Cl", "Br", "I"}
    data = DATASETS["nci"](limit=200)
    assert data.info["kind"] == "molecule" and data.info["splits"]["test"] == 20
    assert data.train.tensors["x"].shape[-1] == len(data.info["atom_types"])


def test_shared_location_error(monkeypatch, tmp_path):
    monkeypatch.setenv("POLYDIFF_SHARED", str(tmp_path / "nowhere"))
    assert shared_dir() == tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=r"expected .*nowhere/data/qm9/qm9_sample20k.csv\. Set POLYDIFF_SHARED"):
        load_qm9()


# -- shared data (counts from shared/data/README.md) ---------------------------------------------


@needs_shared
@pytest.mark.parametrize("name, count, nodes, edges", [
    ("community_small", 100, (12, 20, 15.28), (21, 60, 35.15)),
    ("ego_small", 200, (4, 17, 6.41), (3, 66, 8.70)),
    ("grid", 100, (110, 361, 216.39), (199, 684, 403.33)),
    ("enzymes", 587, (10, 125, 33.03), (16, 149, 63.27)),
])
def test_gdss_graph_sets(name, count, nodes, edges):
    graphs = load_gdss_graphs(name)
    assert len(graphs) == count
    n = [g.number_of_nodes() for g in graphs]
    e = [g.number_of_edges() for g in graphs]
    assert (min(n), max(n), round(float(np.mean(n)), 2)) == nodes
    assert (min(e), max(e), round(float(np.mean(e)), 2)) == edges
    if name == "enzymes":
        # (GDSS's ENZYMES.pkl stores graph label 4 on every graph; node labels are 1..3)
        assert {g.graph["label"] for g in graphs} <= set(range(1, 7))
        assert {d["label"] for g in graphs for _, d in g.nodes(data=True)} == {1, 2, 3}


@needs_shared
def test_gdss_split_keeps_file_order():
    data = DATASETS["gdss_community_small"]()
    graphs = load_gdss_graphs("community_small")
    assert data.info["splits"] == {"train": 80, "val": 0, "test": 20}
    assert _edges(data.test.graphs) == _edges(graphs[:20]) and _edges(data.train.graphs) == _edges(graphs[20:])


@needs_shared
def test_spectre_community():
    graphs = load_spectre_community()
    e = [g.number_of_edges() for g in graphs]
    n = [g.number_of_nodes() for g in graphs]
    assert len(graphs) == 100 and (min(n), max(n)) == (12, 20)
    assert (min(e), max(e), round(float(np.mean(e)), 2)) == (21, 61, 37.01)


@needs_shared
def test_molecule_files():
    smiles, _ = read_smiles_column(shared_file("data", "qm9", "qm9_sample20k.csv"))
    assert len(smiles) == 20_000
    all_smiles, _ = read_smiles_column(shared_file("data", "qm9", "qm9_smiles_all_lapool.csv"))
    assert len(all_smiles) == 133_247
    for split in ("val", "test"):
        assert len(read_smiles_column(shared_file("data", "zinc250k", f"zinc250k_chemsmc_{split}.csv"))[0]) == 25_000
    qm9, bad = load_qm9(limit=1000)
    assert bad == 0 and len(qm9) == 1000 and max(g.number_of_nodes() for g in qm9) <= 9
    original, bad = load_zinc250k("original")
    assert bad == 0 and len(original) == 1001 and max(g.number_of_nodes() for g in original) <= 38
    # the full QM9 list holds 510 SMILES RDKit rejects, the first ones before line 5000
    with pytest.warns(UserWarning, match=r"skipped \d+ invalid SMILES of 5000: .*qm9_smiles_all_lapool.csv:\d+"):
        graphs, bad = load_qm9("all", limit=5000)
    assert bad > 0 and len(graphs) + bad == 5000
