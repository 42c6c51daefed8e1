"""CLI for the 'explain' concern: ``convlens cam`` -- class activation maps for image files/folders.

Per image and method it writes ``<stem>_<method>.png`` (the map in turbo/jet over the image as the
model sees it) and ``<stem>_<method>.npy`` (the (H, W) float32 map in [0, 1]); with several methods
also ``<stem>_methods.png`` (side-by-side grid). ``--json`` prints one record per image and method.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer

from convlens.cli.common import check_choice, console, ensure_out_dir, print_json
from convlens.cli.models import DEVICE_OPT, MODEL_OPT, WEIGHTS_OPT


@dataclass
class CamRecord:
    """One image explained by one method (the ``--json`` record)."""

    image: str
    target: int
    label: str
    score: float  # softmax probability of the target class
    method: str
    layer: str
    map_file: str
    overlay_file: str
    metrics: dict[str, Any] | None = field(default=None)
    pretrained: bool = True  # False: the model's weights are random, the map means nothing


def all_methods() -> list[str]:
    """``--method all``: every registered CAM method except the sampled ones (SS-CAM, IS-CAM) that
    cost ``num_samples`` times Score-CAM."""
    from convlens.explain import METHODS

    return [n for n, c in METHODS.items() if c.in_all]


def _parse_methods(text: str) -> list[str]:
    from convlens.explain import get_method

    if text.strip().lower() == "all":
        return all_methods()
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise_input("--method is empty; give a method name, a comma list, or 'all'.")
    out = []
    for n in names:
        name = get_method(n).name  # raises InputError with the valid names
        if name not in out:
            out.append(name)
    return out


def raise_input(msg: str) -> None:
    from convlens.errors import InputError

    raise InputError(msg)


def _parse_target(text: str) -> int | None:
    t = text.strip().lower()
    if t == "top1":
        return None
    if not t.isdigit():
        raise_input(f"--target must be 'top1' or a class index (non-negative int), got '{text}'.")
    return int(t)


def _unique_stems(files: list[Path]) -> list[str]:
    seen: dict[str, int] = {}
    stems = []
    for f in files:
        s = f.stem
        k = seen.get(s, 0)
        seen[s] = k + 1
        stems.append(s if k == 0 else f"{s}_{k + 1}")
    return stems


def run_cam(
    images: list[Path],
    *,
    model: str,
    weights: Path | None,
    methods: list[str],
    layer: str,
    target: int | None,
    batch_size: int,
    device: str,
    out: Path,
    metrics: bool,
    cmap: str,
    alpha: float,
    progress: bool = True,
) -> tuple[list[CamRecord], list[str]]:
    """Explain every image file (folders expanded) with each method; write PNG/NPY files; return records and warnings."""
    import sys
    import warnings

    import numpy as np
    from PIL import Image
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from convlens.errors import InputError
    from convlens.explain import explain
    from convlens.explain.metrics import confidence_change, deletion_curve, insertion_curve, road
    from convlens.io import list_images, load_image
    from convlens.models import load_model
    from convlens.plot.explain import cam_overlay, methods_grid

    files = [f for p in images for f in list_images(p)]
    if not files:
        raise_input("no image files found in the given paths.")
    skipped: list[str] = []
    bundle = load_model(model, weights=weights, device=device)
    # num_classes is 0 when the registry could not read it (tuple/dict outputs): the explain call checks then
    if target is not None and bundle.meta.num_classes > 0 and target >= bundle.meta.num_classes:
        raise_input(f"--target must be < {bundle.meta.num_classes} (the model's classes), got {target}.")
    layer_spec: Any = layer  # 'auto' is convlens.layers.auto_layer (the registry's default layer included)
    if "," in layer:
        layer_spec = [s.strip() for s in layer.split(",") if s.strip()]
    out_dir = ensure_out_dir(out)
    stems = _unique_stems(files)
    records: list[CamRecord] = []
    prog = Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console(stderr=True),
        transient=True,
        disable=not (progress and sys.stderr.isatty()),  # no bar (nor its newline) in pipes and logs
    )
    with prog, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        task = prog.add_task("cam", total=len(files))
        for start in range(0, len(files), batch_size):
            chunk_all = files[start : start + batch_size]
            # a corrupt or unreadable file is skipped and reported, never the end of a folder's run
            chunk, chunk_stems, raw_imgs = [], [], []
            for k, f in enumerate(chunk_all):
                try:
                    raw_imgs.append(load_image(f))
                except InputError as e:
                    skipped.append(str(e))
                    continue
                chunk.append(f)
                chunk_stems.append(stems[start + k])
            if not chunk:
                prog.advance(task, len(chunk_all))
                continue
            seen = [bundle.preprocess.resize_image(im) for im in raw_imgs]  # the frame the maps live in
            x = bundle.preprocess(raw_imgs).to(bundle.device)
            per_image_maps: list[dict[str, Any]] = [{} for _ in chunk]
            per_image_records: list[list[CamRecord]] = [[] for _ in chunk]
            for method in methods:
                prog.update(task, description=f"{method}")
                res = explain(bundle.model, x, method, layer_spec, target, batch_size=batch_size)
                maps = res.maps.detach().float().cpu()
                met: dict[str, Any] = {}
                if metrics:
                    dele = deletion_curve(bundle.model, x, res.maps, res.targets, batch_size=batch_size)
                    ins = insertion_curve(bundle.model, x, res.maps, res.targets, batch_size=batch_size)
                    cc = confidence_change(bundle.model, x, res.maps, res.targets, batch_size=batch_size)
                    morf = road(
                        bundle.model,
                        x,
                        res.maps,
                        res.targets,
                        order="morf",
                        percentiles=(20, 50, 80),
                        batch_size=batch_size,
                    )
                    lerf = road(
                        bundle.model,
                        x,
                        res.maps,
                        res.targets,
                        order="lerf",
                        percentiles=(20, 50, 80),
                        batch_size=batch_size,
                    )
                    met = {
                        "deletion_auc": dele.auc.cpu().tolist(),
                        "insertion_auc": ins.auc.cpu().tolist(),
                        "drop_percent": cc.drop.cpu().tolist(),
                        "increase": cc.increase.cpu().tolist(),
                        "road_morf": morf.mean.cpu().tolist(),
                        "road_lerf": lerf.mean.cpu().tolist(),
                    }
                safe = method.replace("+", "p")
                for i, f in enumerate(chunk):
                    m = maps[i].numpy().astype(np.float32)
                    map_file = out_dir / f"{chunk_stems[i]}_{safe}.npy"
                    png_file = out_dir / f"{chunk_stems[i]}_{safe}.png"
                    np.save(map_file, m)
                    Image.fromarray(cam_overlay(seen[i], m, alpha=alpha, cmap=cmap)).save(png_file)
                    per_image_maps[i][method] = m
                    cls = int(res.targets[i])
                    per_image_records[i].append(
                        CamRecord(
                            image=str(f),
                            target=cls,
                            label=bundle.label(cls),
                            score=float(res.probs[i]) if res.probs is not None else float(res.scores[i]),
                            method=method,
                            layer=",".join(res.layers),
                            map_file=str(map_file),
                            overlay_file=str(png_file),
                            metrics={k: v[i] for k, v in met.items()} if metrics else None,
                            pretrained=bundle.pretrained,
                        )
                    )
            for recs in per_image_records:  # image order, then method order
                records.extend(recs)
            if len(methods) > 1:
                for i, _ in enumerate(chunk):
                    fig = methods_grid(seen[i], per_image_maps[i], cmap=cmap, alpha=alpha, title=Path(chunk[i]).name)
                    fig.savefig(out_dir / f"{chunk_stems[i]}_methods.png")
            prog.advance(task, len(chunk_all))
    if len(skipped) == len(files):
        raise_input(f"none of the {len(files)} image file(s) could be read; first: {skipped[0]}")
    notes: list[str] = [f"skipped unreadable file: {t}" for t in skipped]
    for w in caught:
        text = str(w.message)
        if text not in notes:
            notes.append(text)
    return records, notes


def register(app: typer.Typer) -> None:
    """Add ``cam``."""

    @app.command("cam")
    def cam_cmd(
        images: list[Path] = typer.Argument(..., help="image files or folders"),
        model: str = MODEL_OPT,
        weights: Path | None = WEIGHTS_OPT,
        method: str = typer.Option(
            "gradcam",
            "--method",
            help="a CAM method of convlens.explain.METHODS (gradcam, gradcam++, scorecam, ablationcam, fullgrad, ...), a pixel attribution (saliency, integratedgradients, ...), all, or a comma list",
        ),
        layer: str = typer.Option(
            "auto", "--layer", help="'auto' (last spatial layer), a name, a glob, or a comma list (maps averaged)"
        ),
        target: str = typer.Option("top1", "--target", help="'top1' (each image's prediction) or a class index"),
        batch_size: int = typer.Option(32, "--batch-size", min=1, help="images per forward (and Score-CAM chunk)"),
        device: str = DEVICE_OPT,
        out: Path = typer.Option(..., "--out", help="output folder for the PNG overlays and .npy maps"),
        metrics: bool = typer.Option(
            False, "--metrics", help="also compute deletion/insertion AUC, confidence drop, ROAD"
        ),
        cmap: str = typer.Option("turbo", "--cmap", help="turbo or jet"),
        alpha: float = typer.Option(0.5, "--alpha", min=0.0, max=1.0, help="map opacity over the image"),
        json_out: bool = typer.Option(False, "--json", help="machine-readable records on stdout"),
    ) -> None:
        """Class activation maps (Grad-CAM family): where the network looked for each image's class."""
        methods = _parse_methods(method)
        check_choice(cmap, ("turbo", "jet"), name="--cmap")
        records, notes = run_cam(
            images,
            model=model,
            weights=weights,
            methods=methods,
            layer=layer,
            target=_parse_target(target),
            batch_size=batch_size,
            device=device,
            out=out,
            metrics=metrics,
            cmap=cmap,
            alpha=alpha,
        )
        err = console(stderr=True)
        for n in notes:
            err.print(f"warning: {n}")
        if json_out:
            from convlens.cli.common import to_jsonable

            rows = [to_jsonable(r) for r in records]
            for row in rows:
                if row["metrics"] is None:
                    del row["metrics"]  # present only with --metrics
            print_json(rows)
            return
        con = console()
        for r in records:
            line = f"{r.image}  {r.method:15s} {r.label} (class {r.target}, p={r.score:.3f})  layer {r.layer}  -> {r.overlay_file}"
            con.print(line, markup=False, soft_wrap=True)  # one record per line, also in pipes
            if r.metrics:
                con.print(
                    "    "
                    + "  ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in r.metrics.items()),
                    markup=False,
                )
