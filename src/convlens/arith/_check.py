"""Boundary validation shared by the arithmetic functions (one place, one sentence per error).

Example:
    >>> pair(3, "kernel")
    (3, 3)
    >>> pair((2, 1), "stride")
    (2, 1)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from convlens.errors import InputError

__all__ = ["pair", "as_float_array"]


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def pair(value: int | Sequence[int], name: str, *, minimum: int = 1) -> tuple[int, int]:
    """Turn an int or a 2-sequence into an (h, w) pair of ints >= ``minimum``."""
    if _is_int(value):
        vals = (int(value), int(value))
    elif isinstance(value, (tuple, list)) and len(value) == 2 and all(_is_int(v) for v in value):
        vals = (int(value[0]), int(value[1]))
    else:
        raise InputError(f"{name} must be an int or a pair of ints (h, w), got {value!r}.")
    if min(vals) < minimum:
        raise InputError(f"{name} must be >= {minimum}, got {value!r}.")
    return vals


def as_float_array(x: Any, name: str, ndims: tuple[int, ...]) -> np.ndarray:
    """Convert ``x`` (array-like or torch tensor) to a finite float64 array with one of ``ndims``."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch tensor, without importing torch
        x = x.detach().cpu().numpy()
    try:
        arr = np.asarray(x)
    except ValueError:  # ragged nested lists
        raise InputError(
            f"{name} must be a rectangular numeric array, got a ragged nested list (rows of different lengths)."
        ) from None
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        what = "text" if arr.dtype.kind in "US" else "ragged or non-numeric"
        raise InputError(f"{name} must be a rectangular array of numbers, got {what} values (dtype {arr.dtype}).")
    if np.issubdtype(arr.dtype, np.complexfloating):
        raise InputError(f"{name} must be real-valued, got complex values.")
    arr = arr.astype(np.float64)
    if arr.ndim not in ndims:
        want = " or ".join(f"{d}-D" for d in ndims)
        raise InputError(f"{name} must be {want}, got shape {tuple(arr.shape)}.")
    if arr.size == 0:
        raise InputError(f"{name} is empty (shape {tuple(arr.shape)}).")
    if not np.isfinite(arr).all():
        raise InputError(f"{name} contains NaN or infinite values; give finite numbers.")
    return arr
