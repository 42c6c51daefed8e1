"""The tour's real-model parts: one unit inside the embedded, pretrained EfficientNet-Lite0. They extend
three course sections with what the course's toy examples look like in a real network:

* q1 (multi-channel convolution): :func:`unit_in_real_model`, the exact sum behind one value of the
  first convolution (3x3 on RGB, like the toy filter) and of a 1x1 convolution deep inside, on chelsea;
* q10 (early vs deep layers): :func:`fields_per_stage`, the theoretical box and the effective field of
  the centre unit of each stage (Luo et al. 2016);
* q19 (intermediate activations): :func:`top_patches_of_photos`, the patches of the bundled photos
  that excite six channels most.

Each returns a :class:`Part` that :func:`extend` appends to a section's :class:`~convlens.tour.core.Body`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from convlens.report.page import Table, TourFigure
from convlens.tour.core import Body, TourContext

__all__ = ["Part", "extend", "unit_in_real_model", "fields_per_stage", "top_patches_of_photos"]

#: the bundled photos top_patches ranks (skimage.data)
PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "retina", "hubble_deep_field", "immunohistochemistry")


@dataclass
class Part:
    """What a real-model part adds to a section."""

    results: dict[str, Any] = field(default_factory=dict)
    tables: list[Table] = field(default_factory=list)
    figures: list[TourFigure] = field(default_factory=list)
    explanation: str = ""
    api: str = ""
    cli: str = ""


def extend(body: Body, part: Part) -> Body:
    """``body`` with ``part``'s results, tables, figures and text appended."""
    join = lambda a, b, sep: sep.join(s for s in (a, b) if s)  # noqa: E731
    return replace(
        body,
        results={**body.results, **part.results},
        tables=[*body.tables, *part.tables],
        figures=[*body.figures, *part.figures],
        explanation=join(body.explanation, part.explanation, "\n\n"),
        api=join(body.api, part.api, "\n"),
        cli=join(body.cli, part.cli, "\n"),
    )


def unit_in_real_model(ctx: TourContext) -> Part:
    """q1 in a real network: ``conv_stem`` (3x3 on RGB) and ``blocks.3.0.conv_pw`` (1x1 on 40 channels)."""
    from convlens.inspect import trace_unit
    from convlens.plot.unit import trace_figure

    b = ctx.model()
    x = b.preprocess([ctx.image("chelsea")]).to(b.device)
    stem = trace_unit(b.model, x, "conv_stem", (7, 60, 60))
    pw = trace_unit(b.model, x, "blocks.3.0.conv_pw", (17, 5, 9))
    colours = ("red", "green", "blue")
    pos = {c: k for k, c in enumerate(pw.in_channels)}
    top = sorted(pw.terms, key=lambda t: (-abs(t.sum), t.channel))[:8]
    no_bias = "none (batch norm follows)"
    return Part(
        results={
            "EfficientNet-Lite0 conv_stem (7, 60, 60): channel sums": [round(t.sum, 4) for t in stem.terms],
            "conv_stem: traced total / model's value": f"{stem.total:.5f} / {stem.value:.5f}",
            "blocks.3.0.conv_pw (17, 5, 9): terms": len(pw.terms),
            "blocks.3.0.conv_pw: traced total / model's value": f"{pw.total:.5f} / {pw.value:.5f} (|diff| {pw.abs_error:.1e})",
        },
        tables=[
            Table(
                ["input channel", "sum of patch x kernel"],
                [[colours[t.channel], round(t.sum, 5)] for t in stem.terms]
                + [
                    ["bias", round(stem.bias, 5) if stem.bias is not None else no_bias],
                    ["total", round(stem.total, 5)],
                    ["the model's own value", round(stem.value, 5)],
                ],
                caption="the pretrained EfficientNet-Lite0's first convolution, output channel 7 at row 60, "
                "column 60, on chelsea: the same sum over the R, G and B slices",
            ),
            Table(
                ["input channel", "x (input)", "w (weight)", "x * w"],
                [
                    [
                        t.channel,
                        round(float(pw.patch[pos[t.channel], 0, 0]), 4),
                        round(float(pw.kernel[pos[t.channel], 0, 0]), 4),
                        round(t.sum, 4),
                    ]
                    for t in top
                ],
                caption=f"blocks.3.0.conv_pw, channel 17 at (5, 9): the 8 largest of its {len(pw.terms)} terms "
                f"(a 1x1 convolution: one number per input channel); total {pw.total:.4f}, model {pw.value:.4f}",
            ),
        ],
        figures=[
            TourFigure(
                "The pretrained network's conv_stem on chelsea: each colour's 3x3 patch times its kernel slice "
                "(hatched cells: padding), summed over the channels as in the toy example.",
                trace_figure(stem, top=3),
            )
        ],
        explanation=(
            "Inside a real, pretrained network the arithmetic is the same. `trace_unit` records the operations the "
            "layer really ran on this photo and recomputes one output value from its input patch and the layer's "
            "own weights: the first convolution adds three 3x3 products (one per colour), a 1x1 convolution deep "
            f"inside adds {len(pw.terms)} single products (one per input channel). The traced total equals the "
            "model's own value to float precision."
        ),
        api=(
            "from convlens.inspect import trace_unit\n"
            "t = trace_unit(bundle.model, x, 'blocks.3.0.conv_pw', (17, 5, 9))\n"
            "t.terms, t.bias, t.total, t.value"
        ),
        cli="convlens unit chelsea.png --layer blocks.3.0.conv_pw --at 17,5,9 --out unit/",
    )


def fields_per_stage(ctx: TourContext) -> Part:
    """q10 in a real network: each stage's centre unit, its theoretical box and its effective field."""
    from convlens.inspect import get_activations, trace_unit
    from convlens.plot.unit import field_figure

    b = ctx.model()
    img = ctx.image("chelsea")
    x = b.preprocess([img]).to(b.device)
    view = b.preprocess.resize_image(img)
    acts = {k: v for k, v in get_activations(b.model, x, "stages").items() if v.ndim == 4}
    names = list(acts)
    names = ctx.pick(quick=[names[0], names[len(names) // 2], names[-1]], full=names)
    rows, figs = [], []
    for name in names:
        a = acts[name]
        h, w = a.shape[2:]
        c = int(a[0, :, h // 2, w // 2].argmax())  # the most active channel at the centre: a unit that is on
        t = trace_unit(b.model, x, name, (c, h // 2, w // 2), field=True)
        e = t.erf
        rows.append([name, c, f"{t.rf.size[0]}x{t.rf.size[1]}", list(t.rf.box), e.mass_in_box, e.r50, e.r90])
        if name in (names[0], names[-1]):
            figs.append(
                TourFigure(
                    f"{name}: the centre unit's theoretical receptive field (red box) and its effective field "
                    "|dy/dx| on chelsea.",
                    field_figure(view, t.rf, e),
                )
            )
    return Part(
        results={"effective field r90, first -> last stage (px)": f"{rows[0][6]} -> {rows[-1][6]}"},
        tables=[
            Table(
                [
                    "stage",
                    "channel",
                    "receptive field",
                    "box (top, left, bottom, right)",
                    "mass in box",
                    "r50 px",
                    "r90 px",
                ],
                rows,
                caption="the centre unit of each stage: theoretical box vs effective field (Luo et al. 2016)",
            )
        ],
        figures=figs,
        explanation=(
            "Each unit's theoretical receptive field is a box on the image (from the traced graph, over every path); "
            "deep boxes are larger than the image and reach into the padding. The effective field, the gradient "
            "of the unit with respect to the pixels, lies inside the box but concentrates near its centre: its "
            "r90 (the radius holding 90 % of the gradient mass) is much smaller than the box (Luo et al. 2016)."
        ),
        api=(
            "from convlens.inspect import unit_receptive_field, effective_receptive_field\n"
            "unit_receptive_field(bundle.model, 'blocks.3', (14, 14), 224).box\n"
            "effective_receptive_field(bundle.model, x, 'blocks.3', (0, 14, 14)).r90"
        ),
        cli="convlens unit chelsea.png --layer blocks.3 --at 0,14,14 --out unit/",
    )


def top_patches_of_photos(ctx: TourContext) -> Part:
    """q19 in a real network: the bundled photos' patches that excite six channels of a middle layer most."""
    from convlens.inspect import top_patches
    from convlens.plot.unit import top_patches_figure

    b = ctx.model()
    res = top_patches(
        b, [ctx.image(n) for n in PHOTOS], "blocks.3.0.conv_pw", list(range(6)), k=ctx.pick(quick=5, full=9)
    )
    rows = [
        [c.channel, "; ".join(f"{PHOTOS[p.index]} ({p.y},{p.x}) {p.value:.1f}" for p in c.patches[:3])]
        for c in res.channels
    ]
    return Part(
        results={"top patches": f"{res.k} per channel, 6 channels of blocks.3.0.conv_pw, over {res.images} photos"},
        tables=[
            Table(["channel", "best three: photo (y, x) activation"], rows, caption="dataset examples per channel")
        ],
        figures=[
            TourFigure(
                "One row per channel of blocks.3.0.conv_pw: the patches of the bundled photos that excite it most, "
                "each cropped to the unit's receptive field.",
                top_patches_figure(res),
            )
        ],
        explanation=(
            "A channel's map shows where it fires on one image; over many images, the patches that excite it most "
            "show what it detects (dataset examples, as in DeepVis and OpenAI Microscope). `top_patches` streams a "
            "folder in batches and keeps only the k best per channel."
        ),
        api="from convlens.inspect import top_patches\ntop_patches(bundle, 'photos/', 'blocks.3.0.conv_pw', range(6), k=9)",
        cli="convlens top-patches photos/ --layer blocks.3.0.conv_pw --channels 0-5 --k 9 --out top.png",
    )
