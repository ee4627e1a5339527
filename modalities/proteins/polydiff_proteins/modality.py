"""The ``proteins`` modality: SE(3) flow matching over backbone frames (FrameFlow-style), a
CA-only Gaussian baseline, and motif scaffolding.

States: ``trans`` (B, N, 3) CA positions in nanometres (Angstrom x ``info["scale"]``, 0.1, as
FrameFlow), zero centre of mass over the present residues; ``rots`` (B, N, 3, 3) residue
rotations; ``mask`` (B, N). Fields (process options of the recipe):

- ``trans``: the linear interpolant ``x_t = (1 - t) x0 + t eps`` (rectified flow) with a
  zero-centre-of-mass Gaussian prior, predicted clean (``x0``);
- ``rots`` (``frames: true``): the geodesic flow on SO(3) from the Haar prior, predicted clean.
  Training uses the linear geodesic interpolant (``train_noise: uniform``; ``igso3`` draws the
  training noise as the data rotation times IGSO(3) with ``igso3_eps``, as FrameFlow does);
  sampling uses FrameFlow's exponential rate schedule (``rot_rate``, 10 by default: rotations
  settle early), swapped in by :meth:`ProteinsModality.sample`.

``frames: false`` keeps ``trans`` only: the CA-only baseline (network ``ca``). Minibatch
optimal-transport pairing of noise and data is the core technique ``loss.techniques.immiscible``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from polydiff.plugin import (
    SO3,
    WEIGHTINGS,
    DataBundle,
    FieldSpec,
    GaussianProcess,
    GeodesicFlow,
    Masked,
    Modality,
    TensorStates,
    ZeroCoM,
    check_info,
    object_sizes,
    sample_igso3,
    sample_name,
    shared_dir,
    size_histogram,
    unique_stems,
)

from .geometry import Backbone, backbone_from_frames, frames_from_backbone
from .nets import ca_network, frame_network
from .synthetic import TOPOLOGIES, cached_backbones

SCALE = 0.1  # Angstrom -> nanometre


@WEIGHTINGS.register("frameflow", "FrameFlow's clipped velocity loss for the linear interpolant: the core's "
                     "'velocity' weighting, 1 / max(sigma, 0.1)^2 in x0-space")
def w_frameflow(c: Any, kind: str, sigma_min: float = 0.1, **options: float) -> Tensor:
    """FrameFlow's translation loss, kept under its recipe name: the core ``velocity`` weighting."""
    return WEIGHTINGS.get("velocity")(c, kind, sigma_min=sigma_min)


# -- processes ---------------------------------------------------------------------------------

class IGSO3Noise(SO3):
    """SO(3) whose 'prior' is IGSO(3) noise of concentration ``eps`` about the identity (drawn
    from the same standard normals as the Haar prior): the training noise of FrameFlow, which
    :class:`RotationFlow` composes with the data rotation."""

    def __init__(self, eps: float) -> None:
        self.eps = eps

    def prior(self, shape: tuple[int, ...], u: Tensor) -> Tensor:
        uni = 0.5 * (1 + torch.erf(u.flatten(-2)[..., :3].to(torch.float64) / math.sqrt(2)))
        return sample_igso3(tuple(shape[:-2]), self.eps, u=uni.clamp(1e-12, 1 - 1e-12)).to(u.dtype)


class RotationFlow(GeodesicFlow):
    """The training process of ``rots`` with IGSO(3) noise: the path runs from the data
    rotation ``R`` to ``R @ noise`` (noise ~ IGSO(3)), linearly in the geodesic distance."""

    def __init__(self, eps: float) -> None:
        super().__init__(IGSO3Noise(eps), prior="normal")

    def interpolate(self, x0: Tensor, x1: Tensor, t: Tensor) -> Tensor:
        return super().interpolate(x0, x0 @ x1, t)


def sampling_fields(fields: Mapping[str, FieldSpec], rate: float) -> dict[str, FieldSpec]:
    """The fields as sampled: ``rots`` from the Haar prior with the exponential rate ``rate``."""
    out = dict(fields)
    if "rots" in out:
        f = out["rots"]
        out["rots"] = FieldSpec(GeodesicFlow(SO3(), rate=rate), f.structure, "x0")
    return out


# -- data --------------------------------------------------------------------------------------

class FrameStates(TensorStates):
    """Padded frame states whose batches are cut to their longest chain (attention is O(N^2))."""

    def get_batch(self, index: Tensor) -> dict[str, Tensor]:
        out = super().get_batch(index)
        n = max(int(out["mask"].sum(1).max()), 1)
        return {k: v[:, :n] for k, v in out.items()}


def to_states(backbones: Sequence[Backbone], n_max: int, frames: bool = True) -> FrameStates:
    """Backbones -> padded states (centred, nanometres)."""
    B = len(backbones)
    trans = torch.zeros(B, n_max, 3, dtype=torch.float32)
    rots = torch.eye(3).repeat(B, n_max, 1, 1)
    mask = torch.zeros(B, n_max)
    for i, bb in enumerate(backbones):
        L = len(bb)
        if L > n_max:
            raise ValueError(f"backbone {bb.name!r} has {L} residues, more than the {n_max} of the data")
        ca = torch.as_tensor(bb.ca - bb.ca.mean(0))
        trans[i, :L] = (ca * SCALE).float()
        if frames:
            if not bb.full:
                raise ValueError(f"backbone {bb.name!r} is a CA trace: frames need N, CA and C atoms")
            R, _ = frames_from_backbone(bb.atoms)
            rots[i, :L] = R.float()
        mask[i, :L] = 1
    return FrameStates(trans=trans, rots=rots, mask=mask)


def _bundle(train: list[Backbone], val: list[Backbone], test: list[Backbone], info: dict[str, Any]) -> DataBundle:
    n_max = max(len(b) for b in train + val + test)
    info = {**info, "max_length": n_max, "scale": SCALE, "size_hist": size_histogram([len(b) for b in train])}
    return DataBundle(to_states(train, n_max), to_states(val, n_max) if val else None,
                      to_states(test, n_max) if test else None, check_info(info))


def synthetic_dataset(n: int = 1000, min_length: int = 40, max_length: int = 100, seed: int = 0,
                      test: int = 64, topologies: Sequence[str] = TOPOLOGIES) -> DataBundle:
    """The embedded default: ``n`` training backbones from :mod:`.synthetic` (helix bundles,
    hairpins, mixed folds) plus ``test`` held-out ones (another seed), offline. The held-out
    backbones are split in halves: the first ``test // 2`` are the validation split, the rest
    the test split (the reference of ``evaluate``: ``test: 4`` gives 2 reference backbones);
    ``test: 1`` serves as both."""
    if n < 1 or test < 1:
        raise ValueError(f"need n >= 1 and test >= 1, got n={n}, test={test}")
    topo = tuple(topologies)
    train = cached_backbones(n, min_length, max_length, seed, topo)
    held = cached_backbones(test, min_length, max_length, seed + 1_000_003, topo)
    half = len(held) // 2
    info = {"dataset": "synthetic", "n": n, "min_length": min_length, "max_length_option": max_length,
            "seed": seed, "topologies": list(topo)}
    return _bundle(train, held[:half] or held, held[half:], info)


def pdb_dataset(path: str | None = None, chains: Sequence[str] | None = None, min_length: int = 40,
                max_length: int = 256, test_fraction: float = 0.25, seed: int = 0) -> DataBundle:
    """Real backbones from a folder (or file) of PDB / mmCIF files, by default the shared
    benchmark proteins (``shared/data/proteins``). Chains are split at breaks; residues dropped
    for a missing backbone atom and the breaks are counted in one warning naming the files and
    the first residues; CA-only chains and segments outside ``[min_length, max_length]`` are
    skipped and counted (a warning)."""
    import warnings

    from .pdbio import dropped_summary, read_backbones, read_folder

    if path is None:
        base = shared_dir()
        if base is None:
            raise FileNotFoundError("no path given and no shared data folder found (set POLYDIFF_SHARED or pass "
                                    "data.path: a folder of PDB / mmCIF files)")
        path = str(Path(base) / "data" / "proteins")
    p = Path(path)
    if p.is_dir():
        bbs, reports = read_folder(p, chains=chains, split_breaks=True)
    else:
        bbs, report = read_backbones(p, chains=chains, split_breaks=True)
        reports = [report]
    if dropped := dropped_summary(reports):
        warnings.warn(f"{p}: {dropped}; the chains were split at the breaks (polydiff proteins check FILE shows "
                      "every problem)", stacklevel=2)
    keep = [b for b in bbs if b.full and min_length <= len(b) <= max_length]
    if len(keep) < len(bbs):
        warnings.warn(f"{p}: skipped {len(bbs) - len(keep)} of {len(bbs)} chains (CA-only traces or lengths outside "
                      f"[{min_length}, {max_length}])", stacklevel=2)
    if len(keep) < 2:
        raise ValueError(f"{p}: fewer than 2 usable chains ({len(keep)}) with full backbones of {min_length}-"
                         f"{max_length} residues")
    order = np.random.default_rng(seed).permutation(len(keep))
    n_test = max(1, round(test_fraction * len(keep)))
    test = [keep[i] for i in order[:n_test]]
    train = [keep[i] for i in order[n_test:]]
    info = {"dataset": "pdb", "path": str(p), "names": [b.name for b in train], "seed": seed}
    return _bundle(train, [], test, info)


# -- the modality ------------------------------------------------------------------------------

class ProteinsModality(Modality):
    """Protein backbones as residue frames (see the module docstring)."""

    name = "proteins"
    description = ("protein backbones: SE(3) flow matching over residue frames (IPA network, FrameFlow-style), "
                   "a CA-only baseline, motif scaffolding; PDB / mmCIF files")

    def datasets(self) -> dict[str, Callable[..., DataBundle]]:
        return {"synthetic": synthetic_dataset, "pdb": pdb_dataset}

    def networks(self) -> dict[str, Callable[..., nn.Module]]:
        return {"frames": frame_network, "ca": ca_network}

    def fields(self, info: Mapping[str, Any], frames: bool = True, rot_rate: float = 10.0,
               train_noise: str = "uniform", igso3_eps: float = 1.5) -> dict[str, FieldSpec]:
        """``trans`` (and ``rots`` when ``frames``); see the module docstring for the options.
        ``rot_rate`` is stored on the rotation process as ``sample_rate`` for :meth:`sample`."""
        if train_noise not in ("uniform", "igso3"):
            raise ValueError(f"train_noise must be 'uniform' or 'igso3', got {train_noise!r}")
        if rot_rate < 0:
            raise ValueError(f"rot_rate must be >= 0, got {rot_rate}")
        out = {"trans": FieldSpec(GaussianProcess("linear"), ZeroCoM("mask"), "x0")}
        if frames:
            proc = RotationFlow(igso3_eps) if train_noise == "igso3" else GeodesicFlow(SO3())
            proc.sample_rate = float(rot_rate)
            out["rots"] = FieldSpec(proc, Masked("mask"), "x0")
        return out

    def prior_state(self, n: int, info: Mapping[str, Any], generator: torch.Generator | None = None,
                    condition: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Lengths drawn from the training lengths, or given as the condition ``length`` (one
        int, or one per sample: ``--condition length=80``), padded to the longest (the CA-only
        model ignores ``rots``)."""
        condition = dict(condition or {})
        given = condition.pop("length", None)
        if condition:
            raise ValueError(f"unknown condition {next(iter(condition))!r}: backbone models are unconditional; the "
                             "only condition is length (motif scaffolding: polydiff proteins scaffold)")
        sizes = object_sizes(n, info, generator, given, name="length", minimum=2)
        n_max = int(sizes.max())
        mask = (torch.arange(n_max)[None] < sizes[:, None]).float()
        return {"trans": (n, n_max, 3), "rots": (n, n_max, 3, 3), "mask": mask}

    def sample(self, net: nn.Module, fields: Mapping[str, FieldSpec], spec: Mapping[str, Any], settings: Any,
               control: Any, *, seed: Tensor, device: torch.device) -> dict[str, Tensor]:
        """One sampling loop with the rotations' sampling process (Haar prior, exponential rate).
        With observed residues (motif scaffolding) translations are not re-centred: the motif
        keeps the coordinates it was given and the equivariant network builds around it."""
        from polydiff.plugin import controlled_sample

        spec = {k: v for k, v in spec.items() if k in fields or not isinstance(v, tuple)}
        rate = getattr(fields["rots"].process, "sample_rate", 10.0) if "rots" in fields else 0.0
        fields = sampling_fields(fields, rate)
        if getattr(control, "observed", None) is not None:
            fields["trans"] = FieldSpec(fields["trans"].process, Masked("mask"), fields["trans"].prediction)
        return controlled_sample(net, fields, spec, settings, control, seed=seed, device=device)

    def to_native(self, state: Mapping[str, Tensor], info: Mapping[str, Any]) -> list[Backbone]:
        """Full N, CA, C, O backbones (O from ideal geometry), or CA traces without ``rots``;
        coordinates rounded to the PDB format's 0.001 A, so objects equal their files."""
        scale = float(info.get("scale", SCALE))
        mask = state["mask"].bool()
        out = []
        for i in range(len(mask)):
            m = mask[i]
            ca = state["trans"][i][m].double() / scale
            if "rots" in state:
                atoms = backbone_from_frames(state["rots"][i][m].double(), ca)
                out.append(Backbone(np.round(atoms, 3), name=sample_name(info, i)))
            else:
                out.append(Backbone(np.round(ca.numpy()[:, None], 3), name=sample_name(info, i), atom_names=("CA",)))
        return out

    def native_types(self, info: Mapping[str, Any]) -> tuple[type, ...]:
        return (Backbone,)

    def from_native(self, objects: Sequence[Backbone], info: Mapping[str, Any]) -> dict[str, Tensor]:
        n_max = max(int(info.get("max_length", 0)), max(len(b) for b in objects))
        frames = all(b.full for b in objects)
        return dict(to_states(list(objects), n_max, frames).tensors)

    def write(self, objects: Sequence[Backbone], out_dir: Path) -> list[Path]:
        """One PDB file per backbone (``sample_0000.pdb``..., by name; names two backbones
        share get ``-2``... suffixes, so none overwrites another)."""
        from .pdbio import write_pdb

        out_dir = Path(out_dir)
        return [write_pdb(b, out_dir / f"{stem}.pdb")
                for b, stem in zip(objects, unique_stems([b.name for b in objects]), strict=True)]

    def read(self, path: Path) -> list[Backbone]:
        """A PDB / mmCIF file or a folder of them (every chain, one residue or more, as
        :meth:`write` writes them): dropped residues are counted in a warning, unusable chains
        and files skipped with one."""
        import warnings

        from .pdbio import dropped_summary, read_backbones, read_folder

        path = Path(path)
        if path.is_dir():
            bbs, reports = read_folder(path, min_residues=1)
        else:
            bbs, report = read_backbones(path, min_residues=1)
            reports = [report]
        if dropped := dropped_summary(reports, breaks=False):  # a break loses nothing (generated chains have many)
            warnings.warn(f"{path}: {dropped} (polydiff proteins check FILE shows every problem)", stacklevel=2)
        return bbs

    def evaluate(self, objects: Sequence[Backbone], reference: Sequence[Backbone],
                 info: Mapping[str, Any]) -> dict[str, float]:
        """Backbone geometry, Ramachandran distance, secondary structure (DSSP and P-SEA),
        radius of gyration, TM-score diversity and clusters, novelty against the training
        structures when ``info`` says how to rebuild them (see :mod:`.metrics`)."""
        from .metrics import evaluate_backbones

        return evaluate_backbones(list(objects), list(reference), train=_train_reference(info))

    def flags(self, objects: Sequence[Backbone], info: Mapping[str, Any]) -> dict[str, list[Any]]:
        from .metrics import per_backbone_flags

        return per_backbone_flags(list(objects))

    def plot(self, objects: Sequence[Backbone], path: Path, reference: Sequence[Backbone] | None = None
             ) -> Path | None:
        try:
            from .plot import plot_backbones
        except ImportError:
            return None
        return plot_backbones(list(objects), Path(path), None if reference is None else list(reference))

    def commands(self) -> dict[str, Any]:
        """``polydiff proteins scaffold CKPT --motif FILE --contig ...`` (motif scaffolding) and
        ``polydiff proteins check FILES`` (per-residue reports of PDB / mmCIF files)."""
        from .cli import COMMANDS

        return COMMANDS


def _train_reference(info: Mapping[str, Any], most: int = 100) -> list[Backbone] | None:
    """Up to ``most`` training structures rebuilt from ``info`` (novelty), None if unknown."""
    if info.get("dataset") == "synthetic":
        topo = tuple(info.get("topologies", TOPOLOGIES))
        n = min(int(info["n"]), most)
        return cached_backbones(n, int(info["min_length"]), int(info["max_length_option"]), int(info["seed"]), topo)
    if info.get("dataset") == "pdb" and Path(str(info.get("path", ""))).exists():
        import warnings

        from .pdbio import read_backbones, read_folder

        p = Path(info["path"])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the training run reported what it skipped
            bbs = read_folder(p, split_breaks=True)[0] if p.is_dir() else read_backbones(p, split_breaks=True)[0]
        names = set(info.get("names", []))
        return [b for b in bbs if b.name in names][:most] or None
    return None
