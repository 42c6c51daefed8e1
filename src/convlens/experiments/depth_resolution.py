"""Depth vs resolution: double the channels when the resolution halves, or keep them fixed?

Three small nets on digits (upscaled to 16x16), each three stages of two (3x3 conv, BatchNorm, ReLU), a 2x2
max pool between stages (16x16 -> 8x8 -> 4x4), global average pooling and a linear classifier:

* ``doubling``    — channels ``base, 2 base, 4 base``: the usual design (VGG, ResNet). Each stage
  then holds ``H W C`` activations halving per stage (1/4 the positions, 2x the channels) and
  costs about the same MACs per stage;
* ``fixed``       — ``base`` channels everywhere: activations fall 4x per stage and the deep
  stages, where features are most abstract, get very few numbers to work with;
* ``fixed_wide``  — ``4 base`` everywhere: as wide as ``doubling`` at the end, but its first
  stage pays 4x the activations and ~15x the MACs at full resolution.

For each: activations per stage (values after the stage, per image), parameters, conv MACs per
image (via :func:`convlens.arith.conv_cost`) and validation accuracy after the same SGD run.

Example:
    >>> r = depth_vs_resolution(quick=True, train_steps=1)
    >>> r.nets["doubling"].channels
    [8, 16, 32]
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import nn

from convlens.arith import conv_cost
from convlens.errors import InputError
from convlens.experiments.data import cpu_threads, load_digits_split, seeded, train_classifier

__all__ = ["NetSummary", "DepthResolutionResult", "build_stage_net", "depth_vs_resolution"]


@dataclass
class NetSummary:
    """One net: per-stage channels, resolution and activations, totals, accuracy and loss curve."""

    channels: list[int]
    resolution: list[int]
    activations_per_stage: list[int]
    params: int
    macs: int
    val_accuracy: float
    train_loss: list[float]


@dataclass
class DepthResolutionResult:
    nets: dict[str, NetSummary]
    setup: str
    findings: list[str]
    train_steps: int
    seed: int
    quick: bool
    seconds: float
    #: the run shows the lesson (doubling beats fixed widths at a fraction of fixed_wide's MACs)
    lesson_shown: bool = True
    #: why the numbers of this run do not teach the lesson (too short, at chance), or None
    caveat: str | None = None


def build_stage_net(channels: list[int], in_channels: int = 1, num_classes: int = 10) -> nn.Sequential:
    """Stages of two (3x3 conv, BatchNorm, ReLU) with ``channels[i]`` filters, 2x2 max pool between stages.

    Example:
        >>> build_stage_net([4, 8])(torch.zeros(1, 1, 16, 16)).shape
        torch.Size([1, 10])
    """
    layers: list[nn.Module] = []
    c_in = in_channels
    for i, c in enumerate(channels):
        if i > 0:
            layers.append(nn.MaxPool2d(2, 2))
        for cin in (c_in, c):
            layers += [nn.Conv2d(cin, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU()]
        c_in = c
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, num_classes)]
    return nn.Sequential(*layers)


def _summary(channels: list[int], size: int) -> tuple[list[int], list[int], int]:
    res, acts, macs, c_in = [], [], 0, 1
    for i, c in enumerate(channels):
        s = size // (2**i)
        res.append(s)
        acts.append(s * s * c)
        macs += conv_cost(c_in, c, 3, (s, s), bias=False).macs + conv_cost(c, c, 3, (s, s), bias=False).macs
        c_in = c
    return res, acts, macs


def depth_vs_resolution(
    *,
    quick: bool = False,
    seed: int = 0,
    base: int = 8,
    train_steps: int | None = None,
    lr: float = 0.05,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    num_threads: int | None = 1,
) -> DepthResolutionResult:
    """Run the experiment (see the module docstring).

    Args:
        quick: 100 training steps instead of 300 (enough for the lesson; 30 steps reversed it).
        seed: seeds the split, the inits (same seed for every net) and the data order.
        base: channels of the first stage.
        num_threads: CPU threads while it runs (restored afterwards); None leaves torch's setting.

    Example:
        >>> r = depth_vs_resolution(quick=True, train_steps=1)
        >>> r.nets["fixed"].activations_per_stage
        [2048, 512, 128]
    """
    with cpu_threads(num_threads):  # tiny nets: one thread is several times faster than two
        if isinstance(base, bool) or not isinstance(base, int) or base < 1:
            raise InputError(f"base must be a positive integer, got {base!r}.")
        steps = train_steps if train_steps is not None else (100 if quick else 300)
        start = time.perf_counter()
        size = 16
        data = load_digits_split(size, seed=seed, device=device)
        designs = {"doubling": [base, 2 * base, 4 * base], "fixed": [base] * 3, "fixed_wide": [4 * base] * 3}
        nets: dict[str, NetSummary] = {}
        for name, chans in designs.items():
            with seeded(seed):
                net = build_stage_net(chans).to(device)
            curve = train_classifier(net, data, steps=steps, batch_size=batch_size, lr=lr, seed=seed)
            res, acts, macs = _summary(chans, size)
            nets[name] = NetSummary(
                chans, res, acts, sum(p.numel() for p in net.parameters()), macs, curve.val_accuracy, curve.loss
            )
        d, f, w = nets["doubling"], nets["fixed"], nets["fixed_wide"]
        findings = [
            "activations per stage (values per image): "
            + "; ".join(f"{k} {'/'.join(str(a) for a in n.activations_per_stage)}" for k, n in nets.items())
            + ".",
            f"params / MACs: doubling {d.params} / {d.macs:,}; fixed {f.params} / {f.macs:,}; fixed_wide {w.params} / {w.macs:,}.",
            f"val accuracy after {steps} SGD steps: doubling {d.val_accuracy:.3f}, fixed {f.val_accuracy:.3f}, fixed_wide {w.val_accuracy:.3f}.",
        ]
        lesson = d.val_accuracy > f.val_accuracy and w.macs > d.macs
        caveat = None
        if max(n.val_accuracy for n in nets.values()) < 0.2:
            caveat = (
                f"after {steps} steps every net is still at chance (0.10 for 10 digits): the run is too short to "
                "compare accuracies; run without --quick."
            )
        elif not lesson:
            caveat = (
                f"this run ({steps} steps) is too short to show the lesson: doubling {d.val_accuracy:.3f} does not beat "
                f"fixed {f.val_accuracy:.3f} yet; with the default 300 steps it does."
            )
        if caveat:
            findings.append("CAVEAT: " + caveat)
        setup = (
            f"sklearn digits upscaled to {size}x{size}, {data.x_train.shape[0]} train / {data.x_val.shape[0]} val; three stages of two "
            f"(3x3 conv, BatchNorm, ReLU), 2x2 max pool between stages, global average pool, linear; PyTorch default init; SGD momentum 0.9, "
            f"lr {lr}, batch {batch_size}, {steps} steps; MACs count convs only (bias adds excluded)."
        )
        return DepthResolutionResult(
            nets, setup, findings, steps, seed, quick, round(time.perf_counter() - start, 2), lesson, caveat
        )
