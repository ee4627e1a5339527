"""Fuzzing the policies plugin's readers of users' files: episode ``.npz`` files
(:func:`read_episodes`) and the folder ``polydiff evaluate DIR --modality policies`` reads
(:meth:`PoliciesModality.read`: ``rollouts.npz``, or Diffusion Policy's Push-T replay-buffer
layout, whose behaviours are labelled by replay).

Two kinds of damage: the bytes of the archive (:func:`polydiff.fuzz.fuzz_reader`: a zip's CRCs
catch most of it, so these mostly check that a damaged archive is one clear error), and the
arrays inside a well-formed archive (keys dropped or renamed, dtypes and shapes changed, NaN,
huge or negative values spliced in), which reach the reader's own checks. Either ends in a
typed error naming the file or in episodes that are consistent with the file."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("gymnasium")

from polydiff.fuzz import fuzz_arrays, fuzz_reader
from polydiff_policies import PoliciesModality
from polydiff_policies.envs.base import Episode
from polydiff_policies.episodes import EpisodeError, npz_bytes, read_episodes, write_episodes

pytestmark = pytest.mark.usefixtures("one_thread")

EXPECTED = (EpisodeError, ValueError, OSError, KeyError)
TOKENS = (b"PK\x03\x04", b"PK\x01\x02", b"PK\x05\x06", b"\x93NUMPY", b"episode_ends", b"obs.npy", b"<f4", b"<i8",
          b"'shape': (", b"(999999999999, 3)")


def _episodes() -> list[Episode]:
    """Three small episodes of a made-up environment with every optional label."""
    rng = np.random.default_rng(0)
    return [Episode(rng.normal(size=(4 + i, 3)).astype(np.float32), rng.normal(size=(4 + i, 2)).astype(np.float32),
                    np.array([i, -i], dtype=np.float32), f"goal{i}", "left" if i % 2 else "right",
                    {"success": i != 1, "score": 0.5 * i, "env": "mine"}) for i in range(3)]


def _pusht_arrays() -> dict[str, np.ndarray]:
    """Diffusion Policy's Push-T replay buffer layout (``state`` / ``action``, no goals, no labels):
    two short episodes whose agent heads into the T."""
    state = np.tile(np.array([[100.0, 100.0, 300.0, 300.0, 0.3]], np.float32), (16, 1))
    action = np.tile(np.array([[300.0, 300.0]], np.float32), (16, 1))
    return {"state": state, "action": action, "episode_ends": np.array([8, 16])}


def _npz_episodes(name: str, data: bytes) -> int | None:
    """Episodes the bytes hold: the length of their ``episode_ends`` where numpy can load it."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            return int(np.asarray(z["episode_ends"]).size)
    except Exception:  # unreadable: the reader must refuse it (or read it: then the count is not told)
        return None


def _check(episodes: list[Episode]) -> None:
    """Episodes the metrics can use: 2-D float32 observations and actions of one positive length,
    a 1-D goal, all finite."""
    assert episodes, "no episodes returned without an error"
    for e, ep in enumerate(episodes):
        assert isinstance(ep, Episode), f"episode {e} is a {type(ep).__name__}"
        assert ep.obs.ndim == 2 and ep.actions.ndim == 2 and ep.goal.ndim == 1, f"episode {e}: wrong dimensions"
        assert len(ep.obs) == len(ep.actions) > 0, f"episode {e}: {len(ep.obs)} obs, {len(ep.actions)} actions"
        for what, a in (("obs", ep.obs), ("actions", ep.actions), ("goal", ep.goal)):
            assert a.dtype == np.float32, f"episode {e}: {what} is {a.dtype}"
            assert np.isfinite(a).all(), f"episode {e}: non-finite {what}"
        assert isinstance(ep.outcome, str) and isinstance(ep.behaviour, str)


# -- the bytes of the archive -----------------------------------------------------------------------

def test_fuzz_read_episodes(tmp_path):
    valid = write_episodes(_episodes(), tmp_path / "valid.npz").read_bytes()
    print(fuzz_reader(read_episodes, {"demos.npz": valid}, tmp_path / "fuzz", examples=150, expected=EXPECTED,
                      records=_npz_episodes, check=_check, tokens=TOKENS, name="read_episodes"))


@pytest.mark.parametrize("layout", ["rollouts", "pusht"])
def test_fuzz_policies_read_folder(tmp_path, layout):
    """``polydiff evaluate DIR --modality policies``: a folder with ``rollouts.npz`` (as
    ``polydiff sample`` writes it), or with one Push-T replay buffer (behaviours labelled by replay)."""
    if layout == "rollouts":
        valid = {"rollouts.npz": write_episodes(_episodes(), tmp_path / "valid.npz").read_bytes()}
    else:
        valid = {"pusht_demos.npz": npz_bytes(_pusht_arrays())}
    print(fuzz_reader(PoliciesModality().read, valid, tmp_path / "fuzz", folder=True, examples=100,
                      expected=EXPECTED, records=_npz_episodes, check=_check, tokens=TOKENS,
                      name=f"PoliciesModality.read({layout} folder)"))


# -- the arrays inside a well-formed archive ----------------------------------------------------------

KEYS = ("obs", "actions", "state", "action", "episode_ends", "goals", "outcomes", "behaviours", "success", "score",
        "env", "extra")


@pytest.mark.parametrize("layout", ["rollouts", "pusht"])
def test_fuzz_episode_arrays(tmp_path, layout):
    """Well-formed archives of damaged arrays: ``read_episodes`` on a file of ``rollouts``
    (every optional array), ``PoliciesModality.read`` on a Push-T replay buffer (the single goal
    of Push-T, behaviours labelled by replay)."""
    if layout == "rollouts":
        with np.load(write_episodes(_episodes(), tmp_path / "valid.npz"), allow_pickle=False) as z:
            base = dict(z)
        read: Callable[[Path], list[Episode]] = read_episodes
    else:
        base, read = _pusht_arrays(), PoliciesModality().read
    print(fuzz_arrays(read, base, tmp_path / "fuzz", file="demos.npz", examples=200, expected=EXPECTED,
                      records=_npz_episodes, check=_check, keys=KEYS, timeout=10.0,
                      name=f"{getattr(read, '__qualname__', 'read')}({layout} arrays)"))
