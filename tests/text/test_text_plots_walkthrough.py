"""The text picture (samples.png) as a walkthrough found it: its height follows its content, so
a few short samples leave no empty band under the text."""

from __future__ import annotations

import pytest

pytest.importorskip("matplotlib")
from polydiff.testing import kept_figures
from polydiff_text import plot as text_plot

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def figures(monkeypatch):
    return kept_figures(monkeypatch, text_plot, write=True)


def _empty_inches_under_text(fig) -> float:
    renderer = fig.canvas.get_renderer()
    tx = fig.axes[1]
    (text,) = tx.texts
    return (text.get_window_extent(renderer).y0 - tx.get_window_extent(renderer).y0) / fig.dpi


@pytest.mark.parametrize("samples", [["hello world"] * 3, ["a long story " * 30] * 6])
def test_height_fits_the_text(tmp_path, figures, samples):
    text_plot.plot_samples(samples, ["the cat sat on the mat"] * 5, tmp_path / "samples.png")
    fig = figures[0]
    assert len(fig.axes) == 2  # no molecule grid for prose
    assert fig.axes[1].get_title() == "first samples"
    assert _empty_inches_under_text(fig) < 0.5
    assert fig.get_figheight() < 8  # was 8 inches whatever the content


def test_fewer_lines_a_shorter_figure(tmp_path, figures):
    text_plot.plot_samples(["hi"], None, tmp_path / "a.png")
    text_plot.plot_samples([f"sample {i} " * 40 for i in range(6)], None, tmp_path / "b.png")
    assert figures[0].get_figheight() < figures[1].get_figheight()
