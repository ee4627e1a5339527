"""Checkpoint files: written atomically, opened only with ``torch.load(weights_only=True)``.

A polydiff checkpoint is Lightning's dictionary plus a ``"polydiff"`` entry holding the recipe
as a plain dict and the data ``info``, which is all that is needed to rebuild the network:
:func:`load_network` does that (the generator, the trainer's resume check and distillation
teachers all open checkpoints through this module), so opening one can never run code.

A run folder's checkpoints are ``RUN/checkpoints/step-NNNNNNNN.ckpt`` and ``last.ckpt`` (a
hard link to the newest step file, or the final state). Sharded checkpoints
(``train.checkpoint_format: sharded``) are folders of the same names: torch's distributed
checkpoint shards plus Lightning's other entries in ``meta.pt``, opened as the same dictionary.
:func:`newest_intact` finds the newest one that opens and holds what is needed, reporting every
file it passes over; training resumes from it and ``polydiff.load`` users can open it.
"""

from __future__ import annotations

import errno
import pickle
import re
import warnings
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .config import Config, build_fields, build_network, from_dict
from .errors import CheckpointError, ResumeError  # noqa: F401  (re-exported: polydiff.checkpoints.ResumeError)
from .files import atomic_write
from .random import local_seed
from .registry import load_modality
from .state import FieldSpec


def save_checkpoint_file(obj: Mapping[str, Any], path: str | Path) -> Path:
    """``torch.save`` to a temporary file in the same folder, flushed to disk, then
    ``os.replace``: a reader never sees a half-written checkpoint, and a crash leaves the
    previous file intact."""
    return atomic_write(path, lambda tmp: torch.save(obj, tmp), fsync=True)


def load_checkpoint(path: str | Path, map_location: Any = "cpu", mmap: bool = False) -> dict[str, Any]:
    """Load a checkpoint with ``torch.load(weights_only=True)``; refuse anything else clearly.
    ``mmap=True`` maps tensors lazily (cheap when only the metadata is needed).

    A sharded checkpoint (a folder, ``train.checkpoint_format: sharded``) opens as the same
    dictionary: its ``state_dict`` is assembled from the shards (with ``mmap``, tensors on the
    ``meta`` device: shapes only), its optimizer state stays in the shards (resuming reads it
    through FSDP), and ``"sharded"`` lists the groups the shards hold."""
    path = Path(path)
    if path.is_dir():
        return _load_sharded(path, map_location, shapes_only=mmap)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        ckpt = _torch_load(path, map_location, mmap)
    except CheckpointError:
        if not mmap:
            raise
        # a damaged or old-format file fails mapping with a vaguer message ("Invalid argument",
        # "mmap can only be used with..."): a plain read says what is wrong, or reads it
        ckpt = _torch_load(path, map_location, False)
    if not isinstance(ckpt, dict) or "polydiff" not in ckpt:
        raise CheckpointError(f"{path}: not a polydiff checkpoint (no 'polydiff' entry)")
    return ckpt


def _torch_load(path: Path, map_location: Any, mmap: bool) -> Any:
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL ([\w.]+)", str(err))
        if found is None:  # not a pickle of objects at all
            raise CheckpointError(f"{path}: not a readable checkpoint (not a torch.save file)") from None
        detail = f"it references {found.group(1)}"
        raise CheckpointError(
            f"{path}: refusing to load: the file holds Python objects besides tensors and plain containers, "
            f"and polydiff opens checkpoints only with torch.load(weights_only=True) so that loading cannot run "
            f"code ({detail})") from None
    except (RuntimeError, EOFError, OSError) as err:
        # torch's zip reader answers some truncated files with a bare EINVAL, and other zip files
        # (an .npz of arrays) with its C++ assertion text
        detail = "damaged or truncated" if getattr(err, "errno", None) == errno.EINVAL else _first_sentence(err)
        if "enforce fail" in str(err) and zipfile.is_zipfile(path):
            detail = "a zip archive without torch's data.pkl, such as an .npz of arrays, not a torch.save file"
        raise CheckpointError(f"{path}: not a readable checkpoint ({detail})") from None
    except Exception as err:  # a damaged pickle stream fails anywhere in torch's unpickler (IndexError, ...)
        raise CheckpointError(f"{path}: not a readable checkpoint (damaged: {type(err).__name__}: "
                              f"{_first_sentence(err)})") from None


SHARDED_META = "meta.pt"  # a sharded checkpoint's entries besides weights and optimizer state (Lightning's)


def _load_sharded(path: Path, map_location: Any, shapes_only: bool) -> dict[str, Any]:
    if not (path / SHARDED_META).is_file():
        files = checkpoint_files(path)
        hint = f"; it holds checkpoints: pass one, e.g. {files[0]}" if files else ""
        raise CheckpointError(f"{path}: not a checkpoint (a folder without {SHARDED_META}, so no sharded "
                              f"checkpoint{hint})")
    ckpt = _torch_load(path / SHARDED_META, "cpu", False)
    if not isinstance(ckpt, dict) or "polydiff" not in ckpt:
        raise CheckpointError(f"{path / SHARDED_META}: not a polydiff checkpoint (no 'polydiff' entry)")
    index = _shard_index(path)
    state = read_shards(path, "model.", shapes_only=shapes_only, index=index)
    if map_location not in (None, "cpu") and not shapes_only:
        state = {k: v.to(map_location) for k, v in state.items()}
    ckpt["state_dict"] = state
    ckpt["sharded"] = sorted({k.split(".", 1)[0] for k in index.state_dict_metadata})
    return ckpt


def _shard_index(path: Path) -> Any:
    """The index (``.metadata``) of a sharded checkpoint, checked against its shard files."""
    from torch.distributed.checkpoint import FileSystemReader

    try:
        index = FileSystemReader(path).read_metadata()
    except Exception as err:  # no .metadata (an unfinished write) or a damaged one
        raise CheckpointError(f"{path}: incomplete sharded checkpoint (its index .metadata: "
                              f"{_first_sentence(err)})") from None
    for item in (index.storage_data or {}).values():
        shard = path / item.relative_path
        if not shard.is_file() or shard.stat().st_size < item.offset + item.length:
            raise CheckpointError(f"{path}: incomplete sharded checkpoint ({item.relative_path} is missing or "
                                  "truncated)")
    return index


def read_shards(path: str | Path, prefix: str = "model.", *, shapes_only: bool = False,
                index: Any = None) -> dict[str, Tensor]:
    """The tensors of a sharded checkpoint whose names start with ``prefix``, each assembled
    whole in this process (no process group needed), named without the prefix: ``"model."``
    for the Lightning module's weights (``net.*``, ``ema.*``), ``"optimizer_0.state."`` for
    Adam's moments by parameter name. ``shapes_only``: tensors on the ``meta`` device.
    ``index``: the folder's checked index when the caller has it already."""
    from torch.distributed.checkpoint import load
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    path = Path(path)
    index = _shard_index(path) if index is None else index
    entries = {k: v for k, v in index.state_dict_metadata.items() if k.startswith(prefix)}
    if any(not isinstance(v, TensorStorageMetadata) for v in entries.values()):
        raise CheckpointError(f"{path}: the sharded entries {prefix}* are not all tensors")
    device = "meta" if shapes_only else "cpu"
    state = {k: torch.empty(v.size, dtype=v.properties.dtype, device=device) for k, v in entries.items()}
    if state and not shapes_only:
        try:  # keys as the shards name them, so the nesting Lightning saved with does not matter
            with warnings.catch_warnings():  # "loading in a single process": what is meant
                warnings.filterwarnings("ignore", message=".*single process.*")
                load(state, checkpoint_id=path, no_dist=True)
        except Exception as err:
            raise CheckpointError(f"{path}: not a readable sharded checkpoint ({_first_sentence(err)})") from None
    return {k[len(prefix):]: v for k, v in state.items()}


def _first_sentence(err: BaseException) -> str:
    """The gist of a torch / zip error: its first sentence (torch appends paragraphs of advice)."""
    text = " ".join(str(err).split()) or type(err).__name__
    return text.split(". ")[0].rstrip(".")


LAST = "last.ckpt"
_STEP = re.compile(r"step-(\d+)\.ckpt")
# what a checkpoint must hold: to be opened as a model, and to resume training from it exactly
LOAD_KEYS = ("state_dict",)
RESUME_KEYS = ("state_dict", "optimizer_states", "loops", "global_step")


def _step_number(path: Path) -> int:
    """N of ``step-N.ckpt`` (-1 for any other name)."""
    m = _STEP.fullmatch(path.name)
    return int(m.group(1)) if m is not None else -1


def checkpoint_dir(folder: str | Path) -> Path:
    """The checkpoints folder of a run folder (``RUN/checkpoints``), or ``folder`` itself."""
    folder = Path(folder)
    return folder / "checkpoints" if (folder / "checkpoints").is_dir() else folder


def checkpoint_files(folder: str | Path) -> list[Path]:
    """The checkpoints of a run (or checkpoints) folder: ``last.ckpt`` first, then the
    ``step-*.ckpt`` ones from the newest step down (files, or folders when sharded). Temporary
    files of unfinished writes (hidden) are never listed, so they are never read."""
    folder = checkpoint_dir(folder)
    if not folder.is_dir():
        return []
    steps = sorted((p for p in folder.iterdir() if _STEP.fullmatch(p.name)), key=_step_number)
    last = [folder / LAST] if (folder / LAST).exists() else []
    return last + steps[::-1]


def open_intact(path: str | Path, need: Sequence[str] = LOAD_KEYS) -> dict[str, Any]:
    """Open a checkpoint (tensors memory-mapped: cheap) and check that it holds the recipe, the
    data ``info``, the keys in ``need`` and, for a ``step-N.ckpt``, step N; a
    :class:`CheckpointError` saying what is wrong otherwise."""
    path = Path(path)
    ckpt = load_checkpoint(path, mmap=True)
    meta = ckpt["polydiff"]
    # a sharded checkpoint keeps the optimizer state in its shards (as group "optimizer_0")
    missing = [k for k in need if k not in ckpt and not (k == "optimizer_states" and "optimizer_0" in
                                                          ckpt.get("sharded", ()))]
    if not isinstance(meta, Mapping) or not isinstance(meta.get("config"), Mapping) or "info" not in meta:
        missing.insert(0, "polydiff.config/info")
    if missing:
        raise CheckpointError(f"{path}: incomplete checkpoint (no {', '.join(missing)})")
    if _STEP.fullmatch(path.name) and "global_step" in ckpt and ckpt["global_step"] != _step_number(path):
        raise CheckpointError(f"{path}: holds step {ckpt['global_step']}, not the step its name says")
    return ckpt


def scan_checkpoints(folder: str | Path, need: Sequence[str] = LOAD_KEYS
                     ) -> tuple[Path | None, dict[str, Any] | None, list[tuple[Path, str]]]:
    """:func:`newest_intact` that also returns the opened (memory-mapped) checkpoint."""
    skipped: list[tuple[Path, str]] = []

    def attempt(path: Path) -> dict[str, Any] | None:
        try:
            return open_intact(path, need)
        except Exception as err:  # a damaged file can fail in many ways; each is a reason to pass it over
            reason = str(err)
            if reason.startswith(f"{path}: "):
                reason = reason[len(f"{path}: "):]
            skipped.append((path, reason or type(err).__name__))
            return None

    files = checkpoint_files(folder)
    last = files[0] if files and files[0].name == LAST else None
    steps = files[1:] if last is not None else files
    if last is not None and (ckpt := attempt(last)) is not None:
        # a step file newer than last.ckpt: a run killed between saving it and publishing it
        at = int(ckpt.get("global_step", -1))
        for path in (p for p in steps if _step_number(p) > at):
            if (newer := attempt(path)) is not None:
                return path, newer, skipped
        return last, ckpt, skipped
    for path in steps:
        if (ckpt := attempt(path)) is not None:
            return path, ckpt, skipped
    return None, None, skipped


def newest_intact(folder: str | Path, *, resume: bool = False) -> tuple[Path | None, list[tuple[Path, str]]]:
    """The newest intact checkpoint of a run folder (or its ``checkpoints`` folder), and the
    newer files passed over with the reason for each.

    ``last.ckpt`` is tried first, then the ``step-*.ckpt`` files from the newest down (a step
    file newer than a readable ``last.ckpt`` wins: the run was killed before publishing it). A
    file is intact when it opens with :func:`load_checkpoint` and holds the recipe, the data
    info and the weights, plus, with ``resume``, the optimizer and loop state training resumes
    from. Returns ``(None, skipped)`` when no file is intact (``skipped`` is empty when there are
    no checkpoint files at all). ``polydiff.load(newest_intact(run)[0])`` opens the newest model.
    """
    path, _, skipped = scan_checkpoints(folder, RESUME_KEYS if resume else LOAD_KEYS)
    return path, skipped


def consolidate(path: str | Path, out: str | Path) -> Path:
    """Write a sharded checkpoint's model (weights, EMA, recipe, data info, step) as one file,
    atomically: a model to share or archive, which :func:`polydiff.load` opens like any other.
    The optimizer state stays in the shards, so the file does not resume training."""
    ckpt = load_checkpoint(path)
    if "sharded" not in ckpt:
        raise CheckpointError(f"{path}: already a single-file checkpoint")
    del ckpt["sharded"]
    return save_checkpoint_file(ckpt, out)


def run_folder(checkpoint: str | Path) -> Path:
    """The run folder of a checkpoint: ``RUN`` for ``RUN/checkpoints/last.ckpt`` (where
    ``polydiff train`` puts it), else the checkpoint's own folder. Default outputs go here."""
    checkpoint = Path(checkpoint)
    return checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint.parent


def _weights_prefix(ckpt: Mapping[str, Any], ema: bool | None) -> str:
    if ema is None:  # the recipe's choice (sample.ema, default true)
        ema = ckpt.get("polydiff", {}).get("config", {}).get("sample", {}).get("ema", True)
    return "ema." if ema and any(k.startswith("ema.") for k in ckpt["state_dict"]) else "net."


def network_weights(ckpt: Mapping[str, Any], ema: bool | None = None) -> dict[str, Tensor]:
    """The network's state dict from a checkpoint: the EMA copy when present and wanted
    (``ema=None``: as the stored recipe's ``sample.ema`` says, EMA by default)."""
    prefix = _weights_prefix(ckpt, ema)
    return {k[len(prefix):]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}


def open_weights(path: str | Path, ema: bool | None = None) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """A checkpoint and its network's weights (:func:`network_weights`). From a sharded folder
    only that copy is read from the shards (the checkpoint's ``state_dict`` holds shapes only):
    half the memory of reading the network and its EMA."""
    path = Path(path)
    if not path.is_dir():
        ckpt = load_checkpoint(path)
        return ckpt, network_weights(ckpt, ema)
    ckpt = load_checkpoint(path, mmap=True)
    return ckpt, read_shards(path, "model." + _weights_prefix(ckpt, ema))


@dataclass
class Loaded:
    """A network rebuilt from a checkpoint, with what it was trained on."""

    path: Path
    config: Config
    modality: Any
    info: dict[str, Any]
    fields: dict[str, FieldSpec]
    net: nn.Module
    step: int | None


def load_network(path: str | Path, ema: bool | None = None) -> Loaded:
    """Rebuild the modality, fields and network of a checkpoint from its stored recipe and data
    ``info``, and load its weights (the EMA copy unless ``ema=False`` or, with ``ema=None``, the
    recipe's ``sample.ema: false``)."""
    path = Path(path)
    ckpt, weights = open_weights(path, ema)
    meta = ckpt["polydiff"]
    missing = [k for k in ("config", "info") if not isinstance(meta.get(k) if isinstance(meta, dict) else None, dict)]
    if missing:
        raise CheckpointError(f"{path}: the checkpoint's polydiff metadata has no {' or '.join(missing)} (a damaged "
                              "or hand-edited checkpoint?)")
    cfg = from_dict(meta["config"], source=f"{path} (stored recipe)")
    modality = load_modality(cfg.modality)
    info = dict(meta["info"])
    fields = build_fields(cfg, modality, info)
    with local_seed(cfg.train.seed):  # initial weights, overwritten: the caller's random stream stays where it was
        net = build_network(cfg, modality, info, fields)
    try:
        net.load_state_dict(weights)
    except RuntimeError as err:
        raise CheckpointError(f"{path}: the stored weights do not fit the network the recipe builds: "
                              f"{str(err).splitlines()[0]}") from None
    return Loaded(path, cfg, modality, info, dict(fields), net.eval(), ckpt.get("global_step"))
