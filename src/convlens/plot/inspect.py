"""Figures for inspection: activation grids, first-layer kernels as RGB tiles, the depth profile.

All functions return a ``matplotlib.figure.Figure`` (object API, Agg); saving is the caller's job.

Example:
    >>> import numpy as np
    >>> fig = activation_grid(np.random.default_rng(0).random((4, 5, 5)), [0, 1, 2, 3])
    >>> [a.get_title() for a in fig.axes]
    ['0', '1', '2', '3']
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from convlens.errors import InputError
from convlens.plot import apply_colormap, image_grid, normalize01

__all__ = ["activation_grid", "kernel_tiles", "depth_profile_figure"]


def _np(a: Any) -> np.ndarray:
    if hasattr(a, "detach"):
        a = a.detach().float().cpu().numpy()
    return np.asarray(a, dtype=np.float64)


def activation_grid(maps: Any, channels: Sequence[int], *, title: str | None = None, cmap: str = "viridis") -> Figure:
    """One tile per channel of a (C, H, W) activation, each normalized to its own [min, max], titled by index.

    Example:
        >>> activation_grid(np.zeros((2, 3, 3)), [1], title="layer").axes[0].get_title()
        '1'
    """
    a = _np(maps)
    if a.ndim != 3:
        raise InputError(f"maps must be (C, H, W), got shape {a.shape}.")
    chans = [int(c) for c in channels]
    if not chans or any(c < 0 or c >= a.shape[0] for c in chans):
        raise InputError(f"channels must be non-empty indices below {a.shape[0]}, got {chans[:5]}.")
    tiles = [apply_colormap(normalize01(a[c]), cmap) for c in chans]
    ncols = min(len(tiles), 8)
    return image_grid(tiles, titles=[str(c) for c in chans], ncols=ncols, tile_inches=1.3, suptitle=title)


def kernel_tiles(weight: Any, *, title: str | None = None) -> Figure:
    """First-layer kernels (C_out, 3, k, k) drawn as RGB tiles; each kernel scaled symmetrically around
    grey, ``0.5 + w / (2·max|w|)``, so grey = 0 and colour shows which channels a kernel weighs.

    Kernels with a channel count other than 3 are shown as the channel mean in grey levels.

    Example:
        >>> len(kernel_tiles(np.ones((6, 3, 3, 3))).axes)
        6
    """
    w = _np(weight)
    if w.ndim != 4:
        raise InputError(f"kernels must be (C_out, C_in, kH, kW), got shape {w.shape}.")
    tiles = []
    for k in w:
        m = np.abs(k).max()
        k = 0.5 + k / (2 * m) if m > 0 else np.full_like(k, 0.5)
        tiles.append(np.transpose(k, (1, 2, 0)) if k.shape[0] == 3 else np.repeat(k.mean(0)[..., None], 3, axis=2))
    ncols = min(len(tiles), 8 if len(tiles) <= 32 else 16)
    return image_grid([np.clip(t, 0, 1) for t in tiles], ncols=ncols, tile_inches=0.8, suptitle=title)


def depth_profile_figure(profile: Any, *, title: str | None = None) -> Figure:
    """The early-vs-deep figure of a :class:`convlens.inspect.depth.DepthProfile`: spatial size and
    channels, activations H·W·C vs weights, receptive field and spatial frequency per stage, and the
    most active channel's map of each stage.

    Example:
        >>> import torch
        >>> from convlens.inspect.depth import depth_profile
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.MaxPool2d(2))
        >>> len(depth_profile_figure(depth_profile(net, torch.rand(1, 3, 12, 12))).axes) >= 5
        True
    """
    stages = list(profile.stages)
    if not stages:
        raise InputError("the depth profile has no stages to draw.")
    n = len(stages)
    x = np.arange(n)
    labels = [s.name for s in stages]
    ncols = max(3, n)
    fig = Figure(figsize=(max(12, 2.2 * ncols), 7.5), dpi=100)
    gs = fig.add_gridspec(2, ncols * 2, height_ratios=[1.2, 1])
    w3 = (ncols * 2) // 3

    ax = fig.add_subplot(gs[0, 0:w3])
    ax.plot(x, [s.spatial[0] for s in stages], "o-", label="spatial size H")
    ax.plot(x, [s.channels for s in stages], "s-", label="channels C")
    ax.set_yscale("log", base=2)
    ax.set_title("resolution falls, channels rise", fontsize=9)
    ax.legend(fontsize=7)

    ax2 = fig.add_subplot(gs[0, w3 : 2 * w3])
    ax2.bar(x - 0.2, [max(s.activations, 1) for s in stages], 0.4, label="activations H·W·C")
    ax2.bar(x + 0.2, [max(s.weights, 1) for s in stages], 0.4, label="weights")
    ax2.set_yscale("log")
    ax2.set_title("depth compensates resolution", fontsize=9)
    ax2.legend(fontsize=7)

    ax3 = fig.add_subplot(gs[0, 2 * w3 :])
    rf = [s.receptive_field[0] if s.receptive_field else np.nan for s in stages]
    ax3.plot(x, rf, "o-", color="tab:green", label="receptive field (px)")
    ax3.set_yscale("log")
    ax3b = ax3.twinx()
    mf = [s.mean_frequency_input if s.mean_frequency_input is not None else np.nan for s in stages]
    ax3b.plot(x, mf, "d--", color="tab:purple", label="mean frequency (cycles/input px)")
    ax3.set_title("field grows, maps get smoother", fontsize=9)
    ax3.legend(fontsize=7, loc="upper left")
    ax3b.legend(fontsize=7, loc="lower left")
    for a in (ax, ax2, ax3):
        a.set_xticks(x)
        a.set_xticklabels(labels, rotation=30, ha="right", fontsize=7)

    per = (ncols * 2) // n
    for i, s in enumerate(stages):
        axm = fig.add_subplot(gs[1, i * per : (i + 1) * per])
        m = profile.maps.get(s.name) if getattr(profile, "maps", None) else None
        if m is not None and getattr(m, "ndim", 0) == 3:
            a = _np(m)
            c = int(np.argmax(a.reshape(a.shape[0], -1).mean(1)))
            axm.imshow(apply_colormap(normalize01(a[c])), interpolation="nearest")
            axm.set_title(f"{s.name} ch {c}\n{s.spatial[0]}x{s.spatial[1]}x{s.channels}", fontsize=7)
        axm.set_xticks([])
        axm.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
