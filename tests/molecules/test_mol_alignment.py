"""Prior-to-data alignment of molecules (``loss.techniques.align: molecule``): each molecule is
moved by a rotation and an atom permutation that bring it closer to its noise than rotation or
matching alone, and every per-atom entry and the bonds follow its atoms."""

from __future__ import annotations

import itertools

import torch

from polydiff.plugin import ALIGNMENTS
from polydiff_molecules.modality import align_molecules, pair_index, pairs_to_matrix


def _batch(sizes, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    B = len(sizes)
    mask = (torch.arange(n)[None] < torch.tensor(sizes)[:, None]).float()
    pos = torch.randn(B, n, 3, generator=g) * mask[..., None]
    pos = pos - (pos.sum(1, keepdim=True) / mask.sum(1)[:, None, None]) * mask[..., None]
    types = torch.randint(0, 5, (B, n), generator=g) * mask.long()
    bonds_full = torch.randint(0, 4, (B, n, n), generator=g)
    bonds_full = torch.triu(bonds_full, 1)
    bonds_full = (bonds_full + bonds_full.transpose(1, 2)) * (mask[:, :, None] * mask[:, None, :]).long()
    i, j = pair_index(n)
    eps = torch.randn(B, n, 3, generator=g) * mask[..., None]
    eps = eps - (eps.sum(1, keepdim=True) / mask.sum(1)[:, None, None]) * mask[..., None]
    return {"pos": pos, "types": types, "bonds": bonds_full[:, i, j], "mask": mask}, {"pos": eps}


def _kabsch_cost(x, e):
    h = x.T @ e
    u, _, vt = torch.linalg.svd(h)
    d = torch.sign(torch.linalg.det(u @ vt))
    r = u @ torch.diag(torch.tensor([1.0, 1.0, float(d)], dtype=x.dtype)) @ vt
    return float(((x @ r - e) ** 2).sum())


def test_alignment_is_a_symmetry_and_brings_data_closer():
    batch, eps = _batch([5, 7, 3], 7)
    out = align_molecules(batch, eps)
    n = 7
    for b in range(3):
        m = batch["mask"][b].bool()
        x, y = batch["pos"][b, m].double(), out["pos"][b, m].double()
        # a rigid motion with a relabelling: the multiset of pairwise distances is unchanged
        assert torch.allclose(torch.cdist(x, x).flatten().sort().values, torch.cdist(y, y).flatten().sort().values,
                              atol=1e-5)
        assert float(((y - eps["pos"][b, m]) ** 2).sum()) <= float(((x - eps["pos"][b, m]) ** 2).sum()) + 1e-6
        assert torch.equal(out["pos"][b, ~m], batch["pos"][b, ~m])  # padding untouched
        # atoms keep their types and bonds: for every new atom find the old atom it came from
        d = torch.cdist(y, x)  # after undoing the rotation distances to neighbours match; use types+bonds
        old_b = pairs_to_matrix(batch["bonds"], n)[b][m][:, m]
        new_b = pairs_to_matrix(out["bonds"], n)[b][m][:, m]
        assert sorted(out["types"][b, m].tolist()) == sorted(batch["types"][b, m].tolist())
        assert int(new_b.sum()) == int(old_b.sum())
        del d
    assert torch.equal(out["types"][batch["mask"] == 0], batch["types"][batch["mask"] == 0])


def test_alignment_is_optimal_and_moves_types_and_bonds_with_atoms():
    batch, eps = _batch([5], 5, seed=3)
    out = align_molecules(batch, eps)
    x, e = batch["pos"][0].double(), eps["pos"][0].double()
    got = float(((out["pos"][0].double() - e) ** 2).sum())
    # the joint problem is not convex: alternating matching and rotation reaches a local optimum,
    # no worse than rotating alone or matching alone, and never worse than doing nothing
    from scipy.optimize import linear_sum_assignment

    _, col = linear_sum_assignment(torch.cdist(x, e).pow(2).numpy())
    match_only = float(((x - e[torch.as_tensor(col)]) ** 2).sum())
    assert got <= min(_kabsch_cost(x, e), match_only, float(((x - e) ** 2).sum())) + 1e-9
    # recover the permutation from positions (rotation undone by Kabsch on the result)
    y = out["pos"][0].double()
    h = x.T @ y
    u, _, vt = torch.linalg.svd(h)
    best_perm = None
    for p in itertools.permutations(range(5)):
        if torch.allclose(torch.cdist(y, y), torch.cdist(x[list(p)], x[list(p)]), atol=1e-5):
            best_perm = list(p)
            break
    assert best_perm is not None
    old_b = pairs_to_matrix(batch["bonds"], 5)[0]
    new_b = pairs_to_matrix(out["bonds"], 5)[0]
    assert torch.equal(new_b, old_b[best_perm][:, best_perm])
    assert torch.equal(out["types"][0], batch["types"][0][best_perm])
    del h, u, vt


def test_alignment_is_registered():
    assert ALIGNMENTS.get("molecule") is align_molecules
