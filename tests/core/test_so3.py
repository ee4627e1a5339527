"""SO(3): exp/log accuracy, quaternions, projection, geodesic flow, the Haar prior and IGSO(3)."""

import functools
import itertools
import math

import pytest
import torch

from polydiff.processes.manifold import GeodesicFlow
from polydiff.processes.so3 import (
    SO3,
    angle,
    exp_map,
    haar_angle_density,
    hat,
    igso3_angle_density,
    igso3_density,
    igso3_log_density,
    igso3_terms,
    log_map,
    matrix_to_quaternion,
    project_so3,
    quaternion_to_matrix,
    random_rotation,
    sample_igso3,
    vee,
)

F64 = torch.float64
EYE = torch.eye(3, dtype=F64)
KS_CRIT = 1.63  # KS critical value * sqrt(n) at the 1% level


pytestmark = pytest.mark.usefixtures("one_thread")


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _unit(n: int, seed: int) -> torch.Tensor:
    v = torch.randn(n, 3, generator=_gen(seed), dtype=F64)
    return v / v.norm(dim=-1, keepdim=True)


def _coordinate_and_random_axes(seed: int = 0) -> torch.Tensor:
    coord = torch.cat([EYE, -EYE])
    diag = torch.tensor([[1.0, 1.0, 0.0], [1.0, -1.0, 1.0]], dtype=F64)
    return torch.cat([coord, diag / diag.norm(dim=-1, keepdim=True), _unit(16, seed)])


def _is_rotation(R: torch.Tensor, atol: float = 1e-12) -> bool:
    ortho = torch.allclose(R.transpose(-1, -2) @ R, EYE.to(R.dtype).expand_as(R), atol=atol)
    return ortho and torch.allclose(torch.linalg.det(R), torch.ones((), dtype=R.dtype), atol=atol)


def _ks_stat(samples: torch.Tensor, cdf) -> float:
    """Kolmogorov-Smirnov statistic of 1-D samples against a CDF callable."""
    x, _ = torch.sort(samples.reshape(-1).to(F64))
    n = x.numel()
    F = cdf(x)
    i = torch.arange(1, n + 1, dtype=F64)
    return float(torch.maximum(i / n - F, F - (i - 1) / n).max())


def _haar_cdf(w: torch.Tensor) -> torch.Tensor:
    return (w - torch.sin(w)) / math.pi


def _simpson(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Simpson's rule on an odd number of equally spaced points."""
    h = x[1] - x[0]
    return h / 3 * (y[0] + y[-1] + 4 * y[1:-1:2].sum() + 2 * y[2:-1:2].sum())


@functools.cache
def _numeric_cdf(eps: float, n: int = 50_001):
    """Reference IGSO(3) angle CDF: fine cumulative trapezoid of the density, linearly interpolated."""
    w = torch.linspace(0, math.pi, n, dtype=F64)
    p = igso3_angle_density(w, eps)
    c = torch.cat([torch.zeros(1, dtype=F64), (0.5 * (p[1:] + p[:-1]) * (w[1] - w[0])).cumsum(0)])
    c = c / c[-1]

    def cdf(x: torch.Tensor) -> torch.Tensor:
        pos = (x / math.pi * (n - 1)).clamp(0, n - 1 - 1e-9)
        i = pos.floor().long()
        return c[i] + (pos - i) * (c[i + 1] - c[i])

    return cdf


# --- helpers ---------------------------------------------------------------------------------------------------


def test_hat_vee_and_cross_product():
    v, w = torch.randn(2, 10, 3, generator=_gen(0), dtype=F64)
    assert torch.allclose(hat(v) @ w.unsqueeze(-1), torch.cross(v, w, dim=-1).unsqueeze(-1), atol=1e-14)
    assert torch.allclose(vee(hat(v)), v)
    M = torch.randn(10, 3, 3, generator=_gen(1), dtype=F64)
    assert torch.allclose(vee(M), vee(0.5 * (M - M.transpose(-1, -2))))  # only the skew part counts


def test_exp_log_round_trip_on_random_rotations():
    R = random_rotation((4, 256), generator=_gen(0), dtype=F64)
    assert _is_rotation(R)
    v = log_map(R)
    assert v.shape == (4, 256, 3)
    assert (v.norm(dim=-1) <= math.pi + 1e-12).all()
    assert torch.allclose(exp_map(v), R, atol=1e-13)


def test_log_exp_recovers_vectors_below_pi():
    axes = _unit(4000, 1)
    a = torch.rand(4000, 1, generator=_gen(2), dtype=F64) * (math.pi - 1e-6)
    v = axes * a
    assert torch.allclose(log_map(exp_map(v)), v, atol=1e-12, rtol=0)


def test_identity_and_tiny_angles():
    assert torch.equal(log_map(EYE), torch.zeros(3, dtype=F64))
    assert torch.equal(exp_map(torch.zeros(3, dtype=F64)), EYE)
    axes = _coordinate_and_random_axes(3)
    for a in [1e-9, 1e-8, 1e-7, 1e-6, 1e-5, 1e-4]:
        v = axes * a
        R = exp_map(v)
        assert _is_rotation(R, atol=1e-14)
        back = log_map(R)
        assert ((back - v).norm(dim=-1) <= 1e-9 * a).all(), a  # relative accuracy, not just absolute
        assert torch.allclose(exp_map(back), R, atol=1e-15, rtol=0)
        assert torch.allclose(angle(R), torch.full((len(axes),), a, dtype=F64), rtol=1e-7, atol=0)


def test_angles_near_and_at_pi():
    axes = _coordinate_and_random_axes(4)
    for d in [1e-9, 1e-8, 1e-6, 1e-5, 1e-4, 1e-3]:
        v = axes * (math.pi - d)
        R = exp_map(v)
        back = log_map(R)
        assert torch.allclose(back, v, atol=1e-10, rtol=0), d  # axis sign is still determined below pi
        assert torch.allclose(exp_map(back), R, atol=1e-12, rtol=0)
        assert torch.allclose(angle(R), torch.full((len(axes),), math.pi - d, dtype=F64), atol=1e-12, rtol=0)
    # exactly pi: R = 2 n n^T - I; the axis sign is arbitrary but the round trip must hold
    R = 2 * axes.unsqueeze(-1) * axes.unsqueeze(-2) - EYE
    back = log_map(R)
    assert torch.allclose(back.norm(dim=-1), torch.full((len(axes),), math.pi, dtype=F64), atol=1e-12)
    assert torch.allclose(back.abs(), (math.pi * axes).abs(), atol=1e-12)
    assert torch.allclose(exp_map(back), R, atol=1e-12, rtol=0)
    assert torch.allclose(angle(R), torch.full((len(axes),), math.pi, dtype=F64), atol=1e-12)


def test_angle_matches_log_norm_and_is_stable():
    R = random_rotation((512,), generator=_gen(5), dtype=F64)
    assert torch.allclose(angle(R), log_map(R).norm(dim=-1), atol=1e-13)
    a = torch.tensor([0.0, 1e-12, 0.3, 2.0, math.pi - 1e-12, math.pi], dtype=F64)
    v = a.unsqueeze(-1) * torch.tensor([0.0, 0.6, 0.8], dtype=F64)
    assert torch.allclose(angle(exp_map(v)), a, atol=1e-14, rtol=0)


def test_float32_works():
    R = random_rotation((128,), generator=_gen(6), dtype=torch.float32)
    assert R.dtype == torch.float32
    assert torch.allclose(exp_map(log_map(R)), R, atol=2e-6)
    assert log_map(torch.eye(3)).abs().max() == 0


def test_gradients_are_finite_at_the_identity_and_match_finite_differences():
    v = torch.zeros(3, dtype=F64, requires_grad=True)
    exp_map(v).sum().backward()
    assert torch.isfinite(v.grad).all()
    # d/dv exp_map(v) at 0 is hat(e_i): the gradient of sum(R) is the sum of each hat(e_i)'s entries (= 0)
    assert torch.allclose(v.grad, torch.zeros(3, dtype=F64))
    R = EYE.clone().requires_grad_(True)
    log_map(R).sum().backward()
    assert torch.isfinite(R.grad).all()
    for scale in (1e-6, 0.5, 3.0):
        v = (torch.randn(3, generator=_gen(7), dtype=F64) * scale).requires_grad_(True)
        assert torch.autograd.gradcheck(exp_map, (v,))
    R = random_rotation((2,), generator=_gen(8), dtype=F64).requires_grad_(True)
    assert torch.autograd.gradcheck(log_map, (R,))


# --- quaternions and projection --------------------------------------------------------------------------------


def test_quaternion_round_trips():
    q = torch.randn(1000, 4, generator=_gen(9), dtype=F64)
    q = q / q.norm(dim=-1, keepdim=True)
    q = torch.where(q[:, :1] < 0, -q, q)
    R = quaternion_to_matrix(q)
    assert _is_rotation(R)
    assert torch.allclose(matrix_to_quaternion(R), q, atol=1e-14)
    assert torch.allclose(quaternion_to_matrix(-3.0 * q), R, atol=1e-14)  # scale and sign do not matter
    # near-pi rotations (w ~ 0) and rotations about coordinate axes
    axes = _coordinate_and_random_axes(10)
    for a in (0.0, 1e-9, 1.0, math.pi - 1e-9, math.pi):
        Rk = exp_map(axes * a)
        qk = matrix_to_quaternion(Rk)
        assert (qk[:, 0] >= 0).all()
        assert torch.allclose(qk.norm(dim=-1), torch.ones(len(axes), dtype=F64), atol=1e-14)
        assert torch.allclose(quaternion_to_matrix(qk), Rk, atol=1e-14)
    # known convention: (w, x, y, z) = (cos(a/2), sin(a/2) n)
    qz = torch.tensor([math.cos(0.35), 0.0, 0.0, math.sin(0.35)], dtype=F64)
    assert torch.allclose(quaternion_to_matrix(qz), exp_map(torch.tensor([0.0, 0.0, 0.7], dtype=F64)), atol=1e-15)


def test_project_so3():
    M = torch.randn(500, 3, 3, generator=_gen(11), dtype=F64)
    P = project_so3(M)
    assert _is_rotation(P, atol=1e-12)
    assert (torch.linalg.det(M) < 0).any()  # reflections are covered
    # nearest: no random rotation is closer in Frobenius norm
    Q = random_rotation((500, 64), generator=_gen(12), dtype=F64)
    d_best = (M - P).flatten(-2).norm(dim=-1)
    d_other = (M.unsqueeze(1) - Q).flatten(-2).norm(dim=-1)
    assert (d_best.unsqueeze(1) <= d_other + 1e-12).all()
    # identity on rotations, and pulls noisy rotations back
    R = random_rotation((500,), generator=_gen(13), dtype=F64)
    assert torch.allclose(project_so3(R), R, atol=1e-12)
    noisy = R + 1e-3 * torch.randn(500, 3, 3, generator=_gen(14), dtype=F64)
    back = project_so3(noisy)
    assert _is_rotation(back)
    assert ((back - R).flatten(-2).norm(dim=-1) < (noisy - R).flatten(-2).norm(dim=-1)).all()
    assert SO3().dist(back, R).max() < 5e-3


# --- the manifold and the geodesic flow ------------------------------------------------------------------------


def test_so3_log_is_the_minimising_geodesic():
    m = SO3()
    R, S = random_rotation((2, 300), generator=_gen(15), dtype=F64)
    v = m.log(R, S)
    assert v.shape == (300, 3)
    assert torch.allclose(m.exp(R, v), S, atol=1e-12)
    assert torch.allclose(v.norm(dim=-1), angle(R.transpose(-1, -2) @ S), atol=1e-13)
    assert (v.norm(dim=-1) <= math.pi + 1e-12).all()
    assert torch.allclose(m.dist(R, S), m.dist(S, R), atol=1e-13)
    assert torch.allclose(m.log(S, R).norm(dim=-1), v.norm(dim=-1), atol=1e-13)
    Q = random_rotation((300,), generator=_gen(16), dtype=F64)  # left invariance of the body-frame metric
    assert torch.allclose(m.dist(Q @ R, Q @ S), m.dist(R, S), atol=1e-12)
    assert torch.allclose(m.log(Q @ R, Q @ S), v, atol=1e-12)
    # no other tangent vector reaching S is shorter: the other direction around has length 2 pi - |v|
    assert (v.norm(dim=-1) <= 2 * math.pi - v.norm(dim=-1) + 1e-12).all()


def test_so3_attributes_origin_and_prior():
    m = SO3()
    assert m.prior_draw == "normal"
    assert m.tangent_shape == (3,)
    assert repr(m) == "SO3()"
    o = m.origin((2, 5, 3, 3), dtype=F64)
    assert o.shape == (2, 5, 3, 3)
    assert torch.equal(o, EYE.expand(2, 5, 3, 3))
    u = torch.randn(7, 3, 3, generator=_gen(17), dtype=F64)
    R = m.prior((7, 3, 3), u)
    assert R.shape == (7, 3, 3)
    assert _is_rotation(R)
    assert torch.equal(m.prior((7, 3, 3), u.clone()), R)  # pure function of u
    u2 = u.clone()
    u2[..., 2, :] += 1.0  # entries beyond the first 4 are unused
    assert torch.equal(m.prior((7, 3, 3), u2), R)
    assert torch.allclose(m.project(R + 1e-4), project_so3(R + 1e-4))
    with pytest.raises(ValueError):
        m.prior((7, 9), u.reshape(7, 9))


@pytest.mark.parametrize("rate", [0.0, 3.0])
def test_geodesic_flow_interpolates_at_constant_speed(rate):
    m = SO3()
    flow = GeodesicFlow(m, prior="normal", rate=rate)
    x0 = random_rotation((64,), generator=_gen(18), dtype=F64)
    x1 = m.prior((64, 3, 3), torch.randn(64, 3, 3, generator=_gen(19), dtype=F64))
    d = m.dist(x0, x1)
    assert torch.allclose(flow.interpolate(x0, x1, torch.tensor(0.0, dtype=F64)), x0, atol=1e-13)
    assert torch.allclose(flow.interpolate(x0, x1, torch.tensor(1.0, dtype=F64)), x1, atol=1e-12)
    for t in (0.1, 0.25, 0.5, 0.75, 0.9):
        tt = torch.tensor(t, dtype=F64)
        k = flow.kappa(tt)
        xt = flow.interpolate(x0, x1, tt)
        assert _is_rotation(xt)
        assert torch.allclose(m.dist(x0, xt), k * d, atol=1e-12)
        assert torch.allclose(m.dist(xt, x1), (1 - k) * d, atol=1e-12)
        # the body-frame velocity of a one-parameter subgroup is constant: dkappa * log(x0, x1)
        assert torch.allclose(flow.velocity(xt, x0, tt), flow.dkappa(tt) * m.log(x0, x1), atol=1e-11)
        # stepping towards the true x0 lands on the same geodesic
        s = torch.tensor(t / 3, dtype=F64)
        assert torch.allclose(flow.step(xt, x0, tt, s), flow.interpolate(x0, x1, s), atol=1e-12)


# --- Haar ------------------------------------------------------------------------------------------------------


def _check_haar(R: torch.Tensor) -> None:
    n = R.shape[0]
    w = angle(R)
    assert _ks_stat(w, _haar_cdf) < KS_CRIT / math.sqrt(n)
    # E[cos w] from the density (= -1/2), sd of cos w under Haar is 1/2
    grid = torch.linspace(0, math.pi, 20_001, dtype=F64)
    expect = float(_simpson(torch.cos(grid) * haar_angle_density(grid), grid))
    assert abs(expect + 0.5) < 1e-12
    assert abs(float(torch.cos(w).mean()) - expect) < 5 * 0.5 / math.sqrt(n)
    # uniform: E[R] = 0 (entries have variance 1/3), E[R_ij^2] = 1/3
    assert R.mean(0).abs().max() < 5 * math.sqrt(1 / 3) / math.sqrt(n)
    assert ((R**2).mean(0) - 1 / 3).abs().max() < 0.02


def test_haar_density_integrates_to_one():
    grid = torch.linspace(0, math.pi, 20_001, dtype=F64)
    assert abs(float(_simpson(haar_angle_density(grid), grid)) - 1) < 1e-12


def test_random_rotation_is_haar():
    _check_haar(random_rotation((20_000,), generator=_gen(20), dtype=F64))


def test_prior_from_normals_is_haar():
    u = torch.randn(20_000, 3, 3, generator=_gen(21), dtype=F64)
    _check_haar(SO3().prior((20_000, 3, 3), u))


def test_haar_checks_have_power():
    """The KS check rejects a plausible mistake: axis-angle vectors with a uniform angle."""
    n = 20_000
    w = torch.rand(n, generator=_gen(22), dtype=F64) * math.pi
    assert _ks_stat(w, _haar_cdf) > KS_CRIT / math.sqrt(n)


# --- IGSO(3) ---------------------------------------------------------------------------------------------------


def _naive_series(w: float, eps: float, terms: int = 400) -> float:
    """Direct evaluation of the textbook character series (independent of the module)."""
    total = 0.0
    for l in range(terms):
        chi = (2 * l + 1) if w == 0 else math.sin((l + 0.5) * w) / math.sin(w / 2)
        total += (2 * l + 1) * math.exp(-l * (l + 1) * eps * eps / 2) * chi
    return total


@pytest.mark.parametrize("eps", [0.02, 0.05, 0.1, 0.3, 1.0, 2.0])
def test_igso3_angle_density_integrates_to_one(eps):
    grid = torch.linspace(0, math.pi, 20_001, dtype=F64)
    p = igso3_angle_density(grid, eps)
    assert torch.isfinite(p).all() and (p >= 0).all()
    assert abs(float(_simpson(p, grid)) - 1) < 1e-8
    for method in ("series", "images"):
        if (method == "series" and eps < 0.05) or (method == "images" and eps > 1.5):
            continue
        q = igso3_angle_density(grid, eps, method=method)
        assert abs(float(_simpson(q, grid)) - 1) < 1e-8, method


@pytest.mark.parametrize("eps", [0.25, 0.7, 1.0, 1.3, 2.5])
def test_igso3_matches_the_textbook_series(eps):
    for w in (0.0, 1e-3, 0.4, 1.5, 2.9, math.pi):
        got = float(igso3_density(torch.tensor(w, dtype=F64), eps))
        want = _naive_series(w, eps)
        assert math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-11), (w, got, want)


@pytest.mark.parametrize("eps", [0.05, 0.1, 0.3, 0.5, 1.0, 1.5])
def test_igso3_series_and_image_forms_agree(eps):
    w = torch.linspace(0, math.pi, 1001, dtype=F64)
    a = igso3_density(w, eps, method="series")
    b = igso3_density(w, eps, method="images")
    peak = float(b.max())
    assert (a - b).abs().max() < 1e-9 * peak
    big = b > 1e-6 * peak  # where the series still has relative accuracy
    assert torch.allclose(a[big], b[big], rtol=1e-7, atol=0)
    # explicit terms force the series
    assert torch.allclose(igso3_density(w, eps, terms=igso3_terms(eps)), a, rtol=0, atol=0)


def test_igso3_truncation_rule():
    for eps in (0.05, 0.3, 1.0, 3.0):
        L = igso3_terms(eps)
        bound = (2 * L + 1) ** 2 * math.exp(-L * (L + 1) * eps * eps / 2)
        assert bound < 1e-12
        assert L == 1 or (2 * L - 1) ** 2 * math.exp(-(L - 1) * L * eps * eps / 2) >= 1e-12  # minimal
    assert igso3_terms(0.05) > igso3_terms(0.3) > igso3_terms(1.0)


def test_igso3_limits():
    w = torch.linspace(0, math.pi, 501, dtype=F64)
    gaps = [float((igso3_angle_density(w, e) - haar_angle_density(w)).abs().max()) for e in (1.0, 2.0, 3.0, 4.0)]
    assert all(b < a for a, b in itertools.pairwise(gaps))
    assert gaps[-1] < 1e-5
    # small eps: the angle of N(0, eps^2 I) axis-angle noise (a chi distribution with 3 dof)
    eps = 0.01
    ws = torch.linspace(1e-4, 4 * eps, 200, dtype=F64)
    chi3 = math.sqrt(2 / math.pi) * ws**2 / eps**3 * torch.exp(-(ws**2) / (2 * eps**2))
    assert torch.allclose(igso3_angle_density(ws, eps), chi3, rtol=1e-3)
    # omega -> 0 is finite and continuous, in both forms
    for e in (0.1, 2.0):
        f = igso3_density(torch.tensor([0.0, 1e-12, 1e-8, 1e-6], dtype=F64), e)
        assert torch.isfinite(f).all()
        assert torch.allclose(f, f[:1].expand(4), rtol=1e-9)
    # a tensor eps broadcasts, mixing both forms
    e = torch.tensor([0.1, 0.5, 1.5, 3.0], dtype=F64)
    mixed = igso3_density(w.unsqueeze(-1), e)
    for j in range(4):
        assert torch.allclose(mixed[:, j], igso3_density(w, float(e[j])), rtol=1e-12, atol=0)


def test_igso3_log_density_on_matrices():
    v = _unit(50, 23) * torch.linspace(0, math.pi, 50, dtype=F64).unsqueeze(-1)
    R = exp_map(v)
    for eps in (0.05, 0.5, 2.0):
        ld = igso3_log_density(R, eps)
        assert ld.shape == (50,)
        assert torch.isfinite(ld).all()
        ok = ld > -600  # where the density itself is representable
        assert torch.allclose(ld[ok].exp(), igso3_density(angle(R[ok]), eps), rtol=1e-10)
    # far tail for small eps stays finite and matches the leading Gaussian term
    eps, w = 0.05, 3.0
    got = float(igso3_log_density(exp_map(torch.tensor([w, 0.0, 0.0], dtype=F64)), eps))
    want = 0.5 * math.log(2 * math.pi) - 3 * math.log(eps) + eps**2 / 8 - w**2 / (2 * eps**2)
    want += math.log(w / math.sin(w / 2))
    assert math.isclose(got, want, rel_tol=1e-12)


@pytest.mark.parametrize("eps", [0.1, 0.5, 1.5])
def test_sample_igso3_angles_match_the_density(eps):
    n = 20_000
    R = sample_igso3((n,), eps, generator=_gen(24), dtype=F64)
    assert R.shape == (n, 3, 3)
    assert _is_rotation(R, atol=1e-12)
    w = angle(R)
    cdf = _numeric_cdf(eps)
    assert _ks_stat(w, cdf) < KS_CRIT / math.sqrt(n)
    # power: a 10% wrong eps is rejected
    assert _ks_stat(w, _numeric_cdf(eps * 1.1)) > KS_CRIT / math.sqrt(n)


def test_sample_igso3_axis_is_isotropic():
    n, eps = 20_000, 0.8
    R = sample_igso3((n,), eps, generator=_gen(25), dtype=F64)
    v = log_map(R)
    axis = v / v.norm(dim=-1, keepdim=True)
    assert axis.mean(0).abs().max() < 5 / math.sqrt(3 * n)
    assert ((axis**2).mean(0) - 1 / 3).abs().max() < 0.02
    # E[R] = c I with c = E[(1 + 2 cos w) / 3] from the density
    grid = torch.linspace(0, math.pi, 20_001, dtype=F64)
    c = float(_simpson((1 + 2 * torch.cos(grid)) / 3 * igso3_angle_density(grid, eps), grid))
    mean = R.mean(0)
    assert torch.allclose(mean, c * EYE, atol=5 * 0.5 / math.sqrt(n))


def test_sample_igso3_is_a_pure_function_of_u():
    u = torch.rand(4, 5, 3, generator=_gen(26), dtype=F64)
    a = sample_igso3((4, 5), 0.3, u=u)
    assert a.shape == (4, 5, 3, 3) and a.dtype == F64
    assert torch.equal(sample_igso3((4, 5), 0.3, u=u.clone()), a)
    assert not torch.allclose(sample_igso3((4, 5), 0.3, u=torch.rand(4, 5, 3, generator=_gen(27), dtype=F64)), a)
    b1 = sample_igso3((4, 5), 0.3, generator=_gen(28))
    b2 = sample_igso3((4, 5), 0.3, generator=_gen(28))
    assert torch.equal(b1, b2)
    assert b1.dtype == torch.get_default_dtype()
    assert sample_igso3((4, 5), 0.3, u=u, dtype=torch.float32).dtype == torch.float32
    with pytest.raises(ValueError):
        sample_igso3((4, 5), 0.3, u=u[..., :2])
    # the angle is monotone in its uniform; the median angle matches the CDF's median
    med = torch.tensor([[0.5, 0.25, 0.75]], dtype=F64)
    w_med = float(angle(sample_igso3((1,), 0.3, u=med)))
    assert abs(float(_numeric_cdf(0.3)(torch.tensor([w_med], dtype=F64))) - 0.5) < 1e-4
    # per-element eps: the same as one call per eps with the same uniforms
    eps = torch.tensor([[0.1], [0.4], [1.2], [0.1]], dtype=F64)
    mixed = sample_igso3((4, 5), eps, u=u)
    for i in range(4):
        assert torch.allclose(mixed[i], sample_igso3((5,), float(eps[i]), u=u[i]), atol=1e-14)
