"""Pictures of backbones: CA traces (two projections, coloured by DSSP secondary structure
where the backbone is full) of samples next to data, and their Ramachandran plots."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes

from polydiff.plugin import new_figure, save_figure

from .geometry import Backbone
from .metrics import dssp, ramachandran

SS_COLOURS = {"H": "#d62728", "E": "#1f77b4", "-": "#999999"}


def _trace(ax: Axes, bb: Backbone, title: str | None = None) -> None:
    ca = bb.ca - bb.ca.mean(0)
    # the two principal axes, so every trace is seen from its widest side
    _, _, vt = np.linalg.svd(ca, full_matrices=False)
    xy = ca @ vt[:2].T
    ss = dssp(bb) if bb.full else "-" * len(bb)
    ax.plot(xy[:, 0], xy[:, 1], color="#cccccc", lw=0.8, zorder=1)
    ax.scatter(xy[:, 0], xy[:, 1], c=[SS_COLOURS.get(s, "#999999") for s in ss], s=6, zorder=2)
    ax.set_title(f"{bb.name if title is None else title} ({len(bb)})", fontsize=7)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])


def plot_backbones(samples: Sequence[Backbone], path: Path, reference: Sequence[Backbone] | None = None,
                   per_row: int = 6) -> Path:
    """A grid of CA traces (first row(s) samples, titled by name, then reference, titled
    ``data i``) and Ramachandran plots (phi / psi in degrees)."""
    groups = [("sample", list(samples)[:per_row])]
    if reference:
        groups.append(("data", list(reference)[:per_row]))
    fig = new_figure(figsize=(2.0 * (per_row + 1), 2.3 * len(groups)), layout="constrained")
    axes = fig.subplots(len(groups), per_row + 1, squeeze=False)
    for row, (label, bbs) in enumerate(groups):
        for j in range(per_row):
            ax = axes[row, j]
            if j < len(bbs):
                # data files may be named like samples (sample_0000.pdb): say which row is which
                _trace(ax, bbs[j], None if label == "sample" else f"{label} {j}")
            else:
                ax.axis("off")
        axes[row, 0].set_ylabel(label)
        ax = axes[row, per_row]
        full = [b for b in (samples if label == "sample" else reference or []) if b.full]
        if full:
            phi, psi = ramachandran(full)
            ax.scatter(phi, psi, s=1, alpha=0.3, color="k")
        ax.set_xlim(-180, 180)
        ax.set_ylim(-180, 180)
        ax.set_xticks([-180, 0, 180])
        ax.set_yticks([-180, 0, 180])
        ax.set_xlabel("phi (deg)", fontsize=7, labelpad=1)
        ax.set_ylabel("psi (deg)", fontsize=7, labelpad=1)
        ax.set_title(f"Ramachandran ({label})", fontsize=7)
        ax.tick_params(labelsize=6)
    fig.suptitle("CA traces (red helix, blue strand, grey loop by DSSP)", fontsize=8)
    return save_figure(fig, path)
