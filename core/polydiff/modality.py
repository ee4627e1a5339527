"""The modality contract: what a plugin supplies so the core can train, sample, evaluate and
save its objects.

A plugin subclasses :class:`Modality` and registers the class under the entry-point group
``polydiff.modalities`` (``[project.entry-points."polydiff.modalities"] name =
"pkg.module:Class"``). The core never imports a plugin's heavy dependencies before
:func:`polydiff.load_modality` is called, and treats first-party plugins (graphs, molecules,
...) exactly like third-party ones.

The flow of one run:

1. ``data = modality.dataset(name, **options)`` -> :class:`DataBundle` (train / val
   datasets of states, plus ``info``: JSON-able facts the other steps need, e.g. the feature
   dimension or the distribution of node counts; ``info`` is saved in checkpoints).
2. ``fields = modality.fields(data.info, **process_options)`` -> ``{name: FieldSpec}``.
3. ``net = modality.network(name, data.info, fields, **options)``: an ``nn.Module`` with
   ``forward(state, t, cond=None) -> {field: prediction}``.
4. Sampling: ``modality.prior_state(n, info, generator)`` gives the shapes and fixed entries
   (masks, sizes) of ``n`` new samples; after sampling, ``modality.to_native(state, info)``
   turns the state into the field's own objects.
5. ``modality.write(objects, out_dir)`` / ``modality.read(path)`` for native files;
   ``modality.evaluate(objects, reference, info)`` for metrics; ``modality.plot`` for a figure.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from .state import FieldSpec, State


@dataclass
class DataBundle:
    """Datasets of states (each item a ``dict[str, Tensor]`` without batch dimension)."""

    train: Dataset
    val: Dataset | None = None
    test: Dataset | None = None
    info: dict[str, Any] = field(default_factory=dict)
    collate: Callable[[list[State]], State] | None = None  # default: stack every entry


class Modality(ABC):
    """Base class of modality plugins. Subclasses set ``name`` and implement the abstract
    methods; the optional ones have sensible defaults."""

    name: str = ""
    description: str = ""

    # -- registries of what the plugin offers (names -> factories); the first is the default --
    @abstractmethod
    def datasets(self) -> dict[str, Callable[..., DataBundle]]:
        """Dataset factories; the first one is the embedded default (no download, no shared/)."""

    @abstractmethod
    def networks(self) -> dict[str, Callable[..., nn.Module]]:
        """Network factories ``f(info, fields, **options) -> nn.Module``."""

    def recipes(self) -> dict[str, Path]:
        """Ready-to-run YAML recipes shipped with the plugin (name -> path)."""
        return {}

    # -- the run --
    def dataset(self, name: str | None = None, **options: Any) -> DataBundle:
        """Build the named dataset (the default when ``name`` is None)."""
        table = self.datasets()
        name = name or next(iter(table))
        if name not in table:
            raise KeyError(f"modality {self.name!r} has no dataset {name!r}; allowed: {', '.join(table)}")
        return table[name](**options)

    @abstractmethod
    def fields(self, info: Mapping[str, Any], **process: Any) -> dict[str, FieldSpec]:
        """The field specs (process, structure, prediction) for data described by ``info``."""

    def network(self, name: str | None, info: Mapping[str, Any], fields: Mapping[str, FieldSpec],
                **options: Any) -> nn.Module:
        """Build the named network (the default when ``name`` is None)."""
        table = self.networks()
        name = name or next(iter(table))
        if name not in table:
            raise KeyError(f"modality {self.name!r} has no network {name!r}; allowed: {', '.join(table)}")
        return table[name](info, fields, **options)

    @abstractmethod
    def prior_state(self, n: int, info: Mapping[str, Any], generator: torch.Generator | None = None,
                    condition: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The state spec of ``n`` new samples: field shapes (tuples) plus fixed entries
        (masks, sizes, conditions as tensors), ready for :func:`polydiff.sample`."""

    @abstractmethod
    def to_native(self, state: State, info: Mapping[str, Any]) -> list[Any]:
        """Generated state -> the field's own objects (graphs, molecules, frames, arrays...)."""

    def from_native(self, objects: Sequence[Any], info: Mapping[str, Any]) -> State:
        """Objects -> a state (used for observations and for evaluating files)."""
        raise NotImplementedError(f"modality {self.name!r} cannot convert objects back to states")

    # -- files, metrics, plots --
    @abstractmethod
    def write(self, objects: Sequence[Any], out_dir: Path) -> list[Path]:
        """Write objects in the field's native formats; return the paths written."""

    @abstractmethod
    def read(self, path: Path) -> list[Any]:
        """Read objects back from a file or directory written by :meth:`write`."""

    @abstractmethod
    def evaluate(self, objects: Sequence[Any], reference: Sequence[Any], info: Mapping[str, Any]) -> dict[str, float]:
        """Metrics of generated objects against reference objects (e.g. the test split)."""

    def reference(self, data: DataBundle) -> list[Any]:
        """Reference objects for :meth:`evaluate`: the test split, else val, else train."""
        ds = data.test or data.val or data.train
        collate = data.collate or default_collate
        return self.to_native(collate([ds[i] for i in range(len(ds))]), data.info)

    def plot(self, objects: Sequence[Any], path: Path, reference: Sequence[Any] | None = None) -> Path | None:
        """Save a figure of some objects (over ``reference`` where that helps) to ``path``
        (PNG); None if the plugin has no plot or its plotting library is missing."""
        return None

    def describe(self) -> dict[str, Any]:
        """What ``polydiff modalities`` prints."""
        return {"description": self.description, "datasets": list(self.datasets()),
                "networks": list(self.networks()), "recipes": {k: str(v) for k, v in self.recipes().items()}}


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
        return {k: v[index] for k, v in self.tensors.items()}


def default_collate(items: Sequence[State]) -> State:
    """Stack a list of states (same keys, same shapes) into one batched state."""
    if not items:
        raise ValueError("cannot collate an empty batch")
    keys = items[0].keys()
    return {k: torch.stack([it[k] for it in items]) for k in keys}
