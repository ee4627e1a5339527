"""Manifold fields as first-class fields: exact SO(3) mixtures, masks, SE(3) frames, tangent-space
classifier-free guidance, Riemannian gradient guidance, observed rotations and the toy rotations data.

The reference model is the exact denoiser of a point-mass mixture of rotations under the geodesic flow
(:class:`polydiff.toy.rotations.ExactRotationDenoiser`), so every sampling check compares against an exact target.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import polydiff as pd
from polydiff.guidance import Observation, ObservedPath, classifier_free, gradient_guidance, guide
from polydiff.losses import diffusion_loss
from polydiff.metrics import sliced_wasserstein
from polydiff.processes import FlatTorus, GeodesicFlow
from polydiff.processes.manifold import Euclidean, Manifold
from polydiff.processes.so3 import SO3, angle, exp_map, random_rotation
from polydiff.random import Noise
from polydiff.steering import controlled_sample
from polydiff.toy.rotations import (
    ExactRotationDenoiser,
    RotationMixture,
    log_transition_density,
    read_rotations,
    write_rotations,
)

F64 = torch.float64
MIX = RotationMixture.random(4, seed=3)  # weights ~ 0.17 / 0.28 / 0.39 / 0.17
EYE = torch.eye(3, dtype=F64)


pytestmark = pytest.mark.usefixtures("one_thread")


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _is_rotation(R: torch.Tensor, tol: float = 1e-9) -> bool:
    ortho = (R.transpose(-1, -2) @ R - torch.eye(3, dtype=R.dtype)).abs().max()
    return bool(ortho < tol) and bool(((torch.linalg.det(R) - 1).abs() < tol).all())


def _freq(R: torch.Tensor, mix: RotationMixture = MIX) -> tuple[torch.Tensor, torch.Tensor]:
    comp, dist = mix.nearest(R.reshape(-1, 3, 3))
    return torch.bincount(comp, minlength=mix.k).double() / comp.numel(), dist


def _within_multinomial(freq: torch.Tensor, weights: torch.Tensor, n: int, sds: float = 4.0) -> bool:
    sd = torch.sqrt(weights * (1 - weights) / n)
    return bool(((freq - weights).abs() < sds * sd).all())


def _flow_fields(rate: float = 0.0, structure=None) -> dict:
    spec = pd.FieldSpec(GeodesicFlow(SO3(), rate=rate)) if structure is None else \
        pd.FieldSpec(GeodesicFlow(SO3(), rate=rate), structure)
    return {"R": spec}


# -- the Riemannian gradient ------------------------------------------------------------------------------------


def test_riemannian_grad_is_the_directional_derivative():
    m = SO3()
    R = random_rotation((64,), generator=_gen(0), dtype=F64)
    A = torch.randn(64, 3, 3, generator=_gen(1), dtype=F64)
    target = random_rotation((64,), generator=_gen(2), dtype=F64)

    def f(X):  # linear plus a nonlinear term: only the tangential part of the gradient may count
        return (A * X).sum((-1, -2)) - ((X - target) ** 2).sum((-1, -2)) ** 2

    X = R.clone().requires_grad_(True)
    (G,) = torch.autograd.grad(f(X).sum(), X)
    g = m.riemannian_grad(R, G)
    assert g.shape == (64, 3)
    v = torch.randn(64, 3, generator=_gen(3), dtype=F64)
    h = 1e-5
    fd = (f(m.exp(R, h * v)) - f(m.exp(R, -h * v))) / (2 * h)
    assert torch.allclose((g * v).sum(-1), fd, rtol=1e-6, atol=1e-6)
    # -d(R, S)^2 has the Riemannian gradient 2 log_R(S)
    S = random_rotation((64,), generator=_gen(4), dtype=F64)
    X = R.clone().requires_grad_(True)
    (G,) = torch.autograd.grad((-(angle(X.transpose(-1, -2) @ S) ** 2)).sum(), X)
    assert torch.allclose(m.riemannian_grad(R, G), 2 * m.log(R, S), atol=1e-6)
    # flat manifolds: the Euclidean gradient itself; the base class has no default
    G = torch.randn(5, 3, generator=_gen(5), dtype=F64)
    assert torch.equal(Euclidean().riemannian_grad(G, G), G)
    assert torch.equal(FlatTorus(2.0).riemannian_grad(G, G), G)
    with pytest.raises(NotImplementedError):
        Manifold().riemannian_grad(G, G)


# -- the exact denoiser ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kappa", [0.05, 0.3, 0.8, 1.0])
def test_transition_density_is_that_of_the_geodesic_interpolant(kappa):
    """The angle of x0^T x_t is kappa times a Haar angle; the density w.r.t. Haar integrates to 1."""
    k = torch.tensor(kappa, dtype=F64)
    s = torch.linspace(0, kappa * math.pi * (1 - 1e-12), 20_001, dtype=F64)  # the support (the density jumps there)
    total = torch.trapezoid(torch.exp(log_transition_density(s, k)) * (1 - torch.cos(s)) / math.pi, s)
    assert abs(float(total) - 1) < 1e-6
    w = torch.linspace(0, math.pi, 20_001, dtype=F64)
    q = torch.exp(log_transition_density(w, k))
    assert torch.allclose(torch.exp(log_transition_density(torch.zeros(1, dtype=F64), k)), k**-3)  # theta -> 0
    inside = (w > 0.05) & (w < kappa * math.pi - 1e-6)
    naive = (1 - torch.cos(w / kappa)) / (kappa * (1 - torch.cos(w)))
    assert torch.allclose(q[inside], naive[inside], rtol=1e-9)
    assert bool((q[w > kappa * math.pi + 1e-9] == 0).all())
    # Monte Carlo: the interpolant's relative angle against the CDF (u - sin u) / pi, u = theta / kappa
    flow = GeodesicFlow(SO3(), rate=0.0)
    x0 = random_rotation((20_000,), generator=_gen(6), dtype=F64)
    x1 = random_rotation((20_000,), generator=_gen(7), dtype=F64)
    theta = SO3().dist(x0, flow.interpolate(x0, x1, k)).sort().values
    u = (theta / kappa).clamp(max=math.pi)
    cdf = (u - torch.sin(u)) / math.pi
    emp = torch.arange(1, 20_001, dtype=F64) / 20_000
    assert float((cdf - emp).abs().max()) < 1.63 / math.sqrt(20_000)  # KS at 1%


def test_exact_denoiser_posterior_and_prediction():
    flow = GeodesicFlow(SO3(), rate=0.0)
    den = ExactRotationDenoiser(MIX.centres, MIX.weights, flow)
    x = random_rotation((50,), generator=_gen(8), dtype=F64)
    # t = 1: x_t is independent of x0, the posterior is the prior weights
    assert torch.allclose(den.posterior(x, torch.ones(50, dtype=F64)), MIX.weights.expand(50, -1), atol=1e-12)
    # small t: points near a centre belong to it and the prediction is that centre
    near = MIX.centres[torch.arange(50) % 4] @ exp_map(0.01 * torch.randn(50, 3, generator=_gen(9), dtype=F64))
    x0 = den({"R": near}, torch.full((50,), 0.05, dtype=F64))["R"]
    assert torch.allclose(x0, MIX.centres[torch.arange(50) % 4], atol=1e-10)
    # the prediction is the exponential of the posterior mean of log_x(R_k), and a rotation
    t = torch.full((50,), 0.7, dtype=F64)
    p = den.posterior(x, t)
    logs = torch.stack([SO3().log(x, MIX.centres[k].expand(50, 3, 3)) for k in range(4)], 1)
    pred = den({"R": x}, t)["R"]
    assert torch.allclose(SO3().log(x, pred), (p[..., None] * logs).sum(1), atol=1e-9)
    assert _is_rotation(pred)
    # several independent entries per sample; points outside every support still get a centre
    xs = random_rotation((6, 5), generator=_gen(10), dtype=F64)
    out = den({"R": xs}, torch.full((6,), 1e-3, dtype=F64))["R"]
    assert out.shape == (6, 5, 3, 3) and bool(torch.isfinite(out).all())
    assert float(_freq(out)[1].max()) < 1e-9


@pytest.mark.parametrize(("rate", "steps"), [(0.0, 60), (10.0, 100)])
def test_exact_mixture_samples_match_the_target(rate, steps):
    """Euler on the geodesic flow with the exact prediction: samples match exact draws within the floor."""
    n = 2000
    fields = _flow_fields(rate)
    den = ExactRotationDenoiser(MIX.centres, MIX.weights, fields["R"].process)
    out = pd.sample(den, fields, {"R": (n, 3, 3)}, steps=steps, seed=0, dtype=F64)["R"]
    assert out.shape == (n, 3, 3) and _is_rotation(out)
    freq, dist = _freq(out)
    assert float(dist.max()) < 1e-6  # every sample lands on a centre
    assert _within_multinomial(freq, MIX.weights, n)
    refs = [MIX.sample(n, _gen(100 + i))[0].reshape(n, 9) for i in range(6)]
    floor = np.mean([sliced_wasserstein(refs[2 * i], refs[2 * i + 1]) for i in range(3)])
    err = np.mean([sliced_wasserstein(out.reshape(n, 9), refs[2 * i]) for i in range(3)])
    assert err < 1.5 * floor, (err, floor)


# -- masks, the loss, SE(3) frames -------------------------------------------------------------------------------


def test_masked_rotation_field_holds_padding_and_the_loss_ignores_it():
    B, N = 6, 4
    counts = torch.tensor([4, 3, 2, 1, 3, 2])
    mask = (torch.arange(N)[None] < counts[:, None]).float()
    fields = _flow_fields(3.0, pd.Masked("mask"))
    den = ExactRotationDenoiser(MIX.centres, MIX.weights, fields["R"].process)
    out = pd.sample(den, fields, {"R": (B, N, 3, 3), "mask": mask}, steps=30, seed=0, dtype=F64)
    R = out["R"]
    pad = mask == 0
    assert torch.equal(R[pad], EYE.expand(int(pad.sum()), 3, 3))
    assert _is_rotation(R) and float(_freq(R[~pad])[1].max()) < 1e-6

    batch = {"R": MIX.sample(B * N, _gen(11))[0].reshape(B, N, 3, 3), "mask": mask}
    noise_pred = exp_map(0.3 * torch.randn(B, N, 3, generator=_gen(12), dtype=F64))
    junk = random_rotation((B, N), generator=_gen(13), dtype=F64)

    def model(junk_at_pad: bool, perfect: bool = False):
        def fn(state, t):
            pred = batch["R"] if perfect else batch["R"] @ noise_pred
            if junk_at_pad:
                pred = torch.where(pad[..., None, None], junk, pred)
            return {"R": pred}
        return fn

    t = torch.full((B,), 0.4, dtype=F64)
    loss = {j: diffusion_loss(model(j), fields, batch, Noise(B, seed=0), t=t)[0] for j in (False, True)}
    assert float(loss[False]) > 0.01 and torch.allclose(loss[False], loss[True], rtol=0, atol=1e-12)
    perfect = diffusion_loss(model(True, perfect=True), fields, batch, Noise(B, seed=0), t=t)[0]
    assert float(perfect) < 1e-20
    # the loss averages the squared geodesic error over each sample's present entries only (today per tangent
    # coordinate, i.e. d^2 / 3 per rotation; either normalisation passes)
    per = (SO3().log(batch["R"], batch["R"] @ noise_pred) ** 2).sum(-1)
    want = ((per * mask).sum(1) / mask.sum(1)).mean()
    assert any(torch.allclose(loss[False], c * want, atol=1e-12) for c in (1.0, 1 / 3))
    unmasked = (per.mean(1)).mean()  # what averaging over the padding too would give
    assert not any(torch.allclose(loss[False], c * unmasked, rtol=1e-3) for c in (1.0, 1 / 3))
    # "velocity" weighting: times (kappa' / kappa)^2, clipped at 100
    flow = fields["R"].process
    for tv in (0.4, 0.02):
        tt = torch.full((B,), tv, dtype=F64)
        x0w = diffusion_loss(model(True), fields, batch, Noise(B, seed=0), t=tt)[0]
        vel = diffusion_loss(model(True), fields, batch, Noise(B, seed=0), t=tt, manifold_weighting="velocity")[0]
        factor = min(float((flow.dkappa(tt[0]) / flow.kappa(tt[0])) ** 2), 100.0)
        assert torch.allclose(vel, factor * x0w, rtol=1e-10)
        assert (tv == 0.02) == (factor == 100.0)  # the clip is reached at small t


def test_se3_frames_in_one_state():
    """Rotations (SO(3) field) and zero-CoM translations (Gaussian field) of residues, one sampling call."""
    B, N = 5, 6
    counts = torch.tensor([6, 4, 5, 3, 6])
    mask = (torch.arange(N)[None] < counts[:, None]).float()
    fields = {"rot": pd.FieldSpec(GeodesicFlow(SO3(), rate=5.0), pd.Masked("mask")),
              "trans": pd.FieldSpec(pd.GaussianProcess("linear"), pd.ZeroCoM("mask"), prediction="x0")}
    frames = random_rotation((B, N), generator=_gen(13), dtype=F64)
    target = pd.ZeroCoM("mask").project(torch.randn(B, N, 3, generator=_gen(14), dtype=F64), {"mask": mask})
    seen = []

    def model(state, t):  # a toy model that knows the frames: clean rotations and translations
        seen.append((state["rot"].shape, state["trans"].shape))
        assert _is_rotation(state["rot"])
        return {"rot": frames, "trans": target}

    out = pd.sample(model, fields, {"rot": (B, N, 3, 3), "trans": (B, N, 3), "mask": mask}, sampler="ddim",
                    steps=12, seed=0, dtype=F64)
    assert len(seen) == 12 and seen[0] == ((B, N, 3, 3), (B, N, 3))
    pad = mask == 0
    assert torch.equal(out["rot"][pad], EYE.expand(int(pad.sum()), 3, 3))
    assert torch.all(out["trans"][pad] == 0)
    assert _is_rotation(out["rot"]) and torch.allclose(out["rot"][~pad], frames[~pad], atol=1e-9)
    com = (out["trans"] * mask[..., None]).sum(1)
    assert torch.allclose(com, torch.zeros(B, 3, dtype=F64), atol=1e-10)
    assert torch.allclose(out["trans"], target, atol=1e-6)


# -- classifier-free guidance in the tangent space -------------------------------------------------------------


def test_tangent_guide_formula():
    fields = _flow_fields()
    x = random_rotation((16,), generator=_gen(15), dtype=F64)
    c = random_rotation((16,), generator=_gen(16), dtype=F64)
    u = random_rotation((16,), generator=_gen(17), dtype=F64)
    t = torch.full((16,), 0.5, dtype=F64)
    m = SO3()

    def g(w):
        return guide({"R": c}, {"R": u}, fields, w, t, state={"R": x})["R"]

    assert torch.equal(g(1.0), c) and torch.equal(g(0.0), u) and torch.equal(g({"other": 3.0}), c)
    assert torch.allclose(g(lambda tt: torch.ones_like(tt)), c, atol=1e-10)  # through the tangent space
    assert torch.allclose(g(lambda tt: torch.zeros_like(tt)), u, atol=1e-10)
    vc, vu = m.log(x, c), m.log(x, u)
    for w in (2.0, {"R": -0.5}, lambda tt: 1.5 + tt):
        ws = w["R"] if isinstance(w, dict) else (2.0 if callable(w) else w)  # t = 0.5
        want = m.exp(x, vu + ws * (vc - vu))
        assert torch.allclose(g(w), want, atol=1e-12) and _is_rotation(g(w))
    # a wrong choice (guiding the matrices linearly) leaves SO(3): the check above has power
    assert not _is_rotation(u + 2.0 * (c - u), tol=1e-3)
    with pytest.raises(ValueError, match="state"):
        guide({"R": c}, {"R": u}, fields, 2.0, t)
    assert torch.equal(guide({"R": c}, {"R": u}, fields, {"other": 2.0}, t)["R"], c)  # scale 1 needs no state


def test_tangent_cfg_sampling():
    n = 1000
    fields = _flow_fields()
    flow = fields["R"].process
    cond = ExactRotationDenoiser(MIX.centres, [0.4, 0.2, 0.2, 0.2], flow)
    unc = ExactRotationDenoiser(MIX.centres, [0.25] * 4, flow)
    spec = {"R": (n, 3, 3)}

    def run(model, scale=None):
        wrap = None if scale is None else (lambda m: classifier_free(m, fields, scale, uncond_model=unc))
        return pd.sample(model, fields, spec, steps=40, seed=0, dtype=F64, wrap_model=wrap)["R"]

    plain_c, plain_u = run(cond), run(unc)
    assert torch.allclose(run(cond, lambda t: torch.ones_like(t)), plain_c, atol=1e-8)
    assert torch.allclose(run(cond, lambda t: torch.zeros_like(t)), plain_u, atol=1e-8)
    assert torch.equal(run(cond, 1.0), plain_c)
    f1 = _freq(plain_c)[0][0]
    assert abs(float(f1) - 0.4) < 4 * math.sqrt(0.24 / n)
    strong = run(cond, 2.0)
    f2, dist = _freq(strong)
    assert _is_rotation(strong) and float(dist.max()) < 1e-6
    assert float(f2[0]) > float(f1) + 0.1  # further towards the conditional mode (~0.57)


# -- gradient guidance -------------------------------------------------------------------------------------------


def _pull_to(target: torch.Tensor):
    def pot(state, t):
        return -((state["R"] - target.to(state["R"].dtype)) ** 2).flatten(1).sum(1)

    return pot


def test_gradient_guidance_moves_along_the_riemannian_gradient():
    fields = _flow_fields()
    unc = ExactRotationDenoiser(MIX.centres, [0.25] * 4, fields["R"].process)
    x = random_rotation((8,), generator=_gen(18), dtype=F64)
    t = torch.full((8,), 0.6, dtype=F64)
    target = MIX.centres[1]
    base = unc({"R": x}, t)["R"]
    m = SO3()
    for on in ("x0", "xt"):
        at = base if on == "x0" else x
        X = at.clone().requires_grad_(True)
        (G,) = torch.autograd.grad(_pull_to(target)({"R": X}, t).sum(), X)
        g = m.riemannian_grad(at, G)
        got = gradient_guidance(unc, fields, _pull_to(target), scale=0.2, on=on, keys=["R"])({"R": x}, t)["R"]
        want = m.exp(base, 0.2 * g) if on == "x0" else m.exp(x, m.log(x, base) + 0.2 * g)
        assert torch.allclose(got, want, atol=1e-12) and _is_rotation(got)
        off = gradient_guidance(unc, fields, _pull_to(target), scale=0.0, on=on, keys=["R"])({"R": x}, t)["R"]
        assert torch.allclose(off, base, atol=1e-12)
    with pytest.raises(ValueError, match="no field to guide"):  # by default only Gaussian fields are guided
        gradient_guidance(unc, fields, _pull_to(target))
    # a mixed state: by default the manifold field keeps the model's prediction
    mixed = {"x": pd.FieldSpec(pd.GaussianProcess("vp_linear")), **fields}

    def both(state, tt):
        return {"x": 0.5 * state["x"], **unc(state, tt)}

    st = {"x": torch.randn(8, 2, dtype=F64), "R": x}
    out = gradient_guidance(both, mixed, lambda s, tt: _pull_to(target)(s, tt) - (s["x"] ** 2).sum(1))(st, t)
    assert torch.equal(out["R"], base) and not torch.allclose(out["x"], 0.5 * st["x"])
    with pytest.raises(KeyError):
        gradient_guidance(both, mixed, _pull_to(target), keys=["R", "nope"])


@pytest.mark.parametrize("on", ["x0", "xt"])
def test_gradient_guidance_pulls_samples_to_a_target_rotation(on):
    n = 800
    fields = _flow_fields()
    unc = ExactRotationDenoiser(MIX.centres, [0.25] * 4, fields["R"].process)
    target = MIX.centres[1]

    def run(scale):
        wrap = lambda m: gradient_guidance(m, fields, _pull_to(target), scale=scale, on=on, keys=["R"])  # noqa: E731
        return pd.sample(unc, fields, {"R": (n, 3, 3)}, steps=30, seed=0, dtype=F64, wrap_model=wrap)["R"]

    free, pulled = run(0.0), run(0.3)
    assert _is_rotation(pulled)
    d_free, d_pulled = SO3().dist(free, target), SO3().dist(pulled, target)
    assert float(d_pulled.mean()) < float(d_free.mean()) - 0.5
    assert float(_freq(pulled)[0][1]) > float(_freq(free)[0][1]) + 0.25  # ~0.23 -> ~0.65


# -- observations ------------------------------------------------------------------------------------------------


def test_observed_path_follows_the_geodesic_and_mask_forms():
    B = 4
    fields = _flow_fields(4.0)
    flow = fields["R"].process
    state = {"R": random_rotation((B, 2), generator=_gen(19), dtype=F64)}
    Q = random_rotation((2,), generator=_gen(20), dtype=F64)
    ts = torch.linspace(1, 0, 6, dtype=F64)
    masks = [torch.tensor([True, False]), torch.tensor([True, False]).expand(B, 2),
             torch.tensor([True, False])[:, None, None].expand(2, 3, 3)]
    paths = []
    for m in masks:
        path = ObservedPath(Observation({"R": Q}, {"R": m}), fields, state, Noise(B, seed=1))
        path.start(ts, state)
        paths.append(path)
    for i in range(5):
        for p in paths:
            p.advance(i, state)
        y = paths[0].y["R"][:, 0]
        x1 = paths[0].x1["R"][:, 0]
        s = ts[i + 1]
        # on the geodesic from the observed rotation to its prior draw, at fraction kappa(s)
        assert torch.allclose(SO3().dist(Q[0].expand(B, 3, 3), y), flow.kappa(s) * SO3().dist(Q[0], x1), atol=1e-9)
        for p in paths[1:]:
            assert torch.equal(p.y["R"], paths[0].y["R"])
        new = paths[0].apply(state)
        assert torch.equal(new["R"][:, 1], state["R"][:, 1]) and torch.equal(new["R"][:, 0], y)
    assert torch.equal(paths[0].apply(state, clean=True)["R"][:, 0], Q[0].expand(B, 3, 3))
    # particles: the 3 consecutive particles of a sample share its path, samples have their own
    rep = {"R": state["R"].repeat_interleave(3, 0)}
    shared = ObservedPath(Observation({"R": Q}, {"R": masks[0]}), fields, rep, Noise(B, seed=1), repeat=3)
    shared.start(ts, rep)
    y = shared.y["R"][:, 0].reshape(B, 3, 3, 3)
    assert torch.equal(y, y[:, :1].expand_as(y)) and not torch.allclose(y[0, 0], y[1, 0])
    assert torch.allclose(y[:, 0], paths[0].x1["R"][:, 0])  # t = 1: the prior draws, as without particles
    with pytest.raises(ValueError, match="whole points"):
        bad = torch.zeros(2, 3, 3, dtype=torch.bool)
        bad[0, 0] = True
        ObservedPath(Observation({"R": Q}, {"R": bad}), fields, state, Noise(B, seed=1))
    with pytest.raises(ValueError, match="only has manifold"):
        paths[0].packed(None, torch.zeros(B, 1))


def test_observed_rotations_with_controlled_sample():
    n = 1000
    fields = _flow_fields(2.0)
    den = ExactRotationDenoiser(MIX.centres, MIX.weights, fields["R"].process)
    Q = random_rotation((2,), generator=_gen(21), dtype=F64)  # entry 0 observed (need not be a centre)
    obs = Observation({"R": Q}, {"R": torch.tensor([True, False])})
    spec = {"R": (n, 2, 3, 3)}
    out = controlled_sample(den, fields, spec, observed=obs, steps=40, seed=0, dtype=F64)["R"]
    assert torch.equal(out[:, 0], Q[0].expand(n, 3, 3))
    free, dist = _freq(out[:, 1])
    assert float(dist.max()) < 1e-6 and _within_multinomial(free, MIX.weights, n)
    plain = pd.sample(den, fields, spec, steps=40, seed=0, dtype=F64)["R"]
    assert _within_multinomial(free, _freq(plain[:, 1])[0], n, sds=6.0)  # entry 1 is independent of entry 0
    # particles share the observed path; replacement without weights
    part = controlled_sample(den, fields, {"R": (8, 2, 3, 3)}, observed=obs, particles=3, inpaint="replace",
                             steps=10, seed=0, dtype=F64)["R"]
    assert torch.equal(part[:, 0], Q[0].expand(8, 3, 3)) and _is_rotation(part)
    # SMC observation weights are Gaussian transition densities: a clear error for manifold-only observations
    mixed = {"x": pd.FieldSpec(pd.GaussianProcess("vp_linear")), **fields}

    def both(state, t):
        return {"x": 0.5 * state["x"], **den(state, t)}

    with pytest.raises(ValueError, match="only has manifold"):
        controlled_sample(both, mixed, {"x": (4, 2), "R": (4, 2, 3, 3)}, observed=obs, particles=2, steps=5, seed=0,
                          dtype=F64)


# -- the toy modality on rotations -------------------------------------------------------------------------------


def test_rotations_dataset_fields_and_files(tmp_path):
    toy = pd.load_modality("toy")
    data = toy.dataset("rotations", k=3, n=200, seed=1, rate=2.0)
    assert "gmm" == next(iter(toy.datasets()))  # the default stays gmm
    R = data.train.tensors["R"]
    assert R.shape == (200, 3, 3) and _is_rotation(R.double(), tol=1e-5)
    mix = RotationMixture.from_dict(data.info["rotations"])
    assert mix.k == 3 and float(mix.nearest(R.double())[1].max()) < 1e-5
    fields = toy.fields(data.info)
    assert fields["R"].process.rate == 2.0 and fields["R"].prediction == "x0"
    assert toy.fields(data.info, rate=7.0)["R"].process.rate == 7.0
    assert toy.prior_state(5, data.info) == {"R": (5, 3, 3)}
    blurred = toy.dataset("rotations", k=3, n=200, seed=1, spread=0.2).train.tensors["R"].double()
    d = mix.nearest(blurred)[1]
    assert 0.1 < float(d.mean()) < 0.6
    # files: an exact round trip, and rows that are not rotations are rejected with file and line
    x = toy.to_native({"R": R.double()}, data.info)
    (path,) = toy.write(x, tmp_path)
    assert path.name == "samples.csv" and path.read_text().startswith("r00,r01,r02,r10")
    np.testing.assert_array_equal(toy.read(tmp_path), x)
    np.testing.assert_array_equal(read_rotations(write_rotations(x[:3], tmp_path / "three.csv")), x[:3])
    bad = x[:4].copy()
    bad[2] *= 1.01
    write_rotations(bad, tmp_path / "bad.csv")
    with pytest.raises(ValueError, match=r"bad\.csv:4: not a rotation"):
        toy.read(tmp_path / "bad.csv")
    rows = [",".join(repr(float(v)) for v in r.reshape(9)) for r in x[:2]]
    (tmp_path / "plain.csv").write_text("\n".join(rows) + "\n")  # no header
    np.testing.assert_array_equal(read_rotations(tmp_path / "plain.csv"), x[:2])
    (tmp_path / "short.csv").write_text(rows[0] + "\n" + rows[1].rsplit(",", 1)[0] + "\n")
    with pytest.raises(ValueError, match=r"short\.csv:2: expected 9 fields"):
        read_rotations(tmp_path / "short.csv")
    assert toy.from_native(x, data.info)["R"].shape == (200, 3, 3)
    png = toy.plot(x, tmp_path / "r.png", reference=x)
    assert png is None or png.stat().st_size > 1000


def test_rotation_metrics_tell_good_from_bad():
    toy = pd.load_modality("toy")
    data = toy.dataset("rotations", k=4, n=200, seed=3, n_test=2000)
    ref = toy.reference(data)
    mix = RotationMixture.from_dict(data.info["rotations"])
    good = mix.sample(2000, _gen(22))[0].numpy()
    skewed = RotationMixture(mix.centres, [0.7, 0.1, 0.1, 0.1]).sample(2000, _gen(23))[0].numpy()
    blurred = RotationMixture(mix.centres, mix.weights, spread=0.3).sample(2000, _gen(24))[0].numpy()
    mg, ms, mb = (toy.evaluate(x, ref, data.info) for x in (good, skewed, blurred))
    assert mg["sw2"] < ms["sw2"] and mg["sw2"] < mb["sw2"]
    assert mg["tv_weights"] < 0.05 < ms["tv_weights"]
    assert mg["dist_centre"] < 1e-5 < 0.1 < mb["dist_centre"]
    flags = toy.flags(good, data.info)
    assert len(flags["component"]) == 2000 and max(flags["distance"]) < 1e-5


def test_toy_rotations_end_to_end(tmp_path):
    recipe = {"modality": "toy", "data": {"name": "rotations", "k": 3, "n": 256, "seed": 0, "n_test": 200},
              "model": {"name": "so3_mlp", "hidden": 32, "depth": 1, "emb_dim": 16},
              "process": {"rate": 5.0},
              "train": {"max_steps": 30, "batch_size": 64, "checkpoint_every": 30, "progress": False,
                        "accelerator": "cpu", "devices": 1, "ema": 0.9, "log_every": 10, "threads": 1},
              "sample": {"num": 64, "steps": 10}}
    run = pd.train(recipe, tmp_path / "run", verbose=False)
    assert math.isfinite(run.metrics["train/loss"])
    gen = pd.load(run.checkpoint)
    assert gen.fields["R"].process.rate == 5.0
    x = gen.generate(64, seed=0)
    assert x.shape == (64, 3, 3) and _is_rotation(torch.from_numpy(x), tol=1e-5)
    np.testing.assert_array_equal(gen.generate(64, seed=0, batch_size=16), x)
    gen.save(x, tmp_path / "out")
    back = gen.modality.read(tmp_path / "out")
    np.testing.assert_array_equal(back, x)
    metrics = gen.evaluate(back)
    assert {"sw2", "dist_centre", "tv_weights"} <= set(metrics)
    assert all(isinstance(v, float) and math.isfinite(v) for v in metrics.values())
    flags = gen.modality.flags(back, gen.info)
    assert all(len(v) == 64 for v in flags.values()) and set(flags) == {"component", "distance"}


def test_rotations_pass_the_modality_contract(tmp_path):
    from polydiff.testing import check_modality

    rep = check_modality(pd.load_modality("toy"), tmp_path, data={"name": "rotations", "n": 64, "n_test": 32},
                         model={"name": "so3_mlp", "hidden": 16, "depth": 1, "emb_dim": 16}, process={"rate": 3.0})
    assert rep.objects.shape == (4, 3, 3) and "write then read round-trips" in rep.checked


def test_rate_schedule_settles_early_as_frameflow() -> None:
    """FrameFlow's exponential schedule: stepping back from the prior, the distance left to the
    predicted point shrinks by exp(-rate dt) per step, so the field is near data by t = 0.5."""
    flow = GeodesicFlow(Euclidean(), rate=10.0)
    x, x0 = torch.zeros(1, 3, dtype=torch.float64), torch.ones(1, 3, dtype=torch.float64)
    t, s = torch.tensor(1.0, dtype=torch.float64), torch.tensor(0.99, dtype=torch.float64)
    left = (x0 - flow.step(x, x0, t, s)).norm() / (x0 - x).norm()
    assert abs(float(left) - math.exp(-0.1)) < 1e-4
    assert float(flow.kappa(torch.tensor(0.5))) < 0.01
    assert float(flow.kappa(torch.tensor(1.0))) == pytest.approx(1.0)
