"""Grad-CAM throughput: convlens vs pytorch-grad-cam vs Captum LayerGradCam vs a plain no-grad forward.

ResNet-18, batch 8, 224x224 on CPU (ResNet-50, batch 128 on CUDA when available). The four
contenders run in interleaved rounds in ONE process (so a shared, noisy machine hits all alike);
medians of per-round times, images/s and ratios are printed and written to
``benchmarks/results/cam.json``.

Run: ``.venv/bin/python benchmarks/bench_cam.py [--rounds 15] [--device cpu|cuda] [--threads 2]``
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import _machine  # first: sets OMP_WAIT_POLICY=PASSIVE before torch loads
import torch


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def make_contenders(model: torch.nn.Module, x: torch.Tensor, top1: torch.Tensor) -> dict:
    """The timed callables. pytorch-grad-cam registers its hooks when its CAM object is built and keeps them until
    ``release()``: it is built and released INSIDE its own round (``with``), so the forward, convlens and Captum
    never run with its hooks attached (convlens and Captum hold hooks only during a call)."""
    from captum.attr import LayerGradCam
    from pytorch_grad_cam import GradCAM as PGCGradCAM

    from convlens.explain import GradCAM

    layer = model.layer4
    ours = GradCAM(model, "layer4")
    cap = LayerGradCam(model, layer)

    def run_forward() -> None:
        with torch.no_grad():
            model(x)

    def run_ours() -> None:
        ours(x)  # targets=None: each image's top-1 from the same forward; full-size normalized maps

    def run_pgc() -> None:
        with PGCGradCAM(model, [layer]) as pgc:  # hooks registered here, removed on exit
            pgc(x, None)  # targets=None: top-1; full-size normalized maps (numpy)

    def run_captum() -> None:
        cap.attribute(x, target=top1)  # raw low-res map only; top-1 given for free

    return {
        "forward_no_grad": run_forward,
        "convlens": run_ours,
        "pytorch_grad_cam": run_pgc,
        "captum": run_captum,
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--model", default=None, help="resnet18 (cpu default) or resnet50 (cuda default)")
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--amp", action="store_true", help="convlens with bf16/fp16 autocast + channels_last (extra row)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "cam.json"))
    args = ap.parse_args(argv)

    import torchvision

    from convlens.explain import GradCAM

    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    name = args.model or ("resnet50" if dev.type == "cuda" else "resnet18")
    batch = args.batch or (128 if dev.type == "cuda" else 8)
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None).eval().to(dev)
    x = torch.randn(batch, 3, args.size, args.size, device=dev)
    with torch.no_grad():
        top1 = model(x).argmax(1)

    contenders = make_contenders(model, x, top1)
    if args.amp:
        model_cl = model.to(memory_format=torch.channels_last)
        ours_amp = GradCAM(model_cl, "layer4", amp=True)
        x_cl = x.contiguous(memory_format=torch.channels_last)
        contenders["convlens_amp_channels_last"] = lambda: ours_amp(x_cl)

    times: dict[str, list[float]] = {k: [] for k in contenders}
    warnings.simplefilter("ignore")
    for r in range(args.warmup + args.rounds):
        order = list(contenders)
        if r % 2:
            order.reverse()  # alternate the order so no contender always runs right after another
        for k in order:
            _sync(dev)
            t0 = time.perf_counter()
            contenders[k]()
            _sync(dev)
            if r >= args.warmup:
                times[k].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    ips = {k: batch / v for k, v in med.items()}
    ratios = {
        "convlens_vs_pytorch_grad_cam": med["pytorch_grad_cam"] / med["convlens"],
        "convlens_vs_captum": med["captum"] / med["convlens"],
        "convlens_vs_forward": med["forward_no_grad"] / med["convlens"],
    }
    result = {
        "benchmark": "gradcam_throughput",
        "model": name,
        "batch": batch,
        "size": args.size,
        "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev)
        if dev.type == "cuda"
        else platform.processor() or platform.machine(),
        "threads": args.threads,
        "rounds": args.rounds,
        "median_s": med,
        "images_per_s": ips,
        "ratios": ratios,
        "torch": torch.__version__,
        "note": "interleaved rounds in one process: compare ratios, and read the load average",
        **_machine.machine(),  # load averages at the end of the run: how shared the machine was
    }
    for k in contenders:
        print(f"{k:28s} {med[k] * 1000:9.1f} ms/batch  {ips[k]:8.1f} img/s")
    for k, v in ratios.items():
        print(f"{k:34s} {v:6.2f}x")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
