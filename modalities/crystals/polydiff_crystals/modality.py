"""The ``crystals`` modality: periodic crystals as DiffCrysGen matrices (EDM score diffusion
with a 1-D U-Net) or as a symmetry-aware periodic state (fractional coordinates on the flat
torus, lattice as a Gaussian field, element types as a masked discrete flow), on the same data,
metrics and files.

``data.representation`` picks the state:

- ``matrix`` (default): ``x`` (B, R, C), one fixed-size matrix per crystal (:mod:`.matrix`:
  element one-hots of up to 3 elements, lattice parameters, fractional coordinates and
  site-element occupancy of up to 20 sites), MinMax-scaled per row to [-1, 1];
- ``periodic``: ``frac`` (B, N, 3) in [0, 1), ``lattice`` (B, 6) = standardised (log a, log b,
  log c, alpha, beta, gamma), ``types`` (B, N) element classes and ``mask`` (B, N); batches are
  cut to their largest crystal.

Conditions (``data.conditions``): ``spacegroup`` (class 1-230), ``band_gap`` and
``formation_energy`` (scalars, eV and eV/atom), one (B,) entry each (a condition a user leaves
out of ``generate``'s ``condition``, or gives as None, is unconditional); condition dropout in the
loss gives classifier-free guidance, the noise-aware regressors of :mod:`.guidance` gradient
guidance. ``data.wyckoff: true`` adds every equivalent Wyckoff relabelling of each training
crystal (:mod:`.wyckoff`, from the space group's normaliser) as a variant that a seeded
augmentation picks per sample and step.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from polydiff.plugin import (
    Absorbing,
    DataBundle,
    FieldSpec,
    FlatTorus,
    GaussianProcess,
    GeodesicFlow,
    Masked,
    Modality,
    Plain,
    TensorStates,
    check_info,
    natural_key,
    object_sizes,
    sample_name,
    size_histogram,
)
from polydiff.plugin import condition_values as given_values

REPRESENTATIONS = ("matrix", "periodic")
# Sampling moves the periodic model's fractional coordinates at this exponential rate (FrameFlow's
# rate schedule for rotations, FlowMM's inference annealing): each step shrinks the remaining
# distance to the predicted clean coordinates by exp(-rate dt) instead of dt / t, so atoms commit to
# sites while the network still sees noisy neighbours. At the linear rate (0) the early predictions
# are close to the input and atoms freeze where the prior dropped them: on perov_5 after 5 minutes of
# training, COV-R 0.02 at rate 0 against 0.20 at rate 10 with the same network (bench/crystals.py,
# part rates).
FRAC_RATE = 10.0
SCALAR_CONDITIONS = ("band_gap", "formation_energy")
CONDITIONS = ("spacegroup", *SCALAR_CONDITIONS)
# CDVAE's coverage cutoffs per benchmark (structure, composition fingerprint distances)
CUTOFFS = {"perov_5": "perovskite", "carbon_24": "carbon"}


class Undecodable(NamedTuple):
    """A generated matrix that is not a crystal, with the reason (kept so files and metrics
    count it: it is written as a summary row and is invalid in every metric)."""

    name: str
    reason: str


# -- structures -> states --------------------------------------------------------------------------

def spacegroup_of(structure: Any, symprec: float = 0.1) -> int:
    """The space-group number (spglib via pymatgen, ``symprec`` A), cached in the structure's
    properties; 1 when the analysis fails."""
    props = structure.properties
    if "spacegroup" not in props:
        from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

        try:
            props["spacegroup"] = int(SpacegroupAnalyzer(structure, symprec=symprec).get_space_group_number())
        except Exception:  # spglib gives up on some distorted cells: P1
            props["spacegroup"] = 1
    return int(props["spacegroup"])


def _name(structure: Any, i: int) -> str:
    return str(structure.properties.get("name", f"crystal_{i}"))


def condition_values(structures: Sequence[Any], keys: Sequence[str]) -> dict[str, Tensor]:
    """(B,) condition entries: space-group numbers (long) and scalar properties (float); a
    missing property is an error naming the crystal."""
    out = {}
    for k in keys:
        if k == "spacegroup":
            out[k] = torch.tensor([spacegroup_of(s) for s in structures], dtype=torch.long)
            continue
        vals = []
        for i, s in enumerate(structures):
            v = s.properties.get(k)
            if v is None or not np.isfinite(float(v)):
                raise ValueError(f"crystal {_name(s, i)!r} has no {k!r} to condition on (it has "
                                 f"{sorted(s.properties)})")
            vals.append(float(v))
        out[k] = torch.tensor(vals, dtype=torch.float32)
    return out


def condition_specs(structures: Sequence[Any], keys: Sequence[str], basis: int = 16) -> dict[str, Any]:
    """ConditionEmbedding specs: space group as a class, properties as Gaussian expansions over
    the 0.5-99.5 % range of the training values (their percentiles kept for targets)."""
    out: dict[str, Any] = {}
    for k in keys:
        if k not in CONDITIONS:
            raise ValueError(f"unknown condition {k!r}; allowed: {', '.join(CONDITIONS)}")
        if k == "spacegroup":
            out[k] = {"kind": "class", "num_classes": 231}
            continue
        v = condition_values(structures, [k])[k].double().numpy()
        lo, hi = np.percentile(v, [0.5, 99.5])
        out[k] = {"kind": "scalar", "low": float(lo), "high": float(hi), "basis": basis, "mean": float(v.mean()),
                  "std": float(v.std()), "p10": float(np.percentile(v, 10)), "p90": float(np.percentile(v, 90))}
    return out


def elements_of(structures: Sequence[Any]) -> list[str]:
    """The elements present, by atomic number."""
    from pymatgen.core import Element

    zs = sorted({sp.Z for s in structures for sp in s.composition.elements})
    return [Element.from_Z(z).symbol for z in zs]


def _lattice_features(structure: Any) -> np.ndarray:
    a, b, c, al, be, ga = structure.lattice.parameters
    return np.array([np.log(a), np.log(b), np.log(c), al, be, ga])


class PeriodicStates(TensorStates):
    """Padded periodic crystals; a training batch is cut to its largest crystal (single items
    keep the full padding, so they stack)."""

    def get_batch(self, index: Tensor, cut: bool = True) -> dict[str, Tensor]:
        out = super().get_batch(index)
        if cut:
            n = max(int(out["mask"].sum(1).max()), 1)
            for k in ("frac", "types", "mask"):
                out[k] = out[k][:, :n]
            for k in ("frac_variants", "types_variants"):
                if k in out:
                    out[k] = out[k][:, :, :n]
        return out


def periodic_states(structures: Sequence[Any], info: Mapping[str, Any], conditions: Sequence[str] = (),
                    variants: Sequence[Sequence[Any]] | None = None) -> PeriodicStates:
    """Structures (and optionally, per structure, equal-size equivalent descriptions) -> padded
    periodic states with standardised lattice parameters."""
    enc = {s: i for i, s in enumerate(info["elements"])}
    n_max = int(info["max_atoms"])
    mean, std = np.asarray(info["lattice_mean"]), np.asarray(info["lattice_std"])

    def one(s: Any, i: int) -> tuple[np.ndarray, np.ndarray]:
        if len(s) > n_max:
            raise ValueError(f"crystal {_name(s, i)!r} has {len(s)} sites, more than the {n_max} of the data")
        try:
            ty = [enc[sp.symbol] for sp in s.species]
        except KeyError as err:
            raise ValueError(f"crystal {_name(s, i)!r}: element {err.args[0]!r} is not in the model's elements "
                             f"{list(enc)}") from None
        f = np.zeros((n_max, 3))
        f[: len(s)] = np.mod(s.frac_coords, 1.0)
        t = np.zeros(n_max, dtype=np.int64)
        t[: len(s)] = ty
        return f, t

    B = len(structures)
    frac, types, mask = np.zeros((B, n_max, 3)), np.zeros((B, n_max), dtype=np.int64), np.zeros((B, n_max))
    lat = np.zeros((B, 6))
    for i, s in enumerate(structures):
        frac[i], types[i] = one(s, i)
        mask[i, : len(s)] = 1
        lat[i] = (_lattice_features(s) - mean) / std
    tensors = {"frac": torch.tensor(frac, dtype=torch.float32), "types": torch.tensor(types),
               "mask": torch.tensor(mask, dtype=torch.float32), "lattice": torch.tensor(lat, dtype=torch.float32),
               **condition_values(structures, conditions)}
    if variants is not None:
        k_max = max(len(v) for v in variants)
        fv = np.repeat(frac[:, None], k_max, 1)
        tv = np.repeat(types[:, None], k_max, 1)
        for i, vs in enumerate(variants):
            for k, v in enumerate(vs):
                fv[i, k], tv[i, k] = one(v, i)
        tensors["frac_variants"] = torch.tensor(fv, dtype=torch.float32)
        tensors["types_variants"] = torch.tensor(tv)
        tensors["n_variants"] = torch.tensor([len(v) for v in variants])
    return PeriodicStates(**tensors)


def matrix_states(structures: Sequence[Any], info: Mapping[str, Any], conditions: Sequence[str] = (),
                  variants: Sequence[Sequence[Any]] | None = None) -> TensorStates:
    """Structures -> scaled DiffCrysGen matrices ``x`` (every structure must encode: filter
    with :func:`encodable` first)."""
    from .matrix import MatrixSpec, RowScaler, encode

    spec, scaler = MatrixSpec.from_dict(info["matrix"]), RowScaler.from_dict(info["scaler"])

    def enc(ss: Sequence[Any]) -> Tensor:
        return torch.tensor(scaler.transform(np.stack([encode(s, spec) for s in ss])), dtype=torch.float32)

    tensors = {"x": enc(structures), **condition_values(structures, conditions)}
    if variants is not None:
        k_max = max(len(v) for v in variants)
        xv = tensors["x"][:, None].repeat(1, k_max, 1, 1)
        for i, vs in enumerate(variants):
            if len(vs) > 1:
                xv[i, : len(vs)] = enc(vs)
        tensors["x_variants"] = xv
        tensors["n_variants"] = torch.tensor([len(v) for v in variants])
    return TensorStates(**tensors)


def encodable(structures: Sequence[Any], info: Mapping[str, Any], what: str) -> list[Any]:
    """The structures the matrix holds (<= max sites and elements, Z <= 94); the others are
    counted and reported."""
    from .matrix import MatrixError, MatrixSpec, encode

    spec, keep, bad = MatrixSpec.from_dict(info["matrix"]), [], []
    for s in structures:
        try:
            encode(s, spec)
            keep.append(s)
        except MatrixError as err:
            bad.append(str(err))
    if bad:
        warnings.warn(f"{what}: {len(bad)} of {len(structures)} crystals do not fit the matrix and are skipped "
                      f"(first: {bad[0]})", stacklevel=3)
    if not keep:
        raise ValueError(f"{what}: no crystal fits the matrix representation ({bad[0] if bad else 'empty'})")
    return keep


def pick_variants(keys: Sequence[str]) -> Callable[[dict[str, Tensor], torch.Generator], dict[str, Tensor]]:
    """The seeded Wyckoff augmentation: each sample of a batch takes one of its equivalent
    descriptions (``<key>_variants``, ``n_variants`` of them), drawn with the step's generator."""

    def augment(batch: dict[str, Tensor], generator: torch.Generator) -> dict[str, Tensor]:
        out = dict(batch)
        n = out.pop("n_variants")
        u = torch.rand(len(n), generator=generator)
        k = (u * n.to(u.dtype)).long().clamp(max=n - 1).to(n.device)
        rows = torch.arange(len(n), device=n.device)
        for key in keys:
            out[key] = out.pop(f"{key}_variants")[rows, k]
        return out

    return augment


def strip_variants(batch: dict[str, Tensor]) -> dict[str, Tensor]:
    """A batch without the augmentation's variant tables (for evaluation batches)."""
    return {k: v for k, v in batch.items() if not k.endswith("_variants") and k != "n_variants"}


# -- bundles -----------------------------------------------------------------------------------------

def make_bundle(train: Sequence[Any], test: Sequence[Any], info: Mapping[str, Any], *,
                representation: str = "matrix", conditions: Sequence[str] = (), wyckoff: bool = False,
                max_sites: int = 20, max_elements: int = 3, elements: Sequence[str] | None = None) -> DataBundle:
    """A :class:`DataBundle` of crystals in one representation (val = test), with everything
    sampling, decoding and evaluation read from ``info``."""
    if representation not in REPRESENTATIONS:
        raise ValueError(f"representation must be one of {', '.join(REPRESENTATIONS)}, got {representation!r}")
    conditions = list(conditions)
    info = {**info, "representation": representation, "wyckoff": bool(wyckoff)}
    train, test = list(train), list(test)
    if representation == "matrix":
        from .matrix import MatrixSpec

        info["matrix"] = MatrixSpec(max_elements=max_elements, max_sites=max_sites).to_dict()
        train = encodable(train, info, "training crystals")
        test = encodable(test, info, "test crystals")
    variants = None
    if wyckoff:
        train, variants = wyckoff_variants(train, max_sites if representation == "matrix" else None)
    if len(train) < 1 or len(test) < 1:
        raise ValueError(f"need training and test crystals, got {len(train)} and {len(test)}")
    info["conditions"] = condition_specs(train, conditions)
    info["train_names"] = [_name(s, i) for i, s in enumerate(train)]
    if representation == "matrix":
        from .matrix import MatrixSpec, RowScaler, encode

        spec = MatrixSpec.from_dict(info["matrix"])
        pool = [v for vs in variants for v in vs] if variants else train
        info["scaler"] = RowScaler.fit(np.stack([encode(s, spec) for s in pool])).to_dict()
        make, keys = matrix_states, ("x",)
    else:
        feats = np.stack([_lattice_features(s) for s in train])
        pool = [v for vs in variants for v in vs] if variants else train
        info.update(elements=list(elements or elements_of(train + test)),
                    max_atoms=max(len(s) for s in pool + test),
                    size_hist=size_histogram([len(s) for s in train]),
                    lattice_mean=feats.mean(0).tolist(), lattice_std=np.maximum(feats.std(0), 1e-3).tolist())
        info["vocabularies"] = {"types": list(info["elements"])}
        make, keys = periodic_states, ("frac", "types")
    info = check_info(info)
    test_states = make(test, info, conditions)
    return DataBundle(make(train, info, conditions, variants), test_states, test_states, info,
                      augment=pick_variants(keys) if variants else None)


def wyckoff_variants(structures: Sequence[Any], max_sites: int | None) -> tuple[list[Any], list[list[Any]]]:
    """Each crystal's conventional standard cell and its equivalent Wyckoff relabellings
    (identity first); crystals whose conventional cell exceeds ``max_sites`` keep their own
    cell only (counted and reported)."""
    from .wyckoff import augment_all

    base, variants, kept_own = [], [], 0
    for s in structures:
        try:
            vs = [v for v, _ in augment_all(s)]
        except Exception:  # symmetry analysis failed: no relabelling
            vs = []
        if not vs or (max_sites is not None and len(vs[0]) > max_sites):
            vs, kept_own = [s], kept_own + 1
        for v in vs:
            v.properties.update(s.properties)
        base.append(vs[0])
        variants.append(vs)
    if kept_own:
        warnings.warn(f"Wyckoff augmentation: {kept_own} of {len(structures)} crystals keep their own cell only "
                      f"(symmetry analysis failed or the conventional cell has more than {max_sites} sites)",
                      stacklevel=3)
    return base, variants


def _split(items: list[Any], test_fraction: float, seed: int) -> tuple[list[Any], list[Any]]:
    order = np.random.default_rng(seed).permutation(len(items))
    n_test = max(1, round(test_fraction * len(items)))
    return [items[i] for i in order[n_test:]], [items[i] for i in order[:n_test]]


def default_dataset(n: int | None = None, representation: str = "matrix", seed: int = 0, test_fraction: float = 0.1,
                    conditions: Sequence[str] = (), wyckoff: bool = False, max_sites: int = 20,
                    max_elements: int = 3) -> DataBundle:
    """The embedded default: pymatgen's bundled AFLOW prototypes with seeded element
    substitutions (:func:`.data.default_crystals`), split 90 / 10."""
    from .data import default_crystals

    structs = default_crystals(n, seed=seed, max_sites=max_sites, max_elements=max_elements)
    train, test = _split(structs, test_fraction, seed)
    info = {"dataset": "default", "n": n, "seed": seed, "test_fraction": test_fraction, "cutoffs": "mp20",
            "max_sites": max_sites, "max_elements": max_elements}
    return make_bundle(train, test, info, representation=representation, conditions=conditions, wyckoff=wyckoff,
                       max_sites=max_sites, max_elements=max_elements)


def _cdvae(dataset: str) -> Callable[..., DataBundle]:
    def build(n: int | None = None, representation: str = "matrix", seed: int = 0, test_n: int | None = 1000,
              conditions: Sequence[str] = (), wyckoff: bool = False, min_band_gap: float | None = None,
              path: str | None = None) -> DataBundle:
        from .data import cdvae_crystals

        folder = None if path is None else Path(path)
        train = cdvae_crystals(dataset, "val", path=None if folder is None else folder / "val.csv")
        test = cdvae_crystals(dataset, "test", n=test_n, path=None if folder is None else folder / "test.csv")
        if min_band_gap is not None:
            train = [s for s in train if float(s.properties.get("band_gap", -1.0)) > min_band_gap]
        if n is not None:
            order = np.random.default_rng(seed).permutation(len(train))[:n]
            train = [train[i] for i in sorted(order)]
        info = {"dataset": dataset, "n": n, "seed": seed, "test_n": test_n, "path": path, "min_band_gap": min_band_gap,
                "cutoffs": CUTOFFS[dataset], "split": "train = CDVAE val.csv, test = CDVAE test.csv"}
        # the matrix sized to the benchmark: Perov-5 has 5 sites of up to 5 elements, Carbon-24 up to 24 sites of C
        sites, elements = (5, 5) if dataset == "perov_5" else (24, 1)
        return make_bundle(train, test, info, representation=representation, conditions=conditions, wyckoff=wyckoff,
                           max_sites=sites if not wyckoff else 20, max_elements=elements)

    build.__name__ = dataset
    build.__doc__ = (f"CDVAE's {dataset} benchmark from shared/data/crystals_cdvae (its train.csv is not in our copy: "
                     "we train on its val split and evaluate against its test split; ``n`` seeded training crystals, "
                     "``test_n`` test crystals, ``min_band_gap`` keeps crystals with a larger band gap).")
    return build


def random_dataset(n: int = 200, representation: str = "periodic", seed: int = 0, test_fraction: float = 0.1,
                   elements: Sequence[str] = ("Si", "O"), max_sites: int = 12, wyckoff: bool = False) -> DataBundle:
    """Symmetric random crystals from pyxtal (random space group and composition of
    ``elements``, at most ``max_sites`` sites; seeded), split 90 / 10."""
    from .data import random_crystals

    train, test = _split(random_crystals(n, seed=seed, elements=tuple(elements), max_sites=max_sites), test_fraction,
                         seed)
    info = {"dataset": "random", "n": n, "seed": seed, "test_fraction": test_fraction, "cutoffs": "mp20"}
    return make_bundle(train, test, info, representation=representation, wyckoff=wyckoff, max_sites=max_sites,
                       max_elements=len(elements))


def files_dataset(path: str, representation: str = "matrix", seed: int = 0, test_fraction: float = 0.1,
                  conditions: Sequence[str] = (), wyckoff: bool = False, max_sites: int = 20,
                  max_elements: int = 3, niggli: bool = True) -> DataBundle:
    """Users' crystals: a CIF / POSCAR / extXYZ file, a CSV of CIF strings with property
    columns, or a folder of them (:func:`.crystal_io.read_structures`), split 90 / 10.
    ``max_sites`` and ``max_elements`` size the matrix representation (crystals that do not
    fit are skipped and counted); the periodic representation ignores ``max_elements``.
    ``niggli`` (default) puts every crystal in its Niggli-reduced cell as CDVAE builds its data
    (:func:`.data.cdvae_canonical`): the networks read lattice parameters and fractional
    coordinates in the basis given, so one crystal written in two bases would be two inputs."""
    from .crystal_io import read_structures
    from .data import reduced_cells

    if max_sites < 1 or max_elements < 1:
        raise ValueError(f"max_sites and max_elements must be >= 1, got {max_sites}, {max_elements}")
    structures = read_structures(Path(path))
    if niggli:
        structures = reduced_cells(structures, Path(path))
    train, test = _split(structures, test_fraction, seed)
    info = {"dataset": "files", "path": str(path), "seed": seed, "test_fraction": test_fraction, "cutoffs": "mp20",
            "max_sites": max_sites, "max_elements": max_elements, "niggli": niggli}
    return make_bundle(train, test, info, representation=representation, conditions=conditions, wyckoff=wyckoff,
                       max_sites=max_sites, max_elements=max_elements)


# -- the modality --------------------------------------------------------------------------------------

def _network(kind: str) -> Callable[..., nn.Module]:
    def build(info: Mapping[str, Any], fields: Mapping[str, FieldSpec], freeze: float = 0.0, **options: Any
              ) -> nn.Module:
        want = "matrix" if kind == "unet" else "periodic"
        if info.get("representation") != want:
            raise ValueError(f"network {kind!r} needs data.representation: {want} (the data is "
                             f"{info.get('representation')!r})")
        if kind == "unet":
            from .unet import MatrixDenoiser as Net
        else:
            from .periodic import PeriodicNet as Net
        net = Net(info, fields, **options)
        if freeze:
            from .periodic import freeze_early

            freeze_early(net, freeze)
        return net

    build.__name__ = f"{kind}_network"
    build.__doc__ = (f"The ``{kind}`` network; ``freeze`` > 0 freezes that fraction of its early layers (transfer "
                     "learning with ``train.init``).")
    return build


class CrystalsModality(Modality):
    """Periodic crystals (see the module docstring)."""

    name = "crystals"
    description = ("periodic crystals: DiffCrysGen matrix diffusion and a periodic torus / lattice / element flow; "
                   "Wyckoff augmentation, property transfer learning; CDVAE metrics; CIF / POSCAR / extXYZ")

    def datasets(self) -> dict[str, Callable[..., DataBundle]]:
        return {"default": default_dataset, "perov_5": _cdvae("perov_5"), "carbon_24": _cdvae("carbon_24"),
                "files": files_dataset, "random": random_dataset}

    def networks(self) -> dict[str, Callable[..., nn.Module]]:
        return {"unet": _network("unet"), "periodic": _network("periodic")}

    def network(self, name: str | None, info: Mapping[str, Any], fields: Mapping[str, FieldSpec],
                **options: Any) -> nn.Module:
        if name is None:
            name = "unet" if info.get("representation", "matrix") == "matrix" else "periodic"
        return super().network(name, info, fields, **options)

    def fields(self, info: Mapping[str, Any], **process: Any) -> dict[str, FieldSpec]:
        """``matrix``: ``x`` under EDM's schedule (``process`` options are EDM's: sigma_min,
        sigma_max, sigma_data, p_mean, p_std, rho); ``periodic``: flow matching with ``frac`` on
        the flat torus (geodesic interpolant to the uniform prior), ``lattice`` on the linear
        interpolant and ``types`` a masked discrete flow; ``frac_rate`` (default 10) is the
        exponential rate with which sampling moves the coordinates (see :data:`FRAC_RATE`)."""
        if info["representation"] == "matrix":
            return {"x": FieldSpec(GaussianProcess("edm", **process), Plain(), "x0")}
        unknown = sorted(set(process) - {"frac_rate"})
        if unknown:
            raise ValueError(f"the periodic representation takes only the process option frac_rate (got "
                             f"{', '.join(unknown)})")
        rate = float(process.get("frac_rate", FRAC_RATE))
        if not rate >= 0:
            raise ValueError(f"process.frac_rate must be >= 0, got {rate}")
        frac = GeodesicFlow(FlatTorus(), sample_rate=rate)  # training keeps the linear interpolant
        return {"frac": FieldSpec(frac, Masked("mask"), "x0"),
                "lattice": FieldSpec(GaussianProcess("linear"), Plain(), "x0"),
                "types": FieldSpec(Absorbing(len(info["elements"])), Masked("mask"))}

    def prior_state(self, n: int, info: Mapping[str, Any], generator: torch.Generator | None = None,
                    condition: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Shapes of ``n`` new crystals; atom counts (periodic) from the training histogram or
        given (``--condition atoms=5``); conditions ``spacegroup=225``, ``band_gap=1.5``... (one
        value, or one per sample), with a warning for a size or a property outside the training
        data. A condition left out (or None) is unconditional: the null class or value."""
        condition = dict(condition or {})
        given = condition.pop("atoms", None)
        known = info.get("conditions", {})
        unknown = [k for k in condition if k not in known]
        if unknown:
            raise ValueError(f"unknown condition {unknown[0]!r}: this model is conditioned on "
                             f"{sorted(known) or 'nothing'}" + (" (and the atom count, 'atoms')"
                                                               if info["representation"] == "periodic" else ""))
        spec: dict[str, Any] = {}
        if info["representation"] == "matrix":
            if given is not None:
                raise ValueError("the matrix representation generates its own site count: drop 'atoms'")
            from .matrix import MatrixSpec

            spec["x"] = (n, *MatrixSpec.from_dict(info["matrix"]).shape)
        else:
            sizes = object_sizes(n, info, generator, given, name="atoms")
            N = max(int(sizes.max()), int(info["max_atoms"]))  # padded as the data's items
            spec.update(frac=(n, N, 3), lattice=(n, 6), types=(n, N),
                        mask=(torch.arange(N)[None] < sizes[:, None]).float())
        for k, s in known.items():
            v, cls = condition.get(k), s["kind"] == "class"
            if v is None:  # the null class (-1) or value
                spec[k] = torch.full((n,), -1) if cls else torch.full((n,), float("nan"))
            elif cls:  # space groups are numbered 1..230
                spec[k] = given_values(n, v, name=k, kind="class", low=1 if k == "spacegroup" else 0,
                                       high=int(s["num_classes"]) - 1)
            else:
                spec[k] = given_values(n, v, name=k, trained=(s["low"], s["high"]))
        return spec

    def to_native(self, state: Mapping[str, Tensor], info: Mapping[str, Any]) -> list[Any]:
        """pymatgen Structures (an :class:`Undecodable` with its reason where a matrix is not a
        crystal)."""
        if info["representation"] == "matrix":
            from .matrix import MatrixSpec, RowScaler, decode

            spec, scaler = MatrixSpec.from_dict(info["matrix"]), RowScaler.from_dict(info["scaler"])
            mats = scaler.inverse(state["x"].double().cpu().numpy())
            out = []
            for b, m in enumerate(mats):
                s, reason = decode(m, spec)
                out.append(Undecodable(sample_name(info, b), reason or "undecodable") if s is None else s)
                if s is not None:
                    s.properties["name"] = sample_name(info, b)
        else:
            out = periodic_to_structures(state, info)
        return [o if isinstance(o, Undecodable) else written_or_undecodable(o, sample_name(info, b))
                for b, o in enumerate(out)]

    def native_types(self, info: Mapping[str, Any]) -> tuple[type, ...]:
        from pymatgen.core import Structure

        return (Structure, Undecodable)

    def from_native(self, objects: Sequence[Any], info: Mapping[str, Any]) -> dict[str, Tensor]:
        structs = [s for s in objects if not isinstance(s, Undecodable)]
        if info["representation"] == "matrix":
            return matrix_states(encodable(structs, info, "crystals"), info).get_batch(torch.arange(len(structs)))
        n_max = max(int(info.get("max_atoms", 0)), max(len(s) for s in structs))
        return periodic_states(structs, {**info, "max_atoms": n_max}).get_batch(torch.arange(len(structs)))

    def write(self, objects: Sequence[Any], out_dir: Path) -> list[Path]:
        """One CIF per crystal and ``summary.csv`` (formula, space group, density, validity
        flags; undecodable samples as rows with their reason)."""
        from .crystal_io import write_structures

        objs = list(objects)
        structs = [o for o in objs if not isinstance(o, Undecodable)]
        flags = self.flags(structs, {})
        keep = ("comp_valid", "struct_valid", "valid", "min_distance")
        paths = write_structures(structs, Path(out_dir), flags={k: flags[k] for k in keep})
        bad = [o for o in objs if isinstance(o, Undecodable)]
        if bad:
            import csv
            import io

            from polydiff.plugin import atomic_write

            buf = io.StringIO()
            table = csv.writer(buf, lineterminator="\n")
            table.writerow(["name", "reason"])
            table.writerows([o.name, o.reason] for o in bad)
            paths.append(atomic_write(Path(out_dir) / "undecodable.csv", buf.getvalue()))
        return paths

    def read(self, path: Path) -> list[Any]:
        """A CIF / POSCAR / extXYZ / CSV-of-CIFs file or a folder of them; a samples folder's
        ``undecodable.csv`` rows come back as :class:`Undecodable` (they stay invalid samples),
        all in the written order."""
        from .crystal_io import read_structures, structure_name

        path = Path(path)
        bad = path / "undecodable.csv"
        rows = _read_undecodable(bad) if path.is_dir() and bad.is_file() else []
        structs: list[Any] = read_structures(path) if not rows or any(path.glob("*.cif")) else []
        if not rows:
            return structs
        # undecodable samples back in their places among the others: the written order
        return sorted([*structs, *rows], key=lambda s: natural_key(s.name if isinstance(s, Undecodable)
                                                                   else structure_name(s, "")))

    def evaluate(self, objects: Sequence[Any], reference: Sequence[Any], info: Mapping[str, Any]) -> dict[str, float]:
        """CDVAE's validity, coverage (COV-R / COV-P, AMSD / AMCD) and property Wasserstein
        distances, uniqueness, novelty against the training crystals (when ``info`` names
        them) and space-group distribution distance. (Hit rates of conditioned runs need the
        target window and a property judge: ``bench/crystals.py`` measures them.)"""
        from .metrics import evaluate_crystals

        gen = [None if isinstance(o, Undecodable) else o for o in objects]
        return evaluate_crystals(gen, list(reference), cutoffs=info.get("cutoffs", "mp20"), train=_train(info))

    def flags(self, objects: Sequence[Any], info: Mapping[str, Any]) -> dict[str, list[Any]]:
        from .metrics import per_crystal_flags

        return per_crystal_flags([None if isinstance(o, Undecodable) else o for o in objects])

    def commands(self) -> dict[str, Any]:
        """``polydiff crystals regressor`` (property predictor, transfer learning) and
        ``polydiff crystals wyckoff`` (letters and equivalent relabellings of a file's crystals)."""
        from .cli import COMMANDS

        return COMMANDS

    def plot(self, objects: Sequence[Any], path: Path, reference: Sequence[Any] | None = None) -> Path | None:
        try:
            from .plot import plot_crystals
        except ImportError:
            return None
        structs = [o for o in objects if not isinstance(o, Undecodable)]
        return plot_crystals(structs, Path(path), None if reference is None else list(reference))


def as_written(structure: Any) -> Any:
    """The structure as its CIF file reads back (8 decimals, the CIF parser's site order and
    snapping of coordinates near 1/3, 1/2...), so generated objects equal their files."""
    from pymatgen.io.cif import CifWriter

    from .crystal_io import parse_cif

    out = parse_cif(str(CifWriter(structure)))
    out.properties.update(structure.properties)
    return out


def _read_undecodable(file: Path) -> list[Undecodable]:
    """The rows of a samples folder's ``undecodable.csv`` (columns ``name``, ``reason``; blank
    lines skipped). Bytes that are not UTF-8, an unreadable CSV record, other columns or a row
    whose cells do not match the header are a ValueError naming the file and the line."""
    import csv
    import io

    from polydiff.plugin import read_text

    reader = csv.reader(io.StringIO(read_text(file), newline=""))
    rows: list[tuple[int, list[str]]] = []  # (line, cells)
    try:
        header = [h.strip() for h in next(reader, [])]
        end = reader.line_num
        for cells in reader:
            line, end = end + 1, reader.line_num
            if cells:
                rows.append((line, cells))
    except csv.Error as err:
        raise ValueError(f"{file}:{reader.line_num}: not a readable CSV row ({err})") from None
    if not rows:
        return []
    if not {"name", "reason"} <= set(header):
        raise ValueError(f"{file}: expected the columns name, reason; found {sorted(header)}")
    i, j = header.index("name"), header.index("reason")
    out = []
    for line, cells in rows:
        if len(cells) != len(header):
            raise ValueError(f"{file}:{line}: {len(cells)} cells, the header has {len(header)}")
        out.append(Undecodable(cells[i], cells[j]))
    return out


def written_or_undecodable(structure: Any, name: str) -> Any:
    """:func:`as_written`, or :class:`Undecodable` with pymatgen's reason when the crystal's own
    CIF does not read back (a cell so flat that the parser's matrix is singular): a generated
    sample that cannot be a file is counted as undecodable, not a crash of the whole batch."""
    try:
        return as_written(structure)
    except ValueError as err:
        reason = " ".join(str(err).split())
        return Undecodable(str(structure.properties.get("name", name)), f"cif_does_not_read_back: {reason}")


def periodic_to_structures(state: Mapping[str, Tensor], info: Mapping[str, Any]) -> list[Any]:
    """Periodic states -> pymatgen Structures (lattice de-standardised, angles clipped to a
    valid cell; an impossible cell becomes :class:`Undecodable`)."""
    from pymatgen.core import Lattice, Structure

    mean, std = np.asarray(info["lattice_mean"]), np.asarray(info["lattice_std"])
    elements = list(info["elements"])
    mask = state["mask"].bool().cpu()
    lat = state["lattice"].double().cpu().numpy() * std + mean
    out: list[Any] = []
    for b in range(len(mask)):
        name = sample_name(info, b)
        idx = torch.nonzero(mask[b]).squeeze(1)
        types = state["types"][b, idx].cpu().clamp(max=len(elements) - 1).tolist()
        lengths, angles = np.exp(lat[b, :3]), np.clip(lat[b, 3:], 30.0, 150.0)
        try:
            lattice = Lattice.from_parameters(*lengths, *angles)
            if not np.isfinite(lattice.volume) or lattice.volume <= 0:
                raise ValueError("the angles do not form a cell")
        except (ValueError, ArithmeticError) as err:
            out.append(Undecodable(name, f"lattice: {err}"))
            continue
        frac = np.mod(state["frac"][b, idx].double().cpu().numpy(), 1.0)
        s = Structure(lattice, [elements[t] for t in types], frac)
        s.properties["name"] = name
        out.append(s)
    return out


def _train(info: Mapping[str, Any]) -> list[Any] | None:
    """The training crystals named in ``info`` (None when unknown), for novelty."""
    names = info.get("train_names")
    if not names or info.get("dataset") not in ("default", "perov_5", "carbon_24"):
        return None
    names = set(names)
    try:
        if info["dataset"] == "default":
            from .data import default_crystals

            pool = default_crystals(info.get("n"), seed=int(info.get("seed", 0)),
                                    max_sites=int(info.get("max_sites", 20)),
                                    max_elements=int(info.get("max_elements", 3)))
        else:
            from .data import cdvae_crystals

            path = info.get("path")
            pool = cdvae_crystals(info["dataset"], "val", path=None if path is None else Path(path) / "val.csv")
    except (FileNotFoundError, OSError, ValueError):
        return None
    return [s for s in pool if s.properties.get("name") in names]
