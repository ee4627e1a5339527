"""The example third-party plugin (examples/third_party_plugin) works through the public API
alone: discovered by entry point, trained, sampled, saved and evaluated like any plugin."""

import numpy as np
import pytest

import polydiff

pytestmark = pytest.mark.skipif("spirals" not in polydiff.available_modalities(),
                                reason="examples/third_party_plugin is not installed (make setup installs it)")


def test_third_party_plugin_end_to_end(tmp_path):
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
