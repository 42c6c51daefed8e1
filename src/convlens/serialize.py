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

__all__ = ["to_jsonable", "fmt_num"]


def to_jsonable(obj: Any) -> Any:
    """Dataclasses, numpy and torch values -> plain JSON types (NaN/inf -> null).

    A dataclass may rename fields for JSON (``cls`` -> ``class``) with a ``_json_names`` class mapping, and
    leave a field out (response maps kept for figures) with ``field(metadata={"json": False})``.

    Example:
        >>> to_jsonable({"a": np.float32(0.5), 1: np.arange(2)})
        {'a': 0.5, '1': [0, 1]}
    """
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        rename = getattr(obj, "_json_names", {})
        return {
            rename.get(f.name, f.name): to_jsonable(getattr(obj, f.name))
            for f in dataclasses.fields(obj)
            if f.metadata.get("json", True)
        }
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


def fmt_num(v: float, spec: str = ".6g") -> str:
    """Format a number for people: ``format(v, spec)``, but never ``-0`` (a negative zero, or a tiny
    negative rounded to zero, prints as ``0``). Every trace and table that shows numbers uses it.

    Example:
        >>> fmt_num(-0.0), fmt_num(-0.0004, ".2f"), fmt_num(-1.5), fmt_num(2e-9, ".3g")
        ('0', '0.00', '-1.5', '2e-09')
    """
    import re

    text = format(v, spec)
    if text.startswith("-") and re.fullmatch(r"-0*\.?0*(e[+-]?\d+)?%?", text):
        return text[1:]
    return text
