"""The audio plugin's data side: synthesiser, captions and tokenizer, log-mel features, the
Griffin-Lim vocoder, and reading / writing audio files."""

from __future__ import annotations

import warnings

import librosa
import numpy as np
import pytest
import soundfile as sf
import torch

from polydiff_audio import sounds as S

pytestmark = pytest.mark.usefixtures("one_thread")

SPEC = S.MelSpec()


def sine(freq: float, amp: float = 1.0, n: int = S.SR, sr: int = S.SR) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * freq * np.arange(n) / sr)).astype(np.float32)


@pytest.fixture(scope="module")
def events() -> list[S.Sound]:
    return S.sound_events(300, seed=7)


def by_class(events: list[S.Sound], name: str) -> list[np.ndarray]:
    return [e.audio for e in events if e.label == S.CLASSES.index(name)]


def centroid(audio: np.ndarray, sr: int = S.SR) -> float:
    """Power-weighted mean frequency of the whole clip (plain numpy FFT)."""
    power = np.abs(np.fft.rfft(audio.astype(np.float64))) ** 2
    return float((np.fft.rfftfreq(len(audio), 1 / sr) * power).sum() / power.sum())


# --- the synthesiser ----------------------------------------------------------------------------


def test_classes_and_kinds():
    assert len(S.CLASSES) == 12 and S.CLASSES[0] == "beep_low" and S.CLASSES[11] == "buzz_high"
    assert S.CLASSES.index("chirp_down_high") == 5


def test_events_deterministic_and_independent_of_n():
    a, b = S.sound_events(5, seed=1), S.sound_events(13, seed=1)
    for x, y in zip(a, b[:5]):
        assert np.array_equal(x.audio, y.audio) and x.caption == y.caption and x.label == y.label
    assert [e.name for e in a] == [f"event_{i:05d}" for i in range(5)]
    other = S.sound_events(5, seed=2)
    assert not any(np.array_equal(x.audio, y.audio) for x, y in zip(a, other))
    for e in b:
        assert e.audio.dtype == np.float32 and e.audio.shape == (16000,) and e.sr == S.SR
        assert 0 < np.abs(e.audio).max() <= 1.0


def test_events_balanced(events):
    counts = np.bincount([e.label for e in events[:24]], minlength=12)
    assert counts.tolist() == [2] * 12
    assert [e.label for e in events[:13]] == [*range(12), 0]


def test_length_follows_sr_and_duration():
    audio, caption = S.synth_event("buzz", "low", np.random.default_rng(0), sr=8000, duration=0.75)
    assert audio.shape == (6000,) and audio.dtype == np.float32 and np.isfinite(audio).all()
    assert S.caption_label(caption) == S.CLASSES.index("buzz_low")
    with pytest.raises(ValueError, match="kind 'bell'"):
        S.synth_event("bell", "low", np.random.default_rng(0))
    with pytest.raises(ValueError, match="register 'mid'"):
        S.synth_event("beep", "mid", np.random.default_rng(0))


def test_every_caption_maps_back_to_its_label(events):
    wrong = [(e.caption, S.CLASSES[e.label]) for e in events if S.caption_label(e.caption) != e.label]
    assert wrong == []
    assert len({e.caption for e in events}) > 60  # real variety of captions


def test_caption_label_by_hand():
    idx = S.CLASSES.index
    assert S.caption_label("a short high sine beep") == idx("beep_high")
    assert S.caption_label("A long, LOW beep.") == idx("beep_low")
    assert S.caption_label("a rising chirp from a high tone") == idx("chirp_up_high")
    assert S.caption_label("a falling low chirp") == idx("chirp_down_low")
    assert S.caption_label("a bright hi-hat hit") == idx("drum_high")
    assert S.caption_label("a deep kick drum") == idx("drum_low")
    assert S.caption_label("three dull clicks") == idx("clicks_low")
    assert S.caption_label("a quiet shrill buzzing tone") == idx("buzz_high")
    for unclear in ("two quick clicks", "a low high beep", "a low chirp", "a rising falling high chirp",
                    "a low beep and a low buzz", "", "a dog barking"):
        assert S.caption_label(unclear) == -1, unclear


def test_classes_differ_as_designed(events):
    # the low register sits clearly below the high one for every kind with a timbre register
    for kind in ("beep", "drum", "clicks", "buzz"):
        low = [centroid(a) for a in by_class(events, f"{kind}_low")]
        high = [centroid(a) for a in by_class(events, f"{kind}_high")]
        assert max(low) < min(high), kind
    # beeps: the strongest frequency lies in the register's range (1 Hz FFT resolution)
    freqs = np.fft.rfftfreq(S.SR, 1 / S.SR)
    for name, lo, hi in (("beep_low", 200, 400), ("beep_high", 1000, 2000)):
        for a in by_class(events, name):
            assert lo - 5 <= freqs[np.argmax(np.abs(np.fft.rfft(a)))] <= hi + 5
    # chirps: the dominant frequency rises (falls) from the first to the last loud frame
    for name, sign in (("chirp_up_low", 1), ("chirp_up_high", 1), ("chirp_down_low", -1), ("chirp_down_high", -1)):
        for a in by_class(events, name):
            mag = np.abs(librosa.stft(a, n_fft=1024, hop_length=256))
            loud = np.flatnonzero(mag.max(axis=0) > 0.1 * mag.max())
            first, last = mag[:, loud[1]].argmax(), mag[:, loud[-2]].argmax()
            assert sign * (last - first) > 0, name


def test_clicks_count_matches_caption(events):
    counts = {"two": 2, "three": 3, "four": 4}
    seen = 0
    for e in events:
        said = [counts[w] for w in S.words(e.caption) if w in counts]
        if e.label in (S.CLASSES.index("clicks_low"), S.CLASSES.index("clicks_high")) and said:
            envelope = np.convolve(np.abs(e.audio), np.ones(160), mode="same")  # 10 ms windows
            peaks = np.concatenate([[False], envelope > 0.3 * envelope.max()])
            onsets = np.flatnonzero(peaks[1:] & ~peaks[:-1])
            assert len(onsets) == said[0], e.caption
            seen += 1
    assert seen >= 5


# --- captions and tokens ------------------------------------------------------------------------


def test_vocab():
    assert S.VOCAB[:2] == ("<pad>", "<unk>")
    assert list(S.VOCAB[2:]) == sorted(set(S.VOCAB[2:]))
    assert len(S.VOCAB) <= 62
    assert {"beep", "chirp", "rising", "hihat", "clicks", "buzz", "low", "shrill"} <= set(S.VOCAB)


def test_tokenize(events):
    v = S.VOCAB.index
    t = S.tokenize(["A LOW, beep!", "", "a low kazoo"], length=5)
    assert t.dtype == torch.int64 and t.shape == (3, 5)
    assert t[0].tolist() == [v("a"), v("low"), v("beep"), 0, 0]
    assert t[1].tolist() == [0] * 5
    assert t[2].tolist() == [v("a"), v("low"), 1, 0, 0]
    assert S.tokenize(["two three four two three four"], length=4).tolist() == [[v("two"), v("three"), v("four"),
                                                                                  v("two")]]
    assert S.tokenize(["x y"], vocab=["<pad>", "<unk>", "y"]).tolist()[0][:3] == [1, 2, 0]
    tokens = S.tokenize([e.caption for e in events])
    assert tokens.shape == (300, 12) and (tokens != 1).all()  # every generated word is in the vocabulary
    assert ((tokens > 0).sum(dim=1) >= 2).all()
    with pytest.raises(TypeError):
        S.tokenize("a low beep")


# --- log-mel features ---------------------------------------------------------------------------


def test_spec_dict_round_trip():
    spec = S.MelSpec(n_mels=32, frames=40, top_db=60.0)
    assert S.MelSpec.from_dict(spec.to_dict()) == spec and spec.samples == 40 * 256
    assert SPEC.samples == 16384
    with pytest.raises(ValueError, match="unknown field"):
        S.MelSpec.from_dict({"sr": 16000, "bins": 3})
    with pytest.raises(ValueError, match="hop"):
        S.MelSpec(hop=0)


def test_mel_shape_range_and_batch():
    x = np.stack([sine(440, 0.3), sine(3000, 0.8), np.zeros(S.SR, np.float32)])
    m = S.mel_of(x)
    assert m.shape == (3, 64, 64) and m.dtype == np.float32
    assert m.min() >= -1 and m.max() <= 1
    np.testing.assert_allclose(m[1], S.mel_of(x[1]), atol=1e-6)
    assert (m[2] == -1).all()  # silence is the floor
    short = sine(440, 0.3, n=5000)
    np.testing.assert_allclose(S.mel_of(short), S.mel_of(np.pad(short, (0, SPEC.samples - 5000))), atol=1e-6)
    with pytest.raises(ValueError, match="NaN"):
        S.mel_of(np.full(100, np.nan))


def test_reference_is_full_scale_sine_power():
    # independently: the positive-frequency power of a full-scale on-bin sine in one periodic-Hann frame
    n = SPEC.n_fft
    w = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)
    frame = np.sin(2 * np.pi * 64 * np.arange(n) / n) * w
    assert SPEC.reference == pytest.approx((np.abs(np.fft.rfft(frame)) ** 2).sum(), rel=1e-9)
    # so a full-scale sine's loudest band is close to (and not above) 0 dB, wherever it sits
    for f in (150, 1000, 5000):
        assert -3.5 < S.mel_to_db(S.mel_of(sine(f))).max() <= 0.0


@pytest.mark.parametrize("freq", [300.0, 1000.0, 3000.0])
def test_sine_peaks_in_its_mel_band(freq):
    centres = librosa.mel_frequencies(SPEC.n_mels + 2, fmin=0.0, fmax=SPEC.sr / 2)[1:-1]
    m = S.mel_of(sine(freq, 0.5))
    assert m[:, 10:50].mean(axis=1).argmax() == np.abs(centres - freq).argmin()


def test_loudness_is_kept():
    loud, quiet = S.mel_to_db(S.mel_of(sine(1000, 0.5))), S.mel_to_db(S.mel_of(sine(1000, 0.05)))
    band = loud[:, 32].argmax()
    assert loud[band, 10:50] - quiet[band, 10:50] == pytest.approx(np.full(40, 20.0), abs=0.5)
    quarter = S.mel_to_db(S.mel_of(sine(1000, 0.125)))
    assert loud[band, 32] - quarter[band, 32] == pytest.approx(20 * np.log10(4), abs=0.5)


def test_normalisation_inverse():
    assert S.mel_to_db(np.array([1.0, 0.0, -1.0])).tolist() == [0.0, -40.0, -80.0]
    assert S.db_to_mel_power(np.array([0.0, -10.0])) == pytest.approx([SPEC.reference, SPEC.reference / 10])
    x = np.random.default_rng(0).uniform(-1, 1, size=(4, 64, 64))
    np.testing.assert_allclose(S.power_to_mel(S.db_to_mel_power(S.mel_to_db(x))), x, atol=1e-5)
    spec = S.MelSpec(top_db=60.0)
    np.testing.assert_allclose(S.power_to_mel(S.db_to_mel_power(S.mel_to_db(x, spec), spec), spec), x, atol=1e-5)


# --- the vocoder --------------------------------------------------------------------------------


def test_stft_power_of_fits_the_mel_power():
    mel = S.mel_of(np.stack([e.audio for e in S.sound_events(3, seed=4)]))
    power = S.db_to_mel_power(S.mel_to_db(mel))
    stft = S.stft_power_of(power)
    assert stft.shape == (3, SPEC.n_fft // 2 + 1, 64) and (stft >= 0).all()
    basis = librosa.filters.mel(sr=S.SR, n_fft=SPEC.n_fft, n_mels=64, fmin=0, fmax=S.SR / 2, norm=None)
    assert np.abs(S.power_to_mel(basis @ stft) - mel).max() < 0.02


def test_griffin_lim_round_trip():
    beeps = [e for e in S.sound_events(13, seed=11) if e.label in (0, 1)]
    mel = S.mel_of(np.stack([e.audio for e in beeps]))
    audio = S.audio_of(mel)
    assert audio.shape == (len(beeps), SPEC.samples) and audio.dtype == np.float32
    assert np.abs(audio).max() <= 1.0
    assert np.abs(S.mel_of(audio) - mel).mean(axis=(1, 2)).max() < 0.1
    one = S.audio_of(mel[0])
    assert one.shape == (SPEC.samples,)
    np.testing.assert_array_equal(one, S.audio_of(mel[0]))  # deterministic given the seed
    assert not np.array_equal(one, S.audio_of(mel[0], seed=1))
    with pytest.raises(ValueError, match="shape"):
        S.audio_of(np.zeros((64, 10)))


def test_loud_mel_is_peak_limited():
    audio = S.audio_of(np.ones((64, 64)))
    assert np.abs(audio).max() == pytest.approx(1.0)


# --- files --------------------------------------------------------------------------------------


def test_write_read_round_trip(tmp_path):
    sounds = S.sound_events(3, seed=5)
    sounds[2].caption, sounds[2].label = "", -1
    paths = S.write_sounds(sounds, tmp_path)
    assert [p.name for p in paths] == ["event_00000.wav", "event_00001.wav", "event_00002.wav", "captions.csv"]
    lines = (tmp_path / "captions.csv").read_text().splitlines()
    assert lines[0] == "file,caption,label"
    assert lines[1] == f"event_00000.wav,{sounds[0].caption},beep_low"
    assert lines[3] == "event_00002.wav,,"
    info = sf.info(str(paths[0]))
    assert info.samplerate == S.SR and info.subtype == "FLOAT" and info.channels == 1
    back = S.read_sounds(tmp_path)
    assert [b.name for b in back] == [s.name for s in sounds]
    assert [b.caption for b in back] == [s.caption for s in sounds]
    assert [b.label for b in back] == [0, 1, -1]
    for b, s in zip(back, sounds):
        assert b.sr == S.SR and b.audio.shape == (SPEC.samples,) and b.audio.dtype == np.float32
        np.testing.assert_allclose(b.audio[:16000], s.audio, atol=1 / 32768 + 1e-6)
        assert (b.audio[16000:] == 0).all()
    single = S.read_sounds(paths[1])
    assert len(single) == 1 and single[0].caption == sounds[1].caption and single[0].label == 1


def test_write_refuses_duplicates_and_nan(tmp_path):
    a = S.Sound(sine(440, 0.2), S.SR, name="x")
    with pytest.raises(ValueError, match="both named 'x'"):
        S.write_sounds([a, S.Sound(sine(440, 0.2), S.SR, name="x")], tmp_path)
    with pytest.raises(ValueError, match="NaN"):
        S.write_sounds([S.Sound(np.full(10, np.nan, np.float32), S.SR, name="y")], tmp_path)
    assert list(tmp_path.iterdir()) == []
    paths = S.write_sounds([S.Sound(sine(440, 2.0), S.SR)], tmp_path)  # unnamed, clipped on writing
    assert paths[0].name == "sound_00000.wav" and np.abs(sf.read(str(paths[0]))[0]).max() <= 1.0


def test_write_keeps_integer_pcm_captions_with_line_breaks_and_refuses_hidden_names(tmp_path):
    """int16 PCM is scaled to full scale 1 (it was cast and clipped to -1, 0, 1); a caption with
    a line break (quoted in captions.csv) reads back; a name with a leading dot would be a hidden
    file that reading skips."""
    pcm = (sine(440, 0.2) * 16384).astype(np.int16)
    S.write_sounds([S.Sound(pcm, S.SR, "a low beep\nsecond line", name="pcm")], tmp_path / "a")
    (back,) = S.read_sounds(tmp_path / "a")
    np.testing.assert_allclose(back.audio[:len(pcm)], pcm / 32768, atol=1e-6)
    assert back.caption == "a low beep\nsecond line"
    with pytest.raises(ValueError, match=r"sound 0 has name '\.take1'.*starts with a dot"):
        S.write_sounds([S.Sound(sine(440, 0.2), S.SR, name=".take1")], tmp_path / "b")


def test_captions_csv_labels_and_nesting(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ("a", "b", "sub/c", "d"):
        sf.write(str(tmp_path / f"{name}.wav"), sine(500, 0.3), S.SR)
    sf.write(str(tmp_path / ".hidden.wav"), sine(500, 0.3), S.SR)
    (tmp_path / "captions.csv").write_text(
        "file,caption,label\n"
        "a.wav,something odd,buzz_high\n"
        "b.wav,a deep kick drum,\n"
        "sub/c.wav,\"a falling, shrill chirp\",5\n")
    got = {s.name: (s.caption, s.label) for s in S.read_sounds(tmp_path)}
    assert got == {"a": ("something odd", 11), "b": ("a deep kick drum", 6),
                   "c": ("a falling, shrill chirp", 5), "d": ("", -1)}


@pytest.mark.parametrize(("text", "match"), [
    ("file,caption,label\na.wav,x,beep_low\nb.wav,y,kazoo_low\n", r"captions\.csv:3: unknown label 'kazoo_low'"),
    ("file,caption,label\na.wav,x,12\n", r"captions\.csv:2: unknown label '12'"),
    ("file,text\na.wav,x\n", r"captions\.csv:1: missing column 'caption'"),
    ("file,caption\na.wav,x\nnope.wav,y\n", r"captions\.csv:3: names 'nope\.wav'"),
    ("file,caption\na.wav,x,extra\n", r"captions\.csv:2: 3 fields"),
    ("file,caption\na.wav,x\na.wav,y\n", r"captions\.csv:3: 'a\.wav' is listed twice"),
])
def test_bad_captions_csv(tmp_path, text, match):
    for name in ("a", "b"):
        sf.write(str(tmp_path / f"{name}.wav"), sine(500, 0.3), S.SR)
    (tmp_path / "captions.csv").write_text(text)
    with pytest.raises(ValueError, match=match):
        S.read_sounds(tmp_path)


def test_unreadable_files_are_skipped_and_counted(tmp_path):
    sf.write(str(tmp_path / "good.wav"), sine(500, 0.3), S.SR)
    (tmp_path / "x.wav").write_bytes(np.random.default_rng(0).bytes(3000))
    (tmp_path / "empty.flac").write_bytes(b"")
    with pytest.warns(UserWarning, match=r"skipped 2 of 3 audio files") as caught:
        got = S.read_sounds(tmp_path)
    assert [s.name for s in got] == ["good"]
    message = str(caught[0].message)
    assert "x.wav (no WAV header" in message and "empty.flac (empty file" in message
    (tmp_path / "good.wav").unlink()
    with pytest.raises(ValueError, match=f"{tmp_path}: no usable audio file"):
        S.read_sounds(tmp_path)


def test_nan_file_is_skipped(tmp_path):
    sf.write(str(tmp_path / "ok.wav"), sine(500, 0.3), S.SR)
    sf.write(str(tmp_path / "nan.wav"), np.full(1000, np.nan, np.float32), S.SR, subtype="FLOAT")
    with pytest.warns(UserWarning, match=r"skipped 1 of 2.*nan\.wav \(all samples are NaN\)"):
        assert [s.name for s in S.read_sounds(tmp_path)] == ["ok"]


def test_missing_or_empty_folder(tmp_path):
    with pytest.raises(FileNotFoundError):
        S.read_sounds(tmp_path / "nothing")
    with pytest.raises(ValueError, match=r"no \.wav/\.flac/\.ogg files"):
        S.read_sounds(tmp_path)
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(ValueError, match="not an audio file"):
        S.read_sounds(tmp_path / "notes.txt")


def test_resample_stereo_22050(tmp_path):
    sr = 22050
    t = np.arange(sr) / sr
    stereo = np.stack([0.6 * np.sin(2 * np.pi * 440 * t), 0.2 * np.sin(2 * np.pi * 440 * t)], axis=1)
    sf.write(str(tmp_path / "st.flac"), stereo.astype(np.float32), sr)
    (snd,) = S.read_sounds(tmp_path / "st.flac")
    assert snd.sr == S.SR and snd.audio.shape == (SPEC.samples,) and snd.audio.dtype == np.float32
    body = snd.audio[1000:15000]  # away from the resampler's edges
    assert np.abs(body).max() == pytest.approx(0.4, abs=0.01)  # the mean of the two channels
    spectrum = np.abs(np.fft.rfft(snd.audio[:16000]))
    assert np.fft.rfftfreq(16000, 1 / S.SR)[spectrum.argmax()] == pytest.approx(440, abs=1)
    assert np.abs(snd.audio[16100:]).max() < 1e-3  # one second of audio, then padding


def test_ogg_is_read(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sf.write(str(tmp_path / "v.ogg"), sine(700, 0.5), S.SR, format="OGG", subtype="VORBIS")
        (snd,) = S.read_sounds(tmp_path)
    m = S.mel_of(snd.audio)
    assert np.abs(m - S.mel_of(sine(700, 0.5))).mean() < 0.1


def test_read_sounds_names_the_files_it_crops(tmp_path):
    """A file longer than MelSpec.samples keeps its start; that was silent (a 5 s clip lost 4 s)."""
    S.write_sounds([S.Sound(sine(440, 0.5, n=2 * S.SR), S.SR, name="long"),
                    S.Sound(sine(440, 0.5, n=S.SR // 2), S.SR, name="short")], tmp_path)
    with pytest.warns(UserWarning) as caught:
        got = S.read_sounds(tmp_path)
    (msg,) = [str(w.message) for w in caught]
    assert f"kept the first {SPEC.samples / S.SR:.4g} s" in msg and "1 of 2 audio files" in msg
    assert "long.wav (2 s)" in msg and "short" not in msg
    np.testing.assert_allclose(got[0].audio, sine(440, 0.5, n=SPEC.samples), atol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        S.read_sounds(tmp_path / "short.wav")  # nothing cropped: no warning


def test_a_captioned_sound_without_a_class_keeps_label_minus_one(tmp_path):
    """Written with an empty label, it read back as the class its caption names."""
    s = S.sound_events(1, seed=1)[0]
    assert S.caption_label(s.caption) >= 0
    s.label = -1
    S.write_sounds([s, S.Sound(sine(440, 0.5), S.SR, "", -1, "bare")], tmp_path)
    lines = (tmp_path / "captions.csv").read_text().splitlines()
    assert lines[1].endswith(",none") and lines[2] == "bare.wav,,"
    got = {b.name: (b.caption, b.label) for b in S.read_sounds(tmp_path)}
    assert got == {s.name: (s.caption, -1), "bare": ("", -1)}
