"""Base forecasters: seasonal naive, a ridge-regression window model (the LPS / TSTR model) and
DeepAR from pytorch-forecasting (optional extra ``forecasting``), plus conversion of a
pytorch-forecasting ``TimeSeriesDataSet`` to a :class:`~polydiff_timeseries.data.SeriesSet`.

All window models work in the model's scaled units on windows (N, L, C) = context + horizon;
callers scale contexts (e.g. by their mean absolute value, as TSDiff) and scale forecasts back.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import numpy as np
import pandas as pd

from . import data as D


def seasonal_naive(context: np.ndarray, horizon: int, season: int = 1) -> np.ndarray:
    """Repeat the last ``season`` observed values: (N, T) -> (N, 1, H) (one sample path)."""
    c = np.asarray(context, dtype=np.float64)
    c = c[None] if c.ndim == 1 else c
    m = season if season <= c.shape[1] else 1
    last = c[:, -m:]
    idx = np.arange(horizon) % m
    return last[:, idx][:, None, :]


class LinearForecaster:
    """Ridge regression from the flattened context (ctx x C) to the horizon (H x C), with an
    intercept; closed form. TSDiff's LPS model (``alpha`` = ridge strength)."""

    def __init__(self, context: int, alpha: float = 1.0) -> None:
        self.context, self.alpha = context, alpha
        self.w: np.ndarray | None = None

    def fit(self, windows: np.ndarray) -> LinearForecaster:
        """Fit on training windows (N, L) or (N, L, C); returns self."""
        w = np.asarray(windows, dtype=np.float64)
        w = w[..., None] if w.ndim == 2 else w
        n, length, c = w.shape
        if length <= self.context:
            raise ValueError(f"windows of {length} steps have no horizon after a context of {self.context}")
        x = np.concatenate([w[:, : self.context].reshape(n, -1), np.ones((n, 1))], 1)
        y = w[:, self.context:].reshape(n, -1)
        reg = self.alpha * np.eye(x.shape[1])
        reg[-1, -1] = 0.0
        self.w = np.linalg.solve(x.T @ x + reg, x.T @ y)
        self.shape = (length - self.context, c)
        return self

    def predict(self, context: np.ndarray) -> np.ndarray:
        """(N, ctx, C) or (N, ctx) -> (N, H, C) point forecasts."""
        if self.w is None:
            raise RuntimeError("fit the forecaster first")
        c = np.asarray(context, dtype=np.float64)
        c = c[..., None] if c.ndim == 2 else c
        x = np.concatenate([c.reshape(len(c), -1), np.ones((len(c), 1))], 1)
        return (x @ self.w).reshape(len(c), *self.shape)


# ---------------------------------------------------------------------------------------------
# pytorch-forecasting
# ---------------------------------------------------------------------------------------------

def _require_forecasting() -> Any:
    try:
        import pytorch_forecasting
    except ImportError as err:
        raise ImportError("DeepAR and TimeSeriesDataSet support need pytorch-forecasting: "
                          "pip install 'polydiff-timeseries[forecasting]'") from err
    return pytorch_forecasting


def _windows_frame(windows: np.ndarray, offset: int = 0) -> pd.DataFrame:
    """Univariate windows (N, L) as a long frame: one group per window."""
    n, length = windows.shape
    return pd.DataFrame({"series": np.repeat(np.arange(offset, offset + n), length).astype(str),
                         "time_idx": np.tile(np.arange(length), n), "value": windows.reshape(-1).astype(np.float32)})


class DeepARForecaster:
    """pytorch-forecasting's DeepAR (Salinas et al. 2020) trained on univariate windows of
    ``context + horizon`` steps (one window per group, values already scaled), predicting
    sample paths from contexts."""

    def __init__(self, context: int, horizon: int, hidden: int = 40, layers: int = 2, lr: float = 1e-2,
                 max_steps: int = 500, batch_size: int = 64, seed: int = 0) -> None:
        self.context, self.horizon = context, horizon
        self.hidden, self.layers, self.lr = hidden, layers, lr
        self.max_steps, self.batch_size, self.seed = max_steps, batch_size, seed
        self.model: Any = None
        self.dataset: Any = None

    def fit(self, windows: np.ndarray) -> DeepARForecaster:
        """Train DeepAR on training windows (N, L) or (N, L, C); returns self."""
        pf = _require_forecasting()
        import lightning as L
        from pytorch_forecasting.data.encoders import NaNLabelEncoder, TorchNormalizer

        w = np.asarray(windows, dtype=np.float64)
        w = w[..., 0] if w.ndim == 3 else w
        if w.shape[1] != self.context + self.horizon:
            raise ValueError(f"DeepAR windows must have {self.context + self.horizon} steps, got {w.shape[1]}")
        L.seed_everything(self.seed, verbose=False)
        self.dataset = pf.TimeSeriesDataSet(
            _windows_frame(w), time_idx="time_idx", target="value", group_ids=["series"],
            max_encoder_length=self.context, min_encoder_length=self.context,
            max_prediction_length=self.horizon, min_prediction_length=self.horizon,
            time_varying_unknown_reals=["value"], target_normalizer=TorchNormalizer(method="identity"),
            categorical_encoders={"series": NaNLabelEncoder(add_nan=True)})
        self.n_train = len(w)
        with _quiet():
            self.model = pf.DeepAR.from_dataset(self.dataset, hidden_size=self.hidden, rnn_layers=self.layers,
                                                learning_rate=self.lr, dropout=0.1)
            loader = self.dataset.to_dataloader(train=True, batch_size=self.batch_size, num_workers=0)
            trainer = L.Trainer(max_steps=self.max_steps, accelerator="cpu", logger=False,
                                enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                                gradient_clip_val=0.1)
            trainer.fit(self.model, train_dataloaders=loader)
        return self

    def predict(self, context: np.ndarray, num_samples: int = 100) -> np.ndarray:
        """(N, ctx) scaled contexts -> (N, S, H) sample paths.

        Prediction windows reuse the training group ids (ids only index the windows; DeepAR
        gets no static features), so at most ``n_train`` windows go in one call."""
        pf = _require_forecasting()
        c = np.asarray(context, dtype=np.float64)
        c = c[..., 0] if c.ndim == 3 else c
        full = np.concatenate([c[:, -self.context:], np.zeros((len(c), self.horizon))], 1)
        chunk = self.n_train
        out = []
        for lo in range(0, len(full), chunk):
            part = full[lo:lo + chunk]
            ds = pf.TimeSeriesDataSet.from_dataset(self.dataset, _windows_frame(part), predict=True,
                                                   stop_randomization=True)
            with _quiet():
                pred = self.model.predict(ds, mode="samples", n_samples=num_samples, batch_size=256,
                                          return_index=True,
                                          trainer_kwargs={"accelerator": "cpu", "logger": False,
                                                          "enable_progress_bar": False})
            arr = pred.output.detach().cpu().numpy().astype(np.float64)  # (n, H, S)
            order = np.argsort(pred.index["series"].astype(int).to_numpy())
            out.append(np.moveaxis(arr[order], -1, 1))
        return np.concatenate(out)


def deepar_forecast(train: list[np.ndarray] | np.ndarray, context: np.ndarray, horizon: int, context_length: int,
                    num_samples: int = 100, **options: Any) -> np.ndarray:
    """Fit DeepAR on training windows and forecast ``context`` (N, ctx): (N, S, H)."""
    w = np.stack([np.asarray(v, np.float64)[: context_length + horizon] for v in train])
    return DeepARForecaster(context_length, horizon, **options).fit(w).predict(context, num_samples)


class _quiet:
    """Silence Lightning's and pytorch-forecasting's chatter during fit / predict."""

    def __enter__(self) -> None:
        self._levels = {n: logging.getLogger(n).level for n in ("lightning.pytorch", "lightning", "pytorch_lightning")}
        for n in self._levels:
            logging.getLogger(n).setLevel(logging.ERROR)
        self._warn = warnings.catch_warnings()
        self._warn.__enter__()
        warnings.simplefilter("ignore")

    def __exit__(self, *exc: Any) -> None:
        self._warn.__exit__(*exc)
        for n, lvl in self._levels.items():
            logging.getLogger(n).setLevel(lvl)


def from_timeseries_dataset(dataset: Any, source: str = "<TimeSeriesDataSet>") -> D.SeriesSet:
    """A pytorch-forecasting ``TimeSeriesDataSet`` -> :class:`SeriesSet`: its (raw) target per
    group ordered by ``time_idx``, missing steps of a group as NaNs, integer time; the ids are
    the dataset's encoded group indices."""
    _require_forecasting()
    data = dataset.data
    time = np.asarray(data["time"]).reshape(-1)
    groups = np.asarray(data["groups"])[:, 0]
    target = data["target"][0] if isinstance(data["target"], (list, tuple)) else data["target"]
    target = np.asarray(target, dtype=np.float64).reshape(-1)
    vals, ids, index = [], [], []
    names = dataset.target_names
    for g in pd.unique(groups):
        sel = groups == g
        t, v = time[sel], target[sel]
        order = np.argsort(t)
        t, v = t[order], v[order]
        full = np.full(int(t[-1] - t[0] + 1), np.nan)
        full[(t - t[0]).astype(int)] = v
        vals.append(full[:, None])
        ids.append(str(g))
        index.append(pd.RangeIndex(int(t[0]), int(t[-1]) + 1))
    return D.SeriesSet(vals, ids, index, [str(names[0]) if names else "target"], None, source)
