"""Reference 2-D max and average pooling in NumPy (float64), exactly like PyTorch.

* Max pooling pads with ``-inf`` (padding never wins) and supports dilation.
* Average pooling divides by the window size clipped to the padded input
  (``count_include_pad=True``) or by the number of real input cells (``False``).
* ``ceil_mode`` keeps a last partial window, except one that would start in the right padding.
* Padding must be at most ``kernel // 2`` (PyTorch's check).

Example (2x2 max pooling with stride 2 halves a 4x4 map):
    >>> import numpy as np
    >>> pool2d(np.arange(16.0).reshape(1, 4, 4), "max", 2)
    array([[[ 5.,  7.],
            [13., 15.]]])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from convlens.arith._check import as_float_array
from convlens.arith.shapes import output_shape
from convlens.errors import InputError

__all__ = ["pool2d", "pool_trace", "PoolTrace", "POOL_KINDS"]

POOL_KINDS = ("max", "avg")


def _divisor(out: int, k: int, s: int, pad: int, size: int, include_pad: bool) -> np.ndarray:
    """Per-output-position window size along one axis (PyTorch's avg_pool rule)."""
    start = np.arange(out) * s - pad
    end = np.minimum(start + k, size + pad)  # a ceil_mode window is clipped to the padded input
    if include_pad:
        return (end - start).astype(np.float64)
    return (np.minimum(end, size) - np.maximum(start, 0)).astype(np.float64)


def pool2d(
    x: Any,
    kind: Literal["max", "avg"] = "max",
    kernel: int | Sequence[int] = 2,
    stride: int | Sequence[int] | None = None,
    padding: int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
) -> np.ndarray:
    """Max or average pooling like ``torch.nn.functional.max_pool2d`` / ``avg_pool2d`` (float64).

    ``out = floor((in + 2*pad - d*(k-1) - 1) / stride) + 1`` (``ceil`` with ``ceil_mode``, dropping
    a last window that starts in the right padding). Average: ``mean = window sum / divisor`` with
    the divisor described in the module docstring.

    Args:
        x: (C, H, W) or (N, C, H, W).
        kind: ``'max'`` or ``'avg'``.
        kernel: int or (kh, kw).
        stride: int or pair; default = kernel.
        padding: int or (ph, pw), at most kernel // 2.
        dilation: max pooling only.
        ceil_mode, count_include_pad: as in PyTorch.

    Returns:
        float64 array (C, H_out, W_out) or (N, C, H_out, W_out).

    Example (avg over a 3x3 with padding 1, not counting padded cells):
        >>> pool2d(np.ones((1, 3, 3)), "avg", 3, stride=1, padding=1, count_include_pad=False)[0, 0, 0].item()
        1.0
    """
    if kind not in POOL_KINDS:
        raise InputError(f"kind must be 'max' or 'avg', got '{kind}'.")
    xa = as_float_array(x, "input x", (3, 4))
    batched = xa.ndim == 4
    xa = xa if batched else xa[None]
    if isinstance(padding, str) or (isinstance(padding, (tuple, list)) and len(padding) == 4):
        raise InputError(f"pooling padding must be an int or a pair (ph, pw), got {padding!r}.")
    _, _, h, w = xa.shape
    shape = output_shape(
        (h, w),
        kernel,
        op="maxpool" if kind == "max" else "avgpool",
        stride=stride,
        padding=padding,
        dilation=dilation,
        ceil_mode=ceil_mode,
        in_channels=xa.shape[1],
    )
    (kh, kw), (sh, sw), (dh, dw) = shape.kernel, shape.stride, shape.dilation
    ho, wo = shape.output[:2]
    ph, _, pw, _ = shape.padding
    keh, kew = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    # ceil_mode windows may run past the padded input: pad enough to hold them, with a neutral value
    extra_h = max(0, (ho - 1) * sh + keh - (h + 2 * ph))
    extra_w = max(0, (wo - 1) * sw + kew - (w + 2 * pw))
    fill = -np.inf if kind == "max" else 0.0
    xp = np.pad(xa, [(0, 0), (0, 0), (ph, ph + extra_h), (pw, pw + extra_w)], constant_values=fill)
    win = sliding_window_view(xp, (keh, kew), axis=(2, 3))[:, :, ::sh, ::sw, ::dh, ::dw][:, :, :ho, :wo]
    if kind == "max":
        out = win.max(axis=(-2, -1))
    else:
        div = np.outer(_divisor(ho, kh, sh, ph, h, count_include_pad), _divisor(wo, kw, sw, pw, w, count_include_pad))
        out = win.sum(axis=(-2, -1)) / div
    out = np.ascontiguousarray(out, dtype=np.float64)
    return out if batched else out[0]


@dataclass(frozen=True)
class PoolTrace:
    """How pooled output ``(channel, row, col)`` is computed.

    ``window`` holds the (kh, kw) cells the window reads (dilation honoured), with ``None`` where a
    cell lies in the padding (``padded`` marks them; max pooling never picks one, average pooling
    counts it as 0). Max: ``value = window[argmax]``, ``argmax = [i, j]`` within the window (the
    first maximum in row-major order, as PyTorch's ``return_indices``). Average: ``value = sum /
    divisor`` (``divisor`` = window size, or real cells only without ``count_include_pad``);
    ``argmax`` is ``None`` (and for a dilated max window that reads padding only, whose value is -inf).
    """

    kind: str
    channel: int
    row: int
    col: int
    input_rows: tuple[int, ...]
    input_cols: tuple[int, ...]
    window: list[list[float | None]]
    padded: np.ndarray
    value: float
    argmax: tuple[int, int] | None
    sum: float | None = None
    divisor: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: ``{"window", "value", "argmax", ...}`` (padding cells are ``null``)."""
        return {
            "kind": self.kind,
            "channel": self.channel,
            "row": self.row,
            "col": self.col,
            "input_rows": list(self.input_rows),
            "input_cols": list(self.input_cols),
            "window": self.window,
            "padded": self.padded.tolist(),
            "value": self.value,
            "argmax": list(self.argmax) if self.argmax is not None else None,
            "sum": self.sum,
            "divisor": self.divisor,
        }


def pool_trace(
    x: Any,
    kind: Literal["max", "avg"],
    kernel: int | Sequence[int],
    row: int,
    col: int,
    *,
    channel: int = 0,
    stride: int | Sequence[int] | None = None,
    padding: int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
) -> PoolTrace:
    """Trace pooled output ``(channel, row, col)`` of :func:`pool2d` on a (C, H, W) input: the window,
    which cell won (max) or the sum and divisor (avg), and the value (equal to ``pool2d``'s).

    Example (the bottom-right 2x2 window of 0..15 holds 10, 11, 14, 15; 15 wins at [1, 1]):
        >>> t = pool_trace(np.arange(16.0).reshape(1, 4, 4), "max", 2, 1, 1)
        >>> t.window, t.value, t.argmax
        ([[10.0, 11.0], [14.0, 15.0]], 15.0, (1, 1))
    """
    xa = as_float_array(x, "input x", (2, 3))
    xa = xa if xa.ndim == 3 else xa[None]
    c, h, w = xa.shape
    out = pool2d(xa, kind, kernel, stride, padding, dilation, ceil_mode, count_include_pad)
    _, ho, wo = out.shape
    for name, v, hi in (("channel", channel, c), ("row", row, ho), ("col", col, wo)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or not 0 <= v < hi:
            raise InputError(f"{name} must be an int in 0..{hi - 1} (output is {c}x{ho}x{wo}), got {v!r}.")
    shape = output_shape(
        (h, w),
        kernel,
        op="maxpool" if kind == "max" else "avgpool",
        stride=stride,
        padding=padding,
        dilation=dilation,
        ceil_mode=ceil_mode,
        in_channels=c,
    )
    (kh, kw), (sh, sw), (dh, dw) = shape.kernel, shape.stride, shape.dilation
    ph, _, pw, _ = shape.padding
    rows = row * sh - ph + np.arange(kh) * dh  # input coordinates of the window's cells
    cols = col * sw - pw + np.arange(kw) * dw
    inside_r, inside_c = (rows >= 0) & (rows < h), (cols >= 0) & (cols < w)
    padded = ~(inside_r[:, None] & inside_c[None, :])
    vals = np.zeros((kh, kw))
    vals[np.ix_(inside_r, inside_c)] = xa[channel][np.ix_(rows[inside_r], cols[inside_c])]
    window = [[None if padded[i, j] else float(vals[i, j]) for j in range(kw)] for i in range(kh)]
    value = float(out[channel, row, col])
    if kind == "max":
        if bool(padded.all()):  # a dilated window that reads padding only: -inf, and no cell wins
            return PoolTrace(
                kind, channel, row, col, tuple(rows.tolist()), tuple(cols.tolist()), window, padded, value, None
            )
        masked = np.where(padded, -np.inf, vals)
        i, j = divmod(int(np.argmax(masked)), kw)
        return PoolTrace(
            kind, channel, row, col, tuple(rows.tolist()), tuple(cols.tolist()), window, padded, value, (i, j)
        )
    # the divisor PyTorch uses for this window (clipped to the padded input; real cells only when excluding pad)
    div = float(
        _divisor(ho, kh, sh, ph, h, count_include_pad)[row] * _divisor(wo, kw, sw, pw, w, count_include_pad)[col]
    )
    total = float(vals[~padded].sum())
    return PoolTrace(
        kind, channel, row, col, tuple(rows.tolist()), tuple(cols.tolist()), window, padded, value, None, total, div
    )
