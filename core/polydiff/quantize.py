"""Timestep-aware post-training quantization of denoisers (PTQ4DM / TFMQ-DM ideas, our code).

A denoiser sees very different activations at different noise levels, so a calibration set
from one time is wrong at the others. :func:`quantize` calibrates on the sampler's own
trajectories: it runs a calibration function (for a :class:`polydiff.Generator`, the recipe's
sampler on a few samples) with hooks on every ``nn.Linear`` / ``nn.Conv1d`` / ``nn.Conv2d``,
recording each layer's input range at every step of every trajectory, and then replaces the
layers by quantized ones:

- ``int8``: symmetric int8 weights per output channel and a static symmetric int8 scale per
  layer input (the largest absolute input over all calibration steps, or a percentile of it).
  Linear layers run on an int8 x int8 -> int32 matrix product (``torch._int_mm``); convolutions
  keep int8 weights and quantized inputs but compute in float (no int8 convolution kernel is
  used, so they save memory, not time);
- ``fp8``: weights in float8 (e4m3) with a scale per output channel and inputs rounded to
  float8 with a calibrated scale; computed in float (the low-bit floating-point variant: memory
  and accuracy, not CPU speed).

Layers that carry time, not data, are kept in full precision (TFMQ-DM's point that the time
embedding must not be quantized with the features): every layer whose input rows were the
same for all samples of the batch in every calibration call (a function of ``t`` only, such as
a time-embedding MLP), plus any layer whose qualified name matches a ``keep`` pattern. The
solver's arithmetic is untouched: only the network is quantized.
"""

from __future__ import annotations

import copy
import fnmatch
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

SCHEMES = ("int8", "fp8")
_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d)
_FP8 = torch.float8_e4m3fn
_FP8_MAX = 448.0
_FUSED = hasattr(torch, "quantize_per_tensor")  # deprecated in torch: the plain-op path is the fallback


@dataclass
class QuantizationReport:
    """What :func:`quantize` did: layers quantized and kept (with the reason), calibration
    calls seen, and the network's weight bytes before and after."""

    scheme: str
    quantized: list[str] = field(default_factory=list)
    kept: dict[str, str] = field(default_factory=dict)
    calls: int = 0
    bytes_before: int = 0
    bytes_after: int = 0

    def summary(self) -> str:
        kept = ", ".join(f"{k} ({v})" for k, v in self.kept.items()) or "none"
        return (f"{self.scheme}: {len(self.quantized)} layers quantized from {self.calls} calibration calls; "
                f"weights {self.bytes_before / 2**20:.2f} -> {self.bytes_after / 2**20:.2f} MiB; kept in full "
                f"precision: {kept}")


class _Observer:
    """Input statistics of one layer over the calibration calls."""

    def __init__(self, percentile: float | None) -> None:
        self.percentile, self.amax, self.calls, self.time_only = percentile, 0.0, 0, True

    def __call__(self, module: nn.Module, inputs: tuple[Any, ...]) -> None:
        x = inputs[0].detach()
        if x.dim() >= 2 and x.shape[0] > 1:
            self.time_only &= bool((x == x[:1]).all())
        else:
            self.time_only = False
        a = x.abs().float().reshape(-1)
        if self.percentile is None or a.numel() < 2:
            v = float(a.max()) if a.numel() else 0.0
        else:
            if a.numel() > 1 << 20:
                a = a[torch.randperm(a.numel(), generator=torch.Generator().manual_seed(self.calls))[: 1 << 20]]
            v = float(torch.quantile(a, self.percentile / 100.0))
        self.amax, self.calls = max(self.amax, v), self.calls + 1


def _channel_scale(w: Tensor, top: float) -> Tensor:
    amax = w.detach().abs().reshape(w.shape[0], -1).amax(dim=1).float()
    return torch.where(amax > 0, amax / top, torch.ones_like(amax))


class QuantizedLayer(nn.Module):
    """A quantized stand-in for a Linear / Conv1d / Conv2d layer (see the module docstring)."""

    def __init__(self, layer: nn.Module, scheme: str, input_amax: float) -> None:
        super().__init__()
        if scheme not in SCHEMES:
            raise ValueError(f"scheme must be one of {', '.join(SCHEMES)}, got {scheme!r}")
        self.scheme, self.kind = scheme, type(layer).__name__
        self.conv = {k: getattr(layer, k) for k in ("stride", "padding", "dilation", "groups")} \
            if isinstance(layer, (nn.Conv1d, nn.Conv2d)) else None
        if self.conv is not None and layer.padding_mode != "zeros":
            raise ValueError(f"{self.kind} with padding_mode={layer.padding_mode!r} cannot be quantized")
        w = layer.weight.detach().float()
        top = 127.0 if scheme == "int8" else _FP8_MAX
        ws = _channel_scale(w, top)
        shape = (-1,) + (1,) * (w.dim() - 1)
        q = w / ws.reshape(shape)
        q = torch.round(q).clamp(-127, 127).to(torch.int8) if scheme == "int8" else q.clamp(-top, top).to(_FP8)
        if scheme == "int8" and self.conv is None:
            q = q.t().contiguous()  # (in, out): the layout the int8 matrix product takes
        self.register_buffer("qweight", q)
        self.register_buffer("wscale", ws)
        self.register_buffer("xscale", torch.tensor(max(input_amax, 1e-12) / top))
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

    def _quant_input(self, x: Tensor) -> Tensor:
        """Inputs on the calibrated grid: int8 codes (int8; inputs beyond the calibrated range
        saturate at -128 / 127) or float8-rounded values (fp8, as float)."""
        if self.scheme == "int8":
            if torch.compiler.is_compiling() or not _FUSED:  # plain ops (the compiler fuses them)
                return torch.round(x.float() / self.xscale).clamp_(-128, 127).to(torch.int8)
            # eager: one fused kernel (round half to even, saturating) instead of four passes
            return torch.quantize_per_tensor(x.float(), self._xs, 0, torch.qint8).int_repr()
        return (x.float() / self.xscale).clamp(-_FP8_MAX, _FP8_MAX).to(_FP8).float()

    def forward(self, x: Tensor) -> Tensor:
        xq = self._quant_input(x)
        if self.conv is None and self.scheme == "int8":
            lead = xq.shape[:-1]
            flat = xq.reshape(-1, xq.shape[-1])
            y = torch._int_mm(flat, self.qweight).float()
            y = torch.addcmul(self.bias, y, self.xscale * self.wscale) if self.bias is not None else \
                y * (self.xscale * self.wscale)
            y = y.reshape(*lead, -1)
        elif self.conv is None:
            y = F.linear(xq * self.xscale, self._weight(), self.bias)
        else:
            xf = xq.float() * self.xscale
            conv = F.conv1d if self.kind == "Conv1d" else F.conv2d
            y = conv(xf, self._weight(), self.bias, **self.conv)
        return y.to(self.out_dtype)

    def extra_repr(self) -> str:
        return f"{self.kind}, {self.scheme}, weight {tuple(self.qweight.shape)}"


def _weight_bytes(net: nn.Module) -> int:
    seen, total = set(), 0
    for t in list(net.parameters()) + list(net.buffers()):
        if id(t) not in seen:
            seen.add(id(t))
            total += t.numel() * t.element_size()
    return total


def quantize(net: nn.Module, calibrate: Callable[[nn.Module], Any], scheme: str = "int8", *,
             keep: Sequence[str] = (), percentile: float | None = None) -> tuple[nn.Module, QuantizationReport]:
    """A quantized copy of ``net`` (the original is unchanged) and a report.

    ``calibrate(net)`` must run the network on calibration inputs, ideally the sampler's own
    trajectories over the whole time grid (:meth:`polydiff.Generator.quantized` does this);
    ``keep``: glob patterns of qualified layer names left in full precision (layers fed by the
    time alone are kept without asking); ``percentile``: clip each input scale at this
    percentile of |input| instead of its maximum (e.g. 99.99)."""
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {', '.join(SCHEMES)}, got {scheme!r}")
    if percentile is not None and not 0 < percentile <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {percentile}")
    qnet = copy.deepcopy(net).eval()
    layers = {name: m for name, m in qnet.named_modules() if isinstance(m, _LAYERS)}
    if not layers:
        raise ValueError(f"{type(net).__name__} has no Linear / Conv1d / Conv2d layer to quantize")
    report = QuantizationReport(scheme, bytes_before=_weight_bytes(qnet))
    observers = {name: _Observer(percentile) for name in layers}
    handles = [m.register_forward_pre_hook(observers[name]) for name, m in layers.items()]
    try:
        with torch.no_grad():
            calibrate(qnet)
    finally:
        for h in handles:
            h.remove()
    for name, m in layers.items():
        ob = observers[name]
        if any(fnmatch.fnmatchcase(name, pat) for pat in keep):
            report.kept[name] = "keep pattern"
        elif ob.calls == 0:
            report.kept[name] = "not called in calibration"
        elif ob.time_only:
            report.kept[name] = "time input"
        else:
            parent_name, _, attr = name.rpartition(".")
            parent = qnet.get_submodule(parent_name) if parent_name else qnet
            setattr(parent, attr, QuantizedLayer(m, scheme, ob.amax).to(m.weight.device))
            report.quantized.append(name)
    report.calls = max((ob.calls for ob in observers.values()), default=0)
    report.bytes_after = _weight_bytes(qnet)
    if not report.quantized:
        raise ValueError(f"no layer of {type(net).__name__} was quantized ({report.summary()})")
    return qnet, report
