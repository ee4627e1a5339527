"""The audio plugin's mel autoencoder (latent space option): shapes, the decode-only clamp, training on
embedded sound events, latent scaling, saving and loading, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from polydiff_audio import sounds as S
from polydiff_audio.latent import (
    MelAutoencoder,
    load_autoencoder,
    reconstruction_error,
    save_autoencoder,
    train_autoencoder,
)

pytestmark = pytest.mark.usefixtures("one_thread")

TRAIN = {"latent_channels": 8, "downsample": 1, "width": 32, "steps": 150, "batch": 16, "lr": 2e-3}


@pytest.fixture(scope="module")
def mels() -> torch.Tensor:
    events = S.sound_events(48, seed=11)
    return torch.tensor(np.stack([S.mel_of(e.audio) for e in events]), dtype=torch.float32)


@pytest.fixture(scope="module")
def trained(mels: torch.Tensor) -> MelAutoencoder:
    return train_autoencoder(mels, seed=0, **TRAIN)


@pytest.mark.parametrize("downsample", [0, 1, 2])
def test_shapes_and_config(downsample: int) -> None:
    torch.manual_seed(0)
    ae = MelAutoencoder(n_mels=12, latent_channels=3, downsample=downsample, width=8)
    x = torch.rand(2, 12, 16) * 2 - 1
    z = ae.encode(x)
    assert z.shape == (2, 3, 16 // 2 ** downsample)
    assert ae.decode(z).shape == (2, 12, 16)
    assert ae(x).shape == (2, 12, 16)
    assert ae.config == {"n_mels": 12, "latent_channels": 3, "downsample": downsample, "width": 8}
    rebuilt = MelAutoencoder(**ae.config)
    assert sum(p.numel() for p in rebuilt.parameters()) == sum(p.numel() for p in ae.parameters())


def test_frames_must_divide_and_shapes_are_checked() -> None:
    ae = MelAutoencoder(n_mels=12, latent_channels=3, downsample=2, width=8)
    with pytest.raises(ValueError, match=r"15 frames are not divisible by 2\*\*downsample = 4"):
        ae.encode(torch.zeros(1, 12, 15))
    with pytest.raises(ValueError, match=r"\(B, 12, frames\)"):
        ae.encode(torch.zeros(1, 10, 16))
    with pytest.raises(ValueError, match=r"\(B, 3, frames\)"):
        ae.decode(torch.zeros(1, 4, 4))
    # no downsampling: any number of frames
    assert MelAutoencoder(12, 3, 0, 8).encode(torch.zeros(1, 12, 15)).shape == (1, 3, 15)
    with pytest.raises(ValueError, match="width"):
        MelAutoencoder(12, 3, 1, 0)
    with pytest.raises(ValueError, match="not divisible"):
        train_autoencoder(torch.zeros(4, 12, 15), downsample=1, width=8, steps=1)


def test_clamp_only_at_decode() -> None:
    ae = MelAutoencoder(n_mels=6, latent_channels=2, downsample=1, width=8)
    with torch.no_grad():
        ae.decoder[-1].bias.fill_(5.0)  # push every output far above 1
    x = torch.zeros(3, 6, 8)
    raw = ae(x)
    assert bool((raw > 1.5).all())  # forward: unclamped (the loss keeps its gradients)
    out = ae.decode(ae.encode(x))
    assert torch.equal(out, torch.ones_like(out))
    # scale is applied by encode and undone by decode
    z = ae.encode(x)
    ae.scale.fill_(4.0)
    assert torch.allclose(ae.encode(x), 4 * z)
    assert torch.allclose(ae(x), raw, atol=1e-5)


def test_training_reduces_error(mels: torch.Tensor, trained: MelAutoencoder) -> None:
    assert not trained.training
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        untrained = MelAutoencoder(64, TRAIN["latent_channels"], TRAIN["downsample"], TRAIN["width"])
    err = reconstruction_error(trained, mels)
    # independent baselines: the untrained network and the per-(bin, frame) mean of the set
    mean_pred = float((mels - mels.mean(0)).abs().mean())
    assert err < 0.25 * reconstruction_error(untrained, mels)
    assert err < 0.75 * mean_pred
    # reconstruction_error is the mean absolute error of the clamped round trip
    with torch.no_grad():
        rec = trained.decode(trained.encode(mels))
    by_hand = (rec - mels).abs().mean().item()
    assert err == pytest.approx(by_hand, rel=1e-5)
    assert float(rec.min()) >= -1 and float(rec.max()) <= 1


def test_latent_scaled_to_unit_std(mels: torch.Tensor, trained: MelAutoencoder) -> None:
    with torch.no_grad():
        z = trained.encode(mels)
        raw = trained.encoder(mels)
    assert z.shape == (len(mels), 8, 32)
    assert float(z.std()) == pytest.approx(1.0, abs=1e-4)
    assert float(trained.scale) == pytest.approx(1.0 / float(raw.std()), rel=1e-5)
    assert abs(float(z.mean())) < 0.5


def test_save_load_round_trip(tmp_path, mels: torch.Tensor, trained: MelAutoencoder) -> None:
    file = save_autoencoder(trained, tmp_path / "sub" / "ae.pt")
    assert file == tmp_path / "sub" / "ae.pt" and file.is_file()
    back = load_autoencoder(file)
    assert not back.training
    assert back.config == trained.config
    assert torch.equal(back.scale, trained.scale)
    with torch.no_grad():
        z = trained.encode(mels[:8])
        assert torch.equal(back.encode(mels[:8]), z)
        assert torch.equal(back.decode(z), trained.decode(z))


def test_load_errors_name_the_file(tmp_path) -> None:
    missing = tmp_path / "nope.pt"
    with pytest.raises(FileNotFoundError, match=r"nope\.pt"):
        load_autoencoder(missing)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"junk\.pt"):
        load_autoencoder(junk)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    with pytest.raises(ValueError, match=r"foreign\.pt.*'config' and 'state'"):
        load_autoencoder(foreign)
    mismatched = tmp_path / "mismatched.pt"
    ae = MelAutoencoder(6, 2, 1, 8)
    torch.save({"config": {**ae.config, "width": 16}, "state": ae.state_dict()}, mismatched)
    with pytest.raises(ValueError, match=r"mismatched\.pt.*does not match"):
        load_autoencoder(mismatched)


def test_seeded_training_is_deterministic() -> None:
    gen = torch.Generator().manual_seed(5)
    x = torch.rand(10, 6, 8, generator=gen) * 2 - 1
    opts = {"latent_channels": 2, "downsample": 1, "width": 8, "steps": 6, "batch": 4}
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    a = train_autoencoder(x, seed=3, **opts)
    assert torch.equal(torch.rand(3), expected_next)  # the global RNG is left alone
    b = train_autoencoder(x, seed=3, **opts)
    c = train_autoencoder(x, seed=4, **opts)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_training_input_checks() -> None:
    with pytest.raises(ValueError, match="NaN"):
        train_autoencoder(torch.full((2, 6, 8), float("nan")), width=8, steps=1)
    with pytest.raises(ValueError, match="no spectrograms"):
        train_autoencoder(torch.zeros(0, 6, 8), width=8, steps=1)
    with pytest.raises(ValueError, match=r"\(N, n_mels, frames\)"):
        reconstruction_error(MelAutoencoder(6, 2, 1, 8), torch.zeros(6, 8))
    with pytest.raises(ValueError, match="steps and batch"):
        train_autoencoder(torch.zeros(2, 6, 8), width=8, steps=0)
