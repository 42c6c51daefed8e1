"""The guided tour: every course topic computed live on the embedded pretrained model and bundled
real data. The course (``q1``..``q21``, in order) is the explicit list :data:`convlens.tour.course.COURSE`
of functions in the topic modules :mod:`~convlens.tour.arithmetic`, :mod:`~convlens.tour.vision`,
:mod:`~convlens.tour.training` and :mod:`~convlens.tour.explain`; the machinery (Body, context, runner)
is :mod:`convlens.tour.core`, the page model :mod:`convlens.report.page`. Rendering is
:mod:`convlens.report`'s job; this package never prints or writes the report.

Example:
    >>> tour = run_tour(TourContext(quick=True), only=["q7"])
    >>> tour.sections[0].results["output (torch)"]
    [126, 126, 16]
"""

from __future__ import annotations

from convlens.report.page import Section, Table, TourFigure
from convlens.tour.core import (
    Body,
    Progress,
    SectionSpec,
    TourContext,
    TourResult,
    run_tour,
    section,
)

__all__ = [
    "Body",
    "Progress",
    "Section",
    "SectionSpec",
    "Table",
    "TourContext",
    "TourFigure",
    "TourResult",
    "run_tour",
    "section",
    "section_specs",
]


def section_specs() -> list[SectionSpec]:
    """The course's sections in order (:data:`convlens.tour.course.COURSE`).

    Example:
        >>> [s.id for s in section_specs()][-1]
        'q21'
    """
    from convlens.tour.course import COURSE

    return list(COURSE)
