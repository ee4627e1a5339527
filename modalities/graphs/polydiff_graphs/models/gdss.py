"""GDSS: score-based generation of graphs through a system of SDEs (Jo, Lee & Hwang, ICML 2022).

Node features ``x`` (B, N, F) and the adjacency ``adj`` (B, N, N) are diffused by two separate
SDEs (VP for generic graphs, VE for molecules) and denoised by two score networks evaluated at
the same state:

- :class:`ScoreNetworkX`: a dense GCN stack whose layer outputs are concatenated and read out
  by an MLP (GDSS's ``ScoreNetworkX``), or :class:`ScoreNetworkXGMH` with graph multi-head
  attention layers (GDSS's ``ScoreNetworkX_GMH``);
- :class:`ScoreNetworkA`: graph multi-head (GMH) attention over the powers ``A, A^2, ...,
  A^c_init`` of the noisy adjacency; every layer turns its adjacency channels into attention
  maps, mixes them with an MLP into new channels, and the channels of all layers are read out
  by an MLP into one symmetric, zero-diagonal, masked score.

As in GDSS the networks do not see the time: the noise level is read from the input, and
:class:`GDSSNet` turns a raw output into a score the GDSS way, ``-out / sigma(t)`` for a
variance-preserving field and ``out`` itself for a variance-exploding one, so its fields
declare ``prediction="score"``. Trained with polydiff's DSM loss under the ``snr`` weighting,
this is GDSS's loss ``|sigma * score + eps|^2``.

The S4 solver (GDSS, Section 3.3) is registered as the sampler ``s4``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from polydiff.plugin import Coefs, FieldSpec, StepContext, VPLinear, register

# ---------------------------------------------------------------------------------------------
# building blocks
# ---------------------------------------------------------------------------------------------

def pair_mask(mask: Tensor) -> Tensor:
    """(B, N) node mask -> (B, N, N) mask of pairs of present nodes (diagonal included)."""
    return mask[:, :, None] * mask[:, None, :]


def adjacency_powers(adj: Tensor, c: int) -> Tensor:
    """``[A, A^2, ..., A^c]`` stacked as channels: (B, c, N, N)."""
    out, power = [adj], adj
    for _ in range(c - 1):
        power = power @ adj
        out.append(power)
    return torch.stack(out, dim=1)


class MLP(nn.Module):
    """``layers`` linear maps with an activation between them (none after the last)."""

    def __init__(self, layers: int, in_dim: int, hidden: int, out_dim: int, act: type[nn.Module] = nn.ELU) -> None:
        super().__init__()
        dims = [in_dim] + [hidden] * (layers - 1) + [out_dim]
        mods: list[nn.Module] = []
        for i, (a, b) in enumerate(itertools.pairwise(dims)):
            mods.append(nn.Linear(a, b))
            if i < layers - 1:
                mods.append(act())
        self.net = nn.Sequential(*mods)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def gcn_norm(adj: Tensor) -> Tensor:
    """``D^-1/2 A' D^-1/2`` with ``A'`` = ``adj`` with its diagonal set to 1 and degrees clamped
    at 1: the dense GCN propagation matrix GDSS uses (a noisy adjacency may have small or
    negative row sums). Works on (..., N, N)."""
    n = adj.shape[-1]
    eye = torch.eye(n, dtype=adj.dtype, device=adj.device)
    a = adj * (1 - eye) + eye
    d = a.sum(-1).clamp_min(1).rsqrt()
    return d[..., :, None] * a * d[..., None, :]


class DenseGCN(nn.Module):
    """Graph convolution on a dense weighted (here: noisy) adjacency (Kipf & Welling 2017):
    ``gcn_norm(A) X W + b``."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.lin = nn.Linear(in_dim, out_dim, bias=False)
        self.bias = nn.Parameter(torch.zeros(out_dim))

    def forward(self, x: Tensor, adj: Tensor) -> Tensor:
        return gcn_norm(adj) @ self.lin(x) + self.bias


class GMHLayer(nn.Module):
    """A GDSS attention layer over ``c_in`` adjacency channels.

    For every channel ``c``, queries, keys and values are GCNs of the node features over that
    channel (GDSS's ``Attention``); the attention map ``tanh(Q K^T / sqrt(out_dim))`` is
    averaged over ``heads`` and symmetrised. The values of all channels are mixed by an MLP
    (then tanh) into the new node features; the attention maps and input channels by another
    MLP into ``c_out`` new symmetric channels. The channels' GCNs are evaluated together: one
    weight tensor (c_in, in_dim, 2 attn_dim + out_dim) holds each channel's Q, K and V maps.
    """

    def __init__(self, num_linears: int, in_dim: int, attn_dim: int, out_dim: int, c_in: int, c_out: int,
                 heads: int) -> None:
        super().__init__()
        if attn_dim % heads:
            raise ValueError(f"attention dimension {attn_dim} is not a multiple of {heads} heads")
        width = 2 * attn_dim + out_dim
        bound = 1 / math.sqrt(in_dim)  # nn.Linear's default initialisation
        self.weight = nn.Parameter(torch.empty(c_in, in_dim, width).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.zeros(c_in, 1, width))
        self.attn_dim, self.out_dim, self.heads = attn_dim, out_dim, heads
        hidden = 2 * max(c_in, c_out)
        self.adj_mlp = MLP(num_linears, 2 * c_in, hidden, c_out)
        self.node_mlp = MLP(2, c_in * out_dim, hidden, out_dim)

    def forward(self, x: Tensor, adjc: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        b, c, n, _ = adjc.shape
        h = gcn_norm(adjc) @ torch.einsum("bni,cio->bcno", x, self.weight) + self.bias  # (B, C, N, W)
        q, k, v = h.split([self.attn_dim, self.attn_dim, self.out_dim], dim=-1)
        q = q.reshape(b, c, n, self.heads, -1).transpose(2, 3)
        k = k.reshape(b, c, n, self.heads, -1).transpose(2, 3)
        att = torch.tanh(q @ k.transpose(-1, -2) / math.sqrt(self.out_dim)).mean(2)  # (B, C, N, N)
        att = 0.5 * (att + att.transpose(-1, -2))
        values = v.permute(0, 2, 1, 3).reshape(b, n, c * self.out_dim)
        x_out = torch.tanh(self.node_mlp(values) * mask[..., None])
        a = self.adj_mlp(torch.cat([att, adjc], 1).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        a = (a + a.transpose(-1, -2)) * pair_mask(mask)[:, None]
        return x_out, a


def _gmh_stack(num_layers: int, num_linears: int, feat: int, nhid: int, adim: int, c_init: int, c_hid: int,
               c_final: int, heads: int) -> nn.ModuleList:
    layers = []
    for i in range(num_layers):
        c_in = c_init if i == 0 else c_hid
        c_out = c_final if i == num_layers - 1 else c_hid
        in_dim, attn = (feat, nhid) if i == 0 else (nhid, adim)
        layers.append(GMHLayer(num_linears, in_dim, attn, nhid, c_in, c_out, heads))
    return nn.ModuleList(layers)


# ---------------------------------------------------------------------------------------------
# the score networks
# ---------------------------------------------------------------------------------------------

class ScoreNetworkX(nn.Module):
    """Node-feature network: ``depth`` dense GCN layers (tanh), the input and every layer's
    output concatenated, an MLP read-out (3 layers, ELU), masked."""

    def __init__(self, feat: int, depth: int = 3, nhid: int = 32) -> None:
        super().__init__()
        self.layers = nn.ModuleList(DenseGCN(feat if i == 0 else nhid, nhid) for i in range(depth))
        fdim = feat + depth * nhid
        self.final = MLP(3, fdim, 2 * fdim, feat)

    def forward(self, x: Tensor, adj: Tensor, mask: Tensor) -> Tensor:
        hs = [x]
        for layer in self.layers:
            hs.append(torch.tanh(layer(hs[-1], adj)))
        return self.final(torch.cat(hs, -1)) * mask[..., None]


class ScoreNetworkXGMH(nn.Module):
    """Node-feature network with GMH attention layers instead of GCNs (GDSS's ``ScoreNetworkX_GMH``)."""

    def __init__(self, feat: int, depth: int = 2, nhid: int = 16, adim: int = 16, num_linears: int = 3,
                 c_init: int = 2, c_hid: int = 8, c_final: int = 4, heads: int = 4) -> None:
        super().__init__()
        self.c_init = c_init
        self.layers = _gmh_stack(depth, num_linears, feat, nhid, adim, c_init, c_hid, c_final, heads)
        fdim = feat + depth * nhid
        self.final = MLP(3, fdim, 2 * fdim, feat)

    def forward(self, x: Tensor, adj: Tensor, mask: Tensor) -> Tensor:
        adjc, hs = adjacency_powers(adj, self.c_init), [x]
        for layer in self.layers:
            h, adjc = layer(hs[-1], adjc, mask)
            hs.append(h)
        return self.final(torch.cat(hs, -1)) * mask[..., None]


class ScoreNetworkA(nn.Module):
    """Adjacency network: GMH layers over adjacency powers; the channels of the input and of
    every layer are read out by an MLP (3 layers, ELU) into a symmetric, zero-diagonal score."""

    def __init__(self, feat: int, nhid: int = 32, adim: int = 32, num_layers: int = 5, num_linears: int = 2,
                 c_init: int = 2, c_hid: int = 8, c_final: int = 4, heads: int = 4) -> None:
        super().__init__()
        self.c_init = c_init
        self.layers = _gmh_stack(num_layers, num_linears, feat, nhid, adim, c_init, c_hid, c_final, heads)
        fdim = c_init + c_hid * (num_layers - 1) + c_final
        self.final = MLP(3, fdim, 2 * fdim, 1)

    def forward(self, x: Tensor, adj: Tensor, mask: Tensor) -> Tensor:
        adjc = adjacency_powers(adj, self.c_init)
        chans, h = [adjc], x
        for layer in self.layers:
            h, adjc = layer(h, adjc, mask)
            chans.append(adjc)
        score = self.final(torch.cat(chans, 1).permute(0, 2, 3, 1)).squeeze(-1)
        score = 0.5 * (score + score.transpose(-1, -2))  # symmetric up to rounding already: make it exact
        n = adj.shape[-1]
        off = 1 - torch.eye(n, dtype=score.dtype, device=score.device)
        return score * off * pair_mask(mask)


class GDSSNet(nn.Module):
    """Both score networks behind polydiff's network interface:
    ``forward(state, t) -> {"x": score, "adj": score}``.

    A raw output becomes a score as in GDSS's ``get_score_fn``: ``-out / sigma(t)`` for a field
    whose schedule has ``alpha != 1`` (VP: the network predicts the noise) and ``out`` for a VE
    field. Arithmetic of that conversion is done in float64.
    """

    def __init__(self, x_net: nn.Module, adj_net: nn.Module, fields: Mapping[str, FieldSpec]) -> None:
        super().__init__()
        self.x_net, self.adj_net = x_net, adj_net
        self.schedules = {k: fields[k].process.schedule for k in ("x", "adj")}
        self.eps_like = {k: not _is_ve(s) for k, s in self.schedules.items()}

    def forward(self, state: Mapping[str, Tensor], t: Tensor, cond: Any = None) -> dict[str, Tensor]:
        x, adj, mask = state["x"], state["adj"], state["mask"].to(state["x"].dtype)
        raw = {"x": self.x_net(x, adj, mask), "adj": self.adj_net(x, adj, mask)}
        tt = t.reshape(-1).expand(x.shape[0]).to(torch.float64)
        out = {}
        for k, r in raw.items():
            if self.eps_like[k]:
                sigma = self.schedules[k].sigma(tt).reshape(-1, *([1] * (r.dim() - 1)))
                out[k] = (-r.double() / sigma).to(r.dtype)
            else:
                out[k] = r
        return out


def _is_ve(schedule: Any) -> bool:
    """Whether a schedule keeps ``alpha = 1`` (VE / EDM): GDSS's networks then output the score."""
    probe = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    return bool(torch.allclose(schedule.alpha(probe), torch.ones_like(probe)))


def gdss_network(info: Mapping[str, Any], fields: Mapping[str, FieldSpec], x_net: str = "gcn", depth: int = 3,
                 nhid: int = 32, adim: int = 32, num_layers: int = 5, num_linears: int = 2, c_init: int = 2,
                 c_hid: int = 8, c_final: int = 4, heads: int = 4, x_depth: int | None = None) -> nn.Module:
    """GDSS's two score networks (defaults: the community-small configuration).

    ``x_net``: ``gcn`` (ScoreNetworkX, ``depth`` GCN layers) or ``gmh`` (ScoreNetworkX_GMH,
    ``depth`` attention layers with the adjacency network's channel sizes). ``nhid`` / ``adim``
    are the hidden and attention sizes, ``num_layers`` the adjacency network's GMH layers,
    ``c_init`` the number of adjacency powers, ``c_hid`` / ``c_final`` its channel widths.
    """
    if set(fields) != {"x", "adj"} or fields["x"].kind != "gaussian":
        raise ValueError("the gdss network needs the Gaussian fields x and adj (process: {method: gdss})")
    feat = _feature_dim(info)
    depth = depth if x_depth is None else x_depth
    if x_net == "gcn":
        xn: nn.Module = ScoreNetworkX(feat, depth, nhid)
    elif x_net == "gmh":
        xn = ScoreNetworkXGMH(feat, depth, nhid, adim, num_linears, c_init, c_hid, c_final, heads)
    else:
        raise ValueError(f"unknown x_net {x_net!r}; allowed: gcn, gmh")
    an = ScoreNetworkA(feat, nhid, adim, num_layers, num_linears, c_init, c_hid, c_final, heads)
    return GDSSNet(xn, an, fields)


def _feature_dim(info: Mapping[str, Any]) -> int:
    if info.get("kind") == "molecule":
        return len(info["atom_types"])
    return int(info["max_feat_num"])


# ---------------------------------------------------------------------------------------------
# schedules and the S4 solver
# ---------------------------------------------------------------------------------------------

@dataclass(repr=False)
class UnitPriorVP(VPLinear):
    """GDSS's VP-SDE: polydiff's linear-beta VP schedule whose prior is drawn from N(0, I) at
    ``t = 1``, as GDSS samples it, although with ``beta_max = 1`` the forward marginal at
    ``t = 1`` still holds ``alpha(1) = exp(-(beta_min + beta_max) / 4) ~ 0.76`` of the data."""

    def prior_std(self) -> float:
        return 1.0


def _reverse_linear(x: Tensor, a_from: Tensor, s_from: Tensor, a_to: Tensor, s_to: Tensor) -> tuple[Tensor, Tensor]:
    """GDSS's ``transition`` with a negative time step, from noise level (a_from, s_from) back to
    (a_to, s_to): mean ``(a_to / a_from) x`` and the standard deviation of the forward
    transition between the two levels."""
    ratio = a_from / a_to
    var = (s_from**2 - (ratio * s_to) ** 2).clamp_min(0)
    return x / ratio, var.sqrt()


@register("s4", "GDSS's S4 solver: one score per step, a Langevin correction (snr, scale_eps) then a split "
          "predictor (reverse linear half step, score-drift Euler step, reverse linear half step); "
          "norm='sample' for per-sample Langevin norms (batch-independent samples)", stochastic=True, snr=0.1,
          scale_eps=1.0, norm="batch", denoise=True)
def s4(x: Tensor, d: Tensor, e: Tensor, ct: Coefs, cs: Coefs, hist: Any, ctx: StepContext) -> tuple[Tensor, object]:
    """One S4 step from ``t`` to ``s`` (Jo et al. 2022, Algorithm 2; GDSS ``solver.py``).

    With ``score = -eps / sigma_t`` evaluated once at ``(x, t)``:

    1. Langevin correction ``x += h score + sqrt(2 h) scale_eps z`` with
       ``h = 2 a (snr ||z|| / ||score||)^2`` per field, ``a = (alpha_t / alpha_s)^2`` (GDSS's
       ``1 - beta_i`` for VP, 1 for VE). The norms are batch means per field as in GDSS
       (``norm="batch"``, the default, as the core's ``pc``: a sample then depends on the batch it is drawn in), or
       per sample (``norm="sample"``: batch-independent, but a step size that depends on the
       sample's own score norm biases the Langevin chain where a field has few entries: on a
       16-dimensional Gaussian it inflates the final variance by ~20%);
    2. the linear part of the reverse SDE over half the step (mean ``alpha_u / alpha_t x``, noise
       of the forward transition between u and t, ``u`` the midpoint), an Euler step of the
       score drift ``g(t)^2 score`` over the whole step, then the other half step to ``s``.

    The last step returns the final mean without its noise (GDSS's noise removal) unless
    ``denoise=False``. One model evaluation per step.
    """
    o = ctx.options
    score = -e / ct.sigma
    f = ct.dalpha / ct.alpha
    g2 = 2 * ct.sigma * ct.dsigma - 2 * f * ct.sigma**2
    drift = g2 * score  # -g^2 score times dt < 0
    z = ctx.noise()
    zn, sn = ctx.field_norm(z), ctx.field_norm(score)
    if o["norm"] == "batch":
        zn, sn = zn.mean(0, keepdim=True), sn.mean(0, keepdim=True)
    elif o["norm"] != "sample":
        raise ValueError(f"s4: norm must be 'sample' or 'batch', got {o['norm']!r}")
    h = 2 * (ct.alpha / cs.alpha) ** 2 * (o["snr"] * zn / sn.clamp_min(1e-30)) ** 2
    x = x + h * score + torch.sqrt(2 * h) * o["scale_eps"] * z
    cu = ctx.coefs(0.5 * (ctx.t + ctx.s))
    mean, std = _reverse_linear(x, ct.alpha, ct.sigma, cu.alpha, cu.sigma)
    x = mean + std * ctx.noise()
    x = x + (ctx.t - ctx.s) * drift
    mean, std = _reverse_linear(x, cu.alpha, cu.sigma, cs.alpha, cs.sigma)
    if o["denoise"] and ctx.i == ctx.n - 1:
        return mean, hist
    return mean + std * ctx.noise(), hist
