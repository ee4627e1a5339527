"""polydiff: one diffusion / flow-matching core for many modalities.

The public API that first- and third-party modality plugins use alike.
"""

from __future__ import annotations

from . import distill  # noqa: F401  (registers the "ctm" training objective)
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
from .version import __version__

__all__ = [
    "EDM", "GRIDS", "SAMPLERS", "SCHEDULES", "VE", "Absorbing", "Control", "DataBundle", "DatasetInfo", "FieldSpec",
    "GaussianProcess", "GeodesicFlow", "LinearInterpolant", "Masked", "Modality", "Noise", "Packer", "Plain",
    "Registry", "RegistryError", "SampleSettings", "State", "StochasticInterpolant", "SubVP", "Symmetric", "Uniform",
    "VPCosine", "VPLinear", "ZeroCoM", "__version__", "available_modalities", "calibrate_grid", "controlled_sample",
    "first_hitting", "load", "load_modality", "log_likelihood", "make_grid", "sample", "steer", "train",
]


def train(config, out_dir=None, **options):
    """Train a recipe (a YAML path, a dict or a Config); see :func:`polydiff.training.train`.

    Imported lazily so that ``import polydiff`` does not import Lightning.
    """
    from .training import train as _train

    return _train(config, out_dir, **options)
