"""Speed of EDLM's own sampler (Xu et al., ICLR 2025, "Energy-Based Diffusion Language Models",
github.com/MinkaiXu/Energy-Diffusion-LLM) on this machine, so the text benchmark can report ours
as a ratio measured in the same run.

    python bench/edlm_reference.py --setup          # export /tmp/edlm_ref; the venv is MDLM's (mdlm_reference.py)
    /tmp/mdlm_venv/bin/python bench/edlm_reference.py --num 16 --steps 128 --threads 1

prints one JSON line ``{"sample_s", "params", "commit", ...}``; from another benchmark::

    from edlm_reference import measure_edlm      # (bench/ on sys.path)
    ref = measure_edlm(num=16, steps=128)        # None when the venv or the checkout is missing

EDLM's code is MDLM's with an ``EBM`` module added (its ``models/dit.py`` is MDLM's, byte for
byte), so this harness runs in MDLM's scratch venv (``bench/mdlm_reference.py --setup``) with
MDLM's stand-ins for flash-attn's two calls and its CUDA-only imports. ``--setup`` exports a bare
git mirror (``$EDLM_MIRROR``, default ``/work/.mirror/MinkaiXu+Energy-Diffusion-LLM/repo``) into
``/tmp/edlm_ref`` (or ``$EDLM_REF``). One more stand-in: EDLM's ``EBM`` loads its frozen diffusion
model from the Hugging Face hub (``kuleshov-group/mdlm-owt``, 170M parameters) through
``transformers.AutoModelForMaskedLM.from_pretrained``; here that call returns a freshly
initialised ``models.dit.DIT`` of the size below, because no weights
can be downloaded and the speed of a step does not depend on them. The energy is EDLM's own
``ebm_backbone: dit`` (a DIT reading the noisy and the proposed clean sequence, mean-pooled into
an energy head), built by its ``EBM`` class. Everything timed is EDLM's code.

What is measured (one process, ``threads`` torch threads, float32, CPU): ``EBM.restore_model_and_sample
(num_steps)`` for ``num`` sequences of ``length`` tokens: its ``ddpm_cache`` steps from t = 1 to 1e-5,
and inside ``[is_end, is_start]`` = [0.4, 0.6] (its defaults) energy-based importance sampling
with ``is_size`` candidates (its default 2) per step, then its final noise-removal call. Both
networks have width ``hidden``, ``blocks`` blocks and ``heads`` heads. The median of ``repeats``
calls after an untimed one; network calls of the diffusion model and of the energy counted with
forward hooks.
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

REF = Path(os.environ.get("EDLM_REF", "/tmp/edlm_ref"))
MIRROR = Path(os.environ.get("EDLM_MIRROR", "/work/.mirror/MinkaiXu+Energy-Diffusion-LLM/repo"))
EXPORT = ("diffusion.py", "dataloader.py", "noise_schedule.py", "utils.py", "models", "configs")
NEEDED = ("diffusion.py", "models/dit.py", "configs/config.yaml", "configs/noise/loglinear.yaml")


def find_reference() -> Path | None:
    """The exported EDLM tree when it holds what the worker needs."""
    return REF if all((REF / p).is_file() for p in NEEDED) else None


def venv_python() -> Path:
    """MDLM's scratch venv (EDLM runs on MDLM's code and pins)."""
    from mdlm_reference import venv_python as mdlm_python

    return mdlm_python()


def setup() -> Path:
    """Export EDLM into ``REF`` and make MDLM's venv unless both already work."""
    from common import export_mirror
    from mdlm_reference import setup as mdlm_setup

    if find_reference() is None:
        export_mirror(MIRROR, REF, "MinkaiXu/Energy-Diffusion-LLM", ".edlm_commit", "EDLM_MIRROR", Path(__file__).name,
                      EXPORT)
    return mdlm_setup()


def measure_edlm(num: int = 16, steps: int = 128, threads: int = 1, length: int = 256, vocab: int = 65,
                 hidden: int = 128, blocks: int = 4, heads: int = 4, is_size: int = 2, repeats: int = 2,
                 seed: int = 0, timeout: float = 3600.0) -> dict[str, Any] | None:
    """Run this script in MDLM's scratch venv and return its JSON result; None when the venv or
    the checkout is missing (run ``--setup``)."""
    py, ref = venv_python(), find_reference()
    if not py.exists() or ref is None:
        return None
    from common import run_worker

    opts = dict(num=num, steps=steps, threads=threads, length=length, vocab=vocab, hidden=hidden, blocks=blocks,
                heads=heads, is_size=is_size, repeats=repeats, seed=seed)
    return run_worker(py, str(Path(__file__).resolve()), opts, timeout, ref)


# ---------------------------------------------------------------------------------------------- worker


def measure(a: argparse.Namespace) -> dict[str, Any]:
    """Time EDLM's importance-sampling sampler in this (venv) process, cwd = the checkout."""
    import importlib.metadata as md

    from mdlm_reference import build_offline, config, install_stand_ins

    ref = worker_start(a.threads, a.seed, install_stand_ins)
    import diffusion
    import models.dit
    import torch

    cfg = config(ref, a)
    cfg.ebm_backbone = "dit"
    cfg.sampling.is_size = a.is_size
    # its frozen diffusion model comes from the hub: a fresh DIT of the same size stands in
    model = build_offline(lambda tok: diffusion.EBM(cfg, tokenizer=tok), a.vocab,
                          AutoModelForMaskedLM=lambda *args, **kw: models.dit.DIT(cfg, vocab_size=a.vocab + 1))
    backbone = model.backbone
    assert isinstance(backbone, models.dit.DIT), type(backbone)
    calls = {"diffusion": 0, "energy_rows": 0}

    def count_diffusion(mod: Any, args: Any, out: Any) -> None:
        calls["diffusion"] += 1

    backbone.register_forward_hook(count_diffusion)
    energy_head = model.ebm.energy_head
    energy_head.register_forward_hook(lambda mod, args, out: calls.__setitem__(
        "energy_rows", calls["energy_rows"] + args[0].shape[0]))
    wall, proc, nfe, erows = [], [], [], []
    for rep in range(a.repeats + 1):
        torch.manual_seed(a.seed + rep)
        calls.update(diffusion=0, energy_rows=0)
        t0, c0 = time.perf_counter(), time.process_time()
        x = model.restore_model_and_sample(num_steps=a.steps)
        if rep:
            wall.append(time.perf_counter() - t0)
            proc.append(time.process_time() - c0)
            nfe.append(calls["diffusion"])
            erows.append(calls["energy_rows"])
    assert tuple(x.shape) == (a.num, a.length), x.shape
    return {
        "sample_s": statistics.median(wall), "sample_s_all": wall, "sample_cpu_s_all": proc, "num": a.num,
        "steps": a.steps, "is_size": a.is_size, "window": [float(cfg.sampling.is_end), float(cfg.sampling.is_start)],
        "diffusion_calls": statistics.median(nfe), "energy_rows_per_sequence": statistics.median(erows) / a.num,
        "params_diffusion": sum(p.numel() for n, p in backbone.named_parameters() if not n.startswith("ebm.")),
        "params_energy": sum(p.numel() for p in model.ebm.parameters()),
        "model": {"hidden": a.hidden, "blocks": a.blocks, "heads": a.heads, "length": a.length, "vocab": a.vocab},
        "threads": a.threads, "commit": reference_commit(ref, ".edlm_commit"),
        "versions": {"torch": torch.__version__, "lightning": md.version("lightning"),
                     "python": platform.python_version()},
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--setup", action="store_true", help=f"export EDLM to {REF} and make MDLM's venv, then exit")
    p.add_argument("--num", type=int, default=16, help="sequences per sampling call")
    p.add_argument("--steps", type=int, default=128, help="sampling steps (its default 128)")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--length", type=int, default=256, help="tokens per sequence")
    p.add_argument("--vocab", type=int, default=65, help="tokens, without the mask")
    p.add_argument("--hidden", type=int, default=128, help="width of both DITs")
    p.add_argument("--blocks", type=int, default=4, help="blocks of both DITs")
    p.add_argument("--heads", type=int, default=4, help="attention heads")
    p.add_argument("--is-size", type=int, default=2, help="importance-sampling candidates (its default 2)")
    p.add_argument("--repeats", type=int, default=2, help="timed sampling calls")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    if a.setup:
        setup()
        return
    if min(a.num, a.steps, a.length, a.vocab, a.is_size, a.repeats) < 1:
        p.error("--num, --steps, --length, --vocab, --is-size and --repeats must be >= 1")
    worker_main("EDLM", find_reference(), REF, ("lightning", "transformers"), __file__, venv_python(),
                lambda: measure(a))


if __name__ == "__main__":
    main()
