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
from pathlib import Path

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
            logits = bundle.model(x)
            if isinstance(logits, (tuple, list)) and logits and isinstance(logits[0], torch.Tensor):
                logits = logits[0]  # (logits, aux...) outputs: the first tensor is the prediction
            if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
                got = (
                    f"shape {tuple(logits.shape)}" if isinstance(logits, torch.Tensor) else f"a {type(logits).__name__}"
                )
                raise InputError(
                    f"the model's output is not a (N, classes) tensor of logits (got {got}); predict needs a classifier."
                )
            probs = logits.float().softmax(-1)
            k = min(topk, probs.shape[1])
            vals, idx = probs.topk(k, dim=1)
            for v_row, i_row in zip(vals.tolist(), idx.tolist(), strict=True):
                out.append(
                    [TopClass(int(c), bundle.label(int(c)), float(v)) for v, c in zip(v_row, i_row, strict=True)]
                )
    return out


def predict_files(
    paths: Sequence[str | os.PathLike[str]],
    *,
    model: str = "efficientnet_lite0",
    weights: str | os.PathLike[str] | None = None,
    topk: int = 5,
    device: str = "cpu",
    batch_size: int = 32,
    skipped: list[tuple[str, str]] | None = None,
) -> list[Prediction]:
    """Load a model and predict every image file (folders expanded), ``batch_size`` images in memory at a time.

    A file named explicitly must be readable (InputError otherwise); unreadable files found inside a
    folder are skipped and, when ``skipped`` is a list, appended to it as ``(path, reason)``.
    """
    files: list[tuple[Path, bool]] = []  # (file, came from a folder)
    for p in paths:
        found = list_images(p)
        files += [(f, Path(p).is_dir()) for f in found]
    if not files:
        raise InputError("no image files found in the given paths.")
    bundle = load_model(model, weights=weights, device=device)
    results: list[Prediction] = []
    for i in range(0, len(files), batch_size):
        names, imgs = [], []
        for f, in_folder in files[i : i + batch_size]:
            try:
                imgs.append(load_image(f))
            except InputError as e:
                if not in_folder:
                    raise
                if skipped is not None:
                    skipped.append((str(f), str(e)))
                continue
            names.append(str(f))
        if imgs:
            tops = predict(bundle, imgs, topk=topk, batch_size=batch_size)
            results += [Prediction(n, t, bundle.pretrained) for n, t in zip(names, tops, strict=True)]
    if not results:
        raise InputError(f"none of the {len(files)} image file(s) found could be read (corrupt or not images).")
    return results
