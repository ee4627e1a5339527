"""A picture of generated sequences next to the data: character (or token) frequencies of
both, the first samples as text, and for SMILES a grid of the first valid molecules."""

from __future__ import annotations

import textwrap
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from polydiff.plugin import save_figure

from .metrics import canonical_smiles


def plot_samples(samples: Sequence[str], reference: Sequence[str] | None, path: Path, shown: int = 6) -> Path | None:
    """Save the figure to ``path`` (PNG); None when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    counts = Counter("".join(samples))
    ref_counts = Counter("".join(reference)) if reference else Counter()
    chars = [c for c, _ in (ref_counts or counts).most_common(40)]
    fig, (ax, tx) = plt.subplots(2, 1, figsize=(10, 8), gridspec_kw={"height_ratios": [1, 1.4]})
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
    lines = []
    for i, s in enumerate(samples[:shown]):
        flat = s.replace("\n", " / ")
        lines += textwrap.wrap(f"[{i}] {flat}", 110, max_lines=3, placeholder=" ...")
    tx.text(0, 1, "\n".join(lines) or "(no samples)", va="top", family="monospace", fontsize=8)
    tx.set_title("first samples")
    out = save_figure(fig, path)
    _molecule_grid(samples, Path(path))
    return out


def _molecule_grid(samples: Sequence[str], path: Path, n: int = 12) -> Path | None:
    """For SMILES samples: ``<name>_molecules.png``, the first ``n`` valid molecules."""
    valid = [c for c in (canonical_smiles(s) for s in samples[:200] if s.strip() and "\n" not in s) if c]
    if len(valid) < 0.5 * min(len(samples), 200) or not valid:
        return None
    from rdkit import Chem
    from rdkit.Chem import Draw

    from polydiff.plugin import atomic_write

    img = Draw.MolsToGridImage([Chem.MolFromSmiles(s) for s in valid[:n]], molsPerRow=4, subImgSize=(220, 180))
    target = path.with_name(path.stem + "_molecules.png")
    return atomic_write(target, lambda tmp: img.save(tmp, format="PNG"))
