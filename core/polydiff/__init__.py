"""polydiff: one diffusion / flow-matching core for many modalities.

The public API that first- and third-party modality plugins use alike.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .version import __version__

# name -> module: imported on first use (PEP 562), so that `polydiff --help`, listings and
# recipe checks answer without importing torch
_LAZY = {
    "DataBundle": "data", "DatasetInfo": "data", "load": "generator", "GRIDS": "grids", "make_grid": "grids",
    "log_likelihood": "likelihood", "Modality": "modality", "Noise": "random",
    "Registry": "registry", "RegistryError": "registry", "available_modalities": "registry",
    "load_modality": "registry", "SAMPLERS": "samplers", "SampleSettings": "samplers",
    "calibrate_grid": "samplers", "first_hitting": "samplers", "sample": "samplers", "FieldSpec": "state",
    "Packer": "state", "State": "state", "Control": "steering", "controlled_sample": "steering", "steer": "steering",
    "Masked": "structures", "Plain": "structures", "Symmetric": "structures", "ZeroCoM": "structures",
    **dict.fromkeys(["EDM", "SCHEDULES", "VE", "Absorbing", "GaussianProcess", "GeodesicFlow", "LinearInterpolant",
                     "StochasticInterpolant", "SubVP", "Uniform", "VPCosine", "VPLinear"], "processes"),
}

if TYPE_CHECKING:  # for type checkers and IDEs; at run time these come from __getattr__
    from pathlib import Path

    from .data import DataBundle, DatasetInfo
    from .generator import load
    from .grids import GRIDS, make_grid
    from .likelihood import log_likelihood
    from .modality import Modality
    from .processes import (
        EDM,
        SCHEDULES,
        VE,
        Absorbing,
        GaussianProcess,
        GeodesicFlow,
        LinearInterpolant,
        StochasticInterpolant,
        SubVP,
        Uniform,
        VPCosine,
        VPLinear,
    )
    from .random import Noise
    from .registry import Registry, RegistryError, available_modalities, load_modality
    from .samplers import SAMPLERS, SampleSettings, calibrate_grid, first_hitting, sample
    from .state import FieldSpec, Packer, State
    from .steering import Control, controlled_sample, steer
    from .structures import Masked, Plain, Symmetric, ZeroCoM
    from .training import Run


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'polydiff' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "EDM", "GRIDS", "SAMPLERS", "SCHEDULES", "VE", "Absorbing", "Control", "DataBundle", "DatasetInfo", "FieldSpec",
    "GaussianProcess", "GeodesicFlow", "LinearInterpolant", "Masked", "Modality", "Noise", "Packer", "Plain",
    "Registry", "RegistryError", "SampleSettings", "State", "StochasticInterpolant", "SubVP", "Symmetric", "Uniform",
    "VPCosine", "VPLinear", "ZeroCoM", "__version__", "available_modalities", "calibrate_grid", "controlled_sample",
    "first_hitting", "load", "load_modality", "log_likelihood", "make_grid", "sample", "steer", "train",
]


def train(config: Any, out_dir: str | Path | None = None, *, overrides: Any = (), fresh: bool = False,
          callbacks: Any = (), verbose: bool = True) -> Run:
    """Train a recipe (a YAML path, ``"<modality>:<recipe>"``, a dict or a Config) into
    ``out_dir`` (default ``runs/<recipe name>``) and return the :class:`~polydiff.training.Run`.

    ``overrides``: recipe values as ``--set`` takes them (``["train.max_steps=100"]``) or as a
    dict (``{"train.max_steps": 100}``). A run folder holding checkpoints resumes from the
    newest intact one; ``fresh=True`` deletes its checkpoints and logs and starts over.
    ``callbacks``: extra Lightning callbacks. ``verbose=False`` drops the messages (model
    summary, what the run resumes from) but keeps the progress bar (``train.progress: false``
    turns it off). Details: :func:`polydiff.training.train` (imported lazily, so that
    ``import polydiff`` does not import Lightning)."""
    from .training import train as _train

    return _train(config, out_dir, overrides=overrides, fresh=fresh, callbacks=callbacks, verbose=verbose)
