"""bench/text.py's speed section against MDLM's own code: the CPU stand-ins for flash-attn's two
calls compute what flash-attn computes, ours is timed, a missing MDLM reference is reported as
such (never a made-up ratio), and the sections it did not run are kept from the previous report."""

from __future__ import annotations

import json
import math

import pytest
import torch

from polydiff.plugin import shared_dir
from polydiff_text.models import apply_rotary

SHAKESPEARE = shared_dir() / "data" / "text" / "tinyshakespeare.txt"



@pytest.fixture
def ref(bench_module):
    return bench_module("mdlm_reference")


def test_rotary_stand_in_rotates_queries_and_keys_and_leaves_values(ref):
    g = torch.Generator().manual_seed(0)
    batch, seq, heads, dim = 2, 7, 3, 8
    qkv = torch.randn(batch, seq, 3, heads, dim, generator=g, dtype=torch.float64)
    inv = 1.0 / 10_000 ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim)  # as MDLM's Rotary
    ang = torch.arange(seq, dtype=torch.float64)[:, None] * inv
    out = ref.apply_rotary_emb_qkv_(qkv, ang.cos(), ang.sin())
    # the definition: channel pairs (x_i, x_{i + d/2}) as complex numbers times exp(i * angle)
    for j in range(2):
        x = qkv[:, :, j]
        z = torch.complex(x[..., : dim // 2], x[..., dim // 2:]) * torch.polar(torch.ones_like(ang), ang)[None, :, None]
        assert torch.allclose(out[:, :, j], torch.cat([z.real, z.imag], -1), atol=1e-12)
        # and our network's rotary embedding (heads before positions there)
        ours = apply_rotary(x.transpose(1, 2), ang.cos(), ang.sin()).transpose(1, 2)
        assert torch.allclose(out[:, :, j], ours, atol=1e-12)
    assert torch.equal(out[:, :, 2], qkv[:, :, 2])
    assert not torch.allclose(out[:, 1:, :2], qkv[:, 1:, :2])  # position 0 is the identity, the rest move
    with pytest.raises(NotImplementedError):
        ref.apply_rotary_emb_qkv_(qkv, ang.cos(), ang.sin(), interleaved=True)


def test_attention_stand_in_is_softmax_attention_per_sequence(ref):
    g = torch.Generator().manual_seed(1)
    batch, seq, heads, dim = 3, 5, 2, 4
    qkv = torch.randn(batch * seq, 3, heads, dim, generator=g, dtype=torch.float64)
    cu = torch.arange(0, (batch + 1) * seq, seq, dtype=torch.int32)
    out = ref.flash_attn_varlen_qkvpacked_func(qkv, cu, seq, 0.0, causal=False)
    assert out.shape == (batch * seq, heads, dim)
    for b in range(batch):
        rows = slice(b * seq, (b + 1) * seq)  # tokens of one sequence attend only to that sequence
        for h in range(heads):
            q, k, v = (qkv[rows, i, h] for i in range(3))
            expected = torch.softmax(q @ k.T / math.sqrt(dim), -1) @ v
            assert torch.allclose(out[rows, h], expected, atol=1e-12)
    with pytest.raises(NotImplementedError):  # unequal lengths are not what the DIT passes
        ref.flash_attn_varlen_qkvpacked_func(qkv[:-1], cu, seq)


@pytest.mark.shared
@pytest.mark.skipif(not SHAKESPEARE.is_file(), reason=f"shared data file {SHAKESPEARE} not found "
                    "(set POLYDIFF_SHARED to the shared folder)")
def test_speed_section_alone_keeps_the_previous_report_and_says_when_the_reference_is_missing(tmp_path, monkeypatch,
                                                                                              bench_module):
    monkeypatch.setenv("MDLM_VENV", str(tmp_path / "no_venv"))
    monkeypatch.setenv("MDLM_REF", str(tmp_path / "no_checkout"))
    bench = bench_module("text")
    import common

    budget = {"rounds": 2, "steps": 1, "warmup": 1, "batch": 2, "num": 1, "sample_steps": [4], "default_steps": 4,
              "sample_repeats": 1, "threads": 1}
    monkeypatch.setitem(bench.SPEED_BUDGETS, "quick", budget)
    monkeypatch.setitem(bench.EDLM_BUDGETS, "quick", {"rounds": 2, "num": 1, "steps": 4, "candidates": 2, "repeats": 1,
                                                      "threads": 1})
    monkeypatch.setattr(common, "RESULTS", tmp_path)
    monkeypatch.setattr(bench, "RESULTS", tmp_path)
    previous = {"environment": {"command": "python bench/text.py --quick", "commit": "abc", "dirty": False,
                                "date": "d", "python": "p", "torch": "t", "cpus": 2, "platform": "x"},
                "smiles": {"samples": 1, "minutes": 0.1,
                           **{k: {"params": 1, "steps": 1, "validity": 1.0, "uniqueness": 1.0, "novelty": 1.0,
                                  "sampling_seconds": 1.0} for k in ("smiles_mdlm", "smiles_ar")}}}
    (tmp_path / "text_quick.json").write_text(json.dumps(previous))

    assert bench.main(["--quick", "--skip", "shakespeare", "--skip", "smiles"]) == 0
    res = json.loads((tmp_path / "text_quick.json").read_text())
    assert res["environment"] == previous["environment"] and res["smiles"] == previous["smiles"]  # kept
    sp = res["speed"]
    assert len(sp["ours"]) == 1 and sp["mdlm"] == [] and "missing" in sp["mdlm_missing"]
    ours = sp["ours"][0]
    assert ours["train_step_s"] > 0 and len(ours["train_step_s_all"]) == budget["steps"] and ours["params"] > 0
    by = {(x["sampler"], x["steps"]): x for x in ours["sample"]}
    assert by[("ancestral", 4)]["network_calls"] <= 4 + 1 and by[("ancestral", 4)]["seconds"] > 0
    assert by[("first_hitting", None)]["rows_per_sequence"] == ours["length"]  # one network call per token
    assert all(v["mdlm"] is None and v["ratio"] is None and v["at_most"] is None for v in sp["summary"].values())
    text = (tmp_path / "text_quick.md").read_text()
    assert "## Speed against MDLM's own code" in text and "Not measured: MDLM's reference is missing" in text
    assert "## SMILES from the embedded default" in text  # the kept section is still reported
    ed = res["edlm_speed"]  # EDLM's sampler: runs in MDLM's venv, missing here too
    assert len(ed["ours"]) == 1 and ed["edlm"] == [] and "missing" in ed["edlm_missing"]
    assert ed["ours"][0]["sample_s"] > 0 and ed["ours"][0]["params_energy"] > 0
    assert ed["summary"]["edlm"] is None and ed["summary"]["ratio"] is None
    assert "Not measured: EDLM's reference is missing" in text
