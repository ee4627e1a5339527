"""Energy-based MD science: potentials against hand values and finite differences, the MCMC
reference against quadrature, Jensen-Shannon divergences against scipy, dihedrals against ASE,
the shared alanine dipeptide data, the ASE bridge, both Langevin integrators against the exact
densities, the energy networks' invariances, and the free-energy plots."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from scipy.optimize import minimize
from scipy.spatial.distance import jensenshannon

from polydiff.plugin import EnergyModel, FieldSpec, GaussianProcess, shared_dir
from polydiff_molecules import md
from polydiff_molecules.md_nets import ENERGY_NETWORKS, energy_closure

pytestmark = pytest.mark.usefixtures("one_thread")

ALA = shared_dir().joinpath(*md.ALA_FILE)
MB, DW = md.SYSTEMS["muller_brown"], md.SYSTEMS["double_well"]


def needs_alanine(test):
    """Mark a test as needing the shared alanine dipeptide file and skip it when absent."""
    skip = pytest.mark.skipif(not ALA.is_file(), reason=f"shared data file {ALA} not found "
                                                        "(set POLYDIFF_SHARED to the shared folder)")
    return skip(pytest.mark.shared(test))


def noise_floor(system, n, bins, seed=0, draws=3):
    """The JS divergence of ``n`` i.i.d. exact samples' histogram from the exact bin
    probabilities: what a perfect sampler scores, on average."""
    p = md.reference_probs(system, bins).ravel()
    rng = np.random.default_rng(seed)
    return float(np.mean([md.js_divergence(np.append(rng.multinomial(n, p), 0), np.append(p, 0))
                          for _ in range(draws)]))


def box_points(system, n, seed=0):
    rng = np.random.default_rng(seed)
    lo, hi = np.array(system.range).T
    return lo + (hi - lo) * rng.random((n, system.dim))


# --------------------------------------------------------------------------------------------
# potentials
# --------------------------------------------------------------------------------------------


def test_muller_brown_minima_and_energies():
    for start, energy in zip(MB.minima, MB.minima_energy):
        r = minimize(md.muller_brown, np.array(start) + 0.02, jac=lambda x: -md.muller_brown_force(x), tol=1e-12)
        assert np.allclose(r.x, start, atol=2e-3)
        assert abs(md.muller_brown(r.x) - energy) < 0.01
        assert np.abs(md.muller_brown_force(r.x)).max() < 1e-4
    # the standard values, by hand
    assert np.allclose([md.muller_brown([-0.558, 1.442]), md.muller_brown([0.623, 0.028]),
                        md.muller_brown([-0.050, 0.467])], [-146.70, -108.17, -80.77], atol=0.01)
    # vectorised over any leading shape; torch in, torch out
    x = box_points(MB, 12).reshape(3, 4, 2)
    assert md.muller_brown(x).shape == (3, 4)
    assert md.muller_brown_force(x).shape == (3, 4, 2)
    assert torch.allclose(md.muller_brown(torch.as_tensor(x)), torch.as_tensor(md.muller_brown(x)))


def test_double_well_minima():
    a, b, c = md.DOUBLE_WELL["a"], md.DOUBLE_WELL["b"], md.DOUBLE_WELL["c"]
    roots = np.sort(np.roots([4 * a, 0, -4 * a, c]).real)  # dV/dx = 4a x (x^2 - 1) + c = 0
    minima = roots[[0, 2]]
    assert np.allclose(minima, [m[0] for m in DW.minima], atol=1e-4)
    for m, e in zip(minima, DW.minima_energy):
        assert np.allclose(md.double_well_force([m, 0.0]), 0.0, atol=1e-9)
        assert abs(md.double_well([m, 0.0]) - e) < 1e-3
    # the barrier (at the root near 0) is about a = 3 kT above the minima
    assert 2.5 < md.double_well([roots[1], 0.0]) - DW.minima_energy[0] < 3.6
    assert md.double_well([0.0, 1.0]) == pytest.approx(a + b)


@pytest.mark.parametrize("system", [MB, DW], ids=lambda s: s.name)
def test_forces_are_minus_gradients(system):
    x = box_points(system, 50, seed=1)
    h = 1e-6
    fd = np.stack([(system.energy(x + h * e) - system.energy(x - h * e)) / (2 * h) for e in np.eye(2)], -1)
    f = system.force(x)
    assert np.allclose(-fd, f, rtol=1e-5, atol=1e-5 * np.abs(f).max())
    xt = torch.as_tensor(x).requires_grad_(True)
    (g,) = torch.autograd.grad(system.energy(xt).sum(), xt)
    assert torch.allclose(-g, system.force(xt).detach(), rtol=1e-10, atol=1e-9)
    assert np.allclose(system.reduced_force(x), f / system.kT)


# --------------------------------------------------------------------------------------------
# reference samples and Jensen-Shannon divergences
# --------------------------------------------------------------------------------------------


def test_js_divergence_matches_scipy():
    rng = np.random.default_rng(0)
    for _ in range(5):
        p, q = rng.random(200), rng.random(200)
        p[rng.random(200) < 0.3] = 0  # empty bins: 0 log 0 = 0
        q[rng.random(200) < 0.3] = 0
        assert md.js_divergence(p, q) == pytest.approx(jensenshannon(p, q) ** 2, rel=1e-9, abs=1e-12)
    assert md.js_divergence([1, 0], [0, 1]) == pytest.approx(np.log(2))
    assert md.js_divergence([1, 2, 3], [2, 4, 6]) == pytest.approx(0.0, abs=1e-15)
    with pytest.raises(ValueError):
        md.js_divergence([1, 2], [1, 2, 3])


def test_histogram_js():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(2000, 2))
    assert md.histogram_js(a, a) == pytest.approx(0.0, abs=1e-15)
    assert md.histogram_js(a, a + 100.0, bins=10) == pytest.approx(np.log(2))
    # mass outside the box or NaN counts in an overflow bin instead of being dropped
    h = md.histogram(np.array([[0.5, 0.5], [5.0, 0.5], [np.nan, 0.0]]), 2, [(0, 1), (0, 1)])
    assert h.shape == (5,) and h[-1] == pytest.approx(2 / 3) and h.sum() == pytest.approx(1.0)
    box = [(-4, 4), (-4, 4)]
    assert md.histogram_js(a, np.where(np.arange(2000)[:, None] < 1000, np.nan, a), 20, box) > 0.1
    # 1-D and N-D
    assert md.js_1d(a[:, 0], a[:, 0] + 0.0) == pytest.approx(0.0, abs=1e-15)
    b = rng.normal(size=(2000, 3))
    assert 0 < md.histogram_js(b, rng.normal(size=(2000, 3)), bins=5) < 0.05


def test_reference_probs_converge():
    p = md.reference_probs(MB, 50, sub=8)
    assert p.shape == (50, 50) and p.sum() == pytest.approx(1.0)
    assert md.js_divergence(p, md.reference_probs(MB, 50, sub=16)) < 1e-5
    # the basins: the deep one holds most of the mass, the two others a good share each
    centres = [np.linspace(lo, hi, 101)[:-1] + (hi - lo) / 200 for lo, hi in MB.range]
    g = np.stack(np.meshgrid(*centres, indexing="ij"), -1)
    nearest = np.argmin(((g[..., None, :] - np.array(MB.minima)) ** 2).sum(-1), -1)
    pops = [md.reference_probs(MB, 100)[nearest == k].sum() for k in range(3)]
    assert 0.7 < pops[0] < 0.8 and 0.1 < pops[1] < 0.18 and 0.08 < pops[2] < 0.15


@pytest.mark.parametrize("system", [MB, DW], ids=lambda s: s.name)
def test_mcmc_reference_matches_quadrature(system):
    stats = {}
    x = md.mcmc_reference(system, 30_000, seed=0, stats=stats)
    assert x.shape == (30_000, 2) and system.contains(x).all()
    js, floor = md.reference_js(x, system, bins=50), noise_floor(system, 30_000, 50)
    assert js < 0.01 and js < 1.3 * floor, (js, floor)
    assert 0.4 < stats["accept_mala"] < 0.9 and stats["accept_global"] > 0.03, stats
    # the check has power: the same chains at twice the temperature are far off
    hot = md.mcmc_reference(dataclasses.replace(system, kT=2 * system.kT), 10_000, seed=0)
    assert md.reference_js(hot, system, bins=50) > 5 * floor
    again = [md.mcmc_reference(system, 50, seed=3, burn=20) for _ in range(2)]
    assert np.array_equal(*again)


# --------------------------------------------------------------------------------------------
# alanine dipeptide
# --------------------------------------------------------------------------------------------


def test_dihedral_against_ase_and_by_hand():
    from ase import Atoms

    rng = np.random.default_rng(0)
    p = rng.normal(size=(20, 4, 3))
    ours = np.degrees(md.dihedral(p[:, 0], p[:, 1], p[:, 2], p[:, 3]))
    ase = np.array([Atoms("H4", positions=q).get_dihedral(0, 1, 2, 3) for q in p])
    assert np.allclose(np.mod(ours, 360.0), ase, atol=1e-8)
    trans = np.array([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
    cis = trans.copy()
    cis[3] = [0.0, 1.0, 0.0]
    plus = trans.copy()
    plus[3] = [1.0, 0.0, 1.0]  # looking along 1 -> 2, 0 turns clockwise onto 3 by 90 degrees
    assert abs(md.dihedral(*trans)) == pytest.approx(np.pi)
    assert md.dihedral(*cis) == pytest.approx(0.0)
    assert md.dihedral(*plus) == pytest.approx(np.pi / 2)
    # torch in, torch out; a mirror image flips the sign
    pt = torch.as_tensor(p)
    assert np.allclose(md.dihedral(*pt.unbind(1)).numpy(), np.radians(ours))
    assert np.allclose(md.dihedral(*(p * [1, 1, -1]).transpose(1, 0, 2)), -np.radians(ours))
    frames = rng.normal(size=(3, 2, 5, 3))
    pp = md.phi_psi(frames)
    assert pp.shape == (3, 2, 2)
    assert np.allclose(pp[..., 1], md.dihedral(*[frames[..., k, :] for k in range(1, 5)]))


@needs_alanine
def test_alanine_phi_psi_statistics():
    x = md.load_alanine()
    assert x.shape == (10_000, 5, 3) and x.dtype == np.float32
    bonds = np.linalg.norm(np.diff(x, axis=1), axis=-1).mean(0)
    assert np.allclose(bonds, [1.33, 1.47, 1.54, 1.34], atol=0.02)  # Angstrom
    phi = np.degrees(md.phi_psi(x.astype(np.float64))[:, 0])
    assert abs(phi.mean() + 97.0) < 1.5  # the data README: mean phi -97 deg
    assert abs(np.mean(phi > 0) - 0.024) < 0.002  # and 2.4 % of frames with phi > 0
    # two halves of one trajectory agree much better than the trajectory and its mirror image
    halves = md.ramachandran_js(x[::2], x[1::2])
    assert halves < 0.1 and md.ramachandran_js(x, x * np.array([1, 1, -1])) > 5 * halves
    coords, forces = md.load_alanine(with_forces=True)
    assert forces.shape == coords.shape


def test_load_alanine_errors(tmp_path):
    missing = tmp_path / "nope.npz"
    with pytest.raises(FileNotFoundError, match=r"nope\.npz"):
        md.load_alanine(missing)
    bad = tmp_path / "bad.npz"
    np.savez(bad, coordinates=np.zeros((4, 6, 3), np.float32))
    with pytest.raises(ValueError, match=r"bad\.npz.*\(frames, 5, 3\)"):
        md.load_alanine(bad)
    np.savez(bad, other=np.zeros((4, 5, 3)))
    with pytest.raises(ValueError, match=r"bad\.npz.*coordinates"):
        md.load_alanine(bad)
    junk = tmp_path / "junk.npz"
    junk.write_text("not an archive")
    with pytest.raises(ValueError, match=r"junk\.npz"):
        md.load_alanine(junk)
    good = tmp_path / "good.npz"
    np.savez(good, coordinates=np.ones((3, 5, 3)))
    assert md.load_alanine(good).dtype == np.float32


# --------------------------------------------------------------------------------------------
# the ASE bridge and Langevin dynamics
# --------------------------------------------------------------------------------------------


def mb_energy(x):
    """The Müller-Brown energy in kT: what a perfect model of the system learns at t_min."""
    return md.muller_brown(x) / md.MULLER_BROWN_KT


def chain_energy(x):
    """A harmonic bead chain in kT (B, n, 3) -> (B,)."""
    d = torch.linalg.norm(x[:, 1:] - x[:, :-1], dim=-1)
    return 100.0 * ((d - 1.5) ** 2).sum(-1)


def test_energy_calculator_forces():
    from ase import Atoms

    kT = md.KT_300K
    pts = box_points(MB, 3, seed=2)
    atoms = Atoms("H3", positions=np.c_[pts, np.zeros(3)])
    atoms.calc = md.EnergyCalculator(mb_energy, kT=kT, planar=True)
    assert atoms.get_potential_energy() == pytest.approx(kT * MB.reduced_energy(pts).sum())
    f = atoms.get_forces()
    assert np.allclose(f[:, :2], kT * MB.reduced_force(pts)) and np.all(f[:, 2] == 0)
    # a molecule: forces are -grad of the energy (central differences of ASE's energy, in eV)
    rng = np.random.default_rng(0)
    mol = Atoms("C4", positions=np.cumsum(rng.normal(size=(4, 3)), 0))
    mol.calc = md.EnergyCalculator(chain_energy, kT=kT)
    f = mol.get_forces()
    fd = np.zeros_like(f)
    for i in range(4):
        for k in range(3):
            e = []
            for s in (1e-5, -1e-5):
                m = mol.copy()
                m.calc = md.EnergyCalculator(chain_energy, kT=kT)
                m.positions[i, k] += s
                e.append(m.get_potential_energy())
            fd[i, k] = -(e[0] - e[1]) / 2e-5
    assert np.allclose(f, fd, atol=1e-7)
    with pytest.raises(ValueError, match="one energy per configuration"):
        mol.calc = md.EnergyCalculator(lambda x: chain_energy(x).sum())
        mol.get_forces()


def test_plain_ase_script_runs_langevin():
    from ase import Atoms, units
    from ase.constraints import FixCartesian
    from ase.md.langevin import Langevin

    atoms = Atoms("H", positions=[[-0.5, 1.4, 0.0]])  # a 2-D system: atom 0 at z = 0
    atoms.calc = md.EnergyCalculator(mb_energy, kT=md.KT_300K, planar=True)
    atoms.set_constraint(FixCartesian([0], mask=(False, False, True)))
    Langevin(atoms, 1 * units.fs, temperature_K=300, friction=0.05 / units.fs, fixcm=False,
             rng=np.random.default_rng(0)).run(200)
    x = atoms.get_positions()[0]
    assert x[2] == 0.0 and np.isfinite(x).all() and MB.contains(x[:2])
    mol = Atoms("C4", positions=[[0, 0, 0], [1.5, 0, 0], [1.5, 1.5, 0], [3, 1.5, 0.2]])
    mol.calc = md.EnergyCalculator(chain_energy)
    Langevin(mol, 1 * units.fs, temperature_K=300, friction=0.05 / units.fs, fixcm=False,
             rng=np.random.default_rng(0)).run(100)
    assert np.allclose(np.linalg.norm(np.diff(mol.positions, axis=0), axis=1), 1.5, atol=0.3)
    traj = md.langevin(chain_energy, mol.positions, steps=20, dt=1.0, every=5)
    assert traj.shape == (4, 4, 3)
    assert md.langevin(mb_energy, [-0.5, 1.4], steps=6, every=3).shape == (2, 2)


def test_langevin_samples_the_exact_density():
    """Both integrators with exact forces, started from the MCMC reference, keep sampling the
    exact density (JS to quadrature at the i.i.d. noise floor); torch's overdamped Langevin
    crosses the double well's barrier from one minimum to the right basin populations; the
    ASE and torch trajectories agree with each other."""
    bins, n = 40, 4000
    ref = md.mcmc_reference(MB, n, seed=1)
    floor = noise_floor(MB, 4 * n, bins)
    torch_traj = md.langevin_torch(MB.reduced_force, ref, 1000, dt=0.005, gamma=5.0, kT=1.0, seed=0, every=250)
    assert torch_traj.shape == (4, n, 2)
    js_torch = md.reference_js(torch_traj.reshape(-1, 2), MB, bins)
    ase_traj = md.langevin(mb_energy, ref[:3000], steps=400, dt=1.0, friction=0.05, seed=0, every=100)
    assert ase_traj.shape == (4, 3000, 2)
    js_ase = md.reference_js(ase_traj.reshape(-1, 2), MB, bins)
    assert js_torch < 1.5 * floor and js_ase < 1.5 * noise_floor(MB, 12_000, bins), (js_torch, js_ase, floor)
    assert md.histogram_js(torch_traj.reshape(-1, 2), ase_traj.reshape(-1, 2), bins, MB.range) < 3 * floor
    # the check has power: the wrong temperature is far off
    hot = md.langevin_torch(MB.force, ref, 400, dt=0.005, gamma=5.0, kT=2 * MB.kT, seed=0, every=400)
    assert md.reference_js(hot[-1], MB, bins) > 3 * noise_floor(MB, n, bins)
    # double well from its left minimum: barrier crossings reach the 71 / 29 split
    start = np.tile([DW.minima[0]], (n, 1))
    dw = md.langevin_torch(DW.force, start, 3000, dt=0.01, gamma=1.0, seed=1, every=1500, method="overdamped")
    left = float((dw[-1][:, 0] < 0).mean())
    exact_left = md.reference_probs(DW, 100)[:50].sum()
    assert abs(left - exact_left) < 0.03, (left, exact_left)
    assert md.reference_js(dw[-1], DW, bins) < 1.5 * noise_floor(DW, n, bins)


def test_langevin_torch_is_seeded_and_keeps_type():
    x0 = torch.zeros(8, 2, dtype=torch.float64)
    a = md.langevin_torch(DW.force, x0, 10, dt=0.01, seed=4, every=5)
    b = md.langevin_torch(DW.force, x0, 10, dt=0.01, seed=4, every=5)
    assert isinstance(a, torch.Tensor) and a.shape == (2, 8, 2) and torch.equal(a, b)
    assert not torch.equal(a, md.langevin_torch(DW.force, x0, 10, dt=0.01, seed=5, every=5))
    f = md.force_of(lambda x: md.double_well(x))
    with torch.no_grad():
        assert torch.allclose(f(x0 + 0.3), DW.force(x0 + 0.3))
    with pytest.raises(ValueError, match="unknown Langevin method"):
        md.langevin_torch(DW.force, x0, 1, method="verlet")


# --------------------------------------------------------------------------------------------
# energy networks
# --------------------------------------------------------------------------------------------


def random_rotation(rng):
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def test_mlp_energy_with_and_without_fields():
    fields = {"x": FieldSpec(GaussianProcess("vp_linear"), prediction="score")}
    torch.manual_seed(0)
    for f in (fields, None):
        net = ENERGY_NETWORKS["mlp"]({"system": "muller_brown", "dim": 2}, f, hidden=32, layers=2)
        e = net({"x": torch.randn(6, 2)}, torch.rand(6))
        assert e.shape == (6,) and torch.isfinite(e).all()
    model = EnergyModel(net, fields)
    out = model({"x": torch.randn(5, 2)}, torch.full((5,), 0.3))
    assert out["x"].shape == (5, 2) and out["energy"].shape == (5,)
    with pytest.raises(ValueError, match="points"):
        net({"x": torch.randn(5, 3)}, torch.rand(5))


def test_bead_energy_is_se3_invariant_and_chiral():
    fields = {"x": FieldSpec(GaussianProcess("vp_linear"), prediction="score")}
    torch.manual_seed(0)
    net = ENERGY_NETWORKS["beads"]({"beads": 5, "data_std": 2.0}, fields, hidden=32, layers=2).double()
    rng = np.random.default_rng(0)
    x = torch.as_tensor(np.cumsum(rng.normal(size=(4, 5, 3)), axis=1) * 1.5)
    t = torch.tensor([0.01, 0.2, 0.5, 0.9], dtype=torch.float64)
    R = torch.as_tensor(random_rotation(rng))
    shift = torch.as_tensor(rng.normal(size=(1, 1, 3)) * 5)
    y = x @ R.T + shift

    def energy_and_grad(z):
        z = z.clone().requires_grad_(True)
        e = net({"x": z}, t)
        return e.detach(), torch.autograd.grad(e.sum(), z)[0]

    ex, gx = energy_and_grad(x)
    ey, gy = energy_and_grad(y)
    assert torch.allclose(ex, ey, rtol=0, atol=1e-8)
    assert torch.allclose(gx @ R.T, gy, rtol=0, atol=1e-8)  # forces rotate with the molecule
    assert torch.allclose(gx.sum(1), torch.zeros(4, 3, dtype=torch.float64), atol=1e-10)  # no net force
    mirror = x * torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64)
    assert (net({"x": mirror}, t) - ex).abs().max() > 1e-6  # not reflection invariant: chirality matters
    # a bead network at t_min drives ASE dynamics through the calculator
    fn = energy_closure(net, t=1e-3)
    traj = md.langevin(fn, x[0].numpy(), steps=4, dt=0.5, every=2)
    assert traj.shape == (2, 5, 3) and np.isfinite(traj).all()
    assert EnergyModel(net, fields)({"x": x}, t)["x"].shape == (4, 5, 3)


# --------------------------------------------------------------------------------------------
# plots
# --------------------------------------------------------------------------------------------


def test_free_energy_plots(tmp_path):
    pytest.importorskip("matplotlib")
    ref = md.mcmc_reference(MB, 2000, seed=0, burn=200)
    out = md.plot_free_energy({"reference": ref, "samples": ref[::2]}, tmp_path / "mb.png", system=MB, bins=40)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rng = np.random.default_rng(0)
    angles = rng.uniform(-np.pi, np.pi, size=(500, 2))
    frames = np.cumsum(rng.normal(size=(50, 5, 3)), axis=1)
    out = md.plot_free_energy({"a": angles, "frames": frames}, tmp_path / "rama.png", kind="ramachandran")
    assert out.is_file() and out.stat().st_size > 1000
    out = md.plot_free_energy_1d({"x": md.mcmc_reference(DW, 2000, seed=0, burn=200)}, tmp_path / "dw.png",
                                 system="double_well")
    assert out.read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dw.png", "mb.png", "rama.png"]  # no temporaries left
    with pytest.raises(ValueError, match="kind"):
        md.plot_free_energy({"a": angles}, tmp_path / "x.png", kind="3d")
