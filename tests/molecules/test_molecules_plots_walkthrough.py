"""The molecules and MD figures of ``polydiff sample --plot`` (walkthrough defects): the
atom-count histogram has a y label and the drawings a legend of element colours; the MD
free-energy panels keep their y labels and ticks clear of the panel to their left."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from polydiff.testing import kept_figures
from polydiff_molecules import md
from polydiff_molecules import plot as P
from polydiff_molecules.molecule import Molecule


def keep_figures(monkeypatch, module):
    return kept_figures(monkeypatch, module)


WATER = Molecule(("O", "H", "H"), [[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]], name="water")
AMMONIA = Molecule(("N", "H", "H", "H"), [[0.0, 0.0, 0.1], [0.94, 0.0, -0.27], [-0.47, 0.81, -0.27],
                                         [-0.47, -0.81, -0.27]], name="ammonia")
ODD = Molecule(("Si", "H"), [[0.0, 0.0, 0.0], [1.48, 0.0, 0.0]], name="silyl")  # no colour of its own


def test_atom_count_histogram_and_element_legend(tmp_path, monkeypatch):
    figs = keep_figures(monkeypatch, P)
    P.plot_molecules([AMMONIA, ODD], tmp_path / "m.png", reference=[WATER])
    fig = figs[0]
    hist = fig.axes[-1]
    assert hist.get_xlabel() == "atoms per molecule" and hist.get_ylabel() == "fraction of molecules"
    (legend,) = fig.legends
    assert legend.get_title().get_text() == "elements"
    assert [t.get_text() for t in legend.get_texts()] == ["H", "N", "O", "Si"]  # drawn atoms only, known first
    colours = {h.get_label(): h.get_markerfacecolor() for h in legend.legend_handles}
    assert colours["O"] == P.COLOURS["O"] and colours["Si"] == "#ff69b4"


def test_free_energy_panels_do_not_crowd(tmp_path, monkeypatch):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    figs = keep_figures(monkeypatch, md)
    rng = np.random.default_rng(0)
    ref = rng.normal([-0.5, 1.0], 0.5, size=(2000, 2))
    md.plot_free_energy({"reference": ref, "samples": ref[:8]}, tmp_path / "mb.png", kind="2d")
    fig = figs[0]
    FigureCanvasAgg(fig).draw()
    renderer = fig.canvas.get_renderer()
    left, right = fig.axes[:2]
    assert right.get_ylabel() == "y"
    # the right panel's y label and tick labels (-0.5 ...) stay right of the left panel's frame
    assert right.yaxis.get_tightbbox(renderer).x0 >= left.get_window_extent(renderer).x1
