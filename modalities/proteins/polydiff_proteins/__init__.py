"""polydiff-proteins: the ``proteins`` modality plugin (protein backbones as residue frames).

- :mod:`.geometry`: ideal backbone geometry, NeRF chain building, frames from N / CA / C atoms
  and full N, CA, C, O backbones back from frames; :class:`Backbone`;
- :mod:`.synthetic`: the embedded default data (helix bundles, hairpins, mixed folds built
  from sampled dihedrals);
- :mod:`.pdbio`: PDB / mmCIF reading (biotite) with per-residue reports, PDB writing;
- :mod:`.nets`: the IPA frame network and the CA-only EGNN baseline;
- :mod:`.metrics`: geometry, Ramachandran, DSSP / P-SEA, radius of gyration, TM-score
  diversity, clusters and novelty, the designability hook;
- :mod:`.scaffold`: motif scaffolding; :mod:`.modality`: the plugin class.
"""

from __future__ import annotations

__all__ = ["Backbone", "ProteinsModality"]


def __getattr__(name: str):
    if name == "ProteinsModality":
        from .modality import ProteinsModality

        return ProteinsModality
    if name == "Backbone":
        from .geometry import Backbone

        return Backbone
    raise AttributeError(name)
