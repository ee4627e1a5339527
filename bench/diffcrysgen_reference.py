"""Speed of DiffCrysGen's own code (Mal et al. 2025; pip package ``diffcrysgen`` 0.1.1, MIT,
github.com/SouravMal/DiffCrysGen) on this machine, so the crystals benchmark can report ours as a
ratio measured on the same machine.

    python bench/diffcrysgen_reference.py --setup            # make /tmp/dcg_venv (idempotent)
    /tmp/dcg_venv/bin/python bench/diffcrysgen_reference.py --steps 20 --batch 64 --threads 2 \\
        --sample-steps 100 --num 16

prints one JSON line ``{"train_step_s", "sample_s_per_crystal", "params", "versions", ...}``; from
another benchmark (any interpreter)::

    from diffcrysgen_reference import measure_diffcrysgen   # (bench/ on sys.path)
    ref = measure_diffcrysgen(steps=10, batch=64)           # None when the venv is missing

DiffCrysGen is never copied into this repository nor installed in the project's environment: it
runs from a scratch venv outside the project (``/tmp/dcg_venv``, or ``$DCG_VENV``) holding the
project's torch (2.13.0, pinned by ``constraints.txt``; never a newer one) and ``diffcrysgen`` 0.1.1
installed ``--no-deps`` (its metadata pins torch~=2.5.1 and numpy~=2.0.1; the modules used here run
unmodified on torch 2.13 and numpy 2.4), plus numpy, scikit-learn, joblib and tqdm for its
``utils`` / ``sampler`` imports.

What is measured (one process, ``torch.set_num_threads(threads)``, float32, CUDA if available as
DiffCrysGen's own code picks it, else CPU):

* the network is DiffCrysGen's ``model.UNet(in_c=3, out_c=3, time_emb_dim=256)`` inside its
  ``model.Model`` (``Precond`` with sigma_data 0.5 and ``EDMLoss``: log sigma ~ N(-1.2, 1.2^2),
  weight (s^2 + 0.25) / (0.5 s)^2), exactly as ``trainer.train_diffcrysgen`` builds it;
* a training step is what that trainer does per batch: ``loss = model(batch)``, ``zero_grad``,
  ``backward``, ``Adam(lr=5e-4, weight_decay=0).step()``, on random matrices of their shape
  (B, 3, 136) in [-1, 1]. ``warmup`` steps untimed, then the median of ``steps`` timed ones;
* sampling calls ``sampler.generate_samples`` itself (EDM's stochastic Heun, 100 steps, sigma
  0.002..80, rho 7, S_churn 1; 199 network evaluations per batch) with the randomly initialised
  weights saved to a temporary file and its scaler loader replaced by a MinMaxScaler fitted on
  random data (the package ships neither ``sdm.pt`` nor the scaler pickle); the whole ``--num``
  crystals are one batch. ``generate_samples`` hard-codes 100 steps: for another
  ``--sample-steps`` the same loop is run here, line for line, on their ``Precond`` network
  (``"sampler"`` in the output says which). Their prints go to stderr.

The clock is wall time; the process CPU time is returned too (``train_step_cpu_s_all``,
``sample_cpu_s_total``): on an idle machine it is about ``threads`` times the wall time, so a step
whose wall time is far above cpu / threads was slowed by other processes (read the median, or
``train_step_s_min``, on a shared machine).

Equivalences, to build ours at the same size (``polydiff_crystals``):

=====================================================  ===================================================
DiffCrysGen 0.1.1                                      ours
=====================================================  ===================================================
IRCR matrix (N, 136, 3) (``trainer.load_data``         ``matrix.MatrixSpec()`` (136, 3): 94 element rows,
slices the property rows off the (N, 142, 3) files)    2 lattice rows, 20 coordinate and 20 occupancy rows
``utils.minmax`` (per row, over samples and columns)   ``matrix.RowScaler`` (the same, straight to [-1, 1])
then ``2 x - 1``
``UNet(in_c=3, out_c=3, time_emb_dim=256)``,           ``unet.UNet1D()`` / ``unet.MatrixDenoiser`` defaults:
1,321,604 parameters                                   channels (32, 64, 128), mid 64, 3 blocks, time_dim
                                                       256, 1 head, dropout 0.1: 1,321,604 parameters
``Precond`` (sigma_data 0.5, c_noise log(sigma)/4)     ``precondition`` / ``input_scale`` / ``time_input``
``EDMLoss`` (P_mean -1.2, P_std 1.2, mean over all     ``diffusion_loss(weighting="edm",
entries)                                               time_density="lognormal")``, GaussianProcess("edm"),
                                                       prediction "x0"
Adam lr 5e-4 (1e-4 from epoch 500, 5e-5 from 800),     the same optimiser settings
1000 epochs, batch 64
``generate_samples``: 100 steps, sigma 0.002..80,      sampler "edm", steps 100, s_churn 1 (EDM schedule's
rho 7, S_churn 1, S_min 0, S_max inf, S_noise 1        sigma_min 0.002, sigma_max 80, rho 7: Karras grid)
``InvertPCR`` thresholds 0.5 (elements, occupancy)     ``matrix.decode(threshold=0.5)``
=====================================================  ===================================================

One difference in the network: DiffCrysGen's attention blocks use ``nn.MultiheadAttention``
without ``batch_first``, so they attend across the samples of a batch; ours attends across
channels within a sample. The parameter count and the work per step are the same.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

VENV = Path(os.environ.get("DCG_VENV", "/tmp/dcg_venv"))
ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ["numpy", "scikit-learn", "joblib", "tqdm"]
CHECK = "import torch, diffcrysgen.model, diffcrysgen.sampler; assert torch.__version__.split('+')[0] == '2.13.0'"


def venv_python() -> Path:
    """The scratch venv's interpreter."""
    return VENV / "bin" / "python"


def setup(verbose: bool = True) -> Path:
    """Create the scratch venv with torch 2.13.0 and diffcrysgen 0.1.1 unless it already works."""
    from common import scratch_venv

    # --no-deps: its metadata pins torch~=2.5.1, which must not replace the project's torch
    return scratch_venv(VENV, CHECK, list(PACKAGES), ["diffcrysgen==0.1.1"], verbose=verbose)


def measure_diffcrysgen(steps: int = 10, batch: int = 64, threads: int = 2, sample_steps: int = 100, num: int = 16,
                        warmup: int = 2, seed: int = 0, timeout: float = 1800.0) -> dict[str, Any] | None:
    """Run this script in the scratch venv and return its JSON result; None when the venv is missing."""
    py = venv_python()
    if not py.exists():
        return None
    from common import run_worker

    opts = dict(steps=steps, batch=batch, threads=threads, sample_steps=sample_steps, num=num, warmup=warmup,
                seed=seed)
    return run_worker(py, str(Path(__file__).resolve()), opts, timeout, None)


def _sync(torch: Any, device: Any) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _replica_sampler(net: Any, num: int, steps: int, device: Any, torch: Any) -> None:
    """``sampler.generate_samples``'s loop with ``num_steps = steps`` (their code fixes 100)."""
    import math

    sigma_min, sigma_max, rho, s_churn = 0.002, 80.0, 7.0, 1.0
    idx = torch.arange(steps, dtype=torch.float64, device=device)
    t = (sigma_max ** (1 / rho) + idx / (steps - 1) * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    t = torch.cat([torch.as_tensor(t), torch.zeros_like(t[:1])])
    with torch.no_grad():
        x_next = torch.randn([num, 3, 136], device=device) * t[0]
        for i, (t_cur, t_next) in enumerate(itertools.pairwise(t)):
            x_cur = x_next
            gamma = min(s_churn / steps, math.sqrt(2) - 1)
            t_hat = (t_cur + gamma * t_cur).repeat(num)
            t_cur, t_next = t_cur.repeat(num), t_next.repeat(num)
            x_hat = x_cur + (t_hat[:, None, None] ** 2 - t_cur[:, None, None] ** 2).sqrt() * torch.randn_like(x_cur)
            d_cur = (x_hat - net(x_hat, t_hat).float()) / t_hat[:, None, None]
            x_next = x_hat + (t_next[:, None, None] - t_hat[:, None, None]) * d_cur
            if i < steps - 1:
                d_prime = (x_next - net(x_next, t_next).float()) / t_next[:, None, None]
                x_next = x_hat + (t_next[:, None, None] - t_hat[:, None, None]) * (0.5 * d_cur + 0.5 * d_prime)
        x_next.cpu()


def measure(steps: int, batch: int, threads: int, sample_steps: int, num: int, warmup: int, seed: int
            ) -> dict[str, Any]:
    """Time DiffCrysGen's training step and sampler in this (venv) process."""
    import importlib.metadata as md

    import numpy as np
    import torch
    from diffcrysgen import sampler as dcg_sampler
    from diffcrysgen.model import Model, UNet
    from sklearn.preprocessing import MinMaxScaler

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = Model(denoise_fn=UNet(in_c=3, out_c=3, time_emb_dim=256)).to(device)
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    opt = torch.optim.Adam(model.parameters(), lr=5e-4, weight_decay=0)
    data = torch.rand(batch, 3, 136, device=device) * 2 - 1

    model.train()
    times, cpu = [], []
    for k in range(warmup + steps):
        _sync(torch, device)
        t0, c0 = time.perf_counter(), time.process_time()
        loss = model(data)
        opt.zero_grad()
        loss.backward()
        opt.step()
        _sync(torch, device)
        if k >= warmup:
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)

    model.eval()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "sdm.pt")
        torch.save(model.state_dict(), path)
        scaler = MinMaxScaler().fit(np.random.default_rng(seed).random((8, 136)))
        dcg_sampler.load_saved_diffusion_scaler = lambda path=None: scaler  # the package ships no scaler
        _sync(torch, device)
        t0, c0 = time.perf_counter(), time.process_time()
        with contextlib.redirect_stdout(sys.stderr):
            if sample_steps == 100:
                out = dcg_sampler.generate_samples(num_samples=num, batch_size=num, model_path=path)
                assert out.shape == (num, 136, 3), out.shape
                which = "diffcrysgen.sampler.generate_samples"
            else:
                _replica_sampler(model.denoise_fn_D, num, sample_steps, device, torch)
                which = "replica of generate_samples' loop"
        _sync(torch, device)
        sample_s, sample_cpu = time.perf_counter() - t0, time.process_time() - c0

    return {
        "train_step_s": statistics.median(times), "train_step_s_min": min(times), "train_step_s_all": times,
        "train_step_cpu_s_all": cpu,
        "sample_s_per_crystal": sample_s / num, "sample_s_total": sample_s,
        "sample_cpu_s_total": sample_cpu,
        "sample_nfe": 2 * sample_steps - 1, "sampler": which,
        "params": params, "batch": batch, "steps": steps, "warmup": warmup, "threads": threads,
        "sample_steps": sample_steps, "num": num, "device": str(device),
        "versions": {"diffcrysgen": md.version("diffcrysgen"), "torch": torch.__version__, "numpy": np.__version__,
                     "scikit-learn": md.version("scikit-learn"), "python": platform.python_version()},
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--setup", action="store_true", help=f"create the scratch venv {VENV} (idempotent) and exit")
    p.add_argument("--steps", type=int, default=10, help="timed training steps")
    p.add_argument("--warmup", type=int, default=2, help="untimed training steps first")
    p.add_argument("--batch", type=int, default=64, help="training batch (DiffCrysGen: 64)")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    p.add_argument("--sample-steps", type=int, default=100, help="sampler steps (DiffCrysGen: 100)")
    p.add_argument("--num", type=int, default=16, help="crystals sampled (one batch)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    if a.setup:
        setup()
        return
    if a.steps < 1 or a.batch < 1 or a.num < 1 or a.sample_steps < 2:
        p.error("--steps, --batch and --num must be >= 1 and --sample-steps >= 2")
    try:
        import diffcrysgen  # noqa: F401
    except ImportError:
        sys.exit(f"diffcrysgen is not importable by {sys.executable}: run `python {Path(__file__).name} --setup`, "
                 f"then `{venv_python()} {Path(__file__).name} ...`")
    print(json.dumps(measure(a.steps, a.batch, a.threads, a.sample_steps, a.num, a.warmup, a.seed)), flush=True)


if __name__ == "__main__":
    main()
