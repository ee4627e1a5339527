"""Source separation with the joint stems model (MSDM's idea: the stems given their mixture are
a conditional sample of the joint prior).

The observation is the mixture's mel spectrogram. Mel power adds over sources whose energy does
not overlap in time-frequency (and does so in expectation for independent phases), so the
operator ``A(stems)`` turns each stem's normalised log-mel back into power, sums the stems and
normalises the sum again; sampling follows the prior's score plus ``scale`` times the gradient of
``log N(y; A(x0_hat), std^2)`` (DPS through the core's :func:`gradient_guidance`). The estimated
stem mels become waveforms by ratio masks on the mixture's own STFT (its phase), so the stems add
up to the mixture and SI-SNR against the true stems is meaningful.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

from polydiff.plugin import Control, gradient_guidance, operator_potential


def mix_operator(top_db: float) -> Any:
    """``A(state)``: normalised log-mel of the summed power of the stems (B, K, M, F) -> (B, M, F)."""

    def op(state: Mapping[str, Tensor]) -> Tensor:
        x = state["stems"]
        db = (x - 1) * (top_db / 2)  # normalised units -> dB (0 dB = the fixed reference)
        total = torch.logsumexp(db * (np.log(10) / 10), dim=1) * (10 / np.log(10))  # dB of the summed power
        return total.clamp(-top_db, 0) * (2 / top_db) + 1

    return op


def separation_control(mix_mel: Tensor, info: Mapping[str, Any], fields: Mapping[str, Any], scale: float = 1.0,
                       std: float = 0.1) -> Control:
    """A :class:`polydiff.plugin.Control` that guides a stems model toward mixture ``mix_mel``
    ((M, F) or (B, M, F) normalised log-mel)."""
    top_db = float(info["stem"].get("top_db", 80.0))
    y = mix_mel if mix_mel.dim() == 3 else mix_mel[None]
    pot = operator_potential(mix_operator(top_db), y, std)
    return Control(guidance=[lambda m: gradient_guidance(m, fields, pot, scale=scale, on="x0")])


def separate(generator: Any, mix: np.ndarray, *, n: int = 1, scale: float = 1.0, std: float = 0.1,
             sampler: str | None = None, steps: int | None = None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The stems of ``mix`` ((n_samples,) audio at the model's stem rate, cropped / zero-padded to
    the model's length) with a trained stems model: returns ``(stems (n, K, n_samples), mels
    (n, K, M, F))``, ``n`` separations from seeds ``(seed, i)``."""
    from .music import StemSpec, stem_mels
    from .music import separate as mask_separate

    info = generator.info
    if info.get("kind") != "stems":
        raise ValueError(f"separation needs a model of rendered stems (dataset chorale_stems); this one models "
                         f"{info.get('kind')!r}")
    spec = StemSpec.from_dict(info["stem"])
    frames = int(info["music"]["frames"])
    length = frames * spec.hop
    audio = np.zeros(length, dtype=np.float32)
    audio[: min(length, len(mix))] = np.asarray(mix, dtype=np.float32)[:length]
    y = torch.tensor(stem_mels(audio[None], spec)[0], dtype=torch.float32)[:, :frames]
    control = separation_control(y, info, generator.fields, scale, std)
    state = generator.sample_states(n, sampler=sampler, steps=steps, seed=seed, control=control, progress=False)
    mels = state["stems"].float().cpu().numpy()
    stems = np.stack([mask_separate(audio, m, spec) for m in mels])
    return stems, mels


__all__ = ["mix_operator", "separate", "separation_control"]
