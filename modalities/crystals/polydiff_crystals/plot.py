"""Pictures of crystals: a row of unit cells (atoms projected along c, coloured by element, the
cell outline drawn) for samples and data, and the distributions people compare first: density,
atoms per cell, number of elements and the most common space groups."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib  # (at the top: without matplotlib this module does not import, and callers skip the plot)
import numpy as np

from polydiff.plugin import new_figure, save_figure


def element_colours(structures: Sequence[Any]) -> dict[int, Any]:
    """A distinct colour for each element (atomic number) present in ``structures``, in order
    of Z: tab10's for up to 10 elements, then tab20's lighter shades too, evenly spaced hues beyond."""
    zs = sorted({sp.Z for s in structures for sp in s.species})
    if len(zs) <= 10:
        colours = [matplotlib.colormaps["tab10"](i) for i in range(len(zs))]
    elif len(zs) <= 20:
        colours = [matplotlib.colormaps["tab20"](i) for i in [*range(0, 20, 2), *range(1, 20, 2)][:len(zs)]]
    else:
        colours = [matplotlib.colormaps["turbo"](i / (len(zs) - 1)) for i in range(len(zs))]
    return dict(zip(zs, colours))


def short_formula(formula: str, width: int = 18) -> str:
    """``formula`` cut to ``width`` characters with an ellipsis (long titles overlap panels)."""
    return formula if len(formula) <= width else formula[:width - 1] + "\u2026"


def draw_cell(ax: Any, structure: Any, title: str = "", colours: dict[int, Any] | None = None) -> None:
    """One unit cell on ``ax``: the a-b parallelogram and the atoms projected along c, coloured
    by ``colours`` (atomic number to colour; :func:`element_colours` of the cell by default)."""
    colours = colours or element_colours([structure])
    m = structure.lattice.matrix
    corners = np.array([[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]], dtype=float)
    outline = corners @ m[:2, :2]
    ax.plot(outline[:, 0], outline[:, 1], color="#808080", lw=0.7)
    xyz = np.mod(structure.frac_coords, 1.0) @ m
    zs = [sp.Z for sp in structure.species]
    ax.scatter(xyz[:, 0], xyz[:, 1], s=30, c=[colours[z] for z in zs], edgecolors="black", linewidths=0.3)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title or short_formula(structure.composition.reduced_formula), fontsize=7)


def _stats(structures: Sequence[Any]) -> dict[str, list[float]]:
    return {"density (g/cm$^3$)": [float(s.density) for s in structures],
            "atoms per cell": [len(s) for s in structures],
            "elements": [len(s.composition.elements) for s in structures]}


def plot_crystals(samples: Sequence[Any], path: Path, reference: Sequence[Any] | None = None,
                  per_row: int = 6) -> Path:
    """Unit cells of samples (and a row of data first), then histograms of density, atoms per
    cell, number of elements and space groups, samples over data; written atomically."""
    from .modality import spacegroup_of

    samples = list(samples)
    rows = [("data", list(reference or [])[:per_row]), ("sample", samples[:per_row])]
    rows = [(k, r) for k, r in rows if r]
    fig = new_figure(figsize=(2.0 * per_row, 2.0 * len(rows) + 2.6))
    grid = fig.add_gridspec(len(rows) + 1, per_row, height_ratios=[1.0] * len(rows) + [1.3])
    colours = element_colours([s for _, items in rows for s in items])
    for r, (kind, items) in enumerate(rows):
        for c, s in enumerate(items):
            title = f"{kind}: {short_formula(s.composition.reduced_formula)}"
            draw_cell(fig.add_subplot(grid[r, c]), s, title, colours)
    if colours:  # element key at the right of the cells, one column per ~12 elements per cell row
        from matplotlib.lines import Line2D
        from pymatgen.core.periodic_table import Element

        handles = [Line2D([], [], ls="", marker="o", markersize=5, markerfacecolor=c, markeredgecolor="black",
                          markeredgewidth=0.3, label=Element.from_Z(z).symbol) for z, c in colours.items()]
        per_col = 12 * len(rows)
        fig.legend(handles=handles, loc="upper left", bbox_to_anchor=(0.91, 0.89), fontsize=6, frameon=False,
                   ncol=-(-len(handles) // per_col), handletextpad=0.1, columnspacing=0.6, title="element",
                   title_fontsize=6)
    ours = _stats(samples) if samples else {}
    ref = _stats(reference) if reference else {}
    bottom = grid[len(rows), :].subgridspec(1, 4, wspace=0.35)
    for i, key in enumerate(("density (g/cm$^3$)", "atoms per cell", "elements")):
        ax = fig.add_subplot(bottom[0, i])
        both = ours.get(key, []) + ref.get(key, [])
        bins = np.histogram_bin_edges(both, bins=20) if key.startswith("density") else \
            np.arange(min(both, default=0) - 0.5, max(both, default=1) + 1.5)
        if ref:
            ax.hist(ref[key], bins=bins, density=True, alpha=0.5, label="data", color="#7f7f7f")
        if ours:
            ax.hist(ours[key], bins=bins, density=True, histtype="step", lw=1.5, label="samples", color="#d62728")
        ax.set_title(key, fontsize=8)
        ax.tick_params(labelsize=7)
        if i == 0:
            ax.legend(fontsize=7)
    ax = fig.add_subplot(bottom[0, 3])
    sg_s, sg_r = Counter(spacegroup_of(s) for s in samples), Counter(spacegroup_of(s) for s in reference or [])
    share_s = {g: n / max(sum(sg_s.values()), 1) for g, n in sg_s.items()}
    share_r = {g: n / max(sum(sg_r.values()), 1) for g, n in sg_r.items()}
    # ranked by share (not raw counts: 150 data crystals would hide a few samples), the samples'
    # groups always shown (their 12 commonest), then the data's commonest up to 8 bars (3 at least)
    ours_top = sorted(share_s, key=lambda g: -share_s[g])[:12]
    theirs = [g for g in sorted(share_r, key=lambda g: -share_r[g]) if g not in ours_top]
    top = sorted(ours_top + theirs[:max(8 - len(ours_top), 3)],
                 key=lambda g: -max(share_s.get(g, 0.0), share_r.get(g, 0.0)))
    x = np.arange(len(top))
    if sg_r:
        ax.bar(x - 0.2, [share_r.get(g, 0.0) for g in top], 0.4, color="#7f7f7f", label="data")
    if sg_s:
        ax.bar(x + 0.2, [share_s.get(g, 0.0) for g in top], 0.4, color="#d62728", label="samples")
    if sg_r or sg_s:
        ax.legend(fontsize=7)
    ax.set_xticks(x, [str(g) for g in top], fontsize=6, rotation=90 if len(top) > 6 else 0)
    ax.set_title("space group (share)", fontsize=8)
    ax.tick_params(labelsize=7)
    return save_figure(fig, path)
