"""Trained models as generators: load a checkpoint, generate, save, evaluate.

``polydiff.load(path)`` opens a checkpoint written by :func:`polydiff.train` with
``torch.load(weights_only=True)`` (a checkpoint cannot run code when opened), rebuilds the
modality, its fields and its network from the recipe and data ``info`` stored inside, and
loads the EMA weights when there are any. :meth:`Generator.generate` then turns noise into
the modality's own objects; every sample has its own seed, so results do not depend on the
batch size (``generate(10, seed=0)[:5]`` equals ``generate(5, seed=0)``).
"""

from __future__ import annotations

import inspect
import json
import os
import pickle
import re
import shutil
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .config import DRIVER_OPTIONS, Config, build_data, build_fields, build_network, from_dict
from .modality import Modality
from .registry import load_modality
from .state import FieldSpec, State
from .steering import controlled_sample

METADATA_FILE = "polydiff.json"
_SEED_STRIDE = 1_000_003  # sample b of a request seeded s gets seed s * stride + b (as polydiff.random.Noise)


class CheckpointError(ValueError):
    """A checkpoint that cannot be (safely) loaded."""


# ---------------------------------------------------------------------------------------------
# checkpoint files
# ---------------------------------------------------------------------------------------------

def save_checkpoint_file(obj: Mapping[str, Any], path: str | Path) -> Path:
    """``torch.save`` to a temporary file in the same folder, then ``os.replace``: a reader
    never sees a half-written checkpoint, and a crash leaves the previous file intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | Path, map_location: Any = "cpu", mmap: bool = False) -> dict[str, Any]:
    """Load a checkpoint with ``torch.load(weights_only=True)``; refuse anything else clearly.
    ``mmap=True`` maps tensors lazily (cheap when only the metadata is needed)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL ([\w.]+)", str(err))
        if found is None:  # not a pickle of objects at all
            raise CheckpointError(f"{path}: not a readable checkpoint (not a torch.save file)") from None
        detail = f"it references {found.group(1)}"
        raise CheckpointError(
            f"{path}: refusing to load: the file holds Python objects besides tensors and plain containers, "
            f"and polydiff opens checkpoints only with torch.load(weights_only=True) so that loading cannot run "
            f"code ({detail})") from None
    except (RuntimeError, EOFError, OSError) as err:
        raise CheckpointError(f"{path}: not a readable checkpoint ({str(err).splitlines()[0]})") from None
    if not isinstance(ckpt, dict) or "polydiff" not in ckpt:
        raise CheckpointError(f"{path}: not a polydiff checkpoint (no 'polydiff' entry)")
    return ckpt


def network_weights(ckpt: Mapping[str, Any], ema: bool = True) -> dict[str, Tensor]:
    """The network's state dict from a checkpoint: the EMA copy when present and wanted."""
    sd = ckpt["state_dict"]
    prefix = "ema." if ema and any(k.startswith("ema.") for k in sd) else "net."
    return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}


# ---------------------------------------------------------------------------------------------
# the generator
# ---------------------------------------------------------------------------------------------

class Generator:
    """A trained network with everything needed to sample it and handle its outputs."""

    def __init__(self, modality: Modality, config: Config, info: Mapping[str, Any], fields: Mapping[str, FieldSpec],
                 net: nn.Module, *, checkpoint: Path | None = None, step: int | None = None) -> None:
        self.modality, self.config, self.info = modality, config, dict(info)
        self.fields, self.net = dict(fields), net.eval()
        self.checkpoint, self.step = checkpoint, step
        self._reference: Any = None

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device | None = None,
                        ema: bool = True) -> Generator:
        path = Path(path)
        ckpt = load_checkpoint(path)
        meta = ckpt["polydiff"]
        cfg = from_dict(meta["config"], source=f"{path} (stored recipe)")
        modality = load_modality(cfg.modality)
        info = meta["info"]
        fields = build_fields(cfg, modality, info)
        net = build_network(cfg, modality, info, fields)
        try:
            net.load_state_dict(network_weights(ckpt, ema))
        except RuntimeError as err:
            raise CheckpointError(f"{path}: the stored weights do not fit the network the recipe builds: "
                                  f"{str(err).splitlines()[0]}") from None
        gen = cls(modality, cfg, info, fields, net, checkpoint=path, step=ckpt.get("global_step"))
        return gen.to(device) if device is not None else gen

    def to(self, device: str | torch.device) -> Generator:
        self.net.to(device)
        return self

    @property
    def device(self) -> torch.device:
        p = next(self.net.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    # -- sampling --
    def sample_states(self, n: int, sampler: str | None = None, steps: int | None = None, seed: int | None = None,
                      condition: Mapping[str, Any] | None = None, batch_size: int | None = None,
                      device: str | torch.device | None = None, **sampler_options: Any) -> State:
        """``n`` generated states, concatenated on the CPU (see :meth:`generate`)."""
        parts = list(self._chunks(n, sampler, steps, seed, condition, batch_size, device, sampler_options))
        return {k: torch.cat([p[k] for p in parts]) if isinstance(v, Tensor) and v.dim() else v
                for k, v in parts[0].items()}

    def generate(self, n: int, sampler: str | None = None, steps: int | None = None, seed: int | None = None,
                 condition: Mapping[str, Any] | None = None, batch_size: int | None = None,
                 device: str | torch.device | None = None, **sampler_options: Any) -> Any:
        """``n`` new objects in the modality's own form (e.g. an (n, D) array of points).

        ``sampler`` / ``steps`` default to the recipe's ``sample`` section; ``seed=None`` draws a
        fresh seed. Sample ``i`` is seeded by ``(seed, i)``, so the result does not depend on
        ``batch_size`` (the number generated at once). ``condition`` goes to the modality's
        ``prior_state`` (e.g. ``{"label": 3}``). Other keywords go to
        :func:`polydiff.steering.controlled_sample` and :func:`polydiff.sample`: sampler options
        (``eta``, ...), grid settings, ``dtype``, ``callback``, ``wrap_model``, and guidance /
        steering (``guidance_scale`` guides on the keys of ``condition``; ``observed``,
        ``particles``, ``reward``, ...).
        """
        parts = [self.modality.to_native(st, self.info)
                 for st in self._chunks(n, sampler, steps, seed, condition, batch_size, device, sampler_options)]
        return _concat(parts)

    def _chunks(self, n: int, sampler: str | None, steps: int | None, seed: int | None,
                condition: Mapping[str, Any] | None, batch_size: int | None, device: Any,
                options: Mapping[str, Any]):
        """Generate in chunks of ``batch_size``; yields each chunk's final state (on the CPU)."""
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        sc = self.config.sample
        sampler = sampler or sc.sampler
        steps = steps or sc.steps
        base = dict(sc.options) if sampler == sc.sampler else {k: v for k, v in sc.options.items()
                                                               if k in DRIVER_OPTIONS}
        options = {**base, **options}
        if options.get("guidance_scale") is not None and condition and "condition_keys" not in options:
            options["condition_keys"] = list(condition)  # guide on the conditions asked for
        if seed is None:
            seed = int(torch.randint(0, 2**31 - 1, (1,)).item())
        dev = torch.device(device) if device is not None else (
            torch.device("cuda") if torch.cuda.is_available() else self.device)
        self.net.to(dev)
        batch_size = batch_size or sc.batch_size or min(n, 1024)
        spec = self.modality.prior_state(n, self.info, torch.Generator().manual_seed(seed), condition)
        for lo in range(0, n, batch_size):
            hi = min(n, lo + batch_size)
            seeds = seed * _SEED_STRIDE + torch.arange(lo, hi, dtype=torch.long)
            part = {k: _slice(v, n, lo, hi) for k, v in spec.items()}
            state = self._sample(part, sampler, steps, seeds, dev, options)
            yield {k: v.detach().cpu() if isinstance(v, Tensor) else v for k, v in state.items()}

    def _sample(self, spec: Mapping[str, Any], sampler: str, steps: int, seeds: Tensor, device: torch.device,
                options: Mapping[str, Any]) -> State:
        """One call of :func:`polydiff.steering.controlled_sample` (exactly :func:`polydiff.sample`
        unless guidance, inpainting or steering keywords are given). Gradient guidance turns
        gradients back on inside its own wrapper.

        A network that samples with a loop of its own (e.g. block by block, as PARD does)
        defines ``generate(spec, *, sampler, steps, seed, device, **options) -> state``; it is
        called instead, with the same prior ``spec`` and per-sample ``seed`` tensor."""
        own = getattr(self.net, "generate", None)
        with torch.no_grad():
            if callable(own):
                return own(spec, sampler=sampler, steps=steps, seed=seeds, device=device, **options)
            return controlled_sample(self.net, self.fields, spec, sampler=sampler, steps=steps, seed=seeds,
                                     device=device, **options)

    def calibrate_grid(self, steps: int, sampler: str | None = None, *, pilot: int = 256, seed: int = 0,
                       condition: Mapping[str, Any] | None = None, device: str | torch.device | None = None,
                       **options: Any) -> Tensor:
        """A ``steps``-step time grid for ``sampler`` fitted to this model on ``pilot`` samples
        (:func:`polydiff.samplers.calibrate_grid`); pass it back as ``generate(..., grid=grid)``.
        Worth it for few-step sampling (5-20 NFE) of deterministic samplers."""
        from .samplers.calibrate import calibrate_grid

        sc = self.config.sample
        sampler = sampler or sc.sampler
        base = dict(sc.options) if sampler == sc.sampler else {k: v for k, v in sc.options.items()
                                                               if k in DRIVER_OPTIONS}
        dev = torch.device(device) if device is not None else self.device
        self.net.to(dev)
        spec = self.modality.prior_state(pilot, self.info, torch.Generator().manual_seed(seed), condition)
        spec = {k: v.to(dev) if isinstance(v, Tensor) else v for k, v in spec.items()}
        with torch.no_grad():
            return calibrate_grid(self.net, self.fields, spec, steps, sampler=sampler, seed=seed,
                                  **{**base, **options})

    # -- files and metrics --
    def save(self, objects: Any, out_dir: str | Path, *, overwrite: bool = False, plot: bool = False,
             metadata: Mapping[str, Any] | None = None) -> list[Path]:
        """Write ``objects`` with the modality's writer into ``out_dir``, plus a small
        ``polydiff.json`` (modality, info, recipe) that ``polydiff evaluate DIR`` reads.

        Everything is written into a temporary folder that is renamed into place at the end:
        a failure leaves any existing ``out_dir`` untouched. An existing non-empty ``out_dir``
        is replaced only with ``overwrite=True``.
        """
        out = Path(out_dir)
        if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
            raise FileExistsError(f"{out} already exists and is not empty (choose another output folder "
                                  "or overwrite it)")
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            paths = [Path(p) for p in self.modality.write(objects, tmp)]
            if plot:
                png = self.plot(objects, tmp / "samples.png")
                paths += [png] if png is not None else []
            meta = {"modality": self.modality.name, "checkpoint": str(self.checkpoint) if self.checkpoint else None,
                    "step": self.step, "num": len(objects), "files": [str(p.relative_to(tmp)) for p in paths],
                    **dict(metadata or {}), "info": self.info, "config": self.config.to_dict()}
            (tmp / METADATA_FILE).write_text(json.dumps(meta, indent=1, default=str))
            _swap_in(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return [out / p.relative_to(tmp) for p in paths]

    def reference(self) -> Any:
        """Reference objects of the recipe's dataset (built once, then cached)."""
        if self._reference is None:
            self._reference = self.modality.reference(build_data(self.config, self.modality))
        return self._reference

    def evaluate(self, objects: Any, reference: Any = None) -> dict[str, float]:
        """The modality's metrics of ``objects`` against ``reference`` (default: the recipe's data)."""
        ref = self.reference() if reference is None else reference
        return self.modality.evaluate(objects, ref, self.info)

    def plot(self, objects: Any, path: str | Path) -> Path | None:
        """The modality's figure of ``objects`` (over the reference when the plot accepts one)."""
        if "reference" in inspect.signature(self.modality.plot).parameters:
            return self.modality.plot(objects, Path(path), reference=self.reference())
        return self.modality.plot(objects, Path(path))


def load(checkpoint: str | Path, device: str | torch.device | None = None, ema: bool = True) -> Generator:
    """Open a checkpoint as a :class:`Generator` (EMA weights unless ``ema=False``)."""
    return Generator.from_checkpoint(checkpoint, device=device, ema=ema)


def evaluate_samples(samples_dir: str | Path, config: Config | None = None) -> dict[str, float]:
    """Metrics of a folder written by :meth:`Generator.save`, against the reference data of the
    recipe stored in its ``polydiff.json`` (or of ``config`` when given)."""
    folder = Path(samples_dir)
    meta_file = folder / METADATA_FILE
    if not meta_file.is_file():
        if config is None:
            raise FileNotFoundError(f"{folder}: no {METADATA_FILE} (written by `polydiff sample`); "
                                    "pass --config RECIPE to say which data to compare with")
        meta: dict[str, Any] = {}
    else:
        meta = json.loads(meta_file.read_text())
    cfg = config if config is not None else from_dict(meta["config"], source=f"{meta_file} (stored recipe)")
    modality = load_modality(cfg.modality)
    data = build_data(cfg, modality)
    objects = modality.read(folder)
    return modality.evaluate(objects, modality.reference(data), meta.get("info", data.info))


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------

def _slice(v: Any, n: int, lo: int, hi: int) -> Any:
    """Part [lo, hi) of one entry of a prior-state spec for ``n`` samples."""
    if isinstance(v, Tensor) and v.dim() and v.shape[0] == n:
        return v[lo:hi]
    if isinstance(v, (tuple, list, torch.Size)) and len(v) and v[0] == n and all(isinstance(d, int) for d in v):
        return (hi - lo, *tuple(v)[1:])
    return v


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


def _swap_in(tmp: Path, out: Path) -> None:
    """Rename the finished folder ``tmp`` to ``out``, replacing an existing ``out`` last."""
    if not out.exists():
        os.rename(tmp, out)
        return
    old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
    os.rename(out, old)
    try:
        os.rename(tmp, out)
    except BaseException:
        os.rename(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)

