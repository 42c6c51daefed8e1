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

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Table", "TourFigure", "Section", "write_cli_inputs"]


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
    #: input files the ``cli`` lines name (name -> image array or JSON-able value), written beside index.html
    files: dict[str, Any] = field(default_factory=dict, repr=False)
    status: str = "ok"
    error: str | None = None
    traceback: str | None = None
    seconds: float = 0.0  # wall clock
    cpu_seconds: float = 0.0  # CPU time of this process (all threads): comparable across loaded machines

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def write_cli_inputs(sections: Sequence[Section], out_dir: str | Path) -> list[Path]:
    """Write the input files the sections' CLI lines name (``x.json``, ``template.png``...) into ``out_dir``,
    so that each line runs as printed from there. Arrays become PNG (uint8, or floats in [0, 1]); other
    values JSON. Returns the paths written.

    Example:
        >>> import tempfile
        >>> d = tempfile.mkdtemp()
        >>> [p.name for p in write_cli_inputs([Section("q1", 1, "t", "q", files={"x.json": [[1, 2]]})], d)]
        ['x.json']
    """
    import json

    import numpy as np
    from PIL import Image

    out = Path(out_dir)
    written: list[Path] = []
    for sec in sections:
        for name, value in sec.files.items():
            path = out / name
            if isinstance(value, np.ndarray):
                a = value if value.dtype == np.uint8 else (np.clip(value, 0.0, 1.0) * 255).round().astype(np.uint8)
                Image.fromarray(a).save(path)
            else:
                path.write_text(json.dumps(value) + "\n")
            written.append(path)
    return written
