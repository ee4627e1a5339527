"""polydiff: one diffusion / flow-matching core for many modalities.

The public API that first- and third-party modality plugins use alike.
"""

from __future__ import annotations

from .grids import GRIDS, make_grid
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
from .samplers import SAMPLERS, first_hitting, sample
from .state import FieldSpec, Packer, State
from .structures import Masked, Plain, Symmetric, ZeroCoM

__version__ = "0.1.0"

__all__ = [
    "EDM", "GRIDS", "SAMPLERS", "SCHEDULES", "VE", "Absorbing", "FieldSpec", "GaussianProcess", "GeodesicFlow",
    "LinearInterpolant", "Masked", "Noise", "Packer", "Plain", "Registry", "RegistryError", "State",
    "StochasticInterpolant", "SubVP", "Symmetric", "Uniform", "VPCosine", "VPLinear", "ZeroCoM",
    "available_modalities", "first_hitting", "load_modality", "make_grid", "sample",
]
