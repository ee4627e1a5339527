"""Reliability benchmark: a memory soak of training and sampling, and the reader fuzz suite.

    python bench/reliability.py                    # 3 recipes x 4 minutes of soak, then the fuzz suite
    python bench/reliability.py --minutes 1        # shorter soak
    python bench/reliability.py --skip fuzz        # soak only

1. **Soak.** For each recipe (the toy mixture, GDSS on the embedded community-small graphs, TSDiff
   on the embedded AR series), one process repeats cycles of: train a few more steps (resuming
   the same run), load the checkpoint, stream samples to a folder in three chunks as ``polydiff
   sample`` does, read them back and evaluate them, for a fixed wall time, sampling its
   resident memory (RSS) after every cycle. A leak grows RSS cycle after cycle; RSS also swings
   by tens of MiB between cycles (allocator pools), so the report states the growth as the
   median RSS of the last quarter of the cycles minus that of the first quarter, against the
   bound ``max(64 MiB, 10% of the warm RSS)`` (warm: after the first cycle, once imports,
   caches and pools are set up), the maximum, and a least-squares slope of RSS per cycle.
2. **Fuzz.** The reader fuzz suite (``tests/fuzz``) with ``POLYDIFF_FUZZ_EXAMPLES`` examples per
   reader (default 200 here, against the suite's CI default), reporting per reader how many
   inputs were tried and the outcome.

Writes ``bench/results/reliability.json`` and ``bench/results/reliability.md``, headed by the
exact command, the commit and the environment.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, ROOT, command_line, environment, header, rss_mib, write_results

RECIPES: dict[str, dict[str, Any]] = {
    "toy": {"recipe": "configs/toy/gmm.yaml", "steps": 100, "num": 500,
            "set": ["model.hidden=64", "train.checkpoint_every=100"]},
    "graphs": {"recipe": "configs/graphs/community_small_gdss.yaml", "steps": 10, "num": 8,
               "set": ["data.name=community_small", "data.max_feat_num=null", "train.checkpoint_every=10",
                       "sample.steps=50"]},
    "timeseries": {"recipe": "configs/timeseries/tsdiff_ar.yaml", "steps": 20, "num": 32,
                   "set": ["train.checkpoint_every=20", "sample.steps=20"]},
}


def soak_one(name: str, minutes: float, work: Path) -> dict[str, Any]:
    """Cycles of train / load / generate / write / read / evaluate for ``minutes``; RSS per cycle."""
    import torch

    import polydiff

    torch.set_num_threads(1)
    spec = RECIPES[name]
    out = work / name
    cycles: list[dict[str, float]] = []
    t_end = time.monotonic() + 60 * minutes
    step = 0
    while time.monotonic() < t_end or len(cycles) < 3:
        t0 = time.perf_counter()
        step += spec["steps"]
        overrides = [*spec["set"], f"train.max_steps={step}", "train.progress=false", "train.logger=none"]
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
    return {"recipe": spec["recipe"], "minutes": minutes, "cycles": cycles, "warm_rss_mib": warm,
            "early_rss_mib": early, "late_rss_mib": late, "final_rss_mib": rss[-1], "max_rss_mib": max(rss),
            "growth_mib": growth, "slope_mib_per_cycle": slope, "bound_mib": bound,
            "ok": growth <= bound and max(rss) - warm <= 2 * bound}


def soak(minutes: float) -> dict[str, Any]:
    """Every recipe's soak in its own process (so their memory does not mix)."""
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in RECIPES:
            print(f"soak {name} ({minutes} min)", file=sys.stderr, flush=True)
            res_file = Path(tmp) / f"{name}.json"
            code = (f"import json, sys; sys.path.insert(0, {str(ROOT / 'bench')!r}); import reliability as r; "
                    f"from pathlib import Path; res = r.soak_one({name!r}, {minutes!r}, Path({tmp!r})); "
                    f"Path({str(res_file)!r}).write_text(json.dumps(res))")
            done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"})
            out[name] = json.loads(res_file.read_text()) if done.returncode == 0 and res_file.is_file() else \
                {"error": f"exit status {done.returncode}", "ok": False}
    return out


def fuzz(examples: int) -> dict[str, Any]:
    """The reader fuzz suite with ``examples`` inputs per reader; per-reader counts from its report."""
    report = RESULTS / ".fuzz-report.json"
    report.unlink(missing_ok=True)
    env = {**os.environ, "POLYDIFF_FUZZ_EXAMPLES": str(examples), "POLYDIFF_FUZZ_REPORT": str(report),
           "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/fuzz"], cwd=ROOT,
                          env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    readers = json.loads(report.read_text()) if report.is_file() else {}
    report.unlink(missing_ok=True)
    tail = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr.strip()[-300:]
    return {"examples_per_reader": examples, "exit_status": done.returncode, "summary": tail, "seconds": seconds,
            "readers": readers, "ok": done.returncode == 0}


def to_markdown(res: dict[str, Any]) -> str:
    lines = header("Reliability: memory soak and reader fuzzing", res["environment"])
    if "soak" in res:
        lines += ["## Soak: train / load / generate / write / read / evaluate cycles", "",
                  "| recipe | minutes | cycles | steps | warm RSS | first quarter | last quarter | max RSS | growth | "
                  "slope per cycle | bound | result |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for name, r in res["soak"].items():
            if "error" in r:
                lines.append(f"| {name} | | | | | | | | | | | FAIL ({r['error']}) |")
                continue
            lines.append(f"| {name} (`{r['recipe']}`) | {r['minutes']} | {len(r['cycles'])} | "
                         f"{r['cycles'][-1]['step']} | {r['warm_rss_mib']:.0f} MiB | {r['early_rss_mib']:.0f} MiB | "
                         f"{r['late_rss_mib']:.0f} MiB | "
                         f"{r['max_rss_mib']:.0f} MiB | {r['growth_mib']:+.1f} MiB | "
                         f"{r['slope_mib_per_cycle']:+.2f} MiB | {r['bound_mib']:.0f} MiB | "
                         f"{'pass' if r['ok'] else 'FAIL'} |")
        lines += ["", "Warm RSS: after the first cycle (imports, caches and allocator pools are set up then). RSS "
                  "swings by tens of MiB between cycles (allocator pools), so growth is the median RSS of the last "
                  "quarter of the cycles minus that of the first quarter; slope: least-squares RSS per cycle. Pass: "
                  "growth within the bound max(64 MiB, 10% of warm) and max RSS within twice the bound of warm.", ""]
    if "fuzz" in res:
        f = res["fuzz"]
        lines += ["## Fuzzing the readers", "",
                  f"`POLYDIFF_FUZZ_EXAMPLES={f['examples_per_reader']} pytest tests/fuzz`: {f['summary']} "
                  f"({f['seconds']:.0f} s, {'pass' if f['ok'] else 'FAIL'}).", ""]
        if f["readers"]:
            lines += ["| reader | inputs | read fine | typed error naming the file | warned about dropped records |",
                      "|---|---|---|---|---|"]
            for name, r in sorted(f["readers"].items()):
                lines.append(f"| {name} | {r.get('examples', '')} | {r.get('ok', '')} | {r.get('errors', '')} | "
                             f"{r.get('warned', '')} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=4.0, help="soak time per recipe (default 4)")
    p.add_argument("--examples", type=int, default=200, help="fuzz inputs per reader (default 200)")
    p.add_argument("--skip", action="append", default=[], choices=["soak", "fuzz"])
    p.add_argument("--json", type=Path, default=RESULTS / "reliability.json")
    p.add_argument("--md", type=Path, default=RESULTS / "reliability.md")
    args = p.parse_args(argv)
    if args.minutes <= 0 or args.examples < 1:
        p.error("--minutes must be positive and --examples at least 1")
    res: dict[str, Any] = {"environment": environment(command_line("reliability.py", argv))}
    if "soak" not in args.skip:
        res["soak"] = soak(args.minutes)
    if "fuzz" not in args.skip:
        res["fuzz"] = fuzz(args.examples)
    md = to_markdown(res)
    write_results(args.json, args.md, res, md)
    print(md)
    return 0 if all(v.get("ok", True) for k, v in res.items() if k in ("fuzz",)) and all(
        r.get("ok") for r in res.get("soak", {}).values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
