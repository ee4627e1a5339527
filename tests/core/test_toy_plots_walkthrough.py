"""The toy figures of ``polydiff sample --plot`` (walkthrough defects): axis labels and a
title on the GMM scatter, few samples drawn bigger than the many faint data points, a legend of
data vs samples; a legend and y label on the rotation-angle histogram."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("matplotlib")

import polydiff
import polydiff.toy as toy_module
from polydiff.testing import kept_figures
from polydiff.toy import rotations


@pytest.fixture
def drawn(monkeypatch):
    """The figures the toy plots draw, instead of their files."""
    return kept_figures(monkeypatch, toy_module, rotations)


def test_gmm_scatter_labels_sizes_and_legend(tmp_path, drawn):
    rng = np.random.default_rng(0)
    toy = polydiff.load_modality("toy")
    toy.plot(rng.normal(size=(8, 2)), tmp_path / "few.png", reference=rng.normal(size=(3000, 2)))
    toy.plot(rng.normal(size=(4000, 2)), tmp_path / "many.png", reference=rng.normal(size=(3000, 2)))
    (few,), (many,) = drawn[0].axes, drawn[1].axes
    assert (few.get_xlabel(), few.get_ylabel()) == ("x0", "x1")
    assert few.get_title() == "samples (n=8) over data (n=3000)"
    assert [t.get_text() for t in few.get_legend().get_texts()] == ["data", "samples"]
    data, samples = few.collections
    assert data.get_alpha() < 1  # the data faint
    few_size, many_size = samples.get_sizes()[0], many.collections[1].get_sizes()[0]
    assert few_size > 4 * data.get_sizes()[0] and few_size > many_size


def test_gmm_histogram_in_1d_labelled(tmp_path, drawn):
    rng = np.random.default_rng(0)
    toy = polydiff.load_modality("toy")
    toy.plot(rng.normal(size=(50, 1)), tmp_path / "h.png", reference=rng.normal(size=(500, 1)))
    (ax,) = drawn[0].axes
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("x0", "density") and ax.get_title()
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["data", "samples"]


def test_rotation_angle_histogram_has_legend_and_y_label(tmp_path, drawn):
    from scipy.spatial.transform import Rotation

    x = Rotation.random(20, random_state=0).as_matrix()
    ref = Rotation.random(200, random_state=1).as_matrix()
    rotations.plot_rotations(x, tmp_path / "r.png", reference=ref)
    _, bx = drawn[0].axes
    assert bx.get_xlabel() == "rotation angle (deg)" and bx.get_ylabel() == "density"
    assert [t.get_text() for t in bx.get_legend().get_texts()] == ["data", "samples"]
