"""Shared helpers of the graphs tests."""

from __future__ import annotations


def tiny_overrides(model: dict[str, object], sample_steps: int, **data: object) -> list[str]:
    """``--set`` overrides that shrink a graphs recipe to a CI-sized run: the ``model`` sizes,
    ``data`` options, three training steps and a few sampling steps."""
    sets = [f"model.{k}={v}" for k, v in model.items()]
    sets += [f"data.{k}={v}" for k, v in data.items()]
    return [*sets, "train.max_steps=3", "train.batch_size=8", "train.checkpoint_every=3", "train.progress=false",
            "train.logger=none", "train.threads=1", f"sample.steps={sample_steps}", "sample.num=4"]
