"""`polydiff sample` / `evaluate` / `calibrate` reliability: no lost work, no silent fallbacks,
clear errors, progress.

- ``--overwrite`` never replaces a folder polydiff's sampling did not write (the reported data
  loss: ``--out`` = the training run's folder);
- numeric flags: zero / negative values are argparse errors naming the flag, with the
  subcommand's usage; absent flags take the recipe's values;
- sampling streams chunks to ``OUT.partial`` and merges them: the result equals
  ``save(generate(...))``, does not depend on ``--batch-size``, and memory is bounded by the
  chunk (priors built per block, no write of all objects at once);
- SIGKILL at seeded points, then ``--resume``: the folder is byte-identical to an uninterrupted
  run, no half-written part is read, stale temporaries are cleaned; a second writer refuses;
- progress bars on a terminal, nothing with ``--quiet``.
"""

from __future__ import annotations

import io
import json
import os
import random
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import polydiff
from polydiff import cli
from polydiff import generator as G
from polydiff.progress import Progress

pytestmark = pytest.mark.usefixtures("one_thread")

RECIPE = {
    "modality": "toy",
    "data": {"name": "gmm", "k": 4, "dim": 2},
    "model": {"name": "mlp", "hidden": 16, "depth": 1, "conditional": True},
    "train": {"max_steps": 6, "batch_size": 32, "accelerator": "cpu", "devices": 1, "threads": 1,
              "checkpoint_every": 6, "progress": False, "logger": "none"},
    "sample": {"steps": 4, "num": 7},
}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A tiny trained toy run (checkpoints/, config.yaml) shared by the module."""
    out = tmp_path_factory.mktemp("reliability") / "run"
    polydiff.train(RECIPE, out, fresh=True, verbose=False)
    return out


@pytest.fixture(scope="module")
def ckpt(run_dir) -> Path:
    return run_dir / "checkpoints" / "last.ckpt"


def run(capsys, *argv: object) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code: int, err: str) -> str:
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("polydiff: error: "), (code, err)
    return lines[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones too) with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------------------------
# overwrite safety
# ---------------------------------------------------------------------------------------------

def test_overwrite_never_replaces_the_run_folder(run_dir, ckpt, capsys, tmp_path):
    """The reported data loss: `sample CKPT --out RUN_DIR --overwrite` deleted checkpoints/,
    config.yaml and logs/. Now it is refused before any work and the run is byte-identical."""
    (run_dir / "logs").mkdir(exist_ok=True)
    (run_dir / "logs" / "metrics.csv").write_text("step,loss\n1,0.5\n")
    before = snapshot(run_dir)
    code, _, err = run(capsys, "sample", ckpt, "--num", 5, "--out", run_dir, "--overwrite")
    line = one_line_error(code, err)
    assert f"{run_dir} is not a samples folder written by polydiff" in line
    assert "checkpoints/, config.yaml, logs/" in line and "nothing was changed" in line
    assert snapshot(run_dir) == before
    assert not (run_dir.parent / "run.partial").exists()
    assert not [p for p in run_dir.parent.iterdir() if p.name.startswith(".run.") and p.is_dir()]
    # the Python API has the same protection
    gen = polydiff.load(ckpt)
    with pytest.raises(FileExistsError, match="not a samples folder written by polydiff"):
        gen.save(gen.generate(3, seed=0, progress=False), run_dir, overwrite=True)
    assert snapshot(run_dir) == before

    # a samples folder polydiff wrote is replaced; one with a file of the user's is not
    out = tmp_path / "samples"
    assert run(capsys, "sample", ckpt, "--num", 5, "--out", out)[0] == 0
    assert G.is_samples_folder(out)
    code, _, err = run(capsys, "sample", ckpt, "--num", 5, "--out", out)
    assert "already exists and is not empty; pass --overwrite" in one_line_error(code, err)
    code, printed, err = run(capsys, "sample", ckpt, "--num", 5, "--out", out, "--quantize", "int8")
    assert "already exists and is not empty" in one_line_error(code, err)
    assert "quantized" not in printed  # refused before the calibration's work
    assert run(capsys, "sample", ckpt, "--num", 6, "--out", out, "--overwrite")[0] == 0
    assert len(np.loadtxt(out / "samples.csv", delimiter=",", skiprows=1)) == 6
    (out / "notes.txt").write_text("mine")
    kept = snapshot(out)
    code, _, err = run(capsys, "sample", ckpt, "--num", 5, "--out", out, "--overwrite")
    assert "holds notes.txt, polydiff.json, samples.csv" in one_line_error(code, err)
    assert snapshot(out) == kept
    (tmp_path / "afile").write_text("x")
    code, _, err = run(capsys, "sample", ckpt, "--num", 5, "--out", tmp_path / "afile", "--overwrite")
    assert "is a file, not a samples folder" in one_line_error(code, err)


# ---------------------------------------------------------------------------------------------
# flags
# ---------------------------------------------------------------------------------------------

BAD_FLAGS = [
    ("sample", "--num", "0"), ("sample", "--num", "-5"), ("sample", "--steps", "0"), ("sample", "--batch-size", "0"),
    ("sample", "--threads", "-2"), ("sample", "--threads", "0"), ("sample", "--particles", "0"),
    ("sample", "--seed", "-1"), ("sample", "--guidance-scale", "-1"), ("sample", "--guidance-scale", "nan"),
    ("sample", "--num", "2.5"), ("calibrate", "--steps", "0"), ("calibrate", "--pilot", "0"),
    ("calibrate", "--seed", "-3"), ("calibrate", "--threads", "-1"), ("evaluate", "--num", "0"),
    ("evaluate", "--steps", "-4"), ("evaluate", "--seed", "-1"), ("evaluate", "--threads", "0"),
]


@pytest.mark.parametrize(("command", "flag", "value"), BAD_FLAGS)
def test_zero_and_negative_values_are_errors_naming_the_flag(command, flag, value, capsys, tmp_path):
    extra = ["--steps", "4"] if command == "calibrate" and flag != "--steps" else []
    with pytest.raises(SystemExit) as exit_:
        cli.main([command, str(tmp_path / "x.ckpt"), flag, value, *extra])
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert f"usage: polydiff {command} " in err  # the subcommand's usage, not the top-level one
    assert f"polydiff {command}: error: argument {flag}: expected a " in err and f"got {value}" in err


def test_argument_errors_print_the_subcommands_usage(capsys, tmp_path):
    for argv, msg in ((["sample", "x.ckpt", "--bogus", "1"], "unrecognized arguments: --bogus 1"),
                      (["evaluate", "x.ckpt", "--nmu", "3"], "unrecognized arguments: --nmu 3"),
                      (["sample", "x.ckpt", "--resume", "--overwrite"], "not allowed with argument"),
                      (["calibrate", "x.ckpt"], "the following arguments are required: --steps")):
        with pytest.raises(SystemExit) as exit_:
            cli.main(argv)
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and f"usage: polydiff {argv[0]} " in err and msg in err, err
        assert "usage: polydiff [-h]" not in err


def test_absent_flags_fall_back_to_the_recipe(ckpt, capsys, tmp_path):
    code, text, _ = run(capsys, "sample", ckpt, "--out", tmp_path / "s", "--quiet")
    assert code == 0 and "wrote 7 samples" in text  # the recipe's sample.num
    meta = json.loads((tmp_path / "s" / "polydiff.json").read_text())
    assert meta["num"] == 7 and meta["steps"] == 4 and meta["seed"] == 0 and meta["batch_size"] == G.DEFAULT_BATCH
    # --seed 0 is a seed like any other (not "absent"); evaluate's --num / --sampler / --steps reach the sampling
    code, text, _ = run(capsys, "sample", ckpt, "--seed", 0, "--num", 7, "--out", tmp_path / "s0", "--quiet")
    assert code == 0 and snapshot(tmp_path / "s0") == snapshot(tmp_path / "s")
    code, _, err = run(capsys, "evaluate", tmp_path / "s", "--steps", 3)
    assert "are for evaluating a checkpoint" in one_line_error(code, err)


def test_evaluate_checkpoint_takes_num_sampler_steps(ckpt, capsys, monkeypatch):
    seen = []
    real = G.Generator._sample

    def spy(self, spec, settings, control, seeds, device):
        seen.append((settings.sampler, settings.steps, len(seeds)))
        return real(self, spec, settings, control, seeds, device)

    monkeypatch.setattr(G.Generator, "_sample", spy)
    code, text, _ = run(capsys, "evaluate", ckpt, "--num", 9, "--sampler", "ddim", "--steps", 3, "--quiet")
    assert code == 0 and "n: 9" in text
    assert seen == [("ddim", 3, 9)]
    seen.clear()
    assert run(capsys, "evaluate", ckpt, "--num", 5)[0] == 0
    assert seen == [("dpm++2m", 4, 5)]  # absent: the recipe's


# ---------------------------------------------------------------------------------------------
# streaming
# ---------------------------------------------------------------------------------------------

def test_streamed_samples_equal_generate_and_do_not_depend_on_batch_size(ckpt, capsys, tmp_path):
    for bs in (64, 300, 7):
        code, _, _ = run(capsys, "sample", ckpt, "--num", 300, "--seed", 3, "--batch-size", bs,
                         "--out", tmp_path / f"b{bs}", "--quiet")
        assert code == 0
        assert not (tmp_path / f"b{bs}.partial").exists()
    csv = (tmp_path / "b64" / "samples.csv").read_bytes()
    # the same samples whatever the batch size, up to the last bits of the network's arithmetic (matrix products
    # of other shapes round differently): why a resumed run keeps its batch size
    gen = polydiff.load(ckpt)
    x64 = gen.modality.read(tmp_path / "b64")
    for bs in (300, 7):
        np.testing.assert_allclose(gen.modality.read(tmp_path / f"b{bs}"), x64, rtol=0, atol=1e-5)
    x = gen.generate(300, seed=3, batch_size=64, progress=False)
    gen.save(x, tmp_path / "saved")
    assert (tmp_path / "saved" / "samples.csv").read_bytes() == csv
    meta = json.loads((tmp_path / "b64" / "polydiff.json").read_text())
    assert meta["files"] == ["samples.csv"] and meta["num"] == 300 and G.is_samples_folder(tmp_path / "b64")
    code, text, _ = run(capsys, "evaluate", tmp_path / "b64")
    assert code == 0 and "n: 300" in text


def test_memory_is_bounded_by_the_chunk(ckpt, tmp_path, monkeypatch):
    """Priors come in blocks of at most PRIOR_BLOCK samples (not one call for all n), and no
    write holds more than one chunk of objects (the merge concatenates the parts' files)."""
    monkeypatch.setattr(G, "PRIOR_BLOCK", 64)
    gen = polydiff.load(ckpt)
    mod = gen.modality
    priors, writes = [], []
    real_prior, real_write = mod.prior_state, mod.write

    def prior_state(n, info, generator=None, condition=None):
        priors.append((n, None if condition is None else list(np.asarray(condition["label"]))))
        return real_prior(n, info, generator, condition)

    def write(objects, out_dir):
        writes.append(len(objects))
        return real_write(objects, out_dir)

    monkeypatch.setattr(mod, "prior_state", prior_state)
    monkeypatch.setattr(mod, "write", write)
    labels = [i % 4 for i in range(1000)]
    done = gen.generate_to(tmp_path / "big", 1000, seed=1, batch_size=100, condition={"label": labels},
                           progress=False)
    assert done.generated == 1000 and done.resumed == 0
    assert max(n for n, _ in priors) <= 64 and max(writes) <= 100
    # each block gets its own slice of the per-sample labels
    assert [x for _, lab in priors[:2] for x in lab] == labels[:128]
    streamed = gen.modality.read(tmp_path / "big")
    assert len(streamed) == 1000
    monkeypatch.setattr(mod, "write", real_write)
    priors.clear()
    whole = gen.generate(1000, seed=1, batch_size=1000, condition={"label": labels}, progress=False)
    np.testing.assert_array_equal(streamed, whole)
    assert [x for n, lab in priors for x in lab] == labels  # 16 blocks of 64 (the last 40) cover the 1000


def test_merge_reads_back_when_files_do_not_concatenate(ckpt, tmp_path, monkeypatch):
    """A writer that numbers its records (like the time-series long CSV) cannot be concatenated:
    the merge reads the parts back and writes them once; the result is the same as a save."""
    gen = polydiff.load(ckpt)
    mod = gen.modality

    def write(objects, out_dir):
        rows = "".join(f"{i},{a!r},{b!r}\n" for i, (a, b) in enumerate(np.asarray(objects).tolist()))
        (Path(out_dir) / "numbered.csv").write_text("i,x0,x1\n" + rows)
        return [Path(out_dir) / "numbered.csv"]

    def read(path):
        return np.loadtxt(Path(path) / "numbered.csv", delimiter=",", skiprows=1, ndmin=2)[:, 1:]

    monkeypatch.setattr(mod, "write", write)
    monkeypatch.setattr(mod, "read", read)
    gen.generate_to(tmp_path / "s", 50, seed=2, batch_size=16, progress=False)
    gen.save(gen.generate(50, seed=2, batch_size=16, progress=False), tmp_path / "saved")
    text = (tmp_path / "s" / "numbered.csv").read_text()
    assert text == (tmp_path / "saved" / "numbered.csv").read_text() and text.splitlines()[-1].startswith("49,")


# ---------------------------------------------------------------------------------------------
# interruption, resume, locks, stale temporaries
# ---------------------------------------------------------------------------------------------

def _interrupt_on_part(gen_module, monkeypatch, k: int) -> None:
    """Make the toy writer raise KeyboardInterrupt (Ctrl-C) when writing part ``k`` (0-based)."""
    from polydiff.toy import ToyModality

    real, count = ToyModality.write, [0]

    def write(self, objects, out_dir):
        if count[0] == k:
            count[0] += 1
            raise KeyboardInterrupt
        count[0] += 1
        return real(self, objects, out_dir)

    monkeypatch.setattr(ToyModality, "write", write)


def test_resume_checks_the_request_and_finishes_the_same_run(ckpt, capsys, tmp_path, monkeypatch):
    ref, out = tmp_path / "ref", tmp_path / "out"
    common = ["--num", 100, "--seed", 5, "--batch-size", 16, "--quiet"]
    assert run(capsys, "sample", ckpt, *common, "--out", ref)[0] == 0
    # Ctrl-C in the first part: nothing to resume, nothing left
    _interrupt_on_part(G, monkeypatch, 0)
    code, _, err = run(capsys, "sample", ckpt, *common, "--out", out)
    assert code == 130 and not (tmp_path / "out.partial").exists() and not out.exists()
    # Ctrl-C in the fourth part: three parts kept
    _interrupt_on_part(G, monkeypatch, 3)
    code, _, err = run(capsys, "sample", ckpt, *common, "--out", out)
    assert code == 130 and "48 of 100 samples are kept in" in err and "--resume finishes the run" in err
    monkeypatch.undo()
    partial = tmp_path / "out.partial"
    assert sorted(p.name for p in partial.iterdir()) == [
        "part-000000000000-000000000016", "part-000000000016-000000000032", "part-000000000032-000000000048",
        "polydiff-partial.json"]
    code, _, err = run(capsys, "sample", ckpt, *common, "--out", out)
    assert (f"an interrupted run left {partial} (48 of 100 samples done); pass --resume to finish it or "
            "--overwrite to start over") in one_line_error(code, err)
    code, _, err = run(capsys, "sample", ckpt, "--num", 120, "--seed", 5, "--out", out, "--resume")
    line = one_line_error(code, err)
    assert "was started with other settings (num: 100 (now 120))" in line
    code, _, err = run(capsys, "sample", ckpt, *common[:4], "--batch-size", 32, "--out", out, "--resume")
    assert "batch_size: 16 (now 32)" in one_line_error(code, err)
    code, _, err = run(capsys, "sample", ckpt, *common, "--steps", 5, "--out", out, "--resume")
    assert "settings.steps: " in one_line_error(code, err) and "(now 5)" in err  # the changed value, named
    # the number, seed and batch size are the interrupted run's when not given
    code, text, _ = run(capsys, "sample", ckpt, "--out", out, "--resume", "--quiet")
    assert code == 0 and "(48 from the interrupted run, 52 new)" in text
    assert snapshot(out) == snapshot(ref) and not partial.exists()
    code, text, _ = run(capsys, "sample", ckpt, *common, "--out", out, "--resume")
    assert code == 0 and "already holds these 100 samples; nothing to resume" in text
    # --overwrite starts an interrupted run over
    _interrupt_on_part(G, monkeypatch, 2)
    assert run(capsys, "sample", ckpt, *common, "--out", tmp_path / "o2")[0] == 130
    monkeypatch.undo()
    assert run(capsys, "sample", ckpt, *common, "--out", tmp_path / "o2", "--overwrite")[0] == 0
    assert snapshot(tmp_path / "o2") == snapshot(ref) and not (tmp_path / "o2.partial").exists()


CHILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import numpy as np
    import polydiff.generator as G
    from polydiff.toy import ToyModality

    real_write, real_merge = ToyModality.write, G._merge_parts

    def slow_write(self, objects, out_dir):
        # a writer that is not atomic: half the rows first, the rest later (a kill between leaves a half file)
        rows = np.asarray(objects)
        half = "".join(f"{a},{b}\\n" for a, b in rows[: len(rows) // 2])
        (Path(out_dir) / "samples.csv").write_text("x0,x1\\n" + half)
        time.sleep(0.15)
        return real_write(self, objects, out_dir)

    def slow_merge(*args):
        files = real_merge(*args)
        time.sleep(1.0)  # the merged folder is complete but not yet swapped in
        return files

    ToyModality.write, G._merge_parts = slow_write, slow_merge
    from polydiff.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def _wait_for(cond, proc: subprocess.Popen, timeout: float = 90.0) -> None:
    t0 = time.monotonic()
    while not cond():
        assert proc.poll() is None, f"the sampling process ended early: {proc.communicate()}"
        assert time.monotonic() - t0 < timeout, "timed out"
        time.sleep(0.02)


def test_sigkill_then_resume_is_byte_identical(ckpt, capsys, tmp_path):
    """SIGKILL a `polydiff sample` process after its 1st and 3rd part and inside the merge (at
    seeded random delays); `--resume` then gives exactly the uninterrupted folder."""
    common = ["--num", 60, "--seed", 11, "--batch-size", 10, "--threads", 1]
    ref = tmp_path / "ref"
    assert run(capsys, "sample", ckpt, *common, "--out", ref, "--quiet")[0] == 0
    expected = snapshot(ref)
    rng = random.Random(1234)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for i, parts in enumerate((1, 3, "merge")):
        out = tmp_path / f"out{i}"
        partial = tmp_path / f"out{i}.partial"
        proc = subprocess.Popen([sys.executable, "-c", CHILD, "sample", str(ckpt), *map(str, common),
                                 "--out", str(out), "--quiet"], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            def n_parts(partial=partial) -> int:
                return len(list(partial.glob("part-*"))) if partial.is_dir() else 0

            if parts == "merge":
                _wait_for(lambda out=out: any(p.name.startswith(f".{out.name}.tmp-") for p in tmp_path.iterdir()),
                          proc)
                time.sleep(rng.uniform(0.05, 0.5))
            else:
                _wait_for(lambda parts=parts: n_parts() >= parts, proc)
                time.sleep(rng.uniform(0.0, 0.3))
                if i == 0:  # a second command into the same folder refuses while the first one runs
                    code, _, err = run(capsys, "sample", ckpt, *common, "--out", out, "--resume")
                    line = one_line_error(code, err)
                    assert f"{out}: another polydiff command (pid {proc.pid}) is writing this samples folder" in line
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()
            proc.stderr.close()
        assert not out.exists()
        # every part folder is whole; what a kill interrupted is a hidden temporary, never a part
        gen_mod = polydiff.load(ckpt).modality
        for p in partial.glob("part-*"):
            lo, hi = (int(x) for x in p.name.split("-")[1:])
            assert len(gen_mod.read(p)) == hi - lo
        code, text, _ = run(capsys, "sample", ckpt, *common, "--out", out, "--resume", "--quiet")
        assert code == 0, text
        assert snapshot(out) == expected
        assert not partial.exists()
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(f".{out.name}.") and p.is_dir()] == []


def test_stale_temporaries_are_cleaned_or_put_back(ckpt, capsys, tmp_path):
    out = tmp_path / "s"
    stale = [tmp_path / ".s.tmp-0123abcd", tmp_path / ".s.partial.tmp-89abcdef", tmp_path / ".s.old-deadbeef"]
    unrelated = [tmp_path / ".s.tmp-notmine", tmp_path / ".other.tmp-0123abcd", tmp_path / ".s2.tmp-0123abcd"]
    assert run(capsys, "sample", ckpt, "--num", 5, "--out", out, "--quiet")[0] == 0
    for p in stale + unrelated:
        p.mkdir()
        (p / "junk").write_text("x")
    assert run(capsys, "sample", ckpt, "--num", 5, "--out", out, "--overwrite", "--quiet")[0] == 0
    assert not any(p.exists() for p in stale) and all(p.exists() for p in unrelated)
    # killed between the two renames of a replacement: the old folder is put back, not deleted
    kept = snapshot(out)
    os.rename(out, tmp_path / ".s.old-0badf00d")
    code, _, err = run(capsys, "sample", ckpt, "--num", 5, "--out", out)
    assert code == 2 and "put back" in err and "already exists and is not empty" in err
    assert snapshot(out) == kept


# ---------------------------------------------------------------------------------------------
# progress
# ---------------------------------------------------------------------------------------------

class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_on_a_terminal_not_with_quiet(ckpt, capsys, tmp_path, monkeypatch):
    term = Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    assert cli.main(["sample", str(ckpt), "--num", "40", "--batch-size", "8", "--out", str(tmp_path / "a")]) == 0
    bar = term.getvalue()
    assert "sampling: 100%" in bar and "40/40" in bar and "sample/s]" in bar, bar  # tqdm: rate and ETA

    term = Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    assert cli.main(["sample", str(ckpt), "--num", "40", "--out", str(tmp_path / "b"), "--quiet"]) == 0
    assert term.getvalue() == ""

    term = Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    assert cli.main(["evaluate", str(ckpt), "--num", "30"]) == 0
    assert "evaluating" in term.getvalue() and "30/30" in term.getvalue()

    term = Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    assert cli.main(["calibrate", str(ckpt), "--steps", "3", "--sampler", "dpm++2m", "--pilot", "16",
                     "--option", "max_trials=6", "--out", str(tmp_path / "g.json")]) == 0
    assert "calibrating" in term.getvalue() and "trial/s" in term.getvalue()
    # not a terminal (logs): silent for quick runs, a line about every 10 % for long ones
    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    assert cli.main(["sample", str(ckpt), "--num", "40", "--batch-size", "8", "--out", str(tmp_path / "c")]) == 0
    assert log.getvalue() == ""
    monkeypatch.setattr(Progress, "log_after", 0.0)
    assert cli.main(["sample", str(ckpt), "--num", "40", "--batch-size", "8", "--out", str(tmp_path / "d")]) == 0
    lines = log.getvalue().strip().splitlines()
    assert lines[0].startswith("polydiff: sampling 8/40 samples (20%), ") and "ETA" in lines[0], lines
    assert len(lines) == 6 and lines[-1].startswith("polydiff: sampling done: 40 samples in ")
    assert cli.main(["sample", str(ckpt), "--num", "40", "--out", str(tmp_path / "e"), "--quiet"]) == 0
    assert len(log.getvalue().strip().splitlines()) == 6
    capsys.readouterr()


def test_plot_without_matplotlib_says_why_and_writes_the_samples(ckpt, tmp_path, capsys, monkeypatch):
    """``sample --plot`` without matplotlib writes the samples and one warning naming the extra
    to install; a plugin that draws nothing is named too (never a silent missing picture)."""
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else
                        find_spec(name, *a))
    with pytest.warns(UserWarning, match=re.escape("no picture: matplotlib is not installed (pip install "
                                                   "'polydiff[plot]')")):
        code, _, err = run(capsys, "sample", ckpt, "--num", 3, "--steps", 2, "--out", tmp_path / "s", "--plot")
    assert code == 0, err
    assert (tmp_path / "s" / "samples.csv").is_file() and not (tmp_path / "s" / "samples.png").exists()
    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    gen = polydiff.load(ckpt)
    monkeypatch.setattr(gen.modality, "plot", lambda objects, path, reference=None: None)
    with pytest.warns(UserWarning, match="no picture: the toy plugin draws none"):
        assert gen.plot(np.zeros((3, 2)), tmp_path / "p.png") is None


def test_plugin_plot_modules_need_matplotlib_at_import(monkeypatch):
    """Plugins guard their plots with ``try: from .plot import ...; except ImportError``: that
    guard works only if the plot module itself fails to import without matplotlib."""
    import importlib
    import sys

    modules = [m for m in ("polydiff_policies.plot", "polydiff_audio.plot", "polydiff_crystals.plot",
                           "polydiff_molecules.plot", "polydiff_graphs.plot", "polydiff_text.plot",
                           "polydiff_timeseries.plot", "polydiff_proteins.plot")
               if importlib.util.find_spec(m.split(".")[0]) is not None]
    if not modules:
        pytest.skip("no plugin installed")
    for name in [n for n in sys.modules if n == "matplotlib" or n.startswith("matplotlib.")] + modules:
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    for m in modules:
        with pytest.raises(ImportError):
            importlib.import_module(m)
