"""A picture of generated sequences next to the data: character frequencies of both, the first
samples as text, and for SMILES a grid of the first valid molecules (one PNG)."""

from __future__ import annotations

import textwrap
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib  # noqa: F401  (at the top: without matplotlib this module does not import, and callers skip the plot)

from polydiff.plugin import new_figure, save_figure

from .metrics import canonical_smiles


def plot_samples(samples: Sequence[str], reference: Sequence[str] | None, path: Path, shown: int = 6) -> Path:
    """Save the figure to ``path`` (PNG)."""
    grid = _molecule_grid(samples, reference)
    counts = Counter("".join(samples))
    ref_counts = Counter("".join(reference)) if reference else Counter()
    chars = [c for c, _ in (ref_counts or counts).most_common(40)]
    lines = []
    for i, s in enumerate(samples[:shown]):
        flat = s.replace("\n", " / ")
        lines += textwrap.wrap(f"[{i}] {flat}", 110, max_lines=3, placeholder=" ...")
    # heights in inches fitted to the content: the bars, the text's lines (8 pt monospace) and
    # the molecule grid at the figure's width (no empty band under the text)
    heights = [3.2, 0.3 + 0.135 * max(len(lines), 1)]
    if grid is not None:
        import numpy as np

        h, w = np.asarray(grid).shape[:2]
        heights.append(0.3 + 8.5 * h / w)
    fig = new_figure(figsize=(10, sum(heights) + 0.4 * len(heights)), layout="constrained")
    axes = fig.subplots(len(heights), 1, gridspec_kw={"height_ratios": heights})
    ax, tx = axes[0], axes[1]
    x = range(len(chars))
    total, ref_total = max(sum(counts.values()), 1), max(sum(ref_counts.values()), 1)
    ax.bar([i - 0.2 for i in x], [counts[c] / total for c in chars], width=0.4, label="samples")
    if reference:
        ax.bar([i + 0.2 for i in x], [ref_counts[c] / ref_total for c in chars], width=0.4, label="data")
    ax.set_xticks(list(x), [repr(c)[1:-1] for c in chars], fontsize=7)
    ax.set_ylabel("frequency")
    ax.set_title("character frequencies (the data's 40 most common)")
    ax.legend()
    tx.axis("off")
    tx.text(0, 1, "\n".join(lines) or "(no samples)", va="top", family="monospace", fontsize=8)
    tx.set_title("first samples")
    if grid is not None:
        axes[2].imshow(grid)
        axes[2].axis("off")
        axes[2].set_title("first valid sampled molecules")
    return save_figure(fig, path)


def _molecule_grid(samples: Sequence[str], reference: Sequence[str] | None, n: int = 12) -> Any:
    """For SMILES (most of the reference, else of the samples, parse as molecules): an image of
    the first ``n`` valid sampled molecules; None otherwise."""
    judge = [s for s in (reference or samples)[:100] if s.strip() and "\n" not in s]
    if not judge or sum(canonical_smiles(s) is not None for s in judge) < 0.5 * len(judge):
        return None
    valid = [c for c in (canonical_smiles(s) for s in samples[:500] if s.strip() and "\n" not in s) if c]
    if not valid:
        return None
    from rdkit import Chem
    from rdkit.Chem import Draw

    return Draw.MolsToGridImage([Chem.MolFromSmiles(s) for s in valid[:n]], molsPerRow=4, subImgSize=(220, 180))
