"""Molecule files: XYZ / extended XYZ / SDF / SMILES round trips (byte-identical rewrites,
charges and properties kept), errors naming the file and line or record, counted skip
warnings, folders, one file per molecule, fuzzing, and (with ../shared) real QM9 files."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from molecule_records import check_molecules, sdf_records, smiles_records

from polydiff.fuzz import fuzz_reader
from polydiff.plugin import USER_ERRORS, shared_dir
from polydiff_molecules import Molecule, from_rdkit
from polydiff_molecules.molio import (
    MoleculeFileError,
    read_molecules,
    read_sdf,
    read_smiles,
    read_xyz,
    write_molecules,
    write_sdf,
    write_smiles,
    write_xyz,
)

pytestmark = pytest.mark.usefixtures("one_thread")

QM9_XYZ = shared_dir() / "data" / "qm9" / "qm9_3d_sample128.extxyz"
STABILITY_XYZ = shared_dir() / "fixtures" / "mol_stability" / "molecules.xyz"


def needs_shared(path: Path):
    """Mark a test as needing the shared file ``path`` and skip it when absent."""
    def mark(test):
        skip = pytest.mark.skipif(not path.is_file(), reason=f"shared data file {path} not found (set "
                                  "POLYDIFF_SHARED to the shared folder)")
        return skip(pytest.mark.shared(test))
    return mark


def embedded(smiles: str, name: str = "", **props: float) -> Molecule:
    """A small 3-D molecule (RDKit ETKDG, fixed seed) with bonds and charges."""
    from rdkit import Chem
    from rdkit.Chem import AllChem

    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    assert AllChem.EmbedMolecule(mol, randomSeed=3) == 0
    return from_rdkit(mol, name=name, properties=props)


@pytest.fixture(scope="module")
def mols() -> list[Molecule]:
    return [embedded("C[NH3+]", "methylammonium", energy=-95.25, mu=1.0 / 3.0),
            embedded("CC(=O)[O-]", 'acetate "ion" 2', gap=0.3),
            embedded("c1ccccc1", "")]


def assert_same(a: Molecule, b: Molecule, atol: float, bonds: bool = True) -> None:
    assert a.symbols == b.symbols and a.name == b.name
    np.testing.assert_allclose(a.positions, b.positions, atol=atol, rtol=0)
    np.testing.assert_array_equal(a.charges, b.charges)
    assert a.properties == b.properties
    if bonds:
        np.testing.assert_array_equal(a.bonds, b.bonds)


# -- XYZ ------------------------------------------------------------------------------------------

def test_xyz_round_trip_extended_and_plain(tmp_path, mols):
    path = write_xyz(mols, tmp_path / "m.xyz")
    text = path.read_text()
    assert text.startswith("8\nProperties=species:S:1:pos:R:3:charges:I:1 name=methylammonium energy=-95.25 mu=0.3")
    assert "\nProperties=species:S:1:pos:R:3 \n" not in text and not (tmp_path / ".m.tmp").exists()
    got = read_xyz(path)
    for a, b in zip(mols, got):
        assert_same(a, b, atol=5.1e-11, bonds=False)
        assert b.bonds is None
        np.testing.assert_array_equal(b.positions, np.round(a.positions, 10) + 0.0)
    assert got[1].name == 'acetate "ion" 2' and got[0].properties["mu"] == 1.0 / 3.0
    assert write_xyz(got, tmp_path / "again.xyz").read_bytes() == path.read_bytes()  # byte-identical rewrite
    # plain XYZ: the comment is the name; properties and charges are not kept
    plain = read_xyz(write_xyz(mols, tmp_path / "plain.xyz", extended=False))
    assert [m.name for m in plain] == [m.name for m in mols] and plain[0].properties == {}
    assert not np.any(plain[0].charges)
    np.testing.assert_allclose(plain[2].positions, mols[2].positions, atol=5.1e-11)
    with pytest.raises(ValueError, match="no molecules to write"):
        write_xyz([], tmp_path / "none.xyz")


def test_xyz_variants(tmp_path):
    text = ("\n".join([
        "2", "water fragment", "o 0 0 0", "1 0.0 0.0 0.96",  # lowercase symbol, atomic number
        "",  # a blank line between frames
        "3",
        'Properties=Z:I:1:pos:R:3:q:R:1:formal_charges:I:1 name="my mol" e=1.5 pbc="F F F" flag tag=x',
        "8 0 0 0 -0.5 0", "1 0 0 0.97 0.25 0", "1 0.9 0 -0.2 0.25 0",
        "1", "first-token e=2 note='x y'", "N 1 2 3",
        "1", "rest", "C 1 2 3 extra columns ignored",
    ]) + "\n")
    (tmp_path / "v.xyz").write_text(text)
    a, b, c, d = read_xyz(tmp_path / "v.xyz")
    assert a.symbols == ("O", "H") and a.name == "water fragment" and a.properties == {}
    assert b.symbols == ("O", "H", "H") and b.name == "my mol" and b.properties == {"e": 1.5}
    np.testing.assert_array_equal(b.positions[2], [0.9, 0, -0.2])
    assert c.name == "first-token" and c.properties == {"e": 2.0}
    assert d.name == "rest" and d.positions.tolist() == [[1, 2, 3]]
    # CRLF line ends read the same
    (tmp_path / "crlf.xyz").write_bytes(text.replace("\n", "\r\n").encode())
    assert [m.name for m in read_xyz(tmp_path / "crlf.xyz")] == ["water fragment", "my mol", "first-token", "rest"]


@pytest.mark.parametrize("text, match", [
    ("", r"e\.xyz: no molecules"),
    ("two\ncomment\nC 0 0 0\n", r"e\.xyz:1: frame 1: expected the number of atoms, got 'two'"),
    ("0\ncomment\n", r"e\.xyz:1: frame 1: the atom count must be positive"),
    ("1\nc\nC 0 0 0\n3\nsecond\nC 0 0 0\nH 1 0 0\n", r"e\.xyz:8: frame 2 \(line 4\) announces 3 atoms but only 2"),
    ("1\nc\nC 0 0 0\n2\n", r"e\.xyz:6: frame 2 \(line 4\) announces 2 atoms but only 0"),
    ("2\nc\nC 0 0 0\nXx 1 0 0\n", r"e\.xyz:4: frame 1, atom 2: unknown element 'Xx'"),
    ("1\nc\nC 0 zero 0\n", r"e\.xyz:3: frame 1, atom 1: coordinates are not numbers"),
    ("1\nc\nC 0 nan 0\n", r"e\.xyz:3: frame 1, atom 1: coordinates are not finite"),
    ("1\nc\nC 0 0\n", r"e\.xyz:3: frame 1, atom 1: expected 'element x y z'"),
    ("1\nProperties=species:S:1:pos:R:3:q:R:1 a=1\nC 0 0 0\n", r"e\.xyz:3: frame 1, atom 1: expected 5 fields"),
    ("1\nProperties=species:S:1:pos:R a=1\nC 0 0 0\n", r"e\.xyz:2: Properties=.* not a list of"),
    ("1\nProperties=species:S:1:x:R:3\nC 0 0 0\n", r"e\.xyz:2: .* no pos:R:3 column"),
    ("1\nProperties=species:S:1:pos:R:3:charges:I:1\nC 0 0 0 0.5\n", r"e\.xyz:3: .*formal charge '0.5'"),
])
def test_xyz_errors_name_file_and_line(tmp_path, text, match):
    (tmp_path / "e.xyz").write_text(text)
    with pytest.raises(MoleculeFileError, match=match) as err:
        read_xyz(tmp_path / "e.xyz")
    assert str(err.value).startswith(str(tmp_path / "e.xyz")) and isinstance(err.value, USER_ERRORS)


def test_unreadable_files(tmp_path):
    (tmp_path / "bin.xyz").write_bytes(b"1\ncomment \xff\nC 0 0 0\n")
    with pytest.raises(MoleculeFileError, match=r"bin\.xyz:2: not UTF-8"):
        read_xyz(tmp_path / "bin.xyz")
    with pytest.raises(MoleculeFileError, match=r"nowhere\.xyz: no such file"):
        read_xyz(tmp_path / "nowhere.xyz")
    with pytest.raises(MoleculeFileError, match="not a file"):
        read_sdf(tmp_path)


# -- SDF ------------------------------------------------------------------------------------------

def test_sdf_round_trip(tmp_path, mols):
    path = write_sdf(mols, tmp_path / "m.sdf")
    text = path.read_text()
    assert text.count("$$$$\n") == 3 and "M  CHG  1" in text and ">  <energy>\n-95.25\n" in text
    got = read_sdf(path)
    for a, b in zip(mols, got):
        assert_same(a, b, atol=5.1e-5)
    assert write_sdf(got, tmp_path / "again.sdf").read_bytes() == path.read_bytes()
    v3 = write_sdf(got, tmp_path / "v3.sdf", v3000=True)
    assert "V3000" in v3.read_text()
    for a, b in zip(got, read_sdf(v3)):
        assert_same(a, b, atol=1e-12)
    # a molecule without bonds is written without bonds, and read back with unknown bonds (as from XYZ), so
    # metrics infer them from distances for the file as for the molecule in memory
    bare = Molecule(("O", "H", "H"), [[0, 0, 0], [0, 0, 0.96], [0.93, 0, -0.24]], name="water")
    (back,) = read_sdf(write_sdf(bare, tmp_path / "bare.mol"))
    assert back.name == "water" and back.bonds is None
    from polydiff_molecules.metrics import evaluate_molecules

    ours, theirs = evaluate_molecules([bare, bare], [bare]), evaluate_molecules([back, back], [bare])
    assert ours["bond_length_w1"] == ours["bond_length_w1"]  # a number, not NaN
    assert ours.keys() == theirs.keys()
    assert all(ours[k] == theirs[k] or (ours[k] != ours[k] and theirs[k] != theirs[k]) for k in ours)
    with pytest.raises(ValueError, match="'x': bond order 4; orders are 0"):  # refused before any writing
        Molecule(("C", "C"), [[0, 0, 0], [1.4, 0, 0]], bonds=[[0, 4], [4, 0]], name="x")
    aromatic = Molecule(("C", "C"), [[0, 0, 0], [1.4, 0, 0]], bonds=[[0, 1], [1, 0]], name="x")
    aromatic.bonds[0, 1] = aromatic.bonds[1, 0] = 4  # changed after the checks
    with pytest.raises(ValueError, match="bond order 4 cannot be written"):
        write_sdf(aromatic, tmp_path / "bad.sdf")
    with pytest.raises(ValueError, match="cannot be an SD field name"):
        write_sdf(Molecule(("C",), [[0, 0, 0]], properties={"a<b": 1.0}), tmp_path / "bad.sdf")


def test_sdf_fields_and_skipped_records(tmp_path, mols):
    good = write_sdf(mols[:2], tmp_path / "good.sdf").read_text()
    first, second = good.split("$$$$\n")[:2]
    record = first + ">  <label>\nactive\n\n>  <score>\n 7.5 \n\n$$$$\n"
    garbled = "garbled\n  RDKit\n\n  x  y  0  0  0  0  0  0  0  0999 V2000\nM  END\n$$$$\n"
    (tmp_path / "mixed.sdf").write_text(record + garbled + second + "$$$$\n" + garbled)
    with pytest.warns(UserWarning, match=r"mixed\.sdf: skipped 2 of 4 SDF records .*record 2 \(line \d+\): RDKit "
                      r"cannot parse it; record 4 \(line \d+\)") as caught:
        got = read_sdf(tmp_path / "mixed.sdf")
    assert len(caught) == 1 and [m.name for m in got] == ["methylammonium", 'acetate "ion" 2']
    assert got[0].properties == {"energy": -95.25, "mu": 1.0 / 3.0, "score": 7.5}  # 'active' is text
    (tmp_path / "bad.sdf").write_text(garbled * 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(MoleculeFileError, match=r"bad\.sdf: no readable molecule in 2 SDF record"):
            read_sdf(tmp_path / "bad.sdf")
    (tmp_path / "empty.sdf").write_text("\n\n")
    with pytest.raises(MoleculeFileError, match=r"empty\.sdf: empty file"):
        read_sdf(tmp_path / "empty.sdf")


# -- SMILES ---------------------------------------------------------------------------------------

def test_smiles_read_and_write(tmp_path, mols):
    (tmp_path / "s.smi").write_text("SMILES\tname\n# a comment\nCCO ethanol\n\nc1ccccc1\tbenzene ring  \n"
                                    "C1CC\tbroken\nN\nC(C)(C)(C)(C)C five\n")
    with pytest.warns(UserWarning, match=r"s\.smi: skipped 2 of 5 SMILES .*line 6: 'C1CC'; line 8"):
        got = read_smiles(tmp_path / "s.smi")
    assert got == [("CCO", "ethanol"), ("c1ccccc1", "benzene ring"), ("N", "")]
    (tmp_path / "bad.smi").write_text("smiles\nC1CC\nX\n")
    with pytest.raises(MoleculeFileError, match=r"bad\.smi: no valid SMILES: all 2 are invalid \(line 2"):
        read_smiles(tmp_path / "bad.smi")
    (tmp_path / "none.smi").write_text("# nothing\n")
    with pytest.raises(MoleculeFileError, match=r"none\.smi: no valid SMILES$"):
        read_smiles(tmp_path / "none.smi")
    # writing: canonical SMILES and names; a molecule that does not sanitise becomes a comment
    star = np.zeros((6, 6), dtype=int)
    star[0, 1:] = star[1:, 0] = 1
    pentavalent = Molecule(("C", "H", "H", "H", "H", "H"), np.eye(6, 3), bonds=star, name="bad one")
    path = write_smiles([*mols, pentavalent], tmp_path / "out.smi")
    assert path.read_text() == "C[NH3+]\tmethylammonium\nCC(=O)[O-]\tacetate \"ion\" 2\nc1ccccc1\n# invalid bad one\n"
    assert read_smiles(path) == [("C[NH3+]", "methylammonium"), ("CC(=O)[O-]", 'acetate "ion" 2'),
                                 ("c1ccccc1", "")]


# -- any file, folders, one file per molecule -----------------------------------------------------

def test_read_molecules_files_and_folders(tmp_path, mols):
    folder = tmp_path / "in"
    write_sdf(mols[:2], folder / "a.sdf")
    write_xyz(mols[2:], folder / "b.xyz")
    (folder / "c.smi").write_text("CC ethane\n")
    (folder / "notes.txt").write_text("not a molecule file\n")
    (folder / ".hidden.xyz").write_text("junk\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = read_molecules(folder)
    assert [m.name for m in got] == ["methylammonium", 'acetate "ion" 2', "", "ethane"]
    assert got[3].symbols == ("C", "C", "H", "H", "H", "H", "H", "H")
    assert 1.45 < np.linalg.norm(got[3].positions[0] - got[3].positions[1]) < 1.6
    (folder / "d.xyz").write_text("3\ncut\nC 0 0 0\n")
    with pytest.warns(UserWarning, match=r"in: skipped 1 of 4 files that could not be read: "
                      r"d\.xyz:4: frame 1 \(line 1\)"):
        assert len(read_molecules(folder)) == 4
    assert [m.name for m in read_molecules(folder / "a.sdf")] == ["methylammonium", 'acetate "ion" 2']
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.sdf").write_text("nonsense\n")
    (bad / "y.xyz").write_text("nonsense\n")
    with pytest.raises(MoleculeFileError, match=r"bad: none of the 2 molecule files could be read: "
                       r"x\.sdf: .*; y\.xyz:1: "):
        read_molecules(bad)
    (tmp_path / "empty").mkdir()
    with pytest.raises(MoleculeFileError, match="no molecule files"):
        read_molecules(tmp_path / "empty")
    with pytest.raises(MoleculeFileError, match="no such file or folder"):
        read_molecules(tmp_path / "nowhere")
    with pytest.raises(MoleculeFileError, match=r"notes\.txt: not a molecule file"):
        read_molecules(folder / "notes.txt")


def test_write_molecules_one_file_each(tmp_path, mols):
    named = [mols[0], mols[1], mols[2], mols[0], Molecule(("C",), [[0, 0, 0]], name="../up")]
    paths = write_molecules(named, tmp_path / "out")
    assert [p.name for p in paths] == ["methylammonium.sdf", "acetate_ion_2.sdf", "sample_0002.sdf",
                                       "methylammonium-2.sdf", "up.sdf"]
    assert all(p.parent == tmp_path / "out" for p in paths)
    assert_same(read_sdf(paths[1])[0], mols[1], atol=5.1e-5)
    xyz = write_molecules(mols, tmp_path / "xyz", fmt="xyz")
    assert [p.suffix for p in xyz] == [".xyz"] * 3
    assert_same(read_xyz(xyz[0])[0], mols[0], atol=5.1e-11, bonds=False)
    with pytest.raises(ValueError, match="fmt must be"):
        write_molecules(mols, tmp_path / "pdb", fmt="pdb")


def test_a_samples_folder_reads_back_in_the_written_order(tmp_path):
    names = ["sample_1000", "sample_1001", "sample_10000"]  # sorted as strings: 1000, 10000, 1001
    write_molecules([Molecule(("C",), [[0.0, 0.0, float(i)]], name=n) for i, n in enumerate(names)], tmp_path / "s")
    assert [m.name for m in read_molecules(tmp_path / "s")] == names


# -- fuzzing --------------------------------------------------------------------------------------

def test_fuzz_read_xyz(tmp_path, mols):
    valid = write_xyz(mols[:2], tmp_path / "v.xyz").read_bytes()
    tokens = (b"Properties=", b"species:S:1:pos:R:3", b":charges:I:1", b"name=", b'"', b"=", b"Xx", b"999999")
    print(fuzz_reader(read_xyz, {"small.xyz": valid}, tmp_path / "fuzz", examples=200, expected=(MoleculeFileError,),
                      check=check_molecules, tokens=tokens, name="read_xyz"))


@pytest.mark.parametrize("v3000", [False, True])
def test_fuzz_read_sdf(tmp_path, mols, v3000):
    valid = write_sdf(mols[:2], tmp_path / "v.sdf", v3000=v3000).read_bytes()
    tokens = (b"V2000", b"V3000", b"M  CHG  1   1   1\n", b">  <x>\n", b"  1  2  4  0\n", b"999", b" R ", b"*",
              b"M  V30 ", b"CHG=1")
    print(fuzz_reader(read_sdf, {"small.sdf": valid}, tmp_path / "fuzz", examples=150, expected=(MoleculeFileError,),
                      records=sdf_records, check=check_molecules, tokens=tokens,
                      name=f"read_sdf({'V3000' if v3000 else 'V2000'})"))


def test_fuzz_read_smiles(tmp_path):
    valid = b"smiles name\n# comment\nCCO ethanol\nc1ccccc1\tbenzene\nC[NH3+]\n"
    print(fuzz_reader(read_smiles, {"small.smi": valid}, tmp_path / "fuzz", examples=150,
                      expected=(MoleculeFileError,), records=smiles_records, tokens=(b"[", b"]", b"(", b"=", b"@"),
                      name="read_smiles"))


# -- real files (../shared) -----------------------------------------------------------------------

@needs_shared(QM9_XYZ)
def test_qm9_extxyz(tmp_path):
    mols = read_xyz(QM9_XYZ)
    assert len(mols) == 128 and all(set(m.symbols) <= {"H", "C", "N", "O", "F"} for m in mols)
    first = mols[0]
    assert first.symbols[:3] == ("C", "O", "C") and len(first) == 14 and first.name == ""
    assert first.properties == {"struct_id": 624.0, "energy": -307.529289, "charge": 0.0, "spin_multiplicity": 1.0}
    np.testing.assert_array_equal(first.positions[0], [0.1045592368, 1.0270439402, 0.3570017811])
    assert not any(m.charges.any() for m in mols)  # the Mulliken column is not a formal charge
    path = write_xyz(mols, tmp_path / "qm9.xyz")
    again = read_xyz(path)
    for a, b in zip(mols, again):
        assert_same(a, b, atol=0, bonds=False)  # 10 decimals in, 10 decimals out: exact
    assert write_xyz(again, tmp_path / "qm9b.xyz").read_bytes() == path.read_bytes()


@needs_shared(STABILITY_XYZ)
def test_stability_fixture_xyz():
    mols = read_xyz(STABILITY_XYZ)
    assert len(mols) == 53 and [m.name for m in mols] == [f"pub{k:03d}" for k in range(53)]
    assert mols[0].properties == {"frame": 100.0, "struct_id": 100271.0, "noise": 0.0}
    assert len(mols[48]) == 1 and mols[49].symbols == ("H", "H")
    if QM9_XYZ.is_file():  # frames 100-127 of the QM9 file, coordinates text-identical
        qm9 = read_xyz(QM9_XYZ)
        for k in range(28):
            assert mols[k].symbols == qm9[100 + k].symbols
            np.testing.assert_array_equal(mols[k].positions, qm9[100 + k].positions)
