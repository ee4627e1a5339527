"""Time-series data: embedded series, shared benchmark loaders, users' files, windows and scaling.

A :class:`SeriesSet` holds regular series (each a (T, C) float array with timestamps); every
source ends up as one, and every model sees fixed-length windows of it (context + horizon).

Sources:

- embedded, no download: statsmodels' bundled series (``sunspots``, ``co2``, ``elnino``,
  ``macrodata``, ``nile``, ``elec_equip``) and generated data (:func:`ar_series`,
  :func:`sine_series`);
- ``shared/data/timeseries`` (ETTh1, ETTh2, exchange_rate), found through ``POLYDIFF_SHARED``
  (default: the ``shared`` folder beside the repository root);
- users' CSV / parquet files and pandas frames, long format (one row per series and time:
  ``item_id, timestamp, target``) or wide format (one column per series).

Documented handling of bad input: timestamps must be strictly increasing with one constant
step per series (else a :class:`DataError` naming the file, the series and the first offending
row; ``regularize=True`` reindexes to the inferred step, the gaps becoming NaNs); NaNs raise a
:class:`DataError` naming the file, column and row unless ``nan="mask"`` (kept as unobserved
entries, excluded from the loss and from guidance) or ``nan="interpolate"`` (linear in time,
ends filled with the nearest value); series shorter than one window raise a
:class:`DataError` unless ``drop_short=True``.

Scaling (per window or per channel, see :func:`scale_windows`): ``mean`` divides a window by
the mean absolute observed value of its context (gluonts' ``MeanScaler``, as in TSDiff),
``minmax`` maps each channel's training range to [-1, 1] (TimeGAN / Diffusion-TS / PaCoDi),
``standard`` z-scores each channel, ``none`` keeps values.
"""

from __future__ import annotations

import csv
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from pandas.io.parsers import TextParser

from polydiff.plugin import TensorStates, csv_rows, read_text, shared_file

from .spectral import to_spectrum

NAN_POLICIES = ("error", "mask", "interpolate")
SCALINGS = ("mean", "minmax", "standard", "none")
STATSMODELS_SERIES = ("sunspots", "co2", "elnino", "macrodata", "nile", "elec_equip")
# gluonts' default seasonalities by frequency (gluonts.time_feature.get_seasonality)
_SEASONS = {"s": 3600, "min": 1440, "h": 24, "d": 1, "b": 5, "w": 1, "m": 12, "ms": 12, "me": 12, "q": 4,
            "qs": 4, "qe": 4, "y": 1, "ys": 1, "ye": 1, "a": 1}


class DataError(ValueError):
    """Bad time-series input; the message names the file / frame, the series and the column."""


# ---------------------------------------------------------------------------------------------
# the series container
# ---------------------------------------------------------------------------------------------

@dataclass
class SeriesSet:
    """Regular series: ``values[i]`` is (T_i, C) float64 (NaN = missing), ``index[i]`` its
    timestamps (a DatetimeIndex, or a RangeIndex for integer time), one frequency for all."""

    values: list[np.ndarray]
    ids: list[str]
    index: list[pd.Index]
    columns: list[str]
    freq: str | None = None
    source: str = "<series>"
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not (len(self.values) == len(self.ids) == len(self.index)):
            raise DataError(f"{self.source}: values, ids and index must have the same length")
        self.values = [np.asarray(v, dtype=np.float64).reshape(len(v), -1) for v in self.values]

    def __len__(self) -> int:
        return len(self.values)

    @property
    def channels(self) -> int:
        return self.values[0].shape[1] if self.values else len(self.columns)

    @property
    def season(self) -> int:
        """gluonts' default seasonality of the frequency (1 when unknown)."""
        return season_of(self.freq)

    def univariate(self) -> SeriesSet:
        """Every channel as its own univariate series (id ``"<id>/<column>"`` when C > 1)."""
        if self.channels == 1:
            return self
        vals, ids, idx = [], [], []
        for v, i, ix in zip(self.values, self.ids, self.index):
            for c, name in enumerate(self.columns):
                vals.append(v[:, c:c + 1])
                ids.append(f"{i}/{name}" if len(self.ids) > 1 else name)
                idx.append(ix)
        return SeriesSet(vals, ids, idx, ["target"], self.freq, self.source, dict(self.meta))

    def select(self, columns: Sequence[str]) -> SeriesSet:
        """Keep the named channels (in the given order)."""
        bad = [c for c in columns if c not in self.columns]
        if bad:
            raise DataError(f"{self.source}: no column(s) {bad}; columns: {', '.join(self.columns)}")
        pos = [self.columns.index(c) for c in columns]
        return SeriesSet([v[:, pos] for v in self.values], list(self.ids), list(self.index), list(columns),
                         self.freq, self.source, dict(self.meta))

    def head(self, n: int) -> SeriesSet:
        """The first ``n`` time steps of every series."""
        return SeriesSet([v[:n] for v in self.values], list(self.ids), [ix[:n] for ix in self.index],
                         list(self.columns), self.freq, self.source, dict(self.meta))

    def to_long(self) -> pd.DataFrame:
        """Long format: ``item_id, timestamp`` and one column per channel."""
        frames = []
        for v, i, ix in zip(self.values, self.ids, self.index):
            f = pd.DataFrame(v, columns=self.columns)
            f.insert(0, "timestamp", np.asarray(ix))
            f.insert(0, "item_id", i)
            frames.append(f)
        return pd.concat(frames, ignore_index=True)


def season_of(freq: str | None) -> int:
    """gluonts' default seasonality for a pandas frequency string (``h`` -> 24, ``MS`` -> 12)."""
    if not freq:
        return 1
    off = pd.tseries.frequencies.to_offset(freq)
    base = "".join(ch for ch in off.name.split("-")[0] if ch.isalpha()).lower()
    m = _SEASONS.get(base, 1)
    n = getattr(off, "n", 1) or 1
    return max(m // n, 1) if base in ("s", "min", "h") else m


# ---------------------------------------------------------------------------------------------
# checks: regular timestamps, NaNs
# ---------------------------------------------------------------------------------------------

def _row_names(n: int, rows: Sequence[str] | None) -> Sequence[str]:
    """How messages name the ``n`` rows: the caller's names (``"line 12"`` for files), else
    ``"row k"`` (0-based positions, as ``df.iloc`` counts them)."""
    return rows if rows is not None else [f"row {k}" for k in range(n)]


def regular_index(ts: pd.Series | pd.Index, where: str, regularize: bool = False,
                  rows: Sequence[str] | None = None) -> tuple[pd.Index, str | None, np.ndarray | None]:
    """Check that ``ts`` is strictly increasing with one constant step.

    Returns the index, its frequency string (None for integer time) and, with ``regularize``,
    the positions of the given rows in a gap-free index (else None). Errors name ``where`` and
    the offending row by its name in ``rows`` (file lines for files; default ``"row k"``, 0-based).
    """
    idx = pd.Index(ts)
    if len(idx) == 0:
        raise DataError(f"{where}: no rows")
    names = _row_names(len(idx), rows)
    missing = np.flatnonzero(pd.isna(idx))
    if missing.size:
        raise DataError(f"{where}: {names[missing[0]]} has no time value")
    if pd.api.types.is_numeric_dtype(idx.dtype) and not pd.api.types.is_bool_dtype(idx.dtype):
        arr = np.asarray(idx, dtype=np.float64)
        odd = np.flatnonzero(~np.isfinite(arr) | (arr != np.round(arr)) | (np.abs(arr) > 2.0**53))
        if odd.size:
            raise DataError(f"{where}: integer time steps expected; {names[odd[0]]} has {idx[odd[0]]!r}")
        step = np.diff(arr)
        bad = np.flatnonzero(step <= 0)
        if bad.size:
            raise DataError(f"{where}: time must be strictly increasing; {names[bad[0] + 1]} has {arr[bad[0] + 1]:g} "
                            f"after {arr[bad[0]]:g} (sort the rows and drop duplicates)")
        if len(arr) > 1 and not np.all(step == step[0]):
            k = int(np.flatnonzero(step != step[0])[0])
            if not regularize:
                raise DataError(f"{where}: irregular time steps: step {step[0]:g} at first but {step[k]:g} at "
                                f"{names[k + 1]} (pass regularize=True to reindex with NaN gaps)")
            d = np.gcd.reduce(step.astype(np.int64))
            pos = ((arr - arr[0]) // d).astype(np.int64)
            _check_growth(where, names, int(pos[-1]) + 1, step / d)
            return pd.RangeIndex(int(arr[0]), int(arr[0]) + int(pos[-1] + 1) * int(d), int(d)), None, pos
        return pd.Index(arr.astype(np.int64)), None, None
    idx = _timestamps(idx, where, names)
    if idx.tz is not None:
        idx = idx.tz_convert(None)
    idx = idx.as_unit("ns")
    d = np.diff(idx.asi8)
    bad = np.flatnonzero(d <= 0)
    if bad.size:
        raise DataError(f"{where}: timestamps must be strictly increasing; {names[bad[0] + 1]} ({idx[bad[0] + 1]}) "
                        f"follows {idx[bad[0]]} (sort the rows and drop duplicates)")
    if len(idx) < 3:
        return idx, None, None
    freq = pd.infer_freq(idx)
    if freq is not None:
        return pd.DatetimeIndex(idx, freq=freq), freq, None
    # no single frequency: find the first row where the step changes
    k = int(np.flatnonzero(d != d[0])[0]) if np.any(d != d[0]) else 0
    if not regularize:
        raise DataError(f"{where}: irregular timestamps: step {pd.Timedelta(int(d[0]), 'ns')} at first but "
                        f"{pd.Timedelta(int(d[k]), 'ns')} before {names[k + 1]} ({idx[k + 1]}); resample the data "
                        "(e.g. df.resample('h').mean()) or pass regularize=True to reindex with NaN gaps")
    calendar = _calendar_grid(idx)  # months, quarters, years, business days: steps of unequal length
    if calendar is not None:
        full, freq = calendar
        return full, freq, full.get_indexer(idx).astype(np.int64)
    step = int(np.gcd.reduce(d))
    _check_growth(where, names, int((idx.asi8[-1] - idx.asi8[0]) // step) + 1, d / step)
    full = pd.date_range(idx[0], idx[-1], freq=pd.Timedelta(step, "ns"))
    freq = pd.infer_freq(full) if len(full) >= 3 else None
    pos = ((idx.asi8 - idx.asi8[0]) // step).astype(np.int64)
    return pd.DatetimeIndex(full, freq=freq), freq, pos


CALENDAR_FREQS = ("YS", "YE", "QS", "QE", "MS", "ME", "W", "B")  # pandas offsets whose steps vary in length
MAX_GROWTH = 100  # regularize may make at most this many steps per given row (plus 1,000)


def _calendar_grid(idx: pd.DatetimeIndex) -> tuple[pd.DatetimeIndex, str] | None:
    """The coarsest calendar grid (monthly, quarterly...) that holds every timestamp of ``idx``
    from its first to its last, or None: monthly data with a missing month is monthly with one
    gap, not daily with 700 (the greatest common step of months is one day)."""
    best = None
    for freq in CALENDAR_FREQS:
        anchored = f"W-{idx[0].day_name()[:3].upper()}" if freq == "W" else freq
        full = pd.date_range(idx[0], idx[-1], freq=anchored)
        if len(full) and full[0] == idx[0] and full[-1] == idx[-1] and idx.isin(full).all() and \
                (best is None or len(full) < len(best[0])):
            best = (pd.DatetimeIndex(full, freq=anchored), anchored)
    return best


def _check_growth(where: str, names: Sequence[str], steps: int, gaps: np.ndarray) -> None:
    """A DataError when reindexing ``len(gaps) + 1`` rows would make ``steps`` steps, far more
    than the rows (a typo in the time column, e.g. one timestamp 1e11): named with the widest gap."""
    if steps > MAX_GROWTH * (len(gaps) + 1) + 1000:
        k = int(np.argmax(gaps))
        raise DataError(f"{where}: regularize=True would make {steps:,} time steps from {len(gaps) + 1} rows; the "
                        f"widest gap, {float(gaps[k]):.0f} steps, is before {names[k + 1]} (a typo in the time "
                        "column?)")


def _timestamps(idx: pd.Index, where: str, names: Sequence[str]) -> pd.DatetimeIndex:
    """Timestamps parsed by pandas; the first unreadable one is an error naming its row."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pandas' "could not infer format" chatter
            parsed = pd.DatetimeIndex(pd.to_datetime(idx, errors="coerce"))
    except (ValueError, TypeError, OverflowError) as err:  # e.g. mixed time zones
        raise DataError(f"{where}: cannot read timestamps ({err})") from None
    bad = np.flatnonzero(pd.isna(parsed))
    if bad.size:
        raise DataError(f"{where}: {names[bad[0]]}: cannot read the timestamp {idx[bad[0]]!r}")
    return parsed


def handle_nans(v: np.ndarray, nan: str, where: str, columns: Sequence[str], index: pd.Index,
                rows: Sequence[str | None] | None = None) -> np.ndarray:
    """Apply the NaN policy to one (T, C) series (see the module docstring). ``rows`` names the
    rows in messages (file lines; None for a gap that ``regularize`` inserted)."""
    if nan not in NAN_POLICIES:
        raise DataError(f"nan={nan!r}: allowed values are {', '.join(NAN_POLICIES)}")
    miss = ~np.isfinite(v)
    if not miss.any():
        return v
    if nan == "error":
        r, c = np.argwhere(miss)[0]
        name = _row_names(len(v), rows)[r] or "a gap (no row)"
        raise DataError(f"{where}: column {columns[c]!r} has {int(miss[:, c].sum())} missing (NaN / empty) values, "
                        f"first at {name} ({index[r]}); pass nan='mask' to treat them as unobserved or "
                        "nan='interpolate' to fill them")
    v = np.where(miss, np.nan, v)
    if nan == "interpolate":
        out = v.copy()
        t = np.arange(len(v))
        for c in range(v.shape[1]):
            ok = np.isfinite(v[:, c])
            if not ok.any():
                raise DataError(f"{where}: column {columns[c]!r} has no observed value to interpolate from")
            out[:, c] = np.interp(t, t[ok], v[ok, c])
        return out
    return v


# ---------------------------------------------------------------------------------------------
# frames and files
# ---------------------------------------------------------------------------------------------

_TIME = "\x00time"  # the time column of the long frame built by from_wide (never shown: messages use the user's)


def from_long(df: pd.DataFrame, target: str | Sequence[str] = "target", id_col: str | None = "item_id",
              time_col: str = "timestamp", *, nan: str = "error", regularize: bool = False,
              source: str = "<frame>", lines: Sequence[int] | None = None) -> SeriesSet:
    """A long-format frame (one row per series and time step) -> :class:`SeriesSet`.

    ``target`` names one or more value columns (channels), ``id_col`` the series (None: one
    series), ``time_col`` the timestamps (datetimes or integers; ``"index"`` = the frame index).
    ``lines`` gives the file line of every row (see :func:`read_frame`): errors then name lines;
    otherwise they name rows by their 0-based position in the frame.
    """
    tname = time_col if time_col != "index" else str(df.index.name or "index")
    return _from_long(df, target, id_col, time_col, tname, nan=nan, regularize=regularize, source=source,
                      lines=lines)


def _from_long(df: pd.DataFrame, target: str | Sequence[str], id_col: str | None, time_col: str, tname: str, *,
               nan: str, regularize: bool, source: str, lines: Sequence[int] | None) -> SeriesSet:
    targets = [target] if isinstance(target, str) else list(target)
    df = df.reset_index() if time_col == "index" else df
    tcol = df.columns[0] if time_col == "index" else time_col
    needed = [c for c in [*targets, tcol, *([id_col] if id_col else [])] if c not in df.columns]
    if needed:
        shown = [tname if c == tcol else c for c in needed]
        raise DataError(f"{source}: no column(s) {shown}; columns: {', '.join(map(str, df.columns))}")
    if lines is not None and len(lines) != len(df):
        raise DataError(f"{source}: {len(lines)} line numbers for {len(df)} rows")
    names = [f"line {n}" for n in lines] if lines is not None else [f"row {k}" for k in range(len(df))]
    if id_col is None:
        groups = [("series", np.arange(len(df)))]
    else:
        no_id = np.flatnonzero(df[id_col].isna().to_numpy())
        if no_id.size:
            raise DataError(f"{source}: {names[no_id[0]]} has no series id in column {id_col!r}")
        groups = list(df.groupby(id_col, sort=False).indices.items())
    values, ids, index, freqs = [], [], [], set()
    for key, at in groups:
        g = df.iloc[at]
        rows = [names[k] for k in at]
        where = f"{source}: series {key!r} (time column {tname!r})" if id_col else f"{source} (time column {tname!r})"
        idx, freq, pos = regular_index(g[tcol], where, regularize, rows)
        v = g[targets].apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
        bad = g[targets].notna().to_numpy() & ~np.isfinite(v)
        if bad.any():
            r, c = np.argwhere(bad)[0]
            raise DataError(f"{where}: column {targets[c]!r} {rows[r]}: not a number: {g[targets[c]].iloc[r]!r}")
        if pos is not None:
            full = np.full((len(idx), len(targets)), np.nan)
            full[pos] = v
            v = full
            named: list[str | None] = [None] * len(idx)
            for j, k in enumerate(pos):
                named[k] = rows[j]
            rows = named
        values.append(handle_nans(v, nan, where.split(" (time")[0], targets, idx, rows))
        ids.append(str(key))
        index.append(idx)
        freqs.add(freq)
    freqs.discard(None)
    if len(freqs) > 1:
        raise DataError(f"{source}: series have different frequencies {sorted(freqs)}; resample them to one")
    return SeriesSet(values, ids, index, targets, next(iter(freqs), None), source)


def from_wide(df: pd.DataFrame, columns: Sequence[str] | None = None, time_col: str | None = "index", *,
              multivariate: bool = False, nan: str = "error", regularize: bool = False,
              source: str = "<frame>", lines: Sequence[int] | None = None) -> SeriesSet:
    """A wide frame (one column per series) -> :class:`SeriesSet`: one univariate series per
    column, or one multivariate series with ``multivariate=True``. ``lines`` as for :func:`from_long`."""
    if time_col is not None and time_col != "index" and time_col not in df.columns:
        raise DataError(f"{source}: no time column {time_col!r}; columns: {', '.join(map(str, df.columns))}")
    cols = list(columns) if columns is not None else [c for c in df.columns if c != time_col]
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise DataError(f"{source}: no column(s) {missing}; columns: {', '.join(map(str, df.columns))}")
    if not cols:
        raise DataError(f"{source}: no value columns besides the time column {time_col!r}")
    if time_col == "index":
        ts, tname = df.index, str(df.index.name or "index")
    elif time_col is None:
        ts, tname = pd.RangeIndex(len(df)), "row number"
    else:
        ts, tname = df[time_col], time_col
    long = df[cols].rename(columns={c: str(c) for c in cols}).reset_index(drop=True)
    long.insert(0, _TIME, np.asarray(ts))
    ss = _from_long(long, [str(c) for c in cols], None, _TIME, tname, nan=nan, regularize=regularize, source=source,
                    lines=lines)
    return ss if multivariate else ss.univariate()


def read_frame(path: str | Path) -> pd.DataFrame:
    """Read a CSV or parquet file. CSV: the delimiter is sniffed from the header line (``,``,
    tab, ``;``, ``|`` or space), values are typed as :func:`pandas.read_csv` types them, and
    ``df.attrs["lines"]`` holds the 1-based file line of every row (for messages). Problems are
    :class:`DataError` s naming the file (and the line): an empty file, bytes that are not UTF-8,
    a row with more or fewer fields than the header, an unclosed quote."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise FileNotFoundError(f"{file}: no such file")
    if file.suffix.lower() in (".parquet", ".pq"):
        return _read_parquet(file)
    text = read_text(file, DataError)
    if not text.strip():
        raise DataError(f"{file}: the file is empty")
    first = next(s for s in text.splitlines() if s.strip())
    try:
        delimiter = csv.Sniffer().sniff(first, delimiters=",\t;| ").delimiter
    except csv.Error:  # one column
        delimiter = ","
    pairs = csv_rows(file, text, delimiter, DataError)
    if not pairs:
        raise DataError(f"{file}: no records, only blank lines")
    header, rows, lines = pairs[0][1], [r for _, r in pairs[1:]], [n for n, _ in pairs[1:]]
    if not rows:
        raise DataError(f"{file}: a header line but no data rows")
    for line, row in zip(lines, rows):
        if len(row) != len(header):
            raise DataError(f"{file}:{line}: expected {len(header)} fields like the header, got {len(row)}: "
                            f"{delimiter.join(row)!r}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            df = TextParser([header, *rows], header=0).read()
    except Exception as err:  # pandas' own typing of the cells
        raise DataError(f"{file}: cannot read the table ({type(err).__name__}: {err})") from None
    df.attrs["lines"] = lines
    return df


def _read_parquet(file: Path) -> pd.DataFrame:
    try:
        import pyarrow  # noqa: F401
    except ImportError as err:
        raise DataError(f"{file}: reading parquet needs pyarrow (pip install polydiff-timeseries[parquet])") \
            from err
    try:
        return pd.read_parquet(file)
    except Exception as err:  # pyarrow raises ArrowInvalid, OSError, ...
        raise DataError(f"{file}: not a readable parquet file ({type(err).__name__}: {err})") from None


def read_series(path: str | Path, target: str | Sequence[str] | None = None, id_col: str | None = None,
                time_col: str = "timestamp", *, multivariate: bool = False, nan: str = "error",
                regularize: bool = False) -> SeriesSet:
    """Users' CSV / parquet: long format when ``id_col`` is given (``target`` = value column(s)),
    else wide (``target`` = the series columns, default: every column but ``time_col``).
    Errors name the file and, for CSV, the 1-based line."""
    df = read_frame(path)
    src = str(Path(path).expanduser())
    lines = df.attrs.get("lines")
    if time_col not in df.columns:
        raise DataError(f"{src}: no time column {time_col!r}; columns: {', '.join(map(str, df.columns))} "
                        "(set time_col)")
    if id_col is not None:
        return from_long(df, target or "target", id_col, time_col, nan=nan, regularize=regularize, source=src,
                         lines=lines)
    cols = None if target is None else ([target] if isinstance(target, str) else list(target))
    return from_wide(df, cols, time_col, multivariate=multivariate, nan=nan, regularize=regularize, source=src,
                     lines=lines)


# ---------------------------------------------------------------------------------------------
# embedded and shared series
# ---------------------------------------------------------------------------------------------

def statsmodels_series(name: str) -> SeriesSet:
    """One of statsmodels' bundled series, as a regular :class:`SeriesSet`.

    ``sunspots`` (yearly 1700-2008), ``nile`` (yearly 1871-1970), ``elnino`` (monthly sea
    surface temperatures 1950-2010, the 61 x 12 table read row by row), ``co2`` (weekly Mauna
    Loa 1958-2001; its 59 missing weeks are linearly interpolated), ``macrodata`` (quarterly US
    macro data 1959-2009, 12 channels), ``elec_equip`` (monthly euro-area electrical equipment
    orders 1995-2016).
    """
    import statsmodels.api as sm

    src = f"statsmodels.datasets.{name}"
    if name == "sunspots":
        d = sm.datasets.sunspots.load_pandas().data
        idx = pd.DatetimeIndex(pd.to_datetime(d["YEAR"].astype(int).astype(str), format="%Y"))
        return _one(d[["SUNACTIVITY"]].to_numpy(), idx, ["sunactivity"], "YS", src)
    if name == "nile":
        d = sm.datasets.nile.load_pandas().data
        idx = pd.DatetimeIndex(pd.to_datetime(d["year"].astype(int).astype(str), format="%Y"))
        return _one(d[["volume"]].to_numpy(), idx, ["volume"], "YS", src)
    if name == "elnino":
        d = sm.datasets.elnino.load_pandas().data
        v = d.drop(columns="YEAR").to_numpy().reshape(-1, 1)
        idx = pd.date_range(f"{int(d['YEAR'].iloc[0])}-01-01", periods=len(v), freq="MS")
        return _one(v, idx, ["sst"], "MS", src)
    if name == "co2":
        d = sm.datasets.co2.load_pandas().data
        v = handle_nans(d[["co2"]].to_numpy(np.float64), "interpolate", src, ["co2"], d.index)
        return _one(v, pd.DatetimeIndex(d.index), ["co2"], "W-SAT", src)
    if name == "macrodata":
        d = sm.datasets.macrodata.load_pandas().data
        cols = [c for c in d.columns if c not in ("year", "quarter")]
        idx = pd.date_range(f"{int(d['year'].iloc[0])}-01-01", periods=len(d), freq="QS")
        return _one(d[cols].to_numpy(np.float64), idx, cols, "QS", src)
    if name == "elec_equip":
        from statsmodels.datasets import elec_equip

        d = elec_equip.load().data
        return _one(d.to_numpy(np.float64), pd.DatetimeIndex(d.index), ["orders"], "MS", src)
    raise DataError(f"unknown statsmodels series {name!r}; allowed: {', '.join(STATSMODELS_SERIES)}")


def _one(v: np.ndarray, idx: pd.Index, cols: list[str], freq: str | None, src: str) -> SeriesSet:
    return SeriesSet([np.asarray(v, np.float64)], [src.rsplit(".", 1)[-1]], [idx], cols, freq, src)


def ar_series(n_series: int = 100, length: int = 400, season: int = 10, ar: float = 0.8, noise: float = 0.1,
              trend: float = 0.5, seed: int = 0) -> SeriesSet:
    """Generated seasonal AR data (in the spirit of pytorch-forecasting's ``generate_ar_data``):
    ``level_i * (1 + trend_i t / T + 0.3 sin(2 pi t / season + phase_i)) + AR(1) noise``, with
    positive levels so that mean scaling is meaningful. Integer time, one channel."""
    rng = np.random.default_rng(seed)
    t = np.arange(length)
    level = rng.uniform(1.0, 5.0, size=(n_series, 1))
    slope = trend * rng.uniform(-1, 1, size=(n_series, 1))
    phase = rng.uniform(0, 2 * math.pi, size=(n_series, 1))
    z = rng.normal(scale=noise, size=(n_series, length))
    e = np.zeros_like(z)
    e[:, 0] = z[:, 0] / math.sqrt(1 - ar**2)
    for k in range(1, length):
        e[:, k] = ar * e[:, k - 1] + z[:, k]
    x = level * (1 + slope * t / length + 0.3 * np.sin(2 * math.pi * t / season + phase) + e)
    return SeriesSet([row[:, None] for row in x], [f"ar{i}" for i in range(n_series)],
                     [pd.RangeIndex(length)] * n_series, ["target"], None, "generated:ar",
                     {"season": season})


def sine_series(n_series: int = 1, length: int = 10_000, channels: int = 5, seed: int = 0,
                segment: int = 24) -> SeriesSet:
    """Generated multichannel sines (the TimeGAN / Diffusion-TS "Sines" data): every segment of
    ``segment`` steps draws per channel a frequency in U(0, 0.1) and a phase in U(0, 2 pi);
    values ``sin(f t + p)`` in [-1, 1]. Integer time."""
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(n_series):
        parts = []
        for _ in range(math.ceil(length / segment)):
            f = rng.uniform(0, 0.1, size=channels)
            p = rng.uniform(0, 2 * math.pi, size=channels)
            tt = np.arange(segment)[:, None]
            parts.append(np.sin(f * tt + p))
        vals.append(np.concatenate(parts)[:length])
    return SeriesSet(vals, [f"sine{i}" for i in range(n_series)], [pd.RangeIndex(length)] * n_series,
                     [f"c{c}" for c in range(channels)], None, "generated:sine", {"segment": segment})


ETT_COLUMNS = ("HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT")


def ett(name: str = "ETTh1") -> SeriesSet:
    """ETTh1 / ETTh2 (Zhou et al. 2021, CC BY-ND 4.0): one hourly series of 7 channels,
    17,420 rows (``shared/data/timeseries/ETT-small``)."""
    if name not in ("ETTh1", "ETTh2"):
        raise DataError(f"unknown ETT file {name!r}; allowed: ETTh1, ETTh2 (ETTm* were not obtained)")
    file = shared_file("data", "timeseries", "ETT-small", f"{name}.csv")
    df = pd.read_csv(file)
    ss = from_long(df, list(ETT_COLUMNS), None, "date", source=str(file))
    ss.ids = [name]
    return ss


EXCHANGE_COLUMNS = tuple(f"rate{i}" for i in range(8))


def exchange_rate() -> SeriesSet:
    """Daily exchange rates of 8 currencies (Lai et al. 2018; 7,588 rows, no header, column
    order unstated by the source), as one 8-channel series on a daily integer clock."""
    file = shared_file("data", "timeseries", "exchange_rate", "exchange_rate.txt")
    v = np.loadtxt(file, delimiter=",", dtype=np.float64)
    idx = pd.date_range("1990-01-01", periods=len(v), freq="D")
    return SeriesSet([v], ["exchange_rate"], [idx], list(EXCHANGE_COLUMNS), "D", str(file))


# ---------------------------------------------------------------------------------------------
# windows and scaling
# ---------------------------------------------------------------------------------------------

def sliding_windows(v: np.ndarray, length: int, stride: int = 1, start: int = 0, stop: int | None = None) -> np.ndarray:
    """Windows ``v[s:s+length]`` (N, length, C) for ``s = start, start+stride, ...`` ending by ``stop``."""
    stop = len(v) if stop is None else stop
    starts = np.arange(start, stop - length + 1, stride)
    if starts.size == 0:
        return np.empty((0, length, v.shape[1]))
    return np.stack([v[s:s + length] for s in starts])


def mean_scale(context: np.ndarray, observed: np.ndarray | None = None, minimum: float = 1e-10) -> np.ndarray:
    """gluonts' mean scale of windows (N, T, C): mean |x| over observed context entries per
    window and channel (N, C); windows with no signal get the batch's mean scale (or 1)."""
    obs = np.isfinite(context) if observed is None else observed.astype(bool) & np.isfinite(context)
    num = np.where(obs, np.abs(np.nan_to_num(context)), 0).sum(1)
    cnt = obs.sum(1)
    scale = num / np.maximum(cnt, 1)
    ok = scale > minimum
    fallback = scale[ok].mean() if ok.any() else 1.0
    return np.where(ok, scale, fallback)


@dataclass
class Scaler:
    """Scaling of windows (N, L, C). ``mean`` is per window (from its first ``context`` steps);
    ``minmax`` / ``standard`` are per channel with statistics fitted on training values."""

    kind: str = "mean"
    context: int | None = None
    loc: list[float] | None = None
    scale: list[float] | None = None

    def __post_init__(self) -> None:
        if self.kind not in SCALINGS:
            raise DataError(f"scaling={self.kind!r}: allowed values are {', '.join(SCALINGS)}")

    def fit(self, values: Sequence[np.ndarray]) -> Scaler:
        """Fit per-channel statistics (``minmax`` / ``standard``) on a list of (T, C) arrays."""
        if self.kind in ("minmax", "standard"):
            allv = np.concatenate([np.asarray(v) for v in values])
            if self.kind == "minmax":
                lo, hi = np.nanmin(allv, 0), np.nanmax(allv, 0)
                self.loc, self.scale = ((hi + lo) / 2).tolist(), np.maximum((hi - lo) / 2, 1e-12).tolist()
            else:
                self.loc, self.scale = np.nanmean(allv, 0).tolist(), np.maximum(np.nanstd(allv, 0), 1e-12).tolist()
        return self

    def params(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(loc, scale)`` of each window, (N, C) each."""
        n, _, c = windows.shape
        if self.kind == "mean":
            ctx = windows[:, : self.context] if self.context else windows
            return np.zeros((n, c)), mean_scale(ctx)
        if self.kind == "none":
            return np.zeros((n, c)), np.ones((n, c))
        if self.loc is None:
            raise DataError(f"{self.kind} scaling must be fitted on training data first")
        return np.tile(self.loc, (n, 1)), np.tile(self.scale, (n, 1))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values (stored in the dataset's ``info`` and in checkpoints)."""
        return {"kind": self.kind, "context": self.context, "loc": self.loc, "scale": self.scale}


def scale_windows(windows: np.ndarray, scaler: Scaler) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(scaled, loc, scale)``: ``scaled = (windows - loc) / scale`` per window and channel."""
    loc, scale = scaler.params(windows)
    return (windows - loc[:, None]) / scale[:, None], loc, scale


# ---------------------------------------------------------------------------------------------
# datasets of windows
# ---------------------------------------------------------------------------------------------

class WindowStates(TensorStates):
    """Windows as states ``{"x": (L, C), "observed": (L, C), "spec": (K, C, 2)}`` plus optional
    per-window extras; ``get_batch`` indexes every entry at once (the trainer's fast path)."""


@dataclass
class Split:
    """Raw windows of one split and what is needed to undo the scaling and score forecasts."""

    windows: np.ndarray  # (N, L, C) raw values (NaN = missing)
    series: np.ndarray  # (N,) index of the series each window came from
    end: np.ndarray  # (N,) position in its series of the window's end (exclusive)


def split_windows(ss: SeriesSet, length: int, horizon: int, stride: int = 1, test_windows: int = 1,
                  val_windows: int = 0, drop_short: bool = False) -> dict[str, Split]:
    """Time-based splits: per series, the last ``test_windows`` horizons are the test targets
    (rolling windows ending at ``T - k * horizon``), the ``val_windows`` horizons before them the
    validation targets, and training windows (every ``stride`` steps) end before the first
    validation target. A series too short for a training window and its evaluation windows
    raises a :class:`DataError` (or is dropped with a warning when ``drop_short``), and so does
    ``test_windows < 1``: an empty test split would leave evaluation only the training windows."""
    if test_windows < 1 or val_windows < 0:
        raise DataError(f"{ss.source}: test_windows={test_windows} and val_windows={val_windows}: need at least one "
                        "test window per series (test_windows >= 1) and val_windows >= 0")
    need = length + (test_windows + val_windows) * horizon
    out: dict[str, list] = {"train": [], "val": [], "test": []}
    for i, (v, sid) in enumerate(zip(ss.values, ss.ids)):
        if len(v) < need:
            msg = (f"{ss.source}: series {sid!r} has {len(v)} time steps; a window of {length} (context + horizon) "
                   f"plus {test_windows + val_windows} evaluation horizon(s) of {horizon} needs {need}")
            if drop_short:
                warnings.warn(msg + "; dropped", stacklevel=2)
                continue
            raise DataError(msg + " (lower context / horizon / test_windows, or pass drop_short=True)")
        n = len(v)
        ends = {"test": [n - k * horizon for k in range(test_windows)][::-1],
                "val": [n - (test_windows + k) * horizon for k in range(val_windows)][::-1]}
        train_stop = n - (test_windows + val_windows) * horizon
        w = sliding_windows(v, length, stride, 0, train_stop)
        tr_ends = np.arange(length, train_stop + 1, stride)[: len(w)]
        out["train"].append((w, np.full(len(w), i), tr_ends))
        for name in ("val", "test"):
            e = np.asarray(ends[name], dtype=np.int64)
            if e.size:
                out[name].append((np.stack([v[x - length:x] for x in e]), np.full(len(e), i), e))
    if not out["train"]:
        raise DataError(f"{ss.source}: no series is long enough for windows of {need} steps")
    res = {}
    for name, parts in out.items():
        if parts:
            res[name] = Split(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
                              np.concatenate([p[2] for p in parts]))
        else:
            res[name] = Split(np.empty((0, length, ss.channels)), np.empty(0, np.int64), np.empty(0, np.int64))
    return res


def states_of(split: Split, scaler: Scaler, extras: bool = False) -> WindowStates:
    """Scaled windows as :class:`WindowStates` with both representations, ``x`` (L, C) and its
    half spectrum ``spec`` (K, C, 2) (the fields decide which one is generated); NaNs become
    unobserved zeros. With ``extras``
    the per-window ``loc`` / ``scale`` (C,) and series index are kept too."""
    scaled, loc, scale = scale_windows(split.windows, scaler)
    obs = np.isfinite(scaled)
    x = torch.from_numpy(np.where(obs, scaled, 0.0)).float()
    t = {"x": x, "observed": torch.from_numpy(obs).float(), "spec": to_spectrum(x)}
    if extras:
        t.update(loc=torch.from_numpy(loc).float(), scale=torch.from_numpy(scale).float(),
                 series=torch.from_numpy(split.series.astype(np.int64)))
    return WindowStates(**t)
