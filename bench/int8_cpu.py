"""int8 products on this CPU: ``torch._int_mm`` against the exact float32 route.

Both kernels give the same integers (``polydiff.quantize._float_int8_product`` sums blocks of at
most 1024 terms, below 2**24); their speed depends on the CPU (VNNI int8 instructions or not).
For each model: train briefly, quantize to int8, then sample with each kernel in turn
(interleaved, same seeds) and with the float32 network, and check the samples are identical::

    python bench/int8_cpu.py --runs /tmp/int8cpu --seconds 60 --repeats 3

It also checks fbgemm's int8 linear layer (``quantized::linear_with_input_q_dq_qweight_dq_output_fp32``,
static input scale, per-channel int8 weights: the same scheme as polydiff's) for speed against
float32 and for exactness against the integer product of the same codes.

Writes ``bench/results/int8_cpu.{json,md}``.
"""

from __future__ import annotations

import argparse
import pickle
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import command_line, environment, header, publish, recipe, train_for

# modality -> (recipe, sampling overrides, samples per call)
MODELS: dict[str, tuple[str, dict[str, Any], int]] = {
    "toy": ("gmm", {"sampler": "dpm++2m", "steps": 10}, 4000),
    "timeseries": ("tsdiff_etth1", {"steps": 20}, 16),
    "text": ("shakespeare_mdlm", {"sampler": "ancestral", "steps": 32}, 4),
}


def fbgemm_check(repeats: int = 20) -> dict[str, Any]:
    """fbgemm's int8 linear layer on codes of the polydiff scheme (inputs: int8 codes, shifted to
    uint8 by a zero point of 128; weights: int8 codes, scale 1): its speed against a float32
    linear layer of the same size, and how many outputs differ from the exact integer product."""
    import torch

    layer = torch.ops.quantized.linear_with_input_q_dq_qweight_dq_output_fp32
    m, k, n = 1024, 256, 1024
    gen = torch.Generator().manual_seed(0)
    codes = {"full range": (torch.randint(-128, 128, (m, k), generator=gen).float(),
                            torch.randint(-127, 128, (n, k), generator=gen).float()),
             "normal, sd 40": tuple((torch.randn(size, generator=gen) * 40).round().clamp(-127, 127)
                                    for size in ((m, k), (n, k)))}

    def seconds(f: Any, *args: Any) -> float:
        f(*args)
        t0 = time.perf_counter()
        for _ in range(repeats):
            f(*args)
        return (time.perf_counter() - t0) / repeats

    res: dict[str, Any] = {"size": [m, k, n], "engines": {}}
    for engine in (e for e in ("fbgemm", "x86") if e in torch.backends.quantized.supported_engines):
        torch.backends.quantized.engine = engine
        row: dict[str, Any] = {}
        for name, (x, w) in codes.items():
            wq = torch.quantize_per_channel(w, torch.ones(n, dtype=torch.double), torch.zeros(n, dtype=torch.long),
                                            0, torch.qint8)
            packed = torch.ops.quantized.linear_prepack(wq, None)
            err = (layer(x, 1.0, 128, packed).double() - x.double() @ w.double().t()).abs()
            row[name] = {"wrong_fraction": float((err > 0.5).double().mean()), "max_error": float(err.max())}
            row.setdefault("speed_vs_float32", seconds(torch.nn.functional.linear, x, w)
                           / seconds(layer, x, 1.0, 128, packed))
        res["engines"][engine] = row
    return res


def run(args: argparse.Namespace, argv: list[str] | None) -> None:
    import torch

    import polydiff
    from polydiff import quantize as q

    torch.set_num_threads(args.threads)
    res: dict[str, Any] = {"chosen": q.cpu_int8_kernel(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                           "threads": args.threads, "repeats": args.repeats, "models": {}}
    for mod in args.modalities.split(","):
        name, sample, num = MODELS[mod]
        print(f"[int8_cpu] training {mod}:{name} for {args.seconds:g} s", file=sys.stderr)
        ckpt, trained = train_for(recipe(mod, name), args.runs / mod, args.seconds / 60, args.threads)
        gen = polydiff.load(ckpt)
        qgen = gen.quantized("int8", calibration=8, **sample)
        kw = {**sample, "progress": False}
        variants = {"float32": (gen, None), "int8 int_mm": (qgen, "int_mm"), "int8 float route": (qgen, "float")}
        times: dict[str, list[float]] = {v: [] for v in variants}
        outs: dict[str, Any] = {}
        for rep in range(args.repeats + 1):  # the first round warms up
            for var, (g, kernel) in variants.items():
                q.CPU_INT8_KERNEL = kernel or res["chosen"]
                t0 = time.perf_counter()
                outs[var] = g.generate(num, seed=rep, **kw)
                if rep:
                    times[var].append(time.perf_counter() - t0)
        q.CPU_INT8_KERNEL = res["chosen"]
        same = pickle.dumps(outs["int8 int_mm"]) == pickle.dumps(outs["int8 float route"])
        res["models"][mod] = {"recipe": f"{mod}:{name}", "sample": sample, "num": num, "train": trained,
                              "seconds": {v: statistics.median(t) for v, t in times.items()}, "identical": same}
        print(f"  {res['models'][mod]}", file=sys.stderr)

    res["fbgemm"] = fbgemm_check()
    print(f"  fbgemm: {res['fbgemm']}", file=sys.stderr)
    env = environment(command_line("int8_cpu.py", argv))
    lines = header("int8 products on CPU: torch._int_mm against the exact float32 route", env)
    lines += [f"CPU capability `{res['cpu_capability']}`, {args.threads} thread(s); the kernel `cpu_int8_kernel()` "
              f"chose here: **{res['chosen']}**. Median seconds per call over {args.repeats} interleaved repeats "
              "(after one warm-up round), same seeds; 'identical': the two int8 kernels gave the same samples.", "",
              "| modality | samples | float32 (s) | int8, int_mm (s) | int8, float route (s) | float route vs int_mm "
              "| int8 (chosen) vs float32 | identical |", "|---|---|---|---|---|---|---|---|"]
    for mod, r in res["models"].items():
        s = r["seconds"]
        chosen = s["int8 int_mm"] if res["chosen"] == "int_mm" else s["int8 float route"]
        lines.append(f"| {mod} | {r['num']} | {s['float32']:.3g} | {s['int8 int_mm']:.3g} | "
                     f"{s['int8 float route']:.3g} | {s['int8 int_mm'] / s['int8 float route']:.3g}x faster | "
                     f"{s['float32'] / chosen:.3g}x | {r['identical']} |")
    f = res["fbgemm"]
    lines += ["", "## fbgemm's int8 linear layer", "",
              f"`quantized::linear_with_input_q_dq_qweight_dq_output_fp32` on int8 codes of polydiff's scheme, "
              f"{' x '.join(map(str, f['size']))} (rows x inputs x outputs), {args.threads} thread(s); 'wrong': "
              "outputs that differ from the exact integer product of the same codes.", "",
              "| engine | speed vs float32 | wrong, full-range codes | max error | wrong, normal codes (sd 40) "
              "| max error |", "|---|---|---|---|---|---|"]
    for engine, r in f["engines"].items():
        a, b = r["full range"], r["normal, sd 40"]
        lines.append(f"| {engine} | {r['speed_vs_float32']:.3g}x | {a['wrong_fraction']:.3g} | {a['max_error']:.6g} | "
                     f"{b['wrong_fraction']:.3g} | {b['max_error']:.6g} |")
    lines += ["", "On AVX2 fbgemm adds pairs of uint8 x int8 products in 16 bits (saturating), so it is not used: "
              "polydiff's int8 products are exact."]
    publish("int8_cpu", {"environment": env, **res}, "\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=Path, default=Path("/tmp/int8cpu"))
    p.add_argument("--modalities", default=",".join(MODELS))
    p.add_argument("--seconds", type=float, default=60.0, help="training time per model")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    run(p.parse_args(argv), argv)


if __name__ == "__main__":
    main()
