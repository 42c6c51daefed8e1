"""Plain-JSON serialization of result dataclasses, shared by every front end (CLI ``--json``, the
report's ``summary.json``, the ``convlens serve`` API), so they all return the same fields.

Example:
    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class R:
    ...     x: float
    ...     y: tuple
    >>> to_jsonable(R(float("nan"), (1, 2)))
    {'x': None, 'y': [1, 2]}
"""

from __future__ import annotations

import dataclasses
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["to_jsonable"]


def to_jsonable(obj: Any) -> Any:
    """Dataclasses, numpy and torch values -> plain JSON types (NaN/inf -> null).

    A dataclass may rename fields for JSON (``cls`` -> ``class``) with a ``_json_names`` class mapping.

    Example:
        >>> to_jsonable({"a": np.float32(0.5), 1: np.arange(2)})
        {'a': 0.5, '1': [0, 1]}
    """
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        rename = getattr(obj, "_json_names", {})
        return {rename.get(f.name, f.name): to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    torch = sys.modules.get("torch")  # a tensor exists only if torch is loaded: never import it here (start-up)
    if torch is not None and isinstance(obj, torch.Tensor):
        return to_jsonable(obj.detach().cpu().tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
