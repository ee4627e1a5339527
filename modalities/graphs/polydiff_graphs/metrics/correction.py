"""Valency correction of generated molecular graphs, reported apart from validity without it.

GDSS (following MoFlow) repairs an over-valent atom by lowering the order of its highest-order
bond by one, repeatedly, and then keeps the largest fragment; its "validity w/o correction" is
measured before any repair. :func:`correct_valency` does the same on molecular graphs: an atom's
allowed valence is the largest valence RDKit lists for the isoelectronic element (``N+`` counts
as C, ``O-`` as F), so charged tokens keep their meaning.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import networkx as nx
from rdkit import Chem

from ..chem import ATOM, BOND, canonical_set, canonical_smiles, graph_to_mol, parse_token


@lru_cache(maxsize=256)
def max_valence(token: str) -> int:
    """Largest allowed valence of an atom token (``"C"`` 4, ``"N"`` 3, ``"N+"`` 4, ``"O-"`` 1, ``"S"`` 6)."""
    symbol, charge = parse_token(token)
    table = Chem.GetPeriodicTable()
    z = table.GetAtomicNumber(symbol) - charge
    if z < 1:
        return 0
    valences = [v for v in table.GetValenceList(z) if v >= 0]
    return max(valences) if valences else 0


def correct_valency(graph: nx.Graph) -> nx.Graph:
    """A copy of ``graph`` whose over-valent atoms are repaired by lowering, one order at a
    time, their highest-order bond (removed at order 0), then reduced to its largest connected
    fragment (GDSS / MoFlow's ``correct_mol`` + ``valid_mol_can_with_seg``)."""
    g = graph.copy()
    while True:
        bad = next((v for v in sorted(g.nodes()) if _valence(g, v) > max_valence(g.nodes[v].get(ATOM, "C"))), None)
        if bad is None:
            break
        u, w = max(((bad, n) for n in sorted(g[bad])), key=lambda e: int(g.edges[e].get(BOND, 1)))
        order = int(g.edges[u, w].get(BOND, 1)) - 1
        if order > 0:
            g.edges[u, w][BOND] = order
        else:
            g.remove_edge(u, w)
    if g.number_of_nodes() > 1 and not nx.is_connected(g):
        keep = max(nx.connected_components(g), key=lambda c: (len(c), -min(c)))
        g = nx.convert_node_labels_to_integers(g.subgraph(keep).copy(), ordering="sorted")
    return g


def _valence(g: nx.Graph, v: int) -> int:
    return sum(int(d.get(BOND, 1)) for _, _, d in g.edges(v, data=True))


def corrected_metrics(graphs: Sequence[nx.Graph], train_smiles: Sequence[str] | None = None) -> dict[str, float]:
    """Validity, uniqueness and novelty after :func:`correct_valency` (suffix ``_corrected``);
    validity is over all generated graphs, uniqueness over valid ones, novelty over distinct ones."""
    n = len(graphs)
    if n == 0:
        raise ValueError("corrected_metrics needs at least one generated graph")
    smiles = [s for s in (canonical_smiles(graph_to_mol(correct_valency(g))) for g in graphs) if s is not None]
    distinct = set(smiles)
    out = {"validity_corrected": len(smiles) / n,
           "uniqueness_corrected": len(distinct) / len(smiles) if smiles else float("nan")}
    if train_smiles is not None:
        known = canonical_set(train_smiles)
        out["novelty_corrected"] = len(distinct - known) / len(distinct) if distinct else float("nan")
    return out
