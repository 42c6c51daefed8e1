"""What pooling buys: some tolerance to small translations, and far fewer values to carry.

Translation tolerance. Digits (upscaled to 16x16, placed on a 24x24 black canvas) go through one
fixed, randomly initialised 3x3 conv + ReLU (``channels`` filters, seeded). Each image is shifted
right by ``s = 0 .. max_shift`` pixels and we measure, averaged over the images,

    change(s) = ||f(shift_s(x)) - f(x)||_2 / ||f(x)||_2

for four feature maps ``f``: the conv output itself (no pooling), the conv output subsampled with
stride 2 (same size as pooling, but no max: isolates what the *max* contributes), 2x2 max pooling
with stride 2, and 4x4 max pooling with stride 4. A shift smaller than the pooling window often
keeps the window's maximum, so the pooled features change less.

Size reduction. For each pooling configuration the output shape (via
:func:`convlens.arith.output_shape`), the number of values, the fraction removed (2x2 stride 2:
``1 - 1/4 = 75 %``) and the coefficients a dense layer to 10 classes would need on top.

Example:
    >>> r = pooling(quick=True)
    >>> r.reduction[0].removed_fraction
    0.75
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from convlens.arith import output_shape
from convlens.errors import InputError
from convlens.experiments.data import cpu_threads, load_digits_split, seeded

__all__ = ["PoolingReduction", "PoolingResult", "pooling", "FEATURES"]

#: feature maps compared for translation tolerance
FEATURES = ("no pooling", "subsample stride 2", "max pool 2x2/s2", "max pool 4x4/s4")


@dataclass(frozen=True)
class PoolingReduction:
    """One row of the size table: a pooling layer applied to ``input`` (H, W, C)."""

    pooling: str
    input: tuple[int, int, int]
    output: tuple[int, int, int]
    values_in: int
    values_out: int
    removed_fraction: float
    dense_params_in: int
    dense_params_out: int


@dataclass
class PoolingResult:
    """``shifts`` (pixels) and, per feature map, the mean relative feature change at each shift."""

    shifts: list[int]
    feature_change: dict[str, list[float]]
    reduction: list[PoolingReduction]
    measures: str
    findings: list[str]
    images: int
    channels: int
    seed: int
    quick: bool
    seconds: float
    #: max pooling changes the features less than no pooling for a 1-pixel shift (the lesson)
    lesson_shown: bool = True
    caveat: str | None = None


def _shift_right(x: torch.Tensor, s: int) -> torch.Tensor:
    """Translate (N, C, H, W) right by ``s`` pixels, filling with zeros (the canvas is black)."""
    if s == 0:
        return x
    return F.pad(x, (s, 0, 0, 0))[..., : x.shape[-1]]


def _features(conv_out: torch.Tensor) -> dict[str, torch.Tensor]:
    return {
        "no pooling": conv_out,
        "subsample stride 2": conv_out[:, :, ::2, ::2],
        "max pool 2x2/s2": F.max_pool2d(conv_out, 2, 2),
        "max pool 4x4/s4": F.max_pool2d(conv_out, 4, 4),
    }


def _reduction_table(shapes: Sequence[tuple[int, int, int]], num_classes: int = 10) -> list[PoolingReduction]:
    rows = []
    for hwc in shapes:
        for k, s in ((2, 2), (3, 2), (4, 4)):
            res = output_shape(hwc[:2], k, op="maxpool", stride=s, in_channels=hwc[2])
            out = (res.output[0], res.output[1], hwc[2])
            vin, vout = hwc[0] * hwc[1] * hwc[2], out[0] * out[1] * out[2]
            rows.append(
                PoolingReduction(
                    f"max pool {k}x{k} stride {s}",
                    hwc,
                    out,
                    vin,
                    vout,
                    round(1 - vout / vin, 6),
                    vin * num_classes + num_classes,
                    vout * num_classes + num_classes,
                )
            )
    return rows


def pooling(
    *,
    quick: bool = False,
    seed: int = 0,
    max_shift: int = 4,
    channels: int = 16,
    images: int | None = None,
    device: str | torch.device = "cpu",
    num_threads: int | None = 1,
) -> PoolingResult:
    """Run the pooling experiment (see the module docstring).

    Args:
        quick: 64 images instead of 512.
        seed: seeds the data split and the conv filters.
        max_shift: largest translation in pixels (0 .. 8).
        channels: filters of the random 3x3 conv.
        num_threads: CPU threads while it runs (restored afterwards); None leaves torch's setting.

    Example:
        >>> r = pooling(quick=True, max_shift=2)
        >>> r.shifts
        [0, 1, 2]
    """
    with cpu_threads(num_threads):  # tiny nets: one thread is several times faster than two
        if isinstance(max_shift, bool) or not isinstance(max_shift, int) or not 0 <= max_shift <= 8:
            raise InputError(
                f"max_shift must be an integer in 0..8 (the canvas has 4 px of margin each side, digits are 16 px), got {max_shift!r}."
            )
        start = time.perf_counter()
        n = images or (64 if quick else 512)
        data = load_digits_split(16, seed=seed, device=device)
        x = F.pad(data.x_train[:n], (4, 4, 4, 4))  # (n, 1, 24, 24): room to shift
        with seeded(seed):
            conv = nn.Conv2d(1, channels, 3, padding=1).to(device)
        change: dict[str, list[float]] = {k: [] for k in FEATURES}
        with torch.no_grad():
            base = _features(torch.relu(conv(x)))
            for s in range(max_shift + 1):
                moved = _features(torch.relu(conv(_shift_right(x, s))))
                for k in FEATURES:
                    diff = (moved[k] - base[k]).flatten(1).norm(dim=1)
                    ref = base[k].flatten(1).norm(dim=1).clamp_min(1e-12)
                    change[k].append(float((diff / ref).mean()))
        hw = (x.shape[2], x.shape[3], channels)
        table = _reduction_table([hw, (224, 224, 64)])
        findings = [
            f"shift 1 px: relative feature change {change['no pooling'][1]:.2f} without pooling, "
            f"{change['subsample stride 2'][1]:.2f} with stride-2 subsampling, {change['max pool 2x2/s2'][1]:.2f} with 2x2 max pooling, "
            f"{change['max pool 4x4/s4'][1]:.2f} with 4x4 max pooling."
            if max_shift >= 1
            else "no shifts measured (max_shift=0).",
            f"2x2 stride-2 max pooling keeps {table[0].values_out} of {table[0].values_in} values "
            f"({100 * table[0].removed_fraction:.0f}% fewer); a dense layer on top needs {table[0].dense_params_out} instead of "
            f"{table[0].dense_params_in} coefficients.",
        ]
        shown = max_shift >= 1 and change["max pool 2x2/s2"][1] < change["no pooling"][1]
        caveat = (
            None
            if shown
            else "this run does not show pooling's tolerance to small shifts (max pooling changed the features as "
            "much as no pooling, or no shift was measured); use more images or max_shift >= 1."
        )
        if caveat:
            findings.append("CAVEAT: " + caveat)
        return PoolingResult(
            shifts=list(range(max_shift + 1)),
            feature_change=change,
            reduction=table,
            measures=(
                "mean over images of ||f(shifted x) - f(x)|| / ||f(x)|| for a fixed random 3x3 conv + ReLU (seeded), "
                "digits on a 24x24 canvas shifted right by 0..max_shift px."
            ),
            findings=findings,
            images=n,
            channels=channels,
            seed=seed,
            quick=quick,
            seconds=round(time.perf_counter() - start, 2),
            lesson_shown=shown,
            caveat=caveat,
        )
