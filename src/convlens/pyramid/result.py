"""An image pyramid as one core call: :func:`image_pyramid` builds a Gaussian or Laplacian pyramid of
an image and returns a :class:`PyramidResult` (level shapes and, for a Laplacian pyramid, how exactly
it reconstructs the image; the level arrays kept for figures). ``convlens pyramid --json`` prints its
:meth:`PyramidResult.to_dict` plus the files it wrote.

Example:
    >>> import numpy as np
    >>> r = image_pyramid(np.zeros((3, 9, 9)), "laplacian", 3)
    >>> [lv.shape for lv in r.levels], r.reconstruction_max_abs_error
    ([(9, 9), (5, 5), (3, 3)], 0.0)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from convlens.errors import InputError
from convlens.pyramid.pyramids import gaussian_pyramid, laplacian_pyramid, max_levels, reconstruct
from convlens.serialize import to_jsonable

__all__ = ["PyramidLevel", "PyramidResult", "image_pyramid", "KINDS"]

KINDS = ("gaussian", "laplacian")


@dataclass(frozen=True)
class PyramidLevel:
    """One level: its index (0 = the image) and (H, W)."""

    level: int
    shape: tuple[int, int]


@dataclass(frozen=True)
class PyramidResult:
    """The pyramid's levels; ``reconstruction_max_abs_error`` = max |reconstruct(levels) - image| for a
    Laplacian pyramid (None for a Gaussian one)."""

    kind: str
    levels: list[PyramidLevel]
    reconstruction_max_abs_error: float | None = None
    #: the levels, (C, H, W) float arrays (Laplacian band-pass levels are signed), for figures
    arrays: list[np.ndarray] = field(default_factory=list, repr=False, compare=False, metadata={"json": False})

    def to_dict(self) -> dict[str, Any]:
        """JSON form: every field but the arrays (:func:`convlens.serialize.to_jsonable`)."""
        return to_jsonable(self)


def image_pyramid(image: np.ndarray, kind: str = "gaussian", levels: int | None = None) -> PyramidResult:
    """A ``kind`` pyramid (:func:`gaussian_pyramid`, OpenCV's pyrDown; :func:`laplacian_pyramid`,
    Burt & Adelson 1983) of ``image`` (C, H, W) with ``levels`` levels including the image itself
    (default: 5, or fewer where the image allows fewer, :func:`max_levels`).

    Example:
        >>> image_pyramid(np.zeros((1, 8, 8))).levels[-1].shape
        (1, 1)
    """
    if kind not in KINDS:
        raise InputError(f"kind must be one of {', '.join(KINDS)}; got '{kind}'.")
    img = np.asarray(image)
    if levels is None:  # the default never exceeds what the image allows (an 8x8 image has 4 levels)
        levels = min(5, max_levels(img.shape[1], img.shape[2]))
    lv = (gaussian_pyramid if kind == "gaussian" else laplacian_pyramid)(img, levels)
    err = float(np.abs(reconstruct(lv) - img).max()) if kind == "laplacian" else None
    return PyramidResult(kind, [PyramidLevel(i, (int(a.shape[1]), int(a.shape[2]))) for i, a in enumerate(lv)], err, lv)
