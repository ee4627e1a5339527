"""Systems, reference sampling, metrics, Langevin dynamics and plots for energy-based diffusion
models of molecular dynamics (Plainer et al. 2025, "Consistent sampling and simulation:
molecular dynamics with energy-based diffusion models", ScoreMD).

A network's scalar energy ``E(x, t)`` is in units of kT: at the data end its Boltzmann density
is ``exp(-E(x, t_min))`` and its force over kT is ``-grad E``. Everything here follows that
convention and states its units.

Systems (:data:`SYSTEMS`, :class:`System`):

- ``muller_brown``: the Müller–Brown potential (Müller & Brown 1979, standard parameters, see
  :data:`MULLER_BROWN`) at **kT = 23** (ScoreMD's temperature), i.e. the density
  ``exp(-V / 23)``. Its three basins hold about 75 %, 14 % and 11 % of the mass (deep basin
  near (-0.558, 1.442), V = -146.70; basin near (0.623, 0.028), V = -108.17; shallow basin near
  (-0.050, 0.467), V = -80.77); the barrier out of the deep basin is about 4.6 kT, the one
  between the other two about 1.6 kT: well separated but reachable. At this temperature a
  plateau at V ~ +20 to the left of the deep basin carries a little mass, so the histogram box
  is x in [-2.75, 1.5], y in [-1.0, 2.75] (less than 1e-4 of the mass lies outside).
- ``double_well``: ``V = a (x^2 - 1)^2 + b y^2 + c x`` with a = 3, b = 2, c = 0.5 in units of
  kT (kT = 1): a 3 kT barrier, minima near x = -1.020 and x = 0.978 (y = 0), the left one
  about 1 kT lower (about 71 % of the mass). Box [-2.25, 2.25]^2.

Reference samples are this project's own (:func:`mcmc_reference`: vectorised Metropolis chains,
checked against the exact density integrated on a grid, :func:`reference_probs`). Distances
between distributions are Jensen–Shannon divergences of histograms in **nats** (natural log,
between 0 and ln 2): :func:`js_divergence`, :func:`histogram_js`, :func:`js_1d`,
:func:`reference_js`, :func:`ramachandran_js`.

Alanine dipeptide: the 5-bead coarse-grained backbone (C, N, CA, C, N) of the shared data file
``data/md_alanine_dipeptide/ala2_cg5_cgnet.npz`` (Å): :func:`load_alanine`, :func:`dihedral`,
:func:`phi_psi` (radians, IUPAC sign convention).

Dynamics: :class:`EnergyCalculator` (an ASE calculator around any energy function in kT units),
:func:`langevin` (ASE's Langevin integrator with it) and :func:`langevin_torch` (batched BAOAB or
overdamped Langevin in torch, for many parallel trajectories of the 2-D systems).

Plots: :func:`plot_free_energy` (2-D free energies ``-log p`` in kT, one panel per sample set)
and :func:`plot_free_energy_1d`.
"""

from __future__ import annotations

import builtins
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ase import Atoms, units
from ase.calculators.calculator import Calculator, all_changes
from torch import Tensor

from polydiff.plugin import save_figure, shared_dir

__all__ = [
    "ALA_FILE",
    "ALA_TEMPERATURE_K",
    "DOUBLE_WELL",
    "KT_300K",
    "MULLER_BROWN",
    "MULLER_BROWN_KT",
    "SYSTEMS",
    "EnergyCalculator",
    "System",
    "alanine_path",
    "dihedral",
    "double_well",
    "double_well_force",
    "force_of",
    "get_system",
    "histogram",
    "histogram_js",
    "js_1d",
    "js_divergence",
    "langevin",
    "langevin_torch",
    "load_alanine",
    "mcmc_reference",
    "muller_brown",
    "muller_brown_force",
    "phi_psi",
    "plot_free_energy",
    "plot_free_energy_1d",
    "ramachandran_js",
    "reference_js",
    "reference_probs",
]

_range = builtins.range  # ``range`` names the histogram box arguments (as in numpy)
Array = Any  # a numpy array or a torch tensor: the potentials and dihedrals accept both

KT_300K = units.kB * 300.0
"""kT at 300 K in eV (about 0.02585 eV): the default temperature of the ASE bridge."""

# ---------------------------------------------------------------------------------------------
# potentials
# ---------------------------------------------------------------------------------------------

MULLER_BROWN = {
    "A": (-200.0, -100.0, -170.0, 15.0),
    "a": (-1.0, -1.0, -6.5, 0.7),
    "b": (0.0, 0.0, 11.0, 0.6),
    "c": (-10.0, -10.0, -6.5, 0.7),
    "x0": (1.0, 0.0, -0.5, -1.0),
    "y0": (0.0, 0.5, 1.5, 1.0),
}
"""The standard Müller–Brown parameters: ``V = sum_k A_k exp(a_k dx^2 + b_k dx dy + c_k dy^2)``
with ``dx = x - x0_k``, ``dy = y - y0_k``."""

MULLER_BROWN_KT = 23.0
"""The temperature (in the potential's own units) of the Müller–Brown Boltzmann density."""

DOUBLE_WELL = {"a": 3.0, "b": 2.0, "c": 0.5}
"""Parameters of :func:`double_well`, in units of kT."""


def _lib(x: Array) -> Any:
    return torch if isinstance(x, Tensor) else np


def _as_array(x: Array) -> Array:
    return x if isinstance(x, Tensor) else np.asarray(x, dtype=np.float64)


def _stack(parts: Sequence[Array]) -> Array:
    return torch.stack(list(parts), dim=-1) if isinstance(parts[0], Tensor) else np.stack(parts, axis=-1)


def _mb_terms(x: Array) -> list[tuple[Array, Array, Array, float, float, float]]:
    """Each Müller–Brown term's value with the (dx, dy) it was evaluated at and its a, b, c."""
    x = _as_array(x)
    lib = _lib(x)
    p = MULLER_BROWN
    out = []
    for A, a, b, c, x0, y0 in zip(p["A"], p["a"], p["b"], p["c"], p["x0"], p["y0"]):
        dx, dy = x[..., 0] - x0, x[..., 1] - y0
        out.append((A * lib.exp(a * dx * dx + b * dx * dy + c * dy * dy), dx, dy, a, b, c))
    return out


def muller_brown(x: Array) -> Array:
    """The Müller–Brown potential ``V(x)`` of points ``x`` (..., 2) -> (...), in its own units
    (numpy in, numpy out; torch in, differentiable torch out). The Boltzmann density of the
    ``muller_brown`` system is ``exp(-V / MULLER_BROWN_KT)``."""
    terms = _mb_terms(x)
    e = terms[0][0]
    for t in terms[1:]:
        e = e + t[0]
    return e


def muller_brown_force(x: Array) -> Array:
    """The exact force ``-grad V`` of :func:`muller_brown`: (..., 2) -> (..., 2)."""
    fx = fy = 0.0
    for e, dx, dy, a, b, c in _mb_terms(x):
        fx = fx - e * (2 * a * dx + b * dy)
        fy = fy - e * (b * dx + 2 * c * dy)
    return _stack([fx, fy])


def double_well(x: Array, a: float = DOUBLE_WELL["a"], b: float = DOUBLE_WELL["b"],
                c: float = DOUBLE_WELL["c"]) -> Array:
    """The tilted double well ``V = a (x^2 - 1)^2 + b y^2 + c x`` of points (..., 2) -> (...),
    in kT (numpy or differentiable torch). Defaults: a = 3 (the barrier, in kT), b = 2, c = 0.5."""
    x = _as_array(x)
    u, v = x[..., 0], x[..., 1]
    return a * (u * u - 1) ** 2 + b * v * v + c * u


def double_well_force(x: Array, a: float = DOUBLE_WELL["a"], b: float = DOUBLE_WELL["b"],
                      c: float = DOUBLE_WELL["c"]) -> Array:
    """The exact force ``-grad V`` of :func:`double_well`: (..., 2) -> (..., 2)."""
    x = _as_array(x)
    u, v = x[..., 0], x[..., 1]
    return _stack([-(4 * a * u * (u * u - 1) + c), -2 * b * v])


# ---------------------------------------------------------------------------------------------
# systems
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class System:
    """A 2-D Boltzmann density ``exp(-energy(x) / kT)``.

    ``energy`` and ``force`` take (..., dim) numpy arrays or torch tensors (torch in: torch out,
    differentiable) in the potential's own units; ``kT`` is in the same units;
    ``range`` is the histogram box ``((lo, hi), ...)``, one pair per coordinate, holding all but
    a negligible part of the mass; ``step`` is the MALA step of :func:`mcmc_reference`;
    ``minima`` the local minima of the energy (``minima_energy`` their energies).
    """

    name: str
    dim: int
    energy: Callable[[Array], Array]
    force: Callable[[Array], Array]
    kT: float
    range: tuple[tuple[float, float], ...]
    step: float
    minima: tuple[tuple[float, ...], ...] = ()
    minima_energy: tuple[float, ...] = ()
    notes: str = field(default="", compare=False)

    @property
    def beta(self) -> float:
        return 1.0 / self.kT

    def reduced_energy(self, x: Array) -> Array:
        """``energy / kT``: the energy in kT units, ``-log`` of the unnormalised density (what an
        energy-based model of this system learns at ``t_min``, up to a constant)."""
        return self.energy(x) / self.kT

    def reduced_force(self, x: Array) -> Array:
        """``force / kT``: the score of the Boltzmann density."""
        return self.force(x) / self.kT

    def contains(self, x: np.ndarray) -> np.ndarray:
        """Whether points (..., dim) lie inside the box."""
        x = np.asarray(x)
        inside = np.ones(x.shape[:-1], dtype=bool)
        for k, (lo, hi) in enumerate(self.range):
            inside &= (x[..., k] >= lo) & (x[..., k] <= hi)
        return inside


SYSTEMS: dict[str, System] = {
    "muller_brown": System(
        name="muller_brown", dim=2, energy=muller_brown, force=muller_brown_force, kT=MULLER_BROWN_KT,
        range=((-2.75, 1.5), (-1.0, 2.75)), step=0.15,
        minima=((-0.558, 1.442), (0.623, 0.028), (-0.050, 0.467)), minima_energy=(-146.70, -108.17, -80.77),
        notes="Müller–Brown at kT = 23 (ScoreMD): basins 75 / 14 / 11 %"),
    "double_well": System(
        name="double_well", dim=2, energy=double_well, force=double_well_force, kT=1.0,
        range=((-2.25, 2.25), (-2.25, 2.25)), step=0.4,
        minima=((-1.0202, 0.0), (0.9785, 0.0)), minima_energy=(-0.5051, 0.4947),
        notes="a (x^2-1)^2 + b y^2 + c x, a=3, b=2, c=0.5, kT=1: 3 kT barrier, 71 / 29 %"),
}
"""The 2-D benchmark systems by name."""


def get_system(system: str | System) -> System:
    """A :class:`System` by name (or itself), with an error listing the known names."""
    if isinstance(system, System):
        return system
    if system not in SYSTEMS:
        raise ValueError(f"unknown MD system {system!r}; known: {', '.join(SYSTEMS)}")
    return SYSTEMS[system]


# ---------------------------------------------------------------------------------------------
# exact reference: quadrature and Metropolis chains
# ---------------------------------------------------------------------------------------------


def reference_probs(system: str | System, bins: int = 100, sub: int = 8,
                    range: Sequence[tuple[float, float]] | None = None) -> np.ndarray:
    """The exact probability of each histogram bin of the system's box (``bins`` per coordinate,
    shape ``(bins,) * dim``), by the midpoint rule on ``sub`` points per bin and coordinate;
    normalised over the box (the density restricted to it)."""
    system = get_system(system)
    box = system.range if range is None else tuple(range)
    axes = []
    for lo, hi in box:
        width = (hi - lo) / (bins * sub)
        axes.append(lo + width * (np.arange(bins * sub) + 0.5))
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)
    logp = -system.reduced_energy(grid)
    p = np.exp(logp - logp.max())
    p = p.reshape(*[n for _ in box for n in (bins, sub)]).sum(axis=tuple(_range(1, 2 * len(box), 2)))
    return p / p.sum()


def mcmc_reference(system: str | System, n: int, seed: int = 0, burn: int = 1000, thin: int = 10,
                   step: float | None = None, chains: int = 1000, p_global: float = 0.1,
                   stats: dict[str, float] | None = None) -> np.ndarray:
    """``n`` samples (n, dim) of the system's Boltzmann density restricted to its box, from
    ``chains`` parallel Metropolis chains (vectorised in numpy, seeded).

    Each step of each chain is, with probability ``1 - p_global``, a Metropolis-adjusted Langevin
    (MALA) move of step ``step`` (default ``system.step``; proposal ``x + step^2 / 2 * score +
    step * noise``), else an independence move to a uniform point of the box (which carries the
    chains between basins). Both are exact Metropolis–Hastings kernels for the density restricted
    to the box (moves leaving it are rejected), so is their random mixture. Chains start uniform
    in the box, run ``burn`` steps, then keep one state every ``thin`` steps. The acceptance
    rates of both kinds of move are written into ``stats`` when given (keys ``accept_mala``,
    ``accept_global``).
    """
    system = get_system(system)
    if n <= 0 or chains <= 0:
        raise ValueError(f"mcmc_reference needs n > 0 and chains > 0, got n={n}, chains={chains}")
    rng = np.random.default_rng(seed)
    h = float(system.step if step is None else step)
    lo = np.array([r[0] for r in system.range])
    hi = np.array([r[1] for r in system.range])
    chains = min(chains, n)
    per_chain = -(-n // chains)
    x = lo + (hi - lo) * rng.random((chains, system.dim))
    logp, score = -system.reduced_energy(x), system.reduced_force(x)
    kept = []
    acc = {"mala": [0, 0], "global": [0, 0]}
    for it in _range(burn + per_chain * thin):
        glob = rng.random(chains) < p_global
        noise = rng.standard_normal(x.shape)
        y = np.where(glob[:, None], lo + (hi - lo) * rng.random(x.shape), x + 0.5 * h * h * score + h * noise)
        inside = system.contains(y)
        y = np.where(inside[:, None], y, x)  # outside the box: rejected below, evaluate at x
        logp_y, score_y = -system.reduced_energy(y), system.reduced_force(y)
        log_ratio = logp_y - logp
        # MALA's proposal is not symmetric: add log q(x | y) - log q(y | x)
        fwd = np.sum(noise**2, axis=-1)
        back = np.sum((x - y - 0.5 * h * h * score_y) ** 2, axis=-1) / (h * h)
        log_ratio = np.where(glob, log_ratio, log_ratio - 0.5 * back + 0.5 * fwd)
        accept = inside & (np.log(rng.random(chains)) < log_ratio)
        x = np.where(accept[:, None], y, x)
        logp = np.where(accept, logp_y, logp)
        score = np.where(accept[:, None], score_y, score)
        acc["global"][0] += int(accept[glob].sum())
        acc["global"][1] += int(glob.sum())
        acc["mala"][0] += int(accept[~glob].sum())
        acc["mala"][1] += int((~glob).sum())
        if it >= burn and (it - burn + 1) % thin == 0:
            kept.append(x.copy())
    if stats is not None:
        stats.update({f"accept_{k}": a / max(t, 1) for k, (a, t) in acc.items()})
    out = np.stack(kept, axis=1).reshape(-1, system.dim)  # chain-major: (chains * per_chain, dim)
    return rng.permutation(out)[:n]


# ---------------------------------------------------------------------------------------------
# Jensen-Shannon divergences of histograms
# ---------------------------------------------------------------------------------------------


def js_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """The Jensen–Shannon divergence ``(KL(p || m) + KL(q || m)) / 2`` with ``m = (p + q) / 2`` of
    two discrete distributions (any shape, each normalised here), in nats (natural log, so in
    [0, ln 2]), with ``0 log 0 = 0``: finite whatever bins are empty (no epsilon needed, as
    ``m > 0`` wherever ``p > 0`` or ``q > 0``). Equals ``scipy.spatial.distance.jensenshannon(p,
    q) ** 2``."""
    p = np.asarray(p, dtype=np.float64).ravel()
    q = np.asarray(q, dtype=np.float64).ravel()
    if p.shape != q.shape:
        raise ValueError(f"js_divergence needs two histograms of the same size, got {p.size} and {q.size}")
    if (p < 0).any() or (q < 0).any() or p.sum() <= 0 or q.sum() <= 0:
        raise ValueError("js_divergence needs non-negative histograms with positive total mass")
    p, q = p / p.sum(), q / q.sum()
    m = 0.5 * (p + q)

    def kl(a: np.ndarray) -> float:
        nz = a > 0
        return float(np.sum(a[nz] * np.log(a[nz] / m[nz])))

    return max(0.5 * kl(p) + 0.5 * kl(q), 0.0)


def _points(x: Array) -> np.ndarray:
    x = x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)
    x = x.astype(np.float64)
    return x.reshape(len(x), -1) if x.ndim != 1 else x[:, None]


def histogram(x: Array, bins: int = 100, range: Sequence[tuple[float, float]] | None = None) -> np.ndarray:
    """Normalised histogram of points (N, D) (or (N,)) on ``bins`` bins per coordinate over
    ``range`` (one (lo, hi) per coordinate; default: the points' own extent), flattened, with
    one extra last entry: the fraction of points outside the box or not finite (an overflow bin,
    so mass that escapes the box counts against a sample instead of being dropped)."""
    x = _points(x)
    if range is None:
        range = _extent(x)
    box = [tuple(map(float, r)) for r in range]
    if len(box) != x.shape[1]:
        raise ValueError(f"histogram: {x.shape[1]}-D points but a range for {len(box)} coordinates")
    inside = np.isfinite(x).all(axis=1)
    for k, (lo, hi) in enumerate(box):
        inside &= (x[:, k] >= lo) & (x[:, k] <= hi)
    h, _ = np.histogramdd(x[inside], bins=bins, range=box)
    out = np.append(h.ravel(), len(x) - inside.sum())
    return out / max(len(x), 1)


def _extent(*xs: np.ndarray) -> list[tuple[float, float]]:
    both = np.concatenate([x[np.isfinite(x).all(axis=1)] for x in xs])
    if not len(both):
        raise ValueError("histogram: no finite points to take the range from")
    lo, hi = both.min(axis=0), both.max(axis=0)
    hi = np.where(hi > lo, hi, lo + 1.0)
    return list(zip(lo.tolist(), hi.tolist()))


def histogram_js(a: Array, b: Array, bins: int = 100, range: Sequence[tuple[float, float]] | None = None) -> float:
    """Jensen–Shannon divergence (nats) between the histograms of two point sets (N, D) and
    (M, D) on a common grid: ``bins`` per coordinate over ``range`` (default: the extent of both
    sets together), plus the overflow bin of :func:`histogram`."""
    a, b = _points(a), _points(b)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"histogram_js: {a.shape[1]}-D and {b.shape[1]}-D points")
    box = _extent(a, b) if range is None else range
    return js_divergence(histogram(a, bins, box), histogram(b, bins, box))


def js_1d(a: Array, b: Array, bins: int = 100, range: tuple[float, float] | None = None) -> float:
    """Jensen–Shannon divergence (nats) between the 1-D histograms of two samples (N,), (M,)."""
    a, b = _points(a), _points(b)
    return histogram_js(a[:, :1], b[:, :1], bins, None if range is None else [range])


def reference_js(samples: Array, system: str | System, bins: int = 100) -> float:
    """Jensen–Shannon divergence (nats) between the histogram of samples (N, dim) and the exact
    density of the system integrated over the same bins of its box (:func:`reference_probs`);
    samples outside the box count in an overflow bin, where the reference has none."""
    system = get_system(system)
    ref = np.append(reference_probs(system, bins).ravel(), 0.0)
    return js_divergence(histogram(samples, bins, system.range), ref)


# ---------------------------------------------------------------------------------------------
# alanine dipeptide (5-bead coarse-grained backbone)
# ---------------------------------------------------------------------------------------------

ALA_FILE = ("data", "md_alanine_dipeptide", "ala2_cg5_cgnet.npz")
"""The shared data file, relative to :func:`polydiff.plugin.shared_dir`."""

ALA_TEMPERATURE_K = 300.0
"""The temperature of the alanine dipeptide simulation (AMBER ff99SB-ILDN, 300 K)."""


def alanine_path() -> Path:
    """Where the shared coarse-grained alanine dipeptide trajectory is expected."""
    return shared_dir().joinpath(*ALA_FILE)


def load_alanine(path: str | Path | None = None, with_forces: bool = False) -> Any:
    """The 5-bead alanine dipeptide frames (N, 5, 3) float32 in Å (beads C, N, CA, C, N; 10,000
    frames 10 ps apart at 300 K in the shared file), and with ``with_forces`` also their forces
    (N, 5, 3) (units not stated by the source, presumably kcal/mol/Å) as a pair.

    ``path`` defaults to :func:`alanine_path`; a missing file raises FileNotFoundError, a file
    that is not such an archive ValueError, both naming the file."""
    path = alanine_path() if path is None else Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"alanine dipeptide data {path} not found: set POLYDIFF_SHARED to the shared "
                                f"folder holding {'/'.join(ALA_FILE)}, or pass the path of the .npz file")
    keys = ("coordinates", "forces") if with_forces else ("coordinates",)
    try:
        data = np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
        raise ValueError(f"{path}: not a readable .npz archive ({err})") from err
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise ValueError(f"{path}: a single array, not an .npz archive of 'coordinates' and 'forces'")
    with data:
        missing = [k for k in keys if k not in data.files]
        if missing:
            raise ValueError(f"{path}: no array {missing[0]!r} (has {', '.join(data.files) or 'none'})")
        arrays = []
        for key in keys:
            try:
                arrays.append(np.asarray(data[key]))
            except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
                raise ValueError(f"{path}: array {key!r} is unreadable ({err})") from err
    for k, a in zip(keys, arrays):
        if a.ndim != 3 or a.shape[1:] != (5, 3) or not len(a):
            raise ValueError(f"{path}: {k!r} should have shape (frames, 5, 3) (5 beads in 3-D), got {a.shape}")
        if not np.isfinite(a).all():
            raise ValueError(f"{path}: {k!r} holds non-finite values")
    arrays = [a.astype(np.float32) for a in arrays]
    return tuple(arrays) if with_forces else arrays[0]


def _cross(a: Array, b: Array) -> Array:
    return torch.linalg.cross(a, b, dim=-1) if isinstance(a, Tensor) else np.cross(a, b)


def _dot(a: Array, b: Array) -> Array:
    return (a * b).sum(-1)


def dihedral_xy(p0: Array, p1: Array, p2: Array, p3: Array) -> tuple[Array, Array]:
    """``(|b2| |n1| |n2| sin(phi), |n1| |n2| cos(phi))`` of the dihedral ``p0-p1-p2-p3`` (bonds
    ``b1 = p1 - p0``, ``b2 = p2 - p1``, ``b3 = p3 - p2``, normals ``n1 = b1 x b2``, ``n2 = b2 x
    b3``): the arguments of ``atan2``, without a division (smooth everywhere)."""
    b1, b2, b3 = p1 - p0, p2 - p1, p3 - p2
    n1, n2 = _cross(b1, b2), _cross(b2, b3)
    norm = torch.linalg.norm(b2, dim=-1) if isinstance(b2, Tensor) else np.linalg.norm(b2, axis=-1)
    return norm * _dot(b1, n2), _dot(n1, n2)


def dihedral(p0: Array, p1: Array, p2: Array, p3: Array) -> Array:
    """The dihedral angle of points ``p0-p1-p2-p3`` (each (..., 3), numpy or torch) in radians,
    in (-pi, pi], with the IUPAC sign convention (positive when, looking along ``p1 -> p2``, the
    bond to ``p0`` turns clockwise onto the bond to ``p3``; 180 deg = trans, 0 = cis). Use
    ``np.degrees`` for degrees (ASE's ``get_dihedral`` gives the same angle mod 360 deg)."""
    p0, p1, p2, p3 = (_as_array(p) for p in (p0, p1, p2, p3))
    y, x = dihedral_xy(p0, p1, p2, p3)
    return torch.atan2(y, x) if isinstance(y, Tensor) else np.arctan2(y, x)


def phi_psi(coords: Array) -> Array:
    """The backbone dihedrals (..., 2) in radians of 5-bead alanine dipeptide frames (..., 5, 3):
    ``phi = dihedral(C, N, CA, C)`` (beads 0-3) and ``psi = dihedral(N, CA, C, N)`` (beads 1-4)."""
    c = _as_array(coords)
    if c.shape[-2:] != (5, 3):
        raise ValueError(f"phi_psi needs 5-bead frames (..., 5, 3), got shape {tuple(c.shape)}")
    p = [c[..., k, :] for k in _range(5)]
    return _stack([dihedral(*p[0:4]), dihedral(*p[1:5])])


def _angles(x: Array) -> np.ndarray:
    """(N, 2) backbone angles in radians from frames (..., 5, 3) or angles (N, 2) as they are."""
    x = x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)
    if x.shape[-2:] == (5, 3):
        return phi_psi(x.astype(np.float64)).reshape(-1, 2)
    if x.ndim == 2 and x.shape[1] == 2:
        return x.astype(np.float64)
    raise ValueError(f"expected 5-bead frames (..., 5, 3) or (phi, psi) angles (N, 2), got shape {x.shape}")


def ramachandran_js(a: Array, b: Array, bins: int = 64) -> float:
    """Jensen–Shannon divergence (nats) of the (phi, psi) histograms (``bins`` x ``bins`` over
    [-pi, pi]^2) of two sets of 5-bead frames (..., 5, 3), or of (N, 2) angles in radians."""
    box = [(-np.pi, np.pi)] * 2
    return histogram_js(_angles(a), _angles(b), bins, box)


# ---------------------------------------------------------------------------------------------
# ASE bridge
# ---------------------------------------------------------------------------------------------

EnergyFn = Callable[[Tensor], Tensor]


class EnergyCalculator(Calculator):
    """An ASE calculator from an energy function in units of kT, e.g. a trained model's
    ``x -> E(x, t_min)`` (:func:`polydiff_molecules.md_nets.energy_closure`).

    Units: positions are in Å (whatever length unit the model was trained in is read as Å);
    ``energy_fn`` returns energies in kT; ``kT`` (eV, default kT at 300 K) converts them, so
    ASE's energy is ``kT * E`` in eV and its forces ``-kT grad E`` in eV/Å. Dynamics at the
    temperature ``kT`` then sample the model's density ``exp(-E)``. ``kT`` is the only scale: a
    model of a density at another temperature T' is run at T' by passing ``kT = kB T'``.

    Two layouts:

    - molecule (``planar=False``): the whole Atoms object is one configuration;
      ``energy_fn`` gets the positions as a (1, n_atoms, 3) tensor and returns (1,).
    - planar (``planar=True``, for the 2-D systems): each atom is an independent 2-D particle
      with ``(x, y)`` its x and y positions; ``energy_fn`` gets all of them as (n_atoms, 2) and
      returns (n_atoms,), and the energy is their sum. The z-force is zero; fix z with
      ``ase.constraints.FixCartesian(range(n), mask=(False, False, True))`` (:func:`langevin` does)
      so that thermostats do not move it. A single 2-D configuration is atom 0 at z = 0.

    ``energy_fn`` is called on ``dtype`` tensors (float64 by default; pass torch.float32 for a
    float32 network, or convert the network) on ``device``.
    """

    implemented_properties = ["energy", "forces"]  # noqa: RUF012 (ASE's class attribute)

    def __init__(self, energy_fn: EnergyFn, kT: float = KT_300K, planar: bool = False,
                 dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.energy_fn, self.kT, self.planar = energy_fn, float(kT), planar
        self.dtype, self.device = dtype, torch.device(device)

    def calculate(self, atoms: Atoms | None = None, properties: Sequence[str] = ("energy", "forces"),
                  system_changes: Sequence[str] = tuple(all_changes)) -> None:
        super().calculate(atoms, properties, system_changes)
        pos = self.atoms.get_positions()
        x = torch.as_tensor(pos[:, :2] if self.planar else pos[None], dtype=self.dtype, device=self.device)
        with torch.enable_grad():
            x.requires_grad_(True)
            e = self.energy_fn(x)
            want = len(pos) if self.planar else 1
            if e.shape != (want,):
                raise ValueError(f"the energy function must return one energy per configuration ({want},), "
                                 f"got {tuple(e.shape)}")
            (grad,) = torch.autograd.grad(e.sum(), x)
        grad = grad.detach().cpu().double().numpy()
        forces = np.zeros_like(pos)
        if self.planar:
            forces[:, :2] = -grad
        else:
            forces[:] = -grad[0]
        self.results["energy"] = self.kT * float(e.detach().sum())
        self.results["free_energy"] = self.results["energy"]
        self.results["forces"] = self.kT * forces


def langevin(calc: EnergyCalculator | EnergyFn, x0: np.ndarray, steps: int, dt: float = 1.0,
             friction: float = 0.01, kT: float = KT_300K, seed: int = 0, every: int = 1,
             masses: float | np.ndarray = 1.0) -> np.ndarray:
    """Langevin dynamics with ASE's integrator (:class:`ase.md.langevin.Langevin`, fixcm off).

    ``calc`` is an :class:`EnergyCalculator` or an energy function in kT (wrapped in one with
    this ``kT``). ``x0``: a molecule (n_atoms, 3) in Å, or 2-D points: (2,) one point, (B, 2)
    B independent particles run side by side as the atoms of one planar Atoms object
    (their z fixed at 0). ``dt`` in fs, ``friction`` in 1/fs, ``kT`` in eV (the thermostat's
    temperature is ``kT / kB``), masses in amu (default 1 for every atom: only the time scale
    depends on them, never the sampled density). Starting velocities are zero.

    Returns the positions after every ``every`` steps: (steps // every, n_atoms, 3),
    (steps // every, B, 2) or (steps // every, 2) matching ``x0``.
    """
    from ase.constraints import FixCartesian
    from ase.md.langevin import Langevin

    x0 = np.asarray(x0, dtype=np.float64)
    planar = x0.shape[-1] == 2
    single = x0.ndim == 1
    if planar:
        pts = x0.reshape(-1, 2)
        pos = np.concatenate([pts, np.zeros((len(pts), 1))], axis=1)
    elif x0.ndim == 2 and x0.shape[1] == 3:
        pos = x0
    else:
        raise ValueError(f"langevin: x0 must be (n_atoms, 3), (2,) or (B, 2), got {x0.shape}")
    if not isinstance(calc, EnergyCalculator):
        calc = EnergyCalculator(calc, kT=kT, planar=planar)
    elif calc.planar != planar:
        raise ValueError(f"langevin: the calculator has planar={calc.planar} but x0 {x0.shape} is "
                         f"{'2-D points' if planar else 'a molecule'}")
    atoms = Atoms(numbers=np.ones(len(pos), dtype=int), positions=pos)
    atoms.set_masses(np.broadcast_to(np.asarray(masses, dtype=np.float64), (len(pos),)).copy())
    if planar:
        atoms.set_constraint(FixCartesian(list(_range(len(pos))), mask=(False, False, True)))
    atoms.calc = calc
    dyn = Langevin(atoms, timestep=dt * units.fs, temperature_K=kT / units.kB, friction=friction / units.fs,
                   fixcm=False, rng=np.random.default_rng(seed))
    frames = []
    for _ in _range(steps // every):
        dyn.run(every)
        p = atoms.get_positions()
        frames.append(p[:, :2] if planar else p.copy())
    out = np.stack(frames) if frames else np.zeros((0, *pos[:, :2].shape) if planar else (0, *pos.shape))
    return out[:, 0] if single else out


def force_of(energy_fn: EnergyFn) -> Callable[[Tensor], Tensor]:
    """``x -> -grad energy_fn(x)`` (detached; gradients on even under ``no_grad``)."""

    def force(x: Tensor) -> Tensor:
        with torch.enable_grad():
            xx = x.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(energy_fn(xx).sum(), xx)
        return -g.detach()

    return force


def langevin_torch(force_fn: Callable[[Tensor], Tensor], x0: Array, steps: int, dt: float = 1e-3,
                   gamma: float = 1.0, kT: float = 1.0, seed: int = 0, every: int = 1, mass: float = 1.0,
                   method: str = "baoab") -> Array:
    """Many parallel Langevin trajectories in torch, started from ``x0`` (B, ...) with velocities
    drawn from the Maxwell–Boltzmann distribution.

    ``force_fn(x) -> force`` (same shape, e.g. a system's exact force, or ``force_of(E)`` for
    an energy; with energies in kT pass ``kT = 1``); the stationary density is
    ``exp(-V / kT)`` up to the integrator's O(dt^2) bias. ``method``: ``"baoab"`` (underdamped,
    Leimkuhler & Matthews 2013: half kick, half drift, exact Ornstein–Uhlenbeck friction and
    noise with ``exp(-gamma dt)``, half drift, half kick; one force call per step) or
    ``"overdamped"`` (Euler–Maruyama of ``dx = F / (gamma mass) dt + sqrt(2 kT / (gamma mass))
    dW``). Seeded: the same seed gives the same trajectories.

    Returns the states after every ``every`` steps, (steps // every, B, ...), as a numpy array
    for a numpy ``x0`` and a tensor (on x0's device) for a tensor.
    """
    if method not in ("baoab", "overdamped"):
        raise ValueError(f"unknown Langevin method {method!r}; allowed: baoab, overdamped")
    as_numpy = not isinstance(x0, Tensor)
    x = torch.as_tensor(np.asarray(x0, dtype=np.float64)) if as_numpy else x0.detach().clone()
    g = torch.Generator(device=x.device).manual_seed(seed)

    def noise() -> Tensor:
        return torch.randn(x.shape, generator=g, dtype=x.dtype, device=x.device)

    frames = []
    f = force_fn(x)
    if method == "baoab":
        c = float(np.exp(-gamma * dt))
        sd = float(np.sqrt((1 - c * c) * kT / mass))
        v = float(np.sqrt(kT / mass)) * noise()
        for it in _range(steps):
            v = v + 0.5 * dt * f / mass
            x = x + 0.5 * dt * v
            v = c * v + sd * noise()
            x = x + 0.5 * dt * v
            f = force_fn(x)
            v = v + 0.5 * dt * f / mass
            if (it + 1) % every == 0:
                frames.append(x.detach().clone())
    else:
        drift, sd = dt / (gamma * mass), float(np.sqrt(2 * kT * dt / (gamma * mass)))
        for it in _range(steps):
            x = x + drift * f + sd * noise()
            f = force_fn(x)
            if (it + 1) % every == 0:
                frames.append(x.detach().clone())
    out = torch.stack(frames) if frames else x.new_zeros((0, *x.shape))
    return out.cpu().numpy() if as_numpy else out


# ---------------------------------------------------------------------------------------------
# free-energy plots
# ---------------------------------------------------------------------------------------------


def _free_energy(h: np.ndarray) -> np.ndarray:
    """``-log p`` (kT) of a histogram, shifted to a minimum of 0; NaN where empty."""
    with np.errstate(divide="ignore"):
        f = -np.log(h / h.sum())
    f[~np.isfinite(f)] = np.nan
    return f - np.nanmin(f) if np.isfinite(f).any() else f


def plot_free_energy(samples: Mapping[str, Array], path: str | Path, system: str | System | None = None,
                     kind: str | None = None, bins: int | None = None, fmax: float = 10.0) -> Path:
    """Free energies ``F = -log p`` (kT, minimum 0, capped at ``fmax``) of each sample set, one
    panel each, written atomically as a PNG to ``path`` (returned).

    ``kind="ramachandran"``: sets of 5-bead frames (..., 5, 3) or (phi, psi) angles (N, 2) in
    radians, plotted over [-180, 180]^2 degrees (default 64 bins). ``kind="2d"``: points (N, 2),
    over the system's box (default 100 bins), with a first panel of the exact ``F = V / kT`` and
    its contours drawn over every panel when ``system`` is given. Default kind: "2d" with a
    system, else guessed from the shape of the first set.
    """
    from matplotlib.figure import Figure

    if not samples:
        raise ValueError("plot_free_energy needs at least one sample set")
    sys_ = get_system(system) if system is not None else None
    if kind is None:
        first = np.asarray(next(iter(samples.values())))
        kind = "ramachandran" if sys_ is None and first.shape[-2:] == (5, 3) else "2d"
    if kind == "ramachandran":
        bins = bins or 64
        box = [(-180.0, 180.0)] * 2
        sets = {k: np.degrees(_angles(v)) for k, v in samples.items()}
        labels = ("phi (deg)", "psi (deg)")
    elif kind == "2d":
        bins = bins or 100
        sets = {k: _points(v) for k, v in samples.items()}
        bad = [k for k, v in sets.items() if v.shape[1] != 2]
        if bad:
            raise ValueError(f"plot_free_energy(kind='2d') needs (N, 2) points; {bad[0]!r} is {sets[bad[0]].shape}")
        box = [tuple(r) for r in sys_.range] if sys_ is not None else _extent(*sets.values())
        labels = ("x", "y")
    else:
        raise ValueError(f"unknown free-energy plot kind {kind!r}; allowed: ramachandran, 2d")
    panels = {}
    exact = None
    if sys_ is not None and kind == "2d":
        exact = _free_energy(reference_probs(sys_, bins, sub=2, range=box))
        panels["exact"] = exact
    for k, v in sets.items():
        h, _, _ = np.histogram2d(v[:, 0], v[:, 1], bins=bins, range=box)
        panels[k] = _free_energy(h) if h.sum() else np.full((bins, bins), np.nan)
    # constrained layout: each panel's y label and ticks clear the panel to its left
    fig = Figure(figsize=(4.2 * len(panels), 3.6), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    extent = (box[0][0], box[0][1], box[1][0], box[1][1])
    image = None
    for ax, (k, f) in zip(axes, panels.items()):
        image = ax.imshow(np.minimum(f, fmax).T, origin="lower", extent=extent, aspect="auto", cmap="viridis",
                          vmin=0.0, vmax=fmax)
        if exact is not None:
            xs = [np.linspace(lo, hi, bins) for lo, hi in box]
            ax.contour(xs[0], xs[1], np.nan_to_num(exact, nan=fmax).T, levels=np.arange(1.0, fmax, 2.0),
                       colors="white", linewidths=0.5, alpha=0.6)
        n = "" if k == "exact" else f" (n={len(sets[k])})"
        ax.set_title(f"{k}{n}")
        ax.set_xlabel(labels[0])
        ax.set_ylabel(labels[1])
    fig.colorbar(image, ax=list(axes), label="free energy (kT)")
    return save_figure(fig, path)


def plot_free_energy_1d(samples: Mapping[str, Array], path: str | Path, system: str | System | None = None,
                        coord: int = 0, bins: int = 100, range: tuple[float, float] | None = None) -> Path:
    """Free energy ``-log p`` (kT, minimum 0) along coordinate ``coord`` of each sample set (N, D)
    (e.g. x for the double well), as curves in one panel, with the exact marginal free energy
    of ``system`` (by quadrature) when given; written atomically as a PNG to ``path``."""
    from matplotlib.figure import Figure

    sys_ = get_system(system) if system is not None else None
    sets = {k: _points(v)[:, coord] for k, v in samples.items()}
    if range is None:
        range = sys_.range[coord] if sys_ is not None else _extent(*[v[:, None] for v in sets.values()])[0]
    edges = np.linspace(range[0], range[1], bins + 1)
    mids = 0.5 * (edges[1:] + edges[:-1])
    fig = Figure(figsize=(5.5, 3.6))
    ax = fig.subplots()
    if sys_ is not None:
        p = reference_probs(sys_, bins, sub=4)
        marginal = p.sum(axis=tuple(k for k in _range(sys_.dim) if k != coord))
        ax.plot(mids, _free_energy(marginal), "k-", lw=2, label="exact")
    for k, v in sets.items():
        h, _ = np.histogram(v, bins=edges)
        ax.plot(mids, _free_energy(h.astype(np.float64)) if h.sum() else np.full(bins, np.nan), lw=1.2,
                label=f"{k} (n={len(v)})")
    ax.set_xlabel(f"coordinate {coord}")
    ax.set_ylabel("free energy (kT)")
    ax.legend(fontsize=8)
    return save_figure(fig, path)
