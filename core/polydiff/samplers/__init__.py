"""Samplers: pure step functions over an explicit grid, and the loop that drives them."""

from . import categorical, dpm, gaussian, multistep  # noqa: F401  (registers the built-in samplers)
from .base import SAMPLERS, SamplerDef, StepContext, get_sampler, register
from .calibrate import calibrate_grid
from .categorical import first_hitting
from .driver import SamplingLoop, prepare, run, sample
from .timeshift import time_shift

__all__ = ["SAMPLERS", "SamplerDef", "SamplingLoop", "StepContext", "calibrate_grid", "first_hitting", "get_sampler",
           "prepare", "register", "run", "sample", "time_shift"]
