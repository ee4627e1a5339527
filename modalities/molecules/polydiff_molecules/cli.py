"""``polydiff molecules regressor`` and ``polydiff molecules property``.

::

    polydiff molecules regressor --property gap [--half regressor] [--n 4000] [--steps 4000]
                                 [--arch pairs|gvp]
                                 [--noisy CKPT] --out gap.pt
    polydiff molecules property CKPT --regressor gap.pt [--targets id|ood] [--num 100]
                                [--mode off|cfg|gradient|unconditional] [--guidance-scale 2]
                                [--guide gap_noisy.pt --guide-scale 1] [--judge gap_gvp.pt] [--json FILE]

``regressor`` trains an E(3)-invariant property regressor on QM9 (the ``regressor`` half by
default, which the generators never see: EDM's protocol); with ``--noisy CKPT`` it trains on
the generator half noised along that checkpoint's flow path, for gradient guidance.
``property`` generates molecules for property targets with a conditional checkpoint and prints
the MAE between targets and the evaluation regressor's predictions.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from polydiff.plugin import (
    Command,
    add_output,
    atomic_write,
    load,
    non_negative_float,
    non_negative_int,
    output_file,
    positive_int,
    refuse_inputs,
)


def _configure_regressor(p: argparse.ArgumentParser) -> None:
    p.add_argument("--property", required=True, help="QM9 property: mu, alpha, homo, lumo, gap or cv")
    p.add_argument("--half", default=None, help="QM9 half: regressor (default) or generator (default with --noisy)")
    p.add_argument("--n", type=positive_int, default=4000, help="molecules (default 4000)")
    p.add_argument("--steps", type=positive_int, default=4000)
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--arch", default="pairs", choices=["pairs", "gvp"],
                   help="pairs: two-body distance histograms + MLP (default); gvp: a GVP trunk")
    p.add_argument("--hidden", type=positive_int, default=None, help="hidden width (default: the arch's, 256 / 128)")
    p.add_argument("--layers", type=positive_int, default=None, help="layers (default: the arch's, 2 / 4)")
    p.add_argument("--noisy", type=Path, help="a generator checkpoint: train on its noisy states (guidance)")
    p.add_argument("--jitter", type=non_negative_float, default=None,
                   help="Gaussian position noise (A) in training batches, so the regressor also reads generated "
                   "molecules (default: 0.1 for an evaluation regressor, 0 with --noisy)")
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument("--threads", type=positive_int, default=2)
    add_output(p, "the regressor file to write (.pt; its report beside it as .json)", required=True)


def _run_regressor(args: argparse.Namespace) -> int:
    from .modality import qm9_dataset
    from .properties import save_regressor, train_regressor

    report_file = args.out.with_suffix(".json" if args.out.suffix != ".json" else ".report.json")
    output_file(args.out, args.overwrite, {"generator": args.noisy})
    output_file(report_file, args.overwrite)
    torch.set_num_threads(args.threads)
    fields = None
    if args.noisy is not None:
        fields = load(args.noisy).fields
    half = args.half or ("generator" if args.noisy else "regressor")
    bundle = qm9_dataset(n=args.n, seed=args.seed, half=half, conditions=[args.property])
    opts = {k: v for k, v in (("hidden", args.hidden), ("layers", args.layers)) if v is not None}
    net, report = train_regressor(bundle, args.property, fields=fields, noisy=fields is not None, steps=args.steps,
                                  batch_size=args.batch_size, seed=args.seed, arch=args.arch,
                                  jitter=args.jitter if args.jitter is not None else (0.0 if fields else 0.1), **opts)
    save_regressor(net, args.out, bundle.info, noisy=fields is not None)
    atomic_write(report_file, json.dumps({"property": args.property, "half": half, **report}, indent=2) + "\n")
    print(f"polydiff molecules: {args.property} regressor ({'noisy' if fields else 'clean'}, {half} half) -> "
          f"{args.out}: test MAE {report['test_mae']:.4g}")
    return 0


def _configure_property(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--regressor", type=Path, required=True, help="evaluation regressor (polydiff molecules regressor)")
    p.add_argument("--targets", default="id", help="id (held-out values) or ood (the 99th percentile)")
    p.add_argument("--num", type=positive_int, default=100)
    p.add_argument("--mode", default="cfg", help="off, cfg, gradient or unconditional (default cfg)")
    p.add_argument("--guidance-scale", type=non_negative_float, default=2.0)
    p.add_argument("--guide", type=Path, help="noise-aware regressor for --mode gradient")
    p.add_argument("--guide-scale", type=non_negative_float, default=1.0)
    p.add_argument("--guide-on", default="pos,types",
                   help="what gradient guidance moves: pos, types or pos,types (default)")
    p.add_argument("--judge", type=Path, action="append", default=[],
                   help="another regressor of the same property that scores the same samples (repeatable; "
                   "one of another --arch tells a real change from a blind spot the guide shares with the evaluator)")
    p.add_argument("--steps", type=positive_int)
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument("--threads", type=positive_int, default=2)
    p.add_argument("--json", type=Path)


def _run_property(args: argparse.Namespace) -> int:
    from .modality import qm9_dataset
    from .properties import load_regressor, property_mae, targets_for

    if args.json:
        refuse_inputs(args.json, {"checkpoint": args.checkpoint, "regressor": args.regressor, "guide": args.guide,
                                  **{f"judge {j}": j for j in args.judge}}, "--json")
    torch.set_num_threads(args.threads)
    gen = load(args.checkpoint, modality="molecules")
    evaluator, blob = load_regressor(args.regressor)
    prop = evaluator.property
    if prop not in gen.info.get("conditions", {}) and args.mode != "unconditional":
        raise ValueError(f"{args.checkpoint}: the model is not conditioned on {prop!r} (it is conditioned on "
                         f"{sorted(gen.info.get('conditions', {})) or 'nothing'})")
    guide = load_regressor(args.guide)[0] if args.guide else None
    judges = {}
    for path in args.judge:
        judge = load_regressor(path)[0]
        if judge.property != prop:
            raise ValueError(f"{path}: a regressor of {judge.property!r}, not of {prop!r} like {args.regressor}")
        judges[path.stem] = judge
    opts = gen.config.data.options
    bundle = qm9_dataset(n=opts.get("n", 2000), seed=opts.get("seed", 0), half="generator", conditions=[prop])
    targets = targets_for(bundle, prop, args.num, args.targets, seed=args.seed)
    res = property_mae(gen, evaluator, targets, mode=args.mode, guidance_scale=args.guidance_scale, guide=guide,
                       guide_scale=args.guide_scale, guide_keys=args.guide_on.split(","), seed=args.seed,
                       steps=args.steps, judges=judges)
    res.update(property=prop, targets=args.targets, mode=args.mode)
    if args.json:
        atomic_write(args.json, json.dumps(res, indent=2) + "\n")
    print(f"polydiff molecules: {prop} MAE {res['mae']:.4g} ({args.mode}, {args.targets} targets, n={args.num}); "
          f"valid {res['validity']:.3f}, MAE over valid {res['mae_valid']:.4g}"
          + "".join(f"; judge {k}: MAE {res[f'mae_{k}']:.4g}, correlation {res[f'corr_{k}']:.3f}" for k in judges))
    del blob
    return 0


COMMANDS = {
    "regressor": Command("train a property regressor on QM9 (evaluation, or noise-aware for gradient guidance)",
                         _configure_regressor, _run_regressor),
    "property": Command("property MAE of molecules generated for targets (guidance off / CFG / gradient)",
                        _configure_property, _run_property),
}
