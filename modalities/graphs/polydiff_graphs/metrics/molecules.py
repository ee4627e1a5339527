"""Metrics of generated molecular graphs (GDSS / MOSES conventions).

- ``validity``: fraction of ALL generated graphs that RDKit sanitises as they are (no valence
  correction, no fragment selection) -- GDSS's "validity w/o correction" with the denominator
  fixed as in GDSS issue #3 (its code divided by the wrong count). Empty graphs are invalid.
- ``uniqueness``: distinct canonical SMILES (stereo dropped) / valid molecules (MOSES).
- ``novelty``: distinct valid SMILES absent from the training SMILES / distinct valid SMILES (MOSES).
- ``nspdk``: NSPDK MMD (:mod:`.nspdk`) against the reference molecules, labels = element
  symbol and ``int`` of RDKit's bond order, as GDSS's ``mols_to_nx`` labels them: a molecule
  RDKit sanitises is aromatic, and its aromatic bonds (1.5) are labelled 1 like single bonds; a
  graph that does not sanitise keeps its Kekulé orders. Empty generated graphs are left out, as
  GDSS's ``nspdk_stats`` leaves them out (a zero vector could lower the MMD). GDSS evaluates
  corrected molecules; we evaluate the raw ones.
- ``fcd``: Fréchet ChemNet Distance via the optional ``fcd`` package (its ChemNet weights ship
  in the wheel), on valid generated vs reference SMILES.
- ``atom_tv`` / ``bond_tv``: total-variation distance between the atom-token (and bond-order)
  frequencies of generated and reference graphs; ``atoms_mean`` the mean heavy-atom count.

Placeholders for records of a samples file that are not valid molecules (see :mod:`..chem`)
count as invalid in validity and are left out of the distribution metrics (NSPDK, FCD, type
statistics), which describe the molecules that were read; other graphs, empty ones included,
are counted as they are.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Sequence

import networkx as nx

from ..chem import ATOM, BOND, canonical_set, canonical_smiles, graph_to_mol, is_placeholder, parse_token
from .nspdk import nspdk_mmd


def nspdk_view(graph: nx.Graph) -> nx.Graph:
    """Labelled graph for NSPDK: ``label`` = element symbol on nodes, bond order on edges."""
    mol = graph_to_mol(graph)
    g = nx.Graph()
    if mol is not None:
        for atom in mol.GetAtoms():
            g.add_node(atom.GetIdx(), label=atom.GetSymbol())
        for bond in mol.GetBonds():
            g.add_edge(bond.GetBeginAtomIdx(), bond.GetEndAtomIdx(), label=int(bond.GetBondTypeAsDouble()))
        return g
    for v, d in graph.nodes(data=True):
        g.add_node(v, label=parse_token(d.get(ATOM, "C"))[0])
    for u, v, d in graph.edges(data=True):
        g.add_edge(u, v, label=int(float(d.get(BOND, 1))))
    return g


def _tv(a: Counter, b: Counter) -> float:
    na, nb = sum(a.values()), sum(b.values())
    if na == 0 or nb == 0:
        return float("nan")
    return 0.5 * sum(abs(a[k] / na - b[k] / nb) for k in set(a) | set(b))


def type_statistics(graphs: Sequence[nx.Graph], reference: Sequence[nx.Graph]) -> dict[str, float]:
    """Atom-token and bond-order total-variation distances, and the mean heavy-atom count."""
    def atoms(gs: Sequence[nx.Graph]) -> Counter:
        return Counter(d.get(ATOM) for g in gs for _, d in g.nodes(data=True))

    def bonds(gs: Sequence[nx.Graph]) -> Counter:
        return Counter(int(d.get(BOND, 1)) for g in gs for _, _, d in g.edges(data=True))

    return {"atom_tv": _tv(atoms(graphs), atoms(reference)), "bond_tv": _tv(bonds(graphs), bonds(reference)),
            "atoms_mean": sum(g.number_of_nodes() for g in graphs) / max(len(graphs), 1)}


def fcd_available() -> tuple[bool, str]:
    """Whether FCD can run offline, and why not."""
    try:
        import fcd  # noqa: F401
    except ImportError:
        return False, "the optional 'fcd' package is not installed (pip install polydiff-graphs[fcd])"
    import importlib.resources

    if not importlib.resources.files("fcd").joinpath("ChemNet_v0.13_pretrained.pt").is_file():
        return False, "the installed 'fcd' package does not bundle its ChemNet weights"
    return True, ""


def fcd_distance(smiles: Sequence[str], reference_smiles: Sequence[str]) -> float:
    """Fréchet ChemNet Distance (``fcd`` package, CPU) between two SMILES lists."""
    ok, why = fcd_available()
    if not ok:
        raise RuntimeError(f"FCD unavailable: {why}")
    import fcd

    if len(smiles) < 2 or len(reference_smiles) < 2:
        raise ValueError(f"FCD needs at least 2 molecules per set, got {len(smiles)} and {len(reference_smiles)}")
    with warnings.catch_warnings():  # fcd 1.2 uses numpy / scipy names deprecated upstream
        warnings.simplefilter("ignore", DeprecationWarning)
        return float(fcd.get_fcd(list(smiles), list(reference_smiles), device="cpu"))


def molecule_metrics(graphs: Sequence[nx.Graph], reference: Sequence[nx.Graph] | None = None,
                     train_smiles: Sequence[str] | None = None, nspdk: bool = True,
                     fcd: bool = False) -> dict[str, float]:
    """Validity (w/o correction, over all), uniqueness, novelty, NSPDK, FCD and type statistics."""
    n = len(graphs)
    if n == 0:
        raise ValueError("molecule_metrics needs at least one generated graph")
    smiles = smiles_of(graphs)
    distinct = set(smiles)
    out = {"validity": len(smiles) / n, "uniqueness": len(distinct) / len(smiles) if smiles else math.nan}
    if train_smiles is not None:
        train = canonical_set(train_smiles)
        out["novelty"] = len(distinct - train) / len(distinct) if distinct else math.nan
    if reference:
        read = [g for g in graphs if not is_placeholder(g)]  # every graph, unless a file held unreadable records
        if read:
            out.update(type_statistics(read, reference))
        else:
            out.update(atom_tv=math.nan, bond_tv=math.nan, atoms_mean=math.nan)
        if nspdk:
            views = [v for v in (nspdk_view(g) for g in read) if v.number_of_nodes()]
            out["nspdk"] = nspdk_mmd([nspdk_view(g) for g in reference], views) if views else math.nan
        if fcd:
            out["fcd"] = fcd_distance(smiles, smiles_of(reference)) if len(smiles) >= 2 else math.nan
    return out


def smiles_of(graphs: Sequence[nx.Graph]) -> list[str]:
    """Canonical SMILES (stereo dropped) of the valid molecular graphs."""
    return [s for s in (canonical_smiles(graph_to_mol(g)) for g in graphs) if s is not None]
