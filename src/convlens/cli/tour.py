"""CLI commands for the guided tour and reports: ``tour`` and ``report``."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from convlens.cli.models import DEVICE_OPT, MODEL_OPT, WEIGHTS_OPT


def _progress_printer(stream=None):
    """A callback printing one line per finished section (and a start line) to stderr."""
    stream = stream or sys.stderr

    def show(ev) -> None:  # ev: convlens.tour.Progress
        width = len(str(ev.total))
        head = f"[{ev.index:>{width}}/{ev.total}] {ev.id:<4} {ev.title}"
        if ev.phase == "start":
            print(f"{head} ...", file=stream, flush=True)
        else:
            s = ev.section
            status = "ok" if s.ok else f"FAILED: {s.error}"
            print(f"{head}: {status} ({s.seconds:.1f} s)", file=stream, flush=True)

    return show


def register(app: typer.Typer) -> None:
    """Add ``tour`` and ``report``."""

    @app.command("tour")
    def tour_cmd(
        out: Path = typer.Option(Path("report"), "--out", help="folder for index.html, figures and summary.json"),
        quick: bool = typer.Option(
            False, "--quick", help="small sizes (what `make demo` and the tests run): < 5 min on 2 cores"
        ),
        open_: bool = typer.Option(False, "--open", help="open the report in a browser when done"),
        only: str | None = typer.Option(None, "--only", help="run some sections only, e.g. 'q1,q7-q9' or '1-3'"),
        seed: int = typer.Option(0, "--seed"),
        device: str = DEVICE_OPT,
    ) -> None:
        """The guided tour: every course topic computed live on the embedded pretrained model and
        bundled real data; writes OUT/index.html (sections q1..q21) and OUT/summary.json.
        Exits 1 at the end if any section failed (the report shows its error)."""
        from convlens.cli.common import ensure_out_dir, parse_int_list
        from convlens.report import write_tour_report
        from convlens.tour import TourContext, run_tour

        sel = None
        if only:
            sel = [f"q{n}" for n in parse_int_list(only.lower().replace("q", ""), name="--only")]
        out_dir = ensure_out_dir(out)
        ctx = TourContext(quick=quick, seed=seed, device=device)
        try:
            tour = run_tour(ctx, only=sel, progress=_progress_printer())
        finally:
            ctx.close()
        page = write_tour_report(tour, out_dir)
        n_bad = len(tour.failed)
        print(
            f"tour: {len(tour.sections) - n_bad}/{len(tour.sections)} sections ok in {tour.seconds:.0f} s; "
            f"report: {page.resolve()}",
            file=sys.stderr,
        )
        if open_:
            import webbrowser

            webbrowser.open(page.resolve().as_uri())
        if n_bad:
            print(f"failed sections: {', '.join(s.id for s in tour.failed)}", file=sys.stderr)
            raise typer.Exit(1)

    @app.command("report")
    def report_cmd(
        images: list[Path] = typer.Argument(..., help="image files or folders"),
        out: Path = typer.Option(..., "--out", help="folder for index.html, figures and summary.json"),
        model: str = MODEL_OPT,
        weights: Path | None = WEIGHTS_OPT,
        methods: str = typer.Option(
            "gradcam,gradcam++,layercam,eigencam", "--methods", help="CAM methods, comma-separated"
        ),
        layer: str = typer.Option("auto", "--layer", help="CAM target layer"),
        topk: int = typer.Option(5, "--topk", min=1),
        filter_steps: int = typer.Option(48, "--filter-steps", min=1, help="gradient-ascent steps for the top filters"),
        metrics: bool = typer.Option(True, "--metrics/--no-metrics", help="faithfulness metrics per CAM map"),
        device: str = DEVICE_OPT,
    ) -> None:
        """Per-image report: prediction, intermediate activations, several CAM methods side by side
        with faithfulness metrics, and the top filters; writes OUT/index.html and OUT/summary.json."""
        from convlens.cli.common import ensure_out_dir
        from convlens.report.image import image_report

        out_dir = ensure_out_dir(out)
        page = image_report(
            images,
            out_dir,
            model=model,
            weights=weights,
            methods=[m.strip() for m in methods.split(",") if m.strip()],
            layer=layer,
            topk=topk,
            filter_steps=filter_steps,
            metrics=metrics,
            device=device,
            progress=lambda msg: print(msg, file=sys.stderr, flush=True),
        )
        print(f"report: {page.resolve()}", file=sys.stderr)
        import json

        summary = json.loads((out_dir / "summary.json").read_text())
        for sk in summary.get("skipped", []):
            print(f"warning: skipped {sk['path']}: {sk['reason']}", file=sys.stderr)
        failed = summary.get("failed", [])
        if failed:
            print(f"failed images: {', '.join(failed)} (errors are in the report)", file=sys.stderr)
            raise typer.Exit(1)
