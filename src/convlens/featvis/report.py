"""The ``filters`` pipeline as core calls: :func:`filters_report` renders feature visualizations for a
loaded model and returns a :class:`FiltersReport` (numbers for JSON, the images kept for figures);
:func:`kernel_report` returns a conv layer's kernels as RGB tiles in a :class:`KernelsReport`. Front
ends (``convlens filters``, the report, a server) only draw and serialize them; ``out`` is the file a
front end drew the grid to (None until one does).

Example:
    >>> from convlens.models import load_model
    >>> b = load_model("resnet18")
    >>> k = kernel_report(b)
    >>> k.layer, k.kernels, k.kernel_shape
    ('conv1', 64, [3, 7, 7])
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from convlens.featvis.kernels import first_layer_kernels
from convlens.featvis.render import FeatvisResult, target_layer, visualize
from convlens.serialize import to_jsonable

if TYPE_CHECKING:
    import torch

    from convlens.models import ModelBundle

__all__ = ["ChannelValue", "FiltersReport", "KernelsReport", "filters_report", "kernel_report"]


@dataclass
class ChannelValue:
    """One rendered channel (a class with objective ``class``): the final and starting objective values."""

    channel: int
    value: float
    start_value: float


@dataclass
class FiltersReport:
    """What :func:`filters_report` found (``convlens filters --json`` prints :meth:`to_dict`)."""

    model: str
    layer: str
    objective: str
    recipe: str
    steps: int
    size: int
    seed: int
    device: str
    out: str | None
    truncated_after: str | None
    seconds: float
    channels: list[ChannelValue] = field(default_factory=list)
    recipe_params: dict = field(default_factory=dict)
    pretrained: bool = True  # False: random weights, the images show nothing learned
    #: the rendering itself (images (N, 3, S, S) in [0, 1], history ...), for figures
    result: FeatvisResult | None = field(default=None, repr=False, metadata={"json": False})

    def to_dict(self) -> dict[str, Any]:
        """JSON form: every field but the rendering (:func:`convlens.serialize.to_jsonable`)."""
        return to_jsonable(self)


@dataclass
class KernelsReport:
    """A conv layer's kernels shown directly (``convlens filters --kernels --json`` prints :meth:`to_dict`)."""

    model: str
    pretrained: bool
    layer: str
    kernels: int
    kernel_shape: list[int]
    out: str | None = None
    #: (C_out, 3, kh, kw) tiles in [0, 1] (:func:`first_layer_kernels`), for figures
    tiles: torch.Tensor | None = field(default=None, repr=False, metadata={"json": False})

    def to_dict(self) -> dict[str, Any]:
        """JSON form: every field but the tiles (:func:`convlens.serialize.to_jsonable`)."""
        return to_jsonable(self)


def kernel_report(bundle: ModelBundle, layer: str = "auto") -> KernelsReport:
    """The kernels of ``layer`` of ``bundle``'s model (``'auto'``: the first conv on the image,
    :func:`convlens.layers.first_conv`) as RGB tiles (:func:`first_layer_kernels`).

    Example:
        >>> from convlens.models import load_model
        >>> kernel_report(load_model("resnet18"), "conv1").kernel_shape
        [3, 7, 7]
    """
    from convlens.layers import first_conv

    name = first_conv(bundle.model, bundle.meta.input_size).name if layer == "auto" else layer
    tiles = first_layer_kernels(bundle.model, name)
    return KernelsReport(
        bundle.meta.name, bundle.pretrained, name, int(tiles.shape[0]), list(tiles.shape[1:]), None, tiles
    )


def filters_report(
    bundle: ModelBundle,
    layer: str,
    channels: Sequence[int],
    *,
    objective: str = "channel",
    recipe: str = "lucid",
    steps: int = 256,
    size: int = 128,
    seed: int = 0,
    device: str | None = None,
    callback: Callable[[int, int], None] | None = None,
) -> FiltersReport:
    """Feature visualization of ``channels`` of ``layer`` (``'auto'``: :func:`target_layer` at ``size``,
    the layer every front end uses; ignored for objective ``'class'``, which reads the output) in one
    batch (:func:`visualize`), timed, with each channel's starting and final objective value and the
    recipe's parameters.

    Example:
        >>> from convlens.models import load_model
        >>> r = filters_report(load_model("resnet18"), "auto", [0, 1], steps=1, size=32)
        >>> r.layer, [c.channel for c in r.channels], tuple(r.result.images.shape)
        ('layer3', [0, 1], (2, 3, 32, 32))
    """
    layer_name = target_layer(bundle, layer, size=size) if objective != "class" else "output"
    t0 = time.perf_counter()
    res = visualize(
        bundle,
        layer_name,
        list(channels),
        objective=objective,
        recipe=recipe,
        steps=steps,
        size=size,
        seed=seed,
        device=device,
        callback=callback,
        return_result=True,
    )
    seconds = time.perf_counter() - t0
    values = res.values.cpu().tolist()
    starts = res.start_values.cpu().tolist()
    return FiltersReport(
        model=bundle.meta.name,
        pretrained=bundle.pretrained,
        layer=layer_name,
        objective=objective,
        recipe=recipe,
        steps=steps,
        size=size,
        seed=seed,
        device=str(res.images.device),
        out=None,
        truncated_after=res.truncated_after,
        seconds=round(seconds, 3),
        channels=[ChannelValue(c, float(v), float(s)) for c, v, s in zip(channels, values, starts, strict=True)],
        recipe_params={k: v for k, v in dataclasses.asdict(res.recipe).items() if k != "extra"},
        result=res,
    )
