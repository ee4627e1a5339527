"""Conditions: ordinary entries of the state, and their dropped (null) values.

A dropped condition is written with a sentinel, ``-1`` for integer labels and NaN for real
values, which :class:`polydiff.nn.ConditionEmbedding` maps to its learned null embedding.
Training drops conditions with :func:`drop_condition` (``loss.cond_drop``); classifier-free
guidance builds the unconditional state with :func:`null_state`; the command line's
``--condition key=value`` goes through :func:`parse_condition` and :func:`make_condition`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from .random import Noise
from .state import State

NULL_CLASS = -1  # the dropped-condition sentinel of integer labels (NaN for real values)


def null_value(v: Tensor) -> Tensor:
    """The dropped-condition sentinel shaped like ``v``: -1 for integer labels, NaN for reals."""
    if v.dtype.is_floating_point or v.dtype.is_complex:
        return torch.full_like(v, float("nan"))
    return torch.full_like(v, NULL_CLASS)


def null_state(state: State, keys: Sequence[str], drop: Tensor | None = None) -> State:
    """A copy of ``state`` whose condition entries ``keys`` are dropped (where ``drop`` (B,)
    is true; everywhere by default)."""
    missing = [k for k in keys if k not in state]
    if missing:
        raise KeyError(f"condition keys {missing} are not in the state (it has {sorted(state)})")
    out = dict(state)
    for k in keys:
        v = state[k]
        if drop is None:
            out[k] = null_value(v)
        else:
            d = drop.to(v.device).reshape(-1, *([1] * (v.dim() - 1)))
            out[k] = torch.where(d, null_value(v), v)
    return out


def drop_condition(state: State, keys: Sequence[str], p: float, noise: Noise) -> State:
    """Condition dropout for classifier-free guidance training: each sample's conditions
    ``keys`` are dropped together with probability ``p`` (one uniform draw per sample from
    ``noise``, so the choice is reproducible and batch independent)."""
    if p <= 0:
        return dict(state)
    return null_state(state, [k for k in keys if k in state], noise.rand(()) < p)


def number_list(text: str) -> list[float] | None:
    """``"0,1,2"`` -> ``[0.0, 1.0, 2.0]``: a condition vector as the command line writes it; None
    when ``text`` is not a comma-separated list of numbers."""
    if "," not in text:
        return None
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        return None


def parse_condition(items: Sequence[str] | Mapping[str, Any]) -> dict[str, Any]:
    """``["label=3", "logp=-1.5", "vec=0,1,2"]`` (the CLI's ``--condition``) -> a dict of
    Python values (int, float or list of floats)."""
    if isinstance(items, Mapping):
        return dict(items)
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"a condition is written key=value, got {item!r}")
        try:
            if "," in value:
                out[key] = number_list(value)
                if out[key] is None:
                    raise ValueError(value)
            else:
                out[key] = int(value) if value.lstrip("+-").isdigit() else float(value)
        except ValueError as err:
            raise ValueError(f"condition {key!r}: {value!r} is not a number or a comma-separated list of "
                             "numbers") from err
    return out


def make_condition(values: Mapping[str, Any] | Sequence[str], batch: int,
                   device: torch.device | str = "cpu") -> State:
    """Condition entries of a state: an int gives a (B,) long label, a float a (B,) value, a
    list a (B, n) vector, a tensor is broadcast to the batch."""
    out: State = {}
    for k, v in parse_condition(values).items():
        if isinstance(v, Tensor):
            t = v.to(device)
            if t.dim() and t.shape[0] == batch:
                out[k] = t
            elif t.dim() and t.shape[0] == 1:
                out[k] = t.expand(batch, *t.shape[1:])
            else:
                out[k] = t.expand(batch, *t.shape)
        elif isinstance(v, int):
            out[k] = torch.full((batch,), int(v), dtype=torch.long, device=device)
        elif isinstance(v, float):
            out[k] = torch.full((batch,), v, dtype=torch.float32, device=device)
        else:
            out[k] = torch.tensor(v, dtype=torch.float32, device=device).expand(batch, -1)
    return out
