"""What the molecules fuzz tests expect of a (damaged) file: how many records it holds, and what
every molecule read from it must satisfy. Shared by ``test_mol_io.py`` and ``test_md_fuzz.py``."""

from __future__ import annotations

import re

import numpy as np

from polydiff_molecules import Molecule


def _lines(data: bytes, encoding: str = "utf-8") -> list[str] | None:
    """The lines of the bytes as Python's text mode splits them; None when they do not decode."""
    try:
        return re.split(r"\r\n|\r|\n", data.decode(encoding))
    except UnicodeDecodeError:
        return None


def sdf_records(name: str, data: bytes) -> int | None:
    """Records of an SDF file: the ``$$$$``-separated chunks with something in them."""
    lines = _lines(data)
    if lines is None:
        return None
    chunks, current = [], []
    for line in lines:
        current.append(line)
        if line.startswith("$$$$"):
            chunks.append(current)
            current = []
    chunks.append(current)
    return sum(1 for c in chunks if any(s.strip() for s in c if not s.startswith("$$$$")))


def smiles_records(name: str, data: bytes) -> int | None:
    """Records of a SMILES file: non-blank lines that are not comments, less a ``smiles`` header."""
    lines = _lines(data, "utf-8-sig")
    if lines is None:
        return None
    lines = [s.strip() for s in lines if s.strip() and not s.strip().startswith("#")]
    return len(lines) - bool(lines and lines[0].split()[0].lower() == "smiles")


def check_molecules(result: list[Molecule]) -> None:
    """A read that did not fail returned real molecules: atoms, finite coordinates, consistent arrays."""
    assert result, "an empty list returned without an error"
    for m in result:
        assert isinstance(m, Molecule) and len(m) >= 1, "an empty molecule"
        assert np.isfinite(m.positions).all(), f"non-finite coordinates in {m.name!r}"
        assert len(m.charges) == len(m) and (m.bonds is None or m.bonds.shape == (len(m), len(m)))
