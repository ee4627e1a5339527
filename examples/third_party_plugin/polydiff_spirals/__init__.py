"""polydiff-spirals: a minimal third-party modality plugin.

Everything here comes from :mod:`polydiff.plugin`, the namespace first-party plugins use too:
a dataset factory returning a :class:`~polydiff.plugin.DataBundle`, a network factory, the
field specs, sampling shapes, conversion to native objects (numpy arrays), files written
atomically, a metric, a native observation reader and a plugin command
(``polydiff spirals stats FILE``). Recipes ship as package data in ``recipes/``.
"""

from __future__ import annotations

import argparse
import io
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from polydiff.plugin import (
    Command,
    DataBundle,
    FieldSpec,
    GaussianProcess,
    Modality,
    Observation,
    ResidualMLP,
    TimeEmbedding,
    atomic_write,
    time_input,
)


class Points(Dataset):
    """A tensor of points served as states ``{"xy": (2,)}``."""

    def __init__(self, xy: Tensor) -> None:
        self.xy = xy

    def __len__(self) -> int:
        return len(self.xy)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {"xy": self.xy[i]}


def spirals(n: int = 4000, noise: float = 0.05, turns: float = 1.5, seed: int = 0) -> DataBundle:
    """Two interleaved spiral arms (the project generates its data: nothing is downloaded)."""
    g = np.random.default_rng(seed)
    r = np.sqrt(g.uniform(0.05, 1.0, n))
    angle = 2 * math.pi * turns * r + math.pi * g.integers(0, 2, n)
    xy = np.stack([r * np.cos(angle), r * np.sin(angle)], 1) * 2 + noise * g.standard_normal((n, 2))
    xy = torch.as_tensor(xy, dtype=torch.float32)
    cut = int(0.8 * n)
    return DataBundle(Points(xy[:cut]), test=Points(xy[cut:]), info={"std": float(xy.std())})


class SpiralNet(nn.Module):
    """``forward(state, t) -> {"xy": prediction}``: an MLP on (x, y) with a log-SNR time embedding."""

    def __init__(self, schedule: Any, hidden: int = 128, depth: int = 3) -> None:
        super().__init__()
        self.schedule = schedule
        self.time = TimeEmbedding(64)
        self.mlp = ResidualMLP(2, 2, hidden, depth, 64)

    def forward(self, state: Mapping[str, Tensor], t: Tensor, cond: Any = None) -> dict[str, Tensor]:
        return {"xy": self.mlp(state["xy"], self.time(time_input(self.schedule, t)))}


class SpiralsModality(Modality):
    name = "spirals"
    description = "example third-party plugin: 2-D spiral point clouds"

    def datasets(self) -> dict[str, Callable[..., DataBundle]]:
        return {"spirals": spirals}

    def networks(self) -> dict[str, Callable[..., nn.Module]]:
        return {"mlp": lambda info, fields, **o: SpiralNet(fields["xy"].process.schedule, **o)}

    def fields(self, info: Mapping[str, Any], schedule: str = "linear", prediction: str = "velocity",
               **options: Any) -> dict[str, FieldSpec]:
        return {"xy": FieldSpec(GaussianProcess(schedule, **options), prediction=prediction)}

    def prior_state(self, n: int, info: Mapping[str, Any], generator: torch.Generator | None = None,
                    condition: Mapping[str, Any] | None = None) -> dict[str, Any]:
        if condition:
            raise ValueError("the spirals modality takes no condition")
        return {"xy": (n, 2)}

    def to_native(self, state: Mapping[str, Tensor], info: Mapping[str, Any]) -> np.ndarray:
        return state["xy"].detach().cpu().double().numpy()

    def from_native(self, objects: Sequence[Any], info: Mapping[str, Any]) -> dict[str, Tensor]:
        return {"xy": torch.as_tensor(np.asarray(objects), dtype=torch.float32)}

    def reference(self, data: DataBundle) -> np.ndarray:
        return data.test.xy.double().numpy()

    def write(self, objects: Sequence[Any], out_dir: Path) -> list[Path]:
        buf = io.StringIO()
        np.savetxt(buf, np.asarray(objects), delimiter=",", header="x,y", comments="")
        return [atomic_write(Path(out_dir) / "points.csv", buf.getvalue())]  # write, then rename: never a half file

    def read(self, path: Path) -> np.ndarray:
        path = Path(path)
        file = path / "points.csv" if path.is_dir() else path
        try:
            return np.loadtxt(file, delimiter=",", skiprows=1, ndmin=2)
        except (OSError, ValueError) as err:
            raise ValueError(f"{file}: not a points file with a header and two numeric columns ({err})") from None

    def observation(self, path: Path, info: Mapping[str, Any]) -> Observation:
        """``polydiff sample CKPT --observed x.csv``: a one-line CSV ``x,y`` with either value
        empty observes the other coordinate of every sample."""
        lines = Path(path).read_text().splitlines()
        if len(lines) < 2:
            raise ValueError(f"{path}: expected a header line and one line 'x,y' (either may be empty)")
        cells = [c.strip() for c in lines[1].split(",")]
        if len(cells) != 2:
            raise ValueError(f"{path}: line 2: expected two comma-separated cells, got {len(cells)}")
        try:
            values = torch.tensor([float(c) if c else 0.0 for c in cells])
        except ValueError as err:
            raise ValueError(f"{path}: line 2: {err}") from None
        return Observation({"xy": values}, {"xy": torch.tensor([bool(c) for c in cells])})

    def commands(self) -> dict[str, Command]:
        def configure(p: argparse.ArgumentParser) -> None:
            p.add_argument("file", type=Path, help="a points.csv file")

        def run(args: argparse.Namespace) -> int:
            pts = self.read(args.file)
            print(f"{len(pts)} points, mean radius {float(np.linalg.norm(pts, axis=1).mean()):.4f}")
            return 0

        return {"stats": Command("print the number of points and their mean radius", configure, run)}

    def evaluate(self, objects: Sequence[Any], reference: Sequence[Any], info: Mapping[str, Any]) -> dict[str, float]:
        return {"energy_distance": energy_distance(np.asarray(objects), np.asarray(reference))}


def energy_distance(x: np.ndarray, y: np.ndarray, max_points: int = 2000) -> float:
    """Székely's energy distance 2 E|X-Y| - E|X-X'| - E|Y-Y'| (0 iff the laws agree)."""
    x, y = x[:max_points], y[:max_points]

    def mean_dist(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.linalg.norm(a[:, None] - b[None], axis=-1).mean())

    return 2 * mean_dist(x, y) - mean_dist(x, x) - mean_dist(y, y)
