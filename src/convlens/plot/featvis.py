"""Figures for feature visualization: labelled grids of rendered images and of first-layer kernels.

Example:
    >>> import torch
    >>> fig = featvis_grid(torch.rand(3, 3, 8, 8), [0, 1, 2], values=[1.0, 2.0, 3.0], layer="conv")
    >>> len(fig.axes)
    3
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from matplotlib.figure import Figure

from convlens.errors import InputError
from convlens.plot import image_grid

__all__ = ["featvis_grid", "kernel_grid", "to_hwc"]


def to_hwc(images: torch.Tensor | np.ndarray) -> list[np.ndarray]:
    """(N, 3, H, W) in [0, 1] -> list of (H, W, 3) float arrays clipped to [0, 1].

    Example:
        >>> to_hwc(torch.zeros(2, 3, 4, 5))[0].shape
        (4, 5, 3)
    """
    a = (
        images.detach().float().cpu().numpy()
        if isinstance(images, torch.Tensor)
        else np.asarray(images, dtype=np.float32)
    )
    if a.ndim != 4 or a.shape[1] != 3:
        raise InputError(f"expected images of shape (N, 3, H, W), got {tuple(a.shape)}.")
    return [np.clip(x.transpose(1, 2, 0), 0.0, 1.0) for x in a]


def _default_cols(n: int) -> int:
    """8 columns, or a square-ish grid for many tiles (512 channels: 23 x 23, not 8 x 64)."""
    return max(min(n, 8), math.ceil(math.sqrt(n)))


def featvis_grid(
    images: torch.Tensor | np.ndarray,
    channels: Sequence[int],
    *,
    values: Sequence[float] | None = None,
    layer: str = "",
    title: str | None = None,
    ncols: int | None = None,
    labels: Sequence[str] | None = None,
) -> Figure:
    """One tile per channel, titled ``ch <c>`` -- or, for class objectives, the class name ``labels[i]``
    with its index -- and the final objective value when given.

    Example:
        >>> featvis_grid(torch.rand(2, 3, 4, 4), [5, 9]).axes[1].get_title()
        'ch 9'
        >>> featvis_grid(torch.rand(1, 3, 4, 4), [285], labels=["Egyptian cat"]).axes[0].get_title()
        'Egyptian cat (285)'
    """
    tiles = to_hwc(images)
    if len(channels) != len(tiles):
        raise InputError(f"got {len(channels)} channel labels for {len(tiles)} images.")
    if values is not None and len(values) != len(tiles):
        raise InputError(f"got {len(values)} values for {len(tiles)} images.")
    if labels is not None and len(labels) != len(tiles):
        raise InputError(f"got {len(labels)} labels for {len(tiles)} images.")
    names = (
        [f"{lab} ({c})" for lab, c in zip(labels, channels, strict=True)] if labels else [f"ch {c}" for c in channels]
    )
    titles = [
        n if values is None else f"{n}  ({float(v):.3g})"
        for n, v in zip(names, values or [None] * len(tiles), strict=True)
    ]
    sup = title if title is not None else (f"{layer}" if layer else None)
    return image_grid(tiles, titles=titles, ncols=ncols or _default_cols(len(tiles)), suptitle=sup, tile_inches=1.8)


def kernel_grid(tiles: torch.Tensor | np.ndarray, *, layer: str = "", ncols: int | None = None) -> Figure:
    """First-layer kernels as RGB tiles (from :func:`convlens.featvis.first_layer_kernels`), drawn pixel-exact.

    Example:
        >>> len(kernel_grid(torch.rand(4, 3, 7, 7), ncols=2).axes)
        4
    """
    arr = to_hwc(tiles)
    titles = [str(i) for i in range(len(arr))]
    n = len(arr)
    return image_grid(
        arr,
        titles=titles,
        ncols=ncols or _default_cols(n),
        suptitle=f"{layer} kernels (0.5 = zero weight)" if layer else None,
        tile_inches=1.0,
    )
