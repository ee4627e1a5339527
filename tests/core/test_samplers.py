"""Gaussian samplers against exact Gaussian-mixture denoisers: convergence to the target,
observed order of accuracy, equivalences, seeding, multi-field packing, dtypes, errors."""

import decimal
import math
import warnings

import pytest
import torch

import polydiff as pd
from polydiff.grids import make_grid
from polydiff.processes.gaussian import GaussianProcess
from polydiff.registry import RegistryError
from polydiff.samplers import SAMPLERS, SamplingLoop, for_budget, get_sampler, prepare, time_shift
from polydiff.samplers.coefs import lagrange_weights, phi, step_order
from polydiff.samplers.dpm import budget_orders
from polydiff.samplers.multistep import ghvb_weights
from polydiff.toy.gmm import ExactDenoiser, GaussianMixture

F64 = torch.float64
# every Gaussian sampler of ordinary denoisers (two-time samplers such as ctm: tests/core/test_distill.py)
GAUSSIAN = [n for n in SAMPLERS if get_sampler(n).kind == "gaussian" and get_sampler(n).loop == "grid"]
PRED = {"vp_linear": "eps", "edm": "eps", "linear": "velocity"}


def _setup(schedule: str, gmm: GaussianMixture, **options):
    proc = GaussianProcess(schedule, **options)
    return proc, ExactDenoiser(gmm, proc, PRED[schedule])


def _run(model, proc, shape, sampler, **kw):
    kw.setdefault("dtype", F64)
    kw.setdefault("seed", 0)
    return pd.sample(model, proc, shape, sampler=sampler, prediction=getattr(model, "prediction", "eps"), **kw)


# ----------------------------------------------------------------------------- convergence to the target
TARGET = GaussianMixture.random(k=4, dim=2, spread=2.0, std=0.3, seed=0)
TARGET8 = GaussianMixture.random(k=4, dim=8, spread=2.0, std=0.3, seed=0)
VARIANTS = [(n, {}) for n in GAUSSIAN] + [
    ("edm", {"s_churn": 20.0, "s_tmin": 0.05, "s_tmax": 50.0}), ("pc", {"n_corrector": 2, "snr": 0.1}),
    ("pc", {"predictor": "euler", "denoise": True}), ("euler_maruyama", {"denoise": True}),
    ("unipc", {"order": 3, "variant": "bh1"}), ("dpm++2m_sde", {"solver_type": "heun"}),
    ("ghvb", {"order": 2, "beta": 0.5}), ("deis", {"order": 2}),
]


def test_the_registry_lists_every_method():
    expected = {"ddim", "ddpm", "euler", "heun", "euler_maruyama", "rk45", "edm", "pc", "dpm_solver1", "dpm_solver2",
                "dpm_solver3", "dpm++2m", "dpm++3m", "dpm++2m_sde", "deis", "pndm", "unipc", "ghvb"}
    assert expected <= set(GAUSSIAN)
    for n in expected:
        assert SAMPLERS.describe()[n], f"{n} has no description"


FIRST_ORDER = {"ddim", "ddpm", "dpm_solver1", "euler"}
CONFIGS = [(s, 2, n, o) for s in ("vp_linear", "edm", "linear") for n, o in VARIANTS
           if (n != "pc" or s == "vp_linear") and (s == "vp_linear" or not o)]
CONFIGS += [("vp_linear", 8, n, o) for n, o in VARIANTS if get_sampler(n).stochastic or n in ("dpm++2m", "unipc")]


@pytest.mark.parametrize("schedule,dim,name,options", CONFIGS,
                         ids=[f"{n}{o or ''}-{s}-{d}d" for s, d, n, o in CONFIGS])
def test_sampler_reaches_the_target_moments(schedule, dim, name, options):
    """2000 samples match the exact mean and covariance of the marginal at the grid's end.

    Each entry may miss by five standard errors of exact draws of that size plus an allowance
    for the discretisation error of 25 deterministic or 60 stochastic steps (first-order
    methods: covariance entries off by up to ~0.1 at 25 steps). The predictor-corrector uses
    its default batch-mean norms (per-sample norms explode for 2-D samples where the score
    vanishes)."""
    target = TARGET if dim == 2 else TARGET8
    proc, model = _setup(schedule, target)
    stochastic = get_sampler(name).stochastic and (name != "edm" or options)
    kw = {"rtol": 1e-4, "atol": 1e-4} if name == "rk45" else {}
    if schedule == "linear" and name == "euler_maruyama":
        kw["t_max"] = 0.999  # its drift needs alpha(t) > 0
    x = _run(model, proc, (2000, dim), name, steps=60 if stochastic else 25, seed=1, **kw, **options)
    assert torch.isfinite(x).all()
    c = proc.coefs(torch.tensor(proc.t_min, dtype=F64))
    mean, cov = target.moments(float(c.alpha), float(c.sigma))
    n = x.shape[0]
    var = torch.diagonal(cov)
    se_mean = torch.sqrt(var / n)  # standard errors of exact draws (Gaussian approximation for the covariance)
    se_cov = torch.sqrt((var[:, None] * var[None, :] + cov**2) / n)
    err_mean = (x.mean(0).double() - mean).abs()
    err_cov = (torch.cov(x.T).double() - cov).abs()
    allow = 0.1 if name in FIRST_ORDER else 0.04  # discretisation error on top of 5 standard errors
    assert bool((err_mean <= 5 * se_mean + 0.02).all()), (err_mean, se_mean)
    assert bool((err_cov <= 5 * se_cov + allow).all()), (err_cov, se_cov)


# ----------------------------------------------------------------------------- observed order
SMOOTH = GaussianMixture.random(k=3, dim=2, spread=1.0, std=0.5, seed=0)  # well-conditioned ODE
_REFS: dict = {}


def _reference(schedule: str, kw: dict):
    key = (schedule, tuple(sorted(kw.items())))
    if key not in _REFS:
        proc, model = _setup(schedule, SMOOTH)
        _REFS[key] = _run(model, proc, (32, 2), "rk45", steps=1, seed=3, rtol=1e-12, atol=1e-12, **kw)
    return _REFS[key]


ORDERS = [  # (sampler, options, schedule, grid keywords, expected order)
    ("euler", {}, "vp_linear", {}, 1),
    ("euler", {}, "linear", {"t_min": 1e-3}, 1),
    ("heun", {}, "vp_linear", {}, 2),
    ("heun", {}, "edm", {}, 2),
    ("heun", {}, "linear", {"t_min": 1e-3}, 2),
    ("dpm_solver2", {}, "vp_linear", {}, 2),
    ("dpm_solver3", {}, "vp_linear", {}, 3),
    ("dpm_solver3", {}, "edm", {}, 3),
    ("dpm_solver2", {"stages": "grid"}, "edm", {}, 2),
    ("dpm_solver3", {"stages": "grid"}, "edm", {}, 3),
    ("dpm++2m", {}, "vp_linear", {}, 2),
    ("dpm++3m", {"variant": "lagrange"}, "vp_linear", {}, 3),
    ("dpm++3m", {"variant": "lagrange"}, "edm", {}, 3),
    ("dpm++3m", {"variant": "lagrange"}, "linear", {"t_min": 1e-3, "grid": "uniform_logsnr"}, 3),  # alpha = 0
    ("deis", {"order": 2}, "vp_linear", {}, 2),
    ("deis", {"order": 3}, "vp_linear", {}, 3),
    ("deis", {"order": 3, "space": "rho"}, "vp_linear", {}, 3),
    ("unipc", {"order": 1}, "vp_linear", {}, 2),  # UniC adds one order
    ("unipc", {"order": 2}, "vp_linear", {}, 3),
    ("unipc", {"order": 2}, "edm", {}, 3),
    ("unipc", {"order": 2, "disable_corrector": True}, "vp_linear", {}, 2),
    ("unipc", {"order": 3}, "edm", {"grid": "karras"}, 4),  # on EDM's default log-SNR grid 3.6 at 64-128 steps
    # PLMS / GHVB weights assume evenly spaced steps in rho = sigma / alpha: EDM, uniform in t
    ("pndm", {"order": 3}, "edm", {"t_max": 3.0, "t_min": 0.1, "grid": "uniform_t"}, 3),
    ("ghvb", {"order": 2, "beta": 0.8}, "edm", {"t_max": 3.0, "t_min": 0.1, "grid": "uniform_t"}, 2),
    ("ghvb", {"order": 3, "beta": 0.5}, "edm", {"t_max": 3.0, "t_min": 0.1, "grid": "uniform_t"}, 3),
]


@pytest.mark.parametrize("name,options,schedule,kw,p", ORDERS,
                         ids=[f"{n}{o or ''}-{s}" for n, o, s, _, _ in ORDERS])
def test_ode_solver_shows_its_order(name, options, schedule, kw, p):
    """From the same initial noise, the error against an rk45 solution at rtol 1e-12 falls
    by about 2^p when the steps double (measured between 64 and 128 steps)."""
    proc, model = _setup(schedule, SMOOTH)
    ref = _reference(schedule, kw)
    errs = [(_run(model, proc, (32, 2), name, steps=n, seed=3, **kw, **options) - ref).norm(dim=1).mean().item()
            for n in (64, 128)]
    observed = math.log2(errs[0] / errs[1])
    assert p - 0.35 < observed < p + 1.0, (errs, observed)


def test_rk45_meets_its_tolerance_with_few_calls():
    proc, model = _setup("vp_linear", SMOOTH)
    ref = _reference("vp_linear", {})
    model.calls = 0
    x = _run(model, proc, (32, 2), "rk45", steps=1, seed=3, rtol=1e-6, atol=1e-6)
    assert (x - ref).abs().max() < 1e-4
    assert model.calls < 1000


# ----------------------------------------------------------------------------- equivalences
@pytest.mark.parametrize("name,options", [("dpm_solver1", {}), ("deis", {"order": 1}), ("pndm", {"order": 1}),
                                          ("ghvb", {"order": 1, "beta": 1.0}),
                                          ("unipc", {"order": 1, "disable_corrector": True}),
                                          ("dpm++2m", {"lower_order_final": True}),
                                          ("dpm++3m", {"lower_order_final": True})])
def test_first_order_methods_are_ddim(name, options):
    """Order 1 of every exponential integrator is DDIM; with two steps (< 15) lower_order_final
    makes the multistep methods first order throughout."""
    proc, model = _setup("vp_linear", SMOOTH)
    steps = 2 if name.startswith("dpm++") else 8
    ref = _run(model, proc, (16, 2), "ddim", steps=steps, grid="uniform_logsnr")  # one grid for all samplers
    x = _run(model, proc, (16, 2), name, steps=steps, grid="uniform_logsnr", **options)
    assert torch.allclose(x, ref, rtol=1e-11, atol=1e-12)
    y = _run(model, proc, (16, 2), "dpm++2m", steps=2, lower_order_final=False, grid="uniform_logsnr")
    assert not torch.allclose(y, ref, atol=1e-6)


def test_deis_on_even_rho_steps_is_plms():
    """Lagrange weights in rho on an evenly spaced grid are the Adams-Bashforth weights."""
    proc, model = _setup("edm", SMOOTH)
    kw = {"t_max": 3.0, "t_min": 0.1, "grid": "uniform_t", "steps": 20}
    for k in (2, 3):
        a = _run(model, proc, (16, 2), "deis", order=k, space="rho", **kw)
        b = _run(model, proc, (16, 2), "pndm", order=k, warmup="ab", lower_order_final=True, **kw)
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-10)


def test_ghvb_with_beta_one_is_plms():
    """GHVB(beta = 1) against a direct PLMS loop: eps combined by AB weights, DDIM transfer."""
    proc, model = _setup("vp_linear", SMOOTH)
    grid = make_grid(proc.schedule, 10)
    y = torch.randn(8, 2, generator=torch.Generator().manual_seed(0), dtype=F64) * proc.schedule.prior_std()
    x = pd.sample(lambda st, t: {"x": model(st["x"], t)}, proc, {"x": y}, sampler="ghvb", grid=grid, dtype=F64,
                  order=4, beta=1.0, lower_order_final=False)["x"]
    ab = {1: [1.0], 2: [3 / 2, -1 / 2], 3: [23 / 12, -16 / 12, 5 / 12], 4: [55 / 24, -59 / 24, 37 / 24, -9 / 24]}
    eps_hist = []
    for i in range(10):
        c, cn = proc.coefs(grid[i]), proc.coefs(grid[i + 1])
        eps = model(y, grid[i].expand(8))
        eps_hist.insert(0, eps)
        w = ab[min(4, i + 1)]
        e_hat = sum(wk * ek for wk, ek in zip(w, eps_hist))
        y = cn.alpha * (y - c.sigma * e_hat) / c.alpha + cn.sigma * e_hat
    assert torch.allclose(x, y, rtol=1e-10, atol=1e-10)
    assert ghvb_weights(4, 1.0) == pytest.approx([55 / 24, -59 / 24, 37 / 24, -9 / 24])
    assert ghvb_weights(3, 0.5) == pytest.approx([(18 + 2.5) / 6, -(24 - 4) / 6, (6 - 0.5) / 6])  # paper, Alg. 2


def test_ddpm_is_the_exact_posterior_and_ddim_eta_one():
    """One ddpm step from a fixed x_t with a fixed clean estimate draws from q(x_s | x_t, x0)."""
    proc = GaussianProcess("vp_linear")
    n = 40000
    xt = torch.full((n, 1), 0.7, dtype=F64)
    c0 = 0.3
    grid = torch.tensor([0.6, 0.4], dtype=F64)

    def model(state, t):
        return {"x": torch.full_like(state["x"], c0)}

    kw = dict(grid=grid, prediction="x0", dtype=F64, seed=11)
    x = pd.sample(model, proc, {"x": xt}, sampler="ddpm", **kw)["x"]
    x_eta = pd.sample(model, proc, {"x": xt}, sampler="ddim", eta=1.0, **kw)["x"]
    assert torch.equal(x, x_eta)
    ct, cs = proc.coefs(grid[0]), proc.coefs(grid[1])
    a = ct.alpha / cs.alpha
    b2 = ct.sigma**2 - a**2 * cs.sigma**2
    mean = a * cs.sigma**2 / ct.sigma**2 * 0.7 + cs.alpha * b2 / ct.sigma**2 * c0
    var = cs.sigma**2 * b2 / ct.sigma**2
    assert abs(x.mean() - mean) < 5 * math.sqrt(var / n)
    assert abs(x.var() / var - 1) < 5 * math.sqrt(2 / n)


def test_pc_with_the_euler_predictor_and_no_corrector_is_euler_maruyama():
    """GDSS's "Euler" predictor is score_sde's Euler-Maruyama step: without a corrector the two
    samplers draw the same noise and give the same samples."""
    proc, model = _setup("vp_linear", TARGET)
    for denoise in (False, True):
        a = _run(model, proc, (64, 2), "pc", steps=12, predictor="euler", n_corrector=0, denoise=denoise)
        b = _run(model, proc, (64, 2), "euler_maruyama", steps=12, denoise=denoise)
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    c = _run(model, proc, (64, 2), "pc", steps=12, n_corrector=0)  # the reverse-diffusion predictor differs
    assert not torch.allclose(a, c)


@pytest.mark.parametrize("name", ["pc", "euler_maruyama"])
def test_denoise_leaves_out_only_the_last_steps_noise(name):
    """``denoise=True`` (GDSS's noise_removal) returns the last step's mean: the samples differ
    from the noisy ones by the last step's noise alone, of the Euler-Maruyama step's scale."""
    proc, model = _setup("vp_linear", TARGET)
    kw = {"predictor": "euler"} if name == "pc" else {}
    noisy = _run(model, proc, (4000, 2), name, steps=10, grid="uniform_t", **kw)
    mean = _run(model, proc, (4000, 2), name, steps=10, grid="uniform_t", denoise=True, **kw)
    grid = make_grid(proc.schedule, 10, "uniform_t")
    t, s_ = grid[-2], grid[-1]
    c = proc.coefs(t.to(F64))
    f = c.dalpha / c.alpha
    g2 = 2 * c.sigma * c.dsigma - 2 * f * c.sigma**2
    std = float(torch.sqrt((t - s_) * g2))
    assert float((noisy - mean).std()) == pytest.approx(std, rel=0.05)
    assert float((noisy - mean).mean().abs()) < 5 * std / math.sqrt(8000)


def test_edm_is_karras_algorithm_2():
    """The churned Heun step on the EDM schedule equals a direct transcription of Karras et
    al.'s Algorithm 2 driven by the same noise stream (prior draw first, then one draw per step)."""
    proc, model = _setup("edm", SMOOTH)
    n, churn, s_tmin, s_tmax, s_noise = 12, 30.0, 0.05, 50.0, 1.003
    x = _run(model, proc, (8, 2), "edm", steps=n, seed=4, s_churn=churn, s_tmin=s_tmin, s_tmax=s_tmax,
             s_noise=s_noise)
    ts = make_grid(proc.schedule, n)
    noise = pd.Noise(8, seed=4)
    y = noise.randn((2,), F64) * proc.schedule.prior_std()

    def denoised(v, sigma):
        return SMOOTH.denoise(v, torch.tensor(1.0, dtype=F64), sigma)

    for i in range(n):
        t, t_next = ts[i], ts[i + 1]
        gamma = min(churn / n, math.sqrt(2) - 1) if s_tmin <= t <= s_tmax else 0.0
        t_hat = t * (1 + gamma)
        y_hat = y + torch.sqrt(t_hat**2 - t**2) * s_noise * noise.randn((2,), F64)
        d = (y_hat - denoised(y_hat, t_hat)) / t_hat
        y_next = y_hat + (t_next - t_hat) * d
        d2 = (y_next - denoised(y_next, t_next)) / t_next
        y = y_hat + (t_next - t_hat) * 0.5 * (d + d2)
    assert torch.allclose(x, y, rtol=0, atol=1e-8)  # rounding at noise levels ~70 (eps -> x0) is ~1e-14 * 70


@pytest.mark.parametrize("name,options", [("dpm_solver3", {}), ("edm", {"s_churn": 10.0}), ("unipc", {"order": 3}),
                                          ("dpm++2m_sde", {}), ("ghvb", {})])
def test_per_sample_grids(name, options):
    """A (K+1, B) grid gives each sample the result it gets alone on its own grid."""
    proc, model = _setup("vp_linear", SMOOTH)
    grids = torch.stack([make_grid(proc.schedule, 10, t_max=1.0 - 0.1 * b) for b in range(4)], dim=1)
    x = _run(model, proc, (4, 2), name, grid=grids, **options)
    for b in (0, 3):
        xb = _run(model, proc, (4, 2), name, grid=grids[:, b], **options)
        assert torch.allclose(x[b], xb[b], rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------------------- helpers
def test_phi_and_lagrange_weights():
    z = torch.tensor([-40.0, -3.0, -1.0, -0.999, -1e-3, 0.0, 1e-3, 0.999, 1.0, 5.0], dtype=F64)
    decimal.getcontext().prec = 60

    def exact_phi(k, v):  # (e^v - sum_{j<k} v^j / j!) / v^k in 60 digits
        if v == 0:
            return 1 / math.factorial(k)
        d = decimal.Decimal(v)
        return float((d.exp() - sum(d**j / math.factorial(j) for j in range(k))) / d**k)

    for k in range(1, 5):
        exact = torch.tensor([exact_phi(k, v) for v in z.tolist()], dtype=F64)
        assert torch.allclose(phi(k, z), exact, rtol=1e-12, atol=1e-300)
        assert torch.allclose(phi(k, z.float()), exact.float(), rtol=2e-5)  # no cancellation in float32
    nodes = [0.0, -0.7, -1.9]
    w = lagrange_weights(nodes, [1.0, 1 / 2, 1 / 3])  # integral over [0, 1]
    for c in ([1, 0, 0], [0.3, -2.0, 0], [1.0, 0.5, 4.0]):
        integral = c[0] + c[1] / 2 + c[2] / 3
        assert sum(wk * (c[0] + c[1] * v + c[2] * v * v) for wk, v in zip(w, nodes)) == pytest.approx(integral)


class _Ctx:
    def __init__(self, i, n, lof=True):
        self.i, self.n, self.options = i, n, {"lower_order_final": lof}


def test_lower_order_final_follows_diffusers():
    assert [step_order(3, _Ctx(i, 10), i + 1) for i in range(10)] == [1, 2, 3, 3, 3, 3, 3, 3, 2, 1]
    assert [step_order(3, _Ctx(i, 20), i + 1) for i in range(20)][-3:] == [3, 3, 3]  # >= 15 steps: unchanged
    assert [step_order(2, _Ctx(i, 5, False), i + 1) for i in range(5)] == [1, 2, 2, 2, 2]
    # UniPC's reference lowers the final orders at any step count
    assert [step_order(3, _Ctx(i, 20), i + 1, below=None) for i in range(20)][-3:] == [3, 2, 1]


# ----------------------------------------------------------------------------- seeding, fields, dtypes
@pytest.mark.parametrize("name,opts", [("ddpm", {}), ("dpm++2m_sde", {}), ("pc", {"norm": "sample"}),
                                       ("dpm++3m", {}), ("unipc", {})])
def test_samples_do_not_depend_on_the_batch(name, opts):
    proc, model = _setup("vp_linear", TARGET)
    x3 = _run(model, proc, (3, 2), name, steps=10, seed=7, **opts)
    x7 = _run(model, proc, (7, 2), name, steps=10, seed=7, **opts)
    assert torch.allclose(x3, x7[:3], rtol=0, atol=1e-13)


def test_a_single_field_starts_from_a_given_tensor():
    """``sample(model, process, x)`` with a tensor starts from it, as the state form
    ``{"x": x}`` does; a wrongly shaped initial value is refused by the model's own shapes."""
    proc, model = _setup("vp_linear", TARGET)
    x1 = torch.randn(5, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    single = pd.sample(model, proc, x1, sampler="dpm++2m", steps=6, dtype=torch.float64)
    state = pd.sample(lambda st, t: {"x": model(st["x"], t)}, {"x": proc}, {"x": x1}, sampler="dpm++2m", steps=6,
                      dtype=torch.float64)["x"]
    assert single.shape == (5, 2) and torch.equal(single, state)
    drawn = pd.sample(model, proc, (5, 2), sampler="dpm++2m", steps=6, seed=0, dtype=torch.float64)
    assert not torch.allclose(single, drawn)


MULTI = ["ddim", "euler", "heun", "edm", "dpm_solver1", "dpm++2m", "dpm++3m", "deis", "pndm", "ghvb", "unipc"]


@pytest.mark.parametrize("name", [*MULTI, "dpm_solver2", "dpm_solver3"])
def test_two_fields_with_different_schedules_evolve_independently(name):
    """A VP field and a VE field packed into one state on one time grid equal each field
    sampled alone (elementwise methods). Singlestep DPM-Solver places its intermediate stages
    by the first field's log-SNR: that field matches exactly, the other one closely."""
    vp, ve = GaussianProcess("vp_linear"), GaussianProcess("ve")
    ma = ExactDenoiser(GaussianMixture.random(k=3, dim=2, seed=1), vp)
    mb = ExactDenoiser(GaussianMixture.random(k=2, dim=3, seed=2, spread=3.0), ve)
    g = torch.Generator().manual_seed(0)
    a0 = vp.schedule.prior_std() * torch.randn(16, 2, generator=g, dtype=F64)
    b0 = ve.schedule.prior_std() * torch.randn(16, 3, generator=g, dtype=F64)
    kw = dict(sampler=name, grid=make_grid(vp.schedule, 12), dtype=F64, seed=0)

    def joint(state, t):
        return {"a": ma(state["a"], t), "b": mb(state["b"], t)}

    both = pd.sample(joint, {"a": vp, "b": ve}, {"a": a0, "b": b0}, **kw)
    alone_a = pd.sample(lambda s, t: {"a": ma(s["a"], t)}, {"a": vp}, {"a": a0}, **kw)["a"]
    alone_b = pd.sample(lambda s, t: {"b": mb(s["b"], t)}, {"b": ve}, {"b": b0}, **kw)["b"]
    assert torch.allclose(both["a"], alone_a, rtol=1e-10, atol=1e-10)
    if name in MULTI:
        assert torch.allclose(both["b"], alone_b, rtol=1e-10, atol=1e-9)
    else:
        assert (both["b"] - alone_b).abs().max() < 0.05 * alone_b.abs().max()


@pytest.mark.parametrize("model_dtype", [torch.float32, torch.bfloat16])
def test_float64_solver_with_a_low_precision_model(model_dtype):
    proc, model = _setup("vp_linear", SMOOTH)

    def low(x, t):
        return model(x.to(model_dtype), t.to(model_dtype))

    ref = _run(model, proc, (64, 2), "dpm++3m", steps=12)
    x = _run(low, proc, (64, 2), "dpm++3m", steps=12)
    assert x.dtype == F64 and torch.isfinite(x).all()
    tol = 1e-3 if model_dtype == torch.float32 else 0.15
    assert (x - ref).abs().max() < tol
    x32 = pd.sample(model, proc, (64, 2), sampler="unipc", steps=12, seed=0, dtype=torch.float32)
    assert x32.dtype == torch.float32
    assert (x32.double() - _run(model, proc, (64, 2), "unipc", steps=12)).abs().max() < 1e-3


@pytest.mark.parametrize("name", [n for n in GAUSSIAN if n != "rk45"])
def test_steps_never_read_tensors_back_to_the_host(name, host_reads_forbidden):
    """No .item(), float(), bool() or Python branching on tensor values inside a step (rk45 is
    the documented exception), time-shifted model included."""
    proc, model = _setup("vp_linear", SMOOTH)
    options = {"s_churn": 5.0} if name == "edm" else {}
    state_model, fields, state, noise, _ = prepare(model, proc, (4, 2), seed=0, dtype=F64,
                                                   wrap_model=time_shift(proc))
    loop = SamplingLoop(state_model, fields, state, noise, sampler=name, steps=6, dtype=F64, **options)
    with host_reads_forbidden():
        for i in range(loop.n):
            loop.step(i)
    assert torch.isfinite(loop.finish()["x"]).all()


# ----------------------------------------------------------------------------- errors
def test_unknown_sampler_and_options_are_named():
    proc, model = _setup("vp_linear", SMOOTH)
    with pytest.raises(RegistryError, match=r"unknown sampler 'dpm\+\+4m'.*Allowed: .*dpm\+\+3m.*unipc"):
        _run(model, proc, (4, 2), "dpm++4m")
    with pytest.raises(RegistryError, match=r"has no option orderr \(did you mean order\?\); allowed: "
                                            r"lower_order_final, order"):
        _run(model, proc, (4, 2), "deis", orderr=2)
    with pytest.raises(ValueError, match="order=5 is not allowed; choose one of 1, 2, 3"):
        _run(model, proc, (4, 2), "deis", order=5)
    with pytest.raises(ValueError, match="'bh1', 'bh2'"):
        _run(model, proc, (4, 2), "unipc", variant="bh3")
    with pytest.raises(ValueError, match="'midpoint', 'heun'"):
        _run(model, proc, (4, 2), "dpm++2m_sde", solver_type="rk")


# ----------------------------------------------------------------------------- time shift
def test_time_shift_picks_the_time_whose_variance_matches():
    proc = GaussianProcess("vp_linear")
    s = proc.schedule
    seen = []

    def model(state, t):
        seen.append(t)
        return {"x": torch.zeros_like(state["x"])}

    t = torch.full((3,), 0.5, dtype=F64)
    lam = s.lam(t[0])
    target = s.t_of_lam(lam - 0.3)  # a candidate of the window +-0.5 (steps of 0.05)
    z = torch.randn(3, 4000, generator=torch.Generator().manual_seed(0), dtype=F64)
    z = (z - z.mean(1, keepdim=True)) / z.std(1, unbiased=False, keepdim=True)
    x = torch.stack([s.sigma(target) * z[0], s.sigma(t[0]) * z[1], 5.0 * z[2]])
    time_shift(proc, window=0.5, cutoff=0.0)(model)({"x": x}, t)
    got = seen[-1]
    assert got[0].item() == pytest.approx(target.item(), rel=1e-9)
    assert got[1].item() == 0.5  # already matched: the grid time itself
    assert got[2].item() == pytest.approx(s.t_of_lam(lam - 0.5).item(), rel=1e-9)  # clipped to the window
    time_shift(proc, window=0.5, cutoff=100.0)(model)({"x": x}, t)
    assert torch.equal(seen[-1], t)  # below the cutoff: unchanged


def test_time_shift_in_the_sampler():
    proc, model = _setup("vp_linear", TARGET)
    base = _run(model, proc, (256, 2), "dpm++2m", steps=10)
    same = _run(model, proc, (256, 2), "dpm++2m", steps=10, wrap_model=time_shift(proc, window=0.0))
    assert torch.equal(base, same)
    shifted = _run(model, proc, (256, 2), "dpm++2m", steps=10, wrap_model=time_shift(proc))
    assert torch.isfinite(shifted).all() and not torch.equal(base, shifted)


def test_churned_edm_makes_two_calls_per_step_and_the_same_samples(monkeypatch):
    """``lazy``: with churn the EDM step evaluates at (x_hat, t_hat) itself, so the loop skips
    its own call at (x, t) on Gaussian states: 2 calls per step (EDM's count) instead of 3, and
    exactly the samples the wasteful loop gave."""
    proc, model = _setup("edm", TARGET)
    opts = {"s_churn": 20.0, "s_tmin": 0.05, "s_tmax": 50.0}
    model.calls = 0
    lazy = _run(model, proc, (16, 2), "edm", steps=10, **opts)
    lazy_calls, model.calls = model.calls, 0
    import dataclasses

    eager_def = dataclasses.replace(get_sampler("edm"), lazy=None)
    monkeypatch.setitem(SAMPLERS._items, "edm", (eager_def, SAMPLERS._items["edm"][1]))
    eager = _run(model, proc, (16, 2), "edm", steps=10, **opts)
    assert torch.equal(lazy, eager)
    assert lazy_calls == 20 and model.calls == 30


# ----------------------------------------------------------------------------- NFE budgets, per-step orders
def test_budget_orders_end_with_a_first_order_step():
    """DPM-Solver-fast's plan (3, ..., 3, 2, 1 and 3, ..., 3, 1), always ending first order."""
    assert [budget_orders(3, n) for n in range(1, 11)] == [
        (1,), (1, 1), (2, 1), (3, 1), (3, 1, 1), (3, 2, 1), (3, 3, 1), (3, 3, 1, 1), (3, 3, 2, 1), (3, 3, 3, 1)]
    assert [budget_orders(2, n) for n in (1, 2, 5, 6, 10)] == [(1,), (1, 1), (2, 2, 1), (2, 2, 1, 1),
                                                               (2, 2, 2, 2, 1, 1)]
    for order in (1, 2, 3):
        for nfe in range(1, 60):
            plan = budget_orders(order, nfe)
            assert sum(plan) == nfe and plan[-1] == 1 and max(plan) <= order
            assert plan.count(order) >= (nfe - 1) // order  # as many full-order steps as fit
    with pytest.raises(ValueError, match="orders 1-3"):
        budget_orders(4, 8)
    with pytest.raises(ValueError, match=">= 1"):
        budget_orders(2, 0)


def test_for_budget_plans_steps_from_an_nfe_budget():
    assert for_budget("ddim", 7) == {"steps": 7}
    assert for_budget("heun", 7) == {"steps": 3} and for_budget("heun", 1) == {"steps": 1}
    assert for_budget("dpm_solver3", 5) == {"steps": 3, "orders": (3, 1, 1)}
    assert for_budget("dpm_solver2", 10, stages="grid") == {"steps": 6, "orders": (2, 2, 2, 2, 1, 1), "stages": "grid"}
    assert for_budget("dpm_solver2", 10, orders=(2, 2, 2, 2, 2)) == {"steps": 5, "orders": (2, 2, 2, 2, 2)}
    with pytest.raises(ValueError, match="adaptive"):
        for_budget("rk45", 10)
    with pytest.raises(ValueError, match=">= 1"):
        for_budget("ddim", 0)


@pytest.mark.parametrize("name", ["dpm_solver2", "dpm_solver3"])
@pytest.mark.parametrize("stages", ["logsnr", "grid"])
def test_singlestep_dpm_solver_spends_the_whole_budget(name, stages):
    """With for_budget's orders a singlestep run makes exactly nfe model calls (without them,
    NFE // order steps of the full order leave calls unspent)."""
    proc, model = _setup("vp_linear", TARGET)
    for nfe in (1, 2, 4, 5, 7, 10, 11):
        model.calls = 0
        x = _run(model, proc, (8, 2), name, seed=0, stages=stages, **for_budget(name, nfe))
        assert model.calls == nfe and torch.isfinite(x).all(), (nfe, model.calls)
    model.calls = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # dpm_solver3 with steps=1: the one-step warning
        _run(model, proc, (8, 2), name, steps=5 // get_sampler(name).nfe_per_step, seed=0)
    assert model.calls < 5


def test_per_step_orders():
    """Steps take their own order; each step is as wide in the grid's parameter as its model
    calls; all steps at the full order are the default, all at order 1 are DDIM."""
    proc, model = _setup("vp_linear", TARGET)
    seen = []

    def spy(x, t):
        seen.append(float(t[0]))
        return model(x, t)

    full = _run(model, proc, (16, 2), "dpm_solver3", steps=3, grid="quadratic")
    same = _run(model, proc, (16, 2), "dpm_solver3", steps=3, grid="quadratic", orders=(3, 3, 3))
    assert torch.equal(full, same)
    ddim = _run(model, proc, (16, 2), "ddim", steps=4, grid="uniform_logsnr")
    ones = _run(model, proc, (16, 2), "dpm_solver2", steps=4, grid="uniform_logsnr", orders=[1, 1, 1, 1])
    assert torch.allclose(ddim, ones, rtol=0, atol=1e-12)
    # orders (2, 2, 1) on uniform t: the steps end at calls 2, 4 and 5 of a 5-interval grid
    fine = torch.linspace(1.0, 1e-3, 6, dtype=F64)
    _run(spy, proc, (4, 2), "dpm_solver2", steps=3, grid="uniform_t", orders=(2, 2, 1), stages="grid")
    assert seen == pytest.approx(fine[:-1].tolist(), abs=1e-6)  # stages on the grid: every point is a call
    seen.clear()
    _run(spy, proc, (4, 2), "dpm_solver2", steps=3, grid="uniform_t", orders=(2, 2, 1))
    starts = [seen[0], seen[2], seen[4]]
    assert starts == pytest.approx([1.0, float(fine[2]), float(fine[4])], abs=1e-6)
    assert fine[2] > seen[3] > fine[4]  # the second step's stage sits inside it (log-SNR midpoint)


def test_per_step_orders_are_checked():
    proc, model = _setup("vp_linear", SMOOTH)
    with pytest.raises(ValueError, match="orders lists 2 steps, steps=3"):
        _run(model, proc, (4, 2), "dpm_solver3", steps=3, orders=(3, 2))
    with pytest.raises(ValueError, match=r"step 1 has order 3; this sampler takes 1\.\.2"):
        _run(model, proc, (4, 2), "dpm_solver2", steps=2, orders=(2, 3))
    grid = torch.linspace(1.0, 1e-3, 4, dtype=F64)  # a user grid lists the steps' ends: 3 steps
    with pytest.raises(ValueError, match="orders lists 2 steps, the grid has 3"):
        _run(model, proc, (4, 2), "dpm_solver2", grid=grid, orders=(2, 1))
    assert torch.isfinite(_run(model, proc, (4, 2), "dpm_solver2", grid=grid, orders=(2, 1, 1))).all()
    with pytest.raises(ValueError, match="spends 5 grid intervals"):  # stages='grid': one interval per call
        _run(model, proc, (4, 2), "dpm_solver2", grid=grid, orders=(2, 2, 1), stages="grid")


@pytest.mark.parametrize("name", [n for n in GAUSSIAN if n != "rk45"])
@pytest.mark.parametrize("end", [{"final_zero": True}, {"t_min": 0.0}])
def test_grids_ending_at_sigma_zero_stay_finite(name, end):
    """A grid that ends at sigma = 0 (``final_zero`` or ``t_min = 0``) never takes the log of a
    zero sigma (the single-step order-3 NaN of diffusers #9007): every sampler stays finite."""
    proc, model = _setup("vp_linear", TARGET)
    x = _run(model, proc, (32, 2), name, steps=6, **end)
    assert torch.isfinite(x).all(), f"{name} with {end} gave non-finite samples"


def test_one_step_of_a_multi_call_method_warns():
    """One step of heun / dpm_solver2 over the whole range lands far from the data (measured on
    the exact mixture under the EDM process: a spread about 40x the data's); a first-order step,
    two steps, or a first-order ``orders`` plan are quiet."""
    proc, model = _setup("edm", TARGET)
    with pytest.warns(UserWarning, match="one 2-call step over the whole range"):
        x = _run(model, proc, (500, 2), "heun", steps=1)
    assert x.std() > 10 * TARGET.sample(2000, generator=torch.Generator().manual_seed(0)).std()
    with pytest.warns(UserWarning, match="'dpm_solver3' takes one 3-call step"):
        _run(model, proc, (8, 2), "dpm_solver3", steps=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        quiet = (("ddim", {"steps": 1}), ("heun", {"steps": 2}), ("dpm_solver2", {"steps": 1, "orders": (1,)}))
        for sampler, kw in quiet:
            _run(model, proc, (8, 2), sampler, **kw)
