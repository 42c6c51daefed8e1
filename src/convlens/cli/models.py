"""CLI commands for models and inspection: ``models``, ``predict`` (and, from the inspect module,
``summary``, ``activations``, ``depth-profile``)."""

from __future__ import annotations

from pathlib import Path

import typer

from convlens.cli.common import console, print_json
from convlens.errors import InputError

MODEL_OPT = typer.Option(
    "efficientnet_lite0",
    "--model",
    help="registered name, torchvision/timm name (timm:NAME or torchvision:NAME where both have it), or file.py:factory",
)
WEIGHTS_OPT = typer.Option(None, "--weights", help="local .safetensors/.pt/.pth weights (loaded safely)")
DEVICE_OPT = typer.Option("cpu", "--device", help="cpu, cuda, cuda:1 ...")


def register(app: typer.Typer) -> None:
    """Add ``models`` and ``predict``."""

    @app.command("models")
    def models_cmd(
        pattern: str = typer.Argument(
            "*", help="glob (resnet*) or substring (resnet) of model names; may start with timm: or torchvision:"
        ),
        source: str | None = typer.Option(None, "--source", help="convlens | torchvision | timm"),
        json_out: bool = typer.Option(False, "--json", help="machine-readable output on stdout"),
    ) -> None:
        """List the models convlens can load, with the library that builds each (nothing is downloaded:
        only the embedded efficientnet_lite0 is pretrained). A name both torchvision and timm have
        loads from torchvision; write timm:NAME for timm's."""
        from convlens.models import model_catalog

        cat = model_catalog(pattern, source=source)
        if json_out:
            print_json(cat.to_dict())
            return
        con = console()
        con.print(
            f"{len(cat.sources)} models match '{pattern}'. Pretrained offline: efficientnet_lite0 (embedded); "
            "the rest start from random weights unless --weights FILE is given."
        )
        width = max(len(r.load_as) for r in cat.sources)
        for r in cat.sources:
            con.print(f"{r.load_as:<{width}}  {r.source}")

    @app.command("predict")
    def predict_cmd(
        images: list[Path] = typer.Argument(..., help="image files or folders"),
        model: str = MODEL_OPT,
        weights: Path | None = WEIGHTS_OPT,
        topk: int = typer.Option(5, "--topk", min=1),
        device: str = DEVICE_OPT,
        json_out: bool = typer.Option(False, "--json"),
    ) -> None:
        """Classify images: top-k classes with probabilities."""
        from convlens.inspect.predict import predict_files

        run = predict_files(images, model=model, weights=weights, topk=topk, device=device)
        results = run.predictions
        for sk in run.skipped:  # stderr, so --json stays parseable
            typer.echo(f"warning: skipped {sk.path}: {sk.reason}", err=True)
        if json_out:
            print_json(results)
            return
        con = console()
        for r in results:
            con.print(f"[bold]{r.image}[/bold]")
            for t in r.top:
                con.print(f"  {t.prob:7.2%}  {t.label}" + (f"  (class {t.cls})" if t.label != f"class {t.cls}" else ""))

    # ---- inspection (convlens.inspect): summary, activations, depth-profile
    @app.command("summary")
    def summary_cmd(
        model: str = MODEL_OPT,
        weights: Path | None = WEIGHTS_OPT,
        input_size: str | None = typer.Option(
            None, "--input", help="HxWxC probe size (default: the model's input size)"
        ),
        channels_first: bool = typer.Option(False, "--channels-first", help="--input and output shapes as CxHxW"),
        depth: int | None = typer.Option(3, "--depth", min=1, help="show modules nested at most N levels deep"),
        device: str = DEVICE_OPT,
        json_out: bool = typer.Option(False, "--json"),
    ) -> None:
        """Per-layer output shape, parameters, MACs, kernel/stride/padding and exact receptive field (max over all paths)."""
        from convlens.cli.common import parse_size
        from convlens.inspect.summary import summarize_model
        from convlens.models import load_model

        bundle = load_model(model, weights=weights, device=device)
        chw = None
        if input_size is not None:
            h, w, c = parse_size(input_size, channels_first=channels_first)
            chw = (c, h, w)
        s = summarize_model(bundle, chw)
        data = s.to_dict(depth, channels_first=channels_first)
        if json_out:
            print_json(data)
            return
        from rich.table import Table

        order = "CxHxW" if channels_first else "HxWxC"
        table = Table(title=f"{s.model} on {'x'.join(map(str, data['input_shape']))} ({order})", show_lines=False)

        def pair(v: object) -> str:
            if v is None:
                return "-"
            a, b = v  # type: ignore[misc]
            return f"{a}" if a == b else f"{a}x{b}"

        rows = []
        for r in data["layers"]:
            win = (
                "-"
                if r["kernel"] is None
                else "/".join(pair(r[k]) for k in ("kernel", "stride", "padding", "dilation"))
            )
            rf = pair(r["receptive_field"]) + ("" if r["rf_exact"] else "~")
            rows.append(
                (
                    "  " * (r["depth"] - 1) + r["name"] + (f" #{r['call']}" if r["call"] else ""),
                    r["type"],
                    "x".join(map(str, r["output_shape"] or ())),
                    f"{r['params']:,}",
                    (
                        f"{r['macs']:,}"
                        if r.get("macs_counted", True)
                        else ("not counted" if not r["macs"] else f">={r['macs']:,}")
                    ),
                    win,
                    rf,
                    pair(r["jump"]) if r["jump"] is not None else "global",
                )
            )
        # long names wrap onto a second line instead of being cut ('features.1.…' on a 120-column console)
        for col in ("layer", "type", f"output {order}", "params", "MACs", "k/s/p/d", "RF", "jump"):
            table.add_column(
                col,
                justify="left" if col in ("layer", "type") else "right",
                overflow="fold" if col == "layer" else "ellipsis",
                no_wrap=col != "layer",
                max_width=20 if col == "type" else None,
            )
        for row in rows:
            table.add_row(*row)
        con = console()
        con.print(table)
        con.print(f"total params {s.total_params:,} (trainable {s.trainable_params:,}, frozen {s.frozen_params:,})")
        con.print(f"total MACs {s.total_macs:,} ({s.total_macs / 1e9:.3f} G); {s.mac_convention}")
        if s.not_counted:
            ops = ", ".join(f"{d['op']} in {d['module'] or 'the model'}" for d in s.not_counted[:5])
            more = f" and {len(s.not_counted) - 5} more" if len(s.not_counted) > 5 else ""
            con.print(f"not counted (the total is a lower bound): {ops}{more}")
        con.print(
            "RF = receptive field in input pixels (max over all paths; ~ = approximated op), jump = effective stride."
        )

    @app.command("activations")
    def activations_cmd(
        image: Path = typer.Argument(..., help="image file"),
        model: str = MODEL_OPT,
        weights: Path | None = WEIGHTS_OPT,
        layers: list[str] = typer.Option(
            ["stages"],
            "--layers",
            help="names, globs (features.*), 'stages' (one per stage, the default), 'auto' (the layer `cam` explains), name#k (call k of a reused module); repeat or comma-separate",
        ),
        max_channels: int = typer.Option(
            64, "--max-channels", min=1, help="channels drawn per layer (most active first)"
        ),
        topk: int = typer.Option(8, "--topk", min=1, help="most active channels listed per layer"),
        out: Path = typer.Option(..., "--out", help="folder for the PNG grids"),
        device: str = DEVICE_OPT,
        json_out: bool = typer.Option(False, "--json"),
    ) -> None:
        """Feature maps of chosen layers for one image: PNG grid per layer, top-k channels, statistics."""
        import dataclasses

        from convlens.cli.common import ensure_out_dir
        from convlens.inspect.activations import activation_report
        from convlens.io import load_image
        from convlens.models import load_model
        from convlens.plot.inspect import activation_grid

        folder = ensure_out_dir(out)  # before any work (removed again if the command fails)
        img = load_image(image)
        specs = [p.strip() for item in layers for p in item.split(",") if p.strip()]
        if not specs:
            raise InputError(
                "--layers is empty; give layer names or globs (see `convlens summary`), 'stages' or 'auto'."
            )
        bundle = load_model(model, weights=weights, device=device)
        rep = activation_report(bundle, img, specs, topk=topk, max_channels=max_channels, image_name=str(image))
        rows = []
        for r in rep.layers:
            if r.shown_channels:  # a spatial grid: draw the most active channels
                fig = activation_grid(
                    r.activation[0],
                    r.shown_channels,
                    title=f"{r.layer}  {'x'.join(map(str, r.output_shape))}  (most active {len(r.shown_channels)} channels)",
                )
                fig_path = folder / f"act_{r.layer}.png"
                fig.savefig(fig_path)
                r = dataclasses.replace(r, figure=str(fig_path))
            rows.append(r)
        rep = dataclasses.replace(rep, layers=rows)
        if json_out:
            print_json(rep.to_dict())
            return
        con = console()
        for r in rep.layers:
            top = ", ".join(f"{c.channel}:{c.mean:.2f}" for c in r.top_channels)
            con.print(
                f"{r.layer:<28} {'x'.join(map(str, r.output_shape)):>14}  mean {r.mean:.3f}  sparsity {r.sparsity:.0%}  top {top}"
            )
            if r.figure:
                con.print(f"  -> {r.figure}")
            elif r.note:
                con.print(f"  (no figure: {r.note})")

    @app.command("depth-profile")
    def depth_profile_cmd(
        image: Path = typer.Argument(..., help="image file"),
        model: str = MODEL_OPT,
        weights: Path | None = WEIGHTS_OPT,
        out: Path = typer.Option(..., "--out", help="folder for the figures"),
        device: str = DEVICE_OPT,
        json_out: bool = typer.Option(False, "--json"),
    ) -> None:
        """Early vs deep layers: per stage size, channels, receptive field, activations vs weights, frequency content."""
        from convlens.cli.common import ensure_out_dir
        from convlens.inspect.depth import depth_profile_image
        from convlens.io import load_image
        from convlens.models import load_model
        from convlens.plot.inspect import depth_profile_figure, kernel_tiles

        folder = ensure_out_dir(out)  # before any work (removed again if the command fails)
        img = load_image(image)
        bundle = load_model(model, weights=weights, device=device)
        prof = depth_profile_image(bundle, img, image_name=str(image))
        figures = {"profile": folder / "depth_profile.png"}
        depth_profile_figure(prof, title=f"{bundle.meta.name}: early vs deep layers ({Path(image).name})").savefig(
            figures["profile"]
        )
        if prof.kernels is not None:
            figures["first_conv_kernels"] = folder / "first_conv_kernels.png"
            kernel_tiles(prof.kernels, title=f"{prof.first_conv}: {tuple(prof.kernels.shape)} kernels as RGB").savefig(
                figures["first_conv_kernels"]
            )
        result = {**prof.to_dict(), "figures": {k: str(v) for k, v in figures.items()}}  # + the files written
        if json_out:
            print_json(result)
            return
        con = console()
        nw = max(
            [16] + [len(s.name) + 2 for s in prof.stages]
        )  # long names (features.denseblock1) keep the columns aligned
        con.print(
            f"{'stage':<{nw}}{'HxW':>9}{'C':>6}{'RF':>7}{'jump':>6}{'H*W*C':>11}{'weights':>11}{'MACs':>14}{'f(cyc/px)':>11}{'high-f':>8}"
        )
        for s in prof.stages:
            rf = s.receptive_field[0] if s.receptive_field else "-"
            jp = s.jump[0] if s.jump else "-"
            mf = f"{s.mean_frequency:.3f}" if s.mean_frequency is not None else "-"
            hf = f"{s.high_frequency:.0%}" if s.high_frequency is not None else "-"
            con.print(
                f"{s.name:<{nw}}{s.spatial[0]:>4}x{s.spatial[1]:<4}{s.channels:>6}{rf:>7}{jp:>6}{s.activations:>11,}{s.weights:>11,}{s.macs:>14,}{mf:>11}{hf:>8}"
            )
        con.print(f"head weights {prof.head_weights:,}; first conv: {prof.first_conv}")
        for k, v in figures.items():
            con.print(f"{k}: {v}")
