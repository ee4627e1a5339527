"""A small learned mel autoencoder: the latent space option of the audio modality.

SoundCTM (Saito et al. 2024) runs diffusion in a VAE latent rather than on spectrograms. Here
:class:`MelAutoencoder` is a small deterministic 1-D convolutional autoencoder over time frames, with
the mel bins as channels (like :class:`polydiff_audio.nets.MelUNet`): normalised log-mel spectrograms
``(B, n_mels, F)`` in [-1, 1] map to latents ``(B, latent_channels, F // 2**downsample)`` and back.

- No KL term: the training loss is L1 + L2 reconstruction plus a small L2 penalty on the latents,
  which keeps them bounded and near zero mean.
- Diffusion wants latents of unit spread, so :func:`train_autoencoder` finishes by storing
  ``scale = 1 / std`` of the unscaled latents over the training set (a buffer saved with the weights);
  :meth:`MelAutoencoder.encode` returns scaled latents and :meth:`MelAutoencoder.decode` undoes it.
- The decoder has no tanh; :meth:`MelAutoencoder.decode` clamps to [-1, 1], ``forward`` (used in
  training) does not, so the loss sees the raw output and keeps its gradients.
- The number of frames must be divisible by ``2**downsample`` (a clear ValueError otherwise): a padded
  latent could not be decoded back to the original length without side information.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from polydiff.plugin import atomic_write, local_seed

__all__ = ["MelAutoencoder", "load_autoencoder", "reconstruction_error", "save_autoencoder", "train_autoencoder"]

_CHUNK = 256  # spectrograms per forward pass when encoding a whole set without gradients


def _groups(channels: int, most: int = 32) -> int:
    """The largest number of GroupNorm groups <= ``most`` that divides ``channels``."""
    return next(g for g in range(min(most, channels), 0, -1) if channels % g == 0)


class _Res(nn.Module):
    """``x + conv(silu(norm(conv(silu(norm(x))))))``: a residual block of kernel-3 convolutions."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.GroupNorm(_groups(channels), channels), nn.SiLU(), nn.Conv1d(channels, channels, 3, padding=1),
            nn.GroupNorm(_groups(channels), channels), nn.SiLU(), nn.Conv1d(channels, channels, 3, padding=1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class MelAutoencoder(nn.Module):
    """A small 1-D convolutional autoencoder over time frames (mel bins as channels): encoder
    ``(B, n_mels, F) -> (B, latent_channels, F // 2**downsample)``, decoder back to ``(B, n_mels, F)``.

    Each halving of time is a stride-2 convolution plus a residual block (nearest upsampling plus
    convolution on the way back). The buffer ``scale`` (1 until :func:`train_autoencoder` sets it)
    multiplies the encoder's output so that latents have std ~1 over the training set.
    ``config`` holds the constructor's arguments, so ``MelAutoencoder(**ae.config)`` rebuilds it."""

    def __init__(self, n_mels: int = 64, latent_channels: int = 8, downsample: int = 1, width: int = 128) -> None:
        super().__init__()
        for name, value, least in (("n_mels", n_mels, 1), ("latent_channels", latent_channels, 1),
                                   ("downsample", downsample, 0), ("width", width, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"MelAutoencoder: {name} must be an integer >= {least}, got {value!r}")
        self.config: dict[str, int] = {"n_mels": n_mels, "latent_channels": latent_channels,
                                       "downsample": downsample, "width": width}
        self.n_mels, self.latent_channels, self.downsample = n_mels, latent_channels, downsample
        enc: list[nn.Module] = [nn.Conv1d(n_mels, width, 3, padding=1), _Res(width)]
        for _ in range(downsample):
            enc += [nn.Conv1d(width, width, 4, stride=2, padding=1), _Res(width)]
        enc += [nn.GroupNorm(_groups(width), width), nn.SiLU(), nn.Conv1d(width, latent_channels, 3, padding=1)]
        self.encoder = nn.Sequential(*enc)
        dec: list[nn.Module] = [nn.Conv1d(latent_channels, width, 3, padding=1), _Res(width)]
        for _ in range(downsample):
            dec += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv1d(width, width, 3, padding=1), _Res(width)]
        dec += [nn.GroupNorm(_groups(width), width), nn.SiLU(), nn.Conv1d(width, n_mels, 3, padding=1)]
        self.decoder = nn.Sequential(*dec)
        self.register_buffer("scale", torch.ones(()))

    def _check_mel(self, mel: Tensor) -> None:
        if not isinstance(mel, Tensor) or mel.dim() != 3 or mel.shape[1] != self.n_mels:
            shape = tuple(mel.shape) if isinstance(mel, Tensor) else type(mel).__name__
            raise ValueError(f"MelAutoencoder: expected mel spectrograms (B, {self.n_mels}, frames), got {shape}")
        factor = 2 ** self.downsample
        if mel.shape[2] % factor:
            raise ValueError(f"MelAutoencoder: {mel.shape[2]} frames are not divisible by 2**downsample = {factor} "
                             f"(downsample={self.downsample}); crop or pad the spectrograms to a multiple of {factor}")

    def _encode_raw(self, mel: Tensor) -> Tensor:
        self._check_mel(mel)
        return self.encoder(mel.to(self.scale.dtype))

    def encode(self, mel: Tensor) -> Tensor:
        """Scaled latents ``(B, latent_channels, F // 2**downsample)`` of spectrograms ``(B, n_mels, F)``."""
        return self._encode_raw(mel) * self.scale

    def _decode_raw(self, z: Tensor) -> Tensor:
        if not isinstance(z, Tensor) or z.dim() != 3 or z.shape[1] != self.latent_channels:
            shape = tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__
            raise ValueError(f"MelAutoencoder: expected latents (B, {self.latent_channels}, frames), got {shape}")
        return self.decoder(z.to(self.scale.dtype) / self.scale)

    def decode(self, z: Tensor) -> Tensor:
        """Spectrograms ``(B, n_mels, F' * 2**downsample)`` in [-1, 1] of scaled latents ``(B, C, F')``."""
        return self._decode_raw(z).clamp(-1.0, 1.0)

    def forward(self, mel: Tensor) -> Tensor:
        """``decode(encode(mel))`` without the final clamp (what the training loss sees)."""
        return self._decode_raw(self.encode(mel))


def _check_set(mels: Tensor, who: str) -> None:
    if not isinstance(mels, Tensor) or mels.dim() != 3:
        shape = tuple(mels.shape) if isinstance(mels, Tensor) else type(mels).__name__
        raise ValueError(f"{who}: expected mel spectrograms (N, n_mels, frames), got {shape}")
    if len(mels) == 0:
        raise ValueError(f"{who}: no spectrograms")
    if not bool(torch.isfinite(mels).all()):
        raise ValueError(f"{who}: mels contain NaN or infinite values")


@torch.no_grad()
def _latents(ae: MelAutoencoder, mels: Tensor, *, scaled: bool) -> Tensor:
    """Latents of a whole set, in chunks, without gradients."""
    device = ae.scale.device
    parts = [(ae.encode if scaled else ae._encode_raw)(mels[i:i + _CHUNK].to(device))
             for i in range(0, len(mels), _CHUNK)]
    return torch.cat(parts)


def train_autoencoder(mels: Tensor, *, latent_channels: int = 8, downsample: int = 1, width: int = 128,
                      steps: int = 1500, batch: int = 64, lr: float = 2e-3, seed: int = 0,
                      latent_penalty: float = 1e-4, progress: bool = False) -> MelAutoencoder:
    """A :class:`MelAutoencoder` fitted to ``mels`` (N, n_mels, F) and returned in eval mode.

    Seeded: the initial weights come from ``seed`` under a forked RNG, the batches (drawn with
    replacement) from a ``torch.Generator`` of ``seed``. AdamW with cosine decay of ``lr`` over
    ``steps``; loss = L1 + L2 reconstruction + ``latent_penalty`` * mean square of the latents.
    Finally ``scale`` = 1 / std of the unscaled latents over ``mels``. Trains on ``mels``'s device."""
    who = "train_autoencoder"
    _check_set(mels, who)
    if steps < 1 or batch < 1:
        raise ValueError(f"{who}: steps and batch must be positive, got {steps}, {batch}")
    if latent_penalty < 0 or not math.isfinite(latent_penalty):
        raise ValueError(f"{who}: latent_penalty must be a finite number >= 0, got {latent_penalty}")
    with local_seed(seed):
        ae = MelAutoencoder(mels.shape[1], latent_channels, downsample, width)
    ae._check_mel(mels[:1])
    ae = ae.to(mels.device)
    x_all = mels.float()
    gen = torch.Generator(device="cpu").manual_seed(seed)
    opt = torch.optim.AdamW(ae.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    ae.train()
    start = time.monotonic()
    for step in range(steps):
        x = x_all[torch.randint(0, len(x_all), (batch,), generator=gen).to(mels.device)]
        z = ae._encode_raw(x)
        err = ae._decode_raw(z) - x
        loss = err.abs().mean() + err.square().mean() + latent_penalty * z.square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if progress and (step == steps - 1 or step % max(1, steps // 10) == 0):
            print(f"{who}: step {step + 1}/{steps}, loss {float(loss):.4f} ({time.monotonic() - start:.1f} s)",
                  file=sys.stderr)
    ae.eval()
    std = float(_latents(ae, x_all, scaled=False).std())
    if not (std > 0 and math.isfinite(std)):
        raise ValueError(f"{who}: the latents have std {std} over the training set; cannot scale them")
    ae.scale.fill_(1.0 / std)
    return ae


def save_autoencoder(ae: MelAutoencoder, path: str | Path) -> Path:
    """Write ``{"config": ae.config, "state": ae.state_dict()}`` to ``path`` atomically; return the path."""
    blob = {"config": dict(ae.config), "state": {k: v.detach().cpu() for k, v in ae.state_dict().items()}}
    return atomic_write(path, lambda tmp: torch.save(blob, tmp))


def load_autoencoder(path: str | Path) -> MelAutoencoder:
    """The :class:`MelAutoencoder` saved at ``path`` by :func:`save_autoencoder`, on the CPU in eval mode.
    A missing file is a FileNotFoundError, an unreadable or foreign one a ValueError, both naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no mel autoencoder file there")
    try:
        blob: Any = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"{path}: unreadable mel autoencoder file ({type(err).__name__}: {err})") from err
    if not (isinstance(blob, dict) and isinstance(blob.get("config"), dict) and isinstance(blob.get("state"), dict)):
        raise ValueError(f"{path}: not a mel autoencoder file (expected a dict with 'config' and 'state')")
    try:
        ae = MelAutoencoder(**blob["config"])
        ae.load_state_dict(blob["state"])
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"{path}: mel autoencoder file does not match its config ({err})") from err
    return ae.eval()


@torch.no_grad()
def reconstruction_error(ae: MelAutoencoder, mels: Tensor) -> float:
    """Mean ``|decode(encode(x)) - x|`` over ``mels`` (N, n_mels, F), in normalised [-1, 1] units."""
    _check_set(mels, "reconstruction_error")
    device = ae.scale.device
    total = 0.0
    for i in range(0, len(mels), _CHUNK):
        x = mels[i:i + _CHUNK].to(device, ae.scale.dtype)
        total += float((ae.decode(ae.encode(x)) - x).abs().sum())
    return total / mels.numel()
