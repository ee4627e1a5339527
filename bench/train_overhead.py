"""Per-step overhead of training: polydiff's Lightning loop against a plain PyTorch loop doing the same work.

For each recipe (the toy mixture ``configs/toy/gmm.yaml`` and GDSS on community-small
``configs/graphs/community_small_gdss.yaml``) the script runs, interleaved round by round in one
process (so machine load affects every side alike):

- ``polydiff``: :func:`polydiff.train` itself (logger ``none``, no progress bar, no checkpoint
  inside the run, ``--threads`` torch threads) from a fresh start;
- ``plain loop``: the same work in plain PyTorch: the same network and initial weights, the same
  batches (a ``DataLoader`` over the same :class:`polydiff.training.StepBatches`), the same loss
  (``DiffusionModule._loss``, with the same per-step seeds), AdamW with the recipe's learning
  rate, weight decay, warm-up and per-epoch decay, gradient-norm clipping as Lightning does it
  (``clip_grad_norm_``), the same EMA update and the loss kept every ``log_every`` steps. Its
  final weights (network and EMA) are compared bit for bit with polydiff's: the two sides do the
  same computation;
- ``forward+backward``: the loss and its backward pass alone on pre-collated batches (no
  optimizer, no data loading), a cross-check of the forward / backward time measured in-run.

Timing. Every side records, per step, the time between consecutive step ends (data loading, the
trainer, forward, backward, clipping, optimizer, scheduler, EMA, logging) and, in the same step,
the forward (the ``_loss`` call) and the backward pass (Lightning's ``on_before_backward`` to
``on_after_backward``); the overhead of a step is its time less forward and backward, so noise in
the network's own time cancels. Times are the thread's CPU time (with one torch thread, a run's
work alone, whatever else a shared machine runs) and, beside them, wall time. A run's figure is
the mean over ``--periods`` whole logging periods (``log_every`` steps each) after ``--warmup``
steps, so it carries its share of the periodic logging; the run's last step, which logs the
final values once a run, comes after them. The report gives the median over ``--rounds`` rounds.
``--baseline REV`` adds ``polydiff @REV``: the training code (``core/polydiff/training.py``) of
another commit, loaded beside today's and run in the same rounds: a before / after comparison
free of machine drift. CPU only.

Usage::

    python bench/train_overhead.py                              # both recipes, ~6 min on 2 CPU cores
    python bench/train_overhead.py --baseline c62c086           # plus the training code of commit c62c086
    python bench/train_overhead.py --recipes toy --rounds 3     # quick look
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor, nn
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import command_line, environment, header, publish, recipe

import polydiff.training as training
from polydiff.config import build_data, build_fields, build_network
from polydiff.data import check_info
from polydiff.files import shared_dir
from polydiff.registry import load_modality

ROOT = Path(__file__).resolve().parents[1]
PERIODS = {"toy": 7, "gdss": 1}  # logging periods (log_every steps each) timed per run
WARMUP = {"toy": 50, "gdss": 4}


# ---------------------------------------------------------------------------------------------
# recipes
# ---------------------------------------------------------------------------------------------

def recipe_dict(name: str, steps: int, threads: int) -> dict[str, Any]:
    """The shipped recipe ``name`` (``toy`` or ``gdss``) set up for timing ``steps`` steps."""
    train = {"max_steps": steps, "logger": "none", "progress": False, "checkpoint_every": 10**9, "threads": threads,
             "accelerator": "cpu", "devices": 1, "val_every": 0}
    if name == "toy":
        return recipe("toy", "gmm", train=train)
    cfg = recipe("graphs", "community_small_gdss", train=train)
    if not (shared_dir() / "data" / "graphs_gdss").is_dir():  # the recipe's own fallback (see its comment)
        cfg["data"] = {**cfg["data"], "name": "community_small", "max_feat_num": None}
    return cfg


@dataclass
class Setup:
    """What a plain loop needs of a recipe, built once: the checked recipe, modality, data, info and fields."""

    cfg: Any
    modality: Any
    data: Any
    info: dict[str, Any]
    fields: dict[str, Any]


def setup(cfg: dict[str, Any]) -> Setup:
    """Build the recipe's data, info and fields as :func:`polydiff.train` does."""
    config = training.resolve_config(cfg)
    modality = load_modality(config.modality)
    data = build_data(config, modality)
    info = check_info(data.info, "the dataset's info")
    return Setup(config, modality, data, info, dict(build_fields(config, modality, info)))


# ---------------------------------------------------------------------------------------------
# clocks
# ---------------------------------------------------------------------------------------------

def now() -> tuple[float, float]:
    """Wall time and this thread's CPU time (seconds). The CPU time of a one-thread run is its work alone,
    whatever else the machine runs; the wall time also counts the waits for a busy machine's cores."""
    return time.perf_counter(), time.thread_time()


def diff(a: tuple[float, float], b: tuple[float, float]) -> tuple[float, float]:
    """``b - a`` for two :func:`now` readings."""
    return b[0] - a[0], b[1] - a[1]


def since(t0: tuple[float, float]) -> tuple[float, float]:
    """Wall and CPU seconds since ``t0`` (a :func:`now`)."""
    w, c = now()
    return w - t0[0], c - t0[1]


@dataclass
class Clock:
    """Per-step records of one run, each a (wall, CPU) pair: step ends, forward (loss) and backward durations,
    and named parts of a step (the plain loop's breakdown)."""

    ends: list[tuple[float, float]] = field(default_factory=list)
    fwd: list[tuple[float, float]] = field(default_factory=list)
    bwd: list[tuple[float, float]] = field(default_factory=list)
    parts: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    _mark: tuple[float, float] = (0.0, 0.0)

    def summary(self, warmup: int, window: int) -> dict[str, float]:
        """Mean step, forward + backward and overhead (ms; CPU time, and ``wall_`` wall time) over the ``window``
        steps after ``warmup``."""
        n, stop = len(self.ends), warmup + window
        if warmup < 1 or n < stop or len(self.fwd) != n or len(self.bwd) != n:
            raise RuntimeError(f"clock saw {n} steps, {len(self.fwd)} forwards, {len(self.bwd)} backwards; "
                               f"{warmup} + {window} timed")
        out: dict[str, float] = {"steps": window}
        for j, prefix in ((1, ""), (0, "wall_")):
            steps = [self.ends[i][j] - self.ends[i - 1][j] for i in range(warmup, stop)]
            inner = [self.fwd[i][j] + self.bwd[i][j] for i in range(warmup, stop)]
            out[f"{prefix}step_ms"] = 1e3 * statistics.fmean(steps)
            out[f"{prefix}fwd_bwd_ms"] = 1e3 * statistics.fmean(inner)
            out[f"{prefix}overhead_ms"] = out[f"{prefix}step_ms"] - out[f"{prefix}fwd_bwd_ms"]
            for name, vals in self.parts.items():
                out[f"{prefix}{name}_ms"] = 1e3 * statistics.fmean(v[j] for v in vals[warmup:stop])
        return out


CLOCK = Clock()  # the clock of the run in progress (the timed ``_loss`` writes to it)


class StepClock(Callback):
    """Records step ends and backward durations of a polydiff run in :data:`CLOCK`."""

    def on_before_backward(self, trainer: Any, pl_module: Any, loss: Tensor) -> None:
        CLOCK._mark = now()

    def on_after_backward(self, trainer: Any, pl_module: Any) -> None:
        CLOCK.bwd.append(since(CLOCK._mark))

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        CLOCK.ends.append(now())


@contextlib.contextmanager
def timed_loss(*modules: ModuleType) -> Iterator[None]:
    """``DiffusionModule._loss`` of each training module records its duration in :data:`CLOCK`."""
    saved = [(m.DiffusionModule, m.DiffusionModule._loss) for m in modules]

    def wrap(orig: Any) -> Any:
        def _loss(self: Any, net: nn.Module, batch: Any, seed: int, *args: Any, **kwargs: Any) -> Any:
            t0 = now()
            out = orig(self, net, batch, seed, *args, **kwargs)
            CLOCK.fwd.append(since(t0))
            return out
        return _loss

    for cls, orig in saved:
        cls._loss = wrap(orig)
    try:
        yield
    finally:
        for cls, orig in saved:
            cls._loss = orig


def training_at(rev: str) -> ModuleType:
    """``core/polydiff/training.py`` of commit ``rev``, loaded as a module of today's package."""
    src = subprocess.run(["git", "show", f"{rev}:core/polydiff/training.py"], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    name = "polydiff._training_at_" + re.sub(r"\W", "_", rev)
    spec = importlib.util.spec_from_loader(name, loader=None)
    assert spec is not None
    mod = importlib.util.module_from_spec(spec)
    mod.__package__ = "polydiff"
    sys.modules[name] = mod
    exec(compile(src, f"{rev}:core/polydiff/training.py", "exec"), mod.__dict__)  # our own history
    return mod


# ---------------------------------------------------------------------------------------------
# the three sides
# ---------------------------------------------------------------------------------------------

def run_polydiff(mod: ModuleType, cfg: dict[str, Any], out: Path) -> tuple[Clock, dict[str, Tensor]]:
    """One :func:`train` of ``mod`` (today's or another commit's training code), timed per step."""
    global CLOCK
    CLOCK = Clock()
    mod.train(cfg, out, fresh=True, verbose=False, callbacks=[StepClock()])
    state = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    return CLOCK, state


def run_plain(s: Setup, steps: int) -> tuple[Clock, dict[str, Tensor]]:
    """The same training in a plain PyTorch loop, timed per step (with a breakdown of its parts)."""
    global CLOCK
    CLOCK = clock = Clock(parts={"data": [], "optim": [], "ema": []})
    cfg, t = s.cfg, s.cfg.train
    threads = torch.get_num_threads()
    if t.threads > 0:
        torch.set_num_threads(t.threads)
    try:
        torch.manual_seed(t.seed)
        net = build_network(cfg, s.modality, s.info, s.fields)
        module = training.DiffusionModule(net, s.fields, cfg, s.info, s.data)  # the loss and the EMA copy
        ema = module.ema
        params = list(net.parameters())
        opt = training.make_optimizer(params, t)
        factor = training._lr_factor(t, len(s.data.train), 1)  # warm-up and per-epoch decay, as polydiff's
        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor) if t.warmup > 0 or t.lr_decay != 1.0 else None
        pairs = (list(ema.parameters()), params, list(ema.buffers()), list(net.buffers())) if ema is not None else None
        ds = training.StepBatches(s.data.train, t.batch_size, t.seed, 0, 1, 0, s.data.collate, s.data.augment)
        batches = iter(DataLoader(ds, batch_size=None, num_workers=0))
        logged: list[Tensor] = []
        last = now()
        for step in range(steps):
            batch = next(batches)
            t0 = now()
            torch.default_generator.manual_seed(training.step_seed(t.seed, step, 0, "torch"))
            loss, _ = module._loss(net, batch, training.step_seed(t.seed, step, 0),
                                   shared=training.step_seed(t.seed, step, 0, "shared"))
            opt.zero_grad()
            t1 = now()
            loss.backward()
            t2 = now()
            if t.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, t.grad_clip)
            opt.step()
            if sched is not None:
                sched.step()
            t3 = now()
            if pairs is not None:
                decay = min(t.ema, (step + 1) / (10 + step))
                with torch.no_grad():
                    torch._foreach_lerp_(pairs[0], pairs[1], 1 - decay)
                    if pairs[2]:
                        torch._foreach_copy_(pairs[2], pairs[3])
            if (step + 1) % t.log_every == 0:
                logged.append(loss.detach())
            end = now()
            clock.bwd.append(diff(t1, t2))
            clock.parts["data"].append(diff(last, t0))
            clock.parts["optim"].append(diff(t2, t3))
            clock.parts["ema"].append(diff(t3, end))
            clock.ends.append(end)
            last = end
        return clock, {k: v.detach().clone() for k, v in module.state_dict().items()}
    finally:
        torch.set_num_threads(threads)


def run_fwd_bwd(s: Setup, steps: int) -> Clock:
    """Loss and backward alone, on batches collated beforehand."""
    global CLOCK
    CLOCK = clock = Clock()
    cfg, t = s.cfg, s.cfg.train
    threads = torch.get_num_threads()
    if t.threads > 0:
        torch.set_num_threads(t.threads)
    try:
        torch.manual_seed(t.seed)
        net = build_network(cfg, s.modality, s.info, s.fields)
        module = training.DiffusionModule(net, s.fields, cfg, s.info, s.data)
        ds = training.StepBatches(s.data.train, t.batch_size, t.seed, 0, 1, 0, s.data.collate, s.data.augment)
        batches = [ds.batch(step) for step in range(steps)]
        for step, batch in enumerate(batches):
            for p in net.parameters():
                p.grad = None
            torch.default_generator.manual_seed(training.step_seed(t.seed, step, 0, "torch"))
            loss, _ = module._loss(net, batch, training.step_seed(t.seed, step, 0),
                                   shared=training.step_seed(t.seed, step, 0, "shared"))
            t1 = now()
            loss.backward()
            clock.bwd.append(since(t1))
        # a step here is forward + backward only: its "ends" are the running sums of those times
        wall = cpu = 0.0
        for f, b in zip(clock.fwd, clock.bwd):
            wall, cpu = wall + f[0] + b[0], cpu + f[1] + b[1]
            clock.ends.append((wall, cpu))
        return clock
    finally:
        torch.set_num_threads(threads)


def same_weights(a: dict[str, Tensor], b: dict[str, Tensor]) -> tuple[bool, float]:
    """Bit-identical state dicts?, and the largest absolute difference."""
    if a.keys() != b.keys():
        return False, float("inf")
    worst = max((float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].numel()), default=0.0)
    return all(torch.equal(a[k], b[k]) for k in a), worst


# ---------------------------------------------------------------------------------------------
# the benchmark
# ---------------------------------------------------------------------------------------------

def measure(name: str, args: argparse.Namespace, baseline: ModuleType | None) -> dict[str, Any]:
    """All rounds of one recipe: per side, the per-round summaries and their medians."""
    warmup = args.warmup if args.warmup is not None else WARMUP[name]
    s = setup(recipe_dict(name, 1, args.threads))
    # whole logging periods are timed, so each mean carries its share of logging; the run's last step (which logs
    # the final values once a run) comes after them
    window = (args.periods or PERIODS[name]) * s.cfg.train.log_every
    steps = warmup + window + 1
    cfg = recipe_dict(name, steps, args.threads)
    quick = min(window, 25)  # forward + backward alone: a cross-check, fewer steps
    sides = {"polydiff": [], "plain": [], "fwd_bwd": []} | ({"baseline": []} if baseline is not None else {})
    checks: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="train_overhead-") as tmp:
        out = Path(tmp)
        mod_train = [("polydiff", training)] + ([("baseline", baseline)] if baseline is not None else [])
        run_polydiff(training, recipe_dict(name, 3, args.threads), out / "warm")  # imports, first-call costs
        for r in range(args.rounds):
            order = ["polydiff", "plain", "baseline", "fwd_bwd"] if r % 2 == 0 else \
                ["fwd_bwd", "baseline", "plain", "polydiff"]
            states: dict[str, dict[str, Tensor]] = {}
            for side in order:
                if side not in sides:
                    continue
                if side == "plain":
                    clock, states[side] = run_plain(s, steps)
                elif side == "fwd_bwd":
                    clock = run_fwd_bwd(s, warmup + quick)
                else:
                    clock, states[side] = run_polydiff(dict(mod_train)[side], cfg, out / side)
                sides[side].append(clock.summary(warmup, quick if side == "fwd_bwd" else window))
            if r == 0:
                for side in states:
                    if side != "plain":
                        same, worst = same_weights(states[side], states["plain"])
                        checks[f"{side}_vs_plain_identical_weights"] = same
                        checks[f"{side}_vs_plain_max_abs_diff"] = worst
            print(f"{name} round {r + 1}/{args.rounds}: " + ", ".join(
                f"{k} {v[-1]['step_ms']:.2f} ms ({v[-1]['overhead_ms']:.2f} overhead, wall {v[-1]['wall_step_ms']:.2f})"
                for k, v in sides.items()),
                file=sys.stderr, flush=True)
    med = {side: {k: statistics.median(run[k] for run in runs) for k in runs[0]} for side, runs in sides.items()}
    return {"recipe": cfg, "steps": steps, "warmup": warmup, "window": window, "rounds": sides, "median": med,
            "checks": checks}


REMAINS = """What remains over the plain loop is Lightning's per-step machinery, a cost that does not grow with the
batch or the network: about twenty hook dispatches a step (module, callback and strategy hooks, each through its
profiler context and bookkeeping), `inspect` of `training_step`'s signature every step, the data fetcher and combined
loader around the `DataLoader` (one batch ahead), the optimizer closure and `LightningOptimizer` wrapping, and
scheduler and logger-connector bookkeeping; plus the one piece of polydiff's own per-step work a plain loop lacks,
the data fingerprint (a float64 sum of each batch, the check that ranks train on disjoint data; tens of
microseconds). It is the same Python on both recipes, yet costs about twice as much after a GDSS step as after a toy
step (not the garbage collector: the same with it off), presumably because a large network's step leaves the caches
cold. polydiff cannot remove it without replacing Lightning's loop; it is a few percent of a step of a network as
small as the toy's and half a percent of GDSS's."""

LABELS = {"polydiff": "polydiff (this tree)", "baseline": "polydiff @ {rev}", "plain": "plain PyTorch loop",
          "fwd_bwd": "forward + backward alone"}


def render(res: dict[str, Any], env: dict[str, Any]) -> str:
    """The markdown report."""
    md = header("Training overhead per step: polydiff against a plain PyTorch loop", env)
    md += ["Per step: the mean over whole logging periods of a run after its warm-up (the run's last step, which "
           "logs the final values, left out), the median over rounds run interleaved in one process; "
           f"{res['threads']} torch thread(s), CPU. Times are this thread's CPU time (a one-thread run's "
           "work, whatever else the machine runs); wall times beside them also count waits for a shared machine's "
           "cores. *Overhead* = step less the forward (the loss) and backward measured in the same steps: data "
           "loading and collation, the trainer, gradient clipping, AdamW, the scheduler, the EMA and logging. The "
           "plain loop does the same computation: its final weights and EMA are compared with polydiff's bit for "
           "bit.", ""]
    verdict = []
    labels = {k: v.format(rev=res.get("baseline")) for k, v in LABELS.items()}
    for name, r in res["recipes"].items():
        m = r["median"]
        p, q = m["polydiff"], m["plain"]
        rounds = len(r["rounds"]["plain"])
        md += [f"## {name} (`{r['source']}`: runs of {r['steps']} steps timing steps {r['warmup'] + 1}-"
               f"{r['warmup'] + r['window']}, {rounds} rounds)", "",
               "| side | step (ms) | forward + backward (ms) | overhead (ms) | overhead share | wall: step (ms) | "
               "wall: overhead (ms) |",
               "|---|---:|---:|---:|---:|---:|---:|"]
        for side in ("polydiff", "baseline", "plain", "fwd_bwd"):
            if side in m:
                x = m[side]
                if side == "fwd_bwd":
                    md.append(f"| {labels[side]} | {x['step_ms']:.2f} | {x['fwd_bwd_ms']:.2f} | - | - | "
                              f"{x['wall_step_ms']:.2f} | - |")
                else:
                    md.append(f"| {labels[side]} | {x['step_ms']:.2f} | {x['fwd_bwd_ms']:.2f} | {x['overhead_ms']:.2f}"
                              f" | {100 * x['overhead_ms'] / x['step_ms']:.1f}% | {x['wall_step_ms']:.2f} | "
                              f"{x['wall_overhead_ms']:.2f} |")
        step_ratio, over_ratio = p["step_ms"] / q["step_ms"], p["overhead_ms"] / q["overhead_ms"]
        extra = p["overhead_ms"] - q["overhead_ms"]
        md += ["", f"- polydiff / plain loop: step **{step_ratio:.3f}x**, overhead **{over_ratio:.2f}x** "
               f"({extra:+.2f} ms a step, {100 * extra / q['step_ms']:+.1f}% of the plain loop's step); wall time: "
               f"step {p['wall_step_ms'] / q['wall_step_ms']:.3f}x, overhead "
               f"{p['wall_overhead_ms'] / q['wall_overhead_ms']:.2f}x",
               f"- the plain loop's overhead: data {q['data_ms']:.2f} ms, clipping + AdamW + scheduler "
               f"{q['optim_ms']:.2f} ms, EMA + loss kept {q['ema_ms']:.2f} ms, the rest "
               f"{q['overhead_ms'] - q['data_ms'] - q['optim_ms'] - q['ema_ms']:.2f} ms (seeding, zero_grad)"]
        if "baseline" in m:
            b = m["baseline"]
            md.append(f"- before ({labels['baseline']}) -> after: step {b['step_ms']:.2f} -> {p['step_ms']:.2f} ms, "
                      f"overhead {b['overhead_ms']:.2f} -> {p['overhead_ms']:.2f} ms "
                      f"({b['overhead_ms'] / q['overhead_ms']:.2f}x -> {over_ratio:.2f}x the plain loop's)")
        for side in ("polydiff", "baseline"):
            if f"{side}_vs_plain_identical_weights" in r["checks"]:
                same = r["checks"][f"{side}_vs_plain_identical_weights"]
                dev = r["checks"][f"{side}_vs_plain_max_abs_diff"]
                md.append(f"- {labels[side]} and the plain loop end with {'bit-identical' if same else 'DIFFERENT'} "
                          f"weights and EMA (max |difference| {dev:.3g})")
        md.append("")
        r["step_ratio"], r["overhead_ratio"] = step_ratio, over_ratio
        if name == "gdss":
            verdict.append(f"GDSS within 10% of the plain loop: {'yes' if step_ratio <= 1.10 else 'no'} (step "
                           f"{step_ratio:.3f}x the plain loop's; overhead outside forward / backward "
                           f"{over_ratio:.2f}x, "
                           f"{extra:+.2f} ms a step)")
        else:
            verdict.append(f"toy: step {step_ratio:.3f}x the plain loop's, overhead {over_ratio:.2f}x ({extra:+.2f} "
                           "ms a step: Lightning's per-step machinery, see below)")
    md += ["## Verdict", ""] + [f"- {v}" for v in verdict] + ["", REMAINS, ""]
    res["verdict"] = verdict
    return "\n".join(md)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--recipes", default="toy,gdss", help="comma-separated: toy, gdss")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--periods", type=int, default=0,
                    help="logging periods (log_every steps) timed per run (default: toy 7 = 350 steps, gdss 1 = 50)")
    ap.add_argument("--warmup", type=int, default=None, help="first steps of a run left out (default: toy 50, gdss 4)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--baseline", default=None, help="also time the training code of this commit (before / after)")
    ap.add_argument("--stem", default="train_overhead", help="bench/results/<stem>.json and .md")
    ap.add_argument("--render", default=None, help="only re-render the report of this results JSON")
    args = ap.parse_args(argv)
    if args.render:
        res = json.loads(Path(args.render).read_text())
        publish(args.stem, res, render(res, res["environment"]))
        return res
    env = environment(command_line("train_overhead.py", argv))
    baseline = training_at(args.baseline) if args.baseline else None
    res: dict[str, Any] = {"environment": env, "threads": args.threads, "baseline": args.baseline, "recipes": {}}
    names = [n.strip() for n in args.recipes.split(",") if n.strip()]
    with timed_loss(training, *([baseline] if baseline is not None else [])):
        for name in names:
            if name not in PERIODS:
                ap.error(f"unknown recipe {name!r}; choose from {', '.join(PERIODS)}")
            r = measure(name, args, baseline)
            r["source"] = "configs/toy/gmm.yaml" if name == "toy" else "configs/graphs/community_small_gdss.yaml"
            res["recipes"][name] = r
    publish(args.stem, res, render(res, env))
    return res


if __name__ == "__main__":
    main()
