"""Property models and property-targeted generation (EDM / PropMolFlow protocol).

- :func:`train_regressor`: an E(3)-invariant property regressor (:func:`.nets.property_regressor`)
  trained on clean molecules (the *evaluation* regressor, on the half of QM9 the generators
  never see) or on noisy states of the flow path (``noisy=True``: the noise-aware regressor
  that drives gradient guidance). Saved atomically with its info and normaliser.
- :func:`regressor_guidance`: the core's :func:`~polydiff.plugin.gradient_guidance` (positions)
  and :func:`~polydiff.plugin.token_guidance` (masked atom types) with the Gaussian
  log-likelihood of a target under a noise-aware regressor.
- :func:`property_mae`: generate for targets (in distribution: drawn from held-out values; out of
  distribution: the training data's 99th percentile), predict with the evaluation regressor,
  and report the mean absolute error, with guidance off, classifier-free or gradient guidance.
"""

from __future__ import annotations

import math
import pickle
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from polydiff.plugin import (
    Absorbing,
    DataBundle,
    FieldSpec,
    Noise,
    Progress,
    atomic_write,
    gradient_guidance,
    local_seed,
    token_guidance,
)

from .nets import PropertyRegressor, property_regressor


def noisy_batch(fields: Mapping[str, FieldSpec], batch: Mapping[str, Tensor], t: Tensor, noise: Noise
                ) -> dict[str, Tensor]:
    """``batch`` noised to times ``t`` (B,) along the generator's fields (positions on their
    Gaussian path with zero-centre-of-mass noise; absorbing fields masked)."""
    out = dict(batch)
    for k, f in fields.items():
        x0 = batch[k]
        if isinstance(f.process, Absorbing):
            out[k] = f.process.q_sample(x0, t, noise.rand(x0.shape[1:]).to(x0.device))
        elif f.kind == "gaussian":
            eps = f.structure.noise(noise.randn(x0.shape[1:], x0.dtype).to(x0.device), batch)
            c = f.process.coefs(t.to(x0.dtype).reshape(-1, *([1] * (x0.dim() - 1))))
            out[k] = c.alpha * x0 + c.sigma * eps
    return out


def train_regressor(bundle: DataBundle, prop: str, *, fields: Mapping[str, FieldSpec] | None = None,
                    noisy: bool = False, steps: int = 4000, batch_size: int = 32, lr: float = 1e-3, seed: int = 0,
                    arch: str = "pairs", jitter: float = 0.0, progress: bool = True, **options: Any
                    ) -> tuple[PropertyRegressor, dict[str, float]]:
    """Train a regressor of ``prop`` on ``bundle.train`` (MAE loss in normalised units, Adam,
    cosine decay); with ``noisy`` on states noised along ``fields`` at uniform times, so it
    can guide sampling. ``jitter``: Gaussian noise of that many Angstrom added to the clean
    positions of every training batch, so that the regressor also reads generated molecules,
    whose bond lengths are off by a few hundredths of an Angstrom (an evaluator fit to exact
    force-field geometries can answer far from its test error there). ``arch`` and ``options``:
    see :func:`.nets.property_regressor`.
    Returns the model (eval mode) and its test MAE in the property's units (clean molecules;
    for a noisy regressor also at t = 0.1 and 0.5)."""
    if prop not in bundle.train.tensors:
        raise ValueError(f"the dataset has no property {prop!r} (load it with conditions: [{prop}])")
    if noisy and fields is None:
        raise ValueError("a noise-aware regressor needs the generator's fields")
    if not jitter >= 0:
        raise ValueError(f"jitter must be >= 0 Angstrom, got {jitter}")
    with local_seed(seed):
        net = property_regressor(bundle.info, property=prop, arch=arch, **options)
    net.fit_normaliser(bundle.train.tensors[prop])
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    gen = torch.Generator().manual_seed(seed)
    n = len(bundle.train)
    t0 = time.perf_counter()
    bar = Progress(steps, f"regressor {prop}", unit="step", enabled=None if progress else False)
    for _ in range(steps):
        idx = torch.randint(0, n, (batch_size,), generator=gen)
        batch = bundle.train.get_batch(idx)
        t = None
        if jitter > 0:
            shake = torch.randn(batch["pos"].shape, generator=gen) * (jitter * float(bundle.info.get("pos_scale", 1.0)))
            batch = {**batch, "pos": batch["pos"] + shake * batch["mask"][..., None]}
        if noisy:
            t = torch.rand(batch_size, generator=gen)
            batch = noisy_batch(fields, batch, t, Noise(batch_size, generator=gen))
        pred = net(batch, t)
        loss = (pred - net.normalise(batch[prop])).abs().mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        sched.step()
        bar.update(1, loss=f"{loss.item():.3f}")
    bar.close()
    net.eval()
    report = {"train_seconds": time.perf_counter() - t0, "steps": steps,
              "test_mae": regressor_mae(net, bundle.test, prop)}
    if noisy:
        for t in (0.1, 0.5):
            report[f"test_mae_t{t}"] = regressor_mae(net, bundle.test, prop, fields=fields, t=t, seed=seed)
    return net, report


def regressor_mae(net: PropertyRegressor, data: Any, prop: str, fields: Mapping[str, FieldSpec] | None = None,
                  t: float | None = None, seed: int = 0, batch_size: int = 128) -> float:
    """Mean absolute error (property units) of ``net`` on a dataset (clean, or noised to ``t``)."""
    errs = []
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for lo in range(0, len(data), batch_size):
            batch = data.get_batch(torch.arange(lo, min(lo + batch_size, len(data))))
            tt = None
            if t is not None:
                tt = torch.full((len(batch["mask"]),), float(t))
                batch = noisy_batch(fields, batch, tt, Noise(len(tt), generator=gen))
            errs.append((net.predict(batch, tt) - batch[prop]).abs())
    return float(torch.cat(errs).mean())


def save_regressor(net: PropertyRegressor, path: str | Path, info: Mapping[str, Any], *, noisy: bool,
                   options: Mapping[str, Any] | None = None) -> Path:
    """The regressor's weights, normaliser, data info and options (the ones it was built with,
    ``net.options``, updated by ``options``) in one file (atomic)."""
    blob = {"state_dict": net.state_dict(), "info": dict(info), "property": net.property, "noisy": noisy,
            "options": {**net.options, **(options or {})}}
    return atomic_write(path, lambda tmp: torch.save(blob, tmp))


def load_regressor(path: str | Path) -> tuple[PropertyRegressor, dict[str, Any]]:
    """A regressor saved by :func:`save_regressor` (weights only: no code is unpickled)."""
    path = Path(path)
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        # files written before the pair regressor hold GVP weights and no "arch"
        net = property_regressor(blob["info"], property=blob["property"], **{"arch": "gvp", **blob["options"]})
        net.load_state_dict(blob["state_dict"])
    except (OSError, RuntimeError, KeyError, TypeError, ValueError, pickle.UnpicklingError, EOFError) as err:
        raise ValueError(f"{path}: not a property regressor saved by polydiff-molecules ({err})") from err
    return net.eval(), blob


def regressor_guidance(net: PropertyRegressor, target: float | Tensor, fields: Mapping[str, FieldSpec],
                       scale: float = 1.0, std: float | None = None,
                       keys: Sequence[str] = ("pos", "types")) -> Any:
    """A guidance wrapper (``Control(guidance=...)``) from a noise-aware regressor ``net`` and
    the Gaussian log-likelihood ``log N(target; f(x_t, t), std^2)`` (``std``: the likelihood
    width, by default the property's standard deviation / 4).

    ``"pos"`` in ``keys``: the core's gradient guidance adds ``scale * alpha_t * grad_pos`` to
    the positions' score (the factor ``alpha_t`` keeps the push on the clean estimate finite
    at the noise end). ``"types"``: the core's token guidance tilts the logits of every
    still-masked atom by ``scale`` times the first-order estimate of how each element changes
    the log-likelihood. Either push is only as good as ``net``'s gradients: a guide that reads
    little beyond the atom count moves nothing (docs/molecules.md)."""
    bad = [k for k in keys if k not in ("pos", "types")]
    if bad or not keys:
        raise ValueError(f"regressor guidance acts on 'pos' and / or 'types', got {list(keys)}")
    width = float(std if std is not None else float(net.std) / 4)

    def potential(state: Mapping[str, Tensor], t: Tensor) -> Tensor:
        pred = net.predict(state, t)
        y = torch.as_tensor(target, dtype=pred.dtype, device=pred.device)
        return -0.5 * ((pred - y) / width) ** 2

    proc = fields["pos"].process

    def tempered(t: Tensor) -> Tensor:
        # scale * alpha_t: the clean estimate moves by scale * sigma^2 * grad, finite at the
        # noise end where alpha_t = 0 (the plain rule divides by alpha_t there)
        return scale * proc.coefs(t.double()).alpha.to(t.dtype)

    def wrap(model: Any) -> Any:
        if "pos" in keys:
            model = gradient_guidance(model, fields, potential, scale=tempered, on="xt", keys=["pos"])
        if "types" in keys:
            model = token_guidance(model, fields, potential, keys=["types"], scale=scale)
        return model

    return wrap


def targets_for(bundle: DataBundle, prop: str, num: int, kind: str = "id", seed: int = 0) -> Tensor:
    """``num`` targets: ``id`` draws held-out (test) values, ``ood`` repeats the training
    values' 99th percentile (PropMolFlow's out-of-distribution protocol)."""
    if kind == "id":
        vals = bundle.test.tensors[prop]
        idx = torch.randint(0, len(vals), (num,), generator=torch.Generator().manual_seed(seed))
        return vals[idx].float()
    if kind == "ood":
        return torch.full((num,), float(np.percentile(bundle.train.tensors[prop].numpy(), 99)))
    raise ValueError(f"kind must be 'id' or 'ood', got {kind!r}")


def property_mae(generator: Any, evaluator: PropertyRegressor, targets: Tensor, *, mode: str = "cfg",
                 guidance_scale: float = 1.0, guide: PropertyRegressor | None = None, guide_scale: float = 1.0,
                 guide_keys: Sequence[str] = ("pos", "types"), seed: int = 0, steps: int | None = None,
                 batch: int = 64, judges: Mapping[str, PropertyRegressor] | None = None) -> dict[str, float]:
    """Generate one molecule per target and score it with ``evaluator``.

    ``mode``: ``"off"`` (the conditional model with the target, classifier-free guidance
    scale 1), ``"cfg"`` (scale ``guidance_scale``), ``"gradient"`` (the target condition plus
    gradient guidance from the noise-aware regressor ``guide``; an unconditional model gets
    the guidance alone), ``"unconditional"`` (the null condition: what the model makes without
    a target; its MAE is the no-skill baseline). MAE in the property's units, with the share of
    EDM-stable and RDKit-valid samples and the MAE over the valid ones (``mae_valid``).

    ``judges``: more evaluators, each reported as ``mae_<name>`` with ``corr_<name>``, the
    correlation of its predictions with the evaluator's on the same samples. Gradient guidance
    climbs its guide's gradient, and a guide and an evaluator of one architecture can share
    blind spots: a judge of another architecture tells a real change of the property from one
    that only the evaluator's kind of model sees."""
    from polydiff.plugin import Control

    from .metrics import per_molecule_flags

    prop = evaluator.property
    if mode not in ("off", "cfg", "gradient", "unconditional"):
        raise ValueError(f"mode must be off, cfg, gradient or unconditional, got {mode!r}")
    if mode == "gradient" and guide is None:
        raise ValueError("gradient guidance needs a noise-aware regressor (guide=...)")
    judges = dict(judges or {})
    preds, mols = [], []
    extra: dict[str, list[Tensor]] = {k: [] for k in judges}
    for lo in range(0, len(targets), batch):
        tg = targets[lo: lo + batch]
        conditioned = prop in generator.info.get("conditions", {})
        cond = {prop: tg.tolist()} if conditioned and mode != "unconditional" else {}
        control = None
        if mode == "cfg" and guidance_scale != 1.0:
            control = Control(guidance_scale=guidance_scale, condition_keys=[prop])
        elif mode == "gradient":
            control = Control(guidance=regressor_guidance(guide, tg[:, None].squeeze(1), generator.fields,
                                                          guide_scale, keys=guide_keys))
        out = generator.generate(len(tg), seed=seed * 1_000_003 + lo, steps=steps, condition=cond,
                                 **({"control": control} if control is not None else {}))
        mols += out
        st = generator.modality.from_native(out, generator.info)
        with torch.no_grad():
            preds.append(evaluator.predict(st))
            for k, judge in judges.items():
                extra[k].append(judge.predict(st))
    err = (torch.cat(preds) - targets).abs()
    flags = per_molecule_flags(mols)
    valid = torch.tensor(flags["valid"], dtype=torch.bool)
    res = {"mae": float(err.mean()), "n": len(targets), "mol_stable": float(np.mean(flags["stable"])),
           "validity": float(valid.float().mean()), "mae_valid": float(err[valid].mean()) if valid.any() else math.nan,
           "pred_mean": float(torch.cat(preds).mean()), "target_mean": float(targets.mean())}
    for k, vals in extra.items():
        other = torch.cat(vals)
        res[f"mae_{k}"] = float((other - targets).abs().mean())
        res[f"corr_{k}"] = float(torch.corrcoef(torch.stack([torch.cat(preds), other]).double())[0, 1])
    return res


def shuffled_mae(evaluator: PropertyRegressor, data: Any, seed: int = 0) -> float:
    """EDM's naive baseline: the evaluator's predictions on held-out molecules against the
    property values of other (shuffled) molecules."""
    prop = evaluator.property
    with torch.no_grad():
        pred = torch.cat([evaluator.predict(data.get_batch(torch.arange(lo, min(lo + 256, len(data)))))
                          for lo in range(0, len(data), 256)])
    perm = torch.randperm(len(pred), generator=torch.Generator().manual_seed(seed))
    return float((pred - data.tensors[prop][perm]).abs().mean())


__all__: Sequence[str] = ["load_regressor", "noisy_batch", "property_mae", "regressor_guidance", "regressor_mae",
                          "save_regressor", "shuffled_mae", "targets_for", "train_regressor"]
