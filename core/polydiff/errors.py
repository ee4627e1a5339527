"""The errors of checkpoints and runs, in a module light enough for the command line to import
before it knows whether it needs torch."""

from __future__ import annotations

__all__ = ["CheckpointError", "RankFailed", "ResumeError", "TrainingDiverged"]


class CheckpointError(ValueError):
    """A checkpoint that cannot be (safely) loaded."""


class ResumeError(CheckpointError):
    """A run folder training refuses to resume (a different recipe) or to start over in (its
    checkpoints would be overwritten) without ``fresh``."""


class RankFailed(RuntimeError):
    """Another rank of a process group failed (sharded sampling); the message names the rank and its error."""


class TrainingDiverged(ValueError):
    """Training stopped because its loss or weights became NaN or infinite (no checkpoint of
    the non-finite weights is written)."""
