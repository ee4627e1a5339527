"""Fuzzing the audio plugin's readers of users' files: MIDI files and a folder of sounds with its
``captions.csv``. A damaged file ends in a typed error naming it, or in a result with the right
number of records (fewer only with a warning naming the file), never in a library's traceback."""

from __future__ import annotations

import numpy as np
import pytest

from polydiff.fuzz import fuzz_reader
from polydiff_audio.music import Chorale, read_midi, write_midi
from polydiff_audio.sounds import read_sounds, sound_events, write_sounds

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
