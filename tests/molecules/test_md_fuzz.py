"""Fuzzing the molecules plugin's readers of folders and of the ``md`` modality's files: the
``samples.npz`` (and multi-frame extended XYZ) that ``polydiff sample`` writes for the ``md``
modality, and a folder of SDF / XYZ / SMILES files read by the molecules modality
(``polydiff evaluate DIR``). A damaged file ends in a typed error naming it, or in a result with
the right number of records (fewer only with a warning naming the file). (``read_xyz``,
``read_sdf`` and ``read_smiles`` themselves are fuzzed in ``test_mol_io.py``.)"""

from __future__ import annotations

import io

import numpy as np
import pytest

pytest.importorskip("rdkit")

from molecule_records import check_molecules, sdf_records, smiles_records

from polydiff.fuzz import fuzz_arrays, fuzz_reader
from polydiff_molecules import MDModality, Molecule, MoleculesModality, from_rdkit
from polydiff_molecules.molio import MoleculeFileError, write_sdf, write_xyz

pytestmark = pytest.mark.usefixtures("one_thread")

NPY_TOKENS = (b"PK\x03\x04", b"PK\x01\x02", b"PK\x05\x06", b"\x93NUMPY", b"x.npy", b"coordinates", b"<f8", b"<U3",
              b"'shape': (", b"(999999999999, 5, 3)", b"(0, 2)", b"fortran_order': True")


# -- md: samples.npz and the extended XYZ ---------------------------------------------------------

def _frames(kind: str) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return list(rng.normal(size=(6, 5, 3)) if kind == "peptide" else rng.normal(size=(6, 2)))


def _npz_frames(name: str, data: bytes) -> int | None:
    """Frames of a ``samples.npz``: the length of its ``x`` (or ``coordinates``) where numpy loads it."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            key = "x" if "x" in z.files else "coordinates"
            return len(z[key])
    except Exception:  # unreadable: the reader must refuse it
        return None


def _check_frames(frames: list[np.ndarray]) -> None:
    """Frames ``evaluate`` can stack: one shape, (2,) or (beads, 3), finite."""
    shapes = {np.shape(f) for f in frames}
    assert len(shapes) <= 1, f"frames of several shapes: {sorted(shapes)}"
    for f in frames:
        assert f.shape in ((2,), (3,)) or (f.ndim == 2 and f.shape[-1] in (2, 3)), f"a frame of shape {f.shape}"
        assert np.isfinite(f).all(), "non-finite coordinates"


@pytest.mark.parametrize("kind", ["peptide", "2d", "compressed"])
def test_fuzz_md_read_folder(tmp_path, kind):
    """``polydiff evaluate DIR --modality md``: the folder's ``samples.npz`` as ``polydiff sample``
    writes it (peptide or 2-D), or compressed (``numpy.savez_compressed``, as users may save theirs)."""
    src = tmp_path / "src"
    if kind == "compressed":
        src.mkdir()
        np.savez_compressed(src / "samples.npz", x=np.stack(_frames("peptide")))
    else:
        MDModality().write(_frames(kind), src)
    valid = {"samples.npz": (src / "samples.npz").read_bytes()}
    print(fuzz_reader(MDModality().read, valid, tmp_path / "fuzz", examples=150, folder=True,
                      expected=(ValueError, OSError), records=_npz_frames, check=_check_frames, tokens=NPY_TOKENS,
                      name=f"MDModality.read({kind} samples.npz)"))


@pytest.mark.parametrize("kind", ["peptide", "2d"])
def test_fuzz_md_coordinate_arrays(tmp_path, kind):
    """Well-formed ``samples.npz`` files of damaged arrays (the bytes fuzz above rarely gets past
    the archive's CRCs): a typed error naming the file, or one finite frame per row of ``x``."""
    print(fuzz_arrays(MDModality().read, {"x": np.stack(_frames(kind))}, tmp_path, file="samples.npz", folder=True,
                      examples=150, expected=(ValueError, OSError), records=_npz_frames, check=_check_frames,
                      keys=("x", "coordinates", "energies", "X", "pos"),
                      name=f"MDModality.read({kind} samples.npz arrays)"))


def test_fuzz_md_read_extxyz(tmp_path):
    """The peptide's multi-frame extended XYZ (5 beads a frame): a clear error naming it, or
    frames of one shape."""
    src = tmp_path / "src"
    MDModality().write(_frames("peptide"), src)
    valid = {"samples.extxyz": (src / "samples.extxyz").read_bytes()}
    print(fuzz_reader(MDModality().read, valid, tmp_path / "fuzz", examples=150, expected=(ValueError, OSError),
                      check=_check_frames, tokens=(b"Properties=", b"species:S:1:pos:R:3", b"name=", b"5\n", b"4\n",
                                                   b"C ", b"Xx", b"999999"),
                      name="MDModality.read(samples.extxyz)"))


def test_md_xyz_frames_of_different_sizes_are_an_error(tmp_path):
    """Frames of one XYZ file are samples of one system: a frame of other size names the frame
    (``evaluate`` would otherwise fail stacking them, naming nothing)."""
    path = tmp_path / "mixed.extxyz"
    path.write_text("5\nname=a\n" + "C 0 0 0\n" * 5 + "4\nname=b\n" + "C 0 0 0\n" * 4)
    with pytest.raises(ValueError, match=r"mixed\.extxyz: frame 2 has 4 beads, frame 1 has 5"):
        MDModality().read(path)


# -- molecules: a folder of SDF / XYZ / SMILES files ----------------------------------------------

def _embedded(smiles: str, name: str) -> Molecule:
    from rdkit import Chem
    from rdkit.Chem import AllChem

    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    assert AllChem.EmbedMolecule(mol, randomSeed=3) == 0
    return from_rdkit(mol, name=name)


@pytest.fixture(scope="module")
def molecule_files(tmp_path_factory) -> dict[str, bytes]:
    """Two SDF files of one molecule each (as ``polydiff sample`` writes them), an XYZ file of
    two frames and a SMILES file of two molecules."""
    out = tmp_path_factory.mktemp("molecule-files")
    ethanol, phenol, nitrile = _embedded("CCO", "ethanol"), _embedded("c1ccccc1O", "phenol"), _embedded("CC#N", "acn")
    write_sdf([ethanol], out / "sample_0000.sdf")
    write_sdf([phenol], out / "sample_0001.sdf")
    write_xyz([nitrile, ethanol], out / "frames.xyz")
    (out / "more.smi").write_text("smiles name\nCCO ethanol\nC#N hcn\n")
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


@pytest.mark.parametrize("target", ["sample_0000.sdf", "frames.xyz", "more.smi"])
def test_fuzz_molecules_read_folder(tmp_path, molecule_files, target):
    """``polydiff evaluate DIR --modality molecules`` on a folder of SDF, XYZ and SMILES files, one
    of them damaged: a clear error naming it, or every molecule of the folder read (fewer only
    with a warning naming the damaged file)."""
    others = {"sample_0000.sdf": 1, "sample_0001.sdf": 1, "frames.xyz": 2, "more.smi": 2}
    rest = sum(n for name, n in others.items() if name != target)

    def records(name: str, data: bytes) -> int | None:
        count = {".sdf": sdf_records, ".smi": smiles_records}.get(name[-4:])
        mine = None if count is None else count(name, data)
        return None if mine is None else rest + mine

    print(fuzz_reader(MoleculesModality().read, molecule_files, tmp_path / "fuzz", examples=100, folder=True,
                      mutate=[target], expected=(MoleculeFileError, ValueError, OSError), records=records,
                      check=check_molecules, timeout=10.0,
                      tokens=(b"V2000", b"M  END", b"$$$$", b"Properties=", b"[", b"(", b"=", b"999"),
                      name=f"MoleculesModality.read(folder, {target} damaged)"))
