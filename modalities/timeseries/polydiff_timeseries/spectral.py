"""PaCoDi's spectral representation (Cai et al., "PaCoDi: parallel complex diffusion"):
windows (B, L, C) <-> Hermitian half spectra (B, K, C, 2), K = L // 2 + 1, with
``torch.fft.rfft(norm="ortho")`` along time; the last axis holds (real, imaginary).

The orthonormal rfft of white N(0, 1) noise has independent components with variance 1/2
for the real and imaginary parts of the interior bins, and variance 1 (real) / 0 (imaginary)
at DC and, for even L, at Nyquist. :class:`HalfSpectrum` is the field structure with exactly
that noise: diffusing the half spectrum with it is the same Gaussian process as diffusing the
window in time, and the imaginary parts of DC / Nyquist carry no noise and are held at zero.
Its ``weights`` are the inverse variances (2, 1 and 0), so the core's masked MSE becomes
PaCoDi's heteroscedastic, inverse-variance weighted loss (by Parseval it equals the time-domain
squared error up to a constant).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor


def num_bins(length: int) -> int:
    """Number of bins of the half spectrum of a length-``length`` real signal."""
    return length // 2 + 1


def to_spectrum(x: Tensor) -> Tensor:
    """(B, L, C) real windows -> (B, K, C, 2) half spectrum (orthonormal rfft along time)."""
    z = torch.fft.rfft(x, dim=1, norm="ortho")
    return torch.stack([z.real, z.imag], dim=-1)


def from_spectrum(spec: Tensor, length: int) -> Tensor:
    """(B, K, C, 2) half spectrum -> (B, L, C) windows; the DC / Nyquist imaginary parts are
    ignored (they are zero for real signals)."""
    z = torch.complex(spec[..., 0], spec[..., 1])
    return torch.fft.irfft(z, n=length, dim=1, norm="ortho")


def component_variance(length: int, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> Tensor:
    """(K, 2) variances of the spectrum of white unit noise: 1/2 inside, (1, 0) at DC and at
    Nyquist (even ``length`` only)."""
    k = num_bins(length)
    var = torch.full((k, 2), 0.5, dtype=dtype, device=device)
    var[0] = torch.tensor([1.0, 0.0], dtype=dtype)
    if length % 2 == 0:
        var[-1] = torch.tensor([1.0, 0.0], dtype=dtype)
    return var


@dataclass(frozen=True)
class HalfSpectrum:
    """Structure of a half-spectrum field (B, K, C, 2) of windows of ``length`` steps: noise
    with the per-component variances of :func:`component_variance`, DC / Nyquist imaginary
    parts projected to zero, inverse-variance loss weights."""

    length: int

    def _var(self, x: Tensor) -> Tensor:
        return component_variance(self.length, x.dtype, x.device)[:, None, :]  # (K, 1, 2)

    def noise(self, z: Tensor, state: Mapping[str, Tensor]) -> Tensor:
        """Normal draws scaled to each component's variance (what white noise has in this basis)."""
        return z * self._var(z).sqrt()

    def project(self, x: Tensor, state: Mapping[str, Tensor]) -> Tensor:
        """Zero the components a real signal cannot have (DC and Nyquist imaginary parts)."""
        return x * (self._var(x) > 0).to(x.dtype)

    def weights(self, x: Tensor, state: Mapping[str, Tensor]) -> Tensor:
        """Inverse-variance loss weights, 0 on the components held at zero."""
        v = self._var(x)
        return torch.where(v > 0, 1 / v.clamp_min(1e-12), torch.zeros_like(v)).expand_as(x)

    def dof(self, x: Tensor, state: Mapping[str, Tensor]) -> Tensor:
        """The number of free real components per sample: the window's length times its channels."""
        free = (self._var(x) > 0).expand_as(x[0]).sum()
        return torch.full((x.shape[0],), float(free), device=x.device)


def attention_flops(tokens: int, dim: int, layers: int, batch: int = 1) -> int:
    """Analytic FLOPs of the attention products (scores and weighted sum, 2 multiply-adds each)
    of ``layers`` self-attention layers over ``tokens`` tokens of width ``dim``: ``4 n^2 d``."""
    return 4 * tokens * tokens * dim * layers * batch
