"""On a GPU: every kind of core sampler runs unchanged on CUDA (categorical, two-time, manifold,
flow and mixed states; the fixed-step Gaussian ones are in ``test_compiled_sampling.py``), the
sampling loop captured in a CUDA graph, a bf16 network under an fp32 solver, training on one GPU
(plain, DDP and FSDP strategies, bf16 mixed precision), FSDP with the EMA against DDP on two GPUs,
and sharded sampling by two processes that share one GPU. All skip without CUDA, except the
choice of the process-group backend, checked here with a mocked device count."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import polydiff as pd
from polydiff.distributed import backend
from polydiff.processes import GeodesicFlow
from polydiff.processes.so3 import SO3
from polydiff.toy.rotations import ExactRotationDenoiser, RotationMixture

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
F64 = torch.float64
POLYDIFF = Path(sys.executable).parent / "polydiff"


def test_backend_needs_a_gpu_for_every_local_process(monkeypatch):
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert backend(2) == "gloo"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert backend(2) == "gloo"  # two ranks on one GPU: NCCL would refuse them
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert backend(2) == "nccl"
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert backend(8) == "gloo"
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert backend(8) == "nccl"  # two nodes of two GPUs


def _net(d_in: int, d_out: int, device: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(d_in, 64), torch.nn.SiLU(), torch.nn.Linear(64, d_out)).to(device)


def _both(run):
    """``run(device)`` on CUDA and on the CPU, the results on the CPU."""
    got = run("cuda")
    want = run("cpu")
    return (got.cpu() if isinstance(got, torch.Tensor) else {k: v.cpu() for k, v in got.items()}), want


@cuda
@pytest.mark.parametrize("sampler", ["ancestral", "tau_leaping", "first_hitting"])
def test_categorical_samplers_on_cuda(sampler):
    V, L = 5, 8

    def run(device):
        head = _net(17, V, device)  # seeds the generator, then the embedding
        emb = torch.nn.Embedding(V + 1, 16).to(device)

        def model(state, t):
            x = state["x"]
            h = torch.cat([emb(x), t.reshape(-1, 1, 1).expand(x.shape[0], L, 1).to(torch.float32)], -1)
            return {"x": head(h)}

        return pd.sample(model, {"x": pd.FieldSpec(pd.Absorbing(V))}, {"x": (256, L)}, sampler=sampler, steps=20,
                         seed=0, device=device)["x"]

    got, want = _both(run)
    assert got.dtype == want.dtype and (want != V).all()  # every token unmasked
    assert float((got == want).float().mean()) > 0.99  # the same draws, up to float32 ties at a boundary


@cuda
def test_two_time_ctm_sampler_on_cuda():
    def run(device):
        def model(x, t, s):
            return (0.3 + s.reshape(-1, 1).to(x.dtype)) * x + t.reshape(-1, 1).to(x.dtype) - s.reshape(-1, 1)

        return pd.sample(model, pd.GaussianProcess("vp_cosine"), (64, 2), sampler="ctm", steps=4, gamma=0.5,
                         prediction="x0", dtype=F64, seed=1, device=device)

    got, want = _both(run)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


@cuda
def test_rotation_flow_on_cuda():
    mix = RotationMixture.random(3, seed=2)

    def run(device):
        fields = {"R": pd.FieldSpec(GeodesicFlow(SO3(), rate=5.0))}
        den = ExactRotationDenoiser(mix.centres, mix.weights, fields["R"].process)
        return pd.sample(den, fields, {"R": (200, 3, 3)}, steps=20, seed=0, dtype=F64, device=device)["R"]

    got, want = _both(run)
    torch.testing.assert_close(got, want, rtol=1e-7, atol=1e-7)


@cuda
@pytest.mark.parametrize("sampler", ["euler", "heun"])
def test_flow_matching_on_cuda(sampler):
    def run(device):
        net, proc = _net(3, 2, device), pd.GaussianProcess(pd.LinearInterpolant())
        return pd.sample(lambda x, t: net(torch.cat([x, t[:, None]], 1)), proc, (128, 2), sampler=sampler, steps=8,
                         seed=0, prediction="velocity", device=device)

    got, want = _both(run)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


@cuda
def test_mixed_gaussian_and_categorical_state_on_cuda():
    V = 4

    def run(device):
        net = _net(4, 2 + V, device)

        def model(state, t):
            h = torch.cat([state["x"], state["c"][:, None].float(), t[:, None].float()], 1)
            out = net(h)
            return {"x": out[:, :2], "c": out[:, 2:]}

        fields = {"x": pd.FieldSpec(pd.GaussianProcess("vp_linear")), "c": pd.FieldSpec(pd.Absorbing(V))}
        return pd.sample(model, fields, {"x": (128, 2), "c": (128,)}, sampler="dpm++2m", steps=10, seed=0,
                         device=device)

    got, want = _both(run)
    torch.testing.assert_close(got["x"], want["x"], rtol=1e-3, atol=1e-3)
    assert float((got["c"] == want["c"]).float().mean()) > 0.99


def _mlp_model(device: str, dtype: torch.dtype = torch.float32):
    net = _net(3, 2, device).to(dtype)

    def model(x, t):
        return net(torch.cat([x, t[:, None].to(x.dtype)], 1))

    return model


@cuda
@pytest.mark.parametrize("sampler", ["ddim", "dpm++2m", "unipc"])
def test_loop_captured_in_a_cuda_graph_matches_eager(sampler):
    model, proc = _mlp_model("cuda"), pd.GaussianProcess(pd.VPLinear())
    for seed in (0, 1, 2):  # replays read the new noise, not the captured one
        eager = pd.sample(model, proc, (512, 2), sampler=sampler, steps=6, seed=seed, device="cuda")
        graph = pd.sample(model, proc, (512, 2), sampler=sampler, steps=6, seed=seed, device="cuda",
                          compile="cudagraphs")
        torch.testing.assert_close(graph, eager, rtol=1e-4, atol=1e-4)
    assert not torch.equal(graph, pd.sample(model, proc, (512, 2), sampler=sampler, steps=6, seed=0, device="cuda"))


@cuda
@torch.no_grad()
def test_bf16_network_fp32_solver_on_cuda():
    proc = pd.GaussianProcess(pd.VPLinear())
    full = pd.sample(_mlp_model("cuda"), proc, (1024, 2), steps=10, seed=0, device="cuda")
    half = pd.sample(_mlp_model("cuda", torch.bfloat16), proc, (1024, 2), steps=10, seed=0, device="cuda",
                     model_dtype=torch.bfloat16)
    assert half.dtype == torch.float32 and half.device.type == "cuda"
    assert not torch.equal(half, full) and float((half - full).abs().median()) < 0.05 * float(full.abs().max())


def _train(tmp_path: Path, **train) -> subprocess.CompletedProcess:
    recipe = {"modality": "toy", "data": {"name": "gmm", "n": 500},
              "model": {"name": "mlp", "hidden": 32, "depth": 2, "emb_dim": 16},
              "train": {"max_steps": 6, "batch_size": 64, "checkpoint_every": 3, "progress": False,
                        "accelerator": "gpu", "devices": 1, "log_every": 3, **train},
              "sample": {"num": 16, "steps": 5}}
    path = tmp_path / "recipe.yaml"
    path.write_text(json.dumps(recipe))
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, "-m", "polydiff.cli", "train", str(path), "--out", str(tmp_path / "run")],
                          capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)


@cuda
@pytest.mark.parametrize(("strategy", "precision", "checkpoints"),
                         [("auto", "32", "full"), ("auto", "bf16-mixed", "full"), ("ddp", "32", "full"),
                          ("fsdp", "32", "full"), ("fsdp", "32", "sharded")])
def test_training_on_one_gpu(tmp_path, strategy, precision, checkpoints):
    proc = _train(tmp_path, strategy=strategy, precision=precision, checkpoint_format=checkpoints)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "trained to step 6" in proc.stdout
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_dir() == (checkpoints == "sharded")
    gen = pd.load(tmp_path / "run" / "checkpoints" / "last.ckpt", device="cuda")
    x = np.asarray(gen.generate(32, seed=0, progress=False))
    assert x.shape == (32, 2) and np.isfinite(x).all()


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_fsdp_with_ema_on_two_gpus_equals_ddp(tmp_path):
    """The CPU test in test_training.py on two GPUs (NCCL): FSDP shards the network and its EMA
    alike, so weights and EMA match a DDP run, with single-file and with sharded checkpoints."""
    from polydiff.checkpoints import load_checkpoint

    weights = {}
    for strategy, fmt in (("ddp", "full"), ("fsdp", "full"), ("fsdp", "sharded")):
        (tmp_path / f"{strategy}-{fmt}").mkdir()
        proc = _train(tmp_path / f"{strategy}-{fmt}", devices=2, strategy=strategy, ema=0.9, checkpoint_format=fmt)
        assert proc.returncode == 0, proc.stderr[-4000:]
        weights[strategy, fmt] = load_checkpoint(tmp_path / f"{strategy}-{fmt}" / "run" / "checkpoints" /
                                                 "last.ckpt")["state_dict"]
    want = weights["ddp", "full"]
    assert any(k.startswith("ema.") for k in want)
    for fmt in ("full", "sharded"):
        assert sorted(weights["fsdp", fmt]) == sorted(want)
        for k, w in want.items():
            torch.testing.assert_close(weights["fsdp", fmt][k], w, rtol=1e-4, atol=1e-5, msg=f"{fmt}: {k}")


@cuda
def test_two_processes_on_one_gpu_write_the_bytes_of_one(tmp_path):
    assert _train(tmp_path).returncode == 0
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"

    def sample(out: str, *extra: str) -> dict[str, bytes]:
        cmd = [str(POLYDIFF), "sample", str(ckpt), "--out", str(tmp_path / out), "--seed", "5", "--num", "13",
               "--batch-size", "3", "--quiet", *extra]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-4000:]
        return {p.name: p.read_bytes() for p in sorted((tmp_path / out).rglob("*")) if p.is_file()}

    one, two = sample("one"), sample("two", "--processes", "2")
    assert one == two and one


@cuda
def test_adaptive_rk45_on_cuda():
    def run(device):
        return pd.sample(_mlp_model(device), pd.GaussianProcess(pd.VPLinear()), (128, 2), sampler="rk45", seed=0,
                         device=device)

    got, want = _both(run)
    torch.testing.assert_close(got, want, rtol=1e-2, atol=1e-2)  # the accepted steps may differ by a rounding


@cuda
def test_int8_layers_of_any_size_on_cuda():
    """CUDA's int8 product takes only some sizes (see ``_int8_product``): odd layers and batches
    are padded and split there, with the CPU's result."""
    from polydiff.quantize import QuantizedLayer

    torch.manual_seed(0)
    for d_in, d_out, rows in ((2, 64, 100), (64, 66, 5), (10, 3, 17), (64, 64, 16612), (64, 64, 16384),
                              (64, 64, 66816), (9, 40, 70001)):
        layer = QuantizedLayer(torch.nn.Linear(d_in, d_out), "int8", 1.0, dynamic=True)
        x = torch.randn(rows, d_in)
        want = layer(x)
        got = layer.to("cuda")(x.cuda()).cpu()
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
