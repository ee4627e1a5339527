"""Speed of FrameFlow's own code (Yim et al. 2023, "Fast protein backbone generation with SE(3) flow
matching", github.com/microsoft/protein-frame-flow) on this machine, so the proteins benchmark can
report ours as a ratio measured in the same run.

    python bench/frameflow_reference.py --setup         # make /tmp/frameflow_ref and /tmp/frameflow_venv
    /tmp/frameflow_venv/bin/python bench/frameflow_reference.py --steps 10 --threads 1

prints one JSON line ``{"train_step_s", "sample_s", "params", "commit", ...}``; from another
benchmark (any interpreter)::

    from frameflow_reference import measure_frameflow   # (bench/ on sys.path)
    ref = measure_frameflow(steps=10)                   # None when the venv or the checkout is missing

FrameFlow is never copied into this repository nor installed in the project's environment.
``--setup`` exports a bare git mirror of the repository (``$FRAMEFLOW_MIRROR``, default
``/work/.mirror/microsoft+protein-frame-flow/repo``; any ``git clone --bare`` of it will do) into a
scratch folder outside the project (``/tmp/frameflow_ref`` or ``$FRAMEFLOW_REF``; the commit goes to
``.frameflow_commit``) and makes a scratch venv (``/tmp/frameflow_venv`` or ``$FRAMEFLOW_VENV``)
with the project's torch 2.13.0 (pinned by ``constraints.txt``) and the pins of FrameFlow's
``fm.yml`` where they install on it: pytorch-lightning 2.0.7, hydra-core 1.3.2, omegaconf 2.3.0,
dm-tree 0.1.8, einops 0.6.1, ml-collections 0.1.1, gputil 1.4.0, tmtools 0.0.3, with numpy < 2,
scipy, pandas, biopython and mdtraj (imported by its analysis module).

FrameFlow's repository carries its own copy of OpenFold's Python code (``openfold/``: rigid
transforms, residue constants), which runs on a CPU as is. **Stand-ins** (the worker puts modules
under these names before importing FrameFlow): ``torch_scatter`` (a compiled extension, imported
by ``data/utils.py`` for an alignment helper this benchmark does not call: names only, which raise
if called), and ``wandb`` (imported for logging only; its names do nothing). Everything else is
FrameFlow's code, unmodified. Measured against commit f50d8dbbdae827be291e9f73d732b61b195f8816 or
the one in ``.frameflow_commit``.

What is measured (one process, ``torch.set_num_threads(threads)`` and ``OMP_NUM_THREADS``, float32,
CPU): FrameFlow's own ``FlowModule`` (its Lightning module) with the values of its
``configs/base.yaml`` (rotations on the exponential schedule of rate 10, linear translations,
self-conditioning, AdamW lr 1e-4, its loss weights) and its ``FlowModel`` at the widths of our
``proteins:frames`` recipe (node 64, edge 32, 4 blocks, 4 IPA heads of 16 channels, 4 query/key and
8 value points, position and time embeddings 64 wide, edge features 32): FrameFlow's block also
has its 2-layer sequence transformer and an edge transition, which ours does not, so equal widths
are not equal work; the parameter counts are reported beside the times.

* a training step is ``FlowModule.training_step(batch)`` (its interpolant's corruption,
  self-conditioning on half the steps, the model, its losses; ``self.log`` is a no-op without a
  trainer) on a batch of ``batch`` backbones of ``length`` residues, then backward and AdamW.
  Lightning's trainer loop is left out, which only favours FrameFlow. ``warmup`` steps untimed
  (the first builds its IGSO(3) table), then the median of ``steps``;
* sampling is ``Interpolant.sample(num, length, model)`` (its Euler integration over
  ``num_timesteps`` = 100 steps from t = 0.01, self-conditioning, and the conversion of the
  trajectory to atom37): the median of ``sample_repeats`` calls after an untimed one.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
import types
from pathlib import Path
from typing import Any

from common import reference_commit, worker_main, worker_start  # bench/ is on the path (the script's folder)

VENV = Path(os.environ.get("FRAMEFLOW_VENV", "/tmp/frameflow_venv"))
REF = Path(os.environ.get("FRAMEFLOW_REF", "/tmp/frameflow_ref"))
MIRROR = Path(os.environ.get("FRAMEFLOW_MIRROR", "/work/.mirror/microsoft+protein-frame-flow/repo"))
PACKAGES = ["pytorch-lightning==2.0.7", "hydra-core==1.3.2", "omegaconf==2.3.0", "dm-tree==0.1.8", "einops==0.6.1",
            "ml-collections==0.1.1", "gputil==1.4.0", "tmtools==0.0.3", "numpy<2", "scipy", "pandas", "biopython",
            "mdtraj", "setuptools>=77,<81"]
EXPORT = ("models", "data", "openfold", "analysis", "experiments", "motif_scaffolding", "configs")
NEEDED = ("models/flow_module.py", "models/flow_model.py", "data/interpolant.py", "openfold/utils/rigid_utils.py",
          "configs/base.yaml", "configs/model.yaml")
CHECK = ("import torch, pytorch_lightning, hydra, omegaconf, tree, einops, ml_collections, GPUtil, tmtools, mdtraj, "
         "Bio, scipy, pandas; assert torch.__version__.split('+')[0] == '2.13.0'")
# our proteins:frames recipe's widths, in FrameFlow's configuration keys
OUR_SIZE = {"node_embed_size": 64, "edge_embed_size": 32,
            "node_features": {"c_pos_emb": 64, "c_timestep_emb": 64},
            "edge_features": {"feat_dim": 32},
            "ipa": {"c_hidden": 16, "no_heads": 4, "no_qk_points": 4, "no_v_points": 8, "seq_tfmr_num_heads": 4,
                    "num_blocks": 4}}


def venv_python() -> Path:
    """The scratch venv's interpreter."""
    return VENV / "bin" / "python"


def find_reference() -> Path | None:
    """The exported FrameFlow tree (``$FRAMEFLOW_REF`` or /tmp/frameflow_ref) when it holds what the
    worker needs."""
    return REF if all((REF / p).is_file() for p in NEEDED) else None


def setup(verbose: bool = True) -> Path:
    """Export FrameFlow into ``REF`` and create the scratch venv unless both already work."""
    from common import export_mirror, scratch_venv

    if find_reference() is None:
        export_mirror(MIRROR, REF, "microsoft/protein-frame-flow", ".frameflow_commit", "FRAMEFLOW_MIRROR",
                      Path(__file__).name, EXPORT)
    return scratch_venv(VENV, CHECK, list(PACKAGES), verbose=verbose)


def measure_frameflow(steps: int = 10, warmup: int = 2, threads: int = 1, batch: int = 6, length: int = 100,
                      num: int = 4, sample_repeats: int = 2, seed: int = 0,
                      timeout: float = 3600.0) -> dict[str, Any] | None:
    """Run this script in the scratch venv and return its JSON result; None when the venv or the
    checkout is missing (run ``--setup``)."""
    py, ref = venv_python(), find_reference()
    if not py.exists() or ref is None:
        return None
    from common import run_worker

    opts = dict(steps=steps, warmup=warmup, threads=threads, batch=batch, length=length, num=num,
                sample_repeats=sample_repeats, seed=seed)
    return run_worker(py, str(Path(__file__).resolve()), opts, timeout, ref)


# ---------------------------------------------------------------------------------------------- worker


def install_stand_ins() -> None:
    """A module under the name of FrameFlow's compiled import that this benchmark does not call
    (see the module's docstring; ``wandb`` comes from ``common.worker_start``)."""

    def unavailable(*args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("torch_scatter is not installed; this benchmark does not call it")

    scatter = types.ModuleType("torch_scatter")
    scatter.scatter_add = scatter.scatter = unavailable  # type: ignore[attr-defined]
    sys.modules.setdefault("torch_scatter", scatter)


def _config(ref: Path) -> Any:
    """FrameFlow's ``configs/base.yaml`` with its model section at our recipe's widths."""
    from omegaconf import OmegaConf

    base = OmegaConf.load(ref / "configs/base.yaml")
    base.pop("defaults", None)
    model = OmegaConf.load(ref / "configs/model.yaml")
    cfg = OmegaConf.merge(base, model, {"model": OUR_SIZE})
    cfg.experiment.checkpointer.dirpath = "/tmp/frameflow_ckpt"
    return cfg


def _random_backbones(n: int, length: int, gen: Any) -> dict[str, Any]:
    """``n`` chains of ``length`` residues in the layout of FrameFlow's loaders: CA positions in
    Angstrom (a random walk of 3.8 A steps, centred) and random residue rotations."""
    import torch

    steps = torch.nn.functional.normalize(torch.randn(n, length, 3, generator=gen), dim=-1) * 3.8
    trans = steps.cumsum(1)
    trans = trans - trans.mean(1, keepdim=True)
    q = torch.nn.functional.normalize(torch.randn(n, length, 4, generator=gen), dim=-1)
    w, x, y, z = q.unbind(-1)
    rots = torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
                        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
                        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1).view(n, length, 3, 3)
    ones = torch.ones(n, length)
    return {"trans_1": trans, "rotmats_1": rots, "res_mask": ones, "diffuse_mask": ones.clone(),
            "res_idx": torch.arange(length, dtype=torch.float32)[None].repeat(n, 1), "aatype": torch.zeros(
                n, length, dtype=torch.long)}


def measure(a: argparse.Namespace) -> dict[str, Any]:
    """Time FrameFlow's training step and sampling in this (venv) process, cwd = the checkout."""
    import importlib.metadata as md

    ref = worker_start(a.threads, a.seed, install_stand_ins, wandb=True)
    import torch
    from models.flow_module import FlowModule

    module = FlowModule(_config(ref))
    opt = module.configure_optimizers()
    gen = torch.Generator().manual_seed(a.seed)
    batches = [_random_backbones(a.batch, a.length, gen) for _ in range(a.warmup + a.steps)]
    module.train()
    times, cpu, losses = [], [], []
    for k, batch in enumerate(batches):
        t0, c0 = time.perf_counter(), time.process_time()
        loss = module.training_step(batch, k)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss))
        if k >= a.warmup:
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)

    module.eval()
    interpolant = module.interpolant
    interpolant.set_device("cpu")
    wall, proc = [], []
    for rep in range(a.sample_repeats + 1):
        torch.manual_seed(a.seed + rep)
        t0, c0 = time.perf_counter(), time.process_time()
        atom37, _, _ = interpolant.sample(a.num, a.length, module.model)
        if rep:
            wall.append(time.perf_counter() - t0)
            proc.append(time.process_time() - c0)
    final = atom37[-1]
    assert tuple(final.shape[:2]) == (a.num, a.length) and bool(torch.isfinite(final).all()), final.shape
    return {
        "train_step_s": statistics.median(times), "train_step_s_all": times, "train_step_cpu_s_all": cpu,
        "final_loss": losses[-1], "batch": a.batch, "length": a.length,
        "sample_s": statistics.median(wall), "sample_s_all": wall, "sample_cpu_s_all": proc, "num": a.num,
        "sample_steps": int(module._interpolant_cfg.sampling.num_timesteps),
        "params": sum(p.numel() for p in module.model.parameters()), "model": OUR_SIZE,
        "steps": a.steps, "warmup": a.warmup, "threads": a.threads,
        "commit": reference_commit(ref, ".frameflow_commit"),
        "versions": {"torch": torch.__version__, "pytorch_lightning": md.version("pytorch-lightning"),
                     "python": platform.python_version()},
    }



def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--setup", action="store_true", help=f"export FrameFlow to {REF} and create the scratch venv "
                   f"{VENV} (idempotent), then exit")
    p.add_argument("--steps", type=int, default=10, help="timed training steps")
    p.add_argument("--warmup", type=int, default=2, help="untimed training steps first")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--batch", type=int, default=6, help="training backbones per step")
    p.add_argument("--length", type=int, default=100, help="residues per backbone")
    p.add_argument("--num", type=int, default=4, help="backbones per sampling call")
    p.add_argument("--sample-repeats", type=int, default=2, help="timed sampling calls")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    if a.setup:
        setup()
        return
    if min(a.steps, a.batch, a.length, a.num, a.sample_repeats) < 1 or a.warmup < 0:
        p.error("--steps, --batch, --length, --num and --sample-repeats must be >= 1, --warmup >= 0")
    worker_main("FrameFlow", find_reference(), REF, ("pytorch_lightning", "tree"), __file__, venv_python(),
                lambda: measure(a))


if __name__ == "__main__":
    main()
