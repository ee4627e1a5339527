"""Test kits shared by the core's and every plugin's tests.

- :func:`check_modality`: the modality contract. Every plugin runs it in its own tests:
  datasets load offline, ``info`` is well typed, ``fields`` / ``prior_state`` / network shapes
  agree, one training step and one sampling call work, ``write`` then ``read`` round-trips
  (files, and states where ``from_native`` exists),
  ``evaluate`` returns finite floats, ``flags`` have one value per object, and a bad file makes
  ``read`` fail with an error naming the file.
- Symmetry checks: group actions on dict-of-tensor states (:func:`rotation`,
  :func:`translation`, :func:`permutation`, :func:`compose`) and :func:`assert_equivariant` /
  :func:`assert_invariant`, which check ``fn(T x) == T fn(x)`` for random group elements ``T``
  (and, unless told otherwise, that the outputs are finite).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

# ---------------------------------------------------------------------------------------------
# Symmetry checks: group actions on states and assert_equivariant / assert_invariant
# ---------------------------------------------------------------------------------------------
#
# A state is a flat ``dict[str, Tensor]`` whose entries share the batch dimension 0. A transform
# draws one random group element per batch sample (``sample``) and applies it to the entries it
# acts on (``apply``), returning a new dict in which every other entry is the same object as
# before. Non-tensor values are carried along untouched.

TENSOR_KEY = "x"
"""The key under which :func:`assert_equivariant` sees a bare tensor input or output."""


class Transform:
    """A group action on dict-of-tensor states.

    ``sample(batch, generator, dtype, device)`` draws a random group element per batch sample
    (an opaque object: pass it back to ``apply`` of this transform or of one of the same kind
    acting on other keys); ``apply(tree, g)`` returns a new dict with ``g`` applied to the
    entries this transform acts on; ``acts_on(tree)`` lists those entries.
    """

    def sample(self, batch: int, generator: torch.Generator, dtype: torch.dtype, device: torch.device | str) -> Any:
        """Draw one random group element per batch sample."""
        raise NotImplementedError

    def apply(self, tree: Mapping[str, Any], g: Any) -> dict[str, Any]:
        """Apply the group element ``g`` to the entries of ``tree`` this transform acts on."""
        raise NotImplementedError

    def acts_on(self, tree: Mapping[str, Any]) -> list[str]:
        """The keys of ``tree`` that ``apply`` changes."""
        raise NotImplementedError

    def __call__(self, tree: Mapping[str, Any], g: Any) -> dict[str, Any]:
        return self.apply(tree, g)


@dataclass(frozen=True)
class Seeded:
    """A group element drawn lazily: a seed from which the per-sample element is built once its
    size is known (the number of nodes of a permutation, the dimension of a translation). The
    same seed gives the same element for every entry of that size, inputs and outputs alike."""

    seed: int
    batch: int

    def _generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed)

    def normal(self, dim: int) -> Tensor:
        """(batch, dim) standard normal vectors, float64 on the CPU."""
        return torch.randn(self.batch, dim, generator=self._generator(), dtype=torch.float64)

    def permutation(self, n: int) -> Tensor:
        """(batch, n) random permutations: new position i holds old node ``perm[b, i]``."""
        return torch.rand(self.batch, n, generator=self._generator()).argsort(dim=1)


def _draw_seed(generator: torch.Generator) -> int:
    return int(torch.randint(0, 2**62, (), generator=generator, device=generator.device))


def _batch_of(v: Tensor, batch: int, key: str) -> None:
    if v.ndim == 0 or v.shape[0] != batch:
        raise ValueError(f"entry {key!r} has shape {tuple(v.shape)}; expected batch size {batch} in dim 0")


def _present(tree: Mapping[str, Any], keys: Iterable[str]) -> list[str]:
    return [k for k in keys if isinstance(tree.get(k), Tensor)]


class Rotation(Transform):
    """Multiply vectors by a random orthogonal matrix ``Q`` per sample: see :func:`rotation`."""

    def __init__(self, keys: tuple[str, ...], dim: int, reflections: bool, frames: tuple[str, ...]) -> None:
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        self.keys, self.dim, self.reflections, self.frames = keys, dim, reflections, frames

    def sample(self, batch: int, generator: torch.Generator, dtype: torch.dtype, device: torch.device | str) -> Tensor:
        """(batch, dim, dim) Haar-random matrices in SO(dim), or in O(dim) with reflections."""
        a = torch.randn(batch, self.dim, self.dim, generator=generator, dtype=torch.float64, device=generator.device)
        q, r = torch.linalg.qr(a)
        q = q * torch.where(torch.diagonal(r, dim1=-2, dim2=-1) < 0, -1.0, 1.0)[:, None, :]
        if not self.reflections:
            flip = torch.where(torch.linalg.det(q) < 0, -1.0, 1.0)
            q = torch.cat([q[:, :, :1] * flip[:, None, None], q[:, :, 1:]], dim=2)
        return q.to(dtype=dtype, device=device)

    def apply(self, tree: Mapping[str, Any], g: Tensor) -> dict[str, Any]:
        out = dict(tree)
        b, d = g.shape[0], self.dim
        for key in _present(tree, self.keys):
            v = tree[key]
            _batch_of(v, b, key)
            if not v.is_floating_point() or v.shape[-1] != d or v.ndim < 2:
                raise ValueError(f"rotation acts on floating vectors (B, ..., {d}); entry {key!r} is "
                                 f"{tuple(v.shape)} {v.dtype}")
            q = g.to(device=v.device, dtype=v.dtype)
            out[key] = (v.reshape(b, -1, d) @ q.transpose(1, 2)).reshape(v.shape)  # v_i -> Q v_i
        for key in _present(tree, self.frames):
            r = tree[key]
            _batch_of(r, b, key)
            if not r.is_floating_point() or r.ndim < 3 or tuple(r.shape[-2:]) != (d, d):
                raise ValueError(f"rotation acts on frames (B, ..., {d}, {d}); entry {key!r} is "
                                 f"{tuple(r.shape)} {r.dtype}")
            q = g.to(device=r.device, dtype=r.dtype)
            out[key] = (q[:, None] @ r.reshape(b, -1, d, d)).reshape(r.shape)  # R -> Q R
        return out

    def acts_on(self, tree: Mapping[str, Any]) -> list[str]:
        return _present(tree, self.keys + self.frames)

    def __repr__(self) -> str:
        args = [repr(k) for k in self.keys] + [f"dim={self.dim}"]
        if self.reflections:
            args.append("reflections=True")
        if self.frames:
            args.append(f"frames={self.frames!r}")
        return f"rotation({', '.join(args)})"


class Translation(Transform):
    """Add a random vector per sample: see :func:`translation`."""

    def __init__(self, keys: tuple[str, ...], mask: str | None, scale: float) -> None:
        self.keys, self.mask, self.scale = keys, mask, scale

    def sample(self, batch: int, generator: torch.Generator, dtype: torch.dtype, device: torch.device | str) -> Seeded:
        """A seed; the (batch, D) shift is drawn from it for the last dimension D of each entry."""
        return Seeded(_draw_seed(generator), batch)

    def apply(self, tree: Mapping[str, Any], g: Seeded) -> dict[str, Any]:
        out = dict(tree)
        for key in _present(tree, self.keys):
            v = tree[key]
            _batch_of(v, g.batch, key)
            if not v.is_floating_point() or v.ndim < 2:
                raise ValueError(f"translation acts on floating vectors (B, ..., D); entry {key!r} is "
                                 f"{tuple(v.shape)} {v.dtype}")
            shift = (self.scale * g.normal(v.shape[-1])).to(device=v.device, dtype=v.dtype)
            shift = shift.reshape(g.batch, *([1] * (v.ndim - 2)), v.shape[-1])
            if self.mask is None:
                out[key] = v + shift
                continue
            if not isinstance(tree.get(self.mask), Tensor):
                raise KeyError(f"translation needs the mask entry {self.mask!r}; the state has {sorted(tree)}")
            m = tree[self.mask]
            if v.ndim < 3 or tuple(m.shape) != tuple(v.shape[:2]):
                raise ValueError(f"mask {self.mask!r} {tuple(m.shape)} does not index the nodes of entry {key!r} "
                                 f"{tuple(v.shape)}")
            m = (m != 0).reshape(*m.shape, *([1] * (v.ndim - 2)))
            out[key] = torch.where(m, v + shift, v)
        return out

    def acts_on(self, tree: Mapping[str, Any]) -> list[str]:
        return _present(tree, self.keys)

    def __repr__(self) -> str:
        args = [repr(k) for k in self.keys]
        if self.mask is not None:
            args.append(f"mask={self.mask!r}")
        if self.scale != 1.0:
            args.append(f"scale={self.scale:g}")
        return f"translation({', '.join(args)})"


class Permutation(Transform):
    """Permute the nodes of every node-indexed entry: see :func:`permutation`."""

    def __init__(self, dim: int, keys: tuple[str, ...] | None, pair_keys: tuple[str, ...], n: int | None) -> None:
        if dim < 1:
            raise ValueError(f"permutation dim must be >= 1 (dim 0 is the batch), got {dim}")
        self.dim, self.keys, self.pair_keys, self.n = dim, keys, pair_keys, n

    def sample(self, batch: int, generator: torch.Generator, dtype: torch.dtype, device: torch.device | str) -> Seeded:
        """A seed; the (batch, N) permutation is drawn from it once N is known."""
        return Seeded(_draw_seed(generator), batch)

    def _nodes(self, tree: Mapping[str, Any]) -> int | None:
        """The number of nodes N: ``n``, else the size of the pair entries, else that of the named
        entries, else that along ``dim`` of entries with feature dims after it, else of the rest."""
        if self.n is not None:
            return self.n
        d = self.dim
        pairs = _present(tree, self.pair_keys)
        if pairs:
            groups = [{tree[k].shape[d] for k in pairs} | {tree[k].shape[d + 1] for k in pairs}]
        elif self.keys is not None:
            groups = [{tree[k].shape[d] for k in _present(tree, self.keys) if tree[k].ndim > d}]
        else:
            tensors = [v for v in tree.values() if isinstance(v, Tensor)]
            groups = [{v.shape[d] for v in tensors if v.ndim > d + 1}, {v.shape[d] for v in tensors if v.ndim == d + 1}]
        for sizes in groups:
            if len(sizes) > 1:
                raise ValueError(f"permutation: entries disagree on the number of nodes along dim {d} ({sorted(sizes)})"
                                 "; pass keys=... or n=...")
            if sizes:
                return sizes.pop()
        return None

    def _node_keys(self, tree: Mapping[str, Any], n: int | None) -> list[str]:
        candidates = list(tree) if self.keys is None else self.keys
        return [k for k in _present(tree, candidates)
                if k not in self.pair_keys and tree[k].ndim > self.dim and tree[k].shape[self.dim] == n]

    def apply(self, tree: Mapping[str, Any], g: Seeded) -> dict[str, Any]:
        out = dict(tree)
        n = self._nodes(tree)
        if n is None:
            return out
        perm = g.permutation(n)
        for key in self._node_keys(tree, n):
            _batch_of(tree[key], g.batch, key)
            out[key] = _permute(tree[key], perm, self.dim)
        for key in _present(tree, self.pair_keys):
            v = tree[key]
            _batch_of(v, g.batch, key)
            if v.ndim < self.dim + 2 or v.shape[self.dim] != n or v.shape[self.dim + 1] != n:
                raise ValueError(f"pair entry {key!r} {tuple(v.shape)} needs {n} nodes in dims {self.dim} and "
                                 f"{self.dim + 1}")
            out[key] = _permute(_permute(v, perm, self.dim), perm, self.dim + 1)
        return out

    def acts_on(self, tree: Mapping[str, Any]) -> list[str]:
        n = self._nodes(tree)
        return [] if n is None else self._node_keys(tree, n) + _present(tree, self.pair_keys)

    def __repr__(self) -> str:
        args = [f"dim={self.dim}"]
        if self.keys is not None:
            args.append(f"keys={self.keys!r}")
        if self.pair_keys:
            args.append(f"pair_keys={self.pair_keys!r}")
        if self.n is not None:
            args.append(f"n={self.n}")
        return f"permutation({', '.join(args)})"


def _permute(v: Tensor, perm: Tensor, dim: int) -> Tensor:
    """``out[b, ..., i, ...] = v[b, ..., perm[b, i], ...]`` along ``dim``."""
    w = v.movedim(dim, 1)
    idx = perm.to(w.device).reshape(*perm.shape, *([1] * (w.ndim - 2))).expand_as(w)
    return torch.gather(w, 1, idx).movedim(1, dim)


class Compose(Transform):
    """Apply several transforms in order: see :func:`compose`."""

    def __init__(self, transforms: tuple[Transform, ...]) -> None:
        self.transforms = transforms

    def sample(self, batch: int, generator: torch.Generator, dtype: torch.dtype, device: torch.device | str) -> tuple:
        """One element of each transform, in order."""
        return tuple(t.sample(batch, generator, dtype, device) for t in self.transforms)

    def apply(self, tree: Mapping[str, Any], g: tuple) -> dict[str, Any]:
        if len(g) != len(self.transforms):
            raise ValueError(f"{self!r} needs {len(self.transforms)} group elements, got {len(g)}")
        out = dict(tree)
        for t, gi in zip(self.transforms, g):
            out = t.apply(out, gi)
        return out

    def acts_on(self, tree: Mapping[str, Any]) -> list[str]:
        keys = [k for t in self.transforms for k in t.acts_on(tree)]
        return list(dict.fromkeys(keys))

    def __repr__(self) -> str:
        return f"compose({', '.join(map(repr, self.transforms))})"


def rotation(*keys: str, dim: int = 3, reflections: bool = False, frames: Iterable[str] = ()) -> Rotation:
    """Rotate the vectors in the named entries by a random ``Q`` per sample.

    Entries of ``keys`` are (B, ..., dim) vectors (positions, forces, velocities): each vector
    ``v`` becomes ``Q v``. Entries of ``frames`` are (B, ..., dim, dim) rotation matrices
    (residue frames): ``R`` becomes ``Q R``. ``Q`` is Haar-random in SO(dim), or in O(dim) with
    ``reflections=True`` (then about half the samples are reflections: the check of a
    reflection symmetry). Translations are not included: compose with :func:`translation`.
    """
    return Rotation(tuple(keys), dim, reflections, tuple(frames))


def translation(*keys: str, mask: str | None = None, scale: float = 1.0) -> Translation:
    """Add a random vector ``t ~ N(0, scale^2 I)`` per sample to the (B, ..., D) named entries.

    The same ``t`` is added to every vector of a sample and to every named entry of the same
    size D. With ``mask`` naming the state's (B, N) node mask, only present nodes of (B, N, ...,
    D) entries move; padded nodes keep their values exactly.
    """
    return Translation(tuple(keys), mask, scale)


def permutation(
    dim: int = 1, keys: Iterable[str] | None = None, pair_keys: Iterable[str] = (), *, n: int | None = None
) -> Permutation:
    """Permute the N nodes of a sample by a random permutation per sample.

    Acts along ``dim`` on every entry whose size there is N (node features, positions, masks,
    atom types: any dtype) or, with ``keys``, on the named entries only; and along both ``dim``
    and ``dim + 1`` on the ``pair_keys`` entries (B, N, N, ...) such as adjacency or edge
    features. N is ``n`` when given, else the size of the pair entries, else that of the named
    entries, else the common size along ``dim`` of the entries with trailing feature dims, else
    of the (B, N) entries. With ``keys=None`` an unrelated entry that happens to have N columns
    (a condition vector of size N) is permuted too: name the keys in that case.
    """
    return Permutation(dim, None if keys is None else tuple(keys), tuple(pair_keys), n)


def compose(*transforms: Transform) -> Compose:
    """Apply ``transforms`` one after the other (the first one first) with independent elements."""
    return Compose(tuple(transforms))


def _cast(tree: Mapping[str, Any], dtype: torch.dtype | None) -> dict[str, Any]:
    if dtype is None:
        return dict(tree)
    return {k: v.to(dtype) if isinstance(v, Tensor) and v.is_floating_point() else v for k, v in tree.items()}


def _as_dict(y: Any, what: str) -> dict[str, Any]:
    if isinstance(y, Tensor):
        return {TENSOR_KEY: y}
    if isinstance(y, Mapping):
        return dict(y)
    raise TypeError(f"{what} must be a dict of tensors or a tensor, got {type(y).__name__}")


def _max_error(got: Tensor, want: Tensor) -> float:
    if got.dtype == torch.bool:
        got, want = got.long(), want.long()
    diff = (got.to(torch.complex128 if got.is_complex() else torch.float64)
            - want.to(torch.complex128 if want.is_complex() else torch.float64)).abs()
    both_nan = torch.isnan(got) & torch.isnan(want) if got.is_floating_point() else torch.zeros_like(diff, dtype=bool)
    diff = torch.where(both_nan, 0.0, torch.nan_to_num(diff, nan=float("inf")))
    return float(diff.max()) if diff.numel() else 0.0


def _check_equal(got: Any, want: Any, atol: float, rtol: float) -> tuple[bool, str]:
    """Whether ``got`` matches ``want`` within the tolerance, and the size of the mismatch."""
    if not isinstance(want, Tensor) or not isinstance(got, Tensor):
        same = type(got) is type(want) and got == want
        return bool(same), "values differ" if not same else ""
    if got.shape != want.shape:
        return False, f"shape {tuple(got.shape)} != expected {tuple(want.shape)}"
    if got.is_floating_point() or got.is_complex():
        ok = bool(torch.isclose(got, want.to(got.dtype), rtol=rtol, atol=atol, equal_nan=True).all())
    else:
        ok = bool((got == want).all())
    return ok, f"max abs error {_max_error(got, want):.3e}"


def _nonfinite(y: Mapping[str, Any]) -> str | None:
    """Which floating output holds NaN or inf values, and how many, or None if all are finite."""
    for key, v in y.items():
        if isinstance(v, Tensor) and (v.is_floating_point() or v.is_complex()):
            bad = int((~torch.isfinite(v)).sum())
            if bad:
                return f"output {key!r} has {bad} non-finite values (NaN or inf) of {v.numel()}"
    return None


def _run_check(
    fn: Callable[[Any], Any],
    inputs: Mapping[str, Any] | Tensor,
    transform: Transform,
    outputs: Transform | None,
    invariant: Iterable[str] | None,
    atol: float,
    rtol: float,
    trials: int,
    seed: int,
    dtype: torch.dtype | None,
    allow_nonfinite: bool,
) -> None:
    """Shared body of :func:`assert_equivariant` (``invariant`` a key list) and
    :func:`assert_invariant` (``invariant=None``: every output key)."""
    name = getattr(fn, "__qualname__", None) or type(fn).__name__
    if isinstance(fn, nn.Module):
        fn = copy.deepcopy(fn).eval()
        if dtype is not None:
            fn = fn.to(dtype)
    bare = isinstance(inputs, Tensor)
    x = _cast(_as_dict(inputs, "inputs"), dtype)
    if not transform.acts_on(x):
        raise ValueError(f"{transform!r} acts on none of the inputs {sorted(x)}; check the keys")
    tensors = [v for v in x.values() if isinstance(v, Tensor) and v.ndim > 0]
    if not tensors:
        raise ValueError("inputs hold no batched tensor")
    batch, device = tensors[0].shape[0], tensors[0].device
    out_t = transform if outputs is None else outputs

    def call(state: dict[str, Any]) -> dict[str, Any]:
        return _as_dict(fn(state[TENSOR_KEY] if bare else state), f"the output of {name}")

    def check_finite(out: Mapping[str, Any], where: str) -> None:
        why = None if allow_nonfinite else _nonfinite(out)
        if why is not None:
            raise AssertionError(f"{name}: {why} on {where} (seed {seed}, dtype {dtype}); pass allow_nonfinite=True "
                                 "if such outputs are expected")

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        y = call(x)
        check_finite(y, "the original inputs")
        inv = set(y) if invariant is None else set(invariant)
        unknown = inv - set(y)
        if unknown:
            raise ValueError(f"invariant keys {sorted(unknown)} are not outputs of {name} (outputs: {sorted(y)})")
        for trial in range(trials):
            g = transform.sample(batch, gen, dtype or torch.float64, device)
            y_t = call(transform.apply(x, g))
            if set(y_t) != set(y):
                raise AssertionError(f"{name} returned keys {sorted(y_t)} on transformed inputs but {sorted(y)} "
                                     f"on the originals")
            check_finite(y_t, f"the transformed inputs (trial {trial + 1} of {trials})")
            # The output transform sees the inputs as context (e.g. the mask named by a translation).
            expected = out_t.apply({**x, **y}, g)
            for key in y:
                want = y[key] if key in inv else expected[key]
                ok, size = _check_equal(y_t[key], want, atol, rtol)
                if not ok:
                    kind = "invariant" if key in inv else "equivariant"
                    acting = transform if key in inv or outputs is None else f"{transform!r} (outputs: {outputs!r})"
                    raise AssertionError(
                        f"{name} is not {kind} under {acting}: output {key!r} {size} > tolerance atol={atol:g}, "
                        f"rtol={rtol:g} (trial {trial + 1} of {trials}, seed {seed}, dtype {dtype})"
                    )


def assert_equivariant(
    fn: Callable[[Any], Any],
    inputs: Mapping[str, Any] | Tensor,
    transform: Transform,
    *,
    outputs: Transform | None = None,
    invariant: Iterable[str] = (),
    atol: float = 1e-6,
    rtol: float = 0.0,
    trials: int = 3,
    seed: int = 0,
    dtype: torch.dtype | None = torch.float64,
    allow_nonfinite: bool = False,
) -> None:
    """Check ``fn(T x) == T fn(x)`` for ``trials`` random group elements ``T`` of ``transform``.

    ``fn`` maps a state dict to a dict (a bare tensor input or output is seen as the entry
    ``"x"``). Floating inputs are cast to ``dtype`` (``None``: leave them), and an ``nn.Module``
    ``fn`` is checked as a copy cast to ``dtype`` in eval mode (the original is untouched); the
    check runs without gradients. ``transform`` acts on the inputs; the same group element acts
    on the outputs through ``outputs`` (default ``transform``; give one of the same kind naming
    the output keys when they differ from the input keys, e.g. ``rotation("pos")`` in,
    ``rotation("force")`` out), which sees the inputs as context (so a masked translation finds
    its mask). Every output key is compared: those the output transform acts on must be
    equivariant, the others unchanged, and the keys in ``invariant`` must be unchanged even if
    the transform would act on them (an energy, a graph-level label). Raises AssertionError
    naming the key, the transform, the max abs error and the tolerance
    (``|got - want| <= atol + rtol |want|`` elementwise). A floating output holding NaN or inf
    also raises AssertionError naming it (an all-NaN network would otherwise match itself):
    ``allow_nonfinite=True`` accepts such outputs, and then NaN matches NaN.
    """
    _run_check(fn, inputs, transform, outputs, tuple(invariant), atol, rtol, trials, seed, dtype, allow_nonfinite)


def assert_invariant(
    fn: Callable[[Any], Any],
    inputs: Mapping[str, Any] | Tensor,
    transform: Transform,
    *,
    atol: float = 1e-6,
    rtol: float = 0.0,
    trials: int = 3,
    seed: int = 0,
    dtype: torch.dtype | None = torch.float64,
    allow_nonfinite: bool = False,
) -> None:
    """Check ``fn(T x) == fn(x)`` for every output key: :func:`assert_equivariant` with all outputs
    invariant (non-finite outputs fail unless ``allow_nonfinite=True``)."""
    _run_check(fn, inputs, transform, None, None, atol, rtol, trials, seed, dtype, allow_nonfinite)


# ---------------------------------------------------------------------------------------------
# The modality contract
# ---------------------------------------------------------------------------------------------

@dataclass
class ContractReport:
    """What :func:`check_modality` exercised (for a plugin's test to assert more on)."""

    modality: Any
    info: dict[str, Any] = field(repr=False)
    fields: dict[str, Any] = field(repr=False)
    net: nn.Module = field(repr=False)
    batch: dict[str, Tensor] = field(repr=False)
    state: dict[str, Any] = field(repr=False)
    objects: Any = field(repr=False)
    paths: list[Any]
    metrics: dict[str, float]
    flags: dict[str, list[Any]]
    checked: list[str]


ROUND_TRIP = "write then read round-trips"
"""The :attr:`ContractReport.checked` entry when files and the states of the objects read back agree."""
NO_FROM_NATIVE = "write then read: files round-trip; no from_native, states not compared"
"""The :attr:`ContractReport.checked` entry when the modality has no ``from_native`` (it raises
NotImplementedError), so only the files written again were compared."""
NOT_ENCODABLE = "write then read: files round-trip; samples and objects read back beyond from_native's encoding"
"""The :attr:`ContractReport.checked` entry when ``from_native`` rejects the sampled objects with a
ValueError (an untrained network's samples may not fit the encoding, e.g. a graph node of a degree
above the features' maximum) and rejects the objects read back as well: the files were compared,
the states could not be."""


def _fail(what: str, detail: str) -> AssertionError:
    return AssertionError(f"modality contract: {what}: {detail}")


class _Offline:
    """Refuse network connections (datasets must load offline) while the block runs."""

    def __enter__(self) -> _Offline:
        import socket

        self._socket = socket
        self._connect = socket.socket.connect

        def refuse(sock: Any, address: Any) -> None:
            raise AssertionError(f"modality contract: a dataset tried to connect to {address!r}; datasets must load "
                                 "offline (embedded or generated data, never a download at run time)")

        socket.socket.connect = refuse  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        self._socket.socket.connect = self._connect  # type: ignore[method-assign]


def _shape_error(fields: Mapping[str, Any], batch: Mapping[str, Tensor],
                 out_shapes: Mapping[str, tuple[int, ...]]) -> str | None:
    """Why the recorded prediction shapes do not fit the fields, or None."""
    from .losses import prediction_shape

    for k, f in fields.items():
        want = prediction_shape(f, batch[k])
        if k in out_shapes and out_shapes[k] != want:
            return f"the prediction of field {k!r} has shape {out_shapes[k]}, expected {want}"
    return None


def _states_close(a: Mapping[str, Any], b: Mapping[str, Any]) -> str | None:
    """None if two states agree (floats to 1e-4 relative, everything else exactly), else why not."""
    if set(a) != set(b):
        return f"entries {sorted(a)} vs {sorted(b)}"
    for k, va in a.items():
        vb = b[k]
        if not isinstance(va, Tensor) or not isinstance(vb, Tensor):
            continue
        if va.shape != vb.shape:
            return f"entry {k!r}: shape {tuple(va.shape)} vs {tuple(vb.shape)}"
        if va.is_floating_point():
            if not torch.allclose(va.double(), vb.double(), rtol=1e-4, atol=1e-5, equal_nan=True):
                return f"entry {k!r}: values differ by up to {float((va.double() - vb.double()).abs().max()):.3g}"
        elif not torch.equal(va, vb):
            return f"entry {k!r}: values differ"
    return None


def _check_native_types(modality: Any, objects: Sequence[Any], info: Mapping[str, Any], step: str) -> None:
    """The objects ``step`` gave are of the classes :meth:`Modality.native_types` declares."""
    types = modality.native_types(info)
    wrong = [type(o).__name__ for o in objects if types is not None and not isinstance(o, types)]
    if wrong:
        raise _fail("native_types", f"{step} gave a {wrong[0]}, not one of {[t.__name__ for t in types]}")


def kept_figures(monkeypatch: Any, *modules: Any, write: bool = False) -> list[Any]:
    """The figures that ``modules``' plots pass to ``save_figure``, kept instead of written
    (``write=True``: kept and written; ``monkeypatch``: pytest's fixture): a plot's test
    inspects its axes, labels and legends."""
    figs: list[Any] = []
    saves = {id(m): m.save_figure for m in modules}

    def keeper(module: Any) -> Callable[..., Any]:
        def keep(fig: Any, path: Any, **kwargs: Any) -> Any:
            figs.append(fig)
            return saves[id(module)](fig, path, **kwargs) if write else path
        return keep

    for module in modules:
        monkeypatch.setattr(module, "save_figure", keeper(module))
    return figs


def _plot_leaves_matplotlib_alone(modality: Any, objects: Sequence[Any], reference: Any, path: Any) -> bool:
    """Plot ``objects`` and check the PNG and that the user's matplotlib state is untouched (no
    backend switch, which would stop a notebook's inline plots; no pyplot figure left open).
    False where matplotlib is missing or the modality has no plot."""
    import importlib.util
    import sys

    from .modality import plot_objects

    if importlib.util.find_spec("matplotlib") is None:
        return False
    import matplotlib

    def backend() -> Any:  # the raw setting: reading rcParams["backend"] would resolve (and so change) it
        return dict.__getitem__(matplotlib.rcParams, "backend")

    def figures() -> list[int]:
        plt = sys.modules.get("matplotlib.pyplot")
        return [] if plt is None else list(plt.get_fignums())

    before, open_before = backend(), figures()
    out = plot_objects(modality, objects, path, lambda: reference)  # as Generator.plot calls it
    if out is None:
        return False
    if not path.exists() or path.read_bytes()[:8] != b"\x89PNG\r\n\x1a\n":
        raise _fail("plot", f"plot returned {out} but {path} is not a PNG file")
    if isinstance(before, str) and str(backend()).lower() != before.lower():  # (resolving 'auto' is no switch)
        raise _fail("plot", f"plot switched matplotlib's backend ({before!r} -> {backend()!r}); draw on "
                            "polydiff.plugin.new_figure() instead of calling matplotlib.use")
    if figures() != open_before:
        raise _fail("plot", "plot left pyplot figures open; draw on polydiff.plugin.new_figure() "
                            "(or close them)")
    return True


def check_modality(modality: Any, tmp_dir: Any, *, data: Mapping[str, Any] | None = None,
                   model: Mapping[str, Any] | None = None, process: Mapping[str, Any] | None = None, n: int = 4,
                   sampler: str | None = None, steps: int = 2, sample_options: Mapping[str, Any] | None = None,
                   seed: int = 0, bad_files: bool = True, low_precision: bool = True) -> ContractReport:
    """Run the modality contract on ``modality`` (an instance), writing into ``tmp_dir``.

    ``data`` / ``model`` / ``process``: the dataset, network and process options, as a recipe
    writes them (``{"name": ..., **options}``; choose small ones so the check takes seconds);
    ``n``: how many samples to draw; ``sampler`` / ``steps`` / ``sample_options``: the sampling
    settings (the first Gaussian sampler by default, or ``ancestral`` for categorical states);
    ``low_precision``: also sample with the network cast to bfloat16 and to float16 (networks
    run in low precision while the solver keeps float32). Raises AssertionError naming the
    broken part of the contract; returns what it built, with the parts checked in ``checked``
    (:data:`ROUND_TRIP` where ``from_native`` also found the states of the objects read back
    equal to those written, :data:`NO_FROM_NATIVE` where the modality has none,
    :data:`NOT_ENCODABLE` where it rejects the samples and the objects read back alike).
    """
    from pathlib import Path

    from .data import check_info, default_collate
    from .losses import diffusion_loss
    from .modality import check_metrics
    from .random import Noise
    from .samplers.base import SampleSettings
    from .steering import Control

    tmp = Path(tmp_dir)
    checked: list[str] = []
    data, model, process = dict(data or {}), dict(model or {}), dict(process or {})
    if not getattr(modality, "name", ""):
        raise _fail("name", "the modality class sets no name")
    table = modality.datasets()
    if not table:
        raise _fail("datasets", "datasets() is empty: the first entry must be an embedded default")
    with _Offline():
        bundle = modality.dataset(data.pop("name", None), **data)
    checked.append("datasets load offline")
    info = check_info(bundle.info, f"modality {modality.name!r}: dataset info")
    if len(bundle.train) < n:
        raise _fail("datasets", f"the training split has {len(bundle.train)} items, fewer than n={n}")
    collate = bundle.collate or default_collate
    batch = collate([bundle.train[i] for i in range(n)])
    fields = modality.fields(info, **process)
    if not fields:
        raise _fail("fields", "fields() returned no field")
    for k, spec in fields.items():
        if k not in batch:
            raise _fail("fields", f"field {k!r} is not an entry of the dataset's states (entries: {sorted(batch)})")
        if getattr(spec, "kind", None) not in ("gaussian", "categorical", "manifold"):
            raise _fail("fields", f"field {k!r} is not a FieldSpec")
    spec = modality.prior_state(n, info, torch.Generator().manual_seed(seed))
    for k, f in fields.items():
        if k not in spec:
            raise _fail("prior_state", f"no shape or value for field {k!r}")
        shape = tuple(spec[k].shape if isinstance(spec[k], Tensor) else spec[k])
        mask = getattr(f.structure, "mask", None)
        if mask is not None and not isinstance(spec.get(mask), Tensor):
            raise _fail("prior_state", f"field {k!r} has the structure {type(f.structure).__name__}({mask!r}), but the "
                                       f"prior state has no tensor {mask!r} (entries: {sorted(spec)})")
        # a padded axis (one as long as the mask's) may be as wide as the data's padding or the largest size drawn
        width = batch[mask].shape[1] if mask in batch and batch[mask].dim() > 1 else None
        data = tuple(batch[k].shape)
        fits = shape[0] == n and len(shape) == len(data) and all(
            a == b or (b == width and a == spec[mask].shape[1]) for a, b in zip(shape[1:], data[1:], strict=True))
        if not fits:
            raise _fail("prior_state", f"field {k!r} has shape {shape}, the data's states {data} (batch {n}"
                                       + (f"; axes as long as the mask {mask!r} may be padded to the prior's "
                                          f"{mask!r} instead" if width else "") + ")")
    checked.append("fields and prior_state agree with the data")
    net = modality.network(model.pop("name", None), info, fields, **model)
    net.train()
    noise = Noise(n, seed=seed)
    out_shapes: dict[str, tuple[int, ...]] = {}

    def recording(state: Mapping[str, Tensor], t: Tensor, cond: Any = None) -> Mapping[str, Tensor]:
        out = net(state, t) if cond is None else net(state, t, cond)
        out_shapes.update({k: tuple(out[k].shape) for k in fields if k in out})
        return out

    try:
        loss, _ = diffusion_loss(recording, fields, batch, noise)
    except Exception as err:
        shape_error = _shape_error(fields, batch, out_shapes)
        raise _fail("network" if shape_error else "training step",
                    shape_error or f"the loss failed: {type(err).__name__}: {err}") from err
    shape_error = _shape_error(fields, batch, out_shapes)
    if shape_error:
        raise _fail("network", shape_error)
    if not torch.isfinite(loss):
        raise _fail("training step", f"the loss is {float(loss)}")
    loss.backward()
    grads = [p.grad for p in net.parameters() if p.requires_grad]
    if not grads or all(g is None or not bool(g.abs().sum() > 0) for g in grads):
        raise _fail("training step", "no parameter received a gradient")
    if any(g is not None and not bool(torch.isfinite(g).all()) for g in grads):
        raise _fail("training step", "a gradient is not finite")
    checked.append("one training step (finite loss, gradients reach the parameters)")
    net.eval()
    kinds = {f.kind for f in fields.values()}
    default = "ddim" if "gaussian" in kinds else ("ancestral" if kinds == {"categorical"} else "euler")
    settings = SampleSettings(sampler=sampler or default, steps=steps, options=dict(sample_options or {}))
    with torch.no_grad():
        state = modality.sample(net, fields, spec, settings, Control(), seed=torch.arange(n) + seed * 1_000_003,
                                device=torch.device("cpu"))
    for k, f in fields.items():
        v = state.get(k)
        if isinstance(v, Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise _fail("sampling", f"field {k!r} of the samples is not finite")
        if f.kind == "gaussian" and isinstance(v, Tensor) and v.is_floating_point():
            off = float((f.structure.project(v, state) - v).abs().max())
            if off > 1e-4 * max(1.0, float(v.abs().max())):
                raise _fail("sampling", f"field {k!r} of the samples leaves its structure "
                                        f"{type(f.structure).__name__} by up to {off:.3g} (padding not zero, centre "
                                        "of mass not zero, ...)")
    objects = modality.to_native(state, info)
    if len(objects) != n:
        raise _fail("to_native", f"{len(objects)} objects from {n} samples")
    _check_native_types(modality, objects, info, "to_native")
    checked.append("one sampling call and to_native")
    for low_dtype in (torch.bfloat16, torch.float16) if low_precision else ():
        what = f"{str(low_dtype).removeprefix('torch.')} network"
        low = copy.deepcopy(net).to(low_dtype)
        try:
            with torch.no_grad():
                half = modality.sample(low, fields, spec, settings, Control(), seed=torch.arange(n) + seed * 1_000_003,
                                       device=torch.device("cpu"))
        except Exception as err:
            raise _fail(what, f"sampling with the network in {low_dtype} failed: {type(err).__name__}: {err}") from err
        for k in fields:
            a, b = state.get(k), half.get(k)
            if isinstance(a, Tensor) and (not isinstance(b, Tensor) or b.shape != a.shape or b.dtype != a.dtype):
                got = f"{b.dtype} {tuple(b.shape)}" if isinstance(b, Tensor) else repr(b)
                raise _fail(what, f"field {k!r}: {got} with the network in {low_dtype}, {a.dtype} {tuple(a.shape)} "
                                  "in float32 (the solver's dtype must not follow the network's)")
            if isinstance(b, Tensor) and b.is_floating_point() and not bool(torch.isfinite(b).all()):
                raise _fail(what, f"field {k!r} of the samples is not finite")
    if low_precision:
        checked.append("sampling with the network in bfloat16 and in float16 (the solver keeps its own dtype)")
    out_dir = tmp / f"{modality.name}-samples"
    paths = [Path(p) for p in modality.write(objects, out_dir)]
    if not paths or not all(p.is_file() for p in paths):
        raise _fail("write", f"write returned {paths}, not the files it wrote")
    if any(p.name.startswith(".") and ".tmp" in p.name for p in out_dir.rglob("*")):
        raise _fail("write", "temporary files were left behind (write to a temp file, then rename)")
    back = modality.read(out_dir)
    if len(back) != n:
        raise _fail("read", f"read back {len(back)} objects of the {n} written")
    _check_native_types(modality, back, info, "read")
    again = tmp / f"{modality.name}-rewritten"
    rewritten = sorted(Path(p) for p in modality.write(back, again))
    for p, q in zip(sorted(paths), rewritten, strict=False):
        if p.name != q.name or p.read_bytes() != q.read_bytes():
            raise _fail("write then read", f"writing the objects read from {p.name!r} again gives a different file "
                                           f"({q.name!r})")
    if len(rewritten) != len(paths):
        raise _fail("write then read", f"{len(paths)} files written, {len(rewritten)} when written again")
    try:  # where the modality converts objects back to states, those of the objects read back must agree
        a = modality.from_native(objects, info)
    except NotImplementedError:  # the modality cannot: the files alone were compared
        checked.append(NO_FROM_NATIVE)
    except ValueError as err:  # the samples do not fit the encoding: those read back must not either
        try:
            modality.from_native(back, info)
        except ValueError:
            checked.append(NOT_ENCODABLE)
        else:
            raise _fail("write then read", f"from_native rejects the sampled objects ({err}) but accepts the "
                                           "objects read back from their files") from err
    else:
        try:
            b = modality.from_native(back, info)
        except ValueError as err:
            raise _fail("write then read", f"from_native rejects the objects read back: {err}") from err
        why = _states_close(a, b)
        if why is not None:
            raise _fail("write then read", f"the objects read back differ from those written: {why}")
        checked.append(ROUND_TRIP)
    reference = modality.reference(bundle)
    try:
        metrics = check_metrics(modality.evaluate(objects, reference, info), modality.name)
    except ValueError as err:
        raise _fail("evaluate", str(err)) from err
    if not metrics:
        raise _fail("evaluate", "no metric")
    for k, v in metrics.items():  # NaN marks an undefined metric (e.g. uniqueness of zero valid molecules)
        if not isinstance(v, (int, float)) or isinstance(v, bool) or float(v) in (float("inf"), float("-inf")):
            raise _fail("evaluate", f"metric {k!r} is {v!r}, not a float (finite, or NaN where undefined)")
    if not any(v == v for v in metrics.values()):
        raise _fail("evaluate", f"every metric is NaN: {metrics}")
    flags = modality.flags(objects, info)
    for k, v in flags.items():
        if len(v) != n:
            raise _fail("flags", f"flag {k!r} has {len(v)} values for {n} objects")
    checked.append("evaluate returns floats; flags have one value per object")
    if _plot_leaves_matplotlib_alone(modality, objects, reference, tmp / f"{modality.name}-plot.png"):
        checked.append("plot writes a PNG and leaves matplotlib's backend and pyplot's figures as they were")
    if bad_files:
        for p in paths:
            if p.suffix == ".png":
                continue
            bad_dir = tmp / f"{modality.name}-bad-{p.name}"
            bad_dir.mkdir(parents=True, exist_ok=True)
            bad = bad_dir / p.name
            bad.write_bytes(b"\x00\x01 this is not a valid file ,,; <<>> \n 1 2 three\n")
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    modality.read(bad_dir)
                except Exception as err:  # the contract: an error that names the file
                    if p.name not in str(err):
                        raise _fail("read of a bad file", f"the error does not name the file {p.name!r}: {err}") \
                            from err
                    continue
            # or, for formats whose readers skip bad records: a warning naming the file and the count
            if not any(p.name in str(w.message) for w in caught):
                raise _fail("read of a bad file", f"reading a corrupted {p.name!r} raised no error and no warning "
                                                  "naming it (skipped records must be reported)")
        checked.append("a corrupted file makes read fail (or warn about skipped records) naming it")
    return ContractReport(modality, info, dict(fields), net, batch, dict(state), objects, paths, dict(metrics),
                          dict(flags), checked)
