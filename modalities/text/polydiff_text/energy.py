"""Energy-based diffusion language models (EDLM, Xu et al. 2024): the NCE variant's residual energy.

EDLM corrects the factorised clean-token distribution ``p_diff(x0 | x_t)`` of a frozen masked
diffusion LM with a sequence-level energy: the target density is proportional to
``p_diff(x0) * exp(-E(x0))``, so the energy only has to model what the factorisation misses
(dependencies between tokens unmasked in the same step).

- :class:`EnergyLM`: the energy network, the bidirectional :class:`~polydiff_text.models.Transformer`
  on clean tokens (padding excluded from attention), features mean-pooled over the valid positions
  and a small head to one scalar per sequence. ``residual_energy = True`` tells the sampler that
  its energy is a residual on top of the diffusion model.
- The objective ``edlm_nce`` (registered in :data:`~polydiff.plugin.OBJECTIVES`; recipe:
  ``loss: {objective: edlm_nce, teacher: MDLM.ckpt}``): noise-contrastive estimation with data as
  positives and the frozen teacher's own samples as negatives. For clean ``x0`` it draws ``t``
  uniformly in ``[window_lo, window_hi]`` (the window in which EDLM applies importance sampling),
  corrupts ``x0`` with the teacher's absorbing process, draws ``x_hat ~ p_teacher(x0 | x_t)``
  (masked positions from the teacher's softmax in float64, unmasked ones kept) and minimises
  ``-log sigmoid(-E(x0)) - log sigmoid(E(x_hat))``. At the optimum ``exp(-E)`` is the density ratio
  of data to the teacher's samples, the residual the sampler needs.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from polydiff.plugin import OBJECTIVES, Absorbing, FieldSpec, Noise, load_network, sample_categorical

from .models import MaskedDiffusionLM, Transformer, _unwrap

__all__ = ["EdlmNCEObjective", "EnergyLM", "edlm_nce", "load_teacher", "nce_negatives"]


# ---------------------------------------------------------------------------------------------
# the energy network
# ---------------------------------------------------------------------------------------------

class EnergyLM(nn.Module):
    """Sequence-level residual energy ``E(x0)`` (B,) of clean tokens (EDLM's NCE variant).

    The backbone is the text modality's :class:`~polydiff_text.models.Transformer` (rotary
    attention on SDPA, bidirectional) with its token head replaced by the identity, so it returns
    the final-norm features (B, L, dim). Padding is masked out of the attention keys and out of the
    mean pooling, so tokens at invalid positions cannot change the energy. The head (Linear, GELU,
    Linear to one scalar) has a zero-initialised last layer: the untrained energy is 0, i.e. the
    residual model starts as the diffusion model itself.
    """

    residual_energy = True  # the sampler targets p_diff(x0) * exp(-E(x0))

    def __init__(self, vocab_size: int, length: int, dim: int = 128, depth: int = 4, heads: int = 4,
                 mlp_ratio: float = 4, dropout: float = 0.0) -> None:
        super().__init__()
        self.vocab_size, self.length = vocab_size, length
        self.backbone = Transformer(vocab_size, length, dim, depth, heads, mlp_ratio, dropout)
        self.backbone.head = nn.Identity()  # features, not token logits
        self.head = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, 1))
        nn.init.zeros_(self.head[2].weight)
        nn.init.zeros_(self.head[2].bias)

    def features(self, tokens: Tensor, valid: Tensor | None = None) -> Tensor:
        """Mean-pooled features (B, dim) over the valid positions (all positions without ``valid``;
        a row with no valid position pools to zeros)."""
        h = self.backbone(tokens, valid=valid).float()
        if valid is None:
            return h.mean(dim=1)
        w = (valid.bool() if valid.dtype == torch.bool else valid > 0).to(h.device, h.dtype)
        return (h * w[..., None]).sum(dim=1) / w.sum(dim=1, keepdim=True).clamp_min(1.0)

    def energy(self, tokens: Tensor, valid: Tensor | None = None) -> Tensor:
        """The energy (B,) float32 of clean ``tokens`` (B, L) in ``0 .. V - 1`` at the ``valid``
        positions (B, L) bool; lower means more data-like."""
        return self.head(self.features(tokens, valid)).squeeze(-1)

    def forward(self, state: Mapping[str, Tensor], t: Tensor | float | None = None, cond: Any = None
                ) -> dict[str, Tensor]:
        """``{"energy": (B,)}`` of ``state["tokens"]`` at ``state["valid"]``; ``t`` is ignored
        (the energy is of clean sequences), taken only so the core can call it like a denoiser."""
        if cond is not None:
            raise ValueError("EnergyLM is unconditional: it takes no condition")
        return {"energy": self.energy(state["tokens"], state.get("valid"))}


# ---------------------------------------------------------------------------------------------
# the frozen teacher and its negatives
# ---------------------------------------------------------------------------------------------

def load_teacher(teacher: str | Path | MaskedDiffusionLM, info: Mapping[str, Any] | None = None,
                 fields: Mapping[str, FieldSpec] | None = None, field: str = "tokens"
                 ) -> tuple[MaskedDiffusionLM, Absorbing]:
    """The frozen masked-diffusion teacher (eval mode, no gradients, EMA weights) and its absorbing
    process, from a checkpoint path or a :class:`~polydiff_text.models.MaskedDiffusionLM` (which
    then uses ``fields[field]``'s process, else MDLM's linear one).

    A ValueError naming the checkpoint when it cannot be read, is not a text ``mdlm`` checkpoint,
    or was trained with another tokenizer than the data's ``info["tokenizer"]``: its samples would
    be in another vocabulary, and NCE against them would teach the energy nothing about the data.
    """
    if isinstance(teacher, (str, Path)):
        path = Path(teacher).expanduser()
        try:
            loaded = load_network(path)
        except ValueError as err:  # CheckpointError included
            raise ValueError(f"objective 'edlm_nce': cannot load the teacher {path}: {err}") from err
        name = loaded.config.model.name
        net = _unwrap(loaded.net)
        if loaded.config.modality != "text" or name != "mdlm" or not isinstance(net, MaskedDiffusionLM):
            raise ValueError(f"objective 'edlm_nce': the teacher {path} must be a masked-diffusion checkpoint of "
                             f"the text modality (network 'mdlm'); it is a {loaded.config.modality!r} "
                             f"checkpoint of network {name!r}")
        if info is not None and "tokenizer" in info and loaded.info.get("tokenizer") != info["tokenizer"]:
            raise ValueError(f"objective 'edlm_nce': the teacher {path} was trained with another tokenizer than "
                             f"the data's ({_describe(loaded.info.get('tokenizer'))} vs "
                             f"{_describe(info['tokenizer'])}): train the energy on the teacher's data")
        spec = loaded.fields.get(net.field)
        process = spec.process if spec is not None else None
        where = str(path)
    else:
        net = _unwrap(teacher)
        if not isinstance(net, MaskedDiffusionLM):
            raise ValueError(f"objective 'edlm_nce': the teacher must be a MaskedDiffusionLM or a checkpoint path, "
                             f"got {type(net).__name__}")
        spec = (fields or {}).get(field)
        process = spec.process if spec is not None else Absorbing(net.vocab_size)
        where = "the given teacher"
    if not isinstance(process, Absorbing) or process.vocab != net.vocab_size:
        raise ValueError(f"objective 'edlm_nce': {where} needs an absorbing process over its {net.vocab_size} "
                         f"tokens, got {process!r}")
    if info is not None and "vocab_size" in info and int(info["vocab_size"]) != net.vocab_size:
        raise ValueError(f"objective 'edlm_nce': {where} has {net.vocab_size} tokens, the data "
                         f"{int(info['vocab_size'])}")
    net.requires_grad_(False).eval()
    return net, process


def _describe(tok: Any) -> str:
    """A short description of a stored tokenizer for error messages (kind and vocabulary size)."""
    if not isinstance(tok, Mapping):
        return repr(tok)
    items = tok.get("chars", tok.get("tokens", tok.get("vocab")))
    size = f", {len(items)} symbols" if isinstance(items, (str, list, dict)) else ""
    return f"{tok.get('kind', '?')}{size}"


@torch.no_grad()
def nce_negatives(teacher: MaskedDiffusionLM, process: Absorbing, x0: Tensor, valid: Tensor, noise: Noise,
                  window: tuple[float, float] = (0.4, 0.6)) -> tuple[Tensor, Tensor, Tensor]:
    """Negatives ``x_hat ~ p_teacher(x0 | x_t)`` for clean ``x0`` (B, L): returns ``(x_hat, x_t, t)``.

    ``t`` (B,) is uniform in ``window``, ``x_t`` is ``x0`` corrupted by ``process`` at the valid
    positions only, and every masked valid position of ``x_t`` is drawn independently from the
    teacher's softmax in float64 (inverse CDF, no truncated tail); unmasked positions and padding
    keep ``x0``. Three draws of ``noise`` per call (time, corruption, tokens), so the result is a
    function of ``(x0, valid, noise)`` and the teacher's weights."""
    lo, hi = window
    L = x0.shape[1]
    t = lo + (hi - lo) * noise.rand((1,), torch.float64)[:, 0].to(x0.device)
    u = noise.rand((L,), torch.float64).to(x0.device)
    x_t = torch.where(valid, process.q_sample(x0, t, u), x0)
    logp = teacher.denoise(x_t, t.float(), valid)
    probs = torch.softmax(logp.double(), dim=-1)
    draws = sample_categorical(probs, noise.rand((L,), torch.float64).to(x0.device))
    masked = valid & (x_t == process.mask_id)
    return torch.where(masked, draws, x0), x_t, t


# ---------------------------------------------------------------------------------------------
# the objective
# ---------------------------------------------------------------------------------------------

class EdlmNCEObjective:
    """``objective(net, batch, noise) -> (loss, logs)``: EDLM's NCE loss of an :class:`EnergyLM`
    ``net`` against a frozen teacher's samples (see the module docstring).

    ``loss = mean(-log sigmoid(-E(x0)) - log sigmoid(E(x_hat)))``; logs ``energy_pos`` and
    ``energy_neg`` (mean energies of data and negatives), ``nce_accuracy`` (fraction of pairs with
    ``E(x0) < E(x_hat)``; ties count as wrong) and ``negative_is_data`` (fraction of negatives equal
    to their positive, which no energy can tell apart: the ceiling of the accuracy is one minus it).
    Deliberately not an ``nn.Module``, so the teacher stays out of the student's weights and
    checkpoints; the teacher moves to the batch's device on first use. Positives and negatives go
    through one call of ``net`` (its ``__call__``, so DDP / compile wrappers keep working).
    """

    def __init__(self, teacher: MaskedDiffusionLM, process: Absorbing, field: str = "tokens",
                 mask: str | None = "valid", window: tuple[float, float] = (0.4, 0.6)) -> None:
        self.teacher, self.process, self.field, self.mask, self.window = teacher, process, field, mask, window
        self._device: torch.device | None = None

    def __call__(self, net: Any, batch: Mapping[str, Tensor], noise: Noise | None = None
                 ) -> tuple[Tensor, dict[str, Tensor]]:
        base = _unwrap(net)
        if not getattr(base, "residual_energy", False):
            raise TypeError(f"objective 'edlm_nce' trains an energy network (polydiff_text.energy.EnergyLM), got "
                            f"{type(base).__name__}: choose the text modality's energy network")
        if getattr(base, "vocab_size", self.teacher.vocab_size) != self.teacher.vocab_size:
            raise ValueError(f"objective 'edlm_nce': the energy network has {base.vocab_size} tokens, the teacher "
                             f"{self.teacher.vocab_size}")
        if self.field not in batch:
            raise KeyError(f"objective 'edlm_nce': the batch has no field {self.field!r} (it has {sorted(batch)})")
        x0 = batch[self.field]
        valid = batch.get(self.mask) if self.mask is not None else None
        valid = torch.ones_like(x0, dtype=torch.bool) if valid is None else valid.to(x0.device)
        valid = valid.bool() if valid.dtype == torch.bool else valid > 0
        if self._device != x0.device:
            self.teacher.to(x0.device)
            self._device = x0.device
        noise = Noise(x0.shape[0], device=x0.device) if noise is None else noise
        x_hat, _, _ = nce_negatives(self.teacher, self.process, x0, valid, noise, self.window)
        energy = net({"tokens": torch.cat([x0, x_hat]), "valid": torch.cat([valid, valid])})["energy"].float()
        e_pos, e_neg = energy.chunk(2)
        loss = (-F.logsigmoid(-e_pos) - F.logsigmoid(e_neg)).mean()
        logs = {"energy_pos": e_pos.detach().mean(), "energy_neg": e_neg.detach().mean(),
                "nce_accuracy": (e_pos < e_neg).float().mean().detach(),
                "negative_is_data": (x_hat == x0).all(dim=1).float().mean()}
        return loss, logs


@OBJECTIVES.register("edlm_nce", "EDLM's noise-contrastive estimation of a residual energy (the text modality's "
                                 "energy network) against a frozen masked-diffusion teacher's samples; "
                                 "loss.teacher: the teacher's mdlm checkpoint")
def edlm_nce(fields: Mapping[str, FieldSpec] | None = None, info: Mapping[str, Any] | None = None,
             teacher: str | Path | MaskedDiffusionLM | None = None, window_lo: float = 0.4,
             window_hi: float = 0.6) -> EdlmNCEObjective:
    """Build the ``edlm_nce`` objective: load the frozen teacher (``loss.teacher``, a checkpoint
    path; a :class:`MaskedDiffusionLM` works too) and check it against the data ``info``. Negatives
    are drawn at times uniform in ``[window_lo, window_hi]`` (EDLM's importance-sampling window)."""
    if teacher is None:
        raise ValueError("objective 'edlm_nce' needs a teacher: set loss.teacher to a masked-diffusion (mdlm) "
                         "checkpoint path")
    lo, hi = float(window_lo), float(window_hi)
    if not 0.0 <= lo <= hi <= 1.0:
        raise ValueError(f"objective 'edlm_nce': need 0 <= window_lo <= window_hi <= 1, got {lo}, {hi}")
    fields = dict(fields or {})
    cats = [k for k, f in fields.items() if f.kind == "categorical"]
    if len(cats) > 1:
        raise ValueError(f"objective 'edlm_nce' needs one token field, the state has {', '.join(cats)}")
    field = cats[0] if cats else "tokens"
    spec = fields.get(field)
    mask = getattr(spec.structure, "mask", None) if spec is not None else "valid"
    net, process = load_teacher(teacher, info, fields, field)
    return EdlmNCEObjective(net, process, field=field, mask=mask, window=(lo, hi))
