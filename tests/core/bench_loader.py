"""The sampler benchmark script (bench/samplers.py) loaded as a module by path, once per session."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "samplers.py"


def load_bench() -> ModuleType:
    """The benchmark script as a module (registered before it runs: its dataclasses need it)."""
    name = "bench_samplers"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    try:
        spec.loader.exec_module(mod)
    except BaseException:
        del sys.modules[name]
        raise
    return mod
