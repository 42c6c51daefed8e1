"""Classification: images -> top-k classes with probabilities.

Example:
    >>> import numpy as np
    >>> from convlens.models import load_model
    >>> b = load_model("resnet18")
    >>> len(predict(b, [np.zeros((32, 32, 3), np.uint8)], topk=3)[0])
    3
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from convlens.errors import InputError
from convlens.hooks import preserve_state
from convlens.io import list_images, load_image
from convlens.models import ModelBundle, load_model

__all__ = ["TopClass", "Prediction", "predict", "predict_files"]


@dataclass(frozen=True)
class TopClass:
    """One ranked class (JSON keys: ``class``, ``label``, ``prob``)."""

    cls: int
    label: str
    prob: float

    _json_names = {"cls": "class"}  # class attribute, not a field


@dataclass(frozen=True)
class Prediction:
    """Top-k classes for one image."""

    image: str
    top: list[TopClass]


def predict(bundle: ModelBundle, images: Sequence[np.ndarray], *, topk: int = 5, batch_size: int = 32) -> list[list[TopClass]]:
    """Softmax top-k for each image (RGB uint8 arrays), batched, under ``no_grad``; model mode restored.

    ``p = softmax(model(preprocess(image)))``.
    """
    if topk < 1:
        raise InputError(f"topk must be >= 1, got {topk}.")
    out: list[list[TopClass]] = []
    dev = bundle.device
    with preserve_state(bundle.model, train=False), torch.no_grad():
        for i in range(0, len(images), batch_size):
            x = bundle.preprocess(list(images[i : i + batch_size])).to(dev)
            logits = bundle.model(x)
            if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
                raise InputError("the model's output is not a (N, classes) tensor of logits; predict needs a classifier.")
            probs = logits.float().softmax(-1)
            k = min(topk, probs.shape[1])
            vals, idx = probs.topk(k, dim=1)
            for v_row, i_row in zip(vals.tolist(), idx.tolist(), strict=True):
                out.append([TopClass(int(c), bundle.label(int(c)), float(v)) for v, c in zip(v_row, i_row, strict=True)])
    return out


def predict_files(
    paths: Sequence[str | os.PathLike[str]],
    *,
    model: str = "efficientnet_lite0",
    weights: str | os.PathLike[str] | None = None,
    topk: int = 5,
    device: str = "cpu",
) -> list[Prediction]:
    """Load a model and predict every image file (folders expanded)."""
    files = [f for p in paths for f in list_images(p)]
    if not files:
        raise InputError("no image files found in the given paths.")
    bundle = load_model(model, weights=weights, device=device)
    tops = predict(bundle, [load_image(f) for f in files], topk=topk)
    return [Prediction(str(f), t) for f, t in zip(files, tops, strict=True)]
