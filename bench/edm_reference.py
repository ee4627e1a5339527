"""Speed of the EDM reference implementation (Hoogeboom et al. 2022, "Equivariant Diffusion for
Molecule Generation in 3D", github.com/ehoogeboom/e3_diffusion_for_molecules) on this machine, so a
benchmark can report its own speed as a ratio measured in the same run.

    python bench/edm_reference.py                          # checkout from $EDM_REF or /tmp/edm_ref
    python bench/edm_reference.py --checkout PATH --steps 5 --threads 2

or, from another benchmark::

    from edm_reference import find_checkout, measure_edm   # (bench/ on sys.path)
    ref = measure_edm(find_checkout()) if find_checkout() else None

Getting the checkout (EDM's code is never copied into this repository; it is imported from the
checkout, at run time, in a subprocess). The git history holds a few large binary files (pretrained
weights, GEOM permutation, sample zips) that a partial mirror may lack, so archive everything else::

    git clone --bare https://github.com/ehoogeboom/e3_diffusion_for_molecules /tmp/edm_ref.git
    D=/tmp/edm_ref.git                      # or a local (possibly partial) bare mirror of it
    mkdir -p /tmp/edm_ref
    git --git-dir=$D archive HEAD -- . ':(exclude)data/geom/geom_permutation.npy' \\
        ':(exclude)generated_samples/samples_edm.zip' ':(exclude)outputs/*/*.npy' | tar -x -C /tmp/edm_ref
    git --git-dir=$D rev-parse HEAD > /tmp/edm_ref/.edm_commit

(a plain ``git clone https://github.com/ehoogeboom/e3_diffusion_for_molecules /tmp/edm_ref`` works as
well; the commit is then read with ``git rev-parse``). Measured against commit
fce07d701a2d2340f3522df588832c2c0f7e044a.

What is measured (all in one worker process, ``torch.set_num_threads(threads)`` and
``OMP_NUM_THREADS=threads``, CPU, float32):

* the model is EDM's QM9 model built with EDM's own ``qm9.models.get_model`` from an argument
  namespace matching ``main_qm9.py`` / the README's QM9 command: QM9 with hydrogens (5 atom types
  H C N O F, ``include_charges=True``, at most 29 atoms), ``EGNN_dynamics_QM9`` with ``n_layers`` /
  ``nf`` (6 / 128 by default), attention, tanh, ``norm_constant=1``, ``inv_sublayers=1``, no sin
  embedding, ``normalization_factor=1``, ``aggregation_method='sum'``, time conditioning; and an
  ``EnVariationalDiffusion`` with 1000 steps, the ``polynomial_2`` schedule, precision 1e-5, the l2
  loss and ``normalize_factors=[1, 4, 10]``. Optimiser: EDM's ``get_optim`` (AdamW, amsgrad,
  lr 1e-4 as in the README command, weight decay 1e-12).
* one training step is what ``train_test.train_epoch`` does per batch: centre x, EDM's mask checks,
  ``qm9.losses.compute_loss_and_nll`` (the diffusion loss minus log p(N)), backward, EDM's adaptive
  gradient clipping (``utils.gradient_clipping`` with its queue), ``optim.step()`` and the EMA update
  (``equivariant_diffusion.utils.EMA``, decay 0.9999). Wandb logging and periodic sampling are left
  out. Batches are synthesised (no dataset download): atom counts drawn from EDM's QM9 histogram
  (``configs.datasets_config``), atom types from EDM's QM9 type frequencies, charges the atomic
  numbers of the types (H=1, C=6, N=7, O=8, F=9), positions N(0, 1.5^2) centred per molecule, padded
  to the batch's largest molecule with node and edge masks as EDM's collate builds them. Batches are
  built before the clock starts; ``warmup`` steps are run untimed, then ``steps`` steps are timed.
* sampling calls the EMA model's ``sample(n, 29, node_mask, edge_mask, None)`` exactly as
  ``qm9.sampling.sample`` sets it up (molecule sizes from the histogram, every molecule padded to
  29 atoms), with the diffusion's ``T`` set to ``sample_steps`` for the call (EDM's loop is
  ``for s in reversed(range(0, self.T))`` and the noise schedule is looked up at ``round(t*1000)``,
  so a smaller T is a strided sampler with the same per-step work) and restored afterwards.
  A sample makes ``T + 1`` network evaluations (T reverse steps and p(x, h | z_0)), so
  ``sample_s_per_molecule_per_step`` = time / (molecules * (sample_steps + 1)) and
  ``sample_s_per_molecule_1000_steps`` = that * 1001, EDM's full 1000-step sampler extrapolated.

The clock is wall time (``time.perf_counter``); the process CPU time of each step is returned too
(``train_step_cpu_s_all``, ``sample_cpu_s_total``): with ``threads`` threads and an idle machine it is
about ``threads`` times the wall time, so a step whose wall time is far above cpu / threads was
slowed by other processes. On a shared machine read the median (or ``train_step_s_min``).

Shims: none are needed; EDM's modules used here (``configs.datasets_config``, ``qm9.models``,
``qm9.losses``, ``utils``, ``egnn``, ``equivariant_diffusion``) import and run unmodified on torch
2.13 (CPU) and numpy 2. ``train_test.py`` / ``main_qm9.py`` are not imported (they need wandb and
the dataset), so the training step is assembled from the same functions they call. EDM's prints
(the noise schedule, "Clipped gradient ...") go to the worker's stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

MARKER = "EDM_REFERENCE_RESULT "
DEFAULT_CHECKOUT = "/tmp/edm_ref"
SENTINEL = Path("equivariant_diffusion") / "en_diffusion.py"


def find_checkout() -> str | None:
    """The EDM checkout: ``$EDM_REF`` if set (and valid), else /tmp/edm_ref if it holds EDM's code."""
    for candidate in (os.environ.get("EDM_REF"), DEFAULT_CHECKOUT):
        if candidate and (Path(candidate) / SENTINEL).is_file():
            return str(Path(candidate).resolve())
    return None


def checkout_commit(checkout: str) -> str | None:
    """The checkout's commit: ``git rev-parse HEAD`` if it is a git work tree, else its ``.edm_commit`` file."""
    path = Path(checkout)
    if (path / ".git").exists():
        proc = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True)
        if proc.returncode == 0 and proc.stdout.strip():
            return proc.stdout.strip()
    marker = path / ".edm_commit"
    if marker.is_file():
        return marker.read_text().strip() or None
    return None


def measure_edm(checkout: str, batch_size: int = 64, layers: int = 6, nf: int = 128, steps: int = 5, warmup: int = 2,
                sample_molecules: int = 16, sample_steps: int = 50, threads: int = 2, seed: int = 0) -> dict:
    """Time EDM's QM9 training step and sampler in a subprocess (see the module docstring).

    Returns ``train_step_s_median``, ``train_step_s_all``, ``sample_s_per_molecule_per_step``,
    ``sample_s_per_molecule_1000_steps``, ``params``, ``commit`` and the settings. Raises
    ``FileNotFoundError`` for a path without EDM's code and ``RuntimeError`` if the worker fails.
    """
    checkout = str(Path(checkout).resolve())
    if not (Path(checkout) / SENTINEL).is_file():
        raise FileNotFoundError(f"{checkout} is not an EDM checkout (no {SENTINEL})")
    args = {"checkout": checkout, "batch_size": batch_size, "layers": layers, "nf": nf, "steps": steps,
            "warmup": warmup, "sample_molecules": sample_molecules, "sample_steps": sample_steps,
            "threads": threads, "seed": seed}
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(args)],
                          capture_output=True, text=True, env=env, cwd=checkout)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(MARKER)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"EDM worker failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    res = json.loads(lines[-1][len(MARKER):])
    res["commit"] = checkout_commit(checkout)
    res["checkout"] = checkout
    return res


# ---------------------------------------------------------------------------------------------- worker


def _worker(args: dict[str, Any]) -> dict[str, Any]:
    """Runs in the subprocess: imports EDM from the checkout, builds the model, times it."""
    import numpy as np
    import torch

    torch.set_num_threads(args["threads"])
    torch.manual_seed(args["seed"])
    rng = np.random.default_rng(args["seed"])
    sys.path.insert(0, args["checkout"])

    import utils as edm_utils  # EDM's top-level utils.py (Queue, gradient_clipping)
    from configs.datasets_config import get_dataset_info
    from equivariant_diffusion import utils as flow_utils
    from qm9 import losses
    from qm9.models import get_model, get_optim

    device, dtype = torch.device("cpu"), torch.float32
    info = get_dataset_info("qm9", remove_h=False)
    ns = argparse.Namespace(
        model="egnn_dynamics", probabilistic_model="diffusion", diffusion_steps=1000,
        diffusion_noise_schedule="polynomial_2", diffusion_noise_precision=1e-5, diffusion_loss_type="l2",
        n_layers=args["layers"], nf=args["nf"], inv_sublayers=1, attention=True, tanh=True, norm_constant=1,
        sin_embedding=False, normalization_factor=1, aggregation_method="sum", condition_time=True,
        include_charges=True, normalize_factors=[1, 4, 10], conditioning=[], context_node_nf=0,
        lr=1e-4, ema_decay=0.9999, clip_grad=True, ode_regularization=1e-3, augment_noise=0,
        data_augmentation=False, batch_size=args["batch_size"], dataset="qm9", remove_h=False)
    model, nodes_dist, _ = get_model(ns, device, info, None)
    model = model.to(device)
    optim = get_optim(ns, model)
    gradnorm_queue = edm_utils.Queue()
    gradnorm_queue.add(3000)  # as main_qm9.py: a large value that is flushed later
    model_ema = copy.deepcopy(model)
    ema = flow_utils.EMA(ns.ema_decay)
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)

    sizes = np.array(list(info["n_nodes"].keys()))
    size_p = np.array(list(info["n_nodes"].values()), dtype=float)
    size_p /= size_p.sum()
    n_types = len(info["atom_decoder"])
    type_p = np.array([info["atom_types"][i] for i in range(n_types)], dtype=float)
    type_p /= type_p.sum()
    atomic_number = np.array([{"H": 1, "C": 6, "N": 7, "O": 8, "F": 9}[a] for a in info["atom_decoder"]])

    def make_batch() -> dict[str, torch.Tensor]:
        """A QM9-like batch, padded to its largest molecule the way EDM's PreprocessQM9 collate does."""
        n_atoms = rng.choice(sizes, size=ns.batch_size, p=size_p)
        n_max = int(n_atoms.max())
        mask = np.arange(n_max)[None, :] < n_atoms[:, None]
        types = rng.choice(n_types, size=(ns.batch_size, n_max), p=type_p)
        pos = rng.normal(0.0, 1.5, size=(ns.batch_size, n_max, 3)) * mask[..., None]
        pos -= pos.sum(1, keepdims=True) / n_atoms[:, None, None]
        pos *= mask[..., None]
        atom_mask = torch.from_numpy(mask)
        edge_mask = atom_mask.unsqueeze(1) * atom_mask.unsqueeze(2)
        edge_mask *= ~torch.eye(n_max, dtype=torch.bool).unsqueeze(0)
        return {"positions": torch.from_numpy(pos).float(),
                "one_hot": torch.nn.functional.one_hot(torch.from_numpy(types), n_types).bool() & atom_mask[..., None],
                "charges": torch.from_numpy(atomic_number[types] * mask).unsqueeze(2),
                "atom_mask": atom_mask,
                "edge_mask": edge_mask.view(ns.batch_size * n_max * n_max, 1)}

    def train_step(data: dict[str, torch.Tensor]) -> float:
        """One iteration of EDM's train_test.train_epoch (without wandb and periodic sampling)."""
        x = data["positions"].to(device, dtype)
        node_mask = data["atom_mask"].to(device, dtype).unsqueeze(2)
        edge_mask = data["edge_mask"].to(device, dtype)
        one_hot = data["one_hot"].to(device, dtype)
        charges = data["charges"].to(device, dtype)
        x = flow_utils.remove_mean_with_mask(x, node_mask)
        for variable in (x, one_hot, charges):
            flow_utils.assert_correctly_masked(variable, node_mask)
        flow_utils.assert_mean_zero_with_mask(x, node_mask)
        h = {"categorical": one_hot, "integer": charges}
        optim.zero_grad()
        nll, reg_term, _ = losses.compute_loss_and_nll(ns, model, nodes_dist, x, h, node_mask, edge_mask, None)
        loss = nll + ns.ode_regularization * reg_term
        loss.backward()
        edm_utils.gradient_clipping(model, gradnorm_queue)
        optim.step()
        ema.update_model_average(model_ema, model)
        return float(loss.item())

    model.train()
    batches = [make_batch() for _ in range(args["warmup"] + args["steps"])]
    times, cpu_times, losses_seen = [], [], []
    for i, batch in enumerate(batches):
        t0, c0 = time.perf_counter(), time.process_time()
        losses_seen.append(train_step(batch))
        if i >= args["warmup"]:
            times.append(time.perf_counter() - t0)
            cpu_times.append(time.process_time() - c0)

    # Sampling, as qm9.sampling.sample sets it up: every molecule padded to max_n_nodes.
    n_samples, max_n = args["sample_molecules"], info["max_n_nodes"]
    nodesxsample = nodes_dist.sample(n_samples)
    node_mask = torch.zeros(n_samples, max_n)
    for i in range(n_samples):
        node_mask[i, 0:nodesxsample[i]] = 1
    edge_mask = node_mask.unsqueeze(1) * node_mask.unsqueeze(2)
    edge_mask *= ~torch.eye(max_n, dtype=torch.bool).unsqueeze(0)
    edge_mask = edge_mask.view(n_samples * max_n * max_n, 1).to(device)
    node_mask = node_mask.unsqueeze(2).to(device)
    model_ema.eval()
    full_T = model_ema.T
    try:
        model_ema.T = 2  # untimed warm-up (adjacency cache, allocator)
        model_ema.sample(n_samples, max_n, node_mask, edge_mask, None)
        model_ema.T = args["sample_steps"]
        t0, c0 = time.perf_counter(), time.process_time()
        x, _ = model_ema.sample(n_samples, max_n, node_mask, edge_mask, None)
        sample_s, sample_cpu_s = time.perf_counter() - t0, time.process_time() - c0
    finally:
        model_ema.T = full_T
    per_step = sample_s / (n_samples * (args["sample_steps"] + 1))

    return {"train_step_s_median": statistics.median(times), "train_step_s_all": times,
            "train_step_s_min": min(times), "train_step_cpu_s_all": cpu_times,
            "sample_s_per_molecule_per_step": per_step,
            "sample_s_per_molecule_1000_steps": per_step * (full_T + 1),
            "sample_s_total": sample_s, "sample_cpu_s_total": sample_cpu_s,
            "sample_molecules": n_samples, "sample_steps": args["sample_steps"],
            "sample_finite": bool(torch.isfinite(x).all()),
            "params": params, "batch_size": ns.batch_size, "layers": ns.n_layers, "nf": ns.nf,
            "threads": torch.get_num_threads(), "steps": args["steps"], "warmup": args["warmup"],
            "seed": args["seed"], "train_losses": losses_seen,
            "train_n_nodes": [int(b["atom_mask"].shape[1]) for b in batches[args["warmup"]:]],
            "torch": torch.__version__, "numpy": np.__version__}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--checkout", default=None, help="EDM checkout (default: $EDM_REF or /tmp/edm_ref)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--nf", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--sample-molecules", type=int, default=16)
    parser.add_argument("--sample-steps", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    a = parser.parse_args(argv)
    if a.worker is not None:
        with contextlib.redirect_stdout(sys.stderr):  # EDM prints freely; keep stdout for the result
            res = _worker(json.loads(a.worker))
        print(MARKER + json.dumps(res), flush=True)
        return
    checkout = a.checkout or find_checkout()
    if checkout is None:
        sys.exit("no EDM checkout: set EDM_REF or pass --checkout (see this script's docstring)")
    res = measure_edm(checkout, batch_size=a.batch_size, layers=a.layers, nf=a.nf, steps=a.steps, warmup=a.warmup,
                      sample_molecules=a.sample_molecules, sample_steps=a.sample_steps, threads=a.threads,
                      seed=a.seed)
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
