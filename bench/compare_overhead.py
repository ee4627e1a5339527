"""Compare the per-step overhead of two sampler-benchmark runs (e.g. before and after a change).

    python bench/compare_overhead.py OLD.json NEW.json --md out.md --json out.json

Both files are ``bench/samplers.py`` results. For every diffusers comparison row present in both
(algorithm, scheduler, process family, dimension, NFE), the overhead ratio ours / diffusers of
each run is read, and the change is ``new ratio / old ratio``: 1 means the same per-step
overhead relative to diffusers, measured interleaved with diffusers within each run (so load on
the machine affects both sides of each ratio alike). Reported: the median and geometric mean of
the change over all rows and per algorithm, the rows within 1.10x diffusers in each run, the
error and same-maths checks of the new run, and the largest changes.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _rows(result: dict[str, Any]) -> dict[tuple, dict[str, Any]]:
    return {(r["algorithm"], r["scheduler"], r["family"], r["dim"], r["nfe"]): r for r in result["checks"]["b"]}


def _geomean(v: Sequence[float]) -> float:
    return math.exp(sum(math.log(x) for x in v) / len(v))


def compare(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Per-row and summary changes of the overhead ratio between two benchmark results."""
    o, n = _rows(old), _rows(new)
    keys = [k for k in o if k in n]
    if not keys:
        raise ValueError("the two results share no diffusers comparison row")
    rows = [{"algorithm": k[0], "scheduler": k[1], "family": k[2], "dim": k[3], "nfe": k[4],
             "old": o[k]["overhead_ratio"], "new": n[k]["overhead_ratio"],
             "change": n[k]["overhead_ratio"] / o[k]["overhead_ratio"]} for k in keys]
    per_alg = {}
    for a in sorted({r["algorithm"] for r in rows}):
        ch = [r["change"] for r in rows if r["algorithm"] == a]
        per_alg[a] = {"rows": len(ch), "median_change": statistics.median(ch), "geomean_change": _geomean(ch)}
    changes = [r["change"] for r in rows]
    return {"rows": len(rows), "median_change": statistics.median(changes), "geomean_change": _geomean(changes),
            "old_within_1.10": sum(o[k]["overhead_ok"] for k in keys),
            "new_within_1.10": sum(n[k]["overhead_ok"] for k in keys),
            "new_error_ok": sum(n[k]["error_ok"] for k in keys),
            "new_equivalence": new["checks"].get("b_equivalence_status"),
            "per_algorithm": per_alg, "largest": sorted(rows, key=lambda r: -r["change"])[:8], "all": rows,
            "commands": {"old": old["environment"].get("command"), "new": new["environment"].get("command")}}


def to_markdown(c: dict[str, Any], title: str) -> str:
    lines = [f"# {title}", "", f"- old: `{c['commands']['old']}`", f"- new: `{c['commands']['new']}`", "",
             f"Rows compared: {c['rows']}. Change of the overhead ratio ours / diffusers, new / old: median "
             f"**{c['median_change']:.3f}**, geometric mean **{c['geomean_change']:.3f}**. Rows within 1.10x "
             f"diffusers: old {c['old_within_1.10']}, new {c['new_within_1.10']}. New run: error no worse than "
             f"diffusers in {c['new_error_ok']} rows, same-maths check {c['new_equivalence']}.", "",
             "| algorithm | rows | median change | geometric mean |", "|---|---|---|---|"]
    lines += [f"| {a} | {v['rows']} | {v['median_change']:.3f} | {v['geomean_change']:.3f} |"
              for a, v in c["per_algorithm"].items()]
    lines += ["", "Largest changes:", "", "| algorithm | scheduler | d | NFE | old | new | change |",
              "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['algorithm']} | {r['scheduler']} | {r['dim']} | {r['nfe']} | {r['old']:.3f} | {r['new']:.3f} | "
              f"{r['change']:.3f} |" for r in c["largest"]]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("old", type=Path)
    p.add_argument("new", type=Path)
    p.add_argument("--md", type=Path)
    p.add_argument("--json", type=Path)
    p.add_argument("--title", default="Sampler overhead: new against old")
    args = p.parse_args(argv)
    c = compare(json.loads(args.old.read_text()), json.loads(args.new.read_text()))
    md = to_markdown(c, args.title)
    if args.md:
        args.md.write_text(md)
    if args.json:
        args.json.write_text(json.dumps({k: v for k, v in c.items() if k != "all"} | {"rows_detail": c["all"]},
                                        indent=1))
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
