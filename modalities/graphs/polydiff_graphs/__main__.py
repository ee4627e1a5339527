"""``python -m polydiff_graphs``: ``polydiff sample`` / ``polydiff evaluate`` for graph checkpoints,
PARD included (it samples block by block, which the core's ``Generator`` cannot yet do).

::

    python -m polydiff_graphs sample CKPT [--num N] [--steps K] [--sampler NAME] [--seed S] [--out DIR]
                                          [--batch-size B] [--option key=value ...] [--plot] [--overwrite]
    python -m polydiff_graphs evaluate CKPT [--num N] [--seed S] [--json FILE]

Output folders are the same as ``polydiff sample``'s, so ``polydiff evaluate DIR`` reads them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch

import polydiff
from polydiff.cli import USER_ERRORS, _pairs

from .generation import generate_graphs, is_pard


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m polydiff_graphs", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    for name in ("sample", "evaluate"):
        s = sub.add_parser(name)
        s.add_argument("checkpoint", type=Path)
        s.add_argument("--num", type=int, help="number of graphs (default: the recipe's sample.num)")
        s.add_argument("--steps", type=int, help="steps (PARD: per block)")
        s.add_argument("--sampler", help="Gaussian sampler for GDSS (see `polydiff samplers`)")
        s.add_argument("--seed", type=int, help="seed (default: the recipe's sample.seed)")
        s.add_argument("--batch-size", type=int)
        s.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="sampler option")
        s.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
        if name == "sample":
            s.add_argument("--out", type=Path, help="output folder (default: RUN/samples)")
            s.add_argument("--plot", action="store_true")
            s.add_argument("--overwrite", action="store_true")
        else:
            s.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    try:
        return _run(args)
    except USER_ERRORS as err:
        print(f"polydiff_graphs: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    gen = polydiff.load(args.checkpoint)
    sc = gen.config.sample
    num, seed = args.num or sc.num, sc.seed if args.seed is None else args.seed
    options = _pairs(args.option, "--option")
    t0 = time.perf_counter()
    graphs = generate_graphs(gen, num, sampler=args.sampler, steps=args.steps, seed=seed, batch_size=args.batch_size,
                             **options)
    seconds = time.perf_counter() - t0
    if args.command == "sample":
        run = args.checkpoint.parent.parent if args.checkpoint.parent.name == "checkpoints" else args.checkpoint.parent
        out = args.out or run / "samples"
        meta = {"model": "pard" if is_pard(gen) else "gdss", "sampler": args.sampler or sc.sampler,
                "steps": args.steps or sc.steps, "seed": seed, "options": options, "seconds": seconds}
        paths = gen.save(graphs, out, overwrite=args.overwrite, plot=args.plot, metadata=meta)
        print(f"polydiff_graphs: wrote {num} samples to {out} ({seconds:.1f} s)")
        for path in paths:
            print(f"  {path}")
        return 0
    metrics = gen.evaluate(graphs)
    for k, v in metrics.items():
        print(f"{k}: {v:.6g}" if isinstance(v, float) else f"{k}: {v}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"target": str(args.checkpoint), "metrics": metrics, "seconds": seconds},
                                        indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
