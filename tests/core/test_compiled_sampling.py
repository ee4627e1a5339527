"""Compiled sampling: every fixed-step Gaussian sampler's loop traces into one graph with no
break (no host synchronisation) and reuses it across calls; ``compile=True`` through the
generator and ``polydiff sample --compile``; samplers on CUDA when there is a GPU."""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.utils import counters

import polydiff
from polydiff.samplers import SAMPLERS, get_sampler
from polydiff.samplers.driver import SamplingLoop, compiled, prepare, walk

pytestmark = pytest.mark.usefixtures("one_thread")

FIXED = [n for n in SAMPLERS if get_sampler(n).kind == "gaussian" and get_sampler(n).loop == "grid"
         and n != "rk45"]  # rk45 chooses its steps on the host: adaptive, not fixed-step


def test_the_list_is_not_empty():
    assert {"ddim", "dpm++2m", "unipc", "heun", "edm", "pc"} <= set(FIXED)


def _loop(name: str, seed: int, device: str = "cpu") -> tuple[SamplingLoop, str]:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 32), torch.nn.SiLU(), torch.nn.Linear(32, 2)).to(device)

    def model(x, t):
        return net(torch.cat([x, t[:, None].to(x.dtype)], 1))

    proc = polydiff.GaussianProcess(polydiff.VPLinear())
    sm, fields, state, noise, key = prepare(model, proc, (16, 2), seed=seed, device=device)
    return SamplingLoop(sm, fields, state, noise, polydiff.SampleSettings(sampler=name, steps=4)), key


@pytest.mark.parametrize("name", FIXED)
def test_fixed_step_loop_is_one_graph_without_host_sync(name):
    torch._dynamo.reset()
    counters.clear()
    compiled = torch.compile(walk, backend="eager", fullgraph=True, dynamic=False)  # a break is an error
    for seed in (0, 1):
        loop, key = _loop(name, seed)
        with torch.no_grad():
            got = compiled(loop)[key]
        loop, key = _loop(name, seed)
        with torch.no_grad():
            want = walk(loop)[key]
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert counters["stats"]["unique_graphs"] == 1  # the second call reused the graph: no recompilation


def test_a_host_read_is_caught():
    """The check above can fail: a loop that reads a tensor back breaks the graph."""
    def reading(loop):
        for i in range(loop.n):
            loop.step(i)
            if float(loop.x.abs().max()) > 1e9:
                break
        return loop.finish()

    torch._dynamo.reset()
    loop, _ = _loop("ddim", 0)
    with pytest.raises(Exception, match=r"(?i)graph break|item|data-dependent|Unsupported"):
        torch.compile(reading, backend="eager", fullgraph=True)(loop)


def test_compile_option_errors():
    net = torch.nn.Linear(3, 2)
    proc = polydiff.GaussianProcess(polydiff.VPLinear())

    def model(x, t):
        return net(torch.cat([x, t[:, None]], 1))

    with pytest.raises(ValueError, match="callback"):
        polydiff.sample(model, proc, (4, 2), steps=2, seed=0, compile="loop", callback=lambda d: None)
    with pytest.raises(ValueError, match="cudagraphs"):
        polydiff.sample(model, proc, (4, 2), steps=2, seed=0, compile="fastest")
    for mode in ("loop", "max-autotune"):  # adaptive: its sub-steps are chosen on the host (docs/scale.md)
        with pytest.raises(ValueError, match=f"sampler 'rk45' chooses its sub-steps on the host.*compile='{mode}'"):
            polydiff.sample(model, proc, (4, 2), steps=1, seed=0, sampler="rk45", compile=mode)


def test_generator_compile_matches_eager(tmp_path):
    recipe = {"modality": "toy", "data": {"name": "gmm", "k": 4, "dim": 2},
              "model": {"name": "mlp", "hidden": 16, "depth": 1},
              "train": {"max_steps": 2, "batch_size": 32, "accelerator": "cpu", "devices": 1, "threads": 1,
                        "checkpoint_every": 2, "progress": False, "logger": "none"},
              "sample": {"steps": 3, "num": 8, "sampler": "ddim"}}
    polydiff.train(recipe, tmp_path / "run", fresh=True, verbose=False)
    gen = polydiff.load(tmp_path / "run" / "checkpoints" / "last.ckpt")
    torch._dynamo.reset()
    counters.clear()
    eager = gen.generate(12, seed=3, batch_size=4, progress=False)
    loop = gen.generate(12, seed=3, batch_size=4, progress=False, compile="loop")
    assert counters["stats"]["unique_graphs"] == 1  # three chunks, one graph
    assert abs(loop - eager).max() < 1e-4
    net = gen.generate(12, seed=3, batch_size=4, progress=False, compile=True)
    assert counters["stats"]["unique_graphs"] == 2  # the network's graph, reused by every step and chunk
    assert abs(net - eager).max() < 1e-4
    # a short last chunk (2 of 10) is computed as the window of the last 4 and cut: no new graph
    short = gen.generate(10, seed=3, batch_size=4, progress=False, compile="loop")
    assert counters["stats"]["unique_graphs"] == 2
    assert abs(short - eager[:10]).max() < 1e-4


def test_compiled_network_does_not_recompile_per_batch_size():
    """Rollouts shrink their batch as episodes end, molecules and proteins vary in size: after
    one more graph with the batch dimension symbolic, every new size reuses it (static graphs
    compiled once per size and ran slower than eager)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 32), torch.nn.SiLU(), torch.nn.Linear(32, 2))

    def model(x, t):
        return net(torch.cat([x, t[:, None].to(x.dtype)], 1))

    proc = polydiff.GaussianProcess(polydiff.VPLinear())
    torch._dynamo.reset()
    counters.clear()
    for n in (16, 11, 7, 5, 3, 9):
        with torch.no_grad():
            got = polydiff.sample(model, proc, (n, 2), steps=3, seed=n, sampler="ddim", compile=True)
            want = polydiff.sample(model, proc, (n, 2), steps=3, seed=n, sampler="ddim")
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert counters["stats"]["unique_graphs"] <= 2, counters["stats"]


def test_compiled_network_does_not_recompile_when_a_field_is_a_view_of_another_base():
    """A field that is a view of a (B, N, 3) tensor at one step and of a flat (B, 3 N) one at
    the next (molecules' positions) made dynamo recompile on its guard on the view's base; the
    compiled network now sees plain aliases. The bare ``torch.compile`` beside it shows the check
    can fail."""
    net = torch.nn.Linear(3, 3)

    def model(state, t):
        return {"pos": net(state["pos"]) * t[:, None, None]}

    def flat(n):
        return torch.randn(4, 3 * n).view(4, n, 3)

    def nested(n):
        return torch.randn(4, n, 3)[:]

    # the second size compiles the graph with the atom count symbolic; it then guards on the base
    calls = [{"pos": flat(5)}, {"pos": flat(7)}, {"pos": nested(6)}, {"pos": flat(8)}, {"pos": nested(9)}]
    t = torch.ones(4)
    for wrap, graphs in ((compiled, 2), (lambda m: torch.compile(m, dynamic=None), 3)):
        torch._dynamo.reset()
        counters.clear()
        with torch.no_grad():
            for state in calls:
                torch.testing.assert_close(wrap(model)(state, t)["pos"], model(state, t)["pos"])
        assert counters["stats"]["unique_graphs"] == graphs, (wrap, counters["stats"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
@pytest.mark.parametrize("name", FIXED)
def test_samplers_run_unchanged_on_cuda(name):
    loop, key = _loop(name, 0, "cuda")
    with torch.no_grad():
        got = walk(loop)[key]
    loop, key = _loop(name, 0, "cpu")
    with torch.no_grad():
        want = walk(loop)[key]
    assert got.device.type == "cuda"
    torch.testing.assert_close(got.cpu(), want, rtol=1e-3, atol=1e-3)


def test_network_in_bfloat16_solver_in_float32(tmp_path):
    recipe = {"modality": "toy", "data": {"name": "gmm", "k": 4, "dim": 2},
              "model": {"name": "mlp", "hidden": 16, "depth": 1},
              "train": {"max_steps": 2, "batch_size": 32, "accelerator": "cpu", "devices": 1, "threads": 1,
                        "checkpoint_every": 2, "progress": False, "logger": "none"},
              "sample": {"steps": 4, "num": 8}}
    polydiff.train(recipe, tmp_path / "run", fresh=True, verbose=False)
    gen = polydiff.load(tmp_path / "run" / "checkpoints" / "last.ckpt")
    full = gen.sample_states(64, seed=0, progress=False)["x"]
    gen.net.to(torch.bfloat16)
    half = gen.sample_states(64, seed=0, progress=False)["x"]
    assert half.dtype == torch.float32  # the solver's dtype, not the network's
    assert not torch.equal(half, full) and float((half - full).abs().median()) < 0.05 * float(full.abs().max())


def test_cudagraphs_off_a_gpu_says_it_runs_as_loop(monkeypatch):
    """compile='cudagraphs' on a CPU state warns that it is compile='loop' there (no silent fallback)."""
    from types import SimpleNamespace

    from polydiff.samplers import driver

    monkeypatch.setitem(driver._COMPILED, ("cudagraphs", False), lambda loop: "ran")  # no compilation here
    loop = SimpleNamespace(_state={"x": torch.zeros(2, 3)})
    with pytest.warns(UserWarning, match="on this device it runs as compile='loop'"):
        assert driver.compiled_walk("cudagraphs")(loop) == "ran"


# ------------------------------------------------------------------------------ compiled training
class _SmoothEnergy(torch.nn.Module):
    """A small energy network ``E(x, t)`` with a LayerNorm (whose double backward is many ops)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(3, 32), torch.nn.LayerNorm(32), torch.nn.SiLU(),
                                       torch.nn.Linear(32, 1))

    def forward(self, state, t):
        x = state["x"]
        return self.net(torch.cat([x, t[:, None].to(x.dtype)], 1))[:, 0] + 0.5 * (x * x).sum(1)


def test_compiled_energy_model_is_one_graph_with_the_eager_gradients():
    """Under torch.compile an energy model takes its gradient with torch.func.grad, so the energy,
    the score and the loss's double backward through it are one graph with no break, giving
    the eager outputs and parameter gradients; in no_grad (sampling) it still returns scores."""
    from polydiff.plugin import EnergyModel

    fields = {"x": polydiff.FieldSpec(polydiff.GaussianProcess("vp_linear"), prediction="score")}
    torch.manual_seed(0)
    model = EnergyModel(_SmoothEnergy(), fields)
    x, t = torch.randn(64, 2), torch.rand(64) * 0.9 + 0.05
    assert torch._dynamo.explain(model)({"x": x}, t).graph_break_count == 0
    target = torch.randn(64, 2)

    def grads(m):
        model.zero_grad()
        out = m({"x": x}, t)
        loss = ((out["x"] - target) ** 2).mean() + out["energy"].square().mean()
        loss.backward()
        return [p.grad.clone() for p in model.parameters() if p.grad is not None]

    torch._dynamo.reset()
    comp = torch.compile(model)
    eager, compiled_ = grads(model), grads(comp)
    assert len(eager) == len(compiled_) == 6  # every parameter (the energy term reaches the last bias)
    for a, b in zip(eager, compiled_):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        out = comp({"x": x}, t)
    assert not out["x"].requires_grad
    torch.testing.assert_close(out["x"], model({"x": x}, t)["x"], rtol=1e-4, atol=1e-5)


def test_compiled_force_function_returns_forces_without_a_graph_to_trainable_weights():
    """force_function(compile=True) on a network whose weights train: the forces equal the eager
    ones and carry no autograd graph, in grad mode too, so dynamics feeding each step's forces
    into the next state do not chain a graph (and its saved activations) across the steps."""
    from polydiff.plugin import EnergyModel, force_function, forces

    fields = {"x": polydiff.FieldSpec(polydiff.GaussianProcess("vp_linear"), prediction="score")}
    torch.manual_seed(0)
    model = EnergyModel(_SmoothEnergy(), fields)
    assert all(p.requires_grad for p in model.parameters())
    force = force_function(model, 1e-3, compile=True)
    x = torch.randn(16, 2)
    for _ in range(3):
        f = force({"x": x})["x"]
        assert not f.requires_grad and f.grad_fn is None
        torch.testing.assert_close(f, forces(model, {"x": x}, 1e-3)["x"], rtol=1e-4, atol=1e-5)
        x = x + 1e-2 * f
    assert not x.requires_grad


def test_train_compile_trains_the_same_model(tmp_path):
    """``train.compile: true`` compiles the network once for the loss: the run takes the eager
    run's steps up to float rounding; with the score Fokker-Planck penalty it is refused."""
    from polydiff.config import ConfigError

    recipe = {"modality": "toy", "data": {"name": "gmm", "k": 4, "dim": 2},
              "model": {"name": "mlp", "hidden": 16, "depth": 1},
              "train": {"max_steps": 6, "batch_size": 32, "accelerator": "cpu", "devices": 1, "threads": 1,
                        "checkpoint_every": 6, "progress": False, "logger": "none", "ema": 0.0}}
    torch._dynamo.reset()
    counters.clear()
    runs = {}
    for flag in (False, True):
        cfg = {**recipe, "train": {**recipe["train"], "compile": flag}}
        run = polydiff.train(cfg, tmp_path / str(flag), fresh=True, verbose=False)
        runs[flag] = torch.load(run.checkpoint, weights_only=False)["state_dict"]
    assert counters["stats"]["unique_graphs"] >= 1  # the compiled run compiled
    assert runs[True].keys() == runs[False].keys()  # the compiled wrapper is not part of the weights
    for k, v in runs[False].items():
        torch.testing.assert_close(runs[True][k], v, rtol=1e-4, atol=1e-5)
    bad = {**recipe, "train": {**recipe["train"], "compile": True}, "loss": {"techniques": {"fp_weight": 0.1}}}
    with pytest.raises(ConfigError, match="fp_residual: log_density"):
        polydiff.train(bad, tmp_path / "bad", fresh=True, verbose=False)
    with pytest.raises(ConfigError, match=r"train\.compile.*fsdp"):
        polydiff.train({**recipe, "train": {**recipe["train"], "compile": True, "strategy": "fsdp"}},
                       tmp_path / "bad2", fresh=True, verbose=False)


def test_reverse_sde_drifts_refuse_a_grid_that_reaches_alpha_zero():
    """pc's Euler predictor divides by alpha like euler_maruyama, and returned all NaN on a flow
    schedule (alpha(1) = 0) where euler_maruyama refused."""
    from polydiff.processes.gaussian import SCHEDULES

    proc = polydiff.GaussianProcess(SCHEDULES.get("linear")())

    def model(x, t):
        return x * t[:, None]

    for sampler, options in (("euler_maruyama", {}), ("pc", {"predictor": "euler"})):
        with pytest.raises(ValueError, match=rf"sampler '{sampler}'.* needs alpha\(t\) > 0"):
            polydiff.sample(model, proc, (4, 2), sampler=sampler, steps=2, seed=0, prediction="velocity", **options)
    out = polydiff.sample(model, proc, (4, 2), sampler="pc", steps=2, seed=0, prediction="velocity")  # defined
    assert torch.isfinite(out).all()


def test_sampling_arguments_that_were_misread_are_refused():
    """seed=1.5 sampled as seed 1, particles=0 as 1, a float16 solver ran although only float32
    and float64 are supported; steps=2.5 and a negative shape failed inside torch."""
    proc = polydiff.GaussianProcess(polydiff.VPLinear())

    def model(x, t):
        return x * t[:, None]

    cases = [({"seed": 1.5}, TypeError, "seed must be an integer"),
             ({"seed": torch.tensor([0.5, 1.0, 2.0, 3.0])}, TypeError, "seed must be an integer"),
             ({"steps": 2.5}, ValueError, "steps must be a positive integer, got 2.5"),
             ({"steps": 0}, ValueError, "steps must be a positive integer, got 0"),
             ({"dtype": torch.float16}, ValueError, "must be torch.float32 or torch.float64")]
    for kwargs, kind, message in cases:
        with pytest.raises(kind, match=message):
            polydiff.sample(model, proc, (4, 2), **{"seed": 0, "steps": 2, **kwargs})
    with pytest.raises(ValueError, match=r"the shape \(-1, 2\) must hold whole numbers"):
        polydiff.sample(model, proc, (-1, 2), seed=0, steps=2)
    from polydiff.steering import Control

    for name in ("particles", "repaint", "jump"):
        with pytest.raises(ValueError, match=f"{name} must be a positive integer, got 0"):
            Control(**{name: 0})
    assert polydiff.sample(model, proc, (4, 2), seed=torch.tensor([0, 1, 2, 3]), steps=2).shape == (4, 2)
