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
    detections: Sequence[Any] | None = None,
) -> Figure:
    """Top row: the image with the detections drawn on it, and the template beside it AT ITS TRUE
    SCALE (same pixels per inch as the image, so a 40x40 template on a 400x600 photo looks a tenth
    as tall); bottom row: each method's response map with its peak.

    ``hits[name]`` holds ``peak`` (top-left y, x in image pixels), ``size`` (h, w), ``score`` and
    ``response`` (2-D map). ``detections`` (from :func:`convlens.match.find_matches`: ``peak``,
    ``size``, ``score``, ``scale``) are drawn numbered, best first; without them each method's best
    match is drawn.

    Example:
        >>> img = np.zeros((10, 12, 3), np.uint8)
        >>> h = {"zncc": {"peak": (1, 2), "size": (3, 3), "score": 1.0, "response": np.zeros((8, 10))}}
        >>> len(match_figure(img, img[:3, :3], h).axes)   # image, template, response + its colorbar
        4
    """
    ih, iw = image.shape[:2]
    th, tw = template.shape[:2]
    n = max(1, len(hits))
    width_in = max(7.0, 3.4 * n)
    gap = 0.25 * iw  # pixels between image and template
    ppi = (width_in - 0.6) / (iw + gap + tw)  # inches per image pixel, shared by image and template
    top_in = ppi * max(ih, th)
    fig = Figure(figsize=(width_in, top_in + 3.6 + (0.4 if title else 0)), dpi=100)
    h_total = fig.get_figheight()
    top_y = 1 - (0.35 + (0.4 if title else 0) + top_in) / h_total
    # image and template as axes sized in inches by their pixel counts: the template keeps its true scale
    ax = fig.add_axes((0.3 / width_in, top_y, ppi * iw / width_in, top_in * ih / max(ih, th) / h_total))
    ax.imshow(image)
    if detections:
        for rank, d in enumerate(detections, 1):
            (y, x), (h, w) = d.peak, d.size
            color = _COLORS[0] if rank == 1 else _COLORS[2]
            ax.add_patch(Rectangle((x - 0.5, y - 0.5), w, h, fill=False, lw=2, ec=color))
            ax.text(
                x, y - 1, f"{rank}: {d.score:.2f}" + (f" x{d.scale:g}" if d.scale != 1 else ""),
                color="white", fontsize=7, va="bottom", bbox={"fc": color, "ec": "none", "pad": 1},
            )  # fmt: skip
        ax.set_title(f"image {ih}x{iw}: {len(detections)} detection(s), best first", fontsize=9)
    else:
        for i, (name, hit) in enumerate(hits.items()):
            (y, x), (h, w) = hit["peak"], hit["size"]
            color = _COLORS[i % len(_COLORS)]
            ax.add_patch(Rectangle((x - 0.5, y - 0.5), w, h, fill=False, lw=2, ec=color, label=f"{name} peak"))
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(0.0, -0.02), ncol=2, frameon=False)
        ax.set_title(f"image {ih}x{iw} + best matches", fontsize=9)
    ax.set_axis_off()
    tx0 = (0.3 + ppi * (iw + gap)) / width_in
    ax_t = fig.add_axes((tx0, top_y + (top_in - ppi * th) / h_total, ppi * tw / width_in, ppi * th / h_total))
    ax_t.imshow(template)
    ax_t.set_title(f"template {th}x{tw}\n(true scale)", fontsize=8)
    ax_t.set_xticks([])
    ax_t.set_yticks([])
    bottom_h = 2.6 / h_total
    for i, (name, hit) in enumerate(hits.items()):
        ax = fig.add_axes(
            (
                (0.3 + i * (width_in - 0.6) / n) / width_in,
                0.35 / h_total,
                0.8 * (width_in - 0.6) / n / width_in,
                bottom_h,
            )
        )
        resp = np.asarray(hit["response"], dtype=np.float64)
        im = ax.imshow(resp, cmap="magma", interpolation="nearest")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
        ry, rx = np.unravel_index(int(np.argmax(resp)), resp.shape)
        ax.plot([rx], [ry], marker="x", color="cyan", ms=9, mew=2)
        scale = hit.get("scale", 1.0)
        ax.set_title(
            f"{name} response: peak {tuple(hit['peak'])}, score {hit['score']:.3g}"
            + (f", scale {scale:g}" if scale != 1 else ""),
            fontsize=8,
        )
        ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=10, y=1 - 0.08 / h_total, va="top")
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
