"""Text data: readers of users' files and their errors, the embedded NCI SMILES, tiny Shakespeare,
tensors, splits and the dataset factories."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from polydiff.plugin import check_info, shared_dir
from polydiff_text import data as D
from polydiff_text.data import TextDataError, TextDataWarning
from polydiff_text.tokenizers import AminoAcidTokenizer, tokenizer_from_dict

pytestmark = pytest.mark.usefixtures("one_thread")

SHAKESPEARE = shared_dir() / "data" / "text" / "tinyshakespeare.txt"


@pytest.fixture(autouse=True)
def fresh_warnings(monkeypatch):
    """Data warnings are given once per message in a process: each test here starts afresh."""
    monkeypatch.setattr(D, "_WARNED", set())


def needs_shakespeare(test):
    """Mark a test as needing ../shared/data/text and skip it when absent."""
    skip = pytest.mark.skipif(not SHAKESPEARE.is_file(), reason=f"shared data file {SHAKESPEARE} not found "
                                                                "(set POLYDIFF_SHARED to the shared folder)")
    return skip(pytest.mark.shared(test))


def write(tmp_path, name: str, data: str | bytes):
    path = tmp_path / name
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


def check_bundle(b, vocab_size: int) -> None:
    """Shapes, dtypes, token ranges and valid masks (a prefix of True) of every split; JSON info."""
    for ds in (b.train, b.val, b.test):
        tokens, valid = ds.tensors["tokens"], ds.tensors["valid"]
        assert tokens.dtype == torch.long and valid.dtype == torch.bool and tokens.shape == valid.shape
        assert tokens.shape[1] == b.info["length"] and len(ds) > 0
        assert int(tokens.min()) >= 0 and int(tokens.max()) < vocab_size == b.info["vocab_size"]
        n = valid.sum(1)
        assert torch.equal(valid, torch.arange(valid.shape[1]) < n[:, None])  # valid = a prefix
        assert bool((tokens[~valid] == b.info["pad_id"]).all())
    info = json.loads(json.dumps(b.info))
    check_info(info)
    assert set(info) >= {"dataset", "length", "vocab_size", "tokenizer", "pad_id", "eos_id", "source", "n_train",
                         "kind"}
    assert info["n_train"] == len(b.train)
    assert tokenizer_from_dict(info["tokenizer"]).vocab_size == vocab_size


# -- readers: valid files ------------------------------------------------------------------------

def test_read_txt_lines_and_whole(tmp_path):
    f = write(tmp_path, "a.txt", "\ufefffirst line\r\n\n  \nsecond\rthird  \n")
    assert D.read_documents(f) == [(1, "first line"), (4, "second"), (5, "third  ")]
    assert D.read_texts(f, whole=True) == ["first line\r\n\n  \nsecond\rthird  \n"]  # BOM dropped, text as is
    g = write(tmp_path, "notes.log", "x\ny\n")
    assert D.read_texts(g, format="text") == ["x", "y"]
    with pytest.raises(TextDataError, match=r"notes.log: cannot tell the format from the suffix '.log'"):
        D.read_texts(g)
    with pytest.raises(FileNotFoundError, match=r"missing\.txt"):
        D.read_texts(tmp_path / "missing.txt")
    with pytest.raises(IsADirectoryError, match="a folder, not a file"):
        D.read_texts(tmp_path)


def test_read_jsonl(tmp_path):
    f = write(tmp_path, "d.jsonl", '{"text": "hello", "id": 1}\n\n{"text": "wörld\\u00e9"}\n{"text": ""}\n')
    with pytest.warns(TextDataWarning, match=r"d.jsonl: skipped 1 lines with an empty 'text' \(line 4\) of 3"):
        assert D.read_documents(f) == [(1, "hello"), (3, "wörldé")]
    g = write(tmp_path, "e.jsonl", '{"body": "x"}\n')
    assert D.read_texts(g, field="body") == ["x"]


def test_read_fasta(tmp_path):
    f = write(tmp_path, "p.fasta", ">sp|P1 first\nMKTAY\nIAKQR\n\n>empty one\n>P3\nmk-t*\n")
    with pytest.warns(TextDataWarning, match=r"p.fasta: skipped 1 FASTA records without a sequence \(line 5\)"):
        assert D.read_documents(f) == [(1, "MKTAYIAKQR"), (6, "mk-t*")]


def test_read_smiles(tmp_path):
    f = write(tmp_path, "m.smi", "SMILES name\n# a comment\nCCO ethanol\n\nc1ccccc1\tbenzene\nC#N\n")
    assert D.read_documents(f) == [(3, "CCO"), (5, "c1ccccc1"), (6, "C#N")]
    g = write(tmp_path, "m.smiles", "CCO\nsmiles\n")  # only the first record line can be the header
    assert D.read_texts(g) == ["CCO", "smiles"]


# -- readers: errors -----------------------------------------------------------------------------

def test_bad_utf8_byte_names_file_line_and_byte(tmp_path):
    f = write(tmp_path, "bad.txt", b"fine\nstill fine\nbad \xff here\n")
    with pytest.raises(TextDataError, match=r"bad.txt:3: not UTF-8 text \(byte 0xff at offset 20\)"):
        D.read_texts(f)


@pytest.mark.parametrize("name,data", [("e.txt", ""), ("e.jsonl", "\n\n"), ("e.fasta", "  \r\n")])
def test_empty_file(tmp_path, name, data):
    with pytest.raises(TextDataError, match=rf"{name}: the file is empty"):
        D.read_texts(write(tmp_path, name, data))


@pytest.mark.parametrize("line,match", [
    ('{"text": "a"', r"b.jsonl:2: not a JSON line \(Expecting ',' delimiter"),
    ('["a"]', r"b.jsonl:2: expected a JSON object with a 'text' field, got a list"),
    ('{"txt": "a"}', r"b.jsonl:2: no 'text' field \(fields: 'txt'\)"),
    ('{"text": 3}', r"b.jsonl:2: the 'text' field is a int, not a string"),
    ('{"text": "a\\ud800"}', r"b.jsonl:2: the text holds '\\ud800', an unpaired surrogate"),
    ('{"text": "a\\u0000"}', r"b.jsonl:2: the text holds a NUL character"),
    ("[" * 5000, r"b.jsonl:2: not a JSON line"),
])
def test_bad_jsonl_line(tmp_path, line, match):
    f = write(tmp_path, "b.jsonl", '{"text": "ok"}\n' + line + "\n")
    with pytest.raises(TextDataError, match=match):
        D.read_texts(f)


def test_fasta_errors(tmp_path):
    with pytest.raises(TextDataError, match=r"x.fa:2: a sequence line before the first '>' header"):
        D.read_texts(write(tmp_path, "x.fa", "\nMKT\n>a\nMKT\n"))
    with pytest.raises(TextDataError, match=r"y.faa:3: '1' is not a residue or nucleotide letter"):
        D.read_texts(write(tmp_path, "y.faa", ">a\nMKT\nMK1T\n"))
    with pytest.raises(TextDataError, match=r"z.fasta: no documents \(every record was empty\)"), \
            pytest.warns(TextDataWarning, match="z.fasta: skipped 2"):
        D.read_texts(write(tmp_path, "z.fasta", ">a\n>b\n"))


def test_over_long_lines(tmp_path):
    f = write(tmp_path, "long.txt", "short\n" + "x" * 50 + "\nok\n" + "y" * 60 + "\n")
    with pytest.raises(TextDataError, match=r"long.txt:2: a document of 50 characters, longer than max_chars=20 "
                                            r"\(2 such; pass truncate=True"):
        D.read_texts(f, max_chars=20)
    with pytest.warns(TextDataWarning, match=r"long.txt: cut 2 documents longer than max_chars=20 \(lines 2, 4\)"):
        assert D.read_texts(f, max_chars=20, truncate=True) == ["short", "x" * 20, "ok", "y" * 20]
    assert len(D.read_texts(f, max_chars=60)) == 4


def test_nul_and_other_errors(tmp_path):
    with pytest.raises(TextDataError, match=r"bin.txt:2: a NUL character"):
        D.read_texts(write(tmp_path, "bin.txt", "a\nb\x00c\n"))
    with pytest.raises(TextDataError, match=r"c.smi: no documents"):
        D.read_texts(write(tmp_path, "c.smi", "smiles\n# nothing\n"))
    with pytest.raises(TextDataError, match="whole=True reads plain text only"):
        D.read_texts(write(tmp_path, "w.jsonl", '{"text": "a"}'), whole=True)


# -- the embedded SMILES -------------------------------------------------------------------------

def test_nci_smiles_valid_unique_canonical():
    from rdkit import Chem

    with pytest.warns(TextDataWarning, match=r"first_5K.smi: skipped \d+ SMILES that RDKit cannot read"):
        smiles = D.nci_smiles()
    assert 4000 < len(smiles) <= 4999 and len(set(smiles)) == len(smiles)
    for s in smiles[::50]:
        mol = Chem.MolFromSmiles(s)
        assert mol is not None and Chem.MolToSmiles(mol) == s
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TextDataWarning)
        assert D.nci_smiles(limit=10) == smiles[:10]


@pytest.mark.filterwarnings("ignore::polydiff_text.data.TextDataWarning")
def test_smiles_dataset():
    with pytest.warns(TextDataWarning, match=r"left out \d+ of \d+ documents longer than length=64"):
        b = D.smiles_dataset(length=64, seed=1)
    check_bundle(b, b.info["vocab_size"])
    info = b.info
    assert info["dataset"] == "nci_smiles" and info["source"] == "rdkit NCI first_5K.smi"
    assert info["kind"] == "documents"
    assert info["n_train"] + info["n_val"] + info["n_test"] + info["n_skipped"] == len(D.nci_smiles())
    tok = tokenizer_from_dict(info["tokenizer"])
    tokens, valid = b.test.tensors["tokens"], b.test.tensors["valid"]
    last = valid.sum(1) - 1
    assert bool((tokens[torch.arange(len(tokens)), last] == tok.eos_id).all())  # every document ends with eos
    known = set(D.nci_smiles())
    assert all(tok.decode(row) in known for row in tokens[:50])
    assert len(info["size_hist"]) <= 65 and sum(info["size_hist"]) == info["n_train"]
    again = D.smiles_dataset(length=64, seed=1)
    assert torch.equal(again.train.tensors["tokens"], b.train.tensors["tokens"])  # the split is seeded


def test_a_dataset_built_again_does_not_warn_again():
    """Every evaluation (and every loaded model) builds the recipe's data again: its counts are
    warned the first time only."""
    with pytest.warns(TextDataWarning) as first:
        D.smiles_dataset(length=32, limit=200)
    said = " ".join(str(w.message) for w in first)
    assert "skipped" in said and "left out" in said
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        D.smiles_dataset(length=32, limit=200)


# -- tensors and splits --------------------------------------------------------------------------

def test_sequence_states():
    s = D.sequence_states([[5, 6, 1], [7], []], 4, pad_id=0)
    assert s.tensors["tokens"].tolist() == [[5, 6, 1, 0], [7, 0, 0, 0], [0, 0, 0, 0]]
    assert s.tensors["valid"].tolist() == [[True, True, True, False], [True, False, False, False], [False] * 4]
    with pytest.raises(TextDataError, match=r"mine: sequence 1 has 5 tokens, more than length=4"):
        D.sequence_states([[1], [1, 2, 3, 4, 5]], 4, 0, source="mine")
    with pytest.warns(TextDataWarning, match=r"cut 1 of 2 sequences longer than length=4"):
        s = D.sequence_states([[1], [1, 2, 3, 4, 5]], 4, 0, truncate=True)
    assert s.tensors["tokens"][1].tolist() == [1, 2, 3, 4] and bool(s.tensors["valid"][1].all())


def test_stream_states():
    s = D.stream_states(list(range(10)), 4)
    assert s.tensors["tokens"].tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]] and bool(s.tensors["valid"].all())
    s = D.stream_states(list(range(10)), 4, stride=3)
    assert s.tensors["tokens"][:, 0].tolist() == [0, 3, 6]
    with pytest.raises(TextDataError, match="a stream of 3 tokens is shorter than one block of length=4"):
        D.stream_states([1, 2, 3], 4)


def test_split():
    train, val, test = D.split(100, 0.1, 0.2, seed=3)
    assert (len(train), len(val), len(test)) == (70, 20, 10)
    assert sorted(np.concatenate([train, val, test]).tolist()) == list(range(100))
    assert all(np.array_equal(a, b) for a, b in zip((train, val, test), D.split(100, 0.1, 0.2, seed=3)))
    assert not np.array_equal(test, D.split(100, 0.1, 0.2, seed=4)[2])
    assert len(D.split(3, 0.2, 0.1)[1]) == 0  # an empty val split is allowed
    with pytest.raises(TextDataError, match=r"toy: 4 documents are too few for a test split with test_fraction=0.1: "
                                            r"that needs at least 5"):
        D.split(4, 0.1, 0.1, source="toy")
    with pytest.raises(TextDataError, match="2 documents leave no training documents"):
        D.split(2, 0.5, 0.5 - 1e-9)
    with pytest.raises(TextDataError, match="leaves no test split"):
        D.split(10, 0.0)


# -- users' files --------------------------------------------------------------------------------

def test_file_dataset_char_and_bpe(tmp_path):
    lines = [f"line {i}: the quick brown fox jumps over the lazy dog {i * 7}" for i in range(40)]
    f = write(tmp_path, "docs.txt", "\n".join(lines))
    b = D.file_dataset(f, "char", length=64)
    check_bundle(b, b.info["vocab_size"])
    assert b.info["eos_id"] is None and b.info["kind"] == "documents" and b.info["source"] == str(f)
    assert (b.info["n_train"], b.info["n_val"], b.info["n_test"]) == (32, 4, 4)
    tok = tokenizer_from_dict(b.info["tokenizer"])
    assert tok.decode(b.test[0]["tokens"]) in lines
    bpe = D.file_dataset(f, "bpe", length=48, vocab_size=300)
    check_bundle(bpe, bpe.info["vocab_size"])
    assert bpe.info["tokenizer"]["kind"] == "bpe" and bpe.info["eos_id"] == 1
    with pytest.raises(TextDataError, match=r"docs.txt:1: 5\d tokens \(an end token included where the tokenizer "
                                            r"adds one\) are more than length=20"):
        D.file_dataset(f, "char", length=20)
    with pytest.warns(TextDataWarning, match="cut 40 of 40 documents longer than length=20"):
        D.file_dataset(f, "char", length=20, truncate=True)
    with pytest.raises(TextDataError, match="unknown tokenizer 'words'"):
        D.file_dataset(f, "words")
    with pytest.raises(TextDataError, match=r"docs.txt: 4 documents are too few for a test split"):
        D.file_dataset(write(tmp_path, "docs.txt", "a\nb\nc\nd\n"), "char")


def test_file_dataset_whole_stream(tmp_path):
    text = "".join(f"Line {i} of a stream.\n" for i in range(100))
    b = D.file_dataset(write(tmp_path, "s.txt", text), "char", length=32, whole=True, stride=16)
    check_bundle(b, b.info["vocab_size"])
    assert b.info["kind"] == "stream" and b.test is b.val
    cut = int(len(text) * 0.9)
    assert b.info["train_tokens"] == cut and len(b.train) == (cut - 32) // 16 + 1
    tok = tokenizer_from_dict(b.info["tokenizer"])
    assert tok.decode(b.val[0]["tokens"]) == text[cut:cut + 32]


def test_protein_dataset(tmp_path):
    fasta = "".join(f">p{i}\nMKTAYIAKQRQISFVKSHFSRQ\nLEERLGLIEV{'ACDEFGHIKL'[:i % 10]}\n" for i in range(20))
    b = D.protein_dataset(write(tmp_path, "p.fasta", fasta), length=48)
    check_bundle(b, 23)
    assert b.info["tokenizer"] == AminoAcidTokenizer().to_dict()
    with pytest.raises(TextDataError, match=r"q.fasta:3: position 3: '\*' is not an amino-acid letter"):
        D.protein_dataset(write(tmp_path, "q.fasta", ">a\nMKTA\n>b\nMKT*\n"))


def test_file_dataset_canonical_smiles(tmp_path):
    smi = "smiles\n" + "".join(f"{s}\n" for s in ["OCC", "c1ccccc1", "C1CC", "N#C", "CC(=O)O"] * 4)
    with pytest.warns(TextDataWarning, match=r"m.smi: skipped 4 of 20 SMILES that RDKit cannot read \(lines 4, 9"):
        b = D.file_dataset(write(tmp_path, "m.smi", smi), "smiles", length=16, canonical=True)
    tok = tokenizer_from_dict(b.info["tokenizer"])
    assert {tok.decode(r) for r in b.train.tensors["tokens"]} <= {"CCO", "c1ccccc1", "C#N", "CC(=O)O"}


# -- tiny Shakespeare ----------------------------------------------------------------------------

@needs_shakespeare
def test_shakespeare_split_proportions():
    text = D.shakespeare()
    assert len(text) == 1_115_394
    b = D.shakespeare_dataset(length=256)
    check_bundle(b, 66)
    info = b.info
    assert info["kind"] == "stream" and info["eos_id"] is None and info["pad_id"] == 65
    assert info["train_tokens"] == int(len(text) * 0.9) and info["train_tokens"] + info["val_tokens"] == len(text)
    assert len(b.train) == info["train_tokens"] // 256 and len(b.val) == info["val_tokens"] // 256
    assert b.test is b.val
    tok = tokenizer_from_dict(info["tokenizer"])
    cut = info["train_tokens"]
    assert tok.decode(b.val[0]["tokens"]) == text[cut:cut + 256] and tok.decode(b.train[0]["tokens"]) == text[:256]
    small = D.shakespeare_dataset(length=64, stride=32, limit_chars=10_000)
    assert small.info["vocab_size"] == 66 and len(small.train) == (9000 - 64) // 32 + 1


def test_shakespeare_checksum_and_absence(tmp_path, monkeypatch):
    (tmp_path / "data" / "text").mkdir(parents=True)
    monkeypatch.setenv("POLYDIFF_SHARED", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"tinyshakespeare\.txt"):
        D.shakespeare()
    (tmp_path / "data" / "text" / "tinyshakespeare.txt").write_text("First Citizen:\n")
    with pytest.raises(TextDataError, match=r"tinyshakespeare.txt: sha256 [0-9a-f]{64} is not the expected 86c4e6aa"):
        D.shakespeare()
