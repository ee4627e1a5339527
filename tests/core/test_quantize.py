"""Post-training quantization: quantized layers against their float originals and against the
int8 arithmetic written out (static and dynamic input scales), calibration over every sampler
step, time layers kept, the error budget that keeps sensitive layers, the generator / CLI route,
and clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import polydiff
from polydiff.nn import shared_time
from polydiff.quantize import SENSITIVITY_CALLS, QuantizedLayer, _Recorder, quantize

pytestmark = pytest.mark.usefixtures("one_thread")


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("scheme", ["int8", "fp8"])
@pytest.mark.parametrize("make,shape", [(lambda: nn.Linear(24, 16), (37, 24)),
                                        (lambda: nn.Linear(24, 16), (3, 5, 24)),
                                        (lambda: nn.Conv1d(6, 8, 3, padding=1), (4, 6, 20)),
                                        (lambda: nn.Conv2d(3, 5, 3, stride=2), (2, 3, 9, 9))])
def test_layer_is_close_to_float_but_quantized(make, shape, scheme):
    torch.manual_seed(0)
    layer = make()
    x = torch.randn(shape)
    q = QuantizedLayer(layer, scheme, float(x.abs().max()))
    want = layer(x).detach()
    got = q(x)
    assert got.shape == want.shape and got.dtype == want.dtype
    err = rel_err(got, want)
    assert 0 < err < (0.03 if scheme == "int8" else 0.08), err
    assert q.qweight.dtype == (torch.int8 if scheme == "int8" else torch.float8_e4m3fn)


def test_int8_linear_is_the_int8_arithmetic():
    torch.manual_seed(1)
    layer = nn.Linear(10, 6)
    x = torch.randn(7, 10)
    q = QuantizedLayer(layer, "int8", 2.5)
    w = layer.weight.detach()
    sw = w.abs().amax(1) / 127
    wq = torch.round(w / sw[:, None]).clamp(-127, 127)
    sx = 2.5 / 127
    xq = torch.round(x / sx).clamp(-128, 127)  # inputs beyond the calibrated 2.5 saturate
    want = (xq @ wq.t()) * sx * sw + layer.bias.detach()
    torch.testing.assert_close(q(x), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("m, k, n", [(7, 5, 3), (33, 1024, 17), (4, 3000, 9)])
def test_float_int8_product_is_exact(m, k, n):
    """The float32 route for int8 products gives torch._int_mm's integers, at the extremes too
    (every term 128 * 128, sums up to 2**24 per block of 1024)."""
    from polydiff.quantize import _float_int8_product

    g = torch.Generator().manual_seed(k)
    a = torch.randint(-128, 128, (m, k), dtype=torch.int8, generator=g)
    b = torch.randint(-128, 128, (k, n), dtype=torch.int8, generator=g)
    a[0], b[:, 0] = -128, -128
    a[1], b[:, 1], b[0, 1] = 127, 127, 1  # an odd sum, above 2**24 for the largest k
    got = _float_int8_product(a, b)
    assert got.dtype == torch.int32 and torch.equal(got, torch._int_mm(a, b) if m > 16 else a.int() @ b.int())
    assert int(got[0, 0]) == 128 * 128 * k and int(got[1, 1]) == 127 * 127 * (k - 1) + 127


def test_cpu_int8_kernels_give_the_same_layer_output(monkeypatch):
    from polydiff import quantize as q

    assert q.cpu_int8_kernel() in ("int_mm", "float")
    torch.manual_seed(0)
    layer = QuantizedLayer(nn.Linear(40, 24), "int8", 1.0, dynamic=True)
    x = torch.randn(50, 40)
    outs = []
    for kernel in ("int_mm", "float"):
        monkeypatch.setattr(q, "CPU_INT8_KERNEL", kernel)
        outs.append(layer(x))
    assert torch.equal(outs[0], outs[1])


def _cuda_int_mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``torch._int_mm`` with the size rules cuBLASLt's int8 kernel showed on an H200 (its row limit,
    between 20,000 and 66,816 there, taken as 65,535)."""
    (m, k), n = a.shape, b.shape[1]
    if k % 8 or n % 8 or (n > 24 and m % 32) or m > 65535:
        raise RuntimeError(f"CUBLAS_STATUS_NOT_SUPPORTED: m {n} n {m} k {k}")
    return a.int() @ b.int()


@pytest.mark.parametrize("m, k, n, refused", [(100, 2, 64, True), (5, 64, 66, True), (17, 10, 3, True),
                                              (16612, 64, 64, True), (66816, 64, 64, True), (70001, 9, 40, True),
                                              (0, 16, 32, False), (64, 64, 64, False)])
def test_int8_product_padded_for_cuda_is_exact(monkeypatch, m, k, n, refused):
    """The CUDA path pads and splits any size into calls the kernel takes, with the exact product."""
    from polydiff import quantize as q

    g = torch.Generator().manual_seed(m + k + n)
    a = torch.randint(-127, 128, (m, k), dtype=torch.int8, generator=g)
    b = torch.randint(-127, 128, (k, n), dtype=torch.int8, generator=g)
    with pytest.raises(RuntimeError, match="NOT_SUPPORTED") if refused else nullcontext():
        _cuda_int_mm(a, b)  # the fake kernel refuses these sizes unpadded
    monkeypatch.setattr(torch, "_int_mm", _cuda_int_mm)
    got = q._int8_product(a, b, padded=True)
    assert got.dtype == torch.int32 and got.shape == (m, n)
    assert torch.equal(got, a.int() @ b.int())


@pytest.mark.parametrize("scheme", ["int8", "fp8"])
@pytest.mark.parametrize("make,shape", [(lambda: nn.Linear(24, 16), (3, 5, 24)),
                                        (lambda: nn.Conv1d(6, 8, 3, padding=1), (4, 6, 20))])
def test_dynamic_input_scales_follow_each_row(make, shape, scheme):
    """Rows of very different size: one static scale (set by the largest) rounds the small rows
    away; per-row scales keep every row to its own relative precision."""
    torch.manual_seed(0)
    layer = make()
    x = torch.randn(shape)
    x[0] *= 300  # one sample far larger than the rest
    dyn = QuantizedLayer(layer, scheme, float(x.abs().max()), dynamic=True)
    stat = QuantizedLayer(layer, scheme, float(x.abs().max()))
    want = layer(x[1:]).detach()
    assert rel_err(dyn(x)[1:], want) < (0.03 if scheme == "int8" else 0.08)
    if scheme == "int8":
        assert rel_err(stat(x)[1:], want) > 0.3
    assert "dynamic input scales" in repr(dyn)


def test_dynamic_int8_linear_is_the_int8_arithmetic():
    torch.manual_seed(2)
    layer = nn.Linear(10, 6)
    x = torch.randn(2, 7, 10) * torch.logspace(-2, 2, 7)[:, None]
    q = QuantizedLayer(layer, "int8", 1.0, dynamic=True)  # the calibrated range is not used
    w = layer.weight.detach()
    sw = w.abs().amax(1) / 127
    wq = torch.round(w / sw[:, None]).clamp(-127, 127)
    sx = x.abs().amax(-1, keepdim=True) / 127
    want = ((torch.round(x / sx) @ wq.t()) * sx * sw + layer.bias.detach())
    torch.testing.assert_close(q(x), want, rtol=1e-5, atol=1e-5)


class OutlierNet(nn.Module):
    """``read(tanh(mix(x)))``: ``mix`` sees one planted outlier input in calibration, far
    larger than the inputs that carry the signal."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.mix, self.read = nn.Linear(6, 16), nn.Linear(16, 3)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.read(torch.tanh(self.mix(x)))


def outlier_calibration(net: nn.Module) -> None:
    gen = torch.Generator().manual_seed(0)
    for i in range(10):
        x = torch.randn(32, 6, generator=gen)
        if i == 0:
            x[0, 2] = 2000.0  # the outlier: a static scale from it rounds every other input to 0
        net(x, torch.full((32,), i / 10))


def test_error_budget_keeps_a_layer_with_an_outlier_input_and_reports_it():
    net = OutlierNet()
    q, rep = quantize(net, outlier_calibration, "int8", inputs="static")
    assert rep.error_all > 0.5 and rep.error <= rep.tolerance == 0.05
    assert rep.quantized == ["read"] and isinstance(q.read, QuantizedLayer) and isinstance(q.mix, nn.Linear)
    assert rep.kept == {"mix": f"sensitivity {rep.sensitivity['mix']:.3g}"}
    assert rep.sensitivity["mix"] > 0.5 > 0.05 > rep.sensitivity["read"]
    assert "kept in full precision: mix (sensitivity" in rep.summary() and "tolerance 0.05" in rep.summary()
    # without the budget the layer is quantized, and the network is far off
    q_all, rep_all = quantize(net, outlier_calibration, "int8", inputs="static", tolerance=None)
    assert rep_all.quantized == ["mix", "read"] and rep_all.error is None and not rep_all.sensitivity
    x = torch.randn(64, 6)
    want = net(x, torch.zeros(64)).detach()
    assert rel_err(q_all(x, torch.zeros(64)), want) > 0.5
    assert rel_err(q(x, torch.zeros(64)), want) < 0.05
    # per-row (dynamic) scales confine the outlier to its own row: everything is quantized, within budget
    q_dyn, rep_dyn = quantize(net, outlier_calibration, "int8")
    assert rep_dyn.quantized == ["mix", "read"] and rep_dyn.error <= 0.05 and not rep_dyn.kept
    assert rel_err(q_dyn(x, torch.zeros(64)), want) < 0.05


def test_sensitivity_ranking_replays_a_few_calls_and_the_budget_all_of_them():
    """Ranking the layers replays SENSITIVITY_CALLS recorded calls per layer (the first, the
    last and evenly between), not all of them: it was most of the cost of quantizing a large
    network. The error reported, and the budget, stay on every recorded call."""
    net = OutlierNet()
    seen: list[float] = []
    net.register_forward_pre_hook(lambda m, args: seen.append(round(float(args[1][0]), 6)))
    _, rep = quantize(net, outlier_calibration, "int8", inputs="static")
    times = [i / 10 for i in range(10)]
    assert seen[:10] == times and rep.kept == {"mix": f"sensitivity {rep.sensitivity['mix']:.3g}"}
    ranking = seen[30:30 + 2 * SENSITIVITY_CALLS]  # after calibration, the float and the all-quantized replays
    assert SENSITIVITY_CALLS == 4 and ranking == [0.0, 0.3, 0.6, 0.9] * 2
    assert seen[10:30] == times * 2 and seen[30 + 2 * SENSITIVITY_CALLS:] == times * 2  # bisection: all calls


def test_error_budget_shows_progress_unless_asked_not_to(capsys):
    quantize(OutlierNet(), outlier_calibration, "int8", inputs="static", progress=True)
    err = capsys.readouterr().err
    assert "quantization: error budget" in err and "replays" in err
    quantize(OutlierNet(), outlier_calibration, "int8", inputs="static", progress=False)
    assert capsys.readouterr().err == ""


def test_error_budget_keeps_the_most_sensitive_layers_first():
    torch.manual_seed(4)
    net = nn.Sequential(*(nn.Linear(8, 8) for _ in range(4)))

    def calibrate(m):
        for i in range(6):
            x = torch.randn(16, 8)
            x[0, i] = 500.0  # every layer's input range is set by one outlier of the first layer...
            m(x)

    _, everything = quantize(net, calibrate, "int8", inputs="static", tolerance=None)
    _, rep = quantize(net, calibrate, "int8", inputs="static", tolerance=0.02)
    ranked = sorted(rep.sensitivity, key=lambda n: -rep.sensitivity[n])
    assert set(rep.sensitivity) == set(everything.quantized) and rep.error <= 0.02 < rep.error_all
    assert list(rep.kept) == ranked[: len(rep.kept)] and rep.quantized == sorted(ranked[len(rep.kept):])


def test_recorder_keeps_calls_spread_over_the_whole_run():
    rec = _Recorder(4)
    for i in range(37):
        rec(nn.Identity(), (torch.tensor(float(i)),), {"k": i})
    got = [int(a[0]) for a, kw in rec.spread()]
    assert len(got) <= 4 and got[0] == 0 and got[-1] >= 24 and got == sorted(set(got))
    assert all(kw["k"] == i for (_, kw), i in zip(rec.spread(), got, strict=True))


class TimeNet(nn.Module):
    """x -> MLP(x) + time embedding, the time embedding a small MLP of t alone."""

    def __init__(self) -> None:
        super().__init__()
        self.temb = nn.Sequential(nn.Linear(1, 16), nn.SiLU(), nn.Linear(16, 16))
        self.inp, self.out = nn.Linear(2, 16), nn.Linear(16, 2)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        h = torch.nn.functional.silu(self.inp(x) + self.temb(t[:, None].to(x.dtype)))
        return self.out(h)


def test_calibration_spans_every_step_and_time_layers_are_kept():
    torch.manual_seed(0)
    net = TimeNet()
    seen: list[float] = []

    def calibrate(m):
        gen = torch.Generator().manual_seed(0)
        for t in (0.9, 0.5, 0.1):  # inputs of very different size at different times
            x = torch.randn(32, 2, generator=gen) * (1 + 20 * t)
            seen.append(float(x.abs().max()))
            m(x, torch.full((32,), t))

    qnet, rep = quantize(net, calibrate, "int8", keep=["out"], inputs="static")
    seen_all, seen[:] = list(seen), []
    assert rep.quantized == ["inp"] and rep.calls == 3
    assert rep.kept == {"temb.0": "time input", "temb.2": "time input", "out": "keep pattern"}
    assert isinstance(qnet.inp, QuantizedLayer) and isinstance(net.inp, nn.Linear)  # the original is untouched
    assert float(qnet.inp.xscale) == pytest.approx(max(seen_all) / 127, rel=1e-6)
    q99, _ = quantize(net, calibrate, "int8", percentile=99.0, inputs="static")
    assert float(q99.inp.xscale) < float(qnet.inp.xscale)
    assert rep.bytes_after < rep.bytes_before
    assert "1 layers quantized (static input scales)" in rep.summary()


class SharedTimeNet(TimeNet):
    """TimeNet with its time embedded once for the batch and broadcast (as with shared_time)."""

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        tt = shared_time(t, x.shape[0])
        return self.out(torch.nn.functional.silu(self.inp(x) + self.temb(tt[:, None].to(x.dtype))))


@pytest.mark.parametrize("batch", [32, 1])
def test_a_time_embedded_once_and_broadcast_is_kept(batch):
    """A time layer that sees one row while the others see the batch is a time layer; at a
    calibration batch of one nothing can tell, and nothing is kept for it."""
    torch.manual_seed(0)

    def calibrate(m):
        for t in (0.9, 0.5, 0.1):
            m(torch.randn(batch, 2), torch.full((1,), t).expand(batch))

    _, rep = quantize(SharedTimeNet(), calibrate, "int8", tolerance=None)
    if batch > 1:
        assert rep.kept == {"temb.0": "time input", "temb.2": "time input"} and rep.quantized == ["inp", "out"]
    else:
        assert rep.kept == {} and sorted(rep.quantized) == ["inp", "out", "temb.0", "temb.2"]


def test_errors():
    net = TimeNet()
    with pytest.raises(ValueError, match="scheme must be one of"):
        quantize(net, lambda m: None, "int4")
    with pytest.raises(ValueError, match="no Linear"):
        quantize(nn.SiLU(), lambda m: None)
    with pytest.raises(ValueError, match="percentile"):
        quantize(net, lambda m: None, percentile=0)
    with pytest.raises(ValueError, match=r"no layer .* was quantized"):
        quantize(net, lambda m: None)  # calibration never called the network
    with pytest.raises(ValueError, match="inputs must be one of"):
        quantize(net, lambda m: None, inputs="per-channel")
    with pytest.raises(ValueError, match="tolerance must be positive"):
        quantize(net, lambda m: None, tolerance=0)


RECIPE = {"modality": "toy", "data": {"name": "gmm", "k": 4, "dim": 2},
          "model": {"name": "mlp", "hidden": 32, "depth": 2},
          "train": {"max_steps": 60, "batch_size": 64, "accelerator": "cpu", "devices": 1, "threads": 1,
                    "checkpoint_every": 60, "progress": False, "logger": "none"},
          "sample": {"steps": 8, "num": 16, "sampler": "dpm++2m"}}


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ptq") / "run"
    polydiff.train(RECIPE, out, fresh=True, verbose=False)
    return out / "checkpoints" / "last.ckpt"


@pytest.mark.parametrize("scheme", ["int8", "fp8"])
def test_generator_quantized_stays_close(ckpt, scheme):
    gen = polydiff.load(ckpt)
    q = gen.quantized(scheme, calibration=32)
    assert q.quantization.quantized and q.net is not gen.net
    # the time embedding and the FiLM projections, fed by the time alone, stay in full precision
    time_layers = [k for k in q.quantization.kept if k.startswith("time.") or k.endswith(".film")]
    assert len(time_layers) == 2 + len(gen.net.mlp.blocks)
    assert all(q.quantization.kept[k] == "time input" for k in time_layers)
    a = gen.generate(256, seed=4, progress=False)
    b = q.generate(256, seed=4, progress=False)
    assert not np.array_equal(a, b)
    assert np.median(np.abs(a - b)) < 0.05 * np.abs(a).std()  # the same samples up to quantization error
    assert gen.quantization is None and isinstance(gen.net.mlp, nn.Module)
    # what a notebook shows for each: the model, where it came from, and whether it is quantized
    params = sum(p.numel() for p in gen.net.parameters())
    assert f"{params:,} parameters" in repr(gen) and str(ckpt) in repr(gen) and "quantized" not in repr(gen)
    assert f"quantized {scheme}" in repr(q) and "parameters" not in repr(q)


def test_calibration_in_chunks_of_batch_size(ckpt):
    """``batch_size`` bounds the calibration's memory: 32 samples, 8 at a time, make four times
    the network calls of one batch, over the same trajectories (the same layers quantized)."""
    gen = polydiff.load(ckpt)
    whole = gen.quantized("int8", calibration=32, progress=False).quantization
    chunked = gen.quantized("int8", calibration=32, batch_size=8, progress=False).quantization
    assert whole.calls > 0 and chunked.calls == 4 * whole.calls
    assert chunked.quantized == whole.quantized and chunked.kept == whole.kept


def test_cli_quantize_writes_and_records(ckpt, tmp_path):
    exe = Path(sys.executable).parent / "polydiff"
    got = subprocess.run([str(exe), "sample", str(ckpt), "--out", str(tmp_path / "q"), "--quantize", "int8",
                          "--num", "8", "--seed", "1", "--quiet", "--threads", "1"],
                         capture_output=True, text=True, timeout=300)
    assert got.returncode == 0, got.stderr
    assert "polydiff: quantized, int8:" in got.stdout
    meta = json.loads((tmp_path / "q" / "polydiff.json").read_text())
    assert meta["quantize"].startswith("int8:")


def test_quantized_layer_keeps_the_weight_attribute():
    layer = nn.Conv1d(4, 6, 3)
    q = QuantizedLayer(layer, "int8", 1.0)
    assert q.weight.shape == layer.weight.shape and q.weight.dtype == layer.weight.dtype
    assert rel_err(q.weight, layer.weight.detach()) < 0.01


def test_a_call_overrides_a_sampler_option_the_recipe_sets(tmp_path):
    """generate(..., eta=...) when the recipe's sample section sets eta too (was a TypeError)."""
    recipe = {**RECIPE, "sample": {"steps": 3, "num": 4, "sampler": "ddim", "eta": 0.0},
              "train": {**RECIPE["train"], "max_steps": 2, "checkpoint_every": 2}}
    polydiff.train(recipe, tmp_path / "run", fresh=True, verbose=False)
    gen = polydiff.load(tmp_path / "run" / "checkpoints" / "last.ckpt")
    assert gen.settings(eta=1.0).options["eta"] == 1.0
    assert gen.settings().options["eta"] == 0.0
    a = gen.generate(8, seed=0, progress=False, eta=1.0)
    b = gen.generate(8, seed=0, progress=False)
    assert not np.array_equal(a, b)


def test_a_layer_subclass_with_its_own_forward_is_kept_and_a_plain_subclass_runs_its_base_kernel():
    """A weight-standardised Conv1d (the crystals UNet's) has a forward of its own: the quantized
    stand-in would drop it, so it stays in full precision, named; a subclass without one is
    quantized with its base class's kernel (F.conv1d for a Conv1d subclass, whatever its name)."""

    class Standardised(nn.Conv1d):
        def forward(self, x):
            w = (self.weight - self.weight.mean((1, 2), keepdim=True)) / (self.weight.std((1, 2), keepdim=True) + 1e-5)
            return nn.functional.conv1d(x, w, self.bias, padding=self.padding)

    class Renamed(nn.Conv1d):
        pass

    torch.manual_seed(0)
    net = nn.Sequential(Standardised(3, 8, 3, padding=1), Renamed(8, 4, 3, padding=1))
    x = torch.randn(5, 3, 16)
    qnet, rep = quantize(net, lambda m: m(x), "int8")
    assert rep.kept == {"0": "own forward (Standardised)"} and rep.quantized == ["1"]
    assert qnet[1].kind == "Conv1d"
    assert torch.allclose(qnet(x), net(x), atol=0.05 * float(net(x).abs().max()))
