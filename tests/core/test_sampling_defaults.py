"""Defaults a user gets without naming them: the few-step time grids of DDPM's linear-beta family
(bench/defaults.py), the Karras grid's rho from the EDM schedule, DDPM's squared-cosine betas,
and a recipe's default guidance scale."""

from __future__ import annotations

import math

import pytest
import torch

import polydiff as pd
from polydiff.grids import make_grid
from polydiff.processes.gaussian import SCHEDULES
from polydiff.samplers.base import SampleSettings, get_sampler
from polydiff.samplers.plan import GridPlan
from polydiff.state import Packer

pytestmark = pytest.mark.usefixtures("one_thread")


def _plan_grid(schedule_name: str, sampler: str, steps: int, grid=None) -> torch.Tensor:
    proc = pd.GaussianProcess(schedule_name)
    fields = {"x": pd.FieldSpec(proc)}
    packer = Packer(fields, {"x": torch.zeros(2, 3)})
    settings = SampleSettings(sampler=sampler, steps=steps, grid=grid)
    return GridPlan(packer, proc.schedule, get_sampler(sampler), settings, 2, torch.device("cpu")).ts


@pytest.mark.parametrize("name", ["vp_linear", "vp_discrete"])
def test_ddpm_family_defaults_to_the_measured_grids(name):
    s = SCHEDULES.build(name)
    for sampler, steps in (("ddim", 5), ("ddim", 50), ("unipc", 5), ("dpm++2m", 10), ("dpm++2m", 20)):
        torch.testing.assert_close(_plan_grid(name, sampler, steps), make_grid(s, steps, "quadratic"))
    # few steps: diffusers' uniform spacing for DPM-Solver++(2M) / (3M) at <= 5 steps and singlestep
    # DPM-Solver at <= 3 steps (<= 5-7 model calls)
    for sampler, most in (("dpm++2m", 5), ("dpm++3m", 5), ("dpm_solver2", 3), ("dpm_solver3", 3)):
        for steps in (1, most):
            torch.testing.assert_close(_plan_grid(name, sampler, steps), make_grid(s, steps, "uniform_t"))
        assert s.sampling_grid(sampler, most + 1) != "uniform_t"
    for sampler in ("dpm_solver2", "dpm_solver3"):
        torch.testing.assert_close(_plan_grid(name, sampler, 4), make_grid(s, 4, "quadratic"))
    # a named grid always wins
    torch.testing.assert_close(_plan_grid(name, "ddim", 5, "uniform_logsnr"), make_grid(s, 5, "uniform_logsnr"))
    torch.testing.assert_close(_plan_grid(name, "dpm++3m", 5, "quadratic"), make_grid(s, 5, "quadratic"))
    # the samplers measured worse on the quadratic grid keep the schedule's default grid
    for sampler in ("dpm++3m", "deis"):
        torch.testing.assert_close(_plan_grid(name, sampler, 10), make_grid(s, 10, s.default_grid))
    torch.testing.assert_close(_plan_grid(name, "heun", 10), make_grid(s, 10, "quadratic"))


@pytest.mark.parametrize("name", ["vp_cosine", "subvp", "ve", "linear"])
def test_other_schedules_keep_their_default_grid(name):
    s = SCHEDULES.build(name)
    for sampler in ("ddim", "dpm++2m", "dpm++3m", "unipc", "dpm_solver3"):
        for steps in (3, 5, 10):
            torch.testing.assert_close(_plan_grid(name, sampler, steps), make_grid(s, steps, s.default_grid))


def test_edm_solvers_walk_the_vp_quadratic_grid():
    """EDM: DPM-Solver++(2M), UniPC, Euler and DDIM take ``vp_quadratic`` at every step count,
    (3M) below 15 steps and uniform log-SNR from there (bench/defaults.py --edm); Heun, DEIS and
    EDM's own sampler keep Karras' grid; a named grid always wins."""
    from polydiff.processes.gaussian import EDM_LOGSNR_FROM, EDM_VPQ_SAMPLERS

    s = SCHEDULES.build("edm")
    assert set(EDM_VPQ_SAMPLERS) == {"dpm++2m", "dpm++3m", "unipc", "euler", "ddim"}
    assert EDM_LOGSNR_FROM == {"dpm++3m": 15}
    for sampler in EDM_VPQ_SAMPLERS:
        for steps in (3, 10, 14, 15, 50):
            want = "uniform_logsnr" if sampler == "dpm++3m" and steps >= 15 else "vp_quadratic"
            torch.testing.assert_close(_plan_grid("edm", sampler, steps), make_grid(s, steps, want))
        torch.testing.assert_close(_plan_grid("edm", sampler, 10, "karras"), make_grid(s, 10, "karras"))
    for sampler in ("heun", "deis", "edm"):
        torch.testing.assert_close(_plan_grid("edm", sampler, 10), make_grid(s, 10, "karras"))


def test_edm_default_grid_brings_ten_step_solvers_closer_to_the_ode():
    """The reason for the rule: at 10 steps on a 2-D mixture with the exact denoiser, the default
    (``vp_quadratic``) grid ends nearer the converged probability-flow ODE than Karras' grid and
    the uniform log-SNR grid (the default before) do, from the same initial points."""
    from polydiff.toy.gmm import ExactDenoiser, GaussianMixture

    proc = pd.GaussianProcess("edm")
    gmm = GaussianMixture.random(dim=2, seed=2)
    den = ExactDenoiser(gmm, proc, "eps")
    x1 = gmm.sample(1000, torch.Generator().manual_seed(0), alpha=1.0, sigma=80.0).double()

    def run(sampler: str, steps: int, grid: str | None = None) -> torch.Tensor:
        return pd.sample(den, proc, x1, sampler=sampler, steps=steps, grid=grid, dtype=torch.float64)

    exact = run("dpm++3m", 400)
    for sampler in ("dpm++2m", "unipc", "euler"):  # median distance: samples near a mode boundary swing either way
        default, karras, logsnr = (float((run(sampler, 10, grid) - exact).norm(dim=1).median())
                                   for grid in (None, "karras", "uniform_logsnr"))
        assert default < 0.7 * min(karras, logsnr), (sampler, default, karras, logsnr)  # measured 0.43-0.56


def test_karras_grid_takes_rho_from_the_edm_schedule():
    s = SCHEDULES.build("edm", sigma_min=0.05, sigma_max=1.0, rho=5.0)
    g = make_grid(s, 3, "karras")
    r = torch.linspace(0, 1, 4, dtype=torch.float64)
    want = (1.0 ** (1 / 5) + r * (0.05 ** (1 / 5) - 1.0 ** (1 / 5))) ** 5
    torch.testing.assert_close(g, want)
    assert not torch.allclose(make_grid(SCHEDULES.build("edm", sigma_min=0.05, sigma_max=1.0), 3, "karras"), want)
    with pytest.raises(ValueError, match="rho must be positive"):
        SCHEDULES.build("edm", rho=0.0)


def test_vp_discrete_cosine_matches_the_improved_ddpm_betas():
    s = SCHEDULES.build("vp_discrete_cosine", n=100)
    k = torch.arange(1, 101, dtype=torch.float64)
    f = torch.cos((k / 100 + 0.008) / 1.008 * math.pi / 2) ** 2 / math.cos(0.008 / 1.008 * math.pi / 2) ** 2
    alpha_bar = torch.cumprod((1 - (1 - f / torch.cat([torch.ones(1, dtype=torch.float64), f[:-1]]))
                               .clamp(max=0.999)), 0)
    torch.testing.assert_close(s.alpha(k / 100) ** 2, alpha_bar)


def test_a_recipes_guidance_scale_is_the_default(tmp_path):
    recipe = {"modality": "toy", "data": {"name": "gmm", "k": 3, "n": 300},
              "model": {"name": "mlp", "hidden": 32, "depth": 1, "emb_dim": 16, "conditional": True},
              "loss": {"cond_drop": 0.2},
              "train": {"max_steps": 5, "batch_size": 32, "accelerator": "cpu", "devices": 1, "threads": 1,
                        "checkpoint_every": 5, "progress": False},
              "sample": {"sampler": "ddim", "steps": 4, "guidance_scale": 3.0}}
    gen = pd.load(pd.train(recipe, tmp_path / "run", fresh=True, verbose=False).checkpoint)
    default = gen.generate(6, seed=1, condition={"label": 1})
    named = gen.generate(6, seed=1, condition={"label": 1}, guidance_scale=3.0)
    plain = gen.generate(6, seed=1, condition={"label": 1}, guidance_scale=1.0)
    assert torch.equal(torch.as_tensor(default), torch.as_tensor(named))
    assert not torch.equal(torch.as_tensor(default), torch.as_tensor(plain))
    with pytest.raises(Exception, match="guidance_scale"):
        pd.train(dict(recipe, sample={"guidance_scale": -1.0}), tmp_path / "bad", fresh=True, verbose=False)


def test_edm_sde_solver_default_grid_ends_above_sigma_min():
    """SDE-DPM-Solver++(2M) on EDM ends its default grid at 2.5 sigma_min (bench/defaults.py --sde);
    a named grid or a given t_min keeps the caller's end, and other samplers keep sigma_min."""
    from polydiff.processes.gaussian import SDE_END

    s = SCHEDULES.build("edm", sigma_min=0.004, sigma_max=80.0)
    for steps in (5, 50):
        ts = _plan_grid("edm", "dpm++2m_sde", steps)
        assert float(ts[-1]) == pytest.approx(SDE_END * 0.002)
        torch.testing.assert_close(ts, make_grid(SCHEDULES.build("edm"), steps, "karras", t_min=SDE_END * 0.002))
    assert s.sampling_t_min("dpm++2m_sde", 5) == pytest.approx(0.01)  # relative to the schedule's sigma_min
    assert float(_plan_grid("edm", "dpm++2m_sde", 5, "karras")[-1]) == pytest.approx(0.002)
    assert float(_plan_grid("edm", "dpm++2m", 5)[-1]) == pytest.approx(0.002)
    assert SCHEDULES.build("vp_discrete").sampling_t_min("dpm++2m_sde", 5) is None
    proc = pd.GaussianProcess("edm")
    packer = Packer({"x": pd.FieldSpec(proc)}, {"x": torch.zeros(2, 3)})
    given = SampleSettings(sampler="dpm++2m_sde", steps=5, t_min=0.003)
    assert float(GridPlan(packer, proc.schedule, get_sampler("dpm++2m_sde"), given, 2,
                          torch.device("cpu")).ts[-1]) == pytest.approx(0.003)
