"""Scale: compiled and quantized sampling per modality, training with 1 and 2 processes, sharded
sampling, and cost against problem size.

Parts (each writes ``RUNS/<part>.json``; ``report`` renders ``bench/results/scale.{json,md}``):

- ``variants``: for each modality's main recipe, a model trained for ``--minutes`` (cached in
  ``RUNS/models``), then ``--num`` samples from six variants of the same weights, each in a
  fresh process (so peak memory is its own): float32 eager (the default), compiled
  (``compile=True``: the network; ``"loop"``: the whole fixed-step loop as one graph, for
  grids of at most 20 steps), int8 and fp8 post-training quantization (calibrated on 64
  samples of the sampler's own trajectories, in chunks of ``--num``, so its memory peak is that
  of the sampling it is compared with), and int8 + compiled. Reported: the modality's main
  metric and its change against float32; samples per second (median of at least ``--repeats``
  timed calls, more until they last ``--min-seconds``, after warm-up calls, which for
  compiled variants hold the compilation, reported apart: one call, or for compiled variants
  calls until two in a row compile nothing new); the speed against float32 eager timed in the
  same process, call by call in alternation (see :func:`worker`); peak resident memory; weight
  bytes;
- ``train``: training throughput and per-rank peak memory of the toy and GDSS recipes and a
  34.7M-parameter toy network with 1 process x 2 threads against 2 processes x 1 thread (DDP and
  FSDP over gloo), steps and samples per second net of start-up;
- ``train_compile``: each modality's main recipe (and ``md:muller_brown``, an energy model)
  trained eager and with ``train.compile: true``, in alternation, ``--threads`` threads: the
  median training step after warm-up, the first compiled step (compilation, with dynamo reset and
  inductor's caches off, as a fresh process finds them) and the steps after which compiling has
  paid for itself;
- ``fsdp``: every plugin's main recipe, 3 steps on 2 CPU processes under FSDP with sharded
  checkpoints, then ``polydiff.load`` of the shards and 2 samples (a check, not a speed);
- ``shard``: ``polydiff sample`` with 1 and 2 processes on the same request: wall time and the
  byte identity of the outputs;
- ``size``: seconds per sample and peak memory of sampling against problem size for each
  modality's main model at the recipe's width (weights after one training step: the cost does not
  depend on their values), each size sampled in a fresh process, on embedded or generated data
  only (see ``SIZES``): toy (dimension; Gaussian mixtures), graphs (nodes; planar graphs), time
  series (sequence length; sines), molecules (atoms per molecule, asked for as the sampling
  condition ``atoms``), proteins (residues; synthetic backbones of that one length), crystals
  (atoms per cell: prototypes of at most that many sites, sampled with the condition ``atoms``),
  text (sequence length; character blocks of RDKit's bundled NCI SMILES file read as one
  stream, sampled with the ancestral sampler in a fixed number of steps, as the first-hitting
  sampler makes one network call per token), audio (log-mel frames of 256 samples
  at 16 kHz; the embedded sound events, padded) and policies (action horizon of the reach
  policy, 4 actions executed per chunk; a sample is a whole rollout). Every size is set through
  the recipe's sections or a sampling condition: no plugin needed a change.

``--modalities`` selects the modalities of the ``variants``, ``fsdp`` and ``size`` parts.

Usage::

    python bench/scale.py                         # every part (well over an hour of CPU time)
    python bench/scale.py --parts variants --modalities toy,graphs --minutes 1
    python bench/scale.py --parts size,report --modalities proteins,text
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    ROOT,
    batch_clock,
    command_line,
    environment,
    header,
    publish,
    recipe,
    rss_mib,
    train_for,
    warm_up,
)

# modality -> (recipe, sampling overrides for the bench, main metric, lower is better)
MODELS: dict[str, tuple[str, dict[str, Any], str, bool]] = {
    "toy": ("gmm", {}, "sw2", True),
    "graphs": ("community_small_gdss", {"steps": 200}, "degree", True),
    "timeseries": ("tsdiff_etth1", {}, "context_fid", True),
    "molecules": ("flow", {}, "atm_stable", False),
    "proteins": ("frames", {"steps": 50}, "ca_ca_dev", True),
    "crystals": ("periodic", {"steps": 50}, "valid", False),
    "audio": ("sound_teacher", {"steps": 20}, "fd", True),
    "text": ("shakespeare_mdlm", {"sampler": "first_hitting"}, "entropy", False),  # as measured in scale.md
    "policies": ("reach_beso", {}, "success_rate", False),  # a sample is a rollout (an Episode)
}
VARIANTS = {  # name -> (compile, quantize)
    "float32": (False, None), "compiled": (True, None), "loop compiled": ("loop", None), "int8": (False, "int8"),
    "fp8": (False, "fp8"), "int8+compiled": (True, "int8"),
}
MOST_TIMED = 50  # timed calls stop here even if they have not yet lasted --min-seconds
LOOP_MAX_STEPS = 20  # the loop graph unrolls every step (compile time grows with it): only short grids
NUM = {"toy": 2000, "graphs": 20, "timeseries": 64, "molecules": 32, "proteins": 8, "crystals": 32, "audio": 32,
       "text": 32, "policies": 32}


REPORT_PARTS = ("variants", "train", "train_compile", "fsdp", "shard", "size")
MEMORY = "VmHWM"  # how peak memory is read (ru_maxrss is carried over from the parent into the child on Linux)


# ---------------------------------------------------------------------------------------------
# one variant, in its own process
# ---------------------------------------------------------------------------------------------

def worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Load, quantize / compile, time and evaluate one variant (run with ``--worker JSON``).

    Peak memory is read after the variant's warm-up, before anything else runs. A variant other
    than float32 is then timed in pairs with the loaded float32 eager generator in the same
    process (float32 call, variant call, same seed), so its speed ratio does not depend on the
    process or on the machine's drift: float32 alone in two fresh processes of one run differed
    by up to 15%."""
    import torch

    import polydiff
    from polydiff.quantize import _weight_bytes, cpu_int8_kernel

    torch.set_num_threads(spec["threads"])
    gen = ref = polydiff.load(spec["ckpt"])
    out: dict[str, Any] = {"rss_loaded_mib": rss_mib(MEMORY), "cpu": torch.backends.cpu.get_cpu_capability(),
                           "int8_kernel": cpu_int8_kernel() if spec["quantize"] == "int8" else None}
    kw = dict(spec["sample"])
    if spec["quantize"]:
        t0 = time.perf_counter()
        # calibrated in chunks of the samples timed below, so the peak memory compares like with like
        # (64 proteins in one batch peaked at 950 MiB against 390 MiB for sampling 8)
        gen = gen.quantized(spec["quantize"], calibration=64, batch_size=spec["num"], **kw)
        out["quantize_s"] = time.perf_counter() - t0
        out["rss_quantized_mib"] = rss_mib(MEMORY)
        out["quantized_layers"], out["kept_layers"] = len(gen.quantization.quantized), len(gen.quantization.kept)
        out["quantize_error"], out["quantize_error_all"] = gen.quantization.error, gen.quantization.error_all
    out["weight_mib"] = _weight_bytes(gen.net) / 2**20
    variant_kw = {**kw, "compile": spec["compile"]} if spec["compile"] else kw
    paired = bool(spec["quantize"] or spec["compile"])  # every variant but float32 itself
    n, times, ref_times = spec["num"], [], []

    def timed(g: Any, seed: int, options: dict[str, Any], into: list[float]) -> Any:
        t0 = time.perf_counter()
        got = g.generate(n, seed=seed, progress=False, **options)
        into.append(time.perf_counter() - t0)
        return got

    try:
        t0 = time.perf_counter()
        # warm-up (compiled: until compilation settles); 'first call' holds all of it
        out["warm_up_calls"] = warm_up(lambda seed: gen.generate(n, seed=seed, progress=False, **variant_kw),
                                       bool(spec["compile"]))
        out["first_call_s"] = time.perf_counter() - t0
        out["peak_rss_mib"] = rss_mib(MEMORY)
        if paired:
            ref.generate(n, seed=999, progress=False, **kw)  # float32's own warm-up
        # at least `repeats` calls (pairs), and more until they last `min_seconds` (a 0.2 s call is noisy)
        while len(times) < spec["repeats"] or (sum(times) < spec.get("min_seconds", 0) and len(times) < MOST_TIMED):
            seed = 1 + len(times)
            if paired:
                timed(ref, seed, kw, ref_times)
            got = timed(gen, seed, variant_kw, times)
            if seed == spec["repeats"]:
                objects = got  # the metric is read on the same seed in every variant
    except (ValueError, NotImplementedError) as err:
        return {**out, "error": f"{type(err).__name__}: {err}"}
    out["samples_per_s"], out["timed_calls"] = n / statistics.median(times), len(times)
    if paired:
        out["float32_paired_samples_per_s"] = n / statistics.median(ref_times)  # this process, call by call
    metrics = gen.evaluate(objects)
    out["metrics"] = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
    return out


def run_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """One variant in a fresh process, with an empty compile cache: 'first call' is a cold
    compilation, as a user's first (warm from earlier runs, torch's on-disk cache cut toy's loop
    graph from 141 s to 22 s)."""
    with tempfile.TemporaryDirectory(prefix="polydiff-inductor-") as cache:
        got = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True, text=True,
                             timeout=3600, env={**os.environ, "OMP_NUM_THREADS": str(spec["threads"]),
                                                "TORCHINDUCTOR_CACHE_DIR": cache})
    if got.returncode != 0:
        return {"error": got.stderr.strip().splitlines()[-1] if got.stderr.strip() else f"exit {got.returncode}"}
    return json.loads(got.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------
# parts
# ---------------------------------------------------------------------------------------------

def part_variants(args: argparse.Namespace) -> dict[str, Any]:
    res: dict[str, Any] = {"minutes": args.minutes, "threads": args.threads, "repeats": args.repeats,
                           "min_seconds": args.min_seconds, "models": {}, "memory": MEMORY}
    for mod in args.modalities.split(","):
        name, sample, _, _ = MODELS[mod]
        out = args.runs / "models" / mod
        ckpt = out / "checkpoints" / "last.ckpt"
        entry: dict[str, Any] = {"recipe": f"{mod}:{name}", "sample": sample, "num": NUM[mod]}
        if not ckpt.exists():
            print(f"[variants] training {mod}:{name} for {args.minutes} min", file=sys.stderr, flush=True)
            ckpt, entry["train"] = train_for(recipe(mod, name), out, args.minutes, args.threads)
            (out / "bench_train.json").write_text(json.dumps(entry["train"]))
        else:
            entry["train"] = json.loads((out / "bench_train.json").read_text())
        entry["variants"] = {}
        steps = sample.get("steps") or recipe(mod, name).get("sample", {}).get("steps", 0)
        for var in args.variants.split(","):
            comp, quant = VARIANTS[var]
            if comp == "loop" and steps > LOOP_MAX_STEPS:
                entry["variants"][var] = {"error": f"not run: {steps} steps (loop graphs for <= {LOOP_MAX_STEPS})"}
                continue
            print(f"[variants] {mod} {var}", file=sys.stderr, flush=True)
            spec = {"ckpt": str(ckpt), "compile": comp, "quantize": quant, "sample": sample, "num": NUM[mod],
                    "repeats": args.repeats, "min_seconds": args.min_seconds, "threads": args.threads}
            entry["variants"][var] = run_worker(spec)
            print(f"  {entry['variants'][var]}", file=sys.stderr, flush=True)
        res["models"][mod] = entry
    return res


def _train_worker(path: str, out: str) -> None:
    """``polydiff.train`` of the recipe at ``path``, then this rank's peak memory on one line: over
    the whole process, and over the training steps alone (the high-water mark is reset when
    training starts, after the network is built and sharded, and read after each step, before
    the final checkpoint gathers the full state). Run as ``scale.py --train-worker PATH OUT``;
    Lightning's launcher re-runs that command per rank."""
    from lightning.pytorch.callbacks import Callback

    import polydiff

    class StepsPeak(Callback):
        setup = peak = 0.0

        def on_train_start(self, *args: Any) -> None:
            self.setup = rss_mib("VmHWM")
            Path("/proc/self/clear_refs").write_text("5")  # Linux: VmHWM starts again from VmRSS

        def on_train_batch_end(self, *args: Any) -> None:
            self.peak = max(self.peak, rss_mib("VmHWM"))

    probe = StepsPeak()
    polydiff.train(path, out, fresh=True, verbose=False, callbacks=[probe])
    rank = int(os.environ.get("LOCAL_RANK", 0))
    peaks = {"peak_rss_mib": max(probe.setup, rss_mib(MEMORY)), "steps_peak_mib": probe.peak}
    print("TRAINMEM " + json.dumps({"rank": rank, **peaks}), flush=True)


def _train_wall(cfg: dict[str, Any], out: Path, steps: int) -> tuple[float, list[dict[str, Any]]] | str:
    """Seconds for training ``steps`` steps, start-up included, and each rank's peak memory (MiB,
    :func:`_train_worker`); or the error line."""
    cfg = json.loads(json.dumps(cfg))
    cfg["train"]["max_steps"] = steps
    path = out.with_suffix(".json")
    path.write_text(json.dumps(cfg))
    t0 = time.perf_counter()
    got = subprocess.run([sys.executable, __file__, "--train-worker", str(path), str(out)], capture_output=True,
                         text=True, timeout=3600)
    wall = time.perf_counter() - t0
    if got.returncode != 0:
        return got.stderr.strip().splitlines()[-1]
    ranks = sorted((json.loads(line.split(" ", 1)[1]) for line in got.stdout.splitlines()
                    if line.startswith("TRAINMEM ")), key=lambda r: r["rank"])
    return wall, ranks


def _train_rate(cfg: dict[str, Any], out: Path, processes: int, threads: int, steps: int,
                strategy: str = "auto", checkpoints: str = "full") -> dict[str, Any]:
    """Training throughput net of start-up: every setting runs as the same command (Lightning's
    launcher starts a second process itself), ``steps // 5`` steps and then ``steps``; the rate is
    the extra steps over the extra seconds, and the start-up what the short run left over. Peak
    memory: the largest of the ranks' own peaks (VmHWM) in the full run, over the process and
    over the training steps."""
    cfg = json.loads(json.dumps(cfg))
    cfg["train"].update({"threads": threads, "progress": False, "checkpoint_every": 10**6, "logger": "none",
                         "accelerator": "cpu", "devices": processes, "strategy": strategy,
                         "checkpoint_format": checkpoints})
    short = max(1, steps // 5)
    runs = [_train_wall(cfg, out, n) for n in (short, steps)]
    if any(isinstance(r, str) for r in runs):
        return {"error": next(r for r in runs if isinstance(r, str))}
    (wall_short, _), (wall, ranks) = runs
    if wall <= wall_short:
        return {"error": f"{steps} steps took no longer than {short} ({wall:.1f} s): too few to measure"}
    rate = (steps - short) / (wall - wall_short)
    batch = int(cfg["train"]["batch_size"])
    return {"processes": processes, "threads": threads, "strategy": strategy, "checkpoints": checkpoints,
            "steps": steps, "wall_s": wall,
            "startup_s": wall_short - short / rate, "steps_per_s": rate, "samples_per_s": rate * batch * processes,
            "peak_rss_mib": max(r["peak_rss_mib"] for r in ranks),
            "steps_peak_mib": max(r["steps_peak_mib"] for r in ranks), "ranks": ranks}


# (key, modality, recipe, model changes, steps, DDP strategy)
TRAIN_RUNS = (
    ("toy", "toy", "gmm", {}, 400, "ddp"),
    # GDSS's ScoreNetworkX leaves some parameters without a gradient in a step: DDP must be told
    ("graphs", "graphs", "community_small_gdss", {}, 40, "ddp_find_unused_parameters_true"),
    # a network of 34M parameters, where sharding the weights, gradients, Adam's moments and the EMA shows
    ("toy_wide", "toy", "gmm", {"hidden": 2048, "depth": 4}, 20, "ddp"),
)


def part_train(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    res: dict[str, Any] = {}
    for key, mod, name, model, steps, ddp in TRAIN_RUNS:
        cfg = recipe(mod, name, model=model)
        rows = []
        # the last row writes its final checkpoint as per-rank shards: rank 0 gathers nothing
        for procs, threads, strategy, fmt in ((1, 2, "auto", "full"), (2, 1, ddp, "full"), (2, 1, "fsdp", "full"),
                                              (2, 1, "fsdp", "sharded")):
            print(f"[train] {key} {procs}x{threads} {strategy} {fmt}", file=sys.stderr, flush=True)
            rows.append(_train_rate(cfg, args.runs / f"train_{key}_{procs}_{strategy}_{fmt}", procs, threads, steps,
                                    strategy, fmt))
        label = f"{mod}:{name}" + "".join(f", {k} {v}" for k, v in model.items())
        weights = torch.load(args.runs / f"train_{key}_1_auto_full" / "checkpoints" / "last.ckpt", weights_only=True)
        res[key] = {"recipe": label, "batch_per_process": cfg["train"]["batch_size"], "rows": rows,
                    "ddp_strategy": ddp, "parameters": sum(v.numel() for k, v in weights["state_dict"].items()
                                                           if k.startswith("net."))}
    return res


TRAIN_COMPILE_STEPS = {"warmup": 3, "timed": 10, "rounds": 2}


def _timed_training(cfg: dict[str, Any], out: Path, threads: int, compile_: bool) -> dict[str, Any]:
    """``polydiff.train`` of ``cfg`` for warm-up + timed steps (+1, the checkpoint's), as a fresh
    run; the wall seconds of the first step and the median of the timed ones."""
    import torch

    import polydiff

    n = TRAIN_COMPILE_STEPS
    cfg = {**cfg, "train": {**cfg["train"], "max_steps": n["warmup"] + n["timed"] + 1, "threads": threads,
                            "checkpoint_every": 10**6, "progress": False, "logger": "none", "compile": compile_,
                            "val_every": 0}}
    if compile_:  # compile from nothing, as a new process would
        torch._dynamo.reset()
    clock = batch_clock()
    polydiff.train(cfg, out, fresh=True, verbose=False, callbacks=[clock])
    steps = [b - a for a, b in zip(clock.wall, clock.wall[1:])]
    return {"first_s": steps[0], "step_s": statistics.median(steps[n["warmup"]:]), "steps_s": steps}


def part_train_compile(args: argparse.Namespace) -> dict[str, Any]:
    import torch._inductor.config as inductor

    inductor.fx_graph_cache = False  # every compiled run pays its compilation
    inductor.autotune_local_cache = False
    recipes = [(mod, MODELS[mod][0]) for mod in args.modalities.split(",")] + [("md", "muller_brown")]
    res: dict[str, Any] = {"threads": args.threads, **TRAIN_COMPILE_STEPS, "models": {}}
    for mod, name in recipes:
        rows: dict[str, list[dict[str, Any]]] = {"eager": [], "compiled": []}
        entry: dict[str, Any] = {"recipe": f"{mod}:{name}", "rows": rows}
        try:
            for r in range(TRAIN_COMPILE_STEPS["rounds"]):
                for side in (("eager", "compiled") if r % 2 == 0 else ("compiled", "eager")):
                    print(f"[train_compile] {mod}:{name} {side} (round {r})", file=sys.stderr, flush=True)
                    rows[side].append(_timed_training(recipe(mod, name), args.runs / f"compile_{mod}_{side}",
                                                      args.threads, side == "compiled"))
        except Exception as err:  # a network that does not compile is a result to report
            entry["error"] = f"{type(err).__name__}: {str(err)[:300]}"
        if rows["eager"] and rows["compiled"]:
            eager = statistics.median(x["step_s"] for x in rows["eager"])
            comp = statistics.median(x["step_s"] for x in rows["compiled"])
            first = rows["compiled"][0]["first_s"] - rows["eager"][0]["first_s"]  # the first round: cold
            entry.update(eager_step_s=eager, compiled_step_s=comp, speedup=eager / comp, compile_s=first,
                         break_even_steps=first / (eager - comp) if eager > comp else None)
        print(f"  {({k: v for k, v in entry.items() if k != 'rows'})}", file=sys.stderr, flush=True)
        res["models"][mod] = entry
    return res


def part_fsdp(args: argparse.Namespace) -> dict[str, Any]:
    """Every plugin's main recipe under FSDP with sharded checkpoints: 3 steps on 2 CPU processes
    (checkpoints at step 2 and the end), then ``polydiff.load`` of the last one (assembled from
    the shards in one process) and 2 samples. A check that each network, its EMA and its
    techniques run sharded (self-conditioning once hung there), not a speed measurement."""
    res: dict[str, Any] = {"steps": 3, "processes": 2, "models": {}}
    for mod in args.modalities.split(","):
        name = MODELS[mod][0]
        cfg = recipe(mod, name, train={"max_steps": 3, "checkpoint_every": 2, "devices": 2, "strategy": "fsdp",
                                       "checkpoint_format": "sharded", "accelerator": "cpu", "progress": False,
                                       "batch_size": 4, "threads": 1, "logger": "none"})
        out = args.runs / f"fsdp_{mod}"
        path = out.with_suffix(".json")
        path.write_text(json.dumps(cfg))
        print(f"[fsdp] {mod}:{name}", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        got = subprocess.run([sys.executable, "-m", "polydiff.cli", "train", str(path), "--out", str(out), "--fresh"],
                             capture_output=True, text=True, timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1"})
        row: dict[str, Any] = {"recipe": f"{mod}:{name}", "train_s": time.perf_counter() - t0}
        last = out / "checkpoints" / "last.ckpt"
        if got.returncode != 0:
            row["error"] = (got.stderr.strip().splitlines() or ["?"])[-1][:300]
        else:
            row["shards"] = sorted(p.name for p in last.iterdir())
            check = ("import sys, polydiff; g = polydiff.load(sys.argv[1]); "
                     "x = g.generate(2, seed=0, steps=3, progress=False); print(g.step, len(x))")
            t0 = time.perf_counter()
            got = subprocess.run([sys.executable, "-c", check, str(last)], capture_output=True, text=True, timeout=600)
            row["load_sample_s"] = time.perf_counter() - t0
            if got.returncode != 0:
                row["error"] = (got.stderr.strip().splitlines() or ["?"])[-1][:300]
            else:
                row["step"], row["samples"] = (int(v) for v in got.stdout.split()[-2:])
        res["models"][mod] = row
        print(f"  {row}", file=sys.stderr, flush=True)
    return res


def part_shard(args: argparse.Namespace) -> dict[str, Any]:
    ckpt = args.runs / "models" / "toy" / "checkpoints" / "last.ckpt"
    if not ckpt.exists():
        ckpt, _ = train_for(recipe("toy", "gmm"), args.runs / "models" / "toy", args.minutes, args.threads)
    exe = str(Path(sys.executable).parent / "polydiff")
    walls: dict[int, list[float]] = {1: [], 2: []}
    files: dict[int, bytes] = {}
    for _ in range(args.repeats):  # rounds alternate the two, so a slower stretch of the machine hits both
        for procs in (1, 2):
            out = args.runs / f"shard_{procs}"
            cmd = [exe, "sample", str(ckpt), "--num", "200000", "--batch-size", "10000", "--seed", "3", "--out",
                   str(out), "--overwrite", "--quiet", "--steps", "20"]
            cmd += ["--processes", "2"] if procs == 2 else ["--threads", "2"]
            t0 = time.perf_counter()
            got = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
            walls[procs].append(time.perf_counter() - t0)
            if got.returncode != 0:
                raise RuntimeError(got.stderr)
            data = (out / "samples.csv").read_bytes()
            if files.setdefault(procs, data) != data:
                raise RuntimeError(f"polydiff sample with {procs} process(es) wrote other samples on a repeat")
    rows = [{"processes": procs, "threads_each": 2 // procs, "wall_s": statistics.median(w), "wall_all": w,
             "samples_per_s": 200000 / statistics.median(w)} for procs, w in walls.items()]
    return {"num": 200000, "batch": 10000, "steps": 20, "repeats": args.repeats, "rows": rows,
            "identical": files[1] == files[2]}


def _size_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Seconds per sample and peak memory of sampling one size (``--worker`` with ``"size": ...``):
    the checkpoint is loaded in this fresh process, so its peak is sampling's own."""
    import torch

    import polydiff

    torch.set_num_threads(spec["threads"])
    gen = polydiff.load(spec["ckpt"])
    base = rss_mib(MEMORY)
    condition = spec.get("condition")
    gen.generate(spec["num"], seed=0, progress=False, steps=2, condition=condition)
    t0 = time.perf_counter()
    gen.generate(spec["num"], seed=1, progress=False, steps=spec["steps"], condition=condition)
    return {"s_per_sample": (time.perf_counter() - t0) / spec["num"], "peak_rss_mib": rss_mib(MEMORY),
            "rss_loaded_mib": base}


def _size_checkpoint(spec: dict[str, Any]) -> str:
    """A one-step run of the recipe with the size's sections (the weights' values do not matter here)."""
    import polydiff

    cfg = {**recipe(spec["modality"], spec["recipe"]), **spec["changes"]}  # the changed sections replace the recipe's
    cfg["train"] = {**cfg["train"], "max_steps": 1, "checkpoint_every": 1, "progress": False, "logger": "none",
                    "threads": spec["threads"]}
    run = polydiff.train(cfg, spec["out"], fresh=True, verbose=False)
    return str(run.checkpoint)


class SizeAxis(NamedTuple):
    """How one modality's main model is sampled at each problem size."""

    recipe: str
    label: str  # the size's name (a column of the report)
    sizes: tuple[int, ...]
    changes: Callable[[int], dict[str, Any]]  # size -> the recipe sections it replaces (embedded data only)
    num: int  # samples per timed call
    steps: int
    condition: Callable[[int], dict[str, Any]] | None = None  # size -> the sampling condition, where it sets the size
    note: str = ""  # what the report should say about how the size is set or what a sample is


def _nci_text() -> str:
    """RDKit's bundled NCI SMILES file (the text plugin's embedded SMILES), read as plain text."""
    from polydiff_text.data import nci_smiles_path

    return str(nci_smiles_path())


SIZES: dict[str, SizeAxis] = {
    "toy": SizeAxis("gmm", "dimension", (2, 4, 8, 16, 32),
                    lambda n: {"data": {"name": "gmm", "k": 8, "dim": n, "n": 2000, "seed": 0}}, 2000, 20),
    "graphs": SizeAxis("community_small_gdss", "nodes", (16, 32, 64, 128, 256),
                       lambda n: {"data": {"name": "planar", "num_nodes": n, "num_graphs": 40, "max_nodes": n,
                                           "max_feat_num": None}}, 8, 20),
    "timeseries": SizeAxis("tsdiff_etth1", "length", (48, 96, 192, 384, 768),
                           lambda n: {"data": {"name": "sine", "window": n, "channels": 1, "length": 4000}}, 16, 20),
    # the embedded set has at most 9 heavy atoms: the atom count is the sampling condition
    "molecules": SizeAxis("flow", "atoms", (8, 16, 32, 64, 128),
                          lambda n: {"data": {"name": "default", "n": 64, "seed": 0}}, 8, 10,
                          lambda n: {"atoms": n}, "every molecule sampled with that many atoms (condition `atoms`)"),
    "proteins": SizeAxis("frames", "residues", (32, 64, 128, 256),
                         lambda n: {"data": {"name": "synthetic", "n": 16, "min_length": n, "max_length": n,
                                             "seed": 0, "test": 4}}, 4, 10),
    # cells padded to the data's largest: prototypes of at most n sites, sampled with n atoms
    "crystals": SizeAxis("periodic", "atoms", (4, 8, 16, 32, 64),
                         lambda n: {"data": {"name": "default", "representation": "periodic", "max_sites": n,
                                             "seed": 0}}, 16, 10, lambda n: {"atoms": n},
                         "prototypes of at most that many sites, every cell sampled with that many atoms "
                         "(condition `atoms`)"),
    # ancestral steps: the first-hitting sampler makes one network call per token, whatever the steps
    "text": SizeAxis("shakespeare_mdlm", "length", (64, 128, 256, 512, 1024),
                     lambda n: {"data": {"name": "file", "path": _nci_text(), "format": "txt", "whole": True,
                                         "tokenizer": "char", "length": n},
                                "sample": {"num": 8, "sampler": "ancestral", "steps": 16, "seed": 0}}, 8, 16,
                     note="character blocks of RDKit's NCI SMILES file as one stream; ancestral sampler, 16 "
                          "steps (the first-hitting sampler makes one network call per token)"),
    "audio": SizeAxis("sound_teacher", "frames", (32, 64, 128, 256, 512),
                      lambda n: {"data": {"name": "sounds", "n": 64, "conditioning": "caption", "mel": {"frames": n}}},
                      8, 10, note="log-mel frames of 256 samples at 16 kHz (the 1 s events padded or cut)"),
    "policies": SizeAxis("reach_beso", "horizon", (4, 8, 16, 32, 64),
                         lambda n: {"data": {"name": "reach", "episodes": 20, "obs_steps": 2, "horizon": n,
                                             "execute": 4, "test_fraction": 0.1, "seed": 0}}, 8, 3,
                         note="a sample is a whole rollout; 4 actions executed per chunk at every horizon"),
}


def part_size(args: argparse.Namespace) -> dict[str, Any]:
    res: dict[str, Any] = {}
    for mod in (m for m in args.modalities.split(",") if m in SIZES):
        name, label, sizes, changes, num, steps, condition, note = SIZES[mod]
        rows = []
        for n in sizes:
            print(f"[size] {mod} {label}={n}", file=sys.stderr, flush=True)
            spec = {"size": True, "modality": mod, "recipe": name, "changes": changes(n), "num": num, "steps": steps,
                    "condition": condition(n) if condition else None, "threads": args.threads,
                    "out": str(args.runs / f"size_{mod}_{n}")}
            spec["ckpt"] = _size_checkpoint(spec)
            got = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True,
                                 text=True, timeout=3600)
            row = json.loads(got.stdout.strip().splitlines()[-1]) if got.returncode == 0 else \
                {"error": got.stderr.strip().splitlines()[-1] if got.stderr.strip() else f"exit {got.returncode}"}
            rows.append({label: n, **row})
            print(f"  {rows[-1]}", file=sys.stderr, flush=True)
        res[mod] = {"recipe": f"{mod}:{name}", "size": label, "num": num, "steps": steps, "note": note, "rows": rows,
                    "memory": MEMORY}
    return res


# ---------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------

def _f(v: Any, d: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{d}g}" if abs(v) < 10 ** d else f"{v:.0f}"
    return str(v)


def part_report(args: argparse.Namespace) -> None:
    published = ROOT / "bench" / "results" / "scale.json"  # parts not in RUNS keep their published results
    parts = {p: v for p, v in (json.loads(published.read_text()) if published.exists() else {}).items()
             if p in REPORT_PARTS}
    parts.update({p: json.loads((args.runs / f"{p}.json").read_text()) for p in REPORT_PARTS
                  if (args.runs / f"{p}.json").exists()})
    parts = {p: parts[p] for p in REPORT_PARTS if p in parts}
    cmds: dict[str, list[str]] = {}
    for p, r in parts.items():
        cmds.setdefault(r.get("command", "?") + (f" (at {r['commit']})" if r.get("commit") else ""), []).append(p)
    env = environment(command_line("scale.py", ["--parts", "report"]))
    md = header("Scale: compiled, quantized and sharded sampling; training processes; problem size", env)
    md += ["Parts and the commands that ran them: "
           + "; ".join(f"{', '.join(ps)}: `{c}`" for c, ps in cmds.items()), ""]
    verdicts = []
    if "variants" in parts:
        v = parts["variants"]
        valid_mem = v.get("memory") == MEMORY
        md += ["## Sampling variants per modality", "",
               *([] if valid_mem else ["Memory columns: not valid in this run (it read `ru_maxrss`, which a child "
                                       "process inherits from the benchmark that launched it); the script now reads "
                                       "VmHWM.", ""]),
               f"Each model trained {v['minutes']} CPU-minutes from its main recipe; {v['threads']} threads; "
               f"samples/s is the median of the timed calls (at least {v['repeats']}, and more until they last "
               f"{v.get('min_seconds', 0):g} s, at most {MOST_TIMED}; 'calls' counts them where recorded), after "
               "warm-up: one call; for compiled variants, calls until two in a row compile nothing new (at most 5; "
               "rows measured before 2026-12-05, which have "
               "no count in the JSON, ran two); 'first call' is the whole warm-up, compilation included (from an empty "
               "compile cache since commit 417bb9d; before it, torch's on-disk cache could be warm); quantized "
               "variants calibrate on 64 samples in chunks of the number timed; memory: peak resident memory of the "
               "variant's own process and its rise during quantization, compilation and sampling (above the loaded "
               "model, read after the warm-up); metric change against float32 (the same weights, seeds and sampler). "
               "Speed vs float32: against the float32 eager generator in the variant's own process, timed call by "
               "call in alternation with the variant; rows marked † ran before that was done, against the float32 "
               "row of their run, in another process (float32 alone in two fresh processes of one such run differed "
               "by up to 15%: `docs/scale.md`).", "",
               "| modality | variant | main metric | value | change | samples / s | calls | speed vs float32 "
               "| first call (s) | peak RSS MiB | rise MiB | weights MiB | layers int8/kept |", "|" + "---|" * 13]
        for mod, e in v["models"].items():
            key = MODELS[mod][2]
            ref = e["variants"].get("float32", {})
            ref_m, ref_s = ref.get("metrics", {}).get(key), ref.get("samples_per_s")
            for var, r in e["variants"].items():
                if "error" in r:
                    md.append(f"| {mod} | {var} | {key} | {r['error'][:100]} |" + " |" * 9)
                    continue
                m = r["metrics"].get(key)
                change = None if m is None or ref_m is None else m - ref_m
                paired = r.get("float32_paired_samples_per_s")
                own = paired or r.get("float32_samples_per_s", ref_s)  # a merged row keeps its own run's float32
                speed = r["samples_per_s"] / own if own else None
                mark = "" if paired or var == "float32" else " †"
                layers = f"{r.get('quantized_layers', '-')}/{r.get('kept_layers', '-')}"
                mem = (_f(r["peak_rss_mib"], 4), _f(r["peak_rss_mib"] - r["rss_loaded_mib"], 4)) if valid_mem else \
                    ("not valid", "-")
                md.append(f"| {mod} | {var} | {key} | {_f(m)} | {_f(change)} | {_f(r['samples_per_s'])} | "
                          f"{r.get('timed_calls', '-')} | {_f(speed)}x{mark} | {_f(r.get('first_call_s'))} | "
                          f"{mem[0]} | {mem[1]} | {_f(r['weight_mib'])} | {layers} |")
        md.append("")
        cpus = {mod: {r.get("cpu", "not recorded (an earlier run)") for r in e["variants"].values() if "error" not in r}
                for mod, e in v["models"].items()}
        kernels = {r["int8_kernel"] for e in v["models"].values() for r in e["variants"].values()
                   if r.get("int8_kernel")}
        md += ["CPU of each modality's rows (their speeds are ratios within one run, on one machine): "
               + "; ".join(f"{mod}: {', '.join(sorted(c))}" for mod, c in cpus.items())
               + (f". int8 products on CPU ran through (where recorded): {', '.join(sorted(kernels))} "
                  "(`cpu_int8_kernel()`)."
                  if kernels else "."), ""]
    if "train" in parts:
        md += ["## Training throughput: 1 process x 2 threads against 2 processes x 1 thread (DDP, FSDP; gloo)", "",
               "The recipes' EMA is on (FSDP shards it with the network); batch size per process as in the recipe. "
               "Every row is the same command (`polydiff.train` in a fresh process); steps / s is net of start-up: "
               "the extra steps of a full run over a run of a fifth of the steps, divided by the extra seconds. "
               "Peak memory: the largest rank's own peak resident memory (VmHWM), over the training steps alone "
               "(reset when training starts, after the network is built and sharded; read after each step) and over "
               "the whole process (building the network and its EMA whole on every rank, the final checkpoint "
               "gathering the full state on rank 0, except where it is written as per-rank shards: "
               "`train.checkpoint_format: sharded`).", "",
               "| recipe | parameters | processes x threads | strategy | steps | wall s | start-up s | steps / s "
               "| samples / s | peak MiB, steps | peak MiB, process |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for e in (x for x in parts["train"].values() if isinstance(x, dict)):
            for r in e["rows"]:
                if "error" in r:
                    md.append(f"| {e['recipe']} | | error: {r['error'][:100]} |" + " |" * 8)
                    continue
                md.append(f"| {e['recipe']} | {_f(e.get('parameters'))} | {r['processes']} x {r['threads']} | "
                          f"{r['strategy']}{', sharded checkpoint' if r.get('checkpoints') == 'sharded' else ''} | "
                          f"{r['steps']} | {_f(r['wall_s'])} | {_f(r.get('startup_s'))} | "
                          f"{_f(r['steps_per_s'])} | {_f(r['samples_per_s'])} | {_f(r.get('steps_peak_mib'), 4)} | "
                          f"{_f(r.get('peak_rss_mib'), 4)} |")
        md.append("")
    if "train_compile" in parts:
        c = parts["train_compile"]
        md += ["## Training compiled (`train.compile: true`) against eager, per modality", "",
               f"Each main recipe trained from fresh weights, {c['warmup']} warm-up steps then the median of "
               f"{c['timed']} (batch start to batch start: data, loss, backward, optimiser, EMA), {c['threads']} "
               f"thread(s), {c['rounds']} rounds alternating which side runs first; the recipe's batch size. "
               "Compilation: the first compiled step less the first eager step, in the first round, with dynamo "
               "reset and inductor's on-disk caches off (as a fresh process finds them); break-even: the steps "
               "after which compiling has paid for itself.", "",
               "| recipe | eager step (s) | compiled step (s) | speed-up | compilation (s) | break-even (steps) |",
               "|---|---|---|---|---|---|"]
        for e in c["models"].values():
            if "eager_step_s" not in e:
                md.append(f"| {e['recipe']} | error: {e.get('error', 'not measured')[:150]} | | | | |")
                continue
            md.append(f"| {e['recipe']} | {_f(e['eager_step_s'])} | {_f(e['compiled_step_s'])} | "
                      f"{_f(e['speedup'])}x | {_f(e['compile_s'])} | "
                      f"{_f(e['break_even_steps']) if e['break_even_steps'] else 'never'} |")
        md.append("")
    if "fsdp" in parts:
        f = parts["fsdp"]
        md += ["## Every plugin under FSDP with sharded checkpoints", "",
               f"Each main recipe trains {f['steps']} steps on {f['processes']} CPU processes with `strategy: fsdp` "
               "and `checkpoint_format: sharded` (batch 4 per process), then `polydiff.load` opens the last checkpoint "
               "(assembled from the shards in one process) and draws 2 samples in 3 steps. A check that each "
               "network, its EMA and its training techniques run sharded, not a speed measurement.", "",
               "| recipe | train s (start-up included) | checkpoint files | load + sample s | result |",
               "|---|---|---|---|---|"]
        for r in f["models"].values():
            result = f"error: {r['error']}" if "error" in r else f"step {r['step']}, {r['samples']} samples"
            md.append(f"| {r['recipe']} | {_f(r['train_s'])} | {', '.join(r.get('shards', [])) or '-'} | "
                      f"{_f(r.get('load_sample_s'))} | {result} |")
        md.append("")
    if "shard" in parts:
        s = parts["shard"]
        md += ["## Sharded sampling (`polydiff sample --processes 2`)", "",
               f"{s['num']} toy samples, batch {s['batch']}, {s['steps']} steps, on 2 cores"
               + (f"; median of {s['repeats']} rounds, each running both in turn." if s.get("repeats") else "."), "",
               "| processes | threads each | wall s (with start-up) | samples / s | every round (s) |",
               "|---|---|---|---|---|"]
        md += [f"| {r['processes']} | {r['threads_each']} | {_f(r['wall_s'])} | {_f(r['samples_per_s'])} | "
               f"{', '.join(_f(w) for w in r.get('wall_all', [r['wall_s']]))} |" for r in s["rows"]]
        md += ["", f"Files byte-identical to the one-process run: **{s['identical']}**.", ""]
        verdicts.append(f"sharded output identical: {s['identical']}")
    if "size" in parts:
        md += ["## Cost against problem size (main models at the recipe's width, untrained weights)", ""]
        for e in (x for x in parts["size"].values() if isinstance(x, dict)):
            ok = e.get("memory") == MEMORY
            md += [f"{e['recipe']}: {e['num']} samples, {e['steps']} steps, one fresh process per size"
                   + (f"; {e['note']}" if e.get("note") else "")
                   + ("." if ok else " (peak memory not valid in this run: ru_maxrss, inherited from the launcher)."),
                   "", f"| {e['size']} | s / sample | peak RSS MiB |", "|---|---|---|"]
            md += [f"| {r[e['size']]} | {_f(r.get('s_per_sample'))} | "
                   f"{_f(r.get('peak_rss_mib'), 4) if ok else '-'} |"
                   if "error" not in r else f"| {r[e['size']]} | error: {r['error'][:80]} | |" for r in e["rows"]]
            md.append("")
    if verdicts:
        md += ["Verdicts: " + "; ".join(verdicts) + "."]
    publish("scale", {"environment": env, **parts}, "\n".join(md) + "\n")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=Path, default=Path("/tmp/scalebench"))
    p.add_argument("--parts", default="variants,train,fsdp,shard,size,report")
    p.add_argument("--modalities", default=",".join(MODELS))
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--minutes", type=float, default=3.0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--min-seconds", type=float, default=3.0,
                   help="variants: timed calls go on past --repeats until they last this long (at most 50 calls)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--merge", action="store_true",
                   help="variants, size: update the modalities (and variants) run here in RUNS/<part>.json, "
                        "keep the rest")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--train-worker", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.train_worker:
        _train_worker(*args.train_worker)
        return
    if args.worker:
        spec = json.loads(args.worker)
        print(json.dumps(_size_worker(spec) if spec.get("size") else worker(spec)))
        return
    args.runs.mkdir(parents=True, exist_ok=True)
    for part in args.parts.split(","):
        if part == "report":
            part_report(args)
            continue
        res = {"variants": part_variants, "train": part_train, "train_compile": part_train_compile,
               "fsdp": part_fsdp, "shard": part_shard, "size": part_size}[part](args)
        res["command"] = command_line("scale.py", argv)
        env = environment(res["command"])
        res["commit"] = f"{env['commit'][:7]}{' + uncommitted changes' if env['dirty'] else ''}, {env['date']}"
        path = args.runs / f"{part}.json"
        if part == "variants" and args.merge and path.exists():
            res = merge_variants(json.loads(path.read_text()), res)
        elif part == "size" and args.merge and path.exists():  # rows are per modality: replace those run here
            old = json.loads(path.read_text())
            res = {**old, **res, "command": f"{old.get('command', '?')} + {res['command']}"}
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(res, indent=2, default=str) + "\n")
        tmp.replace(path)


def merge_variants(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """``old`` with the variants ``new`` ran replacing their namesakes (its settings must match)."""
    for key in ("threads", "repeats", "memory"):
        if old.get(key) != new.get(key):
            raise SystemExit(f"--merge: {key} is {new.get(key)!r} here but {old.get(key)!r} in the saved variants")
    for mod, e in new["models"].items():
        if "float32" not in e["variants"]:
            raise SystemExit("--merge: rerun float32 with the other variants (speeds are ratios within one run)")
        kept = old["models"].get(mod, {}).get("variants", {})
        ref = kept.get("float32", {}).get("samples_per_s")
        kept = {k: {"float32_samples_per_s": ref, **v} for k, v in kept.items() if "error" not in v}
        both = {**kept, **e["variants"]}
        old["models"][mod] = {**e, "variants": {k: both[k] for k in sorted(both, key=lambda k: (
            list(VARIANTS).index(k) if k in VARIANTS else len(VARIANTS)))}}
    old["min_seconds"] = new.get("min_seconds", old.get("min_seconds"))  # rows that lack it ran calls longer than it
    old["command"] = f"{old.get('command', '?')} + {new['command']}"
    return old


if __name__ == "__main__":
    main()
