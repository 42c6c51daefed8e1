"""Output shapes of convolution and pooling layers, derived step by step.

Two conventions:

* ``'torch'`` (PyTorch, explicit padding): with the effective kernel ``k_eff = d*(k-1) + 1``,

  ``out = floor((in + pad_before + pad_after - k_eff) / stride) + 1``.

  Pools with ``ceil_mode=True`` use ``ceil`` instead, then drop the last window when it would start
  inside the right padding, i.e. when ``(out-1)*stride >= in + pad_before``.
  ``padding='same'`` (convolutions, stride 1 only, like PyTorch) pads ``d*(k-1)`` in total,
  ``floor`` of half before and the extra one after (bottom/right).
* ``'tf'`` (TensorFlow/Keras): ``'SAME'`` gives ``out = ceil(in / stride)`` with a total pad of
  ``max((out-1)*stride + k_eff - in, 0)``, the extra one at the bottom/right; ``'VALID'`` gives
  ``out = ceil((in - k_eff + 1) / stride)``.

Example (the course's 128x128x32 input, sixteen 3x3 filters, stride 2):
    >>> r = output_shape((128, 128), 3, stride=2, in_channels=32, out_channels=16)
    >>> r.output, r.axes[0].exact, r.axes[0].uncovered
    ((63, 63, 16), 63.5, 1)
    >>> output_shape((128, 128), 3, stride=2, padding="same", convention="tf", out_channels=16).output
    (64, 64, 16)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Literal

import numpy as np

from convlens.arith._check import pair
from convlens.errors import InputError

__all__ = ["AxisShape", "ShapeResult", "output_shape", "resolve_padding", "OPS", "CONVENTIONS"]

OPS = ("conv", "maxpool", "avgpool")
CONVENTIONS = ("torch", "tf")

PaddingSpec = int | str | Sequence[int]


@dataclass(frozen=True)
class AxisShape:
    """The derivation along one spatial axis (``'H'`` rows or ``'W'`` columns).

    ``fraction`` is the exact value before rounding (``'127/2'``), ``exact`` the same as a float
    (63.5), ``rounding`` the rule applied (``'floor'``/``'ceil'``), ``out`` the result.
    ``uncovered`` counts input rows/cols that no kernel tap ever reads (lost at the end when the
    windows don't fit, or skipped when stride > effective kernel); ``uncovered_tail`` counts only
    those after the last window. ``dropped_last`` is True when ceil_mode's last window started in the
    right padding and was dropped.
    """

    axis: str
    size: int
    kernel: int
    dilation: int
    effective_kernel: int
    stride: int
    pad_before: int
    pad_after: int
    fraction: str
    exact: float
    rounding: str
    out: int
    substituted: str
    uncovered: int
    uncovered_tail: int
    dropped_last: bool = False


@dataclass(frozen=True)
class ShapeResult:
    """Output shape of one conv/pool layer with its derivation.

    ``input``/``output`` are ``(H, W, C)`` (C is ``None`` when not given); ``padding`` is the padding
    actually applied as ``(top, bottom, left, right)``; ``formula`` the general rule, ``axes`` the
    per-axis derivation with numbers substituted, ``notes`` plain-language remarks such as why the
    result is 63 and not 64.
    """

    def _repr_html_(self) -> str:
        """Rich display in Jupyter: the renderer the report uses (:func:`convlens.plot.html.shape_html`), images inline."""
        from convlens.plot.html import shape_html

        return shape_html(self)

    op: str
    convention: str
    input: tuple[int, int, int | None]
    output: tuple[int, int, int | None]
    kernel: tuple[int, int]
    stride: tuple[int, int]
    dilation: tuple[int, int]
    padding: tuple[int, int, int, int]
    ceil_mode: bool
    formula: str
    axes: tuple[AxisShape, AxisShape]
    notes: tuple[str, ...]


def _fmt(q: Fraction) -> str:
    """A fraction as a short decimal (63.5), or 'a/b ~ x.xxx' when it does not terminate."""
    if q.denominator == 1:
        return str(q.numerator)
    d = q.denominator
    while d % 2 == 0:
        d //= 2
    while d % 5 == 0:
        d //= 5
    if d == 1:
        return f"{float(q):g}"
    return f"{q.numerator}/{q.denominator} ~ {float(q):.4g}"


def _parse_padding(padding: PaddingSpec) -> str | tuple[int, int, int, int]:
    """'same'/'valid' (lower-cased) or explicit (top, bottom, left, right)."""
    if isinstance(padding, str):
        p = padding.strip().lower()
        if p in ("same", "valid"):
            return p
        if p.isdigit():
            return (int(p),) * 4
        raise InputError(f"padding must be 'valid', 'same' or a non-negative int, got '{padding}'.")
    if isinstance(padding, (tuple, list)) and len(padding) == 4:
        if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 0 for v in padding):
            raise InputError(f"padding (top, bottom, left, right) must be non-negative ints, got {padding!r}.")
        return tuple(int(v) for v in padding)  # type: ignore[return-value]
    ph, pw = pair(padding, "padding", minimum=0)  # type: ignore[arg-type]
    return (ph, ph, pw, pw)


def _mark(lo: int, hi: int, k: int, s: int, d: int, out: int) -> np.ndarray:
    """Boolean mask over padded positions ``lo..hi``: True where some tap of some window lands."""
    mask = np.zeros(max(hi - lo + 1, 0), dtype=bool)
    for j in range(k):  # tap j of every window: j*d + i*s, i = 0..out-1 (one strided slice each)
        q0 = j * d
        i0 = max(0, -(-(lo - q0) // s))
        i1 = min(out - 1, (hi - q0) // s)
        if i0 <= i1:
            mask[q0 + i0 * s - lo : q0 + i1 * s - lo + 1 : s] = True
    return mask


def _dense(lo: int, hi: int, k: int, s: int, d: int, out: int) -> tuple[int, int | None]:
    """(covered count, largest covered) over a short padded range by marking it."""
    idx = np.flatnonzero(_mark(lo, hi, k, s, d, out))
    return int(idx.size), (lo + int(idx[-1]) if idx.size else None)


_DENSE_MAX = 4_000_000  # longer ranges are counted from the stride's period instead of marked


def _count_max(lo: int, hi: int, k: int, s: int, d: int, out: int) -> tuple[int, int | None]:
    """(covered positions in padded ``lo..hi``, the largest covered one or None), without
    materializing the range: O(1) for d = 1, periodic in the stride for d > 1 (edges marked)."""
    if hi < lo:
        return 0, None
    k_eff = d * (k - 1) + 1
    last = (out - 1) * s + k_eff - 1
    if d == 1:  # windows are intervals [i*s, i*s + k - 1]

        def upto(x: int) -> int:  # covered positions in 0..x
            x = min(x, last)
            if x < 0:
                return 0
            if s <= k:
                return x + 1
            m = x // s
            return m * k + min(x - m * s + 1, k)

        x = min(hi, last)
        if s <= k or x - (x // s) * s < k:
            top = x
        else:
            top = (x // s) * s + k - 1
        return upto(hi) - upto(lo - 1), (top if top >= lo else None)
    if hi - lo < _DENSE_MAX:
        return _dense(lo, hi, k, s, d, out)
    # huge range: below a = k_eff-1 and above b = (out-1)*s some taps fall outside 0..out-1 windows;
    # between, position q is covered iff q mod s is one of the residues j*d mod s
    a, b = k_eff - 1, (out - 1) * s
    parts: list[tuple[int, int | None]] = []
    if lo < a:
        parts.append(_dense(lo, min(hi, a - 1), k, s, d, out))
    if max(lo, a) <= min(hi, b):
        ia, ib = max(lo, a), min(hi, b)
        g = math.gcd(d, s)
        if k >= s // g:  # every multiple of g
            n = ib // g - (ia - 1) // g
            top = ib - ib % g
        else:
            rs = {(j * d) % s for j in range(k)}  # Python ints: sizes may exceed int64
            n = sum((ib - r) // s - (ia - 1 - r) // s for r in rs)
            top = ib - min((ib - r) % s for r in rs)
        parts.append((int(n), top if n else None))
    if hi > b:
        ua = max(lo, a, b + 1)
        parts.append(_dense(ua, min(hi, last), k, s, d, out))
    tops = [t for _, t in parts if t is not None]
    return sum(n for n, _ in parts), (max(tops) if tops else None)


def _covered(size: int, out: int, k: int, s: int, d: int, before: int) -> tuple[int, int]:
    """(never-read input positions, never-read positions after the last window); exact and cheap
    even for huge sizes (no array of the input's length)."""
    n, top = _count_max(before, before + size - 1, k, s, d, out)
    tail = size if top is None else before + size - 1 - top
    return int(size - n), int(tail)


def _axis(
    axis: str,
    size: int,
    k: int,
    s: int,
    d: int,
    pad: str | tuple[int, int],
    op: str,
    convention: str,
    ceil_mode: bool,
    label: str | None = None,
) -> tuple[AxisShape, list[str]]:
    one, rows = (
        {"H": ("row", "rows"), "W": ("column", "columns")}[axis] if label is None else ("row/column", "rows/columns")
    )
    label = label or axis
    k_eff = d * (k - 1) + 1
    notes: list[str] = []
    dropped = False
    if convention == "tf" and pad == "same":
        out = -(-size // s)
        total = max((out - 1) * s + k_eff - size, 0)
        before, after = total // 2, total - total // 2
        q = Fraction(size, s)
        rounding = "ceil"
        sub = f"ceil({size} / {s}) = ceil({_fmt(q)}) = {out}; pad total = max(({out}-1)*{s} + {k_eff} - {size}, 0) = {total} (before {before}, after {after})"
        if q.denominator != 1:
            notes.append(
                f"{label}: {size}/{s} = {_fmt(q)} is rounded up: TensorFlow 'SAME' keeps a window for every started stride and pads {total} {rows} ({before} before, {after} after)."
            )
    elif convention == "tf" and pad == "valid":
        if size < k_eff:
            raise InputError(
                f"kernel {k} (effective {k_eff} with dilation {d}) is larger than the input's {size} {rows}; use a smaller kernel or 'SAME' padding."
            )
        out = -(-(size - k_eff + 1) // s)
        before = after = 0
        q = Fraction(size - k_eff + 1, s)
        rounding = "ceil"
        sub = f"ceil(({size} - {k_eff} + 1) / {s}) = ceil({_fmt(q)}) = {out}"
    else:
        if pad == "same":
            if s != 1:
                raise InputError(
                    f"padding='same' needs stride 1 in PyTorch (it rejects strided 'same' convolutions), got stride {s}; use convention 'tf' or an explicit padding."
                )
            total = d * (k - 1)
            before, after = total // 2, total - total // 2
        elif pad == "valid":
            before = after = 0
        else:
            before, after = pad  # type: ignore[misc]
        if op != "conv" and convention == "torch" and max(before, after) > k // 2:
            raise InputError(
                f"pooling padding must be at most half the kernel (PyTorch rule pad <= kernel//2 = {k // 2}), got {max(before, after)} on {label}."
            )
        span = size + before + after
        use_ceil = ceil_mode and op != "conv"
        # ceil_mode lets a pool window overhang the padded input (out >= 1 is all PyTorch asks)
        too_small = span - k_eff <= -s if use_ceil else span < k_eff
        if too_small:
            raise InputError(
                f"kernel {k} (effective {k_eff} with dilation {d}) is larger than the padded input's {span} {rows} ({size} + padding {before}+{after}); use a smaller kernel or more padding."
            )
        q = Fraction(span - k_eff, s) + 1
        if use_ceil:
            out = -(-(span - k_eff) // s) + 1
            rounding = "ceil"
            if (out - 1) * s >= size + before:
                out -= 1
                dropped = True
        else:
            out = (span - k_eff) // s + 1
            rounding = "floor"
        sub = f"({size} + {before} + {after} - {k_eff}) / {s} + 1 = {_fmt(q)} -> {rounding} -> "
        sub += f"{out + 1} -> last window starts in the right padding, dropped -> {out}" if dropped else f"{out}"
        uncovered, tail = _covered(size, out, k, s, d, before)
        if q.denominator != 1 and not use_ceil:
            nxt = out * s
            lost = (
                (
                    f"; the last input {one} is never read"
                    if tail == 1
                    else f"; the last {tail} input {rows} are never read"
                )
                if tail
                else ""
            )
            text = (
                f"{label}: ({size} + {before + after} - {k_eff})/{s} + 1 = {_fmt(q)} is not a whole number of windows: "
                f"window {out + 1} would start at padded index {nxt} and need indices {nxt}..{nxt + k_eff - 1}, "
                f"but the padded input ends at index {span - 1}, so it is dropped (floor): {out}, not {out + 1}{lost}."
            )
            tf_out = -(-size // s)
            if tf_out > out:
                tf_total = max((tf_out - 1) * s + k_eff - size, 0)
                text += f" TensorFlow 'SAME' padding gives ceil({size}/{s}) = {tf_out} instead, with a total pad of {tf_total}."
            if op != "conv":
                text += " PyTorch pools keep a partial last window with ceil_mode=True."
            notes.append(text)
        elif dropped:
            notes.append(
                f"{label}: ceil_mode rounds {_fmt(q)} up to {out + 1}, but window {out + 1} would start at padded index {out * s}, "
                f"inside the right padding (the input ends at index {size + before - 1}), so PyTorch drops it: {out}."
            )
        elif use_ceil and q.denominator != 1:
            notes.append(
                f"{label}: ceil_mode rounds {_fmt(q)} up to {out}: the last window is partial and pools only the cells it covers."
            )
        if uncovered > tail and not notes:
            notes.append(
                f"{label}: {uncovered} input {rows} are never read: stride {s} jumps over them between windows."
            )
    if convention == "tf":
        uncovered, tail = _covered(size, out, k, s, d, before)
    if d > 1:
        sub = f"k_eff = {d}*({k}-1) + 1 = {k_eff}; " + sub
    shape = AxisShape(
        axis, size, k, d, k_eff, s, before, after, str(q), float(q), rounding, out, sub, uncovered, tail, dropped
    )
    return shape, notes


def _formula(op: str, convention: str, pad: Any, ceil_mode: bool) -> str:
    keff = "k_eff = dilation*(kernel-1) + 1"
    if convention == "tf" and pad == "same":
        return f"out = ceil(in / stride); pad_total = max((out-1)*stride + k_eff - in, 0), extra pad at bottom/right; {keff}"
    if convention == "tf" and pad == "valid":
        return f"out = ceil((in - k_eff + 1) / stride); {keff}"
    if ceil_mode and op != "conv":
        return (
            f"out = ceil((in + pad_before + pad_after - k_eff) / stride) + 1, minus 1 if the last window would start "
            f"in the right padding ((out-1)*stride >= in + pad_before); {keff}"
        )
    return f"out = floor((in + pad_before + pad_after - k_eff) / stride) + 1; {keff}"


def resolve_padding(
    input_hw: int | Sequence[int],
    kernel: int | Sequence[int],
    *,
    stride: int | Sequence[int] = 1,
    padding: PaddingSpec = 0,
    dilation: int | Sequence[int] = 1,
    convention: Literal["torch", "tf"] = "torch",
) -> tuple[int, int, int, int]:
    """The padding a conv applies, as ``(top, bottom, left, right)``.

    Example:
        >>> resolve_padding((5, 5), 4, padding="same")
        (1, 2, 1, 2)
    """
    return output_shape(
        input_hw, kernel, stride=stride, padding=padding, dilation=dilation, convention=convention
    ).padding


def output_shape(
    input_hw: int | Sequence[int],
    kernel: int | Sequence[int],
    *,
    op: Literal["conv", "maxpool", "avgpool"] = "conv",
    stride: int | Sequence[int] | None = None,
    padding: PaddingSpec = 0,
    dilation: int | Sequence[int] = 1,
    ceil_mode: bool = False,
    convention: Literal["torch", "tf"] = "torch",
    in_channels: int | None = None,
    out_channels: int | None = None,
) -> ShapeResult:
    """Output (H, W, C) of a conv or pool layer, with the derivation (see the module docstring).

    Args:
        input_hw: input height and width (an int means square).
        kernel: kernel size, int or (kh, kw).
        op: ``'conv'``, ``'maxpool'`` or ``'avgpool'``.
        stride: int or pair; default 1 for conv and the kernel size for pools (as in PyTorch).
        padding: int, (ph, pw), (top, bottom, left, right), ``'valid'`` or ``'same'``.
        dilation: int or pair (spacing between kernel taps).
        ceil_mode: pools only, PyTorch's ceil rule.
        convention: ``'torch'`` or ``'tf'``.
        in_channels: input channels C (optional; pools keep it).
        out_channels: filters F of a conv (optional).

    Returns:
        :class:`ShapeResult`.

    Raises:
        InputError: bad sizes, a kernel larger than the padded input, strided 'same' under torch,
        pool padding above kernel//2, or ceil_mode with the tf convention.

    Example:
        >>> output_shape(6, 3, dilation=2).output[:2]          # 3x3 at dilation 2 acts as 5x5
        (2, 2)
        >>> output_shape(4, 3, padding=1).output[:2]           # zero padding keeps 4x4
        (4, 4)
        >>> output_shape((4, 4), 2, op="maxpool", in_channels=3).output
        (2, 2, 3)
    """
    if op not in OPS:
        raise InputError(f"op must be one of {', '.join(OPS)}, got '{op}'.")
    if convention not in CONVENTIONS:
        raise InputError(f"convention must be 'torch' or 'tf', got '{convention}'.")
    h, w = pair(input_hw, "input size")
    kh, kw = pair(kernel, "kernel")
    sh, sw = pair((kh, kw) if stride is None and op != "conv" else (1 if stride is None else stride), "stride")
    dh, dw = pair(dilation, "dilation")
    if op == "avgpool" and (dh, dw) != (1, 1):
        raise InputError(f"average pooling has no dilation in PyTorch; got dilation {dilation!r}, use 1.")
    if ceil_mode and convention == "tf":
        raise InputError("ceil_mode is a PyTorch pooling option; TensorFlow uses 'SAME'/'VALID' padding instead.")
    for name, v in (("in_channels", in_channels), ("out_channels", out_channels)):
        if v is not None and (not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1):
            raise InputError(f"{name} must be a positive int, got {v!r}.")
    pad = _parse_padding(padding)
    if op != "conv" and convention == "torch":
        if pad == "same":
            raise InputError("PyTorch pooling has no 'same' padding; give an int padding or use convention 'tf'.")
        if isinstance(pad, tuple) and (pad[0] != pad[1] or pad[2] != pad[3]):
            raise InputError(f"PyTorch pooling pads symmetrically; got (top, bottom, left, right) = {pad}.")
    ph = pad if isinstance(pad, str) else (pad[0], pad[1])
    pw = pad if isinstance(pad, str) else (pad[2], pad[3])
    square = (h, kh, sh, dh, ph) == (w, kw, sw, dw, pw)
    ax_h, notes_h = _axis("H", h, kh, sh, dh, ph, op, convention, ceil_mode, "H and W" if square else None)
    ax_w, notes_w = _axis("W", w, kw, sw, dw, pw, op, convention, ceil_mode)
    notes = notes_h if square else notes_h + notes_w
    c_out = out_channels if op == "conv" else in_channels
    return ShapeResult(
        op=op,
        convention=convention,
        input=(h, w, in_channels),
        output=(ax_h.out, ax_w.out, c_out),
        kernel=(kh, kw),
        stride=(sh, sw),
        dilation=(dh, dw),
        padding=(ax_h.pad_before, ax_h.pad_after, ax_w.pad_before, ax_w.pad_after),
        ceil_mode=bool(ceil_mode) and op != "conv",
        formula=_formula(op, convention, pad, ceil_mode),
        axes=(ax_h, ax_w),
        notes=tuple(notes),
    )
