"""Gradient guidance for both crystal representations: a noise-aware property regressor and its
Gaussian log-likelihood ``log N(target; f(x_t, t), std^2)`` as the core's ``gradient_guidance``
potential (Dhariwal & Nichol's classifier guidance, for a regression target).

- DiffCrysGen matrices: :class:`MatrixRegressor` reads the scaled matrix ``x_t`` (EDM's input
  scaling, a learned embedding per row so it knows which element a one-hot row names) and the
  noise level; :func:`matrix_guidance` guides the ``x`` field.
- Periodic state: :class:`PeriodicRegressor` reads the noisy fractional coordinates on the torus,
  the noisy lattice, the partly masked element types and the time through the periodic message
  passing of :mod:`.periodic` (minimum-image distances and Fourier features of wrapped
  fractional differences): invariant to atom permutations, global translations and integer
  shifts of single atoms, so its gradient in the coordinates is a function on the torus (its
  Riemannian gradient, since the torus is flat in these coordinates) and sums to zero over the
  atoms. :func:`periodic_guidance` guides ``frac`` (a manifold field, moved along that gradient)
  and ``lattice`` (a Gaussian field); optionally also the element types, a discrete field the
  core's gradient guidance leaves alone, by a first-order tilt of the masked atoms' logits
  (:func:`type_guidance`).

Both regressors are trained (:func:`train_matrix_regressor`, :func:`train_periodic_regressor`)
on training crystals noised by the fields' own processes at the noise levels the default sampler
visits (its time grid, densely), and report their test MAE at several noise levels next to
predicting the training mean.

Guidance scale: ``scale`` multiplies the signal fraction ``alpha^2 v / (alpha^2 v + sigma^2)``
(``v`` the data variance: EDM's ``sigma_data^2`` for matrices, 1 for the standardised lattice),
so the push on the clean estimate, ``scale * sigma^2 alpha v / (alpha^2 v + sigma^2) * grad``,
is the Gaussian posterior variance times the gradient: finite at the noise end (where the plain
rule divides by ``alpha = 0``) and vanishing at the data end. Torus coordinates get the same
push with the uniform prior's variance 1/12 per coordinate (``sigma = t``, ``alpha = 1 - t``).
``damped=False`` gives the plain rule (``scale = 1``: classifier guidance of Gaussian fields).
"""

from __future__ import annotations

import json
import math
import pickle
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from polydiff.plugin import (
    DataBundle,
    FieldSpec,
    TimeEmbedding,
    atomic_write,
    gradient_guidance,
    input_scale,
    local_seed,
    make_grid,
    time_input,
    token_guidance,
)

from .periodic import (
    MessageLayer,
    PairFeatures,
    _gram_features,
    _lattice_stats,
    _masked_mean,
    denormalise,
    lattice_matrix,
)

MATRIX_SIGMAS = (0.01, 0.1, 0.5, 1.0, 2.0, 5.0)  # noise levels of the matrix regressor's report
PERIODIC_TIMES = (0.0, 0.25, 0.5, 0.75, 0.9)  # times of the periodic regressor's report
TORUS_VARIANCE = 1.0 / 12.0  # variance of a uniform coordinate on the unit circle


# ---------------------------------------------------------------------------------------------
# regressors
# ---------------------------------------------------------------------------------------------
class _RowBlock(nn.Module):
    """Residual ``h + conv(silu(norm(h) * (1 + a) + b))`` over the rows, FiLM from the noise."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(1, hidden, affine=False)
        self.film = nn.Linear(hidden, 2 * hidden)
        self.conv = nn.Conv1d(hidden, hidden, 3, padding=1)

    def forward(self, h: Tensor, emb: Tensor) -> Tensor:
        a, b = self.film(emb)[..., None].chunk(2, 1)
        return h + self.conv(nn.functional.silu(self.norm(h) * (1 + a) + b))


class MatrixRegressor(nn.Module):
    """``f(x_t, noise_level) -> property`` on (B, rows, cols) scaled matrices.

    The input is scaled by EDM's ``c_in = 1 / sqrt(sigma_data^2 + sigma^2)`` (``sigma =
    exp(4 noise_level)``: the inverse of ``time_input`` for EDM, whose ``alpha`` is 1), embedded
    per row with a learned row embedding, passed through residual row convolutions with the
    noise embedding as FiLM, squeezed to 8 channels per row and read by an MLP over all rows
    (row order matters: a one-hot row is an element). Targets standardised with stored buffers.
    """

    def __init__(self, rows: int, cols: int, hidden: int = 32, layers: int = 3, sigma_data: float = 0.5) -> None:
        super().__init__()
        self.config = {"rows": rows, "cols": cols, "hidden": hidden, "layers": layers, "sigma_data": sigma_data}
        self.inp = nn.Linear(cols, hidden)
        self.pos = nn.Parameter(0.02 * torch.randn(rows, hidden))
        self.noise = nn.Sequential(nn.Linear(1, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.blocks = nn.ModuleList(_RowBlock(hidden) for _ in range(layers))
        self.squeeze = nn.Linear(hidden, 8)
        self.head = nn.Sequential(nn.Linear(8 * rows + hidden, 2 * hidden), nn.SiLU(), nn.Linear(2 * hidden, 1))
        self.register_buffer("mean", torch.zeros(()))
        self.register_buffer("std", torch.ones(()))

    def forward(self, x: Tensor, noise_level: Tensor) -> Tensor:
        """Property (B,) in its own units; ``noise_level`` (B,) is ``time_input`` of the EDM sigma."""
        nl = noise_level.reshape(-1, 1).to(x.dtype)
        sigma = torch.exp(4 * nl.double()).clamp(max=1e6).to(x.dtype)
        c_in = input_scale(torch.ones_like(sigma), sigma, self.config["sigma_data"])
        emb = self.noise(nl)
        h = self.inp(x * c_in[..., None]) + self.pos + emb[:, None]
        h = h.transpose(1, 2)
        for block in self.blocks:
            h = block(h, emb)
        z = self.squeeze(h.transpose(1, 2)).flatten(1)
        return self.head(torch.cat([z, emb], -1))[:, 0] * self.std + self.mean


class PeriodicRegressor(nn.Module):
    """``f(state_t, t) -> property`` on noisy periodic states: ``frac`` (B, N, 3) on the torus,
    normalised ``lattice`` (B, 6), ``types`` (B, N) with the mask token V where still masked (or
    (B, N, V + 1) one-hots / probabilities, to differentiate in the types), ``mask`` (B, N); ``t``
    (B,) or a scalar, the flow time in [0, 1].

    Atoms start as type embedding + time embedding and go through ``layers`` :class:`MessageLayer`
    updates with the pair features of :class:`PairFeatures` (Fourier features of wrapped fractional
    differences, RBF of minimum-image distances); global features: the normalised lattice, the
    scale-free Gram matrix and log volume per atom of the denormalised cell, the time embedding.
    Mean pooling over present atoms and an MLP head give the standardised target.
    """

    def __init__(self, info: Mapping[str, Any], hidden: int = 128, layers: int = 4, fourier: int = 8,
                 rbf: int = 32, rbf_max: float = 10.0, cutoff: float | None = None) -> None:
        super().__init__()
        if not info.get("elements"):
            raise ValueError("PeriodicRegressor needs a non-empty info['elements']")
        _lattice_stats(info, torch.zeros(()))
        self.info = {k: list(info[k]) for k in ("elements", "lattice_mean", "lattice_std")}
        self.config = {"hidden": hidden, "layers": layers, "fourier": fourier, "rbf": rbf, "rbf_max": rbf_max,
                       "cutoff": cutoff}
        self.num_types = len(self.info["elements"])
        self.pairs = PairFeatures(fourier, rbf, rbf_max, cutoff, certify=False)
        self.embed = nn.Embedding(self.num_types + 1, hidden)
        self.time = TimeEmbedding(hidden)
        glob = 6 + 7 + hidden
        self.layers = nn.ModuleList(MessageLayer(hidden, self.pairs.dim, glob) for _ in range(layers))
        self.head = nn.Sequential(nn.Linear(hidden + glob, hidden), nn.SiLU(), nn.Linear(hidden, 1))
        self.register_buffer("mean", torch.zeros(()))
        self.register_buffer("std", torch.ones(()))

    def forward(self, state: Mapping[str, Tensor], t: Tensor | float) -> Tensor:
        """Property (B,) in its own units; differentiable in ``frac``, ``lattice`` and soft ``types``."""
        dt = self.embed.weight.dtype
        frac_in = state["frac"]
        b, n = frac_in.shape[:2]
        node = state["mask"] != 0 if "mask" in state else torch.ones(b, n, dtype=torch.bool, device=frac_in.device)
        frac = torch.where(node[..., None], frac_in.to(dt), torch.zeros((), dtype=dt, device=frac_in.device))
        z = state["lattice"].to(dt)
        lat = lattice_matrix(denormalise(z, self.info))
        edge, _, w = self.pairs(frac, lat, node)
        tt = torch.as_tensor(t, device=frac.device).reshape(-1).expand(b)
        emb = self.time(tt.to(dt)).to(dt)
        glob = torch.cat([z, _gram_features(lat, node.sum(1).to(dt)), emb], -1)
        given = state["types"]
        if given.is_floating_point():  # (B, N, V + 1) one-hot or probabilities: differentiable in the types
            tokens = given.to(dt) @ self.embed.weight
        else:
            tokens = self.embed(torch.where(node, given.long(), self.num_types).clamp(0, self.num_types))
        h = (tokens + emb[:, None]) * node[..., None].to(dt)
        for layer in self.layers:
            h = layer(h, edge, w, glob, node)
        out = self.head(torch.cat([_masked_mean(h, node), glob], -1))[:, 0]
        return out * self.std + self.mean


# ---------------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------------
def sampler_times(schedule: Any, n: int, generator: torch.Generator, steps: int = 1000) -> Tensor:
    """``n`` times (float64) spread like the visits of a sampler on ``schedule``'s default grid:
    uniform in the grid index of a ``steps``-interval grid, linearly interpolated between points."""
    grid = make_grid(schedule, steps)
    u = torch.rand(n, generator=generator, dtype=torch.float64) * (len(grid) - 1)
    i = u.floor().long().clamp(max=len(grid) - 2)
    f = u - i
    return grid[i] * (1 - f) + grid[i + 1] * f


def _targets(bundle: DataBundle, prop: str) -> tuple[Tensor, Tensor]:
    y, yt = bundle.train.tensors.get(prop), bundle.test.tensors.get(prop)
    if y is None or yt is None:
        raise KeyError(f"the data has no {prop!r} entries: build it with conditions=[{prop!r}]")
    for name, v in (("training", y), ("test", yt)):
        if torch.isnan(v).any():
            raise ValueError(f"{int(torch.isnan(v).sum())} {name} crystals have no {prop!r}")
    return y.double(), yt.double()


def _fit(net: nn.Module, loss_of: Callable[[Tensor, torch.Generator], Tensor], n: int, *, steps: int,
         batch_size: int, lr: float, seed: int, max_seconds: float | None) -> int:
    """AdamW for ``steps`` or ``max_seconds``, whichever ends first, the learning rate decaying on a
    cosine over the progress (the larger of the step and the time fraction); returns the steps
    taken. ``loss_of(index, generator)`` is the standardised loss of a batch."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    start = time.monotonic()
    net.train()
    done = 0
    for step in range(steps):
        progress = step / steps
        if max_seconds is not None:
            progress = max(progress, (time.monotonic() - start) / max_seconds)
        if progress >= 1:
            break
        for group in opt.param_groups:
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * progress))
        idx = torch.randint(0, n, (batch_size,), generator=gen)
        loss = loss_of(idx, gen)
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), 5.0)
        opt.step()
        done += 1
    net.eval()
    return done


def _standardise(net: nn.Module, y: Tensor) -> None:
    net.mean.fill_(float(y.mean()))
    net.std.fill_(float(y.std().clamp_min(1e-6)))


def _baselines(y: Tensor, yt: Tensor) -> dict[str, float]:
    """Test MAE of predicting the training mean (``baseline_mae``) and median (``baseline_median_mae``:
    the better constant under MAE, e.g. for band gaps that are mostly zero)."""
    return {"baseline_mae": float((yt - y.mean()).abs().mean()),
            "baseline_median_mae": float((yt - y.median()).abs().mean())}


def _evaluate(predict: Callable[[Tensor, Tensor], Tensor], yt: Tensor, name: str, levels: Sequence[float],
              draw: Callable[[int], Tensor]) -> dict[str, float]:
    """Test MAE at each fixed noise level (``test_mae_<name>_<level>``) and at the sampler's levels
    (``test_mae_sampler``), and the Pearson correlation at the first (cleanest) level
    (``test_corr_clean``); ``predict(index, times)`` predicts test crystals ``index`` at ``times``."""
    out: dict[str, float] = {}
    with torch.no_grad():
        for k, level in enumerate([*levels, None]):
            pred = []
            for s in range(0, len(yt), 256):
                idx = torch.arange(s, min(len(yt), s + 256))
                t = draw(len(idx)) if level is None else torch.full((len(idx),), level, dtype=torch.float64)
                pred.append(predict(idx, t).double())
            p = torch.cat(pred)
            out["test_mae_sampler" if level is None else f"test_mae_{name}_{level:g}"] = float((p - yt).abs().mean())
            if k == 0:
                out["test_corr_clean"] = float(torch.corrcoef(torch.stack([p, yt]))[0, 1])
    return out


def train_matrix_regressor(bundle: DataBundle, prop: str, fields: Mapping[str, FieldSpec], *, steps: int = 6000,
                           batch_size: int = 64, lr: float = 1e-3, seed: int = 0, hidden: int = 32, layers: int = 3,
                           max_seconds: float | None = None) -> tuple[MatrixRegressor, dict[str, Any]]:
    """Train a :class:`MatrixRegressor` of ``prop`` on the bundle's training matrices noised along
    the ``x`` field's process at the sampler's noise levels (:func:`sampler_times`).

    Returns the model (eval mode) and a report: ``baseline_mae`` / ``baseline_median_mae``
    (predicting the training mean / median on the test split), ``test_mae_sigma_<s>`` at the noise
    levels :data:`MATRIX_SIGMAS`, ``test_mae_sampler`` (averaged over the sampler's noise levels),
    ``steps``, ``seconds``, ``n_train``, ``n_test``."""
    proc = fields["x"].process
    sched = proc.schedule
    x, xt = bundle.train.tensors["x"], bundle.test.tensors["x"]
    y, yt = _targets(bundle, prop)
    with local_seed(seed):
        net = MatrixRegressor(x.shape[1], x.shape[2], hidden, layers, float(getattr(sched, "sigma_data", 0.5)))
    _standardise(net, y)

    def noisy(xs: Tensor, sigma: Tensor, gen: torch.Generator) -> Tensor:
        c = proc.coefs(sigma.reshape(-1, 1, 1))
        return (c.alpha * xs + c.sigma * torch.randn(xs.shape, generator=gen, dtype=torch.float64)).float()

    def loss_of(idx: Tensor, gen: torch.Generator) -> Tensor:
        sigma = sampler_times(sched, len(idx), gen)
        pred = net(noisy(x[idx], sigma, gen), time_input(sched, sigma))
        return ((pred - y[idx].float()) / net.std).pow(2).mean()

    t0 = time.perf_counter()
    done = _fit(net, loss_of, len(x), steps=steps, batch_size=batch_size, lr=lr, seed=seed, max_seconds=max_seconds)
    report: dict[str, Any] = {"steps": done, "seconds": time.perf_counter() - t0, "n_train": len(x),
                              "n_test": len(xt), **_baselines(y, yt)}
    gen = torch.Generator().manual_seed(seed + 1)

    def predict(idx: Tensor, sigma: Tensor) -> Tensor:
        return net(noisy(xt[idx], sigma, gen), time_input(sched, sigma))

    report.update(_evaluate(predict, yt, "sigma", MATRIX_SIGMAS, lambda k: sampler_times(sched, k, gen)))
    return net, report


def noisy_periodic(fields: Mapping[str, FieldSpec], clean: Mapping[str, Tensor], t: Tensor,
                   generator: torch.Generator) -> dict[str, Tensor]:
    """Clean periodic states noised to times ``t`` (B,) by each field's own process: ``frac`` on
    the geodesic to a prior draw, ``lattice`` by its Gaussian path, ``types`` masked."""
    out = dict(clean)
    frac, lat, types = clean["frac"], clean["lattice"], clean["types"]
    fp = fields["frac"].process
    draw = torch.rand if fp.prior_kind == "uniform" else torch.randn
    x1 = fp.manifold.prior(tuple(frac.shape), draw(frac.shape, generator=generator, dtype=frac.dtype))
    out["frac"] = fp.interpolate(frac, x1, t.to(frac.dtype))
    c = fields["lattice"].process.coefs(t.reshape(-1, 1).to(lat.dtype))
    out["lattice"] = c.alpha * lat + c.sigma * torch.randn(lat.shape, generator=generator, dtype=lat.dtype)
    out["types"] = fields["types"].process.q_sample(types, t, torch.rand(types.shape, generator=generator))
    return out


def train_periodic_regressor(bundle: DataBundle, prop: str, fields: Mapping[str, FieldSpec], *, steps: int = 3000,
                             batch_size: int = 64, lr: float = 1e-3, seed: int = 0, hidden: int = 128,
                             layers: int = 4, max_seconds: float | None = None, **options: Any
                             ) -> tuple[PeriodicRegressor, dict[str, Any]]:
    """Train a :class:`PeriodicRegressor` of ``prop`` on the bundle's training crystals noised by
    the fields' processes (:func:`noisy_periodic`) at the sampler's times (:func:`sampler_times` on
    the lattice's schedule); ``options``: more :class:`PeriodicRegressor` arguments.

    Returns the model (eval mode) and a report: ``baseline_mae`` / ``baseline_median_mae``
    (predicting the training mean / median on the test split), ``test_mae_t_<t>`` at the times
    :data:`PERIODIC_TIMES`, ``test_mae_sampler``, ``steps``, ``seconds``, ``n_train``, ``n_test``."""
    sched = fields["lattice"].process.schedule
    y, yt = _targets(bundle, prop)
    with local_seed(seed):
        net = PeriodicRegressor(bundle.info, hidden, layers, **options)
    _standardise(net, y)
    n_train, n_test = len(y), len(yt)

    def batch(states: Any, idx: Tensor) -> dict[str, Tensor]:
        out = states.get_batch(idx)
        return {k: out[k] for k in ("frac", "lattice", "types", "mask")}

    def loss_of(idx: Tensor, gen: torch.Generator) -> Tensor:
        t = sampler_times(sched, len(idx), gen)
        st = noisy_periodic(fields, batch(bundle.train, idx), t, gen)
        return ((net(st, t.float()) - y[idx].float()) / net.std).pow(2).mean()

    t0 = time.perf_counter()
    done = _fit(net, loss_of, n_train, steps=steps, batch_size=batch_size, lr=lr, seed=seed, max_seconds=max_seconds)
    report: dict[str, Any] = {"steps": done, "seconds": time.perf_counter() - t0, "n_train": n_train,
                              "n_test": n_test, **_baselines(y, yt)}
    gen = torch.Generator().manual_seed(seed + 1)

    def predict(idx: Tensor, t: Tensor) -> Tensor:
        return net(noisy_periodic(fields, batch(bundle.test, idx), t, gen), t.float())

    report.update(_evaluate(predict, yt, "t", PERIODIC_TIMES, lambda k: sampler_times(sched, k, gen)))
    return net, report


def train_guide(bundle: DataBundle, prop: str, fields: Mapping[str, FieldSpec], **options: Any
                ) -> tuple[MatrixRegressor | PeriodicRegressor, dict[str, Any]]:
    """:func:`train_matrix_regressor` or :func:`train_periodic_regressor`, by the representation."""
    if bundle.info.get("representation") == "periodic":
        return train_periodic_regressor(bundle, prop, fields, **options)
    return train_matrix_regressor(bundle, prop, fields, **options)


def plain(obj: Any) -> Any:
    """``obj`` as JSON data (numpy and tensor values as numbers and lists), so that a regressor
    file holds only tensors and plain containers and opens with ``torch.load(weights_only=True)``."""
    return json.loads(json.dumps(obj, default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v)))


def load_blob(path: Path, what: str) -> dict[str, Any]:
    """A regressor file's contents, read with ``torch.load(weights_only=True)`` (opening a file
    cannot run code); anything else is a ``ValueError`` naming the file."""
    try:
        blob = torch.load(Path(path), map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as err:
        raise ValueError(f"{path}: not {what} saved by polydiff-crystals ({str(err).splitlines()[0]})") from None
    if not isinstance(blob, dict):
        raise ValueError(f"{path}: not {what} saved by polydiff-crystals (holds a {type(blob).__name__})")
    return blob


def save_guide(reg: MatrixRegressor | PeriodicRegressor, path: Path, report: Mapping[str, Any] | None = None) -> Path:
    """Write a regressor (weights, configuration, report) atomically."""
    kind = "periodic" if isinstance(reg, PeriodicRegressor) else "matrix"
    blob = {"kind": kind, "config": plain(dict(reg.config)), "info": plain(getattr(reg, "info", None)),
            "state": reg.state_dict(), "report": plain(dict(report or {}))}
    return atomic_write(Path(path), lambda tmp: torch.save(blob, tmp))


def load_guide(path: Path) -> tuple[MatrixRegressor | PeriodicRegressor, dict[str, Any]]:
    """A regressor written by :func:`save_guide` (eval mode) and its report."""
    blob = load_blob(path, "a guide regressor")
    try:
        if blob.get("kind") == "periodic":
            reg: MatrixRegressor | PeriodicRegressor = PeriodicRegressor(blob["info"], **blob["config"])
        elif blob.get("kind") == "matrix":
            reg = MatrixRegressor(**blob["config"])
        else:
            raise ValueError(f"kind {blob.get('kind')!r}")
        reg.load_state_dict(blob["state"])
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"{path}: not a guide regressor saved by polydiff-crystals ({err})") from None
    return reg.eval(), dict(blob.get("report", {}))


# ---------------------------------------------------------------------------------------------
# guidance
# ---------------------------------------------------------------------------------------------
def signal_fraction(alpha: Tensor, sigma: Tensor, variance: float) -> Tensor:
    """``alpha^2 v / (alpha^2 v + sigma^2)``: the share of ``x_t``'s variance that is signal."""
    a2v = alpha.square() * variance
    return a2v / (a2v + sigma.square()).clamp_min(1e-30)


def _gaussian_scale(scale: float, process: Any, variance: float, damped: bool) -> float | Callable[[Tensor], Tensor]:
    if not damped:
        return scale

    def fn(t: Tensor) -> Tensor:
        c = process.coefs(t.double())
        return (scale * signal_fraction(c.alpha, c.sigma, variance)).to(t.dtype)

    return fn


def _torus_scale(scale: float, process: Any, damped: bool) -> float | Callable[[Tensor], Tensor]:
    """The tangent push of torus coordinates: ``scale * sigma^2 / alpha * fraction`` with ``sigma =
    kappa(t) * sqrt(1/12)``, ``alpha = 1 - kappa(t)`` (the uniform prior's variance)."""
    if not damped:
        return scale

    def fn(t: Tensor) -> Tensor:
        k = process.kappa(t.double())
        alpha, sigma = 1 - k, k * math.sqrt(TORUS_VARIANCE)
        return (scale * sigma.square() * alpha * TORUS_VARIANCE / (alpha.square() * TORUS_VARIANCE
                                                                  + sigma.square()).clamp_min(1e-30)).to(t.dtype)

    return fn


def _likelihood(predict: Callable[[Mapping[str, Tensor], Tensor], Tensor], target: float | Tensor,
                width: float) -> Callable[[Mapping[str, Tensor], Tensor], Tensor]:
    def potential(state: Mapping[str, Tensor], t: Tensor) -> Tensor:
        pred = predict(state, t)
        y = torch.as_tensor(target, dtype=pred.dtype, device=pred.device)
        return -0.5 * ((pred - y) / width) ** 2

    return potential


def matrix_guidance(reg: MatrixRegressor, target: float | Tensor, fields: Mapping[str, FieldSpec],
                    scale: float = 1.0, std: float | None = None, damped: bool = True) -> Any:
    """A guidance wrapper (``Control(guidance=...)``): ``scale * grad_{x_t} log N(target; f(x_t, t),
    std^2)`` added to the matrix score (``std``: the likelihood width, by default the property's
    standard deviation), times the signal fraction unless ``damped=False`` (module docstring)."""
    width = float(std if std is not None else float(reg.std))
    proc = fields["x"].process
    sched = proc.schedule

    def predict(state: Mapping[str, Tensor], t: Tensor) -> Tensor:
        x = state["x"]
        tt = t.reshape(-1).expand(x.shape[0]).double()
        return reg(x, time_input(sched, tt))

    variance = float(getattr(sched, "sigma_data", 0.5)) ** 2
    w = _gaussian_scale(scale, proc, variance, damped)

    def wrap(model: Any) -> Any:
        return gradient_guidance(model, fields, _likelihood(predict, target, width), scale=w, on="xt", keys=["x"])

    return wrap


def type_guidance(reg: PeriodicRegressor, target: float | Tensor, fields: Mapping[str, FieldSpec],
                  scale: float = 1.0, std: float | None = None) -> Any:
    """A guidance wrapper for the masked element types (a discrete field the core's gradient
    guidance does not move): the core's :func:`~polydiff.plugin.token_guidance` with
    ``log N(target; f(state_t, t), std^2)``. Each still-masked atom's logits gain ``scale``
    times the first-order estimate of how unmasking it as each element changes that
    log-likelihood, so ``scale = 1`` tilts the clean-type distribution by the estimated
    likelihood ratio."""
    width = float(std if std is not None else float(reg.std))

    def predict(state: Mapping[str, Tensor], t: Tensor) -> Tensor:
        return reg(state, t.reshape(-1).expand(state["types"].shape[0]))

    def wrap(model: Any) -> Any:
        return token_guidance(model, fields, _likelihood(predict, target, width), keys=["types"], scale=scale)

    return wrap


def periodic_guidance(reg: PeriodicRegressor, target: float | Tensor, fields: Mapping[str, FieldSpec],
                      scale: float = 1.0, std: float | None = None, keys: Sequence[str] = ("frac", "lattice"),
                      damped: bool = True) -> Any:
    """A guidance wrapper (``Control(guidance=...)``) for the periodic state: the gradient of
    ``log N(target; f(state_t, t), std^2)`` (``std`` by default the property's standard deviation)
    moves the lattice's score (a Gaussian field) and, along the torus, the clean estimate of the
    fractional coordinates (a manifold field: the core's Riemannian push ``exp_{x_t}(log_{x_t}
    (x0_hat) + w g)``), for the fields in ``keys``; scales as in the module docstring. ``"types"``
    in ``keys`` adds :func:`type_guidance` at the same ``scale``; without it the element types
    follow the guided coordinates and lattice only through the denoiser."""
    bad = [k for k in keys if k not in ("frac", "lattice", "types")]
    if bad or not keys:
        raise ValueError(f"periodic guidance acts on 'frac', 'lattice' and / or 'types', got {list(keys)}")
    width = float(std if std is not None else float(reg.std))
    scales: dict[str, Any] = {}
    if "frac" in keys:
        scales["frac"] = _torus_scale(scale, fields["frac"].process, damped)
    if "lattice" in keys:
        scales["lattice"] = _gaussian_scale(scale, fields["lattice"].process, 1.0, damped)

    def predict(state: Mapping[str, Tensor], t: Tensor) -> Tensor:
        return reg(state, t.reshape(-1).expand(state["frac"].shape[0]))

    discrete = type_guidance(reg, target, fields, scale, width) if "types" in keys else None

    def wrap(model: Any) -> Any:
        if scales:
            model = gradient_guidance(model, fields, _likelihood(predict, target, width), scale=scales, on="xt",
                                      keys=list(scales))
        return discrete(model) if discrete is not None else model

    return wrap


def property_guidance(reg: MatrixRegressor | PeriodicRegressor, target: float | Tensor,
                      fields: Mapping[str, FieldSpec], scale: float = 1.0, **options: Any) -> Any:
    """:func:`matrix_guidance` or :func:`periodic_guidance`, by the regressor's kind."""
    if isinstance(reg, PeriodicRegressor):
        return periodic_guidance(reg, target, fields, scale, **options)
    return matrix_guidance(reg, target, fields, scale, **options)
