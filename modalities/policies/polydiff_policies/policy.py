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

import math
import numbers
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from polydiff.plugin import (
    SAMPLERS,
    Control,
    FieldSpec,
    SampleSettings,
    as_device,
    controlled_sample,
    whole_number,
)

from .envs.base import Episode, GoalEnv
from .episodes import normalizers, obs_features

SEED_STRIDE = 1_000_003  # chunk k of environment b is sampled with seed seed_b * SEED_STRIDE + k


class Policy:
    """Receding-horizon control with a trained action-chunk model (see the module docstring).

    ``settings``: how diffusion networks are sampled; ``guidance_scale``: lambda of
    classifier-free guidance over goals (None or 1: the goal-conditioned prediction alone);
    ``execute``: actions executed per chunk (default: the recipe's); ``seed``: the base seed
    of the sampling noise (each environment and chunk gets its own). The sampler, steps,
    guidance scale, execute and device are checked here, not at the first :meth:`act`."""

    def __init__(self, net: nn.Module, fields: Mapping[str, FieldSpec], info: Mapping[str, Any], *,
                 settings: SampleSettings | None = None, guidance_scale: float | None = None,
                 execute: int | None = None, seed: int = 0, device: str | torch.device = "cpu") -> None:
        self.net, self.fields, self.info = net.eval(), dict(fields), dict(info)
        self.settings = settings or SampleSettings(sampler="ddim", steps=3, grid="karras", final_zero=True)
        SAMPLERS.get(self.settings.sampler)  # an unknown sampler: its error (did you mean) now
        whole_number("steps", self.settings.steps)
        if guidance_scale is not None and (isinstance(guidance_scale, bool) or not isinstance(
                guidance_scale, numbers.Real) or not math.isfinite(guidance_scale)):
            raise ValueError(f"guidance_scale must be a finite number (lambda; 0: goal-free) or None, got "
                             f"{guidance_scale!r}")
        self.guidance_scale = guidance_scale
        self.horizon, self.obs_steps = int(info["horizon"]), int(info["obs_steps"])
        self.execute = whole_number("execute", info.get("execute", self.horizon) if execute is None else execute)
        if self.execute > self.horizon:
            raise ValueError(f"execute must be between 1 and the horizon ({self.horizon}), got {self.execute}")
        self.norm = normalizers(info)
        self.angles = info.get("angle_dims") or ()
        self.device = as_device(device)
        self.seed = int(seed)
        self.deterministic = bool(getattr(getattr(net, "module", net), "deterministic", False))
        self.network_calls = 0  # network evaluations (a guided call counts twice)
        self.reset()

    @classmethod
    def from_checkpoint(cls, path: str | Path, *, sampler: str | None = None, steps: int | None = None,
                        guidance_scale: float | None = None, **keywords: Any) -> Policy:
        """A policy from a checkpoint of a ``policies`` model (another modality's is an error
        saying so), sampled as its recipe's ``sample`` section says unless ``sampler`` /
        ``steps`` / ``guidance_scale`` are given; ``keywords``: the class's (``execute``,
        ``seed``, ``device``)."""
        from polydiff.plugin import load

        return cls.from_generator(load(path, modality="policies"), sampler=sampler, steps=steps,
                                  guidance_scale=guidance_scale, **keywords)

    @classmethod
    def from_generator(cls, generator: Any, *, sampler: str | None = None, steps: int | None = None,
                       guidance_scale: float | None = None, **keywords: Any) -> Policy:
        """A policy of a loaded ``policies`` model (``polydiff.load(...)``), sampled as for
        :meth:`from_checkpoint`."""
        if generator.modality.name != "policies":
            raise ValueError(f"a {generator.modality.name!r} model is not a policy: Policy needs a 'policies' model")
        scale = generator.config.sample.guidance_scale if guidance_scale is None else guidance_scale
        return cls(generator.net, generator.fields, generator.info, settings=generator.settings(sampler, steps),
                   guidance_scale=scale, **keywords)

    def __repr__(self) -> str:
        how = "behaviour cloning" if self.deterministic else f"{self.settings.sampler} {self.settings.steps} steps"
        scale = "no goal guidance" if self.guidance_scale is None else f"lambda {self.guidance_scale:g}"
        return (f"<Policy {self.info.get('env') or self.info.get('dataset')}: {how}, {scale}, horizon {self.horizon}, "
                f"execute {self.execute}>")

    # -- state ---------------------------------------------------------------------------------
    def reset(self, n: int = 1, seeds: Sequence[int] | None = None) -> None:
        """Forget the observation history and queued actions of ``n`` environments; ``seeds``
        (one per environment) seed their sampling noise (default: the policy's seed)."""
        self.n = n = whole_number("n", n)
        self.history: list[list[np.ndarray]] = [[] for _ in range(n)]
        self.queue: list[list[np.ndarray]] = [[] for _ in range(n)]
        self.env_seeds = list(seeds) if seeds is not None else [self.seed + i for i in range(n)]
        if len(self.env_seeds) != n:
            raise ValueError(f"{len(self.env_seeds)} seeds for {n} environments")
        self.chunks = [0] * n

    def act(self, obs: np.ndarray, goal: np.ndarray | None) -> np.ndarray:
        """The next action (action_dim,) of one environment (after :meth:`reset` with ``n=1``)
        observing ``obs`` (obs_dim,) with goal ``goal`` (goal_dim,), or None: goal-free."""
        if self.n != 1:
            raise ValueError(f"act drives one environment, but reset({self.n}) set up {self.n}: use act_batch, or "
                             "reset() first")
        obs, goal = self._inputs(obs, goal, ())
        return self.act_batch(obs[None], None if goal is None else goal[None])[0]

    def act_batch(self, obs: np.ndarray, goal: np.ndarray | None, active: Sequence[bool] | None = None) -> np.ndarray:
        """The next actions (B, A) of ``B = n`` environments observing ``obs`` (B, obs_dim)
        with goals ``goal`` (B, goal_dim; None or NaN rows: goal-free). Environments that are
        not ``active`` (finished) are not sampled; their rows are zeros."""
        obs, goal = self._inputs(obs, goal, (self.n,))
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
            g = None if goal is None else goal[need]
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

    def _inputs(self, obs: Any, goal: Any, lead: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray | None]:
        """``obs`` and ``goal`` (None: goal-free) as float32 arrays of shape ``lead + (dim,)``,
        else an error naming the argument and the shape expected; non-finite observations are
        refused (their actions would be NaN)."""
        if isinstance(obs, tuple) and len(obs) == 2 and isinstance(obs[1], dict):
            raise ValueError("obs is the (obs, info) pair env.reset returns: pass the observation alone "
                             "(obs, info = env.reset(...))")
        env = self.info.get("env")
        rows = f" (one row per environment: reset({self.n}))" if lead else ""
        out = []
        for name, value in (("obs", obs), ("goal", goal)):
            if name == "goal" and value is None:
                out.append(None)
                continue
            shape = (*lead, int(self.info[f"{name}_dim"]))
            try:
                a = np.asarray(value, dtype=np.float32)
            except (TypeError, ValueError):
                a = None
            if a is None or a.shape != shape:
                raise ValueError(f"{name} must have shape {shape}{rows}" + (f" for environment {env!r}" if env else "")
                                 + (" or be None (goal-free)" if name == "goal" else "") + ", got "
                                 + (f"shape {a.shape}" if a is not None else repr(value)))
            out.append(a)
        if not np.isfinite(out[0]).all():
            raise ValueError(f"obs holds NaN or infinite values ({obs!r}): the policy's actions would be NaN")
        return out[0], out[1]

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
        return int(self.settings.steps) * int(getattr(SAMPLERS.get(self.settings.sampler), "nfe_per_step", 1))


def _env_factory(make_env: str | Callable[[], GoalEnv]) -> Callable[[], GoalEnv]:
    """``make_env`` as rollout takes it: an environment name (made with its default options)
    or a function that makes one environment."""
    if isinstance(make_env, str):
        from .envs import env_class, make

        env_class(make_env)  # an unknown name: the list of environments, now
        return lambda: make(make_env)
    if not callable(make_env):
        what = f"a {type(make_env).__name__} instance" if isinstance(make_env, GoalEnv) else type(make_env).__name__
        raise TypeError(f"make_env must be an environment name ('reach') or a function that makes one environment "
                        f"(e.g. lambda: envs.make('reach')): rollout makes n of them; got {what}")
    return make_env


def _check_env(info: Mapping[str, Any], env: GoalEnv) -> None:
    """An environment other than the one the policy was trained on (another name, or other
    observation, action or goal sizes): an error saying both."""
    trained = info.get("env")
    mine = [int(info[f"{d}_dim"]) for d in ("obs", "action", "goal")]
    theirs = [env.obs_dim, env.action_dim, env.goal_dim]
    if (trained and env.name != trained) or mine != theirs:
        raise ValueError(f"this policy was trained on {trained or info.get('dataset')!r} (obs, action, goal: "
                         f"{mine[0]}, {mine[1]}, {mine[2]} values); environment {env.name!r} has "
                         f"{theirs[0]}, {theirs[1]}, {theirs[2]}")


# ---------------------------------------------------------------------------------------------
# rollouts
# ---------------------------------------------------------------------------------------------

def rollout(policy: Policy, make_env: str | Callable[[], GoalEnv], n: int, *, goals: np.ndarray | None = None,
            goal_free: bool = False, start_seeds: Sequence[int] | None = None, noise_seeds: Sequence[int] | None = None,
            max_steps: int | None = None, record_states: bool = False) -> tuple[list[Episode], dict[str, float]]:
    """Run ``n`` episodes in lockstep (one policy batch per control step).

    ``make_env``: an environment name (``"reach"``, made with its default options) or a
    function that makes one environment (``lambda: envs.make("pusht", ...)``), of the kind the
    policy was trained on; ``max_steps``: the episodes' step limit (default: the environment's);
    ``goals`` (n, goal_dim): the commanded goals (default: the environment's goals in turn);
    ``goal_free``: the policy sees no goal (success is then "reached any goal"); ``start_seeds``:
    the reset seed of each episode (equal seeds give the same start: behaviour diversity from
    one start); ``noise_seeds``: the policy's sampling seeds per episode. Returns the episodes
    (``meta``: ``success``, ``score`` = max reward, ``steps``, and ``states`` when
    ``record_states``) and timing: ``policy_seconds``, ``actions``, ``actions_per_second``
    (policy time only; the simulator excluded) and ``network_calls``."""
    n = whole_number("n", n)
    if not isinstance(policy, Policy):
        raise TypeError(f"policy must be a Policy, got {type(policy).__name__}"
                        + (": wrap the model, Policy.from_generator(gen)" if hasattr(policy, "modality") else ""))
    make_env = _env_factory(make_env)
    for name, seeds in (("start_seeds", start_seeds), ("noise_seeds", noise_seeds)):
        if seeds is not None and len(seeds) != n:
            raise ValueError(f"{name}: got {len(seeds)} seed(s) for n={n} episodes (one per episode)")
    envs = [make_env() for _ in range(n)]
    _check_env(policy.info, envs[0])
    limit = envs[0].max_steps if max_steps is None else whole_number("max_steps", max_steps)
    start_seeds = list(range(n)) if start_seeds is None else list(start_seeds)
    if goals is None:
        table = envs[0].goals
        goals = np.stack([table[i % len(table)] for i in range(n)])
    goals = np.asarray(goals, dtype=np.float32)
    if goals.shape != (n, envs[0].goal_dim):
        raise ValueError(f"goals must have shape (n, goal_dim) = ({n}, {envs[0].goal_dim}), one goal per episode, "
                         f"got {goals.shape}")
    obs = np.stack([env.reset(seed=int(s), options={"goal": goals[i]})[0] for i, (env, s) in
                    enumerate(zip(envs, start_seeds))])
    policy.reset(n, noise_seeds)
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

