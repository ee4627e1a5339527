"""Molecules to train on and to compare with: 3-D conformers from SMILES, a disk cache of them,
the embedded default set, QM9 (SMILES + properties, and DFT geometries) and SMILES for novelty.

No function here touches the network: the default set comes from files RDKit and ASE ship, QM9
from the shared data folder (:func:`polydiff.plugin.shared_dir`).

The conformer pipeline (:func:`embed_smiles`) is RDKit's: hydrogens added, ETKDGv3 embedding
with a fixed seed, then an MMFF94 optimisation. :func:`conformer_check` measures it against the
DFT geometries of QM9.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import sys
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from polydiff.plugin import atomic_write, csv_rows, read_text, shared_dir

from .molecule import PERIODIC, QM9_ELEMENTS, Molecule, from_rdkit
from .molio import MoleculeFileError, quiet_rdkit, read_xyz

__all__ = [
    "CACHE_ENV",
    "DEFAULT_SET_SIZE",
    "QM9_PROPERTIES",
    "conformer_check",
    "conformers",
    "default_molecules",
    "embed_smiles",
    "qm9_dft",
    "qm9_molecules",
    "smiles_of",
    "train_smiles",
]

CACHE_ENV = "POLYDIFF_CACHE"
"""Environment variable naming the cache folder (conformers go to its ``molecules/``)."""
PIPELINE = "etkdgv3+mmff94/2"  # part of the cache key: change it when embed_smiles changes
QM9_PROPERTIES = ("mu", "alpha", "homo", "lumo", "gap", "cv")
QM9_COLUMNS = ("mol_id", "smiles", "A", "B", "C", "mu", "alpha", "homo", "lumo", "gap", "r2", "zpve", "u0", "u298",
               "h298", "g298", "cv")
DEFAULT_SET_SIZE = 517
"""Molecules in :func:`default_molecules` with its default arguments (as measured with RDKit
2026.09 and ASE 3.29; a test checks it)."""
_PROGRESS_MIN = 200  # show a progress bar from this many SMILES on


# ---------------------------------------------------------------------------------------------
# conformers
# ---------------------------------------------------------------------------------------------

def embed_smiles(smiles: str, seed: int = 0, name: str = "", properties: dict[str, float] | None = None,
                 optimize: bool = True) -> Molecule | None:
    """A 3-D molecule from a SMILES: RDKit's sanitised molecule with explicit hydrogens,
    embedded with ETKDGv3 (``randomSeed=seed + 1``, as RDKit's seeds 0 and 1 give the same
    conformers; when that fails, a second try from random coordinates and, for SMILES with
    stereo centres, a last one without enforcing them, which some strained cages need; their
    stereo may then differ from the SMILES), then optimised with MMFF94 (``optimize``;
    molecules MMFF has no parameters for keep the ETKDG geometry). Bonds are kekulised, formal
    charges kept. Deterministic for a given seed and RDKit version. None when the SMILES is
    invalid or cannot be embedded (about 1% of QM9: strained polycyclic cages that ETKDG
    cannot embed)."""
    from rdkit import Chem
    from rdkit.Chem import AllChem

    with quiet_rdkit():
        mol = Chem.MolFromSmiles(smiles) if smiles else None
        if mol is None or mol.GetNumAtoms() == 0:
            return None
        mol = Chem.AddHs(mol)
        params = AllChem.ETKDGv3()
        params.randomSeed = int(seed) % (2**31 - 2) + 1  # RDKit's generator treats seeds 0 and 1 alike
        if AllChem.EmbedMolecule(mol, params) != 0:
            params.useRandomCoords = True
            if AllChem.EmbedMolecule(mol, params) != 0:
                stereo = any(a.GetChiralTag() != Chem.ChiralType.CHI_UNSPECIFIED for a in mol.GetAtoms())
                if not stereo:
                    return None
                params.enforceChirality = False  # strained cages ETKDG cannot embed with their stereo
                if AllChem.EmbedMolecule(mol, params) != 0:
                    return None
        if optimize and AllChem.MMFFHasAllMoleculeParams(mol):
            AllChem.MMFFOptimizeMolecule(mol, mmffVariant="MMFF94", maxIters=2000)
        try:
            return from_rdkit(mol, name=name, properties=properties)
        except ValueError:
            return None


def _cache_root(cache_dir: str | Path | None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    for env in (CACHE_ENV, "POLYDIFF_CACHE_DIR"):
        if os.environ.get(env):
            return Path(os.environ[env]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "polydiff"


def _cache_key(smiles: Sequence[str], seed: int) -> str:
    import rdkit

    blob = json.dumps({"smiles": list(smiles), "seed": int(seed), "rdkit": rdkit.__version__,
                       "pipeline": PIPELINE}, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def _save(file: Path, key: str, mols: list[Molecule | None]) -> None:
    ok = [m for m in mols if m is not None]
    atoms = np.array([-1 if m is None else len(m) for m in mols], dtype=np.int64)
    bonds = [np.argwhere(np.triu(m.bonds, 1)) if m.bonds is not None else np.zeros((0, 2), np.int64) for m in ok]
    arrays = {
        "key": np.array(key),
        "atoms": atoms,
        "numbers": np.concatenate([m.numbers for m in ok]) if ok else np.zeros(0, np.int64),
        "positions": np.concatenate([m.positions for m in ok]) if ok else np.zeros((0, 3)),
        "charges": np.concatenate([m.charges for m in ok]) if ok else np.zeros(0, np.int64),
        "n_bonds": np.array([len(b) for b in bonds], dtype=np.int64),
        "bonds": np.concatenate([np.column_stack([b, m.bonds[b[:, 0], b[:, 1]]]) for b, m in zip(bonds, ok)])
        if ok else np.zeros((0, 3), np.int64),
    }
    atomic_write(file, lambda tmp: np.savez(tmp, **arrays))


def _load(file: Path, key: str, n: int) -> list[Molecule | None]:
    """The cached molecules (None where embedding failed); ValueError when the file does not
    hold what the key promises."""
    with np.load(file, allow_pickle=False) as z:
        if str(z["key"]) != key:
            raise ValueError("its key does not match its name")
        atoms, numbers, positions, charges = z["atoms"], z["numbers"], z["positions"], z["charges"]
        n_bonds, bonds = z["n_bonds"], z["bonds"]
    ok = atoms >= 0
    if len(atoms) != n or int(atoms[ok].sum()) != len(numbers) or len(positions) != len(numbers) \
            or len(charges) != len(numbers) or len(n_bonds) != int(ok.sum()) or int(n_bonds.sum()) != len(bonds):
        raise ValueError(f"counts do not match ({len(atoms)} molecules stored, {n} expected)")
    if len(numbers) and (numbers.min() < 1 or numbers.max() >= len(PERIODIC)):
        raise ValueError("atomic numbers out of range")
    out: list[Molecule | None] = []
    a = b = j = 0
    for count in atoms.tolist():
        if count < 0:
            out.append(None)
            continue
        edges = bonds[b:b + n_bonds[j]]
        if len(edges) and (edges[:, :2].max() >= count or edges[:, :2].min() < 0):
            raise ValueError("bond indices out of range")
        matrix = np.zeros((count, count), dtype=np.int64)
        matrix[edges[:, 0], edges[:, 1]] = matrix[edges[:, 1], edges[:, 0]] = edges[:, 2]
        out.append(Molecule(tuple(PERIODIC[z] for z in numbers[a:a + count].tolist()), positions[a:a + count],
                            charges[a:a + count], matrix))
        a, b, j = a + count, b + int(n_bonds[j]), j + 1
    return out


def _progress(items: Sequence[str], show: bool) -> Iterable[str]:
    if not show or len(items) < _PROGRESS_MIN:
        return items
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return items
    return tqdm(items, desc="conformers", unit="mol", leave=False)


def conformers(smiles_list: Sequence[str], seed: int = 0, cache_dir: str | Path | None = None,
               names: Sequence[str] | None = None, properties: Sequence[dict[str, float]] | None = None,
               progress: bool = True) -> tuple[list[Molecule], list[int]]:
    """3-D molecules of many SMILES by :func:`embed_smiles`, through a disk cache.

    Returns the molecules that embedded (in input order, named ``names[i]`` and carrying
    ``properties[i]`` when given) and the indices of the SMILES that failed. The geometries are
    cached in ``<cache>/molecules/conformers-<key>.npz`` where ``<cache>`` is ``cache_dir``, else
    ``$POLYDIFF_CACHE``, else ``$POLYDIFF_CACHE_DIR``, else ``$XDG_CACHE_HOME/polydiff`` or
    ``~/.cache/polydiff``, and the key is the SHA-256 of the SMILES list, the seed, the RDKit
    version and the pipeline version (names and properties are not part of it). The file is
    written atomically; one that cannot be read or does not match its key and counts is
    reported in a warning and rebuilt; a cache folder that cannot be written only costs the
    time. A tqdm progress bar is shown for long lists when tqdm is installed and ``progress``."""
    smiles_list = [str(s) for s in smiles_list]
    n = len(smiles_list)
    if names is not None and len(names) != n:
        raise ValueError(f"{len(names)} names for {n} SMILES")
    if properties is not None and len(properties) != n:
        raise ValueError(f"{len(properties)} property dicts for {n} SMILES")
    key = _cache_key(smiles_list, seed)
    file = _cache_root(cache_dir) / "molecules" / f"conformers-{key[:40]}.npz"
    mols: list[Molecule | None] | None = None
    if file.is_file():
        try:
            mols = _load(file, key, n)
        except Exception as err:  # zipfile.BadZipFile, EOFError, KeyError, ValueError, OSError ...
            warnings.warn(f"conformer cache {file} is corrupt ({type(err).__name__}: {err}); rebuilding it",
                          stacklevel=2)
    if mols is None:
        mols = [embed_smiles(s, seed=seed) for s in _progress(smiles_list, progress)]
        try:
            _save(file, key, mols)
        except OSError as err:
            warnings.warn(f"cannot write the conformer cache {file} ({err}); conformers will be recomputed next time",
                          stacklevel=2)
    out, failed = [], []
    for k, mol in enumerate(mols):
        if mol is None:
            failed.append(k)
            continue
        mol.name = str(names[k]) if names is not None else ""
        mol.properties = dict(properties[k]) if properties is not None else {}
        out.append(mol)
    return out, failed


# ---------------------------------------------------------------------------------------------
# the default set
# ---------------------------------------------------------------------------------------------

def _nci_candidates(max_heavy: int, elements: Sequence[str]) -> list[tuple[str, str]]:
    """(canonical SMILES, name) of RDKit's bundled NCI first-5K SMILES that pass the filters,
    in file order, duplicates removed."""
    from rdkit import Chem, RDConfig

    path = Path(RDConfig.RDDataDir) / "NCI" / "first_5K.smi"
    allowed = set(elements)
    out, seen = [], set()
    with quiet_rdkit():
        for lineno, line in enumerate(read_text(path).splitlines(), 1):
            parts = line.split()
            if not parts:
                continue
            mol = Chem.MolFromSmiles(parts[0])
            if mol is None or mol.GetNumAtoms() > max_heavy or len(Chem.GetMolFrags(mol)) != 1:
                continue
            if any(a.GetSymbol() not in allowed for a in mol.GetAtoms()):
                continue
            if "H" not in allowed and any(a.GetTotalNumHs() for a in mol.GetAtoms()):
                continue
            smiles = Chem.MolToSmiles(mol)
            if smiles in seen:
                continue
            seen.add(smiles)
            out.append((smiles, f"NCI_{parts[1] if len(parts) > 1 else f'line{lineno}'}"))
    return out


def _with_bonds(mol: Molecule, charge: int = 0) -> Molecule:
    """``mol`` with bonds and formal charges from RDKit's ``DetermineBonds`` (unchanged, bonds
    None, when it cannot assign them, e.g. for radicals)."""
    from rdkit import Chem
    from rdkit.Chem import rdDetermineBonds

    rd = mol.to_rdkit()
    try:
        with quiet_rdkit():
            rdDetermineBonds.DetermineBonds(rd, charge=charge)
            Chem.SanitizeMol(rd)
        found = from_rdkit(rd, name=mol.name, properties=mol.properties)
    except Exception:
        return mol
    found.positions = mol.positions.copy()
    return found


def _g2_molecules(max_heavy: int, elements: Sequence[str]) -> list[Molecule]:
    from ase.collections import g2

    out = []
    for name in g2.names:
        atoms = g2[name]
        symbols = atoms.get_chemical_symbols()
        if len(symbols) < 2 or not set(symbols) <= set(elements) or sum(s != "H" for s in symbols) > max_heavy:
            continue
        out.append(_with_bonds(Molecule(tuple(symbols), atoms.positions, name=f"g2_{name}")))
    return out


def default_molecules(n: int | None = None, max_heavy: int = 9, elements: Sequence[str] = QM9_ELEMENTS,
                      seed: int = 0, cache_dir: str | Path | None = None) -> list[Molecule]:
    """The embedded default molecule set (no download): 517 molecules with the defaults.

    First RDKit's bundled NCI SMILES (``RDConfig.RDDataDir/NCI/first_5K.smi``) made only of
    ``elements`` (implicit hydrogens need ``"H"``), with at most ``max_heavy`` heavy atoms, in one
    fragment (charged ones included), duplicates removed, in file order, embedded by
    :func:`conformers` (ETKDG + MMFF with ``seed``, cached; the few that fail are dropped) and
    named ``NCI_<id>``; then the molecules (2 atoms or more) of ASE's g2 collection made only of
    ``elements`` with their given geometries, named ``g2_<name>``, with bonds and charges from
    RDKit's ``DetermineBonds`` where it can assign them (radicals keep ``bonds=None``). With the
    defaults that is 424 NCI + 93 g2 molecules (:data:`DEFAULT_SET_SIZE`). ``n``: the first
    ``n`` of that order (only those are embedded)."""
    if n is not None and n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    candidates = _nci_candidates(max_heavy, elements)
    names = [c[1] for c in candidates]
    smiles = [c[0] for c in candidates]
    mols: list[Molecule] = []
    start = 0
    want = len(candidates) if n is None else n
    while len(mols) < want and start < len(candidates):
        stop = len(candidates) if n is None else min(len(candidates), start + want - len(mols))
        got, _ = conformers(smiles[start:stop], seed=seed, cache_dir=cache_dir, names=names[start:stop])
        mols.extend(got)
        start = stop
    if n is None or len(mols) < n:
        mols.extend(_g2_molecules(max_heavy, elements))
    return mols if n is None else mols[:n]


# ---------------------------------------------------------------------------------------------
# QM9
# ---------------------------------------------------------------------------------------------

def qm9_molecules(path: str | Path | None = None, n: int | None = None, seed: int = 0,
                  properties: Sequence[str] = QM9_PROPERTIES, cache_dir: str | Path | None = None,
                  half: str = "all") -> list[Molecule]:
    """QM9 molecules from the shared SMILES + properties CSV, embedded in 3-D.

    ``path`` defaults to ``shared_dir()/data/qm9/qm9_sample20k.csv`` (columns ``mol_id``,
    ``smiles`` and the QM9 labels ``A ... cv``). All rows are checked first: a row with a wrong
    number of cells, an empty SMILES or a requested property that is not a finite number is a
    :class:`MoleculeFileError` naming the file and the line. With ``n``, the first ``n`` rows
    after a shuffle seeded by ``seed``, else all rows in file order. Each is embedded by
    :func:`conformers` (ETKDG + MMFF, ``seed``, cached), named by ``mol_id`` and carries the
    requested ``properties``; those that fail to embed are dropped and counted in a warning.

    ``half`` (``"generator"`` / ``"regressor"``) keeps one half of the seeded shuffle of all rows
    (EDM's protocol: generative models and the property regressor that scores them never share
    molecules) before ``n`` is applied."""
    if half not in ("all", "generator", "regressor"):
        raise ValueError(f"half must be 'all', 'generator' or 'regressor', got {half!r}")
    ids, smiles, props = qm9_table(path, properties)
    order = np.arange(len(ids))
    if half != "all":
        order = np.random.default_rng(seed).permutation(len(ids))
        order = order[: len(ids) // 2] if half == "generator" else order[len(ids) // 2:]
    elif n is not None:
        order = np.random.default_rng(seed).permutation(len(ids))
    if n is not None:
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        order = order[:n]
    pick = order.tolist()
    mols, failed = conformers([smiles[k] for k in pick], seed=seed, cache_dir=cache_dir,
                              names=[ids[k] for k in pick], properties=[props[k] for k in pick])
    if failed:
        shown = ", ".join(ids[pick[k]] for k in failed[:10]) + (" ..." if len(failed) > 10 else "")
        warnings.warn(f"{qm9_path(path)}: {len(failed)} of {len(pick)} QM9 molecules could not be embedded in 3-D "
                      f"and were skipped ({shown})", stacklevel=2)
    return mols


def qm9_path(path: str | Path | None = None) -> Path:
    """The QM9 CSV: ``path`` or ``shared_dir()/data/qm9/qm9_sample20k.csv``."""
    return Path(path) if path is not None else shared_dir() / "data" / "qm9" / "qm9_sample20k.csv"


def qm9_table(path: str | Path | None = None, properties: Sequence[str] = QM9_PROPERTIES
              ) -> tuple[list[str], list[str], list[dict[str, float]]]:
    """``(mol_ids, smiles, properties)`` of every row of the QM9 CSV, checked (see
    :func:`qm9_molecules`)."""
    path = Path(path) if path is not None else shared_dir() / "data" / "qm9" / "qm9_sample20k.csv"
    if not path.is_file():
        raise MoleculeFileError(f"{path}: QM9 CSV not found (set POLYDIFF_SHARED to the shared data folder)")
    rows = csv_rows(path, read_text(path, error=MoleculeFileError), error=MoleculeFileError)
    if not rows:
        raise MoleculeFileError(f"{path}: empty file")
    header_line, header = rows[0]
    header = [h.strip() for h in header]
    missing = [c for c in ("mol_id", "smiles", *properties) if c not in header]
    if missing:
        raise MoleculeFileError(f"{path}:{header_line}: missing column(s) {', '.join(missing)} (the header has "
                                f"{', '.join(header)})")
    at = {c: header.index(c) for c in ("mol_id", "smiles", *properties)}
    ids, smiles, props = [], [], []
    for line, cells in rows[1:]:
        if len(cells) != len(header):
            raise MoleculeFileError(f"{path}:{line}: {len(cells)} cells, the header has {len(header)}")
        if not cells[at["smiles"]].strip():
            raise MoleculeFileError(f"{path}:{line}: empty SMILES")
        values = {}
        for p in properties:
            cell = cells[at[p]].strip()
            try:
                values[p] = float(cell)
            except ValueError:
                values[p] = math.nan
            if not math.isfinite(values[p]):
                raise MoleculeFileError(f"{path}:{line}: property {p} = {cell!r} is not a finite number")
        ids.append(cells[at["mol_id"]].strip())
        smiles.append(cells[at["smiles"]].strip())
        props.append(values)
    if not ids:
        raise MoleculeFileError(f"{path}: no molecules (only a header)")
    return ids, smiles, props


def qm9_dft(path: str | Path | None = None) -> list[Molecule]:
    """The QM9 DFT geometries of ``shared_dir()/data/qm9/qm9_3d_sample128.extxyz`` (128
    molecules with their properties; named ``qm9_<struct_id>`` when the file gives no name;
    bonds None)."""
    path = Path(path) if path is not None else shared_dir() / "data" / "qm9" / "qm9_3d_sample128.extxyz"
    mols = read_xyz(path)
    for k, m in enumerate(mols):
        if not m.name:
            sid = m.properties.get("struct_id")
            m.name = f"qm9_{int(sid)}" if sid is not None and math.isfinite(sid) else f"qm9_frame{k}"
    return mols


@contextlib.contextmanager
def _silent_output() -> Iterator[None]:
    """Send the process's stdout and stderr (file descriptors 1 and 2) to /dev/null: YAeHMOP,
    behind RDKit's Hueckel connectivity, prints warnings from C."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, null):
            os.close(fd)


def _bonded(mol: Molecule) -> Any:
    """A sanitised RDKit molecule of ``mol``'s geometry with bonds from DetermineBonds (charge
    0; distance-based connectivity, else extended-Hueckel) and stereo from 3-D; raises when that
    fails."""
    from rdkit import Chem
    from rdkit.Chem import rdDetermineBonds

    last: Exception | None = None
    for hueckel in (False, True):  # extended-Hueckel connectivity copes with strained cages
        rd = mol.to_rdkit(bonds=np.zeros((len(mol), len(mol)), dtype=np.int64))
        try:
            with _silent_output() if hueckel else contextlib.nullcontext():
                rdDetermineBonds.DetermineBonds(rd, charge=0, useHueckel=hueckel)
            Chem.SanitizeMol(rd)
        except Exception as err:
            last = err
            continue
        Chem.AssignStereochemistryFrom3D(rd)
        return rd
    raise ValueError(f"cannot determine the bonds of {mol.name!r}: {last}")


def conformer_check(dft: Sequence[Molecule], seed: int = 0) -> dict[str, float]:
    """How close the conformer pipeline comes to DFT geometries.

    For each molecule: its graph from the DFT geometry (RDKit ``DetermineBonds``, total charge
    0; distance-based connectivity, else extended-Hueckel; stereo from 3-D), its SMILES
    embedded by :func:`embed_smiles` (``seed``), then the heavy-atom RMSD after optimal
    alignment over symmetry-equivalent atom maps (``rdMolAlign.GetBestRMS``) and the absolute
    differences of all bond lengths (hydrogens included) under a graph match. Molecules whose
    graph cannot be rebuilt, embedded or matched are counted in ``n_failed``. Returns ``n_ok``,
    ``n_failed``, ``median_rmsd``, ``mean_rmsd``, ``max_rmsd`` (Angstrom) and ``bond_mae``
    (mean absolute bond-length difference over all matched bonds, Angstrom); NaN where no
    molecule succeeded. On the 128 QM9 DFT geometries of the shared data (seed 0): 127 ok,
    median 0.35 A, mean 0.43 A, bond MAE 0.010 A."""
    from rdkit import Chem
    from rdkit.Chem import rdMolAlign

    rmsds, bond_errors, failed = [], [], 0
    for mol in dft:
        try:
            with quiet_rdkit():
                ref = _bonded(mol)
                smiles = Chem.MolToSmiles(ref)
                emb = embed_smiles(smiles, seed=seed)
                if emb is None:
                    raise ValueError("embedding failed")
                prb = emb.to_rdkit(sanitize=True)
                match = prb.GetSubstructMatch(ref)
                if len(match) != ref.GetNumAtoms() or prb.GetNumAtoms() != ref.GetNumAtoms():
                    raise ValueError("no graph match")
                heavy_ref, heavy_prb = Chem.RemoveHs(ref), Chem.RemoveHs(prb)
                rmsd = 0.0 if heavy_ref.GetNumAtoms() < 2 else rdMolAlign.GetBestRMS(heavy_prb, heavy_ref)
        except Exception:
            failed += 1
            continue
        rmsds.append(float(rmsd))
        pr, pp = ref.GetConformer().GetPositions(), prb.GetConformer().GetPositions()
        for b in ref.GetBonds():
            i, j = b.GetBeginAtomIdx(), b.GetEndAtomIdx()
            bond_errors.append(abs(np.linalg.norm(pr[i] - pr[j]) - np.linalg.norm(pp[match[i]] - pp[match[j]])))
    nan = math.nan
    return {
        "n_ok": float(len(rmsds)),
        "n_failed": float(failed),
        "median_rmsd": float(np.median(rmsds)) if rmsds else nan,
        "mean_rmsd": float(np.mean(rmsds)) if rmsds else nan,
        "max_rmsd": float(np.max(rmsds)) if rmsds else nan,
        "bond_mae": float(np.mean(bond_errors)) if bond_errors else nan,
    }


# ---------------------------------------------------------------------------------------------
# SMILES for novelty
# ---------------------------------------------------------------------------------------------

def smiles_of(mol: Molecule) -> str | None:
    """The canonical SMILES of a molecule (RDKit, sanitised, hydrogens implicit, no stereo), or
    None when it does not sanitise. Uses ``mol.bonds``; when those are None, bonds and charges
    are inferred from the geometry by RDKit's ``DetermineBonds`` (total charge = the sum of the
    formal charges). Several fragments give a dotted SMILES."""
    from rdkit import Chem
    from rdkit.Chem import rdDetermineBonds

    try:
        with quiet_rdkit():
            if mol.bonds is None:
                rd = mol.to_rdkit(bonds=np.zeros((len(mol), len(mol)), dtype=np.int64))
                rdDetermineBonds.DetermineBonds(rd, charge=int(mol.charges.sum()))
            else:
                rd = mol.to_rdkit()
            Chem.SanitizeMol(rd)
            return Chem.MolToSmiles(Chem.RemoveHs(rd), isomericSmiles=False)
    except Exception:
        return None


def train_smiles(mols: Iterable[Molecule]) -> list[str]:
    """The distinct canonical SMILES (:func:`smiles_of`) of training molecules, in first-seen
    order, without those that do not sanitise: the reference list for novelty."""
    out, seen = [], set()
    for mol in mols:
        s = smiles_of(mol)
        if s is not None and s not in seen:
            seen.add(s)
            out.append(s)
    return out
