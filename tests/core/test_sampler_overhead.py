"""Per-step solver overhead of the Gaussian samplers, checked without timing.

The steps were rewritten to dispatch fewer tensor operations (fused ``addcmul``, one Taylor
evaluation for all ``phi_k``, no arithmetic with exact Python zeros and ones, branch selection
on the small coefficients instead of a full-size ``torch.where``). These tests pin both halves:

- the results equal the textbook formulas they replace (float64, same grid, same model),
  including the ends of a rectified flow where the log-SNR step is infinite;
- the number of tensor operations a step dispatches stays bounded, and no step selects
  between full-size tensors with ``torch.where`` (several times an elementwise pass on CPU).
"""

import dataclasses
import math

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import polydiff as pd
from polydiff.grids import make_grid
from polydiff.processes.gaussian import GaussianProcess
from polydiff.samplers import SamplingLoop, prepare
from polydiff.samplers.coefs import clip_lam, lagrange_weights, phi, phis
from polydiff.toy.gmm import ExactDenoiser, GaussianMixture

F64 = torch.float64
TARGET = GaussianMixture.random(k=3, dim=2, spread=2.0, std=0.3, seed=3)


# ----------------------------------------------------------------------------- textbook references
def _series_phi(k, z):  # the Taylor series / closed form, one phi at a time
    small = z.abs() < 1
    zs, zl = torch.where(small, z, 0.0), torch.where(small, 1.0, z)
    series = torch.full_like(z, 1 / math.factorial(k + 15))
    for j in range(14, -1, -1):
        series = series * zs + 1 / math.factorial(j + k)
    closed = torch.expm1(zl)
    for j in range(1, k):
        closed = closed - zl**j / math.factorial(j)
    return torch.where(small, series, closed / zl**k)


def _naive_weights(nodes, moments):
    out = []
    for k, a in enumerate(nodes):
        poly, den = [1.0], 1.0
        for m, c in enumerate(nodes):
            if m != k:
                poly = [(poly[j - 1] if j > 0 else 0.0) - (c * poly[j] if j < len(poly) else 0.0)
                        for j in range(len(poly) + 1)]
                den = den * (a - c)
        out.append(sum(p * mo for p, mo in zip(poly, moments)) / den)
    return out


def _lam_step(ct, cs):
    raw = cs.lam - ct.lam
    return clip_lam(cs.lam) - clip_lam(ct.lam), torch.exp(-raw), torch.isfinite(raw)


def ref_heun(x, d, e, ct, cs, hist, ctx):
    dt = ctx.s - ctx.t
    v1 = ct.dalpha * d + ct.dsigma * e
    d2, e2 = ctx.denoise(x + dt * v1, ctx.s)
    return x + dt * 0.5 * (v1 + cs.dalpha * d2 + cs.dsigma * e2), hist


def ref_edm(x, d, e, ct, cs, hist, ctx):  # without churn
    dt = ctx.s - ctx.t
    v1 = ct.dalpha * d + ct.dsigma * e
    x1 = x + dt * v1
    d2, e2 = ctx.denoise(x1, ctx.s)
    x2 = x + dt * 0.5 * (v1 + cs.dalpha * d2 + cs.dsigma * e2)
    return torch.where(cs.sigma > 0, x2, x1), ctx.t if hist is None else hist


def ref_dpmpp_2m(x, d, e, ct, cs, hist, ctx):  # the midpoint form
    h, emh, ok = _lam_step(ct, cs)
    x_s = (cs.sigma / ct.sigma) * x + cs.alpha * (1 - emh) * d
    lam = clip_lam(ct.lam)
    if hist and not (ctx.n < 15 and ctx.i == ctx.n - 1):
        d_prev, lam_prev = hist[0]
        corr = cs.alpha * (1 - emh) * h / (2 * (lam - lam_prev)) * (d - d_prev)
        x_s = torch.where(ok, x_s + corr, x_s)
    return x_s, ((d, lam),)


def ref_dpmpp_3m(x, d, e, ct, cs, hist, ctx):  # exact Lagrange integration
    order = 3
    h, emh, ok = _lam_step(ct, cs)
    x_s = (cs.sigma / ct.sigma) * x + cs.alpha * (1 - emh) * d
    lam = clip_lam(ct.lam)
    k = min(order, 1 + len(hist or ()))
    if ctx.n < 15:
        k = max(min(k, ctx.n - ctx.i), 1)
    if k > 1:
        prev = hist[: k - 1]
        nodes = [0.0] + [(lp - lam) / h for _, lp in prev]
        w = _naive_weights(nodes, [math.factorial(j) * _series_phi(j + 1, -h) for j in range(k)])
        corr = sum(wk * (dk - d) for wk, (dk, _) in zip(w[1:], prev))
        x_s = torch.where(ok, x_s + cs.alpha * h * corr, x_s)
    return x_s, (((d, lam),) + (hist or ()))[: order - 1]


def _ref_dpm_solver(order):
    def step(x, d, e, ct, cs, hist, ctx):
        def stage(r):
            lt, ls = clip_lam(ct.lam[:, :1]), clip_lam(cs.lam[:, :1])
            u = ctx.t_of_lam(lt + r * (ls - lt)).to(ct.lam.dtype)
            return u, ctx.coefs(u.reshape(-1))

        ddim = cs.alpha * d + cs.sigma * e
        h, _, ok = _lam_step(ct, cs)
        lt = clip_lam(ct.lam)
        if order == 2:
            u1, c1 = stage(0.5)
            _, e1 = ctx.denoise(torch.where(ok, c1.alpha * d + c1.sigma * e, x), u1)
            corr = cs.sigma * h * _series_phi(1, h) * h / (2 * (clip_lam(c1.lam) - lt)) * (e1 - e)
            return torch.where(ok, ddim - corr, ddim), hist
        (u1, c1), (u2, c2) = stage(1 / 3), stage(2 / 3)
        h1, h2 = clip_lam(c1.lam) - lt, clip_lam(c2.lam) - lt
        _, e1 = ctx.denoise(torch.where(ok, c1.alpha * d + c1.sigma * e, x), u1)
        x2 = c2.alpha * d + c2.sigma * e - c2.sigma * h2**2 * _series_phi(2, h2) / h1 * (e1 - e)
        _, e2 = ctx.denoise(torch.where(ok, x2, x), u2)
        return torch.where(ok, ddim - cs.sigma * h**2 * _series_phi(2, h) / h2 * (e2 - e), ddim), hist
    return step


def ref_pndm(x, d, e, ct, cs, hist, ctx):
    ab = {1: [1.0], 2: [1.5, -0.5], 3: [23 / 12, -16 / 12, 5 / 12], 4: [55 / 24, -59 / 24, 37 / 24, -9 / 24]}
    hist = hist or ()
    k = min(4, 1 + len(hist))
    if ctx.n < 15:
        k = max(min(k, ctx.n - ctx.i), 1)
    vs = (e, *hist)
    if not hist:
        return cs.alpha * d + cs.sigma * e, vs[:3]
    e_hat = sum(w * v for w, v in zip(ab[k], vs))
    rho = (ct.sigma / ct.alpha).clamp(max=math.exp(30.0))
    return cs.alpha * (d + rho * (e - e_hat)) + cs.sigma * e_hat, vs[:3]


# the references above are the variants these options select (the defaults are checked against the
# published formulas in test_sampler_variants.py)
OPTIONS = {"dpm++3m": {"variant": "lagrange"}, "pndm": {"warmup": "ab", "lower_order_final": True}}
REFERENCES = {"heun": ref_heun, "edm": ref_edm, "dpm++2m": ref_dpmpp_2m, "dpm++3m": ref_dpmpp_3m,
              "dpm_solver2": _ref_dpm_solver(2), "dpm_solver3": _ref_dpm_solver(3), "pndm": ref_pndm}
CASES = [("vp_linear", "eps", 6), ("vp_linear", "eps", 20), ("edm", "eps", 7), ("linear", "x0", 5)]


def _loops(name, schedule, prediction, steps, step=None):
    proc = GaussianProcess(schedule)
    den = ExactDenoiser(TARGET, proc, prediction)
    model, fields, state, noise, _ = prepare(lambda x, t: den(x, t), proc, (64, 2), prediction=prediction, seed=1,
                                             dtype=F64)
    loop = SamplingLoop(model, fields, state, noise, sampler=name, steps=steps, dtype=F64, **OPTIONS.get(name, {}))
    if step is not None:
        loop.gdef = dataclasses.replace(loop.gdef, step=step)
    return loop


@pytest.mark.parametrize("name", list(REFERENCES))
@pytest.mark.parametrize("schedule,prediction,steps", CASES)
def test_steps_equal_the_textbook_formulas(name, schedule, prediction, steps):
    """Whole runs (float64) agree with the plain formulas to rounding, ends of the grid included
    (``linear``: alpha = 0 at the first time, an infinite log-SNR step)."""
    ours, ref = _loops(name, schedule, prediction, steps), _loops(name, schedule, prediction, steps,
                                                                   REFERENCES[name])
    for i in range(ours.n):
        ours.step(i)
        ref.step(i)
    x, y = ours.finish()["x"], ref.finish()["x"]
    assert torch.isfinite(y).all()
    assert torch.allclose(x, y, rtol=1e-11, atol=1e-11 * float(y.abs().max()))


def test_phis_stacks_every_phi_and_matches_the_series():
    z = torch.tensor([[-59.0, -3.0, -1.0, -0.999], [-1e-3, 0.0, 1e-3, 0.5], [0.999, 1.0, 5.0, 30.0]], dtype=F64)
    p = phis(z, 4)
    assert p.shape == (3, 4, 4)
    for k in range(1, 5):
        assert torch.allclose(p[..., k - 1], _series_phi(k, z), rtol=1e-13, atol=0)
        assert torch.allclose(phi(k, z), p[..., k - 1], rtol=1e-15, atol=0)
        assert torch.allclose(phi(k, z.float()), _series_phi(k, z).float(), rtol=2e-6)
    assert torch.equal(phi(0, z), torch.exp(z))


def test_lagrange_weights_skip_python_constants_but_not_values():
    a, b = torch.tensor([-0.7, -1.3], dtype=F64), torch.tensor([-1.9, -2.2], dtype=F64)
    moments = [torch.tensor([0.9, 0.8], dtype=F64), 0.4, torch.tensor([0.3, 0.25], dtype=F64)]
    nodes = [0.0, a, b]
    full, naive = lagrange_weights(nodes, moments), _naive_weights(nodes, moments)
    for w, v in zip(full, naive):
        assert torch.allclose(torch.as_tensor(w), torch.as_tensor(v), rtol=1e-14, atol=0)
    assert all(torch.equal(w, v) for w, v in zip(lagrange_weights(nodes, moments, start=1), full[1:]))
    assert lagrange_weights([0.0, 1.0], [1.0, 0.5]) == pytest.approx([0.5, 0.5])  # trapezoid, pure Python


# ----------------------------------------------------------------------------- operation counts
class _Count(TorchDispatchMode):
    """Counts the aten operations a step dispatches itself (model calls, driver and schedule
    evaluations through the context are paused), and its full-size ``where`` selections."""

    def __init__(self, numel):
        super().__init__()
        self.numel, self.ops, self.big_where, self.paused = numel, 0, 0, False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if not self.paused:
            self.ops += 1
            if func.overloadpacket is torch.ops.aten.where and out.numel() >= self.numel:
                self.big_where += 1
        return out

    def pause(self, fn):
        def call(*args, **kwargs):
            self.paused = True
            try:
                return fn(*args, **kwargs)
            finally:
                self.paused = False
        return call


# most tensor operations one step of each method may dispatch itself (measured at step 5 of 20 on
# vp_linear: ddim 3, euler 4, heun 8, edm 10, dpm_solver1 2, dpm_solver2 31, dpm_solver3 62, dpm++2m 21,
# dpm++3m 60, pndm 10; before the rewrite: euler 6, heun 13, edm 15, dpm_solver1 3, dpm_solver2 78,
# dpm_solver3 145, dpm++2m 27, dpm++3m 216, pndm 19, and full-size wheres in dpm_solver2/3 and dpm++2m/3m)
BUDGET = {"ddim": 5, "euler": 6, "heun": 10, "edm": 12, "dpm_solver1": 4, "dpm_solver2": 40, "dpm_solver3": 75,
          "dpm++2m": 25, "dpm++3m": 75, "pndm": 13}
FULL_WHERE: dict[str, int] = {}  # (edm's Euler fallback where sigma(s) = 0 runs on the last step only)


# on the grid, methods whose coefficients come from whole-grid tables (polydiff.samplers.coefs.coef_table)
# dispatch only their full-size operations per step (measured: dpm_solver2 6, dpm_solver3 10, dpm++2m 4,
# dpm++3m 6; off the grid 33, 63, 21, 59)
GRID_BUDGET = {**BUDGET, "dpm_solver2": 7, "dpm_solver3": 11, "dpm++2m": 5, "dpm++3m": 7}


@pytest.mark.parametrize("on_grid", [False, True], ids=["off-grid", "grid"])
@pytest.mark.parametrize("name", list(BUDGET))
def test_steps_dispatch_few_operations_and_no_full_size_where(name, on_grid):
    """Off the grid (explicit times, as steering's transition densities use) a step computes its
    coefficients itself; on the grid it reads them from the loop's tables, built once per grid
    (at the warm-up steps here, outside the count)."""
    batch = 256
    proc = GaussianProcess("vp_linear")
    model, fields, state, noise, _ = prepare(lambda x, t: 0.5 * x, proc, (batch, 3), seed=0)
    loop = SamplingLoop(model, fields, state, noise, sampler=name, steps=20)
    for i in range(4):  # warm-up: multistep methods reach their full order
        loop.step(i)
    i, st = 4, loop.state
    d, e = loop.split(loop.evaluate(st, loop.ts[i]), loop.x, loop._views[i], st)
    ctx = loop.context(i, None, None, st) if on_grid else loop.context(i, loop.ts[i], loop.ts[i + 1], st)
    if on_grid:  # build this step's tables outside the count (the loop builds each once per grid)
        loop.gdef.step(loop.x, d, e, loop.coefs[i], loop.coefs[i + 1], loop.hist, ctx)
    with _Count(batch * 3) as count:
        ctx = ctx._replace(denoise=count.pause(ctx.denoise), coefs=count.pause(ctx.coefs),
                           t_of_lam=count.pause(ctx.t_of_lam))
        x, _ = loop.gdef.step(loop.x, d, e, loop.coefs[i], loop.coefs[i + 1], loop.hist, ctx)
    assert torch.isfinite(x).all()
    assert count.big_where == FULL_WHERE.get(name, 0)
    budget = (GRID_BUDGET if on_grid else BUDGET)[name]
    assert count.ops <= budget, f"{name}: {count.ops} tensor operations in one step"


@pytest.mark.parametrize("name,options", [("dpm++2m", {}), ("dpm++3m", {}), ("dpm++3m", {"variant": "lagrange"}),
                                          ("dpm_solver2", {}), ("dpm_solver3", {}),
                                          ("dpm_solver3", {"stages": "grid"})])
@pytest.mark.parametrize("grid", ["uniform_logsnr", "karras"])
def test_grid_tables_equal_the_per_step_coefficients(name, options, grid):
    """The whole-grid coefficient tables give the steps the values they would compute themselves:
    every step run on the grid equals the same step with explicit times (no tables), float64."""
    gmm = GaussianMixture.random(k=3, dim=2, seed=2)
    proc = GaussianProcess("vp_linear")
    model, fields, state, noise, _ = prepare(ExactDenoiser(gmm, proc), proc, (64, 2), seed=0, dtype=torch.float64)
    loop = SamplingLoop(model, fields, state, noise, sampler=name, steps=9, grid=grid, dtype=torch.float64,
                        **options)
    for i in range(loop.n):
        st = loop.state
        d, e = loop.split(loop.evaluate(st, loop.ts[i]), loop.x, loop._views[i], st)
        ctx = loop.context(i, loop.ts[i], loop.ts[i + 1], st)
        if ctx.stages is None and options.get("stages") == "grid":  # off the grid: the grid's own stage times
            ctx = ctx._replace(stages=loop.context(i, None, None, st).stages)
        direct, _ = loop.gdef.step(loop.x, d, e, loop.coefs[i], loop.coefs[i + 1], loop.hist, ctx)
        loop.step(i)
        assert torch.allclose(loop.x, direct, rtol=1e-12, atol=1e-12), (i, (loop.x - direct).abs().max())


def test_edm_keeps_its_euler_fallback_where_sigma_reaches_zero():
    """A VE field ends at sigma > 0 while a VP field on the same grid reaches sigma = 0: EDM's
    last step must be Euler (finite) for the VP field (its second stage has no noise estimate)."""
    vp, ve = GaussianProcess("vp_linear"), GaussianProcess("ve")
    ma, mb = ExactDenoiser(TARGET, vp, "x0"), ExactDenoiser(TARGET, ve, "eps")

    def joint(state, t):
        return {"a": ma(state["a"], t), "b": mb(state["b"], t)}

    grid = torch.cat([make_grid(vp.schedule, 6), torch.zeros(1, dtype=F64)])
    out = pd.sample(joint, {"a": pd.FieldSpec(vp, prediction="x0"), "b": ve}, {"a": (32, 2), "b": (32, 2)},
                    sampler="edm", grid=grid, seed=0, dtype=F64)
    assert torch.isfinite(out["a"]).all() and torch.isfinite(out["b"]).all()


def test_finite_steps_and_noise_only_calls():
    """``ctx.finite`` marks the grid's steps whose log-SNR step is finite (a rectified flow's
    first step from alpha = 0 is not); ``denoise(..., x0=False)`` returns the same noise estimate
    without the clean one."""
    proc = GaussianProcess("linear")
    model, fields, state, noise, _ = prepare(ExactDenoiser(TARGET, proc, "velocity"), proc, (16, 2), seed=0,
                                             prediction="velocity")
    loop = SamplingLoop(model, fields, state, noise, sampler="unipc", steps=6, t_max=1.0, t_min=1e-3)
    st = loop.state
    flags = [loop.context(i, None, None, st).finite for i in range(loop.n)]
    assert flags == [False] + [True] * (loop.n - 1)
    assert not loop.context(2, loop.ts[2], loop.ts[3], st).finite  # off the grid: unknown
    ctx = loop.context(2, None, None, st)
    d, e = ctx.denoise(loop.x, ctx.s)
    none, e2 = ctx.denoise(loop.x, ctx.s, x0=False)
    assert none is None and torch.equal(e, e2) and d is not None
