"""The crystals modality end to end: the core's contract for both representations, states and
their decoding, the seeded Wyckoff augmentation, conditions, transfer-learning freezing, files
written by samples and by other tools, and a tiny trained model through the Python API."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from pymatgen.core import Lattice, Structure

from polydiff.testing import check_modality
from polydiff_crystals import CrystalsModality, Undecodable
from polydiff_crystals.modality import default_dataset, make_bundle, periodic_to_structures

pytestmark = pytest.mark.usefixtures("one_thread")

DATA = {"n": 40}


def _rocksalt(a: float = 5.64, name: str = "NaCl") -> Structure:
    s = Structure.from_spacegroup("Fm-3m", Lattice.cubic(a), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    s.properties.update(name=name, band_gap=5.0, formation_energy=-2.1)
    return s


def _perovskite(a: float = 3.9, name: str = "SrTiO3") -> Structure:
    s = Structure(Lattice.cubic(a), ["Sr", "Ti", "O", "O", "O"],
                  [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    s.properties.update(name=name, band_gap=3.2, formation_energy=-3.5)
    return s


def test_contract_matrix(tmp_path):
    check_modality(CrystalsModality(), tmp_path, data={**DATA, "representation": "matrix"},
                   model={"name": "unet", "channels": [8, 16, 16], "time_dim": 32}, n=3, steps=3, sampler="edm",
                   sample_options={"s_churn": 1.0})


def test_contract_periodic(tmp_path):
    check_modality(CrystalsModality(), tmp_path, data={**DATA, "representation": "periodic"},
                   model={"name": "periodic", "hidden": 16, "layers": 1}, n=3, steps=3, sampler="euler")


def test_periodic_states_round_trip_to_structures():
    """Periodic states decode to the same crystals (lattice de-standardised, elements, sites)."""
    crystals = [_rocksalt(), _perovskite(), _rocksalt(5.2, "NaCl_small")]
    data = make_bundle(crystals, crystals[:1], {"dataset": "test"}, representation="periodic")
    batch = data.train.get_batch(torch.arange(3), cut=False)
    back = periodic_to_structures(batch, data.info)
    for a, b in zip(crystals, back, strict=True):
        assert np.allclose(a.lattice.abc, b.lattice.abc, atol=1e-4)
        assert np.allclose(a.lattice.angles, b.lattice.angles, atol=1e-3)
        assert [sp.symbol for sp in a.species] == [sp.symbol for sp in b.species]
        assert np.allclose(np.mod(a.frac_coords, 1), b.frac_coords, atol=1e-6)
    cut = data.train.get_batch(torch.tensor([0]))  # rock salt: 8 sites of the conventional cell
    assert cut["frac"].shape[1] == len(crystals[0])


def test_matrix_decoding_keeps_reasons_and_files_report_them(tmp_path):
    """A matrix that is no crystal becomes an Undecodable with its reason; writing samples puts it
    in undecodable.csv beside the CIFs, and metrics count it as invalid."""
    mod = CrystalsModality()
    data = make_bundle([_rocksalt(), _perovskite()] * 3, [_perovskite()], {"dataset": "test"})
    x = data.train.get_batch(torch.arange(2))["x"].clone()
    x[1] = -1.0  # every row at its minimum: no element above the threshold
    objs = mod.to_native({"x": x}, data.info)
    assert isinstance(objs[0], Structure) and objs[0].composition.reduced_formula == "NaCl"
    assert isinstance(objs[1], Undecodable) and objs[1].reason
    paths = mod.write(objs, tmp_path)
    names = {p.name for p in paths}
    assert "undecodable.csv" in names and "summary.csv" in names
    assert objs[1].reason.split(",")[0] in (tmp_path / "undecodable.csv").read_text()
    metrics = mod.evaluate(objs, [_rocksalt()], {"cutoffs": "mp20"})
    assert metrics["valid"] <= 0.5


def test_wyckoff_variants_are_picked_by_the_seeded_augmentation():
    """wyckoff: true stores each crystal's equivalent descriptions; the augmentation picks one per
    sample from the step's generator (same seed, same pick) and every pick is a stored variant."""
    base = Structure.from_spacegroup("P4/mmm", Lattice.tetragonal(3.0, 4.0), ["Ti", "O", "O"],
                                     [[0, 0, 0], [0.5, 0.5, 0], [0, 0, 0.5]])
    base.properties["name"] = "tet"
    data = make_bundle([base, _perovskite()], [_perovskite()], {"dataset": "test"}, wyckoff=True,
                       representation="periodic")
    assert data.augment is not None
    batch = data.train.get_batch(torch.arange(2))
    assert int(batch["n_variants"].max()) >= 2
    a = data.augment(dict(batch), torch.Generator().manual_seed(3))
    b = data.augment(dict(batch), torch.Generator().manual_seed(3))
    assert torch.equal(a["frac"], b["frac"]) and "frac_variants" not in a and "n_variants" not in a
    picks = set()
    for seed in range(12):
        out = data.augment(dict(batch), torch.Generator().manual_seed(seed))
        k = [i for i in range(int(batch["n_variants"][0]))
             if torch.equal(out["frac"][0], batch["frac_variants"][0, i])]
        assert k, "the augmentation returned a description that is not one of the crystal's variants"
        picks.add(k[0])
    assert len(picks) >= 2


def test_conditions_prior_state_and_errors():
    mod = CrystalsModality()
    data = make_bundle([_rocksalt(), _perovskite()] * 2, [_perovskite()], {"dataset": "test"},
                       conditions=["spacegroup", "band_gap"])
    spec = data.info["conditions"]
    assert spec["spacegroup"]["kind"] == "class" and spec["band_gap"]["kind"] == "scalar"
    assert data.train.get_batch(torch.arange(2))["spacegroup"].tolist() == [225, 221]
    prior = mod.prior_state(4, data.info, condition={"spacegroup": 221, "band_gap": 4.0})
    assert prior["spacegroup"].tolist() == [221] * 4 and torch.allclose(prior["band_gap"], torch.full((4,), 4.0))
    assert prior["x"] == (4, 94 + 2 + 2 * 20, 3)
    free = mod.prior_state(2, data.info)
    assert free["spacegroup"].tolist() == [-1, -1] and torch.isnan(free["band_gap"]).all()
    with pytest.raises(ValueError, match="unknown condition 'heat'"):
        mod.prior_state(2, data.info, condition={"heat": 1.0})
    for bad in (0, 231, "abc", 2.5):  # space groups are 1..230 (231 crashed the embedding, 0 sampled)
        with pytest.raises(ValueError, match=r"condition 'spacegroup': expected a whole number in 1\.\.230"):
            mod.prior_state(2, data.info, condition={"spacegroup": bad})
    for bad in ("high", float("nan"), float("inf"), [1.0, 2.0, 3.0]):  # leave a condition out for none
        with pytest.raises(ValueError, match="condition 'band_gap': expected a finite number"):
            mod.prior_state(2, data.info, condition={"band_gap": bad})
    # one value per sample, as generate's docstring says; numpy numbers as a DataFrame gives them
    per_sample = mod.prior_state(2, data.info, condition={"spacegroup": [np.int64(221), 225],
                                                          "band_gap": np.array([3.5, np.float32(4.5)])})
    assert per_sample["spacegroup"].tolist() == [221, 225] and per_sample["band_gap"].tolist() == [3.5, 4.5]
    none = mod.prior_state(2, data.info, condition={"spacegroup": None, "band_gap": None})
    assert none["spacegroup"].tolist() == [-1, -1] and torch.isnan(none["band_gap"]).all()
    with pytest.warns(UserWarning, match=r"condition 'band_gap': 1e\+09 lies outside the training data's range"):
        mod.prior_state(2, data.info, condition={"band_gap": 1e9})
    periodic = make_bundle([_rocksalt(), _perovskite()] * 2, [_perovskite()], {"dataset": "test"},
                           representation="periodic")
    assert mod.prior_state(2, periodic.info, condition={"atoms": 3})["mask"].sum(1).tolist() == [3, 3]
    for bad_count in ("abc", 2.5, 0, [1, 2, 3]):
        with pytest.raises(ValueError, match="condition 'atoms': expected a whole number"):
            mod.prior_state(2, periodic.info, condition={"atoms": bad_count})
    with pytest.warns(UserWarning, match="condition 'atoms': 500 is beyond the largest size in the training data"):
        mod.prior_state(1, periodic.info, condition={"atoms": 500})
    bad = _rocksalt()
    del bad.properties["band_gap"]
    with pytest.raises(ValueError, match=r"NaCl.*band_gap"):
        make_bundle([bad], [bad], {"dataset": "test"}, conditions=["band_gap"])
    with pytest.raises(ValueError, match=r"network 'periodic' needs data\.representation: periodic"):
        mod.network("periodic", data.info, mod.fields(data.info))


def test_transfer_freeze_stops_the_encoder_and_embeddings():
    mod = CrystalsModality()
    data = make_bundle([_rocksalt(), _perovskite()] * 2, [_perovskite()], {"dataset": "test"},
                       conditions=["spacegroup"])
    fields = mod.fields(data.info)
    net = mod.network("unet", data.info, fields, freeze=0.5, channels=[8, 16, 16], time_dim=32)
    frozen = {n for n, p in net.named_parameters() if not p.requires_grad}
    assert any(n.startswith("unet.enc.") for n in frozen) and any("cond.embed.spacegroup" in n for n in frozen)
    assert not any(n.startswith("unet.dec.") or n.startswith("unet.out") for n in frozen)


def test_evaluate_a_folder_of_users_cifs(tmp_path, capsys):
    """``polydiff evaluate FOLDER --modality crystals --reference FOLDER`` on CIFs written by
    pymatgen directly (not by polydiff), with a bad CIF reported and skipped."""
    from polydiff.cli import main

    gen, ref = tmp_path / "gen", tmp_path / "ref"
    gen.mkdir()
    ref.mkdir()
    for i, s in enumerate([_rocksalt(), _perovskite(), _rocksalt(5.0)]):
        s.to(filename=str(gen / f"g{i}.cif"))
    for i, s in enumerate([_rocksalt(5.6), _perovskite(3.95)]):
        s.to(filename=str(ref / f"r{i}.cif"))
    (gen / "broken.cif").write_text("data_x\n_cell_length_a oops\n")
    with pytest.warns(UserWarning, match="broken.cif"):
        rc = main(["evaluate", str(gen), "--modality", "crystals", "--reference", str(ref)])
    assert rc in (0, None)
    out = capsys.readouterr().out
    for key in ("struct_valid", "comp_valid", "cov_recall", "wdist_density"):
        assert key in out


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    import polydiff

    cfg = {"modality": "crystals", "data": {"name": "default", "n": 60, "representation": "periodic"},
           "model": {"name": "periodic", "hidden": 16, "layers": 1},
           "train": {"max_steps": 6, "batch_size": 8, "checkpoint_every": 6, "progress": False, "threads": 1,
                     "accelerator": "cpu", "devices": 1, "log_every": 3},
           "sample": {"num": 4, "sampler": "euler", "steps": 4}}
    return polydiff.train(cfg, tmp_path_factory.mktemp("run") / "run", verbose=False)


def test_trained_model_generates_structures_files_and_a_plot(trained, tmp_path):
    import polydiff

    gen = polydiff.load(trained.checkpoint)
    objs = gen.generate(4, seed=0, progress=False)
    assert len(objs) == 4 and all(isinstance(o, Structure | Undecodable) for o in objs)
    again = gen.generate(4, seed=0, progress=False)
    assert [str(a) for a in objs] == [str(b) for b in again]
    gen.save(objs, tmp_path / "samples", plot=True)
    assert (tmp_path / "samples" / "summary.csv").is_file()
    assert list((tmp_path / "samples").glob("*.png"))
    # a folder `polydiff sample` writes (structures beside its polydiff.json) is read and evaluated as is
    from polydiff.generator import evaluate_samples

    gen.generate_to(tmp_path / "written", 4, seed=0, progress=False)
    assert (tmp_path / "written" / "polydiff.json").is_file()
    assert len(gen.modality.read(tmp_path / "written")) == 4
    result = evaluate_samples(tmp_path / "written")
    assert result.num == 4 and result.metrics["n"] == 4 and "struct_valid" in result.metrics


def test_generator_refuses_objects_that_are_not_crystals(trained, tmp_path):
    import polydiff

    gen = polydiff.load(trained.checkpoint)
    assert gen.modality.native_types(gen.info) == (Structure, Undecodable)
    with pytest.raises(TypeError, match=r"objects\[1\]: expected a Structure or Undecodable .*got str"):
        gen.evaluate([_rocksalt(), "NaCl"])
    with pytest.raises(TypeError, match=r"expected a list of Structure or Undecodable .*got Structure"):
        gen.save(_rocksalt(), tmp_path / "one")
    with pytest.raises(ValueError, match="an empty list"):
        gen.plot([], tmp_path / "none.png")


def test_default_dataset_is_offline_and_split():
    data = default_dataset(n=50, representation="matrix")
    assert len(data.train) + len(data.test) <= 50 and len(data.test) >= 1
    assert data.info["dataset"] == "default" and data.info["scaler"]


def test_cli_wyckoff_and_regressor_with_transfer(tmp_path, capsys):
    """``polydiff crystals wyckoff`` lists the equivalent letterings; ``polydiff crystals
    regressor`` trains on a CSV of CIFs, saves a file that loads back, and fine-tunes from it
    with frozen early layers."""
    from polydiff.cli import main
    from polydiff_crystals.cli import load_regressor

    _rocksalt().to(filename=str(tmp_path / "nacl.cif"))
    assert main(["crystals", "wyckoff", str(tmp_path / "nacl.cif")]) in (0, None)
    out = capsys.readouterr().out
    assert "space group 225" in out and "aaaabbbb" in out and "bbbbaaaa" in out
    rows = ["material_id,cif,band_gap,formation_energy"]
    for i, a in enumerate(np.linspace(3.7, 4.2, 12)):
        s = _perovskite(a) if i % 2 else _rocksalt(a + 1.5)
        cif = str(s.to(fmt="cif")).replace('"', "'")
        rows.append(f'c{i},"{cif}",{a - 3.0:.3f},{-a:.3f}')
    csv = tmp_path / "set.csv"
    csv.write_text("\n".join(rows) + "\n")
    first, second = tmp_path / "form.pt", tmp_path / "gap.pt"
    assert main(["crystals", "regressor", "--data", str(csv), "--target", "formation_energy", "--epochs", "2",
                 "--hidden", "16", "--layers", "2", "--threads", "1", "--out", str(first)]) in (0, None)
    assert main(["crystals", "regressor", "--data", str(csv), "--target", "band_gap", "--epochs", "2", "--hidden",
                 "16", "--layers", "2", "--threads", "1", "--init", str(first), "--freeze", "0.5", "--out",
                 str(second)]) in (0, None)
    tuned = load_regressor(second)
    start = load_regressor(first)
    assert tuned.targets == ["band_gap"]
    assert torch.equal(tuned.embed.weight, start.embed.weight)  # frozen by the transfer
    assert "val MAE" in capsys.readouterr().out
    kept = first.read_bytes()  # a trained regressor is not replaced by accident
    assert main(["crystals", "regressor", "--data", str(csv), "--target", "band_gap", "--out", str(first)]) == 2
    assert "form.pt already exists; pass --overwrite" in capsys.readouterr().err and first.read_bytes() == kept
    other = tmp_path / "other.pt"
    assert main(["crystals", "regressor", "--data", str(csv), "--target", "bogus", "--out", str(other)]) == 2
    assert "--target 'bogus': the crystals of" in capsys.readouterr().err
    assert main(["crystals", "regressor", "--data", str(csv), "--target", "band_gap", "--min-band-gap", "100",
                 "--out", str(other)]) == 2
    assert "no crystals left with a band gap above 100" in capsys.readouterr().err and not other.exists()


def test_random_pyxtal_dataset_option():
    from polydiff_crystals.modality import random_dataset

    data = random_dataset(n=12, seed=1)
    assert len(data.train) + len(data.test) <= 12 and data.info["representation"] == "periodic"
    assert set(data.info["elements"]) <= {"Si", "O"}


def test_matrix_gradient_guidance_regressor_learns_and_steers():
    """A noise-aware matrix regressor beats the mean at low noise, and its guidance moves the
    samples of an (untrained) model towards the target property."""
    import polydiff
    from polydiff.plugin import Control, SampleSettings, controlled_sample
    from polydiff_crystals.guidance import matrix_guidance, train_matrix_regressor

    crystals = []
    for i, a in enumerate(np.linspace(4.0, 7.0, 40)):
        s = _rocksalt(a, f"r{i}")
        s.properties["band_gap"] = float(a)  # a property the lattice row encodes
        crystals.append(s)
    data = make_bundle(crystals[::2], crystals[1::2], {"dataset": "test"}, conditions=["band_gap"])
    mod = CrystalsModality()
    fields = mod.fields(data.info)
    reg, report = train_matrix_regressor(data, "band_gap", fields, steps=300, batch_size=32, seed=0)
    assert report["test_mae_sigma_0.01"] < 0.5 * report["baseline_mae"]
    torch.manual_seed(0)
    net = mod.network("unet", data.info, fields, channels=[8, 16, 16], time_dim=32).eval()
    spec = mod.prior_state(8, data.info)
    spec = {k: v for k, v in spec.items() if k in fields or not isinstance(v, tuple)}
    settings = SampleSettings(sampler="edm", steps=12)
    with torch.no_grad():
        plain = controlled_sample(net, fields, spec, settings, None, seed=torch.arange(8), device=torch.device("cpu"))
    guided = controlled_sample(net, fields, spec, settings, Control(guidance=matrix_guidance(reg, 6.5, fields, 4.0)),
                               seed=torch.arange(8), device=torch.device("cpu"))
    sig = torch.full((8,), 0.002, dtype=torch.float64)
    from polydiff.plugin import time_input

    with torch.no_grad():
        before = reg(plain["x"], time_input(fields["x"].process.schedule, sig))
        after = reg(guided["x"], time_input(fields["x"].process.schedule, sig))
    assert (after - 6.5).abs().mean() < (before - 6.5).abs().mean()
    assert polydiff  # the public package stays importable alongside


def test_channel_attention_trains_with_dropout_and_evaluates_without():
    """In training the layer drops attention weights (outputs vary with the seed and follow it,
    gradients reach every parameter); in eval mode it is deterministic and equals its
    dropout-free self."""
    from polydiff_crystals.unet import ChannelAttention

    torch.manual_seed(0)
    layer, plain = ChannelAttention(17, 1, 0.1), ChannelAttention(17, 1, 0.0)
    plain.load_state_dict(layer.state_dict())
    x = torch.randn(4, 32, 17)
    torch.manual_seed(1)
    a = layer(x)
    torch.manual_seed(1)
    assert torch.equal(layer(x), a) and not torch.allclose(layer(x), a) and torch.isfinite(a).all()
    a.square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in layer.parameters())
    # what it computes: dropout (same seed) on the softmax weights, then add & norm and the feed-forward
    with torch.no_grad():
        q, k, v = layer.qkv(x).view(4, 32, 3, 1, 17).permute(2, 0, 3, 1, 4)
        w = torch.softmax(q @ k.transpose(-1, -2) * 17**-0.5, dim=-1)
        torch.manual_seed(1)
        h = layer.norm1(x + layer.proj((torch.nn.functional.dropout(w, 0.1, True) @ v).transpose(1, 2)
                                       .reshape(4, 32, 17)))
        torch.manual_seed(1)
        assert torch.allclose(layer(x), layer.norm2(h + layer.ffn(h)), atol=1e-6)
    layer.eval(), plain.eval()
    assert torch.allclose(layer(x), plain(x)) and torch.equal(layer(x), layer(x))


def test_fused_channel_attention_equals_multihead_attention_and_loads_its_weights():
    """The U-Net's fused attention computes nn.MultiheadAttention's layer exactly and loads
    checkpoints saved with it (renamed q/k/v and output projections)."""
    from polydiff_crystals.unet import ChannelAttention

    torch.manual_seed(0)
    mha = torch.nn.MultiheadAttention(17, 1, dropout=0.0, batch_first=True)
    layer = ChannelAttention(17, 1, 0.0).eval()
    old = {"attn.in_proj_weight": mha.in_proj_weight.detach(), "attn.in_proj_bias": mha.in_proj_bias.detach(),
           "attn.out_proj.weight": mha.out_proj.weight.detach(), "attn.out_proj.bias": mha.out_proj.bias.detach()}
    old.update({k: v for k, v in layer.state_dict().items() if not k.startswith(("qkv", "proj"))})
    layer.load_state_dict(old)
    x = torch.randn(4, 32, 17)
    h = layer.norm1(x + mha(x, x, x, need_weights=False)[0])
    assert torch.allclose(layer(x), layer.norm2(h + layer.ffn(h)), atol=1e-6)


class _TowardsHalf(torch.nn.Module):
    """Predicts every clean fractional coordinate at 0.5 (lattice: the input, uniform types)."""

    def __init__(self, num_types: int) -> None:
        super().__init__()
        self.num_types = num_types

    def forward(self, state, t, cond=None):
        frac = state["frac"]
        return {"frac": torch.full_like(frac, 0.5), "lattice": state["lattice"],
                "types": frac.new_zeros(*frac.shape[:2], self.num_types)}


def _one_step(rate: float) -> tuple[torch.Tensor, torch.Tensor]:
    from polydiff.plugin import Control, SampleSettings

    mod = CrystalsModality()
    data = make_bundle([_rocksalt(), _perovskite()] * 2, [_perovskite()], {"dataset": "test"},
                       representation="periodic")
    fields = mod.fields(data.info, frac_rate=rate)
    spec = mod.prior_state(3, data.info, torch.Generator().manual_seed(0))
    settings = SampleSettings(sampler="euler", steps=1, t_min=0.9)
    net = _TowardsHalf(len(data.info["elements"]))
    out = mod.sample(net, fields, spec, settings, Control(), seed=torch.arange(3), device=torch.device("cpu"))
    return out["frac"], spec["mask"] != 0


def test_periodic_sampling_moves_coordinates_at_frac_rate():
    """One step from t = 1 to 0.9 covers 1 - kappa(0.9) / kappa(1) of the way to the predicted
    coordinates: 0.1 at rate 0, 1 - (e^9 - 1) / (e^10 - 1) at rate 10 (the recipes' default)."""
    def left(x):  # wrapped distance still to go to 0.5
        d = 0.5 - x.double()
        return d - torch.round(d)

    (linear, present), (fast, _) = _one_step(0.0), _one_step(10.0)
    ratio = (left(fast) / left(linear))[present]  # padded atoms stay put
    expect = (math.expm1(9.0) / math.expm1(10.0)) / 0.9
    assert torch.allclose(ratio, torch.full_like(ratio, expect), atol=1e-4)
    mod = CrystalsModality()
    info = make_bundle([_rocksalt()] * 2, [_rocksalt()], {"dataset": "t"}, representation="periodic").info
    assert mod.fields(info)["frac"].process.sample_rate == 10.0
    with pytest.raises(ValueError, match="frac_rate"):
        mod.fields(info, frac_rate=-1.0)
    with pytest.raises(ValueError, match="sigma_max"):
        mod.fields(info, sigma_max=80.0)


def test_files_dataset_max_elements_keeps_quaternary_crystals(tmp_path):
    from pymatgen.io.cif import CifWriter

    from polydiff_crystals.modality import files_dataset

    quaternary = Structure(Lattice.cubic(4.0), ["Ba", "Ti", "O", "F"], [[0, 0, 0], [0.5, 0.5, 0.5],
                                                                     [0.5, 0.5, 0], [0.5, 0, 0.5]])
    for i in range(5):
        rocksalt = Structure(Lattice.cubic(5.0 + 0.1 * i), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
        (tmp_path / f"r{i}.cif").write_text(str(CifWriter(rocksalt)))
    (tmp_path / "quat.cif").write_text(str(CifWriter(quaternary)))
    with pytest.warns(UserWarning, match=r"quat: 4 elements"):
        files_dataset(str(tmp_path), test_fraction=0.2)
    data = files_dataset(str(tmp_path), test_fraction=0.2, max_elements=4)
    assert data.info["matrix"]["max_elements"] == 4 and len(data.train) + len(data.test) == 6
    with pytest.raises(ValueError, match="max_elements must be >= 1"):
        files_dataset(str(tmp_path), max_elements=0)
