"""The crystals picture (samples.png) as a walkthrough found it: the space-group panel ranks by
share and always shows the samples' groups, atoms get a distinct colour per element with a key,
and long formulas are cut short instead of running into the next panel."""

from __future__ import annotations

import pytest
from pymatgen.core import Lattice, Structure

pytest.importorskip("matplotlib")
from polydiff.testing import kept_figures
from polydiff_crystals import plot as crystal_plot

pytestmark = pytest.mark.usefixtures("one_thread")


def _rocksalt(a: float = 5.64) -> Structure:
    s = Structure(Lattice.cubic(a), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])  # (group cached)
    s.properties["spacegroup"] = 225
    return s


def _p1(species: list[str]) -> Structure:
    coords = [[0.1 + 0.13 * k, 0.2 + 0.07 * k, 0.3 + 0.11 * k] for k in range(len(species))]
    s = Structure(Lattice.from_parameters(5.1, 6.2, 7.3, 81, 97, 103), species, coords)
    s.properties["spacegroup"] = 1
    return s


@pytest.fixture
def figures(monkeypatch):
    """The figures plot_crystals draws, kept (and still written)."""
    return kept_figures(monkeypatch, crystal_plot, write=True)


def test_space_groups_by_share_show_the_samples_groups(tmp_path, figures):
    reference = [_rocksalt(5.6 + 0.01 * i) for i in range(150)]
    samples = [_p1(["U", "Ge", "Ge"]) for _ in range(4)]
    crystal_plot.plot_crystals(samples, tmp_path / "samples.png", reference)
    assert (tmp_path / "samples.png").stat().st_size > 0
    (ax,) = [a for a in figures[0].axes if a.get_title() == "space group (share)"]
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert "1" in ticks and "225" in ticks
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["data", "samples"]
    bars = {c.get_label(): c for c in ax.containers}
    assert bars["samples"][ticks.index("1")].get_height() == pytest.approx(1.0)  # all 4 samples P1
    assert bars["data"][ticks.index("225")].get_height() == pytest.approx(1.0)


def test_element_colours_are_distinct_with_a_key_and_long_titles_are_cut(tmp_path, figures):
    long = ["Ca", "Mg", "Zr", "Np", "Ti", "Nb", "Al", "Co", "Hg", "Po", "Ge", "Mo", "Pd", "Pt", "Pb", "I", "O", "U"]
    samples = [_p1(["U", "Ge"]), _p1(long)]
    colours = crystal_plot.element_colours(samples)
    assert colours[92] != colours[32]  # U and Ge collided under tab20[(Z*7) % 20]
    assert len({tuple(c) for c in colours.values()}) == len(colours) == len(set(long))
    many = crystal_plot.element_colours([_p1(["H", "He", "Li", "Be", "B", "C", "N", "O", "F", "Ne", "Na", "Mg",
                                              "Al", "Si", "P", "S", "Cl", "Ar", "K", "Ca", "Sc", "Ti", "V"])])
    assert len({tuple(c) for c in many.values()}) == len(many) == 23

    crystal_plot.plot_crystals(samples, tmp_path / "samples.png", [_rocksalt()])
    fig = figures[0]
    (key,) = fig.legends
    assert {t.get_text() for t in key.get_texts()} == set(long) | {"Na", "Cl"}
    titles = [a.get_title() for a in fig.axes if a.get_title().startswith(("sample:", "data:"))]
    assert len(titles) == 3 and max(len(t) for t in titles) <= len("sample: ") + 18
    assert any(t.endswith("\u2026") for t in titles)
