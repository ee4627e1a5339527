"""Quick start: 3-D molecule generation by flow matching on the molecules modality's embedded
default (small NCI and g2 molecules made 3-D offline by ETKDG + MMFF), then EDM's metrics, SDF
files and a picture; and an energy-based model of the Müller-Brown potential used both for
i.i.d. sampling and for Langevin dynamics with its own forces.

    python examples/molecules_quickstart.py [--out runs/molecules_quickstart] [--quiet]

About a minute and a half on 2 CPU cores; a toy budget, so the molecules are rough. The same
from the command line, with the full recipes:

    polydiff train molecules:flow --out runs/mol
    polydiff sample runs/mol/checkpoints/last.ckpt --num 100 --plot
    polydiff evaluate runs/mol/samples --modality molecules
    polydiff train md:muller_brown --out runs/mb
    polydiff evaluate runs/mb/checkpoints/last.ckpt --option langevin=200
"""

from __future__ import annotations

import argparse
from pathlib import Path

import polydiff
from polydiff_molecules import MDModality

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--out", type=Path, default=Path("runs/molecules_quickstart"),
                    help="output folder: the runs, samples and pictures (default: runs/molecules_quickstart)")
parser.add_argument("--quiet", action="store_true", help="no progress bars")
args = parser.parse_args()

# 1. Flow matching on molecules: positions by the linear interpolant from a zero-centre-of-mass
#    Gaussian, each molecule rotated and relabelled onto its noise draw (alignment); atom types
#    and formal charges by masked discrete flows; a small GVP network.
recipe = {
    "modality": "molecules",
    "data": {"name": "default"},
    "model": {"name": "gvp", "hidden": 64, "vectors": 8, "layers": 3},
    "process": {"path": "flow", "discrete": True, "charges": True},
    "loss": {"weighting": "velocity", "techniques": {"align": "molecule"}},
    "train": {"max_steps": 400, "batch_size": 16, "lr": 1e-3, "warmup": 20, "threads": 2, "checkpoint_every": 400,
              "progress": not args.quiet},
    "sample": {"num": 16, "sampler": "euler", "steps": 50},
}
run = polydiff.train(recipe, args.out / "flow", fresh=True, verbose=False)
print(f"trained {run.step} steps, last loss {run.metrics.get('train/loss', float('nan')):.3f}")

# 2. Generate 16 molecules (atom counts drawn from the data), score them with EDM's metrics and
#    the distances to held-out molecules, and write SDF files with a picture next to the data.
gen = polydiff.load(run.checkpoint)
mols = gen.generate(16, seed=0, progress=False if args.quiet else None)
m = gen.evaluate(mols)
print(f"atom stability {m['atm_stable']:.2f}, molecule stability {m['mol_stable']:.2f}, validity {m['validity']:.2f}, "
      f"bond-length W1 {m['bond_length_w1']:.3f} A, atom-type TV {m['atom_type_tv']:.2f}")
gen.save(mols, args.out / "samples", overwrite=True, plot=True)
print(f"wrote {len(list((args.out / 'samples').glob('*.sdf')))} SDF files and a picture to {args.out / 'samples'}")

# 3. Energy-based diffusion on the Müller-Brown potential: one network E(x, t); its gradient is
#    the score for i.i.d. sampling, and -grad E(x, t_min) drives Langevin dynamics.
md = {
    "modality": "md",
    "data": {"name": "muller_brown", "n": 4000, "test": 4000},
    "model": {"name": "mlp", "hidden": 64, "layers": 3},
    "loss": {"weighting": "snr"},
    "train": {"max_steps": 600, "batch_size": 128, "lr": 2e-3, "threads": 2, "checkpoint_every": 600,
              "progress": not args.quiet},
    "sample": {"num": 2000, "sampler": "euler", "steps": 100},
}
mb = polydiff.load(polydiff.train(md, args.out / "muller_brown", fresh=True, verbose=False).checkpoint)
res = MDModality().evaluate_model(mb, num=2000, seed=0, langevin=50, chains=64, every=10)
print(f"Müller-Brown JS (100 bins): i.i.d. {res['iid_js']:.3f}, Langevin {res['langevin_js']:.3f}, "
      f"data against data {res['data_js']:.3f}")
samples = mb.generate(2000, seed=0, progress=False)
mb.save(samples, args.out / "muller_brown_samples", overwrite=True, plot=True)
print(f"free-energy picture in {args.out / 'muller_brown_samples'}")
