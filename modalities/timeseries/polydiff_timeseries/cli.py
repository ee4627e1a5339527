"""``polydiff timeseries forecast CKPT SERIES``: probabilistic forecasts of a user's series file
with a trained time-domain model (TSDiff's observation self-guidance, :func:`.predict`),
written as a quantile CSV (``item_id, timestamp, mean, 0.1 ... 0.9``), optionally plotted.
Histories shorter than the context or with empty cells are counted in one warning (the one
:func:`.predict` gives, naming the file); an ``--out`` or ``--plot`` that is one of the
command's inputs is refused, even with ``--overwrite``.

::

    polydiff timeseries forecast CKPT SERIES.csv [--target COL ...] [--id-col COL] [--time-col COL]
                                 [--num-samples 100] [--guidance quantile|mse] [--scale 4] [--steps K]
                                 [--seed S] [--out forecast.csv] [--plot forecast.png]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from polydiff.plugin import (
    Command,
    add_output,
    atomic_write,
    load,
    non_negative_float,
    non_negative_int,
    output_file,
    positive_int,
    run_folder,
)

from . import data as D
from .tsdiff import as_context, predict


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", type=Path, help="a time-domain model trained on windows with a horizon")
    p.add_argument("series", type=Path, help="CSV / parquet of histories (wide: one column per series; or long "
                                             "with --id-col); the last CONTEXT steps are used")
    p.add_argument("--target", action="append", help="value column(s) (default: every column but the time column)")
    p.add_argument("--id-col", help="series id column of a long file")
    p.add_argument("--time-col", default="timestamp", help="time column (default: timestamp)")
    p.add_argument("--num-samples", type=positive_int, default=100, help="sample paths per series (default 100)")
    p.add_argument("--guidance", default="quantile", choices=["quantile", "mse"], help="self-guidance energy")
    p.add_argument("--scale", type=non_negative_float, default=4.0, help="self-guidance scale (default 4)")
    p.add_argument("--steps", type=positive_int, help="sampling steps (default: every step of the training schedule)")
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument("--threads", type=positive_int, default=1, help="torch CPU threads (default 1)")
    add_output(p, "forecast CSV (default: SERIES stem + .forecast.csv beside the run)")
    p.add_argument("--plot", type=Path, metavar="PNG", help="also plot the forecasts")


def _run(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    target = args.out or run_folder(args.checkpoint) / f"{args.series.stem}.forecast.csv"
    inputs = {"series file": args.series, "checkpoint": args.checkpoint}
    out = output_file(target, args.overwrite, inputs)
    if args.plot is not None:
        output_file(args.plot, args.overwrite, {**inputs, "forecast CSV": target}, flag="--plot")
    gen = load(args.checkpoint, modality="timeseries")
    series = D.read_series(args.series, args.target, args.id_col, args.time_col, nan="mask")
    fc = predict(gen, series, num_samples=args.num_samples, guidance=args.guidance, scale=args.scale,
                 steps=args.steps, seed=args.seed)
    atomic_write(out, lambda tmp: fc.to_frame().to_csv(tmp, index=False, float_format="%.9g"))
    print(f"polydiff timeseries: forecasts of {len(fc.ids)} series, {fc.samples.shape[-1]} steps ahead -> {out}")
    if args.plot is not None:
        from .plot import plot_forecast

        ctx = as_context(series, int(gen.info["context"]), int(gen.info["horizon"])).values  # (N, ctx, C)
        history = np.moveaxis(ctx, -1, 1).reshape(-1, ctx.shape[1])  # one row per forecast series
        png = plot_forecast(history, fc.samples, args.plot, titles=fc.ids, index=fc.index)
        print(f"  plot: {png}" if png is not None else "  (no plot: matplotlib is not installed)")
    return 0


COMMANDS = {"forecast": Command("probabilistic forecasts of a series file with a trained model (quantile CSV)",
                                _configure, _run)}
