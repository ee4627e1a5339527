"""Graph descriptors and the four MMDs of GDSS's generic-graph evaluation.

Settings follow GDSS ``evaluation/stats.py`` with ``load_eval_settings('community_small')``
(and GraphRNN before it), checked against golden values from GDSS's own code
(``shared/fixtures/graph_mmd``):

==========  ===========================================================  ==============  =====  =======
method      descriptor per graph                                         kernel          sigma  scaling
==========  ===========================================================  ==============  =====  =======
degree      ``nx.degree_histogram`` -> pmf                               gaussian_emd    1      1
cluster     ``np.histogram(clustering, bins=100, range=(0, 1))`` -> pmf   gaussian_emd    0.1    100
orbit       4-node orbit counts summed over nodes / n (no pmf)           gaussian (L2)   30     -
spectral    ``np.histogram(eig(normalised Laplacian), 200, (-1e-5, 2))``  gaussian_emd    1      1
==========  ===========================================================  ==============  =====  =======

Histograms use numpy's own binning: half-open bins, last bin closed, values on an edge go to the
upper bin (many clustering coefficients fall exactly on an edge). Empty generated graphs are
dropped before the MMD, as in GDSS; :func:`~polydiff_graphs.metrics.graph_metrics` reports their
share as ``empty_frac``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import networkx as nx
import numpy as np
import scipy.linalg

from .mmd import mmd
from .orbits import orbit_vector

METHODS = ("degree", "cluster", "orbit", "spectral")


def degree_histogram(graph: nx.Graph) -> np.ndarray:
    """Counts of nodes with degree 0, 1, 2, ..."""
    return np.asarray(nx.degree_histogram(graph), dtype=np.float64)


def clustering_histogram(graph: nx.Graph, bins: int = 100) -> np.ndarray:
    """Histogram of local clustering coefficients on ``bins`` equal bins of [0, 1]."""
    values = list(nx.clustering(graph).values())
    hist, _ = np.histogram(values, bins=bins, range=(0.0, 1.0), density=False)
    return hist.astype(np.float64)


def spectral_histogram(graph: nx.Graph, bins: int = 200) -> np.ndarray:
    """Histogram of the normalised-Laplacian eigenvalues on ``bins`` bins of [-1e-5, 2]."""
    lap = nx.normalized_laplacian_matrix(graph).toarray()
    eigs = scipy.linalg.eigvalsh(lap)
    hist, _ = np.histogram(eigs, bins=bins, range=(-1e-5, 2.0), density=False)
    return hist.astype(np.float64)


def _nonempty(graphs: Sequence[nx.Graph]) -> list[nx.Graph]:
    return [g for g in graphs if g.number_of_nodes() > 0]


def _check_graphs(ref: Sequence[nx.Graph], pred: Sequence[nx.Graph]) -> None:
    """ValueError for graphs the descriptors would read by other conventions: directed graphs and
    multigraphs (the degree would count both directions or parallel edges, clustering and the
    spectrum take directed forms, orbits symmetrise), and reference graphs with no nodes (the
    reference defines the target; generated empty graphs are left out, as GDSS leaves them)."""
    for side, graphs in (("reference", ref), ("generated", pred)):
        for i, g in enumerate(graphs):
            if g.is_directed() or g.is_multigraph():
                raise ValueError(f"{side} graph {i} is a {type(g).__name__}: the MMDs are defined for simple "
                                 "undirected graphs (nx.Graph(g) drops directions and parallel edges)")
    empty = next((i for i, g in enumerate(ref) if g.number_of_nodes() == 0), None)
    if empty is not None:
        raise ValueError(f"reference graph {empty} has no nodes")


def _descriptor_mmd(ref: Sequence[nx.Graph], pred: Sequence[nx.Graph], describe: Callable[[nx.Graph], np.ndarray],
                    **kernel: float | str | bool) -> float:
    _check_graphs(ref, pred)
    pred = _nonempty(pred)
    if not pred:
        return float("nan")
    return mmd([describe(g) for g in ref], [describe(g) for g in pred], **kernel)


def degree_mmd(ref: Sequence[nx.Graph], pred: Sequence[nx.Graph]) -> float:
    """Degree MMD (gaussian_emd, sigma 1)."""
    return _descriptor_mmd(ref, pred, degree_histogram, kernel="gaussian_emd", sigma=1.0)


def clustering_mmd(ref: Sequence[nx.Graph], pred: Sequence[nx.Graph], bins: int = 100) -> float:
    """Clustering MMD (gaussian_emd, sigma 0.1, EMD in units of bins)."""
    return _descriptor_mmd(ref, pred, lambda g: clustering_histogram(g, bins), kernel="gaussian_emd",
                           sigma=0.1, distance_scaling=float(bins))


def orbit_mmd(ref: Sequence[nx.Graph], pred: Sequence[nx.Graph]) -> float:
    """Orbit MMD (plain Gaussian on mean 4-node orbit counts, sigma 30, no pmf normalisation)."""
    return _descriptor_mmd(ref, pred, orbit_vector, kernel="gaussian", sigma=30.0, is_hist=False)


def spectral_mmd(ref: Sequence[nx.Graph], pred: Sequence[nx.Graph], bins: int = 200) -> float:
    """Spectral MMD (gaussian_emd, sigma 1, on the 200-bin normalised-Laplacian spectrum)."""
    return _descriptor_mmd(ref, pred, lambda g: spectral_histogram(g, bins), kernel="gaussian_emd", sigma=1.0)


MMD_FUNCTIONS: dict[str, Callable[[Sequence[nx.Graph], Sequence[nx.Graph]], float]] = {
    "degree": degree_mmd, "cluster": clustering_mmd, "orbit": orbit_mmd, "spectral": spectral_mmd}


def graph_mmds(ref: Sequence[nx.Graph], pred: Sequence[nx.Graph], methods: Sequence[str] = METHODS) -> dict[str, float]:
    """``{method: MMD}`` for the chosen methods (GDSS reports degree / cluster / orbit)."""
    unknown = [m for m in methods if m not in MMD_FUNCTIONS]
    if unknown:
        raise ValueError(f"unknown MMD method(s) {unknown}; allowed: {', '.join(MMD_FUNCTIONS)}")
    return {m: MMD_FUNCTIONS[m](ref, pred) for m in methods}
