"""The molecule networks: symmetries (float64, masked batches of 5, 9 and 12 atoms padded to 12),
padding, shapes, property conditioning, the property regressor, and that they can learn."""

from __future__ import annotations

import pytest
import torch

from polydiff.testing import assert_equivariant, assert_invariant, compose, permutation, rotation, translation
from polydiff_molecules.nets import (
    CONDITION_MODES,
    NETWORKS,
    PropertyEmbedding,
    dense_pairs,
    e3nn_network,
    gvp_network,
    property_regressor,
)

pytestmark = pytest.mark.usefixtures("one_thread")

INFO = {
    "elements": ["H", "C", "N", "O", "F"],
    "charges": [-1, 0, 1],
    "bond_orders": [0, 1, 2, 3],
    "conditions": {"gap": {"kind": "scalar", "low": 2.0, "high": 10.0}},
    "pos_scale": 0.5,
}
V, C, K = 5, 3, 4
ALL = dict.fromkeys(["pos", "types", "charges", "bonds"])
SIZES = (5, 9, 12)
N = 12
TINY = {
    "gvp": {"hidden": 16, "vectors": 4, "layers": 2, "rbf": 8},
    "e3nn": {"hidden_irreps": "8x0e+2x1o+2x1e", "layers": 2, "rbf": 8, "radial_hidden": 16},
}


def make_net(name: str, fields=ALL, info=INFO, shake: float = 0.0, **options):
    """A tiny network; ``shake`` adds noise of that size to every parameter, so that the parts
    that start at (or near) zero (position updates, null embeddings) are exercised too."""
    torch.manual_seed(0)
    net = NETWORKS[name](info, fields, **{**TINY[name], **options})
    with torch.no_grad():
        for p in net.parameters():
            p.add_(shake * torch.randn_like(p))
    return net


def make_state(seed: int = 0, continuous: bool = False, dtype: torch.dtype = torch.float64) -> dict:
    """A batch of molecules of 5, 9 and 12 atoms padded to 12, with garbage in the padding."""
    g = torch.Generator().manual_seed(seed)
    b = len(SIZES)
    mask = (torch.arange(N)[None] < torch.tensor(SIZES)[:, None]).to(dtype)
    pos = 1.5 * torch.randn(b, N, 3, generator=g, dtype=dtype)
    com = (pos * mask[..., None]).sum(1, keepdim=True) / mask.sum(1)[:, None, None]
    pos = torch.where(mask[..., None] > 0, pos - com, 50.0)  # zero CoM; padding far away
    if continuous:
        types = torch.randn(b, N, V, generator=g, dtype=dtype)
    else:
        types = torch.randint(0, V + 1, (b, N), generator=g)  # V = the mask token
    i, j = torch.triu_indices(N, N, 1)
    pair_mask = mask[:, i] * mask[:, j]
    return {
        "pos": pos,
        "types": types,
        "charges": torch.randint(0, C + 1, (b, N), generator=g),
        "bonds": torch.randint(0, K + 1, (b, i.numel()), generator=g),
        "pair_mask": pair_mask,
        "mask": mask,
        "gap": torch.tensor([3.0, float("nan"), 7.5], dtype=dtype),
        "t": torch.tensor([0.1, 0.5, 0.9], dtype=dtype),
    }


def as_full(state: dict) -> dict:
    """The state with bonds and pair_mask as symmetric (B, N, N) matrices (for the permutation)."""
    s = dict(state)
    s["bonds_full"] = dense_pairs(s.pop("bonds")[..., None], N)[..., 0]
    s["pair_full"] = dense_pairs(s.pop("pair_mask")[..., None], N)[..., 0]
    return s


def via_full(net):
    """``net`` on states whose bonds are (B, N, N) matrices, returning (B, N, N, K) bond logits."""
    i, j = torch.triu_indices(N, N, 1)

    def fn(state: dict) -> dict:
        s = dict(state)
        s["bonds"], s["pair_mask"] = s.pop("bonds_full")[:, i, j], s.pop("pair_full")[:, i, j]
        out = dict(net(s, s["t"]))
        out["bonds_full"] = dense_pairs(out.pop("bonds"), N)
        return out

    return fn


NODE_KEYS = ("pos", "types", "charges", "mask")
TRANSFORMS = {
    "rotation": rotation("pos", reflections=True),
    "translation": translation("pos", mask="mask"),
    "permutation": permutation(keys=NODE_KEYS, pair_keys=("bonds_full", "pair_full")),
    "all": compose(rotation("pos", reflections=True), translation("pos", mask="mask"),
                   permutation(keys=NODE_KEYS, pair_keys=("bonds_full", "pair_full"))),
}


@pytest.mark.parametrize("kind", list(TRANSFORMS))
@pytest.mark.parametrize("name", ["gvp", "e3nn"])
def test_equivariance(name, kind):
    net = make_net(name, shake=0.2).double().eval()
    assert_equivariant(via_full(net), as_full(make_state()), TRANSFORMS[kind], trials=2)


def test_equivariance_continuous_types_and_cutoff():
    net = make_net("gvp", shake=0.2, cutoff=3.0).double().eval()
    transform = compose(rotation("pos", reflections=True), translation("pos", mask="mask"),
                        permutation(keys=NODE_KEYS, pair_keys=("bonds_full", "pair_full")))
    assert_equivariant(via_full(net), as_full(make_state(1, continuous=True)), transform, trials=2)


@pytest.mark.parametrize("name", ["gvp", "e3nn"])
def test_outputs_and_padding(name):
    net = make_net(name, shake=0.2).double().eval()
    state = make_state()
    with torch.no_grad():
        out = net(state, state["t"])
    b, p = len(SIZES), N * (N - 1) // 2
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "pos": (b, N, 3), "types": (b, N, V), "charges": (b, N, C), "bonds": (b, p, K)}
    assert all(v.dtype == torch.float64 and torch.isfinite(v).all() for v in out.values())
    mask = state["mask"]
    com = (out["pos"] * mask[..., None]).sum(1) / mask.sum(1)[:, None]
    assert com.abs().max() < 1e-12  # zero-centred input -> zero-centred output
    pad = mask == 0
    assert (out["pos"][pad] == 0).all() and (out["types"][pad] == 0).all()
    assert (out["bonds"][state["pair_mask"] == 0] == 0).all()
    assert (out["pos"] - state["pos"] * mask[..., None]).abs().max() > 0.05  # it moves the atoms

    # garbage (NaN, other tokens) in padded atoms and pairs changes nothing
    bad = dict(state)
    bad["pos"] = torch.where(pad[..., None], float("nan"), state["pos"])
    bad["types"] = torch.where(pad, 2, state["types"])
    bad["charges"] = torch.where(pad, 1, state["charges"])
    bad["bonds"] = torch.where(state["pair_mask"] == 0, 3, state["bonds"])
    with torch.no_grad():
        out2 = net(bad, state["t"])
    for k in out:
        torch.testing.assert_close(out2[k], out[k], atol=1e-12, rtol=0)

    # float32 in, float32 out; t from the state when not given; a scalar t
    net32 = make_net(name).eval()
    s32 = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    with torch.no_grad():
        o32 = net32(s32)
        o32s = net32(s32, torch.tensor(0.5))
    assert all(v.dtype == torch.float32 for v in o32.values())
    torch.testing.assert_close(o32s["types"][1], o32["types"][1])


def test_fields_subset_and_errors():
    assert NETWORKS == {"gvp": gvp_network, "e3nn": e3nn_network}
    net = make_net("gvp", fields=dict.fromkeys(["pos", "types"])).double()
    state = make_state()
    for k in ("charges", "bonds", "pair_mask"):
        state.pop(k)
    out = net(state, state["t"])
    assert set(out) == {"pos", "types"}
    with pytest.raises(ValueError, match="condition_mode"):
        make_net("gvp", condition_mode="add")
    with pytest.raises(ValueError, match="unknown"):
        make_net("gvp", fields=dict.fromkeys(["pos", "coords"]))
    with pytest.raises(ValueError, match="bond_orders"):
        make_net("gvp", info={k: v for k, v in INFO.items() if k != "bond_orders"})
    with pytest.raises(ValueError, match="1o"):
        make_net("e3nn", hidden_irreps="8x0e+2x1e")


@pytest.mark.parametrize("gaussian", [True, False])
@pytest.mark.parametrize("mode", CONDITION_MODES)
def test_condition_modes(mode, gaussian):
    net = make_net("gvp", condition_mode=mode, gaussian_expansion=gaussian).double().eval()
    with torch.no_grad():  # a non-zero null embedding, as after training
        for p in net.encoder.cond.null.values():
            p.normal_()
    state = make_state()
    with torch.no_grad():
        real = net(state, state["t"])["types"]
        missing = net({k: v for k, v in state.items() if k != "gap"}, state["t"])["types"]
        dropped = net({**state, "gap": torch.full((3,), float("nan"), dtype=torch.float64)}, state["t"])["types"]
    assert torch.isfinite(real).all()
    torch.testing.assert_close(real[1], missing[1])  # row 1 has gap NaN: the null embedding
    torch.testing.assert_close(dropped, missing)
    assert not torch.allclose(real[0], missing[0])  # a real value differs from the null embedding


def test_property_embedding_and_e3nn_conditions():
    emb = PropertyEmbedding(INFO["conditions"], 8, gaussian_expansion=False).double()
    v = torch.tensor([2.0, 10.0, float("nan")], dtype=torch.float64)
    e = emb({"gap": v}, 3)
    assert e.shape == (3, 8)
    torch.testing.assert_close(e[2], emb.null["gap"])
    torch.testing.assert_close(emb.expand("gap", v[:2])[:, 0], torch.tensor([-1.0, 1.0], dtype=torch.float64))
    net = make_net("e3nn", condition_mode="concatenate_multiply").double().eval()
    state = make_state()
    with torch.no_grad():
        a = net(state, state["t"])["types"]
        b = net({**state, "gap": state["gap"] + 2}, state["t"])["types"]
    assert not torch.allclose(a[0], b[0])
    torch.testing.assert_close(a[1], b[1])  # NaN stays NaN: null embedding both times


REGRESSOR_OPTIONS = {"gvp": {"hidden": 16, "vectors": 4, "layers": 2, "rbf": 8},
                     "pairs": {"hidden": 16, "layers": 2, "rbf": 8}}


@pytest.mark.parametrize("arch", ["gvp", "pairs"])
def test_regressor_invariance_normaliser_and_gradients(arch):
    torch.manual_seed(0)
    reg = property_regressor(INFO, property="gap", arch=arch, **REGRESSOR_OPTIONS[arch]).double().eval()
    state = make_state()
    clean = {"pos": state["pos"], "types": state["types"].clamp(max=V - 1), "mask": state["mask"]}
    transform = compose(rotation("pos", reflections=True), translation("pos", mask="mask"),
                        permutation(keys=("pos", "types", "mask")))
    assert_invariant(reg, clean, transform, trials=2)
    with torch.no_grad():
        y = reg(clean)
        assert y.shape == (3,) and torch.isfinite(y).all()
        torch.testing.assert_close(reg(clean, torch.zeros(3, dtype=torch.float64)), y)  # t=None is clean
        bad = {**clean, "pos": torch.where(clean["mask"][..., None] > 0, clean["pos"], float("nan"))}
        torch.testing.assert_close(reg(bad), y)
    reg.fit_normaliser(torch.tensor([4.0, 6.0, float("nan"), 8.0]))
    assert float(reg.mean) == pytest.approx(6.0) and float(reg.std) == pytest.approx(2.0)
    torch.testing.assert_close(reg.predict(clean), y * 2 + 6)
    torch.testing.assert_close(reg.normalise(reg.denormalise(y)), y)

    # noisy state: float probabilities over V types and positions, both differentiable, with time
    pos = state["pos"].clone().requires_grad_()
    probs = torch.softmax(torch.randn(3, N, V, dtype=torch.float64), -1).requires_grad_()
    out = reg({"pos": pos, "types": probs, "mask": state["mask"]}, state["t"])
    out.sum().backward()
    present = state["mask"] > 0
    assert pos.grad is not None and probs.grad is not None
    assert pos.grad[present].abs().sum() > 0 and probs.grad[present].abs().sum() > 0
    assert (pos.grad[~present] == 0).all()
    assert_invariant(lambda s: reg(s, s["t"]), {"pos": state["pos"], "types": probs.detach(), "mask": state["mask"],
                                               "t": state["t"]}, transform, trials=1)


def _train(model, loss_fn, steps: int, lr: float = 1e-2) -> tuple[float, float]:
    """Adam steps on ``loss_fn()``; the first and the last loss."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        loss = loss_fn()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses[0], losses[-1]


@pytest.mark.parametrize("name", ["gvp", "e3nn"])
def test_learns(name):
    """A few Adam steps fit the clean positions, types and bonds of a fixed noisy batch."""
    torch.manual_seed(0)
    net = make_net(name)
    state = {k: v.float() if v.is_floating_point() else v for k, v in make_state(2).items()}
    g = torch.Generator().manual_seed(3)
    mask = state["mask"]
    target_types = torch.randint(0, V, (3, N), generator=g)
    target_bonds = torch.randint(0, K, state["bonds"].shape, generator=g)
    target_pos = (state["pos"] + 0.3 * torch.randn(3, N, 3, generator=g)) * mask[..., None]
    target_pos = target_pos - (target_pos.sum(1, keepdim=True) / mask.sum(1)[:, None, None]) * mask[..., None]

    def loss_fn():
        out = net(state, state["t"])
        ce = torch.nn.functional.cross_entropy(out["types"][mask > 0], target_types[mask > 0])
        pm = state["pair_mask"] > 0
        ce_b = torch.nn.functional.cross_entropy(out["bonds"][pm], target_bonds[pm])
        mse = (out["pos"] - target_pos)[mask > 0].square().mean()
        return ce + ce_b + 10 * mse

    first, last = _train(net, loss_fn, 30, lr=3e-2)
    assert last < 0.6 * first


@pytest.mark.parametrize("arch", ["gvp", "pairs"])
def test_regressor_learns(arch):
    torch.manual_seed(0)
    reg = property_regressor(INFO, arch=arch, **REGRESSOR_OPTIONS[arch])
    state = make_state(4, dtype=torch.float32)
    state = {"pos": state["pos"], "types": state["types"].clamp(max=V - 1), "mask": state["mask"]}
    target = torch.tensor([-1.0, 0.5, 1.5])
    first, last = _train(reg, lambda: (reg(state) - target).square().mean(), 30)
    assert last < 0.1 * first


def test_pair_regressor_reads_distances_and_elements():
    """The pair descriptor counts each unordered pair once in its element-pair row, at its
    distance in Angstrom: a C-O pair at 1.5 A (0.75 at INFO's pos_scale) peaks in the (C, O)
    histogram's bin centred on 1.5."""
    reg = property_regressor(INFO, arch="pairs", rbf=13, rbf_max=6.0)
    pos = torch.tensor([[[0.0, 0.0, 0.0], [0.75, 0.0, 0.0], [0.0, 0.0, 0.0]]])
    state = {"pos": pos, "types": torch.tensor([[1, 3, 0]]), "mask": torch.tensor([[1.0, 1.0, 0.0]])}
    f = reg.descriptor(state)
    classes = V + 1
    pairs = torch.triu_indices(classes, classes).T.tolist()
    hist = f[0, : len(pairs) * 13].reshape(len(pairs), 13)
    row = pairs.index([1, 3])
    assert hist[row].argmax() == 3 and hist[row].max() > 0.99  # bin centres 0, 0.5, ..., 6
    assert hist.sum() == pytest.approx(float(hist[row].sum()))  # the padded atom adds nothing
    torch.testing.assert_close(f[0, len(pairs) * 13:], torch.tensor([0.0, 1.0, 0.0, 1.0] + [0.0] * (classes - 4)
                                                                    + [2.0]))
    with pytest.raises(ValueError, match="no option 'vectors'"):
        property_regressor(INFO, arch="pairs", vectors=4)
    with pytest.raises(ValueError, match="unknown regressor arch 'mlp'"):
        property_regressor(INFO, arch="mlp")
