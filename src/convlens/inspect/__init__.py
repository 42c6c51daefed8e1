"""Inspection: predictions, layer summaries with receptive fields, activations and depth profiles.

Example:
    >>> from convlens.inspect import summarize
    >>> import torch
    >>> summarize(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3)), (3, 8, 8)).total_params
    112
"""

from convlens.inspect.activations import (
    ActivationReport,
    Activations,
    ChannelScore,
    LayerActivation,
    LayerActivationStats,
    activation_report,
    activation_stats,
    get_activations,
    top_channels,
)
from convlens.inspect.depth import DepthProfile, StageProfile, depth_profile, depth_profile_image
from convlens.inspect.erf import EffectiveRF, UnitReceptiveField, effective_receptive_field, unit_receptive_field
from convlens.inspect.patches import ChannelPatches, Patch, TopPatches, top_patches
from convlens.inspect.predict import Prediction, PredictionRun, TopClass, predict, predict_files
from convlens.inspect.rf import EmpiricalRF, receptive_field, receptive_field_empirical
from convlens.inspect.summary import LayerRecord, Summary, summarize, summarize_model
from convlens.inspect.unit import Term, UnitTrace, trace_unit

__all__ = [
    "ActivationReport",
    "LayerActivation",
    "activation_report",
    "depth_profile_image",
    "Activations",
    "Prediction",
    "TopClass",
    "predict",
    "predict_files",
    "PredictionRun",
    "LayerRecord",
    "Summary",
    "summarize",
    "summarize_model",
    "ChannelScore",
    "LayerActivationStats",
    "activation_stats",
    "get_activations",
    "top_channels",
    "DepthProfile",
    "StageProfile",
    "depth_profile",
    "EmpiricalRF",
    "receptive_field",
    "receptive_field_empirical",
    "Term",
    "UnitTrace",
    "trace_unit",
    "UnitReceptiveField",
    "EffectiveRF",
    "unit_receptive_field",
    "effective_receptive_field",
    "Patch",
    "ChannelPatches",
    "TopPatches",
    "top_patches",
]
