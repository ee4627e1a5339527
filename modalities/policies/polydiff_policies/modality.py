"""The ``policies`` modality: goal-conditioned diffusion policies over action chunks.

States (training): ``actions`` (B, horizon, A), the Gaussian field, given ``obs`` (B,
obs_steps, F), the window of normalised observation features, and ``goal`` (B, G), a vector
condition (``loss.cond_drop`` drops it: classifier-free guidance and goal-free policies).
Sampling is a *rollout*: :meth:`PoliciesModality.sample` runs the policy receding-horizon in
the dataset's environment, so ``polydiff sample CKPT --num 50`` writes 50 episodes and
``polydiff evaluate`` scores them (success, goal coverage, behaviour entropy, Push-T score).

Datasets: ``reach`` (default, scripted multi-route demonstrations), ``blocks`` (scripted
multi-block pushing in either order), ``pusht`` (the 206 human Push-T demonstrations of
``../shared/data/robot_pusht``) and ``file`` (users' episode ``.npz`` files, see
:mod:`.episodes`). Networks: ``transformer`` (BESO's denoiser; with the EDM process it is
BESO, with ``vp_discrete_cosine`` and 100 DDPM steps the Diffusion-Policy baseline) and
``mlp`` (behaviour cloning, objective ``behaviour_cloning``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from polydiff.plugin import DataBundle, FieldSpec, GaussianProcess, Modality, Plain, State, shared_file, whole_number

from . import envs
from . import episodes as E
from .envs.base import Episode
from .metrics import rollout_metrics
from .nets import ActionTransformer, MLPPolicy
from .policy import Policy, control_rate, rollout

ROLLOUTS_FILE = "rollouts.npz"
BESO_EDM = {"sigma_min": 0.05, "sigma_max": 1.0, "sigma_data": 0.5, "rho": 5.0}


def _bundle(episodes: Sequence[Episode], name: str, env: str | None, *, obs_steps: int, horizon: int, execute: int,
            test_fraction: float, seed: int, angle_dims: Sequence[int] = (), skipped: int = 0,
            env_options: Mapping[str, Any] | None = None) -> DataBundle:
    """Split ``episodes``, fit normalisers on the training ones and cut the windows."""
    obs_dim, action_dim, goal_dim = E.check_episodes(episodes, name)
    if not (1 <= execute <= horizon and obs_steps >= 1):
        raise ValueError(f"need obs_steps >= 1 and 1 <= execute <= horizon, got obs_steps={obs_steps}, "
                         f"horizon={horizon}, execute={execute}")
    if any(not 0 <= a < obs_dim for a in angle_dims):
        raise ValueError(f"angle_dims {list(angle_dims)} must index the {obs_dim} observation dimensions")
    train, test = E.split_episodes(episodes, test_fraction, seed)
    norm = E.fit_normalizers(train, angle_dims)
    for ep in episodes:
        if env is not None:
            ep.meta.setdefault("env", env)
    info = {"dataset": name, "env": env, "env_options": dict(env_options or {}), "obs_dim": obs_dim,
            "obs_feature_dim": obs_dim + len(angle_dims), "action_dim": action_dim, "goal_dim": goal_dim,
            "obs_steps": obs_steps, "horizon": horizon, "execute": execute, "angle_dims": list(angle_dims),
            "normalizer": {k: v.to_dict() for k, v in norm.items()},
            "conditions": {"goal": {"kind": "vector", "dim": goal_dim}},
            "episodes": {"train": len(train), "test": len(test), "skipped": skipped}}
    return DataBundle(E.EpisodeWindows(train, info), None, E.EpisodeWindows(test, info) if test else None, info)


def _scripted(env: str) -> Callable[..., DataBundle]:
    def factory(episodes: int = 200, obs_steps: int = 2, horizon: int = 16, execute: int = 8,
                test_fraction: float = 0.1, seed: int = 0, perturb: float = 0.0) -> DataBundle:
        if perturb and env != "blocks":
            raise ValueError(f"data option perturb: only the blocks expert takes perturbations, not {env!r}")
        demos = envs.demonstrations(env, episodes, seed=seed, **({"perturb": perturb} if perturb else {}))
        return _bundle(demos, env, env, obs_steps=obs_steps, horizon=horizon, execute=execute,
                       test_fraction=test_fraction, seed=seed)

    factory.__doc__ = (f"Scripted multimodal demonstrations in the {env!r} environment (generated offline, "
                       "seeded): ``episodes`` of them, windows of ``obs_steps`` observations and ``horizon`` actions, "
                       "``execute`` actions run per chunk; ``perturb`` (blocks): the probability per step of a DART "
                       "perturbation burst in the expert's demonstrations.")
    return factory


def pusht_dataset(path: str | None = None, obs_steps: int = 2, horizon: int = 16, execute: int = 8,
                  test_fraction: float = 0.1, seed: int = 0, episodes: int | None = None) -> DataBundle:
    """The 206 human Push-T demonstrations (Diffusion Policy's replay buffer) from
    ``../shared/data/robot_pusht`` (or ``path``); the block angle enters as (sin, cos);
    ``episodes`` keeps the first ones only (quick runs)."""
    from .envs.pusht import GOAL_POSE, label_first_contacts

    file = Path(path) if path else shared_file("data", "robot_pusht", "pusht_cchi_v7_lowdim.npz")
    eps = E.read_episodes(file, goal=GOAL_POSE, env="pusht")
    if episodes is not None:
        eps = eps[:episodes]
    eps = label_first_contacts(eps)  # the behaviour metrics compare with the demonstrations' first contacts
    return _bundle(eps, "pusht", "pusht", obs_steps=obs_steps, horizon=horizon, execute=execute,
                   test_fraction=test_fraction, seed=seed, angle_dims=[4])


def file_dataset(path: str, env: str | None = None, goal: Sequence[float] | None = None, obs_steps: int = 2,
                 horizon: int = 16, execute: int = 8, test_fraction: float = 0.1, seed: int = 0,
                 angle_dims: Sequence[int] = ()) -> DataBundle:
    """Users' episodes: one ``.npz`` file in the format of :mod:`.episodes` (``goal``: the goal
    of every episode when the file has no ``goals``); ``env`` names the environment to roll
    the policy out in (``polydiff sample`` / ``evaluate`` need one)."""
    if env is not None and env not in envs.ENVIRONMENTS:
        raise ValueError(f"env {env!r} is not an environment of the policies modality; allowed: "
                         f"{', '.join(envs.ENVIRONMENTS)}")
    eps = E.read_episodes(path, goal=goal, env=env)  # sizes that do not fit env: an error now, not at rollout
    return _bundle(eps, "file", env, obs_steps=obs_steps, horizon=horizon, execute=execute,
                   test_fraction=test_fraction, seed=seed, angle_dims=angle_dims)


def transformer_network(info: Mapping[str, Any], fields: Mapping[str, FieldSpec], dim: int = 128, depth: int = 4,
                        heads: int = 4, mlp_ratio: int = 4, dropout: float = 0.0) -> nn.Module:
    """BESO's transformer denoiser over (noise level, goal, observations, action chunk) tokens."""
    return ActionTransformer(info, fields, dim=dim, depth=depth, heads=heads, mlp_ratio=mlp_ratio, dropout=dropout)


def mlp_network(info: Mapping[str, Any], fields: Mapping[str, FieldSpec], hidden: int = 256, depth: int = 3,
                dropout: float = 0.0) -> nn.Module:
    """The behaviour-cloning MLP (train it with ``loss.objective: behaviour_cloning``)."""
    return MLPPolicy(info, fields, hidden=hidden, depth=depth, dropout=dropout)


def _make_env(info: Mapping[str, Any]) -> Callable[[], Any]:
    name = info.get("env")
    if not name:
        raise ValueError(f"dataset {info.get('dataset')!r} names no environment to roll the policy out in "
                         "(data option env=reach|blocks|pusht)")
    return lambda: envs.make(name, **(info.get("env_options") or {}))


class PoliciesModality(Modality):
    """Goal-conditioned diffusion policies (BESO) with DDPM and behaviour-cloning baselines."""

    name = "policies"
    description = ("robot policies: BESO goal-conditioned score-based diffusion over action chunks (EDM, DDIM in 3 "
                   "steps, classifier-free guidance over goals), Diffusion-Policy DDPM and behaviour-cloning "
                   "baselines; CPU Gymnasium environments (multi-route reach, multi-block push, Push-T); success, "
                   "goal coverage, behaviour entropy, Push-T score, actions per second")

    def datasets(self) -> dict[str, Callable[..., DataBundle]]:
        return {"reach": _scripted("reach"), "blocks": _scripted("blocks"), "pusht": pusht_dataset,
                "file": file_dataset}

    def networks(self) -> dict[str, Callable[..., nn.Module]]:
        return {"transformer": transformer_network, "mlp": mlp_network}

    def fields(self, info: Mapping[str, Any], schedule: str = "edm", prediction: str = "x0",
               **schedule_options: Any) -> dict[str, FieldSpec]:
        """One Gaussian field ``actions``. ``schedule="edm"`` is BESO's (sigma 0.05-1,
        sigma_data 0.5, Karras grid with rho 5 unless overridden); ``vp_discrete_cosine``
        (100 steps) the Diffusion-Policy baseline's."""
        opts = {**BESO_EDM, **schedule_options} if schedule == "edm" else schedule_options
        return {"actions": FieldSpec(GaussianProcess(schedule, **opts), Plain(), prediction)}

    def prior_state(self, n: int, info: Mapping[str, Any], generator: torch.Generator | None = None,
                    condition: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """``n`` rollouts: the commanded goals (``condition={"goal": [...]}``, or the
        environment's goals in turn), per-rollout start seeds, and the chunk shape."""
        make = _make_env(info)
        cond = dict(condition or {})
        unknown = set(cond) - {"goal"}
        if unknown:
            raise ValueError(f"unknown condition {sorted(unknown)[0]!r}: policies are conditioned on 'goal' only")
        table = make().goals
        if "goal" in cond:
            try:
                goal = torch.as_tensor(np.asarray(cond["goal"], dtype=np.float32))
            except (TypeError, ValueError):
                raise ValueError(f"condition goal: expected {int(info['goal_dim'])} numbers (goal=x,y), got "
                                 f"{cond['goal']!r}") from None
            goal = goal.reshape(1, -1).expand(n, -1) if goal.dim() < 2 else goal
            if goal.shape != (n, int(info["goal_dim"])):
                raise ValueError(f"condition goal: expected {int(info['goal_dim'])} values (or one row per rollout), "
                                 f"got shape {tuple(goal.shape)}")
        else:
            goal = torch.as_tensor(np.stack([table[i % len(table)] for i in range(n)]), dtype=torch.float32)
        start = torch.randint(0, 2**31 - 1, (n,), generator=generator)
        return {"actions": (n, int(info["horizon"]), int(info["action_dim"])), "goal": goal, "start": start,
                "info": dict(info)}

    def sample(self, net: nn.Module, fields: Mapping[str, FieldSpec], spec: Mapping[str, Any], settings: Any,
               control: Any, *, seed: torch.Tensor, device: torch.device) -> State:
        """Roll the policy out receding-horizon: one episode per sample. ``control`` may set
        the guidance scale (lambda; 0 = goal-free); other controls are rejected."""
        default = type(control)()
        others = [k for k, v in vars(control).items()
                  if k not in ("guidance_scale", "condition_keys") and v != getattr(default, k)]
        if others:
            raise ValueError(f"policies rollouts take only guidance_scale as control, got {', '.join(others)}")
        info = spec["info"]
        scale = control.guidance_scale
        policy = Policy(net, fields, info, settings=settings, guidance_scale=scale, device=device)
        episodes, _ = rollout(policy, _make_env(info), len(seed), goals=spec["goal"].numpy(),
                              goal_free=scale == 0, start_seeds=spec["start"].tolist(), noise_seeds=seed.tolist())
        return {"episodes": episodes}

    def to_native(self, state: State, info: Mapping[str, Any]) -> list[Episode]:
        return list(state["episodes"])

    def native_types(self, info: Mapping[str, Any]) -> tuple[type, ...]:
        return (Episode,)

    def reference(self, data: DataBundle) -> list[Episode]:
        """The held-out demonstrations (episodes, not windows)."""
        return list(self.reference_split(data).episodes)

    def write(self, objects: Sequence[Any], out_dir: Path) -> list[Path]:
        """``rollouts.npz`` (episodes with goals, outcomes, behaviours, success and score)."""
        return [E.write_episodes(list(objects), Path(out_dir) / ROLLOUTS_FILE)]

    def read(self, path: Path) -> list[Episode]:
        """An episode ``.npz`` file, or a folder holding ``rollouts.npz`` or one ``.npz`` file.
        Files without ``goals`` take the single goal of the environment they declare (Push-T's
        replay buffer); Push-T demonstrations without behaviour labels get them by replay (the
        side of the T touched first), as the ``pusht`` dataset's do."""
        path = Path(path)
        if path.is_dir():
            found = [path / ROLLOUTS_FILE] if (path / ROLLOUTS_FILE).is_file() else sorted(
                p for p in path.iterdir() if p.is_file() and p.suffix.lower() == ".npz")
            if len(found) != 1:
                raise FileNotFoundError(f"{path}: expected {ROLLOUTS_FILE} or one episode .npz file, found "
                                        f"{len(found)}")
            path = found[0]
        eps = E.read_episodes(path)
        if eps and all(e.meta.get("env") == "pusht" and e.obs.shape[-1] == 5 for e in eps) \
                and not any(e.behaviour for e in eps):
            from .envs.pusht import label_first_contacts

            eps = label_first_contacts(eps)
        return eps

    def evaluate(self, objects: Sequence[Any], reference: Sequence[Any], info: Mapping[str, Any]) -> dict[str, float]:
        """Success rate, goal coverage, behaviour / outcome entropy, behaviour TV distance to the
        reference demonstrations, Push-T score (see :mod:`.metrics`). Episodes and reference
        from different environments are an error (their behaviours cannot be compared)."""
        ours = sorted({str(e.meta["env"]) for e in objects if e.meta.get("env")})
        theirs = sorted({str(e.meta["env"]) for e in reference if e.meta.get("env")})
        if ours and theirs and ours != theirs:
            raise ValueError(f"the episodes are from environment {', '.join(ours)}, the reference from "
                             f"{', '.join(theirs)}: give --reference episodes of {', '.join(ours)}")
        env = info.get("env") or next((e.meta.get("env") for e in objects if e.meta.get("env")), None)
        labels = envs.goal_outcomes(env) if env in envs.ENVIRONMENTS else ()
        return rollout_metrics(list(objects), list(reference), labels)

    def flags(self, objects: Sequence[Any], info: Mapping[str, Any]) -> dict[str, list[Any]]:
        """Per-episode success, outcome and behaviour."""
        eps = list(objects)
        return {"success": [bool(e.meta.get("success", bool(e.outcome))) for e in eps],
                "outcome": [e.outcome for e in eps], "behaviour": [e.behaviour for e in eps]}

    def evaluate_model(self, generator: Any, *, num: int, seed: int, guidance_scale: float | None = None,
                       sampler: str | None = None, steps: int | None = None, goal_free: bool = False,
                       same_start: bool = False, execute: int | None = None) -> dict[str, float]:
        """``polydiff evaluate CKPT [--option guidance_scale=2 steps=3 goal_free=true same_start=true
        execute=4]``:
        ``num`` rollouts (the environment's goals in turn; ``same_start``: all from one start
        state, so that behaviour entropy measures the policy's own diversity; ``execute``: actions
        run per chunk, default the recipe's), their metrics
        against the held-out demonstrations, the control rate (actions per second of one
        robot's policy computation on this machine, :func:`.policy.control_rate`; batched over
        the rollouts: ``actions_per_second_batched``) and network evaluations per chunk."""
        info = generator.info
        whole_number("num", num)
        policy = Policy.from_generator(generator, sampler=sampler, steps=steps, seed=seed, execute=execute,
                                       guidance_scale=0.0 if goal_free else guidance_scale)
        scale = policy.guidance_scale
        starts = [seed] * num if same_start else [seed * 100_003 + i for i in range(num)]
        t0 = time.perf_counter()
        episodes, timing = rollout(policy, _make_env(info), num, goal_free=scale == 0, start_seeds=starts,
                                   noise_seeds=[seed * 100_003 + i for i in range(num)])
        data = generator.modality.dataset(generator.config.data.name, **generator.config.data.options)
        out = self.evaluate(episodes, self.reference(data), info)
        out.update(actions_per_second=control_rate(policy, _make_env(info)),
                   actions_per_second_batched=timing["actions_per_second"], nfe_per_chunk=float(policy.nfe),
                   network_calls_per_action=timing["network_calls"] / max(timing["actions"], 1.0),
                   rollout_seconds=time.perf_counter() - t0)
        return out

    def plot(self, objects: Sequence[Any], path: Path, reference: Sequence[Any] | None = None) -> Path | None:
        try:
            from .plot import plot_rollouts
        except ImportError:
            return None
        return plot_rollouts(list(objects), Path(path), None if reference is None else list(reference))

    def commands(self) -> dict[str, Any]:
        """``polydiff policies rollout CKPT`` (rollouts with plots and GIFs) and ``polydiff
        policies replay`` (Push-T replay fidelity of the recorded demonstrations)."""
        from .cli import COMMANDS

        return COMMANDS
