"""Tokenizers: text <-> token ids, one small interface for characters, SMILES, amino acids and BPE.

Every tokenizer maps text to ids ``0 .. vocab_size - 1`` and back. The masked-diffusion mask
id is ``vocab_size``: it belongs to the model's process, not to the tokenizer, so no tokenizer
ever produces it. ``pad_id`` is a real token that fills sequences shorter than the model's
length; ``eos_id`` (None for character streams) ends a document, and :meth:`Tokenizer.decode`
stops there. A tokenizer is saved as JSON (:meth:`Tokenizer.to_dict`) in the dataset's
``info``, hence in every checkpoint, and rebuilt with :func:`tokenizer_from_dict`.

Kinds:

- ``char`` (:class:`CharTokenizer`): the sorted characters of a corpus (ids in that order,
  as nanoGPT's ``shakespeare_char``: tiny Shakespeare gives 65) followed by a pad token;
- ``smiles`` (:class:`SmilesTokenizer`): atom-level SMILES tokens (bracket atoms ``[nH]``,
  ``Br``, ``Cl``, ring closures ``%nn``, dative bonds ``->``/``<-``, else single characters),
  fitted on a corpus, with pad, eos and unk (unseen tokens become unk);
- ``amino`` (:class:`AminoAcidTokenizer`): the 20 standard amino acids, ``X`` (any other
  residue letter), pad and eos; a fixed vocabulary;
- ``bpe`` (:class:`BPETokenizer`): byte-level BPE trained offline with the ``tokenizers``
  library (every byte is in the alphabet, so nothing is unknown), with pad and eos.

Unknown characters are a :class:`~polydiff_text.data.TextDataError` naming the character and
its position, except where the tokenizer has an unknown token (SMILES ``<unk>``, amino ``X``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

from .data import TextDataError

__all__ = [
    "EOS",
    "KINDS",
    "PAD",
    "UNK",
    "AminoAcidTokenizer",
    "BPETokenizer",
    "CharTokenizer",
    "SmilesTokenizer",
    "Tokenizer",
    "tokenizer_from_dict",
]

PAD, EOS, UNK = "<pad>", "<eos>", "<unk>"
AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWY"
# bracket atoms, two-letter organic-subset atoms, two-digit ring closures, dative bonds; any
# other character is a token of its own (DOTALL: no character is ever skipped)
SMILES_PATTERN = re.compile(r"\[[^\[\]]*\]|Br|Cl|%\d\d|->|<-|.", re.DOTALL)


def _ids(ids: Sequence[int] | Any) -> list[int]:
    """Plain ints from a list, a numpy array or a tensor (``tolist`` where there is one)."""
    return [int(i) for i in (ids.tolist() if hasattr(ids, "tolist") else ids)]


def _check_text(text: str) -> None:
    """Refuse text that cannot be written as UTF-8 (unpaired surrogates, e.g. from JSON ``\\ud800``)."""
    if not isinstance(text, str):
        raise TextDataError(f"expected text (str), got {type(text).__name__}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise TextDataError(f"position {err.start}: {text[err.start]!r} is not a Unicode character "
                            "(an unpaired surrogate)") from None


class Tokenizer:
    """The interface: ``vocab_size``, ``pad_id``, ``eos_id`` (or None), ``unk_id`` (or None),
    :meth:`encode`, :meth:`decode`, :meth:`token_names` and :meth:`to_dict`."""

    kind: ClassVar[str] = ""
    vocab_size: int
    pad_id: int
    eos_id: int | None = None
    unk_id: int | None = None

    def encode(self, text: str) -> list[int]:
        """The ids of ``text`` (no eos added: callers append :attr:`eos_id` to documents)."""
        raise NotImplementedError

    def decode(self, ids: Sequence[int]) -> str:
        """The text of ``ids``, up to the first eos (if the tokenizer has one), pads dropped."""
        raise NotImplementedError

    def token_names(self) -> list[str]:
        """The name of every id (``token_names()[i]`` is id ``i``), for files and plots."""
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able description that :func:`tokenizer_from_dict` turns back into this tokenizer."""
        raise NotImplementedError

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Tokenizer:
        """Rebuild from :meth:`to_dict` (the ``kind`` is checked by :func:`tokenizer_from_dict`)."""
        raise NotImplementedError

    def _content(self, ids: Sequence[int] | Any) -> list[int]:
        """``ids`` checked to be in range, cut at the first eos, pads dropped."""
        out = []
        for i in _ids(ids):
            if not 0 <= i < self.vocab_size:
                raise TextDataError(f"token id {i} is outside the {self.kind} tokenizer's vocabulary "
                                    f"0..{self.vocab_size - 1} (the mask id {self.vocab_size} is not a token)")
            if i == self.eos_id:
                break
            if i != self.pad_id:
                out.append(i)
        return out

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Tokenizer) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(json.dumps(self.to_dict(), sort_keys=True))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab_size={self.vocab_size}, pad_id={self.pad_id}, eos_id={self.eos_id})"


class _VocabTokenizer(Tokenizer):
    """A tokenizer over an explicit list of token strings: split the text into pieces, look
    each piece up. Subclasses define :meth:`_split` and the special tokens."""

    def __init__(self, tokens: Sequence[str], pad: str, eos: str | None = None, unk: str | None = None) -> None:
        self.tokens = list(tokens)
        self.index = {t: i for i, t in enumerate(self.tokens)}
        if len(self.index) != len(self.tokens):
            dup = next(t for t in self.tokens if self.tokens.count(t) > 1)
            raise TextDataError(f"{self.kind} tokenizer: the token {dup!r} appears twice in the vocabulary")
        self.vocab_size = len(self.tokens)
        self.pad_id = self.index[pad]
        self.eos_id = None if eos is None else self.index[eos]
        self.unk_id = None if unk is None else self.index[unk]

    def _split(self, text: str) -> list[str]:
        raise NotImplementedError

    def encode(self, text: str) -> list[int]:
        _check_text(text)
        out, at = [], 0
        for piece in self._split(text):
            i = self.index.get(piece, self.unk_id)
            if i is None:
                raise TextDataError(f"position {at}: {piece!r} is not in the {self.kind} tokenizer's vocabulary "
                                    f"({self.vocab_size} tokens)")
            out.append(i)
            at += len(piece)
        return out

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self.tokens[i] for i in self._content(ids))

    def token_names(self) -> list[str]:
        return list(self.tokens)


class CharTokenizer(_VocabTokenizer):
    """Characters: ids ``0 .. len(chars) - 1`` in the given (sorted) order, then a pad token;
    no eos (a character stream has no end) and no unknown token."""

    kind = "char"

    def __init__(self, chars: Iterable[str]) -> None:
        chars = list(chars)
        bad = [c for c in chars if not isinstance(c, str) or len(c) != 1]
        if bad:
            raise TextDataError(f"char tokenizer: every entry must be one character, got {bad[0]!r}")
        if not chars:
            raise TextDataError("char tokenizer: no characters")
        self.chars = "".join(chars)
        super().__init__([*chars, PAD], PAD)

    @classmethod
    def fit(cls, texts: str | Iterable[str]) -> CharTokenizer:
        """The sorted set of the characters of ``texts`` (one string or several)."""
        seen: set[str] = set()
        for t in [texts] if isinstance(texts, str) else texts:
            _check_text(t)
            seen.update(t)
        if not seen:
            raise TextDataError("char tokenizer: no characters to fit on (empty texts)")
        return cls(sorted(seen))

    def _split(self, text: str) -> list[str]:
        return list(text)

    def encode(self, text: str) -> list[int]:
        _check_text(text)
        index = self.index
        try:
            return [index[c] for c in text]  # the fast path (a 1 MB stream)
        except KeyError:
            at = next(k for k, c in enumerate(text) if c not in index)
            raise TextDataError(f"position {at}: the character {text[at]!r} is not in the char tokenizer's "
                                f"vocabulary ({len(self.chars)} characters)") from None

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "chars": self.chars}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CharTokenizer:
        return cls(_field(d, "chars", str))


class SmilesTokenizer(_VocabTokenizer):
    """Atom-level SMILES tokens (see :data:`SMILES_PATTERN`): ``<pad>`` = 0, ``<eos>`` = 1,
    ``<unk>`` = 2, then the fitted tokens in sorted order. Tokens never seen in fitting
    become ``<unk>``."""

    kind = "smiles"

    def __init__(self, tokens: Iterable[str]) -> None:
        tokens = list(tokens)
        bad = [t for t in tokens if not isinstance(t, str) or t in (PAD, EOS, UNK) or self.split(t) != [t]]
        if bad:
            raise TextDataError(f"smiles tokenizer: {bad[0]!r} is not one SMILES token")
        self.symbols = tokens
        super().__init__([PAD, EOS, UNK, *tokens], PAD, EOS, UNK)

    @staticmethod
    def split(smiles: str) -> list[str]:
        """The tokens of one SMILES string (their concatenation is the string)."""
        return SMILES_PATTERN.findall(smiles)

    @classmethod
    def fit(cls, smiles: Iterable[str]) -> SmilesTokenizer:
        """The sorted set of the tokens of ``smiles``."""
        seen: set[str] = set()
        for s in smiles:
            _check_text(s)
            seen.update(cls.split(s))
        if not seen:
            raise TextDataError("smiles tokenizer: no tokens to fit on (empty SMILES)")
        return cls(sorted(seen))

    def _split(self, text: str) -> list[str]:
        return self.split(text)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "tokens": list(self.symbols)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SmilesTokenizer:
        tokens = _field(d, "tokens", list)
        return cls(tokens)


class AminoAcidTokenizer(_VocabTokenizer):
    """Protein sequences: the 20 standard amino acids (ids 0-19, alphabetical one-letter codes),
    ``X`` = 20 for any other residue letter (B, Z, U, O, J; lower case is upper-cased),
    ``<pad>`` = 21, ``<eos>`` = 22. Characters that are not letters (digits, ``*``, ``-``,
    spaces) are an error: they are not residues."""

    kind = "amino"

    def __init__(self) -> None:
        super().__init__([*AMINO_ACIDS, "X", PAD, EOS], PAD, EOS, "X")

    def _split(self, text: str) -> list[str]:
        return list(text)

    def encode(self, text: str) -> list[int]:
        _check_text(text)
        out = []
        for at, c in enumerate(text):
            if not (c.isascii() and c.isalpha()):
                raise TextDataError(f"position {at}: {c!r} is not an amino-acid letter")
            out.append(self.index.get(c.upper(), self.unk_id))
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AminoAcidTokenizer:
        return cls()


class BPETokenizer(Tokenizer):
    """Byte-level BPE from the ``tokenizers`` library: ``<pad>`` = 0, ``<eos>`` = 1, then the 256
    byte symbols and the learned merges. Every text encodes (no unknown token is needed);
    saved as the library's own JSON string."""

    kind = "bpe"
    MIN_VOCAB = 258  # the two specials and the 256 bytes

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.vocab_size = tokenizer.get_vocab_size()
        pad, eos = tokenizer.token_to_id(PAD), tokenizer.token_to_id(EOS)
        if pad is None or eos is None:
            raise TextDataError(f"bpe tokenizer: the vocabulary has no {PAD} or {EOS} token")
        self.pad_id, self.eos_id = pad, eos

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 512, min_frequency: int = 2) -> BPETokenizer:
        """Train on ``texts`` (deterministic: the same corpus gives the same vocabulary) up to
        ``vocab_size`` ids (at least 258: pad, eos and the 256 bytes)."""
        from tokenizers import Tokenizer as HFTokenizer
        from tokenizers import decoders, models, pre_tokenizers, trainers

        if int(vocab_size) < cls.MIN_VOCAB:
            raise TextDataError(f"bpe tokenizer: vocab_size={vocab_size} is too small; byte-level BPE needs at "
                                f"least {cls.MIN_VOCAB} (pad, eos and the 256 bytes)")
        texts = list(texts)
        for t in texts:
            _check_text(t)
        if not any(texts):
            raise TextDataError("bpe tokenizer: no text to train on")
        tok = HFTokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=int(vocab_size), min_frequency=min_frequency,
                                      special_tokens=[PAD, EOS], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                      show_progress=False)
        tok.train_from_iterator(texts, trainer)
        return cls(tok)

    def encode(self, text: str) -> list[int]:
        _check_text(text)
        return list(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(self._content(ids), skip_special_tokens=False)

    def token_names(self) -> list[str]:
        return [self.tokenizer.id_to_token(i) for i in range(self.vocab_size)]

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "json": self.tokenizer.to_str()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BPETokenizer:
        from tokenizers import Tokenizer as HFTokenizer

        try:
            tok = HFTokenizer.from_str(_field(d, "json", str))
        except Exception as err:  # the library raises its own Exception type for bad JSON
            raise TextDataError(f"bpe tokenizer: cannot read the saved tokenizer ({err})") from None
        return cls(tok)


KINDS: dict[str, type[Tokenizer]] = {c.kind: c for c in (CharTokenizer, SmilesTokenizer, AminoAcidTokenizer,
                                                         BPETokenizer)}


def _field(d: dict[str, Any], key: str, kind: type) -> Any:
    """``d[key]`` checked to be a ``kind`` (a clear error for a damaged saved tokenizer)."""
    value = d.get(key)
    if not isinstance(value, kind):
        raise TextDataError(f"{d.get('kind')} tokenizer: the saved description needs {key!r} "
                            f"({kind.__name__}), got {type(value).__name__}")
    return value


def tokenizer_from_dict(d: dict[str, Any]) -> Tokenizer:
    """The tokenizer described by ``d`` (from :meth:`Tokenizer.to_dict`, e.g. ``info["tokenizer"]``
    of a checkpoint)."""
    if not isinstance(d, dict):
        raise TextDataError(f"a tokenizer description must be a dict, got {type(d).__name__}")
    kind = d.get("kind")
    if kind not in KINDS:
        raise TextDataError(f"unknown tokenizer kind {kind!r}; known kinds: {', '.join(KINDS)}")
    return KINDS[kind].from_dict(d)
