"""``polydiff proteins scaffold CKPT`` and ``polydiff proteins check FILES``.

::

    polydiff proteins scaffold CKPT --motif motif.pdb --contig 5-15/A10-25/5-15 [--num 20]
                               [--length MIN-MAX] [--steps K] [--seed S] [--out DIR]
    polydiff proteins check FILE_OR_FOLDER ... [--split-breaks]

``scaffold`` generates backbones around the motif residues named in the contig (see
:mod:`.scaffold`), writes one PDB per scaffold and ``scaffolds.json`` (motif RMSD per sample,
scaffold diversity), and prints the summary. ``check`` reads PDB / mmCIF files as training
would and prints each file's per-residue report (missing atoms, unknown residues, chain
breaks, skipped chains).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from polydiff.plugin import (
    Command,
    add_output,
    atomic_write,
    load,
    non_negative_int,
    output_folder,
    positive_int,
    run_folder,
)


def _configure_scaffold(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--motif", type=Path, required=True, help="PDB / mmCIF file holding the motif residues")
    p.add_argument("--contig", required=True, help="layout, e.g. 5-15/A10-25/5-15 (scaffold ranges and motif "
                                                   "residues of chain A)")
    p.add_argument("--num", type=positive_int, default=20, help="scaffolds (default 20)")
    p.add_argument("--length", help="total length bounds MIN-MAX (default: any the contig allows)")
    p.add_argument("--steps", type=positive_int, help="sampling steps (default: the recipe's)")
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument("--threads", type=positive_int, default=1, help="torch CPU threads (default 1)")
    add_output(p, "output folder (default: RUN/scaffolds)")


def _run_scaffold(args: argparse.Namespace) -> int:
    from .scaffold import read_motif, scaffold

    total = None
    if args.length:
        lo, _, hi = args.length.partition("-")
        try:
            total = (int(lo), int(hi or lo))
        except ValueError:
            raise ValueError(f"--length: expected MIN-MAX, got {args.length!r}") from None
    torch.set_num_threads(args.threads)
    motif, motif_report = read_motif(args.motif, args.contig)  # before loading the model: a bad file fails fast
    out = args.out or run_folder(args.checkpoint) / "scaffolds"
    with output_folder(out, args.overwrite, marker="scaffolds.json",  # one run's files, swapped in whole
                       inputs={"motif": args.motif, "checkpoint": args.checkpoint}) as folder:
        gen = load(args.checkpoint, modality="proteins")
        res = scaffold(gen, motif, args.contig, args.num, seed=args.seed, total=total, steps=args.steps,
                       report=motif_report)
        summary = _write_scaffolds(args, res, folder)
    print(f"polydiff proteins: {args.num} scaffolds of {args.motif.name} ({args.contig}) -> {out}")
    for k, v in summary.items():
        print(f"  {k:<24} {float(v):.4g}")
    return 0


def _write_scaffolds(args: argparse.Namespace, res: Any, folder: Path) -> dict[str, Any]:
    """The scaffolds' PDB files and ``scaffolds.json`` in ``folder``; returns the summary."""
    from .metrics import diversity, tm_clusters
    from .pdbio import write_pdb

    for bb in res.backbones:
        write_pdb(bb, folder / f"{bb.name}.pdb")
    summary = res.summary()
    if len(res.backbones) > 1:
        summary.update(scaffold_diversity_tm=diversity(res.backbones), scaffold_clusters=tm_clusters(res.backbones))
    report = {**summary, "contig": args.contig, "motif": str(args.motif),
              "samples": [{"name": b.name, "length": len(b), "motif_positions": p.tolist(), "motif_rmsd": float(r)}
                          for b, p, r in zip(res.backbones, res.positions, res.motif_rmsd, strict=True)]}
    atomic_write(folder / "scaffolds.json", json.dumps(report, indent=2) + "\n")
    return summary


def _configure_check(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", type=Path, nargs="+", help="PDB / mmCIF files or folders")
    p.add_argument("--split-breaks", action="store_true", help="split chains at breaks (as the pdb dataset does)")


def _run_check(args: argparse.Namespace) -> int:
    from .pdbio import read_backbones, read_folder

    bad = 0
    for path in args.paths:
        if path.is_dir():
            bbs, reports = read_folder(path, split_breaks=args.split_breaks)
        else:
            bbs, rep = read_backbones(path, split_breaks=args.split_breaks)
            reports = [rep]
        for rep in reports:
            print(rep.summary())
            bad += not rep.ok
        print(f"{path}: {len(bbs)} usable chains " + ", ".join(f"{b.name} ({len(b)})" for b in bbs))
    return 0 if bad == 0 else 1


COMMANDS = {
    "scaffold": Command("motif scaffolding with a trained frame model: PDB files, motif RMSD, diversity",
                        _configure_scaffold, _run_scaffold),
    "check": Command("read PDB / mmCIF files and print per-residue reports (missing atoms, breaks, unknown residues); "
                     "exit status 1 when any file has a problem, as linters do",
                     _configure_check, _run_check),
}
