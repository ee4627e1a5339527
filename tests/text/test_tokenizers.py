"""Tokenizers of the text plugin: round trips, saved descriptions, unknown characters, BPE determinism."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from polydiff.plugin import shared_dir
from polydiff_text.data import TextDataError
from polydiff_text.tokenizers import (
    AminoAcidTokenizer,
    BPETokenizer,
    CharTokenizer,
    SmilesTokenizer,
    Tokenizer,
    tokenizer_from_dict,
)

pytestmark = pytest.mark.usefixtures("one_thread")

# the 65 characters of tiny Shakespeare, sorted (nanoGPT's shakespeare_char vocabulary)
SHAKESPEARE_CHARS = "\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
SHAKESPEARE = shared_dir() / "data" / "text" / "tinyshakespeare.txt"
CORPUS = [
    "First Citizen: Before we proceed any further, hear me speak.",
    "All: Speak, speak. You are all resolved rather to die than to famish?",
    "We know't, we know't. Let us kill him, and we'll have corn at our own price.",
    "Is't a verdict? No more talking on't; let it be done: away, away!",
] * 5


def needs_shakespeare(test):
    """Mark a test as needing ../shared/data/text and skip it when absent."""
    skip = pytest.mark.skipif(not SHAKESPEARE.is_file(), reason=f"shared data file {SHAKESPEARE} not found "
                                                                "(set POLYDIFF_SHARED to the shared folder)")
    return skip(pytest.mark.shared(test))


def saved(tok: Tokenizer) -> Tokenizer:
    """``tok`` through to_dict, JSON text and tokenizer_from_dict (as a checkpoint stores it)."""
    return tokenizer_from_dict(json.loads(json.dumps(tok.to_dict())))


def nci_raw_smiles() -> list[str]:
    """The SMILES of RDKit's bundled NCI file as written there (not canonicalised)."""
    from rdkit import RDConfig

    text = (Path(RDConfig.RDDataDir) / "NCI" / "first_5K.smi").read_text()
    return [line.split()[0] for line in text.splitlines() if line.strip()]


# -- char ----------------------------------------------------------------------------------------

def test_char_all_shakespeare_characters_round_trip():
    text = "".join(reversed(SHAKESPEARE_CHARS)) + "\nO Romeo, Romeo! wherefore art thou Romeo?\n" + SHAKESPEARE_CHARS
    tok = CharTokenizer.fit(text)
    assert tok.chars == SHAKESPEARE_CHARS and tok.vocab_size == 66 and tok.pad_id == 65 and tok.eos_id is None
    ids = tok.encode(text)
    assert len(ids) == len(text) and max(ids) == 64 and tok.decode(ids) == text
    assert tok.encode("a") == [SHAKESPEARE_CHARS.index("a")]  # ids in sorted order, as nanoGPT's
    assert tok.decode([*tok.encode("abc"), tok.pad_id, tok.pad_id]) == "abc"  # pads dropped
    again = saved(tok)
    assert again == tok and again.encode(text) == ids and again.vocab_size == 66


def test_char_unknown_character_and_bad_ids():
    tok = CharTokenizer.fit(["abc", "cab"])
    with pytest.raises(TextDataError, match=r"position 2: the character 'z' is not in"):
        tok.encode("abz")
    with pytest.raises(TextDataError, match=r"token id 4 is outside .*mask id 4"):
        tok.decode([0, 4])
    with pytest.raises(TextDataError, match="no characters"):
        CharTokenizer.fit(["", ""])
    assert tok.decode(torch.tensor([2, 1, 0])) == "cba"  # tensors decode too


@needs_shakespeare
def test_char_fitted_on_tiny_shakespeare():
    from polydiff_text.data import shakespeare

    text = shakespeare()
    tok = CharTokenizer.fit(text)
    assert tok.chars == SHAKESPEARE_CHARS and tok.vocab_size == 66
    assert tok.decode(tok.encode(text[:5000])) == text[:5000]


# -- SMILES --------------------------------------------------------------------------------------

def test_smiles_split_atom_level():
    assert SmilesTokenizer.split("C[C@@H](Br)c1ccc(Cl)cc1%10[nH+]") == \
        ["C", "[C@@H]", "(", "Br", ")", "c", "1", "c", "c", "c", "(", "Cl", ")", "c", "c", "1", "%10", "[nH+]"]
    assert SmilesTokenizer.split("CN->[Fe+2]") == ["C", "N", "->", "[Fe+2]"]
    assert SmilesTokenizer.split("C B r") == ["C", " ", "B", " ", "r"]  # every character lands in a token


def test_smiles_round_trip_on_rdkit_bundled_file():
    smiles = nci_raw_smiles()
    assert len(smiles) > 4000
    tok = SmilesTokenizer.fit(smiles)
    assert tok.vocab_size < 200 and {tok.pad_id, tok.eos_id, tok.unk_id} == {0, 1, 2}
    for s in smiles:
        ids = tok.encode(s)
        assert tok.unk_id not in ids
        assert tok.decode([*ids, tok.eos_id, tok.pad_id, *ids]) == s  # stops at eos
    again = saved(tok)
    assert again == tok and again.encode(smiles[7]) == tok.encode(smiles[7])


def test_smiles_unknown_tokens_become_unk():
    tok = SmilesTokenizer.fit(["CCO", "c1ccccc1"])
    ids = tok.encode("CC[Na]O")
    assert ids[2] == tok.unk_id and tok.decode(ids) == "CC<unk>O"
    with pytest.raises(TextDataError, match="not one SMILES token"):
        SmilesTokenizer(["C", "Cl4"])


# -- amino acids ---------------------------------------------------------------------------------

def test_amino_fixed_vocabulary_and_round_trip():
    tok = AminoAcidTokenizer()
    assert tok.vocab_size == 23 and tok.unk_id == 20 and tok.pad_id == 21 and tok.eos_id == 22
    seq = ("MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQAPILSRVGDGTQDNLSGAEKAVQVKVKALPDAQFEVVHSLAKWKRQTLGQHDFSAGEGLYTHMKALRPDEDRL"
           "SPLHSVYVDQWDWERVMGDGERQFSTLKSTVEAIWAGIKATEAAVSEEFGLAPFLPDQIHFVHSQELLSRYPDLDAKGRERAIAKDLGAVFLVGIGGKLSDGHRHD"
           "VRAPDYDDWUAVNA")
    ids = tok.encode(seq)
    assert tok.decode(ids) == seq.replace("U", "X")  # selenocysteine is not one of the 20
    assert tok.encode("acdB") == [0, 1, 2, 20]  # lower case read as upper, B (Asx) -> X
    assert tok.decode([0, 1, tok.eos_id, 2]) == "AC"
    assert saved(tok) == tok
    with pytest.raises(TextDataError, match=r"position 3: '\*' is not an amino-acid letter"):
        tok.encode("MKT*")


# -- BPE -----------------------------------------------------------------------------------------

def test_bpe_round_trip_unseen_text_and_save():
    tok = BPETokenizer.train(CORPUS, vocab_size=300)
    assert 258 < tok.vocab_size <= 300 and (tok.pad_id, tok.eos_id) == (0, 1)
    for text in ("Speak, speak.", "naïve café — 東京 🙂\n\ttabs  and  spaces", "\x01"):
        ids = tok.encode(text)
        assert max(ids) < tok.vocab_size and tok.decode(ids) == text
    ids = tok.encode("hear me speak")
    assert len(ids) < len("hear me speak")  # merges were learned
    assert tok.decode([*ids, tok.eos_id, *ids]) == "hear me speak" and tok.decode([tok.pad_id, *ids]) == "hear me speak"
    again = saved(tok)
    assert again == tok and again.encode("Let us kill him") == tok.encode("Let us kill him")
    assert len(tok.token_names()) == tok.vocab_size


def test_bpe_training_is_deterministic():
    a = BPETokenizer.train(CORPUS, vocab_size=320)
    b = BPETokenizer.train(list(CORPUS), vocab_size=320)
    assert a.to_dict() == b.to_dict()
    c = BPETokenizer.train(CORPUS[:2] * 10, vocab_size=320)
    assert c.to_dict() != a.to_dict()


def test_bpe_errors():
    with pytest.raises(TextDataError, match="too small"):
        BPETokenizer.train(CORPUS, vocab_size=100)
    with pytest.raises(TextDataError, match="unpaired surrogate"):
        BPETokenizer.train(CORPUS, vocab_size=300).encode("a\ud800b")
    with pytest.raises(TextDataError, match="cannot read the saved tokenizer"):
        tokenizer_from_dict({"kind": "bpe", "json": "{not json"})


# -- saved descriptions --------------------------------------------------------------------------

def test_tokenizer_from_dict_errors():
    with pytest.raises(TextDataError, match="unknown tokenizer kind 'word'; known kinds: char, smiles, amino, bpe"):
        tokenizer_from_dict({"kind": "word"})
    with pytest.raises(TextDataError, match="needs 'chars'"):
        tokenizer_from_dict({"kind": "char"})
    with pytest.raises(TextDataError, match="must be a dict"):
        tokenizer_from_dict(["char"])
