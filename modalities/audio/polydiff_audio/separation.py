"""Source separation with the joint stems model (MSDM's idea: the stems given their mixture are
a conditional sample of the joint prior).

The observation is the mixture's mel spectrogram. Mel power adds over sources whose energy does
not overlap in time-frequency (and does so in expectation for independent phases), so the
operator ``A(stems)`` turns each stem's normalised log-mel back into power, sums the stems and
normalises the sum again; sampling follows the prior's score plus ``scale`` times the gradient of
``log N(y; A(x0_hat), std^2)`` (DPS through the core's :func:`gradient_guidance`). The estimated
stem mels become waveforms by ratio masks on the mixture's own STFT (its phase), so the stems add
up to the mixture and SI-SNR against the true stems is meaningful.
"""

from __future__ import annotations

import math
import numbers
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from polydiff.plugin import Control, gradient_guidance, operator_potential


def mix_operator(top_db: float) -> Any:
    """``A(state)``: normalised log-mel of the summed power of the stems (B, K, M, F) -> (B, M, F)."""

    def op(state: Mapping[str, Tensor]) -> Tensor:
        x = state["stems"]
        db = (x - 1) * (top_db / 2)  # normalised units -> dB (0 dB = the fixed reference)
        total = torch.logsumexp(db * (np.log(10) / 10), dim=1) * (10 / np.log(10))  # dB of the summed power
        return total.clamp(-top_db, 0) * (2 / top_db) + 1

    return op


def separation_control(mix_mel: Tensor, info: Mapping[str, Any], fields: Mapping[str, Any], scale: float = 1.0,
                       std: float = 0.1) -> Control:
    """A :class:`polydiff.plugin.Control` that guides a stems model toward mixture ``mix_mel``
    ((M, F) or (B, M, F) normalised log-mel)."""
    top_db = float(info["stem"].get("top_db", 80.0))
    y = mix_mel if mix_mel.dim() == 3 else mix_mel[None]
    pot = operator_potential(mix_operator(top_db), y, std)
    return Control(guidance=[lambda m: gradient_guidance(m, fields, pot, scale=scale, on="x0")])


def separate(generator: Any, mix: np.ndarray | str | os.PathLike[str], *, n: int = 1, scale: float = 1.0,
             std: float = 0.1, sampler: str | None = None, steps: int | None = None,
             seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The stems of ``mix`` with a trained stems model: returns ``(stems (n, K, n_samples), mels
    (n, K, M, F))``, ``n`` separations from seeds ``(seed, i)``.

    ``mix``: mono audio ``(n_samples,)`` at the model's stem rate (floats in [-1, 1]; integer
    PCM is scaled to that range), or the path of a WAV / FLAC / OGG file, read as ``polydiff
    audio separate`` reads it (mono, resampled to the model's rate); a mixture longer or
    shorter than the model's length is cropped or zero-padded, with a warning. ``std``: the
    mixture likelihood's standard deviation (normalised mel units, > 0); ``scale``: the
    guidance scale toward the mixture."""
    from .music import StemSpec, stem_mels
    from .music import separate as mask_separate

    info = generator.info
    if info.get("kind") != "stems":
        raise ValueError(f"separation needs a model of rendered stems (dataset chorale_stems); this one models "
                         f"{info.get('kind')!r}")
    if isinstance(std, bool) or not isinstance(std, numbers.Real) or not (math.isfinite(std) and std > 0):
        raise ValueError(f"std must be a positive number (the mixture likelihood's spread), got {std!r}")
    spec = StemSpec.from_dict(info["stem"])
    frames = int(info["music"]["frames"])
    length = frames * spec.hop
    if isinstance(mix, (str, os.PathLike)):
        name, audio = str(mix), read_mixture(Path(mix), spec.sr)
    else:
        name, audio = "mix", mono_samples(mix)
    warn_length(name, len(audio), length, spec.sr)
    audio = np.pad(audio[:length], (0, max(0, length - len(audio))))
    y = torch.tensor(stem_mels(audio[None], spec)[0], dtype=torch.float32)[:, :frames]
    control = separation_control(y, info, generator.fields, scale, std)
    state = generator.sample_states(n, sampler=sampler, steps=steps, seed=seed, control=control, progress=False)
    mels = state["stems"].float().cpu().numpy()
    stems = np.stack([mask_separate(audio, m, spec) for m in mels])
    return stems, mels


def mono_samples(mix: Any) -> np.ndarray:
    """A mixture given as samples, as mono float32 audio: one dimension, real numbers (integer
    PCM scaled to [-1, 1] by its type's full scale), at least one sample, all finite; else an
    error saying what to pass."""
    from .modality import Stems

    if isinstance(mix, Stems):
        raise TypeError("mix must be mono audio samples or an audio file's path, got Stems: pass its mixture, "
                        "stems.mix")
    a = np.asarray(mix)
    if a.dtype.kind not in "iuf":
        raise TypeError(f"mix must be mono audio samples (numbers) or an audio file's path, got "
                        f"{type(mix).__name__} of {a.dtype}")
    if a.ndim != 1:
        raise ValueError(f"mix must be mono audio of shape (n_samples,), got shape {a.shape} (stems: their sum; "
                         "stereo: the mean of its channels)")
    if not len(a):
        raise ValueError("mix has no samples")
    from .sounds import pcm_to_float

    a = pcm_to_float(a)  # integer PCM: its full scale is 1
    bad = int((~np.isfinite(a)).sum())
    if bad:
        raise ValueError(f"mix: {bad} of {len(a)} samples are NaN or infinite")
    return a.astype(np.float32)


def read_mixture(path: Path, sr: int) -> np.ndarray:
    """The mixture file as mono float32 audio at ``sr``; a ValueError naming the file and the
    reason when it is not a readable WAV / FLAC / OGG file (a file that looks cut off is read as
    far as it goes, with a warning)."""
    from .sounds import AUDIO_SUFFIXES, cut_off, load_audio, resample_audio

    path = Path(path)
    if path.is_file() and path.suffix.lower() not in AUDIO_SUFFIXES:
        raise ValueError(f"{path}: not an audio file (the mixture must be {'/'.join(AUDIO_SUFFIXES)})")
    try:
        audio, rate = load_audio(path)
        audio = resample_audio(audio, rate, sr)
    except ValueError as err:
        raise ValueError(f"{path}: not a readable audio file ({err})") from None
    short = cut_off(path)
    if short:
        warnings.warn(f"{path}: the file looks cut off ({short}); separating what is there", stacklevel=3)
    return audio


def warn_length(name: str | Path, n: int, length: int, sr: int) -> None:
    """A warning (naming the mixture ``name``) when it is ``n`` samples at ``sr`` while the model
    separates ``length``: :func:`separate` crops or zero-pads it."""
    if n > length:
        warnings.warn(f"{name}: the mixture is {n / sr:.3g} s long; the model separates {length / sr:.3g} s, so the "
                      f"first {length / sr:.3g} s are separated and the remaining {(n - length) / sr:.3g} s are "
                      "left out", stacklevel=3)
    elif n < length:
        warnings.warn(f"{name}: the mixture is {n / sr:.3g} s long; the model separates {length / sr:.3g} s, so it "
                      f"is padded with {(length - n) / sr:.3g} s of silence (the stems are {length / sr:.3g} s long)",
                      stacklevel=3)


__all__ = ["mix_operator", "mono_samples", "read_mixture", "separate", "separation_control", "warn_length"]
