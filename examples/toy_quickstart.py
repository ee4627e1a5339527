"""Quick start: train a small diffusion model on the toy modality's embedded Gaussian mixture,
generate points, evaluate them against the data, and save them with a figure.

    python examples/toy_quickstart.py [--out runs/toy_quickstart] [--quiet]

Runs in well under a minute on a CPU, with progress bars on a terminal (``--quiet``: none).
The same run from the command line:

    polydiff train configs/toy/gmm.yaml --out runs/gmm --set train.max_steps=800
    polydiff sample runs/gmm/checkpoints/last.ckpt --num 2000 --plot
    polydiff evaluate runs/gmm/samples
"""

from __future__ import annotations

import argparse
from pathlib import Path

import polydiff

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--out", type=Path, default=Path("runs/toy_quickstart"),
                    help="output folder: the run and its samples (default: runs/toy_quickstart)")
parser.add_argument("--quiet", action="store_true", help="no progress bars")
args = parser.parse_args()
out = args.out
progress = False if args.quiet else None  # None: a bar on a terminal, nothing in quick non-interactive runs

# 1. A recipe is a plain dict (or a YAML file): data, network, process, loss, training, sampling.
recipe = {
    "modality": "toy",
    "data": {"name": "gmm", "k": 8, "dim": 2},  # the embedded default: no download
    "model": {"name": "mlp", "hidden": 128, "depth": 3},
    "process": {"schedule": "vp_cosine", "prediction": "eps"},
    "train": {"max_steps": 800, "batch_size": 256, "lr": 2e-3, "warmup": 50, "accelerator": "cpu", "devices": 1,
              "threads": 1, "checkpoint_every": 400, "progress": not args.quiet},
    "sample": {"sampler": "dpm++2m", "steps": 20},
}

# 2. Train. fresh=True starts over; without it a second run would resume from out/checkpoints/last.ckpt.
run = polydiff.train(recipe, out, fresh=True, verbose=False)
print(f"trained {run.step} steps, last loss {run.metrics.get('train/loss', float('nan')):.3f}")

# 3. Load the checkpoint (weights-only, EMA weights) and generate. Each sample has its own seed,
#    so the result does not depend on how many are generated at once.
gen = polydiff.load(run.checkpoint)
points = gen.generate(2000, seed=0, progress=progress)  # a (2000, 2) numpy array
fewer_steps = gen.generate(2000, seed=0, sampler="dpm++2m", steps=8, progress=progress)

# 4. Evaluate against the data: sliced Wasserstein-2, mean / covariance errors and the exact
#    log-likelihood under the true mixture (loglik_ref: the same for real data points).
for name, x in (("20 steps", points), ("8 steps", fewer_steps)):
    m = gen.evaluate(x)
    print(f"{name}: sw2 {m['sw2']:.3f}  loglik {m['loglik']:.3f} (data {m['loglik_ref']:.3f})")

# 5. Save the points as CSV (plus a figure if matplotlib is installed) next to a small
#    polydiff.json that `polydiff evaluate DIR` reads.
paths = gen.save(points, out / "samples", overwrite=True, plot=True)
print("wrote", *map(str, paths))
