"""Users' own text files for ``polydiff evaluate``: a folder of documents, undefined SMILES
metrics, and errors that say what to do on the command line."""

from __future__ import annotations

import math

import pytest

from polydiff_text import TextModality
from polydiff_text.data import TextDataError
from polydiff_text.metrics import smiles_metrics


def test_a_folder_of_txt_documents_is_one_sample_per_file_in_name_order(tmp_path):
    for name, text in [("d2.txt", "Second.\nstill the second\n"), ("d1.txt", "First.\n\n"), ("d3.TEXT", "Third")]:
        (tmp_path / name).write_text(text)
    (tmp_path / ".hidden.txt").write_text("not read")
    (tmp_path / "notes.md").write_text("not a text format")
    assert TextModality().read(tmp_path) == ["First.", "Second.\nstill the second", "Third"]


def test_a_folder_with_one_text_file_is_read_by_its_records(tmp_path):
    (tmp_path / "lines.txt").write_text("one\ntwo\n")
    assert TextModality().read(tmp_path) == ["one", "two"]


def test_a_folder_of_several_formats_is_refused_naming_its_files(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"text": "x"}\n')
    (tmp_path / "b.txt").write_text("y\n")
    with pytest.raises(FileNotFoundError, match=r"\.txt documents \(one sample per file\); found 2: a\.jsonl, b\.txt"):
        TextModality().read(tmp_path)


def test_an_empty_document_in_a_folder_names_the_file(tmp_path):
    (tmp_path / "a.txt").write_text("x\n")
    (tmp_path / "b.txt").write_text("")
    with pytest.raises(TextDataError, match=r"b\.txt: the file is empty"):
        TextModality().read(tmp_path)


def test_no_valid_smiles_leaves_uniqueness_and_novelty_undefined():
    m = smiles_metrics(["To be or not to be.", "Xyz"], training=["CCO"])
    assert m["validity"] == 0 and math.isnan(m["uniqueness"]) and math.isnan(m["novelty"])
    m = smiles_metrics(["Xyz"])
    assert m["validity"] == 0 and math.isnan(m["uniqueness"]) and "novelty" not in m


def test_unknown_suffix_says_what_to_do_on_the_command_line(tmp_path):
    f = tmp_path / "mols.csv"
    f.write_text("CCO\n")
    with pytest.raises(TextDataError, match=r"mols\.csv: cannot tell the format .* rename the file to one of") as err:
        TextModality().read(f)
    assert "format=" not in str(err.value)


def test_prose_against_the_smiles_default_is_scored_as_text():
    """Text files evaluated without a reference met the default SMILES data's tokenizer:
    entropy of SMILES tokens and validity 0 for prose (with a reference: character entropy)."""
    import polydiff

    mod = polydiff.load_modality("text")
    prose = ["To be, or not to be, that is the question", "Whether tis nobler in the mind to suffer"]
    smiles_info = {"tokenizer": {"kind": "smiles", "tokens": ["C", "O", "("]}, "pad_id": 0}
    got = mod.evaluate(prose, ["CCO", "c1ccccc1"], smiles_info)
    chars = mod.evaluate(prose, [], {})
    assert got["entropy"] == pytest.approx(chars["entropy"]) and "validity" not in got
    assert "validity" in mod.evaluate(["CCO", "CC(C)O"], ["CCO"], smiles_info)
