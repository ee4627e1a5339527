"""Silent data problems of the core and the toy modality (issue #18, item 6): a split that
leaves no test points, evaluation falling back to the training data, and a condition the
model was not trained with -- each an error or a warning that says so."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import polydiff
from polydiff.cli import main
from polydiff.config import from_dict
from polydiff.generator import Generator
from polydiff.toy import ToyModality
from polydiff.toy.data import gmm_dataset

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {"modality": "toy", "data": {"name": "gmm", "k": 4, "dim": 2},
        "model": {"name": "mlp", "hidden": 16, "depth": 1},
        "train": {"max_steps": 4, "batch_size": 32, "accelerator": "cpu", "devices": 1, "threads": 1,
                  "checkpoint_every": 4, "progress": False, "logger": "none"},
        "sample": {"steps": 4, "num": 7}}


@pytest.fixture(scope="module")
def unconditional_ckpt(tmp_path_factory):
    """A tiny unconditional toy model trained on labelled data (the gmm declares ``label``)."""
    out = tmp_path_factory.mktemp("toy_run")
    polydiff.train(TINY, out, fresh=True, verbose=False)
    return out / "checkpoints" / "last.ckpt"


def _points(tmp_path, n):
    f = tmp_path / "pts.csv"
    f.write_text("a,b\n" + "".join(f"{i},{i * 0.5}\n" for i in range(n)))
    return f


# -- splits and the reference set -----------------------------------------------------------------

def test_csv_values_beyond_float32_are_errors_and_diverged_samples_read_back(tmp_path, recwarn):
    """Training points are float32: 1e39 would become inf there. A samples file may hold the
    nan / inf of a diverged sample (write_points writes them): it reads back for evaluation to
    count it."""
    from polydiff.toy.data import write_points

    f = tmp_path / "big.csv"
    f.write_text("a,b\n1,2\n1e39,2\n3,4\n")
    with pytest.raises(ValueError, match=r"big\.csv:3: '1e39' is beyond float32's range \(\+-3\.403e\+38\)"):
        ToyModality().dataset("csv", path=str(f))
    x = np.array([[1.0, np.nan], [np.inf, 0.5], [0.25, -3.0]])
    back = ToyModality().read(write_points(x, tmp_path / "s" / "samples.csv").parent)
    assert np.array_equal(back, x, equal_nan=True)
    with pytest.warns(UserWarning, match=r"2 of 3 samples have non-finite coordinates"):
        ToyModality().evaluate(back, np.zeros((4, 2)), {})


def test_csv_split_that_leaves_no_test_points_is_an_error(tmp_path):
    toy = ToyModality()
    f = _points(tmp_path, 2)
    with pytest.raises(ValueError, match=r"pts\.csv: 2 point\(s\) with test_fraction=0\.2 leave the test split "
                                         r"empty; need at least 3 points"):
        toy.dataset("csv", path=str(f), test_fraction=0.2)
    with pytest.raises(ValueError, match=r"pts\.csv: test_fraction must lie in \[0, 1\), got 1\.0"):
        toy.dataset("csv", path=str(f), test_fraction=1.0)


def test_csv_test_split_is_the_reference(tmp_path, recwarn):
    toy = ToyModality()
    data = toy.dataset("csv", path=str(_points(tmp_path, 10)), test_fraction=0.3, seed=1)
    assert len(data.train) == 7 and len(data.test) == 3 and data.info["n"] == 7
    every = np.sort(np.concatenate([data.train.tensors["x"].numpy()[:, 0], data.test.tensors["x"].numpy()[:, 0]]))
    assert every.tolist() == list(range(10))                        # a partition of the points
    assert toy.reference(data).shape == (3, 2)
    assert not [w for w in recwarn if "evaluating against" in str(w.message)]


def test_reference_without_a_test_split_warns_that_it_uses_the_training_data(tmp_path):
    toy = ToyModality()
    data = toy.dataset("csv", path=str(_points(tmp_path, 4)))
    with pytest.warns(UserWarning, match=r"dataset 'csv' has no test or validation split: evaluating against its "
                                         r"training data \(4 items\)"):
        ref = toy.reference(data)
    assert ref.shape == (4, 2)
    gmm = gmm_dataset(k=2, n=40, n_test=8)
    with pytest.warns(UserWarning, match=r"dataset 'gmm' has no test split: evaluating against its validation "
                                         r"split \(4 items\)"):
        assert toy.reference(dataclasses.replace(gmm, test=None)).shape == (4, 2)
    # the core's default reference (plugins that do not override it) says the same
    with pytest.warns(UserWarning, match="no test or validation split"):
        polydiff.Modality.reference(toy, data)


def test_gmm_without_test_points_is_an_error():
    with pytest.raises(ValueError, match=r"n_test >= 2 .* n_test=0"):
        gmm_dataset(k=2, n=20, n_test=0)


# -- conditions the model was not trained with ----------------------------------------------------

def test_condition_on_an_unconditional_model_is_an_error(unconditional_ckpt):
    gen = polydiff.load(unconditional_ckpt)
    with pytest.raises(ValueError, match=r"unknown condition 'label': the model was not trained with it; the model is "
                                         r"unconditional"):
        gen.generate(4, condition={"label": 3}, steps=2)
    with pytest.raises(ValueError, match=r"unknown condition 'colour': the model was not trained with it; its data "
                                         r"declares only: label"):
        gen.generate(4, condition={"colour": 1}, steps=2)
    assert gen.generate(4, steps=2, seed=0).shape == (4, 2)          # without a condition it samples


def test_guidance_on_an_unconditional_model_says_the_model_has_no_conditions(unconditional_ckpt, tmp_path, capsys):
    """The gmm data declares ``label``, but the network ignores it: guidance is refused for the
    model's reason, not with a hint to pass ``condition={'label': ...}`` (which then fails)."""
    gen = polydiff.load(unconditional_ckpt)
    assert gen.conditions == {} and "conditions" not in repr(gen)
    with pytest.raises(ValueError, match=r"guidance_scale: classifier-free guidance steers toward a condition, and "
                                         r"this toy model takes none"):
        gen.generate(4, guidance_scale=2.0, steps=2)
    assert main(["sample", str(unconditional_ckpt), "--guidance-scale", "2", "--num", "4", "--steps", "2",
                 "--out", str(tmp_path / "s")]) == 2
    assert "this toy model takes none" in capsys.readouterr().err and not (tmp_path / "s").exists()


def test_condition_on_a_conditional_model_is_used():
    """The label reaches the network on every call, and changes the samples."""
    import torch

    toy = ToyModality()
    data = gmm_dataset(k=4, n=64, n_test=8)
    cfg = from_dict({"modality": "toy", "data": {"name": "gmm", "k": 4, "n": 64, "n_test": 8},
                     "model": {"name": "mlp", "hidden": 16, "depth": 1, "conditional": True}}, source="t.yaml")
    fields = toy.fields(data.info)
    net = toy.network("mlp", data.info, fields, hidden=16, depth=1, conditional=True)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # new weights: the residual blocks start as the identity, which would hide the label
        for p in net.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=g))
    labels = []
    net.register_forward_pre_hook(lambda module, args: labels.append(args[0].get("label")))
    gen = Generator(toy, cfg, data.info, fields, net)
    assert list(gen.conditions) == ["label"] and "conditions label" in repr(gen)

    two = gen.generate(3, condition={"label": 2}, steps=2, seed=0)
    assert two.shape == (3, 2)
    assert len(labels) >= 2, "the network was not called once per step"
    assert all(v is not None and v.tolist() == [2, 2, 2] for v in labels), labels
    np.testing.assert_array_equal(gen.generate(3, condition={"label": 2}, steps=2, seed=0), two)  # reproducible
    zero = gen.generate(3, condition={"label": 0}, steps=2, seed=0)
    assert np.abs(zero - two).max() > 1e-3  # same noise, another label: other samples


def test_cli_condition_on_an_unconditional_model_exits_2_with_one_line(unconditional_ckpt, tmp_path, capsys):
    out = tmp_path / "samples"
    rc = main(["sample", str(unconditional_ckpt), "--condition", "label=3", "--out", str(out), "--num", "4",
               "--steps", "2"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert err[0].startswith("polydiff: error: unknown condition 'label': the model was not trained with it; "
                             "the model is unconditional")
    assert not out.exists()                                          # nothing written, no metadata recorded


def test_object_sizes_are_drawn_or_given_and_bad_counts_name_the_condition():
    import torch

    from polydiff.plugin import object_sizes

    info = {"size_hist": [0, 0, 0, 1]}  # every drawn size is 3
    assert object_sizes(4, info, torch.Generator().manual_seed(0)).tolist() == [3, 3, 3, 3]
    assert object_sizes(3, info, given=5, name="atoms").tolist() == [5, 5, 5]
    assert object_sizes(2, info, given=[4, 6], name="atoms").tolist() == [4, 6]
    assert object_sizes(2, info, given=7.0).tolist() == [7, 7]  # a whole float (YAML "7.0") is a count
    assert object_sizes(2, info, given=torch.tensor([2, 3]), minimum=2).tolist() == [2, 3]
    for bad in ("abc", 2.5, float("nan"), 0, True, [1, 2, 3], [4, "x"]):
        with pytest.raises(ValueError, match=r"condition 'atoms': expected a whole number of at least 1"):
            object_sizes(2, info, given=bad, name="atoms")
    with pytest.raises(ValueError, match=r"condition 'length': expected a whole number of at least 2"):
        object_sizes(2, info, given=1, name="length", minimum=2)


def test_a_plugin_command_given_another_modalitys_checkpoint_says_so(unconditional_ckpt, capsys):
    pytest.importorskip("polydiff_text")
    assert main(["text", "complete", str(unconditional_ckpt), "--prompt", "a"]) == 2
    assert "a 'toy' model; this command needs a 'text' model" in capsys.readouterr().err
    with pytest.raises(ValueError, match="a 'toy' model; this command needs a 'graphs' model"):
        polydiff.load(unconditional_ckpt, modality="graphs")
    assert polydiff.load(unconditional_ckpt, modality="toy").modality.name == "toy"


def test_outputs_never_replace_what_the_command_reads(unconditional_ckpt, tmp_path, capsys):
    """calibrate --out CKPT turned the checkpoint into grid JSON; evaluate --json into a samples
    folder replaced its files; --overwrite of an output folder deleted an input inside it."""
    from polydiff.cli import output_folder, refuse_inputs

    before = unconditional_ckpt.read_bytes()
    assert main(["calibrate", str(unconditional_ckpt), "--steps", "2", "--sampler", "unipc", "--pilot", "8",
                 "--out", str(unconditional_ckpt), "--overwrite"]) == 2
    assert "--out is the checkpoint this command reads" in capsys.readouterr().err
    assert unconditional_ckpt.read_bytes() == before
    samples = tmp_path / "s"
    assert main(["sample", str(unconditional_ckpt), "--num", "4", "--steps", "2", "--out", str(samples)]) == 0
    meta = (samples / "polydiff.json").read_bytes()
    assert main(["evaluate", str(samples), "--json", str(samples / "polydiff.json")]) == 2
    assert "--json is a file inside the target" in capsys.readouterr().err and \
        (samples / "polydiff.json").read_bytes() == meta
    refuse_inputs(samples / "metrics.json", {"target": samples})  # a new file beside the samples is fine,
    (samples / "metrics.json").write_text("{}")                      # and so is replacing that report
    refuse_inputs(samples / "metrics.json", {"target": samples})
    with pytest.raises(FileExistsError, match=r"is a file inside the target"):  # but not a sample
        refuse_inputs(samples / "samples.csv", {"target": samples})
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "a.csv").write_text("1,2\n")  # a user's folder: any file there may be data
    with pytest.raises(FileExistsError, match=r"is a file inside the target"):
        refuse_inputs(tmp_path / "mine" / "a.csv", {"target": tmp_path / "mine"})
    mine = tmp_path / "out" / "mine.pdb"
    mine.parent.mkdir()
    mine.write_text("x")
    (mine.parent / "done.json").write_text("{}")
    with pytest.raises(FileExistsError, match=r"--out is a folder holding the motif"):
        with output_folder(mine.parent, True, "done.json", inputs={"motif": mine}):
            pass
    assert mine.read_text() == "x"
    with pytest.raises(FileExistsError, match=r"already exists; pass --overwrite to replace it, or choose another "
                                              r"--plot"):
        from polydiff.cli import output_file

        output_file(mine, False, flag="--plot")


def test_a_checkpoint_without_its_data_info_is_named(unconditional_ckpt, tmp_path):
    import torch

    ckpt = torch.load(unconditional_ckpt, map_location="cpu", weights_only=True)
    del ckpt["polydiff"]["info"]
    torch.save(ckpt, tmp_path / "noinfo.ckpt")
    with pytest.raises(ValueError, match=r"noinfo\.ckpt: the checkpoint's polydiff metadata has no info"):
        polydiff.load(tmp_path / "noinfo.ckpt")


def test_training_keeps_the_users_recipe_and_a_failed_start_leaves_nothing(tmp_path, capsys):
    """Training from OUT/config.yaml rewrote it (comments gone, overrides baked in); devices=-1 on
    a CPU machine was a traceback that left a folder holding only config.yaml."""
    import yaml

    exp = tmp_path / "exp"
    exp.mkdir()
    recipe = exp / "config.yaml"
    recipe.write_text("# my notes\n" + yaml.safe_dump(TINY, sort_keys=False))
    before = recipe.read_bytes()
    assert main(["train", str(recipe), "--out", str(exp), "--set", "train.max_steps=2"]) == 0
    assert recipe.read_bytes() == before and (exp / "checkpoints" / "last.ckpt").is_file()
    capsys.readouterr()
    assert main(["train", str(recipe), "--out", str(tmp_path / "new"), "--set", "train.devices=-1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "devices" in err[0] and not (tmp_path / "new").exists()


def test_toy_network_sizes_must_be_positive():
    """model.hidden=0 trained a network of nothing, silently."""
    toy = ToyModality()
    data = gmm_dataset(k=2, n=40, n_test=8)
    fields = toy.fields(data.info)
    for name in ("mlp", "two_time_mlp"):
        for key, value in (("hidden", 0), ("emb_dim", -1), ("depth", 1.5)):
            with pytest.raises(ValueError, match=rf"model\.{key} must be"):
                toy.network(name, data.info, fields, **{key: value})
    assert toy.network("mlp", data.info, fields, hidden=8, depth=0) is not None
