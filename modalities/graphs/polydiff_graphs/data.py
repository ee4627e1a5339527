"""Graph and molecule data: embedded generators, loaders for ``shared/`` and users' files,
splits, and the dataset factories of the ``graphs`` modality.

Embedded generators (our own code, literature parameters, numpy ``default_rng(seed)``, fully
deterministic):

- ``community_small``: 2 communities of ``max_nodes // 2`` nodes, ``max_nodes`` uniform in
  12..20, each community G(size, 0.7), every cross pair bridged with probability
  ``p_inter * 2 / ((c - 1) * size)`` (p_inter 0.05), at least one bridge; 100 graphs
  (GraphRNN / GDSS).
- ``grid``: ``grid_2d_graph(m, n)`` for all 100 pairs m, n in 10..19 (GraphRNN), shuffled.
- ``planar``: 64 uniform points in the unit square, Delaunay triangulation; 200 graphs (SPECTRE).
- ``sbm``: 2..5 communities of 20..40 nodes, p_intra 0.3, p_inter 0.005, redrawn until
  connected; 200 graphs (SPECTRE).
- ``ego_small``: 1-hop ego graphs with 4..18 nodes around distinct random centres of one
  Holme-Kim power-law-cluster graph (2,000 nodes, m 2, triad probability 0.5): heavy-tailed
  sizes and triangles like GraphRNN's Citeseer ego-small, which we do not ship; 200 graphs.

Splits: ``"gdss"`` = the first 20 % (``int(0.2 n)``) of the list is the test set, the rest
train (GDSS ``test_split 0.2``; no validation set); ``"spectre"`` = a seeded permutation, 20 %
(rounded) test, then 80/20 train/validation of the rest (SPECTRE / DiGress / PARD sizes). A split
that would leave the test (or the training) split empty is an error naming the dataset, its size
and the smallest size that splits, never a silent evaluation against the training graphs.
Self-loops and repeated edges, in files or in graphs given in memory, are dropped with a warning
that counts them (the graphs here are simple).

Shared data (``shared/data``, see its README) is found through ``POLYDIFF_SHARED`` (default: the
``shared`` folder beside the repository root).
"""

from __future__ import annotations

import functools
import json
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
from rdkit import Chem, RDConfig
from scipy.spatial import Delaunay
from torch import Tensor

from polydiff.plugin import DataBundle, TensorStates, shared_file

from .chem import (
    ATOM,
    mol_to_graph,
    origin_of,
    quiet_rdkit,
    read_sdf,
    read_smiles_column,
    set_origin,
    smiles_to_graphs,
    token_sort_key,
)
from .convert import graphs_to_dense, mol_graphs_to_dense
from .io import MAX_NODES, simple_graphs, warn_dropped

ZINC_ELEMENTS = ("C", "N", "O", "F", "P", "S", "Cl", "Br", "I")

# -- locating shared data -----------------------------------------------------------------------


# -- generators ---------------------------------------------------------------------------------


def _gnp_edges(rng: np.random.Generator, n: int, p: float, offset: int = 0) -> list[tuple[int, int]]:
    iu = np.triu_indices(n, 1)
    on = rng.random(len(iu[0])) < p
    return list(zip((iu[0][on] + offset).tolist(), (iu[1][on] + offset).tolist()))


def community_graphs(num_graphs: int = 100, min_nodes: int = 12, max_nodes: int = 20, communities: int = 2,
                     p_intra: float = 0.7, p_inter: float = 0.05, seed: int = 0) -> list[nx.Graph]:
    """Community-small graphs (GraphRNN / GDSS parameters; see module doc)."""
    rng = np.random.default_rng(seed)
    graphs = []
    for _ in range(num_graphs):
        total = int(rng.integers(min_nodes, max_nodes + 1))
        size = total // communities
        g = nx.Graph()
        g.add_nodes_from(range(size * communities))
        for c in range(communities):
            g.add_edges_from(_gnp_edges(rng, size, p_intra, c * size))
        p_bridge = p_inter * 2 / ((communities - 1) * size)
        for a in range(communities):
            for b in range(a + 1, communities):
                hits = np.argwhere(rng.random((size, size)) < p_bridge)
                if len(hits) == 0:
                    hits = rng.integers(0, size, size=(1, 2))
                g.add_edges_from((a * size + int(i), b * size + int(j)) for i, j in hits)
        graphs.append(g)
    return graphs


def grid_graphs(num_graphs: int | None = None, min_side: int = 10, max_side: int = 19, seed: int = 0) -> list[nx.Graph]:
    """2-D grids ``grid_2d_graph(m, n)``: all (m, n) pairs in a seeded order (``num_graphs`` None),
    else ``num_graphs`` pairs drawn uniformly."""
    rng = np.random.default_rng(seed)
    sides = range(min_side, max_side + 1)
    if num_graphs is None:
        pairs = [(m, n) for m in sides for n in sides]
        pairs = [pairs[i] for i in rng.permutation(len(pairs))]
    else:
        pairs = [tuple(int(s) for s in rng.integers(min_side, max_side + 1, size=2)) for _ in range(num_graphs)]
    return [nx.convert_node_labels_to_integers(nx.grid_2d_graph(m, n), ordering="sorted") for m, n in pairs]


def planar_graphs(num_graphs: int = 200, num_nodes: int = 64, seed: int = 0) -> list[nx.Graph]:
    """Delaunay triangulations of ``num_nodes`` uniform random points (SPECTRE planar)."""
    rng = np.random.default_rng(seed)
    graphs = []
    for _ in range(num_graphs):
        tri = Delaunay(rng.random((num_nodes, 2)))
        g = nx.Graph()
        g.add_nodes_from(range(num_nodes))
        for a, b, c in tri.simplices.tolist():
            g.add_edges_from([(a, b), (b, c), (a, c)])
        graphs.append(g)
    return graphs


def sbm_graphs(num_graphs: int = 200, min_communities: int = 2, max_communities: int = 5, min_size: int = 20,
               max_size: int = 40, p_intra: float = 0.3, p_inter: float = 0.005, seed: int = 0,
               connected: bool = True) -> list[nx.Graph]:
    """Stochastic block model graphs (SPECTRE SBM), redrawn until connected when ``connected``."""
    rng = np.random.default_rng(seed)
    graphs = []
    while len(graphs) < num_graphs:
        k = int(rng.integers(min_communities, max_communities + 1))
        sizes = rng.integers(min_size, max_size + 1, size=k)
        block = np.repeat(np.arange(k), sizes)
        n = int(sizes.sum())
        iu = np.triu_indices(n, 1)
        p = np.where(block[iu[0]] == block[iu[1]], p_intra, p_inter)
        on = rng.random(len(p)) < p
        g = nx.Graph()
        g.add_nodes_from(range(n))
        g.add_edges_from(zip(iu[0][on].tolist(), iu[1][on].tolist()))
        if not connected or nx.is_connected(g):
            graphs.append(g)
    return graphs


def holme_kim_graph(n: int, m: int, p: float, rng: np.random.Generator) -> nx.Graph:
    """Power-law graph with clustering (Holme & Kim, *Phys. Rev. E* 2002): each new node makes
    one preferential link, then ``m - 1`` more, each a triad closure with probability ``p``."""
    g = nx.complete_graph(m + 1)
    ends = [v for e in g.edges() for v in e]          # node repeated once per incident edge
    for new in range(m + 1, n):
        targets: list[int] = []
        last = ends[rng.integers(len(ends))]
        targets.append(last)
        while len(targets) < m:
            nbrs = [u for u in g[last] if u not in targets]
            if nbrs and rng.random() < p:
                t = nbrs[rng.integers(len(nbrs))]
            else:
                t = ends[rng.integers(len(ends))]
                if t in targets:
                    continue
            targets.append(t)
            last = t
        for t in targets:
            g.add_edge(new, t)
            ends += [new, t]
    return g


def ego_graphs(num_graphs: int = 200, min_nodes: int = 4, max_nodes: int = 18, base_nodes: int = 2000,
               m: int = 2, p_triad: float = 0.5, seed: int = 0) -> list[nx.Graph]:
    """1-hop ego graphs of ``min_nodes..max_nodes`` nodes from a Holme-Kim graph (see module doc)."""
    rng = np.random.default_rng(seed)
    base = holme_kim_graph(base_nodes, m, p_triad, rng)
    centres = [v for v in base if min_nodes <= base.degree(v) + 1 <= max_nodes]
    if len(centres) < num_graphs:
        raise ValueError(f"only {len(centres)} ego centres of {min_nodes}..{max_nodes} nodes; raise base_nodes")
    chosen = rng.choice(len(centres), size=num_graphs, replace=False)
    return [nx.convert_node_labels_to_integers(nx.ego_graph(base, centres[i], radius=1), ordering="sorted")
            for i in chosen.tolist()]


GENERATORS: dict[str, Callable[..., list[nx.Graph]]] = {
    "community_small": community_graphs, "grid": grid_graphs, "planar": planar_graphs, "sbm": sbm_graphs,
    "ego_small": ego_graphs}


# -- splits -------------------------------------------------------------------------------------


def split_indices(n: int, scheme: str = "gdss", seed: int = 0, test_fraction: float = 0.2,
                  val_fraction: float = 0.2, shuffle: bool | None = None, dataset: str = "the dataset",
                  require_test: bool = True) -> dict[str, list[int]]:
    """Indices of ``train`` / ``val`` / ``test`` (see module doc; ``val`` empty for ``"gdss"``).

    ``shuffle`` (default: False for gdss, True for spectre) permutes with ``seed`` first. A
    split that leaves no training graphs, or (``require_test``) no test graphs, is a
    ``ValueError`` naming ``dataset``, its size and the smallest size that splits: evaluation
    would otherwise compare samples against the training graphs.
    """
    if scheme not in ("gdss", "spectre"):
        raise ValueError(f"unknown split {scheme!r}; allowed: gdss, spectre")
    if not (0 <= test_fraction < 1 and 0 <= val_fraction < 1):
        raise ValueError(f"{dataset}: test_fraction and val_fraction must lie in [0, 1), got {test_fraction} and "
                         f"{val_fraction}")
    sizes = _split_sizes(n, scheme, test_fraction, val_fraction)
    if sizes[0] == 0 or (require_test and sizes[2] == 0):
        empty = "training" if sizes[0] == 0 else "test"
        need = next((m for m in range(n + 1, 100_000) if _splits_nonempty(m, scheme, test_fraction, val_fraction)),
                    None)
        fix = f"need at least {need} graphs for it" if need else "raise test_fraction"
        raise ValueError(f"{dataset} has {n} graph(s): the {scheme!r} split with test_fraction={test_fraction} "
                         f"leaves the {empty} split empty; {fix}")
    shuffle = scheme == "spectre" if shuffle is None else shuffle
    order = np.random.default_rng(seed).permutation(n).tolist() if shuffle else list(range(n))
    n_train, n_val, _ = sizes
    if scheme == "gdss":
        return {"train": order[n - n_train:], "val": [], "test": order[:n - n_train]}
    return {"train": order[:n_train], "val": order[n_train:n_train + n_val], "test": order[n_train + n_val:]}


def _split_sizes(n: int, scheme: str, test_fraction: float, val_fraction: float) -> tuple[int, int, int]:
    """``(train, val, test)`` sizes of a split of ``n`` items (see the module doc)."""
    if scheme == "gdss":
        k = int(test_fraction * n)
        return n - k, 0, k
    n_test = round(test_fraction * n)
    n_train = round((1 - val_fraction) * (n - n_test))
    return n_train, n - n_test - n_train, n_test


def _splits_nonempty(n: int, scheme: str, test_fraction: float, val_fraction: float) -> bool:
    train, _, test = _split_sizes(n, scheme, test_fraction, val_fraction)
    return train > 0 and test > 0


# -- loaders ------------------------------------------------------------------------------------


def _json_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _json_graph(path: Path, i: int, item: Any) -> tuple[nx.Graph, int]:
    """Graph ``i`` of a graphs JSON file and its number of self-loops (dropped); a ValueError
    ``FILE: graph i: ...`` naming the field at fault otherwise."""
    where = f"{path}: graph {i}"
    if not isinstance(item, dict):
        raise ValueError(f'{where}: expected an object {{"n": ..., "edges": [[u, v], ...]}}, got {item!r:.40}')
    for key in ("n", "edges"):
        if key not in item:
            raise ValueError(f'{where}: missing "{key}"')
    n = item["n"]
    if not _json_int(n) or not 0 <= n <= MAX_NODES:
        raise ValueError(f'{where}: "n" must be an integer 0..{MAX_NODES:,}, got {n!r:.40}')
    if not isinstance(item["edges"], list):
        raise ValueError(f'{where}: "edges" must be a list of [u, v] pairs, got {item["edges"]!r:.40}')
    edges = []
    for k, e in enumerate(item["edges"]):
        if not isinstance(e, list) or len(e) != 2 or not all(_json_int(v) for v in e):
            raise ValueError(f'{where}: "edges"[{k}] must be a pair [u, v] of node ids, got {e!r:.40}')
        if not (0 <= e[0] < n and 0 <= e[1] < n):
            raise ValueError(f'{where}: "edges"[{k}] {e} is outside nodes 0..{n - 1}')
        edges.append((e[0], e[1]))
    g = nx.Graph()
    g.add_nodes_from(range(n))
    if "node_labels" in item:
        labels = item["node_labels"]
        if not isinstance(labels, list) or len(labels) != n:
            got = f"{len(labels)} labels" if isinstance(labels, list) else repr(labels)[:40]
            raise ValueError(f'{where}: "node_labels" must be a list of n={n} labels, got {got}')
        nx.set_node_attributes(g, dict(enumerate(labels)), "label")
    if "graph_label" in item:
        g.graph["label"] = item["graph_label"]
    g.add_edges_from((u, v) for u, v in edges if u != v)
    return set_origin(g, where), sum(u == v for u, v in edges)


def graphs_from_json(path: str | Path) -> list[nx.Graph]:
    """Graphs of a ``{"graphs": [{"n", "edges", ...}]}`` file (shared data and fixtures format);
    ENZYMES-style ``node_labels`` / ``graph_label`` become the ``label`` attributes. Errors are
    one line naming the file, the graph (counted from 0) and the field: ``FILE: graph 5:
    missing "n"``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such JSON graphs file")
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        items = json.loads(text)["graphs"]
    except json.JSONDecodeError as err:
        cut = "; the document ends early, so the file looks cut off" if err.pos >= len(text.rstrip()) else ""
        raise ValueError(f"{path}:{err.lineno}: not valid JSON ({err.msg}){cut}") from None
    except (KeyError, TypeError, IndexError):
        raise ValueError(f'{path}: expected a JSON object {{"graphs": [{{"n": ..., "edges": ...}}, ...]}}') from None
    except RecursionError:
        raise ValueError(f"{path}: not readable JSON (nested too deeply)") from None
    if not isinstance(items, list):
        raise ValueError(f'{path}: "graphs" must be a list of graphs, got {type(items).__name__}')
    graphs, loops = [], []
    for i, item in enumerate(items):
        g, k = _json_graph(path, i, item)
        if k:
            loops.append((i, k))
        graphs.append(g)
    warn_dropped(path, loops, 0, stacklevel=3)
    return graphs


GDSS_FILES = {"community_small": "community_small.json", "ego_small": "ego_small.json", "grid": "grid.json",
              "enzymes": "ENZYMES.json"}


def load_gdss_graphs(name: str) -> list[nx.Graph]:
    """GDSS's benchmark graphs from ``shared/data/graphs_gdss`` (file order kept)."""
    key = name.lower()
    if key not in GDSS_FILES:
        raise ValueError(f"unknown GDSS graph set {name!r}; allowed: {', '.join(GDSS_FILES)}")
    return graphs_from_json(shared_file("data", "graphs_gdss", GDSS_FILES[key]))


def load_spectre_community() -> list[nx.Graph]:
    """SPECTRE's community-small (100 graphs, 12-20 nodes)."""
    return graphs_from_json(shared_file("data", "graphs_spectre", "community_12_21_100.json"))


QM9_FILES = {"sample20k": "qm9_sample20k.csv", "all": "qm9_smiles_all_lapool.csv"}
ZINC_FILES = {"val": "zinc250k_chemsmc_val.csv", "test": "zinc250k_chemsmc_test.csv",
              "original": "zinc250k_first1001_original_props.csv"}


def load_smiles_graphs(path: str | Path, column: str | None = None,
                       limit: int | None = None) -> tuple[list[nx.Graph], int]:
    """Molecular graphs from a SMILES (.smi/.csv) or SDF file: ``(graphs, n_invalid_skipped)``."""
    path = Path(path)
    if path.suffix.lower() in (".sdf", ".sd"):
        graphs, bad = read_sdf(path)
        return graphs[:limit] if limit else graphs, bad
    smiles, lines = read_smiles_column(path, column)
    if limit:
        smiles, lines = smiles[:limit], lines[:limit]
    return smiles_to_graphs(smiles, str(path), lines)


def load_qm9(file: str = "sample20k", limit: int | None = None) -> tuple[list[nx.Graph], int]:
    """QM9 molecular graphs from ``shared/data/qm9`` (``sample20k`` or ``all``)."""
    if file not in QM9_FILES:
        raise ValueError(f"unknown QM9 file {file!r}; allowed: {', '.join(QM9_FILES)}")
    return load_smiles_graphs(shared_file("data", "qm9", QM9_FILES[file]), limit=limit)


def load_zinc250k(split: str = "val", limit: int | None = None) -> tuple[list[nx.Graph], int]:
    """ZINC250k molecular graphs from ``shared/data/zinc250k`` (``val``, ``test`` or ``original``)."""
    if split not in ZINC_FILES:
        raise ValueError(f"unknown ZINC250k file {split!r}; allowed: {', '.join(ZINC_FILES)}")
    return load_smiles_graphs(shared_file("data", "zinc250k", ZINC_FILES[split]), limit=limit)


def nci_smiles_path() -> Path:
    """RDKit's bundled NCI sample (``RDDataDir/NCI/first_5K.smi``)."""
    return Path(RDConfig.RDDataDir) / "NCI" / "first_5K.smi"


def load_nci(max_atoms: int = 38, elements: Sequence[str] = ZINC_ELEMENTS, limit: int | None = None
             ) -> tuple[list[nx.Graph], int]:
    """The embedded molecules: RDKit's NCI sample, largest fragment of each, kept when it has
    2..``max_atoms`` heavy atoms of ``elements`` only. Returns ``(graphs, n_invalid_skipped)``."""
    smiles, lines = read_smiles_column(nci_smiles_path())
    graphs, bad = [], []
    allowed = set(elements)
    with quiet_rdkit():
        for s, line in zip(smiles, lines):
            mol = Chem.MolFromSmiles(s)
            if mol is None:
                bad.append(line)
                continue
            mol = max(Chem.GetMolFrags(mol, asMols=True), key=lambda m: m.GetNumAtoms())
            if not 2 <= mol.GetNumAtoms() <= max_atoms or {a.GetSymbol() for a in mol.GetAtoms()} - allowed:
                continue
            try:
                graphs.append(mol_to_graph(mol))
            except ValueError:
                bad.append(line)
            if limit and len(graphs) >= limit:
                break
    if bad:
        warnings.warn(f"skipped {len(bad)} invalid SMILES in {nci_smiles_path()} (lines {bad[:8]}...)", stacklevel=2)
    return graphs, len(bad)


def load_graph_file(path: str | Path) -> list[nx.Graph]:
    """Users' graphs by extension: ``.g6`` / ``.graph6``, ``.graphml``, ``.json`` (shared format),
    else an edge list (see :func:`polydiff_graphs.io.read_edge_list`); for a directory, see
    :func:`polydiff_graphs.io.read_graphs`."""
    from .io import read_graphs

    return read_graphs(path)


# -- datasets -----------------------------------------------------------------------------------


class GraphStates(TensorStates):
    """Padded dense states of a list of graphs, with the graphs themselves (``.graphs``)."""

    def __init__(self, graphs: Sequence[nx.Graph], tensors: dict[str, Tensor]) -> None:
        if any(len(v) != len(graphs) for v in tensors.values()):
            raise ValueError(f"{len(graphs)} graphs but states of lengths {({k: len(v) for k, v in tensors.items()})}")
        self.graphs = list(graphs)
        self.tensors = tensors

    def __len__(self) -> int:
        return len(self.graphs)


def _where(dataset: str, source: dict[str, Any]) -> str:
    """``dataset 'name'`` for messages, with the user's file when there is one."""
    path = ((source or {}).get("options") or {}).get("path")
    return f"dataset {dataset!r}" + (f" ({path})" if path else "")


def _size_histogram(graphs: Sequence[nx.Graph]) -> list[int]:
    sizes = [g.number_of_nodes() for g in graphs]
    return np.bincount(sizes, minlength=1).tolist() if sizes else [0]


def _bundle(graphs: Sequence[nx.Graph], split: dict[str, list[int]], info: dict[str, Any],
            to_dense: Callable[[Sequence[nx.Graph]], dict[str, Tensor]]) -> DataBundle:
    parts = {}
    for name in ("train", "val", "test"):
        items = [graphs[i] for i in split[name]]
        parts[name] = GraphStates(items, to_dense(items)) if items else None
    if parts["train"] is None:
        raise ValueError(f"dataset {info['dataset']!r}: the split left no training graphs ({len(graphs)} in all)")
    info = {**info, "splits": {k: len(v) for k, v in split.items()},
            "node_count_hist": _size_histogram(parts["train"].graphs)}
    return DataBundle(parts["train"], parts["val"], parts["test"], info)


def graph_bundle(graphs: Sequence[nx.Graph], dataset: str, source: dict[str, Any], split: str = "gdss",
                 seed: int = 0, test_fraction: float = 0.2, val_fraction: float = 0.2, shuffle: bool | None = None,
                 max_nodes: int | None = None, max_feat_num: int | None = None, validity: str | None = None,
                 drop_isolated: bool = False) -> DataBundle:
    """DataBundle of generic graphs: states ``x`` (one-hot degree), ``adj``, ``mask``."""
    if not graphs:
        raise ValueError(f"dataset {dataset!r} has no graphs")
    where = _where(dataset, source)
    origins = [origin_of(g) for g in graphs]
    graphs = [nx.convert_node_labels_to_integers(g, ordering="sorted") for g in simple_graphs(graphs, where)]
    n_max = max(g.number_of_nodes() for g in graphs)
    d_max = max((d for g in graphs for _, d in g.degree()), default=0)
    max_nodes = max_nodes or n_max
    max_feat_num = max_feat_num or d_max + 1
    if n_max > max_nodes or d_max >= max_feat_num:
        too = [f"max_nodes={max_nodes}"] if n_max > max_nodes else []
        too += [f"max_feat_num={max_feat_num} (it must exceed the largest degree)"] if d_max >= max_feat_num else []
        i = next(i for i, g in enumerate(graphs)
                 if g.number_of_nodes() > max_nodes or max((d for _, d in g.degree()), default=0) >= max_feat_num)
        big, name = graphs[i], origins[i] or f"graph {i}"
        raise ValueError(f"{where}: graphs have up to {n_max} nodes and degree {d_max}; {' and '.join(too)} "
                         f"{'is' if len(too) == 1 else 'are'} too small (first too large: {name}, "
                         f"{big.number_of_nodes()} nodes, degree {max((d for _, d in big.degree()), default=0)})")
    info = {"dataset": dataset, "kind": "graph", "source": source, "max_nodes": max_nodes,
            "max_feat_num": max_feat_num, "split": split, "validity": validity, "drop_isolated": drop_isolated}
    idx = split_indices(len(graphs), split, seed, test_fraction, val_fraction, shuffle, where)
    return _bundle(graphs, idx, info, lambda gs: graphs_to_dense(gs, max_nodes, max_feat_num))


def atom_vocabulary(graphs: Sequence[nx.Graph]) -> list[str]:
    """Atom tokens present in molecular graphs, by atomic number then charge."""
    return sorted({d[ATOM] for g in graphs for _, d in g.nodes(data=True)}, key=token_sort_key)


def molecule_bundle(graphs: Sequence[nx.Graph], dataset: str, source: dict[str, Any], skipped: int = 0,
                    split: str = "gdss", seed: int = 0, test_fraction: float = 0.1, val_fraction: float = 0.0,
                    shuffle: bool = True, max_nodes: int | None = None, atom_types: Sequence[str] | None = None,
                    test_graphs: Sequence[nx.Graph] | None = None) -> DataBundle:
    """DataBundle of molecular graphs: states ``x`` (one-hot atom tokens), ``adj`` (bond orders), ``mask``.

    ``test_graphs`` given: it is the test set and ``graphs`` are split into train / val only.
    """
    if not graphs:
        raise ValueError(f"dataset {dataset!r} has no molecules")
    where = _where(dataset, source)
    if test_graphs is not None and not test_graphs:
        raise ValueError(f"{where} has no test molecules: evaluation needs a held-out set")
    origins = [origin_of(g) for g in [*graphs, *(test_graphs or [])]]
    graphs = simple_graphs(graphs, where)
    test_graphs = simple_graphs(test_graphs, f"{where} (test)") if test_graphs is not None else None
    every = list(graphs) + list(test_graphs or [])
    atom_types = list(atom_types) if atom_types else atom_vocabulary(every)
    n_max = max(g.number_of_nodes() for g in every)
    max_nodes = max_nodes or n_max
    if n_max > max_nodes:
        i = next(i for i, g in enumerate(every) if g.number_of_nodes() > max_nodes)
        name = origins[i] or f"molecule {i}"
        raise ValueError(f"{where}: molecules have up to {n_max} heavy atoms; max_nodes={max_nodes} is too small "
                         f"(first too large: {name}, {every[i].number_of_nodes()} heavy atoms)")
    info = {"dataset": dataset, "kind": "molecule", "source": source, "max_nodes": max_nodes,
            "atom_types": atom_types, "num_bond_types": 3, "split": split, "skipped_invalid": skipped}
    if test_graphs is None:
        idx = split_indices(len(graphs), split, seed, test_fraction, val_fraction, shuffle, where)
    else:
        inner = split_indices(len(graphs), "gdss", seed, val_fraction, 0.0, shuffle, where, require_test=False)
        n = len(graphs)
        idx = {"train": inner["train"], "val": inner["test"], "test": list(range(n, n + len(test_graphs)))}
        graphs = every
    return _bundle(list(graphs), idx, info, lambda gs: mol_graphs_to_dense(gs, atom_types, max_nodes))


def _generated(name: str) -> Callable[..., DataBundle]:
    generator = GENERATORS[name]
    defaults = {"community_small": ("gdss", None), "grid": ("gdss", None), "ego_small": ("gdss", None),
                "planar": ("spectre", "planar"), "sbm": ("spectre", "sbm")}
    default_split, validity = defaults[name]

    def factory(num_graphs: int | None = None, seed: int = 0, split: str = default_split, split_seed: int = 0,
                max_nodes: int | None = None, max_feat_num: int | None = None, **generator_options: Any) -> DataBundle:
        opts = dict(generator_options, seed=seed)
        if num_graphs is not None:
            opts["num_graphs"] = num_graphs
        source = {"name": name, "options": {"num_graphs": num_graphs, "seed": seed, "split": split,
                                            "split_seed": split_seed, "max_nodes": max_nodes,
                                            "max_feat_num": max_feat_num, **generator_options}}
        return graph_bundle(generator(**opts), name, source, split, split_seed, max_nodes=max_nodes,
                            max_feat_num=max_feat_num, validity=validity)

    factory.__name__ = name
    factory.__doc__ = f"Embedded generated {name} graphs: {generator.__doc__.splitlines()[0]}"
    return factory


def gdss_dataset(name: str) -> Callable[..., DataBundle]:
    """Factory of a GDSS benchmark from shared data (GDSS split: first 20 % test)."""

    def factory(split: str = "gdss", seed: int = 0, max_nodes: int | None = None,
                max_feat_num: int | None = None) -> DataBundle:
        source = {"name": f"gdss_{name}", "options": {"split": split, "seed": seed, "max_nodes": max_nodes,
                                                      "max_feat_num": max_feat_num}}
        return graph_bundle(load_gdss_graphs(name), f"gdss_{name}", source, split, seed, max_nodes=max_nodes,
                            max_feat_num=max_feat_num)

    factory.__name__ = f"gdss_{name}"
    factory.__doc__ = f"GDSS's {name} graphs from shared/data/graphs_gdss"
    return factory


def spectre_community(split: str = "spectre", seed: int = 0, max_nodes: int | None = None,
                      max_feat_num: int | None = None) -> DataBundle:
    """SPECTRE's community-small from shared/data/graphs_spectre (SPECTRE split)."""
    source = {"name": "spectre_community", "options": {"split": split, "seed": seed, "max_nodes": max_nodes,
                                                       "max_feat_num": max_feat_num}}
    return graph_bundle(load_spectre_community(), "spectre_community", source, split, seed, max_nodes=max_nodes,
                        max_feat_num=max_feat_num)


def qm9(file: str = "sample20k", limit: int | None = None, seed: int = 0, test_fraction: float = 0.1,
        val_fraction: float = 0.0, atom_types: Sequence[str] | None = None) -> DataBundle:
    """QM9 molecules from shared/data/qm9 (random ``test_fraction`` test split: GDSS's
    ``valid_idx_qm9`` indexes a file we do not have). The atom vocabulary comes from the data:
    the DeepChem SMILES keep zwitterions, so besides C, N, O, F it holds N+ and O-."""
    atom_types = list(atom_types) if atom_types else None
    source = {"name": "qm9", "options": {"file": file, "limit": limit, "seed": seed, "test_fraction": test_fraction,
                                         "val_fraction": val_fraction, "atom_types": atom_types}}
    graphs, bad = load_qm9(file, limit)
    return molecule_bundle(graphs, "qm9", source, bad, "gdss", seed, test_fraction, val_fraction, True,
                           atom_types=atom_types)


def zinc250k(limit: int | None = None, seed: int = 0, val_fraction: float = 0.0,
             atom_types: Sequence[str] | None = None) -> DataBundle:
    """ZINC250k: train = the 25k ``chemsmc_val`` file, test = the 25k ``chemsmc_test`` file."""
    source = {"name": "zinc250k", "options": {"limit": limit, "seed": seed, "val_fraction": val_fraction,
                                              "atom_types": list(atom_types) if atom_types else None}}
    train, bad1 = load_zinc250k("val", limit)
    test, bad2 = load_zinc250k("test", limit)
    return molecule_bundle(train, "zinc250k", source, bad1 + bad2, seed=seed, val_fraction=val_fraction,
                           atom_types=atom_types, test_graphs=test)


def nci(max_atoms: int = 38, limit: int | None = None, seed: int = 0, test_fraction: float = 0.1,
        val_fraction: float = 0.0) -> DataBundle:
    """Embedded molecules: RDKit's bundled NCI sample (largest fragments, ZINC elements, <= max_atoms)."""
    source = {"name": "nci", "options": {"max_atoms": max_atoms, "limit": limit, "seed": seed,
                                         "test_fraction": test_fraction, "val_fraction": val_fraction}}
    graphs, bad = load_nci(max_atoms, limit=limit)
    return molecule_bundle(graphs, "nci", source, bad, "gdss", seed, test_fraction, val_fraction, True)


def graph_file(path: str, split: str = "spectre", seed: int = 0, max_nodes: int | None = None,
               max_feat_num: int | None = None, validity: str | None = None) -> DataBundle:
    """Users' graphs: edge list, GraphML, graph6 or JSON file (or a directory of them)."""
    source = {"name": "graph_file", "options": {"path": str(path), "split": split, "seed": seed,
                                                "max_nodes": max_nodes, "max_feat_num": max_feat_num,
                                                "validity": validity}}
    return graph_bundle(load_graph_file(path), "graph_file", source, split, seed, max_nodes=max_nodes,
                        max_feat_num=max_feat_num, validity=validity)


def smiles_file(path: str, column: str | None = None, seed: int = 0, test_fraction: float = 0.1,
                val_fraction: float = 0.0, max_nodes: int | None = None) -> DataBundle:
    """Users' molecules: SMILES (.smi, or .csv with a smiles column) or SDF; invalid entries skipped and counted."""
    source = {"name": "smiles_file", "options": {"path": str(path), "column": column, "seed": seed,
                                                 "test_fraction": test_fraction, "val_fraction": val_fraction,
                                                 "max_nodes": max_nodes}}
    graphs, bad = load_smiles_graphs(path, column)
    return molecule_bundle(graphs, "smiles_file", source, bad, "gdss", seed, test_fraction, val_fraction, True,
                           max_nodes)


DATASETS: dict[str, Callable[..., DataBundle]] = {
    "community_small": _generated("community_small"),
    "ego_small": _generated("ego_small"),
    "grid": _generated("grid"),
    "planar": _generated("planar"),
    "sbm": _generated("sbm"),
    "nci": nci,
    "gdss_community_small": gdss_dataset("community_small"),
    "gdss_ego_small": gdss_dataset("ego_small"),
    "gdss_grid": gdss_dataset("grid"),
    "gdss_enzymes": gdss_dataset("enzymes"),
    "spectre_community": spectre_community,
    "qm9": qm9,
    "zinc250k": zinc250k,
    "graph_file": graph_file,
    "smiles_file": smiles_file,
}


@functools.lru_cache(maxsize=4)
def _train_graphs_cached(key: str) -> tuple[nx.Graph, ...]:
    source = json.loads(key)
    return tuple(DATASETS[source["name"]](**source.get("options", {})).train.graphs)


def train_graphs(info: dict[str, Any]) -> list[nx.Graph] | None:
    """Rebuild the training graphs of the dataset described by ``info["source"]`` (for novelty);
    None when the source is unknown or its files are gone."""
    source = info.get("source")
    if not source or source.get("name") not in DATASETS:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return list(_train_graphs_cached(json.dumps(source, sort_keys=True)))
    except (FileNotFoundError, OSError):
        return None
