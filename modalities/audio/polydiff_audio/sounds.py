"""Sound events for the ``audio`` plugin: a deterministic captioned synthesiser, the caption
tokenizer, log-mel features, a Griffin-Lim vocoder, and reading / writing users' audio files.

The embedded data set (SoundCTM reproduced at a small scale) is made of one-second clips of twelve
classes, six kinds of event (``beep``, ``chirp_up``, ``chirp_down``, ``drum``, ``clicks``, ``buzz``)
in two registers (``low``, ``high``), each with a caption drawn from templates that always name the
kind and the register (:func:`caption_label` inverts them). Models work on the normalised log-mel
spectrogram of :func:`mel_of`; :func:`audio_of` turns one back into sound.

Register of a chirp: the register word refers to where the sweep *starts* for a rising chirp and where
it *ends* for a falling one (the low end of the sweep): low chirps have that end in 150-300 Hz, high
ones in 800-1600 Hz, and the other end 1-2 octaves above.

numpy, librosa and soundfile are imported inside the functions so ``import polydiff_audio`` stays light.
"""

from __future__ import annotations

import functools
import io
import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING

from polydiff.plugin import atomic_write, csv_rows, read_text

if TYPE_CHECKING:
    import numpy as np
    import torch

SR = 16000
DURATION = 1.0
KINDS = ("beep", "chirp_up", "chirp_down", "drum", "clicks", "buzz")
PITCHES = ("low", "high")
CLASSES: tuple[str, ...] = tuple(f"{k}_{p}" for k in KINDS for p in PITCHES)
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
CAPTIONS_FILE = "captions.csv"


@dataclass
class Sound:
    """One mono clip with its caption and class (``label`` indexes :data:`CLASSES`, -1 = unknown)."""

    audio: np.ndarray
    sr: int
    caption: str = ""
    label: int = -1
    name: str = ""


# ---------------------------------------------------------------------------------------------
# captions: templates, their vocabulary, and the inverse map caption -> class
# ---------------------------------------------------------------------------------------------

# register words: every caption names exactly one register family
_REGISTER = {"low": ("low", "deep"), "high": ("high", "shrill")}
_TIMBRE = {"low": ("dull",), "high": ("bright",)}  # extra register synonyms for noisy / harmonic kinds
_REGISTER_WORDS = {p: set(_REGISTER[p]) | set(_TIMBRE[p]) for p in PITCHES}
_SLOT_WORDS = {
    "dur": ("short", "brief", "long", "quick", "slow"),
    "loud": ("loud", "quiet", "soft", "faint"),
    "count": ("two", "three", "four"),
    "wave": ("sawtooth", "square wave"),
    "drum": ("kick drum", "tom", "drum", "snare", "hi-hat"),
}
_TEMPLATES = {
    "beep": ("a {dur} {loud} {reg} beep", "a {loud} {reg} sine beep", "a {dur} {reg} pitched beep",
             "a {reg} bleep", "a {dur} {reg} sine tone"),
    "chirp_up": ("a {dur} rising chirp from a {reg} tone", "a {loud} {reg} rising chirp", "a upward {reg} sweep",
                 "a {reg} chirp sweeping up"),
    "chirp_down": ("a {dur} falling chirp down to a {reg} tone", "a {loud} falling {reg} chirp",
                   "a downward {reg} sweep", "a {reg} chirp sweeping down"),
    "drum": ("a {loud} {reg} {drum} hit", "a {reg} noisy {drum} hit", "a {dur} {reg} {drum}"),
    "clicks": ("{count} {reg} clicks", "{count} quick {reg} clicks", "{loud} {reg} clicking",
               "a few {loud} {reg} ticks"),
    "buzz": ("a {loud} {reg} buzz", "a {reg} buzzing tone", "a {dur} {reg} {wave} buzz", "a {loud} {reg} buzzer"),
}
# words that identify the kind (users' captions may use the singular forms too)
_KIND_WORDS = {
    "beep": {"beep", "bleep", "sine"},
    "chirp": {"chirp", "sweep", "sweeping"},
    "drum": {"drum", "kick", "tom", "snare", "hihat"},
    "clicks": {"clicks", "clicking", "ticks", "click", "tick"},
    "buzz": {"buzz", "buzzing", "buzzer", "sawtooth", "square"},
}
_UP_WORDS = {"rising", "upward", "up"}
_DOWN_WORDS = {"falling", "downward", "down"}


def words(caption: str) -> list[str]:
    """The lowercased words of a caption (what the tokenizer and :func:`caption_label` see):
    hyphens and apostrophes inside a word are dropped ("hi-hat" -> "hihat"), other punctuation
    separates words."""
    return re.findall(r"[a-z0-9]+", re.sub(r"(?<=[a-z0-9])['\u2019-](?=[a-z0-9])", "", caption.lower()))


def _vocabulary() -> tuple[str, ...]:
    """Every word the caption templates can produce: their literal words and all slot fillers."""
    found = {"an"}  # the article fix turns "a" into "an" before a vowel
    for templates in _TEMPLATES.values():
        for t in templates:
            found.update(words(re.sub(r"\{\w+\}", " ", t)))
    for fill in _SLOT_WORDS.values():
        for phrase in fill:
            found.update(words(phrase))
    for family in _REGISTER_WORDS.values():
        found.update(family)
    return ("<pad>", "<unk>", *sorted(found))


VOCAB: tuple[str, ...] = _vocabulary()


def caption_label(caption: str) -> int:
    """The class index a caption describes, from its kind words (chirps also need a direction)
    and its register word; -1 when it names no kind or register, or contradicts itself."""
    ws = set(words(caption))
    kinds = [k for k, family in _KIND_WORDS.items() if ws & family]
    pitches = [p for p in PITCHES if ws & _REGISTER_WORDS[p]]
    if len(kinds) != 1 or len(pitches) != 1:
        return -1
    kind = kinds[0]
    if kind == "chirp":
        up, down = bool(ws & _UP_WORDS), bool(ws & _DOWN_WORDS)
        if up == down:
            return -1
        kind = "chirp_up" if up else "chirp_down"
    return CLASSES.index(f"{kind}_{pitches[0]}")


@functools.lru_cache(maxsize=8)
def _index(vocab: tuple[str, ...]) -> dict[str, int]:
    return {w: i for i, w in enumerate(vocab)}


def tokenize(captions: Sequence[str], length: int = 12, vocab: Sequence[str] = VOCAB) -> torch.Tensor:
    """Token ids ``(B, length)`` int64 of captions: lowercased words without punctuation, words
    not in ``vocab`` -> 1 (``<unk>``), padded with 0 (``<pad>``) and truncated to ``length``."""
    import torch

    if isinstance(captions, str):
        raise TypeError("tokenize takes a sequence of captions, not one string")
    if length < 1:
        raise ValueError(f"tokenize: length must be >= 1, got {length}")
    index = _index(tuple(vocab))
    out = torch.zeros(len(captions), length, dtype=torch.long)
    for i, caption in enumerate(captions):
        ids = [index.get(w, 1) for w in words(caption)][:length]
        if ids:
            out[i, :len(ids)] = torch.tensor(ids, dtype=torch.long)
    return out


def _fill(template: str, values: dict[str, str]) -> str:
    """A template with its slots filled (empty slots vanish) and "a" -> "an" before a vowel."""
    ws = template.format(**values).split()
    for i in range(len(ws) - 1):
        if ws[i] == "a" and ws[i + 1][0] in "aeiou":
            ws[i] = "an"
    return " ".join(ws)


# ---------------------------------------------------------------------------------------------
# the synthesiser
# ---------------------------------------------------------------------------------------------


def _loguniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    import numpy as np

    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def _shape(length: int, attack: int, release: int) -> np.ndarray:
    """A trapezoid gain of ``length`` samples with linear attack and release (in samples)."""
    import numpy as np

    k = np.arange(length, dtype=np.float64)
    return np.clip(np.minimum((k + 1) / max(attack, 1), (length - k) / max(release, 1)), 0.0, 1.0)


def _bandpass(x: np.ndarray, sr: int, lo: float | None, hi: float | None, order: int = 4
              ) -> np.ndarray:
    """``x`` filtered in the frequency domain by Butterworth-shaped high-pass ``lo`` / low-pass ``hi``
    gains (zero phase; zero-padded to twice its length so the ringing does not wrap around)."""
    import numpy as np

    n = len(x)
    f = np.fft.rfftfreq(2 * n, 1.0 / sr)
    gain = np.ones_like(f)
    if hi is not None:
        gain /= np.sqrt(1.0 + (f / hi) ** (2 * order))
    if lo is not None:
        gain /= np.sqrt(1.0 + (lo / np.maximum(f, 1e-3)) ** (2 * order))
    return np.fft.irfft(np.fft.rfft(x, n=2 * n) * gain, n=2 * n)[:n]


def _phase(freq: np.ndarray, sr: int, start: float) -> np.ndarray:
    """Phase (radians) of an oscillator following the per-sample frequency ``freq``."""
    import numpy as np

    return start + 2 * np.pi * np.cumsum(freq) / sr


def _loudness(gain_db: float, rng: np.random.Generator) -> str:
    """A loudness word that is true of ``gain_db`` (or none, half the time)."""
    if rng.random() < 0.5:
        return ""
    if gain_db > -6:
        return "loud"
    if gain_db < -13:
        return str(rng.choice(["quiet", "soft", "faint"]))
    return ""


def synth_event(kind: str, pitch: str, rng: np.random.Generator, sr: int = SR, duration: float = DURATION
                ) -> tuple[np.ndarray, str]:
    """One event's audio (float32, exactly ``round(sr * duration)`` samples, peak <= 1) and a caption
    drawn from its attributes: random frequency within the register, length, onset (0-0.25 s, earlier
    where the event would not fit), loudness and envelope, all from ``rng``."""
    import numpy as np

    if kind not in KINDS:
        raise ValueError(f"unknown sound kind {kind!r} (expected one of {', '.join(KINDS)})")
    if pitch not in PITCHES:
        raise ValueError(f"unknown register {pitch!r} (expected one of {', '.join(PITCHES)})")
    n = round(sr * duration)
    if n < sr // 10:
        raise ValueError(f"synth_event: duration {duration} s is too short (at least 0.1 s)")
    nyq = 0.45 * sr
    low = pitch == "low"
    out = np.zeros(n)
    onset = int(rng.uniform(0.0, 0.25) * sr)
    gain_db = float(rng.uniform(-18.0, -1.0))
    ms = sr / 1000.0
    values = {"dur": "", "loud": _loudness(gain_db, rng), "count": "", "wave": "", "drum": ""}
    pick = rng.integers(4)

    if kind == "beep":
        f0 = min(_loguniform(rng, 200, 400) if low else _loguniform(rng, 1000, 2000), nyq)
        short = rng.random() < 0.5
        length = min(int((rng.uniform(0.1, 0.3) if short else rng.uniform(0.4, 0.8)) * sr), n)
        seg = np.sin(_phase(np.full(length, f0), sr, rng.uniform(0, 2 * np.pi)))
        seg *= _shape(length, int(rng.uniform(3, 20) * ms), int(rng.uniform(10, 60) * ms))
        if rng.random() < 0.5:  # a decaying rather than flat envelope
            seg *= np.exp(-np.arange(length) / (length * rng.uniform(0.3, 1.0)))
        values["dur"] = str(rng.choice(["short", "brief"])) if short else "long"
    elif kind in ("chirp_up", "chirp_down"):
        f_low = _loguniform(rng, 150, 300) if low else _loguniform(rng, 800, 1600)
        octaves = rng.uniform(1.0, 2.0)
        f_high = min(f_low * 2 ** octaves, nyq)
        t_len = rng.uniform(0.3, 0.8)
        length = min(int(t_len * sr), n)
        ramp = np.arange(length) / max(int(t_len * sr) - 1, 1)
        if kind == "chirp_down":
            ramp = 1.0 - ramp
        freq = f_low * (f_high / f_low) ** ramp
        seg = np.sin(_phase(freq, sr, rng.uniform(0, 2 * np.pi)))
        seg *= _shape(length, int(rng.uniform(5, 30) * ms), int(rng.uniform(10, 60) * ms))
        values["dur"] = "quick" if t_len < 0.45 else "slow" if t_len > 0.65 else ""
    elif kind == "drum":
        decay = rng.uniform(0.05, 0.4)  # time to -30 dB
        tau = decay / (30 / (20 * np.log10(np.e)))
        length = min(int(2 * decay * sr), n)
        t = np.arange(length) / sr
        env = np.exp(-t / tau)
        if low:
            body = _loguniform(rng, 60, 150)
            freq = body * (1.0 + rng.uniform(0.3, 1.0) * np.exp(-t / rng.uniform(0.01, 0.05)))
            tone = np.sin(_phase(freq, sr, 0.0))
            noise = _bandpass(rng.standard_normal(length), sr, None, rng.uniform(300, 900))
            noise /= max(np.abs(noise).max(), 1e-9)
            seg = env * tone + rng.uniform(0.2, 0.6) * np.exp(-t / (tau / 2)) * noise
            values["drum"] = str(rng.choice(["kick drum", "tom", "drum"]))
        else:
            lo_edge, hi_edge = rng.uniform(2500, 4000), min(rng.uniform(6000, 7600), nyq)
            seg = env * _bandpass(rng.standard_normal(length), sr, lo_edge, hi_edge)
            values["drum"] = str(rng.choice(["snare", "hi-hat", "drum"]))
        seg *= _shape(length, int(0.5 * ms), int(5 * ms))
        values["dur"] = "short" if decay < 0.12 else "long" if decay > 0.25 else ""
    elif kind == "clicks":
        count = int(rng.integers(2, 5))
        gaps = rng.uniform(0.06, 0.25, size=count - 1)
        span = gaps.sum()
        onset = int(rng.uniform(0.0, max(0.0, min(0.25, duration - span - 0.03))) * sr)
        starts = onset + np.concatenate([[0.0], np.cumsum(gaps)]) * sr
        burst, tail, tau = int(4 * ms), rng.uniform(0.05, 0.2), rng.uniform(0.3, 1.0) * ms
        pulses = np.zeros(n)
        for s in starts.astype(int):  # an impulse (same energy every click) with a short noisy tail
            m = min(burst, n - s)
            if m > 0:
                click = tail * rng.standard_normal(m) * np.exp(-np.arange(m) / tau)
                click[0] = rng.choice([-1.0, 1.0])
                pulses[s:s + m] += rng.uniform(0.7, 1.0) * click
        if low:
            out = _bandpass(pulses, sr, None, rng.uniform(400, 1000))
        else:
            out = _bandpass(pulses, sr, min(rng.uniform(2500, 5000), nyq), None)
        values["count"] = ("two", "three", "four")[count - 2]
        length = 0
        seg = np.zeros(0)
    else:  # buzz
        f0 = _loguniform(rng, 80, 160) if low else _loguniform(rng, 400, 800)
        square = rng.random() < 0.5
        t_len = rng.uniform(0.3, 0.8)
        length = min(int(t_len * sr), n)
        depth, rate = rng.uniform(0.0, 0.02), rng.uniform(3.0, 7.0)
        t = np.arange(length) / sr
        freq = f0 * (1.0 + depth * np.sin(2 * np.pi * rate * t))
        k_max = max(1, int(nyq / (f0 * (1.0 + depth))))  # band-limited: every harmonic below 0.45 sr
        size = 4096
        spectrum = np.zeros(size // 2 + 1, dtype=complex)
        ks = np.arange(1, min(k_max, size // 2 - 1) + 1)
        amps = np.where(ks % 2 == 1, 1.0 / ks, 0.0) if square else (-1.0) ** (ks + 1) / ks
        spectrum[ks] = -0.5j * size * amps  # irfft of this is sum_k amps_k sin(2 pi k m / size)
        table = np.fft.irfft(spectrum, n=size)
        pos = (_phase(freq, sr, rng.uniform(0, 2 * np.pi)) / (2 * np.pi) % 1.0) * size
        i0 = pos.astype(int) % size
        frac = pos - np.floor(pos)
        seg = table[i0] * (1 - frac) + table[(i0 + 1) % size] * frac
        seg *= _shape(length, int(rng.uniform(5, 40) * ms), int(rng.uniform(20, 100) * ms))
        values["wave"] = "square wave" if square else "sawtooth"
        values["dur"] = "short" if t_len < 0.45 else "long" if t_len > 0.65 else ""

    if length:
        onset = min(onset, n - length)  # the whole event fits in the clip
        out[onset:onset + length] = seg
    peak = np.abs(out).max()
    audio = (out / peak * 10 ** (gain_db / 20) if peak > 0 else out).astype(np.float32)
    if rng.random() < 0.3:
        values["dur"] = ""  # duration words are optional
    pool = _REGISTER[pitch] + (_TIMBRE[pitch] if kind in ("drum", "clicks", "buzz") else ())
    values["reg"] = str(pool[rng.integers(len(pool))])
    templates = _TEMPLATES[kind]
    return audio, _fill(templates[int(pick) % len(templates)], values)


def sound_events(n: int, seed: int = 0, sr: int = SR, duration: float = DURATION) -> list[Sound]:
    """``n`` synthesised events, the i-th of class ``i % 12`` (balanced) and otherwise drawn from
    ``np.random.default_rng([seed, i])``, so an item does not depend on ``n``; named ``event_00000``..."""
    import numpy as np

    if n < 0:
        raise ValueError(f"sound_events: n must be >= 0, got {n}")
    sounds = []
    for i in range(n):
        label = i % len(CLASSES)
        kind, pitch = CLASSES[label].rsplit("_", 1)
        audio, caption = synth_event(kind, pitch, np.random.default_rng([seed, i]), sr, duration)
        sounds.append(Sound(audio, sr, caption, label, f"event_{i:05d}"))
    return sounds


# ---------------------------------------------------------------------------------------------
# log-mel features and the vocoder
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MelSpec:
    """How audio becomes a normalised log-mel image: STFT (Hann, centred), ``n_mels`` triangular
    filters from 0 Hz to ``sr / 2`` (peak 1, so a band's power is the energy it holds), ``frames``
    frames of ``hop`` samples, ``top_db`` of dynamic range."""

    sr: int = SR
    n_fft: int = 1024
    hop: int = 256
    n_mels: int = 64
    frames: int = 64
    top_db: float = 80.0

    def __post_init__(self) -> None:
        for name in ("sr", "n_fft", "hop", "n_mels", "frames"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"MelSpec.{name} must be a positive integer, got {value!r}")
        if not self.top_db > 0:
            raise ValueError(f"MelSpec.top_db must be > 0, got {self.top_db!r}")

    def to_dict(self) -> dict:
        """Plain values (for checkpoints and JSON)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> MelSpec:
        """The spec :meth:`to_dict` wrote; unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        extra = sorted(set(d) - known)
        if extra:
            raise ValueError(f"MelSpec: unknown field(s) {', '.join(extra)} (expected {', '.join(sorted(known))})")
        return cls(**{k: (float(v) if k == "top_db" else int(v)) for k, v in d.items()})

    @property
    def samples(self) -> int:
        """Audio length the frames cover (``frames * hop``); audio is cropped / padded to it."""
        return self.frames * self.hop

    @property
    def reference(self) -> float:
        """The 0 dB mel power: a full-scale sine's total power in one periodic-Hann STFT frame,
        ``n_fft * sum(w**2) / 4 = 3 n_fft**2 / 32`` (fixed, so loudness is kept)."""
        return 3.0 * self.n_fft ** 2 / 32.0


def _mel_kwargs(spec: MelSpec) -> dict:
    return {"sr": spec.sr, "n_fft": spec.n_fft, "fmin": 0.0, "fmax": spec.sr / 2.0, "htk": False, "norm": None}


def _fit(audio: np.ndarray, samples: int) -> np.ndarray:
    """``audio`` (..., n) cropped or zero-padded on the right to ``samples``."""
    import numpy as np

    n = audio.shape[-1]
    if n >= samples:
        return audio[..., :samples]
    return np.concatenate([audio, np.zeros((*audio.shape[:-1], samples - n), dtype=audio.dtype)], axis=-1)


def mel_power(audio: np.ndarray, spec: MelSpec = MelSpec()) -> np.ndarray:
    """Mel power ``(..., n_mels, frames)`` of audio ``(..., n)`` cropped / padded to ``spec.samples``."""
    import librosa
    import numpy as np

    y = _fit(np.asarray(audio, dtype=np.float32), spec.samples)
    power = librosa.feature.melspectrogram(y=y, hop_length=spec.hop, n_mels=spec.n_mels, center=True,
                                           pad_mode="constant", power=2.0, **_mel_kwargs(spec))
    return power[..., :spec.frames]


def power_to_mel(power: np.ndarray, spec: MelSpec = MelSpec()) -> np.ndarray:
    """Mel power -> normalised log-mel: dB against ``spec.reference``, clipped to [-top_db, 0],
    mapped linearly to [-1, 1]."""
    import numpy as np

    db = 10.0 * np.log10(np.maximum(np.asarray(power, dtype=np.float64), 1e-30) / spec.reference)
    db = np.clip(db, -spec.top_db, 0.0)
    return (db / (spec.top_db / 2.0) + 1.0).astype(np.float32)


def mel_to_db(x: np.ndarray, spec: MelSpec = MelSpec()) -> np.ndarray:
    """Normalised log-mel -> dB against the reference (the inverse of the linear map)."""
    import numpy as np

    return (np.asarray(x, dtype=np.float64) - 1.0) * (spec.top_db / 2.0)


def db_to_mel_power(db: np.ndarray, spec: MelSpec = MelSpec()) -> np.ndarray:
    """dB against the reference -> mel power (the inverse of the log)."""
    import numpy as np

    return spec.reference * 10.0 ** (np.asarray(db, dtype=np.float64) / 10.0)


def mel_of(audio: np.ndarray, spec: MelSpec = MelSpec()) -> np.ndarray:
    """Normalised log-mel ``(n_mels, frames)`` float32 in [-1, 1] of audio ``(n,)`` (or ``(B, n)`` ->
    ``(B, n_mels, frames)``): no per-clip normalisation, so a full-scale sine is about +1 and
    loudness differences survive."""
    import numpy as np

    audio = np.asarray(audio)
    if audio.ndim not in (1, 2):
        raise ValueError(f"mel_of: expected audio of shape (n,) or (B, n), got {audio.shape}")
    if audio.shape[-1] == 0:
        raise ValueError("mel_of: empty audio")
    if not np.isfinite(audio).all():
        raise ValueError("mel_of: audio holds NaN or infinite samples")
    return power_to_mel(mel_power(audio, spec), spec)


@functools.lru_cache(maxsize=8)
def _mel_basis(spec: MelSpec) -> np.ndarray:
    import librosa
    import numpy as np

    return librosa.filters.mel(n_mels=spec.n_mels, dtype=np.float64, **_mel_kwargs(spec))


def stft_power_of(power: np.ndarray, spec: MelSpec = MelSpec(), n_iter: int = 30) -> np.ndarray:
    """A non-negative STFT power ``(..., n_fft // 2 + 1, T)`` whose mel power is ``power`` ``(..., n_mels, T)``.

    Starts from the mel bands' power spread evenly over their filters and refines it with
    multiplicative updates for the Itakura-Saito divergence, which weighs relative errors alike
    in loud and silent bands (the log-mel error is what matters); 30 updates fit the mel power to
    about 0.01 dB. Used instead of ``librosa.feature.inverse.mel_to_stft``, whose least squares
    takes seconds per clip and leaves silent bands far too loud in dB."""
    import numpy as np

    w = _mel_basis(spec)
    wt = np.ascontiguousarray(w.T)
    power = np.maximum(np.asarray(power, dtype=np.float64), 1e-30)
    x = (wt / np.maximum(w.sum(axis=1), 1e-12)) @ power
    for _ in range(n_iter):
        v = np.maximum(w @ x, 1e-30)
        x *= (wt @ (power / v ** 2)) / np.maximum(wt @ (1.0 / v), 1e-30)
    return x


def audio_of(mel: np.ndarray, spec: MelSpec = MelSpec(), n_iter: int = 32, seed: int = 0) -> np.ndarray:
    """Griffin-Lim vocoder: normalised log-mel ``(n_mels, frames)`` (or batched) -> float32 audio of
    ``spec.samples`` samples, peak-limited to 1.

    Like ``librosa.feature.inverse.mel_to_audio`` but with the mel inverse of :func:`stft_power_of`
    and ``librosa.griffinlim`` called directly, since the wrapper cannot pass ``momentum`` or a
    seeded initial phase: momentum 0.99, random initial phase from ``seed`` (deterministic). The
    last frame is repeated once so the frames cover exactly ``spec.samples`` samples."""
    import librosa
    import numpy as np

    mel = np.asarray(mel, dtype=np.float64)
    if mel.ndim not in (2, 3) or mel.shape[-2:] != (spec.n_mels, spec.frames):
        raise ValueError(f"audio_of: expected a mel of shape (..., {spec.n_mels}, {spec.frames}), got {mel.shape}")
    if not np.isfinite(mel).all():
        raise ValueError("audio_of: mel holds NaN or infinite values")
    power = db_to_mel_power(mel_to_db(np.clip(mel, -1.0, 1.0), spec), spec)
    power = np.concatenate([power, power[..., -1:]], axis=-1)
    magnitude = np.sqrt(stft_power_of(power, spec))
    y = librosa.griffinlim(magnitude, n_iter=n_iter, hop_length=spec.hop, win_length=spec.n_fft, n_fft=spec.n_fft,
                           center=True, length=spec.samples, pad_mode="constant", momentum=0.99, init="random",
                           random_state=np.random.default_rng(seed))
    peak = np.abs(y).max(axis=-1, keepdims=True)
    y = y / np.maximum(peak, 1.0)
    return y.astype(np.float32)


# ---------------------------------------------------------------------------------------------
# users' audio files
# ---------------------------------------------------------------------------------------------


# the first bytes of each format libsndfile reads here: a file whose start matches none is not decoded at all
# (libsndfile would hand it to its MPEG decoder, which prints noise and a misleading reason)
_MAGIC = {"WAV": ((0, b"RIFF"), (0, b"RIFX"), (0, b"RF64"), (0, b"BW64")), "FLAC": ((0, b"fLaC"), (0, b"ID3")),
          "OGG": ((0, b"OggS"),)}
_SUFFIX_FORMAT = {".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG"}


def _sniff(head: bytes) -> str | None:
    """The audio format whose signature ``head`` (the file's first bytes) starts with, or None."""
    for fmt, signatures in _MAGIC.items():
        for offset, magic in signatures:
            if head[offset:offset + len(magic)] == magic:
                if fmt == "WAV" and magic in (b"RIFF", b"RIFX") and head[8:12] != b"WAVE":
                    continue
                return fmt
    return None


def _not_audio_reason(file: Path, head: bytes) -> str:
    """Why a file whose first bytes match no audio format cannot be audio."""
    expected = _SUFFIX_FORMAT.get(file.suffix.lower(), "audio")
    if head.startswith(b"MThd"):
        return f"it is a MIDI file, not {expected} audio"
    if len(head) < 12:
        return f"only {len(head)} bytes, too short for a {expected} header (cut off?)"
    try:
        head.decode("utf-8")
        kind = "text"
    except UnicodeDecodeError:
        kind = "unknown binary data"
    return f"no {expected} header: the file starts with {kind} ({head[:8]!r})"


def cut_off(file: str | Path) -> str:
    """'' or why a WAV file looks cut off: its ``data`` chunk header promises more sample bytes
    than the file holds (libsndfile then reads what is there, silently). Other formats: ''."""
    import struct

    file = Path(file)
    try:
        size = file.stat().st_size
        with open(file, "rb") as fh:
            head = fh.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return ""
            pos, byte_rate = 12, 0
            for _ in range(64):  # a WAV has a handful of chunks before its data
                fh.seek(pos)
                chunk = fh.read(8)
                if len(chunk) < 8:
                    return ""
                cid, n = chunk[:4], struct.unpack("<I", chunk[4:])[0]
                if cid == b"fmt ":
                    fmt = fh.read(12)
                    byte_rate = struct.unpack("<I", fmt[8:12])[0] if len(fmt) == 12 else 0
                elif cid == b"data":
                    have = size - pos - 8
                    if n in (0, 0xFFFFFFFF) or have >= n:  # 0 / -1: a streamed WAV without a length
                        return ""
                    if byte_rate:
                        return (f"its header promises {n / byte_rate:.3g} s of audio, the file holds "
                                f"{max(have, 0) / byte_rate:.3g} s")
                    return f"its header promises {n} bytes of samples, the file holds {max(have, 0)}"
                pos += 8 + n + (n & 1)
    except OSError:
        return ""
    return ""


def load_audio(file: str | Path) -> tuple[np.ndarray, int]:
    """Mono float32 audio of a WAV / FLAC / OGG file at its own rate and that rate. Unusable
    files are a ValueError whose message is the reason only (the caller names the file): empty,
    not audio (checked on the first bytes, before any decoder sees them), undecodable, no
    samples, NaN or infinite samples."""
    import numpy as np
    import soundfile as sf

    file = Path(file)
    if not file.is_file():
        raise ValueError("no such file")
    if file.stat().st_size == 0:
        raise ValueError("empty file (0 bytes)")
    with open(file, "rb") as fh:
        head = fh.read(16)
    if _sniff(head) is None:
        raise ValueError(_not_audio_reason(file, head))
    try:
        data, sr = sf.read(str(file), dtype="float32", always_2d=True)
    except Exception as err:  # libsndfile's errors vary by format and version
        reason = str(err).strip() or type(err).__name__
        reason = reason.split(": ", 1)[1] if reason.startswith("Error opening") and ": " in reason else reason
        raise ValueError(f"cannot decode: {reason}") from None
    if data.size == 0:
        raise ValueError("no samples (a header without audio: cut off?)")
    y = data.mean(axis=1)
    bad = int((~np.isfinite(y)).sum())
    if bad == len(y):
        raise ValueError("all samples are NaN")
    if bad:
        raise ValueError(f"{bad} of {len(y)} samples are NaN or infinite")
    return y.astype(np.float32), int(sr)


def resample_audio(y: np.ndarray, sr: int, target: int) -> np.ndarray:
    """``y`` (read at ``sr`` Hz) at ``target`` Hz, float32. A ValueError with the reason only
    (the caller names the file) when nothing usable comes out: samples so large (a damaged
    float WAV holds values up to 1e38) that resampling overflows, or no samples left."""
    import numpy as np

    if sr == target:
        return np.asarray(y, dtype=np.float32)
    import librosa

    with np.errstate(over="ignore", invalid="ignore"):
        out = librosa.resample(y, orig_sr=sr, target_sr=target).astype(np.float32)
    if not np.isfinite(out).all():
        raise ValueError(f"samples too large to resample from {sr} to {target} Hz (up to "
                         f"{float(np.abs(y).max()):.3g}; audio lies within about [-1, 1])")
    if out.size == 0:
        raise ValueError(f"{len(y)} samples at {sr} Hz leave none at {target} Hz")
    return out


def _decode(file: Path, spec: MelSpec) -> tuple[np.ndarray, int]:
    """Mono float32 audio at ``spec.sr`` and ``spec.samples`` long, and its length before the
    crop / padding; ValueError with the reason if unusable."""
    y, sr = load_audio(file)
    y = resample_audio(y, sr, spec.sr)
    return _fit(y, spec.samples), y.shape[-1]


def _label_of(cell: str, where: str) -> int:
    cell = cell.strip()
    if not cell:
        return -1
    if cell in CLASSES:
        return CLASSES.index(cell)
    if cell == "none":  # a caption that names no class (empty would read the class from the caption)
        return -1
    if re.fullmatch(r"[0-9]+", cell) and int(cell) < len(CLASSES):
        return int(cell)
    raise ValueError(f"{where}: unknown label {cell!r} (expected a class name such as {CLASSES[0]!r} or an "
                     f"index 0-{len(CLASSES) - 1}, 'none', or empty)")


def _read_captions(csv_file: Path, folder: Path) -> dict[str, tuple[str, int, str]]:
    """captions.csv as {relative posix path: (caption, label or -2 = derive, where)}."""
    rows = csv_rows(csv_file, read_text(csv_file))
    if not rows:
        return {}
    line, header = rows[0]
    columns = [h.strip().lower() for h in header]
    for need in ("file", "caption"):
        if need not in columns:
            raise ValueError(f"{csv_file}:{line}: missing column {need!r} (the header must be file,caption[,label])")
    col = {name: columns.index(name) for name in ("file", "caption", "label") if name in columns}
    table: dict[str, tuple[str, int, str]] = {}
    for line, row in rows[1:]:
        where = f"{csv_file}:{line}"
        if len(row) != len(columns):
            raise ValueError(f"{where}: {len(row)} fields, the header has {len(columns)}")
        name = row[col["file"]].strip()
        if not name:
            raise ValueError(f"{where}: empty 'file'")
        rel = Path(os.path.normpath(name)).as_posix()
        if rel in table:
            raise ValueError(f"{where}: {name!r} is listed twice (first at {table[rel][2]})")
        if not (folder / rel).is_file():
            raise ValueError(f"{where}: names {name!r}, which is not a file in {folder}")
        if Path(rel).suffix.lower() not in AUDIO_SUFFIXES:
            raise ValueError(f"{where}: {name!r} is not a {'/'.join(AUDIO_SUFFIXES)} file")
        label = _label_of(row[col["label"]], where) if "label" in col and row[col["label"]].strip() else -2
        table[rel] = (row[col["caption"]].strip(), label, where)
    return table


def read_sounds(path: str | Path, spec: MelSpec = MelSpec()) -> list[Sound]:
    """Sounds from a folder (searched recursively; hidden files ignored) of .wav / .flac / .ogg
    files, or one such file, with captions from an optional ``captions.csv`` in the folder
    (header ``file,caption[,label]``, ``file`` relative to the folder, ``label`` a class name or
    index). Audio is mixed to mono, resampled to ``spec.sr`` and cropped / zero-padded to
    ``spec.samples`` (longer files are cropped to their start, with one warning that names them).
    Files that cannot be decoded, are empty or hold NaN are skipped with one warning; none
    usable, or a bad captions.csv, is a ValueError naming the file (and line).
    A sound without a caption row gets caption "" and label -1; with a caption but an empty label,
    the label :func:`caption_label` reads from it; the label ``none`` is -1."""

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if path.is_dir():
        folder = path
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES
                       and not any(part.startswith(".") for part in p.relative_to(path).parts))
        if not files:
            raise ValueError(f"{path}: no {'/'.join(AUDIO_SUFFIXES)} files in this folder")
    else:
        if path.suffix.lower() not in AUDIO_SUFFIXES:
            raise ValueError(f"{path}: not an audio file (expected {'/'.join(AUDIO_SUFFIXES)})")
        folder, files = path.parent, [path]
    captions = _read_captions(folder / CAPTIONS_FILE, folder) if (folder / CAPTIONS_FILE).is_file() else {}

    sounds, skipped, cut, long = [], [], [], []
    for file in files:
        try:
            audio, n = _decode(file, spec)
        except ValueError as err:
            if path.is_file():
                raise ValueError(f"{file}: not a readable audio file ({err})") from None
            skipped.append(f"{file.relative_to(folder).as_posix()} ({err})")
            continue
        if n > spec.samples:
            long.append(f"{file.relative_to(folder).as_posix()} ({n / spec.sr:.3g} s)")
        short = cut_off(file)
        if short:
            cut.append(f"{file.relative_to(folder).as_posix()} ({short})")
        caption, label, _ = captions.get(file.relative_to(folder).as_posix(), ("", -2, ""))
        if label == -2:
            label = caption_label(caption) if caption else -1
        sounds.append(Sound(audio, spec.sr, caption, label, file.stem))
    if not sounds:
        raise ValueError(f"{folder}: no usable audio file ({len(skipped)} skipped: {'; '.join(skipped[:3])})")
    if skipped:
        more = f"; and {len(skipped) - 3} more" if len(skipped) > 3 else ""
        warnings.warn(f"{folder}: skipped {len(skipped)} of {len(files)} audio files that are not readable audio: "
                      f"{'; '.join(skipped[:3])}{more}", stacklevel=2)
    if cut:
        more = f"; and {len(cut) - 3} more" if len(cut) > 3 else ""
        where = path if path.is_file() else folder
        warnings.warn(f"{where}: read {len(cut)} of {len(files)} audio files that look cut off as far as they go: "
                      f"{'; '.join(cut[:3])}{more}", stacklevel=2)
    if long:
        more = f"; and {len(long) - 3} more" if len(long) > 3 else ""
        where = path if path.is_file() else folder
        warnings.warn(f"{where}: kept the first {spec.samples / spec.sr:.4g} s (MelSpec.samples = {spec.samples} at "
                      f"{spec.sr} Hz) of {len(long)} of {len(files)} audio files that are longer: "
                      f"{'; '.join(long[:3])}{more}", stacklevel=2)
    return sounds


def write_wav(path: str | Path, audio: np.ndarray, sr: int) -> Path:
    """A mono 32-bit float WAV, written atomically. scipy writes it without libsndfile's PEAK
    chunk (which holds a time stamp), so the same audio always gives the same bytes and the
    file reads back exactly as the samples written."""
    import numpy as np
    from scipy.io import wavfile

    data = np.ascontiguousarray(np.asarray(audio, dtype=np.float32))
    return atomic_write(Path(path), lambda tmp: wavfile.write(str(tmp), int(sr), data))


def pcm_to_float(a: np.ndarray) -> np.ndarray:
    """Audio samples as floats with full scale 1: integer PCM divided by its full scale
    (unsigned PCM centred first), floats as they are."""
    import numpy as np

    a = np.asarray(a)
    if a.dtype.kind in "iu":
        full = float(np.iinfo(a.dtype).max) + 1
        return (a - full / 2) / (full / 2) if a.dtype.kind == "u" else a / full
    return a


def write_sounds(sounds: Sequence[Sound], out_dir: str | Path) -> list[Path]:
    """One 32-bit float WAV per sound (``NAME.wav``, clipped to [-1, 1]; integer PCM scaled to full
    scale 1) and ``captions.csv`` (file, caption, label name, or ``none`` for a captioned sound
    without a class, or empty), each written atomically;
    returns the paths (WAVs, then the CSV). A sound without a name is called ``sound_00000``...;
    duplicate names, and names that are no plain file name or start with a dot (a hidden file,
    which reading a folder skips), are errors."""
    import csv

    import numpy as np

    out_dir = Path(out_dir)
    names: dict[str, int] = {}
    for i, s in enumerate(sounds):
        name = s.name or f"sound_{i:05d}"
        if name in names:
            raise ValueError(f"write_sounds: sounds {names[name]} and {i} are both named {name!r}")
        if "/" in name or "\\" in name or name.startswith("."):
            raise ValueError(f"write_sounds: sound {i} has name {name!r}, which is not a plain file name (or starts "
                             "with a dot: a hidden file)")
        names[name] = i
        audio = np.asarray(s.audio)
        if audio.ndim != 1 or audio.size == 0:
            raise ValueError(f"write_sounds: sound {name!r} must be non-empty mono audio (n,), got {audio.shape}")
        if not np.isfinite(audio).all():
            raise ValueError(f"write_sounds: sound {name!r} holds NaN or infinite samples")
    paths, table = [], io.StringIO()
    writer = csv.writer(table, lineterminator="\n")
    writer.writerow(["file", "caption", "label"])
    for name, i in names.items():
        s = sounds[i]
        audio = np.clip(pcm_to_float(s.audio).astype(np.float32), -1.0, 1.0)
        file = out_dir / f"{name}.wav"
        paths.append(write_wav(file, audio, int(s.sr)))
        label = CLASSES[s.label] if 0 <= s.label < len(CLASSES) else "none" if s.caption else ""
        writer.writerow([file.name, s.caption, label])
    paths.append(atomic_write(out_dir / CAPTIONS_FILE, table.getvalue()))
    return paths
