"""Template matching: convolution read as "respond where the image looks like the filter".

Raw, zero-mean and normalized cross-correlation with torch convolutions (box-filter window
statistics, batched, on the input's device), and single-/multi-scale search over image pyramids.

Example:
    >>> import numpy as np
    >>> img = np.random.default_rng(0).random((30, 30))
    >>> find_template(img, img[4:12, 9:20]).peak
    (4, 9)
"""

from convlens.match.correlate import METHODS, box_sum, correlate, ncc, raw_correlation, zero_mean_correlation
from convlens.match.pipeline import MethodMatch, TemplateMatchReport, match_template
from convlens.match.search import (
    Detection,
    MatchResult,
    MultiScaleMatch,
    ScaleCandidate,
    find_matches,
    find_template,
    find_template_multiscale,
    image_to_chw,
)

__all__ = [
    "METHODS",
    "correlate",
    "raw_correlation",
    "zero_mean_correlation",
    "ncc",
    "box_sum",
    "MatchResult",
    "Detection",
    "find_matches",
    "ScaleCandidate",
    "MultiScaleMatch",
    "find_template",
    "find_template_multiscale",
    "image_to_chw",
    "match_template",
    "TemplateMatchReport",
    "MethodMatch",
]
