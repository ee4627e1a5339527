"""Fuzzing the text plugin's readers (:func:`polydiff_text.data.read_texts` on plain text, JSONL,
FASTA and SMILES files) with :func:`polydiff.fuzz.fuzz_reader`: mutated inputs end in a
:class:`TextDataError` (or ``OSError``) naming the file, or in a read of as many documents as
the bytes hold (fewer only with a warning naming the file)."""

from __future__ import annotations

import json
import re

import pytest

from polydiff.fuzz import fuzz_reader
from polydiff_text.data import TextDataError, read_texts

pytestmark = pytest.mark.usefixtures("one_thread")

EXPECTED = (TextDataError, OSError)


def _lines(data: bytes) -> list[str] | None:
    """The text's lines as the readers split them (``\\n``, ``\\r\\n``, ``\\r``; a BOM dropped),
    or None for bytes that are not UTF-8 (the reader must refuse them)."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None
    return re.split(r"\r\n|\r|\n", text)


def txt_records(name: str, data: bytes) -> int | None:
    """Documents of a plain-text file: its non-blank lines."""
    lines = _lines(data)
    return None if lines is None else sum(1 for s in lines if s.strip())


def jsonl_records(name: str, data: bytes) -> int | None:
    """Records of a JSONL file: its non-blank lines (an empty text is skipped with a warning)."""
    return txt_records(name, data)


def fasta_records(name: str, data: bytes) -> int | None:
    """Records of a FASTA file: its header lines (an empty record is skipped with a warning)."""
    lines = _lines(data)
    return None if lines is None else sum(1 for s in lines if s.strip().startswith(">"))


def smiles_records(name: str, data: bytes) -> int | None:
    """SMILES of a .smi file: non-blank lines that are not ``#`` comments, less a ``smiles``
    header on the first of them."""
    lines = _lines(data)
    if lines is None:
        return None
    records = [s.strip() for s in lines if s.strip() and not s.strip().startswith("#")]
    return len(records) - bool(records and records[0].split()[0].lower() == "smiles")


def check_documents(docs: list[str]) -> None:
    assert all(isinstance(d, str) and d.strip() for d in docs), "an empty or non-string document"
    assert all("\x00" not in d for d in docs), "a NUL character in a document"
    for d in docs:
        d.encode("utf-8")  # no unpaired surrogates


def test_records_helpers():
    assert txt_records("a.txt", b"a\n\n b \r\nc\rd") == 4 and txt_records("a.txt", b"\xff") is None
    assert fasta_records("a.fa", b">a\nMK\n >b\n>c\n") == 3
    assert smiles_records("a.smi", b"smiles\n#c\nCCO x\n\nC#N\n") == 2
    assert smiles_records("a.smi", b"#c\nSMILES\nCCO\n") == 1


def test_fuzz_read_txt(tmp_path):
    valid = "First Citizen:\nBefore we proceed any further — hear me speak.\n\nAll:\nSpeak, speak. ✓\n".encode()
    print(fuzz_reader(read_texts, {"lines.txt": valid}, tmp_path, examples=80, expected=EXPECTED,
                      records=txt_records, check=check_documents, name="read_texts(.txt)"))


def test_fuzz_read_txt_truncated(tmp_path):
    valid = b"short\n" + b"a much longer line of text\n" * 3 + b"end\n"

    def check(docs: list[str]) -> None:
        check_documents(docs)
        assert all(len(d) <= 12 for d in docs), "a document longer than max_chars"

    print(fuzz_reader(lambda p: read_texts(p, max_chars=12, truncate=True), {"cut.txt": valid}, tmp_path,
                      examples=60, expected=EXPECTED, records=txt_records, check=check,
                      name="read_texts(.txt, truncate)"))


def test_fuzz_read_jsonl(tmp_path):
    rows = [{"text": "hello world"}, {"text": "naïve café 🙂", "id": 2}, {"text": "line\nbreak"}]
    valid = "".join(json.dumps(r, ensure_ascii=k % 2 == 0) + "\n" for k, r in enumerate(rows)).encode()
    print(fuzz_reader(read_texts, {"docs.jsonl": valid}, tmp_path, examples=100, expected=EXPECTED,
                      records=jsonl_records, check=check_documents, name="read_texts(.jsonl)",
                      tokens=(b"{", b"}", b'"text"', b":", b"\\u0000", b"\\ud800", b"[", b"null", b'""')))


def test_fuzz_read_fasta(tmp_path):
    valid = b">sp|P69905|HBA_HUMAN Hemoglobin alpha\nMVLSPADKTNVKAAWGKVGAHAGEYGAEALERMFLS\nFPTTKTYFPHF\n>two\nMKT-AY*\n"
    print(fuzz_reader(read_texts, {"proteins.fasta": valid}, tmp_path, examples=100, expected=EXPECTED,
                      records=fasta_records, check=check_documents, name="read_texts(.fasta)",
                      tokens=(b">", b"\n>", b"*", b"X")))


def test_fuzz_read_smiles(tmp_path):
    valid = b"smiles name\nCCO ethanol\nc1ccccc1O\tphenol\n# comment\nO=[N+]([O-])c1ccccc1\nC#N\n"
    print(fuzz_reader(read_texts, {"mols.smi": valid}, tmp_path, examples=100, expected=EXPECTED,
                      records=smiles_records, check=check_documents, name="read_texts(.smi)",
                      tokens=(b"[", b"]", b"(", b")", b"=", b"%10", b"smiles", b"SMILES ")))
