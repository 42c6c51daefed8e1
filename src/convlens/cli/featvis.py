"""CLI commands for the 'featvis' concern: ``filters`` (feature visualization by gradient ascent)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import typer

from convlens.cli.models import DEVICE_OPT, MODEL_OPT, WEIGHTS_OPT


@dataclass
class ChannelValue:
    """One rendered channel: the final and starting objective values."""

    channel: int
    value: float
    start_value: float


@dataclass
class FiltersReport:
    """What ``convlens filters --json`` prints."""

    model: str
    layer: str
    objective: str
    recipe: str
    steps: int
    size: int
    seed: int
    device: str
    out: str
    truncated_after: str | None
    seconds: float
    channels: list[ChannelValue] = field(default_factory=list)
    recipe_params: dict = field(default_factory=dict)
    pretrained: bool = True  # False: random weights, the images show nothing learned


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
        import sys
        import time

        from convlens.cli.common import check_choice, console, out_file, parse_int_list, prepare_out_file, print_json
        from convlens.errors import InputError
        from convlens.featvis import OBJECTIVES, RECIPES, first_layer_kernels, visualize
        from convlens.featvis.render import target_layer
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
            from convlens.layers import first_conv

            kname = first_conv(bundle.model, bundle.meta.input_size).name if layer == "auto" else layer
            tiles = first_layer_kernels(bundle.model, kname)
            fig = kernel_grid(tiles, layer=f"{bundle.meta.name} {kname}")
            fig.savefig(prepare_out_file(out))
            if json_out:
                print_json(
                    {
                        "model": bundle.meta.name,
                        "pretrained": bundle.pretrained,
                        "layer": kname,
                        "kernels": int(tiles.shape[0]),
                        "kernel_shape": list(tiles.shape[1:]),
                        "out": str(out),
                    }
                )
            else:
                console().print(
                    f"wrote {out}: {tiles.shape[0]} kernels of {kname}, each {tuple(tiles.shape[1:])} (C, kh, kw) shown as RGB"
                )
            return
        # 'auto' is the layer every front end uses, at the size the model will see (a fixed-size model its own)
        layer_name = target_layer(bundle, layer, size=size) if objective != "class" else "output"

        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        t0 = time.perf_counter()
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
            task = progress.add_task(f"{layer_name} x{len(chans)}", total=steps)
            res = visualize(
                bundle,
                layer_name,
                chans,
                objective=objective,
                recipe=recipe,
                steps=steps,
                size=size,
                seed=seed,
                device=device,
                callback=lambda s, n: progress.update(task, completed=s),
                return_result=True,
            )
        seconds = time.perf_counter() - t0
        values = res.values.cpu().tolist()
        starts = res.start_values.cpu().tolist()
        fig = featvis_grid(
            res.images,
            chans,
            values=values,
            title=f"{bundle.meta.name} {layer_name} ({objective}, {recipe}, {steps} steps)",
            labels=[bundle.label(c) for c in chans] if objective == "class" else None,
        )
        fig.savefig(prepare_out_file(out))
        import dataclasses

        report = FiltersReport(
            model=bundle.meta.name,
            pretrained=bundle.pretrained,
            layer=layer_name,
            objective=objective,
            recipe=recipe,
            steps=steps,
            size=size,
            seed=seed,
            device=str(res.images.device),
            out=str(out),
            truncated_after=res.truncated_after,
            seconds=round(seconds, 3),
            channels=[ChannelValue(c, float(v), float(s)) for c, v, s in zip(chans, values, starts, strict=True)],
            recipe_params={k: v for k, v in dataclasses.asdict(res.recipe).items() if k != "extra"},
        )
        if json_out:
            print_json(report)
            return
        con = console()
        con.print(
            f"wrote {out}: {len(chans)} channels of {layer_name} ({objective}, recipe {recipe}, {steps} steps, {size} px) in {seconds:.1f} s"
        )
        for cv in report.channels:
            name = (
                f"class {cv.channel:4d} {bundle.label(cv.channel)}" if objective == "class" else f"ch {cv.channel:4d}"
            )
            con.print(f"  {name}  objective {cv.start_value:10.4g} -> {cv.value:10.4g}")
