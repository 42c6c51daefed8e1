"""Augmentation preview as one core call: :func:`augment_preview` draws ``n`` variants of one image with
the same pipeline, defaults and per-image draws (seed, epoch 0, image i) that training uses, and returns
an :class:`AugmentPreview` (the options and each draw's parameters for JSON; the tiles for figures).
``convlens augment --json`` prints its :meth:`AugmentPreview.to_dict`; ``out`` is the file a front end
drew the grid to (None until one does).

Example:
    >>> import numpy as np
    >>> p = augment_preview(np.zeros((20, 30, 3), np.uint8), "rotation=10", n=2, seed=0)
    >>> len(p.tiles), len(p.params), p.options["rotation"]
    (3, 2, 10.0)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from convlens.data.augment import AugmentParams, augment_for, sample_seed
from convlens.errors import InputError
from convlens.serialize import to_jsonable

__all__ = ["AugmentPreview", "augment_preview"]


@dataclass
class AugmentPreview:
    """The augmentation options (as ``train --augment`` takes them) and the parameters drawn per variant."""

    out: str | None
    options: dict[str, Any]
    params: list[AugmentParams]
    #: the original (first) and the variants, (h, w, 3) uint8 each, for figures
    tiles: list[np.ndarray] = field(default_factory=list, repr=False, metadata={"json": False})

    def to_dict(self) -> dict[str, Any]:
        """JSON form: every field but the tiles (:func:`convlens.serialize.to_jsonable`)."""
        return to_jsonable(self)


def augment_preview(
    image: np.ndarray,
    options: str | None = None,
    data: str = "lfw",
    *,
    n: int = 16,
    image_size: int | None = None,
    size: int = 160,
    seed: int = 0,
) -> AugmentPreview:
    """``n`` augmented variants of ``image`` (H, W, 3) uint8: ``options`` parsed as ``train --augment``
    (``None``: ``data``'s training default, :func:`augment_for`), after the training pipeline's square
    resize to ``image_size`` when given, then shrunk so the longest side is at most ``size`` pixels;
    variant ``i`` uses the generator training uses for image ``i`` in epoch 0 (:func:`sample_seed`).

    Example:
        >>> p = augment_preview(np.zeros((8, 8, 3), np.uint8), "none", n=1)
        >>> bool((p.tiles[1] == p.tiles[0]).all())
        True
    """
    import torch
    from PIL import Image

    from convlens.data.datasets import to_tensor_images

    if n < 1:
        raise InputError(f"n must be >= 1, got {n}.")
    aug = augment_for(options, data)
    img = image
    if image_size is not None:  # the training pipeline's resize
        img = to_tensor_images([img], image_size)[0].permute(1, 2, 0).numpy()
    h, w = img.shape[:2]
    scale = size / max(h, w)
    if scale < 1:
        img = np.asarray(
            Image.fromarray(img).resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BILINEAR)
        )
    t = torch.from_numpy(np.ascontiguousarray(img).copy()).permute(2, 0, 1).contiguous()
    tiles, params = [img], []
    for i in range(n):
        gen = torch.Generator().manual_seed(sample_seed(seed, 0, i))
        p = aug.sample(gen, tuple(t.shape[-2:]))
        tiles.append(aug.apply(t, p).permute(1, 2, 0).numpy())
        params.append(p)
    return AugmentPreview(None, aug.to_dict(), params, tiles)
