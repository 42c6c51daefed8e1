"""The tour's arithmetic sections. Convolution and pooling arithmetic, computed on small arrays: multi-channel sums, padding, dilation,
output shapes, stride rounding, 1x1 convolutions, max pooling, inception block costs.

Each function computes its topic live through the public convlens API (no canned numbers) and
returns a :class:`~convlens.tour.core.Body`; :mod:`convlens.tour.course` lists them in course order.
"""

from __future__ import annotations

from convlens.report.page import Table, TourFigure  # noqa: F401
from convlens.tour import units
from convlens.tour.core import Body, TourContext

__all__ = [
    "multichannel_convolution",
    "zero_padding",
    "dilation",
    "output_shape",
    "stride_two_rounding",
    "one_by_one_convolution",
    "max_pooling_worked_example",
    "inception_block_costs",
]


def multichannel_convolution(ctx: TourContext) -> Body:
    """q1: How does one 3x3 filter combine the three channels of an RGB image into one output value?"""
    import numpy as np

    from convlens.arith import conv2d, trace
    from convlens.plot.tour import matrix_panels

    # The course's worked example: a 3-channel 5x5 input and ONE 3x3x3 filter (one kernel slice per
    # channel). Red window all 1 x kernel of ones, green all 2 x ones, blue all 3 x a kernel with six ones.
    x = np.stack([np.ones((5, 5)), np.full((5, 5), 2.0), np.full((5, 5), 3.0)])
    w = np.stack([np.ones((3, 3)), np.ones((3, 3)), np.array([[1, 0, 1], [1, 0, 1], [1, 0, 1]], float)])[None]
    t = trace(x, w, 1, 1)
    full = conv2d(x, w)
    names = ("red", "green", "blue")
    panels = []
    for ch in t.channels:
        nm = names[ch.channel]
        panels += [
            (f"{nm} window", ch.window),
            (f"{nm} kernel", ch.kernel),
            (f"{nm} products, sum {ch.sum:g}", ch.products),
        ]
    fig = matrix_panels(
        panels, ncols=3, suptitle=f"output(1,1) = {' + '.join(f'{c.sum:g}' for c in t.channels)} = {t.total:g}"
    )

    # The same mechanism on a real photo: a colour-opponent filter (red minus green) on chelsea.
    img = ctx.image("chelsea")[100:140, 200:240].astype(np.float64) / 255.0  # (40, 40, 3)
    xr = img.transpose(2, 0, 1)  # (3, H, W)
    k = np.ones((3, 3)) / 9
    wr = np.stack([k, -k, np.zeros((3, 3))])[None]  # (1, 3, 3, 3)
    tr = trace(xr, wr, 19, 19)
    real = conv2d(xr, wr)
    body = Body(
        results={
            "input": "3 x 5 x 5 (channels x H x W)",
            "filter": "1 x 3 x 3 x 3",
            "channel sums": [int(c.sum) for c in t.channels],
            "bias": t.bias,
            "total": int(t.total),
            "conv2d output(1,1)": float(full[0, 1, 1]),
            "output shape": list(full.shape),
            "chelsea patch: channel sums at (19,19)": [round(c.sum, 4) for c in tr.channels],
            "chelsea patch: total": round(tr.total, 4),
            "chelsea patch: conv2d value": round(float(real[0, 19, 19]), 4),
        },
        tables=[
            Table(
                ["channel", "window sum", "kernel sum", "sum of products"],
                [[names[c.channel], float(c.window.sum()), float(c.kernel.sum()), c.sum] for c in t.channels]
                + [["total (+ bias)", "", "", t.total]],
                caption="per-channel contributions to output pixel (1, 1)",
            )
        ],
        figures=[
            TourFigure(
                "Each channel's 3x3 window times its own kernel slice; the output is the sum over channels.", fig
            )
        ],
        explanation=(
            "A convolution filter on a C-channel input has C kernel slices, one per channel. Each slice "
            "multiplies its channel's window element by element; the products of ALL channels are summed "
            "(plus one bias) into ONE output value. So a 3x3 filter on RGB has 27 weights and gives a "
            "single-channel map: here red contributes 9, green 18 and blue 18, and the pixel is 45.\n\n"
            "On a real photo patch the same trace with a red-minus-green filter gives the per-channel "
            "contributions above; their sum equals the full convolution's value at that pixel."
        ),
        api=(
            "from convlens.arith import conv2d, trace\n"
            "t = trace(x, w, 1, 1)   # x: (3, 5, 5), w: (1, 3, 3, 3)\n"
            "[c.sum for c in t.channels], t.total   # ([9.0, 18.0, 18.0], 45.0)"
        ),
        cli="convlens conv --input x.json --kernel k.json --trace 1,1",
        files={"x.json": x.tolist(), "k.json": w.tolist()},
    )
    return units.extend(body, units.unit_in_real_model(ctx))


def zero_padding(ctx: TourContext) -> Body:
    """q2: How does zero padding keep a 4x4 input at 4x4 after a 3x3 convolution?"""
    import numpy as np

    from convlens.arith import conv2d, output_shape, pad2d, trace
    from convlens.plot.tour import matrix_panels

    x = np.arange(1, 17, dtype=np.float64).reshape(1, 4, 4)
    w = np.ones((1, 1, 3, 3))
    same = output_shape(4, 3, padding=1)
    valid = output_shape(4, 3, padding=0)
    y = conv2d(x, w, padding=1)
    y0 = conv2d(x, w, padding=0)
    t = trace(x, w, 0, 0, padding=1)
    xp = pad2d(x, same.padding)
    mask = np.ones(xp.shape[1:], bool)
    mask[1:-1, 1:-1] = False
    fig = matrix_panels(
        [
            ("input 4x4 padded with zeros (hatched)", xp[0], mask),
            ("3x3 kernel of ones", w[0, 0]),
            ("output 4x4 (padding 1)", y[0]),
            ("output 2x2 (no padding)", y0[0]),
        ],
        ncols=4,
    )
    return Body(
        results={
            "output": list(same.output[:2]),
            "output without padding": list(valid.output[:2]),
            "padding (top, bottom, left, right)": list(same.padding),
            "formula": same.formula,
            "H axis": same.axes[0].substituted,
            "corner output (0,0)": float(y[0, 0, 0]),
            "padded cells in the corner window": int(t.channels[0].padded.sum()),
        },
        tables=[
            Table(
                ["padding", "output H x W"],
                [[0, "x".join(map(str, valid.output[:2]))], [1, "x".join(map(str, same.output[:2]))]],
            )
        ],
        figures=[TourFigure("A ring of zeros lets the 3x3 window centre on every input pixel.", fig)],
        explanation=(
            "A 3x3 window fits only 2x2 times inside a 4x4 input, so each layer would shrink the map by 2. "
            "Padding one ring of zeros (p = (k-1)/2 = 1) makes the input 6x6, and (4 + 2*1 - 3)/1 + 1 = 4: the "
            "output keeps the input's size. The corner output sums only 4 real pixels: 5 of its 9 taps read padding."
        ),
        api="from convlens.arith import output_shape, conv2d\noutput_shape(4, 3, padding=1).output   # (4, 4, None)\nconv2d(x, w, padding=1)",
        cli="convlens shape --input 4x4x1 --filters 1 --kernel 3 --padding 1",
    )


def dilation(ctx: TourContext) -> Body:
    """q3: What does a 3x3 kernel at dilation 2 see, and what does a 6x6 input give?"""
    import numpy as np

    from convlens.arith import conv2d, output_shape, trace
    from convlens.plot.tour import matrix_panels

    x = np.arange(1, 37, dtype=np.float64).reshape(1, 6, 6)
    w = np.arange(1, 10, dtype=np.float64).reshape(1, 1, 3, 3)
    r = output_shape(6, 3, dilation=2)
    y = conv2d(x, w, dilation=2)
    t = trace(x, w, 0, 0, dilation=2)
    taps = np.zeros((6, 6), bool)
    for i in t.input_rows:
        for j in t.input_cols:
            taps[i, j] = True
    fig = matrix_panels(
        [
            ("6x6 input (taps of output (0,0) hatched)", x[0], taps),
            ("3x3 kernel dilated to 5x5", t.channels[0].dilated_kernel),
            ("output 2x2", y[0]),
        ],
        ncols=3,
    )
    return Body(
        results={
            "output": list(r.output[:2]),
            "effective kernel": r.axes[0].effective_kernel,
            "H axis": r.axes[0].substituted,
            "output (0,0)": float(y[0, 0, 0]),
            "trace total": t.total,
            "input rows read by output (0,0)": list(t.input_rows),
        },
        figures=[
            TourFigure("Dilation 2 spaces the 9 taps two pixels apart: the kernel covers 5x5 with 9 weights.", fig)
        ],
        explanation=(
            "Dilation d inserts d-1 gaps between kernel taps, so a k x k kernel covers k_eff = d(k-1)+1 pixels per side: "
            "3x3 at dilation 2 spans 5x5 with still 9 weights. On a 6x6 input, (6 - 5)/1 + 1 = 2, a 2x2 output. "
            "Dilation grows the receptive field without more parameters or pooling."
        ),
        api="from convlens.arith import output_shape, conv2d, trace\noutput_shape(6, 3, dilation=2).output   # (2, 2, None)",
        cli="convlens shape --input 6x6x1 --filters 1 --kernel 3 --dilation 2",
    )


def output_shape(ctx: TourContext) -> Body:
    """q7: What is the output shape of 128x128x32 convolved with sixteen 3x3x32 filters?"""
    import torch

    from convlens.arith import conv_cost, output_shape

    r = output_shape((128, 128), 3, in_channels=32, out_channels=16)
    cost = conv_cost(32, 16, 3, r.output[:2])
    # live cross-check: the real PyTorch layer gives the same shape
    with torch.random.fork_rng(), torch.no_grad():  # the layer's random init must not touch the caller's RNG
        y = torch.nn.Conv2d(32, 16, 3)(torch.zeros(1, 32, 128, 128))
    return Body(
        results={
            "output (torch)": list(r.output),
            "formula": r.formula,
            "H axis": r.axes[0].substituted,
            "torch.nn.Conv2d output (N, C, H, W)": list(y.shape),
            "params": cost.params,
            "params formula": cost.params_formula,
            "MACs": cost.macs,
            "MACs formula": cost.macs_formula,
            "MAC convention": cost.convention,
        },
        explanation=(
            "Each of the 16 filters has shape 3x3x32 (its depth always equals the input's channels) and gives one "
            "output channel. Without padding, the 3x3 window fits (128 - 3)/1 + 1 = 126 times along each axis, so "
            "the output is 126x126x16: spatial size from the window arithmetic, depth = number of filters."
        ),
        api="from convlens.arith import output_shape, conv_cost\noutput_shape((128, 128), 3, in_channels=32, out_channels=16).output   # (126, 126, 16)",
        cli="convlens shape --input 128x128x32 --filters 16 --kernel 3",
    )


def stride_two_rounding(ctx: TourContext) -> Body:
    """q8: With stride 2, is the output 63x63x16 or 64x64x16?"""
    import torch

    from convlens.arith import output_shape

    rt = output_shape((128, 128), 3, stride=2, in_channels=32, out_channels=16)
    rs = output_shape((128, 128), 3, stride=2, padding="same", convention="tf", in_channels=32, out_channels=16)
    rv = output_shape((128, 128), 3, stride=2, padding="valid", convention="tf", in_channels=32, out_channels=16)
    rp = output_shape((128, 128), 3, stride=2, padding=1, in_channels=32, out_channels=16)
    with torch.random.fork_rng(), torch.no_grad():
        y = torch.nn.Conv2d(32, 16, 3, stride=2)(torch.zeros(1, 32, 128, 128))
    ax = rt.axes[0]
    rows = [
        ["PyTorch, padding 0", "x".join(map(str, rt.output)), ax.substituted, list(rt.padding)],
        ["PyTorch, padding 1", "x".join(map(str, rp.output)), rp.axes[0].substituted, list(rp.padding)],
        ["TensorFlow 'VALID'", "x".join(map(str, rv.output)), rv.axes[0].substituted, list(rv.padding)],
        ["TensorFlow 'SAME'", "x".join(map(str, rs.output)), rs.axes[0].substituted, list(rs.padding)],
    ]
    return Body(
        results={
            "output (torch)": list(rt.output),
            "fraction": ax.exact,
            "rounding": ax.rounding,
            "uncovered input rows": ax.uncovered,
            "output (tf SAME)": list(rs.output),
            "tf SAME padding (top, bottom, left, right)": list(rs.padding),
            "torch.nn.Conv2d(stride=2) output (N, C, H, W)": list(y.shape),
            "notes": list(rt.notes),
        },
        tables=[
            Table(
                ["convention", "output", "H axis", "pads (t, b, l, r)"],
                rows,
                caption="the same layer under each convention",
            )
        ],
        explanation=(
            "(128 - 3)/2 + 1 = 63.5 is not a valid size: a window either fits or it does not, so the formula is "
            "FLOORED to 63 (the last input row is never covered). Rounding 63.5 up to 64 is a common mistake. "
            "64 appears only with TensorFlow's 'SAME' padding, which defines out = ceil(128/2) = 64 and pads "
            "whatever makes that work (here one extra row at the bottom/right)."
        ),
        api=(
            "from convlens.arith import output_shape\n"
            "output_shape((128, 128), 3, stride=2, out_channels=16).output   # (63, 63, 16)\n"
            "output_shape((128, 128), 3, stride=2, padding='same', convention='tf', out_channels=16).output   # (64, 64, 16)"
        ),
        cli="convlens shape --input 128x128x32 --filters 16 --kernel 3 --stride 2\nconvlens shape --input 128x128x32 --filters 16 --kernel 3 --stride 2 --padding same --convention tf",
    )


def one_by_one_convolution(ctx: TourContext) -> Body:
    """q9: How does a 1x1 convolution reduce 28x28x64 to 28x28x32, and what does it cost?"""
    import torch

    from convlens.blocks import Conv1x1, conv1x1_comparison
    from convlens.inspect import summarize

    c = conv1x1_comparison((28, 28, 64), 32)
    # run the real module on a real-sized tensor: (N, C, H, W) = (1, 64, 28, 28) -> (1, 32, 28, 28)
    gen = torch.Generator().manual_seed(ctx.seed)
    with torch.random.fork_rng(), torch.no_grad():  # the layer's random init must not touch the caller's RNG
        y = Conv1x1(64, 32)(torch.randn(1, 64, 28, 28, generator=gen))
    # how much of the embedded model's compute is 1x1 (pointwise) convolutions
    b = ctx.model()
    s = summarize(b.model, b.meta.input_size, name=b.meta.name)
    convs = [r for r in s.layers if r.leaf and r.type == "Conv2d" and r.kernel is not None]
    one = [r for r in convs if tuple(r.kernel) == (1, 1)]
    total_conv_macs = sum(r.macs for r in convs)
    rows = [
        ["1x1 conv, 32 filters", "x".join(map(str, c.output)), c.params, c.macs, c.receptive_field],
        [
            "3x3 conv, 32 filters (padding 1)",
            "x".join(map(str, c.conv3x3.output)),
            c.conv3x3.params,
            c.conv3x3.macs,
            c.conv3x3.receptive_field,
        ],
    ]
    return Body(
        results={
            "output": list(c.output),
            "torch output (N, C, H, W)": list(y.shape),
            "params": c.params,
            "MACs": c.macs,
            "3x3 / 1x1 MACs": round(c.mac_ratio, 3),
            f"{b.meta.name}: 1x1 convs": f"{len(one)} of {len(convs)} conv layers",
            f"{b.meta.name}: share of conv MACs in 1x1 convs": f"{sum(r.macs for r in one) / max(total_conv_macs, 1):.1%}",
            "convention": c.convention,
        },
        tables=[
            Table(
                ["layer", "output HxWxC", "params", "MACs", "receptive field"],
                rows,
                caption="same input 28x28x64, same 32 filters",
            )
        ],
        explanation=(
            "A 1x1 convolution looks at one pixel at a time, but across ALL input channels: each of its 32 filters is a "
            "64-vector, so every output pixel is 32 weighted sums of the 64 channel values at that position. Height and "
            "width are kept (28x28), depth goes from 64 to 32: 64*32 + 32 = 2080 parameters and 28*28*32*64 = 1.6M MACs, "
            "9x cheaper than a 3x3 conv with the same filters. Networks use it to shrink (or grow) the channel "
            "dimension before expensive layers; in EfficientNet-Lite0 the pointwise 1x1 convolutions carry most of the "
            "computation."
        ),
        api="from convlens.blocks import conv1x1_comparison, Conv1x1\nconv1x1_comparison((28, 28, 64), 32)",
        cli="convlens blocks conv1x1 --input 28x28x64 --filters 32",
    )


def max_pooling_worked_example(ctx: TourContext) -> Body:
    """q11: What does 2x2 max pooling with stride 2 compute?"""
    import numpy as np

    from convlens.arith import output_shape, pool2d
    from convlens.plot.tour import matrix_panels

    rng = np.random.default_rng(ctx.seed)
    x = rng.integers(0, 10, size=(1, 4, 4)).astype(np.float64)
    ymax = pool2d(x, "max", 2, 2)
    yavg = pool2d(x, "avg", 2, 2)
    shape = output_shape((4, 4), 2, op="maxpool", stride=2, in_channels=1)
    # hatch the cell each window picked (first maximum in the window)
    picked = np.zeros((4, 4), bool)
    for i in range(2):
        for j in range(2):
            win = x[0, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2]
            a, b = np.unravel_index(np.argmax(win), win.shape)
            picked[2 * i + a, 2 * j + b] = True
    fig = matrix_panels(
        [("4x4 input (maxima hatched)", x[0], picked), ("2x2 max pool", ymax[0]), ("2x2 average pool", yavg[0])],
        ncols=3,
    )
    # a real feature map: pooling a 224x224 photo channel
    img = ctx.image("chelsea").astype(np.float64).transpose(2, 0, 1)[:1] / 255.0
    pooled = pool2d(img, "max", 2, 2)
    return Body(
        results={
            "input": x[0].astype(int).tolist(),
            "max pool output": ymax[0].astype(int).tolist(),
            "average pool output": yavg[0].tolist(),
            "output shape": list(shape.output),
            "values kept": f"{ymax.size} of {x.size} ({ymax.size / x.size:.0%})",
            "chelsea red channel": f"{img.shape[1]}x{img.shape[2]} -> {pooled.shape[1]}x{pooled.shape[2]}",
        },
        figures=[TourFigure("Each non-overlapping 2x2 window keeps its largest value.", fig)],
        explanation=(
            "2x2 max pooling with stride 2 slides a 2x2 window in steps of 2 (no overlap) and keeps each window's "
            "maximum: the map halves in each direction and 75% of the values are dropped. There are no weights; "
            "it keeps the strongest response of each neighbourhood, wherever in the window it was."
        ),
        api="from convlens.arith import pool2d\npool2d(x, 'max', kernel=2, stride=2)",
        cli="convlens pool --input pool_x.json --kind max --kernel 2 --stride 2 --trace 0,0",
        files={"pool_x.json": x.tolist()},
    )


def inception_block_costs(ctx: TourContext) -> Body:
    """q17: What does an inception block cost, and how much do 1x1 reductions save?"""
    import torch

    from convlens.blocks import Inception, inception_comparison
    from convlens.plot import bar_plot

    c = inception_comparison((28, 28, 192))
    with torch.random.fork_rng(), torch.no_grad():
        y = Inception(192)(torch.zeros(1, 192, 28, 28))
    rows = []
    for kind, blk in (("naive", c.naive), ("with 1x1 reductions", c.reduced)):
        for br in blk.branches:
            rows.append(
                [
                    kind,
                    br.name,
                    " -> ".join(l.layer for l in br.layers),
                    "x".join(map(str, br.output)),
                    br.params,
                    br.macs,
                    br.receptive_field,
                ]
            )
        rows.append(
            [kind, "total", blk.merge, "x".join(map(str, blk.output)), blk.params, blk.macs, blk.receptive_field]
        )
    fig = bar_plot(
        {f"naive {br.name}": br.macs for br in c.naive.branches}
        | {f"reduced {br.name}": br.macs for br in c.reduced.branches},
        ylabel="MACs",
        title="inception (3a) on 28x28x192: MACs per branch",
        logy=True,
    )
    return Body(
        results={
            "input": list(c.input),
            "output (reduced)": list(c.output),
            "torch output (N, C, H, W)": list(y.shape),
            "naive MACs": c.naive.macs,
            "reduced MACs": c.reduced.macs,
            "MAC saving (naive / reduced)": round(c.mac_saving, 2),
            "param saving": round(c.param_saving, 2),
            "convention": c.convention,
        },
        tables=[
            Table(
                ["block", "branch", "layers", "output", "params", "MACs", "receptive field"],
                rows,
                caption="GoogLeNet inception (3a): 64 | 96->128 | 16->32 | pool->32",
            )
        ],
        figures=[
            TourFigure(
                "The 5x5 branch dominates the naive block; a 1x1 reduction to 16 channels first makes it cheap.", fig
            )
        ],
        explanation=(
            "An inception block runs several filter sizes side by side (1x1, 3x3, 5x5, and a pooling path) on the same "
            "input and concatenates their outputs along the channels: the next layer gets features of several "
            "receptive fields at once. Done naively on a 192-channel input, the 3x3 and 5x5 branches cost hundreds of "
            "millions of MACs (and the pool branch passes all 192 channels through). Putting a 1x1 convolution before them "
            "(192 -> 96 before the 3x3, 192 -> 16 before the 5x5, and after the pooling) cuts the cost by the factor above "
            "while keeping every receptive field."
        ),
        api="from convlens.blocks import inception_comparison\nc = inception_comparison((28, 28, 192))\nc.naive.macs, c.reduced.macs, c.mac_saving",
        cli="convlens blocks inception --input 28x28x192",
    )
