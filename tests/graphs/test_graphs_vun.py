"""Validity (planar, SBM), uniqueness, novelty and V.U.N. on known valid / invalid graphs."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest

from polydiff_graphs.data import planar_graphs, sbm_graphs
from polydiff_graphs.metrics import fit_blocks, is_planar_graph, is_sbm_graph, novelty, sbm_p_value, uniqueness, vun


def test_planar_validity():
    assert all(is_planar_graph(g) for g in planar_graphs(5, seed=3))
    assert not is_planar_graph(nx.complete_graph(5))                       # Kuratowski
    assert not is_planar_graph(nx.complete_bipartite_graph(3, 3))
    assert not is_planar_graph(nx.disjoint_union(nx.cycle_graph(3), nx.cycle_graph(3)))  # planar, disconnected
    assert not is_planar_graph(nx.Graph())


def _planted_sbm(sizes, seed, p_in=0.3, p_out=0.005):
    k = len(sizes)
    probs = np.full((k, k), p_out)
    np.fill_diagonal(probs, p_in)
    return nx.stochastic_block_model(list(sizes), probs.tolist(), seed=seed)


def test_sbm_fit_recovers_planted_blocks():
    g = _planted_sbm([25, 30, 35], seed=4)
    labels = fit_blocks(g)
    truth = np.repeat([0, 1, 2], [25, 30, 35])
    # the same partition up to relabelling
    assert len(set(zip(labels.tolist(), truth.tolist()))) == 3
    assert sbm_p_value(g, truth) > 0.9


def test_sbm_validity():
    assert is_sbm_graph(_planted_sbm([25, 30, 35], seed=4))
    assert is_sbm_graph(_planted_sbm([22, 38], seed=7))
    assert not is_sbm_graph(nx.gnp_random_graph(90, 0.1, seed=1))            # one block
    assert not is_sbm_graph(nx.convert_node_labels_to_integers(nx.grid_2d_graph(9, 9)))
    assert not is_sbm_graph(_planted_sbm([25, 30], seed=2, p_in=0.6))        # wrong density
    assert not is_sbm_graph(_planted_sbm([10, 12, 11], seed=5))              # blocks below 20 nodes
    assert 0.0 <= is_sbm_graph(nx.gnp_random_graph(60, 0.1, seed=2), strict=False) <= 1.0


def test_generated_sbm_graphs_are_mostly_valid():
    graphs = sbm_graphs(6, seed=11)
    assert sum(bool(is_sbm_graph(g)) for g in graphs) >= 5


def test_uniqueness_and_novelty_up_to_isomorphism():
    c4 = nx.cycle_graph(4)
    c4_relabelled = nx.relabel_nodes(c4, {0: 10, 1: 12, 2: 11, 3: 13})
    p4 = nx.path_graph(4)
    assert uniqueness([c4, c4_relabelled, p4]) == pytest.approx(2 / 3)
    assert novelty([c4, p4, nx.star_graph(3)], train=[c4_relabelled]) == pytest.approx(2 / 3)
    # WL-equal but non-isomorphic graphs (two triangles vs a hexagon) stay distinct
    two_triangles = nx.disjoint_union(nx.cycle_graph(3), nx.cycle_graph(3))
    assert uniqueness([two_triangles, nx.cycle_graph(6)]) == 1.0


def test_vun_counts_over_all_generated_graphs():
    train = [nx.cycle_graph(5)]
    k5 = nx.complete_graph(5)                          # not planar
    gen = [nx.cycle_graph(5), nx.wheel_graph(6), nx.wheel_graph(6), k5, nx.path_graph(4)]
    out = vun(gen, train, "planar")
    assert out["valid"] == pytest.approx(4 / 5)
    assert out["unique"] == pytest.approx(4 / 5)       # the second wheel is a duplicate
    assert out["novel"] == pytest.approx(4 / 5)        # the 5-cycle is in train
    assert out["unique_novel"] == pytest.approx(3 / 5)
    assert out["vun"] == pytest.approx(2 / 5)          # wheel, path (K5 is invalid)
    # no validity test chosen: no validity-dependent keys (DiGress's `'sbm' or ...` bug avoided)
    assert set(vun(gen, train)) == {"unique", "novel", "unique_novel"}
    assert set(vun(gen)) == {"unique"}
    with pytest.raises(ValueError, match="allowed: planar, sbm"):
        vun(gen, train, "plannar")
