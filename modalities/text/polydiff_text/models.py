"""Networks of the text modality: a masked diffusion LM and an autoregressive LM of the same size.

Both are built on :class:`Transformer`: a token embedding with ``V + 1`` entries, pre-norm
blocks (LayerNorm, multi-head self-attention through
:func:`torch.nn.functional.scaled_dot_product_attention` with rotary position embeddings on the
queries and keys, a GELU MLP), a final norm and a head to ``V`` logits. It runs on a CPU and needs
no flash-attention. The extra embedding entry (id ``V``) is the mask token for the diffusion model
and the start-of-sequence token for the autoregressive one, so the two models with the same
options have exactly the same number of parameters (plus the time embedding when the diffusion
model is time-conditioned): benchmarks compare them at equal parameters
(:func:`count_parameters`).

- :class:`MaskedDiffusionLM` (MDLM-style, Sahoo et al. 2024): bidirectional, padding masked out
  of the attention keys, SUBS outputs (log-probabilities over the ``V`` clean tokens, no output
  for the mask token, unmasked tokens carried over). ``forward(state, t) -> {"tokens": (B, L, V)}``
  as the core's loss, ELBO and samplers call it.
- :class:`ARLM`: causal, ``forward(tokens) -> next-token logits``, exact ``nll`` / ``log_likelihood``
  and ancestral ``generate`` with a KV cache; trained by the ``autoregressive`` objective
  registered here in the core's :data:`~polydiff.plugin.OBJECTIVES`, so ``polydiff train`` trains
  the baseline with the same trainer (recipe: ``loss.objective: autoregressive``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from polydiff.plugin import OBJECTIVES, FieldSpec, TimeEmbedding, sample_categorical

__all__ = ["ARLM", "NEG", "AutoregressiveObjective", "MaskedDiffusionLM", "Rotary", "Transformer", "apply_rotary",
           "autoregressive", "count_parameters", "rotary_angles", "token_nll"]

NEG = -1e4
"""The logit of an impossible token in SUBS outputs: finite (no NaN in any arithmetic, and
representable in float16) yet ``exp(NEG)`` is 0 in float32 and float64, so a carried-over
token has probability 1 to the last bit."""

KVCache = list[dict[str, Tensor]]


# ---------------------------------------------------------------------------------------------
# rotary position embeddings
# ---------------------------------------------------------------------------------------------

def rotary_angles(positions: Tensor, head_dim: int, base: float = 10_000.0) -> tuple[Tensor, Tensor]:
    """``cos`` and ``sin`` (..., head_dim // 2) of the rotary angles ``p * base**(-2 i / head_dim)``
    of positions ``p`` (...): one frequency per pair of channels (Su et al., RoFormer).

    The angles are computed in float64 (positions of long sequences times the fastest frequency
    lose precision in float32) and returned in float32."""
    if head_dim % 2:
        raise ValueError(f"rotary embeddings need an even head dimension, got {head_dim}")
    inv = base ** (-torch.arange(0, head_dim // 2, dtype=torch.float64, device=positions.device) * 2 / head_dim)
    ang = positions.to(torch.float64)[..., None] * inv
    return ang.cos().float(), ang.sin().float()


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate channel pairs ``(x_i, x_{i + d/2})`` of ``x`` (..., L, d) by the angles whose
    ``cos`` / ``sin`` (L, d/2) :func:`rotary_angles` gives.

    A rotation by ``m theta`` of the query at position ``m`` and by ``n theta`` of the key at
    ``n`` makes their dot product depend on ``n - m`` only: attention sees relative positions."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class Rotary(nn.Module):
    """Cached rotary tables for positions ``0 .. length - 1``, extended on demand for longer
    sequences (block generation beyond the training length). The tables are not saved with the
    weights (non-persistent buffers), so they add no parameters and no checkpoint entries."""

    def __init__(self, head_dim: int, length: int, base: float = 10_000.0) -> None:
        super().__init__()
        self.head_dim, self.base = head_dim, base
        cos, sin = rotary_angles(torch.arange(max(int(length), 1)), head_dim, base)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    def forward(self, start: int, n: int) -> tuple[Tensor, Tensor]:
        """``cos``, ``sin`` (n, head_dim // 2) of positions ``start .. start + n - 1``."""
        if start + n <= self.cos.shape[0]:
            return self.cos[start:start + n], self.sin[start:start + n]
        return rotary_angles(torch.arange(start, start + n, device=self.cos.device), self.head_dim, self.base)


# ---------------------------------------------------------------------------------------------
# the backbone
# ---------------------------------------------------------------------------------------------

def _attention_mask(keys: Tensor | None, causal: bool, n_q: int, n_k: int, device: torch.device
                    ) -> tuple[Tensor | None, bool]:
    """The ``attn_mask`` / ``is_causal`` pair for SDPA: ``keys`` (B, n_k) bool marks the keys that
    may be attended to; ``causal`` lets query ``i`` (the last ``n_q`` of ``n_k`` positions) see
    keys ``<= i``. SDPA's own causal flag is used when it is the whole mask."""
    if causal and keys is None:
        if n_q == n_k:
            return None, True
        if n_q == 1:  # one new token after a cache: every key is in its past
            return None, False
    mask = None if keys is None else keys[:, None, None, :]
    if causal:
        tri = torch.ones(n_q, n_k, dtype=torch.bool, device=device).tril(n_k - n_q)
        mask = tri if mask is None else mask & tri
    return mask, False


class Attention(nn.Module):
    """Multi-head self-attention with rotary queries and keys, on SDPA (any backend, CPU included)."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim ({dim}) must be a multiple of heads ({heads})")
        self.heads, self.head_dim, self.dropout = heads, dim // heads, dropout
        if self.head_dim % 2:
            raise ValueError(f"rotary embeddings need an even head dimension, got dim / heads = {self.head_dim}")
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)

    def forward(self, h: Tensor, cos: Tensor, sin: Tensor, keys: Tensor | None, causal: bool,
                cache: dict[str, Tensor] | None = None) -> Tensor:
        B, L, D = h.shape
        q, k, v = self.qkv(h).reshape(B, L, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if cache is not None:
            if "k" in cache:
                k, v = torch.cat([cache["k"], k], dim=2), torch.cat([cache["v"], v], dim=2)
            cache["k"], cache["v"] = k, v
        mask, is_causal = _attention_mask(keys, causal, L, k.shape[2], h.device)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(B, L, D))


class Block(nn.Module):
    """Pre-norm transformer block ``h + attn(norm(h))``, ``h + mlp(norm(h))``; with a condition
    embedding, each norm's output is modulated ``* (1 + scale) + shift`` (adaLN, zero-initialised
    so a conditioned block starts as the unconditioned one)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4, dropout: float = 0.0,
                 cond_dim: int | None = None) -> None:
        super().__init__()
        hidden = round(mlp_ratio * dim)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, dropout)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.drop = nn.Dropout(dropout)
        self.ada = None
        if cond_dim is not None:
            self.ada = nn.Sequential(nn.SiLU(), nn.Linear(cond_dim, 4 * dim))
            nn.init.zeros_(self.ada[1].weight)
            nn.init.zeros_(self.ada[1].bias)

    def forward(self, h: Tensor, cos: Tensor, sin: Tensor, keys: Tensor | None, causal: bool,
                cond: Tensor | None = None, cache: dict[str, Tensor] | None = None) -> Tensor:
        a, m = self.norm1, self.norm2
        if self.ada is None or cond is None:
            h = h + self.drop(self.attn(a(h), cos, sin, keys, causal, cache))
            return h + self.drop(self.mlp(m(h)))
        shift1, scale1, shift2, scale2 = self.ada(cond)[:, None].chunk(4, dim=-1)
        h = h + self.drop(self.attn(a(h) * (1 + scale1) + shift1, cos, sin, keys, causal, cache))
        return h + self.drop(self.mlp(m(h) * (1 + scale2) + shift2))


class Transformer(nn.Module):
    """Token transformer: embedding (``vocab_size + 1`` entries: the extra id ``vocab_size`` is the
    mask or start token), ``depth`` pre-norm blocks with rotary attention, final LayerNorm and a
    linear head to ``vocab_size`` logits.

    ``forward(tokens, valid=None, causal=False, cond=None, cache=None) -> logits (B, L, V)``:
    ``valid`` (B, L) bool marks the keys attention may use (padding False); ``causal`` makes
    position ``i`` see positions ``<= i`` only; ``cond`` (B, cond_dim) drives the adaLN
    modulation (needs ``cond_dim``); ``cache`` (a list with one dict per block, from
    :meth:`new_cache`) keeps keys and values between calls for incremental causal decoding, the
    positions of the new tokens continuing after the cached ones. ``length`` sizes the rotary
    tables only: longer sequences work.
    """

    def __init__(self, vocab_size: int, length: int, dim: int = 128, depth: int = 4, heads: int = 4,
                 mlp_ratio: float = 4, dropout: float = 0.0, cond_dim: int | None = None) -> None:
        super().__init__()
        if vocab_size < 1 or length < 1 or dim < 1 or depth < 1 or heads < 1:
            raise ValueError(f"need positive vocab_size, length, dim, depth and heads; got {vocab_size}, {length}, "
                             f"{dim}, {depth}, {heads}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.vocab_size, self.length, self.dim, self.depth = vocab_size, length, dim, depth
        self.embed = nn.Embedding(vocab_size + 1, dim)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio, dropout, cond_dim) for _ in range(depth))
        self.rotary = Rotary(dim // heads, length)
        self.norm = nn.LayerNorm(dim)
        self.final_ada = None
        if cond_dim is not None:
            self.final_ada = nn.Sequential(nn.SiLU(), nn.Linear(cond_dim, 2 * dim))
        self.head = nn.Linear(dim, vocab_size)
        self._init_weights()

    def _init_weights(self) -> None:
        """GPT-2 style: N(0, 0.02) weights, zero biases, residual output projections scaled by
        ``1 / sqrt(2 depth)`` so the residual stream's variance does not grow with depth; the
        adaLN layers stay zero (identity modulation at the start)."""
        for name, p in self.named_parameters():
            if "ada" in name or "norm" in name:
                continue
            if p.dim() >= 2:
                std = 0.02 / math.sqrt(2 * self.depth) if name.endswith(("attn.out.weight", "mlp.2.weight")) else 0.02
                nn.init.normal_(p, std=std)
            else:
                nn.init.zeros_(p)
        if self.final_ada is not None:
            nn.init.zeros_(self.final_ada[1].weight)
            nn.init.zeros_(self.final_ada[1].bias)

    def new_cache(self) -> KVCache:
        """An empty key/value cache for incremental decoding (one dict per block)."""
        return [{} for _ in self.blocks]

    def forward(self, tokens: Tensor, valid: Tensor | None = None, causal: bool = False, cond: Tensor | None = None,
                cache: KVCache | None = None) -> Tensor:
        start = 0 if not cache or "k" not in cache[0] else int(cache[0]["k"].shape[2])
        keys = valid
        if keys is not None:
            keys = keys.to(tokens.device)
            keys = keys.bool() if keys.dtype == torch.bool else keys > 0
            # a row with no valid key would give SDPA nothing to normalise over (NaN): let it see all
            keys = keys | ~keys.any(dim=1, keepdim=True)
            if cache is not None and start > 0:
                raise ValueError("a key-padding mask cannot be combined with a non-empty cache")
        cos, sin = self.rotary(start, tokens.shape[1])
        h = self.drop(self.embed(tokens))
        for i, block in enumerate(self.blocks):
            h = block(h, cos, sin, keys, causal, cond, None if cache is None else cache[i])
        h = self.norm(h)
        if self.final_ada is not None and cond is not None:
            shift, scale = self.final_ada(cond)[:, None].chunk(2, dim=-1)
            h = h * (1 + scale) + shift
        return self.head(h)


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters of ``module`` (shared tensors once; buffers such as the rotary tables
    not counted), so models are compared at equal size."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


# ---------------------------------------------------------------------------------------------
# masked diffusion LM
# ---------------------------------------------------------------------------------------------

class MaskedDiffusionLM(nn.Module):
    """Bidirectional transformer denoiser for absorbing (masked) diffusion, SUBS outputs (MDLM).

    ``forward(state, t) -> {field: out (B, L, V)}`` with ``state[field]`` (B, L) noisy tokens in
    ``0 .. V`` (``V`` = ``vocab_size`` = :attr:`mask_id`, the core's ``Absorbing.mask_id``) and
    ``state[mask]`` (B, L) the valid positions (padding False; missing: all valid); padding is
    masked out of the attention keys, so it cannot change the outputs at valid positions. The
    output is float32 log-probabilities over the ``V`` clean tokens (normalised logits):

    - masked positions: the network's ``log_softmax``; there is no entry for the mask token (its
      probability is 0: SUBS's "zero masking probabilities");
    - unmasked positions carry their token over: 0 at the token, :data:`NEG` elsewhere (finite,
      so nothing downstream is NaN, and probability 1 after a softmax).

    ``pad_id``: the padding token, given probability 0 at every position (padding only fills
    the invalid positions after a sequence's end, so a valid position never holds it; a barely
    trained network would otherwise place some, and the decoded text would come out short).

    ``unk_id``: the tokenizer's unknown token (SMILES ``<unk>``, text the tokenizer did not
    know), which samplers never propose (:func:`polydiff_text.modality.sampling_net`); training
    and the ELBO score it as any token (data encoded with another model's tokenizer may hold it).

    ``time_conditioning=False`` (MDLM's choice with the log-linear schedule: under absorbing
    noise the clean-token posterior given ``x_t`` does not depend on ``t``) ignores ``t``; True embeds ``t``
    (the core's time in [0, 1], sinusoidal + MLP) and modulates every norm (adaLN).
    """

    def __init__(self, vocab_size: int, length: int, dim: int = 128, depth: int = 4, heads: int = 4,
                 mlp_ratio: float = 4, dropout: float = 0.0, time_conditioning: bool = False,
                 field: str = "tokens", mask: str | None = "valid", pad_id: int | None = None,
                 unk_id: int | None = None) -> None:
        super().__init__()
        self.vocab_size, self.length, self.field, self.mask = vocab_size, length, field, mask
        self.pad_id = pad_id if pad_id is not None and 0 <= pad_id < vocab_size else None
        self.unk_id = unk_id if unk_id is not None and 0 <= unk_id < vocab_size else None
        self.time_conditioning = time_conditioning
        self.time = TimeEmbedding(dim) if time_conditioning else None
        self.backbone = Transformer(vocab_size, length, dim, depth, heads, mlp_ratio, dropout,
                                    cond_dim=dim if time_conditioning else None)

    @property
    def mask_id(self) -> int:
        return self.vocab_size

    def denoise(self, tokens: Tensor, t: Tensor | float | None = None, valid: Tensor | None = None) -> Tensor:
        """SUBS log-probabilities (B, L, V) of the clean tokens from noisy ``tokens`` (B, L) at
        times ``t`` (scalar or (B,); used only with ``time_conditioning``)."""
        cond = None
        if self.time is not None:
            if t is None:
                raise ValueError("this MaskedDiffusionLM is time-conditioned: pass t")
            tt = torch.as_tensor(t, dtype=torch.float32, device=tokens.device).reshape(-1)
            cond = self.time(tt.expand(tokens.shape[0]))
        logits = self.backbone(tokens, valid=valid, cond=cond).float()
        if self.pad_id is not None:
            logits = logits.index_fill(-1, torch.tensor([self.pad_id], device=logits.device), NEG)
        logp = torch.log_softmax(logits, dim=-1)
        carried = tokens != self.mask_id
        onehot = F.one_hot(tokens.clamp(0, self.vocab_size - 1), self.vocab_size).bool()
        keep = torch.where(onehot, torch.zeros((), device=logp.device), torch.full((), NEG, device=logp.device))
        return torch.where(carried[..., None], keep, logp)

    def forward(self, state: Mapping[str, Tensor], t: Tensor | float | None = None, cond: Any = None
                ) -> dict[str, Tensor]:
        if cond is not None:
            raise ValueError("MaskedDiffusionLM is unconditional: it takes no condition")
        valid = state.get(self.mask) if self.mask is not None else None
        return {self.field: self.denoise(state[self.field], t, valid)}


# ---------------------------------------------------------------------------------------------
# autoregressive LM
# ---------------------------------------------------------------------------------------------

def token_nll(logits: Tensor, tokens: Tensor, valid: Tensor | None = None) -> Tensor:
    """Per-position negative log-likelihood (B, L) in nats (float32) of ``tokens`` under
    next-token ``logits`` (B, L, V); 0 where ``valid`` is False (whatever id padding holds)."""
    if valid is None:
        return F.cross_entropy(logits.float().transpose(1, 2), tokens, reduction="none")
    valid = valid.to(tokens.device).bool() if valid.dtype == torch.bool else valid.to(tokens.device) > 0
    target = torch.where(valid, tokens, torch.zeros_like(tokens))
    nll = F.cross_entropy(logits.float().transpose(1, 2), target, reduction="none")
    return torch.where(valid, nll, torch.zeros_like(nll))


class ARLM(nn.Module):
    """Causal transformer language model, the same :class:`Transformer` as
    :class:`MaskedDiffusionLM` (equal parameter counts for equal options).

    Start of sequence: the embedding's extra entry (id ``vocab_size``, :attr:`bos_id`; the mask id
    of the diffusion model) is prepended and the input shifted right, so ``forward(tokens)[:, i]``
    are the logits of ``p(tokens[:, i] | tokens[:, :i])`` and position 0 is predicted from the start
    token alone. Token ids are ``0 .. V - 1``; padding may hold any id in ``0 .. V`` and is scored
    nowhere. Padding must be trailing (each row's valid positions a prefix): causality then hides
    it from every valid position, with no attention mask (SDPA's causal fast path). A gap inside a
    sequence has no meaning for a left-to-right model (the position after it would be predicted
    from a padding token) and is not supported.
    """

    autoregressive = True  # the text modality samples it left to right (not with a diffusion sampler)

    def __init__(self, vocab_size: int, length: int, dim: int = 128, depth: int = 4, heads: int = 4,
                 mlp_ratio: float = 4, dropout: float = 0.0) -> None:
        super().__init__()
        self.vocab_size, self.length = vocab_size, length
        self.backbone = Transformer(vocab_size, length, dim, depth, heads, mlp_ratio, dropout)

    @property
    def bos_id(self) -> int:
        return self.vocab_size

    def forward(self, tokens: Tensor) -> Tensor:
        """Next-token logits (B, L, V) for ``tokens`` (B, L): ``out[:, i]`` depends on
        ``tokens[:, :i]`` only, so trailing padding never reaches a valid position."""
        bos = torch.full_like(tokens[:, :1], self.bos_id)
        return self.backbone(torch.cat([bos, tokens[:, :-1]], dim=1), causal=True)

    def nll(self, tokens: Tensor, valid: Tensor | None = None) -> Tensor:
        """Exact negative log-likelihood per sequence (B,), nats summed over the valid positions
        (``valid`` (B, L), True on a prefix of each row: padding is trailing)."""
        return token_nll(self(tokens), tokens, valid).sum(dim=1)

    def log_likelihood(self, tokens: Tensor, valid: Tensor | None = None) -> Tensor:
        """``log p(tokens)`` per sequence (B,), summed over the valid positions (``-nll``)."""
        return -self.nll(tokens, valid)

    @torch.no_grad()
    def generate(self, n: int, length: int | None = None, generator: torch.Generator | None = None,
                 temperature: float = 1.0, prefix: Tensor | None = None) -> Tensor:
        """Ancestral sampling of ``n`` sequences of ``length`` tokens (default :attr:`length`),
        LongTensor (n, length), one network call per token on a key/value cache.

        Draws are float64 inverse-CDF draws (:func:`~polydiff.plugin.sample_categorical`) from
        ``softmax(logits / temperature)``; ``temperature=0`` is greedy decoding. ``prefix``
        (n, P) fixes the first P tokens (prompting). Runs in eval mode (no dropout)."""
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        length = self.length if length is None else int(length)
        device = self.backbone.head.weight.device
        was_training = self.training
        self.eval()
        try:
            out = torch.empty(n, length, dtype=torch.long, device=device)
            fixed = 0
            if prefix is not None:
                fixed = min(prefix.shape[1], length)
                out[:, :fixed] = prefix[:, :fixed].to(device)
            cache = self.backbone.new_cache()
            step = torch.cat([torch.full((n, 1), self.bos_id, dtype=torch.long, device=device), out[:, :fixed]], 1)
            for i in range(fixed, length):
                logits = self.backbone(step, causal=True, cache=cache)[:, -1].double()
                if temperature == 0:
                    tok = logits.argmax(-1)
                else:
                    u = torch.rand(n, generator=generator, dtype=torch.float64, device=device)
                    tok = sample_categorical(torch.softmax(logits / temperature, dim=-1), u)
                out[:, i] = tok
                step = tok[:, None]
            return out
        finally:
            self.train(was_training)


# ---------------------------------------------------------------------------------------------
# the autoregressive training objective
# ---------------------------------------------------------------------------------------------

def _unwrap(net: Any) -> Any:
    """The module inside wrappers (DDP's ``module``, ``torch.compile``'s ``_orig_mod``, Lightning's
    ``_forward_module``)."""
    for _ in range(8):
        inner = next((getattr(net, a) for a in ("_orig_mod", "_forward_module", "module") if hasattr(net, a)), None)
        if not isinstance(inner, nn.Module):
            return net
        net = inner
    return net


@dataclass
class AutoregressiveObjective:
    """``objective(net, batch, noise) -> (loss, logs)``: the mean next-token NLL (nats) over the
    valid tokens of the batch (token-weighted: the sum of NLLs over the number of valid tokens)
    of the ARLM ``net`` on the clean tokens ``batch[field]``. ``noise`` is unused (the loss has
    no randomness apart from dropout). The network is called through its own ``__call__``, so
    wrappers (DDP, compile) keep working."""

    field: str = "tokens"
    mask: str | None = "valid"

    def __call__(self, net: Any, batch: Mapping[str, Tensor], noise: Any = None) -> tuple[Tensor, dict[str, Tensor]]:
        if not isinstance(_unwrap(net), ARLM):
            raise TypeError(f"objective 'autoregressive' trains an ARLM (polydiff_text.models.ARLM), got "
                            f"{type(_unwrap(net)).__name__}: choose the text modality's autoregressive network")
        if self.field not in batch:
            raise KeyError(f"objective 'autoregressive': the batch has no field {self.field!r} "
                           f"(it has {sorted(batch)})")
        tokens = batch[self.field]
        valid = batch.get(self.mask) if self.mask is not None else None
        if valid is not None:
            valid = valid.to(tokens.device)
            valid = valid.bool() if valid.dtype == torch.bool else valid > 0
        nll = token_nll(net(tokens), tokens, valid)
        count = nll.new_tensor(float(tokens.numel())) if valid is None else valid.sum().to(nll.dtype)
        loss = nll.sum() / count.clamp_min(1)
        return loss, {self.field: loss.detach()}


@OBJECTIVES.register("autoregressive", "next-token cross-entropy of the text modality's autoregressive LM (ARLM): "
                                       "the baseline, trained on the clean tokens by the same trainer")
def autoregressive(fields: Mapping[str, FieldSpec] | None = None, info: Mapping[str, Any] | None = None,
                   field: str | None = None) -> AutoregressiveObjective:
    """Build the ``autoregressive`` objective. The token field is ``field`` or the state's one
    categorical field (``"tokens"`` without fields); its structure's mask (``Masked("valid")``)
    names the entry holding the valid positions."""
    fields = dict(fields or {})
    if field is None:
        cats = [k for k, f in fields.items() if f.kind == "categorical"]
        if len(cats) > 1:
            raise ValueError(f"objective 'autoregressive' needs one token field, the state has {', '.join(cats)}: "
                             "set loss.options.field")
        field = cats[0] if cats else "tokens"
    spec = fields.get(field)
    if fields and spec is None:
        raise KeyError(f"objective 'autoregressive': no field {field!r} (fields: {', '.join(fields)})")
    if spec is not None and spec.kind != "categorical":
        raise ValueError(f"objective 'autoregressive' trains on tokens; field {field!r} is a {spec.kind} field")
    mask = getattr(spec.structure, "mask", None) if spec is not None else "valid"
    return AutoregressiveObjective(field=field, mask=mask)
