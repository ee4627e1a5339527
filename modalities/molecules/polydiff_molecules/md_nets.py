"""Energy networks for energy-based diffusion models of molecular dynamics.

Each network is ``forward(state, t) -> (B,)``: one scalar energy ``E(x, t)`` per sample, in
units of kT, read from ``state["x"]``. Wrapped in :class:`polydiff.plugin.EnergyModel`, its
negative gradient is the score (fields with ``prediction="score"``); at ``t_min`` it is the
force over kT used for Langevin dynamics (:mod:`polydiff_molecules.md`). Activations are smooth
(SiLU, LayerNorm) because the forces are the gradient and training differentiates through it.

- :func:`mlp_energy` for points (B, D) (the 2-D systems);
- :func:`bead_energy` for a bead chain (B, n, 3) (the 5-bead alanine dipeptide) from
  SE(3)-invariant features, so that its forces are SE(3)-equivariant.

Both read from ``info`` (a plain dict; every key optional): ``dim`` (points' dimension, for the
MLP), ``n_beads`` or ``beads`` (for the bead network, default 5), ``data_std`` (the data's root
mean square about ``data_mean``, default 1) and ``data_mean`` (the MLP's data mean, default 0).
With a Gaussian process on ``fields["x"]`` time enters through the schedule's log-SNR
(:func:`polydiff.plugin.time_input`), inputs are scaled to unit variance with EDM's ``c_in`` and
the energy includes the Gaussian term ``|c_in (x - alpha mean)|^2 / 2`` (the exact energy of
``p_t`` for Gaussian data, so the network learns only the difference, and the energy grows at
large ``|x|`` as the noised density's does). Without fields, ``t`` itself is embedded and ``c_in
= 1 / data_std``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from polydiff.plugin import (
    FieldSpec,
    ResidualMLP,
    TimeEmbedding,
    at_least_float32,
    input_scale,
    shared_time,
    time_input,
)

__all__ = ["ENERGY_NETWORKS", "BeadEnergy", "MLPEnergy", "bead_energy", "energy_closure", "mlp_energy"]


class _TimeAndScale(nn.Module):
    """The time embedding and input scale shared by the energy networks."""

    def __init__(self, fields: Mapping[str, FieldSpec] | None, sigma_data: float, emb_dim: int) -> None:
        super().__init__()
        spec = (fields or {}).get("x")
        process = getattr(spec, "process", None)
        self.process = process if hasattr(process, "coefs") and hasattr(process, "schedule") else None
        self.sigma_data = float(sigma_data)
        self.time = TimeEmbedding(emb_dim)

    def forward(self, t: Tensor, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(emb (B, emb_dim), c_in (B,), alpha (B,))`` at times ``t`` for inputs ``x`` (B, ...),
        each with 1 for B when the batch shares one time (:func:`polydiff.plugin.shared_time`:
        sampling and dynamics), to be broadcast."""
        tt = shared_time(torch.as_tensor(t, device=x.device), x.shape[0])
        b = tt.shape[0]
        if self.process is None:
            one = torch.ones(b, dtype=x.dtype, device=x.device)
            return self.time(tt.to(x.dtype)), one / self.sigma_data, one
        tt = tt.to(torch.float64)
        c = self.process.coefs(tt[:, None])
        c_in = input_scale(c.alpha, c.sigma, self.sigma_data).reshape(b).to(x.dtype)
        return self.time(time_input(self.process.schedule, tt)).to(x.dtype), c_in, c.alpha.reshape(b).to(x.dtype)


def _check_cond(cond: Any) -> None:
    if cond is not None:
        raise ValueError("the MD energy networks are unconditional; got a condition")


class MLPEnergy(nn.Module):
    """``E(x, t) = |c_in (x - alpha mean)|^2 / 2 + MLP(c_in (x - alpha mean), emb(t))`` for
    points ``state["x"]`` (B, dim): a residual MLP with FiLM time conditioning
    (:class:`polydiff.plugin.ResidualMLP`) and a scalar head."""

    def __init__(self, dim: int, fields: Mapping[str, FieldSpec] | None = None, hidden: int = 128, layers: int = 3,
                 emb_dim: int = 64, sigma_data: float = 1.0, mean: Any = None, prior: bool = True) -> None:
        super().__init__()
        self.dim, self.prior = int(dim), prior
        self.embed = _TimeAndScale(fields, sigma_data, emb_dim)
        mean = torch.zeros(self.dim) if mean is None else torch.as_tensor(np.asarray(mean, dtype=np.float32))
        self.register_buffer("mean", mean.reshape(self.dim).float())
        self.mlp = ResidualMLP(self.dim, 1, hidden, layers, emb_dim)

    def forward(self, state: Mapping[str, Tensor], t: Tensor, cond: Any = None) -> Tensor:
        _check_cond(cond)
        x = state["x"]
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ValueError(f"mlp_energy expects points (B, {self.dim}), got {tuple(x.shape)}")
        emb, c_in, alpha = self.embed(t, x)
        h = c_in[:, None] * (x - alpha[:, None] * self.mean.to(x.dtype))
        e = self.mlp(h, emb).squeeze(-1)
        return e + 0.5 * (h * h).sum(-1) if self.prior else e


def _pairs(n: int) -> tuple[Tensor, Tensor]:
    i, j = torch.triu_indices(n, n, offset=1)
    return i, j


class BeadEnergy(nn.Module):
    """``E(x, t)`` of bead chains ``state["x"]`` (B, n, 3) from SE(3)-invariant features:

    - all ``n (n-1) / 2`` pairwise distances of the scaled coordinates ``c_in x``, each as
      itself and expanded in ``n_rbf`` Gaussian radial basis functions on [0, ``cutoff``]
      (scaled units: multiples of ``data_std``);
    - ``cos`` and ``sin`` of the dihedrals of consecutive bead quadruples (for the 5-bead
      alanine dipeptide: phi and psi), computed without a division by a vanishing norm
      so they stay smooth. The sine changes sign under a reflection: the energy is invariant
      to rotations and translations but **not** to reflections, as it must not be (a mirror
      image is the other enantiomer, with its own Ramachandran plot).

    plus the Gaussian term ``|c_in (x - centroid)|^2 / 2`` (invariant too). Forces ``-grad E``
    are therefore rotation-equivariant and sum to zero (no net force on the centroid); give the
    field a zero-centroid structure, as the energy cannot see the centroid.
    """

    def __init__(self, n_beads: int = 5, fields: Mapping[str, FieldSpec] | None = None, hidden: int = 128,
                 layers: int = 3, emb_dim: int = 64, sigma_data: float = 1.0, n_rbf: int = 16,
                 cutoff: float = 4.0, prior: bool = True) -> None:
        super().__init__()
        if n_beads < 2:
            raise ValueError(f"bead_energy needs at least 2 beads, got {n_beads}")
        self.n, self.prior = int(n_beads), prior
        self.embed = _TimeAndScale(fields, sigma_data, emb_dim)
        i, j = _pairs(self.n)
        self.register_buffer("pair_i", i, persistent=False)
        self.register_buffer("pair_j", j, persistent=False)
        self.register_buffer("centres", torch.linspace(0.0, float(cutoff), n_rbf), persistent=False)
        self.width = float(cutoff) / max(n_rbf - 1, 1)
        self.n_dihedrals = max(self.n - 3, 0)
        features = len(i) * (1 + n_rbf) + 2 * self.n_dihedrals
        self.mlp = ResidualMLP(features, 1, hidden, layers, emb_dim)

    def features(self, y: Tensor) -> Tensor:
        """The invariant features (B, F) of scaled coordinates ``y`` (B, n, 3)."""
        diff = y[:, self.pair_i] - y[:, self.pair_j]
        d = torch.sqrt((diff * diff).sum(-1) + 1e-12)
        rbf = torch.exp(-0.5 * ((d[..., None] - self.centres.to(y.dtype)) / self.width) ** 2)
        feats = [d, rbf.flatten(1)]
        if self.n_dihedrals:
            b = y[:, 1:] - y[:, :-1]  # bonds (B, n-1, 3)
            b1, b2, b3 = b[:, :-2], b[:, 1:-1], b[:, 2:]
            n1, n2 = torch.linalg.cross(b1, b2, dim=-1), torch.linalg.cross(b2, b3, dim=-1)
            s = torch.sqrt((b2 * b2).sum(-1) + 1e-12) * (b1 * n2).sum(-1)  # |b2| |n1| |n2| sin
            c = (n1 * n2).sum(-1)  # |n1| |n2| cos
            r = torch.sqrt(s * s + c * c + 1e-12)
            feats += [c / r, s / r]
        return torch.cat(feats, dim=-1)

    def forward(self, state: Mapping[str, Tensor], t: Tensor, cond: Any = None) -> Tensor:
        _check_cond(cond)
        x = state["x"]
        if x.dim() != 3 or x.shape[1:] != (self.n, 3):
            raise ValueError(f"bead_energy expects bead coordinates (B, {self.n}, 3), got {tuple(x.shape)}")
        emb, c_in, _ = self.embed(t, x)
        y = c_in[:, None, None] * (x - x.mean(dim=1, keepdim=True))
        # distances and torsions in at least float32 (their 1e-12 guards vanish in float16)
        feats = self.features(at_least_float32(y)).to(y.dtype)
        e = self.mlp(feats, emb).squeeze(-1)
        return e + 0.5 * (y * y).sum((1, 2)) if self.prior else e


def mlp_energy(info: Mapping[str, Any], fields: Mapping[str, FieldSpec] | None = None, hidden: int = 128,
               layers: int = 3, emb_dim: int = 64, prior: bool = True) -> MLPEnergy:
    """An :class:`MLPEnergy` for points of dimension ``info["dim"]`` (default 2)."""
    return MLPEnergy(int(info.get("dim", 2)), fields, hidden, layers, emb_dim,
                     sigma_data=float(info.get("data_std", 1.0)), mean=info.get("data_mean"), prior=prior)


def bead_energy(info: Mapping[str, Any], fields: Mapping[str, FieldSpec] | None = None, hidden: int = 128,
                layers: int = 3, emb_dim: int = 64, n_rbf: int = 16, cutoff: float = 4.0,
                prior: bool = True) -> BeadEnergy:
    """A :class:`BeadEnergy` for chains of ``info["n_beads"]`` (or ``info["beads"]``) beads
    (default 5: alanine dipeptide)."""
    return BeadEnergy(int(info.get("n_beads", info.get("beads", 5))), fields, hidden, layers, emb_dim,
                      sigma_data=float(info.get("data_std", 1.0)), n_rbf=n_rbf, cutoff=cutoff, prior=prior)


ENERGY_NETWORKS: dict[str, Callable[..., nn.Module]] = {"mlp": mlp_energy, "beads": bead_energy}
"""Energy network constructors ``(info, fields, **options) -> module`` by name."""


def energy_closure(net: Callable[..., Tensor], t: float, key: str = "x") -> Callable[[Tensor], Tensor]:
    """``x -> net({key: x}, t)`` with ``t`` broadcast to the batch: an energy network at a fixed
    time (``t_min`` for dynamics) as the energy function of :class:`polydiff_molecules.md.EnergyCalculator`
    and :func:`polydiff_molecules.md.langevin`. ``x`` is cast to the network's dtype."""
    params = [p for p in getattr(net, "parameters", lambda: [])()]
    dtype = params[0].dtype if params else None

    def energy(x: Tensor) -> Tensor:
        xx = x if dtype is None else x.to(dtype)
        return net({key: xx}, torch.full((1,), float(t), dtype=torch.float64, device=x.device).expand(x.shape[0]))

    return energy
