"""Rollout metrics: success, goal coverage, behaviour entropy, Push-T score.

- ``success_rate``: the fraction of episodes that achieved their commanded goal (goal-free
  rollouts: any goal). NaN for episodes with no success information at all (no ``success``
  flag and no outcome label on any episode, e.g. a file of plain demonstrations): not 0, which
  would read as "every episode failed".
- ``goal_coverage``: the fraction of the environment's goals achieved by at least one episode
  (BESO's test of a goal-free policy: it should reach all of them); left out, like
  ``success_rate``, for episodes with no success information.
- ``behaviour_entropy``: the entropy (bits) of the behaviour labels (route, order) of the
  successful episodes of each commanded goal, averaged over goals: 0 for a policy that always
  takes the same route, 1 for two routes taken equally often (BeT / BESO's multimodality
  measure). Goal-free rollouts (``meta["goal_free"]``) group by the goal reached instead: the
  policy never saw a commanded one, so reaching a goal is its own choice (and the reference
  they are compared with is grouped the same way). ``behaviour_entropy_all``: the same over
  every episode that shows a behaviour, successful or not (where success is rare, as on Push-T
  at 0.95 coverage, it is the only measure of the policy's choices that rests on enough
  episodes). ``outcome_entropy``: the
  entropy over what the episodes achieved.
- ``behaviour_tv``: total-variation distance between the (goal, behaviour) distribution of the
  successful episodes and that of the successful reference demonstrations: the same selection
  on both sides (:func:`successful`), so a set compared with itself gives 0 (NaN when a side has
  no successful episode: there is no distribution to compare). A set with no
  success information counts every episode (recorded human demonstrations such as Push-T's
  carry none, and are taken as showing the task).
- ``score``: the mean over episodes of the maximum reward (Diffusion Policy's Push-T score:
  ``max_t clip(coverage_t / 0.95, 0, 1)``).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Sequence

import numpy as np

from .envs.base import Episode


def entropy_bits(labels: Sequence[Hashable]) -> float:
    """Shannon entropy (bits) of the empirical distribution of ``labels`` (0 for none)."""
    counts = np.array(list(Counter(labels).values()), dtype=np.float64)
    if counts.sum() == 0:
        return 0.0
    p = counts / counts.sum()
    return float((p * -np.log2(p)).sum())  # (-p log p: one outcome gives 0.0, not -0.0)


def tv_distance(a: Sequence[Hashable], b: Sequence[Hashable]) -> float:
    """Total-variation distance between the empirical distributions of ``a`` and ``b``."""
    if not a or not b:
        return float("nan")
    ca, cb = Counter(a), Counter(b)
    return 0.5 * sum(abs(ca[k] / len(a) - cb[k] / len(b)) for k in set(ca) | set(cb))


def _goal_key(ep: Episode, by_outcome: bool = False) -> Hashable:
    """The group of an episode: its commanded goal, or (``by_outcome``) what it achieved."""
    if by_outcome:
        return ep.outcome
    return tuple(np.round(np.asarray(ep.goal, dtype=np.float64), 4).tolist())


def goal_free(episodes: Sequence[Episode]) -> bool:
    """Whether the episodes are rollouts of a goal-free policy (grouped by the goal reached)."""
    return any(e.meta.get("goal_free") for e in episodes)


def succeeded(ep: Episode) -> bool:
    """An episode's success: recorded by the rollout (``meta["success"]``), else "achieved something"."""
    return bool(ep.meta.get("success", bool(ep.outcome)))


def has_success_info(episodes: Sequence[Episode]) -> bool:
    """Whether any episode records whether it succeeded: a ``success`` flag, or an outcome label."""
    return any("success" in e.meta or e.outcome for e in episodes)


def successful(episodes: Sequence[Episode]) -> list[Episode]:
    """The successful episodes, or all of them where none records success (:func:`has_success_info`)."""
    return [e for e in episodes if succeeded(e)] if has_success_info(episodes) else list(episodes)


def behaviour_entropy(episodes: Sequence[Episode], successful_only: bool = True,
                      by_outcome: bool | None = None) -> float:
    """Mean over commanded goals of the entropy (bits) of the behaviours of the successful
    episodes (``successful_only=False``: of every episode with a behaviour label); NaN when
    there are none. ``by_outcome``: group by the goal reached instead (default: for goal-free
    rollouts, :func:`goal_free`)."""
    by_outcome = goal_free(episodes) if by_outcome is None else by_outcome
    by_goal: dict[Hashable, list[str]] = {}
    for ep in episodes:
        if (succeeded(ep) or not successful_only) and ep.behaviour:
            by_goal.setdefault(_goal_key(ep, by_outcome), []).append(ep.behaviour)
    if not by_goal:
        return float("nan")
    return float(np.mean([entropy_bits(v) for v in by_goal.values()]))


def rollout_metrics(episodes: Sequence[Episode], reference: Sequence[Episode] = (),
                    goal_outcomes: Sequence[str] = ()) -> dict[str, float]:
    """The metrics of the module docstring. ``goal_outcomes``: the outcome label of each of the
    environment's goals (for ``goal_coverage``; without it, distinct non-empty outcomes are
    counted against the reference's)."""
    if not episodes:
        raise ValueError("no episodes to evaluate")
    out = {"episodes": float(len(episodes)),
           "success_rate": float(np.mean([succeeded(e) for e in episodes])) if has_success_info(episodes)
           else float("nan"),
           "mean_steps": float(np.mean([len(e.actions) for e in episodes])),
           "behaviour_entropy": behaviour_entropy(episodes),
           "behaviour_entropy_all": behaviour_entropy(episodes, successful_only=False),
           "outcome_entropy": entropy_bits([e.outcome for e in episodes])}
    achieved = {e.outcome for e in episodes if e.outcome}
    targets = set(goal_outcomes) or {e.outcome for e in reference if e.outcome}
    if targets and has_success_info(episodes):
        out["goal_coverage"] = len(achieved & targets) / len(targets)
    if all("score" in e.meta for e in episodes):
        out["score"] = float(np.mean([float(e.meta["score"]) for e in episodes]))
    if reference:
        free = goal_free(episodes)  # the reference grouped like the episodes
        out["reference_behaviour_entropy"] = behaviour_entropy(reference, by_outcome=free)
        out["reference_behaviour_entropy_all"] = behaviour_entropy(reference, successful_only=False, by_outcome=free)
        out["reference_outcome_entropy"] = entropy_bits([e.outcome for e in reference])
        out["behaviour_tv"] = tv_distance([(_goal_key(e, free), e.behaviour) for e in successful(episodes)],
                                          [(_goal_key(e, free), e.behaviour) for e in successful(reference)])
    return {k: (v if math.isfinite(v) else float("nan")) for k, v in out.items()}
