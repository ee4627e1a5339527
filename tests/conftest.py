"""Shared test fixtures."""

import atexit
import importlib.util
import os
import shutil
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

# listings are cached (polydiff.files.cache_dir): tests, and the processes they start, use a
# fresh cache of their own instead of the user's
os.environ["POLYDIFF_CACHE_DIR"] = tempfile.mkdtemp(prefix="polydiff-test-cache-")
atexit.register(shutil.rmtree, os.environ["POLYDIFF_CACHE_DIR"], True)


BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture
def bench_module(monkeypatch):
    """A loader of ``bench/<name>.py`` as a fresh module, with ``bench/`` on ``sys.path`` for
    this test only and the benchmark modules already imported (``common``, the ``*_reference``
    harnesses) imported afresh, so that environment variables the test set first (a missing
    reference venv or checkout) are read."""
    monkeypatch.setattr(sys, "path", [str(BENCH), *sys.path])
    for name, mod in list(sys.modules.items()):
        if str(getattr(mod, "__file__", None) or "").startswith(str(BENCH)):
            monkeypatch.delitem(sys.modules, name)

    def load(name: str):
        spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        monkeypatch.setitem(sys.modules, spec.name, mod)  # dataclasses look their module up there
        spec.loader.exec_module(mod)
        return mod

    return load


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op torch thread for a module of many small-tensor calls: faster, and immune to
    the spin-waits of a busy machine's oversubscribed threads. Use with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def host_reads_forbidden(monkeypatch):
    """A context manager under which reading a tensor back to the host (``.item()``,
    ``.tolist()``, ``bool()``, ``float()``, ``int()``) raises: samplers' steps must not sync."""

    def refuse(*args, **kwargs):
        raise AssertionError("a step read a tensor back to the host")

    @contextmanager
    def forbid():
        with monkeypatch.context() as m:
            for attr in ("item", "tolist", "__bool__", "__float__", "__int__"):
                m.setattr(torch.Tensor, attr, refuse)
            yield

    return forbid
