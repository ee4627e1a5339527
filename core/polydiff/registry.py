"""Registries: a tiny decorator registry for named components, and plugin discovery.

``Registry`` is score_sde's idea: ``@SAMPLERS.register("euler", "one-line description")``
puts a function or class under a name; ``get`` and ``build`` fail with an error that lists
the allowed names. Modality plugins are found through the ``polydiff.modalities`` entry-point
group without importing them until asked for.

Option values are checked against the annotations of the factory that receives them
(:func:`check_options`, :func:`check_value`; pydantic does the checking), so that a recipe's
``hidden: wide`` is an error naming the option and the expected type, not a ``TypeError`` deep
inside the factory.
"""

from __future__ import annotations

import collections.abc
import contextlib
import difflib
import enum
import functools
import importlib
import inspect
import math
import numbers
import sys
import types
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path, PurePath
from typing import Any

ENTRY_POINT_GROUP = "polydiff.modalities"


def no_option(what: str, unknown: Sequence[str], allowed: Sequence[str]) -> str:
    """``"<what> has no option x; allowed: a, b"``, with "did you mean" for a near miss."""
    close = [m for u in unknown for m in difflib.get_close_matches(u, list(allowed), n=1)]
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    return f"{what} has no option {', '.join(unknown)}{hint}; allowed: {', '.join(allowed) or 'none'}"


def whole_number(name: str, value: Any, low: int | None = 1) -> int:
    """``value`` as an int when it is a whole number (Python or numpy) of at least ``low``
    (None: any), else a ValueError naming ``name``: counts, steps and sizes users pass."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or (low is not None and value < low):
        what = "an integer" if low is None else "a positive integer" if low == 1 else f"an integer >= {low}"
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return int(value)


def seed_value(seed: Any, name: str = "seed") -> int:
    """A whole-number seed (Python or numpy); None draws a fresh one from torch's generator."""
    if seed is None:
        import torch

        return int(torch.randint(0, 2**31 - 1, (1,)).item())
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise ValueError(f"{name} must be an integer (or None for a fresh one), got {seed!r}")
    return int(seed)


class RegistryError(KeyError):
    """An unknown name, or bad options for a registered component."""

    def __str__(self) -> str:  # KeyError quotes its message; show it plainly
        return str(self.args[0])


class Registry:
    """Named components with one-line descriptions.

    ``providers`` name modules that register into this registry and are imported on its first
    lookup, so that a heavy component (one needing torch) is known without being imported by
    whoever merely creates the registry. ``on_miss`` is called once, the first time a name is
    not found, to import components registered elsewhere (the samplers of installed plugins
    that the running model's plugin did not import); it returns a note for the error when a
    name is still unknown."""

    def __init__(self, kind: str, providers: Sequence[str] = (),
                 on_miss: Callable[[], str] | None = None) -> None:
        self.kind = kind
        self._items: dict[str, tuple[Any, str]] = {}
        self._providers = list(providers)
        self._on_miss, self._miss_note = on_miss, ""

    @property
    def _entries(self) -> dict[str, tuple[Any, str]]:
        """The registered components, after importing the providers (once)."""
        while self._providers:
            importlib.import_module(self._providers.pop(0))
        return self._items

    def _has(self, name: object) -> bool:
        if name not in self._entries and self._on_miss is not None:
            hook, self._on_miss = self._on_miss, None
            self._miss_note = hook()
        return name in self._entries

    def register(self, name: str, description: str = "") -> Callable[[Any], Any]:
        """Decorator: register ``obj`` under ``name``."""

        def deco(obj: Any) -> Any:
            if name in self._items:
                raise RegistryError(f"{self.kind} {name!r} is registered twice")
            doc = description or (inspect.getdoc(obj) or "").split("\n")[0]
            if description and not getattr(obj, "__doc__", None):
                with contextlib.suppress(AttributeError, TypeError):  # help(obj) shows what the listing shows
                    obj.__doc__ = description
            self._items[name] = (obj, doc)
            return obj

        return deco

    def get(self, name: str) -> Any:
        """The component registered as ``name``; a clear error listing the choices otherwise."""
        if not self._has(name):
            close = difflib.get_close_matches(name, self._entries, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise RegistryError(f"unknown {self.kind} {name!r}.{hint} Allowed: {', '.join(sorted(self._entries))}"
                                f"{self._miss_note}")
        return self._entries[name][0]

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
                raise RegistryError(no_option(f"{self.kind} {name!r}", unknown, [p for p in params if p != "self"]))
        # values a recipe can hold are checked against the annotations; objects a program passes are the factory's
        plain = {k: v for k, v in options.items() if is_plain(v)}
        try:
            options = {**options, **check_options(factory, plain)}
        except ValueMismatch as err:
            raise RegistryError(f"{self.kind} {name!r} option {err.name}: {err}") from None
        return factory(**options)

    def describe(self) -> dict[str, str]:
        """``{name: description}`` for listings such as ``polydiff samplers``."""
        return {k: v[1] for k, v in sorted(self._entries.items())}

    def __contains__(self, name: object) -> bool:
        return self._has(name)

    def __iter__(self):
        return iter(sorted(self._entries))

    def __len__(self) -> int:
        return len(self._entries)


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


def plugins_fingerprint() -> str:
    """A digest that changes whenever what the installed plugins (and the core) register could
    change: the entry points, their distributions' versions and the size and modification time
    of every file of their packages and of polydiff's. Computed without importing any plugin;
    listings cache their answers under it."""
    import hashlib
    import importlib.util

    parts, packages = [], {"polydiff"}
    for name, ep in sorted(_entry_points().items()):
        dist = getattr(ep, "dist", None)
        parts.append(f"{name}={ep.value}@{dist.name if dist else ''}-{dist.version if dist else ''}")
        packages.add(ep.value.partition(":")[0].split(".")[0])
    for pkg in sorted(packages):
        try:
            spec = importlib.util.find_spec(pkg)
        except (ImportError, ValueError):
            spec = None
        for folder in (spec.submodule_search_locations or []) if spec is not None else []:
            for f in sorted(Path(folder).rglob("*")):
                if "__pycache__" not in f.parts and f.is_file():
                    st = f.stat()
                    parts.append(f"{f}:{st.st_size}:{st.st_mtime_ns}")
        parts.append(f"{pkg}:{spec.origin if spec is not None else 'missing'}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def load_modality(name: str, **options: Any) -> Any:
    """Import and instantiate the plugin registered as ``name``.

    Raises :class:`ModalityNotFound` naming what to ``pip install`` when the plugin or one of
    its optional dependencies is missing.
    """
    eps = _entry_points()
    if name not in eps:
        have = ", ".join(sorted(eps)) or "none"
        close = difflib.get_close_matches(name, list(eps), n=1)
        hint = f"Did you mean {close[0]!r}?" if close else install_hint(name)  # a typo, not a missing plugin
        raise ModalityNotFound(f"no polydiff modality {name!r} is installed (installed: {have}). {hint}")
    ep = eps[name]
    dist = getattr(ep, "dist", None)
    value = str(getattr(ep, "value", ""))
    module, _, attr = (part.strip() for part in value.partition(":"))
    where = f"the entry point {name} = {value!r}" + (f" of {dist.name}" if dist is not None else "")
    try:
        obj = ep.load()
    except ModuleNotFoundError as err:
        if err.name and module and (module == err.name or module.startswith(err.name + ".")):
            raise ModalityNotFound(f"{where} names the module {err.name!r}, which does not exist: fix "
                                   "[project.entry-points.\"polydiff.modalities\"] in the plugin's pyproject.toml and "
                                   "install it again") from err
        hint = install_hint(name, dist.name if dist is not None else None)
        raise ModalityNotFound(f"modality {name!r} needs the module {err.name!r}, which is not installed; installing "
                               f"the plugin pulls in its dependencies. {hint}") from err
    except AttributeError as err:
        loaded = sys.modules.get(module)
        if loaded is None or hasattr(loaded, attr.split(".")[0]):
            raise  # raised inside the plugin's own code: its traceback says where
        raise ModalityNotFound(f"{where} names {attr!r}, which the module {module!r} does not define: fix "
                               "[project.entry-points.\"polydiff.modalities\"] in the plugin's pyproject.toml") from err
    if inspect.isclass(obj) or (callable(obj) and not hasattr(obj, "name")):
        obj = obj(**options)
    for needed in ("name", "datasets", "fields", "network"):
        if not hasattr(obj, needed):
            raise ModalityNotFound(f"{where} gives a {type(obj).__name__}, not a modality (no {needed!r}): point it "
                                   "at a polydiff.plugin.Modality subclass")
    if obj.name != name:
        raise ModalityNotFound(f"{where} gives a modality named {obj.name!r}; its name must be the entry point's "
                               f"name, {name!r} (samples and checkpoints record it to find the plugin again)")
    return obj


def install_hint(name: str, distribution: str | None = None) -> str:
    """How to install the plugin ``name``: polydiff's own plugins are not published on PyPI but
    installed from their folder of a polydiff checkout; others from their own distribution."""
    folder = Path(__file__).resolve().parents[2] / "modalities" / name
    if (folder / "pyproject.toml").is_file():
        return f"Install it from its folder: `pip install -e {folder}`."
    if distribution is not None:
        return f"Install its distribution again: `pip install --force-reinstall {distribution}`."
    return (f"polydiff's own plugins are installed from their folder of a polydiff checkout (`pip install -e "
            f"modalities/{name}`), not from PyPI; a third-party plugin, from its own distribution.")


def import_object(path: str) -> Any:
    """Import ``"package.module:attribute"``; used for user-supplied components in configs."""
    module, _, attr = path.partition(":")
    if not attr:
        raise RegistryError(f"expected 'module:attribute', got {path!r}")
    return getattr(importlib.import_module(module), attr)


# ---------------------------------------------------------------------------------------------
# option values checked against annotations
# ---------------------------------------------------------------------------------------------

class ValueMismatch(ValueError):
    """A value that does not fit the annotation (or the choices) it is checked against;
    ``expected`` says in words what would fit, ``name`` is the option's name where known."""

    def __init__(self, expected: str, value: Any, name: str | None = None) -> None:
        super().__init__(f"expected {expected}, got {_show(value)}")
        self.expected, self.value, self.name = expected, value, name


_FAIL = object()
_EMPTY = inspect.Parameter.empty
_PLAIN = (type(None), bool, int, float, str, list, tuple, dict)


def is_plain(value: Any) -> bool:
    """Whether ``value`` is of a kind a recipe or a command line can hold (None, bool, number,
    string, list, mapping): the values that are checked where a program may pass any object."""
    return isinstance(value, _PLAIN)


def check_value(value: Any, hint: Any, choices: Sequence[Any] | None = None, default: Any = _EMPTY) -> Any:
    """``value`` checked against the annotation ``hint`` and returned converted to it.

    pydantic checks it (lax mode), keeping what YAML users rely on: ``"1e-3"`` (a string in
    YAML 1.1) is a number, an integer is accepted where a float is expected, an integral float
    where an integer is; ``precision: 32`` is the string ``"32"`` when the allowed values are
    strings. Booleans stay booleans (``true`` is not 1, ``1`` is not ``true``), and a string is
    never split into a list. ``choices`` (or a ``Literal`` hint) lists the allowed values; a
    ``default`` of None allows None. Raises :class:`ValueMismatch`.
    """
    if value is None and default is None:
        return None
    given = value
    allowed = list(choices) if choices is not None else _literal(hint)
    if allowed and all(isinstance(c, str) for c in allowed) and isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    out = _validate(value, hint)
    if out is _FAIL or (choices is not None and out not in choices):
        expected = f"one of {', '.join(map(str, allowed))}" if allowed else describe_type(hint)
        if (allowed or default is None) and (_allows_none(hint) or default is None) and "null" not in expected:
            expected += " or null"
        raise ValueMismatch(expected, given)
    if isinstance(out, float) and math.isnan(out) and hint is not Any:  # p_std: .nan trained until "diverged"
        raise ValueMismatch("a number (not NaN)", given)
    return out


def check_options(fn: Any, options: Mapping[str, Any], skip: int = 0) -> dict[str, Any]:
    """``options`` (keyword arguments of ``fn`` after its first ``skip`` parameters) checked
    against ``fn``'s annotations (:func:`param_hints`) and returned converted. Names ``fn``
    does not declare, and parameters without a resolvable annotation, are passed through
    unchecked (unknown names are the caller's to reject). Raises :class:`ValueMismatch` with
    ``name`` set."""
    try:
        params = list(inspect.signature(fn).parameters.values())[skip:]
    except (TypeError, ValueError):
        return dict(options)
    named = {p.name: p for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    hints = param_hints(fn) if any(k in named for k in options) else {}
    out = {}
    for k, v in options.items():
        if k not in named or k not in hints:
            out[k] = v
            continue
        try:
            out[k] = check_value(v, hints[k], default=named[k].default)
        except ValueMismatch as err:
            err.name = k
            raise
    return out


def check_keywords(fn: Any, options: Mapping[str, Any], what: str, label: str, skip: Sequence[str] = ()
                   ) -> dict[str, Any]:
    """``options`` as keyword arguments of ``fn`` (its parameters other than ``skip``), checked
    and converted by :func:`check_options`; a ValueError naming ``what`` for a name ``fn`` does
    not take (unless it takes ``**``), and one naming ``label`` and the option for a value that
    does not fit. Used for ``polydiff evaluate --option`` and plugins' evaluation options."""
    params = inspect.signature(fn).parameters.values()
    if not any(p.kind is p.VAR_KEYWORD for p in params):
        allowed = [p.name for p in params
                   if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in skip]
        unknown = sorted(set(options) - set(allowed))
        if unknown:
            raise ValueError(no_option(what, unknown, allowed))
    try:
        return check_options(fn, options)
    except ValueMismatch as err:
        raise ValueError(f"{label} {err.name}: {err}") from None


def param_hints(fn: Any) -> dict[str, Any]:
    """The resolved annotations of ``fn``'s parameters (``__init__``'s for a class), by name.

    ``typing.get_type_hints`` resolves them where it can; a signature set by hand
    (``__signature__``) or a function some of whose annotations do not resolve is read
    parameter by parameter, string annotations (``from __future__ import annotations``)
    evaluated in the function's module with ``typing`` and ``collections.abc`` names at hand.
    A parameter whose annotation cannot be resolved is left out (checked by name only).
    """
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return {}
    target = fn.__init__ if inspect.isclass(fn) else fn
    resolved: dict[str, Any] = {}
    for obj in (target, fn) if hasattr(fn, "__dataclass_fields__") else (target,):  # a dataclass: its fields' too
        try:
            resolved = {**typing.get_type_hints(obj), **resolved}
        except Exception:  # an unresolvable annotation (a TYPE_CHECKING import ...): per parameter below
            pass
    raw = getattr(target, "__annotations__", None) or {}
    out, namespace = {}, None
    for p in sig.parameters.values():
        ann = p.annotation
        if ann is p.empty:
            continue
        if p.name in resolved and (raw.get(p.name, ann) == ann or not isinstance(ann, str)):
            out[p.name] = resolved[p.name]
        elif not isinstance(ann, str):
            out[p.name] = ann
        else:
            namespace = namespace if namespace is not None else _namespace(fn, target)
            try:
                out[p.name] = eval(ann, namespace)  # an annotation string of the plugin's own code
            except Exception:
                continue
    return out


_TYPING_NAMES = {**{k: getattr(collections.abc, k) for k in collections.abc.__all__},
                 **{k: getattr(typing, k) for k in ("Any", "Optional", "Union", "Literal", "Annotated")}}


def _namespace(fn: Any, target: Any) -> dict[str, Any]:
    module = sys.modules.get(getattr(fn, "__module__", "") or "")
    ns = dict(_TYPING_NAMES)
    ns.update(vars(module) if module is not None else {})
    ns.update(getattr(inspect.unwrap(target), "__globals__", None) or {})
    return ns


def _validate(value: Any, hint: Any) -> Any:
    """``value`` validated against ``hint`` (``_FAIL`` if it does not fit), retrying a string
    that reads as a number (YAML 1.1's ``1e-3``) as that number."""
    if hint is Any or hint is object or hint is _EMPTY:
        return value
    adapter = _adapter(hint)
    if adapter is None:  # a type pydantic cannot check: unchecked
        return value
    out = _try(adapter, value)
    if out is _FAIL and isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return _FAIL
        out = _try(adapter, number)
    return out


def _try(adapter: Any, value: Any) -> Any:
    from pydantic import ValidationError

    try:
        out = adapter.validate_python(value)
        if isinstance(out, Iterator) and not isinstance(value, Iterator):  # an Iterable hint: keep a list
            out = list(out)
    except ValidationError:
        return _FAIL
    except Exception:  # a check pydantic cannot run on this hint (isinstance on a protocol ...): unchecked
        return value
    if isinstance(value, str) and not isinstance(out, str) and isinstance(out, (list, tuple, set, frozenset)):
        return _FAIL  # a string is not a list of its characters
    return out if _same_bools(value, out) else _FAIL


def _same_bools(given: Any, out: Any) -> bool:
    """Whether booleans stayed booleans and nothing else became one (pydantic's lax mode turns
    ``True`` into 1 for an int and ``1`` / ``"yes"`` into ``True`` for a bool)."""
    if isinstance(given, bool) or isinstance(out, bool):
        return isinstance(given, bool) and isinstance(out, bool)
    if isinstance(given, Mapping) and isinstance(out, Mapping):
        return all(_same_bools(v, out[k]) for k, v in given.items() if k in out)
    if isinstance(given, (list, tuple)) and isinstance(out, (list, tuple)) and len(given) == len(out):
        return all(_same_bools(a, b) for a, b in zip(given, out, strict=True))
    return True


def _adapter(hint: Any) -> Any:
    try:
        return _cached_adapter(hint)
    except TypeError:  # an unhashable hint
        return _make_adapter(hint)


@functools.lru_cache(maxsize=1024)
def _cached_adapter(hint: Any) -> Any:
    return _make_adapter(hint)


def _make_adapter(hint: Any) -> Any:
    from pydantic import ConfigDict, TypeAdapter

    try:
        return TypeAdapter(hint, config=ConfigDict(arbitrary_types_allowed=True))
    except Exception:  # a model type with its own config, or a hint pydantic does not know
        try:
            return TypeAdapter(hint)
        except Exception:
            return None


def _literal(hint: Any) -> list[Any] | None:
    """The values of a ``Literal`` hint (``Literal[...] | None`` too), else None."""
    members = [a for a in _members(hint) if a is not type(None)]
    if members and all(typing.get_origin(m) is typing.Literal for m in members):
        return [v for m in members for v in typing.get_args(m)]
    return None


def _members(hint: Any) -> tuple[Any, ...]:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return typing.get_args(hint)
    return (hint,)


def _allows_none(hint: Any) -> bool:
    return type(None) in _members(hint) or hint is None


_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string", type(None): "null",
          bytes: "a string"}
_PLURALS = {bool: "true/false values", int: "integers", float: "numbers", str: "strings", type(None): "nulls"}
_SEQUENCES = (list, tuple, set, frozenset, collections.abc.Sequence, collections.abc.MutableSequence,
              collections.abc.Iterable, collections.abc.Collection, collections.abc.Set, collections.abc.MutableSet)
_MAPPINGS = (dict, collections.abc.Mapping, collections.abc.MutableMapping)


def describe_type(hint: Any) -> str:
    """A type annotation in words for error messages: ``int | None`` -> "an integer or null",
    ``list[int]`` -> "a list of integers", ``Mapping[str, Any]`` -> "a mapping"."""
    if hint is Any or hint is object or hint is _EMPTY:
        return "any value"
    if hint is None or hint is type(None):
        return "null"
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        parts = [describe_type(a) for a in args if a is not type(None)]
        return " or ".join(parts + (["null"] if type(None) in args else []))
    if origin is typing.Literal:
        return f"one of {', '.join(map(str, args))}"
    if origin is typing.Annotated:
        return describe_type(args[0])
    if hint in _NAMES:
        return _NAMES[hint]
    if origin in _MAPPINGS or hint in _MAPPINGS:
        if len(args) == 2 and args[1] is not Any:
            return f"a mapping of {_plural(args[0])} to {_plural(args[1])}"
        return "a mapping"
    if origin is tuple and args and args[-1] is not Ellipsis:
        same = all(a == args[0] for a in args)
        return f"a list of {len(args)} {_plural(args[0]) if same else 'items'}"
    if origin in _SEQUENCES or hint in _SEQUENCES:
        item = args[0] if args else Any
        return "a list" if item is Any else f"a list of {_plural(item)}"
    if origin in (collections.abc.Callable, Callable) or hint in (collections.abc.Callable, Callable):
        return "a callable"
    if inspect.isclass(hint) and issubclass(hint, enum.Enum):
        return f"one of {', '.join(str(m.value) for m in hint)}"
    if inspect.isclass(hint) and issubclass(hint, PurePath):
        return "a path"
    name = getattr(hint, "__name__", None) or str(hint)
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"


def _plural(hint: Any) -> str:
    if hint in _PLURALS:
        return _PLURALS[hint]
    return f"items that are {describe_type(hint)}"


def _show(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
