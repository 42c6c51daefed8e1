"""CLI for the 'explain' concern: ``convlens cam`` -- class activation maps for image files/folders.

Per image and method it writes ``<stem>_<method>.png`` (the map in turbo/jet over the image as the
model sees it) and ``<stem>_<method>.npy`` (the (H, W) float32 map in [0, 1]); with several methods
also ``<stem>_methods.png`` (side-by-side grid). ``--json`` prints one record per image and method.
"""

from __future__ import annotations

from pathlib import Path

import typer

from convlens.cli.common import check_choice, console, ensure_out_dir, print_json
from convlens.cli.models import DEVICE_OPT, MODEL_OPT, WEIGHTS_OPT


def all_methods() -> list[str]:
    """``--method all``: every registered CAM method except the sampled ones (SS-CAM, IS-CAM) that
    cost ``num_samples`` times Score-CAM."""
    from convlens.explain import METHODS

    return [n for n, c in METHODS.items() if c.in_all]


def _parse_methods(text: str) -> list[str]:
    from convlens.explain import ATTRIBUTIONS, get_method

    if text.strip().lower() == "all":
        return all_methods()
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise_input("--method is empty; give a method name, a comma list, or 'all'.")
    out = []
    for n in names:
        key = n.lower().replace("_", "").replace("-", "")
        name = key if key in ATTRIBUTIONS else get_method(n).name  # raises InputError with the valid names
        if name not in out:
            out.append(name)
    return out


def raise_input(msg: str) -> None:
    from convlens.errors import InputError

    raise InputError(msg)


class _Rate:
    """A rich progress column: images per second."""

    def __new__(cls):  # built lazily so that importing the CLI does not import rich.progress
        from rich.progress import ProgressColumn
        from rich.text import Text

        class Rate(ProgressColumn):
            def render(self, task):  # type: ignore[no-untyped-def]
                speed = task.finished_speed or task.speed
                return Text("  -- img/s" if speed is None else f"{speed:6.1f} img/s")

        return Rate()


def register(app: typer.Typer) -> None:
    """Add ``cam``."""

    @app.command("cam")
    def cam_cmd(
        images: list[Path] = typer.Argument(..., help="image files or folders"),
        model: str = MODEL_OPT,
        weights: Path | None = WEIGHTS_OPT,
        method: str = typer.Option(
            "gradcam",
            "--method",
            help="a CAM method of convlens.explain.METHODS (gradcam, gradcam++, scorecam, ablationcam, fullgrad, ...), a pixel attribution (saliency, integratedgradients, ...), all, or a comma list",
        ),
        layer: str = typer.Option(
            "auto", "--layer", help="'auto' (last spatial layer), a name, a glob, or a comma list (maps averaged)"
        ),
        target: str = typer.Option(
            "top1",
            "--target",
            help="top1 (each image's prediction), topK (its K-th class), a class index or name ('Egyptian cat'), "
            "box:x0,y0,x1,y1[:class] (detectors), mask:FILE.png[:class] (segmenters), like:REF.jpg (embedding similarity)",
        ),
        batch_size: int = typer.Option(32, "--batch-size", min=1, help="images per forward (and Score-CAM chunk)"),
        device: str = DEVICE_OPT,
        out: Path = typer.Option(..., "--out", help="output folder for the PNG overlays and .npy maps"),
        metrics: bool = typer.Option(
            False, "--metrics", help="also compute deletion/insertion AUC, confidence drop, ROAD"
        ),
        cmap: str = typer.Option("turbo", "--cmap", help="turbo or jet"),
        alpha: float = typer.Option(0.5, "--alpha", min=0.0, max=1.0, help="map opacity over the image"),
        sanity: bool = typer.Option(
            False, "--sanity", help="model-randomization sanity check: Spearman and SSIM per randomized block"
        ),
        resume: bool = typer.Option(False, "--resume", help="skip images whose outputs are already in --out"),
        workers: int | None = typer.Option(
            None, "--workers", min=0, help="image-decoding worker processes (default: min(4, cores - 1))"
        ),
        figures: bool | None = typer.Option(
            None,
            "--figures/--no-figures",
            help="labelled figures per map and method grids (default: only for runs of at most 64 images)",
        ),
        json_out: bool = typer.Option(False, "--json", help="machine-readable records on stdout"),
    ) -> None:
        """Class activation maps (Grad-CAM family) and pixel attributions, for files or whole folders.

        Writes per image and method <stem>_<method>.npy/.png and OUT/index.jsonl (one --json record per
        line); --resume skips images already done. Under torchrun each process takes a share of the files.
        """
        import sys

        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        from convlens.explain.folder import cam_files

        methods = _parse_methods(method)
        check_choice(cmap, ("turbo", "jet"), name="--cmap")
        ensure_out_dir(out)
        prog = Progress(
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            _Rate(),
            TimeRemainingColumn(),
            console=console(stderr=True),
            transient=True,
            disable=not sys.stderr.isatty(),  # no bar (nor its newline) in pipes and logs
        )
        with prog:
            task = prog.add_task("cam", total=None)
            res = cam_files(
                images,
                model=model,
                weights=weights,
                methods=methods,
                layer=layer,
                target=target,
                target_option="--target",
                batch_size=batch_size,
                device=device,
                out=out,
                metrics=metrics,
                sanity=sanity,
                cmap=cmap,
                alpha=alpha,
                resume=resume,
                workers=workers,
                progress=lambda k: prog.advance(task, k),
                figures=figures,
            )
        err = console(stderr=True)
        for n in [f"skipped unreadable file: {t}" for t in res.skipped] + res.warnings:
            err.print(f"warning: {n}", markup=False)
        if res.rank != 0:
            return  # rank 0 reports the merged set
        records = res.records
        if res.world_size > 1:
            import json

            from convlens.explain.folder import CamRecord

            records = [CamRecord(**json.loads(line)) for line in res.index.read_text().splitlines() if line.strip()]
        if json_out:
            print_json([r.to_dict() for r in records])
            return
        con = console()
        for r in records:
            line = f"{r.image}  {r.method:15s} {r.label} (class {r.target}, p={r.score:.3f})  layer {r.layer}  -> {r.overlay_file}"
            con.print(line, markup=False, soft_wrap=True)  # one record per line, also in pipes
            if r.metrics:
                con.print(
                    "    "
                    + "  ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in r.metrics.items()),
                    markup=False,
                )
            if r.sanity:
                pairs = zip(r.sanity["layers"], r.sanity["spearman"], r.sanity["ssim"], strict=True)
                con.print(
                    "    sanity (randomized top-down: spearman/ssim): "
                    + "  ".join(f"{n}={sp:.2f}/{ss:.2f}" for n, sp, ss in pairs),
                    markup=False,
                    soft_wrap=True,
                )
        if res.resumed:
            err.print(f"resumed: {res.resumed} image(s) were already done in {res.out}", markup=False)
