"""Speed of PaCoDi's own code (Cai et al., "parallel" real / imaginary diffusion of the half
spectrum of time series, github.com/RongyaoCai/PaCoDi) on this machine, so the time-series
benchmark can report ours as a ratio measured in the same run.

    python bench/pacodi_reference.py --setup       # make /tmp/pacodi_ref and /tmp/pacodi_venv (idempotent)
    /tmp/pacodi_venv/bin/python bench/pacodi_reference.py --steps 10 --threads 1

prints one JSON line ``{"train_step_s", "sde_train_step_s", "sample_s", "sample_sde_s",
"sample_default_s", "params", "commit", ...}``; from another benchmark (any interpreter)::

    from pacodi_reference import measure_pacodi     # (bench/ on sys.path)
    ref = measure_pacodi(steps=10)                   # None when the venv or the checkout is missing

PaCoDi is never copied into this repository nor installed in the project's environment.
``--setup`` exports the tree of a bare git mirror of the repository (``$PACODI_MIRROR``, default
``/work/.mirror/RongyaoCai+PaCoDi/repo``; any ``git clone --bare`` of it will do) into a scratch
folder outside the project (``/tmp/pacodi_ref`` or ``$PACODI_REF``; the commit goes to
``.pacodi_commit``) and makes a scratch venv (``/tmp/pacodi_venv`` or ``$PACODI_VENV``) with the
project's torch 2.13.0 (pinned by ``constraints.txt``; PaCoDi asks for ``torch>=2.0``) and the
rest of its ``requirements.txt``, whose pins are all lower bounds and all honoured: ``timm>=0.9``,
``matplotlib>=3.6``, ``pandas>=1.5``, ``scikit-learn>=1.1``, ``scipy>=1.8``, ``tqdm>=4.64``,
``pyyaml>=6.0``, ``numpy>=1.23``. Measured against commit
8c77d91f3056b9cfd9b62c3eea0ee40b65110b3a or the one in ``.pacodi_commit``.

**What cannot load here, and what stands in for it.** PaCoDi's DiT takes ``Attention`` and
``Mlp`` from timm, and ``import timm`` imports torchvision (for image transforms and a frozen
batch norm that PaCoDi never uses). The torchvision wheel that pip pairs with torch 2.13.0 is a
CUDA build: its compiled detection operators (``nms``, ``roi_align``, ...) link against
``libtorch_cuda`` and do not load against the project's CPU torch, and ``import torchvision`` then
fails in ``torchvision._meta_registrations``, which registers fake-tensor kernels for those very
operators. The worker puts an empty module under that name before importing anything, so
torchvision's Python code and timm import. Nothing runs in its place: the operators it would have
described have no kernels here, so any call of one would raise, and every timed run of PaCoDi
completes, so their share of PaCoDi's time is zero. timm's ``Attention`` and ``Mlp`` are timm's
own (``fused_attn``, torch's ``scaled_dot_product_attention``, is recorded). Everything else is
PaCoDi's code, unmodified.

What is measured (one process, ``torch.set_num_threads(threads)`` and ``OMP_NUM_THREADS``, float32,
CPU), with PaCoDi's classes imported from the checkout:

* the models are ``models.pacodi.pacodi_ddpm.PaCoDi_ddpm`` and ``models.pacodi.pacodi_sde.PaCoDi_sde``
  with the ``dit_solver_v1`` backbone at the size of our ``timeseries:pacodi_sine`` /
  ``pacodi_sine_sde`` recipes: windows of ``length`` steps and ``channels`` channels (K =
  length // 2 + 1 frequency bins, all kept, patch size 1), ``emb_size`` = our ``hidden``,
  ``num_layers`` = our ``depth``, real / imaginary interaction on. Its attention has 4 heads,
  hard-coded (our recipes' ``heads`` is 4 too); its MLPs have ratio 2 on the concatenated real and
  imaginary tokens, ours ratio 4 plus linear messages, so ours has more parameters (both counts
  are reported). The DDPM model has ``max_step = ddpm_steps`` (ours: 100) and samples with its
  DDIM step (``ddim_eta`` 0, as all its configs) over all of them; the SDE model has
  ``max_step`` 500 (its configs) and samples with its Euler-Maruyama over ``sde_steps`` (ours:
  200). Everything else from its ``config/unconditional/sines.yaml``: instance normalisation on,
  ``ReduceLROnPlateauWithWarmup`` with its settings, EMA decay 0.995 every 10 steps;
* a training step is the body of its ``engine/solver.py`` ``Trainer.train`` loop with one
  accumulation (one batch of ``batch`` windows per optimiser step, as ours; its sines recipe
  accumulates two batches of 128): its model's ``forward`` (instance norm, ``rfft``, a random
  step, the heteroscedastic epsilon loss), ``backward``, ``clip_grad_norm_(1.0)``, Adam (betas
  0.9, 0.96) ``step``, the scheduler's ``step(loss)``, ``zero_grad`` and its ``EMA.update``.
  Batches are TimeGAN sines in (-1, 1), as its ``TimeSeriesDataset`` yields them, made before the
  clock starts; ``warmup`` steps are run untimed, then the median of ``steps`` timed ones. Both
  variants are trained (``train_step_s``, ``sde_train_step_s``);
* unconditional sampling is its ``Trainer.sample`` loop without the numpy copy: instance
  statistics of reference windows, ``generate_unconditional`` of the EMA model, in chunks:
  ``num`` windows in one chunk at equal steps (``sample_s``: DDPM, ``sample_sde_s``: SDE), and,
  default against default, what its evaluation does (``main.py``) with the sines recipe
  (``sample_default_s``): a model of ``max_step`` 500 (the trained EMA weights loaded into it)
  sampling ``test_dataset.sampling_steps`` 200 DDIM steps, in chunks of ``sample_size`` 256.
  The SDE recipes also evaluate with 200 steps, the same as ours (recorded, not timed twice).
  Each sampling time is the median of ``sample_repeats`` calls after an untimed one.

The clock is wall time; the process CPU time is returned too, so a step whose wall time is far
above cpu / threads was slowed by other processes.
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

VENV = Path(os.environ.get("PACODI_VENV", "/tmp/pacodi_venv"))
REF = Path(os.environ.get("PACODI_REF", "/tmp/pacodi_ref"))
MIRROR = Path(os.environ.get("PACODI_MIRROR", "/work/.mirror/RongyaoCai+PaCoDi/repo"))
PACKAGES = ["timm>=0.9", "matplotlib>=3.6", "pandas>=1.5", "scikit-learn>=1.1", "scipy>=1.8", "tqdm>=4.64",
            "pyyaml>=6.0", "numpy>=1.23"]
NEEDED = ("models/pacodi/pacodi_ddpm.py", "models/pacodi/pacodi_sde.py", "models/pacodi/dit_solver_v1.py",
          "models/pacodi/backbones.py", "models/pacodi/ddpm_schedule.py", "models/pacodi/normalization.py",
          "engine/lr_sch.py", "utils/ema.py", "utils/runtime.py", "config/unconditional/sines.yaml",
          "config/unconditional/etth1.yaml")
STAND_IN = "torchvision._meta_registrations"  # see the module docstring
CHECK = (f"import sys, types; sys.modules['{STAND_IN}'] = types.ModuleType('{STAND_IN}'); "
         "import torch, timm, tqdm, yaml, sklearn, scipy, pandas, matplotlib; "
         "from timm.models.vision_transformer import Attention, Mlp; "
         "assert torch.__version__.split('+')[0] == '2.13.0'")
DDPM_CONFIG = "config/unconditional/sines.yaml"  # its DDPM recipe on the sines
SDE_CONFIG = "config/unconditional/etth1.yaml"  # the config its scripts/experiments/script_uncond.sh runs (SDE)


def venv_python() -> Path:
    """The scratch venv's interpreter."""
    return VENV / "bin" / "python"


def find_reference() -> Path | None:
    """The exported PaCoDi tree (``$PACODI_REF`` or /tmp/pacodi_ref) when it holds what the worker needs."""
    return REF if all((REF / p).is_file() for p in NEEDED) else None


def export_reference(mirror: Path = MIRROR, dest: Path = REF) -> Path:
    """Export the HEAD tree of a bare mirror of PaCoDi's repository into ``dest``."""
    from common import export_mirror

    export_mirror(mirror, dest, "RongyaoCai/PaCoDi", ".pacodi_commit", "PACODI_MIRROR", Path(__file__).name)
    return dest


def setup(verbose: bool = True) -> Path:
    """Export PaCoDi into ``REF`` and create the scratch venv unless both already work."""
    if find_reference() is None:
        export_reference()
    from common import scratch_venv

    return scratch_venv(VENV, CHECK, list(PACKAGES), verbose=verbose)


def measure_pacodi(steps: int = 10, warmup: int = 2, threads: int = 1, batch: int = 128, num: int = 512,
                   length: int = 24, channels: int = 5, hidden: int = 64, depth: int = 2, ddpm_steps: int = 100,
                   sde_steps: int = 200, sample_repeats: int = 2, seed: int = 0,
                   timeout: float = 3600.0) -> dict[str, Any] | None:
    """Run this script in the scratch venv and return its JSON result; None when the venv or the
    checkout is missing (run ``--setup``)."""
    py, ref = venv_python(), find_reference()
    if not py.exists() or ref is None:
        return None
    from common import run_worker

    opts = dict(steps=steps, warmup=warmup, threads=threads, batch=batch, num=num, length=length,
                channels=channels, hidden=hidden, depth=depth, ddpm_steps=ddpm_steps, sde_steps=sde_steps,
                sample_repeats=sample_repeats, seed=seed)
    return run_worker(py, str(Path(__file__).resolve()), opts, timeout, ref)


# ---------------------------------------------------------------------------------------------- worker


def _stand_ins() -> None:
    """The empty ``torchvision._meta_registrations`` (see the module docstring)."""
    sys.modules.setdefault(STAND_IN, types.ModuleType(STAND_IN))


def _sines(torch: Any, n: int, length: int, channels: int, generator: Any) -> Any:
    """``n`` windows (n, length, channels) of TimeGAN's sines (frequency and phase uniform in
    [0, 0.1) per channel), in (-1, 1) as its dataset scales them."""
    steps = torch.arange(length, dtype=torch.float32)
    freq = 0.1 * torch.rand(n, 1, channels, generator=generator)
    phase = 0.1 * torch.rand(n, 1, channels, generator=generator)
    return torch.sin(freq * steps[None, :, None] + phase)


def _timed(fn: Any, repeats: int) -> tuple[list[float], list[float]]:
    """Wall and process CPU seconds of ``repeats`` calls of ``fn``, after one untimed call."""
    fn()
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return wall, cpu


def measure(steps: int, warmup: int, threads: int, batch: int, num: int, length: int, channels: int, hidden: int,
            depth: int, ddpm_steps: int, sde_steps: int, sample_repeats: int, seed: int) -> dict[str, Any]:
    """Time PaCoDi's training steps (DDPM and SDE) and unconditional sampling in this (venv)
    process, cwd = the checkout."""
    import copy
    import importlib.metadata as md

    ref = worker_start(threads, seed)
    import torch
    import yaml
    from models.pacodi.pacodi_ddpm import PaCoDi_ddpm
    from models.pacodi.pacodi_sde import PaCoDi_sde
    from timm.layers import use_fused_attn
    from torch.nn.utils import clip_grad_norm_
    from utils.ema import EMA
    from utils.runtime import instantiate_from_config

    cfg = yaml.safe_load((ref / DDPM_CONFIG).read_text())
    sde_cfg = yaml.safe_load((ref / SDE_CONFIG).read_text())
    params = cfg["model"]["params"]
    size = dict(seq_length=length, channels=channels, emb_size=hidden, num_layers=depth, patch_size=1,
                backbone=params["backbone"], real_imag_interaction=True, instance_norm=params["instance_norm"],
                frequency_keep_ratio=1.0, device="cpu")
    gen = torch.Generator().manual_seed(seed)
    data = [_sines(torch, batch, length, channels, gen) for _ in range(warmup + steps)]
    reference = _sines(torch, num, length, channels, gen)  # the windows whose instance statistics sampling uses

    def train(model: Any) -> tuple[Any, list[float], list[float], float]:
        """``warmup + steps`` steps of its solver's loop; the EMA, the step times and the last loss."""
        solver = cfg["solver"]
        opt = torch.optim.Adam(filter(lambda p: p.requires_grad, model.parameters()), lr=solver["base_lr"],
                               betas=[0.9, 0.96])
        ema = EMA(model, beta=solver["ema"]["decay"], update_every=solver["ema"]["update_interval"]).to("cpu")
        sch_cfg = copy.deepcopy(solver["scheduler"])
        sch_cfg["params"]["optimizer"] = opt
        sch = instantiate_from_config(sch_cfg)
        model.train()
        wall, cpu, loss_value = [], [], float("nan")
        for k, x in enumerate(data):
            t0, c0 = time.perf_counter(), time.process_time()
            loss = model(x, target=x)  # one accumulation (its recipes: gradient_accumulate_every 2)
            loss.backward()
            loss_value = loss.item()
            clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sch.step(loss_value)
            opt.zero_grad()
            ema.update()
            if k >= warmup:
                wall.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
        return ema, wall, cpu, loss_value

    def sample(model: Any, chunk: int) -> Any:
        """Its ``Trainer.sample``: ``num`` windows in chunks of ``chunk``, each with the instance
        statistics of as many reference windows."""
        out = []
        for start in range(0, num, chunk):
            bs = min(chunk, num - start)
            _, stats = model.instance_normalize(reference[start:start + bs])
            out.append(model.generate_unconditional(batch_size=bs, instance_stats=stats))
        return torch.cat(out)

    ddpm = PaCoDi_ddpm(max_step=ddpm_steps, sampling_steps=ddpm_steps, ddim_eta=params["ddim_eta"], **size)
    ema, train_s, train_cpu, loss = train(ddpm)
    sample_s, sample_cpu = _timed(lambda: sample(ema.ema_model, num), sample_repeats)
    samples = sample(ema.ema_model, num)

    default_steps = int(cfg["dataloader"]["test_dataset"]["sampling_steps"])  # main.py's evaluation steps
    chunk = int(cfg["dataloader"]["sample_size"])
    default = PaCoDi_ddpm(max_step=params["max_step"], sampling_steps=default_steps, ddim_eta=params["ddim_eta"],
                          **size)
    default.load_state_dict(ema.ema_model.state_dict())
    default.eval()
    default_s, default_cpu = _timed(lambda: sample(default, chunk), sample_repeats)

    sde_params = sde_cfg["model"]["params"]
    sde = PaCoDi_sde(max_step=sde_params["max_step"], sampling_steps=sde_steps, **size)
    sde_ema, sde_train_s, sde_train_cpu, sde_loss = train(sde)
    sde_s, sde_cpu = _timed(lambda: sample(sde_ema.ema_model, num), sample_repeats)
    sde_samples = sample(sde_ema.ema_model, num)

    attn = ddpm.model.layers[0].attn_r
    return {
        "train_step_s": statistics.median(train_s), "train_step_s_all": train_s, "train_step_cpu_s_all": train_cpu,
        "final_loss": loss, "sde_train_step_s": statistics.median(sde_train_s), "sde_train_step_s_all": sde_train_s,
        "sde_train_step_cpu_s_all": sde_train_cpu, "sde_final_loss": sde_loss, "batch": batch,
        "sample_s": statistics.median(sample_s), "sample_s_all": sample_s, "sample_cpu_s_all": sample_cpu,
        "sample_steps": ddpm_steps, "sample_finite": bool(torch.isfinite(samples).all()),
        "sample_sde_s": statistics.median(sde_s), "sample_sde_s_all": sde_s, "sample_sde_cpu_s_all": sde_cpu,
        "sde_steps": sde_steps, "sample_sde_finite": bool(torch.isfinite(sde_samples).all()),
        "sample_default_s": statistics.median(default_s), "sample_default_s_all": default_s,
        "sample_default_cpu_s_all": default_cpu, "default_steps": default_steps,
        "default_max_step": int(params["max_step"]), "default_chunk": chunk,
        "default_sde_steps": int(sde_cfg["dataloader"]["test_dataset"]["sampling_steps"]),
        "num": num, "shape": list(samples.shape),
        "params": sum(p.numel() for p in ddpm.parameters()),
        "backbone_params": sum(p.numel() for p in ddpm.model.parameters()),
        "heads": attn.num_heads, "fused_attn": bool(getattr(attn, "fused_attn", use_fused_attn())),
        "bins": ddpm.modeled_spectrum_bins, "length": length, "channels": channels, "hidden": hidden,
        "depth": depth, "steps": steps, "warmup": warmup, "threads": threads, "sample_repeats": sample_repeats,
        "stand_ins": [STAND_IN], "commit": reference_commit(ref, ".pacodi_commit"),
        "versions": {"torch": torch.__version__, "timm": md.version("timm"), "torchvision": md.version("torchvision"),
                     "python": platform.python_version()},
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--setup", action="store_true", help=f"export PaCoDi to {REF} and create the scratch venv {VENV} "
                   "(idempotent), then exit")
    p.add_argument("--steps", type=int, default=10, help="timed training steps (each variant)")
    p.add_argument("--warmup", type=int, default=2, help="untimed training steps first")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--batch", type=int, default=128, help="training windows per step (our recipes and its: 128)")
    p.add_argument("--num", type=int, default=512, help="windows per unconditional sampling call (our recipes: 512)")
    p.add_argument("--length", type=int, default=24, help="window length (our recipes: 24)")
    p.add_argument("--channels", type=int, default=5, help="channels (our recipes: 5)")
    p.add_argument("--hidden", type=int, default=64, help="emb_size (our recipes' hidden: 64)")
    p.add_argument("--depth", type=int, default=2, help="num_layers (our recipes' depth: 2)")
    p.add_argument("--ddpm-steps", type=int, default=100, help="DDPM steps, training and sampling (ours: 100)")
    p.add_argument("--sde-steps", type=int, default=200, help="Euler-Maruyama sampling steps (ours: 200)")
    p.add_argument("--sample-repeats", type=int, default=2, help="timed sampling calls (the median is reported)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    if a.setup:
        setup()
        return
    if min(a.steps, a.batch, a.num, a.length, a.channels, a.hidden, a.depth, a.ddpm_steps, a.sde_steps,
           a.sample_repeats) < 1 or a.warmup < 0:
        p.error("--steps, --batch, --num, --length, --channels, --hidden, --depth, --ddpm-steps, --sde-steps and "
                "--sample-repeats must be >= 1, --warmup >= 0")
    _stand_ins()  # before worker_main imports timm to check it
    worker_main("PaCoDi", find_reference(), REF, ("timm.models.vision_transformer", "tqdm"), __file__, venv_python(),
                lambda: measure(a.steps, a.warmup, a.threads, a.batch, a.num, a.length, a.channels, a.hidden,
                                a.depth, a.ddpm_steps, a.sde_steps, a.sample_repeats, a.seed))


if __name__ == "__main__":
    main()
