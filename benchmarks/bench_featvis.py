"""Benchmark: feature visualization, seconds per channel, convlens vs torch-lucent vs a plain loop.

Work: N channels of ResNet-50 ``layer3.0.conv1`` (random init: the cost does not depend on the
weights), ``--steps`` ascent steps. Methods (all in ONE process, interleaved round by round so that
machine load hits every method alike; medians reported):

* ``convlens_lucid_batched``   -- ``visualize(..., recipe='lucid')``: all channels in one batch,
  forward truncated at the layer, per-image transforms fused into one resampling.
* ``convlens_keras_batched``   -- ``visualize(..., recipe='keras')`` (pixel ascent, no transforms).
* ``lucent_batched``           -- ``lucent.optvis.render.render_vis`` with ``param.image(size, batch=N)``
  and the sum of ``objectives.channel(layer, c, batch=i)`` (Lucent's defaults: Fourier,
  decorrelation, standard transforms, Adam 0.05, full forward, ``loss.backward()``).
* ``lucent_one_at_a_time``     -- the same, one ``render_vis`` per channel.
* ``plain_full_forward_loop``  -- the textbook loop: one channel at a time, full forward with a hook,
  normalized-gradient pixel ascent.

Equal work: Lucent upsamples any image under 224 px to 224 before the model, so the headline
comparison is at ``--size 224`` (both sides then feed 248 px after the 12 px pad). The small-size case
(``--small-size``, default 128) is reported separately: there convlens feeds 152 px while Lucent
still feeds 224 px, so it is NOT equal work and is labelled as such.

Lucent never removes its hooks (one per module per call); between runs this script removes them and
clears the ``.grad`` Lucent's ``loss.backward()`` leaves on the weights, so later rounds are not slowed.

Usage::

    python benchmarks/bench_featvis.py                       # 16 channels, 256 steps (slow on CPU)
    python benchmarks/bench_featvis.py --channels 4 --steps 4 --rounds 3
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import _machine  # first: sets OMP_WAIT_POLICY=PASSIVE before torch loads
import numpy as np
import torch
import torchvision

from convlens.featvis import visualize
from convlens.hooks import capture, preserve_state


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _clean_lucent(model: torch.nn.Module) -> None:
    for m in model.modules():
        m._forward_hooks.clear()
    for p in model.parameters():
        p.grad = None


def lucent_batched(model, layer, chans, steps, size, device):
    from lucent.optvis import objectives, param, render

    name = layer.replace(".", "_")
    obj = functools.reduce(lambda a, b: a + b, [objectives.channel(name, c, batch=i) for i, c in enumerate(chans)])
    render.render_vis(
        model,
        obj,
        param_f=lambda: param.image(size, batch=len(chans)),
        thresholds=(steps,),
        show_image=False,
        progress=False,
    )
    _clean_lucent(model)


def lucent_single(model, layer, chans, steps, size, device):
    from lucent.optvis import objectives, param, render

    name = layer.replace(".", "_")
    for c in chans:
        render.render_vis(
            model,
            objectives.channel(name, c),
            param_f=lambda: param.image(size),
            thresholds=(steps,),
            show_image=False,
            progress=False,
        )
        _clean_lucent(model)


def plain_loop(model, layer, chans, steps, size, device):
    """The textbook recipe, one filter at a time, whole network every step."""
    mean = torch.tensor([0.485, 0.456, 0.406], device=device).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], device=device).view(1, 3, 1, 1)
    g = torch.Generator().manual_seed(0)
    with preserve_state(model, train=False), capture(model, [layer], detach=False) as cap:
        for c in chans:
            img = (torch.rand(1, 3, size, size, generator=g) * 0.2 + 0.4).to(device).requires_grad_(True)
            for _ in range(steps):
                cap.run((img - mean) / std)
                loss = cap.activations[layer][0, c].mean()
                (grad,) = torch.autograd.grad(loss, img)
                with torch.no_grad():
                    img += 10.0 * grad / grad.norm().clamp_min(1e-12)


def ours(recipe):
    def run(model, layer, chans, steps, size, device):
        visualize(model, layer, chans, recipe=recipe, steps=steps, size=size, device=device)

    return run


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=256)
    ap.add_argument("--channels", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--small-size", type=int, default=128, help="0 to skip the small-size case")
    ap.add_argument("--layer", default="layer3.0.conv1")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--skip", default="", help="comma-separated method names to skip")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "featvis.json"))
    ap.add_argument("--note", default=None, help="an optional remark stored in the JSON (the load average is measured)")
    args = ap.parse_args()

    device = torch.device(args.device)
    torch.manual_seed(0)
    np.random.seed(0)  # Lucent draws its transforms from NumPy's global generator
    model = torchvision.models.resnet50().eval().to(device)
    chans = list(range(args.channels))
    skip = set(filter(None, args.skip.split(",")))

    cases = [
        (f"convlens_lucid_batched@{args.size}", ours("lucid"), args.size),
        (f"lucent_batched@{args.size}", lucent_batched, args.size),
        (f"convlens_keras_batched@{args.size}", ours("keras"), args.size),
        (f"plain_full_forward_loop@{args.size}", plain_loop, args.size),
        (f"lucent_one_at_a_time@{args.size}", lucent_single, args.size),
    ]
    if args.small_size:
        s = args.small_size
        cases += [
            (f"convlens_lucid_batched@{s}", ours("lucid"), s),
            (f"lucent_batched@{s}(upsampled_to_224)", lucent_batched, s),
        ]
    cases = [c for c in cases if c[0].split("@")[0] not in skip]

    # warm-up (allocator, kernels) with one step each, not timed
    for name, fn, size in cases:
        fn(model, args.layer, chans[:1], 1, size, device)
    times: dict[str, list[float]] = {name: [] for name, _, _ in cases}
    for r in range(args.rounds):
        order = cases[r % len(cases) :] + cases[: r % len(cases)]  # rotate so no method always runs first
        for name, fn, size in order:
            _sync(device)
            t0 = time.perf_counter()
            fn(model, args.layer, chans, args.steps, size, device)
            _sync(device)
            times[name].append(time.perf_counter() - t0)
            print(f"round {r}: {name:45s} {times[name][-1]:8.2f} s", file=sys.stderr)

    per_ch = {n: statistics.median(t) / len(chans) for n, t in times.items()}
    big = args.size
    ratios = {}
    ref = per_ch.get(f"convlens_lucid_batched@{big}")
    if ref:
        for other in ("lucent_batched", "lucent_one_at_a_time", "plain_full_forward_loop"):
            k = f"{other}@{big}"
            if k in per_ch:
                ratios[f"{other}_over_convlens_lucid@{big}"] = per_ch[k] / ref
    kb = per_ch.get(f"convlens_keras_batched@{big}")
    if kb and f"plain_full_forward_loop@{big}" in per_ch:
        ratios[f"plain_full_forward_loop_over_convlens_keras@{big}"] = per_ch[f"plain_full_forward_loop@{big}"] / kb
    if args.small_size:
        s = args.small_size
        a, b = per_ch.get(f"convlens_lucid_batched@{s}"), per_ch.get(f"lucent_batched@{s}(upsampled_to_224)")
        if a and b:
            ratios[
                f"SMALL_SIZE_NOT_EQUAL_WORK_lucent_batched@{s}(model sees 224)_over_convlens_lucid@{s}(model sees {s + 24})"
            ] = b / a

    result = {
        "benchmark": "featvis seconds per channel",
        "note": args.note,
        **_machine.machine(),  # load averages at the end of the run: how shared the machine was
        "machine": {
            "device": str(device),
            "device_name": torch.cuda.get_device_name(device)
            if device.type == "cuda"
            else platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
        "config": {
            "model": "torchvision resnet50 (random init)",
            "layer": args.layer,
            "channels": len(chans),
            "steps": args.steps,
            "size": args.size,
            "small_size": args.small_size,
            "rounds": args.rounds,
        },
        "seconds_per_channel_median": per_ch,
        "ratios_higher_means_convlens_faster": ratios,
        "raw_seconds_per_round": times,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    for n, v in per_ch.items():
        print(f"{n:50s} {v:9.3f} s/channel")
    for n, v in ratios.items():
        print(f"{n:50s} {v:9.2f}x")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
