"""Speed of BESO's own code (Reuss et al., RSS 2023, "Goal-Conditioned Imitation Learning using
Score-based Diffusion Policies", github.com/intuitive-robots/beso) on this machine, so the policies
benchmark can report ours as a ratio measured in the same run.

    python bench/beso_reference.py --setup         # make /tmp/beso_ref and /tmp/beso_venv (idempotent)
    /tmp/beso_venv/bin/python bench/beso_reference.py --steps 10 --threads 1

prints one JSON line ``{"train_step_s", "decision_s", "params", "commit", ...}``; from another
benchmark (any interpreter)::

    from beso_reference import measure_beso         # (bench/ on sys.path)
    ref = measure_beso(steps=10)                    # None when the venv or the checkout is missing

BESO is never copied into this repository nor installed in the project's environment. ``--setup``
exports the agent, network and configuration files of a bare git mirror of the repository
(``$BESO_MIRROR``, default ``/work/.mirror/intuitive-robots+beso/repo``; any ``git clone --bare`` of it
will do) into a scratch folder outside the project (``/tmp/beso_ref`` or ``$BESO_REF``; the commit
goes to ``.beso_commit``; a partial mirror may lack the environments' data blobs, which git names
on stderr and which are not needed) and makes a scratch venv (``/tmp/beso_venv`` or ``$BESO_VENV``) with the
project's torch 2.13.0 (pinned by ``constraints.txt``) and what the modules used here import:
hydra-core, omegaconf, einops, tqdm, numpy, scipy, torchsde, torchdiffeq and matplotlib (BESO has
no requirements file; its ``install.sh`` builds a conda environment). The environments and data
are not needed. One shim: ``beso_agent.py`` imports ``wandb`` for logging only; the worker puts a
stand-in module under that name (its ``log`` does nothing; the calls timed here never log).
BESO's code itself runs unmodified. Measured against commit
ef68824e533802ec0d7a5368ae21d013ce0df5c3 or the one in ``.beso_commit``.

What is measured (one process, ``torch.set_num_threads(threads)`` and ``OMP_NUM_THREADS``, float32,
CPU): BESO's own ``BesoAgent`` built by hydra from its ``configs/agents/beso_block_push.yaml`` with
the model ``configs/agents/model/diffusion_gpt.yaml`` and the values of
``configs/block_push_main_config.yaml`` (the block-push recipe: DiffusionGPT 240 wide, 4 layers,
12 heads, window 5, goal sequence 1, observation dim 10, action dim 2, dropout 0.05, goal dropout
0.1, EDM preconditioning with sigma_data 0.5, log-logistic noise levels in [0.05, 1], Adam lr 1e-4,
StepLR, EMA 0.999 every step, 3 DDIM steps on the exponential grid), ``device cpu``, and a
``Scaler`` fitted on synthetic data:

* a training step is ``BesoAgent.train_step(batch)`` on a batch of ``batch`` windows (the recipe's
  ``train_batch_size`` is 1024) in the layout of its block-push loader (``observation`` (B, 5, 10),
  ``goal_observation`` (B, 1, 10), ``action`` (B, 5, 2)): scaling, noise levels, the loss, backward,
  Adam, the scheduler and the EMA update. ``warmup`` steps untimed, then the median of ``steps``;
* a control decision is ``BesoAgent.predict(obs, extra_args={})`` for one robot, as BESO's
  block-push rollouts call it (``block_push_workspace.py``): the
  observation window and the previous actions are kept in the agent's own queues (filled by
  ``window`` untimed calls first), the EMA weights are swapped in and out, 3 DDIM steps sample the
  window's actions and the last one is executed. The median of ``decisions`` timed calls.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

from common import reference_commit, worker_main, worker_start  # bench/ is on the path (the script's folder)

VENV = Path(os.environ.get("BESO_VENV", "/tmp/beso_venv"))
REF = Path(os.environ.get("BESO_REF", "/tmp/beso_ref"))
MIRROR = Path(os.environ.get("BESO_MIRROR", "/work/.mirror/intuitive-robots+beso/repo"))
PACKAGES = ["hydra-core", "omegaconf", "einops", "tqdm", "numpy", "scipy", "torchsde", "torchdiffeq", "matplotlib"]
EXPORT = ("beso/__init__.py", "beso/agents", "beso/networks", "configs/agents", "configs/block_push_main_config.yaml")
NEEDED = ("beso/agents/diffusion_agents/beso_agent.py", "beso/agents/diffusion_agents/k_diffusion/score_gpts.py",
          "configs/agents/beso_block_push.yaml", "configs/agents/model/diffusion_gpt.yaml",
          "configs/block_push_main_config.yaml")
CHECK = ("import torch, hydra, omegaconf, einops, torchsde, torchdiffeq, scipy, matplotlib; "
         "assert torch.__version__.split('+')[0] == '2.13.0'")


def venv_python() -> Path:
    """The scratch venv's interpreter."""
    return VENV / "bin" / "python"


def find_reference() -> Path | None:
    """The exported BESO tree (``$BESO_REF`` or /tmp/beso_ref) when it holds what the worker needs."""
    return REF if all((REF / p).is_file() for p in NEEDED) else None


def export_reference(mirror: Path = MIRROR, dest: Path = REF) -> Path:
    """Export BESO's agents, networks and configurations from a bare mirror into ``dest`` (the
    environments and their data are not needed)."""
    from common import export_mirror

    export_mirror(mirror, dest, "intuitive-robots/beso", ".beso_commit", "BESO_MIRROR", Path(__file__).name, EXPORT)
    return dest


def setup(verbose: bool = True) -> Path:
    """Export BESO into ``REF`` and create the scratch venv unless both already work."""
    if find_reference() is None:
        export_reference()
    from common import scratch_venv

    return scratch_venv(VENV, CHECK, list(PACKAGES), verbose=verbose)


def measure_beso(steps: int = 10, warmup: int = 2, threads: int = 1, batch: int = 1024, decisions: int = 20,
                 seed: int = 0, timeout: float = 1800.0) -> dict[str, Any] | None:
    """Run this script in the scratch venv and return its JSON result; None when the venv or the
    checkout is missing (run ``--setup``)."""
    py, ref = venv_python(), find_reference()
    if not py.exists() or ref is None:
        return None
    from common import run_worker

    opts = dict(steps=steps, warmup=warmup, threads=threads, batch=batch, decisions=decisions, seed=seed)
    return run_worker(py, str(Path(__file__).resolve()), opts, timeout, ref)


# ---------------------------------------------------------------------------------------------- worker


def _agent_config(ref: Path) -> Any:
    """The block-push agent's configuration, composed as hydra's defaults list would: the main
    configuration's values, the agent file, its model and input encoder, on the CPU."""
    from omegaconf import OmegaConf

    main = OmegaConf.load(ref / "configs/block_push_main_config.yaml")
    agent = OmegaConf.load(ref / "configs/agents/beso_block_push.yaml")
    agent.pop("defaults")
    agent.model = OmegaConf.load(ref / "configs/agents/model/diffusion_gpt.yaml")
    agent.input_encoder = OmegaConf.load(ref / "configs/agents/input_encoder/no_encoder.yaml")
    for key in ("defaults", "hydra"):
        main.pop(key, None)
    cfg = OmegaConf.merge(main, {"agents": agent, "device": "cpu"})
    return cfg.agents


def measure(steps: int, warmup: int, threads: int, batch: int, decisions: int, seed: int) -> dict[str, Any]:
    """Time BESO's training step and one robot's control decision in this (venv) process, cwd = the
    checkout."""
    import importlib.metadata as md

    ref = worker_start(threads, seed, wandb=True)
    import hydra
    import numpy as np
    import torch
    from beso.networks.scaler.scaler_class import Scaler

    cfg = _agent_config(ref)
    agent = hydra.utils.instantiate(cfg)
    window, obs_dim, action_dim = int(cfg.window_size), int(cfg.model.inner_model.state_dim), int(
        cfg.model.inner_model.action_dim)
    rng = np.random.default_rng(seed)
    scaler = Scaler(rng.normal(size=(4096, obs_dim)).astype(np.float32),
                    rng.uniform(-1, 1, size=(4096, action_dim)).astype(np.float32), True, "cpu")
    agent.get_scaler(scaler)
    agent.set_bounds(scaler)

    def batch_of(n: int) -> dict[str, Any]:
        return {"observation": torch.from_numpy(rng.normal(size=(n, window, obs_dim)).astype(np.float32)),
                "goal_observation": torch.from_numpy(rng.normal(size=(n, 1, obs_dim)).astype(np.float32)),
                "action": torch.from_numpy(rng.uniform(-1, 1, size=(n, window, action_dim)).astype(np.float32))}

    batches = [batch_of(batch) for _ in range(warmup + steps)]
    times, cpu, losses = [], [], []
    for k, data in enumerate(batches):
        t0, c0 = time.perf_counter(), time.process_time()
        losses.append(agent.train_step(data))
        if k >= warmup:
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)

    agent.reset()
    goal = torch.from_numpy(rng.normal(size=(1, 1, obs_dim)).astype(np.float32))
    wall, proc, actions = [], [], []
    for k in range(window + decisions):  # the first `window` calls fill the agent's queues
        obs = {"observation": torch.from_numpy(rng.normal(size=(1, obs_dim)).astype(np.float32)),
               "goal_observation": goal}
        t0, c0 = time.perf_counter(), time.process_time()
        action = agent.predict(obs, extra_args={})  # as BESO's block-push rollouts call it
        if k >= window:
            wall.append(time.perf_counter() - t0)
            proc.append(time.process_time() - c0)
        actions.append(action)
    assert tuple(actions[-1].shape) == (1, action_dim), actions[-1].shape
    return {
        "train_step_s": statistics.median(times), "train_step_s_min": min(times), "train_step_s_all": times,
        "train_step_cpu_s_all": cpu, "batch": batch, "final_loss": losses[-1],
        "decision_s": statistics.median(wall), "decision_s_all": wall, "decision_cpu_s_all": proc,
        "actions_per_decision": 1, "nfe_per_decision": int(agent.num_sampling_steps),
        "actions_finite": bool(all(torch.isfinite(a).all() for a in actions)),
        "params": sum(p.numel() for p in agent.model.parameters()),
        "model": {"width": int(cfg.model.inner_model.embed_dim), "layers": int(cfg.model.inner_model.n_layers),
                  "heads": int(cfg.model.inner_model.n_heads), "window": window, "obs_dim": obs_dim,
                  "action_dim": action_dim, "tokens": 1 + int(cfg.goal_window_size) + 2 * window},
        "steps": steps, "warmup": warmup, "threads": threads, "decisions": decisions,
        "commit": reference_commit(ref, ".beso_commit"),
        "versions": {"torch": torch.__version__, "hydra": md.version("hydra-core"), "numpy": np.__version__,
                     "python": platform.python_version()},
    }



def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--setup", action="store_true", help=f"export BESO to {REF} and create the scratch venv {VENV} "
                   "(idempotent), then exit")
    p.add_argument("--steps", type=int, default=10, help="timed training steps")
    p.add_argument("--warmup", type=int, default=2, help="untimed training steps first")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--batch", type=int, default=1024, help="training windows per step (BESO's block push: 1024)")
    p.add_argument("--decisions", type=int, default=20, help="timed control decisions (one robot)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    if a.setup:
        setup()
        return
    if min(a.steps, a.batch, a.decisions) < 1 or a.warmup < 0:
        p.error("--steps, --batch and --decisions must be >= 1, --warmup >= 0")
    worker_main("BESO", find_reference(), REF, ("hydra", "torchsde"), __file__, venv_python(),
                lambda: measure(a.steps, a.warmup, a.threads, a.batch, a.decisions, a.seed))


if __name__ == "__main__":
    main()
