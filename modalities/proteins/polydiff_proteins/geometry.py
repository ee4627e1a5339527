"""Backbone geometry: ideal bond lengths and angles, NeRF chain building from dihedrals,
residue frames from N / CA / C atoms (Gram-Schmidt) and full N, CA, C, O backbones back from
frames.

Conventions. A backbone is an array ``(L, 4, 3)`` of the atoms N, CA, C, O of ``L`` residues
in Angstrom (:data:`ATOMS`). The frame of residue ``i`` is ``(R_i, t_i)`` with ``t_i = CA_i``
and the columns of ``R_i`` the orthonormal axes ``e1 = (C - CA) / |C - CA|``, ``e2`` = the part
of ``N - CA`` orthogonal to ``e1`` (normalised), ``e3 = e1 x e2``; an atom's global position is
``R_i @ local + t_i``. Ideal geometry is Engh & Huber's (1991): the values below are the ones
every backbone builder of the field uses (FrameDiff, AlphaFold's ``residue_constants``).

Dihedrals: ``phi_i = C_{i-1}-N_i-CA_i-C_i``, ``psi_i = N_i-CA_i-C_i-N_{i+1}``,
``omega_i = CA_i-C_i-N_{i+1}-CA_{i+1}`` (radians; NaN where a neighbour is missing).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

ATOMS = ("N", "CA", "C", "O")

# ideal bond lengths (A) and angles (degrees)
N_CA, CA_C, C_N, C_O = 1.458, 1.525, 1.329, 1.231
ANGLE_N_CA_C, ANGLE_CA_C_N, ANGLE_C_N_CA, ANGLE_CA_C_O = 111.2, 116.2, 121.7, 120.5
CA_CA = 3.80  # trans peptide CA(i)-CA(i+1) distance
BONDS = {"N-CA": N_CA, "CA-C": CA_C, "C-N": C_N, "C-O": C_O}
ANGLES = {"N-CA-C": ANGLE_N_CA_C, "CA-C-N": ANGLE_CA_C_N, "C-N-CA": ANGLE_C_N_CA}
# psi used to place the O of a chain's last residue, whose next N is unknown (a strand-like value)
LAST_PSI = math.radians(130.0)

_T = math.radians(ANGLE_N_CA_C)
# ideal N and C in the residue frame (CA at the origin, C on e1, N in the e1-e2 plane)
LOCAL_N = np.array([N_CA * math.cos(_T), N_CA * math.sin(_T), 0.0])
LOCAL_C = np.array([CA_C, 0.0, 0.0])


@dataclass
class Backbone:
    """One protein chain's backbone: ``atoms`` ``(L, A, 3)`` in Angstrom with the atom names
    ``atom_names`` (N, CA, C, O; or CA only for CA traces), its one-letter ``sequence`` (``G``
    for generated residues), chain id, a ``name`` (file stem or sample id) and the residue
    numbers ``res_ids`` (1..L by default)."""

    atoms: np.ndarray
    sequence: str = ""
    chain: str = "A"
    name: str = ""
    atom_names: tuple[str, ...] = ATOMS
    res_ids: np.ndarray | None = field(default=None)

    def __post_init__(self) -> None:
        self.atoms = np.asarray(self.atoms, dtype=np.float64)
        if self.atoms.ndim != 3 or self.atoms.shape[1:] != (len(self.atom_names), 3):
            raise ValueError(f"backbone {self.name!r}: atoms must be (L, {len(self.atom_names)}, 3) for atoms "
                             f"{self.atom_names}, got {self.atoms.shape}")
        if not self.sequence:
            self.sequence = "G" * len(self.atoms)
        if len(self.sequence) != len(self.atoms):
            raise ValueError(f"backbone {self.name!r}: sequence of {len(self.sequence)} residues for "
                             f"{len(self.atoms)} residues of coordinates")
        if self.res_ids is None:
            self.res_ids = np.arange(1, len(self.atoms) + 1)
        self.res_ids = np.asarray(self.res_ids, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.atoms)

    def __repr__(self) -> str:  # a summary: the coordinates would fill a screen per backbone
        trace = "" if self.full else f", {'/'.join(self.atom_names)} trace"
        return f"Backbone({self.name!r}, {len(self)} residues, chain {self.chain}{trace})"

    @property
    def full(self) -> bool:
        """Whether all four backbone atoms are present (False for CA traces)."""
        return self.atom_names == ATOMS

    @property
    def ca(self) -> np.ndarray:
        """``(L, 3)`` CA coordinates."""
        return self.atoms[:, self.atom_names.index("CA")]

    def atom(self, name: str) -> np.ndarray:
        """Coordinates (L, 3) of one backbone atom (N, CA, C, O) of every residue."""
        if name not in self.atom_names:
            raise ValueError(f"backbone {self.name!r} has no {name} atoms (a {'/'.join(self.atom_names)} trace)")
        return self.atoms[:, self.atom_names.index(name)]


# ---------------------------------------------------------------------------------------------
# NeRF placement and chain building
# ---------------------------------------------------------------------------------------------

def place(a: np.ndarray, b: np.ndarray, c: np.ndarray, bond: float, angle: float,
          torsion: np.ndarray | float) -> np.ndarray:
    """Natural-extension reference frame: the point ``d`` with ``|cd| = bond``, angle ``b-c-d``
    = ``angle`` and dihedral ``a-b-c-d`` = ``torsion`` (radians); points ``(..., 3)``, torsions
    ``(...)`` (batched over candidates)."""
    bc = c - b
    bc = bc / np.linalg.norm(bc, axis=-1, keepdims=True)
    n = np.cross(b - a, bc)
    n = n / np.linalg.norm(n, axis=-1, keepdims=True)
    m = np.cross(n, bc)
    tor = np.asarray(torsion, np.float64)[..., None]
    return (c - bond * math.cos(angle) * bc + bond * math.sin(angle) * np.cos(tor) * m
            + bond * math.sin(angle) * np.sin(tor) * n)


def grow(prev: np.ndarray, psi_prev: np.ndarray | float, omega_prev: np.ndarray | float, phi: np.ndarray,
         psi: np.ndarray, omega: np.ndarray) -> np.ndarray:
    """N, CA, C (``(..., K, 3, 3)``) of ``K`` residues appended after a residue whose N, CA, C are
    ``prev`` ``(..., 3, 3)`` and whose psi / omega are ``psi_prev`` / ``omega_prev``, with the new
    residues' dihedrals ``(..., K)``; ideal bond lengths and angles. Batched over leading dims."""
    a = math.radians
    n0, ca0, c0 = prev[..., 0, :], prev[..., 1, :], prev[..., 2, :]
    out = []
    psi_p, om_p = psi_prev, omega_prev
    for k in range(phi.shape[-1]):
        n1 = place(n0, ca0, c0, C_N, a(ANGLE_CA_C_N), psi_p)
        ca1 = place(ca0, c0, n1, N_CA, a(ANGLE_C_N_CA), om_p)
        c1 = place(c0, n1, ca1, CA_C, a(ANGLE_N_CA_C), phi[..., k])
        out.append(np.stack([n1, ca1, c1], axis=-2))
        n0, ca0, c0, psi_p, om_p = n1, ca1, c1, psi[..., k], omega[..., k]
    return np.stack(out, axis=-3) if out else np.zeros((*prev.shape[:-2], 0, 3, 3))


def add_oxygens(x: np.ndarray, psi: np.ndarray) -> np.ndarray:
    """``(..., L, 4, 3)`` backbones from N, CA, C ``(..., L, 3, 3)`` and psi ``(..., L)``: each O in
    the peptide plane, trans to the next N (ideal C=O length and CA-C-O angle)."""
    o = place(x[..., 0, :], x[..., 1, :], x[..., 2, :], C_O, math.radians(ANGLE_CA_C_O), psi + math.pi)
    return np.concatenate([x, o[..., None, :]], axis=-2)


def build_backbone(phi: np.ndarray, psi: np.ndarray, omega: np.ndarray | None = None) -> np.ndarray:
    """``(..., L, 4, 3)`` N, CA, C, O of chains with ideal bond lengths and angles and the given
    dihedrals ``(..., L)`` in radians (``phi[0]`` places nothing and the last ``psi`` only the
    last O; ``omega`` defaults to trans, pi). The first residue sits at its ideal place in the
    identity frame."""
    phi, psi = np.asarray(phi, np.float64), np.asarray(psi, np.float64)
    if phi.shape != psi.shape or phi.ndim < 1 or phi.shape[-1] < 1:
        raise ValueError(f"phi and psi must have the same shape (..., L >= 1), got {phi.shape} and {psi.shape}")
    omega = np.full(phi.shape, math.pi) if omega is None else np.asarray(omega, np.float64)
    first = np.broadcast_to(ideal_residue(), (*phi.shape[:-1], 3, 3))
    rest = grow(first, psi[..., 0], omega[..., 0], phi[..., 1:], psi[..., 1:], omega[..., 1:])
    return add_oxygens(np.concatenate([first[..., None, :, :], rest], axis=-3), psi)


# ---------------------------------------------------------------------------------------------
# dihedrals
# ---------------------------------------------------------------------------------------------

def dihedral(p0: np.ndarray, p1: np.ndarray, p2: np.ndarray, p3: np.ndarray) -> np.ndarray:
    """Dihedral angles (radians, in (-pi, pi]) of the points ``(..., 3)``."""
    b0, b1, b2 = p0 - p1, p2 - p1, p3 - p2
    b1n = b1 / np.linalg.norm(b1, axis=-1, keepdims=True)
    v = b0 - (b0 * b1n).sum(-1, keepdims=True) * b1n
    w = b2 - (b2 * b1n).sum(-1, keepdims=True) * b1n
    x = (v * w).sum(-1)
    y = (np.cross(b1n, v) * w).sum(-1)
    return np.arctan2(y, x)


def backbone_dihedrals(atoms: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """phi, psi, omega ``(L,)`` of a backbone ``(L, >=3, 3)`` (N, CA, C first); NaN at chain ends."""
    x = np.asarray(atoms, np.float64)
    n, ca, c = x[:, 0], x[:, 1], x[:, 2]
    nan = np.full(len(x), np.nan)
    phi, psi, omega = nan.copy(), nan.copy(), nan.copy()
    if len(x) > 1:
        phi[1:] = dihedral(c[:-1], n[1:], ca[1:], c[1:])
        psi[:-1] = dihedral(n[:-1], ca[:-1], c[:-1], n[1:])
        omega[:-1] = dihedral(ca[:-1], c[:-1], n[1:], ca[1:])
    return phi, psi, omega


# ---------------------------------------------------------------------------------------------
# frames
# ---------------------------------------------------------------------------------------------

def frames_from_backbone(atoms: np.ndarray | Tensor) -> tuple[Tensor, Tensor]:
    """Rotations ``(..., L, 3, 3)`` and translations ``(..., L, 3)`` (= CA) of backbones
    ``(..., L, >=3, 3)`` (N, CA, C first), by Gram-Schmidt on ``C - CA`` and ``N - CA``."""
    x = torch.as_tensor(atoms)
    n, ca, c = x[..., 0, :], x[..., 1, :], x[..., 2, :]
    e1 = torch.nn.functional.normalize(c - ca, dim=-1)
    u = n - ca
    e2 = torch.nn.functional.normalize(u - (u * e1).sum(-1, keepdim=True) * e1, dim=-1)
    e3 = torch.cross(e1, e2, dim=-1)
    return torch.stack([e1, e2, e3], dim=-1), ca


def backbone_from_frames(rots: np.ndarray | Tensor, trans: np.ndarray | Tensor) -> np.ndarray:
    """Full ``(L, 4, 3)`` N, CA, C, O backbones of frames ``(L, 3, 3)`` / ``(L, 3)`` (Angstrom):
    N and C at their ideal places in each frame; O in the peptide plane at the ideal C=O length
    and CA-C-O angle, trans to the next residue's N (the last residue's O with psi
    :data:`LAST_PSI`)."""
    R = torch.as_tensor(rots, dtype=torch.float64).numpy()
    t = torch.as_tensor(trans, dtype=torch.float64).numpy()
    n_at = np.einsum("lij,j->li", R, LOCAL_N) + t
    c_at = np.einsum("lij,j->li", R, LOCAL_C) + t
    x = np.stack([n_at, t, c_at], axis=1)
    psi = np.full(len(x), LAST_PSI)
    psi[:-1] = dihedral(x[:-1, 0], x[:-1, 1], x[:-1, 2], x[1:, 0])
    return add_oxygens(x, psi)


def ideal_residue() -> np.ndarray:
    """``(3, 3)`` ideal N, CA, C of one residue in its own frame."""
    return np.stack([LOCAL_N, np.zeros(3), LOCAL_C])
