"""The audio pictures (samples.png) as a walkthrough found them: chorale data panels are titled
as data (not ``sample_0000``), with a pitch axis, one pitch range and a readable legend;
spectrograms have time / mel axes and a dB colour bar; stacked stems are labelled by voice."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("matplotlib")
from polydiff.testing import kept_figures
from polydiff_audio import plot as audio_plot
from polydiff_audio.modality import Stems
from polydiff_audio.music import VOICES, Chorale
from polydiff_audio.sounds import SR, Sound

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def figures(monkeypatch):
    return kept_figures(monkeypatch, audio_plot, write=True)


def _chorale(i: int, low: int) -> Chorale:
    tracks = np.array([[low + 20 + i] * 16, [low + 14] * 16, [low + 7] * 16, [low] * 16], dtype=np.int64)
    return Chorale(tracks, VOICES, f"sample_{i:04d}")


def _tone(i: int, sr: int, n: int) -> np.ndarray:
    return (0.3 * np.sin(2 * np.pi * (220 + 110 * i) * np.arange(n) / sr)).astype(np.float32)


def test_chorales_data_titled_as_data_one_pitch_range(tmp_path, figures):
    samples = [_chorale(i, 40) for i in range(3)]
    data = [_chorale(i, 50) for i in range(3)]  # read back from a folder: named sample_0000...
    audio_plot.plot_audio(samples, tmp_path / "samples.png", data)
    axes = figures[0].axes
    top, bottom = axes[:3], axes[3:6]
    assert [a.get_title() for a in top] == ["sample_0000", "sample_0001", "sample_0002"]
    assert not any(a.get_title().startswith("sample_") for a in bottom)
    assert "pitch (MIDI)" in top[0].get_ylabel() and "data" in bottom[0].get_ylabel()
    assert len({a.get_ylim() for a in axes[:6]}) == 1
    lo, hi = top[0].get_ylim()
    assert lo < 40 and hi > 72  # every note of both rows inside
    (legend,) = [a.get_legend() for a in axes if a.get_legend()]
    assert [t.get_text() for t in legend.get_texts()] == list(VOICES)
    assert min(t.get_fontsize() for t in legend.get_texts()) >= 7


def test_sounds_axes_and_db_colourbar(tmp_path, figures):
    n = 64 * 256
    sounds = [Sound(_tone(i, SR, n), SR, f"tone {i}") for i in range(2)]
    audio_plot.plot_audio(sounds, tmp_path / "samples.png", sounds)
    fig = figures[0]
    panels = [a for a in fig.axes if a.get_title().startswith("tone")]
    assert len(panels) == 4 and all(a.get_xlabel() == "time (s)" for a in panels)
    assert "mel band" in panels[0].get_ylabel()
    (bar,) = [a for a in fig.axes if a not in panels]
    assert bar.get_ylabel() == "dB"


def test_stems_labelled_per_voice_with_separators(tmp_path, figures):
    sr, n = 8000, 8000
    make = [Stems(np.stack([_tone(k, sr, n) for k in range(4)]), sr, VOICES, f"{kind}_{i:04d}")
            for kind in ("sample", "ref") for i in range(2)]
    audio_plot.plot_audio(make[:2], tmp_path / "samples.png", make[2:])
    fig = figures[0]
    panels = [a for a in fig.axes if a.get_title()]
    assert len(panels) == 4
    for ax in panels:
        assert [t.get_text() for t in ax.get_yticklabels()] == list(VOICES[::-1])  # bass lowest
        assert len(ax.lines) == 3 and ax.get_xlabel() == "time (s)"
    assert any(a.get_ylabel() == "dB" for a in fig.axes)
