"""The policies picture (samples.png, and rollouts.png of ``polydiff policies rollout``) as a
walkthrough found it: every goal the episodes were commanded is drawn filled, the legend says
what solid and dotted paths mean, and episodes without a behaviour add no "?" entry."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("matplotlib")
from polydiff.testing import kept_figures
from polydiff_policies import plot as policy_plot
from polydiff_policies.envs import Episode
from polydiff_policies.envs.reach import GOALS

pytestmark = pytest.mark.usefixtures("one_thread")


def _episode(goal: np.ndarray, success: bool, behaviour: str = "") -> Episode:
    path = np.linspace([0.0, -0.8], goal, 12).astype(np.float32)
    return Episode(obs=np.concatenate([path, np.zeros_like(path)], 1), actions=np.zeros((12, 2), np.float32),
                   goal=np.asarray(goal, np.float32), behaviour=behaviour,
                   meta={"env": "reach", "success": success})


@pytest.fixture
def figures(monkeypatch):
    return kept_figures(monkeypatch, policy_plot, write=True)


def _filled_goals(ax) -> int:
    """Goal circles (radius 0.1, green) drawn filled."""
    return sum(1 for p in ax.patches if getattr(p, "radius", None) == pytest.approx(0.1) and p.get_fill()
               and p.get_facecolor()[3] > 0 and p.get_facecolor()[1] > p.get_facecolor()[0])


def test_every_goal_filled_and_no_question_mark(tmp_path, figures):
    episodes = [_episode(GOALS[i % 3], success=i % 2 == 0) for i in range(6)]
    policy_plot.plot_rollouts(episodes, tmp_path / "rollouts.png")
    (ax,) = figures[0].axes
    assert _filled_goals(ax) >= 3
    assert sorted(t.get_text() for t in ax.texts) == ["goal0", "goal1", "goal2"]  # labels not repeated
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["success", "failure"] and "?" not in legend


def test_behaviours_and_outcomes_in_the_legend(tmp_path, figures):
    demos = [_episode(GOALS[0], True, "left"), _episode(GOALS[1], True, "right")]
    rollouts = [_episode(GOALS[0], False), _episode(GOALS[2], True, "left")]
    policy_plot.plot_rollouts(rollouts, tmp_path / "samples.png", reference=demos)
    ours, theirs = figures[0].axes
    assert [t.get_text() for t in ours.get_legend().get_texts()] == ["left", "success", "failure"]
    assert ours.get_legend().get_title().get_text() == "behaviour"
    assert [t.get_text() for t in theirs.get_legend().get_texts()] == ["left", "right", "success"]
    assert _filled_goals(ours) >= 2 and _filled_goals(theirs) >= 2
