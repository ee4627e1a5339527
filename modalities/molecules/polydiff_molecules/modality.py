"""The ``molecules`` modality: 3-D molecules by property-guided SE(3)-equivariant flow matching
(PropMolFlow / FlowMol-style), with an EDM-style Gaussian diffusion baseline on the same
networks.

State of a batch padded to its largest molecule (``N`` atoms):

- ``pos`` (B, N, 3): positions in Angstrom times ``info["pos_scale"]``, zero centre of mass
  over the present atoms;
- ``types`` / ``charges`` (B, N) long: element and formal-charge classes (``info["elements"]``,
  ``info["charges"]``);
- ``bonds`` (B, P) long: bond-order classes (``info["bond_orders"]``: none, single, double,
  triple) of the ``P = N (N - 1) / 2`` atom pairs in ``torch.triu_indices(N, N, 1)`` order,
  with ``pair_mask`` (B, P);
- ``types_onehot`` / ``charges_onehot`` (B, N, V): the same classes one-hot, for continuous
  (Gaussian) types;
- ``mask`` (B, N), and one (B,) entry per property condition (``info["conditions"]``).

Fields (the recipe's ``process`` options, :meth:`MoleculesModality.fields`):

- ``path: flow`` (default): ``pos`` on the linear interpolant from a zero-centre-of-mass
  Gaussian (flow matching); with ``discrete: true`` (default) ``types`` / ``charges`` /
  ``bonds`` are masked discrete flows (absorbing CTMC, linear schedule), else one-hot Gaussian
  fields on the same interpolant;
- ``path: diffusion``: EDM's baseline, a cosine VP diffusion of ``pos`` and of one-hot types
  and charges (``discrete: false``), trained with the eps-MSE weighting (``snr``).

Prior-to-data alignment (rotation and atom permutation of each molecule onto its noise draw) is
the training technique ``loss.techniques.align: molecule``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from polydiff.plugin import (
    ALIGNMENTS,
    Absorbing,
    DataBundle,
    FieldSpec,
    GaussianProcess,
    Masked,
    Modality,
    TensorStates,
    ZeroCoM,
    check_info,
    condition_values,
    object_sizes,
    rotate,
    sample_name,
    size_histogram,
)

from .molecule import BOND_ORDERS, CHARGES, QM9_ELEMENTS, Molecule

PROPERTIES = ("mu", "alpha", "homo", "lumo", "gap", "cv")


# -- states ------------------------------------------------------------------------------------

def pair_index(n: int, device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
    """Rows and columns of the ``n (n - 1) / 2`` unordered atom pairs (upper triangle)."""
    ij = torch.triu_indices(n, n, 1, device=device)
    return ij[0], ij[1]


def pairs_to_matrix(bonds: Tensor, n: int) -> Tensor:
    """(B, P) pair classes -> (B, n, n) symmetric matrix with a zero diagonal."""
    i, j = pair_index(n, bonds.device)
    out = torch.zeros(bonds.shape[0], n, n, dtype=bonds.dtype, device=bonds.device)
    out[:, i, j] = bonds
    out[:, j, i] = bonds
    return out


class MoleculeStates(TensorStates):
    """Padded molecules; a batch is cut to its largest molecule (single items keep the full
    padding, so they stack) and gains the derived entries: pair classes of the bond matrix,
    pair mask and one-hot classes."""

    vocab: tuple[int, int] = (len(QM9_ELEMENTS), len(CHARGES))

    def get_batch(self, index: Tensor, cut: bool = True) -> dict[str, Tensor]:
        out = super().get_batch(index)
        n = max(int(out["mask"].sum(1).max()), 1) if cut else out["mask"].shape[1]
        for k in ("pos", "types", "charges", "mask", "bond_matrix"):
            out[k] = out[k][:, :n, :n] if k == "bond_matrix" else out[k][:, :n]
        i, j = pair_index(n)
        m = out["mask"]
        out["bonds"] = out.pop("bond_matrix")[:, i, j].long()
        out["pair_mask"] = m[:, i] * m[:, j]
        out["types_onehot"] = nn.functional.one_hot(out["types"], int(self.vocab[0])).float() * m[..., None]
        out["charges_onehot"] = nn.functional.one_hot(out["charges"], int(self.vocab[1])).float() * m[..., None]
        return out

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {k: v[0] for k, v in self.get_batch(torch.tensor([i]), cut=False).items()}


def to_states(mols: Sequence[Molecule], elements: Sequence[str], n_max: int, pos_scale: float = 1.0,
              conditions: Sequence[str] = ()) -> MoleculeStates:
    """Molecules -> padded states (centred positions; unknown elements or charges are errors
    naming the molecule; bonds inferred by nothing: a molecule without bonds has none)."""
    B = len(mols)
    enc = {s: i for i, s in enumerate(elements)}
    cenc = {q: i for i, q in enumerate(CHARGES)}
    pos = torch.zeros(B, n_max, 3)
    types = torch.zeros(B, n_max, dtype=torch.long)
    charges = torch.full((B, n_max), cenc[0], dtype=torch.long)
    bonds = torch.zeros(B, n_max, n_max, dtype=torch.int8)
    mask = torch.zeros(B, n_max)
    props = {k: torch.full((B,), float("nan")) for k in conditions}
    for b, m in enumerate(mols):
        n = len(m)
        if n > n_max:
            raise ValueError(f"molecule {m.name!r} has {n} atoms, more than the {n_max} of the data")
        bad = [s for s in m.symbols if s not in enc]
        if bad:
            raise ValueError(f"molecule {m.name!r}: element {bad[0]!r} is not in the model's elements {list(elements)}")
        badq = [int(q) for q in m.charges if int(q) not in cenc]
        if badq:
            raise ValueError(f"molecule {m.name!r}: formal charge {badq[0]} outside the supported {list(CHARGES)}")
        x = m.positions - m.positions.mean(0)
        pos[b, :n] = torch.as_tensor(x * pos_scale, dtype=torch.float32)
        types[b, :n] = torch.as_tensor([enc[s] for s in m.symbols])
        charges[b, :n] = torch.as_tensor([cenc[int(q)] for q in m.charges])
        if m.bonds is not None:
            if int(m.bonds.max(initial=0)) >= len(BOND_ORDERS):
                raise ValueError(f"molecule {m.name!r}: bond order {int(m.bonds.max())} above {BOND_ORDERS[-1]}")
            bonds[b, :n, :n] = torch.as_tensor(m.bonds, dtype=torch.int8)
        mask[b, :n] = 1
        for k in conditions:
            if k not in m.properties:
                raise ValueError(f"molecule {m.name!r} has no property {k!r} to condition on (it has "
                                 f"{sorted(m.properties)})")
            props[k][b] = float(m.properties[k])
    st = MoleculeStates(pos=pos, types=types, charges=charges, bond_matrix=bonds, mask=mask, **props)
    st.vocab = (len(elements), len(CHARGES))
    return st


def _condition_specs(mols: Sequence[Molecule], keys: Sequence[str], basis: int = 16) -> dict[str, Any]:
    """Scalar condition specs spanning the 0.5-99.5 % range of the training values."""
    out = {}
    for k in keys:
        v = np.array([m.properties[k] for m in mols if k in m.properties], dtype=np.float64)
        if len(v) == 0:
            raise ValueError(f"no training molecule has property {k!r}")
        lo, hi = np.percentile(v, [0.5, 99.5])
        out[k] = {"kind": "scalar", "low": float(lo), "high": float(hi), "basis": basis,
                  "mean": float(v.mean()), "std": float(v.std()), "p99": float(np.percentile(v, 99))}
    return out


def make_bundle(train: Sequence[Molecule], test: Sequence[Molecule], info: Mapping[str, Any],
                elements: Sequence[str] | None = None, conditions: Sequence[str] = (),
                pos_scale: float = 1.0, augment_rotations: bool = True) -> DataBundle:
    """A :class:`DataBundle` of molecules (val = test), with the info every part reads."""
    if len(train) < 1 or len(test) < 1:
        raise ValueError(f"need training and test molecules, got {len(train)} and {len(test)}")
    conditions = list(conditions)
    bad = [k for k in conditions if k not in PROPERTIES]
    if bad:
        raise ValueError(f"unknown property condition {bad[0]!r}; allowed: {', '.join(PROPERTIES)}")
    if elements is None:
        present = {s for m in list(train) + list(test) for s in m.symbols}
        elements = [s for s in QM9_ELEMENTS if s in present] + sorted(present - set(QM9_ELEMENTS))
    n_max = max(len(m) for m in list(train) + list(test))
    info = {**info, "elements": list(elements), "charges": list(CHARGES), "bond_orders": list(BOND_ORDERS),
            "pos_scale": pos_scale, "max_atoms": n_max, "size_hist": size_histogram([len(m) for m in train]),
            "vocabularies": {"types": list(elements), "charges": [str(q) for q in CHARGES]},
            "conditions": _condition_specs(train, conditions) if conditions else {}}
    aug = rotate("pos", mask="mask") if augment_rotations else None
    return DataBundle(to_states(train, elements, n_max, pos_scale, conditions),
                      to_states(test, elements, n_max, pos_scale, conditions),
                      to_states(test, elements, n_max, pos_scale, conditions), check_info(info), augment=aug)


def _split(mols: list[Molecule], test_fraction: float, seed: int) -> tuple[list[Molecule], list[Molecule]]:
    order = np.random.default_rng(seed).permutation(len(mols))
    n_test = max(1, round(test_fraction * len(mols)))
    return [mols[i] for i in order[n_test:]], [mols[i] for i in order[:n_test]]


def default_dataset(n: int | None = None, max_heavy: int = 9, seed: int = 0, test_fraction: float = 0.1,
                    cache_dir: str | None = None) -> DataBundle:
    """The embedded default: small molecules (H, C, N, O, F; at most ``max_heavy`` heavy atoms)
    from RDKit's bundled NCI SMILES in 3-D (ETKDG + MMFF, cached on disk) plus ASE's g2 set."""
    from .data import default_molecules

    mols = default_molecules(n=n, max_heavy=max_heavy, seed=seed, cache_dir=cache_dir)
    train, test = _split(mols, test_fraction, seed)
    info = {"dataset": "default", "n": n, "max_heavy": max_heavy, "seed": seed, "test_fraction": test_fraction,
            "train_names": [m.name for m in train]}
    return make_bundle(train, test, info, elements=list(QM9_ELEMENTS))


def qm9_dataset(n: int | None = 2000, seed: int = 0, half: str = "generator", conditions: Sequence[str] = (),
                test_fraction: float = 0.1, path: str | None = None, cache_dir: str | None = None) -> DataBundle:
    """The QM9 20k sample of ``shared/data/qm9`` with its properties, in 3-D by ETKDG + MMFF
    (not DFT: see docs/molecules.md). EDM's protocol splits the data in two halves: the
    ``generator`` half trains generative models, the ``regressor`` half the property model that
    scores conditional samples; ``n`` molecules (None: all) are taken from the half. A user's
    CSV (``path``) is halved too, which a warning says (``half: all`` takes every row)."""
    from .data import qm9_molecules

    if path is not None and half != "all":
        warnings.warn(f"{path}: data.half={half}: training on one seeded half of the CSV's rows only (EDM's "
                      "protocol keeps the other half for the property regressor); set data.half=all to train on "
                      "every row", stacklevel=2)
    mols = qm9_molecules(path=path, n=n, seed=seed, half=half, cache_dir=cache_dir)
    train, test = _split(mols, test_fraction, seed)
    info = {"dataset": "qm9", "n": n, "seed": seed, "half": half, "path": path, "test_fraction": test_fraction,
            "train_names": [m.name for m in train]}
    return make_bundle(train, test, info, elements=list(QM9_ELEMENTS), conditions=conditions)


def files_dataset(path: str, seed: int = 0, test_fraction: float = 0.1, n: int | None = None,
                  elements: Sequence[str] | None = None, max_atoms: int | None = None,
                  conditions: Sequence[str] = ()) -> DataBundle:
    """Users' molecules: an SDF / MOL, XYZ / extended XYZ or SMILES file, or a folder of them
    (:func:`.molio.read_molecules`; unreadable records and SMILES that do not embed in 3-D are
    skipped and counted in a warning), split ``1 - test_fraction`` / ``test_fraction``.

    ``n`` keeps a seeded sample of that many molecules (None: all). ``elements`` fixes the
    model's element vocabulary (a molecule with another element is an error naming it; default:
    the elements of the data, QM9's order first). ``max_atoms`` skips larger molecules with a
    count (None: no limit). Formal charges must be -1, 0 or +1. ``conditions`` are properties
    the molecules carry (SD data fields, extended-XYZ keys: ``mu``, ``gap`` ...)."""
    from .molio import read_molecules

    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be between 0 and 1, got {test_fraction}")
    if max_atoms is not None and max_atoms < 1:
        raise ValueError(f"max_atoms must be >= 1, got {max_atoms}")
    mols = read_molecules(Path(path), seed=seed)
    empty = [m.name for m in mols if len(m) == 0]
    mols = [m for m in mols if len(m)]
    if empty:
        warnings.warn(f"{path}: skipped {len(empty)} molecule(s) without atoms ({', '.join(empty[:5])})", stacklevel=2)
    if max_atoms is not None:
        big = [f"{m.name or k} ({len(m)} atoms)" for k, m in enumerate(mols) if len(m) > max_atoms]
        if big:
            mols = [m for m in mols if len(m) <= max_atoms]
            warnings.warn(f"{path}: skipped {len(big)} molecule(s) with more than max_atoms={max_atoms} atoms: "
                          f"{'; '.join(big[:5])}{' ...' if len(big) > 5 else ''}", stacklevel=2)
    allowed = None if elements is None else [str(e) for e in elements]
    for k, m in enumerate(mols):
        label = f"{path}: molecule {k} ({m.name!r})" if m.name else f"{path}: molecule {k}"
        if allowed is not None and (bad := [e for e in m.symbols if e not in allowed]):
            raise ValueError(f"{label}: element {bad[0]!r} is not in data.elements {allowed} (add it, or leave "
                             "data.elements out to take the elements of the data)")
        if bad_q := [int(q) for q in m.charges if int(q) not in CHARGES]:
            raise ValueError(f"{label}: formal charge {bad_q[0]:+d} outside the model's {list(CHARGES)}")
        if m.bonds is not None and int(np.max(m.bonds, initial=0)) >= len(BOND_ORDERS):
            raise ValueError(f"{label}: bond order {int(np.max(m.bonds))} above the model's {BOND_ORDERS[-1]}")
    if n is not None:
        if n < 2:
            raise ValueError(f"n must be >= 2 (or null for all), got {n}")
        pick = np.random.default_rng(seed).permutation(len(mols))[:n]
        mols = [mols[i] for i in sorted(pick)]
    if len(mols) < 2:
        raise ValueError(f"{path}: {len(mols)} usable molecule(s); training needs at least 2 (one to test)")
    train, test = _split(mols, test_fraction, seed)
    info = {"dataset": "files", "path": str(path), "n": n, "seed": seed, "test_fraction": test_fraction,
            "max_atoms_option": max_atoms, "train_names": [m.name for m in train]}
    return make_bundle(train, test, info, elements=allowed, conditions=conditions)


# -- prior-to-data alignment ---------------------------------------------------------------------

@ALIGNMENTS.register("molecule", "rotate and permute each molecule's atoms onto its noise draw (Hungarian "
                     "matching of atoms, then Kabsch rotation): shorter, straighter flow paths")
def align_molecules(batch: Mapping[str, Tensor], eps: Mapping[str, Tensor], rounds: int = 4) -> dict[str, Tensor]:
    """Per molecule: the atom permutation minimising the summed squared distance between data
    and noise positions (Hungarian algorithm) and the proper rotation of the permuted data onto
    the noise (Kabsch), alternated for up to ``rounds`` rounds while the distance falls. Every
    per-atom entry and the bonds follow the permutation."""
    from scipy.optimize import linear_sum_assignment

    x, e, m = batch["pos"], eps["pos"], batch["mask"].bool()
    out = {k: batch[k].clone() for k in ("pos", "types", "charges", "types_onehot", "charges_onehot") if k in batch}
    n = x.shape[1]
    xs, es, ms = x.detach().double().cpu().numpy(), e.detach().double().cpu().numpy(), m.cpu().numpy()
    has_bonds = "bonds" in batch
    if has_bonds:
        mat = pairs_to_matrix(batch["bonds"], n)
        i, j = pair_index(n, x.device)
        new_bonds = batch["bonds"].clone()
    # small per-molecule problems: numpy is several times faster than torch at this size
    for b in range(x.shape[0]):
        idx = np.nonzero(ms[b])[0]
        src, eb = xs[b, idx], es[b, idx]
        rot = np.eye(3)
        best = None
        for _ in range(rounds):  # alternate: atoms matched to the noise, then the best rotation
            moved = src @ rot
            cost = ((moved[:, None, :] - eb[None, :, :]) ** 2).sum(-1)
            _, col = linear_sum_assignment(cost)          # data atom a goes to noise slot col[a]
            rot = _kabsch(src, eb[col])
            err = float(((src @ rot - eb[col]) ** 2).sum())
            if best is not None and err >= best[0] - 1e-12:
                break
            best = (err, col, rot)
        _, col, rot = best
        target = torch.as_tensor(idx[col], device=x.device)
        old = torch.as_tensor(idx, device=x.device)
        out["pos"][b, target] = torch.as_tensor(src @ rot, dtype=x.dtype, device=x.device)
        for k in ("types", "charges", "types_onehot", "charges_onehot"):
            if k in out:
                out[k][b, target] = batch[k][b, old]
        if has_bonds:
            perm = torch.arange(n, device=x.device)
            perm[target] = old  # new atom target[a] is old atom idx[a]
            new_bonds[b] = mat[b][perm][:, perm][i, j]
    if has_bonds:
        out["bonds"] = new_bonds
    return out


def _kabsch(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The proper rotation ``R`` minimising ``|x R - y|`` for centred point sets (n, 3)."""
    u, _, vt = np.linalg.svd(x.T @ y)
    d = np.sign(np.linalg.det(u @ vt)) or 1.0
    return u @ np.diag([1.0, 1.0, d]) @ vt


# -- fields and networks -------------------------------------------------------------------------

class MoleculeNet(nn.Module):
    """The plugin's networks as the core calls them: maps the one-hot fields of continuous
    types onto the networks' ``types`` / ``charges`` inputs and turns their logits into clean
    one-hot estimates (softmax) for those Gaussian fields."""

    def __init__(self, net: nn.Module, fields: Sequence[str]) -> None:
        super().__init__()
        self.net = net
        self.field_names = list(fields)

    def forward(self, state: Mapping[str, Tensor], t: Tensor, cond: Any = None) -> dict[str, Tensor]:
        st = dict(state)
        for k in ("types", "charges"):
            if f"{k}_onehot" in self.field_names:
                st[k] = state[f"{k}_onehot"]
        out = self.net(st, t)
        res = {}
        for k in self.field_names:
            if k.endswith("_onehot"):
                res[k] = torch.softmax(out[k[: -len("_onehot")]], -1) * state["mask"][..., None].to(out[k[:-7]].dtype)
            else:
                res[k] = out[k]
        return res


def _network(kind: str) -> Callable[..., nn.Module]:
    def build(info: Mapping[str, Any], fields: Mapping[str, FieldSpec], **options: Any) -> nn.Module:
        from .nets import NETWORKS

        inner_fields = {k.replace("_onehot", ""): f for k, f in fields.items()}
        return MoleculeNet(NETWORKS[kind](info, inner_fields, **options), list(fields))

    build.__name__ = f"{kind}_network"
    build.__doc__ = f"The ``{kind}`` network of :mod:`.nets` behind :class:`MoleculeNet`."
    return build


class MoleculesModality(Modality):
    """3-D molecules (see the module docstring)."""

    name = "molecules"
    description = ("3-D molecules: property-guided SE(3)-equivariant flow matching (PropMolFlow-style; positions, "
                   "atom types, charges, bonds), EDM-style diffusion baseline; SDF / XYZ / SMILES files")

    def datasets(self) -> dict[str, Callable[..., DataBundle]]:
        return {"default": default_dataset, "qm9": qm9_dataset, "files": files_dataset}

    def networks(self) -> dict[str, Callable[..., nn.Module]]:
        return {"gvp": _network("gvp"), "e3nn": _network("e3nn")}

    def fields(self, info: Mapping[str, Any], path: str = "flow", discrete: bool = True, charges: bool = True,
               bonds: bool = False) -> dict[str, FieldSpec]:
        """See the module docstring. ``charges`` / ``bonds`` add those fields (bonds need
        ``discrete``)."""
        if path not in ("flow", "diffusion"):
            raise ValueError(f"path must be 'flow' or 'diffusion', got {path!r}")
        if bonds and not discrete:
            raise ValueError("bonds are a discrete field: set discrete: true (or bonds: false)")
        V, C, K = len(info["elements"]), len(info["charges"]), len(info["bond_orders"])
        proc = (lambda: GaussianProcess("linear")) if path == "flow" else (lambda: GaussianProcess("vp_cosine"))
        out = {"pos": FieldSpec(proc(), ZeroCoM("mask"), "x0")}
        if discrete:
            out["types"] = FieldSpec(Absorbing(V), Masked("mask"))
            if charges:
                out["charges"] = FieldSpec(Absorbing(C), Masked("mask"))
            if bonds:
                out["bonds"] = FieldSpec(Absorbing(K), Masked("pair_mask"))
        else:
            out["types_onehot"] = FieldSpec(proc(), Masked("mask"), "x0")
            if charges:
                out["charges_onehot"] = FieldSpec(proc(), Masked("mask"), "x0")
        return out

    def prior_state(self, n: int, info: Mapping[str, Any], generator: torch.Generator | None = None,
                    condition: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Atom counts drawn from the training histogram or given (``--condition atoms=12``);
        property conditions (``--condition gap=0.25``; one number or one per sample, in the
        data's units) become (n,) entries, with a warning for a value outside the training
        data's range (where the property embedding saturates). A property left out (or None)
        is unconditional: the null condition."""
        condition = dict(condition or {})
        given = condition.pop("atoms", None)
        known = info.get("conditions", {})
        unknown = [k for k in condition if k not in known]
        if unknown:
            raise ValueError(f"unknown condition {unknown[0]!r}: this model is conditioned on "
                             f"{sorted(known) or 'nothing'} (and the atom count, 'atoms')")
        sizes = object_sizes(n, info, generator, given, name="atoms")
        N = int(sizes.max())
        mask = (torch.arange(N)[None] < sizes[:, None]).float()
        i, j = pair_index(N)
        V, C = len(info["elements"]), len(info["charges"])
        spec: dict[str, Any] = {"pos": (n, N, 3), "types": (n, N), "charges": (n, N), "bonds": (n, len(i)),
                                "types_onehot": (n, N, V), "charges_onehot": (n, N, C),
                                "mask": mask, "pair_mask": mask[:, i] * mask[:, j]}
        for k, s in known.items():
            v = condition.get(k)
            spec[k] = torch.full((n,), float("nan")) if v is None else \
                condition_values(n, v, name=k, trained=(s["low"], s["high"]))
        return spec

    def sample(self, net: nn.Module, fields: Mapping[str, FieldSpec], spec: Mapping[str, Any], settings: Any,
               control: Any, *, seed: Tensor, device: torch.device) -> dict[str, Tensor]:
        """One loop over the fields the model has (the prior's other shapes are dropped)."""
        from polydiff.plugin import controlled_sample

        spec = {k: v for k, v in spec.items() if k in fields or not isinstance(v, tuple)}
        return controlled_sample(net, fields, spec, settings, control, seed=seed, device=device)

    def to_native(self, state: Mapping[str, Tensor], info: Mapping[str, Any]) -> list[Molecule]:
        """Molecules with elements, charges and (when generated) bonds; positions in Angstrom,
        rounded to the SDF format's 0.0001 A, so objects equal their files."""
        elements, charges = list(info["elements"]), list(info["charges"])
        scale = float(info.get("pos_scale", 1.0))
        mask = state["mask"].bool()
        types = state["types"] if "types" in state and state["types"].dim() == 2 and "types_onehot" not in state \
            else state["types_onehot"].argmax(-1)
        qs = None
        if "charges_onehot" in state:
            qs = state["charges_onehot"].argmax(-1)
        elif "charges" in state and state["charges"].dim() == 2:
            qs = state["charges"]
        bonds = None
        if "bonds" in state and state["bonds"].dim() == 2:
            bonds = pairs_to_matrix(state["bonds"].clamp(max=len(BOND_ORDERS) - 1), mask.shape[1])
        out = []
        for b in range(len(mask)):
            idx = torch.nonzero(mask[b]).squeeze(1)
            ty = types[b, idx].clamp(max=len(elements) - 1).tolist()
            q = [charges[int(c)] for c in qs[b, idx].clamp(max=len(charges) - 1).tolist()] if qs is not None \
                else [0] * len(idx)
            bm = None if bonds is None else bonds[b][idx][:, idx].numpy()
            pos = np.round(state["pos"][b, idx].double().numpy() / scale, 4)  # as SDF stores them
            out.append(Molecule(tuple(elements[i] for i in ty), pos, np.array(q), bm, name=sample_name(info, b)))
        return out

    def native_types(self, info: Mapping[str, Any]) -> tuple[type, ...]:
        return (Molecule,)

    def from_native(self, objects: Sequence[Molecule], info: Mapping[str, Any]) -> dict[str, Tensor]:
        n_max = max(int(info.get("max_atoms", 0)), max(len(m) for m in objects))
        st = to_states(list(objects), info["elements"], n_max, float(info.get("pos_scale", 1.0)))
        return st.get_batch(torch.arange(len(objects)))

    def write(self, objects: Sequence[Molecule], out_dir: Path) -> list[Path]:
        """One SDF file per molecule (bonds when generated, else none; atoms, charges, positions)."""
        from .molio import write_molecules

        return write_molecules(list(objects), Path(out_dir), fmt="sdf")

    def read(self, path: Path) -> list[Molecule]:
        """An SDF / MOL / XYZ / extended-XYZ / SMILES file or a folder of them."""
        from .molio import read_molecules

        return read_molecules(Path(path))

    def evaluate(self, objects: Sequence[Molecule], reference: Sequence[Molecule],
                 info: Mapping[str, Any]) -> dict[str, float]:
        """EDM's stability, validity, uniqueness and novelty (training SMILES rebuilt from
        ``info`` when known), and distances to the reference's bond lengths, angles and atom
        types, connectivity and MMFF energy (see :mod:`.metrics`)."""
        from .metrics import evaluate_molecules

        return evaluate_molecules(list(objects), list(reference) or None, train_smiles=_train_smiles(info))

    def flags(self, objects: Sequence[Molecule], info: Mapping[str, Any]) -> dict[str, list[Any]]:
        from .metrics import per_molecule_flags

        return per_molecule_flags(list(objects))

    def commands(self) -> dict[str, Any]:
        """``polydiff molecules regressor`` (property regressors) and ``polydiff molecules
        property`` (property MAE of targeted generation); see :mod:`.cli`."""
        from .cli import COMMANDS

        return COMMANDS

    def plot(self, objects: Sequence[Molecule], path: Path, reference: Sequence[Molecule] | None = None
             ) -> Path | None:
        try:
            from .plot import plot_molecules
        except ImportError:
            return None
        return plot_molecules(list(objects), Path(path), None if reference is None else list(reference))


def _train_smiles(info: Mapping[str, Any]) -> list[str] | None:
    """Canonical SMILES of the training molecules named in ``info`` (None when unknown): for
    QM9 from the CSV's SMILES column, for the default set from the rebuilt molecules."""
    from .data import default_molecules, qm9_table, smiles_of
    from .metrics import canonical_smiles

    names = info.get("train_names")
    if not names or info.get("dataset") not in ("default", "qm9"):
        return None
    names = set(names)
    try:
        if info["dataset"] == "qm9":
            ids, smiles, _ = qm9_table(info.get("path"), properties=())
            out = [canonical_smiles(s) for i, s in zip(ids, smiles) if i in names]
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                mols = default_molecules(max_heavy=int(info.get("max_heavy", 9)), seed=int(info.get("seed", 0)))
            out = [smiles_of(m) for m in mols if m.name in names]
    except (FileNotFoundError, OSError, ValueError):
        return None
    return [s for s in out if s]
