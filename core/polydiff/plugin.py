"""Everything a modality plugin may use, in one namespace.

First-party plugins (graphs, time series, molecules, ...) import from here and nowhere else in
polydiff, exactly as a third-party plugin would; a test checks it. What is here is the
plugin API: it changes only with a note in CONTRIBUTING.md.

Groups:

- the contract: :class:`Modality`, :class:`Command`, :class:`DataBundle`, :class:`DatasetInfo`,
  :class:`TensorStates`, :func:`check_info`, :func:`draw_sizes`, :func:`package_recipes`;
- states and fields: :class:`FieldSpec`, structures, processes (Gaussian schedules,
  categorical, manifolds including :class:`SO3` and IGSO(3));
- sampling: :func:`sample`, :class:`SampleSettings`, :class:`SamplingLoop`, :class:`Control`,
  :func:`controlled_sample`, :func:`register` (samplers) with :class:`StepContext`,
  :class:`CategoricalContext` and the coefficient helpers, guidance and observations;
- training: :func:`diffusion_loss`, the registries of weightings, time densities,
  objectives and per-sample alignments (:data:`ALIGNMENTS`), the energy parametrisation, augmentations;
- networks: :mod:`polydiff.nn` blocks (time and condition embeddings, residual MLP, EGNN);
- files and the command line: :func:`atomic_write`, :func:`atomic_folder`,
  :func:`shared_dir`, :func:`read_text` and :func:`csv_rows` (users' text and CSV files with errors
  naming the file and line), :func:`parse_pairs`, :data:`USER_ERRORS`;
- contract tests for plugins' own test suites live in :mod:`polydiff.testing`.
"""

from __future__ import annotations

from . import nn
from .checkpoints import CheckpointError, load_network, run_folder
from .cli import USER_ERRORS, parse_pairs, plugin_command, report_error
from .conditions import NULL_CLASS, drop_condition, make_condition, null_state, parse_condition
from .data import (
    ConditionSpec,
    DataBundle,
    DatasetInfo,
    TensorStates,
    check_info,
    compose_augment,
    default_collate,
    draw_sizes,
    rotate,
    size_histogram,
)
from .elbo import CategoricalELBO, categorical_elbo
from .energy import EnergyModel, forces
from .estimates import call, field_coefs, gaussian_names, tree_map, with_x0_eps, x0_eps
from .files import SHARED_ENV, atomic_folder, atomic_write, csv_rows, read_text, save_figure, shared_dir, shared_file
from .generator import Generator, load
from .grids import GRIDS, make_grid
from .guidance import (
    Observation,
    as_observation,
    classifier_free,
    classifier_potential,
    gradient_guidance,
    index_mask,
    load_observed,
    operator_potential,
    reconstruction_guidance,
)
from .losses import OBJECTIVES, TIME_DENSITIES, WEIGHTINGS, diffusion_loss, gaussian_loss, masked_elbo
from .metrics import sliced_wasserstein
from .modality import Command, Modality, package_recipes
from .nn import (
    EGNN,
    ConditionEmbedding,
    EGNNLayer,
    FourierEmbedding,
    ResidualBlock,
    ResidualMLP,
    SinusoidalEmbedding,
    TimeEmbedding,
    input_scale,
    precondition,
    time_input,
)
from .parametrization import from_x0_eps, to_x0_eps
from .processes import (
    EDM,
    MASK_SCHEDULES,
    SCHEDULES,
    VE,
    Absorbing,
    CategoricalProcess,
    Coefs,
    CosineMask,
    DiscreteVP,
    Euclidean,
    FlatTorus,
    GaussianProcess,
    GeodesicFlow,
    LinearInterpolant,
    LinearMask,
    Manifold,
    MaskSchedule,
    Schedule,
    StochasticInterpolant,
    SubVP,
    Uniform,
    VPCosine,
    VPLinear,
    expand_t,
    vp_discrete,
)
from .processes.so3 import (
    SO3,
    exp_map,
    igso3_angle_density,
    igso3_density,
    log_map,
    project_so3,
    random_rotation,
    sample_igso3,
)
from .random import Noise, sample_categorical
from .registry import Registry, RegistryError, load_modality
from .samplers import (
    SAMPLERS,
    CategoricalContext,
    SampleSettings,
    SamplingLoop,
    StepContext,
    first_hitting,
    register,
    sample,
    settings_of,
)
from .samplers.coefs import check_option, clip_lam, coef_table, lam_step, phi, phis, step_order
from .state import FieldSpec, Packer, State, as_fields, field_mask
from .steering import Control, controlled_sample, steer
from .structures import Masked, Plain, Symmetric, ZeroCoM, masked_mean
from .techniques import ALIGNMENTS

__all__ = [
    "ALIGNMENTS",
    "EDM",
    "EGNN",
    "GRIDS",
    "MASK_SCHEDULES",
    "NULL_CLASS",
    "OBJECTIVES",
    "SAMPLERS",
    "SCHEDULES",
    "SHARED_ENV",
    "SO3",
    "TIME_DENSITIES",
    "USER_ERRORS",
    "VE",
    "WEIGHTINGS",
    "Absorbing",
    "CategoricalContext",
    "CategoricalELBO",
    "CategoricalProcess",
    "CheckpointError",
    "Coefs",
    "Command",
    "ConditionEmbedding",
    "ConditionSpec",
    "Control",
    "CosineMask",
    "DataBundle",
    "DatasetInfo",
    "DiscreteVP",
    "EGNNLayer",
    "EnergyModel",
    "Euclidean",
    "FieldSpec",
    "FlatTorus",
    "FourierEmbedding",
    "GaussianProcess",
    "Generator",
    "GeodesicFlow",
    "LinearInterpolant",
    "LinearMask",
    "Manifold",
    "MaskSchedule",
    "Masked",
    "Modality",
    "Noise",
    "Observation",
    "Packer",
    "Plain",
    "Registry",
    "RegistryError",
    "ResidualBlock",
    "ResidualMLP",
    "SampleSettings",
    "SamplingLoop",
    "Schedule",
    "SinusoidalEmbedding",
    "State",
    "StepContext",
    "StochasticInterpolant",
    "SubVP",
    "Symmetric",
    "TensorStates",
    "TimeEmbedding",
    "Uniform",
    "VPCosine",
    "VPLinear",
    "ZeroCoM",
    "as_fields",
    "as_observation",
    "atomic_folder",
    "atomic_write",
    "call",
    "categorical_elbo",
    "check_info",
    "check_option",
    "classifier_free",
    "classifier_potential",
    "clip_lam",
    "coef_table",
    "compose_augment",
    "controlled_sample",
    "csv_rows",
    "default_collate",
    "diffusion_loss",
    "draw_sizes",
    "drop_condition",
    "exp_map",
    "expand_t",
    "field_coefs",
    "field_mask",
    "first_hitting",
    "forces",
    "from_x0_eps",
    "gaussian_loss",
    "gaussian_names",
    "gradient_guidance",
    "igso3_angle_density",
    "igso3_density",
    "index_mask",
    "input_scale",
    "lam_step",
    "load",
    "load_modality",
    "load_network",
    "load_observed",
    "log_map",
    "make_condition",
    "make_grid",
    "masked_elbo",
    "masked_mean",
    "nn",
    "null_state",
    "operator_potential",
    "package_recipes",
    "parse_condition",
    "parse_pairs",
    "phi",
    "phis",
    "plugin_command",
    "precondition",
    "project_so3",
    "random_rotation",
    "read_text",
    "reconstruction_guidance",
    "register",
    "report_error",
    "rotate",
    "run_folder",
    "sample",
    "sample_categorical",
    "sample_igso3",
    "save_figure",
    "settings_of",
    "shared_dir",
    "shared_file",
    "size_histogram",
    "sliced_wasserstein",
    "steer",
    "step_order",
    "time_input",
    "to_x0_eps",
    "tree_map",
    "vp_discrete",
    "with_x0_eps",
    "x0_eps",
]
