"""Validity, uniqueness and novelty of generated graphs (SPECTRE / DiGress V.U.N.).

Definitions follow DiGress's ``eval_fraction_unique_non_isomorphic_valid``: walk the generated
graphs in order; a graph is a *duplicate* if it is isomorphic to an earlier generated one; a
first occurrence is *novel* if it is isomorphic to no training graph, and counts towards V.U.N.
when it is also valid. All fractions are over ALL generated graphs. Isomorphism tests are
bucketed by Weisfeiler-Lehman hash (different hashes imply non-isomorphic graphs) and confirmed
with ``nx.is_isomorphic``.

Validity: planar = connected and planar; sbm = :func:`.sbm.is_sbm_graph`. Unlike DiGress's
``if 'sbm' or 'planar' in metrics_list`` (always true), the validity test is chosen explicitly.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from collections.abc import Callable, Sequence

import networkx as nx

from .sbm import is_sbm_graph


def is_planar_graph(graph: nx.Graph) -> bool:
    """SPECTRE planar validity: non-empty, connected and planar."""
    return graph.number_of_nodes() > 0 and nx.is_connected(graph) and nx.check_planarity(graph)[0]


VALIDITY: dict[str, Callable[[nx.Graph], bool]] = {"planar": is_planar_graph, "sbm": is_sbm_graph}


def wl_hash(graph: nx.Graph, iterations: int = 3) -> str:
    """Isomorphism-invariant bucket key: node and edge counts plus the WL hash of the structure."""
    plain = nx.Graph()
    plain.add_nodes_from(graph.nodes())
    plain.add_edges_from(graph.edges())
    with warnings.catch_warnings():  # networkx >= 3.5 warns that unlabelled hashes changed; ours stay in-process
        warnings.simplefilter("ignore", UserWarning)
        digest = nx.weisfeiler_lehman_graph_hash(plain, iterations=iterations)
    return f"{plain.number_of_nodes()}:{plain.number_of_edges()}:{digest}"


class IsomorphismIndex:
    """A set of graphs up to isomorphism, with WL-hash buckets."""

    def __init__(self, graphs: Sequence[nx.Graph] = ()) -> None:
        self._buckets: dict[str, list[nx.Graph]] = defaultdict(list)
        for g in graphs:
            self.add(g)

    def find(self, graph: nx.Graph, key: str | None = None) -> bool:
        """Whether an isomorphic graph is already in the set."""
        key = key or wl_hash(graph)
        return any(nx.is_isomorphic(graph, other) for other in self._buckets.get(key, ()))

    def add(self, graph: nx.Graph, key: str | None = None) -> None:
        """Index ``graph`` under its WL hash (or ``key`` when the caller has computed it)."""
        self._buckets[key or wl_hash(graph)].append(graph)


def uniqueness(graphs: Sequence[nx.Graph]) -> float:
    """Fraction of generated graphs not isomorphic to an earlier generated one."""
    if not graphs:
        return float("nan")
    seen, unique = IsomorphismIndex(), 0
    for g in graphs:
        key = wl_hash(g)
        if not seen.find(g, key):
            seen.add(g, key)
            unique += 1
    return unique / len(graphs)


def novelty(graphs: Sequence[nx.Graph], train: Sequence[nx.Graph]) -> float:
    """Fraction of generated graphs isomorphic to no training graph."""
    if not graphs:
        return float("nan")
    index = IsomorphismIndex(train)
    return sum(not index.find(g) for g in graphs) / len(graphs)


def vun(graphs: Sequence[nx.Graph], train: Sequence[nx.Graph] | None = None,
        validity: str | Callable[[nx.Graph], bool] | None = None) -> dict[str, float]:
    """``valid``, ``unique``, ``novel``, ``unique_novel`` and ``vun`` fractions over all generated graphs.

    ``validity`` is ``"planar"``, ``"sbm"``, a callable or None (then only uniqueness/novelty);
    without ``train`` novelty is not computed.
    """
    if isinstance(validity, str):
        if validity not in VALIDITY:
            raise ValueError(f"unknown validity test {validity!r}; allowed: {', '.join(VALIDITY)}")
        validity = VALIDITY[validity]
    n = len(graphs)
    if n == 0:
        raise ValueError("vun needs at least one generated graph")
    seen, train_index = IsomorphismIndex(), IsomorphismIndex(train or ())
    dup = iso = vun_count = valid = 0
    for g in graphs:
        ok = bool(validity(g)) if validity is not None else True
        valid += ok
        key = wl_hash(g)
        if seen.find(g, key):
            dup += 1
            continue
        seen.add(g, key)
        if train is not None and train_index.find(g, key):
            iso += 1
            continue
        vun_count += ok
    out = {"unique": 1 - dup / n}
    if validity is not None:
        out["valid"] = valid / n
    if train is not None:
        out["novel"] = novelty(graphs, train)
        out["unique_novel"] = (n - dup - iso) / n
        if validity is not None:
            out["vun"] = vun_count / n
    return out
