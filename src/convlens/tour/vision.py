"""The tour's vision sections. Classic vision and what a real network computes: template matching, pyramids, depth vs resolution,
early vs deep layers, the pooling experiment, intermediate activations.

Each function computes its topic live through the public convlens API (no canned numbers) and
returns a :class:`~convlens.tour.core.Body`; :mod:`convlens.tour.course` lists them in course order.
"""

from __future__ import annotations

from convlens.report.page import Table, TourFigure  # noqa: F401
from convlens.tour import units
from convlens.tour.core import Body, TourContext

__all__ = [
    "template_matching",
    "pyramid_multiscale_search",
    "depth_vs_resolution",
    "early_vs_deep_layers",
    "pooling_experiment",
    "intermediate_activations",
]


def _depth_profile(ctx: TourContext):
    """The embedded model's depth profile on chelsea, computed once and shared by q6 and q10."""
    if "depth_profile" not in ctx.cache:
        from convlens.inspect import depth_profile

        b = ctx.model()
        x = b.preprocess([ctx.image("chelsea")]).to(b.device)
        ctx.cache["depth_profile"] = depth_profile(b.model, x, "stages", name=b.meta.name)
    return ctx.cache["depth_profile"]


def template_matching(ctx: TourContext) -> Body:
    """q4: Why is convolution template matching: where does a filter respond most?"""
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
        cli="convlens match search.png template.png --method zncc --out match/\nconvlens match search.png template.png --method raw --out match/",
        files={"search.png": np.clip(search, 0.0, 1.0), "template.png": template},
    )


def pyramid_multiscale_search(ctx: TourContext) -> Body:
    """q5: How does an image pyramid let a fixed-size window find an object at another scale?"""
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
        files={
            "chelsea_x2.png": np.clip(rescale(gray, 2.0), 0.0, 1.0),
            "template.png": template,
            "chelsea.png": ctx.image("chelsea"),
        },
    )


def depth_vs_resolution(ctx: TourContext) -> Body:
    """q6: Why do channels grow while the spatial resolution shrinks in a real network?"""
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
        files={"chelsea.png": ctx.image("chelsea")},
    )


def early_vs_deep_layers(ctx: TourContext) -> Body:
    """q10: What do early layers detect compared with deep ones?"""
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
    body = Body(
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
        files={"chelsea.png": ctx.image("chelsea")},
    )
    return units.extend(body, units.fields_per_stage(ctx))


def pooling_experiment(ctx: TourContext) -> Body:
    """q12: What does pooling buy: smaller maps, fewer coefficients, tolerance to shifts?"""
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


def intermediate_activations(ctx: TourContext) -> Body:
    """q19: What do a real network's intermediate activations look like for one image?"""
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
    body = Body(
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
        files={"coffee.png": ctx.image("coffee")},
    )
    return units.extend(body, units.top_patches_of_photos(ctx))
