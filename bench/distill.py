"""The toy distillation check: a two-time student distilled by CTM from the exact toy-mixture
teacher, sampled in 1 and 2 steps, against the teacher's 40-step samples.

Target (the issue's check): over exact draws of a 2-D Gaussian mixture, the student's 1- and
2-step samples reach an SW2 within 1.5x of the teacher's 40-step samples.

- Teacher: :class:`polydiff.toy.ExactDenoiser` (exact E[x0 | x_t]) of
  ``GaussianMixture.random(k=4, dim=2, spread=2.0, std=0.3, seed=0)`` under ``vp_cosine`` with
  eps-prediction; its samples: ``dpm++2m``, 40 steps, the schedule's default grid.
- Student: :class:`polydiff.distill.TwoTimeMLP` trained with :func:`polydiff.distill.ctm_loss`
  (AdamW, warm-up then cosine decay, gradient clipping 1, EMA 0.995) on fresh exact draws, one
  training run per seed; sampled with ``sampler="ctm"`` (gamma = 0; gamma = 1 reported too).
- Metric: SW2 (:func:`polydiff.metrics.sliced_wasserstein`, fixed random directions) of ``n``
  samples against one large set of exact draws; teacher and student samples of replicate ``r``
  start from the same prior draws (seed ``r``). The sampling floor is the SW2 of ``n`` exact draws
  against the same reference, and between two independent exact sets of size ``n``. Ratio = mean
  SW2(student) / mean SW2(teacher) over the replicates; PASS when it is at most 1.5 for 1 and 2
  steps for every training seed at the primary size. Path RMSE: per coordinate, student against
  the teacher's 40-step samples from the same prior draws (no sampling floor).
- Timing: wall time of each training run, and of sampling the same ``n`` points with the student in
  1 step, the exact teacher in 40 steps and, for an NFE-fair comparison, a network of the
  student's size called 40 times (the student as a one-time denoiser, ``dpm++2m``), median of
  repeats, measured in the same run.

Usage::

    python bench/distill.py                  # full check, a few minutes on 2 CPU cores
    python bench/distill.py --quick          # smoke run (small budget, no pass expected)
    python bench/distill.py --steps 3000 --seeds 0,1,2 --json out.json --md out.md

Writes ``bench/results/distill.json`` and ``bench/results/distill.md`` (``--json`` / ``--md``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

import polydiff as pd
from polydiff.distill import TwoTimeMLP, ctm_loss
from polydiff.metrics import directions, sliced_wasserstein
from polydiff.processes.gaussian import GaussianProcess
from polydiff.random import Noise
from polydiff.state import FieldSpec
from polydiff.structures import Plain
from polydiff.toy.gmm import ExactDenoiser, GaussianMixture

HERE = Path(__file__).resolve().parent
TARGET_RATIO = 1.5
MIXTURE = {"k": 4, "dim": 2, "spread": 2.0, "std": 0.3, "seed": 0}
SCHEDULE, PREDICTION = "vp_cosine", "eps"


@dataclass
class Config:
    """The check's sizes; the defaults are the full run."""

    steps: int = 2000  # training steps per seed
    batch: int = 1024
    hidden: int = 128
    depth: int = 3
    lr: float = 2e-3
    seeds: tuple[int, ...] = (0, 1)
    loss: dict[str, Any] = field(default_factory=dict)  # ctm_loss options (its defaults otherwise)
    samples: int = 2000  # n per replicate, primary size
    replicates: int = 20
    big_samples: int = 10_000  # a second, harder size (smaller sampling floor)
    big_replicates: int = 5
    reference: int = 20_000  # exact draws every set is compared with
    projections: int = 128
    teacher_steps: int = 40
    timing_samples: int = 10_000
    timing_repeats: int = 5
    progress: bool = True


def setup() -> tuple[GaussianMixture, GaussianProcess, dict[str, FieldSpec], ExactDenoiser]:
    """The mixture, process, fields and exact teacher of the check."""
    gmm = GaussianMixture.random(**MIXTURE)
    proc = GaussianProcess(SCHEDULE)
    fields = {"x": FieldSpec(proc, Plain(), PREDICTION)}
    return gmm, proc, fields, ExactDenoiser(gmm, proc, PREDICTION)


def distil_toy(steps: int, batch: int = 1024, hidden: int = 128, depth: int = 3, seed: int = 0, lr: float = 2e-3,
               progress: bool = False, **options: Any) -> TwoTimeMLP:
    """A student distilled from the exact toy-mixture teacher with a plain AdamW loop (5% warm-up,
    cosine decay to 5%, clipping 1, EMA 0.995); returns the EMA network in eval mode. Everything
    random is seeded by ``seed``: the initial weights, the data draws and the loss's noise streams."""
    gmm, _, fields, exact = setup()
    teacher = lambda st, t, *a: {"x": exact(st["x"], t)}  # noqa: E731  (state-level)
    mean, cov = gmm.moments()
    sigma_data = float(torch.sqrt(torch.diagonal(cov).mean() + (mean**2).mean()))
    torch.manual_seed(seed)
    net = TwoTimeMLP(2, fields, sigma_data, hidden, depth)
    ema = TwoTimeMLP(2, fields, sigma_data, hidden, depth)
    ema.load_state_dict(net.state_dict())
    opt = torch.optim.AdamW(net.parameters(), lr=lr)
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: min(1.0, (i + 1) / warm) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(i, steps) / steps))))
    data = torch.Generator().manual_seed(seed + 1)
    t0 = time.perf_counter()
    for i in range(steps):
        x0 = gmm.sample(batch, data).float()
        noise = Noise(batch, generator=torch.Generator().manual_seed(1_000_003 * seed + i))
        loss, logs = ctm_loss(net, teacher, fields, {"x": x0}, noise, **options)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        sched.step()
        with torch.no_grad():
            decay = min(0.995, (i + 1) / (i + 10))
            for e, p in zip(ema.parameters(), net.parameters()):
                e.lerp_(p, 1 - decay)
        if progress and (i % max(1, steps // 10) == 0 or i == steps - 1):
            terms = ", ".join(f"{k} {float(v):.4f}" for k, v in logs.items())
            print(f"  seed {seed} step {i + 1}/{steps} ({time.perf_counter() - t0:.0f} s): {terms}", flush=True)
    return ema.eval()


def student_samples(student: TwoTimeMLP, n: int, steps: int, seed: int, gamma: float = 0.0) -> torch.Tensor:
    _, _, fields, _ = setup()
    with torch.no_grad():
        return pd.sample(student, fields, {"x": (n, 2)}, sampler="ctm", steps=steps, seed=seed, gamma=gamma)["x"]


def teacher_samples(n: int, seed: int, steps: int = 40) -> torch.Tensor:
    _, proc, _, exact = setup()
    with torch.no_grad():
        return pd.sample(exact, proc, (n, 2), sampler="dpm++2m", steps=steps, seed=seed, prediction=PREDICTION)


def toy_sw2(student: TwoTimeMLP, replicates: int, n: int, reference: int = 20_000, projections: int = 128,
            teacher_steps: int = 40, gamma_one: bool = False) -> dict[str, list[float]]:
    """Per replicate: SW2 against one large exact reference set of the sampling floor (exact draws
    of size n; and two independent exact sets), the teacher's samples and the student's 1- and
    2-step samples from the same prior draws, and the students' path RMSE to the teacher's."""
    gmm, _, _, _ = setup()
    ref = gmm.sample(reference, torch.Generator().manual_seed(12345))
    dirs = directions(2, projections, seed=7)
    keys = ["floor", "floor_pair", "teacher40", "student1", "student2"] + (["student2_gamma1"] if gamma_one else [])
    out: dict[str, list[float]] = {k: [] for k in [*keys, "path1", "path2"]}
    for r in range(replicates):
        a = gmm.sample(n, torch.Generator().manual_seed(100 + 2 * r))
        b = gmm.sample(n, torch.Generator().manual_seed(101 + 2 * r))
        out["floor"].append(sliced_wasserstein(a, ref, dirs=dirs))
        out["floor_pair"].append(sliced_wasserstein(a, b, dirs=dirs))
        x = teacher_samples(n, r, teacher_steps)
        out["teacher40"].append(sliced_wasserstein(x, ref, dirs=dirs))
        for k in (1, 2):
            y = student_samples(student, n, k, r)
            out[f"student{k}"].append(sliced_wasserstein(y, ref, dirs=dirs))
            out[f"path{k}"].append(float(((y.double() - x.double()) ** 2).mean().sqrt()))
        if gamma_one:
            out["student2_gamma1"].append(sliced_wasserstein(student_samples(student, n, 2, r, 1.0), ref, dirs=dirs))
    return out


def _median_time(fn: Any, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def timing(student: TwoTimeMLP, n: int, repeats: int) -> dict[str, float]:
    """Median wall times of sampling n points: student 1 step, exact teacher 40 steps, and a network
    of the student's size called 40 times (NFE-fair), and the speed ratios."""
    _, _, fields, _ = setup()

    def one_time(st: dict[str, torch.Tensor], t: torch.Tensor, *a: Any) -> dict[str, torch.Tensor]:
        return student(st, t)

    def same_size_40() -> None:
        with torch.no_grad():
            pd.sample(one_time, fields, {"x": (n, 2)}, sampler="dpm++2m", steps=40, seed=0)

    student_samples(student, n, 1, 0)  # warm-up
    out = {"student_1step_s": _median_time(lambda: student_samples(student, n, 1, 0), repeats),
           "student_2step_s": _median_time(lambda: student_samples(student, n, 2, 0), repeats),
           "teacher_exact_40step_s": _median_time(lambda: teacher_samples(n, 0), repeats),
           "student_size_net_40step_s": _median_time(same_size_40, repeats)}
    out["speedup_vs_exact_teacher"] = out["teacher_exact_40step_s"] / out["student_1step_s"]
    out["speedup_vs_same_size_net"] = out["student_size_net_40step_s"] / out["student_1step_s"]
    return out


def _stats(v: list[float]) -> dict[str, float]:
    return {"mean": statistics.mean(v), "std": statistics.stdev(v) if len(v) > 1 else 0.0, "min": min(v),
            "max": max(v)}


def summarise(sw: dict[str, list[float]]) -> dict[str, Any]:
    """Mean / std / range per quantity, and the ratios of mean SW2 to the teacher's."""
    s = {k: _stats(v) for k, v in sw.items()}
    teacher = s["teacher40"]["mean"]
    ratios = {k: s[k]["mean"] / teacher for k in sw if k.startswith("student") or k.startswith("floor")}
    return {"sw2": s, "ratio": ratios}


def environment(command: str) -> dict[str, Any]:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=HERE,
                                timeout=10).stdout.strip() or None
        dirty = bool(subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True, cwd=HERE,
                                    timeout=10).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        commit, dirty = None, None
    return {"command": command, "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
            "git_commit": commit, "worktree_dirty": dirty, "python": platform.python_version(),
            "torch": torch.__version__, "polydiff": pd.__version__, "platform": platform.platform(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "load_average_start": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}


def run(cfg: Config | None = None, command: str = "python bench/distill.py") -> dict[str, Any]:
    """The whole check; returns a JSON-ready dict (see :func:`to_markdown`)."""
    cfg = cfg or Config()
    result: dict[str, Any] = {"environment": environment(command), "config": asdict(cfg), "mixture": MIXTURE,
                              "schedule": SCHEDULE, "prediction": PREDICTION, "target_ratio": TARGET_RATIO,
                              "seeds": []}
    t_all = time.perf_counter()
    for seed in cfg.seeds:
        if cfg.progress:
            print(f"training seed {seed}: {cfg.steps} steps of batch {cfg.batch}", flush=True)
        t0 = time.perf_counter()
        student = distil_toy(cfg.steps, cfg.batch, cfg.hidden, cfg.depth, seed, cfg.lr, cfg.progress, **cfg.loss)
        train_s = time.perf_counter() - t0
        if cfg.progress:
            print(f"  trained in {train_s:.0f} s; evaluating", flush=True)
        t0 = time.perf_counter()
        primary = toy_sw2(student, cfg.replicates, cfg.samples, cfg.reference, cfg.projections, cfg.teacher_steps,
                          gamma_one=True)
        big = toy_sw2(student, cfg.big_replicates, cfg.big_samples, cfg.reference, cfg.projections,
                      cfg.teacher_steps) if cfg.big_replicates > 0 else None
        eval_s = time.perf_counter() - t0
        entry = {"seed": seed, "train_seconds": train_s, "eval_seconds": eval_s, "primary": summarise(primary),
                 "primary_raw": primary, "big": summarise(big) if big else None, "big_raw": big,
                 "timing": timing(student, cfg.timing_samples, cfg.timing_repeats)}
        r = entry["primary"]["ratio"]
        entry["pass"] = r["student1"] <= TARGET_RATIO and r["student2"] <= TARGET_RATIO
        if cfg.progress:
            print(f"  ratios: 1 step {r['student1']:.2f}, 2 steps {r['student2']:.2f} -> "
                  f"{'PASS' if entry['pass'] else 'FAIL'}", flush=True)
        result["seeds"].append(entry)
    result["pass"] = all(e["pass"] for e in result["seeds"])
    result["seconds"] = time.perf_counter() - t_all
    return result


def _f(v: float | None, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _table(entries: list[dict[str, Any]], key: str, n: int, reps: int) -> list[str]:
    rows = [f"SW2 of n = {n} points against {{ref}} exact draws, mean +- std over {reps} replicates "
            "(ratio: mean / the teacher's mean):", "",
            "| seed | exact n vs ref (floor) | two exact sets | teacher 40 steps | student 1 step | student 2 steps "
            "| ratio 1 step | ratio 2 steps | path RMSE 1 / 2 steps |", "|---|---|---|---|---|---|---|---|---|"]
    for e in entries:
        s = e[key]
        if s is None:
            continue
        sw, ratio = s["sw2"], s["ratio"]
        cell = {k: f"{sw[k]['mean']:.4f} +- {sw[k]['std']:.4f}" for k in sw}
        rows.append(f"| {e['seed']} | {cell['floor']} | {cell['floor_pair']} | {cell['teacher40']} | "
                    f"{cell['student1']} | {cell['student2']} | {ratio['student1']:.2f} | {ratio['student2']:.2f} | "
                    f"{sw['path1']['mean']:.3f} / {sw['path2']['mean']:.3f} |")
    return rows


def to_markdown(res: dict[str, Any]) -> str:
    env, cfg = res["environment"], res["config"]
    verdicts = ", ".join(f"seed {e['seed']}: {'PASS' if e['pass'] else 'FAIL'}" for e in res["seeds"])
    lines = ["# Toy distillation check (CTM)", "", "```bash", env["command"], "```", "",
             f"- commit `{env['git_commit']}`{' (work tree with uncommitted changes)' if env['worktree_dirty'] else ''}"
             f", {env['date_utc']} UTC", f"- python {env['python']}, torch {env['torch']}, polydiff {env['polydiff']}, "
             f"{env['cpu_count']} CPUs ({env['torch_threads']} torch threads), {env['platform']}, load average at "
             f"start {_f(env['load_average_start'], 2)}", "",
             f"**Target:** student SW2 within {res['target_ratio']}x of the teacher's {cfg['teacher_steps']}-step "
             f"samples in 1 and 2 steps. **Result: {'PASS' if res['pass'] else 'FAIL'}** ({verdicts}; criterion "
             f"at n = {cfg['samples']}).", "",
             f"Mixture `GaussianMixture.random({', '.join(f'{k}={v}' for k, v in res['mixture'].items())})`, "
             f"`{res['schedule']}`, {res['prediction']}-prediction. Student `TwoTimeMLP(hidden={cfg['hidden']}, "
             f"depth={cfg['depth']})`, {cfg['steps']} steps of batch {cfg['batch']}, lr {cfg['lr']}, "
             f"ctm_loss options {cfg['loss'] or 'defaults'}. Teacher samples: dpm++2m, {cfg['teacher_steps']} steps; "
             f"student samples: `ctm`, gamma = 0, default grid; teacher and student replicate r from the same prior "
             f"draws. {cfg['projections']} fixed projections.", ""]
    for key, n, reps in (("primary", cfg["samples"], cfg["replicates"]),
                         ("big", cfg["big_samples"], cfg["big_replicates"])):
        if reps < 1:
            continue
        lines += [row.replace("{ref}", str(cfg["reference"])) for row in _table(res["seeds"], key, n, reps)] + [""]
    g1 = [(e["seed"], e["primary"]["sw2"]["student2_gamma1"]["mean"], e["primary"]["ratio"]["student2_gamma1"])
          for e in res["seeds"]]
    lines += ["Two steps with gamma = 1 (consistency-model multistep: jump to the data end, re-noise): " +
              "; ".join(f"seed {s}: SW2 {m:.4f}, ratio {r:.2f}" for s, m, r in g1) + ".", "",
              "| seed | training | evaluation | student 1 step | student 2 steps | exact teacher 40 steps | "
              "same-size network 40 steps | speed-up vs exact teacher | vs same-size network |",
              "|---|---|---|---|---|---|---|---|---|"]
    for e in res["seeds"]:
        t = e["timing"]
        lines.append(f"| {e['seed']} | {e['train_seconds']:.0f} s | {e['eval_seconds']:.0f} s | "
                     f"{1e3 * t['student_1step_s']:.1f} ms | {1e3 * t['student_2step_s']:.1f} ms | "
                     f"{1e3 * t['teacher_exact_40step_s']:.1f} ms | {1e3 * t['student_size_net_40step_s']:.1f} ms | "
                     f"{t['speedup_vs_exact_teacher']:.1f}x | {t['speedup_vs_same_size_net']:.1f}x |")
    lines += ["", f"Sampling times: median of {cfg['timing_repeats']} runs of {cfg['timing_samples']} points. The "
              "exact teacher is an analytic mixture denoiser, cheaper per call than the student's MLP; the "
              "same-size column calls the student's own network 40 times as a one-time denoiser (NFE-fair).",
              "", f"Total {res['seconds']:.0f} s.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int)
    p.add_argument("--batch", type=int)
    p.add_argument("--seeds", type=str, help="comma-separated training seeds")
    p.add_argument("--replicates", type=int)
    p.add_argument("--samples", type=int)
    p.add_argument("--big-samples", type=int)
    p.add_argument("--big-replicates", type=int)
    p.add_argument("--quick", action="store_true", help="smoke run: tiny budget, no pass expected")
    p.add_argument("--json", type=Path, default=HERE / "results" / "distill.json")
    p.add_argument("--md", type=Path, default=HERE / "results" / "distill.md")
    args = p.parse_args(argv)
    cfg = Config()
    if args.quick:
        cfg = Config(steps=50, batch=256, seeds=(0,), replicates=3, samples=500, big_replicates=0, reference=5000,
                     timing_samples=2000, timing_repeats=2)
    for name in ("steps", "batch", "replicates", "samples", "big_samples", "big_replicates"):
        if getattr(args, name) is not None:
            setattr(cfg, name, getattr(args, name))
    if args.seeds:
        cfg.seeds = tuple(int(s) for s in args.seeds.split(","))
    torch.set_num_threads(1)  # a 2-D MLP: one thread is fastest, and the machine may be shared
    command = "python bench/distill.py" + ("" if argv is None and len(sys.argv) < 2 else
                                           " " + " ".join(sys.argv[1:] if argv is None else argv))
    res = run(cfg, command)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(res, indent=1))
    args.md.write_text(to_markdown(res))
    print(to_markdown(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
