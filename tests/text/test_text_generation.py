"""Prompting, infilling and semi-autoregressive long generation with a masked-diffusion text
model (a tiny character model trained on a user's text file as one stream), and the
``polydiff text complete`` command."""

from __future__ import annotations

import json

import pytest
import torch

import polydiff
from polydiff import cli
from polydiff_text.generation import _extend, complete, fill, generate_long, infill

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.filterwarnings("ignore::UserWarning")]

TEXT = ("to be or not to be that is the question whether tis nobler in the mind to suffer "
        "the slings and arrows of outrageous fortune or to take arms against a sea of troubles ") * 30


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    root = tmp_path_factory.mktemp("text-gen")
    (root / "play.txt").write_text(TEXT)
    recipe = {"modality": "text",
              "data": {"name": "file", "path": str(root / "play.txt"), "tokenizer": "char", "length": 32,
                       "whole": True},
              "model": {"name": "mdlm", "dim": 32, "depth": 1, "heads": 2},
              "train": {"max_steps": 20, "batch_size": 16, "lr": 3e-3, "accelerator": "cpu", "devices": 1,
                        "threads": 1, "checkpoint_every": 20, "progress": False, "logger": "none"},
              "sample": {"sampler": "first_hitting"}}
    return polydiff.train(recipe, root / "run", fresh=True, verbose=False).checkpoint


@pytest.fixture(scope="module")
def gen(ckpt):
    return polydiff.load(ckpt)


def test_fill_keeps_the_given_tokens_and_reveals_the_rest(gen):
    mask = gen.modality.tokenizer(gen.info).vocab_size
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, mask, (5, 32), generator=g)
    hidden = torch.rand(5, 32, generator=g) < 0.5
    start = torch.where(hidden, torch.full_like(tokens, mask), tokens)
    out = fill(gen, start, torch.ones(5, 32, dtype=torch.bool), seed=1)
    assert (out < mask).all() and torch.equal(out[~hidden], tokens[~hidden])
    assert torch.equal(out, fill(gen, start, torch.ones(5, 32, dtype=torch.bool), seed=1))


def test_fill_passes_finished_sequences_over(gen):
    """A sequence with fewer holes is complete sooner; the network sees it once more, not at every later call."""
    mask = gen.modality.tokenizer(gen.info).vocab_size
    tokens = torch.randint(0, mask, (3, 32), generator=torch.Generator().manual_seed(0))
    holes = torch.tensor([2, 10, 30])
    start = torch.where(torch.arange(32)[None, :] < holes[:, None], torch.full_like(tokens, mask), tokens)
    rows = [0]
    hook = gen.net.register_forward_hook(lambda mod, args, out: rows.__setitem__(0, rows[0] + len(args[0]["tokens"])))
    try:
        out = fill(gen, start, torch.ones(3, 32, dtype=torch.bool), seed=0)
    finally:
        hook.remove()
    assert rows[0] == int((holes + 1).clamp(max=30).sum())  # 3 + 11 + 30, not 3 x 30
    assert (out < mask).all() and torch.equal(out[start < mask], tokens[start < mask])


def test_complete_keeps_prompts_and_does_not_depend_on_the_batch(gen):
    texts = complete(gen, ["to be ", "the sl"], seed=3)
    assert texts[0].startswith("to be ") and texts[1].startswith("the sl")
    assert all(len(t) <= 32 for t in texts)
    assert complete(gen, ["to be "], seed=3) == texts[:1]
    short = complete(gen, ["to be "], length=10, seed=3)[0]
    assert short.startswith("to be ") and len(short) <= 10
    with pytest.raises(ValueError, match="no room"):
        complete(gen, ["t" * 40])


def test_infill_fills_only_the_holes(gen):
    out = infill(gen, ["to <mask><mask> or not", "<mask>he"], seed=0)
    assert out[0].startswith("to ") and out[0].endswith(" or not") and len(out[0]) == len("to __ or not")
    assert out[1].endswith("he") and len(out[1]) == 3
    with pytest.raises(ValueError, match="no hole"):
        infill(gen, ["nothing to fill"])


def test_long_generation_chains_blocks_through_their_overlap(gen):
    texts = generate_long(gen, 3, 80, seed=0)
    assert len(texts) == 3 and all(60 < len(t) <= 80 for t in texts)  # 80 tokens (a barely trained model may
    # still emit the padding token, which decoding drops)
    mask = gen.modality.tokenizer(gen.info).vocab_size
    first = fill(gen, torch.full((2, 32), mask), torch.ones(2, 32, dtype=torch.bool), seed=0)
    out = _extend(gen, first, 56, 16, seed=0, precision="float64")
    assert out.shape == (2, 56) and torch.equal(out[:, :32], first)  # the first block is kept
    with pytest.raises(ValueError, match="overlap"):
        generate_long(gen, 1, 80, overlap=32)


def test_arguments_are_named_when_wrong(gen, tmp_path):
    """One str would be read as one prompt per character; every argument is checked by name."""
    for call, error, message in (
            (lambda: complete(gen, "to be"), TypeError, r"prompts must be a list of strings \(for one: \['to be'\]\)"),
            (lambda: complete(gen, []), ValueError, "prompts: an empty list"),
            (lambda: complete(gen, ["to", 5]), TypeError, r"prompts\[1\]: expected a str, got int"),
            (lambda: complete(gen, ["to"], seed="a"), ValueError, "seed must be an integer, got 'a'"),
            (lambda: complete(gen, ["to"], length=2.5), ValueError, "length must be a positive integer, got 2.5"),
            (lambda: infill(gen, "to <mask>"), TypeError, "templates must be a list of strings"),
            (lambda: infill(gen, ()), ValueError, "templates: an empty list"),
            (lambda: infill(gen, ["to"], hole=""), ValueError, "hole must be a non-empty string"),
            (lambda: generate_long(gen, 2.5, 40), ValueError, "n must be a positive integer, got 2.5"),
            (lambda: generate_long(gen, 1, "40"), ValueError, "length must be a positive integer, got '40'"),
            (lambda: generate_long(gen, 1, 40, seed=1.5), ValueError, "seed must be an integer, got 1.5"),
            (lambda: generate_long(gen, 1, 40, overlap=2.5), ValueError, "overlap must be an integer, got 2.5"),
            # texts are strings (Modality.native_types): no str() of whatever was given
            (lambda: gen.evaluate("to be"), TypeError, "objects: expected a list of str .*, got str"),
            (lambda: gen.evaluate([1, 2]), TypeError, r"objects\[0\]: expected a str .*, got int"),
            (lambda: gen.save([["t", "o"]], tmp_path / "s"), TypeError, r"objects\[0\]: expected a str .*, got list"),
            # precision belongs to the first-hitting sampler
            (lambda: gen.generate(2, sampler="ancestral", steps=2, precision="float32"), ValueError,
             r"precision is an option of the first_hitting sampler \(pass sampler='first_hitting'\)")):
        with pytest.raises(error, match=message):
            call()
    assert not (tmp_path / "s").exists()


def test_complete_command(ckpt, tmp_path, capsys):
    out = tmp_path / "c.jsonl"
    assert cli.main(["text", "complete", str(ckpt), "--prompt", "to be ", "--num", "2", "--length", "50",
                     "--out", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 2 and all(r["text"].startswith("to be ") and 40 < len(r["text"]) <= 50 for r in rows)
    with pytest.raises(SystemExit) as exc:  # argparse: the flag named, exit status 2
        cli.main(["text", "complete", str(ckpt), "--prompt", "x", "--num", "0"])
    assert exc.value.code == 2 and "argument --num: expected a positive integer" in capsys.readouterr().err
    # an existing file is never replaced without --overwrite (a user's SMILES list was lost this way)
    theirs = tmp_path / "mols.smi"
    theirs.write_text("CCO\n")
    capsys.readouterr()
    assert cli.main(["text", "complete", str(ckpt), "--prompt", "to", "--out", str(theirs)]) == 2
    assert "mols.smi already exists; pass --overwrite" in capsys.readouterr().err and theirs.read_text() == "CCO\n"
    assert cli.main(["text", "complete", str(ckpt), "--prompt", "to", "--out", str(theirs), "--overwrite"]) == 0
    assert json.loads(theirs.read_text().splitlines()[0])["prompt"] == "to"


def test_a_prompt_the_tokenizer_only_knows_as_unknown_is_an_error():
    from polydiff_text.generation import _known
    from polydiff_text.tokenizers import SmilesTokenizer

    tok = SmilesTokenizer.fit(["CCO", "c1ccccc1"])
    assert _known(tok, "CCO", "prompt 0") == tok.encode("CCO")
    with pytest.raises(ValueError, match=r"prompt 0: 1 token\(s\) of 'CéO' .* read '<unk>' in their place"):
        _known(tok, "CéO", "prompt 0")


def test_first_hitting_says_it_sets_its_own_steps(gen):
    """First hitting reveals one token per call at drawn times: a step count asked for is
    ignored with a warning (not silently), and the repr shows no step count for it."""
    with pytest.warns(UserWarning, match="sets its own number of steps: steps=5 is ignored"):
        a = gen.generate(3, seed=0, steps=5, progress=False)
    assert a == gen.generate(3, seed=0, progress=False)
    assert "samples with first_hitting>" in repr(gen)
