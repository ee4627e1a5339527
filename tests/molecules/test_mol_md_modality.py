"""The ``md`` modality end to end: the contract kit on the 2-D systems and the peptide, training an
energy model with and without the Fokker-Planck regulariser, i.i.d. sampling and Langevin
dynamics from the same model, the ASE calculator on a trained model, and the JS metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from polydiff.plugin import shared_dir
from polydiff.testing import check_modality
from polydiff_molecules import MDModality
from polydiff_molecules.md import EnergyCalculator, mcmc_reference
from polydiff_molecules.md_modality import js_metrics, model_forces

pytestmark = pytest.mark.usefixtures("one_thread")

ALA = shared_dir() / "data" / "md_alanine_dipeptide" / "ala2_cg5_cgnet.npz"
TINY = {"hidden": 16, "layers": 1}


def needs_alanine(test):
    """Mark a test as needing ../shared/data/md_alanine_dipeptide and skip it when absent."""
    skip = pytest.mark.skipif(not ALA.is_file(), reason=f"shared data file {ALA} not found "
                                                        "(set POLYDIFF_SHARED to the shared folder)")
    return skip(pytest.mark.shared(test))


def test_contract_muller_brown(tmp_path):
    check_modality(MDModality(), tmp_path, data={"name": "muller_brown", "n": 64, "test": 64},
                   model={"name": "mlp", **TINY}, n=3, steps=3)


@needs_alanine
def test_contract_alanine(tmp_path):
    check_modality(MDModality(), tmp_path, data={"name": "alanine", "stride": 50},
                   model={"name": "beads", **TINY}, n=3, steps=3)


@pytest.mark.parametrize(("name", "shape"), [("mlp", (7, 2)), ("beads", (7, 5, 3))])
def test_energy_with_a_shared_time_equals_per_sample_times(name, shape):
    """Sampling and dynamics pass one time for the batch (a stride-0 view): the networks embed it
    once; energies and forces equal those of per-sample times."""
    from polydiff.plugin import EnergyModel
    from polydiff_molecules.md_nets import ENERGY_NETWORKS

    md = MDModality()
    info = {"dim": 2, "n_beads": 5, "data_std": 0.8}
    fields = md.fields(info)
    torch.manual_seed(0)
    net = EnergyModel(ENERGY_NETWORKS[name](info, fields, hidden=16, layers=2), fields)
    for p in net.parameters():
        p.data.normal_(0, 0.3)
    x = torch.randn(*shape)
    shared = torch.full((1,), 0.2).expand(shape[0])
    a, b = net({"x": x}, shared), net({"x": x}, shared.contiguous())
    for k in ("x", "energy"):
        assert a[k].shape == b[k].shape and a[k].shape[0] == shape[0]
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(a["energy"][0], a["energy"][1])


def test_js_metrics_can_fail_and_are_near_zero_for_the_same_density():
    from polydiff_molecules.md import SYSTEMS

    info = {"system": "double_well", "kind": "2d"}
    a = mcmc_reference(SYSTEMS["double_well"], 20_000, seed=1)
    b = mcmc_reference(SYSTEMS["double_well"], 20_000, seed=2)
    same = js_metrics(a, b, info)["js"]
    shifted = js_metrics(a + np.array([0.5, 0.0]), b, info)["js"]
    assert same < 0.08 and shifted > 3 * same
    for empty in ((a[:0], b), (a, b[:0])):
        with pytest.raises(ValueError, match=r"js_metrics: no (samples|reference)"):
            js_metrics(*empty, info)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    import polydiff as pd

    out = tmp_path_factory.mktemp("mdrun")
    cfg = {"modality": "md", "data": {"name": "double_well", "n": 512, "test": 512},
           "model": {"name": "mlp", "hidden": 32, "layers": 2}, "loss": {"weighting": "snr"},
           "train": {"max_steps": 60, "batch_size": 64, "lr": 3e-3, "checkpoint_every": 60, "log_every": 20,
                     "threads": 1},
           "sample": {"num": 64, "sampler": "euler", "steps": 20, "seed": 0}}
    pd.train(cfg, out)
    return pd.load(out / "checkpoints" / "last.ckpt")


def test_one_model_samples_and_simulates(trained):
    res = MDModality().evaluate_model(trained, num=256, seed=0, langevin=20, chains=16, every=5, dt=1e-3)
    with pytest.raises(ValueError, match="option langevin: expected a positive integer, got -5"):
        MDModality().evaluate_model(trained, num=8, seed=0, langevin=-5)
    for k in ("iid_js", "langevin_js", "data_js", "langevin_minus_iid"):
        assert k in res and math.isfinite(res[k])
    assert 0 <= res["data_js"] <= res["iid_js"] + 0.5
    # the samples' own metrics carry the names evaluate gives them on files, too
    assert res["js"] == res["iid_js"] and set(MDModality().evaluate(trained.generate(8, seed=0),
                                                                    trained.reference(), trained.info)) <= set(res)


def test_forces_of_a_trained_model_drive_ase(trained):
    from ase import Atoms

    force = model_forces(trained)
    x = torch.tensor([[0.9, 0.1], [-1.0, 0.0]], dtype=torch.float64)
    f = force(x)
    assert f.shape == (2, 2) and torch.isfinite(f).all()

    def energy_fn(xb):
        from polydiff_molecules.md_nets import energy_closure
        return energy_closure(trained.net.energy, 1e-3)(xb)

    atoms = Atoms("X", positions=[[0.9, 0.1, 0.0]])
    atoms.calc = EnergyCalculator(energy_fn, kT=1.0, planar=True)
    got = atoms.get_forces()
    assert got.shape == (1, 3) and got[0, 2] == 0 and np.isfinite(got).all()
    assert np.allclose(got[0, :2], f[0].numpy(), atol=1e-4)


def test_compiled_forces_match_the_eager_ones_and_drive_the_same_dynamics(trained):
    from polydiff_molecules.md import langevin_torch
    from polydiff_molecules.md_modality import simulate

    x = torch.tensor([[0.9, 0.1], [-1.0, 0.0], [0.2, 0.7]], dtype=torch.float64)
    eager, compiled = model_forces(trained), model_forces(trained, compile=True)
    assert torch.allclose(compiled(x), eager(x), atol=1e-5) and compiled(x).dtype == torch.float64
    starts = mcmc_reference("muller_brown", 8, seed=0)
    runs = [simulate(trained, starts, chains=3, steps=20, every=10, dt=1e-2, friction=1.0, t_min=None, seed=1,
                     integrator=langevin_torch, compile=c) for c in (False, True)]
    assert runs[0].shape == (2, 3, 2) and np.allclose(runs[0], runs[1], atol=1e-4)
    with pytest.raises(TypeError, match="compile must be True or False"):
        model_forces(trained, compile="yes")


def test_fokker_planck_regulariser_trains(tmp_path):
    import polydiff as pd

    weight = 5e-4
    cfg = {"modality": "md", "data": {"name": "muller_brown", "n": 64, "test": 64},
           "model": {"name": "mlp", **TINY}, "loss": {"weighting": "snr", "techniques": {"fp_weight": weight}},
           "train": {"max_steps": 2, "batch_size": 16, "checkpoint_every": 2, "threads": 1}}
    run = pd.train(cfg, tmp_path / "fp")
    assert run.step == 2 and math.isfinite(run.metrics["train/loss"])
    # the regulariser ran and is in the trained loss: total = denoising term + fp_weight * penalty
    pen = run.metrics.get("train/loss_fokker_planck")
    assert pen is not None and math.isfinite(pen) and pen > 0
    assert run.metrics["train/loss"] == pytest.approx(run.metrics["train/loss_x"] + weight * pen, rel=1e-5, abs=1e-7)


def test_time_restricted_normalised_fokker_planck_trains_and_validates(tmp_path):
    import polydiff as pd

    fp = {"fp_weight": 1e-2, "fp_t_range": [1e-3, 0.05], "fp_normalize": True}
    cfg = {"modality": "md", "data": {"name": "muller_brown", "n": 64, "test": 64},
           "model": {"name": "mlp", **TINY}, "loss": {"weighting": "snr", "techniques": fp},
           "train": {"max_steps": 2, "batch_size": 16, "checkpoint_every": 2, "threads": 1, "log_every": 1}}
    run = pd.train(cfg, tmp_path / "fp")
    pen = run.metrics.get("train/loss_fokker_planck")
    assert run.step == 2 and math.isfinite(run.metrics["train/loss"]) and pen is not None and math.isfinite(pen)
    bad = {**cfg, "loss": {"weighting": "snr", "techniques": {**fp, "fp_t_range": [0.05, 1e-3]}}}
    with pytest.raises(ValueError, match="fp_t_range"):
        pd.train(bad, tmp_path / "bad")


def test_md_read_names_unsupported_files_and_reads_a_folders_one_file(tmp_path):
    """A CSV was parsed as XYZ ("frame 1: expected the number of atoms"); a folder needed samples.npz."""
    mod = MDModality()
    bad = tmp_path / "pts.csv"
    bad.write_text("x,y\n0,1\n")
    with pytest.raises(ValueError, match=r"pts\.csv: not a samples file \(suffix '\.csv'\)"):
        mod.read(bad)
    folder = tmp_path / "mine"
    folder.mkdir()
    np.savez(folder / "points.npz", x=np.zeros((3, 2)))
    assert len(mod.read(folder)) == 3
