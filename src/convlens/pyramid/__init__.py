"""Image pyramids: Gaussian (OpenCV pyrDown) and exactly invertible Laplacian (Burt-Adelson).

Example:
    >>> import numpy as np
    >>> [g.shape for g in gaussian_pyramid(np.zeros((9, 9)), 3)]
    [(9, 9), (5, 5), (3, 3)]
"""

from convlens.pyramid.pyramids import (
    BINOMIAL_5,
    expand,
    gaussian_pyramid,
    laplacian_pyramid,
    max_levels,
    reconstruct,
    reduce,
)
from convlens.pyramid.result import KINDS, PyramidLevel, PyramidResult, image_pyramid

__all__ = [
    "BINOMIAL_5",
    "reduce",
    "expand",
    "gaussian_pyramid",
    "laplacian_pyramid",
    "reconstruct",
    "max_levels",
    "image_pyramid",
    "PyramidResult",
    "PyramidLevel",
    "KINDS",
]
