"""Tests of the text modality's networks: the rotary transformer, the masked diffusion LM (SUBS
outputs, padding, training through the core's masked ELBO, first-hitting sampling) and the
autoregressive LM (causality, exact likelihood, sampling, the ``autoregressive`` objective)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from polydiff.plugin import (
    OBJECTIVES,
    Absorbing,
    FieldSpec,
    Masked,
    Noise,
    categorical_elbo,
    diffusion_loss,
    first_hitting,
    masked_elbo,
)
from polydiff_text.models import (
    ARLM,
    NEG,
    AutoregressiveObjective,
    MaskedDiffusionLM,
    Rotary,
    Transformer,
    apply_rotary,
    autoregressive,
    count_parameters,
    rotary_angles,
)

pytestmark = pytest.mark.usefixtures("one_thread")

V, L = 7, 12
SMALL = {"dim": 32, "depth": 2, "heads": 2}


def _fields(vocab: int = V) -> dict[str, FieldSpec]:
    return {"tokens": FieldSpec(Absorbing(vocab, schedule="linear"), Masked("valid"))}


def _mdlm(seed: int = 0, **kw) -> MaskedDiffusionLM:
    torch.manual_seed(seed)
    return MaskedDiffusionLM(V, L, **{**SMALL, **kw}).eval()


def _arlm(seed: int = 0, vocab: int = V, length: int = L, sharpen: float = 0.0, **kw) -> ARLM:
    """A small ARLM; ``sharpen > 0`` replaces the head by N(0, sharpen^2) weights so that the
    untrained model's distributions are far from uniform (a discriminating test target)."""
    torch.manual_seed(seed)
    net = ARLM(vocab, length, **{**SMALL, **kw}).eval()
    if sharpen:
        with torch.no_grad():
            net.backbone.head.weight.normal_(0, sharpen)
            net.backbone.head.bias.normal_(0, sharpen)
    return net


def _noisy(seed: int = 0, batch: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokens with about half the positions masked, and a valid mask with padding at the end of
    sample 1 and in the middle of sample 2."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, V, (batch, L), generator=g)
    tokens = torch.where(torch.rand(batch, L, generator=g) < 0.5, torch.full_like(tokens, V), tokens)
    valid = torch.ones(batch, L, dtype=torch.bool)
    valid[1, 8:] = False
    valid[2, 3:6] = False
    return tokens, valid


# ------------------------------------------------------------------------------ rotary embeddings
def test_rotary_scores_depend_only_on_relative_position():
    g = torch.Generator().manual_seed(0)
    d = 16
    q, k = torch.randn(d, generator=g, dtype=torch.float64), torch.randn(d, generator=g, dtype=torch.float64)

    def score(m: int, n: int) -> float:
        cq, sq = rotary_angles(torch.tensor([m]), d)
        ck, sk = rotary_angles(torch.tensor([n]), d)
        return float(apply_rotary(q[None], cq.double(), sq.double()) @ apply_rotary(k[None], ck.double(),
                                                                                    sk.double())[0])

    for m, n in [(0, 3), (5, 2), (7, 7), (1, 11)]:
        for shift in (1, 4, 100, 1000):
            assert score(m + shift, n + shift) == pytest.approx(score(m, n), abs=1e-4)
    # ... and on the relative position: different offsets give different scores
    assert abs(score(0, 1) - score(0, 5)) > 1e-3
    # position 0 is the identity; rotations keep norms
    c0, s0 = rotary_angles(torch.tensor([0]), d)
    torch.testing.assert_close(apply_rotary(q[None].float(), c0, s0)[0], q.float())
    c, s = rotary_angles(torch.arange(9), d)
    rot = apply_rotary(q.float().expand(9, d), c, s)
    torch.testing.assert_close(rot.norm(dim=-1), q.float().norm().expand(9))


def test_rotary_tables_extend_beyond_their_length():
    rot = Rotary(8, length=4)
    cos, sin = rot(2, 6)  # positions 2..7, past the cached 0..3
    ref_cos, ref_sin = rotary_angles(torch.arange(2, 8), 8)
    torch.testing.assert_close(cos, ref_cos)
    torch.testing.assert_close(sin, ref_sin)
    assert rot.state_dict() == {}  # tables are not weights
    with pytest.raises(ValueError, match="even"):
        rotary_angles(torch.arange(3), 5)


# ------------------------------------------------------------------------------ the backbone
def test_backbone_options_and_errors():
    net = Transformer(V, L, dim=24, depth=3, heads=3, mlp_ratio=2, dropout=0.1)
    assert len(net.blocks) == 3 and net.blocks[0].mlp[0].out_features == 48
    assert net.embed.num_embeddings == V + 1 and net.head.out_features == V
    out = net(torch.randint(0, V + 1, (2, 5)))
    assert out.shape == (2, 5, V)
    with pytest.raises(ValueError, match="multiple of heads"):
        Transformer(V, L, dim=30, heads=4)
    with pytest.raises(ValueError, match="even head dimension"):
        Transformer(V, L, dim=12, heads=4)
    with pytest.raises(ValueError, match="dropout"):
        Transformer(V, L, dropout=1.0)


# ------------------------------------------------------------------------------ masked diffusion LM
@pytest.mark.parametrize("time_conditioning", [False, True])
def test_mdlm_shapes_and_subs_invariants(time_conditioning):
    net = _mdlm(time_conditioning=time_conditioning)
    tokens, valid = _noisy()
    out = net({"tokens": tokens, "valid": valid}, torch.rand(3))
    assert set(out) == {"tokens"}
    logp = out["tokens"]
    assert logp.shape == (3, L, V) and logp.dtype == torch.float32  # V clean tokens: no mask entry
    assert torch.isfinite(logp).all()
    carried = tokens != V
    probs = torch.softmax(logp, dim=-1)
    # unmasked positions carry their token over: probability 1, exactly NEG elsewhere
    p_tok = probs.gather(-1, tokens.clamp_max(V - 1)[..., None])[..., 0]
    assert torch.all(p_tok[carried] == 1.0)
    onehot = torch.nn.functional.one_hot(tokens.clamp_max(V - 1), V).bool()
    assert torch.all(logp.gather(-1, tokens.clamp_max(V - 1)[..., None])[..., 0][carried] == 0)
    assert torch.all(logp[carried[..., None].expand_as(logp) & ~onehot] == NEG)
    # masked positions: normalised log-probabilities of a real distribution
    torch.testing.assert_close(torch.logsumexp(logp[~carried], dim=-1), torch.zeros(int((~carried).sum())))
    assert probs[~carried].min() > 0 and probs[~carried].max() < 1


def test_mdlm_time_conditioning():
    tokens, valid = _noisy()
    state = {"tokens": tokens, "valid": valid}
    plain = _mdlm()
    early, late = plain(state, torch.full((3,), 0.1))["tokens"], plain(state, torch.full((3,), 0.9))["tokens"]
    torch.testing.assert_close(early, late)
    torch.testing.assert_close(plain(state)["tokens"], plain(state, 0.5)["tokens"])  # t is not needed
    timed = _mdlm(time_conditioning=True)
    with torch.no_grad():  # move the zero-initialised adaLN layers away from the identity
        for block in timed.backbone.blocks:
            block.ada[1].weight.normal_(0, 0.5)
    a, b = timed(state, torch.full((3,), 0.1))["tokens"], timed(state, torch.full((3,), 0.9))["tokens"]
    masked = tokens == V
    assert (a - b)[masked].abs().max() > 1e-3
    torch.testing.assert_close(a[~masked], b[~masked])  # carried tokens do not depend on t
    torch.testing.assert_close(timed(state, 0.1)["tokens"], a)  # a scalar time broadcasts
    with pytest.raises(ValueError, match="pass t"):
        timed(state)
    with pytest.raises(ValueError, match="unconditional"):
        plain(state, 0.5, {"class": torch.zeros(3)})


@pytest.mark.parametrize("time_conditioning", [False, True])
def test_mdlm_padding_does_not_affect_valid_positions(time_conditioning):
    net = _mdlm(time_conditioning=time_conditioning)
    tokens, valid = _noisy()
    t = torch.rand(3)
    ref = net({"tokens": tokens, "valid": valid}, t)["tokens"]
    g = torch.Generator().manual_seed(1)
    other = torch.where(valid, tokens, torch.randint(0, V + 1, tokens.shape, generator=g))
    assert (other != tokens).any()
    out = net({"tokens": other, "valid": valid}, t)["tokens"]
    torch.testing.assert_close(out[valid], ref[valid], atol=1e-5, rtol=1e-5)
    # ... whereas without the mask, padding does change them (the test can fail)
    free = net({"tokens": other}, t)["tokens"]
    masked_valid = valid & (tokens == V)
    assert (free[masked_valid] - ref[masked_valid]).abs().max() > 1e-4
    # a sequence with no valid position at all gives finite outputs (no NaN from an empty softmax)
    none = torch.zeros_like(valid)
    assert torch.isfinite(net({"tokens": tokens, "valid": none}, t)["tokens"]).all()
    # a float mask is read as mask > 0
    torch.testing.assert_close(net({"tokens": tokens, "valid": valid.float()}, t)["tokens"], ref)


def test_mdlm_through_the_core_loss_has_no_nan():
    """The carried-over one-hots (NEG logits) are finite in the core's masked ELBO, its
    gradients and the categorical ELBO, also when nothing is masked."""
    net = _mdlm().train()
    fields = _fields()
    g = torch.Generator().manual_seed(0)
    x0 = torch.randint(0, V, (4, L), generator=g)
    valid = torch.ones(4, L, dtype=torch.bool)
    valid[0, 6:] = False
    for t in (torch.full((4,), 1e-4, dtype=torch.float64), torch.full((4,), 1.0, dtype=torch.float64), None):
        net.zero_grad()
        loss, _ = diffusion_loss(net, fields, {"tokens": x0, "valid": valid}, Noise(4, seed=1), t=t)
        loss.backward()
        assert torch.isfinite(loss)
        assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)
    # nothing masked: the ELBO is exactly 0 and its gradient finite (zero)
    logits = net({"tokens": x0, "valid": valid}, torch.rand(4))["tokens"]
    per = masked_elbo(logits, x0, x0, torch.full((4,), 0.5), fields["tokens"].process, valid)
    assert torch.all(per == 0)
    res = categorical_elbo(net.eval(), fields, {"tokens": x0, "valid": valid}, steps=3)
    # each draw is a non-negative KL term; three draws may mask nothing in a short sequence (0 then)
    assert torch.isfinite(res.nll).all() and (res.nll >= 0).all() and (res.nll > 0).sum() >= 3


def test_mdlm_training_through_the_core_loss_lowers_it():
    """A few Adam steps through the core's masked ELBO on a tiny repeated data set: the three
    cyclic shifts of ``0 1 2 0 1 2 ...``. A network that ignores the unmasked context can at best
    learn the marginal (uniform over 3 of the 7 tokens), a loss of about ``log 3 / log 7 = 0.56``
    times the initial one; the bound below needs the context."""
    torch.manual_seed(0)
    n = 9
    net = MaskedDiffusionLM(V, n, dim=32, depth=1, heads=2)
    fields = _fields()
    base = torch.tensor([[(i + s) % 3 for i in range(n)] for s in range(3)])
    batch = {"tokens": base.repeat(6, 1), "valid": torch.ones(18, n, dtype=torch.bool)}

    def evaluate() -> float:
        with torch.no_grad():
            return float(diffusion_loss(net, fields, batch, Noise(18, seed=123))[0])

    before = evaluate()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    for _ in range(60):
        loss, _ = diffusion_loss(net, fields, batch, Noise(18, generator=g))
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = evaluate()
    assert after < 0.45 * before, (before, after)


def test_first_hitting_with_the_mdlm():
    net = _mdlm()
    process = _fields()["tokens"].process
    valid = torch.ones(3, L, dtype=torch.bool)
    valid[1, 7:] = False
    calls = []

    def model(tokens: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return net({"tokens": tokens, "valid": valid}, t)["tokens"]

    with torch.no_grad():
        out = first_hitting(model, process, (3, L), seed=0, valid=valid)
    assert out.shape == (3, L) and out.dtype == torch.long
    assert ((out >= 0) & (out < V)).all()  # no mask id left, padding included (token 0 there)
    assert len(calls) == L  # one token per call
    # infilling: given tokens stay
    start = torch.full((3, L), V)
    start[:, :4] = torch.tensor([1, 2, 3, 4])
    with torch.no_grad():
        filled = first_hitting(model, process, (3, L), seed=1, valid=valid, x=start)
    assert torch.equal(filled[:, :4], start[:, :4]) and (filled < V).all()


def test_parameter_counts_match():
    opts = {"dim": 48, "depth": 3, "heads": 4, "mlp_ratio": 2}
    mdlm, ar = MaskedDiffusionLM(V, L, **opts), ARLM(V, L, **opts)
    assert count_parameters(mdlm) == count_parameters(ar) > 0
    timed = MaskedDiffusionLM(V, L, time_conditioning=True, **opts)
    extra = count_parameters(timed) - count_parameters(mdlm)
    assert extra == count_parameters(timed.time) + sum(count_parameters(b.ada) for b in timed.backbone.blocks) + \
        count_parameters(timed.backbone.final_ada)
    ar.backbone.head.requires_grad_(False)
    assert count_parameters(ar, trainable_only=True) == count_parameters(ar) - (48 * V + V)


# ------------------------------------------------------------------------------ autoregressive LM
def test_arlm_shapes_and_causality():
    net = _arlm(sharpen=1.0)
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, V, (2, L), generator=g)
    ref = net(tokens)
    assert ref.shape == (2, L, V) and ref.dtype == torch.float32
    for j in (0, 5, L - 1):
        other = tokens.clone()
        other[:, j] = (other[:, j] + 1) % V
        out = net(other)
        # logits at i predict token i from tokens < i: positions <= j cannot see token j
        torch.testing.assert_close(out[:, : j + 1], ref[:, : j + 1])
        if j + 1 < L:
            assert (out[:, j + 1] - ref[:, j + 1]).abs().max() > 1e-4  # the next position does
    # position 0 is predicted from the start token alone: the same for every sequence
    torch.testing.assert_close(ref[0, 0], ref[1, 0])


def test_arlm_nll_is_a_normalised_likelihood():
    """exp(log_likelihood) sums to 1 over all sequences of length 3 (shift and causality right)."""
    net = _arlm(vocab=3, length=3, sharpen=2.0)
    seqs = torch.tensor(list(itertools.product(range(3), repeat=3)))
    with torch.no_grad():
        ll = net.log_likelihood(seqs)
    assert ll.shape == (27,) and ll.dtype == torch.float32
    assert float(torch.logsumexp(ll.double(), 0)) == pytest.approx(0.0, abs=1e-5)
    assert float(ll.max() - ll.min()) > 1.0  # far from uniform: the check discriminates
    # prefixes: with only the first two positions valid, the likelihood is the marginal of the prefix
    valid = torch.tensor([True, True, False]).expand(27, 3)
    with torch.no_grad():
        ll2 = net.log_likelihood(seqs, valid)
    marg = torch.logsumexp(ll.reshape(9, 3).double(), dim=1)
    torch.testing.assert_close(ll2.reshape(9, 3)[:, 0].double(), marg, atol=1e-5, rtol=0)
    # padding may hold the start/mask id V
    padded = seqs.clone()
    padded[:, 2] = 3
    with torch.no_grad():
        torch.testing.assert_close(net.nll(padded, valid), -ll2)


def test_arlm_trailing_padding_does_not_affect_valid_positions():
    net = _arlm(sharpen=1.0)
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, V, (2, L), generator=g)
    valid = torch.arange(L)[None] < torch.tensor([[7], [L]])
    other = torch.where(valid, tokens, torch.full_like(tokens, V))  # padding holding the start/mask id
    torch.testing.assert_close(net(other)[valid], net(tokens)[valid])
    with torch.no_grad():
        torch.testing.assert_close(net.nll(other, valid), net.nll(tokens, valid))
        assert float(net.nll(tokens, valid)[0]) < float(net.nll(tokens)[0])  # padding is not scored


def test_arlm_cache_matches_full_forward():
    net = _arlm(sharpen=1.0)
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, V, (2, L), generator=g)
    full = net(tokens)
    inputs = torch.cat([torch.full((2, 1), net.bos_id), tokens[:, :-1]], dim=1)
    cache = net.backbone.new_cache()
    first = net.backbone(inputs[:, :4], causal=True, cache=cache)  # a prefill, then one token at a time
    steps = [net.backbone(inputs[:, i:i + 1], causal=True, cache=cache) for i in range(4, L)]
    torch.testing.assert_close(torch.cat([first, *steps], dim=1), full, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="cache"):
        net.backbone(inputs[:, :1], valid=torch.ones(2, 1, dtype=torch.bool), causal=True, cache=cache)


def test_arlm_generate_matches_the_model_distribution():
    """Total variation between 6000 generated sequences of length 2 and the exact model
    probabilities, against a bound well above the sampling floor (~0.02)."""
    net = _arlm(vocab=3, length=2, sharpen=1.5)
    seqs = torch.tensor(list(itertools.product(range(3), repeat=2)))
    with torch.no_grad():
        exact = net.log_likelihood(seqs).double().exp()
    n = 6000
    out = net.generate(n, generator=torch.Generator().manual_seed(0))
    assert out.shape == (n, 2) and out.dtype == torch.long and ((out >= 0) & (out < 3)).all()
    freq = torch.bincount(out[:, 0] * 3 + out[:, 1], minlength=9).double() / n
    tv = 0.5 * float((freq - exact).abs().sum())
    uniform_tv = 0.5 * float((exact - 1 / 9).abs().sum())
    assert tv < 0.04 and uniform_tv > 0.15, (tv, uniform_tv)
    # seeded generators reproduce; temperature 0 is greedy; a prefix is kept
    again = net.generate(n, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, again)
    greedy = net.generate(2, temperature=0)
    best = int(torch.argmax(net(torch.zeros(1, 2, dtype=torch.long))[0, 0]))
    assert torch.all(greedy[:, 0] == best)
    pre = net.generate(4, length=5, prefix=torch.tensor([[2]] * 4), generator=torch.Generator().manual_seed(1))
    assert pre.shape == (4, 5) and torch.all(pre[:, 0] == 2)
    with pytest.raises(ValueError, match="temperature"):
        net.generate(1, temperature=-1.0)


def test_arlm_generate_restores_training_mode():
    net = _arlm(dropout=0.2).train()
    net.generate(2, length=3)
    assert net.training and net.backbone.blocks[0].training


# ------------------------------------------------------------------------------ the objective
class _Wrapper(nn.Module):
    """Stands in for DDP: the network is its ``module`` and is called through the wrapper."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)


def test_autoregressive_objective_on_a_batch():
    assert OBJECTIVES.get("autoregressive") is autoregressive
    objective = OBJECTIVES.get("autoregressive")(fields=_fields(), info={})
    assert objective == AutoregressiveObjective(field="tokens", mask="valid")
    net = _arlm(sharpen=1.0)
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, V, (3, L), generator=g)
    valid = torch.ones(3, L, dtype=torch.bool)
    valid[1, 5:] = False
    tokens[1, 5:] = V  # padding may hold any id
    loss, logs = objective(net, {"tokens": tokens, "valid": valid}, Noise(3, seed=0))
    expected = net.nll(tokens, valid).sum() / valid.sum()  # token-weighted mean NLL
    torch.testing.assert_close(loss, expected)
    assert set(logs) == {"tokens"} and not logs["tokens"].requires_grad
    # a wrapped network (DDP, compile) is called through its wrapper
    loss_w, _ = objective(_Wrapper(net), {"tokens": tokens, "valid": valid}, None)
    torch.testing.assert_close(loss_w, loss)
    # without a mask in the batch every position counts
    full, _ = objective(net, {"tokens": tokens.clamp_max(V - 1)}, None)
    torch.testing.assert_close(full, net.nll(tokens.clamp_max(V - 1)).sum() / tokens.numel())
    with pytest.raises(TypeError, match="ARLM"):
        objective(_mdlm(), {"tokens": tokens, "valid": valid}, None)
    with pytest.raises(KeyError, match="no field"):
        objective(net, {"x": tokens}, None)


def test_autoregressive_objective_options_and_training():
    assert autoregressive().field == "tokens"
    assert autoregressive(fields={"seq": FieldSpec(Absorbing(V))}).mask is None
    assert autoregressive(fields={"seq": FieldSpec(Absorbing(V), Masked("m"))}) == AutoregressiveObjective("seq", "m")
    two = {"a": FieldSpec(Absorbing(V)), "b": FieldSpec(Absorbing(V))}
    with pytest.raises(ValueError, match="one token field"):
        autoregressive(fields=two)
    assert autoregressive(fields=two, field="b").field == "b"
    with pytest.raises(KeyError, match="no field"):
        autoregressive(fields=two, field="c")
    # a few steps of the objective lower the loss on a repeated sequence
    torch.manual_seed(0)
    net = ARLM(V, 8, dim=32, depth=1, heads=2)
    objective = autoregressive(fields=_fields())
    batch = {"tokens": torch.tensor([[0, 1, 2, 3, 4, 5, 6, 0]]).repeat(4, 1), "valid": torch.ones(4, 8)}
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    first = None
    for _ in range(30):
        loss, _ = objective(net, batch, None)
        first = float(loss.detach()) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert first == pytest.approx(math.log(V), abs=0.1)
    assert float(objective(net, batch, None)[0].detach()) < 0.5 * first


def test_the_masked_lm_never_places_padding_at_a_valid_position():
    """Padding only fills the positions after a sequence's end: the denoiser gives it
    probability 0, so generated texts have the length drawn for them (an untrained network put
    padding at valid positions, and the decoded texts came out short or empty)."""
    import torch

    from polydiff_text.models import MaskedDiffusionLM

    torch.manual_seed(0)
    net = MaskedDiffusionLM(6, 8, dim=16, depth=1, heads=2, pad_id=5)
    tokens = torch.full((4, 8), net.mask_id)
    p = net.denoise(tokens).exp()
    assert float(p[..., 5].max()) == 0.0
    torch.testing.assert_close(p.sum(-1), torch.ones(4, 8))
    free = MaskedDiffusionLM(6, 8, dim=16, depth=1, heads=2)
    free.load_state_dict(net.state_dict())
    assert float(free.denoise(tokens).exp()[..., 5].min()) > 0  # without pad_id every token is possible


def test_samplers_never_propose_the_unknown_token():
    """SMILES ``<unk>`` stands for text the tokenizer did not know (it decodes to no SMILES): the
    denoiser samplers call gives it probability 0 at masked positions; carried-over tokens and
    the network itself (training, the ELBO) are unchanged. Amino acids' unknown token ``X`` is a
    residue and stays."""
    from polydiff_text.modality import mdlm_network, sampling_net
    from polydiff_text.tokenizers import AminoAcidTokenizer, SmilesTokenizer

    tok = SmilesTokenizer.fit(["CCO", "c1ccccc1"])
    info = {"vocab_size": tok.vocab_size, "length": 8, "pad_id": tok.pad_id, "tokenizer": tok.to_dict()}
    torch.manual_seed(0)
    net = mdlm_network(info, {}, dim=16, depth=1, heads=2)
    assert net.unk_id == tok.unk_id == tok.token_names().index("<unk>")
    amino = AminoAcidTokenizer()
    assert mdlm_network({**info, "vocab_size": amino.vocab_size, "tokenizer": amino.to_dict()}, {}, dim=16, depth=1,
                        heads=2).unk_id is None
    with torch.no_grad():
        net.backbone.head.bias[tok.unk_id] = 100.0  # a network that would place <unk> everywhere
    tokens = torch.full((3, 8), net.mask_id)
    tokens[0, 0] = tok.unk_id  # a carried-over token, even <unk>, stays
    state = {"tokens": tokens, "valid": torch.ones(3, 8, dtype=torch.bool)}
    for cache in (True, False):
        p = sampling_net(net, cache)(state, torch.full((3,), 0.5))["tokens"].exp()
        assert float(p[1:, :, tok.unk_id].max()) == 0.0 and float(p[0, 1:, tok.unk_id].max()) == 0.0
        assert float(p[0, 0, tok.unk_id]) == 1.0
        torch.testing.assert_close(p.sum(-1), torch.ones(3, 8))
    assert float(net(state)["tokens"].exp()[1:, :, tok.unk_id].min()) > 0.99
