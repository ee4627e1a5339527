"""The ``graphs`` modality: generic graphs and molecular graphs.

Data, files, metrics and plots are complete; the generative models (GDSS, PARD) and therefore
``networks`` / ``fields`` / ``prior_state`` come later.

States (see :mod:`.convert`): ``x`` (N, F) node features (one-hot degree for generic graphs,
one-hot atom tokens for molecules), ``adj`` (N, N) adjacency (0/1, or bond orders 0..3), and
``mask`` (N,) node mask. ``info["kind"]`` says which ("graph" or "molecule").
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import networkx as nx
import torch
from torch import nn

from polydiff import DataBundle, FieldSpec, Modality, State

from .convert import dense_to_graphs, dense_to_mol_graphs, graphs_to_dense, mol_graphs_to_dense
from .data import DATASETS, train_graphs
from .io import is_molecular, read_graphs, write_graphs, write_molecules
from .metrics import graph_metrics, molecule_metrics, smiles_of
from .plot import plot_graphs, plot_molecules

_NO_MODELS = "models come with GDSS/PARD"


class GraphsModality(Modality):
    """Graphs (community, grid, planar, SBM, ego, ENZYMES, your files) and molecular graphs (QM9, ZINC250k, NCI)."""

    name = "graphs"
    description = ("graphs and molecular graphs: generators, GDSS/SPECTRE/QM9/ZINC data, MMD / V.U.N. / "
                   "molecule metrics, graph6 / GraphML / SMILES / SDF files")

    def datasets(self) -> dict[str, Callable[..., DataBundle]]:
        return dict(DATASETS)

    def networks(self) -> dict[str, Callable[..., nn.Module]]:
        raise NotImplementedError(_NO_MODELS)

    def fields(self, info: Mapping[str, Any], **process: Any) -> dict[str, FieldSpec]:
        raise NotImplementedError(_NO_MODELS)

    def prior_state(self, n: int, info: Mapping[str, Any], generator: torch.Generator | None = None,
                    condition: Mapping[str, Any] | None = None) -> dict[str, Any]:
        raise NotImplementedError(_NO_MODELS)

    def describe(self) -> dict[str, Any]:
        try:
            return super().describe()
        except NotImplementedError:
            return {"description": self.description, "datasets": list(self.datasets()), "networks": [],
                    "recipes": {}, "note": _NO_MODELS}

    # -- states <-> objects --
    def to_native(self, state: State, info: Mapping[str, Any]) -> list[nx.Graph]:
        """Dense states -> networkx graphs (molecular graphs when ``info["kind"] == "molecule"``)."""
        mask = state.get("mask")
        if info.get("kind") == "molecule":
            return dense_to_mol_graphs(state["x"], state["adj"], info["atom_types"], mask)
        return dense_to_graphs(state["adj"], mask, drop_isolated=bool(info.get("drop_isolated", False)))

    def from_native(self, objects: Sequence[Any], info: Mapping[str, Any]) -> State:
        max_nodes = info.get("max_nodes")
        if info.get("kind") == "molecule":
            return mol_graphs_to_dense(objects, info["atom_types"], max_nodes)
        return graphs_to_dense(objects, max_nodes, info.get("max_feat_num"))

    def reference(self, data: DataBundle) -> list[nx.Graph]:
        ds = data.test or data.val or data.train
        return list(ds.graphs) if hasattr(ds, "graphs") else super().reference(data)

    # -- files, metrics, plots --
    def write(self, objects: Sequence[Any], out_dir: Path) -> list[Path]:
        graphs = list(objects)
        if is_molecular(graphs):
            return write_molecules(graphs, out_dir)
        return write_graphs(graphs, out_dir)

    def read(self, path: Path) -> list[nx.Graph]:
        return read_graphs(path)

    def evaluate(self, objects: Sequence[Any], reference: Sequence[Any], info: Mapping[str, Any],
                 fcd: bool = False) -> dict[str, float]:
        """Graph MMDs + uniqueness / novelty / V.U.N., or molecule metrics (``fcd=True`` adds FCD)."""
        graphs, reference = list(objects), list(reference)
        train = train_graphs(dict(info))
        if info.get("kind") == "molecule" or is_molecular(graphs):
            return molecule_metrics(graphs, reference, smiles_of(train) if train is not None else None, fcd=fcd)
        return graph_metrics(graphs, reference, train, info.get("validity"))

    def plot(self, objects: Sequence[Any], path: Path) -> Path | None:
        graphs = list(objects)
        return plot_molecules(graphs, path) if is_molecular(graphs) else plot_graphs(graphs, path)
