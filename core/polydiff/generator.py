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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .checkpoints import CheckpointError, load_checkpoint, load_network, network_weights, save_checkpoint_file
from .config import DRIVER_OPTIONS, Config, build_data, from_dict
from .files import atomic_folder
from .modality import Modality
from .registry import load_modality
from .samplers.base import SampleSettings, settings_of
from .state import FieldSpec, State
from .steering import CONTROL_NAMES, Control, control_of

METADATA_FILE = "polydiff.json"
_SEED_STRIDE = 1_000_003  # sample b of a request seeded s gets seed s * stride + b (as polydiff.random.Noise)

# re-exported for code written against the older layout (checkpoint I/O lives in polydiff.checkpoints)
__all__ = [
    "METADATA_FILE",
    "CheckpointError",
    "Evaluation",
    "Generator",
    "evaluate_samples",
    "load",
    "load_checkpoint",
    "network_weights",
    "save_checkpoint_file",
]


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
        got = load_network(path, ema)
        gen = cls(got.modality, got.config, got.info, got.fields, got.net, checkpoint=got.path, step=got.step)
        return gen.to(device) if device is not None else gen

    def to(self, device: str | torch.device) -> Generator:
        self.net.to(device)
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
        base = dict(sc.options) if sampler in (None, sc.sampler) else {k: v for k, v in sc.options.items()
                                                                       if k in DRIVER_OPTIONS}
        return settings_of(SampleSettings(sampler=sc.sampler, steps=sc.steps), **base, sampler=sampler, steps=steps,
                           **options)

    def sample_states(self, n: int, sampler: str | None = None, steps: int | None = None, seed: int | None = None,
                      condition: Mapping[str, Any] | None = None, batch_size: int | None = None,
                      device: str | torch.device | None = None, **options: Any) -> State:
        """``n`` generated states, concatenated on the CPU (see :meth:`generate`)."""
        parts = list(self._chunks(n, sampler, steps, seed, condition, batch_size, device, options))
        return {k: torch.cat([p[k] for p in parts]) if isinstance(v, Tensor) and v.dim() else v
                for k, v in parts[0].items()}

    def generate(self, n: int, sampler: str | None = None, steps: int | None = None, seed: int | None = None,
                 condition: Mapping[str, Any] | None = None, batch_size: int | None = None,
                 device: str | torch.device | None = None, **options: Any) -> Any:
        """``n`` new objects in the modality's own form (e.g. an (n, D) array of points).

        ``sampler`` / ``steps`` default to the recipe's ``sample`` section; ``seed=None`` draws a
        fresh seed. Sample ``i`` is seeded by ``(seed, i)``, so the result does not depend on
        ``batch_size`` (the number generated at once). ``condition`` goes to the modality's
        ``prior_state`` (e.g. ``{"label": 3}``). Other keywords: a ``settings=``
        :class:`~polydiff.SampleSettings` or its fields (grid, t_min, dtype, ...), sampler
        options (``eta``, ...), and a ``control=`` :class:`~polydiff.steering.Control` or its
        fields (``guidance_scale`` guides on the keys of ``condition``; ``observed``,
        ``particles``, ``reward``, ...). The modality's :meth:`~polydiff.Modality.sample`
        generates each chunk.
        """
        parts = [self.modality.to_native(st, self.info)
                 for st in self._chunks(n, sampler, steps, seed, condition, batch_size, device, options)]
        return _concat(parts)

    def _chunks(self, n: int, sampler: str | None, steps: int | None, seed: int | None,
                condition: Mapping[str, Any] | None, batch_size: int | None, device: Any,
                options: Mapping[str, Any]):
        """Generate in chunks of ``batch_size``; yields each chunk's final state (on the CPU)."""
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        options = dict(options)
        ctl = control_of(options.pop("control", None), **{k: options.pop(k) for k in list(options)
                                                          if k in CONTROL_NAMES})
        if ctl.guidance_scale is not None and condition and ctl.condition_keys is None:
            ctl = control_of(ctl, condition_keys=list(condition))  # guide on the conditions asked for
        given = options.pop("settings", None)
        settings = settings_of(given, sampler=sampler, steps=steps, **options) if given is not None else \
            self.settings(sampler, steps, **options)
        if seed is None:
            seed = int(torch.randint(0, 2**31 - 1, (1,)).item())
        dev = torch.device(device) if device is not None else (
            torch.device("cuda") if torch.cuda.is_available() else self.device)
        self.net.to(dev)
        batch_size = batch_size or self.config.sample.batch_size or min(n, 1024)
        spec = self.modality.prior_state(n, self.info, torch.Generator().manual_seed(seed), condition)
        for lo in range(0, n, batch_size):
            hi = min(n, lo + batch_size)
            seeds = seed * _SEED_STRIDE + torch.arange(lo, hi, dtype=torch.long)
            part = {k: _slice(v, n, lo, hi) for k, v in spec.items()}
            state = self._sample(part, settings, ctl, seeds, dev)
            yield {k: v.detach().cpu() if isinstance(v, Tensor) else v for k, v in state.items()}

    def _sample(self, spec: Mapping[str, Any], settings: SampleSettings, control: Control, seeds: Tensor,
                device: torch.device) -> State:
        """One call of the modality's :meth:`~polydiff.Modality.sample` hook (by default
        :func:`polydiff.steering.controlled_sample`, exactly :func:`polydiff.sample` unless
        guidance, inpainting or steering is asked for). Gradient guidance turns gradients back
        on inside its own wrapper."""
        with torch.no_grad():
            return self.modality.sample(self.net, self.fields, spec, settings, control, seed=seeds, device=device)

    def calibrate_grid(self, steps: int, sampler: str | None = None, *, pilot: int = 256, seed: int = 0,
                       condition: Mapping[str, Any] | None = None, device: str | torch.device | None = None,
                       **options: Any) -> Tensor:
        """A ``steps``-step time grid for ``sampler`` fitted to this model on ``pilot`` samples
        (:func:`polydiff.samplers.calibrate_grid`); pass it back as ``generate(..., grid=grid)``.
        Worth it for few-step sampling (5-20 NFE) of deterministic samplers."""
        from .samplers.calibrate import calibrate_grid

        st = self.settings(sampler, **options)
        dev = torch.device(device) if device is not None else self.device
        self.net.to(dev)
        spec = self.modality.prior_state(pilot, self.info, torch.Generator().manual_seed(seed), condition)
        spec = {k: v.to(dev) if isinstance(v, Tensor) else v for k, v in spec.items()}
        with torch.no_grad():
            return calibrate_grid(self.net, self.fields, spec, steps, sampler=st.sampler, seed=seed, grid=st.grid,
                                  t_max=st.t_max, t_min=st.t_min, final_zero=st.final_zero, **st.options)

    # -- files and metrics --
    def save(self, objects: Any, out_dir: str | Path, *, overwrite: bool = False, plot: bool = False,
             metadata: Mapping[str, Any] | None = None) -> list[Path]:
        """Write ``objects`` with the modality's writer into ``out_dir``, plus a small
        ``polydiff.json`` (modality, info, recipe) that ``polydiff evaluate DIR`` reads.

        Everything is written into a temporary folder that is renamed into place at the end:
        a failure leaves any existing ``out_dir`` untouched. An existing non-empty ``out_dir``
        is replaced only with ``overwrite=True``.
        """
        with atomic_folder(out_dir, overwrite=overwrite) as tmp:
            paths = [Path(p) for p in self.modality.write(objects, tmp)]
            if plot:
                png = self.plot(objects, tmp / "samples.png")
                paths += [png] if png is not None else []
            meta = {"modality": self.modality.name, "checkpoint": str(self.checkpoint) if self.checkpoint else None,
                    "step": self.step, "num": len(objects), "files": [str(p.relative_to(tmp)) for p in paths],
                    **dict(metadata or {}), "info": self.info, "config": self.config.to_dict()}
            (tmp / METADATA_FILE).write_text(json.dumps(meta, indent=1, default=str))
        out = Path(out_dir)
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


@dataclass
class Evaluation:
    """Metrics of a set of objects, with the per-sample flags the modality reports."""

    metrics: dict[str, float]
    flags: dict[str, list[Any]]
    num: int
    modality: str


def evaluate_samples(target: str | Path, config: Config | None = None, *, modality: str | None = None,
                     reference: str | Path | None = None) -> Evaluation:
    """Metrics of native files: a folder written by ``polydiff sample`` or any folder / file of
    the modality's native files written by another tool.

    The modality is ``modality``, else the recipe's (``config``), else the one named in the
    folder's ``polydiff.json``. The reference objects are read from ``reference`` (a file or
    folder of native files) when given, else taken from the recipe's data (``config``, else the
    recipe stored in ``polydiff.json``), else from the modality's embedded default dataset.
    """
    target = Path(target)
    if not target.exists():
        raise FileNotFoundError(f"{target}: no such file or folder")
    meta_file = target / METADATA_FILE if target.is_dir() else None
    meta: dict[str, Any] = json.loads(meta_file.read_text()) if meta_file is not None and meta_file.is_file() else {}
    name = modality or (config.modality if config is not None else None) or meta.get("modality")
    if name is None:
        raise ValueError(f"{target}: not a folder written by `polydiff sample` (no {METADATA_FILE}); say which "
                         "modality its files are with --modality NAME (see `polydiff modalities`)")
    mod = load_modality(name)
    cfg = config
    if cfg is None and meta.get("config") and meta.get("modality") == name:
        cfg = from_dict(meta["config"], source=f"{meta_file} (stored recipe)")
    if reference is not None:
        ref_objects = mod.read(Path(reference))
        info = (meta.get("info") if meta.get("modality") == name else None) or {}
    else:
        data = build_data(cfg, mod) if cfg is not None else mod.dataset()
        ref_objects = mod.reference(data)
        info = meta.get("info") if meta.get("modality") == name and meta.get("info") else data.info
    objects = mod.read(target)
    metrics = mod.evaluate(objects, ref_objects, info)
    flags = {k: list(v) for k, v in mod.flags(objects, info).items()}
    for k, v in flags.items():
        if len(v) != len(objects):
            raise ValueError(f"modality {name!r}: per-sample flag {k!r} has {len(v)} values for {len(objects)} objects")
    return Evaluation(metrics, flags, len(objects), name)


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
