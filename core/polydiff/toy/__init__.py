"""The built-in ``toy`` modality: points in R^D.

It is registered through the same entry point as every other plugin (``toy =
"polydiff.toy:ToyModality"``) and uses only public polydiff names, so it doubles as the
reference implementation of the :class:`~polydiff.modality.Modality` contract.

- datasets: ``gmm`` (embedded default: a random Gaussian mixture, component index as the
  class label ``"label"``), ``csv`` (your own points, optionally with a label column) and
  ``rotations`` (a mixture of rotations on SO(3), see :mod:`polydiff.toy.rotations`);
- networks: ``mlp``, a residual MLP with a time embedding and an optional class condition;
  ``so3_mlp`` for rotations; ``two_time_mlp``, a two-time model ``G(x_t, t, s)`` for
  consistency-trajectory distillation (``loss.objective: ctm``, sampler ``ctm``);
- fields: one Gaussian field ``"x"`` of shape (D,); for rotations one SO(3) field ``"R"`` of
  shape (3, 3) on a geodesic flow (``process.rate``);
- metrics: sliced Wasserstein-2, mean and covariance errors, and the exact log-likelihood of
  the samples when the data is a known mixture; for rotations SW2 of the matrix entries, the
  distance to the nearest centre and the error of the component frequencies.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..data import condition_values
from ..distill import TwoTimeMLP
from ..files import new_figure, samples_file, save_figure
from ..modality import DataBundle, Modality
from ..nn import ConditionEmbedding, ResidualMLP, TimeEmbedding, input_scale, shared_time, time_input
from ..nn import precondition as edm_precondition
from ..parametrization import from_x0_eps
from ..processes.gaussian import GaussianProcess
from ..registry import whole_number
from ..state import FieldSpec, State
from ..structures import Plain
from .data import csv_dataset, gmm_dataset, point_metrics, read_observation, read_points, write_points
from .gmm import ExactDenoiser, GaussianMixture
from .rotations import (
    ExactRotationDenoiser,
    RotationMixture,
    is_rotation_file,
    is_rotations,
    plot_rotations,
    read_rotations,
    rotation_fields,
    rotation_flags,
    rotation_metrics,
    rotations_dataset,
    so3_mlp_network,
    write_rotations,
)

__all__ = ["ExactDenoiser", "ExactRotationDenoiser", "GaussianMixture", "RotationMixture", "ToyMLP", "ToyModality"]

SAMPLES_FILE = "samples.csv"


class ToyMLP(nn.Module):
    """Denoiser of points: ``forward(state, t) -> {"x": prediction}``.

    Inputs are scaled to unit variance with EDM's ``c_in``, time enters through the log-SNR
    (:func:`polydiff.nn.time_input`), and with ``precondition`` the raw output goes through
    EDM's skip / output scaling (:func:`polydiff.nn.precondition`) before it is expressed in
    the field's parametrisation, so one network is well behaved for every schedule and
    prediction (a raw eps-network's errors near pure noise become outliers).
    """

    def __init__(self, dim: int, fields: Mapping[str, FieldSpec], sigma_data: float = 1.0, hidden: int = 128,
                 depth: int = 3, emb_dim: int = 64, time_embedding: str = "sinusoidal",
                 conditions: Mapping[str, Any] | None = None, precondition: bool = True) -> None:
        super().__init__()
        self.process, self.prediction = fields["x"].process, fields["x"].prediction
        self.sigma_data, self.precondition = sigma_data, precondition
        self.time = TimeEmbedding(emb_dim, time_embedding)
        self.cond = ConditionEmbedding(conditions, emb_dim) if conditions else None
        self.mlp = ResidualMLP(dim, dim, hidden, depth, emb_dim)

    def forward(self, state: Mapping[str, Tensor], t: Tensor, cond: Any = None) -> dict[str, Tensor]:
        x = state["x"]
        tt = shared_time(t, x.shape[0]).to(torch.float64)  # (1,) when the batch shares one time: broadcast
        c = self.process.coefs(tt[:, None])
        emb = self.time(time_input(self.process.schedule, tt))
        if self.cond is not None:
            emb = emb + self.cond(state, x.shape[0])
        out = self.mlp(x * input_scale(c.alpha, c.sigma, self.sigma_data).to(x.dtype), emb)
        if not self.precondition:
            return {"x": out}
        x0, eps = edm_precondition(out.double(), x.double(), c.alpha, c.sigma, self.sigma_data)
        return {"x": from_x0_eps(x0, eps, self.prediction, c).to(x.dtype)}


def _point_inputs(info: Mapping[str, Any], conditional: bool, name: str, **sizes: int) -> tuple[int, float, Any]:
    """What a point network needs from ``info``: the dimension, ``sigma_data`` (the data's root
    mean square about 0, what EDM's skip connection assumes) and the condition specs; ``sizes``
    (hidden, depth, emb_dim) are checked to be whole numbers (depth may be 0)."""
    if is_rotations(info):
        raise ValueError(f"the {name} network generates points; rotations data needs the so3_mlp network")
    conditions = None
    if conditional:
        conditions = info.get("conditions")
        if not conditions:
            raise ValueError("conditional=True needs a dataset with labels (gmm, or csv with label=COLUMN)")
    for key, value in sizes.items():  # hidden: 0 trained a network of nothing, silently
        whole_number(f"model.{key}", value, low=0 if key == "depth" else 1)
    mean = np.asarray(info.get("data_mean", [0.0]), dtype=np.float64)
    sigma_data = float(np.sqrt(float(info.get("data_std", 1.0)) ** 2 + np.mean(mean**2)))
    return int(info["dim"]), sigma_data, conditions


def two_time_mlp(info: Mapping[str, Any], fields: Mapping[str, FieldSpec], hidden: int = 128, depth: int = 3,
                 emb_dim: int = 64, time_embedding: str = "sinusoidal", conditional: bool = False) -> nn.Module:
    """A two-time model ``G(x_t, t, s)`` of points (:class:`polydiff.distill.TwoTimeMLP`) for
    consistency-trajectory distillation (``loss.objective: ctm``, sampler ``ctm``)."""
    dim, sigma_data, conditions = _point_inputs(info, conditional, "two_time_mlp", hidden=hidden, depth=depth,
                                                emb_dim=emb_dim)
    return TwoTimeMLP(dim, fields, sigma_data, hidden, depth, emb_dim, time_embedding, conditions)


def mlp_network(info: Mapping[str, Any], fields: Mapping[str, FieldSpec], hidden: int = 128, depth: int = 3,
                emb_dim: int = 64, time_embedding: str = "sinusoidal", conditional: bool = False,
                precondition: bool = True) -> nn.Module:
    """The residual MLP; ``conditional=True`` embeds the class label (needs labelled data)."""
    dim, sigma_data, conditions = _point_inputs(info, conditional, "mlp", hidden=hidden, depth=depth, emb_dim=emb_dim)
    return ToyMLP(dim, fields, sigma_data, hidden, depth, emb_dim, time_embedding, conditions,
                  precondition)


def _net_conditions(net: nn.Module) -> list[str] | None:
    """The condition keys a point network embeds (``[]``: unconditional); None for a network
    that does not say (then it is not checked)."""
    if not hasattr(net, "cond"):
        return None
    return list(net.cond.specs) if isinstance(net.cond, ConditionEmbedding) else []


class ToyModality(Modality):
    """Points in R^D: Gaussian mixtures with exact likelihoods, or your own CSV points; or
    rotations (SO(3) mixtures)."""

    name = "toy"
    description = "points in R^D: Gaussian-mixture data with exact likelihoods, or your own CSV points"

    def datasets(self) -> dict[str, Callable[..., DataBundle]]:
        return {"gmm": gmm_dataset, "csv": csv_dataset, "rotations": rotations_dataset}

    def networks(self) -> dict[str, Callable[..., nn.Module]]:
        return {"mlp": mlp_network, "so3_mlp": so3_mlp_network, "two_time_mlp": two_time_mlp}

    def fields(self, info: Mapping[str, Any], schedule: str = "vp_cosine", prediction: str = "eps",
               **schedule_options: Any) -> dict[str, FieldSpec]:
        """One Gaussian field ``"x"``; ``schedule`` and its options name the noise schedule.
        Rotations data: one SO(3) field ``"R"`` predicting the clean rotation, on a geodesic flow
        whose ``rate`` option defaults to the data's (``schedule`` is not used)."""
        if is_rotations(info):
            return rotation_fields(info, "x0" if prediction == "eps" else prediction, **schedule_options)
        return {"x": FieldSpec(GaussianProcess(schedule, **schedule_options), Plain(), prediction)}

    def prior_state(self, n: int, info: Mapping[str, Any], generator: torch.Generator | None = None,
                    condition: Mapping[str, Any] | None = None) -> dict[str, Any]:
        if is_rotations(info):
            if condition:
                raise ValueError(f"unknown condition {next(iter(condition))!r}: the model is unconditional (rotations "
                                 "data has no conditions)")
            return {"R": (n, 3, 3)}
        spec: dict[str, Any] = {"x": (n, int(info["dim"]))}
        allowed = dict(info.get("conditions") or {})
        for key, value in (condition or {}).items():
            if key not in allowed:
                has = f"its data declares only: {', '.join(allowed)}" if allowed else "the model is unconditional"
                raise ValueError(f"unknown condition {key!r}: the model was not trained with it; {has}")
            k = int(allowed[key]["num_classes"])  # -1: the null label (unconditional)
            spec[key] = condition_values(n, value, name=key, kind="class", low=-1, high=k - 1)
        return spec

    def conditions(self, net: nn.Module, info: Mapping[str, Any]) -> dict[str, Any]:
        """The data's conditions that the network embeds: labelled data declares ``label``
        whether or not the model was trained with ``conditional=True``."""
        declared = dict(info.get("conditions") or {})
        have = _net_conditions(net)
        return declared if have is None else {k: v for k, v in declared.items() if k in have}

    def sample(self, net: nn.Module, fields: Mapping[str, FieldSpec], spec: Mapping[str, Any], settings: Any,
               control: Any, *, seed: Tensor, device: torch.device) -> State:
        """The core's sampling loop, after checking that the network takes the conditions asked
        for: labelled data declares ``label`` whether or not the model was trained with
        ``conditional=True``, and an unconditional network would ignore it silently."""
        given = [k for k in spec if k not in fields]
        have = _net_conditions(net)
        unknown = [k for k in given if have is not None and k not in have]
        if unknown:
            has = f"its conditions are: {', '.join(have)}" if have else \
                "the model is unconditional (trained without model.conditional: true)"
            raise ValueError(f"unknown condition {unknown[0]!r}: the model was not trained with it; {has}")
        return super().sample(net, fields, spec, settings, control, seed=seed, device=device)

    def to_native(self, state: State, info: Mapping[str, Any]) -> np.ndarray:
        """The points as a float64 array (N, D) (indexable like a list of points); rotations as
        an (N, 3, 3) array."""
        if "x" not in state and "R" in state:
            return state["R"].detach().to("cpu", torch.float64).numpy()
        return state["x"].detach().to("cpu", torch.float64).numpy()

    def from_native(self, objects: Sequence[Any], info: Mapping[str, Any]) -> State:
        arr = np.asarray(objects)
        if arr.ndim == 3 and arr.shape[1:] == (3, 3):
            return {"R": torch.as_tensor(arr, dtype=torch.float32)}
        return {"x": torch.as_tensor(arr, dtype=torch.float32)}

    def reference(self, data: DataBundle) -> np.ndarray:
        """The test points (a fallback to other splits warns, see :meth:`reference_split`)."""
        ds = self.reference_split(data)
        if hasattr(ds, "tensors") and "x" not in ds.tensors and "R" in ds.tensors:
            return ds.tensors["R"].double().numpy()
        return ds.tensors["x"].double().numpy() if hasattr(ds, "tensors") else super().reference(data)

    def write(self, objects: Sequence[Any], out_dir: Path) -> list[Path]:
        arr = np.asarray(objects)
        if arr.ndim == 3 and arr.shape[1:] == (3, 3):
            return [write_rotations(arr, Path(out_dir) / SAMPLES_FILE)]
        return [write_points(np.asarray(objects), Path(out_dir) / SAMPLES_FILE)]

    def read(self, path: Path) -> np.ndarray:
        """Points (N, D), or rotations (N, 3, 3) from a file with the columns ``r00 .. r22``."""
        path = Path(path)
        file = samples_file(path, SAMPLES_FILE, (".csv",))
        if is_rotation_file(file):
            return read_rotations(file)
        return read_points(file)

    def evaluate(self, objects: Sequence[Any], reference: Sequence[Any], info: Mapping[str, Any]) -> dict[str, float]:
        x = np.asarray(objects)
        if x.ndim == 3:
            return rotation_metrics(x, np.asarray(reference), info.get("rotations"))
        return point_metrics(np.asarray(objects), np.asarray(reference), info.get("gmm"))

    def flags(self, objects: Sequence[Any], info: Mapping[str, Any]) -> dict[str, list[Any]]:
        """Per point, when the data is a known mixture: its exact log-density ``loglik`` and the
        most likely component ``component``; for a known rotation mixture the nearest component
        ``component`` and its geodesic distance ``distance``."""
        if info.get("rotations") is not None:
            return rotation_flags(np.asarray(objects), info["rotations"])
        gmm = info.get("gmm")
        if gmm is None:
            return {}
        mix = GaussianMixture(torch.tensor(gmm["weights"]), torch.tensor(gmm["means"]), torch.tensor(gmm["stds"]))
        x = torch.as_tensor(np.asarray(objects, dtype=np.float64))
        return {"loglik": mix.log_prob(x).tolist(), "component": mix.responsibilities(x).argmax(-1).tolist()}

    def observation(self, path: Path, info: Mapping[str, Any]) -> Any:
        """``polydiff sample CKPT --observed point.csv``: one row of coordinates (a header is
        optional), empty cells generated given the others; ``.pt`` / ``.npz`` files as usual."""
        if Path(path).suffix in (".pt", ".pth", ".npz") or is_rotations(info):
            return super().observation(path, info)
        from ..guidance import Observation

        values, mask = read_observation(Path(path), int(info["dim"]))
        return Observation({"x": values}, {"x": mask})

    def plot(self, objects: Sequence[Any], path: Path, reference: Sequence[Any] | None = None) -> Path | None:
        """Scatter of the first two coordinates (a histogram in 1-D), over the reference in grey;
        for rotations the rotated x axes and the rotation angles."""
        if np.asarray(objects).ndim == 3:
            return plot_rotations(np.asarray(objects), path, reference)
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            return None
        x = np.asarray(objects, dtype=np.float64)
        fig = new_figure(figsize=(5, 5))
        ax = fig.subplots()
        what = f"samples (n={len(x)})" + ("" if reference is None else f" over data (n={len(reference)})")
        if x.shape[1] == 1:
            if reference is not None:
                ax.hist(np.asarray(reference)[:, 0], bins=60, density=True, color="0.7", label="data")
            ax.hist(x[:, 0], bins=60, density=True, histtype="step", color="C0", label="samples")
            ax.set(xlabel="x0", ylabel="density", title=f"{what}: histogram")
            ax.legend(loc="upper right")
        else:
            if reference is not None:
                r = np.asarray(reference)
                ax.scatter(r[:, 0], r[:, 1], s=2, c="0.7", alpha=0.5, linewidths=0, label="data", zorder=1)
            # few samples are drawn bigger, so 8 points stay visible over 10k faint data points
            size = float(np.clip(2.0 * np.sqrt(2000.0 / len(x)), 2.0, 30.0))
            ax.scatter(x[:, 0], x[:, 1], s=size, c="C0", linewidths=0, label="samples", zorder=2)
            ax.set_aspect("equal", adjustable="datalim")
            ax.set(xlabel="x0", ylabel="x1", title=what if x.shape[1] == 2 else f"{what}: first two coordinates")
            legend = ax.legend(loc="upper right")
            for handle in legend.legend_handles:  # the same legible marker for both sets
                handle.set_sizes([20.0])
                handle.set_alpha(1.0)
        return save_figure(fig, path)
