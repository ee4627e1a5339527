"""Toy rotations: mixtures of rotations on SO(3) with an exact denoiser for the geodesic flow.

The ``rotations`` dataset of the toy modality draws from a mixture of ``K`` rotations (centres
drawn with a seed, uneven weights), optionally blurred by IGSO(3) noise of concentration
``spread``; with ``spread = 0`` the components are point masses, and then
:class:`ExactRotationDenoiser` gives the exact clean prediction at every time of
``GeodesicFlow(SO3(), rate=r)`` with the Haar prior, so samplers, guidance and observations of
manifold fields are tested against exact targets without training. Also here: CSV files of
rotations (9 columns), the rotation network ``so3_mlp`` and the metrics that compare two sets
of rotations.

The exact denoiser. Under the flow, ``x_t = exp_{x0}(kappa log_{x0}(x1)) = x0 Exp(kappa Log r)``
with ``r = x0^T x1`` Haar-distributed (the Haar measure is invariant). Scaling the axis-angle
vector of ``r`` keeps its (uniform) axis and scales its angle: the relative rotation
``x0^T x_t`` has a uniform axis and the angle ``theta = kappa omega``, where ``omega`` has the Haar
angle density ``(1 - cos omega) / pi`` on ``[0, pi]``. Its angle density is therefore
``(1 - cos(theta / kappa)) / (pi kappa)`` on ``[0, kappa pi]``, and dividing by the Haar angle
density ``(1 - cos theta) / pi`` gives the density with respect to the Haar measure

    q_t(x_t | x0) = (1 - cos(theta / kappa)) / (kappa (1 - cos theta))
                  = sin^2(theta / (2 kappa)) / (kappa sin^2(theta / 2))
                  = sinc^2(theta / (2 kappa)) / (kappa^3 sinc^2(theta / 2))     (sinc u = sin u / u)

for ``theta < kappa pi`` and 0 beyond (``-> 1 / kappa^3`` as ``theta -> 0``; 1 everywhere at
``kappa = 1``). The posterior of the components is ``p(k | x_t) ∝ w_k q_t(x_t | R_k)``.

The path through ``R_k`` has, at ``x_t``, the conditional velocity ``-kappa'(t) / kappa(t)
log_{x_t}(R_k)`` (body frame: ``log_{x_t}(R_k) = -kappa Log r``), a factor that depends on ``t``
only, so the marginal velocity is ``-kappa'/kappa sum_k p(k | x_t) log_{x_t}(R_k)``. The
sampler's geodesic step moves along ``log_{x_t}(x0_hat)`` with that same factor, hence the
prediction that reproduces the marginal velocity is
``x0_hat = exp_{x_t}(sum_k p(k | x_t) log_{x_t}(R_k))`` (a convex combination of vectors of
norm <= pi, so ``log_{x_t}(x0_hat)`` gives it back), not the nearest centre or a chordal mean.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..files import atomic_write, new_figure, save_figure
from ..metrics import sliced_wasserstein
from ..modality import DataBundle, TensorStates
from ..nn import ResidualMLP, TimeEmbedding
from ..processes.manifold import GeodesicFlow
from ..processes.so3 import SO3, exp_map, log_map, random_rotation, sample_igso3
from ..state import FieldSpec
from .data import parse_number, read_csv_rows

__all__ = ["COLUMNS", "SO3MLP", "ExactRotationDenoiser", "RotationMixture", "log_transition_density",
           "read_rotations", "rotation_flags", "rotation_metrics", "rotations_dataset", "so3_mlp_network",
           "write_rotations"]

COLUMNS = [f"r{i}{j}" for i in range(3) for j in range(3)]  # row-major matrix entries
ROTATION_TOL = 1e-5  # |R^T R - I| and |det R - 1| allowed in files


class RotationMixture:
    """``sum_k w_k delta_{R_k}``, each centre blurred by IGSO(3) noise of concentration ``spread``
    (``R = R_k E`` with ``E ~ IGSO(3)``; ``spread = 0``: point masses). Float64 internally."""

    def __init__(self, centres: Tensor | Sequence[Any], weights: Tensor | Sequence[float], spread: float = 0.0) -> None:
        self.centres = torch.as_tensor(centres, dtype=torch.float64).reshape(-1, 3, 3)
        w = torch.as_tensor(weights, dtype=torch.float64).reshape(-1)
        if len(w) != len(self.centres) or bool((w < 0).any()) or float(w.sum()) <= 0:
            raise ValueError(f"need one non-negative weight per centre ({len(self.centres)}), got {w.tolist()}")
        if spread < 0:
            raise ValueError(f"spread must be >= 0, got {spread}")
        self.weights, self.spread, self.k = w / w.sum(), float(spread), len(self.centres)

    @classmethod
    def random(cls, k: int = 4, spread: float = 0.0, seed: int = 0) -> RotationMixture:
        """A reproducible mixture: Haar-random centres, uneven weights in [0.5, 1.5] (normalised)."""
        g = torch.Generator().manual_seed(seed)
        centres = random_rotation((k,), generator=g, dtype=torch.float64)
        weights = 0.5 + torch.rand(k, generator=g, dtype=torch.float64)
        return cls(centres, weights, spread)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RotationMixture:
        """The inverse of :meth:`to_dict`."""
        return cls(d["centres"], d["weights"], float(d.get("spread", 0.0)))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON lists (stored in the dataset's ``info`` and in checkpoints)."""
        return {"centres": self.centres.tolist(), "weights": self.weights.tolist(), "spread": self.spread}

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """``n`` exact draws (n, 3, 3) and the index of the component each came from."""
        comp = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        R = self.centres[comp]
        if self.spread > 0:
            u = torch.rand(n, 3, generator=generator, dtype=torch.float64)
            R = R @ sample_igso3((n,), self.spread, u=u)
        return R, comp

    def nearest(self, R: Tensor) -> tuple[Tensor, Tensor]:
        """The nearest centre (N,) of each rotation (N, 3, 3) and its geodesic distance (N,)."""
        d = SO3().dist(self.centres[None], R.to(torch.float64)[:, None])
        dist, comp = d.min(-1)
        return comp, dist


def log_transition_density(theta: Tensor, kappa: Tensor) -> Tensor:
    """``log q_t(x_t | x0)`` with respect to the Haar measure for ``theta = angle(x0^T x_t)`` and the
    interpolation fraction ``kappa`` (broadcasting), ``-inf`` outside the support ``theta < kappa pi``.

    Evaluated as ``2 log sinc(theta / (2 kappa)) - 3 log kappa - 2 log sinc(theta / 2)`` (see the
    module docstring): no cancellation at ``theta -> 0``, and ``sinc(theta / 2) >= 2 / pi``.
    """
    k = kappa.clamp_min(1e-12)
    inside = theta < k * math.pi
    a = torch.where(inside, theta / (2 * k), torch.zeros_like(theta))
    lq = 2 * torch.log(torch.sinc(a / math.pi)) - 3 * torch.log(k) - 2 * torch.log(torch.sinc(theta / (2 * math.pi)))
    return torch.where(inside, lq, torch.full_like(lq, -math.inf))


class ExactRotationDenoiser(nn.Module):
    """The exact clean prediction of a point-mass rotation mixture under ``flow`` (a
    ``GeodesicFlow(SO3(), rate=r)`` with the Haar prior): a state-level 'network'
    ``model(state, t) -> {field: x0_hat}`` usable by :func:`polydiff.sample`.

    The field may hold one rotation per sample (B, 3, 3) or several independent ones
    (B, N, 3, 3), each drawn from the mixture. Points outside every component's support (a
    sampler's discretisation error can put them there) are assigned to the component whose
    support is nearest.
    """

    def __init__(self, centres: Tensor, weights: Tensor, flow: GeodesicFlow, field: str = "R") -> None:
        super().__init__()
        if not isinstance(flow.manifold, SO3):
            raise TypeError(f"the exact rotation denoiser needs a geodesic flow on SO3, got {flow!r}")
        self.centres = torch.as_tensor(centres, dtype=torch.float64).reshape(-1, 3, 3)
        w = torch.as_tensor(weights, dtype=torch.float64).reshape(-1)
        self.log_w = torch.log(w / w.sum())
        self.flow, self.field = flow, field
        self.calls = 0

    def _kappa(self, t: Tensor, x: Tensor) -> Tensor:
        """kappa(t) shaped to broadcast against the per-component angles (B, ..., K)."""
        tt = torch.as_tensor(t, dtype=torch.float64, device=x.device).reshape(-1)
        tt = tt.expand(x.shape[0]) if tt.numel() == 1 else tt
        return self.flow.kappa(tt).reshape(-1, *([1] * (x.dim() - 2)))

    def _logs(self, x: Tensor) -> Tensor:
        """``log_{x}(R_k)`` (..., K, 3) in float64."""
        xd = x.to(torch.float64)
        return log_map(xd.transpose(-1, -2).unsqueeze(-3) @ self.centres.to(x.device))

    def posterior(self, x: Tensor, t: Tensor) -> Tensor:
        """``p(k | x_t)`` (..., K) for rotations ``x`` (B, ..., 3, 3) at times ``t`` (scalar or (B,))."""
        return self._posterior(self._logs(x).norm(dim=-1), self._kappa(t, x))

    def _posterior(self, theta: Tensor, kappa: Tensor) -> Tensor:
        logits = self.log_w.to(theta.device) + log_transition_density(theta, kappa)
        outside = torch.isinf(logits).all(-1, keepdim=True)
        nearest = -1e8 * (theta / kappa.clamp_min(1e-12) - math.pi)  # the nearest support wins
        return torch.softmax(torch.where(outside, nearest, logits), dim=-1)

    def denoise(self, x: Tensor, t: Tensor) -> Tensor:
        """``x0_hat = exp_{x_t}(sum_k p(k | x_t) log_{x_t}(R_k))`` in ``x``'s dtype."""
        v = self._logs(x)
        p = self._posterior(v.norm(dim=-1), self._kappa(t, x))
        step = (p.unsqueeze(-1) * v).sum(-2)
        return (x.to(torch.float64) @ exp_map(step)).to(x.dtype)

    def forward(self, state: Mapping[str, Tensor], t: Tensor, cond: Any = None) -> dict[str, Tensor]:
        self.calls += 1
        return {self.field: self.denoise(state[self.field], t)}


# -- the dataset ----------------------------------------------------------------------------

def rotations_dataset(k: int = 4, n: int = 10_000, seed: int = 0, spread: float = 0.0, rate: float = 0.0,
                      n_test: int = 2000) -> DataBundle:
    """Draws of ``RotationMixture.random(k, spread, seed)`` as states ``{"R": (3, 3)}``.

    ``rate`` is the default rate of the field's geodesic flow (``kappa(t)``, see
    :class:`~polydiff.processes.manifold.GeodesicFlow`); the mixture is stored in
    ``info["rotations"]`` (centres, weights, spread) for metrics and exact denoisers.
    """
    if k < 1 or n < 2 or n_test < 2:
        raise ValueError(f"rotations needs k >= 1, n >= 2 and n_test >= 2, got k={k}, n={n}, n_test={n_test}")
    if rate < 0:
        raise ValueError(f"rate must be >= 0, got {rate}")
    mix = RotationMixture.random(k, spread, seed)
    splits = {}
    for name, size, offset in (("train", n, 0), ("val", max(n // 10, 2), 1), ("test", n_test, 2)):
        R, _ = mix.sample(size, torch.Generator().manual_seed(seed * 1000 + 17 + offset))
        splits[name] = TensorStates(R=R.float())
    info = {"dataset": "rotations", "n": n, "rate": float(rate), "rotations": mix.to_dict()}
    return DataBundle(splits["train"], splits["val"], splits["test"], info)


def is_rotations(info: Mapping[str, Any]) -> bool:
    """Whether a dataset's ``info`` describes rotations data."""
    return info.get("dataset") == "rotations" or "rotations" in info


def rotation_fields(info: Mapping[str, Any], prediction: str = "x0", **options: Any) -> dict[str, FieldSpec]:
    """``{"R": FieldSpec(GeodesicFlow(SO3(), rate))}``: ``rate`` from ``options``, else the data's."""
    rate = float(options.pop("rate", info.get("rate", 0.0)))
    if options:
        raise ValueError(f"rotations data takes the process option rate only, got {', '.join(options)}")
    if prediction not in ("x0", "eps"):
        raise ValueError(f"a rotation field predicts the clean rotation (x0), got prediction={prediction!r}")
    return {"R": FieldSpec(GeodesicFlow(SO3(), rate=rate), prediction="x0")}


# -- the network ----------------------------------------------------------------------------

class SO3MLP(nn.Module):
    """Denoiser of rotations: ``forward(state, t) -> {"R": x0_hat}``.

    A residual MLP reads the 9 entries of ``x_t`` and a time embedding and outputs a body-frame
    tangent vector ``v``; the prediction ``x_t exp_map(v)`` is a rotation by construction.
    """

    def __init__(self, hidden: int = 128, depth: int = 3, emb_dim: int = 64, time_embedding: str = "sinusoidal",
                 field: str = "R") -> None:
        super().__init__()
        self.field = field
        self.time = TimeEmbedding(emb_dim, time_embedding)
        self.mlp = ResidualMLP(9, 3, hidden, depth, emb_dim)

    def forward(self, state: Mapping[str, Tensor], t: Tensor, cond: Any = None) -> dict[str, Tensor]:
        x = state[self.field]
        tt = t.reshape(-1).expand(x.shape[0]).float()
        v = self.mlp(x.reshape(x.shape[0], 9).float(), self.time(tt))
        return {self.field: x @ exp_map(v.to(x.dtype))}


def so3_mlp_network(info: Mapping[str, Any], fields: Mapping[str, FieldSpec], hidden: int = 128, depth: int = 3,
                    emb_dim: int = 64, time_embedding: str = "sinusoidal") -> nn.Module:
    """The rotation MLP (for the ``rotations`` dataset)."""
    f = fields.get("R")
    if f is None or f.kind != "manifold" or not isinstance(f.process.manifold, SO3):
        raise ValueError("so3_mlp generates the rotation field 'R' of the rotations dataset")
    return SO3MLP(hidden, depth, emb_dim, time_embedding)


# -- files ----------------------------------------------------------------------------------

def write_rotations(R: np.ndarray, file: Path) -> Path:
    """Write (N, 3, 3) rotations as a CSV of 9 row-major columns ``r00 .. r22``, atomically."""
    flat = np.asarray(R, dtype=np.float64).reshape(-1, 9)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS)
    w.writerows([[repr(float(v)) for v in row] for row in flat])
    return atomic_write(file, buf.getvalue())


def is_rotation_file(file: Path) -> bool:
    """Whether a CSV file's header names the rotation columns ``r00 .. r22`` (False for a file
    that cannot be read: the points reader then says what is wrong with it)."""
    try:
        with Path(file).open("rb") as f:
            first = f.readline(4096).decode("utf-8-sig")
    except (OSError, UnicodeDecodeError):
        return False
    return [c.strip().strip('"').lower() for c in first.split(",")] == COLUMNS


def read_rotations(file: Path, tol: float = ROTATION_TOL) -> np.ndarray:
    """(N, 3, 3) float64 rotations from a CSV file of 9 row-major columns (the header ``r00 .. r22``
    optional); a malformed row or one that is not a rotation (``|R^T R - I| > tol`` or
    ``det R < 0``) is an error naming the file and the line, and so is a last line without a
    line end (a samples file cut off while it was written)."""
    file = Path(file)
    rows, ended = read_csv_rows(file)
    if rows and [c.lower() for c in rows[0][1]] == COLUMNS:
        rows = rows[1:]
    if not rows:
        raise ValueError(f"{file}: no rotations (expected rows of 9 numbers, the row-major entries of a 3x3 matrix)")
    if not ended:
        raise ValueError(f"{file}:{rows[-1][0]}: the last line has no line end, so the file looks cut off while it "
                         "was written (a half-written row); regenerate it, or end the line if it is complete")
    out = []
    eye = np.eye(3)
    for line, r in rows:
        if len(r) != 9:
            raise ValueError(f"{file}:{line}: expected 9 fields (a row-major 3x3 rotation), got {len(r)}: "
                             f"{','.join(r)!r}")
        m = np.array([parse_number(c, file, line) for c in r], dtype=np.float64).reshape(3, 3)
        err = float(np.abs(m.T @ m - eye).max())
        det = float(np.linalg.det(m))
        if not (err <= tol and det > 0):
            raise ValueError(f"{file}:{line}: not a rotation matrix (max |R^T R - I| = {err:.3g}, det = {det:.6g}; "
                             f"tolerance {tol:g})")
        out.append(m)
    return np.stack(out)


# -- metrics --------------------------------------------------------------------------------

def rotation_metrics(x: np.ndarray, ref: np.ndarray, mixture: Mapping[str, Any] | None = None) -> dict[str, float]:
    """Sliced W2 between the 9-entry embeddings (a metric between distributions on SO(3):
    the embedding is injective), and for a known mixture the mean geodesic distance to the
    nearest centre (``dist_centre``, also for the reference: ``dist_centre_ref``) and the
    total-variation distance between nearest-centre frequencies and the weights (``tv_weights``)."""
    x, ref = np.asarray(x, np.float64), np.asarray(ref, np.float64)
    if x.ndim != 3 or x.shape[1:] != (3, 3) or ref.ndim != 3 or ref.shape[1:] != (3, 3):
        raise ValueError(f"samples {x.shape} and reference {ref.shape} must both be (N, 3, 3) rotations")
    if len(x) < 2:
        raise ValueError(f"need at least 2 samples to evaluate, got {len(x)}")
    out = {"n": float(len(x)), "sw2": sliced_wasserstein(x.reshape(-1, 9), ref.reshape(-1, 9))}
    if mixture is not None:
        mix = RotationMixture.from_dict(mixture)
        comp, dist = mix.nearest(torch.from_numpy(x))
        freq = torch.bincount(comp, minlength=mix.k).double() / len(x)
        out["dist_centre"] = float(dist.mean())
        out["dist_centre_ref"] = float(mix.nearest(torch.from_numpy(ref))[1].mean())
        out["tv_weights"] = float(0.5 * (freq - mix.weights).abs().sum())
    return out


def rotation_flags(x: np.ndarray, mixture: Mapping[str, Any]) -> dict[str, list[Any]]:
    """Per rotation: the nearest component ``component`` and its geodesic distance ``distance``."""
    comp, dist = RotationMixture.from_dict(mixture).nearest(torch.as_tensor(np.asarray(x, np.float64)))
    return {"component": comp.tolist(), "distance": dist.tolist()}


def plot_rotations(x: np.ndarray, path: Path, reference: np.ndarray | None = None) -> Path | None:
    """Two panels: the directions of the rotated x axes (first columns) in longitude / latitude,
    and a histogram of the rotation angles, over the reference in grey."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return None

    def lonlat(R: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        a = R[:, :, 0]
        return np.degrees(np.arctan2(a[:, 1], a[:, 0])), np.degrees(np.arcsin(np.clip(a[:, 2], -1, 1)))

    def angles(R: np.ndarray) -> np.ndarray:
        return np.degrees(np.arccos(np.clip((np.trace(R, axis1=1, axis2=2) - 1) / 2, -1, 1)))

    x = np.asarray(x, np.float64)
    fig = new_figure(figsize=(10, 4))
    ax, bx = fig.subplots(1, 2)
    if reference is not None:
        r = np.asarray(reference, np.float64)
        ax.scatter(*lonlat(r), s=2, c="0.7", label="data")
        bx.hist(angles(r), bins=60, range=(0, 180), density=True, color="0.7", label="data")
    ax.scatter(*lonlat(x), s=2, c="C0", label="samples")
    bx.hist(angles(x), bins=60, range=(0, 180), density=True, histtype="step", color="C0", label="samples")
    ax.set(xlabel="longitude of R e_x (deg)", ylabel="latitude (deg)", xlim=(-180, 180), ylim=(-90, 90))
    bx.set(xlabel="rotation angle (deg)", ylabel="density")
    ax.legend(loc="upper right", markerscale=4)
    bx.legend(loc="best")
    return save_figure(fig, path)
