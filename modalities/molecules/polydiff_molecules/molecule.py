"""The molecule object every part of the plugin shares: element symbols, 3-D positions in
Angstrom, formal charges, optional bond orders, properties and a name.

Generated molecules are often not valid chemistry, so the native object is this plain record
rather than an RDKit ``Mol`` (which refuses over-valent atoms); :meth:`Molecule.to_rdkit` and
:func:`from_rdkit` convert where RDKit is wanted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Periodic table up to Bi (symbols only; index = atomic number).
PERIODIC = ("X H He Li Be B C N O F Ne Na Mg Al Si P S Cl Ar K Ca Sc Ti V Cr Mn Fe Co Ni Cu Zn Ga Ge As Se Br Kr "
            "Rb Sr Y Zr Nb Mo Tc Ru Rh Pd Ag Cd In Sn Sb Te I Xe Cs Ba La Ce Pr Nd Pm Sm Eu Gd Tb Dy Ho Er Tm Yb "
            "Lu Hf Ta W Re Os Ir Pt Au Hg Tl Pb Bi").split()
ATOMIC_NUMBER = {s: z for z, s in enumerate(PERIODIC) if z}

QM9_ELEMENTS = ("H", "C", "N", "O", "F")
CHARGES = (-1, 0, 1)        # formal charge classes of the categorical ``charges`` field
BOND_ORDERS = (0, 1, 2, 3)  # none, single, double, triple (Kekule form: no aromatic class)


@dataclass(repr=False)
class Molecule:
    """One molecule. ``positions`` (N, 3) float64 in Angstrom; ``charges`` (N,) int formal
    charges (zeros when unknown); ``bonds`` (N, N) symmetric int bond orders or None (then
    bonds are inferred from distances where needed); ``properties`` scalar labels (QM9's mu,
    alpha, homo, lumo, gap, cv ...). Shown as its name, formula and atom count
    (``Molecule('sample_0000', C2H6O, 9 atoms)``); the arrays are its fields."""

    symbols: tuple[str, ...]
    positions: np.ndarray
    charges: np.ndarray | None = None
    bonds: np.ndarray | None = None
    properties: dict[str, float] = field(default_factory=dict)
    name: str = ""

    def __post_init__(self) -> None:
        self.symbols = tuple(str(s) for s in self.symbols)
        self.positions = np.asarray(self.positions, dtype=np.float64).reshape(-1, 3)
        n = len(self.symbols)
        if len(self.positions) != n:
            raise ValueError(f"molecule {self.name!r}: {n} symbols but {len(self.positions)} positions")
        bad = [s for s in self.symbols if s not in ATOMIC_NUMBER]
        if bad:
            raise ValueError(f"molecule {self.name!r}: unknown element symbol {bad[0]!r}")
        self.charges = np.zeros(n, dtype=np.int64) if self.charges is None else \
            np.asarray(self.charges, dtype=np.int64).reshape(n)
        if self.bonds is not None:
            raw = np.asarray(self.bonds)
            b = raw.astype(np.int64) if raw.dtype.kind in "biuf" else None
            if b is None or b.shape != (n, n) or not np.array_equal(b, b.T) or np.any(np.diag(b)):
                raise ValueError(f"molecule {self.name!r}: bonds must be a symmetric (N, N) matrix with a zero "
                                 f"diagonal, got shape {raw.shape}")
            odd = raw[~np.isin(raw, BOND_ORDERS)]
            if odd.size:  # the int cast would turn an aromatic 1.5 into 1; 4 or -1 would be bond kinds of their own
                raise ValueError(f"molecule {self.name!r}: bond order {odd.ravel()[0].item()!r}; orders are 0 (none), "
                                 "1, 2 or 3 (Kekule form: kekulise aromatic bonds, e.g. with RDKit's Chem.Kekulize)")
            self.bonds = b

    def __len__(self) -> int:
        return len(self.symbols)

    def __repr__(self) -> str:
        formula = f"{self.formula}, " if self.symbols else ""
        return f"Molecule({self.name!r}, {formula}{len(self)} atom{'' if len(self) == 1 else 's'})"

    @property
    def numbers(self) -> np.ndarray:
        """Atomic numbers (N,)."""
        return np.array([ATOMIC_NUMBER[s] for s in self.symbols], dtype=np.int64)

    @property
    def formula(self) -> str:
        """Hill formula (C, H first, then alphabetical)."""
        counts: dict[str, int] = {}
        for s in self.symbols:
            counts[s] = counts.get(s, 0) + 1
        order = [s for s in ("C", "H") if s in counts and "C" in counts] + \
            sorted(s for s in counts if not ("C" in counts and s in ("C", "H")))
        return "".join(f"{s}{counts[s] if counts[s] > 1 else ''}" for s in order)

    def to_rdkit(self, bonds: np.ndarray | None = None, sanitize: bool = False) -> Any:
        """An RDKit ``Mol`` with one conformer, formal charges and the given bond orders (else
        ``self.bonds``; else no bonds). Unsanitised unless asked, so invalid chemistry survives."""
        from rdkit import Chem
        from rdkit.Geometry import Point3D

        bonds = self.bonds if bonds is None else bonds
        rw = Chem.RWMol()
        for s, q in zip(self.symbols, self.charges):
            a = Chem.Atom(s)
            a.SetFormalCharge(int(q))
            rw.AddAtom(a)
        kinds = {1: Chem.BondType.SINGLE, 2: Chem.BondType.DOUBLE, 3: Chem.BondType.TRIPLE}
        if bonds is not None:
            ii, jj = np.nonzero(np.triu(bonds, 1))
            for i, j in zip(ii.tolist(), jj.tolist()):
                rw.AddBond(i, j, kinds[int(bonds[i, j])])
        conf = Chem.Conformer(len(self))
        for i, p in enumerate(self.positions):
            conf.SetAtomPosition(i, Point3D(*map(float, p)))
        mol = rw.GetMol()
        mol.AddConformer(conf, assignId=True)
        if self.name:
            mol.SetProp("_Name", self.name)
        if sanitize:
            Chem.SanitizeMol(mol)
        return mol


def from_rdkit(mol: Any, conf_id: int = -1, name: str | None = None,
               properties: dict[str, float] | None = None) -> Molecule:
    """A :class:`Molecule` from an RDKit ``Mol`` with a conformer (all atoms, explicit H as
    present in ``mol``; aromatic bonds kekulised to 1 / 2)."""
    from rdkit import Chem

    m = Chem.Mol(mol)
    Chem.Kekulize(m, clearAromaticFlags=True)
    n = m.GetNumAtoms()
    bonds = np.zeros((n, n), dtype=np.int64)
    for b in m.GetBonds():
        o = round(b.GetBondTypeAsDouble())
        if o not in (1, 2, 3):
            raise ValueError(f"molecule {name or m.GetProp('_Name') if m.HasProp('_Name') else ''!r}: bond "
                             f"{b.GetBeginAtomIdx()}-{b.GetEndAtomIdx()} has unsupported type {b.GetBondType()}")
        bonds[b.GetBeginAtomIdx(), b.GetEndAtomIdx()] = bonds[b.GetEndAtomIdx(), b.GetBeginAtomIdx()] = o
    pos = m.GetConformer(conf_id).GetPositions()
    if name is None:
        name = m.GetProp("_Name") if m.HasProp("_Name") else ""
    return Molecule(tuple(a.GetSymbol() for a in m.GetAtoms()), pos,
                    np.array([a.GetFormalCharge() for a in m.GetAtoms()]), bonds, dict(properties or {}), name)
