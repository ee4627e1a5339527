"""DiffCrysGen's matrix representation (encode / scale / decode) and its 1-D U-Net denoiser."""

import json
import math

import numpy as np
import pytest
import torch
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Lattice, Structure

from polydiff.plugin import FieldSpec, GaussianProcess, Noise, diffusion_loss
from polydiff_crystals.matrix import (
    BAD_ANGLES,
    BAD_LENGTH,
    EMPTY_COLUMN,
    NAN,
    NO_ELEMENT,
    NO_SITE,
    REASONS,
    MatrixError,
    MatrixSpec,
    RowScaler,
    decode,
    decode_all,
    encode,
    encode_all,
)
from polydiff_crystals.unet import MatrixDenoiser, UNet1D

pytestmark = pytest.mark.usefixtures("one_thread")

SPEC = MatrixSpec()
SMALL = {"channels": (8, 16), "mid_channels": 8, "time_dim": 32}


def named(s: Structure, name: str) -> Structure:
    s.properties["name"] = name
    return s


def rock_salt() -> Structure:
    return named(Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]),
                 "NaCl")


def perovskite() -> Structure:
    return named(Structure(Lattice.cubic(3.905), ["Sr", "Ti", "O", "O", "O"],
                           [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]]), "SrTiO3")


def triclinic20(seed: int = 0) -> Structure:
    rng = np.random.default_rng(seed)
    species = ["Sr"] * 4 + ["Ti"] * 4 + ["O"] * 12
    frac = rng.random((20, 3))
    frac[0] = [0.0, 0.99999999, 0.5]  # a coordinate that wraps
    return named(Structure(Lattice.from_parameters(7.1, 7.9, 4.2, 83.0, 97.0, 105.0), species, frac), "tri20")


def canonical(s: Structure) -> list[tuple[int, tuple[float, ...]]]:
    """Sites as (Z, wrapped frac rounded to 1e-7), sorted: order-free exact comparison."""
    out = []
    for site in s:
        f = np.mod(site.frac_coords, 1.0)
        f[np.isclose(f, 1.0, atol=1e-7)] = 0.0
        out.append((site.specie.Z, tuple(np.round(f, 7))))
    return sorted(out)


# ----------------------------------------------------------------------------- layout and round trip
def test_spec_layout_is_diffcrysgens():
    assert SPEC.shape == (136, 3)
    assert (SPEC.lattice_row, SPEC.coord_row, SPEC.occupancy_row, SPEC.rows) == (94, 96, 116, 136)
    spec = MatrixSpec(max_elements=4, max_sites=10, properties=("band_gap",))
    assert spec.shape == (94 + 2 + 20 + 1, 4)
    assert MatrixSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    with pytest.raises(ValueError, match="unknown keys"):
        MatrixSpec.from_dict({"max_atoms": 3})


def test_encode_blocks_of_rock_salt():
    m = encode(rock_salt(), SPEC)
    assert m.shape == SPEC.shape
    assert m[10, 0] == 1 and m[16, 1] == 1 and m[:94].sum() == 2  # Na (Z 11) then Cl (Z 17): electronegativity order
    np.testing.assert_allclose(m[94], [5.64] * 3)
    np.testing.assert_allclose(m[95], [90.0] * 3)
    occ = m[116:136]
    assert occ[:4, 0].sum() == 4 and occ[4:8, 1].sum() == 4 and occ.sum() == 8  # sites grouped by element column
    assert (m[96 + 8:116] == 0).all() and (occ[8:] == 0).all()


@pytest.mark.parametrize("make", [rock_salt, perovskite, triclinic20])
def test_round_trip_through_scaling(make):
    structures = [rock_salt(), perovskite(), triclinic20(0), triclinic20(1)]
    mats, skipped = encode_all(structures, SPEC)
    assert not skipped
    scaler = RowScaler.fit(mats)
    scaled = scaler.transform(mats)
    assert scaled.min() >= -1 - 1e-12 and scaled.max() <= 1 + 1e-12
    s = make()
    back = scaler.inverse(scaler.transform(encode(s, SPEC)))
    out, reason = decode(back, SPEC)
    assert reason is None
    assert canonical(out) == canonical(s)
    np.testing.assert_allclose(out.lattice.parameters, s.lattice.parameters, atol=1e-6)
    assert StructureMatcher().fit(out, s)


def test_property_block_round_trip():
    spec = MatrixSpec(properties=("band_gap", "heat"))
    s = perovskite()
    s.properties.update(band_gap=1.75, heat=-0.3)
    out, reason = decode(encode(s, spec), spec)
    assert reason is None
    assert out.properties["band_gap"] == pytest.approx(1.75) and out.properties["heat"] == pytest.approx(-0.3)
    del s.properties["heat"]
    with pytest.raises(MatrixError, match=r"SrTiO3.*heat"):
        encode(s, spec)


def test_structures_that_do_not_fit_raise_and_are_skipped():
    big = perovskite()
    big.make_supercell([2, 2, 1])
    big.append("Sr", [0.1, 0.2, 0.3])  # 21 sites
    big.properties["name"] = "big21"
    with pytest.raises(MatrixError, match="big21: 21 sites > max_sites 20"):
        encode(big, SPEC)
    quat = perovskite()
    quat.replace(1, "Zr")
    quat.append("Ba", [0.25, 0.25, 0.25])
    quat.properties["name"] = "quaternary"
    with pytest.raises(MatrixError, match="quaternary: 4 elements"):
        encode(quat, SPEC)
    heavy = named(Structure(Lattice.cubic(4.0), ["Am"], [[0, 0, 0]]), "americium")
    with pytest.raises(MatrixError, match=r"americium.*Z=95"):
        encode(heavy, SPEC)
    with pytest.warns(UserWarning, match="skipped 3"):
        mats, skipped = encode_all([big, rock_salt(), quat, heavy], SPEC)
    assert mats.shape == (1, *SPEC.shape)
    assert [name for name, _ in skipped] == ["big21", "quaternary", "americium"]


# ----------------------------------------------------------------------------- decoding rules and reasons
def test_decoding_follows_diffcrysgens_thresholds():
    m = encode(rock_salt(), SPEC)
    m[10, 0], m[25, 0] = 0.6, 0.9  # column 0: Fe (0.9) beats Na (0.6), both above 0.5
    m[116, :] = [0.49, 0.3, 0.0]  # first site below threshold in every column: dropped
    m[117, :] = [0.55, 0.7, 0.0]  # second site: argmax column 1 (Cl)
    out, reason = decode(m, SPEC)
    assert reason is None
    assert len(out) == 7
    assert out.composition.as_dict() == {"Fe": 2.0, "Cl": 5.0}
    # a site pointing at an empty element column is dropped (DiffCrysGen's Z = 0)
    m[118, :] = [0, 0, 0.9]
    assert len(decode(m, SPEC)[0]) == 6


def bad_matrices() -> dict[str, np.ndarray]:
    good = encode(rock_salt(), SPEC)
    cases = {}
    m = good.copy()
    m[100, 1] = np.nan
    cases[NAN] = m
    m = good.copy()
    m[:94] = 0.4
    cases[NO_ELEMENT] = m
    m = good.copy()
    m[94, 2] = 0.0
    cases[BAD_LENGTH] = m
    m = good.copy()
    m[95] = [30.0, 30.0, 150.0]  # gamma > alpha + beta: no such cell
    cases[BAD_ANGLES] = m
    m = good.copy()
    m[116:136] = 0.45
    cases[NO_SITE] = m
    m = good.copy()
    m[116:136] = [0.0, 0.0, 1.0]  # NaCl has two elements: column 2 is empty
    cases[EMPTY_COLUMN] = m
    return cases


def test_every_reason_is_reachable():
    cases = bad_matrices()
    assert set(cases) == set(REASONS)
    for expected, m in cases.items():
        s, reason = decode(m, SPEC)
        assert s is None and reason == expected
    with pytest.warns(UserWarning, match="6 of 7 matrices undecodable"):
        structures, reasons, counts = decode_all([*cases.values(), encode(perovskite(), SPEC)], SPEC)
    assert structures[-1] is not None and reasons[-1] is None
    assert counts == {r: 1 for r in REASONS}
    with pytest.raises(ValueError, match="shape"):
        decode(np.zeros((10, 3)), SPEC)


# ----------------------------------------------------------------------------- scaler
def test_row_scaler_constant_rows_json_and_torch():
    mats = np.stack([encode(rock_salt(), SPEC), encode(perovskite(), SPEC)])
    scaler = RowScaler.fit(mats)
    scaled = scaler.transform(mats)
    assert np.isfinite(scaled).all()
    assert (scaled[:, 0] == -1).all()  # hydrogen never occurs: a constant row
    lattice = scaled[:, 94]
    assert lattice.min() == -1 and lattice.max() == 1
    again = RowScaler.from_dict(json.loads(json.dumps(scaler.to_dict())))
    np.testing.assert_array_equal(again.transform(mats), scaled)
    t = torch.as_tensor(scaled, dtype=torch.float32)
    back = again.inverse(t)
    assert isinstance(back, torch.Tensor) and back.dtype == torch.float32
    np.testing.assert_allclose(back.numpy(), mats, atol=1e-4)
    with pytest.raises(ValueError, match="fitted on 136 rows"):
        scaler.transform(np.zeros((2, 10, 3)))
    with pytest.raises(ValueError, match="high < low"):
        RowScaler([1.0], [0.0])


# ----------------------------------------------------------------------------- network
def edm_fields() -> dict[str, FieldSpec]:
    return {"x": FieldSpec(GaussianProcess("edm"), prediction="x0")}


def test_unet_has_diffcrysgens_size():
    # diffcrysgen 0.1.1: sum of Model(UNet(in_c=3, out_c=3, time_emb_dim=256)).parameters() ("1.322 million")
    assert sum(p.numel() for p in UNet1D().parameters()) == 1_321_604
    net = MatrixDenoiser({"matrix": SPEC.to_dict()}, edm_fields())
    assert sum(p.numel() for p in net.parameters()) == 1_321_604


def test_denoiser_shapes_and_backward():
    spec = MatrixSpec(properties=("band_gap",))  # 137 rows: padded to 144 inside
    net = MatrixDenoiser({"matrix": spec.to_dict()}, edm_fields(), **SMALL)
    x = torch.randn(3, *spec.shape, requires_grad=True)
    out = net({"x": x}, torch.tensor([0.1, 1.0, 10.0]))
    assert set(out) == {"x"} and out["x"].shape == x.shape and out["x"].dtype == torch.float32
    out["x"].square().mean().backward()
    assert x.grad is not None and all(p.grad is not None for p in net.unet.parameters() if p.requires_grad)
    with pytest.raises(ValueError, match="expected"):
        net({"x": torch.zeros(1, 136, 3)}, torch.tensor([1.0]))
    with pytest.raises(KeyError, match="matrix"):
        MatrixDenoiser({}, edm_fields())


def test_skip_connection_at_small_sigma_and_samples_are_independent():
    net = MatrixDenoiser({"matrix": SPEC.to_dict()}, edm_fields()).eval()
    x = torch.rand(2, *SPEC.shape) * 2 - 1
    with torch.no_grad():
        near = net({"x": x}, torch.tensor(1e-4))["x"]
        far = net({"x": x}, torch.tensor(5.0))["x"]
        alone = net({"x": x[:1]}, torch.tensor(5.0))["x"]
    assert (near - x).abs().max() < 1e-3
    assert (far - x).abs().max() > 1e-2
    torch.testing.assert_close(alone, far[:1], atol=1e-5, rtol=1e-5)  # no attention across the batch


def test_one_loss_step_with_the_core():
    fields = edm_fields()
    net = MatrixDenoiser({"matrix": SPEC.to_dict()}, fields, **SMALL)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    batch = {"x": torch.rand(4, *SPEC.shape) * 2 - 1}
    before = [p.detach().clone() for p in net.parameters()]
    loss, logs = diffusion_loss(net, fields, batch, Noise(4, seed=0), weighting="edm", time_density="lognormal")
    assert loss.dim() == 0 and math.isfinite(float(loss.detach())) and "x" in logs
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert any(not torch.equal(a, p) for a, p in zip(before, net.parameters(), strict=True))


def test_null_conditions_select_the_null_embedding():
    conditions = {"spacegroup": {"kind": "class", "num_classes": 231},
                  "band_gap": {"kind": "scalar", "low": 0, "high": 5, "basis": 16}}
    net = MatrixDenoiser({"matrix": SPEC.to_dict(), "conditions": conditions}, edm_fields(), **SMALL).eval()
    with torch.no_grad():
        for p in net.unet.cond.null.values():
            p.normal_()
    x = torch.randn(2, *SPEC.shape)
    t = torch.tensor(1.0)
    with torch.no_grad():
        missing = net({"x": x}, t)["x"]
        null = net({"x": x, "spacegroup": torch.tensor([-1, -1]), "band_gap": torch.tensor([[math.nan]] * 2)},
                   t)["x"]
        given = net({"x": x, "spacegroup": torch.tensor([225, 221]), "band_gap": torch.tensor([[1.0], [2.0]])}, t)["x"]
        mixed = net({"x": x, "spacegroup": torch.tensor([225, -1]), "band_gap": torch.tensor([[1.0], [math.nan]])},
                    t)["x"]
    torch.testing.assert_close(null, missing)
    assert (given - missing).abs().max() > 1e-4
    torch.testing.assert_close(mixed[0], given[0])
    torch.testing.assert_close(mixed[1], missing[1])
