"""Molecular graphs: RDKit round trips, SMILES / SDF reading with errors and skip counts,
validity without correction, uniqueness, novelty, NSPDK and FCD."""

from __future__ import annotations

import math
import warnings

import networkx as nx
import pytest
from rdkit import Chem

from polydiff_graphs.chem import (
    atom_token,
    graph_smiles,
    graph_to_mol,
    mol_to_graph,
    parse_token,
    read_sdf,
    read_smiles,
    smiles_to_graphs,
)
from polydiff_graphs.io import write_sdf, write_smiles
from polydiff_graphs.metrics import fcd_available, molecule_metrics, nspdk_features, nspdk_mmd, type_statistics

TRICKY = ["CCO", "c1ccccc1", "c1cc[nH]c1", "C[NH3+]", "CC(=O)[O-]", "O=[N+]([O-])c1ccccc1", "C#N",
          "COc1ccc([C@@H]([NH3+])c2cscc2C)cc1C", "CCCCc1nn2c(=O)cc(N3CCN(c4c(Cl)cccc4[N+](=O)[O-])CC3)[nH+]c2s1"]


def _canon(s: str) -> str:
    return Chem.MolToSmiles(Chem.MolFromSmiles(s), isomericSmiles=False)


def _pentavalent_carbon() -> nx.Graph:
    g = nx.Graph()
    g.add_node(0, atom="C")
    for i in range(1, 6):
        g.add_node(i, atom="F")
        g.add_edge(0, i, bond=1)
    return g


def test_atom_tokens():
    assert [atom_token("N", 1), atom_token("O", -1), atom_token("Fe", 2), atom_token("C")] == ["N+", "O-", "Fe+2", "C"]
    assert [parse_token(t) for t in ("N+", "O-", "Fe+2", "Cl")] == [("N", 1), ("O", -1), ("Fe", 2), ("Cl", 0)]
    with pytest.raises(ValueError, match="bad atom token"):
        parse_token("n+")


@pytest.mark.parametrize("smiles", TRICKY)
def test_molecule_graph_round_trip(smiles):
    g = mol_to_graph(Chem.MolFromSmiles(smiles))
    assert all(d["bond"] in (1, 2, 3) for _, _, d in g.edges(data=True))     # kekulised
    assert graph_smiles(g) == _canon(smiles)


def test_explicit_hydrogens_are_removed():
    g = mol_to_graph(Chem.AddHs(Chem.MolFromSmiles("CCO")))
    assert g.number_of_nodes() == 3 and graph_smiles(g) == "CCO"


def test_invalid_graphs_are_not_corrected():
    assert graph_to_mol(_pentavalent_carbon()) is None
    assert graph_to_mol(nx.Graph()) is None


def test_smiles_reading_reports_and_counts_invalid_entries(tmp_path):
    f = tmp_path / "mols.smi"
    f.write_text("smiles name\nCCO ethanol\n# a comment\nC1CC broken-ring\nc1ccccc1 benzene\nxyz junk\n")
    with pytest.warns(UserWarning, match=r"skipped 2 invalid SMILES of 4: .*mols.smi:4: 'C1CC'.*mols.smi:6: 'xyz'"):
        graphs, skipped = read_smiles(f)
    assert skipped == 2 and [graph_smiles(g) for g in graphs] == ["CCO", "c1ccccc1"]


def test_csv_smiles_column_and_malformed_rows(tmp_path):
    good = tmp_path / "good.csv"
    good.write_text("id,SMILES,logp\n1,CCO,0.1\n2,CCN,0.2\n")
    graphs, skipped = read_smiles(good)
    assert skipped == 0 and [graph_smiles(g) for g in graphs] == ["CCO", "CCN"]
    bad = tmp_path / "bad.csv"
    bad.write_text("id,smiles\n1,CCO\n2,CCN,extra\n")
    with pytest.raises(ValueError, match=r"bad.csv:3: expected 2 fields, got 3"):
        read_smiles(bad)
    zinc = tmp_path / "zinc.csv"  # ZINC-250k's layout: each SMILES quoted with its line break inside
    zinc.write_text('smiles,logP\n"CCO\n",0.1\n"c1ccccc1\n",1.9\n')
    graphs, skipped = read_smiles(zinc)
    assert skipped == 0 and [graph_smiles(g) for g in graphs] == ["CCO", "c1ccccc1"]
    nocol = tmp_path / "nocol.csv"
    nocol.write_text("id,formula\n1,C2H6O\n")
    with pytest.raises(ValueError, match=r"nocol.csv:1: no smiles column; columns: id, formula"):
        read_smiles(nocol)


def test_smiles_and_sdf_writers_round_trip(tmp_path):
    graphs, _ = smiles_to_graphs(TRICKY)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        back_smi, skipped_smi = read_smiles(write_smiles([*graphs, _pentavalent_carbon()], tmp_path / "x.smi")[0])
        sdf_path, skipped_sdf = write_sdf([*graphs, _pentavalent_carbon()], tmp_path / "x.sdf")
        back_sdf, bad = read_sdf(sdf_path)
    assert skipped_smi == 0 and bad == 0
    assert skipped_sdf == 1
    want = [_canon(s) for s in TRICKY]
    assert [graph_smiles(g) for g in back_smi] == want
    assert [graph_smiles(g) for g in back_sdf] == want


def test_sdf_reader_counts_unreadable_records(tmp_path):
    graphs, _ = smiles_to_graphs(["CCO", "CCN"])
    first, second, _ = write_sdf(graphs, tmp_path / "x.sdf")[0].read_text().split("$$$$\n")
    assert " C   0" in second
    bad_file = tmp_path / "bad.sdf"
    bad_file.write_text(first + "$$$$\n" + second.replace(" C   0", " Xx  0", 1) + "$$$$\n")  # unknown element
    start = len(first.splitlines()) + 2
    with pytest.warns(UserWarning, match=rf"skipped 1 unreadable SDF records of 2: .*bad.sdf:{start} \(record 2\)"):
        back, skipped = read_sdf(bad_file)
    assert skipped == 1 and [graph_smiles(g) for g in back] == ["CCO"]


def test_validity_uses_all_generated_graphs_as_denominator():
    graphs, _ = smiles_to_graphs(["CCO", "CCO", "c1ccccc1"])
    gen = [*graphs, _pentavalent_carbon(), nx.Graph()]
    out = molecule_metrics(gen, train_smiles=["CCO"], nspdk=False)
    assert out["validity"] == pytest.approx(3 / 5)          # GDSS issue #3: over ALL generated
    assert out["uniqueness"] == pytest.approx(2 / 3)        # distinct / valid (MOSES)
    assert out["novelty"] == pytest.approx(1 / 2)           # benzene is new, ethanol is not
    assert set(out) == {"validity", "uniqueness", "novelty"}


def test_type_statistics_by_hand():
    a, _ = smiles_to_graphs(["CCO"])       # atoms C C O, bonds 1 1
    b, _ = smiles_to_graphs(["C=CN"])      # atoms C C N, bonds 2 1
    out = type_statistics(a, b)
    assert out["atom_tv"] == pytest.approx(1 / 3)
    assert out["bond_tv"] == pytest.approx(1 / 2)
    assert out["atoms_mean"] == 3


def _labelled_path(n: int, label: str = "C") -> nx.Graph:
    g = nx.path_graph(n)
    nx.set_node_attributes(g, label, "label")
    nx.set_edge_attributes(g, 1.0, "label")
    return g


def test_nspdk_features():
    f = nspdk_features(_labelled_path(4))
    assert math.fsum(x * x for x in f.values()) == pytest.approx(1.0)
    # EDeN's own doctest: a 4-path and a 5-path minus its last node have the same features
    g5 = _labelled_path(5)
    g5.remove_node(4)
    assert nspdk_features(g5) == f
    # isomorphic relabelled graphs too
    assert nspdk_features(nx.relabel_nodes(_labelled_path(4), {0: "d", 1: "c", 2: "b", 3: "a"})) == f
    assert nspdk_features(_labelled_path(4, "N")) != f
    assert nspdk_features(nx.Graph()) == {}


def test_nspdk_mmd_is_the_linear_kernel_mmd():
    xs = [_labelled_path(4), _labelled_path(6), nx.cycle_graph(5)]
    ys = [_labelled_path(4, "N"), nx.star_graph(3)]

    def k(a, b):
        fa, fb = nspdk_features(a), nspdk_features(b)
        return sum(v * fb.get(key, 0.0) for key, v in fa.items())

    def mean_k(u, v):
        return sum(k(a, b) for a in u for b in v) / (len(u) * len(v))

    want = mean_k(xs, xs) + mean_k(ys, ys) - 2 * mean_k(xs, ys)
    assert nspdk_mmd(xs, ys) == pytest.approx(want, abs=1e-12)
    assert nspdk_mmd(xs, list(reversed(xs))) == pytest.approx(0.0, abs=1e-15)
    assert nspdk_mmd(xs, ys) == pytest.approx(nspdk_mmd(ys, xs), abs=1e-15)


def test_molecule_nspdk_against_reference():
    ref, _ = smiles_to_graphs(["CCO", "c1ccccc1", "CC(=O)O", "CCN"])
    same = molecule_metrics(ref, ref)
    other = molecule_metrics(smiles_to_graphs(["C1CCCCC1", "ClCCl", "OCCO"])[0], ref)
    assert same["nspdk"] == pytest.approx(0.0, abs=1e-15) and other["nspdk"] > 0.05
    assert same["atom_tv"] == 0.0


def test_molecule_metrics_follow_gdss_conventions():
    """GDSS labels bonds ``int(bond.GetBondTypeAsDouble())`` (aromatic 1.5 -> 1, as single) and
    leaves empty generated graphs out of NSPDK; its validity check is RDKit's property step,
    which refuses a neutral five-valent N that full sanitisation rewrites into a nitro group."""
    toluene, _ = smiles_to_graphs(["Cc1ccccc1"])
    cyclohexane, _ = smiles_to_graphs(["CC1CCCCC1"])
    assert molecule_metrics(cyclohexane, toluene)["nspdk"] == pytest.approx(0.0, abs=1e-15)
    ref, _ = smiles_to_graphs(["CCO", "CCN", "CC=O"])
    gen, _ = smiles_to_graphs(["CCO", "CCN", "CC=O"])
    assert molecule_metrics([*gen, nx.Graph()], ref)["nspdk"] == pytest.approx(0.0, abs=1e-15)
    assert math.isnan(molecule_metrics([nx.Graph()], ref)["nspdk"])
    nitro = nx.Graph()
    nitro.add_nodes_from([(0, {"atom": "C"}), (1, {"atom": "N"}), (2, {"atom": "O"}), (3, {"atom": "O"})])
    nitro.add_edges_from([(0, 1, {"bond": 1}), (1, 2, {"bond": 2}), (1, 3, {"bond": 2})])
    assert graph_to_mol(nitro) is None and molecule_metrics([nitro])["validity"] == 0.0
    charged = nx.Graph(nitro)
    charged.nodes[1]["atom"], charged.nodes[3]["atom"], charged.edges[1, 3]["bond"] = "N+", "O-", 1
    assert graph_smiles(charged) == "C[N+](=O)[O-]"
    aromatic = nx.Graph(cyclohexane[0])
    aromatic.edges[0, 1]["bond"] = 1.5
    with pytest.raises(ValueError, match=r"bond order 1\.5 between 0 and 1: expected 1, 2 or 3 \(Kekulé"):
        graph_to_mol(aromatic)


def test_fcd_if_available():
    ok, why = fcd_available()
    if not ok:
        pytest.skip(f"FCD skipped: {why}")
    from polydiff_graphs.metrics import fcd_distance

    ref = ["CCO", "CCN", "CCC", "c1ccccc1", "CC(=O)O", "CCCl"]
    assert fcd_distance(ref, ref) == pytest.approx(0.0, abs=1e-3)
    assert fcd_distance(["CCCCCCCCCC", "CCCCCCCCCCC", "CCCCCCCCCCCC"], ref) > 1.0


def test_novelty_reads_training_smiles_spelled_any_way():
    """Training SMILES in any spelling (``OCC`` for ``CCO``, Kekulé benzene) are the same
    molecules as the canonical samples: novelty 1/3 here, not 1."""
    from polydiff_graphs.metrics.correction import corrected_metrics

    graphs = [mol_to_graph(Chem.MolFromSmiles(s)) for s in ("CCO", "c1ccccc1", "CCN")]
    train = ["OCC", "C1=CC=CC=C1", "not a smiles"]
    assert molecule_metrics(graphs, None, train, nspdk=False)["novelty"] == pytest.approx(1 / 3)
    assert corrected_metrics(graphs, train)["novelty_corrected"] == pytest.approx(1 / 3)
