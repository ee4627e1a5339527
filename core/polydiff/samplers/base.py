"""The shared signature of sampler steps, and the sampler registry.

A Gaussian step is a pure function

    step(x, d, e, ct, cs, hist, ctx) -> (x_next, hist)

over the packed (B, D) state ``x`` at time ``t``, with the model's clean estimate ``d`` and
noise estimate ``e`` at ``(x, t)``, the schedule values ``ct`` / ``cs`` at ``t`` and at the
target time ``s`` (see :class:`polydiff.processes.Coefs`), the method's history ``hist``
(``None`` at the first step; carried explicitly, never stored on an object) and a
:class:`StepContext` with everything else: the step index, extra model evaluations for
multi-stage methods, fresh structured noise and the method's options. Nothing in a step
reads a tensor back to the host.

Coefficients that depend only on the grid (log-SNR steps, phi functions, multistep weights)
can be computed for every step at once: a method writes them as a function of stacked schedule
values and reads them through :func:`polydiff.samplers.coefs.coef_table`, which evaluates that
function once per grid (a handful of tensor operations instead of dozens per step) or, off the
grid, directly at the step's own values.

A categorical step is ``step(tokens, p0, t, s, process, ctx) -> tokens`` with the model's
clean-token probabilities ``p0`` (B, ..., V), (B,) times and a :class:`CategoricalContext`
(noise, options, the state, the field's mask). A sampler registered with ``loop="own"``
(first-hitting) has no grid: it is run by its own loop over the whole state.

:class:`SampleSettings` gathers how a run walks from noise to data (sampler, steps, grid, end
times, categorical method, solver dtype, the sampler's options); every sampling entry point
takes one, or the same names as keywords.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch import Tensor

from ..processes.gaussian import Coefs
from ..registry import Registry, RegistryError, ValueMismatch, check_value, is_plain, no_option, whole_number


class StepContext(NamedTuple):
    """Everything a step may need beyond its tensors."""

    i: int  # step index, 0-based
    n: int  # number of steps in the grid
    t: Tensor  # current time: scalar or (B,)
    s: Tensor  # target time
    # (x, u[, x0=False]) -> (d, e): one more model call; x0=False when only e is used: (None, e)
    denoise: Callable[..., tuple[Tensor | None, Tensor]]
    coefs: Callable[[Tensor], Coefs]  # schedule values at any time, packed like x
    noise: Callable[[], Tensor]  # fresh structured N(0, I) noise, packed like x
    field_norm: Callable[[Tensor], Tensor]  # per-sample, per-field L2 norm, packed like x
    options: dict[str, Any]
    t_of_lam: Callable[[Tensor], Tensor] | None = None  # reference schedule's inverse lam (intermediate stages)
    # (fractions) -> [(u, coefs at u)]: times at those fractions of this step's reference log-SNR
    # interval, evaluated for the whole grid at once by the driver (singlestep methods' stages)
    stages: Callable[[tuple[float, ...]], list[tuple[Tensor, Coefs]]] | None = None
    # (key, fn, n_prev, fractions, node) -> fn's coefficients at this step, fn evaluated once for
    # the whole grid (see polydiff.samplers.coefs.coef_table); None off the grid
    table: Callable[..., Any] | None = None
    finite: bool = False  # the step's log-SNR step is finite everywhere (on the grid; False: unknown)
    # (x, u_from, u_to) -> x at u_to: one call of a two-time model G(x_t, t, s) (consistency
    # trajectory models); None for ordinary denoisers
    jump: Callable[[Tensor, Tensor, Tensor], Tensor] | None = None


class CategoricalContext(NamedTuple):
    """Everything a categorical step may need beyond its tokens and probabilities."""

    i: int  # step index
    n: int  # number of steps
    noise: Any  # the run's polydiff.random.Noise (per-sample counter-based draws)
    options: dict[str, Any]
    state: Mapping[str, Tensor]  # the state at t
    mask: Tensor | None  # (B, ...) bool, True where the field's entries are generated; None: all


@dataclass(frozen=True)
class SamplerDef:
    """A registered sampler: its step function and what the driver must know about it."""

    name: str
    step: Callable[..., Any]
    kind: str  # "gaussian" or "categorical"
    description: str
    nfe_per_step: int = 1  # model evaluations per grid step
    stochastic: bool = False
    defaults: dict[str, Any] = field(default_factory=dict)
    # "grid": the step is called by the sampling loop on every grid interval, after one model
    # call at (x, t); "calls": the same, but the loop makes no model call of its own (the step
    # calls ctx.denoise / ctx.jump itself); "own": the sampler runs its own loop (no grid)
    loop: str = "grid"
    origin: str = ""  # top-level package that registered it ("polydiff" for built-ins)
    # lazy(options) true: with these options a "grid" step makes all its model calls itself, so on
    # an all-Gaussian state the loop skips its own call at (x, t) and passes d = e = None
    lazy: Callable[[Mapping[str, Any]], bool] | None = None
    # budget(nfe, options) -> (steps, options): how the method spends a budget of nfe model calls
    # (None: the most whole steps of nfe_per_step calls); see for_budget
    budget: Callable[[int, Mapping[str, Any]], tuple[int, dict[str, Any]]] | None = None
    uses_steps: bool = True  # False: the method sets its own number of steps (first hitting)

    def options(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """Merge user options with the defaults, rejecting unknown names and values of the wrong
        type clearly (see :meth:`check`)."""
        unknown = sorted(set(given) - set(self.defaults))
        if unknown:
            raise RegistryError(no_option(f"sampler {self.name!r}", unknown, sorted(self.defaults)))
        out = dict(self.defaults)
        for k, v in given.items():
            try:
                out[k] = self.check(k, v)
            except ValueMismatch as err:
                listing = ", ".join(f"{n}={d!r}" for n, d in sorted(self.defaults.items()))
                raise RegistryError(f"sampler {self.name!r} option {k}: {err}; options: {listing}") from None
        return out

    def check(self, name: str, value: Any) -> Any:
        """``value`` of the option ``name`` checked against the type of its default and converted
        (a float default accepts an integer and a numeric string such as ``"1e-3"``; a None
        default accepts anything). Objects other than plain values (a per-sample tensor, ...) are
        the step's to judge. Raises :class:`polydiff.registry.ValueMismatch`."""
        default = self.defaults[name]
        if default is None or not is_plain(value):
            return value
        out = check_value(value, float if isinstance(default, float) else type(default))
        if isinstance(out, float) and not math.isfinite(out) and not (math.isinf(out) and math.isinf(default)):
            # eta=nan or inf wrote all-NaN samples; an option whose default is infinite (s_tmax) may be one
            raise ValueMismatch("a finite number", value, name)
        return out


def _plugin_samplers() -> str:
    """Import every installed plugin, so that a sampler one of them registers (graphs' ``s4``)
    serves a model of another; a note naming the plugins that could not be imported."""
    from ..registry import available_modalities, load_modality

    broken = []
    for name in available_modalities():
        try:
            load_modality(name)
        except Exception as err:  # a broken plugin must not hide the others' samplers
            broken.append(f"{name} ({' '.join(str(err).split())})")
    return f" (plugins that could not be imported: {'; '.join(broken)})" if broken else ""


SAMPLERS: Registry = Registry("sampler", on_miss=_plugin_samplers)


def register(name: str, description: str, *, kind: str = "gaussian", nfe_per_step: int = 1,
             stochastic: bool = False, loop: str = "grid", lazy: Callable[[Mapping[str, Any]], bool] | None = None,
             budget: Callable[[int, Mapping[str, Any]], tuple[int, dict[str, Any]]] | None = None,
             uses_steps: bool = True, **defaults: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator registering a step function under ``name`` with its default options.

    ``kind``: "gaussian" (``step(x, d, e, ct, cs, hist, ctx)``) or "categorical"
    (``step(tokens, p0, t, s, process, ctx)``); ``loop``, ``lazy``, ``budget`` and ``uses_steps``
    (False: a step count asked for is ignored, with a warning): see :class:`SamplerDef`. A plugin
    registers its samplers when it is imported; recipes naming them load the plugin first.
    """
    if kind not in ("gaussian", "categorical"):
        raise ValueError(f"sampler kind must be 'gaussian' or 'categorical', got {kind!r}")
    if loop not in ("grid", "calls", "own"):
        raise ValueError(f"sampler loop must be 'grid', 'calls' or 'own', got {loop!r}")

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        if not fn.__doc__ or getattr(fn, "_doc_from_register", False):  # help(step) shows what `polydiff
            fn.__doc__, fn._doc_from_register = description, True     # samplers` does (stacked: the outermost)
        origin = (getattr(fn, "__module__", "") or "").split(".")[0]
        SAMPLERS.register(name, description)(SamplerDef(name, fn, kind, description, nfe_per_step, stochastic,
                                                        defaults, loop, origin, lazy, budget, uses_steps))
        return fn

    return deco


def get_sampler(name: str) -> SamplerDef:
    """The registered sampler ``name`` (an error listing the choices, with "did you mean")."""
    return SAMPLERS.get(name)


def for_budget(sampler: str, nfe: int, **options: Any) -> dict[str, Any]:
    """The steps (and options) with which ``sampler`` spends a budget of ``nfe`` model calls, as
    keywords: ``polydiff.sample(..., sampler=name, **for_budget(name, nfe))``.

    Most methods take the most whole steps that fit, ``nfe // nfe_per_step`` (at least one);
    a method registered with a ``budget`` plans its own (singlestep DPM-Solver spends every
    call, mixing orders as DPM-Solver-fast does). ``options`` are the sampler's options, passed
    through. Adaptive methods (``nfe_per_step = 0``) have no step budget: a ValueError."""
    if nfe < 1:
        raise ValueError(f"an NFE budget must be >= 1, got {nfe}")
    sdef = get_sampler(sampler)
    if sdef.budget is not None:
        steps, options = sdef.budget(nfe, options)
    elif sdef.nfe_per_step > 0:
        steps = max(1, nfe // sdef.nfe_per_step)
    else:
        raise ValueError(f"sampler {sampler!r} chooses its own steps (adaptive): give it a tolerance, not an NFE "
                         "budget")
    return {"steps": steps, **options}


@dataclass(frozen=True)
class SampleSettings:
    """How a run walks from noise to data.

    ``sampler``: a Gaussian method, or (for states without Gaussian fields) a categorical one;
    ``categorical``: the method of the categorical fields of mixed states; ``steps`` / ``grid``
    / ``t_max`` / ``t_min`` / ``final_zero``: the time grid (:func:`polydiff.grids.make_grid`;
    ``grid`` a name, a (K+1,) or (K+1, B) tensor, or None for the schedule's default);
    ``dtype``: the solver's arithmetic (the network runs in its own dtype); ``compile``: ``torch.compile``
    the network (True or ``"network"``), or the whole fixed-step loop as one graph (``"loop"``;
    ``"cudagraphs"`` also captures it in a CUDA graph; ``"max-autotune"``); ``options``: the sampler's own
    options (``eta``, ``order``, ...; ``polydiff samplers`` lists them).
    """

    sampler: str = "dpm++2m"
    steps: int = 20
    grid: str | Tensor | None = None
    t_min: float | None = None
    t_max: float | None = None
    final_zero: bool = False
    categorical: str = "ancestral"
    dtype: torch.dtype = torch.float32
    compile: bool | str = False
    options: Mapping[str, Any] = field(default_factory=dict)

    def replace(self, **changes: Any) -> SampleSettings:
        """A copy with some settings changed (``options`` merged, not replaced)."""
        if "options" in changes:
            changes["options"] = {**self.options, **changes["options"]}
        return dataclasses.replace(self, **changes)


SETTING_NAMES = tuple(f.name for f in dataclasses.fields(SampleSettings) if f.name != "options")


def settings_of(settings: SampleSettings | None = None, **keywords: Any) -> SampleSettings:
    """``settings`` (default: the defaults) with ``keywords`` applied: names of
    :class:`SampleSettings` fields set those fields, any other keyword is a sampler option.
    ``None`` values leave a setting unchanged."""
    base = settings if settings is not None else SampleSettings()
    if not isinstance(base, SampleSettings):
        raise TypeError(f"settings must be a SampleSettings, got {type(base).__name__}")
    named = {k: v for k, v in keywords.items() if k in SETTING_NAMES and v is not None}
    if "steps" in named:
        named["steps"] = whole_number("steps", named["steps"])
    if named.get("dtype", torch.float32) not in (torch.float32, torch.float64):
        raise ValueError(f"dtype (the solver's arithmetic) must be torch.float32 or torch.float64, got "
                         f"{named['dtype']!r}; the network's own dtype is model_dtype")
    opts = {k: v for k, v in keywords.items() if k not in SETTING_NAMES and k != "options"}
    opts.update(keywords.get("options") or {})
    if not named and not opts:
        return base
    return base.replace(**named, options=opts)
