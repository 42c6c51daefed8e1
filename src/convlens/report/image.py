"""The per-image report (``convlens report IMAGE... --out DIR``): for each image, the prediction,
intermediate activations per stage, several CAM methods side by side with faithfulness metrics, and
the filters that respond most to it (their activation maps and their feature visualizations).

Everything is computed through the public API (:mod:`convlens.inspect`, :mod:`convlens.explain`,
:mod:`convlens.featvis`) and written as one self-contained ``index.html`` (one ``<section>`` per
image, ids ``img1``, ``img2``, ...) with PNG figures and a ``summary.json``.

Example:
    >>> import tempfile, numpy as np
    >>> from PIL import Image
    >>> d = tempfile.mkdtemp()
    >>> Image.fromarray(np.full((40, 40, 3), 128, np.uint8)).save(f"{d}/grey.png")
    >>> page = image_report([f"{d}/grey.png"], f"{d}/out", model="resnet18", methods=["gradcam"],
    ...                     filter_steps=2, metrics=False, n_filters=2)
    >>> page.name
    'index.html'
"""

from __future__ import annotations

import os
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from convlens.errors import InputError
from convlens.report.html import write_page, write_summary
from convlens.report.page import Section, Table, TourFigure

__all__ = ["image_report", "image_section"]


def image_section(
    bundle,  # convlens.models.ModelBundle
    image: np.ndarray,
    *,
    name: str,
    number: int = 1,
    methods: Sequence[str] = ("gradcam", "gradcam++", "layercam", "eigencam"),
    layer: str = "auto",
    topk: int = 5,
    metrics: bool = True,
    metric_steps: int = 20,
    n_filters: int = 4,
    filter_steps: int = 48,
    filter_size: int = 96,
    seed: int = 0,
) -> Section:
    """Everything about one image, as a report :class:`~convlens.tour.core.Section` (id ``img{number}``)."""
    from convlens.explain import explain
    from convlens.featvis import visualize
    from convlens.inspect import activation_stats, get_activations, predict
    from convlens.plot import image_grid, overlay
    from convlens.plot.featvis import featvis_grid
    from convlens.plot.inspect import activation_grid

    if not methods:
        raise InputError("give at least one CAM method (e.g. --methods gradcam).")
    model = bundle.model
    x = bundle.preprocess([image]).to(bundle.device)
    shown = bundle.preprocess.resize_image(image)
    tables: list[Table] = []
    figures: list[TourFigure] = []
    results: dict[str, object] = {"image": name, "model": bundle.meta.name, "input": list(x.shape[1:])}

    # 1. prediction
    top = predict(bundle, [image], topk=topk)[0]
    results["top-1"] = f"{top[0].label} ({top[0].prob:.1%})"
    tables.append(
        Table(
            ["rank", "class", "label", "probability"],
            [[i + 1, t.cls, t.label, t.prob] for i, t in enumerate(top)],
            caption="prediction",
        )
    )

    # 2. activations per stage
    acts = get_activations(model, x, "stages")
    stats = activation_stats(acts, topk=8)
    tables.append(
        Table(
            ["layer", "output HxWxC", "mean", "max", "share <= 0", "most active channels"],
            [
                [
                    s.layer,
                    "x".join(map(str, s.output_shape)),
                    s.mean,
                    s.max,
                    s.sparsity,
                    [c.channel for c in s.top_channels],
                ]
                for s in stats
            ],
            caption="activations per stage",
        )
    )
    names = list(acts)
    for lname in [names[0], names[len(names) // 2], names[-1]] if len(names) > 2 else names:
        st = next(s for s in stats if s.layer == lname)
        if acts[lname].ndim == 4:
            figures.append(
                TourFigure(
                    f"{lname}: the 8 most active channels",
                    activation_grid(acts[lname][0], [c.channel for c in st.top_channels], title=lname),
                )
            )

    # 3. CAM methods side by side (+ faithfulness metrics)
    res = {m: explain(model, x, m, layer) for m in methods}
    first = res[methods[0]]
    target = int(first.targets[0])
    results["explained class"] = f"{target} {bundle.label(target)}"
    results["CAM layer"] = first.layers
    tiles = [shown] + [overlay(shown, r.maps[0].float().cpu().numpy(), alpha=0.5) for r in res.values()]
    figures.append(
        TourFigure(
            "CAM methods side by side (explained class: top-1)",
            image_grid(tiles, titles=["image", *methods], ncols=min(len(tiles), 5), tile_inches=2.4),
        )
    )
    if metrics:
        from convlens.explain.metrics import confidence_change, deletion_curve, insertion_curve

        rows = []
        for m, r in res.items():
            d = deletion_curve(model, x, r.maps, [target], steps=metric_steps)
            ins = insertion_curve(model, x, r.maps, [target], steps=metric_steps)
            cc = confidence_change(model, x, r.maps, [target])
            rows.append([m, float(d.auc[0]), float(ins.auc[0]), cc.average_drop])
        tables.append(
            Table(
                ["method", "deletion AUC (lower better)", "insertion AUC (higher better)", "average drop %"],
                rows,
                caption="faithfulness",
            )
        )

    # 4. top filters: the channels of a middle stage that respond most to this image
    mid = names[len(names) // 2]
    st = next(s for s in stats if s.layer == mid)
    chans = [c.channel for c in st.top_channels[:n_filters]]
    if chans and acts[mid].ndim == 4:
        a = acts[mid][0]
        maps = [
            overlay(
                shown,
                (a[c] - a[c].min()).div((a[c].max() - a[c].min()).clamp_min(1e-12)).float().cpu().numpy(),
                alpha=0.6,
            )
            for c in chans
        ]
        figures.append(
            TourFigure(
                f"{mid}: where the top channels fire",
                image_grid(maps, titles=[f"ch {c}" for c in chans], ncols=len(chans), tile_inches=2.2),
            )
        )
        vis = visualize(
            bundle, mid, chans, recipe="lucid", steps=filter_steps, size=filter_size, seed=seed, return_result=True
        )
        figures.append(
            TourFigure(
                f"{mid}: what the top channels respond to ({filter_steps} steps of gradient ascent)",
                featvis_grid(vis.images, chans, values=vis.values.tolist(), layer=mid),
            )
        )
        results["top filters"] = {"layer": mid, "channels": chans}
    return Section(
        id=f"img{number}",
        number=number,
        title=name,
        question=f"What does {bundle.meta.name} see in this image, and where did it look?",
        results=results,
        tables=tables,
        figures=figures,
        api=f"from convlens.report.image import image_report\nimage_report(['{name}'], 'out/', model='{bundle.meta.name}')",
        cli=f"convlens report {name} --model {bundle.meta.name} --out out/",
    )


def image_report(
    images: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    model: str = "efficientnet_lite0",
    weights: str | os.PathLike[str] | None = None,
    methods: Sequence[str] = ("gradcam", "gradcam++", "layercam", "eigencam"),
    layer: str = "auto",
    topk: int = 5,
    metrics: bool = True,
    metric_steps: int = 20,
    n_filters: int = 4,
    filter_steps: int = 48,
    device: str = "cpu",
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Write the per-image report for ``images`` (files or folders) to ``out_dir``; returns ``index.html``.

    Files are read by :func:`convlens.io.iter_image_batches` (the one policy): an unreadable file named
    explicitly is an error; one found inside a folder is skipped, listed in ``summary.json``'s
    ``skipped`` (path and reason) and on the page. An image whose analysis fails gets its error in the
    report; the others go on. Bad arguments (no images, unknown model, CAM method or layer) raise before
    any work.
    """
    from convlens.explain import get_method
    from convlens.io import find_images, iter_image_batches
    from convlens.models import load_model

    if not methods:
        raise InputError("give at least one CAM method (e.g. --methods gradcam).")
    for m in methods:
        get_method(m)  # unknown names fail now, with suggestions
    n_files = len(find_images(images))  # no images at all: an error before the model loads
    bundle = load_model(model, weights=weights, device=device)
    from convlens.layers import resolve

    resolve(bundle.model, layer, input_shape=bundle.meta.input_size)  # a bad --layer fails now, not once per image
    sections: list[Section] = []
    skipped = []
    t_all = time.perf_counter()
    for batch in iter_image_batches(images, 1):
        skipped += batch.skipped
        if not batch.images:
            if progress:
                progress(f"[{batch.start + 1}/{n_files}] skipped {batch.skipped[0].path}: {batch.skipped[0].reason}")
            continue
        f, i = batch.files[0], len(sections) + 1
        if progress:
            progress(f"[{batch.start + 1}/{n_files}] {f}")
        t0 = time.perf_counter()
        try:
            sec = image_section(
                bundle,
                batch.images[0],
                name=str(f),
                number=i,
                methods=methods,
                layer=layer,
                topk=topk,
                metrics=metrics,
                metric_steps=metric_steps,
                n_filters=n_filters,
                filter_steps=filter_steps,
                seed=seed,
            )
        except Exception as exc:  # one bad image must not lose the others' report
            sec = Section(
                f"img{i}",
                i,
                str(f),
                "",
                status="error",
                error=f"{type(exc).__name__}: {exc}",
                traceback="".join(traceback.format_exception(exc)),
            )
        sec.seconds = time.perf_counter() - t0
        sections.append(sec)
    out = Path(out_dir)
    weights_note = "pretrained weights" if bundle.pretrained else "RANDOM weights: results mean nothing"
    meta = f"{bundle.meta.name} ({weights_note}), {len(sections)} image(s), {time.perf_counter() - t_all:.0f} s on {device}"
    if skipped:
        meta += f"; skipped {len(skipped)} unreadable file(s): " + ", ".join(s.path for s in skipped)
    page = write_page(
        sections,
        out,
        title="convlens image report",
        meta=meta,
        intro="Prediction, intermediate activations, class-activation maps with faithfulness metrics, and the filters that respond most, per image.",
    )
    write_summary(
        out / "summary.json",
        sections,
        kind="image-report",
        model=bundle.meta.name,
        pretrained=bundle.pretrained,
        device=device,
        methods=list(methods),
        ok=all(s.ok for s in sections),
        skipped=[{"path": s.path, "reason": s.reason} for s in skipped],
    )
    return page
