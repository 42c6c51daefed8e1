"""CAMs over a folder, end to end: ``convlens cam DIR --out OUT`` (explain.folder.cam_files) vs a hand-written
pytorch-grad-cam loop vs the decode + forward limit.

500 JPEGs of the bundled images' sizes (crops and flips of skimage's chelsea, coffee, astronaut, rocket),
the embedded EfficientNet-Lite0 at 224 px, Grad-CAM for each image's top-1, batches of 32. In ONE process,
each contender processes every image once; the images are split into ``--rounds`` folders and the three
contenders take turns folder by folder (rotating order), so a machine whose load changes during the run
slows all of them alike:

* ``limit``: the same DataLoader (decode + preprocess in workers) and one no-grad forward per batch,
  no outputs -- the speed a CAM pipeline cannot beat;
* ``pytorch_grad_cam_loop``: what a user writes: PIL decode and preprocess in the main process,
  pytorch-grad-cam ``GradCAM`` per batch of 32, ``show_cam_on_image`` + a PNG per image;
* ``convlens``: :func:`convlens.explain.folder.cam_files` (maps as .npy, overlays as PNG, records,
  index.jsonl, atomic writes).

Images/s, ratios and the machine's load average go to ``benchmarks/results/cam_folder.json``.
Goals of the issue: convlens >= 2x the pytorch-grad-cam loop and >= 0.8x the limit.

Run: ``.venv/bin/python benchmarks/bench_cam_folder.py [--images 500] [--workers 1] [--threads 1]``
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import _machine  # first: sets OMP_WAIT_POLICY=PASSIVE before torch loads
import numpy as np
import torch


def _fresh(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


def make_images(folder: Path, n: int, seed: int = 0) -> list[Path]:
    """``n`` JPEGs: random crops (60-100 % of each side) and flips of four skimage photos, quality 90."""
    import skimage.data
    from PIL import Image

    srcs = [skimage.data.chelsea(), skimage.data.coffee(), skimage.data.astronaut(), skimage.data.rocket()]
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        img = srcs[i % len(srcs)]
        h, w = img.shape[:2]
        ch, cw = int(h * rng.uniform(0.6, 1.0)), int(w * rng.uniform(0.6, 1.0))
        y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        crop = img[y : y + ch, x : x + cw]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        p = folder / f"img{i:04d}.jpg"
        Image.fromarray(np.ascontiguousarray(crop)).save(p, quality=90)
        paths.append(p)
    return paths


def run_limit(bundle, paths: list[Path], batch: int, workers: int) -> float:
    from convlens.explain.folder import _collate, _Images

    loader = torch.utils.data.DataLoader(
        _Images(paths, bundle.preprocess, -1), batch_size=batch, num_workers=workers, collate_fn=_collate
    )
    t0 = time.perf_counter()
    with torch.no_grad():
        for items in loader:
            bundle.model(torch.stack([x for _, _, x in items]))
    return time.perf_counter() - t0


def run_pgc_loop(bundle, paths: list[Path], batch: int, out: Path) -> float:
    from PIL import Image
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.image import show_cam_on_image

    layer = dict(bundle.model.named_modules())[bundle.meta.default_layer]
    t0 = time.perf_counter()
    with GradCAM(bundle.model, [layer]) as cam:
        for s in range(0, len(paths), batch):
            chunk = paths[s : s + batch]
            imgs = [np.asarray(Image.open(p).convert("RGB")) for p in chunk]
            x = bundle.preprocess(imgs)
            maps = cam(x, None)
            for p, img, m in zip(chunk, imgs, maps, strict=True):
                seen = bundle.preprocess.resize_image(img).astype(np.float32) / 255
                Image.fromarray(show_cam_on_image(seen, m, use_rgb=True)).save(out / f"{p.stem}.png")
    return time.perf_counter() - t0


def run_convlens(bundle, folder: Path, batch: int, workers: int, out: Path) -> float:
    from convlens.explain.folder import cam_files

    t0 = time.perf_counter()
    cam_files([folder], model=bundle, methods=["gradcam"], batch_size=batch, out=out, workers=workers)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=500)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "cam_folder.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    from convlens.models import load_model

    bundle = load_model("efficientnet_lite0")
    tmp = Path(tempfile.mkdtemp(prefix="bench_cam_folder_"))
    try:
        per = -(-args.images // args.rounds)
        rounds = []
        for k in range(args.rounds):
            sub = tmp / "images" / f"round{k}"
            sub.mkdir(parents=True)
            n = min(per, args.images - k * per)
            if n > 0:
                rounds.append((sub, make_images(sub, n, seed=k)))
        secs = {"limit": 0.0, "pytorch_grad_cam_loop": 0.0, "convlens": 0.0}
        for k, (sub, paths) in enumerate(rounds):
            runs = {
                "limit": lambda paths=paths: run_limit(bundle, paths, args.batch, args.workers),
                "pytorch_grad_cam_loop": lambda k=k, paths=paths: run_pgc_loop(
                    bundle, paths, args.batch, _fresh(tmp / f"pgc{k}")
                ),
                "convlens": lambda k=k, sub=sub: run_convlens(
                    bundle, sub, args.batch, args.workers, tmp / f"convlens{k}"
                ),
            }
            names = list(runs)
            for name in names[k % 3 :] + names[: k % 3]:
                secs[name] += runs[name]()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    ips = {k: args.images / v for k, v in secs.items()}
    result = {
        "benchmark": "cam over a folder (Grad-CAM, top-1, end to end)",
        "model": "efficientnet_lite0 (embedded, pretrained)",
        "images": args.images,
        "input": "224x224",
        "batch": args.batch,
        "workers": args.workers,
        "runs": 1,
        "rounds": args.rounds,
        "seconds": {k: round(v, 3) for k, v in secs.items()},
        "images_per_second": {k: round(v, 2) for k, v in ips.items()},
        "ratio_convlens_vs_pytorch_grad_cam_loop": round(ips["convlens"] / ips["pytorch_grad_cam_loop"], 3),
        "ratio_convlens_vs_limit": round(ips["convlens"] / ips["limit"], 3),
        "goals": {"vs_pytorch_grad_cam_loop": 2.0, "vs_limit": 0.8},
        "machine": _machine.machine(),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    for k, v in ips.items():
        print(f"{k:24s} {v:8.2f} img/s  ({secs[k]:.1f} s)")
    print(f"convlens / pytorch-grad-cam loop: {result['ratio_convlens_vs_pytorch_grad_cam_loop']:.2f}x")
    print(f"convlens / decode+forward limit:  {result['ratio_convlens_vs_limit']:.2f}x")
    print(f"load average (1 min): {result['machine']['load_average_1min']}", file=sys.stderr)


if __name__ == "__main__":
    main()
