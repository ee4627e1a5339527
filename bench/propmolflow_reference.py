"""Speed of PropMolFlow's own code (Zeng et al. 2025, "PropMolFlow: property-guided molecule
generation with geometry-complete flow matching", github.com/cengc13/PropMolFlow) on this machine,
so the molecules benchmark can report ours as a ratio measured in the same run.

    python bench/propmolflow_reference.py --setup      # make /tmp/propmolflow_ref and /tmp/propmolflow_venv
    /tmp/propmolflow_venv/bin/python bench/propmolflow_reference.py --data DIR --steps 10 --threads 1

prints one JSON line ``{"train_step_s", "sample_s", "params", "commit", ...}``; from another
benchmark (any interpreter)::

    from propmolflow_reference import measure_propmolflow, write_molecules   # (bench/ on sys.path)
    write_molecules(mols, DIR)                  # our molecules in PropMolFlow's processed format
    ref = measure_propmolflow(DIR, steps=10)    # None when the venv or the checkout is missing

PropMolFlow is never copied into this repository nor installed in the project's environment.
``--setup`` exports a bare git mirror of the repository (``$PROPMOLFLOW_MIRROR``, default
``/work/.mirror/cengc13+PropMolFlow/repo``) into a scratch folder outside the project
(``/tmp/propmolflow_ref`` or ``$PROPMOLFLOW_REF``; the commit goes to ``.propmolflow_commit``) and
makes a scratch venv (``/tmp/propmolflow_venv`` or ``$PROPMOLFLOW_VENV``) with the project's torch
2.13.0 (pinned by ``constraints.txt``), DGL 2.1.0 (the newest DGL on PyPI, a CPU build; installed
without its dependencies, whose ``torchdata`` would move torch), pytorch-lightning 2.5.2 (its
``environment.yml``), RDKit, einops, useful_rdkit_utils, scipy, pandas, networkx and setuptools <
70 (DGL 2.1 imports ``setuptools.extern``).

**Stand-ins** (the worker registers modules under these names before importing PropMolFlow):
``dgl.graphbolt`` (DGL's data-loading library, which DGL 2.1 imports at start and which ships
compiled for torch <= 2.2 only; PropMolFlow does not use it: DGL's graphs and message passing, which
it does use, run unchanged), ``torch_scatter.segment_csr`` (for the purity sampling that its
recipes switch off; written with ``torch.segment_reduce``), and ``wandb`` (logging). Everything
else is PropMolFlow's code, unmodified. Measured against commit
1ee098cad5281780e761a254d0aa66ab059d24cd or the one in ``.propmolflow_commit``.

What is measured (one process, ``torch.set_num_threads(threads)`` and ``OMP_NUM_THREADS``, float32,
CPU): PropMolFlow's own ``FlowMol`` (its Lightning module, CTMC parameterisation for atom types,
charges and bonds, Gaussian positions aligned to the prior) built by its ``model_from_config`` from
its recipe ``configs/without_gaussian_expansion/alpha_sum.yaml`` without property conditioning (as
our recipe), with its vector field at our ``molecules:flow`` widths (128 scalars, 16 vectors, 4
molecule updates, RBF 48 up to 10 A; its edge features ``edge_hidden`` wide), on molecules given in
PropMolFlow's processed format (``write_molecules``; the benchmark passes our embedded default set,
so both sides see the same molecules):

* a training step is ``FlowMol.training_step(g)`` (its interpolants, the network, its losses;
  ``self.log`` is a no-op without a trainer) on a batch of ``batch`` molecules made by its own
  ``MoleculeDataset`` and ``collate`` (whose prior draw and alignment run untimed, as in its
  data-loader workers), then backward, gradient clipping by value 1.0 and Adam. Lightning's
  trainer loop is left out, which only favours PropMolFlow. ``warmup`` steps untimed, then the
  median of ``steps``;
* sampling is ``FlowMol.sample(n_atoms, n_timesteps)`` (its CTMC / Euler integration and the
  building of RDKit molecules) for ``num`` molecules whose atom counts are ``sizes``, at
  ``sample_steps`` (its sampling script's default: 100); the median of ``sample_repeats`` calls
  after an untimed one.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import time
import types
from pathlib import Path
from typing import Any

from common import reference_commit, worker_main, worker_start  # bench/ is on the path (the script's folder)

VENV = Path(os.environ.get("PROPMOLFLOW_VENV", "/tmp/propmolflow_venv"))
REF = Path(os.environ.get("PROPMOLFLOW_REF", "/tmp/propmolflow_ref"))
MIRROR = Path(os.environ.get("PROPMOLFLOW_MIRROR", "/work/.mirror/cengc13+PropMolFlow/repo"))
PACKAGES = ["pytorch-lightning==2.5.2", "rdkit", "einops", "useful_rdkit_utils", "scipy", "pandas", "networkx",
            "numpy<2", "psutil", "requests", "tqdm", "pydantic", "pyyaml"]
NO_DEPS = ["dgl==2.1.0"]
EXPORT = ("propmolflow", "configs", "data/qm9/")
NEEDED = ("propmolflow/models/flowmol.py", "propmolflow/model_utils/load.py",
          "propmolflow/data_processing/dataset.py", "configs/without_gaussian_expansion/alpha_sum.yaml",
          "data/qm9/train_data_marginal_dists.pt", "data/qm9/train_data_n_atoms_histogram.pt")
CHECK = ("import torch, pytorch_lightning, rdkit, einops, useful_rdkit_utils, scipy, pandas; "
         "import importlib.metadata as m; assert m.version('dgl') == '2.1.0'; "
         "assert torch.__version__.split('+')[0] == '2.13.0'")
ELEMENTS = ("C", "H", "N", "O", "F")  # PropMolFlow's QM9 atom map, in its order
STATS = ("train_data_marginal_dists.pt", "train_data_n_atoms_histogram.pt", "train_data_property_normalization.pt")


def venv_python() -> Path:
    """The scratch venv's interpreter."""
    return VENV / "bin" / "python"


def find_reference() -> Path | None:
    """The exported PropMolFlow tree when it holds what the worker needs."""
    return REF if all((REF / p).is_file() for p in NEEDED) else None


def setup(verbose: bool = True) -> Path:
    """Export PropMolFlow into ``REF`` and create the scratch venv unless both already work."""
    import subprocess

    from common import ROOT, export_mirror, scratch_venv

    if find_reference() is None:
        export_mirror(MIRROR, REF, "cengc13/PropMolFlow", ".propmolflow_commit", "PROPMOLFLOW_MIRROR",
                      Path(__file__).name, EXPORT)
    py = scratch_venv(VENV, CHECK, list(PACKAGES), no_deps=list(NO_DEPS), verbose=verbose)
    # DGL 2.1 imports setuptools.extern, gone from setuptools >= 71 (torch only declares a newer one)
    subprocess.run([str(py), "-m", "pip", "install", "-q", "-c", str(ROOT / "constraints.txt"), "setuptools<70"],
                   check=True)
    return py


def write_molecules(mols: list[Any], folder: Path) -> int:
    """Write molecules (objects with ``symbols``, ``positions`` (N, 3) in Angstrom, ``charges``
    and symmetric integer ``bonds`` (N, N), 4 for aromatic) made only of C, H, N, O and F into
    ``folder/train_data_processed.pt`` in PropMolFlow's processed format (one row per bonded
    pair i < j); returns how many were written. Molecules without bonds or with other elements
    are skipped."""
    import numpy as np
    import torch

    pos, types_, charges, btypes, bidx, n_atoms, n_bonds = [], [], [], [], [], [], []
    for m in mols:
        if m.bonds is None or any(s not in ELEMENTS for s in m.symbols):
            continue
        idx = torch.tensor([ELEMENTS.index(s) for s in m.symbols])
        upper = np.argwhere(np.triu(np.asarray(m.bonds), 1) > 0)
        pos.append(torch.as_tensor(np.asarray(m.positions), dtype=torch.float32))
        types_.append(torch.nn.functional.one_hot(idx, len(ELEMENTS)).bool())
        charges.append(torch.as_tensor(np.clip(np.asarray(m.charges), -2, 3), dtype=torch.int32))
        btypes.append(torch.as_tensor(np.minimum(np.asarray(m.bonds)[upper[:, 0], upper[:, 1]], 4), dtype=torch.int32))
        bidx.append(torch.as_tensor(upper, dtype=torch.int32).reshape(-1, 2))
        n_atoms.append(len(m.symbols))
        n_bonds.append(len(upper))
    if not pos:
        raise ValueError("no molecule with bonds made only of C, H, N, O and F")

    def ranges(counts: list[int]) -> Any:
        end = torch.tensor(counts).cumsum(0)
        return torch.stack([end - torch.tensor(counts), end], 1).to(torch.int32)

    folder.mkdir(parents=True, exist_ok=True)
    data = {"positions": torch.cat(pos), "atom_types": torch.cat(types_), "atom_charges": torch.cat(charges),
            "bond_types": torch.cat(btypes), "bond_idxs": torch.cat(bidx), "node_idx_array": ranges(n_atoms),
            "edge_idx_array": ranges(n_bonds)}
    tmp = folder / "train_data_processed.pt.tmp"
    torch.save(data, tmp)
    os.replace(tmp, folder / "train_data_processed.pt")
    return len(pos)


def measure_propmolflow(data: Path, sizes: list[int], steps: int = 10, warmup: int = 2, threads: int = 1,
                        batch: int = 32, edge_hidden: int = 128, sample_steps: int = 100, sample_repeats: int = 2,
                        seed: int = 0, timeout: float = 3600.0) -> dict[str, Any] | None:
    """Run this script in the scratch venv on the molecules in ``data`` (``write_molecules``) and
    return its JSON result; None when the venv or the checkout is missing (run ``--setup``)."""
    py, ref = venv_python(), find_reference()
    if not py.exists() or ref is None:
        return None
    from common import run_worker

    opts = dict(data=str(Path(data).resolve()), sizes=",".join(map(str, sizes)), steps=steps, warmup=warmup,
                threads=threads, batch=batch, edge_hidden=edge_hidden, sample_steps=sample_steps,
                sample_repeats=sample_repeats, seed=seed)
    return run_worker(py, str(Path(__file__).resolve()), opts, timeout, ref)


# ---------------------------------------------------------------------------------------------- worker


def install_stand_ins() -> None:
    """Modules under the names PropMolFlow imports but does not use here (see the module's
    docstring; ``wandb`` comes from ``common.worker_start``)."""
    import torch

    sys.modules.setdefault("dgl.graphbolt", types.ModuleType("dgl.graphbolt"))

    def segment_csr(src: torch.Tensor, indptr: torch.Tensor, reduce: str = "sum") -> torch.Tensor:
        if reduce != "sum" or src.dim() != 1:
            raise NotImplementedError("only the call ctmc_utils.py makes (a sum over a 1-D tensor) is provided")
        return torch.segment_reduce(src.double(), "sum", offsets=indptr.long()).to(src.dtype)

    scatter = types.ModuleType("torch_scatter")
    scatter.segment_csr = segment_csr  # type: ignore[attr-defined]
    sys.modules.setdefault("torch_scatter", scatter)


def _config(ref: Path, data: Path, edge_hidden: int) -> dict[str, Any]:
    """Its alpha recipe without conditioning, the vector field at our recipe's widths."""
    import yaml

    cfg = yaml.safe_load((ref / "configs/without_gaussian_expansion/alpha_sum.yaml").read_text())
    cfg["dataset"]["processed_data_dir"] = str(data)
    cfg["dataset"]["conditioning"]["enabled"] = False
    cfg["vector_field"].update(n_hidden_scalars=128, n_vec_channels=16, n_molecule_updates=4, rbf_dim=48,
                               rbf_dmax=10, n_hidden_edge_feats=edge_hidden)
    return cfg


def measure(a: argparse.Namespace) -> dict[str, Any]:
    """Time PropMolFlow's training step and sampling in this (venv) process, cwd = the checkout."""
    import importlib.metadata as md

    ref = worker_start(a.threads, a.seed, install_stand_ins, wandb=True)
    import torch

    data = Path(a.data)
    for name in STATS:  # its prior and atom-count statistics (QM9's), beside our molecules
        if not (data / name).is_file():
            shutil.copy(ref / "data/qm9" / name, data / name)
    from propmolflow.data_processing.dataset import MoleculeDataset, collate
    from propmolflow.model_utils.load import model_from_config

    cfg = _config(ref, data, a.edge_hidden)
    module = model_from_config(cfg)
    dataset = MoleculeDataset("train", cfg["dataset"], cfg["mol_fm"]["prior_config"])
    gen = torch.Generator().manual_seed(a.seed)
    batches = [collate([dataset[int(i)] for i in torch.randint(0, len(dataset), (a.batch,), generator=gen)])
               for _ in range(a.warmup + a.steps)]
    opt = module.configure_optimizers()
    module.batches_per_epoch = 10**6  # read from the trainer's loader otherwise
    module.train()
    times, cpu, losses = [], [], []
    for k, g in enumerate(batches):
        t0, c0 = time.perf_counter(), time.process_time()
        loss = module.training_step(g, k)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_value_(module.parameters(), 1.0)  # its trainer_args
        opt.step()
        losses.append(float(loss))
        if k >= a.warmup:
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)

    module.eval()
    n_atoms = torch.tensor(a.sizes)
    wall, proc = [], []
    for rep in range(a.sample_repeats + 1):
        torch.manual_seed(a.seed + rep)
        t0, c0 = time.perf_counter(), time.process_time()
        mols = module.sample(n_atoms, n_timesteps=a.sample_steps, device="cpu", conditional_generation=False)
        if rep:
            wall.append(time.perf_counter() - t0)
            proc.append(time.process_time() - c0)
    assert len(mols) == len(a.sizes), len(mols)
    return {
        "train_step_s": statistics.median(times), "train_step_s_all": times, "train_step_cpu_s_all": cpu,
        "final_loss": losses[-1], "batch": a.batch, "molecules": len(dataset),
        "sample_s": statistics.median(wall), "sample_s_all": wall, "sample_cpu_s_all": proc, "num": len(a.sizes),
        "sample_steps": a.sample_steps, "params": sum(p.numel() for p in module.parameters()),
        "model": {k: cfg["vector_field"][k] for k in ("n_hidden_scalars", "n_vec_channels", "n_molecule_updates",
                                                       "rbf_dim", "rbf_dmax", "n_hidden_edge_feats")},
        "steps": a.steps, "warmup": a.warmup, "threads": a.threads,
        "commit": reference_commit(ref, ".propmolflow_commit"),
        "versions": {"torch": torch.__version__, "dgl": md.version("dgl"),
                     "pytorch_lightning": md.version("pytorch-lightning"), "python": platform.python_version()},
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--setup", action="store_true", help=f"export PropMolFlow to {REF} and create the scratch venv "
                   f"{VENV} (idempotent), then exit")
    p.add_argument("--data", type=Path, help="folder with train_data_processed.pt (write_molecules)")
    p.add_argument("--sizes", default="", help="comma list of atom counts of the sampled molecules")
    p.add_argument("--steps", type=int, default=10, help="timed training steps")
    p.add_argument("--warmup", type=int, default=2, help="untimed training steps first")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--batch", type=int, default=32, help="training molecules per step")
    p.add_argument("--edge-hidden", type=int, default=128, help="its hidden edge features (its recipe: 128)")
    p.add_argument("--sample-steps", type=int, default=100, help="integration steps (its sampling script's 100)")
    p.add_argument("--sample-repeats", type=int, default=2, help="timed sampling calls")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    if a.setup:
        setup()
        return
    if a.data is None or not (a.data / "train_data_processed.pt").is_file():
        p.error("--data: a folder with train_data_processed.pt (see write_molecules)")
    try:
        a.sizes = [int(s) for s in a.sizes.split(",") if s]
    except ValueError:
        p.error(f"--sizes: a comma list of atom counts, got {a.sizes!r}")
    if not a.sizes or min(a.sizes) < 2:
        p.error("--sizes: at least one atom count, each >= 2")
    if min(a.steps, a.batch, a.edge_hidden, a.sample_steps, a.sample_repeats) < 1 or a.warmup < 0:
        p.error("--steps, --batch, --edge-hidden, --sample-steps and --sample-repeats must be >= 1, --warmup >= 0")
    worker_main("PropMolFlow", find_reference(), REF, ("pytorch_lightning", "rdkit"), __file__, venv_python(),
                lambda: measure(a))


if __name__ == "__main__":
    main()
