"""CAMs over image files and folders of any size: the pipeline behind ``convlens cam`` (and the server).

:func:`cam_files` reads images with a ``DataLoader`` (worker processes decode and preprocess while the
model runs), explains each batch with every method on the model's device, and writes per image and
method ``<stem>_<method>.npy`` (the (H, W) float32 map in [0, 1]) and ``<stem>_<method>.png`` (the
overlay), each to a temporary name first and then ``os.replace``-d, so a killed run leaves no
half-written file. Its record (:class:`CamRecord`, the ``convlens cam --json`` record) goes to
``OUT/.records/<stem>_<method>.json`` last; ``OUT/index.jsonl`` holds one line per image and method,
in file order, rebuilt from those records at the end. With ``resume=True`` an image whose records all
exist is skipped, so a rerun finishes an interrupted set without duplicates.

Under ``torchrun`` (``WORLD_SIZE`` > 1) each rank takes every ``world_size``-th file (as
``DistributedSampler(shuffle=False)``, without its padding, so no image is done twice), uses its own
GPU when there are GPUs (``LOCAL_RANK``), and rank 0 merges the index after a barrier (gloo on CPU).

Memory stays flat: one batch of images, maps and records at a time (the returned records are small).

Example:
    >>> import tempfile, numpy as np, torch
    >>> from PIL import Image
    >>> from convlens.models import load_model
    >>> d = tempfile.mkdtemp(); Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(d + "/a.png")
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(),
    ...                           torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 2))
    >>> res = cam_files([d], model=net, out=d + "/out", workers=0, size=32)
    >>> [r.method for r in res.records], (res.out / "index.jsonl").exists()
    (['gradcam'], True)
"""

from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from convlens.errors import InputError

#: runs of at most this many images get labelled figures by default (``figures=None``)
FIGURES_UP_TO = 64

__all__ = ["CamRecord", "CamFolderResult", "cam_files", "atomic_write", "unique_stems", "method_file_tag"]


@dataclass
class CamRecord:
    """One image explained by one method: the ``convlens cam --json`` record and one ``index.jsonl`` line.

    ``score`` is the softmax probability of the target class (the callable's score for other targets);
    ``metrics`` (with ``--metrics``) and ``sanity`` (with ``--sanity``: ``layers``, ``spearman``,
    ``ssim`` per randomization step) are present only when asked for.
    """

    image: str
    target: int
    label: str
    score: float
    method: str
    layer: str
    map_file: str
    overlay_file: str
    metrics: dict[str, Any] | None = field(default=None)
    sanity: dict[str, Any] | None = field(default=None)
    figure_file: str | None = None  # the overlay labelled for a lecture: class, score, method, layer, colorbar
    pretrained: bool = True  # False: the model's weights are random, so the map means nothing (issue 16.1)

    def to_dict(self) -> dict[str, Any]:
        """The JSON record (``metrics``/``sanity`` only when computed; non-finite floats -> ``None``)."""
        d = asdict(self)
        for k in ("metrics", "sanity"):
            if d[k] is None:
                del d[k]
        return _finite(d)


def _finite(o: Any) -> Any:
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    if isinstance(o, float) and not np.isfinite(o):
        return None
    return o


@dataclass
class CamFolderResult:
    """What :func:`cam_files` did.

    Attributes:
        records: this process's records, image order then method order (resumed images included,
            read back from their record files).
        skipped: one sentence per unreadable file found inside a folder (skipped, never the end of the
            run; an unreadable file named explicitly is an error, :func:`convlens.io.iter_image_batches`' policy).
        warnings: distinct warnings raised while explaining (constant maps, layer reuse ...).
        out: the output folder; ``index``: ``OUT/index.jsonl`` (written by rank 0).
        images: image files this process was given; ``resumed``: of those, already done before.
        seconds: wall time; ``images_per_second``: processed (not resumed) images per second.
        rank, world_size: the process's place under ``torchrun`` (0, 1 otherwise).
    """

    records: list[CamRecord]
    skipped: list[str]
    warnings: list[str]
    out: Path
    index: Path
    images: int
    resumed: int
    seconds: float
    images_per_second: float
    rank: int = 0
    world_size: int = 1


def method_file_tag(method: str) -> str:
    """A method name as it appears in file names (``+`` is not portable): ``gradcam++`` -> ``gradcampp``.

    Example:
        >>> method_file_tag("smoothgradcam++")
        'smoothgradcampp'
    """
    return method.replace("+", "p")


def unique_stems(files: Sequence[Path]) -> list[str]:
    """File stems made unique in order (``a.png``, ``a.jpg`` -> ``a``, ``a_2``).

    Example:
        >>> unique_stems([Path("x/a.png"), Path("y/a.jpg"), Path("b.png")])
        ['a', 'a_2', 'b']
    """
    seen: dict[str, int] = {}
    stems = []
    for f in files:
        k = seen.get(f.stem, 0)
        seen[f.stem] = k + 1
        stems.append(f.stem if k == 0 else f"{f.stem}_{k + 1}")
    return stems


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """``write(tmp)`` to a temporary name in the same folder, then ``os.replace`` it onto ``path``
    (atomic on POSIX and Windows): readers see the old file or the whole new one, never a part.

    Example:
        >>> import tempfile
        >>> p = Path(tempfile.mkdtemp()) / "x.txt"
        >>> atomic_write(p, lambda t: t.write_text("hi")); p.read_text()
        'hi'
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


# ----------------------------------------------------------------------------------------------------
# reading (DataLoader workers)


class _Images(torch.utils.data.Dataset):
    """Files -> (index, seen uint8 image, preprocessed tensor) or (index, error sentence)."""

    def __init__(self, files: Sequence[Path], preprocess: Any, max_pixels: int | None) -> None:
        self.files, self.preprocess, self.max_pixels = list(files), preprocess, max_pixels

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[int, Any, Any]:
        from convlens.io import load_image

        try:
            if self.max_pixels == -1:  # load_image's own default limit
                img = load_image(self.files[i])
            else:
                img = load_image(self.files[i], max_pixels=self.max_pixels)
        except InputError as e:
            return i, None, str(e)
        return i, self.preprocess.resize_image(img), self.preprocess([img])[0]


def _collate(items: list[tuple[int, Any, Any]]) -> list[tuple[int, Any, Any]]:
    return items  # keep indices, images and errors together; stacking happens in the main process


def _dist_info() -> tuple[int, int]:
    ws = int(os.environ.get("WORLD_SIZE", "1") or 1)
    rank = int(os.environ.get("RANK", "0") or 0)
    return (rank, ws) if ws > 1 else (0, 1)


def _init_dist(rank: int, world: int) -> bool:
    """Join the torchrun process group (gloo on CPU, nccl with GPUs); False when already joined."""
    import torch.distributed as dist

    if dist.is_initialized():
        return False
    backend = "nccl" if torch.cuda.is_available() and dist.is_nccl_available() else "gloo"
    dist.init_process_group(backend=backend, rank=rank, world_size=world)
    return True


# ----------------------------------------------------------------------------------------------------
# the pipeline


def cam_files(
    paths: Sequence[str | os.PathLike[str]],
    *,
    model: str | nn.Module | Any = "efficientnet_lite0",
    weights: str | os.PathLike[str] | None = None,
    methods: Sequence[str] = ("gradcam",),
    layer: Any = "auto",
    target: Any = None,
    batch_size: int = 32,
    device: str | None = None,
    out: str | os.PathLike[str],
    metrics: bool = False,
    sanity: bool = False,
    cmap: str = "turbo",
    alpha: float = 0.5,
    resume: bool = False,
    workers: int | None = None,
    size: int | None = None,
    max_pixels: int | None = -1,
    progress: Callable[[int], None] | None = None,
    target_option: str = "target",
    figures: bool | None = None,
) -> CamFolderResult:
    """Explain every image file (folders expanded, recursively) with each method; write maps, overlays,
    records and ``OUT/index.jsonl`` (module docstring).

    Args:
        model: a registered name / ``file.py:factory`` (loaded with :func:`convlens.models.load_model`),
            a :class:`~convlens.models.ModelBundle`, or an ``nn.Module`` (then ``size`` gives the input
            size and ImageNet normalization is used).
        methods: CAM methods (``explain.METHODS``) and/or pixel attributions (``explain.ATTRIBUTIONS``).
        layer: ``'auto'`` (:func:`convlens.layers.auto_layer`: the registry's default layer, else the last spatial one), a
            name, a glob, or a list of names (maps averaged).
        target: ``None``/``'top1'``, ``'topK'``, a class index or name, ``box:``/``mask:``/``like:``
            specs (:func:`convlens.explain.targets.parse_target`), or a target callable.
        metrics: also deletion/insertion AUC, confidence drop and ROAD per image.
        sanity: also the model-randomization check (Spearman and SSIM per randomized block).
        resume: skip images whose records already exist in ``out``.
        workers: DataLoader worker processes (default: ``min(4, cpus - 1)``; 0 reads in this process).
        max_pixels: the decompression-bomb limit for each file (``-1``: :func:`convlens.io.load_image`'s default).
        progress: called with the number of images finished after each batch (a progress bar).
        target_option: how errors name the target (the CLI passes ``'--target'``).
        figures: also a labelled matplotlib figure per map (``<stem>_<method>_labelled.png``, the
            record's ``figure_file``). ``None`` (default): only for runs of at most
            ``FIGURES_UP_TO`` images -- drawing one costs about 20 forwards of the embedded model, so
            folder-scale runs write the maps and overlays only (``figure_file`` is then ``null``).
    """
    from convlens.explain.targets import batch_targets, parse_target
    from convlens.io import find_images

    t0 = time.perf_counter()
    if not methods:
        raise InputError("give at least one method.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size must be an int >= 1, got {batch_size!r}.")
    found = find_images(list(paths))  # the one policy of convlens.io: a named file's error is an error
    files = [f for f, _ in found]
    explicit = {i for i, (_, e) in enumerate(found) if e}
    rank, world = _dist_info()
    joined = False
    if world > 1:
        joined = _init_dist(rank, world)
        if device is None or device == "cpu":
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', rank))}" if torch.cuda.is_available() else "cpu"
    bundle = _bundle(model, weights, device, size)
    spec = parse_target(target, bundle, what=target_option)
    layer_spec: Any = layer  # 'auto' is convlens.layers.auto_layer (the registry's default layer included)
    if isinstance(layer, str) and "," in layer:
        layer_spec = [s.strip() for s in layer.split(",") if s.strip()]
    out_dir = Path(out)
    rec_dir = out_dir / ".records"
    try:
        rec_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(
            f"cannot create the output folder '{out_dir}' ({e.strerror or e}); choose a writable folder."
        ) from None
    stems = unique_stems(files)
    mine = list(range(rank, len(files), world))  # DistributedSampler(shuffle=False) without padding
    tags = [method_file_tag(m) for m in methods]

    def rec_path(i: int, tag: str) -> Path:
        return rec_dir / f"{stems[i]}_{tag}.json"

    if figures is None:
        figures = len(files) <= FIGURES_UP_TO
    done = [i for i in mine if resume and all(rec_path(i, t).exists() for t in tags)]
    todo = [i for i in mine if i not in set(done)]
    records_by_image: dict[int, list[CamRecord]] = {i: _read_records(rec_path, i, tags) for i in done}
    skipped: list[str] = []
    notes: list[str] = []
    if workers is None:
        workers = max(0, min(4, (os.cpu_count() or 1) - 1))
    loader = torch.utils.data.DataLoader(
        _Images([files[i] for i in todo], bundle.preprocess, max_pixels),
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=_collate,
        shuffle=False,
        prefetch_factor=2 if workers > 0 else None,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        for items in loader:
            good = [(todo[j], seen, x) for j, seen, x in items if seen is not None]
            for j, seen, err in items:
                if seen is None and todo[j] in explicit:
                    raise InputError(err)  # named explicitly: an error (inside a folder: skipped, reported)
            skipped.extend(err for _, seen, err in items if seen is None)
            if good:
                idx = [g[0] for g in good]
                x = torch.stack([g[2] for g in good]).to(bundle.device)
                tg = batch_targets(spec, bundle.model, x)
                recs = _explain_batch(
                    bundle, x, [g[1] for g in good], [files[i] for i in idx], [stems[i] for i in idx], methods,
                    layer_spec, tg, batch_size, out_dir, metrics, sanity, cmap, alpha, figures,
                )  # fmt: skip
                for i, rs in zip(idx, recs, strict=True):
                    for r, tag in zip(rs, tags, strict=True):
                        atomic_write(rec_path(i, tag), lambda t, r=r: t.write_text(json.dumps(r.to_dict())))
                    records_by_image[i] = rs
            if progress is not None:
                progress(len(items))
    for w in caught:
        text = str(w.message)
        if text not in notes:
            notes.append(text)
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
    if todo and len(skipped) == len(todo) and not done:
        raise InputError(f"none of the {len(todo)} image file(s) could be read; first: {skipped[0]}")
    index = out_dir / "index.jsonl"
    if rank == 0:
        _merge_index(index, len(files), tags, rec_path)
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
        if joined:
            dist.destroy_process_group()
    secs = time.perf_counter() - t0
    records = [r for i in sorted(records_by_image) for r in records_by_image[i]]
    n_new = len(todo) - len(skipped)
    return CamFolderResult(
        records=records,
        skipped=skipped,
        warnings=notes,
        out=out_dir,
        index=index,
        images=len(mine),
        resumed=len(done),
        seconds=secs,
        images_per_second=n_new / secs if secs > 0 else 0.0,
        rank=rank,
        world_size=world,
    )


def _bundle(model: Any, weights: Any, device: str | None, size: int | None) -> Any:
    from convlens.models import ModelBundle, load_model
    from convlens.models.preprocess import Preprocess

    if isinstance(model, ModelBundle):
        return model
    if isinstance(model, nn.Module):
        from convlens.hooks import device_of
        from convlens.models.registry import ModelMeta

        dev = device_of(model, device)
        s = int(size or 224)
        meta = ModelMeta(
            name=type(model).__name__,
            source="module",
            pretrained=False,
            num_classes=0,
            num_params=sum(p.numel() for p in model.parameters()),
            input_size=(3, s, s),
        )
        return ModelBundle(model=model.to(dev), preprocess=Preprocess(size=s), labels=None, meta=meta)
    return load_model(model, weights=weights, device=device or "cpu")


def _read_records(rec_path: Callable[[int, str], Path], i: int, tags: Sequence[str]) -> list[CamRecord]:
    out = []
    for t in tags:
        d = json.loads(rec_path(i, t).read_text())
        out.append(CamRecord(**d))
    return out


def _merge_index(index: Path, n_files: int, tags: Sequence[str], rec_path: Callable[[int, str], Path]) -> None:
    """``index.jsonl`` from the record files, in file then method order: exactly one line each."""

    def write(tmp: Path) -> None:
        with tmp.open("w") as fh:
            for i in range(n_files):
                for t in tags:
                    p = rec_path(i, t)
                    if p.exists():
                        fh.write(p.read_text().strip() + "\n")

    atomic_write(index, write)


def _explain_batch(
    bundle: Any,
    x: torch.Tensor,
    seen: list[np.ndarray],
    files: list[Path],
    stems: list[str],
    methods: Sequence[str],
    layer_spec: Any,
    targets: Any,
    batch_size: int,
    out_dir: Path,
    metrics: bool,
    sanity: bool,
    cmap: str,
    alpha: float,
    figures: bool = True,
) -> list[list[CamRecord]]:
    from PIL import Image

    from convlens.explain.methods import explain
    from convlens.explain.metrics import (
        confidence_change,
        deletion_curve,
        insertion_curve,
        randomization_check,
        road,
    )
    from convlens.plot.explain import cam_figure, cam_overlay, methods_grid

    per_image: list[list[CamRecord]] = [[] for _ in files]
    per_maps: list[dict[str, np.ndarray]] = [{} for _ in files]
    per_guided: list[dict[str, Any]] = [{} for _ in files]  # Guided Grad-CAM: drawn as RGB, not as a heatmap
    for method in methods:
        res = explain(bundle.model, x, method, layer_spec, targets, batch_size=batch_size)
        maps = res.maps.detach().float().cpu()
        met: dict[str, list[float]] = {}
        if metrics:
            kw = {"batch_size": batch_size}
            tg = res.targets if bool((res.targets >= 0).all()) else targets
            dele = deletion_curve(bundle.model, x, res.maps, tg, **kw)
            ins = insertion_curve(bundle.model, x, res.maps, tg, **kw)
            cc = confidence_change(bundle.model, x, res.maps, tg, **kw)
            morf = road(bundle.model, x, res.maps, tg, order="morf", percentiles=(20, 50, 80), **kw)
            lerf = road(bundle.model, x, res.maps, tg, order="lerf", percentiles=(20, 50, 80), **kw)
            met = {
                "deletion_auc": dele.auc.cpu().tolist(),
                "insertion_auc": ins.auc.cpu().tolist(),
                "drop_percent": cc.drop.cpu().tolist(),
                "increase": cc.increase.cpu().tolist(),
                "road_morf": morf.mean.cpu().tolist(),
                "road_lerf": lerf.mean.cpu().tolist(),
            }
        san = None
        if sanity:
            tg = res.targets if bool((res.targets >= 0).all()) else targets
            san = randomization_check(bundle.model, x, method, layer_spec, tg, batch_size=batch_size)
        tag = method_file_tag(method)
        for i, f in enumerate(files):
            m = maps[i].numpy().astype(np.float32)
            map_file = out_dir / f"{stems[i]}_{tag}.npy"
            png_file = out_dir / f"{stems[i]}_{tag}.png"
            atomic_write(map_file, lambda t, m=m: _save_npy(t, m))
            ov = cam_overlay(seen[i], m, alpha=alpha, cmap=cmap)
            # fast zlib level: the overlay is a preview; the exact map is the .npy
            atomic_write(png_file, lambda t, ov=ov: Image.fromarray(ov).save(t, format="PNG", compress_level=1))
            per_maps[i][method] = m
            cls = int(res.targets[i])
            label = bundle.label(cls) if cls >= 0 else "custom target"
            score = float(res.probs[i]) if res.probs is not None else float(res.scores[i])
            guided = res.extra.get("guided")
            if guided is not None:
                per_guided[i][method] = guided[i]
            fig_file = out_dir / f"{stems[i]}_{tag}_labelled.png" if figures else None
            if fig_file is not None:
                fig = cam_figure(
                    seen[i], m, label=label, score=score, method=method, layer=",".join(res.layers), alpha=alpha,
                    cmap=cmap, guided=None if guided is None else guided[i],
                )  # fmt: skip
                atomic_write(fig_file, lambda t, fig=fig: fig.savefig(t, format="png"))
            per_image[i].append(
                CamRecord(
                    image=str(f),
                    target=cls,
                    label=bundle.label(cls) if cls >= 0 else "custom target",
                    score=float(res.probs[i]) if res.probs is not None else float(res.scores[i]),
                    method=method,
                    layer=",".join(res.layers),
                    map_file=str(map_file),
                    overlay_file=str(png_file),
                    figure_file=None if fig_file is None else str(fig_file),
                    pretrained=bundle.pretrained,
                    metrics={k: v[i] for k, v in met.items()} if metrics else None,
                    sanity=None
                    if san is None
                    else {
                        "layers": list(san.layers),
                        "spearman": san.correlation[:, i].tolist(),
                        "ssim": san.ssim[:, i].tolist(),
                    },
                )
            )
    if len(methods) > 1 and figures:
        for i, f in enumerate(files):
            first = per_image[i][0]
            fig = methods_grid(
                seen[i], per_maps[i], cmap=cmap, alpha=alpha, title=Path(f).name, label=first.label,
                score=first.score, layer=first.layer, guided=per_guided[i],
            )  # fmt: skip
            atomic_write(out_dir / f"{stems[i]}_methods.png", lambda t, fig=fig: fig.savefig(t, format="png"))
    return per_image


def _save_npy(path: Path, m: np.ndarray) -> None:
    with path.open("wb") as fh:
        np.save(fh, m)
