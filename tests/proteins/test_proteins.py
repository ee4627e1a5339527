"""The proteins plugin: geometry, synthetic data, networks' symmetries, the modality contract,
sampling (self-conditioning, rate schedule), motif scaffolding and the command line."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from polydiff.plugin import SO3, GeodesicFlow, random_rotation, shared_dir
from polydiff.testing import check_modality
from polydiff_proteins import ProteinsModality
from polydiff_proteins.geometry import (
    Backbone,
    backbone_dihedrals,
    backbone_from_frames,
    build_backbone,
    frames_from_backbone,
)
from polydiff_proteins.metrics import dssp, kabsch_rmsd
from polydiff_proteins.modality import RotationFlow, synthetic_dataset
from polydiff_proteins.nets import CANet, FrameNet, ca_frames
from polydiff_proteins.scaffold import draw_layout, parse_contig
from polydiff_proteins.synthetic import synthetic_backbone, synthetic_backbones

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {"dim": 16, "pair_dim": 8, "blocks": 1, "heads": 2}


def _random_backbone(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return build_backbone(rng.uniform(-math.pi, math.pi, n), rng.uniform(-math.pi, math.pi, n),
                          rng.normal(math.pi, 0.1, n))


# -- geometry ----------------------------------------------------------------------------------

def test_frames_from_backbone_and_back_within_1e4():
    x = _random_backbone(40, 0)
    R, t = frames_from_backbone(x)
    assert torch.allclose(R.transpose(-1, -2) @ R, torch.eye(3, dtype=R.dtype).expand_as(R), atol=1e-12)
    assert torch.allclose(torch.linalg.det(R), torch.ones(40, dtype=R.dtype))
    y = backbone_from_frames(R, t)
    assert np.abs(y[:, :3] - x[:, :3]).max() < 1e-4  # N, CA, C
    assert np.abs(y[:-1, 3] - x[:-1, 3]).max() < 1e-4  # O (the last one needs the next N)
    # a rigid motion of the atoms moves the frames with it
    Q = random_rotation((), dtype=torch.float64).numpy()
    R2, t2 = frames_from_backbone(x @ Q.T + 5.0)
    assert torch.allclose(R2, torch.as_tensor(Q) @ R, atol=1e-12)
    assert torch.allclose(t2, t @ torch.as_tensor(Q).T + 5.0, atol=1e-12)


def test_build_backbone_has_the_requested_dihedrals_and_ideal_bonds():
    rng = np.random.default_rng(1)
    phi, psi = rng.uniform(-3, 3, 25), rng.uniform(-3, 3, 25)
    x = build_backbone(phi, psi)
    p, s, o = backbone_dihedrals(x)
    assert np.allclose(p[1:], phi[1:]) and np.allclose(s[:-1], psi[:-1]) and np.allclose(np.abs(o[:-1]), math.pi)
    assert np.allclose(np.linalg.norm(x[:, 1] - x[:, 0], axis=-1), 1.458)
    assert np.allclose(np.linalg.norm(x[1:, 0] - x[:-1, 2], axis=-1), 1.329)
    assert np.allclose(np.linalg.norm(x[1:, 1] - x[:-1, 1], axis=-1), 3.80, atol=0.03)  # trans peptides
    batch = build_backbone(np.stack([phi, phi]), np.stack([psi, psi]))
    assert batch.shape == (2, 25, 4, 3) and np.allclose(batch[1], x)


def test_synthetic_backbones_have_their_secondary_structure():
    rng = np.random.default_rng(0)
    bundle, ss = synthetic_backbone(80, rng, "bundle")
    assert len(bundle) == 80 and ss.count("H") > 40
    d = dssp(bundle)
    helix_agree = np.mean([a == "H" for a, b in zip(d, ss, strict=True) if b == "H"])
    assert helix_agree > 0.8
    sheet, ss = synthetic_backbone(60, rng, "hairpin")
    assert np.mean(np.asarray(list(dssp(sheet))) == "E") > 0.08 and ss.count("E") > 30  # hairpins pair near their turns
    # clash-free and centred; a seed fixes everything
    for bb, _ in synthetic_backbones(6, 40, 60, seed=3):
        d = np.linalg.norm(bb.ca[:, None] - bb.ca[None], axis=-1)[np.triu_indices(len(bb), 3)]
        assert d.min() > 3.0 and np.allclose(bb.ca.mean(0), 0, atol=1e-9)
    a = [b.atoms for b, _ in synthetic_backbones(3, seed=5)]
    b = [b.atoms for b, _ in synthetic_backbones(3, seed=5)]
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


# -- networks ----------------------------------------------------------------------------------

def _batch(B: int = 3, N: int = 12, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(B, N)
    mask[1, 9:] = 0
    mask[2, 5:] = 0
    x = torch.randn(B, N, 3, generator=g, dtype=torch.float64) * mask[..., None]
    return {"rots": random_rotation((B, N), generator=g, dtype=torch.float64), "trans": x, "mask": mask,
            "sc_trans": 0.9 * x}


@pytest.mark.parametrize("cls", [FrameNet, CANet])
def test_networks_are_se3_equivariant_in_float64(cls):
    torch.manual_seed(0)
    net = cls(**TINY).double()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))  # the frame update starts at zero: make it move
    st, t = _batch(), torch.tensor([0.3, 0.6, 0.9], dtype=torch.float64)
    out = net(st, t)
    Q, shift = random_rotation((), dtype=torch.float64), torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    m = st["mask"][..., None]
    moved = {**st, "rots": Q @ st["rots"], "trans": (st["trans"] @ Q.T + shift) * m,
             "sc_trans": (st["sc_trans"] @ Q.T + shift) * m}
    out2 = net(moved, t)
    present = st["mask"].bool()
    assert (out2["trans"] - (out["trans"] @ Q.T + shift) * m).abs().max() < 1e-6
    if "rots" in out:
        assert (out2["rots"][present] - Q @ out["rots"][present]).abs().max() < 1e-6
    # permuting whole samples permutes outputs; padding content never leaks into present residues
    perm = torch.tensor([2, 0, 1])
    out3 = net({k: v[perm] for k, v in st.items()}, t[perm])
    assert torch.allclose(out3["trans"], out["trans"][perm], atol=1e-10)
    junk = {k: v.clone() for k, v in st.items()}
    junk["trans"][2, 6:] = 7.0
    junk["rots"][2, 6:] = random_rotation((6,), dtype=torch.float64)
    assert torch.allclose(net(junk, t)["trans"][present], out["trans"][present], atol=1e-10)


def test_ca_frames_are_equivariant_rotations():
    st = _batch()
    R = ca_frames(st["trans"], st["mask"] > 0)
    Q = random_rotation((), dtype=torch.float64)
    R2 = ca_frames(st["trans"] @ Q.T + 1.0, st["mask"] > 0)
    present = st["mask"].bool()
    assert torch.allclose(R2[present], Q @ R[present], atol=1e-10)
    assert torch.allclose(torch.linalg.det(R[present]), torch.ones(int(present.sum()), dtype=R.dtype))


# -- the modality ------------------------------------------------------------------------------

def test_modality_contract(tmp_path):
    report = check_modality(ProteinsModality(), tmp_path, data={"n": 6, "test": 4, "min_length": 24,
                                                                "max_length": 30},
                            model={"name": "frames", **TINY}, n=3, steps=3)
    assert report is not None


def test_ca_baseline_contract(tmp_path):
    check_modality(ProteinsModality(), tmp_path, data={"n": 6, "test": 4, "min_length": 24, "max_length": 30},
                   model={"name": "ca", **TINY}, process={"frames": False}, n=3, steps=3)


def test_fields_and_sampling_processes():
    mod = ProteinsModality()
    f = mod.fields({}, rot_rate=7.0)
    assert f["rots"].process.rate == 0.0 and f["rots"].process.sample_rate == 7.0
    with pytest.raises(ValueError, match="train_noise"):
        mod.fields({}, train_noise="gaussian")
    # IGSO(3) training noise: the path ends at data @ noise, a small rotation away from the data
    flow = mod.fields({}, train_noise="igso3", igso3_eps=0.2)["rots"].process
    assert isinstance(flow, RotationFlow)
    x0 = random_rotation((500,), dtype=torch.float64)
    x1 = flow.manifold.prior((500, 3, 3), torch.randn(500, 3, 3, dtype=torch.float64))
    end = flow.interpolate(x0, x1, torch.ones(500, dtype=torch.float64))
    ang = SO3().dist(x0, end)
    assert 0.1 < float(ang.mean()) < 0.6  # IGSO(3) with eps 0.2: mean angle about 0.32 rad
    assert isinstance(GeodesicFlow(SO3(), rate=10.0).kappa(torch.tensor(0.5)), torch.Tensor)


def test_lengths_condition_and_errors():
    mod = ProteinsModality()
    info = {"size_hist": [0] * 30 + [1]}
    spec = mod.prior_state(3, info, condition={"length": [20, 25, 30]})
    assert spec["mask"].sum(1).tolist() == [20, 25, 30] and spec["trans"] == (3, 30, 3)
    assert mod.prior_state(2, info, condition={"length": 12})["mask"].sum(1).tolist() == [12, 12]
    with pytest.raises(ValueError, match="unknown condition"):
        mod.prior_state(2, info, condition={"label": 1})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny frame model trained for a few steps with self-conditioning (end to end)."""
    import polydiff as pd

    out = tmp_path_factory.mktemp("run")
    cfg = {"modality": "proteins", "data": {"name": "synthetic", "n": 16, "test": 4, "min_length": 24,
                                            "max_length": 32},
           "model": {"name": "frames", **TINY}, "process": {"frames": True},
           "loss": {"manifold_weighting": "velocity", "techniques": {"self_condition": 0.5}},
           "train": {"max_steps": 6, "batch_size": 4, "lr": 1e-3, "checkpoint_every": 6, "log_every": 2,
                     "threads": 1},
           "sample": {"num": 4, "sampler": "euler", "steps": 4, "seed": 0}}
    pd.train(cfg, out)
    return pd.load(out / "checkpoints" / "last.ckpt")


def test_end_to_end_sampling_feeds_self_conditioning(trained):
    seen = []
    net = trained.net
    original = net.forward

    def probe(state, t, cond=None):
        seen.append(float(state["sc_trans"].abs().sum()))
        return original(state, t, cond)

    net.forward = probe
    try:
        bbs = trained.generate(2, seed=0, steps=4)
    finally:
        del net.forward
    assert seen[0] == 0 and all(s > 0 for s in seen[1:])  # the previous estimate is fed back
    assert len(bbs) == 2 and all(b.full and np.isfinite(b.atoms).all() for b in bbs)


def test_sample_files_do_not_depend_on_the_batch_size(trained, tmp_path):
    """Objects are named by their index in the run, so a run in chunks writes sample_0000 ...
    sample_0004 with the same backbones as one chunk (chunk-local names once overwrote each
    other's PDB files: 5 samples in chunks of 2 left 2 files)."""
    a = trained.generate_to(tmp_path / "a", 5, seed=0, steps=2, batch_size=5)
    b = trained.generate_to(tmp_path / "b", 5, seed=0, steps=2, batch_size=2)
    names = [f"sample_{i:04d}.pdb" for i in range(5)]
    assert sorted(p.name for p in a.paths) == sorted(p.name for p in b.paths) == names
    for name in names:
        (x,), (y,) = (trained.modality.read(tmp_path / d / name) for d in ("a", "b"))
        np.testing.assert_allclose(x.atoms, y.atoms, atol=2e-3)
    assert [o.name for o in trained.generate(3, seed=0, steps=2, batch_size=1)] == [n[:-4] for n in names[:3]]
    twins = [Backbone(np.zeros((3, 4, 3)), name="x"), Backbone(np.ones((3, 4, 3)), name="x")]
    assert [p.name for p in trained.modality.write(twins, tmp_path / "c")] == ["x.pdb", "x-2.pdb"]


def test_scaffolding_keeps_the_motif(trained):
    from polydiff_proteins.scaffold import scaffold

    helix = Backbone(build_backbone(np.radians(np.full(10, -63.0)), np.radians(np.full(10, -42.0))),
                     name="helix")
    res = scaffold(trained, helix, "4-6/A3-8/4-6", 3, seed=1, steps=4)
    assert len(res.backbones) == 3
    assert (res.motif_rmsd < 0.5).all()
    for bb, pos in zip(res.backbones, res.positions, strict=True):
        assert 14 <= len(bb) <= 18 and len(pos) == 6
        assert kabsch_rmsd(bb.ca[pos], helix.ca[2:8]) < 0.05


def test_scaffold_takes_a_motif_file_and_refuses_bad_arguments(trained, tmp_path):
    """A motif file's path is read as the command line reads it; num, total and a motif that
    is not a backbone are refused in one line naming the argument."""
    from polydiff_proteins.pdbio import read_backbones, write_pdb
    from polydiff_proteins.scaffold import scaffold

    helix = Backbone(build_backbone(np.radians(np.full(10, -63.0)), np.radians(np.full(10, -42.0))), name="helix")
    path = write_pdb(helix, tmp_path / "helix.pdb")
    res = scaffold(trained, str(path), "3/A3-8/3", 1, steps=2)
    assert len(res.backbones) == 1 and len(res.backbones[0]) == 12
    assert repr(res).startswith("Scaffolds(1 backbones, motif RMSD mean ") and len(repr(res)) < 80
    for num in (0, -1, 2.5):
        with pytest.raises(ValueError, match=f"num must be a positive integer .*got {num}"):
            scaffold(trained, helix, "3/A3-8/3", num)
    with pytest.raises(TypeError, match=r"motif must be a Backbone \(e.g. read_backbones\(path\)\[0\]\[0\].*got list"):
        scaffold(trained, read_backbones(path)[0], "3/A3-8/3", 1)
    with pytest.raises(ValueError, match=r"total must be \(min, max\).*got \(80, 40\)"):
        scaffold(trained, helix, "3/A3-8/3", 1, total=(80, 40))


def test_foreign_objects_are_refused_and_backbones_show_a_summary(trained, tmp_path):
    for call in (trained.evaluate, lambda o: trained.plot(o, tmp_path / "x.png"),
                 lambda o: trained.save(o, tmp_path / "x")):
        with pytest.raises(TypeError, match=r"objects\[0\]: expected a Backbone .*got int"):
            call([1, 2])
    bb = Backbone(np.zeros((50, 4, 3)), name="sample_0000")
    assert repr(bb) == "Backbone('sample_0000', 50 residues, chain A)"
    trace = Backbone(np.zeros((3, 1, 3)), chain="B", atom_names=("CA",))
    assert repr(trace) == "Backbone('', 3 residues, chain B, CA trace)"


def test_contig_parsing():
    segs = parse_contig("5-15/A10-25/3")
    assert [(s.chain, s.lo, s.hi) for s in segs] == [(None, 5, 15), ("A", 10, 25), (None, 3, 3)]
    n, pos = draw_layout(segs, np.random.default_rng(0))
    assert 24 <= n <= 34 and len(pos) == 16 and pos[0] >= 5
    for bad in ("5-15", "A25-10", "x/A1-3", "15-5/A1-3"):
        with pytest.raises(ValueError, match="contig"):
            parse_contig(bad)
    with pytest.raises(ValueError, match="total length"):
        draw_layout(segs, np.random.default_rng(0), total=(100, 120))
    with pytest.raises(ValueError, match="total must be"):
        draw_layout(segs, np.random.default_rng(0), total=(30, 24))


def test_synthetic_dataset_is_deterministic_and_split():
    a, b = synthetic_dataset(n=5, test=4, min_length=24, max_length=30), synthetic_dataset(n=5, test=4,
                                                                                           min_length=24,
                                                                                           max_length=30)
    assert torch.equal(a.train.tensors["trans"], b.train.tensors["trans"])
    assert len(a.train) == 5 and len(a.val) == 2 and len(a.test) == 2
    batch = a.train.get_batch(torch.tensor([0, 1]))
    assert batch["trans"].shape[1] == int(batch["mask"].sum(1).max())  # cut to the longest chain
    com = (batch["trans"] * batch["mask"][..., None]).sum(1)
    assert com.abs().max() < 1e-5


@pytest.mark.shared
def test_pdb_dataset_and_check_command(tmp_path, capsys):
    from polydiff.cli import main

    base = shared_dir()
    if base is None:
        pytest.skip("shared data folder not found")
    folder = Path(base) / "data" / "proteins"
    with pytest.warns(UserWarning, match="skipped"):
        data = ProteinsModality().dataset("pdb", path=str(folder), min_length=60)
    assert len(data.train) + len(data.test) >= 8 and data.info["dataset"] == "pdb"
    from polydiff_proteins.modality import _train_reference

    assert len(_train_reference(data.info)) == len(data.train)  # novelty is measured against them
    assert main(["proteins", "check", str(folder / "5L33.pdb")]) == 0
    assert "5L33" in capsys.readouterr().out
    assert main(["proteins", "check", str(folder / "3HTN_chainA.pdb")]) == 1  # it has chain breaks


def _helix_pdb(path: Path, n: int = 12, drop: tuple[int, str] | None = None, insert: int | None = None) -> Path:
    """An ideal helix written as PDB, without atom ``drop`` = (residue, atom) or with a copy of
    residue ``insert`` as ``{insert}A``."""
    from polydiff_proteins.pdbio import write_pdb

    bb = Backbone(build_backbone(np.radians(np.full(n, -63.0)), np.radians(np.full(n, -42.0))), name="m")
    lines = write_pdb(bb, path).read_text().splitlines()
    out = []
    for line in lines:
        key = (int(line[22:26]), line[12:16].strip()) if line.startswith("ATOM") else None
        if key is not None and key == drop:
            continue
        out.append(line)
        if key is not None and key[0] == insert:
            out.append(line[:26] + "A" + line[27:30] + f"{float(line[30:38]) + 0.5:8.3f}" + line[38:])
    path.write_text("\n".join(out) + "\n")
    return path


def test_pdb_dataset_reports_dropped_residues_and_breaks(tmp_path):
    from polydiff_proteins.modality import pdb_dataset

    folder = tmp_path / "pdbs"
    folder.mkdir()
    _helix_pdb(folder / "a.pdb", 12)
    _helix_pdb(folder / "b.pdb", 12, drop=(6, "O"))
    with pytest.warns(UserWarning, match=r"pdbs: 1 residue\(s\) dropped \(b\.pdb: A [A-Z]{3} 6: missing O\) and 1 "
                                         r"chain break\(s\) \(b\.pdb: A 5-7 .*\) in 1 file\(s\); the chains "
                                         r"were split"):
        data = pdb_dataset(str(folder), min_length=4, test_fraction=0.3)
    assert len(data.train) + len(data.test) == 3 and set(data.info["names"]) <= {"a", "b_seg1", "b_seg2"}
    with pytest.warns(UserWarning, match=r"b\.pdb: 1 residue\(s\) dropped"):
        pdb_dataset(str(folder / "b.pdb"), min_length=4, test_fraction=0.5)


def test_motif_residues_dropped_or_with_insertion_codes_are_named(tmp_path):
    from polydiff_proteins.pdbio import read_backbones
    from polydiff_proteins.scaffold import motif_atoms

    (motif,), report = read_backbones(_helix_pdb(tmp_path / "miss.pdb", drop=(6, "O")))
    with pytest.raises(ValueError, match=r"A2-8: 1 of its residues were dropped when reading 'miss' "
                                         r"\(A [A-Z]{3} 6: missing O\)"):
        motif_atoms(motif, parse_contig("3/A2-8/3"), report)
    with pytest.raises(ValueError, match=r"residues 6 are not in 'miss'"):  # without the report
        motif_atoms(motif, parse_contig("3/A2-8/3"))
    (motif,), report = read_backbones(_helix_pdb(tmp_path / "ins.pdb", insert=6))
    with pytest.raises(ValueError, match=r"A2-8: residue number 6 occurs 2 times in 'ins' \(insertion codes"):
        motif_atoms(motif, parse_contig("3/A2-8/3"), report)
    assert len(motif_atoms(motif, parse_contig("3/A7-10/3"), report)[0]) == 4  # away from the insertion


def test_scaffold_command(trained, tmp_path, capsys):
    from polydiff.cli import main
    from polydiff_proteins.pdbio import write_pdb

    motif = write_pdb(Backbone(build_backbone(np.radians(np.full(12, -63.0)), np.radians(np.full(12, -42.0))),
                               name="m"), tmp_path / "motif.pdb")
    out = tmp_path / "scaf"
    rc = main(["proteins", "scaffold", str(trained.checkpoint), "--motif", str(motif), "--contig", "3/A2-7/3",
               "--num", "2", "--steps", "3", "--out", str(out)])
    assert rc == 0
    report = json.loads((out / "scaffolds.json").read_text())
    assert report["n"] == 2 and report["motif_rmsd_max"] < 0.5 and len(list(out.glob("*.pdb"))) == 2
    capsys.readouterr()
    assert main(["proteins", "scaffold", str(trained.checkpoint), "--motif", str(motif), "--contig", "A2-99",
                 "--out", str(tmp_path / "bad")]) != 0
    assert "residues 13, 14" in capsys.readouterr().err
    # a second run into the same folder needs --overwrite and replaces the folder whole
    again = ["proteins", "scaffold", str(trained.checkpoint), "--motif", str(motif), "--contig", "3/A2-7/3",
             "--num", "1", "--steps", "3", "--out", str(out)]
    assert main(again) == 2 and "pass --overwrite" in capsys.readouterr().err and len(list(out.glob("*.pdb"))) == 2
    assert main([*again, "--overwrite"]) == 0 and len(list(out.glob("*.pdb"))) == 1
    assert main(["proteins", "check", str(tmp_path / "nowhere")]) != 0
    assert "nowhere: no such file or folder" in capsys.readouterr().err


@pytest.mark.parametrize("sampler", ["ddim", "heun", "dpm++2m"])
def test_other_core_samplers_run_on_frames(trained, sampler):
    bbs = trained.generate(2, seed=0, sampler=sampler, steps=3, condition={"length": 20})
    assert len(bbs) == 2 and all(len(b) == 20 and np.isfinite(b.atoms).all() for b in bbs)


def test_minibatch_ot_pairing_trains(tmp_path, monkeypatch):
    import polydiff as pd
    from polydiff import techniques

    loss = {"weighting": "frameflow", "manifold_weighting": "velocity"}
    cfg = {"modality": "proteins", "data": {"name": "synthetic", "n": 8, "test": 2, "min_length": 24,
                                            "max_length": 28},
           "model": {"name": "frames", **TINY}, "process": {"frames": True, "train_noise": "igso3"},
           "loss": {**loss, "techniques": {"immiscible": True}},
           "train": {"max_steps": 2, "batch_size": 4, "checkpoint_every": 2, "threads": 1}}
    pairings = []
    real = techniques.assign_noise

    def spy(x0: torch.Tensor, eps: torch.Tensor, **options) -> torch.Tensor:
        perm = real(x0, eps, **options)
        pairings.append((x0.detach().double(), eps.detach().double(), perm))
        return perm

    monkeypatch.setattr(techniques, "assign_noise", spy)
    run = pd.train(cfg, tmp_path / "ot")
    monkeypatch.undo()
    assert run.step == 2 and math.isfinite(run.metrics["train/loss"])
    # one pairing per step, of the whole batch; each no costlier than the draws as they came, one not the identity
    assert len(pairings) == 2
    ident = torch.arange(4)
    for x0, eps, perm in pairings:
        assert sorted(perm.tolist()) == ident.tolist()
        cost = (x0 - eps[perm]).norm(dim=1).sum()
        assert cost <= (x0 - eps).norm(dim=1).sum() + 1e-9
    assert any(not torch.equal(perm.cpu(), ident) for *_, perm in pairings)
    # the same run without the pairing (same seed, same draws) ends at another loss
    plain = pd.train({**cfg, "loss": loss}, tmp_path / "plain")
    assert plain.step == 2 and plain.metrics["train/loss"] != run.metrics["train/loss"]


def test_evaluate_a_folder_of_users_files(tmp_path, capsys):
    from polydiff.cli import main
    from polydiff_proteins.pdbio import write_pdb

    for i, (bb, _) in enumerate(synthetic_backbones(4, 30, 40, seed=7)):
        write_pdb(bb, tmp_path / "mine" / f"s{i}.pdb")
    for i, (bb, _) in enumerate(synthetic_backbones(3, 30, 40, seed=8)):
        write_pdb(bb, tmp_path / "ref" / f"r{i}.pdb")
    rc = main(["evaluate", str(tmp_path / "mine"), "--modality", "proteins", "--reference", str(tmp_path / "ref"),
               "--json", str(tmp_path / "m.json")])
    assert rc == 0
    got = json.loads((tmp_path / "m.json").read_text())
    metrics = got.get("metrics", got)
    assert metrics["ca_ca_dev"] < 0.05 and metrics["n"] == 4 and 0 <= metrics["rama_jsd"] <= 1


@pytest.mark.shared
def test_fine_tuning_on_the_shared_pdb_files(trained, tmp_path):
    import polydiff as pd

    if shared_dir() is None:
        pytest.skip("shared data folder not found")
    cfg = {"modality": "proteins", "data": {"name": "pdb", "min_length": 60, "max_length": 150},
           "model": {"name": "frames", **TINY}, "process": {"frames": True},
           "loss": {"weighting": "frameflow", "manifold_weighting": "velocity", "techniques": {"self_condition": 0.5}},
           "train": {"max_steps": 2, "batch_size": 2, "checkpoint_every": 2, "threads": 1,
                     "init": str(trained.checkpoint)}}
    with pytest.warns(UserWarning, match="skipped"):
        run = pd.train(cfg, tmp_path / "ft")
    gen = pd.load(run.checkpoint)
    assert gen.info["dataset"] == "pdb" and len(gen.generate(1, seed=0, steps=2)) == 1


def test_listed_recipes_are_valid_and_copied_to_configs():
    import polydiff as pd
    from polydiff.config import load_config

    root = Path(__file__).resolve().parents[2]
    m = pd.load_modality("proteins")
    d = m.describe()
    assert d["datasets"][0] == "synthetic" and set(d["networks"]) == {"frames", "ca"}
    assert {"frames", "ca", "frames_pdb"} <= set(d["recipes"]) and set(d["commands"]) == {"scaffold", "check"}
    for name, path in m.recipes().items():
        assert (root / "configs" / "proteins" / f"{name}.yaml").read_text() == Path(path).read_text()
        cfg = load_config(f"proteins:{name}")
        assert cfg.modality == "proteins"


def test_pdb_files_read_back_as_the_objects_written(tmp_path):
    """Coordinates written with PDB's 3 decimals read back exactly (biotite parses float32: off
    by up to 2e-6 A, so metrics of files and of objects differed in the 5th digit)."""
    rng = np.random.default_rng(0)
    bb = Backbone(np.round(rng.uniform(-80, 80, size=(30, 4, 3)), 3), name="x")
    (path,) = ProteinsModality().write([bb], tmp_path)
    (back,) = ProteinsModality().read(path)
    np.testing.assert_array_equal(back.atoms, bb.atoms)


def test_synthetic_backbones_are_built_once_then_read_from_the_cache(tmp_path, monkeypatch):
    """The default 1000 took about a minute, silently, on every train, sample --plot and evaluate."""
    import numpy as np

    from polydiff_proteins import synthetic

    monkeypatch.setenv("POLYDIFF_CACHE_DIR", str(tmp_path))
    first = synthetic.cached_backbones(6, seed=4)
    built = [b for b, _ in synthetic.synthetic_backbones(6, seed=4)]
    assert len(list((tmp_path / "proteins").glob("synthetic-*.npz"))) == 1

    def no_build(*a, **k):
        raise AssertionError("built again")

    monkeypatch.setattr(synthetic, "synthetic_backbones", no_build)
    again = synthetic.cached_backbones(6, seed=4)
    for a, b, c in zip(first, again, built, strict=True):
        assert np.array_equal(a.atoms, c.atoms) and np.array_equal(b.atoms, c.atoms) and b.name == c.name
    (next((tmp_path / "proteins").glob("*.npz"))).write_bytes(b"damaged")
    monkeypatch.undo()
    monkeypatch.setenv("POLYDIFF_CACHE_DIR", str(tmp_path))
    with pytest.warns(UserWarning, match="unreadable synthetic-backbone cache"):
        assert len(synthetic.cached_backbones(6, seed=4)) == 6
