"""Toy point clouds: Gaussian-mixture data with exact likelihoods, users' own CSV points,
CSV files, and the metrics that compare two point clouds."""

from __future__ import annotations

import csv
import io
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..files import atomic_write, csv_rows, read_text
from ..metrics import sliced_wasserstein
from ..modality import DataBundle, TensorStates
from .gmm import GaussianMixture


def _stats(x: Tensor) -> dict[str, Any]:
    """Mean and scale of the points (one point: scale 0, as for a constant column; the sample
    std of one point is NaN and would make every loss NaN)."""
    std = x.std(0) if len(x) > 1 else torch.zeros(x.shape[1:], dtype=x.dtype)
    return {"data_mean": x.mean(0).tolist(), "data_std": float(std.pow(2).mean().sqrt())}


def draw_gmm(gmm: GaussianMixture, n: int, seed: int) -> tuple[Tensor, Tensor]:
    """``n`` points of the mixture and the index of the component each came from."""
    g = torch.Generator().manual_seed(seed)
    comp = torch.multinomial(gmm.weights, n, replacement=True, generator=g)
    z = torch.randn(n, gmm.dim, generator=g, dtype=torch.float64)
    return gmm.means[comp] + gmm.stds[comp] * z, comp


def gmm_dataset(k: int = 8, dim: int = 2, n: int = 10_000, seed: int = 0, spread: float = 3.0,
                std: float = 0.2, n_test: int = 5000) -> DataBundle:
    """The embedded default: draws of ``GaussianMixture.random(k, dim, spread, std, seed)``;
    the component index is kept as a class label ``"label"`` usable as a condition."""
    if k < 1 or dim < 1 or n < 2 or n_test < 2:
        raise ValueError(f"gmm needs k >= 1, dim >= 1, n >= 2 and n_test >= 2 (the test points evaluation compares "
                         f"against), got k={k}, dim={dim}, n={n}, n_test={n_test}")
    gmm = GaussianMixture.random(k, dim, spread=spread, std=std, seed=seed)
    splits = {}
    for name, size, offset in (("train", n, 0), ("val", max(n // 10, 2), 1), ("test", n_test, 2)):
        x, c = draw_gmm(gmm, size, seed * 1000 + 17 + offset)
        splits[name] = TensorStates(x=x.float(), label=c)
    info = {"dataset": "gmm", "dim": dim, "n": n, "gmm": gmm.to_dict(), "num_classes": k,
            "conditions": {"label": {"kind": "class", "num_classes": k}},
            **_stats(splits["train"].tensors["x"])}
    return DataBundle(splits["train"], splits["val"], splits["test"], info)


def csv_dataset(path: str, label: str | None = None, columns: Sequence[str] | None = None,
                delimiter: str = ",", test_fraction: float = 0.0, seed: int = 0) -> DataBundle:
    """Users' own points: one row per point, numeric columns (a header row is optional).

    ``label`` names a column of class labels (any strings) kept as the condition ``"label"``;
    ``columns`` picks the coordinate columns (default: every column but the label).
    ``test_fraction`` > 0 holds out that fraction of the points (rounded, seeded permutation)
    as the test split evaluation compares against; with the default 0 every point trains and
    evaluation compares against the training points (with a warning that says so).
    """
    file = Path(path).expanduser().resolve()
    header, rows = read_table(file, delimiter)
    names = header or [f"x{i}" for i in range(len(rows[0][1]))]
    if label is not None and label not in names:
        raise ValueError(f"{file}: no label column {label!r}; columns: {', '.join(names)}")
    coords = list(columns) if columns is not None else [c for c in names if c != label]
    for c in coords:
        if c not in names:
            raise ValueError(f"{file}: no column {c!r}; columns: {', '.join(names)}")
    idx = [names.index(c) for c in coords]
    values, labels = [], []
    for line, row in rows:
        try:
            values.append([parse_number(row[i], file, line, float32=True) for i in idx])
        except ValueError as err:
            raise ValueError(f"{err} (expected numbers in columns {', '.join(coords)}, "
                             f"got {delimiter.join(row)!r})") from None
        if label is not None:
            labels.append(row[names.index(label)])
            if not labels[-1]:
                raise ValueError(f"{file}:{line}: no value in the label column {label!r}")
    x = torch.tensor(values, dtype=torch.float32)
    tensors: dict[str, Tensor] = {"x": x}
    info: dict[str, Any] = {"dataset": "csv", "path": str(file), "dim": len(coords), "n": len(x),
                            "columns": coords, **_stats(x)}
    if label is not None:
        classes = sorted(set(labels))
        tensors["label"] = torch.tensor([classes.index(v) for v in labels])
        info.update(num_classes=len(classes), classes=classes,
                    conditions={"label": {"kind": "class", "num_classes": len(classes)}})
    if not test_fraction:
        return DataBundle(TensorStates(**tensors), info=info)
    n_test = _test_size(file, len(x), test_fraction)
    perm = torch.from_numpy(np.random.default_rng(seed).permutation(len(x)))
    test, train = perm[:n_test], perm[n_test:]
    info = {**info, **_stats(x[train]), "n": len(train), "n_test": n_test, "test_fraction": test_fraction}
    return DataBundle(TensorStates(**{k: v[train] for k, v in tensors.items()}),
                      test=TensorStates(**{k: v[test] for k, v in tensors.items()}), info=info)


def _test_size(file: Path, n: int, test_fraction: float) -> int:
    """Points held out of ``n`` by ``test_fraction``; a ``ValueError`` naming the file, its size
    and the fraction when the test or the training split would be empty."""
    if not 0 <= test_fraction < 1:
        raise ValueError(f"{file}: test_fraction must lie in [0, 1), got {test_fraction}")
    n_test = round(test_fraction * n)
    if 0 < n_test < n:
        return n_test
    empty = "test" if n_test == 0 else "training"
    need = next(m for m in range(n + 1, n + 10**6) if 0 < round(test_fraction * m) < m)
    raise ValueError(f"{file}: {n} point(s) with test_fraction={test_fraction} leave the {empty} split empty; "
                     f"need at least {need} points (or set test_fraction: 0 to evaluate against the training points)")


def read_csv_rows(file: Path, delimiter: str = ",", what: str = "CSV file") -> tuple[list[tuple[int, list[str]]], bool]:
    """The non-blank rows of a CSV file with their (1-based) line numbers, cells stripped, and
    whether the file ends with a line end (a file cut off while it was written does not).

    Every problem is a ``ValueError`` naming the file (and the line): a missing or empty file,
    bytes that are not UTF-8 text, a quoted field running over several lines (an unclosed quote).
    Blank lines are skipped; a line of empty cells (``,,``) is a row (the callers refuse it)."""
    file = Path(file)
    if not file.is_file():
        raise FileNotFoundError(f"{file}: no such {what}")
    text = read_text(file)
    rows = [(line, [c.strip() for c in r]) for line, r in csv_rows(file, text, delimiter)]
    if not rows:
        raise ValueError(f"{file}: the file is empty" if not text.strip() else f"{file}: no rows, only blank lines")
    return rows, text.endswith(("\n", "\r"))


def read_table(file: Path, delimiter: str = ",", *, complete: bool = False
               ) -> tuple[list[str] | None, list[tuple[int, list[str]]]]:
    """Rows of a CSV file with their line numbers; the header (or None when the first row is
    numeric). Every row must have the header's number of fields. ``complete`` also requires the
    last line to end with a line end: a samples file cut off mid-row (a half-written number)
    is an error, not a shorter file."""
    file = Path(file)
    rows, ended = read_csv_rows(file, delimiter)
    if complete and not ended:
        raise ValueError(f"{file}:{rows[-1][0]}: the last line has no line end, so the file looks cut off while it "
                         "was written (a half-written row); regenerate it, or end the line if it is complete")
    header = None
    if not all(_is_number(c) for c in rows[0][1]):
        (hline, header), rows = rows[0], rows[1:]
        empty = [i + 1 for i, c in enumerate(header) if not c]
        if empty:
            raise ValueError(f"{file}:{hline}: the header has no name for column {empty[0]}: "
                             f"{delimiter.join(header)!r}")
        twice = sorted({c for c in header if header.count(c) > 1})
        if twice:
            raise ValueError(f"{file}:{hline}: the header names column {twice[0]!r} twice")
    if not rows:
        raise ValueError(f"{file}: a header but no data rows")
    width = len(header) if header else len(rows[0][1])
    for line, r in rows:
        if len(r) != width:
            raise ValueError(f"{file}:{line}: expected {width} fields, got {len(r)}: {delimiter.join(r)!r}")
    return header, rows


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


FLOAT32_MAX = float(np.finfo(np.float32).max)


def parse_number(cell: str, file: Path, line: int, *, finite: bool = True, float32: bool = False) -> float:
    """A number from a CSV cell; a ``ValueError`` naming file and line otherwise: for a cell
    that is no number, for NaN / infinity when ``finite``, and when ``float32`` (values that
    training or sampling holds in float32) for a finite value beyond float32's range, which
    would become infinity there."""
    try:
        value = float(cell)
    except ValueError:
        raise ValueError(f"{file}:{line}: not a number: {cell!r}") from None
    if finite and not math.isfinite(value):
        raise ValueError(f"{file}:{line}: not a finite number: {cell!r}")
    if float32 and math.isfinite(value) and abs(value) > FLOAT32_MAX:
        raise ValueError(f"{file}:{line}: {cell!r} is beyond float32's range (+-{FLOAT32_MAX:.4g}), in which the "
                         "points are held")
    return value


def write_points(points: np.ndarray, file: Path, columns: Sequence[str] | None = None) -> Path:
    """Write (N, D) points to a CSV file with a header, atomically (temp file + rename)."""
    points = np.asarray(points, dtype=np.float64).reshape(len(points), -1)
    columns = list(columns) if columns is not None else [f"x{i}" for i in range(points.shape[1])]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    w.writerows([[repr(float(v)) for v in row] for row in points])
    return atomic_write(file, buf.getvalue())


def read_points(file: Path) -> np.ndarray:
    """(N, D) float64 points from a CSV file written by :func:`write_points` (or any numeric CSV):
    samples that diverged (``nan``, ``inf``, which :func:`write_points` writes) read back as they
    are, for evaluation to count them."""
    _, rows = read_table(file, complete=True)
    return np.asarray([[parse_number(c, file, line, finite=False) for c in r] for line, r in rows], dtype=np.float64)


def read_observation(file: Path, dim: int) -> tuple[Tensor, Tensor]:
    """An observed point from a CSV file: one data row of ``dim`` cells (after an optional
    header), an empty cell leaving that coordinate free. Returns ``(values (dim,), mask (dim,))``
    for :class:`polydiff.guidance.Observation` (generate the free coordinates given the others)."""
    file = Path(file)
    rows, _ = read_csv_rows(file, what="observation file")
    if rows and not all(_is_number(c) or c == "" for c in rows[0][1]):
        rows = rows[1:]
    if len(rows) != 1:
        raise ValueError(f"{file}: expected one row of {dim} coordinates (empty cells are generated), "
                         f"got {len(rows)} rows")
    line, cells = rows[0]
    if len(cells) != dim:
        raise ValueError(f"{file}:{line}: expected {dim} cells, got {len(cells)}")
    numbers = [parse_number(c, file, line, float32=True) if c else 0.0 for c in cells]
    if all(c == "" for c in cells):
        raise ValueError(f"{file}:{line}: every cell is empty: nothing is observed")
    values = torch.tensor(numbers, dtype=torch.float32)
    return values, torch.tensor([c != "" for c in cells])


# -- metrics --------------------------------------------------------------------------------

def point_metrics(x: np.ndarray, ref: np.ndarray, gmm: dict[str, Any] | None = None) -> dict[str, float]:
    """Sliced W2, mean error (L2), relative covariance error (Frobenius), and, for a known
    mixture, the mean exact log-likelihood of the samples and of the reference points."""
    x, ref = np.asarray(x, np.float64), np.asarray(ref, np.float64)
    if x.ndim != 2 or ref.ndim != 2 or x.shape[1] != ref.shape[1]:
        raise ValueError(f"samples {x.shape} and reference {ref.shape} must both be (N, D) with the same D")
    if len(x) < 2:
        raise ValueError(f"need at least 2 samples to evaluate, got {len(x)}")
    bad = int((~np.isfinite(x)).any(1).sum())
    if bad:
        warnings.warn(f"{bad} of {len(x)} samples have non-finite coordinates (a diverged sampler?): the metrics "
                      "are NaN", stacklevel=2)
    cov_x, cov_r = np.atleast_2d(np.cov(x.T)), np.atleast_2d(np.cov(ref.T))
    out = {"n": float(len(x)), "sw2": sliced_wasserstein(x, ref),
           "mean_error": float(np.linalg.norm(x.mean(0) - ref.mean(0))),
           "cov_error": float(np.linalg.norm(cov_x - cov_r) / max(np.linalg.norm(cov_r), 1e-12))}
    if gmm is not None:
        mix = GaussianMixture(torch.tensor(gmm["weights"]), torch.tensor(gmm["means"]), torch.tensor(gmm["stds"]))
        out["loglik"] = float(mix.log_prob(torch.from_numpy(x)).mean())
        out["loglik_ref"] = float(mix.log_prob(torch.from_numpy(ref)).mean())
    return out
