"""``polydiff policies rollout CKPT`` and ``polydiff policies replay``.

::

    polydiff policies rollout CKPT [--num 16] [--steps K] [--sampler NAME] [--guidance-scale L]
                                   [--goal-free] [--same-start] [--seed S] [--out DIR] [--gif N]
    polydiff policies replay [--file pusht.npz] [--episodes N]

``rollout`` runs the policy in its environment, prints the metrics and the control rate, and
writes the episodes (``rollouts.npz``), a picture of the paths (``rollouts.png``) and GIF
animations of the first ``--gif`` episodes. ``replay`` measures how faithfully the Push-T
environment replays the recorded human demonstrations (open loop and step by step).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from polydiff.plugin import (
    Command,
    add_output,
    atomic_write,
    load,
    non_negative_int,
    output_folder,
    positive_int,
    refuse_inputs,
    run_folder,
)

from .policy import Policy, control_rate, rollout


def _configure_rollout(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--num", type=positive_int, default=16, help="episodes (default 16)")
    p.add_argument("--steps", type=positive_int, help="sampling steps per chunk (default: the recipe's)")
    p.add_argument("--sampler", help="sampler (default: the recipe's)")
    p.add_argument("--guidance-scale", type=float, help="lambda of goal guidance (0 = goal-free; default: recipe's)")
    p.add_argument("--goal-free", action="store_true", help="no goal (lambda = 0): should reach every goal")
    p.add_argument("--same-start", action="store_true", help="every episode from the same start state")
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument("--threads", type=positive_int, default=1, help="torch CPU threads (default 1)")
    add_output(p, "output folder (default: RUN/rollouts)")
    p.add_argument("--gif", type=non_negative_int, default=0, metavar="N", help="animate the first N episodes (GIF)")


def _run_rollout(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    out = args.out or run_folder(args.checkpoint) / "rollouts"
    with output_folder(out, args.overwrite, marker="metrics.json", inputs={"checkpoint": args.checkpoint}) as folder:
        _rollout_into(args, folder, out)
    return 0


def _rollout_into(args: argparse.Namespace, folder: Path, out: Path) -> None:
    """The rollouts, their metrics and pictures, written into ``folder`` (that becomes ``out``)."""
    from . import envs
    from .episodes import write_episodes
    from .metrics import rollout_metrics
    from .modality import ROLLOUTS_FILE, _make_env

    gen = load(args.checkpoint, modality="policies")
    policy = Policy.from_generator(gen, sampler=args.sampler, steps=args.steps, seed=args.seed,
                                   guidance_scale=0.0 if args.goal_free else args.guidance_scale)
    scale = policy.guidance_scale
    starts = [args.seed] * args.num if args.same_start else [args.seed * 100_003 + i for i in range(args.num)]
    episodes, timing = rollout(policy, _make_env(gen.info), args.num, goal_free=scale == 0, start_seeds=starts,
                               record_states=args.gif > 0)
    name = gen.info.get("env")
    metrics = rollout_metrics(episodes, (), envs.goal_outcomes(name) if name else ())
    metrics.update(actions_per_second=control_rate(policy, _make_env(gen.info)),
                   actions_per_second_batched=timing["actions_per_second"], nfe_per_chunk=float(policy.nfe))
    write_episodes(episodes, folder / ROLLOUTS_FILE)
    atomic_write(folder / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    # what `polydiff evaluate FOLDER` reads to know the modality and the recipe's data (the reference)
    atomic_write(folder / "polydiff.json", json.dumps({"modality": "policies", "config": gen.config.to_dict(),
                                                       "num": args.num, "files": [ROLLOUTS_FILE]}, indent=1))
    print(f"polydiff policies: {args.num} episodes in {name!r} -> {out}")
    for k, v in metrics.items():
        print(f"  {k:<24} {v:.4g}")
    try:
        from .plot import animate, plot_rollouts
    except ImportError:
        print("  (no pictures: matplotlib is not installed)")
        return
    plot_rollouts(episodes, folder / "rollouts.png")
    print(f"  plot: {out / 'rollouts.png'}")
    for i, ep in enumerate(episodes[: args.gif]):
        animate(ep, folder / f"episode-{i:03d}.gif")
        print(f"  animation: {out / f'episode-{i:03d}.gif'}")


def _configure_replay(p: argparse.ArgumentParser) -> None:
    p.add_argument("--file", type=Path, help="Push-T episodes (default: ../shared/data/robot_pusht)")
    p.add_argument("--episodes", type=positive_int, help="the first N episodes only")
    p.add_argument("--json", type=Path, help="also write the numbers as JSON")


def _run_replay(args: argparse.Namespace) -> int:
    from polydiff.plugin import shared_file

    from .envs.pusht import fidelity

    path = args.file or shared_file("data", "robot_pusht", "pusht_cchi_v7_lowdim.npz")
    if args.json:
        refuse_inputs(args.json, {"episodes file": path}, "--json")
    res = fidelity(path, episodes=args.episodes)
    for k, v in res.items():
        print(f"  {k:<32} {v:.4g}")
    if args.json:
        atomic_write(args.json, json.dumps(res, indent=2) + "\n")
    return 0


COMMANDS = {
    "rollout": Command("roll a trained policy out in its environment: metrics, episodes, plot and GIFs",
                       _configure_rollout, _run_rollout),
    "replay": Command("Push-T replay fidelity of the recorded demonstrations (open loop and per step)",
                      _configure_replay, _run_replay),
}
