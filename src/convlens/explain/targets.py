"""What to explain: targets beyond "class c of a classifier".

A target is anything :func:`convlens.explain.explain` accepts: ``None`` (each image's top-1), a class
index, one index per image, or a callable ``fn(output) -> (N,)`` scoring each row of a model output
on its own (it is also applied to batches of perturbed copies). This module adds the callables for
other tasks, and :func:`parse_target`, the ONE reader of target specs (``convlens cam --target``):

* :class:`BoxScoreTarget` -- detection (torchvision Faster R-CNN, RetinaNet, any model returning
  a list of ``{'boxes', 'scores', 'labels'}`` dicts): ``max_d score_d * IoU(box_d, box)`` over the
  detections (of the class, when given);
* :class:`MaskTarget` -- semantic segmentation (torchvision FCN/DeepLabV3, ``{'out': (N, K, H, W)}``
  or a (N, K, H, W) tensor): the sum of a class's logits inside a mask;
* :class:`EmbeddingTarget` -- embeddings: cosine similarity of the output vector to a reference;
* :class:`MultiLabelTarget` -- multi-label heads: the sum of the sigmoid probabilities of labels.

Other detectors follow the same pattern: a callable taking the model's output for a batch and
returning one differentiable score per image (see :class:`BoxScoreTarget` for the shape of one).

Example:
    >>> import torch
    >>> t = MultiLabelTarget([0, 2])
    >>> t(torch.zeros(2, 3)).tolist()
    [1.0, 1.0]
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from convlens.errors import InputError

__all__ = [
    "BoxScoreTarget",
    "MaskTarget",
    "EmbeddingTarget",
    "MultiLabelTarget",
    "TopK",
    "parse_target",
    "batch_targets",
    "class_index",
    "box_iou",
]


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of boxes ``a`` (M, 4) with boxes ``b`` (K, 4), ``(x0, y0, x1, y1)``: (M, K) (differentiable).

    Example:
        >>> box_iou(torch.tensor([[0.0, 0, 2, 2]]), torch.tensor([[1.0, 0, 3, 2]])).tolist()
        [[0.3333333432674408]]
    """
    area = lambda t: (t[:, 2] - t[:, 0]).clamp(min=0) * (t[:, 3] - t[:, 1]).clamp(min=0)  # noqa: E731
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    union = area(a)[:, None] + area(b)[None, :] - inter
    return inter / union.clamp(min=1e-12)


class BoxScoreTarget:
    r"""Detection target: how strongly the model detects an object at ``box`` (of class ``label``).

    .. math:: s = \max_d \; \mathrm{score}_d \cdot \mathrm{IoU}(\mathrm{box}_d, \mathrm{box})

    over the detections ``d`` of each image (only those of ``label`` when given; 0 when there are
    none). Works with any model whose output is a list of dicts with ``boxes`` (D, 4), ``scores``
    (D,) and ``labels`` (D,) -- torchvision's Faster R-CNN and RetinaNet in eval mode. (Random or weak
    detectors may return nothing above their ``score_thresh``: lower it, e.g.
    ``model.roi_heads.score_thresh = 0``.) Box coordinates are pixels of the model's input tensor.

    Example:
        >>> out = [{"boxes": torch.tensor([[0.0, 0, 10, 10]]), "scores": torch.tensor([0.5]), "labels": torch.tensor([3])}]
        >>> BoxScoreTarget((0, 0, 10, 5), label=3)(out).tolist()
        [0.25]
    """

    def __init__(self, box: Sequence[float], label: int | None = None) -> None:
        if len(box) != 4 or not (box[2] > box[0] and box[3] > box[1]):
            raise InputError(f"a box is (x0, y0, x1, y1) with x1 > x0 and y1 > y0, got {tuple(box)}.")
        self.box = torch.tensor([float(v) for v in box])
        self.label = label

    def __call__(self, output: Any) -> torch.Tensor:
        if not isinstance(output, (list, tuple)) or not all(isinstance(o, dict) and "boxes" in o for o in output):
            raise InputError(
                "a box target needs a detection model whose output is a list of {'boxes', 'scores', 'labels'} "
                "dicts (torchvision Faster R-CNN / RetinaNet); this model's output is not."
            )
        scores = []
        for det in output:
            boxes, sc = det["boxes"], det["scores"]
            keep = torch.ones_like(sc, dtype=torch.bool) if self.label is None else det["labels"] == self.label
            iou = box_iou(boxes, self.box.to(boxes)[None])[:, 0]
            s = (sc * iou)[keep]
            scores.append(s.max() if s.numel() else sc.sum() * 0.0 + boxes.sum() * 0.0)
        return torch.stack(scores)


def _seg_logits(output: Any) -> torch.Tensor:
    if isinstance(output, dict) and isinstance(output.get("out"), torch.Tensor):
        output = output["out"]
    if not isinstance(output, torch.Tensor) or output.ndim != 4:
        got = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise InputError(
            f"a mask target needs a segmentation output (N, classes, H, W) or a dict with 'out' (FCN, DeepLabV3), got {got}."
        )
    return output


class MaskTarget:
    r"""Segmentation target: the summed logits of class ``label`` inside ``mask``.

    .. math:: s = \sum_{(u, v) \in \mathrm{mask}} z_{\mathrm{label}, uv}

    (pytorch-grad-cam's ``SemanticSegmentationTarget``). ``mask`` (H, W) is resized (nearest) to the
    output's grid. Without ``label``, each image's class with the largest mean logit inside the mask.

    Example:
        >>> out = {"out": torch.arange(8.0).reshape(1, 2, 2, 2)}
        >>> MaskTarget(torch.tensor([[1, 0], [0, 1]]), label=1)(out).tolist()  # 4 + 7
        [11.0]
    """

    def __init__(self, mask: Any, label: int | None = None) -> None:
        m = torch.as_tensor(np.asarray(mask) if not isinstance(mask, torch.Tensor) else mask)
        if m.ndim != 2:
            raise InputError(f"a mask must be (H, W), got shape {tuple(m.shape)}.")
        if not bool((m != 0).any()):
            raise InputError("the mask is empty: mark at least one pixel.")
        self.mask = (m != 0).float()
        self.label = label

    def __call__(self, output: Any) -> torch.Tensor:
        z = _seg_logits(output)
        m = F.interpolate(self.mask[None, None].to(z), size=z.shape[2:], mode="nearest")[0, 0]
        sums = (z * m).sum(dim=(2, 3))  # (N, K)
        if self.label is None:
            cls = sums.detach().argmax(1)
        else:
            if not 0 <= self.label < z.shape[1]:
                raise InputError(f"mask class {self.label} is out of range for {z.shape[1]} classes.")
            cls = torch.full((z.shape[0],), self.label, device=z.device, dtype=torch.long)
        return sums.gather(1, cls[:, None])[:, 0]


class EmbeddingTarget:
    r"""Embedding target: cosine similarity of each output vector to a reference embedding.

    .. math:: s = \frac{f(x) \cdot r}{\lVert f(x) \rVert\, \lVert r \rVert}

    ``f(x)`` is the model output flattened per image (for a classifier, its logits). The reference is
    typically the embedding of a concept image (``convlens cam --target like:REF.jpg``).

    Example:
        >>> EmbeddingTarget(torch.tensor([1.0, 0.0]))(torch.tensor([[2.0, 0.0], [0.0, 1.0]])).tolist()
        [1.0, 0.0]
    """

    def __init__(self, reference: torch.Tensor) -> None:
        r = torch.as_tensor(reference).detach().float().reshape(-1)
        if not bool(torch.isfinite(r).all()) or float(r.norm()) == 0:
            raise InputError("the reference embedding must be finite and non-zero.")
        self.reference = r

    def __call__(self, output: Any) -> torch.Tensor:
        from convlens.explain.base import class_logits

        v = output if isinstance(output, torch.Tensor) else class_logits(output)
        if v is None:
            raise InputError("an embedding target needs a tensor output (N, D).")
        v = v.reshape(v.shape[0], -1)
        if v.shape[1] != self.reference.numel():
            raise InputError(f"the reference has {self.reference.numel()} values, the output {v.shape[1]} per image.")
        return F.cosine_similarity(v.float(), self.reference.to(v.device)[None], dim=1)


class MultiLabelTarget:
    r"""Multi-label target: the summed sigmoid probabilities of ``labels`` (one or several).

    .. math:: s = \sum_{k \in \mathrm{labels}} \sigma(z_k)

    Example:
        >>> MultiLabelTarget(1)(torch.tensor([[0.0, 0.0]])).tolist()
        [0.5]
    """

    def __init__(self, labels: int | Sequence[int]) -> None:
        self.labels = [int(labels)] if isinstance(labels, (int, np.integer)) else [int(v) for v in labels]
        if not self.labels:
            raise InputError("give at least one label.")

    def __call__(self, output: Any) -> torch.Tensor:
        from convlens.explain.base import class_logits

        z = class_logits(output)
        if z is None or max(self.labels) >= z.shape[1] or min(self.labels) < 0:
            raise InputError(f"labels {self.labels} do not fit the model's (N, labels) output.")
        return torch.sigmoid(z[:, self.labels].float()).sum(1)


class TopK:
    """Each image's ``k``-th most likely class (``top1`` is the prediction, ``top2`` the runner-up).

    Example:
        >>> TopK(2).k
        2
    """

    def __init__(self, k: int) -> None:
        if k < 1:
            raise InputError(f"topK needs K >= 1, got {k}.")
        self.k = k


def class_index(name: str, labels: Sequence[str] | None, *, what: str = "target") -> int:
    """The index of a class name (case-insensitive), with close matches suggested when it is unknown.

    Example:
        >>> class_index("egyptian CAT", ["tabby", "Egyptian cat"])
        1
    """
    if not labels:
        raise InputError(f"{what} '{name}' is a class name, but this model has no class names; give a class index.")
    low = [lbl.lower() for lbl in labels]
    key = name.strip().lower()
    if key in low:
        return low.index(key)
    # names containing the word first ('cat' -> 'tiger cat', 'Egyptian cat'), then spelling neighbours
    words = [lbl for lbl in low if key in re.split(r"[\s,'-]+", lbl)]
    close = (words + [c for c in difflib.get_close_matches(key, low, n=3, cutoff=0.6) if c not in words])[:3]
    hint = f"; did you mean {', '.join(repr(labels[low.index(c)]) for c in close)}?" if close else "."
    raise InputError(f"{what} must be top1, topK, a class index or a class name of this model; '{name}' is none{hint}")


def _label(text: str | None, bundle: Any, what: str) -> int | None:
    if text is None or text == "":
        return None
    t = text.strip()
    if t.isdigit():
        return int(t)
    return class_index(t, getattr(bundle, "labels", None), what=what)


def parse_target(spec: Any, bundle: Any = None, *, what: str = "target") -> Any:
    """Read a target spec once (``convlens cam --target``) -> something :func:`batch_targets` resolves.

    ``None``/``'top1'``; ``'topK'`` (:class:`TopK`); a class index; a class name (case-insensitive,
    ``'Egyptian cat'``); ``'box:x0,y0,x1,y1[:class]'`` (:class:`BoxScoreTarget`);
    ``'mask:FILE.png[:class]'`` (:class:`MaskTarget`, the mask image in the frame the model sees: it
    is resized/cropped like the input, non-black pixels are in); ``'like:REF.jpg'``
    (:class:`EmbeddingTarget` to the model's output for that image). Ints, lists and callables pass
    through. ``bundle`` supplies labels, preprocessing and the model.

    Example:
        >>> parse_target("top2").k, parse_target("7"), parse_target(None)
        (2, 7, None)
    """
    if spec is None or callable(spec) or isinstance(spec, (list, tuple, torch.Tensor)):
        return spec
    if isinstance(spec, bool):
        raise InputError(f"{what} must be top1, topK, a class index or name, got {spec!r}.")
    if isinstance(spec, (int, np.integer)):
        return _check_range(int(spec), bundle, what)
    if not isinstance(spec, str):
        raise InputError(f"{what} must be top1, topK, a class index or name, got {type(spec).__name__}.")
    text = spec.strip()
    low = text.lower()
    if low == "top1" or low == "":
        return None
    m = re.fullmatch(r"top(\d+)", low)
    if m:
        k = int(m.group(1))
        nc = getattr(getattr(bundle, "meta", None), "num_classes", 0) or 0
        if nc and k > nc:
            raise InputError(f"{what} top{k} is beyond the model's {nc} classes.")
        return TopK(k)
    if low.startswith("box:"):
        parts = text[4:].split(":")
        try:
            box = [float(v) for v in parts[0].split(",")]
        except ValueError:
            box = []
        if len(box) != 4 or len(parts) > 2:
            raise InputError(f"{what} box must look like box:x0,y0,x1,y1 or box:x0,y0,x1,y1:class, got '{text}'.")
        return BoxScoreTarget(box, _label(parts[1] if len(parts) == 2 else None, bundle, what))
    if low.startswith("mask:"):
        rest = text[5:]
        path, _, cls = (rest, "", "") if os.path.exists(rest) or ":" not in rest else rest.rpartition(":")
        return MaskTarget(_read_mask(path, bundle), _label(cls or None, bundle, what))
    if low.startswith("like:"):
        return EmbeddingTarget(_embed(text[5:], bundle))
    if text.isdigit():
        return _check_range(int(text), bundle, what)
    return class_index(text, getattr(bundle, "labels", None), what=what)


def _check_range(t: int, bundle: Any, what: str) -> int:
    nc = getattr(getattr(bundle, "meta", None), "num_classes", 0) or 0
    if t < 0 or (nc > 0 and t >= nc):  # 0 classes: the registry could not read them; explain checks then
        raise InputError(f"{what} must be < {nc} (the model's classes), got {t}." if nc else f"{what} must be >= 0.")
    return t


def _read_mask(path: str, bundle: Any) -> np.ndarray:
    from convlens.io import load_image

    img = load_image(path)
    if bundle is not None:
        img = bundle.preprocess.resize_image(img)
    return img.max(axis=2) > 0


def _embed(path: str, bundle: Any) -> torch.Tensor:
    from convlens.explain.base import class_logits
    from convlens.hooks import preserve_state
    from convlens.io import load_image

    if bundle is None:
        raise InputError("like:REF needs the model to embed the reference image.")
    x = bundle.preprocess([load_image(path)]).to(bundle.device)
    with torch.no_grad(), preserve_state(bundle.model, train=False):
        out = bundle.model(x)
    v = out if isinstance(out, torch.Tensor) else class_logits(out)
    if v is None:
        raise InputError("like:REF needs a model whose output is a tensor (N, D).")
    return v[0].reshape(-1)


def batch_targets(spec: Any, model: nn.Module, x: torch.Tensor) -> Any:
    """A parsed spec -> the targets of one batch (:class:`TopK` needs one no-grad forward).

    Example:
        >>> net = torch.nn.Linear(3, 4)
        >>> with torch.no_grad(): _ = net.weight.copy_(torch.eye(4, 3)), net.bias.zero_()
        >>> batch_targets(TopK(2), net, torch.tensor([[3.0, 1.0, 2.0]]))
        [2]
    """
    if not isinstance(spec, TopK):
        return spec
    from convlens.explain.base import class_logits
    from convlens.hooks import preserve_state

    with torch.no_grad(), preserve_state(model, train=False):
        z = class_logits(model(x))
    if z is None:
        raise InputError("topK targets need (N, classes) logits in the model output.")
    if spec.k > z.shape[1]:
        raise InputError(f"top{spec.k} is beyond the model's {z.shape[1]} classes.")
    return z.argsort(dim=1, descending=True)[:, spec.k - 1].tolist()
