"""CLI commands for template matching, pyramids, blocks and the block experiments:
``match``, ``pyramid``, ``blocks inception|conv1x1`` and ``experiment``.

Library counterparts: :mod:`convlens.match`, :mod:`convlens.pyramid`, :mod:`convlens.blocks`,
:mod:`convlens.experiments`; figures from :mod:`convlens.plot.vision`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from convlens.cli.common import check_choice, console, ensure_out_dir, parse_size, print_json, to_jsonable
from convlens.errors import InputError


def _save(fig: Any, path: Path) -> str:
    fig.savefig(path, dpi=100)
    return str(path)


def _match(
    image: str,
    template: str,
    method: str,
    pyramid: bool,
    levels: int,
    out: str,
    threshold: float | None = None,
    max_matches: int = 1,
) -> dict[str, Any]:
    """Read the files, call :func:`convlens.match.match_template` (the pipeline), render the figure and
    match.json; the JSON is the report's serialization plus the files written."""
    from convlens.io import load_image
    from convlens.match import match_template
    from convlens.plot.vision import match_figure

    img_u8, tpl_u8 = load_image(image), load_image(template)
    rep = match_template(
        img_u8,
        tpl_u8,
        method,
        pyramid=pyramid,
        levels=levels,
        threshold=threshold,
        max_matches=max_matches,
        template_name=str(template),
    )
    out_dir = ensure_out_dir(out)
    hits = {
        m: {"peak": b.peak, "size": b.size, "score": b.score, "scale": b.scale, "response": b.response}
        for m, b in rep.best.items()
    }
    fig = match_figure(
        img_u8,
        tpl_u8,
        hits,
        title=f"template matching, {method} ({'pyramid search' if pyramid else 'single scale'})",
        detections=rep.matches,
    )
    png = _save(fig, out_dir / "match.png")
    result = {**to_jsonable(rep), "files": [png]}
    (out_dir / "match.json").write_text(json.dumps(result, indent=2) + "\n")
    result["files"].append(str(out_dir / "match.json"))
    return result


def _times(saving: float) -> str:
    """'2.37x fewer' for a saving factor > 1, '20.5x more' for one below 1 (never '0.05x fewer')."""
    if saving >= 1:
        return f"{saving:.2f}x fewer"
    return f"{1 / saving:.3g}x more" if saving > 0 else "no saving"


def _blocks_table(title: str, cost: Any) -> Any:
    from rich.table import Table

    t = Table(title=title)
    for col in ("branch", "layers", "output HxWxC", "params", "MACs", "RF"):
        t.add_column(col, justify="right" if col in ("params", "MACs", "RF") else "left")
    for b in cost.branches:
        t.add_row(
            b.name,
            ", ".join(lc.layer for lc in b.layers) or "identity",
            "x".join(map(str, b.output)),
            f"{b.params:,}",
            f"{b.macs:,}",
            str(b.receptive_field),
        )
    t.add_row(
        "total",
        cost.merge,
        "x".join(map(str, cost.output)),
        f"{cost.params:,}",
        f"{cost.macs:,}",
        str(cost.receptive_field),
    )
    return t


def _experiment_files(name: str, result: Any, out_dir: Path) -> list[str]:
    from convlens.plot import vision as pv

    files: list[str] = []
    if name == "vanishing-gradient":
        for key, fig in pv.vanishing_gradient_figures(result).items():
            files.append(_save(fig, out_dir / f"vanishing_gradient_{key}.png"))
    elif name == "pooling":
        files.append(_save(pv.pooling_figure(result), out_dir / "pooling.png"))
    else:
        files.append(_save(pv.depth_resolution_figure(result), out_dir / "depth_vs_resolution.png"))
    path = out_dir / f"{name.replace('-', '_')}.json"
    path.write_text(json.dumps(to_jsonable(result), indent=2) + "\n")
    files.append(str(path))
    return files


def register(app: typer.Typer) -> None:
    """Add this concern's commands to ``app``."""

    @app.command("match")
    def match_cmd(
        image: str = typer.Argument(..., help="Image file to search in."),
        template: str = typer.Argument(..., help="Template image file (what to look for)."),
        method: str = typer.Option(
            "zncc", "--method", help="raw | zncc (| zero_mean): the score reported at top level."
        ),
        pyramid: bool = typer.Option(
            False, "--pyramid", help="Multi-scale search over Gaussian pyramids of image and template."
        ),
        levels: int = typer.Option(
            4, "--levels", help="Image pyramid levels searched with --pyramid (scales 1, 2, 4, ...)."
        ),
        threshold: float | None = typer.Option(
            None, "--threshold", help="Keep detections scoring at least this (ZNCC: -1..1), e.g. 0.8."
        ),
        max_matches: int = typer.Option(
            1, "--max-matches", min=1, help="Detections to keep, best first, after non-maximum suppression."
        ),
        out: str = typer.Option(..., "--out", help="Output folder for match.png and match.json."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON only."),
    ) -> None:
        """Find TEMPLATE in IMAGE by correlation: peak (top-left y, x), score, scale; raw vs ZNCC side by side;
        several detections with --max-matches K and --threshold T (non-maximum suppression, IoU > 0.3)."""
        from convlens.match import METHODS as MATCH_METHODS  # the names come from the registry, never a copy

        check_choice(method, MATCH_METHODS, name="--method")
        if levels < 1:
            raise InputError(f"--levels must be >= 1, got {levels}.")
        result = _match(image, template, method, pyramid, levels, out, threshold, max_matches)
        if as_json:
            print_json(result)
            return
        from rich.table import Table

        con = console()
        t = Table(title="best match per method (peak = top-left y, x in the image)")
        for col in ("method", "peak", "score", "scale", "window mean"):
            t.add_column(col)
        for m, e in result["comparison"].items():
            t.add_row(
                m + (" *" if m == method else ""),
                str(tuple(e["peak"])),
                f"{e['score']:.4g}",
                f"{e['scale']:g}",
                f"{e['window_mean']:.3f}",
            )
        con.print(t)
        con.print(result["explanation"])
        if max_matches > 1 or threshold is not None:
            con.print(f"{len(result['matches'])} detection(s) with {method} (best first):")
            for i, d in enumerate(result["matches"], 1):
                con.print(f"  {i}. peak {tuple(d['peak'])}, score {d['score']:.4g}, scale {d['scale']:g}")
        con.print("wrote " + ", ".join(result["files"]))

    @app.command("pyramid")
    def pyramid_cmd(
        image: str = typer.Argument(..., help="Image file."),
        levels: int | None = typer.Option(
            None,
            "--levels",
            help="Number of levels, including the image itself [default: 5, fewer for images under 16 px].",
        ),
        kind: str = typer.Option("gaussian", "--kind", help="gaussian | laplacian"),
        out: str = typer.Option(..., "--out", help="Output folder for the level images and the overview PNG."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON only."),
    ) -> None:
        """Build a Gaussian (pyrDown) or Laplacian (Burt-Adelson) pyramid and draw its levels."""
        import numpy as np
        from PIL import Image

        from convlens.io import load_image
        from convlens.match import image_to_chw
        from convlens.plot.vision import pyramid_figure
        from convlens.pyramid import KINDS, image_pyramid

        check_choice(kind, KINDS, name="--kind")
        pyr = image_pyramid(image_to_chw(load_image(image)), kind, levels)
        out_dir = ensure_out_dir(out)
        hwc = [np.transpose(a, (1, 2, 0)) for a in pyr.arrays]
        files = []
        for i, a in enumerate(hwc):
            if kind == "laplacian" and i < len(hwc) - 1:
                m = float(np.abs(a).max()) or 1.0
                a = 0.5 + 0.5 * a / m
            files.append(str(out_dir / f"{kind}_level{i}.png"))
            Image.fromarray((np.clip(a, 0, 1) * 255).round().astype(np.uint8)).save(files[-1])
        files.append(_save(pyramid_figure(hwc, kind=kind), out_dir / f"{kind}_pyramid.png"))
        if as_json:
            print_json({**pyr.to_dict(), "files": files})  # + the files written
            return
        con = console()
        for e in pyr.levels:
            con.print(f"level {e.level}: {e.shape[0]}x{e.shape[1]}")
        if pyr.reconstruction_max_abs_error is not None:
            con.print(
                f"reconstruct(levels) differs from the image by at most {pyr.reconstruction_max_abs_error:.3g} (float64)"
            )
        con.print("wrote " + ", ".join(files))

    blocks_app = typer.Typer(
        help="Cost of CNN blocks: output shape, params, MACs, receptive field per branch.",
        no_args_is_help=True,
        add_completion=False,
        rich_markup_mode=None,
    )

    @blocks_app.command("inception")
    def inception_cmd(
        input_: str = typer.Option("28x28x192", "--input", help="Input HxWxC (default: GoogLeNet inception (3a))."),
        widths: str = typer.Option(
            "64,96,128,16,32,32",
            "--widths",
            help="ch1x1,ch3x3red,ch3x3,ch5x5red,ch5x5,pool_proj (GoogLeNet (3a) default).",
        ),
        as_json: bool = typer.Option(False, "--json", help="Print JSON only."),
    ) -> None:
        """Naive vs 1x1-reduced inception block: per-branch shape, params, MACs, receptive field, saving factor."""
        from convlens.blocks import inception_comparison

        hwc = parse_size(input_)
        parts = widths.replace(" ", "").split(",")
        if len(parts) != 6 or not all(p.isdigit() and int(p) > 0 for p in parts):
            raise InputError(
                f"--widths must be six positive integers ch1x1,ch3x3red,ch3x3,ch5x5red,ch5x5,pool_proj; got '{widths}'."
            )
        c = inception_comparison(hwc, *(int(p) for p in parts))
        if as_json:
            print_json(c)
            return
        con = console()
        con.print(_blocks_table(f"inception with 1x1 reductions on {input_}", c.reduced))
        con.print(_blocks_table(f"naive inception on {input_}", c.naive))
        con.print(
            f"1x1 reductions: {c.naive.macs:,} -> {c.reduced.macs:,} MACs ({_times(c.mac_saving)}), "
            f"{c.naive.params:,} -> {c.reduced.params:,} params ({_times(c.param_saving)})."
        )
        if c.mac_saving < 1:
            con.print(
                f"the 1x1 'reductions' widen the input here: {hwc[2]} input channels are fewer than the "
                "3x3/5x5 reduction widths, so they add cost; they pay off on wide inputs (e.g. 192 channels)."
            )
        con.print(c.convention)

    @blocks_app.command("conv1x1")
    def conv1x1_cmd(
        input_: str = typer.Option(..., "--input", help="Input HxWxC, e.g. 28x28x64."),
        filters: int = typer.Option(..., "--filters", help="Output channels of the 1x1 conv."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON only."),
    ) -> None:
        """A 1x1 convolution's output shape, params and MACs next to a 3x3 conv with the same filters."""
        from convlens.blocks import conv1x1_comparison

        c = conv1x1_comparison(parse_size(input_), filters)
        if as_json:
            print_json(c)
            return
        from rich.table import Table

        con = console()
        t = Table(title=f"{input_} -> {filters} filters")
        for col in ("conv", "output HxWxC", "params", "MACs", "RF"):
            t.add_column(col)
        t.add_row("1x1", "x".join(map(str, c.output)), f"{c.params:,}", f"{c.macs:,}", str(c.receptive_field))
        t.add_row(
            "3x3 (pad 1)",
            "x".join(map(str, c.conv3x3.output)),
            f"{c.conv3x3.params:,}",
            f"{c.conv3x3.macs:,}",
            str(c.conv3x3.receptive_field),
        )
        con.print(t)
        con.print(f"the 3x3 conv costs {c.mac_ratio:.2f}x the MACs and {c.param_ratio:.2f}x the params. {c.convention}")

    def _block_cmd(kind: str, input_: str, filters: int | None, stride: int, mid: int | None, as_json: bool) -> None:
        from convlens.blocks import DepthwiseSeparable, ResidualBlock, block_cost

        h, w, c = parse_size(input_)
        f = c if filters is None else filters
        if kind == "depthwise":
            if mid is not None:
                raise InputError("--mid is the bottleneck's middle width; a depthwise block has none.")
            block = DepthwiseSeparable(c, f, stride)
        else:
            block = ResidualBlock(c, f, stride, kind="basic" if kind == "residual" else "bottleneck", mid_channels=mid)
        cost = block_cost(block, (h, w, c))
        if as_json:
            print_json(cost)
            return
        con = console()
        con.print(_blocks_table(f"{kind} block on {input_} -> {f} channels, stride {stride}", cost))
        oh, ow, oc = cost.output
        con.print(
            f"output {oh}x{ow}x{oc}; params {cost.params:,}; MACs {cost.macs:,}; receptive field "
            f"{cost.receptive_field}x{cost.receptive_field} input pixels"
        )
        con.print(cost.convention)

    @blocks_app.command("residual")
    def residual_cmd(
        input_: str = typer.Option(..., "--input", help="Input HxWxC, e.g. 56x56x64."),
        filters: int | None = typer.Option(None, "--filters", min=1, help="Output channels (default: C)."),
        stride: int = typer.Option(1, "--stride", min=1, help="Stride of the first 3x3 conv and the projection."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON only."),
    ) -> None:
        """ResNet's basic block (3x3, 3x3, + shortcut; a 1x1 projection when the shape changes), as
        torchvision's BasicBlock: output, params, MACs, receptive field."""
        _block_cmd("residual", input_, filters, stride, None, as_json)

    @blocks_app.command("bottleneck")
    def bottleneck_cmd(
        input_: str = typer.Option(..., "--input", help="Input HxWxC, e.g. 56x56x256."),
        filters: int | None = typer.Option(None, "--filters", min=1, help="Output channels (default: C)."),
        stride: int = typer.Option(1, "--stride", min=1, help="Stride of the 3x3 conv and the projection."),
        mid: int | None = typer.Option(None, "--mid", min=1, help="Middle width (default: filters // 4)."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON only."),
    ) -> None:
        """ResNet-50's bottleneck (1x1 reduce, 3x3, 1x1 expand, + shortcut), as torchvision's Bottleneck."""
        _block_cmd("bottleneck", input_, filters, stride, mid, as_json)

    @blocks_app.command("depthwise")
    def depthwise_cmd(
        input_: str = typer.Option(..., "--input", help="Input HxWxC, e.g. 112x112x32."),
        filters: int | None = typer.Option(None, "--filters", min=1, help="Output channels (default: C)."),
        stride: int = typer.Option(1, "--stride", min=1, help="Stride of the depthwise conv."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON only."),
    ) -> None:
        """MobileNet's depthwise separable block (depthwise 3x3 + BN + ReLU, pointwise 1x1 + BN + ReLU)."""
        _block_cmd("depthwise", input_, filters, stride, None, as_json)

    app.add_typer(blocks_app, name="blocks")

    @app.command("experiment")
    def experiment_cmd(
        name: str = typer.Argument(..., help="vanishing-gradient | pooling | depth-vs-resolution"),
        out: str = typer.Option(..., "--out", help="Output folder for the PNG plots and the JSON result."),
        quick: bool = typer.Option(False, "--quick", help="Small size (seconds): shorter training, fewer images."),
        seed: int = typer.Option(0, "--seed", help="Seed for data split, inits and data order."),
        device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:1, ..."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON only."),
    ) -> None:
        """Run a live experiment on sklearn digits; writes PNG plots and JSON."""
        from convlens.experiments import EXPERIMENTS, run_experiment

        check_choice(name, sorted(EXPERIMENTS), name="NAME")  # the names come from the registry, never a copy

        result = run_experiment(name, quick=quick, seed=seed, device=device)
        files = _experiment_files(name, result, ensure_out_dir(out))
        if as_json:
            print_json(result)
            return
        con = console()
        for attr in ("setup", "init", "measures"):
            if hasattr(result, attr):
                con.print(f"{attr}: {getattr(result, attr)}")
        for line in result.findings:
            con.print("- " + line)
        con.print(f"({result.seconds:.1f} s) wrote " + ", ".join(files))
