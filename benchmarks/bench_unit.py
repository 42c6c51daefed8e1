"""Benchmark: one unit and dataset examples on the embedded EfficientNet-Lite0 (CPU).

1. ``trace_unit`` vs one plain forward pass (eval, no grad, batch 1) on chelsea, for units in an early,
   a middle and a late layer: the trace runs one forward (stopped after the layer when ``call=0``, the
   whole forward with the default "last call") and records the layer's own ops. Goal: <= 1.2x a forward.
2. ``top_patches`` vs a plain no-grad forward over the same decoded, preprocessed batches (images/s
   ratio). Goal: >= 0.9x.
3. Flat memory: ``top_patches`` over a folder of 2,000 JPEG files (written once to a temp folder from
   crops of skimage's photos), in a fresh process, sampling the resident set size (VmRSS) after every
   batch: the peak RSS and the RSS after 250 vs 2,000 images.

Rounds are interleaved (anchor, ours, anchor, ours, ...) so contention hits both alike; medians and
ratios are printed and written to benchmarks/results/unit.json with the machine's load average.

Run: .venv/bin/python benchmarks/bench_unit.py [--rounds 5] [--images 2000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _machine  # first: sets OMP_WAIT_POLICY=PASSIVE before torch loads
import numpy as np
import torch

from convlens.inspect import top_patches, trace_unit
from convlens.models import load_model

HERE = Path(__file__).resolve().parent
UNITS = [("blocks.1.0.conv_dw", (5, 20, 30)), ("blocks.3.0.conv_pw", (17, 5, 9)), ("blocks.6.0.bn3", (40, 3, 3))]


def _interleave(fns: dict[str, object], rounds: int) -> dict[str, float]:
    times: dict[str, list[float]] = {k: [] for k in fns}
    for f in fns.values():
        f()  # warm-up
    for _ in range(rounds):
        for k, f in fns.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def bench_trace(rounds: int) -> dict:
    import skimage.data

    b = load_model("efficientnet_lite0")
    x = b.preprocess([skimage.data.chelsea()])

    def forward() -> None:
        with torch.no_grad():
            b.model.eval()(x)

    fns: dict[str, object] = {"forward": forward}
    for layer, at in UNITS:
        fns[f"{layer} (last call)"] = lambda layer=layer, at=at: trace_unit(b.model, x, layer, at)
        fns[f"{layer} (call 0)"] = lambda layer=layer, at=at: trace_unit(b.model, x, layer, at, call=0)
    med = _interleave(fns, rounds)
    fwd = med.pop("forward")
    errors = {f"{layer}": trace_unit(b.model, x, layer, at).abs_error for layer, at in UNITS}
    return {
        "forward_median_s": round(fwd, 4),
        "trace_unit_median_s": {k: round(v, 4) for k, v in med.items()},
        "ratio_trace_unit_over_forward": {k: round(v / fwd, 3) for k, v in med.items()},
        "abs_error": errors,
    }


def _images(n: int) -> list[np.ndarray]:
    import skimage.data as d

    srcs = [d.chelsea(), d.coffee(), d.astronaut(), d.rocket(), d.retina()[..., :3]]
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        a = srcs[i % len(srcs)]
        y, x = rng.integers(0, a.shape[0] - 160), rng.integers(0, a.shape[1] - 160)
        out.append(np.ascontiguousarray(a[y : y + 160, x : x + 160]))
    return out


def bench_top_patches(rounds: int, batch: int = 32, n: int = 64) -> dict:
    b = load_model("efficientnet_lite0")
    x = b.preprocess(_images(n))
    batches = [x[i : i + batch] for i in range(0, n, batch)]
    out = {}
    for layer in ("blocks.3.0.conv_pw", "bn2"):

        def forward() -> None:
            with torch.no_grad():
                for xb in batches:
                    b.model.eval()(xb)

        def ours(layer: str = layer) -> None:
            top_patches(b.model, x, layer, list(range(16)), k=9, batch_size=batch, preprocess=b.preprocess)

        med = _interleave({"forward": forward, "top_patches": ours}, rounds)
        out[layer] = {
            "forward_images_per_s": round(n / med["forward"], 2),
            "top_patches_images_per_s": round(n / med["top_patches"], 2),
            "ratio_images_per_s_top_patches_over_forward": round(med["forward"] / med["top_patches"], 3),
        }
    return {"images": n, "batch_size": batch, "channels": 16, "k": 9, "layers": out}


_CHILD = r"""
import json, sys, time
from pathlib import Path
import torch
torch.set_num_threads(int(sys.argv[3]))
from convlens.inspect import top_patches
from convlens.models import load_model

def rss_mb():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
def hwm_mb():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
b = load_model("efficientnet_lite0")
samples = []
t0 = time.perf_counter()
res = top_patches(b, sys.argv[1], sys.argv[2], list(range(16)), k=9, batch_size=32,
                  progress=lambda done, total: samples.append((done, round(rss_mb(), 1))))
print(json.dumps({"seconds": time.perf_counter() - t0, "images": res.images, "samples": samples, "peak_rss_mb": round(hwm_mb(), 1)}))
"""


def bench_memory(n_images: int, threads: int) -> dict:
    from PIL import Image

    with tempfile.TemporaryDirectory() as tmp:
        folder, first = Path(tmp) / "all", Path(tmp) / "first"  # siblings: a folder is read recursively
        folder.mkdir()
        first.mkdir()
        for i, a in enumerate(_images(n_images)):
            Image.fromarray(a).save(folder / f"img_{i:05d}.jpg", quality=90)
            if i < 250:
                (first / f"img_{i:05d}.jpg").symlink_to(folder / f"img_{i:05d}.jpg")
        runs = {}
        for count, sub in ((min(250, n_images), first), (n_images, folder)):
            proc = subprocess.run(
                [sys.executable, "-c", _CHILD, str(sub), "blocks.3.0.conv_pw", str(threads)],
                capture_output=True,
                text=True,
                check=True,
            )
            runs[count] = json.loads(proc.stdout.strip().splitlines()[-1])
    big = runs[n_images]
    samples = big["samples"]
    after = {s[0]: s[1] for s in samples}
    first_250 = next(v for k, v in after.items() if k >= min(250, n_images))
    return {
        "images": n_images,
        "layer": "blocks.3.0.conv_pw",
        "batch_size": 32,
        "seconds": round(big["seconds"], 1),
        "images_per_s": round(big["images"] / big["seconds"], 1),
        "rss_mb_after_250_images": first_250,
        "rss_mb_after_all_images": samples[-1][1],
        "peak_rss_mb": big["peak_rss_mb"],
        "peak_rss_mb_of_a_250_image_run": runs[min(250, n_images)]["peak_rss_mb"],
        "rss_samples_every_batch": samples[:: max(1, len(samples) // 16)],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--images", type=int, default=2000)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    result = {
        "benchmark": "trace_unit and top_patches on the embedded efficientnet_lite0, CPU",
        "rounds": args.rounds,
        "torch_threads": args.threads,
        "trace_unit": bench_trace(args.rounds),
        "top_patches": bench_top_patches(args.rounds),
        "memory": bench_memory(args.images, args.threads),
        "machine": _machine.machine(),
    }
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "unit.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
