"""DiffCrysGen's denoiser: a 1-D U-Net over the rows of the crystal matrix, with EDM preconditioning.

The matrix (B, rows, cols) is read as a 1-D signal whose length is the rows and whose channels
are the columns (DiffCrysGen permutes its (N, 136, 3) matrices to (N, 3, 136)). The U-Net follows
DiffCrysGen's ``model.UNet`` (diffcrysgen 0.1.1, ``diffcrysgen/model.py``):

- a sinusoidal embedding (256 features, frequencies ``10000^(-i/128)`` applied to EDM's
  ``c_noise = log(sigma) / 4``) feeds, through its own two-layer SiLU MLP, a per-channel bias
  added before every stage (input, each encoder level, bottleneck, each decoder level);
- encoder levels of 32, 64, 128 channels, each three residual blocks (weight-standardised
  convolutions of width 3, GroupNorm with one group, SiLU, 1x1 shortcut when widths differ)
  followed by a stride-2 convolution (kernel 4): length 136 -> 68 -> 34 -> 17;
- a bottleneck 128 -> 64 -> 64 -> 128 between two attention blocks, which (as DiffCrysGen's
  docstring describes) treat the channels as tokens and the 17 positions as their features
  (one head, dropout 0.1, post-norm, a 4x ReLU feed-forward);
- decoder levels that upsample by transposed convolutions (kernel 4, stride 2), concatenate the
  encoder's output of the same length, and run three residual blocks
  (256 -> 128 -> 64 -> 64, 128 -> 64 -> 32 -> 32, 64 -> 32 -> 32 -> 32), then a width-3
  convolution back to the matrix's columns.

Parameter count: :class:`UNet1D` at its defaults (3 columns, 136 rows, no conditions) has
1,321,604 parameters, exactly DiffCrysGen's ``UNet(in_c=3, out_c=3, time_emb_dim=256)``
("1.322 million" in its demo notebook), so speed compares at equal size. Matrices whose row
count is not a multiple of 8 (a property block) are zero-padded to one inside the network, which
only widens the attention blocks' features.

Differences from DiffCrysGen's code, on purpose: its ``nn.MultiheadAttention`` is built without
``batch_first=True``, so its (B, 128, 17) input is read as a sequence over the *batch* (samples
attend to each other, and a sample depends on its batch-mates); ours attends over channels
within each sample as its docstring intends, with the same parameters. Conditions (optional)
are embedded by :class:`polydiff.plugin.ConditionEmbedding` and added to the noise embedding.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from polydiff.plugin import (
    ConditionEmbedding,
    FieldSpec,
    SinusoidalEmbedding,
    from_x0_eps,
    input_scale,
    precondition,
    time_input,
)

from .matrix import MatrixSpec


class WSConv1d(nn.Conv1d):
    """A 1-D convolution whose kernel is standardised (zero mean, unit variance per output
    channel) at every call: weight standardisation, which pairs well with GroupNorm."""

    def __init__(self, *args: Any, eps: float = 1e-5, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        w = self.weight.flatten(1)
        var, mean = torch.var_mean(w, dim=1, keepdim=True)
        w = ((w - mean) * torch.rsqrt(var + self.eps)).view_as(self.weight)
        return F.conv1d(x, w, self.bias, self.stride, self.padding, self.dilation, self.groups)


class ResBlock1d(nn.Module):
    """conv-norm-SiLU-conv-norm, plus a (1x1 when widths differ) shortcut, then SiLU."""

    def __init__(self, cin: int, cout: int, kernel: int = 3) -> None:
        super().__init__()
        self.conv1 = WSConv1d(cin, cout, kernel, padding=kernel // 2)
        self.norm1 = nn.GroupNorm(1, cout)
        self.conv2 = WSConv1d(cout, cout, kernel, padding=kernel // 2)
        self.norm2 = nn.GroupNorm(1, cout)
        self.skip = nn.Conv1d(cin, cout, 1, bias=False) if cin != cout else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        h = F.silu(self.norm1(self.conv1(x)))
        return F.silu(self.norm2(self.conv2(h)) + self.skip(x))


class ChannelAttention(nn.Module):
    """Self-attention among the channels of a (B, C, L) signal, each channel a token of L
    features; add & norm, a 4x ReLU feed-forward, add & norm (post-norm transformer layer).
    DiffCrysGen's layer with its parameter count, computed by
    :func:`torch.nn.functional.scaled_dot_product_attention` (fused, where
    :class:`torch.nn.MultiheadAttention` takes its slow path while training: a fifth of the
    U-Net's time). While training with dropout the weights are computed, dropped and applied
    in three plain steps: the fused kernel's own dropout path took 47 ms against 30 ms for
    forward and backward of DiffCrysGen's (64, 1, 128, 128) weights on one CPU thread."""

    def __init__(self, length: int, heads: int = 1, dropout: float = 0.1) -> None:
        super().__init__()
        if length % heads:
            raise ValueError(f"attention width {length} is not divisible by heads={heads}")
        self.heads, self.dropout = heads, dropout
        self.qkv, self.proj = nn.Linear(length, 3 * length), nn.Linear(length, length)
        self.norm1, self.norm2 = nn.LayerNorm(length), nn.LayerNorm(length)
        self.ffn = nn.Sequential(nn.Linear(length, 4 * length), nn.ReLU(), nn.Linear(4 * length, length))

    def _load_from_state_dict(self, state_dict: dict[str, Tensor], prefix: str, *args: Any, **kwargs: Any) -> None:
        # checkpoints made with nn.MultiheadAttention (packed q, k, v in the same order) still load
        for old, new in (("attn.in_proj_weight", "qkv.weight"), ("attn.in_proj_bias", "qkv.bias"),
                         ("attn.out_proj.weight", "proj.weight"), ("attn.out_proj.bias", "proj.bias")):
            if prefix + old in state_dict:
                state_dict[prefix + new] = state_dict.pop(prefix + old)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: Tensor) -> Tensor:
        b, c, length = x.shape
        q, k, v = self.qkv(x).view(b, c, 3, self.heads, length // self.heads).permute(2, 0, 3, 1, 4)
        if self.training and self.dropout > 0:  # the fused kernel's dropout path is slower than this
            w = torch.softmax(q @ k.transpose(-1, -2) * (q.shape[-1] ** -0.5), dim=-1)
            a = F.dropout(w, self.dropout, True) @ v
        else:
            a = F.scaled_dot_product_attention(q, k, v)
        x = self.norm1(x + self.proj(a.transpose(1, 2).reshape(b, c, length)))
        return self.norm2(x + self.ffn(x))


def _bias_mlp(dim: int, out: int) -> nn.Module:
    return nn.Sequential(nn.Linear(dim, out), nn.SiLU(), nn.Linear(out, out))


def _stage(widths: Sequence[int]) -> nn.Sequential:
    return nn.Sequential(*(ResBlock1d(a, b) for a, b in itertools.pairwise(widths)))


class UNet1D(nn.Module):
    """DiffCrysGen's 1-D U-Net ``(x (B, C, L), noise (B,), state) -> (B, C, L)``.

    ``noise`` is the scalar noise input (EDM's ``log(sigma) / 4``); ``conditions`` are
    :class:`ConditionEmbedding` specs whose entries are read from ``state`` by key (missing, NaN
    or -1 selects the null embedding). ``blocks`` residual blocks per stage (DiffCrysGen: 3)."""

    def __init__(self, in_channels: int = 3, length: int = 136, channels: Sequence[int] = (32, 64, 128),
                 mid_channels: int = 64, blocks: int = 3, time_dim: int = 256, heads: int = 1,
                 dropout: float = 0.1, time_scale: float = 1.0,
                 conditions: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        super().__init__()
        ch = [int(c) for c in channels]
        if not ch or blocks < 2:
            raise ValueError(f"UNet1D needs at least one level and blocks >= 2, got channels={ch}, blocks={blocks}")
        factor = 2 ** len(ch)
        self.length, self.padded = int(length), -(-int(length) // factor) * factor
        inner = self.padded // factor
        if inner % heads:
            raise ValueError(f"UNet1D: attention width {inner} (padded length {self.padded} / {factor}) is not "
                             f"divisible by heads={heads}")
        self.time = SinusoidalEmbedding(time_dim, scale=time_scale)
        self.cond = ConditionEmbedding(conditions, time_dim) if conditions else None

        self.enc_bias, self.enc, self.down = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        cin = in_channels
        for c in ch:
            self.enc_bias.append(_bias_mlp(time_dim, cin))
            self.enc.append(_stage([cin] + [c] * blocks))
            self.down.append(nn.Conv1d(c, c, 4, 2, 1))
            cin = c
        top = ch[-1]
        self.attn_in = ChannelAttention(inner, heads, dropout)
        self.mid_bias = _bias_mlp(time_dim, top)
        self.mid = _stage([top] + [mid_channels] * (blocks - 1) + [top])
        self.attn_out = ChannelAttention(inner, heads, dropout)

        self.up, self.dec_bias, self.dec = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        for i in reversed(range(len(ch))):
            c, below = ch[i], ch[max(i - 1, 0)]
            self.up.append(nn.ConvTranspose1d(c, c, 4, 2, 1))
            self.dec_bias.append(_bias_mlp(time_dim, 2 * c))
            self.dec.append(_stage([2 * c, c] + [below] * (blocks - 1)))
        self.out = nn.Conv1d(ch[0], in_channels, 3, 1, 1)

    def embed(self, noise: Tensor, state: Mapping[str, Tensor] | None, batch: int) -> Tensor:
        """Noise embedding plus the condition embedding (B, time_dim), in the network's dtype
        (the sinusoidal features are float32; the network may run in bf16)."""
        emb = self.time(noise.reshape(-1).expand(batch)).to(self.mid_bias[0].weight.dtype)
        if self.cond is not None:
            emb = emb + self.cond(state or {}, batch)
        return emb

    def forward(self, x: Tensor, noise: Tensor, state: Mapping[str, Tensor] | None = None) -> Tensor:
        b = x.shape[0]
        if x.shape[-1] != self.length:
            raise ValueError(f"UNet1D was built for length {self.length}, got input of shape {tuple(x.shape)}")
        emb = self.embed(noise, state, b)
        h = F.pad(x, (0, self.padded - self.length))
        skips = []
        for bias, stage, down in zip(self.enc_bias, self.enc, self.down, strict=True):
            h = stage(h + bias(emb)[:, :, None])
            skips.append(h)
            h = down(h)
        h = self.attn_out(self.mid(self.attn_in(h) + self.mid_bias(emb)[:, :, None]))
        for up, bias, stage in zip(self.up, self.dec_bias, self.dec, strict=True):
            h = torch.cat([skips.pop(), up(h)], 1)
            h = stage(h + bias(emb)[:, :, None])
        return self.out(h)[..., :self.length]


class MatrixDenoiser(nn.Module):
    """The network polydiff calls: ``forward(state, t) -> {"x": prediction}`` for the scaled
    matrix ``state["x"]`` (B, rows, cols).

    ``info`` entries used:

    - ``info["matrix"]``: the :class:`MatrixSpec` as a dict (``max_elements``, ``max_sites``,
      ``n_elements``, ``properties``; see :meth:`MatrixSpec.to_dict`) - required;
    - ``info["conditions"]``: optional :class:`ConditionEmbedding` specs, e.g.
      ``{"spacegroup": {"kind": "class", "num_classes": 231}, "band_gap": {"kind": "scalar",
      "low": 0, "high": 5, "basis": 16}}``; their values are read from ``state`` by key (a missing
      key, -1 or NaN selects the null embedding; ``forward``'s ``cond`` argument is not used).

    EDM preconditioning (``sigma_data`` 0.5 as DiffCrysGen) turns the U-Net's raw output into
    ``(x0, eps)`` for any affine Gaussian process and then into the field's ``prediction``.
    ``options`` go to :class:`UNet1D` (``channels``, ``mid_channels``, ``blocks``, ``time_dim``,
    ``heads``, ``dropout``, ``time_scale``); the defaults are DiffCrysGen's size."""

    def __init__(self, info: Mapping[str, Any], fields: Mapping[str, FieldSpec], sigma_data: float = 0.5,
                 **options: Any) -> None:
        super().__init__()
        if "matrix" not in info:
            raise KeyError(f"MatrixDenoiser needs info['matrix'] (the MatrixSpec as a dict); info has {sorted(info)}")
        if "x" not in fields:
            raise KeyError(f"MatrixDenoiser generates the field 'x'; fields are {sorted(fields)}")
        self.spec = MatrixSpec.from_dict(info["matrix"])
        self.process, self.prediction = fields["x"].process, fields["x"].prediction
        self.sigma_data = sigma_data
        rows, cols = self.spec.shape
        self.unet = UNet1D(cols, rows, conditions=info.get("conditions") or None, **options)

    @property
    def layers(self) -> nn.ModuleList:
        """The U-Net in input-to-output order (each encoder level with its noise bias, the
        bottleneck, each decoder level): what transfer learning freezes from the front
        (``freeze: 0.5`` freezes the encoder). A fresh list over the same modules, not registered."""
        u = self.unet
        enc = [nn.ModuleList([b, e, d]) for b, e, d in zip(u.enc_bias, u.enc, u.down, strict=True)]
        mid = nn.ModuleList([u.attn_in, u.mid_bias, u.mid, u.attn_out])
        dec = [nn.ModuleList([p, b, d]) for p, b, d in zip(u.up, u.dec_bias, u.dec, strict=True)]
        return nn.ModuleList([*enc, mid, *dec])

    def forward(self, state: Mapping[str, Tensor], t: Tensor, cond: Any = None) -> dict[str, Tensor]:
        x = state["x"]
        if tuple(x.shape[1:]) != self.spec.shape:
            raise ValueError(f"MatrixDenoiser: state['x'] has shape {tuple(x.shape)}, expected (B, *{self.spec.shape})")
        b = x.shape[0]
        tt = t.reshape(-1).expand(b).to(torch.float64)
        c = self.process.coefs(tt[:, None, None])
        xin = (x * input_scale(c.alpha, c.sigma, self.sigma_data).to(x.dtype)).transpose(1, 2)
        raw = self.unet(xin, time_input(self.process.schedule, tt), state).transpose(1, 2)
        x0, eps = precondition(raw.double(), x.double(), c.alpha, c.sigma, self.sigma_data)
        return {"x": from_x0_eps(x0, eps, self.prediction, c).to(x.dtype)}
