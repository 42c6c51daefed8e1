"""Cost of a block, branch by branch: output shape, parameters, MACs and receptive field.

The analysis reads the block's actual layers (``block.branches``), so it follows any widths you
configure. Per layer it uses :func:`convlens.arith.output_shape` (PyTorch floor rule) and
:func:`convlens.arith.conv_cost`:

* conv params ``= F (C/groups) kh kw + F`` (bias), MACs ``= H_out W_out F (C/groups) kh kw``
  (bias adds not counted); BatchNorm adds ``2C`` params (gamma, beta) and, like pooling and ReLU,
  no MACs under this convention.
* receptive field of a branch, in block-input pixels: ``r = 1 + sum_i (k_eff_i - 1) * j_i`` with
  ``k_eff = d (k - 1) + 1`` and the jump ``j_i`` = product of the strides before layer ``i``.

Merges: ``concat`` (Inception) sums the branch channels; ``add`` (residual) needs equal shapes;
``single`` has one path.

Example (GoogLeNet inception (3a) on 28x28x192):
    >>> c = inception_comparison((28, 28, 192))
    >>> c.reduced.output, c.naive.output
    ((28, 28, 256), (28, 28, 416))
    >>> round(c.mac_saving, 2)
    2.37
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from convlens.arith import MAC_CONVENTION, conv_cost, output_shape
from convlens.errors import InputError

__all__ = [
    "LayerCost",
    "BranchCost",
    "BlockCost",
    "InceptionComparison",
    "Conv1x1Comparison",
    "block_cost",
    "inception_comparison",
    "conv1x1_comparison",
]

COST_CONVENTION = MAC_CONVENTION + " BatchNorm: 2*C params, 0 MACs; pooling and ReLU: 0 params, 0 MACs."

HWC = tuple[int, int, int]


@dataclass(frozen=True)
class LayerCost:
    """One layer inside a branch."""

    layer: str
    input: HWC
    output: HWC
    params: int
    macs: int


@dataclass(frozen=True)
class BranchCost:
    """One path of a block: its layers, output shape, totals and receptive field (block-input pixels)."""

    name: str
    layers: tuple[LayerCost, ...]
    output: HWC
    params: int
    macs: int
    receptive_field: int


@dataclass(frozen=True)
class BlockCost:
    """A whole block: ``output`` after the merge, totals over branches, largest receptive field."""

    block: str
    input: HWC
    output: HWC
    params: int
    macs: int
    receptive_field: int
    merge: str
    branches: tuple[BranchCost, ...]
    convention: str = COST_CONVENTION


@dataclass(frozen=True)
class InceptionComparison:
    """Naive vs 1x1-reduced inception on the same input. Top-level numbers are the reduced block's.

    ``mac_saving = naive.macs / reduced.macs`` and ``param_saving = naive.params / reduced.params``
    (the naive block also outputs more channels, since its pool branch passes all input channels).
    """

    input: HWC
    output: HWC
    params: int
    macs: int
    branches: tuple[BranchCost, ...]
    naive: BlockCost
    reduced: BlockCost
    mac_saving: float
    param_saving: float
    convention: str = COST_CONVENTION


@dataclass(frozen=True)
class Conv1x1Comparison:
    """A 1x1 conv next to a 3x3 conv ("same" padding) with the same filters on the same input.

    ``mac_ratio = conv3x3.macs / macs`` (9 up to the bias: a 3x3 kernel has 9 taps per channel).
    """

    input: HWC
    output: HWC
    params: int
    macs: int
    receptive_field: int
    conv3x3: BlockCost
    mac_ratio: float
    param_ratio: float
    convention: str = COST_CONVENTION


def _as_hwc(input_hwc: Sequence[int]) -> HWC:
    if (
        not isinstance(input_hwc, (tuple, list))
        or len(input_hwc) != 3
        or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in input_hwc)
    ):
        raise InputError(f"input must be (H, W, C) with three positive integers, got {input_hwc!r}.")
    return (int(input_hwc[0]), int(input_hwc[1]), int(input_hwc[2]))


def _pair(v: int | tuple[int, ...]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _branch_cost(name: str, seq: nn.Module, shape: HWC) -> BranchCost:
    layers: list[LayerCost] = []
    rf, jump = 1, 1
    for m in seq.children():
        h, w, c = shape
        if isinstance(m, nn.Conv2d):
            if m.in_channels != c:
                raise InputError(f"branch '{name}': {m} expects {m.in_channels} input channels, got {c}.")
            k, s, d = _pair(m.kernel_size), _pair(m.stride), _pair(m.dilation)
            if isinstance(m.padding, str):
                pad: int | str | tuple[int, int] = m.padding
            else:
                pad = _pair(m.padding)
            shp = output_shape((h, w), k, stride=s, padding=pad, dilation=d, in_channels=c, out_channels=m.out_channels)
            cost = conv_cost(c, m.out_channels, k, shp.output[:2], groups=m.groups, bias=m.bias is not None)
            out: HWC = (shp.output[0], shp.output[1], m.out_channels)
            kind = "depthwise conv" if m.groups == c > 1 else "conv" + (f" (groups {m.groups})" if m.groups > 1 else "")
            label = f"{kind} {k[0]}x{k[1]}" + (f"/s{s[0]}" if s != (1, 1) else "") + f" -> {m.out_channels}"
            layers.append(LayerCost(label, shape, out, cost.params, cost.macs))
            rf, jump = rf + (d[0] * (k[0] - 1)) * jump, jump * s[0]
        elif isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)):
            k, s = _pair(m.kernel_size), _pair(m.stride if m.stride is not None else m.kernel_size)
            d = _pair(getattr(m, "dilation", 1))
            op = "maxpool" if isinstance(m, nn.MaxPool2d) else "avgpool"
            shp = output_shape(
                (h, w), k, op=op, stride=s, padding=_pair(m.padding), dilation=d, ceil_mode=m.ceil_mode, in_channels=c
            )
            out = (shp.output[0], shp.output[1], c)
            label = f"{op} {k[0]}x{k[1]}/s{s[0]}"
            layers.append(LayerCost(label, shape, out, 0, 0))
            rf, jump = rf + (d[0] * (k[0] - 1)) * jump, jump * s[0]
        elif isinstance(m, nn.BatchNorm2d):
            out = shape
            layers.append(LayerCost("batchnorm", shape, out, 2 * c if m.affine else 0, 0))
        elif isinstance(m, (nn.ReLU, nn.Identity)):
            continue
        else:
            raise InputError(f"branch '{name}' holds a {type(m).__name__}, which the cost analysis does not know.")
        shape = out
    return BranchCost(name, tuple(layers), shape, sum(lc.params for lc in layers), sum(lc.macs for lc in layers), rf)


def block_cost(block: nn.Module, input_hwc: Sequence[int]) -> BlockCost:
    """Per-branch and total cost of a block from :mod:`convlens.blocks` on an (H, W, C) input.

    Example:
        >>> from convlens.blocks import ResidualBlock
        >>> c = block_cost(ResidualBlock(64, 128, stride=2), (56, 56, 64))
        >>> c.output, [b.receptive_field for b in c.branches]
        ((28, 28, 128), [7, 1])
    """
    shape = _as_hwc(input_hwc)
    branches = getattr(block, "branches", None)
    merge = getattr(block, "merge", None)
    if not isinstance(branches, nn.ModuleDict) or merge not in ("concat", "add", "single"):
        raise InputError(
            f"block_cost needs a convlens.blocks block (with .branches and .merge), got {type(block).__name__}."
        )
    if shape[2] != getattr(block, "in_channels", shape[2]):
        raise InputError(f"{type(block).__name__} takes {block.in_channels} input channels, got input {shape}.")
    costs = tuple(_branch_cost(name, seq, shape) for name, seq in branches.items())
    if merge == "concat":
        hw = {b.output[:2] for b in costs}
        if len(hw) != 1:
            raise InputError(
                f"branches of {type(block).__name__} give different spatial sizes {sorted(hw)}; cannot concatenate."
            )
        out: HWC = (*costs[0].output[:2], sum(b.output[2] for b in costs))  # type: ignore[assignment]
    elif merge == "add":
        shapes = {b.output for b in costs}
        if len(shapes) != 1:
            raise InputError(f"branches of {type(block).__name__} give different shapes {sorted(shapes)}; cannot add.")
        out = costs[0].output
    else:
        out = costs[0].output
    return BlockCost(
        type(block).__name__,
        shape,
        out,
        sum(b.params for b in costs),
        sum(b.macs for b in costs),
        max(b.receptive_field for b in costs),
        merge,
        costs,
    )


def inception_comparison(
    input_hwc: Sequence[int],
    ch1x1: int = 64,
    ch3x3red: int = 96,
    ch3x3: int = 128,
    ch5x5red: int = 16,
    ch5x5: int = 32,
    pool_proj: int = 32,
) -> InceptionComparison:
    """Cost of the naive inception block vs the one with 1x1 reductions (defaults: inception (3a)).

    Example:
        >>> c = inception_comparison((28, 28, 192))
        >>> c.naive.macs, c.reduced.macs
        (303464448, 128049152)
    """
    from convlens.blocks.modules import Inception

    shape = _as_hwc(input_hwc)
    widths = dict(ch1x1=ch1x1, ch3x3red=ch3x3red, ch3x3=ch3x3, ch5x5red=ch5x5red, ch5x5=ch5x5, pool_proj=pool_proj)
    naive = block_cost(Inception(shape[2], **widths, reduce=False), shape)
    reduced = block_cost(Inception(shape[2], **widths, reduce=True), shape)
    return InceptionComparison(
        shape,
        reduced.output,
        reduced.params,
        reduced.macs,
        reduced.branches,
        naive,
        reduced,
        naive.macs / reduced.macs,
        naive.params / reduced.params,
    )


def conv1x1_comparison(input_hwc: Sequence[int], filters: int) -> Conv1x1Comparison:
    """A 1x1 conv to ``filters`` channels vs a 3x3 conv (padding 1) with the same filters.

    Example (28x28x64 -> 28x28x32):
        >>> c = conv1x1_comparison((28, 28, 64), 32)
        >>> c.output, c.params, c.macs, c.conv3x3.macs
        ((28, 28, 32), 2080, 1605632, 14450688)
    """
    from convlens.blocks.modules import Conv1x1

    shape = _as_hwc(input_hwc)
    if isinstance(filters, bool) or not isinstance(filters, int) or filters < 1:
        raise InputError(f"filters must be a positive integer, got {filters!r}.")
    one = block_cost(Conv1x1(shape[2], filters), shape)
    three_block = nn.Module()
    three_block.branches = nn.ModuleDict({"conv3x3": nn.Sequential(nn.Conv2d(shape[2], filters, 3, padding=1))})
    three_block.merge = "single"
    three = block_cost(three_block, shape)
    three = BlockCost(
        "Conv3x3",
        *(getattr(three, f) for f in ("input", "output", "params", "macs", "receptive_field", "merge", "branches")),
    )
    return Conv1x1Comparison(
        shape,
        one.output,
        one.params,
        one.macs,
        one.receptive_field,
        three,
        three.macs / one.macs,
        three.params / one.params,
    )
