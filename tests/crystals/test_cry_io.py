"""Crystal files: CIF / POSCAR / extXYZ round trips (lattice and fractional coordinates to 1e-6),
multi-block CIFs and multi-frame extXYZ, bad CIFs skipped with the file (and row) named and
counted, CSV tables of CIF strings (properties, names, bad rows, missing columns), the summary
table of write_structures, and atomic writes that never leave an existing file half-written."""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure
from pymatgen.io.cif import CifWriter
from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

from polydiff_crystals import crystal_io
from polydiff_crystals.crystal_io import (
    SUMMARY_COLUMNS,
    CrystalFileError,
    read_cif_csv,
    read_structures,
    write_structures,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def examples() -> list[Structure]:
    """Three small crystals: cubic rock salt, a triclinic cell in a rotated (non-canonical)
    orientation with coordinates on and near the cell faces, and wurtzite."""
    rocksalt = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    rocksalt.properties = {"name": "NaCl", "formation_energy": -2.1}
    c, s = np.cos(0.3), np.sin(0.3)
    rotated = Lattice.from_parameters(4.1, 5.3, 6.2, 81.0, 97.5, 103.0).matrix @ np.array([[c, -s, 0], [s, c, 0],
                                                                                            [0, 0, 1]])
    rng = np.random.default_rng(0)
    frac = np.vstack([[0.0, 0.0, 0.0], [0.999999, 0.5, 1e-7], rng.random((3, 3))])
    triclinic = Structure(Lattice(rotated), ["Li", "Fe", "O", "O", "O"], frac)
    triclinic.properties = {"name": "LiFeO3 / odd:name", "band_gap": 1.25}
    wurtzite = Structure(Lattice.hexagonal(3.25, 5.21), ["Zn", "Zn", "O", "O"],
                         [[1 / 3, 2 / 3, 0], [2 / 3, 1 / 3, 0.5], [1 / 3, 2 / 3, 0.382], [2 / 3, 1 / 3, 0.882]])
    wurtzite.properties = {"name": "ZnO"}
    return [rocksalt, triclinic, wurtzite]


def assert_same_crystal(a: Structure, b: Structure, *, tol: float = 1e-6, same_orientation: bool = True) -> None:
    """Same lattice (parameters; also the matrix with ``same_orientation``) and the same sites up
    to order and whole lattice translations, to ``tol``."""
    np.testing.assert_allclose(b.lattice.parameters, a.lattice.parameters, atol=tol, rtol=0)
    if same_orientation:
        np.testing.assert_allclose(b.lattice.matrix, a.lattice.matrix, atol=tol, rtol=0)
    assert len(a) == len(b)
    free = list(range(len(b)))
    for site in a:
        for j in free:
            d = b[j].frac_coords - site.frac_coords
            if b[j].species == site.species and np.abs(d - np.round(d)).max() < tol:
                free.remove(j)
                break
        else:
            raise AssertionError(f"site {site} of {a.formula} not found in the structure read back")


def by_name(structures: list[Structure]) -> dict[str, Structure]:
    return {s.properties["name"]: s for s in structures}


@pytest.mark.parametrize("fmt", ["cif", "poscar", "extxyz"])
def test_round_trip(tmp_path: Path, fmt: str) -> None:
    originals = examples()
    paths = write_structures(originals, tmp_path, fmt=fmt)
    assert paths[-1] == tmp_path / "summary.csv" and len(paths) == len(originals) + 1
    assert all(p.is_file() for p in paths)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # our own summary table is passed over quietly
        back = by_name(read_structures(tmp_path))
    written = [p.stem for p in paths[:-1]]
    assert sorted(back) == sorted(written)
    assert "LiFeO3_odd_name" in back  # sanitised
    for original, stem in zip(originals, written, strict=True):
        # a CIF keeps only the lattice parameters: pymatgen rebuilds the matrix in its own orientation
        assert_same_crystal(original, back[stem], same_orientation=fmt != "cif")
    if fmt == "extxyz":  # float properties travel in the frame's info
        assert back["NaCl"].properties["formation_energy"] == pytest.approx(-2.1)
        assert back["LiFeO3_odd_name"].properties["band_gap"] == pytest.approx(1.25)


def test_single_files_and_names(tmp_path: Path) -> None:
    nacl = examples()[0]
    (tmp_path / "POSCAR").write_text(crystal_io.Poscar(nacl).get_str())
    (tmp_path / "two.cif").write_text(str(CifWriter(nacl)) + str(CifWriter(examples()[2])))
    (tmp_path / "list.json").write_text("[" + ",".join(s.to_json() for s in examples()[:2]) + "]")
    poscar = read_structures(tmp_path / "POSCAR")
    assert [s.properties["name"] for s in poscar] == ["POSCAR"]
    assert_same_crystal(nacl, poscar[0])
    two = read_structures(tmp_path / "two.cif")
    assert [s.properties["name"] for s in two] == ["two_0", "two_1"]
    assert [s.composition.reduced_formula for s in two] == ["NaCl", "ZnO"]
    js = read_structures(tmp_path / "list.json")
    assert [s.properties["name"] for s in js] == ["NaCl", "LiFeO3 / odd:name"]
    assert js[0].properties["formation_energy"] == -2.1
    assert read_structures(tmp_path / "list.json", properties=["band_gap"])[0].properties == {"name": "NaCl"}


def test_bad_cif_in_folder_is_skipped_and_counted(tmp_path: Path) -> None:
    nacl, _, zno = examples()
    (tmp_path / "a_good.cif").write_text(str(CifWriter(nacl)))
    (tmp_path / "b_bad.cif").write_text("data_broken\n_cell_length_a 3.0\n_cell_length_b oops\n")
    (tmp_path / "c_mixed.cif").write_text(str(CifWriter(zno)) + "data_empty\n_cell_length_a 4\n")
    (tmp_path / "notes.txt").write_text("not a crystal")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = read_structures(tmp_path)
    assert [s.properties["name"] for s in got] == ["a_good", "c_mixed_0"]
    messages = [str(w.message) for w in caught]
    bad = [m for m in messages if "b_bad.cif" in m]
    assert len(bad) == 1 and "skipped 1 of 1" in bad[0] and "data block 0" in bad[0]
    mixed = [m for m in messages if "c_mixed.cif" in m]
    assert len(mixed) == 1 and "skipped 1 of 2" in mixed[0] and "data block 1 (line" in mixed[0]
    assert any("notes.txt" in m and "skipped 1 file" in m for m in messages)
    with pytest.raises(CrystalFileError, match=r"b_bad\.cif"):
        read_structures(tmp_path / "b_bad.cif")


def test_empty_folder_and_unknown_files(tmp_path: Path) -> None:
    with pytest.raises(CrystalFileError, match="no crystal files"):
        read_structures(tmp_path)
    (tmp_path / "x.txt").write_text("x")
    with pytest.raises(CrystalFileError, match=r"x\.txt: not a crystal file"):
        read_structures(tmp_path / "x.txt")
    with pytest.raises(CrystalFileError, match="no such file"):
        read_structures(tmp_path / "missing.cif")


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def test_csv_properties_names_and_limit(tmp_path: Path) -> None:
    nacl, tric, zno = examples()
    rows = [[str(i), mid, str(CifWriter(s)), h, g, s.composition.reduced_formula]
            for i, (mid, s, h, g) in enumerate([("mp-1", nacl, "-2.5", "4.1"), ("mp-2", tric, "0.3", ""),
                                               ("mp-3", zno, "-1.75", "3.3")])]
    file = write_csv(tmp_path / "t.csv", ["", "material_id", "cif", "heat_ref", "ind_gap", "formula"], rows)
    got, skipped = read_cif_csv(file, columns={"heat_ref": "formation_energy", "ind_gap": "band_gap"})
    assert skipped == 0
    assert [s.properties for s in got] == [
        {"name": "mp-1", "formation_energy": -2.5, "band_gap": 4.1},
        {"name": "mp-2", "formation_energy": 0.3},  # an empty cell leaves the property unset
        {"name": "mp-3", "formation_energy": -1.75, "band_gap": 3.3}]
    for original, s in zip(examples(), got, strict=True):
        assert_same_crystal(original, s, same_orientation=False)
    auto = read_structures(file)  # numeric columns under their own names; text and index columns left out
    assert auto[0].properties == {"name": "mp-1", "heat_ref": -2.5, "ind_gap": 4.1}
    assert [s.properties["name"] for s in read_cif_csv(file, limit=2)[0]] == ["mp-1", "mp-2"]
    nameless = write_csv(tmp_path / "u.csv", ["cif"], [[str(CifWriter(zno))], [str(CifWriter(nacl))]])
    assert [s.properties["name"] for s in read_structures(nameless)] == ["row0", "row1"]


def test_csv_bad_row_is_named_and_counted(tmp_path: Path) -> None:
    nacl, _, zno = examples()
    file = write_csv(tmp_path / "t.csv", ["material_id", "cif"],
                     [["a", str(CifWriter(nacl))], ["b", "data_x\n_cell_length_a 1\nnot a cif"],
                      ["c", str(CifWriter(zno))]])
    bad_line = 2 + str(CifWriter(nacl)).count("\n") + 1  # row 0 starts on line 2 and spans its CIF's lines
    with pytest.warns(UserWarning, match=rf"t\.csv: skipped 1 of 3 .*row 1 \(line {bad_line}\)"):
        got, skipped = read_cif_csv(file)
    assert skipped == 1 and [s.properties["name"] for s in got] == ["a", "c"]


def test_csv_errors(tmp_path: Path) -> None:
    nacl = examples()[0]
    file = write_csv(tmp_path / "t.csv", ["material_id", "cif", "heat_ref"],
                     [["a", str(CifWriter(nacl)), "1.0"], ["b", str(CifWriter(nacl)), "n/a?"]])
    with pytest.raises(CrystalFileError, match=r"t\.csv: row 1 \(line \d+\), column 'heat_ref': not a number"):
        read_cif_csv(file, columns={"heat_ref": "formation_energy"})
    for cell in ("inf", "-Infinity", "nan"):
        inf = write_csv(tmp_path / "i.csv", ["material_id", "cif", "heat_ref"],
                        [["a", str(CifWriter(nacl)), "1.0"], ["b", str(CifWriter(nacl)), cell]])
        for read in (lambda f: read_cif_csv(f, columns={"heat_ref": "formation_energy"}), read_structures):
            with pytest.raises(CrystalFileError, match=rf"i\.csv: row 1 \(line \d+\), column 'heat_ref': not a "
                                                       rf"finite number: '{cell}' \(leave the cell empty"):
                read(inf)
    with pytest.raises(CrystalFileError, match=r"t\.csv: no column 'gap'"):
        read_cif_csv(file, columns={"gap": "band_gap"})
    no_cif = write_csv(tmp_path / "n.csv", ["material_id", "structure"], [["a", "x"]])
    with pytest.raises(CrystalFileError, match=r"n\.csv: no 'cif' column \(columns found: 'material_id', "
                                               r"'structure'\)"):
        read_cif_csv(no_cif)
    with pytest.raises(CrystalFileError, match=r"n\.csv"):
        read_structures(no_cif)


def extxyz_frame(lattice: str | None, energy: float) -> str:
    info = (f'Lattice="{lattice}" ' if lattice else "") + f"energy_per_atom={energy} Properties=species:S:1:pos:R:3"
    return f"2\n{info}\nNa 0.0 0.0 0.0\nCl 2.82 2.82 2.82\n"


def test_extxyz_frames(tmp_path: Path) -> None:
    cell = "5.64 0.0 0.0 0.0 5.64 0.0 0.0 0.0 5.64"
    good = tmp_path / "frames.extxyz"
    good.write_text(extxyz_frame(cell, -1.5) + extxyz_frame(cell, -1.25))
    got = read_structures(good)
    assert [s.properties["name"] for s in got] == ["frames_0", "frames_1"]
    assert [s.properties["energy_per_atom"] for s in got] == [-1.5, -1.25]
    np.testing.assert_allclose(got[1].frac_coords[1], [0.5, 0.5, 0.5], atol=1e-12)
    bad = tmp_path / "nocell.xyz"
    bad.write_text(extxyz_frame(cell, -1.5) + extxyz_frame(None, -1.0))
    with pytest.raises(CrystalFileError, match=r"nocell\.xyz: frame 1: no 3-D cell"):
        read_structures(bad)


def test_write_summary_columns_flags_and_names(tmp_path: Path) -> None:
    structures = [*examples(), examples()[0]]  # the second NaCl gets a unique name
    flags = {"valid": [True, False, True, True], "score": [0.5, 1.0, 1.5, 2.0]}
    paths = write_structures(structures, tmp_path, flags=flags)
    assert [p.name for p in paths] == ["NaCl.cif", "LiFeO3_odd_name.cif", "ZnO.cif", "NaCl-2.cif", "summary.csv"]
    with open(paths[-1], newline="") as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == [*SUMMARY_COLUMNS, "valid", "score"]
    assert [r["name"] for r in table] == [p.stem for p in paths[:-1]]
    for row, s in zip(table, structures, strict=True):
        analyzer = SpacegroupAnalyzer(s, symprec=0.1)
        assert row["formula"] == s.composition.reduced_formula
        assert row["spacegroup_symbol"] == analyzer.get_space_group_symbol()
        assert int(row["spacegroup_number"]) == analyzer.get_space_group_number()
        assert float(row["density"]) == pytest.approx(s.density, rel=1e-12)
        assert float(row["volume"]) == pytest.approx(s.volume, rel=1e-12)
        assert int(row["n_sites"]) == len(s) and int(row["n_elements"]) == len(s.composition.elements)
    assert table[0]["spacegroup_number"] == "225" and table[2]["spacegroup_number"] == "186"
    assert [r["valid"] for r in table] == ["True", "False", "True", "True"]
    with pytest.raises(ValueError, match="flag 'valid' has 2 values for 4 structures"):
        write_structures(structures, tmp_path / "other", flags={"valid": [True, False]})
    with pytest.raises(ValueError, match="unknown crystal file format"):
        write_structures(structures, tmp_path / "other", fmt="pdb")
    assert not (tmp_path / "other").exists()


def test_a_samples_folder_reads_back_in_the_written_order(tmp_path: Path) -> None:
    """sample_9999 before sample_10000, and an undecodable sample in its place."""
    from polydiff_crystals.modality import CrystalsModality, Undecodable

    def named(n: str) -> Structure:
        s = Structure(Lattice.cubic(3.0), ["Fe"], [[0, 0, 0]])
        s.properties = {"name": n}
        return s

    mod = CrystalsModality()
    names = ["sample_1000", "sample_1001", "sample_10000"]
    mod.write([named(n) for n in names], tmp_path / "a")
    assert [s.properties["name"] for s in mod.read(tmp_path / "a")] == names
    mod.write([named("sample_0000"), Undecodable("sample_0001", "lattice: bad"), named("sample_0002")], tmp_path / "b")
    got = mod.read(tmp_path / "b")
    assert [type(s).__name__ for s in got] == ["Structure", "Undecodable", "Structure"]
    assert [s.name if isinstance(s, Undecodable) else s.properties["name"] for s in got] == \
        ["sample_0000", "sample_0001", "sample_0002"]


def test_write_never_leaves_a_half_written_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_structures(examples(), tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def half_then_fail(self, filename, mode="wt"):
        Path(filename).write_text("data_half\n_cell_length_a 5.6")  # a partial file, then a crash
        raise RuntimeError("disk full")

    changed = examples()
    for s in changed:
        s.scale_lattice(s.volume * 1.1)
    monkeypatch.setattr(crystal_io.CifWriter, "write_file", half_then_fail)
    with pytest.raises(RuntimeError, match="disk full"):
        write_structures(changed, tmp_path)
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert after == before  # old files intact, no temporary file left, summary untouched


def test_cut_off_cifs_and_missing_cell_fields_give_their_reason(tmp_path: Path) -> None:
    wurtzite = examples()[2]
    text = str(CifWriter(wurtzite))
    lines = text.splitlines()
    last = len(lines)  # the last atom row
    assert "_chemical_formula_sum" in text and lines[-1].split()[0] == "O"
    (tmp_path / "mid_row.cif").write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:12])
    (tmp_path / "between_rows.cif").write_text("\n".join(lines[:-2]) + "\n")  # both O rows lost
    (tmp_path / "ratio.cif").write_text("\n".join(lines[:-1]) + "\n")  # one O row lost: Zn2 O1
    (tmp_path / "no_c.cif").write_text("\n".join(s for s in lines if not s.startswith("_cell_length_c")) + "\n")
    reasons = {
        "mid_row": rf"line {last}\) is incomplete \(the file is cut off\?\)",
        "between_rows": r"_chemical_formula_sum is 'Zn2 O2' \(missing O: rows lost",
        "ratio": r"give Zn2 O1 but _chemical_formula_sum is 'Zn2 O2' \(other ratios",
        "no_c": r"no _cell_length_c field",
    }
    for name, reason in reasons.items():
        with pytest.raises(CrystalFileError, match=rf"{name}\.cif: .*data block 0 \(line \d+\): .*{reason}"):
            read_structures(tmp_path / f"{name}.cif")
    # the whole file, without the formula, is read as it is
    (tmp_path / "no_formula.cif").write_text("\n".join(s for s in lines[:-2] if "_chemical_formula_sum" not in s))
    assert read_structures(tmp_path / "no_formula.cif")[0].composition.reduced_formula == "Zn"


def test_folder_skips_bad_poscar_extxyz_and_non_utf8_files(tmp_path: Path) -> None:
    nacl = examples()[0]
    (tmp_path / "a.cif").write_text(str(CifWriter(nacl)))
    poscar = write_structures([nacl], tmp_path / "p", fmt="poscar")[0].read_text().splitlines()
    poscar[3] = "   1.0 abc 2.0"
    (tmp_path / "POSCAR_bad").write_text("\n".join(poscar) + "\n")
    cell = "5.64 0.0 0.0 0.0 5.64 0.0 0.0 0.0 5.64"
    (tmp_path / "cut.extxyz").write_text(extxyz_frame(cell, -1.5) + extxyz_frame(cell, -1.0)[:40])
    (tmp_path / "bin.cif").write_bytes(b"\xff\xfe\x00garbage\x80\x81\n")
    with pytest.warns(UserWarning, match=r"skipped 3 of 4 crystal file\(s\) that could not be read: "
                                         r"bin\.cif:1: not UTF-8 text.*; cut\.extxyz: frame 1 \(line 5\): 2 atoms.*; "
                                         r"POSCAR_bad:4: expected 3 number\(s\) \(a lattice vector\), got '1\.0 abc "
                                         r"2\.0'"):
        got = read_structures(tmp_path)
    assert [s.properties["name"] for s in got] == ["a"]
    with pytest.raises(CrystalFileError, match=r"POSCAR_bad:4: expected 3 number"):
        read_structures(tmp_path / "POSCAR_bad")  # alone: an error


def test_csv_non_numeric_cell_of_a_property_column_is_an_error(tmp_path: Path) -> None:
    nacl, _, zno = examples()
    rows = [[f"m{i}", str(CifWriter(s)), e, s.composition.reduced_formula]
            for i, (s, e) in enumerate([(nacl, "-1.0"), (zno, "-2.0"), (nacl, "n/a"), (zno, "")])]
    file = write_csv(tmp_path / "t.csv", ["material_id", "cif", "formation_energy", "formula"], rows)
    with pytest.raises(CrystalFileError, match=r"t\.csv: row 2 \(line \d+\), column 'formation_energy': not a "
                                               r"number: 'n/a'"):
        read_structures(file)
    rows[2][2] = ""
    got = read_structures(write_csv(tmp_path / "t.csv", ["material_id", "cif", "formation_energy", "formula"], rows))
    assert [s.properties.get("formation_energy") for s in got] == [-1.0, -2.0, None, None]


def test_a_plot_beside_the_crystals_is_not_reported(tmp_path: Path) -> None:
    """`polydiff sample --plot` writes samples.png: reading the folder warned it was no crystal file."""
    nacl, _, _ = examples()
    (tmp_path / "a.cif").write_text(str(CifWriter(nacl)))
    (tmp_path / "samples.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(read_structures(tmp_path)) == 1
    (tmp_path / "notes.txt").write_text("not a crystal")
    with pytest.warns(UserWarning, match=r"skipped 1 file\(s\) that are not crystal files: notes\.txt"):
        read_structures(tmp_path)
