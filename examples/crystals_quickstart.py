"""Quick start: crystal generation on the crystals modality's embedded default (pymatgen's
bundled AFLOW prototypes plus element substitutions, built offline), with both representations:
DiffCrysGen's matrix under EDM diffusion and the periodic torus / lattice / element flow; then
CDVAE's metrics, CIF files with a summary table, a picture, and the Wyckoff letters of a sample.

    python examples/crystals_quickstart.py [--out runs/crystals_quickstart] [--quiet]

About a minute and a half on 2 CPU cores; a toy budget, so the crystals are rough. The same from the command
line, with the full recipes:

    polydiff train crystals:diffcrysgen --out runs/dcg
    polydiff sample runs/dcg/checkpoints/last.ckpt --num 100 --plot
    polydiff evaluate runs/dcg/samples --modality crystals
    polydiff crystals wyckoff runs/dcg/samples
"""

from __future__ import annotations

import argparse
from pathlib import Path

import polydiff
from polydiff_crystals import Undecodable
from polydiff_crystals.wyckoff import wyckoff_letters

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--out", type=Path, default=Path("runs/crystals_quickstart"),
                    help="output folder: the runs, samples and pictures (default: runs/crystals_quickstart)")
parser.add_argument("--quiet", action="store_true", help="no progress bars")
args = parser.parse_args()

train = {"batch_size": 32, "lr": 1e-3, "warmup": 20, "threads": 2, "progress": not args.quiet}
recipes = {
    # DiffCrysGen: one (136, 3) matrix per crystal, EDM preconditioning and loss, a small 1-D U-Net;
    # sampled with EDM's churned Heun (DiffCrysGen uses 100 steps; 30 here).
    "matrix": {"modality": "crystals", "data": {"name": "default", "representation": "matrix"},
               "model": {"name": "unet", "channels": [16, 32, 64], "mid_channels": 32, "time_dim": 64},
               "loss": {"weighting": "edm", "time_density": "lognormal"},
               "train": {**train, "max_steps": 200, "checkpoint_every": 200},
               "sample": {"num": 16, "sampler": "edm", "steps": 30, "s_churn": 1.0}},
    # The periodic alternative: fractional coordinates on the flat torus, lattice parameters and
    # element types as flows, a periodic message-passing network with minimum-image distances.
    "periodic": {"modality": "crystals", "data": {"name": "default", "representation": "periodic"},
                 "model": {"name": "periodic", "hidden": 48, "layers": 2},
                 "train": {**train, "max_steps": 100, "checkpoint_every": 100},
                 "sample": {"num": 16, "sampler": "euler", "steps": 30}},
}
reference = None  # both models are scored against the same 64 test crystals (CrystalNN fingerprints are slow)
for name, recipe in recipes.items():
    run = polydiff.train(recipe, args.out / name, fresh=True, verbose=False)
    gen = polydiff.load(run.checkpoint)
    reference = gen.reference()[:64] if reference is None else reference
    crystals = gen.generate(16, seed=0, progress=not args.quiet)
    metrics = gen.evaluate(crystals, reference)
    gen.save(crystals, args.out / name / "samples", overwrite=True, plot=True)
    decoded = [c for c in crystals if not isinstance(c, Undecodable)]
    print(f"{name}: {run.step} steps; {len(decoded)} of {len(crystals)} decoded; valid {metrics['valid']:.2f} "
          f"(structure {metrics['struct_valid']:.2f}, composition {metrics['comp_valid']:.2f}), "
          f"COV-R {metrics['cov_recall']:.2f}, W1 density {metrics['wdist_density']:.2f} g/cm3 "
          f"-> {args.out / name / 'samples'}")
    if decoded:
        group, letters = wyckoff_letters(decoded[0])
        print(f"  first sample {decoded[0].composition.reduced_formula}: space group {group}, Wyckoff letters "
              f"{''.join(letters)}")
