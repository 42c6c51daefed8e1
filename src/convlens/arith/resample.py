"""Output shapes of the layers that make maps larger: transposed convolution and upsampling.

**Transposed convolution** (``nn.ConvTranspose2d``; "deconvolution"; Dumoulin & Visin 2016, "A guide
to convolution arithmetic for deep learning", section 4) is the gradient of a convolution with the
same geometry. Each input pixel stamps the kernel, scaled by its value, into the output at
``stride`` spacing. PyTorch:

    ``out = (in - 1)*stride - pad_before - pad_after + dilation*(k - 1) + output_padding + 1``

``padding`` *removes* rows from the border of the full result (it undoes the forward conv's
padding), and ``output_padding`` (``< max(stride, dilation)``) adds rows at the bottom/right. A
strided forward conv maps several input sizes onto one output size (7 and 8 both give 4 with k=3,
s=2, p=1), so the transpose needs ``output_padding`` to say which one it inverts.

TensorFlow/Keras (``Conv2DTranspose``) has no numeric padding: ``'same'`` gives ``out = in*stride``
and ``'valid'`` ``out = in*stride + max(k_eff - stride, 0)``; with ``output_padding`` given it uses
``(in - 1)*stride + k_eff - 2*pad + output_padding`` with ``pad = k_eff // 2`` ('same') or 0.

**Upsampling** (``nn.Upsample``, ``F.interpolate``): ``out = floor(in * scale_factor)`` per axis (or
the given ``size``). It has no parameters and no multiply-accumulates in the MAC convention used
here; the mode (nearest, bilinear...) changes the values, not the shape.

Example (the decoder step of a U-Net: 4x4x64 -> 8x8x32 with k=2, s=2):
    >>> transposed_shape((4, 4), 2, stride=2, in_channels=64, out_channels=32).output
    (8, 8, 32)
    >>> upsample_shape((7, 7), 2.0, in_channels=3).output
    (14, 14, 3)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from convlens.arith._check import pair
from convlens.errors import InputError

__all__ = ["ResampleAxis", "ResampleShape", "transposed_shape", "upsample_shape"]


@dataclass(frozen=True)
class ResampleAxis:
    """The derivation along one axis: sizes and the formula with its numbers substituted."""

    axis: str
    size: int
    out: int
    substituted: str


@dataclass(frozen=True)
class ResampleShape:
    """Output (H, W, C) of a transposed convolution or an upsampling layer, with the derivation.

    ``params``/``macs`` are the layer's cost (``None`` when the channel counts are unknown); MACs of a
    transposed convolution count every input pixel times every kernel tap of every filter:
    ``H_in*W_in*C_in*(F/groups)*kh*kw``.
    """

    op: str
    convention: str
    input: tuple[int, int, int | None]
    output: tuple[int, int, int | None]
    kernel: tuple[int, int] | None
    stride: tuple[int, int] | None
    dilation: tuple[int, int] | None
    padding: tuple[int, int, int, int] | str | None
    output_padding: tuple[int, int] | None
    scale_factor: tuple[float, float] | None
    formula: str
    axes: tuple[ResampleAxis, ResampleAxis]
    notes: tuple[str, ...]
    params: int | None
    macs: int | None


def _keras_transposed(size: int, k_eff: int, s: int, padding: str, op: int | None) -> tuple[int, str]:
    """Keras' ``deconv_output_length`` and its substituted formula."""
    if op is None:
        if padding == "same":
            return size * s, f"{size}*{s} = {size * s}"
        out = size * s + max(k_eff - s, 0)
        return out, f"{size}*{s} + max({k_eff} - {s}, 0) = {out}"
    pad = k_eff // 2 if padding == "same" else 0
    out = (size - 1) * s + k_eff - 2 * pad + op
    return out, f"({size} - 1)*{s} + {k_eff} - 2*{pad} + {op} = {out}"


def transposed_shape(
    input_hw: int | Sequence[int],
    kernel: int | Sequence[int],
    *,
    stride: int | Sequence[int] = 1,
    padding: int | Sequence[int] | str = 0,
    output_padding: int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1,
    convention: str = "torch",
    in_channels: int | None = None,
    out_channels: int | None = None,
    groups: int = 1,
    bias: bool = True,
) -> ResampleShape:
    """Output shape of ``nn.ConvTranspose2d`` (``convention='torch'``) or Keras ``Conv2DTranspose`` ('tf').

    Args:
        padding: torch: int or (ph, pw), removed from both sides; tf: ``'same'`` or ``'valid'``.
        output_padding: extra rows/cols at the bottom/right; torch requires it ``< max(stride, dilation)``.

    Raises:
        InputError: sizes < 1, an output_padding torch refuses, a non-positive output, or a padding
        of the wrong kind for the convention.

    Example (a 3x3 stride-2 conv with padding 1 maps 7 and 8 to 4; output_padding picks 8 back):
        >>> transposed_shape(4, 3, stride=2, padding=1).output[:2], transposed_shape(4, 3, stride=2, padding=1, output_padding=1).output[:2]
        ((7, 7), (8, 8))
    """
    if convention not in ("torch", "tf"):
        raise InputError(f"convention must be 'torch' or 'tf', got '{convention}'.")
    h, w = pair(input_hw, "input size")
    kh, kw = pair(kernel, "kernel")
    sh, sw = pair(stride, "stride")
    dh, dw = pair(dilation, "dilation")
    oph, opw = pair(output_padding, "output_padding", minimum=0)
    notes: list[str] = []
    axes = []
    if convention == "torch":
        if isinstance(padding, str):
            raise InputError(
                f"PyTorch's ConvTranspose2d takes a numeric padding, not '{padding}' (use convention 'tf')."
            )
        ph, pw = pair(padding, "padding", minimum=0)
        for name, o, s, d in (("H", oph, sh, dh), ("W", opw, sw, dw)):
            if o >= max(s, d):
                raise InputError(
                    f"output_padding {o} on {name} must be smaller than stride or dilation (max({s}, {d}) = {max(s, d)}), "
                    "as PyTorch requires."
                )
        for name, size, k, s, d, p, o in (("H", h, kh, sh, dh, ph, oph), ("W", w, kw, sw, dw, pw, opw)):
            out = (size - 1) * s - 2 * p + d * (k - 1) + o + 1
            axes.append(ResampleAxis(name, size, out, f"({size} - 1)*{s} - 2*{p} + {d}*({k} - 1) + {o} + 1 = {out}"))
        pad_out: Any = (ph, ph, pw, pw)
        formula = "out = (in - 1)*stride - 2*padding + dilation*(kernel - 1) + output_padding + 1"
        inverse = [
            (a.out + 2 * p - d * (k - 1) - 1) // s + 1
            for a, p, d, k, s in zip(axes, (ph, pw), (dh, dw), (kh, kw), (sh, sw))
        ]
        if (sh, sw) != (1, 1):
            notes.append(
                f"a Conv2d with the same kernel/stride/padding maps {axes[0].out}x{axes[1].out} back to "
                f"{inverse[0]}x{inverse[1]}; it maps several sizes to one, and output_padding (bottom/right) "
                "chooses which the transpose returns."
            )
        notes.append(
            "TensorFlow/Keras Conv2DTranspose has no numeric padding: 'same' gives in*stride, "
            "'valid' gives in*stride + max(k_eff - stride, 0)."
        )
    else:
        pad = str(padding).lower()
        if pad not in ("same", "valid"):
            raise InputError(f"Keras' Conv2DTranspose takes padding 'same' or 'valid', got '{padding}'.")
        given = output_padding not in (0, (0, 0), [0, 0])
        for name, size, k, s, d, o in (("H", h, kh, sh, dh, oph), ("W", w, kw, sw, dw, opw)):
            if given and o >= s:
                raise InputError(f"output_padding {o} on {name} must be smaller than the stride {s} (Keras).")
            out, sub = _keras_transposed(size, d * (k - 1) + 1, s, pad, o if given else None)
            axes.append(ResampleAxis(name, size, out, sub))
        pad_out = pad
        formula = (
            "out = (in - 1)*stride + k_eff - 2*pad + output_padding, pad = k_eff//2 ('same') or 0"
            if given
            else ("out = in*stride" if pad == "same" else "out = in*stride + max(k_eff - stride, 0)")
        ) + "; k_eff = dilation*(kernel-1) + 1"
        notes.append(
            "PyTorch's ConvTranspose2d: out = (in - 1)*stride - 2*padding + dilation*(kernel - 1) + output_padding + 1."
        )
    if min(a.out for a in axes) < 1:
        raise InputError(
            f"the output would be {axes[0].out}x{axes[1].out}: padding removes more than the layer produces."
        )
    params = macs = None
    if in_channels is not None and out_channels is not None:
        if groups < 1 or in_channels % groups or out_channels % groups:
            raise InputError(f"groups {groups} must divide in_channels {in_channels} and out_channels {out_channels}.")
        params = in_channels * (out_channels // groups) * kh * kw + (out_channels if bias else 0)
        macs = h * w * in_channels * (out_channels // groups) * kh * kw
    return ResampleShape(
        "convtranspose",
        convention,
        (h, w, in_channels),
        (axes[0].out, axes[1].out, out_channels),
        (kh, kw),
        (sh, sw),
        (dh, dw),
        pad_out,
        (oph, opw),
        None,
        formula,
        (axes[0], axes[1]),
        tuple(notes),
        params,
        macs,
    )


def upsample_shape(
    input_hw: int | Sequence[int],
    scale_factor: float | Sequence[float] | None = None,
    *,
    size: int | Sequence[int] | None = None,
    in_channels: int | None = None,
) -> ResampleShape:
    """Output shape of ``nn.Upsample(scale_factor=...)`` or ``nn.Upsample(size=...)``: ``floor(in * scale)``.

    Example:
        >>> upsample_shape((5, 6), (1.5, 2.0)).output[:2], upsample_shape(5, size=(9, 4)).output[:2]
        ((7, 12), (9, 4))
    """
    h, w = pair(input_hw, "input size")
    if (scale_factor is None) == (size is None):
        raise InputError("give exactly one of scale_factor and size for upsampling.")
    axes = []
    if size is not None:
        oh, ow = pair(size, "size")
        axes = [ResampleAxis("H", h, oh, f"size {oh}"), ResampleAxis("W", w, ow, f"size {ow}")]
        scales = None
        formula = "out = size"
    else:
        sc = (scale_factor, scale_factor) if isinstance(scale_factor, (int, float)) else tuple(scale_factor)  # type: ignore[arg-type]
        if len(sc) != 2 or not all(isinstance(v, (int, float)) and math.isfinite(v) and v > 0 for v in sc):
            raise InputError(f"scale_factor must be a positive number or a pair, got {scale_factor!r}.")
        scales = (float(sc[0]), float(sc[1]))
        for name, n, s in (("H", h, scales[0]), ("W", w, scales[1])):
            out = math.floor(n * s)
            if out < 1:
                raise InputError(f"upsampling {name}={n} by {s:g} gives {out} rows/cols; the scale is too small.")
            axes.append(ResampleAxis(name, n, out, f"floor({n} * {s:g}) = {out}"))
        formula = "out = floor(in * scale_factor)"
    return ResampleShape(
        "upsample",
        "torch",
        (h, w, in_channels),
        (axes[0].out, axes[1].out, in_channels),
        None,
        None,
        None,
        None,
        None,
        scales,
        formula,
        (axes[0], axes[1]),
        (
            "the mode (nearest, bilinear, bicubic) changes the values, not the shape; no parameters, no MACs; "
            "Keras UpSampling2D takes integer factors only (out = in * size).",
        ),
        0,
        0,
    )
