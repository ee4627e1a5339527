"""bench/molecules_md.py's speed part against ScoreMD's own code: our training steps (without and
with the Fokker-Planck penalty), i.i.d. sampling and Langevin dynamics are timed, a missing
ScoreMD reference is reported as such (never a made-up ratio), and running only this part keeps
the published results of the FP study."""

from __future__ import annotations

BUDGET = {"rounds": 2, "warmup": 1, "steps": 1, "ref_epochs": 1, "batch": 8, "num": 8, "sample_steps": 2,
          "sample_repeats": 1, "chains": 2, "langevin_steps": 4, "every": 2, "dt": 1e-2, "friction": 1.0,
          "fp_weight": 1e-4, "threads": 1, "default_hidden": 92, "default_sample_steps": 4,
          "data": {"name": "muller_brown", "n": 64, "test": 64}}


def test_speed_part_times_ours_and_says_when_the_scoremd_reference_is_missing(tmp_path, monkeypatch, bench_module):
    monkeypatch.setenv("SCOREMD_VENV", str(tmp_path / "no_venv"))
    monkeypatch.setenv("SCOREMD_REF", str(tmp_path / "no_checkout"))
    bench = bench_module("molecules_md")

    res = bench.speed(BUDGET, tmp_path)
    assert all(res[who] == [] for who in bench.SPEED_REFS) and "missing" in res["scoremd_missing"]
    assert len(res["ours"]) == 1  # no second round without the reference
    ours = res["ours"][0]
    assert all(ours[key] > 0 for key in bench.OUR_TIMINGS)  # training variants, eager and compiled
    assert all(ours[f"{key[:-2]}_first_s"] > 0 for key in bench.OUR_TIMINGS if "compiled" in key)
    assert all(len(ours[f"{key}_all"]) == BUDGET["steps"] for key in bench.TRAIN_VARIANTS)
    assert ours["model"] == {"name": "mlp", "hidden": 128, "layers": 3} and ours["params"] > 100_000
    assert res["summary"] and all(v["scoremd"] is None and v["ratio"] is None for v in res["summary"].values())
    text = "\n".join(bench.speed_section({**res, "budget": BUDGET, "command": "c"}))
    assert "## Speed against ScoreMD's own code" in text
    assert "Not measured: ScoreMD's reference is missing" in text

    ref = bench_module("scoremd_reference")
    width = ref.equal_params_width(ours["params"])  # ScoreMD's 3-layer energy MLP at about our parameter count
    assert abs(2 * width * width + 10 * width + 1 - ours["params"]) < 0.01 * ours["params"]


def test_running_only_the_speed_part_keeps_the_fp_study(bench_module):
    bench = bench_module("molecules_md")
    previous = {"environment": {"commit": "old"}, "quick": False, "systems": {"muller_brown": {}}, "speed": {"v": 1}}
    res = bench.combine(previous, {"environment": {"commit": "new"}, "speed": {"v": 2}}, ["speed"])
    assert res["systems"] == {"muller_brown": {}} and res["environment"]["commit"] == "old" and res["speed"] == {"v": 2}
    res = bench.combine(previous, {"environment": {"commit": "new"}, "systems": {"alanine": {}}}, ["md"])
    assert res["systems"] == {"alanine": {}} and res["environment"]["commit"] == "new" and res["speed"] == {"v": 1}
    alone = {"environment": {}, "speed": {"v": 3}}  # no previous results
    assert bench.combine({}, alone, ["speed"]) == alone


def test_study_arms_include_the_log_density_form(bench_module):
    """The FP study runs the [t_min, 0.05] normalised family with both residual forms, labels
    them apart and passes the form to the calibration's penalty."""
    bench = bench_module("molecules_md")
    arms = {a["key"]: a for a in bench.arm_specs(1e-3, legacy=False)}
    ld = [a for a in arms.values() if a["fp"].get("fp_residual") == "log_density"]
    assert [a["ratio"] for a in ld] == list(bench.LD_RATIOS) and all(a["key"] in bench.SEED_ARMS for a in ld)
    assert ld[0]["fp"]["fp_t_range"] == arms["fp0.1_t0.05n"]["fp"]["fp_t_range"]
    score = bench.arm_label({**arms["fp0.1_t0.05n"], "weight": 0.5}, 1e-3)
    assert "log-density" in bench.arm_label({**ld[0], "weight": 0.5}, 1e-3) and "log-density" not in score
    assert bench._penalty_options(ld[0]["fp"])["residual"] == "log_density"
    assert bench._penalty_options(None)["residual"] == "score"
