"""Benchmark: convlens training loop vs a plain PyTorch loop; cached-features head training vs frozen+aug.

ONE run, rounds interleaved (plain, convlens, features, frozen+aug, repeat) so machine contention
hits every side alike; medians and ratios are printed and written to benchmarks/results/train.json.

1. images/s of the second (warm) training epoch (strategy ``scratch``: every weight trains, no augmentation) in
   ``convlens.train.fit`` vs a hand-written loop on the same model (same init), same data (lfw at
   ``--image-size``), same batch size, AdamW + cosine LR. Goal: ratio >= 0.95.
2. seconds per epoch of head training on cached features (``features``, epochs after the one-time
   base pass) vs ``frozen+aug`` (the frozen base runs on augmented images every step). Goal: >= 10x.

Usage: python benchmarks/bench_train.py [--rounds 3] [--image-size 64] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import time
from pathlib import Path

import _machine  # first: sets OMP_WAIT_POLICY=PASSIVE before torch loads


def plain_epoch(model_name: str, data, batch_size: int, lr: float, seed: int, epochs: int = 2) -> float:
    """A hand-written PyTorch loop; returns images/s of its LAST epoch (warm), training loop alone."""
    import torch
    import torch.nn.functional as F

    from convlens.models import load_model
    from convlens.train import reinitialize, replace_head

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        bundle = load_model(model_name)
        model = bundle.model
        replace_head(model, data.num_classes, seed=seed)
        reinitialize(model, seed=seed)
        mean = torch.tensor(bundle.preprocess.mean).view(1, 3, 1, 1)
        std = torch.tensor(bundle.preprocess.std).view(1, 3, 1, 1)
        images, targets = data.train.images, data.train.targets
        n = len(targets)
        steps = math.ceil(n / batch_size)
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps * epochs)
        model.train()
        for e in range(epochs):
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed + e))
            t0 = time.perf_counter()
            for s in range(steps):
                idx = perm[s * batch_size : (s + 1) * batch_size]
                x = (images[idx].float() / 255 - mean) / std
                loss = F.cross_entropy(model(x), targets[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
            secs = time.perf_counter() - t0
        return n / secs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "train.json"))
    a = ap.parse_args()

    import torch

    from convlens.data import load_dataset
    from convlens.train import TrainConfig, fit

    torch.set_num_threads(a.threads)
    data = load_dataset("lfw", image_size=a.image_size, seed=0)
    base = dict(data="lfw", model=a.model, image_size=a.image_size, batch_size=a.batch_size, seed=0, lr=1e-3)
    plain, ours, feat_epoch, feat_first, frozen_epoch = [], [], [], [], []
    for r in range(a.rounds):

        def _ours() -> None:
            run = fit(TrainConfig(strategy="scratch", epochs=2, **{**base, "seed": r}), data=data)
            ours.append(run.history[-1]["images_per_s"])  # the warm (last) epoch, as for the plain loop

        # ABBA order: a load trend during the run cannot favour one side
        if r % 2 == 0:
            plain.append(plain_epoch(a.model, data, a.batch_size, 1e-3, seed=r))
            _ours()
        else:
            _ours()
            plain.append(plain_epoch(a.model, data, a.batch_size, 1e-3, seed=r))
        run = fit(TrainConfig(strategy="features", epochs=3, **base), data=data)
        feat_first.append(run.history[0]["seconds"])
        feat_epoch += [h["seconds"] for h in run.history[1:]]
        run = fit(TrainConfig(strategy="frozen+aug", epochs=1, **base), data=data)
        frozen_epoch.append(run.history[0]["seconds"])
        print(
            f"round {r + 1}: plain {plain[-1]:.1f} img/s, convlens {ours[-1]:.1f} img/s; "
            f"features epoch {statistics.median(feat_epoch[-2:]):.4f} s (first incl. base pass {feat_first[-1]:.2f} s), "
            f"frozen+aug epoch {frozen_epoch[-1]:.2f} s",
            flush=True,
        )
    med = statistics.median
    loop_ratio = med(ours) / med(plain)
    head_speedup = med(frozen_epoch) / med(feat_epoch)
    amortized = (a.rounds and med(frozen_epoch) * 10) / (med(feat_first) + 9 * med(feat_epoch))
    result = {
        "machine": f"{platform.machine()} {os.cpu_count()} cores, torch threads {a.threads}",
        **_machine.machine(),  # load averages at the end of the run: how contended the cores were
        "torch": torch.__version__,
        "model": a.model,
        "image_size": a.image_size,
        "batch_size": a.batch_size,
        "train_images": len(data.train),
        "rounds": a.rounds,
        "loop": {
            "plain_images_per_s": plain,
            "convlens_images_per_s": ours,
            "median_plain": med(plain),
            "median_convlens": med(ours),
            "ratio": loop_ratio,
            "goal": ">= 0.95",
        },
        "head": {
            "features_epoch_s": feat_epoch,
            "features_first_epoch_s_incl_base_pass": feat_first,
            "frozen_aug_epoch_s": frozen_epoch,
            "speedup_per_epoch": head_speedup,
            "speedup_10_epochs_incl_base_pass": amortized,
            "goal": ">= 10x per epoch",
        },
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"training loop: convlens / plain = {loop_ratio:.3f} (median {med(ours):.1f} vs {med(plain):.1f} img/s; goal >= 0.95)"
    )
    print(
        f"head on cached features vs frozen+aug: {head_speedup:.0f}x faster per epoch "
        f"({med(feat_epoch) * 1000:.1f} ms vs {med(frozen_epoch):.2f} s; goal >= 10x); over 10 epochs incl. the base pass: {amortized:.1f}x"
    )
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
