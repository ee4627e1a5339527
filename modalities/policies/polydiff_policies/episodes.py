"""Episode files, training windows and normalisers.

Episodes are stored the way Diffusion Policy's replay buffer stores them, flattened in time:
one ``.npz`` file with ``obs`` (N, obs_dim), ``actions`` (N, action_dim) and ``episode_ends``
(E,) (cumulative ends: episode ``e`` is rows ``ends[e-1]:ends[e]``), plus optional per-episode
``goals`` (E, goal_dim), ``outcomes`` and ``behaviours`` (E,) strings. The Push-T file of
``../shared/data/robot_pusht`` (``state`` / ``action``) reads with the same function.

Training samples are windows: at every step ``t`` of an episode, the last ``obs_steps``
observations (the first one repeated before the start) and the next ``horizon`` actions (the
last one repeated after the end), as Diffusion Policy pads them, plus the episode's goal.
Observations, actions and goals are scaled to [-1, 1] per dimension by min-max
:class:`Normalizer` s stored in the dataset ``info`` (so in every checkpoint).
"""

from __future__ import annotations

import io
import math
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from polydiff.plugin import TensorStates, atomic_write, read_npz

from .envs.base import Episode

ALIASES = {"obs": ("obs", "state"), "actions": ("actions", "action")}
META = {"success": bool, "score": np.float64, "env": str}  # optional per-episode arrays kept in Episode.meta


class EpisodeError(ValueError):
    """A bad episode file: the message names the file and the key or episode at fault."""


# ---------------------------------------------------------------------------------------------
# files
# ---------------------------------------------------------------------------------------------

def _pick(z: Mapping[str, np.ndarray], key: str, path: Path) -> np.ndarray:
    for name in ALIASES[key]:
        if name in z:
            return np.asarray(z[name])
    raise EpisodeError(f"{path}: no {' or '.join(repr(a) for a in ALIASES[key])} array (it has {', '.join(z)})")


def load_npz(path: str | Path) -> dict[str, np.ndarray]:
    """Every array of an episode ``.npz`` file (:func:`polydiff.plugin.read_npz`: anything but a
    readable archive of plain arrays is one :class:`EpisodeError` line naming the file)."""
    return read_npz(path, EpisodeError)


def _declared_env(z: Mapping[str, np.ndarray]) -> str | None:
    """The environment a file's episodes belong to, where the file says so: one name in its
    ``env`` array, or Diffusion Policy's Push-T replay buffer (``state`` 5-D, ``action`` 2-D)."""
    env = z.get("env")
    if env is not None and env.dtype.kind in "US" and env.size and len(set(env.reshape(-1).tolist())) == 1:
        return str(env.reshape(-1)[0])
    state, action = z.get("state"), z.get("action")
    if "obs" not in z and state is not None and action is not None and state.shape[-1:] == (5,) \
            and action.shape[-1:] == (2,):
        return "pusht"
    return None


def _key(z: Mapping[str, np.ndarray], key: str) -> str:
    """The name ``key`` has in ``z`` (``obs`` or Push-T's ``state``, ...)."""
    return next((name for name in ALIASES[key] if name in z), key)


def _single_goal(env: str | None) -> np.ndarray | None:
    """The goal of environment ``env`` when it has exactly one (Push-T), else None."""
    from . import envs

    if env not in envs.ENVIRONMENTS:
        return None
    goals = np.asarray(envs.env_class(env).goals)
    return goals[0] if len(goals) == 1 else None


def _check_env_sizes(path: Path, env: str, arrays: Mapping[str, np.ndarray]) -> None:
    """An error naming the file, the key and both sizes when the observations, actions or goals
    of a file do not have environment ``env``'s sizes (a policy trained on them could not act
    in it)."""
    from . import envs

    cls = envs.env_class(env)
    for (key, a), (what, dim) in zip(arrays.items(), (("observation", cls.obs_dim), ("action", cls.action_dim),
                                                      ("goal", cls.goal_dim))):
        if a.shape[-1] != dim:
            raise EpisodeError(f"{path}: {key!r} has {a.shape[-1]} values per {'episode' if what == 'goal' else 'step'}"
                               f", but environment {env!r} has {dim}-D {what}s")


def _decoded(z: dict[str, np.ndarray], path: Path) -> dict[str, np.ndarray]:
    """``z`` with byte-string arrays (files converted from HDF5 or zarr) as the UTF-8 text they
    hold: ``str()`` of bytes would make the label ``"b'left'"``."""
    for key, v in z.items():
        if v.dtype.kind == "S":
            try:
                z[key] = np.char.decode(v, "utf-8")
            except UnicodeDecodeError as err:
                raise EpisodeError(f"{path}: {key!r} holds bytes that are not UTF-8 text ({err.reason})") from None
    return z


def read_episodes(path: str | Path, goal: Sequence[float] | None = None, env: str | None = None) -> list[Episode]:
    """The episodes of an ``.npz`` file (see the module docstring). ``goal``: the goal of every
    episode for files without ``goals``; without it, the single goal of the file's environment
    (``env``, else the one the file declares: its ``env`` array, or Push-T's layout) where that
    environment has one (Push-T's fixed target pose). ``env``: also check the observation,
    action and goal sizes against that environment's. Errors name the file and the key or the
    episode: unreadable files, missing arrays, wrong shapes or sizes, NaN or infinite values,
    episode ends that are not increasing or do not cover the arrays, empty episodes."""
    path = Path(path)
    z = _decoded(load_npz(path), path)
    obs, actions = _pick(z, "obs", path), _pick(z, "actions", path)
    if "episode_ends" not in z:
        raise EpisodeError(f"{path}: no 'episode_ends' array (cumulative episode ends)")
    ends = np.asarray(z["episode_ends"]).reshape(-1)
    for name, a in (("obs", obs), ("actions", actions)):
        if a.ndim != 2 or a.dtype.kind not in "iuf":
            raise EpisodeError(f"{path}: {name!r} must be a (steps, dim) array of real numbers, got shape {a.shape} "
                               f"{a.dtype}")
    if len(obs) != len(actions):
        raise EpisodeError(f"{path}: {len(obs)} observations but {len(actions)} actions (one action per observation)")
    if not np.issubdtype(ends.dtype, np.integer) or len(ends) == 0:
        raise EpisodeError(f"{path}: 'episode_ends' must be a non-empty integer array")
    if ends.dtype.kind == "u" and int(ends.max()) > np.iinfo(np.int64).max:
        raise EpisodeError(f"{path}: 'episode_ends' holds {int(ends.max())}, beyond any number of steps")
    ends = ends.astype(np.int64)  # unsigned ends would turn the starts (and slices) into floats
    starts = np.concatenate([[0], ends[:-1]])
    bad = np.nonzero(ends <= starts)[0]
    if len(bad):
        raise EpisodeError(f"{path}: episode {int(bad[0])}: episode_ends must increase (episode {int(bad[0])} ends at "
                           f"{int(ends[bad[0]])}, after {int(starts[bad[0]])}): an empty or reversed episode")
    if int(ends[-1]) != len(obs):
        raise EpisodeError(f"{path}: episode_ends ends at {int(ends[-1])} but the arrays have {len(obs)} steps")
    goals = z.get("goals")
    known = env or _declared_env(z)
    if goals is None:
        if goal is None:
            goal = _single_goal(known)
        if goal is None:
            raise EpisodeError(f"{path}: no 'goals' array: add one to the file (numpy.savez(..., goals=G), G of shape "
                               f"(episodes, goal_dim) = ({len(ends)}, ...)); in training, data option goal=[...] "
                               "gives every episode the same goal")
        goals = np.tile(np.asarray(goal, dtype=np.float32).reshape(-1), (len(ends), 1))
    goals = np.asarray(goals)
    if goals.ndim != 2 or len(goals) != len(ends) or goals.dtype.kind not in "iuf":
        raise EpisodeError(f"{path}: 'goals' must be (episodes, goal_dim) = ({len(ends)}, ...) real numbers, got "
                           f"{goals.shape} {goals.dtype}")
    if env is not None:
        _check_env_sizes(path, env, {_key(z, "obs"): obs, _key(z, "actions"): actions,
                                     ("goals" if "goals" in z else "the goal option"): goals})
    labels = {}
    for key in ("outcomes", "behaviours"):
        v = z.get(key)
        if v is not None and (v.shape != (len(ends),) or v.dtype.kind not in "US"):
            raise EpisodeError(f"{path}: {key!r} must hold one string per episode ({len(ends)}), got {v.shape} "
                               f"{v.dtype}")
        labels[key] = v
    meta = {}
    for key in META:
        v = z.get(key)
        if v is not None:
            if v.shape != (len(ends),):
                raise EpisodeError(f"{path}: {key!r} must hold one value per episode ({len(ends)}), got {v.shape}")
            meta[key] = _meta_values(path, key, v)
    if known is not None and "env" not in meta:
        meta["env"] = [known] * len(ends)
    out = []
    for e, (a, b) in enumerate(zip(starts.tolist(), ends.tolist())):
        arrays = {"obs": obs[a:b], "actions": actions[a:b], "goals": goals[e]}
        for name, arr in arrays.items():
            with np.errstate(over="ignore"):  # a finite value beyond float32's range becomes inf: refused
                as32 = arr.astype(np.float32)
            for bad, what in ((~np.isfinite(arr), "NaN or infinite values"),
                              (~np.isfinite(as32), "values beyond float32's range")):
                if bad.any():
                    step = int(np.nonzero(bad.reshape(len(arr), -1).any(-1))[0][0]) if arr.ndim > 1 else 0
                    where = f"step {step}" if arr.ndim > 1 else "its goal"
                    raise EpisodeError(f"{path}: episode {e}: {name!r} holds {what} ({where})")
            arrays[name] = as32
        out.append(Episode(arrays["obs"], arrays["actions"], arrays["goals"],
                           str(labels["outcomes"][e]) if labels["outcomes"] is not None else "",
                           str(labels["behaviours"][e]) if labels["behaviours"] is not None else "",
                           {k: v[e] for k, v in meta.items()}))
    return out


def _meta_values(path: Path, key: str, v: np.ndarray) -> list[Any]:
    """The per-episode values of an optional array, checked against its kind in :data:`META`:
    ``success`` booleans (or 0 / 1), ``score`` finite real numbers, ``env`` strings. A string
    ``"False"`` would otherwise read as a success, a NaN score as a number."""
    kind = META[key]
    if kind is str:
        ok, want = v.dtype.kind in "US", "strings"
    elif kind is bool:
        ok = v.dtype.kind == "b" or (v.dtype.kind in "iuf" and bool(np.isin(v, (0, 1)).all()))
        want = "booleans or 0 / 1"
    else:
        ok, want = v.dtype.kind in "iuf" and bool(np.isfinite(v).all()), "finite real numbers"
    if not ok:
        raise EpisodeError(f"{path}: {key!r} must hold {want} (one per episode), got {v.dtype} values "
                           f"{v[:3].tolist()}{'...' if len(v) > 3 else ''}")
    return [kind(x) for x in v.tolist()]


def check_episodes(episodes: Sequence[Episode], source: str = "episodes") -> tuple[int, int, int]:
    """``(obs_dim, action_dim, goal_dim)`` shared by all ``episodes``; an error names the first
    episode whose lengths or dimensions differ, or that holds NaN."""
    if not episodes:
        raise EpisodeError(f"{source}: no episodes")
    first = episodes[0]
    dims = (first.obs.shape[-1], first.actions.shape[-1], first.goal.shape[-1])
    for e, ep in enumerate(episodes):
        if ep.obs.ndim != 2 or ep.actions.ndim != 2 or ep.goal.ndim != 1:
            raise EpisodeError(f"{source}: episode {e}: obs and actions must be (steps, dim), goal (dim,)")
        if len(ep.obs) != len(ep.actions) or len(ep.obs) == 0:
            raise EpisodeError(f"{source}: episode {e}: {len(ep.obs)} observations and {len(ep.actions)} actions "
                               "(need the same positive number)")
        got = (ep.obs.shape[-1], ep.actions.shape[-1], ep.goal.shape[-1])
        if got != dims:
            raise EpisodeError(f"{source}: episode {e}: (obs, action, goal) dimensions {got}, episode 0 has {dims}")
        if not (np.isfinite(ep.obs).all() and np.isfinite(ep.actions).all() and np.isfinite(ep.goal).all()):
            raise EpisodeError(f"{source}: episode {e}: NaN or infinite values")
    return dims


def npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    """An ``.npz`` archive of ``arrays`` (compressed) whose bytes depend only on the arrays:
    fixed member timestamps, so writing the same episodes twice gives the same file."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, arr in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, np.asanyarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, member.getvalue())
    return buf.getvalue()


def write_episodes(episodes: Sequence[Episode], path: str | Path) -> Path:
    """Write ``episodes`` to one ``.npz`` file atomically (temp file, then rename), with their
    outcome and behaviour labels and, where every episode has them, ``success`` / ``score`` /
    ``env`` from their ``meta``."""
    check_episodes(episodes, str(path))
    arrays: dict[str, np.ndarray] = {
        "obs": np.concatenate([e.obs for e in episodes]).astype(np.float32),
        "actions": np.concatenate([e.actions for e in episodes]).astype(np.float32),
        "episode_ends": np.cumsum([len(e.obs) for e in episodes]).astype(np.int64),
        "goals": np.stack([e.goal for e in episodes]).astype(np.float32),
        "outcomes": np.array([e.outcome for e in episodes], dtype=str),
        "behaviours": np.array([e.behaviour for e in episodes], dtype=str)}
    for key, dtype in META.items():
        if all(key in e.meta for e in episodes):
            arrays[key] = np.array([e.meta[key] for e in episodes], dtype=dtype)
            _meta_values(Path(path), key, arrays[key])  # what read_episodes would refuse (a NaN score)
    return atomic_write(Path(path), npz_bytes(arrays))


# ---------------------------------------------------------------------------------------------
# features and normalisers
# ---------------------------------------------------------------------------------------------

def obs_features(obs: np.ndarray | Tensor, angle_dims: Sequence[int] = ()) -> np.ndarray | Tensor:
    """Observations with each angle dimension replaced by its (sin, cos) (appended at the end),
    so that a policy sees no jump where the angle wraps around."""
    if not angle_dims:
        return obs
    keep = [i for i in range(obs.shape[-1]) if i not in set(angle_dims)]
    ang = obs[..., list(angle_dims)]
    if isinstance(obs, Tensor):
        return torch.cat([obs[..., keep], torch.sin(ang), torch.cos(ang)], -1)
    return np.concatenate([obs[..., keep], np.sin(ang), np.cos(ang)], -1)


@dataclass
class Normalizer:
    """Per-dimension min-max scaling to [-1, 1] (Diffusion Policy's limits normaliser); a
    constant dimension maps to 0."""

    low: np.ndarray
    high: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray) -> Normalizer:
        """Per-dimension minimum and maximum of ``x`` (..., D)."""
        x = np.asarray(x, dtype=np.float64).reshape(-1, np.asarray(x).shape[-1])
        return cls(x.min(0), x.max(0))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Normalizer:
        """The inverse of :meth:`to_dict`."""
        return cls(np.asarray(d["low"], dtype=np.float64), np.asarray(d["high"], dtype=np.float64))

    def to_dict(self) -> dict[str, list[float]]:
        """Plain JSON lists (stored in the dataset's ``info`` and in checkpoints)."""
        return {"low": [float(v) for v in self.low], "high": [float(v) for v in self.high]}

    def _scale(self) -> tuple[np.ndarray, np.ndarray]:
        span = self.high - self.low
        half = np.where(span > 1e-9, span / 2, 1.0)
        return (self.high + self.low) / 2, half

    def encode(self, x: np.ndarray | Tensor) -> np.ndarray | Tensor:
        """Map ``x`` from [low, high] to [-1, 1] per dimension (numpy or torch in, same out)."""
        mid, half = self._scale()
        if isinstance(x, Tensor):
            return (x - x.new_tensor(mid)) / x.new_tensor(half)
        return ((x - mid) / half).astype(np.float32)

    def decode(self, y: np.ndarray | Tensor) -> np.ndarray | Tensor:
        """The inverse of :meth:`encode`."""
        mid, half = self._scale()
        if isinstance(y, Tensor):
            return y * y.new_tensor(half) + y.new_tensor(mid)
        return (y * half + mid).astype(np.float32)


def normalizers(info: Mapping[str, Any]) -> dict[str, Normalizer]:
    """The ``obs`` / ``actions`` / ``goal`` normalisers stored in ``info``."""
    return {k: Normalizer.from_dict(v) for k, v in info["normalizer"].items()}


def fit_normalizers(episodes: Sequence[Episode], angle_dims: Sequence[int] = ()) -> dict[str, Normalizer]:
    """Normalisers of the (training) episodes' observation features, actions and goals."""
    return {"obs": Normalizer.fit(np.concatenate([obs_features(e.obs, angle_dims) for e in episodes])),
            "actions": Normalizer.fit(np.concatenate([e.actions for e in episodes])),
            "goal": Normalizer.fit(np.stack([e.goal for e in episodes]))}


# ---------------------------------------------------------------------------------------------
# training windows
# ---------------------------------------------------------------------------------------------

class EpisodeWindows(TensorStates):
    """Training windows of some episodes (``actions`` (N, horizon, A), ``obs`` (N, obs_steps,
    F), ``goal`` (N, G), all normalised); ``episodes`` keeps the episodes themselves (the
    reference behaviour of the metrics)."""

    def __init__(self, episodes: Sequence[Episode], info: Mapping[str, Any]) -> None:
        norm = normalizers(info)
        to, h, angles = int(info["obs_steps"]), int(info["horizon"]), info.get("angle_dims") or ()
        obs, act, goal = [], [], []
        for ep in episodes:
            T = len(ep.obs)
            f = norm["obs"].encode(obs_features(ep.obs, angles))
            a = norm["actions"].encode(ep.actions)
            t = np.arange(T)
            oi = np.clip(t[:, None] + np.arange(-to + 1, 1)[None], 0, T - 1)
            ai = np.clip(t[:, None] + np.arange(h)[None], 0, T - 1)
            obs.append(f[oi])
            act.append(a[ai])
            goal.append(np.repeat(norm["goal"].encode(ep.goal[None]), T, 0))
        def cat(xs: list[np.ndarray]) -> Tensor:
            return torch.from_numpy(np.concatenate(xs).astype(np.float32))

        super().__init__(actions=cat(act), obs=cat(obs), goal=cat(goal))
        self.episodes = list(episodes)


def split_episodes(episodes: Sequence[Episode], test_fraction: float, seed: int) -> tuple[list[Episode], list[Episode]]:
    """A seeded split by episode (never by window: windows of one episode overlap)."""
    if not 0 <= test_fraction < 1:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction}")
    order = np.random.default_rng(seed).permutation(len(episodes))
    k = math.floor(test_fraction * len(episodes))
    if test_fraction > 0 and len(episodes) > 1:
        k = max(1, k)
    test = set(order[:k].tolist())
    return [e for i, e in enumerate(episodes) if i not in test], [e for i, e in enumerate(episodes) if i in test]
