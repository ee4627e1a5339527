"""networkx graphs and molecular graphs <-> padded dense tensors.

Generic graphs become GDSS's inputs: node features ``x`` (B, N, F) = one-hot degree
(GDSS ``init: deg``, F = ``max_feat_num``, an error if a degree does not fit), adjacency ``adj``
(B, N, N) 0/1 and a node mask ``mask`` (B, N). Molecular graphs (see :mod:`.chem`) become
``x`` (B, N, K) one-hot atom tokens over a vocabulary, ``adj`` (B, N, N) Kekulé bond orders
0..3, and ``mask``; :func:`bond_channels` gives the (B, 4, N, N) one-hot bond channels
(channel 0 = no bond). Padding goes through torch_geometric's ``to_dense_batch`` /
``to_dense_adj``; :func:`graphs_to_pyg` gives ``Data`` objects for message-passing models.
Nodes keep their sorted order (no canonical reordering).
"""

from __future__ import annotations

from collections.abc import Sequence

import networkx as nx
import torch
from torch import Tensor

from .chem import ATOM, BOND


def graphs_to_pyg(graphs: Sequence[nx.Graph], x: Sequence[Tensor] | None = None,
                  edge_value: str | None = None) -> list:
    """torch_geometric ``Data`` objects (both edge directions; ``edge_attr`` = the ``edge_value``
    attribute, default 1) with optional node features ``x``; nodes in sorted order."""
    from torch_geometric.data import Data

    out = []
    for i, g in enumerate(graphs):
        edge_index, edge_attr = _edge_tensors(_edge_list(g, edge_value))
        feats = x[i] if x is not None else None
        out.append(Data(x=feats, edge_index=edge_index, edge_attr=edge_attr, num_nodes=g.number_of_nodes()))
    return out


def _edge_list(g: nx.Graph, edge_value: str | None, offset: int = 0) -> list[tuple[int, int, float]]:
    index = {v: i + offset for i, v in enumerate(sorted(g.nodes()))}
    return [(index[u], index[v], float(d.get(edge_value, 1)) if edge_value else 1.0)
            for u, v, d in g.edges(data=True) if u != v]


def _edge_tensors(pairs: list[tuple[int, int, float]]) -> tuple[Tensor, Tensor]:
    """Both directions: edge_index (2, 2E) and edge_attr (2E,)."""
    t = torch.tensor(pairs, dtype=torch.float64).reshape(-1, 3)
    u, v, w = t[:, 0].long(), t[:, 1].long(), t[:, 2].float()
    return torch.stack([torch.cat([u, v]), torch.cat([v, u])]), torch.cat([w, w])


def _dense(graphs: Sequence[nx.Graph], x: list[Tensor], max_nodes: int | None, edge_value: str | None
           ) -> tuple[Tensor, Tensor, Tensor]:
    """Pad node features and adjacencies with torch_geometric's ``to_dense_batch`` / ``to_dense_adj``
    on one concatenated batch (node offsets, a ``batch`` vector), as ``Batch.from_data_list`` builds it."""
    from torch_geometric.utils import to_dense_adj, to_dense_batch

    sizes = [g.number_of_nodes() for g in graphs]
    n_max = max(sizes, default=0)
    max_nodes = n_max if max_nodes is None else max_nodes
    if n_max > max_nodes:
        raise ValueError(f"a graph has {n_max} nodes, more than max_nodes={max_nodes}")
    pairs, offset = [], 0
    for g, n in zip(graphs, sizes):
        pairs += _edge_list(g, edge_value, offset)
        offset += n
    edge_index, edge_attr = _edge_tensors(pairs)
    b = len(graphs)
    batch = torch.repeat_interleave(torch.arange(b), torch.tensor(sizes, dtype=torch.long))
    feats, mask = to_dense_batch(torch.cat(x) if b else torch.zeros(0, 1), batch, max_num_nodes=max_nodes,
                                 batch_size=b)
    adj = to_dense_adj(edge_index, batch, edge_attr=edge_attr, max_num_nodes=max_nodes, batch_size=b)
    return feats, adj, mask


def degree_features(adj: Tensor, mask: Tensor, max_feat_num: int) -> Tensor:
    """One-hot node degrees (GDSS ``init: deg``) of dense (B, N, N) adjacencies, zero on padding."""
    deg = adj.sum(-1).round().long()
    if deg.numel() and int(deg.max()) >= max_feat_num:
        raise ValueError(f"a node has degree {int(deg.max())}, which does not fit max_feat_num={max_feat_num} "
                         f"(one-hot of degrees 0..{max_feat_num - 1}); raise max_feat_num")
    return torch.nn.functional.one_hot(deg, max_feat_num).float() * mask[..., None].float()


def graphs_to_dense(graphs: Sequence[nx.Graph], max_nodes: int | None = None,
                    max_feat_num: int | None = None) -> dict[str, Tensor]:
    """``{"x": (B, N, F) one-hot degrees, "adj": (B, N, N), "mask": (B, N)}`` of generic graphs.

    ``max_nodes`` defaults to the largest graph, ``max_feat_num`` to the largest degree + 1.
    """
    placeholder = [torch.zeros(g.number_of_nodes(), 1) for g in graphs]
    _, adj, mask = _dense(graphs, placeholder, max_nodes, None)
    if max_feat_num is None:
        max_feat_num = int(adj.sum(-1).max()) + 1 if adj.numel() else 1
    return {"x": degree_features(adj, mask, max_feat_num), "adj": adj, "mask": mask.float()}


def dense_to_graphs(adj: Tensor, mask: Tensor | None = None, threshold: float = 0.5,
                    drop_isolated: bool = False) -> list[nx.Graph]:
    """Graphs from dense adjacencies: edge where ``adj >= threshold`` (upper triangle), nodes
    where ``mask > 0.5``, relabelled 0..n-1. ``drop_isolated=True`` follows GDSS's
    ``adjs_to_graphs`` (isolated nodes removed, an empty result keeps one node)."""
    adj = adj.detach().cpu()
    mask = torch.ones(adj.shape[:2]) if mask is None else mask.detach().cpu()
    out = []
    for a, m in zip(adj, mask):
        keep = torch.nonzero(m > 0.5).flatten()
        sub = a[keep][:, keep]
        g = nx.Graph()
        g.add_nodes_from(range(len(keep)))
        iu = torch.triu_indices(len(keep), len(keep), offset=1)
        on = sub[iu[0], iu[1]] >= threshold
        g.add_edges_from(zip(iu[0][on].tolist(), iu[1][on].tolist()))
        if drop_isolated:
            g.remove_nodes_from(list(nx.isolates(g)))
            g = nx.convert_node_labels_to_integers(g)
            if g.number_of_nodes() == 0:
                g.add_node(0)
        out.append(g)
    return out


def mol_graphs_to_dense(graphs: Sequence[nx.Graph], atom_types: Sequence[str],
                        max_nodes: int | None = None) -> dict[str, Tensor]:
    """``{"x": (B, N, K) one-hot atom tokens, "adj": (B, N, N) bond orders, "mask": (B, N)}``."""
    index = {t: i for i, t in enumerate(atom_types)}
    feats = []
    for g in graphs:
        tokens = [g.nodes[v].get(ATOM) for v in sorted(g.nodes())]
        missing = sorted({t for t in tokens if t not in index}, key=str)
        if missing:
            raise ValueError(f"atom token(s) {missing} not in the vocabulary {list(atom_types)}")
        ids = torch.tensor([index[t] for t in tokens], dtype=torch.long)
        feats.append(torch.nn.functional.one_hot(ids, len(atom_types)).float())
    x, adj, mask = _dense(graphs, feats, max_nodes, BOND)
    return {"x": x, "adj": adj, "mask": mask.float()}


def bond_channels(adj: Tensor, num_bond_types: int = 3) -> Tensor:
    """(B, 1 + T, N, N) one-hot of rounded bond orders (channel 0 = no bond) from (B, N, N)."""
    order = adj.round().clamp(0, num_bond_types).long()
    return torch.nn.functional.one_hot(order, num_bond_types + 1).permute(0, 3, 1, 2).float()


def dense_to_mol_graphs(x: Tensor, adj: Tensor, atom_types: Sequence[str],
                        mask: Tensor | None = None) -> list[nx.Graph]:
    """Molecular graphs from dense tensors: atom = argmax of ``x``; bond order = ``adj`` rounded
    to 0..3 (GDSS's ``quantize_mol`` thresholds 0.5 / 1.5 / 2.5); nodes where ``mask > 0.5``
    (default: rows of ``x`` with a positive entry)."""
    x, adj = x.detach().cpu(), adj.detach().cpu()
    mask = (x.amax(-1) > 0) if mask is None else mask.detach().cpu() > 0.5
    orders = adj.round().clamp(0, 3).long()
    out = []
    for xi, oi, mi in zip(x, orders, mask):
        keep = torch.nonzero(mi).flatten()
        g = nx.Graph()
        for new, old in enumerate(keep.tolist()):
            g.add_node(new, **{ATOM: atom_types[int(xi[old].argmax())]})
        sub = oi[keep][:, keep]
        iu = torch.triu_indices(len(keep), len(keep), offset=1)
        vals = sub[iu[0], iu[1]]
        for i, j, o in zip(iu[0].tolist(), iu[1].tolist(), vals.tolist()):
            if o > 0:
                g.add_edge(i, j, **{BOND: int(o)})
        out.append(g)
    return out
