"""The periodic crystal representation: lattice geometry and minimum images (against pymatgen and a brute-force
search, skewed cells included), PeriodicNet's symmetries (float64: permutations, torus translations, integer
shifts, padding), its outputs and conditions, and the CrystalRegressor with its training and freezing."""

from __future__ import annotations

import itertools
import json
import time

import numpy as np
import pytest
import torch
from pymatgen.core import Lattice, Structure

from polydiff.plugin import Absorbing, FieldSpec, FlatTorus, GaussianProcess, GeodesicFlow, Masked, Plain, shared_dir
from polydiff_crystals.data import cdvae_canonical
from polydiff_crystals.modality import periodic_states
from polydiff_crystals.periodic import (
    CrystalRegressor,
    PeriodicNet,
    denormalise,
    freeze_early,
    lattice_matrix,
    min_image,
    predict,
    structures_to_batch,
    train_regressor,
)

pytestmark = pytest.mark.usefixtures("one_thread")

FIX = shared_dir() / "fixtures" / "crystal_metrics"


def needs_fixture(test):
    skip = pytest.mark.skipif(not FIX.is_dir(),
                              reason=f"shared fixture {FIX} not found (set POLYDIFF_SHARED to the shared folder)")
    return skip(pytest.mark.shared(test))


ELEMENTS = ["Li", "O", "Na", "Cl"]
V = len(ELEMENTS)
INFO = {
    "elements": ELEMENTS,
    "lattice_mean": [1.5, 1.5, 1.5, 90.0, 90.0, 90.0],
    "lattice_std": [0.2, 0.2, 0.2, 10.0, 10.0, 10.0],
    "conditions": {"gap": {"kind": "scalar", "low": 0.0, "high": 5.0}, "system": {"kind": "class", "num_classes": 7}},
}
FIELDS = {
    "frac": FieldSpec(GeodesicFlow(FlatTorus()), Masked("mask"), "x0"),
    "lattice": FieldSpec(GaussianProcess("linear"), Plain(), "x0"),
    "types": FieldSpec(Absorbing(V), Masked("mask")),
}


# ---------------------------------------------------------------------------------------------
# geometry
# ---------------------------------------------------------------------------------------------
def brute_force(diff: np.ndarray, matrix: np.ndarray, reach: int = 6) -> np.ndarray:
    """Minimum-image distances by searching every image within +-reach cells (no wrapping, no reduction)."""
    shifts = np.array(list(itertools.product(range(-reach, reach + 1), repeat=3)), dtype=float)
    cart = (diff[..., None, :] + shifts) @ matrix
    return np.sqrt((cart**2).sum(-1)).min(-1)


def skewed_lattices() -> list[np.ndarray]:
    """Row-vector lattice matrices: random cells, very oblique parameter sets and skewed bases of nice lattices."""
    rng = np.random.default_rng(3)
    mats = [Lattice.from_parameters(5.0, 4.0, 4.5, 90, 170, 90).matrix,
            Lattice.from_parameters(3.0, 3.2, 7.0, 20.0, 25.0, 30.0).matrix,
            Lattice.from_parameters(2.5, 9.0, 3.1, 160.0, 100.0, 75.0).matrix]
    for _ in range(4):
        p = np.r_[rng.uniform(2.5, 8.0, 3), rng.uniform(60, 120, 3)]
        mats.append(Lattice.from_parameters(*p).matrix)
    cube = np.diag([3.0, 3.5, 4.0])
    bases = ([[1, 0, 0], [5, 1, 0], [2, -4, 1]], [[1, 3, -2], [0, 1, 4], [0, 0, 1]], [[2, 1, 0], [1, 1, 0], [3, -2, 1]])
    for u in bases:
        assert round(abs(np.linalg.det(u))) == 1
        mats.append(np.asarray(u, dtype=float) @ cube)
    assert all(np.isfinite(m).all() and abs(np.linalg.det(m)) > 1.0 for m in mats)
    return mats


def test_lattice_matrix_matches_pymatgen_metric():
    rng = np.random.default_rng(0)
    for _ in range(10):
        p = np.r_[rng.uniform(2, 9, 3), rng.uniform(50, 130, 3)]
        ours = lattice_matrix(torch.tensor(p)[None])[0].numpy()
        theirs = Lattice.from_parameters(*p).matrix
        np.testing.assert_allclose(ours @ ours.T, theirs @ theirs.T, atol=1e-9)  # same metric, any orientation
        np.testing.assert_allclose(ours[1, 2], 0.0, atol=1e-12)
    p = torch.tensor([[4.0, 5.0, 6.0, 80.0, 100.0, 110.0]], requires_grad=True)
    lattice_matrix(p).sum().backward()
    assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


def test_denormalise_clamps_angles_and_inverts_normalisation():
    p = torch.tensor([[np.log(4.0), np.log(5.0), np.log(6.0), 95.0, 80.0, 120.0]])
    mean, std = torch.tensor(INFO["lattice_mean"]), torch.tensor(INFO["lattice_std"])
    raw = denormalise((p - mean) / std, INFO)
    np.testing.assert_allclose(raw.numpy(), [[4.0, 5.0, 6.0, 95.0, 80.0, 120.0]], rtol=1e-5)
    wild = denormalise(torch.tensor([[0.0, 0.0, 0.0, 30.0, -30.0, 0.0]]), INFO)
    assert wild[0, 3] <= 170.0 and wild[0, 4] >= 10.0
    assert torch.isfinite(lattice_matrix(denormalise(torch.randn(64, 6) * 20, INFO))).all()


def test_min_image_matches_pymatgen_and_brute_force_on_skewed_cells():
    rng = np.random.default_rng(1)
    for m in skewed_lattices():
        f = rng.uniform(0, 1, (7, 3))
        diff = f[None, :, :] - f[:, None, :]
        _, dist = min_image(torch.tensor(diff)[None], torch.tensor(m)[None])
        np.testing.assert_allclose(dist[0].numpy(), Lattice(m).get_all_distances(f, f), atol=1e-6)
        np.testing.assert_allclose(dist[0].numpy(), brute_force(diff, m, reach=12), atol=1e-9)


def test_min_image_certificate_catches_what_27_images_miss():
    """Without basis reduction the 27 images of a skewed basis miss the nearest image; the certified wider search
    must still find it (and a naive round-the-difference answer must indeed be wrong here)."""
    rng = np.random.default_rng(2)
    for m in (Lattice.from_parameters(5.0, 4.0, 4.5, 90, 170, 90).matrix,
              np.asarray([[2, 1, 0], [1, 1, 0], [3, -2, 1]], dtype=float) @ np.diag([3.0, 3.5, 4.0])):
        diff = rng.uniform(-1, 1, (200, 3))
        truth = brute_force(diff, m, reach=12)
        naive = np.linalg.norm((diff - np.round(diff)) @ m, axis=-1)
        assert (naive - truth).max() > 1.0
        for reduce in (False, True):
            vec, dist = min_image(torch.tensor(diff), torch.tensor(m), reduce=reduce)
            np.testing.assert_allclose(dist.numpy(), truth, atol=1e-9)
            np.testing.assert_allclose(np.linalg.norm(vec.numpy(), axis=-1), truth, atol=1e-9)
        _, uncertified = min_image(torch.tensor(diff), torch.tensor(m), reduce=False, certify=False)
        assert (uncertified.numpy() - truth).max() > 0.1  # the certificate is what fixes it


def test_min_image_is_basis_independent_translation_invariant_and_differentiable():
    rng = np.random.default_rng(4)
    m = Lattice.from_parameters(4.0, 5.0, 6.0, 75.0, 100.0, 115.0).matrix
    u = np.asarray([[1, 2, 0], [0, 1, 0], [-1, 3, 1]], dtype=float)  # unimodular change of basis
    f = rng.uniform(0, 1, (5, 3))
    diff = f[None] - f[:, None]
    _, d1 = min_image(torch.tensor(diff), torch.tensor(m))
    _, d2 = min_image(torch.tensor(diff @ np.linalg.inv(u)), torch.tensor(u @ m))  # same points, other basis
    _, d3 = min_image(torch.tensor(diff + rng.integers(-3, 4, diff.shape)), torch.tensor(m))
    np.testing.assert_allclose(d1.numpy(), d2.numpy(), atol=1e-9)
    np.testing.assert_allclose(d1.numpy(), d3.numpy(), atol=1e-9)
    p = torch.tensor([4.0, 5.0, 6.0, 75.0, 100.0, 115.0], dtype=torch.float64, requires_grad=True)
    x = torch.tensor(diff[0, 1:], requires_grad=True)
    _, d = min_image(x, p)
    d.sum().backward()
    assert torch.isfinite(p.grad).all() and torch.isfinite(x.grad).all() and p.grad.abs().sum() > 0


def test_min_image_rejects_degenerate_cells():
    flat = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [1.0, 1.0, 0]], dtype=torch.float64)
    with pytest.raises(ValueError, match="degenerate"):
        min_image(torch.tensor([[0.3, 0.2, 0.1]], dtype=torch.float64), flat)


@needs_fixture
def test_min_image_matches_pymatgen_on_fixture_structures():
    data = json.loads((FIX / "structures.json").read_text())
    checked, mins = 0, {}
    for records in data.values():
        if not isinstance(records, list):
            continue
        for rec in records:
            params = np.r_[rec["lengths"], rec["angles"]]
            if (params[:3] <= 0).any():  # broken_07: not a lattice
                continue
            s = Structure(Lattice.from_parameters(*params), rec["atom_types"], rec["frac_coords"])
            f = np.asarray(rec["frac_coords"])
            diff = torch.tensor(f[None] - f[:, None])[None]
            for lat in (torch.tensor(params)[None], torch.tensor(s.lattice.matrix)[None]):
                _, dist = min_image(diff, lat)
                np.testing.assert_allclose(dist[0].numpy(), s.distance_matrix, atol=1e-6, err_msg=rec["id"])
            mins[rec["id"]] = (dist[0].numpy() + 1e9 * np.eye(len(f))).min()
            checked += 1
    assert checked >= 160
    assert abs(mins["broken_01"] - 0.441440) < 1e-6
    assert abs(mins["broken_00"] - 0.235530) < 1e-6
    rec = next(r for r in data["broken8"] if r["id"] == "broken_01")
    f = np.asarray(rec["frac_coords"])
    naive = (f[1] - f[0]) - np.round(f[1] - f[0])
    m = lattice_matrix(torch.tensor(np.r_[rec["lengths"], rec["angles"]])).numpy()
    assert abs(np.linalg.norm(naive @ m) - 4.637) < 1e-3  # what the naive convention gives


# ---------------------------------------------------------------------------------------------
# PeriodicNet
# ---------------------------------------------------------------------------------------------
def make_state(b: int = 3, n: int = 6, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    counts = torch.tensor([n, n - 2, 2][:b])
    mask = (torch.arange(n)[None] < counts[:, None]).double()
    return {
        "frac": torch.rand(b, n, 3, generator=g, dtype=torch.float64),
        "lattice": torch.randn(b, 6, generator=g, dtype=torch.float64) * 0.5,
        "types": torch.randint(0, V + 1, (b, n), generator=g),
        "mask": mask,
        "gap": torch.tensor([1.5, float("nan"), 3.0], dtype=torch.float64)[:b],
        "system": torch.tensor([2, 5, -1])[:b],
    }


def make_net(fields=FIELDS, seed: int = 0, **kw) -> PeriodicNet:
    torch.manual_seed(seed)
    net = PeriodicNet(INFO, fields, hidden=32, layers=2, fourier=4, rbf=8, **kw).double()
    with torch.no_grad():  # leave the identity start, so that the checks see non-trivial outputs
        for p in net.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return net


def torus_close(a: torch.Tensor, b: torch.Tensor, atol: float = 1e-9) -> bool:
    d = a - b
    return bool(((d - torch.round(d)).abs() < atol).all())


def test_periodic_net_starts_at_identity():
    torch.manual_seed(0)
    net = PeriodicNet(INFO, FIELDS, hidden=32, layers=2).double()
    s = make_state()
    out = net(s, torch.tensor([0.1, 0.5, 0.9]))
    assert set(out) == {"frac", "lattice", "types"}
    assert torch.allclose(out["frac"], s["frac"]) and torch.allclose(out["lattice"], s["lattice"])
    assert out["types"].shape == (3, 6, V) and (out["types"] == 0).all()


def test_periodic_net_output_keys_follow_fields():
    s = make_state()
    for keys in (["frac"], ["lattice", "types"], ["types"], ["frac", "lattice", "types"]):
        out = make_net({k: FIELDS[k] for k in keys})(s, 0.3)
        assert sorted(out) == sorted(keys)
        assert all(torch.isfinite(v).all() for v in out.values())
    assert ((out["frac"] >= 0) & (out["frac"] < 1)).all()
    with pytest.raises(ValueError, match="predicts"):
        PeriodicNet(INFO, {"pos": FIELDS["frac"]})


def test_periodic_net_permutation_equivariance():
    net, s, t = make_net(), make_state(), torch.tensor([0.2, 0.6, 0.8])
    out = net(s, t)
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    sp = dict(s, frac=s["frac"][:, perm], types=s["types"][:, perm], mask=s["mask"][:, perm])
    outp = net(sp, t)
    node = sp["mask"] > 0
    assert torch.allclose(outp["frac"][node], out["frac"][:, perm][node], atol=1e-10)
    assert torch.allclose(outp["types"], out["types"][:, perm], atol=1e-10)
    assert torch.allclose(outp["lattice"], out["lattice"], atol=1e-10)


def test_periodic_net_torus_translation_and_integer_shifts():
    net, s, t = make_net(), make_state(), torch.tensor([0.2, 0.6, 0.8])
    out = net(s, t)
    assert not torus_close(out["frac"], s["frac"], 1e-3)  # the displacement is not trivially zero
    shift = torch.rand(3, 1, 3, dtype=torch.float64)
    moved = net(dict(s, frac=torch.remainder(s["frac"] + shift, 1.0)), t)
    assert torus_close(moved["frac"], out["frac"] + shift)
    assert torch.allclose(moved["lattice"], out["lattice"], atol=1e-9)
    assert torch.allclose(moved["types"], out["types"], atol=1e-9)
    jumps = torch.randint(-2, 3, s["frac"].shape).double()
    jumped = net(dict(s, frac=s["frac"] + jumps), t)
    assert torus_close(jumped["frac"], out["frac"])
    assert torch.allclose(jumped["lattice"], out["lattice"], atol=1e-9)
    assert torch.allclose(jumped["types"], out["types"], atol=1e-9)


@pytest.mark.parametrize("cutoff", [None, 4.0])
def test_periodic_net_padding_never_leaks(cutoff):
    net, s, t = make_net(cutoff=cutoff), make_state(), torch.tensor([0.2, 0.6, 0.8])
    out = net(s, t)
    extra = 4
    g = torch.Generator().manual_seed(9)
    padded = dict(s)
    padded["frac"] = torch.cat([s["frac"], torch.rand(3, extra, 3, generator=g, dtype=torch.float64) * 7], 1)
    padded["types"] = torch.cat([s["types"], torch.randint(0, V + 1, (3, extra), generator=g)], 1)
    padded["mask"] = torch.cat([s["mask"], torch.zeros(3, extra, dtype=torch.float64)], 1)
    scrambled = dict(s, frac=torch.where(s["mask"][..., None] > 0, s["frac"], 0.77),
                     types=torch.where(s["mask"] > 0, s["types"], 1))
    for other in (net(padded, t), net(scrambled, t)):
        node = s["mask"] > 0
        assert torus_close(other["frac"][:, :6][node], out["frac"][node])
        assert torch.allclose(other["types"][:, :6][node], out["types"][node], atol=1e-10)
        assert torch.allclose(other["lattice"], out["lattice"], atol=1e-10)
        assert (other["types"][:, 6:] == 0).all()


def test_periodic_net_dropped_conditions_use_null_embedding_and_backprop():
    net, s = make_net(), make_state()
    out = net(s, 0.5)
    without = net({k: v for k, v in s.items() if k not in ("gap", "system")}, 0.5)
    # sample 1 has gap NaN and system 5: it differs from the unconditional one; sample 2 has system -1 only
    dropped = dict(s, gap=torch.full((3,), float("nan"), dtype=torch.float64), system=torch.full((3,), -1))
    out_dropped = net(dropped, 0.5)
    for k in out:
        assert torch.allclose(out_dropped[k], without[k], atol=1e-12)
        assert not torch.allclose(out[k][0], without[k][0], atol=1e-6)
    loss = sum(v.square().sum() for v in net(s, torch.tensor([0.0, 0.5, 1.0])).values())
    loss.backward()
    grads = [p.grad for p in net.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_periodic_net_float32_and_scalar_time():
    torch.manual_seed(0)
    net = PeriodicNet({k: v for k, v in INFO.items() if k != "conditions"}, FIELDS, hidden=16, layers=1)
    s = {k: (v.float() if v.is_floating_point() else v) for k, v in make_state().items()}
    out = net(s, 0.25)
    assert out["frac"].dtype == torch.float32 and out["types"].dtype == torch.float32


def two_bases() -> tuple[Structure, Structure, np.ndarray]:
    """One triclinic crystal (a generic lattice: its reduced basis is unique) described in two bases related by a
    unimodular integer matrix, with the same atoms in the same order; and that matrix."""
    rng = np.random.default_rng(5)
    lat = Lattice.from_parameters(4.1, 4.6, 5.2, 78.0, 96.0, 107.0)
    u = np.array([[1, 0, 0], [1, 1, 0], [0, -1, 1]])  # new basis vectors (rows) as integer combinations
    assert round(np.linalg.det(u)) == 1
    species = ["Li", "O", "Na", "Cl", "O"]
    one = Structure(lat, species, rng.uniform(0, 1, (len(species), 3)))
    other = Structure(Lattice(u @ lat.matrix), species, one.cart_coords, coords_are_cartesian=True,
                      to_unit_cell=True)
    return one, other, u


def basis_states(structures: list[Structure]) -> dict[str, torch.Tensor]:
    """The modality's periodic states of ``structures`` (float64), INFO's elements and lattice standardisation."""
    info = {**INFO, "max_atoms": max(len(s) for s in structures)}
    batch = periodic_states(structures, info).get_batch(torch.arange(len(structures)))
    return {k: (v.double() if v.is_floating_point() else v) for k, v in batch.items()}


def test_periodic_net_is_not_invariant_to_a_lattice_basis_change():
    """Documented (periodic.py): like CSPNet the network reads lattice parameters and fractional coordinates in the
    given basis, so one crystal in two bases gets different predictions. Should it become invariant, this fails
    and the documentation (and the need for a fixed basis) must change with it."""
    one, other, u = two_bases()
    np.testing.assert_allclose(other.distance_matrix, one.distance_matrix, atol=1e-8)  # the same crystal
    jump = other.frac_coords - one.frac_coords @ np.linalg.inv(u)  # the same points: integer differences only
    np.testing.assert_allclose(jump, np.round(jump), atol=1e-9)
    s = basis_states([one, other])
    assert (s["lattice"][0] - s["lattice"][1]).abs().max() > 0.5  # different inputs for the same crystal
    out = make_net()(s, torch.tensor([0.5, 0.5], dtype=torch.float64))
    # per-atom element logits do not depend on the basis for an invariant network: here they do
    assert (out["types"][0] - out["types"][1]).abs().max() > 1e-3
    # nor would the predicted Cartesian displacement of each atom (each crystal's own cell matrix, one frame)
    disp = []
    for k, st in enumerate((one, other)):
        d = out["frac"][k] - s["frac"][k]
        disp.append((d - torch.round(d)) @ torch.tensor(st.lattice.matrix))
    assert (disp[0] - disp[1]).abs().max() > 1e-3


def test_cdvae_niggli_reduction_maps_two_bases_to_one_input():
    """The basis fixing of the CDVAE loader (:func:`cdvae_canonical`: Niggli reduction, lattice rebuilt from its
    parameters) gives both descriptions the same network input, and so the same predictions. (The default set is
    used in its prototypes' own cells; users' files are reduced too: the next test.)"""
    one, other, _ = two_bases()
    raw = basis_states([one, other])
    s = basis_states([cdvae_canonical(one), cdvae_canonical(other)])
    assert (raw["lattice"][0] - raw["lattice"][1]).abs().max() > 0.5
    assert torch.allclose(s["lattice"][0], s["lattice"][1], atol=1e-5)
    assert torus_close(s["frac"][0], s["frac"][1], atol=1e-5)
    assert torch.equal(s["types"][0], s["types"][1]) and torch.equal(s["mask"][0], s["mask"][1])
    np.testing.assert_allclose(cdvae_canonical(other).distance_matrix, one.distance_matrix, atol=1e-8)
    out = make_net()(s, torch.tensor([0.5, 0.5], dtype=torch.float64))
    for k in out:
        assert torch.allclose(out[k][0], out[k][1], atol=1e-4), k


def test_users_files_are_niggli_reduced_unless_asked_not_to(tmp_path):
    """The files dataset reduces every cell (``niggli``, default): one crystal written in two bases becomes one
    training input; with ``niggli=False`` the two bases stay two inputs."""
    from polydiff_crystals.modality import files_dataset

    one, other, _ = two_bases()
    one.to(filename=str(tmp_path / "one.vasp"), fmt="poscar")
    other.to(filename=str(tmp_path / "other.vasp"), fmt="poscar")

    def lattices(**options):
        data = files_dataset(str(tmp_path), representation="periodic", test_fraction=0.5, **options)
        return [d.get_batch(torch.arange(1))["lattice"][0].double() for d in (data.train, data.test)], data.info

    (a, b), info = lattices()
    assert torch.allclose(a, b, atol=1e-5) and info["niggli"] is True
    (a, b), info = lattices(niggli=False)
    assert (a - b).abs().max() > 0.5 and info["niggli"] is False


def test_a_cell_that_cannot_be_reduced_is_named(tmp_path, monkeypatch):
    import polydiff_crystals.data as data
    from polydiff_crystals.modality import files_dataset

    one, other, _ = two_bases()
    one.to(filename=str(tmp_path / "fine.vasp"), fmt="poscar")
    other.to(filename=str(tmp_path / "skewed.vasp"), fmt="poscar")

    def fail(structure):
        if structure.properties["name"] == "skewed":
            raise ValueError("Unable to find niggli reduction")
        return structure

    monkeypatch.setattr(data, "cdvae_canonical", fail)
    with pytest.raises(ValueError, match=r"crystal 'skewed': its cell cannot be Niggli-reduced .*"
                                         r"niggli=false"):
        files_dataset(str(tmp_path), representation="periodic")
    assert len(files_dataset(str(tmp_path), representation="periodic", test_fraction=0.5, niggli=False).train) == 1


# ---------------------------------------------------------------------------------------------
# CrystalRegressor
# ---------------------------------------------------------------------------------------------
def random_structures(n: int, seed: int = 0, atoms: tuple[int, int] = (2, 6)) -> list[Structure]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        p = np.r_[rng.uniform(3.0, 6.0, 3), rng.uniform(75, 105, 3)]
        k = int(rng.integers(atoms[0], atoms[1] + 1))
        species = list(rng.choice(ELEMENTS, k))
        s = Structure(Lattice.from_parameters(*p), species, rng.uniform(0, 1, (k, 3)))
        s.properties = {"name": f"synthetic_{i}", "vpa": s.volume / k, "n_elements": len(set(species))}
        out.append(s)
    return out


def regressor_inputs(seed: int = 0) -> dict[str, torch.Tensor]:
    batch = structures_to_batch(random_structures(3, seed), ELEMENTS)
    return {k: (v.double() if v.is_floating_point() else v) for k, v in batch.items()}


def test_regressor_invariances():
    torch.manual_seed(0)
    model = CrystalRegressor(ELEMENTS, ["vpa", "n_elements"], hidden=32, layers=2, fourier=4, rbf=8).double()
    x = regressor_inputs()
    y = model(**x)
    assert y.shape == (3, 2)
    n = x["frac"].shape[1]
    perm = torch.randperm(n)
    permuted = dict(x, frac=x["frac"][:, perm], types=x["types"][:, perm], mask=x["mask"][:, perm])
    moved = dict(x, frac=torch.remainder(x["frac"] + torch.rand(3, 1, 3, dtype=torch.float64), 1.0))
    jumped = dict(x, frac=x["frac"] + torch.randint(-2, 3, x["frac"].shape).double())
    padded = dict(x, frac=torch.cat([x["frac"], torch.rand(3, 2, 3, dtype=torch.float64)], 1),
                  types=torch.cat([x["types"], torch.ones(3, 2, dtype=torch.long)], 1),
                  mask=torch.cat([x["mask"], torch.zeros(3, 2, dtype=torch.float64)], 1))
    for other in (permuted, moved, jumped, padded):
        assert torch.allclose(model(**other), y, atol=1e-9)


def test_structures_to_batch_names_unknown_elements():
    s = random_structures(2)
    batch = structures_to_batch(s, ELEMENTS)
    assert batch["frac"].shape == (2, max(len(x) for x in s), 3) and batch["mask"].sum() == sum(len(x) for x in s)
    bad = Structure(Lattice.cubic(4.0), ["Fe"], [[0, 0, 0]], properties={"name": "iron_thing"})
    with pytest.raises(ValueError, match=r"iron_thing.*Fe"):
        structures_to_batch([*s, bad], ELEMENTS)


def test_train_regressor_learns_volume_per_atom():
    structures = random_structures(100, seed=1)
    start = time.monotonic()
    model, hist = train_regressor(structures, ["vpa"], ELEMENTS, epochs=60, lr=3e-3, batch_size=16, seed=1,
                                  val_fraction=0.2, progress=False, model_options={"hidden": 32, "layers": 2,
                                                                                   "fourier": 4, "rbf": 8})
    assert time.monotonic() - start < 30
    best = hist["val_mae"][hist["best_epoch"]][0]
    assert hist["n_val"] == 20 and best < 0.5 * hist["baseline_val_mae"][0], (best, hist["baseline_val_mae"])
    pred = predict(model, structures[:7])
    assert pred.shape == (7, 1)
    # standardised with the training split's statistics (80 of the 100), not the whole set's
    train_idx, val_idx = hist["train_idx"], hist["val_idx"]
    assert len(train_idx) == 80 and sorted(train_idx + val_idx) == list(range(100))
    vpa = np.array([s.properties["vpa"] for s in structures])
    assert abs(vpa[train_idx].mean() - vpa.mean()) > 1e-3 * vpa.mean()  # the check can tell the two apart
    np.testing.assert_allclose(model.target_mean.item(), vpa[train_idx].mean(), rtol=1e-5)
    np.testing.assert_allclose(model.target_std.item(), vpa[train_idx].std(), rtol=1e-5)


def test_train_regressor_freeze_keeps_early_layers():
    structures = random_structures(40, seed=2)
    opts = {"hidden": 16, "layers": 2, "fourier": 2, "rbf": 4}
    pre, _ = train_regressor(structures, ["vpa"], ELEMENTS, epochs=2, batch_size=8, progress=False,
                             model_options=opts)
    init = {k: v.clone() for k, v in pre.state_dict().items()}
    with pytest.warns(UserWarning, match="1 target values"):
        structures[0].properties["n_elements"] = float("nan")
        tuned, hist = train_regressor(structures, ["n_elements"], ELEMENTS, epochs=3, batch_size=8, lr=1e-2,
                                      init=init, freeze=0.5, progress=False, model_options=opts)
    assert hist["n_missing"] == 1
    frozen = set(hist["frozen"])
    assert frozen and all(k.startswith(("embed.", "layers.0.")) for k in frozen)
    assert any(k.startswith("layers.0.norm") for k in frozen)
    after = tuned.state_dict()
    for k, v in init.items():
        if k in ("target_mean", "target_std"):
            continue
        if k in frozen:
            assert torch.equal(after[k], v), k
        elif k.startswith(("layers.1.", "head.")) and k.endswith("weight"):
            assert not torch.equal(after[k], v), k
    with pytest.raises(ValueError, match="no property"):
        train_regressor(structures, ["band_gap"], ELEMENTS, epochs=1, progress=False)


def test_freeze_early_batchnorm_stays_in_eval():
    class Toy(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = torch.nn.Embedding(3, 4)
            self.layers = torch.nn.ModuleList(
                torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4)) for _ in range(4))

        def forward(self, x):
            h = self.embed(x)
            for layer in self.layers:
                h = layer(h)
            return h

    toy = Toy()
    names = freeze_early(toy, 0.5)
    assert sorted(names) == sorted(["embed.weight", *(f"layers.{i}.{j}.{w}" for i in (0, 1) for j in (0, 1)
                                                      for w in ("weight", "bias"))])
    assert freeze_early(Toy(), 0.0) == []
    toy.train()
    before = toy.layers[0][1].running_mean.clone()
    toy(torch.tensor([0, 1, 2, 1]))
    assert torch.equal(toy.layers[0][1].running_mean, before)  # frozen statistics
    assert not torch.equal(toy.layers[3][1].running_mean, torch.zeros(4))  # the rest still trains
    with pytest.raises(ValueError):
        freeze_early(toy, 1.5)


def test_a_flat_cell_becomes_undecodable_not_a_crash():
    """A generated cell whose CIF does not read back (120/120/120 degrees: zero volume) is kept
    as an Undecodable with pymatgen's reason; a sound cell passes through."""
    from polydiff_crystals.modality import Undecodable, written_or_undecodable

    flat = Structure(Lattice.from_parameters(3, 3, 3, 120, 120, 120), ["Na"], [[0, 0, 0]])
    got = written_or_undecodable(flat, "sample_0007")
    assert isinstance(got, Undecodable) and got.name == "sample_0007"
    assert got.reason.startswith("cif_does_not_read_back: ")
    ok = Structure(Lattice.cubic(4.0), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    assert not isinstance(written_or_undecodable(ok, "sample_0000"), Undecodable)
