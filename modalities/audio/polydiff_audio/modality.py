"""The ``audio`` modality: text-to-sound on log-mel spectrograms (an EDM teacher and its SoundCTM
student) and a joint multi-track model of four-voice chorales (symbolic pitch tokens, continuous
one-hot rolls, or a mel spectrogram per rendered stem) for generation, arrangement and source
separation.

The dataset picks the kind of state (``info["kind"]``):

- ``sound`` (``sounds``, the default; ``files``): ``mel`` (B, n_mels, frames) normalised log-mel
  in [-1, 1] under EDM's schedule; conditions (``data.conditioning``) ``caption`` (a tokenised
  caption, a bag of words), ``label`` (the sound class) or ``none``; samples become
  :class:`~polydiff_audio.sounds.Sound` (audio by Griffin-Lim) and WAV files;
- ``chorale`` (``chorales``): ``roll`` (B, K*T), K voices x T sixteenth-note steps of pitch tokens
  (``encoding: tokens``, masked discrete diffusion) or their one-hot vectors (``encoding: onehot``,
  Gaussian); samples become :class:`~polydiff_audio.music.Chorale` and MIDI + WAV files;
- ``stems`` (``chorale_stems``): ``stems`` (B, K, n_mels, frames), one mel per voice rendered by the
  in-project synthesiser; samples become :class:`Stems` and WAV files per stem and for the mix.

Arrangement (some voices given, the others generated) is the core's inpainting through
:func:`arrangement`, or ``polydiff sample CKPT --observed soprano.mid``; separation of a mixture
into its stems is :func:`separate` (``polydiff audio separate``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import numbers
import os
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from polydiff.plugin import (
    Absorbing,
    DataBundle,
    FieldSpec,
    GaussianProcess,
    Modality,
    Observation,
    Plain,
    TensorStates,
    atomic_write,
    cache_dir,
    check_info,
    condition_values,
    sample_name,
    unique_stems,
)

from . import soundctm  # registers the soundctm objective and its distance

KINDS = ("sound", "chorale", "stems")
CONDITIONING = ("caption", "label", "none")
ENCODINGS = ("tokens", "onehot")
OMEGA = soundctm.OMEGA
# the state entry holding each generated sample's seed: its Griffin-Lim initial phase is drawn from it, so a
# sound does not depend on its place in a chunk (batch size, --processes)
VOCODER_SEED = "vocoder_seed"
EVALUATOR = {"n": 2400, "seed": 1234, "steps": 800}  # the metric classifier's training set and steps


@dataclass
class Stems:
    """Rendered (or generated) stems of one piece: ``audio`` (K, n) float32 at ``sr``, one row per
    voice in ``names``; ``mels`` the normalised stem spectrograms they came from, when known."""

    audio: np.ndarray
    sr: int
    names: tuple[str, ...]
    name: str = ""
    mels: np.ndarray | None = None

    @property
    def mix(self) -> np.ndarray:
        """The mixture: the sum of the stems."""
        return self.audio.sum(0)


# -- data: sounds ------------------------------------------------------------------------------------

def _split(n: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    n_test = max(1, round(test_fraction * n))
    if n - n_test < 1:
        raise ValueError(f"need at least 2 items to split into training and test data, got {n}")
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def _conditions(conditioning: str) -> dict[str, Any]:
    from .sounds import CLASSES, VOCAB

    if conditioning not in CONDITIONING:
        raise ValueError(f"data.conditioning must be one of {', '.join(CONDITIONING)}, got {conditioning!r}")
    if conditioning == "caption":
        return {"caption": {"kind": "tokens", "num_classes": len(VOCAB)}}
    if conditioning == "label":
        return {"label": {"kind": "class", "num_classes": len(CLASSES)}}
    return {}


_AUTOENCODERS: dict[str, Any] = {}


def autoencoder(info: Mapping[str, Any]) -> Any:
    """The mel autoencoder named by ``info["latent"]["path"]`` (loaded once per process)."""
    from .latent import load_autoencoder

    path = str(info["latent"]["path"])
    if path not in _AUTOENCODERS:
        _AUTOENCODERS[path] = load_autoencoder(path).requires_grad_(False)
    return _AUTOENCODERS[path]


def _latent_info(path: str | None, spec: Any) -> dict[str, Any] | None:
    """``info["latent"]``: the autoencoder's file and its code shape (None: the model works on mels)."""
    if path is None:
        return None
    ae = autoencoder({"latent": {"path": str(Path(path).resolve())}})
    if ae.config["n_mels"] != spec.n_mels or spec.frames % 2 ** ae.config["downsample"]:
        raise ValueError(f"{path}: the autoencoder takes {ae.config['n_mels']} mel bands and frames divisible by "
                         f"{2 ** ae.config['downsample']}; the data has {spec.n_mels} x {spec.frames}")
    return {"path": str(Path(path).resolve()), "n_mels": int(ae.config["latent_channels"]),
            "frames": spec.frames // 2 ** int(ae.config["downsample"])}


def sound_states(sounds: Sequence[Any], info: Mapping[str, Any]) -> TensorStates:
    """Sounds -> states: ``mel``, ``caption`` (tokens) and ``label`` (-1 unknown)."""
    from .sounds import MelSpec, caption_label, mel_of, tokenize

    spec = MelSpec.from_dict(info["mel"])
    mels = np.stack([mel_of(s.audio, spec) for s in sounds]) if sounds else np.zeros((0, spec.n_mels, spec.frames))
    x = torch.tensor(mels, dtype=torch.float32)
    if info.get("latent"):
        with torch.no_grad():
            x = autoencoder(info).encode(x)
    labels = [s.label if s.label >= 0 else caption_label(s.caption) for s in sounds]
    return TensorStates(mel=x,
                        caption=tokenize([s.caption for s in sounds], int(info["caption_length"])),
                        label=torch.tensor(labels, dtype=torch.long))


def _sound_bundle(train: Sequence[Any], test: Sequence[Any], info: dict[str, Any], conditioning: str,
                  caption_length: int, mel: Mapping[str, Any], evaluator: Mapping[str, Any] | None = None,
                  latent: str | None = None) -> DataBundle:
    from .sounds import CLASSES, VOCAB, MelSpec

    spec = MelSpec.from_dict({**MelSpec().to_dict(), **dict(mel)})
    info = check_info({**info, "kind": "sound", "mel": spec.to_dict(), "conditions": _conditions(conditioning),
                       "conditioning": conditioning, "caption_length": int(caption_length), "vocab": list(VOCAB),
                       "classes": list(CLASSES), "evaluator": {**EVALUATOR, **dict(evaluator or {})},
                       "latent": _latent_info(latent, spec)})
    test_states = sound_states(test, info)
    return DataBundle(sound_states(train, info), test_states, test_states, info)


def sounds_dataset(n: int = 1200, seed: int = 0, test_fraction: float = 0.2, conditioning: str = "caption",
                   caption_length: int = 12, mel: Mapping[str, Any] | None = None,
                   evaluator: Mapping[str, Any] | None = None, latent: str | None = None) -> DataBundle:
    """The embedded sound-event set (:func:`.sounds.sound_events`: beeps, chirps, drum hits, clicks
    and buzzes, low or high, with captions drawn from their attributes), ``n`` events from
    ``seed``, split ``1 - test_fraction`` / ``test_fraction``. ``evaluator``: the metric
    classifier's training set size and steps (``{"n": 2400, "seed": 1234, "steps": 800}``);
    ``latent``: a mel autoencoder file (``polydiff audio autoencoder``): the state is then its
    codes, as SoundCTM works in a VAE latent, decoded to mels before the vocoder."""
    from .sounds import sound_events

    events = sound_events(n, seed=seed)
    tr, te = _split(n, test_fraction, seed)
    info = {"dataset": "sounds", "n": n, "seed": seed, "test_fraction": test_fraction}
    return _sound_bundle([events[i] for i in tr], [events[i] for i in te], info, conditioning, caption_length,
                         mel or {}, evaluator, latent)


def files_dataset(path: str, seed: int = 0, test_fraction: float = 0.2, conditioning: str = "caption",
                  caption_length: int = 12, mel: Mapping[str, Any] | None = None,
                  evaluator: Mapping[str, Any] | None = None, latent: str | None = None) -> DataBundle:
    """Users' sounds: a folder of WAV / FLAC / OGG files with an optional ``captions.csv``
    (:func:`.sounds.read_sounds`), split ``1 - test_fraction`` / ``test_fraction``."""
    from .sounds import MelSpec, read_sounds

    spec = MelSpec.from_dict({**MelSpec().to_dict(), **dict(mel or {})})
    sounds = read_sounds(Path(path), spec)
    if conditioning == "caption" and not any(s.caption for s in sounds):
        raise ValueError(f"{path}: no sound has a caption (captions.csv) to condition on; use data.conditioning: none")
    tr, te = _split(len(sounds), test_fraction, seed)
    info = {"dataset": "files", "path": str(path), "seed": seed, "test_fraction": test_fraction}
    return _sound_bundle([sounds[i] for i in tr], [sounds[i] for i in te], info, conditioning, caption_length,
                         spec.to_dict(), evaluator, latent)


def reference_sounds(info: Mapping[str, Any]) -> list[Any]:
    """The real test sounds of a sound dataset (rebuilt from ``info``: the same seed and split)."""
    from .sounds import MelSpec, read_sounds, sound_events

    if info.get("dataset") == "files":
        items = read_sounds(Path(info["path"]), MelSpec.from_dict(info["mel"]))
    else:
        items = sound_events(int(info["n"]), seed=int(info["seed"]))
    _, te = _split(len(items), float(info["test_fraction"]), int(info["seed"]))
    return [items[i] for i in te]


# -- data: chorales ----------------------------------------------------------------------------------

def _chorale_split(n_chorales: int | None, test_fraction: float, seed: int) -> tuple[list[Any], list[Any]]:
    from .music import load_chorales

    chorales, seen = [], set()
    for c in load_chorales(n_chorales):  # the corpus has exact duplicates (bwv197.7-a = bwv398, bwv274 = bwv62.6):
        key = c.tracks.tobytes()  # one copy each, so no piece is in both splits
        if key not in seen:
            seen.add(key)
            chorales.append(c)
    tr, te = _split(len(chorales), test_fraction, seed)
    return [chorales[i] for i in tr], [chorales[i] for i in te]


def onehot(tokens: Tensor, vocab: int) -> Tensor:
    """Tokens (..., L) -> continuous one-hot vectors (..., L, vocab) in {-1, 1}."""
    return torch.nn.functional.one_hot(tokens.long(), vocab).float() * 2 - 1


def roll_states(tokens: np.ndarray, info: Mapping[str, Any]) -> TensorStates:
    """(N, K, T) tokens -> ``roll`` states in the dataset's encoding, with the transposition
    range of each window (``shift_lo`` / ``shift_hi``) for the seeded augmentation."""
    from .music import shift_range

    rng = np.array([shift_range(w) for w in tokens]).reshape(-1, 2) if len(tokens) else np.zeros((0, 2), int)
    flat = torch.tensor(tokens.reshape(len(tokens), -1), dtype=torch.long)
    roll = onehot(flat, int(info["music"]["vocab"])) if info["music"]["encoding"] == "onehot" else flat
    return TensorStates(roll=roll, shift_lo=torch.tensor(rng[:, 0], dtype=torch.long),
                        shift_hi=torch.tensor(rng[:, 1], dtype=torch.long))


def transpose_augment(info: Mapping[str, Any]) -> Callable[[dict[str, Tensor], torch.Generator], dict[str, Tensor]]:
    """The seeded augmentation of chorale windows: each sample is transposed by a whole number
    of semitones drawn uniformly from its range (every pitch stays a token), rests unchanged."""
    vocab, encoding = int(info["music"]["vocab"]), info["music"]["encoding"]

    def augment(batch: dict[str, Tensor], generator: torch.Generator) -> dict[str, Tensor]:
        out = dict(batch)
        lo, hi = out.pop("shift_lo"), out.pop("shift_hi")
        u = torch.rand(len(lo), generator=generator).to(lo.device)
        k = lo + (u * (hi - lo + 1).to(u.dtype)).long().clamp(max=(hi - lo))
        roll = out["roll"]
        tok = roll.argmax(-1) if encoding == "onehot" else roll
        moved = torch.where(tok > 0, tok + k[:, None], tok).clamp(0, vocab - 1)
        out["roll"] = onehot(moved, vocab) if encoding == "onehot" else moved
        return out

    return augment


def chorales_dataset(n_chorales: int | None = None, length: int = 32, hop: int = 16, encoding: str = "tokens",
                     test_fraction: float = 0.1, seed: int = 0, transpose: bool = True) -> DataBundle:
    """The Bach chorales that ship with music21 (:func:`.music.load_chorales`; the first
    ``n_chorales``), as windows of ``length`` sixteenth notes every ``hop``; the chorales (not the
    windows) are split ``1 - test_fraction`` / ``test_fraction``; ``transpose``: the seeded
    transposition augmentation."""
    from .music import LOW, VOCAB, VOICES, windows

    if encoding not in ENCODINGS:
        raise ValueError(f"data.encoding must be one of {', '.join(ENCODINGS)}, got {encoding!r}")
    train, test = _chorale_split(n_chorales, test_fraction, seed)
    info = check_info({"kind": "chorale", "dataset": "chorales", "n_chorales": n_chorales, "seed": seed,
                       "test_fraction": test_fraction, "length": length, "hop": hop, "voices": list(VOICES),
                       "low": LOW, "music": {"encoding": encoding, "tracks": len(VOICES), "length": length,
                                             "vocab": VOCAB},
                       "vocabularies": {"roll": ["rest", *[str(p) for p in range(LOW, LOW + VOCAB - 1)]]}})
    tr, te = windows(train, length, hop), windows(test, length, length)
    if not len(tr) or not len(te):
        raise ValueError(f"chorales: {len(tr)} training and {len(te)} test windows of {length} steps; use more "
                         "chorales or shorter windows")
    test_states = roll_states(te, info)
    return DataBundle(roll_states(tr, info), test_states, test_states, info,
                      augment=transpose_augment(info) if transpose else None)


def stems_dataset(n_chorales: int | None = 60, length: int = 16, hop: int = 8, test_fraction: float = 0.1,
                  seed: int = 0) -> DataBundle:
    """Chorale windows of ``length`` sixteenths rendered by the in-project synthesiser (a timbre
    per voice, :func:`.music.render`) as one normalised mel spectrogram per stem; the tokens are
    kept (``tokens``) to score arrangement and separation against the true stems."""
    from .music import VOICES, StemSpec, windows

    spec = StemSpec()
    train, test = _chorale_split(n_chorales, test_fraction, seed)
    tr, te = windows(train, length, hop), windows(test, length, length)
    if not len(tr) or not len(te):
        raise ValueError(f"chorale_stems: {len(tr)} training and {len(te)} test windows; use more chorales")
    frames = length * spec.frames_per_step(0.125)
    info = check_info({"kind": "stems", "dataset": "chorale_stems", "n_chorales": n_chorales, "seed": seed,
                       "test_fraction": test_fraction, "length": length, "hop": hop, "voices": list(VOICES),
                       "stem": spec.to_dict(), "step_seconds": 0.125,
                       "music": {"encoding": "stems", "tracks": len(VOICES), "length": length,
                                 "n_mels": spec.n_mels, "frames": frames}})
    test_states = stem_states(te, info)
    return DataBundle(stem_states(tr, info), test_states, test_states, info)


def stem_states(tokens: np.ndarray, info: Mapping[str, Any]) -> TensorStates:
    """(N, K, T) tokens -> rendered stem mels ``stems`` (N, K, M, F) plus the ``tokens``."""
    from .music import StemSpec, from_tokens, render, stem_mels

    spec = StemSpec.from_dict(info["stem"])
    mels = np.stack([stem_mels(render(from_tokens(w), spec.sr, info["step_seconds"]), spec) for w in tokens])
    return TensorStates(stems=torch.tensor(mels, dtype=torch.float32), tokens=torch.tensor(tokens, dtype=torch.long))


# -- the modality --------------------------------------------------------------------------------------

def _network(kind: str) -> Callable[..., nn.Module]:
    def build(info: Mapping[str, Any], fields: Mapping[str, FieldSpec], **options: Any) -> nn.Module:
        from .nets import MelUNet, TrackTransformer

        if kind == "unet":
            if info.get("kind") != "sound":
                raise ValueError(f"network 'unet' models sounds; this data is {info.get('kind')!r} (use transformer)")
            return MelUNet(info, fields, **options)
        if info.get("kind") not in ("chorale", "stems"):
            raise ValueError(f"network 'transformer' models tracks; this data is {info.get('kind')!r} (use unet)")
        return TrackTransformer(info, fields, **options)

    build.__name__ = f"{kind}_network"
    build.__doc__ = {"unet": "1-D U-Net over mel frames (MelUNet; two_time: true for a SoundCTM student)",
                     "transformer": "joint multi-track transformer (TrackTransformer; cross_track: false for "
                                    "independent per-track models)"}[kind]
    return build


class AudioModality(Modality):
    """Sound and music (see the module docstring)."""

    name = "audio"
    description = ("sound and music: caption-conditioned log-mel diffusion with SoundCTM distillation; joint "
                   "multi-track chorale models (tokens, one-hot or rendered stems) for generation, arrangement and "
                   "separation; WAV / FLAC / MIDI")

    def datasets(self) -> dict[str, Callable[..., DataBundle]]:
        return {"sounds": sounds_dataset, "chorales": chorales_dataset, "chorale_stems": stems_dataset,
                "files": files_dataset}

    def networks(self) -> dict[str, Callable[..., nn.Module]]:
        return {"unet": _network("unet"), "transformer": _network("transformer")}

    def network(self, name: str | None, info: Mapping[str, Any], fields: Mapping[str, FieldSpec],
                **options: Any) -> nn.Module:
        if name is None:
            name = "unet" if info.get("kind") == "sound" else "transformer"
        return super().network(name, info, fields, **options)

    def fields(self, info: Mapping[str, Any], **process: Any) -> dict[str, FieldSpec]:
        """Sounds and stems: EDM's schedule (``process`` options: sigma_min, sigma_max, sigma_data,
        p_mean, p_std, rho; sigma_data 0.5 by default), x0-prediction; chorale tokens: masked
        (absorbing) discrete diffusion; one-hot rolls: EDM like the others."""
        kind = info.get("kind")
        if kind not in KINDS:
            raise ValueError(f"info['kind'] must be one of {', '.join(KINDS)}, got {kind!r}")
        edm = {"sigma_data": 0.5, **process}
        if kind == "sound":
            return {"mel": FieldSpec(GaussianProcess("edm", **edm), Plain(), "x0")}
        if kind == "stems":
            return {"stems": FieldSpec(GaussianProcess("edm", **edm), Plain(), "x0")}
        if info["music"]["encoding"] == "tokens":
            if process:
                raise ValueError(f"token chorales take no process options (got {', '.join(process)})")
            return {"roll": FieldSpec(Absorbing(int(info["music"]["vocab"])), Plain())}
        return {"roll": FieldSpec(GaussianProcess("edm", **edm), Plain(), "x0")}

    def prior_state(self, n: int, info: Mapping[str, Any], generator: torch.Generator | None = None,
                    condition: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Shapes of ``n`` new samples. Sounds take ``caption="a high beep"`` (one caption or one
        per sample) or ``label=3`` / ``label=beep_high`` as the model was conditioned, and ``omega``
        (the guidance scale a SoundCTM student was distilled with; 3.5 when left out)."""
        condition = dict(condition or {})
        kind = info["kind"]
        spec: dict[str, Any] = {}
        if kind == "sound":
            shape = info.get("latent") or info["mel"]
            spec["mel"] = (n, int(shape["n_mels"]), int(shape["frames"]))
            spec.update(_sound_conditions(n, info, condition))
        elif kind == "chorale":
            m = info["music"]
            width = int(m["tracks"]) * int(m["length"])
            spec["roll"] = (n, width) if m["encoding"] == "tokens" else (n, width, int(m["vocab"]))
        else:
            m = info["music"]
            spec["stems"] = (n, int(m["tracks"]), int(m["n_mels"]), int(m["frames"]))
        if condition:
            raise ValueError(f"unknown condition {sorted(condition)[0]!r} for {kind} samples"
                             + (": sounds take caption, label or omega" if kind == "sound" else
                                ": music is conditioned on given tracks (--observed FILE.mid)"))
        return spec

    def sample(self, net: nn.Module, fields: Mapping[str, FieldSpec], spec: Mapping[str, Any], settings: Any,
               control: Any, *, seed: Tensor, device: torch.device) -> dict[str, Tensor]:
        """The core's loop; classifier-free guidance never drops ``omega`` (a student's
        nu-interpolation compares captioned and caption-free outputs at the same omega)."""
        if OMEGA in spec and getattr(net, "two_time", None) is False:  # a one-time network has no omega input
            raise ValueError("condition omega: only a SoundCTM student (a two-time network) takes a guidance "
                             "strength omega; for this model use --guidance-scale")
        _check_observed(getattr(control, "observed", None))
        keys = getattr(control, "condition_keys", None)
        if keys is not None and OMEGA in keys:
            control = dataclasses.replace(control, condition_keys=[k for k in keys if k != OMEGA])
        out = super().sample(net, fields, spec, settings, control, seed=seed, device=device)
        return {**out, VOCODER_SEED: seed.detach().cpu()}  # each sound's Griffin-Lim phase from its own seed

    def to_native(self, state: Mapping[str, Tensor], info: Mapping[str, Any]) -> list[Any]:
        """Sounds (audio by Griffin-Lim from the mel), chorales, or stems (Griffin-Lim per stem)."""
        kind = info["kind"]
        if kind == "sound":
            return mels_to_sounds(state["mel"], info, state)
        if kind == "chorale":
            return rolls_to_chorales(state["roll"], info)
        return mels_to_stems(state["stems"], info)

    def native_types(self, info: Mapping[str, Any]) -> tuple[type, ...]:
        """Sounds, chorales or :class:`Stems` as the model's kind says (any of them for files
        evaluated without a model)."""
        from .music import Chorale
        from .sounds import Sound

        kinds: dict[str, tuple[type, ...]] = {"sound": (Sound,), "chorale": (Chorale,), "stems": (Stems,)}
        return kinds.get(info.get("kind", ""), (Sound, Chorale, Stems))

    def from_native(self, objects: Sequence[Any], info: Mapping[str, Any]) -> dict[str, Tensor]:
        kind = info["kind"]
        objs = list(objects)
        if kind == "sound":
            return sound_states(objs, info).get_batch(torch.arange(len(objs)))
        if kind == "chorale":
            from .music import to_tokens

            toks = np.stack([to_tokens(_fit(c.tracks, int(info["music"]["length"]))) for c in objs])
            return roll_states(toks, info).get_batch(torch.arange(len(objs)))
        from .music import StemSpec, stem_mels

        spec = StemSpec.from_dict(info["stem"])
        return {"stems": torch.tensor(np.stack([stem_mels(s.audio, spec) for s in objs]), dtype=torch.float32)}

    def reference(self, data: DataBundle) -> list[Any]:
        """The real test items: sounds as generated or read (not re-synthesised from their mels),
        chorale windows as tokens, stems rendered from the true notes."""
        if data.info.get("kind") == "sound":
            return reference_sounds(data.info)
        if data.info.get("kind") == "stems":
            ds = self.reference_split(data)
            return tokens_to_stems(ds.tensors["tokens"], data.info)  # type: ignore[attr-defined]
        return super().reference(data)

    # -- files -------------------------------------------------------------------------------------
    def write(self, objects: Sequence[Any], out_dir: Path) -> list[Path]:
        """Sounds: one WAV each and ``captions.csv``; chorales: one MIDI (a track per voice) and one
        rendered WAV each; stems: a WAV per stem and one for the mix."""
        from .music import Chorale

        objs, out = list(objects), Path(out_dir)
        if objs and isinstance(objs[0], Chorale):
            return write_chorales(objs, out)
        if objs and isinstance(objs[0], Stems):
            return write_stems(objs, out)
        from .sounds import write_sounds

        return write_sounds(objs, out)

    def read(self, path: Path) -> list[Any]:
        """Native files -> objects. A file: MIDI (``.mid`` / ``.midi``) -> a chorale, audio -> a
        sound. A folder (searched recursively, hidden files ignored) is read as one kind
        (:func:`folder_kind`): MIDI files -> chorales; complete stem sets (``NAME_mix.wav``
        with every ``NAME_<voice>.wav``) -> :class:`Stems`; else the audio files (WAV / FLAC /
        OGG, with an optional ``captions.csv``) -> sounds. Files of another kind are named in one
        warning."""
        from .sounds import read_sounds

        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such file or folder")
        if path.is_file():
            if path.suffix.lower() in MIDI_SUFFIXES:
                from .music import read_midi

                return [read_midi(path)]
            return read_sounds(path)
        kind, chosen, ignored, why = folder_kind(path)
        if ignored:
            warnings.warn(f"{path}: {why}; ignored {len(ignored)} file(s): {_listing(ignored, path)}", stacklevel=2)
        if kind == "midi":
            from .music import read_midi

            return [read_midi(p) for p in chosen]
        if kind == "stems":
            return read_stems(path, [p.name[: -len("_mix.wav")] for p in chosen])
        return read_sounds(path)

    # -- metrics -----------------------------------------------------------------------------------
    def evaluate(self, objects: Sequence[Any], reference: Sequence[Any], info: Mapping[str, Any]) -> dict[str, float]:
        """Sounds: Frechet distance in the in-project classifier's embedding (``fd``), caption
        agreement, mel-spectral distances; chorales: the music statistics of
        :func:`.music_metrics.music_metrics`; stems: mel-spectral distances per stem."""
        from .music import Chorale

        objs, ref = list(objects), list(reference)
        if not objs:
            raise ValueError("no objects to evaluate")
        if not ref:
            raise ValueError("the reference holds no objects to compare with")
        mine, theirs = _what(objs), _what(ref)
        if mine != theirs:
            recipe = {"chorales": "audio:chorales", "stems": "audio:stems", "sounds": "audio:sound_teacher"}
            hint = next((f" (--reference FILES, or --config {r} for its data)" for k, r in recipe.items()
                         if k in mine), "")
            raise ValueError(f"the evaluated files are {mine} but the reference is {theirs}; give a reference of "
                             f"the same kind{hint}")
        if isinstance(objs[0], Chorale):
            from .music_metrics import music_metrics

            _check_voices(objs, "")
            _check_voices(ref, "reference ")
            return music_metrics(objs, ref)
        if isinstance(objs[0], Stems):
            return evaluate_stems(objs, ref)
        for items, which in ((objs, "the evaluated set"), (ref, "the reference")):
            if len(items) < 2:
                raise ValueError(f"{which} holds only {len(items)} sound; fd (a Frechet distance between sets of "
                                 "sounds) needs at least 2 in each set: give at least 2 sounds (a folder of them)")
        return evaluate_sounds(objs, ref, info)

    def observation(self, path: Path, info: Mapping[str, Any]) -> Any:
        """``--observed FILE.mid``: the voices the file holds are kept, the others generated
        (arrangement); tracks are matched to voices by name (soprano, alto, tenor, bass), unnamed
        ones in order."""
        path = Path(path)
        if path.suffix.lower() not in (".mid", ".midi"):
            return super().observation(path, info)
        if info.get("kind") not in ("chorale", "stems"):
            raise ValueError(f"{path}: MIDI observations arrange chorales; this model generates {info.get('kind')}")
        from .music import read_midi

        given = read_midi(path)  # its errors name the file already
        try:
            return arrangement(given, info)
        except ValueError as err:  # too many tracks, notes out of the model's range: name the file
            raise ValueError(f"{path}: {err}") from None

    def plot(self, objects: Sequence[Any], path: Path, reference: Sequence[Any] | None = None) -> Path | None:
        try:
            from .plot import plot_audio
        except ImportError:
            return None
        return plot_audio(list(objects), Path(path), None if reference is None else list(reference))

    def commands(self) -> dict[str, Any]:
        """``polydiff audio separate`` (stems of a mixture) and ``polydiff audio evaluator``
        (train / inspect the metric classifier)."""
        from .cli import COMMANDS

        return COMMANDS


def _what(objects: Sequence[Any]) -> str:
    """What a list of read objects holds, in words: sounds, MIDI music or stems (mixed: the kinds)."""
    from .music import Chorale

    kinds = {"MIDI music (chorales)" if isinstance(o, Chorale) else "stems (NAME_mix.wav with its voices)"
             if isinstance(o, Stems) else "sounds (audio files)" for o in objects}
    return " and ".join(sorted(kinds))


def _check_voices(chorales: Sequence[Any], side: str) -> None:
    """Every track of every piece is a voice the music metrics know (soprano, alto, tenor, bass:
    their ranges and order); else a ValueError naming the file and the track."""
    from .music_metrics import RANGES

    for i, c in enumerate(chorales):
        for k, name in enumerate(c.names):
            if str(name).lower() not in RANGES:
                what = f"{side}piece {i} ({c.name or 'unnamed'})" if not c.source else \
                    f"reference file {c.source}" if side else c.source
                named = "" if re.fullmatch(r"track\d+", str(name)) else f" ({name!r})"
                raise ValueError(f"{what}: track {k + 1}{named} is not named after a voice; the music metrics compare "
                                 f"four-part music voice by voice: name the MIDI tracks {', '.join(RANGES)} "
                                 "(any case)")


# -- conversions -----------------------------------------------------------------------------------

def _sound_conditions(n: int, info: Mapping[str, Any], condition: dict[str, Any]) -> dict[str, Tensor]:
    """The condition entries of ``n`` sound samples (popped from ``condition``); absent ones are
    null (unconditional)."""
    from .sounds import CLASSES, VOCAB, tokenize, words

    out: dict[str, Tensor] = {}
    conds = info.get("conditions") or {}
    caption = condition.pop("caption", None)
    label = condition.pop("label", None)
    omega = condition.pop(OMEGA, None)
    if caption is not None and "caption" not in conds:
        raise ValueError("this model is not conditioned on captions" + (" (it takes label=...)" if "label" in conds
                                                                          else ""))
    if label is not None and "label" not in conds:
        raise ValueError("this model is not conditioned on class labels" + (" (it takes caption=...)"
                                                                            if "caption" in conds else ""))
    if "caption" in conds:
        caps = _captions(n, caption)
        tok = tokenize(caps, int(info["caption_length"]))
        out["caption"] = tok if caption is not None else torch.full_like(tok, -1)
        unknown = sorted({w for c in caps for w in words(c)} - set(VOCAB)) if caption is not None else []
        if unknown:
            warnings.warn(f"caption words the model never saw are read as <unk>: {', '.join(unknown[:10])} (known "
                          f"words: {len(VOCAB)}, e.g. {', '.join(VOCAB[2:8])})", stacklevel=2)
    if "label" in conds:
        vals = [label] * n if label is None or isinstance(label, (numbers.Integral, str)) else list(label)
        if len(vals) != n:
            raise ValueError(f"got {len(vals)} labels for {n} samples")
        ids = []
        for v in vals:
            if v is None:
                ids.append(-1)
            elif isinstance(v, str) and not v.lstrip("-").isdigit():
                if v not in CLASSES:
                    raise ValueError(f"unknown sound class {v!r}; allowed: {', '.join(CLASSES)}")
                ids.append(CLASSES.index(v))
            else:
                if not 0 <= int(v) < len(CLASSES):
                    raise ValueError(f"label must lie in 0..{len(CLASSES) - 1}, got {v}")
                ids.append(int(v))
        out["label"] = torch.tensor(ids, dtype=torch.long)
    if omega is not None:  # the guidance strength a student was distilled with
        out[OMEGA] = condition_values(n, omega, name=OMEGA, low=0)
    return out


def _captions(n: int, caption: Any) -> list[str]:
    """The captions of ``n`` samples: one string for all, or one per sample (a list, tuple or
    array of strings); None: the empty caption (the caller makes it null). Anything else is
    an error naming the condition."""
    if isinstance(caption, np.ndarray):
        caption = caption.tolist()
    if caption is None or isinstance(caption, str):
        return [caption or ""] * n
    caps = list(caption) if isinstance(caption, (list, tuple)) else None
    if caps is None or len(caps) != n or not all(isinstance(c, str) for c in caps):
        raise ValueError(f"condition 'caption': expected a string, or {n} of them (one per sample), got {caption!r}")
    return [str(c) for c in caps]


def _check_observed(observed: Any) -> None:
    """Music given as ``observed`` (a Chorale, its tracks, a MIDI file) is arranged through
    :func:`arrangement`: an error saying so, not a failure deep in the sampler."""
    from .music import Chorale

    midi = isinstance(observed, (str, os.PathLike)) and Path(observed).suffix.lower() in MIDI_SUFFIXES
    if midi or isinstance(observed, (Chorale, np.ndarray)):
        what = f"the MIDI file {str(observed)!r}" if midi else "a Chorale" if isinstance(observed, Chorale) \
            else "an array of tracks"
        raise ValueError(f"observed: {what} is arranged through polydiff_audio.modality.arrangement: pass "
                         "observed=arrangement(chorale_or_midi_path, gen.info) (voices it holds are kept, the "
                         "others generated)")


def _caption_text(tokens: Tensor, vocab: Sequence[str]) -> str:
    return " ".join(vocab[i] for i in tokens.tolist() if i >= 2 and i < len(vocab))


def mels_to_sounds(mels: Tensor, info: Mapping[str, Any], state: Mapping[str, Tensor] | None = None,
                   n_iter: int = 32) -> list[Any]:
    """Generated mels (or autoencoder codes, decoded first) -> :class:`~.sounds.Sound` (Griffin-Lim
    audio, the caption and label they were asked for)."""
    from .sounds import MelSpec, Sound, audio_of, caption_label

    spec, vocab = MelSpec.from_dict(info["mel"]), list(info.get("vocab") or [])
    state = state or {}
    mels = mels.detach().float().cpu()
    if info.get("latent"):
        with torch.no_grad():
            mels = autoencoder(info).decode(mels)
    seeds = state.get(VOCODER_SEED)
    out = []
    for b, m in enumerate(mels.numpy()):
        caption = _caption_text(state["caption"][b], vocab) if "caption" in state and vocab else ""
        label = int(state["label"][b]) if "label" in state else caption_label(caption)
        phase = b if seeds is None else int(seeds[b]) % 2**32  # (seed 0: the sample's index, as before)
        out.append(Sound(audio_of(m, spec, n_iter=n_iter, seed=phase), spec.sr, caption, label, sample_name(info, b)))
    return out


def _fit(tracks: np.ndarray, length: int) -> np.ndarray:
    """(K, T) tracks cropped or rest-padded to ``length`` steps."""
    out = np.zeros((tracks.shape[0], length), dtype=np.int64)
    n = min(length, tracks.shape[1])
    out[:, :n] = tracks[:, :n]
    return out


def rolls_to_chorales(roll: Tensor, info: Mapping[str, Any]) -> list[Any]:
    """Token or one-hot rolls (B, K*T[, V]) -> :class:`~.music.Chorale` (argmax of one-hots; a
    leftover mask token is a rest)."""
    from .music import Chorale, from_tokens

    m = info["music"]
    tok = roll.argmax(-1) if roll.dim() == 3 else roll
    tok = tok.long().cpu().clamp(0, int(m["vocab"]) - 1)
    tok = torch.where(roll.long().cpu() >= int(m["vocab"]), 0, tok) if roll.dim() == 2 else tok
    tracks = tok.reshape(-1, int(m["tracks"]), int(m["length"])).numpy()
    names = tuple(info.get("voices") or [f"track{k + 1}" for k in range(int(m["tracks"]))])
    return [Chorale(from_tokens(t), names, sample_name(info, b)) for b, t in enumerate(tracks)]


def tokens_to_stems(tokens: Tensor, info: Mapping[str, Any]) -> list[Stems]:
    """(N, K, T) tokens -> true :class:`Stems` rendered by the synthesiser (the reference)."""
    from .music import StemSpec, from_tokens, render, stem_mels

    spec = StemSpec.from_dict(info["stem"])
    out = []
    for b, t in enumerate(tokens.cpu().numpy()):
        audio = render(from_tokens(t), spec.sr, info["step_seconds"])
        out.append(Stems(audio, spec.sr, tuple(info["voices"]), f"ref_{b:04d}", stem_mels(audio, spec)))
    return out


def mels_to_stems(mels: Tensor, info: Mapping[str, Any]) -> list[Stems]:
    """Generated stem mels (B, K, M, F) -> :class:`Stems` (Griffin-Lim per stem)."""
    from .music import StemSpec, stems_audio

    spec = StemSpec.from_dict(info["stem"])
    arr = mels.detach().float().cpu().numpy()
    return [Stems(stems_audio(m, spec), spec.sr, tuple(info["voices"]), sample_name(info, b), m)
            for b, m in enumerate(arr)]


def arrangement(given: Any, info: Mapping[str, Any]) -> Observation:
    """An :class:`Observation` that keeps the voices of ``given`` and lets the model generate the
    others: pass it to ``gen.generate(n, observed=arrangement(given, gen.info))``.

    ``given``: a :class:`~.music.Chorale` (or a MIDI file's path, read with
    :func:`~.music.read_midi`) whose tracks are matched to the model's voices by name (soprano,
    alto, tenor, bass, any case); unnamed tracks (``""``, ``track1``...) fill the free voices in
    order, and so do tracks named otherwise, with a warning. Pitches are whole MIDI numbers in
    the model's range; the music is cropped (with a warning) or rest-padded to the model's
    length. ``info``: the chorale or stems model's ``gen.info``."""
    from .music import Chorale, read_midi, to_tokens

    if info.get("kind") not in ("chorale", "stems"):
        raise ValueError(f"arrangement needs a chorale or stems model's info (gen.info); this model generates "
                         f"{info.get('kind')!r}")
    if isinstance(given, (str, os.PathLike)):
        given = read_midi(Path(given))
    if not isinstance(given, Chorale):
        raise TypeError(f"given must be a Chorale (polydiff_audio.music.Chorale(tracks, names)) or a MIDI file's "
                        f"path, got {type(given).__name__}")
    voices = list(info["voices"])
    length = int(info["music"]["length"])
    raw = np.asarray(given.tracks)
    if raw.ndim != 2:
        raise ValueError(f"the Chorale's tracks must be (tracks, steps) MIDI pitches, got shape {raw.shape}")
    if len(raw) > len(voices):
        raise ValueError(f"{len(raw)} tracks, but the model has {len(voices)} voices ({', '.join(voices)})")
    if len(given.names) != len(raw):
        raise ValueError(f"{len(raw)} tracks but {len(given.names)} name(s) ({', '.join(map(str, given.names))}): "
                         "name each track (a voice, or '' for the next free one)")
    if raw.shape[1] > length and (raw[:, length:] != 0).any():
        warnings.warn(f"the observed music is {raw.shape[1]} steps long; the model's {length} steps are kept, the "
                      "rest is cropped", stacklevel=2)
    tokens = _fit(to_tokens(raw[:, :length]), length)  # whole pitches in range: a float pitch is an error
    names = [str(n).lower() for n in given.names]
    named = [n for n in names if n in voices]
    if len(set(named)) < len(named):
        twice = next(n for n in named if named.count(n) > 1)
        raise ValueError(f"two tracks are named {twice!r}; each voice is given once")
    order = [voices.index(n) if n in voices else None for n in names]
    free = iter([k for k in range(len(voices)) if k not in order])
    order = [k if k is not None else next(free) for k in order]
    odd = [(i, n, voices[k]) for i, (n, k) in enumerate(zip(given.names, order, strict=True))
           if str(n).lower() not in voices and not re.fullmatch(r"(track\d+)?", str(n))]
    if odd:
        warnings.warn("tracks not named after a voice are taken in order: " + ", ".join(
            f"track {i + 1} ({n!r}) as the {v}" for i, n, v in odd) + f" (voices: {', '.join(voices)})", stacklevel=2)
    full = np.zeros((len(voices), length), dtype=np.int64)
    mask = np.zeros((len(voices), length), dtype=bool)
    for row, k in zip(tokens, order, strict=True):
        full[k], mask[k] = row, True
    if info["kind"] == "stems":
        from .music import StemSpec, from_tokens, render, stem_mels

        spec = StemSpec.from_dict(info["stem"])
        mel = stem_mels(render(from_tokens(full), spec.sr, info["step_seconds"]), spec)
        m = torch.tensor(np.broadcast_to(mask.any(1)[:, None, None], mel.shape).copy())
        return Observation({"stems": torch.tensor(mel, dtype=torch.float32)}, {"stems": m})
    flat = torch.tensor(full.reshape(-1), dtype=torch.long)
    fmask = torch.tensor(mask.reshape(-1))
    if info["music"]["encoding"] == "onehot":
        v = onehot(flat, int(info["music"]["vocab"]))
        return Observation({"roll": v}, {"roll": fmask[:, None].expand_as(v).clone()})
    return Observation({"roll": flat}, {"roll": fmask})


def write_chorales(chorales: Sequence[Any], out: Path) -> list[Path]:
    """One MIDI file and one rendered WAV (the four voices mixed) per chorale."""
    from .music import render, write_midi
    from .sounds import write_wav

    paths = []
    for c, stem in zip(chorales, unique_stems([c.name for c in chorales]), strict=True):
        paths.append(write_midi(c, out / f"{stem}.mid"))
        paths.append(write_wav(out / f"{stem}.wav", render(c.tracks, 16000, c.step_seconds).sum(0), 16000))
    return paths


def write_stems(stems: Sequence[Stems], out: Path) -> list[Path]:
    """``NAME_<voice>.wav`` per stem and ``NAME_mix.wav`` per piece (32-bit float WAV: exact, so
    the files read back as the objects written)."""
    from .sounds import write_wav

    paths = []
    for s, stem in zip(stems, unique_stems([s.name for s in stems]), strict=True):
        for name, audio in [*zip(s.names, s.audio, strict=True), ("mix", s.mix)]:
            paths.append(write_wav(out / f"{stem}_{name}.wav", audio, s.sr))
    return paths


MIDI_SUFFIXES = (".mid", ".midi")


def _listing(files: Sequence[Path], folder: Path, at_most: int = 5) -> str:
    """``a.wav, b/c.mid, ...`` relative to ``folder`` (at most ``at_most`` shown)."""
    names = [p.relative_to(folder).as_posix() for p in files]
    return ", ".join(names[:at_most]) + (f" and {len(names) - at_most} more" if len(names) > at_most else "")


def stem_sets(folder: Path) -> tuple[list[Path], list[Path]]:
    """The ``NAME_mix.wav`` files of ``folder`` (not its subfolders) whose stems
    ``NAME_<voice>.wav`` are all there (complete sets), and those with some but not all."""
    from .music import VOICES

    complete, partial = [], []
    for mix in sorted(Path(folder).glob("*_mix.wav")):
        name = mix.name[: -len("_mix.wav")]
        have = [mix.with_name(f"{name}_{v}.wav").is_file() for v in VOICES]
        if all(have):
            complete.append(mix)
        elif any(have):
            partial.append(mix)
    return complete, partial


def folder_kind(folder: Path) -> tuple[str, list[Path], list[Path], str]:
    """How :meth:`AudioModality.read` reads a folder: ``(kind, files, ignored, why)``.

    ``kind`` is ``midi``, ``stems`` or ``sounds``. MIDI and audio files are never mixed: a WAV
    beside a MIDI file of the same name is its rendering (as ``polydiff sample`` writes them) and
    is not counted; of the rest, the kind with more files is read and the others are ignored
    (``why`` says so); as many of each is an error. Audio is read as stems only when complete
    stem sets are there (:func:`stem_sets`); the audio files outside them are then ignored. A
    name ending in ``_mix.wav`` alone does not make stems."""
    from .sounds import AUDIO_SUFFIXES

    files = sorted(p for p in folder.rglob("*") if p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    midi = [p for p in files if p.suffix.lower() in MIDI_SUFFIXES]
    audio = [p for p in files if p.suffix.lower() in AUDIO_SUFFIXES]
    rendered = {p.with_suffix("") for p in midi}
    loose = [p for p in audio if p.with_suffix("") not in rendered]
    if midi and (not loose or len(midi) > len(loose)):
        why = f"read its {len(midi)} MIDI file(s), which outnumber the audio files" if loose else ""
        return "midi", midi, loose, why
    if midi and len(midi) == len(loose):
        raise ValueError(f"{folder}: holds {len(midi)} MIDI file(s) ({_listing(midi, folder, 3)}) and as many audio "
                         f"files ({_listing(loose, folder, 3)}); evaluate one kind at a time (move the others out)")
    why = f"read its {len(audio)} audio file(s), which outnumber the MIDI files" if midi else ""
    complete, partial = stem_sets(folder)
    if not complete:
        if partial:
            warnings.warn(f"{folder}: {_listing(partial, folder, 3)} lack(s) some of their stems "
                          "(NAME_<voice>.wav); the folder is read as plain sounds", stacklevel=3)
        return "sounds", audio, midi, why
    from .music import VOICES

    members = {m.with_name(f"{m.name[: -len('_mix.wav')]}_{v}.wav") for m in complete for v in (*VOICES, "mix")}
    outside = [p for p in audio if p not in members]
    if outside:
        why = (f"{why}; " if why else "") + f"read its {len(complete)} complete stem set(s) (NAME_mix.wav with " \
              f"NAME_{'/'.join(VOICES)}.wav), not the other audio files"
    return "stems", complete, midi + outside, why


def read_stems(path: Path, names: Sequence[str] | None = None) -> list[Stems]:
    """Pieces written by :func:`write_stems`: every ``NAME_mix.wav`` (or the pieces ``names``)
    with its ``NAME_<voice>.wav`` stems (a missing or unreadable stem, or one at another sample
    rate than the piece's first, is an error naming it). Stems of one piece that differ in
    length (one cut off) are cropped to the shortest, with a warning naming the short ones."""
    from .music import VOICES
    from .sounds import cut_off, load_audio

    out = []
    mixes = sorted(Path(path).glob("*_mix.wav")) if names is None else [Path(path) / f"{n}_mix.wav" for n in names]
    for mix in mixes:
        name = mix.name[: -len("_mix.wav")]
        rows, rates, files = [], [], []
        for v in VOICES:
            f = mix.with_name(f"{name}_{v}.wav")
            if not f.is_file():
                raise FileNotFoundError(f"{f}: stem {v!r} of {mix.name} is missing")
            try:
                a, sr = load_audio(f)
            except ValueError as err:
                raise ValueError(f"{f}: not a readable audio file ({err})") from None
            if rates and sr != rates[0]:
                raise ValueError(f"{f}: sampled at {sr} Hz, but {files[0].name} at {rates[0]} Hz: the stems of "
                                 f"{name!r} must share one sample rate")
            rows.append(a)
            rates.append(sr)
            files.append(f)
        n, longest = min(len(r) for r in rows), max(len(r) for r in rows)
        if n < longest:
            short = [f"{f.name} ({len(r)} samples{'; ' + cut_off(f) if cut_off(f) else ''})"
                     for f, r in zip(files, rows) if len(r) < longest]
            warnings.warn(f"{mix.parent}: the stems of {name!r} differ in length: {', '.join(short)} against "
                          f"{longest} samples; all are cropped to the shortest ({n})", stacklevel=2)
        out.append(Stems(np.stack([r[:n] for r in rows]), int(rates[0]), VOICES, name))
    return out


# -- metrics ---------------------------------------------------------------------------------------


def sound_evaluator(info: Mapping[str, Any] | None = None) -> Any:
    """The in-project audio classifier behind ``fd`` and caption agreement: trained on
    ``EVALUATOR["n"]`` embedded sound events of a seed no training set uses by default, with the
    dataset's mel settings; cached under ``cache_dir()/audio`` (rebuilt when unreadable)."""
    from .evaluator import AudioClassifier, train_classifier
    from .sounds import CLASSES, MelSpec, mel_of, sound_events

    spec = MelSpec.from_dict((info or {}).get("mel") or MelSpec().to_dict())
    opts = {**EVALUATOR, **dict((info or {}).get("evaluator") or {})}
    key = hashlib.sha256(json.dumps({"mel": spec.to_dict(), **opts, "v": 1}, sort_keys=True).encode()).hexdigest()[:16]
    file = cache_dir() / "audio" / f"evaluator-{key}.pt"
    if file.is_file():
        try:
            blob = torch.load(file, map_location="cpu", weights_only=True)
            clf = AudioClassifier(spec.n_mels, len(CLASSES))
            clf.load_state_dict(blob)
            return clf.eval()
        except Exception as err:  # a damaged cache is rebuilt
            warnings.warn(f"{file}: unreadable evaluator cache ({err}); retraining", stacklevel=2)
    events = sound_events(int(opts["n"]), seed=int(opts["seed"]))
    mels = torch.tensor(np.stack([mel_of(e.audio, spec) for e in events]), dtype=torch.float32)
    labels = torch.tensor([e.label for e in events])
    clf = train_classifier(mels, labels, steps=int(opts["steps"]), seed=int(opts["seed"]))
    atomic_write(file, lambda p: torch.save(clf.state_dict(), p))
    return clf.eval()


def evaluate_sounds(objects: Sequence[Any], reference: Sequence[Any], info: Mapping[str, Any]) -> dict[str, float]:
    """``fd`` (Frechet distance of classifier embeddings, generated vs reference audio),
    ``caption_agreement`` (share of generated sounds the classifier puts in the class their
    caption or label asked for), ``mel_l1_db`` / ``mel_std_l1_db`` (set-level spectral distances),
    ``class_spread_db`` and its ratio to the reference's (within-class variety: near 0 for a model
    that returns one average sound per caption)."""
    from .evaluator import caption_agreement, class_spread, embeddings, frechet_distance, mel_distances
    from .sounds import MelSpec, caption_label, mel_of

    spec = MelSpec.from_dict(info.get("mel") or MelSpec().to_dict())
    clf = sound_evaluator(info)

    def mels(items: Sequence[Any]) -> Tensor:
        return torch.tensor(np.stack([mel_of(_resampled(s, spec.sr), spec) for s in items]), dtype=torch.float32)

    g, r = mels(objects), mels(reference)
    res = {"fd": frechet_distance(embeddings(clf, g), embeddings(clf, r)), **mel_distances(g.numpy(), r.numpy())}
    labels = torch.tensor([s.label if s.label >= 0 else caption_label(s.caption) for s in objects])
    if bool((labels >= 0).any()):
        res["caption_agreement"] = caption_agreement(clf, g, labels)
        ref_labels = np.array([s.label if s.label >= 0 else caption_label(s.caption) for s in reference])
        top = float(spec.top_db)
        res["class_spread_db"] = class_spread(g.numpy(), labels.numpy(), top)
        res["class_spread_ratio"] = res["class_spread_db"] / class_spread(r.numpy(), ref_labels, top)
    res["n"] = float(len(objects))
    return res


def _resampled(sound: Any, sr: int) -> np.ndarray:
    if int(sound.sr) == sr:
        return sound.audio
    import librosa

    return librosa.resample(np.asarray(sound.audio, dtype=np.float32), orig_sr=int(sound.sr), target_sr=sr)


def evaluate_stems(objects: Sequence[Stems], reference: Sequence[Stems]) -> dict[str, float]:
    """Mel-spectral distances of each voice's stems (generated vs reference audio), both at the
    reference's sample rate (stems at another rate are resampled first)."""
    from .evaluator import mel_distances
    from .music import StemSpec, stem_mels

    spec = StemSpec(sr=int(reference[0].sr))
    gen = np.stack([stem_mels(_resampled(s, spec.sr), spec) for s in objects])
    ref = np.stack([stem_mels(_resampled(s, spec.sr), spec) for s in reference])
    n = min(gen.shape[-1], ref.shape[-1])
    res: dict[str, float] = {}
    for k, name in enumerate(objects[0].names):
        for key, v in mel_distances(gen[:, k, :, :n], ref[:, k, :, :n]).items():
            res[f"{name}_{key}"] = v
    return res


__all__ = ["AudioModality", "Stems", "arrangement", "chorales_dataset", "evaluate_sounds", "files_dataset",
           "sound_evaluator", "sounds_dataset", "stems_dataset"]
