"""Networks: the frame denoiser (invariant point attention, FrameFlow-style) and the CA-only
baseline (the same network on frames derived from CA positions).

States (see :mod:`.modality`): ``trans`` (B, N, 3) CA positions in nanometres (Angstrom x
``scale``), ``rots`` (B, N, 3, 3) residue rotations, ``mask`` (B, N) present residues, and with
self-conditioning ``sc_trans``, the previous clean estimate of ``trans``.

:class:`FrameNet` reads the frames only through invariants (pair distances, sequence
separation, each residue's view of the others' points in its own frame) and writes frame
updates in the residues' own frames, so its features are SE(3)-invariant and its outputs
(the clean frames) SE(3)-equivariant: rotating and translating the input frames rotates and
translates the prediction (a test checks it in float64).

Invariant point attention (Jumper et al. 2021, Algorithm 22): each head attends with scalar
query/key products, a pair bias from the edge features and the squared distances between query
and key points placed in the residues' frames; it reads scalar values, pair features and value
points, which return to the reader's frame. A residue's frame is updated by composing it with a
small rotation (a quaternion ``(1, b, c, d)`` normalised) and a translation, both in its own
frame; the update layer starts at zero so an untrained network predicts the noisy frames.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from polydiff.plugin import FieldSpec, SinusoidalEmbedding, TimeEmbedding


def rbf(d: Tensor, lo: float, hi: float, bins: int) -> Tensor:
    """Gaussian radial basis features ``(..., bins)`` of distances ``d``."""
    mu = torch.linspace(lo, hi, bins, dtype=d.dtype, device=d.device)
    width = (hi - lo) / (bins - 1)
    return torch.exp(-(((d[..., None] - mu) / width) ** 2))


def relpos(n: int, clip: int, device: torch.device) -> Tensor:
    """(N, N) sequence separations ``j - i`` clipped to ``[-clip, clip]`` and shifted to ``[0, 2 clip]``."""
    i = torch.arange(n, device=device)
    return (i[None] - i[:, None]).clamp(-clip, clip) + clip


def quaternion_rotation(q: Tensor) -> Tensor:
    """Rotation matrices ``(..., 3, 3)`` of (not necessarily unit) quaternions ``(..., 4)``, w first."""
    q = q / q.norm(dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], -1).unflatten(-1, (3, 3))


class IPA(nn.Module):
    """Invariant point attention over padded residues (see the module docstring)."""

    def __init__(self, dim: int, pair_dim: int, heads: int = 4, head_dim: int = 16, qk_points: int = 4,
                 v_points: int = 8) -> None:
        super().__init__()
        self.h, self.c, self.pq, self.pv = heads, head_dim, qk_points, v_points
        self.qkv = nn.Linear(dim, 3 * heads * head_dim, bias=False)
        self.qk_pts = nn.Linear(dim, 2 * heads * qk_points * 3)
        self.v_pts = nn.Linear(dim, heads * v_points * 3)
        self.bias = nn.Linear(pair_dim, heads, bias=False)
        self.gamma = nn.Parameter(torch.full((heads,), math.log(math.e - 1)))  # softplus -> 1
        self.out = nn.Linear(heads * (head_dim + pair_dim + 4 * v_points), dim)

    def forward(self, s: Tensor, z: Tensor, R: Tensor, t: Tensor, mask: Tensor) -> Tensor:
        B, N, _ = s.shape
        H, C = self.h, self.c
        q, k, v = self.qkv(s).view(B, N, 3, H, C).unbind(2)
        pts = self.qk_pts(s).view(B, N, 2, H * self.pq, 3)
        vp = self.v_pts(s).view(B, N, H * self.pv, 3)

        def to_global(p: Tensor) -> Tensor:  # (B, N, P, 3) local -> global
            return torch.einsum("bnij,bnpj->bnpi", R, p) + t[:, :, None]

        qp, kp = to_global(pts[:, :, 0]).view(B, N, H, self.pq, 3), to_global(pts[:, :, 1]).view(B, N, H, self.pq, 3)
        vg = to_global(vp).view(B, N, H, self.pv, 3)
        w_c, w_l = math.sqrt(2 / (9 * self.pq)), math.sqrt(1 / 3)
        logits = torch.einsum("bihc,bjhc->bhij", q, k) / math.sqrt(C) + self.bias(z).permute(0, 3, 1, 2)
        # sum over points of |q_i - k_j|^2 as |q_i|^2 + |k_j|^2 - 2 q_i.k_j: no (B, N, N, H, P, 3) tensor
        qf, kf = qp.flatten(-2), kp.flatten(-2)  # (B, N, H, P * 3)
        d2 = ((qf**2).sum(-1)[:, :, None] + (kf**2).sum(-1)[:, None]
              - 2 * torch.einsum("bihc,bjhc->bijh", qf, kf)).clamp_min(0)  # (B, N, N, H)
        gamma = nn.functional.softplus(self.gamma)
        logits = w_l * (logits - 0.5 * w_c * gamma[None, :, None, None] * d2.permute(0, 3, 1, 2))
        logits = logits.masked_fill(~mask[:, None, None, :], torch.finfo(logits.dtype).min)
        a = logits.softmax(-1)  # (B, H, N, N)
        o = torch.einsum("bhij,bjhc->bihc", a, v).reshape(B, N, H * C)
        o_pair = (a.transpose(1, 2) @ z).reshape(B, N, -1)  # (B, i, H, j) @ (B, i, j, c): one batched matmul
        og = torch.einsum("bhij,bjhpx->bihpx", a, vg)
        ol = torch.einsum("bnji,bnhpj->bnhpi", R, og - t[:, :, None, None])  # back to the reader's frame
        feats = [o, o_pair, ol.reshape(B, N, -1), ol.norm(dim=-1).reshape(B, N, -1)]
        return self.out(torch.cat(feats, -1))


class FrameBlock(nn.Module):
    """IPA, a transition MLP and a frame update."""

    def __init__(self, dim: int, pair_dim: int, heads: int) -> None:
        super().__init__()
        self.ipa = IPA(dim, pair_dim, heads)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.SiLU(), nn.Linear(2 * dim, dim))
        self.update = nn.Linear(dim, 6)
        nn.init.zeros_(self.update.weight)
        nn.init.zeros_(self.update.bias)

    def forward(self, s: Tensor, z: Tensor, R: Tensor, t: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        s = self.norm1(s + self.ipa(s, z, R, t, mask))
        s = self.norm2(s + self.mlp(s))
        u = self.update(s)
        one = torch.ones_like(u[..., :1])
        dR = quaternion_rotation(torch.cat([one, u[..., :3]], -1))
        t = t + torch.einsum("bnij,bnj->bni", R, u[..., 3:])
        R = R @ dR
        m = mask[..., None]
        return s * m, torch.where(m[..., None], R, torch.eye(3, dtype=R.dtype, device=R.device)), t * m


def _recentre(out: Tensor, x: Tensor, mask: Tensor) -> Tensor:
    """``out`` moved so its masked centre of mass is that of the input ``x``: zero-centred
    predictions for zero-centred inputs, and exact translation equivariance (a motif held at its
    own coordinates while the rest is generated keeps the frame it was given)."""
    m = mask[..., None].to(out.dtype)
    n = m.sum(1, keepdim=True).clamp_min(1)
    return (out - (out * m).sum(1, keepdim=True) / n + (x.to(out.dtype) * m).sum(1, keepdim=True) / n) * m


class FrameNet(nn.Module):
    """The frame denoiser: ``forward(state, t) -> {"trans": clean CA (nm), "rots": clean rotations}``.

    Node features: time and residue-index embeddings; pair features: clipped sequence separation,
    radial features of the current CA distances and of the self-conditioning estimate's;
    ``blocks`` IPA blocks update features and frames together.
    """

    def __init__(self, dim: int = 64, pair_dim: int = 32, blocks: int = 4, heads: int = 4, relpos_clip: int = 32,
                 self_condition: bool = True, scale: float = 0.1) -> None:
        super().__init__()
        self.clip, self.self_condition, self.scale = relpos_clip, self_condition, scale
        self.time = TimeEmbedding(dim)
        self.index = SinusoidalEmbedding(dim, scale=1.0)
        self.node = nn.Sequential(nn.Linear(2 * dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.relpos = nn.Embedding(2 * relpos_clip + 1, pair_dim)
        self.dist = nn.Linear((2 if self_condition else 1) * 22, pair_dim)
        self.pair = nn.Sequential(nn.SiLU(), nn.Linear(pair_dim, pair_dim))
        self.blocks = nn.ModuleList(FrameBlock(dim, pair_dim, heads) for _ in range(blocks))

    def forward(self, state: Mapping[str, Tensor], t: Tensor, cond: Any = None) -> dict[str, Tensor]:
        R, x, mask = state["rots"], state["trans"], state["mask"] > 0
        B, N, _ = x.shape
        dt = self.relpos.weight.dtype
        tt = t.reshape(-1).expand(B)
        idx = torch.arange(N, device=x.device, dtype=torch.float32).expand(B, N)
        s = self.node(torch.cat([self.time(tt)[:, None].expand(B, N, -1),
                                 self.index(idx).view(B, N, -1)], -1).to(dt))
        ang = 1.0 / self.scale  # the state's unit -> Angstrom
        feats = [rbf(torch.cdist(x, x) * ang, 0.0, 21.0, 22)]
        if self.self_condition:
            sc = state.get("sc_trans", torch.zeros_like(x))
            feats.append(rbf(torch.cdist(sc, sc) * ang, 0.0, 21.0, 22))
        z = self.pair(self.relpos(relpos(N, self.clip, x.device))[None] + self.dist(torch.cat(feats, -1).to(dt)))
        z = z * (mask[:, :, None] & mask[:, None, :])[..., None]
        Rd, td = R.to(dt), x.to(dt)
        for block in self.blocks:
            s, Rd, td = block(s, z, Rd, td, mask)
        return {"trans": _recentre(td, x, mask).to(x.dtype), "rots": Rd.to(R.dtype)}


def ca_frames(x: Tensor, mask: Tensor) -> Tensor:
    """Rotations ``(B, N, 3, 3)`` built from CA positions alone (Gram-Schmidt on the vectors to
    the next and the previous CA; the chain ends use their two nearest neighbours inward):
    equivariant functions of the coordinates, so a CA-only model can use frame attention."""
    B, N, _ = x.shape
    lengths = mask.sum(1).long().clamp_min(1)[:, None]
    i = torch.arange(N, device=x.device)[None].expand(B, N)
    nxt = torch.where(i + 1 < lengths, i + 1, (i - 2).clamp_min(0))
    prv = torch.where(i > 0, i - 1, torch.minimum(i + 2, lengths - 1))
    take = lambda idx: torch.gather(x, 1, idx[..., None].expand(B, N, 3))  # noqa: E731
    e1 = nn.functional.normalize(take(nxt) - x, dim=-1)
    u = take(prv) - x
    e2 = nn.functional.normalize(u - (u * e1).sum(-1, keepdim=True) * e1, dim=-1)
    return torch.stack([e1, e2, torch.cross(e1, e2, dim=-1)], dim=-1)


class CANet(FrameNet):
    """The CA-only baseline: the frame network's architecture and size, reading frames built
    from the CA positions (:func:`ca_frames`) instead of generated ones, predicting clean CA
    positions (``trans``) only."""

    def forward(self, state: Mapping[str, Tensor], t: Tensor, cond: Any = None) -> dict[str, Tensor]:
        x, mask = state["trans"], state["mask"] > 0
        R = torch.where(mask[..., None, None], ca_frames(x, mask), torch.eye(3, dtype=x.dtype, device=x.device))
        return {"trans": super().forward({**state, "rots": R}, t, cond)["trans"]}


def frame_network(info: Mapping[str, Any], fields: Mapping[str, FieldSpec], dim: int = 64, pair_dim: int = 32,
                  blocks: int = 4, heads: int = 4, relpos_clip: int = 32, self_condition: bool = True) -> nn.Module:
    """The IPA frame network (needs the ``trans`` and ``rots`` fields)."""
    if set(fields) != {"trans", "rots"}:
        raise ValueError(f"the frame network generates the fields trans and rots, got {sorted(fields)} "
                         "(use process frames: true)")
    return FrameNet(dim, pair_dim, blocks, heads, relpos_clip, self_condition, float(info.get("scale", 0.1)))


def ca_network(info: Mapping[str, Any], fields: Mapping[str, FieldSpec], dim: int = 64, pair_dim: int = 32,
               blocks: int = 4, heads: int = 4, relpos_clip: int = 32, self_condition: bool = True) -> nn.Module:
    """The CA-only baseline (needs the ``trans`` field only): the frame network on frames
    derived from CA positions."""
    if set(fields) != {"trans"}:
        raise ValueError(f"the CA network generates the field trans only, got {sorted(fields)} "
                         "(use process frames: false)")
    return CANet(dim, pair_dim, blocks, heads, relpos_clip, self_condition, float(info.get("scale", 0.1)))
