"""Statistics of generated chorales and scores of separated stems (numpy only).

Pieces are given as :class:`~polydiff_audio.music.Chorale` objects or (K, T) arrays of MIDI
pitches (0 = rest, one row per voice from the top, one column per sixteenth step), or as one
(N, K, T) array; model tokens must go through ``music.from_tokens`` first. A note is a run of
equal non-zero pitch (repeated notes of one pitch are one note, as in the roll).

These are style statistics, not judgements of musical quality: a set of chorales can match the
reference on every number here and still be poor music, and rule rates (crossings, parallel
fifths) are descriptive: Bach's own chorales are not at zero.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .music import VOICES, notes

RANGES = {"soprano": (60, 79), "alto": (55, 74), "tenor": (48, 67), "bass": (40, 60)}   # common SATB ranges


def _pieces(chorales: Any) -> list[np.ndarray]:
    """Chorales, (K, T) arrays or one (N, K, T) array -> a list of (K, T) int64 arrays, each
    checked: integer MIDI pitches 0..127 (a pitch of -3 would count as a note, 61.9 as 61)."""
    if isinstance(chorales, np.ndarray):
        if chorales.ndim == 2:
            chorales = chorales[None]
        elif chorales.ndim != 3:
            raise ValueError(f"expected (K, T) or (N, K, T) pitches, got an array of shape {chorales.shape}")
    out = []
    for i, c in enumerate(chorales):
        a = np.asarray(getattr(c, "tracks", c))
        if a.ndim != 2:
            raise ValueError(f"piece {i}: expected (K, T) pitches, got shape {a.shape}")
        if a.dtype.kind not in "biuf" or (a.size and not (np.isfinite(a).all() and (a == np.round(a)).all())):
            raise ValueError(f"piece {i}: pitches must be whole MIDI numbers, got {a.dtype} values such as "
                             f"{a.ravel()[:3].tolist()}")
        if a.size and ((a < 0).any() or (a > 127).any()):
            raise ValueError(f"piece {i}: pitches must be MIDI 0..127 (0 = rest); got {int(a.min())}..{int(a.max())}"
                             " (tokens? use music.from_tokens)")
        out.append(a.astype(np.int64))
    return out


def _names(chorales: Any, names: Sequence[str]) -> list[tuple[str, ...]]:
    if isinstance(chorales, np.ndarray):
        return [tuple(names)] * len(_pieces(chorales))
    return [tuple(getattr(c, "names", None) or names) for c in chorales]


def pitch_class_histogram(chorales: Any) -> np.ndarray:
    """(12,) distribution of pitch classes (C = 0) over SOUNDING STEPS of every voice (a note
    counts once per sixteenth it lasts, so it is duration-weighted, not a count of notes). All
    zeros when nothing sounds. It describes the key / mode mix of a set; it says nothing about
    order, voice leading or rhythm."""
    counts = np.zeros(12)
    for a in _pieces(chorales):
        p = a[a > 0]
        counts += np.bincount(p % 12, minlength=12)
    total = counts.sum()
    return counts / total if total else counts


def pitch_class_distance(gen: Any, ref: Any) -> float:
    """Total variation distance (0.5 * L1, in [0, 1]) between the pitch-class histograms of two
    sets (:func:`pitch_class_histogram`); 1.0 when exactly one of them has no sounding step,
    0.0 when neither has. It compares the tonal material only: two sets with the same pitch
    classes in any order score 0, and transposed copies of the reference do not."""
    h, r = pitch_class_histogram(gen), pitch_class_histogram(ref)
    if not h.any() or not r.any():
        return 0.0 if not h.any() and not r.any() else 1.0
    return float(0.5 * np.abs(h - r).sum())


def note_density(chorales: Any) -> float:
    """Notes (runs of equal non-zero pitch) per step per voice over all pieces: 1/4 for
    quarter notes without rests. Measures rhythmic activity; repeated notes of one pitch count
    once (the roll cannot split them), and rests lower it (all rests: 0.0). NaN (undefined) when
    there are no steps at all."""
    n_notes, n_cells = 0, 0
    for a in _pieces(chorales):
        n_notes += sum(len(notes(row)) for row in a)
        n_cells += a.size
    return float(n_notes / n_cells) if n_cells else math.nan


def voice_range_rate(chorales: Any, names: Sequence[str] = VOICES) -> float:
    """Fraction of notes whose pitch lies inside their voice's common range (:data:`RANGES`,
    inclusive). Voices are named by a chorale's own ``names``, else by ``names`` in order; a
    voice name not in RANGES is a ValueError. Says whether parts are singable by their voice
    type, not whether they are good lines. NaN (undefined) when there are no notes (all rests)."""
    inside = total = 0
    for i, (a, nm) in enumerate(zip(_pieces(chorales), _names(chorales, names), strict=True)):
        if len(nm) < a.shape[0]:
            raise ValueError(f"piece {i}: {a.shape[0]} voices but only {len(nm)} names")
        for row, name in zip(a, nm, strict=False):
            key = str(name).lower()
            if key not in RANGES:
                raise ValueError(f"piece {i}: voice {name!r} has no range (known: {', '.join(RANGES)})")
            lo, hi = RANGES[key]
            for _, _, p in notes(row):
                total += 1
                inside += lo <= p <= hi
    return float(inside / total) if total else math.nan


def voice_crossing_rate(chorales: Any) -> float:
    """Over every step where two ADJACENT voices (rows k and k + 1, the upper first) both sound,
    the fraction where the lower voice is strictly above the upper one. Unisons are not
    crossings; non-adjacent crossings (e.g. bass above soprano with the inner voices between)
    show up only through adjacent pairs. NaN (undefined, not the ideal 0.0) when no two adjacent
    voices ever sound together (one voice, all rests)."""
    cross = joint = 0
    for a in _pieces(chorales):
        for k in range(a.shape[0] - 1):
            up, lo = a[k], a[k + 1]
            both = (up > 0) & (lo > 0)
            joint += int(both.sum())
            cross += int((both & (lo > up)).sum())
    return float(cross / joint) if joint else math.nan


def parallel_rates(chorales: Any) -> dict[str, float]:
    """``{"fifths", "octaves"}``: over all voice pairs and every step change where BOTH voices
    sound before and after, both move to a new pitch and move in the same direction (similar
    motion), the fraction where the interval between them is a perfect fifth (|difference| mod
    12 == 7) before and after (resp. an octave or unison, mod 12 == 0). Counts only simultaneous
    moves on the step grid: hidden/direct fifths, motion through a rest and moves at different
    steps are not counted; a moving pair's fifth-to-fifth by contrary motion is not a parallel
    here. Both NaN (undefined, not the ideal 0.0) when no pair ever moves together (one voice,
    rests, held notes)."""
    fifths = octaves = moves = 0
    for a in _pieces(chorales):
        if a.shape[1] < 2:
            continue
        prev, cur = a[:, :-1], a[:, 1:]
        sounding = (prev > 0) & (cur > 0)
        step = np.sign(cur - prev) * sounding
        for i in range(a.shape[0]):
            for j in range(i + 1, a.shape[0]):
                sim = (step[i] != 0) & (step[i] == step[j])
                before = np.abs(prev[i] - prev[j]) % 12
                after = np.abs(cur[i] - cur[j]) % 12
                moves += int(sim.sum())
                fifths += int((sim & (before == 7) & (after == 7)).sum())
                octaves += int((sim & (before == 0) & (after == 0)).sum())
    if not moves:
        return {"fifths": math.nan, "octaves": math.nan}
    return {"fifths": fifths / moves, "octaves": octaves / moves}


def arrangement_accuracy(gen: Any, true: Any, voices: Sequence[int]) -> float:
    """Fraction of steps, over the given voice indices of every piece, whose generated pitch
    equals the true one (rests count: a rest where the truth rests is right). Exact match
    only: a good alternative harmonisation scores low, an octave error is wrong. NaN when there
    are no steps to score (no pieces, or pieces of 0 steps)."""
    g, t = _pieces(gen), _pieces(true)
    if len(g) != len(t):
        raise ValueError(f"arrangement_accuracy: {len(g)} generated pieces but {len(t)} true ones")
    idx = list(voices)
    if not idx:
        raise ValueError("arrangement_accuracy: no voices to score")
    hit = total = 0
    for i, (a, b) in enumerate(zip(g, t, strict=True)):
        if a.shape != b.shape:
            raise ValueError(f"arrangement_accuracy: piece {i} has shape {a.shape}, the truth {b.shape}")
        bad = [v for v in idx if not -a.shape[0] <= v < a.shape[0]]
        if bad:
            raise ValueError(f"arrangement_accuracy: voice index {bad[0]} out of range for {a.shape[0]} voices")
        hit += int((a[idx] == b[idx]).sum())
        total += a[idx].size
    return float(hit / total) if total else math.nan


def music_metrics(gen: Any, ref: Any) -> dict[str, float]:
    """The statistics of this module for a generated set against a reference set: the
    pitch-class distance, the note density of each and their absolute gap, and the voice-range,
    crossing and parallel fifth / octave rates of the generated set with the reference's value
    beside each (``*_ref``) as the target. Style statistics, not a quality score.

    Each rate pools its counts over all pieces of a set, so a piece with nothing to measure
    (all rests, one voice) adds nothing to it; a set where no piece has anything to measure
    gets NaN (undefined: an all-rest generator does not score the ideal 0), and so does the
    density gap when either set has no steps. A mostly silent set shows in its low
    ``note_density``."""
    out: dict[str, float] = {"pitch_class_distance": pitch_class_distance(gen, ref)}
    dg, dr = note_density(gen), note_density(ref)
    out.update(note_density=dg, note_density_ref=dr, note_density_gap=abs(dg - dr))
    for key, fn in (("voice_range_rate", voice_range_rate), ("voice_crossing_rate", voice_crossing_rate)):
        out[key], out[f"{key}_ref"] = fn(gen), fn(ref)
    pg, pr = parallel_rates(gen), parallel_rates(ref)
    for key in ("fifths", "octaves"):
        out[f"parallel_{key}"], out[f"parallel_{key}_ref"] = pg[key], pr[key]
    return out


# -- separation ----------------------------------------------------------------------------------

def si_snr(est: np.ndarray, ref: np.ndarray, eps: float = 1e-8) -> float:
    """Scale-invariant signal-to-noise ratio in dB: both signals made zero-mean, the estimate
    projected on the reference (s_t = <est, ref> ref / |ref|^2, e = est - s_t) and
    10 log10((|s_t|^2 + eps) / (|e|^2 + eps)). Insensitive to the estimate's gain; it does not
    separate interference from artefacts (SDR / SIR / SAR do)."""
    e_, r_ = np.asarray(est, dtype=np.float64).reshape(-1), np.asarray(ref, dtype=np.float64).reshape(-1)
    if e_.shape != r_.shape:
        raise ValueError(f"si_snr: estimate has {e_.size} samples, reference {r_.size}")
    e_, r_ = e_ - e_.mean(), r_ - r_.mean()
    target = (e_ @ r_) / (r_ @ r_ + eps) * r_
    noise = e_ - target
    return float(10 * np.log10((target @ target + eps) / (noise @ noise + eps)))


def si_snri(est: np.ndarray, mix: np.ndarray, ref: np.ndarray) -> float:
    """SI-SNR improvement: si_snr(est, ref) - si_snr(mix, ref), in dB (how much better the
    estimate is than taking the mixture itself as the source)."""
    return si_snr(est, ref) - si_snr(mix, ref)


def _si_snr_msdm(est: np.ndarray, ref: np.ndarray, eps: float = 1e-8) -> float:
    """MSDM's ``sisnr`` (evaluation/evaluate_separation.py): no zero-mean step, ``eps`` in the
    projection's numerator and denominator as well as in both energies."""
    alpha = (est @ ref + eps) / (ref @ ref + eps)
    target = alpha * ref
    noise = target - est
    return float(10 * np.log10((target @ target + eps) / (noise @ noise + eps)))


def separation_scores(est: np.ndarray, mix: np.ndarray, ref: np.ndarray, sr: int, chunk: float = 4.0,
                      hop: float = 2.0, min_active: int = 2, silence_db: float = -40.0,
                      protocol: str = "active") -> dict[str, float]:
    """SI-SNRi of separated stems ``est`` (K, n) of ``mix`` (n,) against the true stems ``ref``
    (K, n) over chunks of ``chunk`` seconds every ``hop`` seconds, skipping chunks with fewer
    than ``min_active`` active (non-silent) sources, as MSDM evaluates. Returns ``si_snri`` (the
    mean of the per-source means), ``si_snri_<k>`` per source index and ``chunks`` (the number
    of chunks used; all nan when 0).

    ``protocol="active"`` (default): a clip shorter than one chunk is one chunk and a final
    partial chunk is left out; a source is active in a chunk when its energy is above
    ``silence_db`` relative to the loudest source-chunk energy of the clip (a level-free test);
    only the active sources of a chunk are scored (the SI-SNR of a silent target measures
    nothing), with zero-mean :func:`si_snr`; ``si_snri_<k>`` is nan if source k is never active
    in a used chunk. ``protocol="msdm"``: MSDM's ``evaluate_separations`` on one clip, for
    numbers comparable with its code: every chunk start ``i * hop`` for ``i < ceil((n - (chunk
    - hop) sr) / (hop sr))``, the last ones cut short by the clip's end; silence is the absolute
    test ``|x|_2 / len(x) < 1.5e-5``; every source of a used chunk is scored, silent ones
    included, with MSDM's SI-SNR (no zero-mean step; ``silence_db`` is not used)."""
    if protocol not in ("active", "msdm"):
        raise ValueError(f"separation_scores: protocol must be 'active' or 'msdm', got {protocol!r}")
    e, r = np.asarray(est, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    x = np.asarray(mix, dtype=np.float64).reshape(-1)
    if e.ndim != 2 or e.shape != r.shape:
        raise ValueError(f"separation_scores: est {e.shape} and ref {r.shape} must both be (K, n)")
    if x.size != r.shape[1]:
        raise ValueError(f"separation_scores: mix has {x.size} samples, the stems {r.shape[1]}")
    if sr <= 0 or chunk <= 0 or hop <= 0:
        raise ValueError(f"separation_scores: sr, chunk and hop must be positive, got {sr}, {chunk}, {hop}")
    if protocol == "msdm":
        return _separation_msdm(e, x, r, int(chunk * sr), int(chunk * sr) - int((chunk - hop) * sr), min_active)
    n, size, step = x.size, max(1, round(chunk * sr)), max(1, round(hop * sr))
    starts = list(range(0, n - size + 1, step)) if n >= size else [0]
    size = min(size, n)
    energy = np.array([[float(np.mean(r[k, s:s + size] ** 2)) for s in starts] for k in range(r.shape[0])])
    loudest = energy.max() if energy.size else 0.0
    with np.errstate(divide="ignore"):
        active = (energy > 0) & (10 * np.log10(np.where(energy > 0, energy, 1.0) / max(loudest, 1e-300))
                                 > silence_db)
    scores: list[list[float]] = [[] for _ in range(r.shape[0])]
    used = 0
    for c, s in enumerate(starts):
        if int(active[:, c].sum()) < min_active:
            continue
        used += 1
        for k in np.flatnonzero(active[:, c]):
            scores[k].append(si_snri(e[k, s:s + size], x[s:s + size], r[k, s:s + size]))
    return _summary(scores, used)


def _summary(scores: list[list[float]], used: int) -> dict[str, float]:
    per = [float(np.mean(v)) if v else float("nan") for v in scores]
    good = [v for v in per if not np.isnan(v)]
    out: dict[str, float] = {"si_snri": float(np.mean(good)) if good else float("nan")}
    out.update({f"si_snri_{k}": v for k, v in enumerate(per)})
    out["chunks"] = float(used)
    return out


def _separation_msdm(e: np.ndarray, x: np.ndarray, r: np.ndarray, size: int, step: int,
                     min_active: int) -> dict[str, float]:
    """:func:`separation_scores` with ``protocol="msdm"`` (chunk and step in samples)."""
    if size <= 0 or step <= 0:
        raise ValueError(f"separation_scores: a chunk of {size} samples every {step} samples")
    scores: list[list[float]] = [[] for _ in range(r.shape[0])]
    used = 0
    for i in range(max(0, math.ceil((x.size - (size - step)) / step))):
        s = slice(i * step, i * step + size)
        active = sum(bool(np.linalg.norm(r[k, s]) / max(r[k, s].size, 1) >= 1.5e-5) for k in range(r.shape[0]))
        if active < min_active:
            continue
        used += 1
        for k in range(r.shape[0]):
            scores[k].append(_si_snr_msdm(e[k, s], r[k, s]) - _si_snr_msdm(x[s], r[k, s]))
    return _summary(scores, used)


__all__ = ["RANGES", "VOICES", "arrangement_accuracy", "music_metrics", "note_density", "parallel_rates",
           "pitch_class_distance", "pitch_class_histogram", "separation_scores", "si_snr", "si_snri",
           "voice_crossing_rate", "voice_range_rate"]
