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
import itertools
import os
import signal
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("gymnasium")

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as fixed_seed
from hypothesis import strategies as st

from polydiff.fuzz import EXAMPLES_ENV, fuzz_reader
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

VALUES = (np.nan, np.inf, -np.inf, 1e300, -1e300, 3e38, 1e30, 0.0, -1.0, 2.0**40, -(2.0**62), 0.5)
DTYPES = ("int8", "int64", "uint64", "uint8", "float16", "float64", "bool", "complex64", "U5", "S3")
KEYS = ("obs", "actions", "state", "action", "episode_ends", "goals", "outcomes", "behaviours", "success", "score",
        "env", "extra")


def _cast(a: np.ndarray, dtype: str) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return a.astype(dtype)
        except (ValueError, TypeError, OverflowError):
            return a


def _reshape(a: np.ndarray, how: str) -> np.ndarray:
    if how == "ravel":
        return a.reshape(-1)
    if how == "add axis":
        return a[..., None]
    if how == "transpose":
        return a.T
    if how == "scalar":
        return np.asarray(a.reshape(-1)[0]) if a.size else a.reshape(-1)
    if a.ndim == 0:  # a scalar has no rows to drop or repeat
        return a
    if how == "empty":
        return a[:0]
    if how == "drop last":
        return a[:-1]
    return np.concatenate([a, a[-1:]]) if len(a) else a  # "repeat last"


@st.composite
def _damaged_arrays(draw: Any, base: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], str]:
    """``base`` with 1 to 3 changes: a key dropped, renamed or added, a dtype or shape changed,
    one element set to a tricky value (NaN, infinite, beyond float32, negative, huge)."""
    arrays = {k: np.array(v) for k, v in base.items()}
    steps = []
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.sampled_from(sorted(arrays))) if arrays else None
        kind = draw(st.sampled_from(["drop", "rename", "add", "dtype", "shape", "value", "value", "value"]))
        if key is None or kind == "add":
            new = draw(st.sampled_from(KEYS))
            arrays[new] = draw(st.sampled_from([np.zeros((3, 2)), np.arange(3), np.array(["a", "b", "c"]),
                                                np.array([True, False, True]), np.array(5), np.zeros(0),
                                                np.array(["pusht"] * 3), np.array(["mine"])]))
            steps.append(f"added {new}={arrays[new]!r}")
        elif kind == "drop":
            del arrays[key]
            steps.append(f"dropped {key}")
        elif kind == "rename":
            new = draw(st.sampled_from(KEYS))
            arrays[new] = arrays.pop(key)
            steps.append(f"renamed {key} to {new}")
        elif kind == "dtype":
            dtype = draw(st.sampled_from(DTYPES))
            arrays[key] = _cast(arrays[key], dtype)
            steps.append(f"{key} as {dtype}")
        elif kind == "shape":
            how = draw(st.sampled_from(["ravel", "add axis", "transpose", "scalar", "empty", "drop last",
                                        "repeat last"]))
            arrays[key] = _reshape(arrays[key], how)
            steps.append(f"{key}: {how}")
        elif arrays[key].size:
            a = arrays[key].copy()
            at = draw(st.integers(0, a.size - 1))
            value = draw(st.sampled_from(VALUES))
            if a.dtype.kind not in "fc":
                a = _cast(a, "float64") if a.dtype.kind in "iub" and not np.isfinite(value) else a
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    a.reshape(-1)[at] = value
                except (ValueError, TypeError, OverflowError):
                    pass
            arrays[key] = a
            steps.append(f"{key}[{at}] = {value!r}")
    return arrays, "; ".join(steps)


class _Hang(BaseException):
    """Raised in the reader by the alarm (a BaseException so that readers cannot catch it)."""


def _examples(default: int) -> int:
    return int(os.environ.get(EXAMPLES_ENV) or default)


def _accept(read: Callable[[Path], list[Episode]], path: Path, what: str, timeout: float = 10.0) -> None:
    """The outcomes :func:`polydiff.fuzz.fuzz_reader` accepts: a typed error naming the file, or
    as many consistent episodes as the file's ``episode_ends`` holds (fewer only with a warning
    naming it); anything else (another exception, a message without the file, a hang) fails."""

    def alarm(signum: int, frame: Any) -> None:
        raise _Hang

    old = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                episodes = read(path)
            except _Hang:
                raise AssertionError(f"{what}: no answer within {timeout:g}s (a hang?)") from None
            except EXPECTED as err:
                assert path.name in str(err), f"{what}: the {type(err).__name__} does not name {path.name}: {err}"
                return
            except Exception as err:
                raise AssertionError(f"{what}: raised {type(err).__name__}, not one of "
                                     f"{', '.join(e.__name__ for e in EXPECTED)}: {err}") from err
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    try:
        _check(episodes)
    except AssertionError as err:
        raise AssertionError(f"{what}: inconsistent result: {err}") from None
    want = _npz_episodes(path.name, path.read_bytes())
    warned = any(path.name in str(w.message) for w in caught)
    assert want is None or len(episodes) == want or (len(episodes) < want and warned), \
        f"{what}: {len(episodes)} episodes, the file's episode_ends holds {want}"


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
    counter = itertools.count()

    @fixed_seed(0)
    @settings(max_examples=_examples(200), deadline=None, database=None, print_blob=False,
              phases=(Phase.generate, Phase.shrink), report_multiple_bugs=False,
              suppress_health_check=list(HealthCheck))
    @given(_damaged_arrays(base))
    def one(case: tuple[dict[str, np.ndarray], str]) -> None:
        arrays, what = case
        path = tmp_path / f"case-{next(counter)}" / "demos.npz"
        path.parent.mkdir()
        path.write_bytes(npz_bytes(arrays))
        _accept(read, path, f"{layout}: {what}")

    one()

