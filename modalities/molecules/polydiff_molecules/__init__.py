"""polydiff plugin for molecules: property-guided SE(3)-equivariant flow matching
(:mod:`.modality`, entry point ``molecules``) and energy-based diffusion for molecular dynamics
(:mod:`.md_modality`, entry point ``md``)."""

from .md_modality import MDModality
from .modality import MoleculesModality
from .molecule import Molecule, from_rdkit

__all__ = ["MDModality", "Molecule", "MoleculesModality", "from_rdkit"]
