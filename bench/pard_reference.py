"""Speed of PARD's own code (Zhao, Ding and Akoglu, NeurIPS 2024, "Pard: Permutation-Invariant
Autoregressive Diffusion for Graph Generation", github.com/LingxiaoShawn/Pard) on this machine, so
the graphs benchmark can report ours as a ratio measured in the same run.

    python bench/pard_reference.py --setup         # make /tmp/pard_ref and /tmp/pard_venv (idempotent)
    /tmp/pard_venv/bin/python bench/pard_reference.py --steps 10 --threads 1 --sample-steps 40 --num 20

prints one JSON line ``{"train_step_s", "sample_s", "params", "stand_in", "commit", ...}``; from
another benchmark (any interpreter)::

    from pard_reference import measure_pard         # (bench/ on sys.path)
    ref = measure_pard(steps=10, graphs=path)        # None when the venv or the checkout is missing

PARD is never copied into this repository nor installed in the project's environment.
``--setup`` exports the tree of a bare git mirror of the repository (``$PARD_MIRROR``, default
``/work/.mirror/LingxiaoShawn+Pard/repo``; any ``git clone --bare`` of it will do) into a scratch
folder outside the project (``/tmp/pard_ref`` or ``$PARD_REF``; the commit goes to
``.pard_commit``) and makes a scratch venv (``/tmp/pard_venv`` or ``$PARD_VENV``) with the
project's torch 2.13.0 (pinned by ``constraints.txt``; PARD's ``setup.sh`` installs torch 2.3.1
with CUDA 12.1, which has no wheel here) and what the modules used here import:
``torch_geometric``, ``lightning`` and ``einops`` (unpinned in ``setup.sh``: their current
versions), numpy and networkx. The worker imports ``pard.parallel.task`` (PARD's Lightning
modules), ``pard.parallel.transform`` and ``pard.parallel.utils`` from the checkout, unmodified;
``pard.dataset`` / ``pard.analysis`` (rdkit, graph-tool, moses, pyemd: evaluation only) are not
imported, nor are yacs, tensorboard and wandb, which only ``main.py`` uses.

**The stand-in.** ``setup.sh`` installs ``pyg_lib``, ``torch_scatter``, ``torch_sparse``,
``torch_cluster`` and ``torch_spline_conv`` from the wheel index of pyg.org, which cannot be
reached from here (only PyPI can, and PyPI has only torch_scatter's source, whose build needs a
compiler run against this torch). PARD's code imports ``scatter``, ``scatter_add`` and
``scatter_max`` from ``torch_scatter`` (``parallel/transform.py``, ``parallel/utils.py``,
``parallel/task.py``) and nothing from the other four (torch_geometric runs without them). So
``--setup`` writes a module ``torch_scatter`` into the venv (our code: :func:`scatter`,
:func:`scatter_add`, :func:`scatter_max` below, with torch_scatter's signatures and results:
the index broadcast along ``dim``, ``out`` accumulated into, ``dim_size``, empty groups 0 and
``scatter_max``'s argmax ``src.size(dim)`` there), built on ``Tensor.scatter_add_`` /
``scatter_reduce_``. The stand-in times its own calls; the worker reports their share of PARD's
timed training steps and generation calls (``stand_in``; under 0.5 % in the smoke runs at the
recipe's sizes), so the stand-in cannot be what makes PARD slow. The backward of its
``scatter_add`` in the block-size decoder (a gather of the gradient) is not in that share; it is
of the size of the forward. The calls of the one-off data transform are counted apart
(``stand_in.prepare``).

What is measured (one process, ``torch.set_num_threads(threads)`` and ``OMP_NUM_THREADS``, float32,
CPU), with PARD's own classes at the size of our ``graphs:community_small_pard`` recipe
(``configs/graphs/community_small_pard.yaml``; the caller passes its sizes): its network
``PPGNTransformer`` of ``layers`` blocks (node attention + causal PPGN), node width ``hidden``,
pair width ``edge_hidden``, ``heads`` heads, blocks of the structural partial order with
``max_hops`` hops, ``sample_steps`` diffusion steps per block (PARD's discrete time: the model is
built with ``num_diffusion_steps = sample_steps``, which its training uses too; 40 for
community-small in both PARD's ``configs/comm20.yaml`` and our recipe, so the recipe's steps are
also each side's default).
Everything else is PARD's ``configs/comm20.yaml`` / ``config.py`` default: masked BatchNorm,
pre-norm, ``add_transpose``, input residual, absolute block ids, cosine schedule, VLB + 0.01 CE,
AdamW with weight decay 0.01, cosine learning rate with 5 warm-up epochs. Two settings follow our
recipe instead of ``comm20.yaml``: uniform noise (ours; comm20 uses the marginal, whose cost is
the same), and ``combine_training True``: the next block's size and degree predicted by heads of
the diffusion network, trained in the same step (PARD's single-model option, which is what our
network does; comm20's default trains a second network of the same size for them in a separate
run). Lightning's module, built as PARD's ``main.py`` builds it (its ``initialize_weights`` is
left out: it changes no time).

* data: community-small graphs (a JSON file of edge lists from the caller, ``--graphs``: the
  training graphs of our recipe's embedded ``community_small`` data, so both sides see the same
  graphs; without it, 80 graphs of ``networkx.random_partition_graph`` with two communities of
  6-10 nodes, p_in 0.7) in the layout of PARD's ``SpectreGraphDataset`` (node and edge classes
  0), transformed once before the clock starts, as PARD's ``main.py`` does ("do transform
  offline"): ``ToOneHot`` (with the virtual types) and ``ToParallelBlocks(max_hops,
  add_virtual_blocks=True)``; the marginals and block statistics from PARD's ``parallel/utils``;
* a training step is what Lightning's automatic optimisation does with PARD's module: the next
  batch of ``batch`` graphs from torch_geometric's ``DataLoader`` (shuffled, in this process;
  PARD uses worker processes), ``zero_grad``, ``training_step`` (PARD's own: dense batch,
  forward noising at a random step, the network, node and edge losses and the block-size losses),
  ``backward``, the AdamW ``step``, and the epoch's scheduler step when a pass over the graphs
  ends. Lightning's trainer loop itself is not run (it only adds time to the reference); PARD
  clips no gradients and keeps no EMA (ours does both, in the time compared). ``warmup`` steps
  untimed, then the median of ``steps``;
* generation calls ``AutoregressiveDiffusion.generate(num)``, PARD's sampler: per block, the
  block-size heads (one network pass, two decoder passes) and ``sample_steps`` denoising
  passes on the graph so far (the dense batch grows block by block), from the weights just
  trained. Untrained weights would draw block sizes at random and so make graphs of any size; to
  time both sides on the same work, the block sizes and degrees are those of the first ``num``
  training graphs: PARD's ``sample_categorical`` in ``pard.parallel.task`` (which draws only the
  first block's size and the blocks' sizes and degrees) is wrapped to run as usual and then return
  the training graphs' values, and the caller does the same to ours. Every network pass is still
  run and timed. The median of ``sample_repeats`` calls after an untimed call on 2 graphs; the
  timed span ends with PARD's dense batch (its conversion to lists for the metrics is left out;
  ours converts to networkx graphs inside its time).

The clock is wall time; the process CPU time is returned too, so a step whose wall time is far
above cpu / threads was slowed by other processes.

Equivalences, to build ours at the same size (``configs/graphs/community_small_pard.yaml``):

==============================================  ===============================================
PARD (comm20.yaml + config.py, as run here)     polydiff
==============================================  ===============================================
PPGNTransformer hidden_size H, edge_hidden E,   model pard: hidden H, edge_hidden E, layers L,
num_layers L, num_heads h (from our recipe)     heads h (LayerNorm where PARD has BatchNorm)
diffusion.max_hops (from our recipe)            data.max_hops
diffusion.num_steps 40                          sample.steps 40 (per block)
uniform_noise True, cosine schedule             process: noise uniform, mask_schedule cosine
VLB + 0.01 CE (discrete time)                   cross-entropy of the clean tokens (continuous t)
combine_training True (block size + degree)     the "next" head (size, degree) as a loss term
AdamW lr, wd 0.01, no clipping, no EMA          AdamW lr, weight_decay 0.01, grad_clip 1, EMA
==============================================  ===============================================
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import inspect
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
from common import reference_commit, worker_main, worker_start  # bench/ is on the path (the script's folder)

VENV = Path(os.environ.get("PARD_VENV", "/tmp/pard_venv"))
REF = Path(os.environ.get("PARD_REF", "/tmp/pard_ref"))
MIRROR = Path(os.environ.get("PARD_MIRROR", "/work/.mirror/LingxiaoShawn+Pard/repo"))
# setup.sh: torch 2.3.1 (not installable here: the project's 2.13.0), torch_geometric, lightning, einops unpinned;
# pyg_lib / torch_scatter / torch_sparse / torch_cluster / torch_spline_conv from pyg.org (torch_scatter: a stand-in)
PACKAGES = ["torch_geometric", "lightning", "einops", "numpy", "networkx"]
EXPORT = ("pard/__init__.py", "pard/diffusion.py", "pard/parallel", "pard/configs", "main.py", "setup.sh", "LICENSE")
NEEDED = ("pard/__init__.py", "pard/diffusion.py", "pard/parallel/task.py", "pard/parallel/network.py",
          "pard/parallel/transform.py", "pard/parallel/utils.py", "pard/parallel/conditioning.py",
          "pard/configs/comm20.yaml")
CHECK = ("import torch, torch_geometric, lightning, einops, networkx; "
         "assert torch.__version__.split('+')[0] == '2.13.0'")
STAND_IN_MARK = "polydiff stand-in"


def venv_python() -> Path:
    """The scratch venv's interpreter."""
    return VENV / "bin" / "python"


def find_reference() -> Path | None:
    """The exported PARD tree (``$PARD_REF`` or /tmp/pard_ref) when it holds what the worker needs."""
    return REF if all((REF / p).is_file() for p in NEEDED) else None


# ---------------------------------------------------------------------------------------------- the stand-in
# torch_scatter's three functions that PARD imports, in PyTorch; --setup writes their source into the venv


_SCATTER_CLOCK = {"seconds": 0.0, "calls": 0, "depth": 0}


def _clocked(fn: Any) -> Any:
    """Add the wall time of every outermost call of ``fn`` to ``_SCATTER_CLOCK``."""

    @functools.wraps(fn)
    def timed(*args: Any, **kwargs: Any) -> Any:
        _SCATTER_CLOCK["depth"] += 1
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            _SCATTER_CLOCK["depth"] -= 1
            if _SCATTER_CLOCK["depth"] == 0:
                _SCATTER_CLOCK["seconds"] += time.perf_counter() - t0
                _SCATTER_CLOCK["calls"] += 1

    return timed


def _spread(index: torch.Tensor, src: torch.Tensor, dim: int, dim_size: int | None) -> tuple[torch.Tensor, list[int]]:
    """``index`` broadcast to ``src``'s shape as torch_scatter does (a 1-D index runs along
    ``dim``, a shorter one over the leading dimensions), and the shape of the output: ``src``'s,
    with ``dim_size`` (default ``index.max() + 1``) entries along ``dim``."""
    if index.dim() == 1:
        index = index.view([1] * dim + [-1])
    while index.dim() < src.dim():
        index = index.unsqueeze(-1)
    index = index.expand_as(src)
    size = list(src.shape)
    size[dim] = dim_size if dim_size is not None else (int(index.max()) + 1 if index.numel() else 0)
    return index, size


@_clocked
def scatter(src: torch.Tensor, index: torch.Tensor, dim: int = -1, out: torch.Tensor | None = None,
            dim_size: int | None = None, reduce: str = "sum") -> torch.Tensor:
    """torch_scatter's ``scatter``: ``reduce`` (sum / add / mean / mul / min / max) of ``src``'s
    entries into the slots named by ``index`` along ``dim``; into ``out`` when given (its values
    take part), else into zeros (empty slots stay 0)."""
    dim = dim + src.dim() if dim < 0 else dim
    index, size = _spread(index, src, dim, dim_size)
    if reduce in ("min", "max"):
        return _extreme(src, index, size, dim, out, "amin" if reduce == "min" else "amax")[0]
    out, keep = (src.new_zeros(size), False) if out is None else (out, True)
    if reduce in ("sum", "add"):
        return out.scatter_add_(dim, index, src)
    if reduce not in ("mean", "mul"):
        raise ValueError(f"reduce must be sum, add, mean, mul, min or max, got {reduce!r}")
    return out.scatter_reduce_(dim, index, src, "mean" if reduce == "mean" else "prod", include_self=keep)


@_clocked
def scatter_add(src: torch.Tensor, index: torch.Tensor, dim: int = -1, out: torch.Tensor | None = None,
                dim_size: int | None = None) -> torch.Tensor:
    """torch_scatter's ``scatter_add``: the sum of ``src``'s entries per slot of ``index``."""
    return scatter(src, index, dim, out, dim_size, "sum")


@_clocked
def scatter_max(src: torch.Tensor, index: torch.Tensor, dim: int = -1, out: torch.Tensor | None = None,
                dim_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """torch_scatter's ``scatter_max``: the maximum per slot and the position along ``dim`` of an
    entry that attains it (``src.size(dim)`` for an empty slot, whose maximum is 0)."""
    dim = dim + src.dim() if dim < 0 else dim
    index, size = _spread(index, src, dim, dim_size)
    return _extreme(src, index, size, dim, out, "amax")


def _extreme(src: torch.Tensor, index: torch.Tensor, size: list[int], dim: int, out: torch.Tensor | None,
             how: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``how`` (amax / amin) per slot, into ``out`` or zeros of shape ``size``, and its
    argument, for :func:`scatter_max` / :func:`scatter`."""
    out, keep = (src.new_zeros(size), False) if out is None else (out, True)
    out = out.scatter_reduce_(dim, index, src, how, include_self=keep)
    n = src.size(dim)
    pos = torch.arange(n, device=src.device).view([1] * dim + [-1] + [1] * (src.dim() - dim - 1)).expand_as(src)
    hit = src == out.gather(dim, index)
    arg = torch.full(out.shape, n, dtype=torch.long, device=src.device)
    arg.scatter_reduce_(dim, index, torch.where(hit, pos, torch.full_like(pos, n)), "amin", include_self=True)
    return out, arg


STAND_IN = (_clocked, _spread, scatter, scatter_add, scatter_max, _extreme)


def stand_in_source() -> str:
    """The text of the ``torch_scatter`` module that ``--setup`` writes into the venv."""
    head = (f'"""{STAND_IN_MARK}: torch_scatter\'s scatter, scatter_add and scatter_max in PyTorch, written by '
            'polydiff\'s bench/pard_reference.py --setup (the wheels of pyg.org cannot be reached here)."""\n\n'
            "from __future__ import annotations\n\nimport functools\nimport time\nfrom typing import Any\n\n"
            "import torch\n\n__version__ = '2.1.2+standin'\n"
            "_SCATTER_CLOCK = {'seconds': 0.0, 'calls': 0, 'depth': 0}\n\n\n")
    return head + "\n\n".join(inspect.getsource(f) for f in STAND_IN)


def install_stand_in(py: Path) -> Path:
    """Write the ``torch_scatter`` stand-in into the site-packages of the venv of ``py``."""
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    pkg = Path(site) / "torch_scatter"
    pkg.mkdir(exist_ok=True)
    (pkg / "__init__.py").write_text(stand_in_source())
    subprocess.run([str(py), "-c", f"import torch_scatter; assert {STAND_IN_MARK!r} in torch_scatter.__doc__"],
                   check=True)
    return pkg


def setup(verbose: bool = True) -> Path:
    """Export PARD into ``REF``, create the scratch venv unless it already works, and (re)write
    the ``torch_scatter`` stand-in into it."""
    from common import export_mirror, scratch_venv

    if find_reference() is None:
        export_mirror(MIRROR, REF, "LingxiaoShawn/Pard", ".pard_commit", "PARD_MIRROR", Path(__file__).name, EXPORT)
        missing = [p for p in NEEDED if not (REF / p).is_file()]
        if missing:
            sys.exit(f"the PARD mirror {MIRROR} lacks {', '.join(missing)}: fetch a complete copy")
    py = scratch_venv(VENV, CHECK, list(PACKAGES), verbose=verbose)
    pkg = install_stand_in(py)
    if verbose:
        print(f"{pkg}: torch_scatter stand-in written", file=sys.stderr)
    return py


def measure_pard(steps: int = 10, warmup: int = 2, threads: int = 1, batch: int = 80, num: int = 20,
                 sample_steps: int = 40, sample_repeats: int = 2, hidden: int = 64, edge_hidden: int = 32,
                 layers: int = 4, heads: int = 4, max_hops: int = 1, lr: float = 5e-4, graphs: Path | None = None,
                 seed: int = 0, timeout: float = 3600.0) -> dict[str, Any] | None:
    """Run this script in the scratch venv (in the PARD checkout) and return its JSON result;
    None when the venv or the checkout is missing (run ``--setup``). ``graphs``: a JSON file of
    ``[[num_nodes, [[u, v], ...]], ...]`` (:func:`write_graphs`)."""
    py, ref = venv_python(), find_reference()
    if not py.exists() or ref is None:
        return None
    from common import run_worker

    opts: dict[str, Any] = dict(steps=steps, warmup=warmup, threads=threads, batch=batch, num=num,
                                sample_steps=sample_steps, sample_repeats=sample_repeats, hidden=hidden,
                                edge_hidden=edge_hidden, layers=layers, heads=heads, max_hops=max_hops, lr=lr,
                                seed=seed)
    if graphs is not None:
        opts["graphs"] = Path(graphs).resolve()
    return run_worker(py, str(Path(__file__).resolve()), opts, timeout, ref)


def write_graphs(graphs: Any, path: Path) -> Path:
    """networkx graphs as the worker's ``--graphs`` file (nodes relabelled 0..n-1 in their order)."""
    rows = []
    for g in graphs:
        ids = {v: i for i, v in enumerate(g.nodes)}
        rows.append([len(ids), [[ids[u], ids[v]] for u, v in g.edges if u != v]])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows))
    return path


# ---------------------------------------------------------------------------------------------- worker


def _edge_lists(graphs: Path | None, seed: int) -> list[tuple[int, list[list[int]]]]:
    """The caller's graphs, or 80 community-small-like graphs drawn with networkx."""
    if graphs is not None:
        return [(int(n), edges) for n, edges in json.loads(Path(graphs).read_text())]
    import networkx as nx
    import numpy as np

    rng = np.random.default_rng(seed)
    out = []
    for i in range(80):
        half = int(rng.integers(6, 11))
        g = nx.random_partition_graph([half, half], 0.7, 0.05 / half, seed=seed * 1000 + i)
        out.append((2 * half, [[int(u), int(v)] for u, v in g.edges]))
    return out


@contextlib.contextmanager
def _forced_blocks(task: Any, sizes: torch.Tensor, degrees: torch.Tensor) -> Any:
    """For one ``generate`` call: ``task.sample_categorical`` (PARD's draws of the first block's size and of
    each block's size, then degree, in that order) draws as usual and returns the values of
    ``sizes`` / ``degrees`` (graphs x blocks, 0 after the last block) instead."""
    original, calls = task.sample_categorical, [0]

    def draw(prob: torch.Tensor) -> torch.Tensor:
        drawn = original(prob)
        c = calls[0]
        calls[0] += 1
        table = (sizes if c % 2 == 0 else degrees)[: drawn.shape[0]]
        col = table[:, c // 2] if c // 2 < table.shape[1] else torch.zeros_like(table[:, 0])
        return col.to(drawn.device, drawn.dtype)

    task.sample_categorical = draw
    try:
        yield
    finally:
        task.sample_categorical = original


def measure(steps: int, warmup: int, threads: int, batch: int, num: int, sample_steps: int, sample_repeats: int,
            hidden: int, edge_hidden: int, layers: int, heads: int, max_hops: int, lr: float, graphs: Path | None,
            seed: int) -> dict[str, Any]:
    """Time PARD's training step and generation in this (venv) process, cwd = the checkout."""
    import importlib.metadata as md

    ref = worker_start(threads, seed)
    import torch_scatter
    from pard.parallel import task
    from pard.parallel.transform import ToOneHot, ToParallelBlocks
    from pard.parallel.utils import get_init_block_size_degree_marginal_distrbution, get_node_edge_marginal_distribution
    from torch_geometric.data import Data
    from torch_geometric.loader import DataLoader

    clock = torch_scatter._SCATTER_CLOCK
    # data in the layout of PARD's SpectreGraphDataset, transformed once as its main.py does
    t0, s0 = time.perf_counter(), clock["seconds"]
    one_hot = ToOneHot(1, 1, virtual_node_type=1, virtual_edge_type=1, has_zero_edgetype=True)
    to_blocks = ToParallelBlocks(max_hops=max_hops, add_virtual_blocks=True)
    data, lists = [], _edge_lists(graphs, seed)
    for n, edges in lists:
        ei = torch.tensor(edges, dtype=torch.long).reshape(-1, 2).t()
        ei = torch.cat([ei, ei.flip(0)], 1)
        data.append(to_blocks(one_hot(Data(x=torch.zeros(n, 1, dtype=torch.long), edge_index=ei,
                                           edge_attr=torch.zeros(ei.shape[1], dtype=torch.long)))))
    node_dist, edge_dist = get_node_edge_marginal_distribution(data)
    init_size, init_degree, n_blocks = get_init_block_size_degree_marginal_distrbution(data)
    prepare = {"seconds": time.perf_counter() - t0, "stand_in_seconds": clock["seconds"] - s0}
    with contextlib.redirect_stdout(sys.stderr):  # the constructor prints its noise vectors
        model = task.AutoregressiveDiffusion(
            one_hot.num_node_classes, one_hot.num_edge_classes, max(n_blocks) + 3, len(init_size), len(init_degree),
            channels=hidden, num_layers=layers, norm="bn", prenorm=True, add_transpose=True,
            edge_channels=edge_hidden, n_head=heads, transformer_only=False, use_input=True,
            lr=lr, wd=0.01, lr_patience=100, lr_warmup=5, lr_scheduler="cosine", lr_epochs=1000,
            coeff_ce=0.01, ce_only=False, num_diffusion_steps=sample_steps, noise_schedule_type="cosine",
            noise_schedule_args={}, uniform_noise=True, blockwise_timestep=False,
            node_marginal_distribution=node_dist, edge_marginal_distribution=edge_dist,
            initial_blocksize_distribution=init_size, blocksize_model=None, combine_training=True,
            use_relative_blockid=False, use_absolute_blockid=True, batched_sequential=False)
    opt = model.configure_optimizers()
    optimizer, scheduler = opt["optimizer"], opt["lr_scheduler"]["scheduler"]
    loader = DataLoader(data, batch_size=batch, shuffle=True, num_workers=0)
    batches = iter(loader)

    model.train()
    times, cpu, collate, shares, losses = [], [], [], [], []
    for k in range(warmup + steps):
        t0, c0, s0 = time.perf_counter(), time.process_time(), clock["seconds"]
        try:
            graphs_batch = next(batches)
        except StopIteration:  # an epoch ended: Lightning steps the "epoch" scheduler
            scheduler.step()
            batches = iter(loader)
            graphs_batch = next(batches)
        t1 = time.perf_counter()
        optimizer.zero_grad()
        loss = model.training_step(graphs_batch, k)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if k >= warmup:
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
            collate.append(t1 - t0)
            shares.append(clock["seconds"] - s0)

    # generation with the block sizes and degrees of the first `num` graphs
    width = max(int(d.block_size.numel()) for d in data[:num])
    sizes = torch.zeros(num, width, dtype=torch.long)
    degrees = torch.zeros(num, width, dtype=torch.long)
    for i, d in enumerate(data[:num]):
        sizes[i, : d.block_size.numel()] = d.block_size
        degrees[i, : d.block_degree.numel()] = d.block_degree
    calls = [0]
    model.net.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    model.eval()
    with _forced_blocks(task, sizes, degrees):
        model.generate(batch_size=min(num, 2))  # untimed
    wall, proc, stand_in, per_call = [], [], [], []
    for r in range(sample_repeats):
        torch.manual_seed(seed * 1000 + r)
        calls[0] = 0
        with _forced_blocks(task, sizes, degrees):
            t0, c0, s0 = time.perf_counter(), time.process_time(), clock["seconds"]
            out = model.generate(batch_size=num)
            wall.append(time.perf_counter() - t0)
            proc.append(time.process_time() - c0)
        stand_in.append(clock["seconds"] - s0)
        per_call.append(calls[0])
    present = out.nodes_blockid >= 0
    return {
        "train_step_s": statistics.median(times), "train_step_s_min": min(times), "train_step_s_all": times,
        "train_step_cpu_s_all": cpu, "collate_s_all": collate, "batch": batch, "final_loss": losses[-1],
        "sample_s": statistics.median(wall), "sample_s_all": wall, "sample_cpu_s_all": proc, "num": num,
        "sample_steps": sample_steps, "network_calls": per_call[-1],
        "nodes_per_graph": present.sum(-1).float().mean().item(),
        "blocks_per_graph": (out.nodes_blockid.amax(-1) + 1).float().mean().item(),
        "forced_nodes_per_graph": sizes.sum(1).float().mean().item(),
        "forced_blocks_per_graph": (sizes > 0).sum(1).float().mean().item(),
        "stand_in": {"module": torch_scatter.__doc__.split(":")[0], "prepare": prepare,
                     "train_share": sum(shares) / sum(times), "sample_share": sum(stand_in) / sum(wall),
                     "train_seconds_per_step": statistics.median(shares)},
        "params": {"total": sum(p.numel() for p in model.parameters()),
                   "net": sum(p.numel() for p in model.net.parameters())},
        "model": {"hidden": hidden, "edge_hidden": edge_hidden, "layers": layers, "heads": heads,
                  "max_hops": max_hops, "norm": "bn", "combine_training": True, "uniform_noise": True,
                  "max_num_blocks": max(n_blocks) + 3, "max_block_size": len(init_size),
                  "max_block_degree": len(init_degree)},
        "graphs": {"count": len(data), "nodes_mean": statistics.fmean(n for n, _ in lists),
                   "blocks_mean": statistics.fmean(n_blocks), "source": str(graphs) if graphs else "networkx"},
        "steps": steps, "warmup": warmup, "threads": threads, "sample_repeats": sample_repeats,
        "commit": reference_commit(ref, ".pard_commit"),
        "versions": {"torch": torch.__version__, "torch_geometric": md.version("torch_geometric"),
                     "lightning": md.version("lightning"), "torch_scatter": "stand-in (bench/pard_reference.py)",
                     "python": platform.python_version()},
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--setup", action="store_true", help=f"export PARD to {REF}, create the scratch venv {VENV} and "
                   "write the torch_scatter stand-in into it (idempotent), then exit")
    p.add_argument("--steps", type=int, default=10, help="timed training steps")
    p.add_argument("--warmup", type=int, default=2, help="untimed training steps first")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--batch", type=int, default=80, help="graphs per training step (our recipe: 80)")
    p.add_argument("--num", type=int, default=20, help="graphs per generation call")
    p.add_argument("--sample-steps", type=int, default=40, help="diffusion steps per block (PARD comm20: 40)")
    p.add_argument("--sample-repeats", type=int, default=2, help="timed generation calls (the median is reported)")
    p.add_argument("--hidden", type=int, default=64, help="node width (our recipe: 64; PARD comm20: 128)")
    p.add_argument("--edge-hidden", type=int, default=32, help="pair width (both: 32)")
    p.add_argument("--layers", type=int, default=4, help="layers (our recipe: 4; PARD comm20: 6)")
    p.add_argument("--heads", type=int, default=4, help="attention heads (our recipe: 4; PARD: 8)")
    p.add_argument("--max-hops", type=int, default=1, help="hops of the block order (our recipe: 1; PARD: 3)")
    p.add_argument("--lr", type=float, default=5e-4, help="AdamW learning rate (both: 5e-4)")
    p.add_argument("--graphs", type=Path, help="JSON [[num_nodes, [[u, v], ...]], ...] (default: networkx graphs)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    if a.setup:
        setup()
        return
    if min(a.steps, a.batch, a.num, a.sample_steps, a.sample_repeats, a.layers, a.heads) < 1 or a.warmup < 0:
        p.error("--steps, --batch, --num, --sample-steps, --sample-repeats, --layers and --heads must be >= 1, "
                "--warmup >= 0")
    worker_main("PARD", find_reference(), REF, ("torch_geometric", "lightning", "torch_scatter"), __file__,
                venv_python(), lambda: measure(a.steps, a.warmup, a.threads, a.batch, a.num, a.sample_steps,
                                               a.sample_repeats, a.hidden, a.edge_hidden, a.layers, a.heads,
                                               a.max_hops, a.lr, a.graphs, a.seed))


if __name__ == "__main__":
    main()
