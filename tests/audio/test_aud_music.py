"""Chorales from music21, tokens, MIDI files, the synthesiser, stem spectrograms and separation."""

from __future__ import annotations

import math
import time
import warnings

import numpy as np
import pytest

from polydiff_audio import music as M

pytestmark = pytest.mark.usefixtures("one_thread")

FIRST3 = ["bwv10.7", "bwv101.7", "bwv102.7"]   # the first four-part files of the sorted corpus (bwv1.6 has 5 parts)
RANGES = {"soprano": (60, 79), "alto": (55, 74), "tenor": (48, 67), "bass": (40, 60)}


def _si_snr(est: np.ndarray, ref: np.ndarray) -> float:
    est, ref = est - est.mean(), ref - ref.mean()
    s_t = (est @ ref) / (ref @ ref) * ref
    e = est - s_t
    return 10 * np.log10((s_t @ s_t) / (e @ e))


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    """The first three chorales parsed into a fresh cache: (cache folder, chorales, CPU seconds;
    CPU time, so that other work on the machine does not make the bound fail)."""
    folder = tmp_path_factory.mktemp("chorale-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("POLYDIFF_CACHE_DIR", str(folder))
        t0 = time.process_time()
        with pytest.warns(UserWarning, match=r"skipped 1 corpus file.*bwv1\.6\.mxl has 5 parts"):
            chorales = M.load_chorales(3)
        yield folder, chorales, time.process_time() - t0


def _forbid_parsing(mp: pytest.MonkeyPatch) -> None:
    import music21

    def refuse(*args, **kwargs):
        raise RuntimeError("parsed the corpus")

    mp.setattr(music21.corpus, "parse", refuse)
    mp.setattr(music21.converter, "parse", refuse)


# -- loading -------------------------------------------------------------------------------------

def test_load_three_chorales(loaded):
    _, chorales, seconds = loaded
    assert seconds < 5
    assert [c.name for c in chorales] == FIRST3
    for c in chorales:
        assert c.tracks.dtype == np.int64 and c.tracks.shape[0] == 4
        assert c.names == M.VOICES and c.step_seconds == 0.125
        sounding = c.tracks[c.tracks > 0]
        assert sounding.min() >= M.LOW and sounding.max() <= M.HIGH
        inside = total = 0
        for row, name in zip(c.tracks, c.names, strict=True):
            lo, hi = RANGES[name]
            s = row[row > 0]
            inside += int(((s >= lo) & (s <= hi)).sum())
            total += s.size
        assert inside / total > 0.9


def test_loaded_chorale_matches_music21_notes(loaded):
    """Every note of the first chorale that starts on the grid sounds at its step (independent
    reading of the same file through music21)."""
    from music21 import corpus

    c = loaded[1][0]
    path = next(p for p in corpus.getComposer("bach") if p.name == "bwv10.7.mxl")
    score = corpus.parse(path)
    assert c.tracks.shape[1] == math.ceil(float(score.highestTime) * 4)
    checked = 0
    for k, part in enumerate(score.parts):
        for n in part.flatten().notes:
            off, ql = float(n.offset), float(n.quarterLength)
            if len(n.pitches) == 1 and ql >= 0.25 and off * 4 == int(off * 4):
                assert c.tracks[k, int(off * 4)] == n.pitches[0].midi, (k, off)
                checked += 1
    assert checked > 100


def test_cache_hit_does_not_parse(loaded, monkeypatch):
    folder, chorales, _ = loaded
    monkeypatch.setenv("POLYDIFF_CACHE_DIR", str(folder))
    _forbid_parsing(monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = M.load_chorales(3)
        two = M.load_chorales(2)
    assert [c.name for c in again] == FIRST3 and len(two) == 2
    for a, b in zip(again, chorales, strict=True):
        np.testing.assert_array_equal(a.tracks, b.tracks)
        assert a.tracks.dtype == np.int64
    with pytest.raises(RuntimeError, match="parsed"):   # more than the cache holds: parsing resumes
        M.load_chorales(4)


def test_larger_request_resumes_parsing(tmp_path, monkeypatch):
    import music21

    monkeypatch.setenv("POLYDIFF_CACHE_DIR", str(tmp_path))
    with pytest.warns(UserWarning, match="skipped 1"):
        assert [c.name for c in M.load_chorales(1)] == FIRST3[:1]
    parsed = []
    real = music21.corpus.parse
    monkeypatch.setattr(music21.corpus, "parse", lambda p, *a, **k: parsed.append(p.name) or real(p, *a, **k))
    assert [c.name for c in M.load_chorales(2)] == FIRST3[:2]
    assert parsed == ["bwv101.7.mxl"]


def test_corrupt_cache_is_rebuilt(loaded, monkeypatch):
    folder, chorales, _ = loaded
    monkeypatch.setenv("POLYDIFF_CACHE_DIR", str(folder))
    files = list((folder / "audio").glob("*.npz"))
    assert len(files) == 1
    files[0].write_bytes(b"not an npz archive")
    with pytest.warns(UserWarning, match="unreadable chorale cache"), pytest.warns(UserWarning, match="skipped 1"):
        rebuilt = M.load_chorales(3)
    for a, b in zip(rebuilt, chorales, strict=True):
        np.testing.assert_array_equal(a.tracks, b.tracks)
    _forbid_parsing(monkeypatch)           # the rebuilt cache serves the next call
    assert len(M.load_chorales(3)) == 3


def test_negative_n_is_refused():
    with pytest.raises(ValueError, match="n must be"):
        M.load_chorales(-1)


# -- tokens, windows, transposition ------------------------------------------------------------------

def test_token_round_trip_and_range_errors():
    assert M.VOCAB == M.HIGH - M.LOW + 2
    pitches = np.array([[0, M.LOW, 60, M.HIGH]])
    tok = M.to_tokens(pitches)
    np.testing.assert_array_equal(tok, [[0, 1, 60 - M.LOW + 1, M.VOCAB - 1]])
    np.testing.assert_array_equal(M.from_tokens(tok), pitches)
    with pytest.raises(ValueError, match=str(M.LOW - 1)):
        M.to_tokens(np.array([[60, M.LOW - 1]]))
    with pytest.raises(ValueError, match=str(M.HIGH + 1)):
        M.to_tokens(np.array([M.HIGH + 1]))
    with pytest.raises(ValueError, match=str(M.VOCAB)):
        M.from_tokens(np.array([M.VOCAB]))
    with pytest.raises(ValueError, match="-1"):
        M.from_tokens(np.array([-1]))


def test_windows_drop_windows_with_a_silent_voice():
    rng = np.random.default_rng(0)
    tracks = rng.integers(50, 70, size=(4, 70))
    tracks[2, 32:64] = 0                       # the tenor rests for the whole window starting at 32
    w = M.windows([M.Chorale(tracks)], length=32, hop=16)
    assert w.shape == (2, 4, 32) and w.dtype == np.int64   # starts 0, 16 (32 dropped; 48 does not fit)
    np.testing.assert_array_equal(w[0], M.to_tokens(tracks[:, :32]))
    np.testing.assert_array_equal(w[1], M.to_tokens(tracks[:, 16:48]))
    assert M.windows([M.Chorale(tracks[:, :10])], 32, 16).shape == (0, 4, 32)
    with pytest.raises(ValueError, match="tracks"):
        M.windows([M.Chorale(tracks), M.Chorale(tracks[:3], M.VOICES[:3])], 32, 16)


def test_shift_range_and_transpose():
    pitches = np.array([[79, 0, 70], [40, 50, 0]])
    tok = M.to_tokens(pitches)
    lo, hi = M.shift_range(tok)
    assert (lo, hi) == (M.LOW - 40, M.HIGH - 79)
    for k in range(lo, hi + 1):
        moved = M.transpose(tok, k)
        np.testing.assert_array_equal(M.from_tokens(moved), np.where(pitches > 0, pitches + k, 0))
    with pytest.raises(ValueError, match="out of"):
        M.transpose(tok, hi + 1)
    with pytest.raises(ValueError, match="out of"):
        M.transpose(tok, lo - 1)
    assert M.shift_range(np.zeros((2, 3), int)) == (M.LOW - M.HIGH, M.HIGH - M.LOW)


def test_notes_are_runs():
    assert M.notes(np.array([60, 60, 0, 62, 62, 62, 0, 62])) == [(0, 2, 60), (3, 3, 62), (7, 1, 62)]
    assert M.notes(np.array([], dtype=int)) == []
    assert M.notes(np.zeros(4, int)) == []


# -- MIDI ----------------------------------------------------------------------------------------------

def test_midi_round_trip(tmp_path):
    import mido

    tracks = np.array([[72, 72, 74, 0, 0, 76, 76, 76],
                       [67, 67, 67, 67, 65, 65, 0, 64],
                       [60, 62, 64, 65, 67, 69, 71, 72],
                       [48, 0, 48, 0, 43, 43, 43, 43]])
    c = M.Chorale(tracks, M.VOICES, "piece", step_seconds=0.1)
    path = M.write_midi(c, tmp_path / "piece.mid")
    mid = mido.MidiFile(str(path))
    assert mid.type == 1 and mid.ticks_per_beat == 480
    names = [next((m.name for m in t if m.type == "track_name"), None) for t in mid.tracks]
    assert names[-4:] == list(M.VOICES)
    chans = [{m.channel for m in t if m.type in ("note_on", "note_off")} for t in mid.tracks[1:]]
    assert [len(ch) for ch in chans] == [1, 1, 1, 1] and len(set.union(*chans)) == 4
    back = M.read_midi(path)
    np.testing.assert_array_equal(back.tracks, tracks)
    assert back.names == M.VOICES and back.name == "piece"
    assert back.step_seconds == pytest.approx(0.1)


def test_midi_round_trip_of_a_chorale(loaded, tmp_path):
    c = loaded[1][1]
    back = M.read_midi(M.write_midi(c, tmp_path / "c.mid"))
    np.testing.assert_array_equal(back.tracks, c.tracks)
    rests = M.Chorale(np.pad(c.tracks[:, :8], ((0, 0), (0, 5))), c.names, "tail")  # trailing rests survive
    np.testing.assert_array_equal(M.read_midi(M.write_midi(rests, tmp_path / "r.mid")).tracks, rests.tracks)
    silent = M.Chorale(np.stack([c.tracks[0], 0 * c.tracks[1]]), ("soprano", "alto"), "soprano")
    two = M.read_midi(M.write_midi(silent, tmp_path / "s.mid"))  # a silent alto stays; the title is no voice
    assert two.names == ("soprano", "alto") and two.name == "soprano"
    np.testing.assert_array_equal(two.tracks, silent.tracks)
    assert back.names == c.names and back.step_seconds == pytest.approx(0.125)


def test_read_midi_written_by_mido(tmp_path):
    import mido

    mid = mido.MidiFile(type=1, ticks_per_beat=96)
    tr = mido.MidiTrack()
    mid.tracks.append(tr)
    tr.append(mido.MetaMessage("track_name", name="Soprano", time=0))
    tr.append(mido.Message("note_on", note=60, velocity=90, time=0))
    tr.append(mido.Message("note_off", note=60, velocity=0, time=96))      # one beat = 4 sixteenths
    tr.append(mido.Message("note_on", note=64, velocity=90, time=0))
    tr.append(mido.Message("note_on", note=64, velocity=0, time=48))       # velocity 0 = off
    tr.append(mido.Message("note_on", note=67, velocity=90, time=0))       # a chord: the top note wins
    tr.append(mido.Message("note_on", note=72, velocity=90, time=0))
    tr.append(mido.Message("note_off", note=67, velocity=0, time=47))     # 47 ticks round to 2 steps
    tr.append(mido.Message("note_off", note=72, velocity=0, time=1))
    mid.save(str(tmp_path / "sop.mid"))
    c = M.read_midi(tmp_path / "sop.mid")
    np.testing.assert_array_equal(c.tracks, [[60, 60, 60, 60, 64, 64, 72, 72]])
    assert c.names == ("soprano",) and c.name == "sop" and c.step_seconds == pytest.approx(0.125)

    slow = mido.MidiFile(type=1, ticks_per_beat=96)
    t2 = mido.MidiTrack()
    slow.tracks.append(t2)
    t2.append(mido.MetaMessage("set_tempo", tempo=600000, time=0))
    t2.append(mido.MetaMessage("track_name", name="melody", time=0))
    t2.append(mido.Message("note_on", note=50, velocity=90, time=24))
    t2.append(mido.Message("note_off", note=50, velocity=0, time=24))
    slow.save(str(tmp_path / "slow.mid"))
    s = M.read_midi(tmp_path / "slow.mid")
    np.testing.assert_array_equal(s.tracks, [[0, 50]])
    assert s.names == ("track1",) and s.step_seconds == pytest.approx(0.15)


def test_a_track_on_two_channels_is_two_tracks_and_a_damaged_length_is_refused(tmp_path):
    """A type-1 track holding a melody (channel 0) and a bass (channel 1) kept only the top line;
    a delta time of 2^28 ticks asked for gigabytes."""
    import mido

    mid = mido.MidiFile(type=1, ticks_per_beat=96)
    tr = mido.MidiTrack()
    mid.tracks.append(tr)
    tr.append(mido.Message("note_on", note=60, velocity=90, channel=0, time=0))
    tr.append(mido.Message("note_on", note=48, velocity=90, channel=1, time=0))
    tr.append(mido.Message("note_off", note=60, velocity=0, channel=0, time=96))
    tr.append(mido.Message("note_off", note=48, velocity=0, channel=1, time=0))
    mid.save(str(tmp_path / "two.mid"))
    np.testing.assert_array_equal(M.read_midi(tmp_path / "two.mid").tracks, [[60] * 4, [48] * 4])
    huge = mido.MidiFile(type=1, ticks_per_beat=1)
    huge.tracks.append(mido.MidiTrack([mido.Message("note_on", note=60, velocity=90, time=0),
                                       mido.Message("note_off", note=60, velocity=0, time=0x0FFFFFFF)]))
    huge.save(str(tmp_path / "huge.mid"))
    with pytest.raises(ValueError, match=r"huge\.mid: the piece would be 1,073,741,820 sixteenth steps long"):
        M.read_midi(tmp_path / "huge.mid")


def test_unreadable_midi_names_the_file(tmp_path):
    import mido

    bad = tmp_path / "broken.mid"
    bad.write_bytes(b"this is not a MIDI file")
    with pytest.raises(ValueError, match=r"broken\.mid.*not a readable MIDI"):
        M.read_midi(bad)
    empty = mido.MidiFile(type=1)
    empty.tracks.append(mido.MidiTrack([mido.MetaMessage("track_name", name="Alto", time=0)]))
    empty.save(str(tmp_path / "empty.mid"))
    with pytest.raises(ValueError, match=r"empty\.mid.*no notes"):
        M.read_midi(tmp_path / "empty.mid")
    with pytest.raises(FileNotFoundError, match=r"missing\.mid"):
        M.read_midi(tmp_path / "missing.mid")


# -- synthesis -----------------------------------------------------------------------------------------

def _spectrum(x: np.ndarray, sr: int) -> tuple[np.ndarray, np.ndarray]:
    return np.fft.rfftfreq(x.size, 1 / sr), np.abs(np.fft.rfft(x))


def _at(freqs: np.ndarray, mag: np.ndarray, f: float) -> float:
    return float(mag[np.abs(freqs - f) <= 3].max())


def test_render_shape_level_and_a440():
    tracks = np.full((4, 16), 69)                       # A4 for 2 s in every voice
    a = M.render(tracks)
    assert a.shape == (4, 16000) and a.dtype == np.float32
    assert np.abs(a).max() <= 0.25 + 1e-6 and (np.abs(a).max(1) > 0.2).all()
    np.testing.assert_array_equal(a, M.render(tracks))  # deterministic
    for k in range(4):
        freqs, mag = _spectrum(a[k], 8000)
        assert freqs[mag.argmax()] == pytest.approx(440.0, abs=0.5)
    assert M.render(np.zeros((2, 5), int), sr=16000, step_seconds=0.1).shape == (2, 5 * 1600)
    assert not M.render(np.zeros((2, 5), int)).any()
    five = M.render(np.full((5, 4), 60))
    np.testing.assert_array_equal(five[4], five[0])      # a fifth voice reuses the soprano's timbre


def test_render_timbres_differ():
    a = M.render(np.full((4, 16), 57))                  # A3 = 220 Hz
    ratio = []
    for k in range(4):
        freqs, mag = _spectrum(a[k], 8000)
        f1 = _at(freqs, mag, 220)
        ratio.append((_at(freqs, mag, 440) / f1, _at(freqs, mag, 660) / f1))
    (s2, s3), (a2, a3), (t2, t3), (b2, b3) = ratio
    assert s3 < 0.1 and s2 < 0.2                         # soprano: nearly a sine
    assert a2 < 0.01 and a3 == pytest.approx(1 / 9, rel=0.1)   # alto: odd harmonics 1/n^2
    assert t2 < 0.01 and t3 == pytest.approx(1 / 3, rel=0.1)   # tenor: odd harmonics 1/n
    assert b2 == pytest.approx(1 / 2, rel=0.1) and b3 == pytest.approx(1 / 3, rel=0.1)   # bass: all, 1/n
    centroids = []
    for k in range(4):
        freqs, mag = _spectrum(a[k], 8000)
        centroids.append(float((freqs * mag).sum() / mag.sum()))
    assert centroids == sorted(centroids)


def test_render_is_band_limited_and_articulated():
    a = M.render(np.full((4, 16), 81))[3]               # bass at 880 Hz: harmonics up to 3520 Hz
    freqs, mag = _spectrum(a, 8000)
    assert _at(freqs, mag, 3520) / mag.max() > 0.1
    assert _at(freqs, mag, 3600) / mag.max() < 1e-3     # where the 5th harmonic (4400 Hz) would alias
    change = M.render(np.array([[69] * 4 + [72] * 4]))[0]
    assert np.abs(change[3995:4005]).max() < 0.02        # release then attack at the note change
    assert np.abs(change[2000:2100]).max() > 0.2


# -- stem spectrograms ---------------------------------------------------------------------------------

def test_stem_spec():
    spec = M.StemSpec()
    assert M.StemSpec.from_dict(spec.to_dict()) == spec
    assert spec.frames_per_step(0.125) == 4
    with pytest.raises(ValueError, match="hops"):
        spec.frames_per_step(0.1)
    with pytest.raises(ValueError, match="colour"):
        M.StemSpec.from_dict({"colour": 1})


def test_stem_mels_range_and_levels():
    spec = M.StemSpec()
    t = np.arange(8000) / 8000
    sine = np.sin(2 * np.pi * 1000 * t)
    audio = np.stack([sine, 0.5 * sine, 0.05 * sine, np.zeros(8000)])
    mel = M.stem_mels(audio, spec)
    assert mel.shape == (4, 48, 32) and mel.dtype == np.float32
    assert mel.min() >= -1 and mel.max() <= 1
    assert mel[0].max() == pytest.approx(1.0, abs=0.02)          # a full-scale sine is ~0 dB
    assert mel[1].max() - mel[2].max() == pytest.approx(2 * 20 / 80, abs=1e-3)   # 20 dB apart
    assert (mel[3] == -1).all()
    assert M.stem_mels(np.zeros(1100), spec).shape == (1, 48, 4)
    rendered = M.stem_mels(M.render(np.full((4, 8), 60)), spec)
    assert rendered.shape == (4, 48, 8 * 4) and rendered.max() < 1


def test_stems_audio_griffin_lim():
    spec = M.StemSpec()
    tracks = np.array([[72, 72, 74, 74, 76, 76, 77, 77], [0] * 8])
    mel = M.stem_mels(M.render(tracks), spec)
    audio = M.stems_audio(mel, spec, n_iter=16)
    assert audio.shape == (2, 8 * 1000) and audio.dtype == np.float32
    assert not audio[1].any()                                      # a silent stem stays silent
    assert np.abs(M.stem_mels(audio, spec)[0] - mel[0]).mean() < 0.15


def test_separate_with_true_mels():
    spec = M.StemSpec()
    tracks = np.array([[72, 72, 74, 74, 76, 76, 74, 74, 72, 72, 71, 71, 72, 72, 72, 72],
                       [48, 48, 43, 43, 45, 45, 47, 47, 48, 48, 50, 50, 52, 52, 48, 48]])
    full = np.zeros((4, 32), dtype=np.int64)
    full[0], full[3] = np.repeat(tracks[0], 2), np.repeat(tracks[1], 2)
    stems = M.render(full)[[0, 3]]                       # soprano and bass timbres, 4 s
    mix = stems.sum(0)
    est = M.separate(mix, M.stem_mels(stems, spec), spec)
    assert est.shape == stems.shape
    np.testing.assert_allclose(est.sum(0), mix, atol=1e-4)
    for k in range(2):
        assert _si_snr(est[k].astype(float), stems[k].astype(float)) - _si_snr(mix, stems[k].astype(float)) > 10
    with pytest.raises(ValueError, match="frames"):
        M.separate(mix, M.stem_mels(stems, spec)[:, :, :-3], spec)


def test_midi_files_against_the_default_sounds_name_the_fix():
    """MIDI evaluated without --reference met the default sound data: the error now names the
    chorales recipe (--config audio:chorales) as well as --reference."""
    import polydiff
    from polydiff_audio import sounds as S

    tracks = np.random.default_rng(0).integers(50, 70, size=(4, 40))
    with pytest.raises(ValueError, match=r"MIDI music \(chorales\) but the reference is sounds .*--config "
                                         r"audio:chorales"):
        polydiff.load_modality("audio").evaluate([M.Chorale(tracks)], S.sound_events(2, seed=0), {})
