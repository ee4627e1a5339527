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
values and reads them through :func:`polydiff.samplers.dpm.coef_table`, which evaluates that
function once per grid (a handful of tensor operations instead of dozens per step) or, off the
grid, directly at the step's own values.

A categorical step is ``step(tokens, p0, t, s, process, ctx) -> tokens``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from torch import Tensor

from ..processes.gaussian import Coefs
from ..registry import Registry, RegistryError


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
    # the whole grid (see polydiff.samplers.dpm.coef_table); None off the grid
    table: Callable[..., Any] | None = None
    finite: bool = False  # the step's log-SNR step is finite everywhere (on the grid; False: unknown)


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

    def options(self, given: dict[str, Any]) -> dict[str, Any]:
        """Merge user options with the defaults, rejecting unknown names clearly."""
        unknown = sorted(set(given) - set(self.defaults))
        if unknown:
            allowed = ", ".join(sorted(self.defaults)) or "none"
            raise RegistryError(f"sampler {self.name!r} has no option {', '.join(unknown)}; allowed: {allowed}")
        return {**self.defaults, **given}


SAMPLERS: Registry = Registry("sampler")


def register(name: str, description: str, *, kind: str = "gaussian", nfe_per_step: int = 1,
             stochastic: bool = False, **defaults: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator registering a step function under ``name`` with its default options."""

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        SAMPLERS.register(name, description)(SamplerDef(name, fn, kind, description, nfe_per_step, stochastic,
                                                        defaults))
        return fn

    return deco


def get_sampler(name: str) -> SamplerDef:
    return SAMPLERS.get(name)
