"""The example third-party plugin (examples/third_party_plugin) works through polydiff.plugin
alone: discovered by entry point, checked by the contract kit, trained from its bundled recipe,
sampled (also from a native observation file), saved, evaluated, and its command runs."""

import numpy as np
import pytest

import polydiff
from polydiff.cli import main as cli
from polydiff.testing import check_modality

pytestmark = pytest.mark.skipif("spirals" not in polydiff.available_modalities(),
                                reason="examples/third_party_plugin is not installed (make setup installs it)")


def test_contract(tmp_path):
    check_modality(polydiff.load_modality("spirals"), tmp_path, data={"n": 64}, model={"hidden": 16, "depth": 1})


def test_third_party_plugin_end_to_end(tmp_path, capsys):
    run = polydiff.train("spirals:spirals", tmp_path / "run",
                         overrides=["train.max_steps=300", "train.progress=false"], verbose=False)
    gen = polydiff.load(run.checkpoint)
    points = gen.generate(400, sampler="heun", steps=10, seed=0)
    assert points.shape == (400, 2) and np.isfinite(points).all()
    paths = gen.save(points, tmp_path / "samples")
    assert np.allclose(polydiff.load_modality("spirals").read(paths[0]), points)
    metrics = gen.evaluate(points)
    noise = np.random.default_rng(0).standard_normal((400, 2)) * 2
    worse = gen.evaluate(noise)
    assert metrics["energy_distance"] < worse["energy_distance"]
    # conditional generation from the plugin's own observation file: x fixed, y generated
    obs = tmp_path / "x.csv"
    obs.write_text("x,y\n0.5,\n")
    out = tmp_path / "given_x"
    assert cli(["sample", str(run.checkpoint), "--num", "50", "--observed", str(obs), "--out", str(out),
                "--sampler", "euler", "--steps", "20"]) == 0
    pts = polydiff.load_modality("spirals").read(out)
    assert np.allclose(pts[:, 0], 0.5) and pts[:, 1].std() > 0.05
    obs.write_text("x,y\nhello,\n")
    capsys.readouterr()
    assert cli(["sample", str(run.checkpoint), "--observed", str(obs), "--out", str(tmp_path / "bad")]) == 2
    assert "x.csv: line 2" in capsys.readouterr().err and not (tmp_path / "bad").exists()
