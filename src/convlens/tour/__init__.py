"""The guided tour: every course topic computed live on the embedded pretrained model and bundled
real data. Sections (``q1``..``q21``, in course order) live in :mod:`convlens.tour.sections`; the
machinery (dataclasses, registry, runner) in :mod:`convlens.tour.core`. Rendering is
:mod:`convlens.report`'s job; this package never prints or writes the report.

Example:
    >>> tour = run_tour(TourContext(quick=True), only=["q7"])
    >>> tour.sections[0].results["output (torch)"]
    [126, 126, 16]
"""

from __future__ import annotations

from convlens.tour.core import (
    SECTIONS,
    Body,
    Progress,
    Section,
    SectionSpec,
    Table,
    TourContext,
    TourFigure,
    TourResult,
    run_tour,
    section,
)

__all__ = [
    "SECTIONS",
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
    """All registered sections in course order."""
    from convlens.tour import sections as _sections  # noqa: F401  (registers them)

    return [SECTIONS[k] for k in sorted(SECTIONS)]
