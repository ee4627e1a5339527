"""Valency correction of generated molecular graphs, reported apart from validity without it.

GDSS (following MoFlow) repairs an over-valent atom by lowering the order of its highest-order
bond by one, repeatedly, and then keeps the largest fragment; its "validity w/o correction" is
measured before any repair. :func:`correct_valency` runs the same procedure on the RDKit
molecule of a graph, step for step: the atom repaired is the first one RDKit's valence check
(its property step, as GDSS's ``check_valency``) reports; among its highest-order bonds the first
in its bond list (:func:`..chem.build_mol` adds bonds in GDSS's order, and a lowered bond is
removed and added again, so it moves to the end of that list as in GDSS); the fragment kept is
the one with the longest SMILES string (MoFlow's ``valid_mol_can_with_seg``), read back from
that string. Charged tokens keep their meaning (``N+`` may have four bonds).
"""

from __future__ import annotations

from collections.abc import Sequence

import networkx as nx
from rdkit import Chem

from ..chem import BOND_TYPES, build_mol, canonical_set, canonical_smiles, graph_to_mol, mol_to_graph, quiet_rdkit


def _valence_problem(mol: Chem.RWMol) -> int | None:
    """Index of the first atom whose valence RDKit's property check refuses, or None."""
    for problem in Chem.DetectChemistryProblems(mol, sanitizeOps=Chem.SanitizeFlags.SANITIZE_PROPERTIES):
        if problem.GetType() == "AtomValenceException":
            return problem.GetAtomIdx()
    return None


def correct_valency(graph: nx.Graph) -> nx.Graph:
    """A copy of ``graph`` repaired as GDSS / MoFlow repair a generated molecule (``correct_mol``
    then ``valid_mol_can_with_seg``, see the module docstring); an empty graph when the kept
    fragment's SMILES does not parse back (GDSS drops that molecule)."""
    if graph.number_of_nodes() == 0:
        return nx.Graph()
    with quiet_rdkit():
        mol = build_mol(graph)
        while (idx := _valence_problem(mol)) is not None:
            bonds = list(mol.GetAtomWithIdx(idx).GetBonds())
            if not bonds:  # over-valent without a bond (a charge RDKit cannot place): nothing to lower
                break
            top = max(int(b.GetBondTypeAsDouble()) for b in bonds)
            bond = next(b for b in bonds if int(b.GetBondTypeAsDouble()) == top)
            start, end = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()
            mol.RemoveBond(start, end)
            if top > 1:
                mol.AddBond(start, end, BOND_TYPES[top - 1])
        try:
            Chem.SanitizeMol(mol, sanitizeOps=Chem.SanitizeFlags.SANITIZE_PROPERTIES)
            smiles = Chem.MolToSmiles(mol, isomericSmiles=True)
        except Exception:  # a molecule the loop could not repair
            return graph_of(None)
        parts = smiles.split(".")
        kept = max(parts, key=len)  # the first of the longest strings, as a stable sort by length keeps it
        return graph_of(Chem.MolFromSmiles(kept))


def graph_of(mol: Chem.Mol | None) -> nx.Graph:
    """The molecular graph of a sanitised molecule, or an empty graph for None."""
    if mol is None:
        return nx.Graph()
    try:
        return mol_to_graph(mol)
    except ValueError:
        return nx.Graph()


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
