"""Periodic geometry and networks of the "periodic" crystal representation.

A crystal is a lattice (a, b, c in Angstrom, alpha, beta, gamma in degrees) and fractional coordinates on the
3-torus [0, 1)^3. This module holds:

- the geometry: :func:`lattice_matrix`, :func:`denormalise`, :func:`frac_to_cart` and :func:`min_image`, the
  minimum-image displacement of any cell, however skewed (reduced basis, 27 images, then a certified wider search
  where the 27 images cannot be shown to suffice);
- :class:`PeriodicNet`, the denoiser of the joint torus / lattice / element state (CSPNet-style message passing
  over all atom pairs of a crystal, with Fourier features of fractional differences);
- :class:`CrystalRegressor` with :func:`structures_to_batch`, :func:`train_regressor` and :func:`predict`, an
  invariant property predictor on clean crystals, and :func:`freeze_early` for transfer learning.

Both networks are invariant to permutations of the atoms (their per-atom outputs permute), to global translations
of the fractional coordinates and to integer shifts of single atoms; padded atoms never influence present ones.
They are not invariant to a change of lattice basis (like CSPNet, they read lattice parameters and fractional
coordinates in the given basis): the data must fix the basis. The CDVAE loader and the files dataset do, by Niggli
reduction (:func:`~polydiff_crystals.data.cdvae_canonical`; files: ``niggli=false`` keeps the cells as given); the
default set is used in its prototypes' own cells.
"""

from __future__ import annotations

import itertools
import math
import sys
import time
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from polydiff.plugin import ConditionEmbedding, TimeEmbedding, local_seed

__all__ = [
    "CrystalRegressor",
    "PeriodicNet",
    "denormalise",
    "frac_to_cart",
    "freeze_early",
    "lattice_matrix",
    "min_image",
    "predict",
    "structures_to_batch",
    "train_regressor",
]

OUTPUTS = ("frac", "lattice", "types")
MIN_ANGLE, MAX_ANGLE = 10.0, 170.0  # degrees: denormalised angles are clamped here
LOG_LENGTH_RANGE = (-3.0, 8.0)  # log Angstrom: denormalised lengths stay within [0.05, 3000] A
MAX_IMAGE_RANGE = 12  # the certified search gives up (ValueError) beyond shifts of +-12 cells
_IMAGES = torch.tensor(list(itertools.product((-1, 0, 1), repeat=3)), dtype=torch.float64)  # (27, 3)


# ---------------------------------------------------------------------------------------------
# geometry
# ---------------------------------------------------------------------------------------------
def lattice_matrix(params: Tensor) -> Tensor:
    """Lattice parameters (..., 6) = (a, b, c [A], alpha, beta, gamma [degrees]) -> row-vector lattice matrices
    (..., 3, 3) (rows a, b, c; Cartesian = frac @ L), with a along x and b in the xy plane; differentiable.

    Inconsistent angles (no real cell, e.g. alpha + beta + gamma > 360) give a flat but finite cell: the squared
    height of c over the ab plane is clamped to a small positive value.
    """
    a, b, c = params[..., 0], params[..., 1], params[..., 2]
    al, be, ga = (torch.deg2rad(params[..., k]) for k in (3, 4, 5))
    ca, cb, cg, sg = torch.cos(al), torch.cos(be), torch.cos(ga), torch.sin(ga)
    cy = (ca - cb * cg) / sg
    cz = torch.sqrt((1 - cb**2 - cy**2).clamp_min(1e-8))
    zero = torch.zeros_like(a)
    rows = [torch.stack([a, zero, zero], -1), torch.stack([b * cg, b * sg, zero], -1),
            torch.stack([c * cb, c * cy, c * cz], -1)]
    return torch.stack(rows, -2)


def denormalise(z: Tensor, info: Mapping[str, Any], min_angle: float = MIN_ANGLE,
                max_angle: float = MAX_ANGLE) -> Tensor:
    """Normalised lattice vectors z (..., 6) -> raw parameters (a, b, c, alpha, beta, gamma) via
    ``p = z * info["lattice_std"] + info["lattice_mean"]``, ``(a, b, c) = exp(p[:3])``; log-lengths are clamped
    to [-3, 8] and angles to [min_angle, max_angle] degrees, so noisy states still give a finite cell."""
    mean, std = _lattice_stats(info, z)
    p = z * std + mean
    lengths = torch.exp(p[..., :3].clamp(*LOG_LENGTH_RANGE))
    return torch.cat([lengths, p[..., 3:].clamp(min_angle, max_angle)], -1)


def frac_to_cart(frac: Tensor, lattice: Tensor) -> Tensor:
    """Fractional coordinates (B, N, 3) and lattice matrices (B, 3, 3) -> Cartesian coordinates (B, N, 3)."""
    return frac @ lattice


def _lattice_stats(info: Mapping[str, Any], like: Tensor) -> tuple[Tensor, Tensor]:
    for key in ("lattice_mean", "lattice_std"):
        if key not in info or len(info[key]) != 6:
            raise ValueError(f"info[{key!r}] must be a list of 6 numbers (log a, log b, log c, alpha, beta, gamma); "
                             f"got {info.get(key)!r}")
    mean = torch.as_tensor(info["lattice_mean"], dtype=like.dtype, device=like.device)
    std = torch.as_tensor(info["lattice_std"], dtype=like.dtype, device=like.device)
    return mean, std


def _as_matrix(lattice: Tensor) -> Tensor:
    if lattice.shape[-1] == 6:
        return lattice_matrix(lattice)
    if lattice.shape[-2:] != (3, 3):
        raise ValueError(f"lattice must be (..., 3, 3) matrices or (..., 6) parameters, got {tuple(lattice.shape)}")
    return lattice


def _reduce(lat: Tensor, sweeps: int) -> tuple[Tensor, Tensor]:
    """Pairwise (Lagrange-style) size reduction of bases (M, 3, 3) (rows), vectorised: ``sweeps`` passes of
    ``b_i -= round(<b_i, b_j> / <b_j, b_j>) b_j`` over all i != j. Returns the reduced bases and the integer
    unimodular U with ``reduced = U @ lat``. It shortens skewed bases (beta = 170 deg in one step); a basis it
    cannot fully reduce is caught by :func:`min_image`'s certificate."""
    red = lat.clone()
    u = torch.eye(3, dtype=lat.dtype, device=lat.device).expand_as(lat).clone()
    for _ in range(sweeps):
        for i in range(3):
            for j in range(3):
                if i == j:
                    continue
                q = torch.round((red[:, i] * red[:, j]).sum(-1) / (red[:, j] * red[:, j]).sum(-1).clamp_min(1e-300))
                red[:, i] -= q[:, None] * red[:, j]
                u[:, i] -= q[:, None] * u[:, j]
    return red, u


def _image_shift(diff: Tensor, lat: Tensor, certify: bool = True, reduce: bool = True, sweeps: int = 6) -> Tensor:
    """The integer vector k (same shape as ``diff`` (..., 3), float64) such that ``diff + k`` is the fractional
    minimum-image displacement in lattice ``lat`` (..., 3, 3), whose leading dimensions are the leading ones of
    ``diff`` (extra trailing batch dimensions of ``diff`` are broadcast). Not differentiable (a choice of image).

    1. reduce the basis (:func:`_reduce`; ``reduce=False`` skips it, for tests of the certificate);
    2. wrap the difference, in the reduced basis, to [-0.5, 0.5) and take the best of the 27 neighbouring images;
    3. with ``certify``: a shorter image differs from the wrapped one by at most ``r |g_k|`` cells along axis k
       (r the best distance so far, g_k the reciprocal vectors); where that bound allows shifts beyond +-1, search
       all shifts it allows (at most +-12 cells; beyond that the cell is degenerate and a ValueError is raised).
       Without ``certify`` (no host synchronisation) the 27-image answer is returned as is: exact for all but
       pathological cells, and invariant to translations and integer shifts either way.
    """
    with torch.no_grad():
        lead = lat.shape[:-2]
        extra = diff.dim() - 1 - len(lead)
        if extra < 0:
            raise ValueError(f"min_image: differences {tuple(diff.shape)} have fewer batch dimensions than the "
                             f"lattice {tuple(lat.shape)}")
        flat = lat.detach().to(torch.float64).reshape(-1, 3, 3)
        red, u = _reduce(flat, sweeps if reduce else 0)
        uinv = torch.round(torch.linalg.inv(u))
        shape = (*lead, *([1] * extra), 3, 3)
        red, u, uinv = red.reshape(shape), u.reshape(shape), uinv.reshape(shape)
        d = diff.detach().to(torch.float64)
        fr = (d[..., None, :] @ uinv)[..., 0, :]  # fractional coordinates in the reduced basis
        shift0 = torch.floor(fr + 0.5)
        w = fr - shift0  # in [-0.5, 0.5)
        images = _IMAGES.to(d.device)
        cart = (w[..., None, :] @ red)[..., 0, :]  # (..., 3)
        cand = cart[..., None, :] + images @ red  # (..., 27, 3)
        d2, idx = cand.square().sum(-1).min(-1)
        best = images[idx]
        if certify:
            best = _certify(w, best, d2, red, images)
        return ((best - shift0)[..., None, :] @ u)[..., 0, :]


def _certify(w: Tensor, best: Tensor, d2: Tensor, red: Tensor, images: Tensor) -> Tensor:
    """Replace the 27-image choice where a shorter image outside +-1 cells cannot be ruled out (see
    :func:`_image_shift`)."""
    inv, err = torch.linalg.inv_ex(red)
    g = inv.square().sum(-2).sqrt()  # (..., 3): |column k of red^-1|
    reach = d2.sqrt()[..., None] * g * (1 + 1e-9) + 1e-9
    if bool(err.any()) or not torch.isfinite(reach).all():
        raise ValueError("min_image: the lattice is degenerate (zero volume or non-finite)")
    lo, hi = torch.ceil(-w - reach), torch.floor(-w + reach)
    flagged = ((lo < -1) | (hi > 1)).any(-1)
    if not bool(flagged.any()):
        return best
    best = best.clone()
    red = red.expand(*flagged.shape, 3, 3)
    m = int(torch.maximum(-lo[flagged], hi[flagged]).max())
    if m > MAX_IMAGE_RANGE:
        raise ValueError(f"min_image: the lattice is too degenerate (images up to {m} cells away would have to be "
                         f"searched; at most {MAX_IMAGE_RANGE} are)")
    r = torch.arange(-m, m + 1, dtype=w.dtype, device=w.device)
    grid = torch.cartesian_prod(r, r, r)  # (G, 3)
    wf, rf = w[flagged], red[flagged]  # (F, 3), (F, 3, 3)
    chunk = max(1, 2_000_000 // len(grid))
    picks = []
    for s in range(0, len(wf), chunk):
        cand = (wf[s:s + chunk, None, :] + grid) @ rf[s:s + chunk]  # (f, G, 3)
        picks.append(grid[cand.square().sum(-1).argmin(-1)])
    best[flagged] = torch.cat(picks)
    return best


def min_image(frac_i_minus_j: Tensor, lattice: Tensor, *, certify: bool = True,
              reduce: bool = True) -> tuple[Tensor, Tensor]:
    """Minimum-image Cartesian displacement (..., 3) and distance (...) of fractional differences (..., 3) in
    lattices given as matrices (..., 3, 3) or parameters (..., 6) whose leading dimensions lead those of the
    differences (e.g. differences (B, N, N, 3) with lattices (B, 3, 3)).

    Exact for any cell, including very skewed ones, where the usual "wrap to [-0.5, 0.5) and round" convention
    is not (NaCl with beta = 170 deg: 4.637 A instead of the true 0.441 A): the basis is size-reduced, the
    difference wrapped in the reduced basis and the 27 neighbouring images compared; a certificate from the
    reciprocal vectors then widens the search wherever an image beyond the 27 could be closer (see
    :func:`_image_shift`; ``certify=False`` skips that, and the host synchronisation it needs). The displacement
    ``(d + k) @ L`` is differentiable in the differences and the lattice; the choice of image k is not.
    """
    lat = _as_matrix(lattice)
    k = _image_shift(frac_i_minus_j, lat, certify=certify, reduce=reduce)
    extra = frac_i_minus_j.dim() - 1 - (lat.dim() - 2)
    mat = lat.reshape(*lat.shape[:-2], *([1] * extra), 3, 3)
    vec = ((frac_i_minus_j + k.to(frac_i_minus_j.dtype))[..., None, :] @ mat.to(frac_i_minus_j.dtype))[..., 0, :]
    return vec, torch.linalg.vector_norm(vec, dim=-1)


# ---------------------------------------------------------------------------------------------
# shared network blocks
# ---------------------------------------------------------------------------------------------
def _gram_features(lat: Tensor, natoms: Tensor) -> Tensor:
    """Scale-free Gram entries ``L L^T / V^(2/3)`` (6) and ``log(V / n_atoms)`` (1): (B, 7)."""
    gram = lat @ lat.transpose(-1, -2)
    vol = torch.linalg.det(lat).abs().clamp_min(1e-6)
    scaled = gram / vol[:, None, None] ** (2 / 3)
    iu = [0, 1, 2, 0, 0, 1], [0, 1, 2, 1, 2, 2]
    return torch.cat([scaled[:, iu[0], iu[1]], torch.log(vol / natoms.clamp_min(1))[:, None]], -1)


class PairFeatures(nn.Module):
    """Pair geometry of padded crystals: for atoms i, j (both present, i != j) the minimum-image fractional
    displacement from i to j, the edge features ``[sin, cos](2 pi k d_ij)`` (k = 1..fourier, d_ij the wrapped
    fractional difference: invariant to global translations and integer shifts) and a Gaussian RBF of the
    minimum-image distance on [0, rbf_max] A, and the pair weights (1, or a cosine envelope within ``cutoff``)."""

    def __init__(self, fourier: int = 8, rbf: int = 32, rbf_max: float = 10.0, cutoff: float | None = None,
                 certify: bool = False) -> None:
        super().__init__()
        self.register_buffer("freqs", torch.arange(1, fourier + 1, dtype=torch.float32), persistent=False)
        self.register_buffer("centres", torch.linspace(0.0, rbf_max, rbf), persistent=False)
        self.width = rbf_max / max(rbf - 1, 1)
        self.cutoff, self.certify = cutoff, certify
        self.dim = 6 * fourier + rbf

    def forward(self, frac: Tensor, lat: Tensor, node: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(edge features (B, N, N, dim), fractional min-image displacements (B, N, N, 3), weights (B, N, N))."""
        diff = frac[:, None, :, :] - frac[:, :, None, :]  # [b, i, j] = f_j - f_i
        k = _image_shift(diff, lat, certify=self.certify).to(diff.dtype)
        delta = diff + k
        vec = (delta[..., None, :] @ lat[:, None, None])[..., 0, :]
        dist = torch.sqrt(vec.square().sum(-1) + 1e-12)
        wrapped = diff - torch.round(diff)  # exact integer shifts out before the (rounded) 2 pi multiplies
        arg = (2 * math.pi) * wrapped[..., None] * self.freqs.to(diff.dtype)  # (B, N, N, 3, F)
        four = torch.cat([torch.sin(arg), torch.cos(arg)], -1).flatten(-2)
        rbf = torch.exp(-0.5 * ((dist[..., None] - self.centres.to(diff.dtype)) / self.width) ** 2)
        n = node.shape[1]
        w = (node[:, :, None] & node[:, None, :] & ~torch.eye(n, dtype=torch.bool, device=node.device)).to(diff.dtype)
        if self.cutoff is not None:
            w = w * torch.where(dist < self.cutoff, 0.5 * (torch.cos(math.pi * dist / self.cutoff) + 1), 0.0)
        return torch.cat([four, rbf], -1), delta, w


class MessageLayer(nn.Module):
    """One residual message-passing update of atom features h (B, N, H):
    ``m_ij = MLP(A x_i + B x_j + E e_ij + G g)`` (x = LayerNorm(h), e the pair features, g the crystal's global
    features), ``h_i += MLP([x_i, sum_j w_ij m_ij / max(1, sum_j w_ij), g])``; padded atoms are zeroed."""

    def __init__(self, hidden: int, edge_dim: int, glob_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.src = nn.Linear(hidden, hidden)
        self.dst = nn.Linear(hidden, hidden, bias=False)
        self.edge = nn.Linear(edge_dim, hidden, bias=False)
        self.glob = nn.Linear(glob_dim, hidden, bias=False)
        self.msg = nn.Sequential(nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU())
        self.update = nn.Sequential(nn.Linear(2 * hidden + glob_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def forward(self, h: Tensor, edge: Tensor, w: Tensor, glob: Tensor, node: Tensor) -> Tensor:
        x = self.norm(h)
        pre = self.src(x)[:, :, None] + self.dst(x)[:, None, :] + self.edge(edge) + self.glob(glob)[:, None, None]
        m = self.msg(pre)
        agg = (m * w[..., None]).sum(2) / w.sum(2).clamp_min(1)[..., None]
        g = glob[:, None].expand(-1, h.shape[1], -1)
        return (h + self.update(torch.cat([x, agg, g], -1))) * node[..., None].to(h.dtype)


def _masked_mean(h: Tensor, node: Tensor) -> Tensor:
    m = node[..., None].to(h.dtype)
    return (h * m).sum(1) / m.sum(1).clamp_min(1)


def _zero(layer: nn.Linear) -> nn.Linear:
    nn.init.zeros_(layer.weight)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)
    return layer


# ---------------------------------------------------------------------------------------------
# the denoiser
# ---------------------------------------------------------------------------------------------
class PeriodicNet(nn.Module):
    """Denoiser of the periodic crystal state ``frac`` (B, N, 3) on the torus, normalised ``lattice`` (B, 6) and
    element ``types`` (B, N) (V + 1 tokens: the mask token V), with ``mask`` (B, N) and conditions
    (``info["conditions"]``, NaN / -1 = dropped) in the state.

    Atoms start as type embedding + time embedding (t in [0, 1]) + condition embedding and go through ``layers``
    :class:`MessageLayer` updates over all pairs of present atoms (or those within ``cutoff`` A); the global
    features are the normalised lattice, the scale-free Gram matrix of the (denormalised) lattice and the log
    volume per atom, with the time and condition embeddings. Outputs, for the keys of ``fields`` only:

    - ``frac``: the clean-coordinate estimate ``remainder(frac + d_i, 1)`` with
      ``d_i = sum_j w_ij s_ij delta_ij / max(1, sum_j w_ij)`` (delta_ij the min-image fractional displacement,
      s_ij a scalar of the pair), hence equivariant to global translations;
    - ``lattice``: the clean normalised lattice estimate ``z + head(mean_i h_i, g)``;
    - ``types``: logits over the V elements (zero at padded atoms).

    Output layers are zero-initialised: the network starts at the identity (frac and lattice estimates equal the
    input, uniform logits).
    """

    def __init__(self, info: Mapping[str, Any], fields: Mapping[str, Any], hidden: int = 128, layers: int = 4,
                 fourier: int = 8, cutoff: float | None = None, rbf: int = 32, rbf_max: float = 10.0) -> None:
        super().__init__()
        unknown = sorted(set(fields) - set(OUTPUTS))
        if unknown or not fields:
            raise ValueError(f"PeriodicNet predicts some of the fields {', '.join(OUTPUTS)}; got {sorted(fields)}")
        if not info.get("elements"):
            raise ValueError("PeriodicNet needs a non-empty info['elements']")
        _lattice_stats(info, torch.zeros(()))
        self.fields = [k for k in OUTPUTS if k in fields]
        self.info = {k: info[k] for k in ("elements", "lattice_mean", "lattice_std")}
        self.num_types = len(info["elements"])
        self.pairs = PairFeatures(fourier, rbf, rbf_max, cutoff, certify=False)
        self.embed = nn.Embedding(self.num_types + 1, hidden)
        self.time = TimeEmbedding(hidden)
        conds = info.get("conditions") or {}
        self.cond = ConditionEmbedding(conds, hidden) if conds else None
        glob = 6 + 7 + hidden
        self.layers = nn.ModuleList(MessageLayer(hidden, self.pairs.dim, glob) for _ in range(layers))
        self.out_norm = nn.LayerNorm(hidden)
        if "frac" in fields:
            self.frac_src = nn.Linear(hidden, hidden)
            self.frac_dst = nn.Linear(hidden, hidden, bias=False)
            self.frac_edge = nn.Linear(self.pairs.dim, hidden, bias=False)
            self.frac_out = _zero(nn.Linear(hidden, 1))
        if "lattice" in fields:
            self.lattice_head = nn.Sequential(nn.Linear(hidden + glob, hidden), nn.SiLU(), _zero(nn.Linear(hidden, 6)))
        if "types" in fields:
            self.types_head = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU(),
                                            _zero(nn.Linear(hidden, self.num_types)))

    def forward(self, state: Mapping[str, Tensor], t: Tensor | float, cond: Any = None) -> dict[str, Tensor]:
        missing = [k for k in ("frac", "lattice", "types") if k not in state]
        if missing:
            raise KeyError(f"PeriodicNet needs {missing} in the state; it has {sorted(state)}")
        dt = self.embed.weight.dtype
        frac_in = state["frac"]
        b, n = frac_in.shape[:2]
        node = state["mask"] != 0 if "mask" in state else torch.ones(b, n, dtype=torch.bool, device=frac_in.device)
        geo = torch.promote_types(dt, torch.float32)  # geometry (minimum images, volumes) in at least float32
        zero = torch.zeros((), dtype=geo, device=frac_in.device)
        frac = torch.where(node[..., None], frac_in.to(geo), zero)
        z = state["lattice"].to(dt)
        lat = lattice_matrix(denormalise(state["lattice"].to(geo), self.info))
        edge, delta, w = (v.to(dt) for v in self.pairs(frac, lat, node))
        tt = torch.as_tensor(t, device=frac.device).reshape(-1).expand(b)
        emb = self.time(tt.to(geo)).to(dt)  # the time at full precision: a bf16 time is coarse
        if self.cond is not None:
            emb = emb + self.cond(state, b).to(dt)
        glob = torch.cat([z, _gram_features(lat, node.sum(1).to(geo)).to(dt), emb], -1)
        types = torch.where(node, state["types"].long(), self.num_types).clamp(0, self.num_types)
        h = (self.embed(types) + emb[:, None]) * node[..., None].to(dt)
        for layer in self.layers:
            h = layer(h, edge, w, glob, node)
        x = self.out_norm(h)
        out: dict[str, Tensor] = {}
        if "frac" in self.fields:
            pre = self.frac_src(x)[:, :, None] + self.frac_dst(x)[:, None, :] + self.frac_edge(edge)
            s = self.frac_out(nn.functional.silu(pre))  # (B, N, N, 1)
            d = (s * w[..., None] * delta).sum(2) / w.sum(2).clamp_min(1)[..., None]
            out["frac"] = torch.remainder(frac_in + d.to(frac_in.dtype), 1.0)
        if "lattice" in self.fields:
            out["lattice"] = (z + self.lattice_head(torch.cat([_masked_mean(x, node), glob], -1))).to(
                state["lattice"].dtype)
        if "types" in self.fields:
            out["types"] = self.types_head(x) * node[..., None].to(dt)
        return out


# ---------------------------------------------------------------------------------------------
# property regressor
# ---------------------------------------------------------------------------------------------
class CrystalRegressor(nn.Module):
    """Invariant property predictor on clean crystals: type embedding, ``layers`` :class:`MessageLayer` updates
    (global features: log lengths, cosines of the angles, scale-free Gram matrix, log volume per atom), mean
    pooling over present atoms and an MLP head; ``forward`` returns the targets in their own units, through the
    standardisation buffers ``target_mean`` / ``target_std`` that :func:`train_regressor` sets."""

    def __init__(self, elements: Sequence[str], targets: Sequence[str], hidden: int = 128, layers: int = 4,
                 fourier: int = 8, cutoff: float | None = None, rbf: int = 32, rbf_max: float = 10.0) -> None:
        super().__init__()
        if not elements or not targets:
            raise ValueError(f"CrystalRegressor needs elements and targets; got {list(elements)}, {list(targets)}")
        self.elements, self.targets = list(elements), list(targets)
        self.config = {"hidden": hidden, "layers": layers, "fourier": fourier, "cutoff": cutoff, "rbf": rbf,
                       "rbf_max": rbf_max}
        self.pairs = PairFeatures(fourier, rbf, rbf_max, cutoff, certify=True)
        self.embed = nn.Embedding(len(self.elements), hidden)
        glob = 6 + 7
        self.layers = nn.ModuleList(MessageLayer(hidden, self.pairs.dim, glob) for _ in range(layers))
        self.head = nn.Sequential(nn.Linear(hidden + glob, hidden), nn.SiLU(),
                                  nn.Linear(hidden, len(self.targets)))
        self.register_buffer("target_mean", torch.zeros(len(self.targets)))
        self.register_buffer("target_std", torch.ones(len(self.targets)))

    def standardised(self, frac: Tensor, lattice_raw: Tensor, types: Tensor, mask: Tensor) -> Tensor:
        """The head's raw output (B, T), in standardised target units."""
        dt = self.embed.weight.dtype
        node = mask != 0
        frac = torch.where(node[..., None], frac.to(dt), torch.zeros((), dtype=dt, device=frac.device))
        lattice_raw = lattice_raw.to(dt)
        lat = lattice_matrix(lattice_raw)
        edge, _, w = self.pairs(frac, lat, node)
        glob = torch.cat([torch.log(lattice_raw[:, :3]), torch.cos(torch.deg2rad(lattice_raw[:, 3:])),
                          _gram_features(lat, node.sum(1).to(dt))], -1)
        h = self.embed(torch.where(node, types.long(), 0)) * node[..., None].to(dt)
        for layer in self.layers:
            h = layer(h, edge, w, glob, node)
        return self.head(torch.cat([_masked_mean(h, node), glob], -1))

    def forward(self, frac: Tensor, lattice_raw: Tensor, types: Tensor, mask: Tensor) -> Tensor:
        return self.standardised(frac, lattice_raw, types, mask) * self.target_std + self.target_mean


def _name(s: Any, i: int) -> str:
    return str(getattr(s, "properties", {}).get("name") or f"structure #{i}")


def structures_to_batch(structures: Sequence[Any], elements: Sequence[str]) -> dict[str, Tensor]:
    """pymatgen Structures -> padded tensors ``frac`` (B, N, 3) in [0, 1), ``lattice_raw`` (B, 6) (a, b, c,
    alpha, beta, gamma), ``types`` (B, N) indices into ``elements`` and ``mask`` (B, N). A disordered site or an
    element outside ``elements`` raises a ValueError naming the structure (``properties["name"]``)."""
    index = {e: k for k, e in enumerate(elements)}
    if not structures:
        raise ValueError("structures_to_batch: no structures")
    n = max(len(s) for s in structures)
    b = len(structures)
    frac, types, mask = np.zeros((b, n, 3)), np.zeros((b, n), dtype=np.int64), np.zeros((b, n))
    lattice = np.zeros((b, 6))
    for i, s in enumerate(structures):
        if not s.is_ordered:
            raise ValueError(f"{_name(s, i)}: disordered sites are not supported")
        symbols = [site.specie.symbol for site in s]
        bad = sorted(set(symbols) - set(index))
        if bad:
            raise ValueError(f"{_name(s, i)}: elements {bad} are not in the vocabulary {list(elements)}")
        m = len(s)
        frac[i, :m] = np.mod(s.frac_coords, 1.0)
        types[i, :m] = [index[e] for e in symbols]
        mask[i, :m] = 1.0
        lattice[i] = s.lattice.parameters
    frac[frac >= 1.0] = 0.0  # np.mod of a tiny negative number can round to 1.0
    dt = torch.get_default_dtype()
    return {"frac": torch.tensor(frac, dtype=dt), "lattice_raw": torch.tensor(lattice, dtype=dt),
            "types": torch.tensor(types), "mask": torch.tensor(mask, dtype=dt)}


def _target_values(structures: Sequence[Any], targets: Sequence[str] | Mapping[str, Sequence[float]]
                   ) -> tuple[list[str], np.ndarray]:
    if isinstance(targets, Mapping):
        names = list(targets)
        y = np.stack([np.asarray(targets[k], dtype=np.float64) for k in names], 1)
        if y.shape[0] != len(structures):
            raise ValueError(f"targets have {y.shape[0]} values, but there are {len(structures)} structures")
        return names, y
    names = list(targets)
    y = np.zeros((len(structures), len(names)))
    for i, s in enumerate(structures):
        props = getattr(s, "properties", {}) or {}
        for k, name in enumerate(names):
            if name not in props:
                raise ValueError(f"{_name(s, i)}: no property {name!r} (it has {sorted(props)})")
            v = props[name]
            y[i, k] = np.nan if v is None else float(v)
    return names, y


def _keep_eval(module: nn.Module, args: Any) -> None:
    """A forward pre-hook keeping a frozen normalisation layer in eval mode."""
    module.eval()


def freeze_early(module: nn.Module, fraction: float) -> list[str]:
    """Freeze, for transfer learning, the embeddings (every ``nn.Embedding``) and the first
    ``floor(fraction * len(module.layers))`` entries of ``module.layers`` (an nn.ModuleList): their parameters
    stop requiring gradients, and their BatchNorm layers are kept in eval mode (running statistics frozen, also
    after a later ``module.train()``; LayerNorms hold no statistics). ``fraction = 0`` freezes nothing.
    Returns the names of the frozen parameters."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"freeze fraction must be in [0, 1], got {fraction}")
    layers = getattr(module, "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise TypeError(f"freeze_early needs a module with an nn.ModuleList `layers`; {type(module).__name__} has none")
    if fraction == 0.0:
        return []
    count = math.floor(fraction * len(layers) + 1e-9)
    parts: list[nn.Module] = [m for m in module.modules() if isinstance(m, nn.Embedding)]
    parts += list(layers[:count])
    frozen_ids: set[int] = set()
    for part in parts:
        for p in part.parameters():
            p.requires_grad_(False)
            frozen_ids.add(id(p))
        for m in part.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
                m.register_forward_pre_hook(_keep_eval)
    return [name for name, p in module.named_parameters() if id(p) in frozen_ids]


def _load_init(model: CrystalRegressor, init: Mapping[str, Tensor]) -> list[str]:
    """Load a pretrained state dict but the target standardisation, skipping (and returning) entries whose shapes
    differ (a head for a different number of targets)."""
    own = model.state_dict()
    keep, skipped = {}, []
    for k, v in init.items():
        if k in ("target_mean", "target_std"):
            continue
        if k not in own:
            raise ValueError(f"init: unexpected entry {k!r} (a different architecture?)")
        if own[k].shape != v.shape:
            if k.startswith("head."):
                skipped.append(k)
                continue
            raise ValueError(f"init: {k!r} has shape {tuple(v.shape)}, the model {tuple(own[k].shape)} "
                             "(different elements or sizes?)")
        keep[k] = v
    missing = [k for k in own if k not in keep and k not in skipped and k not in ("target_mean", "target_std")]
    if missing:
        raise ValueError(f"init lacks {missing}")
    model.load_state_dict(keep, strict=False)
    return skipped


def train_regressor(structures: Sequence[Any], targets: Sequence[str] | Mapping[str, Sequence[float]],
                    elements: Sequence[str], *, epochs: int = 100, lr: float = 1e-3, batch_size: int = 32,
                    seed: int = 0, val_fraction: float = 0.1, init: Mapping[str, Tensor] | None = None,
                    freeze: float = 0.0, progress: bool = True, weight_decay: float = 0.0,
                    model_options: Mapping[str, Any] | None = None) -> tuple[CrystalRegressor, dict[str, Any]]:
    """Train a :class:`CrystalRegressor` on pymatgen Structures.

    ``targets``: property names read from each structure's ``properties`` (a missing name is a ValueError naming
    the structure), or a mapping name -> values aligned with ``structures``. NaN values are left out of the loss
    (their count is warned about and returned). Targets are standardised with the training split's mean and std,
    stored in the model. A random ``val_fraction`` of the structures (seeded) is held out; the weights of the
    epoch with the lowest validation MAE are kept. ``init``: a state dict to start from (its standardisation is
    replaced; a head of another shape is re-initialised); ``freeze``: the fraction of early layers to freeze with
    :func:`freeze_early` (pretrain on formation energy, fine-tune on band gap). ``model_options``: keyword
    arguments of :class:`CrystalRegressor` (hidden, layers, ...).

    Returns the model (eval mode) and a history: ``train_loss`` and ``val_mae`` (per epoch; val MAE per target in
    target units), ``baseline_val_mae`` (predicting the training mean), ``best_epoch``, ``n_train``, ``n_val``,
    ``n_missing`` (NaN target values), ``frozen`` (parameter names), ``skipped_init`` (head entries not loaded) and
    ``train_idx`` / ``val_idx`` (the indices into ``structures`` of the two splits).
    """
    if epochs < 1 or batch_size < 1 or not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"train_regressor: need epochs >= 1, batch_size >= 1, 0 <= val_fraction < 1; got {epochs}, "
                         f"{batch_size}, {val_fraction}")
    names, y_np = _target_values(structures, targets)
    n_missing = int(np.isnan(y_np).sum())
    if n_missing:
        warnings.warn(f"train_regressor: {n_missing} target values are NaN or None and are left out of the loss",
                      stacklevel=2)
    batch = structures_to_batch(structures, elements)
    gen = torch.Generator().manual_seed(seed)
    n = len(structures)
    perm = torch.randperm(n, generator=gen)
    n_val = min(n - 1, round(val_fraction * n)) if val_fraction > 0 else 0
    val_idx, train_idx = perm[:n_val], perm[n_val:]
    y = torch.tensor(y_np, dtype=torch.get_default_dtype())
    y_train = y[train_idx]
    if torch.isnan(y_train).all(0).any():
        raise ValueError(f"train_regressor: some target has no value in the training split ({names})")
    mean = torch.nanmean(y_train, 0)
    std = torch.sqrt(torch.nanmean((y_train - mean) ** 2, 0))
    std = torch.where(std > 1e-8, std, torch.ones_like(std))
    with local_seed(seed):
        model = CrystalRegressor(elements, names, **dict(model_options or {}))
    skipped = _load_init(model, init) if init is not None else []
    model.target_mean.copy_(mean)
    model.target_std.copy_(std)
    frozen = freeze_early(model, freeze)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=weight_decay)

    def rows(idx: Tensor) -> dict[str, Tensor]:
        part = {k: v[idx] for k, v in batch.items()}
        m = int(part["mask"].sum(1).max())  # trim the padding to this batch's largest crystal
        return {k: (v[:, :m] if k != "lattice_raw" else v) for k, v in part.items()}

    def val_mae() -> list[float]:
        if n_val == 0:
            return []
        model.eval()
        with torch.no_grad():
            pred = torch.cat([model(**rows(val_idx[s:s + 256])) for s in range(0, n_val, 256)])
        err = (pred - y[val_idx]).abs()
        return [float(torch.nanmean(err[:, k])) for k in range(len(names))]

    base = [float(torch.nanmean((mean[k] - y[val_idx, k]).abs())) for k in range(len(names))] if n_val else []
    history: dict[str, Any] = {"targets": names, "train_loss": [], "val_mae": [], "baseline_val_mae": base,
                               "best_epoch": epochs - 1, "n_train": len(train_idx), "n_val": n_val,
                               "n_missing": n_missing, "frozen": frozen, "skipped_init": skipped,
                               "train_idx": train_idx.tolist(), "val_idx": val_idx.tolist()}
    best, best_state = math.inf, None
    start = time.monotonic()
    for epoch in range(epochs):
        model.train()
        order = train_idx[torch.randperm(len(train_idx), generator=gen)]
        total, count = 0.0, 0
        for s in range(0, len(order), batch_size):
            idx = order[s:s + batch_size]
            target = (y[idx] - mean) / std
            ok = ~torch.isnan(target)
            if not ok.any():
                continue
            out = model.standardised(**rows(idx))
            loss = (out - torch.nan_to_num(target)).square()[ok].mean()
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            opt.step()
            total += float(loss.detach()) * len(idx)
            count += len(idx)
        history["train_loss"].append(total / max(count, 1))
        mae = val_mae()
        history["val_mae"].append(mae)
        if mae:
            score = float(np.nanmean(np.asarray(mae) / std.numpy()))
            if score < best:
                best, history["best_epoch"] = score, epoch
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if progress and (epoch == epochs - 1 or epoch % max(1, epochs // 10) == 0):
            shown = ", ".join(f"{k} {v:.4g}" for k, v in zip(names, mae, strict=True)) if mae else "no validation"
            print(f"train_regressor: epoch {epoch + 1}/{epochs}, loss {history['train_loss'][-1]:.4g}, val MAE "
                  f"{shown} ({time.monotonic() - start:.1f} s)", file=sys.stderr)
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return model, history


def predict(model: CrystalRegressor, structures: Sequence[Any], batch_size: int = 256) -> np.ndarray:
    """Predictions (n, T) in target units (columns ``model.targets``) for pymatgen Structures."""
    model.eval()
    device = next(model.parameters()).device
    outs = []
    with torch.no_grad():
        for s in range(0, len(structures), batch_size):
            batch = structures_to_batch(structures[s:s + batch_size], model.elements)
            outs.append(model(**{k: v.to(device) for k, v in batch.items()}).double().cpu().numpy())
    return np.concatenate(outs) if outs else np.zeros((0, len(model.targets)))
