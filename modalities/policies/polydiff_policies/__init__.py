"""polydiff-policies: the ``policies`` modality plugin (goal-conditioned robot policies).

- :mod:`.envs`: CPU Gymnasium environments with scripted multimodal experts: ``reach``
  (several routes to each goal), ``blocks`` (two blocks pushed to their targets in either
  order) and ``pusht`` (Push-T in pymunk, matching the recorded human demonstrations);
- :mod:`.episodes`: episode ``.npz`` files, training windows, min-max normalisers;
- :mod:`.nets`: BESO's transformer denoiser and the behaviour-cloning MLP (objective
  ``behaviour_cloning``);
- :mod:`.policy`: :class:`Policy` (``reset`` / ``act`` for plain Gymnasium loops, receding
  horizon, classifier-free guidance over goals) and batched :func:`rollout` s;
- :mod:`.metrics`: success, goal coverage, behaviour entropy, Push-T score;
- :mod:`.plot`: rollout pictures and GIF animations; :mod:`.modality`: the plugin class.
"""

from __future__ import annotations

__all__ = ["PoliciesModality", "Policy", "rollout"]


def __getattr__(name: str):
    if name == "PoliciesModality":
        from .modality import PoliciesModality

        return PoliciesModality
    if name in ("Policy", "rollout"):
        from . import policy

        return getattr(policy, name)
    if name == "plot":  # polydiff_policies.plot.animate(...) without importing the module first
        import importlib

        return importlib.import_module(f"{__name__}.plot")
    raise AttributeError(name)
