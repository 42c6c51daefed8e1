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
import shlex
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from convlens.errors import InputError
from convlens.report.html import write_page, write_summary
from convlens.report.page import Section, Table, TourFigure

__all__ = ["image_report", "image_section", "render_analysis"]


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
    """Everything about one image, as a report :class:`~convlens.report.page.Section` (id ``img{number}``):
    :func:`convlens.analyze.analyze_image` computes it, this only renders tables and figures."""
    from convlens.analyze import analyze_image

    a = analyze_image(
        bundle,
        image,
        name=name,
        methods=methods,
        layer=layer,
        topk=topk,
        metrics=metrics,
        metric_steps=metric_steps,
        n_filters=n_filters,
        filter_steps=filter_steps,
        filter_size=filter_size,
        seed=seed,
    )
    return render_analysis(a, number=number, filter_steps=filter_steps)


def render_analysis(a, *, number: int = 1, filter_steps: int | None = None) -> Section:  # a: ImageAnalysis
    """The report section of an :class:`~convlens.analyze.ImageAnalysis`: its tables and figures."""
    from convlens.plot import image_grid, overlay
    from convlens.plot.featvis import featvis_grid
    from convlens.plot.inspect import activation_grid

    shown = a.shown
    tables: list[Table] = []
    figures: list[TourFigure] = []
    results: dict[str, object] = {"image": a.image, "model": a.model, "input": a.input}
    top = a.top
    results["top-1"] = f"{top[0].label} ({top[0].prob:.1%})"
    tables.append(
        Table(
            ["rank", "class", "label", "probability"],
            [[i + 1, t.cls, t.label, t.prob] for i, t in enumerate(top)],
            caption="prediction",
        )
    )
    stats = a.stages
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
    names = [s.layer for s in stats]
    for lname in [names[0], names[len(names) // 2], names[-1]] if len(names) > 2 else names:
        st = next(s for s in stats if s.layer == lname)
        act = a.activations.get(lname)
        if act is not None and act.ndim == 3:
            figures.append(
                TourFigure(
                    f"{lname}: the 8 most active channels",
                    activation_grid(act, [c.channel for c in st.top_channels], title=lname),
                )
            )
    results["explained class"] = f"{a.explained_class} {a.explained_label}"
    results["CAM layer"] = a.cam_layers
    methods = [c.method for c in a.cams]
    tiles = [shown] + [overlay(shown, c.map.numpy(), alpha=0.5) for c in a.cams]
    figures.append(
        TourFigure(
            "CAM methods side by side (explained class: top-1)",
            image_grid(tiles, titles=["image", *methods], ncols=min(len(tiles), 5), tile_inches=2.4),
        )
    )
    if any(c.deletion_auc is not None for c in a.cams):
        tables.append(
            Table(
                ["method", "deletion AUC (lower better)", "insertion AUC (higher better)", "average drop %"],
                [[c.method, c.deletion_auc, c.insertion_auc, c.average_drop] for c in a.cams],
                caption="faithfulness",
            )
        )
    f = a.filters
    if f is not None:
        maps = [
            overlay(shown, (m - m.min()).div((m.max() - m.min()).clamp_min(1e-12)).float().numpy(), alpha=0.6)
            for m in f.maps
        ]
        figures.append(
            TourFigure(
                f"{f.layer}: where the top channels fire",
                image_grid(maps, titles=[f"ch {c}" for c in f.channels], ncols=len(f.channels), tile_inches=2.2),
            )
        )
        steps = f" ({filter_steps} steps of gradient ascent)" if filter_steps is not None else ""
        figures.append(
            TourFigure(
                f"{f.layer}: what the top channels respond to{steps}",
                featvis_grid(f.images, f.channels, values=f.values, layer=f.layer),
            )
        )
        results["top filters"] = {"layer": f.layer, "channels": f.channels}
    return Section(
        id=f"img{number}",
        number=number,
        title=a.image,
        question=f"What does {a.model} see in this image, and where did it look?",
        results=results,
        tables=tables,
        figures=figures,
        api=f"from convlens.report.image import image_report\nimage_report(['{a.image}'], 'out/', model='{a.model}')",
        cli=f"convlens report {shlex.quote(str(a.image))} --model {shlex.quote(str(a.model))} --out out/",
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
        t0, c0 = time.perf_counter(), time.process_time()
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
        sec.cpu_seconds = time.process_time() - c0  # as the tour's sections (it was always 0.0 here)
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
