"""Robot policies: BESO (3 DDIM steps) against a 100-step DDPM diffusion policy and behaviour
cloning, in the reach, blocks and Push-T environments.

Every model is trained with its shipped recipe (``policies:<env>_<beso|ddpm|bc>``: default
against default; ``--steps`` scales the budgets) and rolled out with the recipe's sampling
settings:

- goal-conditioned rollouts from different starts: success rate (Push-T: also Diffusion
  Policy's score, the mean over episodes of max coverage / 0.95), behaviour entropy;
- the same number of rollouts from one start: behaviour entropy of the policy's own choices
  (over every episode that shows a behaviour, successful or not; the successful episodes'
  entropy is reported beside it);
- BESO's goal-free policy (lambda = 0, the same network): the share of goals it reaches;
- the control rate: actions per second of one robot's policy computation (batch 1, this CPU),
  and network evaluations per chunk.

The report states whether each acceptance claim of the issue held: BESO matches the 100-step
policy's success within noise (two standard errors of the difference) at >= 20x fewer network
evaluations; BESO is clearly more multimodal than BC from one start (entropy over all episodes
higher by more than 0.2 bits); the goal-free rollouts reach every goal.

Part ``speed`` (``--envs speed``; once before it ``python bench/beso_reference.py --setup``): the
training step and one robot's control decision against BESO's own code at its block-push size,
interleaved in one run (see ``speed``).

    python bench/policies.py [--envs reach blocks pusht speed] [--steps 1.0] [--rollouts 60] [--quick]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, command_line, environment, header, publish, reference_missing, write_results

import polydiff
from polydiff.plugin import shared_dir

METHODS = ("beso", "ddpm", "bc")
LABELS = {"beso": "BESO (recipe's DDIM steps and lambda)", "ddpm": "DDPM policy (100 steps)", "bc": "BC (MLP)"}


def train(env: str, method: str, scale: float, quick: bool, tmp: Path) -> tuple[str, dict[str, Any]]:
    """Train the shipped recipe; returns the checkpoint and the training cost."""
    from polydiff_policies.modality import PoliciesModality

    recipe = yaml.safe_load(PoliciesModality().recipes()[f"{env}_{method}"].read_text())
    steps = max(10, int(recipe["train"]["max_steps"] * scale))
    if quick:
        steps = 30
        recipe["data"]["episodes"] = 24 if env != "pusht" else 12
    recipe["train"].update(max_steps=steps, checkpoint_every=steps, progress=False, threads=torch.get_num_threads())
    t0 = time.perf_counter()
    run = polydiff.train(recipe, tmp / f"{env}_{method}", fresh=True, verbose=False)
    seconds = time.perf_counter() - t0
    return str(run.checkpoint), {"steps": steps, "train_seconds": seconds, "seconds_per_step": seconds / steps,
                                 "final_loss": run.metrics.get("train/loss")}


def evaluate(ckpt: str, method: str, rollouts: int) -> dict[str, Any]:
    """The rollout metrics of one model (see the module docstring)."""
    gen = polydiff.load(ckpt)
    m = gen.modality
    out: dict[str, Any] = {"conditioned": m.evaluate_model(gen, num=rollouts, seed=1),
                           "same_start": m.evaluate_model(gen, num=rollouts, seed=2, same_start=True)}
    if method == "beso":
        out["goal_free"] = m.evaluate_model(gen, num=rollouts, seed=3, goal_free=True)
        out["lambda_1"] = m.evaluate_model(gen, num=rollouts, seed=1, guidance_scale=1.0)
    return out


def run_env(env: str, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    res: dict[str, Any] = {}
    for method in METHODS:
        print(f"[{env}] training {method} ...", file=sys.stderr, flush=True)
        ckpt, cost = train(env, method, args.steps, args.quick, tmp)
        print(f"[{env}] evaluating {method} ({cost['train_seconds']:.0f} s of training) ...", file=sys.stderr,
              flush=True)
        res[method] = {"train": cost, **evaluate(ckpt, method, args.rollouts)}
    res["checks"] = checks(env, res, args.rollouts)
    return res


def _se(p: float, n: int) -> float:
    return math.sqrt(max(p * (1 - p), 0.25 / n) / n)  # a floor keeps 0 / 1 rates from claiming certainty


def checks(env: str, res: dict[str, Any], n: int) -> dict[str, Any]:
    """The issue's acceptance claims, each with the numbers it rests on."""
    key = "score" if env == "pusht" else "success_rate"  # Push-T: no demonstration reaches 0.95 coverage
    b, d = res["beso"]["conditioned"][key], res["ddpm"]["conditioned"][key]
    noise = 2 * math.hypot(_se(min(max(b, 0), 1), n), _se(min(max(d, 0), 1), n))
    nfe_ratio = res["ddpm"]["conditioned"]["nfe_per_chunk"] / res["beso"]["conditioned"]["nfe_per_chunk"]
    # every episode's behaviour counts, not only the successful ones': on Push-T (success at 0.95
    # coverage is rare) the successful ones are too few to show a choice
    eb = res["beso"]["same_start"].get("behaviour_entropy_all", float("nan"))
    ec = res["bc"]["same_start"].get("behaviour_entropy_all", float("nan"))
    eb = 0.0 if eb != eb else eb
    ec = 0.0 if ec != ec else ec
    cov = res["beso"]["goal_free"].get("goal_coverage", float("nan"))
    return {
        "matches_ddpm": {"metric": key, "beso": b, "ddpm": d, "two_se": noise, "nfe_ratio": nfe_ratio,
                         "held": bool(b >= d - noise and nfe_ratio >= 20)},
        "more_multimodal_than_bc": {"beso_entropy": eb, "bc_entropy": ec, "held": bool(eb > ec + 0.2),
                                    "episodes": "all"},
        "goal_free_covers_all_goals": {"coverage": cov, "held": bool(cov == 1.0)},
    }


# ---------------------------------------------------------------------------------------------
# speed against BESO's own code
# ---------------------------------------------------------------------------------------------

BESO_SIZE = {"dim": 240, "depth": 4, "heads": 12}  # BESO's block-push DiffusionGPT
SPEED = {"full": {"rounds": 3, "steps": 10, "warmup": 2, "batch": 1024, "decisions": 20},
         "quick": {"rounds": 1, "steps": 2, "warmup": 1, "batch": 64, "decisions": 3}}
SPEED_SETUP = "python bench/beso_reference.py --setup"
SHAPES = {"same": {"obs_steps": 5, "horizon": 5, "execute": 1}, "recipe": {}}  # BESO's window; our recipe's chunks


def _our_speed(b: dict[str, Any], shape: dict[str, Any], threads: int, tmp: Path) -> dict[str, Any]:
    """The blocks BESO recipe at BESO's network size with the window ``shape``: ``polydiff.train``
    for ``warmup + steps + 1`` steps at batch ``batch`` (batch start to batch start, the last step,
    which writes the checkpoint, left out); then one robot's control decision
    (``Policy.sample_chunks``, batch 1, 3 DDIM steps without goal guidance, as BESO's block-push
    agent samples), the median of ``decisions`` after two untimed ones."""
    import itertools
    import statistics

    import numpy as np
    from common import batch_clock

    from polydiff_policies.modality import PoliciesModality
    from polydiff_policies.policy import Policy

    recipe = yaml.safe_load(PoliciesModality().recipes()["blocks_beso"].read_text())
    recipe["model"].update(BESO_SIZE)
    recipe["data"].update(episodes=40, **shape)
    total = b["warmup"] + b["steps"] + 1
    recipe["train"].update(max_steps=total, batch_size=b["batch"], checkpoint_every=total, progress=False,
                           logger="none", threads=threads)
    clock = batch_clock()
    run = polydiff.train(recipe, tmp / "speed", fresh=True, callbacks=[clock], verbose=False)
    gen = polydiff.load(run.checkpoint)
    policy = Policy(gen.net, gen.fields, gen.info, guidance_scale=None)  # BESO's DDIM, 3 steps (the default)
    rng = np.random.default_rng(0)
    goal = rng.normal(size=(1, int(gen.info["goal_dim"]))).astype(np.float32)
    times = []
    for k in range(b["decisions"] + 2):
        window = rng.normal(size=(1, policy.obs_steps, int(gen.info["obs_dim"]))).astype(np.float32)
        t0 = time.perf_counter()
        policy.sample_chunks(window, goal, [k])
        times.append(time.perf_counter() - t0)
    wall = [y - x for x, y in itertools.pairwise(clock.wall)][b["warmup"]:]
    return {"train_step_s": statistics.median(wall), "train_step_s_all": wall,
            "decision_s": statistics.median(times[2:]), "decision_s_all": times[2:],
            "actions_per_decision": policy.execute, "nfe_per_decision": policy.nfe,
            "params": sum(p.numel() for p in gen.net.parameters()),
            "tokens": 2 + policy.obs_steps + policy.horizon, "obs_steps": policy.obs_steps, "horizon": policy.horizon}


def speed(quick: bool, threads: int, tmp: Path) -> dict[str, Any]:
    """Ours (BESO's window, and our recipe's chunks) against BESO's code (bench/beso_reference.py
    in its scratch venv), in lockstep: ``rounds`` rounds of one measurement each, the first of a
    round alternating between the two."""
    import statistics

    from beso_reference import REF, VENV, find_reference, measure_beso, venv_python

    b = SPEED["quick" if quick else "full"]
    out: dict[str, Any] = {"budget": b, "threads": threads, "setup": SPEED_SETUP, "beso": [],
                           **{f"ours_{k}": [] for k in SHAPES}}
    for r in range(b["rounds"]):
        for who in (["ours", "beso"] if r % 2 == 0 else ["beso", "ours"]):
            if who == "ours":
                for name, shape in SHAPES.items():
                    out[f"ours_{name}"].append(_our_speed(b, shape, threads, tmp))
                continue
            ref = measure_beso(steps=b["steps"], warmup=b["warmup"], threads=threads, batch=b["batch"],
                               decisions=b["decisions"], seed=r)
            if ref is None:
                out["beso_missing"] = reference_missing("BESO", venv_python(), VENV, REF, find_reference())
                continue
            out["beso"].append(ref)
        print(f"[speed] round {r}: train step ours {out['ours_same'][-1]['train_step_s']:.3f} s, BESO "
              f"{out['beso'][-1]['train_step_s'] if out['beso'] else float('nan'):.3f} s; decision ours "
              f"{out['ours_same'][-1]['decision_s'] * 1e3:.1f} ms, BESO "
              f"{out['beso'][-1]['decision_s'] * 1e3 if out['beso'] else float('nan'):.1f} ms", file=sys.stderr,
              flush=True)
        if "beso_missing" in out:
            break
    med = {who: {k: statistics.median(r[k] for r in out[who]) for k in ("train_step_s", "decision_s")}
           for who in ("beso", "ours_same", "ours_recipe") if out[who]}
    for who in ("ours_same", "ours_recipe"):
        per_action = med[who]["decision_s"] / out[who][0]["actions_per_decision"]
        med[who]["action_s"] = per_action
        if "beso" in med:
            med[who]["ratio"] = {k: med[who][k] / med["beso"][k] for k in ("train_step_s", "decision_s")}
            med[who]["ratio"]["action_s"] = per_action / med["beso"]["decision_s"]
    out["summary"] = med
    return out


def _speed_section(r: dict[str, Any], env: dict[str, Any]) -> list[str]:
    """The report's section on speed against BESO's own code."""
    b = r["budget"]
    lines = ["## Speed against BESO's own code", "",
             f"Command: `{env['command']}` at commit `{env['commit'][:7]}`, {env['date']} (once before it: "
             f"`{r['setup']}`, which exports BESO into /tmp/beso_ref and makes the venv /tmp/beso_venv with the "
             "project's torch 2.13.0; see `bench/beso_reference.py`).", ""]
    if not r["beso"]:
        return [*lines, f"Not measured: {r.get('beso_missing', 'no BESO measurement')}.", ""]
    ref, same, rec = r["beso"][0], r["ours_same"][0], r["ours_recipe"][0]
    s = r["summary"]
    m = ref["model"]
    lines += [
        f"BESO commit {ref['commit'][:12]}: its `BesoAgent` built by hydra from its block-push configuration "
        f"(DiffusionGPT {m['width']} wide, {m['layers']} layers, {m['heads']} heads, window {m['window']}: "
        f"{m['tokens']} tokens; one action per decision). Ours: the `blocks_beso` recipe at the same width, depth and "
        f"heads, with BESO's window (5 observations, 5 actions, one executed: {same['tokens']} tokens) and with the "
        f"recipe's chunks ({rec['obs_steps']} observations, {rec['horizon']} actions, "
        f"{rec['actions_per_decision']} executed: {rec['tokens']} tokens). {r['threads']} thread(s), "
        f"{b['rounds']} round(s) in lockstep, the first of a round alternating. Training: batch {b['batch']} "
        f"(BESO's block-push `train_batch_size` is 1024), {b['warmup']} untimed steps, then the median of "
        f"{b['steps']} (ours: `polydiff.train`, batch start to batch start; BESO: `BesoAgent.train_step`). "
        "A decision: one robot's 3 DDIM steps without goal guidance (BESO: `BesoAgent.predict`, with its "
        f"observation and action queues full; ours: `Policy.sample_chunks`), the median of {b['decisions']}.", "",
        "| | parameters | training step (s) | decision (ms) | actions per decision | ms per executed action |",
        "|---|---|---|---|---|---|",
        f"| BESO (own code) | {ref['params']:,} | {s['beso']['train_step_s']:.3f} | "
        f"{s['beso']['decision_s'] * 1e3:.1f} | 1 | {s['beso']['decision_s'] * 1e3:.1f} |"]
    for key, label in (("ours_same", "polydiff, BESO's window"), ("ours_recipe", "polydiff, recipe's chunks")):
        o, q = r[key][0], s[key]
        rt = q["ratio"]
        lines.append(f"| {label} | {o['params']:,} | {q['train_step_s']:.3f} ({rt['train_step_s']:.2f}x) | "
                     f"{q['decision_s'] * 1e3:.1f} ({rt['decision_s']:.2f}x) | {o['actions_per_decision']} | "
                     f"{q['action_s'] * 1e3:.2f} ({rt['action_s']:.2f}x) |")
    return [*lines, "", "Ratios are ours / BESO's (below 1: faster).", ""]


def _f(v: Any, digits: int = 2) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "n/a"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def markdown(res: dict[str, Any]) -> str:
    lines = header("Robot policies: BESO against a 100-step DDPM policy and behaviour cloning", res["environment"])
    lines += [
        "Each model is trained with its shipped recipe (`policies:<env>_<method>`, default against default) and "
        "rolled out with the recipe's sampling settings. Success: the commanded goal achieved (Push-T: coverage of "
        "the target > 0.95). Behaviour entropy: bits over routes (reach) / push orders (blocks) / first contact side "
        "(Push-T), per goal, of the successful episodes and of all episodes that show a behaviour (a failed "
        "episode has still chosen a route, an order or a side). Actions/s: one robot's policy computation on this CPU "
        "(batch 1). NFE: network evaluations per chunk of 16 actions, 8 executed (guidance doubles the batch, "
        "not the calls).", ""]
    for env, r in res.items():
        if env in ("environment", "speed") or not isinstance(r, dict) or "beso" not in r:
            continue
        if "from" in r:
            lines += [f"## {env}", "", f"(from an earlier run: `{r['from']['command']}` at commit "
                                       f"`{r['from']['commit'][:7]}`, {r['from']['date']})"]
        lines += ([] if "from" in r else [f"## {env}"]) + ["",
                  "| policy | train steps | train s | success | score | behaviour entropy, successful (random starts"
                  " / one start) | behaviour entropy, all episodes (random starts / one start) | behaviour TV to demos "
                  "| NFE / chunk | actions/s |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for m in METHODS:
            c, s, t = r[m]["conditioned"], r[m]["same_start"], r[m]["train"]
            lines.append(f"| {LABELS[m]} | {t['steps']} | {t['train_seconds']:.0f} | {_f(c['success_rate'])} | "
                         f"{_f(c.get('score'))} | {_f(c['behaviour_entropy'])} / {_f(s['behaviour_entropy'])} | "
                         f"{_f(c.get('behaviour_entropy_all'))} / {_f(s.get('behaviour_entropy_all'))} | "
                         f"{_f(c.get('behaviour_tv'))} | {c['nfe_per_chunk']:.0f} | {c['actions_per_second']:.0f} |")
        b = r["beso"]
        lines += ["", f"- demonstrations' behaviour entropy: {_f(b['conditioned'].get('reference_behaviour_entropy'))}"
                      f" bits (all: {_f(b['conditioned'].get('reference_behaviour_entropy_all'))})",
                  f"- BESO without guidance (lambda 1): success {_f(b['lambda_1']['success_rate'])}, score "
                  f"{_f(b['lambda_1'].get('score'))}",
                  f"- BESO goal-free (lambda 0): reached {_f(b['goal_free'].get('goal_coverage'))} of the goals; "
                  f"{_f(b['goal_free']['success_rate'])} of the episodes reached some goal; outcome entropy "
                  f"{_f(b['goal_free']['outcome_entropy'])} bits", ""]
        ck = r["checks"]
        md, mm, gf = ck["matches_ddpm"], ck["more_multimodal_than_bc"], ck["goal_free_covers_all_goals"]
        lines += ["| claim | numbers | held |", "|---|---|---|",
                  f"| BESO matches the 100-step policy within noise at >= 20x fewer NFE | {md['metric']} "
                  f"{_f(md['beso'])} vs {_f(md['ddpm'])} (2 SE {_f(md['two_se'])}), NFE ratio {md['nfe_ratio']:.0f}x | "
                  f"{'yes' if md['held'] else '**no**'} |",
                  f"| BESO clearly more multimodal than BC (one start, {mm.get('episodes', 'successful')} episodes, "
                  "> 0.2 bits more) | "
                  f"{_f(mm['beso_entropy'])} vs {_f(mm['bc_entropy'])} bits | {'yes' if mm['held'] else '**no**'} |",
                  f"| goal-free rollouts reach every goal | coverage {_f(gf['coverage'])} | "
                  f"{'yes' if gf['held'] else '**no**'} |", ""]
    if "pusht_replay" in res:
        rp = res["pusht_replay"]
        lines += ["## Push-T environment fidelity", "",
                  f"Open-loop replay of the {rp['episodes']:.0f} recorded human episodes from their first states: "
                  f"final block position error median {rp['final_block_pos_error_px_median']:.2g} px, p90 "
                  f"{rp['final_block_pos_error_px_p90']:.2g} px, max {rp['final_block_pos_error_px_max']:.2g} px "
                  f"({rp['episodes_off_by_more_than_1px']:.0f} episodes off by more than 1 px); final angle error p90 "
                  f"{rp['final_block_angle_error_rad_p90']:.2g} rad. One step from each recorded state (the 5-D state "
                  f"lacks the block's velocity and contact impulses): block position p90 "
                  f"{rp['step_pd_block_pos_error_px_p90']:.2g} px, angle p90 "
                  f"{rp['step_pd_block_angle_error_rad_p90']:.2g} rad; with the simulator's hidden state carried over: "
                  f"{rp['step_carry_block_pos_error_px_p90']:.2g} px. The recorded episodes end at a median coverage "
                  f"of {rp['recorded_final_coverage_median']:.2f} and a share of "
                  f"{rp.get('recorded_success_fraction', float('nan')):.2f} reaches 0.95, so Push-T success rates at "
                  "0.95 say little; the score is the comparable number.", ""]
    if "speed" in res:
        sp = res["speed"]
        lines += _speed_section(sp, sp.get("from", res["environment"]))
    lines += ["Published numbers: `../shared/REFERENCE.md` lists BESO's and Diffusion Policy's settings but no scores "
              "for these environments; reach and blocks are this project's own CPU tasks, and published Push-T scores "
              "come from GPU training for thousands of epochs, so they are not put beside these CPU-budget runs.", ""]
    return "\n".join(lines)


def _keep_others(res: dict[str, Any], envs: list[str]) -> None:
    """Environments not rerun keep their latest results with their own header, read when writing
    (so two runs of different environments at once do not undo each other)."""
    old = RESULTS / "policies.json"
    prev = json.loads(old.read_text()) if old.is_file() else {}
    for env in ("reach", "blocks", "pusht", "speed"):
        if env not in envs and env in prev:
            res[env] = prev[env] if "from" in prev[env] else {**prev[env], "from": prev["environment"]}
    if "pusht" not in envs and "pusht_replay" in prev:
        res["pusht_replay"] = prev["pusht_replay"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--envs", nargs="+", default=["reach", "blocks", "pusht"],
                   choices=["reach", "blocks", "pusht", "speed"],
                   help="environments to run, and `speed` (against BESO's own code; not run by default)")
    p.add_argument("--steps", type=float, default=1.0, help="scale of the recipes' training steps (default 1)")
    p.add_argument("--rollouts", type=int, default=60, help="rollouts per evaluation (default 60)")
    p.add_argument("--quick", action="store_true", help="tiny runs (a smoke test of this script)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--render", type=Path, metavar="JSON", help="only rewrite the markdown report of a results file")
    args = p.parse_args(argv)
    if args.render is not None:
        res = json.loads(args.render.read_text())
        md = markdown(res)
        write_results(args.render, args.render.with_suffix(".md"), res, md)
        print(md)
        return 0
    torch.set_num_threads(args.threads)
    res: dict[str, Any] = {"environment": environment(command_line("policies.py", argv)),
                           "settings": {"steps_scale": args.steps, "rollouts": args.rollouts, "quick": args.quick}}
    envs = [e for e in args.envs if e != "pusht" or (shared_dir() / "data" / "robot_pusht").is_dir()]
    with tempfile.TemporaryDirectory() as tmp:
        for env in envs:
            res[env] = speed(args.quick, args.threads, Path(tmp)) if env == "speed" else run_env(env, args, Path(tmp))
            if not args.quick:  # keep what is done if a later environment fails
                _keep_others(res, envs)
                write_results(RESULTS / "policies.json", RESULTS / "policies.md", res, markdown(res))
    if not args.quick:
        _keep_others(res, envs)
    if "pusht" in envs:
        from polydiff_policies.envs.pusht import fidelity

        res["pusht_replay"] = fidelity(shared_dir() / "data" / "robot_pusht" / "pusht_cchi_v7_lowdim.npz",
                                       episodes=8 if args.quick else None)
    publish("policies_quick" if args.quick else "policies", res, markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
