"""Quick start: train small GDSS and PARD models on the graphs plugin's embedded community-small
generator, generate graphs, evaluate them (degree / clustering / orbit / spectral MMDs,
uniqueness, novelty) against the test split, and save them as files with a figure.

    python examples/graphs_quickstart.py [--out runs/graphs_quickstart] [--quiet]

A few minutes on a CPU (deliberately tiny budgets: the MMDs are far from the papers'), with
progress bars on a terminal (``--quiet``: none).
The same GDSS run from the command line, with GDSS's own recipe:

    polydiff train configs/graphs/community_small_gdss.yaml --out runs/gdss_cs \\
        --set data.name=community_small --set data.max_feat_num=null --set train.max_steps=300
    polydiff sample runs/gdss_cs/checkpoints/last.ckpt --num 20 --plot
    polydiff evaluate runs/gdss_cs/samples
"""

from __future__ import annotations

import argparse
from pathlib import Path

import polydiff

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--out", type=Path, default=Path("runs/graphs_quickstart"),
                    help="output folder: the runs and their samples (default: runs/graphs_quickstart)")
parser.add_argument("--quiet", action="store_true", help="no progress bars")
args = parser.parse_args()
out = args.out
progress = False if args.quiet else None  # None: a bar on a terminal, plain lines in logs of long runs

# 1. GDSS's recipe as a dict: the embedded community-small generator (no download), a reduced
#    ScoreNetworkX / ScoreNetworkA, VP-SDEs beta 0.1 -> 1.0 for node features and adjacency.
recipe = {
    "modality": "graphs",
    "data": {"name": "community_small"},  # one-hot degree features up to the largest degree
    "model": {"name": "gdss", "depth": 2, "nhid": 16, "adim": 16, "num_layers": 3, "c_hid": 6, "c_final": 4},
    "process": {"x": {"schedule": "vp_linear", "beta_min": 0.1, "beta_max": 1.0},
                "adj": {"schedule": "vp_linear", "beta_min": 0.1, "beta_max": 1.0}},
    "loss": {"weighting": "snr"},  # GDSS's loss |sigma * score + eps|^2
    "train": {"max_steps": 300, "batch_size": 32, "lr": 5e-3, "ema": 0.99, "threads": 1, "checkpoint_every": 300,
              "progress": not args.quiet, "logger": "none"},
    "sample": {"sampler": "pc", "steps": 200, "grid": "uniform_t", "t_min": 1e-4, "snr": 0.05, "scale_eps": 0.7},
}

# 2. Train (fresh=True starts over instead of resuming from out/checkpoints/last.ckpt).
run = polydiff.train(recipe, out, fresh=True, verbose=False)
print(f"trained {run.step} steps, last loss {run.metrics.get('train/loss', float('nan')):.3f}")

# 3. Generate: node counts are drawn from the training graphs, the adjacency is quantised at 0.5.
gen = polydiff.load(run.checkpoint)
graphs = gen.generate(20, seed=0, progress=progress)                       # predictor-corrector, 200 steps
s4_graphs = gen.generate(20, seed=0, sampler="s4", steps=200, snr=0.05, progress=progress)  # GDSS's S4 solver

# 4. Evaluate against the test split (GDSS's kernels: EMD degree / clustering, Gaussian orbit).
for name, gs in (("pc", graphs), ("s4", s4_graphs)):
    m = gen.evaluate(gs)
    print(f"{name}: degree {m['degree']:.3f}  cluster {m['cluster']:.3f}  orbit {m['orbit']:.3f}  "
          f"unique {m['unique']:.2f}  novel {m['novel']:.2f}")

# 5. Save graph6 / GraphML / edge lists and a figure, next to the polydiff.json that
#    `polydiff evaluate DIR` reads.
paths = gen.save(graphs, out / "samples", overwrite=True, plot=True)
print("wrote", *map(str, paths))

# 6. PARD on the same graphs: `max_hops` turns the data into blocks of the structural partial
#    order; one discrete diffusion, shared by all blocks and trained on all of them at once,
#    generates the graphs block by block (GraphsModality.sample, the plugin's sampling hook, which
#    Generator.generate and `polydiff sample` call).
pard = {
    "modality": "graphs",
    "data": {"name": "community_small", "max_hops": 1, "drop_isolated": True},
    "model": {"name": "pard", "hidden": 32, "edge_hidden": 16, "layers": 2, "heads": 4},
    "process": {"noise": "uniform"},
    "train": {"max_steps": 300, "batch_size": 32, "lr": 2e-3, "ema": 0.99, "threads": 1, "checkpoint_every": 300,
              "progress": not args.quiet, "logger": "none"},
    "sample": {"steps": 20},
}
run = polydiff.train(pard, out / "pard", fresh=True, verbose=False)
pgen = polydiff.load(run.checkpoint)
pard_graphs = pgen.generate(20, seed=0, progress=progress)  # 20 diffusion steps per block (sample.steps)
m = pgen.evaluate(pard_graphs)
print(f"pard: degree {m['degree']:.3f}  cluster {m['cluster']:.3f}  orbit {m['orbit']:.3f}  "
      f"unique {m['unique']:.2f}  novel {m['novel']:.2f}")
pgen.save(pard_graphs, out / "pard" / "samples", overwrite=True, plot=True)
