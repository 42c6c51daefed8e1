"""The tour's machinery: what a section computes (:class:`Body`), the context, and the runner.

A *section* is one course topic computed live. Its function takes a :class:`TourContext` (quick or
full sizes, seed, device, the shared pretrained model and images) and returns a :class:`Section`
(numbers, tables, figures, explanation, and the API call and CLI command that reproduce it). The
runner times each one, turns a failure into a ``Section`` with ``status='error'`` and goes on, and
reports progress through a callback -- it never prints. The course is the explicit ordered list
:data:`convlens.tour.course.COURSE`; the page model (``Section``, ``Table``, ``TourFigure``) is
:mod:`convlens.report.page`'s.

Example:
    >>> from convlens.tour.core import Body, TourContext, section, run_tour
    >>> reg = {}
    >>> @section(1, "Addition", "What is 1 + 1?", registry=reg)
    ... def q1(ctx):
    ...     return Body(results={"sum": 1 + 1}, explanation="Arithmetic.")
    >>> tour = run_tour(TourContext(quick=True), registry=reg)
    >>> tour.sections[0].id, tour.sections[0].status, tour.sections[0].results["sum"]
    ('q1', 'ok', 2)
"""

from __future__ import annotations

import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from convlens.errors import InputError
from convlens.report.page import Section, Table, TourFigure

__all__ = [
    "Table",
    "TourFigure",
    "Body",
    "Section",
    "SectionSpec",
    "TourContext",
    "TourResult",
    "Progress",
    "section",
    "run_tour",
]


@dataclass
class Body:
    """What a section function computes; the ``@section`` decorator adds id/title/question."""

    results: dict[str, Any] = field(default_factory=dict)
    tables: list[Table] = field(default_factory=list)
    figures: list[TourFigure] = field(default_factory=list)
    explanation: str = ""
    api: str = ""
    cli: str = ""
    #: the input files the ``cli`` lines name (file name -> image array or JSON-able value), written next to
    #: the report so that every line runs as printed from the report folder
    files: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SectionSpec:
    """One section of a course: its number, title, one-line question and the function computing its
    :class:`Body` (the runner turns it into a :class:`~convlens.report.page.Section`)."""

    number: int
    title: str
    question: str
    fn: Callable[[TourContext], Body] = field(repr=False)

    @property
    def id(self) -> str:
        return f"q{self.number}"


def section(
    number: int,
    title: str,
    question: str,
    *,
    registry: dict[int, SectionSpec],
) -> Callable[[Callable[[TourContext], Body]], Callable[[TourContext], Body]]:
    """Add ``fn(ctx) -> Body`` to ``registry`` (a course of your own for :func:`run_tour`) as section
    ``number``; a number may be used once. The course itself is the explicit list
    :data:`convlens.tour.course.COURSE`, not a registry filled by imports."""

    def deco(fn: Callable[[TourContext], Body]) -> Callable[[TourContext], Body]:
        if number in registry:
            raise ValueError(f"section q{number} is registered twice")
        registry[number] = SectionSpec(number, title, question, fn)
        return fn

    return deco


class TourContext:
    """Shared state of one tour run: sizes (quick vs full), seed, device, the embedded pretrained
    model (loaded once, on first use), bundled images, and a scratch folder for runs that write
    checkpoints. Sections must not modify the shared model (every convlens API restores it).

    Example:
        >>> ctx = TourContext(quick=True)
        >>> ctx.pick(quick=2, full=20)
        2
    """

    def __init__(
        self, *, quick: bool = False, seed: int = 0, device: str = "cpu", workdir: str | Path | None = None
    ) -> None:
        self.quick = bool(quick)
        self.seed = int(seed)
        self.device = device
        self._workdir = Path(workdir) if workdir is not None else None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._bundle: Any = None
        self.cache: dict[str, Any] = {}  # results shared between sections (e.g. one training comparison)

    def pick(self, *, quick: Any, full: Any) -> Any:
        """The quick or the full value of a size."""
        return quick if self.quick else full

    @property
    def workdir(self) -> Path:
        """A scratch folder (a temporary one unless given), removed by :meth:`close`."""
        if self._workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="convlens-tour-")
            self._workdir = Path(self._tmp.name)
        self._workdir.mkdir(parents=True, exist_ok=True)
        return self._workdir

    def model(self):  # -> convlens.models.ModelBundle
        """The embedded pretrained EfficientNet-Lite0 bundle, loaded once."""
        if self._bundle is None:
            from convlens.models import load_model

            self._bundle = load_model("efficientnet_lite0", device=self.device)
        return self._bundle

    @staticmethod
    def image(name: str = "chelsea") -> np.ndarray:
        """A bundled scikit-image photo (``chelsea``, ``coffee``, ``astronaut``, ...) as RGB uint8."""
        import skimage.data

        from convlens.io import as_uint8_rgb

        loader = getattr(skimage.data, name, None)
        if loader is None:
            raise InputError(f"'{name}' is not a bundled scikit-image image; try chelsea, coffee or astronaut.")
        return as_uint8_rgb(loader())

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
            self._workdir = None


@dataclass(frozen=True)
class Progress:
    """A progress event: ``phase`` is ``'start'`` (section about to run) or ``'done'`` (with its result)."""

    phase: str
    index: int  # 1-based position in this run
    total: int
    id: str
    title: str
    section: Section | None = None


@dataclass
class TourResult:
    """All sections of one run, in course order."""

    sections: list[Section]
    quick: bool
    seed: int
    device: str
    seconds: float
    #: whether the shared model's weights are trained (None: no section used a model)
    pretrained: bool | None = None

    @property
    def failed(self) -> list[Section]:
        return [s for s in self.sections if not s.ok]

    @property
    def ok(self) -> bool:
        return not self.failed


@contextmanager
def _seeded_rng(seed: int) -> Iterator[None]:
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _as_section(spec: SectionSpec, body: Body) -> Section:
    if not isinstance(body, Body):
        raise TypeError(f"section {spec.id} returned {type(body).__name__}, expected Body")
    return Section(
        id=spec.id,
        number=spec.number,
        title=spec.title,
        question=spec.question,
        results=body.results,
        tables=body.tables,
        figures=body.figures,
        explanation=body.explanation,
        api=body.api,
        cli=body.cli,
        files=dict(body.files),
    )


def _error_line(exc: BaseException, spec: SectionSpec) -> str:
    if isinstance(exc, ModuleNotFoundError) and (exc.name or "").startswith("convlens"):
        msg = str(exc)
        return (
            msg
            if msg.startswith("this section needs")
            else f"this section needs {exc.name}, which is not available yet"
        )
    if isinstance(exc, ImportError) and "convlens" in str(exc):
        return f"this section needs an API that is not available yet: {exc}"
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


def run_tour(
    ctx: TourContext | None = None,
    *,
    only: Sequence[str | int] | None = None,
    progress: Callable[[Progress], None] | None = None,
    registry: Mapping[int, SectionSpec] | Sequence[SectionSpec] | None = None,
) -> TourResult:
    """Run the sections in course order; a failing section becomes ``status='error'`` and the tour
    goes on. ``only`` selects sections (``'q7'`` or ``7``); ``progress`` gets a :class:`Progress`
    before and after each section.
    """
    if registry is None:
        from convlens.tour import course  # the course's explicit, ordered list of sections

        registry = course.COURSE
    if not isinstance(registry, Mapping):
        registry = {s.number: s for s in registry}
    ctx = ctx or TourContext()
    specs = [registry[k] for k in sorted(registry)]
    if only:
        wanted = set()
        for o in only:
            s = str(o).strip().lower().lstrip("q")
            if not s.isdigit() or int(s) not in registry:
                raise InputError(f"unknown section '{o}'; expected q1..q{max(registry)} (or 1..{max(registry)}).")
            wanted.add(int(s))
        specs = [s for s in specs if s.number in wanted]
    t_all = time.perf_counter()
    out: list[Section] = []
    for i, spec in enumerate(specs, 1):
        if progress:
            progress(Progress("start", i, len(specs), spec.id, spec.title))
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            # each section sees torch's CPU RNG seeded with ctx.seed (deterministic, whatever ran before)
            # and the caller's RNG state is restored afterwards
            with _seeded_rng(ctx.seed):
                sec = _as_section(spec, spec.fn(ctx))
        except Exception as exc:  # one failing section must not stop the tour
            sec = Section(
                id=spec.id,
                number=spec.number,
                title=spec.title,
                question=spec.question,
                status="error",
                error=_error_line(exc, spec),
                traceback="".join(traceback.format_exception(exc)),
            )
        sec.seconds = time.perf_counter() - t0
        sec.cpu_seconds = time.process_time() - c0
        out.append(sec)
        if progress:
            progress(Progress("done", i, len(specs), spec.id, spec.title, sec))
    pretrained = ctx._bundle.pretrained if ctx._bundle is not None else None
    return TourResult(out, ctx.quick, ctx.seed, str(ctx.device), time.perf_counter() - t_all, pretrained)
