"""EDLM's importance sampling against an exact answer: a context-free denoiser (the product of
the target's marginals) sampled plainly misses the target's correlations; reweighting whole
candidate sequences by an exact autoregressive energy recovers the target."""

from __future__ import annotations

import itertools

import pytest
import torch

from polydiff.plugin import Control, SampleSettings
from polydiff_text import edlm
from polydiff_text.modality import TextModality

pytestmark = pytest.mark.usefixtures("one_thread")

V, L, N = 3, 3, 3000
INFO = {"vocab_size": V, "length": L}


def _target():
    g = torch.Generator().manual_seed(11)
    seqs = torch.tensor(list(itertools.product(range(V), repeat=L)))
    return seqs, torch.softmax(2.5 * torch.randn(len(seqs), generator=g, dtype=torch.float64), 0)


def _tv(samples):
    _, probs = _target()
    emp = torch.bincount((samples * torch.tensor([V**2, V, 1])).sum(1), minlength=V**L).double() / len(samples)
    return 0.5 * float((emp - probs).abs().sum())


class ContextFree(torch.nn.Module):
    """The target's per-position marginals, whatever the context: a factorised model."""

    time_conditioning = False

    def forward(self, state, t):
        seqs, probs = _target()
        marg = torch.stack([torch.bincount(seqs[:, i], weights=probs, minlength=V) for i in range(L)])
        return {"tokens": torch.log(marg).float().expand(len(state["tokens"]), L, V)}


def exact_energy(x0, valid, log_q):
    _, probs = _target()
    idx = (x0 * torch.tensor([V**2, V, 1])).sum(1)
    return -torch.log(probs[idx]) + log_q


def _sample(monkeypatch, candidates, lo=0.0, hi=1.0):
    monkeypatch.setattr(edlm, "energy_of", lambda path: _with_info(exact_energy))
    mod = TextModality()
    settings = SampleSettings(sampler="edlm", steps=8, options={"energy": "exact", "candidates": candidates,
                                                                "window_lo": lo, "window_hi": hi})
    out = mod.sample(ContextFree(), mod.fields(INFO), mod.prior_state(N, INFO), settings, Control(),
                     seed=torch.arange(N), device=torch.device("cpu"))
    assert (out["tokens"] < V).all()
    return out["tokens"]


def _with_info(fn):
    fn.info = INFO
    return fn


def test_importance_sampling_recovers_the_correlations(monkeypatch):
    plain = _tv(_sample(monkeypatch, 1))
    weighted = _tv(_sample(monkeypatch, 32))
    assert plain > 0.15  # the factorised model alone is far from the target
    assert weighted < 0.35 * plain and weighted < 0.06


def test_the_window_limits_where_candidates_are_weighted(monkeypatch):
    outside = _tv(_sample(monkeypatch, 32, lo=0.99, hi=1.0))  # only the first step is weighted
    everywhere = _tv(_sample(monkeypatch, 32))
    assert everywhere < outside


def test_bad_options_are_clear(monkeypatch):
    with pytest.raises(ValueError, match="not a checkpoint"):
        edlm.energy_of("missing.ckpt")
    monkeypatch.setattr(edlm, "energy_of", lambda path: _with_info(exact_energy))
    with pytest.raises(ValueError, match="window_lo"):
        _sample(monkeypatch, 2, lo=0.8, hi=0.2)
    monkeypatch.setattr(edlm, "energy_of", lambda path: _bad_vocab())
    with pytest.raises(ValueError, match="vocabulary"):
        TextModality().sample(ContextFree(), TextModality().fields(INFO), TextModality().prior_state(4, INFO),
                              SampleSettings(sampler="edlm", steps=4, options={"energy": "x", "candidates": 2}),
                              Control(), seed=torch.arange(4), device=torch.device("cpu"))


def _bad_vocab():
    def e(x0, valid, log_q):
        return log_q
    e.info = {"vocab_size": V + 5}
    return e
