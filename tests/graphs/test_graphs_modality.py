"""The ``graphs`` plugin through the core's registry: listing, datasets, states <-> graphs,
files, evaluation and plots (the models come later)."""

from __future__ import annotations

import math

import networkx as nx
import pytest

from polydiff import available_modalities, load_modality
from polydiff_graphs import GraphsModality


@pytest.fixture(scope="module")
def modality() -> GraphsModality:
    return load_modality("graphs")


def test_registered_and_listed(modality):
    info = available_modalities()["graphs"]
    assert info.target == "polydiff_graphs:GraphsModality" and info.distribution == "polydiff-graphs"
    assert isinstance(modality, GraphsModality)
    listing = modality.describe()
    assert listing["datasets"][0] == "community_small" and listing["networks"] == ["gdss", "pard"]


def test_states_to_graphs_and_back(modality):
    data = modality.dataset(num_graphs=30)                              # community_small, generated
    batch = data.train.get_batch(list(range(5)))
    graphs = modality.to_native(batch, data.info)
    assert [sorted(g.edges()) for g in graphs] == [sorted(g.edges()) for g in data.train.graphs[:5]]
    again = modality.from_native(graphs, data.info)
    for key in ("x", "adj", "mask"):
        assert again[key].shape == batch[key].shape and bool((again[key] == batch[key]).all()), key
    assert len(modality.reference(data)) == 6


def test_generic_graph_run(modality, tmp_path):
    data = modality.dataset("planar", num_graphs=20, seed=1)
    generated = modality.to_native(data.val.get_batch(list(range(len(data.val)))), data.info)
    paths = modality.write(generated, tmp_path / "out")
    back = modality.read(tmp_path / "out")
    assert len(paths) == 3 and [sorted(g.edges()) for g in back] == [sorted(g.edges()) for g in generated]
    metrics = modality.evaluate(back, modality.reference(data), data.info)
    assert {"degree", "cluster", "orbit", "spectral", "valid", "unique", "novel", "vun"} <= set(metrics)
    assert metrics["valid"] == 1.0 and metrics["novel"] == 1.0 and metrics["vun"] == 1.0
    train_metrics = modality.evaluate(data.train.graphs, modality.reference(data), data.info)
    assert train_metrics["novel"] == 0.0 and train_metrics["vun"] == 0.0
    assert all(math.isfinite(v) for v in metrics.values())


def test_evaluate_reports_the_share_of_empty_graphs(modality):
    """Empty generated graphs are left out of the MMDs (GDSS's convention, kept: the MMDs do not move), and
    ``empty_frac`` makes them visible."""
    data = modality.dataset(num_graphs=30)
    reference = modality.reference(data)
    graphs = list(data.train.graphs[:6])
    base = modality.evaluate(graphs, reference, data.info)
    padded = modality.evaluate([*graphs, nx.Graph(), nx.Graph()], reference, data.info)
    assert base["empty_frac"] == 0.0 and padded["empty_frac"] == 0.25
    for key in ("degree", "cluster", "orbit", "spectral"):
        assert padded[key] == base[key], key
    assert padded["nodes_mean"] == pytest.approx(base["nodes_mean"] * 6 / 8)
    alone = modality.evaluate([nx.Graph()], reference, data.info)
    assert alone["empty_frac"] == 1.0 and math.isnan(alone["degree"])


def test_molecule_run(modality, tmp_path):
    data = modality.dataset("nci", limit=120)
    assert data.info["kind"] == "molecule"
    generated = modality.to_native(data.test.get_batch(list(range(len(data.test)))), data.info)
    modality.write(generated, tmp_path / "mols")
    back = modality.read(tmp_path / "mols")
    metrics = modality.evaluate(back, modality.reference(data), data.info)
    assert metrics["validity"] == 1.0 and metrics["novelty"] == 1.0          # the test split is not in train
    assert metrics["nspdk"] == pytest.approx(0.0, abs=1e-12) and metrics["atom_tv"] == 0.0
    pytest.importorskip("matplotlib")
    assert modality.plot(back, tmp_path / "m.png").is_file()
    assert modality.plot(data.train.graphs[:4], tmp_path / "g.png").is_file()


@pytest.mark.parametrize("data,model", [
    ({"name": "community_small", "num_graphs": 12, "max_feat_num": None},
     {"name": "gdss", "nhid": 8, "adim": 8, "num_layers": 2, "depth": 2}),
    ({"name": "community_small", "num_graphs": 12, "max_hops": 1},
     {"name": "pard", "hidden": 16, "edge_hidden": 8, "layers": 1, "heads": 2}),
    ({"name": "nci", "limit": 40}, {"name": "gdss", "nhid": 8, "adim": 8, "num_layers": 2, "depth": 2}),
])
def test_modality_contract(tmp_path, data, model):
    """The core's contract kit on GDSS and PARD, generic and molecular graphs."""
    from polydiff.testing import check_modality

    rep = check_modality(GraphsModality(), tmp_path, data=data, model=model, steps=2)
    assert len(rep.objects) == 4 and rep.metrics


def test_evaluate_users_molecule_files_with_per_molecule_flags(tmp_path, capsys):
    """`polydiff evaluate FILE --modality graphs --reference FILE`: another tool's SMILES, scored
    by the plugin's metrics, with a validity flag per molecule in the JSON."""
    import json

    from polydiff.cli import main as cli

    mine, ref = tmp_path / "generated.smi", tmp_path / "reference.smi"
    mine.write_text("CCO\nc1ccccc1\nCC(=O)O\nCCN\n")
    ref.write_text("CCO\nCCC\nCCN\nc1ccncc1\nCOC\n")
    out = tmp_path / "m.json"
    assert cli(["evaluate", str(mine), "--modality", "graphs", "--reference", str(ref), "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["num"] == 4 and res["metrics"]["validity"] == 1.0 and res["metrics"]["uniqueness"] == 1.0
    assert res["per_sample"]["valid"] == [True] * 4 and res["per_sample"]["smiles"][0] == "CCO"
    assert res["per_sample"]["nodes"] == [3, 6, 4, 3]
    assert "fcd" not in res["metrics"]
    # the plugin's evaluation option reaches files too: --option fcd=true adds FCD (when the fcd package runs
    # offline), and an option evaluate does not take is named
    from polydiff_graphs.metrics import fcd_available, fcd_distance

    code = cli(["evaluate", str(mine), "--modality", "graphs", "--reference", str(ref), "--option", "fdc=true"])
    assert code != 0 and "has no option fdc (did you mean fcd?)" in capsys.readouterr().err
    if fcd_available()[0]:
        assert cli(["evaluate", str(mine), "--modality", "graphs", "--reference", str(ref), "--option", "fcd=true",
                    "--json", str(out)]) == 0
        fcd = json.loads(out.read_text())["metrics"]["fcd"]
        assert fcd == pytest.approx(fcd_distance(mine.read_text().split(), ref.read_text().split())) and fcd > 0
