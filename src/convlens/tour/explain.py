"""The tour's explain sections. Looking inside a decision: filter visualization and the Grad-CAM family with faithfulness metrics.

Each function computes its topic live through the public convlens API (no canned numbers) and
returns a :class:`~convlens.tour.core.Body`; :mod:`convlens.tour.course` lists them in course order.
"""

from __future__ import annotations

from convlens.report.page import Table, TourFigure  # noqa: F401
from convlens.tour.core import Body, TourContext

__all__ = ["filter_visualization", "gradcam_family"]


def filter_visualization(ctx: TourContext) -> Body:
    """q20: What input pattern does a filter respond to most?"""
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


def gradcam_family(ctx: TourContext) -> Body:
    """q21: Where did the network look to decide, and how faithful is that map?"""
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
        files={"chelsea.png": ctx.image("chelsea"), "coffee.png": ctx.image("coffee")},
    )
