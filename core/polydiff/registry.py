"""Registries: a tiny decorator registry for named components, and plugin discovery.

``Registry`` is score_sde's idea: ``@SAMPLERS.register("euler", "one-line description")``
puts a function or class under a name; ``get`` and ``build`` fail with an error that lists
the allowed names. Modality plugins are found through the ``polydiff.modalities`` entry-point
group without importing them until asked for.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any

ENTRY_POINT_GROUP = "polydiff.modalities"


class RegistryError(KeyError):
    """An unknown name, or bad options for a registered component."""

    def __str__(self) -> str:  # KeyError quotes its message; show it plainly
        return str(self.args[0])


class Registry:
    """Named components with one-line descriptions."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, tuple[Any, str]] = {}

    def register(self, name: str, description: str = "") -> Callable[[Any], Any]:
        """Decorator: register ``obj`` under ``name``."""

        def deco(obj: Any) -> Any:
            if name in self._items:
                raise RegistryError(f"{self.kind} {name!r} is registered twice")
            doc = description or (inspect.getdoc(obj) or "").split("\n")[0]
            self._items[name] = (obj, doc)
            return obj

        return deco

    def get(self, name: str) -> Any:
        """The component registered as ``name``; a clear error listing the choices otherwise."""
        if name not in self._items:
            close = difflib.get_close_matches(name, self._items, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise RegistryError(f"unknown {self.kind} {name!r}.{hint} Allowed: {', '.join(sorted(self._items))}")
        return self._items[name][0]

    def build(self, name: str, **options: Any) -> Any:
        """Call the registered factory with ``options``, naming any option it does not take."""
        factory = self.get(name)
        try:
            params = inspect.signature(factory).parameters
        except (TypeError, ValueError):
            params = {}
        if params and not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            unknown = sorted(set(options) - set(params))
            if unknown:
                allowed = ", ".join(p for p in params if p != "self") or "none"
                raise RegistryError(f"{self.kind} {name!r} has no option {', '.join(unknown)}; allowed: {allowed}")
        return factory(**options)

    def describe(self) -> dict[str, str]:
        """``{name: description}`` for listings such as ``polydiff samplers``."""
        return {k: v[1] for k, v in sorted(self._items.items())}

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self):
        return iter(sorted(self._items))

    def __len__(self) -> int:
        return len(self._items)


@dataclass(frozen=True)
class ModalityInfo:
    """What the entry point says about an installed plugin, read without importing it."""

    name: str
    target: str
    distribution: str | None


class ModalityNotFound(RegistryError):
    """No plugin of that name is installed, or its optional dependencies are missing."""


def _entry_points() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def available_modalities() -> dict[str, ModalityInfo]:
    """Installed modality plugins, by name, without importing any of them."""
    out = {}
    for name, ep in sorted(_entry_points().items()):
        dist = getattr(ep, "dist", None)
        out[name] = ModalityInfo(name, ep.value, dist.name if dist is not None else None)
    return out


def load_modality(name: str, **options: Any) -> Any:
    """Import and instantiate the plugin registered as ``name``.

    Raises :class:`ModalityNotFound` naming what to ``pip install`` when the plugin or one of
    its optional dependencies is missing.
    """
    eps = _entry_points()
    if name not in eps:
        have = ", ".join(sorted(eps)) or "none"
        raise ModalityNotFound(
            f"no polydiff modality {name!r} is installed (installed: {have}). "
            f"Install it with `pip install polydiff-{name}` (or `pip install -e modalities/{name}` in a checkout)."
        )
    try:
        obj = eps[name].load()
    except ModuleNotFoundError as err:
        raise ModalityNotFound(
            f"modality {name!r} needs the package {err.name!r}, which is not installed: "
            f"`pip install polydiff-{name}` pulls its dependencies (or `pip install {err.name}`)."
        ) from err
    return obj(**options) if inspect.isclass(obj) or (callable(obj) and not hasattr(obj, "name")) else obj


def import_object(path: str) -> Any:
    """Import ``"package.module:attribute"``; used for user-supplied components in configs."""
    module, _, attr = path.partition(":")
    if not attr:
        raise RegistryError(f"expected 'module:attribute', got {path!r}")
    return getattr(importlib.import_module(module), attr)
