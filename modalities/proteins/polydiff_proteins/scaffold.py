"""Motif scaffolding: fixed motif residues (frames observed on both fields), the rest generated.

A problem is written as an RFdiffusion-style contig, segments separated by ``/``: ``10-20``
is a scaffold segment of 10 to 20 generated residues (one number: a fixed length), ``A5-20``
the motif residues 5 to 20 of chain A of the motif file, in that place of the chain. For
example ``5-15/A10-25/5-15`` puts residues A10-A25 between two scaffolds of 5-15 residues;
``A1-7/8/A16-22`` keeps two motif pieces 8 generated residues apart. Every sample draws its
own scaffold lengths (``total`` bounds the length, as RFdiffusion's ``contigmap.length``).

The motif's frames (from its N, CA, C atoms) are observed at their positions in every sample
(core replacement inpainting on ``trans`` and ``rots``); after sampling, the motif RMSD
(N, CA, C after superposition: the atoms the frames carry; a motif's O also depends on the
generated residue after it) measures how well it was kept.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from polydiff.plugin import Observation

from .geometry import Backbone, frames_from_backbone
from .metrics import kabsch_rmsd
from .pdbio import ReadReport

_SCAFFOLD = re.compile(r"^(\d+)(?:-(\d+))?$")
_MOTIF = re.compile(r"^([A-Za-z])(-?\d+)-(-?\d+)$")


@dataclass(frozen=True)
class Segment:
    """One contig segment: generated (``chain`` None, ``lo``-``hi`` residues) or motif
    (``chain`` and residue numbers ``lo``..``hi`` of the motif file)."""

    chain: str | None
    lo: int
    hi: int


def parse_contig(contig: str) -> list[Segment]:
    """Segments of a contig string (see the module docstring); a bad one is an error naming it."""
    out = []
    for part in [p.strip() for p in contig.split("/") if p.strip()]:
        if m := _SCAFFOLD.match(part):
            lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
            if lo > hi:
                raise ValueError(f"contig {contig!r}: segment {part!r} has min > max")
            out.append(Segment(None, lo, hi))
        elif m := _MOTIF.match(part):
            lo, hi = int(m.group(2)), int(m.group(3))
            if lo > hi:
                raise ValueError(f"contig {contig!r}: motif segment {part!r} runs backwards")
            out.append(Segment(m.group(1), lo, hi))
        else:
            raise ValueError(f"contig {contig!r}: cannot read segment {part!r} (expected N, N-M or a chain letter "
                             "with a residue range such as A10-25)")
    if not any(s.chain for s in out):
        raise ValueError(f"contig {contig!r} has no motif segment (e.g. A10-25)")
    return out


def motif_atoms(motif: Backbone, segments: Sequence[Segment], report: ReadReport | None = None
                ) -> list[np.ndarray]:
    """The ``(k, 4, 3)`` atoms of each motif segment, checked against the motif backbone.

    ``report`` (from reading the motif file) names the residues that were dropped when reading
    it (missing atoms...) when a segment asks for them. A residue number that occurs more than
    once (insertion codes, 67 and 67A) is an error: a contig range cannot say which to take."""
    out = []
    for s in segments:
        if s.chain is None:
            continue
        label = f"motif segment {s.chain}{s.lo}-{s.hi}"
        if s.chain != motif.chain:
            raise ValueError(f"{label}: the motif file's chain is {motif.chain!r}")
        wanted = range(s.lo, s.hi + 1)
        inserted = [r for r in wanted if int((motif.res_ids == r).sum()) > 1]
        if inserted:
            raise ValueError(f"{label}: residue number {inserted[0]} occurs {int((motif.res_ids == inserted[0]).sum())}"
                             f" times in {motif.name!r} (insertion codes such as {inserted[0]}A), so the contig "
                             "cannot say which to keep: renumber the motif file's residues")
        idx = [int(np.flatnonzero(motif.res_ids == r)[0]) if (motif.res_ids == r).any() else -1 for r in wanted]
        missing = [r for r, i in zip(wanted, idx, strict=True) if i < 0]
        dropped = [p for p in (report.problems if report is not None else [])
                   if p.chain == s.chain and p.res_id in missing]
        if dropped:
            shown = "; ".join(map(str, dropped[:5])) + (f"; ... ({len(dropped)} in all)" if len(dropped) > 5 else "")
            raise ValueError(f"{label}: {len(dropped)} of its residues were dropped when reading {motif.name!r} "
                             f"({shown}): a motif residue needs N, CA, C and O")
        if missing:
            shown = ", ".join(map(str, missing[:8])) + (f" ... ({len(missing)} in all)" if len(missing) > 8 else "")
            raise ValueError(f"{label}: residues {shown} are not in {motif.name!r} "
                             f"(it has residues {int(motif.res_ids.min())}-{int(motif.res_ids.max())})")
        if not motif.full:
            raise ValueError(f"motif {motif.name!r} is a CA trace: motif frames need N, CA and C atoms")
        out.append(motif.atoms[idx])
    return out


def read_motif(path: str | os.PathLike[str], contig: str) -> tuple[Backbone, ReadReport]:
    """The motif backbone of a PDB / mmCIF file: the one chain the contig's motif segments name
    (an error when they name several), and the file's read report."""
    from .pdbio import read_backbones

    chains = sorted({s.chain for s in parse_contig(contig) if s.chain})
    motifs, report = read_backbones(path, chains=chains)
    if len(motifs) != 1:
        raise ValueError(f"{path}: the contig's motif must come from one chain, got chains {chains}")
    return motifs[0], report


def draw_layout(segments: Sequence[Segment], rng: np.random.Generator, total: tuple[int, int] | None = None,
                tries: int = 1000) -> tuple[int, np.ndarray]:
    """One sample's length and the chain positions of the motif residues (in motif order);
    ``total``: ``(min, max)`` bounds of the length."""
    if total is not None and not (isinstance(total, (tuple, list)) and len(total) == 2
                                  and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in total)
                                  and 1 <= total[0] <= total[1]):
        raise ValueError(f"total must be (min, max) residues, whole numbers with 1 <= min <= max, got {total!r}")
    for _ in range(tries):
        pos, n = [], 0
        for s in segments:
            if s.chain is None:
                n += int(rng.integers(s.lo, s.hi + 1))
            else:
                k = s.hi - s.lo + 1
                pos.extend(range(n, n + k))
                n += k
        if total is None or total[0] <= n <= total[1]:
            return n, np.array(pos)
    raise ValueError(f"no scaffold lengths give a total length in {total}")


@dataclass
class Scaffolds:
    """Scaffolding results: the backbones, each one's motif positions and motif RMSD (A)."""

    backbones: list[Backbone]
    positions: list[np.ndarray]
    motif_rmsd: np.ndarray

    def __repr__(self) -> str:  # a summary: the backbones' coordinates would fill screens
        r = self.motif_rmsd
        rmsd = f", motif RMSD mean {float(r.mean()):.3g} A, max {float(r.max()):.3g} A" if len(r) else ""
        return f"Scaffolds({len(self.backbones)} backbones{rmsd})"

    def summary(self, threshold: float = 0.5) -> dict[str, float]:
        """Count, mean and largest motif RMSD, and the fraction below ``threshold`` (A)."""
        r = self.motif_rmsd
        return {"n": float(len(r)), "motif_rmsd_mean": float(r.mean()), "motif_rmsd_max": float(r.max()),
                "motif_kept_frac": float((r < threshold).mean())}


def scaffold(generator: Any, motif: Backbone | str | os.PathLike[str], contig: str, num: int, *, seed: int = 0,
             total: tuple[int, int] | None = None, sampler: str | None = None, steps: int | None = None,
             progress: bool | None = None, report: ReadReport | None = None) -> Scaffolds:
    """Generate ``num`` scaffolds around ``motif`` laid out by ``contig`` with a trained frame
    model (a :class:`polydiff.Generator`).

    ``motif``: a :class:`Backbone` (e.g. ``read_backbones(path)[0][0]``) or the path of a PDB /
    mmCIF file, read as ``polydiff proteins scaffold --motif`` reads it (:func:`read_motif`);
    ``contig``: the layout (see the module docstring); ``total``: ``(min, max)`` bounds of each
    scaffold's length; ``report``, the motif file's read report, names the motif residues that
    were dropped when reading it. Returns the backbones (named ``scaffold_0000``...), each one's
    motif positions and motif RMSD."""
    if "rots" not in generator.fields:
        raise ValueError("motif scaffolding needs a frame model (process frames: true); this model generates CA "
                         "positions only")
    if isinstance(num, bool) or not isinstance(num, (int, np.integer)) or num < 1:
        raise ValueError(f"num must be a positive integer (the number of scaffolds), got {num!r}")
    if isinstance(motif, (str, os.PathLike)):
        motif, report = read_motif(Path(motif), contig)
    elif not isinstance(motif, Backbone):
        raise TypeError(f"motif must be a Backbone (e.g. read_backbones(path)[0][0]: read_backbones returns the "
                        f"file's backbones and a report) or the path of a PDB / mmCIF file, got {type(motif).__name__}")
    segs = parse_contig(contig)
    pieces = motif_atoms(motif, segs, report)
    atoms = np.concatenate(pieces)  # (K, 4, 3) motif atoms in layout order
    rng = np.random.default_rng(seed)
    layouts = [draw_layout(segs, rng, total) for _ in range(num)]
    n_max = max(n for n, _ in layouts)
    scale = float(generator.info.get("scale", 0.1))
    R, ca = frames_from_backbone(atoms)
    ca = (ca - ca.mean(0)) * scale
    trans = torch.zeros(num, n_max, 3, dtype=torch.float32)
    rots = torch.eye(3).repeat(num, n_max, 1, 1)
    mask = torch.zeros(num, n_max, dtype=torch.bool)
    for i, (_, pos) in enumerate(layouts):
        trans[i, pos], rots[i, pos], mask[i, pos] = ca.float(), R.float(), True
    obs = Observation({"trans": trans, "rots": rots}, {"trans": mask[..., None], "rots": mask})
    out = generator.generate(num, seed=seed, sampler=sampler, steps=steps, batch_size=num, progress=progress,
                             condition={"length": [n for n, _ in layouts]}, observed=obs, inpaint="replace")
    rmsd = np.array([kabsch_rmsd(bb.atoms[pos, :3].reshape(-1, 3), atoms[:, :3].reshape(-1, 3))
                     for bb, (_, pos) in zip(out, layouts, strict=True)])
    for bb in out:
        bb.name = bb.name.replace("sample", "scaffold")
    return Scaffolds(list(out), [p for _, p in layouts], rmsd)
