"""Time-series quickstart: train a tiny TSDiff on the embedded AR data, generate, forecast by
self-guidance, evaluate, and save files and plots (CPU, about 2 minutes).

    python examples/timeseries_quickstart.py [--out runs/timeseries_quickstart] [--steps 600] [--quiet]

Writes into OUT: the run (checkpoints), ``samples/`` (synthetic windows, long CSV),
``forecast.csv`` (quantile columns), ``metrics.json``, ``forecast.png`` and ``samples.png``.
Progress bars on a terminal (``--quiet``: none).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import polydiff
from polydiff.cli import positive_int
from polydiff_timeseries import predict
from polydiff_timeseries.baselines import seasonal_naive
from polydiff_timeseries.metrics import forecast_metrics
from polydiff_timeseries.plot import plot_forecast
from polydiff_timeseries.tsdiff import raw_windows

RECIPE = "timeseries:tsdiff_ar"  # the recipe shipped with the plugin (configs/timeseries/tsdiff_ar.yaml)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("runs/timeseries_quickstart"),
                   help="output folder: the run, samples, forecasts, plots (default: runs/timeseries_quickstart)")
    p.add_argument("--steps", type=positive_int, default=600, help="training steps (the recipe says 1500)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args()
    out = args.out
    progress = False if args.quiet else None  # None: a bar on a terminal, plain lines in logs of long runs

    # 1. train (resumable; `polydiff train timeseries:tsdiff_ar` does the same)
    overrides = [f"train.max_steps={args.steps}", f"train.progress={str(not args.quiet).lower()}"]
    run = polydiff.train(RECIPE, out / "run", overrides=overrides, fresh=True, verbose=False)
    gen = polydiff.load(run.checkpoint)
    print(f"trained {run.step} steps, loss {run.metrics.get('train/loss', float('nan')):.4f}")

    # 2. synthesize windows and compare them with held-out real windows
    synthetic = gen.generate(256, seed=0, progress=progress)
    gen.save(synthetic, out / "samples", overwrite=True, plot=True)
    gen_metrics = gen.evaluate(synthetic)
    print("generation:", {k: round(v, 4) for k, v in gen_metrics.items()})

    # 3. forecast the test windows by observation self-guidance (quantile energy)
    data = gen.modality.dataset(gen.config.data.name, **gen.config.data.options)
    windows = raw_windows(data.test)[:20, :, 0]
    ctx_len = gen.info["context"]
    context, target = windows[:, :ctx_len], windows[:, ctx_len:]
    forecast = predict(gen, context, num_samples=50, guidance="quantile", scale=4.0, seed=0)
    season = gen.info["season"]
    scores = {"tsdiff": forecast.metrics(target, context, season),
              "seasonal_naive": forecast_metrics(target, seasonal_naive(context, target.shape[1], season), context,
                                                 season)}
    for k, v in scores.items():
        print(f"{k}: CRPS {v['crps']:.4f}  ND {v['nd']:.4f}  MASE {v['mase']:.3f}")

    # 4. files and plots
    forecast.to_frame().to_csv(out / "forecast.csv", index=False)
    (out / "metrics.json").write_text(json.dumps({"generation": gen_metrics, "forecast": scores}, indent=1))
    plot_forecast(context, forecast.samples, out / "forecast.png", target=target, titles=forecast.ids)
    print(f"wrote {out}/forecast.csv, metrics.json, forecast.png and samples/ (samples.csv, samples.png)")


if __name__ == "__main__":
    main()
