"""Feature visualization: images that maximize what a filter, a unit, a layer or a class responds to.

``visualize(model, layer, channels, objective, recipe, steps, size, seed, device)`` renders one
image per channel in ONE batch, with the forward pass truncated at the layer; :func:`render` is the
engine (any :class:`Objective`, returns a :class:`FeatvisResult` with final objective values).
Objectives, parameterizations, transforms and recipes are small composable pieces; first-layer
kernels can also be shown directly (:func:`first_layer_kernels`).

Example:
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())
    >>> visualize(net, "1", [0, 1], recipe="keras", steps=2, size=12).shape
    torch.Size([2, 3, 12, 12])
"""

from convlens.featvis.kernels import first_layer_kernels
from convlens.featvis.objectives import (
    L2,
    Blur,
    Channel,
    ClassLogit,
    LayerL2,
    Neuron,
    Objective,
    TotalVariation,
    Weighted,
)
from convlens.featvis.param import FourierImage, PixelImage, decorrelate_colors
from convlens.featvis.recipes import RECIPES, KerasRecipe, LucidRecipe, Recipe, get_recipe
from convlens.featvis.render import (
    OBJECTIVES,
    FeatvisResult,
    build_objective,
    image_generators,
    render,
    target_layer,
    visualize,
)
from convlens.featvis.report import ChannelValue, FiltersReport, KernelsReport, filters_report, kernel_report
from convlens.featvis.transforms import Jitter, Pad, Pipeline, RandomRotate, RandomScale
from convlens.layers import first_conv  # the one home of 'the conv that reads the image'

__all__ = [
    "visualize",
    "target_layer",
    "render",
    "FeatvisResult",
    "build_objective",
    "image_generators",
    "OBJECTIVES",
    "Objective",
    "Channel",
    "Neuron",
    "LayerL2",
    "ClassLogit",
    "L2",
    "TotalVariation",
    "Blur",
    "Weighted",
    "PixelImage",
    "FourierImage",
    "decorrelate_colors",
    "Pad",
    "Jitter",
    "RandomScale",
    "RandomRotate",
    "Pipeline",
    "Recipe",
    "KerasRecipe",
    "LucidRecipe",
    "RECIPES",
    "get_recipe",
    "first_layer_kernels",
    "first_conv",
    "filters_report",
    "kernel_report",
    "FiltersReport",
    "KernelsReport",
    "ChannelValue",
]
