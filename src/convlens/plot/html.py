"""HTML fragments for rich display: tables and figures as self-contained markup (images inline as
``data:`` PNGs, no files, no scripts, no network). The report's tables and every result type's
``_repr_html_`` (Jupyter's display protocol) use these renderers, so a notebook shows what the report
shows.

One renderer per result type; each takes the result object and reads its documented attributes
(this module imports no core package: the result types call it, not the other way round):

- :func:`summary_html` (``Summary``), :func:`shape_html` (``ShapeResult``), :func:`conv_trace_html`
  (``ConvTrace``), :func:`unit_trace_html` (``UnitTrace``), :func:`cam_html` (``CAMResult``),
  :func:`activations_html` (``{layer: tensor}`` from ``get_activations``), :func:`featvis_html`
  (``FeatvisResult``), :func:`training_html` (``TrainRun``).

Example:
    >>> html = table_html(["a", "b"], [[1, 0.123456]], caption="demo")
    >>> html.startswith("<table") and "0.1235" in html
    True
"""

from __future__ import annotations

import base64
import html as _html
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "format_value",
    "esc",
    "table_html",
    "figure_html",
    "image_html",
    "summary_html",
    "shape_html",
    "conv_trace_html",
    "unit_trace_html",
    "cam_html",
    "activations_html",
    "featvis_html",
    "training_html",
]

_STYLE = "font-size:12px;border-collapse:collapse;margin:4px 0"
_CELL = "border:1px solid #dde2ea;padding:2px 6px;text-align:right"


def format_value(v: Any) -> str:
    """A short human form of a live number: 4 significant digits for floats, ints as they are.

    Example:
        >>> format_value(0.123456), format_value(12), format_value([1.0, 2.5])
        ('0.1235', '12', '[1, 2.5]')
    """
    try:
        import torch

        if isinstance(v, torch.Tensor):
            v = v.detach().cpu().numpy()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(v, np.generic):
        v = v.item()
    elif isinstance(v, np.ndarray):
        v = v.tolist()
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        from convlens.serialize import fmt_num

        if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e6):
            return fmt_num(v, ".3e")
        return fmt_num(v, ".4g")  # never "-0"
    if isinstance(v, (list, tuple)):
        inner = ", ".join(format_value(x) for x in v[:16])
        return f"[{inner}{', ...' if len(v) > 16 else ''}]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {format_value(x)}" for k, x in list(v.items())[:16]) + "}"
    return str(v)


def esc(s: Any) -> str:
    """HTML-escape any value's ``str``.

    Example:
        >>> esc("<b>")
        '&lt;b&gt;'
    """
    return _html.escape(str(s), quote=True)


def table_html(
    columns: Sequence[str], rows: Sequence[Sequence[Any]], caption: str = "", *, inline_style: bool = False
) -> str:
    """A table; cells through :func:`format_value`. ``inline_style`` adds borders for notebooks (no stylesheet).

    Example:
        >>> "<th>x</th>" in table_html(["x"], [[1]])
        True
    """
    ts = f' style="{_STYLE}"' if inline_style else ""
    cs = f' style="{_CELL}"' if inline_style else ""
    parts = [f"<table{ts}>"]
    if caption:
        parts.append(f"<caption>{esc(caption)}</caption>")
    parts.append("<thead><tr>" + "".join(f"<th{cs}>{esc(c)}</th>" for c in columns) + "</tr></thead><tbody>")
    for row in rows:
        parts.append("<tr>" + "".join(f"<td{cs}>{esc(format_value(v))}</td>" for v in row) + "</tr>")
    parts.append("</tbody></table>")
    return "".join(parts)


def _png_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def figure_html(fig: Any, alt: str = "", *, dpi: int = 80) -> str:
    """A matplotlib figure as an inline ``<img>`` (the figure is closed afterwards).

    Example:
        >>> from matplotlib.figure import Figure
        >>> figure_html(Figure(figsize=(1, 1))).startswith('<img src="data:image/png;base64,')
        True
    """
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, facecolor="white", bbox_inches="tight")
    try:
        import matplotlib.pyplot as plt

        plt.close(fig)
    except Exception:  # a Figure made without pyplot is not registered there  # noqa: S110
        pass
    return f'<img src="{_png_uri(buf.getvalue())}" alt="{esc(alt)}" style="max-width:100%">'


def image_html(array: np.ndarray, alt: str = "") -> str:
    """An (H, W, 3) uint8 image as an inline ``<img>``.

    Example:
        >>> image_html(np.zeros((2, 2, 3), np.uint8)).startswith("<img")
        True
    """
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(array)).save(buf, format="PNG")
    return f'<img src="{_png_uri(buf.getvalue())}" alt="{esc(alt)}">'


def _box(title: str, body: str) -> str:
    return f'<div class="convlens"><b>{esc(title)}</b>{body}</div>'


def _pair(v: Any) -> str:
    if v is None:
        return "-"
    a, b = v
    return f"{a}" if a == b else f"{a}x{b}"


# ---------------------------------------------------------------------------------------- result types
def summary_html(summary: Any, depth: int | None = 3) -> str:
    """A layer summary (``convlens.inspect.Summary``) as the CLI's table: shapes, params, MACs, k/s/p/d, RF, jump.

    Example:
        >>> import torch
        >>> from convlens.inspect import summarize
        >>> "MACs" in summary_html(summarize(torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3)), (3, 8, 8)))
        True
    """
    rows = []
    for r in summary.at_depth(depth):
        win = "-" if r.kernel is None else "/".join(_pair(v) for v in (r.kernel, r.stride, r.padding, r.dilation))
        rows.append(
            [
                "\u00a0\u00a0" * (r.depth - 1) + r.name + (f" #{r.call}" if r.call else ""),
                r.type,
                "x".join(map(str, r.output_shape or ())),
                f"{r.params:,}",
                f"{r.macs:,}",
                win,
                _pair(r.receptive_field) + ("" if r.rf_exact else "~"),
                _pair(r.jump) if r.jump is not None else "global",
            ]
        )
    h, w, c = summary.input_shape
    table = table_html(
        ["layer", "type", "output HxWxC", "params", "MACs", "k/s/p/d", "RF", "jump"], rows, inline_style=True
    )
    foot = (
        f"<p>total params {summary.total_params:,} (trainable {summary.trainable_params:,}); "
        f"total MACs {summary.total_macs:,} ({summary.total_macs / 1e9:.3f} G)</p>"
    )
    return _box(f"{summary.model} on {h}x{w}x{c} (HxWxC)", table + foot)


def shape_html(r: Any) -> str:
    """An output-shape derivation (``convlens.arith.ShapeResult``): formula, per-axis numbers, notes.

    Example:
        >>> from convlens.arith import output_shape
        >>> "63" in shape_html(output_shape((128, 128), 3, stride=2))
        True
    """
    rows = [
        [
            a.axis,
            a.size,
            f"{a.pad_before}+{a.pad_after}",
            a.effective_kernel,
            a.stride,
            a.fraction,
            a.rounding,
            a.out,
            a.uncovered,
        ]
        for a in r.axes
    ]
    table = table_html(
        ["axis", "in", "pad before+after", "k_eff", "stride", "exact", "rounding", "out", "never read"],
        rows,
        inline_style=True,
    )
    subs = "".join(f"<div><code>{esc(a.axis)}: {esc(a.substituted)}</code></div>" for a in r.axes)
    notes = "".join(f"<p>{esc(n)}</p>" for n in r.notes)
    out = "x".join("?" if v is None else str(v) for v in r.output)
    return _box(
        f"{r.op} {_pair(r.kernel)}, stride {_pair(r.stride)} ({r.convention}): output {out}",
        f"<p><code>{esc(r.formula)}</code></p>{table}{subs}{notes}",
    )


def conv_trace_html(t: Any) -> str:
    """One output of the reference convolution (``convlens.arith.ConvTrace``): per-channel sums + bias = total.

    Example:
        >>> from convlens.arith import trace
        >>> "total" in conv_trace_html(trace(np.ones((1, 3, 3)), np.ones((1, 1, 2, 2)), 0, 0))
        True
    """
    rows = [[ch.channel, format_value(ch.sum)] for ch in t.channels] + [["bias", t.bias], ["total", t.total]]
    sums = " + ".join(format_value(ch.sum) for ch in t.channels)
    return _box(
        f"output[{t.filter}][{t.row}][{t.col}] = {sums} + {format_value(t.bias)} = {format_value(t.total)}",
        table_html(["input channel", "Σ window × kernel"], rows, inline_style=True),
    )


def unit_trace_html(t: Any, top: int = 4) -> str:
    """One unit of a real network (``convlens.inspect.UnitTrace``): the terms, bias, total and the check.

    Example:
        >>> import torch
        >>> from convlens.inspect import trace_unit
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(2, 1, 3))
        >>> "traced total" in unit_trace_html(trace_unit(net, torch.ones(1, 2, 5, 5), "0", (0, 1, 1)))
        True
    """
    terms = sorted(t.terms, key=lambda s: (-abs(s.sum), s.channel))
    rows = [[s.channel, s.sum, s.source or ""] for s in terms[:16]]
    more = f"<p>... {len(terms) - 16} more terms</p>" if len(terms) > 16 else ""
    check = "ok" if t.abs_error < 1e-4 else "MISMATCH"
    body = (
        f"<p><code>{esc(t.formula)}</code></p>"
        + table_html(["input", "sum", "from"], rows, inline_style=True)
        + more
        + f"<p>bias {format_value(t.bias)}; traced total {format_value(t.total)}; model value "
        f"{format_value(t.value)}; |difference| {t.abs_error:.2e} ({check})</p>"
    )
    if getattr(t, "patch", None) is not None and t.kernel is not None:
        try:
            from convlens.plot.unit import trace_figure

            body += figure_html(trace_figure(t, top=top), "patch x kernel per input channel")
        except Exception as e:  # a figure that cannot be drawn must not hide the numbers  # noqa: BLE001
            body += f"<p>(no figure: {esc(e)})</p>"
    at = ",".join(map(str, t.at))
    return _box(f"{t.layer} [{at}]: {t.op} ({t.kind})", body)


def cam_html(res: Any, labels: Sequence[str] | None = None, cols: int = 4) -> str:
    """A CAM run (``convlens.explain.CAMResult``): one heat map per image with its target and score.

    Example:
        >>> from types import SimpleNamespace
        >>> import torch
        >>> r = SimpleNamespace(maps=torch.rand(2, 8, 8), targets=torch.tensor([1, 2]), scores=torch.zeros(2),
        ...                     probs=None, method="gradcam", layers=["x"])
        >>> cam_html(r).count("<img")
        1
    """
    from convlens.plot import apply_colormap, image_grid

    maps = np.asarray(res.maps.detach().float().cpu().numpy() if hasattr(res.maps, "detach") else res.maps)
    targets = [
        int(t) for t in np.asarray(res.targets.cpu() if hasattr(res.targets, "cpu") else res.targets).reshape(-1)
    ]
    vals = res.probs if res.probs is not None else res.scores
    vals = [float(v) for v in np.asarray(vals.cpu() if hasattr(vals, "cpu") else vals).reshape(-1)]
    titles = []
    for t, v in zip(targets, vals, strict=False):
        name = labels[t] if labels is not None and 0 <= t < len(labels) else f"class {t}"
        titles.append(f"{name} ({'p' if res.probs is not None else 'score'} {v:.3g})")
    tiles = [apply_colormap(m, "turbo") for m in maps[:32]]
    fig = image_grid(tiles, titles=titles[: len(tiles)], ncols=min(cols, len(tiles)), tile_inches=2.0)
    more = f"<p>first 32 of {len(maps)} maps</p>" if len(maps) > 32 else ""
    listed = "<p>" + "; ".join(f"image {i}: {esc(t)}" for i, t in enumerate(titles[:32])) + "</p>"
    return _box(
        f"{res.method} on {', '.join(res.layers)}: {len(maps)} map(s) in [0, 1]",
        figure_html(fig, "CAM maps") + listed + more,
    )


def activations_html(acts: Mapping[str, Any], channels: int = 16, max_layers: int = 8) -> str:
    """Intermediate activations (``{layer: (N, C, H, W)}``): the most active channels of each layer, first image.

    Example:
        >>> import torch
        >>> activations_html({"conv": torch.rand(1, 4, 6, 6), "fc": torch.rand(1, 10)}).count("<img")
        1
    """
    from convlens.plot.inspect import activation_grid

    parts = []
    shown = 0
    for name, t in acts.items():
        shape = tuple(t.shape)
        if len(shape) != 4:
            parts.append(f"<p>{esc(name)}: {esc('x'.join(map(str, shape[1:])))} (not a spatial map)</p>")
            continue
        if shown >= max_layers:
            parts.append(
                f"<p>{esc(name)}: {shape[2]}x{shape[3]}x{shape[1]} (not drawn: first {max_layers} layers only)</p>"
            )
            continue
        a = t[0].detach().float().cpu()
        order = a.mean((1, 2)).argsort(descending=True)[:channels].tolist()
        title = f"{name}  {shape[2]}x{shape[3]}x{shape[1]} (HxWxC): {len(order)} most active channels"
        parts.append(figure_html(activation_grid(a.numpy(), order, title=title), name))
        shown += 1
    return _box(f"activations of {len(acts)} layer(s)", "".join(parts))


def featvis_html(res: Any) -> str:
    """Feature visualizations (``convlens.featvis.FeatvisResult``): one image per channel with its objective value.

    Example:
        >>> from types import SimpleNamespace
        >>> import torch
        >>> r = SimpleNamespace(images=torch.rand(2, 3, 8, 8), keys=[0, 1], values=torch.ones(2), layer="l", objective="channel", recipe="lucid")
        >>> featvis_html(r).count("<img")
        1
    """
    from convlens.plot.featvis import featvis_grid

    values = [float(v) for v in res.values]
    fig = featvis_grid(res.images, list(res.keys), values=values)
    recipe = getattr(res.recipe, "name", res.recipe)
    layer = ", ".join(res.layer) if isinstance(res.layer, (list, tuple)) else str(res.layer)
    keys = ", ".join(str(k) for k in res.keys)
    return _box(
        f"feature visualization of {layer}, channels {keys} ({recipe}): objective {res.objective}",
        figure_html(fig, "feature visualizations"),
    )


def training_html(run: Any) -> str:
    """A training run (``convlens.train.TrainRun``): the final numbers and the learning curves.

    Example:
        >>> from types import SimpleNamespace
        >>> h = [{"epoch": 1, "train_loss": 1.0, "val_loss": 1.1, "train_accuracy": 0.5, "val_accuracy": 0.4}]
        >>> r = SimpleNamespace(result=SimpleNamespace(strategy="head", epochs_done=1, train_loss=1.0, val_loss=1.1,
        ...                     val_accuracy=0.4, images_per_s=10.0), history=h, seconds=1.0)
        >>> "val_accuracy" in training_html(r)
        True
    """
    from convlens.plot.train import learning_curves

    r = run.result
    keys = ["strategy", "epochs_done", "train_loss", "val_loss", "val_accuracy", "images_per_s"]
    table = table_html(["", "value"], [[k, getattr(r, k)] for k in keys], inline_style=True)
    fig = figure_html(learning_curves(run.history, title=f"{r.strategy}"), "learning curves") if run.history else ""
    return _box(f"training run ({r.strategy}, {r.epochs_done} epochs, {run.seconds:.1f} s)", table + fig)
