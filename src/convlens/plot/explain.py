"""Figures for class activation maps: a map blended on the image the model saw, a side-by-side grid
of methods, and deletion/insertion curves.

The image under a map must be the image *as the model sees it* (resized/cropped, not normalized):
``bundle.preprocess.resize_image(img)``; the maps are in that frame.

Example:
    >>> import numpy as np
    >>> img = np.zeros((8, 8, 3), np.uint8)
    >>> cam_overlay(img, np.eye(8)).shape
    (8, 8, 3)
    >>> len(methods_grid(img, {"gradcam": np.eye(8), "eigencam": np.ones((8, 8))}).axes)  # 3 tiles + colorbar
    4
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from convlens.errors import InputError
from convlens.plot import apply_colormap, image_grid, line_plot, overlay

__all__ = [
    "cam_overlay",
    "cam_figure",
    "methods_grid",
    "guided_to_rgb",
    "channels_figure",
    "curves_figure",
    "map_to_rgb",
    "to_numpy_map",
]


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


def guided_to_rgb(guided: Any) -> np.ndarray:
    """A signed (3, H, W) Guided Grad-CAM / guided-backprop tensor as an RGB uint8 image: standardized,
    scaled by 0.1 and centred on mid-grey (pytorch-grad-cam's ``deprocess_image``), so positive and
    negative evidence show as colours around grey instead of one heatmap channel.

    Example:
        >>> guided_to_rgb(np.zeros((3, 2, 2)))[0, 0].tolist()
        [127, 127, 127]
    """
    if hasattr(guided, "detach"):
        guided = guided.detach().float().cpu().numpy()
    g = np.asarray(guided, dtype=np.float64)
    if g.ndim == 4 and g.shape[0] == 1:
        g = g[0]
    if g.ndim != 3 or g.shape[0] not in (1, 3):
        raise InputError(f"a guided map must be (3, H, W), got shape {g.shape}.")
    g = (g - g.mean()) / (g.std() + 1e-5) * 0.1 + 0.5
    rgb = np.clip(g.transpose(1, 2, 0), 0.0, 1.0)
    if rgb.shape[2] == 1:
        rgb = np.repeat(rgb, 3, axis=2)
    return (rgb * 255).astype(np.uint8)  # truncation, as deprocess_image


def _headline(label: str | None, score: float | None, layer: str | None) -> str:
    parts = []
    if label is not None:
        parts.append(label + (f" ({score:.1%})" if score is not None and 0 <= score <= 1 else ""))
        if score is not None and not 0 <= score <= 1:
            parts[-1] += f" (score {score:.3g})"
    if layer:
        parts.append(f"layer {layer}")
    return ", ".join(parts)


def cam_figure(
    image: np.ndarray,
    cam_map: Any,
    *,
    label: str | None = None,
    score: float | None = None,
    method: str = "",
    layer: str | None = None,
    alpha: float = 0.5,
    cmap: str = "turbo",
    guided: Any = None,
) -> Figure:
    """One CAM, labelled for a lecture: the overlay, a colorbar (0 = no evidence, 1 = the map's maximum),
    and a title with the class name, its probability (or score), the method and the layer. With
    ``guided`` (Guided Grad-CAM's signed (3, H, W) product) the map is shown as the RGB image it is.

    Example:
        >>> fig = cam_figure(np.zeros((8, 8, 3), np.uint8), np.eye(8), label="cat", score=0.8, method="gradcam", layer="bn2")
        >>> fig.axes[0].get_title()
        'gradcam: cat (80.0%), layer bn2'
    """
    fig = Figure(figsize=(4.6, 4.0), dpi=100)
    ax = fig.add_axes((0.02, 0.04, 0.78, 0.84))
    head = _headline(label, score, layer)
    title = f"{method}: {head}" if method and head else method or head
    if guided is not None:
        ax.imshow(guided_to_rgb(guided))
        title += "\n(guided backprop x Grad-CAM, RGB; grey = 0)"
    else:
        ax.imshow(cam_overlay(image, cam_map, alpha=alpha, cmap=cmap))
        _colorbar(fig, cmap, (0.84, 0.1, 0.04, 0.72))
    ax.set_title(title, fontsize=9)
    ax.set_axis_off()
    return fig


def _colorbar(fig: Figure, cmap: str, rect: tuple[float, float, float, float]) -> None:
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    cax = fig.add_axes(rect)
    cb = fig.colorbar(ScalarMappable(Normalize(0, 1), cmap=cmap), cax=cax)
    cb.set_label("map (0 = none, 1 = max)", fontsize=7)
    cb.ax.tick_params(labelsize=7)


def methods_grid(
    image: np.ndarray,
    maps: Mapping[str, Any],
    *,
    alpha: float = 0.5,
    cmap: str = "turbo",
    title: str | None = None,
    ncols: int | None = None,
    label: str | None = None,
    score: float | None = None,
    layer: str | None = None,
    guided: Mapping[str, Any] | None = None,
) -> Figure:
    """The image, then one overlay per method (titles = method names), at most 4 per row, with a shared
    colorbar and a headline naming the class, its score and the layer. Methods in ``guided`` (name ->
    signed (3, H, W) product, e.g. Guided Grad-CAM) are drawn as RGB images, not heatmaps.

    Example:
        >>> fig = methods_grid(np.zeros((4, 4, 3), np.uint8), {"a": np.ones((4, 4))}, title="cat")
        >>> [ax.get_title() for ax in fig.axes][:2]
        ['image', 'a']
    """
    if not maps:
        raise InputError("methods_grid needs at least one map.")
    guided = guided or {}
    tiles = [np.asarray(image)] + [
        guided_to_rgb(guided[k]) if k in guided else cam_overlay(image, m, alpha=alpha, cmap=cmap)
        for k, m in maps.items()
    ]
    titles = ["image", *(f"{k} (RGB)" if k in guided else k for k in maps)]
    head = _headline(label, score, layer)
    sup = " - ".join(t for t in (title, head) if t) or None
    fig = image_grid(tiles, titles=titles, ncols=ncols or min(len(tiles), 4), suptitle=sup, tile_inches=2.2)
    if len(guided) < len(maps):  # heatmaps present: one colorbar for all of them, right of the grid
        w, h = fig.get_size_inches()
        fig.set_size_inches(w + 0.9, h)
        for ax in fig.axes:
            x0, y0, bw, bh = ax.get_position().bounds
            ax.set_position((x0 * w / (w + 0.9), y0, bw * w / (w + 0.9), bh))
        if fig._suptitle is not None:
            fig._suptitle.set_x(0.5 * w / (w + 0.9))
        _colorbar(fig, cmap, ((w + 0.15) / (w + 0.9), 0.15, 0.2 / (w + 0.9), 0.6))
    return fig


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


def channels_figure(image: np.ndarray, contrib: Any, *, index: int = 0, k: int = 7, cmap: str = "turbo") -> Figure:
    """Which channels carry the map: the Grad-CAM map, then the ``k`` channels with the largest
    contribution (:func:`convlens.explain.gradcam_channels`), each titled with its share of the total.

    Example:
        >>> import torch
        >>> from convlens.explain import ChannelContributions
        >>> m = torch.rand(1, 3, 4, 4)
        >>> c = ChannelContributions("l", torch.zeros(1), torch.ones(1, 3), m, m.sum((2, 3)), m.sum((2, 3)) / m.sum())
        >>> len(channels_figure(np.zeros((8, 8, 3), np.uint8), c, k=2).axes)  # map + 2 channels + colorbar
        4
    """
    import torch
    import torch.nn.functional as F

    size = np.asarray(image).shape[:2]

    def up(t: Any) -> np.ndarray:
        t = t[None, None].float()
        return F.interpolate(t, size=size, mode="bilinear", align_corners=False)[0, 0].cpu().numpy()

    total = torch.relu(contrib.maps[index].sum(0))
    tiles, titles = [], []
    full = up(total)
    tiles.append(cam_overlay(image, full / full.max() if full.max() > 0 else full, cmap=cmap))
    titles.append(f"Grad-CAM ({contrib.layer})")
    for ch, share in contrib.top(index, k):
        m = up(torch.relu(contrib.maps[index, ch]))
        tiles.append(cam_overlay(image, m / m.max() if m.max() > 0 else m, cmap=cmap))
        titles.append(f"channel {ch}: {share:+.1%}")
    fig = image_grid(
        tiles, titles=titles, ncols=min(len(tiles), 4), suptitle="channels that carry the map (share of the total)"
    )
    w, h = fig.get_size_inches()
    fig.set_size_inches(w + 0.9, h)
    for ax in fig.axes:
        x0, y0, bw, bh = ax.get_position().bounds
        ax.set_position((x0 * w / (w + 0.9), y0, bw * w / (w + 0.9), bh))
    _colorbar(fig, cmap, ((w + 0.15) / (w + 0.9), 0.15, 0.2 / (w + 0.9), 0.6))
    return fig
