"""Reports: self-contained HTML pages (no network resources) plus JSON summaries.

- :func:`write_tour_report`: the guided tour's ``index.html`` (one element per topic, ids ``q1``..``q21``),
  PNG figures next to it, and ``summary.json``.
- :func:`convlens.report.image.image_report`: the per-image report (prediction, activations, CAM
  methods with metrics, top filters).

Example:
    >>> import tempfile
    >>> from convlens.tour import TourContext, run_tour
    >>> tour = run_tour(TourContext(quick=True), only=["q7"])
    >>> page = write_tour_report(tour, tempfile.mkdtemp())
    >>> page.name
    'index.html'
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import TYPE_CHECKING

from convlens.report.html import render_page, section_summary, write_page, write_summary
from convlens.report.page import Section, Table, TourFigure

if TYPE_CHECKING:  # the tour sits above the report: it is rendered here, never imported at run time
    from convlens.tour.core import TourResult

__all__ = [
    "write_tour_report",
    "write_page",
    "write_summary",
    "render_page",
    "section_summary",
    "Section",
    "Table",
    "TourFigure",
]

TOUR_INTRO = (
    "Every topic of the course, computed live on the embedded pretrained EfficientNet-Lite0 and on "
    "bundled real images and data (scikit-image photos, the LFW faces subset, scikit-learn digits), "
    "offline. Each section states the question, shows the numbers and figures computed just now, "
    "explains them briefly, and gives the exact API call and CLI command that reproduce them."
)


def write_tour_report(tour: TourResult, out_dir: str | Path) -> Path:
    """Write ``out_dir/index.html``, the figures as PNG files and ``out_dir/summary.json``; returns the page."""
    out = Path(out_dir)
    n_ok = len(tour.sections) - len(tour.failed)
    mode = "quick" if tour.quick else "full"
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    meta = f"{mode} tour, {n_ok}/{len(tour.sections)} sections ok, {tour.seconds:.0f} s on {tour.device}, {stamp}"
    page = write_page(tour.sections, out, title="convlens guided tour", intro=TOUR_INTRO, meta=meta)
    from convlens.report.page import write_cli_inputs

    write_cli_inputs(tour.sections, out)  # the files the CLI lines name: each line runs as printed from out/
    write_summary(
        out / "summary.json",
        tour.sections,
        kind="tour",
        mode=mode,
        seed=tour.seed,
        device=tour.device,
        seconds=round(tour.seconds, 3),
        created=stamp,
        pretrained=tour.pretrained,
        ok=tour.ok,
    )
    return page
