"""Diagnostics of a trained model: is its score consistent with a diffusion at all?

- :func:`fokker_planck_residual`: the true score ``s = grad log p_t`` of a forward SDE
  ``dx = f x dt + g dW`` satisfies the score Fokker-Planck equation
  ``d s / dt = grad( -f <x, s> + g^2 / 2 (div s + |s|^2) )`` (Lai et al. 2023, "FP-Diffusion");
  a learned score does not exactly, and the size of the residual on a user's data measures by
  how much. ``d s / dt`` is a central difference in ``t`` (relative step); ``div s`` exact or Hutchinson (two
  independent probes give an unbiased estimate of the squared residual).
- :func:`ode_sde_gap`: the probability-flow ODE and the reverse SDE share their marginals only
  for the exact score; the distance between the two samplers' outputs (and to the data) is a
  cheap check of a trained model.
- :func:`polydiff.metrics.sliced_wasserstein` (re-exported here): the distance both use.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from .estimates import call, field_coefs
from .metrics import flat, sliced_wasserstein
from .samplers.driver import prepare, sample
from .state import FieldSpec, Packer, State
from .techniques import score_residual


def fokker_planck_residual(model: Callable[..., Any], process: Any, data: Tensor | Mapping[str, Any], *,
                           times: Tensor | list[float] | None = None, prediction: str = "eps", cond: Any = None,
                           divergence: str = "exact", h: float = 1e-4, seed: int = 0,
                           dtype: torch.dtype = torch.float64) -> dict[str, Tensor]:
    """Score Fokker-Planck residual of a trained model on noised copies of ``data``.

    For each time in ``times`` (default: 8 between the schedule's ends), the data are noised to
    ``x_t`` and the residual ``R = d s/dt - grad Phi`` is evaluated. Returns ``t``, ``residual``
    (mean ``|R|^2`` per dimension) and ``relative`` (``mean |R|^2 / mean (|d s/dt|^2 +
    |grad Phi|^2)``, 0 for an exact score and of order 1 for one unrelated to the SDE); with
    ``divergence="hutchinson"`` the squared norm is estimated without bias from two probes (it
    may then come out slightly negative where the residual is near zero).
    """
    single = not isinstance(data, Mapping)
    spec = tuple(data.shape) if single else dict(data)
    smodel, fields, _, noise, name = prepare(model, process, spec, prediction=prediction, seed=seed, dtype=dtype,
                                             device=(data if single else next(iter(data.values()))).device)
    clean = {name: data.to(dtype)} if single else {k: v.to(dtype) if k in fields else v for k, v in data.items()}
    packer = Packer(fields, clean)
    ref = fields[packer.names[0]].process.schedule
    if times is None:
        lo, hi = max(ref.t_min, 1e-3 * ref.t_max) * 10, ref.t_max * 0.9
        times = torch.linspace(lo, hi, 8, dtype=torch.float64)
    times = torch.as_tensor(times, dtype=torch.float64)
    batch = packer.pack(clean).shape[0]
    rows = {"t": times, "residual": [], "relative": []}
    for t in times:
        tb = t.expand(batch).to(dtype)
        noisy = dict(clean)
        for k in packer.names:
            c = field_coefs(fields[k], tb, clean[k])
            eps = fields[k].structure.noise(noise.randn(clean[k].shape[1:], dtype).to(clean[k].device), clean)
            noisy[k] = c.alpha * clean[k] + c.sigma * eps
        if divergence == "exact":
            r = score_residual(smodel, fields, noisy, tb, cond=cond, h=h)
            r2 = (r * r).sum(1)
        else:
            d = packer.pack(noisy).shape[1]
            pr = [packer.pack({k: fields[k].structure.project(v, noisy) for k, v in
                               packer.unpack(noise.randn((d,), dtype).to(tb.device)).items()}) for _ in range(2)]
            ra = score_residual(smodel, fields, noisy, tb, cond=cond, probes=[pr[0]], h=h)
            rb = score_residual(smodel, fields, noisy, tb, cond=cond, probes=[pr[1]], h=h)
            r2 = (ra * rb).sum(1)
        zero = score_residual(_Zero(smodel, fields, noisy, tb, cond), fields, noisy, tb, h=h)  # -grad Phi alone
        rows["residual"].append(r2.detach().mean() / packer.pack(noisy).shape[1])
        ds_dt = r.detach() - zero.detach() if divergence == "exact" else ra.detach() - zero.detach()
        scale = ((zero * zero).sum(1) + (ds_dt * ds_dt).sum(1)).detach().mean()
        rows["relative"].append(r2.detach().mean() / scale.clamp_min(1e-30))
    return {"t": times, "residual": torch.stack(rows["residual"]), "relative": torch.stack(rows["relative"])}


class _Zero:
    """The model's score frozen in time (so the residual reduces to ``-grad Phi``)."""

    def __init__(self, model: Callable[..., Any], fields: Mapping[str, FieldSpec], state: State, t: Tensor,
                 cond: Any) -> None:
        self.model, self.t, self.cond = model, t, cond

    def __call__(self, state: State, t: Tensor) -> Mapping[str, Tensor]:
        return call(self.model, state, self.t, self.cond)


def ode_sde_gap(model: Callable[..., Any], process: Any, shape_or_state: tuple[int, ...] | Mapping[str, Any], *,
                data: Tensor | Mapping[str, Tensor] | None = None, ode: str = "heun", sde: str = "euler_maruyama",
                steps: int = 100, seed: int = 0, projections: int = 128, **sample_options: Any) -> dict[str, float]:
    """Sliced-Wasserstein distances between the probability-flow ODE's samples, the reverse
    SDE's samples and (optionally) ``data``: ``ode_sde``, ``ode_data``, ``sde_data``. With the
    exact score ``ode_sde`` is discretisation error and sampling noise only; a larger gap flags
    a score that is not the gradient of a diffusion's log-densities."""
    a = sample(model, process, shape_or_state, sampler=ode, steps=steps, seed=seed, **sample_options)
    b = sample(model, process, shape_or_state, sampler=sde, steps=steps, seed=seed + 1, **sample_options)
    keys = None
    if isinstance(a, Mapping):
        keys = sorted(k for k in a if isinstance(shape_or_state[k], (tuple, list, torch.Size))
                      and a[k].is_floating_point())
    fa, fb = flat(a, keys), flat(b, keys)
    out = {"ode_sde": sliced_wasserstein(fa, fb, projections=projections, seed=seed)}
    if data is not None:
        fd = flat(data, keys).to(fa.device)
        out["ode_data"] = sliced_wasserstein(fa, fd, projections=projections, seed=seed)
        out["sde_data"] = sliced_wasserstein(fb, fd, projections=projections, seed=seed)
    return out

