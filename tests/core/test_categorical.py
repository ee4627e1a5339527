"""Categorical processes and samplers against exact distributions over short sequences."""

import itertools
import math

import pytest
import torch

import polydiff as pd
from polydiff.random import Noise, sample_categorical, uniform

V, L = 3, 3


def _target():
    """A correlated joint distribution over V^L sequences (so denoising must use context)."""
    g = torch.Generator().manual_seed(3)
    seqs = torch.tensor(list(itertools.product(range(V), repeat=L)))
    logits = 2.0 * torch.randn(len(seqs), generator=g, dtype=torch.float64)
    return seqs, torch.softmax(logits, 0)


def _exact_model(process):
    """p(x0_i | x_t) by enumeration: the posterior over whole sequences given the noisy one."""
    seqs, probs = _target()

    def model(x, t):
        # likelihood of x_t given each clean sequence, up to factors independent of x0
        a = process.alpha(t.double()).reshape(-1, 1, 1)
        xt = x[:, None, :]
        s = seqs[None]
        if isinstance(process, pd.Absorbing):
            masked = xt == process.mask_id
            lik = torch.where(masked, 1 - a, torch.where(xt == s, a, torch.zeros_like(a)))
        else:
            lik = torch.where(xt == s, a + (1 - a) / V, (1 - a) / V)
        post = probs[None] * lik.prod(-1)
        post = post / post.sum(1, keepdim=True)
        onehot = torch.nn.functional.one_hot(seqs, V).double()  # (S, L, V)
        p0 = torch.einsum("bs,slv->blv", post, onehot)
        return torch.log(p0.clamp_min(1e-30)).float()

    return model


def _tv(samples):
    _, probs = _target()
    idx = (samples * torch.tensor([V**2, V, 1])).sum(1)
    emp = torch.bincount(idx, minlength=V**L).double() / len(samples)
    return 0.5 * float((emp - probs).abs().sum())


N = 6000


def _noise_floor():
    seqs, probs = _target()
    draws = torch.multinomial(probs, N, replacement=True, generator=torch.Generator().manual_seed(0))
    return _tv(seqs[draws])


@pytest.mark.parametrize("categorical,steps,slack", [("ancestral", 200, 1.5), ("tau_leaping", 200, 2.0)])
@pytest.mark.parametrize("kind", ["absorbing", "uniform"])
def test_discrete_samplers_reach_the_joint_target(kind, categorical, steps, slack):
    process = pd.Absorbing(V) if kind == "absorbing" else pd.Uniform(V)
    model = _exact_model(process)
    out = pd.sample(lambda s, t: {"x": model(s["x"], t)}, {"x": pd.FieldSpec(process)}, {"x": (N, L)},
                    steps=steps, categorical=categorical, seed=0, t_min=1e-3 if kind == "uniform" else 0.0)
    floor = _noise_floor()
    assert _tv(out["x"]) < slack * floor + 0.01, (kind, categorical, _tv(out["x"]), floor)


def test_a_wrong_model_is_detected():
    """The TV check can fail: a model ignoring context misses the correlations."""
    process = pd.Absorbing(V)
    seqs, probs = _target()
    marg = torch.stack([torch.bincount(seqs[:, i], weights=probs, minlength=V) for i in range(L)])

    def iid(s, t):
        return {"x": torch.log(marg).float().expand(s["x"].shape[0], L, V)}

    out = pd.sample(iid, {"x": pd.FieldSpec(process)}, {"x": (N, L)}, steps=200, seed=0, t_min=0.0)
    assert _tv(out["x"]) > 3 * _noise_floor()


def test_first_hitting_is_exact_and_uses_one_call_per_token():
    process = pd.Absorbing(V)
    model = _exact_model(process)
    calls = []

    def counted(x, t):
        calls.append(1)
        return model(x, t)

    x = pd.first_hitting(counted, process, (N, L), seed=1)
    assert len(calls) == L
    assert _tv(x) < 1.5 * _noise_floor() + 0.01


def test_first_hitting_infills_given_tokens():
    process = pd.Absorbing(V)
    start = torch.full((50, L), process.mask_id)
    start[:, 1] = 2
    x = pd.first_hitting(_exact_model(process), process, (50, L), seed=0, x=start)
    assert torch.all(x[:, 1] == 2) and torch.all(x != process.mask_id)


def test_float64_draws_keep_the_entropy_of_a_long_tailed_target():
    """E[-log p(x)] over draws is an unbiased estimate of the entropy; fp64 sampling matches it."""
    vocab, n = 20000, 200_000
    p = 1.0 / torch.arange(1, vocab + 1, dtype=torch.float64) ** 1.1
    p = p / p.sum()
    entropy = float(-(p * p.log()).sum())
    u = uniform(torch.arange(n), 0, (), torch.float64)
    x = sample_categorical(p, u)
    nll = -p.log()[x]
    se = float(nll.std()) / math.sqrt(n)
    assert abs(float(nll.mean()) - entropy) < 4 * se


def test_posterior_rows_are_distributions():
    for process in (pd.Absorbing(4), pd.Uniform(4)):
        g = torch.Generator().manual_seed(0)
        x = torch.randint(0, process.n_states, (5, 7), generator=g)
        p0 = torch.softmax(torch.randn(5, 7, 4, generator=g, dtype=torch.float64), -1)
        probs = process.posterior_probs(x, p0, torch.full((5,), 0.7), torch.full((5,), 0.4))
        assert torch.allclose(probs.sum(-1), torch.ones(5, 7, dtype=torch.float64))
        assert torch.all(probs >= 0)


def test_counter_based_noise_is_batch_independent_and_normal():
    a = Noise(3, seed=7).randn((1000,))
    b = Noise(8, seed=7).randn((1000,))
    assert torch.equal(a, b[:3])
    z = Noise(4, seed=1).randn((50_000,))
    assert abs(float(z.mean())) < 0.02 and abs(float(z.std()) - 1) < 0.02
    # successive draws and different samples are uncorrelated
    n = Noise(2, seed=1)
    z1, z2 = n.randn((50_000,)), n.randn((50_000,))
    assert abs(float((z1 * z2).mean())) < 0.02 and abs(float((z1[0] * z1[1]).mean())) < 0.02
    # a Kolmogorov-Smirnov distance to the normal CDF
    s, _ = torch.sort(z.flatten().double())
    cdf = 0.5 * (1 + torch.erf(s / math.sqrt(2)))
    ks = float((cdf - torch.arange(1, len(s) + 1, dtype=torch.float64) / len(s)).abs().max())
    assert ks < 1.63 / math.sqrt(len(s)) * 1.5


def test_seed_and_generator_are_exclusive():
    with pytest.raises(ValueError, match="not both"):
        Noise(2, seed=1, generator=torch.Generator())


def test_first_hitting_float32_draws_truncate_the_gumbel_tail():
    """precision='float32' draws by Gumbel-max with float32 uniforms (MDLM's released sampler):
    the noise is cut off near 16.6, so a token 19 nats behind can never win, while the exact
    float64 Gumbel of the same uniform (about 27.6) lets it."""
    from polydiff.samplers.categorical import _gumbel_max_float32

    logits = torch.tensor([[[0.0, -19.0]]])
    u = torch.tensor([[[0.9, 1 - 1e-12]]], dtype=torch.float64)  # the second token's uniform is nearly 1
    assert int(_gumbel_max_float32(logits, u)) == 0
    exact = torch.argmax(torch.log_softmax(logits.double(), -1) - torch.log(-torch.log(u)), -1)
    assert int(exact) == 1
    # on a moderate distribution both precisions sample the same law
    process = pd.Absorbing(V)
    x = pd.first_hitting(_exact_model(process), process, (N, L), seed=2, precision="float32")
    assert _tv(x) < 1.5 * _noise_floor() + 0.01
    with pytest.raises(ValueError, match="precision"):
        pd.first_hitting(_exact_model(process), process, (2, L), seed=0, precision="half")


@pytest.mark.parametrize("sampler,steps", [("first_hitting", L), ("ancestral", 100)])
def test_observed_tokens_give_the_exact_conditional(sampler, steps):
    """controlled_sample(observed=...) on a masked state: the given tokens start unmasked (masked
    diffusion never re-masks), so the other positions follow p(x | x_1 = 2) exactly."""
    from polydiff.guidance import Observation, index_mask
    from polydiff.steering import controlled_sample

    process = pd.Absorbing(V)
    model = _exact_model(process)
    obs = Observation({"x": torch.full((L,), 2)}, {"x": index_mask((L,), 0, [1])})
    n = 4000
    out = controlled_sample(lambda s, t: {"x": model(s["x"], t)}, {"x": pd.FieldSpec(process)}, {"x": (n, L)},
                            sampler=sampler, steps=steps, seed=0, observed=obs)["x"]
    assert torch.all(out[:, 1] == 2) and torch.all(out != process.mask_id)
    seqs, probs = _target()
    keep = seqs[:, 1] == 2
    cond = probs[keep] / probs[keep].sum()
    idx = (out * torch.tensor([V**2, V, 1])).sum(1)
    emp = torch.bincount(idx, minlength=V**L).double()[keep] / n
    tv = 0.5 * float((emp - cond).abs().sum())
    draws = torch.multinomial(cond, n, replacement=True, generator=torch.Generator().manual_seed(1))
    floor = 0.5 * float((torch.bincount(draws, minlength=len(cond)).double() / n - cond).abs().sum())
    assert tv < 2.0 * floor + 0.01
