"""Reference 2-D convolution in NumPy (float64) and the trace of one output element.

The cross-correlation deep-learning frameworks call convolution:

``y[n, f, i, j] = b[f] + sum_{c, u, v} x_pad[n, g*C_g + c, i*s_h + u*d_h, j*s_w + v*d_w] * w[f, c, u, v]``

for the group ``g = f // (F / groups)`` and ``C_g = C / groups``. The whole map is computed at once
from a strided window view (no per-pixel Python loop); results match ``torch.nn.functional.conv2d``
in float64 (checked by the tests).

Example (a 3-channel image and one 3-channel 3x3 filter; channel sums 9 + 18 + 18 = 45):
    >>> import numpy as np
    >>> x = np.stack([np.ones((3, 3)), 2 * np.ones((3, 3)), np.ones((3, 3))])
    >>> w = np.stack([np.ones((3, 3)), np.ones((3, 3)), 2 * np.ones((3, 3))])[None]
    >>> t = trace(x, w, 0, 0)
    >>> [ch.sum for ch in t.channels], t.total
    ([9.0, 18.0, 18.0], 45.0)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from convlens.arith._check import as_float_array
from convlens.arith.shapes import PaddingSpec, ShapeResult, output_shape
from convlens.errors import InputError

__all__ = ["conv2d", "trace", "ConvTrace", "ChannelTrace", "pad2d", "PADDING_MODES"]

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
_NP_MODE = {"zeros": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}


@dataclass(frozen=True)
class ChannelTrace:
    """One input channel's contribution to an output element.

    ``window`` holds the (kh, kw) input values the kernel taps read (padding included), ``padded``
    marks which of them come from padding, ``kernel`` is this channel's (kh, kw) slice of the filter,
    ``dilated_kernel`` the same spread over the effective (d*(k-1)+1) grid with zeros in the holes,
    ``products = window * kernel`` and ``sum`` their sum.
    """

    channel: int
    window: np.ndarray
    padded: np.ndarray
    kernel: np.ndarray
    dilated_kernel: np.ndarray
    products: np.ndarray
    sum: float


@dataclass(frozen=True)
class ConvTrace:
    """How output element ``(batch, filter, row, col)`` is computed: one :class:`ChannelTrace` per
    input channel of the filter's group, the bias, and ``total = sum(channel sums) + bias``.

    ``input_rows``/``input_cols`` are the input coordinates of the kernel taps (negative or >= size
    means the tap falls in the padding).
    """

    def _repr_html_(self) -> str:
        """Rich display in Jupyter: the renderer the report uses (:func:`convlens.plot.html.conv_trace_html`), images inline."""
        from convlens.plot.html import conv_trace_html

        return conv_trace_html(self)

    batch: int
    filter: int
    row: int
    col: int
    input_rows: tuple[int, ...]
    input_cols: tuple[int, ...]
    channels: tuple[ChannelTrace, ...]
    bias: float
    total: float


def pad2d(x: np.ndarray, pads: Sequence[int], mode: str = "zeros") -> np.ndarray:
    """Pad the last two axes of ``x`` by ``(top, bottom, left, right)`` like ``torch.nn.functional.pad``.

    ``mode``: ``'zeros'``, ``'reflect'`` (mirror without repeating the edge; pad < size),
    ``'replicate'`` (repeat the edge) or ``'circular'`` (wrap around; pad <= size).

    Example:
        >>> pad2d(np.arange(3.0)[None], (0, 0, 2, 2), "reflect")
        array([[2., 1., 0., 1., 2., 1., 0.]])
    """
    if mode not in PADDING_MODES:
        raise InputError(f"padding_mode must be one of {', '.join(PADDING_MODES)}, got '{mode}'.")
    top, bottom, left, right = (int(p) for p in pads)
    h, w = x.shape[-2:]
    for p, size, side in ((top, h, "top"), (bottom, h, "bottom"), (left, w, "left"), (right, w, "right")):
        if mode == "reflect" and p >= size:
            raise InputError(
                f"reflect padding must be smaller than the input size: {side} pad {p} vs size {size}; use less padding or 'replicate'."
            )
        if mode == "circular" and p > size:
            raise InputError(
                f"circular padding may wrap at most once: {side} pad {p} vs size {size}; use less padding."
            )
    if not any((top, bottom, left, right)):
        return x
    widths = [(0, 0)] * (x.ndim - 2) + [(top, bottom), (left, right)]
    return np.pad(x, widths, mode=_NP_MODE[mode])


def _prepare(
    x: Any, w: Any, bias: Any, stride: Any, padding: Any, dilation: Any, groups: int, padding_mode: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, ShapeResult, bool]:
    """Validate once at the boundary; returns (x as NCHW, w, bias, shape, input_was_batched)."""
    xa = as_float_array(x, "input x", (3, 4))
    batched = xa.ndim == 4
    xa = xa if batched else xa[None]
    wa = as_float_array(w, "weights w", (4,))
    if not isinstance(groups, (int, np.integer)) or isinstance(groups, bool) or groups < 1:
        raise InputError(f"groups must be a positive int, got {groups!r}.")
    if padding_mode not in PADDING_MODES:
        raise InputError(f"padding_mode must be one of {', '.join(PADDING_MODES)}, got '{padding_mode}'.")
    n, c, h, wd = xa.shape
    f, cg, kh, kw = wa.shape
    if c % groups or f % groups:
        raise InputError(f"groups={groups} must divide both the input channels ({c}) and the filters ({f}).")
    if cg * groups != c:
        raise InputError(
            f"weights expect {cg} channel(s) per group x {groups} group(s) = {cg * groups} input channels, but the input has {c}; "
            "the filter depth must equal the input channels / groups."
        )
    ba = None
    if bias is not None:
        ba = as_float_array(bias, "bias", (0, 1)).reshape(-1)
        if ba.size != f:
            raise InputError(f"bias must have one value per filter ({f}), got {ba.size}.")
    shape = output_shape(
        (h, wd), (kh, kw), stride=stride, padding=padding, dilation=dilation, in_channels=c, out_channels=f
    )
    return xa, wa, ba, shape, batched


def conv2d(
    x: Any,
    w: Any,
    bias: Any = None,
    stride: int | Sequence[int] = 1,
    padding: PaddingSpec = 0,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
    padding_mode: Literal["zeros", "reflect", "replicate", "circular"] = "zeros",
) -> np.ndarray:
    """2-D convolution (cross-correlation) exactly like ``torch.nn.functional.conv2d``, in float64.

    ``out = floor((in + pads - d*(k-1) - 1) / stride) + 1`` per axis (see :func:`output_shape`).

    Args:
        x: input (C, H, W) or (N, C, H, W); array-like or tensor.
        w: weights (F, C/groups, kh, kw).
        bias: None or (F,).
        stride, dilation: int or (h, w).
        padding: int, (ph, pw), (top, bottom, left, right), ``'valid'`` or ``'same'`` (PyTorch rule:
            total ``d*(k-1)``, the extra one bottom/right; stride must be 1).
        groups: channels are split into ``groups`` independent blocks (``groups=C`` = depthwise).
        padding_mode: ``'zeros'``, ``'reflect'``, ``'replicate'`` or ``'circular'``.

    Returns:
        float64 array (F, H_out, W_out), or (N, F, H_out, W_out) for a batched input.

    Raises:
        InputError: mismatched channels, kernel larger than the padded input, bad stride/padding,
        NaN/inf or non-numeric values.

    Example (1x1 convolution reducing 64 channels to 32 keeps 28x28):
        >>> conv2d(np.ones((64, 28, 28)), np.ones((32, 64, 1, 1))).shape
        (32, 28, 28)
    """
    xa, wa, ba, shape, batched = _prepare(x, w, bias, stride, padding, dilation, groups, padding_mode)
    n, c, _, _ = xa.shape
    f, cg, kh, kw = wa.shape
    (sh, sw), (dh, dw) = shape.stride, shape.dilation
    ho, wo = shape.output[:2]
    xp = pad2d(xa, shape.padding, padding_mode)  # (N, C, Hp, Wp)
    keh, kew = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    # every window of the effective (dilated) kernel, then keep the stride-th windows and the taps
    win = sliding_window_view(xp, (keh, kew), axis=(2, 3))[:, :, ::sh, ::sw, ::dh, ::dw][:, :, :ho, :wo]
    win = win.reshape(n, groups, cg, ho, wo, kh, kw)  # (N, G, C/G, Ho, Wo, kh, kw)
    wg = wa.reshape(groups, f // groups, cg, kh, kw)  # (G, F/G, C/G, kh, kw)
    out = np.einsum("ngchwij,gfcij->ngfhw", win, wg, optimize=True).reshape(n, f, ho, wo)
    if ba is not None:
        out = out + ba[None, :, None, None]
    out = np.ascontiguousarray(out, dtype=np.float64)
    return out if batched else out[0]


def trace(
    x: Any,
    w: Any,
    row: int,
    col: int,
    *,
    filter: int = 0,
    batch: int = 0,
    bias: Any = None,
    stride: int | Sequence[int] = 1,
    padding: PaddingSpec = 0,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
    padding_mode: Literal["zeros", "reflect", "replicate", "circular"] = "zeros",
) -> ConvTrace:
    """Trace output element ``(batch, filter, row, col)`` of :func:`conv2d`: per-channel windows,
    (dilated) kernels, element products and sums, the bias and the total.

    ``total = bias[f] + sum_c sum(window_c * kernel_c)`` equals ``conv2d(...)[f, row, col]``.
    Arguments are as in :func:`conv2d`; ``w`` may also be one filter (C, kh, kw).

    Example (4x4 input, zero padding 1: the corner window reads 5 padded cells):
        >>> t = trace(np.ones((1, 4, 4)), np.ones((1, 1, 3, 3)), 0, 0, padding=1)
        >>> int(t.channels[0].padded.sum()), t.total
        (5, 4.0)
    """
    w_arr = as_float_array(w, "weights w", (3, 4))
    if w_arr.ndim == 3:
        w_arr = w_arr[None]
    xa, wa, ba, shape, _ = _prepare(x, w_arr, bias, stride, padding, dilation, groups, padding_mode)
    n, c, h, wd = xa.shape
    f, cg, kh, kw = wa.shape
    ho, wo = shape.output[:2]
    for name, v, hi in (("batch", batch, n), ("filter", filter, f), ("row", row, ho), ("col", col, wo)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or not 0 <= v < hi:
            raise InputError(f"{name} must be an int in 0..{hi - 1} (output is {f}x{ho}x{wo}), got {v!r}.")
    (sh, sw), (dh, dw) = shape.stride, shape.dilation
    top, _, left, _ = shape.padding
    xp = pad2d(xa[batch], shape.padding, padding_mode)  # (C, Hp, Wp)
    prow = row * sh + np.arange(kh) * dh  # padded coordinates of the taps
    pcol = col * sw + np.arange(kw) * dw
    in_rows, in_cols = prow - top, pcol - left
    padded = ((in_rows < 0) | (in_rows >= h))[:, None] | ((in_cols < 0) | (in_cols >= wd))[None, :]
    g = filter // (f // groups)
    channels = []
    for k in range(cg):  # a filter has few channels; the per-pixel work is vectorized
        ch = g * cg + k
        window = xp[ch][np.ix_(prow, pcol)]
        kern = wa[filter, k]
        dil = np.zeros((dh * (kh - 1) + 1, dw * (kw - 1) + 1))
        dil[::dh, ::dw] = kern
        prod = window * kern
        channels.append(ChannelTrace(ch, window, padded.copy(), kern.copy(), dil, prod, float(prod.sum())))
    b = float(ba[filter]) if ba is not None else 0.0
    total = float(sum(ct.sum for ct in channels) + b)
    return ConvTrace(
        batch,
        filter,
        row,
        col,
        tuple(int(r) for r in in_rows),
        tuple(int(v) for v in in_cols),
        tuple(channels),
        b,
        total,
    )
