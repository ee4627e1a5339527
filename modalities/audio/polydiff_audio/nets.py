"""Networks of the audio modality: a mel-spectrogram U-Net and a multi-track transformer.

- :class:`MelUNet`: the denoiser of normalised log-mel spectrograms (B, n_mels, frames). A 1-D U-Net over time
  frames with the mel bins as channels, EDM-preconditioned like :class:`polydiff.distill.TwoTimeMLP`; with
  ``two_time=True`` it is the consistency-trajectory student ``G(x_t, t, s)`` of SoundCTM (Saito et al. 2024,
  "SoundCTM: uniting score-based and consistency models for text-to-sound generation"), which also reads the
  guidance scale ``omega`` from the state.
- :class:`TrackTransformer`: a joint model of K tracks (four-voice chorales), tokens per (track, position), for
  masked-diffusion tokens, one-hot Gaussian piano rolls or mel stems; ``cross_track=False`` gives the exactly
  factorised per-track baseline.

Conditions are state entries described by ``info["conditions"]`` (:class:`polydiff.plugin.ConditionEmbedding`:
a caption is its ``tokens`` kind, a bag of words; -1 / NaN / a missing key select learned null embeddings).
The ``cond`` argument of ``forward`` may be None or a mapping of extra state entries (merged into the state); the
networks read conditions from the state.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from polydiff.plugin import (
    ConditionEmbedding,
    FieldSpec,
    TimeEmbedding,
    from_x0_eps,
    input_scale,
    precondition,
    time_input,
)

__all__ = ["MelUNet", "TrackTransformer"]

ENCODINGS = ("tokens", "onehot", "stems")


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------

def _groups(channels: int, most: int = 32) -> int:
    """The largest number of GroupNorm groups <= ``most`` that divides ``channels``."""
    return next(g for g in range(min(most, channels), 0, -1) if channels % g == 0)


def _zero(module: nn.Module) -> nn.Module:
    """Zero a layer's weight and bias (the layer then starts as the zero map)."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def _merge(state: Mapping[str, Tensor], cond: Any, who: str) -> Mapping[str, Tensor]:
    """The state with the entries of a mapping ``cond`` added (None: the state as is)."""
    if cond is None:
        return state
    if isinstance(cond, Mapping):
        return {**state, **cond}
    raise ValueError(f"{who}: cond must be None or a mapping of condition entries (conditions live in the state, "
                     f"e.g. state['label']); got {type(cond).__name__}")


def _batch_times(t: Tensor | float, b: int, device: torch.device) -> Tensor:
    """A scalar or (B,) time as a (B,) float64 tensor."""
    tt = torch.as_tensor(t, device=device).reshape(-1).to(torch.float64)
    if tt.numel() not in (1, b):
        raise ValueError(f"time has {tt.numel()} entries for a batch of {b}")
    return tt.expand(b)


def _sigma_data(process: Any, given: float | None) -> float:
    """``given``, else the process's (or its schedule's) ``sigma_data``, else 0.5."""
    if given is not None:
        return float(given)
    for obj in (process, getattr(process, "schedule", None)):
        v = getattr(obj, "sigma_data", None)
        if v is not None:
            return float(v)
    return 0.5


def _gaussian_field(fields: Mapping[str, FieldSpec], field: str, who: str) -> FieldSpec:
    if field not in fields or fields[field].kind != "gaussian":
        raise ValueError(f"{who} needs a Gaussian field {field!r}; got fields "
                         f"{ {k: f.kind for k, f in fields.items()} }")
    return fields[field]


# ---------------------------------------------------------------------------------------------
# the mel U-Net
# ---------------------------------------------------------------------------------------------

class ResBlock1d(nn.Module):
    """``skip(x) + conv(drop(silu(FiLM(norm(conv(silu(norm(x))))))))``: a residual block of kernel-3
    convolutions with GroupNorm and adaptive scale / shift from the embedding."""

    def __init__(self, cin: int, cout: int, emb_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(cin), cin)
        self.conv1 = nn.Conv1d(cin, cout, 3, padding=1)
        self.film = nn.Linear(emb_dim, 2 * cout)
        self.norm2 = nn.GroupNorm(_groups(cout), cout)
        self.drop = nn.Dropout(dropout)
        self.conv2 = nn.Conv1d(cout, cout, 3, padding=1)
        self.skip = nn.Conv1d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.film(F.silu(emb))[:, :, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        return self.skip(x) + self.conv2(self.drop(F.silu(h)))


class SelfAttention1d(nn.Module):
    """Residual multi-head self-attention over time frames (heads of 64 channels where they divide),
    zero-initialised output projection."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.heads = max(1, channels // 64) if channels % 64 == 0 else 1
        self.norm = nn.GroupNorm(_groups(channels), channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj = _zero(nn.Conv1d(channels, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        b, c, n = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, n).transpose(-1, -2).unbind(1)
        y = F.scaled_dot_product_attention(q, k, v)  # (B, heads, n, c / heads)
        return x + self.proj(y.transpose(-1, -2).reshape(b, c, n))


class MelUNet(nn.Module):
    """1-D U-Net denoiser of normalised log-mel spectrograms ``state[field]`` (B, n_mels, frames): the mel bins are
    the channels and the network convolves over time frames only (no image-shaped assumptions).

    EDM preconditioning (like :class:`polydiff.distill.TwoTimeMLP`): the input is scaled by ``c_in(t)``, the
    raw output ``F`` becomes ``x0 = c_skip x + c_out F`` (:func:`polydiff.plugin.precondition`) and is returned as
    the field's prediction; times enter as the schedule-independent ``time_input``. Levels of ``channels`` (each
    a residual block; stride-2 convolutions down, nearest-neighbour upsampling and a convolution up, with skip
    connections), a middle of two residual blocks around optional self-attention at the lowest resolution, and a
    zero-initialised output convolution (the network starts as ``x0 = c_skip x``). Frames that are not a
    multiple of ``2 ** (levels - 1)`` are zero-padded on the right inside the network and cropped back.

    Embedding: time, plus :class:`polydiff.plugin.ConditionEmbedding` of ``info["conditions"]`` (a caption
    is its ``tokens`` kind). ``two_time=True`` adds a second time embedding for the target
    time ``s`` (``s=None``: ``s = t``, the ordinary denoiser) and an embedding of the guidance scale
    ``state["omega"]`` (B,) (missing: ``omega_default``; NaN: a learned null). A one-time network
    (``two_time=False``) ignores ``s``, i.e. is used as a two-time model whose jump is one DDIM step.
    """

    def __init__(self, info: Mapping[str, Any], fields: Mapping[str, FieldSpec],
                 channels: Sequence[int] = (128, 128, 256), emb_dim: int = 128, attention: bool = True,
                 dropout: float = 0.0, two_time: bool = False, omega_default: float = 3.5, field: str = "mel",
                 sigma_data: float | None = None) -> None:
        super().__init__()
        spec = _gaussian_field(fields, field, "MelUNet")
        # a latent state (a mel autoencoder's codes) has its own channels and frames
        mel = (info.get("latent") or info.get("mel")) if isinstance(info, Mapping) else None
        if not isinstance(mel, Mapping) or "n_mels" not in mel:
            raise ValueError("MelUNet needs info['mel'] = {'n_mels': M, 'frames': F, ...}")
        channels = [int(c) for c in channels]
        if not channels or min(channels) < 1:
            raise ValueError(f"MelUNet: channels must be a non-empty list of positive widths, got {channels}")
        self.field, self.process, self.prediction = field, spec.process, spec.prediction
        self.sigma_data = _sigma_data(spec.process, sigma_data)
        self.n_mels = int(mel["n_mels"])
        self.levels = len(channels)
        self.two_time, self.omega_default = bool(two_time), float(omega_default)
        self.time = TimeEmbedding(emb_dim)
        conds = info.get("conditions") or {}
        self.cond = ConditionEmbedding(conds, emb_dim) if conds else None
        if self.two_time:  # zero-initialised: a student initialised from its teacher starts as the teacher
            self.target = TimeEmbedding(emb_dim)
            self.omega = TimeEmbedding(emb_dim, scale=4.0, max_period=1000.0)
            _zero(self.target.mlp[-1])
            _zero(self.omega.mlp[-1])
            self.omega_null = nn.Parameter(torch.zeros(emb_dim))
        self.inp = nn.Conv1d(self.n_mels, channels[0], 3, padding=1)
        self.enc = nn.ModuleList()
        self.down = nn.ModuleList()
        prev = channels[0]
        for i, c in enumerate(channels):
            self.enc.append(ResBlock1d(prev, c, emb_dim, dropout))
            if i < self.levels - 1:
                self.down.append(nn.Conv1d(c, c, 3, stride=2, padding=1))
            prev = c
        top = channels[-1]
        self.mid1 = ResBlock1d(top, top, emb_dim, dropout)
        self.attn = SelfAttention1d(top) if attention else None
        self.mid2 = ResBlock1d(top, top, emb_dim, dropout)
        self.dec = nn.ModuleList()
        self.up = nn.ModuleList()
        for i in range(self.levels):  # dec[i] / up[i] serve level i; run from the bottom up
            below = channels[i + 1] if i < self.levels - 1 else top
            self.dec.append(ResBlock1d(below + channels[i], channels[i], emb_dim, dropout))
            if i > 0:
                self.up.append(nn.Conv1d(channels[i], channels[i], 3, padding=1))
        self.out_norm = nn.GroupNorm(_groups(channels[0]), channels[0])
        self.out = _zero(nn.Conv1d(channels[0], self.n_mels, 3, padding=1))

    # -- embedding and trunk -------------------------------------------------------------------
    def _embed(self, state: Mapping[str, Tensor], tt: Tensor, ss: Tensor | None) -> Tensor:
        b = tt.shape[0]
        sched = self.process.schedule
        dt = self.inp.weight.dtype
        emb = self.time(time_input(sched, tt)).to(dt)
        if self.cond is not None:
            emb = emb + self.cond(state, b).to(dt)
        if self.two_time:
            emb = emb + self.target(time_input(sched, tt if ss is None else ss)).to(dt)
            om = state.get("omega")
            if om is None:
                om = torch.full((b,), self.omega_default, device=tt.device)
            om = torch.as_tensor(om, device=tt.device).to(torch.float32).reshape(-1).expand(b)
            keep = ~torch.isnan(om)
            e = self.omega(torch.nan_to_num(om)).to(dt)
            emb = emb + torch.where(keep[:, None], e, self.omega_null.to(dt).expand(b, -1))
        return emb

    def _inputs(self, state: Mapping[str, Tensor], t: Tensor | float, cond: Any, s: Tensor | float | None
                ) -> tuple[Tensor, Tensor, Any, Tensor]:
        """(the field x, the scaled input, the coefficients at t, the embedding)."""
        state = _merge(state, cond, "MelUNet")
        if self.field not in state:
            raise KeyError(f"MelUNet needs state[{self.field!r}]; the state has {sorted(state)}")
        x = state[self.field]
        if x.dim() != 3 or x.shape[1] != self.n_mels:
            raise ValueError(f"MelUNet: state[{self.field!r}] must be (B, n_mels={self.n_mels}, frames), got shape "
                             f"{tuple(x.shape)}")
        b = x.shape[0]
        tt = _batch_times(t, b, x.device)
        ss = None if (s is None or not self.two_time) else _batch_times(s, b, x.device)
        c = self.process.coefs(tt[:, None, None])
        xin = (x.double() * input_scale(c.alpha, c.sigma, self.sigma_data)).to(self.inp.weight.dtype)
        return x, xin, c, self._embed(state, tt, ss)

    def _trunk(self, xin: Tensor, emb: Tensor, collect: list[Tensor] | None = None) -> Tensor:
        frames = xin.shape[-1]
        mult = 2 ** (self.levels - 1)
        pad = (-frames) % mult
        h = self.inp(F.pad(xin, (0, pad)) if pad else xin)

        def keep(a: Tensor, level: int) -> None:
            if collect is not None:
                collect.append(a[..., :math.ceil(frames / 2**level)])

        skips = []
        for i, block in enumerate(self.enc):
            h = block(h, emb)
            skips.append(h)
            keep(h, i)
            if i < self.levels - 1:
                h = self.down[i](h)
        h = self.mid1(h, emb)
        if self.attn is not None:
            h = self.attn(h)
        h = self.mid2(h, emb)
        keep(h, self.levels - 1)
        for i in reversed(range(self.levels)):
            h = self.dec[i](torch.cat([h, skips[i]], dim=1), emb)
            keep(h, i)
            if i > 0:
                h = self.up[i - 1](F.interpolate(h, scale_factor=2.0, mode="nearest"))
        out = self.out(F.silu(self.out_norm(h)))
        return out[..., :frames]

    # -- public calls ------------------------------------------------------------------------------
    def forward(self, state: Mapping[str, Tensor], t: Tensor | float, cond: Any = None,
                s: Tensor | float | None = None) -> dict[str, Tensor]:
        x, xin, c, emb = self._inputs(state, t, cond, s)
        raw = self._trunk(xin, emb)
        x0, eps = precondition(raw.double(), x.double(), c.alpha, c.sigma, self.sigma_data)
        return {self.field: from_x0_eps(x0, eps, self.prediction, c).to(x.dtype)}

    def features(self, state: Mapping[str, Tensor], t: Tensor | float, cond: Any = None) -> list[Tensor]:
        """The activations (B, channels, frames at that level) after each encoder stage, the middle and each
        decoder stage, cropped to the frames of the unpadded input, from the same preconditioned input as
        :meth:`forward` (with ``s = t``): a feature space for teacher-feature distances, used at small ``t``."""
        _, xin, _, emb = self._inputs(state, t, cond, None)
        feats: list[Tensor] = []
        self._trunk(xin, emb, feats)
        return feats


# ---------------------------------------------------------------------------------------------
# the multi-track transformer
# ---------------------------------------------------------------------------------------------

class TrackBlock(nn.Module):
    """A pre-norm transformer block on (B, K, T, H) tokens with adaLN-Zero modulation (shift, scale and gate
    of both sub-layers from the embedding, zero-initialised: the block starts as the identity). Attention is
    over all K*T tokens (``cross=True``) or within each track only (``cross=False``)."""

    def __init__(self, hidden: int, heads: int, emb_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        if hidden % heads:
            raise ValueError(f"TrackTransformer: hidden ({hidden}) must be a multiple of heads ({heads})")
        self.heads, self.dropout = heads, dropout
        self.norm1 = nn.LayerNorm(hidden, elementwise_affine=False)
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.proj = nn.Linear(hidden, hidden)
        self.norm2 = nn.LayerNorm(hidden, elementwise_affine=False)
        self.mlp = nn.Sequential(nn.Linear(hidden, 4 * hidden), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(4 * hidden, hidden))
        self.ada = nn.Sequential(nn.SiLU(), _zero(nn.Linear(emb_dim, 6 * hidden)))

    def attention(self, a: Tensor, cross: bool) -> Tensor:
        """Self-attention over time within each track, or over all tracks' frames jointly (``cross``)."""
        b, k, n, h = a.shape
        seq = a.reshape(b, k * n, h) if cross else a.reshape(b * k, n, h)
        q, kk, v = self.qkv(seq).reshape(seq.shape[0], seq.shape[1], 3, self.heads, h // self.heads).permute(
            2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, kk, v, dropout_p=self.dropout if self.training else 0.0)
        return self.proj(y.transpose(1, 2).reshape(seq.shape)).reshape(b, k, n, h)

    def forward(self, h: Tensor, emb: Tensor, cross: bool) -> Tensor:
        sh1, sc1, g1, sh2, sc2, g2 = self.ada(emb)[:, None, None].chunk(6, dim=-1)
        h = h + g1 * self.attention(self.norm1(h) * (1 + sc1) + sh1, cross)
        return h + g2 * self.mlp(self.norm2(h) * (1 + sc2) + sh2)


class TrackTransformer(nn.Module):
    """Joint model of K tracks: a transformer over (track, position) tokens with learned track and position
    embeddings and adaLN-Zero time conditioning (time embedding plus :class:`polydiff.plugin.ConditionEmbedding`
    of ``info["conditions"]``). ``cross_track=False`` restricts attention to each track's own tokens: an exactly
    factorised, per-track-independent baseline with the same weights shared by all tracks (each told apart by
    its track embedding); nothing else mixes tracks.

    ``info["music"]``: ``encoding`` (tokens | onehot | stems), ``tracks`` K, ``length`` T, ``vocab`` V,
    ``n_mels`` M and ``frames`` F (stems); optional ``sigma_data`` for the Gaussian encodings (else the
    process's, else 0.5). Fields and outputs (track-major layout, index ``k * T + p``):

    - tokens: ``roll`` (B, K*T) int64 in ``0 .. V`` (V = the mask id of ``Absorbing(V)``) -> logits (B, K*T, V);
      times in [0, 1] are embedded as they are;
    - onehot: ``roll`` (B, K*T, V) float, Gaussian -> the field's prediction (EDM preconditioning, as
      :class:`MelUNet`; zero-initialised head);
    - stems: ``stems`` (B, K, M, F) float, Gaussian; a token per (track, frame) with the M mel bins as its
      features (a linear patch) -> the prediction (B, K, M, F).
    """

    def __init__(self, info: Mapping[str, Any], fields: Mapping[str, FieldSpec], hidden: int = 128, layers: int = 4,
                 heads: int = 4, emb_dim: int = 128, cross_track: bool = True, dropout: float = 0.0) -> None:
        super().__init__()
        music = info.get("music") if isinstance(info, Mapping) else None
        if not isinstance(music, Mapping):
            raise ValueError("TrackTransformer needs info['music'] = {'encoding': ..., 'tracks': K, 'length': T, ...}")
        enc = music.get("encoding")
        if enc not in ENCODINGS:
            raise ValueError(f"info['music']['encoding'] must be one of {', '.join(ENCODINGS)}; got {enc!r}")
        self.encoding = enc
        self.cross_track = bool(cross_track)
        try:
            self.tracks = int(music["tracks"])
            if enc == "stems":
                self.n_mels, self.length = int(music["n_mels"]), int(music["frames"])
            else:
                self.vocab, self.length = int(music["vocab"]), int(music["length"])
        except KeyError as err:
            raise ValueError(f"info['music'] lacks {err} (needed by the {enc!r} encoding)") from None
        self.field = "stems" if enc == "stems" else "roll"
        if self.field not in fields:
            raise ValueError(f"TrackTransformer ({enc}) needs the field {self.field!r}; got fields {sorted(fields)}")
        spec = fields[self.field]
        self.process, self.prediction = spec.process, spec.prediction
        if enc == "tokens":
            if spec.kind != "categorical" or getattr(spec.process, "vocab", None) != self.vocab:
                raise ValueError(f"the tokens encoding needs a categorical field 'roll' with vocab {self.vocab} "
                                 f"(Absorbing({self.vocab})); got {spec.process!r}")
            self.embed = nn.Embedding(self.vocab + 1, hidden)
            self.head = nn.Linear(hidden, self.vocab)
        else:
            _gaussian_field(fields, self.field, f"TrackTransformer ({enc})")
            self.sigma_data = _sigma_data(spec.process, music.get("sigma_data"))
            feat = self.n_mels if enc == "stems" else self.vocab
            self.embed = nn.Linear(feat, hidden)
            self.head = _zero(nn.Linear(hidden, feat))
        self.track_emb = nn.Parameter(0.02 * torch.randn(self.tracks, hidden))
        self.pos_emb = nn.Parameter(0.02 * torch.randn(self.length, hidden))
        self.time = TimeEmbedding(emb_dim)
        conds = info.get("conditions") or {}
        self.cond = ConditionEmbedding(conds, emb_dim) if conds else None
        self.blocks = nn.ModuleList(TrackBlock(hidden, heads, emb_dim, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(hidden, elementwise_affine=False)
        self.final_ada = nn.Sequential(nn.SiLU(), _zero(nn.Linear(emb_dim, 2 * hidden)))

    def _tokens(self, x: Tensor) -> Tensor:
        """The field as per-token inputs (B, K, T, ...) after checking its shape."""
        b, k, n = x.shape[0], self.tracks, self.length
        if self.encoding == "stems":
            if x.dim() != 4 or tuple(x.shape[1:3]) != (k, self.n_mels) or x.shape[3] > n:
                raise ValueError(f"TrackTransformer: state['stems'] must be (B, {k}, {self.n_mels}, <= {n}) "
                                 f"(tracks, n_mels, frames), got shape {tuple(x.shape)}")
            return x.transpose(2, 3)
        want = (b, k * n) if self.encoding == "tokens" else (b, k * n, self.vocab)
        if tuple(x.shape) != want:
            raise ValueError(f"TrackTransformer ({self.encoding}): state['roll'] must have shape {want} "
                             f"(K = {k} tracks of T = {n} positions, track-major), got {tuple(x.shape)}")
        return x.reshape(b, k, n, *x.shape[2:])

    def forward(self, state: Mapping[str, Tensor], t: Tensor | float, cond: Any = None) -> dict[str, Tensor]:
        state = _merge(state, cond, "TrackTransformer")
        if self.field not in state:
            raise KeyError(f"TrackTransformer needs state[{self.field!r}]; the state has {sorted(state)}")
        x = state[self.field]
        b = x.shape[0]
        tt = _batch_times(t, b, x.device)
        dt = self.track_emb.dtype
        tok = self._tokens(x)
        if self.encoding == "tokens":
            h = self.embed(tok.long().clamp(0, self.vocab))
            emb = self.time(tt.to(torch.float32)).to(dt)
        else:
            c = self.process.coefs(tt.reshape(b, *([1] * (tok.dim() - 1))))
            h = self.embed((tok.double() * input_scale(c.alpha, c.sigma, self.sigma_data)).to(dt))
            emb = self.time(time_input(self.process.schedule, tt)).to(dt)
        n = tok.shape[2]
        h = h + self.track_emb[None, :, None] + self.pos_emb[None, None, :n]
        if self.cond is not None:
            emb = emb + self.cond(state, b).to(dt)
        for block in self.blocks:
            h = block(h, emb, self.cross_track)
        shift, scale = self.final_ada(emb)[:, None, None].chunk(2, dim=-1)
        out = self.head(self.norm(h) * (1 + scale) + shift)  # (B, K, T, V or M)
        if self.encoding == "tokens":
            return {self.field: out.reshape(b, -1, self.vocab).float()}
        if self.encoding == "stems":
            out = out.transpose(2, 3)  # (B, K, M, F)
        else:
            out = out.reshape(x.shape)
        cx = self.process.coefs(tt.reshape(b, *([1] * (x.dim() - 1))))
        x0, eps = precondition(out.double(), x.double(), cx.alpha, cx.sigma, self.sigma_data)
        return {self.field: from_x0_eps(x0, eps, self.prediction, cx).to(x.dtype)}
