"""Time-series acceptance benchmark: TSDiff (predict / refine / synthesize) and PaCoDi.

    python bench/timeseries.py --jobs 2    # full run, CPU (tiny but honest budgets, see BUDGETS)
    python bench/timeseries.py --quick     # smoke run on the embedded data only (a few minutes)

Writes bench/results/timeseries.json (every number, the budgets and the environment) and
bench/results/timeseries.md, headed by the exact command. Needs the shared data for the real
series (ETTh1, exchange_rate) and pytorch-forecasting for DeepAR (``polydiff-timeseries[forecasting]``).

1. Forecasting on the same time splits of real series (every channel a univariate series;
   the last ``test_windows`` horizons of each series are the test windows): seasonal naive,
   DeepAR (pytorch-forecasting, trained on the same mean-scaled training windows as TSDiff),
   TSDiff with quantile self-guidance, and refinement (Langevin and most-likely) of the
   seasonal-naive and DeepAR forecasts with TSDiff's implicit density.
2. Train on synthetic, test on real: linear (the Linear Predictive Score) and DeepAR models
   trained on TSDiff samples against the same models trained on the real training windows.
3. PaCoDi against an equal-size time-domain DiT at equal training budget: generation metrics,
   sampling time, parameters and the attention FLOPs measured with torch's FLOP counter.
4. Speed against TSDiff's own code at its size (bench/tsdiff_reference.py, in a scratch venv made
   once by ``python bench/tsdiff_reference.py --setup``): training step, unconditional sampling
   and guided forecasting, interleaved in one run. Alone: ``--skip forecasting,generation,pacodi_speed``
   (skipped sections keep their results from the previous report).
5. Speed against PaCoDi's own code at our ``pacodi_sine`` / ``pacodi_sine_sde`` recipes' size
   (bench/pacodi_reference.py, in a scratch venv made once by ``python bench/pacodi_reference.py
   --setup``): training steps and unconditional sampling at equal steps, and sampling with each
   side's default steps, interleaved in one run. Alone: ``--skip forecasting,generation,speed``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

RESULTS = Path(__file__).resolve().parent / "results"
SECTIONS = ("forecasting", "generation", "speed", "pacodi_speed")

BUDGETS: dict[str, dict[str, Any]] = {
    "full": {
        "forecast_sets": {
            "etth1": {"context": 96, "horizon": 24, "stride": 12, "test_windows": 4, "season": 24},
            "exchange_rate": {"context": 60, "horizon": 30, "stride": 10, "test_windows": 4, "season": 1},
        },
        "tsdiff_model": {"hidden": 32, "depth": 2, "state": 32, "emb_dim": 32},
        "tsdiff_steps": 600, "batch": 64, "num_samples": 32, "sample_steps": 50, "guidance_scale": 4.0,
        "deepar_steps": 300, "refine_iterations": 10, "synthetic": 1000,
        "gen_sets": {"sine": {"window": 24, "channels": 5, "length": 10000},
                     "etth1": {"context": 24, "horizon": 0, "stride": 1, "multivariate": True,
                               "scaling": "minmax"}},
        "gen_variants": {"sine": ["pacodi", "pacodi_mean_field", "pacodi_sde", "time_domain"],
                         "etth1": ["pacodi", "time_domain"]},
        "gen_model": {"hidden": 64, "heads": 4}, "gen_depth": 2, "gen_steps": 800, "gen_batch": 128,
        "gen_samples": 500, "metric_steps": 200,
        "speed": {"rounds": 2, "steps": 10, "warmup": 2, "batch": 64, "num": 32, "series": 2, "num_samples": 16,
                  "sample_repeats": 2, "threads": 1},
        "pacodi_speed": {"rounds": 2, "steps": 10, "warmup": 2, "batch": 128, "num": 512, "sample_repeats": 2,
                         "threads": 1},
    },
    "quick": {
        "forecast_sets": {"ar": {"context": 40, "horizon": 10, "stride": 5, "test_windows": 2, "season": 10,
                                 "n_series": 20, "length": 200}},
        "tsdiff_model": {"hidden": 16, "depth": 1, "state": 16, "emb_dim": 16},
        "tsdiff_steps": 150, "batch": 32, "num_samples": 16, "sample_steps": 20, "guidance_scale": 4.0,
        "deepar_steps": 30, "refine_iterations": 5, "synthetic": 200,
        "gen_sets": {"sine": {"window": 24, "channels": 5, "length": 2000}},
        "gen_variants": {"sine": ["pacodi", "pacodi_mean_field", "pacodi_sde", "time_domain"]},
        "gen_model": {"hidden": 16, "heads": 2}, "gen_depth": 1, "gen_steps": 100, "gen_batch": 64,
        "gen_samples": 200, "metric_steps": 60,
        "speed": {"rounds": 1, "steps": 2, "warmup": 1, "batch": 16, "num": 4, "series": 1, "num_samples": 4,
                  "sample_repeats": 1, "threads": 1},
        "pacodi_speed": {"rounds": 1, "steps": 2, "warmup": 1, "batch": 16, "num": 4, "sample_repeats": 1,
                         "threads": 1},
    },
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def train(cfg: dict[str, Any], out: Path) -> Any:
    import polydiff

    run = polydiff.train(cfg, out, fresh=True, verbose=False)
    return polydiff.load(run.checkpoint), run


def _train_cfg(steps: int, batch: int) -> dict[str, Any]:
    return {"max_steps": steps, "batch_size": batch, "lr": 1e-3, "ema": 0.995, "checkpoint_every": steps,
            "progress": False, "logger": "none", "seed": 0}


# ---------------------------------------------------------------------------------------------
# 1 + 2: forecasting, refinement, TSTR
# ---------------------------------------------------------------------------------------------

def forecasting(name: str, opts: dict[str, Any], b: dict[str, Any], work: Path) -> dict[str, Any]:
    from polydiff_timeseries import predict, refine
    from polydiff_timeseries.baselines import DeepARForecaster, LinearForecaster, seasonal_naive
    from polydiff_timeseries.data import mean_scale
    from polydiff_timeseries.metrics import forecast_metrics
    from polydiff_timeseries.tsdiff import raw_windows

    season = opts.pop("season")
    ctx_len, h = opts["context"], opts["horizon"]
    cfg = {"modality": "timeseries", "data": {"name": name, **opts}, "model": {"name": "tsdiff", **b["tsdiff_model"]},
           "process": {"schedule": "tsdiff", "prediction": "eps"}, "train": _train_cfg(b["tsdiff_steps"], b["batch"]),
           "sample": {"num": 16, "sampler": "ddpm", "steps": 100, "grid": "uniform_t", "final_zero": True}}
    t0 = time.time()
    gen, run = train(cfg, work / f"tsdiff_{name}")
    t_train = time.time() - t0
    data = gen.modality.dataset(name, **opts)
    w = raw_windows(data.test)[..., 0]
    ctx, y = w[:, :ctx_len], w[:, ctx_len:]
    res: dict[str, Any] = {"dataset": name, "options": {**opts, "season": season}, "n_series": data.info["n_series"],
                           "n_test_windows": len(w), "n_train_windows": len(data.train),
                           "tsdiff_train_seconds": t_train, "tsdiff_final_loss": run.metrics.get("train/loss"),
                           "methods": {}, "seconds": {}}

    def score(key: str, samples: np.ndarray, seconds: float) -> None:
        res["methods"][key] = forecast_metrics(y, samples, ctx, season)
        res["seconds"][key] = seconds
        log(f"  {name} {key}: CRPS {res['methods'][key]['crps']:.4f} ({seconds:.0f} s)")

    s = b["num_samples"]
    t0 = time.time()
    naive = seasonal_naive(ctx, h, season)
    score("seasonal_naive", naive, time.time() - t0)

    # DeepAR on the same mean-scaled training windows
    t0 = time.time()
    train_w = data.train.tensors["x"].numpy()[..., 0]
    deepar = DeepARForecaster(ctx_len, h, max_steps=b["deepar_steps"], batch_size=b["batch"]).fit(train_w)
    scale = mean_scale(ctx[..., None])[:, 0]
    dar = deepar.predict(ctx / scale[:, None], num_samples=s) * scale[:, None, None]
    score("deepar", dar, time.time() - t0)

    t0 = time.time()
    grid = {"steps": b["sample_steps"], "grid": "uniform_t", "final_zero": True}
    fc = predict(gen, ctx, num_samples=s, guidance="quantile", scale=b["guidance_scale"], seed=0, **grid)
    score("tsdiff_quantile", fc.samples, time.time() - t0)
    t0 = time.time()
    fc_mse = predict(gen, ctx, num_samples=s, guidance="mse", scale=1.0, seed=0, **grid)
    score("tsdiff_mse", fc_mse.samples, time.time() - t0)

    it = b["refine_iterations"]
    for base_name, base in (("seasonal_naive", naive), ("deepar", dar)):
        for method in ("langevin", "ml"):
            t0 = time.time()
            r = refine(gen, ctx, base, method=method, iterations=it, num_samples=s if method == "langevin" else None,
                       step_size=0.05 if method == "langevin" else 0.1, seed=0)
            score(f"{base_name}+refine_{method}", r.samples, time.time() - t0)

    # train on synthetic, test on real (in the model's scaled units)
    t0 = time.time()
    syn = gen.generate(b["synthetic"], seed=1, **grid)[..., 0]
    t_syn = time.time() - t0
    real_test = data.test.tensors["x"].numpy()[..., 0]
    yt = real_test[:, ctx_len:]
    tstr: dict[str, Any] = {"synthetic_windows": len(syn), "sampling_seconds": t_syn}
    for src, windows in (("real", train_w), ("synthetic", syn)):
        lin = LinearForecaster(ctx_len).fit(windows).predict(real_test[:, :ctx_len])
        tstr[f"linear_{src}"] = forecast_metrics(yt, lin[:, None, :, 0])
        t0 = time.time()  # DeepAR on the real windows is the forecasting model above
        dm = deepar if src == "real" else DeepARForecaster(ctx_len, h, max_steps=b["deepar_steps"],
                                                           batch_size=b["batch"]).fit(windows)
        tstr[f"deepar_{src}"] = forecast_metrics(yt, dm.predict(real_test[:, :ctx_len], num_samples=s))
        tstr[f"deepar_{src}_seconds"] = time.time() - t0
    tstr["lps"] = tstr["linear_synthetic"]["crps"]
    res["tstr"] = tstr
    log(f"  {name} TSTR: LPS {tstr['lps']:.4f} (linear on real {tstr['linear_real']['crps']:.4f}), DeepAR synthetic "
        f"{tstr['deepar_synthetic']['crps']:.4f} vs real {tstr['deepar_real']['crps']:.4f}")
    return res


# ---------------------------------------------------------------------------------------------
# 3: PaCoDi against a time-domain model
# ---------------------------------------------------------------------------------------------

def attention_flops_measured(net: Any, state: dict[str, torch.Tensor]) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc, torch.no_grad():
        net(state, torch.tensor([0.5]))
    return int(sum(v for k, v in fc.get_flop_counts()["Global"].items() if "bmm" in str(k)))


def generation(name: str, opts: dict[str, Any], b: dict[str, Any], work: Path) -> dict[str, Any]:
    from polydiff_timeseries.genmetrics import generation_metrics, train_encoder
    from polydiff_timeseries.modality import TimeSeriesModality
    from polydiff_timeseries.nets import num_parameters
    from polydiff_timeseries.spectral import num_bins

    m = TimeSeriesModality()
    data = m.dataset(name, **opts)
    real = data.test.tensors["x"].numpy()
    length, ch = data.info["length"], data.info["channels"]
    d = b["gen_depth"]
    variants = {
        "pacodi": ({"name": "pacodi", "depth": d, **b["gen_model"]}, "spectral", "tsdiff", "ddpm"),
        "pacodi_mean_field": ({"name": "pacodi", "depth": d, "interaction": False, **b["gen_model"]}, "spectral",
                              "tsdiff", "ddpm"),
        "pacodi_sde": ({"name": "pacodi", "depth": d, **b["gen_model"]}, "spectral", "vp_linear", "euler_maruyama"),
        "time_domain": ({"name": "transformer", "depth": 2 * d, **b["gen_model"]}, "time", "tsdiff", "ddpm"),
    }
    enc = train_encoder(real, steps=b["metric_steps"], seed=0)  # one encoder for every model of this data
    res: dict[str, Any] = {"dataset": name, "options": opts, "length": length, "channels": ch,
                           "bins": num_bins(length), "n_test": len(real), "models": {}}
    for key in b["gen_variants"][name]:
        model, rep, schedule, sampler = variants[key]
        cfg = {"modality": "timeseries", "data": {"name": name, **opts}, "model": model,
               "process": {"schedule": schedule, "prediction": "eps", "representation": rep},
               "train": _train_cfg(b["gen_steps"], b["gen_batch"]),
               "sample": {"num": 16, "sampler": sampler, "steps": 100,
                          **({"grid": "uniform_t", "final_zero": True} if schedule == "tsdiff" else {})}}
        t0 = time.time()
        gen, run = train(cfg, work / f"gen_{name}_{key}")
        t_train = time.time() - t0
        t0 = time.time()
        syn = gen.generate(b["gen_samples"], seed=0, batch_size=500)
        t_sample = time.time() - t0
        from polydiff_timeseries import genmetrics as G

        met = generation_metrics(syn, real, data.info, steps=b["metric_steps"], seed=0)
        met["context_fid"] = G.context_fid(syn, real, enc)  # the shared encoder
        field = "spec" if rep == "spectral" else "x"
        shape = (1, num_bins(length), ch, 2) if rep == "spectral" else (1, length, ch)
        res["models"][key] = {"params": num_parameters(gen.net), "train_seconds": t_train,
                              "final_loss": run.metrics.get("train/loss"), "sample_seconds": t_sample,
                              "sampler": sampler, "schedule": schedule,
                              "attention_flops_per_forward": attention_flops_measured(
                                  gen.net, {field: torch.randn(shape), "observed": torch.ones(1, length, ch)}),
                              "metrics": met}
        log(f"  {name} {key}: disc {met['discriminative']:.3f} pred {met['predictive']:.4f} "
            f"ctx-FID {met['context_fid']:.3f} sample {t_sample:.1f} s")
    return res


# ---------------------------------------------------------------------------------------------
# 4: speed against TSDiff's own code
# ---------------------------------------------------------------------------------------------

TSDIFF_SIZE = {"hidden": 64, "depth": 3, "state": 128, "emb_dim": 128}  # TSDiff's diffusion_small_config
SPEED_SETUP = "python bench/tsdiff_reference.py --setup"
SPEED_KEYS = ("train_step_s", "sample_s", "forecast_s")


def _our_tsdiff_speed(b: dict[str, Any], work: Path) -> dict[str, Any]:
    """polydiff's TSDiff at the size of TSDiff's ``diffusion_small_config`` on windows of TSDiff's
    hourly recipes (context 336, horizon 24): ``polydiff.train`` for ``warmup + steps + 1`` steps
    (batch start to batch start; the last, which writes the checkpoint, left out), then
    unconditional DDPM sampling (``Generator.generate``) and quantile self-guided forecasting
    (``predict``), 100 steps each, as the reference is timed."""
    import itertools
    import statistics

    from common import batch_clock, timed_calls
    from tsdiff_reference import CONTEXT, PREDICTION

    import polydiff
    from polydiff_timeseries import predict
    from polydiff_timeseries.tsdiff import raw_windows

    total = b["warmup"] + b["steps"] + 1
    data = {"context": CONTEXT, "horizon": PREDICTION, "stride": PREDICTION, "n_series": 32, "length": 1200,
            "season": 24}
    cfg = {"modality": "timeseries", "data": {"name": "ar", **data}, "model": {"name": "tsdiff", **TSDIFF_SIZE},
           "process": {"schedule": "tsdiff", "prediction": "eps"},
           "train": {**_train_cfg(total, b["batch"]), "grad_clip": 0.5, "threads": b["threads"]},
           "sample": {"num": b["num"], "sampler": "ddpm", "steps": 100, "grid": "uniform_t", "final_zero": True}}
    clock = batch_clock()
    before = torch.get_num_threads()
    torch.set_num_threads(b["threads"])
    try:
        run = polydiff.train(cfg, work / "tsdiff_speed", fresh=True, callbacks=[clock], verbose=False)
        gen = polydiff.load(run.checkpoint)
        ctx = raw_windows(gen.modality.dataset("ar", **data).test)[: b["series"], :CONTEXT, 0]
        sample_s, sample_cpu = timed_calls(lambda seed: gen.generate(b["num"], seed=seed, progress=False),
                                      b["sample_repeats"])
        forecast_s, forecast_cpu = timed_calls(lambda seed: predict(gen, ctx, num_samples=b["num_samples"],
                                                               guidance="quantile", scale=4.0, seed=seed),
                                          b["sample_repeats"])
    finally:
        torch.set_num_threads(before)
    wall = [y - x for x, y in itertools.pairwise(clock.wall)][b["warmup"]:]
    cpu = [y - x for x, y in itertools.pairwise(clock.cpu)][b["warmup"]:]
    return {"train_step_s": statistics.median(wall), "train_step_s_all": wall, "train_step_cpu_s_all": cpu,
            "final_loss": run.metrics.get("train/loss"), "sample_s": statistics.median(sample_s),
            "sample_s_all": sample_s, "sample_cpu_s_all": sample_cpu, "forecast_s": statistics.median(forecast_s),
            "forecast_s_all": forecast_s, "forecast_cpu_s_all": forecast_cpu,
            "params": sum(p.numel() for p in gen.net.parameters()), "model": TSDIFF_SIZE}


def speed(b: dict[str, Any], work: Path) -> dict[str, Any]:
    """Training step, unconditional sampling and guided forecasting, polydiff against TSDiff's own
    code (bench/tsdiff_reference.py in its scratch venv), in lockstep: ``rounds`` rounds of one
    measurement each, the first of a round alternating between the two."""

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from common import ratio_summary, reference_missing
    from tsdiff_reference import REF, VENV, find_reference, measure_tsdiff, venv_python

    out: dict[str, Any] = {"ours": [], "tsdiff": [], "order": [], "setup": SPEED_SETUP}
    for r in range(b["rounds"]):
        order = ["ours", "tsdiff"] if r % 2 == 0 else ["tsdiff", "ours"]
        for who in order:
            if who == "ours":
                out["ours"].append(_our_tsdiff_speed(b, work))
                continue
            ref = measure_tsdiff(steps=b["steps"], warmup=b["warmup"], threads=b["threads"], batch=b["batch"],
                                 num=b["num"], series=b["series"], num_samples=b["num_samples"],
                                 sample_repeats=b["sample_repeats"], seed=r)
            if ref is None:
                out["tsdiff_missing"] = reference_missing("TSDiff", venv_python(), VENV, REF, find_reference())
                continue
            out["tsdiff"].append(ref)
        out["order"].append(order)
        last = {who: out[who][-1] if out[who] else {} for who in ("ours", "tsdiff")}
        log(f"  speed round {r}: " + "; ".join(f"{k} ours {last['ours'][k]:.3f} s, TSDiff "
                                              f"{last['tsdiff'].get(k, float('nan')):.3f} s" for k in SPEED_KEYS))
        if "tsdiff_missing" in out:
            log(f"  {out['tsdiff_missing']}: run {SPEED_SETUP}")
            break
    out["summary"] = {}
    for key in SPEED_KEYS:
        out["summary"][key] = ratio_summary((r[key] for r in out["ours"]), (r[key] for r in out["tsdiff"]), "tsdiff")
    return out


# ---------------------------------------------------------------------------------------------
# 5: speed against PaCoDi's own code
# ---------------------------------------------------------------------------------------------

PACODI_SETUP = "python bench/pacodi_reference.py --setup"
PACODI_RECIPES = {"pacodi_sine": ("train_step", "sample"), "pacodi_sine_sde": ("sde_train_step", "sample_sde")}
# report row: (our key, PaCoDi's key); our default steps are the recipes' steps, timed once
PACODI_ROWS = {"train_step_s": ("train_step_s", "train_step_s"),
               "sde_train_step_s": ("sde_train_step_s", "sde_train_step_s"),
               "sample_s": ("sample_s", "sample_s"), "sample_sde_s": ("sample_sde_s", "sample_sde_s"),
               "sample_default_s": ("sample_s", "sample_default_s")}


def _our_pacodi_run(cfg: dict[str, Any], b: dict[str, Any], out: Path, train: str, sample: str) -> dict[str, Any]:
    """Train ``cfg`` for ``warmup + steps + 1`` steps (the training steps timed batch start to
    batch start, the last, which writes the checkpoint, left out), then time unconditional
    sampling of ``num`` windows with the recipe's sampler and steps; the times keyed
    ``<train>_s``, ``<sample>_s`` (all of them: ``..._s_all``, CPU: ``..._cpu_s_all``)."""
    import itertools
    import statistics

    from common import batch_clock, timed_calls

    import polydiff

    clock = batch_clock()
    run = polydiff.train(cfg, out, fresh=True, callbacks=[clock], verbose=False)
    gen = polydiff.load(run.checkpoint)
    sample_s, sample_cpu = timed_calls(lambda seed: gen.generate(b["num"], seed=seed, progress=False),
                                       b["sample_repeats"])
    wall = [y - x for x, y in itertools.pairwise(clock.wall)][b["warmup"]:]
    cpu = [y - x for x, y in itertools.pairwise(clock.cpu)][b["warmup"]:]
    return {f"{train}_s": statistics.median(wall), f"{train}_s_all": wall, f"{train}_cpu_s_all": cpu,
            f"{train}_final_loss": run.metrics.get("train/loss"), f"{sample}_s": statistics.median(sample_s),
            f"{sample}_s_all": sample_s, f"{sample}_cpu_s_all": sample_cpu,
            f"{sample}_sampler": cfg["sample"]["sampler"], f"{sample}_steps": cfg["sample"]["steps"],
            "params": sum(p.numel() for p in gen.net.parameters())}


def _our_pacodi_speed(b: dict[str, Any], work: Path, hidden: int | None = None) -> dict[str, Any]:
    """polydiff's PaCoDi as the recipes ``pacodi_sine`` (DDPM) and ``pacodi_sine_sde`` (VP-SDE,
    Euler-Maruyama) ship it (or at width ``hidden``), with PaCoDi's gradient clipping (norm 1.0)
    and the budget's batch: ``polydiff.train`` (data loading, EMA and logging included) and
    ``Generator.generate``."""
    from common import recipe

    train_cfg = {"max_steps": b["warmup"] + b["steps"] + 1, "batch_size": b["batch"], "grad_clip": 1.0,
                 "threads": b["threads"], "checkpoint_every": 10**6, "progress": False, "logger": "none"}
    out: dict[str, Any] = {}
    before = torch.get_num_threads()
    torch.set_num_threads(b["threads"])
    try:
        for name, (train, sample) in PACODI_RECIPES.items():
            cfg = recipe("timeseries", name, train=train_cfg, **({"model": {"hidden": hidden}} if hidden else {}))
            out.update(_our_pacodi_run(cfg, b, work / f"pacodi_speed_{name}", train, sample), model=cfg["model"])
    finally:
        torch.set_num_threads(before)
    return out


def _pacodi_equal_params_width(reference_params: int) -> tuple[int, int]:
    """The smallest width of our ``pacodi_sine`` network (a multiple of its heads) with at least
    ``reference_params`` parameters, and that count: ours at about PaCoDi's size, never smaller."""
    from common import recipe

    from polydiff import FieldSpec, GaussianProcess
    from polydiff_timeseries.nets import PaCoDiNet

    cfg = recipe("timeseries", "pacodi_sine")
    m, data = cfg["model"], cfg["data"]
    fields = {"spec": FieldSpec(GaussianProcess("vp_linear"))}  # the count does not depend on the process
    for hidden in range(m["heads"], 4 * m["hidden"] + 1, m["heads"]):
        net = PaCoDiNet(data["window"], data["channels"], fields, hidden=hidden, depth=m["depth"], heads=m["heads"],
                        interaction=m["interaction"])
        count = sum(p.numel() for p in net.parameters())
        if count >= reference_params:
            return hidden, count
    raise ValueError(f"no width up to {4 * m['hidden']} reaches PaCoDi's {reference_params:,} parameters")


def pacodi_speed(b: dict[str, Any], work: Path) -> dict[str, Any]:
    """Training steps and unconditional sampling of the DDPM and SDE variants, polydiff against
    PaCoDi's own code (bench/pacodi_reference.py in its scratch venv) at our recipes' size, in
    lockstep: ``rounds`` rounds of one measurement each, the first of a round alternating."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from common import ratio_summary, recipe, reference_missing
    from pacodi_reference import REF, VENV, find_reference, measure_pacodi, venv_python

    ddpm, sde = (recipe("timeseries", name) for name in PACODI_RECIPES)
    if (ddpm["model"], ddpm["data"]) != (sde["model"], sde["data"]):
        raise ValueError(f"the PaCoDi reference is timed at one size, but the recipes {', '.join(PACODI_RECIPES)} "
                         "differ in their model or data sections")
    size = {"length": ddpm["data"]["window"], "channels": ddpm["data"]["channels"], "hidden": ddpm["model"]["hidden"],
            "depth": ddpm["model"]["depth"], "ddpm_steps": ddpm["sample"]["steps"], "sde_steps": sde["sample"]["steps"]}
    out: dict[str, Any] = {"ours": [], "ours_equal_params": [], "pacodi": [], "order": [], "setup": PACODI_SETUP,
                           "size": size}
    for r in range(b["rounds"]):
        # ours at PaCoDi's parameter count runs once that count is known: after PaCoDi in round 0
        order = ["ours", "pacodi", "ours_equal_params"][:: 1 if r % 2 == 0 else -1]
        for who in order:
            if who == "ours":
                out["ours"].append(_our_pacodi_speed(b, work))
                continue
            if who == "ours_equal_params":
                if not out["pacodi"]:
                    continue
                if "equal_params_hidden" not in out:
                    out["equal_params_hidden"], _ = _pacodi_equal_params_width(out["pacodi"][0]["params"])
                out["ours_equal_params"].append(_our_pacodi_speed(b, work, hidden=out["equal_params_hidden"]))
                continue
            ref = measure_pacodi(steps=b["steps"], warmup=b["warmup"], threads=b["threads"], batch=b["batch"],
                                 num=b["num"], sample_repeats=b["sample_repeats"], seed=r, **size)
            if ref is None:
                out["pacodi_missing"] = reference_missing("PaCoDi", venv_python(), VENV, REF, find_reference())
                continue
            out["pacodi"].append(ref)
        out["order"].append(order)
        last = {who: out[who][-1] if out[who] else {} for who in ("ours", "pacodi")}
        log(f"  pacodi speed round {r}: " + "; ".join(
            f"{row} ours {last['ours'][mine]:.3f} s, PaCoDi {last['pacodi'].get(theirs, float('nan')):.3f} s"
            for row, (mine, theirs) in PACODI_ROWS.items()))
        if out["ours_equal_params"]:
            eq = out["ours_equal_params"][-1]
            log(f"  ours at width {out['equal_params_hidden']} ({eq['params']:,} parameters): " + ", ".join(
                f"{row} {eq[mine]:.3f} s" for row, (mine, _) in PACODI_ROWS.items() if row != "sample_default_s"))
        if "pacodi_missing" in out:
            log(f"  {out['pacodi_missing']}: run {PACODI_SETUP}")
            break
    out["summary"] = {row: ratio_summary((x[mine] for x in out["ours"]), (x[theirs] for x in out["pacodi"]), "pacodi")
                      for row, (mine, theirs) in PACODI_ROWS.items()}
    if out["ours_equal_params"]:
        out["summary_equal_params"] = {
            row: ratio_summary((x[mine] for x in out["ours_equal_params"]), (x[theirs] for x in out["pacodi"]),
                               "pacodi") for row, (mine, theirs) in PACODI_ROWS.items() if row != "sample_default_s"}
    return out


# ---------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------

def cpu_note(env: dict[str, Any]) -> str:
    """`` (AVX2)``: the vector instructions torch used (a DeepAR baseline trained on another CPU can
    land elsewhere), or nothing for runs that did not record them."""
    return f" ({env['cpu']})" if env.get("cpu") else ""


def markdown(res: dict[str, Any]) -> str:
    env = res["environment"]
    lines = [f"# Time-series benchmark\n\n```\n{res['command']}\n```\n",
             f"{env['platform']}, torch {env['torch']}, {env['cpus']} CPUs{cpu_note(env)} (load average "
             f"{env['load_average_at_start']:.1f} at start"
             f"{': the machine was shared' if env['load_average_at_start'] > 1 else ''}), "
             f"{env['jobs']} process(es) x {env['threads']} thread(s); total {res['total_seconds'] / 60:.1f} min. "
             f"Budgets ({res['mode']}): `{json.dumps(res['budgets'])}`\n",
             "CRPS is gluonts' mean weighted quantile loss over q = 0.1..0.9 (nearest-rank quantiles), "
             "ND / NRMSE / MASE as in gluonts (MASE's seasonal error from the context window). "
             "Lower is better everywhere except coverage (50 / 90 ideal).\n"]
    for f in res.get("forecasting", []):
        o = f["options"]
        lines.append(f"## Forecasting: {f['dataset']} ({f['n_series']} univariate series, context {o['context']}, "
                     f"horizon {o['horizon']}, {f['n_test_windows']} test windows, {f['n_train_windows']} training "
                     f"windows; TSDiff trained {f['tsdiff_train_seconds']:.0f} s)\n")
        lines.append("| method | CRPS | ND | NRMSE | MASE | 50% cov. | 90% cov. | seconds |")
        lines.append("|---|---|---|---|---|---|---|---|")
        for k, v in f["methods"].items():
            lines.append(f"| {k} | {v['crps']:.4f} | {v['nd']:.4f} | {v['nrmse']:.4f} | {v['mase']:.3f} | "
                         f"{100 * v['coverage_50']:.0f} | {100 * v['coverage_90']:.0f} | {f['seconds'][k]:.0f} |")
        mt = f["methods"]
        gains = []
        for base in ("seasonal_naive", "deepar"):
            for meth in ("langevin", "ml"):
                k = f"{base}+refine_{meth}"
                if k in mt:
                    gains.append(f"{base} {meth}: {100 * (1 - mt[k]['crps'] / mt[base]['crps']):+.1f}%")
        lines.append(f"\nRefinement CRPS gain (positive = better): {'; '.join(gains)}.\n")
        t = f["tstr"]
        lines.append(f"Train on synthetic, test on real ({t['synthetic_windows']} TSDiff windows, scaled units): "
                     "CRPS of the same forecaster trained on real vs synthetic training windows.\n")
        lines.append("| forecaster | trained on real | trained on synthetic |")
        lines.append("|---|---|---|")
        lines.append(f"| linear (LPS) | {t['linear_real']['crps']:.4f} | {t['linear_synthetic']['crps']:.4f} |")
        lines.append(f"| DeepAR | {t['deepar_real']['crps']:.4f} | {t['deepar_synthetic']['crps']:.4f} |\n")
    for g in res.get("generation", []):
        lines.append(f"## PaCoDi vs time domain: {g['dataset']} (windows {g['length']} x {g['channels']}, "
                     f"{g['bins']} frequency bins, {g['n_test']} held-out windows)\n")
        lines.append("| model | params | sampler | discriminative | predictive (TimeGAN) | predictive, all channels "
                     "| context-FID | ACF err. | train s | sample s | attention FLOPs / forward |")
        lines.append("|---|---|---|---|---|---|---|---|---|---|---|")
        for k, v in g["models"].items():
            mm = v["metrics"]
            lines.append(f"| {k} | {v['params']} | {v['sampler']} | {mm['discriminative']:.3f} | "
                         f"{mm['predictive']:.4f} | {mm.get('predictive_all', float('nan')):.4f} | "
                         f"{mm['context_fid']:.3f} | {mm['acf_error']:.4f} | "
                         f"{v['train_seconds']:.0f} | {v['sample_seconds']:.1f} | "
                         f"{v['attention_flops_per_forward']:,} |")
        lines.append("")
    lines.append("Context-FID uses an encoder trained in-project on the held-out real windows (one per data set, "
                 "shared by all models); it is not TS2Vec's published weights, so compare values within this "
                 "table only. The predictive score is TimeGAN's (a GRU trained on synthetic windows predicts the "
                 "last channel's next value from the other channels; MAE on real windows): the sines' channels are "
                 "independent, so there it is about the same for every model, and the all-channels variant (each "
                 "channel's next value from all channels) is the one that tells them apart.\n")
    if "speed" in res:
        lines += speed_section(res["speed"])
    if "pacodi_speed" in res:
        lines += pacodi_speed_section(res["pacodi_speed"])
    return "\n".join(lines)


def speed_section(r: dict[str, Any]) -> list[str]:
    """The report's section on speed against TSDiff's own code."""
    b, env = r["budget"], r["environment"]
    lines = ["## Speed against TSDiff's own code\n",
             f"Command: `{r['command']}` (once before it: `{r['setup']}`, which exports TSDiff into /tmp/tsdiff_ref "
             "and makes the venv /tmp/tsdiff_venv with the project's torch 2.13.0; see `bench/tsdiff_reference.py`).\n"]
    if not r["tsdiff"]:
        return [*lines, f"Not measured: {r.get('tsdiff_missing', 'no TSDiff measurement')}.\n"]
    t0, o0 = r["tsdiff"][0], r["ours"][0]
    lines.append(
        f"Run {r.get('date', '(date not recorded)')} at polydiff commit {r.get('commit')}. "
        f"TSDiff commit {t0['commit'][:12]} (gluonts {t0['versions']['gluonts']}, pytorch-lightning "
        f"{t0['versions']['pytorch_lightning']}), its `diffusion_small_config` (3 S4 blocks, hidden 64, state 128, "
        f"step embedding 128) on the windows of its hourly recipes (context 336 + prediction 24 = {t0['length']} "
        f"steps, mean scaling, {t0['input_channels']} input channels with its lags); ours `tsdiff` with hidden 64, "
        "depth 3, state 128, emb_dim 128 (S4D layers) on windows of the same length (embedded AR data). "
        f"{env['cpus']} CPUs{cpu_note(env)}, {b['threads']} thread(s), load average {env['load_average_at_start']:.1f} "
        f"at start; {len(r['ours'])} round(s) in lockstep, each one measurement of each side, the first of a round "
        f"alternating. Training: batch {b['batch']}, gradient clipping 0.5, Adam; {b['warmup']} untimed steps, then "
        f"the median of {b['steps']} (ours: `polydiff.train`, batch start to batch start, with data loading and EMA; "
        "TSDiff: its module's training step, backward, clipping and Adam step, without Lightning's trainer loop). "
        f"Sampling: 100 DDPM steps for {b['num']} windows (TSDiff: `sample_n`; ours: `Generator.generate`); "
        f"forecasting: quantile self-guidance, scale 4, 100 DDPM steps, {b['series']} histories x "
        f"{b['num_samples']} samples (TSDiff: `DDPMGuidance`; ours: `polydiff_timeseries.predict`). Each sampling "
        f"time is the median of {b['sample_repeats']} calls after an untimed one. TSDiff's S4 kernels use their "
        "pure-PyTorch fallback: its KeOps path is hard-coded to the GPU.\n")
    lines += ["| | polydiff | TSDiff (own code) | ours / TSDiff | at most the reference's |", "|---|---|---|---|---|",
              f"| parameters | {o0['params']:,} | {t0['params']:,} | | |"]
    names = {"train_step_s": f"training step (s, batch {b['batch']})",
             "sample_s": f"unconditional sampling (s per call of {b['num']})",
             "forecast_s": f"guided forecasting (s per call of {b['series']} x {b['num_samples']})"}
    for key, name in names.items():
        v = r["summary"][key]
        lines.append(f"| {name} | {v['ours']:.3f} | {v['tsdiff']:.3f} | {v['ratio']:.2f}x | "
                     f"{'yes' if v['at_most'] else 'no'} |")
    return [*lines, ""]


def pacodi_speed_section(r: dict[str, Any]) -> list[str]:
    """The report's section on speed against PaCoDi's own code."""
    b, env, size = r["budget"], r["environment"], r["size"]
    lines = ["## Speed against PaCoDi's own code\n",
             f"Command: `{r['command']}` (once before it: `{r['setup']}`, which exports PaCoDi into /tmp/pacodi_ref "
             "and makes the venv /tmp/pacodi_venv with the project's torch 2.13.0; see `bench/pacodi_reference.py`).\n"]
    if not r["pacodi"]:
        return [*lines, f"Not measured: {r.get('pacodi_missing', 'no PaCoDi measurement')}.\n"]
    p0, o0 = r["pacodi"][0], r["ours"][0]
    m = o0["model"]
    lines.append(
        f"Run {r.get('date', '(date not recorded)')} at polydiff commit {r.get('commit')}. "
        f"PaCoDi commit {p0['commit'][:12]} (timm {p0['versions']['timm']}"
        f"{', whose attention calls torch scaled_dot_product_attention' if p0['fused_attn'] else ''}; torchvision's "
        "compiled operators do not load against the CPU torch and an empty `torchvision._meta_registrations` stands "
        "in, which runs nothing), "
        f"its `PaCoDi_ddpm` and `PaCoDi_sde` with the `dit_solver_v1` backbone at our recipes' size: windows of "
        f"{size['length']} steps x {size['channels']} channels ({p0['bins']} frequency bins), emb_size "
        f"{size['hidden']}, "
        f"{size['depth']} layers, {p0['heads']} heads (hard-coded in its code; ours {m['heads']}), interaction on, "
        f"instance normalisation on; ours `pacodi_sine` / `pacodi_sine_sde` (hidden {m['hidden']}, depth "
        f"{m['depth']}, heads {m['heads']}). {env['cpus']} CPUs{cpu_note(env)}, {b['threads']} thread(s), load "
        f"average {env['load_average_at_start']:.1f} at start; {len(r['ours'])} round(s) in lockstep, each one "
        "measurement of each side, the first of a round alternating. Training: batch "
        f"{b['batch']}, gradient clipping 1.0; {b['warmup']} untimed steps, then the median of {b['steps']} (ours: "
        "`polydiff.train`, batch start to batch start, with data loading and EMA every step; PaCoDi: its solver's "
        "step with one accumulation: forward and loss, backward, clipping, Adam, its scheduler, its EMA every 10 "
        f"steps). Sampling: {b['num']} windows per call, the median of {b['sample_repeats']} calls after an untimed "
        f"one (PaCoDi: its `Trainer.sample` loop over the EMA model's `generate_unconditional`; ours: "
        f"`Generator.generate`). Equal steps: DDPM {size['ddpm_steps']} steps (PaCoDi: its DDIM step, eta 0, over "
        f"its {size['ddpm_steps']}-step schedule; ours ancestral DDPM), SDE {size['sde_steps']} Euler-Maruyama "
        f"steps. Default against default: ours the recipe's {o0['sample_steps']} DDPM steps; PaCoDi what its "
        f"evaluation runs with its sines recipe, {p0['default_steps']} DDIM steps of a {p0['default_max_step']}-step "
        f"model in chunks of {p0['default_chunk']} (its SDE recipes' default, {p0['default_sde_steps']} steps, is "
        f"{'the equal-steps row' if p0['default_sde_steps'] == size['sde_steps'] else 'not timed'}). Ours has more "
        "parameters: its MLPs have ratio 2 on the concatenated real and imaginary tokens, ours ratio 4 plus the "
        "linear messages between branches; so ours also runs at the smallest width (a multiple of its heads) with "
        "at least PaCoDi's parameter count (the rows 'ours at width ...').\n")
    lines += ["| | polydiff | PaCoDi (own code) | ours / PaCoDi | at most the reference's |", "|---|---|---|---|---|",
              f"| parameters | {o0['params']:,} | {p0['params']:,} | | |"]
    names = {"train_step_s": f"training step, DDPM (s, batch {b['batch']})",
             "sde_train_step_s": f"training step, SDE (s, batch {b['batch']})",
             "sample_s": f"sampling, DDPM, {size['ddpm_steps']} steps (s per call of {b['num']})",
             "sample_sde_s": f"sampling, SDE, {size['sde_steps']} Euler-Maruyama steps (s per call of {b['num']})",
             "sample_default_s": f"sampling, each side's default: ours {o0['sample_steps']} DDPM steps, PaCoDi "
                                 f"{p0['default_steps']} DDIM steps (s per call of {b['num']})"}
    for key, name in names.items():
        v = r["summary"][key]
        lines.append(f"| {name} | {v['ours']:.3f} | {v['pacodi']:.3f} | {v['ratio']:.2f}x | "
                     f"{'yes' if v['at_most'] else 'no'} |")
    if r.get("summary_equal_params"):
        e0 = r["ours_equal_params"][0]
        lines.append(f"| parameters, ours at width {r['equal_params_hidden']} (the smallest with at least PaCoDi's) "
                     f"| {e0['params']:,} | {p0['params']:,} | | |")
        for key, v in r["summary_equal_params"].items():
            lines.append(f"| {names[key]}, ours at width {r['equal_params_hidden']} | {v['ours']:.3f} | "
                         f"{v['pacodi']:.3f} | {v['ratio']:.2f}x | {'yes' if v['at_most'] else 'no'} |")
    return [*lines, ""]


def _commit() -> str | None:
    """The checkout's commit (short), or None outside a git checkout."""
    import subprocess

    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=RESULTS.parent, capture_output=True, text=True)
    return done.stdout.strip() or None


def _task(section: str, name: str, opts: dict[str, Any], b: dict[str, Any], tmp: str) -> dict[str, Any]:
    """One data set of one section (run in a worker process with ``--jobs``)."""
    if multiprocessing.parent_process() is not None:
        torch.set_num_threads(1)
    log(f"{section} {name}")
    fn = forecasting if section == "forecasting" else generation
    return fn(name, dict(opts), b, Path(tmp))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke run on embedded data only")
    p.add_argument("--json", type=Path, default=RESULTS / "timeseries.json")
    p.add_argument("--md", type=Path, default=RESULTS / "timeseries.md")
    p.add_argument("--skip", default="", help="comma list of sections to skip: forecasting,generation,speed,"
                   "pacodi_speed (the results of skipped sections are kept from the previous report)")
    p.add_argument("--jobs", type=int, default=1, help="run the data sets in this many processes (1 thread each)")
    args = p.parse_args(argv)
    mode = "quick" if args.quick else "full"
    b = json.loads(json.dumps(BUDGETS[mode]))
    skip = set(filter(None, args.skip.split(",")))
    if skip - set(SECTIONS):
        p.error(f"--skip: unknown section(s) {', '.join(sorted(skip - set(SECTIONS)))}; allowed: {', '.join(SECTIONS)}")
    command = "python " + " ".join(shlex.quote(a) for a in ["bench/timeseries.py", *(argv or sys.argv[1:])])
    res: dict[str, Any] = {"command": command, "mode": mode, "budgets": b,
                           "environment": {"platform": platform.platform(), "python": platform.python_version(),
                                           "torch": torch.__version__, "jobs": args.jobs,
                                           "threads": 1 if args.jobs > 1 else torch.get_num_threads(),
                                           "cpus": os.cpu_count(), "cpu": torch.backends.cpu.get_cpu_capability(),
                                           "load_average_at_start": os.getloadavg()[0]}}
    t_all = time.time()
    tasks = [("forecasting", n, o) for n, o in b["forecast_sets"].items() if "forecasting" not in skip]
    tasks += [("generation", n, o) for n, o in b["gen_sets"].items() if "generation" not in skip]
    with tempfile.TemporaryDirectory() as tmp:
        if args.jobs > 1:
            ctx = multiprocessing.get_context("spawn")
            with ctx.Pool(args.jobs) as pool:
                outs = pool.starmap(_task, [(*t, b, tmp) for t in tasks])
        else:
            outs = [_task(*t, b, tmp) for t in tasks]
    for (section, _, _), out in zip(tasks, outs):
        res.setdefault(section, []).append(out)
    if "speed" not in skip:  # alone on the machine, after the pool
        log("speed")
        with tempfile.TemporaryDirectory() as tmp:
            res["speed"] = {**speed(b["speed"], Path(tmp)), "budget": b["speed"], "command": command,
                            "environment": res["environment"], "commit": _commit(),
                            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    if "pacodi_speed" not in skip:  # alone on the machine, after the pool
        log("pacodi_speed")
        with tempfile.TemporaryDirectory() as tmp:
            res["pacodi_speed"] = {**pacodi_speed(b["pacodi_speed"], Path(tmp)), "budget": b["pacodi_speed"],
                                   "command": command, "environment": res["environment"], "commit": _commit(),
                                   "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    elapsed = res["total_seconds"] = time.time() - t_all
    from polydiff.files import atomic_write

    previous = json.loads(args.json.read_text()) if skip and args.json.is_file() else {}
    if previous.get("mode", mode) == mode:
        ran = {s for s in SECTIONS if s not in skip}
        if ran <= {"speed", "pacodi_speed"} and previous:  # only speed sections ran: the previous run's header stays
            res = {**previous, **{k: v for k, v in res.items() if k in ran}}
        else:
            res.update({k: v for k, v in previous.items() if k in SECTIONS and k in skip})
    args.json.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(args.json, json.dumps(res, indent=1, default=float))
    atomic_write(args.md, markdown(res))
    log(f"wrote {os.path.relpath(args.json)} and {os.path.relpath(args.md)} ({elapsed / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
