"""Equivariant layers (polydiff.nn.egnn) and the symmetry test kit (polydiff.testing)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from polydiff.nn import EGNN, EGNNLayer
from polydiff.testing import (
    TENSOR_KEY,
    assert_equivariant,
    assert_invariant,
    compose,
    permutation,
    rotation,
    translation,
)

B, N, F, HIDDEN, E = 4, 7, 5, 8, 3
COUNTS = (7, 5, 3, 1)


def make_state(dim: int = 3, edge: bool = False, feat: int = F, dtype: torch.dtype = torch.float64, seed: int = 0):
    """A padded batch with 7, 5, 3 and 1 present nodes."""
    g = torch.Generator().manual_seed(seed)
    state = {
        "h": torch.randn(B, N, feat, generator=g, dtype=dtype),
        "x": 2 * torch.randn(B, N, dim, generator=g, dtype=dtype),
        "mask": torch.arange(N)[None] < torch.tensor(COUNTS)[:, None],
    }
    if edge:
        state["edge"] = torch.randn(B, N, N, E, generator=g, dtype=dtype)
    return state


class Wrapped(nn.Module):
    """A state-dict interface to EGNN / EGNNLayer for the checks."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, s: dict) -> dict:
        h, x = self.net(s["h"], s["x"], s["mask"], s.get("edge"))
        return {"h": h, "x": x}


def build(kind: str, edge: bool, seed: int = 0) -> nn.Module:
    """A network with re-drawn, larger weights, so that coordinates move by O(1) and a broken
    symmetry would show well above the tolerance."""
    torch.manual_seed(seed)
    e = E if edge else 0
    net = {
        "layer": lambda: EGNNLayer(F, e),
        "layer-attention-raw": lambda: EGNNLayer(F, e, attention=True, normalize=False, coord_clamp=None),
        "egnn": lambda: EGNN(F, HIDDEN, 2, 3, e, attention=True),
    }[kind]()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(0.4 * torch.randn(p.shape, generator=g))
    return Wrapped(net)


TRANSFORMS = {
    "rotation": rotation("x"),
    "reflection": rotation("x", reflections=True),
    "translation": translation("x"),
    "masked-translation": translation("x", mask="mask"),
    "permutation": permutation(pair_keys=("edge",)),
    "all": compose(rotation("x", reflections=True), translation("x", scale=3.0), permutation(pair_keys=("edge",))),
}


@pytest.mark.parametrize("transform", list(TRANSFORMS))
@pytest.mark.parametrize("edge", [False, True])
@pytest.mark.parametrize("kind", ["layer", "layer-attention-raw", "egnn"])
def test_egnn_is_equivariant(kind, edge, transform):
    model = build(kind, edge).double()
    state = make_state(edge=edge)
    out = model(state)
    present = state["mask"]
    assert (out["x"] - state["x"])[present].abs().max() > 1e-2  # the coordinates really move
    assert_equivariant(model, state, TRANSFORMS[transform], atol=1e-6)


@pytest.mark.parametrize("dim", [1, 2, 5])
def test_egnn_any_dimension(dim):
    model = build("egnn", edge=False)
    state = make_state(dim=dim)
    assert model.double()(state)["x"].shape == (B, N, dim)
    assert_equivariant(model, state, compose(rotation("x", dim=dim, reflections=True), translation("x"), permutation()))


def test_egnn_float32():
    model = build("egnn", edge=True)
    state = make_state(edge=True, dtype=torch.float32)
    out = model(state)
    assert out["h"].dtype == out["x"].dtype == torch.float32 and out["h"].shape == (B, N, 2)
    assert torch.isfinite(out["h"]).all() and torch.isfinite(out["x"]).all()
    assert_equivariant(model, state, compose(rotation("x"), permutation(pair_keys=("edge",))), atol=1e-4, dtype=None)
    # a float32 module on float64 inputs: MLPs in float32, geometry and outputs in the input dtype
    out64 = model(make_state(edge=True, dtype=torch.float64))
    assert out64["h"].dtype == out64["x"].dtype == torch.float64


@pytest.mark.parametrize("kind", ["layer", "egnn"])
def test_padded_nodes_are_inert(kind):
    model = build(kind, edge=True).double()
    state = make_state(edge=True)
    pad = ~state["mask"]
    out = model(state)
    noisy = dict(state)
    g = torch.Generator().manual_seed(5)
    noisy["h"] = torch.where(pad[..., None], 1e6 * torch.randn(state["h"].shape, generator=g, dtype=torch.float64),
                             state["h"])
    noisy["x"] = state["x"].clone()
    noisy["x"][pad] = float("nan")
    noisy["x"][0, 0] = state["x"][0, 0]  # sample 0 has no padding; keep it
    pair_pad = pad[:, :, None] | pad[:, None, :]
    noisy["edge"] = torch.where(pair_pad[..., None], torch.full_like(state["edge"], float("inf")), state["edge"])
    out2 = model(noisy)
    present = state["mask"]
    assert torch.equal(out2["h"][present], out["h"][present])
    assert torch.equal(out2["x"][present], out["x"][present])
    # padded positions pass through unchanged (NaN included); padded features too, or zero for EGNN
    assert torch.equal(out2["x"][pad].isnan(), torch.ones_like(out2["x"][pad], dtype=torch.bool))
    assert torch.equal(out["x"][pad], state["x"][pad])
    expected_h = torch.zeros_like(out["h"][pad]) if kind == "egnn" else state["h"][pad]
    assert torch.equal(out["h"][pad], expected_h)


def test_single_node_and_float_mask():
    layer = build("layer", edge=False).double().net
    state = make_state()
    h, x = layer(state["h"], state["x"], state["mask"].double())
    h2, x2 = layer(state["h"], state["x"], state["mask"])
    assert torch.equal(h, h2) and torch.equal(x, x2)
    assert torch.equal(x[3], state["x"][3])  # one present node: no neighbours, no move
    _, x3 = layer(state["h"], state["x"], None)  # all present
    assert not torch.equal(x3[3], state["x"][3])


def test_gradient_flows_and_is_finite_for_coincident_points():
    model = build("egnn", edge=True)
    state = make_state(edge=True, dtype=torch.float32)
    state["x"][0, 1] = state["x"][0, 0]  # two present nodes at the same place
    x = state["x"].requires_grad_(True)
    out = model({**state, "x": x})
    present = state["mask"]
    loss = out["h"][present].square().sum() + out["x"][present].square().sum()
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    assert torch.isfinite(x.grad).all() and x.grad[present].abs().sum() > 0


def test_layer_argument_errors():
    layer = EGNNLayer(F, E)
    s = make_state(dtype=torch.float32)
    with pytest.raises(ValueError, match="edge_attr"):
        layer(s["h"], s["x"], s["mask"])
    with pytest.raises(ValueError, match="edge_dim=0"):
        EGNNLayer(F)(s["h"], s["x"], s["mask"], torch.zeros(B, N, N, E))
    with pytest.raises(ValueError, match="mask"):
        EGNNLayer(F)(s["h"], s["x"], s["mask"][:, :3])


# --- the test kit itself ---------------------------------------------------------------------


def positions(dim: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.randn(B, N, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_non_equivariant_functions_fail_with_an_informative_message():
    shift = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)

    def add_fixed(s):
        return {"x": s["x"] + shift}

    state = {"x": positions()}
    assert_equivariant(add_fixed, state, translation("x"))  # a fixed shift commutes with translations
    with pytest.raises(AssertionError, match=r"add_fixed is not equivariant under rotation\('x', dim=3\): output 'x' "
                                             r"max abs error \d\.\d+e[+-]\d+ > tolerance atol=1e-06"):
        assert_equivariant(add_fixed, state, rotation("x"))

    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 3))
    for t in (rotation(TENSOR_KEY), translation(TENSOR_KEY)):
        with pytest.raises(AssertionError, match=f"output '{TENSOR_KEY}'"):
            assert_equivariant(mlp, positions(), t)
    assert mlp[0].weight.dtype == torch.float32  # the caller's module is not cast
    assert_equivariant(mlp, positions(), permutation())  # pointwise: permutation equivariant


def test_equivariant_and_invariant_functions_pass():
    x = positions()
    assert_equivariant(lambda v: 2 * v, x, rotation(TENSOR_KEY, reflections=True))
    assert_invariant(lambda v: v - v.mean(1, keepdim=True), x, translation(TENSOR_KEY))
    with pytest.raises(AssertionError, match="not invariant under rotation"):
        assert_invariant(lambda v: v - v.mean(1, keepdim=True), x, rotation(TENSOR_KEY))

    def energy_and_forces(s):
        d = s["pos"][:, :, None] - s["pos"][:, None]
        return {"energy": d.square().sum((1, 2, 3)), "force": -4 * d.sum(2)}

    state = {"pos": x}
    both = compose(rotation("pos", reflections=True), translation("pos"), permutation())
    both_out = compose(rotation("force", reflections=True), translation(), permutation())
    assert_equivariant(energy_and_forces, state, both, outputs=both_out, invariant=("energy",))
    with pytest.raises(AssertionError, match="output 'force'"):  # forces left unrotated are wrong
        assert_equivariant(energy_and_forces, state, rotation("pos"), invariant=("energy",))
    with pytest.raises(ValueError, match="not outputs"):
        assert_equivariant(energy_and_forces, state, rotation("pos"), invariant=("energi",))
    with pytest.raises(ValueError, match="acts on none"):
        assert_equivariant(energy_and_forces, state, rotation("position"))


class AllNaN(nn.Module):
    """A broken network: NaN everywhere, which NaN-equals-NaN comparisons would let through."""

    def forward(self, s: dict) -> dict:
        return {"h": s["h"] * float("nan"), "x": s["x"] * float("nan")}


def test_non_finite_outputs_fail_unless_allowed():
    state = make_state()
    for check in (assert_equivariant, assert_invariant):
        with pytest.raises(AssertionError, match=r"AllNaN: output 'h' has 140 non-finite values \(NaN or inf\) of 140 "
                                                 r"on the original inputs .*allow_nonfinite=True"):
            check(AllNaN(), state, rotation("x"))
    assert_equivariant(AllNaN(), state, rotation("x"), allow_nonfinite=True)  # then NaN matches NaN

    x = positions()

    def blows_up(v):  # finite on the original inputs only
        return v if torch.equal(v, x) else v / 0.0

    with pytest.raises(AssertionError, match=r"blows_up: output 'x' has 84 non-finite values \(NaN or inf\) of 84 on "
                                             r"the transformed inputs \(trial 1 of 3\)"):
        assert_equivariant(blows_up, x, rotation(TENSOR_KEY))
    with pytest.raises(AssertionError, match="not equivariant"):  # allowed, inf still differs from a finite value
        assert_equivariant(blows_up, x, rotation(TENSOR_KEY), allow_nonfinite=True)
    assert_equivariant(lambda v: {"x": v, "count": torch.arange(B)}, x, rotation(TENSOR_KEY))  # integers: no check


def test_permutation_acts_on_pair_entries():
    g = torch.Generator().manual_seed(1)
    state = {
        "adj": torch.rand(B, N, N, generator=g, dtype=torch.float64),
        "h": torch.randn(B, N, F, generator=g, dtype=torch.float64),
        "mask": torch.arange(N)[None] < torch.tensor(COUNTS)[:, None],
        "t": torch.rand(B, dtype=torch.float64),
        "cond": torch.randn(B, 16, dtype=torch.float64),
    }

    def message(s):
        return {"h": s["adj"] @ s["h"] * s["mask"][..., None]}

    perm = permutation(pair_keys=("adj",))
    assert_equivariant(message, state, perm)
    with pytest.raises(AssertionError, match="output 'h'"):  # adjacency permuted along one dim only
        assert_equivariant(message, state, permutation())
    with pytest.raises(AssertionError, match="output 'h'"):  # node order leaks in
        assert_equivariant(lambda s: {"h": message(s)["h"] + torch.arange(N)[:, None]}, state, perm)

    el = perm.sample(B, torch.Generator().manual_seed(0), torch.float64, "cpu")
    p = el.permutation(N)
    out = perm.apply(state, el)
    b = torch.arange(B)[:, None, None]
    assert torch.equal(out["adj"], state["adj"][b, p[:, :, None], p[:, None, :]])
    assert torch.equal(out["h"], state["h"][torch.arange(B)[:, None], p])
    assert torch.equal(out["mask"], state["mask"][torch.arange(B)[:, None], p])
    assert out["t"] is state["t"] and out["cond"] is state["cond"]
    assert sorted(perm.acts_on(state)) == ["adj", "h", "mask"]


def test_rotation_and_translation_actions():
    gen = torch.Generator().manual_seed(0)
    q = rotation("x").sample(64, gen, torch.float64, "cpu")
    eye = torch.eye(3, dtype=torch.float64).expand(64, 3, 3)
    assert torch.allclose(q @ q.transpose(1, 2), eye)
    assert torch.allclose(torch.linalg.det(q), torch.ones(64, dtype=q.dtype))
    o = rotation("x", reflections=True).sample(64, gen, torch.float64, "cpu")
    dets = torch.linalg.det(o)
    assert torch.allclose(dets.abs(), torch.ones(64, dtype=o.dtype)) and (dets < 0).any() and (dets > 0).any()

    # frames: R -> Q R keeps rotation matrices; a body-frame map R -> R L is equivariant
    frames = rotation("v", frames=("R",)).sample(B, gen, torch.float64, "cpu")[:, None].expand(B, N, 3, 3)
    state = {"R": frames.contiguous(), "v": positions()}
    local = torch.randn(3, 3, dtype=torch.float64, generator=gen)
    t = rotation("v", frames=("R",))
    assert_equivariant(lambda s: {"R": s["R"] @ local, "w": s["v"] * 2}, state, t,
                       outputs=rotation("w", frames=("R",)))
    out = t.apply(state, q[:B])
    assert torch.allclose(out["R"], q[:B, None] @ state["R"]) and torch.allclose(out["v"], state["v"] @ q[:B].mT)

    mask = torch.arange(N)[None] < torch.tensor(COUNTS)[:, None]
    s = {"x": positions(), "mask": mask}
    tr = translation("x", mask="mask")
    moved = tr.apply(s, tr.sample(B, gen, torch.float64, "cpu"))
    assert torch.equal(moved["x"][~mask], s["x"][~mask])
    shift = moved["x"] - s["x"]
    assert torch.allclose(shift[mask], shift[:, :1].expand(B, N, 3)[mask])  # one vector per sample
    with pytest.raises(KeyError, match="mask"):
        tr.apply({"x": s["x"]}, tr.sample(B, gen, torch.float64, "cpu"))
    with pytest.raises(ValueError, match="rotation acts on"):
        rotation("x", dim=2).apply(s, rotation("x", dim=2).sample(B, gen, torch.float64, "cpu"))
