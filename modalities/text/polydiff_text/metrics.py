"""Metrics of generated token sequences.

- :func:`unigram_entropy`: the entropy (nats) of each sample's own token distribution, averaged
  over samples: the guard against degenerate, repetitive text that a low generative
  perplexity alone would reward (FHS and ReMDM report it next to generative perplexity).
- :func:`smiles_metrics`: validity, uniqueness and novelty of SMILES strings as MOSES defines
  them: valid = parsed by RDKit into a non-empty molecule; uniqueness = distinct canonical
  SMILES among the valid ones; novelty = the share of those distinct valid molecules that are
  absent from the training set.
- :func:`generative_perplexity`: the perplexity of the samples under an autoregressive model
  (the in-project :class:`~polydiff_text.models.ARLM`), ``exp`` of the mean NLL per token.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = ["canonical_smiles", "generative_perplexity", "smiles_metrics", "unigram_entropy"]


def unigram_entropy(token_lists: Iterable[Sequence[int]]) -> float:
    """Mean over samples of ``-sum_v p_v log p_v`` (nats), ``p`` the sample's token frequencies
    (empty samples count as 0)."""
    values = []
    for i, ids in enumerate(token_lists):
        if isinstance(ids, (Tensor, np.ndarray)):  # elements of a tensor hash by identity: count their values
            ids = ids.tolist()
        if isinstance(ids, str):
            ids = list(ids)
        bad = next((v for v in ids if not isinstance(v, (int, str, np.integer))), None)
        if bad is not None:
            raise TypeError(f"unigram_entropy: sample {i} holds {bad!r} ({type(bad).__name__}); tokens are integer "
                            f"ids or characters")
        counts = Counter(ids)
        n = sum(counts.values())
        values.append(-sum(c / n * math.log(c / n) for c in counts.values()) if n else 0.0)
    if not values:
        raise ValueError("unigram_entropy needs at least one sample")
    return float(sum(values) / len(values))


def canonical_smiles(smiles: str) -> str | None:
    """RDKit's canonical SMILES, or None when the string does not parse into a non-empty molecule."""
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")
    mol = Chem.MolFromSmiles(smiles) if smiles.strip() else None
    if mol is None or mol.GetNumAtoms() == 0:
        return None
    return Chem.MolToSmiles(mol)


def smiles_metrics(samples: Sequence[str], training: Iterable[str] | None = None) -> dict[str, float]:
    """``validity`` (valid / all), ``uniqueness`` (distinct valid / valid) and, with the training
    SMILES, ``novelty`` (distinct valid not in training / distinct valid). Uniqueness and
    novelty are NaN (undefined) when no sample is valid."""
    if isinstance(samples, str) or isinstance(training, str):
        raise TypeError("smiles_metrics takes lists of SMILES strings, not one string (it would be read as one "
                        "sample per character)")
    if not samples:
        raise ValueError("smiles_metrics needs at least one sample")
    canon = [canonical_smiles(s) for s in samples]
    valid = [c for c in canon if c is not None]
    unique = set(valid)
    out = {"validity": len(valid) / len(samples), "uniqueness": len(unique) / len(valid) if valid else math.nan}
    if training is not None:
        known = {c for c in (canonical_smiles(s) for s in training) if c is not None}
        out["novelty"] = len(unique - known) / len(unique) if unique else math.nan
    return out


@torch.no_grad()
def generative_perplexity(ar_model: torch.nn.Module, tokens: Tensor, valid: Tensor, batch_size: int = 64) -> float:
    """``exp(sum NLL / sum tokens)`` of ``tokens`` (N, L) at the ``valid`` positions under the
    autoregressive model (``ar_model.nll(tokens, valid) -> (N,)`` nats). ``valid`` is a 0/1 or
    boolean (N, L) mask whose ones are a prefix of each row (padding only at the end)."""
    if valid.shape != tokens.shape:
        raise ValueError(f"generative_perplexity: valid has shape {tuple(valid.shape)}, tokens {tuple(tokens.shape)}")
    if valid.dtype != torch.bool:
        if not bool(((valid == 0) | (valid == 1)).all()):
            raise ValueError("generative_perplexity: valid must hold only 0 and 1 (or be boolean)")
        valid = valid.bool()
    if bool((valid[:, 1:] & ~valid[:, :-1]).any()):
        row = int((valid[:, 1:] & ~valid[:, :-1]).any(1).nonzero()[0])
        raise ValueError(f"generative_perplexity: row {row} of valid is not a prefix (a padded position before a "
                         f"valid one); put padding at the end of each sample")
    total, count = 0.0, 0.0
    for lo in range(0, len(tokens), batch_size):
        t, v = tokens[lo:lo + batch_size], valid[lo:lo + batch_size]
        total += float(ar_model.nll(t, v).double().sum())
        count += float(v.sum())
    if count == 0:
        raise ValueError("generative_perplexity: no valid tokens")
    return math.exp(total / count)
