"""Run recipes: a small YAML schema of dataclasses, checked against type annotations.

A recipe has seven sections::

    modality: toy
    data:    {name: gmm, k: 8}                # dataset name + its options
    model:   {name: mlp, hidden: 128}         # network name + its options
    process: {schedule: vp_cosine, prediction: eps}   # -> modality.fields(info, **process)
    loss:    {weighting: prediction, time_density: uniform, cond_drop: 0.0}
    train:   {max_steps: 2000, batch_size: 256, lr: 2e-3, ...}
    sample:  {num: 1000, sampler: dpm++2m, steps: 20, seed: 0}

Every value is checked against an annotation by pydantic (:func:`polydiff.registry.check_value`,
lax where YAML is ambiguous: ``1e-3`` is a string in YAML 1.1, ``precision: 32`` an int): the
``train``, ``loss`` and ``sample`` sections against the dataclasses below (and allowed
values, registered names; the recipe's modality plugin is imported first, so the samplers,
weightings, time densities and objectives it registers are known; options of a weighting, a
time density, an objective or a sampler against its signature or defaults), the options of
``data``, ``model`` and ``process`` against the annotations of the modality's factory that
receives them. The values are kept converted (``"1e-3"`` -> 0.001, ``3`` -> 3.0 for a float).
Unknown option names of ``data``, ``model`` and ``process`` are reported when the run is
built. A recipe shipped with a plugin is named ``<modality>:<recipe>`` (``polydiff
modalities`` lists them). Every error is one line naming the file, the key path, the expected
type and the allowed values, e.g. ``configs/x.yaml: model.hidden: expected an integer, got
'wide'``. ``--set key.sub=value`` overrides are YAML-parsed and applied before checking.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import itertools
import math
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .registry import RegistryError, ValueMismatch, available_modalities, check_options, check_value, load_modality

PRECISIONS = ("32", "64", "bf16-mixed", "16-mixed", "bf16-true", "16-true")
LOGGERS = ("csv", "tensorboard", "none")
CHECKPOINT_FORMATS = ("full", "sharded")
OPTIMIZERS = ("adamw", "adam")
# keywords of polydiff.sample a recipe's `sample` section may set besides the sampler's own options
DRIVER_OPTIONS = ("grid", "categorical", "t_min", "t_max", "final_zero", "compile")


class UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping (plain YAML keeps the
    last value silently: a second ``train:`` section would drop the first)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                again = key in seen
            except TypeError:  # an unhashable key: the base loader's error says so
                break
            if again:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key {key!r} is given twice (first on line {seen[key] + 1})", key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


class ConfigError(ValueError):
    """A bad recipe; the message names the file, the key path and what is allowed."""


@dataclass
class Component:
    """A named component (dataset, network) and its options: YAML ``{name: ..., **options}``."""

    name: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The component as a YAML mapping: ``name`` plus its options."""
        return {"name": self.name, **self.options}


@dataclass
class TrainConfig:
    """Optimisation and hardware; Lightning receives accelerator / devices / strategy as is, except
    ``strategy: fsdp``, which shards the network and its EMA alike and also runs on CPUs
    (:func:`polydiff.training._strategy`)."""

    max_steps: int = 2000
    batch_size: int = 256
    lr: float = 1e-3
    # "adamw": decoupled weight decay; "adam": weight decay as an L2 term of the gradient (GDSS's Adam)
    optimizer: str = field(default="adamw", metadata={"choices": OPTIMIZERS})
    weight_decay: float = 0.0
    warmup: int = 0  # linear learning-rate warm-up, in steps
    lr_decay: float = 1.0  # learning rate times this after every epoch (pass over the training set); 1: constant
    ema: float = 0.999  # EMA decay of the weights; 0 turns EMA off
    grad_clip: float = 1.0  # max global gradient norm; 0 turns clipping off
    precision: str = field(default="32", metadata={"choices": PRECISIONS})
    accelerator: str = "auto"
    devices: int | str | list[int] = 1  # 1: one GPU if there is one, else the CPU; -1: all GPUs
    strategy: str = "auto"  # Lightning's: ddp, fsdp, ... ("auto": one process, or ddp on several devices)
    num_nodes: int = 1
    seed: int = 0
    max_minutes: float = 0.0  # wall-time budget of this call (stops early, saving last.ckpt); 0: none
    init: str | None = None  # checkpoint whose network (EMA) weights start a fresh run: fine-tuning
    init_partial: bool = False  # init loads the weights whose names and shapes match; the rest stay fresh (new heads)
    checkpoint_every: int = 500
    keep_checkpoints: int = 0  # step-*.ckpt files kept, the newest (last.ckpt is always kept); 0: all of them
    # "full": one file per checkpoint, gathered on rank 0; "sharded" (strategy fsdp): a folder of
    # per-rank shards, so no process ever holds the whole training state
    checkpoint_format: str = field(default="full", metadata={"choices": CHECKPOINT_FORMATS})
    log_every: int = 50
    val_every: int = 0  # steps between validation losses; 0 turns validation off
    num_workers: int = 0
    threads: int = 0  # torch CPU threads (torch.set_num_threads); 0 keeps PyTorch's default
    logger: str = field(default="csv", metadata={"choices": LOGGERS})
    progress: bool = True
    # torch.compile the network for the training loss (the loss, optimiser and EMA stay eager):
    # the first steps pay the compilation, every later step runs the fused graph; an energy
    # network's gradient and the backward through it compile into the same graph
    compile: bool = False


@dataclass
class LossConfig:
    """Arguments of :func:`polydiff.losses.diffusion_loss`, plus condition dropout, the
    training objective and its options (other keys of the section: parameters of the
    weighting, the time density or the objective)."""

    weighting: str = "prediction"
    time_density: str = "uniform"
    cond_drop: float = 0.0  # probability of replacing a sample's conditions by the null condition
    field_weights: dict[str, float] | None = None
    terms: dict[str, float] | None = None  # weights of the network's extra ``loss/<name>`` outputs (default 1)
    manifold_weighting: str = field(default="x0", metadata={"choices": ("x0", "velocity")})
    techniques: dict[str, Any] | None = None  # opt-in techniques (polydiff.techniques.Techniques)
    objective: str = "denoising"  # a registered objective (polydiff.losses.OBJECTIVES), e.g. ctm distillation
    teacher: str | None = None  # a frozen teacher checkpoint (distillation objectives)
    options: dict[str, Any] = field(default_factory=dict)  # weighting / time-density / objective parameters


@dataclass
class SampleConfig:
    """Defaults of ``polydiff sample``: how many, which sampler, how many steps, which seed."""

    num: int = 1000
    sampler: str = "dpm++2m"
    steps: int = 20
    seed: int = 0
    batch_size: int | None = None
    guidance_scale: float | None = None  # default classifier-free guidance scale on the data's conditions
    ema: bool = True  # sample the EMA weights (when trained with train.ema), else the raw ones (GDSS: use_ema False)
    options: dict[str, Any] = field(default_factory=dict)  # sampler options and driver keywords


@dataclass
class Config:
    """A whole recipe. ``source`` (the file it came from) is used in error messages only."""

    modality: str = "toy"
    data: Component = field(default_factory=Component)
    model: Component = field(default_factory=Component)
    process: dict[str, Any] = field(default_factory=dict)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    source: str = field(default="<config>", compare=False)

    def to_dict(self) -> dict[str, Any]:
        """The recipe as plain YAML/JSON-able primitives (what checkpoints store)."""
        return {
            "modality": self.modality,
            "data": self.data.to_dict(),
            "model": self.model.to_dict(),
            "process": dict(self.process),
            "loss": {**_plain(self.loss, "options"), **self.loss.options},
            "train": _plain(self.train),
            "sample": {**_plain(self.sample, "options"), **self.sample.options},
        }

    def error(self, path: str, message: str) -> ConfigError:
        """A :class:`ConfigError` about ``path`` in this recipe."""
        return ConfigError(f"{self.source}: {path}: {message}")


def _plain(obj: Any, skip: str = "") -> dict[str, Any]:
    return {f.name: _copy(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.name != skip}


def _copy(v: Any) -> Any:
    if isinstance(v, Mapping):
        return {k: _copy(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_copy(x) for x in v]
    return v


# ---------------------------------------------------------------------------------------------
# loading and checking
# ---------------------------------------------------------------------------------------------

def recipe_path(name: str | Path) -> Path:
    """A recipe file: a path, or ``<modality>:<recipe>`` for one shipped with a plugin."""
    path = Path(name)
    text = str(name)
    if path.is_file() or ":" not in text or "/" in text.partition(":")[0]:
        return path
    modality, _, recipe = text.partition(":")
    try:
        table = load_modality(modality).recipes()
    except RegistryError as err:
        raise ConfigError(f"{text}: {err}") from None
    if recipe not in table:
        raise ConfigError(f"{text}: modality {modality!r} ships no recipe {recipe!r}; "
                          f"recipes: {', '.join(table) or 'none'}")
    return table[recipe]


def load_config(path: str | Path, overrides: Iterable[str] | Mapping[str, Any] = ()) -> Config:
    """Read a YAML recipe (a path or ``<modality>:<recipe>``), apply ``key.sub=value``
    overrides and check it."""
    path = recipe_path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file{_shipped_hint(path)}")
    try:
        raw = yaml.load(path.read_text(encoding="utf-8-sig"), Loader=UniqueKeyLoader) or {}  # UTF-8 always
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not a text file ({err.reason} at byte {err.start})") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML at {yaml_problem(err, str(path))}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level, got {type(raw).__name__}")
    overrides = overrides if isinstance(overrides, (Mapping, str)) else list(overrides)
    try:
        return from_dict(apply_overrides(raw, overrides, str(path)), source=str(path))
    except ConfigError as err:  # the bad key or value may be the command line's, not the file's: say both
        head = f"{path}: "
        if not overrides or not str(err).startswith(head) or str(err).startswith(head + "--set"):
            raise
        raise ConfigError(f"{path} (with --set): {str(err)[len(head):]}") from None


def _shipped_hint(path: Path) -> str:
    """For a bare name that a plugin ships as a recipe (``gmm``): "; did you mean toy:gmm?"."""
    if len(path.parts) != 1 or ":" in path.name:
        return ""
    found = []
    for name in sorted(available_modalities()):
        try:
            recipes = load_modality(name).recipes()
        except Exception:  # a broken plugin must not hide the real error
            continue
        found += [f"{name}:{r}" for r in recipes if r == path.stem]
    return f"; did you mean {' or '.join(found)}? (shipped recipes: `polydiff modalities`)" if found else ""


def apply_overrides(raw: Mapping[str, Any], overrides: Iterable[str] | Mapping[str, Any],
                    source: str = "<config>") -> dict[str, Any]:
    """Return a copy of ``raw`` with each ``"a.b.c=value"`` set (values parsed as YAML) and each
    ``"~a.b.c"`` removed (a recipe key that another ``--set`` made invalid, e.g. an option of the
    dataset ``data.name`` no longer names). From Python, ``overrides`` may also be a dict
    ``{"a.b.c": value}`` (values taken as they are)."""
    out = _copy(dict(raw))
    if isinstance(overrides, str):
        overrides = [overrides]
    given = dict(overrides) if isinstance(overrides, Mapping) else None
    for item in given if given is not None else overrides:
        if given is not None:
            item = f"{item}="  # the value is given, not parsed
        if not isinstance(item, str):
            raise ConfigError(f"{source}: an override is 'key.path=value' (or a dict key.path -> value), got {item!r}")
        if item.startswith("~") and "=" not in item:
            *parents, last = item[1:].strip().split(".")
            node: Any = out
            for p in parents:
                node = node.get(p) if isinstance(node, dict) else None
            if not isinstance(node, dict) or last not in node:
                raise ConfigError(f"{source}: --set {item}: the recipe has no key {item[1:].strip()!r} to remove")
            del node[last]
            continue
        key, eq, text = item.partition("=")
        if not eq or not key.strip():
            raise ConfigError(f"{source}: --set expects key.path=value, got {item!r}")
        try:
            value = given[key] if given is not None else yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise ConfigError(f"{source}: --set {key.strip()}: {text!r} is not valid YAML at "
                              f"{yaml_problem(err, '--set', lines=False)}; quote a string value") from None
        *parents, last = key.strip().split(".")
        node = out
        for i, p in enumerate(parents):
            child = node.get(p)
            if child is None:
                child = node[p] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"{source}: --set {key}: {'.'.join(parents[:i + 1])} is not a section")
            node = child
        node[last] = value
    return out


def yaml_problem(err: yaml.YAMLError, name: str, lines: bool = True) -> str:
    """Where and what a YAML error is, from its marks: ``line 2, column 1: did not find
    expected ',' or ']' (while parsing a flow sequence at line 1, column 8)``; ``name`` replaces
    PyYAML's ``"<unicode string>"`` where there is no mark."""
    mark, problem = getattr(err, "problem_mark", None), getattr(err, "problem", None)
    if mark is None or not problem:
        return " ".join(str(err).replace('"<unicode string>"', name).split())

    def at(m: Any) -> str:
        return f"line {m.line + 1}, column {m.column + 1}" if lines else f"column {m.column + 1}"

    text = f"{at(mark)}: {problem}"
    context, cmark = getattr(err, "context", None), getattr(err, "context_mark", None)
    if context:
        text += f" ({context}" + (f" at {at(cmark)}" if cmark is not None else "") + ")"
    return text


_SECTIONS = ("modality", "data", "model", "process", "loss", "train", "sample")


def from_dict(raw: Mapping[str, Any] | Config, source: str = "<config>") -> Config:
    """Check a recipe given as a dict (or pass a :class:`Config` through)."""
    if isinstance(raw, Config):
        return raw
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{source}: expected a mapping of sections, got {type(raw).__name__}")
    _no_unknown(raw, _SECTIONS, "", source)
    cfg = Config(source=source)
    if "modality" not in raw:  # no silent fallback to the toy: an empty or truncated recipe is an error
        raise ConfigError(f"{source}: modality: missing; name the plugin the recipe is for "
                          f"(installed: {', '.join(sorted(available_modalities())) or 'none'})")
    modality = raw["modality"]
    if not isinstance(modality, str) or not modality:
        raise ConfigError(f"{source}: modality: expected a plugin name, got {modality!r}")
    cfg.modality = modality
    plugin = _load_plugin(modality, source)
    cfg.data = _component(raw.get("data"), "data", source)
    cfg.model = _component(raw.get("model"), "model", source)
    cfg.process = dict(_section(raw.get("process"), "process", source))
    _component_options(cfg, plugin, source)
    cfg.train = _fill(TrainConfig(), _section(raw.get("train"), "train", source), "train", source)
    loss = dict(_section(raw.get("loss"), "loss", source))
    cfg.loss = _fill(LossConfig(), _take(loss, LossConfig), "loss", source)
    cfg.loss.options = _loss_options(cfg.loss, loss, source)
    sample = dict(_section(raw.get("sample"), "sample", source))
    cfg.sample = _fill(SampleConfig(), _take(sample, SampleConfig), "sample", source)
    cfg.sample.options = _sample_options(cfg.sample, sample, source)
    _check_train(cfg, source)
    return cfg


def _load_plugin(name: str, source: str) -> Any:
    """Import the recipe's modality plugin, so that what it registers (samplers, weightings,
    time densities, objectives) is known before those names are checked."""
    try:
        return load_modality(name)
    except RegistryError as err:
        raise ConfigError(f"{source}: modality: {err}") from None


def _component_options(cfg: Config, modality: Any, source: str) -> None:
    """Check (and convert) the values of the ``data``, ``model`` and ``process`` options against
    the annotations of the factories that will receive them. Unknown names (and an unknown
    dataset or network) are left to :func:`build_data` and friends."""
    for section, table, skip in (("data", modality.datasets(), 0), ("model", modality.networks(), 2)):
        comp = getattr(cfg, section)
        factory = table.get(comp.name if comp.name is not None else next(iter(table), None))
        if factory is not None:
            comp.options = _typed_options(factory, comp.options, skip, section, source)
    cfg.process = _typed_options(modality.fields, cfg.process, 1, "process", source)


def _typed_options(factory: Any, options: Mapping[str, Any], skip: int, section: str, source: str) -> dict[str, Any]:
    """``options`` checked against ``factory``'s annotations (after ``skip`` positional
    parameters) and converted; a mismatch is a ConfigError naming ``section.option``."""
    try:
        return check_options(factory, options, skip)
    except ValueMismatch as err:
        raise ConfigError(f"{source}: {section}.{err.name}: {err}") from None


def _checked(value: Any, hint: Any, path: str, source: str, choices: Any = None,
             default: Any = inspect.Parameter.empty) -> Any:
    """:func:`polydiff.registry.check_value` with a ConfigError naming the file and ``path``."""
    try:
        return check_value(value, hint, choices, default)
    except ValueMismatch as err:
        raise ConfigError(f"{source}: {path}: {err}") from None


def _section(v: Any, name: str, source: str) -> Mapping[str, Any]:
    if v is None:
        return {}
    if not isinstance(v, Mapping):
        raise ConfigError(f"{source}: {name}: expected a mapping, got {v!r}")
    for k in v:
        if not isinstance(k, str):
            raise ConfigError(f"{source}: {name}: keys must be strings, got {k!r}")
    return v


def _component(v: Any, name: str, source: str) -> Component:
    if isinstance(v, str):  # `data: gmm` is short for `data: {name: gmm}`
        return Component(v, {})
    opts = dict(_section(v, name, source))
    comp_name = opts.pop("name", None)
    if comp_name is not None and not isinstance(comp_name, str):
        raise ConfigError(f"{source}: {name}.name: expected a name, got {comp_name!r}")
    return Component(comp_name, opts)


def _take(d: dict[str, Any], cls: type) -> dict[str, Any]:
    """Pop the keys that are fields of ``cls`` (other than ``options``) out of ``d``."""
    names = [f.name for f in dataclasses.fields(cls) if f.name != "options"]
    return {k: d.pop(k) for k in list(d) if k in names}


def _no_unknown(d: Mapping[str, Any], allowed: Iterable[str], prefix: str, source: str) -> None:
    allowed = list(allowed)
    for k in d:
        if k not in allowed:
            raise ConfigError(f"{source}: unknown key {prefix + k!r}{_near(k, allowed)}; allowed: "
                              f"{', '.join(allowed)}")


def _near(key: str, allowed: Sequence[str]) -> str:
    """`` (did you mean 'x'?)`` for a near miss among ``allowed``, else ``""``."""
    close = difflib.get_close_matches(key, list(allowed), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _fill(obj: Any, values: Mapping[str, Any], section: str, source: str) -> Any:
    """Set checked ``values`` on the dataclass ``obj``."""
    fields = {f.name: f for f in dataclasses.fields(obj) if f.name != "options"}
    _no_unknown(values, fields, section + ".", source)
    hints = typing.get_type_hints(type(obj))
    for k, v in values.items():
        setattr(obj, k, _checked(v, hints[k], f"{section}.{k}", source, fields[k].metadata.get("choices")))
    return obj


def _keywords(fn: Any, skip: int) -> list[str]:
    """Named keyword parameters of ``fn`` after its first ``skip`` positional ones."""
    params = list(inspect.signature(fn).parameters.values())[skip:]
    return [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def _registered(registry: Any, name: str, path: str, source: str) -> Any:
    try:
        return registry.get(name)
    except RegistryError as err:
        raise ConfigError(f"{source}: {path}: {err}") from None


def _loss_options(loss: LossConfig, rest: Mapping[str, Any], source: str) -> dict[str, Any]:
    from .losses import OBJECTIVES, TIME_DENSITIES, WEIGHTINGS

    w = _registered(WEIGHTINGS, loss.weighting, "loss.weighting", source)
    d = _registered(TIME_DENSITIES, loss.time_density, "loss.time_density", source)
    o = _registered(OBJECTIVES, loss.objective, "loss.objective", source)
    if not 0.0 <= loss.cond_drop < 1.0:
        raise ConfigError(f"{source}: loss.cond_drop: expected a probability in [0, 1), got {loss.cond_drop}")
    for k, v in (loss.field_weights or {}).items():  # NaN trained until "diverged", a negative weight a negative loss
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
            raise ConfigError(f"{source}: loss.field_weights.{k}: expected a finite number >= 0, got {v!r}")
    numeric = _keywords(w, 2) + _keywords(d, 3)
    objective = [k for k in _keywords(o, 0) if k not in ("teacher", "fields", "info")]
    allowed = [f.name for f in dataclasses.fields(LossConfig) if f.name != "options"] + numeric + objective
    _no_unknown(rest, allowed, "loss.", source)
    if loss.teacher is not None and "teacher" not in _keywords(o, 0):
        raise ConfigError(f"{source}: loss.teacher: objective {loss.objective!r} takes no teacher")
    if loss.techniques is not None:
        from .techniques import Techniques

        tech = _fill(Techniques(), loss.techniques, "loss.techniques", source)
        if tech.cond_drop > 0 and loss.cond_drop > 0:
            raise ConfigError(f"{source}: loss.techniques.cond_drop: condition dropout is set twice; "
                              "keep loss.cond_drop (it drops every condition of the data) or this one")
        given = {k: v for k, v in _plain(tech).items() if k in loss.techniques}
        try:  # the techniques' own consistency checks (Fokker-Planck options, alignment names), now
            Techniques.from_config(given)
        except (ValueError, KeyError) as err:
            raise ConfigError(f"{source}: {err.args[0] if err.args else err}") from None
        loss.techniques = given
    out = {}
    for k, v in rest.items():  # checked against the annotations of the factory that takes it
        fn, skip = next(((fn, skip) for fn, skip in ((w, 2), (d, 3), (o, 0)) if k in _keywords(fn, skip)), (o, 0))
        out.update(_typed_options(fn, {k: v}, skip, "loss", source))
    return out


def _sample_options(sample: SampleConfig, rest: Mapping[str, Any], source: str) -> dict[str, Any]:
    from .grids import GRIDS
    from .samplers import SAMPLERS
    from .samplers.base import SampleSettings

    sdef = _registered(SAMPLERS, sample.sampler, "sample.sampler", source)
    allowed = [f.name for f in dataclasses.fields(SampleConfig) if f.name != "options"]
    allowed += list(DRIVER_OPTIONS) + sorted(sdef.defaults)
    out = dict(rest)
    hints = typing.get_type_hints(SampleSettings)
    for k in DRIVER_OPTIONS:  # None leaves a setting at its default
        if k == "grid" and isinstance(out.get(k), list):  # times written out (noise end first), kept as a list
            g = out[k]
            if len(g) < 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                                     for v in g) or any(b >= a for a, b in itertools.pairwise(g)):
                raise ConfigError(f"{source}: sample.grid: a list of times must hold at least 2 finite numbers, "
                                  f"strictly decreasing (noise end first), got {g!r}")
        elif k in out:
            out[k] = _checked(out[k], hints[k], f"sample.{k}", source, default=None)
    cdef = None
    if out.get("categorical") is not None:
        cdef = _registered(SAMPLERS, out["categorical"], "sample.categorical", source)
        if cdef.kind != "categorical":
            raise ConfigError(f"{source}: sample.categorical: {out['categorical']!r} is not a categorical sampler")
        if cdef.loop == "own":
            raise ConfigError(f"{source}: sample.categorical: {out['categorical']!r} runs its own loop over a state "
                              "of absorbing fields only; name it as sample.sampler")
        allowed += sorted(cdef.defaults)
    _no_unknown(out, allowed, "sample.", source)
    if isinstance(out.get("grid"), str):
        _registered(GRIDS, out["grid"], "sample.grid", source)
    for d in (sdef, cdef):
        for k in (d.defaults if d is not None else ()):
            if k in out:
                try:
                    out[k] = d.check(k, out[k])
                except ValueMismatch as err:
                    raise ConfigError(f"{source}: sample.{k}: {err}") from None
    from .samplers.driver import COMPILE_MODES

    if out.get("compile") is not None and out["compile"] not in COMPILE_MODES:
        raise ConfigError(f"{source}: sample.compile: expected one of {', '.join(map(repr, COMPILE_MODES))}, "
                          f"got {out['compile']!r}")
    for k in ("num", "steps"):
        if getattr(sample, k) < 1:
            raise ConfigError(f"{source}: sample.{k}: expected a positive integer, got {getattr(sample, k)}")
    if sample.guidance_scale is not None and not sample.guidance_scale >= 0:
        raise ConfigError(f"{source}: sample.guidance_scale: expected a non-negative number or null, got "
                          f"{sample.guidance_scale}")
    if sample.batch_size is not None and sample.batch_size < 1:
        raise ConfigError(f"{source}: sample.batch_size: expected a positive integer or null, got {sample.batch_size}")
    return out


def _check_train(cfg: Config, source: str) -> None:
    t = cfg.train
    for k in ("max_steps", "batch_size", "checkpoint_every", "log_every", "num_nodes"):
        if getattr(t, k) < 1:
            raise ConfigError(f"{source}: train.{k}: expected a positive integer, got {getattr(t, k)}")
    for k in ("val_every", "num_workers", "warmup", "threads", "keep_checkpoints"):
        if getattr(t, k) < 0:
            raise ConfigError(f"{source}: train.{k}: expected a non-negative integer, got {getattr(t, k)}")
    if t.checkpoint_format == "sharded" and t.strategy != "fsdp":
        raise ConfigError(f"{source}: train.checkpoint_format: sharded checkpoints are written by train.strategy: "
                          f"fsdp, not {t.strategy!r}")
    if t.compile and t.strategy == "fsdp":
        raise ConfigError(f"{source}: train.compile: not supported with train.strategy: fsdp (compile with ddp or "
                          "one process)")
    tech = cfg.loss.techniques if isinstance(cfg.loss.techniques, Mapping) else {}
    if t.compile and (tech.get("fp_weight") or 0) > 0 and tech.get("fp_residual", "score") == "score":
        raise ConfigError(f"{source}: train.compile: the score Fokker-Planck penalty (loss.techniques.fp_weight) "
                          "differentiates the network's output again, which torch.compile cannot; set "
                          "loss.techniques.fp_residual: log_density (energy models) or train.compile: false")
    if not 0.0 <= t.ema < 1.0:
        raise ConfigError(f"{source}: train.ema: expected a decay in [0, 1) (0 = off), got {t.ema}")
    if not 0.0 < t.lr_decay <= 1.0:
        raise ConfigError(f"{source}: train.lr_decay: expected a factor per epoch in (0, 1] (1 = constant), "
                          f"got {t.lr_decay}")
    if not (math.isfinite(t.lr) and t.lr > 0):
        raise ConfigError(f"{source}: train.lr: expected a positive number, got {t.lr}")
    for k in ("weight_decay", "grad_clip", "max_minutes"):
        if not (math.isfinite(getattr(t, k)) and getattr(t, k) >= 0):
            raise ConfigError(f"{source}: train.{k}: expected a non-negative number, got {getattr(t, k)}")


# ---------------------------------------------------------------------------------------------
# building a run's pieces from a recipe (options checked against the modality's factories)
# ---------------------------------------------------------------------------------------------

def build_data(cfg: Config, modality: Any) -> Any:
    """``modality.dataset(cfg.data.name, **cfg.data.options)`` with errors that name the recipe."""
    table = modality.datasets()
    name = _pick(cfg, "data", table, "dataset", modality.name)
    options = _check_options(cfg, table[name], cfg.data.options, 0, "data", f"dataset {name!r}")
    return _guard(cfg, "data", lambda: table[name](**options), f"dataset {name!r}", options)


def build_fields(cfg: Config, modality: Any, info: Mapping[str, Any]) -> Any:
    """``modality.fields(info, **cfg.process)`` with errors that name the recipe."""
    options = _check_options(cfg, modality.fields, cfg.process, 1, "process", f"modality {modality.name!r}")
    return _guard(cfg, "process", lambda: modality.fields(info, **options), f"modality {modality.name!r}'s fields",
                  options)


def check_sample_grid(cfg: Config, fields: Mapping[str, Any]) -> None:
    """The ``sample`` section's time grid against the first Gaussian field's schedule (its time
    range is known only once the fields are built): training checks it first, so that a bad
    ``sample.t_min`` fails before the run, not at its first sampling."""
    import torch

    from .grids import make_grid

    ref = next((f.process.schedule for f in fields.values() if getattr(f, "kind", None) == "gaussian"), None)
    s, opts = cfg.sample, cfg.sample.options
    if ref is None or not any(opts.get(k) is not None for k in ("grid", "t_min", "t_max", "final_zero")):
        return
    grid = opts.get("grid")
    grid = torch.tensor(grid, dtype=torch.float64) if isinstance(grid, list) else grid
    try:
        grid, t_min = ref.sampling_defaults(s.sampler, s.steps, grid, opts.get("t_min"))
        make_grid(ref, s.steps, grid, t_max=opts.get("t_max"), t_min=t_min, final_zero=bool(opts.get("final_zero")))
    except ValueError as err:
        keys = [f"sample.{k}" for k in ("grid", "t_min", "t_max", "final_zero") if opts.get(k) is not None]
        raise cfg.error(", ".join(keys), str(err)) from None


def build_network(cfg: Config, modality: Any, info: Mapping[str, Any], fields: Mapping[str, Any]) -> Any:
    """``modality.network(cfg.model.name, info, fields, **cfg.model.options)``, checked."""
    table = modality.networks()
    name = _pick(cfg, "model", table, "network", modality.name)
    options = _check_options(cfg, table[name], cfg.model.options, 2, "model", f"network {name!r}")
    return _guard(cfg, "model", lambda: modality.network(name, info, fields, **options), f"network {name!r}",
                  options)


def _pick(cfg: Config, section: str, table: Mapping[str, Any], what: str, modality: str) -> str:
    name = getattr(cfg, section).name or next(iter(table))
    if name not in table:
        raise cfg.error(f"{section}.name", f"modality {modality!r} has no {what} {name!r}; "
                                           f"allowed: {', '.join(table)}")
    return name


def _check_options(cfg: Config, factory: Any, options: Mapping[str, Any], skip: int, section: str,
                   what: str) -> dict[str, Any]:
    """``options`` checked against ``factory``'s signature (names, unless it takes ``**``) and
    annotations (values); returned converted."""
    try:
        params = list(inspect.signature(factory).parameters.values())
    except (TypeError, ValueError):
        return dict(options)
    if not any(p.kind is p.VAR_KEYWORD for p in params):
        allowed = [p.name for p in params[skip:] if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        for k in options:
            if k not in allowed:
                raise ConfigError(f"{cfg.source}: unknown key '{section}.{k}' for {what}{_near(k, allowed)}; "
                                  f"allowed: {', '.join(allowed) or 'none'} (remove a recipe key with --set "
                                  f"'~{section}.{k}')")
    return _typed_options(factory, options, skip, section, cfg.source)


# what a factory raises on values of the right type that it cannot build from (a negative width ...)
_BUILD_ERRORS = (TypeError, RuntimeError, ArithmeticError, IndexError, MemoryError)


def _guard(cfg: Config, section: str, build: Any, what: str, options: Mapping[str, Any]) -> Any:
    """Run ``build()``; a bad value or name inside becomes a ConfigError naming the section (and,
    for errors that do not say which value they choke on, the factory and the options it got;
    ``--debug`` shows the traceback)."""
    try:
        return build()
    except ConfigError:
        raise
    except (ValueError, KeyError, FileNotFoundError) as err:
        msg = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
        raise cfg.error(section, str(msg)) from err
    except _BUILD_ERRORS as err:
        given = ", ".join(f"{k}={v!r}" for k, v in options.items()) or "its default options"
        raise cfg.error(section, f"{what} cannot be built with {given}: {type(err).__name__}: "
                                 f"{' '.join(str(err).split())}") from err
