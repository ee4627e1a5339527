"""Training techniques: pure-torch linear assignment (checked against scipy when installed),
immiscible noise assignment, the Fokker-Planck penalty, score augmentation, self-conditioning and
the config switches."""

from __future__ import annotations

import pytest
import torch

from polydiff import FieldSpec, GaussianProcess, Masked, Noise
from polydiff.losses import corrupt, diffusion_loss, sample_time
from polydiff.techniques import (
    ALIGNMENTS,
    ScoreAugment,
    SelfConditioning,
    Techniques,
    aligned_loss,
    assign_noise,
    auction_assignment,
    flip,
    fokker_planck_penalty,
    fork_noise,
    immiscible_loss,
    parse_transform,
    sinkhorn_assignment,
    technique_loss,
)
from polydiff.toy.gmm import ExactDenoiser, GaussianMixture

PROC = GaussianProcess("vp_linear")


def brute_force(cost: torch.Tensor) -> float:
    import itertools

    n = cost.shape[0]
    return min(float(cost[torch.arange(n), torch.tensor(p)].sum()) for p in itertools.permutations(range(n)))


def test_auction_is_optimal_on_small_problems():
    g = torch.Generator().manual_seed(0)
    cost = torch.rand(5, 6, 6, generator=g)
    perm = auction_assignment(cost)
    for i in range(5):
        assert sorted(perm[i].tolist()) == list(range(6))
        got = float(cost[i, torch.arange(6), perm[i]].sum())
        assert abs(got - brute_force(cost[i])) < 1e-6
    assert auction_assignment(torch.ones(1, 1)).tolist() == [0]
    ties = auction_assignment(torch.zeros(4, 4))  # degenerate costs still give a permutation
    assert sorted(ties.tolist()) == [0, 1, 2, 3]


def test_auction_matches_scipy_and_sinkhorn_is_close():
    scipy_opt = pytest.importorskip("scipy.optimize")
    g = torch.Generator().manual_seed(1)
    cost = torch.cdist(torch.randn(3, 64, 8, generator=g), torch.randn(3, 64, 8, generator=g))
    perm, approx = auction_assignment(cost), sinkhorn_assignment(cost)
    for i in range(3):
        rows, cols = scipy_opt.linear_sum_assignment(cost[i].numpy())
        opt = float(cost[i].numpy()[rows, cols].sum())
        got = float(cost[i, torch.arange(64), perm[i]].sum())
        assert abs(got - opt) < 1e-5 * opt
        assert sorted(approx[i].tolist()) == list(range(64))
        assert float(cost[i, torch.arange(64), approx[i]].sum()) < 1.03 * opt  # measured: within 1.5%


def test_assign_noise_pairs_data_with_near_noise():
    g = torch.Generator().manual_seed(2)
    x0, eps = torch.randn(32, 4, generator=g), torch.randn(32, 4, generator=g)
    perm = assign_noise(x0, eps)
    assert sorted(perm.tolist()) == list(range(32))
    assert (x0 - eps[perm]).norm(dim=1).sum() < (x0 - eps).norm(dim=1).sum()
    grouped = assign_noise(x0, eps, groups=4, metric="sq", method="sinkhorn")
    assert all(sorted(grouped[8 * i:8 * i + 8].tolist()) == list(range(8 * i, 8 * i + 8)) for i in range(4))
    with pytest.raises(ValueError):
        assign_noise(x0, eps, metric="l1")
    with pytest.raises(ValueError):
        assign_noise(x0, eps, groups=5)


def test_fork_noise_replays_the_same_draws():
    for noise in (Noise(4, seed=3), Noise(4, generator=torch.Generator().manual_seed(3))):
        fork = fork_noise(noise)
        assert torch.equal(fork.randn((3,)), noise.randn((3,)))


def test_immiscible_loss_uses_assigned_noise():
    fields = {"x": FieldSpec(PROC)}
    g = torch.Generator().manual_seed(4)
    batch = {"x": torch.randn(64, 3, generator=g) * 2 + 1}
    seen = {}

    def net(state, t):
        seen["x_t"], seen["t"] = state["x"], t
        return {"x": torch.zeros_like(state["x"])}

    immiscible_loss(net, fields, batch, Noise(64, seed=0))
    # replay the draws: the data in slot j was noised with the j-th noise draw, and the pairing
    # is a permutation of the batch that shortens the data-noise distances
    noise = Noise(64, seed=0)
    t = sample_time(fields, noise)
    _, aux = corrupt(fields, batch, t, noise)
    eps = aux["x"][0]
    c = PROC.coefs(t.reshape(-1, 1))
    x0 = (seen["x_t"] - c.sigma * eps) / c.alpha
    match = torch.cdist(x0.double(), batch["x"].double()).argmin(1)
    assert sorted(match.tolist()) == list(range(64))
    assert torch.allclose(x0.float(), batch["x"][match], atol=1e-4)
    assert (x0 - eps).norm(dim=1).sum() < 0.9 * (batch["x"] - eps).norm(dim=1).sum()
    assert torch.equal(seen["t"], t.float())


def test_fokker_planck_penalty_is_zero_for_an_exact_score_and_trains():
    gm = GaussianMixture.random(k=2, dim=2, seed=0)
    exact = ExactDenoiser(gm, PROC)
    fields = {"x": FieldSpec(PROC)}
    batch = {"x": gm.sample(64, torch.Generator().manual_seed(0))}

    def shifted(state, t):  # the score of a mixture whose means drift with t: not a diffusion's
        c = PROC.coefs(t.double())
        moved = GaussianMixture(gm.weights, gm.means + t.double().mean() * 2.0, gm.stds)
        x0 = moved.denoise(state["x"], c.alpha, c.sigma)
        return {"x": (state["x"] - c.alpha[:, None] * x0) / c.sigma[:, None]}

    ok = fokker_planck_penalty(lambda s, t: {"x": exact(s["x"], t)}, fields, batch, Noise(64, seed=0), h=1e-4,
                               divergence="exact")
    bad = fokker_planck_penalty(shifted, fields, batch, Noise(64, seed=0), h=1e-4, divergence="exact")
    assert abs(float(ok.detach())) < 1e-6 and float(bad.detach()) > 1e-2
    net = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.SiLU(), torch.nn.Linear(16, 2)).double()

    def model(state, t):
        return {"x": net(torch.cat([state["x"], t[:, None].to(state["x"].dtype)], 1))}

    pen = fokker_planck_penalty(model, fields, batch, Noise(64, seed=1))  # Hutchinson, two probes
    pen.backward()  # double backpropagation through the network
    assert torch.isfinite(pen) and all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


def _recording_model(seen: list[torch.Tensor], proc: GaussianProcess = PROC, k: float = 1.0):
    """The eps-prediction ``k x / sigma(t)``: ``k`` times the exact score of data at the origin."""

    def model(state, t):
        seen.append(t.detach().clone())
        return {"x": k * state["x"] / proc.coefs(t.double()).sigma.to(state["x"].dtype)[:, None]}

    return model


@pytest.mark.parametrize("density", ["log_uniform", "uniform"])
def test_fokker_planck_times_follow_the_range_not_the_loss_density(density):
    fields = {"x": FieldSpec(PROC)}
    batch = {"x": torch.zeros(2000, 2, dtype=torch.float64)}
    seen: list[torch.Tensor] = []
    lo, hi = 1e-3, 0.2
    fokker_planck_penalty(_recording_model(seen), fields, batch, Noise(2000, seed=3), time_density="lognormal",
                          p_mean=1.5, p_std=0.1, t_range=(lo, hi), range_density=density, divergence="exact")
    t = seen[0]  # the first call is the score at the penalty time itself
    assert t.shape == (2000,) and float(t.min()) >= lo and float(t.max()) <= hi
    mid = (lo * hi) ** 0.5 if density == "log_uniform" else (lo + hi) / 2
    assert abs(float((t < mid).double().mean()) - 0.5) < 0.05  # the median of the chosen density
    seen.clear()  # without a range: the loss's density (log(sigma/alpha) ~ N(1.5, 0.1): t near 1)
    fokker_planck_penalty(_recording_model(seen), fields, batch, Noise(2000, seed=3), time_density="lognormal",
                          p_mean=1.5, p_std=0.1, divergence="exact")
    assert float(seen[0].min()) > hi
    with pytest.raises(ValueError, match="t_max"):
        fokker_planck_penalty(_recording_model([]), fields, batch, Noise(2000, seed=3), t_range=(0.5, 2.0))


@pytest.mark.parametrize("proc", [PROC, GaussianProcess("vp_cosine")], ids=["vp_linear", "vp_cosine"])
def test_normalised_fokker_planck_penalty_is_constant_in_time(proc):
    """A score off by a factor k (here k s* with s* the exact score of data at the origin) has the
    normalised penalty k^2 (k - 1)^2 at every time; unnormalised it grows like sigma^-6."""
    fields = {"x": FieldSpec(proc)}
    batch = {"x": torch.zeros(256, 3, dtype=torch.float64)}
    k = 1.5
    raw, scaled = [], []
    for lo in (1e-3, 1e-2, 1e-1, 0.5):
        opts = {"h": 1e-4, "divergence": "exact", "t_range": (lo, 1.2 * lo)}
        model = _recording_model([], proc, k)
        raw.append(float(fokker_planck_penalty(model, fields, batch, Noise(256, seed=0), **opts).detach()))
        scaled.append(float(fokker_planck_penalty(model, fields, batch, Noise(256, seed=0), normalize=True,
                                                  **opts).detach()))
    assert max(raw) / min(raw) > 1e3  # the problem the normalisation solves
    target = k**2 * (k - 1) ** 2
    assert all(abs(v / target - 1) < 0.15 for v in scaled), scaled  # chi-square noise of 768 entries
    assert max(scaled) / min(scaled) < 1.01  # same noise draws at every time: only the scale could differ
    hutch = fokker_planck_penalty(_recording_model([], proc, k), fields, batch, Noise(256, seed=0), h=1e-4,
                                  t_range=(1e-3, 0.5), normalize=True)
    assert abs(float(hutch.detach()) / target - 1) < 0.15


def test_normalised_fokker_planck_penalty_is_zero_for_an_exact_score():
    gm = GaussianMixture.random(k=2, dim=2, seed=0)
    exact = ExactDenoiser(gm, PROC)
    fields = {"x": FieldSpec(PROC)}
    batch = {"x": gm.sample(64, torch.Generator().manual_seed(0))}
    for rng in ((1e-3, 0.05), (1e-3, 0.2), (0.2, 1.0)):
        pen = fokker_planck_penalty(lambda s, t: {"x": exact(s["x"], t)}, fields, batch, Noise(64, seed=0), h=1e-4,
                                    divergence="exact", t_range=rng, normalize=True)
        bad = fokker_planck_penalty(_recording_model([], PROC, 1.5), fields, batch, Noise(64, seed=0), h=1e-4,
                                    divergence="exact", t_range=rng, normalize=True)
        assert abs(float(pen.detach())) < 1e-5 and float(bad.detach()) > 1e-2


def _mixture_energy(gm: GaussianMixture, proc: GaussianProcess, offset: float = 0.0, scale: float = 1.0):
    """An energy network ``E(x, t) = -scale * log q_t(x) + offset * t`` of the noised mixture:
    the exact one for scale 1 and any offset that is constant in t (offset = 0 here)."""

    def energy(state, t):
        c = proc.coefs(t.double())
        return -scale * gm.log_prob(state["x"].double(), c.alpha[:, None], c.sigma[:, None]) + offset * t.double()

    return energy


def test_log_density_fokker_planck_residual_is_zero_for_the_exact_energy():
    """With the exact divergence, the log-density residual vanishes (to the finite differences'
    error) for -log q_t, and not for an energy of the wrong temperature, nor for one whose
    normalisation drifts in t; it reaches the network through one backward pass (no double
    backward of the score). The Hutchinson form's unbiasedness: the next test."""
    from polydiff.plugin import EnergyModel

    gm = GaussianMixture.random(k=3, dim=2, seed=0)
    fields = {"x": FieldSpec(PROC, prediction="score")}
    batch = {"x": gm.sample(128, torch.Generator().manual_seed(0)).double()}
    opts = {"divergence": "exact", "residual": "log_density", "h": 1e-4, "x_step": 1e-3,
            "t_range": (1e-2, 0.9), "range_density": "uniform"}

    def pen(energy, **kw):
        return float(fokker_planck_penalty(EnergyModel(energy, fields), fields, batch, Noise(128, seed=0),
                                           **{**opts, **kw}).detach())

    ok = pen(_mixture_energy(gm, PROC))
    hot = pen(_mixture_energy(gm, PROC, scale=0.7))
    drift = pen(_mixture_energy(gm, PROC, offset=5.0))  # d log q/dt off by 5: residual 5, penalty 25 / D^2
    assert abs(ok) < 1e-5, ok
    assert hot > 0.1
    assert drift == pytest.approx(25 / 4, rel=1e-3)
    normed = pen(_mixture_energy(gm, PROC), normalize=True)
    assert abs(normed) < 1e-5
    net = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.SiLU(), torch.nn.Linear(16, 1)).double()
    model = EnergyModel(lambda st, t: net(torch.cat([st["x"], t[:, None].to(st["x"].dtype)], 1))[:, 0], fields)
    p = fokker_planck_penalty(model, fields, batch, Noise(128, seed=1), residual="log_density")
    p.backward()
    assert torch.isfinite(p) and all(q.grad is not None and torch.isfinite(q.grad).all() for q in net.parameters())


def test_log_density_residual_needs_an_energy_and_matches_the_score_form_in_expectation():
    """A model without an energy output is refused with a clear message. For a score off by a
    factor (k s*, data at the origin; energy k |x|^2 / (2 sigma^2) + c(t) chosen so the
    x-independent part vanishes) the Hutchinson estimate is unbiased: its mean over many samples
    equals the exact-divergence penalty."""
    from polydiff.plugin import EnergyModel

    fields = {"x": FieldSpec(PROC, prediction="score")}
    batch = {"x": torch.zeros(4000, 3, dtype=torch.float64)}
    with pytest.raises(ValueError, match="returns its energy"):
        fokker_planck_penalty(lambda s, t: {"x": s["x"]}, fields, batch, Noise(4000, seed=0), residual="log_density")
    k = 1.5

    def energy(state, t):
        sig2 = PROC.coefs(t.double()).sigma ** 2
        return k * (state["x"].double() ** 2).sum(1) / (2 * sig2)

    model = EnergyModel(energy, fields)
    opts = {"residual": "log_density", "h": 1e-4, "t_range": (0.05, 0.5), "range_density": "uniform"}
    exact = float(fokker_planck_penalty(model, fields, batch, Noise(4000, seed=0), divergence="exact",
                                        **opts).detach())
    hutch = float(fokker_planck_penalty(model, fields, batch, Noise(4000, seed=0), **opts).detach())
    assert exact > 1.0 and abs(hutch / exact - 1) < 0.1, (exact, hutch)


def test_fokker_planck_options_validate():
    ok = Techniques.from_config({"fp_weight": 0.1, "fp_t_range": [1e-3, "0.05"], "fp_t_density": "uniform",
                                 "fp_normalize": True})
    assert ok.fp_t_range == (1e-3, 0.05) and ok.fp_t_density == "uniform" and ok.fp_normalize
    assert Techniques.from_config({"fp_weight": 0.1, "fp_t_range": [1e-3, 0.2]}).fp_t_density == "log_uniform"
    bad = [({"fp_weight": 0.1, "fp_t_range": [0.2, 1e-3]}, "0 < lo < hi"),
           ({"fp_weight": 0.1, "fp_t_range": [0.0, 0.2]}, "0 < lo < hi"),
           ({"fp_weight": 0.1, "fp_t_range": [0.1]}, "pair"),
           ({"fp_weight": 0.1, "fp_t_range": "0.1"}, "pair"),
           ({"fp_weight": 0.1, "fp_t_range": [0.1, "x"]}, "two numbers"),
           ({"fp_weight": 0.1, "fp_t_range": [1e-3, 0.2], "fp_t_density": "normal"}, "fp_t_density"),
           ({"fp_weight": 0.1, "fp_t_density": "uniform"}, "needs fp_t_range"),
           ({"fp_t_range": [1e-3, 0.2]}, "fp_t_range has no effect without fp_weight"),
           ({"fp_normalize": True}, "fp_normalize has no effect"),
           ({"fp_weight": -1.0}, "fp_weight"),
           ({"fp_weight": 0.1, "fp_step": 1.0}, "fp_step"),
           ({"fp_weight": 0.1, "fp_clip": 0.0}, "fp_clip"),
           ({"fp_clip": 1.0}, "fp_clip has no effect"),
           ({"fp_weight": 0.1, "fp_residual": "vector"}, "fp_residual"),
           ({"fp_weight": 0.1, "fp_x_step": 0.0}, "fp_x_step"),
           ({"fp_residual": "log_density"}, "fp_residual has no effect")]
    for cfg, msg in bad:
        with pytest.raises(ValueError, match=msg):
            Techniques.from_config(cfg)
    fields = {"x": FieldSpec(PROC)}  # technique_loss passes the options on
    batch = {"x": torch.zeros(32, 2, dtype=torch.float64)}
    seen: list[torch.Tensor] = []
    tech = Techniques.from_config({"fp_weight": 1.0, "fp_t_range": [0.3, 0.4], "fp_normalize": True})
    loss, logs = technique_loss(_recording_model(seen, PROC, 1.5), fields, batch, Noise(32, seed=0), tech)
    assert torch.isfinite(loss) and any(float(t.min()) >= 0.3 and float(t.max()) <= 0.4 * 1.01 for t in seen)
    assert 0.1 < float(logs["fokker_planck"]) < 2.0  # normalised: k^2 (k - 1)^2 = 0.56 up to Hutchinson noise


def test_fokker_planck_clip_caps_each_sample_softly():
    """``clip=c`` maps each sample's penalty p to c tanh(p / c): a score off by k = 1.5 has the
    normalised penalty 0.5625 per sample, so a cap of 100 changes nothing and a cap of 0.1
    bounds the mean by 0.1."""
    fields = {"x": FieldSpec(PROC)}
    batch = {"x": torch.zeros(256, 3, dtype=torch.float64)}
    opts = {"h": 1e-4, "divergence": "exact", "t_range": (1e-2, 0.2), "normalize": True}
    model = _recording_model([], PROC, 1.5)
    free = float(fokker_planck_penalty(model, fields, batch, Noise(256, seed=0), **opts).detach())
    loose = float(fokker_planck_penalty(model, fields, batch, Noise(256, seed=0), clip=100.0, **opts).detach())
    tight = float(fokker_planck_penalty(model, fields, batch, Noise(256, seed=0), clip=0.1, **opts).detach())
    assert abs(loose - free) < 1e-3 * free and 0.3 < free < 0.9
    assert 0.05 < tight < 0.1 < free
    with pytest.raises(ValueError, match="clip"):
        fokker_planck_penalty(model, fields, batch, Noise(256, seed=0), clip=-1.0, **opts)


def test_fokker_planck_options_fail_at_config_load(tmp_path):
    from polydiff.config import ConfigError, load_config

    path = tmp_path / "bad.yaml"
    path.write_text("modality: toy\ndata: {name: gmm}\nmodel: {name: mlp}\n"
                    "loss: {techniques: {fp_weight: 0.1, fp_t_range: [0.2, 0.001]}}\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*fp_t_range"):
        load_config(path)


def test_score_augment_with_an_equivariant_model_changes_nothing():
    fields = {"x": FieldSpec(PROC)}

    def net(state, t):  # equivariant to reversing the sequence
        x = state["x"]
        return {"x": 0.5 * x + 0.1 * x.flip(1)}

    aug = ScoreAugment(net, [flip(["x"], 1)], p=1.0, generator=torch.Generator().manual_seed(0))
    state = {"x": torch.randn(8, 5)}
    assert torch.allclose(aug(state, torch.ones(8))["x"], net(state, torch.ones(8))["x"])
    seen = {}

    def probe(state, t):
        seen.update(state)
        return {"x": state["x"] * torch.arange(5.0)}  # not equivariant: predictions are mapped back

    out = ScoreAugment(probe, [flip(["x"], 1)], p=1.0)(state, torch.ones(8))["x"]
    assert torch.all(seen["augment"] == 1) and torch.allclose(seen["x"], state["x"].flip(1))
    assert torch.allclose(out, (state["x"].flip(1) * torch.arange(5.0)).flip(1))
    assert parse_transform("flip:x,mask:2").name == "flip:x,mask:2"
    with pytest.raises(ValueError):
        parse_transform("rotate:x:1")
    loss, _ = diffusion_loss(ScoreAugment(net, [flip(["x"], 1)], p=0.5), fields, {"x": torch.randn(8, 5)},
                             Noise(8, seed=0))
    assert torch.isfinite(loss)


def test_self_conditioning_feeds_the_previous_estimate():
    fields = {"x": FieldSpec(PROC, prediction="x0")}
    seen = []

    def net(state, t):
        seen.append(state["sc_x"].clone())
        return {"x": state["x"] * 0.5 + 1.0}

    train = SelfConditioning(net, fields, p=1.0)
    state = {"x": torch.randn(4, 3)}
    train(state, torch.full((4,), 0.5))
    assert len(seen) == 2 and torch.all(seen[0] == 0) and torch.allclose(seen[1], state["x"] * 0.5 + 1.0)
    seen.clear()
    SelfConditioning(net, fields, p=0.0)(state, torch.full((4,), 0.5))
    assert len(seen) == 1 and torch.all(seen[0] == 0)
    seen.clear()
    sampler = SelfConditioning(net, fields, training=False)
    sampler(state, torch.full((4,), 0.5))
    sampler({"x": state["x"] + 1}, torch.full((4,), 0.4))
    assert torch.all(seen[0] == 0) and torch.allclose(seen[1], state["x"] * 0.5 + 1.0)
    sampler.reset()
    sampler(state, torch.full((4,), 0.5))
    assert torch.all(seen[2] == 0)


def test_techniques_config_and_loss():
    fields = {"x": FieldSpec(PROC, Masked("mask"))}
    net = torch.nn.Linear(5, 5).double()

    def model(state, t):
        return {"x": net(state["x"]) * state["mask"]}

    batch = {"x": torch.randn(16, 5, dtype=torch.float64), "mask": torch.ones(16, 5, dtype=torch.float64),
             "label": torch.arange(16) % 3}
    cfg = Techniques.from_config({"immiscible": True, "score_augment": 0.5, "augment": ["flip:x,mask:1"],
                                  "fp_weight": 0.1, "cond_drop": 0.5, "condition_keys": ["label"]})
    loss, logs = technique_loss(model, fields, batch, Noise(16, seed=0), cfg)
    loss.backward()
    assert torch.isfinite(loss) and "fokker_planck" in logs and net.weight.grad is not None
    plain, _ = technique_loss(model, fields, batch, Noise(16, seed=0), Techniques())
    ref, _ = diffusion_loss(model, fields, batch, Noise(16, seed=0))
    assert torch.allclose(plain, ref)
    with pytest.raises(KeyError):
        Techniques.from_config({"immiscibel": True})
    with pytest.raises(ValueError):
        Techniques(score_augment=0.5).wrap(model, fields)


def test_aligned_loss_moves_each_sample_onto_its_own_noise_draw():
    fields = {"x": FieldSpec(PROC)}
    g = torch.Generator().manual_seed(5)
    batch = {"x": torch.randn(16, 3, generator=g) + 3, "tag": torch.arange(16)}
    seen, given = {}, {}

    def net(state, t):
        seen["x_t"], seen["tag"] = state["x"], state["tag"]
        return {"x": torch.zeros_like(state["x"])}

    def flip_towards(b, eps):  # a symmetry of a sign-symmetric density: x -> -x where that is closer
        given["eps"] = eps["x"]
        closer = ((-b["x"] - eps["x"]).norm(dim=1) < (b["x"] - eps["x"]).norm(dim=1))[:, None]
        return {"x": torch.where(closer, -b["x"], b["x"])}

    ALIGNMENTS.register("test_flip", "test")(flip_towards)
    try:
        aligned_loss(net, fields, batch, Noise(16, seed=1), ALIGNMENTS.get("test_flip"))
        noise = Noise(16, seed=1)
        t = sample_time(fields, noise)
        _, aux = corrupt(fields, batch, t, noise)
        eps = aux["x"][0]
        assert torch.equal(given["eps"], eps)  # the alignment saw the very draws the loss used
        c = PROC.coefs(t.reshape(-1, 1))
        x0 = (seen["x_t"] - c.sigma * eps) / c.alpha
        flipped = torch.where(((-batch["x"] - eps).norm(dim=1) < (batch["x"] - eps).norm(dim=1))[:, None],
                              -batch["x"], batch["x"])
        x0 = x0.float()
        assert torch.allclose(x0, flipped, atol=1e-4) and not torch.allclose(x0, batch["x"], atol=1e-2)
        assert torch.equal(seen["tag"], batch["tag"])  # entries the alignment leaves alone stay
        tech = Techniques.from_config({"align": "test_flip"})
        loss, _ = technique_loss(net, fields, batch, Noise(16, seed=1), tech)
        assert torch.isfinite(loss)
        with pytest.raises(ValueError, match="one of immiscible"):
            Techniques.from_config({"align": "test_flip", "immiscible": True})
        with pytest.raises(KeyError, match="test_flip"):
            Techniques.from_config({"align": "nope"})
    finally:
        ALIGNMENTS._items.pop("test_flip", None)
