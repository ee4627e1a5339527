"""Training with PyTorch Lightning: one recipe runs on a CPU, a GPU or many nodes.

:func:`train` builds the modality's data, fields and network from a recipe and fits a
:class:`DiffusionModule` (AdamW, optional warm-up, EMA of the weights, gradient clipping,
mixed precision through Lightning's ``precision``). ``train.accelerator / devices /
strategy / num_nodes`` go to Lightning unchanged, so moving a run from CPU to multi-GPU DDP
is a one-line change.

Exact resumption. Everything random in a step is a pure function of ``(seed, global step,
rank)``: the batch (:class:`StepBatches` permutes the data per epoch with a seeded generator
and jumps straight to any step), the loss's times, noise and condition dropout (a
:class:`polydiff.Noise` stream seeded per step and rank) and torch's global generator. With
the optimizer, scheduler, EMA and loop state restored from a checkpoint, a run killed and
resumed reproduces the uninterrupted run bit for bit on the same machine.

Checkpoints (``OUT/checkpoints/step-NNNNNNNN.ckpt`` every ``checkpoint_every`` steps and
``last.ckpt``) are written atomically and hold only tensors and primitives, so they load
with ``torch.load(weights_only=True)``; under ``"polydiff"`` they store the recipe as a
plain dict and the data ``info``, which is all :func:`polydiff.load` needs. Under
``strategy: fsdp`` with ``checkpoint_format: sharded`` each checkpoint is instead a folder of
per-rank shards, written and published atomically too (:class:`AtomicFSDPStrategy`), which
:func:`polydiff.load` opens the same way.

No lost work. :func:`train` holds a lock on the run folder (:func:`polydiff.files.folder_lock`)
for the whole run, so a second command writing into it refuses at once. It resumes from the
newest intact checkpoint (:func:`polydiff.checkpoints.newest_intact`: ``last.ckpt``, else the
step files from the newest down), naming it and every file it passed over. It never starts
over at step 0 on top of a run's checkpoints: without ``fresh`` it refuses a folder whose
checkpoint files are all unreadable, and one whose newest intact checkpoint was trained with
a recipe that differs in a key that changes what is computed (anything but ``sample.*`` and
:data:`RESUME_FREE`: logging, hardware, the step budget) -- that is another run.
"""

from __future__ import annotations

import copy
import gc
import hashlib
import inspect
import json
import logging
import os
import shutil
import sys
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path
from typing import Any

import lightning as L
import torch
import yaml
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import Callback, ProgressBar
from lightning.pytorch.plugins.precision import Precision
from lightning.pytorch.strategies import FSDPStrategy
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info

from .checkpoints import (
    LAST,
    RESUME_KEYS,
    ResumeError,
    load_checkpoint,
    open_weights,
    save_checkpoint_file,
    scan_checkpoints,
)
from .config import (
    Config,
    ConfigError,
    TrainConfig,
    apply_overrides,
    build_data,
    build_fields,
    build_network,
    check_sample_grid,
    from_dict,
    load_config,
)
from .data import check_info, default_collate
from .errors import TrainingDiverged
from .files import atomic_write, folder_lock, publish, remove_temp_files, replace_folder, temp_path
from .losses import OBJECTIVES, diffusion_loss
from .progress import Progress
from .random import Noise, kept_rng
from .registry import load_modality
from .state import FieldSpec, State
from .techniques import Techniques, technique_loss
from .version import __version__


def step_seed(seed: int, step: int, rank: int = 0, stream: str = "train") -> int:
    """A 40-bit seed for one (seed, step, rank, stream): independent streams, no overflow."""
    digest = hashlib.blake2b(f"{stream}:{seed}:{step}:{rank}".encode(), digest_size=5).digest()
    return int.from_bytes(digest, "little")


# ---------------------------------------------------------------------------------------------
# data: batches as a pure function of (seed, step, rank)
# ---------------------------------------------------------------------------------------------

class StepBatches(IterableDataset):
    """An endless stream of batches, batch ``g`` being a pure function of ``(seed, g, rank)``.

    The data set is read in epochs, each a fresh permutation drawn from a generator seeded by
    ``(seed, epoch)``; step ``g`` of rank ``r`` takes positions ``[(g W + r) B, (g W + r + 1) B)``
    of that endless sequence (``W`` ranks, ``B`` samples each), so ranks see disjoint data and
    a resumed run starts exactly at its step. Worker ``w`` of ``k`` loader workers yields the
    steps ``start + w, start + w + k, ...``, which the loader interleaves back in order.
    """

    def __init__(self, dataset: Dataset, batch_size: int, seed: int = 0, rank: int = 0, world: int = 1,
                 start: int = 0, collate: Any = None, augment: Any = None) -> None:
        self.dataset, self.batch_size, self.seed = dataset, batch_size, seed
        self.rank, self.world, self.start, self.collate, self.augment = rank, world, start, collate, augment
        self.n = len(dataset)  # type: ignore[arg-type]
        if self.n < 1:
            raise ValueError("the training set is empty")
        self._perms: dict[int, Tensor] = {}

    def permutation(self, epoch: int) -> Tensor:
        """The order of the training set in ``epoch``, seeded by epoch (same on every rank and on resume)."""
        if epoch not in self._perms:
            if len(self._perms) > 4:
                self._perms.pop(min(self._perms))
            g = torch.Generator().manual_seed(step_seed(self.seed, epoch, 0, "data"))
            self._perms[epoch] = torch.randperm(self.n, generator=g)
        return self._perms[epoch]

    def indices(self, step: int) -> Tensor:
        """Data indices of the batch of global step ``step`` on this rank."""
        first = (step * self.world + self.rank) * self.batch_size
        epoch = first // self.n
        if (first + self.batch_size - 1) // self.n == epoch:  # within one epoch (the usual case): a slice of it
            start = first - epoch * self.n
            return self.permutation(epoch)[start:start + self.batch_size].clone()
        pos = first + torch.arange(self.batch_size)
        epoch, offset = pos // self.n, pos % self.n
        out = torch.empty_like(pos)
        for e in torch.unique(epoch).tolist():
            sel = epoch == e
            out[sel] = self.permutation(e)[offset[sel]]
        return out

    def batch(self, step: int) -> State:
        """The batch of global step ``step`` on this rank, augmented (when the data has an
        ``augment`` hook) with a generator seeded by ``(seed, step, rank)``."""
        idx = self.indices(step)
        get = getattr(self.dataset, "get_batch", None)
        if get is not None and self.collate is None:
            out = get(idx)
        else:
            out = (self.collate or default_collate)([self.dataset[i] for i in idx.tolist()])
        if self.augment is not None:
            out = self.augment(out, torch.Generator().manual_seed(step_seed(self.seed, step, self.rank, "augment")))
        return out

    def __iter__(self) -> Iterator[State]:
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        for step in count(self.start + wid, nw):
            yield self.batch(step)


class EvalBatches(IterableDataset):
    """The validation set once, in order, in chunks shared out between ranks."""

    def __init__(self, dataset: Dataset, batch_size: int, rank: int = 0, world: int = 1, collate: Any = None) -> None:
        self.dataset, self.batch_size, self.rank, self.world, self.collate = dataset, batch_size, rank, world, collate

    def __iter__(self) -> Iterator[State]:
        n = len(self.dataset)  # type: ignore[arg-type]
        for i, lo in enumerate(range(0, n, self.batch_size)):
            if i % self.world != self.rank:
                continue
            idx = torch.arange(lo, min(n, lo + self.batch_size))
            get = getattr(self.dataset, "get_batch", None)
            yield get(idx) if get is not None and self.collate is None else \
                (self.collate or default_collate)([self.dataset[j] for j in idx.tolist()])


# ---------------------------------------------------------------------------------------------
# the Lightning module
# ---------------------------------------------------------------------------------------------

class AtomicFSDPStrategy(FSDPStrategy):
    """Lightning's FSDP strategy with atomic sharded checkpoints (``train.checkpoint_format:
    sharded``): every rank writes its shard into one hidden temporary folder, and rank 0 renames
    the finished folder into place, so a reader never sees a checkpoint missing a rank's shard
    and a crash leaves the previous one intact. The folder must be on a file system every rank
    sees (one machine, or a shared file system across nodes)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], filepath: Any, storage_options: Any = None) -> None:
        if self._state_dict_type != "sharded":
            return super().save_checkpoint(checkpoint, filepath, storage_options)
        path = Path(filepath)
        tmp = Path(self.broadcast(str(temp_path(path))))  # rank 0's name, for every rank
        try:
            super().save_checkpoint(checkpoint, tmp, storage_options)
            self.barrier()
            if self.global_rank == 0:
                replace_folder(tmp, path)
        finally:
            if self.global_rank == 0 and tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        self.barrier()


class CPUFSDPStrategy(AtomicFSDPStrategy):
    """Lightning's FSDP strategy on CPU processes (gloo). torch's FSDP shards on CPUs when told
    ``device_id=cpu``; Lightning refuses the name ``fsdp`` without a GPU and hands torch
    ``device_id=None`` there. ``train.strategy: fsdp`` on CPUs picks this (see :func:`_strategy`),
    so the sharded path (and the EMA under it) runs in CI as it does on GPUs."""

    def _setup_model(self, model: nn.Module) -> nn.Module:
        from torch.distributed.fsdp import FullyShardedDataParallel

        if not any(isinstance(m, FullyShardedDataParallel) for m in model.modules()):
            kwargs = dict(self.kwargs)  # Lightning's own call, with the device named
            self.kwargs.pop("auto_wrap_policy", None)  # used here; Lightning would warn it is ignored
            model = FullyShardedDataParallel(model, cpu_offload=self.cpu_offload, device_id=self.root_device,
                                             mixed_precision=self.mixed_precision_config,
                                             sharding_strategy=self.sharding_strategy, **kwargs)
        return super()._setup_model(model)

    # Lightning gathers full state dicts with an offload to the CPU. On a CPU, torch's FSDP frees
    # the gathered tensors it "moves" there, and the checkpoint reads freed memory (a crash for
    # the weights, another tensor's values for Adam's moments; torch 2.13). Gather without it.
    def lightning_module_state_dict(self) -> dict[str, Any]:
        if self._state_dict_type != "full":
            return super().lightning_module_state_dict()
        with _full_state_dicts(self.model):
            return self.model.state_dict()

    def optimizer_state(self, optimizer: Any) -> dict[str, Any]:
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
        from torch.distributed.fsdp import OptimStateKeyType

        if self._state_dict_type != "full":
            return super().optimizer_state(optimizer)
        optimizer = getattr(optimizer, "_optimizer", optimizer)  # a LightningOptimizer's torch optimizer
        with _full_state_dicts(self.model):
            state = FSDP.optim_state_dict(self.model, optimizer)
            if self.global_rank == 0:  # keyed by parameter index, as without FSDP
                state = FSDP.rekey_optim_state_dict(state, OptimStateKeyType.PARAM_ID, self.model)
            return state


def _full_state_dicts(model: nn.Module) -> Any:
    """Full (unsharded) weights and optimizer state on rank 0, gathered where they live."""
    from torch.distributed.fsdp import FullOptimStateDictConfig, FullStateDictConfig, StateDictType
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    return FSDP.state_dict_type(model, StateDictType.FULL_STATE_DICT, FullStateDictConfig(rank0_only=True),
                                FullOptimStateDictConfig(offload_to_cpu=False, rank0_only=True))


def _check_ema_units(module: DiffusionModule) -> None:
    """Refuse the EMA under an FSDP strategy that did not make the network and its EMA units of
    their own (only ``train.strategy: fsdp`` does, :func:`_strategy`): in one flat parameter, the
    slices of the two on a rank do not face each other, and the average could go silently wrong."""
    strategy = module.trainer.strategy
    if module.ema is None or not isinstance(strategy, FSDPStrategy) or module.trainer.world_size == 1:
        return
    from torch.distributed.fsdp import FullyShardedDataParallel

    if not (isinstance(module.net, FullyShardedDataParallel) and isinstance(module.ema, FullyShardedDataParallel)):
        raise ValueError(f"train.ema with this FSDP strategy ({type(strategy).__name__}) would pair shards of the "
                         "network and its EMA wrongly: use train.strategy: fsdp, ddp, or train.ema: 0")


def _strategy(t: Any, module: DiffusionModule) -> Any:
    """``train.strategy`` for Lightning: as written, except ``fsdp``. That one wraps the network and
    its EMA copy as FSDP units of their own: both flat parameters are then laid out and sharded
    alike, so every rank holds the same slice of both and the EMA update stays elementwise on the
    local shards (in one flat parameter, a rank's slice of the network would not face its slice of
    the EMA). Its checkpoints are single files or per-rank shards (``train.checkpoint_format``,
    :class:`AtomicFSDPStrategy`); on CPUs it runs through :class:`CPUFSDPStrategy`."""
    if t.strategy != "fsdp":
        return t.strategy
    from torch.distributed.fsdp.wrap import CustomPolicy

    units = {id(m) for m in (module.net, module.ema) if m is not None}
    on_cpu = t.accelerator == "cpu" or (t.accelerator == "auto" and not torch.cuda.is_available())
    kind = CPUFSDPStrategy if on_cpu else AtomicFSDPStrategy
    return kind(auto_wrap_policy=CustomPolicy(lambda m: id(m) in units), state_dict_type=t.checkpoint_format)


_DIVERGED = ("The checkpoints written before it are kept (resume from a step-*.ckpt file with train.init, or start "
             "over with --fresh); lower train.lr, keep train.grad_clip on, or check the data for NaN or infinite "
             "values.")


def _lr_factor(t: Any, n_train: int, world: int) -> Any:
    """The learning rate's factor at step ``s``: a linear warm-up over ``t.warmup`` steps, times
    ``t.lr_decay`` per completed epoch (an epoch is ``n_train`` samples of the stream of
    :class:`StepBatches`, ``batch_size x world`` per step), as GDSS's ``ExponentialLR`` stepped
    once per epoch."""
    warm, decay, per_step = max(t.warmup, 1), t.lr_decay, t.batch_size * world

    def factor(s: int) -> float:
        return min(1.0, (s + 1) / warm) * decay ** ((s * per_step) // max(n_train, 1))

    return factor


_FUSED_DEVICES = ("cpu", "cuda")


def clip_grad_norm(params: Sequence[Tensor], max_norm: float) -> bool:
    """Scale the gradients of ``params`` in place to a global 2-norm of at most ``max_norm``, with
    the operations of ``torch.nn.utils.clip_grad_norm_`` (so the same bits), when every gradient is
    a dense tensor of one device and dtype; False (nothing done) otherwise. Without that function's
    per-call grouping of the tensors by device and dtype it costs half as much: 0.16 ms against
    0.3-0.45 ms a step for a 158k-parameter MLP on a CPU."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return True
    first = grads[0]
    if any(g.is_sparse or g.device != first.device or g.dtype != first.dtype for g in grads):
        return False
    total = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads, 2.0)), 2.0)
    torch._foreach_mul_(grads, torch.clamp(max_norm / (total + 1e-6), max=1.0))
    return True


def make_optimizer(params: Any, t: TrainConfig) -> torch.optim.Optimizer:
    """The recipe's optimiser (``train.optimizer``: AdamW, or Adam with L2 weight decay) over
    ``params``, with ``train.lr`` and ``train.weight_decay``. Its fused kernel (one pass over all
    parameters) is used where every parameter is a floating-point tensor on a CPU or a CUDA
    device: on a CPU it took 0.27 ms a step for a 158k-parameter MLP against 1.42 ms for the
    default per-parameter loop (the same update up to float rounding)."""
    params = list(params)
    fused = bool(params) and all(p.is_floating_point() and p.device.type in _FUSED_DEVICES for p in params)
    kind = torch.optim.Adam if t.optimizer == "adam" else torch.optim.AdamW
    return kind(params, lr=t.lr, weight_decay=t.weight_decay, fused=fused or None)


class DiffusionModule(L.LightningModule):
    """A modality network trained with :func:`polydiff.losses.diffusion_loss`, plus its EMA."""

    def __init__(self, net: nn.Module, fields: Mapping[str, FieldSpec], config: Config, info: Mapping[str, Any],
                 data: Any = None) -> None:
        super().__init__()
        self.net = net
        self.ema = copy.deepcopy(net).requires_grad_(False).eval() if config.train.ema > 0 else None
        self.fields, self.config, self.info, self.data = dict(fields), config, dict(info), data
        self.techniques = _techniques(config, self.info)
        self.objective = _objective(config, self.fields, self.info)
        self.data_fingerprints: list[float] = []
        self._fingerprint: Tensor | None = None
        self._ema_pairs: tuple[Any, ...] | None = None
        self._step_logs: tuple[Tensor, dict[str, Any], int] | None = None
        self._compiled: Any = None  # train.compile: the network under torch.compile, made at the first step

    def forward(self, state: State, t: Tensor, cond: Any = None) -> Any:
        return self.net(state, t) if cond is None else self.net(state, t, cond)

    # -- data --
    def train_dataloader(self) -> DataLoader:
        t = self.config.train
        start = self.trainer.global_step  # already restored when resuming
        ds = StepBatches(self.data.train, t.batch_size, t.seed, self.global_rank, self.trainer.world_size, start,
                         self.data.collate, self.data.augment)
        return DataLoader(ds, batch_size=None, num_workers=t.num_workers, persistent_workers=t.num_workers > 0)

    def val_dataloader(self) -> DataLoader:
        ds = EvalBatches(self.data.val, self.config.train.batch_size, self.global_rank, self.trainer.world_size,
                         self.data.collate)
        return DataLoader(ds, batch_size=None)

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        # a flat state already on the device (training on a CPU) holds the tensors Lightning's mover would
        # return, without its walk over the collection (tens of microseconds a step)
        if type(batch) is dict and all(isinstance(v, Tensor) and v.device == device for v in batch.values()):
            return batch
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    # -- steps --
    def _loss(self, net: nn.Module, batch: State, seed: int, train: bool = True,
              shared: int | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        lc = self.config.loss
        n = next(iter(batch.values())).shape[0]
        # a generator seeded per (step, rank): as reproducible as per-sample counter-based seeds
        # (which training does not need) and several times cheaper
        noise = Noise(n, generator=torch.Generator(self.device).manual_seed(seed), device=self.device)
        if self.objective is not None:
            return self.objective(net, batch, noise)
        opts = {"weighting": lc.weighting, "time_density": lc.time_density, "field_weights": lc.field_weights,
                "terms": lc.terms, "manifold_weighting": lc.manifold_weighting, **lc.options}
        if train:  # condition dropout and the opt-in techniques
            same = torch.Generator().manual_seed(seed if shared is None else shared)  # the same on every rank
            return technique_loss(net, self.fields, batch, noise, self.techniques, shared=same, **opts)
        return diffusion_loss(net, self.fields, batch, noise, **opts)

    def on_train_batch_start(self, batch: State, batch_idx: int) -> None:
        # stray uses of torch's global RNG (dropout in a network) are seeded per step too
        # (per device: torch.manual_seed would also touch every other backend, slowly)
        s = step_seed(self.config.train.seed, self.global_step, self.global_rank, "torch")
        torch.default_generator.manual_seed(s)
        if self.device.type == "cuda":
            torch.cuda.manual_seed(s)

    def training_step(self, batch: State, batch_idx: int) -> Tensor:
        seed = step_seed(self.config.train.seed, self.global_step, self.global_rank)
        shared = step_seed(self.config.train.seed, self.global_step, 0, "shared")  # the same on every rank
        loss, per_field = self._loss(self._train_net(), batch, seed, shared=shared)
        # logged in on_train_batch_end, on the steps whose values someone reads
        self._step_logs = (loss.detach(), {k: v.detach() if isinstance(v, Tensor) else v for k, v in per_field.items()},
                           next(iter(batch.values())).shape[0])
        first = batch[next(iter(self.fields))].detach().double().sum()
        self._fingerprint = first if self._fingerprint is None else self._fingerprint + first
        return loss

    def _train_net(self) -> Any:
        """The network as the training loss calls it: itself, or compiled once (``train.compile``;
        one graph per code object, recompiled once with dynamic sizes if the batch shape changes)."""
        if not self.config.train.compile:
            return self.net
        if self._compiled is None:
            from .samplers.driver import compiled  # sampling stays out of training's imports

            self._compiled = compiled(self.net)
        return self._compiled

    def on_train_batch_end(self, outputs: Any, batch: State, batch_idx: int) -> None:
        """Log the step's losses where their values are read: on the steps where Lightning writes to the
        logger (every ``log_every``), at ``max_steps`` and when the run stops early (``max_minutes``, a
        callback), so the logger's rows and :attr:`Run.metrics` hold what logging every step gave them. Each
        ``self.log`` costs about a millisecond of Lightning's Python, so logging every step was most of
        polydiff's per-step overhead on small networks. The values are logged as host tensors (a sync every
        ``log_every`` steps, which writing them needs anyway), so the progress bar's per-step read of them
        never waits for a GPU. The progress bar, and a callback reading ``trainer.callback_metrics``, see the
        last logged values."""
        if self._step_logs is None:
            return
        loss, per_field, n = self._step_logs
        self._step_logs = None
        trainer, step = self.trainer, self.global_step  # the steps taken, this one included
        if not (step % max(1, trainer.log_every_n_steps) == 0 or trainer.should_stop
                or 0 < trainer.max_steps <= step):
            return
        opts = {"on_step": True, "on_epoch": False, "batch_size": n}
        loss = loss.cpu()
        if self._checks_finite() and not bool(torch.isfinite(loss)):
            raise TrainingDiverged(f"training diverged at step {step}: the loss is {float(loss)}. {_DIVERGED}")
        self.log("train/loss", loss, prog_bar=self.config.train.progress, **opts)
        if len(per_field) > 1:
            for k, v in per_field.items():
                self.log(f"train/loss_{k}", v.cpu() if isinstance(v, Tensor) else v, **opts)

    def validation_step(self, batch: State, batch_idx: int) -> None:
        seed = step_seed(self.config.train.seed, batch_idx, self.global_rank, "val")
        loss, _ = self._loss(self.ema if self.ema is not None else self.net, batch, seed, train=False)
        self.log("val/loss", loss, prog_bar=True, sync_dist=True, batch_size=next(iter(batch.values())).shape[0])

    def configure_gradient_clipping(self, optimizer: Any, gradient_clip_val: float | None = None,
                                    gradient_clip_algorithm: str | None = None) -> None:
        """Clip by the global gradient norm. Under FSDP the gradients are sharded, so the wrapped
        module computes that norm across ranks (Lightning's own clipping refuses FSDP)."""
        if gradient_clip_val and isinstance(self.trainer.strategy, FSDPStrategy):
            self.trainer.model.clip_grad_norm_(gradient_clip_val)
            return
        if (gradient_clip_val and gradient_clip_algorithm in (None, "norm")
                and type(self.trainer.precision_plugin) is Precision  # float32: no scaler to consult
                and clip_grad_norm([p for g in optimizer.param_groups for p in g["params"]], gradient_clip_val)):
            return
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer: Any, optimizer_closure: Any = None) -> None:
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        # here, not in on_train_batch_end: callbacks (the checkpoint writer) run before that hook
        if self.ema is None:
            return
        step = self.global_step + 1  # this optimizer step, 1-based
        decay = min(self.config.train.ema, step / (9 + step))  # warm-up: early weights fade fast
        if self._ema_pairs is None:
            self._ema_pairs = self._pair_ema()
        ema, net, same, ema_slots, slots = self._ema_pairs
        with torch.no_grad():
            if same:  # one call for all tensors: the same lerp per tensor, without a Python loop per tensor
                torch._foreach_lerp_(ema, net, 1 - decay)
            else:
                for e, p in zip(ema, net):
                    e.lerp_(p.detach().to(e.dtype), 1 - decay)
            # buffers read from their modules' slots every step (a module may replace a buffer tensor),
            # without walking the module tree
            for (em, en), (m, name) in zip(ema_slots, slots):
                em._buffers[en].copy_(m._buffers[name])

    def on_train_start(self) -> None:
        self._ema_pairs = None  # the tensors are in place now (device, strategy): pair them at the first step
        _check_ema_units(self)

    def _pair_ema(self) -> tuple[list[Tensor], list[Tensor], bool, list[tuple[nn.Module, str]],
                                 list[tuple[nn.Module, str]]]:
        """The EMA's parameters and the network's (as the optimizer holds them), whether each pair shares
        dtype and device (else the update casts per tensor), and the (module, name) slots of their buffers."""
        assert self.ema is not None
        ema, net = list(self.ema.parameters()), list(self.net.parameters())
        ema_slots, slots = _buffer_slots(self.ema), _buffer_slots(self.net)
        if len(ema) != len(net) or len(ema_slots) != len(slots) or any(e.shape != p.shape for e, p in zip(ema, net)):
            raise RuntimeError("the EMA copy no longer matches the network's parameters and buffers")
        return ema, net, all(e.dtype == p.dtype and e.device == p.device for e, p in zip(ema, net)), ema_slots, slots

    def configure_optimizers(self) -> Any:
        t = self.config.train
        opt = make_optimizer(self.net.parameters(), t)
        if t.warmup <= 0 and t.lr_decay == 1.0:
            return opt
        sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_factor(t, len(self.data.train), self.trainer.world_size))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # -- checkpoints --
    def _checks_finite(self) -> bool:
        """Whether this process checks the loss and weights for NaN / inf: in one process (in a
        process group one rank stopping alone would leave the others waiting), and not under
        fp16 mixed precision, whose gradient scaler skips the steps it overflows."""
        return self.trainer.world_size == 1 and self.config.train.precision != "16-mixed"

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self._checks_finite():
            bad = next((n for n, p in self.net.named_parameters() if not bool(torch.isfinite(p).all())), None)
            if bad is not None:
                raise TrainingDiverged(f"training diverged by step {self.global_step}: the weights of {bad} are not "
                                       f"finite, so this checkpoint is not written. {_DIVERGED}")
        checkpoint["polydiff"] = {"version": __version__, "modality": self.config.modality,
                                  "config": self.config.to_dict(), "info": self.info, "ema": self.ema is not None,
                                  "data_fingerprints": list(self.data_fingerprints)}

    def gather_fingerprints(self) -> None:
        """Per-rank sums of the data each rank trained on since (re)start (a sharding check)."""
        local = self._fingerprint if self._fingerprint is not None else torch.zeros((), dtype=torch.float64)
        local = local.reshape(1).to(self.device)
        parts = [local]
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            parts = [torch.zeros_like(local) for _ in range(torch.distributed.get_world_size())]
            torch.distributed.all_gather(parts, local)
        self.data_fingerprints = [float(v) for v in torch.cat(parts)]


def _buffer_slots(module: nn.Module) -> list[tuple[nn.Module, str]]:
    """``(submodule, name)`` of each buffer of ``module``, in the order of ``module.buffers()``."""
    seen: set[int] = set()
    out = []
    for m in module.modules():
        for name, b in m._buffers.items():
            if b is not None and id(b) not in seen:
                seen.add(id(b))
                out.append((m, name))
    return out


def _techniques(cfg: Config, info: Mapping[str, Any]) -> Techniques:
    """The recipe's ``loss.techniques``, with ``loss.cond_drop`` as condition dropout on every
    condition the data declares (``info["conditions"]``)."""
    tech = Techniques.from_config(cfg.loss.techniques)
    drop = cfg.loss.cond_drop or tech.cond_drop
    if drop > 0:
        keys = tech.condition_keys or list(info.get("conditions") or {})
        if not keys:
            raise cfg.error("loss.cond_drop", "the data has no conditions to drop (info['conditions'] is empty)")
        tech.cond_drop, tech.condition_keys = drop, list(keys)
    return tech


def _objective(cfg: Config, fields: Mapping[str, FieldSpec], info: Mapping[str, Any]) -> Any:
    """The recipe's registered objective, built once (None: the default denoising loss). An
    objective factory receives the fields, the data ``info``, the recipe's ``loss.teacher``
    (when it takes one) and its options from the loss section, and returns
    ``objective(net, batch, noise) -> (loss, logs)``."""
    lc = cfg.loss
    if lc.objective == "denoising":
        return None
    factory = OBJECTIVES.get(lc.objective)
    params = inspect.signature(factory).parameters
    opts = {k: v for k, v in lc.options.items() if k in params}
    if "teacher" in params:
        opts["teacher"] = lc.teacher
    try:
        return factory(fields=fields, info=info, **opts)
    except (ValueError, KeyError, FileNotFoundError) as err:
        raise cfg.error("loss", str(err.args[0] if isinstance(err, KeyError) and err.args else err)) from err


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes with temp file + ``os.replace``; reads only with ``weights_only=True``."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        save_checkpoint_file(checkpoint, path)

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        return load_checkpoint(path, map_location="cpu" if map_location is None else map_location)


class CallBudget(Callback):
    """``train.max_minutes``: stop this call's training after that much wall time. Lightning's
    own ``max_time`` restores the time of earlier calls from the checkpoint, so a run resumed
    with a new budget would stop at once; this counts from the call's first step. The decision
    is broadcast, so every process of a multi-process run stops at the same step."""

    def __init__(self, minutes: float) -> None:
        self.seconds, self.start = 60.0 * minutes, 0.0

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.start = time.monotonic()

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        over = time.monotonic() - self.start >= self.seconds
        trainer.should_stop = trainer.should_stop or bool(trainer.strategy.broadcast(over))


class LineProgress(ProgressBar):
    """Training progress in logs and CI: :class:`polydiff.progress.Progress`'s plain lines (about
    every 10 % of the steps, with rate, ETA and the last logged loss), not a tqdm bar redrawn
    with carriage returns into one endless line."""

    def __init__(self) -> None:
        super().__init__()
        self._on, self._progress = True, None

    def disable(self) -> None:
        self._on = False

    def enable(self) -> None:
        self._on = True

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._on and trainer.is_global_zero:
            self._progress = Progress(trainer.max_steps, desc="training", unit="step", enabled=True,
                                      initial=trainer.global_step)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self._progress is not None:
            loss = trainer.callback_metrics.get("train/loss")  # logged on the CPU every log_every steps
            self._progress.update_to(trainer.global_step, **({} if loss is None else {"loss": f"{float(loss):.4g}"}))

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._progress is not None:
            self._progress.close()
            self._progress = None


class StepCheckpoints(Callback):
    """``step-NNNNNNNN.ckpt`` every ``every`` steps, and ``last.ckpt`` then and at the end; with
    ``keep`` > 0 only the newest ``keep`` step files stay (the older ones are removed once a new
    one is written and published, so an intact checkpoint always remains to resume from)."""

    def __init__(self, dirpath: Path, every: int, keep: int = 0) -> None:
        self.dirpath, self.every, self.keep = Path(dirpath), every, keep

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        step = trainer.global_step
        if step % self.every == 0:
            path = self.dirpath / f"step-{step:08d}.ckpt"
            trainer.save_checkpoint(path, weights_only=False)
            if trainer.is_global_zero:
                publish(path, self.dirpath / LAST)
                if self.keep:
                    self._prune()
            trainer.strategy.barrier()

    def _prune(self) -> None:
        old = sorted(self.dirpath.glob("step-*.ckpt"))[: -self.keep]  # zero-padded steps: name order is step order
        for p in old:
            if p.is_dir():  # a sharded checkpoint
                shutil.rmtree(p)
            else:
                p.unlink(missing_ok=True)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pl_module.gather_fingerprints()
        trainer.save_checkpoint(self.dirpath / LAST, weights_only=False)


# ---------------------------------------------------------------------------------------------
# the entry point
# ---------------------------------------------------------------------------------------------

@dataclass
class Run:
    """The result of :func:`train`: ``out_dir`` (the run folder), ``checkpoint`` (its
    ``checkpoints/last.ckpt``, what :func:`polydiff.load` opens; ``polydiff.load(run)`` also
    works), ``step`` (optimizer steps done), ``metrics`` (the last logged values, e.g.
    ``train/loss``), ``resumed_from`` (the checkpoint the run resumed from, None for a new
    run) and ``rank`` (this process's rank under a multi-process launch, 0 otherwise)."""

    out_dir: Path
    checkpoint: Path
    step: int
    metrics: dict[str, float] = field(default_factory=dict)
    resumed_from: Path | None = None
    rank: int = 0

    def load(self, device: str | None = None) -> Any:
        """The trained model as a :class:`polydiff.generator.Generator`."""
        from .generator import load

        return load(self.checkpoint, device=device)


Overrides = Sequence[str] | Mapping[str, Any]


def resolve_config(config: Config | Mapping[str, Any] | str | Path, overrides: Overrides = ()) -> Config:
    """A checked :class:`Config` from a recipe object, a plain dict or a YAML path."""
    if isinstance(config, Config):
        if overrides:
            return from_dict(apply_overrides(config.to_dict(), overrides, config.source), config.source)
        return config
    if isinstance(config, Mapping):
        return from_dict(apply_overrides(config, overrides), "<config>")
    return load_config(config, overrides)


def train(config: Config | Mapping[str, Any] | str | Path, out_dir: str | Path | None = None, *,
          overrides: Overrides = (), fresh: bool = False, callbacks: Sequence[Callback] = (),
          verbose: bool = True) -> Run:
    """Train a recipe into ``out_dir`` (default ``runs/<recipe name>``) and return the :class:`Run`.

    ``overrides``: ``["train.max_steps=100", ...]`` as ``--set`` takes them, or a dict
    ``{"train.max_steps": 100}``.

    If ``out_dir/checkpoints`` holds checkpoints the run resumes from the newest intact one
    (see the module docstring for what refuses instead); ``fresh`` deletes earlier checkpoints
    and logs first and starts over. The run folder is locked while training
    (:class:`polydiff.files.FolderBusy` if another command holds it). ``callbacks`` are extra
    Lightning callbacks. ``verbose=False`` drops the messages (the model summary, what the run
    resumes or starts from) but keeps the progress bar, which ``train.progress: false`` turns
    off. Lightning's DDP launcher re-runs the calling script once per extra process, so
    multi-process runs are best started from the command line (``polydiff train``).
    """
    if not isinstance(fresh, bool):  # fresh deletes checkpoints: "no" must not mean yes
        raise TypeError(f"fresh must be True or False, got {fresh!r}")
    cfg = resolve_config(config, overrides)
    out = Path(out_dir) if out_dir is not None else Path("runs") / _run_name(cfg)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out}: the run folder is a file; give a folder to train into")
    launcher = _launcher_rank() == 0
    # only the launcher locks: the processes Lightning's DDP launcher starts re-run this function
    try:  # training seeds torch's generators from train.seed: the caller gets its own stream back
        with folder_lock(out, "run folder") if launcher else nullcontext(), kept_rng():
            return _train(cfg, out, fresh, callbacks, verbose, launcher)
    finally:
        # Lightning's trainer, module and optimizer hold reference cycles over the model's tensors: collect
        # them now, or a process that trains again and again (a notebook, bench/reliability.py's soak) grows
        # until the cyclic collector's rare full pass
        gc.collect()


def _train(cfg: Config, out: Path, fresh: bool, callbacks: Sequence[Callback], verbose: bool,
           launcher: bool) -> Run:
    ckpt_dir = out / "checkpoints"
    resume = None if fresh else resume_point(ckpt_dir, cfg, announce=launcher and verbose, report=launcher,
                                             tidy=launcher)

    modality = load_modality(cfg.modality)
    data = build_data(cfg, modality)
    info = _plain_info(data.info, cfg)
    fields = build_fields(cfg, modality, info)
    check_sample_grid(cfg, fields)
    torch.manual_seed(cfg.train.seed)  # the initial weights
    net = build_network(cfg, modality, info, fields)
    if cfg.train.init and resume is None:  # fine-tuning: start from another run's weights
        init_weights(net, cfg.train.init, cfg.source, partial=cfg.train.init_partial, verbose=launcher and verbose)
    module = DiffusionModule(net, fields, cfg, info, data)
    if fresh and launcher:  # only now that the data and the network are built: a bad file must not cost the old run
        for sub in (ckpt_dir, out / "logs"):
            shutil.rmtree(sub, ignore_errors=True)

    t = cfg.train
    quiet = logging.getLogger("lightning.pytorch")
    level, threads = quiet.level, torch.get_num_threads()
    if t.threads > 0:  # small models on a shared CPU run far faster on one thread
        torch.set_num_threads(t.threads)
    if not (verbose and t.progress):
        quiet.setLevel(logging.WARNING)
    val = t.val_every > 0 and data.val is not None and len(data.val) > 0
    if t.val_every > 0 and not val:
        warnings.warn(f"train.val_every: {t.val_every}, but dataset {data.info.get('dataset', cfg.data.name)!r} has no "
                      "validation split, so no validation loss is computed (give the dataset one, or set "
                      "train.val_every: 0)", stacklevel=2)
    logger: Any = False
    if t.logger == "csv":
        logger = L.pytorch.loggers.CSVLogger(out, name="logs")
    elif t.logger == "tensorboard":
        logger = L.pytorch.loggers.TensorBoardLogger(out, name="logs")
    try:
        trainer = _trainer(cfg, module, out, ckpt_dir, logger, val, callbacks, verbose)
    except (MisconfigurationException, ValueError, TypeError, ImportError) as err:  # TypeError: devices=-1 on CPU
        raise cfg.error("train", str(err)) from err
    if launcher:  # the resolved recipe, for people (checkpoints carry their own); never over the recipe being read
        out.mkdir(parents=True, exist_ok=True)
        if not (cfg.source and Path(cfg.source).resolve() == (out / "config.yaml").resolve()):
            atomic_write(out / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    try:
        with warnings.catch_warnings():
            for msg in _QUIET_WARNINGS:
                warnings.filterwarnings("ignore", message=msg)
            trainer.fit(module, ckpt_path=resume)
    finally:
        quiet.setLevel(level)
        torch.set_num_threads(threads)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if torch.as_tensor(v).numel() == 1}
    return Run(out, ckpt_dir / LAST, trainer.global_step, metrics, resume, trainer.global_rank)


# Lightning messages that say nothing about a polydiff run
_QUIET_WARNINGS = (".*does not have many workers.*", ".*resuming from a checkpoint that ended before.*",
                   ".*module\\(s\\) in eval mode.*", ".*isinstance\\(treespec, LeafSpec\\).*",
                   ".*sync_dist=True.*",
                   # torch's FSDP about its own sharded state dicts (train.checkpoint_format: sharded)
                   ".*Please use DTensor instead.*", ".*Multiple backends are registered.*",
                   ".*_get_pg_default_device. will be deprecated.*", ".*full_state_dict will ?be returned.*",
                   ".*`load_state_dict` is deprecated.*")


class _NoAdverts(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        msg = str(record.msg)  # also "TPU available: False ..." on every machine without one
        return "litlogger" not in msg and "available: False" not in msg


logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_NoAdverts())


def _trainer(cfg: Config, module: DiffusionModule, out: Path, ckpt_dir: Path, logger: Any, val: bool,
             callbacks: Sequence[Callback], verbose: bool) -> L.Trainer:
    t = cfg.train
    if t.progress and not sys.stderr.isatty():  # logs and CI: a handful of plain lines, not a redrawn bar
        callbacks = [*callbacks, LineProgress()]
    return L.Trainer(
        max_steps=t.max_steps,
        accelerator=t.accelerator, devices=t.devices, strategy=_strategy(t, module),
        num_nodes=t.num_nodes, precision=t.precision, gradient_clip_val=t.grad_clip or None,
        callbacks=[StepCheckpoints(ckpt_dir, t.checkpoint_every, t.keep_checkpoints),
                   *([CallBudget(t.max_minutes)] if t.max_minutes > 0 else []), *callbacks], logger=logger,
        enable_checkpointing=False, plugins=[AtomicCheckpointIO()], log_every_n_steps=t.log_every,
        enable_progress_bar=t.progress, enable_model_summary=t.progress and verbose, default_root_dir=out,
        val_check_interval=t.val_every if val else None, check_val_every_n_epoch=None,
        limit_val_batches=None if val else 0, num_sanity_val_steps=0, use_distributed_sampler=False,
    )


def _run_name(cfg: Config) -> str:
    src = Path(cfg.source)
    return src.stem if src.suffix in (".yaml", ".yml") else cfg.modality


def _launcher_rank() -> int:
    """This process's rank as the launcher environment tells it (0 before any launch)."""
    for key in ("RANK", "SLURM_PROCID"):
        if key in os.environ:
            return int(os.environ[key])
    return int(os.environ.get("LOCAL_RANK", 0)) + int(os.environ.get("NODE_RANK", 0))


def _plain_info(info: Mapping[str, Any], cfg: Config) -> dict[str, Any]:
    """``info`` as JSON primitives (it is stored in checkpoints loaded with weights_only), its
    typed keys checked (:class:`polydiff.data.DatasetInfo`)."""
    try:
        return check_info(info, "the dataset's info")
    except ValueError as err:
        raise ConfigError(f"{cfg.source}: data: {err}") from err


def init_weights(net: nn.Module, path: str | Path, source: str = "recipe", *, partial: bool = False,
                 verbose: bool = True) -> list[str]:
    """Load a checkpoint's network weights (its EMA copy when it has one) into ``net``: the start
    of a fine-tuning run (``train.init``; the optimiser and the step count start afresh). A
    checkpoint of another architecture is an error naming both.

    ``partial`` (``train.init_partial``) loads only the tensors whose names and shapes match,
    so a network with a new head (e.g. a condition embedding for another property, as in
    transfer learning from formation energy to band gap) starts from the shared weights; the
    names left fresh are returned and reported. Nothing matching at all is still an error."""
    if not Path(path).exists():
        raise ConfigError(f"{source}: train.init: {path}: no such checkpoint (train that run first, or point "
                          "train.init at its checkpoint; a relative path is read from the current folder; "
                          "--set train.init=null trains from scratch)")
    _, weights = open_weights(path, ema=True)
    if partial:
        own = net.state_dict()
        keep = {k: v for k, v in weights.items() if k in own and own[k].shape == v.shape}
        if not keep:
            raise ConfigError(f"{source}: train.init: {path} shares no weight (name and shape) with this recipe's "
                              "model")
        net.load_state_dict(keep, strict=False)
        fresh = sorted(set(own) - set(keep))
        if len(keep) < len(own) / 2:  # most of the network starts fresh: probably not the checkpoint meant
            warnings.warn(f"train.init: only {len(keep)} of {len(own)} tensors of {path} match this recipe's model "
                          "(name and shape); the rest start fresh. Is it the checkpoint of a model of this size?",
                          stacklevel=2)
        if verbose:
            print(f"polydiff: train.init: loaded {len(keep)} of {len(own)} tensors from {path}; fresh: "
                  f"{', '.join(fresh[:8]) or 'none'}{' ...' if len(fresh) > 8 else ''}", file=sys.stderr, flush=True)
        return fresh
    try:
        net.load_state_dict(weights)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise ConfigError(f"{source}: train.init: {path} holds a network of another architecture than this "
                          f"recipe's model ({first})") from None
    return []


# recipe keys that may differ when resuming without changing what is computed (with sample.*)
RESUME_FREE = ("train.max_steps", "train.max_minutes", "train.checkpoint_every", "train.keep_checkpoints",
               "train.checkpoint_format",
               "train.log_every", "train.progress", "train.logger", "train.accelerator", "train.devices",
               "train.num_nodes", "train.strategy", "train.num_workers", "train.val_every", "train.threads")


def resume_point(ckpt_dir: Path, cfg: Config, *, announce: bool = True, report: bool = True,
                 tidy: bool = False) -> Path | None:
    """The checkpoint a run of ``cfg`` resumes from (None: a fresh start into an empty folder).

    The newest intact checkpoint in ``ckpt_dir`` (every file passed over is reported on stderr
    when ``report``); a :class:`~polydiff.checkpoints.ResumeError` when there are checkpoint
    files but none is intact, or when the recipe differs from the checkpoint's in a key outside
    :data:`RESUME_FREE` (another run): both would otherwise restart over the run's files.
    ``tidy`` (the folder's lock holder only) removes temporary files of interrupted writes."""
    if tidy:
        _remove_unfinished(ckpt_dir, report)
    path, ckpt, skipped = scan_checkpoints(ckpt_dir, RESUME_KEYS)
    if report:
        for bad, reason in skipped:
            print(f"polydiff: warning: skipping {bad}: {reason}", file=sys.stderr, flush=True)
    if path is None or ckpt is None:
        if not skipped:
            return None
        names = ", ".join(f"{bad.name} ({reason})" for bad, reason in skipped[:3])
        more = f" and {len(skipped) - 3} more" if len(skipped) > 3 else ""
        raise ResumeError(
            f"{ckpt_dir}: no checkpoint to resume from: {names}{more} cannot be resumed from; refusing to start over "
            "at step 0 and overwrite them: pass --fresh (train(fresh=True)) to delete them and start over, or choose "
            "another output folder")
    step = ckpt.get("global_step", "?")
    if "sharded" in ckpt and cfg.train.strategy != "fsdp":
        raise ResumeError(
            f"{path} (step {step}): a sharded checkpoint resumes under train.strategy: fsdp (any number of "
            f"processes), not {cfg.train.strategy!r}: its optimizer state is kept in FSDP's shards")
    changes = recipe_changes(ckpt["polydiff"]["config"], cfg)
    if changes:
        diff = ", ".join(f"{k} ({_show(old)} in the checkpoint, {_show(new)} now)" for k, old, new in changes)
        raise ResumeError(
            f"{path} (step {step}): cannot resume: the recipe differs from the checkpoint's in {diff}; pass --fresh "
            "(train(fresh=True)) to delete this run's checkpoints and logs and start over, or choose another "
            "output folder")
    if announce:
        note = f"; skipped {', '.join(bad.name for bad, _ in skipped)}" if skipped else ""
        done = isinstance(step, int) and step >= cfg.train.max_steps
        tail = (f": it is at train.max_steps ({cfg.train.max_steps}) already, so nothing is trained; raise "
                "train.max_steps to continue, or pass --fresh to start over") if done else ""
        print(f"polydiff: resuming from {path} (step {step}){note}{tail}", flush=True)
    return path


def recipe_changes(old: Mapping[str, Any], cfg: Config) -> list[tuple[str, Any, Any]]:
    """``(key, old value, new value)`` for each recipe key outside ``sample.*`` and
    :data:`RESUME_FREE` that differs between a checkpoint's stored recipe and ``cfg``. The
    stored recipe is read through today's schema first, so keys with default values compare
    equal whether or not they were written out."""
    try:
        old = from_dict(old, "<checkpoint>").to_dict()
    except (ConfigError, ValueError, KeyError, TypeError):
        old = dict(old)
    return [(k, a, b) for k, a, b in _differences(old, cfg.to_dict())
            if k not in RESUME_FREE and not k.startswith("sample.") and k != "sample"]


_UNSET = object()


def _differences(a: Mapping[str, Any], b: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any, Any]]:
    out = []
    for k in sorted(set(a) | set(b), key=str):
        va, vb = a.get(k, _UNSET), b.get(k, _UNSET)
        if isinstance(va, Mapping) and isinstance(vb, Mapping):
            out += _differences(va, vb, f"{prefix}{k}.")
        elif va != vb:
            out.append((prefix + str(k), va, vb))
    return out


def _show(value: Any) -> str:
    if value is _UNSET:
        return "unset"
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _remove_unfinished(ckpt_dir: Path, report: bool) -> None:
    """Delete temporary files of checkpoint writes a killed process left: never read, and only
    the run folder's lock holder could be writing them."""
    for tmp in remove_temp_files(ckpt_dir):
        if report:
            print(f"polydiff: removed {tmp.name}, an unfinished write of an interrupted run", file=sys.stderr,
                  flush=True)
