"""Samplers: pure step functions over an explicit grid, and the loop that drives them.

- :mod:`.base`: the step signatures, :class:`SampleSettings` and the sampler registry;
- :mod:`.coefs`: coefficient maths shared by the methods (phi functions, log-SNR steps,
  Lagrange weights, whole-grid coefficient tables);
- :mod:`.plan`: the time grid of a run and its precomputed schedule values;
- :mod:`.driver`: the loop (:class:`SamplingLoop`, :func:`sample`);
- methods: :mod:`.gaussian`, :mod:`.dpm`, :mod:`.multistep`, :mod:`.categorical`.
"""

from . import categorical, ctm, dpm, gaussian, multistep  # noqa: F401  (registers the built-in samplers)
from .base import (
    SAMPLERS,
    CategoricalContext,
    SamplerDef,
    SampleSettings,
    StepContext,
    for_budget,
    get_sampler,
    register,
    settings_of,
)
from .calibrate import calibrate_grid
from .categorical import first_hitting
from .driver import SamplingLoop, prepare, run, sample
from .plan import GridPlan
from .timeshift import time_shift

__all__ = ["SAMPLERS", "CategoricalContext", "GridPlan", "SampleSettings", "SamplerDef", "SamplingLoop", "StepContext",
           "calibrate_grid", "first_hitting", "for_budget", "get_sampler", "prepare", "register", "run", "sample",
           "settings_of", "time_shift"]
