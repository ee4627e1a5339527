"""The modality contract: what a plugin supplies so the core can train, sample, evaluate and
save its objects.

A plugin subclasses :class:`Modality` and registers the class under the entry-point group
``polydiff.modalities`` (``[project.entry-points."polydiff.modalities"] name =
"pkg.module:Class"``). The core never imports a plugin's heavy dependencies before
:func:`polydiff.load_modality` is called, and treats first-party plugins (graphs, molecules,
...) exactly like third-party ones. Everything a plugin may use is in :mod:`polydiff.plugin`.

The flow of one run:

1. ``data = modality.dataset(name, **options)`` -> :class:`DataBundle` (train / val / test
   datasets of states, plus ``info``: JSON-able facts the other steps need, see
   :class:`~polydiff.data.DatasetInfo`; ``info`` is saved in checkpoints).
2. ``fields = modality.fields(data.info, **process_options)`` -> ``{name: FieldSpec}``.
3. ``net = modality.network(name, data.info, fields, **options)``: an ``nn.Module`` with
   ``forward(state, t, cond=None) -> {field: prediction}`` (extra outputs named
   ``loss/<name>`` are added to the training loss, see :func:`polydiff.losses.diffusion_loss`).
4. Sampling: ``modality.prior_state(n, info, generator)`` gives the shapes and fixed entries
   (masks, sizes) of ``n`` new samples; ``modality.sample(net, fields, spec, settings,
   control, ...)`` turns them into states (one :func:`polydiff.steering.controlled_sample`
   loop unless the plugin's model samples otherwise: blocks, windows, rollouts); then
   ``modality.to_native(state, info)`` turns the state into the field's own objects.
5. ``modality.write(objects, out_dir)`` / ``modality.read(path)`` for native files;
   ``modality.evaluate(objects, reference, info)`` for metrics (``flags`` for per-sample
   ones), ``modality.evaluate_model(generator, ...)`` for metrics that need the model;
   ``modality.plot`` for a figure; ``modality.observation(path, info)`` for conditional
   generation from the user's files; ``modality.commands()`` for ``polydiff <name> ...``.
"""

from __future__ import annotations

import argparse
import importlib.resources
import inspect
import sys
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from .data import DataBundle, TensorStates, default_collate
from .registry import check_keywords
from .state import FieldSpec, State

__all__ = ["Command", "DataBundle", "Modality", "TensorStates", "default_collate", "package_recipes"]


@dataclass(frozen=True)
class Command:
    """A plugin subcommand, run as ``polydiff <modality> <name> ...``: ``configure(parser)`` adds
    its arguments, ``run(args)`` does the work and returns the exit status (None = 0)."""

    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int | None]


def _size(ds: Dataset | None) -> int:
    """Items of a split (0 for none; 1 for a dataset without a length)."""
    if ds is None:
        return 0
    try:
        return len(ds)  # type: ignore[arg-type]
    except TypeError:
        return 1


def check_metrics(metrics: Any, modality: str, where: str = "evaluate") -> dict[str, Any]:
    """``metrics`` as a dict of name -> real number (NaN where undefined), else a ValueError
    naming the modality and the metric: a plugin's ``evaluate`` / ``evaluate_model`` output
    is printed and written to JSON as numbers."""
    import numbers

    if not isinstance(metrics, Mapping):
        raise ValueError(f"modality {modality!r}: {where} returned a {type(metrics).__name__}, not a dict of metric "
                         "name -> number")
    for k, v in metrics.items():
        if not isinstance(k, str) or not isinstance(v, numbers.Real) or isinstance(v, bool):
            raise ValueError(f"modality {modality!r}: {where} gave the metric {k!r} the value {v!r}, which is not a "
                             "number (a metric is a float, NaN where undefined)")
    return dict(metrics)


def evaluation_options(modality: Modality, options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` checked as the keywords :meth:`Modality.evaluate` takes after ``objects``,
    ``reference`` and ``info`` (graphs: ``fcd``) and converted to their annotated types; a
    ValueError naming an option it does not take, or a value that does not fit."""
    if not options:
        return {}
    data_args = list(inspect.signature(modality.evaluate).parameters)[:3]
    return check_keywords(modality.evaluate, options, f"the evaluation of modality {modality.name!r}",
                          "evaluation option", skip=data_args)


def check_objects(modality: Modality, objects: Any, info: Mapping[str, Any], what: str = "objects") -> None:
    """``objects`` as :meth:`Modality.native_types` says a list of them looks, else a
    TypeError naming what was given (or a ValueError for an empty list)."""
    types = modality.native_types(info)
    if types is None:
        return
    names = " or ".join(t.__name__ for t in types)
    one = ("an " if names[0].lower() in "aeiou" else "a ") + names
    if isinstance(objects, (str, bytes, Mapping, *types)) or not isinstance(objects, Sequence):
        raise TypeError(f"{what}: expected a list of {names} (the {modality.name} plugin's objects), got "
                        f"{type(objects).__name__}")
    if len(objects) == 0:
        raise ValueError(f"{what}: an empty list (no {names} objects)")
    for i, obj in enumerate(objects):
        if not isinstance(obj, types):
            raise TypeError(f"{what}[{i}]: expected {one} (the {modality.name} plugin's objects), got "
                            f"{type(obj).__name__}")


def plot_objects(modality: Modality, objects: Sequence[Any], path: Path,
                 reference: Callable[[], Sequence[Any] | None], info: Mapping[str, Any] | None = None
                 ) -> Path | None:
    """``modality.plot(objects, path)``, with ``reference=reference()`` for a plot that takes one
    (the reference is only built then) and ``info=`` (the model's data info: units, window
    layout) for a plot that takes it."""
    params = inspect.signature(modality.plot).parameters
    extra: dict[str, Any] = {}
    if "reference" in params:
        extra["reference"] = reference()
    if "info" in params and info is not None:
        extra["info"] = info
    return modality.plot(objects, path, **extra)


def package_recipes(package: str, folder: str = "recipes") -> dict[str, Path]:
    """The YAML recipes shipped as package data in ``package/folder`` (name -> path), read
    with :mod:`importlib.resources` so they are found in wheels as in checkouts."""
    try:
        root = importlib.resources.files(package) / folder
    except ModuleNotFoundError:
        return {}
    if not root.is_dir():
        return {}
    return {Path(p.name).stem: Path(str(p)) for p in sorted(root.iterdir(), key=lambda p: p.name)
            if p.name.endswith((".yaml", ".yml"))}


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
        """Ready-to-run YAML recipes shipped with the plugin (name -> path): by default the
        ``recipes/`` folder of the package that defines the class (declare it as package data)."""
        module = sys.modules.get(type(self).__module__)
        package = getattr(module, "__package__", None) or type(self).__module__.rpartition(".")[0]
        return package_recipes(package) if package else {}

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

    def conditions(self, net: nn.Module, info: Mapping[str, Any]) -> dict[str, Any]:
        """The conditions the trained network ``net`` takes, ``{key: spec}``: by default every
        condition the data declares (``info["conditions"]``). Override it where a recipe can
        train an unconditional network on data that declares conditions, so that guidance and
        ``condition=`` are refused with the model's reason rather than the data's."""
        return dict(info.get("conditions") or {})

    def sample(self, net: nn.Module, fields: Mapping[str, FieldSpec], spec: Mapping[str, Any], settings: Any,
               control: Any, *, seed: Tensor, device: torch.device) -> State:
        """Generate the states of ``spec`` (a part of :meth:`prior_state`'s output) with ``net``.

        ``settings`` is a :class:`polydiff.SampleSettings`, ``control`` a
        :class:`polydiff.steering.Control` (guidance, observations, steering), ``seed`` the
        (B,) per-sample seeds. The default is one :func:`polydiff.steering.controlled_sample`
        loop; override it for models whose samples do not come out of one loop (block-wise
        generation, semi-autoregressive windows, receding-horizon rollouts, chunked audio) and
        honour ``control`` there or reject what it cannot do."""
        from .steering import controlled_sample

        return controlled_sample(net, fields, spec, settings, control, seed=seed, device=device)

    @abstractmethod
    def to_native(self, state: State, info: Mapping[str, Any]) -> list[Any]:
        """Generated state -> the field's own objects (graphs, molecules, frames, arrays...).

        The generator converts a run chunk by chunk: ``info["first_sample"]`` is then the
        index in the run of the state's first sample, so objects named by their position get
        the same names whatever the batch size (:func:`polydiff.plugin.sample_name`)."""

    def native_types(self, info: Mapping[str, Any]) -> tuple[type, ...] | None:
        """The classes of the objects :meth:`to_native` returns for a model with ``info`` (e.g.
        ``(networkx.Graph,)``); the generator then refuses anything else given to ``save``,
        ``evaluate`` or ``plot`` with one line naming it (a list of strings handed to a graph
        metric, a single object for a list). None (the default): objects are not checked, as
        for modalities whose objects are arrays."""
        return None

    def from_native(self, objects: Sequence[Any], info: Mapping[str, Any]) -> State:
        """Objects -> a state (used for observations and for evaluating files)."""
        raise NotImplementedError(f"modality {self.name!r} cannot convert objects back to states")

    # -- files, metrics, plots --
    @abstractmethod
    def write(self, objects: Sequence[Any], out_dir: Path) -> list[Path]:
        """Write objects in the field's native formats; return the paths written."""

    @abstractmethod
    def read(self, path: Path) -> list[Any]:
        """Read objects from a file or a directory of native files (written by :meth:`write` or
        by any other tool); a bad file raises an error naming it and the record at fault."""

    @abstractmethod
    def evaluate(self, objects: Sequence[Any], reference: Sequence[Any], info: Mapping[str, Any]) -> dict[str, float]:
        """Metrics of generated objects against reference objects (e.g. the test split).
        ``info`` may be empty when evaluating a user's files without a recipe."""

    def flags(self, objects: Sequence[Any], info: Mapping[str, Any]) -> dict[str, list[Any]]:
        """Per-sample flags or values (``{"valid": [...], "stable": [...]}``, one entry per
        object) that ``polydiff evaluate`` writes beside the metrics; none by default."""
        return {}

    def evaluate_model(self, generator: Any, *, num: int, seed: int, **options: Any) -> dict[str, float]:
        """Metrics of a trained model (``polydiff evaluate CKPT --option key=value``): by default
        the metrics of ``num`` generated samples (``options``: those of :meth:`evaluate`, such as
        graphs' ``fcd``). Override to add those that need the model itself (held-out likelihood
        or perplexity, forecasts, rollouts in an environment)."""
        return generator.evaluate(generator.generate(num, seed=seed), **evaluation_options(self, options))

    def observation(self, path: Path, info: Mapping[str, Any]) -> Any:
        """An observation for conditional generation (``polydiff sample --observed FILE``) from a
        file: ``.pt`` / ``.npz`` tensors by default (:func:`polydiff.guidance.load_observed`);
        plugins read their native files (a series CSV, a motif PDB, a MIDI track)."""
        from .guidance import load_observed

        path = Path(path)
        if path.suffix not in (".pt", ".pth", ".npz"):
            raise ValueError(f"{path}: modality {self.name!r} reads observations only from .pt / .npz tensor files")
        return load_observed(path)

    def reference_split(self, data: DataBundle) -> Dataset:
        """The split :meth:`reference` takes its objects from: the test split; a dataset without
        one falls back to the validation split, else to the training split, with a warning that
        says so (metrics against training data flatter a model that memorised it)."""
        name = data.info.get("dataset", "?")
        if _size(data.test):
            return data.test
        if _size(data.val):
            warnings.warn(f"dataset {name!r} has no test split: evaluating against its validation split "
                          f"({_size(data.val)} items)", stacklevel=3)
            return data.val
        warnings.warn(f"dataset {name!r} has no test or validation split: evaluating against its training data "
                      f"({_size(data.train)} items), so the metrics flatter a model that memorised it", stacklevel=3)
        return data.train

    def reference(self, data: DataBundle) -> list[Any]:
        """Reference objects for :meth:`evaluate`: the test split (see :meth:`reference_split`)."""
        ds = self.reference_split(data)
        collate = data.collate or default_collate
        return self.to_native(collate([ds[i] for i in range(len(ds))]), data.info)

    def plot(self, objects: Sequence[Any], path: Path, reference: Sequence[Any] | None = None) -> Path | None:
        """Save a figure of some objects (over ``reference`` where that helps) to ``path``
        (PNG); None if the plugin has no plot or its plotting library is missing. A plugin's
        ``plot`` may also take ``info`` (the model's data info), which ``--plot`` then passes."""
        return None

    def commands(self) -> dict[str, Command]:
        """Subcommands of ``polydiff <modality name>`` (e.g. ``polydiff timeseries forecast``)."""
        return {}

    def describe(self) -> dict[str, Any]:
        """What ``polydiff modalities`` prints."""
        return {"description": self.description, "datasets": list(self.datasets()),
                "networks": list(self.networks()), "recipes": {k: str(v) for k, v in self.recipes().items()},
                "commands": list(self.commands())}
