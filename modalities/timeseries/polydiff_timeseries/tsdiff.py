"""TSDiff at sampling time (Kollovieh et al. 2023, "Predict, refine, synthesize: self-guiding
diffusion models for probabilistic time series forecasting"; reference code
amazon-science/unconditional-time-series-diffusion, Apache-2.0).

- :func:`predict`: observation self-guidance. An unconditional model of windows (context +
  horizon) is steered toward the observed context by the gradient of an energy of its
  one-step clean estimate, restricted to observed entries: ``mse`` (squared error) or
  ``quantile`` (pinball loss where the k-th of S samples of a series uses quantile
  k / (S + 1), so the samples spread over the predictive distribution). Missing-value
  scenarios (random missing, blackout at the beginning / end of the context) are observation
  masks (:func:`missing_mask`).
- :func:`refine`: iterative refinement of any base forecast with the model's implicit
  density, ``E(y) = ||eps_theta(alpha y + sigma eps, t) - eps||^2 + scale * prior(y)``, by
  Langevin dynamics (``langevin``) or by minimising it (``ml``, the most-likely refinement).
- synthesis: ``Generator.generate`` draws windows; :func:`polydiff_timeseries.genmetrics.tstr`
  and :func:`~polydiff_timeseries.genmetrics.linear_predictive_score` score them.

Self-guidance uses the core's :func:`polydiff.guidance.gradient_guidance` on the clean
estimate with back-propagation through the network (TSDiff's ``fast_denoise`` + autograd).
The core adds ``scale * grad log G`` to the score, i.e. ``eps -> eps + scale * sigma *
grad E``: exactly TSDiff's DDIM update with base scale ``scale`` (scaled by
``sqrt(1 - alpha_bar_t) = sigma``). With the DDPM sampler the shift of the posterior mean is
``scale * beta_t / sqrt(1 - beta_t) * grad E`` against TSDiff's ``scale * beta~_t * grad E``
(posterior variance), which agree up to ``(1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) -> 1``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from polydiff.plugin import as_device, gradient_guidance, sample, seed_value, to_x0_eps, whole_number

from . import data as D
from .metrics import QUANTILES, forecast_metrics, sample_quantile

ENERGIES = ("quantile", "mse")
SCENARIOS = ("none", "RM", "BM-B", "BM-E")


# ---------------------------------------------------------------------------------------------
# energies and the guidance wrapper
# ---------------------------------------------------------------------------------------------

def quantile_levels(batch: int, num_samples: int) -> Tensor:
    """(batch * num_samples,) levels ``k / (S + 1)``, k = 1..S, for each series in turn."""
    return (torch.arange(num_samples, dtype=torch.float64).repeat(batch) + 1) / (num_samples + 1)


def observation_energy(x0: Tensor, obs: Tensor, mask: Tensor, kind: str = "quantile",
                       q: Tensor | None = None) -> Tensor:
    """Per-sample energy (B,) of clean estimates ``x0`` against observations on ``mask``:
    squared error (``mse``) or pinball loss at levels ``q`` (B,) (``quantile``)."""
    e = obs - x0
    if kind == "mse":
        val = e**2
    elif kind == "quantile":
        if q is None:
            raise ValueError("the quantile energy needs per-sample levels q")
        qq = q.to(e.dtype).reshape(-1, *([1] * (e.dim() - 1)))
        val = torch.maximum(qq * e, (qq - 1) * e)
    else:
        raise ValueError(f"unknown guidance energy {kind!r}; allowed: {', '.join(ENERGIES)}")
    return (val * mask).flatten(1).sum(1)


def self_guidance(fields: Mapping[str, Any], kind: str = "quantile", scale: float | Callable[[Tensor], Tensor] = 4.0,
                  field: str = "x", obs_key: str = "y_obs", mask_key: str = "y_mask",
                  q_key: str = "q") -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A ``wrap_model`` for :func:`polydiff.sample`: TSDiff's observation self-guidance. The
    state carries the observations ``state[obs_key]``, their mask ``state[mask_key]`` and,
    for the quantile energy, per-sample levels ``state[q_key]`` (B,)."""
    if kind not in ENERGIES:
        raise ValueError(f"unknown guidance energy {kind!r}; allowed: {', '.join(ENERGIES)}")

    def potential(state: Mapping[str, Tensor], t: Tensor) -> Tensor:
        return -observation_energy(state[field], state[obs_key], state[mask_key], kind, state.get(q_key))

    def wrap(model: Callable[..., Any]) -> Callable[..., Any]:
        return gradient_guidance(model, fields, potential, scale=scale, on="x0", backprop=True, keys=[field])

    return wrap


def missing_mask(context: int, scenario: str = "none", missing: int = 0, n: int = 1, seed: int = 0) -> np.ndarray:
    """Observed-entry masks (n, context) of TSDiff's missing-value scenarios: ``RM`` drops
    ``missing`` random steps per series, ``BM-B`` the first ``missing`` steps (blackout at the
    beginning), ``BM-E`` the last ``missing`` steps before the horizon (blackout at the end)."""
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown missing-value scenario {scenario!r}; allowed: {', '.join(SCENARIOS)}")
    if not 0 <= missing < context:
        raise ValueError(f"missing must be in [0, {context}), got {missing}")
    m = np.ones((n, context), dtype=bool)
    if scenario == "RM":
        rng = np.random.default_rng(seed)
        for i in range(n):
            m[i, rng.choice(context, size=missing, replace=False)] = False
    elif scenario == "BM-B":
        m[:, :missing] = False
    elif scenario == "BM-E" and missing:
        m[:, context - missing:] = False
    return m


# ---------------------------------------------------------------------------------------------
# forecasts
# ---------------------------------------------------------------------------------------------

@dataclass
class Forecast:
    """Sample paths (N, S, H) in data units, per series ids and horizon timestamps."""

    samples: np.ndarray
    ids: list[str]
    index: list[pd.Index] | None = None

    def __repr__(self) -> str:
        n, s, h = self.samples.shape
        ids = ", ".join(map(repr, self.ids[:4])) + (", ..." if len(self.ids) > 4 else "")
        return f"Forecast({n} series x {s} samples x {h} steps, ids=[{ids}])"

    def quantile(self, q: float) -> np.ndarray:
        """gluonts' nearest-rank quantile (N, H)."""
        return sample_quantile(self.samples, q)

    @property
    def mean(self) -> np.ndarray:
        return self.samples.mean(1)

    def to_frame(self, quantiles: Sequence[float] = QUANTILES) -> pd.DataFrame:
        """Long frame: ``item_id, timestamp, mean`` and one column per quantile (``"0.1"``, ...)."""
        n, _, h = self.samples.shape
        rows = {"item_id": np.repeat(self.ids, h),
                "timestamp": np.concatenate([np.asarray(ix) for ix in self.index]) if self.index is not None
                else np.tile(np.arange(h), n),
                "mean": self.mean.reshape(-1)}
        for q in quantiles:
            rows[str(q)] = self.quantile(q).reshape(-1)
        return pd.DataFrame(rows)

    def metrics(self, target: np.ndarray, history: np.ndarray | None = None, season: int = 1) -> dict[str, float]:
        """CRPS, ND, NRMSE (and MASE with ``history``) against ``target`` (N, H); ``season``:
        MASE's seasonal period in steps (1: the error of the naive one-step forecast)."""
        return forecast_metrics(target, self.samples, history, season)


@dataclass
class _Context:
    values: np.ndarray  # (N, ctx, C) raw, NaN = missing
    ids: list[str]
    index: list[pd.Index] | None


def as_context(context: Any, length: int, horizon: int, freq: str | None = None, target: str | Sequence[str] = "target",
               id_col: str | None = "item_id", time_col: str = "timestamp", *, warn: bool = False) -> _Context:
    """Histories as (N, length, C): an array (N, T) or (N, T, C) (NaN = missing), a long
    DataFrame, a pytorch-forecasting ``TimeSeriesDataSet`` or a
    :class:`~polydiff_timeseries.data.SeriesSet`; the last ``length`` steps are
    kept and shorter histories are padded at the front with missing values. Also returns ids
    and, for timestamped data, the ``horizon`` future timestamps. ``warn``: histories that are
    not all there are counted in one warning (:func:`history_gaps`), pointing at the caller's
    caller (the user's :func:`predict` call, or the command that read the file)."""
    source = "context"
    if isinstance(context, pd.DataFrame):
        context = D.from_long(context, target, id_col, time_col, nan="mask", source=source)
    elif hasattr(context, "target_names") and hasattr(context, "data"):  # a pytorch-forecasting TimeSeriesDataSet
        from .baselines import from_timeseries_dataset

        context = from_timeseries_dataset(context)
    if isinstance(context, D.SeriesSet):
        vals, source = [v for v in context.values], context.source
        ids, index = list(context.ids), []
        for ix in context.index:
            if isinstance(ix, pd.DatetimeIndex) and (ix.freq or context.freq or freq):
                f = ix.freq or pd.tseries.frequencies.to_offset(context.freq or freq)
                index.append(pd.date_range(ix[-1] + f, periods=horizon, freq=f))
            else:
                last = int(ix[-1]) if len(ix) else -1
                index.append(pd.RangeIndex(last + 1, last + 1 + horizon))
    else:
        arr = np.asarray(context, dtype=np.float64)
        if not 1 <= arr.ndim <= 3:
            raise ValueError(f"context: expected an array of shape (T,), (N, T) or (N, T, channels), got shape "
                             f"{arr.shape}")
        arr = arr[None] if arr.ndim == 1 else arr
        arr = arr[..., None] if arr.ndim == 2 else arr
        vals, ids, index = list(arr), [str(i) for i in range(len(arr))], None
    if not vals:
        raise ValueError(f"{source}: no series (an empty context); give at least one history")
    gaps = history_gaps(vals, length, source) if warn else None
    if gaps is not None:
        warnings.warn(gaps, stacklevel=3)
    out = np.full((len(vals), length, vals[0].shape[-1]), np.nan)
    for i, v in enumerate(vals):
        v = v[-length:]
        out[i, length - len(v):] = v
    return _Context(out, ids, index)


def history_gaps(values: Sequence[np.ndarray], length: int, source: str | Path) -> str | None:
    """One line naming ``source`` when the histories ``values`` ((T_i, C) each) that
    :func:`as_context` uses are not all there: series shorter than the ``length``-step context
    (front-padded with missing values: how many series, how many steps) and empty cells in
    the last ``length`` steps (masked as missing: how many of how many); None when they are
    complete. :func:`as_context` warns it (``warn=True``) for :func:`predict`, :func:`refine`,
    ``polydiff timeseries forecast`` and ``polydiff sample --observed``."""
    short = [length - len(v) for v in values if len(v) < length]
    used = [v[-length:] for v in values]
    cells = sum(u.size for u in used)
    empty = sum(int((~np.isfinite(u)).sum()) for u in used)
    parts = []
    if short:
        parts.append(f"{len(short)} of {len(values)} series shorter than the model's context of {length} steps: "
                     f"{sum(short)} step(s) in all padded at the front as missing")
    if empty:
        parts.append(f"{empty} of {cells} cells in the last {length} steps empty, treated as missing")
    return f"{source}: " + "; ".join(parts) if parts else None


def _parts(model: Any) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """(network, fields, info) of a :class:`polydiff.generator.Generator` (or alike)."""
    net, fields, info = getattr(model, "net", None), getattr(model, "fields", None), getattr(model, "info", None)
    if net is None or fields is None or info is None:
        raise TypeError("expected a trained model with .net, .fields and .info (polydiff.load(checkpoint))")
    if "x" not in fields:
        raise ValueError("forecasting needs a time-domain model (field 'x'); this model has fields "
                         f"{sorted(fields)}")
    if int(info.get("horizon", 0)) < 1:
        raise ValueError(f"the model was trained on windows without a horizon (dataset {info.get('dataset')!r}); "
                         "train on a dataset with horizon > 0 to forecast")
    return net, dict(fields), dict(info)


def _scales(ctx: np.ndarray, observed: np.ndarray, info: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(loc, scale) per series and channel (N, C) as the training windows were scaled."""
    sc = D.Scaler(**info["scaling"])
    if sc.kind == "mean":
        return np.zeros(ctx.shape[::2]), D.mean_scale(np.where(observed, ctx, np.nan))
    return sc.params(np.where(observed, ctx, 0.0))


def _observed(observed: Any, shape: tuple[int, ...]) -> np.ndarray:
    """A user's observed-entry mask as the context's (N, context, C): (N, context),
    (context,) for every series, or (N, context, C); any other shape is an error."""
    n, length, _ = shape
    m = np.asarray(observed, dtype=bool)
    if m.ndim in (1, 2) and m.shape[-1] == length:
        m = m.reshape(-1, length, 1)
    try:
        return np.broadcast_to(m, shape)
    except ValueError:
        raise ValueError(f"observed: expected a mask of shape (N, context) = ({n}, {length}), (context,) or (N, "
                         f"context, channels), got shape {np.shape(observed)}") from None


def _default_grid(fields: Mapping[str, Any], steps: int | None) -> dict[str, Any]:
    """DDPM on the discrete schedule's own timesteps (all of them by default)."""
    sched = next(iter(fields.values())).process.schedule
    n = getattr(sched, "n", None)
    if steps is not None:
        whole_number("steps", steps)
    if n is not None:
        return {"steps": n if steps is None else steps, "grid": "uniform_t", "final_zero": True}
    return {"steps": 100 if steps is None else steps}


def predict(model: Any, context: Any, *, num_samples: int = 100, guidance: str = "quantile", scale: float = 4.0,
            observed: np.ndarray | None = None, sampler: str = "ddpm", steps: int | None = None,
            seed: int | None = 0, batch_size: int = 1024, device: str | torch.device | None = None,
            **sample_options: Any) -> Forecast:
    """Probabilistic forecasts of the model's horizon by observation self-guidance.

    ``context``: histories (see :func:`as_context`; shorter ones, or empty cells, are counted in
    one warning); ``observed`` (N, context) masks extra missing entries (e.g.
    :func:`missing_mask`). ``num_samples`` paths per series, sampled ``batch_size`` paths at a
    time; ``seed`` None draws a fresh one; ``device``: where the network runs (default: where
    it is). ``sample_options``: settings and options of ``sampler`` (see ``polydiff samplers``).
    Returns a :class:`Forecast` in data units.
    """
    num_samples, batch_size = whole_number("num_samples", num_samples), whole_number("batch_size", batch_size)
    seed = seed_value(seed)
    net, fields, info = _parts(model)
    ctx_len, horizon = int(info["context"]), int(info["horizon"])
    c = as_context(context, ctx_len, horizon, info.get("freq"), warn=True)
    if "channels" in info and c.values.shape[-1] != int(info["channels"]):
        raise ValueError(f"context: {c.values.shape[-1]} channels, the model has {int(info['channels'])} (an array "
                         "is (T,), (N, T) or (N, T, channels))")
    obs = np.isfinite(c.values)
    if observed is not None:
        obs = obs & _observed(observed, obs.shape)
    if not obs.any(axis=1).all():
        raise ValueError("every series needs at least one observed context value")
    loc, scl = _scales(c.values, obs, info)
    y = np.where(obs, (np.nan_to_num(c.values) - loc[:, None]) / scl[:, None], 0.0)
    n, ch = y.shape[0], y.shape[2]
    length = ctx_len + horizon
    y_obs = np.concatenate([y, np.zeros((n, horizon, ch))], 1)
    y_mask = np.concatenate([obs, np.zeros((n, horizon, ch), bool)], 1)
    grid = _default_grid(fields, steps)
    dev = as_device(device) if device is not None else next(net.parameters()).device
    net.to(dev)
    out = []
    series_per_batch = max(batch_size // num_samples, 1)
    net.eval()
    for lo in range(0, n, series_per_batch):
        hi = min(n, lo + series_per_batch)
        b = (hi - lo) * num_samples
        st = {"x": (b, length, ch), "observed": torch.ones(b, length, ch, device=dev),
              "y_obs": torch.from_numpy(y_obs[lo:hi]).float().repeat_interleave(num_samples, 0).to(dev),
              "y_mask": torch.from_numpy(y_mask[lo:hi]).float().repeat_interleave(num_samples, 0).to(dev),
              "q": quantile_levels(hi - lo, num_samples).float().to(dev)}
        seeds = seed * 1_000_003 + torch.arange(lo * num_samples, hi * num_samples)
        with torch.no_grad():
            res = sample(net, fields, st, sampler=sampler, seed=seeds, device=dev,
                         wrap_model=self_guidance(fields, guidance, scale), **{**grid, **sample_options})
        out.append(res["x"][:, ctx_len:].double().cpu().numpy().reshape(hi - lo, num_samples, horizon, ch))
    samples = np.concatenate(out) * scl[:, None, None] + loc[:, None, None]
    return _as_forecast(samples, c)


def _as_forecast(samples: np.ndarray, c: _Context) -> Forecast:
    """(N, S, H, C) -> a Forecast; channels become series ``id/c`` when C > 1."""
    n, s, h, ch = samples.shape
    if ch == 1:
        return Forecast(samples[..., 0], c.ids, c.index)
    ids = [f"{i}/{k}" for i in c.ids for k in range(ch)]
    index = None if c.index is None else [ix for ix in c.index for _ in range(ch)]
    return Forecast(np.moveaxis(samples, -1, 1).reshape(n * ch, s, h), ids, index)


# ---------------------------------------------------------------------------------------------
# refinement
# ---------------------------------------------------------------------------------------------

def diffusion_energy(net: Any, fields: Mapping[str, Any], y: Tensor, t: Tensor, eps: Tensor) -> Tensor:
    """Per-sample ``||eps_theta(alpha_t y + sigma_t eps, t) - eps||^2`` (B,): the denoising
    loss at one noise level, TSDiff's estimate of ``-log p(y)`` up to constants."""
    spec = fields["x"]
    c = spec.process.coefs(t.reshape(-1, 1, 1).to(torch.float64))
    a, s = c.alpha.to(y.dtype), c.sigma.to(y.dtype)
    xt = a * y + s * eps
    pred = net({"x": xt, "observed": torch.ones_like(xt)}, t.to(torch.float32))["x"]
    _, e = to_x0_eps(pred, spec.prediction, xt, type(c)(a, s, c.lam.to(y.dtype), c.dalpha.to(y.dtype),
                                                          c.dsigma.to(y.dtype)))
    return ((e - eps) ** 2).flatten(1).sum(1)


def noise_time(fields: Mapping[str, Any], sigma: float) -> float:
    """The time at which a VP process has noise level ``sigma`` (alpha^2 + sigma^2 = 1)."""
    sched = fields["x"].process.schedule
    lam = torch.tensor(math.log(math.sqrt(1 - sigma**2) / sigma), dtype=torch.float64)
    return float(sched.t_of_lam(lam))


def refine(model: Any, context: Any, forecast: Forecast | np.ndarray, *, method: str = "langevin",
           iterations: int = 20, step_size: float = 0.1, noise_scale: float = 0.1, guidance: str = "quantile",
           scale: float = 1.0, sigma: float = 0.4, num_samples: int | None = None, seed: int | None = 0) -> Forecast:
    """Refine base forecasts (N, S, H) with the model's implicit density (TSDiff §4.2).

    Energy of a whole window ``y`` (context + forecast, in model units): the denoising loss
    at noise level ``sigma`` (fresh noise each iteration; TSDiff's ``fixed_t``) plus ``scale``
    times a prior tying ``y`` to the observations: ``quantile`` (pinball loss at level
    k/(S+1) against context and sorted initial forecast) or ``mse`` (squared error on the
    observed context). ``langevin``: ``y <- y - eta grad E + sqrt(2 eta) noise_scale z``;
    ``ml``: gradient descent on ``E`` (the most-likely refinement).
    """
    if method not in ("langevin", "ml"):
        raise ValueError(f"unknown refinement method {method!r}; allowed: langevin, ml")
    net, fields, info = _parts(model)
    ctx_len, horizon = int(info["context"]), int(info["horizon"])
    c = as_context(context, ctx_len, horizon, info.get("freq"), warn=True)
    init = forecast.samples if isinstance(forecast, Forecast) else np.asarray(forecast, np.float64)
    init = init[..., None] if init.ndim == 3 else init  # (N, S, H, C)
    n, ch = c.values.shape[0], c.values.shape[2]
    if init.shape[0] * init.shape[-1] == n * ch and init.shape[-1] != ch:  # channels flattened into series
        init = np.moveaxis(init[..., 0].reshape(n, ch, init.shape[1], horizon), 1, -1)
    if init.shape[0] != n or init.shape[2] != horizon:
        raise ValueError(f"base forecasts {init.shape[:3]} do not match {n} series and horizon {horizon}")
    s = init.shape[1] if num_samples is None else whole_number("num_samples", num_samples)
    if init.shape[1] == 1:
        init = np.repeat(init, s, 1)
    elif init.shape[1] != s:
        raise ValueError(f"num_samples={s} but the base forecast has {init.shape[1]} samples")
    init = np.sort(init, axis=1)  # the k-th sample refines toward quantile k/(S+1)
    obs = np.isfinite(c.values)
    loc, scl = _scales(c.values, obs, info)
    ctx = np.where(obs, (np.nan_to_num(c.values) - loc[:, None]) / scl[:, None], 0.0)
    fut = (init - loc[:, None, None]) / scl[:, None, None]
    dev = next(net.parameters()).device
    y_ctx = torch.from_numpy(ctx).float().repeat_interleave(s, 0)
    target = torch.cat([y_ctx, torch.from_numpy(fut.reshape(n * s, horizon, ch)).float()], 1).to(dev)
    ctx_mask = torch.from_numpy(obs).float().repeat_interleave(s, 0)
    if guidance == "quantile":  # TSDiff: the quantile prior covers the context and the initial forecast
        prior_mask = torch.cat([ctx_mask, torch.ones(n * s, horizon, ch)], 1).to(dev)
    else:
        prior_mask = torch.cat([ctx_mask, torch.zeros(n * s, horizon, ch)], 1).to(dev)
    q = quantile_levels(n, s).float().to(dev)
    t = torch.full((n * s,), noise_time(fields, sigma), dtype=torch.float64, device=dev)
    g = torch.Generator(device="cpu").manual_seed(seed_value(seed))
    y = target.clone().requires_grad_(True)
    opt = torch.optim.SGD([y], lr=step_size) if method == "ml" else None
    net.eval()
    for _ in range(iterations):
        eps = torch.randn(y.shape, generator=g).to(dev)
        with torch.enable_grad():
            energy = diffusion_energy(net, fields, y, t, eps) + scale * observation_energy(y, target, prior_mask,
                                                                                            guidance, q)
            grad, = torch.autograd.grad(energy.sum(), y)
        with torch.no_grad():
            if opt is not None:
                y.grad = grad
                opt.step()
            else:
                z = torch.randn(y.shape, generator=g).to(dev)
                y -= step_size * grad - math.sqrt(2 * step_size) * noise_scale * z
    out = y.detach()[:, ctx_len:].double().cpu().numpy().reshape(n, s, horizon, ch)
    return _as_forecast(out * scl[:, None, None] + loc[:, None, None], c)


def raw_windows(dataset: Any) -> np.ndarray:
    """The windows of a split built by this plugin (with per-window ``loc`` / ``scale``) in data
    units (N, L, C); unobserved entries are NaN."""
    t = dataset.tensors
    if "scale" not in t:
        raise ValueError("this split keeps no per-window scale (only test splits do)")
    x = t["x"].double() * t["scale"].double()[:, None] + t["loc"].double()[:, None]
    return torch.where(t["observed"] > 0, x, torch.full_like(x, float("nan"))).numpy()
