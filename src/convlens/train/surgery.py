"""Model surgery for transfer learning: find and replace the head, split the base into stages,
freeze the right parameters and keep frozen BatchNorm layers in eval mode.

Freezing done right means three things at once (each is a classic bug when forgotten):

1. ``requires_grad = False`` on frozen parameters (no gradients are computed for them);
2. frozen parameters are NOT handed to the optimizer (weight decay or momentum would still move them);
3. BatchNorm (and every module) of the frozen part stays in ``eval()`` while the rest trains, so its
   running mean/var are not updated by the new data (``model.train()`` alone would update them).

Example:
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(5))
    >>> find_head(net)[0]
    '3'
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from convlens.errors import ModelError

__all__ = [
    "find_head",
    "replace_head",
    "reinitialize",
    "base_stages",
    "top_stage_groups",
    "set_trainable",
    "frozen_modules",
    "apply_train_mode",
    "head_removed",
    "StageGroup",
]


def _get(model: nn.Module, name: str) -> nn.Module:
    return model.get_submodule(name) if name else model


def _set(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(_get(model, parent_name), child, module)


def find_head(model: nn.Module) -> tuple[str, nn.Module]:
    """The classifier head: timm's ``get_classifier()`` when the model has it, else the last ``nn.Linear``.

    Raises:
        ModelError: the model has no classifier to replace.

    Example:
        >>> import torchvision
        >>> find_head(torchvision.models.resnet18())[0]
        'fc'
    """
    names = {id(m): n for n, m in model.named_modules()}
    getter = getattr(model, "get_classifier", None)
    if callable(getter):
        head = getter()
        if isinstance(head, nn.Module) and id(head) in names and any(True for _ in head.parameters()):
            return names[id(head)], head
    last = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not last:
        raise ModelError(
            f"{type(model).__name__} has no classifier head (no get_classifier() and no nn.Linear) to replace."
        )
    return last[-1]


def _init_linear(layer: nn.Linear, generator: torch.Generator) -> None:
    # PyTorch's default Linear init (kaiming-uniform with a = sqrt(5)), but from our own generator
    nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=generator)
    if layer.bias is not None:
        bound = 1.0 / math.sqrt(layer.in_features) if layer.in_features > 0 else 0.0
        with torch.no_grad():
            layer.bias.uniform_(-bound, bound, generator=generator)


def replace_head(model: nn.Module, num_classes: int, *, seed: int = 0) -> tuple[str, nn.Module]:
    """Give ``model`` a fresh ``num_classes`` head (seeded init) and return ``(name, head)``.

    timm models go through ``reset_classifier`` (which also fixes ``model.num_classes``); others get
    the last ``nn.Linear`` swapped for a new one with the same ``in_features``.

    Example:
        >>> import torchvision
        >>> name, head = replace_head(torchvision.models.resnet18(), 3)
        >>> name, head.out_features
        ('fc', 3)
    """
    if num_classes < 1:
        raise ModelError(f"num_classes must be >= 1, got {num_classes}.")
    gen = torch.Generator().manual_seed(int(seed))
    name, old = find_head(model)
    device = next(old.parameters()).device
    if callable(getattr(model, "reset_classifier", None)) and callable(getattr(model, "get_classifier", None)):
        model.reset_classifier(num_classes)
        name, head = find_head(model)
    else:
        if not isinstance(old, nn.Linear):
            raise ModelError(f"head '{name}' is a {type(old).__name__}; only nn.Linear heads can be replaced.")
        head = nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
        _set(model, name, head)
    for m in head.modules():
        if isinstance(m, nn.Linear):
            _init_linear(m, gen)
        elif isinstance(m, nn.Conv2d):
            nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5), generator=gen)
            if m.bias is not None:
                with torch.no_grad():
                    m.bias.zero_()
    head.to(device)
    if hasattr(model, "num_classes"):
        with contextlib.suppress(AttributeError, TypeError):  # a read-only property keeps its value
            model.num_classes = num_classes
    return name, head


def reinitialize(model: nn.Module, *, seed: int = 0) -> None:
    """Random init of every layer (``reset_parameters``), reproducible with ``seed``: training from scratch.

    The caller's global RNG state is restored afterwards.

    Example:
        >>> lin = nn.Linear(2, 2); reinitialize(lin, seed=1); w = lin.weight.clone()
        >>> reinitialize(lin, seed=1); bool(torch.equal(w, lin.weight))
        True
    """
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(seed))
        for m in model.modules():
            reset = getattr(m, "reset_parameters", None)
            if callable(reset):
                reset()
            if isinstance(m, nn.modules.batchnorm._NormBase) and m.track_running_stats:
                m.reset_running_stats()


@contextmanager
def head_removed(model: nn.Module, head_name: str) -> Iterator[nn.Module]:
    """Temporarily replace the head with ``nn.Identity``: the model then returns the head's input (features).

    Example:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> with head_removed(net, "1") as base:
        ...     base(torch.zeros(1, 2, 2)).shape
        torch.Size([1, 4])
    """
    head = _get(model, head_name)
    _set(model, head_name, nn.Identity())
    try:
        yield model
    finally:
        _set(model, head_name, head)


def _under(name: str, prefix: str) -> bool:
    return prefix == "" or name == prefix or name.startswith(prefix + ".")


def base_stages(model: nn.Module, head_name: str, input_size: int = 224) -> list[list[str]]:
    """The base's parameter names grouped by stage, input to output (see :func:`convlens.layers.stage_layers`).

    Parameters after the last stage end (e.g. EfficientNet's ``conv_head``/``bn2``) join the last stage.

    Example:
        >>> import torchvision
        >>> [g[0] for g in base_stages(torchvision.models.resnet18(), "fc", 64)][-2:]
        ['layer3.0.conv1.weight', 'layer4.0.conv1.weight']
    """
    from convlens.layers import stage_layers

    params = [n for n, _ in model.named_parameters() if not _under(n, head_name)]
    ends: list[str] = []
    # probe at >= 224 px first: at a small training size the last stages shrink below 2x2 and would
    # merge (ResNet at 32 px: layer3 + layer4); a model tied to its own size is probed at that size
    with head_removed(model, head_name):
        for size in dict.fromkeys((max(224, input_size), input_size)):
            try:
                ends = [r.name for r in stage_layers(model, (3, size, size))]
                break
            except Exception:  # this size does not fit the model; next, else one stage per child
                continue
    if not ends:
        ends = list(dict.fromkeys(n.split(".")[0] for n in params))
    groups: list[list[str]] = []
    i = 0
    for end in ends:
        grp: list[str] = []
        last = max((k for k, n in enumerate(params) if _under(n, end)), default=-1)
        while i <= last:
            grp.append(params[i])
            i += 1
        if grp:
            groups.append(grp)
    if i < len(params):
        if groups:
            groups[-1].extend(params[i:])
        else:
            groups.append(params[i:])
    return groups


@dataclass(frozen=True)
class StageGroup:
    """Parameter names of one unfrozen stage and its learning-rate factor (discriminative LRs)."""

    names: tuple[str, ...]
    lr_factor: float


def top_stage_groups(stages: list[list[str]], n: int, *, decay: float = 0.5) -> list[StageGroup]:
    """The top ``n`` stages, the topmost with factor ``decay``, the next ``decay**2``... (deeper layers
    are more generic features and move less: layer-wise learning-rate decay).

    Example:
        >>> [g.lr_factor for g in top_stage_groups([["a"], ["b"], ["c"]], 2)]
        [0.25, 0.5]
    """
    if n < 0:
        raise ModelError(f"unfreeze must be >= 0 stages, got {n}.")
    chosen = stages[max(0, len(stages) - n) :] if n else []
    k = len(chosen)
    return [StageGroup(tuple(g), decay ** (k - i)) for i, g in enumerate(chosen)]


def set_trainable(model: nn.Module, trainable: Iterable[str]) -> list[str]:
    """``requires_grad = True`` exactly for the named parameters, False for all others; returns the frozen names.

    Example:
        >>> lin = nn.Linear(2, 2)
        >>> set_trainable(lin, ["bias"]), lin.weight.requires_grad
        (['weight'], False)
    """
    keep = set(trainable)
    unknown = keep - {n for n, _ in model.named_parameters()}
    if unknown:
        raise ModelError(f"unknown parameter name(s) to train, e.g. '{sorted(unknown)[0]}'.")
    frozen = []
    for n, p in model.named_parameters():
        p.requires_grad_(n in keep)
        if n not in keep:
            frozen.append(n)
    return frozen


def frozen_modules(model: nn.Module) -> list[str]:
    """Modules to keep in eval mode: every module without a trainable parameter in its subtree that either
    holds (frozen) parameters or sits in a parent without trainable parameters (so Dropout/BatchNorm inside
    a frozen block are frozen; a parameter-free module inside a block that trains keeps training).

    Example:
        >>> net = nn.Sequential(nn.BatchNorm2d(2), nn.Linear(2, 2))
        >>> _ = set_trainable(net, ["1.weight", "1.bias"]); frozen_modules(net)
        ['0']
    """
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]

    def subtree_trains(name: str) -> bool:
        return any(_under(t, name) for t in trainable)

    holders = {n for n, m in model.named_modules() if any(True for _ in m.parameters())}

    def owner(name: str) -> str:  # nearest ancestor (or self) holding parameters
        while name and name not in holders:
            name = name.rpartition(".")[0]
        return name

    out = []
    for name, _ in model.named_modules():
        if name and not subtree_trains(owner(name)):
            out.append(name)
    return out


def apply_train_mode(model: nn.Module, frozen: Iterable[str]) -> None:
    """``model.train()``, then ``eval()`` on each frozen module (running statistics stay unchanged)."""
    model.train()
    for name in frozen:
        _get(model, name).eval()
