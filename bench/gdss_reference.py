"""Speed of GDSS's own code (Jo, Lee and Hwang, ICML 2022, "Score-based Generative Modeling of
Graphs via the System of Stochastic Differential Equations", github.com/harryjo97/GDSS) on this
machine, so the graphs benchmark can report ours as a ratio measured in the same run.

    python bench/gdss_reference.py --setup         # make /tmp/gdss_ref and /tmp/gdss_venv (idempotent)
    /tmp/gdss_venv/bin/python bench/gdss_reference.py --steps 10 --threads 2 --sample-steps 50 --num 20

prints one JSON line ``{"train_step_s", "sample_s_per_step", "params", "commit", "versions", ...}``;
from another benchmark (any interpreter)::

    from gdss_reference import measure_gdss         # (bench/ on sys.path)
    ref = measure_gdss(steps=10, sample_steps=50)    # None when the venv or the checkout is missing

GDSS is never copied into this repository nor installed in the project's environment. ``--setup``
exports the tree of a bare git mirror of github.com/harryjo97/GDSS (``$GDSS_MIRROR``, default
``/work/.mirror/harryjo97+GDSS/repo``; any ``git clone --bare`` of it will do) into a scratch folder
outside the project (``/tmp/gdss_ref``, or ``$GDSS_REF``; blobs absent from a partial mirror, such
as the QM9 / ZINC csv files, are skipped; the commit goes to ``.gdss_commit``), and makes a scratch
venv (``/tmp/gdss_venv``, or ``$GDSS_VENV``) with the project's torch (2.13.0, pinned by
``constraints.txt``; never a newer one) and what the modules used here import: GDSS's own pins
``networkx==2.6.3`` and ``easydict==1.9`` (pure Python), plus numpy, scipy, pyyaml and tqdm at
their current versions (GDSS's ``requirements.txt`` pins numpy 1.20.3 and scipy 1.7.1, which have
no wheels for Python 3.11; GDSS was written for Python 3.7 and torch 1.10.1). The worker runs
with the checkout as its working directory and on ``sys.path``, importing GDSS's modules from
there. Measured against commit 24cc490e0c5b39cbd265fda33ab2bc8b528d4454.

One shim: ``utils/loader.py`` imports ``evaluation.mmd`` (the MMD kernels, which need pyemd,
scikit-learn and dill) for ``load_eval_settings`` only; the worker puts a stand-in module under
that name (its functions raise if called) instead of installing the evaluation stack. Nothing
measured uses it. GDSS's code itself runs unmodified.

What is measured (one process, ``torch.set_num_threads(threads)`` and ``OMP_NUM_THREADS``,
float32, CUDA if available as GDSS's ``load_device`` picks it, else CPU), with GDSS's own
``config/community_small.yaml`` read by its ``parsers.config.get_config``:

* data: GDSS's ``data/community_small.pkl`` through its ``utils.loader.load_data`` (100 graphs,
  test split 0.2: 80 training graphs, up to 20 nodes, one-hot degree features of width 10); its
  batch size 128 exceeds the 80 training graphs, so an epoch is one batch of 80 graphs;
* models, optimisers, EMA, loss: ``load_model_params`` / ``load_model_optimizer`` / ``load_ema`` /
  ``load_loss_fn``: ScoreNetworkX (GCN, depth 3, nhid 32) and ScoreNetworkA (5 layers, adim 32,
  nhid 32, 2 linears, channels 2 -> 8 -> 4, 4 heads), Adam lr 0.01, weight decay 1e-4,
  ExponentialLR 0.999 per epoch, EMA 0.999, VP SDEs beta 0.1 -> 1.0 for X and A, the DSM loss
  with ``reduce_mean False`` and ``eps 1e-5``;
* a training step is the body of ``Trainer.train``'s batch loop, line for line: the loader's
  iterator and batch, ``zero_grad`` x2, ``loss_fn``, ``backward`` x2, ``clip_grad_norm_`` (1.0)
  x2, ``step`` x2, the EMA updates and the two ``.item()`` calls, then the epoch's scheduler
  steps (one batch per epoch here). ``warmup`` steps untimed, then the median of ``steps`` timed
  ones. The trainer's per-epoch test pass (EMA weights, 20 test graphs) is timed apart
  (``epoch_test_s``) and is not in ``train_step_s``: the training step compared is the smaller
  number;
* sampling calls the function GDSS's ``load_sampling_fn`` builds (``solver.get_pc_sampler``:
  Langevin corrector with snr 0.05, scale_eps 0.7, one corrector step, then the predictor; noise
  removal at the end; t from 1 down to eps 1e-4) on the weights just trained (raw, as the config's
  ``use_ema: False``), with the node masks drawn from the training graphs by GDSS's
  ``init_flags``, for ``num`` graphs in one batch. Timing all 1000 steps is not needed: the SDEs'
  ``num_scales`` are set to ``sample_steps`` for the sampler (the loop length is ``sde_adj.N``,
  and every step does the same work: four network calls, two of ScoreNetworkX and two of
  ScoreNetworkA), so a call's time / ``sample_steps`` is its time per step; ``sample_s_per_step``
  is the median over ``sample_repeats`` calls (fresh masks and noise each). A 2-step call runs
  untimed first. The timed span is what GDSS's ``Sampler.sample`` logs per round (``init_flags`` and the
  sampling function; not the quantisation into networkx graphs).

Settings that differ from GDSS's files, and why: the predictor is ``Reverse`` (reverse diffusion)
by default where ``config/community_small.yaml`` names ``Euler`` (Euler-Maruyama): polydiff's
``pc`` sampler, which this is compared with, is the reverse-diffusion predictor, and both
predictors make the same network calls per step (``--predictor Euler`` measures GDSS's own
choice). ``num`` (20, the test-set size that the benchmark samples) replaces the sampling batch:
GDSS's ``Sampler`` draws ``data.batch_size`` = 128 graphs per round and keeps the first 20, so its
own evaluation run does 6.4 times the work measured here.

The clock is wall time; the process CPU time is returned too (``train_step_cpu_s_all``,
``sample_cpu_s_per_step_all``): on an idle machine it is about ``threads`` times the wall time, so a step whose
wall time is far above cpu / threads was slowed by other processes (read the median, or
``train_step_s_min``, on a shared machine).

Equivalences, to build ours at the same size (``configs/graphs/community_small_gdss.yaml``):

==============================================  ===============================================
GDSS (config/community_small.yaml)              polydiff
==============================================  ===============================================
data community_small, test_split 0.2,           data gdss_community_small (the same 100 graphs,
max_node_num 20, max_feat_num 10, init deg      GDSS's split), max_nodes 20, max_feat_num 10
batch_size 128 (= 80 graphs)                    train.batch_size 80
ScoreNetworkX GCN depth 3 nhid 32;              model gdss: x_net gcn, depth 3, nhid 32, adim 32,
ScoreNetworkA num_layers 5 adim 32 nhid 32      num_layers 5, num_linears 2, c_init 2, c_hid 8,
num_linears 2 c_init 2 c_hid 8 c_final 4        c_final 4, heads 4
num_heads 4
sde x / adj: VP beta 0.1 -> 1.0, 1000 scales    process x / adj: vp_linear beta 0.1 -> 1.0
DSM loss, reduce_mean False (sigma^2 weight)    loss weighting snr, time_density uniform
lr 0.01, weight_decay 1e-4, grad_norm 1.0,      train lr 0.01, weight_decay 1e-4, grad_clip 1.0,
ema 0.999, ExponentialLR 0.999 per epoch        ema 0.999 (bench/graphs.py applies the decay)
Langevin corrector snr 0.05 scale_eps 0.7,      sample: pc, n_corrector 1, snr 0.05, scale_eps
n_steps 1, eps 1e-4, use_ema False              0.7, t_min 1e-4 (bench: raw weights)
==============================================  ===============================================
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import os
import platform
import statistics
import sys
import time
import types
from pathlib import Path
from typing import Any

from common import reference_commit, worker_main  # bench/ is on the path (the script's folder)

VENV = Path(os.environ.get("GDSS_VENV", "/tmp/gdss_venv"))
REF = Path(os.environ.get("GDSS_REF", "/tmp/gdss_ref"))
MIRROR = Path(os.environ.get("GDSS_MIRROR", "/work/.mirror/harryjo97+GDSS/repo"))
ROOT = Path(__file__).resolve().parents[1]
# GDSS's requirements.txt pins networkx 2.6.3 and easydict 1.9 (kept); numpy 1.20.3 / scipy 1.7.1 have no
# Python 3.11 wheels, so the current ones are used (constraints.txt keeps torch at 2.13.0)
PACKAGES = ["networkx==2.6.3", "easydict==1.9", "numpy", "scipy", "pyyaml", "tqdm"]
SENTINEL = Path("solver.py")
NEEDED = ("solver.py", "losses.py", "sde.py", "utils/loader.py", "models/ScoreNetwork_A.py",
          "config/community_small.yaml", "data/community_small.pkl")
CHECK = ("import torch, networkx, easydict, yaml, scipy, tqdm; assert torch.__version__.split('+')[0] == '2.13.0'; "
         "assert networkx.__version__.startswith('2.')")


def venv_python() -> Path:
    """The scratch venv's interpreter."""
    return VENV / "bin" / "python"


def find_reference() -> Path | None:
    """The exported GDSS tree (``$GDSS_REF`` or /tmp/gdss_ref) when it holds what the worker needs."""
    return REF if all((REF / p).is_file() for p in NEEDED) else None


def export_reference(mirror: Path = MIRROR, dest: Path = REF) -> Path:
    """Export the HEAD tree of a bare GDSS mirror into ``dest`` (blobs a partial mirror lacks are
    left out and named); a mirror without the files the worker needs ends the program."""
    from common import export_mirror

    export_mirror(mirror, dest, "harryjo97/GDSS", ".gdss_commit", "GDSS_MIRROR", Path(__file__).name)
    missing = [p for p in NEEDED if not (dest / p).is_file()]
    if missing:
        sys.exit(f"the GDSS mirror {mirror} lacks {', '.join(missing)}: fetch a complete copy")
    return dest


def setup(verbose: bool = True) -> Path:
    """Export GDSS into ``REF`` and create the scratch venv unless both already work."""
    if find_reference() is None:
        export_reference()
    from common import scratch_venv

    return scratch_venv(VENV, CHECK, list(PACKAGES), verbose=verbose)


def measure_gdss(steps: int = 10, warmup: int = 2, threads: int = 2, sample_steps: int = 50, num: int = 20,
                 predictor: str = "Reverse", seed: int = 0, sample_repeats: int = 3, timeout: float = 1800.0,
                 ) -> dict[str, Any] | None:
    """Run this script in the scratch venv (in the GDSS checkout) and return its JSON result;
    None when the venv or the checkout is missing (run ``--setup``)."""
    py, ref = venv_python(), find_reference()
    if not py.exists() or ref is None:
        return None
    from common import run_worker

    opts = dict(steps=steps, warmup=warmup, threads=threads, sample_steps=sample_steps, num=num,
                predictor=predictor, seed=seed, sample_repeats=sample_repeats)
    return run_worker(py, str(Path(__file__).resolve()), opts, timeout, ref)


# ---------------------------------------------------------------------------------------------- worker


def _unused(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError("evaluation.mmd is a stand-in in gdss_reference.py (GDSS's MMD kernels are not installed)")


def _sync(torch: Any, device: Any) -> None:
    if isinstance(device, list):  # GDSS's load_device: a list of CUDA ids, or 'cpu'
        torch.cuda.synchronize()


def measure(steps: int, warmup: int, threads: int, sample_steps: int, num: int, predictor: str, seed: int,
            sample_repeats: int = 3) -> dict[str, Any]:
    """Time GDSS's training step and PC sampler in this (venv) process, cwd = the checkout."""
    import importlib.metadata as md

    ref = Path.cwd()
    sys.path.insert(0, str(ref))
    mmd = types.ModuleType("evaluation.mmd")
    mmd.gaussian = mmd.gaussian_emd = _unused  # type: ignore[attr-defined]
    sys.modules.setdefault("evaluation.mmd", mmd)

    import networkx as nx
    import numpy as np
    import torch
    from parsers.config import get_config
    from utils import loader  # GDSS's utils/loader.py
    from utils.graph_utils import init_flags

    torch.set_num_threads(threads)
    config = get_config("community_small", seed)
    loader.load_seed(config.seed)
    device = loader.load_device()
    device_id = f"cuda:{device[0]}" if isinstance(device, list) else device
    train_loader, test_loader = loader.load_data(config)
    params_x, params_adj = loader.load_model_params(config)
    model_x, optimizer_x, scheduler_x = loader.load_model_optimizer(params_x, config.train, device)
    model_adj, optimizer_adj, scheduler_adj = loader.load_model_optimizer(params_adj, config.train, device)
    ema_x = loader.load_ema(model_x, decay=config.train.ema)
    ema_adj = loader.load_ema(model_adj, decay=config.train.ema)
    loss_fn = loader.load_loss_fn(config)
    params = {"x": sum(p.numel() for p in model_x.parameters()), "adj": sum(p.numel() for p in model_adj.parameters())}

    times, cpu, test_times, losses = [], [], [], []
    for k in range(warmup + steps):
        _sync(torch, device)
        t0, c0 = time.perf_counter(), time.process_time()
        model_x.train()
        model_adj.train()
        batches = 0
        for _, train_b in enumerate(train_loader):  # Trainer.train's batch loop, line for line
            optimizer_x.zero_grad()
            optimizer_adj.zero_grad()
            x, adj = loader.load_batch(train_b, device)
            loss_x, loss_adj = loss_fn(model_x, model_adj, x, adj)
            loss_x.backward()
            loss_adj.backward()
            torch.nn.utils.clip_grad_norm_(model_x.parameters(), config.train.grad_norm)
            torch.nn.utils.clip_grad_norm_(model_adj.parameters(), config.train.grad_norm)
            optimizer_x.step()
            optimizer_adj.step()
            ema_x.update(model_x.parameters())
            ema_adj.update(model_adj.parameters())
            losses.append((loss_x.item(), loss_adj.item()))
            batches += 1
        if config.train.lr_schedule:
            scheduler_x.step()
            scheduler_adj.step()
        _sync(torch, device)
        t1, c1 = time.perf_counter(), time.process_time()
        model_x.eval()  # the epoch's test pass on the EMA weights (timed apart)
        model_adj.eval()
        for _, test_b in enumerate(test_loader):
            x, adj = loader.load_batch(test_b, device)
            with torch.no_grad():
                ema_x.store(model_x.parameters())
                ema_x.copy_to(model_x.parameters())
                ema_adj.store(model_adj.parameters())
                ema_adj.copy_to(model_adj.parameters())
                loss_fn(model_x, model_adj, x, adj)[0].item()
                ema_x.restore(model_x.parameters())
                ema_adj.restore(model_adj.parameters())
        _sync(torch, device)
        if k >= warmup:
            times.append((t1 - t0) / batches)
            cpu.append((c1 - c0) / batches)
            test_times.append(time.perf_counter() - t1)

    # the sampler of load_sampling_fn, with sample_steps scales and a batch of num graphs
    train_graphs, _ = loader.load_data(config, get_graph_list=True)
    model_x.eval()
    model_adj.eval()

    def sampler(n_scales: int) -> tuple[Any, Any]:
        cfg = copy.deepcopy(config)
        cfg.sde.x.num_scales = cfg.sde.adj.num_scales = n_scales
        cfg.data.batch_size = num
        cfg.sampler.predictor = predictor
        return cfg, loader.load_sampling_fn(cfg, cfg.sampler, cfg.sample, device)

    loader.load_seed(config.sample.seed)
    with contextlib.redirect_stdout(sys.stderr):  # their tqdm bar and print(' ')
        cfg, warm = sampler(2)
        warm(model_x, model_adj, init_flags(train_graphs, cfg).to(device_id))
        cfg, sampling_fn = sampler(sample_steps)
        sample_s, sample_cpu = [], []
        for _ in range(sample_repeats):
            _sync(torch, device)
            t0, c0 = time.perf_counter(), time.process_time()
            flags = init_flags(train_graphs, cfg).to(device_id)
            x, adj, nfe = sampling_fn(model_x, model_adj, flags)
            _sync(torch, device)
            sample_s.append((time.perf_counter() - t0) / sample_steps)
            sample_cpu.append((time.process_time() - c0) / sample_steps)
    assert adj.shape == (num, config.data.max_node_num, config.data.max_node_num), adj.shape

    return {
        "train_step_s": statistics.median(times), "train_step_s_min": min(times), "train_step_s_all": times,
        "train_step_cpu_s_all": cpu, "epoch_test_s": statistics.median(test_times),
        "batches_per_epoch": batches, "batch": len(train_b[0]), "final_loss": list(losses[-1]),
        "sample_s_per_step": statistics.median(sample_s), "sample_s_per_step_all": sample_s,
        "sample_cpu_s_per_step_all": sample_cpu,
        "sample_s_per_graph_1000_steps": statistics.median(sample_s) * 1000 / num,
        "sample_finite": bool(torch.isfinite(x).all() and torch.isfinite(adj).all()),
        "sample_nfe_pairs": nfe, "predictor": predictor, "corrector": config.sampler.corrector,
        "snr": config.sampler.snr, "scale_eps": config.sampler.scale_eps,
        "params": {**params, "total": params["x"] + params["adj"]},
        "steps": steps, "warmup": warmup, "threads": threads, "sample_steps": sample_steps,
        "sample_repeats": sample_repeats, "num": num,
        "device": str(device_id), "commit": reference_commit(ref, ".gdss_commit"),
        "versions": {"torch": torch.__version__, "numpy": np.__version__, "networkx": nx.__version__,
                     "easydict": md.version("easydict"), "python": platform.python_version()},
    }



def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--setup", action="store_true", help=f"export GDSS to {REF} and create the scratch venv {VENV} "
                   "(idempotent), then exit")
    p.add_argument("--steps", type=int, default=10, help="timed training steps")
    p.add_argument("--warmup", type=int, default=2, help="untimed training steps first")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    p.add_argument("--sample-steps", type=int, default=50, help="PC steps timed (GDSS: 1000; the time per step is "
                   "reported)")
    p.add_argument("--num", type=int, default=20, help="graphs sampled (one batch; the community-small test set: 20)")
    p.add_argument("--predictor", default="Reverse", choices=["Reverse", "Euler"],
                   help="GDSS predictor (polydiff's pc: Reverse; GDSS's community_small.yaml: Euler)")
    p.add_argument("--sample-repeats", type=int, default=3, help="timed sampling calls (the median is reported)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    if a.setup:
        setup()
        return
    if a.steps < 1 or a.warmup < 0 or a.num < 1 or a.sample_steps < 2 or a.sample_repeats < 1:
        p.error("--steps, --num and --sample-repeats must be >= 1, --warmup >= 0 and --sample-steps >= 2")
    # GDSS reads ./config and ./data: the worker runs in its checkout
    worker_main("GDSS", find_reference(), REF, ("easydict", "torch"), __file__, venv_python(),
                lambda: measure(a.steps, a.warmup, a.threads, a.sample_steps, a.num, a.predictor, a.seed,
                                a.sample_repeats))


if __name__ == "__main__":
    main()
