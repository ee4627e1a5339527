"""bench/common.py's export of a reference implementation from a bare git mirror: only the asked
paths, the commit marker, and a partial mirror (a blob missing) skips that file and names it
instead of losing the rest."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def _common():
    spec = importlib.util.spec_from_file_location("bench_common_export", BENCH / "common.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


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


def test_export_writes_only_the_asked_paths_and_the_commit(tmp_path, mirror):
    bare, commit = mirror
    common = _common()
    dest = tmp_path / "ref"
    got = common.export_mirror(bare, dest, "o/r", ".r_commit", "R_MIRROR", "r.py", ("models", "data/qm9/"))
    assert got == commit and (dest / ".r_commit").read_text().strip() == commit
    assert (dest / "models" / "net.py").read_text() == "x = 1\n"
    assert (dest / "data" / "qm9" / "stats.txt").read_text() == "stats\n"
    assert not (dest / "README.md").exists() and not (dest / "data" / "qm9_raw").exists()
    assert common.reference_commit(dest, ".r_commit") == commit
    assert common.reference_commit(dest, ".other_commit") is None


def test_a_missing_blob_skips_that_file_only(tmp_path, mirror, capsys):
    bare, _ = mirror
    common = _common()
    sha = _git("--git-dir", str(bare), "rev-parse", "HEAD:data/qm9_raw/big.csv", cwd=tmp_path)
    loose = bare / "objects" / sha[:2] / sha[2:]
    loose.unlink()  # as a partial mirror lacks a large file's blob
    dest = tmp_path / "ref"
    common.export_mirror(bare, dest, "o/r", ".r_commit", "R_MIRROR", "r.py")
    assert (dest / "models" / "net.py").is_file() and (dest / "README.md").is_file()
    assert not (dest / "data" / "qm9_raw" / "big.csv").exists()
    assert "data/qm9_raw/big.csv" in capsys.readouterr().err


def test_a_missing_mirror_says_how_to_get_one(tmp_path):
    with pytest.raises(SystemExit, match=r"git clone --bare https://github\.com/o/r"):
        _common().export_mirror(tmp_path / "none", tmp_path / "ref", "o/r", ".m", "R_MIRROR", "r.py")
