"""Template matching of two images, as one core call: the chosen method beside raw correlation and ZNCC
(so the brightness bias of raw correlation shows), several detections after non-maximum suppression,
and an explanation of any disagreement. The CLI (``convlens match``), the tour and the server render
the :class:`TemplateMatchReport` this returns; none of them holds a pipeline of its own.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> img = (rng.random((40, 50, 3)) * 255).astype(np.uint8)
    >>> rep = match_template(img, img[10:22, 5:20])
    >>> rep.peak, rep.method, round(rep.score, 3), rep.comparison["raw"].size
    ([10, 5], 'zncc', 1.0, [12, 15])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from convlens.errors import InputError
from convlens.match.correlate import METHODS
from convlens.match.search import (
    Detection,
    MatchResult,
    ScaleCandidate,
    find_matches,
    find_template,
    find_template_multiscale,
    image_to_chw,
)

__all__ = ["MethodMatch", "TemplateMatchReport", "match_template"]


@dataclass
class MethodMatch:
    """The best window of one method: top-left ``peak`` (y, x), ``score``, ``scale``, ``size`` (h, w),
    the mean brightness of the window there, and (pyramid search) the best hit per scale."""

    peak: list[int]
    score: float
    scale: float
    size: list[int]
    window_mean: float
    candidates: list[ScaleCandidate] | None = None


@dataclass
class TemplateMatchReport:
    """What ``convlens match --json`` prints (plus the ``files`` it wrote): the chosen method's best match
    (``peak``, ``score``, ``scale``, ``size``), every compared method, the detections and the explanation.
    ``best`` holds each method's :class:`~convlens.match.MatchResult` with its response map, for figures."""

    peak: list[int]
    score: float
    scale: float
    method: str
    size: list[int]
    pyramid: bool
    grayscale: bool
    comparison: dict[str, MethodMatch]
    explanation: str
    matches: list[Detection]
    threshold: float | None
    max_matches: int
    best: dict[str, MatchResult] = field(default_factory=dict, repr=False, metadata={"json": False})


def _is_gray(chw: np.ndarray) -> bool:
    """True when the 3 channels are equal (a grayscale file read as RGB)."""
    return bool((chw[0] == chw[1]).all() and (chw[1] == chw[2]).all())


def _luma(chw: np.ndarray) -> np.ndarray:
    """(3, H, W) -> (1, H, W) ITU-R 601 luma 0.299 R + 0.587 G + 0.114 B (what Pillow's 'L' mode stores)."""
    return (0.299 * chw[0] + 0.587 * chw[1] + 0.114 * chw[2])[None]


def _window_mean(chw: np.ndarray, peak: tuple[int, int], size: tuple[int, int]) -> float:
    (y, x), (h, w) = peak, size
    return float(chw[:, y : y + h, x : x + w].mean())


def _explain(raw: MethodMatch, zn: MethodMatch) -> str:
    dy, dx = raw.peak[0] - zn.peak[0], raw.peak[1] - zn.peak[1]
    if max(abs(dy), abs(dx)) <= 2:
        return "raw correlation and ZNCC agree on the location here."
    return (
        f"raw correlation peaks at {tuple(raw.peak)}, {abs(dy)}/{abs(dx)} px away from the ZNCC match {tuple(zn.peak)}: "
        f"raw = <window, template> grows with brightness (mean {raw.window_mean:.2f} there vs {zn.window_mean:.2f} at the "
        f"ZNCC match), while ZNCC subtracts each window's mean and divides by its contrast, so it peaks where the "
        f"pattern matches (ZNCC score {zn.score:.3f})."
    )


def match_template(
    image: Any,
    template: Any,
    method: str = "zncc",
    *,
    pyramid: bool = False,
    levels: int = 4,
    threshold: float | None = None,
    max_matches: int = 1,
    template_name: str = "the template",
) -> TemplateMatchReport:
    """Find ``template`` in ``image`` (both (H, W, 3) uint8 RGB, as :func:`convlens.io.load_image` reads
    them) with ``method`` (``raw``, ``zero_mean``, ``zncc``), always beside raw correlation and ZNCC;
    with ``pyramid`` search ``levels`` image scales (and 2 template scales); ``max_matches`` detections
    above ``threshold`` after non-maximum suppression. A gray image or template compares luma only.

    ZNCC (normalized cross-correlation) at a window W: ``sum((W - mean W)(T - mean T)) / (|W - mean W| |T - mean T|)``.
    """
    if method not in METHODS:
        raise InputError(f"method must be one of {', '.join(METHODS)}; got '{method}'.")
    if isinstance(levels, bool) or not isinstance(levels, int) or levels < 1:
        raise InputError(f"levels must be an int >= 1, got {levels!r}.")
    img, tpl = image_to_chw(image), image_to_chw(template)
    gray = _is_gray(img) or _is_gray(tpl)
    if gray:  # a gray template on a colour photo (or the reverse): compare brightness only, not colour
        img, tpl = _luma(img), _luma(tpl)
    if tpl.shape[1] > img.shape[1] or tpl.shape[2] > img.shape[2]:
        raise InputError(
            f"template {tpl.shape[1]}x{tpl.shape[2]} is larger than the image {img.shape[1]}x{img.shape[2]}; crop a smaller template."
        )
    if float(tpl.max() - tpl.min()) == 0.0:  # raw and ZNCC are always compared; ZNCC of a flat template is 0 everywhere
        raise InputError(
            f"template '{template_name}' is one constant colour, so no position matches it better than another; "
            "crop a template with some texture."
        )
    comparison: dict[str, MethodMatch] = {}
    best: dict[str, MatchResult] = {}
    for m in dict.fromkeys((method, "raw", "zncc")):  # the chosen method first; raw and zncc always, to compare
        candidates = None
        if pyramid:
            res = find_template_multiscale(img, tpl, m, levels=levels, template_levels=2)
            hit, candidates = res.best, list(res.candidates)
        else:
            hit = find_template(img, tpl, m)
        best[m] = hit
        comparison[m] = MethodMatch(
            list(hit.peak),
            hit.score,
            hit.scale,
            list(hit.size),
            round(_window_mean(img, hit.peak, hit.size), 4),
            candidates,
        )
    dets = find_matches(
        img,
        tpl,
        method,
        threshold=threshold,
        max_matches=max_matches,
        pyramid=pyramid,
        levels=levels,
        template_levels=2,
    )
    chosen = comparison[method]
    return TemplateMatchReport(
        peak=chosen.peak,
        score=chosen.score,
        scale=chosen.scale,
        method=method,
        size=chosen.size,
        pyramid=pyramid,
        grayscale=gray,
        comparison=comparison,
        explanation=_explain(comparison["raw"], comparison["zncc"]),
        matches=dets,
        threshold=threshold,
        max_matches=max_matches,
        best=best,
    )
