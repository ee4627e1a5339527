"""Guidance wrappers and conditioning, with exact Gaussian-mixture models.

The exact conditional model given a component label c is that component alone; the
unconditional model is the whole mixture; the exact noisy classifier is the mixture's
responsibilities at (alpha_t, sigma_t). Every wrapper is run with Euler-Maruyama, DDIM and
DPM-Solver++(2M).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from polydiff import Absorbing, FieldSpec, GaussianProcess, Masked, Noise, sample
from polydiff.diagnostics import sliced_wasserstein
from polydiff.guidance import (
    NULL_CLASS,
    Observation,
    as_observation,
    classifier_free,
    classifier_potential,
    compose,
    drop_condition,
    gradient_guidance,
    guide,
    index_mask,
    interval,
    load_observed,
    make_condition,
    null_state,
    operator_potential,
    parse_condition,
    reconstruction_guidance,
    token_guidance,
)
from polydiff.steering import steer
from polydiff.toy.gmm import ExactDenoiser, GaussianMixture

PROC = GaussianProcess("vp_linear")
FIELDS = {"x": FieldSpec(PROC)}
SAMPLERS = ["euler_maruyama", "ddim", "dpm++2m"]
G = GaussianMixture.random(k=3, dim=2, seed=1)  # weights 0.45 / 0.33 / 0.22; components 0 and 1 overlap


def component(i: int) -> GaussianMixture:
    return GaussianMixture(torch.ones(1), G.means[i:i + 1], G.stds[i:i + 1])


class Labelled:
    """Exact conditional model: ``state["label"] = c`` -> component c; -1 (dropped) -> the mixture."""

    def __init__(self, prediction: str = "eps") -> None:
        self.full = ExactDenoiser(G, PROC, prediction)
        self.comps = [ExactDenoiser(component(i), PROC, prediction) for i in range(G.k)]
        self.calls = 0

    def __call__(self, state, t):
        self.calls += 1
        x, lab = state["x"], state["label"]
        out = self.full(x, t)
        for i, comp in enumerate(self.comps):
            out = torch.where((lab == i)[:, None], comp(x, t), out)
        return {"x": out}


def labelled_state(n: int, label: int) -> dict:
    return {"x": (n, 2), "label": torch.full((n,), label)}


# -- classifier-free guidance -----------------------------------------------------------------
@pytest.mark.parametrize("prediction", ["eps", "x0", "v", "velocity"])
def test_cfg_scale_one_is_the_conditional_model_and_zero_the_unconditional(prediction):
    net = Labelled(prediction)
    x = torch.randn(16, 2, dtype=torch.float64)
    t = torch.rand(16, dtype=torch.float64) * 0.9 + 0.05
    lab = torch.full((16,), 1)
    fields = {"x": FieldSpec(PROC, prediction=prediction)}
    cond = net({"x": x, "label": lab}, t)["x"]
    uncond = net({"x": x, "label": torch.full((16,), NULL_CLASS)}, t)["x"]
    for batched in (True, False):
        for w, ref in ((1.0, cond), (0.0, uncond), (2.5, uncond + 2.5 * (cond - uncond))):
            out = classifier_free(net, fields, w, keys=["label"], batched=batched)({"x": x, "label": lab}, t)["x"]
            assert torch.allclose(out, ref, atol=1e-12)
    before = net.calls
    classifier_free(net, fields, 2.0, keys=["label"])({"x": x, "label": lab}, t)
    assert net.calls == before + 1  # one batched pass


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_cfg_sampling(sampler):
    net = Labelled()
    ref = component(2).sample(4000, torch.Generator().manual_seed(0))
    cond = sample(net, FIELDS, labelled_state(1000, 2), sampler=sampler, steps=40, seed=0)["x"]
    guided = sample(net, FIELDS, labelled_state(1000, 2), sampler=sampler, steps=40, seed=0,
                    wrap_model=lambda m: classifier_free(m, FIELDS, 1.0, keys=["label"]))["x"]
    assert torch.allclose(guided, cond, atol=1e-5)  # scale 1 == the conditional model
    floor = sliced_wasserstein(component(2).sample(1000, torch.Generator().manual_seed(1)), ref)
    assert sliced_wasserstein(guided, ref) < 2 * floor + 0.01
    strong = sample(net, FIELDS, labelled_state(1000, 2), sampler=sampler, steps=40, seed=0,
                    wrap_model=lambda m: classifier_free(m, FIELDS, 3.0, keys=["label"]))["x"]
    assert G.responsibilities(strong).mean(0)[2] > 0.99
    assert strong.std(0).max() < guided.std(0).max()  # guidance sharpens
    zero = sample(net, FIELDS, labelled_state(2000, 2), sampler=sampler, steps=40, seed=0,
                  wrap_model=lambda m: classifier_free(m, FIELDS, 0.0, keys=["label"]))["x"]
    assert abs(float(G.responsibilities(zero).mean(0)[2]) - 0.22) < 0.04  # scale 0 == the mixture


def test_cfg_between_two_models_cond_argument_and_schedules():
    full, comp = ExactDenoiser(G, PROC), ExactDenoiser(component(0), PROC)
    st = {"x": torch.randn(8, 2, dtype=torch.float64)}
    t = torch.linspace(0.1, 0.9, 8, dtype=torch.float64)

    def c_model(state, tt):
        return {"x": comp(state["x"], tt)}

    def u_model(state, tt):
        return {"x": full(state["x"], tt)}

    pc, pu = c_model(st, t)["x"], u_model(st, t)["x"]
    half = classifier_free(c_model, FIELDS, 0.5, uncond_model=u_model)(st, t)["x"]
    assert torch.allclose(half, 0.5 * (pc + pu))

    def cond_model(state, tt, cond):  # a driver-level condition: cond = 1 selects the component
        sel = (cond == 1)[:, None]
        return {"x": torch.where(sel, comp(state["x"], tt), full(state["x"], tt))}

    ones = torch.ones(8, dtype=torch.long)
    for batched in (True, False):
        out = classifier_free(cond_model, FIELDS, 2.0, null=torch.zeros(8, dtype=torch.long), batched=batched)(
            st, t, ones)["x"]
        assert torch.allclose(out, pu + 2.0 * (pc - pu))
    sched = interval(3.0, 0.2, 0.5)
    out = classifier_free(c_model, FIELDS, sched, uncond_model=u_model)(st, t)["x"]
    w = torch.where((t >= 0.2) & (t <= 0.5), 3.0, 1.0)[:, None]
    assert torch.allclose(out, pu + w * (pc - pu))
    out = classifier_free(c_model, FIELDS, {"other": 5.0}, uncond_model=u_model)(st, t)["x"]
    assert torch.allclose(out, pc)  # fields not named in a per-field scale keep the conditional prediction
    with pytest.raises(ValueError):
        classifier_free(c_model, FIELDS, 2.0)
    with pytest.raises(KeyError):
        classifier_free(c_model, FIELDS, 2.0, keys=["label"])(st, t)


def test_cfg_on_categorical_fields_combines_log_probabilities():
    fields = {"tok": FieldSpec(Absorbing(4)), "x": FieldSpec(PROC)}
    lc, lu = torch.randn(3, 5, 4), torch.randn(3, 5, 4)
    out = guide({"tok": lc, "extra": torch.ones(1)}, {"tok": lu}, fields, 2.0, torch.zeros(3))
    expect = torch.log_softmax(lu, -1) + 2.0 * (torch.log_softmax(lc, -1) - torch.log_softmax(lu, -1))
    assert torch.allclose(out["tok"], expect) and "extra" in out
    one = guide({"tok": lc}, {"tok": lu}, fields, 1.0, torch.zeros(3))["tok"]
    assert torch.allclose(torch.softmax(one, -1), torch.softmax(lc, -1), atol=1e-6)


def test_token_guidance_samples_the_exact_tilt_of_a_product_potential():
    """For ``log G = sum_i w[x_i]`` (linear in the one-hot tokens) the first-order estimate is
    exact, so tokens from a context-free model with probabilities q come out as q exp(w) / Z."""
    V, L, N = 3, 2, 20000
    q = torch.tensor([0.2, 0.5, 0.3])
    w = torch.tensor([1.0, -1.0, 0.0])
    fields = {"tok": FieldSpec(Absorbing(V))}

    def model(s, t):
        return {"tok": torch.log(q).expand(s["tok"].shape[0], L, V)}

    def potential(s, t):
        return (s["tok"][..., :V] * w).sum((1, 2)) + 7.0 * s["tok"][..., V].sum(1)  # the mask's weight cancels

    def freq(out):
        return torch.bincount(out["tok"].reshape(-1), minlength=V).float() / (N * L)

    wrap = lambda m: token_guidance(m, fields, potential, keys=["tok"])  # noqa: E731
    got = freq(sample(model, fields, {"tok": (N, L)}, steps=20, seed=0, wrap_model=wrap))
    want = q * torch.exp(w) / (q * torch.exp(w)).sum()
    assert torch.allclose(got, want, atol=0.01), (got, want)
    plain = freq(sample(model, fields, {"tok": (N, L)}, steps=20, seed=0))
    assert torch.allclose(plain, q, atol=0.01) and (plain - want).abs().max() > 0.1  # the check can fail


def test_token_guidance_moves_only_masked_tokens_and_checks_its_fields():
    fields = {"tok": FieldSpec(Absorbing(4)), "x": FieldSpec(PROC)}
    logits = torch.randn(2, 5, 4)
    w = torch.tensor([0.5, -1.0, 2.0, 0.0, 3.0])  # the last: the mask column

    def model(s, t):
        return {"tok": logits, "x": torch.zeros_like(s["x"])}

    def potential(s, t):
        return (s["tok"] * w).sum((1, 2))

    tok = torch.tensor([[4, 1, 4, 0, 4], [2, 4, 4, 4, 3]])
    st, t = {"tok": tok, "x": torch.zeros(2, 3)}, torch.full((2,), 0.5)
    out = token_guidance(model, fields, potential, keys=["tok"], scale=lambda tt: 2 * tt)(st, t)
    masked = (tok == 4)[..., None]
    expect = torch.where(masked, logits + 1.0 * (w[:4] - w[4]), logits)
    assert torch.allclose(out["tok"], expect) and torch.equal(out["x"], st["x"])
    with pytest.raises(ValueError, match="absorbing"):
        token_guidance(model, fields, potential, keys=["x"])


# -- conditions -------------------------------------------------------------------------------
def test_condition_dropout_and_null_sentinels():
    st = {"label": torch.arange(1000) % 5, "temp": torch.rand(1000), "x": torch.zeros(1000, 2)}
    out = drop_condition(st, ["label", "temp"], 0.3, Noise(1000, seed=0))
    dropped = out["label"] == NULL_CLASS
    assert torch.equal(dropped, torch.isnan(out["temp"]))  # conditions are dropped together
    assert 0.25 < float(dropped.float().mean()) < 0.35
    assert torch.equal(out["x"], st["x"]) and torch.equal(out["label"][~dropped], st["label"][~dropped])
    again = drop_condition(st, ["label", "temp"], 0.3, Noise(1000, seed=0))
    assert torch.equal(again["label"], out["label"])  # reproducible
    assert torch.equal(drop_condition(st, ["label"], 0.0, Noise(1000, seed=0))["label"], st["label"])
    assert torch.all(null_state(st, ["label"])["label"] == NULL_CLASS)
    with pytest.raises(KeyError):
        null_state(st, ["missing"])


def test_token_conditions_are_bags_of_words_with_a_null():
    from polydiff.data import check_info
    from polydiff.nn import ConditionEmbedding

    torch.manual_seed(0)
    emb = ConditionEmbedding({"caption": {"kind": "tokens", "num_classes": 10}}, 8)
    words = torch.tensor([[3, 4, 0, 0], [4, 3, 0, 0], [3, 3, 4, 4], [5, 0, 0, 0]])
    out = emb({"caption": words}, 4)
    assert torch.allclose(out[0], out[1]) and torch.allclose(out[0], out[2])  # order and counts of a bag
    assert not torch.allclose(out[0], out[3])
    dropped = null_state({"caption": words}, ["caption"])  # CFG's null caption: every entry -1
    assert torch.all(dropped["caption"] == NULL_CLASS)
    null = emb(dropped, 4)
    assert torch.allclose(null, emb({}, 4)) and torch.allclose(null, emb({"caption": torch.zeros_like(words)}, 4))
    check_info({"conditions": {"caption": {"kind": "tokens", "num_classes": 10}}})
    with pytest.raises(ValueError, match="num_classes"):
        check_info({"conditions": {"caption": {"kind": "tokens"}}})


def test_condition_parsing():
    assert parse_condition(["label=3", "logp=-1.5", "vec=0,1,2"]) == {"label": 3, "logp": -1.5, "vec": [0.0, 1.0, 2.0]}
    with pytest.raises(ValueError):
        parse_condition(["label"])
    c = make_condition(["label=3", "logp=-1.5", "vec=0,1,2"], 4)
    assert c["label"].dtype == torch.long and c["label"].shape == (4,) and int(c["label"][0]) == 3
    assert c["logp"].shape == (4,) and c["vec"].shape == (4, 3)
    assert make_condition({"e": torch.ones(1, 7)}, 5)["e"].shape == (5, 7)


# -- gradient guidance ------------------------------------------------------------------------
def noisy_classifier(state, t):
    c = PROC.coefs(t.double())
    return torch.log(G.responsibilities(state["x"], c.alpha, c.sigma))


def clean_classifier(state, t):
    return torch.log(G.responsibilities(state["x"]))


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_gradient_guidance_toward_a_component(sampler):
    m = ExactDenoiser(G, PROC)
    # reference: the mean responsibility of component 0 over exact draws of component 0 (~0.85,
    # component 1 overlaps it); the prior share is 0.45
    ref = float(G.responsibilities(component(0).sample(20000, torch.Generator().manual_seed(0))).mean(0)[0])
    exact = sample(m, PROC, (1500, 2), sampler=sampler, steps=40, seed=0,
                   wrap_model=lambda f: gradient_guidance(f, FIELDS, classifier_potential(noisy_classifier, 0),
                                                          on="xt"))
    share = float(G.responsibilities(exact).mean(0)[0])
    assert abs(share - ref) < 0.03  # the exact noisy classifier with scale 1 samples the conditional
    pot = classifier_potential(clean_classifier, 0)
    for backprop in (True, False):  # DPS on the clean estimate: approximate, pushes at least as far
        x = sample(m, PROC, (1500, 2), sampler=sampler, steps=40, seed=0,
                   wrap_model=lambda f, b=backprop: gradient_guidance(f, FIELDS, pot, scale=0.3, backprop=b))
        assert float(G.responsibilities(x).mean(0)[0]) > 0.8


def test_gradient_guidance_scale_schedule_and_keys():
    m = ExactDenoiser(G, PROC)
    pot = classifier_potential(clean_classifier, 2)
    st = {"x": torch.randn(8, 2, dtype=torch.float64)}
    t = torch.full((8,), 0.5, dtype=torch.float64)
    base = {"x": m(st["x"], t)}
    off = gradient_guidance(lambda s, tt: {"x": m(s["x"], tt)}, FIELDS, pot, scale=lambda tt: torch.zeros_like(tt))
    assert torch.allclose(off(st, t)["x"], base["x"])
    on = gradient_guidance(lambda s, tt: {"x": m(s["x"], tt)}, FIELDS, pot, scale=2.0)(st, t)["x"]
    assert not torch.allclose(on, base["x"])
    with pytest.raises(ValueError):
        gradient_guidance(m, FIELDS, pot, on="eps")
    with pytest.raises(KeyError):
        gradient_guidance(m, FIELDS, pot, keys=["y"])


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_reconstruction_guidance_pulls_observed_entries(sampler):
    m = ExactDenoiser(G, PROC)
    obs = {"x": (torch.tensor([0.0, -1.2], dtype=torch.float64), torch.tensor([False, True]))}
    x = sample(m, PROC, (500, 2), sampler=sampler, steps=40, seed=0,
               wrap_model=lambda f: reconstruction_guidance(f, FIELDS, obs, std=0.05))
    assert (x[:, 1] + 1.2).abs().mean() < 0.1  # approximate by nature; unguided: ~0.25
    y = torch.tensor([[-1.0, -1.0]], dtype=torch.float64)
    pot = operator_potential(lambda s: s["x"].sum(1, keepdim=True), y.sum(1, keepdim=True), std=0.1)
    x = sample(m, PROC, (500, 2), sampler=sampler, steps=40, seed=0,
               wrap_model=compose(lambda f: gradient_guidance(f, FIELDS, pot, scale=0.5)))
    assert (x.sum(1) + 2.0).abs().mean() < 0.3  # the sum of the coordinates is pulled to -2


# -- observations and replacement ------------------------------------------------------------
def test_observation_helpers(tmp_path):
    m = index_mask((4, 6), 1, slice(0, 3))  # "the first three steps are known"
    assert m.shape == (4, 6) and m[:, :3].all() and not m[:, 3:].any()
    assert index_mask((5, 2), 0, [1, 4]).sum() == 4  # "tracks 1 and 4 are given"
    obs = as_observation({"x": (np.zeros((4, 6)), m), "y": torch.ones(3)})
    assert obs.masks["x"].dtype == torch.bool and "y" not in obs.masks
    v, mk = obs.expand("x", torch.zeros(7, 4, 6))
    assert v.shape == mk.shape == (7, 4, 6)
    with pytest.raises(ValueError):
        obs.expand("x", torch.zeros(7, 5, 6))
    torch.save({"x": torch.zeros(4, 6), "x_mask": m}, tmp_path / "obs.pt")
    np.savez(tmp_path / "obs.npz", x=np.zeros((4, 6)), **{"x.mask": m.numpy()})
    for f in ("obs.pt", "obs.npz"):
        got = load_observed(tmp_path / f)
        assert torch.equal(got.masks["x"], m) and got.values["x"].shape == (4, 6)
    with pytest.raises(ValueError):
        load_observed(tmp_path / "obs.txt")


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_replacement_of_masked_entries_and_tokens(sampler):
    # a series (B, 6) whose first two steps are known, a masked padding and a token field
    proc = GaussianProcess("vp_cosine")
    fields = {"x": FieldSpec(proc, Masked("pad")), "tok": FieldSpec(Absorbing(3))}

    def net(state, t):
        return {"x": 0.5 * state["x"], "tok": torch.zeros(*state["tok"].shape, 3)}

    pad = torch.ones(50, 6)
    pad[:, -1] = 0
    known = torch.tensor([0.7, -0.3, 0, 0, 0, 0], dtype=torch.float64)
    obs = Observation({"x": known, "tok": torch.tensor([2, 0, 0, 0])},
                      {"x": index_mask((6,), 0, slice(0, 2)), "tok": torch.tensor([True, False, False, True])})
    out = steer(net, fields, {"x": (50, 6), "tok": (50, 4), "pad": pad}, observed=obs, sampler=sampler, steps=10,
                seed=0, dtype=torch.float64)
    assert torch.all(out["x"][:, :2] == known[:2]) and torch.all(out["x"][:, -1] == 0)
    assert out["x"][:, 2:5].std(0).min() > 0.05  # the free entries vary
    assert torch.all(out["tok"][:, 0] == 2) and torch.all(out["tok"][:, 3] == 0)
    assert torch.all(out["tok"] < 3)  # no mask token left
