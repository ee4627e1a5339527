"""Property regressors and property-targeted generation on a learnable stand-in property (no
shared data needed): the regressor beats the shuffled baseline, saves and loads, its noisy
variant guides sampling through the core's gradient guidance, and the MAE protocol runs in
every mode."""

from __future__ import annotations

import json
import math

import pytest
import torch

from polydiff.plugin import shared_dir
from polydiff_molecules.data import default_molecules
from polydiff_molecules.modality import MoleculesModality, make_bundle
from polydiff_molecules.properties import (
    load_regressor,
    property_mae,
    regressor_guidance,
    save_regressor,
    shuffled_mae,
    targets_for,
    train_regressor,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def bundle():
    """Default molecules with a stand-in 'gap': 0.1 per O atom + 0.05 per N atom (+ 0.2)."""
    mols = default_molecules(n=80)
    for m in mols:
        m.properties["gap"] = 0.2 + 0.1 * m.symbols.count("O") + 0.05 * m.symbols.count("N")
    return make_bundle(mols[:64], mols[64:], {"dataset": "test"}, elements=["H", "C", "N", "O", "F"],
                       conditions=["gap"])


def test_regressor_learns_saves_and_loads(bundle, tmp_path):
    net, rep = train_regressor(bundle, "gap", steps=150, batch_size=16, hidden=32, layers=2, lr=3e-3, progress=False)
    base = shuffled_mae(net, bundle.test)
    assert rep["test_mae"] < 0.6 * base, (rep, base)
    path = save_regressor(net, tmp_path / "gap.pt", bundle.info, noisy=False, options={"hidden": 32, "layers": 2})
    back, blob = load_regressor(path)
    st = bundle.test.get_batch(torch.arange(4))
    assert torch.allclose(back.predict(st), net.predict(st)) and blob["property"] == "gap"
    (tmp_path / "bad.pt").write_bytes(b"nope")
    with pytest.raises(ValueError, match=r"bad\.pt"):
        load_regressor(tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="no property 'mu'"):
        train_regressor(bundle, "mu", steps=1)
    # jitter shakes the clean training positions (same seed, same batches: only the shake differs)
    a, _ = train_regressor(bundle, "gap", steps=5, batch_size=8, hidden=16, layers=1, progress=False)
    b, _ = train_regressor(bundle, "gap", steps=5, batch_size=8, hidden=16, layers=1, jitter=0.1, progress=False)
    assert not torch.allclose(a.predict(st), b.predict(st))
    with pytest.raises(ValueError, match="jitter must be >= 0"):
        train_regressor(bundle, "gap", steps=1, jitter=-0.1)


def test_regressor_files_without_arch_load_as_gvp(bundle, tmp_path):
    """Regressor files written before the pair regressor carry GVP weights and no "arch"."""
    from polydiff_molecules.nets import GVPRegressor, property_regressor

    opts = {"hidden": 8, "vectors": 2, "layers": 1, "rbf": 4}
    net = property_regressor(bundle.info, property="gap", arch="gvp", **opts).eval()
    torch.save({"state_dict": net.state_dict(), "info": dict(bundle.info), "property": "gap", "noisy": False,
                "options": opts}, tmp_path / "old.pt")
    back, _ = load_regressor(tmp_path / "old.pt")
    st = bundle.test.get_batch(torch.arange(3))
    assert isinstance(back, GVPRegressor) and torch.allclose(back.predict(st), net.predict(st))


def test_targets_and_guided_generation(bundle, tmp_path):
    import polydiff as pd

    ood = targets_for(bundle, "gap", 5, "ood")
    assert torch.allclose(ood, ood[:1].expand(5)) and float(ood[0]) >= float(bundle.train.tensors["gap"].median())
    idt = targets_for(bundle, "gap", 5, "id", seed=1)
    assert set(idt.tolist()) <= set(bundle.test.tensors["gap"].tolist())
    cfg = {"modality": "molecules", "data": {"name": "default", "n": 24, "test_fraction": 0.25},
           "model": {"name": "gvp", "hidden": 16, "vectors": 4, "layers": 1},
           "train": {"max_steps": 2, "batch_size": 4, "checkpoint_every": 2, "threads": 1},
           "sample": {"num": 2, "sampler": "euler", "steps": 3, "seed": 0}}
    pd.train(cfg, tmp_path / "run")
    gen = pd.load(tmp_path / "run" / "checkpoints" / "last.ckpt")
    guide, _ = train_regressor(bundle, "gap", fields=gen.fields, noisy=True, steps=20, batch_size=8, hidden=16,
                               layers=1, progress=False)
    evaluator, _ = train_regressor(bundle, "gap", steps=20, batch_size=8, hidden=16, layers=1, progress=False)
    # gradient guidance moves the sampled positions; the unguided run is reproduced exactly
    from polydiff.plugin import Control

    plain = gen.generate(2, seed=3, steps=3, condition={"atoms": 6})
    again = gen.generate(2, seed=3, steps=3, condition={"atoms": 6})
    pushed = gen.generate(2, seed=3, steps=3, condition={"atoms": 6},
                          control=Control(guidance=regressor_guidance(guide, 0.9, gen.fields, scale=5.0)))
    assert all((a.positions == b.positions).all() for a, b in zip(plain, again))
    assert any(not (a.positions == b.positions).all() for a, b in zip(plain, pushed))
    # token guidance alone changes which elements are drawn (the positions follow the model)
    typed = gen.generate(4, seed=3, steps=3, condition={"atoms": 6},
                         control=Control(guidance=regressor_guidance(guide, 0.9, gen.fields, scale=50.0,
                                                                     keys=["types"])))
    plain4 = gen.generate(4, seed=3, steps=3, condition={"atoms": 6})
    assert any(a.symbols != b.symbols for a, b in zip(plain4, typed))
    with pytest.raises(ValueError, match="'pos' and / or 'types'"):
        regressor_guidance(guide, 0.9, gen.fields, keys=["charges"])
    res = property_mae(gen, evaluator, idt[:2], mode="unconditional", steps=3)
    assert math.isfinite(res["mae"]) and res["n"] == 2
    res = property_mae(gen, evaluator, idt[:2], mode="gradient", guide=guide, steps=3, judges={"guide": guide})
    assert math.isfinite(res["mae"]) and math.isfinite(res["mae_guide"]) and res["mae_guide"] != res["mae"]
    assert -1 <= res["corr_guide"] <= 1
    assert 0 <= res["validity"] <= 1 and (math.isnan(res["mae_valid"]) == (res["validity"] == 0))
    with pytest.raises(ValueError, match="needs a noise-aware regressor"):
        property_mae(gen, evaluator, idt[:2], mode="gradient")
    assert MoleculesModality().commands().keys() == {"regressor", "property"}


QM9 = shared_dir() / "data" / "qm9" / "qm9_sample20k.csv"


@pytest.mark.shared
@pytest.mark.skipif(not QM9.is_file(), reason=f"shared data file {QM9} not found (set POLYDIFF_SHARED to the "
                    "shared folder)")
def test_regressor_command_trains_either_arch_on_qm9(tmp_path, monkeypatch, capsys):
    from polydiff.cli import main
    from polydiff_molecules.nets import GVPRegressor, PairRegressor

    monkeypatch.setenv("POLYDIFF_CACHE", str(tmp_path / "cache"))
    base = ["molecules", "regressor", "--property", "gap", "--n", "40", "--steps", "20", "--threads", "1"]
    assert main([*base, "--out", str(tmp_path / "pairs.pt")]) == 0
    assert main([*base, "--arch", "gvp", "--hidden", "8", "--layers", "1", "--out", str(tmp_path / "gvp.pt")]) == 0
    assert "test MAE" in capsys.readouterr().out
    pairs, blob = load_regressor(tmp_path / "pairs.pt")
    gvp, gblob = load_regressor(tmp_path / "gvp.pt")
    assert isinstance(pairs, PairRegressor) and blob["options"] == {"arch": "pairs"}
    assert isinstance(gvp, GVPRegressor) and gblob["options"] == {"arch": "gvp", "hidden": 8, "layers": 1}
    report = json.loads((tmp_path / "pairs.json").read_text())
    assert report["property"] == "gap" and report["half"] == "regressor" and report["test_mae"] > 0
    assert main([*base, "--out", str(tmp_path / "pairs.pt")]) == 2  # the model and its report: --overwrite
    assert main([*base, "--steps", "2", "--out", str(tmp_path / "reg.json")]) == 0  # the report beside, not over it
    assert load_regressor(tmp_path / "reg.json")[0] is not None
    assert json.loads((tmp_path / "reg.report.json").read_text())["property"] == "gap"

    # the property command scores one set of samples with the evaluator and each judge
    import polydiff as pd

    cfg = {"modality": "molecules", "data": {"name": "qm9", "n": 40, "half": "generator", "conditions": ["gap"]},
           "model": {"name": "gvp", "hidden": 16, "vectors": 4, "layers": 1},
           "train": {"max_steps": 2, "batch_size": 4, "checkpoint_every": 2, "threads": 1}}
    pd.train(cfg, tmp_path / "gen")
    ckpt = str(tmp_path / "gen" / "checkpoints" / "last.ckpt")
    assert main(["molecules", "property", ckpt, "--regressor", str(tmp_path / "pairs.pt"), "--judge",
                 str(tmp_path / "gvp.pt"), "--num", "3", "--steps", "2", "--mode", "off", "--threads", "1",
                 "--json", str(tmp_path / "res.json")]) == 0
    res = json.loads((tmp_path / "res.json").read_text())
    assert res["n"] == 3 and math.isfinite(res["mae_gvp"]) and res["mae_gvp"] != res["mae"]
    assert "judge gvp: MAE" in capsys.readouterr().out
    assert main([*base[:3], "mu", *base[4:], "--out", str(tmp_path / "mu.pt")]) == 0
    capsys.readouterr()
    assert main(["molecules", "property", ckpt, "--regressor", str(tmp_path / "pairs.pt"), "--judge",
                 str(tmp_path / "mu.pt"), "--num", "2", "--steps", "2", "--threads", "1"]) == 2
    assert "mu.pt: a regressor of 'mu', not of 'gap'" in capsys.readouterr().err
