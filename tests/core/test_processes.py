"""Schedules, parametrisations, structures and grids against their definitions."""

import copy
import math

import pytest
import torch

import polydiff as pd
from polydiff.grids import make_grid
from polydiff.parametrization import PREDICTIONS, convert, from_x0_eps, to_x0_eps
from polydiff.processes.gaussian import SCHEDULES, Coefs
from polydiff.structures import Masked, Symmetric, ZeroCoM

NAMES = sorted(SCHEDULES)


def _times(s):
    lo = max(s.t_min, 1e-3 * s.t_max, 1e-3)
    return torch.linspace(lo, s.t_max * 0.995, 9, dtype=torch.float64)


@pytest.mark.parametrize("name", NAMES)
def test_schedule_derivatives_and_inverse(name):
    s = SCHEDULES.build(name)
    t = _times(s)
    h = 1e-6 * s.t_max
    if not name.startswith("vp_discrete"):  # piecewise linear: derivative jumps at knots
        fd_a = (s.alpha(t + h) - s.alpha(t - h)) / (2 * h)
        fd_s = (s.sigma(t + h) - s.sigma(t - h)) / (2 * h)
        assert torch.allclose(fd_a, s.dalpha(t), rtol=1e-5, atol=1e-6)
        assert torch.allclose(fd_s, s.dsigma(t), rtol=1e-5, atol=1e-6)
    lam = s.lam(t)
    assert torch.all(lam[1:] < lam[:-1]), "log-SNR must decrease with t"
    assert torch.allclose(lam, torch.log(s.alpha(t) / s.sigma(t)), atol=1e-9)
    assert torch.allclose(s.t_of_lam(lam), t, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_values_are_the_methods_bit_for_bit(name, dtype):
    """``values`` (what coefs, the losses and the samplers read) gives exactly the five methods'
    results, also where a schedule computes the shared pieces once, and for a subclass that
    redefines a method (it must not inherit the parent's shortcut)."""
    s = SCHEDULES.build(name)
    t = torch.cat([_times(s), torch.tensor([s.t_min, s.t_train_min, s.t_max])]).to(dtype)[:, None]
    want = (s.alpha(t), s.sigma(t), s.lam(t), s.dalpha(t), s.dsigma(t))
    for got, ref in zip(s.values(t), want):
        torch.testing.assert_close(got, ref, rtol=0, atol=0, equal_nan=True)

    class Louder(type(s)):
        def sigma(self, t):
            return 2 * super().sigma(t)

    loud = copy.copy(s)
    loud.__class__ = Louder
    assert torch.equal(loud.values(t)[1], loud.sigma(t))


@pytest.mark.parametrize("name", ["vp_linear", "vp_cosine", "subvp", "ve", "edm"])
def test_forward_sde_has_the_same_marginal_variance(name):
    """d(sigma^2)/dt = 2 f sigma^2 + g^2 and d(alpha)/dt = f alpha: the SDE matches the marginals."""
    s = SCHEDULES.build(name)
    t = _times(s)
    f, g2 = s.drift_diffusion(t)
    assert torch.allclose(s.dalpha(t), f * s.alpha(t), rtol=1e-9, atol=1e-12)
    assert torch.allclose(2 * s.sigma(t) * s.dsigma(t), 2 * f * s.sigma(t) ** 2 + g2, rtol=1e-9, atol=1e-12)
    assert torch.all(g2 >= 0)


def test_variance_preserving_schedules_preserve_variance():
    for name in ("vp_linear", "vp_cosine", "vp_discrete"):
        s = SCHEDULES.build(name)
        t = _times(s)
        assert torch.allclose(s.alpha(t) ** 2 + s.sigma(t) ** 2, torch.ones_like(t), atol=1e-12)


def test_discrete_schedule_matches_ddpm_alphas_cumprod():
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    s = pd.processes.vp_discrete()
    k = torch.tensor([0, 10, 500, 999])
    t = (k + 1).double() / 1000
    assert torch.allclose(s.alpha(t) ** 2, torch.cumprod(1 - betas, 0)[k], rtol=1e-12)
    assert float(s.sigma(torch.zeros(1, dtype=torch.float64))) == 0.0


@pytest.mark.parametrize("kind", PREDICTIONS)
@pytest.mark.parametrize("name", ["vp_linear", "edm", "linear", "stochastic_interpolant"])
def test_parametrisations_round_trip(kind, name):
    s = SCHEDULES.build(name)
    t = _times(s).reshape(-1, 1)
    c = Coefs(s.alpha(t), s.sigma(t), s.lam(t), s.dalpha(t), s.dsigma(t))
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(t.shape[0], 5, generator=g, dtype=torch.float64)
    eps = torch.randn(t.shape[0], 5, generator=g, dtype=torch.float64)
    x = c.alpha * x0 + c.sigma * eps
    pred = from_x0_eps(x0, eps, kind, c)
    d, e = to_x0_eps(pred, kind, x, c)
    assert torch.allclose(d, x0, atol=1e-8) and torch.allclose(e, eps, atol=1e-8)
    for other in PREDICTIONS:
        back = convert(convert(pred, kind, other, x, c), other, kind, x, c)
        assert torch.allclose(back, pred, atol=1e-7)


def test_velocity_is_the_time_derivative_of_the_path():
    s = SCHEDULES.build("vp_linear")
    t = torch.tensor([[0.3]], dtype=torch.float64)
    x0, eps = torch.tensor([[1.5, -0.2]], dtype=torch.float64), torch.tensor([[0.3, 0.9]], dtype=torch.float64)
    h = 1e-6
    fd = ((s.alpha(t + h) * x0 + s.sigma(t + h) * eps) - (s.alpha(t - h) * x0 + s.sigma(t - h) * eps)) / (2 * h)
    c = Coefs(s.alpha(t), s.sigma(t), s.lam(t), s.dalpha(t), s.dsigma(t))
    assert torch.allclose(from_x0_eps(x0, eps, "velocity", c), fd, atol=1e-7)


def test_unknown_prediction_is_named():
    with pytest.raises(ValueError, match="allowed: eps, x0, v, score, velocity"):
        pd.FieldSpec(pd.GaussianProcess(), prediction="noise")


def test_structures():
    g = torch.Generator().manual_seed(0)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    state = {"mask": mask}
    z = torch.randn(2, 4, 3, generator=g)
    zc = ZeroCoM("mask").noise(z, state)
    assert torch.allclose((zc * mask[..., None]).sum(1), torch.zeros(2, 3), atol=1e-6)
    assert torch.all(zc[mask == 0] == 0)
    assert torch.equal(ZeroCoM("mask").dof(z, state), torch.tensor([6.0, 3.0]))
    a = Symmetric("mask").noise(torch.randn(2, 4, 4, generator=g), state)
    assert torch.equal(a, a.transpose(1, 2)) and torch.all(torch.diagonal(a, dim1=1, dim2=2) == 0)
    assert torch.all(a[0, 3] == 0) and torch.all(a[1, :, 2:] == 0)
    assert torch.equal(Symmetric("mask").dof(a, state), torch.tensor([3.0, 1.0]))
    m = Masked("mask").project(torch.ones(2, 4, 2), state)
    assert m.sum() == 2 * 5
    big = Symmetric().noise(torch.randn(4000, 3, 3, generator=g), {})
    assert abs(float(big[:, 0, 1].std()) - 1.0) < 0.05, "off-diagonal noise must have unit variance"


def test_missing_mask_is_named():
    with pytest.raises(KeyError, match="node_mask"):
        Masked("node_mask").noise(torch.zeros(1, 2), {})


@pytest.mark.parametrize("kind", ["uniform_t", "uniform_logsnr", "karras", "quadratic", "vp_quadratic"])
def test_grids(kind):
    s = SCHEDULES.build("vp_linear")
    g = make_grid(s, 10, kind)
    assert g.shape == (11,) and g[0] == s.t_max and math.isclose(float(g[-1]), s.t_min)
    assert torch.all(g[1:] < g[:-1])
    if kind == "uniform_logsnr":
        d = torch.diff(s.lam(g))
        assert torch.allclose(d, d.mean().expand_as(d), rtol=1e-6)
    gz = make_grid(s, 10, kind, final_zero=True)
    assert gz.shape == (11,) and gz[-1] == 0


@pytest.mark.parametrize("name", ["edm", "ve", "vp_cosine", "linear"])
def test_vp_quadratic_grid_walks_ddpm_quadratic_noise_levels(name):
    """``vp_quadratic`` is the quadratic grid of ``vp_linear`` carried by log-SNR: on
    ``vp_linear`` the two agree; on any other schedule its log-SNRs are those of the quadratic
    grid in VP time between the same end log-SNRs (dense in the middle, coarse at both ends)."""
    vp = SCHEDULES.build("vp_linear")
    torch.testing.assert_close(make_grid(vp, 10, "vp_quadratic"), make_grid(vp, 10, "quadratic"))
    s = SCHEDULES.build(name)
    g = make_grid(s, 12, "vp_quadratic")
    t_min = s.t_min if s.t_min > 0 else 1e-3 * s.t_max  # as for log-SNR and Karras grids
    assert g[0] == s.t_max and float(g[-1]) == pytest.approx(t_min) and torch.all(g[1:] < g[:-1])
    lam = s.lam(g).clamp(min=-10.0)
    tv = vp.t_of_lam(lam)  # quadratic in VP time between the ends: evenly spaced square roots
    d = torch.diff(((tv - tv[-1]) / (tv[0] - tv[-1])).sqrt())
    assert torch.allclose(d, d.mean().expand_as(d), rtol=1e-6, atol=1e-9)
    steps = torch.diff(lam)
    assert steps[len(steps) // 2] < min(steps[0], steps[-1])  # dense around the middle


def test_karras_grid_is_rho_spaced_in_sigma():
    s = SCHEDULES.build("edm")
    g = make_grid(s, 8, "karras")
    r = g ** (1 / 7)
    assert torch.allclose(torch.diff(r), torch.diff(r).mean().expand(8), rtol=1e-6)


def test_user_grid_is_validated():
    s = SCHEDULES.build("vp_linear")
    with pytest.raises(ValueError, match="strictly decreasing"):
        make_grid(s, 3, torch.tensor([0.1, 0.5, 1.0]))
    for outside in ([5.0, 0.5, 0.001], [1.0, 0.5, -0.3]):  # times the schedule does not have
        with pytest.raises(ValueError, match=r"time range \[0, 1\] \(VPLinear\)"):
            make_grid(s, 2, torch.tensor(outside))
    assert make_grid(s, 2, torch.tensor([1.0, 0.5, 0.0])).tolist() == [1.0, 0.5, 0.0]  # both ends allowed


def test_unknown_schedule_lists_choices():
    with pytest.raises(KeyError, match=r"Allowed: .*vp_linear"):
        pd.GaussianProcess("vp_lin")
    with pytest.raises(KeyError, match="has no option beta"):
        pd.GaussianProcess("vp_linear", beta=3)
