"""The policies modality: episode files, windows, normalisers, metrics, the modality contract,
policies in plain Gymnasium loops, guidance over goals, and tiny end-to-end runs."""

from __future__ import annotations

import dataclasses
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("gymnasium")

import polydiff
from polydiff.testing import check_modality
from polydiff_policies import (
    PoliciesModality,
    Policy,
    envs,
    rollout,
)
from polydiff_policies.envs.base import Episode
from polydiff_policies.episodes import (
    EpisodeError,
    EpisodeWindows,
    Normalizer,
    check_episodes,
    obs_features,
    read_episodes,
    write_episodes,
)
from polydiff_policies.metrics import behaviour_entropy, entropy_bits, rollout_metrics, tv_distance

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[2]
TINY_DATA = {"name": "reach", "episodes": 24, "horizon": 8, "execute": 4}
TINY_NET = {"dim": 32, "depth": 1, "heads": 2}


def _episodes(k: int = 3, obs_dim: int = 3) -> list[Episode]:
    rng = np.random.default_rng(0)
    return [Episode(rng.normal(size=(5 + i, obs_dim)).astype(np.float32), rng.normal(size=(5 + i, 2)).astype(
        np.float32), np.array([i, -i], dtype=np.float32), f"goal{i}", "left" if i % 2 else "right",
        {"success": i != 1, "score": 0.5 * i, "env": "reach"}) for i in range(k)]


def _save(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


# -- files ---------------------------------------------------------------------------------------

def test_episode_files_round_trip_and_are_deterministic(tmp_path: Path) -> None:
    eps = _episodes()
    a = write_episodes(eps, tmp_path / "a.npz").read_bytes()
    back = read_episodes(tmp_path / "a.npz")
    assert [len(e.obs) for e in back] == [5, 6, 7]
    for x, y in zip(eps, back):
        np.testing.assert_array_equal(x.obs, y.obs)
        np.testing.assert_array_equal(x.actions, y.actions)
        np.testing.assert_array_equal(x.goal, y.goal)
        assert (x.outcome, x.behaviour) == (y.outcome, y.behaviour)
        assert y.meta == x.meta
    assert write_episodes(back, tmp_path / "b.npz").read_bytes() == a  # same episodes, same bytes
    with zipfile.ZipFile(io.BytesIO(a)) as zf:
        assert {i.date_time for i in zf.infolist()} == {(1980, 1, 1, 0, 0, 0)}
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]


def test_byte_string_labels_read_as_text_and_a_nan_score_is_not_written(tmp_path: Path) -> None:
    """Files converted from HDF5 / zarr hold byte strings: read as the text they are, not
    "b'left'"; a score the reader would refuse is refused by the writer too."""
    obs, act, ends, goals = np.zeros((6, 3)), np.zeros((6, 2)), np.array([2, 6]), np.zeros((2, 2))
    eps = read_episodes(_save(tmp_path / "b.npz", obs=obs, actions=act, episode_ends=ends, goals=goals,
                              outcomes=np.array([b"left", b"right"]), env=np.array([b"reach", b"reach"])))
    assert [e.outcome for e in eps] == ["left", "right"] and eps[0].meta["env"] == "reach"
    with pytest.raises(EpisodeError, match=r"l\.npz: 'outcomes' holds bytes that are not UTF-8 text"):
        read_episodes(_save(tmp_path / "l.npz", obs=obs, actions=act, episode_ends=ends, goals=goals,
                            outcomes=np.array([b"caf\xe9", b"x"])))
    bad = [dataclasses.replace(e, meta={**e.meta, "score": float("nan")}) for e in _episodes()]
    with pytest.raises(EpisodeError, match=r"s\.npz: 'score' must hold finite real numbers"):
        write_episodes(bad, tmp_path / "s.npz")
    assert not (tmp_path / "s.npz").exists()


def test_episode_file_errors_name_the_file_and_the_episode(tmp_path: Path) -> None:
    obs, act = np.zeros((10, 3)), np.zeros((10, 2))
    ends, goals = np.array([4, 10]), np.zeros((2, 2))
    with pytest.raises(EpisodeError, match=r"bad\.npz: no 'obs' or 'state' array"):
        read_episodes(_save(tmp_path / "bad.npz", actions=act, episode_ends=ends, goals=goals))
    with pytest.raises(EpisodeError, match=r"bad2\.npz: 10 observations but 9 actions"):
        read_episodes(_save(tmp_path / "bad2.npz", obs=obs, actions=act[:9], episode_ends=ends, goals=goals))
    with pytest.raises(EpisodeError, match=r"bad3\.npz: episode 1: episode_ends must increase"):
        read_episodes(_save(tmp_path / "bad3.npz", obs=obs, actions=act, episode_ends=np.array([4, 4, 10]),
                            goals=np.zeros((3, 2))))
    with pytest.raises(EpisodeError, match=r"bad4\.npz: episode_ends ends at 9 but the arrays have 10 steps"):
        read_episodes(_save(tmp_path / "bad4.npz", obs=obs, actions=act, episode_ends=np.array([4, 9]), goals=goals))
    nan = obs.copy()
    nan[6, 1] = np.nan
    with pytest.raises(EpisodeError, match=r"bad5\.npz: episode 1: 'obs' holds NaN or infinite values \(step 2\)"):
        read_episodes(_save(tmp_path / "bad5.npz", obs=nan, actions=act, episode_ends=ends, goals=goals))
    with pytest.raises(EpisodeError, match=r"bad6\.npz: no 'goals' array"):
        read_episodes(_save(tmp_path / "bad6.npz", obs=obs, actions=act, episode_ends=ends))
    with pytest.raises(EpisodeError, match=r"bad7\.npz: 'goals' must be \(episodes, goal_dim\)"):
        read_episodes(_save(tmp_path / "bad7.npz", obs=obs, actions=act, episode_ends=ends, goals=np.zeros((3, 2))))
    (tmp_path / "bad8.npz").write_bytes(b"not a zip")
    with pytest.raises(EpisodeError, match=r"bad8\.npz: not a readable \.npz file"):
        read_episodes(tmp_path / "bad8.npz")
    # Push-T's own key names, with a default goal
    eps = read_episodes(_save(tmp_path / "pt.npz", state=obs, action=act, episode_ends=ends), goal=[1.0, 2.0, 3.0])
    assert len(eps) == 2 and eps[1].goal.tolist() == [1.0, 2.0, 3.0]


def test_mismatched_episodes_are_named() -> None:
    eps = _episodes()
    eps[2] = Episode(eps[2].obs[:, :2], eps[2].actions, eps[2].goal)
    with pytest.raises(EpisodeError, match=r"mine: episode 2: \(obs, action, goal\) dimensions"):
        check_episodes(eps, "mine")


# -- normalisers and windows ---------------------------------------------------------------------

def test_normalizer_maps_the_range_to_unit_interval_and_back() -> None:
    x = np.array([[0.0, 5.0, 1.0], [10.0, 5.0, 3.0], [4.0, 5.0, 2.0]])
    n = Normalizer.fit(x)
    y = n.encode(x)
    np.testing.assert_allclose(y[:, 0], [-1, 1, -0.2], atol=1e-6)
    np.testing.assert_allclose(y[:, 1], 0, atol=1e-6)  # a constant dimension maps to 0
    np.testing.assert_allclose(n.decode(y), x, atol=1e-5)
    t = torch.tensor(x)
    torch.testing.assert_close(n.decode(n.encode(t)), t)
    assert Normalizer.from_dict(json.loads(json.dumps(n.to_dict()))).to_dict() == n.to_dict()


def test_angle_features_have_no_jump_at_the_wrap() -> None:
    a = np.array([[1.0, 2 * np.pi - 1e-4], [1.0, 1e-4]])
    f = obs_features(a, [1])
    assert f.shape == (2, 3) and np.abs(f[0] - f[1]).max() < 1e-3
    torch.testing.assert_close(obs_features(torch.tensor(a), [1]), torch.tensor(f))


def test_windows_pad_like_diffusion_policy() -> None:
    ep = Episode(np.arange(5, dtype=np.float32)[:, None], np.arange(5, dtype=np.float32)[:, None] * 10,
                 np.array([7.0], dtype=np.float32))
    ident = {"low": [-1.0], "high": [1.0]}
    info = {"obs_steps": 3, "horizon": 4, "normalizer": {"obs": ident, "actions": ident, "goal": ident}}
    w = EpisodeWindows([ep], info)
    assert len(w) == 5
    assert w[0]["obs"][:, 0].tolist() == [0, 0, 0]  # the first observation repeated before the start
    assert w[3]["obs"][:, 0].tolist() == [1, 2, 3]
    assert w[3]["actions"][:, 0].tolist() == [30, 40, 40, 40]  # the last action repeated after the end
    assert w[0]["goal"].tolist() == [7.0]


# -- metrics -------------------------------------------------------------------------------------

def test_entropy_and_tv_by_hand() -> None:
    assert entropy_bits(["a", "b"]) == pytest.approx(1.0)
    assert entropy_bits(["a"] * 5) == 0.0 and str(entropy_bits(["a"] * 5)) == "0.0"  # not -0.0 in reports
    assert entropy_bits(["a", "b", "c", "d"]) == pytest.approx(2.0)
    assert entropy_bits(["a", "a", "a", "b"]) == pytest.approx(-(0.75 * np.log2(0.75) + 0.25 * np.log2(0.25)))
    assert tv_distance(["a", "a"], ["a", "b"]) == pytest.approx(0.5)
    assert tv_distance(["a"], ["b"]) == pytest.approx(1.0)


def test_goal_free_rollouts_are_grouped_by_the_goal_reached() -> None:
    """A goal-free policy never sees the goal its rollout was assigned: its behaviours are grouped
    by the goal it reached (and the reference alike), not by the unseen command."""
    g0, g1 = np.array([0.0, 1.0], dtype=np.float32), np.array([1.0, 1.0], dtype=np.float32)

    def ep(goal, outcome, behaviour, free):
        return Episode(np.zeros((3, 2), np.float32), np.zeros((3, 2), np.float32), goal, outcome, behaviour,
                       {"success": True, "goal_free": free})

    # each goal always by one route, whichever goal was assigned
    rollouts = [ep(g0, "goal0", "left", True), ep(g0, "goal1", "up", True), ep(g1, "goal0", "left", True),
                ep(g1, "goal1", "up", True)]
    demos = [ep(g0, "goal0", "left", False), ep(g1, "goal1", "up", False)]
    m = rollout_metrics(rollouts, demos)
    assert m["behaviour_entropy"] == 0.0 and m["reference_behaviour_entropy"] == 0.0
    assert m["behaviour_tv"] == 0.0  # grouped by the assigned goal: entropy 1 bit and TV 0.5
    assert behaviour_entropy(rollouts, by_outcome=False) == pytest.approx(1.0)
    goal_directed = [ep(g, o, b, False) for g, o, b in ((g0, "goal0", "left"), (g1, "goal0", "up"))]
    assert behaviour_entropy(goal_directed) == 0.0  # goal-directed episodes stay grouped by command


def test_rollout_metrics_by_hand() -> None:
    g0, g1 = np.array([0.0, 1.0], dtype=np.float32), np.array([1.0, 1.0], dtype=np.float32)

    def ep(goal, outcome, behaviour, success, score=None):
        meta = {"success": success, **({} if score is None else {"score": score})}
        return Episode(np.zeros((3, 2), np.float32), np.zeros((3, 2), np.float32), goal, outcome, behaviour, meta)

    eps = [ep(g0, "goal0", "left", True, 1.0), ep(g0, "goal0", "right", True, 0.5), ep(g1, "goal1", "left", True, 1.0),
           ep(g1, "", "", False, 0.2)]
    m = rollout_metrics(eps, goal_outcomes=("goal0", "goal1", "goal2"))
    assert m["success_rate"] == 0.75
    assert m["behaviour_entropy"] == pytest.approx(0.5)  # goal0: 1 bit, goal1: 0 bits
    assert m["goal_coverage"] == pytest.approx(2 / 3)
    assert m["score"] == pytest.approx(2.7 / 4)
    assert behaviour_entropy([eps[3]]) != behaviour_entropy([eps[3]])  # NaN: nothing succeeded
    failed_right = ep(g1, "", "right", False, 0.1)  # a failed episode that still chose a side
    m = rollout_metrics([*eps, failed_right])
    assert m["behaviour_entropy"] == pytest.approx(0.5)  # failures do not count here ...
    assert m["behaviour_entropy_all"] == pytest.approx(1.0)  # ... but do here: goal1 left / right
    assert behaviour_entropy([failed_right], successful_only=False) == 0.0
    ref = [ep(g0, "goal0", "left", True), ep(g0, "goal0", "right", True)]
    m = rollout_metrics(eps[:2], ref)
    assert m["behaviour_tv"] == 0.0 and m["goal_coverage"] == 1.0


# -- the modality --------------------------------------------------------------------------------

def test_modality_contract(tmp_path: Path) -> None:
    report = check_modality(PoliciesModality(), tmp_path, data=TINY_DATA, model={"name": "transformer", **TINY_NET},
                            n=4, steps=2)
    assert report is not None


def test_foreign_objects_are_refused_by_the_generator(tiny_run: Path, tmp_path: Path) -> None:
    gen = polydiff.load(tiny_run)
    for call in (gen.evaluate, lambda o: gen.save(o, tmp_path / "x")):
        with pytest.raises(TypeError, match=r"objects\[0\]: expected a.* Episode .*got str"):
            call(["CCO"])
    with pytest.raises(ValueError, match="objects: an empty list"):  # not an error naming a temporary file
        gen.save([], tmp_path / "y")


def test_listed_with_datasets_networks_and_recipes() -> None:
    m = polydiff.load_modality("policies")
    d = m.describe()
    assert list(d["datasets"])[:3] == ["reach", "blocks", "pusht"]
    assert set(d["networks"]) == {"transformer", "mlp"}
    assert {f"{e}_{k}" for e in ("reach", "blocks", "pusht") for k in ("beso", "ddpm", "bc")} <= set(d["recipes"])
    for name, path in m.recipes().items():  # the layout's configs/ copies are the package's recipes
        assert (ROOT / "configs" / "policies" / f"{name}.yaml").read_text() == Path(path).read_text()


def test_transformer_ignores_the_goal_only_where_it_is_dropped() -> None:
    m = PoliciesModality()
    data = m.dataset("reach", episodes=12, horizon=8, execute=4)
    fields = m.fields(data.info)
    net = m.network("transformer", data.info, fields, **TINY_NET).eval()
    torch.nn.init.normal_(net.out.weight, std=0.1)
    batch = data.train.get_batch(torch.arange(4))
    t = torch.full((4,), 0.3)
    out = net(batch, t)["actions"]
    other = dict(batch, goal=batch["goal"] + 0.5)
    assert not torch.allclose(net(other, t)["actions"], out)
    nulled = dict(batch, goal=torch.full_like(batch["goal"], float("nan")))
    nulled2 = dict(other, goal=torch.full_like(batch["goal"], float("nan")))
    torch.testing.assert_close(net(nulled, t)["actions"], net(nulled2, t)["actions"])
    assert torch.isfinite(net(nulled, t)["actions"]).all()


def test_encoder_block_is_torchs_pre_norm_layer_and_loads_its_checkpoints() -> None:
    """The written-out block computes what nn.TransformerEncoderLayer(norm_first, gelu) computes
    with the same weights (outputs and input gradients), and a state dict of that layer loads."""
    from polydiff_policies.nets import _Encoder

    torch.manual_seed(0)
    ref = torch.nn.TransformerEncoder(torch.nn.TransformerEncoderLayer(
        24, 4, 96, 0.0, activation="gelu", batch_first=True, norm_first=True), 2, enable_nested_tensor=False)
    for prm in ref.parameters():  # no zero biases: every weight must land in its place
        torch.nn.init.normal_(prm, std=0.2)
    ours = _Encoder(24, 4, 96, 0.0, 2)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(3, 7, 24, requires_grad=True)
    for mode in (True, False):  # training (no dropout) and the fast inference path of torch's layer
        ref.train(mode)
        ours.train(mode)
        want, got = ref(x), ours(x)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    (g_ref,) = torch.autograd.grad(ref.train()(x).square().sum(), x)
    (g_ours,) = torch.autograd.grad(ours.train()(x).square().sum(), x)
    torch.testing.assert_close(g_ours, g_ref, atol=1e-4, rtol=1e-4)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    recipe = {"modality": "policies", "data": TINY_DATA, "model": {"name": "transformer", **TINY_NET},
              "process": {"schedule": "edm"},
              "loss": {"weighting": "edm", "time_density": "log_logistic", "cond_drop": 0.1},
              "train": {"max_steps": 40, "batch_size": 64, "lr": 1e-3, "accelerator": "cpu", "devices": 1,
                        "threads": 1, "checkpoint_every": 40, "progress": False},
              "sample": {"num": 4, "sampler": "ddim", "steps": 3, "final_zero": True, "guidance_scale": 2.0}}
    run = polydiff.train(recipe, tmp_path_factory.mktemp("beso"), fresh=True, verbose=False)
    return Path(run.checkpoint)


def test_policy_in_a_plain_gymnasium_loop(tiny_run: Path) -> None:
    policy = Policy.from_checkpoint(tiny_run)
    assert policy.guidance_scale == 2.0 and policy.settings.steps == 3 and policy.nfe == 3
    env = envs.make("reach")
    obs, _ = env.reset(seed=3, options={"goal": env.goals[1]})
    policy.reset()
    calls = []
    for _ in range(10):
        before = policy.network_calls
        action = policy.act(obs, env.goals[1])
        calls.append(policy.network_calls - before)
        assert action.shape == (2,) and np.isfinite(action).all()
        obs, _, term, trunc, _ = env.step(action)
        if term or trunc:
            break
    # one guided chunk (3 steps x 2 passes) every `execute` = 4 actions
    assert calls[:8] == [6, 0, 0, 0, 6, 0, 0, 0]


def test_goal_free_is_lambda_zero_and_rollouts_are_seeded(tiny_run: Path) -> None:
    a = Policy.from_checkpoint(tiny_run, guidance_scale=0.0)
    b = Policy.from_checkpoint(tiny_run, guidance_scale=2.0)
    obs = np.zeros((2, 2, 2), dtype=np.float32)
    goals = np.stack([envs.make("reach").goals[0]] * 2)
    np.testing.assert_array_equal(a.sample_chunks(obs, goals, [1, 2]), b.sample_chunks(obs, None, [1, 2]))
    assert not np.array_equal(b.sample_chunks(obs, goals, [1, 2]), b.sample_chunks(obs, None, [1, 2]))
    # a row's noise depends on its seed only; the network's float rounding may depend on the batch size
    # (BLAS kernels block by batch on some CPUs), so across batch sizes rows agree to rounding, not bits
    np.testing.assert_allclose(b.sample_chunks(obs, goals, [1, 2])[1], b.sample_chunks(obs[1:], goals[1:], [2])[0],
                               rtol=0, atol=1e-5)
    make = lambda: envs.make("reach")  # noqa: E731
    e1, t1 = rollout(b, make, 3, start_seeds=[5, 5, 5], noise_seeds=[0, 1, 2], max_steps=12)
    e2, _ = rollout(b, make, 3, start_seeds=[5, 5, 5], noise_seeds=[0, 1, 2], max_steps=12)
    for x, y in zip(e1, e2):
        np.testing.assert_array_equal(x.actions, y.actions)
    np.testing.assert_array_equal(e1[0].obs[0], e1[1].obs[0])  # same start
    assert t1["actions"] == sum(len(e.actions) for e in e1) and t1["actions_per_second"] > 0


def test_policy_settings_and_inputs_are_checked_in_one_line(tiny_run: Path) -> None:
    """Zero steps / execute are refused (not replaced by the recipe's), the sampler and the
    guidance scale at construction; act names the shape it needs, the (obs, info) slip and NaN."""
    from types import SimpleNamespace

    from polydiff.registry import RegistryError

    for kw, match in (({"steps": 0}, "steps must be a positive integer, got 0"),
                      ({"execute": 0}, "execute must be a positive integer, got 0"),
                      ({"guidance_scale": "x"}, "guidance_scale must be a finite number")):
        with pytest.raises(ValueError, match=match):
            Policy.from_checkpoint(tiny_run, **kw)
    with pytest.raises(RegistryError, match="Did you mean 'ddim'"):
        Policy.from_checkpoint(tiny_run, sampler="ddimm")
    with pytest.raises(ValueError, match="a 'text' model is not a policy"):
        Policy.from_generator(SimpleNamespace(modality=SimpleNamespace(name="text")))
    policy = Policy.from_checkpoint(tiny_run)
    assert repr(policy) == "<Policy reach: ddim 3 steps, lambda 2, horizon 8, execute 4>"
    env = envs.make("reach")
    assert repr(env) == "<ReachEnv 'reach': obs 2, action 2, goal 2 values; 3 goals, max_steps 60>"
    goal = env.goals[0]
    for obs, g, match in ((np.zeros(3), goal, r"obs must have shape \(2,\) for environment 'reach', got shape \(3"),
                          (np.zeros(2), 0.5, r"goal must have shape \(2,\) .* or be None \(goal-free\), got shape"),
                          (env.reset(seed=0), goal, r"obs is the \(obs, info\) pair env.reset returns"),
                          (np.array([np.nan, 0.0]), goal, "obs holds NaN")):
        with pytest.raises(ValueError, match=match):
            policy.act(obs, g)
    for n in (0, -1):
        with pytest.raises(ValueError, match=f"n must be a positive integer, got {n}"):
            policy.reset(n)
    policy.reset(2)
    with pytest.raises(ValueError, match=r"obs must have shape \(2, 2\) \(one row per environment: reset\(2\)\)"):
        policy.act_batch(np.zeros((1, 2)), None)


def test_rollout_arguments_are_checked_in_one_line(tiny_run: Path) -> None:
    policy = Policy.from_checkpoint(tiny_run)
    make = lambda: envs.make("reach")  # noqa: E731
    (ep,), _ = rollout(policy, "reach", 1, max_steps=2)  # an environment's name will do
    assert len(ep.actions) == 2
    assert repr(ep).startswith("Episode(success=False, outcome='', behaviour=''; reach, 2 steps, goal [")
    for kw, match in (({"n": 0}, "n must be a positive integer, got 0"),
                      ({"max_steps": 0}, "max_steps must be a positive integer, got 0"),
                      ({"goals": np.zeros((1, 2))}, r"goals must have shape \(n, goal_dim\) = \(2, 2\).*got \(1, 2\)"),
                      ({"n": 3, "start_seeds": [0]}, r"start_seeds: got 1 seed\(s\) for n=3 episodes"),
                      ({"make_env": lambda: envs.make("blocks")},
                       "trained on 'reach' .* environment 'blocks' has 6, 2, 4")):
        with pytest.raises(ValueError, match=match):
            rollout(policy, **{"make_env": make, "n": 2, **kw})
    with pytest.raises(TypeError, match=r"make_env must be an environment name .* got a ReachEnv instance"):
        rollout(policy, make(), 2)
    with pytest.raises(TypeError, match=r"policy must be a Policy, got Generator: wrap the model, Policy\.from_gen"):
        rollout(polydiff.load(tiny_run), make, 2)


def test_sample_evaluate_and_cli(tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from polydiff.cli import main

    out = tmp_path / "samples"
    assert main(["sample", str(tiny_run), "--num", "3", "--out", str(out), "--plot"]) == 0
    # a goal as docs/policies.md writes it, goal=x,y; a malformed one names the condition
    goal = tmp_path / "goal"
    assert main(["sample", str(tiny_run), "--num", "2", "--condition", "goal=0.5,0.5", "--out", str(goal)]) == 0
    assert all(np.allclose(e.goal, [0.5, 0.5]) for e in read_episodes(goal / "rollouts.npz"))
    capsys.readouterr()
    assert main(["sample", str(tiny_run), "--num", "2", "--condition", "goal=0.5;x", "--out", str(goal) + "2"]) == 2
    assert "condition goal: expected 2 numbers" in capsys.readouterr().err
    assert (out / "rollouts.npz").is_file() and (out / "samples.png").is_file()
    eps = PoliciesModality().read(out)
    assert len(eps) == 3 and all(e.meta["env"] == "reach" for e in eps)
    assert main(["evaluate", str(out), "--json", str(tmp_path / "m.json")]) == 0
    metrics = json.loads((tmp_path / "m.json").read_text())["metrics"]
    assert 0 <= metrics["success_rate"] <= 1 and "goal_coverage" in metrics
    # users' own episode files, evaluated without a recipe
    user = tmp_path / "mine"
    write_episodes(envs.demonstrations("reach", 4, seed=7), user / "demos.npz")
    assert main(["evaluate", str(user), "--modality", "policies", "--json", str(tmp_path / "u.json")]) == 0
    assert json.loads((tmp_path / "u.json").read_text())["metrics"]["episodes"] == 4
    assert main(["evaluate", str(tiny_run), "--num", "4", "--option", "goal_free=true", "--option",
                 "same_start=true"]) == 0
    capsys.readouterr()  # an option's value is checked against its annotation (bool), not taken as truthy
    assert main(["evaluate", str(tiny_run), "--num", "4", "--option", "goal_free=maybe"]) == 2
    assert "--option goal_free: expected true or false, got 'maybe'" in capsys.readouterr().err
    assert main(["policies", "rollout", str(tiny_run), "--num", "2", "--gif", "1", "--out", str(tmp_path / "r")]) == 0
    assert (tmp_path / "r" / "episode-000.gif").stat().st_size > 0 and (tmp_path / "r" / "rollouts.png").is_file()
    capsys.readouterr()
    # a second run replaces the folder only with --overwrite, and whole: no GIF of the first run stays behind
    assert main(["policies", "rollout", str(tiny_run), "--num", "2", "--out", str(tmp_path / "r")]) == 2
    assert "--overwrite" in capsys.readouterr().err and (tmp_path / "r" / "episode-000.gif").is_file()
    assert main(["policies", "rollout", str(tiny_run), "--num", "2", "--out", str(tmp_path / "r"), "--overwrite"]) == 0
    assert not (tmp_path / "r" / "episode-000.gif").exists() and (tmp_path / "r" / "metrics.json").is_file()
    capsys.readouterr()  # the rollouts folder says what it holds: evaluate needs no --modality
    assert main(["evaluate", str(tmp_path / "r")]) == 0 and "behaviour_tv" in capsys.readouterr().out
    mine = tmp_path / "mine"  # a folder this command did not write is never replaced
    assert main(["policies", "rollout", str(tiny_run), "--num", "2", "--out", str(mine), "--overwrite"]) == 2
    assert "holds no metrics.json" in capsys.readouterr().err and (mine / "demos.npz").is_file()


def test_baselines_train_and_roll_out(tmp_path: Path) -> None:
    base = {"modality": "policies", "data": TINY_DATA,
            "train": {"max_steps": 10, "batch_size": 32, "accelerator": "cpu", "devices": 1, "threads": 1,
                      "checkpoint_every": 10, "progress": False}}
    bc = dict(base, model={"name": "mlp", "hidden": 32, "depth": 2}, loss={"objective": "behaviour_cloning"})
    ddpm = dict(base, model={"name": "transformer", **TINY_NET},
                process={"schedule": "vp_discrete_cosine", "n": 100, "prediction": "eps"},
                sample={"num": 2, "sampler": "ddpm", "steps": 100, "grid": "uniform_t", "final_zero": True})
    for name, recipe in (("bc", bc), ("ddpm", ddpm)):
        run = polydiff.train(recipe, tmp_path / name, fresh=True, verbose=False)
        policy = Policy.from_checkpoint(run.checkpoint)
        assert policy.nfe == (1 if name == "bc" else 100)
        eps, timing = rollout(policy, lambda: envs.make("reach"), 2, max_steps=8)
        assert len(eps) == 2 and all(len(e.actions) <= 8 for e in eps)
        assert timing["network_calls"] == (2 * 2 if name == "bc" else 2 * 2 * 100)  # 2 chunks of 4 actions each


def _needs_pusht() -> Path:
    from polydiff.plugin import shared_dir

    path = shared_dir() / "data" / "robot_pusht" / "pusht_cchi_v7_lowdim.npz"
    if not path.is_file():
        pytest.skip(f"shared Push-T demonstrations not found at {path} (set POLYDIFF_SHARED)")
    return path


def test_pusht_dataset_and_replay_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from polydiff.cli import main

    _needs_pusht()
    data = PoliciesModality().dataset("pusht", episodes=6, test_fraction=0.34)
    info = data.info
    assert info["obs_dim"] == 5 and info["obs_feature_dim"] == 6 and info["angle_dims"] == [4]
    assert info["episodes"] == {"train": 4, "test": 2, "skipped": 0}
    w = data.train[0]
    assert w["obs"].shape == (2, 6) and w["actions"].shape == (16, 2) and float(w["obs"].abs().max()) <= 1 + 1e-6
    reference = PoliciesModality().reference(data)
    assert all(e.meta["env"] == "pusht" for e in reference)
    # the human demonstrations carry no behaviour: labelled by replaying them to their first contact
    from polydiff_policies.envs.pusht import T_EDGES
    from polydiff_policies.metrics import behaviour_entropy

    assert all(e.behaviour in T_EDGES for e in reference)
    assert behaviour_entropy(reference, successful_only=False) >= 0  # defined (NaN without labels)
    assert main(["policies", "replay", "--episodes", "2", "--json", str(tmp_path / "r.json")]) == 0
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["episodes"] == 2 and r["final_block_pos_error_px_max"] < 1.0
    assert r["step_carry_block_pos_error_px_p90"] < 1e-3
    capsys.readouterr()


def test_replay_episode_count_must_be_positive(capsys: pytest.CaptureFixture[str]) -> None:
    """--episodes -1 replayed all but the last episode and 0 failed inside numpy."""
    from polydiff.cli import main

    for bad in ("0", "-1"):
        with pytest.raises(SystemExit) as stop:
            main(["policies", "replay", "--episodes", bad])
        assert stop.value.code == 2 and "--episodes" in capsys.readouterr().err
