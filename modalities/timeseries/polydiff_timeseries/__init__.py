"""polydiff plugin for time series.

- TSDiff (Kollovieh et al. 2023): an unconditional diffusion model over windows (context +
  horizon) with an S4 backbone; at sampling time observation self-guidance for forecasting and
  missing values (:func:`predict`), refinement of base forecasts with the implicit density
  (:func:`refine`), synthetic training data with TSTR and the Linear Predictive Score.
- PaCoDi (Cai et al.): diffusion of the orthonormal half spectrum with parallel real /
  imaginary branches and the heteroscedastic loss (``representation: spectral``, network
  ``pacodi``).
- Data: statsmodels' bundled series, generated AR / sine data, the shared ETTh1 / ETTh2 /
  exchange_rate files, pandas long / wide frames, CSV / parquet, pytorch-forecasting
  ``TimeSeriesDataSet``.
- Metrics with gluonts' definitions (CRPS as mean weighted quantile loss, ND, NRMSE, MASE) and
  generation metrics (TSTR, LPS, discriminative, predictive, context-FID).
"""

from . import data, metrics
from .data import DataError, SeriesSet, from_long, from_wide, read_series
from .metrics import crps_ensemble, forecast_metrics, mean_weighted_quantile_loss
from .modality import TimeSeriesModality
from .spectral import HalfSpectrum, from_spectrum, to_spectrum
from .tsdiff import (
    Forecast,
    missing_mask,
    predict,
    refine,
    self_guidance,
)

__all__ = [
    "DataError", "Forecast", "HalfSpectrum", "SeriesSet", "TimeSeriesModality", "crps_ensemble", "data",
    "forecast_metrics", "from_long", "from_spectrum", "from_wide", "mean_weighted_quantile_loss", "metrics",
    "missing_mask", "predict", "read_series", "refine", "self_guidance", "to_spectrum",
]
