"""A tiny variable-size plugin used by the core's tests (registered by monkeypatching the entry
points): 2-D point clouds of 3-6 points on circles, one Gaussian field with a zero (masked)
centre of mass. Its network deliberately ignores the structure (non-zero output on padding, a
constant offset), which the samplers must correct. Written against polydiff.plugin only."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from polydiff.plugin import (
    DataBundle,
    FieldSpec,
    GaussianProcess,
    Modality,
    TensorStates,
    ZeroCoM,
    atomic_write,
    object_sizes,
    size_histogram,
)

WIDTH = 6


def circles(n: int = 64, seed: int = 0) -> DataBundle:
    """``n`` clouds of 3..6 points on a circle of random radius, padded to 6, centred."""
    g = torch.Generator().manual_seed(seed)
    sizes = torch.randint(3, WIDTH + 1, (n,), generator=g)
    angle = torch.rand(n, WIDTH, generator=g) * 6.283
    radius = 0.5 + torch.rand(n, 1, generator=g)
    pos = torch.stack([angle.cos(), angle.sin()], -1) * radius[..., None]
    mask = torch.arange(WIDTH)[None] < sizes[:, None]
    pos = pos * mask[..., None]
    pos = (pos - pos.sum(1, keepdim=True) / sizes[:, None, None]) * mask[..., None]
    cut = n * 3 // 4
    info = {"dataset": "circles", "size_hist": size_histogram(sizes[:cut].tolist())}
    return DataBundle(TensorStates(pos=pos[:cut], mask=mask[:cut]), test=TensorStates(pos=pos[cut:], mask=mask[cut:]),
                      info=info)


class OffsetNet(nn.Module):
    """Per-point MLP plus a constant offset: it ignores padding and the centre of mass."""

    def __init__(self, hidden: int = 16, out: int = 2) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, hidden), nn.SiLU(), nn.Linear(hidden, out))
        self.offset = nn.Parameter(torch.full((out,), 0.5))

    def forward(self, state: Mapping[str, Tensor], t: Tensor, cond: Any = None) -> dict[str, Tensor]:
        x = state["pos"].to(self.offset.dtype)
        tt = t.to(x.dtype).reshape(-1, 1, 1).expand(*x.shape[:2], 1)
        return {"pos": self.net(torch.cat([x, tt], -1)) + self.offset}


class CloudsModality(Modality):
    """2-D point clouds of variable size; samples are padded to the largest size drawn."""

    name = "clouds"
    description = "test plugin: variable-size 2-D point clouds"

    def datasets(self) -> dict[str, Callable[..., DataBundle]]:
        return {"circles": circles}

    def networks(self) -> dict[str, Callable[..., nn.Module]]:
        return {"offset": lambda info, fields, **options: OffsetNet(**options)}

    def fields(self, info: Mapping[str, Any], prediction: str = "x0") -> dict[str, FieldSpec]:
        return {"pos": FieldSpec(GaussianProcess("vp_linear"), ZeroCoM("mask"), prediction)}

    def prior_state(self, n: int, info: Mapping[str, Any], generator: torch.Generator | None = None,
                    condition: Mapping[str, Any] | None = None) -> dict[str, Any]:
        sizes = object_sizes(n, info, generator, (condition or {}).get("points"), name="points", minimum=3)
        width = int(sizes.max())
        return {"pos": (n, width, 2), "mask": torch.arange(width)[None] < sizes[:, None]}

    def to_native(self, state: Mapping[str, Tensor], info: Mapping[str, Any]) -> list[list[list[float]]]:
        return [p[m].tolist() for p, m in zip(state["pos"].double(), state["mask"].bool(), strict=True)]

    def write(self, objects: Sequence[Any], out_dir: Path) -> list[Path]:
        text = "".join(" ".join(f"{x:.6f},{y:.6f}" for x, y in cloud) + "\n" for cloud in objects)
        return [atomic_write(Path(out_dir) / "clouds.txt", text)]

    def read(self, path: Path) -> list[list[list[float]]]:
        files = sorted(Path(path).glob("*.txt")) if Path(path).is_dir() else [Path(path)]
        out = []
        for f in files:
            for i, line in enumerate(f.read_bytes().decode("utf-8", "replace").splitlines(), 1):
                try:
                    out.append([[float(v) for v in pair.split(",", 1)] for pair in line.split()])
                except ValueError:
                    raise ValueError(f"{f.name}: line {i}: expected x,y pairs, got {line[:40]!r}") from None
                if any(len(p) != 2 for p in out[-1]):
                    raise ValueError(f"{f.name}: line {i}: expected x,y pairs")
        return out

    def evaluate(self, objects: Sequence[Any], reference: Sequence[Any], info: Mapping[str, Any]) -> dict[str, float]:
        mean = [torch.tensor(c).mean(0).norm().item() for c in objects]
        return {"points": sum(map(len, objects)) / len(objects), "centre_offset": max(mean)}
