"""CLI commands for the arithmetic engine: ``shape``, ``conv`` and ``pool`` (see :mod:`convlens.arith`).

Arrays for ``conv``/``pool`` come from a JSON file, a ``.npy`` file or inline JSON: X is [C][H][W]
(or [H][W] for one channel); K is [C][kh][kw] (one filter), [F][C][kh][kw], or [kh][kw].
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from convlens.arith.query import parse_padding, parse_pair
from convlens.cli.common import check_choice, console, print_json
from convlens.errors import InputError

_MAX_SHOW = 16  # largest map side printed as a table; --json has everything


def _parse_pair_text(text: str, name: str) -> int | tuple[int, int]:
    """'3' -> 3, '3x5' or '3,5' -> (3, 5) (see :func:`convlens.arith.query.parse_pair`)."""
    return parse_pair(text, name)


def _parse_padding_text(text: str) -> Any:
    """'valid' | 'same' | 'N' | 'ph,pw' | 'top,bottom,left,right'."""
    return parse_padding(text)


def load_array(text: str, name: str):  # -> np.ndarray
    """Read an array from a .npy file, a JSON file or inline JSON; a clear InputError otherwise."""
    import numpy as np

    from convlens.arith._check import as_float_array

    path = Path(text)
    try:
        is_file = len(text) < 4096 and path.is_file()
    except OSError:  # inline JSON longer than a file name may be (ENAMETOOLONG) is not a path
        is_file = False
    if not is_file and len(text) < 4096 and path.suffix.lower() in (".npy", ".json", ".txt"):
        raise InputError(
            f"{name} file '{text}' does not exist; give a .npy or JSON file, or inline JSON like [[1,2],[3,4]]."
        )
    if is_file and path.suffix.lower() == ".npy":
        try:
            data = np.load(path, allow_pickle=False)
        except Exception as e:  # corrupt file, pickled object array, ...
            raise InputError(f"{name} '{text}' is not a readable .npy array ({type(e).__name__}: {e}).") from None
    else:
        try:
            raw = path.read_text(encoding="utf-8") if is_file else text
            data = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            where = f"file '{text}'" if is_file else f"'{text[:60]}'"
            raise InputError(
                f"{name} must be a .npy file, a JSON file or inline JSON like [[1,2],[3,4]]; {where} is neither ({e})."
            ) from None
        if not isinstance(data, (list, int, float)):
            raise InputError(f"{name} must be a nested JSON list of numbers, got a JSON {type(data).__name__}.")
    return as_float_array(data, name, (0, 1, 2, 3, 4))


def _fmt(v: float) -> str:
    from convlens.serialize import fmt_num

    return fmt_num(v, ".6g")  # never "-0" in a trace


def _matrix(a, padded=None) -> str:
    """A small matrix as aligned text; padded cells get a '*'."""
    cells = [
        [_fmt(v) + ("*" if padded is not None and padded[i, j] else "") for j, v in enumerate(row)]
        for i, row in enumerate(a)
    ]
    width = max(len(c) for row in cells for c in row)
    return "\n".join(" ".join(c.rjust(width) for c in row) for row in cells)


def _print_map(con, title: str, m) -> None:
    from rich.table import Table

    h, w = m.shape
    shown = m[:_MAX_SHOW, :_MAX_SHOW]
    # as many columns as fit the console without cutting numbers ("6.3…"): a cell is its widest value
    # plus 3 characters of borders and padding; the row-index column comes first
    cell = max(len(_fmt(v)) for v in shown.ravel()) + 3
    fit = max(1, (con.width - (len(str(shown.shape[0] - 1)) + 4) - 1) // cell)
    shown = shown[:, :fit]
    cut = f" (top-left {shown.shape[0]}x{shown.shape[1]} of {h}x{w}; --json has all)" if shown.shape != m.shape else ""
    con.print(f"[bold]{title}[/bold]{cut}")
    table = Table(show_header=True, header_style="bold")
    table.add_column("i\\j", justify="right", style="dim")
    for j in range(shown.shape[1]):
        table.add_column(str(j), justify="right")
    for i, row in enumerate(shown):
        table.add_row(str(i), *(_fmt(v) for v in row))
    con.print(table)


def _print_shape(con, r, cost) -> None:
    from rich.table import Table

    what = {"conv": "convolution", "maxpool": "max pooling", "avgpool": "average pooling"}[r.op]
    kh, kw = r.kernel
    h, w, c = r.input
    con.print(
        f"[bold]{what}[/bold] {kh}x{kw}, stride {r.stride[0]}x{r.stride[1]}, dilation {r.dilation[0]}x{r.dilation[1]}"
        + (f", {r.output[2]} filter{'s' if r.output[2] != 1 else ''}" if r.op == "conv" and r.output[2] else "")
        + f" on {h}x{w}x{c} ({r.convention} convention)"
    )
    con.print(f"formula: {r.formula}")
    t = Table(show_header=True, header_style="bold")
    for col in (
        "axis",
        "in",
        "pad before+after",
        "k_eff",
        "stride",
        "exact (before rounding)",
        "rounding",
        "out",
        "never read",
    ):
        t.add_column(col, justify="right")
    for a in r.axes:
        t.add_row(
            a.axis,
            str(a.size),
            f"{a.pad_before}+{a.pad_after}",
            str(a.effective_kernel),
            str(a.stride),
            f"{a.exact:g}" + (f" (= {a.fraction})" if "/" in a.fraction else ""),
            a.rounding,
            str(a.out),
            str(a.uncovered),
        )
    con.print(t)
    for a in r.axes:
        con.print(f"{a.axis}: {a.substituted}")
    for n in r.notes:
        con.print(f"[yellow]why:[/yellow] {n}")
    top, bottom, left, right = r.padding
    con.print(f"padding applied (top, bottom, left, right): ({top}, {bottom}, {left}, {right})")
    oh, ow, oc = r.output
    con.print(f"[bold]output: {oh}x{ow}x{oc}[/bold]")
    if cost is not None:
        con.print(f"params: {cost.params_formula}")
        con.print(f"MACs:   {cost.macs_formula}")
        con.print(f"({cost.convention})")


def _print_trace(con, t) -> None:
    from rich.table import Table

    con.print(
        f"[bold]trace of output[{t.filter}][{t.row}][{t.col}][/bold]: kernel taps read input rows {list(t.input_rows)}, "
        f"cols {list(t.input_cols)} (* = padding cell)"
    )
    table = Table(show_header=True, header_style="bold", show_lines=True)
    for col in ("channel", "window", "kernel", "products", "sum"):
        table.add_column(col, justify="right")
    for ch in t.channels:
        table.add_row(
            str(ch.channel), _matrix(ch.window, ch.padded), _matrix(ch.kernel), _matrix(ch.products), _fmt(ch.sum)
        )
    table.add_row("bias", "", "", "", _fmt(t.bias))
    sums = " + ".join(_fmt(ch.sum) for ch in t.channels) + (f" + {_fmt(t.bias)}" if t.bias else "")
    table.add_row("[bold]total[/bold]", "", "", sums, f"[bold]{_fmt(t.total)}[/bold]")
    con.print(table)
    if any(ch.dilated_kernel.shape != ch.kernel.shape for ch in t.channels):
        con.print(f"dilated kernel of channel {t.channels[0].channel} (holes are 0):")
        con.print(_matrix(t.channels[0].dilated_kernel))


def _print_resample(con, r) -> None:
    h, w, c = r.input
    oh, ow, oc = r.output
    if r.op == "convtranspose":
        kh, kw = r.kernel
        con.print(
            f"[bold]transposed convolution[/bold] {kh}x{kw}, stride {r.stride[0]}x{r.stride[1]}, dilation "
            f"{r.dilation[0]}x{r.dilation[1]}, padding {r.padding}, output_padding {r.output_padding}, {oc} filters "
            f"on {h}x{w}x{c} ({r.convention} convention)"
        )
    else:
        con.print(f"[bold]upsampling[/bold] on {h}x{w}x{c}")
    con.print(f"formula: {r.formula}")
    for a in r.axes:
        con.print(f"{a.axis}: {a.substituted}")
    for n in r.notes:
        con.print(f"[yellow]note:[/yellow] {n}")
    con.print(f"[bold]output: {oh}x{ow}x{oc}[/bold]")
    if r.params is not None:
        con.print(f"params: {r.params:,}   MACs: {r.macs:,}")


def _print_pool_trace(con, t) -> None:
    import numpy as np

    con.print(
        f"[bold]trace of {t.kind} pool output[{t.channel}][{t.row}][{t.col}][/bold]: window reads input rows "
        f"{list(t.input_rows)}, cols {list(t.input_cols)} (* = padding cell)"
    )
    pad_value = -np.inf if t.kind == "max" else 0.0  # max pooling pads with -inf, avg with 0
    vals = np.array([[pad_value if v is None else v for v in row] for row in t.window])
    con.print(_matrix(vals, t.padded))
    if t.kind == "max" and t.argmax is None:
        con.print("the window reads padding only: its max is -inf (no input cell)")
    elif t.argmax is not None:
        i, j = t.argmax
        con.print(
            f"max = {_fmt(t.value)} at window [{i}, {j}] = input ({t.input_rows[i]}, {t.input_cols[j]}); "
            "padding cells never win"
        )
    else:
        con.print(f"mean = {_fmt(t.sum)} / {_fmt(t.divisor)} = {_fmt(t.value)}")


def register(app: typer.Typer) -> None:
    """Add ``shape``, ``conv`` and ``pool``."""

    @app.command("shape")
    def shape_cmd(
        input: str = typer.Option(..., "--input", help="input size HxWxC, e.g. 128x128x32"),
        filters: int | None = typer.Option(None, "--filters", help="number of filters F (conv)"),
        kernel: str | None = typer.Option(None, "--kernel", help="kernel size: 3 or 3x5 (not for upsample)"),
        stride: str | None = typer.Option(
            None, "--stride", help="stride: 2 or 2x1 (default 1 for conv, the kernel for pools)"
        ),
        padding: str = typer.Option("0", "--padding", help="valid | same | N | ph,pw | top,bottom,left,right"),
        dilation: str = typer.Option("1", "--dilation", help="dilation: 2 or 2x1"),
        groups: int = typer.Option(1, "--groups", help="conv groups (for the cost)"),
        op: str = typer.Option("conv", "--op", help="conv | maxpool | avgpool | convtranspose | upsample"),
        output_padding: str | None = typer.Option(
            None, "--output-padding", help="convtranspose: extra rows/cols at the bottom/right (N or ph,pw)"
        ),
        scale: str | None = typer.Option(None, "--scale", help="upsample: factor, e.g. 2 or 2x1.5 (rows x cols)"),
        ceil_mode: bool = typer.Option(False, "--ceil-mode", help="PyTorch pooling ceil_mode"),
        convention: str = typer.Option("torch", "--convention", help="torch (floor) | tf (SAME/VALID)"),
        channels_first: bool = typer.Option(False, "--channels-first", help="--input is CxHxW"),
        bias: bool = typer.Option(True, "--bias/--no-bias", help="count a bias per filter"),
        json_out: bool = typer.Option(False, "--json", help="machine-readable output on stdout"),
    ) -> None:
        """Output shape of a conv or pool layer, derived step by step (formula, fraction, floor, pads)."""
        from convlens.arith.query import shape_query

        q = shape_query(
            input,
            kernel,
            stride=stride,
            padding=padding,
            dilation=dilation,
            filters=filters,
            groups=groups,
            op=op,
            ceil_mode=ceil_mode,
            convention=convention,
            channels_first=channels_first,
            bias=bias,
            output_padding=output_padding,
            scale=scale,
        )
        if json_out:
            print_json(q.to_dict())
            return
        if q.result.op in ("convtranspose", "upsample"):
            _print_resample(console(), q.result)
            return
        _print_shape(console(), q.result, q.cost)

    @app.command("conv")
    def conv_cmd(
        input: str = typer.Option(..., "--input", help="X: [C][H][W] as a JSON file, .npy file or inline JSON"),
        kernel: str = typer.Option(..., "--kernel", help="K: [C][kh][kw] (one filter) or [F][C][kh][kw]"),
        bias: str | None = typer.Option(None, "--bias", help="B: a number or [F] list (JSON/.npy/inline)"),
        stride: str = typer.Option("1", "--stride", help="2 or 2x1"),
        padding: str = typer.Option("0", "--padding", help="valid | same | N | ph,pw | top,bottom,left,right"),
        dilation: str = typer.Option("1", "--dilation", help="2 or 2x1"),
        groups: int = typer.Option(1, "--groups"),
        padding_mode: str = typer.Option("zeros", "--padding-mode", help="zeros | reflect | replicate | circular"),
        trace_at: str | None = typer.Option(
            None, "--trace", help="I,J: explain output element (I, J) channel by channel"
        ),
        filter_index: int = typer.Option(0, "--filter", help="which filter --trace explains"),
        json_out: bool = typer.Option(False, "--json", help="machine-readable output on stdout"),
    ) -> None:
        """Convolve X with K (NumPy float64 reference, same numbers as PyTorch); --trace explains one output."""
        from convlens.arith.run import conv_run

        x = load_array(input, "--input")
        k = load_array(kernel, "--kernel")
        if x.ndim == 2:
            x = x[None]
        if x.ndim != 3:
            raise InputError(f"--input must be [C][H][W] (or [H][W]), got shape {list(x.shape)}.")
        single = k.ndim < 4
        if k.ndim == 2:
            k = k[None, None]
        elif k.ndim == 3:
            k = k[None]
        elif k.ndim != 4:
            raise InputError(f"--kernel must be [C][kh][kw] or [F][C][kh][kw], got shape {list(k.shape)}.")
        b = None
        if bias is not None:
            b = load_array(bias, "--bias").reshape(-1)
            if b.size == 1 and k.shape[0] > 1:
                b = b.repeat(k.shape[0])
        if groups < 1 or x.shape[0] % groups:
            raise InputError(f"--groups must be >= 1 and divide the input's {x.shape[0]} channel(s), got {groups}.")
        if k.shape[1] * groups != x.shape[0]:
            raise InputError(
                f"--kernel has {k.shape[1]} channel(s) per filter but --input has {x.shape[0]} channel(s)"
                + (f" ({groups} groups)" if groups > 1 else "")
                + "; the filter depth must equal the input channels / groups."
            )
        check_choice(padding_mode, ("zeros", "reflect", "replicate", "circular"), name="--padding-mode")
        geo = dict(
            stride=_parse_pair_text(stride, "--stride"),
            padding=_parse_padding_text(padding),
            dilation=_parse_pair_text(dilation, "--dilation"),
            groups=groups,
            padding_mode=padding_mode,
        )
        at = None
        if trace_at is not None:
            parts = trace_at.split(",")
            if len(parts) != 2 or not all(p.strip().lstrip("-").isdigit() for p in parts):
                raise InputError(f"--trace must be I,J (output row, column), got '{trace_at}'.")
            at = (int(parts[0]), int(parts[1]))
        run = conv_run(x, k, b, single=single, trace_at=at, filter=filter_index, **geo)
        if json_out:
            print_json(run.to_dict())
            return
        con = console()
        shape, y, t = run.shape, run.maps, run.trace
        con.print(
            f"{x.shape[0]}x{x.shape[1]}x{x.shape[2]} (CxHxW) * {k.shape[0]} filter(s) {k.shape[1]}x{k.shape[2]}x{k.shape[3]}; "
            f"padding (top, bottom, left, right) {shape.padding}"
        )
        for a in shape.axes:
            con.print(f"{a.axis}: {a.substituted}")
        for f in range(y.shape[0]):
            _print_map(con, f"output of filter {f}: {y.shape[1]}x{y.shape[2]}", y[f])
        if t is not None:
            _print_trace(con, t)

    @app.command("pool")
    def pool_cmd(
        input: str = typer.Option(
            ..., "--input", help="X: [C][H][W] (or [H][W]) as a JSON file, .npy file or inline JSON"
        ),
        kind: str = typer.Option("max", "--kind", help="max | avg"),
        kernel: str = typer.Option("2", "--kernel", help="2 or 2x3"),
        stride: str | None = typer.Option(None, "--stride", help="default: the kernel"),
        padding: str = typer.Option("0", "--padding", help="N or ph,pw (at most kernel//2)"),
        dilation: str = typer.Option("1", "--dilation", help="max pooling only"),
        ceil_mode: bool = typer.Option(False, "--ceil-mode"),
        count_include_pad: bool = typer.Option(
            True, "--count-include-pad/--no-count-include-pad", help="avg: divide by the padded window size"
        ),
        trace_at: str | None = typer.Option(
            None, "--trace", help="I,J: show the window of output (I, J) and which cell won (max) or the mean (avg)"
        ),
        channel: int = typer.Option(0, "--channel", min=0, help="channel traced by --trace"),
        json_out: bool = typer.Option(False, "--json", help="machine-readable output on stdout"),
    ) -> None:
        """Max or average pooling of X, exactly as PyTorch computes it (ceil_mode, padding rules)."""
        from convlens.arith.run import pool_run

        check_choice(kind, ("max", "avg"), name="--kind")
        x = load_array(input, "--input")
        single = x.ndim == 2
        if single:
            x = x[None]
        if x.ndim != 3:
            raise InputError(f"--input must be [C][H][W] (or [H][W]), got shape {list(x.shape)}.")
        pad = _parse_padding_text(padding)
        if isinstance(pad, str) or (isinstance(pad, tuple) and len(pad) == 4):
            raise InputError(f"--padding for pooling must be N or ph,pw, got '{padding}'.")
        at = None
        if trace_at is not None:
            parts = trace_at.split(",")
            if len(parts) != 2 or not all(p.strip().lstrip("-").isdigit() for p in parts):
                raise InputError(f"--trace must be I,J (output row, column), got '{trace_at}'.")
            at = (int(parts[0]), int(parts[1]))
        run = pool_run(
            x,
            kind,
            _parse_pair_text(kernel, "--kernel"),
            single=single,
            stride=None if stride is None else _parse_pair_text(stride, "--stride"),
            padding=pad,
            dilation=_parse_pair_text(dilation, "--dilation"),
            ceil_mode=ceil_mode,
            count_include_pad=count_include_pad,
            trace_at=at,
            channel=channel,
        )
        if json_out:
            print_json(run.to_dict())
            return
        y, t = run.maps, run.trace
        con = console()
        for c in range(y.shape[0]):
            _print_map(con, f"{kind} pool, channel {c}: {y.shape[1]}x{y.shape[2]}", y[c])
        if t is not None:
            _print_pool_trace(con, t)
