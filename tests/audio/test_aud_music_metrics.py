"""Music statistics and separation scores on tiny hand-built cases with hand-computed answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from polydiff_audio import music_metrics as mm
from polydiff_audio.music import VOICES, Chorale

pytestmark = pytest.mark.usefixtures("one_thread")


def test_voices_match_music_module():
    assert mm.VOICES == VOICES


def test_pitch_class_histogram_counts_sounding_steps():
    a = np.array([[60, 60, 62, 0], [67, 67, 67, 67]])
    h = mm.pitch_class_histogram([a])
    want = np.zeros(12)
    want[0], want[2], want[7] = 2 / 7, 1 / 7, 4 / 7   # C for 2 steps, D for 1, G for 4
    np.testing.assert_allclose(h, want)
    # a (N, K, T) array and Chorale objects give the same
    np.testing.assert_allclose(mm.pitch_class_histogram(a[None]), want)
    np.testing.assert_allclose(mm.pitch_class_histogram([Chorale(a, ("soprano", "alto"))]), want)
    assert not mm.pitch_class_histogram([np.zeros((2, 3), int)]).any()


def test_pitch_class_distance():
    only_c = [np.array([[60, 72]])]
    c_and_g = [np.array([[60, 67]])]
    assert mm.pitch_class_distance(only_c, c_and_g) == pytest.approx(0.5)  # 0.5 * (|1 - .5| + |0 - .5|)
    assert mm.pitch_class_distance(c_and_g, c_and_g) == 0.0
    assert mm.pitch_class_distance(only_c, [np.array([[61]])]) == pytest.approx(1.0)
    assert mm.pitch_class_distance([np.zeros((1, 4), int)], only_c) == 1.0


def test_note_density_counts_runs():
    a = np.array([[60, 60, 62, 0], [67, 67, 67, 67]])
    assert mm.note_density([a]) == pytest.approx(3 / 8)          # 2 + 1 notes over 2 voices x 4 steps
    b = np.array([[60, 62, 64, 65]])
    assert mm.note_density([a, b]) == pytest.approx((3 + 4) / (8 + 4))


def test_voice_range_rate():
    # soprano 60 in, 80 out; alto 55 in; tenor 47 out; bass 40 in, 61 out  -> 3 of 6 inside
    a = np.array([[60, 60, 80, 80],
                  [55, 55, 55, 55],
                  [47, 47, 0, 0],
                  [40, 40, 61, 61]])
    assert mm.voice_range_rate([a]) == pytest.approx(3 / 6)
    # a chorale's own names are used: the bass row alone, named "Bass" (case-insensitive): 40 in, 61 out
    c = Chorale(a[[3]], ("Bass",))
    assert mm.voice_range_rate([c]) == pytest.approx(1 / 2)
    with pytest.raises(ValueError, match="descant"):
        mm.voice_range_rate([Chorale(a[:1], ("descant",))])


def test_voice_crossing_rate_two_of_eight():
    up = np.array([67, 67, 65, 64, 62, 62, 64, 65])
    lo = np.array([60, 62, 66, 60, 64, 55, 57, 60])   # above the upper voice at steps 2 and 4
    assert mm.voice_crossing_rate([np.stack([up, lo])]) == pytest.approx(2 / 8)
    # a rest in either voice removes the step from the count; unisons are not crossings
    lo2 = lo.copy()
    lo2[0] = 0
    lo2[1] = 67
    assert mm.voice_crossing_rate([np.stack([up, lo2])]) == pytest.approx(2 / 7)
    # only adjacent pairs: the third voice is compared with the second, not the first
    third = np.full(8, 50)
    assert mm.voice_crossing_rate([np.stack([up, lo, third])]) == pytest.approx(2 / 16)
    # a piece with no jointly sounding steps adds nothing to the pooled rate
    assert mm.voice_crossing_rate([np.stack([up, lo]), np.zeros((2, 4), int)]) == pytest.approx(2 / 8)


def test_parallel_fifths_one_of_three_similar_motions():
    up = np.array([67, 69, 71, 72, 74])
    lo = np.array([60, 62, 65, 67, 65])
    # step 1: +2/+2, 7 -> 7 (parallel fifth); step 2: +2/+3, 7 -> 6; step 3: +1/+2, 6 -> 5;
    # step 4: +2/-2 contrary (not counted)
    r = mm.parallel_rates([np.stack([up, lo])])
    assert r["fifths"] == pytest.approx(1 / 3)
    assert r["octaves"] == 0.0


def test_parallel_octaves_and_compound_intervals():
    up = np.array([72, 72, 74, 76])
    lo = np.array([60, 60, 62, 62])           # held (no move), octave -> octave, then oblique
    assert mm.parallel_rates([np.stack([up, lo])]) == {"fifths": 0.0, "octaves": 1.0}
    twelfth = np.array([[74, 76], [55, 57]])  # 19 semitones = a compound fifth
    assert mm.parallel_rates([twelfth])["fifths"] == 1.0
    crossed = np.array([[60, 62], [67, 69]])  # the upper voice below the lower: still a fifth between them
    assert mm.parallel_rates([crossed])["fifths"] == 1.0
    through_rest = np.array([[67, 0, 69], [60, 0, 62]])  # motion through a rest is not counted
    with_rest = mm.parallel_rates([through_rest, twelfth])
    assert with_rest == {"fifths": 1.0, "octaves": 0.0}  # only the twelfth's one move is counted
    # three voices: every pair is examined (S-A fifths, S-B octaves, A-B fourths)
    three = np.array([[72, 74], [65, 67], [60, 62]])
    assert mm.parallel_rates([three]) == {"fifths": pytest.approx(1 / 3), "octaves": pytest.approx(1 / 3)}


def test_nothing_to_measure_is_nan_not_the_ideal_score():
    """All rests, one voice, held notes or no steps leave a rate without a denominator: NaN
    (undefined), never 0.0, which would be the ideal crossing / parallel score."""
    rests = np.zeros((4, 8), int)
    one_voice = np.array([[60, 62, 64, 65]])
    held = np.array([[67, 67, 67], [60, 60, 60]])           # both sound, nobody moves
    through_rest = np.array([[67, 0, 69], [60, 0, 62]])
    for pieces in ([rests], [one_voice], [rests, one_voice]):
        assert np.isnan(mm.voice_crossing_rate(pieces))
    assert mm.voice_crossing_rate([held]) == 0.0             # measured: sounding together, no crossing
    for pieces in ([rests], [one_voice], [held], [through_rest], [np.zeros((2, 1), int) + 60]):
        r = mm.parallel_rates(pieces)
        assert set(r) == {"fifths", "octaves"} and np.isnan(r["fifths"]) and np.isnan(r["octaves"])
    assert np.isnan(mm.voice_range_rate([rests]))
    assert mm.voice_range_rate([rests, one_voice]) == pytest.approx(4 / 4)   # soprano 60..65: all inside
    assert mm.note_density([rests]) == 0.0                   # measured: no notes over 32 cells
    assert np.isnan(mm.note_density([np.zeros((4, 0), int)]))
    assert np.isnan(mm.note_density([]))
    assert np.isnan(mm.arrangement_accuracy([], [], [0]))
    assert np.isnan(mm.arrangement_accuracy([np.zeros((2, 0), int)], [np.zeros((2, 0), int)], [0]))


def test_music_metrics_of_an_all_rest_set_are_undefined_not_perfect():
    """The bundle of a silent generated set: NaN rates beside finite reference values, the worst
    pitch-class distance, and the density gap equal to the reference's density."""
    bach = np.array([[67, 69, 71, 72], [60, 62, 65, 67], [55, 55, 57, 57], [43, 43, 45, 45]])
    m = mm.music_metrics([np.zeros((4, 4), int)], [bach])
    for key in ("voice_range_rate", "voice_crossing_rate", "parallel_fifths", "parallel_octaves"):
        assert np.isnan(m[key]) and np.isfinite(m[f"{key}_ref"]), key
    assert m["note_density"] == 0.0 and m["note_density_gap"] == pytest.approx(m["note_density_ref"])
    assert m["note_density_ref"] == pytest.approx((4 + 4 + 2 + 2) / 16)
    assert m["pitch_class_distance"] == 1.0


def test_arrangement_accuracy():
    gen = np.array([[60, 62], [50, 0]])
    true = np.array([[60, 61], [50, 0]])
    assert mm.arrangement_accuracy([gen], [true], [0]) == 0.5
    assert mm.arrangement_accuracy([gen], [true], [1]) == 1.0        # a rest where the truth rests is right
    assert mm.arrangement_accuracy([gen], [true], [0, 1]) == 0.75
    with pytest.raises(ValueError, match="shape"):
        mm.arrangement_accuracy([gen], [true[:, :1]], [0])
    with pytest.raises(ValueError, match="index 2"):
        mm.arrangement_accuracy([gen], [true], [2])


def test_music_metrics_bundle():
    a = np.array([[67, 69, 71, 72, 74], [60, 62, 65, 67, 65], [55, 55, 57, 57, 59], [43, 43, 45, 45, 47]])
    b = np.array([[60, 60, 60, 60, 60], [55, 55, 55, 55, 55], [52, 52, 52, 52, 52], [48, 48, 48, 48, 48]])
    m = mm.music_metrics([a], [b])
    assert m["pitch_class_distance"] == pytest.approx(mm.pitch_class_distance([a], [b]))
    assert m["note_density"] == pytest.approx(mm.note_density([a]))
    assert m["note_density_ref"] == pytest.approx(4 / 20)
    assert m["note_density_gap"] == pytest.approx(abs(m["note_density"] - 4 / 20))
    assert m["voice_range_rate"] == pytest.approx(mm.voice_range_rate([a]))
    assert m["voice_crossing_rate_ref"] == 0.0
    assert m["parallel_fifths"] == pytest.approx(mm.parallel_rates([a])["fifths"])
    same = mm.music_metrics([a], [a])
    assert same["pitch_class_distance"] == 0.0 and same["note_density_gap"] == 0.0
    assert all(isinstance(v, float) for v in m.values())


def _si_snr_by_hand(est, ref):
    est, ref = est - est.mean(), ref - ref.mean()
    s_t = (est @ ref) / (ref @ ref) * ref
    e = est - s_t
    return 10 * np.log10((s_t @ s_t) / (e @ e))


def test_si_snr():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal(1000)
    est = ref + 0.3 * rng.standard_normal(1000) + 2.0   # noise and an offset (removed by zero-mean)
    assert mm.si_snr(est, ref) == pytest.approx(_si_snr_by_hand(est, ref), rel=1e-6)
    assert mm.si_snr(5 * est, ref) == pytest.approx(mm.si_snr(est, ref), rel=1e-6)   # scale invariant
    assert mm.si_snr(3 * ref, ref) > 60
    t = np.arange(800) / 800
    assert mm.si_snr(np.cos(2 * np.pi * 5 * t), np.sin(2 * np.pi * 5 * t)) < -60
    mix = ref + rng.standard_normal(1000)
    assert mm.si_snri(est, mix, ref) == pytest.approx(_si_snr_by_hand(est, ref) - _si_snr_by_hand(mix, ref),
                                                      rel=1e-6)
    with pytest.raises(ValueError, match="samples"):
        mm.si_snr(ref[:10], ref)


def test_separation_scores_protocol():
    sr, n = 100, 1000                       # 10 s: 4 s chunks every 2 s start at 0, 2, 4, 6 s
    rng = np.random.default_rng(1)
    ref = rng.standard_normal((2, n))
    ref[1, :400] *= 10 ** (-50 / 20)        # source 1 is 50 dB down (inactive) during the first 4 s
    est = ref + 0.5 * rng.standard_normal((2, n))
    mix = ref.sum(0)
    out = mm.separation_scores(est, mix, ref, sr)
    starts = [200, 400, 600]                # chunk 0 has one active source < min_active: skipped
    want = [[_si_snr_by_hand(est[k, s:s + 400], ref[k, s:s + 400])
             - _si_snr_by_hand(mix[s:s + 400], ref[k, s:s + 400]) for s in starts] for k in range(2)]
    assert out["chunks"] == 3
    assert out["si_snri_0"] == pytest.approx(np.mean(want[0]), rel=1e-6)
    assert out["si_snri_1"] == pytest.approx(np.mean(want[1]), rel=1e-6)
    assert out["si_snri"] == pytest.approx((np.mean(want[0]) + np.mean(want[1])) / 2, rel=1e-6)
    # min_active=1 uses every chunk; source 1 is still scored only where it is active
    one = mm.separation_scores(est, mix, ref, sr, min_active=1)
    assert one["chunks"] == 4
    assert one["si_snri_1"] == pytest.approx(np.mean(want[1]), rel=1e-6)
    # a clip shorter than a chunk is one chunk
    sref = rng.standard_normal((2, 150))
    sest = sref + 0.5 * rng.standard_normal((2, 150))
    short = mm.separation_scores(sest, sref.sum(0), sref, sr)
    assert short["chunks"] == 1
    assert short["si_snri_0"] == pytest.approx(_si_snr_by_hand(sest[0], sref[0])
                                               - _si_snr_by_hand(sref.sum(0), sref[0]), rel=1e-6)
    # nothing active enough: no chunk used, nan scores
    silent = mm.separation_scores(est, mix, np.zeros_like(ref), sr)
    assert silent["chunks"] == 0 and np.isnan(silent["si_snri"])


def test_stem_distances_compare_both_sides_at_the_references_sample_rate() -> None:
    """The same two voices rendered at 8 and 16 kHz are the same music: near-zero distances
    (analysed without resampling, the 8 kHz stems read as 7-13 dB away)."""
    from polydiff_audio.modality import Stems, evaluate_stems

    def stems(sr: int) -> Stems:
        t = np.arange(sr * 2) / sr
        return Stems(np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 220 * t)]).astype(np.float32), sr,
                     ("soprano", "bass"))

    low, high = [stems(8000)] * 2, [stems(16000)] * 2
    for a, b in ((low, high), (high, low)):
        m = evaluate_stems(a, b)
        assert set(m) == {"soprano_mel_l1_db", "soprano_mel_std_l1_db", "bass_mel_l1_db", "bass_mel_std_l1_db"}
        assert max(m.values()) < 0.1
    assert evaluate_stems(low, low)["soprano_mel_l1_db"] == 0.0


def test_array_input_gets_the_checks_list_input_gets():
    """An (N, K, T) array skipped the MIDI-range check: -3 counted as a note; 61.9 became 61; a
    NaN pitch passed even in a list."""
    with pytest.raises(ValueError, match=r"piece 0: pitches must be MIDI 0\.\.127"):
        mm.note_density(np.array([[-3, -3, 60, 60]]))
    with pytest.raises(ValueError, match="piece 1: pitches must be MIDI"):
        mm.pitch_class_histogram(np.array([[[60, 60]], [[200, 60]]]))
    for bad in (np.array([[61.9, 60.0]]), [np.array([[np.nan, 60.0]])]):
        with pytest.raises(ValueError, match="piece 0: pitches must be whole MIDI numbers"):
            mm.note_density(bad)
    whole = np.array([[60.0, 60.0, 0.0, 62.0]])
    assert mm.note_density(whole) == mm.note_density(whole.astype(np.int64)) == 0.5


def _msdm_si_snr_by_hand(est: np.ndarray, ref: np.ndarray, eps: float = 1e-8) -> float:
    """MSDM's SI-SNR as its evaluation code defines it: no mean removal, eps also in the projection."""
    scale = (np.dot(est, ref) + eps) / (np.dot(ref, ref) + eps)
    return 10 * math.log10((np.sum((scale * ref) ** 2) + eps) / (np.sum((scale * ref - est) ** 2) + eps))


def test_separation_scores_msdm_protocol():
    """MSDM's protocol: chunk starts up to ceil((n - overlap) / step) (the last one cut short),
    an absolute silence test, and every source of a used chunk scored, silent ones included."""
    sr, n = 100, 1100                       # 4 s chunks, 2 s overlap: starts 0, 2, 4, 6, 8 s; the last 3 s long
    rng = np.random.default_rng(2)
    ref = rng.standard_normal((3, n)) + 0.3
    ref[1, :400] = 1e-6                     # |x| / len = 5e-8 < 1.5e-5: silent in the first chunk
    ref[2] = 0.0                            # silent throughout
    est = ref + 0.5 * rng.standard_normal((3, n))
    mix = ref.sum(0)
    out = mm.separation_scores(est, mix, ref, sr, protocol="msdm")
    starts = [200, 400, 600, 800]           # chunk 0 has one non-silent source: skipped
    want = [np.mean([_msdm_si_snr_by_hand(est[k, s:s + 400], ref[k, s:s + 400])
                     - _msdm_si_snr_by_hand(mix[s:s + 400], ref[k, s:s + 400]) for s in starts]) for k in range(3)]
    assert out["chunks"] == 4
    for k in range(3):
        assert out[f"si_snri_{k}"] == pytest.approx(want[k], rel=1e-9)
    assert out["si_snri"] == pytest.approx(np.mean(want), rel=1e-9)
    ours = mm.separation_scores(est, mix, ref, sr)  # the default scores active sources only, full chunks only
    assert np.isnan(ours["si_snri_2"]) and ours["chunks"] == 3
    with pytest.raises(ValueError, match="protocol must be 'active' or 'msdm'"):
        mm.separation_scores(est, mix, ref, sr, protocol="MSDM")
