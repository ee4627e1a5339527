"""Few-step grids fitted to a model (``polydiff.calibrate_grid``)."""

from __future__ import annotations

import pytest
import torch

from polydiff import GaussianProcess, calibrate_grid, make_grid, sample
from polydiff.toy.gmm import ExactDenoiser, GaussianMixture


@pytest.fixture(scope="module")
def target():
    gmm = GaussianMixture.random(dim=2, seed=2)  # sharp 2-D components: few-step grids matter
    process = GaussianProcess("vp_discrete")
    return gmm, process, ExactDenoiser(gmm, process, "eps")


def _path_error(model, process, grid, sampler, seed, n=2000):
    """RMS distance to an accurate solution from the same prior draw (fresh seeds)."""
    fine = sample(model, process, (n, 2), sampler="dpm++2m", steps=400, seed=seed, dtype=torch.float64)
    out = sample(model, process, (n, 2), sampler=sampler, grid=grid, seed=seed)
    return float(((out.double() - fine) ** 2).mean().sqrt())


def test_fitted_grid_beats_the_default_on_fresh_samples(target):
    _, process, model = target
    grid = calibrate_grid(model, process, (256, 2), 8, sampler="unipc", seed=0, max_trials=150,
                          reference_steps=200)
    default = make_grid(process.schedule, 8)
    assert grid.shape == (9,) and grid.dtype == torch.float64
    assert bool((grid[1:] < grid[:-1]).all())
    assert float(grid[0]) == float(default[0]) and float(grid[-1]) == float(default[-1])  # end points kept
    assert not torch.allclose(grid, default)
    before = _path_error(model, process, default, "unipc", seed=11)
    after = _path_error(model, process, grid, "unipc", seed=11)
    assert after < 0.6 * before, (before, after)
    # it starts from the grid sample() walks by default (quadratic here) and improves on it too
    walked = make_grid(process.schedule, 8, process.schedule.sampling_grid("unipc", 8))
    assert after < 0.8 * _path_error(model, process, walked, "unipc", seed=11)


def test_edm_fits_start_from_karras_grid():
    """EDM's default grid for UniPC at 8 steps is ``vp_quadratic``, but its fits start from Karras' grid
    (``EDM.calibration_grid``): with no trial beyond the start, the fit returns that grid."""
    process = GaussianProcess("edm")
    gmm = GaussianMixture.random(dim=2, seed=2)
    model = ExactDenoiser(gmm, process, "eps")
    s = process.schedule
    assert s.sampling_grid("unipc", 8) == "vp_quadratic" and s.calibration_grid("unipc", 8) == "karras"
    grid = calibrate_grid(model, process, (16, 2), 8, sampler="unipc", max_trials=1, reference_steps=10)
    torch.testing.assert_close(grid, make_grid(s, 8, "karras"))
    named = calibrate_grid(model, process, (16, 2), 8, sampler="unipc", grid="uniform_logsnr", max_trials=1,
                           reference_steps=10)
    torch.testing.assert_close(named, make_grid(s, 8, "uniform_logsnr"))
    assert GaussianProcess("vp_discrete").schedule.calibration_grid("unipc", 8) == "quadratic"


def test_final_zero_multi_field_and_errors(target):
    _, process, model = target
    g = calibrate_grid(model, process, (64, 2), 5, sampler="dpm++2m", final_zero=True, max_trials=20,
                       reference_steps=50)
    assert g.shape == (6,) and float(g[-1]) == 0.0 and bool((g[1:] < g[:-1]).all())

    # a dict state: only the Gaussian fields enter the objective
    def state_model(state, t):
        return {"x": model(state["x"], t)}

    g2 = calibrate_grid(state_model, {"x": process}, {"x": (64, 2)}, 4, sampler="heun", max_trials=10,
                        reference_steps=50)
    assert g2.shape == (5,)
    with pytest.raises(ValueError, match="deterministic"):
        calibrate_grid(model, process, (8, 2), 5, sampler="ddpm")
    with pytest.raises(ValueError, match="no interior time"):
        calibrate_grid(model, process, (8, 2), 1, sampler="ddim")
    # max_trials=0 or tol=nan returned the starting grid as if it had been fitted
    for bad, words in (({"max_trials": 0}, "max_trials must be a positive integer"),
                       ({"tol": float("nan")}, "tol must be a positive number")):
        with pytest.raises(ValueError, match=words):
            calibrate_grid(model, process, (8, 2), 5, sampler="ddim", **bad)


def test_calibration_arguments_are_checked_and_seed_none_is_one_seed(target):
    """Non-integer steps reached torch.linspace; seed=None drew a fresh prior for the reference and
    for every trial, so each trial was scored against another batch's solution."""
    _, process, model = target
    for kw, msg in [({"steps": 2.5}, "steps must be an integer"),
                    ({"reference_steps": 0}, "reference_steps must be a positive integer"),
                    ({"reference_steps": 3}, r"reference_steps \(3\) must be at least steps \(4\)"),
                    ({"seed": 1.5}, "seed must be an integer")]:
        args = {"steps": 4, "max_trials": 1, "reference_steps": 10, **kw}
        with pytest.raises(ValueError, match=msg):
            calibrate_grid(model, process, (16, 2), args.pop("steps"), sampler="unipc", **args)
    from polydiff.registry import seed_value

    torch.manual_seed(5)
    fresh = calibrate_grid(model, process, (64, 2), 4, sampler="unipc", seed=None, max_trials=12, reference_steps=20)
    torch.manual_seed(5)
    drawn = seed_value(None)
    fixed = calibrate_grid(model, process, (64, 2), 4, sampler="unipc", seed=drawn, max_trials=12, reference_steps=20)
    assert torch.equal(fresh, fixed)


def test_calibration_runs_at_most_max_trials(target):
    _, process, model = target
    for n in (1, 2, 3, 6):
        seen = []
        calibrate_grid(model, process, (16, 2), 4, sampler="unipc", max_trials=n, reference_steps=8,
                       progress=lambda k, err, seen=seen: seen.append(k))
        assert max(seen) <= n and seen[-1] == n, (n, seen)
