"""GPU: sampling throughput and peak GPU memory per modality for eager, compiled, CUDA-graph,
bf16 and post-training-quantized variants of the same weights, against float32 on the GPU and on
the same machine's CPUs; training steps per second on one GPU.

Runs where CUDA is available (the lent device machine, whose image has no registry access: the
modalities whose dependencies are there or carried as wheels are measured, the others are listed
as skipped with the import error). For each modality, its main recipe is trained on the GPU for
``--seconds``, then every variant samples ``NUM`` objects in one batch from the same weights and
seeds: samples per second is the median of ``--repeats`` calls after warm-up calls (one; for
compiled variants, until two in a row compile nothing new; 'first call' is the whole warm-up), peak memory is
``torch.cuda.max_memory_allocated`` over the variant's calls, and the main metric's change is
against float32 on the GPU. ``RUNS/gpu.json`` is rewritten after every measurement, so a run cut
at ``--deadline`` keeps what it measured. ``--report FILE`` renders ``bench/results/gpu.{json,md}``
from such a file (on any machine).

Usage::

    python bench/gpu.py --runs /tmp/gpubench --seconds 30 --deadline 300       # on a CUDA machine
    python bench/gpu.py --report /tmp/gpubench/gpu.json --command "..."        # render here
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import environment, header, publish, recipe, train_for, warm_up

# modality -> (recipe, sampling overrides, samples per call, main metric, lower is better); the
# overrides and metrics are bench/scale.py's, the batches larger, as a GPU needs
MODELS: dict[str, tuple[str, dict[str, Any], int, str, bool]] = {
    "toy": ("gmm", {"sampler": "dpm++2m", "steps": 10}, 20000, "sw2", True),
    "molecules": ("flow", {"steps": 50}, 256, "atm_stable", False),
    "text": ("shakespeare_mdlm", {"sampler": "ancestral", "steps": 64}, 64, "entropy", False),
    "timeseries": ("tsdiff_etth1", {}, 256, "context_fid", True),
    "graphs": ("community_small_gdss", {"steps": 200}, 64, "degree", True),
    "policies": ("reach_beso", {}, 64, "success_rate", False),  # a sample is a rollout (an Episode)
    "audio": ("sound_teacher", {"steps": 20}, 64, "fd", True),
    "proteins": ("frames", {"steps": 50}, 32, "ca_ca_dev", True),
    "crystals": ("periodic", {"steps": 50}, 128, "valid", False),
}
# name -> (device, compile, quantize, network dtype); in the order they are run
VARIANTS: dict[str, tuple[str, Any, str | None, str | None]] = {
    "float32": ("cuda", False, None, None),
    "bf16 network": ("cuda", False, None, "bfloat16"),
    "compiled": ("cuda", True, None, None),
    "int8": ("cuda", False, "int8", None),
    "fp8": ("cuda", False, "fp8", None),
    "cpu float32": ("cpu", False, None, None),
    "cudagraphs": ("cuda", "cudagraphs", None, None),
    "loop compiled": ("cuda", "loop", None, None),
}
LOOP_MAX_STEPS = 20  # the loop graph unrolls every step: only short grids
CPU_SHARE = 8  # the CPU variant samples NUM / CPU_SHARE objects (its rate is per sample)


def _steps(mod: str) -> int:
    name, sample, *_ = MODELS[mod]
    return int(sample.get("steps") or recipe(mod, name).get("sample", {}).get("steps", 0))


def variant(ckpt: Path, mod: str, name: str, repeats: int) -> dict[str, Any]:
    """One variant of one trained model: rate, peak GPU memory, first call and metrics."""
    import torch

    import polydiff
    from polydiff.quantize import _weight_bytes

    device, comp, quant, dtype = VARIANTS[name]
    _, sample, num, _, _ = MODELS[mod]
    if device == "cpu":
        num = max(1, num // CPU_SHARE)
    torch._dynamo.reset()
    gen = polydiff.load(ckpt, device=device)
    kw: dict[str, Any] = {**sample, "device": device, "batch_size": num, "progress": False}
    out: dict[str, Any] = {"num": num}
    if quant:
        t0 = time.perf_counter()
        gen = gen.quantized(quant, calibration=64, device=device, **sample)
        out["quantize_s"] = time.perf_counter() - t0
        out["quantized_layers"], out["kept_layers"] = len(gen.quantization.quantized), len(gen.quantization.kept)
    if dtype:
        gen.net.to(getattr(torch, dtype))
    out["weight_mib"] = _weight_bytes(gen.net) / 2**20
    if comp:
        kw["compile"] = comp

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    out["warm_up_calls"] = warm_up(lambda seed: gen.generate(num, seed=seed, **kw), bool(comp))
    sync()
    out["first_call_s"] = time.perf_counter() - t0
    times = []
    for rep in range(repeats):
        t0 = time.perf_counter()
        objects = gen.generate(num, seed=1 + rep, **kw)
        sync()
        times.append(time.perf_counter() - t0)
    out["samples_per_s"] = num / statistics.median(times)
    if device == "cuda":
        out["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
    try:
        metrics = gen.evaluate(objects)
    except ImportError as err:  # a metric's dependency not carried to the device (proteins' biotite): speed only
        out["metrics_missing"] = f"{type(err).__name__}: {err}"
        metrics = {}
    out["metrics"] = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
    return out


def measure(args: argparse.Namespace) -> None:
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("bench/gpu.py measures a GPU: torch sees no CUDA device here")
    deadline = time.monotonic() + args.deadline
    props = torch.cuda.get_device_properties(0)
    res: dict[str, Any] = {
        "machine": {"gpu": props.name, "gpu_mib": props.total_memory / 2**20, "torch": torch.__version__,
                    "cuda": torch.version.cuda, "cpus": os.cpu_count(), "python": platform.python_version(),
                    "cpu_threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d %H:%M:%S UTC",
                                                                                    time.gmtime())},
        "seconds": args.seconds, "repeats": args.repeats, "models": {}, "skipped": {}}
    args.runs.mkdir(parents=True, exist_ok=True)
    dump = args.json or args.runs / "gpu.json"

    def save() -> None:
        tmp = dump.with_suffix(".tmp")
        tmp.write_text(json.dumps(res, indent=1))
        tmp.replace(dump)

    for mod in args.modalities.split(","):
        try:
            import polydiff

            polydiff.load_modality(mod)
        except Exception as err:  # a plugin whose dependencies the machine lacks
            res["skipped"][mod] = f"{type(err).__name__}: {err}"
            save()
            continue
        if time.monotonic() > deadline - 30:
            res["skipped"][mod] = "not run: the deadline was reached"
            save()
            continue
        name, sample, num, metric, lower = MODELS[mod]
        cfg = recipe(mod, name, train={"accelerator": "gpu", "devices": 1, "logger": "none"})
        print(f"[gpu] training {mod}:{name} for {args.seconds} s", file=sys.stderr, flush=True)
        entry: dict[str, Any] = {"recipe": f"{mod}:{name}", "sample": sample, "num": num, "metric": metric,
                                 "lower_is_better": lower, "variants": {}}
        res["models"][mod] = entry
        try:
            ckpt, entry["train"] = train_for(cfg, args.runs / mod, args.seconds / 60, os.cpu_count() or 1)
        except Exception as err:
            entry["train"] = {"error": f"{type(err).__name__}: {err}"}
            save()
            continue
        entry["train"]["steps_per_s"] = entry["train"]["steps"] / (60 * entry["train"]["minutes"])
        save()
        for var in args.variants.split(","):
            comp = VARIANTS[var][1]
            if comp in ("loop", "cudagraphs") and _steps(mod) > LOOP_MAX_STEPS:
                entry["variants"][var] = {"error": f"not run: {_steps(mod)} steps (loop graphs for <= "
                                                   f"{LOOP_MAX_STEPS})"}
                continue
            if time.monotonic() > deadline - 20:
                entry["variants"][var] = {"error": "not run: the deadline was reached"}
                continue
            print(f"[gpu] {mod} {var}", file=sys.stderr, flush=True)
            try:
                entry["variants"][var] = variant(ckpt, mod, var, args.repeats)
            except Exception as err:
                traceback.print_exc()
                entry["variants"][var] = {"error": f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"}
            print(f"  {entry['variants'][var]}", file=sys.stderr, flush=True)
            save()
    save()


def _fmt(x: Any, digits: int = 3) -> str:
    return f"{x:.{digits}g}" if isinstance(x, (int, float)) else "-"


def _table(res: dict[str, Any]) -> list[str]:
    lines = ["| modality | trained steps (steps/s) | variant | main metric | value | change | samples / s | "
             "vs float32 GPU | first call (s) | peak GPU MiB | weights MiB |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for mod, e in res["models"].items():
        tr = e.get("train", {})
        trained = tr.get("error") or f"{tr['steps']} ({tr['steps_per_s']:.1f})"
        base = e["variants"].get("float32", {})
        b_rate, b_val = base.get("samples_per_s"), base.get("metrics", {}).get(e["metric"])
        for var, v in e["variants"].items():
            if "error" in v:
                lines.append(f"| {mod} | {trained} | {var} | {e['metric']} | {v['error']} | | | | | | |")
                continue
            val = v["metrics"].get(e["metric"])
            change = val - b_val if isinstance(val, float) and isinstance(b_val, float) else None
            ratio = f"{v['samples_per_s'] / b_rate:.3g}x" if b_rate else "-"
            lines.append(f"| {mod} | {trained} | {var} | {e['metric']} | {_fmt(val)} | {_fmt(change)} | "
                         f"{_fmt(v['samples_per_s'])} | {ratio} | {_fmt(v['first_call_s'])} | "
                         f"{_fmt(v.get('peak_gpu_mib'))} | {_fmt(v['weight_mib'])} |")
    missing = {mod: next(v["metrics_missing"] for v in e["variants"].values() if "metrics_missing" in v)
               for mod, e in res["models"].items() if any("metrics_missing" in v for v in e["variants"].values())}
    if missing:
        lines += ["", "Speed and memory only (the metrics' dependencies were not on the machine):", ""]
        lines += [f"- {mod}: {why}" for mod, why in missing.items()]
    if res["skipped"]:
        lines += ["", "Not measured in this run:", ""]
        lines += [f"- {mod}: {why}" for mod, why in res["skipped"].items()]
    return lines


def report(paths: list[Path], commands: list[str], notes: list[str]) -> None:
    """``bench/results/gpu.{json,md}``: one table per run (each with its own float32 baseline)."""
    runs = [json.loads(p.read_text()) for p in paths]
    m = runs[0]["machine"]
    env = environment(" && ".join(commands))
    env.update({"python": m["python"], "torch": m["torch"], "cpus": m["cpus"], "date": m["date"],
                "platform": f"{m['gpu']} ({m['gpu_mib'] / 1024:.0f} GiB), CUDA {m['cuda']}"})
    lines = header("GPU: sampling variants and training on one GPU", env)
    lines += [f"Each model trained on the GPU from its main recipe for the run's seconds; samples/s is the median "
              f"of the run's repeats, one batch per call, after warm-up (one call; compiled variants: until two "
              f"calls in a row compile nothing new, two in runs before 2026-12-05; 'first call' is the whole "
              f"warm-up, compilation included); peak GPU memory is "
              f"`torch.cuda.max_memory_allocated` over the variant's calls; change: against float32 on the GPU in "
              f"the same run (same weights, seeds and sampler). 'cpu float32': the same model on the machine's "
              f"{m['cpus']} CPUs ({m['cpu_threads']} torch threads), 1/{CPU_SHARE} of the samples (its metric, "
              f"over fewer samples, is not comparable)."]
    for i, (res, command) in enumerate(zip(runs, commands)):
        lines += ["", f"## Run {i + 1}: {res['seconds']:g} s of training per model, {res['repeats']} repeats", "",
                  f"`{command}`", ""]
        if i < len(notes) and notes[i]:
            lines += [notes[i], ""]
        lines += _table(res)
    publish("gpu", {"environment": env, "runs": runs}, "\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=Path, default=Path("/tmp/gpubench"))
    p.add_argument("--json", type=Path, help="where the results go as they are measured (default: RUNS/gpu.json)")
    p.add_argument("--modalities", default=",".join(MODELS))
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--seconds", type=float, default=30.0, help="training time per model on the GPU")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--deadline", type=float, default=600.0, help="seconds after which nothing new is started")
    p.add_argument("--report", type=Path, nargs="+", help="render bench/results/gpu.{json,md} from these gpu.json")
    p.add_argument("--command", action="append", default=[], help="with --report: the command of each run")
    p.add_argument("--note", action="append", default=[], help="with --report: a note on each run")
    args = p.parse_args(argv)
    if args.report:
        report(args.report, args.command, args.note)
    else:
        measure(args)


if __name__ == "__main__":
    main()
