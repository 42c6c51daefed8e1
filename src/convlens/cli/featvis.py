"""CLI commands for the 'featvis' concern: ``filters`` (feature visualization by gradient ascent)."""

from __future__ import annotations

from pathlib import Path

import typer

from convlens.cli.models import DEVICE_OPT, MODEL_OPT, WEIGHTS_OPT


def register(app: typer.Typer) -> None:
    """Add ``filters``."""

    @app.command("filters")
    def filters_cmd(
        model: str = MODEL_OPT,
        weights: Path | None = WEIGHTS_OPT,
        layer: str | None = typer.Option(
            None,
            "--layer",
            help="layer name (see `convlens summary`); with --kernels, 'auto' = first RGB conv; "
            "not with --objective class (it optimizes the output)",
        ),
        channels: str = typer.Option(
            "0-15", "--channels", help="channel indices: '0-15', '1,3,7' (class indices with --objective class)"
        ),
        objective: str = typer.Option("channel", "--objective", help="channel | neuron | layer | class"),
        recipe: str = typer.Option("lucid", "--recipe", help="lucid (readable) | keras (the book's pixel ascent)"),
        steps: int = typer.Option(256, "--steps", min=0),
        size: int = typer.Option(128, "--size", min=1, help="image side in pixels"),
        seed: int = typer.Option(0, "--seed", min=0),
        device: str = DEVICE_OPT,
        kernels: bool = typer.Option(
            False, "--kernels", help="show the first conv layer's weights as RGB tiles instead"
        ),
        out: str = typer.Option(
            ..., "--out", help="image file to write (.png, .jpg, .pdf, .svg...); DIR/ writes DIR/filters.png"
        ),
        json_out: bool = typer.Option(False, "--json", help="machine-readable output on stdout"),
    ) -> None:
        """Visualize what filters respond to: one optimized image per channel, in one batch, forward truncated at the layer."""
        import dataclasses
        import sys

        from convlens.cli.common import check_choice, console, out_file, parse_int_list, prepare_out_file, print_json
        from convlens.errors import InputError
        from convlens.featvis import OBJECTIVES, RECIPES, filters_report, kernel_report
        from convlens.models import load_model
        from convlens.plot.featvis import featvis_grid, kernel_grid

        check_choice(objective, OBJECTIVES, name="--objective")
        check_choice(recipe, list(RECIPES), name="--recipe")
        chans = parse_int_list(channels, name="--channels")
        if objective == "class" and layer is not None and not kernels:
            raise InputError(
                f"--objective class maximizes class logits at the model's output, so --layer {layer} would be "
                "ignored; leave --layer out (or use --objective channel to visualize that layer)."
            )
        if layer is None and objective != "class":
            raise InputError("--layer is required (a layer name from `convlens summary`, or 'auto').")
        layer = layer or "auto"
        out = out_file(out, default_name="filters.png")  # before any work: a bad --out fails in a second
        bundle = load_model(model, weights=weights, device=device)
        if kernels:
            krep = kernel_report(bundle, layer)
            fig = kernel_grid(krep.tiles, layer=f"{bundle.meta.name} {krep.layer}")
            fig.savefig(prepare_out_file(out))
            krep = dataclasses.replace(krep, out=str(out))
            if json_out:
                print_json(krep.to_dict())
            else:
                console().print(
                    f"wrote {out}: {krep.kernels} kernels of {krep.layer}, each {tuple(krep.kernel_shape)} (C, kh, kw) shown as RGB"
                )
            return

        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        with Progress(
            TextColumn("[bold]filters[/bold] {task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} steps"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console(stderr=True),
            transient=True,
            disable=not sys.stderr.isatty(),  # no bar (nor the blank line it leaves) in pipes and logs
        ) as progress:
            task = progress.add_task(f"{layer if objective != 'class' else 'output'} x{len(chans)}", total=steps)
            # 'auto' is the layer every front end uses, at the size the model will see (a fixed-size model its own)
            report = filters_report(
                bundle,
                layer,
                chans,
                objective=objective,
                recipe=recipe,
                steps=steps,
                size=size,
                seed=seed,
                device=device,
                callback=lambda s, n: progress.update(task, completed=s),
            )
        layer_name = report.layer
        fig = featvis_grid(
            report.result.images,
            chans,
            values=[c.value for c in report.channels],
            title=f"{bundle.meta.name} {layer_name} ({objective}, {recipe}, {steps} steps)",
            labels=[bundle.label(c) for c in chans] if objective == "class" else None,
        )
        fig.savefig(prepare_out_file(out))
        report = dataclasses.replace(report, out=str(out))
        if json_out:
            print_json(report.to_dict())
            return
        con = console()
        con.print(
            f"wrote {out}: {len(chans)} channels of {layer_name} ({objective}, recipe {recipe}, {steps} steps, {size} px) in {report.seconds:.1f} s"
        )
        for cv in report.channels:
            name = (
                f"class {cv.channel:4d} {bundle.label(cv.channel)}" if objective == "class" else f"ch {cv.channel:4d}"
            )
            con.print(f"  {name}  objective {cv.start_value:10.4g} -> {cv.value:10.4g}")
