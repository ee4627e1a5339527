"""The backbone figure of ``polydiff sample --plot`` (walkthrough defects): the data row is
titled as data even when its files are named like samples, the Ramachandran panels have phi /
psi axis labels, and no panel's labels run into a neighbour."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from polydiff_proteins import plot as P
from polydiff_proteins.geometry import Backbone, build_backbone


def chain(phi: float, psi: float, length: int, name: str) -> Backbone:
    return Backbone(build_backbone(np.radians(np.full(length, phi)), np.radians(np.full(length, psi))), name=name)


@pytest.fixture
def figure(monkeypatch, tmp_path):
    """The figure plot_backbones draws (drawn, so that label positions are known)."""
    drawn = {}

    def keep(fig, path, **kwargs):
        fig.canvas.draw()
        drawn["fig"] = fig
        return path

    monkeypatch.setattr(P, "save_figure", keep)
    samples = [chain(-57, -47, 20, f"sample_{i:04d}") for i in range(3)]
    reference = [chain(-120, 130, 18, f"sample_{i:04d}") for i in range(3)]  # data files named like samples
    P.plot_backbones(samples, tmp_path / "p.png", reference, per_row=4)
    return drawn["fig"]


def test_data_row_titled_as_data(figure):
    axes = np.array(figure.axes).reshape(2, 5)
    assert [ax.get_title() for ax in axes[0, :3]] == [f"sample_{i:04d} (20)" for i in range(3)]
    data_titles = [ax.get_title() for ax in axes[1, :3]]
    assert data_titles == [f"data {i} (18)" for i in range(3)]
    assert not any(t.startswith("sample_") for t in data_titles)


def test_ramachandran_axes_labelled(figure):
    axes = np.array(figure.axes).reshape(2, 5)
    for row, label in enumerate(("sample", "data")):
        rama = axes[row, -1]
        assert rama.get_title() == f"Ramachandran ({label})"
        assert rama.get_xlabel() == "phi (deg)" and rama.get_ylabel() == "psi (deg)"


def test_ramachandran_labels_clear_their_neighbours(figure):
    renderer = figure.canvas.get_renderer()
    axes = np.array(figure.axes).reshape(2, 5)
    top, bottom = axes[0, -1], axes[1, -1]
    # the lower panel's title sits below the upper panel's x tick labels and x label
    assert bottom.title.get_window_extent(renderer).y1 <= top.xaxis.get_tightbbox(renderer).y0
    # the y tick labels and y label stay clear of the trace panel to their left
    for row in range(2):
        left = axes[row, -2].get_window_extent(renderer)
        assert axes[row, -1].yaxis.get_tightbbox(renderer).x0 >= left.x1
