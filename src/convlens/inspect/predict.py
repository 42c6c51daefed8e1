"""Classification: images -> top-k classes with probabilities.

Example:
    >>> import numpy as np
    >>> from convlens.models import load_model
    >>> b = load_model("resnet18")
    >>> len(predict(b, [np.zeros((32, 32, 3), np.uint8)], topk=3)[0])
    3
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from convlens.errors import InputError
from convlens.hooks import preserve_state
from convlens.io import SkippedFile, iter_image_batches
from convlens.models import ModelBundle, load_model, logits

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
    """Top-k classes for one image; ``pretrained`` says whether the model's weights are trained ones."""

    image: str
    top: list[TopClass]
    pretrained: bool = True


def predict(
    bundle: ModelBundle, images: Sequence[np.ndarray], *, topk: int = 5, batch_size: int = 32
) -> list[list[TopClass]]:
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
            scores = logits(bundle.model(x))  # tensor, (logits, aux) tuple, {'logits': ...}, .logits
            probs = scores.float().softmax(-1)
            k = min(topk, probs.shape[1])
            vals, idx = probs.topk(k, dim=1)
            for v_row, i_row in zip(vals.tolist(), idx.tolist(), strict=True):
                out.append(
                    [TopClass(int(c), bundle.label(int(c)), float(v)) for v, c in zip(v_row, i_row, strict=True)]
                )
    return out


@dataclass(frozen=True)
class PredictionRun:
    """What :func:`predict_files` returns: one :class:`Prediction` per readable image, in file order, and the
    files skipped inside folders (unreadable) with their reasons."""

    predictions: list[Prediction]
    skipped: list[SkippedFile] = field(default_factory=list)


def predict_files(
    paths: Sequence[str | os.PathLike[str]],
    *,
    model: str = "efficientnet_lite0",
    weights: str | os.PathLike[str] | None = None,
    topk: int = 5,
    device: str = "cpu",
    batch_size: int = 32,
) -> PredictionRun:
    """Load a model and predict every image file (folders expanded), ``batch_size`` images in memory at a time.

    Files are read by :func:`convlens.io.iter_image_batches` (the one policy): a file named explicitly must
    be readable (InputError otherwise); unreadable files found inside a folder are skipped and listed in
    the result's ``skipped``.

    Example:
        >>> import tempfile, numpy as np
        >>> from PIL import Image
        >>> d = tempfile.mkdtemp()
        >>> Image.fromarray(np.full((40, 40, 3), 128, np.uint8)).save(f"{d}/grey.png")
        >>> _ = open(f"{d}/broken.jpg", "wb").write(b"not a jpeg")
        >>> from pathlib import Path
        >>> run = predict_files([d], model="resnet18", topk=1)
        >>> [Path(p.image).name for p in run.predictions], [Path(s.path).name for s in run.skipped]
        (['grey.png'], ['broken.jpg'])
    """
    batches = iter_image_batches(paths, batch_size)
    first = next(batches)  # files are found (and named files checked) before the model loads
    bundle = load_model(model, weights=weights, device=device)
    results: list[Prediction] = []
    skipped: list[SkippedFile] = []
    for batch in itertools.chain([first], batches):
        skipped += batch.skipped
        if batch.images:
            tops = predict(bundle, batch.images, topk=topk, batch_size=batch_size)
            results += [Prediction(str(f), t, bundle.pretrained) for f, t in zip(batch.files, tops, strict=True)]
    return PredictionRun(results, skipped)
