"""Fuzzing the audio plugin's readers of users' files: MIDI files, a folder of sounds with its
``captions.csv``, folders of WAV / FLAC / OGG files read by the modality, stem sets
(``NAME_mix.wav`` with ``NAME_<voice>.wav``) and the mixture of ``polydiff audio separate``.
A damaged file ends in a typed error naming it, or in a result with the right number of
records (fewer only with a warning naming the file), never in a library's traceback."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf

from polydiff.fuzz import fuzz_reader
from polydiff_audio import AudioModality
from polydiff_audio.modality import Stems, read_stems, write_stems
from polydiff_audio.music import VOICES, Chorale, read_midi, write_midi
from polydiff_audio.separation import read_mixture
from polydiff_audio.sounds import MelSpec, Sound, read_sounds, sound_events, write_sounds, write_wav

pytestmark = pytest.mark.usefixtures("one_thread")


def test_fuzz_read_midi(tmp_path):
    tracks = np.array([[60, 60, 62, 0, 64, 64, 65, 67], [55, 55, 57, 57, 0, 59, 60, 60]])
    valid = write_midi(Chorale(tracks, ("soprano", "alto"), "piece"), tmp_path / "valid.mid").read_bytes()

    def check(c: Chorale) -> None:
        assert c.tracks.ndim == 2 and len(c.names) == c.tracks.shape[0] and c.step_seconds > 0

    print(fuzz_reader(read_midi, {"piece.mid": valid}, tmp_path / "fuzz", examples=120, expected=(ValueError, OSError),
                      count=lambda c: 1, check=check, tokens=(b"MThd", b"MTrk", b"\xff\x2f\x00", b"\x90\x3c\x50"),
                      name="read_midi"))


@pytest.mark.parametrize("target", ["captions.csv", "event_00000.wav"])
def test_fuzz_sound_folder(tmp_path, target):
    """A folder of two WAVs and its captions.csv, one file mutated: a clear error naming it, or
    both sounds read (a damaged row may only change a caption or a label), or one fewer with a
    warning naming the damaged WAV."""
    src = tmp_path / "src"
    write_sounds(sound_events(2, seed=0), src)
    files = {p.name: p.read_bytes() for p in sorted(src.iterdir())}
    print(fuzz_reader(read_sounds, files, tmp_path / "fuzz", examples=60, folder=True, mutate=[target],
                      count=len, records=lambda name, data: 2, expected=(ValueError, OSError),
                      name=f"read_sounds({target})"))


# -- audio files: WAV / FLAC / OGG, stems, the mixture ------------------------------------------------

SR = 8000
N = 800  # samples per stem (0.1 s at SR)
AUDIO_TOKENS = (b"RIFF", b"WAVE", b"fmt ", b"data", b"LIST", b"fLaC", b"OggS", b"\xff\xff\xff\x7f", b"\x00\x00\x00\x00",
                b"\x01\x00", b"\x03\x00", b"\x40\x1f\x00\x00")
FORMATS = {"wav": ("WAV", "PCM_16"), "float wav": ("WAV", "FLOAT"), "flac": ("FLAC", None), "ogg": ("OGG", None)}
"""Formats of users' audio files: (libsndfile format, subtype; None: the format's default)."""


@pytest.fixture(scope="module", autouse=True)
def _warm() -> None:
    """Import librosa and resample once, so that the harness's per-read time budget (a hang
    detector) does not meet the first import on a busy machine."""
    from polydiff_audio.sounds import resample_audio

    resample_audio(np.zeros(SR // 10, np.float32), SR, 16000)


def _tone(freq: float, n: int = N, sr: int = SR) -> np.ndarray:
    return (0.3 * np.sin(2 * np.pi * freq * np.arange(n) / sr)).astype(np.float32)


def _audio_bytes(audio: np.ndarray, sr: int, fmt: str) -> bytes:
    """``audio`` as a ``fmt`` file (a key of :data:`FORMATS`), written by libsndfile."""
    buf = io.BytesIO()
    sf.write(buf, audio, sr, format=FORMATS[fmt][0], subtype=FORMATS[fmt][1])
    return buf.getvalue()


def _suffix(fmt: str) -> str:
    return fmt.split()[-1]


def _formats() -> list:
    have = sf.available_formats()
    return [pytest.param(f, marks=pytest.mark.skipif(FORMATS[f][0] not in have, reason=f"libsndfile without {f}"))
            for f in FORMATS]


def _check_sounds(sounds: list[Sound]) -> None:
    spec = MelSpec()
    for s in sounds:
        assert isinstance(s, Sound) and s.sr == spec.sr and s.audio.shape == (spec.samples,), s
        assert s.audio.dtype == np.float32 and np.isfinite(s.audio).all(), f"{s.name}: non-finite samples"


@pytest.mark.parametrize("fmt", _formats())
def test_fuzz_audio_read_folder(tmp_path, fmt):
    """``polydiff evaluate DIR`` on a folder of two sounds (16-bit or float WAV, FLAC or OGG at
    8 kHz, resampled when read; no captions.csv), one of them damaged: a clear error naming it,
    or both read, or one with a warning naming the damaged one."""
    ext = _suffix(fmt)
    files = {f"{name}.{ext}": _audio_bytes(_tone(freq, 1600), SR, fmt) for name, freq in (("a", 440.0), ("b", 660.0))}
    print(fuzz_reader(AudioModality().read, files, tmp_path / "fuzz", examples=150, folder=True, mutate=[f"a.{ext}"],
                      count=len, records=lambda name, data: 2, check=_check_sounds, expected=(ValueError, OSError),
                      tokens=AUDIO_TOKENS, name=f"AudioModality.read({fmt} folder)"))


def _stem_files(tmp_path) -> dict[str, bytes]:
    """Two pieces of four stems (float WAVs, as ``polydiff sample`` writes them) and their mixes."""
    pieces = [Stems(np.stack([_tone(110.0 * (k + 2) + 30 * p) for k in range(len(VOICES))]), SR, VOICES, f"piece{p}")
              for p in range(2)]
    src = tmp_path / "src"
    write_stems(pieces, src)
    return {p.name: p.read_bytes() for p in sorted(src.iterdir())}


def _full_pieces(pieces: list[Stems]) -> int:
    """The pieces read whole: every stem at SR and N samples long (a shorter one needs a warning)."""
    return sum(1 for s in pieces if s.audio.shape == (len(VOICES), N) and s.sr == SR)


def _check_stems(pieces: list[Stems]) -> None:
    for s in pieces:
        assert isinstance(s, Stems) and s.audio.ndim == 2 and s.audio.shape[0] == len(s.names) == len(VOICES)
        assert s.audio.shape[1] > 0 and s.sr > 0 and np.isfinite(s.audio).all(), f"{s.name}: bad stems"


@pytest.mark.parametrize("reader", ["read_stems", "AudioModality.read"])
def test_fuzz_read_stems(tmp_path, reader):
    """A folder of two complete stem sets, one stem damaged: a clear error naming it, or both
    pieces read whole (a stem read shorter, as a cut-off file is, needs a warning naming it)."""
    read = read_stems if reader == "read_stems" else AudioModality().read
    print(fuzz_reader(read, _stem_files(tmp_path), tmp_path / "fuzz", examples=150, folder=True,
                      mutate=["piece0_alto.wav"], count=_full_pieces, records=lambda name, data: 2,
                      check=_check_stems, expected=(ValueError, OSError), tokens=AUDIO_TOKENS,
                      name=f"{reader}(stems folder)"))


@pytest.mark.parametrize("fmt", ["polydiff wav", *_formats()])
def test_fuzz_read_mixture(tmp_path, fmt):
    """The mixture of ``polydiff audio separate`` (at 16 kHz, read at SR; ``polydiff wav``: a
    float WAV as the plugin writes them): a clear error naming it, or its audio (mono float32,
    finite, not empty)."""
    if fmt == "polydiff wav":
        valid = write_wav(tmp_path / "v.wav", _tone(330.0, 3200, 16000), 16000).read_bytes()
    else:
        valid = _audio_bytes(_tone(330.0, 3200, 16000), 16000, fmt)
    name = f"mixture.{_suffix(fmt)}"

    def check(y: np.ndarray) -> None:
        assert isinstance(y, np.ndarray) and y.ndim == 1 and y.dtype == np.float32, f"{type(y)} {y.shape}"
        assert len(y) > 0 and np.isfinite(y).all(), f"{len(y)} samples, finite: {np.isfinite(y).all()}"

    print(fuzz_reader(lambda p: read_mixture(p, SR), {name: valid}, tmp_path / "fuzz", examples=150,
                      count=lambda y: 1, check=check, expected=(ValueError, OSError), tokens=AUDIO_TOKENS,
                      name=f"read_mixture({fmt})"))
