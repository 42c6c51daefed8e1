"""Shared pieces of the experiments: the bundled digits data, seeded model construction, a tiny
training loop. Everything runs offline on CPU in seconds (and unchanged on a GPU).

Example:
    >>> d = load_digits_split(size=16, seed=0)
    >>> tuple(d.x_train.shape[1:]), d.num_classes
    ((1, 16, 16), 10)
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from convlens.errors import InputError

__all__ = ["DigitsSplit", "load_digits_split", "seeded", "cpu_threads", "TrainCurve", "train_classifier", "accuracy"]


@dataclass(frozen=True)
class DigitsSplit:
    """scikit-learn's 1,797 handwritten 8x8 digits, upscaled (bilinear) to ``size`` and scaled to [0, 1].

    ``x_*`` are (N, 1, size, size) float32, ``y_*`` int64 labels; the split is stratified-free but
    seeded (a random permutation), ``val_fraction`` of the samples held out.
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    size: int
    num_classes: int = 10


def load_digits_split(
    size: int = 16, *, val_fraction: float = 0.25, seed: int = 0, device: str | torch.device = "cpu"
) -> DigitsSplit:
    """Load sklearn digits (bundled with scikit-learn, no download), upscale and split.

    Example:
        >>> d = load_digits_split(size=8, seed=1)
        >>> d.x_train.shape[0] + d.x_val.shape[0]
        1797
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 8:
        raise InputError(f"size must be an integer >= 8 (the digits are 8x8), got {size!r}.")
    if not 0.0 < val_fraction < 1.0:
        raise InputError(f"val_fraction must be in (0, 1), got {val_fraction}.")
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0  # (1797, 1, 8, 8), values 0..16
    if size != 8:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    y = torch.tensor(bunch.target, dtype=torch.int64)
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(x.shape[0], generator=g)
    n_val = int(round(val_fraction * x.shape[0]))
    val, train = perm[:n_val], perm[n_val:]
    dev = torch.device(device)
    return DigitsSplit(x[train].to(dev), y[train].to(dev), x[val].to(dev), y[val].to(dev), size)


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a block (e.g. building a model with PyTorch's default init) under ``seed`` without
    touching the caller's global RNG: the state is forked and restored afterwards.

    Example:
        >>> with seeded(0):
        ...     a = torch.rand(1)
        >>> with seeded(0):
        ...     b = torch.rand(1)
        >>> bool(a == b)
        True
    """
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


@contextlib.contextmanager
def cpu_threads(n: int | None) -> Iterator[None]:
    """Use ``n`` intra-op CPU threads inside the block and restore the previous count afterwards
    (``None``: leave it alone).

    The experiments' nets are tiny (16 channels on 8x8 maps), where thread start-up and
    synchronisation dominate (``benchmarks/bench_vision.py`` compares 1 and 2 threads). GPU work is
    unaffected.

    Example:
        >>> before = torch.get_num_threads()
        >>> with cpu_threads(1):
        ...     torch.get_num_threads()
        1
        >>> torch.get_num_threads() == before
        True
    """
    if n is None:
        yield
        return
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InputError(f"num_threads must be a positive integer or None, got {n!r}.")
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass(frozen=True)
class TrainCurve:
    """Loss after each SGD step, and validation accuracy at the end."""

    loss: list[float]
    val_accuracy: float


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512) -> float:
    """Fraction of correct argmax predictions (model switched to eval mode).

    Example:
        >>> m = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> 0.0 <= accuracy(m, torch.zeros(3, 1, 2, 2), torch.zeros(3, dtype=torch.long)) <= 1.0
        True
    """
    model.eval()
    correct = 0
    for i in range(0, x.shape[0], batch_size):
        correct += int((model(x[i : i + batch_size]).argmax(1) == y[i : i + batch_size]).sum())
    return correct / max(1, x.shape[0])


def train_classifier(
    model: nn.Module,
    data: DigitsSplit,
    *,
    steps: int,
    batch_size: int = 32,
    lr: float = 0.05,
    momentum: float = 0.9,
    seed: int = 0,
    on_step: Callable[[int, float], None] | None = None,
) -> TrainCurve:
    """Train with SGD + momentum on cross-entropy for ``steps`` mini-batches (seeded shuffling).

    A non-finite loss (a diverging net) is recorded as ``nan`` and training stops there.

    Example:
        >>> d = load_digits_split(8)
        >>> with seeded(0):
        ...     m = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
        >>> len(train_classifier(m, d, steps=3).loss)
        3
    """
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    n = data.x_train.shape[0]
    order = torch.randperm(n, generator=g)
    pos = 0
    losses: list[float] = []
    model.train()
    for step in range(steps):
        if pos + batch_size > n:
            order, pos = torch.randperm(n, generator=g), 0
        idx = order[pos : pos + batch_size].to(data.x_train.device)
        pos += batch_size
        loss = F.cross_entropy(model(data.x_train[idx]), data.y_train[idx])
        if not torch.isfinite(loss):
            losses.append(float("nan"))
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if on_step is not None:
            on_step(step, losses[-1])
    return TrainCurve(losses, accuracy(model, data.x_val, data.y_val))
