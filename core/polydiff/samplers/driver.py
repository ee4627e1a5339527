"""The sampling loop: one grid, one model call per stage, every field advanced by its process.

``sample`` is the low-level entry point. It draws the prior for each field, walks an explicit
time grid, calls the model once per step on the whole state, converts each Gaussian field's
prediction to ``(x0, eps)`` and advances

- the packed Gaussian fields with the chosen Gaussian method (``sampler=``),
- every categorical field with the chosen categorical method (``categorical=``),
- every manifold field with its geodesic step,

all on the same grid. Solver arithmetic runs in ``dtype`` (float32 or float64) whatever the
model's own precision; categorical draws are always float64. The loop never reads a tensor
back to the host, so it can be compiled or captured.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from ..grids import make_grid
from ..parametrization import to_x0_eps
from ..processes.categorical import Absorbing
from ..processes.gaussian import Coefs
from ..random import Noise, sample_categorical
from ..state import FieldSpec, Packer, State, as_fields
from .base import SamplerDef, StepContext, get_sampler

Model = Callable[..., Any]


def _time(t: Tensor, batch: int, dtype: torch.dtype) -> Tensor:
    """A grid time (scalar or (B,)) as the (B,) tensor models receive."""
    return t.to(dtype).expand(batch) if t.dim() == 0 else t.to(dtype)


def _col(t: Tensor, dtype: torch.dtype) -> Tensor:
    """A grid time shaped to broadcast against packed (B, D) tensors."""
    return t.to(dtype) if t.dim() == 0 else t.to(dtype).reshape(-1, 1)


def init_state(fields: Mapping[str, FieldSpec], spec: Mapping[str, Any], noise: Noise,
               device: torch.device, dtype: torch.dtype) -> State:
    """Prior draws for fields given as shapes; tensors are kept (as aux entries or as given
    initial values of a field)."""
    state: State = {k: v.to(device) for k, v in spec.items() if isinstance(v, Tensor)}
    for name, f in fields.items():
        if name in state:
            continue
        if name not in spec:
            raise KeyError(f"no shape or initial value for field {name!r}; give it in the state as a tuple or tensor")
        shape = tuple(spec[name])
        if shape[0] != noise.batch:
            raise ValueError(f"field {name!r} has batch {shape[0]} but the state's batch is {noise.batch}")
        p = f.process
        if f.kind == "gaussian":
            z = f.structure.noise(noise.randn(shape[1:], dtype).to(device), state)
            state[name] = p.schedule.prior_std() * z
        elif f.kind == "categorical":
            if isinstance(p, Absorbing):
                state[name] = p.prior_sample(shape, device=device)
            else:
                state[name] = p.prior_sample(shape, u=noise.rand(shape[1:]).to(device))
        else:
            u = noise.rand(shape[1:], dtype) if p.prior_kind == "uniform" else noise.randn(shape[1:], dtype)
            state[name] = p.manifold.project(p.manifold.prior(shape, u.to(device)))
    return state


def sample(model: Model, process: Any, shape_or_state: tuple[int, ...] | Mapping[str, Any], *,
           sampler: str = "dpm++2m", steps: int = 20, grid: str | Tensor | None = None,
           prediction: str = "eps", categorical: str = "ancestral", seed: int | Tensor | None = None,
           generator: torch.Generator | None = None, cond: Any = None, t_max: float | None = None,
           t_min: float | None = None, final_zero: bool = False, dtype: torch.dtype = torch.float32,
           device: torch.device | str | None = None, callback: Callable[[dict[str, Any]], None] | None = None,
           wrap_model: Callable[[Callable[..., Any]], Callable[..., Any]] | None = None,
           **options: Any) -> Tensor | State:
    """Generate a batch by walking a time grid from noise to data.

    Args:
        model: ``model(x, t[, cond]) -> prediction`` for a single field given as a process and
            a shape, or ``model(state, t[, cond]) -> {field: prediction}`` for a dict of fields.
        process: a process, a :class:`FieldSpec`, or ``{name: FieldSpec | process}``.
        shape_or_state: the shape of the single field, or a state dict whose field entries are
            shapes (drawn from the prior) or tensors (initial values at the grid's first time)
            and whose other entries (masks, conditions) are passed through.
        sampler: a Gaussian method from ``polydiff samplers``; ``categorical`` likewise.
        steps, grid, t_max, t_min, final_zero: the time grid (see :func:`polydiff.grids.make_grid`).
        prediction: what the model predicts for Gaussian fields given as bare processes.
        seed: per-sample seeds (an int s gives sample b the seed (s, b)); ``generator`` instead
            for ordinary torch RNG semantics (then samples depend on the batch).
        dtype: solver arithmetic dtype. callback: called after every step with a dict of
            ``i``, ``t``, ``state`` and ``x0`` (clean estimates).
        wrap_model: a function applied to the internal state-level model (guidance wrappers).
        options: options of the Gaussian method (e.g. ``eta``, ``order``), listed by
            ``polydiff samplers``.

    Returns: the final tensor for a single field given by shape, else the final state.
    """
    fields = as_fields(process, prediction)
    single = not isinstance(shape_or_state, Mapping)
    if single:
        (name,) = fields
        spec: dict[str, Any] = {name: tuple(shape_or_state)}
        call = model

        def state_model(state: State, t: Tensor, c: Any = None) -> dict[str, Tensor]:
            out = call(state[name], t) if c is None else call(state[name], t, c)
            return {name: out}
    else:
        spec = dict(shape_or_state)
        state_model = model
    if wrap_model is not None:
        state_model = wrap_model(state_model)

    batch = _batch_size(spec)
    dev = torch.device(device) if device is not None else _device_of(spec)
    noise = Noise(batch, seed=seed, generator=generator, device=dev)
    state = init_state(fields, spec, noise, dev, dtype)
    out = run(state_model, fields, state, noise, sampler=sampler, steps=steps, grid=grid,
              categorical=categorical, cond=cond, t_max=t_max, t_min=t_min, final_zero=final_zero,
              dtype=dtype, callback=callback, **options)
    return out[next(iter(fields))] if single else out


def run(model: Model, fields: Mapping[str, FieldSpec], state: State, noise: Noise, *, sampler: str = "dpm++2m",
        steps: int = 20, grid: str | Tensor | None = None, categorical: str = "ancestral", cond: Any = None,
        t_max: float | None = None, t_min: float | None = None, final_zero: bool = False,
        dtype: torch.dtype = torch.float32, callback: Callable[[dict[str, Any]], None] | None = None,
        **options: Any) -> State:
    """The loop behind :func:`sample`, on an already initialised state (used by steering and
    guidance code that manages its own states and noise)."""
    gdef: SamplerDef = get_sampler(sampler)
    if gdef.kind != "gaussian":
        raise ValueError(f"sampler {sampler!r} is a {gdef.kind} sampler; pass it as categorical= "
                         "or use polydiff.samplers.first_hitting for absorbing-only states")
    cdef: SamplerDef = get_sampler(categorical)
    if cdef.kind != "categorical":
        raise ValueError(f"categorical={categorical!r} is not a categorical sampler")
    opts = gdef.options(options)
    batch = noise.batch
    packer = Packer(fields, state)
    cat_names = [k for k, f in fields.items() if f.kind == "categorical"]
    man_names = [k for k, f in fields.items() if f.kind == "manifold"]

    ref = next((f.process.schedule for f in fields.values() if f.kind == "gaussian"), None)
    if ref is not None:
        ts = make_grid(ref, steps, grid, t_max=t_max, t_min=t_min, final_zero=final_zero)
    else:  # no Gaussian field: an even grid over the discrete / manifold time
        t_hi = 1.0 if t_max is None else t_max
        ts = grid.to(torch.float64) if isinstance(grid, Tensor) else \
            torch.linspace(t_hi, 0.0 if t_min is None else t_min, steps + 1, dtype=torch.float64)
    ts = ts.to(noise.device)
    n = ts.shape[0] - 1
    coefs = [packer.coefs(ts[i], batch) if packer.names else None for i in range(n + 1)]
    coefs = [_cast(c, dtype) for c in coefs]
    if gdef.name in ("euler_maruyama",) and packer.names and not bool(torch.isfinite(coefs[0].dalpha / coefs[0].alpha).all()):
        raise ValueError(f"sampler {sampler!r} needs alpha(t) > 0 on the whole grid; the process reaches alpha = 0 "
                         "at t_max: lower t_max or use an ODE sampler / ddim / ddpm")

    x = packer.pack(state).to(dtype) if packer.names else None

    def evaluate(st: State, t: Tensor) -> dict[str, Tensor]:
        tm = _time(t, batch, dtype)
        return model(st, tm) if cond is None else model(st, tm, cond)

    def split(out: Mapping[str, Tensor], xf: Tensor, c, st: State) -> tuple[Tensor, Tensor]:
        ds, es = {}, {}
        xs = packer.unpack(xf)
        for k in packer.names:
            f = fields[k]
            if k not in out:
                raise KeyError(f"the model returned no prediction for field {k!r} (got {sorted(out)})")
            kc = _field_coefs(packer, c, k, batch)
            d, e = to_x0_eps(out[k].to(dtype), f.prediction, xs[k], kc)
            ds[k], es[k] = f.structure.project(d, st), f.structure.project(e, st)
        return packer.pack(ds), packer.pack(es)

    def noise_fn() -> Tensor:
        zs = {k: fields[k].structure.noise(noise.randn(packer.shapes[k], dtype).to(x.device), state)
              for k in packer.names}
        return packer.pack(zs)

    def field_norm(v: Tensor) -> Tensor:
        return packer.expand_fields(torch.sqrt(packer.segment_sum(v * v)))

    hist = None
    last_out: Mapping[str, Tensor] = {}
    for i in range(n):
        t, s = ts[i], ts[i + 1]
        if packer.names:
            state.update(packer.unpack(x))
        out = evaluate(state, t)
        last_out = out
        x0: dict[str, Tensor] = {}
        if packer.names:
            d, e = split(out, x, coefs[i], state)
            x0.update(packer.unpack(d))
            if final_zero and i == n - 1:
                x = d
            else:
                cur = dict(state)

                def denoise(xu: Tensor, u: Tensor, _cur: State = cur) -> tuple[Tensor, Tensor]:
                    st = {**_cur, **packer.unpack(xu)}
                    cu = packer.coefs(u.reshape(-1) if u.dim() > 1 else u, batch)
                    return split(evaluate(st, u.reshape(-1) if u.dim() > 1 else u), xu, _cast(cu, dtype), st)

                ctx = StepContext(i, n, _col(t, dtype), _col(s, dtype), denoise,
                                  lambda u: _cast(packer.coefs(u, batch), dtype), noise_fn, field_norm, opts)
                x, hist = gdef.step(x, d, e, coefs[i], coefs[i + 1], hist, ctx)
        for k in cat_names:
            p0 = _probs(out, k, fields[k].process)
            state[k] = cdef.step(state[k], p0, _time(t, batch, torch.float64), _time(s, batch, torch.float64),
                                 fields[k].process, noise)
            x0[k] = p0
        for k in man_names:
            proc = fields[k].process
            if k not in out:
                raise KeyError(f"the model returned no prediction for field {k!r} (got {sorted(out)})")
            x0[k] = out[k].to(dtype)
            tb, sb = _time(t, batch, dtype), _time(s, batch, dtype)
            state[k] = proc.manifold.project(proc.step(state[k].to(dtype), x0[k], tb, sb))
        if callback is not None:
            if packer.names:
                state.update(packer.unpack(x))
            callback({"i": i, "t": t, "s": s, "state": state, "x0": x0})
    if packer.names:
        state.update(packer.unpack(x))
    for k in cat_names:  # tokens still masked at t_min > 0 take their last predicted value
        proc = fields[k].process
        if isinstance(proc, Absorbing) and last_out:
            left = state[k] == proc.mask_id
            fill = sample_categorical(_probs(last_out, k, proc), noise.rand(state[k].shape[1:]).to(state[k].device))
            state[k] = torch.where(left, fill, state[k])
    return state


def _probs(out: Mapping[str, Tensor], name: str, process: Any) -> Tensor:
    """Clean-token probabilities (float64) from the model's logits over the clean vocabulary."""
    if name not in out:
        raise KeyError(f"the model returned no prediction for field {name!r} (got {sorted(out)})")
    logits = out[name]
    if logits.shape[-1] != process.vocab:
        raise ValueError(f"field {name!r}: logits have {logits.shape[-1]} classes, the process has vocab "
                         f"{process.vocab} (do not include the mask token)")
    return torch.softmax(logits.to(torch.float64), dim=-1)


def _field_coefs(packer: Packer, c, name: str, batch: int):
    """The packed coefficients restricted (and reshaped) to one field."""
    if packer.single:
        shape = (batch, *([1] * len(packer.shapes[name]))) if c.alpha.shape[1] == 1 else (batch, *packer.shapes[name])
        return Coefs(*(v.reshape(shape) for v in (c.alpha, c.sigma, c.lam, c.dalpha, c.dsigma)))
    j = packer.names.index(name)
    lo = sum(packer.sizes[:j])
    hi = lo + packer.sizes[j]
    shape = (batch, *packer.shapes[name])
    return Coefs(*(v[:, lo:hi].reshape(shape) for v in (c.alpha, c.sigma, c.lam, c.dalpha, c.dsigma)))


def _cast(c, dtype: torch.dtype):
    if c is None:
        return None
    return Coefs(*(v.to(dtype) for v in (c.alpha, c.sigma, c.lam, c.dalpha, c.dsigma)))


def _batch_size(spec: Mapping[str, Any]) -> int:
    for v in spec.values():
        if isinstance(v, Tensor):
            return v.shape[0]
        if isinstance(v, (tuple, list, torch.Size)):
            return int(v[0])
    raise ValueError("the state gives no field shape or tensor to read the batch size from")


def _device_of(spec: Mapping[str, Any]) -> torch.device:
    for v in spec.values():
        if isinstance(v, Tensor):
            return v.device
    return torch.device("cpu")
