"""What every policies environment provides on top of :class:`gymnasium.Env`.

The environments are small, CPU-only and need no display or download. Each is goal-conditioned
and reports, besides Gymnasium's usual ``(obs, reward, terminated, truncated, info)``, *what*
an episode achieved (``outcome``: which goal, which block in which target) and *how*
(``behaviour``: which route, which order), so that the metrics can measure success and the
multimodality of a policy's behaviour over many rollouts.

Conventions shared by all environments:

- observations, actions and goals are flat ``float32`` vectors of sizes ``obs_dim``,
  ``action_dim`` and ``goal_dim``; an action is the agent's target position (position
  control, as in Push-T), in the environment's own coordinates;
- ``reset(seed=..., options={"goal": g})`` starts an episode with goal ``g`` (a random goal
  when none is given), ``options={"state": s}`` also sets the start state (``get_state``'s
  vector), so that rollouts can start from recorded states;
- ``info`` of every ``step`` holds ``success`` (the commanded goal is achieved),
  ``outcome`` and ``behaviour`` (strings; ``""`` while undetermined);
- ``draw(ax)`` draws the scene in its current state on a matplotlib axis (plots and
  animations are made from ``set_state`` + ``draw``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np


@dataclass
class Episode:
    """One demonstration or rollout: ``obs[t]`` is observed before ``actions[t]`` is taken.

    ``obs`` (T, obs_dim), ``actions`` (T, action_dim), ``goal`` (goal_dim,) float32 arrays;
    ``outcome`` / ``behaviour`` label what the episode achieved and how (may be empty)."""

    obs: np.ndarray
    actions: np.ndarray
    goal: np.ndarray
    outcome: str = ""
    behaviour: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


class GoalEnv(gym.Env):
    """Base class of the goal-conditioned environments (see the module docstring)."""

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}
    name: str = ""
    obs_dim: int = 0
    action_dim: int = 0
    goal_dim: int = 0
    max_steps: int = 100
    #: every goal a goal-free policy should be able to reach (rows of goal vectors)
    goals: np.ndarray
    #: the ``outcome()`` that achieving each of ``goals`` reports
    goal_labels: tuple[str, ...] = ()

    def get_state(self) -> np.ndarray:
        """The full simulator state as a flat vector (``reset(options={"state": ...})`` restores it)."""
        raise NotImplementedError

    def set_state(self, state: np.ndarray) -> None:
        """Put the simulator in ``state`` (for drawing and replays)."""
        raise NotImplementedError

    def outcome(self) -> str:
        """What the episode has achieved so far ("" for nothing yet)."""
        raise NotImplementedError

    def behaviour(self) -> str:
        """How the episode went (route, order, ...; "" while undetermined)."""
        raise NotImplementedError

    def draw(self, ax: Any) -> None:
        """Draw the scene in its current state on a matplotlib axis."""
        raise NotImplementedError
