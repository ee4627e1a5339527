"""States and field specifications.

A state is a plain ``dict[str, Tensor]`` whose entries share the batch dimension. Entries
named in the field specs are generated; every other entry (node masks, conditions, fixed
fields) is carried along unchanged. ``FieldSpec`` says how one field is noised (its process),
which subspace it lives in (its structure) and what the network predicts for it.

``Packer`` flattens the Gaussian fields of a state into one (B, D) tensor and broadcasts
per-field schedule values to match, so that a Gaussian solver is written once, elementwise,
and serves any number of fields with different schedules.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from .parametrization import check_prediction
from .processes.categorical import CategoricalProcess
from .processes.gaussian import Coefs, GaussianProcess, expand_t
from .processes.manifold import GeodesicFlow
from .structures import Plain

State = dict[str, Tensor]


@dataclass
class FieldSpec:
    """How one field of the state is generated.

    ``prediction``: for Gaussian fields one of eps / x0 / v / score / velocity; categorical
    fields predict ``logits`` over the clean vocabulary; manifold fields predict ``x0``.
    """

    process: Any
    structure: Any = field(default_factory=Plain)
    prediction: str = "eps"

    def __post_init__(self) -> None:
        kind = getattr(self.process, "kind", None)
        if kind not in ("gaussian", "categorical", "manifold"):
            raise TypeError(f"process must be a Gaussian, categorical or manifold process, got {self.process!r}")
        if kind == "gaussian":
            check_prediction(self.prediction)
        elif kind == "categorical" and self.prediction == "eps":
            self.prediction = "logits"
        elif kind == "manifold" and self.prediction == "eps":
            self.prediction = "x0"

    @property
    def kind(self) -> str:
        return self.process.kind


def field_mask(spec: FieldSpec, state: Mapping[str, Tensor], like: Tensor) -> Tensor | None:
    """Where a field's entries are present: its structure's mask entry of the state (e.g.
    ``Masked("mask")``'s ``state["mask"]``, (B, N)) as a bool tensor broadcasting against the
    field ``like`` (B, N, ...); None when the structure has no mask."""
    key = getattr(spec.structure, "mask", None)
    if key is None:
        return None
    if key not in state:
        raise KeyError(f"the field's structure needs the mask {key!r} in the state; state has {sorted(state)}")
    m = state[key].to(like.device)
    m = m.bool() if m.dtype == torch.bool else m > 0
    return m.reshape(*m.shape, *([1] * (like.dim() - m.dim())))


def as_fields(process: Any, prediction: str = "eps", name: str = "x") -> dict[str, FieldSpec]:
    """Normalise ``process`` (a process, a FieldSpec or a dict of them) to ``{name: FieldSpec}``."""
    if isinstance(process, Mapping):
        return {k: v if isinstance(v, FieldSpec) else FieldSpec(v, prediction=prediction) for k, v in process.items()}
    if isinstance(process, FieldSpec):
        return {name: process}
    if isinstance(process, (GaussianProcess, CategoricalProcess, GeodesicFlow)):
        return {name: FieldSpec(process, prediction=prediction)}
    raise TypeError(f"expected a process, a FieldSpec or a dict of them, got {type(process).__name__}")


class Packer:
    """Flatten named Gaussian fields to (B, D) and back; broadcast schedule values alike."""

    def __init__(self, fields: Mapping[str, FieldSpec], state: Mapping[str, Tensor]) -> None:
        self.names = [k for k, f in fields.items() if f.kind == "gaussian"]
        self.fields = {k: fields[k] for k in self.names}
        self.shapes = {k: tuple(state[k].shape[1:]) for k in self.names}
        self.sizes = [int(torch.Size(self.shapes[k]).numel()) for k in self.names]
        self.single = len(self.names) == 1
        # one field of shape (B, D) is its own packing: no reshape either way
        self.flat = self.single and len(self.shapes[self.names[0]]) == 1

    def pack(self, state: Mapping[str, Tensor]) -> Tensor:
        """The named fields as one flat (B, D) tensor, in ``names`` order."""
        if self.flat:
            return state[self.names[0]]
        parts = [state[k].reshape(state[k].shape[0], -1) for k in self.names]
        return parts[0] if self.single else torch.cat(parts, dim=1)

    def unpack(self, flat: Tensor) -> State:
        """The inverse of :meth:`pack`: a (B, D) tensor back to named fields."""
        if self.single:
            k = self.names[0]
            return {k: flat if self.flat else flat.reshape(flat.shape[0], *self.shapes[k])}
        chunks = torch.split(flat, self.sizes, dim=1)
        return {k: c.reshape(c.shape[0], *self.shapes[k]) for k, c in zip(self.names, chunks, strict=True)}

    def _block(self, name: str, v: Tensor, batch: int) -> Tensor:
        """A scalar, per-sample (B,) or per-element (B, *shape) value as a packed block:
        (1, 1) / (1, n) for a scalar (a broadcast, so per-step arithmetic on it is free),
        (B, 1) / (B, n) per sample, (B, n) per element."""
        rows = 1 if v.dim() == 0 else batch
        if v.dim() <= 1:
            v = v.reshape(-1, 1).expand(rows, 1)
            return v if self.single else v.expand(rows, self.sizes[self.names.index(name)])
        return v.expand(batch, *self.shapes[name]).reshape(batch, -1)

    def coefs(self, t: Tensor | Mapping[str, Tensor], batch: int) -> Coefs:
        """Schedule values of every packed field at time ``t``: a scalar or (B,) tensor shared
        by all fields, or a dict of per-field (possibly per-element) times."""
        per = {k: self.fields[k].process.coefs(t[k] if isinstance(t, Mapping) else t) for k in self.names}
        out = []
        for attr in ("alpha", "sigma", "lam", "dalpha", "dsigma"):
            blocks = [self._block(k, getattr(per[k], attr), batch) for k in self.names]
            out.append(blocks[0] if self.single else torch.cat(_same_rows(blocks), dim=1))
        return Coefs(*out)

    def grid_table(self, ts: Tensor, batch: int, dtype: torch.dtype | None = None) -> tuple[Tensor, dict[str, Coefs]]:
        """:meth:`coefs` at every time of a grid (T,) or (T, B) as one tensor ``(5, T, rows, D)``
        (alpha, sigma, lam, dalpha, dsigma; ``rows`` 1 or B, ``D`` 1 for one field with shared
        times), cast to ``dtype``, with one schedule call per field for the whole grid; also
        returns each field's own float64 values (T[, B]). See :func:`table_coefs` and :func:`per_time`."""
        per = {k: self.fields[k].process.coefs(ts) for k in self.names}
        if self.single and ts.dim() == 1:  # the common case: (1, 1) broadcasts
            (c,) = per.values()
            vals = (c.alpha, c.sigma, c.lam, c.dalpha, c.dsigma)
            if any(v.shape != ts.shape for v in vals):  # a schedule returning a constant as a scalar
                vals = tuple(v.expand(ts.shape) for v in vals)
            table = torch.stack(vals)  # (5, T)
            return (table if dtype is None else table.to(dtype)).reshape(5, -1, 1, 1), per
        cast = per if dtype is None else {k: Coefs(*(v.to(dtype) for v in (c.alpha, c.sigma, c.lam, c.dalpha,
                                                                            c.dsigma))) for k, c in per.items()}
        out = []
        for i in range(ts.shape[0]):
            vals = []
            for attr in ("alpha", "sigma", "lam", "dalpha", "dsigma"):
                blocks = [self._block(k, getattr(cast[k], attr)[i], batch) for k in self.names]
                vals.append(blocks[0] if self.single else torch.cat(_same_rows(blocks), dim=1))
            rows = max(v.shape[0] for v in vals)
            out.append(torch.stack([v.expand(rows, v.shape[1]) for v in vals]))  # (5, rows, D)
        return torch.stack(out, dim=1), per

    def field_view(self, c: Coefs, name: str, batch: int) -> Coefs:
        """Packed coefficients restricted to one field and shaped to broadcast against it."""
        shape = self.shapes[name]
        rows = c.alpha.shape[0]
        if self.single:
            target = (rows, *([1] * len(shape))) if c.alpha.shape[1] == 1 else (rows, *shape)
            if tuple(c.alpha.shape) == target:  # e.g. (1, 1) scalars for a (B, D) field: already shaped
                return c
            return Coefs(*(v.reshape(target) for v in (c.alpha, c.sigma, c.lam, c.dalpha, c.dsigma)))
        j = self.names.index(name)
        lo = sum(self.sizes[:j])
        sl = slice(lo, lo + self.sizes[j])
        return Coefs(*(v[:, sl].reshape(rows, *shape) for v in (c.alpha, c.sigma, c.lam, c.dalpha, c.dsigma)))

    def segment_sum(self, flat: Tensor) -> Tensor:
        """Per-field sums of a packed (B, D) tensor: shape (B, n_fields)."""
        if self.single:
            return flat.sum(1, keepdim=True)
        return torch.stack([c.sum(1) for c in torch.split(flat, self.sizes, dim=1)], dim=1)

    def expand_fields(self, per_field: Tensor) -> Tensor:
        """(B, n_fields) -> packed (B, D) (or (B, 1) for a single field)."""
        if self.single:
            return per_field
        return torch.repeat_interleave(per_field, torch.tensor(self.sizes, device=per_field.device), dim=1)


def table_coefs(table: Tensor) -> Coefs:
    """A ``(5, T, ...)`` coefficient table as Coefs of ``(T, ...)`` tensors (views)."""
    return Coefs(*table.unbind(0))


def per_time(table: Tensor) -> list[Coefs]:
    """A ``(5, T, ...)`` coefficient table as T Coefs of ``(...)`` views, in two operations."""
    n = table.shape[1]
    flat = table.reshape(5 * n, *table.shape[2:]).unbind(0)
    return [Coefs(*flat[i::n]) for i in range(n)]


def _same_rows(blocks: list[Tensor]) -> list[Tensor]:
    """Blocks with 1 or B rows brought to a common number of rows before concatenation."""
    rows = max(b.shape[0] for b in blocks)
    return [b.expand(rows, b.shape[1]) for b in blocks]


def broadcast_t(t: Tensor, x: Tensor) -> Tensor:
    """Alias of :func:`polydiff.processes.gaussian.expand_t` for modality code."""
    return expand_t(t, x)
