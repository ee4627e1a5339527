"""Pictures of samples next to data: mel spectrograms of sounds (with their captions), piano rolls
of chorales (a colour per voice), and the stems of rendered pieces."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib  # noqa: F401  (at the top: without matplotlib this module does not import, and callers skip the plot)
import numpy as np

from polydiff.plugin import new_figure, save_figure

VOICE_COLOURS = ("tab:red", "tab:orange", "tab:green", "tab:blue", "tab:purple", "tab:brown")


def _show_sound(ax: Any, sound: Any) -> None:
    from .sounds import MelSpec, mel_of

    spec = MelSpec(sr=int(sound.sr)) if int(sound.sr) != MelSpec().sr else MelSpec()
    ax.imshow(mel_of(sound.audio, spec), origin="lower", aspect="auto", cmap="magma", vmin=-1, vmax=1)
    ax.set_title((sound.caption or sound.name)[:32], fontsize=7)
    ax.set_xticks([])
    ax.set_yticks([])


def _show_chorale(ax: Any, chorale: Any) -> None:
    for k, row in enumerate(np.asarray(chorale.tracks)):
        steps = np.nonzero(row > 0)[0]
        ax.scatter(steps, row[steps], s=6, marker="s", color=VOICE_COLOURS[k % len(VOICE_COLOURS)],
                   label=chorale.names[k] if k < len(chorale.names) else None)
    ax.set_title(chorale.name, fontsize=7)
    ax.set_xlabel("16th", fontsize=6)
    ax.tick_params(labelsize=6)


def _show_stems(ax: Any, stems: Any) -> None:
    from .music import StemSpec, stem_mels

    mels = stem_mels(stems.audio, StemSpec(sr=int(stems.sr)))
    ax.imshow(np.concatenate(list(mels[::-1]), 0), origin="lower", aspect="auto", cmap="magma", vmin=-1, vmax=1)
    ax.set_title(f"{stems.name} (bass..soprano)", fontsize=7)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_audio(objects: Sequence[Any], path: Path, reference: Sequence[Any] | None = None, n: int = 6) -> Path:
    """Up to ``n`` samples (top row) over as many reference items (bottom row)."""
    from .modality import Stems
    from .music import Chorale

    objs = list(objects)[:n]
    refs = list(reference or [])[: len(objs)]
    first = objs[0] if objs else None
    show = _show_chorale if isinstance(first, Chorale) else _show_stems if isinstance(first, Stems) else _show_sound
    rows = 2 if refs else 1
    cols = max(len(objs), 1)
    fig = new_figure(figsize=(2.2 * cols, 2.0 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for j in range(cols):
        if j < len(objs):
            show(axes[0, j], objs[j])
        else:
            axes[0, j].axis("off")
        if refs:
            if j < len(refs):
                show(axes[1, j], refs[j])
            else:
                axes[1, j].axis("off")
    axes[0, 0].set_ylabel("samples", fontsize=8)
    if refs:
        axes[1, 0].set_ylabel("data", fontsize=8)
    if isinstance(first, Chorale):
        axes[0, 0].legend(fontsize=5, loc="upper right", markerscale=1.5)
    fig.tight_layout()
    return save_figure(fig, path)
