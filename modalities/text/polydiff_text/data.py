"""Text data: readers of users' files, the embedded SMILES default, tiny Shakespeare, datasets.

Readers (:func:`read_texts`, :func:`read_documents`) take the format from the file's suffix or
``format=``:

- ``txt`` (``.txt``, ``.text``): one document per non-blank line, or the whole file as one
  stream with ``whole=True``;
- ``jsonl`` (``.jsonl``, ``.ndjson``): one JSON object per non-blank line, its ``text`` field
  (``field=`` to choose another) a string; empty texts are skipped with a warning;
- ``fasta`` (``.fasta``, ``.fa``, ``.faa``): ``>id`` header lines followed by sequence lines
  (letters, ``*``, ``-``, ``.``); records without a sequence are skipped with a warning;
- ``smiles`` (``.smi``, ``.smiles``): the first whitespace-separated column of each line;
  ``#`` comment lines and a ``smiles`` header on the first record line are skipped.

Bad input is a :class:`TextDataError` naming the file and the line: bytes that are not UTF-8
(with the byte), an empty file, a NUL character (a binary file), a bad JSONL line, a FASTA
sequence before any header, a document longer than ``max_chars`` (unless ``truncate=True``,
which cuts it and warns with the count). Skipped records are counted in a
:class:`TextDataWarning` naming the file; nothing is dropped silently. Lines end at ``\\n``,
``\\r\\n`` or ``\\r`` (as Python's text mode).

Sources: :func:`nci_smiles` (RDKit's bundled NCI sample, canonical and unique: the embedded
default, no download) and :func:`shakespeare` (``shared/data/text/tinyshakespeare.txt``,
checked against its sha256).

Datasets (:class:`DataBundle` of :class:`TensorStates` with ``tokens`` (N, length) long and
``valid`` (N, length) bool): documents are encoded, ended with eos (where the tokenizer has
one) and padded with ``pad_id`` (:func:`sequence_states`), then split at random
(:func:`split`); a stream (tiny Shakespeare, ``whole=True``) is cut into contiguous blocks
(:func:`stream_states`) and split by position as nanoGPT does: the first 90% of the tokens
train, the last 10% validate, and that same 10% is our test split.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import re
import warnings
from collections.abc import Iterator, Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from polydiff.plugin import DataBundle, TensorStates, read_text, shared_file, size_histogram

if TYPE_CHECKING:
    from .tokenizers import Tokenizer

__all__ = [
    "FORMATS",
    "NCI_SOURCE",
    "SHAKESPEARE_SHA256",
    "TOKENIZERS",
    "TextDataError",
    "TextDataWarning",
    "canonical_smiles",
    "file_dataset",
    "make_tokenizer",
    "nci_smiles",
    "nci_smiles_path",
    "protein_dataset",
    "read_documents",
    "read_texts",
    "sequence_states",
    "shakespeare",
    "shakespeare_dataset",
    "smiles_dataset",
    "split",
    "stream_split",
    "stream_states",
]


class TextDataError(ValueError):
    """Bad text input or a bad request on it; the message names the file and the line or record."""


class TextDataWarning(UserWarning):
    """Records skipped or cut while reading (the message names the file and counts them)."""


FORMATS = {".txt": "txt", ".text": "txt", ".jsonl": "jsonl", ".ndjson": "jsonl", ".fasta": "fasta",
           ".fa": "fasta", ".faa": "fasta", ".smi": "smiles", ".smiles": "smiles"}
"""File suffix -> format of :func:`read_texts`."""
_ALIASES = {"txt": "txt", "text": "txt", "jsonl": "jsonl", "ndjson": "jsonl", "fasta": "fasta", "fa": "fasta",
            "faa": "fasta", "smi": "smiles", "smiles": "smiles"}
TOKENIZERS = ("char", "bpe", "smiles", "amino")
"""Tokenizer names that :func:`file_dataset` accepts (besides a :class:`Tokenizer` instance)."""
NCI_SOURCE = "rdkit NCI first_5K.smi"
SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
"""sha256 of tinyshakespeare.txt, as listed in shared/data/SHA256SUMS."""
_NEWLINE = re.compile(r"\r\n|\r|\n")
_RESIDUES = re.compile(r"[A-Za-z*.\-]*")


def _lines_of(items: Sequence[int], at_most: int = 8) -> str:
    """``"lines 3, 9, 12"`` (at most ``at_most`` shown, then ``...``)."""
    shown = ", ".join(str(n) for n in items[:at_most])
    return f"line{'s' if len(items) > 1 else ''} {shown}{', ...' if len(items) > at_most else ''}"


_WARNED: set[str] = set()  # the messages given so far


def _warn(message: str) -> None:
    """A :class:`TextDataWarning`, once per message in a process: a recipe's data is built again
    for every evaluation (and every loaded model), and the same counts would be repeated."""
    if message not in _WARNED:
        _WARNED.add(message)
        warnings.warn(message, TextDataWarning, stacklevel=3)


# ---------------------------------------------------------------------------------------------
# readers
# ---------------------------------------------------------------------------------------------

def _format_of(file: Path, format: str | None) -> str:
    """The reader format: ``format`` if given (aliases allowed), else from the suffix."""
    if format is not None:
        if format.lower().lstrip(".") not in _ALIASES:
            raise TextDataError(f"{file}: unknown format {format!r}; formats: txt, jsonl, fasta, smiles")
        return _ALIASES[format.lower().lstrip(".")]
    suffix = file.suffix.lower()
    if suffix not in FORMATS:
        raise TextDataError(f"{file}: cannot tell the format from the suffix {suffix or '(none)'!r}; known suffixes: "
                            f"{', '.join(FORMATS)}: rename the file, or name its format (txt, jsonl, fasta or "
                            "smiles) with data.format in a recipe (--set data.format=txt) or format= in Python")
    return FORMATS[suffix]


def _txt(file: Path, lines: list[str]) -> tuple[list[tuple[int, str]], list[int]]:
    return [(n, s) for n, s in enumerate(lines, 1) if s.strip()], []


def _jsonl(file: Path, lines: list[str], field: str, keep_empty: bool = False
           ) -> tuple[list[tuple[int, str]], list[int]]:
    docs, empty = [], []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError) as err:
            why = f"{err.msg} at column {err.colno}" if isinstance(err, json.JSONDecodeError) else str(err)[:80]
            raise TextDataError(f"{file}:{n}: not a JSON line ({why})") from None
        if not isinstance(obj, dict):
            raise TextDataError(f"{file}:{n}: expected a JSON object with a {field!r} field, got a "
                                f"{type(obj).__name__}")
        if field not in obj:
            keys = ", ".join(repr(k)[:40] for k in list(obj)[:6]) or "none"
            raise TextDataError(f"{file}:{n}: no {field!r} field (fields: {keys})")
        value = obj[field]
        if not isinstance(value, str):
            raise TextDataError(f"{file}:{n}: the {field!r} field is a {type(value).__name__}, not a string")
        if value.strip() or keep_empty:
            docs.append((n, value))
        else:
            empty.append(n)
    return docs, empty


def _fasta(file: Path, lines: list[str]) -> tuple[list[tuple[int, str]], list[int]]:
    docs, empty = [], []
    header: int | None = None
    parts: list[str] = []

    def close() -> None:
        if header is None:
            return
        if parts:
            docs.append((header, "".join(parts)))
        else:
            empty.append(header)

    for n, line in enumerate(lines, 1):
        s = line.strip()
        if not s:
            continue
        if s.startswith(">"):
            close()
            header, parts = n, []
            continue
        if header is None:
            raise TextDataError(f"{file}:{n}: a sequence line before the first '>' header (not a FASTA file?)")
        seq = "".join(s.split())
        bad = _RESIDUES.match(seq).end()
        if bad < len(seq):
            raise TextDataError(f"{file}:{n}: {seq[bad]!r} is not a residue or nucleotide letter (allowed: letters, "
                                "'*', '-', '.')")
        parts.append(seq)
    close()
    return docs, empty


def _smiles(file: Path, lines: list[str]) -> tuple[list[tuple[int, str]], list[int]]:
    docs, first = [], True
    for n, line in enumerate(lines, 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        token = s.split()[0]
        if first and token.lower() == "smiles":
            first = False
            continue
        first = False
        docs.append((n, token))
    return docs, []


def read_documents(path: str | Path, format: str | None = None, *, whole: bool = False,
                   max_chars: int | None = None, truncate: bool = False, field: str = "text",
                   samples: bool = False) -> list[tuple[int, str]]:
    """The documents of a user's file with the line each starts on: ``[(line, text), ...]``.

    See the module docstring for the formats and the errors; ``whole=True`` (plain text only)
    reads the whole file as one document (a stream, line 1). Documents longer than
    ``max_chars`` characters are an error naming the line, or with ``truncate=True`` are cut
    to ``max_chars`` (the count is warned). ``samples=True`` reads a JSONL file of generated
    samples: empty texts are samples too (a generation that ended at once), and a last line
    without a line end is an error (a file cut off while it was written)."""
    file = Path(path).expanduser()
    if file.is_dir():
        raise IsADirectoryError(f"{file}: a folder, not a file")
    if not file.is_file():
        raise FileNotFoundError(f"{file}: no such file")
    fmt = _format_of(file, format)
    if whole and fmt != "txt":
        raise TextDataError(f"{file}: whole=True reads plain text only, not {fmt}")
    if max_chars is not None and int(max_chars) < 1:
        raise TextDataError(f"{file}: max_chars must be a positive number of characters, got {max_chars}")
    text = read_text(file, TextDataError)
    if not text.strip():
        raise TextDataError(f"{file}: the file is empty (no text)")
    nul = text.find("\x00")
    if nul >= 0:
        raise TextDataError(f"{file}:{text.count(chr(10), 0, nul) + 1}: a NUL character (a binary file?)")
    lines = _NEWLINE.split(text)
    if whole:
        docs, skipped = [(1, text)], []
    elif fmt == "txt":
        docs, skipped = _txt(file, lines)
    elif fmt == "jsonl":
        if samples and not text.endswith(("\n", "\r")):
            raise TextDataError(f"{file}:{len(lines)}: the last line has no line end, so the file looks cut off "
                                "while it was written; regenerate it, or end the line if it is complete")
        docs, skipped = _jsonl(file, lines, field, keep_empty=samples)
    elif fmt == "fasta":
        docs, skipped = _fasta(file, lines)
    else:
        docs, skipped = _smiles(file, lines)
    for n, doc in docs:  # JSON escapes can make what the bytes could not
        if "\x00" in doc:
            raise TextDataError(f"{file}:{n}: the text holds a NUL character")
        try:
            doc.encode("utf-8")
        except UnicodeEncodeError as err:
            raise TextDataError(f"{file}:{n}: the text holds {doc[err.start]!r}, an unpaired surrogate (not "
                                "Unicode)") from None
    if skipped:
        what = {"jsonl": f"lines with an empty {field!r}", "fasta": "FASTA records without a sequence"}[fmt]
        _warn(f"{file}: skipped {len(skipped)} {what} ({_lines_of(skipped)}) of {len(skipped) + len(docs)} records")
    if not docs:
        raise TextDataError(f"{file}: no documents" + (" (every record was empty)" if skipped else
                                                        " (only headers and comments)"))
    if max_chars is not None:
        long = [n for n, doc in docs if len(doc) > max_chars]
        if long and not truncate:
            n = long[0]
            size = next(len(d) for k, d in docs if k == n)
            raise TextDataError(f"{file}:{n}: a document of {size} characters, longer than max_chars={max_chars} "
                                f"({len(long)} such; pass truncate=True to cut them)")
        if long:
            docs = [(n, doc[:max_chars]) for n, doc in docs]
            _warn(f"{file}: cut {len(long)} documents longer than max_chars={max_chars} ({_lines_of(long)})")
    return docs


def read_texts(path: str | Path, format: str | None = None, *, whole: bool = False, max_chars: int | None = None,
               truncate: bool = False, field: str = "text", samples: bool = False) -> list[str]:
    """The documents of a user's file (plain text, JSONL, FASTA or SMILES; see
    :func:`read_documents`, which also gives their lines)."""
    return [doc for _, doc in read_documents(path, format, whole=whole, max_chars=max_chars, truncate=truncate,
                                             field=field, samples=samples)]


# ---------------------------------------------------------------------------------------------
# SMILES: the embedded default
# ---------------------------------------------------------------------------------------------

@contextlib.contextmanager
def _quiet_rdkit() -> Iterator[None]:
    """RDKit's own error log off while we parse (we count and report invalid SMILES ourselves)."""
    from rdkit import RDLogger

    RDLogger.DisableLog("rdApp.*")
    try:
        yield
    finally:
        RDLogger.EnableLog("rdApp.*")


def canonical_smiles(smiles: Sequence[str]) -> list[str | None]:
    """RDKit's canonical SMILES of each string (None where RDKit cannot read it)."""
    from rdkit import Chem

    out: list[str | None] = []
    with _quiet_rdkit():
        for s in smiles:
            mol = Chem.MolFromSmiles(s) if s else None
            out.append(None if mol is None else Chem.MolToSmiles(mol))
    return out


def nci_smiles_path() -> Path:
    """RDKit's bundled NCI sample, ``rdkit/Data/NCI/first_5K.smi`` (SMILES and an id per line)."""
    from rdkit import RDConfig

    return Path(RDConfig.RDDataDir) / "NCI" / "first_5K.smi"


@lru_cache(maxsize=1)
def _nci() -> tuple[tuple[str, ...], tuple[int, ...]]:
    """The unique canonical NCI SMILES in file order, and the lines RDKit could not read."""
    docs = read_documents(nci_smiles_path(), "smiles")
    canon = canonical_smiles([s for _, s in docs])
    bad = tuple(n for (n, _), c in zip(docs, canon) if c is None)
    unique = tuple(dict.fromkeys(c for c in canon if c is not None))
    return unique, bad


def nci_smiles(limit: int | None = None) -> list[str]:
    """The embedded SMILES: RDKit's NCI sample canonicalised by RDKit, duplicates removed (first
    kept, file order), at most ``limit``. SMILES that RDKit cannot read are counted and warned."""
    unique, bad = _nci()
    if bad:
        _warn(f"{nci_smiles_path()}: skipped {len(bad)} SMILES that RDKit cannot read ({_lines_of(list(bad))})")
    return list(unique[:limit] if limit is not None else unique)


# ---------------------------------------------------------------------------------------------
# tiny Shakespeare
# ---------------------------------------------------------------------------------------------

def shakespeare_path() -> Path:
    """``shared/data/text/tinyshakespeare.txt`` (a clear error naming the path when absent)."""
    return shared_file("data", "text", "tinyshakespeare.txt")


def shakespeare() -> str:
    """Tiny Shakespeare (1,115,394 characters), checked against its sha256 (an error on mismatch)."""
    path = shakespeare_path()
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != SHAKESPEARE_SHA256:
        raise TextDataError(f"{path}: sha256 {digest} is not the expected {SHAKESPEARE_SHA256} (a damaged or "
                            "different file; see shared/data/SHA256SUMS)")
    return data.decode("utf-8")


# ---------------------------------------------------------------------------------------------
# tensors and splits
# ---------------------------------------------------------------------------------------------

def sequence_states(ids_list: Sequence[Sequence[int]], length: int, pad_id: int, *, truncate: bool = False,
                    source: str = "sequences") -> TensorStates:
    """Token sequences padded to ``length``: ``tokens`` (N, length) long (``pad_id`` after the
    end) and ``valid`` (N, length) bool (True on the sequence's own tokens, eos included).
    A sequence longer than ``length`` is an error naming it, unless ``truncate`` (then it is
    cut and the count warned)."""
    if int(length) < 1:
        raise TextDataError(f"{source}: length must be at least 1, got {length}")
    tokens = np.full((len(ids_list), length), pad_id, dtype=np.int64)
    valid = np.zeros((len(ids_list), length), dtype=bool)
    cut = []
    for i, ids in enumerate(ids_list):
        if len(ids) > length:
            if not truncate:
                raise TextDataError(f"{source}: sequence {i} has {len(ids)} tokens, more than length={length} (pass "
                                    "truncate=True to cut it, or a larger length)")
            cut.append(i)
            ids = ids[:length]
        tokens[i, :len(ids)] = ids
        valid[i, :len(ids)] = True
    if cut:
        _warn(f"{source}: cut {len(cut)} of {len(ids_list)} sequences longer than length={length}")
    return TensorStates(tokens=torch.from_numpy(tokens), valid=torch.from_numpy(valid))


def stream_states(ids: Sequence[int], length: int, stride: int | None = None, *,
                  source: str = "stream") -> TensorStates:
    """Contiguous blocks of a token stream: block ``k`` is ``ids[k*stride : k*stride + length]``
    (``stride`` defaults to ``length``: no overlap; a tail shorter than a block is not used).
    ``valid`` is all True. The blocks are copies: a stride of 1 costs ``length`` times the stream."""
    stride = int(length if stride is None else stride)
    if int(length) < 1 or stride < 1:
        raise TextDataError(f"{source}: length and stride must be at least 1, got length={length}, stride={stride}")
    t = torch.as_tensor(np.asarray(ids, dtype=np.int64))
    if t.ndim != 1 or len(t) < length:
        raise TextDataError(f"{source}: a stream of {len(t)} tokens is shorter than one block of length={length}")
    blocks = t.unfold(0, int(length), stride).contiguous()
    return TensorStates(tokens=blocks, valid=torch.ones_like(blocks, dtype=torch.bool))


def split(n: int, test_fraction: float = 0.1, val_fraction: float = 0.1, seed: int = 0, *,
          source: str = "dataset") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random train / val / test indices of ``n`` documents (each sorted), ``round(n *
    fraction)`` in val and test. An empty test or train split is an error naming ``n`` and
    what is needed; an empty val split (``val_fraction=0`` or too few documents) is allowed."""
    for name, f in (("test_fraction", test_fraction), ("val_fraction", val_fraction)):
        if not 0 <= f < 1:
            raise TextDataError(f"{source}: {name} must be in [0, 1), got {f}")
    if test_fraction <= 0:
        raise TextDataError(f"{source}: test_fraction={test_fraction} leaves no test split; use a positive fraction")
    n_test, n_val = int(n * test_fraction + 0.5), int(n * val_fraction + 0.5)
    if n_test == 0:
        need = math.ceil(0.5 / test_fraction)
        raise TextDataError(f"{source}: {n} documents are too few for a test split with test_fraction={test_fraction}:"
                            f" that needs at least {need} (or a larger test_fraction)")
    if n - n_test - n_val < 1:
        raise TextDataError(f"{source}: {n} documents leave no training documents after {n_test} for test and "
                            f"{n_val} for val (test_fraction={test_fraction}, val_fraction={val_fraction}); use "
                            "more documents or smaller fractions")
    order = np.random.default_rng(seed).permutation(n)
    test, val, train = order[:n_test], order[n_test:n_test + n_val], order[n_test + n_val:]
    return np.sort(train), np.sort(val), np.sort(test)


def stream_split(ids: Sequence[int], val_fraction: float = 0.1) -> tuple[Sequence[int], Sequence[int]]:
    """A stream split by position as nanoGPT does: the first ``int(n * (1 - val_fraction))``
    tokens train, the rest validate (and are our test split too)."""
    if not 0 < val_fraction < 1:
        raise TextDataError(f"stream split: val_fraction must be in (0, 1), got {val_fraction}")
    cut = int(len(ids) * (1 - val_fraction))
    return ids[:cut], ids[cut:]


# ---------------------------------------------------------------------------------------------
# datasets
# ---------------------------------------------------------------------------------------------

def make_tokenizer(name: str | Tokenizer, texts: Sequence[str], vocab_size: int = 512) -> Tokenizer:
    """A tokenizer by name (``char``, ``bpe``, ``smiles``, ``amino``) fitted on ``texts``, or
    the given :class:`Tokenizer` unchanged."""
    from .tokenizers import AminoAcidTokenizer, BPETokenizer, CharTokenizer, SmilesTokenizer, Tokenizer

    if isinstance(name, Tokenizer):
        return name
    if name == "char":
        return CharTokenizer.fit(texts)
    if name == "bpe":
        return BPETokenizer.train(texts, vocab_size)
    if name == "smiles":
        return SmilesTokenizer.fit(texts)
    if name == "amino":
        return AminoAcidTokenizer()
    raise TextDataError(f"unknown tokenizer {name!r}; choose one of {', '.join(TOKENIZERS)} or pass a Tokenizer")


def _encode(tok: Tokenizer, docs: Sequence[tuple[str, str]], eos: bool = True) -> list[list[int]]:
    """Encode ``(where, text)`` documents, eos appended; errors name ``where`` (file:line)."""
    out = []
    for where, text in docs:
        try:
            ids = tok.encode(text)
        except TextDataError as err:
            raise TextDataError(f"{where}: {err}") from None
        out.append([*ids, tok.eos_id] if eos and tok.eos_id is not None else ids)
    return out


def _fit_length(seqs: list[list[int]], wheres: list[str], length: int, too_long: str, source: str
                ) -> tuple[list[list[int]], list[str]]:
    """Sequences longer than ``length``: an error naming the first (``"error"``), cut
    (``"truncate"``) or left out (``"skip"``), the count warned."""
    long = [k for k, s in enumerate(seqs) if len(s) > length]
    if not long:
        return seqs, wheres
    if too_long == "error":
        k = long[0]
        raise TextDataError(f"{wheres[k]}: {len(seqs[k])} tokens (an end token included where the tokenizer adds one) "
                            f"are more than length={length} "
                            f"({len(long)} such documents; pass truncate=True to cut them, or a larger length)")
    if too_long == "truncate":
        _warn(f"{source}: cut {len(long)} of {len(seqs)} documents longer than length={length} tokens")
        return [s[:length] for s in seqs], wheres
    _warn(f"{source}: left out {len(long)} of {len(seqs)} documents longer than length={length} tokens")
    drop = set(long)
    return ([s for k, s in enumerate(seqs) if k not in drop], [w for k, w in enumerate(wheres) if k not in drop])


def _info(name: str, tok: Tokenizer, length: int, source: str, kind: str, **extra: Any) -> dict[str, Any]:
    return {"dataset": name, "length": int(length), "vocab_size": tok.vocab_size, "tokenizer": tok.to_dict(),
            "pad_id": tok.pad_id, "eos_id": tok.eos_id, "source": source, "kind": kind, **extra}


def _documents_bundle(name: str, source: str, tok: Tokenizer, seqs: list[list[int]], length: int, seed: int,
                      test_fraction: float, val_fraction: float, **extra: Any) -> DataBundle:
    """Split encoded documents at random and pad them into a bundle (``kind="documents"``)."""
    train, val, test = split(len(seqs), test_fraction, val_fraction, seed, source=source)

    def states(idx: np.ndarray) -> TensorStates:
        return sequence_states([seqs[i] for i in idx], length, tok.pad_id, source=source)

    info = _info(name, tok, length, source, "documents", n_train=len(train), n_val=len(val), n_test=len(test),
                 size_hist=size_histogram([len(seqs[i]) for i in train]), seed=seed, **extra)
    return DataBundle(states(train), states(val) if len(val) else None, states(test), info)


def _stream_bundle(name: str, source: str, tok: Tokenizer, ids: list[int], length: int, stride: int | None,
                   val_fraction: float, **extra: Any) -> DataBundle:
    """Blocks of a stream split by position (first 90% train, last 10% val = test)."""
    head, tail = stream_split(ids, val_fraction)
    for part, what in ((head, "training"), (tail, "validation")):
        if len(part) < length:
            raise TextDataError(f"{source}: the {what} part of the stream has {len(part)} tokens (of {len(ids)}), "
                                f"fewer than one block of length={length}; use a shorter length or more text")
    train = stream_states(head, length, stride, source=source)
    val = stream_states(tail, length, source=source)
    info = _info(name, tok, length, source, "stream", n_train=len(train), n_val=len(val), n_test=len(val),
                 train_tokens=len(head), val_tokens=len(tail), stride=int(stride or length),
                 split=f"by position: first {1 - val_fraction:.0%} train, last {val_fraction:.0%} val; test = val "
                       "(nanoGPT)", **extra)
    return DataBundle(train, val, val, info)


def smiles_dataset(length: int = 64, limit: int | None = None, seed: int = 0, test_fraction: float = 0.1,
                   val_fraction: float = 0.1) -> DataBundle:
    """The embedded default: NCI SMILES (:func:`nci_smiles`), a :class:`SmilesTokenizer` fitted
    on all of them, eos appended. SMILES longer than ``length`` tokens (eos included) are left
    out with a warning (a cut SMILES is not a molecule); ``limit`` keeps the first ones."""
    from .tokenizers import SmilesTokenizer

    smiles = nci_smiles(limit)
    tok = SmilesTokenizer.fit(smiles)
    seqs = _encode(tok, [(f"{NCI_SOURCE} SMILES {k}", s) for k, s in enumerate(smiles)])
    seqs, _ = _fit_length(seqs, [""] * len(seqs), length, "skip", NCI_SOURCE)
    return _documents_bundle("nci_smiles", NCI_SOURCE, tok, seqs, length, seed, test_fraction, val_fraction,
                             n_skipped=len(smiles) - len(seqs))


def shakespeare_dataset(length: int = 256, stride: int | None = None, limit_chars: int | None = None) -> DataBundle:
    """Character-level tiny Shakespeare: a :class:`CharTokenizer` of its 65 characters (+ pad),
    blocks of ``length`` characters every ``stride`` (default ``length``) of the first 90%
    (train), non-overlapping blocks of the last 10% (val, and test as well). ``limit_chars``
    uses only the first characters (the vocabulary stays the full text's)."""
    from .tokenizers import CharTokenizer

    text = shakespeare()
    tok = CharTokenizer.fit(text)
    if limit_chars is not None:
        text = text[:limit_chars]
    return _stream_bundle("shakespeare_char", str(shakespeare_path()), tok, tok.encode(text), length, stride, 0.1,
                          chars=len(text))


def file_dataset(path: str | Path, tokenizer: str | Tokenizer = "char", length: int = 128, *,
                 vocab_size: int = 512, whole: bool = False, format: str | None = None, field: str = "text",
                 seed: int = 0, test_fraction: float = 0.1, val_fraction: float = 0.1, max_chars: int | None = None,
                 truncate: bool = False, stride: int | None = None, canonical: bool = False,
                 name: str | None = None) -> DataBundle:
    """A dataset from a user's file (:func:`read_documents` formats).

    Documents (the default): encoded with ``tokenizer`` (``char``, ``bpe`` trained with
    ``vocab_size``, ``smiles``, ``amino``, or a :class:`Tokenizer`, e.g. from a checkpoint)
    fitted on the whole file, eos appended, padded to ``length``, split at random (``seed``,
    ``test_fraction``, ``val_fraction``). A document longer than ``length`` tokens is an error
    naming its line, unless ``truncate=True`` (cut, count warned). ``canonical=True``
    canonicalises SMILES with RDKit (unreadable ones skipped and warned).
    With ``whole=True`` (plain text) the file is one stream cut into blocks (``stride``) and
    split by position: the first ``1 - val_fraction`` trains, the rest is val and test."""
    file = Path(path).expanduser()
    docs = read_documents(file, format, whole=whole, max_chars=max_chars, truncate=truncate, field=field)
    if canonical:
        canon = canonical_smiles([d for _, d in docs])
        bad = [n for (n, _), c in zip(docs, canon) if c is None]
        if bad:
            _warn(f"{file}: skipped {len(bad)} of {len(docs)} SMILES that RDKit cannot read ({_lines_of(bad)})")
        docs = [(n, c) for (n, _), c in zip(docs, canon) if c is not None]
        if not docs:
            raise TextDataError(f"{file}: RDKit can read none of the SMILES")
    tok = make_tokenizer(tokenizer, [d for _, d in docs], vocab_size)
    name = name or file.stem
    if whole:
        ids = _encode(tok, [(f"{file}", docs[0][1])], eos=False)[0]
        return _stream_bundle(name, str(file), tok, ids, length, stride, val_fraction)
    wheres = [f"{file}:{n}" for n, _ in docs]
    seqs = _encode(tok, list(zip(wheres, (d for _, d in docs))))
    seqs, _ = _fit_length(seqs, wheres, length, "truncate" if truncate else "error", str(file))
    return _documents_bundle(name, str(file), tok, seqs, length, seed, test_fraction, val_fraction)


def protein_dataset(path: str | Path, length: int = 512, **kwargs: Any) -> DataBundle:
    """Protein sequences from a FASTA file: :func:`file_dataset` with the amino-acid tokenizer."""
    return file_dataset(path, "amino", length, **kwargs)
