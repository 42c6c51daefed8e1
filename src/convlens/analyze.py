"""The per-image analysis, as one core call: what a model predicts for one image, what its stages
compute, where several CAM methods say it looked (with faithfulness metrics), and which filters of a
middle stage respond most (their maps and their feature visualizations).

:func:`analyze_image` returns an :class:`ImageAnalysis` (numbers and tensors, no figures, no files);
the per-image report (:mod:`convlens.report.image`), and any other front end, only render it. It
combines :mod:`convlens.inspect`, :mod:`convlens.explain` and :mod:`convlens.featvis`, which do not
import each other, so it sits above them.

Example:
    >>> import numpy as np
    >>> from convlens.models import load_model
    >>> b = load_model("resnet18")
    >>> a = analyze_image(b, np.full((40, 40, 3), 128, np.uint8), methods=["gradcam"], metrics=False,
    ...                   n_filters=2, filter_steps=1, filter_size=32)
    >>> a.cam_layers, [c.method for c in a.cams], a.filters.layer, len(a.filters.channels)
    (['layer4'], ['gradcam'], 'layer2', 2)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from convlens.errors import InputError

__all__ = ["CamMethodResult", "FilterResponse", "ImageAnalysis", "analyze_image"]


@dataclass
class CamMethodResult:
    """One CAM method on the image: its map (H, W) in [0, 1] over the model's input frame and, when
    computed, the faithfulness numbers (deletion / insertion AUC of the explained class's probability,
    average drop in %)."""

    method: str
    layers: list[str]
    deletion_auc: float | None = None
    insertion_auc: float | None = None
    average_drop: float | None = None
    map: torch.Tensor | None = field(default=None, repr=False, metadata={"json": False})


@dataclass
class FilterResponse:
    """The channels of a middle stage that respond most to the image: their activation maps (C, h, w)
    and what each responds to most (feature visualization images (C, 3, S, S) and objective values)."""

    layer: str
    channels: list[int]
    values: list[float] = field(default_factory=list)
    maps: torch.Tensor | None = field(default=None, repr=False, metadata={"json": False})
    images: torch.Tensor | None = field(default=None, repr=False, metadata={"json": False})


@dataclass
class ImageAnalysis:
    """Everything :func:`analyze_image` found about one image (JSON: every field but the tensors)."""

    image: str
    model: str
    pretrained: bool
    input: list[int]
    top: list[Any]  # convlens.inspect.TopClass
    stages: list[Any]  # convlens.inspect.LayerActivationStats, one per stage
    explained_class: int
    explained_label: str
    cam_layers: list[str]
    cams: list[CamMethodResult]
    filters: FilterResponse | None
    #: the image as the model sees it (resized, cropped), (H, W, 3) uint8
    shown: np.ndarray | None = field(default=None, repr=False, metadata={"json": False})
    #: each stage's activation (C, h, w) of the image, for figures
    activations: dict[str, torch.Tensor] = field(default_factory=dict, repr=False, metadata={"json": False})


def analyze_image(
    bundle: Any,  # convlens.models.ModelBundle
    image: np.ndarray,
    *,
    name: str = "image",
    methods: Sequence[str] = ("gradcam", "gradcam++", "layercam", "eigencam"),
    layer: str = "auto",
    topk: int = 5,
    metrics: bool = True,
    metric_steps: int = 20,
    n_filters: int = 4,
    filter_steps: int = 48,
    filter_size: int = 96,
    seed: int = 0,
) -> ImageAnalysis:
    """Analyze one (H, W, 3) uint8 image with a :class:`~convlens.models.ModelBundle`.

    1. top-``topk`` softmax prediction (:func:`convlens.inspect.predict`);
    2. per-stage activation statistics (``'stages'``, maps as (C, h, w) by the one layout conversion);
    3. each CAM method at ``layer`` (``'auto'``: the one auto layer) for the top-1 class, and with
       ``metrics`` the deletion/insertion AUC (``metric_steps`` steps) and average drop;
    4. the ``n_filters`` most active channels of the middle stage and their feature visualizations
       (lucid recipe, ``filter_steps`` steps at ``filter_size`` px, ``seed``).
    """
    from convlens.explain import explain
    from convlens.featvis import visualize
    from convlens.inspect import activation_stats, get_activations, predict
    from convlens.inspect.activations import to_nchw

    if not methods:
        raise InputError("give at least one CAM method (e.g. --methods gradcam).")
    model = bundle.model
    x = bundle.preprocess([image]).to(bundle.device)
    top = predict(bundle, [image], topk=topk)[0]
    acts = to_nchw(model, x, get_activations(model, x, "stages"))
    stats = activation_stats(acts, topk=8)
    res = {m: explain(model, x, m, layer) for m in methods}
    first = res[methods[0]]
    target = int(first.targets[0])
    cams = []
    for m, r in res.items():
        row = CamMethodResult(m, list(r.layers), map=r.maps[0].detach().float().cpu())
        if metrics:
            from convlens.explain.metrics import confidence_change, deletion_curve, insertion_curve

            row.deletion_auc = float(deletion_curve(model, x, r.maps, [target], steps=metric_steps).auc[0])
            row.insertion_auc = float(insertion_curve(model, x, r.maps, [target], steps=metric_steps).auc[0])
            row.average_drop = float(confidence_change(model, x, r.maps, [target]).average_drop)
        cams.append(row)
    names = list(acts)
    mid = names[len(names) // 2]
    st = next(s for s in stats if s.layer == mid)
    chans = [c.channel for c in st.top_channels[:n_filters]]
    filters = None
    if chans and acts[mid].ndim == 4:
        vis = visualize(
            bundle, mid, chans, recipe="lucid", steps=filter_steps, size=filter_size, seed=seed, return_result=True
        )
        filters = FilterResponse(
            mid, chans, [float(v) for v in vis.values.tolist()], acts[mid][0, chans].detach().cpu(), vis.images.cpu()
        )
    return ImageAnalysis(
        image=name,
        model=bundle.meta.name,
        pretrained=bool(getattr(bundle, "pretrained", bundle.meta.pretrained)),
        input=list(x.shape[1:]),
        top=list(top),
        stages=stats,
        explained_class=target,
        explained_label=bundle.label(target),
        cam_layers=list(first.layers),
        cams=cams,
        filters=filters,
        shown=bundle.preprocess.resize_image(image),
        activations={k: v[0].detach().cpu() for k, v in acts.items()},
    )
