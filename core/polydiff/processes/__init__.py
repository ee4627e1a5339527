"""Forward processes, one per field: Gaussian (affine), categorical and manifold."""

from .categorical import MASK_SCHEDULES, Absorbing, CategoricalProcess, CosineMask, LinearMask, MaskSchedule, Uniform
from .gaussian import (
    EDM,
    SCHEDULES,
    VE,
    Coefs,
    DiscreteVP,
    GaussianProcess,
    LinearInterpolant,
    Schedule,
    StochasticInterpolant,
    SubVP,
    VPCosine,
    VPLinear,
    expand_t,
    vp_discrete,
)
from .manifold import Euclidean, FlatTorus, GeodesicFlow, Manifold

__all__ = [
    "EDM", "MASK_SCHEDULES", "SCHEDULES", "VE", "Absorbing", "CategoricalProcess", "Coefs", "CosineMask",
    "DiscreteVP", "Euclidean", "FlatTorus", "GaussianProcess", "GeodesicFlow", "LinearInterpolant", "LinearMask",
    "Manifold", "MaskSchedule", "Schedule", "StochasticInterpolant", "SubVP", "Uniform", "VPCosine", "VPLinear",
    "expand_t", "vp_discrete",
]
