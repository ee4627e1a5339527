"""polydiff plugin for periodic crystals: DiffCrysGen matrix diffusion and a periodic
torus / lattice / element flow, Wyckoff-letter augmentation, property transfer learning, CDVAE
metrics with periodic images, CIF / POSCAR / extended XYZ files."""

from .modality import CrystalsModality, Undecodable

__all__ = ["CrystalsModality", "Undecodable"]
