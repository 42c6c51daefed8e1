"""Figures for the guided tour's worked examples: small matrices drawn with their numbers, so a
reader can redo the arithmetic by hand.

Example:
    >>> import numpy as np
    >>> fig = matrix_panels([("x", np.arange(4).reshape(2, 2))])
    >>> len(fig.axes), fig.axes[0].get_title()
    (1, 'x')
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from convlens.errors import InputError

__all__ = ["matrix_panels", "image_panels"]


def _fmt(v: float) -> str:
    if float(v).is_integer():
        return str(int(v))
    return f"{v:.2f}" if abs(v) < 100 else f"{v:.0f}"


def matrix_panels(
    panels: Sequence[tuple[str, np.ndarray] | tuple[str, np.ndarray, np.ndarray | None]],
    *,
    ncols: int | None = None,
    cmap: str = "Blues",
    cell_inches: float = 0.42,
    suptitle: str | None = None,
) -> Figure:
    """One panel per (title, 2-D matrix[, mask]) with every value written in its cell. Cells where
    ``mask`` is True are hatched (e.g. zero padding, or the window a pool picked from).

    Example:
        >>> m = np.zeros((3, 3), bool); m[0] = True
        >>> len(matrix_panels([("padded", np.ones((3, 3)), m)]).axes)
        1
    """
    if not panels:
        raise InputError("matrix_panels needs at least one matrix.")
    mats = []
    for p in panels:
        a = np.asarray(p[1], dtype=np.float64)
        if a.ndim != 2:
            raise InputError(f"panel '{p[0]}' must be a 2-D matrix, got shape {a.shape}.")
        mats.append(a)
    n = len(panels)
    ncols = ncols or n
    nrows = -(-n // ncols)
    hmax = max(a.shape[0] for a in mats)
    wmax = max(a.shape[1] for a in mats)
    fig = Figure(
        figsize=(
            max(2.5, ncols * (wmax * cell_inches + 0.5)),
            nrows * (hmax * cell_inches + 0.7) + (0.4 if suptitle else 0),
        ),
        dpi=100,
    )
    for k, (p, a) in enumerate(zip(panels, mats, strict=True)):
        ax = fig.add_subplot(nrows, ncols, k + 1)
        lo, hi = float(a.min()), float(a.max())
        ax.imshow(
            a, cmap=cmap, vmin=lo - 0.15 * (hi - lo + 1e-9), vmax=hi + 0.6 * (hi - lo + 1e-9), interpolation="nearest"
        )
        mask = p[2] if len(p) > 2 else None
        if mask is not None:
            mask = np.asarray(mask, bool)
            for i, j in zip(*np.nonzero(mask), strict=True):
                ax.add_patch(_rect(j - 0.5, i - 0.5))
        size = 9 if max(a.shape) <= 6 else 7
        for i in range(a.shape[0]):
            for j in range(a.shape[1]):
                ax.text(j, i, _fmt(a[i, j]), ha="center", va="center", fontsize=size, color="#111")
        ax.set_xticks(np.arange(-0.5, a.shape[1], 1), minor=True)
        ax.set_yticks(np.arange(-0.5, a.shape[0], 1), minor=True)
        ax.grid(which="minor", color="#889", linewidth=0.5)
        ax.tick_params(which="both", length=0, labelbottom=False, labelleft=False)
        ax.set_title(p[0], fontsize=9)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    return fig


def _rect(x: float, y: float):
    from matplotlib.patches import Rectangle

    return Rectangle((x, y), 1, 1, fill=False, hatch="///", edgecolor="#c06030", linewidth=0)


def image_panels(
    items: Sequence[tuple[str, np.ndarray] | tuple[str, np.ndarray, Sequence[tuple[int, int, int, int, str]]]],
    *,
    ncols: int | None = None,
    cmap: str = "gray",
    tile_inches: float = 3.2,
    colorbar: bool = False,
    suptitle: str | None = None,
) -> Figure:
    """Images side by side, each with a title and optional boxes ``(y, x, h, w, colour)`` (top-left
    anchored, in that image's pixels). 2-D arrays use ``cmap`` (with a colorbar if asked).

    Example:
        >>> fig = image_panels([("a", np.zeros((8, 8)), [(1, 1, 3, 3, "red")]), ("b", np.ones((4, 4)))])
        >>> len(fig.axes[0].patches)
        1
    """
    if not items:
        raise InputError("image_panels needs at least one image.")
    n = len(items)
    ncols = ncols or n
    nrows = -(-n // ncols)
    shapes = [np.asarray(it[1]).shape for it in items]
    aspect = max(s[0] / s[1] for s in shapes)
    fig = Figure(figsize=(tile_inches * ncols, tile_inches * aspect * nrows + 0.5 + (0.3 if suptitle else 0)), dpi=100)
    from matplotlib.patches import Rectangle

    for k, it in enumerate(items):
        ax = fig.add_subplot(nrows, ncols, k + 1)
        a = np.asarray(it[1])
        im = ax.imshow(
            a, cmap=cmap if a.ndim == 2 else None, interpolation="nearest" if max(a.shape[:2]) < 64 else "antialiased"
        )
        for y, x, h, w, colour in it[2] if len(it) > 2 else ():
            ax.add_patch(Rectangle((x - 0.5, y - 0.5), w, h, fill=False, edgecolor=colour, linewidth=2))
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(it[0], fontsize=9)
        if colorbar and a.ndim == 2:
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    return fig
