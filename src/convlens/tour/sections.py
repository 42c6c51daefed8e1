"""The tour's sections, in course order (q1..q21). Each computes its topic live through the public
convlens API (no canned numbers) and returns a :class:`~convlens.tour.core.Body`; the ``@section``
decorator registers it with its title and one-line question.

Example:
    >>> from convlens.tour.core import SECTIONS
    >>> [SECTIONS[k].id for k in sorted(SECTIONS)][:3]
    ['q1', 'q2', 'q3']
"""

from __future__ import annotations

from convlens.tour.core import Body, Table, TourContext, TourFigure, section

__all__: list[str] = []


def _depth_profile(ctx: TourContext):
    """The embedded model's depth profile on chelsea, computed once and shared by q6 and q10."""
    if "depth_profile" not in ctx.cache:
        from convlens.inspect import depth_profile

        b = ctx.model()
        x = b.preprocess([ctx.image("chelsea")]).to(b.device)
        ctx.cache["depth_profile"] = depth_profile(b.model, x, "stages", name=b.meta.name)
    return ctx.cache["depth_profile"]


def _lfw_config(ctx: TourContext):
    from convlens.train import TrainConfig

    return TrainConfig(
        data="lfw",
        model="efficientnet_lite0",
        epochs=ctx.pick(quick=3, full=6),
        image_size=ctx.pick(quick=32, full=64),
        batch_size=32,
        seed=ctx.seed,
        device=ctx.device,
    )


def _lfw_runs(ctx: TourContext) -> dict:
    """One training run per strategy on lfw (shared by q14-q16): strategy -> TrainRun."""
    if "lfw_runs" not in ctx.cache:
        import dataclasses

        from convlens.train.run import run_training, strategy_dirname

        cfg = _lfw_config(ctx)
        strategies = ctx.pick(
            quick=["scratch", "features", "finetune"],
            full=["scratch", "scratch+aug", "features", "frozen+aug", "finetune"],
        )
        runs = {}
        for s in strategies:
            runs[s] = run_training(dataclasses.replace(cfg, strategy=s), ctx.workdir / "lfw" / strategy_dirname(s))
        ctx.cache["lfw_runs"] = runs
    return ctx.cache["lfw_runs"]


def _train_cli(ctx: TourContext, strategies: str) -> str:
    cfg = _lfw_config(ctx)
    return f"convlens train --data lfw --compare {strategies} --epochs {cfg.epochs} --image-size {cfg.image_size} --seed {cfg.seed} --out runs/lfw"


@section(
    1,
    "Multi-channel convolution",
    "How does one 3x3 filter combine the three channels of an RGB image into one output value?",
    needs=("convlens.arith",),
)
def q1(ctx: TourContext) -> Body:
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
    return Body(
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
    )


@section(
    2,
    "Zero padding",
    "How does zero padding keep a 4x4 input at 4x4 after a 3x3 convolution?",
    needs=("convlens.arith",),
)
def q2(ctx: TourContext) -> Body:
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


@section(
    3,
    "Dilation",
    "What does a 3x3 kernel at dilation 2 see, and what does a 6x6 input give?",
    needs=("convlens.arith",),
)
def q3(ctx: TourContext) -> Body:
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


@section(
    4,
    "Template matching",
    "Why is convolution template matching: where does a filter respond most?",
    needs=("convlens.match",),
)
def q4(ctx: TourContext) -> Body:
    import numpy as np
    import skimage.color

    from convlens.match import find_template
    from convlens.plot.tour import image_panels

    gray = skimage.color.rgb2gray(ctx.image("chelsea"))  # (300, 451) in [0, 1]
    y, x, h, w = 80, 120, 40, 60  # the cat's eye and nose
    template = gray[y : y + h, x : x + w]
    # search a harder copy: half contrast, a left-to-right illumination ramp, and noise
    rng = np.random.default_rng(ctx.seed)
    search = 0.5 * gray + 0.5 * np.linspace(0.0, 1.0, gray.shape[1])[None, :] + rng.normal(0.0, 0.05, gray.shape)
    res = {m: find_template(search, template, m) for m in ("raw", "zero_mean", "zncc")}
    rows = [[m, list(r.peak), r.score, bool(r.peak == (y, x))] for m, r in res.items()]
    raw, zncc = res["raw"], res["zncc"]
    fig = image_panels(
        [
            (
                "peaks: raw (red), ZNCC (blue); truth (green)",
                search,
                [(y, x, h, w, "lime"), (*raw.peak, h, w, "red"), (*zncc.peak, h, w, "deepskyblue")],
            ),
            ("raw correlation", raw.response),
            ("ZNCC", zncc.response),
        ],
        ncols=3,
        colorbar=True,
        tile_inches=3.6,
    )
    return Body(
        results={
            "template (y, x, h, w)": [y, x, h, w],
            "raw peak": list(raw.peak),
            "zero-mean peak": list(res["zero_mean"].peak),
            "ZNCC peak": list(zncc.peak),
            "ZNCC score": zncc.score,
            "ZNCC finds the template": bool(zncc.peak == (y, x)),
            "raw correlation finds it": bool(raw.peak == (y, x)),
        },
        tables=[Table(["method", "peak (y, x)", "score", "correct"], rows, caption="one template, three responses")],
        figures=[
            TourFigure(
                "Convolution with the template as kernel is a similarity map; only the normalized version is fooled by nothing.",
                fig,
            )
        ],
        explanation=(
            "A convolution (strictly, a cross-correlation) with a filter computes, at every position, the dot product "
            "of the filter with the window under it: the response is largest where the window looks like the filter, "
            "so a filter is a template and its feature map says where that pattern occurs. The raw dot product also "
            "grows with brightness, so it peaks on the brightest region rather than the template. Subtracting the "
            "means and dividing by the norms (ZNCC, a Pearson correlation in [-1, 1]) removes brightness and contrast, "
            "and the peak lands on the template."
        ),
        api="from convlens.match import find_template\nfind_template(image, template, 'raw').peak\nfind_template(image, template, 'zncc').peak",
        cli="convlens match chelsea.png template.png --method zncc --out match/\nconvlens match chelsea.png template.png --method raw --out match/",
    )


@section(
    5,
    "Pyramid multi-scale search",
    "How does an image pyramid let a fixed-size window find an object at another scale?",
    needs=("convlens.pyramid", "convlens.match"),
)
def q5(ctx: TourContext) -> Body:
    import numpy as np
    import skimage.color
    from PIL import Image

    from convlens.match import find_template_multiscale
    from convlens.plot import image_grid
    from convlens.pyramid import gaussian_pyramid, laplacian_pyramid, reconstruct

    gray = skimage.color.rgb2gray(ctx.image("chelsea"))
    y, x, h, w = 80, 120, 40, 60
    template = gray[y : y + h, x : x + w]

    def rescale(a: np.ndarray, f: float) -> np.ndarray:
        img = Image.fromarray(a.astype(np.float32), mode="F")
        return np.asarray(img.resize((round(a.shape[1] * f), round(a.shape[0] * f)), Image.BILINEAR), dtype=np.float64)

    rows = []
    for f in ctx.pick(quick=(0.5, 2.0), full=(0.5, 1.0, 2.0)):
        m = find_template_multiscale(rescale(gray, f), template, "zncc", levels=3, template_levels=2)
        rows.append([f, list(m.peak), [round(y * f), round(x * f)], m.scale, m.score])
    levels = 4
    g = gaussian_pyramid(gray, levels)
    lap = laplacian_pyramid(gray, levels)
    err = float(np.abs(reconstruct(lap) - gray).max())
    fig_g = image_grid(
        [np.asarray(a) for a in g],
        titles=[f"level {i}: {a.shape[0]}x{a.shape[1]}" for i, a in enumerate(g)],
        cmap="gray",
        tile_inches=2.4,
    )
    fig_l = image_grid(
        [np.asarray(a) for a in lap], titles=[f"Laplacian {i}" for i in range(levels)], cmap="RdBu_r", tile_inches=2.4
    )
    return Body(
        results={
            "template size": [h, w],
            "Gaussian pyramid sizes": [list(np.asarray(a).shape) for a in g],
            "Laplacian reconstruction max |error|": err,
            "found at the right place and scale": all(r[1] == r[2] and r[3] == r[0] for r in rows),
        },
        tables=[
            Table(
                ["image rescaled by", "found top-left (y, x)", "expected", "scale found", "ZNCC"],
                rows,
                caption="one 40x60 template, the image shrunk or enlarged",
            )
        ],
        figures=[
            TourFigure("Gaussian pyramid: blur with [1 4 6 4 1]/16, keep every second pixel.", fig_g),
            TourFigure(
                "Laplacian pyramid: each level minus the expanded next one; summing back reconstructs the image exactly.",
                fig_l,
            ),
        ],
        explanation=(
            "A filter (or template) has a fixed size, so it only matches objects of that size. Instead of building "
            "filters for every size, shrink the image: on pyramid level l the same window covers an object 2^l times "
            "larger in the original. Searching every level and mapping the hit back (multiply by 2^l) finds the cat's "
            "face in the enlarged image at scale 2; shrinking the template instead finds it in the halved image at "
            "scale 0.5. CNNs do the same internally: pooling and strides build a pyramid of feature maps."
        ),
        api=(
            "from convlens.pyramid import gaussian_pyramid, laplacian_pyramid, reconstruct\n"
            "from convlens.match import find_template_multiscale\n"
            "m = find_template_multiscale(image, template, 'zncc', levels=3)\nm.peak, m.scale"
        ),
        cli="convlens match chelsea_x2.png template.png --pyramid --out match/ --json\nconvlens pyramid chelsea.png --levels 4 --kind laplacian --out pyramid/",
    )


@section(
    6,
    "Depth vs resolution",
    "Why do channels grow while the spatial resolution shrinks in a real network?",
    needs=("convlens.inspect",),
)
def q6(ctx: TourContext) -> Body:
    from convlens.plot.inspect import depth_profile_figure

    p = _depth_profile(ctx)
    rows = [
        [
            s.name,
            f"{s.spatial[0]}x{s.spatial[1]}",
            s.channels,
            s.spatial[0] * s.spatial[1],
            s.activations,
            s.weights,
            s.macs,
            s.receptive_field[0] if s.receptive_field else None,
            s.jump[0] if s.jump else None,
        ]
        for s in p.stages
    ]
    first, last = p.stages[0], p.stages[-1]
    return Body(
        results={
            "model": p.model,
            "input (HxWxC)": list(p.input_shape),
            "stages": len(p.stages),
            "spatial positions, first -> last stage": f"{first.spatial[0] * first.spatial[1]} -> {last.spatial[0] * last.spatial[1]} "
            f"({first.spatial[0] * first.spatial[1] / (last.spatial[0] * last.spatial[1]):.0f}x fewer)",
            "channels, first -> last stage": f"{first.channels} -> {last.channels} ({last.channels / first.channels:.0f}x more)",
            "activations H*W*C, first -> last": f"{first.activations} -> {last.activations}",
            "weights, first -> last stage": f"{first.weights} -> {last.weights}",
            "head weights": p.head_weights,
        },
        tables=[
            Table(
                ["stage", "H x W", "C", "H*W", "activations H*W*C", "weights", "MACs", "receptive field", "jump"],
                rows,
                caption="one layer per resolution of EfficientNet-Lite0 on a 224x224 photo",
            )
        ],
        figures=[
            TourFigure(
                "Resolution falls while channels rise; activations shrink while weights grow; each unit sees more of the image.",
                depth_profile_figure(p, title=f"{p.model}: depth vs resolution"),
            )
        ],
        explanation=(
            "Every stride-2 stage divides the positions H*W by 4. If channels stayed fixed, each stage would carry 4x "
            "less information; networks compensate by adding channels as they go deeper (here 16 -> 320), so the "
            "activation volume falls gently while the number of weights per stage grows. Deep units see large parts of "
            "the image (receptive field in the table) and need many channels to describe many combinations of parts; "
            "early units see small patches, where a few edge and colour detectors suffice at full resolution. "
            "Computation stays affordable because the expensive many-channel layers run on small maps."
        ),
        api="from convlens.inspect import depth_profile\np = depth_profile(bundle.model, bundle.preprocess([image]))\n[(s.name, s.spatial, s.channels, s.weights) for s in p.stages]",
        cli="convlens depth-profile chelsea.png --out depth/",
    )


@section(
    7,
    "Output shape",
    "What is the output shape of 128x128x32 convolved with sixteen 3x3x32 filters?",
    needs=("convlens.arith",),
)
def q7(ctx: TourContext) -> Body:
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


@section(8, "Stride 2: 63 or 64?", "With stride 2, is the output 63x63x16 or 64x64x16?", needs=("convlens.arith",))
def q8(ctx: TourContext) -> Body:
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


@section(
    9,
    "1x1 convolution",
    "How does a 1x1 convolution reduce 28x28x64 to 28x28x32, and what does it cost?",
    needs=("convlens.blocks",),
)
def q9(ctx: TourContext) -> Body:
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


@section(
    10, "Early vs deep layers", "What do early layers detect compared with deep ones?", needs=("convlens.inspect",)
)
def q10(ctx: TourContext) -> Body:
    from convlens.plot.inspect import activation_grid, kernel_tiles

    p = _depth_profile(ctx)
    early, deep = p.stages[0], p.stages[-1]
    figs = []
    if p.kernels is not None:
        figs.append(
            TourFigure(
                f"The first convolution's {p.kernels.shape[0]} kernels ({p.first_conv}) as RGB tiles: oriented edges and colour contrasts.",
                kernel_tiles(p.kernels, title=f"{p.first_conv} kernels"),
            )
        )
    n = ctx.pick(quick=8, full=16)
    for s in (early, deep):
        m = p.maps[s.name][0] if p.maps[s.name].ndim == 4 else p.maps[s.name]
        chans = m.float().flatten(1).mean(1).argsort(descending=True)[:n].tolist()
        figs.append(
            TourFigure(
                f"{s.name} ({s.spatial[0]}x{s.spatial[1]}x{s.channels}, receptive field {s.receptive_field[0] if s.receptive_field else '?'} px): the {n} most active channels.",
                activation_grid(m, chans, title=f"{s.name} on chelsea"),
            )
        )
    rows = [
        [
            s.name,
            f"{s.spatial[0]}x{s.spatial[1]}",
            s.receptive_field[0] if s.receptive_field else None,
            s.mean_frequency,
            s.high_frequency,
            s.mean_frequency_input,
        ]
        for s in p.stages
    ]
    return Body(
        results={
            "first conv": p.first_conv,
            "first-layer kernels": list(p.kernels.shape) if p.kernels is not None else None,
            f"receptive field {early.name} -> {deep.name} (px)": f"{early.receptive_field[0] if early.receptive_field else '?'} -> {deep.receptive_field[0] if deep.receptive_field else '?'}",
            "mean frequency per input pixel, early -> deep": f"{early.mean_frequency_input:.4f} -> {deep.mean_frequency_input:.4f}"
            if early.mean_frequency_input and deep.mean_frequency_input
            else None,
        },
        tables=[
            Table(
                [
                    "stage",
                    "H x W",
                    "receptive field (px)",
                    "mean frequency (cycles/map px)",
                    "high-frequency share",
                    "mean frequency (cycles/input px)",
                ],
                rows,
                caption="spatial-frequency content of each stage's maps",
            )
        ],
        figures=figs,
        explanation=(
            "The first layer's kernels are small oriented edge, line and colour-opponent detectors (the same kinds of "
            "filters found in every CNN trained on photos). Early maps are sharp, high-resolution copies of the image "
            "where edges and textures light up; each unit sees only a few pixels. Deep maps are coarse (7x7 here), each "
            "unit seeing most of the image, and respond to large, abstract parts (a face, fur, an eye) rather than "
            "to pixels: their content, measured per input pixel, is far smoother."
        ),
        api="from convlens.inspect import depth_profile, get_activations\np = depth_profile(bundle.model, x)\np.kernels, p.maps['blocks.0'], p.maps['blocks.6']",
        cli="convlens depth-profile chelsea.png --out depth/\nconvlens activations chelsea.png --layers blocks.0,blocks.6 --out acts/",
    )


@section(
    11, "Max pooling, worked example", "What does 2x2 max pooling with stride 2 compute?", needs=("convlens.arith",)
)
def q11(ctx: TourContext) -> Body:
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
        cli="convlens pool --input x.json --kind max --kernel 2 --stride 2",
    )


@section(
    12,
    "Pooling experiment",
    "What does pooling buy: smaller maps, fewer coefficients, tolerance to shifts?",
    needs=("convlens.experiments",),
)
def q12(ctx: TourContext) -> Body:
    from convlens.experiments import pooling
    from convlens.plot.vision import pooling_figure

    r = pooling(quick=ctx.quick, seed=ctx.seed, device=ctx.device)
    change_rows = [[name] + list(vals) for name, vals in r.feature_change.items()]
    red_rows = [
        [
            p.pooling,
            "x".join(map(str, p.input)),
            "x".join(map(str, p.output)),
            p.values_in,
            p.values_out,
            p.removed_fraction,
            p.dense_params_in,
            p.dense_params_out,
        ]
        for p in r.reduction
    ]
    return Body(
        results={
            "images": r.images,
            "conv channels": r.channels,
            "what is measured": r.measures,
            "findings": r.findings,
        },
        tables=[
            Table(
                ["features"] + [f"shift {s}px" for s in r.shifts],
                change_rows,
                caption="relative feature change when the input shifts",
            ),
            Table(
                [
                    "pooling",
                    "input",
                    "output",
                    "values in",
                    "values out",
                    "removed",
                    "dense params before",
                    "dense params after",
                ],
                red_rows,
                caption="sizes and the coefficients of a dense layer on top",
            ),
        ],
        figures=[
            TourFigure(
                "Translation tolerance (left) and size reduction (right), measured on digits.", pooling_figure(r)
            )
        ],
        explanation=(
            "Pooling summarizes each neighbourhood by one number. That makes the maps smaller (2x2 stride 2 keeps 25% "
            "of the values, so a dense layer on top needs 4x fewer coefficients and later layers cost less) and gives "
            "some tolerance to small shifts: a maximum does not care where in its window the strongest response was. "
            "The experiment shifts real digit images by a few pixels and measures how much conv features change with "
            "and without max pooling."
        ),
        api=f"from convlens.experiments import pooling\npooling(quick={ctx.quick}, seed={ctx.seed})",
        cli="convlens experiment pooling --out exp/pooling" + (" --quick" if ctx.quick else ""),
    )


@section(13, "Data augmentation preview", "What does augmentation make of one image?", needs=("convlens.data",))
def q13(ctx: TourContext) -> Body:
    import numpy as np
    import torch
    from PIL import Image

    from convlens.data import Augment, sample_seed
    from convlens.plot import image_grid

    n = ctx.pick(quick=8, full=16)
    aug = Augment(
        rotation=30, width_shift=0.15, height_shift=0.15, shear=15, zoom=0.2, horizontal_flip=True, fill_mode="reflect"
    )
    img = np.array(Image.fromarray(ctx.image("chelsea")).resize((192, 128), Image.BILINEAR))
    x = torch.from_numpy(img).permute(2, 0, 1).contiguous()  # (3, H, W) uint8
    tiles, rows = [img], []
    for i in range(n):
        g = torch.Generator().manual_seed(sample_seed(ctx.seed, 0, i))
        p = aug.sample(g, tuple(x.shape[-2:]))
        out = aug.apply(x, p)
        tiles.append(out.permute(1, 2, 0).numpy())
        rows.append(
            [
                i + 1,
                round(p.angle, 1),
                round(p.translate[0], 1),
                round(p.translate[1], 1),
                round(p.shear, 1),
                round(p.scale, 3),
                p.flip,
            ]
        )
    fig = image_grid(
        tiles, titles=["original"] + [f"#{i + 1}" for i in range(n)], ncols=min(len(tiles), 5), tile_inches=1.9
    )
    diffs = [float(np.abs(t.astype(np.float64) - img).mean()) for t in tiles[1:]]
    return Body(
        results={
            "options": aug.to_dict(),
            "variants": n,
            "mean |variant - original| (0..255)": round(float(np.mean(diffs)), 2),
            "distinct variants": len({t.tobytes() for t in tiles[1:]}),
        },
        tables=[
            Table(
                ["#", "angle (deg)", "shift x (px)", "shift y (px)", "shear (deg)", "zoom", "flip"],
                rows,
                caption="parameters drawn per image",
            )
        ],
        figures=[TourFigure("One photo, several random draws of the Keras-style augmentation.", fig)],
        explanation=(
            "Augmentation draws new random parameters for every image each time it is used (rotation, shifts, "
            "shear, zoom, flip), so a small training set looks bigger and more varied: the network cannot memorise "
            "exact pixels and learns features that survive those changes. It helps most when data is scarce, and "
            "only for transformations that keep the label (a flipped cat is still a cat)."
        ),
        api=(
            "from convlens.data import Augment\n"
            "aug = Augment(rotation=30, width_shift=0.15, height_shift=0.15, shear=15, zoom=0.2, horizontal_flip=True, fill_mode='reflect')\n"
            "aug(image_chw_uint8, torch.Generator().manual_seed(0))"
        ),
        cli="convlens augment chelsea.png --n 16 --options rotation=30,shift=0.15,shear=15,zoom=0.2,flip=true,fill_mode=reflect --out grid.png",
    )


@section(
    14,
    "Transfer learning",
    "On a small dataset, do pretrained features beat training from scratch?",
    needs=("convlens.train",),
)
def q14(ctx: TourContext) -> Body:
    from convlens.plot.train import comparison_plot

    runs = _lfw_runs(ctx)
    cfg = _lfw_config(ctx)
    first = next(iter(runs.values()))
    rows = [
        [
            s,
            r.result.epochs_done,
            r.result.train_loss,
            r.result.val_loss,
            r.result.val_accuracy,
            r.result.images_per_s,
            r.seconds,
        ]
        for s, r in runs.items()
    ]
    acc = {s: r.result.val_accuracy for s, r in runs.items()}
    best = max(acc, key=acc.get)
    return Body(
        results={
            "data": f"lfw: {first.data.get('train', '?')} train / {first.data.get('val', '?')} val images, classes {first.classes}",
            "backbone": f"{cfg.model} (ImageNet-pretrained, embedded), inputs {cfg.image_size}x{cfg.image_size}",
            "epochs": cfg.epochs,
            "val accuracy": acc,
            "best strategy": best,
            "pretrained features beat scratch": bool(acc.get("features", 0) > acc.get("scratch", 1)),
        },
        tables=[
            Table(
                ["strategy", "epochs", "train loss", "val loss", "val accuracy", "images/s", "seconds"],
                rows,
                caption="same data, same backbone, same seed",
            )
        ],
        figures=[
            TourFigure(
                "Validation curves per strategy.",
                comparison_plot({s: r.history for s, r in runs.items()}, title=f"{cfg.model} on lfw"),
            )
        ],
        explanation=(
            "lfw here is a genuinely small task: a few hundred 25x25 images of faces vs non-faces. Training a whole "
            "EfficientNet from random weights on it ('scratch') has far more parameters than examples and barely "
            "gets past chance in a few epochs. Transfer learning reuses the network trained on ImageNet: its "
            "convolutional base already computes general features (edges, textures, parts), so a new linear head "
            "trained on those features ('features') learns the task from few examples and in seconds, because the "
            "frozen base runs once and its outputs are cached. These numbers were measured just now; what they show "
            "is what this run gave."
        ),
        api=(
            "from convlens.train import TrainConfig\nfrom convlens.train.run import compare\n"
            f"compare(['scratch', 'features', 'finetune'], TrainConfig(data='lfw', epochs={cfg.epochs}, image_size={cfg.image_size}), 'runs/lfw')"
        ),
        cli=_train_cli(ctx, ",".join(runs)),
    )


@section(
    15,
    "Freezing",
    "Why freeze the pretrained base while a new head trains, and does it stay unchanged?",
    needs=("convlens.train",),
)
def q15(ctx: TourContext) -> Body:
    import torch

    from convlens.train import base_stages

    runs = _lfw_runs(ctx)
    run = runs["finetune"]
    cfg = run.config
    pretrained = ctx.model().model.state_dict()
    trained = run.model.state_dict()
    stages = base_stages(run.model, run.head_name, cfg.image_size)
    n_unfrozen = min(cfg.unfreeze, len(stages))
    rows = []
    frozen_ok, unfrozen_moved = True, True
    for k, names in enumerate(stages):
        unfrozen = k >= len(stages) - n_unfrozen
        prefixes = {n.rsplit(".", 1)[0] for n in names}
        keys = [
            key
            for key in trained
            if key in pretrained and (key in names or any(key.startswith(p + ".") for p in prefixes))
        ]
        diffs = [
            float((trained[key].float() - pretrained[key].float().to(trained[key].device)).abs().max())
            for key in keys
            if trained[key].shape == pretrained[key].shape
        ]
        bitwise = all(torch.equal(trained[key].cpu(), pretrained[key].cpu()) for key in keys)
        span = f"{names[0].rsplit('.', 1)[0]} .. {names[-1].rsplit('.', 1)[0]}" if names else ""
        rows.append(
            [k, span, len(keys), "unfrozen (step 4)" if unfrozen else "frozen", bitwise, max(diffs) if diffs else 0.0]
        )
        if unfrozen:
            unfrozen_moved = unfrozen_moved and not bitwise
        else:
            frozen_ok = frozen_ok and bitwise
    return Body(
        results={
            "run": f"finetune on lfw, {cfg.epochs} epochs, top {n_unfrozen} of {len(stages)} base stages unfrozen after the head stage",
            "frozen stages bitwise unchanged (weights and BatchNorm statistics)": frozen_ok,
            "unfrozen stages changed": unfrozen_moved,
            "head": run.head_name,
        },
        tables=[
            Table(
                [
                    "stage",
                    "modules",
                    "tensors (incl. BN buffers)",
                    "role",
                    "bitwise equal to pretrained",
                    "max |change|",
                ],
                rows,
                caption="the fine-tuned model compared tensor by tensor with the pretrained one",
            )
        ],
        explanation=(
            "A new head starts from random weights, so its first gradients are large and noisy. If the pretrained base "
            "were trainable from the start, those gradients would flow back and overwrite the features that make "
            "transfer work. Freezing means: requires_grad=False on the base, frozen parameters not even given to the "
            "optimizer (so weight decay cannot move them), and frozen BatchNorm layers kept in eval mode (otherwise "
            "their running statistics drift even without gradients). The table checks this on the run above: every "
            "frozen stage is bit-for-bit the pretrained one, while the unfrozen top stages moved."
        ),
        api="from convlens.train import set_trainable, frozen_modules, apply_train_mode\nfrom convlens.train import TrainConfig, fit\nrun = fit(TrainConfig(data='lfw', strategy='finetune'))",
        cli=_train_cli(ctx, "features,frozen+aug"),
    )


@section(
    16, "Fine-tuning", "Does the five-step fine-tuning recipe improve on frozen features?", needs=("convlens.train",)
)
def q16(ctx: TourContext) -> Body:
    from convlens.plot.train import learning_curves
    from convlens.train import plan_stages

    runs = _lfw_runs(ctx)
    run = runs["finetune"]
    cfg = run.config
    stages = plan_stages(cfg)
    rows = [
        [h["epoch"], h.get("stage"), h.get("lr"), h["train_loss"], h["val_loss"], h["val_accuracy"]]
        for h in run.history
    ]
    feat = runs.get("features")
    return Body(
        results={
            "stages": [f"{s.name}: {s.epochs} epoch(s)" for s in stages],
            "unfrozen top stages": cfg.unfreeze,
            "learning rates": f"head {cfg.lr:g} in step 3; step 5: head x{cfg.finetune_lr:g}, unfrozen stages x{cfg.finetune_lr:g} x{cfg.layer_decay:g}^k",
            "val accuracy, features only": feat.result.val_accuracy if feat else None,
            "val accuracy, fine-tuned": run.result.val_accuracy,
        },
        tables=[
            Table(
                ["epoch", "stage", "lr (last group)", "train loss", "val loss", "val accuracy"],
                rows,
                caption="the fine-tuning run, epoch by epoch",
            )
        ],
        figures=[
            TourFigure(
                "Learning curves of the fine-tuning run; the dashed line marks the switch from head-only to joint training.",
                learning_curves(run.history, title="finetune on lfw"),
            )
        ],
        explanation=(
            "The recipe: (1) put a new head on the pretrained base, (2) freeze the base, (3) train the head until it "
            "is reasonable, (4) unfreeze the top stages of the base (the most task-specific features), (5) train them "
            "together with the head at a LOW learning rate, lower still for deeper stages, so the pretrained features "
            "adapt gently instead of being destroyed. Step 3 first is what makes step 5 safe: by then the head's "
            "gradients are small."
        ),
        api=f"from convlens.train import TrainConfig, fit\nfit(TrainConfig(data='lfw', strategy='finetune', epochs={cfg.epochs}, unfreeze={cfg.unfreeze}))",
        cli=f"convlens train --data lfw --strategy finetune --epochs {cfg.epochs} --unfreeze {cfg.unfreeze} --image-size {cfg.image_size} --out runs/finetune",
    )


@section(
    17,
    "Inception block costs",
    "What does an inception block cost, and how much do 1x1 reductions save?",
    needs=("convlens.blocks",),
)
def q17(ctx: TourContext) -> Body:
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


@section(
    18,
    "Vanishing gradients",
    "Do gradients vanish in deep plain nets, and do residual shortcuts keep them?",
    needs=("convlens.experiments",),
)
def q18(ctx: TourContext) -> Body:
    from convlens.experiments import vanishing_gradient
    from convlens.plot.vision import vanishing_gradient_figures

    r = vanishing_gradient(quick=ctx.quick, seed=ctx.seed, device=ctx.device)
    rows = []
    for name, v in r.variants.items():
        for i, d in enumerate(r.depths):
            first, last = v.first_layer_grad_norm[i], v.last_layer_grad_norm[i]
            rows.append([name, d, first, last, (last / first) if first else None, v.val_accuracy[i]])
    figs = vanishing_gradient_figures(r)
    return Body(
        results={
            "setup": r.setup,
            "init": r.init,
            "what is measured": r.measures,
            "findings": r.findings,
            "training": f"{r.train_steps} SGD steps, batch {r.batch_size}, lr {r.lr:g}",
        },
        tables=[
            Table(
                ["variant", "depth", "first-layer grad norm", "last-layer grad norm", "last / first", "val accuracy"],
                rows,
                caption="weight-gradient norms at initialization, then brief training",
            )
        ],
        figures=[
            TourFigure(
                f"Gradient norm of every conv layer at initialization, one line per depth ({', '.join(map(str, r.depths))}).",
                figs["grad_norms"],
            ),
            TourFigure("Brief training: loss curves per variant and depth.", figs["training"]),
        ],
        explanation=(
            "Backpropagation multiplies one Jacobian per layer. In a deep plain stack those factors rarely average to "
            "1, so the gradient reaching the first layers shrinks (or, with BatchNorm, can grow) exponentially with "
            "depth, and the early layers cannot learn. A residual block computes x + F(x): its Jacobian is I + dF/dx, "
            "so the identity path carries the gradient back unchanged and the magnitudes stay comparable across depth. "
            "The table shows what this run measured at initialization on digits."
        ),
        api=f"from convlens.experiments import vanishing_gradient\nvanishing_gradient(depths=(8, 20, 56), quick={ctx.quick}, seed={ctx.seed})",
        cli="convlens experiment vanishing-gradient --out exp/vg" + (" --quick" if ctx.quick else "") + " --json",
    )


@section(
    19,
    "Intermediate activations",
    "What do a real network's intermediate activations look like for one image?",
    needs=("convlens.inspect",),
)
def q19(ctx: TourContext) -> Body:
    from convlens.inspect import activation_stats, get_activations, predict
    from convlens.plot.inspect import activation_grid

    b = ctx.model()
    img = ctx.image("coffee")
    x = b.preprocess([img]).to(b.device)
    acts = get_activations(b.model, x, "stages")
    stats = activation_stats(acts, topk=ctx.pick(quick=8, full=16))
    top = predict(b, [img], topk=3)[0]
    figs = []
    layers = list(acts)
    for name in ctx.pick(quick=[layers[0], layers[len(layers) // 2], layers[-1]], full=layers):
        st = next(s for s in stats if s.layer == name)
        figs.append(
            TourFigure(
                f"{name}: output {'x'.join(map(str, st.output_shape))}, the most active channels (each tile scaled to its own range).",
                activation_grid(acts[name][0], [c.channel for c in st.top_channels], title=f"{name} on coffee"),
            )
        )
    rows = [
        [
            s.layer,
            "x".join(map(str, s.output_shape)),
            s.mean,
            s.std,
            s.max,
            s.sparsity,
            [c.channel for c in s.top_channels[:5]],
        ]
        for s in stats
    ]
    return Body(
        results={
            "image": "skimage coffee",
            "prediction": f"{top[0].label} ({top[0].prob:.1%})",
            "layers": layers,
        },
        tables=[
            Table(
                ["layer", "output HxWxC", "mean", "std", "max", "share <= 0", "top channels"],
                rows,
                caption="activation statistics per stage",
            )
        ],
        figures=figs,
        explanation=(
            "A forward hook on a layer records its output: a stack of feature maps, one per channel. Looking at them "
            "layer by layer shows the network's intermediate representations: the first stages still look like the photo "
            "(edges of the cup and saucer), later ones become sparse and blob-like, marking where higher-level parts are. "
            "Many channels are near zero for a given image (the 'share <= 0' column): each responds only to its own pattern."
        ),
        api="from convlens.inspect import get_activations, activation_stats\nacts = get_activations(bundle.model, x, 'stages')\nactivation_stats(acts, topk=8)",
        cli="convlens activations coffee.png --layers stages --max-channels 16 --out acts/",
    )


@section(20, "Filter visualization", "What input pattern does a filter respond to most?", needs=("convlens.featvis",))
def q20(ctx: TourContext) -> Body:
    from convlens.featvis import visualize
    from convlens.plot.featvis import featvis_grid

    b = ctx.model()
    steps, size = ctx.pick(quick=(48, 96), full=(160, 128))
    plan = ctx.pick(
        quick=[("blocks.2", list(range(6)))],
        full=[("blocks.1", list(range(8))), ("blocks.3", list(range(8))), ("blocks.5", list(range(8)))],
    )
    figs, rows = [], []
    for layer, chans in plan:
        r = visualize(
            b,
            layer,
            chans,
            objective="channel",
            recipe="lucid",
            steps=steps,
            size=size,
            seed=ctx.seed,
            return_result=True,
        )
        vals, starts = r.values.tolist(), r.start_values.tolist()
        rows += [[layer, c, s0, v] for c, s0, v in zip(chans, starts, vals, strict=True)]
        figs.append(
            TourFigure(
                f"{layer}: images that maximize each channel's mean activation ({steps} steps, {size} px).",
                featvis_grid(r.images, chans, values=vals, layer=layer),
            )
        )
    rises = sum(1 for row in rows if row[3] > row[2])
    return Body(
        results={
            "recipe": "lucid (Fourier, colour decorrelation, jitter/scale/rotate)",
            "steps": steps,
            "size": size,
            "channels whose objective rose": f"{rises} of {len(rows)}",
            "forward truncated at": plan[-1][0],
        },
        tables=[Table(["layer", "channel", "objective at start (noise)", "objective at end"], rows)],
        figures=figs,
        explanation=(
            "Start from noise and run gradient ascent on the INPUT to maximize one channel's mean activation: the "
            "image becomes the pattern the filter answers to most (convolution as template matching, seen from the "
            "filter's side). Early filters give edges and colours, middle ones textures and repeated motifs. The plain "
            "pixel recipe (recipe='keras') is noisy; a Fourier parameterization with decorrelated colours and small "
            "random jitter/scale/rotation (recipe='lucid') gives readable images. All channels render in one batch and "
            "the forward pass stops at the layer."
        ),
        api=f"from convlens.featvis import visualize\nvisualize(bundle, '{plan[0][0]}', {plan[0][1]}, objective='channel', recipe='lucid', steps={steps}, size={size})",
        cli=f"convlens filters --layer {plan[0][0]} --channels 0-{len(plan[0][1]) - 1} --recipe lucid --steps {steps} --size {size} --out filters.png",
    )


@section(
    21,
    "Grad-CAM and its family",
    "Where did the network look to decide, and how faithful is that map?",
    needs=("convlens.explain",),
)
def q21(ctx: TourContext) -> Body:
    import torch

    from convlens.explain import explain
    from convlens.explain.metrics import confidence_change, deletion_curve, insertion_curve, randomization_check
    from convlens.plot import image_grid, line_plot, overlay

    b = ctx.model()
    names = ["chelsea", "coffee"]
    imgs = [ctx.image(n) for n in names]
    x = b.preprocess(imgs).to(b.device)
    shown = [b.preprocess.resize_image(im) for im in imgs]  # the pixels the model sees, for overlays
    methods = ctx.pick(
        quick=["gradcam", "gradcam++", "layercam", "eigencam"],
        full=["gradcam", "gradcam++", "xgradcam", "layercam", "hirescam", "eigencam", "scorecam"],
    )
    steps = ctx.pick(quick=10, full=20)
    results = {m: explain(b.model, x, m, "auto") for m in methods}
    first = results[methods[0]]
    targets = first.targets.tolist()
    labels = [b.label(t) for t in targets]
    # a random map: the baseline every faithful method must beat
    gen = torch.Generator().manual_seed(ctx.seed)
    rand_maps = torch.rand(x.shape[0], 7, 7, generator=gen)
    rand_maps = torch.nn.functional.interpolate(
        rand_maps[:, None], size=x.shape[-2:], mode="bilinear", align_corners=False
    )[:, 0]
    rows, curves = [], {}
    for m, res in [*results.items(), ("random map", None)]:
        maps = res.maps if res is not None else rand_maps.to(x.device)
        d = deletion_curve(b.model, x, maps, targets, steps=steps)
        ins = insertion_curve(b.model, x, maps, targets, steps=steps)
        cc = confidence_change(b.model, x, maps, targets)
        rows.append([m, float(d.auc.mean()), float(ins.auc.mean()), cc.average_drop, cc.increase_rate])
        curves[m] = (d.fractions.tolist(), d.scores.mean(0).tolist())
    sanity = randomization_check(b.model, x, "gradcam", "auto", targets, seed=ctx.seed)
    tiles, titles = [], []
    for i, nm in enumerate(names):
        tiles.append(shown[i])
        titles.append(f"{nm}: {labels[i]}")
        for m in methods:
            tiles.append(overlay(shown[i], results[m].maps[i].float().cpu().numpy(), alpha=0.5))
            titles.append(m)
    fig = image_grid(tiles, titles=titles, ncols=len(methods) + 1, tile_inches=2.0)
    fig_del = line_plot(
        curves,
        xlabel="fraction of pixels deleted (most salient first)",
        ylabel="target probability (mean)",
        title="deletion curves: lower area = more faithful",
    )
    by = {r[0]: r for r in rows}
    gc = by.get("gradcam")
    return Body(
        results={
            "target layer (auto)": first.layers,
            "targets": [
                f"{nm}: {lab} ({float(p):.1%})"
                for nm, lab, p in zip(
                    names, labels, first.probs.tolist() if first.probs is not None else [float("nan")] * 2, strict=True
                )
            ],
            "Grad-CAM deletion AUC": gc[1] if gc else None,
            "random map deletion AUC": by["random map"][1],
            "Grad-CAM beats a random map (deletion)": bool(gc and gc[1] < by["random map"][1]),
            "sanity check: rank correlation after randomizing layers (top-down)": [
                round(v, 3) for v in sanity.mean.tolist()
            ],
            "randomized layers": sanity.layers,
        },
        tables=[
            Table(
                [
                    "method",
                    "deletion AUC (lower better)",
                    "insertion AUC (higher better)",
                    "average drop % (lower better)",
                    "increase in confidence %",
                ],
                rows,
                caption=f"faithfulness on {len(names)} images, {steps} steps",
            )
        ],
        figures=[
            TourFigure(
                "Each method's map over the image the model saw (the explained class is each image's top-1).", fig
            ),
            TourFigure(
                "Deletion curves: removing the pixels a faithful map ranks first makes the probability fall fastest.",
                fig_del,
            ),
        ],
        explanation=(
            "Grad-CAM takes the gradient of the class score y_c with respect to the feature maps A_k of the last "
            "convolutional layer, averages it over positions to get one weight per channel, alpha_k = mean_ij dy_c/dA_k_ij, "
            "and sums the maps with these weights: M = ReLU(sum_k alpha_k A_k), upsampled to the image. The family differs "
            "in the weights (Grad-CAM++ uses higher-order terms, LayerCAM per-pixel positive gradients, Eigen-CAM the first "
            "principal component without gradients, Score-CAM the score change when each map masks the input).\n\n"
            "A heat map is only useful if it is faithful. Deleting the pixels it ranks highest should make the probability "
            "collapse quickly (low deletion AUC, lower than a random map's), inserting them into a blurred image should "
            "restore it quickly (high insertion AUC), and randomizing the model's weights should change the map "
            "(rank correlation falling toward 0 in the sanity check)."
        ),
        api=(
            "from convlens.explain import cam, explain\nfrom convlens.explain.metrics import deletion_curve, insertion_curve\n"
            "maps = cam(bundle.model, x, 'gradcam', 'auto')\ndeletion_curve(bundle.model, x, maps, steps=20).auc"
        ),
        cli="convlens cam chelsea.png coffee.png --method all --metrics --out cam/",
    )
