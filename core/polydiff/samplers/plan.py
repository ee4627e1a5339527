"""The time grid of one sampling run and everything that depends only on it.

:class:`GridPlan` turns :class:`~polydiff.samplers.base.SampleSettings` and the packed
Gaussian fields into the explicit grid ``t_0 > ... > t_K`` and, computed once for the whole
grid, the schedule values every step reads: one ``(5, K+1, rows, D)`` coefficient table (its
per-time views and per-field views are slices of it), the times in the model's and the
solver's dtype, the singlestep stage tables, the methods' coefficient tables
(:func:`polydiff.samplers.coefs.coef_table`) and the checks of the grid's two ends. The loop
(:class:`polydiff.samplers.driver.SamplingLoop`) only walks it.

Why a table: on CPU every tensor operation costs microseconds of dispatch whatever its size, so
a step that recomputed its (1, 1) schedule values would spend most of its time there.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from ..grids import make_grid
from ..processes.gaussian import Coefs, Schedule
from ..state import Packer, per_time, table_coefs
from .base import SamplerDef, SampleSettings
from .coefs import clip_lam, stage_fractions

Stage = tuple[Tensor, Coefs, dict[str, Coefs], Tensor]  # (time, packed coefficients, per-field views, model time)


def model_time(t: Tensor, batch: int, dtype: torch.dtype) -> Tensor:
    """A grid time (scalar, (1,) or (B,)) as the (B,) tensor models receive."""
    t = t.to(dtype).reshape(-1)
    return t.expand(batch) if t.numel() == 1 else t


def column(t: Tensor, dtype: torch.dtype) -> Tensor:
    """A grid time shaped to broadcast against packed (B, D) tensors."""
    return t.to(dtype) if t.dim() == 0 else t.to(dtype).reshape(-1, 1)


def grid_times(ts: Tensor, batch: int, dtype: torch.dtype, model_dtype: torch.dtype | None = None
               ) -> tuple[list[Tensor], list[Tensor]]:
    """Every time of a grid (K+1,) or (K+1, B) as :func:`model_time` (in ``model_dtype``) and
    :func:`column` (in ``dtype``) give it, made with a few operations for the whole grid."""
    td = ts.to(dtype)
    rows = td.shape[0]
    cols = td.unbind(0) if td.dim() == 1 else td.reshape(rows, -1, 1).unbind(0)
    tm = td if model_dtype in (None, dtype) else ts.to(model_dtype)
    return list(tm.reshape(rows, -1).expand(rows, batch).unbind(0)), list(cols)


def split_steps(tree: Any, n: int) -> list[Any]:
    """A nested tuple/list of (n, ...) tensors (and plain values) as n per-step trees."""
    if isinstance(tree, Tensor):
        return list(tree.unbind(0))
    if isinstance(tree, (tuple, list)):
        parts = [split_steps(v, n) for v in tree]
        return [type(tree)(p[i] for p in parts) for i in range(n)]
    return [tree] * n


def cast_coefs(c: Coefs, dtype: torch.dtype) -> Coefs:
    """``c`` with every coefficient in ``dtype`` (the solver's arithmetic)."""
    return Coefs(*(v.to(dtype) for v in (c.alpha, c.sigma, c.lam, c.dalpha, c.dsigma)))


class GridPlan:
    """The grid of a run and its precomputed schedule values (see the module docstring).

    ``ref`` is the reference schedule (the first Gaussian field's; None for states without
    Gaussian fields, whose grid is then even in ``t``). Attributes read by the loop: ``ts``
    (K+1[, B]) float64 on the device, ``n`` = K, ``model_times[i]`` (B,), ``cols[i]``,
    ``coefs[i]`` (packed :class:`Coefs` at ``t_i``), ``views[i]`` (per-field views),
    ``final_zero`` (the grid ends where sigma = 0) and ``finite[i]`` (step i's log-SNR step is
    finite everywhere).
    """

    def __init__(self, packer: Packer, ref: Schedule | None, gdef: SamplerDef, settings: SampleSettings, batch: int,
                 device: torch.device, model_dtype: torch.dtype | None = None, stages_on_grid: bool = False,
                 step_calls: Sequence[int] | None = None) -> None:
        self.packer, self.ref, self.gdef, self.batch = packer, ref, gdef, batch
        dtype = self.dtype = settings.dtype
        steps, grid, t_min = settings.steps, settings.grid, settings.t_min
        if ref is not None:  # with no grid named, the schedule's default for this sampler and step count
            grid, t_min = ref.sampling_defaults(gdef.name, steps, grid, t_min)
        bounds = {"t_max": settings.t_max, "t_min": t_min, "final_zero": settings.final_zero}
        # singlestep methods: with option stages="grid" the stages are the inner points of a grid
        # with one interval per model call, whose every step-end point the steps walk; with
        # per-step orders (step_calls) a named grid is spaced the same way, each step as wide in
        # the grid's parameter as its calls (a user grid then lists the steps' ends only)
        self.fine: Tensor | None = None
        self.spans: tuple[int, ...] | None = None  # model calls per step, with stages="grid"
        self._offsets: Tensor | None = None
        k = gdef.nfe_per_step
        calls = tuple(int(c) for c in step_calls) if step_calls is not None else None
        user = isinstance(grid, Tensor)
        if ref is not None and (stages_on_grid or (calls is not None and not user)):
            if calls is not None and not user and len(calls) != steps:
                raise ValueError(f"sampler {gdef.name!r}: option orders lists {len(calls)} steps, steps={steps}; give "
                                 "both alike (polydiff.samplers.for_budget plans them for an NFE budget)")
            fine = make_grid(ref, sum(calls) if calls is not None else steps * k, grid, **bounds)
            n_fine = fine.shape[0] - 1
            if calls is None:
                if n_fine % k:
                    raise ValueError(f"sampler {gdef.name!r} with stages='grid' spends {k} grid intervals per step, "
                                     f"so a user grid needs a multiple of {k} intervals; got {n_fine}")
                calls = (k,) * (n_fine // k)
            elif n_fine != sum(calls):
                raise ValueError(f"sampler {gdef.name!r} with stages='grid' and orders {calls} spends {sum(calls)} "
                                 f"grid intervals (one per model call); the user grid has {n_fine}")
            offsets = torch.tensor([0, *itertools.accumulate(calls)], device=fine.device)
            ts = fine[offsets]
            if stages_on_grid:
                self.fine, self.spans, self._offsets = fine.to(device), calls, offsets.to(device)
        elif ref is not None:
            ts = make_grid(ref, steps, grid, **bounds)
        elif user:
            ts = grid.to(torch.float64)
        else:  # no Gaussian field: an even grid over the discrete / manifold time
            if steps < 1:
                raise ValueError(f"steps must be >= 1, got {steps}")
            hi = 1.0 if settings.t_max is None else settings.t_max
            lo = 0.0 if settings.t_min is None else settings.t_min
            ts = torch.linspace(hi, lo, steps + 1, dtype=torch.float64)
        self.ts = ts.to(device)
        self.n = self.ts.shape[0] - 1
        # every grid time once: as the model's (B,) times and as solver columns
        self.model_times, self.cols = grid_times(self.ts, batch, dtype, model_dtype)
        self.table: Tensor | None = None  # (5, K+1, rows, D)
        self._fine_table: Tensor | None = None
        self._ref_lam64: Tensor | None = None  # the reference field's float64 lam on the grid
        self.final_zero, self.finite = False, [True] * self.n
        self._stages: dict[tuple[float, ...], tuple[list[list[Stage]], Tensor]] = {}
        self._tables: dict[Any, list[Any]] = {}
        self._ends: tuple[Coefs, Coefs] | None = None
        if not packer.names:
            self.coefs: list[Coefs | None] = [None] * (self.n + 1)
            self.views: list[dict[str, Coefs]] = [{}] * (self.n + 1)
            self.end_values: list[list[list[float]]] | None = None
            return
        if self.fine is not None:  # every point of the finer grid at once; the steps' are their ends
            self._fine_table, per = packer.grid_table(self.fine, batch, dtype)
            self.table = self._fine_table[:, self._offsets]
            self._ref_lam64 = per[packer.names[0]].lam[self._offsets]
        else:
            self.table, per = packer.grid_table(self.ts, batch, dtype)
            self._ref_lam64 = per[packer.names[0]].lam
        self.coefs = per_time(self.table)
        self.views = [{name: packer.field_view(c, name, batch) for name in packer.names} for c in self.coefs]
        # the grid's ends in one read: [min | max][alpha, sigma, lam, dalpha, dsigma][first | last]
        ends = self.table[:, [0, -1]].reshape(5, 2, -1)
        lo, hi = torch.stack([ends.amin(-1), ends.amax(-1)]).tolist()
        self.end_values = [lo, hi]
        # a grid ending where sigma = 0 ends with the clean estimate itself (all methods agree there)
        self.final_zero = hi[1][1] == 0
        # lam is infinite only where alpha = 0 or sigma = 0, i.e. at a grid's ends
        if self.n:
            self.finite[0] &= math.isfinite(lo[2][0]) and math.isfinite(hi[2][0])
            self.finite[-1] &= math.isfinite(lo[2][1]) and math.isfinite(hi[2][1])

    @property
    def alpha_min_start(self) -> float:
        """The smallest alpha over the packing at the grid's first time."""
        return self.end_values[0][0][0] if self.end_values else 1.0

    def coef_table(self, key: Any, fn: Callable[..., Any], n_prev: int, rs: tuple[float, ...],
                   node: Callable[[Coefs], Tensor] | None) -> list[Any]:
        """``fn(ct, cs, prev, stages)`` for every step at once, split into per-step values.

        ``ct`` / ``cs`` are the grid's packed coefficients at the steps' start and end times,
        stacked on a new leading step dimension; ``prev[j]`` is ``node`` of the coefficients
        ``j + 1`` grid points before each step's start (the history nodes a multistep method
        would read from its history; steps with fewer predecessors get distinct finite
        stand-ins, which those steps never use); ``stages[r]`` the stacked coefficients at the
        stage fractions ``rs`` (see :meth:`stage_table`). Made on first use per ``key``."""
        full = (key, n_prev, rs)
        if full not in self._tables:
            if self._ends is None:
                self._ends = table_coefs(self.table[:, :-1]), table_coefs(self.table[:, 1:])
            ct, cs = self._ends
            prev = []
            if n_prev:
                nodes = node(table_coefs(self.table))  # (K+1, ...)
                for j in range(1, n_prev + 1):
                    pad = nodes[:1] - torch.arange(j, 0, -1, dtype=nodes.dtype, device=nodes.device).reshape(
                        -1, *([1] * (nodes.dim() - 1)))
                    prev.append(torch.cat([pad, nodes[: max(self.n - j, 0)]])[: self.n])
            stages = []
            if rs:  # per fraction, the stage coefficients of every step (the stage table is fraction-major)
                table = self.stage_table(rs)[1]
                stages = [table_coefs(table[:, j * self.n:(j + 1) * self.n]) for j in range(len(rs))]
            self._tables[full] = split_steps(fn(ct, cs, prev, stages), self.n)
        return self._tables[full]

    def stage_table(self, rs: tuple[float, ...]) -> tuple[list[list[Stage]], Tensor]:
        """For every step, the times at fractions ``rs`` of its reference log-SNR interval (the
        reference field's, clipped as the methods clip it), or with ``stages="grid"`` the inner
        points of the finer grid, with their packed coefficients, per-field views and model
        times; and their (5, R * K, ...) coefficient table, fraction-major (for :meth:`coef_table`).
        One schedule evaluation for the whole grid, made on first use (singlestep stages)."""
        if rs not in self._stages:
            n_r, n, p, b, dt = len(rs), self.n, self.packer, self.batch, self.dtype
            m = n_r + 1  # the calls of a step that asks for these fractions
            if self.fine is not None and m not in self.spans:
                raise ValueError(f"stages='grid' gives {', '.join(map(str, sorted(set(self.spans))))} calls per step, "
                                 f"the method asked for a step of {m}")
            if self.fine is not None and all(c == m for c in self.spans):  # the inner points of the finer grid
                inner = torch.tensor([i * m + j for j in range(1, m) for i in range(n)], device=self.fine.device)
                times, table = self.fine[inner], self._fine_table[:, inner]  # fraction-major (R * K[, B])
            else:
                lam = clip_lam(self._ref_lam64)  # (K+1,) or (K+1, B), float64
                frac = stage_fractions(rs, torch.float64, lam.device).reshape(-1, 1, *([1] * (lam.dim() - 1)))
                lt = lam[:-1].unsqueeze(0)  # (1, K[, B])
                times = self.ref.t_of_lam(torch.addcmul(lt, frac, lam[1:].unsqueeze(0) - lt)).flatten(0, 1)
                if self.fine is not None:  # mixed calls per step: steps of m calls take the finer grid's points
                    steps_m = torch.tensor([i for i, c in enumerate(self.spans) if c == m], device=times.device)
                    for j in range(1, m):
                        times[(j - 1) * n + steps_m] = self.fine[self._offsets[steps_m] + j].to(times.device)
                table, _ = p.grid_table(times, b, dt)
            tms, cols = grid_times(times, b, dt, self.model_times[0].dtype)
            us = cols if times.dim() == 1 else times.to(dt).unbind(0)
            entries = [(u, c, {k: p.field_view(c, k, b) for k in p.names}, tm)
                       for u, c, tm in zip(us, per_time(table), tms)]
            rows = [[entries[j * n + i] for j in range(n_r)] for i in range(n)]
            self._stages[rs] = rows, table
        return self._stages[rs]
