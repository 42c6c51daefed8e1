"""Figures for class activation maps: a map blended on the image the model saw, a side-by-side grid
of methods, and deletion/insertion curves.

The image under a map must be the image *as the model sees it* (resized/cropped, not normalized):
``bundle.preprocess.resize_image(img)``; the maps are in that frame.

Example:
    >>> import numpy as np
    >>> img = np.zeros((8, 8, 3), np.uint8)
    >>> cam_overlay(img, np.eye(8)).shape
    (8, 8, 3)
    >>> len(methods_grid(img, {"gradcam": np.eye(8), "eigencam": np.ones((8, 8))}).axes)
    3
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from convlens.errors import InputError
from convlens.plot import apply_colormap, image_grid, line_plot, overlay

__all__ = ["cam_overlay", "methods_grid", "curves_figure", "map_to_rgb", "to_numpy_map"]


def to_numpy_map(m: Any) -> np.ndarray:
    """A (H, W) map from a tensor or array (a leading batch dim of 1 is dropped), as float64.

    Example:
        >>> to_numpy_map(np.ones((1, 2, 2))).shape
        (2, 2)
    """
    if hasattr(m, "detach"):
        m = m.detach().float().cpu().numpy()
    a = np.asarray(m, dtype=np.float64)
    if a.ndim == 3 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 2:
        raise InputError(f"a CAM map must be (H, W), got shape {a.shape}.")
    return a


def cam_overlay(image: np.ndarray, cam_map: Any, *, alpha: float = 0.5, cmap: str = "turbo") -> np.ndarray:
    """Blend a [0, 1] map over an RGB uint8 image: ``(1 - alpha) * image + alpha * colormap(map)``.

    ``cmap`` is a matplotlib colormap (``'turbo'``, ``'jet'``); the result is RGB uint8 (H, W, 3), the
    image's size (the map is resized bilinearly if needed). No BGR swap anywhere: save it with Pillow.

    Example:
        >>> out = cam_overlay(np.full((2, 2, 3), 255, np.uint8), np.zeros((2, 2)), alpha=1.0, cmap="jet")
        >>> out[0, 0].tolist()  # jet's low end is dark blue
        [0, 0, 128]
    """
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise InputError(
            f"the image must be RGB uint8 (H, W, 3), got {img.dtype} {img.shape}; use bundle.preprocess.resize_image(img)."
        )
    return overlay(img, np.clip(to_numpy_map(cam_map), 0.0, 1.0), alpha=alpha, cmap=cmap)


def methods_grid(
    image: np.ndarray,
    maps: Mapping[str, Any],
    *,
    alpha: float = 0.5,
    cmap: str = "turbo",
    title: str | None = None,
    ncols: int | None = None,
) -> Figure:
    """The image, then one overlay per method, side by side (titles = method names).

    Example:
        >>> fig = methods_grid(np.zeros((4, 4, 3), np.uint8), {"a": np.ones((4, 4))}, title="cat")
        >>> [ax.get_title() for ax in fig.axes]
        ['image', 'a']
    """
    if not maps:
        raise InputError("methods_grid needs at least one map.")
    tiles = [np.asarray(image)] + [cam_overlay(image, m, alpha=alpha, cmap=cmap) for m in maps.values()]
    titles = ["image", *maps.keys()]
    return image_grid(tiles, titles=titles, ncols=ncols or len(tiles), suptitle=title, tile_inches=2.2)


def curves_figure(curves: Mapping[str, tuple[Sequence[float], Sequence[float]]], *, kind: str = "deletion") -> Figure:
    """Deletion/insertion curves of several methods on one plot (``name -> (fractions, scores)``).

    Example:
        >>> curves_figure({"gradcam": ([0, 1], [0.9, 0.1])}).axes[0].get_xlabel()
        'fraction of pixels deleted'
    """
    verb = "deleted" if kind == "deletion" else "inserted"
    return line_plot(curves, xlabel=f"fraction of pixels {verb}", ylabel="target probability", title=f"{kind} curve")


def map_to_rgb(cam_map: Any, cmap: str = "turbo") -> np.ndarray:
    """Only the colour-mapped map, RGB uint8 (for side files).

    Example:
        >>> map_to_rgb(np.zeros((2, 3))).shape
        (2, 3, 3)
    """
    return apply_colormap(np.clip(to_numpy_map(cam_map), 0.0, 1.0), cmap)
