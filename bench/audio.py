"""Audio benchmark: SoundCTM (student vs teacher on the embedded sound-event set) and the joint
multi-track chorale models (joint vs independent per-track models, arrangement, separation).

Parts (each writes ``RUNS/<part>.json``; ``report`` renders ``bench/results/audio.{json,md}``):

- ``teacher``: train the caption-conditioned EDM teacher (``configs/audio/sound_teacher.yaml``)
  for ``--teacher-minutes``;
- ``student``: distil the SoundCTM student (``soundctm.yaml``: omega ~ U[2, 5], teacher-feature
  distance + DSM, initialised from the teacher) for ``--student-minutes``;
- ``sound``: one sample per test caption (``--num`` captions of the test split) from the teacher
  at 40 Heun steps (its default), the teacher at 1 and 4 steps (Heun, its default sampler, and
  DPM-Solver++(2M), the best few-step ODE solver), and the student at 1 and 4 steps (the ``ctm``
  sampler, gamma 0, and gamma 0.5 at 4 steps); teacher with classifier-free guidance omega = 3.5,
  student fed omega = 3.5 with nu = 1. Metrics: Frechet distance in the in-project classifier's
  embedding (``fd``), caption agreement, mel-spectral distances, all on Griffin-Lim audio; and
  generation speed (spectrograms per second, 2 threads, no vocoder; the vocoder's time apart),
  measured in the same run. Floors: a second real set, and real audio through the vocoder;
- ``chorales``: the joint token model and the independent per-track baseline trained for
  ``--music-minutes`` each; unconditional statistics against the test windows, and arrangement
  (soprano given, alto / tenor / bass generated) on ``--arrange`` test windows; MIDI + WAV files
  written by ``polydiff sample --observed soprano.mid``;
- ``stems``: the joint stems model for ``--stems-minutes``; separation of test mixtures (SI-SNRi,
  MSDM's chunking) next to the oracle (true stem mels as masks);
- ``soundctm_speed`` (not run by default; once before it ``python bench/soundctm_reference.py
  --setup``): the distillation training step and 1- and 2-step sampling against SoundCTM's own
  code at our recipe's size, in lockstep rounds (see ``soundctm_speed``). Alone:
  ``--parts soundctm_speed,report`` (the report keeps the other parts' results).

Usage::

    python bench/audio.py                       # every part (about 75 CPU-minutes)
    python bench/audio.py --parts sound,report  # re-evaluate trained models
    python bench/audio.py --parts soundctm_speed,report   # speed against SoundCTM's code (about 20 min, 1 thread)
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import command_line, environment, header, publish, train_for
from common import recipe as common_recipe

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "configs" / "audio"
OMEGA = 3.5
PARTS = ("teacher", "student", "sound", "chorales", "stems", "soundctm_speed")
# SoundCTM's published numbers are FAD with VGGish on AudioCaps (real recordings, a VAE latent and a neural
# vocoder): a different data set, embedding and vocoder, so no published number is set beside ours.


def recipe(name: str, **changes: Any) -> dict[str, Any]:
    return common_recipe("audio", name, **changes)


train = train_for


def _ckpt(args: argparse.Namespace, name: str) -> Path:
    path = args.runs / name / "checkpoints" / "last.ckpt"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: run the '{name}' part first")
    return path


# -- sound ---------------------------------------------------------------------------------------

def part_teacher(args: argparse.Namespace) -> dict[str, Any]:
    _, tr = train(recipe("sound_teacher"), args.runs / "teacher", args.teacher_minutes, args.threads)
    print("teacher", tr, flush=True)
    return {"train": tr}


def part_student(args: argparse.Namespace) -> dict[str, Any]:
    teacher = str(_ckpt(args, "teacher"))
    cfg = recipe("soundctm", loss={"teacher": teacher}, train={"init": teacher})
    _, tr = train(cfg, args.runs / "student", args.student_minutes, args.threads)
    print("student", tr, flush=True)
    return {"train": tr, "loss": cfg["loss"]}


class Counter(torch.nn.Module):
    """Counts network calls (a doubled CFG batch is one call) around a generator's network."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net, self.calls = net, 0

    def forward(self, *a: Any, **k: Any) -> Any:
        self.calls += 1
        return self.net(*a, **k)


def _settings(kind: str, sampler: str, steps: int, gamma: float | None) -> dict[str, Any]:
    out: dict[str, Any] = {"sampler": sampler, "steps": steps}
    if gamma is not None:
        out["gamma"] = gamma
    if kind == "teacher":
        out["guidance_scale"] = OMEGA
    return out


def part_sound(args: argparse.Namespace) -> dict[str, Any]:
    import polydiff
    from polydiff_audio.modality import evaluate_sounds, mels_to_sounds, reference_sounds, sound_evaluator
    from polydiff_audio.sounds import audio_of, sound_events

    teacher, student = polydiff.load(_ckpt(args, "teacher")), polydiff.load(_ckpt(args, "student"))
    info = teacher.info
    ref = reference_sounds(info)[: args.num]
    captions = [s.caption for s in ref]
    sound_evaluator(info)  # train / load the metric classifier outside the timings
    torch.set_num_threads(args.threads)
    rows: dict[str, Any] = {}
    other = sound_events(len(ref), seed=4242)
    rows["floor: second real set"] = evaluate_sounds(other, ref, info)
    t0 = time.perf_counter()
    from polydiff_audio.sounds import MelSpec, Sound, mel_of

    spec = MelSpec.from_dict(info["mel"])
    voc = [Sound(audio_of(mel_of(s.audio, spec), spec, seed=i), s.sr, s.caption, s.label, s.name)
           for i, s in enumerate(other)]
    vocoder_s = (time.perf_counter() - t0) / len(other)
    rows["floor: second real set through the vocoder"] = evaluate_sounds(voc, ref, info)
    plan = [("teacher", "heun", 40, None), ("teacher", "heun", 4, None), ("teacher", "heun", 1, None),
            ("teacher", "dpm++2m", 4, None), ("teacher", "dpm++2m", 1, None),
            ("student", "ctm", 1, 0.0), ("student", "ctm", 4, 0.0), ("student", "ctm", 4, 0.5)]
    for kind, sampler, steps, gamma in plan:
        gen = teacher if kind == "teacher" else student
        cond = {"caption": captions} if kind == "teacher" else {"caption": captions, "omega": OMEGA}
        opts = _settings(kind, sampler, steps, gamma)
        counter = Counter(gen.net)
        net, gen.net = gen.net, counter
        times = []
        try:
            for rep in range(args.repeats):
                counter.calls = 0
                t0 = time.perf_counter()
                states = gen.sample_states(len(ref), seed=rep, condition=cond, batch_size=args.batch, progress=False,
                                           **opts)
                times.append(time.perf_counter() - t0)
        finally:
            gen.net = net
        calls = counter.calls / max(1, -(-len(ref) // args.batch))
        objs = mels_to_sounds(states["mel"], info, states)
        m = evaluate_sounds(objs, ref, info)
        name = f"{kind} {sampler} {steps} step{'s' if steps > 1 else ''}" + (f" gamma {gamma}" if gamma else "")
        rows[name] = {**m, "nfe": calls, "samples_per_s": len(ref) / statistics.median(times), "kind": kind,
                      "sampler": sampler, "steps": steps, "gamma": gamma}
        if name == "student ctm 1 step":
            student.save(objs[:16], args.runs / "student_samples", overwrite=True, plot=True)
        print(name, {k: round(v, 4) if isinstance(v, float) else v for k, v in rows[name].items()}, flush=True)
    return {"rows": rows, "num": len(ref), "omega": OMEGA, "vocoder_s_per_sample": vocoder_s,
            "repeats": args.repeats, "batch": args.batch, "threads": args.threads}


# -- music ---------------------------------------------------------------------------------------

def _windows(gen: Any) -> Any:
    from polydiff.plugin import load_modality

    data = load_modality("audio").dataset(gen.config.data.name, **gen.config.data.options)
    return data


def part_chorales(args: argparse.Namespace) -> dict[str, Any]:
    import polydiff
    from polydiff_audio.modality import arrangement, rolls_to_chorales
    from polydiff_audio.music import write_midi
    from polydiff_audio.music_metrics import arrangement_accuracy, music_metrics

    out: dict[str, Any] = {}
    for name in ("chorales", "chorales_independent"):
        ckpt, tr = train(recipe(name), args.runs / name, args.music_minutes, args.threads)
        gen = polydiff.load(ckpt)
        data = _windows(gen)
        info = gen.info
        ref = rolls_to_chorales(data.test.tensors["roll"], info)
        train_set = rolls_to_chorales(data.train.tensors["roll"][:: max(1, len(data.train) // 512)], info)
        torch.set_num_threads(args.threads)
        t0 = time.perf_counter()
        objs = gen.generate(args.music_num, seed=0, progress=False)
        sample_s = (time.perf_counter() - t0) / args.music_num
        row: dict[str, Any] = {"train": tr, "unconditional": music_metrics(objs, ref), "sample_s": sample_s}
        if name == "chorales":
            out["floor: training windows"] = music_metrics(train_set, ref)
        # arrangement: soprano given
        arranged, truth = [], []
        for i, c in enumerate(ref[: args.arrange]):
            sop = type(c)(c.tracks[:1], ("soprano",), c.name)
            obs = arrangement(sop, info)
            got = gen.generate(1, seed=i, observed=obs, progress=False)[0]
            arranged.append(got)
            truth.append(c)
        row["arrangement"] = {"accuracy_atb": arrangement_accuracy(arranged, truth, [1, 2, 3]),
                              "soprano_kept": arrangement_accuracy(arranged, truth, [0]),
                              **music_metrics(arranged, truth)}
        out[name] = row
        print(name, json.dumps(row, default=float)[:600], flush=True)
        if name == "chorales":  # listenable files through the command line
            sop_file = args.runs / "soprano.mid"
            write_midi(type(ref[0])(ref[0].tracks[:1], ("soprano",), "melody"), sop_file)
            cmd = [str(Path(sys.executable).parent / "polydiff"), "sample", str(ckpt), "--num", "2", "--observed",
                   str(sop_file), "--out", str(args.runs / "arranged"), "--overwrite", "--plot"]
            r = subprocess.run(cmd, capture_output=True, text=True)
            out["cli_arrangement"] = {"command": "polydiff " + " ".join(cmd[1:]), "rc": r.returncode,
                                      "files": sorted(p.name for p in (args.runs / "arranged").glob("*"))
                                      if r.returncode == 0 else r.stderr[-500:]}
    return out


def part_stems(args: argparse.Namespace) -> dict[str, Any]:
    import polydiff
    from polydiff_audio.modality import tokens_to_stems
    from polydiff_audio.music import StemSpec
    from polydiff_audio.music import separate as mask_separate
    from polydiff_audio.music_metrics import separation_scores
    from polydiff_audio.separation import separate

    ckpt, tr = train(recipe("stems"), args.runs / "stems", args.stems_minutes, args.threads)
    gen = polydiff.load(ckpt)
    data = _windows(gen)
    info = gen.info
    spec = StemSpec.from_dict(info["stem"])
    refs = tokens_to_stems(data.test.tensors["tokens"][: args.separate], info)
    ours, oracle, mix_only = [], [], []
    t0 = time.perf_counter()
    for i, r in enumerate(refs):
        mix = r.mix
        est, _ = separate(gen, mix, n=1, scale=args.sep_scale, seed=i)
        n = min(est.shape[2], r.audio.shape[1])
        ours.append(separation_scores(est[0][:, :n], mix[:n], r.audio[:, :n], spec.sr))
        orc = mask_separate(mix, r.mels, spec)
        oracle.append(separation_scores(orc[:, :n], mix[:n], r.audio[:, :n], spec.sr))
    sep_s = (time.perf_counter() - t0) / max(1, len(refs))

    def mean(rows: list[dict[str, float]]) -> dict[str, float]:
        return {k: float(np.nanmean([r[k] for r in rows])) for k in rows[0]} if rows else {}

    objs = gen.generate(4, seed=0, progress=False)
    gen.save(objs, args.runs / "stems_samples", overwrite=True, plot=True)
    res = {"train": tr, "separation": mean(ours), "oracle_masks": mean(oracle), "pieces": len(refs),
           "scale": args.sep_scale, "separate_s": sep_s, "unconditional": gen.evaluate(objs, refs[:4])}
    del mix_only
    print("stems", json.dumps(res, default=float)[:800], flush=True)
    return res


# -- speed against SoundCTM's own code -------------------------------------------------------------

SOUNDCTM_SPEED = {  # rounds in lockstep; SoundCTM's default training (random Heun steps) measured once
    "full": {"rounds": 3, "steps": 5, "warmup": 1, "batch": 32, "num": 32, "teacher_steps": 8, "sample_repeats": 3,
             "threads": 1, "default_steps": 3, "n": 1200},
    "quick": {"rounds": 1, "steps": 1, "warmup": 0, "batch": 4, "num": 2, "teacher_steps": 2, "sample_repeats": 1,
              "threads": 1, "default_steps": 0, "n": 64},
}
EQUAL_PARAMS = [160, 320, 320]  # MelUNet channels with about the parameters of SoundCTM's U-Net at our size
SOUNDCTM_SETUP = "python bench/soundctm_reference.py --setup"
SOUNDCTM_KEYS = ("train_step_s", "sample_1_s", "sample_2_s")


def _median_timed(fn: Any, repeats: int) -> tuple[float, list[float]]:
    """Median and all wall seconds of ``repeats`` calls ``fn(seed)`` after one untimed call."""
    from common import timed_calls

    wall, _ = timed_calls(fn, repeats)
    return statistics.median(wall), wall


def _our_soundctm_speed(b: dict[str, Any], channels: list[int] | None, work: Path) -> dict[str, Any]:
    """The ``soundctm`` recipe (``channels``: its MelUNet's, None: the recipe's) distilled from a
    ``sound_teacher`` of the same size trained one step: ``polydiff.train`` for ``warmup + steps + 1``
    steps at batch ``batch`` with ``teacher_steps`` Heun steps (batch start to batch start; the last,
    which writes the checkpoint, left out); then ``num`` test captions sampled with the ``ctm``
    sampler at 1 and 2 steps, omega 3.5: at batch 1 with nu = 1 (``guidance_scale`` 1: both halves of
    nu-interpolation, as SoundCTM's sampler, whose only working batch is 1), batched with nu = 1, and
    the recipe's default (1 step, batched, conditional output only)."""
    import itertools

    from common import batch_clock

    import polydiff
    from polydiff_audio.modality import reference_sounds

    model = {} if channels is None else {"channels": list(channels)}
    data = {"n": b["n"]}
    tag = "recipe" if channels is None else "x".join(map(str, channels))
    train_opts = {"batch_size": b["batch"], "progress": False, "threads": b["threads"]}
    teacher_dir = work / f"teacher_{tag}"
    ckpt = teacher_dir / "checkpoints" / "last.ckpt"
    if not ckpt.is_file():  # one teacher per size for all rounds (its training is not timed)
        polydiff.train(recipe("sound_teacher", model=model, data=data,
                              train={**train_opts, "max_steps": 1, "checkpoint_every": 1}), teacher_dir, fresh=True,
                       verbose=False)
    total = b["warmup"] + b["steps"] + 1
    cfg = recipe("soundctm", model=model, data=data, loss={"teacher": str(ckpt), "teacher_steps": b["teacher_steps"]},
                 train={**train_opts, "init": str(ckpt), "max_steps": total, "checkpoint_every": total})
    clock = batch_clock()
    before = torch.get_num_threads()
    try:
        run = polydiff.train(cfg, work / f"student_{tag}", fresh=True, callbacks=[clock], verbose=False)
        gen = polydiff.load(run.checkpoint)
        torch.set_num_threads(b["threads"])
        captions = [s.caption for s in reference_sounds(gen.info)[: b["num"]]]
        cond = {"caption": captions, "omega": OMEGA}
        counter = Counter(gen.net)
        net, gen.net = gen.net, counter
        out: dict[str, Any] = {}
        try:
            for steps in (1, 2):
                for key, batch, nu in ((f"sample_{steps}", 1, {"guidance_scale": 1.0}),
                                       (f"sample_{steps}_batched", len(captions), {"guidance_scale": 1.0})):
                    counter.calls = 0
                    out[f"{key}_s"], out[f"{key}_s_all"] = _median_timed(
                        lambda seed, s=steps, bs=batch, g=nu: gen.sample_states(
                            len(captions), sampler="ctm", steps=s, seed=seed, condition=cond, batch_size=bs,
                            progress=False, **g), b["sample_repeats"])
                    out[f"{key}_nfe_per_sound"] = counter.calls * batch / len(captions) / (b["sample_repeats"] + 1)
            out["sample_default_s"], out["sample_default_s_all"] = _median_timed(
                lambda seed: gen.sample_states(len(captions), seed=seed, condition=cond, batch_size=len(captions),
                                               progress=False), b["sample_repeats"])
        finally:
            gen.net = net
    finally:
        torch.set_num_threads(before)
    wall = [y - x for x, y in itertools.pairwise(clock.wall)][b["warmup"]:]
    cpu = [y - x for x, y in itertools.pairwise(clock.cpu)][b["warmup"]:]
    return {"train_step_s": statistics.median(wall), "train_step_s_all": wall, "train_step_cpu_s_all": cpu,
            "final_loss": run.metrics.get("train/loss"), **out, "params": sum(p.numel() for p in gen.net.parameters()),
            "channels": list(channels or cfg["model"]["channels"]), "num": len(captions)}


def soundctm_speed(b: dict[str, Any], work: Path) -> dict[str, Any]:
    """Training step and 1- / 2-step sampling, polydiff (the recipe's size, and an equal-parameters
    MelUNet) against SoundCTM's own code (bench/soundctm_reference.py in its scratch venv), in
    lockstep: ``rounds`` rounds of one measurement each, the first of a round alternating between
    the two; SoundCTM's default training (random Heun steps) once, in the first round."""
    from common import ratio_summaries, ratio_summary, reference_missing
    from soundctm_reference import REF, VENV, find_reference, measure_soundctm, venv_python

    out: dict[str, Any] = {"ours": [], "ours_equal_params": [], "soundctm": [], "soundctm_default": [],
                           "order": [], "setup": SOUNDCTM_SETUP, "equal_params_channels": EQUAL_PARAMS}
    opts = {k: b[k] for k in ("steps", "warmup", "threads", "batch", "num", "sample_repeats")}
    for r in range(b["rounds"]):
        order = ["ours", "soundctm"] if r % 2 == 0 else ["soundctm", "ours"]
        for who in order:
            if who == "ours":
                out["ours"].append(_our_soundctm_speed(b, None, work))
                out["ours_equal_params"].append(_our_soundctm_speed(b, EQUAL_PARAMS, work))
                continue
            ref = measure_soundctm(**opts, heun_steps=b["teacher_steps"], seed=r)
            if ref is None:
                out["soundctm_missing"] = reference_missing("SoundCTM", venv_python(), VENV, REF, find_reference())
                continue
            out["soundctm"].append(ref)
            if r == 0 and b["default_steps"]:
                out["soundctm_default"].append(measure_soundctm(**{**opts, "steps": b["default_steps"],
                                                                   "sample_repeats": 1}, heun_steps=0, seed=r))
        out["order"].append(order)
        last = {who: out[who][-1] if out[who] else {} for who in ("ours", "soundctm")}
        print(f"[soundctm_speed] round {r}: " + "; ".join(
            f"{k} ours {last['ours'][k]:.3f} s, SoundCTM {last['soundctm'].get(k, float('nan')):.3f} s"
            for k in SOUNDCTM_KEYS), file=sys.stderr, flush=True)
        if "soundctm_missing" in out:
            print(f"[soundctm_speed] {out['soundctm_missing']}: run {SOUNDCTM_SETUP}", file=sys.stderr, flush=True)
            break
    out["summary"] = ratio_summaries(out, SOUNDCTM_KEYS, "soundctm")
    out["summary"]["default/train_step_s"] = ratio_summary((x["train_step_s"] for x in out["ours"]),
                                                           (x["train_step_s"] for x in out["soundctm_default"]),
                                                           "soundctm")
    # SoundCTM's default sampling: ctm_inference.sh's 2 steps at batch 1; ours: the recipe's 1 step, batched
    out["summary"]["default/sample_s"] = ratio_summary((x["sample_default_s"] for x in out["ours"]),
                                                       (x["sample_2_s"] for x in out["soundctm"]), "soundctm")
    return out


def part_soundctm_speed(args: argparse.Namespace) -> dict[str, Any]:
    import tempfile

    b = SOUNDCTM_SPEED["quick" if args.speed_quick else "full"]
    with tempfile.TemporaryDirectory() as tmp:  # fresh teachers and students for every run of the part
        res = soundctm_speed(b, Path(tmp))
    return {**res, "budget": b, "environment": environment(command_line("audio.py", None))}


def soundctm_speed_section(r: dict[str, Any]) -> list[str]:
    """The report's section on speed against SoundCTM's own code."""
    b, env = r["budget"], r["environment"]
    lines = ["## Speed against SoundCTM's own code", "",
             f"Command: `{r['command']}` at commit `{env['commit'][:7]}`, {env['date']} (once before it: "
             f"`{r['setup']}`, which exports SoundCTM into /tmp/soundctm_ref and makes the venv /tmp/soundctm_venv "
             "with the project's torch 2.13.0; see `bench/soundctm_reference.py`).", ""]
    if not r["soundctm"]:
        return [*lines, f"Not measured: {r.get('soundctm_missing', 'no SoundCTM measurement')}.", ""]
    t0, o0, e0 = r["soundctm"][0], r["ours"][0], r["ours_equal_params"][0]
    u = t0["unet"]
    calls = t0["calls_per_step"]
    lines += [
        f"SoundCTM commit {t0['commit'][:12]} (diffusers {t0['versions']['diffusers']}, transformers "
        f"{t0['versions']['transformers']}, accelerate {t0['versions']['accelerate']}): its CTM U-Net, target copy "
        f"and teacher U-Net at our recipe's size (block channels {u['block_out_channels']}, "
        f"{u['layers_per_block']} block per level, cross-attention on the upper levels to "
        f"{u['cross_attention_dim']}-wide caption embeddings) on our state laid out as {tuple(t0['latent'])}: "
        "64 mel bins as channels, 64 frames. "
        f"Ours: the `soundctm` recipe's MelUNet (channels {o0['channels']}) and an equal-parameters MelUNet "
        f"(channels {e0['channels']}), each distilled from a teacher of its size. {b['threads']} thread(s), "
        f"{len(r['ours'])} round(s) in lockstep, the first of a round alternating, {env['cpus']} CPUs. Training: "
        f"batch {b['batch']}, {b['teacher_steps']} guided teacher Heun steps per step on both sides (SoundCTM: "
        f"`num_heun_step {b['teacher_steps']}`, not random), omega ~ U[2, 5] fed to the student, teacher-feature "
        f"distance + DSM (weight 1); {b['warmup']} untimed step(s), then the median of {b['steps']} (ours: "
        "`polydiff.train`, batch start to batch start, with data loading, EMA and logging; SoundCTM: "
        "`CTMTrainLoop.run_step`: student, teacher solve, target, teacher features, DSM with its adaptive weight "
        f"(two extra `autograd.grad`), backward, clipping, RAdam, target EMA; {calls['student']} student, "
        f"{calls['target']} target, {calls['teacher']} teacher and {calls['teacher_features']} teacher-feature "
        f"calls per step). Sampling: {b['num']} captions, omega 3.5, nu 1 (a doubled batch per call), gamma 0; "
        "SoundCTM's `karras_sample` runs at batch 1 only (its omega embedding is sized for the undoubled batch: "
        "batch > 1 fails in `unet_2d_condition.py` line 918), so `ctm_inference.py` loops over the captions at "
        f"batch 1, and ours is timed the same way and batched. Each sampling time is the median of "
        f"{b['sample_repeats']} calls after an untimed one. Stand-ins in SoundCTM's process: a text encoder of "
        "flan-t5-large's width and no layers (random caption embeddings; "
        f"{100 * t0['text_standin_share_train']:.1f} % of its training step, "
        f"{100 * t0['text_standin_share_sample_1']:.1f} % of its 1-step sampling), empty `torchaudio` / `wandb` "
        "modules, and batches handed over as latents (no WAV reading, STFT or VAE on either side).", "",
        "| | polydiff (recipe) | polydiff (equal parameters) | SoundCTM (own code) | recipe / SoundCTM | "
        "equal parameters / SoundCTM |", "|---|---|---|---|---|---|",
        f"| parameters (student network) | {o0['params']:,} | {e0['params']:,} | {t0['params']:,} | | |"]
    names = {"train_step_s": f"training step (s, batch {b['batch']})",
             "sample_1_s": f"1-step sampling, batch 1 (s for {b['num']} sounds)",
             "sample_2_s": f"2-step sampling, batch 1 (s for {b['num']} sounds)"}
    s = r["summary"]
    for key, name in names.items():
        a, q = s[f"ours/{key}"], s[f"ours_equal_params/{key}"]
        lines.append(f"| {name} | {a['ours']:.3f} | {q['ours']:.3f} | {a['soundctm']:.3f} | {a['ratio']:.2f}x | "
                     f"{q['ratio']:.2f}x |")
    for k in (1, 2):
        lines.append(f"| {k}-step sampling, batched (s for {b['num']} sounds) | "
                     f"{statistics.median(x[f'sample_{k}_batched_s'] for x in r['ours']):.3f} | "
                     f"{statistics.median(x[f'sample_{k}_batched_s'] for x in r['ours_equal_params']):.3f} | "
                     "(fails) | | |")
    lines += ["", "Ratios are ours / SoundCTM's (below 1: faster)."]
    dt, ds = s["default/train_step_s"], s["default/sample_s"]
    if dt["ratio"] is not None:
        d0 = r["soundctm_default"][0]
        lines.append(f"Default against default: SoundCTM's training step with its own Heun steps (random 1..39, "
                     f"weighted, seeded; median of {len(d0['train_step_s_all'])} steps, first round only) "
                     f"{dt['soundctm']:.3f} s against our recipe's {dt['ours']:.3f} s ({dt['ratio']:.2f}x).")
    lines += [f"SoundCTM's default sampling (2 steps, batch 1, nu 1) {ds['soundctm']:.3f} s against our recipe's "
              f"(1 step, batched, conditional output only) {ds['ours']:.3f} s for {b['num']} sounds "
              f"({ds['ratio']:.2f}x).", ""]
    return lines


# -- report --------------------------------------------------------------------------------------

def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if v != v:
            return "nan"
        return f"{v:.{digits}f}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)


def part_report(args: argparse.Namespace) -> None:
    from common import RESULTS

    res: dict[str, Any] = {}
    for part in PARTS:
        f = args.runs / f"{part}.json"
        if f.is_file():
            res[part] = json.loads(f.read_text())
    previous = RESULTS / "audio.json"  # parts not in the run folder keep their latest published results
    old = json.loads(previous.read_text()) if previous.is_file() else {}
    kept = [part for part in PARTS if part not in res and part in old]
    res.update({part: old[part] for part in kept})
    env = environment(command_line("audio.py", None))
    res["environment"] = env
    md = header("Audio benchmark", env)
    cmds: dict[str, list[str]] = {}
    for part in PARTS:
        if part in res:
            cmds.setdefault(res[part].get("command", "?"), []).append(part + " (kept from the previous report)"
                                                                       * (part in kept))
    md += ["Parts and the commands that ran them (each part's JSON is in the run folder): "
           + "; ".join(f"{', '.join(parts)}: `{cmd}`" for cmd, parts in cmds.items()), ""]
    if "sound" in res:
        s = res["sound"]
        rows = s["rows"]
        md += ["## SoundCTM on the embedded sound-event set", "",
               f"Teacher trained {res['teacher']['train']['minutes']:.1f} min "
               f"({res['teacher']['train']['steps']} steps), "
               f"student distilled {res['student']['train']['minutes']:.1f} min ({res['student']['train']['steps']} "
               f"steps) from it; {s['num']} samples, one per test caption; teacher with classifier-free guidance "
               f"omega = {s['omega']}, student fed omega = {s['omega']} (nu = 1). FD: Frechet distance of the "
               "in-project classifier's embeddings (not VGGish FAD); agreement: share classified as the caption's "
               "class; within-class spread: the per-entry spread of spectrograms inside a class relative to the "
               "test data's (1 = as varied as the data, near 0 = one average sound per caption); mel L1: set-level "
               "mean-spectrum distance in dB. Speed: spectrograms per second, "
               f"{s['threads']} threads, batch {s['batch']}, median of {s['repeats']}, no vocoder (Griffin-Lim "
               f"adds {s['vocoder_s_per_sample'] * 1000:.0f} ms per sample).", "",
               "| model | NFE | FD | caption agreement | within-class spread vs data | mel L1 dB | mel std L1 dB "
               "| samples / s | speed vs teacher 40 |",
               "|---|---|---|---|---|---|---|---|---|"]
        base = rows.get("teacher heun 40 steps", {}).get("samples_per_s")
        for name, r in rows.items():
            sp = r.get("samples_per_s")
            md.append(f"| {name} | {_fmt(r.get('nfe'), 0)} | {_fmt(r.get('fd'))} | {_fmt(r.get('caption_agreement'))} "
                      f"| {_fmt(r.get('class_spread_ratio'), 2)} | {_fmt(r.get('mel_l1_db'))} "
                      f"| {_fmt(r.get('mel_std_l1_db'))} | {_fmt(sp, 1)} | "
                      f"{_fmt(sp / base, 1) + 'x' if sp and base else '-'} |")
        md += ["", verdict_sound(rows), "",
               "Published numbers: SoundCTM reports FAD with VGGish on AudioCaps (real recordings, a VAE latent, a "
               "neural vocoder); they are not comparable with an in-project embedding on synthetic events, so none are "
               "listed.", ""]
    if "chorales" in res:
        c = res["chorales"]
        keys = ["pitch_class_distance", "note_density", "note_density_gap", "voice_range_rate", "voice_crossing_rate",
                "parallel_fifths", "parallel_octaves"]
        md += ["## Chorales: joint vs independent per-track models", "",
               f"Each model trained {c['chorales']['train']['minutes']:.1f} min; {args.music_num} unconditional "
               "samples against the test windows (2 bars of 16ths, 4 voices); arrangement: soprano of a test window "
               "given, alto / tenor / bass generated (first-hitting sampler).", "",
               "| model | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
        for name in ("floor: training windows", "chorales", "chorales_independent"):
            r = c.get(name, {})
            r = r.get("unconditional", r)
            md.append(f"| {name} | " + " | ".join(_fmt(r.get(k)) for k in keys) + " |")
        md += ["", f"Arrangement of {args.arrange} test windows (soprano given; Bach's own alto / tenor / bass are "
               "the reference for the statistics):", "",
               "| model | training steps | ATB note accuracy | soprano kept | pitch-class distance | voice crossing "
               "| parallel fifths | parallel octaves |", "|---|---|---|---|---|---|---|---|"]
        for name in ("chorales", "chorales_independent"):
            a = c.get(name, {}).get("arrangement", {})
            md.append(f"| {name} | {c.get(name, {}).get('train', {}).get('steps')} | {_fmt(a.get('accuracy_atb'))} | "
                      f"{_fmt(a.get('soprano_kept'))} | {_fmt(a.get('pitch_class_distance'))} | "
                      f"{_fmt(a.get('voice_crossing_rate'))} | {_fmt(a.get('parallel_fifths'))} | "
                      f"{_fmt(a.get('parallel_octaves'))} |")
        a_ref = c.get("chorales", {}).get("arrangement", {})
        bach = [_fmt(a_ref.get(f"{k}_ref")) for k in ("voice_crossing_rate", "parallel_fifths", "parallel_octaves")]
        md.append("| Bach (the test windows) | - | 1.000 | 1.000 | 0.000 | " + " | ".join(bach) + " |")
        md += ["", verdict_music(c)]
        cli = c.get("cli_arrangement", {})
        md += ["", f"Files from the command line (`{cli.get('command', '')}`): {cli.get('files')}", ""]
    if "stems" in res:
        s = res["stems"]
        md += ["## Stems: separation with the joint model", "",
               f"Trained {s['train']['minutes']:.1f} min; {s['pieces']} test mixtures (2 s, 4 rendered voices); "
               f"guidance toward the mixture's mel (scale {s['scale']}), stems by ratio masks on the mixture's STFT. "
               "SI-SNRi with MSDM's protocol (chunks with at least 2 active sources).", "",
               "| method | SI-SNRi (dB) | " + " | ".join(f"voice {k}" for k in range(4)) + " |",
               "|---|---|---|---|---|---|"]
        for name, key in (("joint model, guided", "separation"), ("oracle masks (true stem mels)", "oracle_masks")):
            r = s.get(key, {})
            md.append(f"| {name} | {_fmt(r.get('si_snri'), 2)} | "
                      + " | ".join(_fmt(r.get(f"si_snri_{k}"), 2) for k in range(4)) + " |")
        md.append("")
    if "soundctm_speed" in res:
        md += soundctm_speed_section(res["soundctm_speed"])
    publish("audio", res, "\n".join(md) + "\n")


def verdict_sound(rows: dict[str, Any]) -> str:
    """Whether the student is within a small factor of the 40-step teacher at > 10x the speed, and
    better than the teacher at the same number of steps."""
    t40, s1, s4 = rows.get("teacher heun 40 steps"), rows.get("student ctm 1 step"), rows.get("student ctm 4 steps")
    if not (t40 and s1 and s4):
        return "Verdict: incomplete."
    lines = []
    for s, steps in ((s1, 1), (s4, 4)):
        speed = s["samples_per_s"] / t40["samples_per_s"]
        ratio = s["fd"] / max(t40["fd"], 1e-9)
        same = [r for n, r in rows.items() if r.get("kind") == "teacher" and r.get("steps") == steps]
        best_same = min((r["fd"] for r in same), default=float("nan"))
        lines.append(f"student {steps} step(s): FD {ratio:.2f}x the 40-step teacher's at {speed:.1f}x its speed "
                     f"({'within 2x' if ratio <= 2 else 'NOT within 2x'}, {'>' if speed > 10 else 'NOT >'} 10x); "
                     f"{'better' if s['fd'] < best_same else 'NOT better'} than the teacher's best at {steps} step(s) "
                     f"(FD {best_same:.3f})")
    return "Verdict: " + "; ".join(lines) + "."


def verdict_music(c: dict[str, Any]) -> str:
    """Whether the joint model arranges better than the independent per-track models."""
    j, i = c.get("chorales", {}).get("arrangement", {}), c.get("chorales_independent", {}).get("arrangement", {})
    if not (j and i):
        return "Verdict: incomplete."
    better = [k for k, lower in (("accuracy_atb", False), ("pitch_class_distance", True), ("voice_crossing_rate", True))
              if (j[k] < i[k]) == lower and j[k] != i[k]]
    return (f"Verdict: the joint model's arrangements are better on {len(better)} of 3 (note accuracy, pitch-class "
            f"distance, voice crossings: {', '.join(better) or 'none'}); note accuracy {j['accuracy_atb']:.3f} vs "
            f"{i['accuracy_atb']:.3f} for independent per-track models, which cannot hear the given soprano at all.")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=Path, default=Path("/tmp/audiobench"))
    p.add_argument("--parts", default="teacher,student,sound,chorales,stems,report")
    p.add_argument("--teacher-minutes", type=float, default=15.0)
    p.add_argument("--student-minutes", type=float, default=20.0)
    p.add_argument("--music-minutes", type=float, default=8.0)
    p.add_argument("--stems-minutes", type=float, default=10.0)
    p.add_argument("--num", type=int, default=240, help="sound samples per model (one per test caption)")
    p.add_argument("--batch", type=int, default=60)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--music-num", type=int, default=256)
    p.add_argument("--arrange", type=int, default=64, help="test windows to arrange")
    p.add_argument("--separate", type=int, default=16, help="test mixtures to separate")
    p.add_argument("--sep-scale", type=float, default=1.0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--speed-quick", action="store_true", help="soundctm_speed: tiny sizes (a smoke test of the part)")
    args = p.parse_args(argv)
    args.runs.mkdir(parents=True, exist_ok=True)
    for part in args.parts.split(","):
        if part == "report":
            part_report(args)
            continue
        res = {"teacher": part_teacher, "student": part_student, "sound": part_sound, "chorales": part_chorales,
               "stems": part_stems, "soundctm_speed": part_soundctm_speed}[part](args)
        res["command"] = command_line("audio.py", argv)
        (args.runs / f"{part}.json").write_text(json.dumps(res, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
