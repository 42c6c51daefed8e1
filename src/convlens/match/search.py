"""Finding a template: the peak of a response map, at one scale or over an image pyramid.

A fixed-size window only finds objects of its own size. Multi-scale search keeps the window and
changes the image instead: on Gaussian pyramid level ``l`` (each level half the size of the one
before) the template covers an object ``2^l`` times larger in the original; reducing the template
itself ``k`` times finds objects ``2^k`` times smaller. A hit at top-left ``(y, x)`` on image level
``l`` maps back to ``(y * 2^l, x * 2^l)`` in the input (pyrDown keeps sample ``2i`` as sample ``i``),
and its ``scale`` (matched object size / template size) is ``2^l`` (or ``2^-k``).

Scores are compared across scales, which is meaningful for ZNCC (always in [-1, 1]); raw and
zero-mean scores depend on the window size and brightness, so use them across scales with care.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> img = rng.random((40, 50))
    >>> m = find_template(img, img[10:20, 5:17])
    >>> m.peak, round(m.score, 6), m.scale
    ((10, 5), 1.0, 1.0)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from convlens.errors import InputError
from convlens.match.correlate import correlate
from convlens.pyramid.pyramids import _blur, _to_nchw

__all__ = [
    "MatchResult",
    "ScaleCandidate",
    "MultiScaleMatch",
    "find_template",
    "find_template_multiscale",
    "image_to_chw",
    "Detection",
    "find_matches",
]


@dataclass(frozen=True)
class MatchResult:
    """Best position of a template at one scale.

    Attributes:
        peak: top-left ``(y, x)`` of the best window, in the input image's pixel coordinates.
        score: the response there.
        scale: matched object size / template size (1.0 for a single-scale search).
        method: "raw", "zero_mean" or "zncc".
        size: ``(height, width)`` of the matched region in the input image.
        response: the response map (H-h+1, W-w+1) at the scale where the peak was found.
    """

    peak: tuple[int, int]
    score: float
    scale: float
    method: str
    size: tuple[int, int]
    response: np.ndarray = field(repr=False)


@dataclass(frozen=True)
class ScaleCandidate:
    """The best hit at one scale of a multi-scale search (coordinates already in the input image)."""

    scale: float
    image_level: int
    template_level: int
    peak: tuple[int, int]
    score: float
    size: tuple[int, int]


@dataclass(frozen=True)
class MultiScaleMatch:
    """Result of :func:`find_template_multiscale`: the overall best hit and one candidate per scale."""

    best: MatchResult
    candidates: list[ScaleCandidate]

    @property
    def peak(self) -> tuple[int, int]:
        return self.best.peak

    @property
    def score(self) -> float:
        return self.best.score

    @property
    def scale(self) -> float:
        return self.best.scale


def image_to_chw(image: Any) -> np.ndarray:
    """An (H, W, 3) uint8 image (what ``convlens.io.load_image`` returns) -> (3, H, W) float64 in [0, 1].

    Example:
        >>> image_to_chw(np.zeros((4, 5, 3), np.uint8)).shape
        (3, 4, 5)
    """
    a = np.asarray(image)
    if a.ndim != 3 or a.shape[2] not in (1, 3):
        raise InputError(f"expected an (H, W, 3) or (H, W, 1) image, got shape {a.shape}.")
    scale = 255.0 if a.dtype == np.uint8 else 1.0
    return np.ascontiguousarray(a.transpose(2, 0, 1), dtype=np.float64) / scale


def _single_image(x: Any, name: str) -> torch.Tensor:
    t, how = _to_nchw(x, name)
    if how["ndim"] == 4 and t.shape[0] != 1:
        raise InputError(f"{name} must be one image (H, W) or (C, H, W), got a batch of shape {tuple(t.shape)}.")
    return t.to(torch.float64) if not t.is_floating_point() else t


def _check_contrast(tpl: torch.Tensor, method: str) -> None:
    """A constant template has no pattern: its zero-mean version is 0, so zero-mean and ZNCC
    responses are 0 everywhere and the 'best' position would be an arbitrary (0, 0)."""
    if method in ("zero_mean", "zncc", "ncc") and tpl.numel() and float(tpl.max() - tpl.min()) == 0.0:
        raise InputError(
            f"the template is constant (every value {float(tpl.reshape(-1)[0]):.4g}), so its {method} response is 0 "
            "everywhere and no position matches; use a template with some texture (or method 'raw')."
        )


def _image_and_template(image: Any, template: Any, method: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Both as (1, C, H, W) on the image's device; the template has contrast and fits inside the image."""
    img = _single_image(image, "image")
    tpl = _single_image(template, "template").to(device=img.device)
    _check_contrast(tpl, method)
    th, tw = int(tpl.shape[2]), int(tpl.shape[3])
    if th > img.shape[2] or tw > img.shape[3]:
        raise InputError(
            f"template {th}x{tw} is larger than the image {img.shape[2]}x{img.shape[3]}; crop a smaller template."
        )
    return img, tpl


def _argmax2d(resp: torch.Tensor) -> tuple[int, int, float]:
    flat = int(torch.argmax(resp).item())  # first maximum in row-major order, like np.argmax
    y, x = divmod(flat, resp.shape[-1])
    return y, x, float(resp.reshape(-1)[flat].item())


def find_template(image: Any, template: Any, method: str = "zncc") -> MatchResult:
    """Single-scale search: the argmax of :func:`~convlens.match.correlate` (top-left anchored).

    Args:
        image: (H, W) or (C, H, W) array/tensor.
        template: (h, w) or (C, h, w) with the same C.
        method: "raw", "zero_mean" or "zncc".

    Example:
        >>> img = np.zeros((8, 8)); img[5, 6] = 1.0
        >>> find_template(img, np.array([[1.0]]), "raw").peak
        (5, 6)
    """
    img = _single_image(image, "image")
    tpl = _single_image(template, "template")
    _check_contrast(tpl, method)
    resp = correlate(img, tpl[0], method).squeeze(0)  # (H', W')
    y, x, s = _argmax2d(resp)
    name = "zncc" if method == "ncc" else method
    return MatchResult((y, x), s, 1.0, name, (int(tpl.shape[2]), int(tpl.shape[3])), resp.cpu().numpy())


def find_template_multiscale(
    image: Any,
    template: Any,
    method: str = "zncc",
    *,
    levels: int = 4,
    template_levels: int = 2,
    min_template_size: int = 8,
) -> MultiScaleMatch:
    """Search ``template`` over a Gaussian pyramid of ``image`` (larger objects) and of the template
    (smaller objects); return the best hit mapped back to input coordinates.

    Scales searched: ``2^l`` for image levels ``l = 0 .. levels-1`` (the template must fit) and
    ``2^-k`` for template levels ``k = 1 .. template_levels-1`` (the reduced template must stay at
    least ``min_template_size`` pixels on its short side).

    Peak mapping: top-left ``(y, x)`` on image level ``l`` -> ``(y 2^l, x 2^l)``; on the input
    image with a reduced template it is already in input coordinates.

    Example:
        >>> rng = np.random.default_rng(1)
        >>> img = rng.random((64, 64))
        >>> m = find_template_multiscale(img, img[8:24, 16:40])
        >>> m.peak, m.scale
        ((8, 16), 1.0)
    """
    if isinstance(levels, bool) or not isinstance(levels, (int, np.integer)) or levels < 1:
        raise InputError(f"levels must be an integer >= 1, got {levels!r}.")
    if isinstance(template_levels, bool) or not isinstance(template_levels, (int, np.integer)) or template_levels < 1:
        raise InputError(f"template_levels must be an integer >= 1, got {template_levels!r}.")
    img, tpl = _image_and_template(image, template, method)
    th, tw = int(tpl.shape[2]), int(tpl.shape[3])
    name = "zncc" if method == "ncc" else method
    levels, template_levels = int(levels), int(template_levels)

    candidates: list[ScaleCandidate] = []
    responses: list[torch.Tensor] = []

    def _run(i_img: torch.Tensor, i_tpl: torch.Tensor, img_level: int, tpl_level: int) -> None:
        resp = correlate(i_img, i_tpl[0], method).squeeze(0)
        y, x, s = _argmax2d(resp)
        f = 2**img_level
        scale = 2.0 ** (img_level - tpl_level)
        size = (round(th * scale), round(tw * scale))
        candidates.append(ScaleCandidate(scale, img_level, tpl_level, (y * f, x * f), s, size))
        responses.append(resp)

    # objects larger than the template: shrink the image, keep the window
    level_img = img
    for lvl in range(levels):
        if lvl > 0:
            level_img = _blur(level_img)[:, :, ::2, ::2]
        if level_img.shape[2] < th or level_img.shape[3] < tw:
            break
        _run(level_img, tpl, lvl, 0)
    # objects smaller than the template: shrink the template, keep the image
    level_tpl = tpl
    for k in range(1, template_levels):
        level_tpl = _blur(level_tpl)[:, :, ::2, ::2]
        if min(level_tpl.shape[2], level_tpl.shape[3]) < min_template_size:
            break
        _run(img, level_tpl, 0, k)

    best_i = max(range(len(candidates)), key=lambda i: candidates[i].score)  # first best on ties (level 0 first)
    c = candidates[best_i]
    best = MatchResult(c.peak, c.score, c.scale, name, c.size, responses[best_i].cpu().numpy())
    return MultiScaleMatch(best, candidates)


@dataclass(frozen=True)
class Detection:
    """One detection of :func:`find_matches`: top-left ``peak`` (y, x) and ``size`` (h, w) in input
    pixels, the response ``score`` and the ``scale`` (matched object size / template size)."""

    peak: tuple[int, int]
    score: float
    scale: float
    size: tuple[int, int]


def _iou(a: Detection, b: Detection) -> float:
    """Intersection over union of two boxes (top-left + size)."""
    (ay, ax), (ah, aw) = a.peak, a.size
    (by, bx), (bh, bw) = b.peak, b.size
    ih = max(0, min(ay + ah, by + bh) - max(ay, by))
    iw = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    inter = ih * iw
    return inter / float(ah * aw + bh * bw - inter) if inter else 0.0


def find_matches(
    image: Any,
    template: Any,
    method: str = "zncc",
    *,
    threshold: float | None = None,
    max_matches: int = 10,
    nms_iou: float = 0.3,
    pyramid: bool = False,
    levels: int = 4,
    template_levels: int = 2,
    min_template_size: int = 8,
) -> list[Detection]:
    """Every place the template matches: local maxima of the response (at each scale of the pyramid
    search with ``pyramid=True``), at least ``threshold``, best first, with greedy non-maximum
    suppression (a detection overlapping a better one by IoU > ``nms_iou`` is dropped), at most
    ``max_matches``.

    The first detection is :func:`find_template`'s (or :func:`find_template_multiscale`'s) best
    match whenever its score reaches ``threshold``.

    Raises:
        InputError: ``max_matches < 1``, ``nms_iou`` outside [0, 1], a non-finite threshold, or
        what :func:`find_template` refuses.

    Example (two copies of a pattern on a flat image):
        >>> img = np.zeros((20, 30)); pat = np.arange(16.0).reshape(4, 4)
        >>> img[2:6, 3:7] = pat; img[12:16, 20:24] = pat
        >>> [(d.peak, round(d.score, 6)) for d in find_matches(img, pat, threshold=0.99)]
        [((2, 3), 1.0), ((12, 20), 1.0)]
    """
    if isinstance(max_matches, bool) or not isinstance(max_matches, (int, np.integer)) or max_matches < 1:
        raise InputError(f"max_matches must be an integer >= 1, got {max_matches!r}.")
    if not 0.0 <= float(nms_iou) <= 1.0:
        raise InputError(f"nms_iou must lie in [0, 1], got {nms_iou!r}.")
    if threshold is not None and not np.isfinite(float(threshold)):
        raise InputError(f"threshold must be a finite number, got {threshold!r}.")
    img, tpl = _image_and_template(image, template, method)
    th, tw = int(tpl.shape[2]), int(tpl.shape[3])
    runs: list[tuple[torch.Tensor, torch.Tensor, int, int]] = [(img, tpl, 0, 0)]
    if pyramid:  # the same scales as find_template_multiscale, in the same order
        level_img = img
        for lvl in range(1, int(levels)):
            level_img = _blur(level_img)[:, :, ::2, ::2]
            if level_img.shape[2] < th or level_img.shape[3] < tw:
                break
            runs.append((level_img, tpl, lvl, 0))
        level_tpl = tpl
        for k in range(1, int(template_levels)):
            level_tpl = _blur(level_tpl)[:, :, ::2, ::2]
            if min(level_tpl.shape[2], level_tpl.shape[3]) < min_template_size:
                break
            runs.append((img, level_tpl, 0, k))
    found: list[Detection] = []
    for i_img, i_tpl, lvl, k in runs:
        resp = correlate(i_img, i_tpl[0], method).squeeze(0)  # (H', W')
        # local maxima: equal to the max of their 3x3 neighbourhood (plateaus give several; NMS merges them)
        peak_map = torch.nn.functional.max_pool2d(resp[None, None], 3, stride=1, padding=1)[0, 0]
        mask = resp >= peak_map
        if threshold is not None:
            mask &= resp >= float(threshold)
        ys, xs = torch.nonzero(mask, as_tuple=True)
        scores = resp[ys, xs].double().cpu().numpy()
        order = np.argsort(-scores, kind="stable")[: max(64, 32 * int(max_matches))]  # row-major on ties
        f, scale = 2**lvl, 2.0 ** (lvl - k)
        size = (round(th * scale), round(tw * scale))
        ys_np, xs_np = ys.cpu().numpy(), xs.cpu().numpy()
        found += [Detection((int(ys_np[j]) * f, int(xs_np[j]) * f), float(scores[j]), scale, size) for j in order]
    found.sort(key=lambda d: -d.score)  # stable: level order, then row-major, as the single best match
    kept: list[Detection] = []
    for d in found:
        if all(_iou(d, other) <= nms_iou for other in kept):
            kept.append(d)
            if len(kept) == max_matches:
                break
    return kept
