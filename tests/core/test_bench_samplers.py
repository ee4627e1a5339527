"""Smoke tests of the sampler benchmark (bench/samplers.py, loaded by path): its metrics, the
structure of the results, the diffusers equivalence check, and that a wrong sampler scores worse."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import os
from pathlib import Path

import pytest
import torch
from bench_loader import SCRIPT, load_bench

from polydiff.metrics import directions, sliced_wasserstein
from polydiff.samplers import SAMPLERS, for_budget
from polydiff.samplers.base import SamplerDef

bench = load_bench()


def test_evaluator_metrics_exact_cases():
    """SW2 against the exact set is polydiff.metrics.sliced_wasserstein with the shared directions,
    exact between equal-size sets; the moment errors and the floor behave as documented."""
    target = bench.Target(3, "edm", bench.make_mixture(3), bench.make_process("edm"))
    dirs = directions(3, 256, seed=1)
    ev = bench.Evaluator(target, 0.5, 1000, dirs, seed=3, replicates=2)
    x = ev.ref
    base = ev.metrics(x)
    assert base["sw2"] == 0.0 and base["sw2_excess"] == 0.0
    # the same set reordered is the same empirical measure
    perm = torch.randperm(1000, generator=torch.Generator().manual_seed(0))
    assert ev.metrics(x[perm])["sw2"] < 1e-12
    # a shift c moves every 1-D projection by <c, theta>: SW2^2 = mean <c, theta>^2 ~ |c|^2 / d
    c = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    exact = math.sqrt(float(((c @ dirs) ** 2).mean()))
    shifted = ev.metrics(x + c)
    assert shifted["sw2"] == pytest.approx(exact, rel=1e-9)
    assert exact == pytest.approx(float(c.norm()) / math.sqrt(3), rel=0.15)
    assert shifted["sw2"] == sliced_wasserstein(x + c, x, dirs=dirs)
    # the mean error moves by the shift, the covariance error not at all
    assert shifted["mean_err"] == pytest.approx(float((x.mean(0) + c - ev.mean).norm()), rel=1e-9)
    assert shifted["cov_err"] == pytest.approx(base["cov_err"], rel=1e-9)
    assert shifted["sw2_excess"] == pytest.approx(math.sqrt(shifted["sw2"] ** 2 - ev.floor_rms**2), rel=1e-12)
    # the floor: exact-vs-exact replicates, small but not zero
    assert 0 < ev.floor["sw2"] < 0.2 and ev.floor["replicates"] == 2 and ev.floor["sw2_std"] > 0
    assert ev.floor_rms >= ev.floor["sw2"]
    with pytest.raises(ValueError, match="equal-size"):
        ev.metrics(x[:10])
    assert not ev.metrics(x * float("nan"))["finite"]


def _wrong_ddim(x, d, e, ct, cs, hist, ctx):
    """DDIM with a clean estimate shrunk by 10%: a deliberately biased sampler."""
    return cs.alpha * 0.9 * d + cs.sigma * e, hist


def _walk(v):
    if isinstance(v, dict):
        for x in v.values():
            yield from _walk(x)
    elif isinstance(v, list):
        for x in v:
            yield from _walk(x)
    else:
        yield v


def test_benchmark_structure_and_wrong_sampler(tmp_path, monkeypatch):
    monkeypatch.setitem(SAMPLERS._items, "bench_wrong",
                        (SamplerDef("bench_wrong", _wrong_ddim, "gaussian", "biased DDIM (test)"), "test"))
    cfg = bench.Config(dims=(2,), processes=("vp_discrete",), nfe=(10,), samples=400,
                       samplers=["ddim", "bench_wrong", "no_such_sampler"], replicates=2, path_steps=100,
                       reference_steps=200, repeats=1, projections=64, log=lambda msg: None)
    res = bench.run(cfg, command="pytest")
    bench.write(res, tmp_path / "s.json", tmp_path / "s.md")
    data = json.loads((tmp_path / "s.json").read_text())

    assert data["environment"]["command"] == "pytest" and data["environment"]["torch"] == torch.__version__
    assert data["missing"] == ["no_such_sampler"]
    (tg,) = data["targets"]
    assert tg["dim"] == 2 and tg["process"] == "vp_discrete" and tg["n"] == 400
    assert set(tg["samplers"]) == {"ddim", "bench_wrong"}
    assert set(tg["references"]) == {"euler_200", "ddim_200"}
    good, bad = (tg["samplers"][k]["runs"][0] for k in ("ddim", "bench_wrong"))
    for r in (good, bad, *tg["references"].values()):
        assert r["nfe"] == r.get("nfe_target", r["nfe"])
        for k in ("sw2", "sw2_excess", "mean_err", "cov_err", "path_rmse", "seconds", "model_seconds"):
            assert isinstance(r[k], float) and math.isfinite(r[k]) and r[k] >= 0, (k, r[k])
    assert good["nfe"] == 10 and good["steps"] == 10
    assert 0 < tg["floor"]["sw2"] < good["sw2"]
    # the biased sampler is measurably worse on every metric
    assert bad["sw2"] > 1.5 * good["sw2"]
    assert bad["path_rmse"] > 2 * good["path_rmse"]
    assert bad["cov_err"] > good["cov_err"]
    # and the long references are far closer to the converged ODE solution than 10 steps
    assert tg["references"]["euler_200"]["path_rmse"] < good["path_rmse"]

    assert data["checks"]["a_status"] == "not run"  # no dpm++2m / unipc requested
    assert all(v is None or isinstance(v, (str, int, float, bool)) for v in _walk(data))
    md = (tmp_path / "s.md").read_text()
    assert md.startswith("# Sampler benchmark") and "Produced by: `pytest`" in md
    assert "| ddim |" in md and "| bench_wrong |" in md

    dz = data["diffusers"]
    if importlib.util.find_spec("diffusers") is None:  # bench-only dependency
        assert "not installed" in dz["skipped"]
        return
    (row,) = dz["rows"]  # only DDIM of the requested samplers has a diffusers twin
    assert row["scheduler"] == "DDIMScheduler" and row["identical"]
    assert row["ours"]["nfe"] == row["diffusers"]["nfe"] == 10
    assert row["grid"][-1] == 0.0 and row["grid_lam_mismatch"] < 1e-3
    assert row["max_abs_diff"] < 1e-4  # same maths, same grid, same start: same samples
    assert row["error_ratio"] == pytest.approx(1.0, abs=1e-3)
    assert row["ours"]["path_rmse"] == pytest.approx(row["diffusers"]["path_rmse"], rel=1e-3)
    assert row["ours"]["overhead_per_step_s"] > 0 and row["diffusers"]["overhead_per_step_s"] > 0
    assert data["checks"]["b_equivalence_status"] == "pass"
    assert "DDIMScheduler" in md


def test_broken_sampler_is_skipped_with_reason(monkeypatch):
    def broken(x, d, e, ct, cs, hist, ctx):
        raise RuntimeError("deliberately broken")

    monkeypatch.setitem(SAMPLERS._items, "bench_broken",
                        (SamplerDef("bench_broken", broken, "gaussian", "raises (test)"), "test"))
    target = bench.Target(2, "edm", bench.make_mixture(2), bench.make_process("edm"))
    cfg = bench.Config(nfe=(5,), samples=200, replicates=2, path_steps=20, reference_steps=20,
                       projections=16, log=lambda msg: None)
    out = bench.accuracy(target, cfg, ["bench_broken", "euler"])
    assert "deliberately broken" in out["samplers"]["bench_broken"]["skipped"]
    assert math.isfinite(out["samplers"]["euler"]["runs"][0]["sw2"])


def test_cli_parses_and_builds_config():
    args = bench.parser().parse_args(["--quick", "--dims", "2,8", "--nfe", "5", "--samplers", "ddim, euler",
                                      "--samples", "123", "--no-diffusers"])
    cfg = bench.config_from_args(args)
    assert list(cfg.dims) == [2, 8] and list(cfg.nfe) == [5] and cfg.samples == 123
    assert cfg.samplers == ["ddim", "euler"] and not cfg.diffusers
    quick = bench.config_from_args(bench.parser().parse_args(["--quick"]))
    assert list(quick.dims) == [2] and list(quick.nfe) == [5, 10] and quick.samplers is None


def test_script_defaults_and_command_line(monkeypatch):
    """Run as a script it writes into bench/results unless told otherwise, and the report's
    header names the script."""
    res = SCRIPT.parent / "results"
    args = bench.default_args(["--quick"])
    assert args[0] == "--quick" and Path(args[args.index("--json") + 1]).resolve() == res / "samplers.json"
    assert Path(args[args.index("--md") + 1]).resolve() == res / "samplers.md"
    assert bench.default_args(["--json", "a.json", "--md=b.md"]) == ["--json", "a.json", "--md=b.md"]
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.chdir(SCRIPT.parents[1])
    assert bench.command_line(["--quick", "--md", "x y.md"]) == \
        f"OMP_NUM_THREADS=1 python {os.path.join('bench', 'samplers.py')} --quick --md 'x y.md'"


def test_target_a_on_fitted_grids(tmp_path):
    """Target (a)'s samplers also run on grids fitted by calibrate_grid; the report shows both."""
    cfg = bench.Config(dims=(2,), processes=("vp_discrete",), nfe=(10,), samples=1000, samplers=["unipc"],
                       replicates=2, path_steps=200, reference_steps=200, projections=64, diffusers=False,
                       pilot=256, fit_reference_steps=100, a_replicates=3, log=lambda msg: None)
    res = bench.run(cfg, command="pytest")
    bench.write(res, tmp_path / "s.json", tmp_path / "s.md")
    (tg,) = res["targets"]
    fitted, default = tg["fitted"]["unipc"], tg["samplers"]["unipc"]["runs"][0]
    assert fitted["nfe"] == default["nfe"] == 10 and len(fitted["grid"]) == 11
    assert fitted["fit"]["trials"] > 10 and fitted["fit"]["model_calls"] > 100
    assert fitted["path_rmse"] < 0.7 * default["path_rmse"], (fitted["path_rmse"], default["path_rmse"])
    (row,) = res["checks"]["a_fitted"]
    assert row["sampler"] == "unipc" and row["status"] in ("pass", "FAIL")
    md = (tmp_path / "s.md").read_text()
    assert "(a') The same at 10 NFE on grids fitted" in md
    # and over independent replicate pairs, on the default and the fitted grid
    rep = tg["replicated"]
    assert rep["replicates"] == 3 and set(rep["sw2"]) == {"euler_200", "unipc default", "unipc fitted"}
    assert all(len(v) == 3 and all(x > 0 for x in v) for v in rep["sw2"].values())
    assert len(set(rep["sw2"]["euler_200"])) == 3  # independent pairs: different values
    rows = {r["grid"]: r for r in res["checks"]["a_replicated"]}
    assert set(rows) == {"default", "fitted"}
    for r in rows.values():
        assert r["ratio"] == pytest.approx(sum(rep["sw2"][f"unipc {r['grid']}"]) / sum(rep["sw2"]["euler_200"]))
        assert r["ratio_ci"][0] <= r["ratio"] <= r["ratio_ci"][1]
    assert "(a'') Target (a) over 3 independent replicate pairs" in md


def test_multi_stage_samplers_spend_the_nfe_budget():
    """The tables give every sampler its NFE budget through polydiff.samplers.for_budget: singlestep
    DPM-Solver spends all of it (per-step orders, recorded), Heun the most whole steps."""
    target = bench.Target(2, "vp_discrete", bench.make_mixture(2), bench.make_process("vp_discrete"))
    cfg = bench.Config(nfe=(5, 10), samples=200, replicates=2, path_steps=20, reference_steps=20, projections=16,
                       log=lambda msg: None)
    out = bench.accuracy(target, cfg, ["dpm_solver3", "dpm_solver2", "heun"])
    s3, s2, heun = (out["samplers"][k]["runs"] for k in ("dpm_solver3", "dpm_solver2", "heun"))
    assert [r["nfe"] for r in s3] == [r["nfe"] for r in s2] == [5, 10]
    assert [r["orders"] for r in s3] == [[3, 1, 1], [3, 3, 3, 1]] and [r["steps"] for r in s3] == [3, 4]
    assert [r["grid"] for r in s3] == ["uniform_t", "quadratic"]  # the plan's default at 3 and 4 steps
    assert [r["nfe"] for r in heun] == [4, 10] and "orders" not in heun[0]


@pytest.mark.parametrize("nfe", [5, 6, 7])
def test_budget_orders_are_diffusers_lower_order_final(nfe):
    """Singlestep DPM-Solver-2 on an NFE budget (for_budget's orders, stages='grid') is diffusers'
    DPMSolverSinglestepScheduler with lower_order_final=True: the same samples."""
    pytest.importorskip("diffusers", reason="diffusers is a bench-only dependency (pip install polydiff[bench])")
    from diffusers.utils import logging as dlog

    dlog.set_verbosity_error()
    spec = next(s for s in bench.diffusers_specs() if s.algorithm == "dpm_solver2")
    spec = dataclasses.replace(spec, config={**spec.config, "lower_order_final": True}, steps_for_nfe=lambda n: n)
    proc, gmm = bench._family_process(spec), bench.make_mixture(2)
    sched = bench._scheduler(spec)
    bench._set(sched, spec, nfe)
    grid = bench.diffusers_grid(sched, spec)
    assert grid.shape[0] == nfe + 1  # one timestep per model call
    x0 = bench.Target(2, spec.family, gmm, proc).exact(1000, float(grid[0]), 303).float()
    plan = for_budget("dpm_solver2", nfe, stages="grid")
    ours = bench.run_ours(proc, gmm, "dpm_solver2", x0, grid=grid, torch_rng=True, stages="grid",
                          orders=plan["orders"])
    theirs = bench.run_diffusers(spec, gmm, proc, x0, nfe)
    assert ours.nfe == theirs.nfe == nfe
    diff = ((ours.x.double() - theirs.x.double()) ** 2).mean(1).sqrt()
    assert float(diff.quantile(0.99)) < 1e-4 * max(1.0, float(theirs.x.abs().max())), float(diff.quantile(0.99))
    if nfe % 2 == 0:  # every step second order (no orders given) is not what diffusers does there
        plain = bench.run_ours(proc, gmm, "dpm_solver2", x0, grid=grid, torch_rng=True, stages="grid")
        assert plain.nfe == nfe and float((plain.x - theirs.x).abs().max()) > 1e-3
