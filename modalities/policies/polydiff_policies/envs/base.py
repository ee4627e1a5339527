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

from collections.abc import Callable, Sequence
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

    def __repr__(self) -> str:  # a summary, what it achieved first: the arrays would fill a screen
        success = f"success={self.meta['success']}, " if "success" in self.meta else ""
        env = f"{self.meta['env']}, " if self.meta.get("env") else ""
        goal = np.round(np.asarray(self.goal, dtype=np.float64), 3).tolist()
        return (f"Episode({success}outcome={self.outcome!r}, behaviour={self.behaviour!r}; {env}{len(self.actions)} "
                f"steps, goal {goal})")


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

    def __repr__(self) -> str:
        return (f"<{type(self).__name__} {self.name!r}: obs {self.obs_dim}, action {self.action_dim}, goal "
                f"{self.goal_dim} values; {len(self.goals)} goals, max_steps {self.max_steps}>")

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


def balanced_demonstrations(env: GoalEnv, n: int, seed: int, goal: np.ndarray | None, modes: Sequence[str],
                            mode_key: str, run: Callable[[GoalEnv, np.ndarray, str, np.random.Generator], Episode]
                            ) -> list[Episode]:
    """``n`` successful scripted demonstrations with goals (unless ``goal`` is given) and
    ``modes`` (routes, orders) balanced and shuffled: ``run(env, goal, mode, rng)`` plays one
    from ``env``'s just reset state; a failure (wrong mode or no success) is retried with new
    noise. ``meta`` holds ``success`` (True), the reset ``seed``, start ``state`` and the
    planned mode under ``mode_key``."""
    rng = np.random.default_rng(seed)
    goal_ids = [None] if goal is not None else list(range(len(env.goals)))
    combos = [(gi, m) for gi in goal_ids for m in modes]
    plan: list[tuple[int | None, str]] = []
    while len(plan) < n:
        plan += [combos[i] for i in rng.permutation(len(combos))]
    eps = []
    for gi, mode in plan[:n]:
        g = np.asarray(goal, dtype=np.float32) if gi is None else env.goals[gi]
        for _ in range(100):  # the experts practically always succeed; retry with new noise if not
            ep_seed = int(rng.integers(2**31))
            env.reset(seed=ep_seed, options={"goal": g})
            state = env.get_state()
            ep = run(env, g, mode, rng)
            if env.success() and ep.behaviour == mode:
                break
        else:
            raise RuntimeError(f"{env.name} expert failed for goal {g} {mode_key} {mode}")
        ep.meta = {"success": True, "seed": ep_seed, "state": state, mode_key: mode}
        eps.append(ep)
    return eps
