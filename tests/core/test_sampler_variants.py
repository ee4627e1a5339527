"""The published defaults of ``dpm++3m``, ``deis`` and ``pndm`` and the variants they replaced.

- each default equals a plain float64 loop written from its paper / diffusers' formulas, and
  (when diffusers is installed: it is a bench-only dependency) diffusers' scheduler sample by
  sample on the benchmark's exact mixture model and grid;
- the published DPM-Solver++(3M) halves the exact weight of its second difference, so it is
  observed second order, while ``variant="lagrange"`` is third order;
- the kept variants (``variant="lagrange"``, ``space="rho"``, ``warmup="ab"``) still run and
  converge, and bad option values are rejected.
"""

import dataclasses
import math

import numpy as np
import pytest
import torch

import polydiff as pd
from polydiff.grids import make_grid
from polydiff.processes.gaussian import GaussianProcess
from polydiff.toy.gmm import ExactDenoiser, GaussianMixture

F64 = torch.float64
SMOOTH = GaussianMixture.random(k=3, dim=2, spread=1.0, std=0.5, seed=0)
TARGET = GaussianMixture.random(k=3, dim=2, spread=2.0, std=0.3, seed=3)


def _sample(model, proc, y, grid, sampler, **options):
    return pd.sample(lambda st, t: {"x": model(st["x"], t)}, proc, {"x": y}, sampler=sampler, grid=grid,
                     dtype=F64, seed=0, **options)["x"]


def _start(proc, n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 2, generator=g, dtype=F64) * proc.schedule.prior_std()


def _coef(proc, t):
    t = torch.as_tensor(t, dtype=F64)
    a, s = proc.schedule.alpha(t), proc.schedule.sigma(t)
    return a, s, torch.log(a / s)


# ----------------------------------------------------------------------------- plain reference loops
def ref_dpmpp_3m(model, proc, y, grid):
    """DPM-Solver++(3M) as printed (Lu et al. 2022; official code, diffusers): midpoint 2M while
    warming up, ``- alpha_s ((e^-h - 1 + h)/h^2 - 1/2) D2`` at order 3, lower orders on the
    last two steps of grids shorter than 15."""
    x, outs, n = y, [], len(grid) - 1
    for i in range(n):
        a_t, s_t, l_t = _coef(proc, grid[i])
        a_s, s_s, l_s = _coef(proc, grid[i + 1])
        e = model(x, grid[i].expand(x.shape[0]))
        outs.insert(0, ((x - s_t * e) / a_t, l_t))
        k = min(3, len(outs), n - i if n < 15 else 3)
        h = l_s - l_t
        m0 = outs[0][0]
        x_new = (s_s / s_t) * x - a_s * torch.expm1(-h) * m0
        if k >= 2:
            (m1, l1) = outs[1]
            r0 = (l_t - l1) / h
            d1_0 = (m0 - m1) / r0
            if k == 2:
                x_new = x_new - 0.5 * a_s * torch.expm1(-h) * d1_0
            else:
                (m2, l2) = outs[2]
                r1 = (l1 - l2) / h
                d1_1 = (m1 - m2) / r1
                d1 = d1_0 + r0 / (r0 + r1) * (d1_0 - d1_1)
                d2 = (d1_0 - d1_1) / (r0 + r1)
                p2 = torch.expm1(-h) / h + 1
                x_new = x_new + a_s * p2 * d1 - a_s * (p2 / h - 0.5) * d2
        x = x_new
    return x


def ref_deis_logrho(model, proc, y, grid, order=3):
    """DEIS log-rho AB: ``y = x / alpha`` moves by the integral over ``rho`` of the Lagrange
    polynomial of eps in ``log rho`` (Gauss-Legendre quadrature in ``log rho``, exact here)."""
    gl_v, gl_w = (torch.as_tensor(v, dtype=F64) for v in np.polynomial.legendre.leggauss(12))
    x, outs, n = y, [], len(grid) - 1
    for i in range(n):
        a_t, s_t, _ = _coef(proc, grid[i])
        a_s, s_s, _ = _coef(proc, grid[i + 1])
        u_t, u_s = torch.log(s_t / a_t), torch.log(s_s / a_s)
        outs.insert(0, (model(x, grid[i].expand(x.shape[0])), u_t))
        k = min(order, len(outs), n - i if n < 15 else order)
        nodes = [u for _, u in outs[:k]]
        us = 0.5 * (u_s - u_t) * gl_v + 0.5 * (u_s + u_t)
        integral = torch.zeros_like(x)
        for j, (ej, uj) in enumerate(outs[:k]):
            basis = torch.ones_like(us)
            for m, um in enumerate(nodes):
                if m != j:
                    basis = basis * (us - um) / (uj - um)
            integral = integral + 0.5 * (u_s - u_t) * (gl_w * basis * torch.exp(us)).sum() * ej
        x = a_s * (x / a_t + integral)
    return x


def ref_plms(model, proc, y, grid):
    """PLMS with the pseudo improved Euler first step (PNDM / LDM / diffusers' ``skip_prk_steps``)
    and DDIM's transfer: eps combined by AB2, AB3, AB4 afterwards, full order to the end."""
    ab = {2: [1.5, -0.5], 3: [23 / 12, -16 / 12, 5 / 12], 4: [55 / 24, -59 / 24, 37 / 24, -9 / 24]}

    def transfer(x, e_hat, t, s):
        a_t, s_t, _ = _coef(proc, t)
        a_s, s_s, _ = _coef(proc, s)
        return a_s * (x - s_t * e_hat) / a_t + s_s * e_hat

    x, eps = y, []
    for i in range(len(grid) - 1):
        e = model(x, grid[i].expand(x.shape[0]))
        if not eps:
            e1 = model(transfer(x, e, grid[i], grid[i + 1]), grid[i + 1].expand(x.shape[0]))
            e_hat = 0.5 * (e + e1)
        else:
            e_hat = sum(w * v for w, v in zip(ab[min(4, len(eps) + 1)], [e, *eps]))
        eps.insert(0, e)
        x = transfer(x, e_hat, grid[i], grid[i + 1])
    return x


REFS = {"dpm++3m": ref_dpmpp_3m, "deis": ref_deis_logrho, "pndm": ref_plms}


@pytest.mark.parametrize("name", list(REFS))
@pytest.mark.parametrize("schedule,steps", [("vp_linear", 6), ("vp_linear", 20), ("vp_cosine", 9)])
def test_defaults_equal_the_published_formulas(name, schedule, steps):
    proc = GaussianProcess(schedule)
    model = ExactDenoiser(TARGET, proc, "eps")
    grid = make_grid(proc.schedule, steps, t_min=2e-3)
    y = _start(proc)
    x, ref = _sample(model, proc, y, grid, name), REFS[name](model, proc, y, grid)
    assert torch.allclose(x, ref, rtol=1e-10, atol=1e-10), float((x - ref).abs().max())


def test_the_kept_variants_are_other_methods():
    """The options change the maths (so the defaults above are not the old methods renamed)."""
    proc = GaussianProcess("vp_linear")
    model = ExactDenoiser(TARGET, proc, "eps")
    grid = make_grid(proc.schedule, 8, t_min=2e-3)
    y = _start(proc)
    for name, opts in (("dpm++3m", {"variant": "lagrange"}), ("deis", {"space": "rho"}), ("pndm", {"warmup": "ab"})):
        diff = (_sample(model, proc, y, grid, name) - _sample(model, proc, y, grid, name, **opts)).abs().max()
        assert diff > 1e-4, (name, float(diff))


# ----------------------------------------------------------------------------- observed order
@pytest.fixture(scope="module")
def smooth_reference():
    proc = GaussianProcess("vp_linear")
    model = ExactDenoiser(SMOOTH, proc, "eps")
    y = _start(proc, 32, seed=3)
    return proc, model, y, _sample(model, proc, y, make_grid(proc.schedule, 1), "rk45", rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("options,p", [({}, 2), ({"variant": "lagrange"}, 3)])
def test_dpmpp_3m_observed_order(smooth_reference, options, p):
    """Published 3M: the second difference gets half its exact weight, an O(h^3) local error,
    so the error falls by ~4x per doubling (not 8x); the exact integration keeps order 3."""
    proc, model, y, ref = smooth_reference
    errs = [(_sample(model, proc, y, make_grid(proc.schedule, n), "dpm++3m", **options) - ref).norm(dim=1).mean()
            for n in (64, 128)]
    observed = math.log2(float(errs[0] / errs[1]))
    assert p - 0.4 < observed < p + 0.6, (errs, observed)


@pytest.mark.parametrize("name,options", [("deis", {}), ("deis", {"space": "rho"}), ("pndm", {}),
                                          ("pndm", {"warmup": "ab"}), ("dpm++3m", {"variant": "lagrange"})])
def test_every_variant_converges(smooth_reference, name, options):
    """10 -> 40 steps of the default grid (uneven in rho: PLMS and rho-DEIS lose order there)."""
    proc, model, y, ref = smooth_reference
    errs = [float((_sample(model, proc, y, make_grid(proc.schedule, n), name, **options) - ref).norm(dim=1).mean())
            for n in (10, 40)]
    assert errs[1] < 5e-3 and errs[1] < errs[0] / 8, errs  # rho-space methods: low order on this grid


def test_plms_warm_up_from_alpha_zero_is_finite():
    """A rectified flow starts at alpha = 0 (infinite rho): the first PLMS step is DDIM there."""
    proc = GaussianProcess("linear")
    model = ExactDenoiser(TARGET, proc, "velocity")
    x = pd.sample(model, proc, (64, 2), sampler="pndm", steps=12, prediction="velocity", seed=0, dtype=F64)
    ref = pd.sample(model, proc, (64, 2), sampler="pndm", steps=12, prediction="velocity", seed=0, dtype=F64,
                    warmup="ab")
    assert torch.isfinite(x).all()
    assert (x - ref).abs().max() < 0.05


@pytest.mark.parametrize("name,options", [("dpm++3m", {"variant": "taylor"}), ("deis", {"space": "lam"}),
                                          ("pndm", {"warmup": "prk"})])
def test_bad_variant_values_are_rejected(name, options):
    with pytest.raises(ValueError, match="is not allowed"):
        pd.sample(lambda x, t: 0 * x, GaussianProcess("vp_linear"), (2, 2), sampler=name, steps=4, **options)


# ----------------------------------------------------------------------------- against diffusers
@pytest.fixture(scope="module")
def bench():
    pytest.importorskip("diffusers", reason="diffusers is a bench-only dependency (pip install polydiff[bench])")
    from bench_loader import load_bench
    from diffusers.utils import logging as dlog

    dlog.set_verbosity_error()
    return load_bench()


@pytest.mark.parametrize("algorithm,scheduler,config", [
    ("dpm++3m", "DPMSolverMultistepScheduler", {}),
    ("dpm++3m", "EDMDPMSolverMultistepScheduler", {}),
    ("deis", "DEISMultistepScheduler", {}),
    # Stable Diffusion 1.x's PLMS settings: the last step ends at timestep 0 (our driver ends a
    # grid at sigma = 0 with the clean estimate, diffusers with set_alpha_to_one by one more AB4 step)
    ("pndm", "PNDMScheduler", {"set_alpha_to_one": False, "steps_offset": 1}),
    # singlestep DPM-Solver-2 with stages="grid": the middle timestep of each pair is the stage
    ("dpm_solver2", "DPMSolverSinglestepScheduler", {}),
])
@pytest.mark.parametrize("nfe", [5, 12, 20])
def test_defaults_equal_diffusers_sample_by_sample(bench, algorithm, scheduler, config, nfe):
    """Same exact model, grid and initial points as the benchmark; float32 in both libraries,
    so the samples agree to float32 rounding (checked like the benchmark: 99th percentile of
    the per-sample RMS difference)."""
    spec = next(s for s in bench.diffusers_specs() if s.algorithm == algorithm and s.scheduler == scheduler)
    if config:
        spec = dataclasses.replace(spec, config={**spec.config, **config}, end="k0")
    proc = bench._family_process(spec)
    gmm = bench.make_mixture(2)
    sched = bench._scheduler(spec)
    bench._set(sched, spec, nfe)
    grid = bench.diffusers_grid(sched, spec)
    assert bench.grid_mismatch(sched, spec, grid, proc) < 1e-3
    x0 = bench.Target(2, spec.family, gmm, proc).exact(1000, float(grid[0]), 303).float()
    ours = bench.run_ours(proc, gmm, algorithm, x0, grid=grid, torch_rng=True, **spec.options)
    theirs = bench.run_diffusers(spec, gmm, proc, x0, nfe)
    assert ours.nfe == theirs.nfe
    diff = ((ours.x.double() - theirs.x.double()) ** 2).mean(1).sqrt()
    scale = max(1.0, float(theirs.x.abs().max()))
    assert float(diff.quantile(0.99)) < 1e-4 * scale, float(diff.quantile(0.99))


# ----------------------------------------------------------------------------- singlestep stage placement
@pytest.mark.parametrize("name", ["dpm_solver2", "dpm_solver3"])
def test_grid_stages_on_a_uniform_logsnr_grid_are_the_papers(name):
    """The inner points of a finer uniform log-SNR grid are the log-SNR fractions of each step,
    so both placements give the same samples there; on a Karras grid they differ."""
    gmm = GaussianMixture.random(k=3, dim=2, seed=5)
    proc = GaussianProcess("vp_linear")
    model = ExactDenoiser(gmm, proc)
    runs = {st: pd.sample(model, proc, (64, 2), sampler=name, steps=6, seed=1, stages=st, grid="uniform_logsnr")
            for st in ("logsnr", "grid")}
    assert torch.allclose(runs["logsnr"], runs["grid"], atol=1e-5)
    edm = GaussianProcess("edm", sigma_min=0.002, sigma_max=80.0)
    model = ExactDenoiser(gmm, edm)
    runs = {st: pd.sample(model, edm, (64, 2), sampler=name, steps=6, seed=1, stages=st)
            for st in ("logsnr", "grid")}
    assert (runs["logsnr"] - runs["grid"]).abs().max() > 1e-3


def test_grid_stages_need_whole_steps_and_known_values():
    proc = GaussianProcess("vp_linear")
    grid = torch.linspace(1.0, 1e-3, 6, dtype=torch.float64)  # 5 intervals: not whole 2-stage steps
    with pytest.raises(ValueError, match="multiple of 2 intervals"):
        pd.sample(lambda x, t: 0 * x, proc, (2, 2), sampler="dpm_solver2", grid=grid, stages="grid")
    with pytest.raises(ValueError, match="stages='gird' is not allowed"):
        pd.sample(lambda x, t: 0 * x, proc, (2, 2), sampler="dpm_solver3", steps=2, stages="gird")
    # a user grid lists every model call: 3 steps of 2 stages
    calls = []
    pd.sample(lambda x, t: calls.append(float(t[0])) or 0 * x, proc, (2, 2), sampler="dpm_solver2",
              grid=torch.linspace(1.0, 1e-3, 7, dtype=torch.float64), stages="grid")
    assert len(calls) == 6
    assert calls == pytest.approx(torch.linspace(1.0, 1e-3, 7, dtype=torch.float64)[:-1].tolist(), abs=1e-6)
