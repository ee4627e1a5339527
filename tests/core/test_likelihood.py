"""PF-ODE log-likelihoods against the analytic log-density of Gaussian mixtures, and the
diagnostics (score Fokker-Planck residual, ODE-vs-SDE gap, sliced Wasserstein)."""

from __future__ import annotations

import math

import pytest
import torch

from polydiff import FieldSpec, GaussianProcess, Masked, Symmetric, ZeroCoM
from polydiff.diagnostics import fokker_planck_residual, ode_sde_gap, sliced_wasserstein
from polydiff.likelihood import log_likelihood
from polydiff.toy.gmm import ExactDenoiser, GaussianMixture

G = GaussianMixture.random(k=4, dim=3, seed=2)
X = G.sample(48, torch.Generator().manual_seed(0))


def exact_at(proc: GaussianProcess, t: float, x: torch.Tensor = X, g: GaussianMixture = G) -> torch.Tensor:
    c = proc.coefs(torch.tensor(t, dtype=torch.float64))
    return g.log_prob(x, c.alpha, c.sigma)


def test_vp_likelihood_matches_the_analytic_log_density_within_001_nats_per_dim():
    proc = GaussianProcess("vp_linear")
    res = log_likelihood(ExactDenoiser(G, proc), proc, X, steps=64)
    err = (res.log_prob - exact_at(proc, proc.t_min)).abs() / 3
    # measured: max 0.0053, mean 0.0006 nats/dim (all of it the N(0, 1) prior at t_max = 1)
    assert err.max() < 0.01
    assert torch.allclose(res.bpd, -res.log_prob / (3 * math.log(2)))
    assert torch.all(res.dof == 3) and res.end.shape == X.shape and res.nfe == 64 * 4


@pytest.mark.parametrize("schedule,prediction", [("vp_cosine", "eps"), ("edm", "x0"), ("ve", "eps"),
                                                 ("linear", "velocity"), ("linear", "v")])
def test_ode_integration_is_accurate_for_every_schedule(schedule, prediction):
    # with the exact marginal at t_max as the prior, what is left is the ODE solver's error
    proc = GaussianProcess(schedule)
    s = proc.schedule
    c = proc.coefs(torch.tensor(s.t_max, dtype=torch.float64))
    res = log_likelihood(ExactDenoiser(G, proc, prediction), proc, X[:16], steps=48, prediction=prediction,
                         prior=lambda st: G.log_prob(st["x"], c.alpha, c.sigma))
    t_min = s.t_min if s.t_min > 0 else 1e-4 * s.t_max
    assert ((res.log_prob - exact_at(proc, t_min, X[:16])).abs() / 3).max() < 2e-3


def test_hutchinson_divergence_is_unbiased():
    proc = GaussianProcess("vp_linear")
    x = G.sample(256, torch.Generator().manual_seed(1))
    res = log_likelihood(ExactDenoiser(G, proc), proc, x, steps=24, divergence="hutchinson", probes=2)
    err = (res.log_prob - exact_at(proc, proc.t_min, x)) / 3
    assert abs(float(err.mean())) < 0.05 and float(err.abs().max()) > 1e-3  # unbiased, but noisy per sample
    with pytest.raises(ValueError):
        log_likelihood(ExactDenoiser(G, proc), proc, x, divergence="trace")


def test_masked_fields_count_only_free_dimensions():
    # a padded set of 4 scalars with 2 present: the density is the 2-D mixture's
    proc = GaussianProcess("vp_linear")
    g2 = GaussianMixture.random(k=3, dim=2, seed=5)
    inner = ExactDenoiser(g2, proc)

    def net(state, t):
        x = state["x"]
        return {"x": torch.cat([inner(x[:, :2], t), torch.zeros_like(x[:, 2:])], 1)}

    x2 = g2.sample(16, torch.Generator().manual_seed(0))
    state = {"x": torch.cat([x2, torch.zeros(16, 2, dtype=torch.float64)], 1),
             "mask": torch.tensor([1.0, 1.0, 0.0, 0.0]).expand(16, 4)}
    res = log_likelihood(net, {"x": FieldSpec(proc, Masked("mask"))}, state, steps=48)
    assert torch.all(res.dof == 2)
    assert ((res.log_prob - exact_at(proc, proc.t_min, x2, g2)).abs() / 2).max() < 0.01
    assert torch.allclose(res.bpd, -res.log_prob / (2 * math.log(2)))
    assert torch.all(res.end["x"][:, 2:] == 0)


@pytest.mark.parametrize("structure,shape,dof", [(ZeroCoM(), (16, 3, 2), 4), (Symmetric(), (16, 3, 3), 3)])
def test_structured_fields_are_measured_in_their_own_coordinates(structure, shape, dof):
    # Gaussian data with variance s2 in each free coordinate of the subspace (zero centre of mass;
    # upper triangle of a symmetric matrix): its noisy marginal is N(0, alpha^2 s2 + sigma^2) there
    proc, s2 = GaussianProcess("vp_linear"), 0.49

    def net(state, t):
        x = state["x"]
        c = proc.coefs(t.double().reshape(-1, *[1] * (x.dim() - 1)))
        return {"x": (x - c.alpha**2 * s2 / (c.alpha**2 * s2 + c.sigma**2) * x) / c.sigma}

    x = structure.noise(0.7 * torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0)), {})
    res = log_likelihood(net, {"x": FieldSpec(proc, structure)}, {"x": x}, steps=48)
    c = proc.coefs(torch.tensor(proc.t_min, dtype=torch.float64))
    v = c.alpha**2 * s2 + c.sigma**2
    sq = (x**2).flatten(1).sum(1) / (2.0 if isinstance(structure, Symmetric) else 1.0)  # each u_ij appears twice
    exact = -0.5 * sq / v - 0.5 * dof * torch.log(2 * math.pi * v)
    assert torch.all(res.dof == dof)
    assert ((res.log_prob - exact).abs() / dof).max() < 1e-3  # measured ~1e-5


def test_likelihood_rejects_categorical_fields():
    from polydiff import Absorbing

    with pytest.raises(ValueError):
        log_likelihood(lambda s, t: {}, {"tok": FieldSpec(Absorbing(3)), "x": FieldSpec(GaussianProcess())},
                       {"tok": torch.zeros(2, 3, dtype=torch.long), "x": torch.zeros(2, 2)})


# -- diagnostics ------------------------------------------------------------------------------
G2 = GaussianMixture.random(k=3, dim=2, seed=1)
PROC = GaussianProcess("vp_linear")


class DriftingWeights(torch.nn.Module):
    """A denoiser whose mixture weights change with t: no diffusion has these marginals."""

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        c = PROC.coefs(t.double())
        shift = 3 * t.double()[:, None] * torch.tensor([1.0, -1.0, 0.0], dtype=torch.float64)
        lp, m, var = G2._components(x, c.alpha, c.sigma)
        r = torch.softmax(lp + shift, 1)[..., None]
        post = G2.means[None] + c.alpha.reshape(-1, 1, 1) * G2.stds[None] ** 2 / var * (x.double()[:, None] - m)
        x0 = (r * post).sum(1)
        return (x.double() - c.alpha[:, None] * x0) / c.sigma[:, None]


def test_fokker_planck_residual_vanishes_for_an_exact_score_only():
    data = G2.sample(32, torch.Generator().manual_seed(0))
    exact = fokker_planck_residual(ExactDenoiser(G2, PROC), PROC, data)
    wrong = fokker_planck_residual(DriftingWeights(), PROC, data)
    assert exact["t"].shape == exact["residual"].shape == (8,)
    assert exact["relative"].max() < 1e-6  # measured ~1e-9 (finite differences in t)
    assert wrong["relative"].max() > 1e-2  # measured 0.026
    hutch = fokker_planck_residual(DriftingWeights(), PROC, data, divergence="hutchinson")
    assert torch.isfinite(hutch["residual"]).all()


def test_ode_sde_gap_and_sliced_wasserstein():
    a = torch.randn(500, 2, dtype=torch.float64)
    assert float(sliced_wasserstein(a, a)) == 0.0
    assert abs(float(sliced_wasserstein(a, a + torch.tensor([1.0, 0.0], dtype=torch.float64)))
               - 0.5**0.5) < 0.05  # root mean cos^2 of a random direction in 2-D
    assert float(sliced_wasserstein(a, a[:300])) < 0.15  # unequal sizes use quantiles
    data = G2.sample(1500, torch.Generator().manual_seed(3))
    good = ode_sde_gap(ExactDenoiser(G2, PROC), PROC, (1500, 2), data=data, steps=30)
    assert set(good) == {"ode_sde", "ode_data", "sde_data"}
    assert max(good.values()) < 0.08
    bad = ode_sde_gap(DriftingWeights(), PROC, (1500, 2), data=data, steps=30)
    assert bad["ode_data"] > good["ode_data"] or bad["sde_data"] > good["sde_data"]
