"""``polydiff audio separate``, ``polydiff audio evaluator`` and ``polydiff audio autoencoder``.

::

    polydiff audio separate CKPT MIX.wav --out DIR [--num 1] [--scale 1.0] [--steps 40] [--reference DIR]
    polydiff audio evaluator [--n 2400] [--steps 800]
    polydiff audio autoencoder --out ae.pt [--n 1200] [--latent-channels 8] [--downsample 1] [--steps 1500]

``separate`` splits a mixture into its stems with a model trained on ``chorale_stems``
(:mod:`.separation`) and writes ``NAME_<voice>.wav`` and ``NAME_mix.wav`` per separation; with
``--reference`` (a folder of true stems as ``separate`` writes them) it prints SI-SNR
improvements. ``evaluator`` trains (or loads from the cache) the in-project classifier behind the
sound metrics and prints its accuracy on fresh events. ``autoencoder`` trains the small mel
autoencoder of :mod:`.latent` on the training sounds; ``data.latent: ae.pt`` then makes the
sound model work on its codes (SoundCTM works in a VAE latent).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from polydiff.plugin import (
    Command,
    add_output,
    non_negative_float,
    non_negative_int,
    output_file,
    output_folder,
    positive_float,
    positive_int,
)


def _configure_separate(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", type=Path, help="a model trained on chorale_stems")
    p.add_argument("mix", type=Path, help="the mixture (WAV / FLAC; resampled to the model's rate)")
    add_output(p, "folder for the separated stems (and separation.json, what made them)", required=True)
    p.add_argument("--num", type=positive_int, default=1, help="separations to draw (default 1)")
    p.add_argument("--scale", type=non_negative_float, default=1.0,
                   help="guidance scale toward the mixture (default 1)")
    p.add_argument("--std", type=positive_float, default=0.1,
                   help="mixture likelihood std in normalised mel units (default 0.1)")
    p.add_argument("--sampler", default=None, help="sampler (default: the recipe's)")
    p.add_argument("--steps", type=positive_int, default=None, help="sampling steps (default: the recipe's)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed (default 0)")
    p.add_argument("--reference", type=Path, help="true stems (NAME_<voice>.wav + NAME_mix.wav) to score against")


def _run_separate(args: argparse.Namespace) -> int:
    inputs = {"mixture": args.mix, "checkpoint": args.checkpoint, "reference": args.reference}
    with output_folder(args.out, args.overwrite, marker="separation.json", inputs=inputs) as folder:  # whole
        report = _separate_into(args, folder)
    print(f"wrote {report['files']} files to {args.out}")
    if "scores" in report:
        print(json.dumps(report["scores"], indent=1))
    return 0


def _separate_into(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """The separated stems of ``args.mix`` and ``separation.json`` (what made them, and the
    scores against ``args.reference``) written into ``folder``."""
    from polydiff.plugin import atomic_write, load

    from .modality import Stems, read_stems, write_stems
    from .music import StemSpec
    from .music_metrics import separation_scores
    from .separation import separate

    gen = load(args.checkpoint, modality="audio")
    if gen.info.get("kind") != "stems":
        raise ValueError(f"{args.checkpoint}: separation needs a model of rendered stems (dataset chorale_stems); "
                         f"this one models {gen.info.get('kind')!r}")
    sr = StemSpec.from_dict(gen.info["stem"]).sr
    stems, _ = separate(gen, args.mix, n=args.num, scale=args.scale, std=args.std, sampler=args.sampler,
                        steps=args.steps, seed=args.seed)  # reads the file, warns when it is cropped or padded
    voices = tuple(gen.info["voices"])
    objs = [Stems(s, sr, voices, f"{args.mix.stem}_sep{i}") for i, s in enumerate(stems)]
    report: dict[str, Any] = {"mix": str(args.mix), "checkpoint": str(args.checkpoint), "num": args.num,
                              "scale": args.scale, "std": args.std, "seed": args.seed,
                              "files": len(write_stems(objs, folder))}
    if args.reference is not None:
        refs = read_stems(args.reference)
        if not refs:
            raise ValueError(f"{args.reference}: no NAME_mix.wav with its stems")
        piece = args.mix.name[: -len("_mix.wav")] if args.mix.name.endswith("_mix.wav") else args.mix.stem
        match = [r for r in refs if r.name == piece] or (refs if len(refs) == 1 else [])
        if not match:  # never score against another piece's stems
            raise ValueError(f"{args.reference}: no stems of {piece!r} ({piece}_<voice>.wav) among its "
                             f"{len(refs)} pieces ({', '.join(r.name for r in refs[:5])}...)")
        ref = match[0].audio
        n = min(ref.shape[1], stems.shape[2])
        scores = [separation_scores(s[:, :n], ref[:, :n].sum(0), ref[:, :n], sr) for s in stems]
        report["scores"] = {k: float(np.mean([s[k] for s in scores])) for k in scores[0]}
    atomic_write(folder / "separation.json", json.dumps(report, indent=1) + "\n")
    return report


def _configure_evaluator(p: argparse.ArgumentParser) -> None:
    p.add_argument("--n", type=positive_int, default=None, help="training events (default: the evaluator's)")
    p.add_argument("--steps", type=positive_int, default=None, help="training steps (default: the evaluator's)")


def _run_evaluator(args: argparse.Namespace) -> int:
    import torch

    from .evaluator import caption_agreement
    from .modality import EVALUATOR, sound_evaluator
    from .sounds import mel_of, sound_events

    opts = {k: v for k, v in {"n": args.n, "steps": args.steps}.items() if v is not None}
    clf = sound_evaluator({"evaluator": {**EVALUATOR, **opts}})
    fresh = sound_events(600, seed=987_654)
    mels = torch.tensor(np.stack([mel_of(e.audio) for e in fresh]), dtype=torch.float32)
    acc = caption_agreement(clf, mels, torch.tensor([e.label for e in fresh]))
    print(f"evaluator accuracy on 600 fresh events: {acc:.3f}")
    return 0


def _configure_autoencoder(p: argparse.ArgumentParser) -> None:
    add_output(p, "the autoencoder file to write (.pt)", required=True)
    p.add_argument("--n", type=positive_int, default=1200, help="sound events of the embedded set (default 1200)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="the data seed, as in the recipe's data.seed")
    p.add_argument("--files", type=Path, help="train on a folder of the user's sounds instead")
    p.add_argument("--latent-channels", type=positive_int, default=8)
    p.add_argument("--downsample", type=non_negative_int, default=1, help="halvings of the frame rate (default 1)")
    p.add_argument("--width", type=positive_int, default=128)
    p.add_argument("--steps", type=positive_int, default=1500)
    p.add_argument("--threads", type=positive_int, default=2)


def _run_autoencoder(args: argparse.Namespace) -> int:
    import torch

    from .latent import reconstruction_error, save_autoencoder, train_autoencoder
    from .modality import files_dataset, sounds_dataset

    output_file(args.out, args.overwrite)
    torch.set_num_threads(args.threads)
    data = files_dataset(str(args.files), seed=args.seed, conditioning="none") if args.files else \
        sounds_dataset(args.n, seed=args.seed, conditioning="none")
    train, test = data.train.tensors["mel"], data.test.tensors["mel"]  # type: ignore[attr-defined]
    ae = train_autoencoder(train, latent_channels=args.latent_channels, downsample=args.downsample,
                           width=args.width, steps=args.steps, seed=args.seed, progress=True)
    save_autoencoder(ae, args.out)
    print(f"wrote {args.out}: reconstruction error (mean |x - D(E(x))|, normalised units) train "
          f"{reconstruction_error(ae, train):.4f}, test {reconstruction_error(ae, test):.4f}; use it with "
          f"data.latent: {args.out}")
    return 0


COMMANDS = {
    "autoencoder": Command("train the mel autoencoder of a latent-space sound model (data.latent)",
                           _configure_autoencoder, _run_autoencoder),
    "separate": Command("split a mixture into stems with a chorale_stems model", _configure_separate, _run_separate),
    "evaluator": Command("train / load the classifier behind the sound metrics and report its accuracy",
                         _configure_evaluator, _run_evaluator),
}
