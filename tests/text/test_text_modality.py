"""The text plugin end to end: the modality contract, training / sampling / evaluating from the
command line (masked diffusion and the autoregressive baseline), users' files, and the model
metrics (NLL bound, generative perplexity)."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import pytest
import torch
from torch import Tensor

import polydiff
from polydiff import cli
from polydiff.testing import check_modality
from polydiff_text import TextModality
from polydiff_text.data import TextDataError
from polydiff_text.metrics import generative_perplexity, smiles_metrics, unigram_entropy
from polydiff_text.models import ARLM

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.filterwarnings("ignore::UserWarning")]

TINY_DATA = {"name": "smiles", "limit": 300, "length": 32}
TINY_NET = {"dim": 32, "depth": 1, "heads": 2}
TRAIN = {"max_steps": 30, "batch_size": 16, "lr": 3e-3, "accelerator": "cpu", "devices": 1, "threads": 1,
         "checkpoint_every": 30, "progress": False, "logger": "none"}


def recipe(network: str, **loss) -> dict:
    return {"modality": "text", "data": TINY_DATA, "model": {"name": network, **TINY_NET}, "loss": loss,
            "train": TRAIN, "sample": {"num": 6, "sampler": "first_hitting"}}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("text-runs")
    out = {}
    for name, cfg in (("mdlm", recipe("mdlm")), ("ar", recipe("ar", objective="autoregressive"))):
        run = polydiff.train(cfg, root / name, fresh=True, verbose=False)
        out[name] = run.checkpoint
    return out


def test_model_novelty_is_against_the_training_split(runs, monkeypatch):
    """MOSES / EDM / GDSS measure novelty against the training molecules: a model that only
    repeats its training SMILES has novelty 0, whatever the test split holds."""
    gen = polydiff.load(runs["mdlm"])
    data = gen.modality.dataset(gen.config.data.name, **gen.config.data.options)
    train = gen.modality.to_native(dict(data.train.tensors), data.info)[:6]
    test = gen.modality.reference(data)
    assert not set(train) & set(test)
    monkeypatch.setattr(gen, "generate", lambda n, seed=None: list(train[:n]))
    m = gen.modality.evaluate_model(gen, num=6, seed=0, elbo_steps=2, elbo_sequences=2)
    assert m["validity"] == 1.0 and m["novelty"] == 0.0
    # the files path compares with the test split: not called novelty (it scored training molecules 1)
    files = gen.evaluate(train)
    assert "novelty" not in files and files["novelty_vs_reference"] == 1.0


def test_modality_contract(tmp_path):
    report = check_modality(TextModality(), tmp_path, data=TINY_DATA, model={"name": "mdlm", **TINY_NET},
                            sampler="first_hitting")
    assert "write then read round-trips" in report.checked


def test_train_sample_evaluate_from_the_command_line(runs, tmp_path, capsys):
    ckpt = runs["mdlm"]
    out = tmp_path / "samples"
    assert cli.main(["sample", str(ckpt), "--num", "6", "--out", str(out), "--quiet", "--plot"]) == 0
    texts = TextModality().read(out)
    assert len(texts) == 6 and all(isinstance(t, str) for t in texts)
    assert json.loads((out / "polydiff.json").read_text())["sampler"] == "first_hitting"
    assert (out / "samples.png").is_file()
    capsys.readouterr()
    # a Gaussian sampler has nothing to move in a token model: an error, not the categorical default in its place
    assert cli.main(["sample", str(ckpt), "--num", "2", "--sampler", "heun", "--out", str(tmp_path / "g")]) == 2
    assert "sampler 'heun' is a Gaussian sampler, but every field of this model is categorical" in \
        capsys.readouterr().err
    assert cli.main(["evaluate", str(out), "--json", str(tmp_path / "m.json")]) == 0
    metrics = json.loads((tmp_path / "m.json").read_text())["metrics"]
    assert {"entropy", "validity", "uniqueness", "novelty_vs_reference"} <= set(metrics) and "novelty" not in metrics
    # the model itself: the NLL bound of test sequences (a tiny, barely trained model: above 1 nat per token)
    assert cli.main(["evaluate", str(ckpt), "--num", "4", "--option", "elbo_steps=4", "--option",
                     "elbo_sequences=8", "--option", f"ar={runs['ar']}", "--json", str(tmp_path / "e.json")]) == 0
    metrics = json.loads((tmp_path / "e.json").read_text())["metrics"]
    assert 1.0 < metrics["nll_per_token"] < math.log(40) + 1
    assert metrics["bits_per_token"] == pytest.approx(metrics["nll_per_token"] / math.log(2))
    assert metrics["gen_perplexity"] > 1


def test_the_autoregressive_baseline_trains_and_samples(runs, tmp_path):
    gen = polydiff.load(runs["ar"])
    assert getattr(gen.net, "autoregressive", False)
    texts = gen.generate(4, seed=3)
    assert texts == gen.generate(4, seed=3)  # per-sample seeds
    assert texts[:2] == gen.generate(2, seed=3)
    m = gen.modality.evaluate_model(gen, num=4, seed=0, elbo_sequences=16)
    assert 0 < m["nll_per_token"] < math.log(40) and "nll_stderr" not in m  # exact NLL, no Monte-Carlo error


def test_a_conditioned_request_is_refused(runs):
    gen = polydiff.load(runs["mdlm"])
    with pytest.raises(ValueError, match="unknown condition 'label'"):
        gen.generate(2, condition={"label": 1})


def test_evaluate_users_files(tmp_path, capsys):
    smi = tmp_path / "mine.smi"
    smi.write_text("CCO\nc1ccccc1\nnot_a_smiles\nCCO\n")
    assert cli.main(["evaluate", str(smi), "--modality", "text", "--json", str(tmp_path / "u.json")]) == 0
    res = json.loads((tmp_path / "u.json").read_text())
    assert res["metrics"]["validity"] == pytest.approx(0.75)
    assert res["metrics"]["uniqueness"] == pytest.approx(2 / 3)
    assert res["per_sample"]["valid"] == [True, True, False, True]
    fasta = tmp_path / "p.fasta"
    fasta.write_text(">a\nMKV\nLL\n>b\nGG\n")
    assert TextModality().read(fasta) == ["MKVLL", "GG"]
    cut = tmp_path / "cut"
    cut.mkdir()
    (cut / "samples.jsonl").write_text('{"text": "CCO"}\n{"text": "CC')
    with pytest.raises(TextDataError, match=r"samples\.jsonl:2: .*cut off"):
        TextModality().read(cut)


def test_metrics_by_hand():
    assert unigram_entropy([[0, 0, 1, 1]]) == pytest.approx(math.log(2))
    assert unigram_entropy([[3, 3, 3], []]) == 0.0
    m = smiles_metrics(["CCO", "OCC", "C1CC", "c1ccccc1"], training=["CCO"])
    # OCC is CCO; C1CC has an unclosed ring: valid 3/4, distinct valid 2, novel 1 (benzene)
    assert m == {"validity": 0.75, "uniqueness": pytest.approx(2 / 3), "novelty": 0.5}


class _StubJudge(torch.nn.Module):
    """A judge with fixed next-token logits ``table[previous token] + bias[position]`` (B, L, V)
    and the real :meth:`ARLM.nll` (padding masked by ``valid``, summed per sequence)."""

    def __init__(self, table: Tensor, bias: Tensor) -> None:
        super().__init__()
        self.table, self.bias = table, bias  # (V + 1, V): row V is the start token; (L, V)

    def forward(self, tokens: Tensor) -> Tensor:
        prev = torch.cat([torch.full_like(tokens[:, :1], self.table.shape[1]), tokens[:, :-1]], dim=1)
        return self.table[prev] + self.bias[: tokens.shape[1]]

    nll = ARLM.nll


def _padded(lengths: list[int], L: int, V: int, seed: int) -> tuple[Tensor, Tensor]:
    """Random tokens (N, L) with trailing padding holding id ``V`` (the start id) beyond each length."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, V, (len(lengths), L), generator=g)
    valid = torch.arange(L)[None] < torch.tensor(lengths)[:, None]
    return torch.where(valid, tokens, torch.full_like(tokens, V)), valid


def test_generative_perplexity_of_a_uniform_judge_is_the_vocabulary_size():
    V, L = 7, 6
    judge = _StubJudge(torch.zeros(V + 1, V), torch.zeros(L, V))
    tokens, valid = _padded([6, 1, 3, 0, 5], L, V, seed=0)
    for batch_size in (1, 2, 64):
        assert generative_perplexity(judge, tokens, valid, batch_size=batch_size) == pytest.approx(V, abs=1e-6)
    with pytest.raises(ValueError, match="no valid tokens"):
        generative_perplexity(judge, tokens[3:4], valid[3:4])


def test_generative_perplexity_is_exp_of_the_nll_per_valid_token():
    """By hand: ``exp(sum of -log p over valid tokens / number of valid tokens)``. Lengths
    differ, padding is present and the batch (2) is smaller than N (5): dividing by sequences,
    counting padding or keeping one batch's sum only would all give other numbers."""
    V, L = 5, 6
    g = torch.Generator().manual_seed(1)
    table, bias = 3 * torch.randn(V + 1, V, generator=g), torch.randn(L, V, generator=g)
    judge = _StubJudge(table, bias)
    lengths = [6, 1, 4, 2, 5]
    tokens, valid = _padded(lengths, L, V, seed=2)
    total, count = 0.0, 0
    for row, n in zip(tokens.tolist(), lengths):
        prev = V
        for i in range(n):
            logits = [float(table[prev, v]) + float(bias[i, v]) for v in range(V)]
            total += math.log(sum(math.exp(x) for x in logits)) - logits[row[i]]
            count, prev = count + 1, row[i]
    expected = math.exp(total / count)
    got = generative_perplexity(judge, tokens, valid, batch_size=2)
    assert got == pytest.approx(expected, rel=1e-6)
    assert abs(got - math.exp(total / len(lengths))) > 0.1 and abs(got - math.exp(total / tokens.numel())) > 0.1


def test_metrics_count_values_of_tensors_and_refuse_what_they_would_misread():
    """A tensor's elements hash by identity, so counting them directly gave every token its own
    class (ln 4 for a sample of one repeated token); a plain string passed as the sample list was
    read one character per sample; a mask with values other than 0 / 1 was scored at its
    positive positions but counted by its sum; a mask with a gap padded inside the context."""
    assert unigram_entropy(torch.tensor([[0, 0, 0, 0], [1, 1, 2, 2]])) == pytest.approx(math.log(2) / 2)
    assert unigram_entropy([torch.tensor([5, 5, 6, 6])]) == pytest.approx(math.log(2))
    with pytest.raises(TypeError, match="sample 0 holds nan"):
        unigram_entropy([[float("nan"), 1.0]])
    with pytest.raises(TypeError, match="not one string"):
        smiles_metrics("CCO")
    with pytest.raises(TypeError, match="not one string"):
        smiles_metrics(["CCO", "CCN"], "CCO")
    V, L = 5, 4
    judge = _StubJudge(torch.randn(V + 1, V, generator=torch.Generator().manual_seed(0)), torch.zeros(L, V))
    tokens = torch.randint(0, V, (2, L), generator=torch.Generator().manual_seed(1))
    bools = torch.tensor([[True, True, False, False], [True, True, True, False]])
    expected = generative_perplexity(judge, tokens, bools)
    assert generative_perplexity(judge, tokens, bools.long()) == pytest.approx(expected, rel=1e-12)
    assert generative_perplexity(judge, tokens, bools.float()) == pytest.approx(expected, rel=1e-12)
    for bad in (2 * bools.long(), 0.5 * bools.float()):
        with pytest.raises(ValueError, match="only 0 and 1"):
            generative_perplexity(judge, tokens, bad)
    with pytest.raises(ValueError, match="row 1 of valid is not a prefix"):
        generative_perplexity(judge, tokens, torch.tensor([[True, True, False, False], [True, False, True, True]]))
    with pytest.raises(ValueError, match="valid has shape"):
        generative_perplexity(judge, tokens, bools[:, :3])


def test_samples_written_are_read_back_with_newlines_and_empty_texts(tmp_path):
    mod = TextModality()
    texts = ["ROMEO:\nBut soft!", "", "tab\there \"quoted\""]
    paths = mod.write(texts, tmp_path)
    assert [p.name for p in paths] == ["samples.jsonl"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert mod.read(tmp_path) == texts


def test_listing_names_the_plugin(capsys):
    assert cli.main(["modalities"]) == 0
    out = capsys.readouterr().out
    assert "text  (polydiff_text:TextModality)" in out and "text:smiles_mdlm" in out


def test_state_round_trip_keeps_padding_valid(runs):
    gen = polydiff.load(runs["mdlm"])
    st = gen.modality.from_native(["CCO", "c1ccccc1O"], gen.info)
    assert st["tokens"].shape == (2, 32) and st["valid"].dtype == torch.bool
    assert gen.modality.to_native(st, gen.info) == ["CCO", "c1ccccc1O"]


def test_samples_never_hold_the_unknown_token(runs):
    """Generation and prompting both sample through the plugin's denoiser, which never proposes
    ``<unk>``: here a network that would put it everywhere."""
    from polydiff_text.generation import complete

    gen = polydiff.load(runs["mdlm"])
    net = getattr(gen.net, "module", gen.net)
    with torch.no_grad():
        net.backbone.head.bias[net.unk_id] = 100.0
    texts = [*gen.generate(3, sampler="ancestral", steps=4, seed=0), *gen.generate(3, seed=0),
             *complete(gen, ["CC"], seed=0)]
    assert texts and not any("<unk>" in t for t in texts), texts


def test_the_nll_bound_of_a_uniform_model_equals_the_hand_computation(runs):
    """A denoiser with uniform outputs: each masked position costs log V nats with weight
    -alpha'/(1 - alpha), masked with probability 1 - alpha, so the bound integrates to
    (alpha(0) - alpha(1)) log V = (1 - 1e-3) log V per token."""
    gen = polydiff.load(runs["mdlm"])
    V = int(gen.info["vocab_size"])

    class Uniform(torch.nn.Module):
        def forward(self, state, t):
            return {"tokens": torch.zeros(*state["tokens"].shape, V)}

    gen.net = Uniform()
    m = gen.modality.evaluate_model(gen, num=2, seed=0, elbo_steps=64, elbo_sequences=64)
    expected = (1 - 1e-3) * math.log(V)
    assert abs(m["nll_per_token"] - expected) < 3 * m["nll_stderr"] + 0.01 * expected


def test_shipped_recipes_are_valid():
    from polydiff.config import load_config

    recipes = TextModality().recipes()
    assert {"smiles_mdlm", "smiles_ar", "shakespeare_mdlm", "shakespeare_ar", "shakespeare_energy"} <= set(recipes)
    for path in recipes.values():
        assert load_config(path).modality == "text"
