"""The ``polydiff`` command.

::

    polydiff modalities                  installed plugins: datasets, networks, recipes, commands
    polydiff samplers                    samplers (built-in and plugins'): kind, NFE per step, options
    polydiff train RECIPE [--set key=value ...] [--out DIR] [--fresh]     RECIPE: a YAML file or MODALITY:NAME
    polydiff sample CKPT [--num N] [--sampler NAME] [--steps K] [--seed S] [--out DIR] [--option key=value ...]
                         [--condition key=value ...] [--guidance-scale W] [--observed FILE] [--particles K]
                         [--grid FILE] [--batch-size B] [--overwrite | --resume] [--quiet]
    polydiff calibrate CKPT --steps K [--sampler NAME] [--pilot N] [--out FILE] [--quiet]   grid fitted to CKPT
    polydiff evaluate CKPT [--num N] [--sampler NAME] [--steps K] [--seed S] [--option key=value ...] [--json FILE]
    polydiff evaluate FILES [--modality NAME] [--reference PATH] [--config RECIPE] [--json FILE]
    polydiff MODALITY COMMAND ...        a plugin's own commands (``polydiff modalities`` lists them)

A bad recipe, an unknown name or a bad file prints one line on stderr and exits with
status 2; ``--debug`` (anywhere on the line) shows the traceback instead. A bad argument (an
unknown flag, a count that is zero or negative: ``--num 0``, ``--threads -2``) prints the
subcommand's usage and ``polydiff sample: error: argument --num: expected a positive integer,
got 0``, also with status 2. A flag that is left out takes the recipe's value; a flag that is
given is never replaced by a default.

``polydiff sample`` streams: chunks of ``--batch-size`` samples are written to ``OUT.partial``
as they finish and merged into OUT at the end (see :mod:`polydiff.generator`); ``--resume``
finishes a killed run with the same result, ``--overwrite`` replaces only a samples folder that
polydiff wrote. Long commands show a progress bar on a terminal (plain lines in logs of long
runs, nothing with ``--quiet``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import sys
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

# light imports only: help, listings and recipe errors answer without importing torch
from .config import ConfigError, load_config
from .errors import CheckpointError, RankFailed
from .files import atomic_folder, atomic_write, cached_json
from .progress import interactive
from .registry import (
    RegistryError,
    available_modalities,
    check_keywords,
    load_modality,
    plugins_fingerprint,
)

# errors that are the user's to fix: reported in one line, exit status 2
USER_ERRORS = (ConfigError, RegistryError, CheckpointError, OSError, KeyError, ValueError, RankFailed)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args_in = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args_in
    args_in = [a for a in args_in if a != "--debug"]
    shown = warnings.formatwarning
    if not debug:  # a warning is one line, as an error is (--debug: Python's form, with the source line)
        warnings.formatwarning = _one_line_warning
    try:
        if args_in and args_in[0] in available_modalities():
            return plugin_command(args_in[0], args_in[1:])
        args = parse_command(_parser(), args_in)
        args.argv = args_in
        return int(args.func(args) or 0)
    except USER_ERRORS as err:
        if debug:
            raise
        report_error(err)
        return 2
    except ModuleNotFoundError as err:  # an optional dependency of a plugin or a command
        if debug:
            raise
        report_error(ModuleNotFoundError(f"{err} (a missing dependency: install it, or the extra of the plugin "
                                         "that needs it, and run again; --debug shows where it was needed)"))
        return 2
    except KeyboardInterrupt:
        print("polydiff: interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.formatwarning = shown


def _one_line_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                      line: str | None = None) -> str:
    """``warnings.formatwarning`` of the command line: ``polydiff: warning: ...`` on one line."""
    return f"polydiff: warning: {' '.join(str(message).split())}\n"


def report_error(err: BaseException, prog: str = "polydiff") -> None:
    """Print a user error as one line on stderr, in one write: the ranks of a distributed run
    report to the same stream, and a line written in two parts can interleave with another's."""
    msg = err.args[0] if isinstance(err, KeyError) and not isinstance(err, RegistryError) and err.args else err
    sys.stderr.write(f"{prog}: error: {' '.join(str(msg).split())}\n")
    sys.stderr.flush()


def parse_command(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.Namespace:
    """Parse a command line of subcommands; an unknown argument is reported with the
    subcommand's usage (plain ``parse_args`` reports it with the top-level one)."""
    args, extra = parser.parse_known_args(list(argv))
    if extra:
        getattr(args, "parser", parser).error(f"unrecognized arguments: {' '.join(extra)}")
    return args


# -- argument types: a bad value is an argparse error naming the flag (status 2, the subcommand's usage)

def positive_int(text: str) -> int:
    """An integer >= 1 (counts: --num, --steps, --batch-size, --threads, --particles, ...)."""
    return _number(text, int, lambda v: v >= 1, "a positive integer")


def non_negative_int(text: str) -> int:
    """An integer >= 0 (seeds)."""
    return _number(text, int, lambda v: v >= 0, "a non-negative integer")


def positive_float(text: str) -> float:
    """A finite number > 0."""
    return _number(text, float, lambda v: v > 0, "a positive number")


def non_negative_float(text: str) -> float:
    """A finite number >= 0 (scales: --guidance-scale)."""
    return _number(text, float, lambda v: v >= 0, "a non-negative number")


def _number(text: str, kind: type, ok: Any, what: str) -> Any:
    try:
        value = kind(text)
    except (TypeError, ValueError):
        value = None
    if value is None or (kind is float and not math.isfinite(value)) or not ok(value):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text}")
    return value


# -- outputs of commands: an existing file or folder is replaced only with --overwrite

def add_output(parser: argparse.ArgumentParser, help: str, *, required: bool = False) -> None:
    """The ``--out PATH`` / ``--overwrite`` pair of a command that writes a file or a folder
    (see :func:`output_file`, :func:`output_folder`)."""
    parser.add_argument("--out", type=Path, required=required, help=help)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")


def refuse_inputs(out: str | Path, inputs: Mapping[str, str | Path | None], flag: str = "--out") -> None:
    """A ``FileExistsError`` when writing the output ``out`` could replace one of the command's
    ``inputs`` (name -> path; by any path, links included): ``out`` is the input, a folder that
    holds it (replacing the folder would delete it), or an existing file inside an input folder
    (a samples folder's own files). ``--overwrite`` must never replace the user's own data or model."""
    o = Path(out).resolve()
    for name, path in inputs.items():
        if path is None:
            continue
        p = Path(path).resolve()
        if o == p:
            how = "is"
        elif p.is_relative_to(o):
            how = "is a folder holding"
        elif p.is_dir() and o.is_relative_to(p) and o.exists() and _read_by_command(p, o):
            how = "is a file inside"
        else:
            continue
        raise FileExistsError(f"{out}: {flag} {how} the {name} this command reads ({path}); refusing to replace it "
                              f"even with --overwrite (choose another {flag})")


def _read_by_command(folder: Path, file: Path) -> bool:
    """Whether ``file`` (inside the input ``folder``) may be what a command reads there: in a
    samples folder, its metadata and the files it lists (a report written beside them earlier,
    such as metrics.json, is not); in any other folder, every file."""
    from .generator import METADATA_FILE

    try:
        meta = json.loads((folder / METADATA_FILE).read_text(encoding="utf-8"))
        listed = {METADATA_FILE, *meta["files"]}
    except (OSError, ValueError, KeyError, TypeError):
        return True
    return file.relative_to(folder).as_posix() in listed


def output_file(path: str | Path, overwrite: bool, inputs: Mapping[str, str | Path | None] | None = None,
                flag: str = "--out") -> Path:
    """``path``, when a command may write it there: nothing is there, or it is a file and
    ``overwrite`` is given, and it is none of the command's ``inputs`` (:func:`refuse_inputs`).
    Call it before the work, so a refused run costs nothing; write with
    :func:`~polydiff.files.atomic_write`."""
    path = Path(path)
    refuse_inputs(path, inputs or {}, flag)
    if path.is_dir():
        raise FileExistsError(f"{path} is a folder; {flag} names the file to write")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass --overwrite to replace it, or choose another {flag}")
    return path


@contextmanager
def output_folder(path: str | Path, overwrite: bool, marker: str,
                  inputs: Mapping[str, str | Path | None] | None = None) -> Iterator[Path]:
    """Build a command's output folder in a temporary sibling (yielded) and put it at ``path``
    when the block succeeds. An existing non-empty folder is replaced only with ``overwrite``,
    and only if it holds ``marker`` (the file this command always writes) and none of the
    command's ``inputs`` (:func:`refuse_inputs`), so that a user's folder or file is never
    deleted and two runs never mix their files. Enter it before the work."""
    path = Path(path)
    refuse_inputs(path, inputs or {})
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        if not overwrite:
            raise FileExistsError(f"{path} already exists and is not empty; pass --overwrite to replace it, or "
                                  "choose another --out")
        if not (path / marker).is_file():
            raise FileExistsError(f"{path} holds no {marker}, so this command did not write it; refusing to "
                                  "replace it (choose another --out)")
    with atomic_folder(path, overwrite=True) as tmp:
        yield tmp


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
        s.set_defaults(run=cmd.run, parser=s)
    args = parse_command(p, argv)
    return int(args.run(args) or 0)


def _parser() -> argparse.ArgumentParser:
    plugins = ", ".join(available_modalities()) or "none installed"
    p = argparse.ArgumentParser(prog="polydiff", description="Diffusion and flow-matching models for many modalities.",
                                epilog=f"Plugin commands: polydiff MODALITY --help (modalities: {plugins}). "
                                       "--debug anywhere shows tracebacks instead of one-line errors.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("modalities", help="installed modality plugins with their datasets, networks and recipes")
    s.add_argument("--json", action="store_true", help="print JSON")
    s.set_defaults(func=cmd_modalities, parser=s)

    s = sub.add_parser("samplers", help="samplers (built-in and the installed plugins') with kind, NFE and options")
    s.add_argument("--json", action="store_true", help="print JSON")
    s.set_defaults(func=cmd_samplers, parser=s)

    s = sub.add_parser("train", help="train a recipe (resumes from the newest intact checkpoint in OUT)",
                       description="Train a recipe into a run folder. A folder with checkpoints resumes from the "
                                   "newest intact one (last.ckpt, else the newest step-N.ckpt; which one is said); "
                                   "a folder whose checkpoints are all unreadable, or were trained with another "
                                   "architecture, is refused unless --fresh. A second command writing into the same "
                                   "folder refuses while the first runs.")
    s.add_argument("config", help="YAML recipe, or MODALITY:NAME for a recipe shipped with a plugin")
    s.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe value, e.g. --set train.max_steps=500, or remove a key: --set '~data.n' "
                        "(repeatable)")
    s.add_argument("--out", type=Path, help="run folder (default: runs/<recipe name>)")
    s.add_argument("--fresh", action="store_true",
                   help="delete OUT's checkpoints and logs and start over at step 0 (the only way a run's checkpoints "
                        "are ever replaced)")
    s.set_defaults(func=cmd_train, parser=s)

    s = sub.add_parser("sample", help="generate samples from a checkpoint and write them in native formats",
                       description="Generate samples from a checkpoint into a samples folder. Chunks of --batch-size "
                                   "samples are written to OUT.partial as they finish and merged into OUT at the "
                                   "end; a killed run is finished with --resume (the same samples as an "
                                   "uninterrupted run).")
    s.add_argument("checkpoint", type=Path)
    s.add_argument("--num", type=positive_int, help="number of samples (default: the recipe's sample.num)")
    s.add_argument("--sampler", help="sampler name (see `polydiff samplers`)")
    s.add_argument("--steps", type=positive_int, help="number of steps (default: the recipe's sample.steps)")
    s.add_argument("--seed", type=non_negative_int, help="seed (default: the recipe's sample.seed)")
    s.add_argument("--out", type=Path, help="output folder (default: RUN/samples)")
    s.add_argument("--batch-size", type=positive_int,
                   help="samples generated and written at once: bounds memory; each sample has its own seed, so "
                        "the samples do not depend on it up to float rounding (batched products may differ in the "
                        "last digits; with the same --batch-size, --processes N gives the same bytes), except with "
                        "the batch-coupled samplers pc and s4 (norm=batch) and rk45 (default: the recipe's "
                        "sample.batch_size, else 1024)")
    s.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="sampler option (repeatable)")
    s.add_argument("--condition", action="append", default=[], metavar="KEY=VALUE",
                   help="condition of the samples, e.g. label=3, goal=0.5,0.5 (repeatable)")
    s.add_argument("--guidance-scale", type=non_negative_float,
                   help="classifier-free guidance scale on the --condition keys")
    s.add_argument("--observed", type=Path, metavar="FILE",
                   help="observed entries to generate around: the modality's own files (e.g. a series CSV, a motif "
                        "PDB) or .pt / .npz tensors")
    s.add_argument("--particles", type=positive_int, help="SMC particles per sample (steering / exact inpainting)")
    s.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    s.add_argument("--threads", type=positive_int, help="torch CPU threads (default: the recipe's train.threads)")
    s.add_argument("--grid", type=Path, metavar="FILE", help="time grid written by `polydiff calibrate` (JSON)")
    s.add_argument("--compile", nargs="?", const=True, default=None, metavar="MODE",
                   help="torch.compile the network (no MODE), or the whole fixed-step loop as one graph (MODE: loop; "
                        "cudagraphs: also a CUDA graph; max-autotune)")
    s.add_argument("--quantize", choices=["int8", "fp8"], default=None,
                   help="post-training quantization of the network before sampling (see polydiff.quantize)")
    s.add_argument("--processes", type=positive_int, default=1,
                   help="shard the samples over this many local processes (gloo/NCCL; the files equal a one-process "
                        "run's); under torchrun or srun the launcher's processes shard without it (torchrun -- $(which "
                        "polydiff) sample ...: without the '--' torchrun takes --num for its own --numa-binding)")
    again = s.add_mutually_exclusive_group()
    again.add_argument("--overwrite", action="store_true",
                       help="replace an existing samples folder written by polydiff (never another folder), or "
                            "start an interrupted run over")
    again.add_argument("--resume", action="store_true",
                       help="finish the run interrupted in OUT.partial (same checkpoint, number, seed, settings)")
    s.add_argument("--plot", action="store_true", help="also save a figure (needs matplotlib)")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_sample, parser=s)

    s = sub.add_parser("calibrate", help="fit a few-step time grid to a checkpoint (for `polydiff sample --grid`)")
    s.add_argument("checkpoint", type=Path)
    s.add_argument("--steps", type=positive_int, required=True,
                   help="grid steps (NFE = steps x the sampler's NFE per step)")
    s.add_argument("--sampler", help="deterministic sampler (default: the recipe's)")
    s.add_argument("--pilot", type=positive_int, default=256, help="pilot samples the grid is fitted on (default 256)")
    s.add_argument("--seed", type=non_negative_int, default=0, help="seed of the pilot samples")
    s.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="sampler option (repeatable)")
    add_output(s, "grid file (default: RUN/grid-SAMPLER-STEPS.json)")
    s.add_argument("--device", help="torch device (default: the checkpoint's)")
    s.add_argument("--threads", type=positive_int, help="torch CPU threads (default: the recipe's train.threads)")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_calibrate, parser=s)

    s = sub.add_parser("evaluate", help="metrics of a checkpoint, or of native files (a samples folder, any tool's "
                                        "outputs)")
    s.add_argument("target", type=Path, help="a checkpoint, or a file / folder of the modality's native files")
    s.add_argument("--json", type=Path, metavar="FILE", help="also write the metrics (and per-sample flags) as JSON")
    s.add_argument("--modality", help="modality of the files (default: the one in the folder's polydiff.json)")
    s.add_argument("--reference", type=Path, metavar="PATH",
                   help="reference file or folder of native files (default: the recipe's data, else the modality's "
                        "embedded default dataset); novelty needs the training data, so against a --reference it is "
                        "not computed (NaN or left out) unless the modality says otherwise")
    s.add_argument("--config", help="recipe whose data is the reference (default: the stored one)")
    s.add_argument("--num", type=positive_int,
                   help="samples to draw from a checkpoint (default: the recipe's sample.num)")
    s.add_argument("--sampler", help="sampler for a checkpoint's samples (default: the recipe's)")
    s.add_argument("--steps", type=positive_int, help="steps for a checkpoint's samples (default: the recipe's)")
    s.add_argument("--seed", type=non_negative_int,
                   help="seed for sampling a checkpoint (default: the recipe's sample.seed)")
    s.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="modality evaluation option (repeatable), of a checkpoint or of files (graphs: fcd=true)")
    s.add_argument("--threads", type=positive_int, help="torch CPU threads (default: the recipe's train.threads)")
    s.add_argument("--quiet", action="store_true", help="no progress bar while sampling a checkpoint")
    s.set_defaults(func=cmd_evaluate, parser=s)
    return p


# ---------------------------------------------------------------------------------------------
# commands
# ---------------------------------------------------------------------------------------------

def modality_rows() -> tuple[dict[str, Any], bool]:
    """Every installed plugin by entry point, imported to describe it; failures are reported
    in its entry. Returns the rows and whether all of them loaded."""
    out: dict[str, Any] = {}
    for name, ep in available_modalities().items():
        entry: dict[str, Any] = {"target": ep.target, "distribution": ep.distribution}
        try:
            entry.update(load_modality(name).describe())
        except Exception as err:  # a broken plugin must not hide the others
            entry["error"] = " ".join(str(err).split())
        out[name] = entry
    return out, not any("error" in e for e in out.values())


def cmd_modalities(args: argparse.Namespace) -> int:
    """List plugins (cached until a plugin or the core changes: the listing imports every one)."""
    out = cached_json("modalities", plugins_fingerprint(), modality_rows)
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
    return _sampler_rows()[0]


def _sampler_rows() -> tuple[list[dict[str, Any]], bool]:
    from .samplers import SAMPLERS

    packages, ok = {}, True
    for name, ep in available_modalities().items():
        packages[ep.target.partition(":")[0].split(".")[0]] = name
        try:
            load_modality(name)
        except Exception as err:  # a broken plugin must not hide the others
            ok = False
            print(f"polydiff: warning: modality {name!r} cannot be loaded: {' '.join(str(err).split())}",
                  file=sys.stderr)
    rows = []
    for name in SAMPLERS:
        d = SAMPLERS.get(name)
        origin = "polydiff" if d.origin in ("", "polydiff") else packages.get(d.origin, d.origin)
        rows.append({"name": name, "kind": d.kind, "nfe_per_step": d.nfe_per_step, "stochastic": d.stochastic,
                     "loop": d.loop, "options": dict(d.defaults), "description": d.description, "plugin": origin})
    return json.loads(json.dumps(rows, default=str)), ok


def cmd_samplers(args: argparse.Namespace) -> int:
    """List samplers (cached like ``modalities``)."""
    rows = cached_json("samplers", plugins_fingerprint(), _sampler_rows)
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
    """Train a recipe into a run folder; print where the checkpoint went."""
    from .training import train

    cfg = load_config(args.config, args.overrides)
    run = train(cfg, args.out, fresh=args.fresh)
    if run.rank == 0:
        loss = run.metrics.get("train/loss")
        print(f"polydiff: trained to step {run.step}" + (f" (loss {loss:.4g})" if loss is not None else ""))
        print(f"polydiff: checkpoint {run.checkpoint}")
    return 0


def read_grid(path: Path) -> dict[str, Any]:
    """A grid file of ``polydiff calibrate``: JSON with a strictly decreasing list ``grid`` (or
    that list alone) and, optionally, the ``sampler`` it was fitted for."""
    from .files import read_text

    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: no such grid file")
    text = read_text(Path(path))  # bytes that are not UTF-8: an error naming the file and line
    try:
        data = json.loads(text)
    except ValueError as err:
        raise ValueError(f"{path}: not a readable grid file ({err})") from None
    if isinstance(data, dict) and data.get("sampler") is not None and not isinstance(data["sampler"], str):
        raise ValueError(f"{path}: field 'sampler' must be a sampler's name, got {data['sampler']!r}")
    g = data.get("grid") if isinstance(data, dict) else data  # {"grid": [...], ...} or the bare list of times
    if not isinstance(g, list) or len(g) < 2 or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in g):
        what = "field 'grid'" if isinstance(data, dict) else "the file"
        raise ValueError(f"{path}: {what} must be a list of at least 2 finite numbers (times, noise end first)")
    if any(b >= a for a, b in itertools.pairwise(g)):
        raise ValueError(f"{path}: field 'grid' must be strictly decreasing (noise end first)")
    return data if isinstance(data, dict) else {"grid": g}


def cmd_calibrate(args: argparse.Namespace) -> int:
    """Fit a sampling grid to a checkpoint and write it as JSON for ``sample --grid``."""
    from .generator import load
    from .samplers.base import get_sampler

    gen = load(args.checkpoint, device=args.device)
    _threads(args.threads, gen.config)
    sampler = args.sampler or gen.config.sample.sampler
    out = output_file(args.out or _default_samples_dir(args.checkpoint).parent / f"grid-{sampler}-{args.steps}.json",
                      args.overwrite, {"checkpoint": args.checkpoint})
    sdef = get_sampler(sampler)
    if args.sampler is None and (sdef.kind != "gaussian" or sdef.stochastic):
        raise ValueError(f"the recipe's sampler {sampler!r} is {'stochastic' if sdef.stochastic else sdef.kind}; "
                         "calibrate fits deterministic Gaussian samplers: name one with --sampler (e.g. unipc, "
                         "dpm++2m)")
    grid = gen.calibrate_grid(args.steps, sampler, pilot=args.pilot, seed=args.seed, progress=_progress(args),
                              **parse_pairs(args.option, "--option"))
    atomic_write(out, json.dumps({"grid": grid.tolist(), "sampler": sampler, "steps": args.steps,
                                  "checkpoint": str(args.checkpoint), "pilot": args.pilot, "seed": args.seed},
                                 indent=1))
    print(f"polydiff: grid for {sampler} with {args.steps} steps -> {out}")
    print("  times: " + ", ".join(f"{v:.4g}" for v in grid.tolist()))
    return 0


def _generate(args: argparse.Namespace) -> tuple[Path, int, Any]:
    """``polydiff sample``'s work on this process: load, quantize, resolve the options, write
    the samples; returns the folder, the number of samples and ``generate_to``'s result."""
    from . import distributed
    from .checkpoints import load_checkpoint
    from .conditions import number_list
    from .generator import check_samples_folder, interrupted_run, load

    load_checkpoint(args.checkpoint, mmap=True)  # a wrong path says so first (mapped lazily: cheap)
    out = args.out or _default_samples_dir(args.checkpoint)
    if not (args.overwrite or args.resume):
        check_samples_folder(out)  # refuse a used folder before loading, quantizing or compiling
    gen = load(args.checkpoint, device=args.device)
    _threads(args.threads, gen.config)
    if args.quantize is not None:
        gen = gen.quantized(args.quantize, sampler=args.sampler, steps=args.steps,
                            progress=False if distributed.world()[0] != 0 else _progress(args))
        if distributed.world()[0] == 0:
            print(f"polydiff: quantized, {gen.quantization.summary()}")
    sc = gen.config.sample
    # absent flags: the interrupted run's values with --resume, else the recipe's
    before = (interrupted_run(out) if args.resume else None) or {}
    num = args.num if args.num is not None else before.get("num", sc.num)
    seed = args.seed if args.seed is not None else before.get("seed", sc.seed)
    options = parse_pairs(args.option, "--option")
    # a vector written goal=0.5,0.5 (YAML reads a string) is the list of numbers it means
    condition = {k: (number_list(v) or v) if isinstance(v, str) else v
                 for k, v in parse_pairs(args.condition, "--condition").items()}
    control: dict[str, Any] = {"guidance_scale": args.guidance_scale, "particles": args.particles}
    control = {k: v for k, v in control.items() if v is not None}
    if args.observed is not None:
        if not args.observed.exists():
            raise FileNotFoundError(f"{args.observed}: no such observation file")
        control["observed"] = gen.modality.observation(args.observed, gen.info)
    if "guidance_scale" in control and not condition and gen.conditions:  # none: the generator says the model has none
        raise ValueError("--guidance-scale guides toward a condition: give it with --condition KEY=VALUE")
    if args.compile is not None:
        options["compile"] = args.compile
    sampler, steps = args.sampler, args.steps
    if args.resume and args.grid is None:  # the interrupted run's sampler and steps where no flag gives them
        stored = before.get("settings") if isinstance(before.get("settings"), dict) else {}
        sampler = sampler if sampler is not None else stored.get("sampler")
        steps = steps if steps is not None else stored.get("steps")
    if args.grid is not None:
        import torch

        grid_meta = read_grid(args.grid)
        options["grid"] = torch.tensor(grid_meta["grid"], dtype=torch.float64)
        fitted_for = grid_meta.get("sampler")
        if sampler is not None and fitted_for is not None and sampler != fitted_for:
            warnings.warn(f"--grid {args.grid} was fitted for {fitted_for}; --sampler {sampler} walks it as given "
                          "(fit one for it: polydiff calibrate --sampler " + sampler + ")", stacklevel=2)
        sampler = sampler or fitted_for
        if steps is not None and steps != len(grid_meta["grid"]) - 1:
            raise ValueError(f"--steps {steps} disagrees with --grid {args.grid} ({len(grid_meta['grid']) - 1} "
                             "steps); give only one of them")
        steps = len(grid_meta["grid"]) - 1
    shown = {k: (str(args.observed) if k == "observed" else v) for k, v in control.items()}
    if args.observed is not None and control["observed"].meta:
        shown["observed_meta"] = control["observed"].meta
    meta = {"sampler": sampler or sc.sampler, "steps": sc.steps if steps is None else steps, "seed": seed,
            "options": {k: v for k, v in options.items() if k != "grid"}, "condition": condition, **shown,
            **({"grid": str(args.grid)} if args.grid is not None else {}),
            **({"quantize": gen.quantization.summary()} if gen.quantization is not None else {})}
    try:
        done = gen.generate_to(out, num, sampler=sampler, steps=steps, seed=seed, condition=condition or None,
                               batch_size=args.batch_size, device=args.device, overwrite=args.overwrite,
                               resume=args.resume, plot=args.plot, metadata=meta, progress=_progress(args),
                               **options, **control)
    except ValueError as err:  # the grid's times checked against the model's schedule: name the file
        if args.grid is not None and str(err).startswith("a user grid"):
            raise ValueError(f"{args.grid}: {err}") from None
        raise
    return out, num, done


def cmd_sample(args: argparse.Namespace) -> int:
    """Generate samples from a checkpoint into native files (sharded across processes when asked)."""
    from . import distributed

    if args.processes > 1 and not distributed.init_from_env():
        argv = _without(args.argv, "--processes")
        if args.threads is None:
            argv += ["--threads", str(max(1, (os.cpu_count() or 1) // args.processes))]
        return distributed.launch(argv, args.processes)
    launched = distributed.init_from_env()
    rank = distributed.world()[0]
    try:
        out, num, done = _generate(args)
    finally:  # also on an error: a process group left up can abort the interpreter's exit
        if launched:
            import torch.distributed as dist

            dist.destroy_process_group()
    if rank:
        return 0  # rank 0 reports
    if done.complete:
        print(f"polydiff: {out} already holds these {num} samples; nothing to resume")
    elif done.resumed:
        print(f"polydiff: wrote {num} samples to {out} ({done.resumed} from the interrupted run, "
              f"{done.generated} new)")
    else:
        print(f"polydiff: wrote {num} samples to {out}")
    for p in done.paths:
        print(f"  {p}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Score a checkpoint or a folder of native files with the modality's metrics."""
    from .checkpoints import SHARDED_META
    from .generator import evaluate_samples, load
    from .modality import check_metrics

    cfg = load_config(args.config) if args.config is not None else None
    target: Path = args.target
    options = parse_pairs(args.option, "--option")
    result: dict[str, Any] = {"target": str(target)}
    if args.json is not None:  # the JSON must not replace what is being evaluated
        refuse_inputs(args.json, {"target": target, "reference": args.reference, "recipe": args.config}, "--json")
    if target.suffix == ".ckpt" and (target.is_file() or (target / SHARDED_META).is_file()):  # a checkpoint
        if args.modality or args.reference:
            raise ValueError("--modality and --reference are for evaluating files; a checkpoint is evaluated against "
                             "its recipe's data (or --config's)")
        gen = load(target)
        if cfg is not None:
            gen.config = cfg
        _threads(args.threads, gen.config)
        sc = gen.config.sample
        options = check_keywords(gen.modality.evaluate_model, options,
                                 f"the evaluation of modality {gen.modality.name!r}", "--option",
                                 skip=("generator", "num", "seed"))
        num = sc.num if args.num is None else args.num
        if interactive(sys.stderr) and not args.quiet:
            print(f"polydiff: evaluating {target}: {num} samples, then the metrics", file=sys.stderr)
        # the modality's evaluate_model generates with its own call: --sampler / --steps / --quiet reach it as the
        # generator's defaults
        with gen.sampling_defaults(sampler=args.sampler, steps=args.steps, progress=_progress(args)):
            metrics = check_metrics(gen.modality.evaluate_model(
                gen, num=num, seed=sc.seed if args.seed is None else args.seed, **options), gen.modality.name,
                "evaluate_model")
        result.update(modality=gen.modality.name, metrics=metrics)
    elif target.exists():
        if any(v is not None for v in (args.num, args.seed, args.sampler, args.steps)):
            hint = f" such as {target / 'checkpoints' / 'last.ckpt'}" if (target / "checkpoints").is_dir() else ""
            raise ValueError(f"--num, --sampler, --steps and --seed are for evaluating a checkpoint (a .ckpt file"
                             f"{hint}); {target} is not one")
        _threads(args.threads, cfg)
        ev = evaluate_samples(target, cfg, modality=args.modality, reference=args.reference, options=options)
        metrics = ev.metrics
        result.update(modality=ev.modality, num=ev.num, metrics=metrics)
        if ev.flags:
            result["per_sample"] = ev.flags
    else:
        raise FileNotFoundError(f"{target}: no such checkpoint, file or folder")
    for k, v in metrics.items():
        print(f"{k}: {v:.6g}" if isinstance(v, float) else f"{k}: {v}")
    undefined = [k for k, v in metrics.items() if isinstance(v, float) and math.isnan(v)]
    if undefined:
        warnings.warn(f"nan means undefined for these inputs, not a failure (e.g. a distance to a side with "
                      f"nothing to compare; the modality's docs say when): {', '.join(undefined)}", stacklevel=1)
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


def _without(argv: Sequence[str], flag: str) -> list[str]:
    """``argv`` without ``flag`` and its value (``--flag V`` or ``--flag=V``)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == flag:
            skip = True
        elif not a.startswith(flag + "="):
            out.append(a)
    return out


def _progress(args: argparse.Namespace) -> bool | None:
    """Progress display of a command: none with ``--quiet``, else automatic (a bar on a
    terminal, sparse lines in logs of long runs)."""
    return False if getattr(args, "quiet", False) else None


def _default_samples_dir(checkpoint: Path) -> Path:
    from .checkpoints import run_folder

    return run_folder(checkpoint) / "samples"


if __name__ == "__main__":
    sys.exit(main())
