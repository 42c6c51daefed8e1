"""Figures for one unit: its traced computation (patch × kernel tiles, like the tour's Q1 figure), its
theoretical box and effective field on the image, and the top patches of channels over a folder.

Example:
    >>> import torch
    >>> from convlens.inspect.unit import trace_unit
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(2, 1, 3, padding=1))
    >>> fig = trace_figure(trace_unit(net, torch.ones(1, 2, 5, 5), "0", (0, 0, 0)))
    >>> len(fig.axes)
    4
"""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.figure import Figure

from convlens.errors import InputError
from convlens.plot import apply_colormap, normalize01
from convlens.plot.tour import image_panels, matrix_panels

__all__ = ["trace_figure", "field_figure", "top_patches_figure"]


def _g(v: float | None) -> str:
    from convlens.serialize import fmt_num

    return "-" if v is None else fmt_num(v, ".4g")  # never "-0"


def trace_figure(trace: Any, *, top: int = 4) -> Figure:
    """Tiles of the ``top`` input channels contributing most (by |sum|): the input patch (padding
    hatched) and the kernel slice, titled with their sum; 1x1 kernels and linear layers as one table
    of ``x, w, x·w`` rows; pools as their window; other steps as the numbers of their formula.

    Example:
        >>> import torch
        >>> from convlens.inspect.unit import trace_unit
        >>> net = torch.nn.Sequential(torch.nn.Linear(3, 1))
        >>> len(trace_figure(trace_unit(net, torch.ones(1, 3), "0", (0,))).axes)
        1
    """
    at = ",".join(map(str, trace.at))
    head = f"{trace.layer} [{at}]\ntraced {trace.total:.5g}, model {trace.value:.5g}\n|diff| {trace.abs_error:.1e}" + (
        f", bias {trace.bias:.4g}" if trace.bias is not None else ""
    )
    terms = sorted(trace.terms, key=lambda t: (-abs(t.sum), t.channel))[: max(1, top)]
    if trace.op == "conv2d" and trace.patch is not None and trace.patch.shape[1:] != (1, 1):
        panels: list[Any] = []
        pos = {ch: k for k, ch in enumerate(trace.in_channels)}
        for t in terms:
            k = pos[t.channel]
            panels.append((f"input ch {t.channel}", trace.patch[k], trace.in_padding))
            panels.append((f"kernel -> sum {t.sum:.4g}", trace.kernel[k]))
        return matrix_panels(panels, ncols=2, suptitle=head)
    if trace.op == "conv2d" and trace.patch is not None:  # 1x1: one row per channel
        pos = {ch: k for k, ch in enumerate(trace.in_channels)}
        rows = np.array([[trace.patch[pos[t.channel], 0, 0], trace.kernel[pos[t.channel], 0, 0], t.sum] for t in terms])
        chans = ", ".join(str(t.channel) for t in terms)
        return matrix_panels([(f"channels {chans}: x, w, x*w", rows)], suptitle=head)
    if trace.patch is not None:  # pools: the window
        return matrix_panels([(trace.formula[:60], trace.patch[0], trace.in_padding[0])], suptitle=head)
    if trace.kind == "linear":
        vals = np.array([[t.channel, t.sum] for t in terms])
        return matrix_panels([("feature, x*W (largest first)", vals)], suptitle=head)
    nums = trace.numbers or {"value": trace.value}
    names = list(nums)
    return matrix_panels(
        [(", ".join(names)[:70], np.array([[float(nums[n]) for n in names]]))], suptitle=head + f"\n{trace.formula}"
    )


def field_figure(image: np.ndarray, rf: Any, erf: Any | None = None) -> Figure:
    """The image the model saw with the unit's theoretical box (clipped to the image; the title states the
    part in the padding), and the effective field ``|∂y/∂x|`` as a heatmap with the same box.

    Example:
        >>> from types import SimpleNamespace as S
        >>> rf = S(clipped_box=(0, 0, 3, 3), box=(-1, -1, 3, 3), padding=(1, 1, 0, 0), size=(5, 5), layer="l", unit=(0, 0))
        >>> len(field_figure(np.zeros((8, 8, 3), np.uint8), rf).axes)
        1
    """
    img = np.asarray(image)
    if img.ndim != 3:
        raise InputError(f"field_figure needs an (H, W, 3) image, got shape {img.shape}.")
    t, l_, b, r = rf.clipped_box
    box = [(t, l_, b - t + 1, r - l_ + 1, "#ff3030")]
    pad = rf.padding
    title = f"{rf.layer} unit {tuple(rf.unit)}: box {tuple(rf.box)} ({rf.size[0]}x{rf.size[1]})"
    if any(pad):
        title += f"\npadding rows/cols: top {pad[0]}, left {pad[1]}, bottom {pad[2]}, right {pad[3]}"
    items: list[Any] = [(title, img, box)]
    if rf.size[0] * rf.size[1] <= 0.25 * img.shape[0] * img.shape[1]:  # a small field: also show it enlarged
        crop = _pad_to_box(img[t : b + 1, l_ : r + 1], rf.box)
        items.append((f"the box enlarged ({rf.size[0]}x{rf.size[1]} px; grey: padding)", crop))
    if erf is not None:
        if erf.zero_gradient:
            items.append(("effective field: zero gradient (unit is off)", np.zeros(img.shape[:2]), box))
        else:
            heat = apply_colormap(normalize01(np.sqrt(erf.map)), "inferno")
            items.append(
                (
                    f"effective field: {erf.mass_in_box:.0%} in box, r50 {erf.r50:.1f}px, r90 {erf.r90:.1f}px",
                    heat,
                    box,
                )
            )
            if len(items) == 3:  # small field: its effective field enlarged too
                items.append(("effective field in the box, enlarged", _pad_to_box(heat[t : b + 1, l_ : r + 1], rf.box)))
    return image_panels(items, tile_inches=4.0)


def _pad_to_box(crop: np.ndarray, box: Any) -> np.ndarray:
    """The crop placed in its full box, the part of the box outside the image (padding) grey, so every
    patch of a row shows its unit at the same place."""
    top, left, bottom, right = (int(v) for v in box)
    h, w = bottom - top + 1, right - left + 1
    if crop.shape[:2] == (h, w) or h > 4 * max(crop.shape[:2]) or w > 4 * max(crop.shape[:2]):
        return crop  # inside the image, or a field far larger than the image: show the image part
    canvas = np.full((h, w, 3), 160, np.uint8)
    y0, x0 = max(0, -top), max(0, -left)
    canvas[y0 : y0 + crop.shape[0], x0 : x0 + crop.shape[1]] = crop[: h - y0, : w - x0]
    return canvas


def top_patches_figure(result: Any, *, max_channels: int | None = None) -> Figure:
    """One row per channel, its top patches left to right (cropped to each unit's box, padding grey),
    titled with the image name and activation.

    Example:
        >>> from types import SimpleNamespace as S
        >>> p = S(image="a.png", y=0, x=0, value=1.0, crop=np.zeros((3, 3, 3), np.uint8), box=(-1, -1, 2, 2))
        >>> len(top_patches_figure(S(channels=[S(channel=0, patches=[p])], layer="l")).axes)
        1
    """
    rows = result.channels[: max_channels or len(result.channels)]
    if not rows:
        raise InputError("no channels to draw.")
    k = max(1, max(len(r.patches) for r in rows))
    fig = Figure(figsize=(1.6 * k + 0.8, 1.75 * len(rows) + 0.4), dpi=100)
    for ri, row in enumerate(rows):
        for ci in range(k):
            ax = fig.add_subplot(len(rows), k, ri * k + ci + 1)
            ax.set_xticks([])
            ax.set_yticks([])
            if ci >= len(row.patches):
                ax.axis("off")
                continue
            p = row.patches[ci]
            img = _pad_to_box(p.crop, p.box)
            ax.imshow(img, interpolation="nearest" if max(img.shape[:2]) < 48 else "antialiased")
            name = str(p.image).rsplit("/", 1)[-1][:14]
            ax.set_title(f"{name}\n({p.y},{p.x}) {p.value:.3g}", fontsize=6)
            if ci == 0:
                ax.set_ylabel(f"ch {row.channel}", fontsize=8)
    fig.suptitle(f"top patches of {result.layer}", fontsize=10)
    fig.tight_layout()
    return fig
