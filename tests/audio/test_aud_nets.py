"""Tests of the audio networks: the mel U-Net (one- and two-time) and the track transformer."""

from __future__ import annotations

import pytest
import torch

from polydiff.plugin import Absorbing, FieldSpec, GaussianProcess, jump
from polydiff_audio.nets import MelUNet, TrackTransformer

pytestmark = pytest.mark.usefixtures("one_thread")

M, FR = 8, 30  # mel bins; frames not a multiple of 4
MEL_FIELDS = {"mel": FieldSpec(GaussianProcess("edm", sigma_data=0.5), prediction="x0")}
INFO = {"mel": {"n_mels": M, "frames": FR}, "conditions": {"label": {"kind": "class", "num_classes": 3},
                                                      "caption": {"kind": "tokens", "num_classes": 5}}}
K, T, V = 4, 6, 5


def randomise(net: torch.nn.Module, seed: int = 0, scale: float = 0.2) -> torch.nn.Module:
    """Perturb every parameter, so zero-initialised output / modulation layers do not hide dependencies."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return net.eval()


def mel_net(**kw) -> MelUNet:
    torch.manual_seed(0)
    return MelUNet(INFO, MEL_FIELDS, channels=(8, 8, 16), emb_dim=16, **kw)


def mel_state(b: int = 3, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"mel": torch.randn(b, M, FR, generator=g), "label": torch.tensor([0, 1, 2])[:b],
            "caption": torch.tensor([[1, 2, 0], [3, 0, 0], [4, 1, 3]])[:b]}


def music_net(enc: str, cross: bool = True, seed: int = 0) -> tuple[TrackTransformer, str]:
    info = {"music": {"encoding": enc, "tracks": K, "length": T, "vocab": V, "n_mels": 3, "frames": T}}
    if enc == "tokens":
        fields = {"roll": FieldSpec(Absorbing(V))}
    elif enc == "onehot":
        fields = {"roll": FieldSpec(GaussianProcess("edm", sigma_data=0.5), prediction="x0")}
    else:
        fields = {"stems": FieldSpec(GaussianProcess("vp_cosine"), prediction="eps")}
    torch.manual_seed(seed)
    net = TrackTransformer(info, fields, hidden=16, layers=2, heads=2, emb_dim=16, cross_track=cross)
    return randomise(net, seed), ("stems" if enc == "stems" else "roll")


def music_input(enc: str, b: int = 2, seed: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if enc == "tokens":
        return torch.randint(0, V + 1, (b, K * T), generator=g)
    if enc == "onehot":
        return torch.randn(b, K * T, V, generator=g)
    return torch.randn(b, K, 3, T, generator=g)


# ---------------------------------------------------------------------------------------------
# MelUNet
# ---------------------------------------------------------------------------------------------

def test_mel_unet_shapes_and_initial_preconditioning():
    net = mel_net()
    st = mel_state()
    t = torch.tensor([0.1, 1.0, 10.0])
    out = net(st, t)["mel"]
    assert out.shape == (3, M, FR) and out.dtype == torch.float32
    # the output convolution starts at zero: x0 = c_skip x = sigma_data^2 / (sigma^2 + sigma_data^2) x (EDM)
    c_skip = 0.25 / (t**2 + 0.25)
    torch.testing.assert_close(out, c_skip[:, None, None] * st["mel"], rtol=1e-5, atol=1e-6)
    # frames that are a multiple of 4 and odd ones both work, and a float64 state keeps its dtype
    for frames in (32, 17, 5):
        x = torch.randn(2, M, frames, dtype=torch.float64)
        assert net({"mel": x}, torch.tensor(0.5))["mel"].shape == (2, M, frames)
        assert net({"mel": x}, torch.tensor(0.5))["mel"].dtype == torch.float64


def test_mel_unet_rejects_bad_inputs():
    net = randomise(mel_net())
    with pytest.raises(ValueError, match="n_mels"):
        net({"mel": torch.randn(2, M + 1, FR)}, torch.tensor(1.0))
    with pytest.raises(KeyError, match="mel"):
        net({"x": torch.randn(2, M, FR)}, torch.tensor(1.0))
    with pytest.raises(ValueError, match="Gaussian field"):
        MelUNet(INFO, {"x": MEL_FIELDS["mel"]})


def test_conditions_change_output_and_nulls_match_missing_keys():
    net = randomise(mel_net())
    st = mel_state()
    t = torch.tensor([0.5, 0.5, 0.5])
    base = net(st, t)["mel"]
    other = net({**st, "label": torch.tensor([1, 2, 0])}, t)["mel"]
    assert (base - other).abs().amax() > 1e-4
    cap = net({**st, "caption": torch.tensor([[2, 2, 0], [1, 0, 0], [4, 0, 0]])}, t)["mel"]
    assert (base - cap).abs().amax() > 1e-4
    # dropped caption (all -1) == all padding == missing key; dropped label (-1) == missing key
    no_cap = {k: v for k, v in st.items() if k != "caption"}
    missing = net(no_cap, t)["mel"]
    torch.testing.assert_close(net({**st, "caption": torch.full((3, 3), -1)}, t)["mel"], missing)
    torch.testing.assert_close(net({**st, "caption": torch.zeros(3, 4, dtype=torch.long)}, t)["mel"], missing)
    no_label = {k: v for k, v in st.items() if k != "label"}
    torch.testing.assert_close(net({**st, "label": torch.full((3,), -1)}, t)["mel"], net(no_label, t)["mel"])
    # a condition passed as the cond mapping is the same as a state entry
    torch.testing.assert_close(net(no_label, t, {"label": st["label"]})["mel"], base)


def test_features_list_with_batch_dimension():
    net = randomise(mel_net())
    feats = net.features(mel_state(), torch.tensor(0.01))
    assert isinstance(feats, list) and len(feats) == 2 * 3 + 1
    assert all(isinstance(f, torch.Tensor) and f.shape[0] == 3 for f in feats)
    assert feats[0].shape == (3, 8, FR) and feats[1].shape == (3, 8, 15) and feats[2].shape == (3, 16, 8)
    assert feats[-1].shape == (3, 8, FR)


# ---------------------------------------------------------------------------------------------
# the two-time student
# ---------------------------------------------------------------------------------------------

def test_two_time_s_none_is_s_equal_t_and_jump_to_t_is_identity():
    net = randomise(mel_net(two_time=True))
    st = mel_state()
    t = torch.tensor([0.3, 2.0, 20.0])
    torch.testing.assert_close(net(st, t)["mel"], net(st, t, s=t)["mel"])
    assert (net(st, t, s=t)["mel"] - net(st, t, s=0.5 * t)["mel"]).abs().amax() > 1e-4
    g = jump(net, MEL_FIELDS, st, t, t)
    torch.testing.assert_close(g["mel"], st["mel"], rtol=1e-5, atol=1e-5)
    # one-step generation lands near the data end with the right shape
    end = jump(net, MEL_FIELDS, st, t, torch.full((3,), 0.002))
    assert end["mel"].shape == (3, M, FR) and torch.isfinite(end["mel"]).all()


def test_two_time_omega_embedding():
    net = randomise(mel_net(two_time=True, omega_default=3.5))
    st = mel_state()
    t, s = torch.tensor([1.0, 1.0, 1.0]), torch.tensor([0.1, 0.1, 0.1])
    base = net({**st, "omega": torch.full((3,), 3.5)}, t, s=s)["mel"]
    torch.testing.assert_close(net(st, t, s=s)["mel"], base)  # missing key -> omega_default
    assert (net({**st, "omega": torch.full((3,), 1.0)}, t, s=s)["mel"] - base).abs().amax() > 1e-4
    nan = net({**st, "omega": torch.full((3,), float("nan"))}, t, s=s)["mel"]
    assert torch.isfinite(nan).all() and (nan - base).abs().amax() > 1e-4
    # a one-time network ignores s and omega
    one = randomise(mel_net())
    torch.testing.assert_close(one(st, t, s=s)["mel"], one({**st, "omega": torch.ones(3)}, t)["mel"])


def test_tiny_mel_unet_overfits_one_batch():
    torch.manual_seed(0)
    info = {"mel": {"n_mels": M, "frames": 16}}
    net = MelUNet(info, MEL_FIELDS, channels=(16, 16, 32), emb_dim=16)
    g = torch.Generator().manual_seed(5)
    x0 = torch.tanh(torch.randn(4, M, 16, generator=g))
    sigma = torch.tensor([0.2, 0.5, 1.0, 2.0])
    xt = x0 + sigma[:, None, None] * torch.randn(4, M, 16, generator=g)
    weight = (sigma**2 + 0.25) / (0.25 * sigma**2)  # EDM's loss weight: unit-scale target for F

    def loss() -> torch.Tensor:
        return (weight[:, None, None] * (net({"mel": xt}, sigma)["mel"] - x0) ** 2).mean()

    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    first = float(loss().detach())
    for _ in range(50):
        opt.zero_grad()
        value = loss()
        value.backward()
        opt.step()
    assert float(loss().detach()) < 0.3 * first


# ---------------------------------------------------------------------------------------------
# TrackTransformer
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("enc", ["tokens", "onehot", "stems"])
def test_track_transformer_shapes(enc):
    net, key = music_net(enc)
    x = music_input(enc)
    out = net({key: x}, torch.tensor([0.3, 0.7]))
    assert set(out) == {key}
    want = {"tokens": (2, K * T, V), "onehot": (2, K * T, V), "stems": (2, K, 3, T)}[enc]
    assert out[key].shape == want and out[key].dtype == torch.float32
    assert torch.isfinite(out[key]).all()
    with pytest.raises(ValueError, match="shape"):
        net({key: x[:, :-1]}, torch.tensor(0.5))


def _track_outputs(net: TrackTransformer, key: str, enc: str, x: torch.Tensor) -> torch.Tensor:
    out = net({key: x}, torch.tensor([0.4, 0.6]))[key]
    return out.reshape(2, K, T, -1) if enc != "stems" else out.transpose(2, 3)


def _change_track(enc: str, x: torch.Tensor, track: int) -> torch.Tensor:
    y = x.clone()
    if enc == "stems":
        y[:, track] = torch.randn_like(y[:, track])
    else:
        y = y.reshape(2, K, T, *y.shape[2:])
        y[:, track] = (y[:, track] + 1) % (V + 1) if enc == "tokens" else torch.randn_like(y[:, track])
        y = y.reshape(x.shape)
    return y


@pytest.mark.parametrize("enc", ["tokens", "onehot", "stems"])
def test_track_transformer_factorised_without_cross_track(enc):
    x = music_input(enc)
    for cross in (False, True):
        net, key = music_net(enc, cross)
        a = _track_outputs(net, key, enc, x)
        b = _track_outputs(net, key, enc, _change_track(enc, x, 2))
        others = [0, 1, 3]
        assert (a[:, 2] - b[:, 2]).abs().amax() > 1e-4  # the changed track's own output changes
        if cross:
            assert (a[:, others] - b[:, others]).abs().amax() > 1e-4
        else:
            torch.testing.assert_close(a[:, others], b[:, others], rtol=0, atol=1e-6)


def test_track_transformer_conditions_and_bad_info():
    info = {"music": {"encoding": "tokens", "tracks": K, "length": T, "vocab": V},
            "conditions": {"key": {"kind": "class", "num_classes": 2}}}
    torch.manual_seed(0)
    net = randomise(TrackTransformer(info, {"roll": FieldSpec(Absorbing(V))}, hidden=16, layers=1, heads=2,
                                     emb_dim=16))
    x = music_input("tokens")
    t = torch.tensor([0.5, 0.5])
    a = net({"roll": x, "key": torch.tensor([0, 0])}, t)["roll"]
    b = net({"roll": x, "key": torch.tensor([1, 1])}, t)["roll"]
    assert (a - b).abs().amax() > 1e-4
    torch.testing.assert_close(net({"roll": x, "key": torch.tensor([-1, -1])}, t)["roll"], net({"roll": x}, t)["roll"])
    with pytest.raises(ValueError, match="encoding"):
        TrackTransformer({"music": {"encoding": "midi"}}, {"roll": FieldSpec(Absorbing(V))})
    with pytest.raises(ValueError, match="vocab"):
        TrackTransformer(info, {"roll": FieldSpec(Absorbing(V + 1))})
