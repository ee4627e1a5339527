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


def _colour(z: int) -> tuple[float, float, float, float]:

    return matplotlib.colormaps["tab20"]((z * 7) % 20)


def draw_cell(ax: Any, structure: Any, title: str = "") -> None:
    """One unit cell on ``ax``: the a-b parallelogram and the atoms projected along c."""
    m = structure.lattice.matrix
    corners = np.array([[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]], dtype=float)
    outline = corners @ m[:2, :2]
    ax.plot(outline[:, 0], outline[:, 1], color="#808080", lw=0.7)
    xyz = np.mod(structure.frac_coords, 1.0) @ m
    zs = [sp.Z for sp in structure.species]
    ax.scatter(xyz[:, 0], xyz[:, 1], s=30, c=[_colour(z) for z in zs], edgecolors="black", linewidths=0.3)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title or structure.composition.reduced_formula, fontsize=7)


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
    for r, (kind, items) in enumerate(rows):
        for c, s in enumerate(items):
            draw_cell(fig.add_subplot(grid[r, c]), s, f"{kind}: {s.composition.reduced_formula}")
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
    top = [g for g, _ in (sg_r + sg_s).most_common(8)]
    x = np.arange(len(top))
    if sg_r:
        ax.bar(x - 0.2, [sg_r[g] / max(sum(sg_r.values()), 1) for g in top], 0.4, color="#7f7f7f", label="data")
    ax.bar(x + 0.2, [sg_s[g] / max(sum(sg_s.values()), 1) for g in top], 0.4, color="#d62728", label="samples")
    ax.set_xticks(x, [str(g) for g in top], fontsize=7)
    ax.set_title("space group (share)", fontsize=8)
    ax.tick_params(labelsize=7)
    return save_figure(fig, path)
