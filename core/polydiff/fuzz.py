"""Fuzzing of file readers: random, truncated and mutated inputs must end in a clear error.

Every reader of users' files (the core's and every plugin's) goes through :func:`fuzz_reader`.
It writes a few valid files, then mutated copies of them (bytes flipped, inserted or deleted,
tricky tokens spliced in, lines dropped or repeated, truncations at random points, random
garbage, empty files) into fresh folders, calls the reader on each and accepts only two
outcomes:

- a typed error (``expected``: by default ``ValueError``, ``OSError`` or ``KeyError``; a plugin
  passes its own, e.g. ``DataError`` or ``CheckpointError``) whose message names the file;
- a successful read whose result is consistent: ``count(result)`` objects where the caller's
  ``records(name, data)`` says the bytes hold that many (fewer only with a warning naming the
  file, e.g. "skipped 2 invalid SMILES in x.smi"), and ``check(result)`` passes.

Anything else fails the test with the input that caused it: another exception type (an
``IndexError``, ``UnicodeDecodeError`` or ``_csv.Error`` from deep inside a library), a message
that does not name the file, a read that takes longer than ``timeout`` seconds (a hang), or a
silently wrong count.

The mutations are drawn by hypothesis (``@given`` over a composite strategy; a fixed ``seed`` and
no example database, so CI runs are deterministic; ``examples`` bounds the number per reader),
which also shrinks a failing input to a small one before reporting it.

A future plugin adds its readers with one test function each::

    from polydiff.fuzz import fuzz_reader

    def test_fuzz_my_reader(tmp_path):
        valid = {"tracks.mid": write_example_midi()}          # one or more valid files
        fuzz_reader(read_midi, valid, tmp_path, examples=60, expected=(ValueError, OSError, MidiError),
                    records=lambda name, data: None)          # None: the count cannot be told

A reader of a whole folder (``polydiff evaluate DIR``) takes ``folder=True``: all files are
written side by side, one of them (or one of ``mutate``) is mutated, and ``read`` gets the folder.

Byte-level damage of an ``.npz`` archive rarely gets past the zip's CRCs, so readers of arrays
also go through :func:`fuzz_arrays`: well-formed archives (``numpy.savez`` or
``numpy.savez_compressed``) of :func:`damaged_arrays` (keys dropped, renamed or added, dtypes and
shapes changed, NaN, infinite or huge values set), judged by the same rules and reported the same
way, with numpy's ``ComplexWarning`` (complex values silently read as real) a failure too.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import re
import signal
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .files import atomic_write

__all__ = ["DEFAULT_DTYPES", "DEFAULT_EXPECTED", "DEFAULT_VALUES", "EXAMPLES_ENV", "REPORT_ENV", "TOKENS",
           "FuzzFailure", "FuzzReport", "csv_records", "damaged_arrays", "fuzz_arrays", "fuzz_reader", "line_records"]

EXAMPLES_ENV = "POLYDIFF_FUZZ_EXAMPLES"
"""Environment variable that overrides every reader's number of examples (longer local runs)."""
REPORT_ENV = "POLYDIFF_FUZZ_REPORT"
"""Environment variable naming a JSON file to which every fuzz run adds its counts."""

DEFAULT_EXPECTED: tuple[type[BaseException], ...] = (ValueError, OSError, KeyError)

TOKENS: tuple[bytes, ...] = (
    b"\n", b"\r\n", b"\r", b",", b";", b"\t", b" ", b'"', b"'", b"#", b"\x00", b"\xff", b"\xef\xbb\xbf", b"-", b"+",
    b".", b"e", b"nan", b"NaN", b"inf", b"-inf", b"1e999", b"-0", b"0", b"1", b"999999999999999999999", b"NA",
    b"<", b">", b"&", b"</", b"$$$$", b"M  END", b">>graph6<<", b"#graph nodes=3", b"a,b,c\n1,2\n",
)
"""Tokens spliced into files: delimiters, quotes, line ends, special numbers and markers of the
formats polydiff reads. Readers add their own with ``tokens=``."""


class FuzzFailure(AssertionError):
    """A reader misbehaved on a (mutated) input: the message says how, and on which input."""


class _Hang(BaseException):
    """Raised in the reader by the per-example alarm (a BaseException so readers cannot catch it)."""


@dataclass
class FuzzReport:
    """What a fuzz run saw: examples run, outcomes counted, seconds spent."""

    reader: str
    examples: int = 0
    errors: int = 0
    reads: int = 0
    warned: int = 0
    seconds: float = 0.0
    error_types: dict[str, int] = field(default_factory=dict)

    def __str__(self) -> str:
        types = ", ".join(f"{k} {v}" for k, v in sorted(self.error_types.items()))
        return (f"{self.reader}: {self.examples} examples in {self.seconds:.1f}s: {self.errors} clear errors "
                f"({types or 'none'}), {self.reads} reads ({self.warned} with a warning)")


def line_records(data: bytes, *, header: bool = False, comments: Sequence[bytes] = (b"#",)) -> int:
    """A ``records`` helper for line-based formats: the number of non-blank lines that are not
    comments (minus one for a header). Splits on ``\\n``, ``\\r\\n`` and ``\\r`` like Python's text mode."""
    lines = [s.strip() for s in data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")]
    n = sum(1 for s in lines if s and not s.startswith(tuple(comments)))
    return max(n - 1, 0) if header else n


def csv_records(name: str, data: bytes) -> int | None:
    """A ``records`` helper for comma-separated numeric files: the non-blank lines, less a first
    one that is not all numbers (the header); None when the bytes are not UTF-8 (the reader must
    refuse them). ``name`` is unused (the signature of ``records``)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    lines = [s for s in re.split(r"\r\n|\r|\n", text) if s.strip()]
    if not lines:
        return 0
    return len(lines) - (not all(_is_number(c) for c in lines[0].split(",")))


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


# -- mutations ----------------------------------------------------------------------------------

def _lines(data: bytes) -> list[bytes]:
    return data.splitlines(keepends=True)


def _cases(files: Mapping[str, bytes], mutate: Sequence[str], tokens: Sequence[bytes]) -> Any:
    """The hypothesis strategy of (file name, mutated bytes, description)."""
    from hypothesis import strategies as st

    @st.composite
    def one(draw: Any, data: bytes) -> tuple[bytes, str]:
        kind = draw(st.sampled_from(["truncate", "delete", "flip", "token", "insert", "drop line", "repeat line",
                                     "swap lines"]))
        n = len(data)
        if kind == "truncate":
            cut = draw(st.integers(0, n))
            return data[:cut], f"truncated at byte {cut}"
        if kind == "delete" and n:
            at = draw(st.integers(0, n - 1))
            k = draw(st.integers(1, 16))
            return data[:at] + data[at + k:], f"{k} bytes deleted at {at}"
        if kind == "flip" and n:
            at = draw(st.integers(0, n - 1))
            x = draw(st.integers(1, 255))
            return data[:at] + bytes([data[at] ^ x]) + data[at + 1:], f"byte {at} xor {x:#04x}"
        if kind in ("token", "insert"):
            at = draw(st.integers(0, n))
            new = draw(st.sampled_from(list(tokens))) if kind == "token" else draw(st.binary(min_size=1, max_size=8))
            replace = draw(st.integers(0, 4))
            return data[:at] + new + data[at + replace:], f"{new!r} in place of {replace} bytes at {at}"
        lines = _lines(data)
        if len(lines) >= 1 and kind in ("drop line", "repeat line"):
            i = draw(st.integers(0, len(lines) - 1))
            if kind == "drop line":
                return b"".join(lines[:i] + lines[i + 1:]), f"line {i + 1} dropped"
            return b"".join(lines[:i + 1] + lines[i:]), f"line {i + 1} repeated"
        if len(lines) >= 2 and kind == "swap lines":
            i, j = draw(st.integers(0, len(lines) - 1)), draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
            return b"".join(lines), f"lines {i + 1} and {j + 1} swapped"
        return data, "unchanged"

    @st.composite
    def case(draw: Any) -> tuple[str, bytes, str]:
        name = draw(st.sampled_from(list(mutate)))
        data = files[name]
        how = draw(st.sampled_from(["mutated", "mutated", "mutated", "mutated", "garbage", "text", "empty"]))
        if how == "empty":
            return name, b"", "empty file"
        if how == "garbage":
            return name, draw(st.binary(max_size=200)), "random bytes"
        if how == "text":
            return name, draw(st.text(max_size=200)).encode(), "random text"
        steps = []
        for _ in range(draw(st.integers(1, 3))):
            data, what = draw(one(data))
            steps.append(what)
        return name, data, "; ".join(steps)

    return case()


# -- one call under a time budget ---------------------------------------------------------------

@contextlib.contextmanager
def _deadline(seconds: float) -> Iterator[None]:
    """Interrupt the block after ``seconds`` (``SIGALRM`` timer: main thread on Unix only; elsewhere
    the caller runs the reader in a thread and waits with a timeout)."""

    def alarm(signum: int, frame: Any) -> None:
        raise _Hang

    old = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _call(read: Callable[[Path], Any], path: Path, timeout: float) -> tuple[str, Any, list[warnings.WarningMessage]]:
    """``("ok", result, warnings)``, ``("error", exception, warnings)`` or ``("hang", None, warnings)``."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread():
            try:
                with _deadline(timeout):
                    return "ok", read(path), caught
            except _Hang:
                return "hang", None, caught
            except Exception as err:
                return "error", err, caught
        box: dict[str, Any] = {}

        def run() -> None:
            try:
                box["ok"] = read(path)
            except Exception as err:
                box["error"] = err

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        worker.join(timeout)
        if worker.is_alive():
            return "hang", None, caught
        return ("ok", box["ok"], caught) if "ok" in box else ("error", box["error"], caught)


def _where(err: BaseException) -> str:
    """The innermost frame of an exception's traceback (where a library raised it)."""
    frames = traceback.extract_tb(err.__traceback__)
    return f" (raised at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""


# -- the harness --------------------------------------------------------------------------------

def _hypothesis() -> Any:
    """The hypothesis module (a dev dependency, imported only when a fuzz test runs)."""
    try:
        import hypothesis
    except ImportError as err:
        raise ImportError("polydiff.fuzz needs hypothesis (pip install hypothesis)") from err
    return hypothesis


def _examples(examples: int) -> int:
    return int(os.environ.get(EXAMPLES_ENV) or examples)


def _judge(report: FuzzReport, read: Callable[[Path], Any], path: Path, target: str, data: bytes, what: str, *,
           expected: tuple[type[BaseException], ...], records: Callable[[str, bytes], int | None] | None,
           count: Callable[[Any], int], check: Callable[[Any], None] | None,
           timeout: float) -> BaseException | None:
    """Call ``read(path)`` (``target`` is the damaged file, ``data`` its bytes) and apply the
    acceptance rules: raises FuzzFailure, or returns the (clear) error the reader raised, or None."""
    outcome, value, caught = _call(read, path, timeout)
    shown = data if len(data) <= 300 else data[:300] + b"..."
    context = f"{report.reader} on {target} ({what}; {len(data)} bytes: {shown!r})"
    if outcome == "hang":
        raise FuzzFailure(f"{context}: no answer within {timeout:g}s (a hang?)")
    if outcome == "error":
        err = value
        kind = type(err).__name__
        if not isinstance(err, expected):
            raise FuzzFailure(f"{context}: raised {kind}{_where(err)}, not one of "
                              f"{', '.join(e.__name__ for e in expected)}: {err}") from err
        if target not in str(err):
            raise FuzzFailure(f"{context}: the {kind} does not name the file {target!r}{_where(err)}: {err}") \
                from err
        report.errors += 1
        report.error_types[kind] = report.error_types.get(kind, 0) + 1
        return err
    warned = any(target in str(w.message) for w in caught)
    report.reads += 1
    report.warned += warned
    try:
        got = count(value)
    except Exception as err:
        raise FuzzFailure(f"{context}: the read returned {type(value).__name__} that cannot be counted "
                          f"({type(err).__name__}: {err})") from err
    want = records(target, data) if records is not None else None
    if want is not None and got != want and not (got < want and warned):
        detail = "and no warning names the file" if got < want else "more than the file holds"
        raise FuzzFailure(f"{context}: read {got} objects where the file holds {want} records, {detail}")
    if check is not None:
        try:
            check(value)
        except AssertionError as err:
            raise FuzzFailure(f"{context}: inconsistent result: {err}") from err
    return None


def _run_examples(report: FuzzReport, strategy: Any, one: Callable[[Any], None], examples: int, seed: int,
                  start: float) -> FuzzReport:
    """Run ``one`` on ``examples`` draws of ``strategy`` (seeded, no database, shrinking), then
    time ``report`` and add it to :data:`REPORT_ENV`'s file."""
    hypothesis = _hypothesis()

    @hypothesis.seed(seed)
    @hypothesis.settings(max_examples=examples, deadline=None, database=None, derandomize=False, print_blob=False,
                         phases=(hypothesis.Phase.generate, hypothesis.Phase.shrink), report_multiple_bugs=False,
                         suppress_health_check=list(hypothesis.HealthCheck))
    @hypothesis.given(strategy)
    def examples_of(case: Any) -> None:
        report.examples += 1
        one(case)

    examples_of()
    report.seconds = time.perf_counter() - start
    if os.environ.get(REPORT_ENV):
        _add_to_report(Path(os.environ[REPORT_ENV]), report)
    return report


def fuzz_reader(read: Callable[[Path], Any], valid_files: Mapping[str, bytes], tmp_path: Path, *,
                examples: int = 50, seed: int = 0,
                expected: tuple[type[BaseException], ...] = DEFAULT_EXPECTED,
                records: Callable[[str, bytes], int | None] | None = None,
                count: Callable[[Any], int] = len, check: Callable[[Any], None] | None = None,
                folder: bool = False, mutate: Sequence[str] | None = None, tokens: Sequence[bytes] = (),
                timeout: float = 5.0, name: str | None = None) -> FuzzReport:
    """Fuzz ``read`` with ``examples`` mutated versions of ``valid_files`` (name -> bytes).

    ``read`` gets the mutated file (or, with ``folder=True``, the folder holding every file, one
    of them mutated; ``mutate`` restricts which). Accepted outcomes (see the module docstring):
    an exception of a type in ``expected`` whose message names the mutated file, or a result
    whose ``count`` equals ``records(name, data)`` (fewer only with a warning naming the file;
    ``records`` returning None, or not given, skips the check) and that ``check`` accepts.
    The valid files must read without error and with the right count. ``tokens`` are spliced
    in besides :data:`TOKENS`; ``timeout`` is the per-example budget in seconds. Raises
    :class:`FuzzFailure` describing the first (shrunk) failing input; returns a
    :class:`FuzzReport` otherwise.
    """
    _hypothesis()
    if not valid_files:
        raise ValueError("fuzz_reader needs at least one valid file")
    targets = list(mutate) if mutate is not None else list(valid_files)
    unknown = [t for t in targets if t not in valid_files]
    if unknown:
        raise ValueError(f"mutate names files that are not in valid_files: {', '.join(unknown)}")
    if not folder and len(valid_files) > 1:
        raise ValueError("several valid files need folder=True (read gets the folder)")
    examples = _examples(examples)
    report = FuzzReport(name or getattr(read, "__qualname__", repr(read)))
    start = time.perf_counter()
    counter = itertools.count()

    def run(target: str, data: bytes, what: str) -> BaseException | None:
        """One call; raises FuzzFailure, or returns the (clear) error the reader raised, or None."""
        where = Path(tmp_path) / f"fuzz-{next(counter)}"
        where.mkdir(parents=True)
        for fname, content in valid_files.items():
            (where / fname).write_bytes(data if fname == target else content)
        return _judge(report, read, where if folder else where / target, target, data, what, expected=expected,
                      records=records, count=count, check=check, timeout=timeout)

    for fname in targets:  # the valid files themselves must read
        err = run(fname, valid_files[fname], "valid file")
        if err is not None:
            raise FuzzFailure(f"{report.reader}: the valid file {fname!r} does not read: {err}")
    cases = _cases(valid_files, targets, (*TOKENS, *tokens))
    return _run_examples(report, cases, lambda case: run(*case), examples, seed, start)


# -- damaged arrays in well-formed .npz archives ---------------------------------------------------

DEFAULT_VALUES: tuple[float, ...] = (math.nan, math.inf, -math.inf, 1e300, -1e300, 3e38, 1e39, 1e30, 0.0, -1.0, 0.5,
                                     2.0**40, 2.0**62, -(2.0**62), 2.0**64)
"""Values set into one element of an array: NaN, infinite, beyond float32, negative, huge integers."""
DEFAULT_DTYPES: tuple[str, ...] = ("complex64", "uint64", "int8", "int64", "uint8", "float16", "float32", "float64",
                                   "bool", "U5", "S3")
"""Dtypes arrays are cast to (a cast that fails leaves the array as it is)."""
_SHAPES = ("ravel", "add axis", "transpose", "scalar", "empty", "drop last", "repeat last")


def _cast(a: Any, dtype: str) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return a.astype(dtype)
        except (ValueError, TypeError, OverflowError):  # e.g. "0.125" as int64
            return a


def _reshape(a: Any, how: str) -> Any:
    import numpy as np

    if how == "ravel":
        return a.reshape(-1)
    if how == "add axis":
        return a[..., None]
    if how == "transpose":
        return a.T
    if how == "scalar":
        return np.asarray(a.reshape(-1)[0]) if a.size else a.reshape(-1)
    if a.ndim == 0:  # a scalar has no rows to drop or repeat
        return a
    if how == "empty":
        return a[:0]
    if how == "drop last":
        return a[:-1]
    return np.concatenate([a, a[-1:]]) if len(a) else a  # "repeat last"


def damaged_arrays(base: Mapping[str, Any], keys: Sequence[str] = (), values: Sequence[float] = DEFAULT_VALUES,
                   dtypes: Sequence[str] = DEFAULT_DTYPES) -> Any:
    """A hypothesis strategy of ``(arrays, description)``: ``base`` (name -> ndarray) with 1 to 3
    changes: a key dropped, renamed (to one of ``keys`` or of ``base``'s) or joined by another
    array (under one of ``keys``), a dtype changed (to one of ``dtypes``), a shape changed (ravel,
    an axis added, transposed, a scalar, empty, the last row dropped or repeated), or one element
    set to one of ``values``."""
    import numpy as np
    from hypothesis import strategies as st

    names = sorted({*keys, *base})
    added = list(keys) or [*sorted(base), "extra"]
    extras = (np.zeros((3, 2)), np.arange(3), np.array(["a", "b", "c"]), np.array([True, False, True]), np.array(5),
              np.array(1.5), np.zeros(0), np.array(["a"]))

    @st.composite
    def damaged(draw: Any) -> tuple[dict[str, Any], str]:
        arrays = {k: np.array(v) for k, v in base.items()}
        steps = []
        for _ in range(draw(st.integers(1, 3))):
            key = draw(st.sampled_from(sorted(arrays))) if arrays else None
            # the kinds (and dtypes) readers get wrong most come first: hypothesis draws early entries more often
            kind = draw(st.sampled_from(["dtype", "value", "shape", "drop", "rename", "add", "value", "dtype",
                                         "value"]))
            if key is None or kind == "add":
                new = draw(st.sampled_from(added))
                arrays[new] = draw(st.sampled_from(extras))
                steps.append(f"added {new}={arrays[new]!r}")
            elif kind == "drop":
                del arrays[key]
                steps.append(f"dropped {key}")
            elif kind == "rename":
                new = draw(st.sampled_from(names))
                arrays[new] = arrays.pop(key)
                steps.append(f"renamed {key} to {new}")
            elif kind == "dtype":
                dtype = draw(st.sampled_from(list(dtypes)))
                arrays[key] = _cast(arrays[key], dtype)
                steps.append(f"{key} as {dtype}")
            elif kind == "shape":
                how = draw(st.sampled_from(_SHAPES))
                arrays[key] = _reshape(arrays[key], how)
                steps.append(f"{key}: {how}")
            elif arrays[key].size:
                a = arrays[key].copy()
                at = draw(st.integers(0, a.size - 1))
                value = draw(st.sampled_from(list(values)))
                if a.dtype.kind in "iub" and not math.isfinite(value):
                    a = _cast(a, "float64")
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    try:
                        a.reshape(-1)[at] = value
                    except (ValueError, TypeError, OverflowError):
                        pass
                arrays[key] = a
                steps.append(f"{key}[{at}] = {value!r}")
        return arrays, "; ".join(steps)

    return damaged()


def fuzz_arrays(read: Callable[[Path], Any], base: Mapping[str, Any], tmp_path: Path, *, name: str | None = None,
                file: str = "data.npz", examples: int = 50, seed: int = 0, compressed: bool | None = None,
                expected: tuple[type[BaseException], ...] = DEFAULT_EXPECTED,
                records: Callable[[str, bytes], int | None] | None = None,
                count: Callable[[Any], int] = len, check: Callable[[Any], None] | None = None,
                folder: bool = False, keys: Sequence[str] = (), values: Sequence[float] = DEFAULT_VALUES,
                dtypes: Sequence[str] = DEFAULT_DTYPES, timeout: float = 5.0) -> FuzzReport:
    """Fuzz ``read`` with ``examples`` well-formed ``.npz`` archives of :func:`damaged_arrays`
    of ``base`` (name -> ndarray; ``keys``, ``values`` and ``dtypes`` go to it).

    Each case is written (``numpy.savez_compressed`` if ``compressed``, ``numpy.savez`` if not,
    either, drawn, if None) as ``file`` into a fresh folder under ``tmp_path``; ``read`` gets the
    file (or, with ``folder=True``, the folder). The outcomes accepted, the report and the
    arguments ``expected``, ``records`` (called with ``file`` and the archive's bytes), ``count``,
    ``check``, ``timeout``, ``examples`` and ``seed`` are those of :func:`fuzz_reader`; ``base``
    itself must read. One more failure: numpy's ``ComplexWarning`` is raised as an error inside
    ``read`` (complex values read as real, their imaginary parts silently dropped).
    """
    import numpy as np

    hypothesis = _hypothesis()
    st = hypothesis.strategies
    examples = _examples(examples)
    report = FuzzReport(name or getattr(read, "__qualname__", repr(read)))
    start = time.perf_counter()
    counter = itertools.count()
    complex_warning = getattr(np, "exceptions", np).ComplexWarning

    def strict(path: Path) -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("error", complex_warning)
            return read(path)

    def run(arrays: Mapping[str, Any], what: str, zipped: bool) -> BaseException | None:
        where = Path(tmp_path) / f"fuzz-{next(counter)}"
        where.mkdir(parents=True)
        (np.savez_compressed if zipped else np.savez)(where / file, **arrays)
        data = (where / file).read_bytes()
        what = f"{what}; {'compressed' if zipped else 'not compressed'}; arrays {_shapes(arrays)}"
        return _judge(report, strict, where if folder else where / file, file, data, what, expected=expected,
                      records=records, count=count, check=check, timeout=timeout)

    err = run(base, "valid arrays", bool(compressed))
    if err is not None:
        raise FuzzFailure(f"{report.reader}: the valid arrays do not read: {err}")
    zipped = st.booleans() if compressed is None else st.just(bool(compressed))
    cases = st.tuples(damaged_arrays(base, keys, values, dtypes), zipped)
    return _run_examples(report, cases, lambda case: run(*case[0], case[1]), examples, seed, start)


def _shapes(arrays: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}: {a.dtype} {a.shape}" for k, a in arrays.items()) or "none"


def _add_to_report(path: Path, report: FuzzReport) -> None:
    """Add ``report`` to the JSON file ``path`` (reader -> counts) that benchmarks read."""
    old = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    old[report.reader] = {"examples": report.examples, "ok": report.reads, "errors": report.errors,
                          "warned": report.warned, "seconds": round(report.seconds, 2),
                          "error_types": report.error_types}
    atomic_write(path, json.dumps(old, indent=1))

