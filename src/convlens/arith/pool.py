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
from typing import Any, Literal

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from convlens.arith._check import as_float_array
from convlens.arith.shapes import output_shape
from convlens.errors import InputError

__all__ = ["pool2d", "POOL_KINDS"]

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
