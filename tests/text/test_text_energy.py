"""Tests of EDLM's NCE energy (polydiff_text.energy): the energy network (shapes, padding), the
``edlm_nce`` objective (negatives from a frozen masked-diffusion teacher, determinism, teacher
checks) and a tiny end to end run in which the energy learns to tell data from the teacher's samples."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import polydiff
from polydiff.plugin import OBJECTIVES, Absorbing, Noise, load_network
from polydiff_text import TextModality
from polydiff_text.data import file_dataset
from polydiff_text.energy import EdlmNCEObjective, EnergyLM, edlm_nce, nce_negatives
from polydiff_text.models import MaskedDiffusionLM

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.filterwarnings("ignore::UserWarning")]

V, L = 9, 10
SMALL = {"dim": 16, "depth": 1, "heads": 2}
TEXT = ("to be or not to be that is the question whether tis nobler in the mind to suffer "
        "the slings and arrows of outrageous fortune or to take arms against a sea of troubles ") * 20
TRAIN = {"max_steps": 20, "batch_size": 16, "accelerator": "cpu", "devices": 1, "threads": 1, "checkpoint_every": 20,
         "progress": False, "logger": "none"}


def _energy(seed: int = 0, scale: float = 0.5) -> EnergyLM:
    """A small EnergyLM whose zero-initialised last layer is replaced by random weights (else every
    energy is 0 and no comparison could fail)."""
    torch.manual_seed(seed)
    net = EnergyLM(V, L, **SMALL).eval()
    torch.nn.init.normal_(net.head[2].weight, std=scale)
    return net


def _batch(seed: int = 0, n: int = 6) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, V, (n, L), generator=g)
    sizes = torch.randint(3, L + 1, (n,), generator=g)
    return {"tokens": tokens, "valid": torch.arange(L)[None] < sizes[:, None]}


def _recipe(path, model: dict, **loss) -> dict:
    return {"modality": "text", "data": {"name": "file", "path": str(path), "tokenizer": "char", "length": 16,
                                         "whole": True},
            "model": model, "loss": loss, "train": TRAIN}


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A barely trained character MDLM on a small text (20 steps) and the path of its text file."""
    root = tmp_path_factory.mktemp("edlm")
    (root / "play.txt").write_text(TEXT)
    recipe = _recipe(root / "play.txt", {"name": "mdlm", "dim": 32, "depth": 1, "heads": 2})
    polydiff.train(recipe, root / "mdlm", fresh=True, verbose=False)
    return root / "mdlm" / "checkpoints" / "last.ckpt", root / "play.txt"


# ---------------------------------------------------------------------------------------------
# the energy network
# ---------------------------------------------------------------------------------------------

def test_energy_shapes_and_residual_flag():
    net = _energy()
    batch = _batch()
    e = net.energy(batch["tokens"], batch["valid"])
    assert e.shape == (6,) and e.dtype == torch.float32 and torch.isfinite(e).all()
    assert torch.equal(net(batch)["energy"], e) and torch.equal(net(batch, torch.rand(6))["energy"], e)
    assert EnergyLM.residual_energy is True and net.residual_energy
    assert net.features(batch["tokens"], batch["valid"]).shape == (6, SMALL["dim"])
    assert e.std() > 0  # sequences get different energies
    untrained = EnergyLM(V, L, **SMALL)
    assert torch.equal(untrained.energy(batch["tokens"], batch["valid"]), torch.zeros(6))  # starts as p_diff alone


def test_energy_ignores_padding_but_not_valid_tokens():
    net = _energy(1)
    batch = _batch(1)
    tokens, valid = batch["tokens"], batch["valid"]
    e = net.energy(tokens, valid)
    changed = torch.where(valid, tokens, (tokens + 1 + torch.arange(L)) % V)
    assert not torch.equal(changed, tokens)
    torch.testing.assert_close(net.energy(changed, valid), e, rtol=1e-5, atol=1e-6)
    one_valid = tokens.clone()
    one_valid[:, 0] = (one_valid[:, 0] + 1) % V  # position 0 is always valid
    assert (net.energy(one_valid, valid) - e).abs().min() > 1e-6


# ---------------------------------------------------------------------------------------------
# negatives and the objective
# ---------------------------------------------------------------------------------------------

def _teacher(seed: int = 0) -> MaskedDiffusionLM:
    torch.manual_seed(seed)
    return MaskedDiffusionLM(V, L, **SMALL).eval()


def test_negatives_keep_unmasked_tokens_and_padding_and_draw_in_the_window():
    batch = _batch(2, n=32)
    x0, valid = batch["tokens"], batch["valid"]
    process = Absorbing(V)
    x_hat, x_t, t = nce_negatives(_teacher(), process, x0, valid, Noise(32, seed=5), (0.4, 0.6))
    assert ((t >= 0.4) & (t <= 0.6)).all() and t.std() > 0
    masked = x_t == process.mask_id
    assert not (masked & ~valid).any() and masked.any()
    assert torch.equal(x_hat[~masked], x0[~masked])  # unmasked and padding positions kept
    assert ((x_hat >= 0) & (x_hat < V)).all()
    assert (x_hat[masked] != x0[masked]).any()  # an untrained teacher does not recover the data
    frac = masked[valid].double().mean()
    assert 0.3 < frac < 0.7  # about t of the valid tokens are masked


def test_objective_is_deterministic_finite_and_trains_the_energy():
    objective = edlm_nce(info={"vocab_size": V}, teacher=_teacher())
    assert isinstance(objective, EdlmNCEObjective) and OBJECTIVES.get("edlm_nce") is edlm_nce
    net = _energy(2).train()
    batch = _batch(3, n=8)
    loss, logs = objective(net, batch, Noise(8, seed=11))
    again, logs2 = objective(net, batch, Noise(8, seed=11))
    assert torch.isfinite(loss) and torch.equal(loss, again)
    assert set(logs) == {"energy_pos", "energy_neg", "nce_accuracy", "negative_is_data"}
    assert all(torch.equal(logs[k], logs2[k]) for k in logs)
    other, _ = objective(net, batch, Noise(8, seed=12))
    assert not torch.equal(loss, other)  # the noise drives the negatives
    gen = torch.Generator().manual_seed(4)
    a, _ = objective(net, batch, Noise(8, generator=gen))
    b, _ = objective(net, batch, Noise(8, generator=torch.Generator().manual_seed(4)))
    assert torch.equal(a, b)  # the trainer's generator-based noise is as reproducible
    loss.backward()
    assert net.head[2].weight.grad.abs().sum() > 0
    e_pos, e_neg = logs["energy_pos"], logs["energy_neg"]
    assert 0.0 <= float(logs["nce_accuracy"]) <= 1.0 and torch.isfinite(e_pos) and torch.isfinite(e_neg)
    zero = EnergyLM(V, L, **SMALL)
    z, zlogs = objective(zero, batch, Noise(8, seed=11))
    torch.testing.assert_close(z, torch.tensor(2 * 0.6931471805599453))  # -2 log sigmoid(0)
    assert float(zlogs["nce_accuracy"]) == 0.0  # ties count as wrong


def test_objective_rejects_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="needs a teacher"):
        edlm_nce(info={"vocab_size": V})
    with pytest.raises(ValueError, match="window_lo"):
        edlm_nce(teacher=_teacher(), window_lo=0.7, window_hi=0.6)
    with pytest.raises(ValueError, match="tokens, the data"):
        edlm_nce(info={"vocab_size": V + 1}, teacher=_teacher())
    missing = tmp_path / "nowhere" / "last.ckpt"
    with pytest.raises(ValueError, match="nowhere") as err:
        edlm_nce(info={"vocab_size": V}, teacher=str(missing))
    assert "teacher" in str(err.value)
    objective = edlm_nce(teacher=_teacher())
    with pytest.raises(TypeError, match="energy network"):
        objective(_teacher(), _batch(), Noise(6, seed=0))


# ---------------------------------------------------------------------------------------------
# checkpoints and end to end
# ---------------------------------------------------------------------------------------------

def test_teacher_checks_name_the_checkpoint(teacher, tmp_path):
    ckpt, text = teacher
    data = file_dataset(text, "char", 16, whole=True)
    other = tmp_path / "other.txt"
    other.write_text("abcdefghijklmnopqrstuvwxyz 0123456789 " * 20)
    wrong = file_dataset(other, "char", 16, whole=True)
    with pytest.raises(ValueError, match="tokenizer") as err:
        edlm_nce(TextModality().fields(wrong.info), wrong.info, teacher=str(ckpt))
    assert str(ckpt) in str(err.value)
    with pytest.raises(ValueError, match="no such checkpoint"):
        edlm_nce(TextModality().fields(data.info), data.info, teacher=str(ckpt.parent / "missing.ckpt"))
    ar = _recipe(text, {"name": "ar", "dim": 16, "depth": 1, "heads": 2}, objective="autoregressive")
    ar["train"] = {**TRAIN, "max_steps": 2, "checkpoint_every": 2}
    ar_ckpt = polydiff.train(ar, tmp_path / "ar", fresh=True, verbose=False).checkpoint
    with pytest.raises(ValueError, match="masked-diffusion checkpoint") as err:
        edlm_nce(TextModality().fields(data.info), data.info, teacher=str(ar_ckpt))
    assert str(ar_ckpt) in str(err.value) and "'ar'" in str(err.value)


def test_nce_learns_to_tell_data_from_the_teachers_samples(teacher):
    ckpt, text = teacher
    data = file_dataset(text, "char", 16, whole=True)
    fields = TextModality().fields(data.info)
    objective = edlm_nce(fields, data.info, teacher=str(ckpt))
    torch.manual_seed(0)
    net = EnergyLM(int(data.info["vocab_size"]), 16, dim=32, depth=1, heads=2)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    train, val = data.train.tensors, data.val.tensors
    g = torch.Generator().manual_seed(0)
    for step in range(100):
        idx = torch.randint(0, len(data.train), (16,), generator=g)
        loss, _ = objective(net, {k: v[idx] for k, v in train.items()}, Noise(16, seed=step))
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        n = len(data.val)
        accs = [objective(net, val, Noise(n, seed=1000 + r))[1]["nce_accuracy"] for r in range(5)]
    acc = float(torch.stack(accs).mean())
    assert acc > 0.7, acc  # 0.87-0.89 over seeds; an untrained (zero) energy scores 0


def test_train_the_energy_through_polydiff_train(teacher, tmp_path):
    if "energy" not in TextModality().networks():
        pytest.skip("the text modality does not register the network 'energy' yet")
    ckpt, text = teacher
    recipe = _recipe(text, {"name": "energy", "dim": 32, "depth": 1, "heads": 2}, objective="edlm_nce",
                     teacher=str(ckpt))
    run = polydiff.train(recipe, tmp_path / "energy", fresh=True, verbose=False)
    assert {"train/loss_energy_pos", "train/loss_energy_neg", "train/loss_nce_accuracy"} <= set(run.metrics)
    loaded = load_network(run.checkpoint)
    assert isinstance(loaded.net, EnergyLM) and loaded.net.residual_energy
    data = file_dataset(text, "char", 16, whole=True)
    e = loaded.net.energy(data.val.tensors["tokens"][:4], data.val.tensors["valid"][:4])
    assert e.shape == (4,) and torch.isfinite(e).all() and e.abs().sum() > 0  # trained away from 0


def test_loading_the_text_modality_registers_the_objective():
    """A fresh process that only loads the text modality (``polydiff train`` of a recipe, loading an
    energy checkpoint in the ``edlm`` sampler) must know ``edlm_nce``: the stored recipe names it."""
    code = ("from polydiff.plugin import OBJECTIVES, load_modality; load_modality('text'); "
            "print('edlm_nce' in OBJECTIVES)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "True", "polydiff_text.modality must import polydiff_text.energy"
