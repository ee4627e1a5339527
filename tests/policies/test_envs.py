"""Policies environments: Gymnasium API, seeding, state round trips, collisions, labels, and
the scripted experts (successful on open-loop replay, covering every goal and route / order)."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from polydiff_policies.envs import blocks as B
from polydiff_policies.envs import reach as R
from polydiff_policies.envs.base import Episode, GoalEnv

pytestmark = pytest.mark.usefixtures("one_thread")

MODULES = {"reach": R, "blocks": B}
ENVS = {"reach": R.ReachEnv, "blocks": B.BlocksEnv}


@pytest.fixture(scope="module")
def demos() -> dict[str, list[Episode]]:
    return {name: mod.demonstrations(40, seed=0) for name, mod in MODULES.items()}


def replay(env: GoalEnv, ep: Episode) -> tuple[np.ndarray, bool, dict]:
    """Open-loop replay of ``ep``'s actions from its recorded start state: the observations,
    whether the episode terminated at its last action (and not before), and the last info."""
    obs, info = env.reset(options={"goal": ep.goal, "state": ep.meta["state"]})
    seen, term = [obs], False
    for t, a in enumerate(ep.actions):
        assert not term, f"terminated early at step {t}"
        obs, _, term, trunc, info = env.step(a)
        assert not trunc or t == len(ep.actions) - 1
        seen.append(obs)
    return np.stack(seen), term, info


# -- shared API ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ENVS)
def test_gymnasium_api(name):
    env = ENVS[name]()
    check_env(env, skip_render_check=True)
    assert env.name == name
    assert env.observation_space.shape == (env.obs_dim,) and env.action_space.shape == (env.action_dim,)
    assert env.observation_space.dtype == np.float32 and env.action_space.dtype == np.float32
    assert env.goals.shape[1] == env.goal_dim and env.goals.dtype == np.float32
    obs, info = env.reset(seed=0)
    assert obs.dtype == np.float32 and obs.shape == (env.obs_dim,)
    assert set(info) >= {"success", "outcome", "behaviour"}
    assert any(np.allclose(env.goal, g) for g in env.goals)  # a random goal is one of ``goals``
    obs, reward, _, _, info = env.step(env.action_space.sample())
    assert obs.dtype == np.float32 and isinstance(reward, float)
    assert isinstance(info["outcome"], str) and isinstance(info["behaviour"], str)


@pytest.mark.parametrize("name", ENVS)
def test_seeding_reproducible(name):
    def run(seed: int) -> np.ndarray:
        env = ENVS[name]()
        obs, _ = env.reset(seed=seed)
        rng = np.random.default_rng(7)
        traj = [np.concatenate([env.goal, obs])]
        for _ in range(40):
            obs, *_ = env.step(rng.uniform(-1, 1, env.action_dim).astype(np.float32))
            traj.append(np.concatenate([env.goal, obs]))
        return np.stack(traj)

    a, b = run(3), run(3)
    np.testing.assert_array_equal(a, b)
    starts = {tuple(run(s)[0]) for s in range(6)}
    assert len(starts) == 6  # the seed moves the start state (and picks the goal)


@pytest.mark.parametrize("name", ENVS)
def test_state_round_trip(name):
    env = ENVS[name]()
    env.reset(seed=1)
    rng = np.random.default_rng(0)
    for _ in range(10):
        env.step(rng.uniform(-1, 1, 2))
    s = env.get_state()
    actions = rng.uniform(-1, 1, (15, 2))
    first = [env.step(a) for a in actions]
    env.set_state(s)
    np.testing.assert_array_equal(env.get_state(), s)
    second = [env.step(a) for a in actions]
    for (o1, r1, *_, i1), (o2, r2, *_, i2) in zip(first, second):
        np.testing.assert_array_equal(o1, o2)
        assert r1 == r2 and i1 == i2
    # reset from a recorded state (the full vector, or just an observation)
    obs, _ = env.reset(options={"state": s})
    np.testing.assert_array_equal(env.get_state(), s)
    obs2, _ = env.reset(options={"state": obs})
    np.testing.assert_array_equal(obs, obs2)


# -- experts ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ENVS)
def test_demos_succeed_on_replay(name, demos):
    env = ENVS[name]()
    for ep in demos[name]:
        T = len(ep.obs)
        assert ep.obs.shape == (T, env.obs_dim) and ep.actions.shape == (T, env.action_dim)
        assert ep.obs.dtype == np.float32 and ep.actions.dtype == np.float32 and ep.goal.shape == (env.goal_dim,)
        assert T <= env.max_steps
        seen, term, info = replay(env, ep)
        np.testing.assert_array_equal(seen[:-1], ep.obs)
        assert term and info["success"]
        assert info["outcome"] == ep.outcome and info["behaviour"] == ep.behaviour
        # the goal's label is the outcome
        assert ep.outcome == env.goal_labels[int(np.argmin(np.abs(env.goals - ep.goal).sum(1)))]
        assert ep.meta["success"] is True


@pytest.mark.parametrize("name", ENVS)
def test_demos_multimodal(name, demos):
    eps = demos[name]
    goals = MODULES[name].GOALS
    modes = R.ROUTES if name == "reach" else B.ORDERS
    combos = Counter((int(np.argmin(np.abs(goals - e.goal).sum(1))), e.behaviour) for e in eps)
    assert set(combos) == {(g, m) for g in range(len(goals)) for m in modes}  # every goal by every mode
    assert max(combos.values()) - min(combos.values()) <= 1  # balanced
    assert len({e.obs.tobytes() for e in eps}) == len(eps)  # no two demos alike
    # a fixed goal: still both modes
    g = goals[-1]
    eps = MODULES[name].demonstrations(6, seed=1, goal=g)
    assert all(np.allclose(e.goal, g) for e in eps)
    assert {e.behaviour for e in eps} == set(modes)
    # reproducible
    a, b = MODULES[name].demonstrations(3, seed=5), MODULES[name].demonstrations(3, seed=5)
    assert all(np.array_equal(x.actions, y.actions) for x, y in zip(a, b))


# -- reach -----------------------------------------------------------------------------------
def test_reach_block_stops_and_slides():
    env = R.ReachEnv()
    env.reset(options={"state": np.array([0.0, -0.7]), "goal": R.GOALS[1]})
    for _ in range(20):  # straight up into the block: stops at its bottom face
        obs, *_ = env.step(np.array([0.0, 1.0]))
    assert obs[0] == 0.0 and obs[1] == pytest.approx(R._BY0)
    for _ in range(10):  # aiming up-right slides along the face
        obs, *_ = env.step(np.array([0.2, 1.0]))
    assert obs[0] > 0.05 and obs[1] == pytest.approx(R._BY0)
    env.reset(options={"state": np.array([-0.7, 0.0])})
    for _ in range(20):  # from the left, straight right: stops at its left face
        obs, *_ = env.step(np.array([0.7, 0.0]))
    assert obs[0] == pytest.approx(R._BX0) and obs[1] == 0.0


def test_reach_random_actions_stay_outside_block_and_in_arena():
    env = R.ReachEnv()
    rng = np.random.default_rng(0)
    for ep in range(20):
        env.reset(seed=ep)
        for _ in range(60):
            obs, *_ = env.step(rng.uniform(-1, 1, 2))
            x, y = float(obs[0]), float(obs[1])
            assert not (R._BX0 + 1e-6 < x < R._BX1 - 1e-6 and R._BY0 + 1e-6 < y < R._BY1 - 1e-6)  # float32 obs
            assert max(abs(x), abs(y)) <= 1 - R.AGENT_R + 1e-6


def drive(env: GoalEnv, waypoints: list[tuple[float, float]], steps: int = 15) -> list[tuple]:
    """Step towards each waypoint in turn for ``steps`` steps (or until the episode ends)."""
    out = []
    for w in waypoints:
        for _ in range(steps):
            out.append(env.step(np.array(w)))
            if out[-1][2]:
                return out
    return out


@pytest.mark.parametrize("goal,path,outcome,behaviour,reward", [
    (0, [(-0.65, -0.6), (-0.65, 0.45), (-0.6, 0.75)], "goal0", "left", 1.0),
    (0, [(0.65, -0.6), (0.65, 0.45), (-0.6, 0.45), (-0.6, 0.75)], "goal0", "right", 1.0),
    (2, [(-0.65, -0.6), (-0.65, 0.45), (0.0, 0.75)], "goal1", "left", 0.0),  # the wrong goal
    # up the left side, back down, round to the right and up: the first passage counts
    (1, [(-0.65, -0.6), (-0.65, 0.45), (-0.65, -0.6), (0.65, -0.6), (0.65, 0.45), (0.0, 0.75)], "goal1", "left", 1.0),
])
def test_reach_labels(goal, path, outcome, behaviour, reward):
    env = R.ReachEnv()
    _, info = env.reset(options={"state": np.array([0.0, -0.8]), "goal": R.GOALS[goal]})
    assert info == {"success": False, "outcome": "", "behaviour": ""}
    out = drive(env, path)
    _, r, term, trunc, info = out[-1]
    assert term and not trunc and r == reward
    assert info["outcome"] == env.outcome() == outcome and info["behaviour"] == env.behaviour() == behaviour
    assert info["success"] == (reward == 1.0)
    assert all(o[1] == 0.0 and not o[2] for o in out[:-1])


def test_reach_behaviour_undetermined_and_truncation():
    env = R.ReachEnv()
    env.reset(options={"state": np.array([0.0, -0.8]), "goal": R.GOALS[1]})
    out = drive(env, [(-0.65, -0.6), (-0.65, 0.1)])  # beside the block, not yet past it
    assert env.behaviour() == "" and env.outcome() == ""
    for _ in range(env.max_steps):
        *_, term, trunc, _ = env.step(np.array([-0.65, 0.1]))
        if trunc:
            break
    assert trunc and not term and len(out) + 1 <= env.max_steps


# -- blocks ----------------------------------------------------------------------------------
def overlap_free(obs: np.ndarray, eps: float = 1e-6) -> bool:
    a, pa, pb = obs[:2].astype(np.float64), obs[2:4].astype(np.float64), obs[4:6].astype(np.float64)
    inside = all(np.all(np.abs(p) <= 1 - r + eps) for p, r in ((a, B.AGENT_R), (pa, B.BLOCK_R), (pb, B.BLOCK_R)))
    return inside and math.dist(pa, pb) >= 2 * B.BLOCK_R - eps


def test_blocks_push():
    env = B.BlocksEnv()
    env.reset(options={"state": np.array([-0.3, -0.5, -0.3, -0.3, 0.3, -0.15])})
    obs, *_ = env.step(np.array([-0.3, 0.0]))  # not yet in contact (gap 0.05): just touches
    assert obs[1] == pytest.approx(-0.45) and obs[3] == pytest.approx(-0.3)
    obs, *_ = env.step(np.array([-0.3, 0.0]))  # in contact: the block moves with the agent
    assert obs[1] == pytest.approx(-0.4) and obs[3] == pytest.approx(-0.25)
    np.testing.assert_allclose(obs[4:], [0.3, -0.15])  # B untouched


def test_blocks_chain_and_wall():
    env = B.BlocksEnv()
    # A pushed right into B, both pushed into the right wall
    env.reset(options={"state": np.array([-0.2, 0.0, 0.0, 0.0, 0.25, 0.0])})
    for _ in range(40):
        obs, *_ = env.step(np.array([1.0, 0.0]))
        assert overlap_free(obs)
    assert obs[4] == pytest.approx(1 - B.BLOCK_R, abs=1e-6) and obs[2] == pytest.approx(1 - 3 * B.BLOCK_R, abs=1e-4)
    assert math.dist(obs[:2], obs[2:4]) >= B.AGENT_R + B.BLOCK_R - 1e-4  # the agent cannot squash them


def test_blocks_pushing_about_keeps_invariants():
    """Push random blocks into each other and into the walls (the expert's pushing towards
    far-away points, plus noise): blocks never overlap, nothing leaves the arena, and the agent
    does not sink into a block."""
    env = B.BlocksEnv()
    rng = np.random.default_rng(0)
    touches = walls = 0
    for ep in range(6):
        obs, _ = env.reset(seed=ep)
        for t in range(150):
            if t % 25 == 0:  # a new block to push, at the other block or towards a corner
                i, corner = int(rng.integers(2)), rng.choice([-1.2, 1.2], 2) if rng.random() < 0.5 else None
            o = obs.astype(np.float64)
            blk, other = o[2 + 2 * i:4 + 2 * i], o[4 - 2 * i:6 - 2 * i]
            a = B.expert_action(o[:2], blk, 2 * other - blk if corner is None else corner, other)
            obs, *_ = env.step(np.clip(a + rng.normal(0, 0.05, 2), -1, 1))
            assert overlap_free(obs)
            # (squeezed between a block and a wall corner, the agent may sink in by a fraction of a millimetre)
            assert min(math.dist(obs[:2], obs[2:4]), math.dist(obs[:2], obs[4:6])) >= B.AGENT_R + B.BLOCK_R - 5e-4
            touches += math.dist(obs[2:4], obs[4:6]) < 2 * B.BLOCK_R + 1e-4
            walls += bool(np.any(np.abs(obs[2:]) > 1 - B.BLOCK_R - 1e-4))
    assert touches > 10 and walls > 10  # the test did push blocks together and against walls


def test_blocks_labels():
    env = B.BlocksEnv()
    t1, t2 = B.TARGETS.astype(np.float64)
    # B just below target 2 with the agent under it, A just below target 1
    start = np.array([t2[0], t2[1] - 0.35, t1[0], t1[1] - 0.2, t2[0], t2[1] - 0.2])
    _, info = env.reset(options={"state": start, "goal": B.GOALS[0]})
    assert info == {"success": False, "outcome": "", "behaviour": ""}
    for _ in range(10):
        _, r, term, _, info = env.step(np.array([t2[0], t2[1] - B.BLOCK_R - B.AGENT_R]))
    assert info["outcome"] == "B2" and info["behaviour"] == "B" and not term and r == 0.0
    s = env.get_state()
    s[:2] = [t1[0], t1[1] - 0.35]  # move the agent under A (keeps the order bookkeeping)
    env.set_state(s)
    for _ in range(10):
        _, r, term, _, info = env.step(np.array([t1[0], t1[1] - B.BLOCK_R - B.AGENT_R]))
        if term:
            break
    assert info == {"success": True, "outcome": "A1B2", "behaviour": "B"} and term and r == 1.0
    # the same scene under the other assignment is not a success
    env.reset(options={"state": env.get_state(), "goal": B.GOALS[1]})
    assert not env.success() and env.outcome() == "A1B2"
    # the crossed assignment, reached A first
    env.reset(options={"state": np.array([0.0, -0.9, *t2, *t1]), "goal": B.GOALS[1]})
    assert env.success() and env.outcome() == "A2B1"


def test_blocks_perturbed_demos_record_the_experts_corrections() -> None:
    """DART demonstrations: executed actions are perturbed in bursts, the recorded ones are the
    expert's, so replaying the record leaves the recorded states; every demo still succeeds."""

    def drifts(ep: Episode) -> bool:
        env = B.BlocksEnv()
        obs, _ = env.reset(options={"goal": ep.goal, "state": ep.meta["state"]})
        for t, a in enumerate(ep.actions):
            if not np.array_equal(obs, ep.obs[t]):
                return True
            obs, _, term, trunc, _ = env.step(a)
            if term or trunc:
                return t < len(ep.actions) - 1
        return False

    eps = B.demonstrations(6, seed=3, perturb=0.1)
    assert all(ep.meta["success"] and ep.behaviour in B.ORDERS for ep in eps)
    assert sum(drifts(ep) for ep in eps) >= 5  # bursts start at 10 % of the steps: nearly every episode has one
    assert not any(drifts(ep) for ep in B.demonstrations(6, seed=3))  # unperturbed: exact replays
    with pytest.raises(ValueError, match="perturb"):
        B.demonstrations(2, perturb=1.5)
