"""Silent data problems of the time-series windows (issue #18, item 6): a split that leaves no
test window, or a series too short for one, is an error naming the file and the series."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from polydiff_timeseries import data as D
from polydiff_timeseries.modality import TimeSeriesModality

pytestmark = pytest.mark.usefixtures("one_thread")


def _series(length: int) -> D.SeriesSet:
    return D.SeriesSet([np.arange(float(length))[:, None] + 1], ["s"], [pd.RangeIndex(length)], ["target"],
                       source="mine.csv")


def test_no_test_windows_is_an_error():
    with pytest.raises(D.DataError, match=r"mine\.csv: test_windows=0 and val_windows=0: need at least one test "
                                          r"window per series"):
        D.split_windows(_series(100), 20, 5, test_windows=0)
    sp = D.split_windows(_series(100), 20, 5, test_windows=1)
    assert len(sp["test"].windows) == 1 and len(sp["train"].windows) > 0


def test_series_too_short_for_one_test_window_names_the_file_and_series(tmp_path):
    f = tmp_path / "short.csv"
    f.write_text("timestamp,load\n" + "".join(f"2024-01-{d:02d},{d}\n" for d in range(1, 11)))
    with pytest.raises(D.DataError, match=r"short\.csv: series '.*' has 10 time steps; a window of 12 .* needs 16"):
        TimeSeriesModality().dataset("file", path=str(f), context=8, horizon=4)
