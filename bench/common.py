"""What every benchmark report starts with: the exact command, the commit (and whether the work
tree had changes), the machine; and the atomic write of its JSON and markdown results."""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def command_line(script: str, argv: list[str] | None) -> str:
    """The command that reproduces this run, as a user types it."""
    return shlex.join(["python", f"bench/{script}", *(sys.argv[1:] if argv is None else argv)])


def environment(command: str) -> dict[str, Any]:
    """Command, commit, dirty flag, Python / torch versions, CPUs, platform and date."""
    import torch

    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                                capture_output=True, text=True).stdout.strip())
    return {"command": command, "commit": commit, "dirty": dirty, "python": platform.python_version(),
            "torch": torch.__version__, "cpus": os.cpu_count(), "platform": platform.platform(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}


def header(title: str, env: dict[str, Any]) -> list[str]:
    """The markdown lines that open a report."""
    return [f"# {title}", "", "```bash", env["command"], "```", "",
            f"- commit `{env['commit']}`{' (work tree with uncommitted changes)' if env['dirty'] else ''}, "
            f"{env['date']}", f"- python {env['python']}, torch {env['torch']}, {env['cpus']} CPUs, {env['platform']}",
            ""]


def write_results(json_path: Path, md_path: Path, res: dict[str, Any], markdown: str) -> None:
    """Both files, written atomically."""
    from polydiff.files import atomic_write

    for path, text in ((json_path, json.dumps(res, indent=1, default=str)), (md_path, markdown)):
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, text)


def publish(stem: str, res: dict[str, Any], markdown: str) -> None:
    """``bench/results/<stem>.json`` and ``.md`` (written atomically), and the report on stdout."""
    write_results(RESULTS / f"{stem}.json", RESULTS / f"{stem}.md", res, markdown)
    print(markdown)


def rss_mib(kind: str = "VmHWM") -> float:
    """Resident memory of this process in MiB, from ``/proc/self/status``: ``"VmHWM"`` the peak
    so far, which starts afresh at exec (``ru_maxrss`` does not: a child reports the launching
    process's peak), or ``"VmRSS"`` the current. Where /proc is missing: ``ru_maxrss`` for the
    peak, psutil for the current."""
    if kind not in ("VmHWM", "VmRSS"):
        raise ValueError(f"kind must be 'VmHWM' (peak) or 'VmRSS' (current), got {kind!r}")
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{kind}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    if kind == "VmRSS":
        import psutil

        return psutil.Process().memory_info().rss / 2**20
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def warm_up(call: Any, compiled: bool, most: int = 5) -> int:
    """Warm-up calls ``call(seed)`` (seeds 1000, 1001, ...) before timing; returns how many ran.
    One call for eager networks. Compiled ones run until two calls in a row compile nothing new
    (at most ``most`` calls): the first size compiles a graph and the first other size compiles
    it again with that dimension symbolic, but molecules' atom counts can repeat for a few calls
    before they change, and two fixed warm-up calls left that compilation in the timed calls."""
    import torch._dynamo.utils

    stats = torch._dynamo.utils.counters["stats"]
    graphs = [stats["unique_graphs"]]
    while len(graphs) <= (most if compiled else 1):
        if compiled and len(graphs) >= 3 and graphs[-1] == graphs[-3]:
            break
        call(1000 + len(graphs) - 1)
        graphs.append(stats["unique_graphs"])
    return len(graphs) - 1


def recipe(modality: str, name: str, **changes: Any) -> dict[str, Any]:
    """The shipped recipe ``configs/<modality>/<name>.yaml`` with sections updated by ``changes``
    (``train={...}`` merges into the train section; a non-dict value replaces the section)."""
    import yaml

    cfg = yaml.safe_load((ROOT / "configs" / modality / f"{name}.yaml").read_text())
    for section, values in changes.items():
        cfg[section] = {**cfg.get(section, {}), **values} if isinstance(values, dict) else values
    return cfg


def train_for(cfg: dict[str, Any], out: Path, minutes: float, threads: int) -> tuple[Path, dict[str, Any]]:
    """Train ``cfg`` into ``out`` for a wall-clock budget of ``minutes`` (no step limit, one final
    checkpoint); returns the checkpoint and ``{"minutes", "steps"}`` as measured."""
    import torch

    import polydiff

    cfg["train"] = {**cfg["train"], "max_minutes": minutes, "max_steps": 10**6, "threads": threads, "progress": False,
                    "checkpoint_every": 10**6}
    t0 = time.perf_counter()
    run = polydiff.train(cfg, out, verbose=False, fresh=True)
    ckpt = torch.load(run.checkpoint, map_location="cpu", weights_only=False)
    return run.checkpoint, {"minutes": (time.perf_counter() - t0) / 60, "steps": int(ckpt.get("global_step", -1))}


def batch_clock() -> Any:
    """A Lightning callback that records the wall and process CPU time at the start of every
    training batch (``.wall``, ``.cpu``): consecutive differences are whole training steps as
    ``polydiff.train`` runs them (data, forward, backward, optimiser, EMA, logging)."""
    from lightning.pytorch.callbacks import Callback

    class BatchClock(Callback):
        def __init__(self) -> None:
            self.wall: list[float] = []
            self.cpu: list[float] = []

        def on_train_batch_start(self, trainer: Any, module: Any, batch: Any, idx: int) -> None:
            self.wall.append(time.perf_counter())
            self.cpu.append(time.process_time())

    return BatchClock()


def timed_calls(fn: Any, repeats: int) -> tuple[list[float], list[float]]:
    """Wall and process CPU seconds of ``repeats`` calls ``fn(seed)`` (seeds 1, 2, ...), after one
    untimed call ``fn(0)`` (warm-up)."""
    fn(0)
    wall, cpu = [], []
    for seed in range(1, repeats + 1):
        t0, c0 = time.perf_counter(), time.process_time()
        fn(seed)
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return wall, cpu


def export_mirror(mirror: Path, dest: Path, repo: str, marker: str, env: str, script: str,
                  paths: tuple[str, ...] = ()) -> str:
    """Export the HEAD tree (or only ``paths``) of a bare git mirror of ``github.com/<repo>`` into
    ``dest`` and write its commit to ``dest/<marker>``; returns the commit. A missing mirror ends
    the program with how to get one (``env``: the variable that points to it; ``script``: the
    reference script to rerun). Files whose blobs a partial mirror lacks (large data files) are
    named on stderr and left out; the reference scripts check for the files they need."""
    git = ["git", f"--git-dir={mirror}"]
    if not (mirror / "HEAD").is_file():
        sys.exit(f"no git mirror of {repo} at {mirror}. Get one with `git clone --bare https://github.com/{repo} "
                 f"{mirror}` (or the session's fetch tool: source github:{repo}), or set {env} to it; then run "
                 f"`python bench/{script} --setup` again.")
    commit = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    listing = subprocess.run([*git, "ls-tree", "-r", "-z", "HEAD", "--", *paths], capture_output=True, check=True)
    entries = [e.split(b"\t", 1) for e in listing.stdout.split(b"\0") if e]
    blobs = [(meta.split()[2].decode(), path.decode()) for meta, path in entries if meta.split()[1] == b"blob"]
    missing = []
    for sha, rel in blobs:  # one blob at a time: a partial mirror's missing blob skips one file, not the rest
        got = subprocess.run([*git, "cat-file", "blob", sha], capture_output=True)
        if got.returncode != 0:
            missing.append(rel)
            continue
        out = dest / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(got.stdout)
    if missing:
        print(f"{mirror}: {len(missing)} file(s) absent from the mirror, not exported: {', '.join(missing[:5])}"
              + (" ..." if len(missing) > 5 else ""), file=sys.stderr)
    (dest / marker).write_text(commit + "\n")
    print(f"{dest}: {repo} {commit} ({len(blobs) - len(missing)} files)", file=sys.stderr)
    return commit


def worker_main(label: str, found: Path | None, expected: Path, modules: tuple[str, ...], script: str,
                venv_py: Path, measure: Any) -> None:
    """The end of a reference script's ``main``: a clear exit when its checkout is missing (``found``
    is None; ``expected`` is where it was looked for) or one of the reference's ``modules`` does not
    import in this interpreter; otherwise ``measure()`` runs in the checkout (the working folder)
    and its JSON result is printed as the last line (what :func:`run_worker` reads)."""
    import importlib

    name = Path(script).name
    if found is None:
        sys.exit(f"no {label} checkout at {expected}: run `python {name} --setup`")
    try:
        for module in modules:
            importlib.import_module(module)
    except ImportError as err:
        sys.exit(f"{label}'s dependencies are not importable by {sys.executable} ({err}): run `python {name} "
                 f"--setup`, then `{venv_py} {name} ...`")
    os.chdir(found)
    print(json.dumps(measure()), flush=True)


def worker_start(threads: int, seed: int, stand_ins: Any = None, src: str = "", wandb: bool = False) -> Path:
    """A reference worker's first steps, run in its checkout (the working folder): warnings and
    library logging off; the checkout (or its ``src`` folder) importable; ``stand_ins()`` called
    and, with ``wandb``, a ``wandb`` module whose calls do nothing (the references import it for
    logging only); torch's threads and the seeds of torch and ``random`` set. Returns the checkout."""
    import logging
    import random
    import types
    import warnings

    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    ref = Path.cwd()
    sys.path.insert(0, str(ref / src if src else ref))
    if wandb:
        stub = types.ModuleType("wandb")
        stub.log = stub.Table = lambda *a, **k: None  # type: ignore[attr-defined]
        sys.modules.setdefault("wandb", stub)
    if stand_ins is not None:
        stand_ins()
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    random.seed(seed)
    return ref


def ratio_summary(ours: Any, ref: Any, ref_name: str) -> dict[str, Any]:
    """The medians of our measurements and a reference's (``ref_name``; None when it was not
    measured), their ratio and whether ours is at most the reference's."""
    import statistics

    mine, theirs = statistics.median(ours), list(ref)
    other = statistics.median(theirs) if theirs else None
    ratio = mine / other if other else None
    return {"ours": mine, ref_name: other, "ratio": ratio, "at_most": None if ratio is None else ratio <= 1.0}


def ratio_summaries(out: dict[str, Any], keys: Any, ref_name: str,
                    ours: tuple[str, ...] = ("ours", "ours_equal_params")) -> dict[str, Any]:
    """:func:`ratio_summary` of every measured ``key`` for each of our runs in ``out`` (its lists ``ours``,
    ...) against the reference's list ``out[ref_name]``, keyed ``"<run>/<key>"``."""
    return {f"{who}/{key}": ratio_summary((x[key] for x in out[who]), (x[key] for x in out[ref_name]), ref_name)
            for who in ours for key in keys}


def reference_missing(label: str, venv_python: Path, venv: Path, checkout: Path, found: Path | None) -> str:
    """What a benchmark reports when a reference cannot run: which of its scratch venv (``venv``,
    interpreter ``venv_python``) and its checkout (``checkout``; ``found`` None) is absent."""
    absent = [f"the venv {venv}"] * (not venv_python.exists()) + [f"the checkout {checkout}"] * (found is None)
    return f"{label}'s reference is missing ({' and '.join(absent)})"


def reference_commit(ref: Path, marker: str) -> str | None:
    """The commit :func:`export_mirror` wrote to ``ref/marker``, or None when it is missing."""
    path = ref / marker
    return path.read_text().strip() if path.is_file() else None


def run_worker(py: Path, script: str, options: dict[str, Any], timeout: float, cwd: Path | None = None) -> Any:
    """Run a reference script's worker, ``py script --key value ...`` (``options``, underscores as
    dashes; ``threads`` also sets ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS``), in ``cwd``, and
    return the JSON of its last output line; a failing worker raises with the end of its stderr."""
    cmd = [str(py), script]
    for key, value in options.items():
        cmd += [f"--{key.replace('_', '-')}", str(value)]
    threads = str(options["threads"])
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd)
    if proc.returncode != 0:
        raise RuntimeError(f"{Path(script).name} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def scratch_venv(venv: Path, check: str, packages: list[str], no_deps: list[str] | None = None,
                 verbose: bool = True) -> Path:
    """The interpreter of a reference implementation's scratch venv outside the project, created
    (the project's torch 2.13.0 and ``packages`` under ``constraints.txt``, then ``no_deps``
    installed ``--no-deps`` so their pins cannot replace that torch) unless ``check`` already
    runs in it."""
    py = venv / "bin" / "python"
    if py.exists() and subprocess.run([str(py), "-c", check], capture_output=True).returncode == 0:
        if verbose:
            print(f"{venv}: ready", file=sys.stderr)
        return py
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(py), "-m", "pip", "install", "-q", "-c", str(ROOT / "constraints.txt")]
    subprocess.run([*pip, "torch==2.13.0", *packages], check=True)
    if no_deps:
        subprocess.run([*pip, "--no-deps", *no_deps], check=True)
    subprocess.run([str(py), "-c", check], check=True)
    if verbose:
        print(f"{venv}: installed", file=sys.stderr)
    return py
