"""The ``md`` modality: energy-based diffusion for molecular dynamics (ScoreMD-style).

The network returns one energy ``E(x, t)`` per sample; the score is ``-grad E`` (the core's
:class:`~polydiff.plugin.EnergyModel`), trained by denoising score matching on a VP diffusion,
optionally with the Fokker-Planck residual regulariser (``loss.techniques.fp_weight``). One
model serves two uses: i.i.d. sampling by reverse diffusion (``polydiff sample``) and Langevin
dynamics with the forces ``-grad E(x, t_min)`` (:meth:`MDModality.evaluate_model`, or ASE's
integrators through :class:`.md.EnergyCalculator` from any ASE script).

Systems: the Müller-Brown potential and a 2-D double well (reference samples by long MCMC on
the exact energies, run here), and coarse-grained alanine dipeptide (5 backbone beads, the
10,000-frame trajectory of ``shared/data/md_alanine_dipeptide``). States: ``x`` (B, 2) for the
2-D systems; ``x`` (B, 5, 3) bead positions (Angstrom times ``info["scale"]``, zero centre of
mass) with ``mask`` (B, 5) for the peptide.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from polydiff.plugin import (
    DataBundle,
    EnergyModel,
    FieldSpec,
    GaussianProcess,
    Modality,
    Plain,
    TensorStates,
    ZeroCoM,
    atomic_write,
    check_info,
    package_recipes,
    read_npz,
    rotate,
    samples_file,
)

TOY_SCALE = 1.0
PEPTIDE_SCALE = 0.5  # Angstrom -> model units: the 5-bead peptide's spread comes close to 1


def toy_dataset(system: str = "muller_brown", n: int = 20_000, seed: int = 0, test: int = 20_000) -> DataBundle:
    """``n`` training and ``test`` reference samples of a 2-D system by long MCMC on its exact
    energy (:func:`.md.mcmc_reference`; two independent seeds)."""
    from .md import SYSTEMS, mcmc_reference

    if system not in SYSTEMS:
        raise ValueError(f"unknown system {system!r}; allowed: {', '.join(SYSTEMS)}")
    sys_ = SYSTEMS[system]
    train = mcmc_reference(sys_, n, seed=seed)
    ref = mcmc_reference(sys_, test, seed=seed + 1_000_003)
    info = {"dataset": system, "system": system, "kind": "2d", "dim": 2, "scale": TOY_SCALE, "n": n, "seed": seed,
            "test": test, "range": [list(map(float, r)) for r in sys_.range],
            "data_mean": (train.mean(0) * TOY_SCALE).tolist(), "data_std": float(train.std(0).mean() * TOY_SCALE)}

    def mk(a: np.ndarray) -> TensorStates:
        return TensorStates(x=torch.as_tensor(a * TOY_SCALE, dtype=torch.float32))

    return DataBundle(mk(train), mk(ref[: max(1, len(ref) // 10)]), mk(ref), check_info(info))


def muller_brown_dataset(n: int = 20_000, seed: int = 0, test: int = 20_000) -> DataBundle:
    """The Müller-Brown system (see :func:`toy_dataset`)."""
    return toy_dataset("muller_brown", n, seed, test)


def double_well_dataset(n: int = 20_000, seed: int = 0, test: int = 20_000) -> DataBundle:
    """The 2-D double well (see :func:`toy_dataset`)."""
    return toy_dataset("double_well", n, seed, test)


def alanine_dataset(path: str | None = None, test_fraction: float = 0.2, stride: int = 1) -> DataBundle:
    """Coarse-grained alanine dipeptide (5 beads): the first ``1 - test_fraction`` of the
    trajectory trains (every ``stride``-th frame), the last part is the reference (a later,
    correlated but unseen stretch of the same simulation)."""
    from .md import load_alanine

    xyz = load_alanine(path)
    cut = round(len(xyz) * (1 - test_fraction))
    if cut < 1 or cut >= len(xyz):
        raise ValueError(f"test_fraction {test_fraction} leaves no training or no test frames of {len(xyz)}")
    info = {"dataset": "alanine", "system": "alanine", "kind": "peptide", "scale": PEPTIDE_SCALE, "path": path,
            "test_fraction": test_fraction, "stride": stride, "beads": 5,
            "data_std": float((xyz[:cut] - xyz[:cut].mean(1, keepdims=True)).std() * PEPTIDE_SCALE)}

    def mk(a: np.ndarray) -> TensorStates:
        c = a - a.mean(1, keepdims=True)
        return TensorStates(x=torch.as_tensor(c * PEPTIDE_SCALE, dtype=torch.float32), mask=torch.ones(len(a), 5))

    train, test = xyz[:cut:stride], xyz[cut:]
    return DataBundle(mk(train), mk(test[: max(1, len(test) // 4)]), mk(test), check_info(info),
                      augment=rotate("x", mask="mask"))


def _energy(kind: str) -> Callable[..., nn.Module]:
    def build(info: Mapping[str, Any], fields: Mapping[str, FieldSpec], **options: Any) -> nn.Module:
        from .md_nets import ENERGY_NETWORKS

        return EnergyModel(ENERGY_NETWORKS[kind](info, fields, **options), fields)

    build.__name__ = f"{kind}_energy"
    build.__doc__ = f"The ``{kind}`` energy network of :mod:`.md_nets` as a score model (score = -grad E)."
    return build


def _coords(objects: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
    return np.stack([np.asarray(o, dtype=np.float64) for o in objects]) if len(objects) else np.zeros((0, 2))


def js_metrics(samples: np.ndarray, reference: np.ndarray, info: Mapping[str, Any], prefix: str = ""
               ) -> dict[str, float]:
    """The Jensen-Shannon divergence (nats) between ``samples`` and ``reference``: 100-bin 2-D
    histograms over the system's range for the toys, 64-bin (phi, psi) histograms for the
    peptide; plus, for the peptide, the share of frames with phi > 0."""
    from .md import SYSTEMS, histogram_js, phi_psi, ramachandran_js

    if samples.shape[1:] != reference.shape[1:]:
        raise ValueError(f"samples of shape {samples.shape[1:]} but reference of shape {reference.shape[1:]}")
    for name, a in (("samples", samples), ("reference", reference)):
        if len(a) == 0:
            raise ValueError(f"js_metrics: no {name} (a divergence needs points on both sides)")
    if info.get("kind") == "peptide" or samples.ndim == 3:
        out = {f"{prefix}js_phi_psi": ramachandran_js(phi_psi(samples), phi_psi(reference), bins=64),
               f"{prefix}phi_positive": float(np.mean(phi_psi(samples)[:, 0] > 0))}
        return out
    rng = SYSTEMS[info["system"]].range if info.get("system") in SYSTEMS else None
    return {f"{prefix}js": histogram_js(samples, reference, bins=100, range=rng)}


class MDModality(Modality):
    """Energy-based diffusion for molecular dynamics (see the module docstring)."""

    name = "md"
    description = ("energy-based diffusion for molecular dynamics (ScoreMD-style): one energy model for i.i.d. "
                   "sampling and Langevin MD (ASE); Müller-Brown, double well, coarse-grained alanine dipeptide")

    def recipes(self) -> dict[str, Path]:
        """The YAML recipes of ``md_recipes/`` (the package's ``recipes/`` are the molecules')."""
        return package_recipes(__package__, "md_recipes")

    def datasets(self) -> dict[str, Callable[..., DataBundle]]:
        return {"muller_brown": muller_brown_dataset, "double_well": double_well_dataset, "alanine": alanine_dataset}

    def networks(self) -> dict[str, Callable[..., nn.Module]]:
        return {"mlp": _energy("mlp"), "beads": _energy("beads")}

    def fields(self, info: Mapping[str, Any], schedule: str = "vp_linear") -> dict[str, FieldSpec]:
        """``x``: a VP diffusion (``schedule``) predicting the score (= -grad E)."""
        structure = ZeroCoM("mask") if info.get("kind") == "peptide" else Plain()
        return {"x": FieldSpec(GaussianProcess(schedule), structure, "score")}

    def prior_state(self, n: int, info: Mapping[str, Any], generator: torch.Generator | None = None,
                    condition: Mapping[str, Any] | None = None) -> dict[str, Any]:
        if condition:
            raise ValueError(f"unknown condition {next(iter(condition))!r}: energy models here are unconditional")
        if info.get("kind") == "peptide":
            return {"x": (n, 5, 3), "mask": torch.ones(n, 5)}
        return {"x": (n, int(info.get("dim", 2)))}

    def to_native(self, state: Mapping[str, Tensor], info: Mapping[str, Any]) -> list[np.ndarray]:
        """One coordinate array per sample: (2,) for the toys, (5, 3) Angstrom for the peptide."""
        x = state["x"].double().numpy() / float(info.get("scale", 1.0))
        return list(x)

    def from_native(self, objects: Sequence[np.ndarray], info: Mapping[str, Any]) -> dict[str, Tensor]:
        x = torch.as_tensor(_coords(objects) * float(info.get("scale", 1.0)), dtype=torch.float32)
        if x.dim() == 3:
            x = x - x.mean(1, keepdim=True)
            return {"x": x, "mask": torch.ones(x.shape[:2])}
        return {"x": x}

    def write(self, objects: Sequence[np.ndarray], out_dir: Path) -> list[Path]:
        """``samples.npz`` (``x``: (n, 2) or (n, 5, 3) Angstrom); the peptide also as a
        multi-frame extended XYZ (``samples.extxyz``, beads C N C C N) for ASE and viewers."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        x = _coords(objects)
        path = out_dir / "samples.npz"

        def save(tmp: Path) -> None:
            with open(tmp, "wb") as fh:
                np.savez(fh, x=x)

        paths = [atomic_write(path, save)]
        if x.ndim == 3:
            lines = []
            for i, frame in enumerate(x):
                lines += ["5", f'Properties=species:S:1:pos:R:3 name=sample_{i:05d}']
                lines += [f"{el} {p[0]:.6f} {p[1]:.6f} {p[2]:.6f}" for el, p in zip("CNCCN", frame)]
            paths.append(atomic_write(out_dir / "samples.extxyz", "\n".join(lines) + "\n"))
        return paths

    def read(self, path: Path) -> list[np.ndarray]:
        """An NPZ with ``x`` (or ``coordinates``), a folder holding ``samples.npz``, or a
        multi-frame XYZ / extended XYZ of 5-bead frames. Errors name the file: not a readable
        archive of plain arrays (:func:`polydiff.plugin.read_npz`), no coordinates, coordinates
        that are not finite real numbers of shape (n, 2) or (n, beads, 3), XYZ frames of
        different sizes."""
        path = samples_file(path, "samples.npz", (".npz", ".xyz", ".extxyz"))
        if path.suffix.lower() not in (".npz", ".xyz", ".extxyz"):
            raise ValueError(f"{path}: not a samples file (suffix {path.suffix!r}); MD samples are read from .npz "
                             "(array 'x' or 'coordinates') or .xyz / .extxyz files")
        if path.suffix.lower() == ".npz":
            z = read_npz(path, ValueError)
            key = "x" if "x" in z else "coordinates" if "coordinates" in z else None
            if key is None:
                raise ValueError(f"{path}: no array 'x' or 'coordinates' (has {', '.join(z) or 'none'})")
            x = z[key]
            if x.dtype.kind not in "iuf" or x.ndim not in (2, 3) or x.shape[-1] not in (2, 3) \
                    or not np.isfinite(x).all():
                raise ValueError(f"{path}: expected finite real coordinates (n, 2) or (n, beads, 3) in {key!r}, got "
                                 f"shape {x.shape} {x.dtype}")
            return list(x.astype(np.float64))
        from .molio import read_xyz

        frames = [m.positions for m in read_xyz(path)]
        for k, f in enumerate(frames):
            if f.shape != frames[0].shape:
                raise ValueError(f"{path}: frame {k + 1} has {len(f)} beads, frame 1 has {len(frames[0])}: the frames "
                                 "of one file are samples of one system")
        return frames

    def evaluate(self, objects: Sequence[np.ndarray], reference: Sequence[np.ndarray],
                 info: Mapping[str, Any]) -> dict[str, float]:
        """Jensen-Shannon divergence to the reference (see :func:`js_metrics`)."""
        info = dict(info)
        x = _coords(objects)
        if not info.get("system"):
            info["kind"] = "peptide" if x.ndim == 3 else "2d"
        return js_metrics(x, _coords(reference), info)

    def evaluate_model(self, generator: Any, *, num: int, seed: int, langevin: int = 100, chains: int = 200,
                       dt: float | None = None, friction: float = 1.0, t_min: float | None = None, every: int = 50,
                       compile: bool = False) -> dict[str, float]:
        """``polydiff evaluate CKPT [--option langevin=200 chains=64 dt=1e-3 compile=true]``: JS
        divergence of (a) ``num`` i.i.d. samples and (b) Langevin trajectories (``chains`` chains
        of ``langevin`` x ``every`` steps with the forces ``-grad E(x, t_min)``, kT = 1 in model units, started
        from held-out reference frames) against the reference, their gap, and the floor
        (``data_*``: ``num`` training samples scored the same way: what a perfect model gets
        with finite samples). ``dt`` defaults to 1e-2 for the 2-D systems and 4e-3 for the
        peptide (model units; stable and within the sampling noise of exact-force runs, see
        bench/results/molecules_md.md). ``compile``: the Langevin forces as one compiled graph
        (seconds to compile, then faster per step; worth it for long runs)."""
        from .md import langevin_torch

        for name, value in (("langevin", langevin), ("chains", chains), ("every", every)):
            if value < 1:
                raise ValueError(f"option {name}: expected a positive integer, got {value}")
        for name, value in (("dt", dt), ("friction", friction)):
            if value is not None and not value > 0:
                raise ValueError(f"option {name}: expected a positive number, got {value}")
        if dt is None:
            dt = 4e-3 if generator.info.get("kind") == "peptide" else 1e-2
        info = generator.info
        data = generator.modality.dataset(generator.config.data.name, **generator.config.data.options)
        ref_x = _coords(self.reference(data))
        iid = _coords(generator.generate(num, seed=seed))
        plain = js_metrics(iid, ref_x, info)  # the metrics of the samples, named as evaluate on their files names them
        out = {**plain, **{f"iid_{k}": v for k, v in plain.items()}}
        # the floor: training data of the same size scored the same way (finite-sample JS), evenly
        # spaced over the training set (the peptide's is a time-ordered trajectory: its first
        # ``num`` frames would be one correlated stretch)
        k = min(num, len(data.train))
        idx = torch.div(torch.arange(k) * len(data.train), k, rounding_mode="floor")
        train = _coords(self.to_native(data.train.get_batch(idx), info))
        out.update(js_metrics(train, ref_x, info, "data_"))
        traj = simulate(generator, ref_x, chains=chains, steps=langevin * every, every=every, dt=dt,
                        friction=friction, t_min=t_min, seed=seed, integrator=langevin_torch, compile=compile)
        out.update(js_metrics(traj.reshape(-1, *ref_x.shape[1:]), ref_x, info, "langevin_"))
        key = "js_phi_psi" if info.get("kind") == "peptide" else "js"
        out["langevin_minus_iid"] = out[f"langevin_{key}"] - out[f"iid_{key}"]
        return out

    def plot(self, objects: Sequence[np.ndarray], path: Path, reference: Sequence[np.ndarray] | None = None
             ) -> Path | None:
        try:
            from .md import plot_free_energy
        except ImportError:
            return None
        x = _coords(objects)
        sets = {"samples": x} if reference is None else {"reference": _coords(reference), "samples": x}
        return plot_free_energy(sets, Path(path), kind="ramachandran" if x.ndim == 3 else "2d")


def model_forces(generator: Any, t_min: float | None = None, compile: bool = False) -> Callable[[Tensor], Tensor]:
    """``x (B, ...) -> -grad E(x, t_min)`` in model units of a trained energy model (default
    ``t_min``: the process's smallest time). ``compile``: one compiled graph per call
    (:func:`polydiff.plugin.force_function`: seconds to compile once, faster per step)."""
    from polydiff.plugin import force_function

    if not isinstance(compile, bool):
        raise TypeError(f"compile must be True or False, got {compile!r}")
    proc = generator.fields["x"].process
    t = float(getattr(proc, "t_min", 1e-3) if t_min is None else t_min)
    peptide = generator.info.get("kind") == "peptide"
    fn = force_function(generator.net, t, compile=compile)

    def force(x: Tensor) -> Tensor:
        st = {"x": x.to(torch.float32)}
        if peptide:
            st["mask"] = torch.ones(x.shape[:2])
        return fn(st)["x"].to(x.dtype)

    return force


def simulate(generator: Any, starts: np.ndarray, *, chains: int, steps: int, every: int, dt: float, friction: float,
             t_min: float | None, seed: int, integrator: Callable[..., np.ndarray], compile: bool = False
             ) -> np.ndarray:
    """Langevin trajectories of a trained energy model from ``chains`` start frames (Angstrom /
    model coordinates converted by ``info["scale"]``); returns frames in data units.
    ``compile``: the forces as one compiled graph (:func:`model_forces`)."""
    scale = float(generator.info.get("scale", 1.0))
    rng = np.random.default_rng(seed)
    x0 = starts[rng.choice(len(starts), size=chains, replace=len(starts) < chains)] * scale
    if x0.ndim == 3:
        x0 = x0 - x0.mean(1, keepdims=True)
    force = model_forces(generator, t_min, compile=compile)
    traj = integrator(force, torch.as_tensor(x0, dtype=torch.float64), steps=steps, dt=dt, gamma=friction, kT=1.0,
                      seed=seed, every=every)
    return np.asarray(traj, dtype=np.float64) / scale
