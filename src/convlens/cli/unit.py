"""CLI commands for one unit of a network: ``unit`` (its exact computation, box and effective field),
``top-patches`` (what excites a channel over a folder) and ``graph`` (the traced graph as SVG/JSON)."""

from __future__ import annotations

from pathlib import Path

import typer

from convlens.cli.common import console, print_json
from convlens.cli.models import DEVICE_OPT, MODEL_OPT, WEIGHTS_OPT
from convlens.errors import InputError


def _parse_at(text: str) -> tuple[int, ...]:
    parts = [p.strip() for p in text.replace(" ", "").split(",") if p.strip()]
    if len(parts) not in (1, 3) or not all(p.lstrip("-").isdigit() for p in parts):
        raise InputError(f"--at must be C,I,J (channel, row, column; or C for a flat layer), got '{text}'.")
    vals = tuple(int(p) for p in parts)
    if min(vals) < 0:
        raise InputError(f"--at values count from 0, got '{text}'.")
    return vals


def register(app: typer.Typer) -> None:
    """Add ``unit``, ``top-patches`` and ``graph``."""
    register_graph(app)
    register_top_patches(app)

    @app.command("unit")
    def unit_cmd(
        image: Path = typer.Argument(..., help="image file"),
        layer: str = typer.Option(..., "--layer", help="module name (name#k: call k of a reused module)"),
        at: str = typer.Option(
            ..., "--at", help="C,I,J: channel, row, column of the layer's output (C for flat layers)"
        ),
        model: str = MODEL_OPT,
        weights: Path | None = WEIGHTS_OPT,
        out: Path | None = typer.Option(None, "--out", help="folder for trace.png, rf.png and unit.json"),
        top: int = typer.Option(4, "--top", min=1, help="input channels drawn in trace.png (largest |sum| first)"),
        device: str = DEVICE_OPT,
        json_out: bool = typer.Option(False, "--json"),
    ) -> None:
        """The exact computation of one unit on an image: patch x kernel per input channel + bias = value,
        checked against the model's own value, with its receptive-field box and effective field."""
        import json

        from convlens.cli.common import ensure_out_dir, to_jsonable
        from convlens.inspect.unit import trace_unit
        from convlens.io import load_image
        from convlens.models import load_model

        pos = _parse_at(at)
        img = load_image(image)
        bundle = load_model(model, weights=weights, device=device)
        x = bundle.preprocess([img]).to(bundle.device)
        t = trace_unit(bundle, x, layer, pos, field=True)
        data = t.to_dict()  # with "pretrained"
        if out is not None:
            from convlens.plot.unit import field_figure, trace_figure

            folder = ensure_out_dir(out)
            trace_figure(t, top=top).savefig(folder / "trace.png")
            if t.rf is not None:
                field_figure(bundle.preprocess.resize_image(img), t.rf, t.erf).savefig(folder / "rf.png")
            (folder / "unit.json").write_text(json.dumps(to_jsonable(data), indent=2) + "\n")
        if json_out:
            print_json(data)
            return
        _print_trace(t, out)


def _print_trace(t, out: Path | None) -> None:  # noqa: ANN001 -- a UnitTrace
    from rich.table import Table

    con = console()
    at = ",".join(map(str, t.at))
    con.print(f"[bold]{t.layer}[/bold] ({t.module_type}, call {t.call}) unit [{at}]: {t.op} ({t.kind})")
    con.print(f"  {t.formula}")
    one_by_one = t.op == "conv2d" and t.patch is not None and t.patch.shape[1:] == (1, 1)
    if t.terms:
        table = Table(show_header=True, header_style="bold")
        label = {"linear": "feature", "add": "branch", "multiply": "factor", "concat": "input"}.get(t.kind, "channel")
        cols = [label, "x", "w", "x*w"] if one_by_one else [label, "sum", "from"]
        for col in cols:
            table.add_column(col, justify="left" if col in (label, "from") else "right")
        shown = sorted(t.terms, key=lambda s: (-abs(s.sum), s.channel))[:16]
        pos = {ch: k for k, ch in enumerate(t.in_channels)}
        for term in shown:
            if one_by_one:
                k = pos[term.channel]
                table.add_row(
                    str(term.channel), f"{t.patch[k, 0, 0]:.5g}", f"{t.kernel[k, 0, 0]:.5g}", f"{term.sum:.6g}"
                )
            else:
                table.add_row(str(term.channel), f"{term.sum:.6g}", term.source or "")
        con.print(table)
        if len(t.terms) > len(shown):
            rest = sum(s.sum for s in t.terms) - sum(s.sum for s in shown)
            con.print(f"  ... {len(t.terms) - len(shown)} more terms, together {rest:.6g}")
    if t.op == "conv2d" and not one_by_one and t.patch is not None and t.kernel is not None:
        pos = {ch: k for k, ch in enumerate(t.in_channels)}
        for term in sorted(t.terms, key=lambda s: (-abs(s.sum), s.channel))[:2]:
            k = pos[term.channel]
            con.print(
                f"  input channel {term.channel}: patch (rows {t.rows[0]}..{t.rows[-1]}, cols {t.cols[0]}..{t.cols[-1]}; 'pad' = padding) x kernel = {term.sum:.6g}"
            )
            for r in range(t.patch.shape[1]):
                xs = " ".join(
                    "    pad" if t.in_padding[r, q] else f"{t.patch[k, r, q]:7.3f}" for q in range(t.patch.shape[2])
                )
                ws = " ".join(f"{t.kernel[k, r, q]:7.3f}" for q in range(t.kernel.shape[2]))
                con.print(f"    {xs}   |   {ws}")
    elif t.op != "conv2d":
        for k, v in t.numbers.items():
            con.print(f"  {k} = {v:.6g}")
    if t.bias is not None:
        con.print(f"  bias = {t.bias:.6g}")
    ok = "ok" if t.abs_error < 1e-4 else "MISMATCH"
    con.print(f"  traced total {t.total:.6g}; model value {t.value:.6g}; |difference| {t.abs_error:.2e} ({ok})")
    inner = t.inner
    while inner is not None:
        con.print(
            f"  <- its input: {inner.op} ({inner.kind}) = {inner.total:.6g} (model {inner.value:.6g}); {inner.formula}"
        )
        for term in sorted(inner.terms, key=lambda s: (-abs(s.sum), s.channel))[:4]:
            con.print(f"       {term.channel}: {term.sum:.6g}  {term.source or ''}")
        if inner.numbers:
            con.print("       " + ", ".join(f"{k} {v:.6g}" for k, v in inner.numbers.items()))
        if inner.bias is not None:
            con.print(f"       bias {inner.bias:.6g}")
        inner = inner.inner
    if t.rf is not None:
        r = t.rf
        bound = "" if r.exact else " at most (an upper bound: the tracer approximated an op on the way)"
        con.print(
            f"  receptive field {r.size[0]}x{r.size[1]}{bound}: box (top, left, bottom, right) {r.box}, in the image {r.clipped_box}"
        )
        if any(r.padding):
            con.print(
                f"    in the padding: {r.padding[0]} rows above, {r.padding[1]} cols left, {r.padding[2]} rows below, {r.padding[3]} cols right"
            )
    if t.erf is not None:
        e = t.erf
        if e.zero_gradient:
            con.print("  effective field: the gradient is zero on this image (the unit is off)")
        else:
            con.print(
                f"  effective field: {e.mass_in_box:.1%} of |grad| inside the box; r50 {e.r50:.1f} px, r90 {e.r90:.1f} px"
            )
    if out is not None:
        con.print(f"  -> {out / 'trace.png'}, {out / 'rf.png'}, {out / 'unit.json'}")


def register_graph(app: typer.Typer) -> None:
    """Add ``graph``."""

    @app.command("graph")
    def graph_cmd(
        model: str = MODEL_OPT,
        weights: Path | None = WEIGHTS_OPT,
        input_size: str | None = typer.Option(None, "--input", help="HxWxC probe size (default: the model's)"),
        depth: int | None = typer.Option(None, "--depth", min=1, help="collapse modules nested deeper than N"),
        out: Path | None = typer.Option(None, "--out", help="SVG file to write (e.g. graph.svg)"),
        device: str = DEVICE_OPT,
        json_out: bool = typer.Option(False, "--json"),
    ) -> None:
        """The traced graph as SVG (no Graphviz): every op (or every block, with --depth) with its output
        HxWxC, params, MACs, k/s/p/d, receptive field and jump; residual adds and concatenations as merges."""
        from convlens.cli.common import parse_size
        from convlens.inspect.netgraph import network_graph
        from convlens.models import load_model

        bundle = load_model(model, weights=weights, device=device)
        if input_size is not None:
            h, w, c = parse_size(input_size)
        else:
            c, h, w = bundle.meta.input_size
        g = network_graph(bundle, (c, h, w), depth=depth)
        if out is not None:
            from convlens.plot.svg import graph_svg

            if out.is_dir():
                raise InputError(f"--out '{out}' is a folder; give an .svg file name.")
            try:
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_text(graph_svg(g), encoding="utf-8")
            except OSError as e:
                raise InputError(f"cannot write '{out}' ({e.strerror or e}).") from None
        if json_out:
            print_json(g.to_dict())
            return
        con = console()
        con.print(
            f"{g.model}: {len(g.nodes)} nodes, {len(g.edges)} edges, {len(g.merges)} merges"
            + (f" (depth {depth})" if depth else " (every traced op)")
        )
        if out is not None:
            con.print(f"-> {out}")


def register_top_patches(app: typer.Typer) -> None:
    """Add ``top-patches``."""

    @app.command("top-patches")
    def top_patches_cmd(
        folder: Path = typer.Argument(..., help="image folder (recursive) or file"),
        layer: str = typer.Option(..., "--layer", help="module name (name#k: call k of a reused module)"),
        channels: str = typer.Option("0-15", "--channels", help="channels, e.g. 0-15 or 3,7,12"),
        k: int = typer.Option(9, "--k", min=1, help="patches per channel"),
        batch_size: int = typer.Option(32, "--batch-size", min=1),
        model: str = MODEL_OPT,
        weights: Path | None = WEIGHTS_OPT,
        out: Path | None = typer.Option(None, "--out", help="PNG grid to write (one row per channel)"),
        device: str = DEVICE_OPT,
        json_out: bool = typer.Option(False, "--json"),
    ) -> None:
        """The k image patches that excite each channel most over a whole folder (streamed in batches),
        each cropped to the unit's receptive field."""
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        from convlens.cli.common import parse_int_list
        from convlens.inspect.patches import top_patches
        from convlens.models import load_model

        chans = parse_int_list(channels, name="--channels")
        bundle = load_model(model, weights=weights, device=device)
        with Progress(
            TextColumn("images"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=console(stderr=True),
            transient=True,
        ) as bar:
            task = bar.add_task("images", total=None)

            def tick(done: int, total: int | None) -> None:
                bar.update(task, completed=done, total=total)

            res = top_patches(bundle, folder, layer, chans, k=k, batch_size=batch_size, progress=tick)
        for path, why in res.skipped:
            typer.echo(f"warning: skipped {path}: {why}", err=True)
        if out is not None:
            from convlens.plot.unit import top_patches_figure

            if out.is_dir():
                raise InputError(f"--out '{out}' is a folder; give a .png file name.")
            out.parent.mkdir(parents=True, exist_ok=True)
            top_patches_figure(res).savefig(out)
        if json_out:
            print_json(res.to_json())
            return
        con = console()
        con.print(f"{res.layer}: top {res.k} of {res.images} images for {len(res.channels)} channels")
        for c in res.channels:
            best = ", ".join(f"{Path(p.image).name}@({p.y},{p.x})={p.value:.3g}" for p in c.patches[:3])
            con.print(f"  ch {c.channel:>4}: {best}")
        if out is not None:
            con.print(f"-> {out}")
