"""Our molecule, forecast, graph and crystal metrics against the reference code's own functions, on fresh inputs.

The shared fixtures (``mol_stability``, ``forecast_metrics``, ``graph_mmd``, ``crystal_metrics``) hold values for
fixed inputs, and the tests reproduce them. This benchmark goes further: it draws new inputs from a seed
(real structures from ``../shared/data``, noised, sheared, shrunk, re-typed, randomly assembled), runs the
reference code and ours on the same arrays, and reports every disagreement::

    python bench/metrics_reference.py --setup          # export the two references (idempotent)
    python bench/metrics_reference.py --seed 1         # compare; writes bench/results/metrics_reference.*

* molecules: EDM (github.com/ehoogeboom/e3_diffusion_for_molecules), ``qm9.analyze.check_stability`` and
  ``qm9.rdkit_functions.BasicMolecularMetrics.compute_validity``, molecule by molecule in float32 and
  float64, then the pooled summaries; against ``polydiff_molecules.metrics``.
* forecasts: gluonts 0.17.0's ``Evaluator`` (called as the forecast_metrics fixture was) and properscoring's
  ``crps_ensemble``, in a scratch venv with the fixture's versions (``$GLUONTS_VENV``, /tmp/gluonts_venv), on
  seeded cases: 1 to 200 sample paths, seasons longer than the history, negative levels, biased and
  too-narrow samples, a constant history (infinite MASE); against ``polydiff_timeseries.metrics``.
* graphs: GDSS (github.com/harryjo97/GDSS), ``evaluation.stats`` degree / clustering / orbit / spectral MMD
  with ``utils.loader.load_eval_settings``' kernels, ORCA compiled from its ``orca.cpp``; seeded sets of
  community, Erdos-Renyi, Barabasi-Albert, tree, cycle-with-chords and edgeless / clique / star graphs against
  the community set; against ``polydiff_graphs.metrics.graph_mmds``. It runs in a scratch venv with the
  graph_mmd fixture's versions (GDSS's own networkx 2.6 pin does not run on this scipy) and GDSS's export
  from ``bench/gdss_reference.py``.
* crystals: CDVAE (github.com/txie-93/cdvae), ``scripts/compute_metrics.Crystal`` (construction, SMACT and
  distance validity, CrystalNN / Magpie fingerprints), ``eval_utils.compute_cov`` and ``GenEval``'s
  distribution metrics over all valid crystals; against ``polydiff_crystals.metrics``, fingerprints
  included. Real rows are read with CDVAE's own ``build_crystal`` (Niggli-reduced, as its data configs do).

EDM and CDVAE run in this project's interpreter, in a worker process: their metric code needs nothing
we do not install, and the versions are the fixtures' (smact 2.2.1, matminer 0.10.1). CDVAE's training
imports (hydra, torch_geometric, torch_scatter, p_tqdm, its data modules) are stand-ins that raise if
called; the metric path never calls them. ``--setup`` exports bare git mirrors (``$EDM_MIRROR``,
``$CDVAE_MIRROR``, defaults under /work/.mirror) into ``$EDM_METRICS_REF`` / ``$CDVAE_METRICS_REF``
(default /tmp/edm_metrics, /tmp/cdvae_metrics), exports GDSS as ``bench/gdss_reference.py`` does, makes
GDSS's metric venv (``$GDSS_METRICS_VENV``, default /tmp/gdss_metrics_venv) and compiles ORCA with g++.
Nothing of the three codes is copied here.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    command_line,
    environment,
    export_mirror,
    header,
    publish,
    reference_commit,
    run_worker,
)

EDM_MIRROR = Path(os.environ.get("EDM_MIRROR", "/work/.mirror/ehoogeboom+e3_diffusion_for_molecules/repo"))
CDVAE_MIRROR = Path(os.environ.get("CDVAE_MIRROR", "/work/.mirror/txie-93+cdvae/repo"))
EDM_REF = Path(os.environ.get("EDM_METRICS_REF", "/tmp/edm_metrics"))
CDVAE_REF = Path(os.environ.get("CDVAE_METRICS_REF", "/tmp/cdvae_metrics"))
GLUONTS_VENV = Path(os.environ.get("GLUONTS_VENV", "/tmp/gluonts_venv"))
# the forecast_metrics fixture's versions
GLUONTS_PACKAGES = ["numpy==2.4.6", "pandas==2.3.3", "gluonts==0.17.0", "properscoring==0.1", "packaging"]
GDSS_REF = Path(os.environ.get("GDSS_REF", "/tmp/gdss_ref"))  # bench/gdss_reference.py's export
GDSS_VENV = Path(os.environ.get("GDSS_METRICS_VENV", "/tmp/gdss_metrics_venv"))
# the graph_mmd fixture's versions; GDSS's own pins (networkx 2.6) do not run on this scipy
GDSS_PACKAGES = ["numpy==2.4.6", "scipy==1.17.1", "networkx==3.6.1", "pyemd==1.1.0", "scikit-learn", "dill", "tqdm"]
MARKER = ".reference_commit"
FLAGS = ("constructed", "comp_valid", "struct_valid", "valid", "fingerprint_ok")
# CrystalNN branches on angle thresholds, so last-bit BLAS differences can move a fingerprint; the fixture was
# made with OpenBLAS' Haswell kernels, which our fingerprint worker pins too: CDVAE's worker runs them as well
REFERENCE_BLAS = "Haswell"
QM9 = "HCNOF"
# elements for re-typed and random crystals: common cations, anions and a few metals
ELEMENTS = (1, 3, 5, 6, 7, 8, 9, 11, 12, 13, 14, 15, 16, 17, 19, 20, 22, 26, 29, 30, 31, 34, 35, 38, 40, 41, 50, 53,
            55, 56, 57, 79, 82, 83)  # fmt: skip


def setup() -> None:
    """Export the parts of the three repositories the metrics need; GDSS's scratch venv; compile ORCA."""
    import subprocess

    from common import scratch_venv
    from gdss_reference import export_reference, find_reference

    if find_reference() is None:
        export_reference()
    scratch_venv(GDSS_VENV, "import pyemd, networkx, sklearn, dill, tqdm", GDSS_PACKAGES)
    scratch_venv(GLUONTS_VENV, "import gluonts.evaluation, pandas, properscoring", GLUONTS_PACKAGES)
    orca = GDSS_REF / "evaluation" / "orca"
    if not (orca / "orca").is_file():
        subprocess.run(["g++", "-O2", "-std=c++11", "-o", str(orca / "orca"), str(orca / "orca.cpp")], check=True)
    export_mirror(EDM_MIRROR, EDM_REF, "ehoogeboom/e3_diffusion_for_molecules", MARKER, "EDM_MIRROR",
                  "metrics_reference.py", paths=("qm9", "configs"))  # fmt: skip
    export_mirror(CDVAE_MIRROR, CDVAE_REF, "txie-93/cdvae", MARKER, "CDVAE_MIRROR", "metrics_reference.py",
                  paths=("cdvae/common", "cdvae/__init__.py", "scripts"))  # fmt: skip


# ------------------------------------------------------------------------------------------------ inputs


def read_xyz(path: Path) -> list[tuple[list[str], list[list[float]]]]:
    """Frames of an (ext)XYZ file as (elements, positions in Å); extra columns are ignored."""
    lines, frames, i = path.read_text().splitlines(), [], 0
    while i < len(lines):
        if not lines[i].strip():
            i += 1
            continue
        n = int(lines[i])
        rows = [line.split() for line in lines[i + 2 : i + 2 + n]]
        frames.append(([r[0] for r in rows], [[float(x) for x in r[1:4]] for r in rows]))
        i += 2 + n
    return frames


def molecule_inputs(frames: list, seed: int, n_random: int = 300) -> list[dict[str, Any]]:
    """Every frame; every frame with Gaussian noise at eight scales; one atom re-typed per frame; random
    clouds of QM9 elements (1-29 atoms, as many as QM9 has, in boxes of 1.5-6 Å)."""
    rs = np.random.RandomState(seed)
    out = [{"name": f"frame{k}", "elements": el, "positions": pos} for k, (el, pos) in enumerate(frames)]
    for sigma in (0.01, 0.03, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5):
        for k, (el, pos) in enumerate(frames):
            noisy = np.round(np.asarray(pos) + rs.normal(0, sigma, (len(el), 3)), 10)
            out.append({"name": f"frame{k}+N(0,{sigma})", "elements": el, "positions": noisy.tolist()})
    for k, (el, pos) in enumerate(frames):
        retyped = list(el)
        retyped[rs.randint(len(el))] = str(rs.choice(list(QM9)))
        out.append({"name": f"frame{k} retyped", "elements": retyped, "positions": pos})
    for k in range(n_random):
        n = rs.randint(1, 30)
        elements = [str(e) for e in rs.choice(list(QM9), n, p=[0.45, 0.3, 0.1, 0.1, 0.05])]
        positions = rs.uniform(0, rs.uniform(1.5, 6), (n, 3))
        out.append({"name": f"random{k}", "elements": elements, "positions": positions.tolist()})
    return out


def broken_crystals(base: list[dict[str, Any]], count: int, rs: np.random.RandomState) -> list[dict[str, Any]]:
    """Damaged copies of ``base`` crystals (CDVAE arrays), cycling through six kinds: one site re-typed, one
    site moved 0.3-0.7 Å from another (often across a cell boundary), heavy shear, lengths shrunk to
    10-60 % (cells under 0.1 Å^3 among them), a random composition, all sites jittered. A damaged cell is
    never so small that CrystalNN would need minutes on it (CDVAE would try for ever on a flat cell; ours
    skips it with a warning): a degenerate shear is drawn again, and lengths are grown back to that limit."""
    from pymatgen.core import Lattice

    out = []
    for i in range(count):
        d = {k: np.array(v, dtype=float) for k, v in base[rs.randint(len(base))].items()}
        d["atom_types"] = d["atom_types"].astype(int)
        kind, n = i % 6, len(d["atom_types"])
        if kind == 0:
            d["atom_types"][rs.randint(n)] = rs.choice(ELEMENTS)
        elif kind == 1 and n > 1:
            a, b = rs.choice(n, 2, replace=False)
            lattice = Lattice.from_parameters(*d["lengths"], *d["angles"])
            step = rs.randn(3)
            step *= rs.uniform(0.3, 0.7) / np.linalg.norm(step)
            d["frac_coords"][a] = (d["frac_coords"][b] + lattice.get_fractional_coords(step) + rs.randint(-1, 2, 3)) % 1
        elif kind == 2:
            volume = 0.0
            while not volume > 0.2 * np.prod(d["lengths"]):
                d["angles"] = np.array([rs.uniform(60, 120), rs.uniform(100, 170), rs.uniform(60, 120)])
                volume = Lattice.from_parameters(*d["lengths"], *d["angles"]).volume
        elif kind == 3:
            d["lengths"] = d["lengths"] * rs.uniform(0.1, 0.6)
        elif kind == 4:
            d["atom_types"] = rs.choice(ELEMENTS[: rs.randint(4, len(ELEMENTS))], n)
        else:
            d["frac_coords"] = (d["frac_coords"] + rs.normal(0, 0.08, d["frac_coords"].shape)) % 1
        smallest = n * n * 4 / 3 * math.pi * 7.0**3 / 1.0e6  # CrystalNN pairs at 7 A: 1e6 < CRYSTALNN_BUDGET
        volume = Lattice.from_parameters(*d["lengths"], *d["angles"]).volume
        d["lengths"] = d["lengths"] * max(1.0, (smallest / volume) ** (1 / 3))
        out.append({k: v.tolist() for k, v in d.items()})
    return out


def crystal_cases(rows: Callable[[str, str, int, int], list], seed: int, n_broken: int) -> dict[str, dict]:
    """The compared cases: (generated, reference, CDVAE cutoffs). ``rows(dataset, split, start, stop)``
    reads CDVAE arrays from the shared CSVs (through CDVAE's ``build_crystal``, in the worker)."""
    rs = np.random.RandomState(seed)
    perov_t, perov_v = rows("perov_5", "test", 0, 50), rows("perov_5", "val", 0, 50)
    carbon_t, carbon_v = rows("carbon_24", "test", 40, 70), rows("carbon_24", "val", 40, 70)
    return {
        "perov_5 test 0-49 vs val 0-49": {"gen": perov_t, "ref": perov_v, "cutoffs": "perovskite"},
        f"perov_5 test 0-49 + {n_broken} damaged vs val 0-49": {
            "gen": perov_t + broken_crystals(perov_t, n_broken, rs), "ref": perov_v, "cutoffs": "perovskite"},
        f"carbon_24 test 40-69 + {n_broken // 3} damaged vs val 40-69": {
            "gen": carbon_t + broken_crystals(carbon_t, n_broken // 3, rs), "ref": carbon_v, "cutoffs": "carbon"},
        f"mixed + {n_broken // 2} damaged vs perov_5 val (mp20 cutoffs)": {
            "gen": perov_t[:20] + carbon_t[:10] + broken_crystals(perov_t, n_broken // 2, rs), "ref": perov_v,
            "cutoffs": "mp20"},
    }  # fmt: skip


def graph_sets(seed: int, size: int = 20) -> dict[str, list[dict[str, Any]]]:
    """Seeded sets of ``size`` graphs as ``{"n", "edges"}``: GDSS-style two-community graphs (the reference),
    sparse Erdos-Renyi graphs (isolated nodes), Barabasi-Albert graphs, random trees, cycles with chords,
    edgeless graphs and single nodes mixed with small cliques."""
    import networkx as nx

    rs = np.random.RandomState(seed)

    def community() -> nx.Graph:
        sizes = rs.randint(5, 10, 2)
        g = nx.disjoint_union(*(nx.gnp_random_graph(int(k), 0.7, seed=int(rs.randint(2**31))) for k in sizes))
        for _ in range(rs.randint(1, 4)):
            g.add_edge(int(rs.randint(sizes[0])), int(sizes[0] + rs.randint(sizes[1])))
        return g

    def cycle_chords() -> nx.Graph:
        g = nx.cycle_graph(int(rs.randint(8, 30)))
        for _ in range(rs.randint(0, 4)):
            u, v = rs.choice(len(g), 2, replace=False)
            g.add_edge(int(u), int(v))
        return g

    def odd_one() -> nx.Graph:
        kind = rs.randint(3)
        return nx.empty_graph(int(rs.randint(2, 12))) if kind == 0 else nx.complete_graph(int(rs.randint(1, 6))) \
            if kind == 1 else nx.star_graph(int(rs.randint(2, 10)))

    families = {
        "community": community,
        "erdos_renyi": lambda: nx.gnp_random_graph(int(rs.randint(5, 40)), float(rs.uniform(0.03, 0.4)),
                                                   seed=int(rs.randint(2**31))),
        "barabasi_albert": lambda: nx.barabasi_albert_graph(int(rs.randint(6, 40)), int(rs.randint(1, 4)),
                                                            seed=int(rs.randint(2**31))),
        "trees": lambda: nx.random_labeled_tree(int(rs.randint(2, 40)), seed=int(rs.randint(2**31))),
        "cycles_with_chords": cycle_chords,
        "edgeless_and_cliques": odd_one,
    }  # fmt: skip
    return {name: [{"n": g.number_of_nodes(), "edges": [list(e) for e in g.edges()]} for g in (make() for _ in
            range(size))] for name, make in families.items()}  # fmt: skip


def forecast_cases(seed: int) -> dict[str, dict[str, Any]]:
    """Seeded forecasting cases: (history, target, samples, season) with different sample counts (1 to 200,
    odd and even), horizons, seasons longer than the history, negative levels, biased and too-narrow
    samples, and a constant history (zero seasonal error: MASE is infinite)."""
    rs = np.random.RandomState(seed)

    def case(n: int, hist: int, horizon: int, samples: int, season: int, level: float, spread: float,
             bias: float = 0.0, constant: bool = False) -> dict[str, Any]:
        t = np.arange(hist + horizon)
        phase = rs.uniform(0, 2 * np.pi, (n, 1))
        series = level + 3 * np.sin(2 * np.pi * t / max(season, 2) + phase) + rs.normal(0, 1, (n, t.size))
        if constant:
            series[0, :hist] = level
        mean = level + 3 * np.sin(2 * np.pi * t[hist:] / max(season, 2) + phase) + bias
        paths = mean[:, None, :] + spread * rs.standard_t(4, (n, samples, horizon))
        return {"history": series[:, :hist].tolist(), "target": series[:, hist:].tolist(),
                "samples": paths.tolist(), "season": season}  # fmt: skip

    return {
        "calibrated, 100 samples, season 24": case(5, 168, 24, 100, 24, 20.0, 1.0),
        "biased, 50 samples": case(4, 96, 12, 50, 12, 50.0, 1.0, bias=4.0),
        "too narrow, 7 samples": case(3, 60, 30, 7, 7, 10.0, 0.2),
        "one sample path": case(3, 48, 10, 1, 24, 5.0, 1.0),
        "two sample paths, negative level": case(3, 48, 10, 2, 12, -30.0, 2.0),
        "season longer than the history": case(3, 10, 8, 20, 24, 8.0, 1.0),
        "200 samples, horizon 1": case(6, 30, 1, 200, 1, 3.0, 1.5),
        "a constant history (MASE infinite)": case(3, 40, 8, 30, 4, 6.0, 1.0, constant=True),
    }


# ------------------------------------------------------------------------------------------------ the references


def _stand_ins() -> None:
    """Modules CDVAE's metric scripts import for training only; each raises if called."""
    import types

    def refuse(*_: Any, **__: Any) -> None:
        raise RuntimeError("a training-only stand-in was called")

    for name, attrs in {"hydra": {"initialize_config_dir": refuse}, "hydra.utils": {},
                        "hydra.experimental": {"compose": refuse}, "torch_geometric": {},
                        "torch_geometric.data": {"DataLoader": refuse, "Data": refuse},
                        "torch_scatter": {"scatter": refuse}, "p_tqdm": {"p_map": refuse, "p_umap": refuse},
                        "cdvae.pl_data": {}, "cdvae.pl_data.dataset": {"TensorCrystDataset": refuse},
                        "cdvae.pl_data.datamodule": {"worker_init_fn": refuse}}.items():  # fmt: skip
        module = types.ModuleType(name)
        module.__dict__.update(attrs)
        sys.modules[name] = module


def reference_molecules(molecules: list[dict[str, Any]]) -> dict[str, Any]:
    """EDM's per-molecule stability and validity (float32 and float64) and its float32 summaries."""
    import torch
    from configs.datasets_config import get_dataset_info
    from qm9.analyze import check_stability
    from qm9.rdkit_functions import BasicMolecularMetrics
    from rdkit import RDLogger

    RDLogger.DisableLog("rdApp.*")
    info = get_dataset_info("qm9", remove_h=False)
    metrics = BasicMolecularMetrics(info, dataset_smiles_list=[])
    per, stable32, valid32 = [], [], []
    for mol in molecules:
        types = np.array([info["atom_encoder"][e] for e in mol["elements"]])
        row = {}
        for dtype, suffix in ((torch.float32, "32"), (torch.float64, "64")):
            pos = torch.tensor(mol["positions"], dtype=dtype)
            stable, n_stable, _ = check_stability(pos, types, info)
            smiles, _ = metrics.compute_validity([(pos, torch.tensor(types))])
            row.update({f"stable{suffix}": bool(stable), f"n_stable{suffix}": int(n_stable),
                        f"smiles{suffix}": smiles[0] if smiles else None})  # fmt: skip
        per.append(row)
        stable32.append((row["stable32"], row["n_stable32"], len(types)))
        valid32.extend([row["smiles32"]] if row["smiles32"] is not None else [])
    summary = {"mol_stable": float(np.mean([s[0] for s in stable32])),
               "atm_stable": sum(s[1] for s in stable32) / sum(s[2] for s in stable32),
               "validity": len(valid32) / len(molecules),
               "uniqueness": len(set(valid32)) / len(valid32) if valid32 else math.nan}  # fmt: skip
    return {"per": per, "summary": summary}


def reference_crystals(seed: int, n_broken: int) -> dict[str, Any]:
    """CDVAE's flags, fingerprints, COV and distribution metrics for every case, with the cases' inputs."""
    _stand_ins()
    import compute_metrics as cm
    import pandas as pd
    from cdvae.common.data_utils import build_crystal
    from eval_utils import compute_cov

    data = Path(os.environ.get("POLYDIFF_SHARED", Path(__file__).resolve().parents[2] / "shared")) / "data"

    def rows(dataset: str, split: str, start: int, stop: int) -> list[dict[str, Any]]:
        frame = pd.read_csv(data / "crystals_cdvae" / dataset / f"{split}.csv")
        out = []
        for cif in frame["cif"].iloc[start:stop]:
            s = build_crystal(cif, niggli=True, primitive=False)
            out.append({"frac_coords": s.frac_coords.tolist(), "atom_types": list(s.atomic_numbers),
                        "lengths": list(s.lattice.parameters[:3]), "angles": list(s.lattice.parameters[3:])})
        return out

    def crystal(arrays: dict[str, Any]) -> Any:
        return cm.Crystal({"frac_coords": np.array(arrays["frac_coords"], dtype=float),
                           "atom_types": np.array(arrays["atom_types"], dtype=int),
                           "lengths": np.array(arrays["lengths"], dtype=float),
                           "angles": np.array(arrays["angles"], dtype=float)})  # fmt: skip

    out = {}
    for name, case in crystal_cases(rows, seed, n_broken).items():
        gen, ref = [crystal(a) for a in case["gen"]], [crystal(a) for a in case["ref"]]
        cut = cm.COV_Cutoffs[case["cutoffs"]]
        cov, _ = compute_cov(gen, ref, struc_cutoff=cut["struc"], comp_cutoff=cut["comp"])
        ev = cm.GenEval.__new__(cm.GenEval)  # its __init__ draws 1000 valid crystals at random
        ev.crys, ev.gt_crys, ev.valid_samples = gen, ref, [c for c in gen if c.valid]
        metrics = {**ev.get_validity(), **cov}
        if len(ev.valid_samples) > 1:
            for part in (ev.get_comp_diversity, ev.get_struct_diversity, ev.get_density_wdist, ev.get_num_elem_wdist):
                metrics.update(part())
        per = [{"constructed": c.constructed, "comp_valid": bool(c.comp_valid), "struct_valid": bool(c.struct_valid),
                "valid": bool(c.valid), "fingerprint_ok": c.struct_fp is not None,
                "struct_fp": None if c.struct_fp is None else list(map(float, c.struct_fp)),
                "comp_fp": None if c.comp_fp is None else [float(x) for x in c.comp_fp]} for c in gen]  # fmt: skip
        out[name] = {**case, "per": per, "metrics": {k: float(v) for k, v in metrics.items()}}
    return out


def reference_graphs(sets: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, float]]:
    """GDSS's four MMDs (``evaluation.stats`` with ``load_eval_settings``' kernels) of every set against the
    community set; run in GDSS's venv with GDSS's root as the working folder (ORCA's relative path)."""
    import networkx as nx

    np.float = float  # GDSS's mmd.py uses np.float, an alias of float that numpy 1.24 removed
    from evaluation import stats
    from utils.loader import load_eval_settings

    def build(items: list[dict[str, Any]]) -> list[nx.Graph]:
        out = []
        for item in items:
            g = nx.Graph()
            g.add_nodes_from(range(item["n"]))
            g.add_edges_from(map(tuple, item["edges"]))
            out.append(g)
        return out

    methods, kernels = load_eval_settings("community_small")
    funcs = {"degree": stats.degree_stats, "cluster": stats.clustering_stats, "orbit": stats.orbit_stats_all,
             "spectral": stats.spectral_stats}  # fmt: skip
    ref = build(sets["community"])
    return {name: {m: float(funcs[m](ref, build(items), kernels[m])) for m in methods} for name, items in sets.items()}


def reference_forecasts(cases: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """gluonts' ``Evaluator`` (the fixture's call: hourly PeriodIndex, ``SampleForecast``, ``num_workers=0``)
    and properscoring's ``crps_ensemble`` for every case."""
    import pandas as pd
    import properscoring
    from gluonts.evaluation import Evaluator
    from gluonts.model.forecast import SampleForecast

    out = {}
    for name, c in cases.items():
        history, target, samples = (np.asarray(c[k], dtype=float) for k in ("history", "target", "samples"))
        full = np.concatenate([history, target], axis=1)
        start = pd.Period("2027-01-01 00:00", freq="h")
        series = [pd.DataFrame(row, index=pd.period_range(start, periods=full.shape[1], freq="h")) for row in full]
        forecasts = [SampleForecast(samples=s, start_date=start + history.shape[1], item_id=str(i))
                     for i, s in enumerate(samples)]  # fmt: skip
        evaluator = Evaluator(quantiles=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9], seasonality=c["season"],
                              num_workers=0)  # fmt: skip
        agg, per_item = evaluator(iter(series), iter(forecasts), num_series=len(series))
        keys = ["mean_wQuantileLoss", "ND", "NRMSE", "MASE"] + [f"{k}[{q}]" for q in evaluator.quantiles
                                                                for k in ("wQuantileLoss", "Coverage")]  # fmt: skip
        crps = properscoring.crps_ensemble(target, samples.transpose(0, 2, 1))
        out[name] = {"aggregate": {k: float(agg[k]) for k in keys},
                     "seasonal_error": per_item["seasonal_error"].astype(float).tolist(),
                     "item_mase": per_item["MASE"].astype(float).tolist(), "crps_sum": float(crps.sum())}  # fmt: skip
    return out


def worker(kind: str, inputs: Path, seed: int, n_broken: int) -> None:
    """Run one reference in this process (its checkout on sys.path) and print its JSON as the last line."""
    import warnings

    warnings.filterwarnings("ignore")
    if kind == "molecules":
        sys.path.insert(0, str(EDM_REF))
        result = reference_molecules(json.loads(inputs.read_text()))
    elif kind == "forecasts":
        result = reference_forecasts(json.loads(inputs.read_text()))
    elif kind == "graphs":
        sys.path.insert(0, os.getcwd())
        with contextlib.redirect_stdout(sys.stderr):  # GDSS prints when ORCA fails on a graph
            result = reference_graphs(json.loads(inputs.read_text()))
    else:
        sys.path[:0] = [str(CDVAE_REF / "scripts"), str(CDVAE_REF)]
        result = reference_crystals(seed, n_broken)
    sys.stdout.flush()
    print(json.dumps(result))


# ------------------------------------------------------------------------------------------------ comparison


def compare_values(ours: dict[str, Any], theirs: dict[str, Any], rel: float = 1e-9) -> dict[str, tuple]:
    """The keys of ``theirs`` where ``ours`` differs: exactly for bools, ints and strings, to ``rel`` (relative
    to max(1, |value|)) for floats; NaN equals NaN, an infinity only the same infinity."""
    diff = {}
    for key, want in theirs.items():
        got = ours.get(key)
        if isinstance(want, float) and isinstance(got, (int, float)) and not isinstance(got, bool):
            close = math.isfinite(got) and math.isfinite(want) and abs(got - want) <= rel * max(1.0, abs(want))
            same = got == want or (math.isnan(want) and math.isnan(got)) or close
        else:
            same = got == want
        if not same:
            diff[key] = (got, want)
    return diff


def ours_molecules(molecules: list[dict[str, Any]]) -> dict[str, Any]:
    """Our per-molecule values and float32 summaries, keyed as :func:`reference_molecules`'s."""
    from polydiff_molecules import Molecule
    from polydiff_molecules.metrics import edm_metrics, stability, validity

    mols = [Molecule(tuple(m["elements"]), np.asarray(m["positions"], dtype=float), name=m["name"]) for m in molecules]
    per = []
    for mol in mols:
        row = {}
        for dtype, suffix in ((np.float32, "32"), (np.float64, "64")):
            stable, n_stable, _ = stability(mol, dtype)
            smiles = validity(mol, dtype)[1]
            row.update({f"stable{suffix}": stable, f"n_stable{suffix}": n_stable, f"smiles{suffix}": smiles})
        per.append(row)
    got = edm_metrics(mols, dtype=np.float32)
    return {"per": per, "summary": {k: got[k] for k in ("mol_stable", "atm_stable", "validity", "uniqueness")}}


def ours_forecasts(cases: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Our forecast metrics for every case, keyed as :func:`reference_forecasts`'s."""
    from polydiff_timeseries import metrics as M

    out = {}
    for name, c in cases.items():
        history, y, s = (np.asarray(c[k], dtype=float) for k in ("history", "target", "samples"))
        m = c["season"]
        agg = {"mean_wQuantileLoss": M.mean_weighted_quantile_loss(y, s), "ND": M.nd(y, s), "NRMSE": M.nrmse(y, s),
               "MASE": M.mase(y, s, history, m)}  # fmt: skip
        for q, w in M.weighted_quantile_losses(y, s).items():
            agg[f"wQuantileLoss[{q}]"], agg[f"Coverage[{q}]"] = w, M.coverage(y, s, q)
        out[name] = {"aggregate": agg, "seasonal_error": M.seasonal_error(history, m).tolist(),
                     "item_mase": [M.mase(y[i : i + 1], s[i : i + 1], history[i : i + 1], m) for i in range(len(y))],
                     "crps_sum": float(M.crps_ensemble(y, s).sum())}  # fmt: skip
    return out


def _flat(result: dict[str, Any]) -> dict[str, float]:
    """One case's forecast metrics as one flat dict (aggregates, per-series seasonal error and MASE, CRPS)."""
    return {**result["aggregate"], **{f"seasonal_error[{i}]": v for i, v in enumerate(result["seasonal_error"])},
            **{f"MASE[{i}]": v for i, v in enumerate(result["item_mase"])}, "CRPS sum": result["crps_sum"]}


def ours_graphs(sets: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, float]]:
    """Our four MMDs of every set against the community set, keyed as :func:`reference_graphs`'s."""
    import networkx as nx

    from polydiff_graphs.metrics import graph_mmds

    def build(items: list[dict[str, Any]]) -> list[nx.Graph]:
        graphs = [nx.empty_graph(item["n"]) for item in items]
        for g, item in zip(graphs, items):
            g.add_edges_from(map(tuple, item["edges"]))
        return graphs

    ref = build(sets["community"])
    return {name: graph_mmds(ref, build(items)) for name, items in sets.items()}


def ours_crystals(case: dict[str, Any]) -> dict[str, Any]:
    """Our flags, fingerprints and metrics for one case, keyed as :func:`reference_crystals`'s."""
    from polydiff_crystals import metrics as M

    struct_fps, comp_fps = M.fingerprints(case["gen"])
    flags = M.per_crystal_flags(case["gen"], fingerprints=(struct_fps, comp_fps))
    per = [{k: flags[k][i] for k in FLAGS} for i in range(len(case["gen"]))]
    metrics = M.evaluate_crystals(case["gen"], case["ref"], cutoffs=case["cutoffs"], progress=False)
    return {"per": per, "struct_fps": struct_fps, "comp_fps": comp_fps, "metrics": metrics}


def fingerprint_gap(ours: list, theirs: list) -> float:
    """Largest relative difference between fingerprints both sides computed (0 when none)."""
    gap = 0.0
    for a, b in zip(ours, theirs):
        if a is not None and b is not None:
            a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
            gap = max(gap, float(np.nanmax(np.abs(a - b)) / max(1.0, float(np.nanmax(np.abs(b))))))
    return gap


def timed_worker(python: Path, kind: str, payload: Any, seed: int, n_broken: int, timeout: float,
                 cwd: Path | None = None) -> tuple[Any, float]:
    """Run this script's ``kind`` worker under ``python`` on ``payload`` (passed as a JSON file); its result and
    the seconds it took."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{kind}.json"
        path.write_text(json.dumps(payload))
        start = time.perf_counter()
        result = run_worker(python, __file__, {"worker": kind, "inputs": path, "seed": seed, "broken": n_broken,
                                               "threads": 1}, timeout, cwd=cwd)  # fmt: skip
    return result, time.perf_counter() - start


def run(seed: int, n_broken: int, parts: list[str], timeout: float) -> dict[str, Any]:
    """Both sides of each part; per-part counts of inputs and of disagreements, with the first few named."""
    exports = {"edm": (EDM_REF, MARKER, "molecules"), "gdss": (GDSS_REF, ".gdss_commit", "graphs"),
               "cdvae": (CDVAE_REF, MARKER, "crystals")}  # fmt: skip
    commits = {name: reference_commit(path, marker) for name, (path, marker, part) in exports.items() if part in parts}
    missing = [str(exports[name][0]) for name, commit in commits.items() if commit is None]
    if missing:
        sys.exit(f"the reference exports {missing} are missing: run `python bench/metrics_reference.py --setup`")
    res: dict[str, Any] = {"seed": seed, "commits": commits, "parts": {}}
    shared = Path(os.environ.get("POLYDIFF_SHARED", Path(__file__).resolve().parents[2] / "shared"))
    if "molecules" in parts:
        frames = read_xyz(shared / "data" / "qm9" / "qm9_3d_sample128.extxyz")
        mols = molecule_inputs(frames, seed)
        theirs, ref_s = timed_worker(Path(sys.executable), "molecules", mols, seed, n_broken, timeout)
        start = time.perf_counter()
        ours = ours_molecules(mols)
        our_s = time.perf_counter() - start
        per = [(m["name"], d) for m, a, b in zip(mols, ours["per"], theirs["per"]) if (d := compare_values(a, b))]
        res["parts"]["molecules"] = {
            "n": len(mols), "per_item_disagreements": len(per), "first": per[:5],
            "summary_ours": ours["summary"], "summary_reference": theirs["summary"],
            "summary_disagreements": compare_values(ours["summary"], theirs["summary"], rel=1e-12),
            "reference_s": ref_s, "ours_s": our_s}  # fmt: skip
    if "forecasts" in parts:
        if not (GLUONTS_VENV / "bin" / "python").exists():
            sys.exit(f"gluonts' venv {GLUONTS_VENV} is missing: run `python bench/metrics_reference.py --setup`")
        cases = forecast_cases(seed)
        theirs, ref_s = timed_worker(GLUONTS_VENV / "bin" / "python", "forecasts", cases, seed, n_broken, timeout)
        start = time.perf_counter()
        ours = ours_forecasts(cases)
        res["parts"]["forecasts"] = {
            "ours": ours, "reference": theirs, "reference_s": ref_s, "ours_s": time.perf_counter() - start,
            "disagreements": {k: d for k in cases if (d := compare_values(_flat(ours[k]), _flat(theirs[k])))}}
    if "graphs" in parts:
        if not (GDSS_REF / "evaluation" / "orca" / "orca").is_file() or not (GDSS_VENV / "bin" / "python").exists():
            sys.exit(f"GDSS's export {GDSS_REF} (with ORCA compiled) or its venv {GDSS_VENV} is missing: run "
                     "`python bench/metrics_reference.py --setup`")
        sets = graph_sets(seed)
        theirs, ref_s = timed_worker(GDSS_VENV / "bin" / "python", "graphs", sets, seed, n_broken, timeout,
                                     cwd=GDSS_REF)
        start = time.perf_counter()
        ours = ours_graphs(sets)
        res["parts"]["graphs"] = {
            "sizes": {k: len(v) for k, v in sets.items()}, "ours": ours, "reference": theirs,
            "disagreements": {k: d for k in sets if (d := compare_values(ours[k], theirs[k]))},
            "largest_abs_gap": max(abs(ours[k][m] - theirs[k][m]) for k in sets for m in theirs[k]),
            "reference_s": ref_s, "ours_s": time.perf_counter() - start}  # fmt: skip
    if "crystals" in parts:
        blas = os.environ.get("OPENBLAS_CORETYPE")
        os.environ["OPENBLAS_CORETYPE"] = REFERENCE_BLAS  # read by the worker's OpenBLAS at its start only
        try:
            theirs, ref_s = timed_worker(Path(sys.executable), "crystals", None, seed, n_broken, timeout)
        finally:
            os.environ.pop("OPENBLAS_CORETYPE") if blas is None else os.environ.update(OPENBLAS_CORETYPE=blas)
        cases = {}
        start = time.perf_counter()
        for name, case in theirs.items():
            ours = ours_crystals(case)
            flags = [{k: p[k] for k in FLAGS} for p in case["per"]]
            per = [(i, d) for i, (a, b) in enumerate(zip(ours["per"], flags)) if (d := compare_values(a, b))]
            cases[name] = {
                "n": len(case["gen"]), "cutoffs": case["cutoffs"], "per_item_disagreements": len(per),
                "first": per[:5], "metrics_ours": ours["metrics"], "metrics_reference": case["metrics"],
                "metric_disagreements": compare_values(ours["metrics"], case["metrics"]),
                "struct_fp_gap": fingerprint_gap(ours["struct_fps"], [p["struct_fp"] for p in case["per"]]),
                "comp_fp_gap": fingerprint_gap(ours["comp_fps"], [p["comp_fp"] for p in case["per"]])}  # fmt: skip
        res["parts"]["crystals"] = {"cases": cases, "reference_s": ref_s, "ours_s": time.perf_counter() - start}
    return res


def markdown(res: dict[str, Any], env: dict[str, Any]) -> str:
    """The report: one row per compared set, disagreements first."""
    lines = header("Metrics against the published code, on fresh inputs", env)
    named = ", ".join(f"{k.upper()} `{v}`" for k, v in res["commits"].items())
    lines += [f"- references: {named}; input seed {res['seed']}",
              f"- CDVAE's worker runs OpenBLAS' {REFERENCE_BLAS} kernels, as the fixture's run and our "
              "fingerprint worker do",
              "- a disagreement is any flag, count or SMILES that differs, or a float that differs by more than 1e-9 "
              "relative (1e-12 for the molecule summaries)", ""]  # fmt: skip
    if "molecules" in res["parts"]:
        m = res["parts"]["molecules"]
        lines += ["## Molecules: EDM's `check_stability` and `compute_validity`", "",
                  "QM9 frames (`qm9_3d_sample128.extxyz`, all 128), each also with Gaussian noise at 8 scales "
                  "(0.01-0.5 Å) and with one atom re-typed, and 300 random clouds of H C N O F.", "",
                  "| molecules | per-molecule disagreements (float32 and float64) | summary disagreements |",
                  "|---|---|---|",
                  f"| {m['n']} | {m['per_item_disagreements']} | {len(m['summary_disagreements'])} |", "",
                  "| summary (float32) | ours | EDM |", "|---|---|---|"]  # fmt: skip
        ours, theirs = m["summary_ours"], m["summary_reference"]
        lines += [f"| {k} | {ours[k]:.12g} | {theirs[k]:.12g} |" for k in ours]
        lines += ["", f"Time: EDM {m['reference_s']:.1f} s, ours {m['ours_s']:.1f} s.", ""]
    if "forecasts" in res["parts"]:
        f = res["parts"]["forecasts"]
        lines += ["## Forecasts: gluonts 0.17.0's `Evaluator` and properscoring's `crps_ensemble`", "",
                  "Per case: mean_wQuantileLoss (the CRPS of TSDiff's tables), ND, NRMSE, MASE, wQuantileLoss and "
                  "Coverage at nine quantiles, per-series seasonal error and MASE, and the summed ensemble CRPS.", "",
                  "| case | values compared | disagreements | CRPS (mean wQL) ours / gluonts | MASE ours / gluonts |",
                  "|---|---|---|---|---|"]  # fmt: skip
        for name, theirs in f["reference"].items():
            ours, ta = f["ours"][name]["aggregate"], theirs["aggregate"]
            lines.append(f"| {name} | {len(_flat(theirs))} | {len(f['disagreements'].get(name, {}))} | "
                         f"{ours['mean_wQuantileLoss']:.10f} / {ta['mean_wQuantileLoss']:.10f} | "
                         f"{ours['MASE']:.10g} / {ta['MASE']:.10g} |")  # fmt: skip
        for name, d in f["disagreements"].items():
            lines.append(f"- **{name}**: {d}")
        lines += ["", f"Time: gluonts {f['reference_s']:.1f} s (with its import), ours {f['ours_s']:.2f} s.", ""]
    if "graphs" in res["parts"]:
        g = res["parts"]["graphs"]
        lines += ["## Graphs: GDSS's `evaluation.stats` MMDs (community-small settings)", "",
                  f"Each set ({', '.join(f'{k} {v}' for k, v in g['sizes'].items())} graphs) against the "
                  "community set: degree, clustering, orbit (ORCA compiled from GDSS's `orca.cpp`) and spectral "
                  f"MMD with `load_eval_settings`' kernels. Largest absolute gap: {g['largest_abs_gap']:.1e}; "
                  f"sets with a disagreement: {len(g['disagreements'])}.", "",
                  "| set | degree ours / GDSS | cluster | orbit | spectral |", "|---|---|---|---|---|"]  # fmt: skip
        for name, theirs in g["reference"].items():
            ours = g["ours"][name]
            lines.append(f"| {name} | " + " | ".join(f"{ours[m]:.10f} / {theirs[m]:.10f}" for m in theirs) + " |")
        lines += ["", f"Time: GDSS {g['reference_s']:.1f} s, ours {g['ours_s']:.1f} s.", ""]
    if "crystals" in res["parts"]:
        c = res["parts"]["crystals"]
        lines += ["## Crystals: CDVAE's `Crystal`, `compute_cov` and `GenEval`", "",
                  "Damaged copies cycle through: one site re-typed, a site moved 0.3-0.7 Å from another (often "
                  "across the boundary), heavy shear, lengths shrunk to 10-60 % (cells under 0.1 Å^3 among them), a "
                  "random composition, all sites jittered.", "",
                  "| case | crystals | flag disagreements | metric disagreements | largest fingerprint gap "
                  "(structure / composition) | valid | COV-R | COV-P |",
                  "|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for name, r in c["cases"].items():
            mr = r["metrics_reference"]
            lines.append(f"| {name} | {r['n']} | {r['per_item_disagreements']} | {len(r['metric_disagreements'])} | "
                         f"{r['struct_fp_gap']:.1e} / {r['comp_fp_gap']:.1e} | {mr['valid']:.4f} | "
                         f"{mr['cov_recall']:.4f} | {mr['cov_precision']:.4f} |")  # fmt: skip
        lines += ["", f"Time (fingerprints dominate): CDVAE {c['reference_s']:.0f} s, ours {c['ours_s']:.0f} s.", ""]
        bad = {n: r for n, r in c["cases"].items() if r["per_item_disagreements"] or r["metric_disagreements"]}
        for name, r in bad.items():
            lines += [f"- **{name}**: flags {r['first']}; metrics {r['metric_disagreements']}"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--setup", action="store_true", help="export the two references, then exit")
    p.add_argument("--seed", type=int, default=1, help="seed of the fresh inputs")
    p.add_argument("--broken", type=int, default=60, help="damaged perovskites (a third as many carbons)")
    p.add_argument("--parts", default="molecules,forecasts,graphs,crystals",
                   help="comma-separated: molecules, forecasts, graphs, crystals")
    p.add_argument("--timeout", type=float, default=3600, help="seconds per reference worker")
    p.add_argument("--worker", choices=("molecules", "crystals", "graphs", "forecasts"), help=argparse.SUPPRESS)
    p.add_argument("--inputs", help=argparse.SUPPRESS)
    p.add_argument("--threads", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.setup:
        setup()
        return
    if a.worker:
        worker(a.worker, Path(a.inputs), a.seed, a.broken)
        return
    parts = [x for x in a.parts.split(",") if x]
    if not parts or set(parts) - {"molecules", "forecasts", "graphs", "crystals"}:
        p.error(f"--parts takes molecules, forecasts, graphs and / or crystals, got {a.parts!r}")
    env = environment(command_line("metrics_reference.py", argv))
    res = run(a.seed, a.broken, parts, a.timeout)
    publish("metrics_reference", {"environment": env, **res}, markdown(res, env))


if __name__ == "__main__":
    main()
