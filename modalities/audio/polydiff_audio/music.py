"""Four-voice chorales: the Bach chorales that ship with music21, their token encoding, MIDI files,
an in-project synthesiser and the stem spectrograms of the joint multi-track model.

A chorale is a (K, T) array of MIDI pitches, one row per voice (soprano, alto, tenor, bass), one
column per sixteenth note (:data:`STEP` quarter lengths); 0 is a rest. This piano-roll view merges
repeated notes of the same pitch into one (a documented limit of the encoding). Tokens are the
pitches shifted into ``0 .. VOCAB - 1`` (0 = rest) for the discrete model.

Rendering gives each voice its own timbre so that a mixture can be separated again; the stems are
modelled as normalised log-mel spectrograms (:func:`stem_mels`) and turned back into audio with
Griffin-Lim (:func:`stems_audio`) or, given a mixture, with ratio masks on the mixture's STFT
(:func:`separate`, the MSDM-style separation).

music21, mido and librosa are imported inside the functions that need them, so importing this
module is cheap.
"""

from __future__ import annotations

import functools
import hashlib
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from polydiff.plugin import Progress, atomic_write, cache_dir

VOICES = ("soprano", "alto", "tenor", "bass")
LOW, HIGH = 36, 81           # MIDI pitch range of tokens (covers every pitch of the music21 Bach chorales)
VOCAB = HIGH - LOW + 2       # token 0 = rest, token p - LOW + 1 = pitch p
STEP = 0.25                  # quarter lengths per step (a sixteenth note)

_CACHE_FORMAT = 1            # bump when the parse (and so the cached arrays) changes
_EPS = 1e-9


@dataclass
class Chorale:
    """One piece: ``tracks`` (K, T) int64 MIDI pitch per sixteenth step (0 = rest), a name per
    track, the piece's name, and the duration of a step in seconds (rendering and MIDI tempo;
    0.125 s is 120 bpm)."""

    tracks: np.ndarray
    names: tuple[str, ...] = VOICES
    name: str = ""
    step_seconds: float = 0.125
    source: str = ""  # the file it was read from ('' when generated): error messages name it


# -- the music21 corpus ------------------------------------------------------------------------------

def _cache_key() -> str:
    """The text every cached parse depends on: music21's version and the parse options."""
    import music21

    return (f"music21={music21.VERSION_STR};format={_CACHE_FORMAT};step={STEP};low={LOW};high={HIGH};"
            "parts=4;order=score;chord=top;sample=onset-grid;fold=octave")


def _cache_file(key: str) -> Path:
    return cache_dir() / "audio" / f"bach-chorales-{hashlib.sha1(key.encode()).hexdigest()[:16]}.npz"


def _corpus_paths() -> list[Path]:
    from music21 import corpus

    return sorted((Path(p) for p in corpus.getComposer("bach")), key=str)


def _sample_part(part: Any, length: int) -> tuple[np.ndarray, int]:
    """One music21 part sampled on the sixteenth grid: the (top) pitch sounding at each step's
    time, 0 where nothing sounds; pitches outside [LOW, HIGH] folded by octaves (the count of
    folded notes is returned)."""
    from music21 import harmony

    roll = np.zeros(length, dtype=np.int64)
    moved = 0
    for el in part.flatten().notes:
        pitches = getattr(el, "pitches", ())
        if isinstance(el, harmony.Harmony) or not pitches:
            continue
        ql = float(el.quarterLength)
        if ql <= 0:  # grace notes take no time
            continue
        start = float(el.offset)
        a = max(0, math.ceil(start / STEP - _EPS))
        b = min(length, math.ceil((start + ql) / STEP - _EPS))
        if b <= a:  # shorter than a step and between two grid points: not sounding at any step
            continue
        p = max(int(x.midi) for x in pitches)
        if p < LOW or p > HIGH:
            moved += 1
            while p < LOW:
                p += 12
            while p > HIGH:
                p -= 12
        roll[a:b] = np.maximum(roll[a:b], p)
    return roll, moved


def _parse_chorale(path: Path) -> tuple[Chorale | None, str, int]:
    """A corpus file -> (chorale or None, why it was not usable, notes moved into range)."""
    from music21 import corpus

    score = corpus.parse(path)
    parts = list(score.parts)
    if len(parts) != 4:
        return None, f"{path.name} has {len(parts)} parts, not 4", 0
    length = math.ceil(float(score.highestTime) / STEP - _EPS)
    if length <= 0:
        return None, f"{path.name} has no notes", 0
    rows, moved = [], 0
    for part in parts:
        roll, m = _sample_part(part, length)
        rows.append(roll)
        moved += m
    if not any(r.any() for r in rows):
        return None, f"{path.name} has no notes", 0
    return Chorale(np.stack(rows), VOICES, path.stem), "", moved


@dataclass
class _Cached:
    chorales: list[Chorale]
    scanned: int        # corpus files examined (in sorted order) to find these chorales
    complete: bool      # True when every corpus file was examined


def _read_cache(file: Path, key: str) -> _Cached | None:
    """The cached chorales, or None (with a warning) when the file cannot be read or is not ours."""
    try:
        with np.load(file, allow_pickle=False) as z:
            if str(z["key"]) != key:
                raise ValueError("written with other parse options")
            tracks, lengths, names = z["tracks"], z["lengths"], z["names"]
            scanned, complete = int(z["scanned"]), bool(z["complete"])
        if tracks.ndim != 2 or tracks.shape[0] != len(VOICES) or lengths.ndim != 1 or len(names) != len(lengths) \
                or int(lengths.sum()) != tracks.shape[1] or (lengths <= 0).any():
            raise ValueError("inconsistent arrays")
        ends = np.cumsum(lengths)
        chorales = [Chorale(tracks[:, e - n:e].astype(np.int64), VOICES, str(nm))
                    for e, n, nm in zip(ends, lengths, names, strict=True)]
        return _Cached(chorales, scanned, complete)
    except Exception as err:  # a torn or foreign file: rebuild it
        warnings.warn(f"{file}: unreadable chorale cache ({type(err).__name__}: {err}); parsing the corpus again",
                      stacklevel=3)
        return None


def _write_cache(file: Path, key: str, got: _Cached) -> None:
    tracks = (np.concatenate([c.tracks for c in got.chorales], axis=1) if got.chorales
              else np.zeros((len(VOICES), 0), dtype=np.int64))
    arrays = {"key": np.array(key), "tracks": tracks.astype(np.int16),
              "lengths": np.array([c.tracks.shape[1] for c in got.chorales], dtype=np.int64),
              "names": np.array([c.name for c in got.chorales], dtype=str),
              "scanned": np.array(got.scanned), "complete": np.array(got.complete)}

    def save(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    try:
        atomic_write(file, save)
    except OSError:  # a cache that cannot be written only costs the speed
        pass


def load_chorales(n: int | None = None, cache: bool = True) -> list[Chorale]:
    """The Bach chorales that ship with music21 (``corpus.getComposer('bach')``, sorted by path)
    that have exactly four parts, read in score order as S, A, T, B and sampled on the sixteenth
    grid from the score's start: the pitch sounding at each step (the top note where a part has a
    chord; 0 where it rests; notes shorter than a step that sound at no grid point vanish).
    Pitches outside [LOW, HIGH] are moved by octaves into range. Files that are not four-part
    chorales (instrumental scores, analyses) are skipped; skipped files and moved notes are
    counted and reported with one warning each when parsed. Names are the corpus file stems.

    ``n``: the first ``n`` usable chorales (all when None). Parsed chorales are cached as one npz
    under ``cache_dir()/"audio"`` keyed by music21's version and the parse options (written
    atomically; an unreadable cache is rebuilt with a warning). A cache of the first m chorales
    serves any n <= m; a larger request resumes parsing where the cache stopped."""
    if n is not None and n < 0:
        raise ValueError(f"load_chorales: n must be >= 0 or None, got {n}")
    key = _cache_key()
    file = _cache_file(key)
    got = _read_cache(file, key) if cache and file.exists() else None
    if got is not None and (got.complete or (n is not None and len(got.chorales) >= n)):
        return got.chorales[:n]
    if got is None:
        got = _Cached([], 0, False)
    paths = _corpus_paths()
    skipped, first_reason, moved = 0, "", 0
    i = got.scanned
    with Progress(len(paths), "parsing Bach chorales (once; cached)", "file", initial=i) as bar:  # minutes for all
        while i < len(paths) and (n is None or len(got.chorales) < n):
            chorale, reason, m = _parse_chorale(paths[i])
            i += 1
            bar.update_to(i)
            if chorale is None:
                skipped += 1
                first_reason = first_reason or reason
                continue
            moved += m
            got.chorales.append(chorale)
    got.scanned, got.complete = i, i >= len(paths)
    if skipped:
        warnings.warn(f"load_chorales: skipped {skipped} corpus file(s) that are not four-part chorales "
                      f"(first: {first_reason})", stacklevel=2)
    if moved:
        warnings.warn(f"load_chorales: moved {moved} note(s) by octaves into the pitch range [{LOW}, {HIGH}]",
                      stacklevel=2)
    if cache:
        _write_cache(file, key, got)
    return got.chorales[:n]


# -- tokens and windows ----------------------------------------------------------------------------

def to_tokens(tracks: np.ndarray) -> np.ndarray:
    """MIDI pitches (0 = rest) -> tokens (0 = rest, p - LOW + 1 = pitch p); a pitch outside
    [LOW, HIGH] is a ValueError naming it."""
    a = np.asarray(tracks)
    if a.size and not np.issubdtype(a.dtype, np.integer):
        if not np.all(np.equal(np.mod(a, 1), 0)):
            raise ValueError("to_tokens: pitches must be whole numbers")
    a = a.astype(np.int64)
    bad = (a != 0) & ((a < LOW) | (a > HIGH))
    if bad.any():
        vals = sorted(set(a[bad].tolist()))
        raise ValueError(f"to_tokens: pitch {vals[0]} is outside the token range [{LOW}, {HIGH}] "
                         f"({int(bad.sum())} value(s) out of range: {vals[:5]})")
    return np.where(a == 0, 0, a - LOW + 1)


def from_tokens(tokens: np.ndarray) -> np.ndarray:
    """Tokens -> MIDI pitches (0 = rest); a token outside ``0 .. VOCAB - 1`` is a ValueError naming it."""
    t = np.asarray(tokens).astype(np.int64)
    bad = (t < 0) | (t >= VOCAB)
    if bad.any():
        raise ValueError(f"from_tokens: token {int(t[bad].flat[0])} is outside 0..{VOCAB - 1}")
    return np.where(t == 0, 0, t + LOW - 1)


def _tracks_of(c: Any) -> np.ndarray:
    return np.asarray(c.tracks if isinstance(c, Chorale) else c)


def windows(chorales: Sequence[Chorale], length: int = 32, hop: int = 16) -> np.ndarray:
    """(N, K, length) tokens of every window of ``length`` steps starting every ``hop`` steps of
    each chorale (a chorale shorter than ``length`` gives none). Windows where some voice rests
    throughout are dropped (nothing to learn for that voice; not a data error)."""
    if length <= 0 or hop <= 0:
        raise ValueError(f"windows: length and hop must be positive, got {length} and {hop}")
    out, k_seen = [], None
    for c in chorales:
        tok = to_tokens(_tracks_of(c))
        if tok.ndim != 2:
            raise ValueError(f"windows: {getattr(c, 'name', '') or 'a chorale'} has tracks of shape {tok.shape}, "
                             "expected (K, T)")
        if k_seen is None:
            k_seen = tok.shape[0]
        elif tok.shape[0] != k_seen:
            raise ValueError(f"windows: {getattr(c, 'name', '') or 'a chorale'} has {tok.shape[0]} tracks, "
                             f"the first has {k_seen}")
        for s in range(0, tok.shape[1] - length + 1, hop):
            w = tok[:, s:s + length]
            if (w != 0).any(axis=1).all():
                out.append(w)
    if not out:
        return np.zeros((0, k_seen or len(VOICES), length), dtype=np.int64)
    return np.stack(out).astype(np.int64)


def shift_range(tokens: np.ndarray) -> tuple[int, int]:
    """The transpositions (semitones ``lo <= 0 <= hi``) that keep every pitch of this (K, T)
    token window in range. A window of rests only may move by any in-range amount:
    ``(LOW - HIGH, HIGH - LOW)``."""
    t = np.asarray(tokens)
    sounding = t[t != 0]
    if not sounding.size:
        return LOW - HIGH, HIGH - LOW
    lo, hi = int(sounding.min()), int(sounding.max())
    if lo < 1 or hi > VOCAB - 1:
        raise ValueError(f"shift_range: token {lo if lo < 1 else hi} is outside 0..{VOCAB - 1}")
    return 1 - lo, VOCAB - 1 - hi


def transpose(tokens: np.ndarray, k: int) -> np.ndarray:
    """Tokens moved by ``k`` semitones; rests stay rests. A shift that moves a pitch out of range
    is a ValueError (see :func:`shift_range`)."""
    t = np.asarray(tokens).astype(np.int64)
    out = np.where(t != 0, t + int(k), 0)
    if ((t != 0) & ((out < 1) | (out > VOCAB - 1))).any():
        lo, hi = shift_range(t)
        raise ValueError(f"transpose: shifting by {k} moves a pitch out of [{LOW}, {HIGH}] (allowed {lo}..{hi})")
    return out


def notes(track: np.ndarray) -> list[tuple[int, int, int]]:
    """(start step, length in steps, pitch) of each run of equal non-zero pitch in one track.
    Repeated notes of the same pitch are one run: the roll cannot tell them apart."""
    t = np.asarray(track).astype(np.int64).reshape(-1)
    if not t.size:
        return []
    change = np.flatnonzero(np.diff(t)) + 1
    starts = np.concatenate([[0], change])
    ends = np.concatenate([change, [t.size]])
    return [(int(s), int(e - s), int(t[s])) for s, e in zip(starts, ends, strict=True) if t[s] != 0]


# -- MIDI ------------------------------------------------------------------------------------------

TICKS_PER_BEAT = 480


def _channel(k: int) -> int:
    """Track k's MIDI channel, skipping channel 10 (index 9, General MIDI drums)."""
    c = k if k < 9 else k + 1
    return c % 16


def write_midi(chorale: Chorale, path: str | Path) -> Path:
    """A type-1 MIDI file: a first track with the piece's name and tempo (from ``step_seconds``),
    then one track per voice named after it, each on its own channel, 480 ticks per beat (a
    sixteenth is 120 ticks). Repeated notes of one pitch are written as one note (the roll merges
    them). Written atomically."""
    import mido

    tracks = np.asarray(chorale.tracks)
    if tracks.ndim != 2:
        raise ValueError(f"write_midi: {chorale.name or 'chorale'} tracks have shape {tracks.shape}, expected (K, T)")
    if len(chorale.names) != tracks.shape[0]:
        raise ValueError(f"write_midi: {chorale.name or 'chorale'} has {tracks.shape[0]} tracks but "
                         f"{len(chorale.names)} names")
    bad = (tracks < 0) | (tracks > 127)
    if bad.any():
        raise ValueError(f"write_midi: {chorale.name or 'chorale'} has pitch {int(tracks[bad].flat[0])} outside 0..127")
    if not chorale.step_seconds > 0:
        raise ValueError(f"write_midi: step_seconds must be positive, got {chorale.step_seconds}")
    per_step = TICKS_PER_BEAT * STEP
    mid = mido.MidiFile(type=1, ticks_per_beat=TICKS_PER_BEAT)
    head = mido.MidiTrack()
    if chorale.name:
        head.append(mido.MetaMessage("track_name", name=str(chorale.name), time=0))
    head.append(mido.MetaMessage("set_tempo", tempo=round(chorale.step_seconds / STEP * 1e6), time=0))
    head.append(mido.MetaMessage("time_signature", numerator=4, denominator=4, time=0))
    # the head track ends where the piece ends, so trailing rests survive a round trip
    head.append(mido.MetaMessage("end_of_track", time=round(tracks.shape[1] * TICKS_PER_BEAT * STEP)))
    mid.tracks.append(head)
    for k, (row, name) in enumerate(zip(tracks, chorale.names, strict=True)):
        ch = _channel(k)
        events = []
        for start, length, pitch in notes(row):
            events.append((round(start * per_step), 1, pitch))            # offs sort before ons at a tick
            events.append((round((start + length) * per_step), 0, pitch))
        events.sort()
        tr = mido.MidiTrack()
        tr.append(mido.MetaMessage("track_name", name=str(name), time=0))
        now = 0
        for tick, on, pitch in events:
            kind = "note_on" if on else "note_off"
            tr.append(mido.Message(kind, note=pitch, velocity=80 if on else 0, channel=ch, time=tick - now))
            now = tick
        tr.append(mido.MetaMessage("end_of_track", time=0))
        mid.tracks.append(tr)
    return atomic_write(path, lambda tmp: mid.save(str(tmp)))


def _track_notes(track: Any) -> tuple[str, list[tuple[int, int, int, int]]]:
    """(track name, [(start tick, end tick, pitch, channel)]) of one mido track; a note never
    switched off ends at the track's end."""
    name, now = "", 0
    open_: dict[tuple[int, int], list[int]] = {}
    out = []
    for msg in track:
        now += msg.time
        if msg.type == "track_name" and not name:
            name = str(msg.name)
        elif msg.type == "note_on" and msg.velocity > 0:
            open_.setdefault((msg.channel, msg.note), []).append(now)
        elif msg.type in ("note_off", "note_on"):
            starts = open_.get((msg.channel, msg.note))
            if starts:
                out.append((starts.pop(0), now, msg.note, msg.channel))
    for (ch, note), starts in open_.items():
        out.extend((s, now, note, ch) for s in starts)
    return name, out


MAX_MIDI_STEPS = 1_000_000  # sixteenths: over 8 hours at 120 beats a minute


def read_midi(path: str | Path) -> Chorale:
    """A MIDI file -> :class:`Chorale`: one track per MIDI track with notes, in file order (a
    track with notes on several channels, as in type-0 files, is split by channel). Names: the
    voice name when a track's name is one (case-insensitive, e.g. "Soprano"), else ``track1``,
    ``track2``... (the position among the tracks with notes). Note on/off times are rounded to
    the sixteenth grid of the file's first tempo, which also sets ``step_seconds``; a note
    shorter than half a step keeps one step;
    where notes of one track overlap the highest sounds. Notes on the General MIDI drum channel
    (10) are not pitches: they are left out with one warning naming the tracks (a track of drums
    only is left out whole). The piece's name is the name of a leading track without notes, else
    the file's stem; ``source`` is the file. A file mido cannot read (empty, cut off, not MIDI),
    or one without pitched notes, is a ValueError naming the file and the reason."""
    import mido

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such MIDI file")
    try:
        mid = mido.MidiFile(str(path))
    except Exception as err:
        raise ValueError(f"{path}: not a readable MIDI file ({_midi_problem(path, err)})") from None
    if mid.type == 2:
        raise ValueError(f"{path}: type-2 MIDI (independent sequences) is not supported")
    tpb = mid.ticks_per_beat
    if not tpb or tpb <= 0:
        raise ValueError(f"{path}: MIDI uses SMPTE time division, which is not supported")
    tempo, first, end = 500000, None, 0
    for tr in mid.tracks:
        end = max(end, sum(msg.time for msg in tr))  # the longest track's end (trailing rests included)
        now = 0
        for msg in tr:
            now += msg.time
            if msg.type == "set_tempo" and (first is None or now < first):
                first, tempo = now, msg.tempo
                break
    parsed = [_track_notes(tr) for tr in mid.tracks]
    title = parsed[0][0] if parsed and not parsed[0][1] else ""
    parsed, drums = _without_drums(parsed)
    groups: list[tuple[str, list[tuple[int, int, int, int]]]] = []
    for i, (name, ns) in enumerate(parsed):
        if not ns:  # a voice that rests throughout is still a voice (the first track is the title / tempo track)
            if i > 0 and name.strip().lower() in VOICES:
                groups.append((name, []))
            continue
        chans = sorted({n[3] for n in ns})
        if len(chans) > 1:  # parts on several channels (type 0's whole piece): one track each, not their top line
            groups.extend(("", [n for n in ns if n[3] == c]) for c in chans)
        else:
            groups.append((name, ns))
    if not any(ns for _, ns in groups):
        if drums:
            raise ValueError(f"{path}: the MIDI file has only drum notes (General MIDI channel 10: "
                             f"{', '.join(drums)}), no pitched notes")
        raise ValueError(f"{path}: the MIDI file has no notes")
    if drums:
        warnings.warn(f"{path}: skipped the drum notes (General MIDI channel 10, unpitched) of {len(drums)} "
                      f"track(s): {', '.join(drums)}", stacklevel=2)
    per_step = tpb * STEP
    quantised = []
    for _, ns in groups:
        q = []
        for s, e, p, _c in ns:
            a = round(s / per_step)
            b = max(round(e / per_step), a + 1)
            q.append((a, b, p))
        quantised.append(q)
    length = max(max((b for q in quantised for _, b, _ in q), default=0), round(end / per_step))
    if length > MAX_MIDI_STEPS:  # a damaged delta time would allocate gigabytes
        hours = length * tempo / 1e6 * STEP / 3600
        raise ValueError(f"{path}: the piece would be {length:,} sixteenth steps long ({hours:.0f} hours at its "
                         f"tempo), more than {MAX_MIDI_STEPS:,}: a damaged delta time?")
    tracks = np.zeros((len(groups), length), dtype=np.int64)
    for row, q in zip(tracks, quantised, strict=True):
        for a, b, p in q:
            row[a:b] = np.maximum(row[a:b], p)
    names, used = [], set()
    for i, (name, _) in enumerate(groups):
        v = name.strip().lower()
        if v in VOICES and v not in used:
            names.append(v)
            used.add(v)
        else:
            names.append(f"track{i + 1}")
    return Chorale(tracks, tuple(names), title or path.stem, tempo / 1e6 * STEP, str(path))


def _midi_problem(path: Path, err: Exception) -> str:
    """The reason mido could not read ``path``, in words (mido's own EOFError has none)."""
    size = path.stat().st_size
    if size == 0:
        return "empty file (0 bytes)"
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head != b"MThd":
        return f"no MIDI header: the file starts with {head!r}, not b'MThd'"
    if isinstance(err, EOFError):
        return f"the file is cut off: it ends inside a MIDI chunk after {size} bytes"
    return f"{type(err).__name__}: {err}" if str(err) else type(err).__name__


DRUM_CHANNEL = 9  # General MIDI channel 10 (mido counts from 0): unpitched percussion


def _without_drums(parsed: list[tuple[str, list[tuple[int, int, int, int]]]]
                   ) -> tuple[list[tuple[str, list[tuple[int, int, int, int]]]], list[str]]:
    """The tracks of :func:`_track_notes` without their drum-channel notes, and a description
    ('Drums' (track 2)) of each track that had some: drum notes are not pitches."""
    out, drums = [], []
    for i, (name, ns) in enumerate(parsed):
        kept = [n for n in ns if n[3] != DRUM_CHANNEL]
        if len(kept) < len(ns):
            drums.append(f"{name!r} (track {i + 1})" if name else f"track {i + 1}")
            if not kept:  # a drum track: left out whole (not kept as a resting voice)
                continue
        out.append((name, kept))
    return out, drums


# -- synthesis -------------------------------------------------------------------------------------

def _partials(timbre: int, f0: float, limit: float) -> list[tuple[int, float]]:
    """(harmonic number, amplitude) of a voice's timbre, band-limited: harmonic * f0 < limit."""
    top = max(1, math.ceil(limit / f0) - 1)
    while top > 1 and top * f0 >= limit:
        top -= 1
    if timbre == 0:    # soprano: near-sine
        parts = [(1, 1.0), (2, 0.08), (3, 0.03)]
    elif timbre == 1:  # alto: triangle-like, odd harmonics 1/n^2 (alternating sign)
        parts = [(n, (-1.0) ** ((n - 1) // 2) / n ** 2) for n in range(1, top + 1, 2)]
    elif timbre == 2:  # tenor: clarinet-like, odd harmonics 1/n
        parts = [(n, 1.0 / n) for n in range(1, top + 1, 2)]
    else:              # bass: sawtooth, all harmonics 1/n
        parts = [(n, 1.0 / n) for n in range(1, top + 1)]
    return [(n, a) for n, a in parts if n * f0 < limit]


VIBRATO_HZ, VIBRATO_DEPTH = 5.5, 0.004   # the soprano's vibrato: rate and relative frequency depth
PEAK = 0.25                               # every stem's peak amplitude
ATTACK, RELEASE = 0.010, 0.030            # seconds


def _note(timbre: int, pitch: int, m: int, sr: int) -> np.ndarray:
    """``m`` samples of one note: the voice's waveform at the pitch's frequency, normalised to
    :data:`PEAK`, with a linear attack and release inside the note."""
    f0 = 440.0 * 2.0 ** ((pitch - 69) / 12)
    t = np.arange(m) / sr
    depth = VIBRATO_DEPTH if timbre == 0 else 0.0
    phase = 2 * np.pi * f0 * t
    if depth:
        phase = phase + f0 * depth / VIBRATO_HZ * (1 - np.cos(2 * np.pi * VIBRATO_HZ * t))
    wave = np.zeros(m)
    for n, a in _partials(timbre, f0, sr / 2 / (1 + depth)):
        wave += a * np.sin(n * phase)
    peak = np.abs(wave).max() if m else 0.0
    if peak > 0:
        wave *= PEAK / peak
    att = min(round(ATTACK * sr), m // 4)
    rel = min(round(RELEASE * sr), m // 2)
    env = np.ones(m)
    if att:
        env[:att] = np.arange(att) / att
    if rel:
        env[m - rel:] = np.minimum(env[m - rel:], np.arange(rel, 0, -1) / rel - 1 / rel)
    return wave * env


def render(tracks: np.ndarray, sr: int = 8000, step_seconds: float = 0.125) -> np.ndarray:
    """(K, T) MIDI pitches (0 = rest) -> (K, n) float32 stems, n = round(T * step_seconds * sr).

    Each voice has its own timbre (voices beyond four reuse them in order): soprano a near-sine
    with light vibrato, alto odd harmonics 1/n^2 (triangle-like), tenor odd harmonics 1/n
    (clarinet-like), bass all harmonics 1/n (sawtooth); only harmonics below sr/2 are summed (no
    aliasing). Each note (a run of :func:`notes`) has a 10 ms attack and a 30 ms release to
    silence inside its duration, so note changes are audible; each stem peaks at <= 0.25, so the
    mix of four stays within [-1, 1]. Deterministic."""
    a = np.asarray(tracks)
    if a.ndim == 1:
        a = a[None]
    if a.ndim != 2:
        raise ValueError(f"render: tracks must be (K, T), got shape {a.shape}")
    if sr <= 0 or step_seconds <= 0:
        raise ValueError(f"render: sr and step_seconds must be positive, got {sr} and {step_seconds}")
    if ((a < 0) | (a > 127)).any():
        raise ValueError(f"render: pitch {int(a[(a < 0) | (a > 127)].flat[0])} is outside MIDI 0..127")
    n = round(a.shape[1] * step_seconds * sr)
    out = np.zeros((a.shape[0], n), dtype=np.float32)
    memo: dict[tuple[int, int, int], np.ndarray] = {}
    for k, row in enumerate(a):
        for start, length, pitch in notes(row):
            s = round(start * step_seconds * sr)
            e = min(n, round((start + length) * step_seconds * sr))
            if e <= s:
                continue
            key = (k % 4, pitch, e - s)
            if key not in memo:
                memo[key] = _note(k % 4, pitch, e - s, sr)
            out[k, s:e] = memo[key]
    return out


# -- stem spectrograms -----------------------------------------------------------------------------

@dataclass(frozen=True)
class StemSpec:
    """The stem spectrogram: sample rate, FFT size, hop, mel bands (0 .. sr/2, unnormalised
    triangles) and the dynamic range mapped to [-1, 1]."""

    sr: int = 8000
    n_fft: int = 512
    hop: int = 250
    n_mels: int = 48
    top_db: float = 80.0

    def __post_init__(self) -> None:
        if self.sr <= 0 or self.n_fft <= 0 or self.hop <= 0 or self.n_mels <= 0 or self.top_db <= 0:
            raise ValueError(f"StemSpec: every field must be positive, got {self}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able fields."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> StemSpec:
        """The spec of :meth:`to_dict`'s output; an unknown field is a ValueError naming it."""
        names = {f.name: f.type for f in fields(cls)}
        extra = sorted(set(d) - set(names))
        if extra:
            raise ValueError(f"StemSpec: unknown field(s) {', '.join(extra)} (known: {', '.join(names)})")
        return cls(**{k: (float(v) if k == "top_db" else int(v)) for k, v in d.items()})

    def frames_per_step(self, step_seconds: float) -> int:
        """Spectrogram frames per sixteenth step (0.125 s at 8 kHz = 1000 samples = 4 hops); a
        step that is not a whole number of hops is a ValueError."""
        x = step_seconds * self.sr / self.hop
        if abs(x - round(x)) > 1e-6 or round(x) <= 0:
            raise ValueError(f"StemSpec: a step of {step_seconds} s is {x:g} hops of {self.hop} samples at "
                             f"{self.sr} Hz, not a whole positive number")
        return round(x)


def _mel_basis(spec: StemSpec) -> np.ndarray:
    import librosa

    return librosa.filters.mel(sr=spec.sr, n_fft=spec.n_fft, n_mels=spec.n_mels, fmin=0.0, fmax=spec.sr / 2,
                               norm=None, dtype=np.float64)


@functools.lru_cache(maxsize=16)
def _reference(spec: StemSpec) -> float:
    """0 dB: the largest mel magnitude of a full-scale 1 kHz sine (sr / 8 below 8 kHz; others within
    about 2 dB of it)."""
    import librosa

    n = 8 * spec.n_fft
    sine = np.sin(2 * np.pi * min(1000.0, spec.sr / 8) * np.arange(n) / spec.sr)
    mag = np.abs(librosa.stft(sine, n_fft=spec.n_fft, hop_length=spec.hop, window="hann", center=False))
    return float((_mel_basis(spec) @ mag).max())


def stem_mels(audio: np.ndarray, spec: StemSpec = StemSpec()) -> np.ndarray:
    """(K, n) stems -> (K, n_mels, n // hop) float32 normalised log-mel in [-1, 1].

    Magnitude STFT (Hann, centred, zero padded) through unnormalised triangular mel filters, in
    dB against a fixed reference (a full-scale sine is about 0 dB), clipped to [-top_db, 0] and
    mapped linearly (-top_db -> -1, 0 -> +1). The centred STFT's last frame is cropped so frames
    = n // hop. A 1-D signal is one stem."""
    import librosa

    a = np.asarray(audio, dtype=np.float64)
    if a.ndim == 1:
        a = a[None]
    if a.ndim != 2:
        raise ValueError(f"stem_mels: audio must be (K, n), got shape {a.shape}")
    frames = a.shape[1] // spec.hop
    if frames == 0:
        raise ValueError(f"stem_mels: {a.shape[1]} samples is shorter than one hop ({spec.hop})")
    mag = np.abs(librosa.stft(a, n_fft=spec.n_fft, hop_length=spec.hop, window="hann", center=True))
    mel = np.einsum("mf,kft->kmt", _mel_basis(spec), mag[..., :frames])
    db = 20 * np.log10(np.maximum(mel, 1e-12) / _reference(spec))
    db = np.clip(db, -spec.top_db, 0.0)
    return (1 + 2 * db / spec.top_db).astype(np.float32)


def _mel_magnitude(mels: np.ndarray, spec: StemSpec) -> np.ndarray:
    """Normalised log-mels -> linear mel magnitudes; the floor (-1) is silence (0)."""
    x = np.clip(np.asarray(mels, dtype=np.float64), -1.0, 1.0)
    mag = _reference(spec) * 10 ** ((x - 1) * spec.top_db / 2 / 20)
    return np.where(x <= -1 + 1e-6, 0.0, mag)


def _check_mels(mels: np.ndarray, spec: StemSpec, what: str) -> np.ndarray:
    m = np.asarray(mels)
    if m.ndim == 2:
        m = m[None]
    if m.ndim != 3 or m.shape[1] != spec.n_mels:
        raise ValueError(f"{what}: mels must be (K, {spec.n_mels}, frames), got shape {np.asarray(mels).shape}")
    return m


def stems_audio(mels: np.ndarray, spec: StemSpec = StemSpec(), n_iter: int = 32) -> np.ndarray:
    """(K, n_mels, F) normalised stem mels -> (K, F * hop) float32 audio by Griffin-Lim per stem
    (linear magnitudes by the mel filters' pseudo-inverse clipped at 0, as :func:`separate` uses:
    librosa's ``mel_to_stft`` solves a non-negative least-squares problem per frame, two orders of
    magnitude slower; then Griffin-Lim with a fixed seed, so the result is deterministic)."""
    import librosa

    m = _check_mels(mels, spec, "stems_audio")
    n = m.shape[2] * spec.hop
    out = np.zeros((m.shape[0], n), dtype=np.float32)
    inv = np.linalg.pinv(_mel_basis(spec))
    for k, stem in enumerate(m):
        mag = _mel_magnitude(stem, spec)
        if not mag.any():
            continue
        lin = np.clip(inv @ mag, 0.0, None)
        lin = np.concatenate([lin, lin[:, -1:]], axis=1)  # the centred STFT's extra last frame
        out[k] = librosa.griffinlim(lin, n_iter=n_iter, hop_length=spec.hop, n_fft=spec.n_fft, window="hann",
                                    center=True, length=n, random_state=0)
    return out


def separate(mix: np.ndarray, mels: np.ndarray, spec: StemSpec = StemSpec()) -> np.ndarray:
    """Split a mixture (n,) into K stems given their estimated mels (K, n_mels, F), with the
    mixture's phase: each stem's mel -> linear magnitude (pseudo-inverse of the mel filters,
    clipped at 0), ratio masks |S_k|^2 / sum_j |S_j|^2 (1 / K where every stem is silent) on the
    mixture's STFT, inverse STFT. The masks sum to one, so the stems sum to the mixture (up to
    float error). F must be n // hop (or that + 1); the last mel frame covers the centred STFT's
    extra frame."""
    import librosa

    x = np.asarray(mix, dtype=np.float64)
    if x.ndim == 2 and x.shape[0] == 1:
        x = x[0]
    if x.ndim != 1:
        raise ValueError(f"separate: mix must be one signal (n,), got shape {np.asarray(mix).shape}")
    m = _check_mels(mels, spec, "separate")
    n = x.shape[0]
    if m.shape[2] not in (n // spec.hop, n // spec.hop + 1):
        raise ValueError(f"separate: {m.shape[2]} mel frames do not match a mixture of {n} samples "
                         f"({n // spec.hop} frames of {spec.hop})")
    X = librosa.stft(x, n_fft=spec.n_fft, hop_length=spec.hop, window="hann", center=True)
    inv = np.linalg.pinv(_mel_basis(spec))
    S = np.clip(np.einsum("fm,kmt->kft", inv, _mel_magnitude(m, spec)), 0.0, None)
    if S.shape[2] < X.shape[1]:
        S = np.concatenate([S, np.repeat(S[:, :, -1:], X.shape[1] - S.shape[2], axis=2)], axis=2)
    P = S[:, :, : X.shape[1]] ** 2
    total = P.sum(0)
    masks = np.where(total > 0, P / np.where(total > 0, total, 1.0), 1.0 / m.shape[0])
    est = librosa.istft(masks * X[None], hop_length=spec.hop, n_fft=spec.n_fft, window="hann", center=True,
                        length=n)
    return est.astype(np.float32)


__all__ = ["HIGH", "LOW", "STEP", "VOCAB", "VOICES", "Chorale", "StemSpec", "from_tokens", "load_chorales",
           "notes", "read_midi", "render", "separate", "shift_range", "stem_mels", "stems_audio", "to_tokens",
           "transpose", "windows", "write_midi"]
