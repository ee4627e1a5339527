"""The policies modality's environments: ``reach`` (several routes to each goal), ``blocks``
(push two blocks to their targets in either order) and ``pusht`` (Push-T, pymunk physics).
Modules are imported on first use (Push-T needs pymunk and shapely)."""

from __future__ import annotations

import importlib
from typing import Any

from .base import Episode, GoalEnv

ENVIRONMENTS = {"reach": ("reach", "ReachEnv"), "blocks": ("blocks", "BlocksEnv"), "pusht": ("pusht", "PushTEnv")}

__all__ = ["ENVIRONMENTS", "Episode", "GoalEnv", "demonstrations", "env_class", "goal_outcomes", "make"]


def _module(name: str) -> Any:
    if name not in ENVIRONMENTS:
        raise ValueError(f"unknown environment {name!r}; allowed: {', '.join(ENVIRONMENTS)}")
    return importlib.import_module(f"{__name__}.{ENVIRONMENTS[name][0]}")


def env_class(name: str) -> type[GoalEnv]:
    """The environment class registered as ``name``."""
    return getattr(_module(name), ENVIRONMENTS[name][1])


def make(name: str, **options: Any) -> GoalEnv:
    """A new environment ``name`` built with ``options``."""
    return env_class(name)(**options)


def demonstrations(name: str, n: int, seed: int = 0, **options: Any) -> list[Episode]:
    """``n`` scripted demonstrations of environment ``name`` (reach and blocks only); ``options``
    go to the environment's expert (blocks: ``perturb``)."""
    module = _module(name)
    if not hasattr(module, "demonstrations"):
        raise ValueError(f"environment {name!r} has no scripted expert (its demonstrations are recorded data)")
    return module.demonstrations(n, seed=seed, **options)


def goal_outcomes(name: str) -> tuple[str, ...]:
    """The outcome label of each of the environment's goals (what reaching it reports)."""
    return tuple(getattr(env_class(name), "goal_labels", ()))
