"""The per-step savings of the training loop change nothing computed or reported: batch indices, logged
values, the run's metrics (bench/train_overhead.py measures the time)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback

import polydiff
from polydiff.toy.data import TensorStates
from polydiff.training import StepBatches

pytestmark = pytest.mark.usefixtures("one_thread")


def reference_indices(b: StepBatches, step: int) -> torch.Tensor:
    """The general formula: position by position, each in its epoch's permutation."""
    pos = (step * b.world + b.rank) * b.batch_size + torch.arange(b.batch_size)
    return torch.stack([b.permutation(int(p) // b.n)[int(p) % b.n] for p in pos])


@pytest.mark.parametrize(("n", "batch", "world"), [(50, 8, 1), (50, 10, 1), (64, 8, 2), (7, 16, 1), (30, 4, 3)])
def test_batch_indices_match_the_general_formula(n, batch, world):
    ds = TensorStates(x=torch.arange(float(n))[:, None])
    for rank in range(world):
        b = StepBatches(ds, batch, seed=5, rank=rank, world=world)
        for step in range(0, 40, 3):
            idx = b.indices(step)
            assert idx.dtype == torch.int64 and torch.equal(idx, reference_indices(b, step)), (step, rank)
            idx.fill_(-1)  # the result is the caller's: the cached permutation is untouched
            assert torch.equal(b.indices(step), reference_indices(b, step))


class Losses(Callback):
    """Every step's loss (the training step's output), and a stop after ``stop`` steps when set."""

    def __init__(self, stop: int = 0) -> None:
        self.losses: list[float] = []
        self.stop = stop

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))
        if self.stop and trainer.global_step == self.stop:
            trainer.should_stop = True  # as max_minutes does


def tiny(**train) -> dict:
    return {"modality": "toy", "data": {"name": "gmm", "n": 200},
            "model": {"name": "mlp", "hidden": 8, "depth": 1, "emb_dim": 8},
            "train": {"batch_size": 16, "checkpoint_every": 100, "progress": False, "accelerator": "cpu",
                      "devices": 1, "ema": 0.9, "threads": 1, **train}}


@pytest.mark.parametrize(("max_steps", "stop"), [(10, 0), (10, 6)])
def test_logged_losses_and_run_metrics_are_those_of_their_steps(tmp_path, max_steps, stop):
    seen = Losses(stop)
    run = polydiff.train(tiny(max_steps=max_steps, log_every=4), tmp_path, verbose=False, callbacks=[seen])
    last = stop or max_steps
    assert run.step == last and len(seen.losses) == last
    np.testing.assert_allclose(run.metrics["train/loss"], seen.losses[-1], rtol=1e-6)
    rows = (tmp_path / "logs" / "version_0" / "metrics.csv").read_text().splitlines()
    col = rows[0].split(",").index("train/loss")
    logged = {int(r.split(",")[rows[0].split(",").index("step")]): float(r.split(",")[col]) for r in rows[1:]}
    # Lightning's "step" column counts from 0: the rows of steps 4 and 8, and the early stop's
    expect = {s - 1: seen.losses[s - 1] for s in (4, 8) if s <= last} | ({last - 1: seen.losses[-1]} if stop else {})
    assert logged.keys() == expect.keys()
    for k in expect:
        np.testing.assert_allclose(logged[k], expect[k], rtol=1e-6)


def test_overhead_benchmark_times_polydiff_and_the_plain_loop_alike(bench_module, monkeypatch):
    """bench/train_overhead.py end to end on a tiny toy recipe: its timing wrapper passes every
    argument of ``DiffusionModule._loss`` through (a keyword added to ``_loss`` once broke it), each
    side records one forward per step, and polydiff and the plain loop end with the same weights
    (also with a per-epoch learning-rate decay, which the plain loop once left out)."""
    import argparse

    bench = bench_module("train_overhead")
    small = {"data": {"name": "gmm", "k": 4, "dim": 2, "n": 256, "seed": 0},
             "model": {"name": "mlp", "hidden": 16, "depth": 1, "emb_dim": 8}}
    full = bench.recipe_dict

    def recipe_dict(name, steps, threads):
        cfg = full(name, steps, threads)
        cfg["train"] = {**cfg["train"], "log_every": 4, "batch_size": 32, "lr_decay": 0.5}  # 256 / 32: 8 steps an epoch
        return {**cfg, **small}

    monkeypatch.setattr(bench, "recipe_dict", recipe_dict)
    args = argparse.Namespace(warmup=2, periods=2, threads=1, rounds=1)
    with bench.timed_loss(bench.training):
        r = bench.measure("toy", args, None)
    assert r["checks"]["polydiff_vs_plain_identical_weights"], r["checks"]
    for side in ("polydiff", "plain", "fwd_bwd"):
        m = r["median"][side]
        assert m["steps"] == 8 and m["fwd_bwd_ms"] > 0, (side, m)


@pytest.mark.parametrize("scale", [1e-3, 1.0, 50.0])  # below, near and above the clip norm
def test_clip_grad_norm_gives_torchs_bits_and_declines_mixed_gradients(scale):
    from polydiff.training import clip_grad_norm

    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(*s)) for s in [(7, 5), (5,), (3, 4, 2), (1,)]]
    grads = [torch.randn_like(p) * scale for p in params]
    mine = [torch.nn.Parameter(p.detach().clone()) for p in params]
    for p, q, g in zip(params, mine, grads):
        p.grad, q.grad = g.clone(), g.clone()
    mine[1].grad = params[1].grad = None  # a parameter without a gradient is skipped
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    assert clip_grad_norm(mine, 1.0) is True
    for p, q in zip(params, mine):
        assert (p.grad is None and q.grad is None) or torch.equal(p.grad, q.grad)
    mixed = [torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(3, dtype=torch.float64))]
    for p in mixed:
        p.grad = torch.full_like(p, scale)
    assert clip_grad_norm(mixed, 1.0) is False and all(torch.equal(p.grad, torch.full_like(p, scale)) for p in mixed)


def test_training_clips_through_the_fast_path(tmp_path, monkeypatch):
    """A float32 run on one device clips every step with polydiff.training.clip_grad_norm (a
    Lightning change that bypassed configure_gradient_clipping would lose the saving silently)."""
    from polydiff import training

    took: list[bool] = []
    fast = training.clip_grad_norm
    monkeypatch.setattr(training, "clip_grad_norm", lambda params, m: took.append(fast(params, m)) or took[-1])
    polydiff.train(tiny(max_steps=4, grad_clip=0.5), tmp_path, verbose=False)
    assert took == [True] * 4
