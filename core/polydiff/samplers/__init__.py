"""Samplers: pure step functions over an explicit grid, and the loop that drives them."""

from . import categorical, gaussian  # noqa: F401  (registers the built-in samplers)
from .base import SAMPLERS, SamplerDef, StepContext, get_sampler, register
from .categorical import first_hitting
from .driver import SamplingLoop, prepare, run, sample

__all__ = ["SAMPLERS", "SamplerDef", "StepContext", "first_hitting", "get_sampler", "register", "run", "sample", "SamplingLoop", "prepare"]
