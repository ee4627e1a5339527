"""PARD: permutation-invariant autoregressive diffusion for graphs (Zhao, Li et al., ICLR 2024).

A graph is cut into blocks by its structural partial order (:mod:`.order`); generation adds one
block at a time, and the conditional of a block -- the types of its nodes and of every edge
between its nodes and to earlier nodes -- is one discrete diffusion shared by all blocks,
conditioned on the earlier blocks (clean) and on the block's index and degree. A block-size
head predicts the next block's (size, degree), size 0 meaning stop.

**States.** :func:`block_bundle` turns a dataset's graphs into block-ordered states (nodes
sorted by block, ``N = max_nodes``, ``P = N (N - 1) / 2`` node pairs ``i < j`` in
``torch.triu_indices`` order):

- fields ``x`` (N,) atom tokens (molecules only) and ``e`` (P,) edge tokens (0 = none, 1..3
  bond orders, 1 = edge for generic graphs);
- the block-size target ``next`` (K + 1,): the class ``size * (D + 1) + degree`` of block ``k``
  given the blocks before it (class 0 after the last block = stop);
- fixed entries ``x_ctx`` / ``e_ctx`` (the same clean tokens, which the earlier blocks are read
  from), ``block`` (N,) block ids (-1 = padding), ``bdeg`` (N,) block degree per node, masks
  ``mask`` (N,), ``pair_mask`` (P,) and ``next_mask`` (K + 1,).

**Training all blocks in parallel** (PARD's 2n construction). :class:`PardNet` sees every node
twice: a *real* copy with its clean tokens and a *virtual* copy with the noisy ones. A causal
mask lets a virtual node of block ``k`` see the virtual nodes of block ``k`` and the real nodes
of blocks ``< k``, and a real node the real nodes of blocks ``<= k``; the edges of block ``k``
(among its nodes and to earlier ones) are read from the virtual pairs. One forward pass
therefore gives the denoising logits of every block under its own context, and the loss is
:func:`polydiff.losses.diffusion_loss` over the fields ``x`` and ``e`` (one time per graph,
PARD's ``blockwise_timestep: False``). The block-size head reads the real copies of blocks
``< k`` (a causal prefix pooling); its cross-entropy against ``next`` (over ``next_mask``) is
returned as the network output ``loss/next``, which the core's loss adds to the denoising loss
(a plugin loss term, weighted by ``loss.terms.next``, default 1).

**Generation** (:func:`generate_states`, called by ``GraphsModality.sample``): block by block, each block one
:func:`polydiff.sample` call on the fields of the new nodes and pairs only, the earlier blocks
being fixed entries of the state (the network then sees one copy per node: real for earlier
blocks, virtual for the new one, ``current`` = the block index).

Simplifications against PARD's code: the cross-entropy (x0) loss of polydiff's categorical
processes instead of PARD's VLB + 0.1 CE; the next block's size and degree predicted jointly as
one class by a head of the diffusion network (PARD's ``combine_training``) rather than a
separate network; LayerNorm instead of masked BatchNorm.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import networkx as nx
import numpy as np
import torch
from torch import Tensor, nn

from polydiff.plugin import (
    Absorbing,
    DataBundle,
    FieldSpec,
    Masked,
    Noise,
    TimeEmbedding,
    Uniform,
    sample,
    sample_categorical,
)

from ..chem import ATOM, BOND
from ..data import GraphStates
from .order import block_order

_SEED_STRIDE = 1_000_003  # polydiff's per-sample seeds: sample b of a request seeded s gets s * stride + b


# ---------------------------------------------------------------------------------------------
# data: block-ordered states
# ---------------------------------------------------------------------------------------------

def pair_index(n: int) -> Tensor:
    """(2, P) node pairs ``i < j`` of an n-node padding, ``torch.triu_indices`` order."""
    return torch.triu_indices(n, n, offset=1)


def block_states(graphs: Sequence[nx.Graph], orders: Sequence[tuple[list[list[int]], list[int]]], n_max: int,
                 k_max: int, d_max: int, atom_types: Sequence[str] | None) -> dict[str, Tensor]:
    """Block-ordered states of ``graphs`` with their :func:`block_order` ``orders`` (see the
    module doc) as batched tensors."""
    b, p = len(graphs), n_max * (n_max - 1) // 2
    pairs = pair_index(n_max)
    flat = {(int(i), int(j)): q for q, (i, j) in enumerate(pairs.t().tolist())}
    x = torch.zeros(b, n_max, dtype=torch.long)
    e = torch.zeros(b, p, dtype=torch.long)
    block = torch.full((b, n_max), -1, dtype=torch.long)
    bdeg = torch.zeros(b, n_max, dtype=torch.long)
    nxt = torch.zeros(b, k_max + 1, dtype=torch.long)
    next_mask = torch.zeros(b, k_max + 1)
    atom_index = {t: i for i, t in enumerate(atom_types or [])}
    for g_i, (g, (blocks, degrees)) in enumerate(zip(graphs, orders)):
        order = [v for blk in blocks for v in blk]
        ids = [k for k, blk in enumerate(blocks) for _ in blk]
        pos = {v: i for i, v in enumerate(order)}
        n = len(order)
        block[g_i, :n] = torch.tensor(ids, dtype=torch.long)
        bdeg[g_i, :n] = torch.tensor([degrees[k] for k in ids], dtype=torch.long)
        if atom_types is not None:
            x[g_i, :n] = torch.tensor([atom_index[g.nodes[v][ATOM]] for v in order], dtype=torch.long)
        for u, v, d in g.edges(data=True):
            if u != v:
                i, j = sorted((pos[u], pos[v]))
                e[g_i, flat[i, j]] = int(d.get(BOND, 1)) if atom_types is not None else 1
        sizes = np.bincount(ids, minlength=len(degrees)).tolist()
        for k, (s, deg) in enumerate(zip(sizes, degrees)):
            nxt[g_i, k] = s * (d_max + 1) + deg
        next_mask[g_i, : len(degrees) + 1] = 1.0
    mask = (block >= 0).float()
    pair_mask = mask[:, pairs[0]] * mask[:, pairs[1]]
    out = {"e": e, "e_ctx": e.clone(), "next": nxt, "block": block, "bdeg": bdeg, "mask": mask,
           "pair_mask": pair_mask, "next_mask": next_mask}
    if atom_types is not None:
        out.update(x=x, x_ctx=x.clone())
    return out


def block_bundle(bundle: DataBundle, max_hops: int) -> DataBundle:
    """A dataset's bundle with PARD's block-ordered states; ``info["order"]`` describes the blocks:
    ``max_hops``, ``max_blocks`` K, ``max_block_size`` S, ``max_block_degree`` D (over every
    split, so validation states fit too), the vocabularies and the mean number of blocks."""
    info = dict(bundle.info)
    molecule = info.get("kind") == "molecule"
    parts = {k: getattr(bundle, k) for k in ("train", "val", "test")}
    orders = {k: [block_order(g, max_hops) for g in ds.graphs] for k, ds in parts.items() if ds is not None}
    stats = [o for os_ in orders.values() for o in os_]
    k_max = max(len(b) for b, _ in stats)
    s_max = max(len(blk) for b, _ in stats for blk in b)
    d_max = max(d for _, ds in stats for d in ds)
    n_max = int(info["max_nodes"])
    atom_types = list(info["atom_types"]) if molecule else None
    train_blocks = [len(b) for b, _ in orders["train"]]
    info["order"] = {"max_hops": max_hops, "max_blocks": k_max, "max_block_size": s_max, "max_block_degree": d_max,
                     "next_vocab": (s_max + 1) * (d_max + 1), "edge_vocab": 4 if molecule else 2,
                     "node_vocab": len(atom_types) if molecule else 0,
                     "blocks_mean": float(np.mean(train_blocks)), "blocks_max_train": int(max(train_blocks))}
    new = {k: GraphStates(ds.graphs, block_states(ds.graphs, orders[k], n_max, k_max, d_max, atom_types))
           if ds is not None else None for k, ds in parts.items()}
    return DataBundle(new["train"], new["val"], new["test"], info, bundle.collate)


# ---------------------------------------------------------------------------------------------
# fields
# ---------------------------------------------------------------------------------------------

def pard_fields(info: Mapping[str, Any], noise: str = "uniform", mask_schedule: str = "cosine") -> dict[str, FieldSpec]:
    """Categorical fields: node tokens ``x`` (molecules) and edge tokens ``e`` with ``noise``
    ``uniform`` (PARD's QM9 setting) or ``absorbing`` (the block-size classifier is a loss term
    of the network, not a field)."""
    if noise not in ("uniform", "absorbing"):
        raise ValueError(f"noise must be 'uniform' or 'absorbing', got {noise!r}")
    order = info["order"]
    proc = Uniform if noise == "uniform" else Absorbing
    fields = {"e": FieldSpec(proc(order["edge_vocab"], mask_schedule), Masked("pair_mask"))}
    if order["node_vocab"]:
        fields = {"x": FieldSpec(proc(order["node_vocab"], mask_schedule), Masked("mask")), **fields}
    return fields


# ---------------------------------------------------------------------------------------------
# the network
# ---------------------------------------------------------------------------------------------

def causal_mask(block: Tensor, virtual: Tensor, valid: Tensor) -> Tensor:
    """PARD's asymmetric causal block mask (B, M, M) over node copies: ``C[c, d]`` when ``c``
    may read ``d``, i.e. both are present and either they share block and kind (real /
    virtual), or ``d`` is a real copy of an earlier block."""
    bc, bd = block[:, :, None], block[:, None, :]
    vc, vd = virtual[:, :, None], virtual[:, None, :]
    both = valid[:, :, None] & valid[:, None, :]
    return both & (((bc == bd) & (vc == vd)) | ((bc > bd) & ~vd))


class PardLayer(nn.Module):
    """One layer of the higher-order graph transformer: node attention biased by the pair
    features under the causal mask, then a PPGN update of the pair features whose middle index
    ``l`` is restricted to copies visible to either end (PARD's causal matmul), each with a
    pre-norm residual feed-forward block."""

    def __init__(self, hidden: int, edge_hidden: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.n1, self.n2 = nn.LayerNorm(hidden), nn.LayerNorm(hidden)
        self.e1, self.e2 = nn.LayerNorm(edge_hidden), nn.LayerNorm(edge_hidden)
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.bias = nn.Linear(edge_hidden, heads)
        self.edge_value = nn.Linear(edge_hidden, hidden)
        self.out = nn.Linear(hidden, hidden)
        self.node_ff = nn.Sequential(nn.Linear(hidden, 2 * hidden), nn.SiLU(), nn.Linear(2 * hidden, hidden))
        self.m1, self.m2 = nn.Linear(edge_hidden, edge_hidden), nn.Linear(edge_hidden, edge_hidden)
        self.pair = nn.Linear(hidden, 2 * edge_hidden)
        self.edge_out = nn.Linear(edge_hidden, edge_hidden)
        self.edge_ff = nn.Sequential(nn.Linear(edge_hidden, 2 * edge_hidden), nn.SiLU(),
                                     nn.Linear(2 * edge_hidden, edge_hidden))

    def forward(self, h: Tensor, z: Tensor, causal: Tensor, pairs: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
        b, m, d = h.shape
        # node attention: c reads the d with causal[c, d]
        q, k, v = self.qkv(self.n1(h)).view(b, m, 3, self.heads, d // self.heads).unbind(2)
        zn = self.e1(z)
        logits = torch.einsum("bchx,bdhx->bhcd", q, k) / math.sqrt(d // self.heads)
        logits = logits + self.bias(zn).permute(0, 3, 1, 2)
        hidden = torch.finfo(logits.dtype).min  # -1e9 overflows float16
        att = torch.softmax(logits.masked_fill(~causal[:, None], hidden), dim=-1) * causal[:, None]
        msg = torch.einsum("bhcd,bdhx->bchx", att, v).reshape(b, m, d)
        edge_msg = att.mean(1).reshape(b * m, 1, m) @ self.edge_value(zn).reshape(b * m, m, d)  # sum_d att z_cd
        h = h + self.out(msg + edge_msg.reshape(b, m, d)) * valid[..., None]
        h = h + self.node_ff(self.n2(h)) * valid[..., None]
        # PPGN on the pairs, the middle index l restricted to copies visible to c or to d:
        # sum_l [C_cl or C_dl] a_cl b_ld = (a b)_cd - sum_l (1 - C_cl)(1 - C_dl) a_cl b_ld
        hidden = (~causal).to(z.dtype)
        pm = pairs.to(z.dtype)[..., None]
        a, bb = (torch.cat([self.m1(zn), self.m2(zn)], -1) * pm).permute(0, 3, 1, 2).chunk(2, dim=1)
        prod = a @ bb - (a * hidden[:, None]) @ (bb * hidden.transpose(1, 2)[:, None])
        cm = causal.to(z.dtype)
        deg = cm.sum(-1)
        count = (deg[:, :, None] + deg[:, None, :] - cm @ cm.transpose(1, 2)).clamp_min(1)  # |{l: C_cl or C_dl}|
        prod = prod.permute(0, 2, 3, 1) / count[..., None].sqrt()
        hp, hq = self.pair(h).chunk(2, dim=-1)
        z = z + (self.edge_out(prod) + hp[:, :, None] + hq[:, None, :]) * pm
        z = z + self.edge_ff(self.e2(z)) * pm
        return h, z


class PardNet(nn.Module):
    """PARD's denoiser and block-size model: ``forward(state, t) -> {"x", "e", "next": logits}``,
    plus ``"loss/next"``, the block-size cross-entropy, when the state carries the targets
    ``next`` / ``next_mask`` (training).

    Without ``state["current"]`` (training) every node has a real and a virtual copy (the 2n
    construction) and the logits of every block come out of one pass; with ``current`` (B,)
    (generation) nodes of earlier blocks are real, nodes of block ``current`` virtual, later ones
    absent. Permutation equivariant: nothing depends on the order of the nodes, only on their
    block ids.
    """

    def __init__(self, info: Mapping[str, Any], fields: Mapping[str, FieldSpec], hidden: int = 64,
                 edge_hidden: int = 32, layers: int = 4, heads: int = 4) -> None:
        super().__init__()
        if hidden % heads:
            raise ValueError(f"hidden ({hidden}) must be a multiple of heads ({heads})")
        order = info["order"]
        self.fields = dict(fields)
        self.n_max, self.k_max = int(info["max_nodes"]), int(order["max_blocks"])
        self.d_max, self.s_max = int(order["max_block_degree"]), int(order["max_block_size"])
        self.edge_vocab, self.node_vocab = int(order["edge_vocab"]), int(order["node_vocab"])
        self.register_buffer("pairs", pair_index(self.n_max), persistent=False)
        e_states = fields["e"].process.n_states
        self.edge_tokens = nn.Embedding(e_states + 1, edge_hidden)  # + the diagonal
        self.relation = nn.Embedding(12, edge_hidden)  # (earlier / same / later block) x (real, virtual) pairs
        self.node_tokens = nn.Embedding(fields["x"].process.n_states, hidden) if "x" in fields else None
        self.block_emb = nn.Embedding(self.k_max + 1, hidden)
        self.degree_emb = nn.Embedding(self.d_max + 1, hidden)
        self.kind_emb = nn.Embedding(2, hidden)
        self.time = TimeEmbedding(hidden)
        self.layers = nn.ModuleList(PardLayer(hidden, edge_hidden, heads) for _ in range(layers))
        self.node_head = nn.Sequential(nn.LayerNorm(hidden), nn.Linear(hidden, hidden), nn.SiLU(),
                                       nn.Linear(hidden, self.node_vocab)) if self.node_vocab else None
        self.edge_head = nn.Sequential(nn.LayerNorm(edge_hidden), nn.Linear(edge_hidden, edge_hidden), nn.SiLU(),
                                       nn.Linear(edge_hidden, self.edge_vocab))
        self.prefix_emb = nn.Embedding(self.k_max + 1, hidden)
        self.next_head = nn.Sequential(nn.LayerNorm(2 * hidden), nn.Linear(2 * hidden, 2 * hidden), nn.SiLU(),
                                       nn.Linear(2 * hidden, int(order["next_vocab"])))

    # -- the two layouts --
    def _copies(self, state: Mapping[str, Tensor]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Node index, virtual flag and presence of every copy, and the copy of each node that
        carries its targets: (B, M) x 3 and (B, N)."""
        block = state["block"]
        b, n = block.shape
        ar = torch.arange(n, device=block.device).expand(b, n)
        if "current" not in state:
            node = torch.cat([ar, ar], 1)
            virtual = torch.cat([torch.zeros_like(block, dtype=torch.bool),
                                 torch.ones_like(block, dtype=torch.bool)], 1)
            valid = (block >= 0).repeat(1, 2)
            return node, virtual, valid, ar + n
        cur = state["current"].reshape(-1, 1)
        return ar, block == cur, (block >= 0) & (block <= cur), ar

    def forward(self, state: Mapping[str, Tensor], t: Tensor, cond: Any = None) -> dict[str, Tensor]:
        if "block" not in state:
            raise ValueError("PARD generates block by block: sample it with Generator.generate / `polydiff sample "
                             "CKPT` (they call GraphsModality.sample), not with one polydiff.sample loop")
        block = state["block"]
        b, n = block.shape
        node, virtual, valid, target = self._copies(state)
        blk = block.gather(1, node)
        causal = causal_mask(blk, virtual, valid)
        pairs = causal | causal.transpose(1, 2)
        # node features
        h = self.block_emb(blk.clamp(0, self.k_max)) + self.kind_emb(virtual.long())
        h = h + self.degree_emb(state["bdeg"].gather(1, node).clamp(0, self.d_max))
        if self.node_tokens is not None:
            tok = torch.where(virtual, state["x"].gather(1, node), state["x_ctx"].gather(1, node))
            h = h + self.node_tokens(tok)
        tt = t.reshape(-1).expand(b).to(torch.float32)
        h = (h + self.time(tt)[:, None] * virtual[..., None]) * valid[..., None]
        # pair features: noisy tokens where a virtual copy is involved, clean ones between real copies
        e_noisy, e_clean = self._dense(state["e"], n), self._dense(state["e_ctx"], n)
        nc, nd = node[:, :, None].expand(b, -1, node.shape[1]), node[:, None, :].expand(b, node.shape[1], -1)
        noisy = virtual[:, :, None] | virtual[:, None, :]
        tokens = torch.where(noisy, _take2(e_noisy, nc, nd), _take2(e_clean, nc, nd))
        tokens = torch.where(nc == nd, torch.full_like(tokens, self.edge_tokens.num_embeddings - 1), tokens)
        rel = torch.sign(blk[:, :, None] - blk[:, None, :]) + 1 + 3 * (virtual[:, :, None].long() * 2
                                                                         + virtual[:, None, :].long())
        z = (self.edge_tokens(tokens) + self.relation(rel)) * pairs[..., None]
        for layer in self.layers:
            h, z = layer(h, z, causal, pairs, valid)
        out = {"e": self._edge_logits(z, block, target), "next": self._next_logits(h, blk, virtual, valid)}
        if "next" in state and "next_mask" in state:  # training: the block-size classifier's loss term
            nll = nn.functional.cross_entropy(out["next"].float().transpose(1, 2), state["next"].long(),
                                              reduction="none")
            w = state["next_mask"].to(nll.dtype)
            out["loss/next"] = (nll * w).sum(1) / w.sum(1).clamp_min(1)
        if self.node_head is not None:
            out["x"] = self.node_head(h.gather(1, target[..., None].expand(-1, -1, h.shape[-1])))
        return out

    def _dense(self, tokens: Tensor, n: int) -> Tensor:
        """(B, P) pair tokens -> symmetric (B, N, N)."""
        out = tokens.new_zeros(tokens.shape[0], n, n)
        out[:, self.pairs[0], self.pairs[1]] = tokens
        return out + out.transpose(1, 2)

    def _edge_logits(self, z: Tensor, block: Tensor, target: Tensor) -> Tensor:
        """Logits of every pair i < j, read from the copies that carry it: the virtual copies of
        both ends in one block, else the virtual copy of the later end and the real copy of the
        earlier one (in the 2n layout the real copy of node j is copy j)."""
        i, j = self.pairs
        bi, bj = block[:, i], block[:, j]
        vi, vj = target[:, i], target[:, j]
        ri, rj = i.expand_as(vi), j.expand_as(vj)
        a = torch.where(bi >= bj, vi, vj)
        c = torch.where(bi == bj, vj, torch.where(bi > bj, rj, ri))
        zz = _take2(z, a, c) + _take2(z, c, a)
        return self.edge_head(zz)

    def _next_logits(self, h: Tensor, blk: Tensor, virtual: Tensor, valid: Tensor) -> Tensor:
        """(B, K + 1, V): the class of block k from the mean of the real copies of blocks < k."""
        real = (valid & ~virtual).to(h.dtype)
        onehot = nn.functional.one_hot(blk.clamp(0, self.k_max), self.k_max + 1).to(h.dtype) * real[..., None]
        sums = torch.cumsum(onehot.transpose(1, 2) @ h, dim=1)  # blocks <= k
        counts = torch.cumsum(onehot.sum(1), dim=1)
        sums = torch.cat([torch.zeros_like(sums[:, :1]), sums[:, :-1]], 1)  # blocks < k
        counts = torch.cat([torch.zeros_like(counts[:, :1]), counts[:, :-1]], 1)
        pooled = sums / counts.clamp_min(1)[..., None]
        ks = torch.arange(self.k_max + 1, device=h.device).expand(h.shape[0], -1)
        return self.next_head(torch.cat([pooled, self.prefix_emb(ks)], -1))

def _take2(x: Tensor, i: Tensor, j: Tensor) -> Tensor:
    """``x[b, i[b, ...], j[b, ...]]`` for x (B, N, N, ...) and index tensors (B, ...)."""
    b = torch.arange(x.shape[0], device=x.device).reshape(-1, *([1] * (i.dim() - 1)))
    return x[b, i, j]


def pard_network(info: Mapping[str, Any], fields: Mapping[str, FieldSpec], hidden: int = 64, edge_hidden: int = 32,
                 layers: int = 4, heads: int = 4) -> nn.Module:
    """PARD's network: ``layers`` higher-order transformer layers (node attention + causal PPGN)
    with node width ``hidden`` and pair width ``edge_hidden`` (PARD QM9: 256 / 64, 8 layers)."""
    if "order" not in info:
        raise ValueError("the pard network needs block-ordered data: set data.max_hops (e.g. 1)")
    if set(fields) - {"x", "e"} or "e" not in fields:
        raise ValueError("the pard network needs PARD's categorical fields (e, and x for molecules)")
    return PardNet(info, fields, hidden, edge_hidden, layers, heads)


# ---------------------------------------------------------------------------------------------
# generation: one polydiff.sample per block
# ---------------------------------------------------------------------------------------------

def _draw(logits: Tensor, noise: Noise) -> Tensor:
    """One class per row of (B, V) logits, by polydiff's float64 inverse-CDF draw."""
    probs = torch.softmax(logits.double(), -1)
    return sample_categorical(probs, noise.rand(()).to(logits.device))


@torch.no_grad()
def generate_states(net: PardNet, n: int, *, steps: int = 40, seed: int | Tensor = 0, categorical: str = "ancestral",
                    device: str | torch.device | None = None, **options: Any) -> dict[str, Tensor]:
    """Generate ``n`` graphs with PARD; returns dense states ``{"x", "adj", "mask"}`` (as GDSS's,
    so :meth:`GraphsModality.to_native` reads them) plus ``"blocks"`` (n,) and ``"nfe"`` (n,).

    Block ``k`` of every graph: the block-size head draws (size, degree) from the graph so far;
    the new nodes' and pairs' tokens are generated by :func:`polydiff.sample` with ``steps``
    steps of the ``categorical`` sampler from the process's prior, the network reading the
    earlier blocks from fixed state entries; size 0, a full graph or the last block id stops.
    ``seed`` is an int (sample b gets ``seed * 1_000_003 + b``, as in polydiff) or (n,) seeds;
    each graph's draws depend on its own seed only.
    """
    dev = torch.device(device) if device is not None else next(net.parameters()).device
    seeds = torch.as_tensor(seed, dtype=torch.long)
    if seeds.dim() == 0:
        seeds = seeds * _SEED_STRIDE + torch.arange(n, dtype=torch.long)
    seeds = seeds.to(dev)
    big_n, d1 = net.n_max, net.d_max + 1
    pairs = net.pairs.to(dev)
    p_all = pairs.shape[1]
    x_ctx = torch.zeros(n, big_n, dtype=torch.long, device=dev)
    e_ctx = torch.zeros(n, p_all, dtype=torch.long, device=dev)
    block = torch.full((n, big_n), -1, dtype=torch.long, device=dev)
    bdeg = torch.zeros(n, big_n, dtype=torch.long, device=dev)
    count = torch.zeros(n, dtype=torch.long, device=dev)
    nfe = torch.zeros(n, dtype=torch.long, device=dev)
    alive = torch.ones(n, dtype=torch.bool, device=dev)
    draws = Noise(n, seed=seeds, device=dev)
    ar = torch.arange(big_n, device=dev)
    fields = {k: f for k, f in net.fields.items() if k in ("x", "e")}

    def context(cur: int) -> dict[str, Tensor]:
        return {"x": x_ctx, "x_ctx": x_ctx, "e": e_ctx, "e_ctx": e_ctx, "block": block, "bdeg": bdeg,
                "current": torch.full((n,), cur, dtype=torch.long, device=dev)}

    t_last = torch.zeros(n, device=dev)
    for k in range(net.k_max + 1):
        # the next block's (size, degree) given blocks < k (all real now)
        cls = _draw(net(context(net.k_max + 1), t_last)["next"][:, k], draws)
        nfe += alive.long()
        size = torch.where(alive, cls // d1, torch.zeros_like(cls)).clamp(max=big_n - count)
        alive = alive & (size > 0) & (k < net.k_max)
        size = torch.where(alive, size, torch.zeros_like(size))
        if not bool(alive.any()):
            break
        new = (ar >= count[:, None]) & (ar < (count + size)[:, None])
        block = torch.where(new, torch.full_like(block, k), block)
        bdeg = torch.where(new, (cls % d1)[:, None].expand_as(bdeg), bdeg)
        # the new node and pair slots, in index order, padded to the batch maximum
        node_slots, node_mask = _slots(new)
        pair_new = new[:, pairs[1]]  # pairs i < j whose later end j is new
        pair_slots, pair_mask = _slots(pair_new)
        spec: dict[str, Any] = {"e": (n, pair_slots.shape[1]), "e_slot_mask": pair_mask.float()}
        block_fields = {"e": FieldSpec(fields["e"].process, Masked("e_slot_mask"))}
        if "x" in fields:
            spec.update(x=(n, node_slots.shape[1]), x_slot_mask=node_mask.float())
            block_fields["x"] = FieldSpec(fields["x"].process, Masked("x_slot_mask"))
        block_model = _block_model(net, context(k), node_slots, node_mask, pair_slots, pair_mask)
        final = sample(block_model, block_fields, spec, steps=steps, sampler=categorical,
                       seed=seeds * 4099 + k + 1, device=dev, **options)
        e_ctx = _scatter(e_ctx, pair_slots, pair_mask, final["e"])
        if "x" in final:
            x_ctx = _scatter(x_ctx, node_slots, node_mask, final["x"])
        nfe += steps * alive.long()
        count = count + size
    mask = (ar[None, :] < count[:, None]).float()
    adj = torch.zeros(n, big_n, big_n, device=dev)
    adj[:, pairs[0], pairs[1]] = e_ctx.float()
    adj = adj + adj.transpose(1, 2)
    nv = max(net.node_vocab, 1)
    x = nn.functional.one_hot(x_ctx, nv).float() * mask[..., None]
    return {"x": x, "adj": adj, "mask": mask, "blocks": block.amax(1) + 1, "nfe": nfe}


def _block_model(net: PardNet, base: dict[str, Tensor], node_slots: Tensor, node_mask: Tensor, pair_slots: Tensor,
                 pair_mask: Tensor) -> Any:
    """The state-level model of one block's sampling loop: the new tokens are written into the
    graph so far (``base``), the network runs on it with ``current`` = the block, and the logits
    of the new slots are returned."""

    def model(st: Mapping[str, Tensor], t: Tensor) -> dict[str, Tensor]:
        full = dict(base)
        full["e"] = _scatter(base["e_ctx"], pair_slots, pair_mask, st["e"])
        if "x" in st:
            full["x"] = _scatter(base["x_ctx"], node_slots, node_mask, st["x"])
        out = net(full, t)
        res = {"e": _gather(out["e"], pair_slots)}
        if "x" in st:
            res["x"] = _gather(out["x"], node_slots)
        return res

    return model


def _slots(select: Tensor) -> tuple[Tensor, Tensor]:
    """Indices of the True entries of each row (in order), padded to the batch maximum, and the
    padding mask: (B, L) x 2."""
    counts = select.sum(1)
    width = max(int(counts.max()), 1)
    order = torch.argsort((~select).to(torch.int8), dim=1, stable=True)[:, :width]
    return order, torch.arange(width, device=select.device)[None, :] < counts[:, None]


def _scatter(base: Tensor, slots: Tensor, mask: Tensor, values: Tensor) -> Tensor:
    """``base`` with ``values`` written at ``slots`` where ``mask`` (padding slots left alone)."""
    out = torch.cat([base, base.new_zeros(base.shape[0], 1)], 1)
    idx = torch.where(mask, slots, torch.full_like(slots, base.shape[1]))
    out.scatter_(1, idx, values.to(base.dtype))
    return out[:, :-1]


def _gather(x: Tensor, slots: Tensor) -> Tensor:
    return x.gather(1, slots[..., None].expand(-1, -1, x.shape[-1]))
