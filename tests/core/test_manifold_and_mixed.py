"""Manifold hooks (flat torus) and states mixing Gaussian, categorical and manifold fields."""

import torch

import polydiff as pd
from polydiff.losses import diffusion_loss
from polydiff.processes import FlatTorus, GeodesicFlow
from polydiff.random import Noise


def test_torus_log_exp_wrap_around():
    m = FlatTorus()
    x = torch.tensor([0.95, 0.1, 0.5])
    y = torch.tensor([0.05, 0.9, 0.5])
    v = m.log(x, y)
    assert torch.allclose(v, torch.tensor([0.1, -0.2, 0.0]), atol=1e-6)
    assert torch.allclose(m.exp(x, v), y, atol=1e-6)


def test_geodesic_step_follows_the_interpolant():
    """Stepping towards the true x0 from x_t lands on the same geodesic at time s."""
    flow = GeodesicFlow(FlatTorus(), rate=3.0)
    g = torch.Generator().manual_seed(0)
    x0, x1 = torch.rand(64, 5, generator=g), torch.rand(64, 5, generator=g)
    t, s = torch.full((64,), 0.8), torch.full((64,), 0.3)
    xt = flow.interpolate(x0, x1, t)
    xs = flow.step(xt, x0, t, s)
    assert torch.allclose(FlatTorus().log(flow.interpolate(x0, x1, s), xs), torch.zeros(64, 5), atol=1e-5)
    assert torch.allclose(FlatTorus().log(x0, flow.step(xt, x0, t, torch.zeros(64))), torch.zeros(64, 5), atol=1e-5)


def test_torus_sampling_with_an_exact_model_reaches_the_data_point():
    flow = GeodesicFlow(FlatTorus())
    target = torch.tensor([0.9, 0.05])
    out = pd.sample(lambda x, t: target.expand_as(x), flow, (16, 2), steps=5, seed=0)
    assert torch.allclose(FlatTorus().log(out, target.expand_as(out)), torch.zeros(16, 2), atol=1e-5)


def test_mixed_state_runs_on_one_grid_and_keeps_structure():
    """A molecule-like state: zero-CoM positions, atom tokens, torsions on a torus, a node mask."""
    B, N, V = 6, 5, 4
    fields = {
        "pos": pd.FieldSpec(pd.GaussianProcess("linear"), pd.ZeroCoM("mask"), prediction="x0"),
        "atom": pd.FieldSpec(pd.Absorbing(V), pd.Masked("mask")),
        "tors": pd.FieldSpec(GeodesicFlow(FlatTorus()), prediction="x0"),
    }
    mask = torch.ones(B, N)
    mask[:, -2:] = 0
    calls = []

    def model(state, t):
        calls.append(t)
        assert state["atom"].dtype == torch.long and t.shape == (B,)
        return {"pos": torch.zeros(B, N, 3), "atom": torch.zeros(B, N, V),
                "tors": torch.full((B, 3), 0.25)}

    out = pd.sample(model, fields, {"pos": (B, N, 3), "atom": (B, N), "tors": (B, 3), "mask": mask},
                    sampler="dpm++2m", steps=7, seed=0)
    assert len(calls) == 7
    assert torch.all(out["pos"][:, -2:] == 0)
    assert torch.allclose((out["pos"] * mask[..., None]).sum(1), torch.zeros(B, 3), atol=1e-5)
    assert torch.all(out["atom"] < V), "no token may stay masked at the end"
    assert torch.allclose(out["tors"], torch.full((B, 3), 0.25), atol=1e-5)


def test_loss_covers_every_field_kind():
    B, N, V = 8, 5, 4
    fields = {
        "pos": pd.FieldSpec(pd.GaussianProcess("vp_linear"), pd.ZeroCoM()),
        "atom": pd.FieldSpec(pd.Absorbing(V)),
        "tors": pd.FieldSpec(GeodesicFlow(FlatTorus()), prediction="x0"),
    }
    g = torch.Generator().manual_seed(0)
    batch = {"pos": pd.ZeroCoM().project(torch.randn(B, N, 3, generator=g), {}),
             "atom": torch.randint(0, V, (B, N), generator=g), "tors": torch.rand(B, 3, generator=g)}

    def perfect(state, t):
        return {"pos": torch.zeros(B, N, 3), "atom": 50.0 * torch.nn.functional.one_hot(batch["atom"], V).float(),
                "tors": batch["tors"]}

    _, logs = diffusion_loss(perfect, fields, batch, Noise(B, seed=0))
    assert set(logs) == {"pos", "atom", "tors"}
    assert float(logs["atom"]) < 1e-6 and float(logs["tors"]) < 1e-10 and float(logs["pos"]) > 0.1
