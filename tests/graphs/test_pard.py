"""PARD in the graphs plugin: the structural partial order on hand-made graphs, block-ordered
states, permutation equivariance, that parallel training (the 2n construction) sees for every
block exactly what block-by-block generation sees, and tiny end-to-end runs through
polydiff.train, the block-wise generation loop, the plugin's CLI and polydiff evaluate."""

from __future__ import annotations

import dataclasses
import io
import subprocess
import sys
from contextlib import redirect_stdout
from pathlib import Path

import networkx as nx
import pytest
import torch
from graphs_helpers import tiny_overrides

import polydiff
from polydiff.cli import main as cli
from polydiff.config import load_config
from polydiff.registry import RegistryError
from polydiff_graphs.chem import ATOM
from polydiff_graphs.data import GraphStates
from polydiff_graphs.generation import generate_graphs, is_pard
from polydiff_graphs.models.order import block_order, walk_counts
from polydiff_graphs.models.pard import block_bundle, generate_states, pair_index

ROOT = Path(__file__).resolve().parents[2]
RECIPES = ROOT / "configs" / "graphs"
TINY = {"hidden": 16, "edge_hidden": 8, "layers": 2, "heads": 2}


# -- the partial order ------------------------------------------------------------------------

def spider() -> nx.Graph:
    """A centre c with two legs of length 2 (a1-a2, b1-b2) and one leaf d."""
    return nx.Graph([("c", "a1"), ("a1", "a2"), ("c", "b1"), ("b1", "b2"), ("c", "d")])


def test_partial_order_of_hand_made_graphs():
    # a path peels from both ends; the middle node is the core, generated first
    assert block_order(nx.path_graph(5), 1) == ([[2], [1, 3], [0, 4]], [0, 1, 1])
    assert block_order(nx.path_graph(4), 1) == ([[1, 2], [0, 3]], [1, 1])
    # a star: the leaves (degree 1) go first, the centre is the first block generated
    assert block_order(nx.star_graph(4), 1) == ([[0], [1, 2, 3, 4]], [0, 1])
    # ties in degree are broken by 2-hop walk counts only when max_hops >= 2
    assert block_order(spider(), 1) == ([["c"], ["a1", "b1"], ["a2", "b2", "d"]], [0, 1, 1])
    assert block_order(spider(), 2) == ([["c"], ["a1", "b1", "d"], ["a2", "b2"]], [0, 1, 1])
    # max_hops 0: one block, plain diffusion; a regular graph is one block with its degree
    assert block_order(spider(), 0) == ([sorted(spider().nodes())], [0])
    assert block_order(nx.cycle_graph(6), 2) == ([list(range(6))], [2])
    assert block_order(nx.empty_graph(0), 1) == ([], [])
    assert walk_counts(nx.to_numpy_array(nx.path_graph(3), dtype=int), 2).tolist() == [[2, 5], [3, 7], [2, 5]]


def test_nodes_of_a_block_share_their_degree_in_the_graph_so_far():
    for g in (nx.karate_club_graph(), nx.les_miserables_graph(), nx.gnp_random_graph(30, 0.2, seed=1)):
        blocks, degrees = block_order(g, 2)
        seen: list = []
        for blk, deg in zip(blocks, degrees):
            seen += blk
            sub = g.subgraph(seen)
            assert {sub.degree(v) for v in blk} == {deg}
        assert sorted(seen, key=str) == sorted(g.nodes(), key=str)


def test_block_states_of_a_small_graph():
    g = nx.convert_node_labels_to_integers(spider(), ordering="sorted")  # a1 a2 b1 b2 c d -> 0..5
    st = block_states_of([g], n_max=7, max_hops=1)
    # generation order: c | a1 b1 | a2 b2 d  ->  positions 0 | 1 2 | 3 4 5, padding at 6
    assert st["block"][0].tolist() == [0, 1, 1, 2, 2, 2, -1]
    assert st["bdeg"][0].tolist() == [0, 1, 1, 1, 1, 1, 0]
    dense = torch.zeros(7, 7, dtype=torch.long)
    i, j = pair_index(7)
    dense[i, j] = st["e"][0]
    edges = {(int(a), int(b)) for a, b in zip(*torch.nonzero(dense, as_tuple=True))}
    assert edges == {(0, 1), (0, 2), (0, 5), (1, 3), (2, 4)}
    d1 = 2  # max block degree 1
    assert st["next"][0].tolist() == [1 * d1 + 0, 2 * d1 + 1, 3 * d1 + 1, 0]
    assert st["next_mask"][0].tolist() == [1, 1, 1, 1] and st["mask"][0].sum() == 6
    assert float(st["pair_mask"][0].sum()) == 15


def block_states_of(graphs, n_max: int, max_hops: int) -> dict:
    bundle = polydiff.DataBundle(GraphStates(graphs, {}), info={"kind": "graph", "max_nodes": n_max})
    return block_bundle(bundle, max_hops).train.tensors


# -- the network --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def modality():
    return polydiff.load_modality("graphs")


@pytest.fixture(scope="module", params=["graph", "molecule"])
def setup(request, modality):
    if request.param == "graph":
        data = modality.dataset("community_small", num_graphs=20, max_hops=1)
    else:
        data = modality.dataset("nci", limit=40, max_atoms=12, max_hops=1)
    fields = modality.fields(data.info, noise="absorbing" if request.param == "molecule" else "uniform")
    torch.manual_seed(0)
    net = modality.network("pard", data.info, fields, **TINY).double().eval().requires_grad_(False)
    return data, fields, net


def _noisy(data, fields, count: int = 3, seed: int = 0) -> dict:
    """A training-layout state: clean context, noisy field tokens (random values everywhere)."""
    st = data.train.get_batch(torch.arange(count))
    g = torch.Generator().manual_seed(seed)
    for k in ("x", "e"):
        if k in fields:
            st[k] = torch.randint(0, fields[k].process.n_states, st[k].shape, generator=g)
    return st


def _dense(pairs_values: torch.Tensor, n: int) -> torch.Tensor:
    i, j = pair_index(n)
    out = pairs_values.new_zeros(pairs_values.shape[0], n, n, *pairs_values.shape[2:])
    out[:, i, j] = pairs_values
    out[:, j, i] = pairs_values
    return out


def test_network_is_permutation_equivariant(setup):
    data, fields, net = setup
    st = _noisy(data, fields)
    n = st["block"].shape[1]
    t = torch.tensor([0.3, 0.6, 0.9], dtype=torch.float64)
    out = net(st, t)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(3))
    i, j = pair_index(n)
    moved = {k: v[:, perm] for k, v in st.items() if k in ("x", "x_ctx", "block", "bdeg", "mask")}
    for k in ("e", "e_ctx"):
        moved[k] = _dense(st[k], n)[:, perm][:, :, perm][:, i, j]
    moved["pair_mask"] = moved["mask"][:, i] * moved["mask"][:, j]
    out_p = net(moved, t)
    valid = _dense(st["pair_mask"], n)[:, perm][:, :, perm][..., None].bool()
    torch.testing.assert_close(_dense(out_p["e"], n) * valid, _dense(out["e"], n)[:, perm][:, :, perm] * valid)
    torch.testing.assert_close(out_p["next"], out["next"])
    if "x" in out:
        torch.testing.assert_close(out_p["x"], out["x"][:, perm])


def test_parallel_training_sees_what_generation_sees(setup):
    """The 2n layout's logits for block k equal the logits of the generation layout (nodes of
    blocks < k real with clean tokens, block k virtual with the noisy ones, later blocks absent,
    junk anywhere else): no block sees a later one or its own clean tokens."""
    data, fields, net = setup
    st = _noisy(data, fields)
    t = torch.tensor([0.2, 0.5, 0.8], dtype=torch.float64)
    train_out = net(st, t)
    n = st["block"].shape[1]
    i, j = pair_index(n)
    g = torch.Generator().manual_seed(7)
    checked = 0
    for k in range(int(st["block"].max()) + 1):
        block = st["block"].masked_fill(st["block"] > k, -1)
        gen_state = {"block": block, "bdeg": st["bdeg"], "current": torch.full((3,), k),
                     "e_ctx": torch.where(torch.maximum(st["block"][:, i], st["block"][:, j]) < k, st["e_ctx"],
                                          torch.randint_like(st["e_ctx"], 2, generator=g)),
                     "e": torch.where(torch.maximum(st["block"][:, i], st["block"][:, j]) == k, st["e"],
                                      torch.randint_like(st["e"], 2, generator=g))}
        if "x" in fields:
            gen_state["x_ctx"] = torch.where(st["block"] < k, st["x_ctx"], torch.randint_like(st["x"], 2, generator=g))
            gen_state["x"] = torch.where(st["block"] == k, st["x"], torch.randint_like(st["x"], 2, generator=g))
        gen_out = net(gen_state, t)
        later = torch.maximum(block[:, i], block[:, j]) == k
        later &= (block[:, i] >= 0) & (block[:, j] >= 0)
        torch.testing.assert_close(gen_out["e"][later], train_out["e"][later])
        if "x" in fields:
            torch.testing.assert_close(gen_out["x"][block == k], train_out["x"][block == k])
        torch.testing.assert_close(gen_out["next"][:, k], train_out["next"][:, k])
        checked += int(later.sum())
    assert checked > 0
    # and the test can fail: a virtual copy that sees its own clean tokens changes the logits
    leaky = dict(st, e=st["e_ctx"])
    assert not torch.allclose(net(leaky, t)["e"], train_out["e"])


def test_fields_and_errors(modality, setup):
    data, fields, _ = setup
    assert set(fields) <= {"x", "e"} and fields["e"].structure.mask == "pair_mask"
    # the block-size classifier is a loss term of the network: its masked cross-entropy
    batch = {k: v[:4] for k, v in data.train.tensors.items()} if hasattr(data.train, "tensors") else None
    if batch is not None:
        net = modality.network("pard", data.info, fields, hidden=16, edge_hidden=8, layers=1, heads=2)
        out = net(batch, torch.full((4,), 0.5))
        logits, target, w = out["next"], batch["next"], batch["next_mask"]
        ce = -torch.log_softmax(logits, -1).gather(-1, target[..., None])[..., 0]
        torch.testing.assert_close(out["loss/next"], (ce * w).sum(1) / w.sum(1))
    with pytest.raises(ValueError, match="noise"):
        modality.fields(data.info, noise="gaussian")
    with pytest.raises(ValueError, match="max_hops"):
        modality.network("pard", {"kind": "graph"}, fields)


# -- end to end ---------------------------------------------------------------------------------

def _tiny(**data) -> list[str]:
    return tiny_overrides(TINY, 3, **data)


def test_pard_end_to_end_community(tmp_path, modality, monkeypatch):
    cfg = load_config(RECIPES / "community_small_pard.yaml", _tiny(name="community_small", num_graphs=20))
    run = polydiff.train(cfg, tmp_path / "run", verbose=False)
    assert run.step == 3
    gen = polydiff.load(run.checkpoint)
    assert is_pard(gen) and "samples with ancestral, 3 steps" in repr(gen)  # the recipe names what samples
    st = generate_states(gen.net, 5, steps=2, seed=0)
    a, mask = st["adj"], st["mask"]
    assert torch.equal(a, a.transpose(1, 2)) and float(a.diagonal(dim1=1, dim2=2).abs().max()) == 0.0
    assert float((a * (1 - mask[:, :, None] * mask[:, None, :])).abs().max()) == 0.0
    assert set(a.unique().tolist()) <= {0.0, 1.0}
    assert bool((st["blocks"] <= gen.info["order"]["max_blocks"]).all())
    # NFE per graph: (blocks) x steps + one size prediction per block and one to stop
    assert bool((st["nfe"] <= st["blocks"] * 2 + st["blocks"] + 1).all())
    again = generate_states(gen.net, 2, steps=2, seed=0)
    assert torch.equal(again["adj"], st["adj"][:2]) and torch.equal(again["mask"], st["mask"][:2])
    # the modality's sampling hook, which the core Generator calls with a prior_state spec
    settings = polydiff.SampleSettings(steps=2)
    seeds = torch.arange(5) + 0 * 1_000_003
    hooked = gen.modality.sample(gen.net, gen.fields, gen.modality.prior_state(5, gen.info), settings,
                                 polydiff.Control(), seed=seeds, device=torch.device("cpu"))
    assert torch.equal(hooked["adj"], st["adj"])
    with pytest.raises(ValueError, match="block by block"):  # no guidance / steering for PARD's blocks
        gen.generate(2, steps=2, seed=0, particles=2)
    graphs = generate_graphs(gen, 5, steps=2, seed=0, batch_size=2)
    assert [sorted(g.edges()) for g in graphs] == [sorted(g.edges()) for g in gen.modality.to_native(st, gen.info)]
    # the plugin's command line writes what `polydiff evaluate DIR` reads
    out = tmp_path / "samples"
    with redirect_stdout(io.StringIO()):
        assert cli(["graphs", "sample", str(run.checkpoint), "--num", "4", "--out", str(out)]) == 0
    buf = io.StringIO()
    with redirect_stdout(buf):
        assert cli(["evaluate", str(out)]) == 0
    assert "degree:" in buf.getvalue()
    import polydiff_graphs.cli as gcli  # an existing --out is refused before sampling, not after it

    def no_sampling(*args, **kwargs):
        raise AssertionError("sampled before claiming the output folder")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(gcli, "generate_graphs", no_sampling)
        assert cli(["graphs", "sample", str(run.checkpoint), "--num", "4", "--out", str(out)]) == 2
    # the core's Generator and `polydiff sample` call GraphsModality.sample: the same graphs
    native = gen.generate(5, steps=2, seed=0, batch_size=3)
    assert [sorted(g.edges()) for g in native] == [sorted(g.edges()) for g in graphs]
    with redirect_stdout(io.StringIO()):
        assert cli(["sample", str(run.checkpoint), "--num", "4", "--out", str(tmp_path / "core")]) == 0
    assert sorted(p.name for p in (tmp_path / "core").iterdir()) == sorted(p.name for p in out.iterdir())
    # a Gaussian sampler for PARD's categorical fields is an error, not silently replaced; options reach the
    # categorical sampler that runs, and an unknown one names it
    with pytest.raises(ValueError, match=r"sampler 's4' is a Gaussian sampler, but every field .* categorical"):
        gen.generate(2, sampler="s4", steps=2, seed=0)
    with pytest.raises(RegistryError, match=r"'ancestral' has no option snr"):
        gen.generate(2, steps=2, seed=0, snr=0.3)
    # the recipe's sampler was ddpm (never used: PARD's fields are categorical) before it said ancestral: the
    # same graphs; settings PARD does not use, and a categorical sampler other than the one that runs, are refused
    with monkeypatch.context() as m:
        m.setattr(gen.config, "sample", dataclasses.replace(gen.config.sample, sampler="ddpm",
                                                            options={"categorical": "ancestral"}))
        old = gen.generate(5, steps=2, seed=0, batch_size=3)
    assert [sorted(g.edges()) for g in old] == [sorted(g.edges()) for g in native]
    with pytest.raises(ValueError, match="sampler 'ddpm' is a Gaussian sampler"):
        gen.generate(2, sampler="ddpm", steps=2, seed=0)
    for setting in ({"grid": "karras"}, {"grid": "nosuch"}, {"t_min": 0.5}, {"t_max": 0.9}, {"final_zero": True},
                    {"compile": True}):
        with pytest.raises(ValueError, match=f"PARD does not use {next(iter(setting))}: each block takes 2 steps"):
            gen.generate(2, steps=2, seed=0, **setting)
    with pytest.raises(ValueError, match="sampler='ancestral' and categorical='tau_leaping' name two: pass "
                                         "sampler='tau_leaping'"):
        gen.generate(2, steps=2, seed=0, categorical="tau_leaping")
    assert len(gen.generate(2, sampler="tau_leaping", steps=2, seed=0)) == 2
    # one polydiff.sample loop cannot run PARD: a clear message
    with pytest.raises(ValueError, match="block by block"):
        polydiff.sample(gen.net, gen.fields, gen.modality.prior_state(2, gen.info), steps=2)


def test_pard_end_to_end_molecules(tmp_path):
    sets = [*_tiny(name="nci", limit=60), "data.file=null", "process.noise=absorbing"]
    cfg = load_config(RECIPES / "qm9_pard.yaml", sets)
    cfg.data.options.pop("file", None)
    run = polydiff.train(cfg, tmp_path / "run", verbose=False)
    gen = polydiff.load(run.checkpoint)
    mols = generate_graphs(gen, 4, steps=2, seed=1)
    assert len(mols) == 4 and all(ATOM in d for g in mols for _, d in g.nodes(data=True))
    metrics = gen.evaluate(mols)
    assert {"validity", "validity_corrected", "uniqueness"} <= set(metrics)


def test_module_entry_point_runs():
    done = subprocess.run([sys.executable, "-m", "polydiff_graphs", "--help"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and "sample" in done.stdout
