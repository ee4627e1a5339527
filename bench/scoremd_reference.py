"""Speed of ScoreMD's own code (Plainer et al., NeurIPS 2025, "Consistent Sampling and Simulation:
Molecular Dynamics with Energy-Based Diffusion Models", github.com/noegroup/ScoreMD; JAX + flax) on
this machine, so the energy-based MD benchmark can report ours as a ratio measured in the same run.

    python bench/scoremd_reference.py --setup       # make /tmp/scoremd_ref and /tmp/scoremd_venv (idempotent)
    /tmp/scoremd_venv/bin/python bench/scoremd_reference.py --steps 10 --threads 1

prints one JSON line ``{"train_step_s", "train_fp_step_s", "sample_s", "langevin_s", "compile_s",
"params", "commit", ...}``; from another benchmark (any interpreter)::

    from scoremd_reference import measure_scoremd   # (bench/ on sys.path)
    ref = measure_scoremd(steps=10)                  # None when the venv or the checkout is missing

ScoreMD is never copied into this repository nor installed in the project's environment.
``--setup`` exports the tree of a bare git mirror of the repository (``$SCOREMD_MIRROR``, default
``/work/.mirror/noegroup+ScoreMD/repo``; any ``git clone --bare`` of it will do) into a scratch
folder outside the project (``/tmp/scoremd_ref`` or ``$SCOREMD_REF``; the commit goes to
``.scoremd_commit``) and makes a scratch venv (``/tmp/scoremd_venv`` or ``$SCOREMD_VENV``) with the
project's torch 2.13.0 (``constraints.txt``; ScoreMD's conda pin is ``pytorch >=2.4.1,<3``, used
only by bgflow, which nothing here imports) and ScoreMD's pins from its ``pyproject.toml`` and
``pixi.lock``, all of which install for Python 3.11 here: ``jax==0.5.2`` with ``jaxlib==0.5.1``
(CPU; its lock's CUDA plugin is left out), ``flax==0.10.4``, ``optax==0.2.4``, ``chex==0.1.89``,
``orbax-checkpoint==0.11.6``, ``tensorstore==0.1.73``, ``ml-dtypes==0.5.1``, ``numpy==1.26.4``,
``scipy==1.15.2``, ``matplotlib==3.9.4``, ``openmm==8.2.0``, ``mdtraj==1.9.9`` (built from its
source distribution, about 3 minutes once: PyPI has no wheel of it for Python 3.11),
``deeptime==0.4.4``, einops, tqdm and python-dotenv, and a setuptools that still ships
``pkg_resources`` (mdtraj 1.9.9 imports it). hydra-zen / hydra-colorlog (its command-line
configuration), wandb, nglview and pytest are not installed: nothing timed imports them.

**Stand-ins.** ScoreMD's ``scoremd.data.dataset`` package imports all its data sets, and the
alanine-dipeptide one imports ``bgmol`` (``from bgmol.datasets import AImplicitUnconstrained``),
which is installable only from GitHub (unreachable here). The worker puts a module ``bgmol.datasets``
under that name before importing ScoreMD whose ``AImplicitUnconstrained`` raises if called: it is
never called (it loads the alanine data set), so it takes no share of any measured time.
``scoremd.training`` imports ``wandb`` for logging that is off by default: a ``wandb`` module whose
calls do nothing (:func:`common.worker_start`). Everything else is ScoreMD's code, unmodified.
Measured against commit 149b1ec54d60068c421cee6bce77ecac5cb2a9ef or the one in ``.scoremd_commit``.

Threads (:func:`xla_threads`): ``--threads 1`` sets ``XLA_FLAGS=--xla_cpu_multi_thread_eigen=false
intra_op_parallelism_threads=1`` before JAX is imported, but with JAX 0.5.2 those flags alone left
XLA's CPU pool at one thread per CPU (measured here: a jitted MLP gradient split evenly over two
threads on this 2-CPU machine), so the backend is also started while the process may use only
``threads`` CPUs (XLA sizes its pool by them), after which every thread gets all CPUs back: all
the computation then ran on one thread. Every timing comes with its process CPU time (``cpu /
wall`` is 1.00 for one busy thread, above 1 with more), and ``thread_cpu_shares`` gives the share
of the timed calls' CPU time of the busiest threads (the Python thread that dispatches takes the
rest).

What is measured (one process, float32, CPU), with ScoreMD's own classes imported from the checkout:

* the model is what ScoreMD's ``train.py`` builds for Müller-Brown with
  ``+architecture=mlp/small_potential`` (TRAIN.md's baseline and Fokker-Planck commands): a
  ``MixtureOfModels`` of one ``RangedModel(MLPModelInfo(hidden_dims, "swish", potential=True),
  range [1, 0])`` (an energy MLP, score = -grad E, with ScoreMD's four sinusoidal time features),
  the ranged weighting and ``CenterMolecule``; ``hidden`` sets its widths (our recipe's MLP:
  three layers of 128, SiLU = swish; its own config: 92). Its MLP is plain Dense + swish: no
  residual blocks, FiLM or normalisation, so at equal widths it has about a fifth of our
  parameters (both counts are reported; the benchmark also runs it at about equal parameters);
* the data are ScoreMD's own ``MuellerBrownSimulation`` (kT 23, mass 0.5, friction 1, dt 5e-3, 50
  steps a sample, as in its ``stores.py``) of ``batch x steps`` samples, made before any clock
  starts (cached under a temporary ``PERSISTENT_STORE``);
* a training step is ScoreMD's own loop: ``OneAfterAnother.train`` (``vp_standard``: one
  ``RangedLoss`` over [1, 1e-5], ``equal_weight`` with TRAIN.md's midpoint 0.5, its ``cosine``
  AdamW optimiser with clipping, its ``EmaTrainState`` with EMA 0.995) yields one epoch per call:
  ``steps`` steps of batch ``batch`` fused by ``jax.lax.scan`` in one jitted call (as it trains),
  then its NaN check. The first epoch compiles (untimed); the time of a step is each later epoch's
  wall time / ``steps``, and the median over ``epochs`` epochs is reported. Without the penalty the
  loss is ``stores.py``'s ``get_loss(likelihood_weighting=False, sliced=False, div_est=1, ...)``;
  with it, TRAIN.md's Fokker-Planck command: ``beta=0.0005, residual_fp=True, div_est=2,
  partial_t_approx=True, single_gamma=True`` (its residual with two probes, finite differences in t
  and x);
* i.i.d. sampling is what ScoreMD's ``evaluate.get_samples`` composes (``VP().reverse(score)``,
  ``get_times(num_steps, t0=0)``, ``EulerMaruyama``, ``get_sampler(denoise=False)``), with
  ``sample_steps`` steps (ours: the same number of DPM-Solver++(2M) steps; ``get_samples`` itself
  hard-codes 1000, which the benchmark also times as ScoreMD's default) for ``num`` points in one
  batch, jitted once (``get_samples`` runs its ``lax.scan`` eagerly, which retraces on every call);
* Langevin dynamics is ScoreMD's MD integrator: ``create_langevin_step_function`` (OpenMM's
  Langevin leapfrog, one force call a step, ``every`` steps unrolled in one jitted step as in its
  Müller-Brown evaluation) and ``simulate`` (``lax.scan`` over ``langevin_steps / every`` frames),
  jitted once, for ``chains`` chains side by side, with the forces of ``evaluate``'s ``force``
  (``model.force`` at ``t_min``, kT = 1, mass 1, our ``dt`` and friction): ``langevin_steps`` force
  calls, as ours.

Sampling and Langevin use the EMA parameters after the timed training (the initial ones when
training is not run). Each sampling and Langevin measurement is the median of ``sample_repeats``
calls after an untimed one (which compiles). ``compile_s`` is, per part, what the first call took
beyond a timed one (tracing, lowering and XLA's compilation; for training the first epoch minus
``steps`` timed steps): a user pays it once per run. ``xla_compile_s`` is JAX's own tally of XLA's
compilation alone in that first call (``jax.monitoring``'s backend-compile events).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any

from common import reference_commit, worker_main, worker_start  # bench/ is on the path (the script's folder)

VENV = Path(os.environ.get("SCOREMD_VENV", "/tmp/scoremd_venv"))
REF = Path(os.environ.get("SCOREMD_REF", "/tmp/scoremd_ref"))
MIRROR = Path(os.environ.get("SCOREMD_MIRROR", "/work/.mirror/noegroup+ScoreMD/repo"))
PACKAGES = ["jax==0.5.2", "jaxlib==0.5.1", "flax==0.10.4", "optax==0.2.4", "chex==0.1.89", "orbax-checkpoint==0.11.6",
            "tensorstore==0.1.73", "ml-dtypes==0.5.1", "numpy==1.26.4", "scipy==1.15.2", "matplotlib==3.9.4",
            "openmm==8.2.0", "mdtraj==1.9.9", "deeptime==0.4.4", "einops>=0.8.0,<0.9", "tqdm>=4.67.0,<5",
            "python-dotenv>=1.0.1,<2", "setuptools>=77,<81"]
NEEDED = ("src/scoremd/training/schedule.py", "src/scoremd/training/__init__.py", "src/scoremd/models/mlp.py",
          "src/scoremd/models/mixture.py", "src/scoremd/diffusion/fp.py", "src/scoremd/diffusion/classic/utils.py",
          "src/scoremd/simulation.py", "src/scoremd/data/dataset/mueller.py")
CHECK = ("import torch, jax, flax, optax, orbax.checkpoint, openmm, mdtraj, deeptime, dotenv, einops, matplotlib; "
         "assert jax.__version__ == '0.5.2', jax.__version__; assert flax.__version__ == '0.10.4', flax.__version__; "
         "assert torch.__version__.split('+')[0] == '2.13.0'")
PARTS = ("train", "train_fp", "sample", "langevin")
ONE_THREAD_XLA = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"  # XLA's compilation (no tracing, no lowering)


def venv_python() -> Path:
    """The scratch venv's interpreter."""
    return VENV / "bin" / "python"


def find_reference() -> Path | None:
    """The exported ScoreMD tree (``$SCOREMD_REF`` or /tmp/scoremd_ref) when it holds what the worker needs."""
    return REF if all((REF / p).is_file() for p in NEEDED) else None


def export_reference(mirror: Path = MIRROR, dest: Path = REF) -> Path:
    """Export the HEAD tree of a bare mirror of ScoreMD's repository into ``dest``."""
    from common import export_mirror

    export_mirror(mirror, dest, "noegroup/ScoreMD", ".scoremd_commit", "SCOREMD_MIRROR", Path(__file__).name)
    return dest


def setup(verbose: bool = True) -> Path:
    """Export ScoreMD into ``REF`` and create the scratch venv unless both already work."""
    if find_reference() is None:
        export_reference()
    from common import scratch_venv

    return scratch_venv(VENV, CHECK, list(PACKAGES), verbose=verbose)


def measure_scoremd(parts: tuple[str, ...] = PARTS, hidden: tuple[int, ...] = (128, 128, 128), batch: int = 256,
                    steps: int = 10, epochs: int = 3, num: int = 20_000, sample_steps: int = 50,
                    sample_repeats: int = 2, chains: int = 200, langevin_steps: int = 1000, every: int = 50,
                    dt: float = 1e-2, friction: float = 1.0, t_min: float = 1e-3, threads: int = 1, seed: int = 0,
                    timeout: float = 3600.0) -> dict[str, Any] | None:
    """Run this script in the scratch venv and return its JSON result; None when the venv or the
    checkout is missing (run ``--setup``)."""
    py, ref = venv_python(), find_reference()
    if not py.exists() or ref is None:
        return None
    from common import run_worker

    opts = dict(parts=",".join(parts), hidden=",".join(map(str, hidden)), batch=batch, steps=steps, epochs=epochs,
                num=num, sample_steps=sample_steps, sample_repeats=sample_repeats, chains=chains,
                langevin_steps=langevin_steps, every=every, dt=dt, friction=friction, t_min=t_min, threads=threads,
                seed=seed)
    return run_worker(py, str(Path(__file__).resolve()), opts, timeout, ref)


def equal_params_width(params: int, layers: int = 3, inputs: int = 6) -> int:
    """The width of ScoreMD's energy MLP (``layers`` Dense + swish of equal width, ``inputs`` = 2
    coordinates + its 4 time features, one output) whose parameter count is closest to ``params``."""
    def count(w: int) -> int:
        return (inputs + 1) * w + (layers - 1) * (w + 1) * w + w + 1

    return min(range(8, 4096), key=lambda w: abs(count(w) - params))


# ---------------------------------------------------------------------------------------------- worker


def _stand_ins() -> None:
    """``bgmol.datasets.AImplicitUnconstrained``: imported by ScoreMD's alanine data set, which is
    not used here; raises if called."""
    def unavailable(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("bgmol is a stand-in in bench/scoremd_reference.py: the alanine data set is not used")

    bgmol, datasets = types.ModuleType("bgmol"), types.ModuleType("bgmol.datasets")
    datasets.AImplicitUnconstrained = unavailable  # type: ignore[attr-defined]
    bgmol.datasets = datasets  # type: ignore[attr-defined]
    sys.modules.setdefault("bgmol", bgmol)
    sys.modules.setdefault("bgmol.datasets", datasets)


def xla_threads(threads: int) -> None:
    """Start JAX's CPU backend with an intra-op thread pool of ``threads`` threads: with
    ``threads == 1`` the XLA flags of :data:`ONE_THREAD_XLA` are set, and, as those flags alone
    left XLA's pool at one thread per CPU (measured with JAX 0.5.2: two threads each doing half the
    work of a jitted MLP gradient on this 2-CPU machine), the process is restricted to ``threads``
    CPUs while the backend starts (XLA sizes its pool by the CPUs it may use), after which every
    thread gets the original CPUs back: the OS still schedules them anywhere."""
    if threads == 1:
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {ONE_THREAD_XLA}".strip()
    cpus = os.sched_getaffinity(0)
    os.sched_setaffinity(0, set(sorted(cpus)[:threads]))
    try:
        import jax

        jax.devices()
    finally:
        for tid in os.listdir("/proc/self/task"):
            try:
                os.sched_setaffinity(int(tid), cpus)
            except OSError:  # a thread that has ended
                pass


def thread_ticks() -> dict[str, int]:
    """CPU time (clock ticks, user + system) of each thread of this process so far."""
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            fields = Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[tid] = int(fields[11]) + int(fields[12])
    return out


class _Clocks:
    """Wall and process CPU seconds of calls, the CPU time of each thread during the timed ones
    (:meth:`shares`), and JAX's own tally (``jax.monitoring``) of XLA's compilation time."""

    def __init__(self) -> None:
        import jax.monitoring

        self.compiled, self.ticks = 0.0, {}
        jax.monitoring.register_event_duration_secs_listener(self._record)

    def _record(self, event: str, duration: float, **kwargs: Any) -> None:
        if event == BACKEND_COMPILE_EVENT:
            self.compiled += duration

    def __call__(self, fn: Any, timed: bool = True) -> tuple[Any, float, float]:
        """``fn()``'s result with its wall and process CPU seconds; ``timed``: count its threads' CPU time."""
        before = thread_ticks() if timed else {}
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        if timed:
            for tid, n in thread_ticks().items():
                self.ticks[tid] = self.ticks.get(tid, 0) + n - before.get(tid, 0)
        return out, wall, cpu

    def shares(self) -> list[float]:
        """The shares of the timed calls' CPU time of the (at most four) busiest threads: ``[1.0]``
        when one thread did all the work."""
        used = sorted(self.ticks.values(), reverse=True)
        total = sum(used) or 1
        return [round(u / total, 3) for u in used[:4] if u > 0]


def measure(parts: tuple[str, ...], hidden: tuple[int, ...], batch: int, steps: int, epochs: int, num: int,
            sample_steps: int, sample_repeats: int, chains: int, langevin_steps: int, every: int, dt: float,
            friction: float, t_min: float, threads: int, seed: int) -> dict[str, Any]:
    """Time ScoreMD's training steps (without and with its Fokker-Planck residual), i.i.d. sampling
    and Langevin dynamics in this (venv) process, cwd = the checkout."""
    import importlib.metadata as md

    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    os.environ.setdefault("MPLBACKEND", "Agg")
    store = tempfile.mkdtemp(prefix="scoremd-store-")
    os.environ["PERSISTENT_STORE"] = store  # where its Müller-Brown data set caches its samples
    worker_start(threads, seed, _stand_ins, src="src", wandb=True)
    xla_threads(threads)
    from functools import partial

    import jax
    import jax.numpy as jnp
    from scoremd.data.dataset.mueller import MuellerBrownSimulation
    from scoremd.data.preprocess import CenterMolecule
    from scoremd.diffusion.classic.sde import VP
    from scoremd.diffusion.classic.solvers import EulerMaruyama
    from scoremd.diffusion.classic.utils import get_loss, get_sampler, get_times
    from scoremd.loss import RangedLoss
    from scoremd.models import MLPModelInfo, RangedModel
    from scoremd.models.mixture import MixtureOfModels
    from scoremd.simulation import create_langevin_step_function, simulate
    from scoremd.training import equal_weight
    from scoremd.training.optimizer import get_cosine_lr_optimizer
    from scoremd.training.schedule import IDENTITY, OneAfterAnother
    from scoremd.training.train_state import EmaTrainState
    from scoremd.training.weighting import construct_ranged_constant_weighting_function

    clock = _Clocks()
    key = jax.random.PRNGKey(seed)
    # ScoreMD's Müller-Brown data set as stores.py configures it, batch x steps samples
    dataset = MuellerBrownSimulation(n_samples=batch * steps, kbT=23.0, mass=(0.5, 0.5), gamma=1.0, n_steps=50,
                                     dt=5e-3, seed=seed)
    train_data = dataset.train
    shutil.rmtree(store)
    ranged = [RangedModel(MLPModelInfo(list(hidden), "swish", True), range=(1.0, 0.0))]
    model = MixtureOfModels([m.build(dataset, 1.0) for m in ranged], construct_ranged_constant_weighting_function(
        ranged, normalize=True), CenterMolecule(dataset))
    key, init_key = jax.random.split(key)
    params = model.init(init_key, jnp.ones([batch, 2]), None, jnp.ones([batch, 1]), training=False)
    n_params = int(sum(x.size for x in jax.tree.leaves(params)))
    optimizer = partial(get_cosine_lr_optimizer, learning_rate=3e-4, min_learning_rate=1e-5, clip=1e3)
    standard = dict(likelihood_weighting=False, sliced=False, div_est=1, gaussian_div_est=False, partial_t_approx=False)
    fp_options = dict(div_est=2, beta=0.0005, residual_fp=True, partial_t_approx=True, single_gamma=True)
    out: dict[str, Any] = {"compile_s": {}, "xla_compile_s": {}}
    ema = params

    def train(fp: bool) -> dict[str, Any]:
        nonlocal key, ema
        loss = RangedLoss(loss=partial(get_loss, **{**standard, **(fp_options if fp else {})}),
                          time_weighting=partial(equal_weight, midpoint=0.5), range=(1.0, 1e-5))
        schedule = OneAfterAnother(losses=[loss], BS=batch, BS_factor=1, epochs=[1 + epochs], augment=IDENTITY)
        state = EmaTrainState.create(apply_fn=model.apply, params=params, tx=optimizer(1), ema_weight=0.995)
        key, train_key = jax.random.split(key)
        it = schedule.train(state, model, optimizer, None, 0, train_data, None, 1, 1.0, train_key)
        before = clock.compiled
        walls, cpus, losses = [], [], []
        for epoch in range(1 + epochs):
            (state, epoch_loss, _), wall, cpu = clock(lambda: next(it), timed=epoch > 0)
            losses.append(float(epoch_loss.sum(-1).mean()))
            if epoch == 0:
                compiled, first = clock.compiled - before, wall
                continue
            walls.append(wall / steps)
            cpus.append(cpu / steps)
        if not fp:
            ema = state.ema_params
        step = statistics.median(walls)
        return {"step_s": step, "step_s_all": walls, "step_cpu_s_all": cpus, "first_epoch_s": first,
                "compile_s": max(first - steps * step, 0.0), "xla_compile_s": compiled, "final_loss": losses[-1],
                "finite": all(map(jnp.isfinite, losses))}

    def timed(fn: Any, *args: Any) -> dict[str, Any]:
        """The median of ``sample_repeats`` calls of a jitted ``fn(key, *args)`` after an untimed one."""
        nonlocal key
        before = clock.compiled
        key, k0 = jax.random.split(key)
        res, first, _ = clock(lambda: jax.block_until_ready(fn(k0, *args)), timed=False)
        compiled = clock.compiled - before
        walls, cpus = [], []
        for _ in range(sample_repeats):
            key, k = jax.random.split(key)
            res, wall, cpu = clock(lambda k=k: jax.block_until_ready(fn(k, *args)))
            walls.append(wall)
            cpus.append(cpu)
        s = statistics.median(walls)
        return {"s": s, "s_all": walls, "cpu_s_all": cpus, "compile_s": max(first - s, 0.0), "xla_compile_s": compiled,
                "first_call_s": first, "finite": bool(jnp.isfinite(res).all())}

    for name, fp in (("train", False), ("train_fp", True)):
        if name in parts:
            r = train(fp)
            out.update({f"{name}_step_s": r.pop("step_s"), f"{name}_step_s_all": r.pop("step_s_all"),
                        f"{name}_step_cpu_s_all": r.pop("step_cpu_s_all"), f"{name}_finite": r.pop("finite"),
                        f"{name}_final_loss": r.pop("final_loss"), f"{name}_first_epoch_s": r.pop("first_epoch_s")})
            out["compile_s"][name], out["xla_compile_s"][name] = r.pop("compile_s"), r.pop("xla_compile_s")
    if "sample" in parts:
        def score(x: Any, features: Any, t: Any) -> Any:  # evaluate.trained_unnormalized_score
            return model.apply(ema, x, features, t, training=False)

        ts, _ = get_times(num_steps=sample_steps, t0=0.0)  # as evaluate.get_samples, with our number of steps
        sampler = get_sampler((num, 2), EulerMaruyama(VP().reverse(score), ts), denoise=False,
                              inverse_scaler=lambda x: x)
        r = timed(jax.jit(lambda k: sampler(k, None)[0]))
        out.update({"sample_s": r["s"], "sample_s_all": r["s_all"], "sample_cpu_s_all": r["cpu_s_all"],
                    "sample_first_call_s": r["first_call_s"], "sample_finite": r["finite"]})
        out["compile_s"]["sample"], out["xla_compile_s"]["sample"] = r["compile_s"], r["xla_compile_s"]
    if "langevin" in parts:
        def force(x: Any, features: Any = None) -> Any:  # evaluate.force: kT = 1, norm_factor = 1, eval_t = t_min
            return model.apply(ema, x, features, t_min, training=False, method=model.__class__.force)

        step = jax.jit(create_langevin_step_function(force, 1.0, friction, every, dt, 1.0))
        run = jax.jit(lambda k, x0, v0: simulate(x0, v0, step, langevin_steps // every, k)[0])
        key, start_key, v_key = jax.random.split(key, 3)
        x0 = train_data.data[jax.random.choice(start_key, len(train_data), (chains,), replace=len(train_data) < chains)]
        r = timed(run, x0, jax.random.normal(v_key, x0.shape))
        out.update({"langevin_s": r["s"], "langevin_s_all": r["s_all"], "langevin_cpu_s_all": r["cpu_s_all"],
                    "langevin_first_call_s": r["first_call_s"], "langevin_finite": r["finite"]})
        out["compile_s"]["langevin"], out["xla_compile_s"]["langevin"] = r["compile_s"], r["xla_compile_s"]
    return {**out, "params": n_params, "hidden": list(hidden), "batch": batch, "steps": steps, "epochs": epochs,
            "num": num, "sample_steps": sample_steps, "sample_repeats": sample_repeats, "chains": chains,
            "langevin_steps": langevin_steps, "every": every, "dt": dt, "friction": friction, "t_min": t_min,
            "threads": threads, "xla_flags": os.environ.get("XLA_FLAGS", ""), "parts": list(parts),
            "thread_cpu_shares": clock.shares(),
            "devices": [str(d) for d in jax.devices()], "commit": reference_commit(Path.cwd(), ".scoremd_commit"),
            "versions": {"jax": jax.__version__, "jaxlib": md.version("jaxlib"), "flax": md.version("flax"),
                         "optax": md.version("optax"), "python": platform.python_version()}}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--setup", action="store_true", help=f"export ScoreMD to {REF} and create the scratch venv {VENV} "
                   "(idempotent), then exit")
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma list of {', '.join(PARTS)}")
    p.add_argument("--hidden", default="128,128,128", help="widths of the energy MLP (its own config: 92,92,92)")
    p.add_argument("--batch", type=int, default=256, help="training batch (our recipe: 256; ScoreMD's: 128)")
    p.add_argument("--steps", type=int, default=10, help="training steps per epoch (one jitted scan)")
    p.add_argument("--epochs", type=int, default=3, help="timed epochs, after an untimed one that compiles")
    p.add_argument("--num", type=int, default=20_000, help="points per i.i.d. sampling call")
    p.add_argument("--sample-steps", type=int, default=50, help="Euler-Maruyama steps (get_samples: 1000)")
    p.add_argument("--sample-repeats", type=int, default=2, help="timed sampling / Langevin calls (median reported)")
    p.add_argument("--chains", type=int, default=200, help="Langevin chains run side by side")
    p.add_argument("--langevin-steps", type=int, default=1000, help="Langevin steps (force calls) per call")
    p.add_argument("--every", type=int, default=50, help="Langevin steps per frame (unrolled in one jitted step)")
    p.add_argument("--dt", type=float, default=1e-2)
    p.add_argument("--friction", type=float, default=1.0)
    p.add_argument("--t-min", type=float, default=1e-3, help="the time of the Langevin forces")
    p.add_argument("--threads", type=int, default=1, help="1: XLA on one thread (any other value: XLA's default)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    if a.setup:
        setup()
        return
    parts = tuple(s for s in a.parts.split(",") if s)
    if set(parts) - set(PARTS) or not parts:
        p.error(f"--parts: a comma list of {', '.join(PARTS)}")
    hidden = tuple(int(v) for v in a.hidden.split(","))
    if min(a.batch, a.steps, a.epochs, a.num, a.sample_steps, a.sample_repeats, a.chains, a.every, *hidden) < 1:
        p.error("--batch, --steps, --epochs, --num, --sample-steps, --sample-repeats, --chains, --every and the "
                "widths must be >= 1")
    if a.langevin_steps < a.every or a.langevin_steps % a.every:
        p.error("--langevin-steps must be a positive multiple of --every")
    worker_main("ScoreMD", find_reference(), REF, ("jax", "flax", "optax"), __file__, venv_python(),
                lambda: measure(parts, hidden, a.batch, a.steps, a.epochs, a.num, a.sample_steps, a.sample_repeats,
                                a.chains, a.langevin_steps, a.every, a.dt, a.friction, a.t_min, a.threads, a.seed))


if __name__ == "__main__":
    main()
