"""Convolution and pooling runs as core calls: :func:`conv_run` / :func:`pool_run` compute the output
(NumPy float64, the numbers PyTorch gives) and, when asked, the trace of one output element, and
return a :class:`ConvRun` / :class:`PoolRun`; ``convlens conv --json`` / ``convlens pool --json``
print its ``to_dict()``.

Example:
    >>> import numpy as np
    >>> r = conv_run(np.ones((1, 3, 3)), np.ones((1, 1, 2, 2)), single=True)
    >>> r.to_dict()["output"], r.to_dict()["output_shape"]
    ([[4.0, 4.0], [4.0, 4.0]], [2, 2])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from convlens.arith.conv import ConvTrace, conv2d, trace
from convlens.arith.pool import PoolTrace, pool2d, pool_trace
from convlens.arith.shapes import PaddingSpec, ShapeResult, output_shape
from convlens.serialize import to_jsonable

__all__ = ["ConvRun", "PoolRun", "conv_run", "pool_run"]


@dataclass(frozen=True)
class ConvRun:
    """``output``: (F, Ho, Wo), or (Ho, Wo) for one filter given as (C, kh, kw); ``padding``: the pads
    applied (top, bottom, left, right); ``trace``: the per-channel story of one output, when asked."""

    output: np.ndarray
    padding: tuple[int, int, int, int]
    trace: ConvTrace | None = None
    #: every filter's map (F, Ho, Wo), the input (C, H, W) and kernel (F, C, kh, kw) shapes, the shape arithmetic
    maps: np.ndarray | None = field(default=None, repr=False, compare=False, metadata={"json": False})
    input_shape: tuple[int, ...] = field(default=(), metadata={"json": False})
    kernel_shape: tuple[int, ...] = field(default=(), metadata={"json": False})
    shape: ShapeResult | None = field(default=None, repr=False, compare=False, metadata={"json": False})

    def to_dict(self) -> dict[str, Any]:
        """JSON form: ``output``, ``output_shape``, ``padding`` and, when traced, ``trace``."""
        d: dict[str, Any] = {"output": self.output, "output_shape": list(self.output.shape), "padding": self.padding}
        if self.trace is not None:
            d["trace"] = self.trace
        return to_jsonable(d)


@dataclass(frozen=True)
class PoolRun:
    """``output``: (C, Ho, Wo), or (Ho, Wo) for a (H, W) input; ``trace``: one output's window, when asked."""

    output: np.ndarray
    trace: PoolTrace | None = None
    #: every channel's map (C, Ho, Wo)
    maps: np.ndarray | None = field(default=None, repr=False, compare=False, metadata={"json": False})

    def to_dict(self) -> dict[str, Any]:
        """JSON form: ``output``, ``output_shape`` and, when traced, ``trace``."""
        d: dict[str, Any] = {"output": self.output, "output_shape": list(self.output.shape)}
        if self.trace is not None:
            d["trace"] = self.trace.to_dict()
        return to_jsonable(d)


def conv_run(
    x: np.ndarray,
    kernel: np.ndarray,
    bias: np.ndarray | None = None,
    *,
    single: bool = False,
    stride: int | Sequence[int] = 1,
    padding: PaddingSpec = 0,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
    padding_mode: str = "zeros",
    trace_at: tuple[int, int] | None = None,
    filter: int = 0,
) -> ConvRun:
    """Convolve ``x`` (C, H, W) with ``kernel`` (F, C/groups, kh, kw) (:func:`conv2d`); ``single``: report
    filter 0's map as (Ho, Wo); ``trace_at`` = (i, j): explain output (i, j) of ``filter`` (:func:`trace`).

    Example:
        >>> r = conv_run(np.arange(9.0).reshape(1, 3, 3), np.ones((1, 1, 2, 2)), trace_at=(0, 0))
        >>> r.output.tolist(), r.trace.total
        ([[[8.0, 12.0], [20.0, 24.0]]], 8.0)
    """
    geo: dict[str, Any] = dict(
        stride=stride, padding=padding, dilation=dilation, groups=groups, padding_mode=padding_mode
    )
    y = conv2d(x, kernel, bias, **geo)
    t = None
    if trace_at is not None:
        t = trace(x, kernel, int(trace_at[0]), int(trace_at[1]), filter=filter, bias=bias, **geo)
    shape = output_shape(x.shape[1:], kernel.shape[2:], stride=stride, padding=padding, dilation=dilation)
    return ConvRun(y[0] if single else y, shape.padding, t, y, tuple(x.shape), tuple(kernel.shape), shape)


def pool_run(
    x: np.ndarray,
    kind: str = "max",
    kernel: int | Sequence[int] = 2,
    *,
    single: bool = False,
    stride: int | Sequence[int] | None = None,
    padding: int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    trace_at: tuple[int, int] | None = None,
    channel: int = 0,
) -> PoolRun:
    """Pool ``x`` (C, H, W) (:func:`pool2d`); ``single``: report channel 0 as (Ho, Wo); ``trace_at`` =
    (i, j): the window of output (i, j) of ``channel`` (:func:`pool_trace`).

    Example:
        >>> pool_run(np.arange(16.0).reshape(1, 4, 4), single=True).output.tolist()
        [[5.0, 7.0], [13.0, 15.0]]
    """
    y = pool2d(x, kind, kernel, stride, padding, dilation, ceil_mode, count_include_pad)  # type: ignore[arg-type]
    t = None
    if trace_at is not None:
        t = pool_trace(
            x,
            kind,  # type: ignore[arg-type]
            kernel,
            int(trace_at[0]),
            int(trace_at[1]),
            channel=channel,
            stride=stride,
            padding=padding,
            dilation=dilation,
            ceil_mode=ceil_mode,
            count_include_pad=count_include_pad,
        )
    return PoolRun(y[0] if single else y, t, y)
