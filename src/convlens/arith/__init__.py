"""Exact convolution and pooling arithmetic: NumPy float64 references checked against PyTorch.

* :func:`output_shape` — output size of a conv/pool under the ``'torch'`` (floor) or ``'tf'``
  (SAME/VALID) convention, with the formula, the numbers substituted, the exact fraction, uncovered
  rows/cols and the pads applied.
* :func:`conv2d` / :func:`trace` — reference convolution and the per-channel story of one output.
* :func:`pool2d` — max/avg pooling with PyTorch's ceil_mode and padding rules.
* :func:`conv_cost` — parameters and MACs.

Example:
    >>> from convlens.arith import output_shape
    >>> output_shape((128, 128), 3, in_channels=32, out_channels=16).output
    (126, 126, 16)
"""

from convlens.arith.conv import PADDING_MODES, ChannelTrace, ConvTrace, conv2d, pad2d, trace
from convlens.arith.cost import MAC_CONVENTION, ConvCost, conv_cost
from convlens.arith.pool import POOL_KINDS, PoolTrace, pool2d, pool_trace
from convlens.arith.resample import ResampleShape, transposed_shape, upsample_shape
from convlens.arith.shapes import CONVENTIONS, OPS, AxisShape, ShapeResult, output_shape, resolve_padding

__all__ = [
    "conv2d",
    "trace",
    "pad2d",
    "ConvTrace",
    "ChannelTrace",
    "PADDING_MODES",
    "pool2d",
    "transposed_shape",
    "upsample_shape",
    "ResampleShape",
    "pool_trace",
    "PoolTrace",
    "POOL_KINDS",
    "output_shape",
    "resolve_padding",
    "ShapeResult",
    "AxisShape",
    "OPS",
    "CONVENTIONS",
    "conv_cost",
    "ConvCost",
    "MAC_CONVENTION",
]
