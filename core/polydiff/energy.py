"""Energy parametrisation: a network returning a scalar energy ``E(x, t)`` per sample whose
negative gradient is the score (at ``t -> 0``, the force of a Boltzmann density ``exp(-E)``).

:class:`EnergyModel` wraps such a network as an ordinary state-level model predicting the score
of the Gaussian fields it differentiates, so every loss, sampler and guidance in polydiff works
with it unchanged (give those fields ``prediction="score"``). The gradient is taken with
``torch.enable_grad()``, so it works inside sampling's ``no_grad`` too; while gradients are on
(training) it is taken with ``create_graph=True``, so the loss trains the energy through its
gradient. The energy itself is returned as the extra output ``"energy"`` (e.g. for Metropolis
corrections, energy-based likelihood ratios or importance weights). Under ``torch.compile``
(``train.compile``, ``generate(compile=True)``) the gradient is taken with ``torch.func.grad``
instead, so the energy, its gradient and a loss's backward through both are one graph.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .estimates import gaussian_names
from .state import FieldSpec

EnergyFn = Callable[..., Tensor]


class EnergyModel(nn.Module):
    """``model(state, t[, cond]) -> {field: -dE/dfield, "energy": E}`` from an energy network
    ``energy(state, t[, cond]) -> (B,)``; ``keys`` are the Gaussian fields differentiated
    (default: all of them), which must predict the ``score``."""

    def __init__(self, energy: EnergyFn, fields: Mapping[str, FieldSpec], keys: Sequence[str] | None = None) -> None:
        super().__init__()
        self.energy = energy
        self.keys = gaussian_names(fields, keys)
        wrong = [k for k in self.keys if fields[k].prediction != "score"]
        if wrong:
            raise ValueError(f"an energy network predicts scores: give fields {wrong} prediction='score'")

    def forward(self, state: Mapping[str, Tensor], t: Tensor, cond: Any = None) -> dict[str, Tensor]:
        if torch.compiler.is_compiling():
            return self._traced(state, t, cond)
        graph = torch.is_grad_enabled()  # training: keep the graph so the loss reaches the energy
        with torch.enable_grad():
            xs = {k: state[k] if state[k].requires_grad else state[k].detach().requires_grad_(True)
                  for k in self.keys}
            e = self._energy({**state, **xs}, t, cond)
            grads = torch.autograd.grad(e.sum(), [xs[k] for k in self.keys], create_graph=graph)
        out = {k: -g if graph else -g.detach() for k, g in zip(self.keys, grads)}
        out["energy"] = e if graph else e.detach()
        return out

    def _energy(self, state: Mapping[str, Tensor], t: Tensor, cond: Any) -> Tensor:
        """The network's energies (B,), checked for shape."""
        e = self.energy(state, t) if cond is None else self.energy(state, t, cond)
        if e.dim() != 1:
            raise ValueError(f"the energy network must return one energy per sample (B,), got {tuple(e.shape)}")
        return e

    def _traced(self, state: Mapping[str, Tensor], t: Tensor, cond: Any) -> dict[str, Tensor]:
        """The same outputs with the gradient taken by ``torch.func.grad``, which ``torch.compile``
        traces into the graph (``torch.autograd.grad`` would break it in two): the energy, its
        gradient and, in training, the loss's backward through both (the double backward) run as
        one compiled graph."""
        def total(xs: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
            e = self._energy({k: xs.get(k, v) for k, v in state.items()}, t, cond)
            return e.sum(), e

        grads, e = torch.func.grad(total, has_aux=True)({k: state[k] for k in self.keys})
        return {**{k: -grads[k] for k in self.keys}, "energy": e}


def forces(model: EnergyModel, state: Mapping[str, Tensor], t: Tensor | float = 0.0) -> dict[str, Tensor]:
    """``-dE/dx`` of every differentiated field at time ``t`` (default 0: the data end, where the
    score of a Boltzmann density is the force over kT), without keeping a graph."""
    b = next(v.shape[0] for v in state.values() if isinstance(v, Tensor) and v.dim())
    tt = torch.as_tensor(t, dtype=torch.float32).expand(b)
    with torch.no_grad():
        out = model(state, tt)
    return {k: out[k] for k in model.keys}


def force_function(model: EnergyModel, t: float = 0.0, *, compile: bool = False
                   ) -> Callable[[Mapping[str, Tensor]], dict[str, Tensor]]:
    """``state -> {field: -dE/dfield}`` at the fixed time ``t``, for dynamics (thousands of calls
    on states of one shape). ``compile=False``: :func:`forces`. ``compile=True``: the gradient
    is taken with ``torch.func.grad`` and the whole call compiled by ``torch.compile`` into one
    graph (elementwise work fused, no autograd engine per call): a one-time compilation of
    seconds (again for a new shape), then about 1.5x faster per call for a small network on a
    CPU (bench/results/molecules_md.md). Same forces up to float rounding, and like
    :func:`forces` without a graph: nothing is kept for a backward pass, in grad mode too."""
    if not compile:
        return lambda state: forces(model, state, t)

    def call(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
        xs = {k: state[k] for k in model.keys}
        rest = {k: v for k, v in state.items() if k not in xs}
        x = next(iter(xs.values()))
        tt = torch.full((1,), float(t), dtype=torch.float32, device=x.device).expand(x.shape[0])  # one shared time

        def total(inputs: dict[str, Tensor]) -> Tensor:
            return model.energy({**rest, **inputs}, tt).sum()

        grads = torch.func.grad(total)(xs)
        return {k: -grads[k] for k in model.keys}

    graph = torch.compile(call, fullgraph=True)

    def detached(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
        # torch.func.grad differentiates whatever the grad mode outside; no_grad keeps the forces
        # free of a graph to the weights (which dynamics would chain from step to step, about
        # 3 MB a step for a small MLP) and lets the compiled graph be an inference one
        with torch.no_grad():
            return graph(state)

    return detached
