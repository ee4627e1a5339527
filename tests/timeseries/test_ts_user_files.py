"""Users' own files: `polydiff evaluate` on the documented wide / long CSV layouts and folders of
them, the wording of samples.csv errors, warnings for histories shorter than the context or
with empty cells, and forecasts that would replace their own input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import polydiff
from polydiff.cli import main as cli
from polydiff_timeseries import TimeSeriesModality
from polydiff_timeseries.data import DataError, read_series
from polydiff_timeseries.modality import read_samples, write_windows
from polydiff_timeseries.tsdiff import history_gaps

pytestmark = pytest.mark.usefixtures("one_thread")
TIMES = pd.date_range("2024-01-01", periods=30, freq="h")


def _wide(path: Path, columns: int = 2, steps: int = 30, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"timestamp": TIMES[:steps], **{f"s{k}": rng.normal(size=steps) for k in range(columns)}})
    frame.to_csv(path, index=False)
    return path


# -- evaluate: the documented layouts --------------------------------------------------------------

def test_wide_long_and_folders_of_user_series_are_samples(tmp_path: Path) -> None:
    wide = _wide(tmp_path / "wide.csv", columns=3)
    x = read_samples(wide)
    frame = pd.read_csv(wide)
    assert x.shape == (3, 30, 1)  # each column one univariate series, one sample
    np.testing.assert_allclose(x[1, :, 0], frame["s1"].to_numpy())
    long = tmp_path / "long.csv"  # item_id, timestamp, value columns: one sample per item, one channel per column
    pd.DataFrame({"item_id": np.repeat(["a", "b"], 30), "timestamp": np.tile(TIMES, 2),
                  "load": np.arange(60.0), "temp": -np.arange(60.0)}).to_csv(long, index=False)
    y = read_samples(long)
    assert y.shape == (2, 30, 2) and y[1, 0].tolist() == [30.0, -30.0]
    folder = tmp_path / "series"
    folder.mkdir()
    for k in range(3):
        _wide(folder / f"f{k}.CSV", columns=1, seed=k)
    (folder / "notes.txt").write_text("not a series")
    assert read_samples(folder).shape == (3, 30, 1)
    upper = tmp_path / "upper"  # polydiff's own samples file, whatever the case of its name
    upper.mkdir()
    write_windows(np.ones((2, 4, 1)), upper / "SAMPLES.CSV")
    assert read_samples(upper).shape == (2, 4, 1)
    assert TimeSeriesModality().read(folder).shape == (3, 30, 1)


def test_user_layout_errors_say_what_is_accepted(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError) as err:
        read_samples(empty)
    msg = str(err.value)
    assert "samples.csv" in msg and "'timestamp' and one column per series" in msg and "'item_id'" in msg
    assert "empty/samples.csv" not in msg  # no file the user never had
    (tmp_path / "plain.csv").write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match=r"plain\.csv: no 'timestamp' column \(columns: a, b\); evaluate reads"):
        read_samples(tmp_path / "plain.csv")
    folder = tmp_path / "mixed"
    folder.mkdir()
    _wide(folder / "a.csv", columns=1)
    _wide(folder / "b.csv", columns=1, steps=20)
    with pytest.raises(DataError, match=r"b\.csv: series of 20 steps x 1 channel\(s\), a\.csv has 30 x 1"):
        read_samples(folder)
    long = tmp_path / "ragged_long.csv"
    pd.DataFrame({"item_id": ["a"] * 5 + ["b"] * 3, "timestamp": [*TIMES[:5], *TIMES[:3]],
                  "v": np.arange(8.0)}).to_csv(long, index=False)
    with pytest.raises(DataError, match=r"ragged_long\.csv: series 'b' has 3 steps, series 'a' has 5"):
        read_samples(long)


def test_evaluate_command_on_a_folder_of_wide_csvs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "wide"
    folder.mkdir()
    for k in range(6):
        _wide(folder / f"s{k}.csv", columns=1, seed=k)
    assert cli(["evaluate", str(folder), "--modality", "timeseries", "--reference", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "n: 6" in out and "mean_error: 0\n" in out


def test_samples_with_different_steps_are_named_in_plain_words(tmp_path: Path) -> None:
    file = tmp_path / "samples.csv"
    rows = [f"{s},{t},{float(t)}" for s in range(3) for t in range(5) if not (s == 2 and t == 2)]
    file.write_text("sample,step,c0\n" + "\n".join(rows) + "\n")
    with pytest.raises(DataError) as err:
        read_samples(file)
    assert str(err.value) == (f"{file}:12: sample 2 has 4 steps in 0..4 (with gaps), sample 0 has steps 0..4: "
                              "every sample must have the same steps")


# -- histories that are not all there; outputs that are inputs -------------------------------------

def test_history_gaps_are_counted_in_one_line(tmp_path: Path) -> None:
    short = _wide(tmp_path / "short.csv", columns=2, steps=5)
    assert history_gaps(read_series(short).values, 8, short) == (
        f"{short}: 2 of 2 series shorter than the model's context of 8 steps: 6 step(s) in all padded at the front "
        "as missing")
    holes = tmp_path / "holes.csv"
    frame = pd.read_csv(_wide(holes, columns=2))
    frame.loc[[27, 29], "s0"] = np.nan
    frame.loc[3, "s1"] = np.nan  # before the last 8 steps: not used, not counted
    frame.to_csv(holes, index=False)
    assert history_gaps(read_series(holes, nan="mask").values, 8, holes) == \
        f"{holes}: 2 of 16 cells in the last 8 steps empty, treated as missing"
    assert history_gaps(read_series(_wide(tmp_path / "full.csv")).values, 8, "full.csv") is None


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A TSDiff trained for 2 steps (context 8, horizon 2): enough to run the commands."""
    out = tmp_path_factory.mktemp("tiny_ts")
    cfg = {"modality": "timeseries",
           "data": {"name": "ar", "context": 8, "horizon": 2, "stride": 5, "n_series": 6, "length": 60, "season": 5},
           "model": {"name": "tsdiff", "hidden": 8, "depth": 1, "state": 8, "emb_dim": 8},
           "process": {"schedule": "tsdiff", "n": 10},
           "train": {"max_steps": 2, "batch_size": 8, "checkpoint_every": 2, "progress": False, "logger": "none"},
           "sample": {"num": 2, "sampler": "ddpm", "steps": 2}}
    return polydiff.train(cfg, out, verbose=False).checkpoint


def test_forecast_and_observed_warn_and_never_replace_their_input(
        tiny_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    short = _wide(tmp_path / "short.csv", columns=1, steps=5)
    common = ["--num-samples", "2", "--steps", "2"]
    with pytest.warns(UserWarning, match=r"short\.csv: 1 of 1 series shorter than the model's context of 8 steps: "
                                         r"3 step\(s\)") as caught:
        assert cli(["timeseries", "forecast", str(tiny_ckpt), str(short), *common, "--out",
                    str(tmp_path / "f.csv")]) == 0
    assert sum("shorter" in str(w.message) for w in caught) == 1  # the command's is predict's: one warning
    with pytest.warns(UserWarning, match=r"short\.csv: 1 of 1 series shorter than the model's context"):
        assert cli(["sample", str(tiny_ckpt), "--num", "1", "--steps", "2", "--observed", str(short),
                    "--out", str(tmp_path / "obs")]) == 0
    capsys.readouterr()
    data = _wide(tmp_path / "precious.csv", columns=1)
    before = data.read_bytes()
    for flag, target in (("--out", data), ("--out", tmp_path / "x" / ".." / "precious.csv"), ("--plot", data),
                         ("--out", tiny_ckpt)):
        assert cli(["timeseries", "forecast", str(tiny_ckpt), str(data), *common, flag, str(target),
                    "--overwrite"]) == 2
        err = capsys.readouterr().err
        assert f"{flag} is the " in err and "refusing to replace it even with --overwrite" in err, err
    assert data.read_bytes() == before
