"""Parameter and multiply-accumulate (MAC) counts of a convolution.

* weights ``= F * (C / groups) * kh * kw``, bias ``= F`` (when present), params = weights + bias.
* ``MACs = H_out * W_out * F * (C / groups) * kh * kw``: one multiply-accumulate per weight per
  output position. **Bias additions are not counted** (they add ``H_out*W_out*F`` plain adds);
  FLOPs are often quoted as ``2 * MACs``.

Example (sixteen 3x3x32 filters on 128x128x32 at stride 1 -> 126x126x16):
    >>> c = conv_cost(32, 16, 3, (126, 126))
    >>> c.params, c.macs
    (4624, 73156608)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from convlens.arith._check import pair
from convlens.errors import InputError

__all__ = ["ConvCost", "conv_cost", "MAC_CONVENTION"]

MAC_CONVENTION = (
    "MACs = H_out*W_out*F*(C/groups)*kh*kw multiply-accumulates; bias additions are not counted; FLOPs ~ 2*MACs."
)


@dataclass(frozen=True)
class ConvCost:
    """Parameter and MAC counts of one convolution, with the formulas and the counting convention."""

    in_channels: int
    out_channels: int
    kernel: tuple[int, int]
    groups: int
    output_hw: tuple[int, int]
    bias: bool
    weight_params: int
    bias_params: int
    params: int
    macs: int
    params_formula: str
    macs_formula: str
    convention: str


def conv_cost(
    in_channels: int,
    out_channels: int,
    kernel: int | Sequence[int],
    output_hw: int | Sequence[int],
    *,
    groups: int = 1,
    bias: bool = True,
) -> ConvCost:
    """Count parameters and MACs of a conv with ``in_channels`` C, ``out_channels`` F, a (kh, kw)
    kernel and an (H_out, W_out) output (see the module docstring for the formulas).

    Example (a 1x1 conv 28x28x64 -> 28x28x32):
        >>> conv_cost(64, 32, 1, 28).macs
        1605632
    """
    for name, v in (("in_channels", in_channels), ("out_channels", out_channels), ("groups", groups)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
            raise InputError(f"{name} must be a positive int, got {v!r}.")
    if in_channels % groups or out_channels % groups:
        raise InputError(f"groups={groups} must divide in_channels ({in_channels}) and out_channels ({out_channels}).")
    kh, kw = pair(kernel, "kernel")
    ho, wo = pair(output_hw, "output size")
    cg = in_channels // groups
    weights = out_channels * cg * kh * kw
    nb = out_channels if bias else 0
    macs = ho * wo * out_channels * cg * kh * kw
    return ConvCost(
        in_channels=int(in_channels),
        out_channels=int(out_channels),
        kernel=(kh, kw),
        groups=int(groups),
        output_hw=(ho, wo),
        bias=bool(bias),
        weight_params=weights,
        bias_params=nb,
        params=weights + nb,
        macs=macs,
        params_formula=f"F*(C/groups)*kh*kw + bias = {out_channels}*{cg}*{kh}*{kw} + {nb} = {weights + nb}",
        macs_formula=f"H_out*W_out*F*(C/groups)*kh*kw = {ho}*{wo}*{out_channels}*{cg}*{kh}*{kw} = {macs}",
        convention=MAC_CONVENTION,
    )
