"""GDSS in the graphs plugin: fields and node counts, equivariance and structure of the score
networks, the S4 solver against an exact Gaussian target, valency correction, recipes, and a
tiny end-to-end run through polydiff.train / load / generate / save / evaluate and the CLI."""

from __future__ import annotations

import io
import math
from contextlib import redirect_stdout
from pathlib import Path

import networkx as nx
import pytest
import torch
from graphs_helpers import tiny_overrides

import polydiff
from polydiff import FieldSpec, GaussianProcess, Plain, VPLinear
from polydiff.cli import main as cli
from polydiff.config import load_config
from polydiff.toy.gmm import ExactDenoiser, GaussianMixture
from polydiff_graphs.chem import ATOM, BOND, graph_smiles
from polydiff_graphs.metrics.correction import correct_valency, corrected_metrics
from polydiff_graphs.models.gdss import UnitPriorVP, pair_mask

ROOT = Path(__file__).resolve().parents[2]
RECIPES = ROOT / "configs" / "graphs"
TINY = {"depth": 2, "nhid": 8, "adim": 8, "num_layers": 2, "c_hid": 4, "c_final": 2, "heads": 2}


@pytest.fixture(scope="module")
def modality():
    return polydiff.load_modality("graphs")


@pytest.fixture(scope="module")
def community(modality):
    return modality.dataset("community_small", num_graphs=20, max_feat_num=10)


def test_fields_follow_gdss(modality, community):
    f = modality.fields(community.info)
    assert set(f) == {"x", "adj"} and all(v.prediction == "score" for v in f.values())
    assert isinstance(f["x"].process.schedule, UnitPriorVP) and f["x"].process.schedule.prior_std() == 1.0
    assert f["adj"].structure.mask == "mask" and f["x"].structure.mask == "mask"
    mol = modality.fields({"kind": "molecule", "atom_types": ["C", "O"]})
    assert mol["adj"].process.schedule.sigma_max == 1.0 and mol["x"].process.schedule.prior_std() == 1.0
    custom = modality.fields(community.info, adj={"schedule": "ve", "sigma_min": 0.2, "sigma_max": 1.0},
                             unit_prior=False)
    assert custom["adj"].process.schedule.sigma_min == 0.2
    assert custom["x"].process.schedule.prior_std() == pytest.approx(math.sqrt(1 - math.exp(-0.55)))


def test_prior_state_draws_node_counts_from_training_histogram(modality):
    info = {"max_nodes": 6, "max_feat_num": 3, "node_count_hist": [0, 0, 1, 0, 3, 0, 0]}
    spec = modality.prior_state(4000, info, torch.Generator().manual_seed(0))
    assert spec["x"] == (4000, 6, 3) and spec["adj"] == (4000, 6, 6)
    counts = spec["mask"].sum(1)
    assert set(counts.tolist()) == {2.0, 4.0}
    assert float((counts == 4).double().mean()) == pytest.approx(0.75, abs=0.03)
    assert bool((spec["mask"][:, :-1] >= spec["mask"][:, 1:]).all())  # present nodes come first
    again = modality.prior_state(4000, info, torch.Generator().manual_seed(0))
    assert torch.equal(again["mask"], spec["mask"])
    with pytest.raises(ValueError, match="unconditional"):
        modality.prior_state(2, info, condition={"label": 1})


@pytest.mark.parametrize("x_net", ["gcn", "gmh"])
def test_score_networks_are_permutation_equivariant_and_structured(modality, community, x_net):
    f = modality.fields(community.info)
    torch.manual_seed(0)
    net = modality.network("gdss", community.info, f, x_net=x_net, **TINY).double().requires_grad_(False)
    b = {k: v[:3].double() for k, v in community.train.get_batch(torch.arange(3)).items()}
    g = torch.Generator().manual_seed(1)
    noise_adj = torch.randn(b["adj"].shape, generator=g, dtype=torch.float64)
    state = {"x": b["x"] + 0.3 * torch.randn(b["x"].shape, generator=g, dtype=torch.float64) * b["mask"][..., None],
             "adj": (b["adj"] + 0.3 * (noise_adj + noise_adj.transpose(1, 2))) * pair_mask(b["mask"]),
             "mask": b["mask"]}
    t = torch.full((3,), 0.4, dtype=torch.float64)
    out = net(state, t)
    perm = torch.randperm(state["x"].shape[1], generator=g)
    moved = {"x": state["x"][:, perm], "adj": state["adj"][:, perm][:, :, perm], "mask": state["mask"][:, perm]}
    out_p = net(moved, t)
    torch.testing.assert_close(out_p["x"], out["x"][:, perm])
    torch.testing.assert_close(out_p["adj"], out["adj"][:, perm][:, :, perm])
    a = out["adj"]
    assert torch.equal(a, a.transpose(1, 2)) and float(a.diagonal(dim1=1, dim2=2).abs().max()) == 0.0
    off = 1 - pair_mask(b["mask"])
    assert float((a * off).abs().max()) == 0.0 and float((out["x"] * (1 - b["mask"][..., None])).abs().max()) == 0.0
    # a VP field's score is -network / sigma(t): it grows as t -> 0
    assert out["adj"].abs().sum() < net(state, torch.full((3,), 0.05, dtype=torch.float64))["adj"].abs().sum()


def _gaussian(dim: int = 16):
    """One Gaussian component N(1.5, 0.5^2 I) and its exact score model under GDSS's VP-SDE."""
    gmm = GaussianMixture(torch.ones(1), torch.full((1, dim), 1.5), torch.full((1, dim), 0.5))
    process = GaussianProcess(VPLinear(0.1, 1.0))
    return gmm, process, ExactDenoiser(gmm, process, "score")


def _exact(gmm, process, t: float, n: int, seed: int) -> torch.Tensor:
    c = process.coefs(torch.tensor(t, dtype=torch.float64))
    g = torch.Generator().manual_seed(seed)
    return gmm.sample(n, g, alpha=float(c.alpha), sigma=float(c.sigma)).float()


def _moments_error(x: torch.Tensor, gmm, process, t: float) -> tuple[float, float]:
    c = process.coefs(torch.tensor(t, dtype=torch.float64))
    mean, var = float(c.alpha) * 1.5, float(c.alpha) ** 2 * 0.25 + float(c.sigma) ** 2
    return abs(float(x.double().mean()) - mean), abs(float(x.double().var()) - var)


def _run(model, field, x, **options) -> torch.Tensor:
    """Sample from the given initial points ``x`` (a state entry, not drawn from the prior)."""
    return polydiff.sample(lambda st, t: {"x": model(st["x"], t)}, {"x": field}, {"x": x.clone()}, **options)["x"]


def test_s4_one_step_on_an_exact_gaussian_target():
    gmm, process, model = _gaussian()
    field = FieldSpec(process, Plain(), "score")
    x_t = _exact(gmm, process, 0.5, 4000, 0)
    grid = torch.tensor([0.5, 0.45], dtype=torch.float64)
    errs = {}
    for snr, norms in [(0.1, "batch"), (0.1, "sample"), (0.0, "batch"), (0.9, "batch")]:
        out = _run(model, field, x_t, sampler="s4", grid=grid, seed=3, snr=snr, norm=norms)
        errs[snr, norms] = _moments_error(out, gmm, process, 0.45)
    for key in [(0.1, "batch"), (0.1, "sample"), (0.0, "batch")]:
        mean_err, var_err = errs[key]
        assert mean_err < 0.01 and var_err < 0.015, (key, errs[key])
    # a Langevin step far too large for one step breaks the marginal: the test can fail
    assert errs[0.9, "batch"][1] > 3 * max(errs[0.1, "batch"][1], 0.005)


@pytest.mark.parametrize("dim,n,norms", [(16, 4000, "batch"), (256, 500, "sample")])
def test_s4_full_run_matches_the_exact_marginal_and_costs_one_call_per_step(dim, n, norms):
    gmm, process, model = _gaussian(dim)
    field = FieldSpec(process, Plain(), "score")
    x1 = _exact(gmm, process, 1.0, n, 1)
    model.calls = 0
    out = _run(model, field, x1, sampler="s4", steps=100, grid="uniform_t", t_min=1e-3, seed=5, snr=0.1, norm=norms)
    assert model.calls == 100
    mean_err, var_err = _moments_error(out, gmm, process, 1e-3)
    assert mean_err < 0.01 and var_err < 0.01, (mean_err, var_err)


def test_plugin_sampler_is_listed(modality):
    buf = io.StringIO()
    with redirect_stdout(buf):
        assert cli(["samplers"]) == 0
    line = next(r for r in buf.getvalue().splitlines() if r.startswith("s4 "))
    assert "GDSS" in line and "snr=0.1" in line and "norm=batch" in line


def _canon(smiles: str) -> str:
    from rdkit import Chem

    return Chem.MolToSmiles(Chem.MolFromSmiles(smiles), isomericSmiles=False)


def _mol(atoms: list[str], bonds: list[tuple[int, int, int]]) -> nx.Graph:
    g = nx.Graph()
    g.add_nodes_from((i, {ATOM: a}) for i, a in enumerate(atoms))
    g.add_edges_from((u, v, {BOND: o}) for u, v, o in bonds)
    return g


def test_valency_correction():
    # O with a double and a single bond (valence 3): the double bond is lowered first -> C-O-C ethers
    bad = _mol(["C", "O", "C"], [(0, 1, 2), (1, 2, 1)])
    assert graph_smiles(bad) is None
    fixed = correct_valency(bad)
    assert graph_smiles(fixed) == "COC" and bad.edges[0, 1][BOND] == 2  # the input is untouched
    # a fluorine with two bonds loses its first one; the smaller fragment left over is dropped
    frag = _mol(["C", "F", "C", "C"], [(0, 1, 1), (1, 2, 1), (2, 3, 1)])
    assert graph_smiles(correct_valency(frag)) == "CCF"
    m = corrected_metrics([bad, frag, _mol(["C", "C", "F"], [(0, 1, 1), (1, 2, 1)])], train_smiles=["CCF"])
    assert m["validity_corrected"] == 1.0 and m["uniqueness_corrected"] == pytest.approx(2 / 3)
    assert m["novelty_corrected"] == 0.5


def test_valency_correction_breaks_ties_and_keeps_fragments_as_gdss():
    """GDSS lowers a bond by removing and re-adding it, so it moves to the end of the atom's bond
    list and the next tie goes to another bond; MoFlow keeps the fragment with the longest SMILES
    string, not the one with most atoms. (Both checked against a step-by-step transcription of
    GDSS's correct_mol / valid_mol_can_with_seg on 465 perturbed QM9 graphs: no difference.)"""
    atoms = ["C", "N", "C", "N+", "C", "C", "N", "N", "N-"]
    bonds = [(0, 1, 1), (0, 5, 1), (1, 2, 1), (2, 3, 2), (3, 4, 3), (4, 5, 2), (4, 8, 1), (5, 6, 1), (6, 7, 2),
             (7, 8, 1)]
    assert graph_smiles(correct_valency(_mol(atoms, bonds))) == _canon("C1=[N+]=C2[N-]N=NC2CN1")
    fragments = _mol(["C", "C", "C", "C", "Cl", "C", "Cl"], [(0, 1, 1), (1, 2, 1), (2, 3, 1), (4, 5, 1), (5, 6, 1)])
    assert graph_smiles(correct_valency(fragments)) == "ClCCl"  # 5 characters against CCCC's 4, with fewer atoms


def test_recipes_are_listed_and_valid(modality):
    names = set(modality.recipes())
    assert {"community_small_gdss", "ego_small_gdss", "qm9_gdss"} <= names
    for path in sorted(RECIPES.glob("*gdss*.yaml")):
        cfg = load_config(path)
        assert cfg.modality == "graphs" and cfg.model.name == "gdss"


def _tiny(**data) -> list[str]:
    return tiny_overrides(TINY, 4, **data)


def test_gdss_end_to_end_community(tmp_path, modality):
    cfg = load_config(RECIPES / "community_small_gdss.yaml",
                      _tiny(name="community_small", num_graphs=20))
    run = polydiff.train(cfg, tmp_path / "run", verbose=False)
    assert run.step == 3 and run.checkpoint.is_file()
    gen = polydiff.load(run.checkpoint)
    states = gen.sample_states(5, seed=0)
    a, mask = states["adj"], states["mask"]
    # symmetric up to rounding (batch-mean Langevin norms differ in the last bit between entries)
    torch.testing.assert_close(a, a.transpose(1, 2), rtol=0, atol=1e-5)
    assert float(a.diagonal(dim1=1, dim2=2).abs().max()) == 0.0
    assert float((a * (1 - pair_mask(mask))).abs().max()) == 0.0
    assert set(mask.sum(1).tolist()) <= {float(n) for n, c in enumerate(gen.info["node_count_hist"]) if c}
    graphs = gen.generate(5, seed=0, sampler="s4", steps=3, norm="sample")
    assert len(graphs) == 5 and all(isinstance(g, nx.Graph) for g in graphs)
    first = gen.generate(2, seed=0, sampler="s4", steps=3, norm="sample")
    assert [sorted(g.edges()) for g in first] == [sorted(g.edges()) for g in graphs[:2]]  # batch independent
    # objects that are not a list of graphs get one line naming them (Modality.native_types), empty lists
    # the same error in evaluate, save and plot, and FCD (a molecule metric) on generic graphs an error
    for objects, error, message in ((["a", "b"], TypeError, r"objects\[0\]: expected a Graph .*, got str"),
                                    (graphs[0], TypeError, "objects: expected a list of Graph .*, got Graph"),
                                    ([], ValueError, r"objects: an empty list \(no Graph objects\)")):
        with pytest.raises(error, match=message):
            gen.evaluate(objects)
    with pytest.raises(ValueError, match="objects: an empty list"):
        gen.save([], tmp_path / "empty")
    with pytest.raises(ValueError, match="objects: an empty list"):
        gen.plot([], tmp_path / "empty.png")
    with pytest.raises(TypeError, match=r"reference: expected a list of Graph .*, got str"):
        gen.evaluate(graphs, reference="x")
    with pytest.raises(ValueError, match=r"FCD .* applies to molecular graphs only"):
        gen.evaluate(graphs, fcd=True)
    # the command line: sample -> files -> evaluate
    out = tmp_path / "samples"
    assert cli(["sample", str(run.checkpoint), "--num", "4", "--out", str(out), "--threads", "1"]) == 0
    assert cli(["sample", str(run.checkpoint), "--num", "3", "--sampler", "s4", "--steps", "2",
                "--out", str(tmp_path / "s4")]) == 0
    buf = io.StringIO()
    with redirect_stdout(buf):
        assert cli(["evaluate", str(out), "--json", str(tmp_path / "m.json")]) == 0
    text = buf.getvalue()
    assert "degree:" in text and "orbit:" in text and (tmp_path / "m.json").is_file()


def test_gdss_end_to_end_molecules(tmp_path, modality):
    cfg = load_config(RECIPES / "qm9_gdss.yaml", [*_tiny(), "data.name=nci", "data.limit=60",
                                                   "data.file=null"])
    cfg.data.options.pop("file", None)
    run = polydiff.train(cfg, tmp_path / "run", verbose=False)
    gen = polydiff.load(run.checkpoint)
    assert gen.fields["adj"].process.schedule.sigma_max == 1.0
    mols = gen.generate(6, seed=1)
    assert all(ATOM in d for g in mols for _, d in g.nodes(data=True))
    metrics = gen.evaluate(mols)
    for key in ("validity", "validity_corrected", "uniqueness_corrected", "nspdk", "atom_tv"):
        assert key in metrics
    assert 0.0 <= metrics["validity"] <= metrics["validity_corrected"] <= 1.0
