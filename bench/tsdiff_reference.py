"""Speed of TSDiff's own code (Kollovieh et al., NeurIPS 2023, "Predict, Refine, Synthesize:
Self-Guiding Diffusion Models for Probabilistic Time Series Forecasting",
github.com/amazon-science/unconditional-time-series-diffusion) on this machine, so the time-series
benchmark can report ours as a ratio measured in the same run.

    python bench/tsdiff_reference.py --setup       # make /tmp/tsdiff_ref and /tmp/tsdiff_venv (idempotent)
    /tmp/tsdiff_venv/bin/python bench/tsdiff_reference.py --steps 10 --threads 1

prints one JSON line ``{"train_step_s", "sample_s", "forecast_s", "params", "commit", ...}``; from
another benchmark (any interpreter)::

    from tsdiff_reference import measure_tsdiff     # (bench/ on sys.path)
    ref = measure_tsdiff(steps=10)                   # None when the venv or the checkout is missing

TSDiff is never copied into this repository nor installed in the project's environment.
``--setup`` exports the tree of a bare git mirror of the repository (``$TSDIFF_MIRROR``, default
``/work/.mirror/amazon-science+unconditional-time-series-diffusion/repo``; any ``git clone --bare``
of it will do) into a scratch folder outside the project (``/tmp/tsdiff_ref`` or ``$TSDIFF_REF``;
the commit goes to ``.tsdiff_commit``) and makes a scratch venv (``/tmp/tsdiff_venv`` or
``$TSDIFF_VENV``) with the project's torch 2.13.0 (pinned by ``constraints.txt``; TSDiff pins
torch 1.13.1, which has no wheel here) and TSDiff's other pins where they install:
``gluonts~=0.12.3`` (its torch part; the ``mxnet`` extra is not used by TSDiff's torch code),
``pytorch-lightning~=1.9.4``, ``opt_einsum~=3.3.0``, plus einops, pandas, scipy, scikit-learn,
matplotlib and seaborn, which its modules import, and a setuptools that still ships
``pkg_resources`` (lightning 1.9 imports it). TSDiff's ``pykeops==2.1.1`` is left out: its S4
code calls KeOps with ``backend="GPU"`` hard-coded, so on a CPU the kernels must use the pure
PyTorch fallback (the "slow Cauchy kernel" the module warns about), which is what a CPU user of
TSDiff runs. Measured against commit 3eafeffdffefd4d2f5344ac63e5627a746c331a3 or the one in
``.tsdiff_commit``.

What is measured (one process, ``torch.set_num_threads(threads)`` and ``OMP_NUM_THREADS``, float32,
CPU), with TSDiff's own classes imported from the checkout, unmodified:

* the model is ``uncond_ts_diff.model.TSDiff`` with ``diffusion_small_config`` (the S4 backbone of
  3 residual blocks, hidden 64, step embedding 128, S4 state 128, bidirectional; 100 DDPM steps,
  betas linear 1e-4 .. 0.1) and the settings of TSDiff's hourly recipes
  (``configs/train_tsdiff/train_solar.yaml`` and the others): ``freq H``, context 336, prediction
  24, ``normalization mean``, ``use_lags True`` (lags 24 .. 672 hours: 11 input channels),
  ``use_features False``, ``init_skip False``, lr 1e-3;
* a training step is what Lightning's automatic optimisation does with TSDiff's module and the
  recipe's ``gradient_clip_val 0.5``: ``zero_grad``, ``training_step`` (TSDiff's own: mean
  scaling, lags, a random step, the epsilon loss), ``backward``, gradient clipping by norm 0.5,
  Adam's ``step``, ``on_train_batch_end``. Lightning's trainer loop itself is not run (it only
  adds time to the reference). Batches (``batch`` windows) are synthesised in the layout of
  TSDiff's training transform (``past_target`` of context + 672 lag steps, observed values,
  ``future_target``, one static category, one static real, age and hour-of-day / day-of-week /
  day-of-month / day-of-year time features), before the clock starts; ``warmup`` steps are run
  untimed, then the median of ``steps`` timed ones;
* unconditional sampling calls ``TSDiff.sample_n(num)``: 100 DDPM steps, one network call each;
* forecasting calls TSDiff's ``DDPMGuidance`` with quantile self-guidance (the recipes' sampler,
  ``num_samples`` per series, scale 4) on ``series`` histories directly (its ``forward``; gluonts'
  predictor and data transforms around it are left out): per step a DDPM step and the guidance
  gradient, i.e. two network calls and one backward pass.
  Each sampling measurement is the median of ``sample_repeats`` calls after an untimed one.

The clock is wall time; the process CPU time is returned too, so a step whose wall time is far
above cpu / threads was slowed by other processes.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

from common import reference_commit, worker_main, worker_start  # bench/ is on the path (the script's folder)

VENV = Path(os.environ.get("TSDIFF_VENV", "/tmp/tsdiff_venv"))
REF = Path(os.environ.get("TSDIFF_REF", "/tmp/tsdiff_ref"))
MIRROR = Path(os.environ.get("TSDIFF_MIRROR", "/work/.mirror/amazon-science+unconditional-time-series-diffusion/repo"))
PACKAGES = ["gluonts~=0.12.3", "pytorch-lightning~=1.9.4", "opt_einsum~=3.3.0", "einops", "pandas<2.2", "scipy",
            "scikit-learn", "matplotlib", "seaborn", "setuptools>=77,<81"]
NEEDED = ("src/uncond_ts_diff/model/diffusion/tsdiff.py", "src/uncond_ts_diff/arch/s4.py",
          "src/uncond_ts_diff/sampler/observation_guidance.py", "src/uncond_ts_diff/configs.py")
CHECK = ("import torch, gluonts, pytorch_lightning, opt_einsum, einops, sklearn, seaborn, pkg_resources; "
         "assert torch.__version__.split('+')[0] == '2.13.0'; assert gluonts.__version__.startswith('0.12.')")
CONTEXT, PREDICTION, FREQ = 336, 24, "H"  # TSDiff's hourly recipes
TIME_FEATURES = 5  # the age feature + hour of day, day of week, day of month, day of year (freq H)


def venv_python() -> Path:
    """The scratch venv's interpreter."""
    return VENV / "bin" / "python"


def find_reference() -> Path | None:
    """The exported TSDiff tree (``$TSDIFF_REF`` or /tmp/tsdiff_ref) when it holds what the worker needs."""
    return REF if all((REF / p).is_file() for p in NEEDED) else None


def export_reference(mirror: Path = MIRROR, dest: Path = REF) -> Path:
    """Export the HEAD tree of a bare mirror of TSDiff's repository into ``dest``."""
    from common import export_mirror

    export_mirror(mirror, dest, "amazon-science/unconditional-time-series-diffusion", ".tsdiff_commit",
                  "TSDIFF_MIRROR", Path(__file__).name)
    return dest


def setup(verbose: bool = True) -> Path:
    """Export TSDiff into ``REF`` and create the scratch venv unless both already work."""
    if find_reference() is None:
        export_reference()
    from common import scratch_venv

    return scratch_venv(VENV, CHECK, list(PACKAGES), verbose=verbose)


def measure_tsdiff(steps: int = 10, warmup: int = 2, threads: int = 1, batch: int = 64, num: int = 64,
                   series: int = 4, num_samples: int = 16, sample_repeats: int = 3, seed: int = 0,
                   timeout: float = 3600.0) -> dict[str, Any] | None:
    """Run this script in the scratch venv and return its JSON result; None when the venv or the
    checkout is missing (run ``--setup``)."""
    py, ref = venv_python(), find_reference()
    if not py.exists() or ref is None:
        return None
    from common import run_worker

    opts = dict(steps=steps, warmup=warmup, threads=threads, batch=batch, num=num, series=series,
                num_samples=num_samples, sample_repeats=sample_repeats, seed=seed)
    return run_worker(py, str(Path(__file__).resolve()), opts, timeout, ref)


# ---------------------------------------------------------------------------------------------- worker


def _batch(torch: Any, n: int, lags: int, generator: Any) -> dict[str, Any]:
    """``n`` windows in the layout of TSDiff's training transform: positive series (a daily cycle
    and noise around a level), all observed."""
    past = CONTEXT + lags
    steps = torch.arange(past + PREDICTION, dtype=torch.float32)
    level = 1.0 + 4.0 * torch.rand(n, 1, generator=generator)
    series = level * (1.0 + 0.3 * torch.sin(2 * torch.pi * steps / 24)) + 0.1 * torch.randn(
        n, past + PREDICTION, generator=generator)
    feats = torch.randn(n, past + PREDICTION, TIME_FEATURES, generator=generator)
    return {"past_target": series[:, :past], "past_observed_values": torch.ones(n, past),
            "future_target": series[:, past:], "future_observed_values": torch.ones(n, PREDICTION),
            "feat_static_cat": torch.zeros(n, 1, dtype=torch.long), "feat_static_real": torch.zeros(n, 1),
            "past_time_feat": feats[:, :past], "future_time_feat": feats[:, past:]}


def measure(steps: int, warmup: int, threads: int, batch: int, num: int, series: int, num_samples: int,
            sample_repeats: int, seed: int) -> dict[str, Any]:
    """Time TSDiff's training step, unconditional sampling and guided forecasting in this (venv)
    process, cwd = the checkout."""
    import importlib.metadata as md

    worker_start(threads, seed, src="src")
    import torch
    from uncond_ts_diff.configs import diffusion_small_config
    from uncond_ts_diff.model import TSDiff
    from uncond_ts_diff.sampler import DDPMGuidance

    model = TSDiff(**diffusion_small_config, freq=FREQ, context_length=CONTEXT, prediction_length=PREDICTION,
                   normalization="mean", use_features=False, use_lags=True, init_skip=False, lr=1e-3)
    model.train()
    optimizer = model.configure_optimizers()[0][0]
    lags = max(model.lags_seq)
    gen = torch.Generator().manual_seed(seed)
    batches = [_batch(torch, batch, lags, gen) for _ in range(warmup + steps)]
    times, cpu, losses = [], [], []
    for k, data in enumerate(batches):
        t0, c0 = time.perf_counter(), time.process_time()
        optimizer.zero_grad()
        loss = model.training_step(data, k)["loss"]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)  # the recipes' gradient_clip_val
        optimizer.step()
        model.on_train_batch_end(None, data, k)
        losses.append(loss.item())
        if k >= warmup:
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)

    model.eval()

    def timed(fn: Any) -> tuple[list[float], list[float], Any]:
        fn()  # untimed
        wall, proc, out = [], [], None
        for _ in range(sample_repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            out = fn()
            wall.append(time.perf_counter() - t0)
            proc.append(time.process_time() - c0)
        return wall, proc, out

    sample_s, sample_cpu, samples = timed(lambda: model.sample_n(num_samples=num))
    guidance = DDPMGuidance(model, prediction_length=PREDICTION, scale=4.0, num_samples=num_samples,
                            guidance="quantile")
    hist = _batch(torch, series, lags, gen)
    inputs = {k: hist[k] for k in ("past_target", "past_observed_values", "feat_static_cat", "feat_static_real",
                                   "past_time_feat", "future_time_feat")}
    forecast_s, forecast_cpu, forecast = timed(lambda: guidance(**inputs))
    assert tuple(forecast.shape) == (series, num_samples, PREDICTION), forecast.shape
    return {
        "train_step_s": statistics.median(times), "train_step_s_min": min(times), "train_step_s_all": times,
        "train_step_cpu_s_all": cpu, "batch": batch, "final_loss": losses[-1],
        "sample_s": statistics.median(sample_s), "sample_s_all": sample_s, "sample_cpu_s_all": sample_cpu,
        "num": num, "sample_steps": model.timesteps,
        "sample_finite": bool(torch.isfinite(torch.as_tensor(samples)).all()),
        "forecast_s": statistics.median(forecast_s), "forecast_s_all": forecast_s, "forecast_cpu_s_all": forecast_cpu,
        "series": series, "num_samples": num_samples, "forecast_finite": bool(torch.isfinite(forecast).all()),
        "params": sum(p.numel() for p in model.backbone.parameters()), "input_channels": model.input_dim,
        "length": CONTEXT + PREDICTION, "steps": steps, "warmup": warmup, "threads": threads,
        "sample_repeats": sample_repeats, "commit": reference_commit(Path.cwd(), ".tsdiff_commit"),
        "versions": {"torch": torch.__version__, "gluonts": md.version("gluonts"),
                     "pytorch_lightning": md.version("pytorch-lightning"), "python": platform.python_version()},
    }



def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--setup", action="store_true", help=f"export TSDiff to {REF} and create the scratch venv {VENV} "
                   "(idempotent), then exit")
    p.add_argument("--steps", type=int, default=10, help="timed training steps")
    p.add_argument("--warmup", type=int, default=2, help="untimed training steps first")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--batch", type=int, default=64, help="training windows per step (TSDiff's recipes: 64)")
    p.add_argument("--num", type=int, default=64, help="windows per unconditional sampling call")
    p.add_argument("--series", type=int, default=4, help="histories per forecasting call")
    p.add_argument("--num-samples", type=int, default=16, help="forecast samples per history")
    p.add_argument("--sample-repeats", type=int, default=3, help="timed sampling calls (the median is reported)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    if a.setup:
        setup()
        return
    if min(a.steps, a.batch, a.num, a.series, a.num_samples, a.sample_repeats) < 1 or a.warmup < 0:
        p.error("--steps, --batch, --num, --series, --num-samples and --sample-repeats must be >= 1, --warmup >= 0")
    worker_main("TSDiff", find_reference(), REF, ("gluonts", "pytorch_lightning"), __file__, venv_python(),
                lambda: measure(a.steps, a.warmup, a.threads, a.batch, a.num, a.series, a.num_samples,
                                a.sample_repeats, a.seed))


if __name__ == "__main__":
    main()
