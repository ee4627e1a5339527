"""Energy-based molecular dynamics (ScoreMD-style, the ``md`` modality): one energy model per
system serves i.i.d. sampling (reverse diffusion) and Langevin dynamics with its forces
``-grad E(x, t_min)``; both are scored by Jensen-Shannon divergence (nats) against the reference,
with and without the core's Fokker-Planck penalty (``loss.techniques.fp_weight``).

Systems: Müller-Brown at kT = 23 (MLP energy; 20,000 training samples and a 20,000-sample
reference, both by MCMC on the exact potential) and coarse-grained alanine dipeptide (5-bead
energy network; the first 8,000 frames of the shared trajectory train, the last 2,000 are the
reference; JS of 64 x 64 (phi, psi) histograms).

Protocol, per system (all CPU, one thread, seeded):

1. a base model is trained without the penalty (``base_steps``);
2. it is fine-tuned (``train.init``, fresh Adam, ``tune_lr``, EMA 0.99, same batches and noise
   for every arm) for ``tune_steps`` more steps without the penalty (the no-FP model: same total
   steps) and with it, at each weight of ``FP_RATIOS`` (below);
3. each model is evaluated by :meth:`MDModality.evaluate_model`: ``num`` i.i.d. samples, and
   ``chains`` Langevin chains (BAOAB, kT = 1 in model units, friction 1, started from reference
   frames) of ``langevin`` x ``every`` steps of ``dt``, one frame every ``every`` steps; the
   floor ``data_*`` is the training set scored the same way. The Langevin run is repeated at
   ``t_min = 0.01`` (forces of a slightly smoothed density) as a diagnostic.

Why fine-tuning rather than training with the penalty from the start: the penalty (two
Hutchinson probes, each a central difference in t of the score and a double backward pass)
makes a step 10-14x dearer (measured, batch 256, one thread: 0.02 -> 0.22 s on Müller-Brown,
0.03 -> 0.40 s on the peptide), so penalised training from scratch does not fit the 15-minute
budget of the whole benchmark (the full run takes about 13 minutes).

The weight. ScoreMD's ``beta = 5e-4`` weighs a different quantity (the scalar log-density
residual, divided by D^2, with their own time weighting); the core penalty is the squared
*score* residual per dimension at training times from the loss's time density, which grows by
orders of magnitude towards t -> 0 (measured on base models: 0.1 at t = 1, 80 at t = 0.1, 2e5
at t = 1e-3, 2e8 at t = 1e-4 on Müller-Brown; up to 2e10 on the peptide), so its batch mean is
set by the smallest time drawn
and no fixed number carries over between systems. Each weight is therefore calibrated on the base
model: ``w = ratio * DSM loss / median batch penalty`` over ``CALIBRATION_BATCHES`` batches,
i.e. the penalty starts at ``ratio`` of the denoising loss in a median batch. Ratios 0.1 and
0.01: at ratio 1 (tried on Müller-Brown, ``w = 3e-5``) the penalty dominated and broadened
both distributions (i.i.d. JS 0.049 -> 0.107, Langevin 0.084 -> 0.177; at w = 3e-4: 0.163 and
0.214). These are the *full range, raw* arms (``--no-legacy`` skips them).

Time-restricted, normalised arms (as ScoreMD, which regularises only where it matters): the
penalty times are drawn log-uniformly in ``[t_min, hi]`` (``loss.techniques.fp_t_range``,
independent of the DSM time density; ``t_min`` = the process's, where the Langevin forces are
taken; ``hi`` in ``RANGE_HIS``) and the residual is multiplied by ``sigma^3 / g^2``
(``fp_normalize``; :func:`polydiff.techniques.fp_normalizer` derives it: a score off by a
multiple of itself then costs the same at every t, instead of ``sigma^-6`` more near t = 0), so
the batch penalty no longer hinges on the smallest time drawn. Their weights are calibrated the
same way (on the base model, with the arm's own penalty) at ``RANGE_RATIOS``.

Speed against ScoreMD's own code (part ``speed``; ``--parts speed`` runs it alone and keeps the
FP study's published results): the ``md:muller_brown`` recipe's training step without and with
the penalty, i.i.d. sampling and Langevin dynamics, against ScoreMD's JAX code at our MLP's widths,
at about our parameter count and (sampling) at its own defaults, measured by
``bench/scoremd_reference.py`` in its scratch venv (made once by ``python bench/scoremd_reference.py
--setup``), in interleaved rounds on one thread (:func:`speed`). Without that venv and checkout
the section says so ("Not measured: ... missing").

    python bench/molecules_md.py [--quick] [--runs DIR] [--seed 0] [--no-legacy] [--parts md,speed]
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, command_line, environment, header, publish, timed_calls

import polydiff

PARTS = ("md", "speed")
SYSTEMS = ("muller_brown", "alanine")
FP_RATIOS = (0.1, 0.01)  # penalty / DSM loss in a median batch of the base model (full-range arms)
# time-restricted, normalised arms: penalty times log-uniform in [t_min, hi] (t_min: the process's,
# where the Langevin forces are taken), residual times sigma^3 / g^2 (polydiff.techniques.fp_normalizer)
RANGE_HIS = (0.05, 0.2)
RANGE_RATIOS = (0.1, 0.01)  # as FP_RATIOS; at 1 a 10-step smoke run already broadened both JS
# clipped arms: each sample's normalised penalty softly capped (loss.techniques.fp_clip) at
# CLIP_FACTOR x the base model's median batch penalty of the unclipped family. Only where batch
# penalties are heavy-tailed: on alanine the [t_min, 0.2] family's mean is 1000x its median
# (Mueller-Brown: max / median <= 3, so a cap would change nothing there)
# the same [t_min, LD_RANGE_HI] normalised family with the log-density residual
# (loss.techniques.fp_residual: log_density, the form of ScoreMD's residual_fp), one seed
LD_RANGE_HI = 0.05
LD_RATIOS = (0.1, 0.01)
CLIP_FACTOR = 10.0
CLIP_SYSTEMS = ("alanine",)
CLIP_RATIOS = {0.05: (0.1,), 0.2: (0.1, 0.01)}  # per range end: the ratios given a clipped arm
# extra fine-tuning seeds (--tune-seeds) run these arms again from the same base model (alanine's
# clipped [t_min, 0.2] arm at ratio 0.01 was the one arm that narrowed its gap on seed 0; the last
# two: the log-density residual, beside the score residual's arms of the same family)
SEED_ARMS = ("fp0", "fp0.1_t0.05n", "fp0.01_t0.05n", "fp0.01_t0.2nc", "fp0.1_t0.05nld", "fp0.01_t0.05nld")
CALIBRATION_BATCHES = 8
T_MIN_CHECK = 0.01  # the Langevin diagnostic at a larger force time
SETTINGS: dict[str, dict[str, Any]] = {
    "muller_brown": {
        "data": {"name": "muller_brown", "n": 20_000, "test": 20_000},
        "model": {"name": "mlp", "hidden": 128, "layers": 3},
        # uniform t: measured i.i.d. JS 0.056 at 2000 steps (floor 0.034)
        "loss": {"weighting": "snr", "time_density": "uniform"},
        "batch": 256, "lr": 2e-3, "base_steps": 2000, "tune_steps": 400, "tune_lr": 1e-3,
        # dt 0.01: exact-force BAOAB at these settings reaches the data floor (checked below);
        # 200 chains x 100 frames = 20,000 frames, the size of the reference
        "evaluate": {"num": 20_000, "chains": 200, "langevin": 100, "every": 50, "dt": 1e-2, "friction": 1.0},
    },
    "alanine": {
        "data": {"name": "alanine"},
        "model": {"name": "beads", "hidden": 128, "layers": 3},
        # log-normal times centred at sigma/alpha = 0.08 (model units): the uniform density spends
        # 2 % of its draws below t = 0.02, where bonds and dihedrals are learned; measured
        # Langevin JS 0.15 against 0.41 with uniform t at 2000 steps
        "loss": {"weighting": "snr", "time_density": "lognormal", "p_mean": -2.5, "p_std": 1.2},
        "batch": 256, "lr": 2e-3, "base_steps": 3000, "tune_steps": 300, "tune_lr": 1e-3,
        # dt 4e-3: bond lengths and the JS agree with dt 2e-3 (checked below); 50 chains x 80
        # frames = 4,000 frames against a 2,000-frame reference; num 8000 = the whole training
        # set, so the floor is the training set against the reference
        "evaluate": {"num": 8000, "chains": 50, "langevin": 80, "every": 50, "dt": 4e-3, "friction": 1.0},
    },
}
QUICK = {
    "muller_brown": {"data": {"name": "muller_brown", "n": 2000, "test": 2000}, "base_steps": 150, "tune_steps": 10,
                     "evaluate": {"num": 2000, "chains": 40, "langevin": 50, "every": 10, "dt": 1e-2, "friction": 1.0}},
    "alanine": {"base_steps": 100, "tune_steps": 6,
                "evaluate": {"num": 1000, "chains": 20, "langevin": 25, "every": 20, "dt": 4e-3, "friction": 1.0}},
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] [md] {msg}", file=sys.stderr, flush=True)


def settings(system: str, quick: bool) -> dict[str, Any]:
    s = {k: (dict(v) if isinstance(v, dict) else v) for k, v in SETTINGS[system].items()}
    if quick:
        s.update(QUICK[system])
    return s


# ---------------------------------------------------------------------------------------------
# training (reused from --runs when a finished run with the same config is there)
# ---------------------------------------------------------------------------------------------


def config(s: dict[str, Any], steps: int, lr: float, seed: int, fp_weight: float = 0.0, init: str | None = None,
           ema: float = 0.999, fp: dict[str, Any] | None = None) -> dict[str, Any]:
    """The recipe of one run; ``fp``: more ``loss.techniques`` FP options (range, normalisation)."""
    return {"modality": "md", "data": s["data"], "model": s["model"],
            "loss": {**s["loss"], "techniques": {"fp_weight": fp_weight, **(fp or {})}},
            "train": {"max_steps": steps, "batch_size": s["batch"], "lr": lr, "seed": seed, "ema": ema, "init": init,
                      "checkpoint_every": steps, "log_every": max(steps // 20, 1), "threads": 1, "progress": False},
            "sample": {"num": 1000, "sampler": "dpm++2m", "steps": 50, "seed": 0}}


def _logged(run_dir: Path, key: str) -> list[float]:
    """The values of ``key`` in the run's CSV log, in order."""
    out: list[float] = []
    for path in sorted(run_dir.glob("logs/version_*/metrics.csv")):
        with open(path, newline="") as fh:
            out += [float(r[key]) for r in csv.DictReader(fh) if r.get(key) not in (None, "")]
    return out


def train(cfg: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """Train (or reuse) one run; returns its checkpoint, seconds, steps and logged losses."""
    side = run_dir / "bench_train.json"
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    if side.is_file() and ckpt.is_file():
        rec = json.loads(side.read_text())
        if rec.get("config") == cfg:
            log(f"reusing {run_dir}")
            return {**rec, "reused": True}
    t0 = time.perf_counter()
    run = polydiff.train(cfg, run_dir, fresh=True, verbose=False)
    secs = time.perf_counter() - t0
    fp = _logged(run_dir, "train/loss_fokker_planck")
    k = max(len(fp) // 5, 1)
    rec = {"config": cfg, "checkpoint": str(run.checkpoint), "seconds": secs, "steps": int(run.step),
           "final_loss": float(run.metrics.get("train/loss_x", run.metrics.get("train/loss", math.nan))),
           "fp_logged_first": float(np.mean(fp[:k])) if fp else None,
           "fp_logged_last": float(np.mean(fp[-k:])) if fp else None}
    side.write_text(json.dumps(rec, indent=1))
    return {**rec, "reused": False}


def penalty_stats(gen: Any, s: dict[str, Any], seed: int, fp: dict[str, Any] | None = None) -> dict[str, float]:
    """The denoising loss and the Fokker-Planck penalty of a model on ``CALIBRATION_BATCHES``
    training batches (the same batches, times and noise for every model of a system); ``fp``:
    the arm's ``loss.techniques`` FP options (none: times from the loss's density, raw)."""
    from polydiff.losses import diffusion_loss
    from polydiff.random import Noise
    from polydiff.techniques import fokker_planck_penalty

    data = gen.modality.dataset(gen.config.data.name, **gen.config.data.options)
    opts = {k: v for k, v in s["loss"].items() if k not in ("weighting", "time_density")}
    g = torch.Generator().manual_seed(10_000 + seed)
    pens, dsm = [], []
    for i in range(CALIBRATION_BATCHES):
        batch = data.train.get_batch(torch.randint(0, len(data.train), (s["batch"],), generator=g))
        noise = Noise(s["batch"], generator=torch.Generator().manual_seed(20_000 + 97 * seed + i))
        pen = fokker_planck_penalty(gen.net, gen.fields, batch, noise, time_density=s["loss"]["time_density"],
                                    h=1e-2, **_penalty_options(fp), **opts)
        pens.append(float(pen.detach()))
        noise = Noise(s["batch"], generator=torch.Generator().manual_seed(30_000 + 97 * seed + i))
        loss, _ = diffusion_loss(gen.net, gen.fields, batch, noise, weighting=s["loss"]["weighting"],
                                 time_density=s["loss"]["time_density"], **opts)
        dsm.append(float(loss.detach()))
    return {"penalty_median": float(np.median(pens)), "penalty_mean": float(np.mean(pens)),
            "penalty_max": float(np.max(pens)), "dsm_loss": float(np.mean(dsm))}


def _penalty_options(fp: dict[str, Any] | None) -> dict[str, Any]:
    """``loss.techniques`` FP options as keyword arguments of ``fokker_planck_penalty``."""
    fp = fp or {}
    out: dict[str, Any] = {"normalize": bool(fp.get("fp_normalize", False)), "clip": fp.get("fp_clip"),
                           "residual": fp.get("fp_residual", "score")}
    if fp.get("fp_t_range"):
        out["t_range"] = tuple(fp["fp_t_range"])
        out["range_density"] = fp.get("fp_t_density", "log_uniform")
    return out


def arm_specs(t_min: float, legacy: bool = True, clip: bool = False) -> list[dict[str, Any]]:
    """The fine-tuning arms: no penalty; the full-range raw penalty at ``FP_RATIOS`` (with
    ``legacy``); the normalised penalty restricted to ``[t_min, hi]`` for each of ``RANGE_HIS``
    at ``RANGE_RATIOS``; with ``clip``, the same clipped (``CLIP_RATIOS``; the cap is set from
    the unclipped family's calibration, ``clip_of``). ``fp``: the arm's FP options, shared by
    the arms calibrated together."""
    arms: list[dict[str, Any]] = [{"key": "fp0", "family": "none", "ratio": 0.0, "fp": {}}]
    if legacy:
        arms += [{"key": f"fp{r:g}", "family": "full range, raw", "ratio": r, "fp": {}} for r in FP_RATIOS]
    for hi in RANGE_HIS:
        fp = {"fp_t_range": [t_min, hi], "fp_normalize": True}
        fam = f"t in [{t_min:g}, {hi:g}], normalised"
        arms += [{"key": f"fp{r:g}_t{hi:g}n", "family": fam, "ratio": r, "fp": fp} for r in RANGE_RATIOS]
    fp = {"fp_t_range": [t_min, LD_RANGE_HI], "fp_normalize": True, "fp_residual": "log_density"}
    fam = f"t in [{t_min:g}, {LD_RANGE_HI:g}], normalised, log-density"
    arms += [{"key": f"fp{r:g}_t{LD_RANGE_HI:g}nld", "family": fam, "ratio": r, "fp": fp} for r in LD_RATIOS]
    if clip:
        for hi in RANGE_HIS:
            fp = {"fp_t_range": [t_min, hi], "fp_normalize": True, "fp_clip": None}
            fam = f"t in [{t_min:g}, {hi:g}], normalised"
            arms += [{"key": f"fp{r:g}_t{hi:g}nc", "family": fam + ", clipped", "clip_of": fam, "ratio": r, "fp": fp}
                     for r in CLIP_RATIOS.get(hi, ())]
    return arms


def arm_label(spec: dict[str, Any], t_min: float) -> str:
    w, fp = spec["weight"], spec["fp"]
    if w == 0:
        return "no FP"
    if fp:
        clip = f" clip {fp['fp_clip']:.2g}" if fp.get("fp_clip") else ""
        form = " log-density" if fp.get("fp_residual") == "log_density" else ""
        return f"FP [{t_min:g}, {fp['fp_t_range'][1]:g}] norm{clip}{form} w={w:.2g}"
    return f"FP w={w:.2g}"


# ---------------------------------------------------------------------------------------------
# evaluation
# ---------------------------------------------------------------------------------------------


class _Recording:
    """A generator whose ``generate`` keeps its last output (the i.i.d. samples scored)."""

    def __init__(self, gen: Any) -> None:
        self._gen, self.samples = gen, None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._gen, name)

    def generate(self, n: int, **kw: Any) -> Any:
        self.samples = self._gen.generate(n, progress=False, **kw)
        return self.samples


def _shape_stats(frames: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """Blow-up checks: the share of non-finite frames, the largest distance from the centroid (or
    origin), and for bead chains the mean |bond length - reference mean| (Angstrom)."""
    flat = frames.reshape(len(frames), -1)
    finite = np.isfinite(flat).all(1)
    out = {"nonfinite": float(1 - finite.mean())}
    f = frames[finite]
    if f.ndim == 3:
        c = f - f.mean(1, keepdims=True)
        out["max_radius"] = float(np.linalg.norm(c, axis=-1).max()) if len(c) else math.nan
        b = np.linalg.norm(f[:, 1:] - f[:, :-1], axis=-1)
        b0 = np.linalg.norm(ref[:, 1:] - ref[:, :-1], axis=-1)
        out["bond_abs_dev"] = float(np.abs(b - b0.mean(0)).mean()) if len(b) else math.nan
        out["bond_std"] = float(b.std(0).mean()) if len(b) else math.nan
    else:
        out["max_abs"] = float(np.abs(f).max()) if len(f) else math.nan
    return out


def evaluate(gen: Any, s: dict[str, Any], seed: int, ref: np.ndarray, sweep: bool = True) -> dict[str, Any]:
    """``evaluate_model`` on one model, with its i.i.d. samples and Langevin frames kept (for the
    plots and the checks), and the Langevin run again at ``T_MIN_CHECK``."""
    import polydiff_molecules.md as md
    from polydiff_molecules import MDModality
    from polydiff_molecules.md_modality import js_metrics, simulate

    ev = s["evaluate"]
    rec = _Recording(gen)
    box: dict[str, Any] = {}
    original = md.langevin_torch

    def langevin(*a: Any, **k: Any) -> Any:
        box["traj"] = original(*a, **k)
        return box["traj"]

    t0 = time.perf_counter()
    # evaluate_model imports md.langevin_torch when called: the wrapper keeps the trajectory it scores
    with mock.patch.object(md, "langevin_torch", langevin):
        metrics = MDModality().evaluate_model(rec, seed=seed, **ev)
    secs = time.perf_counter() - t0
    scale = float(gen.info.get("scale", 1.0))
    traj = np.asarray(box["traj"], dtype=np.float64) / scale  # (frames, chains, ...) in data units
    frames = traj.reshape(-1, *ref.shape[1:])
    iid = np.stack([np.asarray(o, dtype=np.float64) for o in rec.samples])
    key = "js_phi_psi" if ref.ndim == 3 else "js"
    half = len(traj) // 2
    out = {"metrics": metrics, "eval_seconds": secs, "iid_checks": _shape_stats(iid, ref),
           "langevin_checks": _shape_stats(frames, ref), "langevin_frames": len(frames),
           "langevin_js_first_half": js_metrics(traj[:half].reshape(-1, *ref.shape[1:]), ref, gen.info)[key],
           "langevin_js_second_half": js_metrics(traj[half:].reshape(-1, *ref.shape[1:]), ref, gen.info)[key]}
    if sweep:
        t1 = time.perf_counter()
        tr = simulate(gen, ref, chains=ev["chains"], steps=ev["langevin"] * ev["every"], every=ev["every"],
                      dt=ev["dt"], friction=ev["friction"], t_min=T_MIN_CHECK, seed=seed, integrator=original)
        fr = tr.reshape(-1, *ref.shape[1:])
        ok = np.isfinite(fr.reshape(len(fr), -1)).all(1)
        out["t_min_check"] = {"t_min": T_MIN_CHECK, **js_metrics(fr[ok], ref, gen.info, "langevin_"),
                              "checks": _shape_stats(fr, ref), "seconds": time.perf_counter() - t1}
    out["_iid"], out["_langevin"] = iid, frames
    return out


def integrator_check(system: str, gen: Any, s: dict[str, Any], ref: np.ndarray, seed: int) -> dict[str, Any]:
    """Müller-Brown: BAOAB with the exact forces at the benchmark's settings (its JS against the
    reference should sit at the data floor). Peptide: the no-FP model's Langevin at dt / 2
    (its JS and bond lengths should match those at dt)."""
    from polydiff_molecules.md import SYSTEMS as TOY
    from polydiff_molecules.md import langevin_torch
    from polydiff_molecules.md_modality import js_metrics, simulate

    ev = s["evaluate"]
    t0 = time.perf_counter()
    if system in TOY:
        sys_ = TOY[system]
        rng = np.random.default_rng(seed)
        x0 = ref[rng.choice(len(ref), size=ev["chains"], replace=len(ref) < ev["chains"])]
        tr = langevin_torch(lambda x: sys_.reduced_force(x), torch.as_tensor(x0), steps=ev["langevin"] * ev["every"],
                            dt=ev["dt"], gamma=ev["friction"], kT=1.0, seed=seed, every=ev["every"]).numpy()
        fr = tr.reshape(-1, 2)
        return {"kind": "exact forces, same dt / chains / steps", **js_metrics(fr, ref, gen.info, "langevin_"),
                "checks": _shape_stats(fr, ref), "seconds": time.perf_counter() - t0}
    tr = simulate(gen, ref, chains=ev["chains"], steps=ev["langevin"] * ev["every"] * 2, every=ev["every"] * 2,
                  dt=ev["dt"] / 2, friction=ev["friction"], t_min=None, seed=seed, integrator=langevin_torch)
    fr = tr.reshape(-1, *ref.shape[1:])
    return {"kind": f"no-FP model at dt / 2 = {ev['dt'] / 2:g} (same simulated time)",
            **js_metrics(fr, ref, gen.info, "langevin_"), "checks": _shape_stats(fr, ref),
            "seconds": time.perf_counter() - t0}


# ---------------------------------------------------------------------------------------------
# plots
# ---------------------------------------------------------------------------------------------


def plot(system: str, ref: np.ndarray, rows: dict[str, dict[str, np.ndarray]], path: Path) -> Path:
    """One row of free-energy panels per model (exact for Müller-Brown, reference, i.i.d.,
    Langevin; :func:`md.plot_free_energy`), stacked into one PNG."""
    from PIL import Image

    from polydiff.files import atomic_write
    from polydiff_molecules.md import plot_free_energy

    parts = []
    for label, sets in rows.items():
        tmp = path.with_name(f".{path.stem}_{len(parts)}.png")
        panels = {"reference": ref, f"i.i.d., {label}": sets["iid"], f"Langevin, {label}": sets["langevin"]}
        if system == "alanine":
            plot_free_energy(panels, tmp, kind="ramachandran")
        else:
            plot_free_energy(panels, tmp, system=system, kind="2d")
        with Image.open(tmp) as im:
            parts.append(im.convert("RGB"))
        tmp.unlink()
    width = max(p.width for p in parts)
    out = Image.new("RGB", (width, sum(p.height for p in parts)), "white")
    y = 0
    for p in parts:
        out.paste(p, (0, y))
        y += p.height
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, lambda tmp: out.save(tmp, format="png"))


# ---------------------------------------------------------------------------------------------
# the benchmark
# ---------------------------------------------------------------------------------------------


def run_system(system: str, out: Path, quick: bool, seed: int, plot_dir: Path, legacy: bool = True,
               tune_seeds: tuple[int, ...] = ()) -> dict[str, Any]:
    from polydiff_molecules import MDModality
    from polydiff_molecules.md import phi_psi
    from polydiff_molecules.md_modality import _coords

    s = settings(system, quick)
    t_sys = time.perf_counter()
    log(f"{system}: base model, {s['base_steps']} steps")
    base = train(config(s, s["base_steps"], s["lr"], seed), out / f"{system}_base")
    gen = polydiff.load(base["checkpoint"])
    data = gen.modality.dataset(gen.config.data.name, **gen.config.data.options)
    ref = _coords(MDModality().reference(data))
    t_min = float(gen.fields["x"].process.schedule.t_min)
    specs = arm_specs(t_min, legacy, clip=system in CLIP_SYSTEMS)
    cal: dict[str, Any] = {}  # per family: the base model's penalty, and the weights it gives
    for spec in specs:
        fam = spec["family"]
        if spec["ratio"] == 0 or fam in cal:
            continue
        if "clip_of" in spec:  # the cap: CLIP_FACTOR x the unclipped family's median batch penalty
            spec["fp"]["fp_clip"] = CLIP_FACTOR * cal[spec["clip_of"]]["penalty_median"]
        cal[fam] = {**penalty_stats(gen, s, seed, spec["fp"]), "fp": spec["fp"], "ratios": [], "weights": []}
    for spec in specs:
        c = cal.get(spec["family"])
        spec["weight"] = spec["ratio"] * c["dsm_loss"] / c["penalty_median"] if c else 0.0
        if c:
            c["ratios"].append(spec["ratio"])
            c["weights"].append(spec["weight"])
    for fam, c in cal.items():
        log(f"{system}: {fam}: base DSM {c['dsm_loss']:.3g}, median penalty {c['penalty_median']:.3g} -> fp_weight "
            + ", ".join(f"{w:.3g}" for w in c["weights"]))
    arms: dict[str, Any] = {}
    rows: dict[str, dict[str, np.ndarray]] = {}
    for spec in specs:
        w = spec["weight"]
        label = arm_label(spec, t_min)
        log(f"{system}: {label}, {s['tune_steps']} fine-tuning steps")
        tuned = train(config(s, s["tune_steps"], s["tune_lr"], seed + 1, fp_weight=w, init=base["checkpoint"],
                             ema=0.99, fp=spec["fp"] if w else None), out / f"{system}_tune_{spec['key']}")
        g = polydiff.load(tuned["checkpoint"])
        log(f"{system}: {label}: evaluating")
        ev = evaluate(g, s, seed, ref)
        rows[label] = {"iid": ev.pop("_iid"), "langevin": ev.pop("_langevin")}
        arms[label] = {"fp_weight": w, "fp_ratio": spec["ratio"], "family": spec["family"], "fp_options": spec["fp"],
                       "steps": {"base": base["steps"], "tune": tuned["steps"]},
                       "train_seconds": {"base": base["seconds"], "tune": tuned["seconds"]},
                       "reused": base.get("reused", False) or tuned.get("reused", False),
                       "final_dsm_loss": tuned["final_loss"],
                       "fp_logged": {"first_fifth": tuned["fp_logged_first"], "last_fifth": tuned["fp_logged_last"]},
                       "after": penalty_stats(g, s, seed),
                       "after_own": penalty_stats(g, s, seed, spec["fp"]) if spec["fp"] else None, **ev}
        if w == 0:
            arms[label]["integrator_check"] = integrator_check(system, g, s, ref, seed)
        arms[label]["seeds"] = [_seed_row(seed, ev["metrics"])]
    for extra in tune_seeds:  # the same base model, another fine-tuning and evaluation seed
        for spec in (x for x in specs if x["key"] in SEED_ARMS):
            label = arm_label(spec, t_min)
            log(f"{system}: {label}, seed {extra}")
            tuned = train(config(s, s["tune_steps"], s["tune_lr"], extra + 1, fp_weight=spec["weight"],
                                 init=base["checkpoint"], ema=0.99, fp=spec["fp"] if spec["weight"] else None),
                          out / f"{system}_tune_{spec['key']}_seed{extra}")
            ev = evaluate(polydiff.load(tuned["checkpoint"]), s, extra, ref, sweep=False)
            arms[label]["seeds"].append(_seed_row(extra, ev["metrics"]))
    res: dict[str, Any] = {"settings": dict(s), "t_min": t_min, "calibration": cal, "arms": arms,
                           "reference_frames": len(ref), "tune_seeds": [seed, *tune_seeds]}
    if system == "alanine":
        res["reference_phi_positive"] = float(np.mean(phi_psi(ref)[:, 0] > 0))
    path = plot_dir / f"molecules_md_{system}.png"
    res["plot"] = str(plot(system, ref, rows, path))
    res["seconds"] = time.perf_counter() - t_sys
    log(f"{system}: done in {res['seconds']:.0f} s")
    return res


def _seed_row(seed: int, m: dict[str, Any]) -> dict[str, Any]:
    key = "js_phi_psi" if "iid_js_phi_psi" in m else "js"
    return {"seed": seed, "iid": m[f"iid_{key}"], "langevin": m[f"langevin_{key}"], "gap": m["langevin_minus_iid"]}


def seed_summary(sys_res: dict[str, Any]) -> dict[str, Any]:
    """Per arm run with several seeds: mean and standard deviation of both JS and of the gap,
    and the change of |gap| against no FP paired by seed (mean and standard error); "narrowed"
    when that change is below zero by more than two standard errors."""
    base = {r["seed"]: r for r in sys_res["arms"]["no FP"].get("seeds", [])}
    out = {}
    for label, a in sys_res["arms"].items():
        rows = a.get("seeds", [])
        if len(rows) < 2:
            continue
        entry: dict[str, Any] = {"n": len(rows)}
        for k in ("iid", "langevin", "gap"):
            v = np.array([r[k] for r in rows])
            entry[k] = (float(v.mean()), float(v.std(ddof=1)))
        if a["fp_weight"] and all(r["seed"] in base for r in rows):
            d = np.array([abs(r["gap"]) - abs(base[r["seed"]]["gap"]) for r in rows])
            di = np.array([r["iid"] - base[r["seed"]]["iid"] for r in rows])
            dl = np.array([r["langevin"] - base[r["seed"]]["langevin"] for r in rows])
            se = float(d.std(ddof=1) / math.sqrt(len(d)))
            entry.update(abs_gap_change=(float(d.mean()), se), iid_change=float(di.mean()),
                         langevin_change=float(dl.mean()), narrowed=bool(d.mean() < -2 * se))
        out[label] = entry
    return out


def noise_yardstick(sys_res: dict[str, Any]) -> float:
    """The no-FP model's Langevin JS of the first against the second half of its frames."""
    nofp = sys_res["arms"]["no FP"]
    return abs(nofp["langevin_js_first_half"] - nofp["langevin_js_second_half"])


def verdict(sys_res: dict[str, Any]) -> dict[str, Any]:
    """Per FP arm: |gap| with and without FP, the change of each JS, and whether the gap shrank
    by more than the noise yardstick without both divergences getting worse."""
    key = "js_phi_psi" if "iid_js_phi_psi" in next(iter(sys_res["arms"].values()))["metrics"] else "js"
    arms = sys_res["arms"]
    base = arms["no FP"]["metrics"]
    noise = noise_yardstick(sys_res)
    out = {}
    for label, a in arms.items():
        if a["fp_weight"] == 0:
            continue
        m = a["metrics"]
        g0, g1 = abs(base["langevin_minus_iid"]), abs(m["langevin_minus_iid"])
        di, dl = m[f"iid_{key}"] - base[f"iid_{key}"], m[f"langevin_{key}"] - base[f"langevin_{key}"]
        out[label] = {"family": a.get("family", "full range, raw"), "abs_gap_no_fp": g0, "abs_gap_fp": g1,
                      "narrowed": g1 < g0, "relative_change": (g1 - g0) / g0 if g0 > 0 else math.nan,
                      "iid_change": di, "langevin_change": dl,
                      "both_worse": di > 0 and dl > 0,
                      "gain": g0 - g1 > noise and not (di > 0 and dl > 0)}
    return out


def run_md(out: Path, quick: bool = False, seed: int = 0, legacy: bool = True,
           tune_seeds: tuple[int, ...] = ()) -> tuple[dict, str]:
    """Train, evaluate and plot both systems with and without the Fokker-Planck penalty; returns
    the results and a markdown section. ``out``: the folder of run folders (reused when a
    finished run with the same config is there). Plots go to ``bench/results/`` (``out`` with
    ``quick``, so that a smoke run leaves the published figures alone)."""
    torch.set_num_threads(1)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plot_dir = out if quick else RESULTS
    t0 = time.perf_counter()
    res: dict[str, Any] = {"quick": quick, "seed": seed, "legacy": legacy,
                           "fp_ratios": list(FP_RATIOS) if legacy else [], "range_his": list(RANGE_HIS),
                           "range_ratios": list(RANGE_RATIOS), "systems": {}}
    for system in SYSTEMS:
        res["systems"][system] = run_system(system, out, quick, seed, plot_dir, legacy, tune_seeds)
        res["systems"][system]["verdict"] = verdict(res["systems"][system])
        res["systems"][system]["seed_summary"] = seed_summary(res["systems"][system])
    res["seconds"] = time.perf_counter() - t0
    return res, render_section(res)


# ---------------------------------------------------------------------------------------------
# speed against ScoreMD's own code
# ---------------------------------------------------------------------------------------------

SPEED_SETUP = "python bench/scoremd_reference.py --setup"
SPEED_KEYS = ("train_step_s", "train_fp_step_s", "sample_s", "langevin_s")  # ScoreMD's timings
SPEED_COMPILED = ("sample_s", "langevin_s")  # also timed with ours compiled (compile=True)
# our training variants (each a polydiff.train run): key -> (ScoreMD's key it is compared with,
# loss.techniques.fp_residual with fp_weight from the budget, or None: no FP penalty; train.compile).
# The log-density residual is the form of ScoreMD's residual_fp; the score residual is one order more
TRAIN_VARIANTS: dict[str, tuple[str, str | None, bool]] = {
    "train_step_s": ("train_step_s", None, False),
    "train_step_compiled_s": ("train_step_s", None, True),
    "train_fp_step_s": ("train_fp_step_s", "score", False),
    "train_fp_logd_step_s": ("train_fp_step_s", "log_density", False),
    "train_fp_logd_step_compiled_s": ("train_fp_step_s", "log_density", True),
}
# every timing of ours -> ScoreMD's timing it is compared with
OUR_TIMINGS = {**{k: v[0] for k, v in TRAIN_VARIANTS.items()}, "sample_s": "sample_s",
               "sample_compiled_s": "sample_s", "langevin_s": "langevin_s", "langevin_compiled_s": "langevin_s"}
# ScoreMD, once per round each: at our recipe's widths; at about our parameter count; its own
# defaults (get_samples' 1000 Euler-Maruyama steps at its 3 x 92 MLP), i.i.d. sampling only
SPEED_REFS = ("scoremd", "scoremd_equal_params", "scoremd_default")
SPEED_BUDGETS: dict[str, dict[str, Any]] = {
    "full": {"rounds": 2, "warmup": 3, "steps": 20, "ref_epochs": 3, "batch": 256, "num": 20_000, "sample_steps": 50,
             "sample_repeats": 2, "chains": 200, "langevin_steps": 1000, "every": 50, "dt": 1e-2, "friction": 1.0,
             "fp_weight": 1e-4, "threads": 1, "default_hidden": 92, "default_sample_steps": 1000,
             "data": {"name": "muller_brown", "n": 20_000, "test": 20_000}},
    "quick": {"rounds": 1, "warmup": 1, "steps": 2, "ref_epochs": 1, "batch": 32, "num": 64, "sample_steps": 4,
              "sample_repeats": 1, "chains": 8, "langevin_steps": 20, "every": 10, "dt": 1e-2, "friction": 1.0,
              "fp_weight": 1e-4, "threads": 1, "default_hidden": 92, "default_sample_steps": 8,
              "data": {"name": "muller_brown", "n": 512, "test": 512}},
}


def _our_steps(cfg: dict[str, Any], b: dict[str, Any], work: Path) -> tuple[Any, list[float], list[float], float]:
    """``polydiff.train`` for ``warmup + steps + 1`` steps; the checkpoint, the wall and CPU
    seconds of the timed steps (batch start to batch start; the last, which writes the checkpoint,
    left out) and the wall seconds of the first step (with ``train.compile``, its compilation)."""
    import itertools

    from common import batch_clock

    cfg = json.loads(json.dumps(cfg))
    cfg["train"].update(max_steps=b["warmup"] + b["steps"] + 1, batch_size=b["batch"], threads=b["threads"],
                        checkpoint_every=10**6, progress=False)
    clock = batch_clock()
    run = polydiff.train(cfg, work, fresh=True, callbacks=[clock], verbose=False)
    wall = [y - x for x, y in itertools.pairwise(clock.wall)]
    cpu = [y - x for x, y in itertools.pairwise(clock.cpu)][b["warmup"]:]
    return run.checkpoint, wall[b["warmup"]:], cpu, wall[0]


def _our_md_speed(b: dict[str, Any], work: Path) -> dict[str, Any]:
    """polydiff's ``md:muller_brown`` recipe (MLP energy, hidden 128, 3 residual blocks): training
    steps without and with the Fokker-Planck penalty (``loss.techniques.fp_weight``), i.i.d.
    sampling of ``num`` points in one batch (the recipe's DPM-Solver++(2M), ``sample_steps``
    steps), and ``langevin_steps`` BAOAB steps of ``chains`` chains with the forces ``-grad
    E(x, t_min)`` (:func:`polydiff_molecules.md_modality.simulate`, as ``evaluate_model`` runs
    them), started from exact Müller-Brown samples."""
    import statistics

    import yaml

    from polydiff_molecules import MDModality
    from polydiff_molecules.md import langevin_torch, mcmc_reference
    from polydiff_molecules.md_modality import simulate

    cfg = yaml.safe_load(MDModality().recipes()["muller_brown"].read_text())
    cfg["data"] = {**cfg["data"], **b["data"]}
    before = torch.get_num_threads()
    torch.set_num_threads(b["threads"])
    try:
        trained: dict[str, Any] = {}
        for key, (_, residual, compile_) in TRAIN_VARIANTS.items():
            c = {**cfg, "train": {**cfg["train"], "compile": compile_}}
            if residual is not None:
                tech = {"fp_weight": b["fp_weight"], "fp_residual": residual}
                c["loss"] = {**cfg.get("loss", {}), "techniques": tech}
            ckpt, wall, cpu, first = _our_steps(c, b, work / key[:-2])
            trained.update({key: statistics.median(wall), f"{key}_all": wall, f"{key[:-2]}_cpu_s_all": cpu,
                            f"{key[:-2]}_first_s": first})
            if key == "train_step_s":
                gen = polydiff.load(ckpt)
        sample_s, sample_cpu = timed_calls(lambda seed: gen.generate(
            b["num"], sampler="dpm++2m", steps=b["sample_steps"], seed=seed, batch_size=b["num"], progress=False),
            b["sample_repeats"])
        starts = mcmc_reference("muller_brown", b["chains"], seed=0)
        t_min = float(gen.fields["x"].process.schedule.t_min)
        lang_s, lang_cpu = timed_calls(lambda seed: simulate(
            gen, starts, chains=b["chains"], steps=b["langevin_steps"], every=b["every"], dt=b["dt"],
            friction=b["friction"], t_min=None, seed=seed, integrator=langevin_torch), b["sample_repeats"])
        compiled = {  # the same calls with the network (sampling) or the force (Langevin) compiled
            "sample": lambda seed: gen.generate(b["num"], sampler="dpm++2m", steps=b["sample_steps"], seed=seed,
                                                batch_size=b["num"], progress=False, compile=True),
            "langevin": lambda seed: simulate(gen, starts, chains=b["chains"], steps=b["langevin_steps"],
                                              every=b["every"], dt=b["dt"], friction=b["friction"], t_min=None,
                                              seed=seed, integrator=langevin_torch, compile=True)}
        comp: dict[str, Any] = {}
        for key, fn in compiled.items():
            t0 = time.perf_counter()
            fn(0)  # compiles
            comp[f"{key}_compiled_first_s"] = time.perf_counter() - t0
            wall_c, cpu_c = timed_calls(fn, b["sample_repeats"])
            comp.update({f"{key}_compiled_s": statistics.median(wall_c), f"{key}_compiled_s_all": wall_c,
                         f"{key}_compiled_cpu_s_all": cpu_c})
    finally:
        torch.set_num_threads(before)
    return {**trained, "sample_s": statistics.median(sample_s), "sample_s_all": sample_s,
            "sample_cpu_s_all": sample_cpu, "langevin_s": statistics.median(lang_s), "langevin_s_all": lang_s,
            "langevin_cpu_s_all": lang_cpu, **comp, "t_min": t_min, "model": cfg["model"],
            "recipe_sample": {k: cfg["sample"][k] for k in ("sampler", "steps")},
            "params": sum(p.numel() for p in gen.net.parameters())}


def _measure_ref(who: str, b: dict[str, Any], ours: dict[str, Any], seed: int) -> dict[str, Any] | None:
    """One ScoreMD measurement (``who`` in :data:`SPEED_REFS`) in its scratch venv, sized by our
    first measurement ``ours`` (parameters, ``t_min``); None when the reference is missing."""
    from scoremd_reference import equal_params_width, measure_scoremd

    opts = dict(batch=b["batch"], steps=b["steps"], epochs=b["ref_epochs"], num=b["num"],
                sample_repeats=b["sample_repeats"], chains=b["chains"], langevin_steps=b["langevin_steps"],
                every=b["every"], dt=b["dt"], friction=b["friction"], t_min=ours["t_min"], threads=b["threads"],
                seed=seed)
    if who == "scoremd_default":  # one timed call: each is 20x the steps of the others
        return measure_scoremd(parts=("sample",), hidden=(b["default_hidden"],) * 3,
                               **{**opts, "sample_steps": b["default_sample_steps"], "sample_repeats": 1})
    width = ours["model"]["hidden"] if who == "scoremd" else equal_params_width(ours["params"])
    return measure_scoremd(hidden=(width,) * 3, sample_steps=b["sample_steps"], **opts)


def speed(b: dict[str, Any], work: Path) -> dict[str, Any]:
    """Training steps (without and with the Fokker-Planck penalty), i.i.d. sampling and Langevin
    dynamics, polydiff against ScoreMD's own code (bench/scoremd_reference.py in its scratch
    venv), in lockstep: ``rounds`` rounds of one measurement of ours and of each ScoreMD variant
    (:data:`SPEED_REFS`), the order reversed every other round. A missing reference, or a worker
    that fails, ends the rounds with ``scoremd_missing`` saying why (the results so far are kept)."""
    import subprocess

    from common import ratio_summary, reference_missing
    from scoremd_reference import REF, VENV, find_reference, venv_python

    out: dict[str, Any] = {"ours": [], **{who: [] for who in SPEED_REFS}, "order": [], "setup": SPEED_SETUP}
    for r in range(b["rounds"]):
        order = ["ours", *SPEED_REFS] if r % 2 == 0 else [*SPEED_REFS[::-1], "ours"]
        if not out["ours"]:  # the equal-parameters width needs our parameter count first
            order = ["ours", *(w for w in order if w != "ours")]
        for who in order:
            if who == "ours":
                out["ours"].append(_our_md_speed(b, work / f"round{r}"))
                continue
            try:
                ref = _measure_ref(who, b, out["ours"][0], r)
            except (RuntimeError, subprocess.TimeoutExpired) as err:  # keep what was measured (and the MD study)
                out["scoremd_missing"] = f"ScoreMD's worker failed ({who}, round {r}): {str(err)[-500:]}"
                break
            if ref is None:
                out["scoremd_missing"] = reference_missing("ScoreMD", venv_python(), VENV, REF, find_reference())
                break
            out[who].append(ref)
        out["order"].append(order)
        o, s = out["ours"][-1], (out["scoremd"] or [{}])[-1]
        log("speed round " + str(r) + ": " + "; ".join(f"{k} ours {o[k]:.4f} s, ScoreMD {s.get(k, math.nan):.4f} s"
                                                       for k in SPEED_KEYS))
        if "scoremd_missing" in out:
            log(f"{out['scoremd_missing']}: run {SPEED_SETUP}")
            break
    out["summary"] = {}
    for who in SPEED_REFS:  # each timing of ours (eager or compiled) against ScoreMD's jitted one
        for key, ref_key in OUR_TIMINGS.items():
            theirs = [x[ref_key] for x in out[who] if ref_key in x]
            if (theirs or not out[who]) and all(key in x for x in out["ours"]):
                out["summary"][f"{who}/{key}"] = ratio_summary((x[key] for x in out["ours"]), theirs, "scoremd")
    return out


def _cpu_per_wall(rows: list[dict[str, Any]]) -> float:
    """The median process CPU / wall time of the timed training steps of ``rows``: about 1 on one
    busy thread, above 1 with more, below 1 on a shared machine."""
    pairs = [zip(row["train_step_cpu_s_all"], row["train_step_s_all"]) for row in rows]
    return float(np.median([c / w for pair in pairs for c, w in pair]))


def speed_section(r: dict[str, Any]) -> list[str]:
    """The report's section on speed against ScoreMD's own code."""
    import statistics

    b = r["budget"]
    lines = ["## Speed against ScoreMD's own code", "",
             f"Command: `{r['command']}` (once before it: `{r['setup']}`, which exports ScoreMD into /tmp/scoremd_ref "
             "and makes the venv /tmp/scoremd_venv with its JAX 0.5.2 / flax 0.10.4 pins; see "
             "`bench/scoremd_reference.py`).", ""]
    if not r["scoremd"]:
        return [*lines, f"Not measured: {r.get('scoremd_missing', 'no ScoreMD measurement')}.", ""]
    if "scoremd_missing" in r:
        lines += [f"Incomplete: {r['scoremd_missing']}.", ""]
    s0, o0, e0 = r["scoremd"][0], r["ours"][0], (r["scoremd_equal_params"] or [{}])[0]
    cpu = f"ours {_cpu_per_wall(r['ours']):.2f}, ScoreMD {_cpu_per_wall(r['scoremd']):.2f}"
    lines += [
        f"Run {r.get('date', '(date not recorded)')} at polydiff commit {r.get('commit')}; ScoreMD commit "
        f"`{s0['commit'][:12]}` (JAX {s0['versions']['jax']}, jaxlib {s0['versions']['jaxlib']}, flax "
        f"{s0['versions']['flax']}, optax {s0['versions']['optax']}), float32 CPU, {b['threads']} thread(s) "
        f"(ScoreMD's XLA pool started on {b['threads']} CPU(s); busiest thread's share of its timed calls' CPU time "
        f"{s0['thread_cpu_shares'][0]:.2f}; median CPU / wall of the training steps: {cpu}); "
        f"{len(r['ours'])} round(s) in lockstep, the order reversed every other round.", "",
        f"Ours: the `md:muller_brown` recipe ({o0['model']['layers']} residual FiLM blocks of width "
        f"{o0['model']['hidden']}, SiLU, LayerNorm, a time-embedding MLP). ScoreMD: what its `train.py` builds for "
        "Müller-Brown with `mlp/small_potential` (an energy MLP of plain Dense + swish layers, score = -grad E, its "
        f"four sinusoidal time features) at three layers of our width {s0['hidden'][0]}, and at three layers of "
        f"{e0.get('hidden', ['?'])[0]} (about our parameter count). Training: batch {b['batch']}; ours "
        f"`polydiff.train` ({b['warmup']} untimed steps, then the median of {b['steps']}, batch start to batch start, "
        "with data loading, EMA and logging); ScoreMD its own loop (`OneAfterAnother.train`: epochs of "
        f"{b['steps']} steps fused in one jitted `lax.scan`, an untimed first epoch that compiles, then the median "
        f"of {b['ref_epochs']} epochs / {b['steps']}). With FP: ours `loss.techniques.fp_weight` "
        f"{b['fp_weight']:g} with two Hutchinson probes, as the score residual (the default: a central difference "
        "in t of the score and a vector-Jacobian product, differentiated once more by the loss) or as the "
        "log-density residual (`fp_residual: log_density`: finite differences in t and x, all 7 evaluations "
        "in one batch; the compiled rows add `train.compile: true`); ScoreMD TRAIN.md's "
        "`residual_fp` (beta 5e-4, two probes, finite differences in t and x, `single_gamma`). i.i.d. sampling: "
        f"{b['num']} points in one batch, {b['sample_steps']} steps (ours DPM-Solver++(2M); ScoreMD Euler-Maruyama "
        f"as its `get_samples` composes it, jitted once). Langevin: {b['chains']} chains x {b['langevin_steps']} steps "
        f"(dt {b['dt']:g}, friction {b['friction']:g}, forces at t_min; ours BAOAB, ScoreMD its OpenMM-style "
        f"integrator with {b['every']} steps unrolled per jitted step, `simulate`'s `lax.scan`), one force call a "
        f"step each. Sampling and Langevin: the median of {b['sample_repeats']} calls after an untimed one.", "",
        "| | polydiff | ScoreMD (own code) | ours / ScoreMD | at most the reference's |", "|---|---|---|---|---|"]
    step = f"(s, batch {b['batch']})"
    names = {"train_step_s": f"training step, no FP {step}",
             "train_step_compiled_s": f"training step, no FP {step}, ours compiled (`train.compile: true`)",
             "train_fp_step_s": f"training step with the FP penalty {step}, ours the score residual",
             "train_fp_logd_step_s": f"training step with the FP penalty {step}, ours the log-density residual "
                                     "(`fp_residual: log_density`, the form of ScoreMD's `residual_fp`)",
             "train_fp_logd_step_compiled_s": f"training step with the FP penalty {step}, ours the log-density "
                                              "residual compiled",
             "sample_s": f"i.i.d. sampling (s per call of {b['num']} points, {b['sample_steps']} steps)",
             "sample_compiled_s": f"i.i.d. sampling (s per call of {b['num']} points, {b['sample_steps']} steps), "
                                  "ours compiled (`compile=True`)",
             "langevin_s": f"Langevin (s per call of {b['chains']} chains x {b['langevin_steps']} steps)",
             "langevin_compiled_s": f"Langevin (s per call of {b['chains']} chains x {b['langevin_steps']} steps), "
                                    "ours compiled (`compile=True`)"}
    for who, label in (("scoremd", f"ScoreMD at our widths (3 x {s0['hidden'][0]})"),
                       ("scoremd_equal_params", f"ScoreMD at about our parameters (3 x {e0.get('hidden', ['?'])[0]})")):
        if not r[who]:
            continue
        p0 = r[who][0]
        lines.append(f"| **{label}**: parameters | {o0['params']:,} | {p0['params']:,} | | |")
        for key, name in names.items():
            v = r["summary"].get(f"{who}/{key}")
            if v is None:  # a timing an older run did not take
                continue
            if "compiled" in key:
                first = statistics.median(row[f"{key[:-2]}_first_s"] for row in r["ours"])
                name += f"; its first {'step' if key.startswith('train') else 'call'}, compiling: {_f(first, 1)} s"
            lines.append(f"| {name} | {_f(v['ours'], 4)} | {_f(v['scoremd'], 4)} | {_f(v['ratio'], 2)}x | "
                         f"{'yes' if v['at_most'] else 'no'} |")
        comp = {k: statistics.median(row["compile_s"][k] for row in r[who]) for k in p0["compile_s"]}
        parts = ", ".join(f"{name} {_f(comp[k], 1)}" for k, name in (("train", "training"), ("train_fp", "with FP"),
                                                                     ("sample", "sampling"), ("langevin", "Langevin")))
        lines.append(f"| one-time compilation, once per run (s: {parts}) | none (eager) | {_f(sum(comp.values()), 1)} "
                     "| | |")
    if r["scoremd_default"]:
        d0 = r["scoremd_default"][0]
        v = r["summary"]["scoremd_default/sample_s"]
        rs = o0["recipe_sample"]
        lines.append(f"| **each side's defaults**: i.i.d. sampling of {b['num']} points (ours: {b['sample_steps']} "
                     f"DPM-Solver++(2M) steps, the recipe's {rs['sampler']} x {rs['steps']}; ScoreMD: `get_samples`' "
                     f"{d0['sample_steps']} "
                     f"Euler-Maruyama steps, its 3 x {d0['hidden'][0]} MLP; compilation "
                     f"{_f(d0['compile_s']['sample'], 1)} s once; one timed call a round) | {_f(v['ours'], 4)} | "
                     f"{_f(v['scoremd'], 4)} | {_f(v['ratio'], 2)}x | {'yes' if v['at_most'] else 'no'} |")
    return [*lines, ""]


# ---------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------


def _f(v: Any, d: int = 3) -> str:
    return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.{d}f}"


def render_section(res: dict[str, Any]) -> str:
    lines = ["## Energy-based MD: i.i.d. sampling against Langevin dynamics, with and without the Fokker-Planck "
             "penalty", ""]
    if res["quick"]:
        lines += ["**Quick smoke run (`--quick`): tiny budgets, not a result.**", ""]
    lines += ["One energy model per system and setting: i.i.d. samples by reverse diffusion (DPM-Solver++(2M), 50 "
              "steps) and Langevin frames (BAOAB, kT = 1 in model units, friction 1, forces `-grad E(x, t_min)` at "
              "the process's `t_min = 1e-3`, chains started from reference frames), both scored by the "
              "Jensen-Shannon divergence (nats) against the reference; the floor `data` is the training set "
              "scored the same way; gap = Langevin - i.i.d. Each model is a base model fine-tuned for the same "
              "number of steps without the penalty (no FP) or with it, see the protocol in "
              "`bench/molecules_md.py`. Penalty families: "
              + ("*full range, raw* (`fp_weight` alone: times from the loss's time density, squared score "
                 f"residual), ratios {', '.join(map(str, res['fp_ratios']))}; " if res["fp_ratios"] else "")
              + "*restricted, normalised* (`fp_t_range: [t_min, hi]` with hi in "
              f"{', '.join(map(str, res['range_his']))}, times log-uniform in the range, `fp_normalize: true`: "
              "the residual times sigma^3 / g^2, which keeps a score error of the score's own size O(1) at every "
              f"time), ratios {', '.join(map(str, res['range_ratios']))}. Each family's weight is calibrated on the "
              "base model: w = ratio x DSM loss / median batch penalty of that family.", ""]
    if not res["fp_ratios"]:
        lines += ["The full-range raw arms were not rerun (`--no-legacy`); their last results are in the git "
                  "history of this file.", ""]
    for system, sr in res["systems"].items():
        s = sr["settings"]
        ev = s["evaluate"]
        pep = system == "alanine"
        key = "js_phi_psi" if pep else "js"
        title = "Müller-Brown (kT = 23)" if system == "muller_brown" else "alanine dipeptide (5 beads, (phi, psi))"
        cals = "; ".join(f"*{fam}*: median {c['penalty_median']:.3g} (mean {c['penalty_mean']:.3g}, max "
                         f"{c['penalty_max']:.3g}) -> w = " + ", ".join(f"{w:.3g}" for w in c["weights"])
                         for fam, c in sr["calibration"].items())
        dsm = next(iter(sr["calibration"].values()))["dsm_loss"]
        lines += [f"### {title}", "",
                  f"![{system}](molecules_md_{system}.png)", "",
                  f"Model `{s['model']}`, loss `{s['loss']}`, batch {s['batch']}; base {s['base_steps']} steps at lr "
                  f"{s['lr']:g}, then {s['tune_steps']} fine-tuning steps at lr {s['tune_lr']:g}. Evaluation: "
                  f"{ev['num']} i.i.d. samples; {ev['chains']} chains x {ev['langevin']} frames, one every "
                  f"{ev['every']} steps of dt = {ev['dt']:g} ({ev['chains'] * ev['langevin']} frames against "
                  f"{sr['reference_frames']} reference frames). Calibration on the base model (DSM loss {dsm:.3g}), "
                  f"batch penalty per family: {cals}.", ""]
        head = ("| setting | fp_weight | steps | train s (base + tune) | eval s | i.i.d. JS | Langevin JS | data JS "
                "| gap | Langevin JS, t_min 0.01 |")
        sep = "|---|---|---|---|---|---|---|---|---|---|"
        if pep:
            head += " phi > 0: data / i.i.d. / Langevin |"
            sep += "---|"
        lines += [head, sep]
        for label, a in sr["arms"].items():
            m = a["metrics"]
            tr = a["train_seconds"]
            row = (f"| {label} | {a['fp_weight']:.3g} | {a['steps']['base']} + {a['steps']['tune']} | "
                   f"{tr['base']:.0f} + {tr['tune']:.0f}{' (reused)' if a['reused'] else ''} | "
                   f"{a['eval_seconds']:.0f} | {_f(m[f'iid_{key}'])} | {_f(m[f'langevin_{key}'])} | "
                   f"{_f(m[f'data_{key}'])} | {m['langevin_minus_iid']:+.3f} | "
                   f"{_f(a['t_min_check'][f'langevin_{key}'])} |")
            if pep:
                row += (f" {m['data_phi_positive']:.3f} / {m['iid_phi_positive']:.3f} / "
                        f"{m['langevin_phi_positive']:.3f} |")
            lines.append(row)
        if pep:
            lines += ["", f"Reference (held-out end of the trajectory) phi > 0 share: "
                      f"{sr['reference_phi_positive']:.3f}; `data` is the training part."]
        lines += ["", "Penalty on the same calibration batches after fine-tuning (median; *raw*: full range, "
                  "unnormalised, as in the calibration of that family; *own*: the arm's restricted normalised "
                  "penalty), denoising loss, Langevin stability and drift:", "",
                  "| setting | penalty median raw / own | DSM loss | Langevin JS first / second half | "
                  "non-finite frames | "
                  + ("bond abs(d - d_ref) i.i.d. / Langevin (A) |" if pep else "max abs(x) Langevin |"),
                  "|---|---|---|---|---|---|"]
        for label, a in sr["arms"].items():
            lc, ic = a["langevin_checks"], a["iid_checks"]
            extra = (f"{_f(ic['bond_abs_dev'])} / {_f(lc['bond_abs_dev'])}" if pep else _f(lc["max_abs"], 2))
            own = f"{a['after_own']['penalty_median']:.3g}" if a.get("after_own") else "-"
            lines.append(f"| {label} | {a['after']['penalty_median']:.3g} / {own} | {a['after']['dsm_loss']:.3f} | "
                         f"{_f(a['langevin_js_first_half'])} / {_f(a['langevin_js_second_half'])} | "
                         f"{lc['nonfinite']:.3f} | {extra} |")
        ic = sr["arms"]["no FP"]["integrator_check"]
        lines += ["", f"Integrator check ({ic['kind']}): Langevin JS {_f(ic[f'langevin_{key}'])}"
                  + (f", phi > 0 {ic['langevin_phi_positive']:.3f}, bond abs(d - d_ref) "
                     f"{_f(ic['checks']['bond_abs_dev'])} A" if pep else "")
                  + f" (no-FP data floor {_f(sr['arms']['no FP']['metrics'][f'data_{key}'])}).", ""]
        noise = noise_yardstick(sr)
        for label, v in sr["verdict"].items():
            word = "narrowed" if v["narrowed"] else "did NOT narrow"
            tail = (" (both divergences worse: no gain)." if v["both_worse"] else
                    " (beyond the noise yardstick, without both divergences worse: a gain)." if v["gain"] else
                    " (within the noise yardstick)." if v["narrowed"] else ".")
            lines.append(f"- **{label}** {word} the gap: |gap| {v['abs_gap_no_fp']:.3f} -> {v['abs_gap_fp']:.3f} "
                         f"({100 * v['relative_change']:+.0f} %); i.i.d. JS {v['iid_change']:+.3f}, Langevin JS "
                         f"{v['langevin_change']:+.3f} against no FP" + tail)
        lines += ["", "The verdicts above use one seed per setting: as a yardstick of the noise, the no-FP Langevin "
                  f"JS of the two halves of its frames differ by {noise:.3f} (each half has half the frames, so both "
                  "sit above the full estimate).", ""]
        ss = sr.get("seed_summary") or {}
        if ss:
            lines += [f"Across fine-tuning seeds {sr['tune_seeds']} (one base model; each seed fine-tunes and "
                      "evaluates again; the change of |gap| is paired by seed, mean +- standard error; *narrowed* "
                      "when it is below zero by more than two standard errors):", "",
                      "| setting | seeds | i.i.d. JS | Langevin JS | gap | change of abs(gap) vs no FP | "
                      "i.i.d. / Langevin JS change | narrowed |", "|---|---|---|---|---|---|---|---|"]
            for label, e in ss.items():
                pm = {k: f"{e[k][0]:.3f} +- {e[k][1]:.3f}" for k in ("iid", "langevin", "gap")}
                ch = (f"{e['abs_gap_change'][0]:+.3f} +- {e['abs_gap_change'][1]:.3f} | "
                      f"{e['iid_change']:+.3f} / {e['langevin_change']:+.3f} | "
                      f"{'yes' if e['narrowed'] else 'no'}") if "abs_gap_change" in e else "- | - | -"
                lines.append(f"| {label} | {e['n']} | {pm['iid']} | {pm['langevin']} | {pm['gap']} | {ch} |")
            lines.append("")
    lines.append("**Summary** (per penalty family, over systems x weights):")
    lines.append("")
    fams: dict[str, list[dict[str, Any]]] = {}
    for sr in res["systems"].values():
        for v in sr["verdict"].values():
            fams.setdefault(v["family"], []).append(v)
    for fam, vs in fams.items():
        lines.append(f"- *{fam}*: narrowed |gap| in {sum(v['narrowed'] for v in vs)} of {len(vs)}, by more than "
                     f"the noise yardstick without both divergences worse in {sum(v['gain'] for v in vs)}; both "
                     f"divergences improved in {sum(v['iid_change'] < 0 and v['langevin_change'] < 0 for v in vs)}, "
                     f"both worse in {sum(v['both_worse'] for v in vs)}.")
    lines += ["", f"Total wall time {res['seconds'] / 60:.1f} min (one thread).", ""]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a ~1-minute smoke run (not a result; nothing published)")
    p.add_argument("--runs", type=Path, help="folder of the run folders (finished runs with the same config are "
                                              "reused); default /tmp/polydiff-bench-molecules-md")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-legacy", action="store_true", help="skip the full-range raw penalty arms (ratios "
                                                             f"{', '.join(map(str, FP_RATIOS))}): about 9 minutes less")
    p.add_argument("--tune-seeds", default="", help="extra fine-tuning seeds (comma-separated) for the arms "
                                                     f"{', '.join(SEED_ARMS)}, from the same base model")
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma list of {', '.join(PARTS)}: md (the FP study "
                   "above), speed (against ScoreMD's own code); a part not run keeps its previous results")
    args = p.parse_args(argv)
    parts = [s.strip() for s in args.parts.split(",") if s.strip()]
    if not parts or set(parts) - set(PARTS):
        p.error(f"--parts: a comma list of {', '.join(PARTS)}")
    runs = args.runs or Path("/tmp/polydiff-bench-molecules-md" + ("-quick" if args.quick else ""))
    tune_seeds = tuple(int(v) for v in args.tune_seeds.split(",") if v.strip())
    command = command_line("molecules_md.py", argv)
    new: dict[str, Any] = {"environment": environment(command)}
    if "md" in parts:
        new.update(run_md(runs, quick=args.quick, seed=args.seed, legacy=not args.no_legacy, tune_seeds=tune_seeds)[0])
    if "speed" in parts:
        import tempfile

        b = SPEED_BUDGETS["quick" if args.quick else "full"]
        log("speed against ScoreMD")
        with tempfile.TemporaryDirectory() as tmp:
            new["speed"] = {**speed(b, Path(tmp)), "budget": b, "command": command,
                            "commit": new["environment"]["commit"][:12],
                            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    path = RESULTS / "molecules_md.json"
    previous = json.loads(path.read_text()) if path.is_file() and not args.quick else {}
    res = combine(previous, new, parts)
    if args.quick:
        print(render(res))
        return 0
    publish("molecules_md", res, render(res))
    return 0


def combine(previous: dict[str, Any], new: dict[str, Any], parts: list[str]) -> dict[str, Any]:
    """The results to publish: ``new`` (the parts run) with the previous results of the parts not
    run. The MD study's results are the top-level keys with its header (``environment``): when
    only the speed part ran they stay the previous run's, as does the header; the speed part is
    ``speed``, which carries its own command, commit and date."""
    if "md" in parts or "systems" not in previous:
        res = {**new}
        if "speed" not in parts and "speed" in previous:
            res["speed"] = previous["speed"]
        return res
    return {**{k: v for k, v in previous.items() if k != "speed"}, "speed": new.get("speed", previous.get("speed"))}


def render(res: dict[str, Any]) -> str:
    """The markdown report: the header, the MD study (when its results are there) and the speed part."""
    text = "\n".join(header("Molecules: energy-based MD with and without the Fokker-Planck penalty",
                            res["environment"]))
    if "systems" in res:
        text += render_section(res)
    if res.get("speed"):
        text += "\n".join(speed_section(res["speed"])) + "\n"
    return text


if __name__ == "__main__":
    sys.exit(main())
