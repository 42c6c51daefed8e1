"""Explain: Grad-CAM and the class-activation-map family, batched on the model's device, plus
faithfulness metrics (:mod:`convlens.explain.metrics`).

``cam(model, x, method, target_layer, targets)`` returns (N, H, W) maps in [0, 1];
``attribute(model, x, method, targets)`` returns raw (N, C, H, W) pixel attributions
(:mod:`convlens.explain.pixel`: saliency, input x gradient, integrated gradients, SmoothGrad,
occlusion, RISE). ``explain(...)`` returns the full :class:`CAMResult` (``.maps``, ``.raw`` low-res pre-ReLU maps per
layer, ``.targets``, ``.scores``, ``.probs``). Methods: see ``METHODS``.

Example:
    >>> import torch
    >>> from convlens.explain import cam, explain, METHODS
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(),
    ...                           torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 2))
    >>> tuple(cam(net, torch.randn(2, 3, 8, 8), "gradcam++", "auto").shape)
    (2, 8, 8)
    >>> list(METHODS)
    ['gradcam', 'gradcam++', 'xgradcam', 'layercam', 'hirescam', 'eigencam', 'scorecam', 'guided-gradcam', 'ablationcam', 'fullgrad', 'eigengradcam', 'smoothgradcam++', 'sscam', 'iscam']
"""

from convlens.explain.base import (
    BaseCAM,
    CAMContext,
    CAMResult,
    finalize_maps,
    normalize_maps,
    resolve_layers,
    target_scores,
)
from convlens.explain.channels import ChannelContributions, gradcam_channels
from convlens.explain.methods import (
    ISCAM,
    METHODS,
    SSCAM,
    AblationCAM,
    EigenCAM,
    EigenGradCAM,
    FullGrad,
    GradCAM,
    GradCAMPlusPlus,
    GuidedGradCAM,
    HiResCAM,
    LayerCAM,
    ScoreCAM,
    SmoothGradCAMPlusPlus,
    XGradCAM,
    cam,
    explain,
    get_method,
    guided_backprop,
)
from convlens.explain.pixel import ATTRIBUTIONS, attribute, attribution_map

__all__ = [
    "gradcam_channels",
    "ChannelContributions",
    "ATTRIBUTIONS",
    "attribute",
    "attribution_map",
    "BaseCAM",
    "CAMContext",
    "CAMResult",
    "METHODS",
    "SSCAM",
    "AblationCAM",
    "EigenCAM",
    "EigenGradCAM",
    "FullGrad",
    "ISCAM",
    "SmoothGradCAMPlusPlus",
    "GradCAM",
    "GradCAMPlusPlus",
    "GuidedGradCAM",
    "HiResCAM",
    "LayerCAM",
    "ScoreCAM",
    "XGradCAM",
    "cam",
    "explain",
    "finalize_maps",
    "get_method",
    "guided_backprop",
    "normalize_maps",
    "resolve_layers",
    "target_scores",
]
