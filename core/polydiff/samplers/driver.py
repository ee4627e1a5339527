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

:class:`SamplingLoop` exposes the loop one step at a time, so steering (SMC), inpainting
with resampling and other inference-time control can act between steps without
re-implementing it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from ..grids import make_grid
from ..parametrization import to_x0_eps
from ..processes.categorical import Absorbing
from ..processes.gaussian import Coefs
from ..random import Noise, sample_categorical
from ..state import FieldSpec, Packer, State, as_fields, per_time, table_coefs
from ..structures import Plain
from .base import SamplerDef, StepContext, get_sampler
from .dpm import clip_lam, stage_fractions

Model = Callable[..., Any]


def _time(t: Tensor, batch: int, dtype: torch.dtype) -> Tensor:
    """A grid time (scalar, (1,) or (B,)) as the (B,) tensor models receive."""
    t = t.to(dtype).reshape(-1)
    return t.expand(batch) if t.numel() == 1 else t


def _col(t: Tensor, dtype: torch.dtype) -> Tensor:
    """A grid time shaped to broadcast against packed (B, D) tensors."""
    return t.to(dtype) if t.dim() == 0 else t.to(dtype).reshape(-1, 1)


def _grid_times(ts: Tensor, batch: int, dtype: torch.dtype) -> tuple[list[Tensor], list[Tensor]]:
    """Every time of a grid (K+1,) or (K+1, B) as :func:`_time` and :func:`_col` give it, made
    with a few operations for the whole grid (they are views of one cast)."""
    td = ts.to(dtype)
    rows = td.shape[0]
    cols = td.unbind(0) if td.dim() == 1 else td.reshape(rows, -1, 1).unbind(0)
    return list(td.reshape(rows, -1).expand(rows, batch).unbind(0)), list(cols)


def _split_steps(tree: Any, n: int) -> list[Any]:
    """A nested tuple/list of (n, ...) tensors (and plain values) as n per-step trees."""
    if isinstance(tree, Tensor):
        return list(tree.unbind(0))
    if isinstance(tree, (tuple, list)):
        parts = [_split_steps(v, n) for v in tree]
        return [type(tree)(p[i] for p in parts) for i in range(n)]
    return [tree] * n


def _cast(c: Coefs, dtype: torch.dtype) -> Coefs:
    return Coefs(*(v.to(dtype) for v in (c.alpha, c.sigma, c.lam, c.dalpha, c.dsigma)))


def _index(tree: Any, index: Tensor, batch: int) -> Any:
    """Select ``index`` along the batch dimension of every tensor in a nested tuple/list/dict."""
    if isinstance(tree, Tensor):
        return tree[index] if tree.dim() > 0 and tree.shape[0] == batch else tree
    if isinstance(tree, (tuple, list)):
        return type(tree)(_index(v, index, batch) for v in tree)
    if isinstance(tree, dict):
        return {k: _index(v, index, batch) for k, v in tree.items()}
    return tree


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


class SamplingLoop:
    """The sampler as an explicit loop: ``for i in range(loop.n): loop.step(i)``, then
    ``loop.finish()``. Between steps, ``loop.state`` may be read or replaced, ``loop.select``
    resamples the batch (SMC) and ``loop.renoise`` takes the Gaussian fields back one step
    (RePaint). Everything the method carries (history, noise counter) lives here, in the open.
    """

    def __init__(self, model: Model, fields: Mapping[str, FieldSpec], state: State, noise: Noise, *,
                 sampler: str = "dpm++2m", steps: int = 20, grid: str | Tensor | None = None,
                 categorical: str = "ancestral", cond: Any = None, t_max: float | None = None,
                 t_min: float | None = None, final_zero: bool = False, dtype: torch.dtype = torch.float32,
                 **options: Any) -> None:
        self.gdef: SamplerDef = get_sampler(sampler)
        if self.gdef.kind != "gaussian":
            raise ValueError(f"sampler {sampler!r} is a {self.gdef.kind} sampler; pass it as categorical= "
                             "or use polydiff.samplers.first_hitting for absorbing-only states")
        self.cdef: SamplerDef = get_sampler(categorical)
        if self.cdef.kind != "categorical":
            raise ValueError(f"categorical={categorical!r} is not a categorical sampler")
        self.opts = self.gdef.options(options)
        self.model, self.fields, self.noise, self.cond, self.dtype = model, dict(fields), noise, cond, dtype
        self.batch = noise.batch
        self.packer = Packer(fields, state)
        self.cat_names = [k for k, f in fields.items() if f.kind == "categorical"]
        self.man_names = [k for k, f in fields.items() if f.kind == "manifold"]
        self.ref = next((f.process.schedule for f in fields.values() if f.kind == "gaussian"), None)
        # option stages="grid" (singlestep methods): the stages are the inner points of a grid
        # nfe_per_step times finer, and the steps walk every nfe_per_step-th point of it
        self._fine: Tensor | None = None
        if self.ref is not None and self.opts.get("stages") == "grid":
            k = self.gdef.nfe_per_step
            fine = make_grid(self.ref, steps * k, grid, t_max=t_max, t_min=t_min, final_zero=final_zero)
            if (fine.shape[0] - 1) % k:
                raise ValueError(f"sampler {sampler!r} with stages='grid' spends {k} grid intervals per step, so a "
                                 f"user grid needs a multiple of {k} intervals; got {fine.shape[0] - 1}")
            self._fine = fine.to(noise.device)
            ts = fine[::k]
        elif self.ref is not None:
            ts = make_grid(self.ref, steps, grid, t_max=t_max, t_min=t_min, final_zero=final_zero)
        elif isinstance(grid, Tensor):
            ts = grid.to(torch.float64)
        else:  # no Gaussian field: an even grid over the discrete / manifold time
            ts = torch.linspace(1.0 if t_max is None else t_max, 0.0 if t_min is None else t_min, steps + 1,
                                dtype=torch.float64)
        self.ts = ts.to(noise.device)
        self.n = self.ts.shape[0] - 1
        # every grid time once in the solver dtype: as the model's (B,) times and as columns
        self._tm, self._tc = _grid_times(self.ts, self.batch, dtype)
        # packed schedule values at every grid time, as one (5, K+1, rows, D) table and per time
        self._table: Tensor | None = None
        self._fine_table: Tensor | None = None
        self._ref_lam64: Tensor | None = None  # the reference field's float64 lam on the grid
        if self.packer.names:
            if self._fine is not None:  # every point of the finer grid at once; the steps' are every k-th
                self._fine_table, _ = self.packer.grid_table(self._fine, self.batch, dtype)
                self._table = self._fine_table[:, ::self.gdef.nfe_per_step]
            else:
                self._table, per = self.packer.grid_table(self.ts, self.batch, dtype)
                self._ref_lam64 = per[self.packer.names[0]].lam
            self.coefs = per_time(self._table)
            self._views = [{k: self.packer.field_view(c, k, self.batch) for k in self.packer.names}
                           for c in self.coefs]
        else:
            self.coefs, self._views = [None] * (self.n + 1), [{}] * (self.n + 1)
        if self.gdef.name == "euler_maruyama" and self.packer.names and \
                not bool(torch.isfinite(self.coefs[0].dalpha / self.coefs[0].alpha).all()):
            raise ValueError(f"sampler {sampler!r} needs alpha(t) > 0 on the whole grid; the process reaches "
                             "alpha = 0 at t_max: lower t_max or use an ODE sampler / ddim / ddpm")
        # the grid's ends in one read: (min, max) over the packing of every value at t_0 and t_K
        self.final_zero, self._finite = False, [True] * self.n
        if self.packer.names:
            ends = self._table[:, [0, -1]].reshape(5, 2, -1)
            lo, hi = torch.stack([ends.amin(-1), ends.amax(-1)]).tolist()  # [min | max][value][end]
            if lo[0][0] <= 0 and any(self.fields[k].prediction in ("eps", "score") for k in self.packer.names):
                for k in self.packer.names:
                    f = self.fields[k]
                    if f.prediction in ("eps", "score") and not bool((self._views[0][k].alpha > 0).all()):
                        raise ValueError(f"field {k!r}: a {f.prediction!r} prediction gives no clean estimate "
                                         "where alpha(t) = 0 (the grid starts there); predict x0 / v / velocity or "
                                         "lower t_max")
            # a grid ending where sigma = 0 ends with the clean estimate itself (all methods agree there)
            self.final_zero = hi[1][1] == 0
            # per step: is its log-SNR step finite everywhere (so methods may skip their infinite-end
            # fallbacks)? lam is infinite only where alpha = 0 or sigma = 0, i.e. at a grid's ends
            if self.n:
                self._finite[0] &= math.isfinite(lo[2][0]) and math.isfinite(hi[2][0])
                self._finite[-1] &= math.isfinite(lo[2][1]) and math.isfinite(hi[2][1])
        self._state = dict(state)
        self.x = self.packer.pack(state).to(dtype) if self.packer.names else None
        self.hist: Any = None
        self.last: dict[str, Tensor] = {}
        self._stages: dict[tuple[float, ...], tuple[list[list[tuple[Tensor, Coefs, dict[str, Coefs], Tensor]]],
                                                     Tensor]] = {}
        self._tables: dict[Any, list[Any]] = {}
        self._ends: tuple[Coefs, Coefs] | None = None

    # -- state access --
    @property
    def state(self) -> State:
        """The current state (all fields at the time of the next step)."""
        if self.packer.names:
            self._state.update(self.packer.unpack(self.x))
        return self._state

    @state.setter
    def state(self, new: State) -> None:
        self._state = dict(new)
        if self.packer.names:
            self.x = self.packer.pack(new).to(self.dtype)

    def select(self, index: Tensor) -> None:
        """Keep the samples ``index`` (B,), e.g. after SMC resampling: state, history and the
        last model outputs follow. Noise streams stay those of the batch slots."""
        st = self.state
        self.state = {k: v[index] if v.dim() > 0 and v.shape[0] == self.batch else v for k, v in st.items()}
        self.hist = _index(self.hist, index, self.batch)
        self.last = _index(self.last, index, self.batch)

    # -- model evaluation --
    def evaluate(self, state: State, t: Tensor) -> Mapping[str, Tensor]:
        """One model call at time ``t`` (scalar or (B,))."""
        tm = _time(t, self.batch, self.dtype)
        return self.model(state, tm) if self.cond is None else self.model(state, tm, self.cond)

    def split(self, out: Mapping[str, Tensor], xf: Tensor, c: Coefs | dict[str, Coefs],
              st: State, x0: bool = True) -> tuple[Tensor | None, Tensor]:
        """Packed ``(x0, eps)`` estimates from the model's raw Gaussian predictions; ``c`` is the
        packed coefficients at the evaluation time (or their per-field views). ``x0=False``:
        only the noise estimate is wanted (``(None, eps)``; a noise-predicting field then costs
        nothing)."""
        p = self.packer
        views = c if isinstance(c, dict) else {k: p.field_view(c, k, self.batch) for k in p.names}
        ds, es = {}, {}
        xs = p.unpack(xf)
        for k in p.names:
            f = self.fields[k]
            if k not in out:
                raise KeyError(f"the model returned no prediction for field {k!r} (got {sorted(out)})")
            pred = out[k]
            pred = pred if pred.dtype == self.dtype else pred.to(self.dtype)
            d, e = (None, pred) if not x0 and f.prediction == "eps" else to_x0_eps(pred, f.prediction, xs[k], views[k])
            if not isinstance(f.structure, Plain):
                d, e = (f.structure.project(d, st) if x0 else None), f.structure.project(e, st)
            ds[k], es[k] = d, e
        return (p.pack(ds) if x0 else None), p.pack(es)

    def structured_noise(self) -> Tensor:
        """Fresh N(0, I) noise for the packed Gaussian fields, respecting their structures."""
        st = self._state
        zs = {k: self.fields[k].structure.noise(self.noise.randn(self.packer.shapes[k], self.dtype).to(self.x.device),
                                                st) for k in self.packer.names}
        return self.packer.pack(zs)

    def field_norm(self, v: Tensor) -> Tensor:
        """Per-sample, per-field L2 norm of a packed tensor, broadcast back to the packing."""
        return self.packer.expand_fields(torch.sqrt(self.packer.segment_sum(v * v)))

    # -- one step --
    def step(self, i: int) -> dict[str, Tensor]:
        """Advance every field from ``ts[i]`` to ``ts[i+1]``; returns the clean estimates."""
        state = self.state
        out = self.model(state, self._tm[i]) if self.cond is None else self.model(state, self._tm[i], self.cond)
        self.last = dict(out)
        x0: dict[str, Tensor] = {}
        if self.packer.names:
            d, e = self.split(out, self.x, self._views[i], state)
            x0.update(self.packer.unpack(d))
            if self.final_zero and i == self.n - 1:
                self.x = d
            else:
                self.x, self.hist = self.gdef.step(self.x, d, e, self.coefs[i], self.coefs[i + 1], self.hist,
                                                   self.context(i, None, None, state))
        if self.cat_names or self.man_names:
            t, s = self.ts[i], self.ts[i + 1]
        for k in self.cat_names:
            p0 = _probs(out, k, self.fields[k].process)
            state[k] = self.cdef.step(state[k], p0, _time(t, self.batch, torch.float64),
                                      _time(s, self.batch, torch.float64), self.fields[k].process, self.noise)
            x0[k] = p0
        for k in self.man_names:
            proc = self.fields[k].process
            if k not in out:
                raise KeyError(f"the model returned no prediction for field {k!r} (got {sorted(out)})")
            x0[k] = out[k].to(self.dtype)
            tb, sb = _time(t, self.batch, self.dtype), _time(s, self.batch, self.dtype)
            state[k] = proc.manifold.project(proc.step(state[k].to(self.dtype), x0[k], tb, sb))
        return x0

    def context(self, i: int, t: Tensor | None, s: Tensor | None, state: State) -> StepContext:
        """The :class:`StepContext` of step ``i`` from ``t`` to ``s`` (None: the grid's ``ts[i]``,
        ``ts[i+1]``) at ``state`` (for code that applies a step function itself, e.g. SMC
        transition densities).

        Extra model calls at the step's own ends (``ctx.denoise(x, ctx.t)`` / ``ctx.s``) reuse
        the grid's precomputed coefficients; other stage times are evaluated once each, however
        often ``coefs`` and ``denoise`` ask for them."""
        cur = dict(state)
        p, b, dt = self.packer, self.batch, self.dtype
        tc = self._tc[i] if t is None else _col(t, dt)
        sc = self._tc[i + 1] if s is None else _col(s, dt)
        on_grid = t is None and s is None
        # stage time -> (time, packed coefficients, per-field views, model time), by identity
        memo: dict[int, tuple[Tensor, Coefs, dict[str, Coefs], Tensor]] = {}
        if on_grid:
            memo.update({id(tc): (tc, self.coefs[i], self._views[i], self._tm[i]),
                         id(sc): (sc, self.coefs[i + 1], self._views[i + 1], self._tm[i + 1])})

        def at(u: Tensor) -> tuple[Coefs, dict[str, Coefs], Tensor]:
            """Packed coefficients, their per-field views and the model's time at ``u``."""
            got = memo.get(id(u))
            if got is None or got[0] is not u:
                flat = u.reshape(-1) if u.dim() > 1 else u
                c = _cast(p.coefs(flat, b), dt)
                got = memo[id(u)] = (u, c, {k: p.field_view(c, k, b) for k in p.names}, _time(flat, b, dt))
            return got[1], got[2], got[3]

        def stages(rs: tuple[float, ...]) -> list[tuple[Tensor, Coefs]]:
            rows = self._stage_table(tuple(rs))[0][i]
            memo.update({id(r[0]): r for r in rows})
            return [(r[0], r[1]) for r in rows]

        def denoise(xu: Tensor, u: Tensor, x0: bool = True) -> tuple[Tensor | None, Tensor]:
            _, views, tm = at(u)
            st = {**cur, **p.unpack(xu)}
            out = self.model(st, tm) if self.cond is None else self.model(st, tm, self.cond)
            return self.split(out, xu, views, st, x0)

        def coefs(u: Tensor) -> Coefs:
            return at(u)[0]

        def table(key: Any, fn: Callable[..., Any], n_prev: int, rs: tuple[float, ...],
                  node: Callable[[Coefs], Tensor] | None) -> Any:
            return self._coef_table(key, fn, n_prev, rs, node)[i]

        t_of_lam = self.ref.t_of_lam if self.ref is not None else None
        grid_ok = on_grid and self.ref is not None
        return StepContext(i, self.n, tc, sc, denoise, coefs, self.structured_noise, self.field_norm, self.opts,
                           t_of_lam, stages if grid_ok else None, table if grid_ok else None,
                           grid_ok and self._finite[i])

    def _coef_table(self, key: Any, fn: Callable[..., Any], n_prev: int, rs: tuple[float, ...],
                    node: Callable[[Coefs], Tensor] | None) -> list[Any]:
        """``fn(ct, cs, prev, stages)`` for every step at once, split into per-step values.

        ``ct`` / ``cs`` are the grid's packed coefficients at the steps' start and end times,
        stacked on a new leading step dimension; ``prev[j]`` is ``node`` of the coefficients
        ``j + 1`` grid points before each step's start (the history nodes a multistep method
        would read from its history; steps with fewer predecessors get distinct finite
        stand-ins, which those steps never use); ``stages[r]`` the stacked coefficients at the
        stage fractions ``rs`` (see :meth:`_stage_table`). Made on first use per ``key``."""
        full = (key, n_prev, rs)
        if full not in self._tables:
            if self._ends is None:
                self._ends = table_coefs(self._table[:, :-1]), table_coefs(self._table[:, 1:])
            ct, cs = self._ends
            prev = []
            if n_prev:
                nodes = node(table_coefs(self._table))  # (K+1, ...)
                for j in range(1, n_prev + 1):
                    pad = nodes[:1] - torch.arange(j, 0, -1, dtype=nodes.dtype, device=nodes.device).reshape(
                        -1, *([1] * (nodes.dim() - 1)))
                    prev.append(torch.cat([pad, nodes[: max(self.n - j, 0)]])[: self.n])
            stages = []
            if rs:  # per fraction, the stage coefficients of every step (the stage table is fraction-major)
                table = self._stage_table(rs)[1]
                stages = [table_coefs(table[:, j * self.n:(j + 1) * self.n]) for j in range(len(rs))]
            self._tables[full] = _split_steps(fn(ct, cs, prev, stages), self.n)
        return self._tables[full]

    def _stage_table(self, rs: tuple[float, ...]) -> tuple[list[list[tuple[Tensor, Coefs, dict[str, Coefs], Tensor]]],
                                                           Tensor]:
        """For every step, the times at fractions ``rs`` of its reference log-SNR interval (the
        reference field's, clipped as the methods clip it), or with ``stages="grid"`` the inner
        points of the finer grid, with their packed coefficients, per-field views and model
        times; and their (5, R * K, ...) coefficient table, fraction-major (for :meth:`_coef_table`).
        One schedule evaluation for the whole grid, made on first use (singlestep stages)."""
        if rs not in self._stages:
            n_r, n = len(rs), self.n
            if self._fine is not None:  # stages="grid": the inner points of the finer grid
                k = n_r + 1
                if k != self.gdef.nfe_per_step:
                    raise ValueError(f"stages='grid' gives {self.gdef.nfe_per_step - 1} stages per step, "
                                     f"the method asked for {n_r}")
                inner = torch.tensor([i * k + j for j in range(1, k) for i in range(n)], device=self._fine.device)
                times, table = self._fine[inner], self._fine_table[:, inner]  # fraction-major (R * K[, B])
            else:
                lam = clip_lam(self._ref_lam64)  # (K+1,) or (K+1, B), float64
                frac = stage_fractions(rs, torch.float64, lam.device).reshape(-1, 1, *([1] * (lam.dim() - 1)))
                lt = lam[:-1].unsqueeze(0)  # (1, K[, B])
                times = self.ref.t_of_lam(torch.addcmul(lt, frac, lam[1:].unsqueeze(0) - lt)).flatten(0, 1)
                table, _ = self.packer.grid_table(times, self.batch, self.dtype)
            tms, cols = _grid_times(times, self.batch, self.dtype)
            us = cols if times.dim() == 1 else times.to(self.dtype).unbind(0)
            cs = per_time(table)
            p, b = self.packer, self.batch
            entries = [(u, c, {k: p.field_view(c, k, b) for k in p.names}, tm) for u, c, tm in zip(us, cs, tms)]
            rows = [[entries[j * n + i] for j in range(n_r)] for i in range(n)]
            self._stages[rs] = rows, table
        return self._stages[rs]

    def renoise(self, i: int) -> None:
        """Take the Gaussian fields from ``ts[i+1]`` back to ``ts[i]`` by the forward transition
        (RePaint's resampling); masked tokens are re-masked with the forward probability."""
        if self.packer.names:
            ct, cs = self.coefs[i], self.coefs[i + 1]
            ratio = ct.alpha / cs.alpha
            var = (ct.sigma**2 - ratio**2 * cs.sigma**2).clamp_min(0)
            self.x = ratio * self.x + var.sqrt() * self.structured_noise()
            self.hist = None
        state = self.state
        for k in self.cat_names:
            proc = self.fields[k].process
            if isinstance(proc, Absorbing):
                keep = (proc.alpha(self.ts[i]) / proc.alpha(self.ts[i + 1])).to(torch.float64)
                u = self.noise.rand(state[k].shape[1:]).to(state[k].device)
                state[k] = torch.where(u < keep, state[k], torch.full_like(state[k], proc.mask_id))

    def finish(self) -> State:
        """The final state; tokens still masked at ``t_min > 0`` take their last predicted value."""
        state = self.state
        for k in self.cat_names:
            proc = self.fields[k].process
            if isinstance(proc, Absorbing) and k in self.last:
                left = state[k] == proc.mask_id
                u = self.noise.rand(state[k].shape[1:]).to(state[k].device)
                state[k] = torch.where(left, sample_categorical(_probs(self.last, k, proc), u), state[k])
        return state


def run(model: Model, fields: Mapping[str, FieldSpec], state: State, noise: Noise, *,
        callback: Callable[[dict[str, Any]], None] | None = None, **loop_options: Any) -> State:
    """Run a :class:`SamplingLoop` to the end on an initialised state."""
    loop = SamplingLoop(model, fields, state, noise, **loop_options)
    for i in range(loop.n):
        x0 = loop.step(i)
        if callback is not None:
            callback({"i": i, "t": loop.ts[i], "s": loop.ts[i + 1], "state": loop.state, "x0": x0})
    return loop.finish()


def prepare(model: Model, process: Any, shape_or_state: tuple[int, ...] | Mapping[str, Any], *,
            prediction: str = "eps", seed: int | Tensor | None = None, generator: torch.Generator | None = None,
            dtype: torch.dtype = torch.float32, device: torch.device | str | None = None,
            wrap_model: Callable[[Model], Model] | None = None) -> tuple[Model, dict[str, FieldSpec], State, Noise,
                                                                          str | None]:
    """Normalise :func:`sample`'s inputs: a state-level model, field specs, the initial state,
    the noise stream, and the field name when a single field was given by shape."""
    fields = as_fields(process, prediction)
    single = not isinstance(shape_or_state, Mapping)
    name = None
    if single:
        (name,) = fields
        spec: dict[str, Any] = {name: tuple(shape_or_state)}

        def state_model(state: State, t: Tensor, c: Any = None) -> dict[str, Tensor]:
            out = model(state[name], t) if c is None else model(state[name], t, c)
            return {name: out}
    else:
        spec = dict(shape_or_state)
        state_model = model
    if wrap_model is not None:
        state_model = wrap_model(state_model)
    batch = _batch_size(spec)
    dev = torch.device(device) if device is not None else _device_of(spec)
    noise = Noise(batch, seed=seed, generator=generator, device=dev)
    return state_model, fields, init_state(fields, spec, noise, dev, dtype), noise, name


def sample(model: Model, process: Any, shape_or_state: tuple[int, ...] | Mapping[str, Any], *,
           sampler: str = "dpm++2m", steps: int = 20, grid: str | Tensor | None = None,
           prediction: str = "eps", categorical: str = "ancestral", seed: int | Tensor | None = None,
           generator: torch.Generator | None = None, cond: Any = None, t_max: float | None = None,
           t_min: float | None = None, final_zero: bool = False, dtype: torch.dtype = torch.float32,
           device: torch.device | str | None = None, callback: Callable[[dict[str, Any]], None] | None = None,
           wrap_model: Callable[[Model], Model] | None = None, **options: Any) -> Tensor | State:
    """Generate a batch by walking a time grid from noise to data.

    Args:
        model: ``model(x, t[, cond]) -> prediction`` for a single field given as a process and
            a shape, or ``model(state, t[, cond]) -> {field: prediction}`` for a dict of fields.
        process: a process, a :class:`FieldSpec`, or ``{name: FieldSpec | process}``.
        shape_or_state: the shape of the single field, or a state dict whose field entries are
            shapes (drawn from the prior) or tensors (initial values at the grid's first time)
            and whose other entries (masks, conditions) are passed through.
        sampler: a Gaussian method from ``polydiff samplers``; ``categorical`` likewise.
        steps, grid, t_max, t_min, final_zero: the time grid (see :func:`polydiff.grids.make_grid`;
            ``grid=None`` takes the schedule's default).
        prediction: what the model predicts for Gaussian fields given as bare processes.
        seed: per-sample seeds (an int s gives sample b the seed (s, b)); ``generator`` instead
            for ordinary torch RNG semantics (then samples depend on the batch).
        dtype: solver arithmetic dtype. callback: called after every step with a dict of
            ``i``, ``t``, ``s``, ``state`` and ``x0`` (clean estimates).
        wrap_model: a function applied to the internal state-level model (guidance wrappers).
        options: options of the Gaussian method (e.g. ``eta``, ``order``), listed by
            ``polydiff samplers``.

    Returns: the final tensor for a single field given by shape, else the final state.
    """
    state_model, fields, state, noise, name = prepare(model, process, shape_or_state, prediction=prediction,
                                                      seed=seed, generator=generator, dtype=dtype, device=device,
                                                      wrap_model=wrap_model)
    out = run(state_model, fields, state, noise, sampler=sampler, steps=steps, grid=grid, categorical=categorical,
              cond=cond, t_max=t_max, t_min=t_min, final_zero=final_zero, dtype=dtype, callback=callback, **options)
    return out[name] if name is not None else out


def _probs(out: Mapping[str, Tensor], name: str, process: Any) -> Tensor:
    """Clean-token probabilities (float64) from the model's logits over the clean vocabulary."""
    if name not in out:
        raise KeyError(f"the model returned no prediction for field {name!r} (got {sorted(out)})")
    logits = out[name]
    if logits.shape[-1] != process.vocab:
        raise ValueError(f"field {name!r}: logits have {logits.shape[-1]} classes, the process has vocab "
                         f"{process.vocab} (do not include the mask token)")
    return torch.softmax(logits.to(torch.float64), dim=-1)


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
