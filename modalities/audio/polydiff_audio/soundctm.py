"""SoundCTM on polydiff's CTM objective: consistency trajectory distillation of a caption-conditioned
EDM teacher on log-mel spectrograms (Saito et al. 2025, "SoundCTM: unifying score-based and
consistency models for full-band text-to-sound generation").

What the plugin adds to the core's ``ctm`` objective (:func:`polydiff.plugin.ctm_loss`):

- the teacher is classifier-free guided with a per-sample scale ``omega ~ U[omega_low, omega_high]``
  (SoundCTM: [2, 5]) drawn from the training noise stream, ``D = D_u + omega (D_c - D_u)``; the
  student receives the same ``omega`` (state entry ``omega``, embedded by the two-time
  :class:`~polydiff_audio.nets.MelUNet`), so one student covers every scale;
- the distance ``teacher_features``: the student's and the target's estimates compared in the
  teacher network's own feature space (its U-Net activations at the comparison time, each
  channel-normalised as LPIPS does), plus the core's denoising term (``dsm_weight``, 1.0);
- caption dropout for the student (``student_cond_drop``), so the same student also gives the
  unconditional output that inference-time ``nu``-interpolation needs
  (``denoised = uncond + nu (cond - uncond)``: classifier-free guidance on the student,
  ``guidance_scale = nu``).

Recipe::

    loss: {objective: soundctm, teacher: runs/teacher/checkpoints/last.ckpt, teacher_steps: 8,
           omega_low: 2.0, omega_high: 5.0, student_cond_drop: 0.1}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from polydiff.plugin import (
    DISTANCES,
    OBJECTIVES,
    Comparison,
    FieldSpec,
    call,
    ctm,
    ctm_loss,
    drop_condition,
    null_state,
)

OMEGA = "omega"


class GuidedTeacher:
    """A teacher called as ``teacher(state, t, cond)`` that returns its classifier-free guided
    prediction ``u + omega (c - u)`` with the per-sample ``state["omega"]`` (B,) (no ``omega``:
    the conditional prediction), the unconditional pass having ``keys`` dropped; both passes are
    one call on a doubled batch. ``net``: the wrapped network (its ``features`` serve the
    feature-space distance)."""

    def __init__(self, net: Any, keys: Sequence[str]) -> None:
        self.net, self.keys = net, list(keys)

    def to(self, device: torch.device) -> GuidedTeacher:
        """Move the teacher's network to ``device``; returns self."""
        if isinstance(self.net, nn.Module):
            self.net.to(device)
        return self

    def __call__(self, state: Mapping[str, Tensor], t: Tensor, cond: Any = None, **kw: Any) -> dict[str, Tensor]:
        keys = [k for k in self.keys if k in state]
        if OMEGA not in state or not keys:
            return call(self.net, dict(state), t, cond, **kw)
        b = state[OMEGA].shape[0]
        nstate = null_state(dict(state), keys)
        both = {k: torch.cat([v, nstate[k]]) if isinstance(v, Tensor) and v.dim() and v.shape[0] == b else v
                for k, v in state.items()}
        tt = t.expand(b) if t.dim() == 0 else t
        out = call(self.net, both, torch.cat([tt, tt]), cond, **kw)
        res = {}
        for k, v in out.items():
            if isinstance(v, Tensor) and v.dim() and v.shape[0] == 2 * b:
                c, u = v[:b], v[b:]
                w = state[OMEGA].to(v.dtype).reshape(-1, *([1] * (v.dim() - 1)))
                res[k] = u + w * (c - u)
            else:
                res[k] = v
        return res


@DISTANCES.register("teacher_features", "SoundCTM: squared distance of channel-normalised teacher U-Net activations")
def teacher_features(pred: Mapping[str, Tensor], target: Mapping[str, Tensor], cmp: Comparison) -> Tensor:
    """Per-sample distance of two sets of fields in the teacher network's feature space: the
    teacher's ``features(state, t)`` of each side at the comparison time (conditions of the batch
    kept), every activation (B, C, L) normalised to unit length over its channels, then the mean
    squared difference per layer, summed over layers."""
    net = getattr(cmp.teacher, "net", cmp.teacher)
    if not hasattr(net, "features"):
        raise TypeError("distance 'teacher_features' needs a teacher network with a features(state, t) method "
                        "(the audio plugin's MelUNet)")
    t = cmp.time.to(torch.float32)
    state = {k: v for k, v in cmp.state.items() if k != OMEGA}
    fp = net.features({**state, **pred}, t)
    with torch.no_grad():
        ft = net.features({**state, **target}, t)
    total = None
    for a, b in zip(fp, ft, strict=True):
        a = a / a.norm(dim=1, keepdim=True).clamp_min(1e-6)
        b = b / b.norm(dim=1, keepdim=True).clamp_min(1e-6)
        d = (a - b).pow(2).sum(1).flatten(1).mean(1)
        total = d if total is None else total + d
    return total


class SoundCTMObjective:
    """``objective(net, batch, noise) -> (loss, logs)``: draw ``omega`` per sample, drop the
    student's conditions with probability ``cond_drop`` (the teacher then has nothing to guide
    on: its prediction is the unconditional one), and apply the core's CTM loss with the
    guided teacher."""

    def __init__(self, teacher: GuidedTeacher, fields: Mapping[str, FieldSpec], teacher_fields: Mapping[str, FieldSpec],
                 keys: Sequence[str], omega: tuple[float, float], cond_drop: float, options: Mapping[str, Any]) -> None:
        self.teacher, self.fields, self.teacher_fields = teacher, dict(fields), dict(teacher_fields)
        self.keys, self.omega, self.cond_drop, self.options = list(keys), omega, cond_drop, dict(options)
        self._device: torch.device | None = None

    def __call__(self, net: Any, batch: Mapping[str, Tensor], noise: Any) -> tuple[Tensor, dict[str, Tensor]]:
        like = next(v for k, v in batch.items() if k in self.fields)
        if self._device != like.device:
            self.teacher.to(like.device)
            self._device = like.device
        lo, hi = self.omega
        w = lo + (hi - lo) * noise.rand(()).to(like.device, torch.float32)
        state = drop_condition({**batch, OMEGA: w}, [k for k in self.keys if k in batch], self.cond_drop, noise)
        loss, logs = ctm_loss(net, self.teacher, self.fields, state, noise, teacher_fields=self.teacher_fields,
                              **self.options)
        return loss, {**logs, "omega": w.mean().detach()}


@OBJECTIVES.register("soundctm", "SoundCTM: CTM distillation of a classifier-free guided teacher with omega ~ "
                                 "U[omega_low, omega_high] fed to the student, distance in the teacher's feature space")
def soundctm(fields: Mapping[str, FieldSpec], info: Mapping[str, Any] | None = None, teacher: str | Any = None,
             omega_low: float = 2.0, omega_high: float = 5.0, student_cond_drop: float = 0.1, teacher_steps: int = 8,
             teacher_sampler: str = "heun", distance: str = "teacher_features", dsm_weight: float = 1.0,
             u_fraction: float = 1.0, u_random: bool = False, compare: str = "data", p_end: float = 0.25,
             p_max: float = 0.25, t_density: str = "lognormal") -> SoundCTMObjective:
    """Build the ``soundctm`` objective (see the module docstring; CTM options as in
    :func:`polydiff.plugin.ctm_loss`). The teacher is guided on every condition of the data
    (``info["conditions"]``: the caption, or the class label)."""
    if teacher is None:
        raise ValueError("objective 'soundctm' needs a teacher: set loss.teacher to the teacher's checkpoint")
    if not 0.0 <= omega_low <= omega_high:
        raise ValueError(f"need 0 <= omega_low <= omega_high, got {omega_low} and {omega_high}")
    if not 0.0 <= student_cond_drop < 1.0:
        raise ValueError(f"student_cond_drop must lie in [0, 1), got {student_cond_drop}")
    # the core's builder checks every CTM option and loads the teacher
    base = ctm(fields, info, teacher=teacher, teacher_steps=teacher_steps, teacher_sampler=teacher_sampler,
                          distance=distance, dsm_weight=dsm_weight, u_fraction=u_fraction, u_random=u_random,
                          compare=compare, p_end=p_end, p_max=p_max, t_density=t_density)
    keys = list((info or {}).get("conditions") or {})
    if not keys:
        raise ValueError("objective 'soundctm' distils a conditional teacher: the data has no conditions "
                         "(data.conditioning: caption or label)")
    return SoundCTMObjective(GuidedTeacher(base.teacher, keys), fields, base.teacher_fields, keys,
                             (float(omega_low), float(omega_high)), float(student_cond_drop), base.options)


__all__ = ["OMEGA", "GuidedTeacher", "SoundCTMObjective", "soundctm", "teacher_features"]
