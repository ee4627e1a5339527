"""Files: atomic writes, atomic output folders, and the shared benchmark-data folder.

Every file polydiff or a plugin writes goes through :func:`atomic_write` (a temporary file in
the same folder, then ``os.replace``), and every output folder through :func:`atomic_folder`
(a temporary sibling folder renamed into place at the end), so a crash or a bad input never
leaves a half-written file and never destroys what was there before.
"""

from __future__ import annotations

import csv
import errno
import fcntl
import io
import json
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

SHARED_ENV = "POLYDIFF_SHARED"


def temp_path(path: Path) -> Path:
    """A unique hidden sibling of ``path`` that keeps its suffix (plotting libraries choose the
    format from it)."""
    return path.with_name(f".{path.stem}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}{path.suffix}")


def remove_temp_files(folder: Path) -> list[Path]:
    """Delete the temporary files and folders that killed writers left in ``folder`` (hidden
    ``.NAME.tmp-*``, never read by anything) and return them. Only the holder of the folder's
    lock may call this: another live writer could own them."""
    if not folder.is_dir():
        return []
    found = sorted(folder.glob(".*.tmp-*"))
    for p in found:
        if p.is_dir() and not p.is_symlink():  # a checkpoint folder being written (sharded checkpoints)
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    return found


def atomic_write(path: str | Path, data: str | bytes | Callable[[Path], object], *, fsync: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically and return ``path``.

    ``data`` is text, bytes, or a function that writes a given temporary path (``torch.save``,
    ``fig.savefig``, ``np.savetxt``...). The file appears complete or not at all; an existing
    file is replaced only once the new one is written. ``fsync`` flushes it to disk first
    (checkpoints)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        if callable(data):
            data(tmp)
        elif isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            tmp.write_text(data, encoding="utf-8")  # what read_text reads, whatever the locale
        if fsync:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


@contextmanager
def atomic_folder(out: str | Path, *, overwrite: bool = False,
                  replaceable: Callable[[Path], bool] | None = None) -> Iterator[Path]:
    """Build a folder in a temporary sibling and rename it to ``out`` when the block succeeds.

    An existing non-empty ``out`` is replaced only with ``overwrite`` and, when given, only if
    ``replaceable(out)`` says so (e.g. "a samples folder polydiff wrote"); the old folder is
    removed only after the new one is in place. On failure nothing at ``out`` changes."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not overwrite:
            raise FileExistsError(f"{out} already exists and is not empty (choose another output folder or "
                                  "overwrite it)")
        if replaceable is not None and not replaceable(out):
            raise FileExistsError(f"{out} holds files polydiff did not write there; refusing to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
        _swap_in(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _swap_in(tmp: Path, out: Path) -> None:
    """Rename the finished ``tmp`` (a folder, or a file replacing a folder) to ``out``, removing
    an existing ``out`` last."""
    if not out.exists():
        os.rename(tmp, out)
        return
    old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
    os.rename(out, old)
    try:
        os.rename(tmp, out)
    except BaseException:
        os.rename(old, out)
        raise
    if old.is_dir() and not old.is_symlink():
        shutil.rmtree(old, ignore_errors=True)
    else:
        old.unlink(missing_ok=True)


def replace_folder(tmp: str | Path, out: str | Path) -> Path:
    """Flush the finished folder ``tmp`` to disk and rename it to ``out`` (replacing a file or
    folder there last): the atomic end of a folder written by several processes."""
    tmp, out = Path(tmp), Path(out)
    fsync_folder(tmp)
    _swap_in(tmp, out)
    return out


def new_figure(**kwargs: Any) -> Any:
    """A matplotlib ``Figure`` (``kwargs``: its arguments, e.g. ``figsize``) drawn off-screen on
    an Agg canvas of its own: plots never switch the user's backend or touch pyplot's figures,
    so a notebook's inline plots keep working after a library plot."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(**kwargs)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Any, path: str | Path, dpi: int = 120) -> Path:
    """Save a matplotlib figure atomically (plots of every modality) in the format its suffix
    names (``.png``, ``.pdf``, ``.svg``, ``.jpg``...; PNG without a suffix); a pyplot figure is
    closed after it."""
    path = Path(path)
    try:
        if path.is_dir():
            raise IsADirectoryError(f"{path}: a folder; give the figure a file name, e.g. {path / 'samples.png'}")
        kind = path.suffix.lower().lstrip(".") or "png"
        known = fig.canvas.get_supported_filetypes()
        if kind not in known:
            raise ValueError(f"{path}: matplotlib writes no .{kind} figures; use one of "
                             f"{', '.join('.' + k for k in sorted(known))}")
        return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format=kind))
    finally:
        if getattr(fig.canvas, "manager", None) is not None:  # made by pyplot: release it there
            import matplotlib.pyplot as plt

            plt.close(fig)


def publish(src: str | Path, dst: str | Path) -> Path:
    """Make ``dst`` a copy of ``src`` atomically (hard links where the file system allows). A
    folder (a sharded checkpoint) is linked file by file into a temporary sibling, then renamed
    into place; either kind replaces a ``dst`` of the other kind."""
    src, dst = Path(src), Path(dst)
    tmp = temp_path(dst)
    try:
        if src.is_dir():
            tmp.mkdir()
            for f in src.iterdir():
                _link_or_copy(f, tmp / f.name)
            replace_folder(tmp, dst)
        else:
            _link_or_copy(src, tmp)
            if dst.is_dir() and not dst.is_symlink():
                _swap_in(tmp, dst)
            else:
                os.replace(tmp, dst)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        tmp.unlink(missing_ok=True)
    return dst


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def fsync_folder(folder: Path) -> None:
    """Flush a folder's files and the folder itself to disk (before it is renamed into place)."""
    for f in folder.iterdir():
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FolderBusy(FileExistsError):
    """Another polydiff process is writing the same run or samples folder."""


@contextmanager
def folder_lock(folder: str | Path, what: str = "folder") -> Iterator[Path]:
    """Hold an exclusive lock on ``folder`` (a run or samples folder) while the block runs, so a
    second command writing into it refuses instead of interleaving its files.

    The lock is ``.<name>.lock`` beside the folder, held with ``flock``: the operating system
    releases it when the process ends, even on ``kill -9``, so a stale lock file never blocks a
    later command. Raises :class:`FolderBusy` naming the folder and the holder's pid."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    path = folder.parent / f".{folder.name}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            raise FolderBusy(f"{folder}: another polydiff command (pid {holder}) is writing this {what}; wait for "
                             "it to finish or choose another folder") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield path
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _has_shared(folder: Path) -> bool:
    return folder.is_dir() and ((folder / "data").is_dir() or (folder / "fixtures").is_dir())


def shared_dir() -> Path:
    """The folder of shared benchmark data and golden fixtures (``data/``, ``fixtures/``).

    ``$POLYDIFF_SHARED`` when set; else the first folder named ``shared`` holding ``data/`` or
    ``fixtures/`` beside the current directory or one of its parents, or beside this
    installation's checkout (for a checkout, ``../shared``). If none exists the conventional
    place is returned (callers check and skip or fail with a clear message)."""
    env = os.environ.get(SHARED_ENV)
    if env:
        return Path(env).expanduser()
    starts = [Path.cwd().resolve(), Path(__file__).resolve().parent]
    for start in starts:
        for folder in (start, *start.parents):
            if _has_shared(folder / "shared"):
                return folder / "shared"
    return Path(__file__).resolve().parents[2].parent / "shared"


def shared_file(*parts: str) -> Path:
    """A path under :func:`shared_dir`; a clear error naming the expected path when absent."""
    path = shared_dir().joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(f"shared data not found: expected {path}. Set {SHARED_ENV} to the folder that holds "
                                "data/ and fixtures/ (default: the 'shared' folder beside the repository root).")
    return path


CACHE_ENV = "POLYDIFF_CACHE_DIR"


def cache_dir() -> Path:
    """Where polydiff keeps caches it can always rebuild: ``$POLYDIFF_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/polydiff``, else ``~/.cache/polydiff``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "polydiff"


def cached_json(name: str, key: str, compute: Callable[[], tuple[object, bool]]) -> object:
    """The JSON value cached as ``name`` under ``key``, or ``compute()``'s. ``compute`` returns
    ``(value, keep)``; the value is stored (atomically) only when ``keep`` (a result that
    reported a problem is recomputed next time). An unreadable cache file is recomputed, and a
    cache folder that cannot be written only costs the speed."""
    file = cache_dir() / f"{name}.json"
    try:
        stored = json.loads(file.read_text(encoding="utf-8"))
        if isinstance(stored, dict) and stored.get("key") == key:
            return stored["value"]
    except (OSError, ValueError, KeyError):
        pass
    value, keep = compute()
    if keep:
        try:
            file.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(file, json.dumps({"key": key, "value": value}))
        except OSError:
            pass
    return value


_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._+-]+")


def safe_stem(name: str, default: str) -> str:
    """``name`` as a portable file stem: runs of other characters than letters, digits and
    ``. _ + -`` become ``_``, no leading dot, at most 100 characters; ``default`` if nothing is left."""
    cleaned = _UNSAFE_NAME.sub("_", str(name)).lstrip(".")[:100].strip("_")
    return cleaned or default


def unique_stems(names: Sequence[str | None], default: str = "sample_{i:04d}") -> list[str]:
    """One file stem per object: :func:`safe_stem` of its name (``default.format(i=i)`` for
    unnamed ones), made unique ignoring case (case-insensitive file systems) with ``-2``,
    ``-3``... suffixes, so that no object's file overwrites another's."""
    seen: set[str] = set()
    out = []
    for i, name in enumerate(names):
        base = safe_stem(name or "", default.format(i=i))
        candidate, k = base, 1
        while candidate.lower() in seen:
            k += 1
            candidate = f"{base}-{k}"
        seen.add(candidate.lower())
        out.append(candidate)
    return out


def natural_key(name: str | os.PathLike) -> tuple[tuple[int, int | str], ...]:
    """Sort key of a file name or stem: case-insensitive, numbers by value, so that a folder of
    samples reads back in the order it was written (``sample_9999`` before ``sample_10000``,
    ``g2`` before ``g10``; ``x`` before ``X-2``). Use ``sorted(paths, key=natural_key)``."""
    name = os.fspath(name)
    name = os.path.basename(name) or name
    low = name.lower().replace(".", "\0")  # a suffix's dot first: x.pdb before x-2.pdb, as x before x-2
    parts = [(0, int(t)) if t.isdigit() else (1, t) for t in re.split(r"(\d+)", low) if t]
    return (*parts, (1, name))


def sample_name(info: Mapping[str, Any], b: int) -> str:
    """The name of sample ``b`` of a generated state: ``sample_0000``... by its index in the
    whole run (``info["first_sample"]``, set by the generator for each chunk, plus ``b``), so
    names do not depend on the batch size."""
    return f"sample_{int(info.get('first_sample', 0)) + b:04d}"


def samples_file(path: str | Path, name: str, suffixes: Sequence[str]) -> Path:
    """The file a modality reads for ``path``: ``path`` itself, or for a folder its ``name``
    (what ``polydiff sample`` writes) or else its only file with one of ``suffixes``; a folder
    with neither, or with several candidates, is an error naming them (it said only that
    ``name`` was missing)."""
    path = Path(path)
    if not path.is_dir() or (path / name).is_file():
        return path / name if path.is_dir() else path
    found = sorted((p for p in path.iterdir() if p.is_file() and p.suffix.lower() in suffixes
                    and not p.name.startswith(".")), key=natural_key)
    if len(found) == 1:
        return found[0]
    what = f"it holds {len(found)}: {', '.join(p.name for p in found[:5])}" if found else "it holds none"
    raise FileNotFoundError(f"{path}: a folder is read from its {name} or its one {' / '.join(suffixes)} file, and "
                            f"{what}; pass the file itself")


def read_text(file: Path, error: type[Exception] = ValueError) -> str:
    """The UTF-8 text of a user's file (a byte-order mark dropped); bytes that are not UTF-8
    are an ``error`` naming the file, the line and the offending byte."""
    data = Path(file).read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        raise error(f"{file}:{line}: not UTF-8 text (byte {data[err.start]:#04x} at offset {err.start})") from None


def read_npz(file: str | Path, error: type[Exception] = ValueError) -> dict[str, Any]:
    """Every array of a user's ``.npz`` file, loaded now, as numpy arrays. Anything that is not
    a readable archive of plain arrays is one ``error`` line ``FILE: not a readable .npz file
    (reason)``: an empty file, a lone ``.npy`` array, bytes that are no zip archive, a cut-off or
    damaged archive, and arrays of pickled Python objects (refused: unpickling can run code)."""
    import zipfile
    import zlib

    import numpy as np

    file = Path(file)
    if not file.is_file():
        raise FileNotFoundError(f"{file}: no such file")

    def bad(reason: str) -> Exception:
        return error(f"{file}: not a readable .npz file ({reason})")

    with file.open("rb") as f:
        head = f.read(6)
    if not head:
        raise bad("the file is empty")
    if head.startswith(b"\x93NUMPY"):
        raise bad("a single .npy array, not an .npz archive of named arrays; save them with numpy.savez")
    if not head.startswith(b"PK"):
        raise bad("not a zip archive, which an .npz file is")
    # zipfile raises RuntimeError / NotImplementedError for damaged flags ("encrypted", an
    # unknown compression method) and zlib.error for damaged compressed data
    damaged = (zipfile.BadZipFile, EOFError, OSError, zlib.error, RuntimeError, NotImplementedError)
    try:
        loaded = np.load(file, allow_pickle=False)
    except (*damaged, ValueError) as err:
        raise bad(f"a cut-off or damaged zip archive: {err}") from None
    out = {}
    with loaded:
        for key in loaded.files:
            try:
                out[key] = loaded[key]
            except ValueError as err:
                if "pickle" in str(err):
                    raise bad(f"array {key!r} holds pickled Python objects, which are refused as unsafe: loading "
                              "them could run code; store numbers and strings as plain arrays") from None
                raise bad(f"array {key!r}: {err}") from None
            except (*damaged, KeyError) as err:
                raise bad(f"array {key!r} is cut off or damaged: {err or type(err).__name__}") from None
    return out


def csv_rows(file: Path, text: str, delimiter: str = ",", error: type[Exception] = ValueError
             ) -> list[tuple[int, list[str]]]:
    """The non-blank records of ``text`` (read from ``file``) with the 1-based line each starts
    on. A quoted field may hold line breaks (RFC 4180: a caption or a SMILES cell written with
    its newline); a quote that is never closed, or one followed by anything but a delimiter, is
    an ``error`` naming the file and the line its record starts on, as is any record the csv
    module cannot read. A line of empty cells (``,,``) is a record (callers refuse it)."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    rows, last = [], 0
    try:
        for r in reader:
            first, last = last + 1, reader.line_num
            if len(r) > 1 or (r and r[0].strip()):
                rows.append((first, r))
    except csv.Error as err:
        raise error(f"{file}:{last + 1}: not a readable CSV record ({err}; a quote left open?)") from None
    return rows
