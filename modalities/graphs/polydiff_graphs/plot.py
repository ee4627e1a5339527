"""Figures of sample graphs: a grid of spring-layout drawings (matplotlib) or of molecule
depictions (RDKit ``Draw.MolsToGridImage``). Both return None when their library is missing."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib  # noqa: F401  (at the top: without matplotlib this module does not import, and callers skip the plot)
import networkx as nx

from polydiff.plugin import atomic_write, save_figure

from .chem import build_mol, graph_to_mol


def plot_graphs(graphs: Sequence[nx.Graph], path: str | Path, max_graphs: int = 16, ncols: int = 4,
                seed: int = 0) -> Path | None:
    """PNG grid of up to ``max_graphs`` graphs drawn with a seeded spring layout."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    graphs = list(graphs)[:max_graphs]
    if not graphs:
        raise ValueError("nothing to plot: no graphs")
    ncols = min(ncols, len(graphs))
    nrows = math.ceil(len(graphs) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.6 * ncols, 2.6 * nrows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, (g, ax) in enumerate(zip(graphs, axes.flat)):
        pos = nx.spring_layout(g, seed=seed)
        nx.draw_networkx(g, pos, ax=ax, node_size=18, with_labels=False, width=0.6, node_color="C0")
        ax.set_title(f"#{i}: {g.number_of_nodes()} nodes, {g.number_of_edges()} edges", fontsize=7)
    return save_figure(fig, path, dpi=110)


def plot_molecules(graphs: Sequence[nx.Graph], path: str | Path, max_graphs: int = 16, ncols: int = 4,
                   size: int = 250) -> Path | None:
    """PNG grid of molecule depictions; invalid graphs are drawn unsanitised, labelled "invalid"."""
    try:
        from rdkit.Chem import Draw
    except ImportError:
        return None
    graphs = list(graphs)[:max_graphs]
    if not graphs:
        raise ValueError("nothing to plot: no molecular graphs")
    mols, legends = [], []
    for i, g in enumerate(graphs):
        mol = graph_to_mol(g)
        if mol is None:
            mol = build_mol(g).GetMol()
            mol.UpdatePropertyCache(strict=False)
            legends.append(f"#{i} invalid")
        else:
            legends.append(f"#{i}")
        mols.append(mol)
    try:
        image = Draw.MolsToGridImage(mols, molsPerRow=min(ncols, len(mols)), subImgSize=(size, size), legends=legends)
    except ImportError:  # no PIL backend
        return None
    return atomic_write(Path(path), lambda tmp: image.save(tmp, format="PNG"))
