"""Time-shifted sampling against exposure bias (Li et al. 2024, "Alleviating exposure bias in
diffusion models through sampling with shifted time steps", ICLR).

During sampling the state at grid time ``t`` drifts away from the training marginal at ``t``
(exposure bias); its spread matches that of a nearby time better. The sampler then queries the
network at that time instead: for each sample, among candidate times in a window around ``t``,
the one whose marginal variance is closest to the sample's own variance across its elements.
Only the time handed to the model changes; the solver keeps its grid and coefficients.

Off by default: pass ``wrap_model=time_shift(process)`` to :func:`polydiff.sample`. All
arithmetic is per sample and on tensors (no host synchronisation).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ..processes.gaussian import GaussianProcess, Schedule
from .coefs import LAM_CLIP

StateModel = Callable[..., Any]


def time_shift(process: GaussianProcess | Schedule, *, field: str = "x", window: float = 0.2, cutoff: float = 1.0,
               data_var: float = 0.0, candidates: int = 21) -> Callable[[StateModel], StateModel]:
    """A ``wrap_model`` for :func:`polydiff.sample` that shifts the model's time per sample.

    Args:
        process: the Gaussian process (or schedule) of ``field``; the shift is measured on it.
        field: the state entry whose per-sample variance is measured (``"x"`` for a single
            field given by shape). Every field's model call then uses the shifted time.
        window: half-width of the search window in half log-SNR ``lam`` (0.2 is about +-40
            of 1000 DDPM steps at mid noise for the linear VP schedule); 0 turns the shift off.
        cutoff: shift only while ``sigma/alpha`` at the grid time exceeds this (the paper stops
            shifting on the last, low-noise steps); 1.0 is the midpoint alpha = sigma.
        data_var: per-element data variance ``v`` in the marginal variance
            ``alpha(t')^2 v + sigma(t')^2``. 0 (the default) matches ``sigma(t')^2`` as the
            paper does (``1 - alphabar``); give the data's variance to match the full marginal.
        candidates: number of candidate times in the window (evenly spaced in ``lam``; the grid
            time itself is always a candidate and wins ties).
    """
    sched = getattr(process, "schedule", process)
    offsets = torch.linspace(-window, window, candidates, dtype=torch.float64)
    offsets = offsets[offsets != 0]

    def wrap(model: StateModel) -> StateModel:
        def shifted(state: dict[str, Tensor], t: Tensor, *args: Any) -> Any:
            x = state[field]
            var = x.reshape(x.shape[0], -1).to(torch.float64).var(dim=1, unbiased=False)  # (B,)
            tt = t.to(torch.float64).expand(x.shape[0])
            lam = sched.lam(tt).clamp(-LAM_CLIP, LAM_CLIP)
            cand = sched.t_of_lam(lam[:, None] + offsets.to(tt.device)).clamp(sched.t_min, sched.t_max)
            cand = torch.cat([tt[:, None], cand], dim=1)  # (B, 1 + K)
            mv = sched.alpha(cand) ** 2 * data_var + sched.sigma(cand) ** 2
            best = torch.argmin((mv - var[:, None]).abs(), dim=1, keepdim=True)
            chosen = torch.gather(cand, 1, best)[:, 0]
            new_t = torch.where(torch.exp(-lam) > cutoff, chosen, tt).to(t.dtype)
            return model(state, new_t, *args)

        return shifted

    return wrap
