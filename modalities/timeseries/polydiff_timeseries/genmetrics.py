"""Metrics of generated windows (N, L, C) against real ones, as in TSDiff, TimeGAN, Diffusion-TS
and PaCoDi:

- :func:`linear_predictive_score` (TSDiff): a linear (ridge) forecaster fitted on synthetic
  windows (context -> horizon), scored by CRPS on real windows;
- :func:`tstr`: train on synthetic, test on real, with any forecaster of
  :mod:`polydiff_timeseries.baselines` (the LPS is TSTR with the linear model);
- :func:`discriminative_score` (TimeGAN): ``|accuracy - 0.5|`` of a GRU classifier of real vs
  synthetic on held-out windows;
- :func:`predictive_score` (TimeGAN): a GRU trained on synthetic windows to predict the last
  channel's next step from the other channels up to now, its mean absolute error on real
  windows (one-channel windows: the next step from the steps before, which TimeGAN's
  definition leaves undefined); ``predictive_all``: every channel's next step from all channels;
- :func:`context_fid` (Diffusion-TS / PaCoDi): the Fréchet distance between Gaussian fits of
  encoder embeddings of real and synthetic windows. The encoder is **trained in-project** on the
  real windows (:class:`WindowEncoder`, a dilated-convolution encoder with a TS2Vec-like
  contrastive objective on cropped and jittered views); it is *not* TS2Vec's published
  weights, so values are comparable within this project only.

Every classifier / encoder here is small and seeded so the metrics run on a CPU in seconds.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from polydiff.plugin import Progress, frechet_distance, gaussian_fit, local_seed

from .metrics import forecast_metrics


def _arr(x: Any) -> np.ndarray:
    a = np.array(x, dtype=np.float64)  # a writable copy (torch.from_numpy warns on read-only arrays)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3:
        raise ValueError(f"expected windows (N, L, C), got shape {a.shape}")
    return a


def _pair(synthetic: Any, real: Any, metric: str, least: int = 1, length: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Both window sets as (N, L, C) arrays, checked: the same window shape, at least ``least``
    windows and ``length`` steps each, finite values (a NaN would come back as a number)."""
    syn, rl = _arr(synthetic), _arr(real)
    if syn.shape[1:] != rl.shape[1:]:
        raise ValueError(f"{metric}: synthetic windows are {syn.shape[1:]} (length, channels), real ones "
                         f"{rl.shape[1:]}")
    for name, a in (("synthetic", syn), ("real", rl)):
        if len(a) < least or a.shape[1] < length:
            raise ValueError(f"{metric}: needs at least {least} {name} window(s) of at least {length} step(s), got "
                             f"{a.shape[:2]}")
        bad = np.nonzero(~np.isfinite(a).reshape(len(a), -1).all(1))[0]
        if len(bad):
            raise ValueError(f"{metric}: {name} window {int(bad[0])} holds NaN or infinite values")
    return syn, rl


# ---------------------------------------------------------------------------------------------
# predictive scores of synthetic data: LPS and TSTR
# ---------------------------------------------------------------------------------------------

def linear_predictive_score(synthetic: np.ndarray, real: np.ndarray, context: int, alpha: float = 1.0) -> float:
    """TSDiff's Linear Predictive Score: ridge regression (context -> horizon) fitted on
    ``synthetic`` windows, CRPS (mean weighted quantile loss) of its point forecasts on the
    horizons of ``real`` windows (both in the same, scaled units)."""
    from .baselines import LinearForecaster

    syn, rl = _arr(synthetic), _arr(real)
    lin = LinearForecaster(context, alpha).fit(syn)
    pred = lin.predict(rl[:, :context])
    y = np.moveaxis(rl[:, context:], -1, 1).reshape(-1, rl.shape[1] - context)
    p = np.moveaxis(pred, -1, 1).reshape(-1, 1, rl.shape[1] - context)
    return forecast_metrics(y, p)["crps"]


def tstr(synthetic: np.ndarray, real: np.ndarray, context: int, model: str = "linear",
         **options: Any) -> dict[str, float]:
    """Train on synthetic, test on real: fit ``model`` (``linear`` or ``deepar``) on synthetic
    windows and return its forecast metrics on the horizons of real windows."""
    from .baselines import LinearForecaster, deepar_forecast

    syn, rl = _arr(synthetic), _arr(real)
    h = rl.shape[1] - context
    y = np.moveaxis(rl[:, context:], -1, 1).reshape(-1, h)
    if model == "linear":
        pred = LinearForecaster(context, options.get("alpha", 1.0)).fit(syn).predict(rl[:, :context])
        samples = np.moveaxis(pred, -1, 1).reshape(-1, 1, h)
    elif model == "deepar":
        train = [w[:, c] for w in syn for c in range(syn.shape[2])]
        ctx = np.moveaxis(rl[:, :context], -1, 1).reshape(-1, context)
        samples = deepar_forecast(train, ctx, h, context, **options)
    else:
        raise ValueError(f"unknown TSTR model {model!r}; allowed: linear, deepar")
    return forecast_metrics(y, samples)


# ---------------------------------------------------------------------------------------------
# TimeGAN's discriminative and predictive scores
# ---------------------------------------------------------------------------------------------

class _GRU(nn.Module):
    def __init__(self, inp: int, hidden: int, out: int) -> None:
        super().__init__()
        self.gru = nn.GRU(inp, hidden, batch_first=True)
        self.head = nn.Linear(hidden, out)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.gru(x)[0])


def discriminative_score(synthetic: np.ndarray, real: np.ndarray, steps: int = 500, hidden: int | None = None,
                         seed: int = 0) -> float:
    """``|accuracy - 0.5|`` of a GRU classifier of real vs synthetic windows, trained on 80%
    of each and tested on the rest (0 = indistinguishable, 0.5 = perfectly separated). As in
    TimeGAN's ``train_test_divide``, each set is split on its own, so the held-out set holds as
    many real windows as synthetic ones and a classifier that always answers one class scores 0
    (a split of the pooled windows would give it ``|share of real - 0.5|``)."""
    syn, rl = _pair(synthetic, real, "discriminative_score", least=2)
    n = min(len(syn), len(rl))
    rng = np.random.default_rng(seed)
    syn, rl = syn[rng.permutation(len(syn))[:n]], rl[rng.permutation(len(rl))[:n]]
    x = torch.from_numpy(np.concatenate([rl, syn])).float()
    y = torch.cat([torch.ones(n), torch.zeros(n)])
    cut = max(1, min(n - 1, int(0.8 * n)))  # per set: windows [0, cut) train, [cut, n) test
    tr = torch.cat([torch.arange(cut), n + torch.arange(cut)])
    te = torch.cat([torch.arange(cut, n), n + torch.arange(cut, n)])
    with local_seed(seed):
        net = _GRU(x.shape[2], hidden or max(x.shape[2] * 2, 8), 1)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = tr[torch.randint(len(tr), (min(128, len(tr)),), generator=g)]
        loss = F.binary_cross_entropy_with_logits(net(x[idx])[:, -1, 0], y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        acc = ((net(x[te])[:, -1, 0] > 0).float() == y[te]).float().mean().item()
    return float(abs(acc - 0.5))


def predictive_score(synthetic: np.ndarray, real: np.ndarray, steps: int = 500, hidden: int | None = None,
                     seed: int = 0, target: str = "last") -> float:
    """Mean absolute error on real windows of a GRU trained on synthetic windows to predict, at
    every step, the last channel's next value from the other channels' values up to that step
    (TimeGAN's ``predictive_score_metrics``: inputs ``x[:, :-1, :C-1]``, target
    ``x[:, 1:, C-1]``); for one-channel windows, the next value from the values before it.
    ``target="all"``: every channel's next value from all channels (informative where the
    channels are independent, as in the sines, whose last channel the others cannot predict)."""
    if target not in ("last", "all"):
        raise ValueError(f"target must be 'last' or 'all', got {target!r}")
    syn, rl = _pair(synthetic, real, "predictive_score", length=2)
    xs = torch.from_numpy(syn).float()
    xr = torch.from_numpy(rl).float()
    c = xs.shape[2]
    if target == "all":
        inputs, outputs = slice(0, c), slice(0, c)
    else:
        inputs, outputs = (slice(0, c - 1) if c > 1 else slice(0, 1)), slice(c - 1, c)
    with local_seed(seed):
        net = _GRU(inputs.stop - inputs.start, hidden or max(c * 2, 8), outputs.stop - outputs.start)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(len(xs), (min(128, len(xs)),), generator=g)
        b = xs[idx]
        loss = (net(b[:, :-1, inputs]) - b[:, 1:, outputs]).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return float((net(xr[:, :-1, inputs]) - xr[:, 1:, outputs]).abs().mean())


# ---------------------------------------------------------------------------------------------
# context-FID with an in-project encoder
# ---------------------------------------------------------------------------------------------

class WindowEncoder(nn.Module):
    """Dilated residual 1-D convolutions over time, max-pooled to one embedding per window."""

    def __init__(self, channels: int, hidden: int = 64, out: int = 64, depth: int = 4) -> None:
        super().__init__()
        self.inp = nn.Conv1d(channels, hidden, 1)
        self.convs = nn.ModuleList(nn.Conv1d(hidden, hidden, 3, padding=2**i, dilation=2**i) for i in range(depth))
        self.out = nn.Conv1d(hidden, out, 1)

    def features(self, x: Tensor) -> Tensor:
        """(B, L, C) -> per-step features (B, L, out)."""
        h = self.inp(x.transpose(1, 2))
        for conv in self.convs:
            h = h + F.gelu(conv(h))
        return self.out(h).transpose(1, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.features(x).max(dim=1).values


def train_encoder(real: np.ndarray, steps: int = 300, seed: int = 0, temperature: float = 0.1) -> WindowEncoder:
    """Fit a :class:`WindowEncoder` on real windows: two random crops (at least half the
    window, overlapping) with jitter and scaling are two views of a window; an InfoNCE loss
    over the batch pulls their embeddings together (a simplified TS2Vec instance-wise loss)."""
    x = torch.from_numpy(_arr(real)).float()
    length = x.shape[1]
    with local_seed(seed):
        enc = WindowEncoder(x.shape[2])
    opt = torch.optim.Adam(enc.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(seed)
    std = x.std().clamp_min(1e-6)

    def view(b: Tensor) -> Tensor:
        m = int(torch.randint((length + 1) // 2, length + 1, (1,), generator=g))
        lo = int(torch.randint(0, length - m + 1, (1,), generator=g))
        v = b[:, lo:lo + m]
        v = v * (1 + 0.1 * torch.randn(len(b), 1, 1, generator=g)) + 0.05 * std * torch.randn(v.shape, generator=g)
        return v

    for _ in range(steps):
        b = x[torch.randint(len(x), (min(64, len(x)),), generator=g)]
        z1, z2 = F.normalize(enc(view(b)), dim=1), F.normalize(enc(view(b)), dim=1)
        logits = z1 @ z2.T / temperature
        labels = torch.arange(len(b))
        loss = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return enc.eval()


def context_fid(synthetic: np.ndarray, real: np.ndarray, encoder: WindowEncoder | None = None, steps: int = 300,
                seed: int = 0) -> float:
    """Context-FID with an encoder trained in-project on ``real`` (see the module docstring): the
    Fréchet distance (:func:`polydiff.plugin.frechet_distance`) between Gaussians fitted to the
    embeddings of ``real`` and ``synthetic`` windows (at least 2 of each)."""
    enc = encoder or train_encoder(real, steps, seed)
    with torch.no_grad():
        fa = enc(torch.from_numpy(_arr(real)).float()).numpy().astype(np.float64)
        fb = enc(torch.from_numpy(_arr(synthetic)).float()).numpy().astype(np.float64)
    return frechet_distance(*gaussian_fit(fa, "real"), *gaussian_fit(fb, "synthetic"))


# ---------------------------------------------------------------------------------------------
# everything at once (what `polydiff evaluate` prints)
# ---------------------------------------------------------------------------------------------

def marginal_metrics(synthetic: np.ndarray, real: np.ndarray, lags: int = 5) -> dict[str, float]:
    """Differences of per-channel marginals and autocorrelations between windows (N, L, C):
    each value is the mean over channels (and lags) of an absolute synthetic - real difference.

    - ``mean_error``: of the channel means over all windows and steps;
    - ``std_error``: of the channel standard deviations (ddof 0) over all windows and steps;
    - ``acf_error``: of the autocorrelations at lags k = 1..min(lags, L - 1), each the mean over
      windows of ``(sum_t xc_t xc_(t-k) / (L - k)) / (sum_t xc_t^2 / L + 1e-12)``, ``xc`` the
      window minus its own mean; NaN for one-step windows.
    """
    syn, rl = _pair(synthetic, real, "marginal_metrics")

    def acf(x: np.ndarray) -> np.ndarray:
        xc = x - x.mean(1, keepdims=True)
        var = (xc**2).mean(1) + 1e-12
        k = min(lags, x.shape[1] - 1)
        return np.stack([(xc[:, j:] * xc[:, :-j]).mean(1) / var for j in range(1, k + 1)]).mean(1)

    return {"mean_error": float(np.abs(syn.mean((0, 1)) - rl.mean((0, 1))).mean()),
            "std_error": float(np.abs(syn.std((0, 1)) - rl.std((0, 1))).mean()),
            # one-step windows have no lag
            "acf_error": float(np.abs(acf(syn) - acf(rl)).mean()) if syn.shape[1] > 1 else float("nan")}


def generation_metrics(synthetic: np.ndarray, real: np.ndarray, info: Mapping[str, Any] | None = None,
                       steps: int = 300, seed: int = 0) -> dict[str, float]:
    """Marginal errors, discriminative / predictive scores, context-FID and (for windows with a
    horizon) the Linear Predictive Score of ``synthetic`` against ``real`` windows."""
    syn, rl = _pair(synthetic, real, "generation_metrics")
    out = {"n": float(len(syn)), **marginal_metrics(syn, rl)}
    few = [f"{len(x)} {side} window" + "s" * (len(x) != 1) for side, x in (("generated", syn), ("real", rl))
           if len(x) < 2]
    short = syn.shape[1] < 2
    undefined = (["discriminative", "context_fid"] if few else []) + \
        (["predictive", "predictive_all", "acf_error"] if short else [])
    if undefined:
        why = " and ".join(few) if few else f"windows of {syn.shape[1]} step"
        warnings.warn(f"{', '.join(undefined)}: NaN (undefined for {why}; they need at least 2 windows of at least "
                      "2 steps on each side)", stacklevel=2)
    nan = float("nan")
    # four small networks are trained here (half a minute or more on a CPU): say so as it goes
    with Progress(4, "time-series metrics (training their networks)", "metric") as bar:
        out["discriminative"] = nan if few else discriminative_score(syn, rl, steps, seed=seed)
        bar.update(1)
        out["predictive"] = nan if short else predictive_score(syn, rl, steps, seed=seed)
        bar.update(1)
        out["predictive_all"] = nan if short else predictive_score(syn, rl, steps, seed=seed, target="all")
        bar.update(1)
        out["context_fid"] = nan if few else context_fid(syn, rl, steps=steps, seed=seed)
        bar.update(1)
    horizon = int((info or {}).get("horizon", 0))
    if horizon > 0:
        out["lps"] = linear_predictive_score(syn, rl, int(info["context"]))
    return out
