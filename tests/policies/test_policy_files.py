"""Users' episode files: unreadable ``.npz`` files, sizes that do not fit the environment,
files without goals or success information, and like-for-like behaviour metrics."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("gymnasium")

from polydiff.cli import main
from polydiff_policies import PoliciesModality
from polydiff_policies.episodes import EpisodeError, read_episodes
from polydiff_policies.metrics import rollout_metrics
from polydiff_policies.modality import file_dataset

pytestmark = pytest.mark.usefixtures("one_thread")


def _demos(path: Path, obs_dim: int = 2, action_dim: int = 2, goal_dim: int = 2, extra: bool = True,
           n: int = 8) -> Path:
    """``n`` small random episodes; with ``extra``: outcomes, behaviours, success (every fourth fails)."""
    rng = np.random.default_rng(0)
    lengths = [5 + i % 3 for i in range(n)]
    arrays = {"obs": rng.normal(size=(sum(lengths), obs_dim)).astype(np.float32),
              "actions": rng.normal(size=(sum(lengths), action_dim)).astype(np.float32),
              "episode_ends": np.cumsum(lengths), "goals": rng.normal(size=(n, goal_dim)).astype(np.float32)}
    if extra:
        arrays.update(outcomes=np.array([f"goal{i % 3}" for i in range(n)]),
                      behaviours=np.array(["left" if i % 2 else "right" for i in range(n)]),
                      success=np.array([i % 4 != 0 for i in range(n)]))
    np.savez(path, **arrays)
    return path


# -- unreadable files ------------------------------------------------------------------------------

def _unreadable(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    good = _demos(tmp_path / "good.npz").read_bytes()
    files = {"trunc.npz": (good[:300], "cut-off or damaged zip"), "empty.npz": (b"", "the file is empty"),
             "garbage.npz": (b"\xff\xfe\x00garbage", "not a zip archive"),
             "pk.npz": (b"PK\x03\x04garbage", "cut-off or damaged zip")}
    out = {name: (tmp_path / name, why) for name, (data, why) in files.items()}
    for path, (data, _) in zip((p for p, _ in out.values()), files.values()):
        path.write_bytes(data)
    np.save(tmp_path / "arr.npy", np.zeros((3, 2)))
    out["arr.npy"] = (tmp_path / "arr.npy", "a single .npy array")
    np.savez(tmp_path / "objects.npz", obs=np.array([{"a": 1}, None], dtype=object))
    out["objects.npz"] = (tmp_path / "objects.npz", "array 'obs' holds pickled Python objects, which are refused as "
                                                    "unsafe")
    return out


def test_unreadable_npz_files_are_one_line_errors_that_never_suggest_unpickling(tmp_path: Path) -> None:
    for name, (path, why) in _unreadable(tmp_path).items():
        with pytest.raises(EpisodeError) as err:
            read_episodes(path)
        msg = str(err.value)
        assert msg.startswith(f"{path}: not a readable .npz file (") and why in msg, (name, msg)
        assert "allow_pickle" not in msg and "\n" not in msg, (name, msg)


def test_evaluate_and_train_on_unreadable_files_exit_2_without_a_traceback(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = _demos(tmp_path / "ref.npz")
    for name, (path, why) in _unreadable(tmp_path).items():
        capsys.readouterr()
        assert main(["evaluate", str(path), "--modality", "policies", "--reference", str(good)]) == 2, name
        err = capsys.readouterr().err
        assert "Traceback" not in err and why in err and str(path) in err, (name, err)
    with pytest.raises(EpisodeError, match="the file is empty"):
        file_dataset(str(tmp_path / "empty.npz"), env="reach")


# -- sizes that do not fit the environment ---------------------------------------------------------

@pytest.mark.parametrize(("sizes", "key", "message"), [
    ({"obs_dim": 3}, "obs", "'obs' has 3 values per step, but environment 'reach' has 2-D observations"),
    ({"action_dim": 3}, "actions", "'actions' has 3 values per step, but environment 'reach' has 2-D actions"),
    ({"goal_dim": 3}, "goals", "'goals' has 3 values per episode, but environment 'reach' has 2-D goals")])
def test_sizes_that_do_not_fit_the_env_are_refused_when_the_data_is_built(
        tmp_path: Path, sizes: dict[str, int], key: str, message: str) -> None:
    path = _demos(tmp_path / f"{key}3.npz", **sizes)
    with pytest.raises(EpisodeError) as err:
        file_dataset(str(path), env="reach")
    assert str(err.value) == f"{path}: {message}"
    assert file_dataset(str(path)).info[{"obs": "obs_dim", "actions": "action_dim", "goals": "goal_dim"}[key]] == 3
    nogoals = tmp_path / "nogoals.npz"  # a goal given as a data option is checked too
    z = dict(np.load(_demos(tmp_path / "g.npz")))
    np.savez(nogoals, **{k: v for k, v in z.items() if k != "goals"})
    with pytest.raises(EpisodeError, match=r"the goal option' has 3 values per episode"):
        file_dataset(str(nogoals), env="reach", goal=[0.1, 0.2, 0.3])
    assert file_dataset(str(nogoals), env="reach", goal=[0.1, 0.2]).info["goal_dim"] == 2


# -- goals and success information -----------------------------------------------------------------

def test_a_file_without_goals_takes_its_environments_single_goal_or_says_what_to_do(tmp_path: Path) -> None:
    from polydiff_policies.envs.pusht import GOAL_POSE, T_EDGES

    ends = np.array([20, 40])
    state = np.tile(np.array([[100.0, 100.0, 300.0, 300.0, 0.3]], np.float32), (40, 1))
    action = np.tile(np.array([[300.0, 300.0]], np.float32), (40, 1))  # the agent heads into the T
    path = tmp_path / "pusht.npz"
    np.savez(path, state=state, action=action, episode_ends=ends)  # Diffusion Policy's replay buffer layout
    eps = read_episodes(path)
    assert all(np.allclose(e.goal, GOAL_POSE) and e.meta["env"] == "pusht" for e in eps)
    read = PoliciesModality().read(path)  # evaluate labels the behaviour (the side touched first) by replay
    assert all(e.behaviour in (*T_EDGES, "") for e in read) and any(e.behaviour for e in read)
    reach = tmp_path / "reach.npz"  # reach has three goals: the file must say which
    np.savez(reach, obs=state[:, :2], actions=action, episode_ends=ends, env=np.array(["reach", "reach"]))
    with pytest.raises(EpisodeError, match=r"reach\.npz: no 'goals' array: add one to the file \(numpy\.savez"):
        read_episodes(reach)


def test_no_success_information_is_nan_and_self_comparison_is_zero(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    plain = _demos(tmp_path / "plain.npz", extra=False)
    m = rollout_metrics(read_episodes(plain), read_episodes(plain), ("goal0", "goal1", "goal2"))
    assert math.isnan(m["success_rate"]) and "goal_coverage" not in m and m["behaviour_tv"] == 0.0
    demos = _demos(tmp_path / "demos.npz")  # 2 of 8 episodes failed: both sides keep the successful ones
    eps = read_episodes(demos)
    m = rollout_metrics(eps, eps)
    assert m["success_rate"] == 0.75 and m["behaviour_tv"] == 0.0
    assert main(["evaluate", str(demos), "--modality", "policies", "--reference", str(demos)]) == 0
    assert "behaviour_tv: 0\n" in capsys.readouterr().out
    # rollouts that all failed still report 0: they record success
    failed = [type(e)(e.obs, e.actions, e.goal, "", e.behaviour, {"success": False}) for e in eps]
    assert rollout_metrics(failed)["success_rate"] == 0.0


def test_success_and_score_arrays_of_the_wrong_kind_are_refused(tmp_path: Path) -> None:
    """``bool("False")`` is True and ``bool(nan)`` too: a ``success`` array of strings or NaN
    read as all or half successes. Booleans and 0 / 1 numbers are accepted, the rest named."""
    z = dict(np.load(_demos(tmp_path / "demos.npz")))
    n = len(z["episode_ends"])
    for ok in (np.zeros(n, dtype=bool), np.zeros(n, dtype=np.int64), np.zeros(n)):
        np.savez(tmp_path / "ok.npz", **{**z, "success": ok})
        assert rollout_metrics(read_episodes(tmp_path / "ok.npz"))["success_rate"] == 0.0
    cases = {"success": (np.array(["False"] * n), "booleans or 0 / 1"),
             "score": (np.array([np.nan] + [0.5] * (n - 1)), "finite real numbers"),
             "env": (np.arange(n), "strings")}
    for key, (values, want) in cases.items():
        np.savez(tmp_path / "bad.npz", **{**z, key: values})
        with pytest.raises(EpisodeError, match=rf"bad\.npz: '{key}' must hold {want}"):
            read_episodes(tmp_path / "bad.npz")
    np.savez(tmp_path / "half.npz", **{**z, "success": np.array([np.nan] + [0.0] * (n - 1))})
    with pytest.raises(EpisodeError, match="'success' must hold booleans"):
        read_episodes(tmp_path / "half.npz")


def test_the_plot_module_is_reachable_from_the_package():
    """docs/policies.md calls polydiff_policies.plot.animate(...) after `import polydiff_policies`:
    the package's lazy attributes did not include the module (AttributeError: plot)."""
    import subprocess
    import sys

    code = "import polydiff_policies as p; print(callable(p.plot.animate))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "True", out.stderr


def test_episodes_and_reference_of_different_environments_are_refused(tmp_path: Path) -> None:
    """Reach episodes against Push-T demonstrations printed behaviour_tv 1, as if measured."""
    eps = read_episodes(_demos(tmp_path / "demos.npz"))
    mine = [type(e)(e.obs, e.actions, e.goal, e.outcome, e.behaviour, {**e.meta, "env": "reach"}) for e in eps]
    other = [type(e)(e.obs, e.actions, e.goal, e.outcome, e.behaviour, {**e.meta, "env": "pusht"}) for e in eps]
    mod = PoliciesModality()
    with pytest.raises(ValueError, match="episodes are from environment reach, the reference from pusht"):
        mod.evaluate(mine, other, {})
    assert mod.evaluate(mine, mine, {})["behaviour_tv"] == 0.0
