"""Speed of MDLM's own code (Sahoo et al., NeurIPS 2024, "Simple and Effective Masked Diffusion
Language Models", github.com/kuleshov-group/mdlm) on this machine, so the text benchmark can report
ours as a ratio measured in the same run.

    python bench/mdlm_reference.py --setup         # make /tmp/mdlm_ref and /tmp/mdlm_venv (idempotent)
    /tmp/mdlm_venv/bin/python bench/mdlm_reference.py --steps 10 --threads 1

prints one JSON line ``{"train_step_s", "sample", "params", "commit", ...}``; from another
benchmark (any interpreter)::

    from mdlm_reference import measure_mdlm         # (bench/ on sys.path)
    ref = measure_mdlm(steps=10)                    # None when the venv or the checkout is missing

MDLM is never copied into this repository nor installed in the project's environment. ``--setup``
exports a bare git mirror of the repository (``$MDLM_MIRROR``, default
``/work/.mirror/kuleshov-group+mdlm/repo``; any ``git clone --bare`` of it will do) into a scratch
folder outside the project (``/tmp/mdlm_ref`` or ``$MDLM_REF``; the commit goes to ``.mdlm_commit``)
and makes a scratch venv (``/tmp/mdlm_venv`` or ``$MDLM_VENV``) with the project's torch 2.13.0
(pinned by ``constraints.txt``) and MDLM's own pins where they install on it (``requirements.yaml``:
lightning 2.2.1, transformers 4.38.2, datasets 2.18.0, hydra-core 1.3.2, omegaconf 2.3.0, einops
0.7.0, fsspec 2024.2.0), with torchmetrics, numpy < 2 and pyarrow < 17 (for that numpy) and
setuptools < 81 (lightning 2.2 imports ``pkg_resources``).

**What does not run on a CPU, and what stands in for it.** MDLM's transformer (``models/dit.py``)
imports flash-attn, whose kernels are CUDA-only, for two calls; its Mamba backbone imports
``mamba_ssm`` and ``causal_conv1d`` (CUDA-only, not used here); ``utils.py`` imports timm for a
learning-rate scheduler that is not used here (timm needs a torchvision whose C++ operators do not
load against this torch). The worker puts stand-in modules under those names before importing MDLM:

* ``flash_attn.layers.rotary.apply_rotary_emb_qkv_(qkv, cos, sin)``: the same rotary embedding of
  queries and keys (non-interleaved halves, values unchanged), written in PyTorch (out of place);
* ``flash_attn.flash_attn_interface.flash_attn_varlen_qkvpacked_func(qkv, cu_seqlens, max_seqlen,
  dropout_p, causal=...)``: for the equal-length sequences the DIT passes, PyTorch's
  ``scaled_dot_product_attention`` over the packed batch, which is what a CPU user of MDLM would
  write (and what our network calls);
* ``mamba_ssm``, ``causal_conv1d`` and ``timm.scheduler``: names only, which raise if called.

``transformers.AutoTokenizer.from_pretrained`` is replaced while the model is built: MDLM's
constructor loads GPT-2's tokenizer from the Hugging Face hub for its generative-perplexity
evaluation, which is not timed here and needs the network. Everything else is MDLM's code,
unmodified. Measured against commit c112c526d193436838c98d81455ee51f90309470 or the one in
``.mdlm_commit``.

What is measured (one process, ``torch.set_num_threads(threads)`` and ``OMP_NUM_THREADS``, float32,
CPU): MDLM's own ``diffusion.Diffusion`` (its Lightning module) with the values of
``configs/config.yaml`` (absorbing state, SUBS parameterisation, continuous time, no time
conditioning, antithetic time sampling, ``noise/loglinear``, ``lr_scheduler/constant_warmup``,
AdamW, gradient clipping 1.0) and its DIT backbone at the size of our
``text:shakespeare_mdlm`` recipe (``hidden``, ``blocks``, ``heads``, ``cond_dim`` = hidden, MLP
ratio 4, dropout 0, sequences of ``length`` tokens over a vocabulary of ``vocab`` tokens plus its
mask):

* a training step is ``Diffusion.training_step`` (the masking, the network, the SUBS loss and its
  metrics; ``self.log`` is a no-op without a trainer) on a batch of ``batch`` random sequences,
  then backward, gradient clipping at 1.0, AdamW, the scheduler's step and the EMA update that
  MDLM's ``optimizer_step`` does. Lightning's trainer loop is left out, which only favours MDLM.
  ``warmup`` steps untimed, then the median of ``steps``;
* sampling is ``Diffusion.restore_model_and_sample(num_steps)`` (EMA weights swapped in, the
  ``ddpm_cache`` predictor, MDLM's default, over ``num_steps`` steps from t = 1 to 1e-5, then its
  final noise-removal call) for ``num`` sequences, for each of ``sample_steps``; the median of
  ``sample_repeats`` calls after an untimed one. Network calls and rows (sequences the network
  processed) are counted with a forward hook on the backbone.
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

VENV = Path(os.environ.get("MDLM_VENV", "/tmp/mdlm_venv"))
REF = Path(os.environ.get("MDLM_REF", "/tmp/mdlm_ref"))
MIRROR = Path(os.environ.get("MDLM_MIRROR", "/work/.mirror/kuleshov-group+mdlm/repo"))
PACKAGES = ["lightning==2.2.1", "transformers==4.38.2", "datasets==2.18.0", "hydra-core==1.3.2", "omegaconf==2.3.0",
            "einops==0.7.0", "fsspec==2024.2.0", "torchmetrics", "huggingface_hub", "numpy<2", "pyarrow<17",
            "setuptools>=77,<81"]
EXPORT = ("diffusion.py", "dataloader.py", "noise_schedule.py", "utils.py", "models", "configs")
NEEDED = ("diffusion.py", "models/dit.py", "noise_schedule.py", "configs/config.yaml", "configs/noise/loglinear.yaml",
          "configs/lr_scheduler/constant_warmup.yaml")
CHECK = ("import torch, lightning, transformers, datasets, hydra, omegaconf, einops, torchmetrics; "
         "assert torch.__version__.split('+')[0] == '2.13.0'")


def venv_python() -> Path:
    """The scratch venv's interpreter."""
    return VENV / "bin" / "python"


def find_reference() -> Path | None:
    """The exported MDLM tree (``$MDLM_REF`` or /tmp/mdlm_ref) when it holds what the worker needs."""
    return REF if all((REF / p).is_file() for p in NEEDED) else None


def setup(verbose: bool = True) -> Path:
    """Export MDLM into ``REF`` and create the scratch venv unless both already work."""
    from common import export_mirror, scratch_venv

    if find_reference() is None:
        export_mirror(MIRROR, REF, "kuleshov-group/mdlm", ".mdlm_commit", "MDLM_MIRROR", Path(__file__).name, EXPORT)
    return scratch_venv(VENV, CHECK, list(PACKAGES), verbose=verbose)


def measure_mdlm(steps: int = 10, warmup: int = 2, threads: int = 1, batch: int = 32, length: int = 256,
                 vocab: int = 65, hidden: int = 128, blocks: int = 4, heads: int = 4, num: int = 16,
                 sample_steps: tuple[int, ...] = (128, 256), sample_repeats: int = 2, seed: int = 0,
                 timeout: float = 3600.0) -> dict[str, Any] | None:
    """Run this script in the scratch venv and return its JSON result; None when the venv or the
    checkout is missing (run ``--setup``)."""
    py, ref = venv_python(), find_reference()
    if not py.exists() or ref is None:
        return None
    from common import run_worker

    opts = dict(steps=steps, warmup=warmup, threads=threads, batch=batch, length=length, vocab=vocab, hidden=hidden,
                blocks=blocks, heads=heads, num=num, sample_steps=",".join(map(str, sample_steps)),
                sample_repeats=sample_repeats, seed=seed)
    return run_worker(py, str(Path(__file__).resolve()), opts, timeout, ref)


# ---------------------------------------------------------------------------------------------- worker


def _module(name: str, **attrs: Any) -> types.ModuleType:
    """Register a stand-in module ``name`` (and its parents) in ``sys.modules``."""
    parts = name.split(".")
    for i in range(1, len(parts) + 1):
        sub = ".".join(parts[:i])
        if sub not in sys.modules:
            sys.modules[sub] = types.ModuleType(sub)
            if i > 1:
                setattr(sys.modules[".".join(parts[:i - 1])], parts[i - 1], sys.modules[sub])
    mod = sys.modules[name]
    for key, value in attrs.items():
        setattr(mod, key, value)
    return mod


def _unavailable(name: str) -> Any:
    def call(*args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{name} is CUDA-only and not used by this benchmark")

    return call


def apply_rotary_emb_qkv_(qkv: Any, cos: Any, sin: Any, cos_k: Any = None, sin_k: Any = None,
                          interleaved: bool = False, seqlen_offsets: int = 0) -> Any:
    """Stand-in for flash-attn's rotary embedding as ``models/dit.py`` calls it: ``qkv`` (batch, seq,
    3, heads, head_dim), ``cos`` / ``sin`` (seq, rotary_dim / 2); the channel pairs ``(x_i,
    x_{i + rotary_dim / 2})`` of queries and keys rotated, values unchanged (out of place)."""
    import torch

    if interleaved or cos_k is not None or sin_k is not None or seqlen_offsets:
        raise NotImplementedError("only the call models/dit.py makes is provided")
    half = cos.shape[-1]
    c, s = cos[None, :, None, None, :], sin[None, :, None, None, :]
    qk = qkv[:, :, :2]
    x1, x2 = qk[..., :half], qk[..., half:2 * half]
    rotated = torch.cat([x1 * c - x2 * s, x1 * s + x2 * c, qk[..., 2 * half:]], dim=-1)
    return torch.cat([rotated, qkv[:, :, 2:]], dim=2)


def flash_attn_varlen_qkvpacked_func(qkv: Any, cu_seqlens: Any, max_seqlen: int, dropout_p: float = 0.0,
                                     softmax_scale: float | None = None, causal: bool = False, **kwargs: Any) -> Any:
    """Stand-in for flash-attn's packed variable-length attention for the equal-length sequences
    the DIT passes: ``qkv`` (total, 3, heads, head_dim) -> (total, heads, head_dim), by PyTorch's
    ``scaled_dot_product_attention``."""
    import torch.nn.functional as F

    total, _, heads, dim = qkv.shape
    if total % max_seqlen or cu_seqlens.numel() != total // max_seqlen + 1:
        raise NotImplementedError("only equal-length sequences (the DIT's call) are provided")
    q, k, v = qkv.view(total // max_seqlen, max_seqlen, 3, heads, dim).permute(2, 0, 3, 1, 4).unbind(0)
    out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=causal, scale=softmax_scale)
    return out.transpose(1, 2).reshape(total, heads, dim)


def install_stand_ins() -> None:
    """Register the CPU stand-ins for flash-attn's two calls and names for the unused CUDA-only
    imports (see the module's docstring)."""
    _module("flash_attn.layers.rotary", apply_rotary_emb_qkv_=apply_rotary_emb_qkv_)
    _module("flash_attn.flash_attn_interface", flash_attn_varlen_qkvpacked_func=flash_attn_varlen_qkvpacked_func)
    _module("causal_conv1d", causal_conv1d_fn=_unavailable("causal_conv1d"),
            causal_conv1d_update=_unavailable("causal_conv1d"))
    _module("mamba_ssm.ops.selective_scan_interface", mamba_inner_fn=_unavailable("mamba_ssm"),
            selective_scan_fn=_unavailable("mamba_ssm"))
    _module("mamba_ssm.ops.triton.selective_state_update", selective_state_update=_unavailable("mamba_ssm"))
    _module("timm.scheduler", CosineLRScheduler=type("CosineLRScheduler", (), {}))


def config(ref: Path, a: argparse.Namespace) -> Any:
    """MDLM's ``configs/config.yaml`` (also EDLM's) with its noise and scheduler defaults, a DIT of
    the given size (``hidden``, ``length``, ``blocks``, ``heads``; dropout 0) and ``num``
    sequences per sampling call."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(ref / "configs/config.yaml")
    for key in ("defaults", "hydra", "trainer", "wandb", "checkpointing", "callbacks"):
        cfg.pop(key, None)
    cfg.noise = OmegaConf.load(ref / "configs/noise/loglinear.yaml")
    cfg.lr_scheduler = OmegaConf.load(ref / "configs/lr_scheduler/constant_warmup.yaml")
    cfg.model = OmegaConf.merge(OmegaConf.load(ref / "configs/model/small.yaml"), {
        "hidden_size": a.hidden, "cond_dim": a.hidden, "length": a.length, "n_blocks": a.blocks, "n_heads": a.heads,
        "dropout": 0.0})
    cfg.loader = {"batch_size": getattr(a, "batch", a.num), "eval_batch_size": a.num}
    return cfg


def build_offline(build: Any, vocab: int, **hub: Any) -> Any:
    """``build(tokenizer)`` with a tokenizer of ``vocab`` tokens (no mask token: MDLM adds its own)
    while the Hugging Face hub loaders are replaced: ``AutoTokenizer.from_pretrained`` (the
    generative-perplexity tokenizer MDLM's constructor loads; not used here) by a placeholder, and
    each ``hub`` entry (``AutoModelForMaskedLM=loader``) by the given loader."""
    import transformers

    tokenizer = types.SimpleNamespace(vocab_size=vocab, mask_token=None, pad_token_id=0, bos_token_id=0,
                                      eos_token_id=0)
    loaders = {"AutoTokenizer": lambda *args, **kw: types.SimpleNamespace(
        pad_token="<pad>", eos_token="<eos>", pad_token_id=0, eos_token_id=0), **hub}
    saved = {name: getattr(transformers, name).from_pretrained for name in loaders}
    try:
        for name, loader in loaders.items():
            getattr(transformers, name).from_pretrained = loader
        return build(tokenizer)
    finally:
        for name, loader in saved.items():
            getattr(transformers, name).from_pretrained = loader


def measure(a: argparse.Namespace) -> dict[str, Any]:
    """Time MDLM's training step and sampling in this (venv) process, cwd = the checkout."""
    import importlib.metadata as md
    import itertools

    ref = worker_start(a.threads, a.seed, install_stand_ins)
    import diffusion
    import torch
    import transformers

    cfg = config(ref, a)
    cfg.optim.lr = 1e-3  # our recipe's
    cfg.training.ema = 0.999
    model = build_offline(lambda tok: diffusion.Diffusion(cfg, tokenizer=tok), a.vocab)
    (opt,), (sched,) = model.configure_optimizers()
    sched = sched["scheduler"]
    params = list(itertools.chain(model.backbone.parameters(), model.noise.parameters()))
    gen = torch.Generator().manual_seed(a.seed)
    batches = [{"input_ids": torch.randint(0, a.vocab, (a.batch, a.length), generator=gen),
                "attention_mask": torch.ones(a.batch, a.length)} for _ in range(a.warmup + a.steps)]
    model.backbone.train()
    model.noise.train()
    times, cpu, losses = [], [], []
    for k, batch in enumerate(batches):
        t0, c0 = time.perf_counter(), time.process_time()
        loss = model.training_step(batch, k)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        model.ema.update(params)  # as MDLM's optimizer_step
        losses.append(float(loss))
        if k >= a.warmup:
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)

    calls = [0, 0]

    def count(mod: Any, args: Any, out: Any) -> None:
        calls[0] += 1
        calls[1] += args[0].shape[0]

    model.backbone.register_forward_hook(count)
    sampling = []
    for steps in a.sample_steps:
        wall, proc, nfe, rows = [], [], [], []
        for rep in range(a.sample_repeats + 1):
            torch.manual_seed(a.seed + rep)
            calls[:] = [0, 0]
            t0, c0 = time.perf_counter(), time.process_time()
            x = model.restore_model_and_sample(num_steps=steps)
            if rep:
                wall.append(time.perf_counter() - t0)
                proc.append(time.process_time() - c0)
                nfe.append(calls[0])
                rows.append(calls[1])
        assert tuple(x.shape) == (a.num, a.length) and int(x.max()) < a.vocab, (x.shape, int(x.max()))
        sampling.append({"steps": steps, "predictor": str(model.sampler), "seconds": statistics.median(wall),
                         "seconds_all": wall, "cpu_all": proc, "network_calls": statistics.median(nfe),
                         "rows_per_sequence": statistics.median(rows) / a.num})
    return {
        "train_step_s": statistics.median(times), "train_step_s_all": times, "train_step_cpu_s_all": cpu,
        "final_loss": losses[-1], "batch": a.batch, "sample": sampling, "num": a.num,
        "config_default_steps": int(model.config.sampling.steps),
        "params": sum(p.numel() for p in model.backbone.parameters()),
        "model": {"hidden": a.hidden, "blocks": a.blocks, "heads": a.heads, "cond_dim": a.hidden, "length": a.length,
                  "vocab": a.vocab, "mask_index": int(model.mask_index)},
        "steps": a.steps, "warmup": a.warmup, "threads": a.threads, "commit": reference_commit(ref, ".mdlm_commit"),
        "versions": {"torch": torch.__version__, "lightning": md.version("lightning"),
                     "transformers": transformers.__version__, "python": platform.python_version()},
    }



def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--setup", action="store_true", help=f"export MDLM to {REF} and create the scratch venv {VENV} "
                   "(idempotent), then exit")
    p.add_argument("--steps", type=int, default=10, help="timed training steps")
    p.add_argument("--warmup", type=int, default=2, help="untimed training steps first")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--batch", type=int, default=32, help="training sequences per step (our recipe's 32)")
    p.add_argument("--length", type=int, default=256, help="tokens per sequence (our recipe's 256)")
    p.add_argument("--vocab", type=int, default=65, help="tokens, without the mask (tiny Shakespeare's 65 characters)")
    p.add_argument("--hidden", type=int, default=128, help="DIT width (and its conditioning width)")
    p.add_argument("--blocks", type=int, default=4, help="DIT blocks")
    p.add_argument("--heads", type=int, default=4, help="attention heads")
    p.add_argument("--num", type=int, default=16, help="sequences per sampling call")
    p.add_argument("--sample-steps", default="128,256", help="comma list of sampling step counts (MDLM's default 128)")
    p.add_argument("--sample-repeats", type=int, default=2, help="timed sampling calls per step count")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    if a.setup:
        setup()
        return
    try:
        a.sample_steps = tuple(int(s) for s in a.sample_steps.split(","))
    except ValueError:
        p.error(f"--sample-steps: a comma list of integers, got {a.sample_steps!r}")
    if min(a.steps, a.batch, a.length, a.vocab, a.num, a.sample_repeats, *a.sample_steps) < 1 or a.warmup < 0:
        p.error("--steps, --batch, --length, --vocab, --num, --sample-repeats and --sample-steps must be >= 1, "
                "--warmup >= 0")
    worker_main("MDLM", find_reference(), REF, ("lightning", "transformers"), __file__, venv_python(),
                lambda: measure(a))


if __name__ == "__main__":
    main()
