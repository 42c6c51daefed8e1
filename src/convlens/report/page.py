"""The page model shared by every HTML page (the tour, the per-image report, later pages): a
:class:`Section` holds one topic's numbers (``results``), :class:`Table` s and :class:`TourFigure` s
(matplotlib figures with captions), its explanation and the API call and CLI command that reproduce it.
:mod:`convlens.report.html` renders sections; producers (the tour, the image report) only build them.

Example:
    >>> s = Section("q1", 1, "Title", "What?", tables=[Table(["a"], [[1]])])
    >>> s.ok, s.tables[0].columns
    (True, ['a'])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Table", "TourFigure", "Section"]


@dataclass
class Table:
    """A small table of live numbers: ``columns`` names, ``rows`` of plain values."""

    columns: list[str]
    rows: list[list[Any]]
    caption: str = ""


@dataclass
class TourFigure:
    """A matplotlib Figure with its caption; ``file`` is set by the report writer once saved."""

    caption: str
    figure: Any = field(repr=False)  # matplotlib.figure.Figure (None after saving to free memory)
    file: str | None = None


@dataclass
class Section:
    """One topic of the tour, computed live (or the error that stopped it).

    ``id`` is ``qN`` (the HTML element id in the report: a contract). ``status`` is ``'ok'`` or
    ``'error'``; on error, ``error`` is one line and ``traceback`` the details.
    """

    id: str
    number: int
    title: str
    question: str
    results: dict[str, Any] = field(default_factory=dict)
    tables: list[Table] = field(default_factory=list)
    figures: list[TourFigure] = field(default_factory=list)
    explanation: str = ""
    api: str = ""
    cli: str = ""
    status: str = "ok"
    error: str | None = None
    traceback: str | None = None
    seconds: float = 0.0  # wall clock
    cpu_seconds: float = 0.0  # CPU time of this process (all threads): comparable across loaded machines

    @property
    def ok(self) -> bool:
        return self.status == "ok"
