"""One shape question, asked in the course's text notation: ``128x128x32``, kernel ``3``, stride ``2``,
padding ``same``. The ``convlens shape`` command and the ``convlens serve`` playground both parse
their text through here and call :func:`shape_query`, so they give the same answer and the same JSON.

Example (the course's exercise: 128x128x32, sixteen 3x3 filters, stride 2):
    >>> q = shape_query("128x128x32", "3", stride="2", filters=16)
    >>> q.result.output, q.cost.params
    ((63, 63, 16), 4624)
    >>> shape_query("128x128x32", "3", stride="2", padding="same", convention="tf", filters=16).result.output
    (64, 64, 16)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from convlens.arith.cost import ConvCost, conv_cost
from convlens.arith.resample import ResampleShape, transposed_shape, upsample_shape
from convlens.arith.shapes import CONVENTIONS, OPS, ShapeResult, output_shape
from convlens.errors import InputError
from convlens.serialize import to_jsonable

#: every layer ``convlens shape --op`` answers for
QUERY_OPS = (*OPS, "convtranspose", "upsample")

__all__ = ["ShapeQuery", "shape_query", "parse_size", "parse_pair", "parse_padding", "QUERY_OPS"]


def parse_size(text: str, *, channels_first: bool = False, name: str = "--input") -> tuple[int, int, int]:
    """Parse the course notation ``HxWxC`` (or ``CxHxW`` with ``channels_first``) into (H, W, C).

    A two-part ``HxW`` is refused: the channel count matters for every cost.

    Example:
        >>> parse_size("128x128x32"), parse_size("32x128x128", channels_first=True)
        ((128, 128, 32), (128, 128, 32))
    """
    parts = str(text).lower().replace("×", "x").replace(",", "x").split("x")
    if len(parts) != 3 or not all(p.strip().isdigit() for p in parts):
        order = "CxHxW" if channels_first else "HxWxC"
        raise InputError(f"{name} must look like {order} with three positive integers (e.g. 128x128x32), got '{text}'.")
    a, b, c = (int(p) for p in parts)
    h, w, ch = (b, c, a) if channels_first else (a, b, c)
    if min(h, w, ch) < 1:
        raise InputError(f"{name} sizes must be >= 1, got '{text}'.")
    return h, w, ch


def parse_pair(text: str, name: str) -> int | tuple[int, int]:
    """``'3'`` -> 3, ``'3x5'`` or ``'3,5'`` -> (3, 5) (rows x cols).

    Example:
        >>> parse_pair("3", "--kernel"), parse_pair("3x5", "--kernel")
        (3, (3, 5))
    """
    parts = str(text).lower().replace("×", "x").replace("x", ",").split(",")
    if not 1 <= len(parts) <= 2 or not all(p.strip().isdigit() for p in parts):
        raise InputError(f"{name} must be an int or a pair like 3x5 (rows x cols), got '{text}'.")
    vals = [int(p) for p in parts]
    return vals[0] if len(vals) == 1 else (vals[0], vals[1])


def parse_padding(text: str, name: str = "--padding") -> Any:
    """``'valid'`` | ``'same'`` | ``'N'`` | ``'ph,pw'`` | ``'top,bottom,left,right'``.

    Example:
        >>> parse_padding("same"), parse_padding("1"), parse_padding("1,2")
        ('same', 1, (1, 2))
    """
    t = str(text).strip().lower()
    if t in ("valid", "same"):
        return t
    parts = t.replace("x", ",").split(",")
    if len(parts) in (1, 2, 4) and all(p.strip().isdigit() for p in parts):
        vals = [int(p) for p in parts]
        return vals[0] if len(vals) == 1 else tuple(vals)
    raise InputError(
        f"{name} must be valid, same, N, 'ph,pw' or 'top,bottom,left,right' (non-negative ints), got '{text}'."
    )


@dataclass(frozen=True)
class ShapeQuery:
    """The answer to one shape question: the derivation and, for a convolution, its cost."""

    result: ShapeResult | ResampleShape
    cost: ConvCost | None

    def to_dict(self) -> dict[str, Any]:
        """The JSON of ``convlens shape --json``: the :class:`ShapeResult` fields plus ``cost``.

        Example:
            >>> shape_query("4x4x1", "2", op="maxpool").to_dict()["output"]
            [2, 2, 1]
        """
        out = to_jsonable(self.result)
        out["cost"] = to_jsonable(self.cost)
        return out


def _parse_scale(text: str | float) -> float | tuple[float, float]:
    """``'2'`` -> 2.0, ``'2x1.5'`` -> (2.0, 1.5)."""
    if isinstance(text, (int, float)):
        return float(text)
    parts = str(text).lower().replace("×", "x").replace(",", "x").split("x")
    try:
        vals = [float(p) for p in parts]
    except ValueError:
        vals = []
    if len(vals) not in (1, 2):
        raise InputError(f"--scale must be a number or a pair like 2x1.5 (rows x cols), got '{text}'.")
    return vals[0] if len(vals) == 1 else (vals[0], vals[1])


def shape_query(
    input: str | tuple[int, int, int],
    kernel: str | int | tuple[int, int] | None,
    *,
    stride: str | int | tuple[int, int] | None = None,
    padding: str | int | tuple[int, ...] = "0",
    dilation: str | int | tuple[int, int] = "1",
    filters: int | None = None,
    groups: int = 1,
    op: str = "conv",
    ceil_mode: bool = False,
    convention: str = "torch",
    channels_first: bool = False,
    bias: bool = True,
    output_padding: str | int | None = None,
    scale: str | float | None = None,
) -> ShapeQuery:
    """Validate one conv/pool setting given as text (or numbers) and derive its output shape and cost.

    ``input`` is ``HxWxC`` (``CxHxW`` with ``channels_first``) or an (H, W, C) tuple; ``kernel``,
    ``stride`` and ``dilation`` are ``'3'`` or ``'3x5'``; ``padding`` as :func:`parse_padding`.
    ``op='convtranspose'`` (with ``output_padding``) and ``op='upsample'`` (with ``scale``) answer
    through :mod:`convlens.arith.resample`.
    The shape follows :func:`convlens.arith.output_shape`, the cost :func:`convlens.arith.conv_cost`.

    Raises:
        InputError: anything malformed or inconsistent, in one sentence.

    Example:
        >>> shape_query((7, 7, 3), 3, filters=2).result.output
        (5, 5, 2)
    """
    h, w, c = input if isinstance(input, tuple) else parse_size(input, channels_first=channels_first)
    if op not in QUERY_OPS:
        raise InputError(f"--op must be one of {', '.join(QUERY_OPS)}; got '{op}'.")
    if op == "upsample":
        if scale is None:
            raise InputError("--op upsample needs --scale (a factor like 2, or 2x1.5 for rows x cols).")
        return ShapeQuery(upsample_shape((h, w), _parse_scale(scale), in_channels=c), None)
    if kernel is None:
        raise InputError(f"--kernel is required for --op {op}.")
    if op != "convtranspose" and output_padding not in (None, "0", 0):
        raise InputError("--output-padding belongs to --op convtranspose (a transposed convolution).")
    if op == "convtranspose":
        if filters is None:
            raise InputError("--filters is required for --op convtranspose (the number of output channels F).")
        num_pad: Any = (
            padding if convention == "tf" else parse_padding(padding) if isinstance(padding, str) else padding
        )
        if convention == "torch" and isinstance(num_pad, tuple) and len(num_pad) == 4:
            raise InputError("ConvTranspose2d pads symmetrically: give --padding N or ph,pw.")
        r_t = transposed_shape(
            (h, w),
            parse_pair(kernel, "--kernel") if isinstance(kernel, str) else kernel,
            stride=1 if stride is None else (parse_pair(stride, "--stride") if isinstance(stride, str) else stride),
            padding=num_pad,
            output_padding=parse_pair(str(output_padding or 0), "--output-padding"),
            dilation=parse_pair(dilation, "--dilation") if isinstance(dilation, str) else dilation,
            convention=convention,
            in_channels=c,
            out_channels=filters,
            groups=groups,
            bias=bias,
        )
        return ShapeQuery(r_t, None)
    if convention not in CONVENTIONS:
        raise InputError(f"--convention must be one of {', '.join(CONVENTIONS)}; got '{convention}'.")
    if op == "conv" and ceil_mode:
        raise InputError(
            "--ceil-mode is a pooling option (--op maxpool/avgpool); PyTorch convolutions always round down."
        )
    if op != "conv" and (filters is not None or groups != 1):
        raise InputError(f"--filters and --groups describe convolutions; --op {op} keeps the {c} input channel(s).")
    if op == "conv" and filters is None:
        raise InputError("--filters is required for --op conv (the number of output channels F).")
    if filters is not None and filters < 1:
        raise InputError(f"--filters must be >= 1, got {filters}.")
    if op == "conv" and (groups < 1 or c % groups or filters % groups):  # type: ignore[operator]
        raise InputError(
            f"--groups {groups} must be >= 1 and divide both the input channels ({c}) and --filters ({filters})."
        )

    def num(v: Any, name: str) -> Any:
        return parse_pair(v, name) if isinstance(v, str) else v

    r = output_shape(
        (h, w),
        num(kernel, "--kernel"),
        op=op,  # type: ignore[arg-type]
        stride=None if stride is None else num(stride, "--stride"),
        padding=parse_padding(padding) if isinstance(padding, str) else padding,
        dilation=num(dilation, "--dilation"),
        ceil_mode=ceil_mode,
        convention=convention,  # type: ignore[arg-type]
        in_channels=c,
        out_channels=filters if op == "conv" else None,
    )
    cost = conv_cost(c, filters, r.kernel, r.output[:2], groups=groups, bias=bias) if op == "conv" else None  # type: ignore[arg-type]
    return ShapeQuery(r, cost)
