"""``polydiff crystals wyckoff`` and ``polydiff crystals regressor``.

::

    polydiff crystals wyckoff FILE [--symprec 0.1]
    polydiff crystals regressor --data perov_5 --target band_gap --out gap.pt [--epochs 30]
                                [--init formation.pt --freeze 0.5] [--n 300] [--min-band-gap 0]

``wyckoff`` prints each crystal's space group, Wyckoff letters and the equivalent relabellings
of its letters (derived from the space group's normaliser: :mod:`.wyckoff`). ``regressor``
trains the invariant property predictor of :mod:`.periodic` on CDVAE's Perov-5 / Carbon-24 val
split or on a file of the user's crystals (a CSV of CIFs with property columns): the scorer of
conditional generation, and with ``--init`` / ``--freeze`` the transfer-learning recipe
(pretrain on formation energy, fine-tune on band gap with the early layers frozen).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from polydiff.plugin import (
    Command,
    add_output,
    atomic_write,
    non_negative_float,
    non_negative_int,
    output_file,
    positive_float,
    positive_int,
)


def _configure_wyckoff(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", type=Path, help="a CIF / POSCAR / extXYZ / CSV file or a folder of them")
    p.add_argument("--symprec", type=positive_float, default=0.1, help="symmetry tolerance in A (default 0.1)")


def _run_wyckoff(args: argparse.Namespace) -> int:
    from .crystal_io import read_structures
    from .wyckoff import wyckoff_letters, wyckoff_relabellings

    for s in read_structures(args.path):
        group, letters = wyckoff_letters(s, symprec=args.symprec)
        maps = wyckoff_relabellings(group)
        variants = list(dict.fromkeys("".join(m.get(x, x) for x in letters) for m in maps))
        print(f"{s.properties.get('name', '?')}: {s.composition.reduced_formula}, space group {group}, letters per "
              f"site {''.join(letters)}; equivalent descriptions: {', '.join(variants)}")
    return 0


def _configure_regressor(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="perov_5", help="perov_5, carbon_24 or a CSV of CIF strings with property columns")
    p.add_argument("--target", required=True, help="property: band_gap, formation_energy, energy_per_atom, ...")
    p.add_argument("--n", type=positive_int, default=None, help="use n seeded crystals (a small property set)")
    p.add_argument("--min-band-gap", type=float, default=None, help="keep crystals with a larger band gap")
    p.add_argument("--epochs", type=positive_int, default=30)
    p.add_argument("--hidden", type=positive_int, default=128)
    p.add_argument("--layers", type=positive_int, default=4)
    p.add_argument("--init", type=Path, help="a regressor file to start from (transfer learning)")
    p.add_argument("--freeze", type=non_negative_float, default=0.0,
                   help="fraction of early layers to freeze (with --init)")
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument("--threads", type=positive_int, default=2)
    add_output(p, "the regressor file to write (.pt; its report beside it as .json)", required=True)


def save_regressor(model: Any, path: Path, options: dict[str, Any]) -> Path:
    """A regressor file: weights plus what rebuilds it (elements, targets, sizes), plain data
    only, so that it opens with ``torch.load(weights_only=True)``."""
    from .guidance import plain

    blob = {"state_dict": model.state_dict(), "elements": plain(list(model.elements)),
            "targets": plain(list(model.targets)), "options": plain(options)}
    return atomic_write(path, lambda tmp: torch.save(blob, tmp))


def load_regressor(path: Path) -> Any:
    """The :class:`.periodic.CrystalRegressor` saved by :func:`save_regressor` (weights only: no
    code is unpickled)."""
    from .guidance import load_blob
    from .periodic import CrystalRegressor

    blob = load_blob(path, "a property regressor")
    try:
        model = CrystalRegressor(blob["elements"], blob["targets"], **blob["options"])
        model.load_state_dict(blob["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"{path}: not a property regressor saved by polydiff-crystals ({err})") from None
    return model.eval()


def _run_regressor(args: argparse.Namespace) -> int:
    from .crystal_io import read_structures
    from .data import cdvae_crystals
    from .modality import elements_of
    from .periodic import train_regressor

    report_file = args.out.with_suffix(".json" if args.out.suffix != ".json" else ".report.json")
    output_file(args.out, args.overwrite, {"data": None if args.data in ("perov_5", "carbon_24") else args.data,
                                           "initial regressor": args.init})
    output_file(report_file, args.overwrite)
    torch.set_num_threads(args.threads)
    crystals = cdvae_crystals(args.data, "val") if args.data in ("perov_5", "carbon_24") else \
        read_structures(Path(args.data))
    if args.min_band_gap is not None:
        crystals = [s for s in crystals if float(s.properties.get("band_gap", -1.0)) > args.min_band_gap]
    if args.n is not None:
        keep = np.random.default_rng(args.seed).permutation(len(crystals))[: args.n]
        crystals = [crystals[i] for i in sorted(keep)]
    if not crystals:
        raise ValueError(f"--data {args.data}: no crystals left" + (f" with a band gap above {args.min_band_gap}"
                                                                   if args.min_band_gap is not None else ""))
    have = sorted(set().union(*((s.properties or {}).keys() for s in crystals)) - {"name"})
    if args.target not in have:
        raise ValueError(f"--target {args.target!r}: the crystals of {args.data} have no such property (they have: "
                         f"{', '.join(have) or 'none'})")
    opts = {"hidden": args.hidden, "layers": args.layers}
    init, elements = None, elements_of(crystals)
    if args.init is not None:
        start = load_regressor(args.init)
        init, elements = start.state_dict(), list(start.elements)
    model, hist = train_regressor(crystals, [args.target], elements, epochs=args.epochs, seed=args.seed, init=init,
                                  freeze=args.freeze, model_options=opts)
    save_regressor(model, args.out, opts)
    best = float(np.ravel(hist["val_mae"][hist["best_epoch"]])[0])
    base = float(np.ravel(hist["baseline_val_mae"])[0])
    atomic_write(report_file, json.dumps({"target": args.target, "n": len(crystals),
                                                            "val_mae": best, "baseline_val_mae": base,
                                                            "frozen": len(hist.get("frozen", []))}, indent=2) + "\n")
    print(f"polydiff crystals: {args.target} regressor on {len(crystals)} crystals -> {args.out}: val MAE {best:.4g} "
          f"(predicting the mean: {base:.4g})")
    return 0


COMMANDS = {
    "wyckoff": Command("space group, Wyckoff letters and equivalent relabellings of a file's crystals",
                       _configure_wyckoff, _run_wyckoff),
    "regressor": Command("train the property predictor (scorer of conditional generation; transfer learning)",
                         _configure_regressor, _run_regressor),
}
