"""bench/common.py's export of a reference implementation from a bare git mirror: only the asked
paths, the commit marker, and a partial mirror (a blob missing) skips that file and names it
instead of losing the rest."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def _git(*args: str, cwd: Path) -> str:
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
           "HOME": str(cwd), "PATH": "/usr/bin:/bin:/usr/local/bin"}
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True, env=env).stdout.strip()


@pytest.fixture
def mirror(tmp_path: Path) -> tuple[Path, str]:
    work = tmp_path / "work"
    (work / "models").mkdir(parents=True)
    (work / "data" / "qm9").mkdir(parents=True)
    (work / "data" / "qm9_raw").mkdir(parents=True)
    (work / "models" / "net.py").write_text("x = 1\n")
    (work / "data" / "qm9" / "stats.txt").write_text("stats\n")
    (work / "data" / "qm9_raw" / "big.csv").write_text("a,b\n1,2\n")
    (work / "README.md").write_text("readme\n")
    _git("init", "-q", cwd=work)
    _git("add", ".", cwd=work)
    _git("commit", "-qm", "c", cwd=work)
    return work / ".git", _git("rev-parse", "HEAD", cwd=work)  # a git dir with loose objects, as a mirror


def test_export_writes_only_the_asked_paths_and_the_commit(tmp_path, mirror, bench_module):
    bare, commit = mirror
    common = bench_module("common")
    dest = tmp_path / "ref"
    got = common.export_mirror(bare, dest, "o/r", ".r_commit", "R_MIRROR", "r.py", ("models", "data/qm9/"))
    assert got == commit and (dest / ".r_commit").read_text().strip() == commit
    assert (dest / "models" / "net.py").read_text() == "x = 1\n"
    assert (dest / "data" / "qm9" / "stats.txt").read_text() == "stats\n"
    assert not (dest / "README.md").exists() and not (dest / "data" / "qm9_raw").exists()
    assert common.reference_commit(dest, ".r_commit") == commit
    assert common.reference_commit(dest, ".other_commit") is None


def test_a_missing_blob_skips_that_file_only(tmp_path, mirror, capsys, bench_module):
    bare, _ = mirror
    common = bench_module("common")
    sha = _git("--git-dir", str(bare), "rev-parse", "HEAD:data/qm9_raw/big.csv", cwd=tmp_path)
    loose = bare / "objects" / sha[:2] / sha[2:]
    loose.unlink()  # as a partial mirror lacks a large file's blob
    dest = tmp_path / "ref"
    common.export_mirror(bare, dest, "o/r", ".r_commit", "R_MIRROR", "r.py")
    assert (dest / "models" / "net.py").is_file() and (dest / "README.md").is_file()
    assert not (dest / "data" / "qm9_raw" / "big.csv").exists()
    assert "data/qm9_raw/big.csv" in capsys.readouterr().err


def test_a_missing_mirror_says_how_to_get_one(tmp_path, bench_module):
    with pytest.raises(SystemExit, match=r"git clone --bare https://github\.com/o/r"):
        bench_module("common").export_mirror(tmp_path / "none", tmp_path / "ref", "o/r", ".m", "R_MIRROR", "r.py")


def test_ratio_summary_is_medians_and_never_a_made_up_ratio(bench_module):
    common = bench_module("common")
    s = common.ratio_summary([1.0, 3.0, 2.0], iter([4.0, 8.0, 4.0]), "ref")
    assert s == {"ours": 2.0, "ref": 4.0, "ratio": 0.5, "at_most": True}
    missing = common.ratio_summary([1.0], [], "ref")
    assert missing == {"ours": 1.0, "ref": None, "ratio": None, "at_most": None}
    assert common.ratio_summary([3.0], [2.0], "ref")["at_most"] is False


def test_worker_start_prepares_a_reference_process(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "refpkg.py").write_text("VALUE = 7\n")
    code = ("import sys, random; sys.path.insert(0, sys.argv[1]); import common; "
            "ref = common.worker_start(1, 5, stand_ins=lambda: print('stand-ins'), src='src', wandb=True); "
            "import refpkg, wandb, torch; a = random.random(); random.seed(5); "
            "print(ref, refpkg.VALUE, wandb.log(x=1), torch.get_num_threads(), a == random.random())")
    out = subprocess.run([sys.executable, "-c", code, str(BENCH)], cwd=tmp_path, capture_output=True, text=True,
                         check=True).stdout.split("\n")
    assert out[0] == "stand-ins" and out[1].split() == [str(tmp_path), "7", "None", "1", "True"]
