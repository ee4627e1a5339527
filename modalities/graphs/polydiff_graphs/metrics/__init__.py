"""Metrics of generated graphs and molecules.

- :mod:`.stats`: degree / clustering / orbit / spectral MMDs with GDSS's kernels;
- :mod:`.mmd`: the kernels (``gaussian_emd`` on 1-D pmfs via CDFs, ``gaussian``) and the biased MMD;
- :mod:`.orbits`: ORCA-equivalent 4-node orbit counts in numpy;
- :mod:`.vun`: validity (planar, SBM), uniqueness and novelty up to isomorphism, V.U.N.;
- :mod:`.sbm`: the SBM block fit and Wald test behind SBM validity (graph-tool-free approximation);
- :mod:`.nspdk`: NSPDK features and MMD;
- :mod:`.molecules`: validity without correction, uniqueness, novelty, NSPDK, FCD, type statistics.
"""

from __future__ import annotations

from collections.abc import Sequence

import networkx as nx

from .mmd import emd_1d, kernel_matrix, mmd
from .molecules import fcd_available, fcd_distance, molecule_metrics, nspdk_view, smiles_of, type_statistics
from .nspdk import nspdk_features, nspdk_mmd
from .orbits import orbit_counts, orbit_vector
from .sbm import fit_blocks, is_sbm_graph, sbm_p_value
from .stats import (
    METHODS,
    clustering_histogram,
    clustering_mmd,
    degree_histogram,
    degree_mmd,
    graph_mmds,
    orbit_mmd,
    spectral_histogram,
    spectral_mmd,
)
from .vun import VALIDITY, is_planar_graph, novelty, uniqueness, vun


def graph_metrics(graphs: Sequence[nx.Graph], reference: Sequence[nx.Graph], train: Sequence[nx.Graph] | None = None,
                  validity: str | None = None, methods: Sequence[str] = METHODS) -> dict[str, float]:
    """MMDs against ``reference`` plus uniqueness / novelty (with ``train``) and V.U.N. (with ``validity``),
    ``nodes_mean`` / ``edges_mean`` and ``empty_frac``: the share of generated graphs with no nodes, which the
    MMDs leave out (GDSS's convention), so that a model emitting empty graphs is seen."""
    if not graphs:
        raise ValueError("graph_metrics needs at least one generated graph")
    out = graph_mmds(reference, graphs, methods)
    out.update(vun(graphs, train, validity))
    out["nodes_mean"] = sum(g.number_of_nodes() for g in graphs) / len(graphs)
    out["edges_mean"] = sum(g.number_of_edges() for g in graphs) / len(graphs)
    out["empty_frac"] = sum(g.number_of_nodes() == 0 for g in graphs) / len(graphs)
    return {k: float(v) for k, v in out.items()}


__all__ = [
    "METHODS", "VALIDITY", "clustering_histogram", "clustering_mmd", "degree_histogram", "degree_mmd", "emd_1d",
    "fcd_available", "fcd_distance", "fit_blocks", "graph_metrics", "graph_mmds", "is_planar_graph", "is_sbm_graph",
    "kernel_matrix", "mmd", "molecule_metrics", "novelty", "nspdk_features", "nspdk_mmd", "nspdk_view",
    "orbit_counts", "orbit_mmd", "orbit_vector", "sbm_p_value", "smiles_of", "spectral_histogram", "spectral_mmd",
    "type_statistics", "uniqueness", "vun",
]
