"""Generating graphs from a trained checkpoint, whichever model it holds.

GDSS samples with one :func:`polydiff.sample` loop; PARD samples block by block
(:meth:`GraphsModality.sample`, the core's hook for models with their own loop), so
``Generator.generate`` and ``polydiff sample`` serve both. :func:`generate_graphs` is
``Generator.generate`` with PARD's ``steps`` meaning steps per block.
"""

from __future__ import annotations

from typing import Any

import networkx as nx

from .models.pard import PardNet


def is_pard(gen: Any) -> bool:
    """Whether a loaded :class:`polydiff.plugin.Generator` holds a PARD network."""
    return isinstance(gen.net, PardNet)


def generate_graphs(gen: Any, n: int, *, sampler: str | None = None, steps: int | None = None, seed: int = 0,
                    batch_size: int | None = None, **options: Any) -> list[nx.Graph]:
    """``n`` graphs (or molecular graphs) from ``gen`` (``polydiff.load(CKPT)``); for PARD
    ``steps`` is the number of diffusion steps per block and ``sampler``, when given, a
    categorical sampler (its fields are categorical; a Gaussian one is an error)."""
    return gen.generate(n, sampler=sampler, steps=steps, seed=seed, batch_size=batch_size, **options)
