"""The ``polydiff`` command.

::

    polydiff modalities                  installed plugins: datasets, networks, recipes, commands
    polydiff samplers                    samplers (built-in and plugins'): kind, NFE per step, options
    polydiff train RECIPE [--set key=value ...] [--out DIR] [--fresh]     RECIPE: a YAML file or MODALITY:NAME
    polydiff sample CKPT [--num N] [--sampler NAME] [--steps K] [--seed S] [--out DIR] [--option key=value ...]
                         [--condition key=value ...] [--guidance-scale W] [--observed FILE] [--particles K]
                         [--grid FILE]
    polydiff calibrate CKPT --steps K [--sampler NAME] [--pilot N] [--out FILE]   few-step grid fitted to CKPT
    polydiff evaluate CKPT [--num N] [--seed S] [--option key=value ...] [--json FILE]
    polydiff evaluate FILES [--modality NAME] [--reference PATH] [--config RECIPE] [--json FILE]
    polydiff MODALITY COMMAND ...        a plugin's own commands (``polydiff modalities`` lists them)

A bad recipe, an unknown name or a bad file prints one line on stderr and exits with
status 2; ``--debug`` (anywhere on the line) shows the traceback instead.
"""

from __future__ import annotations

import argparse
import inspect
import itertools
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from .checkpoints import CheckpointError, run_folder
from .config import ConfigError, load_config
from .files import atomic_write
from .registry import RegistryError, available_modalities, load_modality

# errors that are the user's to fix: reported in one line, exit status 2
USER_ERRORS = (ConfigError, RegistryError, CheckpointError, OSError, KeyError, ValueError)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args_in = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args_in
    args_in = [a for a in args_in if a != "--debug"]
    try:
        if args_in and args_in[0] in available_modalities():
            return plugin_command(args_in[0], args_in[1:])
        args = _parser().parse_args(args_in)
        return int(args.func(args) or 0)
    except USER_ERRORS as err:
        if debug:
            raise
        report_error(err)
        return 2
    except KeyboardInterrupt:
        print("polydiff: interrupted", file=sys.stderr)
        return 130


def report_error(err: BaseException, prog: str = "polydiff") -> None:
    """Print a user error as one line on stderr."""
    msg = err.args[0] if isinstance(err, KeyError) and not isinstance(err, RegistryError) and err.args else err
    print(f"{prog}: error: {' '.join(str(msg).split())}", file=sys.stderr)


def plugin_command(name: str, argv: Sequence[str]) -> int:
    """``polydiff <modality> <command> ...``: one of the commands the plugin's
    :meth:`~polydiff.Modality.commands` declares."""
    commands = load_modality(name).commands()
    p = argparse.ArgumentParser(prog=f"polydiff {name}", description=f"commands of the {name!r} modality plugin")
    if not commands:
        p.epilog = "this plugin declares no commands"
        p.parse_args(argv)
        raise ValueError(f"the {name!r} plugin declares no commands")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for cname, cmd in commands.items():
        s = sub.add_parser(cname, help=cmd.help, description=cmd.help)
        cmd.configure(s)
        s.set_defaults(run=cmd.run)
    args = p.parse_args(list(argv))
    return int(args.run(args) or 0)


def _parser() -> argparse.ArgumentParser:
    plugins = ", ".join(available_modalities()) or "none installed"
    p = argparse.ArgumentParser(prog="polydiff", description="Diffusion and flow-matching models for many modalities.",
                                epilog=f"Plugin commands: polydiff MODALITY --help (modalities: {plugins}). "
                                       "--debug anywhere shows tracebacks instead of one-line errors.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("modalities", help="installed modality plugins with their datasets, networks and recipes")
    s.add_argument("--json", action="store_true", help="print JSON")
    s.set_defaults(func=cmd_modalities)

    s = sub.add_parser("samplers", help="samplers (built-in and the installed plugins') with kind, NFE and options")
    s.add_argument("--json", action="store_true", help="print JSON")
    s.set_defaults(func=cmd_samplers)

    s = sub.add_parser("train", help="train a recipe (resumes from OUT/checkpoints/last.ckpt if there is one)")
    s.add_argument("config", help="YAML recipe, or MODALITY:NAME for a recipe shipped with a plugin")
    s.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe value, e.g. --set train.max_steps=500 (repeatable)")
    s.add_argument("--out", type=Path, help="run folder (default: runs/<recipe name>)")
    s.add_argument("--fresh", action="store_true", help="delete earlier checkpoints and logs in OUT and start over")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("sample", help="generate samples from a checkpoint and write them in native formats")
    s.add_argument("checkpoint", type=Path)
    s.add_argument("--num", type=int, help="number of samples (default: the recipe's sample.num)")
    s.add_argument("--sampler", help="sampler name (see `polydiff samplers`)")
    s.add_argument("--steps", type=int, help="number of steps")
    s.add_argument("--seed", type=int, help="seed (default: the recipe's sample.seed)")
    s.add_argument("--out", type=Path, help="output folder (default: RUN/samples)")
    s.add_argument("--batch-size", type=int, help="samples generated at once (results do not depend on it)")
    s.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="sampler option (repeatable)")
    s.add_argument("--condition", action="append", default=[], metavar="KEY=VALUE",
                   help="condition of the samples, e.g. label=3 (repeatable)")
    s.add_argument("--guidance-scale", type=float, help="classifier-free guidance scale on the --condition keys")
    s.add_argument("--observed", type=Path, metavar="FILE",
                   help="observed entries to generate around: the modality's own files (e.g. a series CSV, a motif "
                        "PDB) or .pt / .npz tensors")
    s.add_argument("--particles", type=int, help="SMC particles per sample (steering / exact inpainting)")
    s.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    s.add_argument("--threads", type=int, help="torch CPU threads (default: the recipe's train.threads)")
    s.add_argument("--grid", type=Path, metavar="FILE", help="time grid written by `polydiff calibrate` (JSON)")
    s.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    s.add_argument("--plot", action="store_true", help="also save a figure (needs matplotlib)")
    s.set_defaults(func=cmd_sample)

    s = sub.add_parser("calibrate", help="fit a few-step time grid to a checkpoint (for `polydiff sample --grid`)")
    s.add_argument("checkpoint", type=Path)
    s.add_argument("--steps", type=int, required=True, help="grid steps (NFE = steps x the sampler's NFE per step)")
    s.add_argument("--sampler", help="deterministic sampler (default: the recipe's)")
    s.add_argument("--pilot", type=int, default=256, help="pilot samples the grid is fitted on (default 256)")
    s.add_argument("--seed", type=int, default=0, help="seed of the pilot samples")
    s.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="sampler option (repeatable)")
    s.add_argument("--out", type=Path, help="grid file (default: RUN/grid-SAMPLER-STEPS.json)")
    s.add_argument("--device", help="torch device (default: the checkpoint's)")
    s.add_argument("--threads", type=int, help="torch CPU threads (default: the recipe's train.threads)")
    s.set_defaults(func=cmd_calibrate)

    s = sub.add_parser("evaluate", help="metrics of a checkpoint, or of native files (a samples folder, any tool's "
                                        "outputs)")
    s.add_argument("target", type=Path, help="a checkpoint, or a file / folder of the modality's native files")
    s.add_argument("--json", type=Path, metavar="FILE", help="also write the metrics (and per-sample flags) as JSON")
    s.add_argument("--modality", help="modality of the files (default: the one in the folder's polydiff.json)")
    s.add_argument("--reference", type=Path, metavar="PATH",
                   help="reference file or folder of native files (default: the recipe's data, else the modality's "
                        "embedded default dataset)")
    s.add_argument("--config", help="recipe whose data is the reference (default: the stored one)")
    s.add_argument("--num", type=int, help="samples to draw from a checkpoint (default: the recipe's sample.num)")
    s.add_argument("--seed", type=int, help="seed for sampling a checkpoint (default: the recipe's sample.seed)")
    s.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="modality evaluation option for a checkpoint (repeatable)")
    s.add_argument("--threads", type=int, help="torch CPU threads (default: the recipe's train.threads)")
    s.set_defaults(func=cmd_evaluate)
    return p


# ---------------------------------------------------------------------------------------------
# commands
# ---------------------------------------------------------------------------------------------

def cmd_modalities(args: argparse.Namespace) -> int:
    """List plugins by entry point; import each one only to describe it, reporting failures."""
    out: dict[str, Any] = {}
    for name, ep in available_modalities().items():
        entry: dict[str, Any] = {"target": ep.target, "distribution": ep.distribution}
        try:
            entry.update(load_modality(name).describe())
        except Exception as err:  # a broken plugin must not hide the others
            entry["error"] = " ".join(str(err).split())
        out[name] = entry
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    if not out:
        print("no modality plugins are installed")
    for name, e in out.items():
        print(f"{name}  ({e['target']})")
        if "error" in e:
            print(f"  cannot load: {e['error']}")
            continue
        if e.get("description"):
            print(f"  {e['description']}")
        print(f"  datasets: {', '.join(e.get('datasets', [])) or '-'}")
        print(f"  networks: {', '.join(e.get('networks', [])) or '-'}")
        recipes = e.get("recipes") or {}
        print(f"  recipes:  {', '.join(f'{name}:{k}' for k in recipes) or '-'}")
        if e.get("commands"):
            print(f"  commands: {', '.join(f'polydiff {name} {c}' for c in e['commands'])}")
    return 0


def sampler_rows() -> list[dict[str, Any]]:
    """Every registered sampler, after importing every installed plugin (so the samplers they
    register are listed too), with the plugin that registered it."""
    from .samplers import SAMPLERS

    packages = {}
    for name, ep in available_modalities().items():
        packages[ep.target.partition(":")[0].split(".")[0]] = name
        try:
            load_modality(name)
        except Exception as err:  # a broken plugin must not hide the others
            print(f"polydiff: warning: modality {name!r} cannot be loaded: {' '.join(str(err).split())}",
                  file=sys.stderr)
    rows = []
    for name in SAMPLERS:
        d = SAMPLERS.get(name)
        origin = "polydiff" if d.origin in ("", "polydiff") else packages.get(d.origin, d.origin)
        rows.append({"name": name, "kind": d.kind, "nfe_per_step": d.nfe_per_step, "stochastic": d.stochastic,
                     "loop": d.loop, "options": dict(d.defaults), "description": d.description, "plugin": origin})
    return rows


def cmd_samplers(args: argparse.Namespace) -> int:
    rows = sampler_rows()
    if args.json:
        print(json.dumps(rows, indent=1, default=str))
        return 0
    width = max(len(r["name"]) for r in rows)
    print(f"{'name':<{width}}  {'kind':<11}  NFE  type  description [options] (plugin)")
    for r in rows:
        opts = ", ".join(f"{k}={v}" for k, v in r["options"].items())
        kind = "SDE" if r["stochastic"] else "ODE"
        nfe = "-" if r["loop"] == "own" else r["nfe_per_step"]
        plugin = f" ({r['plugin']} plugin)" if r["plugin"] != "polydiff" else ""
        print(f"{r['name']:<{width}}  {r['kind']:<11}  {nfe:>3}  {kind:<4}  {r['description']}"
              + (f" [{opts}]" if opts else "") + plugin)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .training import train

    cfg = load_config(args.config, args.overrides)
    run = train(cfg, args.out, fresh=args.fresh)
    if run.rank == 0:
        loss = run.metrics.get("train/loss")
        print(f"polydiff: trained to step {run.step}" + (f" (loss {loss:.4g})" if loss is not None else ""))
        print(f"polydiff: checkpoint {run.checkpoint}")
    return 0


def read_grid(path: Path) -> dict[str, Any]:
    """A grid file of ``polydiff calibrate``: JSON with a strictly decreasing list ``grid``."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not a readable grid file ({err})") from None
    g = data.get("grid") if isinstance(data, dict) else None
    if not isinstance(g, list) or len(g) < 2 or not all(isinstance(v, (int, float)) for v in g):
        raise ValueError(f"{path}: field 'grid' must be a list of at least 2 numbers")
    if any(b >= a for a, b in itertools.pairwise(g)):
        raise ValueError(f"{path}: field 'grid' must be strictly decreasing (noise end first)")
    return data


def cmd_calibrate(args: argparse.Namespace) -> int:
    from .generator import load

    gen = load(args.checkpoint, device=args.device)
    _threads(args.threads, gen.config)
    sampler = args.sampler or gen.config.sample.sampler
    grid = gen.calibrate_grid(args.steps, sampler, pilot=args.pilot, seed=args.seed,
                              **parse_pairs(args.option, "--option"))
    out = args.out or _default_samples_dir(args.checkpoint).parent / f"grid-{sampler}-{args.steps}.json"
    atomic_write(out, json.dumps({"grid": grid.tolist(), "sampler": sampler, "steps": args.steps,
                                  "checkpoint": str(args.checkpoint), "pilot": args.pilot, "seed": args.seed},
                                 indent=1))
    print(f"polydiff: grid for {sampler} with {args.steps} steps -> {out}")
    print("  times: " + ", ".join(f"{v:.4g}" for v in grid.tolist()))
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    from .generator import load

    gen = load(args.checkpoint, device=args.device)
    _threads(args.threads, gen.config)
    sc = gen.config.sample
    num = args.num or sc.num
    seed = sc.seed if args.seed is None else args.seed
    options = parse_pairs(args.option, "--option")
    condition = parse_pairs(args.condition, "--condition")
    control: dict[str, Any] = {"guidance_scale": args.guidance_scale, "particles": args.particles}
    control = {k: v for k, v in control.items() if v is not None}
    if args.observed is not None:
        if not args.observed.exists():
            raise FileNotFoundError(f"{args.observed}: no such observation file")
        control["observed"] = gen.modality.observation(args.observed, gen.info)
    if "guidance_scale" in control and not condition:
        raise ValueError("--guidance-scale guides toward a condition: give it with --condition KEY=VALUE")
    out = args.out or _default_samples_dir(args.checkpoint)
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise FileExistsError(f"{out} already exists and is not empty; pass --overwrite or choose another --out")
    sampler, steps = args.sampler, args.steps
    if args.grid is not None:
        import torch

        grid_meta = read_grid(args.grid)
        options["grid"] = torch.tensor(grid_meta["grid"], dtype=torch.float64)
        sampler = sampler or grid_meta.get("sampler")
        steps = len(grid_meta["grid"]) - 1
    objects = gen.generate(num, sampler=sampler, steps=steps, seed=seed, condition=condition or None,
                           batch_size=args.batch_size, device=args.device, **options, **control)
    shown = {k: (str(args.observed) if k == "observed" else v) for k, v in control.items()}
    meta = {"sampler": sampler or sc.sampler, "steps": steps or sc.steps, "seed": seed,
            "options": {k: v for k, v in options.items() if k != "grid"}, "condition": condition, **shown,
            **({"grid": str(args.grid)} if args.grid is not None else {})}
    paths = gen.save(objects, out, overwrite=args.overwrite, plot=args.plot, metadata=meta)
    print(f"polydiff: wrote {num} samples to {out}")
    for p in paths:
        print(f"  {p}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .generator import evaluate_samples, load

    cfg = load_config(args.config) if args.config is not None else None
    target: Path = args.target
    options = parse_pairs(args.option, "--option")
    result: dict[str, Any] = {"target": str(target)}
    if target.is_file() and target.suffix == ".ckpt":
        if args.modality or args.reference:
            raise ValueError("--modality and --reference are for evaluating files; a checkpoint is evaluated against "
                             "its recipe's data (or --config's)")
        gen = load(target)
        if cfg is not None:
            gen.config = cfg
        _threads(args.threads, gen.config)
        sc = gen.config.sample
        _check_options(gen.modality.evaluate_model, options, f"modality {gen.modality.name!r}'s evaluation",
                       skip=("generator", "num", "seed"))
        metrics = gen.modality.evaluate_model(gen, num=args.num or sc.num, seed=sc.seed if args.seed is None
                                              else args.seed, **options)
        result.update(modality=gen.modality.name, metrics=metrics)
    elif target.exists():
        if options or args.num is not None or args.seed is not None:
            raise ValueError("--option, --num and --seed are for evaluating a checkpoint")
        _threads(args.threads, cfg)
        ev = evaluate_samples(target, cfg, modality=args.modality, reference=args.reference)
        metrics = ev.metrics
        result.update(modality=ev.modality, num=ev.num, metrics=metrics)
        if ev.flags:
            result["per_sample"] = ev.flags
    else:
        raise FileNotFoundError(f"{target}: no such checkpoint, file or folder")
    for k, v in metrics.items():
        print(f"{k}: {v:.6g}" if isinstance(v, float) else f"{k}: {v}")
    if args.json is not None:
        atomic_write(args.json, json.dumps(result, indent=1, default=_json_value))
    return 0


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------

def parse_pairs(items: Sequence[str], flag: str) -> dict[str, Any]:
    """``["a=1", "b=x"]`` -> ``{"a": 1, "b": "x"}`` (values parsed as YAML; ``1e-3`` is a number):
    the ``--option KEY=VALUE`` arguments of polydiff's and plugins' commands."""
    out: dict[str, Any] = {}
    for item in items:
        key, eq, text = item.partition("=")
        if not eq or not key:
            raise ValueError(f"{flag} expects KEY=VALUE, got {item!r}")
        out[key] = _value(text)
    return out


def _check_options(fn: Any, options: dict[str, Any], what: str, skip: Sequence[str] = ()) -> None:
    """A clear error for ``--option`` names that ``fn`` does not take (unless it takes ``**``)."""
    params = inspect.signature(fn).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    allowed = [k for k in params if k not in skip and k != "self"]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"{what} has no option {', '.join(unknown)}; allowed: {', '.join(allowed) or 'none'}")


def _value(text: str) -> Any:
    """A command-line value parsed as YAML, with ``1e-3`` read as a number (YAML 1.1 says string)."""
    try:
        v = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return v
    return v


def _json_value(v: Any) -> Any:
    """JSON for numpy scalars and other odd values in metrics and flags."""
    if hasattr(v, "item"):
        return v.item()
    return str(v)


def _threads(n: int | None, cfg: Any) -> None:
    """Set torch's CPU threads: ``--threads``, else the recipe's ``train.threads`` (0: leave)."""
    n = n if n is not None else (cfg.train.threads if cfg is not None else 0)
    if n > 0:
        import torch

        torch.set_num_threads(n)


def _default_samples_dir(checkpoint: Path) -> Path:
    return run_folder(checkpoint) / "samples"


if __name__ == "__main__":
    sys.exit(main())
