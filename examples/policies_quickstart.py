"""Quick start: a BESO goal-conditioned diffusion policy on the policies modality's embedded
default (scripted demonstrations of 2-D goal reaching, two routes around an obstacle to each
of three goals), rolled out in its Gymnasium environment with 3 DDIM steps per action chunk,
evaluated (success, behaviour entropy, goal coverage of the goal-free policy, actions per
second) and saved with a picture and an animation.

    python examples/policies_quickstart.py [--out runs/policies_quickstart] [--quiet]

About a minute on 2 CPU cores. The same from the command line, with the full recipe:

    polydiff train policies:reach_beso --out runs/reach
    polydiff sample runs/reach/checkpoints/last.ckpt --num 40 --plot
    polydiff evaluate runs/reach/checkpoints/last.ckpt --option goal_free=true
    polydiff policies rollout runs/reach/checkpoints/last.ckpt --num 8 --gif 1
"""

from __future__ import annotations

import argparse
from pathlib import Path

import polydiff
from polydiff_policies import Policy, envs, rollout

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--out", type=Path, default=Path("runs/policies_quickstart"),
                    help="output folder: the run, its rollouts and pictures (default: runs/policies_quickstart)")
parser.add_argument("--quiet", action="store_true", help="no progress bars")
args = parser.parse_args()

# 1. The recipe: 120 scripted demonstrations, windows of 2 observations and 16 actions (8 run
#    per chunk); BESO's EDM process (sigma 0.05-1, rho 5) with log-logistic noise levels and a
#    small transformer; the goal is dropped 10 % of the time so guidance (and goal-free
#    control) come from the same model.
recipe = {
    "modality": "policies",
    "data": {"name": "reach", "episodes": 120},
    "model": {"name": "transformer", "dim": 64, "depth": 2, "heads": 4},
    "process": {"schedule": "edm"},
    "loss": {"weighting": "edm", "time_density": "log_logistic", "cond_drop": 0.1},
    "train": {"max_steps": 1500, "batch_size": 128, "lr": 1e-3, "warmup": 100, "accelerator": "cpu", "devices": 1,
              "threads": 2, "checkpoint_every": 1500, "progress": not args.quiet},
    "sample": {"num": 30, "sampler": "ddim", "steps": 3, "final_zero": True, "guidance_scale": 2.0},
}
run = polydiff.train(recipe, args.out, fresh=True, verbose=False)
print(f"trained {run.step} steps, last loss {run.metrics.get('train/loss', float('nan')):.3f}")

# 2. Roll it out: 30 episodes (the three goals in turn), one policy batch per control step.
gen = polydiff.load(run.checkpoint)
episodes = gen.generate(30, seed=0, progress=False if args.quiet else None)
metrics = gen.evaluate(episodes)
print(f"success {metrics['success_rate']:.2f}, behaviour entropy {metrics['behaviour_entropy']:.2f} bits "
      f"(demonstrations {metrics['reference_behaviour_entropy']:.2f}), goal coverage {metrics['goal_coverage']:.2f}")

# 3. The goal-free policy of the same model (lambda = 0) should reach every goal; the control
#    rate is one robot's policy computation per second.
free = gen.modality.evaluate_model(gen, num=30, seed=1, goal_free=True)
print(f"goal-free: reached {free['goal_coverage']:.2f} of the goals, {free['actions_per_second']:.0f} actions/s")

# 4. A Policy works in a plain Gymnasium loop.
policy = Policy.from_checkpoint(run.checkpoint)
env = envs.make("reach")
obs, _ = env.reset(seed=7, options={"goal": env.goals[2]})
policy.reset()
for _ in range(env.max_steps):
    obs, reward, terminated, truncated, info = env.step(policy.act(obs, env.goals[2]))
    if terminated or truncated:
        break
print(f"plain loop: outcome {env.outcome()!r} by the {env.behaviour()!r} route, success {info['success']}")

# 5. Save the rollouts (rollouts.npz), a picture of the paths over the demonstrations, and an animation.
paths = gen.save(episodes, args.out / "rollouts", overwrite=True, plot=True)
print("wrote", ", ".join(str(p) for p in paths))
try:
    from polydiff_policies.plot import animate
except ImportError:
    pass
else:
    (one,), _ = rollout(policy, lambda: envs.make("reach"), 1, record_states=True)
    print("animation:", animate(one, args.out / "rollouts" / "episode.gif"))
