"""The sampling loop: one grid, one model call per stage, every field advanced by its process.

``sample`` is the low-level entry point. It draws the prior for each field, walks an explicit
time grid (:class:`polydiff.samplers.plan.GridPlan`), calls the model once per step on the
whole state, converts each Gaussian field's prediction to ``(x0, eps)`` and advances

- the packed Gaussian fields with the chosen Gaussian method (``sampler=``),
- every categorical field with the chosen categorical method (``categorical=``),
- every manifold field with its geodesic step,

all on the same grid. Solver arithmetic runs in ``settings.dtype`` (float32 or float64); the
network receives the state and the time in its own dtype (``model_dtype``, by default that of
its parameters) and its outputs are cast back; categorical draws are always float64. Entries
outside a field's mask (its structure's ``mask`` entry) are never drawn: Gaussian fields are
zero there, manifold fields hold the manifold's origin, categorical fields token 0. The loop
never reads a tensor back to the host, so it can be compiled or captured.

:class:`SamplingLoop` exposes the loop one step at a time, so steering (SMC), inpainting
with resampling and other inference-time control can act between steps without
re-implementing it.
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from ..parametrization import to_x0_eps
from ..processes.categorical import Absorbing
from ..processes.gaussian import Coefs
from ..random import Noise, sample_categorical
from ..state import FieldSpec, Packer, State, as_fields, field_mask
from ..structures import Plain
from .base import CategoricalContext, SamplerDef, SampleSettings, StepContext, get_sampler, settings_of
from .plan import GridPlan, Stage, cast_coefs, column, model_time

Model = Callable[..., Any]


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
    initial values of a field). Entries outside a field's mask are never drawn: zero for
    Gaussian fields, the manifold's origin for manifold fields, token 0 for categorical ones."""
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
            continue
        if f.kind == "categorical":
            if isinstance(p, Absorbing):
                x = p.prior_sample(shape, device=device)
            else:
                x = p.prior_sample(shape, u=noise.rand(shape[1:]).to(device))
        else:
            u = noise.rand(shape[1:], dtype) if p.prior_kind == "uniform" else noise.randn(shape[1:], dtype)
            x = p.manifold.project(p.manifold.prior(shape, u.to(device)))
        state[name] = hold_padding(f, x, state)
    return state


def hold_padding(f: FieldSpec, x: Tensor, state: Mapping[str, Tensor], new: Tensor | None = None) -> Tensor:
    """``new`` (default ``x``) where the field is present, its padding value elsewhere (token 0
    for categorical fields, the manifold's origin for manifold fields); ``x`` unchanged for
    fields without a mask."""
    m = field_mask(f, state, x)
    new = x if new is None else new
    if m is None:
        return new
    if f.kind == "categorical":
        pad = torch.zeros((), dtype=x.dtype, device=x.device)
    else:
        pad = f.process.manifold.origin(x.shape, x.dtype, x.device)
    return torch.where(m, new, pad)


def model_dtype_of(model: Any) -> torch.dtype | None:
    """The floating dtype of a network's parameters (None for other callables)."""
    if isinstance(model, nn.Module):
        for p in model.parameters():
            if p.is_floating_point():
                return p.dtype
    return None


class SamplingLoop:
    """The sampler as an explicit loop: ``for i in range(loop.n): loop.step(i)``, then
    ``loop.finish()``. Between steps, ``loop.state`` may be read or replaced, ``loop.select``
    resamples the batch (SMC) and ``loop.renoise`` takes the Gaussian fields back one step
    (RePaint). Everything the method carries (history, noise counter) lives here, in the open;
    the grid and its precomputed schedule values live in ``loop.plan``.
    """

    def __init__(self, model: Model, fields: Mapping[str, FieldSpec], state: State, noise: Noise,
                 settings: SampleSettings | None = None, *, cond: Any = None, model_dtype: torch.dtype | None = None,
                 **keywords: Any) -> None:
        settings = settings_of(settings, **keywords)
        self.settings = settings
        gdef: SamplerDef = get_sampler(settings.sampler)
        self.cat_names = [k for k, f in fields.items() if f.kind == "categorical"]
        self.man_names = [k for k, f in fields.items() if f.kind == "manifold"]
        self.packer = Packer(fields, state)
        cname = settings.categorical
        opts = dict(settings.options)
        cat_only = gdef.kind == "categorical"  # a categorical sampler for a state without Gaussian fields
        if cat_only:
            if self.packer.names:
                raise ValueError(f"sampler {settings.sampler!r} is a categorical sampler, but the state has Gaussian "
                                 f"fields ({', '.join(self.packer.names)}): name a Gaussian sampler and pass "
                                 f"categorical={settings.sampler!r}")
            cname, gdef = settings.sampler, get_sampler("ddim")  # ddim: only a stand-in, no Gaussian field moves
        self.cdef: SamplerDef = get_sampler(cname)
        if self.cdef.kind != "categorical":
            raise ValueError(f"categorical={cname!r} is not a categorical sampler")
        if self.cdef.loop == "own":
            raise ValueError(f"categorical sampler {cname!r} runs its own loop: use polydiff.sample (not "
                             "SamplingLoop) on a state whose fields are all absorbing")
        self.gdef = gdef
        self._own_calls = gdef.loop == "calls"  # the step makes the model calls (two-time models)
        if cat_only:  # every option is the categorical sampler's
            self.opts, self.cat_opts = gdef.options({}), self.cdef.options(opts)
        else:  # options only the categorical sampler knows go to it, the others to the Gaussian one
            cat_opts = {k: opts.pop(k) for k in list(opts) if k in self.cdef.defaults and k not in gdef.defaults}
            self.opts, self.cat_opts = gdef.options(opts), self.cdef.options(cat_opts)
        self.model, self.fields, self.noise, self.cond = model, dict(fields), noise, cond
        self.dtype = dtype = settings.dtype
        self.model_dtype = model_dtype or dtype
        self._recast = self.model_dtype != dtype
        self._plain_call = not self._recast and cond is None
        self.batch = noise.batch
        self.ref = next((f.process.schedule for f in fields.values() if f.kind == "gaussian"), None)
        if gdef.loop == "calls" and (self.cat_names or self.man_names):
            raise ValueError(f"sampler {gdef.name!r} makes its own model calls and advances Gaussian fields only; "
                             f"this state also has fields {', '.join(self.cat_names + self.man_names)}")
        # a step that makes every model call itself with these options: no loop call on Gaussian-only states
        self._lazy = bool(gdef.lazy and gdef.lazy(self.opts)) and not (self.cat_names or self.man_names)
        plan = self.plan = GridPlan(self.packer, self.ref, gdef, settings, self.batch, noise.device, self.model_dtype,
                                    stages_on_grid=self.opts.get("stages") == "grid",
                                    step_calls=self.opts.get("orders") if "orders" in gdef.defaults else None)
        self.ts, self.n, self.coefs, self._views = plan.ts, plan.n, plan.coefs, plan.views
        calls = max(self.opts.get("orders") or (gdef.nfe_per_step,))  # one step's model calls
        if self.packer.names and self.n == 1 and calls > 1:
            warnings.warn(f"sampler {gdef.name!r} takes one {calls}-call step over the whole range: "
                          "its higher-order update from pure noise can land far from the data (measured on a 2-D "
                          "mixture: a spread 20-70x the data's); take more steps, or one step of a first-order "
                          "method (ddim, euler)", stacklevel=2)
        self._tm, self._tc = plan.model_times, plan.cols
        if self.packer.names:
            sde_drift = gdef.name == "euler_maruyama" or (gdef.name == "pc" and self.opts.get("predictor") == "euler")
            if sde_drift and not bool(torch.isfinite(self.coefs[0].dalpha / self.coefs[0].alpha).all()):
                what = f"sampler {gdef.name!r}" + (" with predictor='euler'" if gdef.name == "pc" else "")
                raise ValueError(f"{what} needs alpha(t) > 0 on the whole grid (its reverse-SDE drift divides by it); "
                                 "the process reaches alpha = 0 at t_max: lower t_max or use an ODE sampler / ddim / "
                                 "ddpm")
            if plan.alpha_min_start <= 0:
                for k in self.packer.names:
                    f = self.fields[k]
                    if f.prediction in ("eps", "score") and not bool((self._views[0][k].alpha > 0).all()):
                        raise ValueError(f"field {k!r}: a {f.prediction!r} prediction gives no clean estimate "
                                         "where alpha(t) = 0 (the grid starts there); predict x0 / v / velocity or "
                                         "lower t_max")
        self.final_zero = plan.final_zero
        self._state = dict(state)
        self.x = self.packer.pack(state).to(dtype) if self.packer.names else None
        self.hist: Any = None
        self.last: dict[str, Tensor] = {}

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
    def call(self, state: State, tm: Tensor, s: Tensor | None = None) -> Mapping[str, Tensor]:
        """One model call on ``state`` at the model time ``tm`` (B,) (and, for two-time models,
        the target time ``s``), the generated fields in the model's dtype."""
        if self._recast:
            state = {k: v.to(self.model_dtype) if k in self.fields and v.is_floating_point() else v
                     for k, v in state.items()}
        if s is None:
            return self.model(state, tm) if self.cond is None else self.model(state, tm, self.cond)
        return self.model(state, tm, s=s) if self.cond is None else self.model(state, tm, self.cond, s=s)

    def evaluate(self, state: State, t: Tensor) -> Mapping[str, Tensor]:
        """One model call at time ``t`` (scalar or (B,))."""
        return self.call(state, model_time(t, self.batch, self.model_dtype))

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
            if type(f.structure).project is not Plain.project:  # skip only identity projections
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
        """Advance every field from ``ts[i]`` to ``ts[i+1]``; returns the clean estimates (for a
        sampler that makes its own model calls, only those of the non-Gaussian fields)."""
        state = self.state
        own = self._own_calls or (self._lazy and not (self.final_zero and i == self.n - 1))
        if own:
            out = {}
        elif self._plain_call:  # the common case, without a frame of its own
            out = self.model(state, self._tm[i])
        else:
            out = self.call(state, self._tm[i])
        self.last = dict(out)
        x0: dict[str, Tensor] = {}
        if self.packer.names:
            if own:
                self.x, self.hist = self.gdef.step(self.x, None, None, self.coefs[i], self.coefs[i + 1], self.hist,
                                                   self.context(i, None, None, state))
            else:
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
            f = self.fields[k]
            p0 = _probs(out, k, f.process)
            ctx = CategoricalContext(i, self.n, self.noise, self.cat_opts, state, field_mask(f, state, state[k]))
            new = self.cdef.step(state[k], p0, model_time(t, self.batch, torch.float64),
                                 model_time(s, self.batch, torch.float64), f.process, ctx)
            state[k] = new if ctx.mask is None else torch.where(ctx.mask, new, state[k])
            x0[k] = p0
        for k in self.man_names:
            f = self.fields[k]
            if k not in out:
                raise KeyError(f"the model returned no prediction for field {k!r} (got {sorted(out)})")
            x0[k] = out[k].to(self.dtype)
            tb, sb = model_time(t, self.batch, self.dtype), model_time(s, self.batch, self.dtype)
            cur = state[k].to(self.dtype)
            state[k] = hold_padding(f, cur, state, f.process.manifold.project(f.process.step(cur, x0[k], tb, sb)))
        return x0

    def context(self, i: int, t: Tensor | None, s: Tensor | None, state: State) -> StepContext:
        """The :class:`StepContext` of step ``i`` from ``t`` to ``s`` (None: the grid's ``ts[i]``,
        ``ts[i+1]``) at ``state`` (for code that applies a step function itself, e.g. SMC
        transition densities).

        Extra model calls at the step's own ends (``ctx.denoise(x, ctx.t)`` / ``ctx.s``) reuse
        the grid's precomputed coefficients; other stage times are evaluated once each, however
        often ``coefs`` and ``denoise`` ask for them."""
        cur = dict(state)
        p, b, dt, plan = self.packer, self.batch, self.dtype, self.plan
        tc = self._tc[i] if t is None else column(t, dt)
        sc = self._tc[i + 1] if s is None else column(s, dt)
        on_grid = t is None and s is None
        # (time, packed coefficients, per-field views, model time) of the stage times seen, found
        # by identity (``is``, not ``id()``: a compiled loop then guards on no tensor's address)
        memo: list[Stage] = []
        if on_grid:
            memo += [(tc, self.coefs[i], self._views[i], self._tm[i]),
                     (sc, self.coefs[i + 1], self._views[i + 1], self._tm[i + 1])]

        def at(u: Tensor) -> tuple[Coefs, dict[str, Coefs], Tensor]:
            """Packed coefficients, their per-field views and the model's time at ``u``."""
            got = next((row for row in memo if row[0] is u), None)
            if got is None:
                flat = u.reshape(-1) if u.dim() > 1 else u
                c = cast_coefs(p.coefs(flat, b), dt)
                got = (u, c, {k: p.field_view(c, k, b) for k in p.names}, model_time(flat, b, self.model_dtype))
                memo.append(got)
            return got[1], got[2], got[3]

        def stages(rs: tuple[float, ...]) -> list[tuple[Tensor, Coefs]]:
            rows = plan.stage_table(tuple(rs))[0][i]
            memo.extend(rows)
            return [(r[0], r[1]) for r in rows]

        def denoise(xu: Tensor, u: Tensor, x0: bool = True) -> tuple[Tensor | None, Tensor]:
            _, views, tm = at(u)
            st = {**cur, **p.unpack(xu)}
            return self.split(self.call(st, tm), xu, views, st, x0)

        jump = None
        if self._own_calls:  # two-time models: G(x, u -> v)
            def jump(xu: Tensor, u: Tensor, v: Tensor) -> Tensor:
                _, views, tm = at(u)
                cv, _, sm = at(v)
                st = {**cur, **p.unpack(xu)}
                d, e = self.split(self.call(st, tm, sm), xu, views, st)
                return torch.addcmul(cv.sigma * e, cv.alpha, d)

        def coefs(u: Tensor) -> Coefs:
            return at(u)[0]

        def table(key: Any, fn: Callable[..., Any], n_prev: int, rs: tuple[float, ...],
                  node: Callable[[Coefs], Tensor] | None) -> Any:
            return plan.coef_table(key, fn, n_prev, rs, node)[i]

        t_of_lam = self.ref.t_of_lam if self.ref is not None else None
        grid_ok = on_grid and self.ref is not None
        return StepContext(i, self.n, tc, sc, denoise, coefs, self.structured_noise, self.field_norm, self.opts,
                           t_of_lam, stages if grid_ok else None, table if grid_ok else None,
                           grid_ok and plan.finite[i], jump)

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
            f = self.fields[k]
            proc = f.process
            if isinstance(proc, Absorbing):
                keep = (proc.alpha(self.ts[i]) / proc.alpha(self.ts[i + 1])).to(torch.float64)
                u = self.noise.rand(state[k].shape[1:]).to(state[k].device)
                new = torch.where(u < keep, state[k], torch.full_like(state[k], proc.mask_id))
                state[k] = hold_padding(f, state[k], state, new)

    def finish(self) -> State:
        """The final state; tokens still masked at ``t_min > 0`` take their last predicted value."""
        state = self.state
        for k in self.cat_names:
            f = self.fields[k]
            proc = f.process
            if isinstance(proc, Absorbing) and k in self.last:
                left = state[k] == proc.mask_id
                u = self.noise.rand(state[k].shape[1:]).to(state[k].device)
                state[k] = torch.where(left, sample_categorical(_probs(self.last, k, proc), u), state[k])
        return state


def compiles_loop(compile: bool | str) -> bool:
    """Whether a ``compile`` setting compiles the whole fixed-step loop (one graph per batch size),
    rather than the network alone (``True`` / ``"network"``) or nothing."""
    return bool(compile) and compile not in (True, "network")


def run(model: Model, fields: Mapping[str, FieldSpec], state: State, noise: Noise,
        settings: SampleSettings | None = None, *, cond: Any = None, model_dtype: torch.dtype | None = None,
        callback: Callable[[dict[str, Any]], None] | None = None, **keywords: Any) -> State:
    """Run a :class:`SamplingLoop` to the end on an initialised state (or, for a categorical
    sampler with its own loop such as ``first_hitting``, that loop)."""
    settings = settings_of(settings, **keywords)
    sdef = get_sampler(settings.sampler)
    if sdef.nfe_per_step == 0 and compiles_loop(settings.compile):  # adaptive: the host picks each sub-step
        raise ValueError(f"sampler {sdef.name!r} chooses its sub-steps on the host (adaptive); "
                         f"compile={settings.compile!r} needs a fixed-step sampler (compile=True compiles only the "
                         "network)")
    if sdef.loop == "own":
        if settings.compile in (True, "network"):
            model = compiled(model)
        elif compiles_loop(settings.compile):
            raise ValueError(f"sampler {sdef.name!r} runs its own loop with host decisions; "
                             f"compile={settings.compile!r} needs a fixed-step sampler (compile=True compiles only "
                             "the network)")
        return sdef.step(model, fields, state, noise, settings, cond=cond, callback=callback)
    loop = SamplingLoop(model, fields, state, noise, settings, cond=cond, model_dtype=model_dtype)
    if settings.compile in (True, "network"):  # the network alone: one graph for every step
        loop.model = compiled(loop.model)
    elif compiles_loop(settings.compile):
        if callback is not None:
            raise ValueError(f"compile={settings.compile!r} runs the whole loop as one graph: a callback cannot run "
                             "between steps (compile='network' compiles only the network)")
        return compiled_walk(settings.compile)(loop)
    for i in range(loop.n):
        x0 = loop.step(i)
        if callback is not None:
            callback({"i": i, "t": loop.ts[i], "s": loop.ts[i + 1], "state": loop.state, "x0": x0})
    return loop.finish()


def walk(loop: SamplingLoop) -> State:
    """Every step of ``loop``, then its final state (the loop body :func:`compiled_walk` compiles)."""
    for i in range(loop.n):
        loop.step(i)
    return loop.finish()


_LOOP_MODES = {"loop": "default", "cudagraphs": "reduce-overhead", "max-autotune": "max-autotune"}
COMPILE_MODES = (False, True, "network", *_LOOP_MODES)  # what ``compile=`` takes
_COMPILED: dict[tuple[str, bool], Callable[[SamplingLoop], State]] = {}


def compiled(model: Model) -> Model:
    """``model`` under ``torch.compile`` (the network-only setting, ``compile=True``): one
    graph reused by every step and call; dynamo caches it per code object, so a fresh wrapper
    around the same network compiles nothing new. The first graph is specialised to its
    shapes; the first call with another batch size or length compiles once more with that
    dimension symbolic, and that graph serves every later size (rollouts whose batch shrinks
    as episodes end, molecules and proteins of varying size). Fully static graphs
    (``dynamic=False``) recompiled for every new size and were slower than eager there.
    Inputs that are views reach the graph as plain tensors (:func:`unviewed`)."""
    graph = torch.compile(model, dynamic=None)

    def call(*args: Any, **kwargs: Any) -> Any:
        args, kwargs = unviewed((args, kwargs))
        return graph(*args, **kwargs)

    return call


def unviewed(tree: Any) -> Any:
    """``tree`` with every tensor that is a view (``_base`` set) and needs no gradient replaced by
    a detached alias of the same memory (no copy). Dynamo guards on a view's base: a field that
    is a view of a ``(B, N, 3)`` tensor in one step and of a flat ``(B, 3 N)`` one in the next
    recompiled the graph (molecules: 38 s for a float network, 53 s quantized, on the first call
    after the warm-up)."""
    def plain(x: Any) -> Any:
        return x.detach() if isinstance(x, Tensor) and x._base is not None and not x.requires_grad else x

    return torch.utils._pytree.tree_map(plain, tree)


def compiled_walk(mode: bool | str = "loop", fullgraph: bool = False) -> Callable[[SamplingLoop], State]:
    """:func:`walk` under ``torch.compile``: the whole fixed-step loop unrolled into one graph
    (``mode``: ``"loop"``; ``"cudagraphs"`` also captures it in a CUDA graph; ``"max-autotune"``).
    One compiled function per mode, so every loop of the same sampler, grid length and shapes
    reuses the graph: the loop reads nothing back to the host and its memo of stage times
    compares tensors by identity, so it neither breaks nor recompiles per call (a new batch
    size compiles once more, with that dimension symbolic, as for :func:`compiled`; the
    generator computes a short last chunk as a full one, so a run keeps one size). Compilation
    grows with the number of steps: for long grids compile the network alone (``compile=True``).
    ``fullgraph=True`` makes any graph break an error (the tests' proof that the loop has no
    host synchronisation)."""
    name = "loop" if mode is True else str(mode)
    if name not in _LOOP_MODES:
        raise ValueError(f"compile must be True / 'network' (the network), or 'loop', 'cudagraphs' or 'max-autotune' "
                         f"(the whole loop), got {mode!r}")
    key = (name, fullgraph)
    if key not in _COMPILED:
        _COMPILED[key] = torch.compile(walk, mode=_LOOP_MODES[name], fullgraph=fullgraph, dynamic=None)
    graph = _COMPILED[key]

    def call(loop: SamplingLoop) -> State:
        loop._state = unviewed(loop._state)  # the fields as given (not re-packed: ``x`` holds the same values)
        if name == "cudagraphs" and not any(isinstance(v, Tensor) and v.is_cuda
                                            for v in torch.utils._pytree.tree_leaves(loop._state)):
            warnings.warn("compile='cudagraphs' captures CUDA graphs on a GPU; on this device it runs as "
                          "compile='loop'", stacklevel=3)
        return graph(loop)

    return call


def prepare(model: Model, process: Any, shape_or_state: tuple[int, ...] | Tensor | Mapping[str, Any], *,
            prediction: str = "eps", seed: int | Tensor | None = None, generator: torch.Generator | None = None,
            dtype: torch.dtype = torch.float32, device: torch.device | str | None = None,
            wrap_model: Callable[[Model], Model] | None = None) -> tuple[Model, dict[str, FieldSpec], State, Noise,
                                                                          str | None]:
    """Normalise :func:`sample`'s inputs: a state-level model, field specs, the initial state,
    the noise stream, and the field name when a single field was given by shape or tensor."""
    fields = as_fields(process, prediction)
    single = not isinstance(shape_or_state, Mapping)
    name = None
    if single:
        (name,) = fields
        spec: dict[str, Any] = {name: shape_or_state if isinstance(shape_or_state, Tensor) else tuple(shape_or_state)}

        def state_model(state: State, t: Tensor, c: Any = None, **kw: Any) -> dict[str, Tensor]:
            out = model(state[name], t, **kw) if c is None else model(state[name], t, c, **kw)
            return {name: out}
    else:
        spec = dict(shape_or_state)
        state_model = model
    if wrap_model is not None:
        state_model = wrap_model(state_model)
    for k in fields:
        shape = spec.get(k)
        if isinstance(shape, (tuple, list, torch.Size)) and any(
                isinstance(d, bool) or not isinstance(d, numbers.Integral) or d < 0 for d in shape):
            raise ValueError(f"field {k!r}: the shape {tuple(shape)} must hold whole numbers >= 0 (batch first)")
    batch = _batch_size(spec)
    dev = torch.device(device) if device is not None else _device_of(spec)
    noise = Noise(batch, seed=seed, generator=generator, device=dev)
    return state_model, fields, init_state(fields, spec, noise, dev, dtype), noise, name


def sample(model: Model, process: Any, shape_or_state: tuple[int, ...] | Tensor | Mapping[str, Any],
           settings: SampleSettings | None = None, *, prediction: str = "eps", seed: int | Tensor | None = None,
           generator: torch.Generator | None = None, cond: Any = None, device: torch.device | str | None = None,
           model_dtype: torch.dtype | None = None, callback: Callable[[dict[str, Any]], None] | None = None,
           wrap_model: Callable[[Model], Model] | None = None, **keywords: Any) -> Tensor | State:
    """Generate a batch by walking a time grid from noise to data.

    Args:
        model: ``model(x, t[, cond]) -> prediction`` for a single field given as a process and
            a shape, or ``model(state, t[, cond]) -> {field: prediction}`` for a dict of fields.
        process: a process, a :class:`FieldSpec`, or ``{name: FieldSpec | process}``.
        shape_or_state: the shape of the single field or its initial values (a tensor at the
            grid's first time), or a state dict whose field entries are
            shapes (drawn from the prior) or tensors (initial values at the grid's first time)
            and whose other entries (masks, conditions) are passed through.
        settings: a :class:`SampleSettings` (sampler, steps, grid, t_max, t_min, final_zero,
            categorical, dtype, sampler options); its fields may also be given as keywords
            (``sampler="ddim", steps=10, eta=0.5``), which override it. ``sampler`` is a Gaussian
            method from ``polydiff samplers``, or a categorical one for states without Gaussian
            fields (``first_hitting`` for absorbing ones); ``dtype`` is the solver's arithmetic.
        prediction: what the model predicts for Gaussian fields given as bare processes.
        seed: per-sample seeds (an int s gives sample b the seed (s, b)); ``generator`` instead
            for ordinary torch RNG semantics (then samples depend on the batch).
        model_dtype: the dtype the model receives its state and time in (default: its
            parameters' dtype for an ``nn.Module``, else the solver dtype).
        callback: called after every step with a dict of ``i``, ``t``, ``s``, ``state`` and
            ``x0`` (clean estimates).
        wrap_model: a function applied to the internal state-level model (guidance wrappers).

    Returns: the final tensor for a single field given by shape or tensor, else the final state.
    """
    settings = settings_of(settings, **keywords)
    mdt = model_dtype or model_dtype_of(model)
    state_model, fields, state, noise, name = prepare(model, process, shape_or_state, prediction=prediction,
                                                      seed=seed, generator=generator, dtype=settings.dtype,
                                                      device=device, wrap_model=wrap_model)
    out = run(state_model, fields, state, noise, settings, cond=cond, model_dtype=mdt, callback=callback)
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
