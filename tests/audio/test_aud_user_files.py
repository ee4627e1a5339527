"""Users' own files: how a folder is read (sounds, stems or MIDI), errors that name the culprit
(bad audio and MIDI files, mismatched or too small sets, non-SATB MIDI), drum tracks, cut-off
WAVs, and the mixture of ``polydiff audio separate`` (unreadable, cropped or padded)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from polydiff_audio import AudioModality
from polydiff_audio import music as M
from polydiff_audio import sounds as S
from polydiff_audio.modality import folder_kind
from polydiff_audio.separation import read_mixture, warn_length

pytestmark = pytest.mark.usefixtures("one_thread")

SR = 8000


def tone(path: Path, freq: float = 440.0, seconds: float = 0.25, sr: int = SR) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * sr)) / sr
    sf.write(str(path), (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), sr)
    return path


def midi(path: Path, tracks: list[tuple[str, int, list[int]]], type_: int = 1) -> Path:
    """A MIDI file with one track per (name, channel, pitches), quarter notes, after a title
    track; ``type_=0``: one track, the parts' notes sounding together."""
    import mido

    path.parent.mkdir(parents=True, exist_ok=True)
    mid = mido.MidiFile(type=type_, ticks_per_beat=480)
    if type_ == 0:
        tr = mido.MidiTrack()
        for k in range(max(len(p) for _, _, p in tracks)):
            parts = [(ch, p[k]) for _, ch, p in tracks if k < len(p)]
            tr.extend(mido.Message("note_on", note=p, velocity=80, channel=ch, time=0) for ch, p in parts)
            tr.extend(mido.Message("note_off", note=p, velocity=0, channel=ch, time=480 if i == 0 else 0)
                      for i, (ch, p) in enumerate(parts))
        mid.tracks.append(tr)
        mid.save(str(path))
        return path
    mid.tracks.append(mido.MidiTrack([mido.MetaMessage("track_name", name="piece", time=0)]))
    for name, ch, pitches in tracks:
        tr = mido.MidiTrack([mido.MetaMessage("track_name", name=name, time=0)] if name else [])
        for p in pitches:
            tr.append(mido.Message("note_on", note=p, velocity=80, channel=ch, time=0))
            tr.append(mido.Message("note_off", note=p, velocity=0, channel=ch, time=480))
        mid.tracks.append(tr)
    mid.save(str(path))
    return path


def satb(path: Path) -> Path:
    return midi(path, [("Soprano", 0, [72, 74]), ("Alto", 1, [67, 65]), ("Tenor", 2, [60, 59]),
                       ("Bass", 3, [48, 43])])


# -- which kind a folder is read as --------------------------------------------------------------

def test_a_file_named_mix_does_not_make_a_folder_of_stems(tmp_path):
    for i in range(3):
        tone(tmp_path / f"tone{i}.wav", 300 + 100 * i)
    tone(tmp_path / "final_mix.wav")
    tone(tmp_path / "final_soprano.wav")  # one stem of four: still not a stem set
    with pytest.warns(UserWarning, match=r"final_mix\.wav lack\(s\) some of their stems"):
        got = AudioModality().read(tmp_path)
    assert sorted(s.name for s in got) == ["final_mix", "final_soprano", "tone0", "tone1", "tone2"]


def test_complete_stem_sets_are_stems_and_other_audio_is_named(tmp_path):
    for v in (*M.VOICES, "mix"):
        tone(tmp_path / f"a_{v}.wav")
    tone(tmp_path / "stray.wav")
    with pytest.warns(UserWarning, match=r"1 complete stem set.*ignored 1 file\(s\): stray\.wav"):
        got = AudioModality().read(tmp_path)
    assert len(got) == 1 and got[0].names == M.VOICES and got[0].audio.shape[0] == 4


def test_a_stray_midi_in_a_wav_folder_is_ignored_with_a_warning(tmp_path):
    for i in range(3):
        tone(tmp_path / f"tone{i}.wav", 300 + 100 * i)
    satb(tmp_path / "ch0.mid")
    with pytest.warns(UserWarning, match=r"read its 3 audio file\(s\).*ignored 1 file\(s\): ch0\.mid"):
        got = AudioModality().read(tmp_path)
    assert [type(s).__name__ for s in got] == ["Sound"] * 3


def test_wavs_in_a_midi_folder_are_named_not_dropped_silently(tmp_path):
    for i in range(3):
        satb(tmp_path / f"ch{i}.mid")
    tone(tmp_path / "sub" / "tone0.wav")
    with pytest.warns(UserWarning, match=r"read its 3 MIDI file\(s\).*ignored 1 file\(s\): sub/tone0\.wav"):
        got = AudioModality().read(tmp_path)
    assert len(got) == 3 and all(isinstance(c, M.Chorale) for c in got)


def test_renderings_beside_their_midi_are_not_a_conflict(tmp_path):
    for i in range(2):  # as `polydiff sample` writes chorales: NAME.mid + NAME.wav
        satb(tmp_path / f"sample_{i}.mid")
        tone(tmp_path / f"sample_{i}.wav")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        kind, files, ignored, _ = folder_kind(tmp_path)
    assert kind == "midi" and len(files) == 2 and not ignored


def test_as_many_midi_as_audio_files_is_an_error(tmp_path):
    satb(tmp_path / "a.mid")
    tone(tmp_path / "b.wav")
    with pytest.raises(ValueError, match=r"1 MIDI file\(s\) \(a\.mid\) and as many audio files \(b\.wav\)"):
        AudioModality().read(tmp_path)


# -- evaluate: errors that name the culprit ------------------------------------------------------

def test_sounds_against_midi_says_which_holds_what(tmp_path):
    sounds = S.read_sounds(tone(tmp_path / "x.wav"), S.MelSpec())
    music = [M.read_midi(satb(tmp_path / "c.mid"))]
    mod = AudioModality()
    with pytest.raises(ValueError, match=r"evaluated files are sounds .* reference is MIDI music"):
        mod.evaluate(sounds * 2, music, {})
    with pytest.raises(ValueError, match=r"evaluated files are MIDI music .* reference is sounds"):
        mod.evaluate(music, sounds * 2, {})


def test_a_non_satb_midi_names_its_file_and_the_voices(tmp_path):
    good = [M.read_midi(satb(tmp_path / f"c{i}.mid")) for i in range(2)]
    piano = M.read_midi(midi(tmp_path / "piano.mid", [("", 0, [60, 64, 67])]))
    mod = AudioModality()
    with pytest.raises(ValueError, match=r"piano\.mid: track 1 is not named after a voice.*soprano, alto, tenor, bass"):
        mod.evaluate([*good, piano], good, {})
    with pytest.raises(ValueError, match=r"reference file \S*piano\.mid: track 1"):
        mod.evaluate(good, [piano], {})
    assert "pitch_class_distance" in mod.evaluate(good, good, {})


def test_one_sound_names_the_set_that_is_too_small(tmp_path):
    sounds = S.read_sounds(tone(tmp_path / "x.wav"), S.MelSpec())
    mod = AudioModality()
    with pytest.raises(ValueError, match=r"the reference holds only 1 sound.*give at least 2 sounds \(a folder"):
        mod.evaluate(sounds * 3, sounds, {})
    with pytest.raises(ValueError, match=r"the evaluated set holds only 1 sound"):
        mod.evaluate(sounds, sounds * 3, {})


def test_unreadable_audio_gives_a_reason_and_names_the_file(tmp_path):
    garbage = tmp_path / "bin.wav"
    garbage.write_bytes(b"\xff\xfe\x00garbage\x80\x81\n")
    with pytest.raises(ValueError, match=r"bin\.wav: not a readable audio file \(no WAV header"):
        AudioModality().read(garbage)
    text = tmp_path / "mol.wav"
    text.write_text("CCO\nc1ccccc1\n")
    with pytest.raises(ValueError, match=r"mol\.wav: not a readable audio file \(no WAV header: .*text"):
        AudioModality().read(text)
    header_only = tmp_path / "hdr.wav"
    header_only.write_bytes(tone(tmp_path / "t.wav").read_bytes()[:30])
    with pytest.raises(ValueError, match=r"hdr\.wav: not a readable audio file \(cannot decode: \S"):
        AudioModality().read(header_only)


@pytest.mark.parametrize("content,reason", [
    (b"", r"empty file \(0 bytes\)"),
    (b"MThd\x00\x00\x00\x06\x00\x01\x00\x04\x01\xe0MTrk\x00\x00\x00W\x00\xff", r"the file is cut off"),
    (b"\xff\xfe\x00garbage", r"no MIDI header"),
])
def test_unreadable_midi_gives_a_reason(tmp_path, content, reason):
    bad = tmp_path / "bad.mid"
    bad.write_bytes(content)
    with pytest.raises(ValueError, match=rf"bad\.mid: not a readable MIDI file \({reason}"):
        M.read_midi(bad)


def test_a_cut_off_wav_is_read_with_a_warning(tmp_path):
    whole = tone(tmp_path / "whole.wav", seconds=1.0)
    assert S.cut_off(whole) == ""
    cut = tmp_path / "cut" / "trunc.wav"
    cut.parent.mkdir()
    cut.write_bytes(whole.read_bytes()[:4000])
    assert "promises 1 s of audio, the file holds 0.247 s" in S.cut_off(cut)
    tone(tmp_path / "cut" / "ok.wav")
    with pytest.warns(UserWarning, match=r"read 1 of 2 audio files that look cut off.*trunc\.wav \(its header"):
        assert len(S.read_sounds(cut.parent)) == 2


# -- MIDI: drums, and errors that name the file once ---------------------------------------------

def test_drum_tracks_are_skipped_with_a_warning(tmp_path):
    f = midi(tmp_path / "with_drums.mid", [("Drums", 9, [36, 38, 40]), ("Soprano", 0, [72, 74, 76])])
    with pytest.warns(UserWarning, match=r"with_drums\.mid: skipped the drum notes .* 'Drums' \(track 2\)"):
        c = M.read_midi(f)
    assert c.names == ("soprano",) and c.tracks.tolist() == [[72] * 4 + [74] * 4 + [76] * 4]
    only = midi(tmp_path / "drums_only.mid", [("Drums", 9, [36, 38])])
    with pytest.raises(ValueError, match=r"drums_only\.mid: the MIDI file has only drum notes"):
        M.read_midi(only)
    mixed = midi(tmp_path / "type0.mid", [("", 9, [36]), ("", 0, [60])], type_=0)  # one track, two channels
    with pytest.warns(UserWarning, match=r"type0\.mid: skipped the drum notes"):
        assert M.read_midi(mixed).tracks.tolist() == [[60] * 4]


def test_an_observed_midi_error_names_the_file_once(tmp_path):
    import mido

    empty = mido.MidiFile(type=1)
    empty.tracks.append(mido.MidiTrack([mido.MetaMessage("track_name", name="Alto", time=0)]))
    empty.save(str(tmp_path / "nonotes.mid"))
    with pytest.raises(ValueError, match="no notes") as err:
        AudioModality().observation(tmp_path / "nonotes.mid", {"kind": "chorale"})
    assert str(err.value).count("nonotes.mid") == 1


# -- separate: the mixture --------------------------------------------------------------------------

def test_an_unreadable_mixture_gives_a_reason_without_warnings(tmp_path):
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "garbage.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunkjunk")
    satb(tmp_path / "soprano.mid")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no librosa deprecation warning
        for name, reason in [("empty.wav", r"empty file"), ("garbage.wav", r"cannot decode: \S"),
                             ("soprano.mid", r"not an audio file")]:
            with pytest.raises(ValueError, match=rf"{name}: .*{reason}"):
                read_mixture(tmp_path / name, SR)
        y = read_mixture(tone(tmp_path / "ok.wav", seconds=0.5, sr=16000), SR)
    assert y.shape == (4000,) and y.dtype == np.float32


def test_a_mixture_of_the_wrong_length_is_cropped_or_padded_with_a_warning():
    with pytest.warns(UserWarning, match=r"long\.wav: the mixture is 10 s long; the model separates 2 s.*8 s are left"):
        warn_length(Path("long.wav"), 10 * SR, 2 * SR, SR)
    with pytest.warns(UserWarning, match=r"tiny\.wav: the mixture is 0\.5 s long.*padded with 1\.5 s of silence"):
        warn_length(Path("tiny.wav"), SR // 2, 2 * SR, SR)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_length(Path("exact.wav"), 2 * SR, 2 * SR, SR)
