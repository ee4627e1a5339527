"""Pictures of molecules: a grid of 3-D structures (projected on their principal plane, atoms
coloured by element, bonds from the molecule or EDM's distance table) and the atom-count
histograms of samples against the data."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib  # noqa: F401  (at the top: without matplotlib this module does not import, and callers skip the plot)
import numpy as np

from polydiff.plugin import new_figure, save_figure

from .molecule import Molecule

COLOURS = {"H": "#d9d9d9", "C": "#404040", "N": "#3050f8", "O": "#ff0d0d", "F": "#90e050", "S": "#e6c619",
           "Cl": "#1ff01f", "P": "#ff8000", "Br": "#a62929", "I": "#940094"}


def _project(pos: np.ndarray) -> np.ndarray:
    """Coordinates on the plane of the two largest principal axes (a stable 2-D view)."""
    c = pos - pos.mean(0)
    if len(c) < 3:
        return c[:, :2]
    _, _, vt = np.linalg.svd(c, full_matrices=False)
    return c @ vt[:2].T


def draw_molecule(ax: Any, mol: Molecule, title: str = "") -> None:
    """One molecule on ``ax``: bonds as lines (double / triple thicker), atoms as discs."""
    from .metrics import infer_bonds

    xy = _project(mol.positions)
    bonds = mol.bonds if mol.bonds is not None else infer_bonds(mol)
    for i, j in zip(*np.nonzero(np.triu(bonds, 1))):
        ax.plot(xy[[i, j], 0], xy[[i, j], 1], color="#707070", lw=0.8 + 0.8 * (int(bonds[i, j]) - 1), zorder=1)
    sizes = [18 if s == "H" else 40 for s in mol.symbols]
    ax.scatter(xy[:, 0], xy[:, 1], s=sizes, c=[COLOURS.get(s, "#ff69b4") for s in mol.symbols],
               edgecolors="black", linewidths=0.3, zorder=2)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title or mol.formula, fontsize=7)


def plot_molecules(samples: Sequence[Molecule], path: Path, reference: Sequence[Molecule] | None = None,
                   per_row: int = 6) -> Path:
    """Up to ``per_row`` samples per row (one row of reference molecules first when given) and
    the atom-count histograms; written atomically as a PNG."""
    from .metrics import stability

    rows = [("sample", list(samples)[: per_row * 2])]
    if reference:
        rows.insert(0, ("data", list(reference)[:per_row]))
    n_rows = sum((len(r) + per_row - 1) // per_row for _, r in rows) + 1
    fig = new_figure(figsize=(1.8 * per_row, 1.9 * n_rows))
    k = 0
    drawn = set()
    for label, mols in rows:
        for i, m in enumerate(mols):
            ax = fig.add_subplot(n_rows, per_row, k * per_row + i % per_row + 1)
            flag = "" if label == "data" else (" stable" if stability(m)[0] else " unstable")
            draw_molecule(ax, m, f"{label}: {m.formula}{flag}")
            drawn.update(m.symbols)
            if i % per_row == per_row - 1:
                k += 1
        if len(mols) % per_row:
            k += 1
    ax = fig.add_subplot(n_rows, 1, n_rows)
    counts = [len(m) for m in samples]
    top = max(counts + [len(m) for m in (reference or [])] + [1])
    bins = np.arange(0.5, top + 1.5)
    if reference:
        ax.hist([len(m) for m in reference], bins=bins, density=True, alpha=0.5, label="data")
    ax.hist(counts, bins=bins, density=True, alpha=0.5, label="samples")
    ax.set_xlabel("atoms per molecule")
    ax.set_ylabel("fraction of molecules")
    ax.legend(fontsize=7)
    fig.tight_layout()
    _element_legend(fig, drawn)
    return save_figure(fig, Path(path))


def _element_legend(fig: Any, symbols: set[str]) -> None:
    """A legend of the element colours of the drawn atoms, above the grid (known elements in
    :data:`COLOURS` order, then the others, drawn pink)."""
    from matplotlib.lines import Line2D

    order = [s for s in COLOURS if s in symbols] + sorted(symbols - COLOURS.keys())
    if not order:
        return
    handles = [Line2D([], [], ls="", marker="o", markersize=7, markerfacecolor=COLOURS.get(s, "#ff69b4"),
                      markeredgecolor="black", markeredgewidth=0.3, label=s) for s in order]
    fig.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=len(handles), fontsize=8,
               title="elements", title_fontsize=8, frameon=False)
