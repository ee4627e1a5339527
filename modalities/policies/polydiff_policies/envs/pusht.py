"""Push-T (Chi et al., *Diffusion Policy*, RSS 2023): push a T-shaped block onto a fixed target pose.

A pymunk scene in the pixel coordinates of the published demonstrations (512 x 512, y pointing
down as in the rendered images): a kinematic disc (the agent, radius 15) that a PD law drives
towards the commanded position, a free T block (two boxes, mass 1) and four walls. The observation
is the demonstrations' 5-D state ``(agent x, y, block x, y, block angle in [0, 2 pi))``, the action
the agent's target position in pixels, the goal the T's target pose ``(256, 256, pi/4)``. Success is
more than 95 % of the goal T's area covered by the block; the reward is that coverage / 0.95,
clipped to 1 (Diffusion Policy's score is its maximum over an episode).

Conventions and physics, checked against the 206 human demonstrations of ``pusht_cchi_v7``
(``python -m polydiff_policies.envs.pusht PATH`` prints the numbers):

- the block's position is its body origin, the middle of the outer edge of the T's bar, with the
  stem along local +y; its centre of gravity is at local (0, 45), the plain mean of the two boxes'
  centroids (not the area-weighted 40.7), and its moment of inertia is twice the bar's about the
  origin, both as published (the published code reuses the bar's vertices for the stem's inertia).
  The area-weighted centre of gravity or the true inertia fit the recordings worse;
- the demonstrations' start states were placed the legacy way (position first, then the angle,
  which pymunk applies about the centre of gravity, so the origin moves) followed by one physics
  step: random starts here do the same, so ``reset(seed=i)`` reproduces demonstration ``i``'s
  start exactly; a given ``state`` is placed exactly instead (no step);
- the agent's PD law, ``v += (kp (a - p) - kv v) dt`` then ``p += v dt``, 10 substeps of 10 ms per
  100 ms control step, kp 100, kv 20, reproduces every recorded agent position to float32 precision
  (max 4e-5 px) from rest. The agent's velocity is not part of the state, so one-step checks pass
  the velocity that the law implies (:func:`agent_velocities`, ``options["agent_velocity"]``);
- ``space.damping = 0`` as published makes pymunk drop every body's velocity before each substep's
  contact impulses, so the block only moves while pushed (quasi-static pushing; only the velocity
  the last substep's contacts gave it still moves it once); the published code sets
  ``friction = 1`` on the *bodies*, which pymunk ignores, so all shapes keep pymunk's default
  friction 0: frictionless contacts (friction 1 or 0.3 fit the recordings several times worse);
- from a recorded state, one step errs by block position p90 0.27 px and angle p90 0.0026 rad:
  what the state cannot carry (the block's velocity from the last substep, pymunk's cached contact
  impulses) is lost. Keeping one simulation running and only moving the bodies to the recorded
  poses (``step_errors(mode="carry")``) reproduces every transition to float32 precision except the
  first of a few episodes that start with the agent touching the block; from ``reset(seed=i)``
  only the first steps of episodes 50 and 186 (agent deep inside the block) differ. Open-loop
  replay from the recorded first state ends within 1 px of the recording in 205 of 206 episodes;
- by Diffusion Policy's coverage the demonstrations end at 0.77-0.90 coverage (median 0.85): none
  reaches the published 0.95 success threshold, although their final block poses lie within a few
  pixels and degrees of the goal.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import pymunk
import shapely.geometry as sg

from .base import Episode, GoalEnv

WINDOW = 512.0
SIM_HZ = 100
CONTROL_HZ = 10
SUBSTEPS = SIM_HZ // CONTROL_HZ
KP, KV = 100.0, 20.0
AGENT_RADIUS = 15.0
BLOCK_MASS = 1.0
#: T geometry (local frame, pixels): bar 120 x 30 along x at y in [0, 30], stem 30 x 90 below it
BAR = ((-60.0, 30.0), (60.0, 30.0), (60.0, 0.0), (-60.0, 0.0))
STEM = ((-15.0, 30.0), (-15.0, 120.0), (15.0, 120.0), (15.0, 30.0))
BLOCK_COG = (0.0, 45.0)
T_OUTLINE = ((-60.0, 0.0), (60.0, 0.0), (60.0, 30.0), (15.0, 30.0), (15.0, 120.0), (-15.0, 120.0),
             (-15.0, 30.0), (-60.0, 30.0))
#: the outline's edges, in T_OUTLINE order, named for behaviour labels (as drawn upright: bar on top)
T_EDGES = ("top", "right_end", "right_under", "stem_right", "stem_end", "stem_left", "left_under", "left_end")
WALLS = (((5.0, 506.0), (5.0, 5.0)), ((5.0, 5.0), (506.0, 5.0)), ((506.0, 5.0), (506.0, 506.0)),
         ((5.0, 506.0), (506.0, 506.0)))
WALL_RADIUS = 2.0
GOAL_POSE = np.array([256.0, 256.0, math.pi / 4])
SUCCESS_COVERAGE = 0.95
AGENT_START = (256.0, 400.0)


def t_polygon(pose: np.ndarray) -> sg.Polygon:
    """The T's outline at ``pose`` = (x, y, theta) of its body origin, as a shapely polygon."""
    c, s = math.cos(pose[2]), math.sin(pose[2])
    return sg.Polygon([(pose[0] + c * x - s * y, pose[1] + s * x + c * y) for x, y in T_OUTLINE])


GOAL_POLYGON = t_polygon(GOAL_POSE)


def coverage_of(block_pose: np.ndarray, goal_pose: np.ndarray = GOAL_POSE) -> float:
    """Fraction of the goal T's area covered by a T at ``block_pose`` (Diffusion Policy's coverage)."""
    goal = GOAL_POLYGON if goal_pose is GOAL_POSE else t_polygon(goal_pose)
    return float(t_polygon(block_pose).intersection(goal).area / goal.area)


def wrap_angle(a: np.ndarray | float) -> np.ndarray | float:
    """An angle difference wrapped to [-pi, pi)."""
    return (np.asarray(a) + np.pi) % (2 * np.pi) - np.pi


class PushTEnv(GoalEnv):
    """Push-T with the demonstrations' state and action spaces (see the module docstring)."""

    metadata: ClassVar[dict[str, Any]] = {"render_modes": [], "render_fps": CONTROL_HZ}
    name = "pusht"
    obs_dim, action_dim, goal_dim = 5, 2, 3
    max_steps = 300
    goals = GOAL_POSE[None].astype(np.float32)
    goal_labels = ("goal0",)

    def __init__(self, max_steps: int = 300) -> None:
        self.max_steps = max_steps
        # the kinematic agent passes through walls and may overshoot its target a little: margin
        margin = 128.0
        low = np.array([-margin, -margin, 0, 0, 0], np.float32)
        high = np.array([WINDOW + margin, WINDOW + margin, WINDOW, WINDOW, 2 * np.pi], np.float32)
        self.observation_space = gym.spaces.Box(low, high, dtype=np.float32)
        self.action_space = gym.spaces.Box(0.0, WINDOW, (2,), dtype=np.float32)
        self.goal = GOAL_POSE.astype(np.float32)
        self._build()

    # -- simulation --------------------------------------------------------------------------------

    def _build(self) -> None:
        """A fresh pymunk space: walls, agent at its published start, T block (no cached contacts)."""
        self.space = pymunk.Space()
        self.space.gravity = (0.0, 0.0)
        self.space.damping = 0.0
        for a, b in WALLS:
            self.space.add(pymunk.Segment(self.space.static_body, a, b, WALL_RADIUS))
        self.agent = pymunk.Body(body_type=pymunk.Body.KINEMATIC)
        self.agent.position = AGENT_START
        self.agent_shape = pymunk.Circle(self.agent, AGENT_RADIUS)
        self.space.add(self.agent, self.agent_shape)
        self.block = pymunk.Body(BLOCK_MASS, 2 * pymunk.moment_for_poly(BLOCK_MASS, BAR))
        self.block_shapes = [pymunk.Poly(self.block, BAR), pymunk.Poly(self.block, STEM)]
        self.block.center_of_gravity = BLOCK_COG
        self.space.add(self.block, *self.block_shapes)
        self._steps = 0
        self._first_contact = ""

    def get_state(self) -> np.ndarray:
        """(agent x, y, block x, y, block angle in [0, 2 pi)) as float32, the demonstrations' state."""
        a, b = self.agent.position, self.block.position
        return np.array([a.x, a.y, b.x, b.y, self.block.angle % (2 * np.pi)], np.float32)

    def set_state(self, state: np.ndarray, agent_velocity: np.ndarray | None = None) -> None:
        """Place agent and block exactly at ``state`` (at rest unless ``agent_velocity`` is given)."""
        self._place(state)
        self.agent.velocity = (0.0, 0.0) if agent_velocity is None else tuple(np.asarray(agent_velocity, float))
        self.block.velocity, self.block.angular_velocity = (0.0, 0.0), 0.0

    def _place(self, state: np.ndarray) -> None:
        """Move agent and block to ``state``, keeping their velocities."""
        state = np.asarray(state, np.float64)
        if state.shape != (5,) or not np.isfinite(state).all():
            raise ValueError(f"a Push-T state is 5 finite numbers, got {state}")
        self.agent.position = tuple(state[:2])
        self.block.angle = float(state[4])  # angle first: setting the position then puts the origin exactly
        self.block.position = tuple(state[2:4])
        self.space.reindex_shapes_for_body(self.block)
        self.space.reindex_shapes_for_body(self.agent)

    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """Start an episode: at ``options["state"]`` (exactly) or at a published random start.

        Random starts draw the published distribution with the published legacy RandomState, so
        ``reset(seed=i)`` gives demonstration ``i``'s start; ``options["goal"]`` may only be the
        fixed Push-T goal."""
        super().reset(seed=seed)
        options = options or {}
        if "goal" in options and not np.allclose(options["goal"], GOAL_POSE, atol=1e-4):
            raise ValueError(f"Push-T has the single goal {GOAL_POSE.tolist()}, got {options['goal']}")
        self._build()
        if options.get("state") is not None:
            self.set_state(options["state"], options.get("agent_velocity"))
        else:
            rs = np.random.RandomState(seed if seed is not None else int(self.np_random.integers(2**31)))
            agent = rs.randint(50, 450), rs.randint(50, 450)
            pos = np.array([rs.randint(100, 400), rs.randint(100, 400)], np.float64)
            theta = rs.randn() * 2 * np.pi - np.pi
            # legacy placement: origin at pos, then turned by theta about the centre of gravity
            cog = np.array(BLOCK_COG)
            rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
            self.set_state(np.r_[agent, pos + cog - rot @ cog, theta])
            self.space.step(1.0 / SIM_HZ)  # as published: resolves a start with the agent on the block
        self._note_contact()
        obs = self.get_state()
        return obs, self._info(self.coverage())

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """One 100 ms control step: the PD law towards ``action`` (clipped to the window), 10 substeps."""
        target = np.asarray(action, np.float64).reshape(2)
        if not np.isfinite(target).all():
            raise ValueError(f"a Push-T action is 2 finite numbers, got {action}")
        target = np.clip(target, 0.0, WINDOW)
        target = pymunk.Vec2d(float(target[0]), float(target[1]))
        dt = 1.0 / SIM_HZ
        for _ in range(SUBSTEPS):
            self.agent.velocity += (KP * (target - self.agent.position) - KV * self.agent.velocity) * dt
            self.space.step(dt)
            self._note_contact()
        self._steps += 1
        cov = self.coverage()
        success = cov > SUCCESS_COVERAGE
        reward = float(np.clip(cov / SUCCESS_COVERAGE, 0.0, 1.0))
        return self.get_state(), reward, success, self._steps >= self.max_steps, self._info(cov)

    def _note_contact(self) -> None:
        """Record on which edge of the T (block frame) the agent first touches it."""
        if self._first_contact:
            return
        # (pymunk 7.3's shapes_collide asserts on shapes apart, so ask for the nearest point instead)
        hit = min((shape.point_query(self.agent.position) for shape in self.block_shapes), key=lambda q: q.distance)
        if hit.distance < AGENT_RADIUS:
            self._first_contact = T_EDGES[_nearest_edge(np.array(self.block.world_to_local(hit.point)))]

    def _info(self, cov: float) -> dict[str, Any]:
        success = cov > SUCCESS_COVERAGE
        return {"coverage": cov, "success": success, "outcome": "goal0" if success else "",
                "behaviour": self.behaviour()}

    # -- goal-conditioned interface ----------------------------------------------------------------

    def coverage(self) -> float:
        """Fraction of the goal T's area covered by the block now."""
        b = self.block.position
        return coverage_of(np.array([b.x, b.y, self.block.angle]))

    def outcome(self) -> str:
        """``"goal0"`` when the block covers more than 95 % of the goal T, else ``""``."""
        return "goal0" if self.coverage() > SUCCESS_COVERAGE else ""

    def behaviour(self) -> str:
        """The edge of the T (``T_EDGES``, as seen with the T upright) the agent touched first."""
        return self._first_contact

    def draw(self, ax: Any) -> None:
        """Walls, goal T (light green), block T (grey) and agent (blue) in pixel coordinates, y down."""
        from matplotlib.patches import Circle, Polygon

        for a, b in WALLS:
            ax.plot([a[0], b[0]], [a[1], b[1]], color="lightgray", lw=2)
        ax.add_patch(Polygon(np.array(GOAL_POLYGON.exterior.coords), color="lightgreen", alpha=0.6))
        b = self.block.position
        block = t_polygon(np.array([b.x, b.y, self.block.angle]))
        ax.add_patch(Polygon(np.array(block.exterior.coords), color="lightslategray"))
        ax.add_patch(Circle(tuple(self.agent.position), AGENT_RADIUS, color="royalblue"))
        ax.set_xlim(0, WINDOW)
        ax.set_ylim(WINDOW, 0)
        ax.set_aspect("equal")


def _nearest_edge(p: np.ndarray) -> int:
    """Index of the T outline's edge nearest to the local point ``p``."""
    a = np.array(T_OUTLINE)
    b = np.roll(a, -1, axis=0)
    d = b - a
    u = np.clip(((p - a) * d).sum(1) / (d * d).sum(1), 0.0, 1.0)
    return int(np.argmin(np.linalg.norm(a + u[:, None] * d - p, axis=1)))


# -- demonstrations ---------------------------------------------------------------------------------


def load_pusht(path: str | Path) -> list[Episode]:
    """The episodes of a Push-T low-dim npz (``state``, ``action``, ``episode_ends``), checked
    by :func:`polydiff_policies.episodes.read_episodes` (errors name the file and the key or
    episode), with the fixed goal pose and 5-D states / 2-D actions."""
    from ..episodes import EpisodeError, read_episodes

    episodes = read_episodes(path, goal=GOAL_POSE)
    o, a = episodes[0].obs.shape[1], episodes[0].actions.shape[1]
    if (o, a) != (5, 2):
        raise EpisodeError(f"{path}: Push-T states are 5-D and actions 2-D, got {o} and {a}")
    for i, ep in enumerate(episodes):
        ep.meta.update(index=i, env="pusht")
    return episodes


def label_first_contacts(episodes: list[Episode]) -> list[Episode]:
    """``episodes`` with the behaviour label of :meth:`PushTEnv.behaviour` (the edge of the T the
    agent touched first) where they have none, as recorded human demonstrations do: their
    actions replayed from the first state until the first contact. The agent is kinematic and
    the block rests until it is touched, so the replay meets the recording's first contact."""
    out = []
    for ep in episodes:
        if ep.behaviour:
            out.append(ep)
            continue
        env = PushTEnv(max_steps=10**9)
        env.reset(options={"state": ep.obs[0]})
        for action in ep.actions:
            env.step(action)
            if env.behaviour():
                break
        out.append(dataclasses.replace(ep, behaviour=env.behaviour()))
    return out


def agent_velocities(states: np.ndarray, actions: np.ndarray) -> np.ndarray:
    """The agent's velocity before each step of an episode that starts at rest, by the PD law.

    The agent is kinematic (contacts do not move it), so its velocity follows from the actions
    alone; the recorded positions are used each step to keep float32 rounding from accumulating."""
    dt = 1.0 / SIM_HZ
    out = np.zeros((len(states), 2))
    p, v = states[0, :2].astype(np.float64), np.zeros(2)
    for t in range(len(states) - 1):
        for _ in range(SUBSTEPS):
            v = v + (KP * (actions[t] - p) - KV * v) * dt
            p = p + v * dt
        out[t + 1] = v
        p = states[t + 1, :2].astype(np.float64)
    return out


def replay(episode: Episode, env: PushTEnv | None = None) -> dict[str, float]:
    """Open-loop replay of an episode's actions from its first state, compared at its last state.

    Returns the final block position error (pixels) and wrapped angle error (radians) after the
    first T-1 actions, the replay's and the recording's coverage there, and ``replay_success``:
    whether the replay exceeds 95 % coverage at any step, the last action included (the
    demonstrations stop at the state *before* the successful push)."""
    env = env or PushTEnv(max_steps=10**9)
    obs, _ = env.reset(options={"state": episode.obs[0]})
    success = False
    for t, action in enumerate(episode.actions):
        if t == len(episode.actions) - 1:
            final, cov = obs, env.coverage()
        obs, _, hit, _, _ = env.step(action)
        success |= hit
    rec = episode.obs[-1].astype(np.float64)
    return {"pos_error": float(np.linalg.norm(final[2:4] - rec[2:4])),
            "angle_error": float(abs(wrap_angle(final[4] - rec[4]))),
            "coverage": float(cov), "recorded_coverage": coverage_of(rec[2:]),
            "replay_success": bool(success)}


def step_errors(episode: Episode, env: PushTEnv | None = None, mode: str = "pd") -> np.ndarray:
    """Per-step fidelity: from each recorded state s_t, apply a_t once and compare with s_{t+1}.

    ``mode``: ``"pd"`` resets to s_t with the agent's PD-implied velocity, ``"rest"`` with the agent
    at rest, ``"carry"`` keeps one simulation running and only moves the bodies to s_t, so that the
    velocities and cached contact impulses that the state lacks carry over (exact physics gives
    float32-level errors there). Returns (T-1, 3): agent position error, block position error
    (pixels), wrapped block angle error (radians)."""
    if mode not in ("pd", "rest", "carry"):
        raise ValueError(f"mode should be 'pd', 'rest' or 'carry', got {mode!r}")
    env = env or PushTEnv(max_steps=10**9)
    vel = agent_velocities(episode.obs, episode.actions)
    env.reset(options={"state": episode.obs[0]})
    out = np.zeros((len(episode.obs) - 1, 3))
    for t in range(len(episode.obs) - 1):
        if mode == "carry":
            env._place(episode.obs[t])
        else:
            env.reset(options={"state": episode.obs[t], "agent_velocity": vel[t] if mode == "pd" else None})
        nxt = env.step(episode.actions[t])[0].astype(np.float64)
        rec = episode.obs[t + 1].astype(np.float64)
        out[t] = (np.linalg.norm(nxt[:2] - rec[:2]), np.linalg.norm(nxt[2:4] - rec[2:4]),
                  abs(wrap_angle(nxt[4] - rec[4])))
    return out


def fidelity(path: str | Path, episodes: int | None = None) -> dict[str, float]:
    """How faithfully this environment replays the recorded episodes of ``path`` (the first
    ``episodes`` of them): open-loop final block position / angle errors, the replay's success
    at any step, and one-step errors (block position and angle, p90) in the three modes of
    :func:`step_errors`."""
    eps = load_pusht(path)[:episodes]
    runs = [replay(ep) for ep in eps]
    pos = np.array([r["pos_error"] for r in runs])
    ang = np.array([r["angle_error"] for r in runs])
    out = {"episodes": float(len(eps))}
    for name, x in (("final_block_pos_error_px", pos), ("final_block_angle_error_rad", ang)):
        out.update({f"{name}_median": float(np.median(x)), f"{name}_mean": float(x.mean()),
                    f"{name}_p90": float(np.percentile(x, 90)), f"{name}_max": float(x.max())})
    out["episodes_off_by_more_than_1px"] = float((pos > 1).sum())
    out["replay_succeeds_at_some_step"] = float(np.mean([r["replay_success"] for r in runs]))
    out["recorded_final_coverage_median"] = float(np.median([r["recorded_coverage"] for r in runs]))
    out["recorded_success_fraction"] = float(np.mean([r["recorded_coverage"] > SUCCESS_COVERAGE for r in runs]))
    for mode in ("pd", "rest", "carry"):
        err = np.concatenate([step_errors(ep, mode=mode) for ep in eps])
        out[f"step_{mode}_block_pos_error_px_p90"] = float(np.percentile(err[:, 1], 90))
        out[f"step_{mode}_block_angle_error_rad_p90"] = float(np.percentile(err[:, 2], 90))
    return out


if __name__ == "__main__":
    import sys

    for key, value in fidelity(sys.argv[1] if len(sys.argv) > 1 else
                               "../shared/data/robot_pusht/pusht_cchi_v7_lowdim.npz").items():
        print(f"{key:<44} {value:.4g}")
