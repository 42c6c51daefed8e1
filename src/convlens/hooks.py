"""Hooks: the one way convlens looks inside a running model.

Two context managers, used by activations, CAM, feature visualization, summaries and training:

* :func:`preserve_state` snapshots every module's ``training`` flag and every parameter's
  ``requires_grad`` and puts them back on exit, even when the body raises.
* :func:`capture` registers forward hooks on named layers, records their outputs (optionally still
  attached to the autograd graph, so gradients can be taken with ``torch.autograd.grad``), can stop
  the forward pass right after the last layer of interest (truncation: the rest of the network never
  runs), and always removes its handles.

Example:
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU(), torch.nn.Flatten())
    >>> with capture(net, ["0"], stop_after="0") as cap:
    ...     out = cap.run(torch.zeros(1, 1, 5, 5))
    >>> tuple(cap.activations["0"].shape), out is None
    ((1, 2, 3, 3), True)
    >>> hook_count(net)
    0
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

__all__ = ["preserve_state", "capture", "Capture", "hook_count", "first_tensor", "device_of", "StopForward"]


def device_of(model: nn.Module, device: str | torch.device | None = None) -> torch.device:
    """The device to compute on: ``device`` when given, else the model's (first parameter or buffer).

    Example:
        >>> device_of(torch.nn.Linear(2, 2))
        device(type='cpu')
    """
    if device is not None:
        return torch.device(device)
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


@contextmanager
def preserve_state(
    model: nn.Module, *, train: bool | None = None, requires_grad: bool | None = None
) -> Iterator[nn.Module]:
    """Restore each module's ``training`` and each parameter's ``requires_grad`` on exit.

    Args:
        train: if given, set the whole model to that mode inside the block.
        requires_grad: if given, set every parameter's flag inside the block (``False`` lets
            ``autograd.grad`` skip parameter gradients entirely).

    Example:
        >>> net = torch.nn.BatchNorm2d(3).train()
        >>> with preserve_state(net, train=False, requires_grad=False):
        ...     net.training, net.weight.requires_grad
        (False, False)
        >>> net.training, net.weight.requires_grad
        (True, True)
    """
    modes = [(m, m.training) for m in model.modules()]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        if train is not None:
            model.train(train)
        if requires_grad is not None:
            for p, _ in flags:
                p.requires_grad_(requires_grad)
        yield model
    finally:
        for m, mode in modes:
            m.training = mode
        for p, flag in flags:
            p.requires_grad_(flag)


def hook_count(model: nn.Module) -> int:
    """Number of forward, pre-forward and backward hooks currently registered on ``model``'s modules.

    Example:
        >>> hook_count(torch.nn.Linear(1, 1))
        0
    """
    total = 0
    for m in model.modules():
        total += len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        total += len(getattr(m, "_backward_pre_hooks", {}))
    return total


def first_tensor(out: Any) -> torch.Tensor | None:
    """The first tensor found in a module output (tensor, tuple/list, or dict/Mapping); ``None`` if none.

    Example:
        >>> first_tensor((None, {"a": torch.ones(1)})).shape
        torch.Size([1])
    """
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, Mapping):
        out = list(out.values())
    if isinstance(out, (tuple, list)):
        for item in out:
            t = first_tensor(item)
            if t is not None:
                return t
    return None


class StopForward(Exception):
    """Raised inside a hook to end the forward pass early; caught by :meth:`Capture.run`."""


@dataclass
class Capture:
    """What :func:`capture` records. ``activations[name]`` is that layer's (first tensor) output.

    For a module called several times in one forward, ``calls[name]`` holds every output in call
    order and ``activations[name]`` the last one.
    """

    model: nn.Module
    names: list[str]
    stop_after: str | None = None
    activations: dict[str, torch.Tensor] = field(default_factory=dict)
    calls: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    #: (name, call index) of every recorded call, in completion order (containers after children)
    order: list[tuple[str, int]] = field(default_factory=list)

    def run(self, *args: Any, **kwargs: Any) -> Any:
        """Call the model; returns its output, or ``None`` if the forward was truncated by ``stop_after``."""
        self.activations.clear()
        self.calls.clear()
        self.order.clear()
        try:
            return self.model(*args, **kwargs)
        except StopForward:
            return None


@contextmanager
def capture(
    model: nn.Module,
    layers: Sequence[str] | Mapping[str, nn.Module],
    *,
    detach: bool = True,
    clone: bool = False,
    stop_after: str | None = None,
    replace: Mapping[str, Callable[[torch.Tensor], torch.Tensor]] | None = None,
    on_call: Callable[[str, tuple[Any, ...], Any], None] | None = None,
    on_pre_call: Callable[[str, tuple[Any, ...]], None] | None = None,
) -> Iterator[Capture]:
    """Record the outputs of ``layers`` during forward passes; remove every hook on exit.

    Args:
        model: the network.
        layers: qualified module names (as in ``model.named_modules()``) or a name->module mapping.
        detach: store detached tensors (``False`` keeps them in the autograd graph for
            ``torch.autograd.grad(score, cap.activations[name])``).
        clone: hand a clone downstream so that later in-place ops (``ReLU(inplace=True)``)
            cannot overwrite the recorded tensor; costs one copy of each captured activation.
        stop_after: a layer name; the forward pass stops right after it (use :meth:`Capture.run`).
        replace: name -> function applied to that layer's output before the rest of the network sees it.
        on_call: called as ``on_call(name, inputs, output)`` inside each hook, before anything is
            recorded (the graph tracer uses it to see which tensors each call consumed and produced).
        on_pre_call: called as ``on_pre_call(name, inputs)`` right before each call of a layer runs
            (its inputs are still unmodified by in-place ops of that layer, e.g. ``ReLU(inplace=True)``).

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU(inplace=True))
        >>> with torch.no_grad():
        ...     _ = net[0].weight.copy_(torch.eye(2)), net[0].bias.zero_()
        >>> with capture(net, ["0"], detach=False, clone=True) as cap:
        ...     y = cap.run(torch.tensor([[-1.0, 1.0]]))
        >>> cap.activations["0"].tolist(), y.tolist()  # the in-place ReLU zeroed its input, not the record
        ([[-1.0, 1.0]], [[0.0, 1.0]])
    """
    modules = dict(model.named_modules())
    if isinstance(layers, Mapping):
        targets = dict(layers)
    else:
        missing = [n for n in layers if n not in modules]
        if missing:
            from convlens.errors import LayerError

            raise LayerError(f"layer '{missing[0]}' is not a module of this model.")
        targets = {n: modules[n] for n in layers}
    if stop_after is not None and stop_after not in targets:
        targets[stop_after] = modules[stop_after]
    replace = dict(replace or {})
    cap = Capture(model=model, names=list(targets), stop_after=stop_after)
    handles = []

    def make_hook(name: str) -> Callable[..., Any]:
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> Any:
            if on_call is not None:
                on_call(name, tuple(_inputs), output)
            t = first_tensor(output)
            new_output = None
            if t is not None:
                if name in replace:
                    t = replace[name](t)
                    new_output = t
                recorded = t.detach() if detach else t
                if clone:
                    new_output = t.clone()
                calls = cap.calls.setdefault(name, [])
                cap.order.append((name, len(calls)))
                calls.append(recorded)
                cap.activations[name] = recorded
            if stop_after == name:
                raise StopForward
            if new_output is not None and isinstance(output, torch.Tensor):
                return new_output
            return None

        return hook

    def make_pre_hook(name: str) -> Callable[..., Any]:
        def pre_hook(_module: nn.Module, inputs: Any) -> None:
            if on_pre_call is not None:
                on_pre_call(name, tuple(inputs))

        return pre_hook

    try:
        for name, module in targets.items():
            if on_pre_call is not None:
                handles.append(module.register_forward_pre_hook(make_pre_hook(name)))
            handles.append(module.register_forward_hook(make_hook(name)))
        yield cap
    finally:
        for h in handles:
            h.remove()
