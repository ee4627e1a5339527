"""Data bundles, tensor-backed datasets and the typed dataset metadata (``info``).

A modality's dataset factory returns a :class:`DataBundle`: train / val / test datasets of
states (dicts of tensors without the batch dimension) plus ``info``, the JSON-able facts the
rest of a run needs. ``info`` is stored in checkpoints and handed back to every modality hook,
so a model can be rebuilt, sampled and evaluated without its data. :class:`DatasetInfo` names
the keys the core itself reads; plugins add any other JSON-able keys they need.
"""

from __future__ import annotations

import json
import math
import numbers
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypedDict

import torch
from torch import Tensor
from torch.utils.data import Dataset

State = dict[str, Tensor]


class ConditionSpec(TypedDict, total=False):
    """One condition entry of the state: ``{"kind": "class", "num_classes": K}``, ``{"kind":
    "scalar", "low": a, "high": b, "basis": n}`` or ``{"kind": "vector", "dim": d}`` (what
    :class:`polydiff.nn.ConditionEmbedding` embeds and ``loss.cond_drop`` drops)."""

    kind: str
    num_classes: int
    low: float
    high: float
    basis: int
    dim: int


class DatasetInfo(TypedDict, total=False):
    """The keys of a dataset's ``info`` that the core reads (all optional; plugins add others).

    - ``conditions``: the state's condition entries (``loss.cond_drop``, guidance, the
      condition embedding, ``--condition`` on the command line);
    - ``size_hist``: counts of training objects by size (index = number of nodes, atoms,
      residues, tokens), from which :func:`draw_sizes` draws the sizes of new samples;
    - ``vocabularies``: per categorical field, the names of its tokens (files and plots);
    - ``dataset``: the dataset's name, for reports.
    """

    conditions: dict[str, ConditionSpec]
    size_hist: list[float]
    vocabularies: dict[str, list[str]]
    dataset: str


CONDITION_KINDS = {"class": ("num_classes",), "scalar": (), "vector": ("dim",), "tokens": ("num_classes",)}


def check_info(info: Mapping[str, Any], source: str = "info") -> dict[str, Any]:
    """``info`` as plain JSON data, with the keys of :class:`DatasetInfo` checked; a clear
    error names the key otherwise."""
    try:
        plain = json.loads(json.dumps(dict(info)))
    except (TypeError, ValueError) as err:
        raise ValueError(f"{source}: the dataset's info must be JSON-able ({err})") from None
    conds = plain.get("conditions")
    if conds is not None:
        if not isinstance(conds, Mapping):
            raise ValueError(f"{source}: conditions: expected a mapping of condition specs, got {conds!r}")
        for key, spec in conds.items():
            kind = spec.get("kind") if isinstance(spec, Mapping) else None
            if kind not in CONDITION_KINDS:
                raise ValueError(f"{source}: conditions.{key}: kind must be one of {', '.join(CONDITION_KINDS)}, "
                                 f"got {spec!r}")
            for need in CONDITION_KINDS[kind]:
                if not isinstance(spec.get(need), int) or spec[need] < 1:
                    raise ValueError(f"{source}: conditions.{key}: a {kind} condition needs a positive integer "
                                     f"{need!r}")
    hist = plain.get("size_hist")
    if hist is not None and (not isinstance(hist, list) or not hist or any(
            not isinstance(v, (int, float)) or v < 0 for v in hist) or sum(hist) <= 0):
        raise ValueError(f"{source}: size_hist: expected a non-empty list of non-negative counts with a positive "
                         "sum")
    vocab = plain.get("vocabularies")
    if vocab is not None and (not isinstance(vocab, Mapping) or any(
            not isinstance(v, list) for v in vocab.values())):
        raise ValueError(f"{source}: vocabularies: expected a mapping of field -> list of token names")
    return plain


def draw_sizes(n: int, info: Mapping[str, Any], generator: torch.Generator | None = None,
               key: str = "size_hist") -> Tensor:
    """``n`` object sizes drawn from the histogram ``info[key]`` (index = size), as GDSS draws
    node counts and EDM-style molecule models atom counts."""
    hist = torch.as_tensor(info.get(key) or [], dtype=torch.float64)
    if hist.numel() == 0 or float(hist.sum()) <= 0:
        raise ValueError(f"info has no {key} to draw object sizes from")
    return torch.multinomial(hist, n, replacement=True, generator=generator)


def object_sizes(n: int, info: Mapping[str, Any], generator: torch.Generator | None = None, given: Any = None, *,
                 name: str = "size", minimum: int = 1, key: str = "size_hist") -> Tensor:
    """``n`` object sizes of a new batch: the condition ``name`` when the user gives it (one
    whole number for every sample, or one per sample, each at least ``minimum``), else drawn
    from ``info[key]`` (:func:`draw_sizes`). A bad value (text, a fraction, too small, a wrong
    count) is an error naming the condition, never a silent truncation; a size beyond the
    largest in the training data is generated with a warning (the model never saw one)."""
    if given is None:
        return draw_sizes(n, info, generator, key)
    values = _values(given)
    whole = values is not None and all(_is_number(v) and float(v).is_integer() and v >= minimum for v in values)
    if not whole or len(values) not in (1, n):
        raise ValueError(f"condition {name!r}: expected a whole number of at least {minimum}, or {n} of them (one "
                         f"per sample), got {given!r}")
    sizes = torch.tensor([int(v) for v in values], dtype=torch.long).expand(n).clone()
    largest = len(info.get(key) or []) - 1
    if largest > 0 and int(sizes.max()) > largest:
        warnings.warn(f"condition {name!r}: {int(sizes.max())} is beyond the largest size in the training data "
                      f"({largest}); the model never saw such objects", stacklevel=3)
    return sizes


def condition_values(n: int, given: Any, *, name: str, kind: str = "real", low: float | None = None,
                     high: float | None = None, trained: tuple[float, float] | None = None) -> Tensor:
    """The (n,) values of the condition ``name`` that a user gave: one number for every sample,
    or one per sample (a list, array or tensor of ``n``). ``kind="class"``: whole numbers in
    ``low..high`` (long); ``"real"``: finite numbers in ``[low, high]`` where given (float32),
    with a warning for values outside ``trained``, the training data's range, where the model
    extrapolates (an embedding of a property often saturates there). Python and numpy numbers
    alike; text, booleans, NaN, fractional classes or a wrong count are an error naming the
    condition (leave a condition out for none)."""
    if kind not in ("real", "class"):
        raise ValueError(f"kind must be 'real' or 'class', got {kind!r}")
    values = _values(given)
    what = "a whole number" if kind == "class" else "a finite number"
    if low is not None and high is not None:
        what += f" in {low:g}..{high:g}"
    elif low is not None or high is not None:
        what += f" >= {low:g}" if low is not None else f" <= {high:g}"
    ok = values is not None and len(values) in (1, n) and all(
        _is_number(v) and math.isfinite(v) and (kind == "real" or float(v).is_integer())
        and (low is None or v >= low) and (high is None or v <= high) for v in values)
    if not ok:
        raise ValueError(f"condition {name!r}: expected {what}, or {n} of them (one per sample), got {given!r}")
    if kind == "class":
        return torch.tensor([int(v) for v in values], dtype=torch.long).expand(n).clone()
    out = torch.tensor([float(v) for v in values], dtype=torch.float32).expand(n).clone()
    if trained is not None:
        lo, hi = float(trained[0]), float(trained[1])
        outside = [float(v) for v in values if not lo <= float(v) <= hi]
        if outside:
            warnings.warn(f"condition {name!r}: {outside[0]:g} lies outside the training data's range {lo:g} to "
                          f"{hi:g}; the model extrapolates there", stacklevel=3)
    return out


def _values(given: Any) -> list[Any] | None:
    """A condition value as a flat list (one entry, or one per sample); None when nested."""
    raw = given.tolist() if hasattr(given, "tolist") and not isinstance(given, (str, bytes)) else given
    values = list(raw) if isinstance(raw, (list, tuple)) else [raw]
    return None if any(isinstance(v, (list, tuple)) for v in values) else values


def _is_number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


Augment = Callable[[State, torch.Generator], State]


def rotate(*keys: str, mask: str | None = None) -> Augment:
    """A :attr:`DataBundle.augment` hook rotating the 3-D vectors of entries ``keys`` ((B, N, 3)
    coordinates, forces, ...) by one uniformly random rotation per sample, about the masked
    centre of mass (padding stays zero), drawn from the step's seeded generator."""
    from .processes.so3 import random_rotation

    def augment(batch: State, generator: torch.Generator) -> State:
        missing = [k for k in (*keys, *([mask] if mask else [])) if k not in batch]
        if missing:
            raise KeyError(f"the augmentation rotate({', '.join(map(repr, keys))}, mask={mask!r}) needs the entries "
                           f"{missing}, which the dataset's states lack (entries: {sorted(batch)})")
        out = dict(batch)
        first = batch[keys[0]]
        q = random_rotation((first.shape[0],), generator=generator, dtype=first.dtype).to(first.device)
        for k in keys:
            x = batch[k]
            m = None if mask is None else batch[mask].to(x.dtype).reshape(*batch[mask].shape, 1)
            centre = x.mean(1, keepdim=True) if m is None else (x * m).sum(1, keepdim=True) / m.sum(1, keepdim=True
                                                                                                   ).clamp_min(1)
            y = (x - centre) @ q.transpose(1, 2) + centre
            out[k] = y if m is None else y * m
        return out

    return augment


def compose_augment(*hooks: Augment) -> Augment:
    """Several augmentation hooks applied in order, each with its own draws from the generator."""

    def augment(batch: State, generator: torch.Generator) -> State:
        for h in hooks:
            batch = h(batch, generator)
        return batch

    return augment


def size_histogram(sizes: Sequence[int]) -> list[int]:
    """Counts of ``sizes`` by value (index = size): the ``size_hist`` of :class:`DatasetInfo`."""
    top = max(sizes, default=0)
    hist = [0] * (top + 1)
    for s in sizes:
        hist[int(s)] += 1
    return hist


@dataclass
class DataBundle:
    """Datasets of states (each item a ``dict[str, Tensor]`` without batch dimension).

    ``collate`` batches items (default: stack every entry); ``augment(batch, generator)`` is a
    training-time augmentation applied to each batch with a generator seeded by the step (random
    rotations of coordinates, symmetry relabellings...), so resumed runs stay exact."""

    train: Dataset
    val: Dataset | None = None
    test: Dataset | None = None
    info: dict[str, Any] = field(default_factory=dict)
    collate: Callable[[list[State]], State] | None = None
    augment: Callable[[State, torch.Generator], State] | None = None


class TensorStates(Dataset):
    """States held as batched tensors of equal length; ``get_batch`` indexes them all at once
    (the trainer uses it instead of collating items one by one)."""

    def __init__(self, **tensors: Tensor) -> None:
        lengths = {len(v) for v in tensors.values()}
        if len(lengths) != 1:
            raise ValueError(f"all entries need the same length, got {({k: len(v) for k, v in tensors.items()})}")
        self.tensors = tensors

    def __len__(self) -> int:
        return len(next(iter(self.tensors.values())))

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {k: v[i] for k, v in self.tensors.items()}

    def get_batch(self, index: Tensor) -> dict[str, Tensor]:
        """The states at ``index`` in one indexing per tensor (the trainer's fast path)."""
        return {k: v[index] for k, v in self.tensors.items()}


def default_collate(items: Sequence[State]) -> State:
    """Stack a list of states (same keys, same shapes) into one batched state."""
    if not items:
        raise ValueError("cannot collate an empty batch")
    keys = items[0].keys()
    try:
        return {k: torch.stack([it[k] for it in items]) for k in keys}
    except (KeyError, RuntimeError, TypeError):  # say which item and entry do not fit
        for i, it in enumerate(items):
            if it.keys() != keys:
                raise ValueError(f"cannot collate: item {i} has the entries {sorted(it)}, item 0 {sorted(keys)}"
                                 ) from None
            for k in keys:
                if not isinstance(it[k], Tensor):
                    raise ValueError(f"cannot collate entry {k!r}: item {i} holds a {type(it[k]).__name__}, not a "
                                     "tensor") from None
                if it[k].shape != items[0][k].shape:
                    raise ValueError(f"cannot collate entry {k!r}: item {i} has shape {tuple(it[k].shape)}, item 0 "
                                     f"{tuple(items[0][k].shape)}; pad variable-size items to one width (with a "
                                     "mask entry) in the dataset, or give the DataBundle a collate that pads"
                                     ) from None
        raise
