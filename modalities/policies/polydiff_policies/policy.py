"""Policies as Gymnasium loops use them, and batched rollouts in the environments.

:class:`Policy` wraps a trained network for receding-horizon control: it keeps the last
``obs_steps`` observations of each environment, samples a chunk of ``horizon`` actions when
its queue is empty and executes the first ``execute`` of them (Diffusion Policy's scheme).
Diffusion networks are sampled with any core sampler (BESO: DDIM, 3 steps, the final step to
sigma = 0); classifier-free guidance over goals mixes the goal-conditioned and goal-free
predictions (``out = uncond + lambda (cond - uncond)``, BESO's lambda); ``lambda = 0`` or a
``None`` goal gives the goal-free policy of the same model. The behaviour-cloning MLP predicts
its chunk directly.

    policy = Policy.from_checkpoint("runs/reach/checkpoints/last.ckpt")
    obs, info = env.reset(seed=0)
    policy.reset()
    while True:
        obs, reward, terminated, truncated, info = env.step(policy.act(obs, env.goal))
        if terminated or truncated:
            break

:func:`rollout` runs many environments in lockstep with one policy batch, recording episodes
with what each achieved (``outcome``), how (``behaviour``) and, for Push-T, the score.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from polydiff.plugin import Control, FieldSpec, SampleSettings, controlled_sample

from .envs.base import Episode, GoalEnv
from .episodes import normalizers, obs_features

SEED_STRIDE = 1_000_003  # chunk k of environment b is sampled with seed seed_b * SEED_STRIDE + k


class Policy:
    """Receding-horizon control with a trained action-chunk model (see the module docstring).

    ``settings``: how diffusion networks are sampled; ``guidance_scale``: lambda of
    classifier-free guidance over goals (None or 1: the goal-conditioned prediction alone);
    ``execute``: actions executed per chunk (default: the recipe's); ``seed``: the base seed
    of the sampling noise (each environment and chunk gets its own)."""

    def __init__(self, net: nn.Module, fields: Mapping[str, FieldSpec], info: Mapping[str, Any], *,
                 settings: SampleSettings | None = None, guidance_scale: float | None = None,
                 execute: int | None = None, seed: int = 0, device: str | torch.device = "cpu") -> None:
        self.net, self.fields, self.info = net.eval(), dict(fields), dict(info)
        self.settings = settings or SampleSettings(sampler="ddim", steps=3, grid="karras", final_zero=True)
        self.guidance_scale = guidance_scale
        self.horizon, self.obs_steps = int(info["horizon"]), int(info["obs_steps"])
        self.execute = int(execute or info.get("execute") or self.horizon)
        if not 1 <= self.execute <= self.horizon:
            raise ValueError(f"execute must be between 1 and the horizon ({self.horizon}), got {self.execute}")
        self.norm = normalizers(info)
        self.angles = info.get("angle_dims") or ()
        self.device = torch.device(device)
        self.seed = int(seed)
        self.deterministic = bool(getattr(getattr(net, "module", net), "deterministic", False))
        self.network_calls = 0  # network evaluations (a guided call counts twice)
        self.reset()

    @classmethod
    def from_checkpoint(cls, path: str | Path, *, sampler: str | None = None, steps: int | None = None,
                        guidance_scale: float | None = None, **keywords: Any) -> Policy:
        """A policy from a checkpoint, sampled as its recipe's ``sample`` section says unless
        ``sampler`` / ``steps`` / ``guidance_scale`` are given."""
        from polydiff.plugin import load

        gen = load(path)
        settings, control = _recipe_settings(gen.config.sample, sampler, steps)
        scale = control.guidance_scale if guidance_scale is None else guidance_scale
        return cls(gen.net, gen.fields, gen.info, settings=settings, guidance_scale=scale, **keywords)

    # -- state ---------------------------------------------------------------------------------
    def reset(self, n: int = 1, seeds: Sequence[int] | None = None) -> None:
        """Forget the observation history and queued actions of ``n`` environments; ``seeds``
        (one per environment) seed their sampling noise (default: the policy's seed)."""
        self.n = n
        self.history: list[list[np.ndarray]] = [[] for _ in range(n)]
        self.queue: list[list[np.ndarray]] = [[] for _ in range(n)]
        self.env_seeds = list(seeds) if seeds is not None else [self.seed + i for i in range(n)]
        if len(self.env_seeds) != n:
            raise ValueError(f"{len(self.env_seeds)} seeds for {n} environments")
        self.chunks = [0] * n

    def act(self, obs: np.ndarray, goal: np.ndarray | None) -> np.ndarray:
        """The next action of one environment (after :meth:`reset` with ``n=1``)."""
        return self.act_batch(np.asarray(obs)[None], None if goal is None else np.asarray(goal)[None])[0]

    def act_batch(self, obs: np.ndarray, goal: np.ndarray | None, active: Sequence[bool] | None = None) -> np.ndarray:
        """The next actions (B, A) of ``B = n`` environments observing ``obs`` (B, obs_dim)
        with goals ``goal`` (B, goal_dim; None or NaN rows: goal-free). Environments that are
        not ``active`` (finished) are not sampled; their rows are zeros."""
        obs = np.asarray(obs, dtype=np.float32)
        if obs.shape[0] != self.n:
            raise ValueError(f"{obs.shape[0]} observations for {self.n} environments: call reset(n) first")
        active = [True] * self.n if active is None else list(active)
        for b in range(self.n):
            if active[b]:
                h = self.history[b]
                h.append(obs[b])
                if len(h) == 1:
                    h.extend([obs[b]] * (self.obs_steps - 1))  # pad the window with the first observation
                del h[:-self.obs_steps]
        need = [b for b in range(self.n) if active[b] and not self.queue[b]]
        if need:
            g = None if goal is None else np.asarray(goal, dtype=np.float32)[need]
            chunks = self.sample_chunks(np.stack([np.stack(self.history[b]) for b in need]), g,
                                        [self.env_seeds[b] * SEED_STRIDE + self.chunks[b] for b in need])
            for j, b in enumerate(need):
                self.queue[b] = list(chunks[j, :self.execute])
                self.chunks[b] += 1
        out = np.zeros((self.n, int(self.info["action_dim"])), dtype=np.float32)
        for b in range(self.n):
            if active[b]:
                out[b] = self.queue[b].pop(0)
        return out

    # -- sampling ------------------------------------------------------------------------------
    def sample_chunks(self, obs: np.ndarray, goal: np.ndarray | None, seeds: Sequence[int]) -> np.ndarray:
        """Action chunks (B, horizon, A) in environment units for raw observation windows
        ``obs`` (B, obs_steps, obs_dim) and goals (B, goal_dim) or None."""
        b = len(obs)
        o = torch.from_numpy(np.asarray(self.norm["obs"].encode(obs_features(obs, self.angles)), dtype=np.float32))
        if goal is None:
            g = torch.full((b, int(self.info["goal_dim"])), float("nan"))
        else:
            g = torch.from_numpy(np.asarray(self.norm["goal"].encode(goal), dtype=np.float32))
        scale = self.guidance_scale
        if scale == 0:
            g = torch.full_like(g, float("nan"))  # lambda = 0: the goal-free prediction alone
        guided = scale is not None and scale not in (0, 1) and not bool(torch.isnan(g).all())
        o, g = o.to(self.device), g.to(self.device)
        with torch.no_grad():
            if self.deterministic:
                a = self.net({"obs": o, "goal": g})["actions"]
                self.network_calls += b
            else:
                spec = {"actions": (b, self.horizon, int(self.info["action_dim"])), "obs": o, "goal": g}
                control = Control(guidance_scale=scale, condition_keys=["goal"]) if guided else Control()
                state = controlled_sample(self.net, self.fields, spec, self.settings, control,
                                          seed=torch.tensor(list(seeds), dtype=torch.long), device=self.device)
                a = state["actions"]
                self.network_calls += b * self.nfe * (2 if guided else 1)
        return np.asarray(self.norm["actions"].decode(a.float().cpu().numpy()), dtype=np.float32)

    @property
    def nfe(self) -> int:
        """Network evaluations per chunk (without guidance's second pass; 1 for BC)."""
        if self.deterministic:
            return 1
        from polydiff.plugin import SAMPLERS

        return int(self.settings.steps) * int(getattr(SAMPLERS.get(self.settings.sampler), "nfe_per_step", 1))


def _recipe_settings(sample: Any, sampler: str | None, steps: int | None) -> tuple[SampleSettings, Control]:
    """The sampling settings and control a recipe's ``sample`` section describes."""
    from polydiff.plugin import settings_of

    settings = settings_of(None, sampler=sampler or sample.sampler, steps=steps or sample.steps,
                           **dict(sample.options or {}))
    return settings, Control(guidance_scale=sample.guidance_scale)


# ---------------------------------------------------------------------------------------------
# rollouts
# ---------------------------------------------------------------------------------------------

def rollout(policy: Policy, make_env: Callable[[], GoalEnv], n: int, *, goals: np.ndarray | None = None,
            goal_free: bool = False, start_seeds: Sequence[int] | None = None, noise_seeds: Sequence[int] | None = None,
            max_steps: int | None = None, record_states: bool = False) -> tuple[list[Episode], dict[str, float]]:
    """Run ``n`` episodes in lockstep (one policy batch per control step).

    ``goals`` (n, goal_dim): the commanded goals (default: the environment's goals in turn);
    ``goal_free``: the policy sees no goal (success is then "reached any goal"); ``start_seeds``:
    the reset seed of each episode (equal seeds give the same start: behaviour diversity from
    one start); ``noise_seeds``: the policy's sampling seeds per episode. Returns the episodes
    (``meta``: ``success``, ``score`` = max reward, ``steps``, and ``states`` when
    ``record_states``) and timing: ``policy_seconds``, ``actions``, ``actions_per_second``
    (policy time only; the simulator excluded) and ``network_calls``."""
    envs = [make_env() for _ in range(n)]
    start_seeds = list(range(n)) if start_seeds is None else list(start_seeds)
    if goals is None:
        table = envs[0].goals
        goals = np.stack([table[i % len(table)] for i in range(n)])
    goals = np.asarray(goals, dtype=np.float32)
    obs = np.stack([env.reset(seed=int(s), options={"goal": goals[i]})[0] for i, (env, s) in
                    enumerate(zip(envs, start_seeds))])
    policy.reset(n, noise_seeds)
    limit = max_steps or envs[0].max_steps
    done = np.zeros(n, dtype=bool)
    score = np.zeros(n)
    success = np.zeros(n, dtype=bool)
    steps = np.zeros(n, dtype=int)
    obs_log: list[list[np.ndarray]] = [[o.copy()] for o in obs]
    act_log: list[list[np.ndarray]] = [[] for _ in range(n)]
    states: list[list[np.ndarray]] = [[env.get_state()] for env in envs] if record_states else []
    calls0, spent, acted = policy.network_calls, 0.0, 0
    for _ in range(limit):
        if done.all():
            break
        t0 = time.perf_counter()
        actions = policy.act_batch(obs, None if goal_free else goals, active=~done)
        spent += time.perf_counter() - t0
        acted += int((~done).sum())
        for b, env in enumerate(envs):
            if done[b]:
                continue
            o, r, term, trunc, info = env.step(actions[b])
            obs[b] = o
            act_log[b].append(actions[b])
            steps[b] += 1
            score[b] = max(score[b], float(r))
            success[b] = env.outcome() in env.goal_labels if goal_free else bool(info.get("success", False))
            if record_states:
                states[b].append(env.get_state())
            if term or trunc or steps[b] >= limit:
                done[b] = True
            else:
                obs_log[b].append(o.copy())
    episodes = []
    for b, env in enumerate(envs):
        k = len(act_log[b])
        meta: dict[str, Any] = {"success": bool(success[b]), "score": float(score[b]), "steps": int(steps[b]),
                                "goal_free": goal_free, "env": env.name}
        if record_states:
            meta["states"] = np.stack(states[b])
        episodes.append(Episode(np.stack(obs_log[b][:k]).astype(np.float32), np.stack(act_log[b]).astype(np.float32),
                                goals[b], env.outcome(), env.behaviour(), meta))
    timing = {"policy_seconds": spent, "actions": float(acted), "network_calls": float(policy.network_calls - calls0),
              "actions_per_second": acted / spent if spent > 0 else float("nan")}
    return episodes, timing


def control_rate(policy: Policy, make_env: Callable[[], GoalEnv], chunks: int = 20, seed: int = 0) -> float:
    """Actions per second of one robot's policy computation on this machine: ``execute``
    actions per chunk over the median time of sampling one chunk (batch 1, the environment's
    first goal; two warm-up chunks are not timed)."""
    env = make_env()
    obs, _ = env.reset(seed=seed)
    window = np.stack([obs] * policy.obs_steps)[None]
    goal = np.asarray(env.goals[:1], dtype=np.float32)
    times = []
    for k in range(chunks + 2):
        t0 = time.perf_counter()
        policy.sample_chunks(window, goal, [seed * SEED_STRIDE + k])
        times.append(time.perf_counter() - t0)
    return policy.execute / float(np.median(times[2:]))

