"""Graph generation benchmark: GDSS and PARD on community-small / ego-small / QM9, timings,
parameter counts and memory scaling, next to the published numbers.

    python bench/graphs.py                                # every part (several CPU hours; see BUDGETS)
    python bench/graphs.py --parts gdss_cs,gdss_qm9       # some parts; results merge into the JSON
    python bench/graphs.py --quick --parts gdss_cs        # a smoke run (minutes)
    python bench/gdss_reference.py --setup                # once: GDSS's own code in /tmp (part speed)
    python bench/graphs.py --parts speed                  # ours against GDSS's code, interleaved (minutes)
    python bench/pard_reference.py --setup                # once: PARD's own code in /tmp (part pard_speed)
    python bench/graphs.py --parts pard_speed             # ours against PARD's code, interleaved (minutes)

Every part writes its section of bench/results/graphs.json (merged with the sections already
there, each with its exact command, budget and environment) and re-renders bench/results/graphs.md.
Training runs through ``polydiff.train`` with the repository's recipes (configs/graphs/) and a
wall-clock budget: a Lightning callback stops training after ``minutes`` (the step count reached
is reported). The GDSS recipes carry GDSS's own optimisation (Adam, learning rate decayed by 0.999
per epoch: ``train.optimizer`` / ``train.lr_decay``) and sampling settings (raw weights, Euler or
reverse-diffusion predictor, noise removal). Needs shared/ (GDSS's graphs, QM9).

The part ``speed`` times GDSS's training step and PC sampling (20 graphs) with polydiff's
community-small recipe and with GDSS's own code (bench/gdss_reference.py, run from a scratch
checkout and venv outside the project), in lockstep: rounds of one measurement each, alternating
which goes first, 2 threads. Without the reference's venv the report says so. The part
``pard_speed`` does the same for PARD (community-small recipe; bench/pard_reference.py), 1 thread.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "configs" / "graphs"

PAPER = {
    "gdss_community_small": {"degree": 0.045, "cluster": 0.086, "orbit": 0.007, "source": "GDSS paper, Table 1",
                             "nfe": 2000, "sampler": "Euler + Langevin, raw weights, noise removal (GDSS config)"},
    "gdss_ego_small": {"degree": 0.021, "cluster": 0.024, "orbit": 0.007, "source": "GDSS paper, Table 1",
                       "nfe": 1000,
                       "sampler": "Euler, no corrector, raw weights, noise removal (GDSS config/ego_small.yaml)"},
    "gdss_qm9": {"validity": 0.9572, "source": "GDSS paper, Table 2 (validity w/o correction, 10,000 samples)"},
    "pard_qm9": {"validity": 0.971, "uniqueness": 0.965, "source": "PARD README (max_hops 1)"},
}

BUDGETS: dict[str, dict[str, Any]] = {
    "full": {"gdss_cs": {"minutes": 30, "seeds": 3, "num": 20, "steps": 1000},
             "gdss_ego": {"minutes": 15, "seeds": 3, "num": 40, "steps": 1000},
             "gdss_qm9": {"minutes": 25, "num": 1000, "steps": 1000},
             "pard_cs": {"minutes": 25, "seeds": 3, "num": 20, "steps": 40, "batch": 32},
             "pard_qm9": {"minutes": 25, "num": 1000, "steps": 50, "batch": 128},
             "scaling": {"sizes": [20, 50, 100, 200, 400, 800, 1600, 3200, 4800], "budget_gib": 20.0,
                         "timeout": 900, "bisect": 1},
             "speed": {"rounds": 3, "threads": 2, "warmup": 2, "steps": 10, "sample_steps": 50, "num": 20,
                       "sample_repeats": 3},
             "pard_speed": {"rounds": 3, "threads": 1, "warmup": 2, "steps": 10, "batch": 80, "num": 20,
                            "sample_steps": 40, "sample_repeats": 2}},
    "quick": {"gdss_cs": {"minutes": 1, "seeds": 1, "num": 8, "steps": 50},
              "gdss_ego": {"minutes": 1, "seeds": 1, "num": 8, "steps": 50},
              "gdss_qm9": {"minutes": 1, "num": 64, "steps": 50},
              "pard_cs": {"minutes": 1, "seeds": 1, "num": 8, "steps": 5, "batch": 16},
              "pard_qm9": {"minutes": 1, "num": 64, "steps": 5, "batch": 64},
              "scaling": {"sizes": [20, 50], "budget_gib": 4.0, "timeout": 300, "bisect": 0},
              "speed": {"rounds": 2, "threads": 2, "warmup": 1, "steps": 5, "sample_steps": 5, "num": 20,
                        "sample_repeats": 1},
              "pard_speed": {"rounds": 2, "threads": 1, "warmup": 1, "steps": 2, "batch": 16, "num": 4,
                             "sample_steps": 4, "sample_repeats": 1}},
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---------------------------------------------------------------------------------------------
# training with a wall-clock budget
# ---------------------------------------------------------------------------------------------

def _callbacks(minutes: float) -> list[Any]:
    from lightning.pytorch.callbacks import Callback

    class WallClock(Callback):
        """Stop training after ``minutes`` of wall time; record the time of every step."""

        def __init__(self) -> None:
            self.start = time.perf_counter()
            self.stamps: list[float] = []

        def on_train_batch_end(self, trainer: Any, module: Any, outputs: Any, batch: Any, idx: int) -> None:
            self.stamps.append(time.perf_counter())
            if self.stamps[-1] - self.start > 60 * minutes:
                trainer.should_stop = True

    return [WallClock()]


REUSE: dict[str, Any] = {}  # part -> training facts of an earlier run whose checkpoint is kept (--reuse)


def train_recipe(recipe: Path, out: Path, overrides: list[str], minutes: float) -> tuple[Any, dict[str, Any]]:
    """Train a recipe for at most ``minutes``; returns the generator and training facts (or
    reload the checkpoint of an earlier run of the same part with ``--reuse``)."""
    import polydiff
    from polydiff.config import load_config

    prior = REUSE.get(out.name)
    if prior is not None and (out / "checkpoints" / "last.ckpt").is_file():
        log(f"  reusing {out / 'checkpoints' / 'last.ckpt'} (trained {prior['steps']} steps)")
        return polydiff.load(out / "checkpoints" / "last.ckpt"), {**prior, "reused": True}

    cfg = load_config(recipe, overrides)
    data = polydiff.load_modality(cfg.modality).dataset(cfg.data.name, **cfg.data.options)
    n_train = len(data.train)
    steps_per_epoch = max(1, -(-n_train // cfg.train.batch_size))
    cbs = _callbacks(minutes)
    t0 = time.perf_counter()
    run = polydiff.train(cfg, out, fresh=True, callbacks=cbs, verbose=False)
    wall = time.perf_counter() - t0
    stamps = cbs[0].stamps
    steps = [b - a for a, b in itertools.pairwise(stamps)]
    gen = polydiff.load(run.checkpoint)
    facts = {"recipe": str(recipe.relative_to(ROOT)), "overrides": overrides, "budget_minutes": minutes,
             "steps": run.step, "epochs": run.step / steps_per_epoch, "train_graphs": n_train,
             "batch_size": cfg.train.batch_size, "lr_decay_per_epoch": cfg.train.lr_decay,
             "optimizer": cfg.train.optimizer, "wall_seconds": wall,
             "step_seconds_median": statistics.median(steps) if steps else None,
             "final_loss": run.metrics.get("train/loss"), "parameters": parameter_counts(gen.net)}
    log(f"  trained {run.step} steps ({facts['epochs']:.0f} epochs) in {wall / 60:.1f} min, "
        f"median step {facts['step_seconds_median'] or float('nan'):.3f} s, loss {facts['final_loss']}")
    return gen, facts


def parameter_counts(net: torch.nn.Module) -> dict[str, int]:
    out = {"total": sum(p.numel() for p in net.parameters())}
    for name, child in net.named_children():
        n = sum(p.numel() for p in child.parameters())
        if n:
            out[name] = n
    return out


def timed_generate(gen: Any, n: int, **options: Any) -> tuple[list[Any], float]:
    t0 = time.perf_counter()
    objs = gen.generate(n, **options)
    return objs, time.perf_counter() - t0


def _mean_std(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "std": statistics.pstdev(values) if len(values) > 1 else 0.0,
            "values": values}


# ---------------------------------------------------------------------------------------------
# GDSS on generic graphs
# ---------------------------------------------------------------------------------------------

def gdss_generic(part: str, recipe: str, budget: dict[str, Any], work: Path, samplers: dict[str, dict[str, Any]],
                 ) -> dict[str, Any]:
    import polydiff

    gen, facts = train_recipe(RECIPES / recipe, work / part, ["train.progress=false", "train.logger=none"],
                              budget["minutes"])
    gen.info["drop_isolated"] = True  # GDSS's protocol: adjs_to_graphs removes isolated nodes
    # the recipes sample the raw weights as GDSS does (use_ema: False); the first sampler on the EMA as well
    ema = polydiff.load(work / part / "checkpoints" / "last.ckpt", ema=True)
    ema.info["drop_isolated"] = True
    first = next(iter(samplers))
    samplers = {**samplers, f"{first} (EMA weights)": {**samplers[first], "ema": True}}
    ref = gen.reference()
    train = gen.modality.dataset(gen.config.data.name, **gen.config.data.options).train.graphs
    res: dict[str, Any] = {"training": facts, "reference_graphs": len(ref), "samplers": {}}
    # the floor: training graphs against the test graphs with the same metrics
    floor = gen.evaluate(list(train)[: len(ref)])
    res["train_vs_test"] = {k: floor[k] for k in ("degree", "cluster", "orbit", "spectral")}
    for name, opts in samplers.items():
        rows: dict[str, list[float]] = {}
        seconds = []
        model = ema if opts.get("ema") else gen
        opts = {k: v for k, v in opts.items() if k != "ema"}
        for seed in range(budget["seeds"]):
            graphs, sec = timed_generate(model, budget["num"], seed=seed, steps=budget["steps"], **opts)
            seconds.append(sec / budget["num"])
            m = gen.evaluate(graphs)
            for k in ("degree", "cluster", "orbit", "spectral", "unique", "novel", "nodes_mean", "edges_mean"):
                rows.setdefault(k, []).append(m[k])
            log(f"  {part} {name} seed {seed}: degree {m['degree']:.4f} cluster {m['cluster']:.4f} "
                f"orbit {m['orbit']:.4f} ({sec:.0f} s)")
        settings = model.settings(**opts)
        res["samplers"][name] = {"options": {"sampler": settings.sampler, **settings.options},
                                 "weights": "EMA" if model is ema else "raw", "steps": budget["steps"],
                                 "num": budget["num"], "seconds_per_graph": statistics.fmean(seconds),
                                 "nfe_per_graph": budget["steps"] * _nfe(opts),
                                 **{k: _mean_std(v) for k, v in rows.items()}}
    return res


def _nfe(opts: dict[str, Any]) -> int:
    from polydiff.samplers import get_sampler

    name = opts.get("sampler", "pc")
    if name == "pc":
        return 1 + int(opts.get("n_corrector", 1))
    return max(get_sampler(name).nfe_per_step, 1)


def part_gdss_cs(budget: dict[str, Any], work: Path) -> dict[str, Any]:
    return gdss_generic("gdss_cs", "community_small_gdss.yaml", budget, work,
                        {"pc": {"sampler": "pc"},  # the recipe's: GDSS's Euler predictor + Langevin corrector
                         "pc, reverse-diffusion predictor": {"sampler": "pc", "predictor": "reverse"},
                         "s4": {"sampler": "s4", "snr": 0.05, "scale_eps": 0.7}})


def part_gdss_ego(budget: dict[str, Any], work: Path) -> dict[str, Any]:
    return gdss_generic("gdss_ego", "ego_small_gdss.yaml", budget, work,
                        {"euler_maruyama": {"sampler": "euler_maruyama"}})


# ---------------------------------------------------------------------------------------------
# GDSS on QM9
# ---------------------------------------------------------------------------------------------

MOL_KEYS = ("validity", "validity_corrected", "uniqueness", "uniqueness_corrected", "novelty", "novelty_corrected",
            "nspdk", "fcd", "atom_tv", "bond_tv", "atoms_mean")


def part_gdss_qm9(budget: dict[str, Any], work: Path) -> dict[str, Any]:
    gen, facts = train_recipe(RECIPES / "qm9_gdss.yaml", work / "gdss_qm9",
                              ["train.progress=false", "train.logger=none"], budget["minutes"])
    res: dict[str, Any] = {"training": facts, "samplers": {}}
    ref = gen.reference()
    for name, opts in {"pc": {"sampler": "pc", "snr": 0.2, "scale_eps": 0.7, "n_corrector": 1},
                       "s4": {"sampler": "s4", "snr": 0.2, "scale_eps": 0.7}}.items():
        mols, sec = timed_generate(gen, budget["num"], seed=0, steps=budget["steps"], **opts)
        m = gen.modality.evaluate(mols, ref, gen.info, fcd=_fcd_ok())
        res["samplers"][name] = {"options": opts, "steps": budget["steps"], "num": budget["num"],
                                 "seconds_per_graph": sec / budget["num"],
                                 "nfe_per_graph": budget["steps"] * _nfe(opts),
                                 **{k: m[k] for k in MOL_KEYS if k in m}}
        log(f"  gdss_qm9 {name}: validity w/o corr {m['validity']:.3f}, corrected {m['validity_corrected']:.3f}, "
            f"unique {m['uniqueness']:.3f}, nspdk {m['nspdk']:.4f} ({sec:.0f} s)")
    return res


def _fcd_ok() -> bool:
    from polydiff_graphs.metrics import fcd_available

    return fcd_available()[0]


# ---------------------------------------------------------------------------------------------
# PARD
# ---------------------------------------------------------------------------------------------

PARD_CPU = ["train.progress=false", "train.logger=none"]


def _pard_generate(gen: Any, n: int, steps: int, seed: int) -> tuple[list[Any], float, dict[str, float]]:
    """``n`` graphs block by block; returns the graphs, the seconds and NFE / block statistics."""
    from polydiff_graphs.models.pard import generate_states

    t0 = time.perf_counter()
    graphs, nfe, blocks = [], [], []
    bs = gen.config.sample.batch_size or n
    seeds = seed * 1_000_003 + torch.arange(n)
    for lo in range(0, n, bs):
        st = generate_states(gen.net, len(seeds[lo:lo + bs]), steps=steps, seed=seeds[lo:lo + bs])
        graphs += gen.modality.to_native(st, gen.info)
        nfe += st["nfe"].tolist()
        blocks += st["blocks"].tolist()
    return graphs, time.perf_counter() - t0, {"nfe_per_graph": statistics.fmean(nfe),
                                             "blocks_per_graph": statistics.fmean(blocks)}


def part_pard_cs(budget: dict[str, Any], work: Path) -> dict[str, Any]:
    gen, facts = train_recipe(RECIPES / "community_small_pard.yaml", work / "pard_cs",
                              [*PARD_CPU, f"train.batch_size={budget.get('batch', 32)}"], budget["minutes"])
    gen.info["drop_isolated"] = True  # evaluated like GDSS
    res: dict[str, Any] = {"training": facts, "reference_graphs": len(gen.reference()),
                           "order": gen.info["order"], "samplers": {}}
    rows: dict[str, list[float]] = {}
    seconds, stats = [], []
    for seed in range(budget["seeds"]):
        graphs, sec, st = _pard_generate(gen, budget["num"], budget["steps"], seed)
        seconds.append(sec / budget["num"])
        stats.append(st)
        m = gen.evaluate(graphs)
        for k in ("degree", "cluster", "orbit", "spectral", "unique", "novel", "nodes_mean", "edges_mean"):
            rows.setdefault(k, []).append(m[k])
        log(f"  pard_cs seed {seed}: degree {m['degree']:.4f} cluster {m['cluster']:.4f} orbit {m['orbit']:.4f} "
            f"({sec:.0f} s, {st['blocks_per_graph']:.1f} blocks, {st['nfe_per_graph']:.0f} NFE per graph)")
    res["samplers"]["ancestral"] = {"steps": budget["steps"], "num": budget["num"],
                                    "seconds_per_graph": statistics.fmean(seconds),
                                    "nfe_per_graph": statistics.fmean(s["nfe_per_graph"] for s in stats),
                                    "blocks_per_graph": statistics.fmean(s["blocks_per_graph"] for s in stats),
                                    **{k: _mean_std(v) for k, v in rows.items()}}
    return res


def part_pard_qm9(budget: dict[str, Any], work: Path) -> dict[str, Any]:
    gen, facts = train_recipe(RECIPES / "qm9_pard.yaml", work / "pard_qm9",
                              [*PARD_CPU, f"train.batch_size={budget.get('batch', 128)}"], budget["minutes"])
    res: dict[str, Any] = {"training": facts, "order": gen.info["order"], "samplers": {}}
    mols, sec, st = _pard_generate(gen, budget["num"], budget["steps"], 0)
    m = gen.modality.evaluate(mols, gen.reference(), gen.info, fcd=_fcd_ok())
    res["samplers"]["ancestral"] = {"steps": budget["steps"], "num": budget["num"],
                                    "seconds_per_graph": sec / budget["num"], **st,
                                    **{k: m[k] for k in MOL_KEYS if k in m}}
    log(f"  pard_qm9: validity w/o corr {m['validity']:.3f}, corrected {m['validity_corrected']:.3f}, "
        f"unique {m['uniqueness']:.3f}, nspdk {m['nspdk']:.4f} ({sec:.0f} s, {st['nfe_per_graph']:.0f} NFE per mol)")
    return res


# ---------------------------------------------------------------------------------------------
# memory and time scaling in the number of nodes
# ---------------------------------------------------------------------------------------------

def probe(model: str, n: int) -> dict[str, Any]:
    """One network evaluation at sampling time on one graph of ``n`` nodes (an untrained
    network with the community-small recipe's sizes): seconds and the peak growth of the
    resident set during the call (a thread polls ``/proc/self/statm`` every millisecond). Run
    in a fresh process per size."""
    import threading

    import polydiff

    torch.set_num_threads(1)
    torch.manual_seed(0)
    m = polydiff.load_modality("graphs")
    info: dict[str, Any] = {"kind": "graph", "max_nodes": n, "max_feat_num": 10, "node_count_hist": [0] * n + [1]}
    if model == "gdss":
        from polydiff.config import load_config

        cfg = load_config(RECIPES / "community_small_gdss.yaml")
        fields = m.fields(info, **cfg.process)
        net = m.network("gdss", info, fields, **cfg.model.options).eval()
        g = torch.Generator().manual_seed(0)
        a = torch.randn(1, n, n, generator=g)
        state = {"x": torch.randn(1, n, 10, generator=g), "adj": (a + a.transpose(1, 2)) * (1 - torch.eye(n)),
                 "mask": torch.ones(1, n)}
    else:
        from polydiff.config import load_config

        cfg = load_config(RECIPES / "community_small_pard.yaml")
        k = 6
        info["order"] = {"max_hops": 1, "max_blocks": k, "max_block_size": n, "max_block_degree": 10,
                         "next_vocab": (n + 1) * 11, "edge_vocab": 2, "node_vocab": 0}
        fields = m.fields(info, **cfg.process)
        net = m.network("pard", info, fields, **cfg.model.options).eval()
        p = n * (n - 1) // 2
        g = torch.Generator().manual_seed(0)
        block = torch.arange(n)[None] * k // n  # k equal blocks, the last one being generated
        state = {"e": torch.randint(0, 2, (1, p), generator=g), "e_ctx": torch.randint(0, 2, (1, p), generator=g),
                 "block": block, "bdeg": torch.ones(1, n, dtype=torch.long), "current": torch.tensor([k - 1])}
    page = os.sysconf("SC_PAGE_SIZE")

    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * page

    peak, running = [0], [True]

    def poll() -> None:
        while running[0]:
            peak[0] = max(peak[0], rss())
            time.sleep(0.001)

    times = []
    with torch.no_grad():
        base = rss()
        watcher = threading.Thread(target=poll, daemon=True)
        watcher.start()
        for _ in range(3 if n <= 400 else 1):  # the first call's memory is the working set; timings: the best
            t0 = time.perf_counter()
            net(state, torch.tensor([0.5]))
            times.append(time.perf_counter() - t0)
        running[0] = False
        watcher.join()
    return {"model": model, "nodes": n, "seconds_per_call": min(times), "peak_mib": max(peak[0] - base, 0) / 2**20,
            "parameters": sum(q.numel() for q in net.parameters())}


def _probe_once(model: str, n: int, budget: dict[str, Any]) -> dict[str, Any]:
    """Run :func:`probe` in a fresh process whose address space is capped at ``budget_gib``
    (``RLIMIT_AS``), so an over-large graph fails with an allocation error instead of pushing
    the machine into swap or the OOM killer."""
    import resource

    cap = int(budget["budget_gib"] * 2**30)

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    cmd = [sys.executable, str(Path(__file__).resolve()), "--probe", f"{model}:{n}"]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=budget.get("timeout", 600),
                              env={**os.environ, "OMP_NUM_THREADS": "1"}, preexec_fn=limit)
    except subprocess.TimeoutExpired:
        return {"model": model, "nodes": n, "error": "timeout"}
    if done.returncode == 0:
        return json.loads(done.stdout.strip().splitlines()[-1])
    tail = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
    return {"model": model, "nodes": n, "error": tail[:200]}


def part_scaling(budget: dict[str, Any], work: Path) -> dict[str, Any]:
    """Time and memory per network call against the node count: the listed sizes until one
    fails within the memory cap, then ``bisect`` halvings between the last size that ran and
    the first that did not (the largest graph each model samples within the cap)."""
    rows, largest = [], {}
    for model in ("gdss", "pard"):
        ok, bad = 0, None
        for n in budget["sizes"]:
            row = _probe_once(model, n, budget)
            rows.append(row)
            log(f"  scaling {model} n={n}: {row}")
            if "error" in row:
                bad = n
                break
            ok = n
        for _ in range(budget.get("bisect", 0) if bad is not None and ok else 0):
            n = (ok + bad) // 2
            if n in (ok, bad):
                break
            row = _probe_once(model, n, budget)
            rows.append(row)
            log(f"  scaling {model} n={n}: {row}")
            ok, bad = (n, bad) if "error" not in row else (ok, n)
        largest[model] = {"nodes": ok, "first_failure": bad}
    return {"rows": rows, "budget_gib": budget["budget_gib"], "largest": largest}


# ---------------------------------------------------------------------------------------------
# speed against GDSS's own code
# ---------------------------------------------------------------------------------------------

# GDSS config/community_small.yaml
GDSS_PC = {"sampler": "pc", "predictor": "euler", "denoise": True, "snr": 0.05, "scale_eps": 0.7, "n_corrector": 1}
SPEED_SETUP = "python bench/gdss_reference.py --setup"


def _our_gdss_speed(budget: dict[str, Any], work: Path) -> dict[str, Any]:
    """polydiff's community-small GDSS recipe at GDSS's size: ``polydiff.train`` for ``warmup +
    steps + 1`` steps, each step timed from one batch start to the next (the last step, which
    writes the checkpoint, is left out), with GDSS's learning-rate decay (the recipe's); then PC sampling of
    ``num`` graphs for ``sample_steps`` steps on the raw weights (GDSS's ``use_ema: False``),
    after an untimed 2-step call, as the reference does (the median of ``sample_repeats`` calls)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from common import batch_clock

    import polydiff
    from polydiff.config import load_config

    threads, warmup = budget["threads"], budget["warmup"]
    total = warmup + budget["steps"] + 1
    cfg = load_config(RECIPES / "community_small_gdss.yaml",
                      ["train.progress=false", "train.logger=none", f"train.max_steps={total}",
                       f"train.threads={threads}"])
    data = polydiff.load_modality(cfg.modality).dataset(cfg.data.name, **cfg.data.options)
    steps_per_epoch = max(1, -(-len(data.train) // cfg.train.batch_size))
    stamps = batch_clock()
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        run = polydiff.train(cfg, work / "gdss_speed", fresh=True, callbacks=[stamps], verbose=False)
        wall = [b - a for a, b in itertools.pairwise(stamps.wall)][warmup:]
        cpu = [b - a for a, b in itertools.pairwise(stamps.cpu)][warmup:]
        gen = polydiff.load(run.checkpoint, ema=False)
        settings = gen.settings(steps=budget["sample_steps"])  # the recipe's sampler: GDSS's, checked here
        if settings.sampler != GDSS_PC["sampler"] or any(settings.options.get(k) != v for k, v in GDSS_PC.items()
                                                          if k != "sampler"):
            raise ValueError(f"community_small_gdss.yaml samples with {settings}, not GDSS's {GDSS_PC}")
        gen.generate(budget["num"], steps=2, seed=0, progress=False)
        sample_s, sample_cpu = [], []
        for seed in range(1, 1 + budget["sample_repeats"]):
            t0, c0 = time.perf_counter(), time.process_time()
            gen.generate(budget["num"], steps=budget["sample_steps"], seed=seed, progress=False)
            sample_s.append((time.perf_counter() - t0) / budget["sample_steps"])
            sample_cpu.append((time.process_time() - c0) / budget["sample_steps"])
    finally:
        torch.set_num_threads(before)
    return {"train_step_s": statistics.median(wall), "train_step_s_min": min(wall), "train_step_s_all": wall,
            "train_step_cpu_s_all": cpu, "batch": cfg.train.batch_size, "steps_per_epoch": steps_per_epoch,
            "final_loss": run.metrics.get("train/loss"), "sample_s_per_step": statistics.median(sample_s),
            "sample_s_per_step_all": sample_s, "sample_cpu_s_per_step_all": sample_cpu,
            "sample_s_per_graph_1000_steps": statistics.median(sample_s) * 1000 / budget["num"],
            "sampler": {"sampler": settings.sampler, "grid": settings.grid, "t_min": settings.t_min,
                        **settings.options},
            "params": parameter_counts(gen.net), "threads": threads}


def part_speed(budget: dict[str, Any], work: Path) -> dict[str, Any]:
    """GDSS's training step and PC sampling per step (``num`` graphs), polydiff against GDSS's
    own code (bench/gdss_reference.py in its scratch venv), in lockstep: ``rounds`` rounds of one
    measurement each, the first of a round alternating between the two."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from common import reference_missing
    from gdss_reference import REF, VENV, find_reference, measure_gdss, venv_python

    out: dict[str, Any] = {"ours": [], "gdss": [], "order": [], "setup": SPEED_SETUP}
    for r in range(budget["rounds"]):
        order = ["ours", "gdss"] if r % 2 == 0 else ["gdss", "ours"]
        for who in order:
            if who == "ours":
                out["ours"].append(_our_gdss_speed(budget, work))
                continue
            ref = measure_gdss(steps=budget["steps"], warmup=budget["warmup"], threads=budget["threads"],
                               sample_steps=budget["sample_steps"], num=budget["num"], seed=r,
                               sample_repeats=budget["sample_repeats"])
            if ref is None:
                out["gdss_missing"] = reference_missing("GDSS", venv_python(), VENV, REF, find_reference())
                continue
            out["gdss"].append(ref)
        out["order"].append(order)
        ours, ref = out["ours"][-1], out["gdss"][-1] if out["gdss"] else {}
        log(f"  speed round {r}: train step ours {ours['train_step_s']:.3f} s, GDSS "
            f"{_fmt(ref.get('train_step_s'), 3)} s; PC step ({budget['num']} graphs) ours "
            f"{ours['sample_s_per_step']:.3f} s, GDSS {_fmt(ref.get('sample_s_per_step'), 3)} s")
        if "gdss_missing" in out:
            log(f"  {out['gdss_missing']}: run {SPEED_SETUP}")
            break
    out["summary"] = _speed_summary(out)
    return out


def _speed_summary(res: dict[str, Any]) -> dict[str, Any]:
    """Medians over the rounds of each side's median training step and sampling time per step;
    ratio = ours / GDSS's (at most 1: ours is at most the reference's)."""
    out: dict[str, Any] = {}
    for key in ("train_step_s", "sample_s_per_step"):
        ours = statistics.median(r[key] for r in res["ours"]) if res["ours"] else None
        ref = statistics.median(r[key] for r in res["gdss"]) if res["gdss"] else None
        ratio = ours / ref if ours is not None and ref else None
        out[key] = {"ours": ours, "gdss": ref, "ratio": ratio, "at_most": None if ratio is None else ratio <= 1.0}
    return out


# ---------------------------------------------------------------------------------------------
# speed against PARD's own code
# ---------------------------------------------------------------------------------------------

PARD_SPEED_SETUP = "python bench/pard_reference.py --setup"
PARD_SPEED_KEYS = ("train_step_s", "sample_s")


def _pard_speed_config(budget: dict[str, Any]) -> Any:
    """The community-small PARD recipe (its network, blocks and learning rate) on the embedded
    ``community_small`` graphs (GraphRNN / GDSS parameters, GDSS's split; no shared/ needed), batch
    ``batch``, ``warmup + steps + 1`` training steps on ``threads`` threads."""
    from polydiff.config import load_config

    total = budget["warmup"] + budget["steps"] + 1
    return load_config(RECIPES / "community_small_pard.yaml",
                       ["data.name=community_small", "train.progress=false", "train.logger=none",
                        f"train.max_steps={total}", f"train.batch_size={budget['batch']}",
                        f"train.threads={budget['threads']}"])


@contextlib.contextmanager
def _forced_blocks(classes: torch.Tensor) -> Iterator[None]:
    """For one generation call of ours: the block-size head's draws (one per block, in order) run
    as usual and then return ``classes`` (graphs x blocks: size * (D + 1) + degree, 0 = stop), the
    blocks of training graphs, instead (bench/pard_reference.py gives PARD the same graphs' blocks)."""
    from polydiff_graphs.models import pard

    original, calls = pard._draw, [0]

    def draw(logits: torch.Tensor, noise: Any) -> torch.Tensor:
        drawn = original(logits, noise)
        k = calls[0]
        calls[0] += 1
        col = classes[: drawn.shape[0], k] if k < classes.shape[1] else torch.zeros_like(drawn)
        return col.to(drawn.device, drawn.dtype)

    pard._draw = draw
    try:
        yield
    finally:
        pard._draw = original


def _our_pard_speed(budget: dict[str, Any], work: Path, classes: torch.Tensor) -> dict[str, Any]:
    """polydiff's community-small PARD recipe (:func:`_pard_speed_config`): ``polydiff.train`` for
    ``warmup + steps + 1`` steps, each timed from one batch start to the next (the last, which
    writes the checkpoint, left out); then ``Generator.generate`` of ``num`` graphs with
    ``sample_steps`` categorical steps per block and the block sizes and degrees ``classes`` of
    the first ``num`` training graphs (:func:`_forced_blocks`), the median of ``sample_repeats``
    calls after an untimed one on 2 graphs, as the reference is timed."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from common import batch_clock

    import polydiff

    threads, warmup, num = budget["threads"], budget["warmup"], budget["num"]
    cfg = _pard_speed_config(budget)
    clock = batch_clock()
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        run = polydiff.train(cfg, work / "pard_speed", fresh=True, callbacks=[clock], verbose=False)
        gen = polydiff.load(run.checkpoint)
        calls = [0]
        gen.net.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
        opts = {"steps": budget["sample_steps"], "progress": False}
        with _forced_blocks(classes):
            gen.generate(min(num, 2), seed=0, batch_size=min(num, 2), **opts)  # untimed
        wall, cpu, sizes = [], [], []
        for seed in range(1, 1 + budget["sample_repeats"]):
            calls[0] = 0
            with _forced_blocks(classes):
                t0, c0 = time.perf_counter(), time.process_time()
                graphs = gen.generate(num, seed=seed, batch_size=num, **opts)
                wall.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
            sizes += [g.number_of_nodes() for g in graphs]
    finally:
        torch.set_num_threads(before)
    steps = [b - a for a, b in itertools.pairwise(clock.wall)][warmup:]
    steps_cpu = [b - a for a, b in itertools.pairwise(clock.cpu)][warmup:]
    d1 = gen.info["order"]["max_block_degree"] + 1
    return {"train_step_s": statistics.median(steps), "train_step_s_min": min(steps), "train_step_s_all": steps,
            "train_step_cpu_s_all": steps_cpu, "batch": cfg.train.batch_size,
            "final_loss": run.metrics.get("train/loss"), "sample_s": statistics.median(wall), "sample_s_all": wall,
            "sample_cpu_s_all": cpu, "num": num, "sample_steps": budget["sample_steps"], "network_calls": calls[0],
            "nodes_per_graph": statistics.fmean(sizes),
            "forced_nodes_per_graph": (classes // d1).sum(1).float().mean().item(),
            "forced_blocks_per_graph": (classes > 0).sum(1).float().mean().item(),
            "params": parameter_counts(gen.net), "model": dict(cfg.model.options), "threads": threads}


def part_pard_speed(budget: dict[str, Any], work: Path) -> dict[str, Any]:
    """PARD's training step and generation of ``num`` graphs, polydiff against PARD's own code
    (bench/pard_reference.py in its scratch venv, at our recipe's sizes and on our training
    graphs), in lockstep: ``rounds`` rounds of one measurement each, the first of a round
    alternating between the two."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from common import ratio_summary, reference_missing
    from pard_reference import REF, VENV, find_reference, measure_pard, venv_python, write_graphs

    import polydiff

    cfg = _pard_speed_config(budget)
    data = polydiff.load_modality(cfg.modality).dataset(cfg.data.name, **cfg.data.options)
    graphs = write_graphs(data.train.graphs, work / "pard_speed_graphs.json")
    classes = data.train.tensors["next"][: budget["num"]]
    model = cfg.model.options
    out: dict[str, Any] = {"ours": [], "pard": [], "order": [], "setup": PARD_SPEED_SETUP,
                           "train_graphs": len(data.train), "data": cfg.data.name}
    for r in range(budget["rounds"]):
        order = ["ours", "pard"] if r % 2 == 0 else ["pard", "ours"]
        for who in order:
            if who == "ours":
                out["ours"].append(_our_pard_speed(budget, work, classes))
                continue
            ref = measure_pard(steps=budget["steps"], warmup=budget["warmup"], threads=budget["threads"],
                               batch=budget["batch"], num=budget["num"], sample_steps=budget["sample_steps"],
                               sample_repeats=budget["sample_repeats"], hidden=model["hidden"],
                               edge_hidden=model["edge_hidden"], layers=model["layers"], heads=model["heads"],
                               max_hops=cfg.data.options["max_hops"], lr=cfg.train.lr, graphs=graphs, seed=r)
            if ref is None:
                out["pard_missing"] = reference_missing("PARD", venv_python(), VENV, REF, find_reference())
                continue
            out["pard"].append(ref)
        out["order"].append(order)
        ours, ref = out["ours"][-1], out["pard"][-1] if out["pard"] else {}
        log(f"  pard_speed round {r}: train step ours {ours['train_step_s']:.3f} s, PARD "
            f"{_fmt(ref.get('train_step_s'), 3)} s; generation of {budget['num']} graphs ours "
            f"{ours['sample_s']:.3f} s, PARD {_fmt(ref.get('sample_s'), 3)} s")
        if "pard_missing" in out:
            log(f"  {out['pard_missing']}: run {PARD_SPEED_SETUP}")
            break
    out["summary"] = {key: ratio_summary((x[key] for x in out["ours"]), (x[key] for x in out["pard"]), "pard")
                      for key in PARD_SPEED_KEYS}
    return out


# ---------------------------------------------------------------------------------------------
# driver and report
# ---------------------------------------------------------------------------------------------

PARTS = {"gdss_cs": part_gdss_cs, "gdss_ego": part_gdss_ego, "gdss_qm9": part_gdss_qm9, "pard_cs": part_pard_cs,
         "pard_qm9": part_pard_qm9, "scaling": part_scaling, "speed": part_speed, "pard_speed": part_pard_speed}


def environment() -> dict[str, Any]:
    """The machine, and the commit the run's code came from: HEAD when the script started (its
    modules were imported then); ``git_at_end`` too when HEAD moved during the run."""
    out = {"python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform(),
           "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(),
           "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
           "date": time.strftime("%Y-%m-%d %H:%M:%S"), "git": GIT_AT_START}
    end = _git()
    if end != GIT_AT_START:
        out["git_at_end"] = end
    return out


def _git() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


GIT_AT_START = _git()


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated parts: {', '.join(PARTS)}")
    p.add_argument("--quick", action="store_true", help="smoke budgets (minutes)")
    p.add_argument("--minutes", type=float, help="override every part's training budget (minutes)")
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "bench_graphs", help="run folders")
    p.add_argument("--json", type=Path, default=RESULTS / "graphs.json")
    p.add_argument("--md", type=Path, default=RESULTS / "graphs.md")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: on a shared CPU more are slower)")
    p.add_argument("--reuse", action="store_true", help="reuse a part's checkpoint from an earlier run (re-evaluate)")
    p.add_argument("--probe", help=argparse.SUPPRESS)  # MODEL:N, one scaling measurement (internal)
    args = p.parse_args(argv)
    if args.probe:
        model, n = args.probe.split(":")
        print(json.dumps(probe(model, int(n))))
        return 0
    torch.set_num_threads(args.threads)
    budgets = BUDGETS["quick" if args.quick else "full"]
    command = "python bench/graphs.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    results = json.loads(args.json.read_text()) if args.json.is_file() else {"parts": {}}
    if args.reuse:
        REUSE.update({k: v["training"] for k, v in results["parts"].items() if "training" in v})
    for part in [s for s in args.parts.split(",") if s]:
        if part not in PARTS:
            raise SystemExit(f"unknown part {part!r}; allowed: {', '.join(PARTS)}")
        budget = dict(budgets[part])
        if args.minutes is not None and "minutes" in budget:
            budget["minutes"] = args.minutes
        log(f"{part}: {budget}")
        t0 = time.perf_counter()
        res = PARTS[part](budget, args.work)
        res.update({"command": command, "budget": budget, "quick": args.quick, "seconds": time.perf_counter() - t0,
                    "environment": environment()})
        # re-read before writing: parts run by other processes at the same time are kept
        results = json.loads(args.json.read_text()) if args.json.is_file() else {"parts": {}}
        results["parts"][part] = res
        results["paper"] = PAPER
        args.json.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(args.json, json.dumps(results, indent=1, default=str))
        _atomic_write(args.md, render(results))
        log(f"{part}: done in {res['seconds'] / 60:.1f} min -> {args.json}")
    return 0


def _fmt(v: Any, digits: int = 4) -> str:
    if isinstance(v, dict) and "mean" in v:
        return f"{v['mean']:.{digits}f} ± {v['std']:.{digits}f}" if v.get("std") else f"{v['mean']:.{digits}f}"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return "–" if v is None else str(v)


def _training_line(t: dict[str, Any]) -> str:
    p = t["parameters"]
    parts = ", ".join(f"{k} {v:,}" for k, v in p.items() if k != "total")
    return (f"`{t['recipe']}` for {t['budget_minutes']:g} min of wall time: {t['steps']} steps "
            f"({t['epochs']:.0f} epochs of {t['train_graphs']} graphs, batch {t['batch_size']}), median step "
            f"{_fmt(t['step_seconds_median'], 3)} s, final loss {_fmt(t['final_loss'], 3)}; parameters "
            f"{p['total']:,} ({parts})" + (f"; {t['optimizer']}, learning rate x{t['lr_decay_per_epoch']:g} per epoch"
                                           if "optimizer" in t else ""))


def _graph_cells(s: dict[str, Any]) -> str:
    """The metric cells of a generic-graph table row."""
    return (f"{_fmt(s['degree'])} | {_fmt(s['cluster'])} | {_fmt(s['orbit'])} | {_fmt(s['spectral'])} | "
            f"{_fmt(s['unique'], 2)} | {_fmt(s['novel'], 2)} |")


def _mol_cells(s: dict[str, Any]) -> str:
    """The metric cells of a molecule table row."""
    return (f"{_fmt(s['validity'], 3)} | {_fmt(s['validity_corrected'], 3)} | {_fmt(s['uniqueness'], 3)} | "
            f"{_fmt(s.get('novelty'), 3)} | {_fmt(s.get('nspdk'))} | {_fmt(s.get('fcd'), 2)} |")


def _pard_vs_gdss(pard: dict[str, Any], gdss: dict[str, Any] | None, cells: Any, digits: int) -> list[str]:
    """Table rows: PARD, then every GDSS sampler of the same dataset (when that part ran), each
    GDSS row naming its own training (its part's budget, not PARD's)."""
    rows = [f"| PARD | {pard['steps']} per block | {pard['nfe_per_graph']:.0f} ({pard['blocks_per_graph']:.1f} "
            f"blocks) | {_fmt(pard['seconds_per_graph'], digits)} | " + cells(pard)]
    trained = (gdss or {}).get("training", {})
    when = (f"; trained {trained['steps']} steps in {trained['wall_seconds'] / 60:.0f} min"
            if "steps" in trained and "wall_seconds" in trained else "")
    for name, g in (gdss or {}).get("samplers", {}).items():
        rows.append(f"| GDSS ({name}{when}) | {g['steps']} | {g['nfe_per_graph']} | "
                    f"{_fmt(g['seconds_per_graph'], digits)} | " + cells(g))
    return rows


def _speed_section(r: dict[str, Any]) -> list[str]:
    """The report's section for the part ``speed``."""
    b, env = r["budget"], r.get("environment", {})
    lines = ["## Speed against GDSS's own code", "",
             f"Command: `{r['command']}` (once before it: `{r.get('setup', SPEED_SETUP)}`, which exports GDSS "
             "into /tmp/gdss_ref and makes the venv /tmp/gdss_venv, or $GDSS_REF / $GDSS_VENV, with the project's "
             "torch 2.13.0; see `bench/gdss_reference.py`)", ""]
    if not r.get("gdss"):
        return [*lines, f"Not measured: {r.get('gdss_missing', 'no GDSS measurement')}. Run "
                f"`{r.get('setup', SPEED_SETUP)}`, then the command above.", ""]
    g0, o0 = r["gdss"][0], r["ours"][0]
    lines += [f"Community-small at GDSS's own size (`config/community_small.yaml` of GDSS commit "
              f"{_fmt(g0.get('commit'))[:12]}; ours `configs/graphs/community_small_gdss.yaml`): one batch of "
              f"{g0['batch']} training graphs (GDSS's batch 128 holds all 80), {b['threads']} threads, in lockstep: "
              f"{len(r['ours'])} round(s), each one measurement of each side, the first of a round alternating. "
              f"Training: {b['warmup']} untimed steps, then the median of {b['steps']} (ours: `polydiff.train`, batch "
              "start to batch start; GDSS: its trainer's batch loop and scheduler steps, its per-epoch test pass "
              f"left out). Sampling: PC (Langevin corrector snr 0.05, scale_eps 0.7, then reverse diffusion) for "
              f"{b['num']} graphs, {b['sample_steps']} steps, the median of {b['sample_repeats']} timed calls after an "
              "untimed 2-step call (GDSS: its "
              "`get_pc_sampler` with the SDEs' scales set to the step count; ours: `Generator.generate`, which "
              "also converts to networkx graphs), raw weights. Load average at the end "
              f"{', '.join(f'{x:.2f}' for x in env.get('load_average') or [])} on {env.get('cpu_count')} cores. "
              "The CPU columns are the process CPU time: about threads x wall on an idle machine; on a shared one "
              "wall times far above CPU / threads were slowed by other processes (and threads spinning while the "
              "other waits for a core inflate the CPU time as well).", "",
              "| | polydiff | GDSS (own code) | ours / GDSS | at most the reference's |", "|---|---|---|---|---|",
              f"| parameters | {o0['params']['total']:,} | {g0['params']['total']:,} | | |"]
    s = r["summary"]
    for key, name in (("train_step_s", "training step (s, median)"),
                      ("sample_s_per_step", f"PC sampling, s per step for {b['num']} graphs")):
        v = s[key]
        lines.append(f"| {name} | {_fmt(v['ours'], 3)} | {_fmt(v['gdss'], 3)} | {_fmt(v['ratio'], 2)} | "
                     f"{'yes' if v['at_most'] else 'no'} |")
    per_graph = [statistics.median(x["sample_s_per_graph_1000_steps"] for x in r[k]) for k in ("ours", "gdss")]
    lines += [f"| PC sampling, s per graph at 1000 steps (derived) | {per_graph[0]:.2f} | {per_graph[1]:.2f} | "
              f"{per_graph[0] / per_graph[1]:.2f} | {'yes' if per_graph[0] <= per_graph[1] else 'no'} |", "",
              "| round | first | ours: train step s (CPU s) | GDSS: train step s (CPU s) | ours: PC step s (CPU s) | "
              "GDSS: PC step s (CPU s) |", "|---|---|---|---|---|---|"]
    for i, (o, g) in enumerate(zip(r["ours"], r["gdss"], strict=False)):
        oc, gc = statistics.median(o["train_step_cpu_s_all"]), statistics.median(g["train_step_cpu_s_all"])
        osc, gsc = statistics.median(o["sample_cpu_s_per_step_all"]), statistics.median(g["sample_cpu_s_per_step_all"])
        lines.append(f"| {i} | {r['order'][i][0]} | {o['train_step_s']:.3f} ({oc:.3f}) | {g['train_step_s']:.3f} "
                     f"({gc:.3f}) | {o['sample_s_per_step']:.3f} ({osc:.3f}) | {g['sample_s_per_step']:.3f} "
                     f"({gsc:.3f}) |")
    held = [name for key, name in (("train_step_s", "training step"), ("sample_s_per_step", "PC sampling"))
            if s[key]["at_most"]]
    lines += ["", "Acceptance (GDSS training step and PC sampling per graph at most the reference's, measured in one "
              f"run): {'held for both' if len(held) == 2 else 'held for ' + (', '.join(held) or 'neither')}. "
              f"GDSS ran with {', '.join(f'{k} {v}' for k, v in g0['versions'].items())}; its predictor: "
              f"{g0['predictor']} (its config names Euler, the same network calls per step).", ""]
    return lines


def _pard_speed_section(r: dict[str, Any]) -> list[str]:
    """The report's section for the part ``pard_speed``."""
    b, env = r["budget"], r.get("environment", {})
    setup = r.get("setup", PARD_SPEED_SETUP)
    lines = ["## Speed against PARD's own code", "",
             f"Command: `{r['command']}` (once before it: `{setup}`, which exports PARD into /tmp/pard_ref and makes "
             "the venv /tmp/pard_venv, or $PARD_REF / $PARD_VENV, with the project's torch 2.13.0 and a "
             "`torch_scatter` stand-in; see `bench/pard_reference.py`)", ""]
    if not r.get("pard"):
        return [*lines, f"Not measured: {r.get('pard_missing', 'no PARD measurement')}. Run `{setup}`, then the "
                "command above.", ""]
    p0, o0, s = r["pard"][0], r["ours"][0], r["summary"]
    m, pm, si = o0["model"], p0["model"], [x["stand_in"] for x in r["pard"]]
    lines += [f"Community-small at our recipe's size (`configs/graphs/community_small_pard.yaml`: node width "
              f"{m['hidden']}, pair width {m['edge_hidden']}, {m['layers']} layers, {m['heads']} heads, max_hops "
              f"{pm['max_hops']}, {b['sample_steps']} steps per block; PARD commit {_fmt(p0.get('commit'))[:12]} "
              f"configured so, its other settings those of its `configs/comm20.yaml`, masked BatchNorm, "
              "`combine_training` as our single network), both on the same "
              f"{r['train_graphs']} training graphs (our embedded `{r['data']}` data), {b['threads']} thread(s), in "
              f"lockstep: {len(r['ours'])} round(s), each one measurement of each side, the first of a round "
              f"alternating. Training: batch {b['batch']}, {b['warmup']} untimed steps, then the median of "
              f"{b['steps']} (ours: `polydiff.train`, batch start to batch start, with data loading, gradient "
              "clipping and EMA; PARD: its DataLoader's next batch, `training_step`, backward and AdamW, without "
              f"Lightning's trainer loop; PARD neither clips nor keeps an EMA). Generation: {b['num']} graphs in one "
              f"call, {b['sample_steps']} steps per block, the median of {b['sample_repeats']} timed calls after an "
              "untimed one on 2 graphs (ours: `Generator.generate`, which also converts to networkx graphs; PARD: "
              "`AutoregressiveDiffusion.generate`). The blocks' sizes and degrees are those of the first "
              f"{b['num']} training graphs on both sides (each side's block-size head still runs and draws, its "
              "draw is then replaced), so both generate the same block sequences from briefly trained weights: "
              f"{o0['forced_blocks_per_graph']:.2f} blocks and {o0['forced_nodes_per_graph']:.2f} nodes per graph "
              f"(PARD's own block order: {p0['forced_blocks_per_graph']:.2f} and {p0['forced_nodes_per_graph']:.2f}; "
              f"generated: ours {o0['nodes_per_graph']:.2f} nodes per graph after dropping isolated nodes, PARD "
              f"{p0['nodes_per_graph']:.2f}). Load average at the end "
              f"{', '.join(f'{x:.2f}' for x in env.get('load_average') or [])} on {env.get('cpu_count')} cores. "
              "The CPU columns are the process CPU time: about threads x wall on an idle machine.", "",
              "| | polydiff | PARD (own code) | ours / PARD | at most the reference's |", "|---|---|---|---|---|",
              f"| parameters (trunk: our layers / PARD's `PPGNTransformer`) | {o0['params']['total']:,} "
              f"({o0['params'].get('layers', 0):,}) | {p0['params']['total']:,} ({p0['params']['net']:,}) | | |"]
    for key, name in (("train_step_s", f"training step (s, median, batch {b['batch']})"),
                      ("sample_s", f"generation (s per call of {b['num']} graphs)")):
        v = s[key]
        lines.append(f"| {name} | {_fmt(v['ours'], 3)} | {_fmt(v['pard'], 3)} | {_fmt(v['ratio'], 2)} | "
                     f"{'yes' if v['at_most'] else 'no'} |")
    calls = [o0["network_calls"], p0["network_calls"]]
    lines += [f"| network calls per generation call | {calls[0]} | {calls[1]} | | |", "",
              "| round | first | ours: train step s (CPU s) | PARD: train step s (CPU s) | ours: generation s "
              "(CPU s) | PARD: generation s (CPU s) |", "|---|---|---|---|---|---|"]
    for i, (o, q) in enumerate(zip(r["ours"], r["pard"], strict=False)):
        cells = [f"{x[k]:.3f} ({statistics.median(x[c]):.3f})" for k, c in
                 (("train_step_s", "train_step_cpu_s_all"), ("sample_s", "sample_cpu_s_all")) for x in (o, q)]
        lines.append(f"| {i} | {r['order'][i][0]} | {cells[0]} | {cells[1]} | {cells[2]} | {cells[3]} |")
    held = [name for key, name in (("train_step_s", "training step"), ("sample_s", "generation")) if s[key]["at_most"]]
    lines += ["", f"PARD's `torch_scatter` is a PyTorch stand-in (the compiled wheels cannot be installed here); it "
              f"took {100 * statistics.median(x['train_share'] for x in si):.2f}% of PARD's timed training steps and "
              f"{100 * statistics.median(x['sample_share'] for x in si):.2f}% of its generation calls (median over "
              "the rounds). Steps per block are 40 in both defaults (PARD's `comm20.yaml`, our recipe), so the "
              "sampling comparison is also default against default; PARD's default network for community-small "
              "(width 128, 6 layers, 8 heads, max_hops 3, a second network for the block sizes) is not this size.",
              "", "Acceptance (training step and generation at most the reference's, measured in one run): "
              f"{'held for both' if len(held) == 2 else 'held for ' + (', '.join(held) or 'neither')}. PARD ran "
              f"with {', '.join(f'{k} {v}' for k, v in p0['versions'].items())}.", ""]
    return lines


def _same_predictors(samplers: dict[str, Any]) -> str:
    """A note when the Euler and reverse-diffusion predictor rows hold the same graphs."""
    a, b = samplers.get("pc"), samplers.get("pc, reverse-diffusion predictor")
    if not a or not b or any(a[k]["values"] != b[k]["values"] for k in ("degree", "cluster", "orbit")):
        return ""
    return (" The two predictors gave the same graphs: they agree to first order in the step, and at 1000 steps "
            "their adjacencies differ by far less than the 0.5 threshold that makes the edges.")


def _env_line(r: dict[str, Any]) -> str:
    """The commit and machine a part ran on (the commit at its start, when it finished)."""
    e = r.get("environment") or {}
    if not e:
        return "Environment: not recorded."
    moved = f" (HEAD `{e['git_at_end']}` when it finished)" if e.get("git_at_end") else ""
    return (f"Commit `{e.get('git')}`{moved}, finished {e.get('date')}; python {e.get('python')}, "
            f"torch {e.get('torch')}, {e.get('cpu_count')} CPUs, {e.get('threads')} torch threads, "
            f"{e.get('platform')}.")


def render(results: dict[str, Any]) -> str:
    """The markdown report from the JSON results (every part that has run)."""
    parts = results.get("parts", {})
    lines = ["# Graph generation benchmark: GDSS and PARD", "",
             "Written by `bench/graphs.py` (see its docstring); every number below is measured, on the CPU named in "
             "each section's environment (2 cores shared with other jobs), under the stated training budgets. "
             "The published numbers come from GPU runs with the full budgets (GDSS: 5000 epochs for community-small, "
             "300 epochs of ~120k molecules for QM9), which a CPU cannot reach here; the gap is the budget's, and "
             "closing it needs a GPU.", ""]
    for part, title, paper in (("gdss_cs", "GDSS on community-small", "gdss_community_small"),
                               ("gdss_ego", "GDSS on ego-small", "gdss_ego_small")):
        if part not in parts:
            continue
        r = parts[part]
        pp = PAPER[paper]
        lines += [f"## {title}", "", f"Command: `{r['command']}`", "",
                  _env_line(r), "", "Training: " + _training_line(r["training"]),
                  "", "| sampler | steps | NFE / graph | s / graph | degree | cluster | orbit | spectral | unique "
                  "| novel |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for name, s in r["samplers"].items():
            lines.append(f"| {name} | {s['steps']} | {s['nfe_per_graph']} | {_fmt(s['seconds_per_graph'], 3)} | "
                         + _graph_cells(s))
        tv = r["train_vs_test"]
        lines += [f"| training graphs vs test | – | – | – | {_fmt(tv['degree'])} | {_fmt(tv['cluster'])} | "
                  f"{_fmt(tv['orbit'])} | {_fmt(tv['spectral'])} | – | – |",
                  f"| **{pp['source']}** ({pp['sampler']}) | 1000 | {pp['nfe']} | – | {pp['degree']} | "
                  f"{pp['cluster']} | {pp['orbit']} | – | – | – |",
                  "", f"MMDs of {r['budget']['num']} generated graphs (the test-set size, GDSS's protocol) against "
                  f"the {r['reference_graphs']} test graphs, mean ± std over {r['budget']['seeds']} sampling seeds; "
                  "the row *training graphs vs test* is the same metric between real graphs (the floor at this "
                  "sample size)." + (" Samples come from the raw weights, as GDSS's (`use_ema: False`), except in "
                                     "the row marked EMA." if any(x.get("weights") for x in r["samplers"].values())
                                     else "") + _same_predictors(r["samplers"]), ""]
    if "speed" in parts:
        lines += _speed_section(parts["speed"])
    if "gdss_qm9" in parts:
        r = parts["gdss_qm9"]
        pp = PAPER["gdss_qm9"]
        lines += ["## GDSS on QM9", "", f"Command: `{r['command']}`", "",
                  _env_line(r), "", "Training: " + _training_line(r["training"]),
                  "", "| sampler | steps | NFE / mol | s / mol | validity w/o corr. | validity corr. | unique | "
                  "novel | NSPDK | FCD |", "|---|---|---|---|---|---|---|---|---|---|"]
        for name, s in r["samplers"].items():
            lines.append(f"| {name} | {s['steps']} | {s['nfe_per_graph']} | {_fmt(s['seconds_per_graph'], 4)} | "
                         + _mol_cells(s))
        lines += [f"| **{pp['source']}** | 1000 | 2000 | – | {pp['validity']} | – | – | – | – | – |", "",
                  f"{r['budget']['num']} molecules; validity without correction is over all generated graphs "
                  "(GDSS issue #3); uniqueness and novelty are over valid molecules before correction, the "
                  "`*_corrected` numbers after valency correction.", ""]
    if "pard_cs" in parts:
        r = parts["pard_cs"]
        s_ = r["samplers"]["ancestral"]
        lines += ["## PARD on community-small", "", f"Command: `{r['command']}`", "",
                  _env_line(r), "",
                  "Training: " + _training_line(r["training"]), "",
                  f"Blocks (max_hops {r['order']['max_hops']}): up to {r['order']['max_blocks']} per graph, "
                  f"{r['order']['blocks_mean']:.2f} on average over the training graphs, sizes up to "
                  f"{r['order']['max_block_size']}, degrees up to {r['order']['max_block_degree']}.", "",
                  "| model | steps | NFE / graph | s / graph | degree | cluster | orbit | spectral | unique | novel |",
                  "|---|---|---|---|---|---|---|---|---|---|",
                  *_pard_vs_gdss(s_, parts.get("gdss_cs"), _graph_cells, 3)]
        lines += ["", "Same data, split, test set and metrics as the GDSS section (isolated nodes dropped from "
                  "generated graphs as GDSS does); NFE per graph counts every network call, the block-size "
                  "predictions included.", ""]
    if "pard_qm9" in parts:
        r = parts["pard_qm9"]
        s_ = r["samplers"]["ancestral"]
        pp = PAPER["pard_qm9"]
        lines += ["## PARD on QM9", "", f"Command: `{r['command']}`", "",
                  _env_line(r), "", "Training: " + _training_line(r["training"]),
                  "", "| model | steps | NFE / mol | s / mol | validity w/o corr. | validity corr. | unique | novel | "
                  "NSPDK | FCD |", "|---|---|---|---|---|---|---|---|---|---|",
                  *_pard_vs_gdss(s_, parts.get("gdss_qm9"), _mol_cells, 4)]
        lines += [f"| **{pp['source']}** | 50 per block | – | – | {pp['validity']} | – | {pp['uniqueness']} | – | – "
                  "| – |", ""]
    if "pard_speed" in parts:
        lines += _pard_speed_section(parts["pard_speed"])
    if "scaling" in parts:
        r = parts["scaling"]
        lines += ["## Memory and time against the number of nodes", "", f"Command: `{r['command']}`", "",
                  _env_line(r), "",
                  "One network evaluation at sampling time on one graph (batch 1, one thread, untrained networks "
                  "with the community-small recipes' sizes; PARD in its generation layout, one copy per node, the "
                  "last of 6 equal blocks being generated). Peak memory is the growth of the probe process's "
                  "peak resident set during the call. A GDSS sample costs 2000 such calls (1000 PC steps); a PARD "
                  "sample costs `steps` calls per block on the graph so far plus one block-size call per block. "
                  "PARD's parameter count grows with the node count (its block-size vocabulary and embeddings are "
                  "sized by the largest graph). Timings come from a 2-core machine shared with other jobs (load "
                  "2-3), so single calls vary by up to 2x; the memory column does not depend on the load.",
                  "", "| model | nodes | s / call | peak MiB | s / sample (GDSS: 2000 calls; PARD: 6 blocks x 40 "
                  "steps at this size, an upper bound) |", "|---|---|---|---|---|"]
        for row in sorted(r["rows"], key=lambda q: (q["model"], q["nodes"])):  # bisection rows arrive last
            if "error" in row:
                m = re.search(r"allocate (\d+) bytes", row["error"])
                why = f"out of memory (an allocation of {int(m.group(1)) / 2**30:.1f} GiB refused)" if m else \
                    row["error"]
                lines.append(f"| {row['model']} | {row['nodes']} | {why} | – | – |")
                continue
            calls = 2000 if row["model"] == "gdss" else 6 * 41
            lines.append(f"| {row['model']} | {row['nodes']} | {row['seconds_per_call']:.4f} | {row['peak_mib']:.0f} | "
                         f"{row['seconds_per_call'] * calls:.1f} |")
        big = r.get("largest", {})
        lines += ["", f"Largest graph whose sampling call runs within a {r['budget_gib']:g} GiB address-space cap: "
                  + ", ".join(f"{k} {v['nodes']} nodes " + (f"(first failure {v['first_failure']})"
                                                             if v["first_failure"] else "(the largest size tried)")
                              for k, v in big.items())
                  + ".", ""]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
