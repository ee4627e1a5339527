"""``blocks``: push two blocks into two target areas, in either order.

The arena is the square [-1, 1]^2. A disk agent starts at the bottom centre, two disk blocks
A and B sit side by side in the middle, two target areas 1 and 2 lie at the top left and top
right. A goal assigns the blocks to the targets (A->1, B->2 or A->2, B->1) and is encoded as
the desired final block positions ``[A's target xy, B's target xy]``. The scripted expert
pushes the blocks one after the other in a random order, so the demonstrations are multimodal
given the goal.

- observation: ``[agent xy, block A xy, block B xy]`` (6,); goal (4,); action: the agent's
  target position (2,).
- dynamics (10 Hz, quasi-static, plain numpy/Python): the agent moves straight towards the
  target by at most ``SPEED`` per step, in sub-steps of at most ``SUBSTEP``; a block it pushes
  within the friction cone is carried along (sticking contact, :func:`stick`); after each sub-step
  overlaps are resolved along the contact normals: the agent pushes the blocks, the blocks push
  each other, the walls stop the blocks, and last the agent is pushed out of any block it could
  not move (so blocks never overlap and nothing leaves the arena).
- success: every block within ``TOL`` of its assigned target (terminates, reward 1); truncated
  after ``max_steps``.
- ``outcome()``: which block is in which target, e.g. ``"A1B2"``, ``"A2B1"``, ``"A1"``, ``""``;
  ``behaviour()``: the push order, named by the block that reached a target first: ``"A"`` /
  ``"B"`` (``""`` before any). With two blocks this is the whole order, and it is defined for a
  failed episode too, as soon as one block is in.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from gymnasium import spaces

from .base import Episode, GoalEnv, balanced_demonstrations

AGENT_R = 0.05
BLOCK_R = 0.1
SPEED = 0.05  # largest agent move per step (0.5 arena units per second at 10 Hz)
SUBSTEP = 0.02  # largest agent move per physics sub-step (keeps penetrations small)
TOL = 0.05  # a block is in a target when its centre is within TOL of the target's centre
TARGETS = np.array([[-0.55, 0.55], [0.55, 0.55]], dtype=np.float32)
START = np.array([0.0, -0.7, -0.3, -0.15, 0.3, -0.15])  # agent, A, B; reset adds +-START_JITTER
START_JITTER = 0.03
GOALS = np.array([np.concatenate([TARGETS[0], TARGETS[1]]),  # A->1, B->2
                  np.concatenate([TARGETS[1], TARGETS[0]])], dtype=np.float32)  # A->2, B->1
ORDERS = ("A", "B")  # the push order, by the block pushed first
NAMES = "AB"

MU = 1.0  # agent-block friction coefficient of the sticking contact (cone half-angle atan(MU) = 45 degrees)

_CONTACT = AGENT_R + BLOCK_R
_CONE = 1.0 / math.sqrt(1.0 + MU**2)  # cos(atan(MU))


def _clamp(v: float, r: float) -> float:
    return min(max(v, -1.0 + r), 1.0 - r)


def _separate(p: list[float], q: list[float], dist: float, wp: float, wq: float) -> bool:
    """Move disks ``p`` and ``q`` (in place) apart to ``dist``, sharing the correction by the
    weights ``wp`` / ``wq``; returns whether they overlapped."""
    dx, dy = q[0] - p[0], q[1] - p[1]
    d = math.hypot(dx, dy)
    if d >= dist:
        return False
    if d < 1e-12:  # coincident centres: separate along +x
        dx, dy, d = 1.0, 0.0, 1.0
    pen = dist - d
    nx, ny = dx / d, dy / d
    p[0] -= nx * pen * wp
    p[1] -= ny * pen * wp
    q[0] += nx * pen * wq
    q[1] += ny * pen * wq
    return True


def resolve(agent: list[float], blocks: list[list[float]]) -> None:
    """Remove overlaps in place: agent pushes blocks, blocks push each other, walls stop blocks;
    finally the agent yields to any block it still overlaps (blocks stuck at a wall)."""
    for _ in range(4):
        for b in blocks:
            _separate(agent, b, _CONTACT, 0.0, 1.0)
        _separate(blocks[0], blocks[1], 2 * BLOCK_R, 0.5, 0.5)
        for b in blocks:
            b[0], b[1] = _clamp(b[0], BLOCK_R), _clamp(b[1], BLOCK_R)
    for _ in range(50):  # blocks against walls and each other (converges fast: penetrations are tiny)
        moved = _separate(blocks[0], blocks[1], 2 * BLOCK_R, 0.5, 0.5)
        for b in blocks:
            b[0], b[1] = _clamp(b[0], BLOCK_R), _clamp(b[1], BLOCK_R)
        if not moved:
            break
    for b in blocks:
        _separate(b, agent, _CONTACT, 0.0, 1.0)
    agent[0], agent[1] = _clamp(agent[0], AGENT_R), _clamp(agent[1], AGENT_R)


def stick(agent: list[float], blocks: list[list[float]], sx: float, sy: float) -> None:
    """Sticking contact (quasi-static pushing with friction ``MU``): a block the agent touches
    before its move ``(sx, sy)``, moving into it within the friction cone (within ``atan(MU)`` of
    the contact normal), is carried along by the whole move; outside the cone, or when contact
    starts during the move, it only slides away along the normal (in :func:`resolve`). Without
    it a disk pushed by a disk slips off sideways at the slightest offset, and pushing needs
    constant correction."""
    step = math.hypot(sx, sy)
    if step < 1e-12:
        return
    for b in blocks:
        dx, dy = b[0] - agent[0], b[1] - agent[1]
        d = math.hypot(dx, dy)
        if d < 1e-12 or d > _CONTACT + 1e-9:
            continue
        if (dx * sx + dy * sy) / (d * step) >= _CONE:
            b[0] += sx
            b[1] += sy


class BlocksEnv(GoalEnv):
    """Push blocks A and B into their assigned targets, in either order (module docstring)."""

    name = "blocks"
    obs_dim = 6
    action_dim = 2
    goal_dim = 4
    max_steps = 150
    goals = GOALS
    #: ``outcome()`` on achieving each row of ``goals``
    goal_labels = ("A1B2", "A2B1")

    def __init__(self) -> None:
        self.observation_space = spaces.Box(-1.0, 1.0, (6,), dtype=np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, (2,), dtype=np.float32)
        self.goal = self.goals[0].copy()
        self._agent = [float(START[0]), float(START[1])]
        self._blocks = [[float(START[2]), float(START[3])], [float(START[4]), float(START[5])]]
        self._order: list[int] = []  # blocks (0 = A, 1 = B) in the order they first reached a target
        self._t = 0

    # -- state --------------------------------------------------------------------------------
    def get_state(self) -> np.ndarray:
        """``[agent xy, A xy, B xy, first, second]``: positions, then the order bookkeeping
        (1 = A, 2 = B, 0 = none yet)."""
        order = [i + 1.0 for i in self._order] + [0.0] * (2 - len(self._order))
        return np.array([*self._agent, *self._blocks[0], *self._blocks[1], *order], dtype=np.float64)

    def set_state(self, state: np.ndarray) -> None:
        """Restore ``get_state``'s vector; a 6-vector (an observation) sets the positions and
        clears the order bookkeeping."""
        s = np.asarray(state, dtype=np.float64).reshape(-1)
        self._agent = [float(s[0]), float(s[1])]
        self._blocks = [[float(s[2]), float(s[3])], [float(s[4]), float(s[5])]]
        self._order = [int(v) - 1 for v in s[6:8] if v > 0] if s.size >= 8 else []
        self._track()

    def _obs(self) -> np.ndarray:
        return np.array([*self._agent, *self._blocks[0], *self._blocks[1]], dtype=np.float32)

    def _in_target(self, i: int) -> int:
        """The target (0 or 1) block ``i`` is in, -1 if none."""
        for k, t in enumerate(TARGETS):
            if math.dist(self._blocks[i], t) <= TOL:
                return k
        return -1

    def _track(self) -> None:
        for i in range(2):
            if i not in self._order and self._in_target(i) >= 0:
                self._order.append(i)

    # -- labels -------------------------------------------------------------------------------
    def outcome(self) -> str:
        """Blocks with their targets, e.g. ``"A1B2"``, ``"B1"``; ``""`` if no block is in one."""
        return "".join(f"{NAMES[i]}{k + 1}" for i in range(2) if (k := self._in_target(i)) >= 0)

    def behaviour(self) -> str:
        """The push order: the block that first reached a target (``"A"`` / ``"B"``; ``""`` before any)."""
        return NAMES[self._order[0]] if self._order else ""

    def success(self) -> bool:
        """Whether every block is within ``TOL`` of its assigned target (``self.goal``)."""
        g = self.goal.astype(np.float64)
        return all(math.dist(self._blocks[i], g[2 * i:2 * i + 2]) <= TOL for i in range(2))

    def _info(self) -> dict[str, Any]:
        return {"success": self.success(), "outcome": self.outcome(), "behaviour": self.behaviour()}

    # -- gymnasium ----------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        """Start an episode: goal from ``options["goal"]`` (else a random one of ``goals``), start
        state from ``options["state"]`` (else ``START`` plus a seeded jitter)."""
        super().reset(seed=seed)
        options = options or {}
        if options.get("goal") is not None:
            self.goal = np.asarray(options["goal"], dtype=np.float32).reshape(4).copy()
        else:
            self.goal = self.goals[int(self.np_random.integers(len(self.goals)))].copy()
        if options.get("state") is not None:
            self.set_state(options["state"])
        else:
            self.set_state(START + self.np_random.uniform(-START_JITTER, START_JITTER, 6))
        self._t = 0
        return self._obs(), self._info()

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        """Move the agent towards the target position ``action`` (clipped to the arena), pushing
        the blocks."""
        a = np.clip(np.asarray(action, dtype=np.float64).reshape(2), -1.0, 1.0)
        dx, dy = float(a[0]) - self._agent[0], float(a[1]) - self._agent[1]
        d = math.hypot(dx, dy)
        if d > SPEED:
            dx, dy, d = dx * SPEED / d, dy * SPEED / d, SPEED
        n = max(1, math.ceil(d / SUBSTEP))
        for _ in range(n):
            sx, sy = dx / n, dy / n
            stick(self._agent, self._blocks, sx, sy)
            self._agent[0] = _clamp(self._agent[0] + sx, AGENT_R)
            self._agent[1] = _clamp(self._agent[1] + sy, AGENT_R)
            resolve(self._agent, self._blocks)
        self._track()
        self._t += 1
        info = self._info()
        terminated = bool(info["success"])
        reward = 1.0 if terminated else 0.0
        truncated = not terminated and self._t >= self.max_steps
        return self._obs(), reward, terminated, truncated, info

    # -- drawing ------------------------------------------------------------------------------
    def draw(self, ax: Any) -> None:
        """Arena, targets (edged in the colour of the block assigned to them), blocks and agent."""
        from matplotlib import patches

        colours = ("tab:red", "tab:orange")
        ax.add_patch(patches.Rectangle((-1, -1), 2, 2, fill=False, lw=1.5, ec="k"))
        g = self.goal.astype(np.float64).reshape(2, 2)
        for k, t in enumerate(TARGETS):
            owner = [i for i in range(2) if np.allclose(g[i], t)]
            ec = colours[owner[0]] if owner else "0.5"
            ax.add_patch(patches.Circle(t, BLOCK_R + TOL, fc="none", ec=ec, lw=2, ls="--"))
            ax.text(t[0], t[1] + BLOCK_R + TOL + 0.04, f"target {k + 1}", ha="center", va="bottom", fontsize=8)
        for i, b in enumerate(self._blocks):
            ax.add_patch(patches.Circle(b, BLOCK_R, fc=colours[i], ec="k", zorder=2))
            ax.text(b[0], b[1], NAMES[i], ha="center", va="center", fontsize=9, zorder=3)
        ax.add_patch(patches.Circle(self._agent, AGENT_R, fc="tab:blue", ec="k", zorder=3))
        ax.set_xlim(-1.05, 1.05)
        ax.set_ylim(-1.05, 1.05)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])


# -- scripted expert ---------------------------------------------------------------------------
ORBIT = _CONTACT + 0.06  # radius at which the expert circles a block to get behind it
ALIGN = 0.2  # largest angle (rad) between agent->block and the push direction to keep pushing
DONE = 0.02  # the expert moves on once a block is this close to its target
PERTURB_STEPS = (3, 8)  # a perturbation burst lasts 3 to 7 steps ...
PERTURB_SCALE = 0.08  # ... with the executed action offset by N(0, 0.08^2) per axis


def _unit(x: float, y: float) -> tuple[float, float]:
    n = math.hypot(x, y)
    return (x / n, y / n) if n > 1e-12 else (1.0, 0.0)


def avoid(agent: np.ndarray, target: np.ndarray, other: np.ndarray, radius: float = _CONTACT + 0.05) -> np.ndarray:
    """``target``, or, when the straight way there passes within ``radius`` of the block at
    ``other``, a point that circles that block on the side facing ``target`` (so that moving
    to the next block does not knock a placed one away)."""
    a, t, o = (np.asarray(v, dtype=np.float64) for v in (agent, target, other))
    seg = t - a
    L2 = float(seg @ seg)
    s = 0.0 if L2 < 1e-12 else min(1.0, max(0.0, float((o - a) @ seg) / L2))
    if s <= 0.0 or np.linalg.norm(a + s * seg - o) >= radius:  # heading away, or clear
        return t
    rx, ry = a - o
    side = 1.0 if rx * seg[1] - ry * seg[0] > 0 else -1.0  # counter-clockwise when that heads to t
    ang = math.atan2(ry, rx) + side * 0.6
    r = max(radius + 0.02, min(math.hypot(rx, ry), radius + 0.1))
    return o + r * np.array([math.cos(ang), math.sin(ang)])


def expert_action(agent: np.ndarray, block: np.ndarray, target: np.ndarray, other: np.ndarray,
                  lateral: float = 0.0, orbit: float = ORBIT) -> np.ndarray:
    """The pushing expert's target position for pushing ``block`` towards ``target``.

    Behind the block (within ``ALIGN`` of the push direction, close): push straight towards the
    agent's position with the block on the target (sticking contact carries the block along).
    Otherwise: circle the block at radius ``orbit`` towards the point behind it, going round the
    ``other`` block. ``lateral`` shifts the aim sideways a little (demo variety)."""
    ax_, ay = float(agent[0]), float(agent[1])
    bx, by = float(block[0]), float(block[1])
    ux, uy = _unit(float(target[0]) - bx, float(target[1]) - by)
    rx, ry = ax_ - bx, ay - by
    d = math.hypot(rx, ry)
    ang = math.atan2(ry, rx)
    want = math.atan2(-uy, -ux)  # bearing of the point behind the block
    err = (want - ang + math.pi) % (2 * math.pi) - math.pi
    if abs(err) < ALIGN and d < orbit + 0.03:
        # push straight to where the agent stands when the block is on the target: in sticking
        # contact the block keeps its offset from the agent, so it ends (nearly) on the target
        tx, ty = float(target[0]), float(target[1])
        return np.array([tx - ux * _CONTACT - uy * lateral, ty - uy * _CONTACT + ux * lateral])
    if abs(err) < 0.15:  # behind it but not close: come in straight
        nav = np.array([bx - ux * (_CONTACT - 0.01), by - uy * (_CONTACT - 0.01)])
    else:
        turn = math.copysign(min(abs(err), 0.6), err)
        r = orbit if d < orbit + 0.1 else max(orbit, d - 0.1)
        nav = np.array([bx + r * math.cos(ang + turn), by + r * math.sin(ang + turn)])
    return avoid(agent, nav, other)


def rollout_expert(env: BlocksEnv, first: str, rng: np.random.Generator, perturb: float = 0.0) -> Episode:
    """Run the pushing expert from ``env``'s current (just reset) state, block ``first`` first.

    ``perturb`` > 0 (DART, Laskey et al. 2017): at each step, with this probability, a burst of
    ``PERTURB_STEPS`` steps starts in which the executed action is the expert's plus a random
    offset of scale ``PERTURB_SCALE``; the episode records the expert's own actions, so the
    demonstrations show how to recover from states a learned policy drifts into (the recorded
    actions then no longer replay the episode exactly). The offsets are drawn only when
    ``perturb`` > 0: unperturbed demonstrations are unchanged."""
    order = first + NAMES.replace(first, "")
    burst, offset = 0, np.zeros(2)
    g = env.goal.astype(np.float64).reshape(2, 2)
    lateral = {c: float(rng.uniform(-0.01, 0.01)) for c in NAMES}
    orbit = ORBIT + float(rng.uniform(-0.01, 0.02))
    obs_l, act_l = [], []
    obs = env._obs()
    k = 0
    for _ in range(env.max_steps):
        p = obs.astype(np.float64)
        i = NAMES.index(order[k])
        if k == 0 and math.dist(p[2 + 2 * i:4 + 2 * i], g[i]) < DONE:
            k, i = 1, NAMES.index(order[1])
        a = expert_action(p[:2], p[2 + 2 * i:4 + 2 * i], g[i], p[4 - 2 * i:6 - 2 * i], lateral[order[k]], orbit)
        a = a + rng.normal(0.0, 0.003, 2)
        a32 = np.clip(a, -1.0, 1.0).astype(np.float32)  # step with the recorded action: replays are bit-exact
        obs_l.append(obs)
        act_l.append(a32)
        if perturb > 0 and burst == 0 and rng.random() < perturb:
            burst, offset = int(rng.integers(*PERTURB_STEPS)), rng.normal(0.0, PERTURB_SCALE, 2)
        if burst:
            burst -= 1
            a32 = np.clip(a + offset, -1.0, 1.0).astype(np.float32)
        obs, _, term, trunc, _ = env.step(a32)
        if term or trunc:
            break
    return Episode(np.stack(obs_l), np.stack(act_l), env.goal.copy(), env.outcome(), env.behaviour())


def demonstrations(n: int, seed: int = 0, goal: np.ndarray | None = None, perturb: float = 0.0) -> list[Episode]:
    """``n`` successful expert demonstrations, goals (unless ``goal`` is given) and orders
    balanced and shuffled (:func:`.base.balanced_demonstrations`); ``perturb``: see
    :func:`rollout_expert`."""
    if not 0.0 <= perturb < 1.0:
        raise ValueError(f"perturb is a probability per step in [0, 1), got {perturb}")
    return balanced_demonstrations(BlocksEnv(), n, seed, goal, ORDERS, "order",
                                   lambda e, g, m, r: rollout_expert(e, m, r, perturb))
