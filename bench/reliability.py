"""Reliability benchmark: a memory soak of training and sampling, and the reader fuzz suite.

    python bench/reliability.py                    # 10 recipes x 4 minutes of soak, then the fuzz suite
    python bench/reliability.py --minutes 1        # shorter soak
    python bench/reliability.py --recipes toy,md   # soak some recipes only (the names below)
    python bench/reliability.py --skip fuzz        # soak only

1. **Soak.** One main recipe per modality (``RECIPES``), each shrunk by ``--set`` overrides
   (smaller network, data, batch and sampling steps; the recipe's architecture and process kept)
   so that one cycle takes about 5-20 s on one thread (timeseries longer: its evaluation trains
   the discriminative, predictive and context-FID networks, 300 steps each, every cycle):

   - ``toy``: the Gaussian mixture; ``graphs``: GDSS on the embedded community-small graphs;
     ``timeseries``: TSDiff on the embedded AR series;
   - ``molecules``: flow matching with a GVP network on the embedded 3-D molecules (``flow.yaml``);
   - ``proteins``: SE(3) flow over backbone frames, IPA network, synthetic backbones (``frames.yaml``);
   - ``crystals``: the periodic representation (``periodic.yaml``: torus / lattice / element flows,
     periodic message passing), not DiffCrysGen's matrix: its crystals have varying atom counts,
     masks and neighbour lists, the varying shapes whose allocator churn a soak is for, where the
     matrix is one fixed (136, 3) array per crystal under a U-Net, as fixed-shape as toy's and
     timeseries' tensors already soaked here;
   - ``text``: MDLM on the embedded SMILES (``smiles_mdlm.yaml``);
   - ``audio``: SoundCTM's caption-conditioned EDM teacher on log-mel spectrograms of the embedded
     sound events (``sound_teacher.yaml``), not the chorales: it takes the continuous path (U-Net,
     WAV files written and read back, the classifier behind the metrics), where the chorales'
     token model is one more masked discrete model like text's; sampled unconditionally (the
     recipe's caption dropout), so there is no caption agreement among its metrics;
   - ``policies``: BESO on 2-D goal reaching (``reach_beso.yaml``);
   - ``md``: energy-based diffusion on the Mueller-Brown potential (``configs/md/muller_brown.yaml``,
     the ``md`` modality of the molecules plugin).

   For each recipe, one process (one torch thread, ``train.threads=1``) repeats cycles of: train
   a few more steps (resuming the same run), load the checkpoint (``polydiff.load``), stream
   samples to a folder in three chunks as ``polydiff sample`` does (``Generator.generate_to``),
   read the folder back (``modality.read``) and evaluate it (``Generator.evaluate``, against the
   recipe's reference split), for a fixed wall time (at least 3 cycles), sampling its resident
   memory (RSS) after every cycle. The cycle is the same for every modality, through that public
   API only: a policies sample is a rollout of the policy in its environment (``num`` episodes in
   ``rollouts.npz``), evaluated against the held-out demonstrations; an md sample is a
   configuration, evaluated against the MCMC reference samples; no modality needs a special case.
   A leak grows RSS cycle after cycle; RSS also swings by tens of MiB between cycles (allocator
   pools), so the report states the growth as the median RSS of the last quarter of the cycles
   minus that of the first quarter, against the bound ``max(64 MiB, 10% of the warm RSS)`` (warm:
   after the first cycle, once imports, caches and pools are set up), the maximum, and a
   least-squares slope of RSS per cycle.
2. **Fuzz.** Every reader fuzz test: the ``test_fuzz_*`` test functions of the core's suite
   (``tests/fuzz``) and of the plugins' own test folders (``tests/<plugin>/``), with
   ``POLYDIFF_FUZZ_EXAMPLES`` examples per reader (default 200 here, against the tests' CI
   defaults), reporting per reader how many inputs were tried and the outcome. The other tests
   in ``tests/fuzz`` test the harness itself (that it catches bad readers within its default
   number of examples, so they fail under a small ``--examples``): they run with the test suite,
   not here. The tests are selected by node id (:func:`fuzz_tests` finds the ``test_fuzz_*``
   functions with ``ast``), not by ``pytest tests -k test_fuzz``: ``-k`` matches substrings of any
   name (module, class, parameters) and imports every test module, so one module that does not
   import would stop the run. Each test's readers are collected in a report of their own (a
   pytest plugin, the hooks below), so two tests that name a reader alike (e.g. one test's
   parametrisations) keep a row each.

Writes ``bench/results/reliability.json`` and ``bench/results/reliability.md``, headed by the
exact command, the commit and the environment.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, ROOT, command_line, environment, header, rss_mib, write_results

# name -> recipe, training steps added per cycle, samples per cycle (policies: rollouts), and the
# overrides that shrink it; every cycle adds train.threads=1 (one thread), the step count and no logging
RECIPES: dict[str, dict[str, Any]] = {
    "toy": {"recipe": "configs/toy/gmm.yaml", "steps": 100, "num": 500,
            "set": ["model.hidden=64", "train.checkpoint_every=100"]},
    "graphs": {"recipe": "configs/graphs/community_small_gdss.yaml", "steps": 10, "num": 8,
               "set": ["data.name=community_small", "data.max_feat_num=null", "train.checkpoint_every=10",
                       "sample.steps=50"]},
    "timeseries": {"recipe": "configs/timeseries/tsdiff_ar.yaml", "steps": 20, "num": 32,
                   "set": ["train.checkpoint_every=20", "sample.steps=20"]},
    "molecules": {"recipe": "configs/molecules/flow.yaml", "steps": 10, "num": 12,
                  "set": ["model.hidden=64", "model.vectors=8", "model.layers=3", "train.batch_size=16",
                          "train.checkpoint_every=10", "sample.steps=20"]},
    "proteins": {"recipe": "configs/proteins/frames.yaml", "steps": 5, "num": 6,
                 "set": ["data.n=40", "data.max_length=60", "data.test=8", "model.dim=48", "model.pair_dim=16",
                         "model.blocks=3", "train.batch_size=8", "train.checkpoint_every=5", "sample.steps=20"]},
    "crystals": {"recipe": "configs/crystals/periodic.yaml", "steps": 10, "num": 6,
                 "set": ["data.n=400", "model.hidden=48", "model.layers=2", "train.checkpoint_every=10",
                         "sample.steps=20"]},
    "text": {"recipe": "configs/text/smiles_mdlm.yaml", "steps": 20, "num": 48,
             "set": ["model.dim=64", "model.depth=2", "train.batch_size=32", "train.checkpoint_every=20",
                     "sample.steps=32"]},
    "audio": {"recipe": "configs/audio/sound_teacher.yaml", "steps": 5, "num": 6,
              "set": ["data.n=160", "data.evaluator={n: 480, steps: 150}", "model.channels=[32, 64]",
                      "model.emb_dim=64", "train.batch_size=16", "train.checkpoint_every=5", "sample.steps=10"]},
    "policies": {"recipe": "configs/policies/reach_beso.yaml", "steps": 30, "num": 48,
                 "set": ["data.episodes=100", "train.batch_size=64", "train.checkpoint_every=30"]},
    "md": {"recipe": "configs/md/muller_brown.yaml", "steps": 20, "num": 3000,
           "set": ["data.n=4000", "data.test=4000", "model.hidden=64", "train.batch_size=128",
                   "train.checkpoint_every=20", "sample.steps=20"]},
}


def soak_one(name: str, minutes: float, work: Path) -> dict[str, Any]:
    """Cycles of train / load / generate / write / read / evaluate for ``minutes``; RSS per cycle."""
    import torch

    import polydiff

    torch.set_num_threads(1)
    spec = RECIPES[name]
    out = work / name
    cycles: list[dict[str, Any]] = []
    t_end = time.monotonic() + 60 * minutes
    step = 0
    while time.monotonic() < t_end or len(cycles) < 3:
        t0 = time.perf_counter()
        step += spec["steps"]
        overrides = [*spec["set"], "train.threads=1", f"train.max_steps={step}", "train.progress=false",
                     "train.logger=none"]
        run = polydiff.train(ROOT / spec["recipe"], out, overrides=overrides, verbose=False)
        gen = polydiff.load(run.checkpoint)
        folder = out / "samples"  # streamed as `polydiff sample` does: chunks to samples.partial, merged
        gen.generate_to(folder, spec["num"], seed=len(cycles), batch_size=max(1, spec["num"] // 3), overwrite=True,
                        progress=False)
        back = gen.modality.read(folder)
        metrics = gen.evaluate(back)
        del gen, back
        cycles.append({"cycle": len(cycles), "step": step, "rss_mib": rss_mib("VmRSS"),  # current, not the peak
                       "seconds": time.perf_counter() - t0,
                       "metrics": {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}})
        print(f"  {name}: cycle {len(cycles)} step {step} rss {cycles[-1]['rss_mib']:.0f} MiB "
              f"({cycles[-1]['seconds']:.1f} s)", file=sys.stderr, flush=True)
    warm = cycles[0]["rss_mib"]
    rss = [c["rss_mib"] for c in cycles]
    n = len(rss)
    mean_i, mean_r = (n - 1) / 2, sum(rss) / n
    slope = sum((i - mean_i) * (r - mean_r) for i, r in enumerate(rss)) / max(sum((i - mean_i) ** 2 for i in range(n)),
                                                                           1e-9)
    bound = max(64.0, 0.10 * warm)
    # RSS swings by tens of MiB from cycle to cycle (allocator pools): growth compares the medians of
    # the first and the last quarter of the cycles, and the slope over all of them shows a trend
    q = max(1, n // 4)
    early, late = statistics.median(rss[:q]), statistics.median(rss[-q:])
    growth = late - early
    # seconds per cycle: the median after the first cycle (which also imports, builds and caches data)
    seconds = statistics.median(c["seconds"] for c in cycles[1:]) if n > 1 else cycles[0]["seconds"]
    return {"recipe": spec["recipe"], "overrides": spec["set"], "minutes": minutes, "cycles": cycles,
            "first_cycle_seconds": cycles[0]["seconds"], "seconds_per_cycle": seconds, "warm_rss_mib": warm,
            "early_rss_mib": early, "late_rss_mib": late, "final_rss_mib": rss[-1], "max_rss_mib": max(rss),
            "growth_mib": growth, "slope_mib_per_cycle": slope, "bound_mib": bound,
            "ok": growth <= bound and max(rss) - warm <= 2 * bound}


def soak_child(name: str, minutes: float, work: str, res_file: str) -> None:
    """:func:`soak_one` in the soak's child process: its result, or the error that stopped it, as JSON."""
    try:
        res = soak_one(name, minutes, Path(work))
    except Exception as err:  # reported in the table; the traceback goes to stderr
        traceback.print_exc()
        res = {"error": f"{type(err).__name__}: {err}", "ok": False}
    Path(res_file).write_text(json.dumps(res))


def soak(minutes: float, names: list[str] | None = None) -> dict[str, Any]:
    """Every recipe's soak (``names``: these only) in its own process (so their memory does not mix)."""
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names or list(RECIPES):
            print(f"soak {name} ({minutes} min)", file=sys.stderr, flush=True)
            res_file = Path(tmp) / f"{name}.json"
            code = (f"import sys; sys.path.insert(0, {str(ROOT / 'bench')!r}); import reliability as r; "
                    f"r.soak_child({name!r}, {minutes!r}, {tmp!r}, {str(res_file)!r})")
            done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"})
            out[name] = json.loads(res_file.read_text()) if res_file.is_file() else \
                {"error": f"exit status {done.returncode}", "ok": False}
    return out


FUZZ_PREFIX = "test_fuzz_"
PARTS_ENV = "POLYDIFF_RELIABILITY_FUZZ_PARTS"
"""Set by :func:`fuzz` for its pytest run: the folder where the plugin below keeps each test's report."""


def fuzz_tests(root: Path = ROOT) -> list[str]:
    """Pytest node ids of the reader fuzz tests: in every test file under ``tests/`` (``tests/fuzz``
    and the plugins' folders), each ``test_fuzz_*`` function (or method of a ``Test*`` class); a
    file that does not parse is given whole, so that pytest reports its error."""
    ids = []
    for path in sorted((root / "tests").rglob("test_*.py")):
        rel = path.relative_to(root).as_posix()
        text = path.read_text(errors="replace")
        if FUZZ_PREFIX not in text:
            continue
        try:
            tree = ast.parse(text)
        except SyntaxError:
            ids.append(rel)
            continue
        funcs = (ast.FunctionDef, ast.AsyncFunctionDef)
        for node in tree.body:
            if isinstance(node, funcs) and node.name.startswith(FUZZ_PREFIX):
                ids.append(f"{rel}::{node.name}")
            elif isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
                ids += [f"{rel}::{node.name}::{f.name}" for f in node.body
                        if isinstance(f, funcs) and f.name.startswith(FUZZ_PREFIX)]
    return ids


# -- a pytest plugin (``-p reliability``) for the fuzz run: each test's readers in a report of their own
def pytest_runtest_setup(item: Any) -> None:
    if os.environ.get(PARTS_ENV):
        from polydiff.fuzz import REPORT_ENV

        os.environ[REPORT_ENV] = str(Path(os.environ[PARTS_ENV]) / "test.json")


def pytest_runtest_teardown(item: Any, nextitem: Any) -> None:
    """Add the test's readers to ``readers.json`` with the test's node id; a reader name another
    test reported already gets the node id in its name (the per-test report would overwrite it)."""
    if not os.environ.get(PARTS_ENV):
        return
    folder = Path(os.environ[PARTS_ENV])
    part, merged_file = folder / "test.json", folder / "readers.json"
    if not part.is_file():
        return
    merged = json.loads(merged_file.read_text()) if merged_file.is_file() else {}
    for reader, counts in json.loads(part.read_text()).items():
        merged[reader if reader not in merged else f"{reader} ({item.nodeid})"] = {**counts, "test": item.nodeid}
    merged_file.write_text(json.dumps(merged, indent=1))
    part.unlink()


def fuzz(examples: int) -> dict[str, Any]:
    """The reader fuzz tests (:func:`fuzz_tests`) with ``examples`` inputs per reader; per-reader counts."""
    tests = fuzz_tests()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.pathsep.join(filter(None, [str(ROOT / "bench"), os.environ.get("PYTHONPATH")]))
        env = {**os.environ, "POLYDIFF_FUZZ_EXAMPLES": str(examples), PARTS_ENV: tmp, "PYTHONPATH": path,
               "OMP_NUM_THREADS": "1"}
        env.pop("POLYDIFF_FUZZ_REPORT", None)
        t0 = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "reliability",
                               "--continue-on-collection-errors", *tests], cwd=ROOT, env=env, capture_output=True,
                              text=True)
        seconds = time.perf_counter() - t0
        report = Path(tmp) / "readers.json"
        readers = json.loads(report.read_text()) if report.is_file() else {}
    lines = done.stdout.strip().splitlines()
    tail = lines[-1] if lines else done.stderr.strip()[-300:]
    counts = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed)", tail)}
    problems = [s for s in lines if s.startswith(("FAILED ", "ERROR "))]
    if done.returncode != 0 and not problems:
        problems = (lines or done.stderr.strip().splitlines())[-20:]
    return {"examples_per_reader": examples, "tests": tests, "selected": sum(counts.values()), "counts": counts,
            "exit_status": done.returncode, "summary": tail, "problems": problems, "seconds": seconds,
            "readers": readers, "ok": done.returncode == 0}


def _cell(text: str) -> str:
    """``text`` as one markdown table cell."""
    return " ".join(str(text).split()).replace("|", "\\|")


def to_markdown(res: dict[str, Any]) -> str:
    lines = header("Reliability: memory soak and reader fuzzing", res["environment"])
    if "soak" in res:
        lines += ["## Soak: train / load / generate / write / read / evaluate cycles", "",
                  "| recipe | minutes | cycles | steps | s / cycle | warm RSS | first quarter | last quarter | "
                  "max RSS | growth | slope per cycle | bound | result |", "|---" * 13 + "|"]
        for name, r in res["soak"].items():
            if "error" in r:
                lines.append(f"| {name} | | | | | | | | | | | | FAIL ({_cell(r['error'])[:300]}) |")
                continue
            lines.append(f"| {name} (`{r['recipe']}`) | {r['minutes']} | {len(r['cycles'])} | "
                         f"{r['cycles'][-1]['step']} | {r['seconds_per_cycle']:.1f} | {r['warm_rss_mib']:.0f} MiB | "
                         f"{r['early_rss_mib']:.0f} MiB | {r['late_rss_mib']:.0f} MiB | "
                         f"{r['max_rss_mib']:.0f} MiB | {r['growth_mib']:+.1f} MiB | "
                         f"{r['slope_mib_per_cycle']:+.2f} MiB | {r['bound_mib']:.0f} MiB | "
                         f"{'pass' if r['ok'] else 'FAIL'} |")
        lines += ["", "Each recipe shrunk by the overrides in `RECIPES` (bench/reliability.py), one thread. s / cycle: "
                  "the median seconds per cycle after the first. Warm RSS: after the first cycle (imports, caches and "
                  "allocator pools are set up then). RSS swings by tens of MiB between cycles (allocator pools), so "
                  "growth is the median RSS of the last quarter of the cycles minus that of the first quarter; slope: "
                  "least-squares RSS per cycle. Pass: growth within the bound max(64 MiB, 10% of warm) and max RSS "
                  "within twice the bound of warm.", ""]
    if "fuzz" in res:
        f = res["fuzz"]
        files = sorted({t.split("::")[0] for t in f["tests"]})
        lines += ["## Fuzzing the readers", "",
                  f"`POLYDIFF_FUZZ_EXAMPLES={f['examples_per_reader']} pytest` on the {len(f['tests'])} `test_fuzz_*` "
                  f"functions ({f['selected']} tests with their parameters) of "
                  f"{', '.join(f'`{p}`' for p in files) or 'no test file'}: {f['summary']} "
                  f"({f['seconds']:.0f} s, {'pass' if f['ok'] else 'FAIL'}).", ""]
        if f["problems"]:
            lines += ["```", *f["problems"], "```", ""]
        if f["readers"]:
            lines += ["| reader | inputs | read fine | typed error naming the file | warned about dropped records |",
                      "|---|---|---|---|---|"]
            for name, r in sorted(f["readers"].items()):
                lines.append(f"| {_cell(name)} | {r.get('examples', '')} | {r.get('ok', '')} | {r.get('errors', '')} | "
                             f"{r.get('warned', '')} |")
    return "\n".join(lines) + "\n"


def _recipe_names(text: str) -> list[str]:
    names = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in names if s not in RECIPES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown recipe {', '.join(unknown) or repr(text)}; known: "
                                         f"{', '.join(RECIPES)}")
    return list(dict.fromkeys(names))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=4.0, help="soak time per recipe (default 4)")
    p.add_argument("--recipes", type=_recipe_names, default=list(RECIPES), metavar="NAME[,NAME...]",
                   help=f"the recipes to soak (default: all of {', '.join(RECIPES)})")
    p.add_argument("--examples", type=int, default=200, help="fuzz inputs per reader (default 200)")
    p.add_argument("--skip", action="append", default=[], choices=["soak", "fuzz"])
    p.add_argument("--json", type=Path, default=RESULTS / "reliability.json")
    p.add_argument("--md", type=Path, default=RESULTS / "reliability.md")
    args = p.parse_args(argv)
    if args.minutes <= 0 or args.examples < 1:
        p.error("--minutes must be positive and --examples at least 1")
    res: dict[str, Any] = {"environment": environment(command_line("reliability.py", argv))}
    if "soak" not in args.skip:
        res["soak"] = soak(args.minutes, args.recipes)
    if "fuzz" not in args.skip:
        res["fuzz"] = fuzz(args.examples)
    md = to_markdown(res)
    write_results(args.json, args.md, res, md)
    print(md)
    return 0 if all(v.get("ok", True) for k, v in res.items() if k in ("fuzz",)) and all(
        r.get("ok") for r in res.get("soak", {}).values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
