"""Opt-in training techniques, each a function or a model wrapper that a config switch turns on.

- Minibatch noise assignment ("immiscible diffusion", Li et al. 2024): each data point is
  paired with a nearby noise draw of the batch by a linear assignment, solved in pure torch
  (:func:`auction_assignment`, Bertsekas' auction with epsilon scaling, exact to ``n eps``; or
  :func:`sinkhorn_assignment`, entropic OT rounded greedily), batched over groups, on any
  device. :func:`immiscible_loss` applies it to :func:`polydiff.losses.diffusion_loss`.
- :func:`fokker_planck_penalty`: the score Fokker-Planck residual (Lai et al. 2023) as a
  regulariser, with Hutchinson divergences (unbiased squared norm from two probes), optionally
  at times restricted to a range (:func:`fp_times`) and normalised per time
  (:func:`fp_normalizer`); for energy models also the scalar residual of the log-density
  (:func:`log_density_residual`, finite differences only: one order of differentiation less).
- :class:`ScoreAugment`: score augmentation (Hou et al. 2025, "ScoreAug"): transform the noisy
  input, ask for the transformed target, and tell the network which transform was used.
- :class:`SelfConditioning`: self-conditioning (Chen et al. 2023, "Analog bits"): the
  network also sees its own previous clean estimate.
- :data:`ALIGNMENTS` / :func:`aligned_loss`: per-sample prior-to-data alignment (a plugin
  registers how to move its data onto the noise draw it will be paired with: for molecules,
  the rotation and atom permutation that bring each molecule closest to its noise).
- :class:`Techniques` / :func:`technique_loss`: the config switches and the loss using them.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from .conditions import drop_condition
from .estimates import batch_of, call, field_coefs, gaussian_names, tree_map, x0_eps
from .losses import corrupt, diffusion_loss, sample_time
from .random import Noise
from .registry import Registry
from .state import FieldSpec, Packer, State

Model = Callable[..., Mapping[str, Tensor]]
_DENSITY_OPTIONS = ("p_mean", "p_std", "m", "std", "loc", "scale")


# --------------------------------------------------------------------------------------------
# linear assignment in pure torch
# --------------------------------------------------------------------------------------------
def auction_assignment(cost: Tensor, *, eps: float | None = None, scaling: float = 5.0,
                       max_iter: int = 1_000_000) -> Tensor:
    """Minimum-cost perfect matching of each square cost matrix (n, n) or batch (G, n, n).

    Returns ``perm`` (n,) / (G, n): row ``i`` is matched to column ``perm[i]``. Jacobi-style
    forward auction (Bertsekas 1988): every unassigned row bids for its best column by the
    margin over its second best plus ``eps``; columns go to the highest bidder. Epsilon scaling
    from the cost range down to ``eps`` (default ``1e-9`` of the range over n), so the total
    cost is within ``n eps`` of the optimum. Loops until every row is assigned (one host check
    per round).
    """
    squeeze = cost.dim() == 2
    benefit = -(cost[None] if squeeze else cost).double()
    g, n, _ = benefit.shape
    dev = benefit.device
    if n == 1:
        perm = torch.zeros(g, 1, dtype=torch.long, device=dev)
        return perm[0] if squeeze else perm
    spread = (benefit.amax((1, 2)) - benefit.amin((1, 2))).clamp_min(1e-12)
    final = spread * 1e-9 / n if eps is None else torch.full_like(spread, eps)
    prices = torch.zeros(g, n, dtype=torch.float64, device=dev)
    offs = (torch.arange(g, device=dev) * n)[:, None]
    rows = torch.arange(n, device=dev).expand(g, n)
    level = spread / scaling
    it = 0
    while True:
        e = torch.maximum(level, final)
        owner = torch.full((g * n,), -1, dtype=torch.long, device=dev)  # column -> row
        match = torch.full((g, n), -1, dtype=torch.long, device=dev)  # row -> column
        while True:
            free = match < 0
            if not bool(free.any()):
                break
            it += 1
            if it > max_iter:
                raise RuntimeError(f"auction did not converge in {max_iter} rounds")
            top = (benefit - prices[:, None, :]).topk(2, dim=2)
            j1 = top.indices[..., 0]
            bid = prices.gather(1, j1) + top.values[..., 0] - top.values[..., 1] + e[:, None]
            col = (j1 + offs)[free]
            best = torch.full((g * n,), float("-inf"), dtype=torch.float64, device=dev)
            best = best.scatter_reduce(0, col, bid[free], "amax")
            winner = free & (bid == best[j1 + offs])
            win = torch.full((g * n,), n, dtype=torch.long, device=dev)
            win = win.scatter_reduce(0, (j1 + offs)[winner], rows[winner], "amin")
            taken = (win < n).nonzero()[:, 0]  # flat columns that received bids
            prev = owner[taken]
            grp = taken // n
            lost = prev >= 0
            match.view(-1)[grp[lost] * n + prev[lost]] = -1
            owner[taken] = win[taken]
            match.view(-1)[grp * n + win[taken]] = taken % n
            prices.view(-1)[taken] = best[taken]
        if bool((e <= final).all()):
            break
        level = level / scaling
    return match[0] if squeeze else match


def sinkhorn_assignment(cost: Tensor, *, reg: float = 0.01, iters: int = 200) -> Tensor:
    """Approximate minimum-cost matching: entropic OT (log-domain Sinkhorn, ``reg`` relative to
    the cost range) rounded to a permutation by taking the largest remaining plan entry n times.
    Faster than the auction for large n; not exactly optimal."""
    squeeze = cost.dim() == 2
    c = (cost[None] if squeeze else cost).double()
    g, n, _ = c.shape
    span = (c.amax((1, 2)) - c.amin((1, 2))).clamp_min(1e-12)[:, None, None]
    logk = -c / (reg * span)
    u = torch.zeros(g, n, 1, dtype=torch.float64, device=c.device)
    v = torch.zeros(g, 1, n, dtype=torch.float64, device=c.device)
    for _ in range(iters):
        u = -torch.logsumexp(logk + v, 2, keepdim=True)
        v = -torch.logsumexp(logk + u, 1, keepdim=True)
    plan = (logk + u + v).clone()
    match = torch.empty(g, n, dtype=torch.long, device=c.device)
    ar = torch.arange(g, device=c.device)
    for _ in range(n):
        flat = plan.reshape(g, -1).argmax(1)
        i, j = flat // n, flat % n
        match[ar, i] = j
        plan[ar, i, :] = float("-inf")
        plan[ar, :, j] = float("-inf")
    return match[0] if squeeze else match


ASSIGNMENTS = {"auction": auction_assignment, "sinkhorn": sinkhorn_assignment}


def assign_noise(x0: Tensor, eps: Tensor, *, metric: str = "l2", method: str = "auction", groups: int = 1) -> Tensor:
    """The permutation pairing data with noise: data ``i`` gets noise ``perm[i]``, minimising the
    summed distance (``metric`` ``"l2"`` as in Immiscible Diffusion, or ``"sq"``, squared L2 as in
    minibatch OT). ``x0``, ``eps``: (B, ...); with ``groups`` > 1 the batch is split into that
    many consecutive groups (e.g. per device) solved as one batched problem."""
    if method not in ASSIGNMENTS:
        raise ValueError(f"unknown assignment method {method!r}; allowed: {', '.join(ASSIGNMENTS)}")
    if metric not in ("l2", "sq"):
        raise ValueError(f"metric must be 'l2' or 'sq', got {metric!r}")
    b = x0.shape[0]
    if b % groups:
        raise ValueError(f"batch {b} does not split into {groups} groups")
    a = x0.reshape(groups, b // groups, -1).double()
    e = eps.reshape(groups, b // groups, -1).double()
    d = torch.cdist(a, e)
    perm = ASSIGNMENTS[method](d**2 if metric == "sq" else d)
    return (perm + (torch.arange(groups, device=perm.device) * (b // groups))[:, None]).reshape(-1)


def fork_noise(noise: Noise) -> Noise:
    """A copy of a noise stream that will produce the same next draws (counter-based seeds are
    copied; a ``torch.Generator``'s state is cloned)."""
    out = copy.copy(noise)
    if noise.generator is not None:
        gen = torch.Generator(device=noise.generator.device)
        gen.set_state(noise.generator.get_state())
        out.generator = gen
    return out


def _preview_noise(fields: Mapping[str, FieldSpec], batch: State, noise: Noise, time_density: str,
                   loss_options: dict[str, Any], what: str) -> tuple[Tensor, dict[str, Tensor]]:
    """The times (``loss_options["t"]``, popped, or drawn) and the Gaussian fields' structured
    noise the loss is about to draw, drawn on a fork of ``noise`` so the loss draws them again."""
    dens = {k: v for k, v in loss_options.items() if k in _DENSITY_OPTIONS}
    t = loss_options.pop("t", None)
    if t is None:
        t = sample_time(fields, noise, time_density, **dens)
    dev = next(iter(batch.values())).device
    _, aux = corrupt(fields, batch, t.to(dev), fork_noise(noise))
    eps = {k: aux[k][0] for k in gaussian_names(fields)}
    if not eps:
        raise ValueError(f"{what} needs a Gaussian field")
    return t, eps


def immiscible_loss(model: Model, fields: Mapping[str, FieldSpec], batch: State, noise: Noise, *,
                    method: str = "auction", metric: str = "l2", time_density: str = "uniform", cond: Any = None,
                    **loss_options: Any) -> tuple[Tensor, dict[str, Tensor]]:
    """:func:`polydiff.losses.diffusion_loss` with minibatch noise assignment.

    The times and the noise the loss is about to draw are drawn first on a fork of ``noise``;
    the batch is then permuted so that each data point lands in the slot of the noise draw it
    is assigned to (distance over all Gaussian fields), and the loss runs with the same draws.
    Structured noise follows its sample (masks move with the data).
    """
    t, noises = _preview_noise(fields, batch, noise, time_density, loss_options, "immiscible diffusion")
    x0 = torch.cat([batch[k].reshape(batch[k].shape[0], -1) for k in noises], 1)
    eps = torch.cat([v.reshape(v.shape[0], -1) for v in noises.values()], 1)
    perm = assign_noise(x0, eps, metric=metric, method=method)
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(len(perm), device=perm.device)
    b = x0.shape[0]
    batch = tree_map(lambda v: v[inv], batch, b)
    cond = tree_map(lambda v: v[inv], cond, b)
    return diffusion_loss(model, fields, batch, noise, cond=cond, t=t, time_density=time_density, **loss_options)


ALIGNMENTS: Registry = Registry("prior-to-data alignment")
Alignment = Callable[[State, Mapping[str, Tensor]], State]


def aligned_loss(model: Model, fields: Mapping[str, FieldSpec], batch: State, noise: Noise, align: Alignment, *,
                 time_density: str = "uniform", cond: Any = None, **loss_options: Any
                 ) -> tuple[Tensor, dict[str, Tensor]]:
    """:func:`polydiff.losses.diffusion_loss` with each sample moved onto its own noise draw.

    The times and noise the loss is about to draw are drawn first on a fork of ``noise``;
    ``align(batch, eps)`` (``eps``: the Gaussian fields' structured noise) returns the batch
    transformed by symmetries of the data distribution (rotations, permutations of identical
    parts) so that it lies closer to its noise; the loss then runs with the same draws. The
    alignment must keep every mask and shape, so the draws stay the same.
    """
    t, eps = _preview_noise(fields, batch, noise, time_density, loss_options, "prior-to-data alignment")
    with torch.no_grad():
        moved = align(batch, eps)
    batch = {**batch, **moved}
    return diffusion_loss(model, fields, batch, noise, cond=cond, t=t, time_density=time_density, **loss_options)


# --------------------------------------------------------------------------------------------
# Fokker-Planck regulariser
# --------------------------------------------------------------------------------------------
def score_residual(model: Callable[..., Any], fields: Mapping[str, FieldSpec], state: State, t: Tensor, *,
                   cond: Any = None, probes: list[Tensor] | None = None, h: float = 1e-4,
                   create_graph: bool = False) -> Tensor:
    """The score Fokker-Planck residual ``d s/dt - grad Phi`` (B, D) of the Gaussian fields of
    ``state`` at per-sample times ``t`` (B,), packed. ``model`` is state-level. ``probes``
    (packed, projected) selects Hutchinson's divergence with one probe, else it is exact.
    ``d s/dt`` is a central difference with relative step ``h``; ``create_graph`` keeps the
    graph (for a training regulariser)."""
    packer = Packer(fields, state)
    aux = {k: v for k, v in state.items() if k not in packer.names}
    names = packer.names

    def score(xp: Tensor, tt: Tensor) -> Tensor:
        st = {**aux, **packer.unpack(xp)}
        est = x0_eps(call(model, st, tt, cond), st, tt, fields, names)
        return packer.pack({k: -fields[k].structure.project(est[k][1], st) / field_coefs(fields[k], tt, st[k]).sigma
                            for k in names})

    def project(v: Tensor) -> Tensor:
        st = {**aux, **packer.unpack(v)}
        return packer.pack({k: fields[k].structure.project(st[k], st) for k in names})

    x = packer.pack(state).detach().requires_grad_(True)
    fs, g2s = {}, {}
    for k in names:
        tt = t.to(torch.float64).reshape(-1, *([1] * (state[k].dim() - 1)))
        f, g2 = fields[k].process.schedule.drift_diffusion(tt)
        fs[k], g2s[k] = f.to(x.dtype).expand_as(state[k]), g2.to(x.dtype).expand_as(state[k])
    f, half_g2 = packer.pack(fs), 0.5 * packer.pack(g2s)
    with torch.enable_grad():
        s = score(x, t)
        ds_dt = (score(x, t * (1 + h)) - score(x, t * (1 - h))) / (2 * h * t.to(x.dtype)[:, None])
        if probes is None:
            eye = torch.eye(x.shape[1], dtype=x.dtype, device=x.device)
            vecs = [project(eye[j].expand_as(x)) for j in range(x.shape[1])]
        else:
            vecs = probes
        div = 0
        for u in vecs:
            (ju,) = torch.autograd.grad(s, x, half_g2 * u, create_graph=True)
            div = div + (ju * u).sum(1)
        phi = (-f * x * s + half_g2 * s * s).sum(1) + div
        (grad_phi,) = torch.autograd.grad(phi.sum(), x, create_graph=create_graph)
    return project(ds_dt - grad_phi)


def log_density_residual(model: Callable[..., Any], fields: Mapping[str, FieldSpec], state: State, t: Tensor,
                         probes: Sequence[Tensor], *, cond: Any = None, h: float = 1e-2, x_step: float = 1e-2
                         ) -> tuple[Tensor, Tensor]:
    """The log-density Fokker-Planck residual of an energy model as ``(gamma (B,), div (B, P))``:
    ``R = gamma - div[:, j]`` estimates it with probe ``j``, ``gamma - div.sum(1)`` over a basis.

    With ``log q = -E`` (the model's extra output ``"energy"``), ``s`` its projected score, per
    Gaussian field the drift ``f x`` and diffusion ``g**2`` of the forward SDE::

        R = d(log q)/dt + sum_k f_k dof_k + f x . s - g**2 / 2 (div s + |s|**2)

    which is zero for the true ``log q_t`` (divide the density's Fokker-Planck equation by ``q``).
    Every derivative is a finite difference of model outputs, so training differentiates through
    the energy's gradient only once (ScoreMD's ``residual_fp``; the score form
    :func:`score_residual` needs one more order): ``d(log q)/dt`` a central difference with
    relative step ``h``; ``div s`` along each probe ``u`` (packed, projected) as ``u . (s(x + e
    u) - s(x - e u)) / (2 e)`` with ``e = x_step * sigma(t)`` (the smallest over the fields), an
    unbiased estimate for a probe of unit covariance (Hutchinson), exact summed over a basis. All
    ``2 P + 3`` evaluations go through the model as one batch. ``R`` is blind to a function of
    ``t`` alone added to ``log q`` apart from its time derivative: the residual also fixes the
    energy's normalisation over time, which the energy's own function of ``t`` can absorb."""
    packer = Packer(fields, state)
    names = packer.names
    aux = {k: v for k, v in state.items() if k not in names}
    x = packer.pack(state).detach()
    b, n_eval = x.shape[0], 2 * len(probes) + 3
    tt = t.to(torch.float64)
    fs, g2s, fdof, sig = {}, {}, torch.zeros(b, dtype=x.dtype, device=x.device), None
    for k in names:
        shape = (-1, *([1] * (state[k].dim() - 1)))
        sched = fields[k].process.schedule
        f, g2 = sched.drift_diffusion(tt.reshape(shape))
        fs[k], g2s[k] = f.to(x.dtype).expand_as(state[k]), g2.to(x.dtype).expand_as(state[k])
        fdof = fdof + f.reshape(-1).to(x.dtype) * fields[k].structure.dof(state[k], state).to(x.dtype)
        sk = sched.sigma(tt).to(x.dtype)
        sig = sk if sig is None else torch.minimum(sig, sk)
    f, half_g2 = packer.pack(fs), 0.5 * packer.pack(g2s)
    e = (x_step * sig)[:, None]
    shifted = [x + sign * e * u for u in probes for sign in (1.0, -1.0)]
    xs = torch.cat([x, *shifted, x, x])
    t_all = torch.cat([t] * (n_eval - 2) + [t * (1 + h), t * (1 - h)])
    big = {**tree_map(lambda v: torch.cat([v] * n_eval), aux, b), **packer.unpack(xs)}
    big_cond = tree_map(lambda v: torch.cat([v] * n_eval), cond, b)
    out = call(model, big, t_all, big_cond)
    if "energy" not in out:
        raise ValueError("the log-density Fokker-Planck residual needs a model that returns its energy (the extra "
                         f"output 'energy', e.g. polydiff.plugin.EnergyModel); this one returned {sorted(out)}")
    est = x0_eps(out, big, t_all, fields, names)
    scores = packer.pack({k: -fields[k].structure.project(est[k][1], big)
                          / field_coefs(fields[k], t_all, big[k]).sigma for k in names}).reshape(n_eval, b, -1)
    energy = out["energy"].reshape(n_eval, b)
    s = scores[0]
    dlogq_dt = (energy[-1] - energy[-2]) / (2 * h * t.to(x.dtype))
    gamma = dlogq_dt + fdof + (f * x * s).sum(1) - (half_g2 * s * s).sum(1)
    divs = [(half_g2 * u * (scores[1 + 2 * i] - scores[2 + 2 * i])).sum(1) / (2 * e[:, 0])
            for i, u in enumerate(probes)]
    return gamma, torch.stack(divs, 1)


FP_RESIDUALS = ("score", "log_density")
FP_TIME_DENSITIES = ("uniform", "log_uniform")


def fp_normalizer(fields: Mapping[str, FieldSpec], state: State, t: Tensor, power: int = 3) -> Tensor:
    """Per-entry factor ``sigma(t)**3 / g(t)**2`` (packed, (B, D)) that makes the score
    Fokker-Planck residual dimensionless and O(1) at every time.

    Derivation. Write ``g**2 = -sigma**2 dlam/dt`` (``lam`` = log-SNR; true of any affine
    schedule). If the score is off by an amount of its own size, e.g. ``s = k s*`` with
    ``s* = -x / sigma**2`` (data concentrated on a point, the small-noise limit of any data),
    the residual is ``k (1 - k) g**2 x / sigma**4``, whose squared norm per dimension is
    ``k**2 (k - 1)**2 g**4 / sigma**6``: it grows like ``t**-3`` as ``t -> 0`` on a VP
    schedule. Times ``sigma**3 / g**2`` it is ``k (1 - k) x / sigma``, i.e. exactly
    ``k**2 (k - 1)**2`` per dimension at every t and for every schedule; for data of variance
    ``v0`` it is that times ``(sigma**2 / (alpha**2 v0 + sigma**2))**3 <= 1``. Equivalently, the
    normalised residual is the residual of the score in noise units (``sigma s``) per unit of
    log-SNR (``sigma**3 / g**2 = sigma / |dlam/dt|``, as ``d/dt = (dlam/dt) d/dlam``); it
    does not change when time is reparametrised or the data rescaled. ``power=2`` gives
    ``sigma**2 / g**2 = 1 / |dlam/dt|``, which makes the (dimensionless) log-density residual one
    per unit of log-SNR."""
    packer = Packer(fields, state)
    out = {}
    for k in packer.names:
        tt = t.to(torch.float64).reshape(-1, *([1] * (state[k].dim() - 1)))
        _, g2 = fields[k].process.schedule.drift_diffusion(tt)
        sigma = fields[k].process.schedule.sigma(tt)
        out[k] = (sigma**power / g2).to(state[k].dtype).expand_as(state[k])
    return packer.pack(out)


def fp_times(fields: Mapping[str, FieldSpec], noise: Noise, t_range: Sequence[float], density: str = "log_uniform"
             ) -> Tensor:
    """One penalty time per sample (B,), float64, in ``t_range = (lo, hi)``: uniform, or
    log-uniform (uniform in ``log t``; every decade of time gets the same share)."""
    if density not in FP_TIME_DENSITIES:
        raise ValueError(f"fp time density must be one of {', '.join(FP_TIME_DENSITIES)}, got {density!r}")
    lo, hi = (float(v) for v in t_range)
    ref = next((f.process.schedule for f in fields.values() if f.kind == "gaussian"), None)
    t_max = float(ref.t_max) if ref is not None else 1.0
    if not 0.0 < lo < hi <= t_max:
        raise ValueError(f"fp_t_range must be [lo, hi] with 0 < lo < hi <= t_max = {t_max:g}, got [{lo:g}, {hi:g}]")
    u = noise.rand(())
    if density == "uniform":
        return lo + (hi - lo) * u
    return torch.exp(math.log(lo) + (math.log(hi) - math.log(lo)) * u)


def fokker_planck_penalty(model: Model, fields: Mapping[str, FieldSpec], batch: State, noise: Noise, *,
                          cond: Any = None, time_density: str = "uniform", h: float = 1e-2,
                          divergence: str = "hutchinson", t_range: Sequence[float] | None = None,
                          range_density: str = "log_uniform", normalize: bool = False, clip: float | None = None,
                          residual: str = "score", x_step: float = 1e-2, **density_options: float) -> Tensor:
    """The squared Fokker-Planck residual per dimension at one random time per sample, with the
    graph kept for training (it needs double backpropagation through the network).

    ``residual="score"``: the residual of the score's equation (:func:`score_residual`, a vector:
    its squared norm over ``D`` entries). ``"log_density"``: an energy model's scalar residual of
    ``log q = -E`` (:func:`log_density_residual`, squared over ``D**2`` as ScoreMD does), with
    every derivative a finite difference (``x_step``: the step in x, relative to ``sigma(t)``),
    one order of differentiation cheaper and compilable (``train.compile``).

    Times: from the loss's ``time_density`` (with ``density_options``), or, given ``t_range =
    (lo, hi)``, drawn within it by ``range_density`` (:func:`fp_times`), independently of the
    loss's density. ``normalize`` multiplies the residual by :func:`fp_normalizer`
    (``sigma**3 / g**2``), so that a score error of the score's own size costs O(1) at every
    time instead of growing like ``sigma**-6``. ``divergence="hutchinson"`` estimates the
    squared norm without bias from two independent probes (noisy, cheap); ``"exact"`` takes one
    vector-Jacobian product per dimension (small fields). ``h``: relative time step of the
    central difference ``d s/dt``. ``clip``: a soft cap ``c`` on each sample's penalty,
    ``c * tanh(p / c)`` (unchanged for ``|p| << c``, at most ``c``), so that the few samples with
    heavy-tailed residuals (those near the edge of the data, where the score is least known)
    cannot dominate the batch's penalty and its gradient."""
    if clip is not None and not (math.isfinite(clip) and clip > 0):
        raise ValueError(f"clip must be a finite number > 0, got {clip!r}")
    if divergence not in ("exact", "hutchinson"):
        raise ValueError(f"divergence must be 'exact' or 'hutchinson', got {divergence!r}")
    if residual not in FP_RESIDUALS:
        raise ValueError(f"residual must be one of {', '.join(FP_RESIDUALS)}, got {residual!r}")
    if t_range is None:
        t = sample_time(fields, noise, time_density, **density_options)
    else:
        t = fp_times(fields, noise, t_range, range_density)
    dev = next(iter(batch.values())).device
    noisy, _ = corrupt(fields, batch, t.to(dev), noise)
    packer = Packer(fields, noisy)
    if not packer.names:
        raise ValueError("the Fokker-Planck penalty needs a Gaussian field")
    dtype = noisy[packer.names[0]].dtype
    dim = packer.pack(noisy).shape[1]
    tt = t.to(dev, dtype)
    # normalised: the score residual times sigma**3 / g**2 per entry; the log-density residual
    # (dimensionless already) times sigma**2 / g**2 = 1 / |d lambda / dt|, i.e. per unit of log-SNR
    scale = fp_normalizer(fields, noisy, t.to(dev), power=2 if residual == "log_density" else 3) if normalize else None

    def project(v: Tensor) -> Tensor:
        return packer.pack({k: fields[k].structure.project(z, noisy) for k, z in packer.unpack(v).items()})

    if divergence == "hutchinson":
        probes = [project(noise.randn((dim,), dtype).to(dev)) for _ in range(2)]
    if residual == "log_density":
        if divergence == "exact":
            eye = torch.eye(dim, dtype=dtype, device=dev)
            probes = [project(eye[j].expand(tt.shape[0], dim)) for j in range(dim)]
        gamma, div = log_density_residual(model, fields, noisy, tt, probes, cond=cond, h=h, x_step=x_step)
        r = gamma[:, None] - (div.sum(1, keepdim=True) if divergence == "exact" else div)
        if scale is not None:
            r = r * scale.mean(1, keepdim=True)
        per = r[:, 0] * r[:, -1] / dim**2  # two probes' product (unbiased), or the exact residual squared
    else:
        def vector(ps: list[Tensor] | None) -> Tensor:
            r = score_residual(model, fields, noisy, tt, cond=cond, probes=ps, h=h, create_graph=True)
            return r if scale is None else r * scale

        if divergence == "exact":
            r = vector(None)
            per = (r * r).sum(1) / dim
        else:
            ra, rb = vector([probes[0]]), vector([probes[1]])
            per = (ra * rb).sum(1) / dim
    if clip is not None:
        per = clip * torch.tanh(per / clip)
    return per.mean()


# --------------------------------------------------------------------------------------------
# score augmentation
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Transform:
    """An invertible map of states: ``forward`` acts on the (noisy) input state, ``inverse`` on
    the network's predictions. Orthogonal linear maps (flips, permutations, rotations) keep the
    Gaussian noise Gaussian, which makes score augmentation exact."""

    forward: Callable[[State], State]
    inverse: Callable[[Mapping[str, Tensor]], dict[str, Tensor]]
    name: str = "transform"


def flip(keys: Sequence[str], dim: int) -> Transform:
    """Reverse entries ``keys`` (of the state, and of the predictions) along ``dim`` (>= 1)."""

    def fwd(st: Mapping[str, Tensor]) -> dict[str, Tensor]:
        return {**st, **{k: st[k].flip(dim) for k in keys if k in st}}

    return Transform(fwd, fwd, f"flip:{','.join(keys)}:{dim}")


def parse_transform(spec: str) -> Transform:
    """``"flip:x:1"`` (reverse field ``x`` along dim 1; several fields ``"flip:x,mask:1"``)."""
    kind, _, rest = spec.partition(":")
    if kind == "flip":
        keys, _, dim = rest.rpartition(":")
        return flip(keys.split(","), int(dim))
    raise ValueError(f"unknown transform {spec!r}; allowed: flip:<keys>:<dim>")


class ScoreAugment:
    """Score augmentation (Hou et al. 2025): with probability ``p`` per sample one of
    ``transforms`` is applied to the noisy state, the network is asked for the transformed
    target, and its prediction is mapped back, so the loss (on the original target) trains
    ``net(T x_t) = T target`` for orthogonal ``T``. The transform's index (0 = none) is written
    to ``state[label_key]`` so the network can be told (non-leaky conditioning); at sampling
    time give it 0. A training-time wrapper of the state-level network."""

    def __init__(self, model: Model, transforms: Sequence[Transform], p: float = 0.5, label_key: str = "augment",
                 generator: torch.Generator | None = None) -> None:
        self.model, self.transforms, self.p, self.key, self.generator = model, list(transforms), p, label_key, generator

    def __call__(self, state: State, t: Tensor, cond: Any = None) -> dict[str, Tensor]:
        b = batch_of(state)
        dev = next(v.device for v in state.values() if isinstance(v, Tensor))
        u = torch.rand(b, generator=self.generator).to(dev)
        pick = torch.randint(len(self.transforms), (b,), generator=self.generator).to(dev) + 1
        choice = torch.where(u < self.p, pick, torch.zeros_like(pick))
        st = dict(state)
        for j, tr in enumerate(self.transforms, 1):
            moved = tr.forward(state)
            st = _select(choice == j, moved, st)
        st[self.key] = choice
        out = dict(call(self.model, st, t, cond))
        res = dict(out)
        for j, tr in enumerate(self.transforms, 1):
            res = _select(choice == j, tr.inverse(out), res)
        return res


def _select(sel: Tensor, a: Mapping[str, Tensor], b: dict[str, Tensor]) -> dict[str, Tensor]:
    """Per sample, the entries of ``a`` where ``sel`` (B,) else those of ``b``."""
    out = dict(b)
    for k, v in a.items():
        if k in b and isinstance(v, Tensor) and v.dim() and v.shape[0] == sel.shape[0] and v is not b[k]:
            out[k] = torch.where(sel.reshape(-1, *([1] * (v.dim() - 1))), v, b[k])
    return out


# --------------------------------------------------------------------------------------------
# self-conditioning
# --------------------------------------------------------------------------------------------
class SelfConditioning:
    """Self-conditioning (Chen et al. 2023): the network also receives a clean estimate of each
    Gaussian field under ``state[prefix + field]`` (zeros when there is none).

    In training (``training=True``), with probability ``p`` per batch a first pass without
    gradient makes the estimate; otherwise it is zeros. Training draws that choice from a
    ``generator`` seeded per step and shared by every process: under FSDP each network call
    gathers the weights' shards, so all ranks must make the same number of calls (a rank that
    made one more would wait for the others forever). In sampling, the estimate of the
    previous call is fed back (kept on the wrapper: call :meth:`reset` between runs; it is not
    re-indexed when SMC resamples particles)."""

    def __init__(self, model: Model, fields: Mapping[str, FieldSpec], p: float = 0.5, *, prefix: str = "sc_",
                 training: bool = True, keys: Sequence[str] | None = None,
                 generator: torch.Generator | None = None) -> None:
        self.model, self.fields, self.p, self.prefix, self.training = model, fields, p, prefix, training
        self.names, self.generator = gaussian_names(fields, keys), generator
        self.last: dict[str, Tensor] | None = None

    def reset(self) -> None:
        """Forget the last prediction (at the start of a new sampling run)."""
        self.last = None

    def __call__(self, state: State, t: Tensor, cond: Any = None) -> Mapping[str, Tensor]:
        zeros = {self.prefix + k: torch.zeros_like(state[k]) for k in self.names}
        if self.training:
            st = {**state, **zeros}
            if float(torch.rand((), generator=self.generator)) < self.p:
                with torch.no_grad():
                    est = x0_eps(call(self.model, st, t, cond), st, t, self.fields, self.names)
                st.update({self.prefix + k: est[k][0].detach() for k in self.names})
            return call(self.model, st, t, cond)
        prev = self.last
        if prev is None or any(prev[self.prefix + k].shape != state[k].shape for k in self.names):
            prev = zeros
        st = {**state, **prev}
        out = call(self.model, st, t, cond)
        est = x0_eps(out, st, t, self.fields, self.names)
        self.last = {self.prefix + k: est[k][0].detach().to(state[k].dtype) for k in self.names}
        return out


class SelfConditioned(torch.nn.Module):
    """A network trained with self-conditioning, as samplers call it: every call receives the
    clean estimate of the previous call (zeros at the first), as the network saw with
    probability ``p`` in training. Make one per sampling run (it keeps the last estimate)."""

    def __init__(self, net: torch.nn.Module, fields: Mapping[str, FieldSpec], prefix: str = "sc_") -> None:
        super().__init__()
        self.net = net
        self._sc = SelfConditioning(net, fields, prefix=prefix, training=False)

    def forward(self, state: State, t: Tensor, cond: Any = None) -> Mapping[str, Tensor]:
        return self._sc(state, t, cond)


# --------------------------------------------------------------------------------------------
# config switches
# --------------------------------------------------------------------------------------------
@dataclass
class Techniques:
    """The opt-in training techniques, as read from a recipe's ``loss.techniques`` section:

    ``immiscible`` (bool), ``assignment`` ("auction" | "sinkhorn"), ``metric`` ("l2" | "sq"),
    ``align`` (the name of a registered per-sample alignment, :data:`ALIGNMENTS`),
    ``self_condition`` (probability), ``score_augment`` (probability) with ``augment``
    (transform specs such as ``"flip:x:1"``), ``fp_weight`` (Fokker-Planck penalty weight)
    with ``fp_step`` (relative time step of ``d s/dt``, in (0, 0.5]), ``fp_t_range`` (``[lo,
    hi]``: penalty times drawn there instead of from the loss's time density), ``fp_t_density``
    (how within the range: "log_uniform", the default, or "uniform") and ``fp_normalize``
    (scale the residual by ``sigma**3 / g**2`` so it stays O(1) as t -> 0, see
    :func:`fp_normalizer`), ``fp_clip`` (a soft cap on each sample's penalty, see
    :func:`fokker_planck_penalty`), ``fp_residual`` ("score", the default, or "log_density" for
    energy models: :func:`log_density_residual`) with ``fp_x_step`` (its finite-difference step in
    x relative to ``sigma(t)``, in (0, 0.5]), ``cond_drop`` (condition dropout probability) with
    ``condition_keys``.
    """

    immiscible: bool = False
    align: str = ""
    assignment: str = "auction"
    metric: str = "l2"
    self_condition: float = 0.0
    score_augment: float = 0.0
    augment: list[str] = field(default_factory=list)
    fp_weight: float = 0.0
    fp_step: float = 1e-2
    fp_t_range: tuple[float, float] | None = None
    fp_t_density: str = field(default="log_uniform", metadata={"choices": FP_TIME_DENSITIES})
    fp_normalize: bool = False
    fp_clip: float | None = None
    fp_residual: str = field(default="score", metadata={"choices": FP_RESIDUALS})
    fp_x_step: float = 1e-2
    cond_drop: float = 0.0
    condition_keys: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.check_fokker_planck()

    def check_fokker_planck(self) -> None:
        """Raise ValueError, naming the ``loss.techniques`` key, for inconsistent FP options."""
        where = "loss.techniques"
        if not (math.isfinite(self.fp_weight) and self.fp_weight >= 0):
            raise ValueError(f"{where}.fp_weight must be a finite number >= 0, got {self.fp_weight!r}")
        if not 0 < self.fp_step <= 0.5:
            raise ValueError(f"{where}.fp_step (relative time step of d s/dt) must be in (0, 0.5], got "
                             f"{self.fp_step!r}")
        if self.fp_t_density not in FP_TIME_DENSITIES:
            raise ValueError(f"{where}.fp_t_density must be one of {', '.join(FP_TIME_DENSITIES)}, got "
                             f"{self.fp_t_density!r}")
        if self.fp_t_range is not None:
            rng = self.fp_t_range
            if isinstance(rng, (str, bytes)) or not isinstance(rng, Sequence) or len(rng) != 2:
                raise ValueError(f"{where}.fp_t_range must be a pair [lo, hi], got {rng!r}")
            try:
                lo, hi = float(rng[0]), float(rng[1])
            except (TypeError, ValueError):
                raise ValueError(f"{where}.fp_t_range must hold two numbers, got {rng!r}") from None
            if not (math.isfinite(hi) and 0 < lo < hi):
                raise ValueError(f"{where}.fp_t_range must be [lo, hi] with 0 < lo < hi, got [{lo:g}, {hi:g}]")
            self.fp_t_range = (lo, hi)
        if self.fp_residual not in FP_RESIDUALS:
            raise ValueError(f"{where}.fp_residual must be one of {', '.join(FP_RESIDUALS)}, got "
                             f"{self.fp_residual!r}")
        if not 0 < self.fp_x_step <= 0.5:
            raise ValueError(f"{where}.fp_x_step (finite-difference step in x, relative to sigma(t)) must be in "
                             f"(0, 0.5], got {self.fp_x_step!r}")
        if self.fp_clip is not None and not (math.isfinite(self.fp_clip) and self.fp_clip > 0):
            raise ValueError(f"{where}.fp_clip (a cap on each sample's penalty) must be a finite number > 0, got "
                             f"{self.fp_clip!r}")
        if self.fp_weight == 0:
            given = [k for k, off in (("fp_t_range", self.fp_t_range is None), ("fp_normalize", not self.fp_normalize),
                                      ("fp_clip", self.fp_clip is None), ("fp_residual", self.fp_residual == "score"),
                                      ("fp_x_step", self.fp_x_step == 1e-2)) if not off]
            if given:
                raise ValueError(f"{where}.{given[0]} has no effect without fp_weight > 0 (the Fokker-Planck "
                                 "penalty is off)")

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None) -> Techniques:
        """The recipe's ``techniques`` mapping, with unknown keys named in the error."""
        cfg = dict(cfg or {})
        allowed = set(cls.__dataclass_fields__)
        unknown = sorted(set(cfg) - allowed)
        if unknown:
            raise KeyError(f"unknown training techniques {unknown}; allowed: {', '.join(sorted(allowed))}")
        out = cls(**cfg)
        for name in ("self_condition", "score_augment", "cond_drop"):  # probabilities (1.5 trained as if 1)
            p = getattr(out, name)
            if isinstance(p, (int, float)) and not 0.0 <= p <= 1.0:
                raise ValueError(f"loss.techniques.{name}: expected a probability in [0, 1], got {p}")
        if "fp_t_density" in cfg and out.fp_t_range is None:
            raise ValueError("loss.techniques.fp_t_density needs fp_t_range (without a range the penalty times "
                             "follow the loss's time_density)")
        if out.align and out.immiscible:
            raise ValueError("choose one of immiscible (minibatch pairing) and align (per-sample alignment)")
        if out.align:
            ALIGNMENTS.get(out.align)  # an unknown name fails here, listing the registered ones
        return out

    def wrap(self, model: Model, fields: Mapping[str, FieldSpec], generator: torch.Generator | None = None) -> Model:
        """The network as the loss should call it (self-conditioning, score augmentation).
        ``generator``: self-conditioning's per-batch choice (see :class:`SelfConditioning`)."""
        if self.self_condition > 0:
            model = SelfConditioning(model, fields, self.self_condition, generator=generator)
        if self.score_augment > 0:
            if not self.augment:
                raise ValueError("score_augment needs transforms in `augment` (e.g. ['flip:x:1'])")
            model = ScoreAugment(model, [parse_transform(s) for s in self.augment], self.score_augment)
        return model


def technique_loss(model: Model, fields: Mapping[str, FieldSpec], batch: State, noise: Noise,
                   techniques: Techniques, *, shared: torch.Generator | None = None,
                   **loss_options: Any) -> tuple[Tensor, dict[str, Tensor]]:
    """:func:`polydiff.losses.diffusion_loss` with the techniques switched on in ``techniques``.
    ``noise`` draws per sample (its generator may differ per process); ``shared``, a CPU
    generator seeded alike on every process, draws the choices that decide how many times the
    network is called (self-conditioning's first pass), which must agree across FSDP ranks."""
    if techniques.cond_drop > 0:
        batch = drop_condition(batch, techniques.condition_keys, techniques.cond_drop, noise)
    net = techniques.wrap(model, fields, shared)
    if techniques.align:
        loss, logs = aligned_loss(net, fields, batch, noise, ALIGNMENTS.get(techniques.align), **loss_options)
    elif techniques.immiscible:
        loss, logs = immiscible_loss(net, fields, batch, noise, method=techniques.assignment,
                                     metric=techniques.metric, **loss_options)
    else:
        loss, logs = diffusion_loss(net, fields, batch, noise, **loss_options)
    if techniques.fp_weight > 0:
        dens = {k: v for k, v in loss_options.items() if k in _DENSITY_OPTIONS}
        pen = fokker_planck_penalty(model, fields, batch, noise, cond=loss_options.get("cond"), h=techniques.fp_step,
                                    time_density=loss_options.get("time_density", "uniform"),
                                    t_range=techniques.fp_t_range, range_density=techniques.fp_t_density,
                                    normalize=techniques.fp_normalize, clip=techniques.fp_clip,
                                    residual=techniques.fp_residual, x_step=techniques.fp_x_step, **dens)
        loss = loss + techniques.fp_weight * pen
        logs = {**logs, "fokker_planck": pen.detach()}
    return loss, logs
