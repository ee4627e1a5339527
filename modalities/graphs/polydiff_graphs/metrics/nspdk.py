"""NSPDK features and MMD (Costa & De Grave, *ICML* 2010), as used by GDSS for molecules.

The Neighbourhood Subgraph Pairwise Distance Kernel counts pairs of rooted neighbourhood
subgraphs of radius r whose roots lie at distance d, for all r <= R and d <= D. GDSS (after
GraphGen) calls EDeN's ``vectorize(graphs, complexity=4, discrete=True)`` (R = D = 4), takes a
linear kernel between the normalised sparse vectors and reports the biased MMD. EDeN is GPL and
unmaintained, so this is our own implementation of the same feature map:

- edges carry labels too: EDeN turns every edge into a vertex (distances double), so the shell
  of a root at expanded distance 2k holds the nodes at graph distance k and the shell at 2k + 1
  the edges whose nearer end is at distance k. We compute those shells directly from a BFS on
  the original graph;
- a neighbourhood of radius r is identified by EDeN's discrete approximation: the running hash
  of the shells 0..2r, each shell hashed as the sorted multiset of (label, degree) of its
  members (an edge-vertex has degree 2); a radius is used only when the neighbourhood reaches it;
- for a root v, every node u at distance d (d = 0..D) and every radius r: one *pair* feature
  hash(sorted(h_r(v), h_r(u)), r, d) and one *context* feature hash(h_r(u), r, d), each + 1;
- features are normalised to unit L2 norm within each (r, d) block, then the whole vector.

Deviations from EDeN: labels are hashed with CRC32 (EDeN uses Python's per-process string
hash) and feature ids keep 64 bits instead of EDeN's 2^16 buckets (``nbits=16`` there), so
there are no hash collisions; values in colliding buckets are summed where EDeN's inner
normalisation overwrites. Kernel values therefore agree with EDeN up to its collision noise.

With a linear kernel the biased MMD is ``||mean(phi(x)) - mean(phi(y))||^2``, computed exactly
in O(total features).
"""

from __future__ import annotations

import math
import zlib
from collections import defaultdict
from collections.abc import Hashable, Sequence

import networkx as nx

_MASK = (1 << 64) - 1


def _h(*items: int) -> int:
    """Deterministic 64-bit hash of a tuple of ints (tuple hashing of ints is not salted)."""
    return hash(items) & _MASK


def label_hash(label: Hashable) -> int:
    """Stable hash of a node or edge label (its repr)."""
    return zlib.crc32(repr(label).encode())


def _shell_hashes(graph: nx.Graph, root: int, depth: int, nlab: list[int], elab: dict) -> list[int]:
    """Running hashes of the expanded-graph shells 0..2*depth around ``root`` (see module doc)."""
    dist = {root: 0}
    frontier = [root]
    for k in range(1, depth + 1):
        nxt = []
        for x in frontier:
            for y in graph[x]:
                if y not in dist:
                    dist[y] = k
                    nxt.append(y)
        frontier = nxt
        if not nxt:
            break
    shells: dict[int, list[int]] = defaultdict(list)
    for x, k in dist.items():
        shells[2 * k].append(_h(nlab[x], graph.degree(x)))
        for y in graph[x]:
            ky = dist.get(y, k + 1)
            if (ky > k or (ky == k and x < y)) and k < depth:
                shells[2 * k + 1].append(_h(elab[(x, y) if x < y else (y, x)], 2))
    running, out = 0xAAAAAAAA, []
    for i in range(2 * depth + 1):
        if i not in shells:
            break
        running ^= _h(running, _h(*sorted(shells[i])), i)
        out.append(running)
    return out


def nspdk_features(graph: nx.Graph, radius: int = 4, distance: int = 4, node_label: str = "label",
                   edge_label: str = "label") -> dict[int, float]:
    """Sparse NSPDK feature vector ``{feature id: value}`` of one graph (unit norm; empty for no nodes).

    Labels are read from the ``node_label`` / ``edge_label`` attributes (missing: one constant label).
    """
    index = {v: i for i, v in enumerate(graph.nodes())}
    nlab = [label_hash(d.get(node_label)) for _, d in graph.nodes(data=True)]
    elab = {}
    g = nx.Graph()
    g.add_nodes_from(range(len(index)))
    for u, v, d in graph.edges(data=True):
        i, j = sorted((index[u], index[v]))
        if i != j:
            g.add_edge(i, j)
            elab[(i, j)] = label_hash(d.get(edge_label))
    depth = max(radius, distance)
    hashes = {v: _shell_hashes(g, v, depth, nlab, elab) for v in g}
    blocks: dict[tuple[int, int], dict[int, float]] = defaultdict(lambda: defaultdict(float))
    for v in g:
        hv = hashes[v]
        dist = nx.single_source_shortest_path_length(g, v, cutoff=distance)
        for u, d in dist.items():
            hu = hashes[u]
            for r in range(radius + 1):
                i = 2 * r
                if i >= len(hv) or i >= len(hu):
                    break
                a, b = sorted((hv[i], hu[i]))
                block = blocks[(r, d)]
                block[_h(a, b, i, 2 * d, 1)] += 1.0
                block[_h(hu[i], i, 2 * d, 2)] += 1.0
    vec: dict[int, float] = defaultdict(float)
    for block in blocks.values():
        norm = math.sqrt(sum(x * x for x in block.values()))
        for f, x in block.items():
            vec[f] += x / norm
    total = math.sqrt(sum(x * x for x in vec.values()))
    return {f: x / total for f, x in vec.items()} if total > 0 else {}


def _mean_vector(features: Sequence[dict[int, float]]) -> dict[int, float]:
    out: dict[int, float] = defaultdict(float)
    for vec in features:
        for f, x in vec.items():
            out[f] += x / len(features)
    return out


def nspdk_mmd(graphs1: Sequence[nx.Graph], graphs2: Sequence[nx.Graph], radius: int = 4, distance: int = 4,
              node_label: str = "label", edge_label: str = "label") -> float:
    """Biased MMD with the linear NSPDK kernel: ``||mean phi(G1) - mean phi(G2)||^2`` (GDSS's NSPDK MMD)."""
    if not graphs1 or not graphs2:
        raise ValueError(f"NSPDK MMD needs two non-empty sets, got {len(graphs1)} and {len(graphs2)} graphs")
    opts = {"radius": radius, "distance": distance, "node_label": node_label, "edge_label": edge_label}
    m1 = _mean_vector([nspdk_features(g, **opts) for g in graphs1])
    m2 = _mean_vector([nspdk_features(g, **opts) for g in graphs2])
    keys = set(m1) | set(m2)
    return float(sum((m1.get(k, 0.0) - m2.get(k, 0.0)) ** 2 for k in keys))
