"""Vanishing (and exploding) gradients: plain vs residual nets at depths 8, 20 and 56.

Setup (He et al. 2016, Sec. 4.2 "6n+2" counting): a 3x3 stem conv (stride 2: 16x16 digits ->
8x8 maps), ``(depth - 2) / 2`` basic blocks of two 3x3 convs, global average pool, linear
classifier: ``depth`` weight layers, ``depth - 1`` of them convs, all ``width`` channels wide.
Four variants share everything but two switches:

* ``plain``       — blocks ``relu(F(x))``, no normalization (convs keep their bias),
* ``residual``    — blocks ``relu(F(x) + x)`` (identity shortcuts),
* ``plain_bn`` / ``residual_bn`` — the same with BatchNorm after every conv.

All layers use PyTorch's default initialisation (``kaiming_uniform_(a=sqrt(5))`` weights, i.e.
``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``, and the matching uniform biases): no He init, no zero-init
of the last BN, so the nets are exactly what ``nn.Conv2d`` gives you.

Measured:

1. at initialisation, on one fixed batch, the cross-entropy loss's gradient with respect to every
   conv layer's weight, ``||dL/dW_l||_F`` for ``l = 1 .. depth-1`` (``first_layer_grad_norm`` is the
   stem conv, ``last_layer_grad_norm`` the last conv);
2. a brief SGD training run (same steps, learning rate and data order for every net): the loss
   curve and the final validation accuracy.

Example:
    >>> r = vanishing_gradient(depths=(8,), quick=True, train_steps=1)
    >>> sorted(r.variants)
    ['plain', 'plain_bn', 'residual', 'residual_bn']
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from convlens.blocks import PlainBlock, ResidualBlock
from convlens.errors import InputError
from convlens.experiments.data import cpu_threads, load_digits_split, seeded, train_classifier

__all__ = ["VARIANTS", "VariantResult", "VanishingGradientResult", "build_net", "conv_grad_norms", "vanishing_gradient"]

#: variant name -> (residual?, batch norm?)
VARIANTS = {"plain": (False, False), "residual": (True, False), "plain_bn": (False, True), "residual_bn": (True, True)}

INIT_NOTE = (
    "PyTorch default init (kaiming_uniform_ with a=sqrt(5): weights and biases ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in))); "
    "same width for every layer and every variant"
)


@dataclass
class VariantResult:
    """One variant, lists over ``depths``: first/last conv weight-gradient norms at init, validation
    accuracy after training, and the full per-layer norms, loss curves and parameter counts."""

    first_layer_grad_norm: list[float]
    last_layer_grad_norm: list[float]
    val_accuracy: list[float]
    layer_grad_norms: list[list[float]] = field(default_factory=list)
    train_loss: list[list[float]] = field(default_factory=list)
    params: list[int] = field(default_factory=list)


@dataclass
class VanishingGradientResult:
    """Result of :func:`vanishing_gradient` (JSON: ``{"depths", "variants": {name: VariantResult}, ...}``)."""

    depths: list[int]
    variants: dict[str, VariantResult]
    width: int
    init: str
    setup: str
    measures: str
    findings: list[str]
    train_steps: int
    batch_size: int
    lr: float
    seed: int
    quick: bool
    seconds: float
    #: the gradients show the lesson (a deep plain net's first conv gets a far smaller gradient than a residual one's)
    lesson_shown: bool = True
    #: what the numbers of this run cannot show (e.g. accuracies at chance after a short run), or None
    caveat: str | None = None


def _lesson(depths: list[int], v: dict[str, VariantResult], steps: int) -> tuple[bool, str | None]:
    """Whether the run shows the lesson, and a caveat about what it cannot show."""
    plain, res = v["plain"].first_layer_grad_norm[-1], v["residual"].first_layer_grad_norm[-1]
    shown = res > 0 and plain < 0.1 * res
    acc = max(a for r in v.values() for a in r.val_accuracy)
    notes = []
    if not shown:
        notes.append(
            f"at depth {depths[-1]} the plain net's first-conv gradient ({_fmt(plain)}) is not far below the residual "
            f"net's ({_fmt(res)}): use deeper nets (e.g. depths 8, 20, 56) to see it vanish"
        )
    if acc < 0.25:
        notes.append(
            f"val accuracies after {steps} step(s) are at chance (0.10 for 10 digits): training is far too short to "
            "compare them; the lesson of this run is the gradient norms (run without --quick for trained accuracies)"
        )
    return shown, ("; ".join(notes) + ".") if notes else None


def build_net(
    depth: int, *, residual: bool, norm: bool, width: int = 16, in_channels: int = 1, num_classes: int = 10
) -> nn.Sequential:
    """The ``depth``-layer net of this experiment (``depth`` = 2 + 2 * blocks, e.g. 8, 20, 56).

    Example:
        >>> net = build_net(8, residual=True, norm=False)
        >>> sum(isinstance(m, nn.Conv2d) for m in net.modules())
        7
    """
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 4 or depth % 2:
        raise InputError(f"depth must be an even integer >= 4 (stem + 2 per block + classifier), got {depth!r}.")
    stem: list[nn.Module] = [nn.Conv2d(in_channels, width, 3, stride=2, padding=1, bias=not norm)]
    if norm:
        stem.append(nn.BatchNorm2d(width))
    stem.append(nn.ReLU())
    block = ResidualBlock if residual else PlainBlock
    blocks = [block(width, width, norm=norm) for _ in range((depth - 2) // 2)]
    return nn.Sequential(*stem, *blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes))


def conv_grad_norms(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[float]:
    """``||dL/dW||_F`` of every conv weight (forward order) for cross-entropy on (x, y), via
    ``torch.autograd.grad`` (no ``.grad`` left on the parameters); BatchNorm uses batch statistics.

    Example:
        >>> net = build_net(4, residual=False, norm=False)
        >>> len(conv_grad_norms(net, torch.rand(2, 1, 8, 8), torch.tensor([0, 1])))
        3
    """
    weights = [m.weight for m in net.modules() if isinstance(m, nn.Conv2d)]
    net.train()
    loss = F.cross_entropy(net(x), y)
    grads = torch.autograd.grad(loss, weights)
    return [float(g.norm()) for g in grads]


def _fmt(v: float) -> str:
    return "0" if v == 0 else f"{v:.2g}"


def _findings(depths: list[int], v: dict[str, VariantResult]) -> list[str]:
    d0, d1 = depths[0], depths[-1]

    def ratio(name: str, i: int) -> float:
        last = v[name].last_layer_grad_norm[i]
        return v[name].first_layer_grad_norm[i] / last if last > 0 else float("inf")

    out = [
        f"no normalization, first conv gradient at init: plain {_fmt(v['plain'].first_layer_grad_norm[0])} at depth {d0} -> "
        f"{_fmt(v['plain'].first_layer_grad_norm[-1])} at depth {d1}; residual {_fmt(v['residual'].first_layer_grad_norm[0])} -> "
        f"{_fmt(v['residual'].first_layer_grad_norm[-1])}.",
        f"with BatchNorm, first/last conv gradient ratio at depth {d1}: plain {ratio('plain_bn', -1):.3g}x, "
        f"residual {ratio('residual_bn', -1):.3g}x (at depth {d0}: {ratio('plain_bn', 0):.3g}x vs {ratio('residual_bn', 0):.3g}x).",
        "val accuracy after the same brief training, depth "
        + ", ".join(str(d) for d in depths)
        + ": "
        + "; ".join(f"{k} " + "/".join(f"{a:.2f}" for a in r.val_accuracy) for k, r in v.items())
        + ".",
    ]
    return out


def vanishing_gradient(
    *,
    depths: Sequence[int] = (8, 20, 56),
    width: int = 16,
    quick: bool = False,
    seed: int = 0,
    train_steps: int | None = None,
    batch_size: int | None = None,
    lr: float = 0.02,
    grad_batch: int | None = None,
    device: str | torch.device = "cpu",
    num_threads: int | None = 1,
) -> VanishingGradientResult:
    """Run the experiment (see the module docstring); ``quick`` shortens training only (all depths kept).

    Args:
        depths: even depths (weight layers), default the issue's 8, 20, 56.
        width: channels of every conv.
        quick: 4 training steps of 16 images, gradients on 32 images and validation on 100
            (instead of 150 steps of 32, 256 and all 450): same depths, same nets.
        seed: seeds the data split, every net's init (same seed per depth for all variants) and the data order.
        train_steps: override the number of SGD steps.
        grad_batch: samples in the fixed batch used for the gradient norms at init.

        num_threads: CPU threads while it runs (restored afterwards); None leaves torch's setting.

    Example:
        >>> r = vanishing_gradient(depths=(4,), quick=True, train_steps=2)
        >>> len(r.variants["plain"].first_layer_grad_norm)
        1
    """
    with cpu_threads(num_threads):  # tiny nets: one thread is several times faster than two
        depths = [int(d) for d in depths]
        if not depths:
            raise InputError("depths must list at least one depth, e.g. 8,20,56.")
        steps = train_steps if train_steps is not None else (4 if quick else 150)
        batch_size = batch_size or (16 if quick else 32)
        grad_batch = grad_batch or (32 if quick else 256)
        if steps < 0:
            raise InputError(f"train_steps must be >= 0, got {steps}.")
        start = time.perf_counter()
        data = load_digits_split(16, seed=seed, device=device)
        if quick:  # a smaller validation set: accuracy means little after 4 steps anyway
            data = type(data)(data.x_train, data.y_train, data.x_val[:100], data.y_val[:100], data.size)
        xg, yg = data.x_train[:grad_batch], data.y_train[:grad_batch]
        results: dict[str, VariantResult] = {}
        for name, (residual, norm) in VARIANTS.items():
            vr = VariantResult([], [], [])
            for depth in depths:
                with seeded(seed + depth):
                    net = build_net(depth, residual=residual, norm=norm, width=width).to(device)
                norms = conv_grad_norms(net, xg, yg)
                curve = train_classifier(net, data, steps=steps, batch_size=batch_size, lr=lr, seed=seed)
                vr.layer_grad_norms.append(norms)
                vr.first_layer_grad_norm.append(norms[0])
                vr.last_layer_grad_norm.append(norms[-1])
                vr.val_accuracy.append(curve.val_accuracy)
                vr.train_loss.append(curve.loss)
                vr.params.append(sum(p.numel() for p in net.parameters()))
            results[name] = vr
        setup = (
            f"sklearn digits upscaled to 16x16 ({data.x_train.shape[0]} train / {data.x_val.shape[0]} val); stem 3x3/s2 conv, "
            f"(depth-2)/2 basic blocks of two 3x3 convs, {width} channels everywhere, global average pool, linear; "
            f"SGD momentum 0.9, lr {lr}, batch {batch_size}, {steps} steps."
        )
        measures = (
            f"Frobenius norm of dLoss/dW for every conv weight at initialisation on one fixed batch of {xg.shape[0]} "
            "training images (cross-entropy, BatchNorm in training mode), then validation accuracy after the brief training."
        )
        shown, caveat = _lesson(depths, results, steps)
        findings = _findings(depths, results) + (["CAVEAT: " + caveat] if caveat else [])
        return VanishingGradientResult(
            depths=depths,
            variants=results,
            width=width,
            init=INIT_NOTE,
            setup=setup,
            measures=measures,
            findings=findings,
            train_steps=steps,
            batch_size=batch_size,
            lr=lr,
            seed=seed,
            quick=quick,
            lesson_shown=shown,
            caveat=caveat,
            seconds=round(time.perf_counter() - start, 2),
        )
