"""Recipes, training, checkpoints, exact resumption, DDP and the Generator."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback

import polydiff
from polydiff.config import ConfigError, build_fields, from_dict, load_config
from polydiff.generator import CheckpointError, evaluate_samples, load_checkpoint
from polydiff.toy.data import TensorStates
from polydiff.training import StepBatches

SRC = "configs/x.yaml"


def tiny(**train) -> dict:
    """A recipe that trains in about a second."""
    return {"modality": "toy", "data": {"name": "gmm", "n": 500},
            "model": {"name": "mlp", "hidden": 16, "depth": 1, "emb_dim": 16},
            "process": {"schedule": "vp_cosine", "prediction": "eps"},
            "train": {"max_steps": 12, "batch_size": 32, "checkpoint_every": 4, "progress": False,
                      "accelerator": "cpu", "devices": 1, "warmup": 3, "ema": 0.9, "log_every": 4, "threads": 1,
                      **train},
            "sample": {"num": 64, "steps": 5}}


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["state_dict"]


# ---------------------------------------------------------------------------------------------
# recipes
# ---------------------------------------------------------------------------------------------

def test_unknown_key_names_file_path_and_allowed_keys():
    with pytest.raises(ConfigError) as err:
        from_dict({"modality": "toy", "train": {"lrr": 1e-3}}, SRC)
    msg = str(err.value)
    assert msg.startswith("configs/x.yaml: unknown key 'train.lrr' (did you mean 'lr'?); allowed: max_steps, "
                          "batch_size, lr,")
    with pytest.raises(ConfigError, match=r"unknown key 'trian' \(did you mean 'train'\?\); allowed: modality, data"):
        from_dict({"modality": "toy", "trian": {}}, SRC)


def test_wrong_types_are_named():
    with pytest.raises(ConfigError, match=r"^configs/x\.yaml: train\.lr: expected a number, got 'abc'$"):
        from_dict({"modality": "toy", "train": {"lr": "abc"}}, SRC)
    with pytest.raises(ConfigError, match=r"train\.max_steps: expected an integer, got 2\.5"):
        from_dict({"modality": "toy", "train": {"max_steps": 2.5}}, SRC)
    with pytest.raises(ConfigError, match=r"train\.progress: expected true or false, got 3"):
        from_dict({"modality": "toy", "train": {"progress": 3}}, SRC)
    with pytest.raises(ConfigError, match=r"train\.precision: expected one of 32, 64, bf16-mixed"):
        from_dict({"modality": "toy", "train": {"precision": "8bit"}}, SRC)
    with pytest.raises(ConfigError, match=r"train\.devices: expected an integer or a string or a list"):
        from_dict({"modality": "toy", "train": {"devices": 1.5}}, SRC)
    with pytest.raises(ConfigError, match=r"^configs/x\.yaml: train: expected a mapping, got 5$"):
        from_dict({"modality": "toy", "train": 5}, SRC)


def test_yaml_ambiguities_are_resolved():
    cfg = from_dict({"modality": "toy", "train": {"lr": "1e-3", "precision": 32, "max_steps": "1e3",
                                                  "devices": [0, 1]}}, SRC)
    assert cfg.train.lr == 1e-3 and cfg.train.precision == "32" and cfg.train.max_steps == 1000
    assert cfg.train.devices == [0, 1]


def test_unknown_names_error_through_the_registries():
    with pytest.raises(ConfigError, match=r"configs/x\.yaml: sample\.sampler: unknown sampler 'eulr'\. "
                                          r"Did you mean 'euler'\? Allowed: .*ddim"):
        from_dict({"modality": "toy", "sample": {"sampler": "eulr"}}, SRC)
    with pytest.raises(ConfigError, match=r"unknown key 'sample\.etaa' \(did you mean 'eta'\?\); allowed: .*eta"):
        from_dict({"modality": "toy", "sample": {"sampler": "ddim", "etaa": 1.0}}, SRC)
    with pytest.raises(ConfigError, match=r"loss\.weighting: unknown loss weighting 'snrr'"):
        from_dict({"modality": "toy", "loss": {"weighting": "snrr"}}, SRC)
    with pytest.raises(ConfigError, match=r"unknown key 'loss\.gama' \(did you mean 'gamma'\?\); allowed: .*gamma"):
        from_dict({"modality": "toy", "loss": {"weighting": "min_snr", "gama": 5}}, SRC)
    gamma = from_dict({"modality": "toy", "loss": {"weighting": "min_snr", "gamma": 3}}, SRC).loss.options
    assert gamma == {"gamma": 3.0}
    cfg = from_dict({"modality": "toy", "process": {"schedule": "vp_cosinus"}}, SRC)
    toy = polydiff.load_modality("toy")
    with pytest.raises(ConfigError, match=r"configs/x\.yaml: process: unknown schedule 'vp_cosinus'"):
        build_fields(cfg, toy, {"dim": 2})


def test_yaml_file_overrides_and_roundtrip(tmp_path):
    f = tmp_path / "r.yaml"
    f.write_text("modality: toy\ntrain:\n  lr: 1.0e-3\nsample: {sampler: ddim, eta: 0.5}\n")
    cfg = load_config(f, ["train.lr=0.01", "model.hidden=8", "sample.steps=7"])
    assert cfg.train.lr == 0.01 and cfg.model.options == {"hidden": 8} and cfg.sample.steps == 7
    assert cfg.sample.options == {"eta": 0.5}
    again = from_dict(cfg.to_dict(), "again")
    assert again == cfg and json.loads(json.dumps(cfg.to_dict())) == cfg.to_dict()
    with pytest.raises(ConfigError, match=r"r\.yaml: --set expects key\.path=value, got 'train\.lr'"):
        load_config(f, ["train.lr"])
    with pytest.raises(ConfigError, match=r"r\.yaml \(with --set\): train\.lr: expected a number, got 'x'"):
        load_config(f, ["train.lr=x"])
    # '~key' removes a recipe key (one another --set made invalid); a key that is not there is an error
    assert load_config(f, ["~sample.eta"]).sample.options == {}
    with pytest.raises(ConfigError, match=r"--set ~sample\.etaa: the recipe has no key 'sample\.etaa' to remove"):
        load_config(f, ["~sample.etaa"])
    f.write_text("train: [1,\n")
    with pytest.raises(ConfigError, match=r"r\.yaml: not valid YAML"):
        load_config(f)
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "none.yaml")


def test_shipped_recipes_are_valid():
    root = Path(__file__).resolve().parents[2] / "configs" / "toy"
    for f in sorted(root.glob("*.yaml")):
        cfg = load_config(f)
        assert cfg.modality == "toy"


# ---------------------------------------------------------------------------------------------
# data order
# ---------------------------------------------------------------------------------------------

def test_batches_are_a_pure_function_of_seed_step_rank():
    ds = TensorStates(x=torch.arange(50.0)[:, None])
    a, b = StepBatches(ds, 8, seed=1), StepBatches(ds, 8, seed=1)
    assert torch.equal(a.batch(17)["x"], b.batch(17)["x"])
    assert not torch.equal(a.batch(17)["x"], StepBatches(ds, 8, seed=2).batch(17)["x"])
    it = iter(StepBatches(ds, 8, seed=1, start=5))
    for step in range(5, 12):
        assert torch.equal(next(it)["x"], a.batch(step)["x"])
    # each epoch is a permutation: 50 samples, batches of 10 -> steps 0..4 cover everything once
    seen = torch.cat([StepBatches(ds, 10, seed=3).indices(s) for s in range(5)])
    assert sorted(seen.tolist()) == list(range(50))


def test_ranks_see_disjoint_data_and_workers_keep_the_order():
    ds = TensorStates(x=torch.arange(64.0)[:, None])
    r0 = torch.cat([StepBatches(ds, 8, seed=0, rank=0, world=2).indices(s) for s in range(4)])
    r1 = torch.cat([StepBatches(ds, 8, seed=0, rank=1, world=2).indices(s) for s in range(4)])
    assert not set(r0.tolist()) & set(r1.tolist())
    assert sorted(r0.tolist() + r1.tolist()) == list(range(64))
    one = StepBatches(ds, 8, seed=0, start=3)
    loader = torch.utils.data.DataLoader(StepBatches(ds, 8, seed=0, start=3), batch_size=None, num_workers=2)
    for step, batch in zip(range(3, 9), loader):
        assert torch.equal(batch["x"], one.batch(step)["x"])


# ---------------------------------------------------------------------------------------------
# training and checkpoints
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> polydiff.training.Run:
    """12 steps without interruption (shared by several tests)."""
    return polydiff.train(tiny(), tmp_path_factory.mktemp("straight"), verbose=False)


def test_train_and_load_leave_the_callers_random_stream_alone(tmp_path, straight):
    """Training seeds torch from ``train.seed`` and loading builds a network before its weights
    arrive; neither moves the caller's own stream (a notebook's next draws stay the same)."""
    torch.manual_seed(7)
    expected = torch.rand(5)
    torch.manual_seed(7)
    polydiff.train(tiny(max_steps=2, checkpoint_every=2), tmp_path / "run", verbose=False)
    polydiff.load(straight.checkpoint)
    assert torch.equal(torch.rand(5), expected)


def test_train_writes_checkpoints_logs_and_config(straight):
    out = straight.out_dir
    assert straight.step == 12 and straight.checkpoint == out / "checkpoints" / "last.ckpt"
    names = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert names == ["last.ckpt", "step-00000004.ckpt", "step-00000008.ckpt", "step-00000012.ckpt"]
    assert "train/loss" in straight.metrics and np.isfinite(straight.metrics["train/loss"])
    rows = (out / "logs" / "version_0" / "metrics.csv").read_text().splitlines()
    assert rows[0].split(",")[:2] == ["epoch", "step"] or "train/loss" in rows[0]
    assert len(rows) == 4  # header + steps 4, 8, 12
    assert load_config(out / "config.yaml").to_dict() == from_dict(tiny()).to_dict()


def test_keep_checkpoints_keeps_the_newest_step_files_and_resumes(tmp_path):
    out = tmp_path / "run"
    polydiff.train(tiny(max_steps=8, keep_checkpoints=2), out, verbose=False)
    names = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert names == ["last.ckpt", "step-00000004.ckpt", "step-00000008.ckpt"]
    run = polydiff.train(tiny(max_steps=16, keep_checkpoints=1), out, verbose=False)  # a resume may change it
    assert run.step == 16
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["last.ckpt", "step-00000016.ckpt"]
    with pytest.raises(ConfigError, match=r"train\.keep_checkpoints: expected a non-negative integer"):
        from_dict(tiny(keep_checkpoints=-1))


def test_training_progress_in_a_log_is_a_few_plain_lines(tmp_path, capfd):
    polydiff.train(tiny(max_steps=20, progress=True), tmp_path / "run", verbose=True)
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("polydiff: training ")]
    assert "\r" not in err and 5 <= len(lines) <= 12  # about every 10 %, not a bar redrawn per step
    assert "polydiff: training 20/20 steps (100%)" in err and "loss " in lines[-2]


def test_checkpoints_load_with_weights_only(straight):
    ckpt = torch.load(straight.checkpoint, weights_only=True)
    meta = ckpt["polydiff"]
    assert meta["config"] == from_dict(tiny()).to_dict()
    assert meta["info"]["dim"] == 2 and json.loads(json.dumps(meta["info"])) == meta["info"]
    assert any(k.startswith("ema.") for k in ckpt["state_dict"]) and ckpt["optimizer_states"]
    assert ckpt["global_step"] == 12
    step4 = torch.load(straight.out_dir / "checkpoints" / "step-00000004.ckpt", weights_only=True)
    assert step4["global_step"] == 4


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_arbitrary_pickles_are_refused(tmp_path):
    bad = tmp_path / "evil.ckpt"
    torch.save({"polydiff": {}, "state_dict": {}, "payload": Evil()}, bad)
    with pytest.raises(CheckpointError, match=r"evil\.ckpt: refusing to load: .*weights_only=True"):
        load_checkpoint(bad)
    with pytest.raises(CheckpointError, match="refusing to load"):
        polydiff.load(bad)
    plain = tmp_path / "plain.ckpt"
    torch.save({"weights": torch.zeros(2)}, plain)
    with pytest.raises(CheckpointError, match="not a polydiff checkpoint"):
        load_checkpoint(plain)
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(pickle.dumps([1, 2]) + b"garbage")
    with pytest.raises(CheckpointError, match=r"junk\.ckpt: "):
        load_checkpoint(junk)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "none.ckpt")


class Kill(Callback):
    """Simulates a crash right after step ``at`` (after the checkpoint of step ``at - 2``)."""

    def __init__(self, at: int) -> None:
        self.at = at

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.at:
            raise RuntimeError("killed")


def test_killed_and_resumed_run_equals_the_straight_run(straight, tmp_path, capsys):
    with pytest.raises(RuntimeError, match="killed"):
        polydiff.train(tiny(), tmp_path, verbose=False, callbacks=[Kill(6)])
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 4
    run = polydiff.train(tiny(), tmp_path)
    assert run.resumed_from == tmp_path / "checkpoints" / "last.ckpt" and run.step == 12
    assert "resuming from" in capsys.readouterr().out
    a, b = weights(straight.checkpoint), weights(run.checkpoint)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=0, msg=k)
    oa = torch.load(straight.checkpoint, weights_only=True)["optimizer_states"][0]["state"]
    ob = torch.load(run.checkpoint, weights_only=True)["optimizer_states"][0]["state"]
    torch.testing.assert_close(oa, ob, atol=1e-6, rtol=0)


def test_extending_a_finished_run_equals_the_longer_run(straight, tmp_path):
    polydiff.train(tiny(max_steps=8), tmp_path, verbose=False)
    run = polydiff.train(tiny(), tmp_path, verbose=False)
    assert run.step == 12
    a, b = weights(straight.checkpoint), weights(run.checkpoint)
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=0, msg=k)
    fresh = polydiff.train(tiny(max_steps=4), tmp_path, verbose=False, fresh=True)
    assert fresh.resumed_from is None and fresh.step == 4
    assert not list((tmp_path / "checkpoints").glob(".*"))  # no temporary files left behind


def test_condition_dropout_trains_the_null_embedding(tmp_path):
    recipe = tiny(max_steps=6, ema=0.0)
    recipe["model"]["conditional"] = True
    for drop, moved in ((0.0, False), (0.5, True)):
        recipe["loss"] = {"cond_drop": drop}
        run = polydiff.train(recipe, tmp_path / str(drop), verbose=False)
        w = weights(run.checkpoint)
        assert not any(k.startswith("ema.") for k in w)
        assert bool(w["net.cond.null.label"].abs().sum() > 0) == moved
    gen = polydiff.load(run.checkpoint)
    cond = gen.generate(4, seed=0, steps=4, condition={"label": 1})
    assert cond.shape == (4, 2)
    assert gen.generate(4, seed=0, steps=4).shape == (4, 2)  # no label: the null (unconditional) embedding
    guided = gen.generate(4, seed=0, steps=4, condition={"label": 1}, guidance_scale=3.0)
    assert not np.allclose(guided, cond)  # classifier-free guidance through polydiff.steering
    np.testing.assert_allclose(gen.generate(4, seed=0, steps=4, condition={"label": 1}, guidance_scale=1.0), cond,
                               atol=1e-5)  # scale 1 is the conditional model


def test_techniques_from_the_recipe(tmp_path):
    recipe = tiny(max_steps=3, checkpoint_every=3)
    recipe["loss"] = {"techniques": {"immiscible": True, "self_condition": 0.5}}
    run = polydiff.train(recipe, tmp_path, verbose=False)
    assert run.step == 3 and np.isfinite(run.metrics["train/loss"])
    with pytest.raises(ConfigError, match=r"unknown key 'loss\.techniques\.imiscible' \(did you mean "
                                          r"'immiscible'\?\); allowed: immiscible"):
        from_dict({"modality": "toy", "loss": {"techniques": {"imiscible": True}}}, SRC)
    with pytest.raises(ConfigError, match=r"loss\.techniques\.cond_drop: condition dropout is set twice"):
        from_dict({"modality": "toy", "loss": {"cond_drop": 0.1, "techniques": {"cond_drop": 0.2}}}, SRC)
    recipe = tiny(max_steps=2)
    recipe["data"] = {"name": "csv", "path": str(tmp_path / "p.csv")}
    recipe["loss"] = {"cond_drop": 0.1}
    (tmp_path / "p.csv").write_text("".join(f"{i},{-i}\n" for i in range(40)))
    with pytest.raises(ConfigError, match=r"loss\.cond_drop: the data has no conditions"):
        polydiff.train(recipe, tmp_path / "csv", verbose=False)


# ---------------------------------------------------------------------------------------------
# the generator
# ---------------------------------------------------------------------------------------------

def test_generate_does_not_depend_on_batch_size(straight):
    gen = polydiff.load(straight.checkpoint)
    assert gen.step == 12
    full = gen.generate(10, seed=0, steps=4)
    np.testing.assert_allclose(full[:5], gen.generate(5, seed=0, steps=4), atol=1e-5)
    np.testing.assert_allclose(full, gen.generate(10, seed=0, steps=4, batch_size=3), atol=1e-5)
    assert not np.allclose(full, gen.generate(10, seed=1, steps=4))
    states = gen.sample_states(6, seed=0, steps=4, batch_size=4, sampler="ddim", eta=1.0)
    assert states["x"].shape == (6, 2)
    with pytest.raises(polydiff.RegistryError, match="has no option"):
        gen.generate(2, seed=0, steps=2, sampler="euler", eta=1.0)


def test_generator_uses_ema_weights(straight):
    ema, raw = polydiff.load(straight.checkpoint), polydiff.load(straight.checkpoint, ema=False)
    w = weights(straight.checkpoint)
    torch.testing.assert_close(ema.net.state_dict()["mlp.inp.weight"], w["ema.mlp.inp.weight"])
    torch.testing.assert_close(raw.net.state_dict()["mlp.inp.weight"], w["net.mlp.inp.weight"])


def test_recipe_can_ask_for_the_raw_weights(straight, tmp_path):
    ckpt = torch.load(straight.checkpoint, weights_only=True)
    ckpt["polydiff"]["config"]["sample"]["ema"] = False  # a recipe with sample.ema: false (GDSS's use_ema: False)
    torch.save(ckpt, tmp_path / "raw.ckpt")
    w = weights(straight.checkpoint)
    got = polydiff.load(tmp_path / "raw.ckpt").net.state_dict()["mlp.inp.weight"]
    torch.testing.assert_close(got, w["net.mlp.inp.weight"])
    got = polydiff.load(tmp_path / "raw.ckpt", ema=True).net.state_dict()["mlp.inp.weight"]  # an explicit choice wins
    torch.testing.assert_close(got, w["ema.mlp.inp.weight"])
    assert not torch.equal(w["net.mlp.inp.weight"], w["ema.mlp.inp.weight"])


def test_learning_rate_decays_per_epoch_and_adam_couples_weight_decay(tmp_path):
    from polydiff.training import _lr_factor

    t = from_dict(tiny(batch_size=40, warmup=0, lr_decay=0.5)).train
    # 100 samples, 40 per step: steps 0-2 start in epoch 0, steps 3-4 in epoch 1, step 5 in epoch 2
    assert [_lr_factor(t, 100, 1)(s) for s in range(6)] == [1, 1, 1, 0.5, 0.5, 0.25]
    assert [_lr_factor(t, 100, 2)(s) for s in range(4)] == [1, 1, 0.5, 0.25]  # two ranks: 80 samples per step
    warm = from_dict(tiny(batch_size=50, warmup=4, lr_decay=0.5)).train
    assert [_lr_factor(warm, 100, 1)(s) for s in range(4)] == [0.25, 0.5, 0.375, 0.5]
    run = polydiff.train(tiny(batch_size=100, warmup=0, lr_decay=0.5, max_steps=3, lr=0.01), tmp_path / "a",
                         verbose=False)  # data n=500: 5 steps per epoch, so 3 steps stay in epoch 0
    lr = torch.load(run.checkpoint, weights_only=True)["optimizer_states"][0]["param_groups"][0]["lr"]
    assert lr == pytest.approx(0.01)
    run = polydiff.train(tiny(batch_size=250, warmup=0, lr_decay=0.5, max_steps=5, lr=0.01), tmp_path / "b",
                         verbose=False)  # 2 steps per epoch: after step 5 the next one starts epoch 2
    lr = torch.load(run.checkpoint, weights_only=True)["optimizer_states"][0]["param_groups"][0]["lr"]
    assert lr == pytest.approx(0.01 * 0.5 ** 2)
    with pytest.raises(ConfigError, match=r"train\.lr_decay: expected a factor per epoch in \(0, 1\]"):
        from_dict(tiny(lr_decay=1.5))
    with pytest.raises(ConfigError, match=r"train\.optimizer"):
        from_dict(tiny(optimizer="sgd"))
    # Adam's weight decay is an L2 term of the gradient, AdamW's decoupled: different weights after a step
    a = polydiff.train(tiny(max_steps=2, weight_decay=0.5, optimizer="adam"), tmp_path / "adam", verbose=False)
    b = polydiff.train(tiny(max_steps=2, weight_decay=0.5), tmp_path / "adamw", verbose=False)
    c = polydiff.train(tiny(max_steps=2, weight_decay=0.0, optimizer="adam"), tmp_path / "adam0", verbose=False)
    d = polydiff.train(tiny(max_steps=2, weight_decay=0.0), tmp_path / "adamw0", verbose=False)
    wa, wb = weights(a.checkpoint)["net.mlp.inp.weight"], weights(b.checkpoint)["net.mlp.inp.weight"]
    assert not torch.allclose(wa, wb)
    torch.testing.assert_close(weights(c.checkpoint)["net.mlp.inp.weight"], weights(d.checkpoint)["net.mlp.inp.weight"])


def test_save_is_atomic_and_evaluable(straight, tmp_path, monkeypatch):
    gen = polydiff.load(straight.checkpoint)
    x = gen.generate(64, seed=0, steps=4)
    out = tmp_path / "samples"
    paths = gen.save(x, out, metadata={"seed": 0})
    assert [p.name for p in paths] == ["samples.csv"]
    meta = json.loads((out / "polydiff.json").read_text())
    assert meta["modality"] == "toy" and meta["num"] == 64 and meta["seed"] == 0
    m = evaluate_samples(out).metrics
    assert m == pytest.approx(gen.evaluate(x)) and {"sw2", "mean_error", "cov_error", "loglik"} <= set(m)
    with pytest.raises(FileExistsError):
        gen.save(x, out)

    def broken(objects, out_dir):
        (Path(out_dir) / "samples.csv").write_text("half")
        raise RuntimeError("disk full")

    monkeypatch.setattr(gen.modality, "write", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        gen.save(x, out, overwrite=True)
    np.testing.assert_array_equal(gen.modality.read(out), x)  # the earlier output is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["samples"]  # no temporary folders left
    monkeypatch.undo()
    gen.save(x[:10], out, overwrite=True)
    assert len(gen.modality.read(out)) == 10


# ---------------------------------------------------------------------------------------------
# several processes
# ---------------------------------------------------------------------------------------------

def _train_cli(recipe: dict, out: Path, cwd: Path) -> subprocess.CompletedProcess:
    path = cwd / f"{out.name}.json"
    path.write_text(json.dumps(recipe))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, "-m", "polydiff.cli", "train", str(path), "--out", str(out)],
                          capture_output=True, text=True, timeout=180, env=env, cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_ddp_with_two_cpu_processes(tmp_path):
    """Lightning's DDP launcher re-runs the command per rank, so this goes through the CLI."""
    proc = _train_cli(tiny(max_steps=4, checkpoint_every=2, strategy="ddp", devices=2), tmp_path / "run", tmp_path)
    assert "trained to step 4" in proc.stdout
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    fp = ckpt["polydiff"]["data_fingerprints"]
    assert ckpt["global_step"] == 4 and len(fp) == 2 and fp[0] != fp[1]  # each rank trained on its own data
    assert polydiff.load(tmp_path / "run" / "checkpoints" / "last.ckpt").generate(3, seed=0).shape == (3, 2)


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory) -> tuple[dict, Path]:
    """Two DDP processes, 6 steps, checkpoints at 3 and 6: the reference the FSDP runs must equal.
    Self-conditioning is on: its first pass, made in some steps only, calls the network once more,
    and under FSDP every call gathers shards, so the ranks must agree on those steps."""
    recipe = tiny(max_steps=6, checkpoint_every=3, devices=2, grad_clip=0.05, strategy="ddp")
    recipe["loss"] = {"techniques": {"self_condition": 0.5}}
    cwd = tmp_path_factory.mktemp("ddp")
    _train_cli(recipe, cwd / "ddp", cwd)
    return recipe, cwd / "ddp"


def _training_state(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """A checkpoint's weights (network and EMA) and Adam's moments by parameter name, whether it
    is one file or a folder of shards."""
    from polydiff.checkpoints import load_checkpoint, read_shards

    ckpt = load_checkpoint(path)
    if "sharded" in ckpt:
        return ckpt["state_dict"], read_shards(path, "optimizer_0.state.")
    names = [f"net.{n}" for n, _ in polydiff.load(path).net.named_parameters()]
    state = ckpt["optimizer_states"][0]["state"]
    return ckpt["state_dict"], {f"{names[i]}.{k}": v for i, moments in state.items() for k, v in moments.items()}


@pytest.mark.parametrize("fmt", ["full", "sharded"])
def test_fsdp_with_ema_on_two_cpu_processes_equals_ddp(ddp_run, tmp_path, fmt):
    """``strategy: fsdp`` shards the network, its EMA and Adam's moments over two gloo processes.
    Gradients are averaged as under DDP, so the weights, the EMA and the optimizer state must
    match a DDP run, here after a run stopped at step 3 and resumed to 6 (gradient clipping on:
    the global norm is computed across shards). Fails if the EMA's shards do not face the
    network's (one flat parameter for both) or if checkpoints read freed memory (torch's
    offload of gathered state to the CPU, which frees it when it is already there).

    ``sharded``: every checkpoint is a folder of per-rank shards (no rank gathers the state);
    the run resumes from one, and ``polydiff.load`` reads it whole in one process."""
    recipe, ddp = ddp_run
    fsdp = {**recipe, "train": {**recipe["train"], "strategy": "fsdp", "checkpoint_format": fmt}}
    _train_cli({**fsdp, "train": {**fsdp["train"], "max_steps": 3}}, tmp_path / "fsdp", tmp_path)
    assert "trained to step 6" in _train_cli(fsdp, tmp_path / "fsdp", tmp_path).stdout  # resumed at step 3
    folder = tmp_path / "fsdp" / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == ["last.ckpt", "step-00000003.ckpt", "step-00000006.ckpt"]
    assert all(p.is_dir() == (fmt == "sharded") for p in folder.iterdir())
    for name in ("step-00000003.ckpt", "last.ckpt"):
        want, got = _training_state(ddp / "checkpoints" / name), _training_state(folder / name)
        assert sorted(got[0]) == sorted(want[0]) and any(k.startswith("ema.") for k in got[0])
        for k, w in want[0].items():
            torch.testing.assert_close(got[0][k], w, rtol=0, atol=1e-6, msg=f"{name}: {k}")
        assert sorted(got[1]) == sorted(want[1])
        for k, w in want[1].items():
            torch.testing.assert_close(got[1][k], w, rtol=1e-4, atol=1e-9, msg=f"{name}: Adam {k}")
    assert polydiff.load(folder / "last.ckpt").generate(3, seed=0).shape == (3, 2)


def test_a_sharded_checkpoint_resumes_on_another_number_of_processes(ddp_run, tmp_path):
    """A checkpoint sharded by two FSDP processes resumes on one (torch's distributed checkpoint
    reshards it): the run continues as one resumed from the single-file checkpoint of the same
    step does. Both continue with sharded checkpoints, so the second one's file ``last.ckpt``
    is replaced by a folder."""
    recipe, ddp = ddp_run
    one = {**recipe, "train": {**recipe["train"], "strategy": "fsdp", "devices": 1, "checkpoint_format": "sharded"}}
    sharded = {**one, "train": {**one["train"], "devices": 2, "max_steps": 3}}
    _train_cli(sharded, tmp_path / "sharded", tmp_path)
    (tmp_path / "file" / "checkpoints").mkdir(parents=True)
    shutil.copyfile(ddp / "checkpoints" / "step-00000003.ckpt", tmp_path / "file" / "checkpoints" / "last.ckpt")
    for run in ("sharded", "file"):
        assert "resuming from" in _train_cli(one, tmp_path / run, tmp_path).stdout
    assert (tmp_path / "file" / "checkpoints" / "last.ckpt").is_dir()
    want, got = (_training_state(tmp_path / run / "checkpoints" / "last.ckpt") for run in ("file", "sharded"))
    for a, b in zip(want, got):
        assert sorted(a) == sorted(b)
        for k in a:
            torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-6, msg=k)


def test_fsdp_strategy_wraps_network_and_ema_as_units_of_their_own():
    """``fsdp`` gets a wrap policy naming exactly the network and its EMA (and the CPU variant
    without a GPU); other strategies pass to Lightning as written; an EMA under an FSDP wrap
    that did not make those units is refused on several processes."""
    from types import SimpleNamespace

    from lightning.pytorch.strategies import FSDPStrategy

    from polydiff.training import AtomicFSDPStrategy, CPUFSDPStrategy, DiffusionModule, _check_ema_units, _strategy

    cfg = from_dict(tiny(strategy="fsdp"), SRC)
    fields = build_fields(cfg, polydiff.load_modality("toy"), {"dim": 2})
    module = DiffusionModule(torch.nn.Linear(2, 2), fields, cfg, {"dim": 2})
    strategy = _strategy(cfg.train, module)
    assert isinstance(strategy, CPUFSDPStrategy)
    policy = strategy.kwargs["auto_wrap_policy"]
    assert [m for m in (module, module.net, module.ema, torch.nn.Linear(2, 2)) if policy._lambda_fn(m)] == \
        [module.net, module.ema]
    assert _strategy(from_dict(tiny(strategy="ddp"), SRC).train, module) == "ddp"
    gpu = from_dict(tiny(strategy="fsdp", accelerator="gpu", checkpoint_format="sharded"), SRC).train
    assert type(_strategy(gpu, module)) is AtomicFSDPStrategy and _strategy(gpu, module)._state_dict_type == "sharded"
    assert strategy._state_dict_type == "full"
    with pytest.raises(ConfigError, match=r"train\.checkpoint_format: sharded checkpoints are written by "
                                          r"train\.strategy: fsdp, not 'ddp'"):
        from_dict(tiny(strategy="ddp", checkpoint_format="sharded"), SRC)

    def fake(strategy: object, world_size: int) -> SimpleNamespace:
        trainer = SimpleNamespace(strategy=strategy, world_size=world_size)
        return SimpleNamespace(ema=module.ema, net=module.net, trainer=trainer)

    with pytest.raises(ValueError, match=r"train\.ema with this FSDP strategy"):
        _check_ema_units(fake(FSDPStrategy(), 2))
    _check_ema_units(fake(FSDPStrategy(), 1))
    _check_ema_units(fake("ddp", 2))


def test_train_init_starts_from_another_runs_weights(tmp_path):
    """Fine-tuning: ``train.init`` loads a checkpoint's (EMA) weights into a fresh run; another
    architecture is an error naming the key."""
    base = polydiff.train(tiny(max_steps=4, checkpoint_every=4), tmp_path / "base", verbose=False)
    start = {k[len("ema."):]: v for k, v in weights(base.checkpoint).items() if k.startswith("ema.")}
    seen = {}

    class First(Callback):
        def on_train_start(self, trainer, module):
            seen.update({k: v.clone() for k, v in module.net.state_dict().items()})

    polydiff.train(tiny(max_steps=2, init=str(base.checkpoint)), tmp_path / "tuned", verbose=False,
                   callbacks=[First()])
    assert seen and all(torch.equal(seen[k], start[k]) for k in start)
    bad = tiny(max_steps=2, init=str(base.checkpoint))
    bad["model"]["hidden"] = 8
    with pytest.raises(ConfigError, match=r"train\.init"):
        polydiff.train(bad, tmp_path / "bad", verbose=False)


def test_train_init_partial_keeps_matching_weights_and_leaves_new_ones_fresh(tmp_path, capsys):
    """``train.init_partial``: a deeper network starts from the shared layers of a shallower
    run (transfer learning onto a new head); the fresh tensors are reported; a model sharing no
    weight is still an error."""
    base = polydiff.train(tiny(max_steps=4, checkpoint_every=4), tmp_path / "base", verbose=False)
    start = {k[len("ema."):]: v for k, v in weights(base.checkpoint).items() if k.startswith("ema.")}
    seen = {}

    class First(Callback):
        def on_train_start(self, trainer, module):
            seen.update({k: v.clone() for k, v in module.net.state_dict().items()})

    deeper = tiny(max_steps=2, init=str(base.checkpoint), init_partial=True)
    deeper["model"]["depth"] = 2
    polydiff.train(deeper, tmp_path / "tuned", verbose=True, callbacks=[First()])
    same = [k for k in seen if k in start and seen[k].shape == start[k].shape]
    fresh = [k for k in seen if k not in same]
    assert same and fresh
    assert all(torch.equal(seen[k], start[k]) for k in same)
    assert "fresh:" in capsys.readouterr().err
    from polydiff.training import init_weights

    with pytest.raises(ConfigError, match="shares no weight"):
        init_weights(torch.nn.Linear(3, 7), base.checkpoint, partial=True)
    much_deeper = tiny(max_steps=1, init=str(base.checkpoint), init_partial=True)
    much_deeper["model"]["depth"] = 8  # most tensors start fresh: probably not the checkpoint meant
    with pytest.warns(UserWarning, match=r"train\.init: only \d+ of \d+ tensors"):
        polydiff.train(much_deeper, tmp_path / "much_deeper", verbose=False)
    with pytest.raises(ConfigError, match=r"my\.yaml: train\.init: runs/none\.ckpt: no such checkpoint"):
        init_weights(torch.nn.Linear(3, 7), "runs/none.ckpt", "my.yaml")


def test_a_diverging_run_stops_and_keeps_its_finite_checkpoints(tmp_path, monkeypatch):
    """A loss that turns NaN stops training with one error naming the step; no checkpoint of
    non-finite weights is written, so the last checkpoint stays usable."""
    from polydiff.errors import TrainingDiverged
    from polydiff.training import DiffusionModule

    out = tmp_path / "run"
    original = DiffusionModule.training_step

    def poisoned(self, batch, batch_idx):
        loss = original(self, batch, batch_idx)
        return loss * float("nan") if self.global_step >= 5 else loss  # NaN gradients from step 6 on

    monkeypatch.setattr(DiffusionModule, "training_step", poisoned)
    with pytest.raises(TrainingDiverged, match=r"training diverged (at|by) step 8"):
        polydiff.train(tiny(max_steps=12, log_every=4), out, verbose=False)
    names = sorted(p.name for p in (out / "checkpoints").iterdir() if p.suffix == ".ckpt")
    assert names == ["last.ckpt", "step-00000004.ckpt"]
    assert all(torch.isfinite(v).all() for v in weights(out / "checkpoints" / "last.ckpt").values()
               if v.is_floating_point())
    # one point of a CSV: a scale of 0 (the sample std of one point is NaN and poisoned every loss)
    (tmp_path / "one.csv").write_text("a,b\n1.0,2.0\n")
    cfg = tiny(max_steps=3)
    cfg["data"] = {"name": "csv", "path": str(tmp_path / "one.csv")}
    monkeypatch.setattr(DiffusionModule, "training_step", original)
    run = polydiff.train(cfg, tmp_path / "one", verbose=False)
    assert np.isfinite(run.metrics["train/loss"])


def test_validation_asked_of_a_dataset_without_a_validation_split_warns(tmp_path):
    (tmp_path / "pts.csv").write_text("a,b\n1.0,2.0\n1.5,2.5\n0.5,1.0\n")
    cfg = tiny(max_steps=2, val_every=1)
    cfg["data"] = {"name": "csv", "path": str(tmp_path / "pts.csv")}
    with pytest.warns(UserWarning, match=r"train\.val_every: 1, but dataset 'csv' has no validation split"):
        polydiff.train(cfg, tmp_path / "run", verbose=False)


@pytest.mark.parametrize("kind", ["adamw", "adam"])
def test_make_optimizer_fuses_and_matches_the_loop(kind: str) -> None:
    """Float parameters on a CPU get the fused kernel; its updates equal the per-parameter loop's
    up to float rounding; a non-float parameter keeps the loop."""
    from polydiff.config import TrainConfig
    from polydiff.training import make_optimizer

    cfg = TrainConfig(optimizer=kind, lr=1e-2, weight_decay=1e-2)
    torch.manual_seed(0)
    a = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 1))
    b = pickle.loads(pickle.dumps(a))
    start = [p.detach().clone() for p in a.parameters()]
    fused = make_optimizer(a.parameters(), cfg)
    loop = (torch.optim.Adam if kind == "adam" else torch.optim.AdamW)(b.parameters(), lr=1e-2, weight_decay=1e-2)
    assert fused.param_groups[0]["fused"] is True and not loop.param_groups[0]["fused"]
    x = torch.randn(16, 5)
    for _ in range(5):
        for net, opt in ((a, fused), (b, loop)):
            opt.zero_grad()
            net(x).square().mean().backward()
            opt.step()
    for p, q, p0 in zip(a.parameters(), b.parameters(), start):
        assert (p - p0).abs().max() > 1e-3  # the steps moved every parameter
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    ints = [torch.nn.Parameter(torch.zeros(3)),
            torch.nn.Parameter(torch.zeros(3, dtype=torch.int64), requires_grad=False)]
    assert not make_optimizer(ints, cfg).param_groups[0]["fused"]
