"""Timestep-aware post-training quantization of denoisers (PTQ4DM / TFMQ-DM ideas, our code).

A denoiser sees very different activations at different noise levels, so a calibration set
from one time is wrong at the others. :func:`quantize` calibrates on the sampler's own
trajectories: it runs a calibration function (for a :class:`polydiff.Generator`, the recipe's
sampler on a few samples) with hooks on every ``nn.Linear`` / ``nn.Conv1d`` / ``nn.Conv2d``,
recording each layer's input range at every step of every trajectory, and then replaces the
layers by quantized ones:

- ``int8``: symmetric int8 weights per output channel and symmetric int8 inputs. Linear layers
  run on an int8 x int8 -> int32 matrix product (``torch._int_mm``); convolutions keep int8
  weights and quantized inputs but compute in float (no int8 convolution kernel is used, so
  they save memory, not time);
- ``fp8``: weights in float8 (e4m3) with a scale per output channel and inputs rounded to
  float8; computed in float (the low-bit floating-point variant: memory and accuracy, not CPU
  speed).

Input scales are ``dynamic`` by default: every input row (a token: one row of a Linear input;
the channels at one position of a convolution's input) is scaled by its own largest value at
run time. ``static`` scales are one per layer input, the largest input over all calibration
steps (or a percentile of it). A static scale must cover the largest input of the whole
trajectory, so inputs that shrink along it lose their precision: GDSS's adjacency network
reads ``A^2`` of the noisy adjacency (up to ~36 at ``t = 1``) next to attention maps below
0.15 near ``t = 0``, which a static int8 scale rounds to zero (issue #11, ``docs/scale.md``).

Layers that carry time, not data, are kept in full precision (TFMQ-DM's point that the time
embedding must not be quantized with the features): every layer whose input rows were the
same for all samples of the batch in every calibration call (a function of ``t`` only, such as
a time-embedding MLP), or that saw one row while other layers saw the batch (a time input
embedded once and broadcast, :func:`polydiff.nn.shared_time`), plus any layer whose qualified
name matches a ``keep`` pattern.

Then an error budget (``tolerance``, on by default): a few of the calibration calls, spread
evenly over the whole run, are recorded and replayed. If the quantized network's outputs differ
from the float network's by more than ``tolerance`` (relative L2 error, averaged over the
recorded calls, the worst output tensor), every layer's sensitivity is measured (that layer
alone quantized, on four of the recorded calls) and the most sensitive layers are put back in
full precision, most sensitive first, until the error on all recorded calls is within the
budget: a layer that quantizes badly is found whatever the cause. The report gives the errors
before and after, the sensitivities and why each layer was kept. The solver's arithmetic is
untouched: only the network is quantized.
"""

from __future__ import annotations

import copy
import fnmatch
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils._pytree import tree_flatten, tree_map

from .progress import Progress

SCHEMES = ("int8", "fp8")
INPUTS = ("dynamic", "static")
_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d)


def _own_forward(layer: nn.Module) -> bool:
    """Whether ``layer`` is a subclass of a quantizable layer with a forward of its own (which the
    quantized stand-in, a plain matmul or convolution, would silently drop)."""
    base = next(b for b in _LAYERS if isinstance(layer, b))
    return type(layer).forward is not base.forward
_FP8 = torch.float8_e4m3fn
_FP8_MAX = 448.0
_FUSED = hasattr(torch, "quantize_per_tensor")  # deprecated in torch: the plain-op path is the fallback
TOLERANCE = 0.05  # default error budget: relative L2 error of the network's outputs on the recorded calls
RECORDED_CALLS = 16  # calibration calls kept for the error budget (evenly spread over the run)
SENSITIVITY_CALLS = 4  # of those, the ones (evenly spread) that rank the layers: one replay per layer each


@dataclass
class QuantizationReport:
    """What :func:`quantize` did: layers quantized and kept (with the reason), calibration
    calls seen, and the network's weight bytes before and after."""

    scheme: str
    inputs: str = "static"
    quantized: list[str] = field(default_factory=list)
    kept: dict[str, str] = field(default_factory=dict)
    calls: int = 0
    bytes_before: int = 0
    bytes_after: int = 0
    tolerance: float | None = None
    #: relative output error on the recorded calls: every candidate layer quantized, and as returned
    error_all: float | None = None
    error: float | None = None
    #: each layer's error quantized alone (measured only when ``error_all`` exceeded the tolerance)
    sensitivity: dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        """One line: what was quantized, what was kept in float, and the output error."""
        kept = ", ".join(f"{k} ({v})" for k, v in self.kept.items()) or "none"
        err = "" if self.error is None else (
            f"; output error {self.error:.3g} (all layers: {self.error_all:.3g}, tolerance {self.tolerance:g})")
        return (f"{self.scheme}: {len(self.quantized)} layers quantized ({self.inputs} input scales) from "
                f"{self.calls} calibration calls; weights {self.bytes_before / 2**20:.2f} -> "
                f"{self.bytes_after / 2**20:.2f} MiB{err}; kept in full precision: {kept}")


class _Observer:
    """Input statistics of one layer over the calibration calls."""

    def __init__(self, percentile: float | None) -> None:
        self.percentile, self.amax, self.calls = percentile, 0.0, 0
        # rows the same for the whole batch in every call (or one row), and the most rows seen: a
        # layer that only ever saw one row is a time layer when other layers saw a batch
        self.equal_rows, self.rows = True, 0

    def __call__(self, module: nn.Module, inputs: tuple[Any, ...]) -> None:
        x = inputs[0].detach()
        if x.dim() < 2:
            self.equal_rows = False
        elif x.shape[0] > 1:
            self.equal_rows &= bool((x == x[:1]).all())
        self.rows = max(self.rows, x.shape[0] if x.dim() else 1)
        a = x.abs().float().reshape(-1)
        if self.percentile is None or a.numel() < 2:
            v = float(a.max()) if a.numel() else 0.0
        else:
            if a.numel() > 1 << 20:
                a = a[torch.randperm(a.numel(), generator=torch.Generator().manual_seed(self.calls))[: 1 << 20]]
            v = float(torch.quantile(a, self.percentile / 100.0))
        self.amax, self.calls = max(self.amax, v), self.calls + 1


class _Recorder:
    """Copies of the network's calls (args, kwargs), evenly spread over however many calls the
    calibration makes: every ``stride``-th call is kept, and the stride doubles (dropping every
    other copy) whenever ``2 * size`` copies are held."""

    def __init__(self, size: int) -> None:
        self.size, self.stride, self.seen, self.calls = size, 1, 0, []

    def __call__(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if self.seen % self.stride == 0:
            copy_ = tree_map(lambda v: v.detach().clone() if isinstance(v, Tensor) else v, (args, kwargs))
            self.calls.append(copy_)
            if len(self.calls) >= 2 * self.size:
                self.calls, self.stride = self.calls[::2], self.stride * 2
        self.seen += 1

    def spread(self) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
        """At most ``size`` of the copies, evenly spaced."""
        step = max(1, -(-len(self.calls) // self.size))
        return self.calls[::step]


def _outputs(net: nn.Module, calls: Sequence[tuple[tuple[Any, ...], dict[str, Any]]]) -> list[list[Tensor]]:
    with torch.no_grad():
        return [[o.float() for o in tree_flatten(net(*a, **kw))[0] if isinstance(o, Tensor) and o.is_floating_point()]
                for a, kw in calls]


def _error(got: list[list[Tensor]], want: list[list[Tensor]]) -> float:
    """Relative L2 error per output tensor, averaged over the calls; the worst output tensor."""
    per: dict[int, list[float]] = {}
    for g_call, w_call in zip(got, want, strict=True):
        for i, (g, w) in enumerate(zip(g_call, w_call, strict=True)):
            per.setdefault(i, []).append(float((g - w).norm() / w.norm().clamp_min(1e-30)))
    return max((sum(v) / len(v) for v in per.values()), default=0.0)


def _channel_scale(w: Tensor, top: float) -> Tensor:
    amax = w.detach().abs().reshape(w.shape[0], -1).amax(dim=1).float()
    return torch.where(amax > 0, amax / top, torch.ones_like(amax))


CPU_INT8_KERNEL: str | None = None  # "int_mm" or "float" for int8 products on CPU; None: timed once
_EXACT_K = 1024  # int8 x int8 sums of up to 1024 terms stay below 2**24: exact in float32


def _float_int8_product(a: Tensor, b: Tensor) -> Tensor:
    """``torch._int_mm(a, b)`` through float32 matrix products, exactly: each block of at most
    1024 terms sums to below 2**24, where float32 holds every integer."""
    blocks = [(a[:, i:i + _EXACT_K].float() @ b[i:i + _EXACT_K].float()).to(torch.int32)
              for i in range(0, a.shape[1], _EXACT_K)]
    return blocks[0] if len(blocks) == 1 else torch.stack(blocks).sum(0, dtype=torch.int32)


def cpu_int8_kernel() -> str:
    """Which kernel computes int8 products on this CPU, ``"int_mm"`` or ``"float"``. Both give
    the same integers; their speed differs by CPU: ``torch._int_mm`` is fast with VNNI int8
    instructions, but on an AVX2-only CPU it ran 25x slower than the float32 product of the
    same integers. Timed once per process on a 256 x 512 x 256 product, unless
    :data:`CPU_INT8_KERNEL` is set."""
    global CPU_INT8_KERNEL
    if CPU_INT8_KERNEL is None:
        a, b = torch.ones(256, 512, dtype=torch.int8), torch.ones(512, 256, dtype=torch.int8)

        def best(f: Callable[[], Tensor]) -> float:
            f()
            times = []
            for _ in range(3):
                t0 = time.perf_counter()
                f()
                times.append(time.perf_counter() - t0)
            return min(times)

        fast = best(lambda: torch._int_mm(a, b)) <= best(lambda: _float_int8_product(a, b))
        CPU_INT8_KERNEL = "int_mm" if fast else "float"
    return CPU_INT8_KERNEL


CUDA_INT8_ROWS = 32768  # rows per cuBLASLt int8 call: 20,000 ran on an H200, 66,816 were refused


def _int8_product(a: Tensor, b: Tensor, padded: bool | None = None) -> Tensor:
    """``a @ b`` for int8 ``a`` (m, k) and ``b`` (k, n), as int32 (``torch._int_mm``).

    CUDA's kernel (cuBLASLt, probed on an H200) refuses k or n not a multiple of 8, m not a
    multiple of 32 once n > 24, and m = 66,816 (20,000 ran; a 65,535 limit is likely). With ``padded``
    (default: on CUDA) ``a`` and ``b`` are zero-padded to those sizes, ``a`` is cut into blocks
    of :data:`CUDA_INT8_ROWS` rows, and the result is cut back. Zeros add nothing to the integer
    sums, so the result is exact; the weight is copied per call only for layers of odd sizes."""
    if not (a.is_cuda if padded is None else padded):
        return _float_int8_product(a, b) if cpu_int8_kernel() == "float" else torch._int_mm(a, b)
    k, n = b.shape
    dk, dn = -k % 8, -n % 8
    if dk or dn:
        b = F.pad(b, (0, dn, 0, dk))
    blocks = []
    for block in a.split(CUDA_INT8_ROWS):
        m = block.shape[0]
        rows = -m % 32 if m else 32
        if dk or rows:
            block = F.pad(block, (0, dk, 0, rows))
        blocks.append(torch._int_mm(block, b)[:m, :n])
    return blocks[0] if len(blocks) == 1 else torch.cat(blocks)


class QuantizedLayer(nn.Module):
    """A quantized stand-in for a Linear / Conv1d / Conv2d layer (see the module docstring).

    ``dynamic``: scale each input row (a token: the last dimension of a Linear input; the
    channels at one position of a convolution's input) by its own largest value at run time
    instead of the calibrated static scale of ``input_amax``."""

    def __init__(self, layer: nn.Module, scheme: str, input_amax: float, dynamic: bool = False) -> None:
        super().__init__()
        if scheme not in SCHEMES:
            raise ValueError(f"scheme must be one of {', '.join(SCHEMES)}, got {scheme!r}")
        kind = next(base.__name__ for base in _LAYERS if isinstance(layer, base))  # the kernel, not a subclass's name
        self.scheme, self.kind, self.dynamic = scheme, kind, dynamic
        self.conv = {k: getattr(layer, k) for k in ("stride", "padding", "dilation", "groups")} \
            if isinstance(layer, (nn.Conv1d, nn.Conv2d)) else None
        if self.conv is not None and layer.padding_mode != "zeros":
            raise ValueError(f"{self.kind} with padding_mode={layer.padding_mode!r} cannot be quantized")
        if scheme == "int8" and self.conv is None:
            cpu_int8_kernel()  # chosen here, eagerly, so a compiled forward reads a constant
        w = layer.weight.detach().float()
        self.top = 127.0 if scheme == "int8" else _FP8_MAX
        ws = _channel_scale(w, self.top)
        shape = (-1,) + (1,) * (w.dim() - 1)
        q = w / ws.reshape(shape)
        q = torch.round(q).clamp(-127, 127).to(torch.int8) if scheme == "int8" else \
            q.clamp(-self.top, self.top).to(_FP8)
        if scheme == "int8" and self.conv is None:
            q = q.t().contiguous()  # (in, out): the layout the int8 matrix product takes
        self.register_buffer("qweight", q)
        self.register_buffer("wscale", ws)
        self.register_buffer("xscale", torch.tensor(max(input_amax, 1e-12) / self.top))
        self._xs = float(self.xscale)  # the same scale as a number, for the eager quantization kernel
        self.register_buffer("bias", None if layer.bias is None else layer.bias.detach().float().clone())
        self.out_dtype = layer.weight.dtype

    def _weight(self) -> Tensor:
        w = self.qweight.t() if self.scheme == "int8" and self.conv is None else self.qweight
        return w.float() * self.wscale.reshape((-1,) + (1,) * (w.dim() - 1))

    @property
    def weight(self) -> Tensor:
        """The dequantized weight in the original layer's layout and dtype (for networks that
        read ``layer.weight``, e.g. its dtype)."""
        return self._weight().to(self.out_dtype)

    def _input_scale(self, x: Tensor) -> Tensor:
        """The calibrated scale, or (dynamic) one per input row, shaped to broadcast over ``x``."""
        if not self.dynamic:
            return self.xscale
        amax = x.detach().abs().amax(-1 if self.conv is None else 1, keepdim=True).float()
        return amax.clamp_min(1e-12) / self.top

    def _quant_input(self, x: Tensor, scale: Tensor) -> Tensor:
        """Inputs on the grid of ``scale``: int8 codes (int8; inputs beyond a static range
        saturate at -128 / 127) or float8-rounded values (fp8, as float)."""
        if self.scheme == "int8":
            if self.dynamic or torch.compiler.is_compiling() or not _FUSED:  # plain ops (the compiler fuses them)
                return torch.round(x.float() / scale).clamp_(-128, 127).to(torch.int8)
            # eager: one fused kernel (round half to even, saturating) instead of four passes
            return torch.quantize_per_tensor(x.float(), self._xs, 0, torch.qint8).int_repr()
        return (x.float() / scale).clamp(-_FP8_MAX, _FP8_MAX).to(_FP8).float()

    def forward(self, x: Tensor) -> Tensor:
        scale = self._input_scale(x)
        xq = self._quant_input(x, scale)
        if self.conv is None and self.scheme == "int8":
            lead = xq.shape[:-1]
            y = _int8_product(xq.reshape(-1, xq.shape[-1]), self.qweight).float()
            out_scale = (scale.reshape(-1, 1) if self.dynamic else scale) * self.wscale
            y = torch.addcmul(self.bias, y, out_scale) if self.bias is not None else y * out_scale
            y = y.reshape(*lead, -1)
        elif self.conv is None:
            y = F.linear(xq * scale, self._weight(), self.bias)
        else:
            conv = F.conv1d if self.kind == "Conv1d" else F.conv2d
            y = conv(xq.float() * scale, self._weight(), self.bias, **self.conv)
        return y.to(self.out_dtype)

    def extra_repr(self) -> str:
        inputs = "dynamic" if self.dynamic else "static"
        return f"{self.kind}, {self.scheme}, weight {tuple(self.qweight.shape)}, {inputs} input scales"


def _weight_bytes(net: nn.Module) -> int:
    seen, total = set(), 0
    for t in list(net.parameters()) + list(net.buffers()):
        if id(t) not in seen:
            seen.add(id(t))
            total += t.numel() * t.element_size()
    return total


def _set(net: nn.Module, name: str, layer: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    setattr(net.get_submodule(parent_name) if parent_name else net, attr, layer)


def quantize(net: nn.Module, calibrate: Callable[[nn.Module], Any], scheme: str = "int8", *,
             keep: Sequence[str] = (), percentile: float | None = None, inputs: str = "dynamic",
             tolerance: float | None = TOLERANCE, recorded_calls: int = RECORDED_CALLS,
             progress: bool | None = None) -> tuple[nn.Module, QuantizationReport]:
    """A quantized copy of ``net`` (the original is unchanged) and a report.

    ``calibrate(net)`` must run the network on calibration inputs, ideally the sampler's own
    trajectories over the whole time grid (:meth:`polydiff.Generator.quantized` does this);
    ``keep``: glob patterns of qualified layer names left in full precision (layers fed by the
    time alone are kept without asking); ``percentile``: clip each input scale at this
    percentile of |input| instead of its maximum (e.g. 99.99; static input scales only);
    ``inputs``: ``"dynamic"`` (each input row scaled by its own maximum at run time) or
    ``"static"`` (one calibrated scale per layer input); ``tolerance``: the error budget
    (relative L2 error of the outputs on ``recorded_calls`` calibration calls, see the module
    docstring): the most sensitive layers are kept in full precision until the quantized
    network is within it (None: quantize every candidate layer, whatever the error);
    ``progress``: a bar over the replays that rank the layers when the budget is exceeded (the
    long part for a large network; None: on a terminal, plain lines in logs after 10 s)."""
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {', '.join(SCHEMES)}, got {scheme!r}")
    if percentile is not None and not 0 < percentile <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {percentile}")
    if inputs not in INPUTS:
        raise ValueError(f"inputs must be one of {', '.join(INPUTS)}, got {inputs!r}")
    if tolerance is not None and not tolerance > 0:
        raise ValueError(f"tolerance must be positive (or None), got {tolerance}")
    if recorded_calls < 1:
        raise ValueError(f"recorded_calls must be at least 1, got {recorded_calls}")
    qnet = copy.deepcopy(net).eval()
    layers = {name: m for name, m in qnet.named_modules() if isinstance(m, _LAYERS)}
    if not layers:
        raise ValueError(f"{type(net).__name__} has no Linear / Conv1d / Conv2d layer to quantize")
    report = QuantizationReport(scheme, inputs, bytes_before=_weight_bytes(qnet), tolerance=tolerance)
    observers = {name: _Observer(percentile) for name in layers}
    handles = [m.register_forward_pre_hook(observers[name]) for name, m in layers.items()]
    recorder = _Recorder(recorded_calls)
    if tolerance is not None:
        handles.append(qnet.register_forward_pre_hook(recorder, with_kwargs=True))
    try:
        with torch.no_grad():
            calibrate(qnet)
    finally:
        for h in handles:
            h.remove()
    candidates: dict[str, QuantizedLayer] = {}
    batch = max(ob.rows for ob in observers.values())
    for name, m in layers.items():
        ob = observers[name]
        if any(fnmatch.fnmatchcase(name, pat) for pat in keep):
            report.kept[name] = "keep pattern"
        elif ob.calls == 0:
            report.kept[name] = "not called in calibration"
        elif ob.equal_rows and batch > 1:
            report.kept[name] = "time input"
        elif _own_forward(m):  # e.g. a weight-standardised conv: its forward is not the plain layer's
            report.kept[name] = f"own forward ({type(m).__name__})"
        else:
            candidates[name] = QuantizedLayer(m, scheme, ob.amax, inputs == "dynamic").to(m.weight.device)
    calls = recorder.spread()
    want = _outputs(qnet, calls) if tolerance is not None and calls and candidates else None
    for name, q in candidates.items():
        _set(qnet, name, q)
    if want is not None:
        report.error = report.error_all = _error(_outputs(qnet, calls), want)
        if report.error_all > tolerance:
            _within_budget(qnet, layers, candidates, calls, want, tolerance, report, progress)
    report.quantized = list(candidates)
    report.calls = max((ob.calls for ob in observers.values()), default=0)
    report.bytes_after = _weight_bytes(qnet)
    if not report.quantized:
        raise ValueError(f"no layer of {type(net).__name__} was quantized ({report.summary()})")
    return qnet, report


def _within_budget(qnet: nn.Module, floats: dict[str, nn.Module], candidates: dict[str, QuantizedLayer],
                   calls: Sequence[tuple[tuple[Any, ...], dict[str, Any]]], want: list[list[Tensor]],
                   tolerance: float, report: QuantizationReport, progress: bool | None = None) -> None:
    """Measure each candidate's error alone, then put the most sensitive ones back in full
    precision until ``qnet`` is within ``tolerance``: the fewest, by bisection over the ranking
    (the error taken as falling with every layer put back). ``candidates`` is left with the
    layers that stay quantized, ``report`` gets the rest.

    The ranking replays :data:`SENSITIVITY_CALLS` of the recorded calls, evenly spread over the
    run, once per layer (this pass is most of the cost: every layer of molecules' GVP network in
    fp8 took 4 minutes on all 16 calls); the bisection, which decides the error reported and
    the budget kept, replays them all."""
    for name in candidates:
        _set(qnet, name, floats[name])
    pick = sorted({round(i * (len(calls) - 1) / max(1, SENSITIVITY_CALLS - 1)) for i in range(SENSITIVITY_CALLS)})
    few, few_want = [calls[i] for i in pick], [want[i] for i in pick]
    # network replays: one per layer and ranking call, then at most log2(layers) + 1 rounds of all calls
    total = len(candidates) * len(few) + (math.ceil(math.log2(max(2, len(candidates)))) + 1) * len(calls)
    with Progress(total, desc="quantization: error budget", unit="replay", enabled=progress) as bar:
        for name, q in candidates.items():
            _set(qnet, name, q)
            report.sensitivity[name] = _error(_outputs(qnet, few), few_want)
            _set(qnet, name, floats[name])
            bar.update(len(few))
        ranked = sorted(candidates, key=lambda n: -report.sensitivity[n])

        def error_keeping(k: int) -> float:  # the k most sensitive in float, the others quantized
            for i, name in enumerate(ranked):
                _set(qnet, name, floats[name] if i < k else candidates[name])
            err = _error(_outputs(qnet, calls), want)
            bar.update(len(calls), error=f"{err:.3g}")
            return err

        lo, hi, errors = 0, len(ranked), {0: report.error_all, len(ranked): 0.0}  # error(lo) > tol >= error(hi)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            errors[mid] = error_keeping(mid)
            lo, hi = (lo, mid) if errors[mid] <= tolerance else (mid, hi)
        error_keeping(hi)
        bar.update_to(total)
    report.error = errors[hi]
    for name in ranked[:hi]:
        report.kept[name] = f"sensitivity {report.sensitivity[name]:.3g}"
        del candidates[name]
