"""Graph MMDs, kernels and orbit counts: hand-computed cases, a brute-force orbit oracle, the
optional orbit-count package, and the golden values computed with GDSS's own code."""

from __future__ import annotations

import itertools
import json
import math

import networkx as nx
import numpy as np
import pytest

from polydiff.plugin import shared_dir
from polydiff_graphs.data import graphs_from_json
from polydiff_graphs.metrics import (
    clustering_histogram,
    clustering_mmd,
    degree_mmd,
    emd_1d,
    graph_mmds,
    mmd,
    orbit_counts,
    orbit_mmd,
    orbit_vector,
    spectral_histogram,
    spectral_mmd,
)

FIXTURE = shared_dir() / "fixtures" / "graph_mmd"


def needs_fixture(test):
    """Mark a test as needing ../shared (the golden fixture) and skip it when absent."""
    skip = pytest.mark.skipif(not FIXTURE.is_dir(), reason=f"golden fixture folder {FIXTURE} not found "
                                                          "(set POLYDIFF_SHARED to the shared folder)")
    return skip(pytest.mark.shared(test))


def _brute_force_orbits(g: nx.Graph) -> np.ndarray:
    """Orbit counts by enumerating every connected induced 2-, 3- and 4-node subgraph."""
    nodes = sorted(g)
    row = {v: i for i, v in enumerate(nodes)}
    out = np.zeros((len(nodes), 15), dtype=np.int64)
    for v in nodes:
        out[row[v], 0] = g.degree(v)
    for trio in itertools.combinations(nodes, 3):
        h = g.subgraph(trio)
        if h.number_of_edges() == 3:
            for v in trio:
                out[row[v], 3] += 1
        elif h.number_of_edges() == 2:
            for v in trio:
                out[row[v], 2 if h.degree(v) == 2 else 1] += 1
    orbit = {("P4", 1): 4, ("P4", 2): 5, ("claw", 1): 6, ("claw", 3): 7, ("C4", 2): 8, ("paw", 1): 9,
             ("paw", 2): 10, ("paw", 3): 11, ("diamond", 2): 12, ("diamond", 3): 13, ("K4", 3): 14}
    for quad in itertools.combinations(nodes, 4):
        h = g.subgraph(quad)
        if not nx.is_connected(h):
            continue
        degs = sorted(d for _, d in h.degree())
        kind = {(1, 1, 2, 2): "P4", (1, 1, 1, 3): "claw", (2, 2, 2, 2): "C4", (1, 2, 2, 3): "paw",
                (2, 2, 3, 3): "diamond", (3, 3, 3, 3): "K4"}[tuple(degs)]
        for v in quad:
            out[row[v], orbit[(kind, h.degree(v))]] += 1
    return out


# -- kernels and the estimator ------------------------------------------------------------------


def test_emd_1d_is_the_transport_cost():
    assert emd_1d(np.array([1.0, 0, 0]), np.array([0, 0, 1.0])) == pytest.approx(2.0)
    assert emd_1d(np.array([0.5, 0.5]), np.array([0, 0, 1.0]), distance_scaling=2) == pytest.approx(0.75)
    # zero padding: [1] is the same pmf as [1, 0, 0]
    assert emd_1d(np.array([1.0]), np.array([1.0, 0, 0])) == 0.0


def test_mmd_is_the_biased_v_statistic():
    x, y = [np.array([0.0]), np.array([1.0])], [np.array([3.0])]
    k = lambda a, b: math.exp(-((a - b) ** 2) / 2)  # noqa: E731
    want = (k(0, 0) + 2 * k(0, 1) + k(1, 1)) / 4 + 1 - 2 * (k(0, 3) + k(1, 3)) / 2
    assert mmd(x, y, kernel="gaussian", sigma=1.0, is_hist=False) == pytest.approx(want, abs=1e-15)


def test_identical_sets_have_zero_mmd():
    graphs = [nx.cycle_graph(5), nx.star_graph(4), nx.complete_graph(4)]
    out = graph_mmds(graphs, list(graphs))
    assert out == {"degree": 0.0, "cluster": 0.0, "orbit": 0.0, "spectral": 0.0}


def test_triangle_vs_path_by_hand():
    tri, path = [nx.complete_graph(3)], [nx.path_graph(3)]
    # degree pmfs [0,0,1] vs [0,2/3,1/3]: CDF gap 2/3 -> EMD 2/3, sigma 1
    assert degree_mmd(tri, path) == pytest.approx(2 - 2 * math.exp(-(2 / 3) ** 2 / 2), abs=1e-15)
    # clustering: all 1.0 (last, closed bin 99) vs all 0.0 (bin 0): EMD 99/100, sigma 0.1
    assert clustering_histogram(tri[0])[99] == 3 and clustering_histogram(path[0])[0] == 3
    assert clustering_mmd(tri, path) == pytest.approx(2 - 2 * math.exp(-0.99 ** 2 / 0.02), abs=1e-15)
    # orbit vectors: triangle [2,0,0,1,0..], path [4/3, 2/3, 1/3, 0..] -> plain Gaussian, sigma 30
    d2 = (2 - 4 / 3) ** 2 + (2 / 3) ** 2 + (1 / 3) ** 2 + 1
    assert orbit_mmd(tri, path) == pytest.approx(2 - 2 * math.exp(-d2 / 1800), abs=1e-15)


def test_clustering_histogram_uses_numpy_bin_edges():
    # node 0 has 3 of its 6 neighbour pairs linked: clustering exactly 0.5, on a bin edge, which
    # numpy puts in the upper bin (50); the golden tests cover the many other edge values
    h = nx.Graph([(0, 1), (0, 2), (0, 3), (1, 2), (2, 3), (1, 3), (0, 4)])
    hist = clustering_histogram(h)
    assert nx.clustering(h)[0] == pytest.approx(0.5) and hist[50] == 1 and hist[49] == 0
    assert hist.sum() == h.number_of_nodes()


def test_spectral_histogram_of_an_edge():
    hist = spectral_histogram(nx.path_graph(2))  # normalised Laplacian eigenvalues 0 and 2
    assert hist[0] == 1 and hist[199] == 1 and hist.sum() == 2
    assert spectral_mmd([nx.path_graph(2)], [nx.path_graph(2)]) == 0.0


def test_empty_generated_graphs_are_dropped():
    ref = [nx.cycle_graph(4)]
    assert degree_mmd(ref, [nx.cycle_graph(4), nx.Graph()]) == 0.0
    assert math.isnan(degree_mmd(ref, [nx.Graph()]))


def test_directed_multigraph_and_empty_reference_graphs_are_refused():
    """A directed triangle against an undirected one gave clustering and spectral MMD 2 and
    degree and orbit 0 (each descriptor read it by another convention)."""
    tri = nx.cycle_graph(3)
    for bad in (nx.DiGraph(tri), nx.MultiGraph(tri)):
        for fn in (degree_mmd, graph_mmds):
            with pytest.raises(ValueError, match=f"generated graph 1 is a {type(bad).__name__}"):
                fn([tri], [tri, bad])
    with pytest.raises(ValueError, match="reference graph 1 has no nodes"):
        degree_mmd([tri, nx.Graph()], [tri])


# -- orbit counts -------------------------------------------------------------------------------


def test_orbit_counts_of_small_named_graphs():
    assert orbit_counts(nx.complete_graph(3)).tolist() == [[2, 0, 0, 1] + [0] * 11] * 3
    assert orbit_counts(nx.cycle_graph(4)).tolist() == [[2, 2, 1, 0, 0, 0, 0, 0, 1] + [0] * 6] * 4
    star = orbit_counts(nx.star_graph(4))
    assert star[0].tolist() == [4, 0, 6, 0, 0, 0, 0, 4] + [0] * 7
    assert star[1].tolist() == [1, 3, 0, 0, 0, 0, 3] + [0] * 8
    assert orbit_counts(nx.complete_graph(4)).tolist() == [[3, 0, 0, 3] + [0] * 10 + [1]] * 4
    assert orbit_vector(nx.star_graph(4)).tolist() == pytest.approx([1.6, 2.4, 1.2, 0, 0, 0, 2.4, 0.8] + [0] * 7)
    assert orbit_counts(nx.Graph()).shape == (0, 15)


def test_orbit_counts_match_brute_force_enumeration():
    rng = np.random.default_rng(0)
    for i in range(40):
        n, p = int(rng.integers(1, 10)), float(rng.random())
        g = nx.gnp_random_graph(n, p, seed=i)
        g.add_edge(0, 0)  # self-loops are ignored
        g.remove_edge(0, 0)
        np.testing.assert_array_equal(orbit_counts(g), _brute_force_orbits(g), err_msg=f"graph {i}")


def test_orbit_counts_match_the_orbit_count_package():
    orbit_count = pytest.importorskip("orbit_count", reason="optional extra 'orbit' (orbit-count, GPL-3) not installed")
    rng = np.random.default_rng(1)
    for i in range(30):
        n = int(rng.integers(2, 60))
        g = nx.gnp_random_graph(n, float(rng.uniform(0.05, 0.9)), seed=100 + i)
        if g.number_of_edges() == 0:
            continue
        ref = orbit_count.node_orbit_counts(g, graphlet_size=4)
        np.testing.assert_array_equal(orbit_counts(g), ref, err_msg=f"graph {i}")


# -- golden values from GDSS's own evaluation code ------------------------------------------------


@pytest.fixture(scope="module")
def golden():
    with (FIXTURE / "expected.json").open() as f:
        return json.load(f)


@needs_fixture
@pytest.mark.parametrize("case", ["a_community_seed778", "b_barabasi_albert_seed779", "c_cycle_chords_seed780",
                                  "d_reference_vs_itself"])
def test_golden_mmds(golden, case):
    result = golden["results"][case]
    ref = graphs_from_json(FIXTURE / result["reference_file"])
    cand = graphs_from_json(FIXTURE / result["candidate_file"])
    got = graph_mmds(ref, cand)
    for method, want in result["mmd"].items():
        assert got[method] == pytest.approx(want, abs=1e-9, rel=1e-7), method


@needs_fixture
def test_golden_orbit_tables(golden):
    names = json.loads((FIXTURE / "named_small_graphs.json").read_text())["names"]
    graphs = graphs_from_json(FIXTURE / "named_small_graphs.json")
    for name, g in zip(names, graphs):
        table = golden["orbit_table_named_graphs"]["graphs"][name]
        assert orbit_counts(g).tolist() == table["per_node_orbit_counts"], name
        assert orbit_vector(g).tolist() == pytest.approx(table["graph_vector_sum_over_nodes_div_n"], abs=1e-12)


@needs_fixture
def test_golden_orbit_vectors_of_all_64_graphs(golden):
    files = {"reference": "reference_community_seed777.json"}
    files.update({k: v["candidate_file"] for k, v in golden["results"].items() if k != "d_reference_vs_itself"})
    count = 0
    for key, vectors in golden["orbit_feature_vectors"]["sets"].items():
        graphs = graphs_from_json(FIXTURE / files[key])
        assert len(graphs) == len(vectors) == 16
        for g, want in zip(graphs, vectors):
            np.testing.assert_allclose(orbit_vector(g), want, rtol=0, atol=1e-12)
            count += 1
    assert count == 64

