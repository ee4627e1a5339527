"""``reach``: 2-D goal reaching around a central block, with two routes to every goal.

The arena is the square [-1, 1]^2. A point agent (drawn as a disk of radius ``AGENT_R``) starts
near the bottom centre; three goal regions lie along the top; a rectangular block in the middle
stands between them, so every goal can be reached by passing the block on the left or on the
right (for the outer goals one route is direct and the other crosses over the top of the
block). The scripted expert picks the route at random: the demonstrations are multimodal given
the goal, which is what a goal-conditioned diffusion policy should reproduce.

- observation: agent position (2,); goal: goal position (2,); action: target position (2,).
- dynamics (10 Hz): the agent moves straight towards the target by at most ``SPEED`` per step;
  it slides along the block (axis by axis) and stays in the arena.
- success: the agent is within ``GOAL_R`` of the commanded goal; an episode terminates when the
  agent enters any goal region (reward 1 if it is the commanded one), and is truncated after
  ``max_steps``.
- ``outcome()``: ``"goal<i>"`` of the region the agent is in (``""`` if none);
  ``behaviour()``: ``"left"`` / ``"right"``, the side of the block on which the agent last was
  when it first rose above the block (``""`` until then).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from gymnasium import spaces

from .base import Episode, GoalEnv, balanced_demonstrations

AGENT_R = 0.05  # agent radius: collisions treat the agent as this disk (block inflated by it)
SPEED = 0.08  # largest move per step (0.8 arena units per second at 10 Hz)
GOAL_R = 0.1  # radius of a goal region
START = (0.0, -0.8)  # nominal start; reset adds a uniform jitter of +-START_JITTER per axis
START_JITTER = 0.05
BLOCK = (-0.35, 0.35, -0.4, 0.25)  # the central obstacle: xmin, xmax, ymin, ymax
GOALS = np.array([[-0.6, 0.75], [0.0, 0.75], [0.6, 0.75]], dtype=np.float32)
ROUTES = ("left", "right")

# the block as the agent's centre sees it (inflated by the agent radius) and the arena bounds
_BX0, _BX1, _BY0, _BY1 = BLOCK[0] - AGENT_R, BLOCK[1] + AGENT_R, BLOCK[2] - AGENT_R, BLOCK[3] + AGENT_R
_LO, _HI = -1.0 + AGENT_R, 1.0 - AGENT_R


def _in_block(x: float, y: float) -> bool:
    return _BX0 < x < _BX1 and _BY0 < y < _BY1


def move(x: float, y: float, tx: float, ty: float) -> tuple[float, float]:
    """One step of the agent from (x, y) towards the target (tx, ty): capped speed, arena
    clipping, and sliding along the block (x then y, each clipped to the block's edge)."""
    dx, dy = tx - x, ty - y
    d = math.hypot(dx, dy)
    if d > SPEED:
        dx, dy = dx * SPEED / d, dy * SPEED / d
    nx = min(max(x + dx, _LO), _HI)
    if _in_block(nx, y):  # (x, y) was outside and y is within the block's rows: came from a side
        nx = _BX0 if x <= _BX0 else _BX1
    ny = min(max(y + dy, _LO), _HI)
    if _in_block(nx, ny):  # nx is within the block's columns: came from below or above
        ny = _BY0 if y <= _BY0 else _BY1
    return nx, ny


class ReachEnv(GoalEnv):
    """Goal reaching with a left and a right route around a central block (module docstring)."""

    name = "reach"
    obs_dim = 2
    action_dim = 2
    goal_dim = 2
    max_steps = 60
    goals = GOALS
    #: ``outcome()`` on reaching each row of ``goals``
    goal_labels = tuple(f"goal{i}" for i in range(len(GOALS)))

    def __init__(self) -> None:
        self.observation_space = spaces.Box(-1.0, 1.0, (2,), dtype=np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, (2,), dtype=np.float32)
        self.goal = GOALS[0].copy()
        self._pos = START
        self._side = 0.0  # side of the block (-1 left, +1 right) last seen beside it
        self._passed = 0.0  # that side when the agent first rose above the block (0: not yet)
        self._t = 0

    # -- state --------------------------------------------------------------------------------
    def get_state(self) -> np.ndarray:
        """``[x, y, side, passed]``: position and the route bookkeeping (-1 left, +1 right, 0)."""
        return np.array([*self._pos, self._side, self._passed], dtype=np.float64)

    def set_state(self, state: np.ndarray) -> None:
        """Restore ``get_state``'s vector; a 2-vector (an observation) sets the position only and
        clears the route bookkeeping."""
        s = np.asarray(state, dtype=np.float64).reshape(-1)
        self._pos = (float(s[0]), float(s[1]))
        self._side, self._passed = (float(s[2]), float(s[3])) if s.size >= 4 else (0.0, 0.0)
        self._track()

    def _obs(self) -> np.ndarray:
        return np.array(self._pos, dtype=np.float32)

    def _track(self) -> None:
        """Update the route bookkeeping after a move (why: behaviour comes from the trajectory)."""
        x, y = self._pos
        if _BY0 <= y <= _BY1 and not _BX0 < x < _BX1:
            self._side = -1.0 if x < 0 else 1.0
        if y > _BY1 and self._passed == 0.0 and self._side != 0.0:
            self._passed = self._side

    # -- labels -------------------------------------------------------------------------------
    def outcome(self) -> str:
        """``"goal<i>"`` of the goal region the agent is in, ``""`` if none."""
        p = np.array(self._pos)
        d = np.linalg.norm(GOALS - p, axis=1)
        i = int(np.argmin(d))
        return f"goal{i}" if d[i] <= GOAL_R else ""

    def behaviour(self) -> str:
        """``"left"`` / ``"right"``: the side on which the agent passed the block (``""`` not yet)."""
        return {-1.0: "left", 1.0: "right"}.get(self._passed, "")

    def success(self) -> bool:
        """Whether the agent is within ``GOAL_R`` of the commanded goal."""
        return math.dist(self._pos, self.goal) <= GOAL_R

    def _info(self) -> dict[str, Any]:
        return {"success": self.success(), "outcome": self.outcome(), "behaviour": self.behaviour()}

    # -- gymnasium ----------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        """Start an episode: goal from ``options["goal"]`` (else a random one of ``goals``), start
        state from ``options["state"]`` (else ``START`` plus a seeded jitter)."""
        super().reset(seed=seed)
        options = options or {}
        if options.get("goal") is not None:
            self.goal = np.asarray(options["goal"], dtype=np.float32).reshape(2).copy()
        else:
            self.goal = GOALS[int(self.np_random.integers(len(GOALS)))].copy()
        if options.get("state") is not None:
            self.set_state(options["state"])
        else:
            j = self.np_random.uniform(-START_JITTER, START_JITTER, 2)
            self.set_state(np.array([START[0] + j[0], START[1] + j[1]]))
        self._t = 0
        return self._obs(), self._info()

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        """Move towards the target position ``action`` (clipped to the arena)."""
        a = np.clip(np.asarray(action, dtype=np.float64).reshape(2), -1.0, 1.0)
        self._pos = move(*self._pos, float(a[0]), float(a[1]))
        self._track()
        self._t += 1
        info = self._info()
        terminated = info["outcome"] != ""
        reward = 1.0 if terminated and info["success"] else 0.0
        truncated = not terminated and self._t >= self.max_steps
        return self._obs(), reward, terminated, truncated, info

    # -- drawing ------------------------------------------------------------------------------
    def draw(self, ax: Any) -> None:
        """Arena, block, goal regions (the commanded one filled) and the agent."""
        from matplotlib import patches

        ax.add_patch(patches.Rectangle((-1, -1), 2, 2, fill=False, lw=1.5, ec="k"))
        x0, x1, y0, y1 = BLOCK
        ax.add_patch(patches.Rectangle((x0, y0), x1 - x0, y1 - y0, fc="0.45", ec="k"))
        for i, g in enumerate(GOALS):
            on = bool(np.allclose(g, self.goal))
            ax.add_patch(patches.Circle(g, GOAL_R, fc="tab:green" if on else "none", alpha=0.5 if on else 1,
                                        ec="tab:green", lw=1.5))
            ax.text(g[0], g[1] + GOAL_R + 0.04, f"goal{i}", ha="center", va="bottom", fontsize=8)
        ax.add_patch(patches.Circle(self._pos, AGENT_R, fc="tab:blue", ec="k", zorder=3))
        ax.set_xlim(-1.05, 1.05)
        ax.set_ylim(-1.05, 1.05)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])


# -- scripted expert ---------------------------------------------------------------------------
LOOKAHEAD = 0.15  # the expert's action is a point this far along its path (a carrot)
SWITCH = 0.08  # distance at which the expert moves on to its next waypoint


def expert_waypoints(goal: np.ndarray, route: str, rng: np.random.Generator) -> list[np.ndarray]:
    """Waypoints to ``goal`` passing the block on ``route``'s side, each jittered a little."""
    s = -1.0 if route == "left" else 1.0
    g = np.asarray(goal, dtype=np.float64)
    wps = [np.array([s * 0.66, -0.58]) + rng.uniform(-0.05, 0.05, 2),
           np.array([s * 0.66, 0.42]) + rng.uniform(-0.04, 0.04, 2)]
    if g[0] * s < -0.1:  # the goal is on the other side: cross over the top of the block first
        wps.append(np.array([g[0], 0.42]) + rng.uniform(-0.04, 0.04, 2))
    wps.append(g + rng.uniform(-0.03, 0.03, 2))
    return wps


def rollout_expert(env: ReachEnv, waypoints: list[np.ndarray]) -> Episode:
    """Run the waypoint follower from ``env``'s current (just reset) state."""
    obs_l, act_l = [], []
    obs = env._obs()
    k = 0
    for _ in range(env.max_steps):
        p = obs.astype(np.float64)
        while k < len(waypoints) - 1 and np.linalg.norm(waypoints[k] - p) < SWITCH:
            k += 1
        d = waypoints[k] - p
        n = float(np.linalg.norm(d))
        a = p + d * min(1.0, LOOKAHEAD / max(n, 1e-9))
        a32 = a.astype(np.float32)  # step with the recorded action: replays are bit-exact
        obs_l.append(obs)
        act_l.append(a32)
        obs, _, term, trunc, _ = env.step(a32)
        if term or trunc:
            break
    return Episode(np.stack(obs_l), np.stack(act_l), env.goal.copy(), env.outcome(), env.behaviour())


def demonstrations(n: int, seed: int = 0, goal: np.ndarray | None = None) -> list[Episode]:
    """``n`` successful expert demonstrations, goals (unless ``goal`` is given) and routes
    balanced and shuffled (:func:`.base.balanced_demonstrations`)."""
    return balanced_demonstrations(ReachEnv(), n, seed, goal, ROUTES, "route",
                                   lambda e, g, m, r: rollout_expert(e, expert_waypoints(g, m, r)))
