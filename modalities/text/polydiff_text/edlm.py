"""Energy-based diffusion language models (EDLM, Xu et al. 2024): importance sampling of whole
sequences from a masked diffusion model, reweighted by a sequence-level energy.

A masked diffusion model denoises every masked position independently given ``x_t``: its
``p_diff(x0 | x_t)`` is a product over positions, which misses correlations between the tokens
it reveals together. EDLM corrects this at the steps where it matters most: at each step whose
time lies in a window (``[window_lo, window_hi]``, 0.4-0.6 by default) it draws ``candidates``
complete sequences ``x0 ~ p_diff(. | x_t)`` and keeps one with probability proportional to
``exp(-E(x0))``, then takes the usual ancestral step toward the kept sequence (each masked
token is revealed with probability ``(alpha_s - alpha_t) / (1 - alpha_t)``). Outside the window
one candidate is drawn (plain ancestral sampling). The energies:

- **autoregressive** (an ``ar`` checkpoint of the same tokenizer): ``E(x0) = -log p_AR(x0) +
  log p_diff(x0 | x_t)``, so the weights ``p_AR / p_diff`` importance-sample the AR model's
  distribution with the diffusion model as proposal;
- **residual** (an ``energy`` checkpoint trained by noise-contrastive estimation against the
  diffusion model's own samples, :mod:`.energy`): the target is ``p_diff(x0) exp(-E(x0))``, so
  the weights are ``exp(-E(x0))``.

The sampler is registered as ``edlm``: ``polydiff sample CKPT --sampler edlm --steps 256
--option energy=AR_OR_ENERGY.ckpt --option candidates=4``. It costs one denoiser call per
step plus ``candidates`` energy evaluations per step inside the window.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from polydiff.plugin import (
    Absorbing,
    FieldSpec,
    Noise,
    SampleSettings,
    State,
    field_mask,
    load,
    register,
    sample_categorical,
)

__all__ = ["edlm_loop", "energy_of", "importance_step"]

Energy = Callable[[Tensor, Tensor, Tensor], Tensor]
"""``energy(x0 (N, L), valid (N, L), log_q (N,)) -> (N,)``; ``log_q`` is the proposal's log-probability."""


@functools.lru_cache(maxsize=4)
def _load(path: str, mtime: float) -> Any:
    return load(path)


def energy_of(path: str | Path) -> Energy:
    """The energy of a checkpoint: an autoregressive ``ar`` model (likelihood-ratio energy) or a
    residual ``energy`` model; a clear error for anything else."""
    if str(path).strip() in ("", "."):
        raise ValueError("sampler 'edlm' needs an energy: --option energy=CKPT (an 'ar' or an 'energy' checkpoint "
                         "of the same tokenizer)")
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"sampler 'edlm': option energy={str(path)!r} is not a checkpoint file (an 'ar' or an "
                         "'energy' checkpoint of the same tokenizer)")
    gen = _load(str(path.resolve()), path.stat().st_mtime)
    net = getattr(gen.net, "module", gen.net)
    if getattr(net, "autoregressive", False):
        def ar_energy(x0: Tensor, valid: Tensor, log_q: Tensor) -> Tensor:
            return net.nll(x0, valid).double() + log_q
        ar_energy.info = gen.info  # type: ignore[attr-defined]
        return ar_energy
    if getattr(net, "residual_energy", False):
        def residual(x0: Tensor, valid: Tensor, log_q: Tensor) -> Tensor:
            return net.energy(x0, valid).double()
        residual.info = gen.info  # type: ignore[attr-defined]
        return residual
    raise ValueError(f"sampler 'edlm': {path} is neither an autoregressive ('ar') nor an energy ('energy') "
                     "checkpoint")


def importance_step(p0: Tensor, x: Tensor, masked: Tensor, energy: Energy | None, valid: Tensor, k: int,
                    noise: Noise) -> Tensor:
    """A complete sequence drawn from the factorised ``p0`` (B, L, V) at the ``masked`` positions
    of ``x`` (B, L); with an ``energy`` and ``k > 1``, the one kept of ``k`` candidates with
    probability proportional to ``exp(-E)``."""
    B, L, _ = p0.shape
    draws = []
    for _ in range(k if energy is not None else 1):
        draws.append(torch.where(masked, sample_categorical(p0, noise.rand((L,)).to(x.device)), x))
    if len(draws) == 1:
        return draws[0]
    cands = torch.stack(draws)  # (k, B, L)
    logp = torch.log(p0.clamp_min(1e-300))
    log_q = torch.stack([(logp.gather(-1, c[..., None]).squeeze(-1) * masked).sum(1) for c in cands])  # (k, B)
    e = energy(cands.reshape(k * B, L), valid.repeat(k, 1), log_q.reshape(-1)).reshape(k, B)
    w = torch.softmax(-e, dim=0)  # (k, B)
    pick = torch.searchsorted(w.T.cumsum(-1).contiguous(), noise.rand(()).to(w)[:, None].double()).squeeze(-1)
    return cands[pick.clamp(max=k - 1), torch.arange(B)]


@register("edlm", "EDLM: importance sampling of whole sequences by an energy (AR likelihood ratio or a residual "
          "NCE energy) inside a time window, ancestral steps elsewhere", kind="categorical", stochastic=True,
          loop="own", energy="", candidates=2, window_lo=0.4, window_hi=0.6)
def edlm_loop(model: Callable[..., Any], fields: Mapping[str, FieldSpec], state: State, noise: Noise,
              settings: SampleSettings, *, cond: Any = None,
              callback: Callable[[dict[str, Any]], None] | None = None) -> State:
    """The EDLM sampler on a state with one absorbing field, ``settings.steps`` uniform steps
    from t = 1 to 0."""
    names = list(fields)
    if len(names) != 1 or not isinstance(fields[names[0]].process, Absorbing):
        raise ValueError("sampler 'edlm' generates one absorbing (masked) categorical field")
    opts = {"energy": "", "candidates": 2, "window_lo": 0.4, "window_hi": 0.6, **dict(settings.options)}
    unknown = sorted(set(opts) - {"energy", "candidates", "window_lo", "window_hi"})
    if unknown:
        raise ValueError(f"sampler 'edlm' has no option {', '.join(unknown)}; allowed: energy, candidates, "
                         "window_lo, window_hi")
    k, lo, hi = int(opts["candidates"]), float(opts["window_lo"]), float(opts["window_hi"])
    if k < 1 or not 0 <= lo <= hi <= 1:
        raise ValueError(f"sampler 'edlm': candidates must be >= 1 and 0 <= window_lo <= window_hi <= 1, got "
                         f"{k}, {lo}, {hi}")
    energy = energy_of(opts["energy"]) if k > 1 else None
    (name,) = names
    process = fields[name].process
    vocab = int(energy.info["vocab_size"]) if energy is not None else process.vocab  # type: ignore[attr-defined]
    if vocab != process.vocab:
        raise ValueError(f"sampler 'edlm': the energy checkpoint {opts['energy']} has a vocabulary of {vocab} tokens, "
                         f"the diffusion model {process.vocab}: train both on the same data")
    x = state[name].clone()
    valid = field_mask(fields[name], state, x).to(torch.bool).expand_as(x)
    x = torch.where(valid, x, torch.zeros_like(x))  # padding: a real token, never generated
    B = x.shape[0]
    grid = torch.linspace(1.0, 0.0, settings.steps + 1, dtype=torch.float64)
    for i in range(settings.steps):
        t, s = grid[i], grid[i + 1]
        masked = (x == process.mask_id) & valid
        if not masked.any():
            break
        st = {**state, name: x}
        tt = torch.full((B,), float(t), dtype=torch.float32, device=x.device)
        out = model(st, tt) if cond is None else model(st, tt, cond)
        if callback is not None:
            callback({"i": i, "t": tt, "state": st, "out": out})
        p0 = torch.softmax(out[name].double(), dim=-1)
        inside = energy is not None and lo <= float(t) <= hi
        x0 = importance_step(p0, x, masked, energy if inside else None, valid, k, noise)
        a_t, a_s = process.alpha(t), process.alpha(s)
        move = float(((a_s - a_t) / (1 - a_t)).clamp(0, 1)) if float(s) > 0 else 1.0
        reveal = masked & (noise.rand(x.shape[1:]).to(x.device) < move)
        x = torch.where(reveal, x0, x)
    return {**state, name: x}
