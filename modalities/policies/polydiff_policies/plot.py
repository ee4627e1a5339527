"""Pictures of episodes: trajectories over the environment's scene, and GIF animations.

Trajectories are drawn from the observations: the agent's path (the first two observation
dimensions, the agent's position in every environment), coloured by behaviour, with the
scene drawn by the environment in its start state."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib  # (at the top: without matplotlib this module does not import, and callers skip the plot)
import numpy as np

from polydiff.plugin import atomic_write, new_figure, save_figure

from . import envs
from .envs.base import Episode

MAX_PANEL = 64  # episodes drawn per panel


def _env_of(episodes: Sequence[Episode]) -> str | None:
    return next((str(e.meta["env"]) for e in episodes if e.meta.get("env")), None)


def _goals(episodes: Sequence[Episode]) -> list[np.ndarray]:
    """The distinct goals of ``episodes`` in order of first appearance."""
    out: list[np.ndarray] = []
    for ep in episodes:
        g = np.asarray(ep.goal, dtype=np.float64)
        if not any(g.shape == o.shape and np.allclose(g, o) for o in out):
            out.append(g)
    return out


def _panel(ax, episodes: Sequence[Episode], title: str) -> None:
    from matplotlib.lines import Line2D

    name = _env_of(episodes)
    if name in envs.ENVIRONMENTS and episodes:
        env = envs.make(name)
        first = episodes[0].meta.get("states")
        for k, goal in enumerate(_goals(episodes[:MAX_PANEL])):  # every goal shown is drawn as commanded
            env.reset(seed=0, options={"goal": goal})
            if first is not None:
                env.set_state(np.asarray(first[0]))
            texts = len(ax.texts)
            env.draw(ax)
            if k:  # the scene again, for its goal: its labels once only
                for text in ax.texts[texts:]:
                    text.remove()
    labels = sorted({e.behaviour for e in episodes if e.behaviour})
    colours = {b: matplotlib.colormaps["tab10"](i % 10) for i, b in enumerate(labels)}
    unnamed = "0.4" if labels else "tab:blue"  # episodes without a behaviour
    outcomes = set()
    for ep in episodes[:MAX_PANEL]:
        ok = bool(ep.meta.get("success", bool(ep.outcome)))
        outcomes.add(ok)
        ax.plot(ep.obs[:, 0], ep.obs[:, 1], color=colours.get(ep.behaviour, unnamed), lw=1.0,
                alpha=0.8 if ok else 0.3, ls="-" if ok else ":")
    handles = [Line2D([], [], color=c, label=b) for b, c in colours.items()]
    handles += [Line2D([], [], color="k", ls="-" if ok else ":", label="success" if ok else "failure")
                for ok in sorted(outcomes, reverse=True)]
    if handles:
        ax.legend(handles=handles, fontsize=7, loc="upper right", title="behaviour" if labels else None,
                  title_fontsize=7)
    ax.set_title(title, fontsize=9)
    ax.set_aspect("equal")


def plot_rollouts(episodes: Sequence[Episode], path: Path, reference: Sequence[Episode] | None = None) -> Path:
    """Agent paths of ``episodes`` (solid: success, dotted: failure) beside the reference's."""
    panels = [(episodes, f"rollouts ({len(episodes)})")]
    if reference:
        panels.append((reference, f"demonstrations ({len(reference)})"))
    fig = new_figure(figsize=(5 * len(panels), 5))
    axes = fig.subplots(1, len(panels), squeeze=False)
    for ax, (eps, title) in zip(axes[0], panels):
        _panel(ax, eps, title)
    fig.tight_layout()
    return save_figure(fig, path)


def animate(episode: Episode, path: Path, fps: int = 10, stride: int = 1) -> Path:
    """A GIF of one episode recorded with ``record_states`` (``meta["states"]``), drawn by its
    environment frame by frame (every ``stride``-th state), written atomically."""
    from matplotlib.animation import FuncAnimation, PillowWriter

    states = episode.meta.get("states")
    name = episode.meta.get("env")
    if states is None or name not in envs.ENVIRONMENTS:
        raise ValueError("animate needs an episode recorded with record_states=True in a known environment")
    env = envs.make(str(name))
    env.reset(seed=0, options={"goal": episode.goal})
    fig = new_figure(figsize=(4, 4))
    ax = fig.subplots()
    frames = list(range(0, len(states), stride))

    def draw(k: int) -> None:
        ax.clear()
        env.set_state(np.asarray(states[k]))
        env.draw(ax)
        upto = min(k, len(episode.obs) - 1)
        ax.plot(episode.obs[: upto + 1, 0], episode.obs[: upto + 1, 1], color="tab:blue", lw=1)
        ax.set_title(f"step {k}", fontsize=8)

    anim = FuncAnimation(fig, draw, frames=frames)
    return atomic_write(Path(path), lambda tmp: anim.save(str(tmp), writer=PillowWriter(fps=fps)))
