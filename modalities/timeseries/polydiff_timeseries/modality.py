"""The ``timeseries`` modality: fixed-length windows (context + horizon) of regular series.

- fields: one Gaussian field ``"x"`` (L, C) whose unobserved entries (``state["observed"]`` = 0,
  e.g. NaNs kept with ``nan="mask"``) are held at zero and left out of the loss
  (``representation="time"``), or PaCoDi's half spectrum ``"spec"`` (K, C, 2), K = L // 2 + 1,
  with the :class:`~polydiff_timeseries.spectral.HalfSpectrum` structure
  (``representation="spectral"``);
- networks: ``tsdiff`` (S4 residual blocks), ``transformer`` (a DiT over time steps) and
  ``pacodi`` (parallel real / imaginary DiTs over frequency bins);
- datasets: generated ``ar`` (the embedded default) and ``sine``, statsmodels' bundled series,
  the shared ETTh1 / ETTh2 / exchange_rate files, and users' CSV / parquet (``file``);
- objects: windows as a float64 array (N, L, C) in model (scaled) units; files: a long CSV
  (``samples.csv``); ``polydiff evaluate`` also reads users' wide / long series files
  (:func:`read_samples`: each series one sample).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from polydiff.plugin import (
    Command,
    DataBundle,
    FieldSpec,
    GaussianProcess,
    Masked,
    Modality,
    Observation,
    State,
    atomic_write,
    csv_rows,
    read_text,
)

from . import data as D
from .nets import PaCoDiNet, TimeTransformer, TSDiffNet
from .spectral import HalfSpectrum, from_spectrum, num_bins

SAMPLES_FILE = "samples.csv"
REPRESENTATIONS = ("time", "spectral")


# ---------------------------------------------------------------------------------------------
# datasets
# ---------------------------------------------------------------------------------------------

def window_bundle(ss: D.SeriesSet, name: str, context: int, horizon: int, stride: int = 1, scaling: str = "mean",
                  test_windows: int = 1, val_windows: int = 0, multivariate: bool = False, drop_short: bool = False,
                  seed: int = 0, options: Mapping[str, Any] | None = None) -> DataBundle:
    """Windows of ``context + horizon`` steps of a :class:`SeriesSet` as a :class:`DataBundle`.

    With ``horizon > 0`` the splits are in time (see :func:`data.split_windows`); with
    ``horizon = 0`` (pure generation of ``context``-step windows) every window of every series
    (``stride`` apart) is shuffled with ``seed`` and split 80 / 10 / 10.
    ``multivariate=False`` turns every channel into its own univariate series (TSDiff's setting).
    """
    if context < 1 or horizon < 0:
        raise D.DataError(f"{name}: context must be >= 1 and horizon >= 0, got {context} and {horizon}")
    if stride < 1:
        raise D.DataError(f"{name}: stride must be >= 1, got {stride}")
    ss = ss if multivariate else ss.univariate()
    length = context + horizon
    if horizon > 0:
        splits = D.split_windows(ss, length, horizon, stride, test_windows, val_windows, drop_short)
    else:
        splits = _random_splits(ss, length, stride, seed, drop_short)
    scaler = D.Scaler(scaling, context if horizon > 0 else None).fit(list(splits["train"].windows))
    train = D.states_of(splits["train"], scaler)
    x, obs = train.tensors["x"], train.tensors["observed"]
    info = {"dataset": name, "source": ss.source, "options": dict(options or {}), "length": length,
            "context": context, "horizon": horizon, "channels": ss.channels,
            "columns": list(ss.columns), "multivariate": multivariate, "scaling": scaler.to_dict(),
            "freq": ss.freq, "season": int(ss.meta.get("season", ss.season)), "n_series": len(ss),
            "series_ids": list(ss.ids)[:1000], "n_train": len(train),
            "has_missing": bool((obs < 1).any()),
            "data_std": float(torch.sqrt((x**2 * obs).sum() / obs.sum().clamp_min(1))) if len(train) else 1.0}
    val = D.states_of(splits["val"], scaler) if len(splits["val"].windows) else None
    test = D.states_of(splits["test"], scaler, extras=True) if len(splits["test"].windows) else None
    return DataBundle(train, val, test, info)


def _random_splits(ss: D.SeriesSet, length: int, stride: int, seed: int, drop_short: bool) -> dict[str, D.Split]:
    parts = []
    for i, v in enumerate(ss.values):
        w = D.sliding_windows(v, length, stride)
        if not len(w):
            msg = f"{ss.source}: series {ss.ids[i]!r} has {len(v)} time steps, fewer than one window of {length}"
            if drop_short:
                continue
            raise D.DataError(msg + " (lower the window length or pass drop_short=True)")
        parts.append((w, np.full(len(w), i), np.arange(length, len(v) + 1, stride)[: len(w)]))
    if not parts:
        raise D.DataError(f"{ss.source}: no series is long enough for windows of {length} steps")
    w, s, e = (np.concatenate([p[j] for p in parts]) for j in range(3))
    if len(w) < 10:
        raise D.DataError(f"{ss.source}: {len(w)} window(s) of {length} steps are too few to hold out a test split; "
                          "need at least 10 (lower the window length or the stride)")
    perm = np.random.default_rng(seed).permutation(len(w))
    n_val = n_test = len(w) // 10
    cut = {"test": perm[:n_test], "val": perm[n_test:n_test + n_val], "train": perm[n_test + n_val:]}
    return {k: D.Split(w[ix], s[ix], e[ix]) for k, ix in cut.items()}


def ar_dataset(context: int = 40, horizon: int = 10, stride: int = 5, scaling: str = "mean", test_windows: int = 2,
               val_windows: int = 1, n_series: int = 100, length: int = 400, season: int = 10, ar: float = 0.8,
               noise: float = 0.1, seed: int = 0) -> DataBundle:
    """The embedded default: seasonal AR series (:func:`data.ar_series`), windows of 50 steps."""
    ss = D.ar_series(n_series, length, season, ar, noise, seed=seed)
    return window_bundle(ss, "ar", context, horizon, stride, scaling, test_windows, val_windows,
                         options={"n_series": n_series, "length": length, "season": season, "seed": seed})


def sine_dataset(window: int = 24, stride: int = 1, channels: int = 5, length: int = 10_000, scaling: str = "none",
                 seed: int = 0) -> DataBundle:
    """TimeGAN's multichannel sines as ``window``-step windows for pure generation."""
    ss = D.sine_series(1, length, channels, seed=seed, segment=window)
    return window_bundle(ss, "sine", window, 0, stride, scaling, multivariate=True, seed=seed,
                         options={"channels": channels, "length": length})


def _statsmodels(name: str) -> Callable[..., DataBundle]:
    def factory(context: int = 24, horizon: int = 6, stride: int = 1, scaling: str = "mean", test_windows: int = 1,
                val_windows: int = 0, multivariate: bool = False, columns: Sequence[str] | None = None) -> DataBundle:
        ss = D.statsmodels_series(name)
        ss = ss.select(columns) if columns else ss
        return window_bundle(ss, name, context, horizon, stride, scaling, test_windows, val_windows, multivariate)

    factory.__name__ = f"{name}_dataset"
    factory.__doc__ = f"statsmodels' bundled ``{name}`` series (embedded; see :func:`data.statsmodels_series`)."
    return factory


def _shared(name: str) -> Callable[..., DataBundle]:
    def factory(context: int = 96, horizon: int = 24, stride: int = 24, scaling: str = "mean", test_windows: int = 7,
                val_windows: int = 1, multivariate: bool = False, columns: Sequence[str] | None = None,
                max_steps: int | None = None) -> DataBundle:
        ss = D.exchange_rate() if name == "exchange_rate" else D.ett("ETTh1" if name == "etth1" else "ETTh2")
        ss = ss.select(columns) if columns else ss
        ss = ss.head(max_steps) if max_steps else ss
        return window_bundle(ss, name, context, horizon, stride, scaling, test_windows, val_windows, multivariate,
                             options={"columns": list(columns) if columns else None, "max_steps": max_steps})

    factory.__name__ = f"{name}_dataset"
    factory.__doc__ = f"``{name}`` from shared/data/timeseries (needs the shared folder; see its README)."
    return factory


def file_dataset(path: str, target: str | list[str] | None = None, id_col: str | None = None,
                 time_col: str = "timestamp", context: int = 24, horizon: int = 6, stride: int = 1,
                 scaling: str = "mean", test_windows: int = 1, val_windows: int = 0, multivariate: bool = False,
                 nan: str = "error", regularize: bool = False, drop_short: bool = False) -> DataBundle:
    """Users' CSV / parquet, long (``id_col`` given) or wide; see :func:`data.read_series` for
    the handling of irregular timestamps, NaNs and short series."""
    ss = D.read_series(path, target, id_col, time_col, multivariate=multivariate, nan=nan, regularize=regularize)
    return window_bundle(ss, "file", context, horizon, stride, scaling, test_windows, val_windows, multivariate,
                         drop_short, options={"path": str(path)})


# ---------------------------------------------------------------------------------------------
# networks
# ---------------------------------------------------------------------------------------------

def _sigma_data(info: Mapping[str, Any]) -> float:
    return float(max(info.get("data_std", 1.0), 1e-3))


def tsdiff_network(info: Mapping[str, Any], fields: Mapping[str, FieldSpec], hidden: int = 64, depth: int = 3,
                   state: int = 64, emb_dim: int = 64) -> nn.Module:
    """TSDiff's S4 backbone (paper: hidden 128 x 6 blocks; small: 64 x 3)."""
    return TSDiffNet(int(info["channels"]), fields, _sigma_data(info), hidden, depth, state, emb_dim)


def transformer_network(info: Mapping[str, Any], fields: Mapping[str, FieldSpec], hidden: int = 64, depth: int = 4,
                        heads: int = 4, emb_dim: int = 64) -> nn.Module:
    """A DiT over the L time steps (the time-domain model of the PaCoDi comparison)."""
    return TimeTransformer(int(info["length"]), int(info["channels"]), fields, _sigma_data(info), hidden, depth,
                           heads, emb_dim)


def pacodi_network(info: Mapping[str, Any], fields: Mapping[str, FieldSpec], hidden: int = 64, depth: int = 2,
                   heads: int = 4, emb_dim: int = 64, interaction: bool = True) -> nn.Module:
    """PaCoDi: parallel real / imaginary DiTs of ``depth`` blocks each over L // 2 + 1 bins."""
    return PaCoDiNet(int(info["length"]), int(info["channels"]), fields, _sigma_data(info), hidden, depth, heads,
                     emb_dim, interaction)


# ---------------------------------------------------------------------------------------------
# the modality
# ---------------------------------------------------------------------------------------------

class TimeSeriesModality(Modality):
    """Windows of time series: TSDiff (forecasting by self-guidance, refinement, synthesis) and
    PaCoDi (spectral diffusion)."""

    name = "timeseries"
    description = ("time-series windows: TSDiff (self-guided forecasting, refinement, synthesis) and PaCoDi "
                   "(spectral diffusion); CRPS / ND / NRMSE / MASE and TSTR / LPS / discriminative / predictive / "
                   "context-FID metrics")

    def datasets(self) -> dict[str, Callable[..., DataBundle]]:
        table: dict[str, Callable[..., DataBundle]] = {"ar": ar_dataset, "sine": sine_dataset}
        table.update({n: _statsmodels(n) for n in D.STATSMODELS_SERIES})
        table.update({n: _shared(n) for n in ("etth1", "etth2", "exchange_rate")})
        table["file"] = file_dataset
        return table

    def networks(self) -> dict[str, Callable[..., nn.Module]]:
        return {"tsdiff": tsdiff_network, "transformer": transformer_network, "pacodi": pacodi_network}

    def fields(self, info: Mapping[str, Any], schedule: str = "tsdiff", prediction: str = "eps",
               representation: str = "time", **schedule_options: Any) -> dict[str, FieldSpec]:
        """``representation="time"``: field ``"x"`` (L, C) masked by ``"observed"``;
        ``"spectral"``: PaCoDi's field ``"spec"`` (K, C, 2). ``schedule="tsdiff"`` is TSDiff's
        DDPM schedule (100 linear betas 1e-4 .. 0.1, made continuous); any polydiff schedule
        name with its options works too (``vp_linear`` for the VP-SDE variant)."""
        if representation not in REPRESENTATIONS:
            raise ValueError(f"representation={representation!r}; allowed: {', '.join(REPRESENTATIONS)}")
        if schedule == "tsdiff":
            opts = {"n": 100, "beta_start": 1e-4, "beta_end": 0.1, **schedule_options}
            process = GaussianProcess("vp_discrete", **opts)
        else:
            process = GaussianProcess(schedule, **schedule_options)
        if representation == "spectral":
            if info.get("has_missing"):
                raise ValueError("the spectral representation needs complete windows; this data has missing values "
                                 "(use nan='interpolate' or the time representation)")
            return {"spec": FieldSpec(process, HalfSpectrum(int(info["length"])), prediction)}
        return {"x": FieldSpec(process, Masked("observed"), prediction)}

    def prior_state(self, n: int, info: Mapping[str, Any], generator: torch.Generator | None = None,
                    condition: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Shapes of both representations (the sampler draws the one that is a field) and an
        all-observed mask."""
        if condition:
            raise ValueError(f"unknown condition {next(iter(condition))!r}: time-series models are unconditional; "
                             "use polydiff_timeseries.predict for forecasts")
        length, c = int(info["length"]), int(info["channels"])
        return {"x": (n, length, c), "spec": (n, num_bins(length), c, 2), "observed": torch.ones(n, length, c)}

    def to_native(self, state: State, info: Mapping[str, Any]) -> np.ndarray:
        """Windows (N, L, C) float64 in model units (scaled as the training data)."""
        if "spec" in state and "x" not in state:
            x = from_spectrum(state["spec"].double(), int(info["length"]))
        else:
            x = state["x"]
        return x.detach().to("cpu", torch.float64).numpy()

    def from_native(self, objects: Sequence[Any], info: Mapping[str, Any]) -> State:
        x = torch.from_numpy(np.array(objects, dtype=np.float32))  # a copy: read-only arrays are fine
        return {"x": x, "observed": torch.ones_like(x)}

    def reference(self, data: DataBundle) -> np.ndarray:
        return self.reference_split(data).tensors["x"].double().numpy()

    def write(self, objects: Sequence[Any], out_dir: Path) -> list[Path]:
        return [write_windows(np.asarray(objects), Path(out_dir) / SAMPLES_FILE)]

    def read(self, path: Path) -> np.ndarray:
        """Windows (N, L, C) of a file or folder: see :func:`read_samples`."""
        return read_samples(path)

    def evaluate(self, objects: Sequence[Any], reference: Sequence[Any], info: Mapping[str, Any]) -> dict[str, float]:
        from .genmetrics import generation_metrics

        return generation_metrics(np.asarray(objects), np.asarray(reference), info)

    def observation(self, path: Path, info: Mapping[str, Any]) -> Observation:
        """``polydiff sample CKPT --observed SERIES.csv``: the last ``context`` steps of one
        series (wide CSV / parquet with a ``timestamp`` column, one column per channel; NaN =
        missing) scaled as the model's training windows, observed; the horizon is generated
        (forecasting by inpainting; ``polydiff timeseries forecast`` uses self-guidance instead).
        A history shorter than the context (front-padded) or with empty cells is counted in one
        warning naming the file. Samples are windows in model units; the metadata's
        ``observed_meta`` holds the history's columns and the per-channel ``loc`` / ``scale``
        that bring them back to the file's units (``value * scale + loc``)."""
        if Path(path).suffix in (".pt", ".pth", ".npz"):
            return super().observation(path, info)
        from .tsdiff import _scales, as_context

        ctx_len, horizon = int(info["context"]), int(info.get("horizon", 0))
        if horizon < 1:
            raise ValueError(f"{path}: the model was trained on windows without a horizon; there is nothing to "
                             "forecast from an observed history")
        ss = D.read_series(path, nan="mask", multivariate=True)
        if len(ss) != 1:
            raise ValueError(f"{path}: expected one series (the history to forecast from), found {len(ss)}")
        c = as_context(ss, ctx_len, horizon, warn=True)
        if c.values.shape[-1] != int(info["channels"]):
            raise ValueError(f"{path}: {c.values.shape[-1]} value columns, the model has {info['channels']} "
                             "channel(s): --observed takes one history, its value columns the model's channels "
                             "(forecast several series with: polydiff timeseries forecast CKPT FILE)")
        obs = np.isfinite(c.values)
        if not obs.any():
            raise ValueError(f"{path}: no observed value in the last {ctx_len} steps")
        loc, scl = _scales(c.values, obs, info)
        y = np.where(obs, (np.nan_to_num(c.values) - loc[:, None]) / scl[:, None], 0.0)[0]
        values = np.concatenate([y, np.zeros((horizon, y.shape[1]))])
        mask = np.concatenate([obs[0], np.zeros((horizon, y.shape[1]), bool)])
        meta = {"columns": list(ss.columns), "loc": [float(v) for v in loc[0]], "scale": [float(v) for v in scl[0]],
                "units": "samples are scaled as the model's training windows: data = value * scale + loc, per "
                         "channel (polydiff timeseries forecast writes data units with timestamps)"}
        return Observation({"x": torch.as_tensor(values, dtype=torch.float32)}, {"x": torch.as_tensor(mask)}, meta)

    def evaluate_model(self, generator: Any, *, num: int, seed: int, forecast: bool | None = None,
                       num_samples: int = 32, windows: int = 64, steps: int | None = None) -> dict[str, float]:
        """``polydiff evaluate CKPT [--option forecast=true num_samples=32 windows=64]``: the
        generation metrics of ``num`` samples and, for models trained with a horizon (by default
        then), CRPS / ND / NRMSE / MASE of self-guided forecasts of the first ``windows`` held-out
        test windows with ``num_samples`` paths each (prefixed ``forecast_``)."""
        from .metrics import forecast_metrics
        from .tsdiff import predict, raw_windows

        out = dict(super().evaluate_model(generator, num=num, seed=seed))
        info = generator.info
        horizon = int(info.get("horizon", 0))
        if forecast is None:
            forecast = horizon > 0 and "x" in generator.fields
        if not forecast:
            return out
        if horizon < 1:
            raise ValueError("forecast=true needs a model trained on windows with a horizon")
        data = generator.modality.dataset(generator.config.data.name, **generator.config.data.options)
        if data.test is None:
            raise ValueError(f"dataset {generator.config.data.name!r} has no test windows to forecast")
        w = raw_windows(data.test)[:windows]
        ctx, target = w[:, : int(info["context"])], w[:, int(info["context"]):]
        fc = predict(generator, ctx, num_samples=num_samples, steps=steps, seed=seed)
        ch = target.shape[-1]
        y = np.moveaxis(target, -1, 1).reshape(-1, horizon)  # series id/c as the forecast orders them
        hist = np.moveaxis(ctx, -1, 1).reshape(len(y), -1)
        metrics = forecast_metrics(y, fc.samples, hist, int(info.get("season", 1)))
        out.update({f"forecast_{k}": float(v) for k, v in metrics.items()})
        out["forecast_windows"] = float(len(w) * ch)
        return out

    def commands(self) -> dict[str, Command]:
        """``polydiff timeseries forecast CKPT SERIES``: quantile forecasts of a series file."""
        from .cli import COMMANDS

        return COMMANDS

    def plot(self, objects: Sequence[Any], path: Path, reference: Sequence[Any] | None = None,
             info: Mapping[str, Any] | None = None) -> Path | None:
        """Real and synthetic windows; with the model's ``info``, a line where the context ends
        (windows with a horizon) and the y axis saying how the values are scaled."""
        from .plot import plot_samples

        info = info or {}
        horizon = int(info.get("horizon") or 0)
        context = int(info["context"]) if horizon > 0 and "context" in info else None
        scaling = info["scaling"].get("kind") if isinstance(info.get("scaling"), Mapping) else None
        return plot_samples(np.asarray(objects), None if reference is None else np.asarray(reference), path,
                            context=context, scaling=scaling)


LAYOUTS = ("polydiff's samples.csv ('sample,step,<one column per channel>'), a wide CSV / parquet ('timestamp' "
           "and one column per series) or a long one ('item_id', 'timestamp' and value columns), or a folder of "
           "such files; each series is one sample")
SERIES_SUFFIXES = (".csv", ".parquet", ".pq")


def read_samples(path: str | Path) -> np.ndarray:
    """Windows (N, L, C) to evaluate, from any of the :data:`LAYOUTS`:

    - polydiff's own long CSV (:func:`write_windows`; a folder holding ``samples.csv``, found
      whatever the case of its name);
    - users' series as documented for :func:`data.read_series`: a wide file (``timestamp`` and
      one column per series, each column one univariate series, the modality's default) or a
      long one (``item_id``, ``timestamp`` and one column per channel); every series is one
      sample, so all must have the same length and channels;
    - a folder of such files (every ``.csv`` / ``.parquet``, suffixes in any case), their series
      together.

    Errors name the file (and the line or series) and, where nothing fits, the layouts accepted."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if not path.is_dir():
        return _read_one(path)
    samples = [p for p in sorted(path.iterdir()) if p.is_file() and p.name.lower() == SAMPLES_FILE]
    if samples:
        return read_windows(samples[0])
    files = [p for p in sorted(path.iterdir()) if p.is_file() and p.suffix.lower() in SERIES_SUFFIXES]
    if not files:
        raise FileNotFoundError(f"{path}: no {SAMPLES_FILE} and no .csv / .parquet series files; evaluate reads "
                                f"{LAYOUTS}")
    parts = [(f, _read_one(f)) for f in files]
    first, w0 = parts[0]
    for f, w in parts[1:]:
        if w.shape[1:] != w0.shape[1:]:
            raise D.DataError(f"{f}: series of {w.shape[1]} steps x {w.shape[2]} channel(s), {first.name} has "
                              f"{w0.shape[1]} x {w0.shape[2]}: every series is one sample, so all need the same "
                              "length and channels")
    return np.concatenate([w for _, w in parts])


def _read_one(file: Path) -> np.ndarray:
    """One file of :func:`read_samples`: polydiff's samples layout, else users' wide / long series."""
    if file.suffix.lower() not in (".parquet", ".pq"):
        text = read_text(file, D.DataError)
        first = next((line for line in text.splitlines() if line.strip()), "")
        if [c.strip().lower() for c in first.split(",")[:2]] == ["sample", "step"]:
            return read_windows(file)
        if file.suffix.lower() not in SERIES_SUFFIXES:
            raise D.DataError(f"{file}: not a .csv or .parquet file; evaluate reads {LAYOUTS}")
    df = D.read_frame(file)
    if "timestamp" not in df.columns:
        raise D.DataError(f"{file}: no 'timestamp' column (columns: {', '.join(map(str, df.columns))}); evaluate "
                          f"reads {LAYOUTS}")
    if "item_id" in df.columns:
        values = [c for c in df.columns if c not in ("item_id", "timestamp")]
        ss = D.read_series(file, values, "item_id", "timestamp", multivariate=True)
    else:
        ss = D.read_series(file, None, None, "timestamp")
    lengths = [v.shape for v in ss.values]
    for sid, shape in zip(ss.ids, lengths):
        if shape != lengths[0]:
            raise D.DataError(f"{file}: series {sid!r} has {shape[0]} steps, series {ss.ids[0]!r} has "
                              f"{lengths[0][0]}: every series is one sample, so all need the same length")
    return np.stack(ss.values)


def write_windows(windows: np.ndarray, file: Path, columns: Sequence[str] | None = None) -> Path:
    """Windows (N, L, C) as a long CSV ``sample, step, <channels>`` (written atomically): every
    value in its shortest exact form, so :func:`read_windows` gives back the same floats, and a
    diverged sample's values as ``nan`` / ``inf``."""
    w = np.asarray(windows, dtype=np.float64)
    n, length, c = w.shape
    cols = list(columns) if columns is not None else [f"c{i}" for i in range(c)]
    df = pd.DataFrame(w.reshape(n * length, c), columns=cols)
    df.insert(0, "step", np.tile(np.arange(length), n))
    df.insert(0, "sample", np.repeat(np.arange(n), length))
    return atomic_write(file, lambda tmp: df.to_csv(tmp, index=False, na_rep="nan"))


def read_windows(file: Path) -> np.ndarray:
    """Read windows written by :func:`write_windows` back to (N, L, C).

    The file must be complete and regular: the header ``sample, step, <channels>``, every row
    with that many fields, ``sample`` / ``step`` non-negative integers, finite values, every
    sample with the same steps, each (sample, step) once, and a line end after the last row (a
    file cut off while it was written ends mid-row). Values may be ``nan`` / ``inf``, as
    :func:`write_windows` writes a diverged sample (the metrics then name the window). Anything
    else is a :class:`DataError` naming the file and the line."""
    file = Path(file)
    if not file.is_file():
        raise FileNotFoundError(f"{file}: no such samples file")
    text = read_text(file, D.DataError)
    pairs = csv_rows(file, text, ",", D.DataError)
    if not pairs:
        raise D.DataError(f"{file}: the file is empty")
    lines, records = (list(v) for v in zip(*pairs))
    header = [c.strip() for c in records[0]]
    if header[:2] != ["sample", "step"] or len(header) < 3:
        raise D.DataError(f"{file}:{lines[0]}: expected the header 'sample,step,<one column per channel>'; "
                          f"got {','.join(header)!r}")
    rows, lines = records[1:], lines[1:]
    if not rows:
        raise D.DataError(f"{file}: a header but no samples")
    if not text.endswith(("\n", "\r")):
        raise D.DataError(f"{file}:{lines[-1]}: the last line has no line end, so the file looks cut off while it "
                          "was written (a half-written row); regenerate it")
    width = len(header)
    for line, row in zip(lines, rows):
        if len(row) != width:
            raise D.DataError(f"{file}:{line}: expected {width} fields ({','.join(header)}), got {len(row)}: "
                              f"{','.join(row)!r}")
    cells = np.asarray(rows, dtype=str)
    try:
        vals = np.char.strip(cells).astype(np.float64)
    except ValueError:
        vals = np.full(cells.shape, np.nan)
        for i, row in enumerate(rows):
            for j, c in enumerate(row):
                try:
                    vals[i, j] = float(c)
                except ValueError:
                    raise D.DataError(f"{file}:{lines[i]}: column {header[j]!r}: not a number: {c!r}") from None
    bad = np.argwhere(~np.isfinite(vals[:, :2]))
    if bad.size:
        i, j = bad[0]
        raise D.DataError(f"{file}:{lines[i]}: column {header[j]!r}: not a finite number: {rows[i][j]!r}")
    ids = vals[:, :2]
    odd = np.argwhere((ids != np.round(ids)) | (ids < 0) | (ids > 2.0**53))
    if odd.size:
        i, j = odd[0]
        raise D.DataError(f"{file}:{lines[i]}: {header[j]} must be a non-negative integer, got {rows[i][j]!r}")
    sample, step = ids[:, 0].astype(np.int64), ids[:, 1].astype(np.int64)
    order = np.lexsort((step, sample))
    sample, step, vals, where = sample[order], step[order], vals[order, 2:], np.asarray(lines)[order]
    twice = np.flatnonzero((np.diff(sample) == 0) & (np.diff(step) == 0))
    if twice.size:
        k = twice[0] + 1
        raise D.DataError(f"{file}:{where[k]}: sample {sample[k]} step {step[k]} appears twice "
                          f"(also at line {where[k - 1]})")
    starts = np.flatnonzero(np.r_[True, np.diff(sample) != 0])
    steps = step[starts[0]:starts[1] if len(starts) > 1 else len(step)]
    length = len(steps)
    for a, b in zip(starts, [*starts[1:], len(step)]):
        if b - a != length or not np.array_equal(step[a:b], steps):
            raise D.DataError(f"{file}:{where[a]}: sample {sample[a]} has {_span(step[a:b])}, sample {sample[0]} "
                              f"has {_span(steps)}: every sample must have the same steps")
    return vals.reshape(len(starts), length, -1)


def _span(steps: np.ndarray) -> str:
    """``"steps 0..9"`` for contiguous steps, else the count and the ends (``"23 steps in
    0..23 (with gaps)"``)."""
    if len(steps) and steps[-1] - steps[0] == len(steps) - 1:
        return f"steps {steps[0]}..{steps[-1]}"
    return f"{len(steps)} steps in {steps[0]}..{steps[-1]} (with gaps)" if len(steps) else "no steps"
