"""Sampling of the text modality against an exact answer: the first-hitting sampler and
ancestral sampling (through the caching wrapper) both reach a correlated joint distribution
over short sequences, within the sampling floor; caching changes no output and saves calls."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from polydiff.plugin import Control, SampleSettings
from polydiff_text.modality import CachedDenoiser, TextModality

pytestmark = pytest.mark.usefixtures("one_thread")

V, L, N = 3, 3, 4000
INFO = {"vocab_size": V, "length": L}


def _target() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    seqs = torch.tensor(list(itertools.product(range(V), repeat=L)))
    return seqs, torch.softmax(2.0 * torch.randn(len(seqs), generator=g, dtype=torch.float64), 0)


class ExactDenoiser(nn.Module):
    """p(x0 | x_t) by enumeration; for absorbing noise it does not depend on t (every clean
    sequence that agrees with the unmasked tokens has the same likelihood)."""

    time_conditioning = False

    def __init__(self) -> None:
        super().__init__()
        self.seqs, self.probs = _target()
        self.rows = 0

    def forward(self, state, t):
        x = state["tokens"]
        self.rows += len(x)
        agree = ((x[:, None, :] == V) | (x[:, None, :] == self.seqs[None])).all(-1)  # (B, S)
        post = self.probs[None] * agree
        post = post / post.sum(1, keepdim=True)
        p0 = torch.einsum("bs,slv->blv", post, nn.functional.one_hot(self.seqs, V).double())
        return {"tokens": torch.log(p0.clamp_min(1e-30)).float()}


def _tv(samples: torch.Tensor) -> float:
    _, probs = _target()
    idx = (samples * torch.tensor([V**2, V, 1])).sum(1)
    emp = torch.bincount(idx, minlength=V**L).double() / len(samples)
    return 0.5 * float((emp - probs).abs().sum())


def _floor() -> float:
    seqs, probs = _target()
    return _tv(seqs[torch.multinomial(probs, N, replacement=True, generator=torch.Generator().manual_seed(0))])


@pytest.mark.parametrize("sampler,steps", [("first_hitting", L), ("ancestral", 100)])
def test_text_sampling_reaches_the_exact_joint(sampler, steps):
    mod = TextModality()
    fields = mod.fields(INFO)
    spec = mod.prior_state(N, INFO)
    net = ExactDenoiser()
    out = mod.sample(net, fields, spec, SampleSettings(sampler=sampler, steps=steps), Control(),
                     seed=torch.arange(N), device=torch.device("cpu"))
    assert (out["tokens"] < V).all()
    assert _tv(out["tokens"]) < 1.5 * _floor() + 0.01
    if sampler == "first_hitting":
        assert net.rows == N * L  # one network call per token
    else:
        assert net.rows < N * steps / 4  # the cache skipped the calls on unchanged sequences


def test_first_hitting_skips_finished_sequences_with_the_same_output(monkeypatch):
    """Shorter sequences (padding outside ``valid``) finish early; through the cache the network stops seeing them
    (one call past their last token), and the samples are those of the uncached sampler."""
    import polydiff_text.modality as text_modality

    mod = TextModality()
    n = 300
    lengths = torch.arange(n) % L + 1
    spec = {**mod.prior_state(n, INFO), "valid": torch.arange(L)[None, :] < lengths[:, None]}
    out, rows = {}, {}
    for cached in (True, False):
        if not cached:
            monkeypatch.setattr(text_modality, "_CACHED_SAMPLERS", ("ancestral", "tau_leaping"))
        net = ExactDenoiser()
        out[cached] = mod.sample(net, mod.fields(INFO), spec, SampleSettings(sampler="first_hitting"), Control(),
                                 seed=torch.arange(n), device=torch.device("cpu"))["tokens"]
        rows[cached] = net.rows
    assert torch.equal(out[True], out[False])
    assert (out[True][spec["valid"]] < V).all()  # every valid position revealed
    assert rows[False] == n * L and rows[True] == int((lengths + 1).clamp(max=L).sum())


def test_cached_denoiser_equals_the_network():
    net = ExactDenoiser()
    cached = CachedDenoiser(ExactDenoiser())
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, V + 1, (16, L), generator=g)
    t = torch.rand(16, generator=g)
    for _ in range(4):
        valid = torch.ones_like(x, dtype=torch.bool)
        a = net({"tokens": x, "valid": valid}, t)["tokens"]
        b = cached({"tokens": x, "valid": valid}, t)["tokens"]
        assert torch.equal(a, b)
        x = x.clone()
        x[torch.randint(0, 16, (3,), generator=g), torch.randint(0, L, (3,), generator=g)] = V
    assert cached.calls < 4 * 16


class _Logits(nn.Module):
    """A small time-independent network (embedding, linear head)."""

    time_conditioning = False

    def __init__(self) -> None:
        super().__init__()
        self.emb, self.head = nn.Embedding(V + 1, 8), nn.Linear(8, V + 1)

    def forward(self, state, t):
        return {"tokens": self.head(torch.tanh(self.emb(state["tokens"])))}


def test_compiled_cache_traces_the_network_once_not_each_call(monkeypatch):
    """Under torch.compile only the network call is traced, with a symbolic batch: the graphs
    stop growing after the first few sizes. Tracing the cache's bookkeeping once recompiled at
    every call until dynamo's limit, then ran eagerly (slower than no compile on a GPU)."""
    from torch._dynamo.utils import counters

    torch.manual_seed(0)
    net = _Logits()
    torch._dynamo.reset()
    counters.clear()
    monkeypatch.setattr(torch._dynamo.config, "fail_on_recompile_limit_hit", True)
    cached = torch.compile(CachedDenoiser(net), dynamic=None)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, V + 1, (32, L), generator=g)
    t = torch.rand(32, generator=g)
    graphs = []
    for i in range(16):
        state = {"tokens": x, "valid": torch.ones_like(x, dtype=torch.bool)}
        torch.testing.assert_close(cached(state, t)["tokens"], net(state, t)["tokens"])
        graphs.append(counters["stats"]["unique_graphs"])
        x = x.clone()
        x[torch.randint(0, 32, (i % 7 + 1,), generator=g), torch.randint(0, L, (i % 7 + 1,), generator=g)] = V
    assert graphs[-1] == graphs[7] <= 8, graphs
    torch._dynamo.reset()


def test_cache_refuses_a_time_conditioned_network():
    net = ExactDenoiser()
    net.time_conditioning = True
    with pytest.raises(ValueError, match="time_conditioning"):
        CachedDenoiser(net)
