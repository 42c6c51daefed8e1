"""Figures: the one home of plotting. Every function returns a ``matplotlib.figure.Figure`` (or an
image array) built with the object API -- no pyplot state, no display, no ``show()``; saving is the
caller's job (``cli``/``report``), e.g. ``fig.savefig(path)``.

Topic-specific figures live in submodules of this package (``convlens.plot.<topic>``) and build on
these primitives.

Example:
    >>> import numpy as np
    >>> fig = image_grid([np.zeros((4, 4)), np.ones((4, 4))], titles=["a", "b"])
    >>> len(fig.axes)
    2
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg", force=False)  # harmless if a backend is set; we never open windows

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from convlens.errors import InputError

__all__ = ["image_grid", "apply_colormap", "overlay", "line_plot", "bar_plot", "normalize01", "figure_to_array"]


def normalize01(a: np.ndarray, *, per_channel_axis: int | None = None) -> np.ndarray:
    """Min-max scale to [0, 1]; a constant array maps to zeros (never NaN).

    Example:
        >>> normalize01(np.array([2.0, 4.0])).tolist()
        [0.0, 1.0]
    """
    a = np.asarray(a, dtype=np.float64)
    if per_channel_axis is None:
        lo, hi = np.nanmin(a), np.nanmax(a)
        return np.zeros_like(a) if not np.isfinite(hi - lo) or hi - lo <= 0 else (a - lo) / (hi - lo)
    moved = np.moveaxis(a, per_channel_axis, 0)
    return np.moveaxis(np.stack([normalize01(c) for c in moved]), 0, per_channel_axis)


def apply_colormap(values: np.ndarray, cmap: str = "turbo") -> np.ndarray:
    """(H, W) values in [0, 1] -> (H, W, 3) uint8 RGB through a matplotlib colormap.

    Example:
        >>> apply_colormap(np.zeros((2, 2))).shape
        (2, 2, 3)
    """
    v = np.clip(np.nan_to_num(np.asarray(values, dtype=np.float64)), 0.0, 1.0)
    rgba = colormaps[cmap](v)
    return (rgba[..., :3] * 255).round().astype(np.uint8)


def overlay(image: np.ndarray, heatmap: np.ndarray, *, alpha: float = 0.5, cmap: str = "turbo") -> np.ndarray:
    """Blend a [0, 1] heatmap (resized to the image if needed) over an RGB uint8 image.

    ``out = (1 - alpha) * image + alpha * colormap(heatmap)``.

    Example:
        >>> overlay(np.zeros((4, 4, 3), np.uint8), np.ones((2, 2))).shape
        (4, 4, 3)
    """
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3:
        raise InputError(f"overlay needs an (H, W, 3) RGB image, got shape {img.shape}.")
    if not 0.0 <= alpha <= 1.0:
        raise InputError(f"alpha must be in [0, 1], got {alpha}.")
    h = np.asarray(heatmap, dtype=np.float64)
    if h.shape != img.shape[:2]:
        from PIL import Image

        h = np.asarray(
            Image.fromarray(h.astype(np.float32), mode="F").resize((img.shape[1], img.shape[0]), Image.BILINEAR)
        )
    colored = apply_colormap(h, cmap).astype(np.float64)
    out = (1 - alpha) * img.astype(np.float64) + alpha * colored
    return out.round().clip(0, 255).astype(np.uint8)


def image_grid(
    images: Sequence[np.ndarray],
    *,
    titles: Sequence[str] | None = None,
    ncols: int | None = None,
    cmap: str = "viridis",
    tile_inches: float = 1.6,
    suptitle: str | None = None,
) -> Figure:
    """A grid of tiles without axes. 2-D arrays are drawn with ``cmap`` (each tile's own range);
    (H, W, 3) arrays as RGB (uint8 or floats in [0, 1]).

    Example:
        >>> image_grid([np.zeros((2, 2, 3), np.uint8)] * 3, ncols=2).axes[0].get_xticks().size
        0
    """
    n = len(images)
    if n == 0:
        raise InputError("image_grid needs at least one image.")
    if titles is not None and len(titles) != n:
        raise InputError(f"got {len(titles)} titles for {n} images.")
    ncols = ncols or min(n, 8)
    nrows = math.ceil(n / ncols)
    # Layout computed in inches, not left to tight_layout (which gives up on crowded grids and lets a row's
    # titles run into the images above): every title is wrapped to its tile's width, and every row gets
    # room for the tallest wrapped title, so no text can overlap another tile or title whatever the count.
    fs = 8.0
    char_in = 0.6 * fs / 72  # average glyph width of the default sans font at fs points
    line_in = 1.3 * fs / 72
    width = max(4, int(tile_inches / char_in))
    wrapped = [_wrap(t, width) for t in titles] if titles is not None else None
    lines = max((w.count("\n") + 1 for w in wrapped), default=0) if wrapped else 0
    gap, title_in = 0.12, (lines * line_in + 0.06 if lines else 0.0)
    fig_w = ncols * tile_inches + (ncols + 1) * gap
    sup = _wrap(suptitle, max(10, int(fig_w / (0.6 * 10 / 72)))) if suptitle else None
    sup_in = (sup.count("\n") + 1) * 1.35 * 10 / 72 + 0.1 if sup else 0.0
    row_in = tile_inches + title_in + gap
    fig_h = nrows * row_in + sup_in + gap
    fig = Figure(figsize=(fig_w, fig_h), dpi=100)
    for i, im in enumerate(images):
        r, c = divmod(i, ncols)
        left = gap + c * (tile_inches + gap)
        bottom = fig_h - sup_in - (r + 1) * row_in + gap
        ax = fig.add_axes((left / fig_w, bottom / fig_h, tile_inches / fig_w, tile_inches / fig_h))
        a = np.asarray(im)
        if a.ndim == 2:
            ax.imshow(a, cmap=cmap, interpolation="nearest")
        else:
            ax.imshow(a, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        if wrapped is not None:
            ax.set_title(wrapped[i], fontsize=fs, pad=3)
    if sup:
        fig.suptitle(sup, fontsize=10, y=1 - 0.05 / fig_h, va="top")
    return fig


def _wrap(text: str, width: int) -> str:
    """Wrap each line of ``text`` to at most ``width`` characters (long words are broken too)."""
    import textwrap

    return "\n".join(
        "\n".join(textwrap.wrap(part, width, break_long_words=True, break_on_hyphens=False)) or part
        for part in text.split("\n")
    )


def line_plot(
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    *,
    xlabel: str = "",
    ylabel: str = "",
    title: str = "",
    logy: bool = False,
    size: tuple[float, float] = (6.0, 4.0),
) -> Figure:
    """Named (x, y) series on one set of axes, with a legend.

    Example:
        >>> line_plot({"loss": ([0, 1], [1.0, 0.5])}, xlabel="epoch").axes[0].get_xlabel()
        'epoch'
    """
    fig = Figure(figsize=size, dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    for label, (x, y) in series.items():
        ax.plot(list(x), list(y), marker="o", markersize=3, label=label)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    if series:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def bar_plot(values: Mapping[str, float], *, ylabel: str = "", title: str = "", logy: bool = False) -> Figure:
    """One bar per named value.

    Example:
        >>> len(bar_plot({"a": 1.0, "b": 2.0}).axes[0].patches)
        2
    """
    fig = Figure(figsize=(max(4.0, 0.8 * len(values) + 2), 3.5), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    ax.bar(list(values.keys()), list(values.values()), color="#4477aa")
    if logy:
        ax.set_yscale("log")
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.tick_params(axis="x", labelrotation=30, labelsize=8)
    fig.tight_layout()
    return fig


def figure_to_array(fig: Figure) -> np.ndarray:
    """Render a figure to an (H, W, 3) uint8 array (Agg canvas; no file).

    Example:
        >>> figure_to_array(Figure(figsize=(1, 1), dpi=10)).shape
        (10, 10, 3)
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()
