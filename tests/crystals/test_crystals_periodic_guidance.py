"""Gradient guidance of the periodic representation: the noise-aware PeriodicRegressor's symmetries
and torus-consistent gradients, its training on a tiny set, and guidance moving the sampled
property of a tiny trained model towards the target (both directions, against scale 0), through
the coordinates and lattice and, separately, through the element types."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pymatgen.core import Lattice, Structure

from polydiff.plugin import Control, Noise, SampleSettings, controlled_sample, diffusion_loss
from polydiff_crystals.guidance import (
    PeriodicRegressor,
    load_guide,
    noisy_periodic,
    periodic_guidance,
    save_guide,
    train_periodic_regressor,
    type_guidance,
)
from polydiff_crystals.modality import CrystalsModality, make_bundle
from polydiff_crystals.periodic import denormalise, min_image

pytestmark = pytest.mark.usefixtures("one_thread")


def _pairs(n: int, seed: int) -> list[Structure]:
    """Cubic cells (a in 4..6 A) with two atoms at a random origin, the second shifted by d in
    0.15..0.5 along x (so pairs straddle the cell boundary); property = their distance a * d."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        a, d, u = rng.uniform(4.0, 6.0), rng.uniform(0.15, 0.5), rng.uniform(0, 1, 3)
        s = Structure(Lattice.cubic(a), ["Na", "Cl"], [u, np.mod(u + np.array([d, 0.0, 0.0]), 1.0)])
        s.properties.update(name=f"p{i}", band_gap=float(a * d))
        out.append(s)
    return out


@pytest.fixture(scope="module")
def tiny() -> dict:
    data = make_bundle(_pairs(96, 0), _pairs(32, 1), {"dataset": "test"}, representation="periodic",
                       conditions=["band_gap"])
    fields = CrystalsModality().fields(data.info, frac_rate=0.0)  # the linear path: guidance tests sample it
    return {"data": data, "fields": fields}


def _distance(state: dict, info: dict) -> torch.Tensor:
    """The minimum-image distance of atoms 0 and 1 of each (two-atom) crystal."""
    params = denormalise(state["lattice"].double(), info)
    return min_image(state["frac"][:, 1].double() - state["frac"][:, 0].double(), params)[1]


def test_regressor_gradient_lives_on_the_torus(tiny):
    """Invariant to permutations, global translations and integer shifts of single atoms; padded
    atoms neither change the prediction nor get a gradient; the coordinate gradient is the same
    at a point and its integer-shifted copy and sums to zero over the atoms."""
    torch.manual_seed(0)
    reg = PeriodicRegressor(tiny["data"].info, hidden=16, layers=2).double()
    g = torch.Generator().manual_seed(3)
    b, n = 4, 5
    types = torch.randint(0, 3, (b, n), generator=g)  # 2 elements and the mask token
    mask = torch.ones(b, n, dtype=torch.float64)
    mask[:, 3:] = 0
    state = {"frac": torch.rand(b, n, 3, generator=g, dtype=torch.float64),
             "lattice": 0.5 * torch.randn(b, 6, generator=g, dtype=torch.float64), "types": types, "mask": mask}
    t = torch.full((b,), 0.3, dtype=torch.float64)

    def value_and_grad(st: dict) -> tuple[torch.Tensor, torch.Tensor]:
        f = st["frac"].clone().requires_grad_(True)
        y = reg({**st, "frac": f}, t)
        return y.detach(), torch.autograd.grad(y.sum(), f)[0]

    y0, g0 = value_and_grad(state)
    shift = torch.zeros(b, n, 3, dtype=torch.float64)
    shift[:, 1, 0], shift[:, 2] = 1.0, torch.tensor([-2.0, 1.0, 3.0], dtype=torch.float64)
    y1, g1 = value_and_grad({**state, "frac": state["frac"] + shift})
    torch.testing.assert_close(y1, y0)
    torch.testing.assert_close(g1, g0)
    move = torch.tensor([0.37, 0.61, 0.9], dtype=torch.float64)
    y2, g2 = value_and_grad({**state, "frac": torch.remainder(state["frac"] + move, 1)})
    torch.testing.assert_close(y2, y0)
    torch.testing.assert_close(g2, g0)
    torch.testing.assert_close(g0[:, :3].sum(1), torch.zeros(b, 3, dtype=torch.float64), atol=1e-9, rtol=0)
    assert float(g0[:, :3].abs().max()) > 1e-6  # the gradient is not trivially zero
    assert float(g0[:, 3:].abs().max()) == 0.0  # padded atoms
    padded = {**state, "frac": torch.where(mask[..., None] > 0, state["frac"], torch.rand(b, n, 3, generator=g,
                                                                                         dtype=torch.float64)),
              "types": torch.where(mask > 0, types, 1)}
    torch.testing.assert_close(value_and_grad(padded)[0], y0)
    perm = torch.tensor([2, 0, 1, 3, 4])
    permuted = {k: (v[:, perm] if k != "lattice" else v) for k, v in state.items()}
    y3, g3 = value_and_grad(permuted)
    torch.testing.assert_close(y3, y0)
    torch.testing.assert_close(g3, g0[:, perm])


def test_noisy_periodic_follows_the_fields_processes(tiny):
    data, fields = tiny["data"], tiny["fields"]
    clean = data.train.get_batch(torch.arange(8))
    g = torch.Generator().manual_seed(0)
    zero = noisy_periodic(fields, clean, torch.zeros(8, dtype=torch.float64), g)
    torch.testing.assert_close(zero["frac"], clean["frac"])
    assert torch.equal(zero["types"], clean["types"])
    full = noisy_periodic(fields, clean, torch.ones(8, dtype=torch.float64), g)
    assert bool((full["types"] == len(data.info["elements"])).all())  # all masked at t = 1
    assert not torch.allclose(full["lattice"], clean["lattice"])
    assert bool(((full["frac"] >= 0) & (full["frac"] < 1)).all())


def test_periodic_regressor_learns_and_guidance_steers_a_trained_model(tiny, tmp_path):
    """The noise-aware regressor of the pair distance beats the mean at low noise; a tiny trained
    periodic model, guided through frac and lattice towards a long / a short distance, samples
    longer / shorter distances than without guidance (measured on the samples themselves)."""
    data, fields = tiny["data"], tiny["fields"]
    reg, report = train_periodic_regressor(data, "band_gap", fields, steps=250, batch_size=32, seed=0, hidden=32,
                                           layers=2, rbf=16, fourier=4)
    assert report["test_mae_t_0"] < 0.5 * report["baseline_mae"], report
    assert report["test_mae_t_0.9"] > report["test_mae_t_0"], report
    path = save_guide(reg, tmp_path / "guide.pt", report)
    again, rep2 = load_guide(path)
    clean = data.test.get_batch(torch.arange(4))
    with torch.no_grad():
        torch.testing.assert_close(again(clean, torch.zeros(4)), reg(clean, torch.zeros(4)))
    assert rep2 == report

    info = {**data.info, "conditions": {}}  # the generator itself is unconditional
    mod = CrystalsModality()
    torch.manual_seed(0)
    net = mod.network("periodic", info, fields, hidden=32, layers=2, rbf=16, fourier=4)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(0)
    keep = ("frac", "lattice", "types", "mask")
    for step in range(150):
        idx = torch.randint(0, len(data.train), (32,), generator=g)
        batch = {k: v for k, v in data.train.get_batch(idx).items() if k in keep}
        loss, _ = diffusion_loss(net, fields, batch, Noise(32, generator=torch.Generator().manual_seed(step)))
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    spec = mod.prior_state(24, info)
    settings = SampleSettings(sampler="euler", steps=20)

    def run(control: Control | None) -> torch.Tensor:
        out = controlled_sample(net, fields, spec, settings, control, seed=torch.arange(24), device=torch.device("cpu"))
        assert all(bool(torch.isfinite(out[k]).all()) for k in ("frac", "lattice"))
        return _distance(out, info)

    with torch.no_grad():
        plain = run(None)
    far = run(Control(guidance=periodic_guidance(reg, 3.0, fields, scale=2.0)))
    near = run(Control(guidance=periodic_guidance(reg, 0.7, fields, scale=2.0)))
    assert float(far.mean()) > float(plain.mean()) + 0.1, (far.mean(), plain.mean())
    assert float(near.mean()) < float(plain.mean()) - 0.1, (near.mean(), plain.mean())
    # coordinates alone (lattice unguided) also move the distance the right way, across the torus
    frac_only = run(Control(guidance=periodic_guidance(reg, 3.0, fields, scale=2.0, keys=["frac"])))
    assert float(frac_only.mean()) > float(plain.mean()), (frac_only.mean(), plain.mean())


def test_periodic_guidance_rejects_other_fields(tiny):
    reg = PeriodicRegressor(tiny["data"].info, hidden=8, layers=1)
    with pytest.raises(ValueError, match="frac"):
        periodic_guidance(reg, 1.0, tiny["fields"], keys=["mask"])


def test_sampler_times_and_damped_scales():
    """Training noise levels follow the default sampler's grid (EDM: Karras rho 7 between 0.002 and
    80, half of the visits above sigma ~2.5; flows: uniform t); damped scales vanish at the noise end
    and at the data end, where the plain rule's push diverges / vanishes."""
    from polydiff.plugin import FlatTorus, GaussianProcess, GeodesicFlow
    from polydiff_crystals.guidance import _gaussian_scale, _torus_scale, sampler_times

    g = torch.Generator().manual_seed(0)
    edm = GaussianProcess("edm")
    s = sampler_times(edm.schedule, 20000, g)
    assert float(s.min()) >= 0.002 - 1e-9 and float(s.max()) <= 80 + 1e-9
    assert 1.5 < float(s.median()) < 4.0
    lin = GaussianProcess("linear")
    t = sampler_times(lin.schedule, 20000, g)
    assert float(t.min()) >= 0 and float(t.max()) <= 1 and abs(float(t.mean()) - 0.5) < 0.02
    ends = torch.tensor([1.0, 0.5, 0.0], dtype=torch.float64)
    w = _gaussian_scale(2.0, lin, 1.0, True)(ends)
    torch.testing.assert_close(w, torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64))
    wf = _torus_scale(2.0, GeodesicFlow(FlatTorus()), True)(ends)
    torch.testing.assert_close(wf, torch.tensor([0.0, 2.0 / 12 * 0.25 * 0.5 / 0.5, 0.0], dtype=torch.float64))
    assert _gaussian_scale(2.0, lin, 1.0, False) == 2.0


def _mixed(n: int, seed: int) -> list[Structure]:
    """Four-atom cubic cells of Na / Cl drawn at random (a 4.5..5.5 A, random positions at least
    1.5 A apart not enforced); property = the number of Cl atoms."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        species = [str(e) for e in rng.choice(["Na", "Cl"], 4)]
        s = Structure(Lattice.cubic(rng.uniform(4.5, 5.5)), species, rng.uniform(0, 1, (4, 3)))
        s.properties.update(name=f"m{i}", band_gap=float(species.count("Cl")))
        out.append(s)
    return out


def _train_tiny(data, fields, info, steps: int = 120):
    torch.manual_seed(0)
    net = CrystalsModality().network("periodic", info, fields, hidden=32, layers=2, rbf=16, fourier=4)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(0)
    for step in range(steps):
        idx = torch.randint(0, len(data.train), (32,), generator=g)
        batch = {k: v for k, v in data.train.get_batch(idx).items() if k in ("frac", "lattice", "types", "mask")}
        loss, _ = diffusion_loss(net, fields, batch, Noise(32, generator=torch.Generator().manual_seed(step)))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


def test_type_guidance_tilts_the_composition():
    """Masked types: a regressor of the Cl count learns it, and the first-order logit tilt makes a
    tiny trained model sample more Cl for a high target and less for a low one than unguided; the
    tilt touches masked atoms only."""
    data = make_bundle(_mixed(96, 0), _mixed(32, 1), {"dataset": "test"}, representation="periodic",
                       conditions=["band_gap"])
    fields = CrystalsModality().fields(data.info)
    reg, report = train_periodic_regressor(data, "band_gap", fields, steps=200, batch_size=32, seed=0, hidden=32,
                                           layers=2, rbf=16, fourier=4)
    assert report["test_mae_t_0"] < 0.5 * report["baseline_mae"], report
    cl = data.info["elements"].index("Cl")
    info = {**data.info, "conditions": {}}
    net = _train_tiny(data, fields, info)

    # only masked atoms' logits move
    st = {k: v for k, v in data.test.get_batch(torch.arange(4)).items() if k in ("frac", "lattice", "types", "mask")}
    st["types"] = st["types"].clone()
    st["types"][:, :2] = len(data.info["elements"])
    t = torch.full((4,), 0.5)
    with torch.no_grad():
        plain_logits = net(st, t)["types"]
        tilted = type_guidance(reg, 4.0, fields, scale=2.0)(net)(st, t)["types"]
    assert float((tilted - plain_logits)[:, 2:].abs().max()) == 0.0
    assert bool((tilted[:, :2, cl] > plain_logits[:, :2, cl]).all())

    spec = CrystalsModality().prior_state(32, info)
    settings = SampleSettings(sampler="euler", steps=20)

    def cl_share(control: Control | None) -> float:
        out = controlled_sample(net, fields, spec, settings, control, seed=torch.arange(32), device=torch.device("cpu"))
        present = out["mask"] > 0
        return float((out["types"][present] == cl).double().mean())

    with torch.no_grad():
        plain = cl_share(None)
    more = cl_share(Control(guidance=periodic_guidance(reg, 4.0, fields, scale=1.0, keys=["types"])))
    fewer = cl_share(Control(guidance=periodic_guidance(reg, 0.0, fields, scale=1.0, keys=["types"])))
    assert more > plain + 0.1 and fewer < plain - 0.1, (fewer, plain, more)


class _Payload:
    """A class a pickle can reference: what a hostile 'regressor' file would carry."""


@pytest.mark.parametrize("loader", ["guide", "regressor"])
def test_regressor_files_open_without_unpickling_code(tmp_path, loader):
    """Both kinds of crystals regressor file are read with ``torch.load(weights_only=True)``: a
    file holding a Python object is refused with a one-line error naming it, and so is a file
    that is not a regressor at all (nothing is executed, nothing falls back)."""
    from polydiff_crystals.cli import load_regressor

    load = load_guide if loader == "guide" else load_regressor
    hostile = tmp_path / "hostile.pt"
    torch.save({"kind": "matrix", "config": _Payload()}, hostile)
    with pytest.raises(ValueError, match=r"hostile.pt: not a .*saved by polydiff-crystals"):
        load(hostile)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(ValueError, match=r"other.pt: not a .*saved by polydiff-crystals"):
        load(other)
    junk = tmp_path / "junk.pt"
    junk.write_text("not a torch file")
    with pytest.raises(ValueError, match=r"junk.pt: not a"):
        load(junk)
