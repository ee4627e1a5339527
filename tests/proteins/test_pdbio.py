"""PDB / mmCIF reading and PDB writing of protein backbones: round trips, the fixed-column
format, the report of dropped residues, breaks, altlocs and non-standard residues, clear errors
naming the file (also under fuzzing), folders with bad files, and (with ../shared) real files."""

from __future__ import annotations

import gzip
import io
import math
import warnings
from pathlib import Path

import numpy as np
import pytest

from polydiff.fuzz import fuzz_reader
from polydiff.plugin import USER_ERRORS, shared_dir
from polydiff_proteins.geometry import Backbone, build_backbone
from polydiff_proteins.pdbio import (
    ChainBreak,
    ReadReport,
    ResidueProblem,
    backbones_to_pdb_string,
    read_backbones,
    read_folder,
    write_pdb,
)

pytestmark = pytest.mark.usefixtures("one_thread")

PROTEINS = shared_dir() / "data" / "proteins"


def needs_shared(test):
    """Mark a test as needing ../shared/data/proteins and skip it when absent."""
    skip = pytest.mark.skipif(not (PROTEINS / "5L33.pdb").is_file(),
                              reason=f"shared data {PROTEINS} not found (set POLYDIFF_SHARED to the shared folder)")
    return skip(pytest.mark.shared(test))


def helix(n: int = 8, sequence: str | None = None, **kw) -> Backbone:
    """An ideal alpha helix of ``n`` residues."""
    atoms = build_backbone(np.full(n, math.radians(-57.0)), np.full(n, math.radians(-47.0)))
    atoms = atoms + np.array([5.0, -3.0, 2.0])
    return Backbone(atoms=atoms, sequence=sequence or "MKTAYIAKQRGLWVEHSDNF"[:n], **kw)


def pdb_lines(bb: Backbone | list[Backbone]) -> list[str]:
    return backbones_to_pdb_string(bb).splitlines()


def atom_of(line: str) -> tuple[int, str]:
    """(residue number, atom name) of an ATOM line."""
    return int(line[22:26]), line[12:16].strip()


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


# -- writing and round trips ---------------------------------------------------------------------

def test_round_trip_and_byte_identical_rewrite(tmp_path):
    bb = helix(10, res_ids=np.arange(-2, 8))
    path = write_pdb(bb, tmp_path / "helix.pdb")
    first = path.read_bytes()
    (got,), report = read_backbones(path)
    assert report.ok and bool(report) and "no problems" in report.summary()
    assert got.sequence == bb.sequence and got.chain == "A" and got.name == "helix" and got.full
    np.testing.assert_array_equal(got.res_ids, bb.res_ids)
    np.testing.assert_allclose(got.atoms, bb.atoms, atol=1e-3)
    assert write_pdb(bb, path).read_bytes() == first
    assert write_pdb(got, tmp_path / "again.pdb").read_bytes() == first  # read -> write is stable too
    # gzipped
    (tmp_path / "helix.pdb.gz").write_bytes(gzip.compress(first))
    (gz,), _ = read_backbones(tmp_path / "helix.pdb.gz")
    assert gz.name == "helix"
    np.testing.assert_allclose(gz.atoms, bb.atoms, atol=1e-3)


def test_fixed_columns():
    lines = pdb_lines(helix(2, "GX"))
    assert lines[0] == ("ATOM      1  N   GLY A   1       4.473  -1.641   2.000  1.00  0.00           N  ")
    assert all(len(s) == 80 for s in lines)
    atoms = [s for s in lines if s.startswith("ATOM")]
    assert [s[12:16] for s in atoms[:4]] == [" N  ", " CA ", " C  ", " O  "]
    assert [s[76:78] for s in atoms[:4]] == [" N", " C", " C", " O"]
    assert [s[17:20] for s in atoms] == ["GLY"] * 4 + ["UNK"] * 4
    assert [int(s[6:11]) for s in atoms] == list(range(1, 9))
    assert lines[-2].startswith("TER       9      UNK A   2") and lines[-1].rstrip() == "END"


def test_several_chains_and_ca_traces(tmp_path):
    a, b = helix(5, chain="A", name="x"), helix(6, chain="A", name="y")
    lines = pdb_lines([a, b])
    assert {s[21] for s in lines if s.startswith("ATOM")} == {"A", "B"}  # duplicate chains renamed
    assert sum(s.startswith("TER") for s in lines) == 2
    kept = pdb_lines([helix(3, chain="H"), helix(3, chain="L")])
    assert [s[21] for s in kept if s.startswith("TER")] == ["H", "L"]
    ca = Backbone(atoms=helix(6).ca[:, None], sequence="ACDEFG", atom_names=("CA",), chain="P")
    path = write_pdb([ca, helix(4, chain="Q")], tmp_path / "two.pdb")
    (p, q), report = read_backbones(path)
    assert report.ok and p.atom_names == ("CA",) and q.full and p.sequence == "ACDEFG"
    np.testing.assert_allclose(p.atoms, ca.atoms, atol=1e-3)
    only_q, _ = read_backbones(path, chains=["Q"])
    assert [b.name for b in only_q] == ["two_Q"]
    with pytest.raises(ValueError, match=r"two\.pdb: no protein chain Z"):
        read_backbones(path, chains=["Z"])


def test_write_refuses_what_does_not_fit(tmp_path):
    far = helix(3, name="far")
    far.atoms[1, 1, 0] = 12000.0
    with pytest.raises(ValueError, match=r"'far'.*%8\.3f"):
        write_pdb(far, tmp_path / "far.pdb")
    neg = helix(3, name="neg")
    neg.atoms[0, 0, 2] = -1000.0  # "-1000.000" is 9 characters
    with pytest.raises(ValueError, match="'neg'"):
        backbones_to_pdb_string(neg)
    nan = helix(3, name="nan")
    nan.atoms[2, 3, 1] = np.nan
    with pytest.raises(ValueError, match=r"'nan'.*non-finite"):
        backbones_to_pdb_string(nan)
    assert not (tmp_path / "far.pdb").exists()


def test_modality_read_gives_back_what_write_wrote_and_warns_about_drops(tmp_path):
    """A folder of samples reads back in the written order (sample_9999 before sample_10000),
    a one-residue backbone included; residues dropped on reading are counted in a warning."""
    from polydiff_proteins import ProteinsModality

    mod = ProteinsModality()
    names = ["sample_1000", "sample_1001", "sample_10000", "one"]
    bbs = [helix(3, name=n) for n in names[:3]] + [helix(1, name="one")]
    mod.write(bbs, tmp_path / "s")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = mod.read(tmp_path / "s")
    assert [b.name for b in got] == ["one", *names[:3]] and [len(b) for b in got] == [1, 3, 3, 3]
    lines = [s for s in pdb_lines(helix(4)) if not (s.startswith("ATOM") and atom_of(s) == (2, "O"))]
    with pytest.warns(UserWarning, match=r"1 residue\(s\) dropped \(gap\.pdb: A LYS 2: missing O\)"):
        (bb,) = mod.read(write_lines(tmp_path / "gap.pdb", lines))
    assert len(bb) == 3


# -- hand-made problems ----------------------------------------------------------------------------

def test_missing_atom_is_reported_and_breaks_the_chain(tmp_path):
    lines = [s for s in pdb_lines(helix(6)) if not (s.startswith("ATOM") and atom_of(s) == (3, "C"))]
    (bb,), report = read_backbones(write_lines(tmp_path / "gap.pdb", lines))
    assert not report and list(bb.res_ids) == [1, 2, 4, 5, 6] and bb.sequence == "MKAYI"
    assert report.problems == [ResidueProblem("A", 3, "THR", "missing C")]
    assert [(b.before, b.after) for b in report.breaks] == [("2", "4")]
    assert report.counts["dropped"] == 1 and "THR 3: missing C" in report.summary()
    segs, report = read_backbones(tmp_path / "gap.pdb", split_breaks=True)
    assert [(b.name, len(b)) for b in segs] == [("gap_seg1", 2), ("gap_seg2", 3)]


def test_repeated_residue_numbers_keep_every_residue(tmp_path):
    """52 and 52A are two residues (insertion codes); they read as two residues numbered 52 and
    are written back with an insertion code; numbering that repeats without one (MD files that
    wrap past 9999) is another residue too; a second residue name at one number
    (microheterogeneity) is reported and dropped."""
    bb = helix(5, res_ids=np.array([50, 51, 52, 52, 53]))
    lines = pdb_lines(bb)
    assert [ln[22:27] for ln in lines if ln.startswith("ATOM") and ln[12:16] == " CA "] == \
        ["  50 ", "  51 ", "  52 ", "  52A", "  53 "]
    (got,), report = read_backbones(write_lines(tmp_path / "ins.pdb", lines))
    assert report.ok and got.sequence == bb.sequence and list(got.res_ids) == [50, 51, 52, 52, 53]
    assert write_pdb(got, tmp_path / "again.pdb").read_text() == "\n".join(lines) + "\n"   # stable
    wrapped = [ln[:26] + " " + ln[27:] if ln.startswith("ATOM") else ln for ln in lines]  # no insertion codes
    (got,), report = read_backbones(write_lines(tmp_path / "wrapped.pdb", wrapped))
    assert got.sequence == bb.sequence and report.ok
    thr = [ln for ln in wrapped if ln.startswith("ATOM") and ln[17:20] == "THR"]
    micro = [ln for ln in wrapped if not ln.startswith(("TER", "END"))]
    micro += [ln[:17] + "SER" + ln[20:30] + f"{float(ln[30:38]) + 0.3:8.3f}" + ln[38:] for ln in thr] + ["END"]
    (got,), report = read_backbones(write_lines(tmp_path / "micro.pdb", micro))
    assert got.sequence == bb.sequence and [(p.res_id, p.res_name) for p in report.problems] == [(52, "SER")]
    assert "a second residue numbered 52 in the place of THR (CA within 1.0 A)" in report.problems[0].problem
    with pytest.raises(ValueError, match=r"residue number 7 is used 28 times"):
        backbones_to_pdb_string(helix(28, sequence="A" * 28, res_ids=np.full(28, 7)))


def test_chain_break_by_a_gap_and_short_segments(tmp_path):
    bb = helix(7)
    bb.atoms[4:] += [10.0, 0.0, 0.0]
    (one,), report = read_backbones(write_pdb(bb, tmp_path / "gap.pdb"))
    assert len(one) == 7 and not report.problems and len(report.breaks) == 1
    brk = report.breaks[0]
    assert isinstance(brk, ChainBreak) and (brk.chain, brk.before, brk.after) == ("A", "4", "5") and brk.distance > 8
    bb.atoms[6:] += [10.0, 0.0, 0.0]  # a last segment of one residue
    segs, report = read_backbones(write_pdb(bb, tmp_path / "gap2.pdb"), split_breaks=True)
    assert [len(s) for s in segs] == [4, 2] and report.skipped == [("A seg3", "1 usable residue(s) (fewer than 2)")]
    ca = Backbone(atoms=bb.ca[:, None], atom_names=("CA",))
    _, report = read_backbones(write_pdb(ca, tmp_path / "ca.pdb"))
    assert [(b.before, b.after) for b in report.breaks] == [("4", "5"), ("6", "7")]


def test_nonstandard_residues_map_or_reject(tmp_path):
    lines = pdb_lines(helix(6))
    lines = [s[:17] + {3: "XYZ", 5: "MSE"}.get(atom_of(s)[0], s[17:20]) + s[20:] if s.startswith("ATOM") else s
             for s in lines]
    path = write_lines(tmp_path / "odd.pdb", lines)
    (bb,), report = read_backbones(path)
    assert bb.sequence == "MKXAMI" and report.ok and report.counts["mapped"] == 1
    parts, report = read_backbones(path, nonstandard="reject")
    assert [p.sequence for p in parts] == ["MKAI"]
    assert [(p.res_id, p.res_name) for p in report.problems] == [(3, "XYZ"), (5, "MSE")]
    assert [(b.before, b.after) for b in report.breaks] == [("2", "4"), ("4", "6")]
    with pytest.raises(ValueError, match="nonstandard"):
        read_backbones(path, nonstandard="keep")


def test_altloc_with_highest_occupancy_is_kept(tmp_path):
    out = []
    for s in pdb_lines(helix(4)):
        if s.startswith("ATOM") and atom_of(s) == (2, "CA"):
            x = float(s[30:38])
            out.append(s[:16] + "A" + s[17:54] + "  0.30" + s[60:])
            out.append(s[:16] + "B" + s[17:30] + f"{x + 0.5:8.3f}" + s[38:54] + "  0.70" + s[60:])
        else:
            out.append(s)
    (bb,), report = read_backbones(write_lines(tmp_path / "alt.pdb", out))
    assert report.ok and len(bb) == 4
    np.testing.assert_allclose(bb.atoms[1, 1, 0], helix(4).atoms[1, 1, 0] + 0.5, atol=1e-3)


def test_first_model_only(tmp_path):
    first, second = helix(4), helix(4)
    second.atoms += 3.0
    atoms = [[s for s in pdb_lines(b) if s.startswith(("ATOM", "TER"))] for b in (first, second)]
    lines = ["MODEL        1", *atoms[0], "ENDMDL", "MODEL        2", *atoms[1], "ENDMDL", "END"]
    (bb,), report = read_backbones(write_lines(tmp_path / "nmr.pdb", lines))
    assert report.ok
    np.testing.assert_allclose(bb.atoms, first.atoms, atol=1e-3)

def test_waters_and_ligands_are_ignored_and_counted(tmp_path):
    lines = [
        *pdb_lines(helix(3))[:-1],
        "HETATM  100  O   HOH A 101       1.000   2.000   3.000  1.00  0.00           O  ",
        "HETATM  101 CA    CA A 102       4.000   2.000   3.000  1.00  0.00          CA  ",
        "END"]
    (bb,), report = read_backbones(write_lines(tmp_path / "lig.pdb", lines))
    assert len(bb) == 3 and report.ok and (report.counts["waters"], report.counts["hetero"]) == (1, 1)
    waters = [s for s in lines if s.startswith("HETATM")][:1]
    with pytest.raises(ValueError, match=r"water\.pdb: no protein chain"):
        read_backbones(write_lines(tmp_path / "water.pdb", waters))


@pytest.mark.parametrize("content, message", [
    (b"", "empty file"), (b"  \n\n", "empty file"), (b"\x89PNG\r\n\x1a\n\x00\x00garbage", "no ATOM"),
    (b"ATOM      1  N   GLY A   1       x.416  -1.641   2.000  1.00  0.00           N\n", "cannot parse"),
])
def test_bad_files_raise_naming_the_file(tmp_path, content, message):
    path = tmp_path / "bad.pdb"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message) as err:
        read_backbones(path)
    assert str(err.value).startswith(str(path)) and isinstance(err.value, USER_ERRORS)


def test_truncated_pdb_names_the_file_and_line(tmp_path):
    text = backbones_to_pdb_string(helix(6))
    lines = text.splitlines()
    last_atom = max(i for i, s in enumerate(lines) if s.startswith("ATOM"))
    # cut after the record name, in the coordinates and in the B-factor of the last atom
    for cut in (3, 40, 62):
        path = tmp_path / "cut.pdb"
        path.write_text("\n".join(lines[:last_atom]) + "\n" + lines[last_atom][:cut])
        with pytest.raises(ValueError, match=rf"cut\.pdb:{last_atom + 1}: truncated file"):
            read_backbones(path)
    # complete files without a final newline, END or element columns are not flagged
    for body in (text.rstrip("\n"), "\n".join(lines[:last_atom + 1]),
                 "\n".join(s[:66] for s in lines[:last_atom + 1])):
        path.write_text(body)
        (bb,), _ = read_backbones(path)
        assert len(bb) == 6


def test_bad_coordinate_names_the_line(tmp_path):
    lines = pdb_lines(helix(4))
    lines[4] = lines[4][:30] + "  xx.xxx" + lines[4][38:]
    with pytest.raises(ValueError, match=r"bad\.pdb:5: cannot parse as PDB: the coordinates .*xx\.xxx"):
        read_backbones(write_lines(tmp_path / "bad.pdb", lines))


def test_bad_or_missing_occupancy_names_the_line(tmp_path):
    lines = pdb_lines(helix(4))
    lines[6] = lines[6][:54] + "  x.00" + lines[6][60:]
    with pytest.raises(ValueError, match=r"occ\.pdb:7: cannot parse as PDB: the occupancy \(columns 55-60\) is "
                                         r"not a number \('  x\.00'\)"):
        read_backbones(write_lines(tmp_path / "occ.pdb", lines))
    lines = pdb_lines(helix(4))
    lines[6] = lines[6][:54]
    with pytest.raises(ValueError, match=r"short\.pdb:7: cannot parse as PDB: the occupancy \(columns 55-60\) is "
                                         r"missing"):
        read_backbones(write_lines(tmp_path / "short.pdb", lines))


def test_other_bad_inputs(tmp_path):
    (tmp_path / "x.txt").write_text("a note\n")
    for path, message in [(tmp_path / "missing.pdb", "no such file"), (tmp_path / "x.txt", "not a structure file"),
                          (tmp_path / "missing", "missing: no such file or folder")]:
        with pytest.raises((ValueError, FileNotFoundError), match=message):
            read_backbones(path)
    (tmp_path / "bad.cif").write_text("data_x\nloop_\n_atom_site.id\n1\n")
    (tmp_path / "bad.pdb.gz").write_bytes(b"not gzip")
    for name in ("bad.cif", "bad.pdb.gz"):
        with pytest.raises(ValueError, match="cannot") as err:
            read_backbones(tmp_path / name)
        assert str(err.value).startswith(str(tmp_path / name))
    one = [s for s in pdb_lines(helix(2)) if not (s.startswith("ATOM") and atom_of(s)[0] == 2)]
    with pytest.raises(ValueError, match=r"one\.pdb: no protein chain with at least 2 usable residue\(s\)"):
        read_backbones(write_lines(tmp_path / "one.pdb", one))


def test_read_folder_skips_bad_files_with_a_warning(tmp_path):
    write_pdb(helix(5), tmp_path / "b.pdb")
    write_pdb([helix(4), helix(3, chain="B")], tmp_path / "a.pdb")
    (tmp_path / "notes.txt").write_text("ignored\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing skipped: no warning
        assert [b.name for b in read_folder(tmp_path, chains=["A"])[0]] == ["a_A", "b"]
    (tmp_path / "c.cif").write_text("nonsense\n")
    with pytest.warns(UserWarning, match=r"skipped 1 of 3 files .*\(c\.cif: cannot parse as mmCIF .*\) and 0 chain"):
        bbs, reports = read_folder(tmp_path)
    assert [b.name for b in bbs] == ["a_A", "a_B", "b"]
    assert [r.file.name for r in reports] == ["a.pdb", "b.pdb", "c.cif"]
    assert reports[0].ok and not reports[2] and reports[2].error.startswith(str(tmp_path / "c.cif"))
    assert "not read" in reports[2].summary()
    (tmp_path / "a.pdb").unlink()
    (tmp_path / "b.pdb").unlink()
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="no usable protein chain"):
        read_folder(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no structure files"):
        read_folder(tmp_path / "empty")
    with pytest.raises(ValueError, match="no such folder"):
        read_folder(tmp_path / "nowhere")


def test_report_type():
    r = ReadReport(Path("x.pdb"))
    assert r.ok and bool(r)
    r.breaks.append(ChainBreak("A", "3", "4", 5.0))
    assert not r and "A 3-4 (5.0 A)" in r.summary()


# -- fuzzing -----------------------------------------------------------------------------------------

def check_read(result: tuple[list[Backbone], ReadReport]) -> None:
    bbs, report = result
    assert bbs and isinstance(report, ReadReport), "no backbone returned without an error"
    for b in bbs:
        assert len(b) >= 2 and len(b.sequence) == len(b) == len(b.res_ids), f"inconsistent backbone {b.name}"
        assert np.isfinite(b.atoms).all(), f"non-finite coordinates in {b.name}"
    assert report.counts["chains"] == len(bbs) and report.counts["residues"] == sum(len(b) for b in bbs)


def test_fuzz_read_backbones(tmp_path):
    valid = backbones_to_pdb_string([helix(4), helix(3, chain="B")]).encode()
    tokens = (b"ATOM  ", b"HETATM", b"MODEL        1\n", b"ENDMDL\n", b"TER\n", b" CA ", b"MSE", b"9999.999")
    print(fuzz_reader(read_backbones, {"small.pdb": valid}, tmp_path, examples=150, expected=(ValueError,),
                      count=lambda r: len(r[0]), check=check_read, tokens=tokens, name="read_backbones(.pdb)"))


def test_fuzz_read_backbones_mmcif(tmp_path):
    import biotite.structure.io.pdb as pdb
    import biotite.structure.io.pdbx as pdbx

    text = backbones_to_pdb_string([helix(3), helix(3, chain="B")])
    cif, out = pdbx.CIFFile(), io.StringIO()
    pdbx.set_structure(cif, pdb.PDBFile.read(io.StringIO(text)).get_structure(model=1))
    cif.write(out)
    print(fuzz_reader(read_backbones, {"small.cif": out.getvalue().encode()}, tmp_path, examples=100,
                      expected=(ValueError,), count=lambda r: len(r[0]), check=check_read,
                      tokens=(b"loop_", b"_atom_site.", b"data_", b"?", b"."), name="read_backbones(.cif)"))

# -- real files (../shared) ---------------------------------------------------------------------------

@needs_shared
@pytest.mark.parametrize("name, chain, n, atoms", [
    ("5L33.pdb", "A", 106, ("N", "CA", "C", "O")),
    ("6MRR.pdb", "A", 68, ("N", "CA", "C", "O")),
    ("chignolin_CA.pdb", "P", 10, ("CA",)),
])
def test_shared_files(tmp_path, name, chain, n, atoms):
    (bb,), report = read_backbones(PROTEINS / name)
    assert (bb.chain, len(bb), bb.atom_names) == (chain, n, atoms) and report.ok
    assert np.isfinite(bb.atoms).all() and "X" not in bb.sequence
    (again,), _ = read_backbones(write_pdb(bb, tmp_path / name))
    np.testing.assert_allclose(again.atoms, bb.atoms, atol=1e-3)
    assert again.sequence == bb.sequence and list(again.res_ids) == list(bb.res_ids)


@needs_shared
def test_shared_folder_and_mmcif(tmp_path):
    import biotite.structure.io.pdb as pdb
    import biotite.structure.io.pdbx as pdbx

    bbs, reports = read_folder(PROTEINS)
    assert len(reports) >= 10 and all(r.error is None for r in reports) and len(bbs) >= 10
    (ref,), _ = read_backbones(PROTEINS / "5L33.pdb")
    cif = pdbx.CIFFile()
    pdbx.set_structure(cif, pdb.PDBFile.read(str(PROTEINS / "5L33.pdb")).get_structure(model=1, altloc="occupancy"))
    cif.write(str(tmp_path / "5L33.cif"))
    (got,), report = read_backbones(tmp_path / "5L33.cif")
    assert report.ok and got.sequence == ref.sequence and got.name == ref.name
    np.testing.assert_allclose(got.atoms, ref.atoms, atol=1e-3)
    np.testing.assert_array_equal(got.res_ids, ref.res_ids)
