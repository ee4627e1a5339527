"""Figures of sample graphs: a grid of spring-layout drawings (matplotlib) or of molecule
depictions (RDKit ``Draw.MolsToGridImage``). Both return None when their library is missing."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib  # noqa: F401  (at the top: without matplotlib this module does not import, and callers skip the plot)
import networkx as nx

from polydiff.plugin import atomic_write, new_figure, save_figure

from .chem import build_mol, graph_to_mol


def plot_graphs(graphs: Sequence[nx.Graph], path: str | Path, max_graphs: int = 16, ncols: int = 4,
                seed: int = 0, reference: Sequence[nx.Graph] | None = None) -> Path:
    """PNG grid of up to ``max_graphs`` graphs drawn with a seeded spring layout, under one row
    of ``reference`` graphs (grey) when given."""
    graphs, ref = list(graphs)[:max_graphs], list(reference or [])[:ncols]
    if not graphs:
        raise ValueError("nothing to plot: no graphs")
    ncols = min(ncols, max(len(graphs), len(ref)))
    ref_rows = 1 if ref else 0
    nrows = ref_rows + math.ceil(len(graphs) / ncols)
    fig = new_figure(figsize=(2.6 * ncols, 2.6 * nrows))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    cells = [(axes[0, i], g, f"data #{i}", "0.55") for i, g in enumerate(ref)]
    name = "sample #" if ref else "#"
    cells += [(axes.flat[ref_rows * ncols + i], g, f"{name}{i}", "C0") for i, g in enumerate(graphs)]
    for ax, g, name, colour in cells:
        pos = nx.spring_layout(g, seed=seed)
        nx.draw_networkx(g, pos, ax=ax, node_size=18, with_labels=False, width=0.6, node_color=colour,
                         edge_color=colour if colour != "C0" else "k")
        ax.set_title(f"{name}: {g.number_of_nodes()} nodes, {g.number_of_edges()} edges", fontsize=7)
    return save_figure(fig, path, dpi=110)


def plot_molecules(graphs: Sequence[nx.Graph], path: str | Path, max_graphs: int = 16, ncols: int = 4,
                   size: int = 250, reference: Sequence[nx.Graph] | None = None) -> Path | None:
    """PNG grid of molecule depictions, after one row of ``reference`` molecules ("data") when
    given; invalid graphs are drawn unsanitised, labelled "invalid"."""
    try:
        from rdkit.Chem import Draw
    except ImportError:
        return None
    graphs, ref = list(graphs)[:max_graphs], list(reference or [])[:ncols]
    if not graphs:
        raise ValueError("nothing to plot: no molecular graphs")
    ncols = min(ncols, max(len(graphs), len(ref)))
    mols, legends = [], []
    for prefix, items in (("data #", ref), ("sample #" if ref else "#", graphs)):
        for i, g in enumerate(items):
            mol = graph_to_mol(g)
            legends.append(f"{prefix}{i}" + (" invalid" if mol is None else ""))
            if mol is None:
                mol = build_mol(g).GetMol()
                mol.UpdatePropertyCache(strict=False)
            mols.append(mol)
        if prefix == "data #" and ref:  # the samples start on a row of their own
            while len(mols) % ncols:
                mols.append(None)
                legends.append("")
    try:
        image = Draw.MolsToGridImage(mols, molsPerRow=ncols, subImgSize=(size, size), legends=legends)
    except ImportError:  # no PIL backend
        return None
    return atomic_write(Path(path), lambda tmp: image.save(tmp, format="PNG"))
