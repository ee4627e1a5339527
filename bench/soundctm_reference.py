"""Speed of SoundCTM's own code (Saito et al., ICLR 2025, "SoundCTM: Unifying Score-based and
Consistency Models for Full-band Text-to-Sound Generation", github.com/sony/soundctm) on this
machine, so the audio benchmark can report ours as a ratio measured in the same run.

    python bench/soundctm_reference.py --setup        # make /tmp/soundctm_ref and /tmp/soundctm_venv (idempotent)
    /tmp/soundctm_venv/bin/python bench/soundctm_reference.py --steps 5 --threads 1

prints one JSON line ``{"train_step_s", "sample_1_s", "sample_2_s", "params", "commit", ...}``; from
another benchmark (any interpreter)::

    from soundctm_reference import measure_soundctm   # (bench/ on sys.path)
    ref = measure_soundctm(steps=5)                     # None when the venv or the checkout is missing

SoundCTM is never copied into this repository nor installed in the project's environment.
``--setup`` exports the tree of a bare git mirror of the repository (``$SOUNDCTM_MIRROR``, default
``/work/.mirror/sony+soundctm/repo``; any ``git clone --bare`` of it will do) into a scratch folder
outside the project (``/tmp/soundctm_ref`` or ``$SOUNDCTM_REF``; the commit goes to
``.soundctm_commit``) and makes a scratch venv (``/tmp/soundctm_venv`` or ``$SOUNDCTM_VENV``) with
the project's torch 2.13.0 (pinned by ``constraints.txt``; SoundCTM's docker image uses torch 2.1.0)
and SoundCTM's pins from ``requirements.txt`` where they install and run: ``transformers==4.36.2``,
``accelerate==0.20.3``, ``einops==0.7.0``, ``numpy==1.23.5``, ``scipy==1.10.1``, ``librosa==0.9.2``,
``progressbar==2.5``, ``blobfile==2.1.1``, ``tqdm==4.66.1``, plus ``huggingface_hub<0.26`` (the
diffusers of that time imports ``cached_download``) and a setuptools that still ships
``pkg_resources`` (accelerate 0.20 imports it). Pins not honoured:

* ``diffusers==0.26.2`` -> ``0.25.1``: the teacher's U-Net (``tango_edm/unet_2d_condition_teacher.py``,
  line 25) imports ``PositionNet`` from ``diffusers.models.embeddings``, which 0.26.2 no longer has
  (``ImportError: cannot import name 'PositionNet'``); 0.25.1 has it and everything else both U-Nets
  import;
* ``SoundFile==0.10.2`` -> ``0.12.1``: 0.10.2 needs a system libsndfile (``OSError: sndfile library
  not found``); 0.12 ships it in the wheel. Only imported, never called here;
* ``torchaudio`` (2.1.0 in the docker image): no release for torch 2.13 (the newest, 2.11.1, fails
  to load its C extension under torch 2.13); see the stand-ins;
* not installed because nothing timed imports them: datasets, pandas, wandb (a stand-in), gradio,
  laion-clap, the evaluation packages (ssr-eval, h5py, webdataset, mpi4py ...).

Measured against commit 84c57703d7390980530b61cc79a60a486f2c083e or the one in ``.soundctm_commit``.

What is measured (one process, ``torch.set_num_threads(threads)`` and ``OMP_NUM_THREADS``, float32,
CPU; SoundCTM's recipe trains in bf16 on GPUs through accelerate: ``mixed_precision="no"`` here, as
ours), with SoundCTM's own classes and functions imported from the checkout, unmodified:

* the networks are SoundCTM's: the student ``tango_edm.unet_2d_condition.UNet2DConditionModel``
  (the two-time CTM U-Net with the ``s`` and guidance-scale embeddings) inside
  ``tango_edm.models_edm.AudioDiffusionEDM``, built by ``ctm.script_util.create_model_and_diffusion``
  for the student, its target (EMA) copy and the teacher (``teacher=True``: the teacher U-Net with
  ``get_feature_full``), at random init from a config written at run time: SoundCTM's
  ``configs/diffusion_model_config.json`` at the size of our ``audio:soundctm`` recipe (``MelUNet``,
  channels 64 / 128 / 128, one residual block per level, attention heads of 64 channels):
  ``block_out_channels [64, 128, 128]``, ``layers_per_block 1``, ``attention_head_dim [1, 2, 2]``
  (diffusers' name for the head count: 64-channel heads, as SoundCTM's 320 / 5), SoundCTM's pattern of
  cross-attention blocks on the upper levels and a plain lowest level (down ``CrossAttn, CrossAttn,
  Down``, up ``Up, CrossAttn, CrossAttn``, cross-attention middle), ``cross_attention_dim 1024``
  (flan-t5-large's width), the rest as SoundCTM's. The input is our state, 64 mel bins x 64 frames,
  laid out as ``(B, 64 channels, 64 frames, 1)``: the same channels and the same positions at every
  level as our 1-D U-Net (its 3 x 3 kernels see the frame axis and zero padding on the unit axis).
  SoundCTM's own latent is ``(8, 256, 16)`` from the AudioLDM VAE; ``--latent C,T,F`` runs another
  layout;
* a training step is ``ctm.train_util.CTMTrainLoop.run_step`` (SoundCTM's, unmodified) with
  ``ctm_train.py``'s defaults and ``ctm_train.sh``'s options: ``loss_type feature_space``
  (teacher features, ``unet_mode full``), ``match_point zs``, ``w_min 2``, ``w_max 5``,
  ``unform_sampled_cfg_distill`` (omega drawn per sample, fed to the student, the teacher guided with
  it), ``diffusion_training`` with ``denoising_weight 1`` and its adaptive weight, ``start_scales 40``,
  target EMA 0.999, RAdam lr 8e-5, gradient clipping at 1000, ``accelerate.Accelerator`` on the CPU;
  ``--tango_data_augment`` is off (it mixes waveforms into extra examples: data pipeline), so a batch
  is ``batch`` examples on both sides.
  One step: the student's jump ``G(x_t, t, s, omega)``, the teacher's classifier-free guided Heun
  solve (``heun_solver_cfg``: two teacher calls on a doubled batch per Heun step) from ``t`` to
  ``t - dt``, the target model's jump from there to ``s``, both compared in the teacher's feature
  space, the denoising loss and its adaptive weight (two ``autograd.grad`` calls), backward,
  clipping, the optimiser step and the target's EMA update. ``--heun-steps K`` fixes the Heun steps
  per training step at ``K`` (``num_heun_step K``, ``num_heun_step_random False``; the bench uses our
  recipe's ``teacher_steps`` 8), ``--heun-steps 0`` keeps SoundCTM's default (a random 1..39 per step,
  weighted by the count: 26.3 on average). ``warmup`` steps run untimed, then the median of
  ``steps`` timed ones; batches are drawn before the clock, 10 % of the captions empty as
  SoundCTM's data set drops them;
* sampling calls ``ctm.inference_sampling.karras_sample`` with ``ctm_inference.sh``'s settings:
  ``sampler determinisitc`` (gamma 0), omega 3.5, nu 1, at 1 and 2 steps (2 is SoundCTM's default),
  for ``num`` captions in one batch (every call is a doubled batch: the conditional and the
  unconditional half of nu-interpolation). The latents are timed, not the VAE decoder and vocoder.
  Each sampling time is the median of ``sample_repeats`` calls after an untimed one.

Stand-ins (our code, written into the scratch folder or set in ``sys.modules`` at run time; their
share of the reference's time is measured and returned as ``text_standin_share_*``):

* the text encoder: ``AudioDiffusionEDM`` loads ``google/flan-t5-large`` from the hub (no weights can
  be downloaded here). ``text_encoder_name`` points at a folder made at run time with a
  ``T5EncoderModel`` of flan-t5-large's width (1024) and **no** layers (random init: the token
  embedding and T5's final layer norm, i.e. random caption embeddings of the right shape) and a
  word-level tokenizer over the captions' words that appends ``</s>`` as T5's does. Both networks
  are thus timed given text embeddings, which is what ours sees too (a bag-of-words caption
  embedding). SoundCTM encodes the captions again at every network call (2 K + 5 calls per
  training step with K Heun steps, the teacher's on doubled batches); with the real 24-layer
  flan-t5-large that would add far more time than the stand-in does, so the stand-in favours the
  reference;
* ``wandb``: a module whose ``init`` does nothing and whose ``log`` keeps what ``run_step`` logs
  every step (its losses, returned as ``final_losses``);
* ``torchaudio``: an empty module (with ``transforms``); SoundCTM imports it at module level for
  reading and resampling waveforms, which nothing timed calls;
* the data pipeline (reading WAV files, the STFT and the AudioLDM VAE encoder, whose weights cannot
  be downloaded): ``run_step`` gets the batch as latents already in memory, through a stand-in
  ``torch_tools.wav_to_fbank`` that hands them on and a stage-1 model whose ``encode_first_stage`` /
  ``get_first_stage_encoding`` return them unchanged. Our step's batch also comes from memory.

The clock is wall time; the process CPU time is returned too, so a step whose wall time is far
above cpu / threads was slowed by other processes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from common import reference_commit, worker_main, worker_start  # bench/ is on the path (the script's folder)

VENV = Path(os.environ.get("SOUNDCTM_VENV", "/tmp/soundctm_venv"))
REF = Path(os.environ.get("SOUNDCTM_REF", "/tmp/soundctm_ref"))
MIRROR = Path(os.environ.get("SOUNDCTM_MIRROR", "/work/.mirror/sony+soundctm/repo"))
PACKAGES = ["transformers==4.36.2", "accelerate==0.20.3", "diffusers==0.25.1", "huggingface_hub<0.26",
            "einops==0.7.0", "numpy==1.23.5", "scipy==1.10.1", "librosa==0.9.2", "soundfile==0.12.1",
            "progressbar==2.5", "blobfile==2.1.1", "tqdm==4.66.1", "setuptools>=77,<81"]
NEEDED = ("ctm/train_util.py", "ctm/karras_diffusion.py", "ctm/script_util.py", "ctm/inference_sampling.py",
          "tango_edm/models_edm.py", "tango_edm/unet_2d_condition.py", "tango_edm/unet_2d_condition_teacher.py",
          "configs/diffusion_model_config.json")
CHECK = ("import torch, diffusers, transformers, accelerate, einops, librosa, blobfile, progressbar, pkg_resources; "
         "assert torch.__version__.split('+')[0] == '2.13.0'; assert diffusers.__version__ == '0.25.1'")
# our audio:soundctm recipe's MelUNet: channels 64 / 128 / 128 over 64 frames of 64 mel bins
UNET = {"block_out_channels": [64, 128, 128], "layers_per_block": 1, "attention_head_dim": [1, 2, 2],
        "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]}
LATENT = (64, 64, 1)  # (channels = mel bins, frames, 1): our state's channels and positions
TEXT_WIDTH = 1024  # flan-t5-large's d_model, SoundCTM's cross_attention_dim
OMEGA, NU, SIGMA_MIN, SIGMA_MAX = 3.5, 1.0, 0.002, 80.0  # ctm_inference.sh / ctm_train_defaults
# captions like our sound-event set's (kind, register, a few adjectives)
KINDS = ("sine beep", "beep", "rising chirp", "falling chirp", "drum hit", "kick drum", "hi-hat", "clicks",
         "buzz", "buzzing tone")
WORDS = ("a", "an", "short", "long", "quiet", "loud", "bright", "dull", "low", "high", "noisy", "soft", "sharp",
         "two", "three", "four", "quick")


def venv_python() -> Path:
    """The scratch venv's interpreter."""
    return VENV / "bin" / "python"


def find_reference() -> Path | None:
    """The exported SoundCTM tree (``$SOUNDCTM_REF`` or /tmp/soundctm_ref) when it holds what the worker needs."""
    return REF if all((REF / p).is_file() for p in NEEDED) else None


def export_reference(mirror: Path = MIRROR, dest: Path = REF) -> Path:
    """Export the HEAD tree of a bare mirror of SoundCTM's repository into ``dest`` (its code and
    configs; the evaluation packages and bundled CLAP / PaSST sources are left out)."""
    from common import export_mirror

    export_mirror(mirror, dest, "sony/soundctm", ".soundctm_commit", "SOUNDCTM_MIRROR", Path(__file__).name,
                  paths=("ctm", "tango_edm", "tools", "configs", "ctm_train.py", "ctm_train.sh", "ctm_inference.py",
                         "ctm_inference.sh", "requirements.txt", "LICENSE", "README.md"))
    return dest


def setup(verbose: bool = True) -> Path:
    """Export SoundCTM into ``REF`` and create the scratch venv unless both already work."""
    if find_reference() is None:
        export_reference()
    from common import scratch_venv

    return scratch_venv(VENV, CHECK, list(PACKAGES), verbose=verbose)


def measure_soundctm(steps: int = 5, warmup: int = 1, threads: int = 1, batch: int = 32, num: int = 32,
                     heun_steps: int = 8, sample_repeats: int = 3, seed: int = 0, latent: str = "64,64,1",
                     timeout: float = 3600.0) -> dict[str, Any] | None:
    """Run this script in the scratch venv and return its JSON result; None when the venv or the
    checkout is missing (run ``--setup``)."""
    py, ref = venv_python(), find_reference()
    if not py.exists() or ref is None:
        return None
    from common import run_worker

    opts = dict(steps=steps, warmup=warmup, threads=threads, batch=batch, num=num, heun_steps=heun_steps,
                sample_repeats=sample_repeats, seed=seed, latent=latent)
    return run_worker(py, str(Path(__file__).resolve()), opts, timeout, ref)


# ---------------------------------------------------------------------------------------------- worker


def _captions(n: int, rng: Any) -> list[str]:
    """``n`` captions of 3 to 6 words in the style of our sound-event set's."""
    return [" ".join([*(rng.choice(WORDS) for _ in range(rng.randint(1, 3))), rng.choice(KINDS)]) for _ in range(n)]


def _stand_ins() -> None:
    """``torchaudio`` and ``wandb`` modules that SoundCTM imports but nothing timed uses (see the docstring)."""
    import importlib.machinery
    import types

    for name in ("torchaudio", "torchaudio.transforms", "wandb"):
        mod = types.ModuleType(name)
        mod.__spec__ = importlib.machinery.ModuleSpec(name, None)  # diffusers / transformers call find_spec
        sys.modules.setdefault(name, mod)
    sys.modules["torchaudio"].transforms = sys.modules["torchaudio.transforms"]  # type: ignore[attr-defined]
    logged: list[Any] = []  # what run_step logs (its losses), kept for the result
    wandb = sys.modules["wandb"]
    wandb.history = logged  # type: ignore[attr-defined]
    wandb.init = lambda *a, **k: None  # type: ignore[attr-defined]
    wandb.log = lambda row, *a, **k: logged.append(row)  # type: ignore[attr-defined]


def _text_stand_in(folder: Path, seed: int) -> Path:
    """A folder ``AudioDiffusionEDM`` loads as its text encoder (name containing ``t5``): a
    ``T5EncoderModel`` of flan-t5-large's width with no layers at random init, and a word-level
    tokenizer over the captions' words appending ``</s>``."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast, T5Config, T5EncoderModel

    words = sorted({w for k in KINDS for w in k.split()} | set(WORDS))
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                   model_max_length=512)
    torch.manual_seed(seed)
    encoder = T5EncoderModel(T5Config(vocab_size=len(vocab), d_model=TEXT_WIDTH, d_kv=64, d_ff=2816, num_layers=0,
                                      num_heads=16, feed_forward_proj="gated-gelu"))
    folder.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(folder)
    encoder.save_pretrained(folder)
    return folder


class _Clock:
    """Wall seconds spent inside wrapped calls (the text stand-in's share of the reference's time)."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def wrap_module(self, module: Any) -> None:
        """Time every forward of ``module`` (hooks: the module's code is not touched)."""
        start: list[float] = []
        module.register_forward_pre_hook(lambda *_: start.append(time.perf_counter()))
        module.register_forward_hook(lambda *_: setattr(self, "seconds", self.seconds + time.perf_counter()
                                                        - start.pop()))

    def wrap_call(self, fn: Any) -> Any:
        """``fn`` with its time counted."""
        def timed(*a: Any, **k: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                self.seconds += time.perf_counter() - t0
        return timed


class _TimedTokenizer:
    """A tokenizer whose calls are counted on ``clock`` (every other attribute is the tokenizer's)."""

    def __init__(self, tok: Any, clock: _Clock) -> None:
        self._tok, self._call = tok, clock.wrap_call(tok)

    def __call__(self, *a: Any, **k: Any) -> Any:
        return self._call(*a, **k)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tok, name)


def _args(batch: int, heun_steps: int, latent: tuple[int, int, int], text: Path, config: Path) -> Any:
    """``ctm_train.py``'s arguments: its parser's defaults, ``ctm_train_defaults()`` and the options
    of ``ctm_train.sh``, at our sizes."""
    from ctm.script_util import ctm_train_defaults

    a = dict(ctm_train_defaults())
    a.update(seed=5031, text_encoder_name=str(text), unet_model_config=str(config), ctm_unet_model_config=str(config),
             freeze_text_encoder=True, tango_data_augment=False, augment_num=2, uncond_prob=0.1,
             per_device_train_batch_size=batch, gradient_accumulation_steps=1, duration=10.0,
             model_grad_clip_value=1000.0, sigma_data=0.25, mixed_precision="no", lr=0.00008,
             loss_type="feature_space", match_point="zs", unet_mode="full", w_min=2.0, w_max=5.0,
             unform_sampled_cfg_distill=True, start_scales=40, end_scales=40, diffusion_training=True,
             denoising_weight=1.0, latent_channels=latent[0], latent_t_size=latent[1], latent_f_size=latent[2],
             num_train_epochs=1, save_interval=-1, output_dir=None)
    if heun_steps > 0:
        a.update(num_heun_step=heun_steps, num_heun_step_random=False)
    return argparse.Namespace(**a)


def measure(steps: int, warmup: int, threads: int, batch: int, num: int, heun_steps: int, sample_repeats: int,
            seed: int, latent: str) -> dict[str, Any]:
    """Time SoundCTM's training step and its sampler at 1 and 2 steps in this (venv) process, cwd = the checkout."""
    import importlib.metadata as md
    import random
    import types

    import numpy as np

    ref = worker_start(threads, seed, _stand_ins)
    np.random.seed(seed)  # SoundCTM draws its Heun steps and times with numpy
    import ctm.karras_diffusion
    import torch
    from accelerate import Accelerator
    from ctm.inference_sampling import karras_sample
    from ctm.script_util import create_ema_and_scales_fn, create_model_and_diffusion
    from ctm.train_util import CTMTrainLoop

    shape = tuple(int(v) for v in latent.split(","))
    if len(shape) != 3:
        raise ValueError(f"--latent must be C,T,F, got {latent!r}")
    scratch = ref / ".bench_standins"
    cfg = json.loads((ref / "configs" / "diffusion_model_config.json").read_text())
    cfg.update(UNET, in_channels=shape[0], out_channels=shape[0], sample_size=list(shape[1:]),
               cross_attention_dim=TEXT_WIDTH)
    config = scratch / "unet_config.json"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(json.dumps(cfg, indent=1))
    text = _text_stand_in(scratch / "text_encoder_t5_standin", seed)
    args = _args(batch, heun_steps, shape, text, config)

    model, diffusion = create_model_and_diffusion(args)
    teacher, _ = create_model_and_diffusion(args, teacher=True)
    target, _ = create_model_and_diffusion(args)
    target.load_state_dict(model.state_dict())  # ctm_train.py: the target starts as a copy of the student
    teacher.requires_grad_(False).eval()
    target.requires_grad_(False).train()
    model.train()
    clock = _Clock()
    for m in (model, target, teacher):  # frozen text encoder as ctm_train.py's --freeze_text_encoder leaves it
        m.text_encoder.requires_grad_(False).eval()
        clock.wrap_module(m.text_encoder)
        m.tokenizer = _TimedTokenizer(m.tokenizer, clock)
    optimizer = torch.optim.RAdam(model.ctm_unet.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    accelerator = Accelerator(gradient_accumulation_steps=1, mixed_precision="no", cpu=True)
    model, optimizer = accelerator.prepare(model, optimizer)
    accelerator.init_trackers("text_to_audio_diffusion")  # ctm_train.py's --with_tracking; no tracker is set up
    ema = create_ema_and_scales_fn(target_ema_mode=args.target_ema_mode, start_ema=args.start_ema,
                                   scale_mode=args.scale_mode, start_scales=args.start_scales,
                                   end_scales=args.end_scales, total_steps=args.total_training_steps,
                                   distill_steps_per_iter=args.distill_steps_per_iter)
    # the data pipeline (WAV files -> STFT -> AudioLDM VAE) stood in for: batches arrive as latents
    ctm.karras_diffusion.torch_tools = types.SimpleNamespace(wav_to_fbank=lambda x, *_a, **_k: (x, None, x))
    stage1 = types.SimpleNamespace(encode_first_stage=lambda mel: mel.squeeze(1), get_first_stage_encoding=lambda z: z)
    loop = CTMTrainLoop(model=model, target_model=target, teacher_model=teacher, latent_decoder=stage1, stft=None,
                        ema_scale_fn=ema, diffusion=diffusion, data=[], args=args, accelerator=accelerator,
                        opt=optimizer)
    calls = {"student": 0, "target": 0, "teacher": 0, "teacher_features": 0}
    model.ctm_unet.register_forward_hook(lambda *_: calls.__setitem__("student", calls["student"] + 1))
    target.ctm_unet.register_forward_hook(lambda *_: calls.__setitem__("target", calls["target"] + 1))
    teacher.unet.register_forward_hook(lambda *_: calls.__setitem__("teacher", calls["teacher"] + 1))
    feats = teacher.unet.get_feature_full
    teacher.unet.get_feature_full = lambda *a, **k: (calls.__setitem__(
        "teacher_features", calls["teacher_features"] + 1), feats(*a, **k))[1]

    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    batches = [(torch.randn(batch, *shape, generator=gen) * 0.5,
                ["" if rng.random() < args.uncond_prob else c for c in _captions(batch, rng)])
               for _ in range(warmup + steps)]
    times, cpu, text_s, per_step = [], [], [], []
    for k, (x0, caps) in enumerate(batches):
        calls.update(student=0, target=0, teacher=0, teacher_features=0)
        clock.seconds = 0.0
        t0, c0 = time.perf_counter(), time.process_time()
        loop.run_step(x0, caps)
        if k >= warmup:
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
            text_s.append(clock.seconds)
            per_step.append(dict(calls))
    logged = sys.modules["wandb"].history[-1]  # run_step's own log of its last step
    losses = {k: float(logged[k]) for k in ("ctm_loss", "dsm_loss")}

    model.eval()
    prompts = _captions(num, rng)

    def sample(n_steps: int) -> Any:  # ctm_inference.py's loop over the prompts at its --batch_size 1
        return torch.cat([karras_sample(diffusion=diffusion, model=model, shape=(1, *shape), steps=n_steps,
                                        cond=[prompt], nu=NU, model_kwargs={}, device="cpu", omega=OMEGA,
                                        sampler="determinisitc", gamma=0.0, x_T=None, sigma_min=SIGMA_MIN,
                                        sigma_max=SIGMA_MAX) for prompt in prompts])

    out: dict[str, Any] = {}
    for n_steps in (1, 2):
        sample(n_steps)  # untimed
        wall, proc, text_share, nfe = [], [], [], 0
        for _ in range(sample_repeats):
            calls["student"], clock.seconds = 0, 0.0
            t0, c0 = time.perf_counter(), time.process_time()
            x = sample(n_steps)
            wall.append(time.perf_counter() - t0)
            proc.append(time.process_time() - c0)
            text_share.append(clock.seconds / wall[-1])
            nfe = calls["student"] / num
        out.update({f"sample_{n_steps}_s": statistics.median(wall), f"sample_{n_steps}_s_all": wall,
                    f"sample_{n_steps}_cpu_s_all": proc, f"sample_{n_steps}_nfe_per_sound": nfe,
                    f"sample_{n_steps}_finite": bool(torch.isfinite(x).all()),
                    f"text_standin_share_sample_{n_steps}": statistics.median(text_share)})
    student_params = sum(p.numel() for p in model.ctm_unet.parameters())
    return {
        "train_step_s": statistics.median(times), "train_step_s_min": min(times), "train_step_s_all": times,
        "train_step_cpu_s_all": cpu, "text_standin_s_all": text_s,
        "text_standin_share_train": statistics.median(s / w for s, w in zip(text_s, times)),
        "calls_per_step": per_step[-1], "heun_steps_per_step": "random 1..39 (weighted)" if heun_steps <= 0
        else heun_steps, "batch": batch, "final_losses": losses,
        "loss_finite": bool(np.isfinite(list(losses.values())).all()), **out, "num": num,
        "sample_batch": 1, "omega": OMEGA, "nu": NU, "params": student_params,
        "teacher_params": sum(p.numel() for p in teacher.unet.parameters()), "latent": list(shape),
        "unet": {k: cfg[k] for k in (*UNET, "cross_attention_dim")}, "steps": steps, "warmup": warmup,
        "threads": threads, "sample_repeats": sample_repeats, "commit": reference_commit(Path.cwd(),
                                                                                        ".soundctm_commit"),
        "versions": {"torch": torch.__version__, "diffusers": md.version("diffusers"),
                     "transformers": md.version("transformers"), "accelerate": md.version("accelerate"),
                     "python": platform.python_version()},
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--setup", action="store_true", help=f"export SoundCTM to {REF} and create the scratch venv "
                   f"{VENV} (idempotent), then exit")
    p.add_argument("--steps", type=int, default=5, help="timed training steps")
    p.add_argument("--warmup", type=int, default=1, help="untimed training steps first")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--batch", type=int, default=32, help="training batch (our recipe's 32; SoundCTM's 6 + 2 mixed "
                   "per GPU)")
    p.add_argument("--num", type=int, default=32, help="captions per sampling call")
    p.add_argument("--heun-steps", type=int, default=8, help="teacher Heun steps per training step (0: SoundCTM's "
                   "default, random 1..39)")
    p.add_argument("--sample-repeats", type=int, default=3, help="timed sampling calls (the median is reported)")
    p.add_argument("--latent", default=",".join(map(str, LATENT)), help="the network's input C,T,F")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    if a.setup:
        setup()
        return
    if min(a.steps, a.batch, a.num, a.sample_repeats) < 1 or a.warmup < 0 or a.heun_steps < 0 or a.heun_steps > 39:
        p.error("--steps, --batch, --num and --sample-repeats must be >= 1, --warmup >= 0, --heun-steps in 0..39")
    worker_main("SoundCTM", find_reference(), REF, ("diffusers", "transformers", "accelerate"), __file__,
                venv_python(), lambda: measure(a.steps, a.warmup, a.threads, a.batch, a.num, a.heun_steps,
                                               a.sample_repeats, a.seed, a.latent))


if __name__ == "__main__":
    main()
