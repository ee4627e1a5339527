"""Quick start: the audio modality on its embedded data, offline. (1) SoundCTM in miniature: a
caption-conditioned EDM teacher on log-mel spectrograms of the synthesised sound-event set, a
two-time student distilled from it, both sampled (teacher 40 Heun steps, student 1 step) and
scored; WAV files and a picture. (2) Four-voice chorales from music21's corpus: a joint token
model, an arrangement of a given soprano line, MIDI + WAV files and a picture.

    python examples/audio_quickstart.py [--out runs/audio_quickstart] [--quiet]

About a minute on 2 CPU cores (the first run also parses the chorales and trains the metric
classifier); a toy budget, so the sounds and chorales are rough. The
same from the command line, with the full recipes:

    polydiff train audio:sound_teacher --out runs/sound_teacher
    polydiff train audio:soundctm --out runs/soundctm --set loss.teacher=runs/sound_teacher/checkpoints/last.ckpt \\
        --set train.init=runs/sound_teacher/checkpoints/last.ckpt
    polydiff sample runs/soundctm/checkpoints/last.ckpt --num 8 --condition caption="a low noisy drum hit" --plot
    polydiff train audio:chorales --out runs/chorales
    polydiff sample runs/chorales/checkpoints/last.ckpt --num 4 --observed soprano.mid --plot
"""

from __future__ import annotations

import argparse
from pathlib import Path

import polydiff
from polydiff_audio.modality import arrangement
from polydiff_audio.music import Chorale

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--out", type=Path, default=Path("runs/audio_quickstart"),
                    help="output folder: the runs, samples and pictures (default: runs/audio_quickstart)")
parser.add_argument("--quiet", action="store_true", help="no progress bars")
args = parser.parse_args()
show = not args.quiet

train = {"batch_size": 16, "lr": 1e-3, "warmup": 20, "threads": 2, "progress": show}
sounds = {"name": "sounds", "n": 160, "conditioning": "caption", "evaluator": {"n": 480, "steps": 150}}
unet = {"name": "unet", "channels": [32, 64], "emb_dim": 64, "attention": False}

# -- (1) SoundCTM: teacher, then a student distilled from it --------------------------------------
teacher_recipe = {"modality": "audio", "data": sounds, "model": unet,
                  "loss": {"weighting": "edm", "time_density": "lognormal", "cond_drop": 0.1},
                  "train": {**train, "max_steps": 250, "checkpoint_every": 250},
                  "sample": {"num": 8, "sampler": "heun", "steps": 40}}
teacher_run = polydiff.train(teacher_recipe, args.out / "teacher", fresh=True, verbose=False)
student_recipe = {"modality": "audio", "data": sounds, "model": {**unet, "two_time": True},
                  "loss": {"objective": "soundctm", "teacher": str(teacher_run.checkpoint), "teacher_steps": 2},
                  "train": {**train, "lr": 2e-4, "max_steps": 24, "checkpoint_every": 24,
                            "init": str(teacher_run.checkpoint), "init_partial": True},
                  "sample": {"num": 8, "sampler": "ctm", "steps": 1}}
student_run = polydiff.train(student_recipe, args.out / "student", fresh=True, verbose=False)

captions = ["a short high sine beep", "a low noisy drum hit", "a rising chirp from a high tone", "two quick clicks"] * 2
teacher, student = polydiff.load(teacher_run.checkpoint), polydiff.load(student_run.checkpoint)
for name, gen, opts in (("teacher, 40 Heun steps, guidance 3.5", teacher, {"guidance_scale": 3.5}),
                        ("student, 1 step, omega 3.5", student, {})):
    cond = {"caption": captions, **({} if gen is teacher else {"omega": 3.5})}
    out = gen.generate(len(captions), seed=0, condition=cond, progress=show, **opts)
    m = gen.evaluate(out)
    folder = args.out / ("teacher" if gen is teacher else "student") / "samples"
    gen.save(out, folder, overwrite=True, plot=True)
    print(f"{name}: FD {m['fd']:.1f}, caption agreement {m['caption_agreement']:.2f}, "
          f"mel L1 {m['mel_l1_db']:.1f} dB -> {folder}")

# -- (2) chorales: a joint model of the four voices, and an arrangement of a soprano line ------------
chorale_recipe = {"modality": "audio", "data": {"name": "chorales", "n_chorales": 24, "encoding": "tokens"},
                  "model": {"name": "transformer", "hidden": 64, "layers": 2, "heads": 4},
                  "train": {**train, "batch_size": 32, "max_steps": 400, "checkpoint_every": 400},
                  "sample": {"num": 4, "sampler": "first_hitting", "steps": 128}}
run = polydiff.train(chorale_recipe, args.out / "chorales", fresh=True, verbose=False)
gen = polydiff.load(run.checkpoint)
pieces = gen.generate(4, seed=0, progress=show)
m = gen.evaluate(pieces)
gen.save(pieces, args.out / "chorales" / "samples", overwrite=True, plot=True)
print(f"chorales: pitch-class distance {m['pitch_class_distance']:.3f}, voice crossings {m['voice_crossing_rate']:.3f} "
      f"(data {m['voice_crossing_rate_ref']:.3f}) -> {args.out / 'chorales' / 'samples'}")
melody = gen.reference()[0]
given = arrangement(Chorale(melody.tracks[:1], ("soprano",), "melody"), gen.info)
arranged = gen.generate(2, seed=1, observed=given, progress=show)
gen.save(arranged, args.out / "chorales" / "arranged", overwrite=True, plot=True)
print(f"arranged alto / tenor / bass under a test soprano (kept exactly: "
      f"{all((a.tracks[0] == melody.tracks[0]).all() for a in arranged)}) -> {args.out / 'chorales' / 'arranged'}")
