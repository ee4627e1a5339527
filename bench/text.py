"""Text benchmark: masked diffusion (MDLM) against the autoregressive baseline at equal size and
equal CPU training time, the first-hitting sampler against ancestral sampling, float64 against
float32 draws, and SMILES generation from the embedded default.

    python bench/text.py                    # 6 + 6 (+ 3 + 3 energies) minutes of Shakespeare, 3 + 3 of SMILES
    python bench/text.py --minutes 2 --smiles-minutes 1 --quick   # a smoke run

1. **Character-level tiny Shakespeare** (``shared/data/text``; nanoGPT's split, blocks of 256
   characters). ``text:shakespeare_mdlm`` and ``text:shakespeare_ar`` (the same transformer,
   bidirectional with SUBS outputs vs causal; equal parameter counts) each train for the same
   wall time on this machine (``train.max_minutes``). Held-out bits per character on the same
   test blocks: the MDLM's continuous-time ELBO (an upper bound, Monte-Carlo with its standard
   error) and the AR model's exact NLL.
2. **Samplers** (the trained MDLM, 256-character sequences): the first-hitting sampler (FHS,
   256 network calls per sequence, exact in law) against ancestral sampling with 256 and 1024
   steps (with the cache that reuses the network's output for unchanged sequences): wall time,
   network calls (sequences the network processed), generative perplexity under the AR model
   and unigram entropy. And FHS with float64 draws (ours) against float32 draws (the released
   samplers' exponential race): entropy and generative perplexity.
3. **SMILES** (the embedded default: RDKit's NCI molecules): ``text:smiles_mdlm`` and
   ``text:smiles_ar`` for the same time; validity, uniqueness and novelty (against the
   training molecules) of 512 samples each, default sampler against default sampler.

4. **EDLM** on the trained MDLM: importance sampling with 4 candidates per step inside
   t in [0.4, 0.6], with an autoregressive energy (another AR model, half the budget) and a
   residual NCE energy (half the budget), against plain ancestral sampling, at 256 and 64 steps.
Writes ``bench/results/text.json`` and ``bench/results/text.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    RESULTS,
    ROOT,
    command_line,
    environment,
    header,
    publish,
    ratio_summary,
    reference_missing,
    write_results,
)

import polydiff

SECTIONS = ("shakespeare", "smiles", "speed", "edlm_speed")


def log(msg: str) -> None:
    print(f"[text] {msg}", file=sys.stderr, flush=True)


def params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def train(recipe: str, out: Path, minutes: float, extra: list[str]) -> dict[str, Any]:
    t0 = time.perf_counter()
    run = polydiff.train(ROOT / "configs" / "text" / recipe, out, fresh=True, verbose=False,
                         overrides=[f"train.max_minutes={minutes}", "train.max_steps=1000000",
                                    "train.checkpoint_every=1000000", "train.progress=false", "train.logger=none",
                                    *extra])
    gen = polydiff.load(run.checkpoint)
    return {"recipe": recipe, "steps": run.step, "seconds": time.perf_counter() - t0, "params": params(gen.net),
            "checkpoint": str(run.checkpoint), "gen": gen}


def heldout_bits(gen: Any, sequences: int, elbo_steps: int, seed: int = 0) -> dict[str, float]:
    """Bits per token on the first ``sequences`` test sequences (ELBO for MDLM, exact for AR)."""
    m = gen.modality.evaluate_model(gen, num=1, seed=seed, elbo_steps=elbo_steps, elbo_sequences=sequences)
    out = {"bits_per_token": m["bits_per_token"], "nll_per_token": m["nll_per_token"]}
    if "nll_stderr" in m:
        out["bits_stderr"] = m["nll_stderr"] / math.log(2)
    return out


def counted_generate(gen: Any, n: int, **options: Any) -> tuple[list[str], float, int]:
    """``gen.generate(n, seed=0, **options)``: the samples, wall seconds and network rows (sequences the
    network processed)."""
    rows = [0]
    hook = gen.net.register_forward_hook(lambda mod, args, out: rows.__setitem__(0, rows[0] + len(args[0]["tokens"])))
    t0 = time.perf_counter()
    try:
        texts = gen.generate(n, seed=0, progress=False, **options)
    finally:
        hook.remove()
    return texts, time.perf_counter() - t0, rows[0]


def sample_run(gen: Any, ar_net: Any, n: int, sampler: str, steps: int, **options: Any) -> dict[str, Any]:
    """Samples with one sampler: wall time, sequences the network processed, quality."""
    from polydiff_text.metrics import generative_perplexity, unigram_entropy

    texts, seconds, rows = counted_generate(gen, n, sampler=sampler, steps=steps, **options)
    state = gen.modality.from_native(texts, gen.info)
    tok = gen.modality.tokenizer(gen.info)
    return {"sampler": sampler, "steps": steps, "options": options, "seconds": seconds,
            "network_rows": rows, "rows_per_sequence": rows / n,
            "gen_perplexity": generative_perplexity(ar_net, state["tokens"], state["valid"]),
            "entropy": unigram_entropy([tok.encode(t) for t in texts]), "example": texts[0][:200]}


def shakespeare(minutes: float, quick: bool, work: Path) -> dict[str, Any]:
    extra = ["data.limit_chars=200000"] if quick else []
    log(f"training the MDLM for {minutes} min")
    mdlm = train("shakespeare_mdlm.yaml", work / "mdlm", minutes, extra)
    log(f"training the AR baseline for {minutes} min")
    ar = train("shakespeare_ar.yaml", work / "ar", minutes, extra)
    seqs, elbo_steps = (32, 16) if quick else (256, 64)
    res = {"minutes": minutes, "test_sequences": seqs, "elbo_steps": elbo_steps}
    for name, r in (("mdlm", mdlm), ("ar", ar)):
        log(f"held-out bits per character of {name}")
        res[name] = {k: v for k, v in r.items() if k != "gen"} | heldout_bits(r["gen"], seqs, elbo_steps)
    n = 8 if quick else 64
    ar_net = ar["gen"].net
    runs = []
    for sampler, steps, opts in (("first_hitting", 256, {}), ("first_hitting", 256, {"precision": "float32"}),
                                 ("ancestral", 128, {}), ("ancestral", 256, {}), ("ancestral", 1024, {})):
        log(f"sampling {n} sequences: {sampler} {steps} {opts}")
        runs.append(sample_run(mdlm["gen"], ar_net, n, sampler, steps, **opts))
    res["samplers"] = runs
    res["default"] = list(_default_key(mdlm["gen"]))
    # EDLM: energies trained for half the budget; the judge of generative perplexity stays the AR baseline
    # above, a different model from the energy (an energy that is its own judge would flatter itself)
    half = minutes / 2
    log(f"training the AR energy (another seed) and the NCE energy for {half} min each")
    ar_energy = train("shakespeare_ar.yaml", work / "ar_energy", half, [*extra, "train.seed=1"])
    nce = train("shakespeare_energy.yaml", work / "nce", half, [*extra, f"loss.teacher={mdlm['checkpoint']}"])
    res["energies"] = {"ar": {k: v for k, v in ar_energy.items() if k != "gen"},
                       "nce": {k: v for k, v in nce.items() if k != "gen"}}
    edlm_runs = []
    for steps in (256, 64):
        edlm_runs.append(sample_run(mdlm["gen"], ar_net, n, "ancestral", steps) | {"energy": "none (MDLM)"})
        for name, r in (("AR", ar_energy), ("NCE", nce)):
            log(f"EDLM with the {name} energy, {steps} steps")
            edlm_runs.append(sample_run(mdlm["gen"], ar_net, n, "edlm", steps, energy=r["checkpoint"],
                                        candidates=4) | {"energy": name})
    res["edlm"] = edlm_runs
    log("sampling the AR baseline")
    t0 = time.perf_counter()
    texts = ar["gen"].generate(n, seed=0, progress=False)
    from polydiff_text.metrics import generative_perplexity, unigram_entropy

    state = ar["gen"].modality.from_native(texts, ar["gen"].info)
    tok = ar["gen"].modality.tokenizer(ar["gen"].info)
    res["ar_samples"] = {"seconds": time.perf_counter() - t0,
                         "entropy": unigram_entropy([tok.encode(t) for t in texts]),
                         "gen_perplexity": generative_perplexity(ar_net, state["tokens"], state["valid"])}
    return res


def smiles(minutes: float, quick: bool, work: Path) -> dict[str, Any]:
    from polydiff_text.metrics import smiles_metrics

    n = 64 if quick else 512
    out: dict[str, Any] = {"minutes": minutes, "samples": n}
    for recipe in ("smiles_mdlm.yaml", "smiles_ar.yaml"):
        log(f"training {recipe} for {minutes} min")
        r = train(recipe, work / recipe, minutes, [])
        gen = r["gen"]
        t0 = time.perf_counter()
        samples = gen.generate(n, seed=0, progress=False)
        seconds = time.perf_counter() - t0
        data = gen.modality.dataset(gen.config.data.name, **gen.config.data.options)
        training = gen.modality.to_native(dict(data.train.tensors), gen.info)
        out[recipe.removesuffix(".yaml")] = {"steps": r["steps"], "params": r["params"], "sampling_seconds": seconds,
                                             "sampler": list(_default_key(gen)),
                                             **smiles_metrics(samples, training), "examples": samples[:5]}
        if recipe == "smiles_mdlm.yaml":  # the exact sampler too: shorter molecules leave the batch early
            samples, seconds, rows = counted_generate(gen, n, sampler="first_hitting")
            out["smiles_mdlm_first_hitting"] = {"sampling_seconds": seconds, "rows_per_sequence": rows / n,
                                                "length": int(gen.info["length"]), **smiles_metrics(samples, training)}
    return out


# ---------------------------------------------------------------------------------------------
# speed against MDLM's own code
# ---------------------------------------------------------------------------------------------

SPEED_SETUP = "python bench/mdlm_reference.py --setup"
SPEED_BUDGETS = {
    "full": {"rounds": 2, "steps": 10, "warmup": 2, "batch": 32, "num": 16, "sample_steps": [128, 256],
             "default_steps": 128, "sample_repeats": 2, "threads": 1},
    "quick": {"rounds": 1, "steps": 2, "warmup": 1, "batch": 8, "num": 2, "sample_steps": [16],
              "default_steps": 16, "sample_repeats": 1, "threads": 1},
}


def _default_key(gen: Any) -> tuple[str, int | None]:
    """(sampler, steps) of the recipe's ``sample`` section: what ``gen.generate(n)`` runs (steps None for the
    first-hitting sampler, which ignores them)."""
    settings = gen.settings()
    return settings.sampler, None if settings.sampler == "first_hitting" else settings.steps


def _our_mdlm_speed(b: dict[str, Any], work: Path) -> dict[str, Any]:
    """``text:shakespeare_mdlm`` (dropout 0, as MDLM's side): ``polydiff.train`` for ``warmup +
    steps + 1`` steps (batch start to batch start; the last, which writes the checkpoint, left out),
    then ancestral sampling with the cache at each of ``sample_steps``, the first-hitting sampler (one
    network call per token) and the recipe's default sampler (measured once if it is one of those),
    ``num`` sequences per call."""
    import itertools
    import statistics

    from common import batch_clock

    total = b["warmup"] + b["steps"] + 1
    clock = batch_clock()
    before = torch.get_num_threads()
    torch.set_num_threads(b["threads"])
    try:
        run = polydiff.train(ROOT / "configs" / "text" / "shakespeare_mdlm.yaml", work / "mdlm_speed", fresh=True,
                             verbose=False, callbacks=[clock],
                             overrides=[f"train.max_steps={total}", f"train.batch_size={b['batch']}",
                                        f"train.threads={b['threads']}", "train.checkpoint_every=1000000",
                                        "train.progress=false", "train.logger=none", "model.dropout=0.0"])
        gen = polydiff.load(run.checkpoint)
        calls = [0, 0]

        def count(mod: Any, args: Any, out: Any) -> None:
            calls[0] += 1
            calls[1] += len(args[0]["tokens"])

        hook = gen.net.register_forward_hook(count)
        sampling = []
        runs = [*(("ancestral", s) for s in b["sample_steps"]), ("first_hitting", None)]
        default = _default_key(gen)
        if default not in runs:
            runs.append(default)
        try:
            for sampler, steps in runs:
                wall, cpu, nfe, rows = [], [], [], []
                for rep in range(b["sample_repeats"] + 1):
                    calls[:] = [0, 0]
                    opts = {} if steps is None else {"steps": steps}
                    t0, c0 = time.perf_counter(), time.process_time()
                    gen.generate(b["num"], sampler=sampler, seed=rep, progress=False, **opts)
                    if rep:
                        wall.append(time.perf_counter() - t0)
                        cpu.append(time.process_time() - c0)
                        nfe.append(calls[0])
                        rows.append(calls[1])
                sampling.append({"sampler": sampler, "steps": steps, "seconds": statistics.median(wall),
                                 "seconds_all": wall, "cpu_all": cpu, "network_calls": statistics.median(nfe),
                                 "rows_per_sequence": statistics.median(rows) / b["num"]})
        finally:
            hook.remove()
    finally:
        torch.set_num_threads(before)
    wall = [y - x for x, y in itertools.pairwise(clock.wall)][b["warmup"]:]
    cpu = [y - x for x, y in itertools.pairwise(clock.cpu)][b["warmup"]:]
    return {"train_step_s": statistics.median(wall), "train_step_s_all": wall, "train_step_cpu_s_all": cpu,
            "final_loss": run.metrics.get("train/loss"), "sample": sampling, "params": params(gen.net),
            "default": list(default),
            "vocab": int(gen.modality.tokenizer(gen.info).vocab_size), "length": int(gen.info["length"])}


def speed(b: dict[str, Any], work: Path) -> dict[str, Any]:
    """Training step and sampling, polydiff against MDLM's own code (bench/mdlm_reference.py in its
    scratch venv), in lockstep: ``rounds`` rounds of one measurement each, the first of a round
    alternating between the two."""

    from mdlm_reference import REF, VENV, find_reference, measure_mdlm, venv_python

    out: dict[str, Any] = {"ours": [], "mdlm": [], "order": [], "setup": SPEED_SETUP}
    for r in range(b["rounds"]):
        order = ["ours", "mdlm"] if r % 2 == 0 else ["mdlm", "ours"]
        for who in order:
            if who == "ours":
                log(f"speed round {r}: ours")
                out["ours"].append(_our_mdlm_speed(b, work))
                continue
            log(f"speed round {r}: MDLM's code")
            o = out["ours"][0]  # round 0 runs ours first: MDLM gets our recipe's vocabulary and length
            ref = measure_mdlm(steps=b["steps"], warmup=b["warmup"], threads=b["threads"], batch=b["batch"],
                               length=o["length"], vocab=o["vocab"], num=b["num"],
                               sample_steps=tuple(b["sample_steps"]), sample_repeats=b["sample_repeats"], seed=r)
            if ref is None:
                out["mdlm_missing"] = reference_missing("MDLM", venv_python(), VENV, REF, find_reference())
                continue
            out["mdlm"].append(ref)
        out["order"].append(order)
        if "mdlm_missing" in out:
            log(f"  {out['mdlm_missing']}: run {SPEED_SETUP}")
            break
    out["summary"] = {}
    rows = [("train_step_s", "train_step_s", "train_step_s")]
    rows += [(f"ancestral_{s}", ("ancestral", s), s) for s in b["sample_steps"]]
    rows += [("first_hitting", ("first_hitting", None), b["default_steps"])]
    rows += [("default", tuple(out["ours"][0]["default"]), b["default_steps"])]

    def pick(run: dict[str, Any], key: Any, ref_side: bool) -> float:
        if key == "train_step_s":
            return run["train_step_s"]
        if ref_side:
            return next(x["seconds"] for x in run["sample"] if x["steps"] == key)
        return next(x["seconds"] for x in run["sample"] if (x["sampler"], x["steps"]) == tuple(key))

    for name, our_key, ref_key in rows:
        out["summary"][name] = {**ratio_summary((pick(x, our_key, False) for x in out["ours"]),
                                                (pick(x, ref_key, True) for x in out["mdlm"]), "mdlm"),
                                "mdlm_steps": None if name == "train_step_s" else ref_key}
    return out


EDLM_BUDGETS = {"full": {"rounds": 2, "num": 16, "steps": 128, "candidates": 2, "repeats": 2, "threads": 1},
                "quick": {"rounds": 1, "num": 2, "steps": 8, "candidates": 2, "repeats": 1, "threads": 1}}


def _our_edlm_speed(b: dict[str, Any], work: Path) -> dict[str, Any]:
    """Our ``edlm`` sampler (ancestral steps with the cache; energy-based importance sampling with
    ``candidates`` per step for t in [0.4, 0.6]) on ``text:shakespeare_mdlm`` with the residual
    NCE energy of ``text:shakespeare_energy`` (both trained a few steps, untimed: the speed of a
    step does not depend on the weights), ``num`` sequences, ``steps`` steps; the median of
    ``repeats`` calls after an untimed one."""
    import statistics

    common = ["train.checkpoint_every=1000000", "train.progress=false", "train.logger=none", "train.batch_size=4",
              f"train.threads={b['threads']}", "model.dropout=0.0"]
    before = torch.get_num_threads()
    torch.set_num_threads(b["threads"])
    try:
        mdlm = polydiff.train(ROOT / "configs" / "text" / "shakespeare_mdlm.yaml", work / "edlm_mdlm", fresh=True,
                              verbose=False, overrides=["train.max_steps=2", *common])
        energy = polydiff.train(ROOT / "configs" / "text" / "shakespeare_energy.yaml", work / "edlm_energy",
                                fresh=True, verbose=False,
                                overrides=["train.max_steps=1", f"loss.teacher={mdlm.checkpoint}", *common])
        gen = polydiff.load(mdlm.checkpoint)
        calls = [0]
        hook = gen.net.register_forward_hook(lambda mod, args, out: calls.__setitem__(0, calls[0] + 1))
        wall, cpu, nfe = [], [], []
        try:
            for rep in range(b["repeats"] + 1):
                calls[0] = 0
                t0, c0 = time.perf_counter(), time.process_time()
                gen.generate(b["num"], sampler="edlm", steps=b["steps"], seed=rep, progress=False,
                             energy=str(energy.checkpoint), candidates=b["candidates"])
                if rep:
                    wall.append(time.perf_counter() - t0)
                    cpu.append(time.process_time() - c0)
                    nfe.append(calls[0])
        finally:
            hook.remove()
        energy_params = params(polydiff.load(energy.checkpoint).net)
    finally:
        torch.set_num_threads(before)
    return {"sample_s": statistics.median(wall), "sample_s_all": wall, "sample_cpu_s_all": cpu,
            "diffusion_calls": statistics.median(nfe), "params_diffusion": params(gen.net),
            "params_energy": energy_params, "vocab": int(gen.modality.tokenizer(gen.info).vocab_size),
            "length": int(gen.info["length"])}


def edlm_speed(b: dict[str, Any], work: Path) -> dict[str, Any]:
    """EDLM's importance-sampling sampler, ours against EDLM's own code (bench/edlm_reference.py in
    MDLM's scratch venv), in lockstep rounds, the first of a round alternating."""
    from edlm_reference import REF, find_reference, measure_edlm, venv_python

    out: dict[str, Any] = {"ours": [], "edlm": [], "order": [], "setup": "python bench/edlm_reference.py --setup"}
    for r in range(b["rounds"]):
        order = ["ours", "edlm"] if r % 2 == 0 else ["edlm", "ours"]
        for who in order:
            log(f"EDLM speed round {r}: {who}")
            if who == "ours":
                out["ours"].append(_our_edlm_speed(b, work))
                continue
            o = out["ours"][0]
            ref = measure_edlm(num=b["num"], steps=b["steps"], threads=b["threads"], length=o["length"],
                               vocab=o["vocab"], is_size=b["candidates"], repeats=b["repeats"], seed=r)
            if ref is None:
                out["edlm_missing"] = reference_missing("EDLM", venv_python(), venv_python().parent.parent, REF,
                                                        find_reference())
                continue
            out["edlm"].append(ref)
        out["order"].append(order)
        if "edlm_missing" in out:
            break
    out["summary"] = ratio_summary((x["sample_s"] for x in out["ours"]), (x["sample_s"] for x in out["edlm"]),
                                   "edlm")
    return out


def edlm_section(r: dict[str, Any]) -> list[str]:
    """The report's section on EDLM's sampler against EDLM's own code."""
    b = r["budget"]
    lines = ["## EDLM's sampler against EDLM's own code", "",
             f"Command: `{r['command']}` (once before it: `{r['setup']}`, which exports EDLM into /tmp/edlm_ref; it "
             "runs in MDLM's venv; see `bench/edlm_reference.py`).", ""]
    if not r["edlm"]:
        return [*lines, f"Not measured: {r.get('edlm_missing', 'no EDLM measurement')}.", ""]
    e0, o0, v = r["edlm"][0], r["ours"][0], r["summary"]
    lines += [
        f"Run {r['date']} at polydiff commit {r['commit']}; EDLM commit {e0['commit'][:12]}. {b['threads']} thread(s), "
        f"{len(r['ours'])} round(s) in lockstep. {b['num']} sequences of {o0['length']} tokens, {b['steps']} steps, "
        f"importance sampling with {b['candidates']} candidates per step for t in [0.4, 0.6] (EDLM's defaults), "
        "energy: a residual transformer energy of the same size as the diffusion model (EDLM: its `ebm_backbone: "
        "dit`; ours: `text:shakespeare_energy`). EDLM's `EBM` loads its frozen diffusion model from the Hugging "
        "Face hub; a freshly initialised DIT of our recipe's size stands in (weights do not change a step's cost). "
        "flash-attn's two calls are replaced as in MDLM's comparison above. The median of "
        f"{b['repeats']} calls after an untimed one.", "",
        "| | polydiff | EDLM (own code) | ours / EDLM | at most the reference's |", "|---|---|---|---|---|",
        f"| parameters (diffusion + energy) | {o0['params_diffusion']:,} + {o0['params_energy']:,} | "
        f"{e0['params_diffusion']:,} + {e0['params_energy']:,} | | |",
        f"| diffusion-model calls per sampling call | {o0['diffusion_calls']:.0f} | {e0['diffusion_calls']:.0f} | | |",
        f"| sampling (s per call) | {v['ours']:.3f} | {v['edlm']:.3f} | {v['ratio']:.2f}x | "
        f"{'yes' if v['at_most'] else 'no'} |", ""]
    return lines


def speed_section(r: dict[str, Any]) -> list[str]:
    """The report's section on speed against MDLM's own code."""
    b = r["budget"]
    lines = ["## Speed against MDLM's own code", "",
             f"Command: `{r['command']}` (once before it: `{r['setup']}`, which exports MDLM into /tmp/mdlm_ref and "
             "makes the venv /tmp/mdlm_venv with the project's torch 2.13.0 and MDLM's pins; see "
             "`bench/mdlm_reference.py`).", ""]
    if not r["mdlm"]:
        return [*lines, f"Not measured: {r.get('mdlm_missing', 'no MDLM measurement')}.", ""]
    m0, o0, env = r["mdlm"][0], r["ours"][0], r["environment"]
    our_sampler, our_steps = o0.get("default", ("first_hitting", None))
    ours_default = (f"{our_sampler} sampling with {our_steps} steps" if our_steps else our_sampler.replace("_", "-"))
    own = m0.get("config_default_steps")
    default = (f"default, {b['default_steps']} steps (`sampling.steps` in its config.yaml)" if own == b["default_steps"]
               else f"sampler at {b['default_steps']} steps (this budget's; its default is {own})")
    lines += [
        f"Run {r['date']} at polydiff commit {r['commit']}; MDLM commit {m0['commit'][:12]} (lightning "
        f"{m0['versions']['lightning']}, transformers {m0['versions']['transformers']}). {env['cpus']} CPUs, "
        f"{b['threads']} thread(s); {len(r['ours'])} round(s) in lockstep, each one measurement of each side, the "
        "first of a round alternating.", "",
        f"MDLM's `Diffusion` module with the values of its `configs/config.yaml` (SUBS, continuous time, no time "
        f"conditioning, log-linear noise, AdamW, clipping 1.0, EMA) and its DIT at our recipe's size: width "
        f"{m0['model']['hidden']}, {m0['model']['blocks']} blocks, {m0['model']['heads']} heads, MLP ratio 4, "
        f"dropout 0, {m0['model']['length']} tokens over {m0['model']['vocab']} tokens plus the mask. "
        "Its DIT carries adaLN modulation (conditioning width = width) even without time conditioning, hence its "
        "larger parameter count; that work is per sequence, not per token. **MDLM's network imports flash-attn "
        "(CUDA only): its two calls (rotary embedding of queries and keys, packed attention over equal-length "
        "sequences) are replaced by PyTorch equivalents (`scaled_dot_product_attention`, as our network calls)**, "
        "and its generative-perplexity tokenizer (downloaded from the Hugging Face hub) is not loaded; the rest is "
        "MDLM's code, unmodified.", "",
        f"Training: batch {b['batch']}; {b['warmup']} untimed steps, then the median of {b['steps']} (ours: "
        "`polydiff.train` on `text:shakespeare_mdlm` with dropout 0, batch start to batch start, with data loading, "
        "EMA and logging; MDLM: its `training_step`, backward, clipping, AdamW, scheduler and EMA update, without "
        f"Lightning's trainer loop). Sampling: {b['num']} sequences per call, the median of {b['sample_repeats']} "
        "calls after an untimed one. Same settings: our ancestral sampler against MDLM's `ddpm_cache` predictor (its "
        "default), at equal steps; both reuse the network's output when nothing changed, ours per sequence, MDLM's "
        "only when no sequence of the batch changed. Our first-hitting sampler (exact in law, one network call per "
        f"token) and our recipe's default, {ours_default}, against MDLM's {default}.", "",
        "| | polydiff | MDLM (own code) | ours / MDLM | at most the reference's |", "|---|---|---|---|---|",
        f"| parameters | {o0['params']:,} | {m0['params']:,} | | |"]
    names = {"train_step_s": f"training step (s, batch {b['batch']})"}
    for s in b["sample_steps"]:
        names[f"ancestral_{s}"] = f"sampling, {s} steps (s per call; ours ancestral, MDLM ddpm_cache)"
    names["first_hitting"] = (f"sampling, our first hitting against MDLM's {b['default_steps']} steps (s per call)")
    names["default"] = (f"sampling, default against default (s per call; ours {ours_default}, MDLM "
                        f"{b['default_steps']} steps)")
    for key, name in names.items():
        if key not in r["summary"]:
            continue
        v = r["summary"][key]
        lines.append(f"| {name} | {v['ours']:.3f} | {v['mdlm']:.3f} | {v['ratio']:.2f}x | "
                     f"{'yes' if v['at_most'] else 'no'} |")
    lines += ["", "Network rows per sequence (sequences the network processed per generated sequence, median):", "",
              "| sampler | steps | polydiff | MDLM |", "|---|---|---|---|"]
    for x in o0["sample"]:
        ref = next((y for y in m0["sample"] if y["steps"] == (x["steps"] or b["default_steps"])), None)
        if ref is None:
            continue
        label = "first hitting (ours) / ddpm_cache (MDLM)" if x["steps"] is None else "ancestral / ddpm_cache"
        steps = f"{o0['length']} / {ref['steps']}" if x["steps"] is None else str(x["steps"])
        lines.append(f"| {label} | {steps} | {x['rows_per_sequence']:.0f} | {ref['rows_per_sequence']:.0f} |")
    return [*lines, ""]


def _when(env: dict[str, Any]) -> str:
    return f"commit `{env['commit'][:10]}`, {env['date']}"


def _kept(section: dict[str, Any]) -> list[str]:
    """The line saying a section was kept from an earlier run, when it was."""
    return [f"Kept from an earlier run ({section['measured']}); not re-run with this report's commit.", ""] \
        if section.get("measured") else []


def markdown(res: dict[str, Any]) -> str:
    lines = header("Text: masked diffusion against autoregression, first-hitting sampling, SMILES",
                   res["environment"])
    s = res.get("shakespeare")
    if s:
        m, a = s["mdlm"], s["ar"]
        lines += ["## Character-level tiny Shakespeare, equal size and equal CPU time", "", *_kept(s),
                  f"Each model trained for {s['minutes']} minutes on this machine (`train.max_minutes`); held-out "
                  f"bits per character on the first {s['test_sequences']} test blocks of 256 characters (MDLM: "
                  f"ELBO bound with {s['elbo_steps']} strata, +- its Monte-Carlo standard error; AR: exact).", "",
                  "| model | parameters | steps | bits per character |", "|---|---|---|---|",
                  f"| MDLM (`text:shakespeare_mdlm`) | {m['params']:,} | {m['steps']} | <= {m['bits_per_token']:.3f} "
                  f"+- {m.get('bits_stderr', float('nan')):.3f} |",
                  f"| AR (`text:shakespeare_ar`) | {a['params']:,} | {a['steps']} | {a['bits_per_token']:.3f} |", "",
                  "Published for scale (not this budget): nanoGPT's 10.7M-parameter character model reaches a "
                  "validation loss of 1.4697 nats per character (2.12 bits) on this split after 5000 iterations "
                  "on a GPU (nanoGPT README).", "",
                  "## Samplers on the trained MDLM (256 characters per sequence)", "",
                  "| sampler | steps | draws | seconds | network rows per sequence | without the cache | "
                  "generative perplexity (AR) | unigram entropy (nats) |", "|---|---|---|---|---|---|---|---|"]
        default = tuple(s.get("default", ("first_hitting", None)))
        for r in s["samplers"]:
            draws = r["options"].get("precision", "float64")
            is_default = not r["options"] and default in ((r["sampler"], r["steps"]), (r["sampler"], None))
            lines.append(f"| {r['sampler']}{' (the default)' if is_default else ''} | {r['steps']} | {draws} | "
                         f"{r['seconds']:.1f} | "
                         f"{r['rows_per_sequence']:.0f} | {r['steps']} | {r['gen_perplexity']:.2f} | "
                         f"{r['entropy']:.3f} |")
        ar_s = s["ar_samples"]
        lines += [f"| AR baseline (ancestral, left to right) | 256 | float64 | {ar_s['seconds']:.1f} | 256 | 256 | "
                  f"{ar_s['gen_perplexity']:.2f} | {ar_s['entropy']:.3f} |", "",
                  "Network rows: sequences the network processed per generated sequence (a batch of B sequences "
                  "in one call counts B). Ancestral sampling reuses the network's output for sequences in which "
                  "no token changed since the previous step, so its rows count only the steps that changed "
                  "something; without the cache it would process one row per step. Published: FHS about 20x "
                  "faster than ancestral sampling (Zheng et al.; against uncached ancestral sampling with many "
                  "more steps than tokens).", ""]
        fhs64 = next(r for r in s["samplers"] if r["sampler"] == "first_hitting")
        lines += [f"Speed against the in-project baseline: first-hitting sampling of 256 characters takes "
                  f"{fhs64['seconds'] / ar_s['seconds']:.2f}x the AR baseline's time (same size, both with their "
                  "network calls on the CPU). Against MDLM's own code: *Speed against MDLM's own code* below.", ""]
        fhs = [r for r in s["samplers"] if r["sampler"] == "first_hitting"]
        if len(fhs) == 2:
            lines += [f"float64 vs float32 draws (FHS): entropy {fhs[0]['entropy']:.3f} vs {fhs[1]['entropy']:.3f} "
                      f"nats, generative perplexity {fhs[0]['gen_perplexity']:.2f} vs {fhs[1]['gen_perplexity']:.2f}.",
                      ""]
    if s and s.get("edlm"):
        lines += ["## EDLM: importance sampling with an energy (4 candidates per step for t in [0.4, 0.6])", "",
                  "Energies trained for half the budget each: an AR model of another seed (likelihood-ratio "
                  "energy) and a residual energy trained by NCE against the MDLM's own samples. The judge of "
                  "generative perplexity is the AR baseline above, not the energy.", "",
                  "| energy | steps | seconds | generative perplexity (AR) | unigram entropy (nats) |",
                  "|---|---|---|---|---|"]
        for r in s["edlm"]:
            lines.append(f"| {r['energy']} | {r['steps']} | {r['seconds']:.1f} | {r['gen_perplexity']:.2f} | "
                         f"{r['entropy']:.3f} |")
        lines.append("")
    sm = res.get("smiles")
    if sm:
        sampler, steps = sm["smiles_mdlm"].get("sampler", ("first_hitting", None))
        mdlm_default = f"{sampler}, {steps} steps" if steps else sampler.replace("_", "-")
        lines += ["## SMILES from the embedded default (RDKit's NCI molecules)", "", *_kept(sm),
                  f"{sm['samples']} samples per model, each trained {sm['minutes']} minutes; default sampler of each "
                  f"recipe (MDLM: {mdlm_default}; AR: left to right). Novelty against the training molecules.", "",
                  "| model | parameters | steps | validity | uniqueness | novelty | sampling seconds |",
                  "|---|---|---|---|---|---|---|"]
        for name in ("smiles_mdlm", "smiles_ar"):
            r = sm[name]
            lines.append(f"| {name} | {r['params']:,} | {r['steps']} | {r['validity']:.3f} | {r['uniqueness']:.3f} | "
                         f"{r['novelty']:.3f} | {r['sampling_seconds']:.1f} |")
        fh = sm.get("smiles_mdlm_first_hitting")
        if fh:
            lines.append(f"| smiles_mdlm, first hitting (exact) | | | {fh['validity']:.3f} | {fh['uniqueness']:.3f} | "
                         f"{fh['novelty']:.3f} | {fh['sampling_seconds']:.1f} |")
            lines += ["", f"First hitting on molecules of different lengths: {fh['rows_per_sequence']:.1f} network "
                      f"rows per molecule (of {fh['length']} positions); finished molecules leave the network's batch."]
        lines.append("")
    if res.get("speed"):
        lines += speed_section(res["speed"])
    if res.get("edlm_speed"):
        lines += edlm_section(res["edlm_speed"])
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=6.0, help="Shakespeare training minutes per model (default 6)")
    p.add_argument("--smiles-minutes", type=float, default=3.0, help="SMILES training minutes per model (default 3)")
    p.add_argument("--quick", action="store_true", help="smoke run: less data, fewer samples")
    p.add_argument("--skip", action="append", default=[], choices=SECTIONS,
                   help="a section not to run (repeatable); its results are kept from the previous report")
    p.add_argument("--render", type=Path, metavar="JSON", help="only rewrite the markdown report of a results file")
    args = p.parse_args(argv)
    if args.render is not None:
        res = json.loads(args.render.read_text())
        md = markdown(res)
        write_results(args.render, args.render.with_suffix(".md"), res, md)
        print(md)
        return 0
    torch.set_num_threads(2)
    command = command_line("text.py", argv)
    res: dict[str, Any] = {"environment": environment(command)}
    with tempfile.TemporaryDirectory() as tmp:
        if "shakespeare" not in args.skip:
            res["shakespeare"] = shakespeare(args.minutes, args.quick, Path(tmp))
        if "smiles" not in args.skip:
            res["smiles"] = smiles(args.smiles_minutes, args.quick, Path(tmp))
        if "speed" not in args.skip:  # last, alone on the machine
            b = SPEED_BUDGETS["quick" if args.quick else "full"]
            res["speed"] = {**speed(b, Path(tmp)), "budget": b, "command": command,
                            "environment": res["environment"], "commit": res["environment"]["commit"],
                            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
        if "edlm_speed" not in args.skip:  # last, alone on the machine
            b = EDLM_BUDGETS["quick" if args.quick else "full"]
            res["edlm_speed"] = {**edlm_speed(b, Path(tmp)), "budget": b, "command": command,
                                 "commit": res["environment"]["commit"],
                                 "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    stem = "text_quick" if args.quick else "text"
    previous_path = RESULTS / f"{stem}.json"
    if args.skip and previous_path.is_file():  # skipped sections keep their previous results
        previous = json.loads(previous_path.read_text())
        if set(SECTIONS) - set(args.skip) <= {"speed", "edlm_speed"}:  # only speed ran: the header stays
            res = {**previous, **{k: v for k, v in res.items() if k in ("speed", "edlm_speed")}}
        else:  # kept sections say when they were measured (the header names this run)
            res.update({k: {**v, "measured": v.get("measured") or _when(previous["environment"])}
                        for k, v in previous.items() if k in args.skip and k in ("shakespeare", "smiles")})
            res.update({k: v for k, v in previous.items() if k in args.skip and k not in res})
    publish(stem, res, markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
