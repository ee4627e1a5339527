"""No lost work: resuming from the newest intact checkpoint after kill -9 (bit for bit), never
overwriting a run's checkpoints from a fresh start, clear errors for a changed recipe, one
command at a time per run folder, and sharded checkpoints handled like single files."""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml
from torch.distributed.checkpoint import save as save_shards

import polydiff
from polydiff import cli
from polydiff.checkpoints import (
    RESUME_KEYS,
    CheckpointError,
    ResumeError,
    checkpoint_files,
    consolidate,
    load_checkpoint,
    network_weights,
    newest_intact,
    open_intact,
    open_weights,
    read_shards,
    save_checkpoint_file,
)
from polydiff.config import from_dict, load_config
from polydiff.files import FolderBusy, folder_lock, publish, remove_temp_files
from polydiff.training import init_weights, resume_point

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "configs" / "toy" / "gmm.yaml"
# the toy recipe shrunk to about a second of training: 300 steps, a checkpoint every 10
SETS = ("model.hidden=16", "model.depth=1", "model.emb_dim=16", "data.n=500", "train.max_steps=300",
        "train.checkpoint_every=10", "train.batch_size=32", "train.warmup=10", "train.log_every=10",
        "train.progress=false", "train.accelerator=cpu", "train.threads=1")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}

# a polydiff command whose torch.save stalls half-way through writing the checkpoint named argv[1]
SLOW_WRITER = """
import io, os, sys, time
from pathlib import Path
import torch
real, target, marker = torch.save, sys.argv[1], Path(sys.argv[2])
def slow(obj, f, *args, **kwargs):
    if isinstance(f, (str, Path)) and Path(f).name.startswith("." + target + ".tmp-"):
        buf = io.BytesIO()
        real(obj, buf, *args, **kwargs)
        with open(f, "wb") as out:
            out.write(buf.getvalue()[: len(buf.getvalue()) // 2])
        marker.with_suffix(".tmp").write_text(str(f))
        os.replace(marker.with_suffix(".tmp"), marker)
        time.sleep(600)
    return real(obj, f, *args, **kwargs)
torch.save = slow
from polydiff.cli import main
sys.exit(main(sys.argv[3:]))
"""


def tiny(**train) -> dict:
    """A recipe that trains in well under a second (16 steps, a checkpoint every 4)."""
    return {"modality": "toy", "data": {"name": "gmm", "n": 300},
            "model": {"name": "mlp", "hidden": 16, "depth": 1, "emb_dim": 16},
            "train": {"max_steps": 16, "batch_size": 16, "checkpoint_every": 4, "progress": False,
                      "accelerator": "cpu", "devices": 1, "warmup": 3, "ema": 0.9, "log_every": 4, "threads": 1,
                      **train}}


def cli_args(out: Path, *sets: str) -> list[str]:
    return ["train", str(RECIPE), "--out", str(out), *(a for kv in (*SETS, *sets) for a in ("--set", kv))]


def spawn(out: Path, *sets: str, script: list[str] | None = None) -> subprocess.Popen:
    """``polydiff train`` of the shrunk toy recipe into ``out`` in a subprocess (``script``:
    ``python -c`` arguments to run instead of ``polydiff.cli``), its output going to a log file."""
    head = [sys.executable, "-c", *script] if script else [sys.executable, "-m", "polydiff.cli"]
    log = out.parent / f"{out.name}-{time.monotonic_ns()}.log"
    with log.open("w") as f:
        proc = subprocess.Popen([*head, *cli_args(out, *sets)], env=ENV, cwd=out.parent, stdout=f,
                                stderr=subprocess.STDOUT)
    proc.log = log  # type: ignore[attr-defined]
    return proc


def output(proc: subprocess.Popen) -> str:
    return proc.log.read_text()  # type: ignore[attr-defined]


def wait_for(proc: subprocess.Popen, ready: Callable[[], bool], timeout: float = 120) -> None:
    """Poll until ``ready()``; fail (killing ``proc``) if it exits first or takes too long."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"the command ended (status {proc.returncode}) too early:\n{output(proc)[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"timed out:\n{output(proc)[-3000:]}")
        time.sleep(0.002)


def kill9(proc: subprocess.Popen) -> None:
    proc.kill()  # SIGKILL
    assert proc.wait(30) == -9, output(proc)[-3000:]


def snapshot(folder: Path) -> dict[str, tuple[bytes, int, int]]:
    """Every file's bytes, mtime and inode: a file rewritten in place or replaced shows."""
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns, p.stat().st_ino) for p in sorted(folder.iterdir())}


def assert_same_state(a: Path, b: Path) -> None:
    """Bit-for-bit equal weights (network and EMA), optimizer, scheduler and step."""
    ca, cb = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    assert ca["global_step"] == cb["global_step"]
    sa, sb = ca["state_dict"], cb["state_dict"]
    assert sa.keys() == sb.keys() and any(k.startswith("ema.") for k in sa)
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    oa, ob = ca["optimizer_states"][0]["state"], cb["optimizer_states"][0]["state"]
    assert oa.keys() == ob.keys() and oa
    for i in oa:
        for k in oa[i]:
            assert torch.equal(torch.as_tensor(oa[i][k]), torch.as_tensor(ob[i][k])), (i, k)
    assert ca["lr_schedulers"] == cb["lr_schedulers"]


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    """The shrunk toy recipe trained without interruption (its run folder)."""
    out = tmp_path_factory.mktemp("straight") / "run"
    polydiff.train(load_config(RECIPE, SETS), out, verbose=False)
    return out


@pytest.fixture(scope="module")
def straight_tiny(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("straight_tiny") / "run"
    polydiff.train(tiny(), out, verbose=False)
    return out


# ---------------------------------------------------------------------------------------------
# kill -9 at random points, then resume
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1])
def test_sigkilled_run_resumes_to_the_uninterrupted_weights(straight, tmp_path, capsys, seed):
    """Three kills at seeded points (a seeded delay after a seeded checkpoint appears, so some
    land inside a save), each rerun resuming where the last left off; the final state and every
    step file equal the uninterrupted run's bit for bit, and no file is ever passed over."""
    rng = random.Random(seed)
    out = tmp_path / "run"
    ckpts = out / "checkpoints"
    resumed_at = 0
    for target in sorted(rng.sample(range(2, 16), 3)):  # checkpoints 20..150 of 300 steps
        step_file = ckpts / f"step-{10 * target:08d}.ckpt"
        proc = spawn(out)
        if resumed_at:  # a loaded machine can let the last run pass this target before its kill:
            wait_for(proc, lambda p=proc: "resuming from" in output(p))  # then kill after the resume
        wait_for(proc, step_file.exists)
        time.sleep(rng.uniform(0, 0.03))
        kill9(proc)
        log = output(proc)
        assert "skipping" not in log and "Traceback" not in log, log
        found = re.search(r"resuming from (\S+) \(step (\d+)\)", log)
        assert (found is None) == (resumed_at == 0), log
        assert found is None or int(found.group(2)) >= resumed_at  # never from scratch
        assert load_checkpoint(ckpts / "last.ckpt")["global_step"] >= 10 * target
        resumed_at = 10 * target
    run = polydiff.train(load_config(RECIPE, SETS), out)
    cap = capsys.readouterr()
    assert run.step == 300 and run.resumed_from is not None and "skipping" not in cap.err
    assert "resuming from" in cap.out
    assert_same_state(straight / "checkpoints" / "last.ckpt", run.checkpoint)
    names = sorted(p.name for p in ckpts.iterdir())
    assert names == sorted(p.name for p in (straight / "checkpoints").iterdir())  # no temporary files left
    for name in names:
        if name.startswith("step-"):
            a = torch.load(straight / "checkpoints" / name, weights_only=True)["state_dict"]
            b = torch.load(ckpts / name, weights_only=True)["state_dict"]
            assert all(torch.equal(a[k], b[k]) for k in a), name


def test_a_half_written_checkpoint_is_never_read(straight, tmp_path, capsys):
    """Killed in the middle of writing step 60: the partial file is a hidden temp file that the
    rerun removes without reading, resuming from step 50 and skipping nothing."""
    out = tmp_path / "run"
    marker = tmp_path / "writing"
    proc = spawn(out, script=[SLOW_WRITER, "step-00000060", str(marker)])
    wait_for(proc, marker.exists)
    kill9(proc)
    half = Path(marker.read_text())
    assert half.parent == out / "checkpoints" and half.is_file()
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(half)  # had it been read, the rerun would have had to skip it
    assert half not in checkpoint_files(out) and not (out / "checkpoints" / "step-00000060.ckpt").exists()
    assert newest_intact(out, resume=True) == (out / "checkpoints" / "last.ckpt", [])
    assert cli.main(cli_args(out)) == 0
    cap = capsys.readouterr()
    assert f"resuming from {out / 'checkpoints' / 'last.ckpt'} (step 50)\n" in cap.out
    assert cap.err == f"polydiff: removed {half.name}, an unfinished write of an interrupted run\n"
    assert not half.exists()
    assert_same_state(straight / "checkpoints" / "last.ckpt", out / "checkpoints" / "last.ckpt")


# ---------------------------------------------------------------------------------------------
# damaged or missing last.ckpt
# ---------------------------------------------------------------------------------------------

def test_corrupt_last_falls_back_to_the_newest_intact_step_file(straight_tiny, tmp_path, capsys):
    out = tmp_path / "run"
    polydiff.train(tiny(max_steps=12), out, verbose=False)
    last = out / "checkpoints" / "last.ckpt"
    last.unlink()  # replaced, not written through: last.ckpt is often a hard link to a step file
    last.write_bytes(b"\x00garbage" * 100)
    run = polydiff.train(tiny(), out)
    cap = capsys.readouterr()
    step12 = out / "checkpoints" / "step-00000012.ckpt"
    assert run.resumed_from == step12 and run.step == 16
    assert cap.err == f"polydiff: warning: skipping {last}: not a readable checkpoint (not a torch.save file)\n"
    assert f"polydiff: resuming from {step12} (step 12); skipped last.ckpt\n" in cap.out
    assert_same_state(straight_tiny / "checkpoints" / "last.ckpt", last)


def test_truncated_last_and_its_step_file_fall_back_further(straight_tiny, tmp_path, capsys):
    out = tmp_path / "run"
    polydiff.train(tiny(max_steps=12), out, verbose=False)
    ckpts = out / "checkpoints"
    # the last save of a run ends with last.ckpt written on its own: make it the step-12 link
    os.replace(ckpts / "step-00000012.ckpt", ckpts / "last.ckpt")
    os.link(ckpts / "last.ckpt", ckpts / "step-00000012.ckpt")
    size = (ckpts / "last.ckpt").stat().st_size
    with open(ckpts / "last.ckpt", "r+b") as f:  # truncating in place damages both names of the file
        f.truncate(size // 3)
    run = polydiff.train(tiny(), out)
    cap = capsys.readouterr()
    assert run.resumed_from == ckpts / "step-00000008.ckpt" and run.step == 16
    lines = cap.err.splitlines()
    assert len(lines) == 2 and all(line.startswith("polydiff: warning: skipping ") for line in lines)
    assert f"{ckpts / 'last.ckpt'}: not a readable checkpoint (damaged or truncated)" in lines[0]
    assert f"{ckpts / 'step-00000012.ckpt'}: not a readable checkpoint (damaged or truncated)" in lines[1]
    assert "skipped last.ckpt, step-00000012.ckpt" in cap.out
    assert_same_state(straight_tiny / "checkpoints" / "last.ckpt", ckpts / "last.ckpt")


def test_removed_last_resumes_from_the_newest_step_file_and_keeps_every_step_file(straight_tiny, tmp_path,
                                                                                   capsys):
    out = tmp_path / "run"
    polydiff.train(tiny(max_steps=12), out, verbose=False)
    ckpts = out / "checkpoints"
    (ckpts / "last.ckpt").unlink()
    before = snapshot(ckpts)
    time.sleep(0.01)  # a rewrite would show in the mtimes
    run = polydiff.train(tiny(), out)
    assert run.resumed_from == ckpts / "step-00000012.ckpt" and run.step == 16
    assert f"polydiff: resuming from {ckpts / 'step-00000012.ckpt'} (step 12)\n" in capsys.readouterr().out
    after = snapshot(ckpts)
    assert {k: after[k] for k in before} == before
    assert sorted(after) == ["last.ckpt", *before, "step-00000016.ckpt"]
    assert_same_state(straight_tiny / "checkpoints" / "last.ckpt", ckpts / "last.ckpt")


def test_unreadable_checkpoints_are_never_overwritten_by_a_fresh_start(tmp_path, capsys):
    out = tmp_path / "run"
    polydiff.train(tiny(max_steps=8), out, verbose=False)
    ckpts = out / "checkpoints"
    for p in list(ckpts.iterdir()):
        p.unlink()
        p.write_bytes(b"PK\x03\x04 not really")
    before, config = snapshot(ckpts), (out / "config.yaml").stat().st_mtime_ns
    with pytest.raises(ResumeError) as err:
        polydiff.train(tiny(), out, verbose=False)
    msg = str(err.value)
    assert msg.startswith(f"{ckpts}: no checkpoint to resume from: last.ckpt (not a readable checkpoint")
    assert "refusing to start over at step 0 and overwrite them: pass --fresh" in msg
    assert snapshot(ckpts) == before and (out / "config.yaml").stat().st_mtime_ns == config
    assert len(capsys.readouterr().err.splitlines()) == 3  # one line per file passed over
    assert cli.main(["train", str(write_recipe(tmp_path, tiny())), "--out", str(out)]) == 2
    err_line = capsys.readouterr().err
    assert err_line.count("\n") == 4 and err_line.splitlines()[-1].startswith("polydiff: error: ")
    assert snapshot(ckpts) == before
    run = polydiff.train(tiny(max_steps=4), out, verbose=False, fresh=True)  # explicitly: start over
    assert run.resumed_from is None and run.step == 4
    assert sorted(p.name for p in ckpts.iterdir()) == ["last.ckpt", "step-00000004.ckpt"]


def write_recipe(folder: Path, recipe: dict) -> Path:
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


# ---------------------------------------------------------------------------------------------
# a changed recipe
# ---------------------------------------------------------------------------------------------

def test_a_changed_architecture_is_a_one_line_error_naming_the_keys(tmp_path, capsys):
    out = tmp_path / "run"
    polydiff.train(tiny(max_steps=8), out, verbose=False)
    ckpts = out / "checkpoints"
    recipe = write_recipe(tmp_path, tiny(max_steps=8))
    before = snapshot(ckpts)
    assert cli.main(["train", str(recipe), "--out", str(out), "--set", "model.hidden=32"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith(f"polydiff: error: {ckpts / 'last.ckpt'} (step 8): cannot resume: the recipe differs "
                          "from the checkpoint's in model.hidden (16 in the checkpoint, 32 now); pass --fresh")
    assert "size mismatch" not in err and "Traceback" not in err
    # several keys, and step files of the other run without last.ckpt: still refused
    (ckpts / "last.ckpt").unlink()
    before.pop("last.ckpt")
    with pytest.raises(ResumeError) as info:
        polydiff.train(tiny(max_steps=8, lr=0.01, seed=3), out, verbose=False)
    assert f"{ckpts / 'step-00000008.ckpt'} (step 8): cannot resume" in str(info.value)
    assert "in train.lr (0.001 in the checkpoint, 0.01 now), train.seed (0 in the checkpoint, 3 now);" in \
        str(info.value)
    assert snapshot(ckpts) == before
    # keys that change only logging, hardware or the step budget keep resuming
    run = polydiff.train(tiny(max_steps=8, log_every=2, threads=2, num_workers=0, checkpoint_every=2), out,
                         verbose=False)
    assert run.resumed_from == ckpts / "step-00000008.ckpt" and run.step == 8


# ---------------------------------------------------------------------------------------------
# one command per run folder
# ---------------------------------------------------------------------------------------------

def test_a_second_command_into_a_busy_run_folder_refuses(tmp_path, capsys):
    out = tmp_path / "run"
    lock = tmp_path / ".run.lock"
    keep = out / "logs" / "keep.txt"
    keep.parent.mkdir(parents=True)
    keep.write_text("an earlier run's logs")
    proc = spawn(out, "train.max_steps=1000000", "train.checkpoint_every=100000")
    try:
        wait_for(proc, lambda: lock.is_file() and lock.read_text().strip() == str(proc.pid))
        assert cli.main(cli_args(out)) == 2
        err = capsys.readouterr().err
        assert err == (f"polydiff: error: {out}: another polydiff command (pid {proc.pid}) is writing this run folder; "
                       "wait for it to finish or choose another folder\n")
        with pytest.raises(FolderBusy):
            polydiff.train(tiny(), out, verbose=False, fresh=True)
        assert proc.poll() is None and keep.is_file()  # the first command undisturbed, nothing deleted
    finally:
        kill9(proc)
    with folder_lock(out, "run folder"):  # kill -9 released it
        pass


# ---------------------------------------------------------------------------------------------
# newest_intact
# ---------------------------------------------------------------------------------------------

def test_newest_intact_order_and_reasons(straight_tiny, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(straight_tiny, run)
    ckpts = run / "checkpoints"
    assert newest_intact(run) == (ckpts / "last.ckpt", [])
    assert newest_intact(ckpts, resume=True) == (ckpts / "last.ckpt", [])
    assert newest_intact(tmp_path / "none") == (None, [])
    assert checkpoint_files(run) == [ckpts / n for n in ("last.ckpt", "step-00000016.ckpt", "step-00000012.ckpt",
                                                         "step-00000008.ckpt", "step-00000004.ckpt")]
    # killed between saving step 16 and publishing it: last.ckpt still holds step 12
    os.replace(ckpts / "step-00000012.ckpt", ckpts / "last.ckpt")
    os.link(ckpts / "last.ckpt", ckpts / "step-00000012.ckpt")
    assert newest_intact(run, resume=True) == (ckpts / "step-00000016.ckpt", [])
    # a newer step file lacking the optimizer state: a model to load, not a run to resume
    ckpt = torch.load(ckpts / "step-00000016.ckpt", weights_only=True)
    ckpt["global_step"] = 20
    save_checkpoint_file({k: v for k, v in ckpt.items() if k != "optimizer_states"}, ckpts / "step-00000020.ckpt")
    path, skipped = newest_intact(run, resume=True)
    assert path == ckpts / "step-00000016.ckpt"
    assert skipped == [(ckpts / "step-00000020.ckpt", "incomplete checkpoint (no optimizer_states)")]
    assert newest_intact(run) == (ckpts / "step-00000020.ckpt", [])
    # a file whose name and step disagree, a temporary file and a stranger are passed over or never read
    shutil.copyfile(ckpts / "step-00000004.ckpt", ckpts / "step-00000024.ckpt")
    (ckpts / ".step-00000028.tmp-1-abcdef12.ckpt").write_bytes(b"half")
    (ckpts / "step-00000032.ckpt.bak").write_bytes(b"junk")
    path, skipped = newest_intact(run)
    assert path == ckpts / "step-00000020.ckpt"
    assert skipped == [(ckpts / "step-00000024.ckpt", "holds step 4, not the step its name says")]
    assert polydiff.load(path).step == 20


# ---------------------------------------------------------------------------------------------
# sharded checkpoints (train.checkpoint_format: sharded) as files: they open like single files,
# incomplete ones are passed over with a reason, they resume only under FSDP, and they are
# published and replaced atomically. Written and resumed by two FSDP processes, equal to DDP:
# test_training.py::test_fsdp_with_ema_on_two_cpu_processes_equals_ddp[sharded]
# ---------------------------------------------------------------------------------------------

def shard(file: Path, folder: Path) -> Path:
    """A sharded checkpoint holding what the single file ``file`` holds, laid out as FSDP's
    sharded save lays it out: the module's weights under ``model``, Adam's moments by parameter
    name under ``optimizer_0.state``, Lightning's other entries in ``meta.pt``."""
    ckpt = torch.load(file, weights_only=True)
    names = [f"net.{n}" for n, _ in polydiff.load(file).net.named_parameters()]
    moments = {names[i]: m for i, m in ckpt.pop("optimizer_states")[0]["state"].items()}
    folder.mkdir()
    with warnings.catch_warnings():  # "assuming the intent is to save in a single process": it is
        warnings.simplefilter("ignore")
        save_shards({"model": ckpt.pop("state_dict"), "optimizer_0": {"state": moments}}, checkpoint_id=folder,
                    no_dist=True)
    torch.save(ckpt, folder / "meta.pt")
    return folder


def test_a_sharded_checkpoint_opens_like_the_file_it_holds(straight_tiny, tmp_path):
    file = straight_tiny / "checkpoints" / "last.ckpt"
    folder = shard(file, tmp_path / "last.ckpt")
    want, got = torch.load(file, weights_only=True), load_checkpoint(folder)
    assert got["sharded"] == ["model", "optimizer_0"] and got["global_step"] == want["global_step"] == 16
    assert got["state_dict"].keys() == want["state_dict"].keys()
    assert all(torch.equal(got["state_dict"][k], v) for k, v in want["state_dict"].items())
    assert all(v.device.type == "meta" for v in load_checkpoint(folder, mmap=True)["state_dict"].values())
    open_intact(folder, RESUME_KEYS)  # the optimizer state is in the shards
    adam = read_shards(folder, "optimizer_0.state.")
    assert sorted({k.rsplit(".", 1)[1] for k in adam}) == ["exp_avg", "exp_avg_sq", "step"]
    for ema in (True, False):  # only the copy wanted is read from the shards
        torch.testing.assert_close(polydiff.load(folder, ema=ema).generate(5, seed=3),
                                   polydiff.load(file, ema=ema).generate(5, seed=3), rtol=0, atol=0)
    one = open_weights(folder, ema=True)[1]
    assert one.keys() == network_weights(want).keys()
    assert all(torch.equal(v, want["state_dict"][f"ema.{k}"]) for k, v in one.items())
    net = polydiff.load(file).net
    torch.nn.init.zeros_(next(net.parameters()))
    init_weights(net, folder, verbose=False)  # train.init from a sharded checkpoint
    assert all(torch.equal(v, one[k]) for k, v in net.state_dict().items())
    # one file to share: the model without the optimizer state
    single = consolidate(folder, tmp_path / "model.ckpt")
    assert "optimizer_states" not in torch.load(single, weights_only=True)
    torch.testing.assert_close(polydiff.load(single).generate(5, seed=3), polydiff.load(file).generate(5, seed=3),
                               rtol=0, atol=0)
    with pytest.raises(CheckpointError, match="already a single-file checkpoint"):
        consolidate(single, tmp_path / "again.ckpt")


def test_incomplete_sharded_checkpoints_are_passed_over_with_the_reason(straight_tiny, tmp_path):
    ckpts = tmp_path / "run" / "checkpoints"
    shutil.copytree(straight_tiny / "checkpoints", ckpts)
    for name in ("last.ckpt", "step-00000016.ckpt", "step-00000012.ckpt", "step-00000008.ckpt"):
        (ckpts / name).unlink()
        shard(straight_tiny / "checkpoints" / name, ckpts / name)
    assert newest_intact(ckpts, resume=True) == (ckpts / "last.ckpt", [])
    (ckpts / "last.ckpt" / ".metadata").unlink()  # a write that never finished
    shutil.rmtree(ckpts / "step-00000016.ckpt")
    shard_file = ckpts / "step-00000012.ckpt" / "__0_0.distcp"
    shard_file.write_bytes(shard_file.read_bytes()[:100])  # a truncated shard
    (ckpts / "step-00000008.ckpt" / "meta.pt").unlink()
    path, skipped = newest_intact(ckpts, resume=True)
    assert path == ckpts / "step-00000004.ckpt"
    assert [(p.name, reason.split(" (")[0]) for p, reason in skipped] == [
        ("last.ckpt", "incomplete sharded checkpoint"), ("step-00000012.ckpt", "incomplete sharded checkpoint"),
        ("step-00000008.ckpt", "not a checkpoint")]
    assert "__0_0.distcp is missing or truncated" in skipped[1][1]
    with pytest.raises(CheckpointError, match=r"last\.ckpt: incomplete sharded checkpoint \(its index \.metadata"):
        polydiff.load(ckpts / "last.ckpt")
    with pytest.raises(CheckpointError, match=r"run: not a checkpoint .*it holds checkpoints: pass one, e\.g\. "
                                              r".*checkpoints/last\.ckpt"):
        polydiff.load(tmp_path / "run")  # a run folder


def test_a_sharded_checkpoint_resumes_only_under_fsdp(straight_tiny, tmp_path):
    ckpts = tmp_path / "checkpoints"
    ckpts.mkdir()
    shard(straight_tiny / "checkpoints" / "last.ckpt", ckpts / "last.ckpt")
    with pytest.raises(ResumeError, match=r"a sharded checkpoint resumes under train\.strategy: fsdp .*not 'auto'"):
        resume_point(ckpts, from_dict(tiny(), "recipe"), announce=False)
    cfg = from_dict(tiny(strategy="fsdp", checkpoint_format="sharded", devices=2), "recipe")
    assert resume_point(ckpts, cfg, announce=False) == ckpts / "last.ckpt"


def test_publishing_and_tidying_checkpoint_folders(straight_tiny, tmp_path):
    step = shard(straight_tiny / "checkpoints" / "step-00000012.ckpt", tmp_path / "step-00000012.ckpt")
    last = publish(step, tmp_path / "last.ckpt")  # linked file by file
    assert sorted(p.name for p in last.iterdir()) == sorted(p.name for p in step.iterdir())
    assert all((last / p.name).stat().st_ino == p.stat().st_ino for p in step.iterdir())
    publish(straight_tiny / "checkpoints" / "last.ckpt", last)  # a file replaces the folder ...
    assert last.is_file() and load_checkpoint(last)["global_step"] == 16
    publish(step, last)  # ... and a folder the file
    assert last.is_dir() and load_checkpoint(last)["global_step"] == 12
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt", "step-00000012.ckpt"]  # nothing left over
    unfinished = tmp_path / ".step-00000016.tmp-1-abcdef12.ckpt"
    unfinished.mkdir()
    (unfinished / "__0_0.distcp").write_bytes(b"half")
    assert remove_temp_files(tmp_path) == [unfinished] and not unfinished.exists()


def test_fresh_keeps_the_old_run_until_the_new_data_and_network_are_built(tmp_path):
    """``--fresh`` deletes the old checkpoints only once the new run can start: a bad data file
    (or network option) must not leave the user with neither the old model nor a new one."""
    out = tmp_path / "run"
    polydiff.train(tiny(max_steps=4), out, verbose=False)
    ckpts = out / "checkpoints"
    before = snapshot(ckpts)
    bad = tmp_path / "bad.csv"
    bad.write_text("x,y\n0.1,0.2\n0.3,oops\n")
    broken = {**tiny(), "data": {"name": "csv", "path": str(bad)}}
    with pytest.raises(ValueError, match=r"bad\.csv"):
        polydiff.train(broken, out, verbose=False, fresh=True)
    assert snapshot(ckpts) == before
    wide = tiny()
    wide["model"] = {**wide["model"], "hidden": -3}
    with pytest.raises((ValueError, RuntimeError)):
        polydiff.train(wide, out, verbose=False, fresh=True)
    assert snapshot(ckpts) == before
    run = polydiff.train(tiny(max_steps=4), out, verbose=False, fresh=True)
    assert run.resumed_from is None and run.step == 4
