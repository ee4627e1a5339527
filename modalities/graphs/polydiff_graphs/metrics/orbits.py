"""Node orbit counts of graphlets up to 4 nodes (15 orbits, Przulj numbering), ORCA-equivalent.

ORCA (Hočevar & Demšar, *Bioinformatics* 2014) counts, for every node, in how many induced
connected 2-, 3- and 4-node subgraphs it occupies each automorphism orbit. GDSS's orbit MMD
feeds it the per-graph mean of these counts. This is our own pure-numpy counter:

1. cheap *non-induced* counts per node (paths, stars, 4-cycles, paws, diamonds, cliques with the
   node at a given position) from powers of the adjacency matrix, degrees and per-edge triangle
   counts; only K4 needs a per-node look at the neighbourhood (triangles among the neighbours);
2. each non-induced count is the sum, over the induced graphlets that contain the pattern as a
   spanning subgraph, of the number of copies times the induced orbit count; that linear system
   is triangular in the number of edges, so the 15 induced orbits follow by back-substitution.

The multiplicities (how many spanning P4 / claws / C4 / paws / diamonds each graphlet holds,
with the node at each position) were derived by hand; the docstring of :func:`orbit_counts`
lists them. Work is O(n^3) dense linear algebra plus sum_v deg(v)^3 for K4: a few ms for
graphs of a few hundred nodes.

Orbits: 0 degree; 1/2 end/middle of an induced 3-path; 3 triangle; 4/5 end/inner of a 4-path;
6/7 leaf/centre of a claw; 8 4-cycle; 9/10/11 pendant / degree-2 / degree-3 node of a paw;
12/13 degree-2 / degree-3 node of a diamond; 14 K4.
"""

from __future__ import annotations

import networkx as nx
import numpy as np

NUM_ORBITS = 15


def _adjacency(graph: nx.Graph) -> np.ndarray:
    """Dense symmetric 0/1 float adjacency in ``sorted(graph)`` order, self-loops dropped."""
    nodes = sorted(graph.nodes()) if _sortable(graph) else list(graph.nodes())
    a = nx.to_numpy_array(nx.Graph(graph), nodelist=nodes, dtype=np.float64, weight=None)
    a = ((a + a.T) > 0).astype(np.float64)
    np.fill_diagonal(a, 0.0)
    return a


def _sortable(graph: nx.Graph) -> bool:
    try:
        sorted(graph.nodes())
    except TypeError:
        return False
    return True


def _choose2(x: np.ndarray) -> np.ndarray:
    return x * (x - 1) / 2


def orbit_counts_from_adjacency(a: np.ndarray) -> np.ndarray:
    """(n, 15) int64 orbit counts of the simple graph with 0/1 adjacency ``a`` (see module doc)."""
    a = np.asarray(a, dtype=np.float64)
    n = a.shape[0]
    out = np.zeros((n, NUM_ORBITS), dtype=np.int64)
    if n == 0:
        return out
    d = a.sum(1)
    a2 = a @ a                      # common neighbours of every pair
    t = a2 * a                      # triangles through each edge
    tri = t.sum(1) / 2              # triangles at each node (orbit 3)

    # non-induced counts with the node at a given position
    k4 = np.zeros(n)
    for v in range(n):
        nb = np.flatnonzero(a[v])
        if len(nb) >= 3:
            s = a[np.ix_(nb, nb)]
            k4[v] = np.sum((s @ s) * s) / 6
    dia3 = (a * _choose2(a2)).sum(1)                         # v and a neighbour share two others
    dia2 = ((a @ (a * (a2 - 1))) * a).sum(1) / 2             # v's triangle (v,x,y) + another common nb of x,y
    paw3 = tri * (d - 2)                                     # v in a triangle plus a pendant at v
    paw2 = (t * (d - 2)[None, :]).sum(1)                     # pendant at another triangle corner
    pawp = a @ tri - t.sum(1)                                # v hangs on a triangle not containing v
    off = a2.copy()
    np.fill_diagonal(off, 0.0)
    c4 = _choose2(off).sum(1)                                # 4-cycles through v
    claw_c = d * (d - 1) * (d - 2) / 6
    claw_l = a @ _choose2(d - 1)
    p4_end = a @ (a @ (d - 1)) - d * (d - 1) - 2 * tri
    p4_mid = (d - 1) * (a @ (d - 1)) - 2 * tri

    o = np.zeros((n, NUM_ORBITS))
    o[:, 0] = d
    o[:, 3] = tri
    o[:, 2] = _choose2(d) - tri
    o[:, 1] = a @ (d - 1) - 2 * tri
    o[:, 14] = k4
    o[:, 13] = dia3 - 3 * k4
    o[:, 12] = dia2 - 3 * k4
    o[:, 11] = paw3 - 2 * o[:, 13] - 3 * k4
    o[:, 10] = paw2 - 2 * o[:, 13] - 2 * o[:, 12] - 6 * k4
    o[:, 9] = pawp - 2 * o[:, 12] - 3 * k4
    o[:, 8] = c4 - o[:, 12] - o[:, 13] - 3 * k4
    o[:, 7] = claw_c - o[:, 11] - o[:, 13] - k4
    o[:, 6] = claw_l - o[:, 9] - o[:, 10] - 2 * o[:, 12] - o[:, 13] - 3 * k4
    o[:, 5] = p4_mid - 2 * o[:, 8] - o[:, 10] - 2 * o[:, 11] - 2 * o[:, 12] - 4 * o[:, 13] - 6 * k4
    o[:, 4] = p4_end - 2 * o[:, 8] - 2 * o[:, 9] - o[:, 10] - 4 * o[:, 12] - 2 * o[:, 13] - 6 * k4
    out[:] = np.rint(o).astype(np.int64)
    return out


def orbit_counts(graph: nx.Graph) -> np.ndarray:
    """(n, 15) int64 ORCA node-orbit counts (graphlets up to 4 nodes), rows in sorted node order.

    Multiplicities used (spanning copies in each induced graphlet, per node position):
    K4 holds 12 P4 (each node end 6 / inner 6), 4 claws (centre 1 / leaf 3), 3 C4, 12 paws
    (pendant 3 / degree-2 6 / degree-3 3) and 6 diamonds (degree-2 3 / degree-3 3). A diamond
    (degree-3 pair a, b; degree-2 pair c, d) holds 6 P4 (ends: c 4, a 2; inner: c 2, a 4),
    2 claws (a: centre 1 + leaf 1; c: leaf 2), 1 C4, 4 paws (a: degree-3 2 + degree-2 2; c:
    pendant 2 + degree-2 2). A paw (centre a, triangle a b c, pendant d) holds 2 P4 (ends: d 2,
    b 1; inner: a 2, b 1) and 1 claw (centre a). A C4 holds 4 P4 (each node end 2 / inner 2).
    """
    return orbit_counts_from_adjacency(_adjacency(graph))


def orbit_vector(graph: nx.Graph) -> np.ndarray:
    """Per-graph orbit feature of GDSS's orbit MMD: counts summed over nodes divided by n."""
    n = graph.number_of_nodes()
    if n == 0:
        return np.zeros(NUM_ORBITS)
    return orbit_counts(graph).sum(0) / n
