"""Protein backbones: SE(3) flow matching over residue frames against a same-size CA-only
Gaussian baseline, the training structures, sampling cost against length, and motif scaffolding.

Both models use their shipped recipes (``proteins:frames``, ``proteins:ca``: the same IPA
network size, data, budget and Euler sampler; the baseline reads frames derived from its CA
positions and generates CA positions only) with the CPU budget below (``--steps``,
``--batch``), on the embedded synthetic backbones of 50-128 residues. Reported:

- for lengths 50, 64, 80, 100 and 128 (``--per-length`` samples each): backbone geometry (bond
  lengths and angles, CA-CA distance, clashes, chain breaks), Ramachandran distance to the data,
  secondary structure (DSSP on full backbones, P-SEA on CA traces), radius of gyration against
  length, diversity (mean pairwise TM-score, clusters at TM 0.5) and novelty (max TM-score to
  training structures), next to the same numbers for held-out training-distribution structures;
- sampling settings (default against default: the recipe's Euler 100 steps; fewer steps; the
  rotations' exponential rate schedule switched off);
- seconds per backbone (batch 1, 100 steps, one thread) against length (50-400) and the memory
  sampling adds at 400-1600 residues, each in a fresh process; the largest length that fits in
  16 GiB from a quadratic fit; the CA baseline's time at the same lengths as the speed ratio;
- motif scaffolding: an ideal helix motif and a motif from a shared PDB file, 20 samples each:
  motif RMSD (N, CA, C after superposition), the share within 0.5 A, scaffold diversity.

- speed against FrameFlow's own code (``bench/frameflow_reference.py``, its scratch venv) at our
  recipe's widths: a training step and 100-step sampling, interleaved in one run. Alone:
  ``--parts speed`` (the other results are kept from the previous report).

    python bench/proteins.py [--steps 1500] [--batch 6] [--runs DIR] [--per-length 8] [--quick] [--parts main,speed]
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, command_line, environment, header, publish, ratio_summaries, reference_missing

import polydiff
from polydiff.plugin import shared_dir

LENGTHS = (50, 64, 80, 100, 128)
SCALING = (50, 100, 200, 300, 400)
METRICS = [  # (key, label, digits)
    ("ca_ca_dev", "CA-CA |d-3.80| (A)", 3), ("ca_ca_valid", "CA-CA valid", 3),
    ("bond_c_n", "C-N bond dev (A)", 3), ("angle_n_ca_c", "N-CA-C angle dev (deg)", 2),
    ("clashes_per_res", "clashes / residue", 4), ("breaks_per_res", "breaks / residue", 4),
    ("rama_jsd", "Ramachandran JSD", 3), ("dssp_helix", "DSSP helix", 3), ("dssp_strand", "DSSP strand", 3),
    ("psea_helix", "P-SEA helix", 3), ("psea_strand", "P-SEA strand", 3), ("psea_ss_distance", "P-SEA SS TV", 3),
    ("rg_ratio", "Rg / (2.2 L^0.38)", 3), ("tm_diversity", "mean pairwise TM", 3), ("tm_clusters", "clusters @0.5", 0),
    ("novelty_max_tm", "max TM to train", 3),
]


def recipe(name: str, steps: int, batch: int, quick: bool) -> dict[str, Any]:
    from polydiff_proteins.modality import ProteinsModality

    r = yaml.safe_load(ProteinsModality().recipes()[name].read_text())
    r["data"].update(min_length=50, max_length=128)
    if quick:
        r["data"].update(n=24, test=8)
    r["train"].update(max_steps=steps, batch_size=batch, checkpoint_every=max(steps // 6, 1), threads=1,
                      progress=False)
    return r


def train(name: str, args: argparse.Namespace, runs: Path) -> tuple[str, dict[str, Any]]:
    """The run's checkpoint (trained here unless ``runs/name`` already holds a finished one)."""
    cfg = recipe(name, args.steps, args.batch, args.quick)
    ckpt = runs / name / "checkpoints" / "last.ckpt"
    cmd = (f"polydiff train proteins:{name} --out {runs / name} --set data.min_length=50 --set data.max_length=128 "
           f"--set train.batch_size={args.batch} --set train.max_steps={args.steps} --set train.threads=1 "
           f"(loss.weighting {cfg['loss']['weighting']})")
    if ckpt.is_file() and polydiff.load(ckpt).step >= args.steps:
        return str(ckpt), {"steps": args.steps, "batch": args.batch, "trained_by": cmd, "train_seconds": None}
    t0 = time.perf_counter()
    run = polydiff.train(cfg, runs / name, fresh=True, verbose=False)
    return str(run.checkpoint), {"steps": args.steps, "batch": args.batch, "trained_by": "this script",
                                 "train_seconds": time.perf_counter() - t0,
                                 "final_loss": run.metrics.get("train/loss")}


def generate(gen: Any, per_length: int, seed: int, **options: Any) -> tuple[list[Any], float]:
    lengths = [n for n in LENGTHS for _ in range(per_length)]
    t0 = time.perf_counter()
    out = gen.generate(len(lengths), seed=seed, condition={"length": lengths}, batch_size=per_length, progress=False,
                       **options)
    return out, time.perf_counter() - t0


def quality(args: argparse.Namespace, ckpts: dict[str, str]) -> dict[str, Any]:
    from polydiff_proteins.metrics import evaluate_backbones
    from polydiff_proteins.modality import _train_reference

    gen = polydiff.load(ckpts["frames"])
    data = gen.modality.dataset(gen.config.data.name, **gen.config.data.options)
    held = gen.modality.reference(data) + gen.modality.to_native(
        dict(data.val.tensors), data.info)
    train_ref = _train_reference(gen.info, most=60)
    rows: dict[str, Any] = {}
    ref_half = held[len(held) // 2:]
    rows["data (held-out)"] = evaluate_backbones(held[: len(held) // 2], ref_half, train=train_ref)
    variants = [("frames", "frames: Euler 100 (recipe default)", {}),
                ("frames", "frames: Euler 20", {"steps": 20}),
                ("frames", "frames: Euler 100, rate 0 (no exp. schedule)", {"rate": 0.0}),
                ("ca", "CA baseline: Euler 100 (recipe default)", {})]
    variants += [(k, f"{k.split('_')[0]}: trained with the x0 loss weighting", {}) for k in ckpts if k.endswith("_x0")]
    timing = {}
    for model, label, opt in variants:
        if args.quick and opt:
            continue
        g = polydiff.load(ckpts[model])
        if "rate" in opt:
            g.fields["rots"].process.sample_rate = opt["rate"]
        print(f"[quality] {label} ...", file=sys.stderr, flush=True)
        samples, secs = generate(g, args.per_length, seed=1, **({"steps": opt["steps"]} if "steps" in opt else {}))
        rows[label] = evaluate_backbones(samples, ref_half, train=train_ref)
        timing[label] = secs / len(samples)
        if label.startswith("frames: Euler 100 (") and args.plot:
            g.modality.plot(samples, args.plot, ref_half)
    return {"rows": rows, "seconds_per_backbone_batched": timing, "n_per_length": args.per_length,
            "lengths": list(LENGTHS)}


_PROBE = r"""
import resource, sys, time, torch, polydiff
torch.set_num_threads(1)
gen = polydiff.load(sys.argv[1]); n = int(sys.argv[2]); steps = int(sys.argv[3])
gen.generate(1, seed=0, steps=2, condition={"length": 20}, progress=False)  # warm-up: imports, model, buffers
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
gen.generate(1, seed=0, steps=steps, condition={"length": n}, progress=False)
sec = time.perf_counter() - t0
print(sec, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, base * 1024)
"""
MEMORY = (400, 800, 1200, 1600)  # lengths of the memory probe (2 steps: memory does not grow with steps)


def scaling(ckpts: dict[str, str], lengths: tuple[int, ...], steps: int, memory: tuple[int, ...]) -> dict[str, Any]:
    """Seconds per backbone of both models at ``lengths`` (``steps`` Euler steps, batch 1) and the
    frame model's peak memory at ``memory`` lengths, each run in a fresh one-thread process; the
    memory the sampling adds over the loaded model grows quadratically (pair features), so a
    quadratic fit gives the largest length that fits in 16 GiB."""
    out: dict[str, Any] = {}
    for model in ("frames", "ca"):
        rows = []
        for n in lengths:
            print(f"[scaling] {model} L={n} ...", file=sys.stderr, flush=True)
            res = subprocess.run([sys.executable, "-c", _PROBE, ckpts[model], str(n), str(steps)],
                                 capture_output=True, text=True, check=True, env={"OMP_NUM_THREADS": "1",
                                                                                  **_env()})
            sec, peak, base = (float(v) for v in res.stdout.split()[-3:])
            rows.append({"length": n, "seconds": sec, "peak_bytes": peak, "before_bytes": base})
        out[model] = rows
    mem = []
    for n in memory:
        print(f"[memory] frames L={n} ...", file=sys.stderr, flush=True)
        res = subprocess.run([sys.executable, "-c", _PROBE, ckpts["frames"], str(n), "2"], capture_output=True,
                             text=True, check=True, env={"OMP_NUM_THREADS": "1", **_env()})
        sec, peak, base = (float(v) for v in res.stdout.split()[-3:])
        mem.append({"length": n, "peak_bytes": peak, "base_bytes": base, "growth_bytes": max(peak - base, 0.0)})
    out["memory"] = mem
    x = np.array([r["length"] for r in mem], float)
    y = np.array([r["growth_bytes"] for r in mem], float)
    a, b, c = np.polyfit(x, y, 2) if len(x) >= 3 else (0.0, 0.0, 0.0)
    room = 16 * 2**30 - max(r["base_bytes"] for r in mem)  # what the sampling itself may take
    disc = b * b - 4 * a * (c - room)
    out["fit_growth_bytes"] = {"a": a, "b": b, "c": c}
    out["max_length_16GiB"] = float((-b + math.sqrt(disc)) / (2 * a)) if a > 0 and disc > 0 else None
    return out


def plot_scaling(sc: dict[str, Any], path: Path) -> None:
    """Seconds per backbone and peak memory against length (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from polydiff.plugin import save_figure

    fig, (a, b) = plt.subplots(1, 2, figsize=(8, 3))
    for model, style in (("frames", "o-"), ("ca", "s--")):
        a.plot([r["length"] for r in sc[model]], [r["seconds"] for r in sc[model]], style, label=model)
    b.plot([r["length"] for r in sc["memory"]], [r["growth_bytes"] / 2**20 for r in sc["memory"]], "o-")
    a.set(xlabel="residues", ylabel="seconds per backbone (100 steps)", title="sampling time")
    b.set(xlabel="residues", ylabel="MiB added by sampling", title="memory (frames)")
    a.legend()
    save_figure(fig, path)


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}


def motifs(ckpt: str, num: int) -> dict[str, Any]:
    from polydiff_proteins.geometry import Backbone, build_backbone
    from polydiff_proteins.metrics import diversity, tm_clusters
    from polydiff_proteins.pdbio import read_backbones
    from polydiff_proteins.scaffold import scaffold

    gen = polydiff.load(ckpt)
    problems = [("ideal helix (14 residues)", Backbone(build_backbone(np.radians(np.full(16, -63.0)),
                                                                      np.radians(np.full(16, -42.0))), name="helix"),
                 "10-30/A2-15/10-30")]
    base = shared_dir()
    if base is not None:
        bb = read_backbones(Path(base) / "data" / "proteins" / "5L33.pdb")[0][0]
        problems.append(("5L33 residues 20-35 (shared PDB)", bb, "10-30/A20-35/10-30"))
    out = {}
    for label, motif, contig in problems:
        print(f"[motif] {label} ...", file=sys.stderr, flush=True)
        res = scaffold(gen, motif, contig, num, seed=0, total=(40, 80), progress=False)
        s = res.summary()
        s.update(contig=contig, scaffold_diversity_tm=diversity(res.backbones), scaffold_clusters=tm_clusters(
            res.backbones), lengths=[len(b) for b in res.backbones])
        out[label] = s
    return out


SPEED_SETUP = "python bench/frameflow_reference.py --setup"
SPEED_BUDGETS = {"full": {"rounds": 3, "steps": 10, "warmup": 2, "batch": 6, "length": 100, "num": 4,
                          "sample_repeats": 2, "threads": 1, "equal_params_blocks": 8},
                 "quick": {"rounds": 1, "steps": 2, "warmup": 1, "batch": 2, "length": 24, "num": 1,
                           "sample_repeats": 1, "threads": 1, "equal_params_blocks": 8}}
SPEED_KEYS = ("train_step_s", "sample_s")


def _our_frames_speed(b: dict[str, Any], work: Path, blocks: int | None = None) -> dict[str, Any]:
    """``proteins:frames`` (with ``blocks`` IPA blocks instead of the recipe's, when given) on
    backbones of ``length`` residues: ``polydiff.train`` for ``warmup + steps + 1`` steps (batch
    start to batch start; the last, which writes the checkpoint, left out), then the recipe's
    sampler (Euler, 100 steps) for ``num`` backbones in one batch."""
    import itertools
    import statistics

    from common import batch_clock

    cfg = recipe("frames", b["warmup"] + b["steps"] + 1, b["batch"], False)
    cfg["data"].update(n=64, test=8, min_length=b["length"], max_length=b["length"])
    if blocks is not None:
        cfg["model"]["blocks"] = blocks
    cfg["train"].update(threads=b["threads"], checkpoint_every=1_000_000, logger="none")
    clock = batch_clock()
    before = torch.get_num_threads()
    torch.set_num_threads(b["threads"])
    try:
        run = polydiff.train(cfg, work / "frames_speed", fresh=True, callbacks=[clock], verbose=False)
        gen = polydiff.load(run.checkpoint)
        lengths = {"length": [b["length"]] * b["num"]}
        wall, cpu = [], []
        for rep in range(b["sample_repeats"] + 1):
            t0, c0 = time.perf_counter(), time.process_time()
            gen.generate(b["num"], seed=rep, condition=lengths, batch_size=b["num"], progress=False)
            if rep:
                wall.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
    finally:
        torch.set_num_threads(before)
    steps = [y - x for x, y in itertools.pairwise(clock.wall)][b["warmup"]:]
    steps_cpu = [y - x for x, y in itertools.pairwise(clock.cpu)][b["warmup"]:]
    return {"train_step_s": statistics.median(steps), "train_step_s_all": steps, "train_step_cpu_s_all": steps_cpu,
            "final_loss": run.metrics.get("train/loss"), "sample_s": statistics.median(wall), "sample_s_all": wall,
            "sample_cpu_s_all": cpu, "sample_steps": int(gen.config.sample.steps),
            "blocks": int(cfg["model"]["blocks"]), "params": sum(p.numel() for p in gen.net.parameters())}


def speed(b: dict[str, Any], work: Path) -> dict[str, Any]:
    """Training step and sampling, polydiff against FrameFlow's own code (bench/frameflow_reference.py
    in its scratch venv), in lockstep: ``rounds`` rounds of one measurement each, the first of a
    round alternating between the two."""

    from frameflow_reference import REF, VENV, find_reference, measure_frameflow, venv_python

    out: dict[str, Any] = {"ours": [], "ours_equal_params": [], "frameflow": [], "order": [], "setup": SPEED_SETUP}
    for r in range(b["rounds"]):
        order = ["ours", "ours_equal_params", "frameflow"]
        order = order if r % 2 == 0 else order[::-1]
        for who in order:
            if who == "ours":
                out["ours"].append(_our_frames_speed(b, work))
                continue
            if who == "ours_equal_params":
                out[who].append(_our_frames_speed(b, work, blocks=b["equal_params_blocks"]))
                continue
            ref = measure_frameflow(steps=b["steps"], warmup=b["warmup"], threads=b["threads"], batch=b["batch"],
                                    length=b["length"], num=b["num"], sample_repeats=b["sample_repeats"], seed=r)
            if ref is None:
                out["frameflow_missing"] = reference_missing("FrameFlow", venv_python(), VENV, REF, find_reference())
                continue
            out["frameflow"].append(ref)
        out["order"].append(order)
        last = {who: out[who][-1] if out[who] else {} for who in ("ours", "frameflow")}
        print(f"[proteins] speed round {r}: " + "; ".join(
            f"{k} ours {last['ours'][k]:.3f} s, FrameFlow {last['frameflow'].get(k, float('nan')):.3f} s"
            for k in SPEED_KEYS), file=sys.stderr, flush=True)
        if "frameflow_missing" in out:
            print(f"[proteins] {out['frameflow_missing']}: run {SPEED_SETUP}", file=sys.stderr)
            break
    out["summary"] = ratio_summaries(out, SPEED_KEYS, "frameflow")
    return out


def speed_section(r: dict[str, Any]) -> list[str]:
    """The report's section on speed against FrameFlow's own code."""
    b = r["budget"]
    lines = ["## Speed against FrameFlow's own code", "",
             f"Command: `{r['command']}` (once before it: `{r['setup']}`, which exports FrameFlow into "
             "/tmp/frameflow_ref and makes the venv /tmp/frameflow_venv with the project's torch 2.13.0 and the pins "
             "of its fm.yml; see `bench/frameflow_reference.py`).", ""]
    if not r["frameflow"]:
        return [*lines, f"Not measured: {r.get('frameflow_missing', 'no FrameFlow measurement')}.", ""]
    f0, o0, env = r["frameflow"][0], r["ours"][0], r["environment"]
    lines += [
        f"Run {r['date']} at polydiff commit {r['commit']}; FrameFlow commit {f0['commit'][:12]} (pytorch-lightning "
        f"{f0['versions']['pytorch_lightning']}). {env['cpus']} CPUs, {b['threads']} thread(s); {len(r['ours'])} "
        "round(s) in lockstep, each one measurement of each side, the first of a round alternating.", "",
        "FrameFlow's `FlowModule` with the values of its `configs/base.yaml` (exponential rotation schedule, rate "
        "10; self-conditioning; AdamW) and its `FlowModel` at the widths of our `proteins:frames` recipe (node 64, "
        "edge 32, 4 blocks, 4 IPA heads of 16 channels, 4 query/key and 8 value points). FrameFlow's repository "
        "carries its own copy of OpenFold's Python code, which runs on a CPU as is; `torch_scatter` (a compiled "
        "extension, for a helper not called here) and `wandb` (logging) are stand-in modules. **Equal widths are "
        "not equal work: each FrameFlow block adds a 2-layer sequence transformer and an edge transition that our "
        f"block does not have. So ours also runs with {b['equal_params_blocks']} blocks at the same widths, which "
        "gives it FrameFlow's parameter count** (parameters below).", "",
        f"Training: batch {b['batch']} backbones of {b['length']} residues; {b['warmup']} untimed steps, then the "
        f"median of {b['steps']} (ours: `polydiff.train`, batch start to batch start, with data loading, EMA and "
        "logging; FrameFlow: its `training_step` (corruption, self-conditioning, model, losses), backward and "
        f"AdamW, without Lightning's trainer loop). Sampling: {b['num']} backbones of {b['length']} residues in one "
        f"batch, {o0['sample_steps']} Euler steps (ours: the recipe's sampler; FrameFlow: `Interpolant.sample` with "
        f"its {f0['sample_steps']} steps, including its conversion of the trajectory to atom37); the median of "
        f"{b['sample_repeats']} calls after an untimed one.", "",
        "| | polydiff | FrameFlow (own code) | ours / FrameFlow | at most the reference's |", "|---|---|---|---|---|"]
    names = {"train_step_s": f"training step (s, batch {b['batch']} x {b['length']} residues)",
             "sample_s": f"sampling (s per call of {b['num']} x {b['length']} residues)"}
    for who in ("ours", "ours_equal_params"):
        o = r[who][0]
        label = (f"recipe's {o['blocks']} blocks" if who == "ours" else
                 f"{o['blocks']} blocks, equal parameters")
        lines.append(f"| **ours with the {label}**: parameters | {o['params']:,} | {f0['params']:,} | | |")
        for key, name in names.items():
            v = r["summary"][f"{who}/{key}"]
            lines.append(f"| {name} | {v['ours']:.3f} | {v['frameflow']:.3f} | {v['ratio']:.2f}x | "
                         f"{'yes' if v['at_most'] else 'no'} |")
    return [*lines, ""]


def render(res: dict[str, Any]) -> str:
    lines = header("Protein backbones: SE(3) frame flow matching against a CA-only baseline", res["environment"])
    tr = res["training"]
    lines += ["Training (CPU, one thread each, the two models side by side): "
              + "; ".join(f"{k}: {v['steps']} steps of batch {v['batch']} ({v['trained_by']}"
                          + (f", {v['train_seconds'] / 60:.1f} min" if v.get("train_seconds") else "") + ")"
                          for k, v in tr.items())
              + ". Data: 1000 synthetic backbones of 50-128 residues (helix bundles, hairpins, mixed), the "
              "recipes' networks (IPA 64 wide, pair 32, 4 blocks: FrameFlow used 256 / 128 and 6 blocks on "
              "~20k PDB chains for days on GPUs, so absolute quality is not comparable).", ""]
    q = res["quality"]
    cols = list(q["rows"])
    lines += [f"## Quality at lengths {', '.join(map(str, q['lengths']))} ({q['n_per_length']} samples each)", "",
              "| metric | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for key, label, digits in METRICS:
        vals = [q["rows"][c].get(key, float("nan")) for c in cols]
        lines.append(f"| {label} | " + " | ".join("n/a" if v is None or (isinstance(v, float) and math.isnan(v))
                                                   else f"{v:.{digits}f}" for v in vals) + " |")
    lines += ["", "Seconds per backbone in those runs (batches of one length): "
              + ", ".join(f"{k} {v:.2f}" for k, v in q["seconds_per_backbone_batched"].items()), ""]
    sc = res["scaling"]
    lines += ["## Sampling cost against length (batch 1, 100 Euler steps, one thread)", "",
              "![scaling](proteins_scaling.png)", "",
              "| length | frames s | CA baseline s | frames / CA |", "|---|---|---|---|"]
    for f, c in zip(sc["frames"], sc["ca"], strict=True):
        lines.append(f"| {f['length']} | {f['seconds']:.2f} | {c['seconds']:.2f} | {f['seconds'] / c['seconds']:.2f} |")
    lines += ["", "| length | frames: memory added by sampling (MiB) | peak RSS of the process (MiB) |",
              "|---|---|---|"]
    lines += [f"| {r['length']} | {r['growth_bytes'] / 2**20:.0f} | {r['peak_bytes'] / 2**20:.0f} |"
              for r in sc["memory"]]
    m = sc.get("max_length_16GiB")
    lines += ["", f"Largest length whose sampling fits in 16 GiB (quadratic fit of the added memory, plus the "
              f"process's {max(r['base_bytes'] for r in sc['memory']) / 2**20:.0f} MiB): "
              f"{'n/a' if m is None else f'about {m:,.0f} residues'}.", "",
              "Against FrameFlow's own code: *Speed against FrameFlow's own code* below.", ""]
    lines += ["## Motif scaffolding (20 samples, total length 40-80)", "",
              "| motif | contig | motif RMSD mean (A) | max | within 0.5 A | scaffold mean pairwise TM | clusters |",
              "|---|---|---|---|---|---|---|"]
    for label, s in res["motifs"].items():
        lines.append(f"| {label} | `{s['contig']}` | {s['motif_rmsd_mean']:.3f} | {s['motif_rmsd_max']:.3f} | "
                     f"{s['motif_kept_frac']:.2f} | {s['scaffold_diversity_tm']:.3f} | {s['scaffold_clusters']} |")
    lines += ["", "Published (FrameFlow, Yim et al. 2023, on PDB monomers with ProteinMPNN + ESMFold, not comparable "
              "offline): designability 0.88, diversity 0.53 (pairwise TM), novelty 0.61; designability needs model "
              "weights and is left to the `Designability` hook.", ""]
    if res.get("speed"):
        lines += speed_section(res["speed"])
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=1500, help="training steps per model")
    p.add_argument("--batch", type=int, default=6)
    p.add_argument("--runs", type=Path, help="folder of run folders frames/ and ca/ (reused when trained; "
                                             "frames_x0/ and ca_x0/ are reported too when present)")
    p.add_argument("--per-length", type=int, default=8)
    p.add_argument("--motif-samples", type=int, default=20)
    p.add_argument("--quick", action="store_true", help="a tiny smoke run (not a result)")
    p.add_argument("--plot", type=Path, default=Path("bench/results/proteins.png"))
    p.add_argument("--parts", default="main,speed", help="comma list: main (training, quality, scaling, motifs), "
                   "speed (against FrameFlow's code); parts not run keep their previous results")
    args = p.parse_args(argv)
    parts = set(filter(None, args.parts.split(",")))
    if not parts or parts - {"main", "speed"}:
        p.error(f"--parts: a comma list of main and speed, got {args.parts!r}")
    torch.set_num_threads(1)
    if args.quick:
        args.steps, args.per_length, args.motif_samples = 4, 1, 2
    runs = args.runs or Path("/tmp/polydiff-bench-proteins")
    command = command_line("proteins.py", argv)
    res: dict[str, Any] = {"environment": environment(command)}
    if "speed" in parts:
        import tempfile

        b = SPEED_BUDGETS["quick" if args.quick else "full"]
        with tempfile.TemporaryDirectory() as tmp:
            res["speed"] = {**speed(b, Path(tmp)), "budget": b, "command": command, "environment": res["environment"],
                            "commit": res["environment"]["commit"],
                            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    if "main" not in parts:
        if args.quick:
            print("\n".join(speed_section(res["speed"])))
            return 0
        previous = json.loads((RESULTS / "proteins.json").read_text())
        res = {**previous, "speed": res["speed"]}  # the header stays the previous run's
        publish("proteins", res, render(res))
        return 0
    ckpts, res["training"] = {}, {}
    for name in ("frames", "ca"):
        ckpts[name], res["training"][name] = train(name, args, runs)
    for name in ("frames_x0", "ca_x0"):  # earlier runs with loss.weighting x0, reported when present
        ckpt = runs / name / "checkpoints" / "last.ckpt"
        if ckpt.is_file():
            ckpts[name] = str(ckpt)
            res["training"][name] = {"steps": polydiff.load(ckpt).step, "batch": args.batch,
                                     "trained_by": "the same command with --set loss.weighting=x0"}
    res["quality"] = quality(args, ckpts)
    res["scaling"] = scaling(ckpts, SCALING[:2] if args.quick else SCALING, 4 if args.quick else 100,
                             (50, 100, 150) if args.quick else MEMORY)
    res["motifs"] = motifs(ckpts["frames"], args.motif_samples)
    if not args.quick:
        plot_scaling(res["scaling"], args.plot.with_name("proteins_scaling.png"))
    if "speed" not in parts and (RESULTS / "proteins.json").is_file():
        res["speed"] = json.loads((RESULTS / "proteins.json").read_text()).get("speed")
    md = render(res)
    if args.quick:
        print(md)
        print(json.dumps(res["training"]))
        return 0
    publish("proteins", res, md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
