"""polydiff-graphs: the ``graphs`` modality plugin (generic graphs and molecular graphs).

- :mod:`.data`: embedded generators (community-small, grid, planar, SBM, ego-small), loaders of
  ``shared/`` data (GDSS, SPECTRE, QM9, ZINC250k) and RDKit's bundled NCI molecules, splits,
  dataset factories;
- :mod:`.chem`: molecules <-> molecular graphs (atom tokens, Kekulé bond orders), SMILES / SDF reading;
- :mod:`.convert`: graphs <-> padded dense tensors (torch_geometric batching);
- :mod:`.metrics`: GDSS MMDs, ORCA-equivalent orbits, V.U.N., NSPDK, molecule metrics;
- :mod:`.io`: graph6 / GraphML / edge lists / SMILES / SDF, atomic writes;
- :mod:`.plot`: PNG grids of graphs and molecules;
- :mod:`.models`: GDSS (score SDEs on node features and adjacency, the S4 solver registered as
  the sampler ``s4``) and PARD (structural partial order, block-wise discrete diffusion);
- :mod:`.generation`: sampling any graphs checkpoint with the recipe's defaults (PARD block by
  block through ``PardNet.generate``, which ``polydiff sample`` also calls).
"""

from __future__ import annotations

from .chem import graph_smiles, graph_to_mol, mol_to_graph, read_sdf, read_smiles, smiles_to_graphs
from .convert import (
    bond_channels,
    degree_features,
    dense_to_graphs,
    dense_to_mol_graphs,
    graphs_to_dense,
    graphs_to_pyg,
    mol_graphs_to_dense,
)
from .data import (
    DATASETS,
    GENERATORS,
    GraphStates,
    community_graphs,
    ego_graphs,
    graphs_from_json,
    grid_graphs,
    load_gdss_graphs,
    load_nci,
    load_qm9,
    load_spectre_community,
    load_zinc250k,
    planar_graphs,
    sbm_graphs,
    split_indices,
)
from .generation import generate_graphs, is_pard
from .io import read_graphs, write_graphs, write_molecules
from .metrics import graph_metrics, graph_mmds, molecule_metrics, nspdk_mmd, orbit_counts, vun
from .modality import GraphsModality
from .models import GDSSNet, PardNet, block_order, gdss_network, pard_network
from .plot import plot_graphs, plot_molecules

__version__ = "0.1.0"

__all__ = [
    "DATASETS", "GENERATORS", "GDSSNet", "GraphStates", "GraphsModality", "PardNet", "block_order", "bond_channels",
    "community_graphs", "degree_features", "dense_to_graphs", "dense_to_mol_graphs", "ego_graphs", "gdss_network",
    "generate_graphs", "graph_metrics", "graph_mmds",
    "graph_smiles", "graph_to_mol", "graphs_from_json", "graphs_to_dense", "graphs_to_pyg", "grid_graphs", "is_pard",
    "load_gdss_graphs", "load_nci", "load_qm9", "load_spectre_community", "load_zinc250k",
    "mol_graphs_to_dense", "mol_to_graph", "molecule_metrics", "nspdk_mmd", "orbit_counts", "pard_network",
    "planar_graphs", "plot_graphs", "plot_molecules", "read_graphs", "read_sdf", "read_smiles", "sbm_graphs",
    "smiles_to_graphs", "split_indices", "vun", "write_graphs", "write_molecules",
]
