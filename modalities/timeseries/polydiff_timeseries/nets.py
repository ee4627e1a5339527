"""Denoisers of windows: TSDiff's S4 residual network, a time-domain transformer and PaCoDi's
parallel real / imaginary spectral transformer. Pure PyTorch (FFT convolutions, plain
attention products); no custom CUDA build.

Every network follows the toy plugin's pattern: inputs scaled to unit variance (EDM's
``c_in``), time through the log-SNR (:func:`polydiff.nn.time_input`), and the raw output turned
into well-conditioned ``(x0, eps)`` by EDM's preconditioning before it is expressed in the
field's parametrisation, so one network serves every schedule and prediction.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from polydiff.plugin import FieldSpec, TimeEmbedding, from_x0_eps, input_scale, shared_time, time_input
from polydiff.plugin import precondition as edm_precondition

from .spectral import component_variance

# ---------------------------------------------------------------------------------------------
# S4D: a diagonal state-space layer (Gu et al. 2022, "On the parameterization and
# initialization of diagonal state space models"), convolution mode via FFT
# ---------------------------------------------------------------------------------------------


class S4D(nn.Module):
    """``y = K * u + D u`` per channel with the kernel of a diagonal complex SSM discretised by
    zero-order hold, ``K[l] = 2 Re sum_n C_n (exp(dt A_n) - 1) / A_n exp(l dt A_n)``;
    S4D-Lin initialisation ``A_n = -1/2 + i pi n``. Bidirectional: a second kernel runs
    backwards in time (the window is seen whole, as in TSDiff's S4 blocks)."""

    def __init__(self, dim: int, state: int = 64, dt_min: float = 1e-3, dt_max: float = 1e-1,
                 bidirectional: bool = True) -> None:
        super().__init__()
        n = max(state // 2, 1)
        self.bidirectional = bidirectional
        heads = 2 if bidirectional else 1
        self.log_dt = nn.Parameter(torch.rand(dim) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        self.log_a_re = nn.Parameter(torch.full((dim, n), math.log(0.5)))
        self.a_im = nn.Parameter(math.pi * torch.arange(n, dtype=torch.float32).expand(dim, n).clone())
        self.c = nn.Parameter(torch.randn(heads, dim, n, 2) * math.sqrt(0.5))
        self.d = nn.Parameter(torch.randn(dim))
        self.out = nn.Conv1d(dim, 2 * dim, 1)
        self._kernel: tuple[Any, Tensor] | None = None  # (key, kernels) cached in inference

    def kernel(self, length: int) -> Tensor:
        """(heads, dim, length) convolution kernels, in float32 whatever the parameters' dtype
        (FFTs have no bfloat16).

        Written in real arithmetic, ``Re(C' z^l) = |z|^l (Re C' cos(l arg z) - Im C' sin(l arg z))``
        with ``z = exp(dt A)``: the same rounding as a complex ``exp``, which on CPU is not
        vectorised and took 37% of eager sampling, and nothing complex for ``torch.compile``.
        In inference (eval mode, not being compiled, and either no gradients or frozen kernel
        parameters, as in guided sampling from ``polydiff.load``) they are cached per length
        until a parameter changes in place (its version counter) or the module is converted or
        switches mode: they do not depend on the input."""
        params = (self.log_dt, self.log_a_re, self.a_im, self.c)
        needs_graph = torch.is_grad_enabled() and any(p.requires_grad for p in params)
        cache = not (self.training or needs_graph or torch.compiler.is_compiling())
        if cache:
            key = (length, *((p.data_ptr(), p._version) for p in params))
            if self._kernel is not None and self._kernel[0] == key:
                return self._kernel[1]
        dt = torch.exp(self.log_dt.float())[:, None]
        a_re, a_im = -torch.exp(self.log_a_re.float()), self.a_im.float()  # A, (dim, n)
        re, im = dt * a_re, dt * a_im  # dt A
        # (exp(dt A) - 1) / A, complex quotient written out
        size = torch.exp(re)  # |exp(dt A)|
        e_re, e_im = size * torch.cos(im) - 1, size * torch.sin(im)
        den = a_re * a_re + a_im * a_im
        q_re, q_im = (e_re * a_re + e_im * a_im) / den, (e_im * a_re - e_re * a_im) / den
        c_re, c_im = self.c.float().unbind(-1)  # (heads, dim, n)
        w_re, w_im = c_re * q_re - c_im * q_im, c_re * q_im + c_im * q_re
        steps = torch.arange(length, device=dt.device, dtype=torch.float32)
        mag = torch.exp(re[..., None] * steps)  # |z|^l, (dim, n, L)
        cos, sin = torch.cos(im[..., None] * steps), torch.sin(im[..., None] * steps)
        k = 2 * (torch.einsum("hdn,dnl->hdl", w_re, mag * cos) - torch.einsum("hdn,dnl->hdl", w_im, mag * sin))
        if cache:
            self._kernel = (key, k)
        return k

    def train(self, mode: bool = True) -> S4D:
        self._kernel = None  # a cache never outlives a switch of mode
        return super().train(mode)

    def _apply(self, fn: Any, recurse: bool = True) -> S4D:  # .to(), .half(), .float(): tensors replaced
        self._kernel = None
        return super()._apply(fn, recurse)

    def forward(self, u: Tensor) -> Tensor:
        """(B, dim, L) -> (B, dim, L)."""
        length = u.shape[-1]
        k = self.kernel(length)
        if self.bidirectional:
            k = F.pad(k[0], (0, length)) + F.pad(k[1].flip(-1), (length, 0))
        else:
            k = F.pad(k[0], (0, length))
        y = torch.fft.irfft(torch.fft.rfft(u.float(), n=2 * length) * torch.fft.rfft(k, n=2 * length),
                            n=2 * length)[..., :length]
        y = F.gelu(y.to(u.dtype) + self.d[:, None] * u)  # back to the network's dtype
        return F.glu(self.out(y), dim=1)


class S4Block(nn.Module):
    """TSDiff-style residual block: time embedding added, pre-norm S4D with a residual,
    gated activation ``tanh(z) sigmoid(z)``, then residual and skip 1x1 convolutions."""

    def __init__(self, dim: int, emb_dim: int, state: int = 64) -> None:
        super().__init__()
        self.time = nn.Linear(emb_dim, dim)
        self.norm = nn.LayerNorm(dim)
        self.s4 = S4D(dim, state)
        self.res = nn.Conv1d(dim, dim, 1)
        self.skip = nn.Conv1d(dim, dim, 1)

    def forward(self, x: Tensor, emb: Tensor) -> tuple[Tensor, Tensor]:
        h = x + self.time(emb)[:, :, None]
        z = self.s4(self.norm(h.transpose(1, 2)).transpose(1, 2)) + h
        g = torch.tanh(z) * torch.sigmoid(z)
        return x + self.res(g), self.skip(g)


# ---------------------------------------------------------------------------------------------
# attention blocks (DiT: adaLN-zero modulation by the time embedding)
# ---------------------------------------------------------------------------------------------


class DiTBlock(nn.Module):
    """Pre-norm transformer block whose norms are modulated by the time embedding (Peebles &
    Xie 2023, adaLN-zero): each block starts as the identity."""

    def __init__(self, dim: int, heads: int, emb_dim: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.ada = nn.Linear(emb_dim, 6 * dim)
        nn.init.zeros_(self.ada.weight)
        nn.init.zeros_(self.ada.bias)

    def forward(self, h: Tensor, emb: Tensor) -> Tensor:
        b, n, d = h.shape
        s1, b1, g1, s2, b2, g2 = self.ada(F.silu(emb))[:, None].chunk(6, dim=-1)
        a = self.norm1(h) * (1 + s1) + b1
        q, k, v = self.qkv(a).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        # explicit products (not SDPA) so that torch's FLOP counter sees them as bmm on every device
        w = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(d // self.heads), dim=-1)
        o = (w @ v).transpose(1, 2).reshape(b, n, d)
        h = h + g1 * self.proj(o)
        return h + g2 * self.mlp(self.norm2(h) * (1 + s2) + b2)


# ---------------------------------------------------------------------------------------------
# shared preconditioning
# ---------------------------------------------------------------------------------------------


class _Denoiser(nn.Module):
    """Base: time embedding, input scaling and EDM output preconditioning for field ``key``."""

    def __init__(self, key: str, fields: Mapping[str, FieldSpec], sigma_data: float, emb_dim: int) -> None:
        super().__init__()
        if key not in fields:
            raise ValueError(f"this network denoises the field {key!r} but the fields are {sorted(fields)} "
                             f"(set process.representation to {'spectral' if key == 'spec' else 'time'})")
        self.key = key
        self.process, self.prediction = fields[key].process, fields[key].prediction
        self.sigma_data = sigma_data
        self.time = TimeEmbedding(emb_dim)

    def coefs(self, t: Tensor, x: Tensor) -> tuple[Any, Tensor]:
        """The process coefficients at ``t``, shaped to broadcast against ``x``, and the time
        embedding: computed once, for a batch of 1, when the batch shares one time
        (:func:`polydiff.plugin.shared_time`, as samplers pass it), and broadcast."""
        tt = shared_time(t, x.shape[0]).to(torch.float64)
        c = self.process.coefs(tt.reshape(-1, *([1] * (x.dim() - 1))))
        return c, self.time(time_input(self.process.schedule, tt))

    def finish(self, raw: Tensor, x: Tensor, c: Any) -> Tensor:
        x0, eps = edm_precondition(raw.double(), x.double(), c.alpha, c.sigma, self.sigma_data)
        return from_x0_eps(x0, eps, self.prediction, c).to(x.dtype)


class TSDiffNet(_Denoiser):
    """TSDiff's backbone: input projection, ``depth`` S4 residual blocks with skip connections
    summed, output MLP. Input channels: the window (B, L, C) and its observed mask."""

    def __init__(self, channels: int, fields: Mapping[str, FieldSpec], sigma_data: float = 1.0, hidden: int = 64,
                 depth: int = 3, state: int = 64, emb_dim: int = 64) -> None:
        super().__init__("x", fields, sigma_data, emb_dim)
        self.inp = nn.Sequential(nn.Linear(2 * channels, hidden), nn.ReLU())
        self.blocks = nn.ModuleList(S4Block(hidden, emb_dim, state) for _ in range(depth))
        self.out = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, channels))

    def forward(self, state: Mapping[str, Tensor], t: Tensor, cond: Any = None) -> dict[str, Tensor]:
        x = state["x"]
        obs = state.get("observed")
        obs = torch.ones_like(x) if obs is None else obs.to(x.dtype)
        c, emb = self.coefs(t, x)
        h = self.inp(torch.cat([x * input_scale(c.alpha, c.sigma, self.sigma_data).to(x.dtype), obs], -1))
        h = h.transpose(1, 2)
        skips = 0
        for blk in self.blocks:
            h, s = blk(h, emb)
            skips = skips + s
        raw = self.out((skips / math.sqrt(len(self.blocks))).transpose(1, 2))
        return {"x": self.finish(raw, x, c)}


class TimeTransformer(_Denoiser):
    """The time-domain baseline of the PaCoDi comparison: a DiT over the L time steps."""

    def __init__(self, length: int, channels: int, fields: Mapping[str, FieldSpec], sigma_data: float = 1.0,
                 hidden: int = 64, depth: int = 4, heads: int = 4, emb_dim: int = 64) -> None:
        super().__init__("x", fields, sigma_data, emb_dim)
        self.inp = nn.Linear(channels, hidden)
        self.pos = nn.Parameter(torch.randn(length, hidden) * 0.02)
        self.blocks = nn.ModuleList(DiTBlock(hidden, heads, emb_dim) for _ in range(depth))
        self.out = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, channels))

    def forward(self, state: Mapping[str, Tensor], t: Tensor, cond: Any = None) -> dict[str, Tensor]:
        x = state["x"]
        c, emb = self.coefs(t, x)
        h = self.inp(x * input_scale(c.alpha, c.sigma, self.sigma_data).to(x.dtype)) + self.pos
        for blk in self.blocks:
            h = blk(h, emb)
        return {"x": self.finish(self.out(h), x, c)}


class PaCoDiNet(_Denoiser):
    """PaCoDi's denoiser of half spectra (B, K, C, 2): two parallel transformers over the K
    frequency bins, one for the real and one for the imaginary parts.

    With ``interaction`` every layer adds a learned, zero-initialised linear message from each
    branch to the other (our reading of PaCoDi's interaction / mean-field correction: without
    it the branches are the mean-field approximation, denoising real and imaginary parts
    independently given the time). Inputs are whitened per component (divided by the
    component's noise std, DC / Nyquist imaginary parts set to zero) so that EDM's
    preconditioning applies unchanged; outputs are coloured back.
    """

    def __init__(self, length: int, channels: int, fields: Mapping[str, FieldSpec], sigma_data: float = 1.0,
                 hidden: int = 64, depth: int = 2, heads: int = 4, emb_dim: int = 64, interaction: bool = True) -> None:
        super().__init__("spec", fields, sigma_data, emb_dim)
        k = length // 2 + 1
        self.length = length
        self.register_buffer("std", component_variance(length).sqrt()[:, None, :], persistent=False)  # (K, 1, 2)
        self.inp = nn.ModuleList(nn.Linear(channels, hidden) for _ in range(2))
        self.pos = nn.Parameter(torch.randn(2, k, hidden) * 0.02)
        self.branches = nn.ModuleList(nn.ModuleList(DiTBlock(hidden, heads, emb_dim) for _ in range(depth))
                                      for _ in range(2))
        self.interaction = interaction
        if interaction:
            self.mix = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(2 * depth))
            for m in self.mix:
                nn.init.zeros_(m.weight)
                nn.init.zeros_(m.bias)
        self.out = nn.ModuleList(nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, channels)) for _ in range(2))

    def forward(self, state: Mapping[str, Tensor], t: Tensor, cond: Any = None) -> dict[str, Tensor]:
        x = state["spec"]
        std = self.std.to(x.dtype)
        safe = torch.where(std > 0, std, torch.ones_like(std))
        xw = torch.where(std > 0, x / safe, torch.zeros_like(x))  # whitened: unit-variance noise
        c, emb = self.coefs(t, x)
        xin = xw * input_scale(c.alpha, c.sigma, self.sigma_data).to(x.dtype)
        h = [self.inp[j](xin[..., j]) + self.pos[j] for j in range(2)]
        for i in range(len(self.branches[0])):
            h = [self.branches[j][i](h[j], emb) for j in range(2)]
            if self.interaction:
                h = [h[0] + self.mix[2 * i](h[1]), h[1] + self.mix[2 * i + 1](h[0])]
        raw = torch.stack([self.out[j](h[j]) for j in range(2)], dim=-1)
        x0w, epsw = edm_precondition(raw.double(), xw.double(), c.alpha, c.sigma, self.sigma_data)
        x0, eps = x0w * std.double(), epsw * std.double()  # colour back; DC / Nyquist imag -> 0
        return {"spec": from_x0_eps(x0, eps, self.prediction, c).to(x.dtype)}


def num_parameters(net: nn.Module) -> int:
    """Number of parameters (frozen ones too: a loaded network, whose parameters are frozen, has
    its full size)."""
    return sum(p.numel() for p in net.parameters())
