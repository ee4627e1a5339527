"""Checkpoint files: written atomically, opened only with ``torch.load(weights_only=True)``.

A polydiff checkpoint is Lightning's dictionary plus a ``"polydiff"`` entry holding the recipe
as a plain dict and the data ``info``, which is all that is needed to rebuild the network:
:func:`load_network` does that (the generator, the trainer's resume check and distillation
teachers all open checkpoints through this module), so opening one can never run code.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .config import Config, build_fields, build_network, from_dict
from .files import atomic_write
from .registry import load_modality
from .state import FieldSpec


class CheckpointError(ValueError):
    """A checkpoint that cannot be (safely) loaded."""


def save_checkpoint_file(obj: Mapping[str, Any], path: str | Path) -> Path:
    """``torch.save`` to a temporary file in the same folder, flushed to disk, then
    ``os.replace``: a reader never sees a half-written checkpoint, and a crash leaves the
    previous file intact."""
    return atomic_write(path, lambda tmp: torch.save(obj, tmp), fsync=True)


def load_checkpoint(path: str | Path, map_location: Any = "cpu", mmap: bool = False) -> dict[str, Any]:
    """Load a checkpoint with ``torch.load(weights_only=True)``; refuse anything else clearly.
    ``mmap=True`` maps tensors lazily (cheap when only the metadata is needed)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
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
        raise CheckpointError(f"{path}: not a readable checkpoint ({str(err).splitlines()[0]})") from None
    if not isinstance(ckpt, dict) or "polydiff" not in ckpt:
        raise CheckpointError(f"{path}: not a polydiff checkpoint (no 'polydiff' entry)")
    return ckpt


def run_folder(checkpoint: str | Path) -> Path:
    """The run folder of a checkpoint: ``RUN`` for ``RUN/checkpoints/last.ckpt`` (where
    ``polydiff train`` puts it), else the checkpoint's own folder. Default outputs go here."""
    checkpoint = Path(checkpoint)
    return checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint.parent


def network_weights(ckpt: Mapping[str, Any], ema: bool = True) -> dict[str, Tensor]:
    """The network's state dict from a checkpoint: the EMA copy when present and wanted."""
    sd = ckpt["state_dict"]
    prefix = "ema." if ema and any(k.startswith("ema.") for k in sd) else "net."
    return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}


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


def load_network(path: str | Path, ema: bool = True) -> Loaded:
    """Rebuild the modality, fields and network of a checkpoint from its stored recipe and data
    ``info``, and load its weights (the EMA copy unless ``ema=False``)."""
    path = Path(path)
    ckpt = load_checkpoint(path)
    meta = ckpt["polydiff"]
    cfg = from_dict(meta["config"], source=f"{path} (stored recipe)")
    modality = load_modality(cfg.modality)
    info = dict(meta["info"])
    fields = build_fields(cfg, modality, info)
    net = build_network(cfg, modality, info, fields)
    try:
        net.load_state_dict(network_weights(ckpt, ema))
    except RuntimeError as err:
        raise CheckpointError(f"{path}: the stored weights do not fit the network the recipe builds: "
                              f"{str(err).splitlines()[0]}") from None
    return Loaded(path, cfg, modality, info, dict(fields), net.eval(), ckpt.get("global_step"))
