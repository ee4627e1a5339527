"""Estimates of Gaussian fields from raw network outputs, and small state-tree helpers.

Every module that changes or reads a network's predictions (guidance, steering, likelihoods,
training techniques, diagnostics) needs the same few operations: call a state-level model,
turn a field's prediction into ``(x0, eps)`` with its schedule and back, and map over the
tensors of a nested state. They live here, below all of those modules.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from .parametrization import from_x0_eps, to_x0_eps
from .processes.gaussian import Coefs
from .state import FieldSpec, State

Model = Callable[..., Mapping[str, Tensor]]
Wrapper = Callable[[Model], Model]


def call(model: Model, state: State, t: Tensor, cond: Any = None, **kw: Any) -> Mapping[str, Tensor]:
    """``model(state, t)`` or ``model(state, t, cond)``, as the driver calls it; ``kw`` carries
    the target time ``s=`` of two-time models (consistency trajectory models)."""
    return model(state, t, **kw) if cond is None else model(state, t, cond, **kw)


def compose(*wrappers: Wrapper | None) -> Wrapper:
    """One wrapper applying ``wrappers`` in order (the first is innermost)."""

    def wrap(model: Model) -> Model:
        for w in wrappers:
            if w is not None:
                model = w(model)
        return model

    return wrap


def gaussian_names(fields: Mapping[str, FieldSpec], keys: Sequence[str] | None = None) -> list[str]:
    """The Gaussian fields among ``keys`` (all of them by default)."""
    names = [k for k, f in fields.items() if f.kind == "gaussian"]
    if keys is None:
        return names
    bad = [k for k in keys if k not in names]
    if bad:
        raise KeyError(f"{bad} are not Gaussian fields; Gaussian fields: {names}")
    return list(keys)


def field_coefs(spec: FieldSpec, t: Tensor, like: Tensor) -> Coefs:
    """Schedule values of a Gaussian field at time ``t`` (scalar or (B,)), shaped to broadcast
    against ``like`` (B, ...) and in its dtype."""
    tt = t.to(torch.float64)
    tt = tt.reshape(-1, *([1] * (like.dim() - 1))) if tt.dim() else tt
    c = spec.process.coefs(tt)
    return Coefs(*(v.to(like.dtype) for v in (c.alpha, c.sigma, c.lam, c.dalpha, c.dsigma)))


def x0_eps(out: Mapping[str, Tensor], state: State, t: Tensor, fields: Mapping[str, FieldSpec],
           names: Sequence[str]) -> dict[str, tuple[Tensor, Tensor]]:
    """``(x0, eps)`` of the Gaussian fields ``names`` from raw predictions ``out``."""
    res = {}
    for k in names:
        if k not in out:
            raise KeyError(f"the model returned no prediction for field {k!r} (got {sorted(out)})")
        x = state[k]
        res[k] = to_x0_eps(out[k].to(x.dtype), fields[k].prediction, x, field_coefs(fields[k], t, x))
    return res


def with_x0_eps(out: Mapping[str, Tensor], state: State, t: Tensor, fields: Mapping[str, FieldSpec],
                new: Mapping[str, tuple[Tensor, Tensor]]) -> dict[str, Tensor]:
    """A copy of ``out`` whose fields in ``new`` predict the given ``(x0, eps)``."""
    res = dict(out)
    for k, (d, e) in new.items():
        res[k] = from_x0_eps(d, e, fields[k].prediction, field_coefs(fields[k], t, state[k]))
    return res


def batch_of(state: Mapping[str, Any]) -> int:
    """The batch size: the first dimension of the state's first batched tensor."""
    for v in state.values():
        if isinstance(v, Tensor) and v.dim() > 0:
            return v.shape[0]
    raise ValueError("the state has no batched tensor")


def tree_map(fn: Callable[[Tensor], Tensor], tree: Any, batch: int) -> Any:
    """Apply ``fn`` to every tensor of a nested dict / list / tuple whose first dimension is
    ``batch``; other leaves are returned unchanged."""
    if isinstance(tree, Tensor):
        return fn(tree) if tree.dim() > 0 and tree.shape[0] == batch else tree
    if isinstance(tree, Mapping):
        return {k: tree_map(fn, v, batch) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(tree_map(fn, v, batch) for v in tree)
    return tree


def tree_cat(a: Any, b: Any, batch: int) -> Any:
    """Concatenate two trees of the same structure along their batch dimension."""
    if isinstance(a, Tensor):
        return torch.cat([a, b]) if a.dim() > 0 and a.shape[0] == batch else a
    if isinstance(a, Mapping):
        return {k: tree_cat(v, b[k], batch) for k, v in a.items()}
    if isinstance(a, (list, tuple)):
        return type(a)(tree_cat(x, y, batch) for x, y in zip(a, b))
    return a


def state_dtype(state: State) -> torch.dtype:
    """The dtype of the state's first floating field (float32 when it has none)."""
    return next((v.dtype for v in state.values() if isinstance(v, Tensor) and v.is_floating_point()), torch.float32)
