"""Figures for template matching, pyramids and the block experiments (object API, no pyplot).

Example:
    >>> import numpy as np
    >>> fig = pyramid_figure([np.zeros((8, 8, 3), np.uint8), np.zeros((4, 4, 3), np.uint8)])
    >>> len(fig.axes)
    2
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from convlens.plot import normalize01

__all__ = [
    "match_figure",
    "pyramid_figure",
    "vanishing_gradient_figures",
    "pooling_figure",
    "depth_resolution_figure",
]

_COLORS = ("#ee3377", "#33bbee", "#009988", "#ee7733", "#0077bb", "#cc3311")


def match_figure(
    image: np.ndarray,
    template: np.ndarray,
    hits: Mapping[str, Mapping[str, Any]],
    *,
    title: str = "",
) -> Figure:
    """Image with one box per method's best match, the template, and each method's response map.

    ``hits[name]`` holds ``peak`` (top-left y, x in image pixels), ``size`` (h, w), ``score`` and
    ``response`` (2-D map; its peak is marked).

    Example:
        >>> img = np.zeros((10, 12, 3), np.uint8)
        >>> h = {"zncc": {"peak": (1, 2), "size": (3, 3), "score": 1.0, "response": np.zeros((8, 10))}}
        >>> len(match_figure(img, img[:3, :3], h).axes)   # image, template, response + its colorbar
        4
    """
    n = 2 + len(hits)
    fig = Figure(figsize=(3.6 * n, 3.8), dpi=100)
    ax = fig.add_subplot(1, n, 1)
    ax.imshow(image)
    for i, (name, hit) in enumerate(hits.items()):
        (y, x), (h, w) = hit["peak"], hit["size"]
        color = _COLORS[i % len(_COLORS)]
        ax.add_patch(Rectangle((x - 0.5, y - 0.5), w, h, fill=False, lw=2, ec=color, label=f"{name} peak"))
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(0.0, -0.02), ncol=2, frameon=False)
    ax.set_title("image + best matches", fontsize=9)
    ax.set_axis_off()
    ax = fig.add_subplot(1, n, 2)
    ax.imshow(template)
    ax.set_title(f"template {template.shape[0]}x{template.shape[1]}", fontsize=9)
    ax.set_axis_off()
    for i, (name, hit) in enumerate(hits.items()):
        ax = fig.add_subplot(1, n, 3 + i)
        resp = np.asarray(hit["response"], dtype=np.float64)
        im = ax.imshow(resp, cmap="magma", interpolation="nearest")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
        ry, rx = np.unravel_index(int(np.argmax(resp)), resp.shape)
        ax.plot([rx], [ry], marker="x", color="cyan", ms=9, mew=2)
        scale = hit.get("scale", 1.0)
        ax.set_title(
            f"{name}: peak {tuple(hit['peak'])}, score {hit['score']:.3g}"
            + (f", scale {scale:g}" if scale != 1 else ""),
            fontsize=8,
        )
        ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def pyramid_figure(levels: Sequence[np.ndarray], *, kind: str = "gaussian") -> Figure:
    """Pyramid levels side by side, each drawn at its true relative size.

    Gaussian levels are shown as images ((H, W, 3) uint8/float in [0, 1], or 2-D gray);
    Laplacian band-pass levels (signed) are min-max scaled per level (mid-gray = 0 for symmetric
    ranges), the last (low-pass) level as an image.

    Example:
        >>> len(pyramid_figure([np.zeros((8, 8)), np.zeros((4, 4))], kind="laplacian").axes)
        2
    """
    n = len(levels)
    widths = [max(1, lv.shape[1]) for lv in levels]
    total_w = 14.0
    # height so the first (largest) level is width-bound: every level then shows at its true relative size
    h0 = total_w * widths[0] / sum(widths) * levels[0].shape[0] / widths[0]
    fig = Figure(figsize=(total_w, h0 + 0.9), dpi=100)
    gs = fig.add_gridspec(1, n, width_ratios=widths)
    for i, lv in enumerate(levels):
        ax = fig.add_subplot(gs[0, i])
        a = np.asarray(lv, dtype=np.float64)
        if kind == "laplacian" and i < n - 1:
            m = np.abs(a).max() or 1.0
            show = np.clip(0.5 + 0.5 * a / m, 0, 1)
        else:
            show = (
                a / 255.0 if np.asarray(lv).dtype == np.uint8 else normalize01(a) if a.min() < 0 or a.max() > 1 else a
            )
        ax.imshow(
            show if show.ndim == 3 else show,
            cmap=None if show.ndim == 3 else "gray",
            interpolation="nearest",
            vmin=0,
            vmax=1,
        )
        ax.set_title(f"L{i}: {lv.shape[0]}x{lv.shape[1]}", fontsize=8)
        ax.set_axis_off()
    fig.suptitle(f"{kind} pyramid, {n} levels", fontsize=10)
    fig.tight_layout()
    return fig


def vanishing_gradient_figures(result: Any) -> dict[str, Figure]:
    """Two figures for a :class:`~convlens.experiments.VanishingGradientResult`:

    ``grad_norms``: conv weight-gradient norm at init vs layer index (log scale), one panel per
    variant, one line per depth (exact zeros drawn at the bottom edge, marked "0");
    ``training``: training loss vs step, one panel per variant, one line per depth.

    Example:
        >>> from convlens.experiments import vanishing_gradient
        >>> sorted(vanishing_gradient_figures(vanishing_gradient(depths=(4,), train_steps=1, quick=True)))
        ['grad_norms', 'training']
    """
    names = list(result.variants)
    cols = 2
    rows = math.ceil(len(names) / cols)
    positive = [g for v in result.variants.values() for per in v.layer_grad_norms for g in per if g > 0]
    floor = min(positive) / 10 if positive else 1e-12
    grads = Figure(figsize=(11, 3.6 * rows), dpi=100)
    train = Figure(figsize=(11, 3.4 * rows), dpi=100)
    for i, name in enumerate(names):
        v = result.variants[name]
        ax = grads.add_subplot(rows, cols, i + 1)
        any_zero = False
        for j, (depth, norms) in enumerate(zip(result.depths, v.layer_grad_norms, strict=True)):
            y = np.array(norms, dtype=np.float64)
            zero = y <= 0
            ax.plot(
                np.arange(1, len(y) + 1),
                np.where(zero, floor, y),
                marker="o",
                ms=2.5,
                color=_COLORS[j % len(_COLORS)],
                label=f"depth {depth}",
            )
            if zero.any():
                any_zero = True
                ax.plot(
                    np.arange(1, len(y) + 1)[zero],
                    np.full(zero.sum(), floor),
                    "v",
                    color=_COLORS[j % len(_COLORS)],
                    ms=4,
                )
        ax.set_yscale("log")
        ax.set_xlabel("conv layer index (1 = first)")
        ax.set_ylabel("||dL/dW|| at init")
        ax.set_title(name + ("  (v at the bottom: exactly 0)" if any_zero else ""), fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        ax = train.add_subplot(rows, cols, i + 1)
        for j, (depth, loss) in enumerate(zip(result.depths, v.train_loss, strict=True)):
            ax.plot(
                np.arange(1, len(loss) + 1),
                loss,
                color=_COLORS[j % len(_COLORS)],
                label=f"depth {depth} (val acc {v.val_accuracy[j]:.2f})",
            )
        ax.set_xlabel("SGD step")
        ax.set_ylabel("training loss")
        ax.set_title(name, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    grads.suptitle("weight-gradient norm per conv layer at initialisation (PyTorch default init)", fontsize=10)
    train.suptitle("brief training on digits", fontsize=10)
    grads.tight_layout()
    train.tight_layout()
    return {"grad_norms": grads, "training": train}


def pooling_figure(result: Any) -> Figure:
    """Relative feature change vs shift (one line per feature map) + the size-reduction table.

    Example:
        >>> from convlens.experiments import pooling
        >>> len(pooling_figure(pooling(quick=True, max_shift=1)).axes)
        2
    """
    fig = Figure(figsize=(12, 4.2), dpi=100)
    ax = fig.add_subplot(1, 2, 1)
    for j, (name, ys) in enumerate(result.feature_change.items()):
        ax.plot(result.shifts, ys, marker="o", color=_COLORS[j % len(_COLORS)], label=name)
    ax.set_xlabel("shift (pixels)")
    ax.set_ylabel("||f(shifted) - f|| / ||f||")
    ax.set_title("translation tolerance", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax = fig.add_subplot(1, 2, 2)
    ax.set_axis_off()
    rows = [
        [
            r.pooling,
            "x".join(map(str, r.input)),
            "x".join(map(str, r.output)),
            f"{r.values_out:,}/{r.values_in:,}",
            f"{100 * r.removed_fraction:.1f}%",
        ]
        for r in result.reduction
    ]
    table = ax.table(
        cellText=rows, colLabels=["pooling", "input", "output", "values", "removed"], loc="center", cellLoc="center"
    )
    table.auto_set_font_size(False)
    table.set_fontsize(7)
    table.scale(1.0, 1.3)
    ax.set_title("size reduction", fontsize=9)
    fig.tight_layout()
    return fig


def depth_resolution_figure(result: Any) -> Figure:
    """Activations per stage (grouped bars, log scale) and training-loss curves per design.

    Example:
        >>> from convlens.experiments import depth_vs_resolution
        >>> len(depth_resolution_figure(depth_vs_resolution(quick=True, train_steps=1)).axes)
        2
    """
    fig = Figure(figsize=(12, 4.2), dpi=100)
    ax = fig.add_subplot(1, 2, 1)
    names = list(result.nets)
    stages = len(next(iter(result.nets.values())).activations_per_stage)
    width = 0.8 / len(names)
    for j, name in enumerate(names):
        n = result.nets[name]
        xs = np.arange(stages) + (j - (len(names) - 1) / 2) * width
        ax.bar(
            xs,
            n.activations_per_stage,
            width,
            color=_COLORS[j % len(_COLORS)],
            label=f"{name} {n.channels} ({n.params:,} params)",
        )
    ax.set_xticks(range(stages))
    ax.set_xticklabels([f"stage {i + 1}" for i in range(stages)])
    ax.set_yscale("log")
    ax.set_ylabel("activations per image (H*W*C)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, axis="y")
    ax = fig.add_subplot(1, 2, 2)
    for j, name in enumerate(names):
        n = result.nets[name]
        ax.plot(
            np.arange(1, len(n.train_loss) + 1),
            n.train_loss,
            color=_COLORS[j % len(_COLORS)],
            label=f"{name}: val acc {n.val_accuracy:.3f}",
        )
    ax.set_xlabel("SGD step")
    ax.set_ylabel("training loss")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
