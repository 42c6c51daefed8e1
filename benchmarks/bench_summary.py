"""Benchmark: `convlens` layer summary vs torchinfo on ResNet-50 (224x224x3, batch 1, CPU).

Both run one forward pass with hooks on every module; convlens also records every tensor op (for
receptive fields over all paths, MACs of functional matmuls) and computes per-call cones. Rounds are
interleaved (anchor, ours, anchor, ours, ...) so machine contention hits both alike; medians and the
ratio ours/anchor are printed and written to benchmarks/results/summary.json.

Run: .venv/bin/python benchmarks/bench_summary.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import _machine  # first: sets OMP_WAIT_POLICY=PASSIVE before torch loads
import torch
import torchinfo
import torchvision

from convlens.inspect.summary import summarize


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = torchvision.models.resnet50(weights=None).eval()

    def anchor() -> object:
        return torchinfo.summary(model, input_size=(1, 3, 224, 224), verbose=0, depth=10)

    def ours() -> object:
        return summarize(model, (3, 224, 224))

    anchor(), ours()  # warm-up (allocator, lazy imports)
    t_anchor, t_ours = [], []
    for _ in range(args.rounds):
        for fn, acc in ((anchor, t_anchor), (ours, t_ours)):
            t0 = time.perf_counter()
            fn()
            acc.append(time.perf_counter() - t0)
    a, o = statistics.median(t_anchor), statistics.median(t_ours)
    s, ref = ours(), anchor()
    result = {
        "benchmark": "layer summary of torchvision resnet50, input 1x3x224x224, CPU",
        "anchor": f"torchinfo {torchinfo.__version__} summary(depth=10)",
        "rounds": args.rounds,
        "torch_threads": args.threads,
        "anchor_median_s": round(a, 4),
        "convlens_median_s": round(o, 4),
        "ratio_convlens_over_anchor": round(o / a, 3),
        "anchor_times_s": [round(t, 4) for t in t_anchor],
        "convlens_times_s": [round(t, 4) for t in t_ours],
        "agree": {
            "total_params": [s.total_params, ref.total_params],
            "rows": [len(s.layers), len([li for li in ref.summary_list if li.depth >= 1])],
        },
        "convlens_extra": "receptive field/jump/start per call (max over paths), op-level graph, trainable/frozen split",
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        **_machine.machine(),  # load averages at the end of the run: > threads means other jobs shared the cores
    }
    out = Path(__file__).parent / "results" / "summary.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"torchinfo median {a:.3f} s | convlens median {o:.3f} s | ratio convlens/torchinfo {o / a:.2f} (lower is better)"
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
