"""``polydiff graphs sample|evaluate CKPT``: ``polydiff sample`` / ``polydiff evaluate`` for graph
checkpoints (GDSS or PARD, which samples block by block), on one CPU thread by default and with
the sampling time recorded. ``python -m polydiff_graphs ...`` is the same.

::

    polydiff graphs sample CKPT [--num N] [--steps K] [--sampler NAME] [--seed S] [--out DIR]
                                [--batch-size B] [--option key=value ...] [--plot] [--overwrite]
    polydiff graphs evaluate CKPT [--num N] [--seed S] [--json FILE]

Output folders are the same as ``polydiff sample``'s, so ``polydiff evaluate DIR`` reads them.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from polydiff.plugin import (
    Command,
    atomic_write,
    check_samples_out,
    load,
    non_negative_int,
    parse_pairs,
    positive_int,
    refuse_inputs,
    run_folder,
)

from .generation import generate_graphs, is_pard


def _common(s: argparse.ArgumentParser) -> None:
    s.add_argument("checkpoint", type=Path)
    s.add_argument("--num", type=positive_int, help="number of graphs (default: the recipe's sample.num)")
    s.add_argument("--steps", type=positive_int, help="steps (PARD: per block)")
    s.add_argument("--sampler", help="Gaussian sampler for GDSS, categorical one for PARD (see `polydiff samplers`)")
    s.add_argument("--seed", type=non_negative_int, help="seed (default: the recipe's sample.seed)")
    s.add_argument("--batch-size", type=positive_int)
    s.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="sampler option")
    s.add_argument("--threads", type=positive_int, default=1, help="torch CPU threads (default 1)")


def _configure_sample(s: argparse.ArgumentParser) -> None:
    _common(s)
    s.add_argument("--out", type=Path, help="output folder (default: RUN/samples)")
    s.add_argument("--plot", action="store_true")
    s.add_argument("--overwrite", action="store_true")


def _configure_evaluate(s: argparse.ArgumentParser) -> None:
    _common(s)
    s.add_argument("--json", type=Path)


def _generate(args: argparse.Namespace) -> tuple[object, list, int, int, dict, float]:
    torch.set_num_threads(args.threads)
    gen = load(args.checkpoint, modality="graphs")
    sc = gen.config.sample
    num, seed = sc.num if args.num is None else args.num, sc.seed if args.seed is None else args.seed
    options = parse_pairs(args.option, "--option")
    t0 = time.perf_counter()
    graphs = generate_graphs(gen, num, sampler=args.sampler, steps=args.steps, seed=seed, batch_size=args.batch_size,
                             **options)
    return gen, graphs, num, seed, options, time.perf_counter() - t0


def run_sample(args: argparse.Namespace) -> int:
    """``polydiff graphs sample``: graphs from a checkpoint, written as files with their metadata."""
    out = args.out or run_folder(args.checkpoint) / "samples"
    check_samples_out(out, args.overwrite)  # before sampling: a refused run costs nothing
    gen, graphs, num, seed, options, seconds = _generate(args)
    sc = gen.config.sample
    meta = {"model": "pard" if is_pard(gen) else "gdss", "sampler": args.sampler or sc.sampler,
            "steps": sc.steps if args.steps is None else args.steps, "seed": seed, "options": options,
            "seconds": seconds}
    paths = gen.save(graphs, out, overwrite=args.overwrite, plot=args.plot, metadata=meta)
    print(f"polydiff graphs: wrote {num} samples to {out} ({seconds:.1f} s)")
    for path in paths:
        print(f"  {path}")
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    """``polydiff graphs evaluate``: the GDSS / PARD metrics of a checkpoint's samples."""
    if args.json is not None:
        refuse_inputs(args.json, {"checkpoint": args.checkpoint}, "--json")
    gen, graphs, _, _, _, seconds = _generate(args)
    metrics = gen.evaluate(graphs)
    for k, v in metrics.items():
        print(f"{k}: {v:.6g}" if isinstance(v, float) else f"{k}: {v}")
    if args.json is not None:
        atomic_write(args.json, json.dumps({"target": str(args.checkpoint), "metrics": metrics, "seconds": seconds},
                                           indent=1))
    return 0


COMMANDS = {
    "sample": Command("generate graphs from a GDSS or PARD checkpoint and write graph6 / SMILES / SDF files",
                      _configure_sample, run_sample),
    "evaluate": Command("generate graphs from a checkpoint and print their metrics against the recipe's test set",
                        _configure_evaluate, run_evaluate),
}
