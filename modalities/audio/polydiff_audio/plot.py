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


def _title(obj: Any, j: int, data: bool) -> str:
    """A panel's name: data panels never carry a sample's name (references read back from a
    samples-like folder are called ``sample_0000``...)."""
    name = str(getattr(obj, "name", "") or "")
    return f"ref_{j:04d}" if data and (not name or name.startswith("sample_")) else name


def _show_sound(ax: Any, sound: Any, title: str) -> Any:
    from .sounds import MelSpec, mel_of, mel_to_db

    spec = MelSpec(sr=int(sound.sr)) if int(sound.sr) != MelSpec().sr else MelSpec()
    db = mel_to_db(mel_of(sound.audio, spec), spec)
    seconds = db.shape[1] * spec.hop / spec.sr
    im = ax.imshow(db, origin="lower", aspect="auto", cmap="magma", vmin=-spec.top_db, vmax=0.0,
                   extent=(0.0, seconds, 0, db.shape[0]))
    ax.set_title((sound.caption or title)[:32], fontsize=7)
    ax.set_xlabel("time (s)", fontsize=6)
    ax.tick_params(labelsize=6)
    return im


def _show_chorale(ax: Any, chorale: Any, title: str) -> None:
    for k, row in enumerate(np.asarray(chorale.tracks)):
        steps = np.nonzero(row > 0)[0]
        ax.scatter(steps, row[steps], s=6, marker="s", color=VOICE_COLOURS[k % len(VOICE_COLOURS)],
                   label=chorale.names[k] if k < len(chorale.names) else None)
    ax.set_title(title, fontsize=7)
    ax.set_xlabel("16th", fontsize=6)
    ax.tick_params(labelsize=6)


def _show_stems(ax: Any, stems: Any, title: str) -> Any:
    from .music import StemSpec, stem_mels

    spec = StemSpec(sr=int(stems.sr))
    mels = stem_mels(stems.audio, spec)
    k, bands, frames = mels.shape
    db = (np.concatenate(list(mels[::-1]), 0) - 1.0) * (spec.top_db / 2.0)  # the [-1, 1] map undone
    im = ax.imshow(db, origin="lower", aspect="auto", cmap="magma", vmin=-spec.top_db, vmax=0.0,
                   extent=(0.0, frames * spec.hop / spec.sr, 0, k * bands))
    for i in range(1, k):
        ax.axhline(i * bands, color="white", lw=0.8)
    names = list(stems.names)[:k][::-1]  # drawn bottom-up: the last voice (bass) lowest
    ax.set_yticks([(i + 0.5) * bands for i in range(len(names))], names, fontsize=6)
    ax.set_title(title, fontsize=7)
    ax.set_xlabel("time (s)", fontsize=6)
    ax.tick_params(labelsize=6)
    return im


def plot_audio(objects: Sequence[Any], path: Path, reference: Sequence[Any] | None = None, n: int = 6) -> Path:
    """Up to ``n`` samples (top row) over as many reference items (bottom row); spectrograms
    share a dB colour bar, piano rolls one pitch range."""
    from .modality import Stems
    from .music import Chorale

    objs = list(objects)[:n]
    refs = list(reference or [])[: len(objs)]
    first = objs[0] if objs else None
    show = _show_chorale if isinstance(first, Chorale) else _show_stems if isinstance(first, Stems) else _show_sound
    rows = 2 if refs else 1
    cols = max(len(objs), 1)
    fig = new_figure(figsize=(2.2 * cols + 0.6, 2.1 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    image = None
    for r, (items, data) in enumerate([(objs, False), (refs, True)][:rows]):
        for j in range(cols):
            if j < len(items):
                image = show(axes[r, j], items[j], _title(items[j], j, data)) or image
            else:
                axes[r, j].axis("off")
    unit = "pitch (MIDI)" if isinstance(first, Chorale) else "" if isinstance(first, Stems) else "mel band"
    for r, label in enumerate(["samples", "data"][:rows]):  # the row's name over the y axis's
        axes[r, 0].set_ylabel(f"{label}\n{unit}".strip(), fontsize=8)
    if isinstance(first, Chorale):
        pitches = np.concatenate([np.asarray(c.tracks).ravel() for c in objs + refs])
        pitches = pitches[pitches > 0]
        if pitches.size:
            for ax in axes.ravel():
                ax.set_ylim(pitches.min() - 2, pitches.max() + 2)
        axes[0, -1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), markerscale=1.5,
                           title="voice", title_fontsize=7)
    if image is not None:
        bar = fig.colorbar(image, ax=axes, shrink=0.8, pad=0.01)
        bar.set_label("dB", fontsize=7)
        bar.ax.tick_params(labelsize=6)
    return save_figure(fig, path)
