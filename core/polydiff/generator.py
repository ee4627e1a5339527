"""Trained models as generators: load a checkpoint, generate, save, evaluate.

``polydiff.load(path)`` opens a checkpoint written by :func:`polydiff.train` with
``torch.load(weights_only=True)`` (a checkpoint cannot run code when opened), rebuilds the
modality, its fields and its network from the recipe and data ``info`` stored inside, and
loads the EMA weights when there are any. :meth:`Generator.generate` then turns noise into
the modality's own objects; every sample has its own seed, so results do not depend on the
batch size (``generate(10, seed=0)[:5]`` equals ``generate(5, seed=0)``, up to the last bits of
the network's arithmetic, which can round differently for other batch shapes).

What a sample depends on. Sample ``i`` of a request seeded ``s`` gets the noise seed
``s * 1_000_003 + i`` (so a request of more than 1,000,003 samples reaches the noise of seed
``s + 1``'s: give requests that large seeds far apart) and its prior entries (sizes, masks,
conditions) from the modality's ``prior_state`` called on a fixed block of :data:`PRIOR_BLOCK` samples (block ``i //
PRIOR_BLOCK``, its generator seeded by ``(s, block)``; block 0 by ``s`` itself, as a single
``prior_state(n)`` call was seeded before). Neither depends on the batch size, so priors are
built chunk by chunk and memory stays bounded by the chunk; only the network's arithmetic can
depend on the batch (e.g. batch statistics in a sampler), which is why a resumed run keeps its
batch size.

Streaming (:meth:`Generator.generate_to`, what ``polydiff sample`` runs). Samples are generated
in chunks of ``batch_size``; each chunk is written with the modality's ``write`` as its own part
folder ``OUT.partial/part-<first>-<end>`` (built in a hidden temporary folder and renamed, so a
part folder that exists is complete), next to ``OUT.partial/polydiff-partial.json``, the request
(model fingerprint, number, seed, batch size, sampler settings, condition, control, device). At
the end the parts are merged into ``OUT`` (built in a temporary folder and swapped in atomically)
and ``OUT.partial`` is removed. ``resume=True`` finishes an interrupted ``OUT.partial`` when the
request is the same (else a clear error saying what differs) and gives the same bytes as an
uninterrupted run: the same chunks, the same seeds, the same merge. The merge concatenates the
parts' files when the modality's files are a header line plus one record per object (checked on
the first part: writing it whole must equal writing its halves and concatenating them, the
repeated header dropped), so it holds one file block in memory; otherwise it reads the parts
back and writes them once (memory then grows with ``n`` at the merge; ``plot`` also reads them
back, for the figure).

Sharding (:mod:`polydiff.distributed`). Under a process group (``torchrun``, SLURM, ``polydiff
sample --processes N``) rank 0 holds the folder's lock and opens ``OUT.partial``; the chunks still
to do are dealt out over the ranks, each writes its own part folders, and rank 0 merges them. The
chunks and their seeds are those of a single-process run with the same batch size, so the files
are the same bytes; an interrupted sharded run resumes with any number of processes.
"""

from __future__ import annotations

import difflib
import hashlib
import inspect
import json
import math
import os
import re
import shutil
import sys
import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from . import distributed
from .checkpoints import CheckpointError, load_checkpoint, load_network, network_weights, save_checkpoint_file
from .config import DRIVER_OPTIONS, Config, build_data, from_dict
from .files import atomic_folder, atomic_write, folder_lock
from .modality import Modality, check_metrics, check_objects, evaluation_options, plot_objects
from .progress import Progress
from .quantize import TOLERANCE
from .registry import RegistryError, load_modality, seed_value, whole_number
from .samplers.base import SAMPLERS, SampleSettings, get_sampler, settings_of
from .samplers.driver import compiles_loop
from .state import FieldSpec, State
from .steering import CONTROL_NAMES, Control, control_of
from .techniques import SelfConditioned

METADATA_FILE = "polydiff.json"
PARTIAL_FILE = "polydiff-partial.json"  # the request of an unfinished streamed run, in OUT.partial
PRIOR_BLOCK = 1024  # prior_state is called on blocks of this many samples (see the module docstring)
DEFAULT_BATCH = 1024  # samples generated at once when neither the call nor the recipe says
_SEED_STRIDE = 1_000_003  # sample b of a request seeded s gets seed s * stride + b (as polydiff.random.Noise)
_PARTIAL_FORMAT = 1
_PART = re.compile(r"part-(\d{12})-(\d{12})")
_PROBE = ".merge-check-"  # scratch folders of the merge's concatenation check, inside OUT.partial
# the tag polydiff.files gives its hidden temporaries ("." + name + "." + tag + "-" + id): a killed run leaves
# them behind, and a run holding the samples folder's lock removes those of its folder
_TEMP = "tmp"

# re-exported for code written against the older layout (checkpoint I/O lives in polydiff.checkpoints)
__all__ = [
    "METADATA_FILE",
    "PRIOR_BLOCK",
    "CheckpointError",
    "Evaluation",
    "Generator",
    "SamplesWritten",
    "evaluate_samples",
    "interrupted_run",
    "is_samples_folder",
    "load",
    "load_checkpoint",
    "network_weights",
    "read_metadata",
    "save_checkpoint_file",
]


# ---------------------------------------------------------------------------------------------
# the generator
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Plan:
    """One sampling request with every default resolved."""

    n: int
    seed: int
    batch_size: int
    settings: SampleSettings
    control: Control
    condition: Mapping[str, Any] | None
    device: torch.device
    progress: bool | None
    guided: bool = False  # guidance_scale asked for by the caller (not the recipe's default)


@dataclass
class SamplesWritten:
    """What :meth:`Generator.generate_to` did: the files in ``out``, how many samples an
    interrupted run had already finished (``resumed``), how many this call generated, and
    whether ``out`` already held the result (``complete``: a resumed run with nothing left)."""

    out: Path
    paths: list[Path]
    num: int
    resumed: int
    generated: int
    complete: bool = False


class Generator:
    """A trained network with everything needed to sample it and handle its outputs
    (:func:`load` opens one from a checkpoint).

    :meth:`generate` returns new objects in the modality's own form (graphs, molecules,
    arrays...), :meth:`generate_to` streams them into a samples folder, :meth:`save` writes
    objects there, :meth:`evaluate` scores them against the recipe's data, :meth:`plot` draws
    them; :meth:`quantized` and :meth:`calibrate_grid` make sampling cheaper. ``modality``,
    ``config`` (the recipe), ``info`` (what the data told the model: sizes, conditions...),
    ``fields`` and ``net`` are the parts."""

    def __init__(self, modality: Modality, config: Config, info: Mapping[str, Any], fields: Mapping[str, FieldSpec],
                 net: nn.Module, *, checkpoint: Path | None = None, step: int | None = None) -> None:
        self.modality, self.config, self.info = modality, config, dict(info)
        self.fields, self.net = dict(fields), net.eval()
        self.checkpoint, self.step = checkpoint, step
        self._reference: Any = None
        self._defaults: dict[str, Any] = {}
        self.quantization: Any = None  # the QuantizationReport of a quantized() generator

    def __repr__(self) -> str:
        sc = self.config.sample
        where = "not from a checkpoint" if self.checkpoint is None else f"{str(self.checkpoint)!r}, step {self.step}"
        size = (f"{sum(p.numel() for p in self.net.parameters()):,} parameters" if self.quantization is None
                else f"quantized {self.quantization.scheme}")  # quantized weights are buffers, not parameters
        conditions = ", ".join(self.conditions)
        own = sc.sampler in SAMPLERS and not get_sampler(sc.sampler).uses_steps
        how = sc.sampler if own else f"{sc.sampler}, {sc.steps} steps"
        return (f"<polydiff Generator: {self.modality.name} ({where}); network {type(self.net).__name__}, "
                f"{size}, on {self.device}; fields {', '.join(self.fields)}"
                f"{f'; conditions {conditions}' if conditions else ''}; samples with {how}>")

    @property
    def conditions(self) -> dict[str, Any]:
        """The conditions the network takes, ``{key: spec}`` (empty: an unconditional model)."""
        return self.modality.conditions(self.net, self.info)

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device | None = None,
                        ema: bool | None = None) -> Generator:
        """A generator from a checkpoint (EMA weights unless ``ema=False`` or the recipe says ``sample.ema: false``)."""
        got = load_network(path, ema)
        got.net.requires_grad_(False)  # a loaded network samples: guidance differentiates to the state only
        gen = cls(got.modality, got.config, got.info, got.fields, got.net, checkpoint=got.path, step=got.step)
        return gen.to(device) if device is not None else gen

    def to(self, device: str | torch.device) -> Generator:
        """Move the network to ``device``; returns the generator for chaining."""
        self.net.to(as_device(device))
        return self

    @property
    def device(self) -> torch.device:
        p = next(self.net.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    # -- sampling --
    def settings(self, sampler: str | None = None, steps: int | None = None, **options: Any) -> SampleSettings:
        """The recipe's sampling settings (its ``sample`` section), with ``sampler``, ``steps``
        and other settings or sampler options overriding them. A sampler other than the
        recipe's keeps only the recipe's grid settings, not its sampler options."""
        sc = self.config.sample
        if sampler is not None and sampler != sc.sampler:
            self._check_sampler(sampler)
        base = dict(sc.options) if sampler in (None, sc.sampler) else {k: v for k, v in sc.options.items()
                                                                       if k in DRIVER_OPTIONS}
        return settings_of(SampleSettings(sampler=sc.sampler, steps=sc.steps),
                           **{**base, **options, "sampler": sampler, "steps": steps})

    def _check_sampler(self, sampler: str) -> None:
        """A Gaussian sampler named for a model whose fields are all categorical would move
        nothing (the categorical sampler would run alone): an error, not a silent substitute."""
        if get_sampler(sampler).kind == "categorical" or any(f.kind != "categorical" for f in self.fields.values()):
            return
        allowed = [n for n in SAMPLERS if get_sampler(n).kind == "categorical"]
        raise ValueError(f"sampler {sampler!r} is a Gaussian sampler, but every field of this model is categorical "
                         f"({', '.join(self.fields)}): name a categorical sampler ({', '.join(allowed)})")

    @contextmanager
    def sampling_defaults(self, *, sampler: str | None = None, steps: int | None = None,
                          batch_size: int | None = None, device: str | torch.device | None = None,
                          progress: bool | None = None) -> Iterator[Generator]:
        """Within the block, :meth:`generate` / :meth:`sample_states` calls that leave these
        arguments out use the values given here (None: unchanged). ``polydiff evaluate CKPT
        --sampler/--steps/--quiet`` sets them around the modality's ``evaluate_model``, which
        generates with its own call."""
        before = self._defaults
        given = {"sampler": sampler, "steps": steps, "batch_size": batch_size, "device": device, "progress": progress}
        self._defaults = {**before, **{k: v for k, v in given.items() if v is not None}}
        try:
            yield self
        finally:
            self._defaults = before

    def sample_states(self, n: int, sampler: str | None = None, steps: int | None = None, seed: int | None = None,
                      condition: Mapping[str, Any] | None = None, batch_size: int | None = None,
                      device: str | torch.device | None = None, progress: bool | None = None,
                      **options: Any) -> State:
        """``n`` generated states, concatenated on the CPU (see :meth:`generate`)."""
        plan = self._plan(n, sampler, steps, seed, condition, batch_size, device, progress, options)
        parts = []
        with Progress(plan.n, enabled=plan.progress) as bar:
            for lo, hi, st in self._chunks(plan):
                parts.append(st)
                bar.update(hi - lo)
        return {k: torch.cat([p[k] for p in parts]) if isinstance(v, Tensor) and v.dim() else v
                for k, v in parts[0].items()}

    def generate(self, n: int, sampler: str | None = None, steps: int | None = None, seed: int | None = None,
                 condition: Mapping[str, Any] | None = None, batch_size: int | None = None,
                 device: str | torch.device | None = None, progress: bool | None = None, **options: Any) -> Any:
        """``n`` new objects in the modality's own form (e.g. an (n, D) array of points).

        ``sampler`` / ``steps`` default to the recipe's ``sample`` section; ``seed=None`` draws a
        fresh seed. Sample ``i`` is seeded by ``(seed, i)``, so the result does not depend on
        ``batch_size`` (the number generated at once). ``condition`` goes to the modality's
        ``prior_state`` (e.g. ``{"label": 3}``; a value per sample is split with the samples).
        ``progress``: a bar with rate and ETA on stderr (None: on a terminal, plain lines in
        logs of long runs; False: none). Other keywords: a ``settings=``
        :class:`~polydiff.SampleSettings` or its fields (grid, t_min, dtype, ...), sampler
        options (``eta``, ...), and a ``control=`` :class:`~polydiff.steering.Control` or its
        fields (``guidance_scale`` guides on the keys of ``condition``; ``observed``, also a
        file read as ``polydiff sample --observed`` reads it; ``particles``, ``reward``, ...).
        The modality's :meth:`~polydiff.Modality.sample` generates each chunk. All objects are
        returned at once: :meth:`generate_to` streams them to files instead.
        """
        plan = self._plan(n, sampler, steps, seed, condition, batch_size, device, progress, options)
        parts = []
        with Progress(plan.n, enabled=plan.progress) as bar:
            for lo, hi, st in self._chunks(plan):
                parts.append(self._native(st, lo))
                bar.update(hi - lo)
        return _concat(parts)

    def generate_to(self, out_dir: str | Path, n: int, sampler: str | None = None, steps: int | None = None,
                    seed: int | None = None, condition: Mapping[str, Any] | None = None,
                    batch_size: int | None = None, device: str | torch.device | None = None, *,
                    overwrite: bool = False, resume: bool = False, plot: bool = False,
                    metadata: Mapping[str, Any] | None = None, progress: bool | None = None,
                    **options: Any) -> SamplesWritten:
        """Generate ``n`` objects straight into the samples folder ``out_dir`` (what
        ``polydiff sample`` does): chunk by chunk into ``OUT.partial``, then merged into ``out_dir``
        (see the module docstring). The result equals ``save(generate(...))`` with the same
        arguments, ``batch_size`` included (other batch sizes give the same samples up to the
        last bits of the network's arithmetic, except with the samplers that couple a batch:
        ``pc`` and ``s4`` with ``norm="batch"``, and ``rk45``); memory is bounded by ``batch_size``, not by ``n``.

        ``resume=True`` finishes an interrupted run (the same request; ``seed`` / ``batch_size``
        left out take the interrupted run's); ``overwrite=True`` replaces a samples folder
        polydiff wrote (never another folder) and discards an interrupted run. While it runs,
        the folder is locked: a second writer fails with :class:`polydiff.files.FolderBusy`.
        Other arguments as for :meth:`generate`.
        """
        if overwrite and resume:
            raise ValueError("resume finishes an interrupted run and overwrite starts over: give only one of them")
        out = _samples_path(out_dir)
        partial = _partial_of(out)
        rank, size = distributed.world()
        args = (sampler, steps, condition, device, progress, options)
        with folder_lock(out, "samples folder") if rank == 0 else nullcontext():
            opened = distributed.run_on_rank0(
                lambda: self._open_run(out, partial, n, seed, batch_size, args, overwrite=overwrite, resume=resume),
                f"opening {partial}")
            if opened["complete"]:
                files = json.loads((out / METADATA_FILE).read_text(encoding="utf-8")).get("files", [])
                return SamplesWritten(out, [out / f for f in files], opened["num"], opened["num"], 0, complete=True)
            plan = self._plan(n, sampler, steps, opened["seed"], condition, opened["batch_size"],
                              device if device is not None or size == 1 else distributed.local_device(), progress,
                              options)
            done = opened["done"]
            todo = [lo for lo in range(0, plan.n, plan.batch_size) if lo not in done]
            mine = todo[rank::size]
            share = sum(min(plan.n, lo + plan.batch_size) - lo for lo in mine)
            error: BaseException | None = None
            try:
                with Progress(share, enabled=plan.progress if rank == 0 else False) as bar:
                    for lo, hi, st in self._chunks(plan, mine):
                        objects = self._native(st, lo)
                        with atomic_folder(partial / _part_name(lo, hi)) as tmp:
                            self.modality.write(objects, tmp)
                        del objects, st
                        bar.update(hi - lo)
            except BaseException as err:
                error = err
            try:
                distributed.agree(error, f"sampling into {partial}")
            except BaseException as err:
                if rank == 0:
                    kept = sum(hi - lo for lo, hi, _ in _parts(partial, _read_partial(partial)))
                    if opened["created"] and kept == 0:
                        shutil.rmtree(partial, ignore_errors=True)  # nothing to resume
                    elif isinstance(err, KeyboardInterrupt):
                        print(f"polydiff: {kept} of {plan.n} samples are kept in {partial}; --resume finishes the "
                              "run", file=sys.stderr)
                raise
            resumed = sum(min(plan.n, lo + plan.batch_size) - lo for lo in done)

            def merge() -> list[Path]:
                extra = {"seed": plan.seed, "batch_size": plan.batch_size, "request": opened["digest"]}
                paths = self._merge_into(out, partial, plan.n, opened["replace"], plot,
                                         {**dict(metadata or {}), **extra})
                shutil.rmtree(partial)
                return paths

            paths = distributed.run_on_rank0(merge, f"merging {partial} into {out}")
        return SamplesWritten(out, paths, plan.n, resumed, plan.n - resumed)

    def _open_run(self, out: Path, partial: Path, n: int, seed: int | None, batch_size: int | None,
                  args: tuple[Any, ...], *, overwrite: bool, resume: bool) -> dict[str, Any]:
        """Open (or reopen, with ``resume``) the streamed run's ``OUT.partial`` under the
        folder's lock: what every rank needs to generate its chunks (seed, batch size, the
        chunks already done) and whether ``out`` already holds the result."""
        sampler, steps, condition, device, progress, options = args
        _clean_stale(out)
        stored = _read_partial(partial) if partial.exists() else None
        if stored is not None and not resume:
            if not overwrite:
                done = sum(hi - lo for lo, hi, _ in _parts(partial, stored))
                raise FileExistsError(f"an interrupted run left {partial} ({done} of {stored['num']} samples "
                                      "done); pass --resume to finish it or --overwrite to start over "
                                      "(resume=True / overwrite=True in Python)")
            shutil.rmtree(partial)
            stored = None
        if stored is not None:
            seed = stored["request"]["seed"] if seed is None else seed
            batch_size = stored["request"]["batch_size"] if batch_size is None else batch_size
        plan = self._plan(n, sampler, steps, seed, condition, batch_size, device, progress, options)
        request = self._request(plan)
        digest = _digest(request)
        opened = {"seed": plan.seed, "batch_size": plan.batch_size, "num": plan.n, "digest": digest,
                  "complete": False, "created": stored is None, "done": set()}
        if resume and _request_of(out) == digest:  # finished already (killed before OUT.partial was removed)
            if stored is not None:
                shutil.rmtree(partial)
            return {**opened, "complete": True}
        if stored is not None and stored["request"] != request:
            what = _differences(stored["request"], request)
            raise ValueError(f"{partial} was started with other settings ({what}); finish it with the same ones "
                             "(the seed and batch size are reused when not given) "
                             "or pass --overwrite to start over")
        opened["replace"] = overwrite or bool(stored is not None and stored.get("overwrite"))
        check_samples_out(out, opened["replace"])
        if stored is None:
            with atomic_folder(partial) as tmp:
                atomic_write(tmp / PARTIAL_FILE, json.dumps({"format": _PARTIAL_FORMAT, "num": plan.n,
                                                             "overwrite": bool(overwrite), "request": request},
                                                            indent=1))
            stored = _read_partial(partial)
        opened["done"] = {lo for lo, _, _ in _parts(partial, stored)}
        return opened

    def _plan(self, n: int, sampler: str | None, steps: int | None, seed: int | None,
              condition: Mapping[str, Any] | None, batch_size: int | None, device: Any, progress: bool | None,
              options: Mapping[str, Any]) -> _Plan:
        """Resolve a request: settings, control, seed, batch size, device (defaults from
        :meth:`sampling_defaults`, then the recipe)."""
        n, seed = whole_number("n", n), seed_value(seed)
        if condition is not None and not isinstance(condition, Mapping):
            raise ValueError(f"condition must be a dict of condition values such as {{'label': 3}}, got {condition!r}")
        d = self._defaults
        sampler = sampler if sampler is not None else d.get("sampler")
        steps = steps if steps is not None else d.get("steps")
        batch_size = batch_size if batch_size is not None else d.get("batch_size")
        device = device if device is not None else d.get("device")
        progress = progress if progress is not None else d.get("progress")
        if steps is not None:
            steps = whole_number("steps", steps)
        options = dict(options)
        ctl = control_of(options.pop("control", None), **{k: options.pop(k) for k in list(options)
                                                          if k in CONTROL_NAMES})
        if isinstance(ctl.observed, (str, os.PathLike)):  # a file, read as the CLI's --observed reads it
            ctl = control_of(ctl, observed=self.modality.observation(Path(ctl.observed), self.info))
        guided = ctl.guidance_scale is not None and ctl.uncond_model is None and ctl.null is None
        gs = ctl.guidance_scale
        if guided and (isinstance(gs, (str, bool)) or (isinstance(gs, (int, float)) and not math.isfinite(gs))):
            raise ValueError(f"guidance_scale must be a number (or a per-field dict, a per-sample tensor, a function "
                             f"of time), got {ctl.guidance_scale!r}")
        declared = list(self.conditions)  # the condition entries the network takes
        asked = [k for k in condition or {} if k in declared] if declared else list(condition or {})
        keys = asked or declared  # sizes such as atoms=12 are conditions of the prior, not guided
        if guided and not keys:
            raise ValueError(f"guidance_scale: classifier-free guidance steers toward a condition, and this "
                             f"{self.modality.name} model takes none")
        default_scale = self.config.sample.guidance_scale
        if ctl.guidance_scale is None and default_scale is not None and ctl.uncond_model is None and keys:
            ctl = control_of(ctl, guidance_scale=default_scale)  # the recipe's default guidance
        if ctl.guidance_scale is not None and keys and ctl.condition_keys is None and ctl.uncond_model is None \
                and ctl.null is None:
            ctl = control_of(ctl, condition_keys=keys)  # guide on the conditions asked for, else the data's
        given = options.pop("settings", None)
        settings = settings_of(given, sampler=sampler, steps=steps, **options) if given is not None else \
            self.settings(sampler, steps, **options)
        _check_keywords(options, settings.sampler)
        if steps is not None and settings.sampler in SAMPLERS and not get_sampler(settings.sampler).uses_steps:
            warnings.warn(f"sampler {settings.sampler!r} sets its own number of steps: steps={steps} is ignored",
                          stacklevel=3)
        if abs(int(seed)) * _SEED_STRIDE + int(n) >= 2**63:  # per-sample seeds are 64-bit integers
            raise ValueError(f"seed must be below {(2**63 - int(n)) // _SEED_STRIDE}, got {seed}")
        dev = as_device(device) if device is not None else (
            torch.device("cuda") if torch.cuda.is_available() else self.device)
        self.net.to(dev)
        bs = batch_size if batch_size is not None else (self.config.sample.batch_size or DEFAULT_BATCH)
        return _Plan(n, seed, whole_number("batch_size", bs), settings, ctl, condition, dev, progress, guided)

    def _native(self, state: State, first: int) -> list[Any]:
        """The modality's objects of a chunk whose first sample is sample ``first`` of the run
        (``info["first_sample"]``: plugins name objects by their index in the run,
        :func:`polydiff.files.sample_name`)."""
        return self.modality.to_native(state, {**self.info, "first_sample": first})

    def _chunks(self, plan: _Plan, starts: Sequence[int] | None = None) -> Iterator[tuple[int, int, State]]:
        """Generate the chunks of ``batch_size`` samples that begin at ``starts`` (default: all of
        ``[0, n)``); yields ``(lo, hi, state)`` with each chunk's final state on the CPU. Priors
        are built per chunk."""
        cache: dict[str, Any] = {}
        bs = plan.batch_size
        one_size = compiles_loop(plan.settings.compile)  # a compiled loop keeps one batch size
        for lo in starts if starts is not None else range(0, plan.n, bs):
            hi = min(plan.n, lo + bs)
            # a short last chunk under a compiled loop is computed as the full window [hi - bs, hi) and cut
            # (each sample depends on its own seed only), instead of compiling the whole loop again
            a = hi - bs if one_size and hi - lo < bs <= hi else lo
            spec = self._prior(plan, a, hi, cache)
            seeds = plan.seed * _SEED_STRIDE + torch.arange(a, hi, dtype=torch.long)
            state = self._sample(spec, plan.settings, plan.control, seeds, plan.device)
            if a != lo:
                state = {k: _slice(v, hi - a, lo - a, hi - a) for k, v in state.items()}
            yield lo, hi, {k: v.detach().cpu() if isinstance(v, Tensor) else v for k, v in state.items()}

    def _prior(self, plan: _Plan, lo: int, hi: int, cache: dict[str, Any]) -> dict[str, Any]:
        """The prior spec of samples ``[lo, hi)``, cut from the fixed blocks of
        :data:`PRIOR_BLOCK` samples that cover them (the last block built is kept in ``cache``)."""
        pieces, sizes = [], []
        for k in range(lo // PRIOR_BLOCK, (hi - 1) // PRIOR_BLOCK + 1):
            b_lo, b_hi = k * PRIOR_BLOCK, min(plan.n, (k + 1) * PRIOR_BLOCK)
            if cache.get("block") != k:
                gen = torch.Generator().manual_seed(_block_seed(plan.seed, k))
                cond = _slice_condition(plan.condition, plan.n, b_lo, b_hi)
                cache["block"], cache["spec"] = k, self.modality.prior_state(b_hi - b_lo, self.info, gen, cond)
                if plan.guided:
                    _check_guided(cache["spec"], plan.control.condition_keys or (), self.conditions)
            a, b = max(lo, b_lo) - b_lo, min(hi, b_hi) - b_lo
            pieces.append({key: _slice(v, b_hi - b_lo, a, b) for key, v in cache["spec"].items()})
            sizes.append(b - a)
        return pieces[0] if len(pieces) == 1 else _join(pieces, sizes)

    def _sample(self, spec: Mapping[str, Any], settings: SampleSettings, control: Control, seeds: Tensor,
                device: torch.device) -> State:
        """One call of the modality's :meth:`~polydiff.Modality.sample` hook (by default
        :func:`polydiff.steering.controlled_sample`, exactly :func:`polydiff.sample` unless
        guidance, inpainting or steering is asked for). Gradient guidance turns gradients back
        on inside its own wrapper."""
        net = self.net
        if float((self.config.loss.techniques or {}).get("self_condition", 0.0)) > 0:
            net = SelfConditioned(net, self.fields)  # trained with self-conditioning: sample with it too
        with torch.no_grad():
            return self.modality.sample(net, self.fields, spec, settings, control, seed=seeds, device=device)

    def _request(self, plan: _Plan) -> dict[str, Any]:
        """What a streamed run's samples depend on, as JSON (tensors by digest): a resumed run
        must match it exactly."""
        return {"modality": self.modality.name, "model": _weights_digest(self.net), "num": plan.n, "seed": plan.seed,
                "batch_size": plan.batch_size, "prior_block": PRIOR_BLOCK, "device": plan.device.type,
                "settings": _canonical(plan.settings), "control": _canonical(plan.control),
                "condition": _canonical(plan.condition)}

    def _merge_into(self, out: Path, partial: Path, n: int, replace: bool, plot: bool,
                    metadata: Mapping[str, Any]) -> list[Path]:
        """Merge the finished parts of ``partial`` into ``out`` (atomically)."""
        found = _parts(partial, _read_partial(partial))
        covered = sum(hi - lo for lo, hi, _ in found)
        if covered != n:
            raise RuntimeError(f"{partial}: {covered} of {n} samples are there after sampling; nothing was merged "
                               "(--resume generates the rest)")
        parts = [p for _, _, p in found]
        with atomic_folder(out, overwrite=replace, replaceable=is_samples_folder) as tmp:
            files = _merge_parts(self.modality, parts, tmp, partial)
            if plot:
                png = self.plot(self.modality.read(tmp), tmp / "samples.png")
                files += [png] if png is not None else []
            self._write_metadata(tmp, n, files, metadata)
        return [out / p.relative_to(tmp) for p in sorted(files)]

    def _write_metadata(self, folder: Path, num: int, files: Sequence[Path], metadata: Mapping[str, Any]) -> None:
        meta = {"modality": self.modality.name, "checkpoint": str(self.checkpoint) if self.checkpoint else None,
                "step": self.step, "num": num, "files": sorted(str(p.relative_to(folder)) for p in files),
                **dict(metadata), "info": self.info, "config": self.config.to_dict()}
        (folder / METADATA_FILE).write_text(json.dumps(meta, indent=1, default=str), encoding="utf-8")

    def calibrate_grid(self, steps: int, sampler: str | None = None, *, pilot: int = 256, seed: int | None = 0,
                       condition: Mapping[str, Any] | None = None, device: str | torch.device | None = None,
                       progress: bool | None = None, **options: Any) -> Tensor:
        """A ``steps``-step time grid for ``sampler`` fitted to this model on ``pilot`` samples
        (:func:`polydiff.samplers.calibrate_grid`); pass it back as ``generate(..., grid=grid)``.
        Worth it for few-step sampling (5-20 NFE) of deterministic samplers. ``progress``: a
        bar over the trial grids (as for :meth:`generate`)."""
        from .samplers.calibrate import calibrate_grid

        pilot, seed = whole_number("pilot", pilot), seed_value(seed)
        st = self.settings(sampler, **options)
        dev = as_device(device) if device is not None else self.device
        self.net.to(dev)
        spec = self.modality.prior_state(pilot, self.info, torch.Generator().manual_seed(seed), condition)
        spec = {k: v.to(dev) if isinstance(v, Tensor) else v for k, v in spec.items()}
        opts = dict(st.options)
        trials = int(opts.get("max_trials", inspect.signature(calibrate_grid).parameters["max_trials"].default))
        with Progress(trials, "calibrating", "trial", progress) as bar, torch.no_grad():
            return calibrate_grid(self.net, self.fields, spec, steps, sampler=st.sampler, seed=seed, grid=st.grid,
                                  t_max=st.t_max, t_min=st.t_min, final_zero=st.final_zero,
                                  progress=lambda k, err: bar.update_to(k, error=f"{err:.3g}"), **opts)

    def quantized(self, scheme: str = "int8", *, calibration: int = 64, seed: int = 0, keep: Sequence[str] = (),
                  percentile: float | None = None, inputs: str = "dynamic", tolerance: float | None = TOLERANCE,
                  progress: bool | None = None, **sample_options: Any) -> Generator:
        """A generator with a post-training-quantized copy of the network (this one is left
        as it is): :func:`polydiff.quantize.quantize` calibrated on ``calibration`` samples
        generated with the recipe's sampler (or ``sample_options``: sampler, steps, condition,
        ...), which cover every step of the sampler's own trajectories (``batch_size`` bounds
        the calibration's memory: 64 proteins at once peak at 2.4x the memory of sampling 8);
        ``inputs``: per-row input scales at run time (``"dynamic"``) or one calibrated scale per layer (``"static"``);
        ``tolerance``: the error budget that keeps the most sensitive layers in full precision
        (None quantizes every layer it can); ``progress``: bars for the calibration sampling
        and the error budget (None: on a terminal, plain lines in logs of long runs). The
        report is ``.quantization``."""
        from .quantize import quantize

        def run(net: nn.Module) -> None:
            before = self.net
            self.net = net
            try:
                self.sample_states(calibration, seed=seed, progress=progress, **sample_options)
            finally:
                self.net = before

        qnet, report = quantize(self.net, run, scheme, keep=keep, percentile=percentile, inputs=inputs,
                                tolerance=tolerance, progress=progress)
        gen = Generator(self.modality, self.config, self.info, self.fields, qnet, checkpoint=self.checkpoint,
                        step=self.step)
        gen._reference, gen._defaults = self._reference, dict(self._defaults)
        gen.quantization = report
        return gen

    # -- files and metrics --
    def save(self, objects: Any, out_dir: str | Path, *, overwrite: bool = False, plot: bool = False,
             metadata: Mapping[str, Any] | None = None) -> list[Path]:
        """Write ``objects`` with the modality's writer into ``out_dir``, plus a small
        ``polydiff.json`` (modality, info, recipe, the files written) that ``polydiff evaluate
        DIR`` reads.

        Everything is written into a temporary folder that is renamed into place at the end:
        a failure leaves any existing ``out_dir`` untouched. An existing non-empty ``out_dir``
        is replaced only with ``overwrite=True``, and only when it is a samples folder polydiff
        wrote (:func:`is_samples_folder`): never a run folder or a folder with other files.
        """
        check_objects(self.modality, objects, self.info)
        out = _samples_path(out_dir)
        check_samples_out(out, overwrite)
        with atomic_folder(out, overwrite=overwrite, replaceable=is_samples_folder) as tmp:
            paths = [Path(p) for p in self.modality.write(objects, tmp)]
            if plot:
                png = self.plot(objects, tmp / "samples.png")
                paths += [png] if png is not None else []
            self._write_metadata(tmp, len(objects), paths, metadata or {})
        return [out / p.relative_to(tmp) for p in paths]

    def reference(self) -> Any:
        """Reference objects of the recipe's dataset (built once, then cached)."""
        if self._reference is None:
            self._reference = self.modality.reference(build_data(self.config, self.modality))
        return self._reference

    def evaluate(self, objects: Any, reference: Any = None, **options: Any) -> dict[str, float]:
        """The modality's metrics (a dict of floats, NaN where undefined) of ``objects``, a list
        of the modality's objects as :meth:`generate` returns them (or ``modality.read`` reads files),
        against ``reference`` (objects of the same kind; default: the recipe's data);
        ``options``: the modality's own (graphs: ``fcd=True`` adds FCD). The plugin's page in
        docs/ lists its metrics."""
        options = evaluation_options(self.modality, options)
        check_objects(self.modality, objects, self.info)
        if reference is not None:
            check_objects(self.modality, reference, self.info, "reference")
        ref = self.reference() if reference is None else reference
        return check_metrics(self.modality.evaluate(objects, ref, self.info, **options), self.modality.name)

    def plot(self, objects: Any, path: str | Path) -> Path | None:
        """The modality's figure of ``objects`` (over the reference when the plot accepts one)
        written to ``path`` in the format its suffix names (PNG without one; missing folders
        are made); None, with a warning saying why, without matplotlib or when the plugin
        draws none."""
        import importlib.util

        check_objects(self.modality, objects, self.info)
        if importlib.util.find_spec("matplotlib") is None:
            warnings.warn("no picture: matplotlib is not installed (pip install 'polydiff[plot]')", stacklevel=2)
            return None
        png = self._plot(objects, path)
        if png is None:
            warnings.warn(f"no picture: the {self.modality.name} plugin draws none of these samples", stacklevel=2)
        return png

    def _plot(self, objects: Any, path: str | Path) -> Path | None:
        return plot_objects(self.modality, objects, Path(path), self.reference, self.info)


def load(checkpoint: str | Path | Any, device: str | torch.device | None = None, ema: bool | None = None, *,
         modality: str | None = None) -> Generator:
    """Open a checkpoint (a path, or the :class:`~polydiff.training.Run` that
    :func:`polydiff.train` returned: its last checkpoint) as a :class:`Generator` (EMA weights
    unless ``ema=False``; by default as the recipe's ``sample.ema`` says, true unless it asks
    for the raw weights); with ``modality`` (a plugin's command), a checkpoint of another
    modality is an error saying so. ``device``: where the network goes (an error if this
    machine has no such device).

    The network is in eval mode with its parameters frozen (``requires_grad`` off): guided
    sampling differentiates through it to the state only, and autograd then records none of
    the parameters' operations (nor recomputes what depends on them alone, such as S4 kernels).
    To fine-tune, train from the checkpoint (``train.init``) or unfreeze ``gen.net`` yourself."""
    if not isinstance(checkpoint, (str, os.PathLike)):
        path = getattr(checkpoint, "checkpoint", None)  # a Run (not imported: it would import Lightning)
        if not isinstance(path, os.PathLike):
            raise TypeError(f"checkpoint must be a path or the Run polydiff.train returned, got {checkpoint!r}")
        checkpoint = path
    if device is not None:
        as_device(device)  # before reading the file
    gen = Generator.from_checkpoint(checkpoint, device=device, ema=ema)
    if modality is not None and gen.modality.name != modality:
        raise ValueError(f"{checkpoint}: a {gen.modality.name!r} model; this command needs a {modality!r} model")
    return gen


@dataclass
class Evaluation:
    """Metrics of a set of objects, with the per-sample flags the modality reports."""

    metrics: dict[str, float]
    flags: dict[str, list[Any]]
    num: int
    modality: str


def evaluate_samples(target: str | Path, config: Config | None = None, *, modality: str | None = None,
                     reference: str | Path | None = None, options: Mapping[str, Any] | None = None) -> Evaluation:
    """Metrics of native files: a folder written by ``polydiff sample`` or any folder / file of
    the modality's native files written by another tool.

    The modality is ``modality``, else the recipe's (``config``), else the one named in the
    folder's ``polydiff.json``. The reference objects are read from ``reference`` (a file or
    folder of native files) when given, else taken from the recipe's data (``config``, else the
    recipe stored in ``polydiff.json``), else from the modality's embedded default dataset.
    ``options``: the modality's evaluation options (graphs: ``{"fcd": True}``).
    """
    target = Path(target)
    if not target.exists():
        raise FileNotFoundError(f"{target}: no such file or folder")
    # a folder's own polydiff.json; for one file of such a folder, the folder's
    meta_file = target / METADATA_FILE if target.is_dir() else target.parent / METADATA_FILE
    meta = read_metadata(meta_file) if meta_file.is_file() else {}
    name = modality or (config.modality if config is not None else None) or meta.get("modality")
    if name is None and target.is_dir() and (target / "checkpoints").is_dir():
        raise ValueError(f"{target}: a training run's folder, not samples: evaluate its checkpoint "
                         f"({target / 'checkpoints' / 'last.ckpt'}) or the samples drawn from it "
                         f"({target / 'samples'}, written by `polydiff sample`)")
    if name is None:
        what = "a folder written by" if target.is_dir() else "in a folder written by"
        what += " `polydiff sample`"
        raise ValueError(f"{target}: not {what} (no {meta_file}); say which modality its files are with "
                         "--modality NAME (see `polydiff modalities`)")
    try:
        mod = load_modality(name)
    except RegistryError as err:
        if modality or config is not None:
            raise
        raise ValueError(f"{meta_file}: modality {name!r}: {err}") from None
    options = evaluation_options(mod, options or {})
    cfg = config
    if cfg is None and meta.get("config") and meta.get("modality") == name:
        cfg = from_dict(meta["config"], source=f"{meta_file} (stored recipe)")
    stored_info = False
    if reference is not None:
        ref_objects = mod.read(Path(reference))
        info = (meta.get("info") if meta.get("modality") == name else None) or {}
        stored_info = bool(info)
    else:  # the data's own info: authoritative, and nothing in polydiff.json can contradict it
        data = build_data(cfg, mod) if cfg is not None else mod.dataset()
        ref_objects = mod.reference(data)
        info = data.info
        if cfg is None:  # a user's files against data they may know nothing about: say so
            dataset = info.get("dataset", next(iter(mod.datasets())))
            warnings.warn(f"no --reference and no recipe: {target} is compared with the embedded default dataset of "
                          f"modality {name!r} ({dataset!r}); give --reference PATH to compare with your own data",
                          stacklevel=2)
    objects = mod.read(target)
    try:
        metrics = check_metrics(mod.evaluate(objects, ref_objects, info, **options), name)
        flags = {k: list(v) for k, v in mod.flags(objects, info).items()}
    except ValueError as err:  # the samples cannot be evaluated (too few, ...): say which files hold them
        if str(target) in str(err):
            raise
        files = _data_files(target, meta)
        raise ValueError(f"{target} ({', '.join(files)}): {err}" if files else f"{target}: {err}") from err
    except (TypeError, KeyError, IndexError, RuntimeError, AttributeError) as err:
        if not stored_info:
            raise
        raise ValueError(f"{meta_file}: the dataset info stored here does not fit modality {name!r}'s metrics "
                         f"({type(err).__name__}: {err}); evaluate against the recipe's data instead (leave out "
                         "--reference)") from err
    for k, v in flags.items():
        if len(v) != len(objects):
            raise ValueError(f"modality {name!r}: per-sample flag {k!r} has {len(v)} values for {len(objects)} objects")
    return Evaluation(metrics, flags, len(objects), name)


# ---------------------------------------------------------------------------------------------
# samples folders: recognising, checking, cleaning
# ---------------------------------------------------------------------------------------------

_META_TYPES = {"modality": str, "config": dict, "info": dict, "files": list, "num": int}


def read_metadata(file: Path) -> dict[str, Any]:
    """A samples folder's ``polydiff.json``, checked: a JSON object whose ``modality``,
    ``config``, ``info``, ``files`` and ``num`` (where present) have the right types; a
    ValueError naming the file otherwise."""
    try:
        meta = json.loads(file.read_bytes())
    except ValueError as err:  # JSONDecodeError, UnicodeDecodeError
        raise ValueError(f"{file}: not readable JSON ({err})") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{file}: expected a JSON object, got {type(meta).__name__}")
    for key, kind in _META_TYPES.items():
        if key in meta and meta[key] is not None and not isinstance(meta[key], kind):
            raise ValueError(f"{file}: field {key!r} must be a JSON {kind.__name__}, got {meta[key]!r:.60}")
    return meta


def _data_files(target: Path, meta: Mapping[str, Any]) -> list[str]:
    """The files holding the samples of ``target``: those its polydiff.json lists, else every
    file of the folder but the metadata; none for a file."""
    if not target.is_dir():
        return []
    listed = [str(f) for f in meta.get("files") or []]
    return [f for f in listed or sorted(p.name for p in target.iterdir() if p.is_file()) if f != METADATA_FILE]


def is_samples_folder(path: str | Path) -> bool:
    """Whether ``path`` is a samples folder polydiff wrote, the only kind ``--overwrite``
    replaces: a ``polydiff.json`` naming the modality and the files written, and nothing else
    in the folder (no checkpoints, recipe, logs or other files)."""
    path = Path(path)
    try:
        meta = json.loads((path / METADATA_FILE).read_text(encoding="utf-8"))
        entries = list(path.iterdir())
    except (OSError, ValueError):
        return False
    files = meta.get("files") if isinstance(meta, dict) else None
    if not isinstance(files, list) or "modality" not in meta or not all(isinstance(f, str) and f for f in files):
        return False
    listed = {METADATA_FILE}
    for f in files:
        p = Path(f)
        if p.is_absolute() or ".." in p.parts:
            return False
        listed.add(p.parts[0])
    return all(e.name in listed and e.name != "checkpoints" and e.suffix != ".ckpt" for e in entries)


def interrupted_run(out_dir: str | Path) -> dict[str, Any] | None:
    """The request of the interrupted streamed run in ``OUT.partial`` (``num``, ``seed``,
    ``batch_size``, ...), or None when there is none: what ``polydiff sample --resume`` uses
    for the flags it is not given."""
    partial = _partial_of(_samples_path(out_dir))
    return dict(_read_partial(partial)["request"]) if partial.exists() else None


def _samples_path(out_dir: str | Path) -> Path:
    out = Path(out_dir)
    if out.name in ("", ".", ".."):
        out = out.resolve()
    if not out.name:
        raise ValueError(f"{out_dir}: not a usable samples folder (give a folder name)")
    return out


def _partial_of(out: Path) -> Path:
    return out.with_name(out.name + ".partial")


def check_samples_folder(out: str | Path) -> None:
    """Refuse an existing non-empty ``out`` (a file, or a folder with anything in it): the check
    ``generate_to`` makes without ``overwrite`` or ``resume``, for callers that want it before
    any expensive work."""
    check_samples_out(Path(out), False)


def check_samples_out(out: str | Path, replace: bool) -> None:
    """Refuse, before any work, to write into an existing non-empty ``out`` unless it may be
    replaced: ``replace`` given and ``out`` a samples folder polydiff wrote (what
    :meth:`Generator.save` checks; a plugin command that samples before saving calls it first)."""
    out = Path(out)
    if not out.exists():
        return
    if not out.is_dir():
        raise FileExistsError(f"{out} is a file, not a samples folder; choose another output folder")
    if not any(out.iterdir()):
        return
    if not replace:
        raise FileExistsError(f"{out} already exists and is not empty; pass --overwrite to replace it "
                              "(overwrite=True in Python) or choose another output folder")
    if not is_samples_folder(out):
        raise FileExistsError(f"{out} is not a samples folder written by polydiff (it holds {_listing(out)}); "
                              f"--overwrite only replaces a folder whose {METADATA_FILE} lists everything in it, "
                              "so nothing was changed: choose another output folder")


def _listing(folder: Path, most: int = 6) -> str:
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    return ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "")


def _request_of(out: Path) -> str | None:
    """The request digest a streamed run stored in ``out``'s polydiff.json (None: none)."""
    try:
        meta = json.loads((out / METADATA_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return meta.get("request") if isinstance(meta, dict) and is_samples_folder(out) else None


def _clean_stale(out: Path) -> None:
    """Remove what a killed run left beside ``out`` (called with ``out``'s lock held, so no live
    run owns them): the hidden temporary folders :func:`~polydiff.files.atomic_folder` builds
    ``out`` and ``NAME.partial`` in, those inside ``NAME.partial`` (parts, request file, merge
    checks), and ``.NAME.old-XXXXXXXX`` (the folder being replaced: put back when ``out`` itself
    is missing, i.e. the run was killed between the two renames)."""
    parent = out.parent
    if not parent.is_dir():
        return
    name = re.escape(out.name)
    tmp_re = re.compile(rf"\.{name}(\.partial)?\.{_TEMP}-[0-9a-f]{{8}}")
    old_re = re.compile(rf"\.{name}\.old-[0-9a-f]{{8}}")
    olds = []
    for p in parent.iterdir():
        if not p.is_dir() or p.is_symlink():
            continue
        if tmp_re.fullmatch(p.name):
            shutil.rmtree(p, ignore_errors=True)
        elif old_re.fullmatch(p.name):
            olds.append(p)
    if olds and not out.exists():
        keep = max(olds, key=lambda p: p.stat().st_mtime)
        os.rename(keep, out)
        olds.remove(keep)
        print(f"polydiff: put back {out} from {keep.name}, left by a run killed while replacing it", file=sys.stderr)
    for p in olds:
        shutil.rmtree(p, ignore_errors=True)
    partial = _partial_of(out)
    if partial.is_dir() and not partial.is_symlink():
        for p in partial.iterdir():
            if p.is_dir() and (re.fullmatch(rf"\.part-\d{{12}}-\d{{12}}\.{_TEMP}-[0-9a-f]{{8}}", p.name)
                               or p.name.startswith(_PROBE)):
                shutil.rmtree(p, ignore_errors=True)
            elif p.is_file() and re.fullmatch(rf"\.{re.escape(Path(PARTIAL_FILE).stem)}\.{_TEMP}-.*", p.name):
                p.unlink(missing_ok=True)


def _read_partial(partial: Path) -> dict[str, Any]:
    """The request file of an interrupted run's folder; an error when ``partial`` is not one."""
    f = partial / PARTIAL_FILE
    if not partial.is_dir() or not f.is_file():
        raise FileExistsError(f"{partial} is in the way: it is not the folder of an interrupted `polydiff sample` run "
                              f"(no {PARTIAL_FILE}); move it away or choose another output folder")
    try:
        meta = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ValueError(f"{f}: unreadable ({err}); pass --overwrite to start over") from None
    if not isinstance(meta, dict) or meta.get("format") != _PARTIAL_FORMAT or not isinstance(meta.get("request"), dict):
        raise ValueError(f"{f}: not a request file of this polydiff version; pass --overwrite to start over")
    return meta


def _part_name(lo: int, hi: int) -> str:
    return f"part-{lo:012d}-{hi:012d}"


def _parts(partial: Path, stored: Mapping[str, Any]) -> list[tuple[int, int, Path]]:
    """The finished part folders of ``partial`` in order (chunks of the request's batch size,
    possibly with gaps: ranks of a sharded run finish in any order); an error for anything that
    is not one (a part folder is renamed into place complete, so every one listed is whole)."""
    n, bs = int(stored["request"]["num"]), int(stored["request"]["batch_size"])
    found = []
    for p in partial.iterdir():
        m = _PART.fullmatch(p.name)
        if m and p.is_dir():
            lo, hi = int(m.group(1)), int(m.group(2))
            if lo % bs or lo >= n or hi != min(n, lo + bs):
                raise ValueError(f"{p}: not a chunk of {bs} of samples [0, {n}); pass --overwrite to start over")
            found.append((lo, hi, p))
        elif p.name != PARTIAL_FILE:
            raise ValueError(f"{partial}: unexpected {p.name!r}; this folder holds only the parts of an interrupted "
                             "`polydiff sample` run (pass --overwrite to start over)")
    return sorted(found)


# ---------------------------------------------------------------------------------------------
# merging the parts
# ---------------------------------------------------------------------------------------------

def _merge_parts(modality: Modality, parts: Sequence[Path], tmp: Path, scratch: Path) -> list[Path]:
    """Write the objects of ``parts`` (folders of the modality's files) into ``tmp`` as one
    set: by concatenating the files when the modality's files allow it, else by reading all
    parts back and writing them once. ``scratch``: where the concatenation check writes."""
    lists = [_files_of(p) for p in parts]
    if not parts or not lists[0]:
        raise ValueError(f"{parts[0] if parts else scratch}: the modality wrote no files")
    if len(parts) == 1 or all(lst == lists[0] for lst in lists):
        skips = {rel: 0 for rel in lists[0]} if len(parts) == 1 else _concatenation(modality, parts, lists[0],
                                                                                    scratch)
        if skips is not None:
            out = []
            for rel in lists[0]:
                dst = tmp / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                with open(dst, "wb") as f:
                    for i, part in enumerate(parts):
                        with open(part / rel, "rb") as src:
                            if i:
                                src.seek(skips[rel])
                            shutil.copyfileobj(src, f, 1 << 20)
                out.append(dst)
            return out
    objects = _concat([modality.read(p) for p in parts])
    return [Path(p) for p in modality.write(objects, tmp)]


def _files_of(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def _concatenation(modality: Modality, parts: Sequence[Path], names: Sequence[str],
                   scratch: Path) -> dict[str, int] | None:
    """How to concatenate the parts' files (file -> bytes of its header line to drop from
    every part after the first), or None when the modality's files cannot be concatenated.

    The check: the objects of the first part(s) written whole must equal, file by file, their
    two halves written apart and joined (the second one's first line dropped when both halves
    start with the same line, a header). Only files the whole write makes may be joined."""
    objects = modality.read(parts[0])
    if len(objects) < 2 and len(parts) > 1:
        objects = _concat([objects, modality.read(parts[1])])
    if len(objects) < 2:
        return None
    half = len(objects) // 2
    probe = Path(tempfile.mkdtemp(prefix=_PROBE, dir=scratch))
    try:
        written = {}
        for key, objs in (("a", objects[:half]), ("b", objects[half:]), ("ab", objects)):
            (probe / key).mkdir()
            modality.write(objs, probe / key)
            written[key] = _files_of(probe / key)
        if not written["a"] == written["b"] == written["ab"] == list(names):
            return None
        skips = {}
        for rel in names:
            a, b, ab = ((probe / k / rel).read_bytes() for k in ("a", "b", "ab"))
            if ab == a + b:
                skips[rel] = 0
                continue
            head = a[: a.find(b"\n") + 1] if b"\n" in a else None
            if not head or not b.startswith(head) or ab != a + b[len(head):]:
                return None
            for part in parts:  # every part must start with the same header line
                with open(part / rel, "rb") as f:
                    if f.read(len(head)) != head:
                        return None
            skips[rel] = len(head)
        return skips
    finally:
        shutil.rmtree(probe, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------

def as_device(device: str | torch.device) -> torch.device:
    """``device`` as a torch device, refused clearly where this machine has no such device
    (rather than torch's assertion deep in the first transfer)."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device {device!r} is not a torch device (e.g. 'cpu', 'cuda', 'cuda:1', 'mps')") from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"device {str(device)!r}: torch sees no CUDA GPU on this machine "
                             f"(torch {torch.__version__}); use device='cpu'")
        if dev.index is not None and dev.index >= count:
            raise ValueError(f"device {str(device)!r}: this machine has {count} CUDA GPU(s), "
                             f"cuda:0 to cuda:{count - 1}")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {str(device)!r}: MPS is not available on this machine; use device='cpu'")
    return dev


_GENERATE_WORDS = ("n", "sampler", "steps", "seed", "condition", "batch_size", "device", "progress", "settings",
                   "control", "options", "overwrite", "resume", "plot", "metadata")


def _check_keywords(options: Mapping[str, Any], sampler: str) -> None:
    """A keyword that is neither a setting nor an option of ``sampler`` but close to one of
    generate's own words is a misspelling: say so, rather than blame the sampler."""
    from .samplers.base import SETTING_NAMES

    accepted = set(get_sampler(sampler).defaults) if sampler in SAMPLERS else set()
    any_sampler = {k for name in SAMPLERS for k in get_sampler(name).defaults}  # another sampler's: its error
    words = [*_GENERATE_WORDS, *SETTING_NAMES, *CONTROL_NAMES]
    for key in options:
        if key in accepted or key in words or key in any_sampler:
            continue
        close = difflib.get_close_matches(key, [*words, *sorted(any_sampler)], n=1, cutoff=0.75)
        if close and close[0] in words:  # nearest another sampler's option: the sampler's error says more
            raise TypeError(f"unknown keyword {key!r} (did you mean {close[0]!r}?); sampler {sampler!r} takes "
                            f"{', '.join(sorted(accepted)) or 'no options'}")


def _check_guided(spec: Mapping[str, Any], keys: Sequence[str], declared: Mapping[str, Any]) -> None:
    """Classifier-free guidance on conditions that no sample carries changes nothing (the
    conditional and unconditional predictions are the same): an error naming them."""
    from .conditions import NULL_CLASS

    def empty(k: str) -> bool:
        v = spec.get(k)
        if not isinstance(v, Tensor):
            return v is None
        return bool(torch.isnan(v).all()) if v.is_floating_point() else bool((v == NULL_CLASS).all())

    absent = [k for k in keys if k not in spec and k not in declared]
    if absent:
        raise ValueError(f"guidance_scale guides toward the condition {', '.join(map(repr, absent))}, which this "
                         "model's samples do not carry (the network is not conditioned on it)")
    missing = [k for k in keys if empty(k)]
    if missing:
        raise ValueError(f"guidance_scale guides toward the condition {', '.join(map(repr, missing))}, but no sample "
                         f"is given a value, so guidance would change nothing: pass condition={{{missing[0]!r}: ...}}")


def _block_seed(seed: int, block: int) -> int:
    """The seed of prior block ``block`` of a request seeded ``seed`` (block 0: ``seed``)."""
    if block == 0:
        return seed
    h = hashlib.sha256(f"polydiff-prior:{seed}:{block}".encode()).digest()
    return int.from_bytes(h[:8], "little") >> 1


def _slice_condition(condition: Mapping[str, Any] | None, n: int, lo: int, hi: int) -> Mapping[str, Any] | None:
    """The conditions of samples ``[lo, hi)``: values with one entry per sample are cut."""
    if not condition or (lo == 0 and hi == n):
        return condition
    out = {}
    for k, v in condition.items():
        per_sample = (isinstance(v, (Tensor, np.ndarray)) and v.ndim and v.shape[0] == n) or \
            (isinstance(v, (list, tuple)) and len(v) == n)
        if per_sample:
            v = v[lo:hi]
        out[k] = v
    return out


def _slice(v: Any, n: int, lo: int, hi: int) -> Any:
    """Part [lo, hi) of one entry of a prior-state spec for ``n`` samples."""
    if isinstance(v, Tensor) and v.dim() and v.shape[0] == n:
        return v[lo:hi]
    if isinstance(v, (tuple, list, torch.Size)) and len(v) and v[0] == n and all(isinstance(d, int) for d in v):
        return (hi - lo, *tuple(v)[1:])
    return v


def _join(pieces: Sequence[Mapping[str, Any]], sizes: Sequence[int]) -> dict[str, Any]:
    """Prior specs of consecutive sample ranges (of ``sizes``) joined into one."""
    out = {}
    for k, v in pieces[0].items():
        if isinstance(v, Tensor) and v.dim() and v.shape[0] == sizes[0]:
            out[k] = torch.cat([p[k] for p in pieces])
        elif isinstance(v, tuple) and len(v) and v[0] == sizes[0] and all(isinstance(d, int) for d in v):
            out[k] = (sum(sizes), *v[1:])
        else:
            out[k] = v
    return out


def _concat(parts: Sequence[Any]) -> Any:
    """Join per-chunk outputs of ``to_native``: arrays, tensors or lists."""
    first = parts[0]
    if len(parts) == 1:
        return first
    if isinstance(first, np.ndarray):
        return np.concatenate(parts)
    if isinstance(first, Tensor):
        return torch.cat(list(parts))
    return [obj for p in parts for obj in p]


def _tensor_digest(t: Tensor) -> str:
    flat = t.detach().to("cpu").contiguous().reshape(-1)
    return hashlib.sha256(flat.view(torch.uint8).numpy().tobytes()).hexdigest()[:32]


def _weights_digest(net: nn.Module) -> str:
    """A fingerprint of a network's weights (names, dtypes, shapes and values)."""
    h = hashlib.sha256()
    for name, t in sorted(net.state_dict().items()):
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}:".encode())
        h.update(_tensor_digest(t).encode())
    return h.hexdigest()[:32]


def _canonical(obj: Any) -> Any:
    """``obj`` as comparable JSON: tensors and arrays by dtype, shape and digest, dataclasses
    and mappings as sorted dicts, functions by name."""
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else repr(obj)
    if isinstance(obj, (np.integer, np.floating, np.bool_)):
        return _canonical(obj.item())
    if isinstance(obj, Tensor):
        return {"tensor": str(obj.dtype), "shape": list(obj.shape), "digest": _tensor_digest(obj)}
    if isinstance(obj, np.ndarray):
        if obj.dtype == object:
            return [_canonical(v) for v in obj.tolist()]
        return {"array": str(obj.dtype), "shape": list(obj.shape),
                "digest": hashlib.sha256(np.ascontiguousarray(obj).tobytes()).hexdigest()[:32]}
    if isinstance(obj, (torch.dtype, torch.device, Path)):
        return str(obj)
    if is_dataclass(obj) and not isinstance(obj, type):
        return {"type": type(obj).__qualname__, **{f.name: _canonical(getattr(obj, f.name)) for f in fields(obj)}}
    if isinstance(obj, Mapping):
        return {str(k): _canonical(v) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, (list, tuple, set, frozenset)):
        items = sorted(obj, key=repr) if isinstance(obj, (set, frozenset)) else obj
        return [_canonical(v) for v in items]
    if callable(obj):
        return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', type(obj).__qualname__)}"
    return repr(obj)


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:32]


def _differences(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> str:
    """``key.path: old (now new)`` for each entry that differs, nested mappings followed down to
    the values that differ (a changed ``settings.steps`` is named, not the whole settings)."""
    def short(v: Any) -> str:
        text = json.dumps(v, sort_keys=True) if not isinstance(v, str) else v
        return text if len(text) <= 60 else text[:57] + "..."

    parts = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if a == b:
            continue
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            parts.append(_differences(a, b, f"{prefix}{k}."))
        else:
            parts.append(f"{prefix}{k}: {short(a)} (now {short(b)})")
    return "; ".join(parts)
