"""Run the full sampler benchmark and write bench/results/samplers.json and samplers.md.

    python bench/samplers.py            # full run (about 20-30 minutes on 2 CPU cores)
    python bench/samplers.py --quick    # CI smoke configuration (under a minute)

Any option of ``polydiff bench samplers`` is passed through; ``--json`` / ``--md`` default to
the files under bench/results/. The implementation is :mod:`polydiff.benchmarks.samplers`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from polydiff.benchmarks.samplers import main

RESULTS = Path(__file__).resolve().parent / "results"


def _default_args(argv: list[str]) -> list[str]:
    """``argv`` plus ``--json`` / ``--md`` pointing into bench/results (relative to the cwd)."""
    out = list(argv)
    for flag, name in (("--json", "samplers.json"), ("--md", "samplers.md")):
        if flag not in out:
            out += [flag, os.path.relpath(RESULTS / name)]
    return out


if __name__ == "__main__":
    raise SystemExit(main(_default_args(sys.argv[1:])))
