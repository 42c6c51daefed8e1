"""CNN building blocks (1x1 conv, inception, residual, plain) and their branch-by-branch cost.

Example:
    >>> from convlens.blocks import Inception, block_cost
    >>> block_cost(Inception(192), (28, 28, 192)).output
    (28, 28, 256)
"""

from convlens.blocks.cost import (
    BlockCost,
    BranchCost,
    Conv1x1Comparison,
    InceptionComparison,
    LayerCost,
    block_cost,
    conv1x1_comparison,
    inception_comparison,
)
from convlens.blocks.modules import BLOCK_KINDS, Conv1x1, DepthwiseSeparable, Inception, PlainBlock, ResidualBlock

__all__ = [
    "Conv1x1",
    "Inception",
    "ResidualBlock",
    "PlainBlock",
    "DepthwiseSeparable",
    "BLOCK_KINDS",
    "LayerCost",
    "BranchCost",
    "BlockCost",
    "InceptionComparison",
    "Conv1x1Comparison",
    "block_cost",
    "inception_comparison",
    "conv1x1_comparison",
]
