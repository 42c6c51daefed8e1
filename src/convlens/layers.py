"""Naming layers: the one place a user's layer specification becomes modules.

A specification is:

* ``"auto"`` -- the last layer with a spatial output (at least 2x2) before global pooling, the usual
  Grad-CAM target; found by running one probe input and watching every module's output;
* ``"stages"`` -- one layer per spatial resolution (the end of each stage), for early-vs-deep views;
* a qualified name (``"layer4.1.conv2"``), or a glob where ``*`` stays inside one dotted segment and
  ``**`` crosses segments (``"features.*"`` = the direct children of ``features``);
* an ``nn.Module`` object that belongs to the model;
* a list of any of these.

Unknown names raise :class:`~convlens.errors.LayerError` with the closest existing names.

Example:
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1))
    >>> [r.name for r in resolve(net, "auto", input_shape=(3, 8, 8))]
    ['1']
    >>> [r.name for r in resolve(net, "*")]
    ['0', '1', '2']
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from convlens.errors import LayerError
from convlens.hooks import capture, device_of, preserve_state

__all__ = ["LayerRef", "LayerShape", "resolve", "probe_shapes", "auto_layer", "stage_layers", "glob_to_regex"]


@dataclass(frozen=True)
class LayerRef:
    """A resolved layer: its qualified name and the module object."""

    name: str
    module: nn.Module


@dataclass(frozen=True)
class LayerShape:
    """One module call seen by :func:`probe_shapes`: name, type and output shape (first tensor)."""

    name: str
    type: str
    shape: tuple[int, ...]


def glob_to_regex(pattern: str) -> re.Pattern[str]:
    """Compile a layer glob: ``*`` matches within one dotted segment, ``**`` across segments, ``?`` one char.

    Example:
        >>> bool(glob_to_regex("layer*.0").fullmatch("layer3.0")), bool(glob_to_regex("*").fullmatch("a.b"))
        (True, False)
    """
    out = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^.]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^.]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out))


def probe_shapes(
    model: nn.Module, input_shape: Sequence[int] = (3, 224, 224), *, device: str | torch.device | None = None
) -> list[LayerShape]:
    """Run one zero input through ``model`` (eval mode, no grad) and list every module call in completion order.

    Containers complete after their children, so a stage's container comes right after its last child.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3))
        >>> probe_shapes(net, (1, 5, 5))[0]
        LayerShape(name='0', type='Conv2d', shape=(1, 2, 3, 3))
    """
    names = [n for n, _ in model.named_modules() if n]
    types = {n: type(m).__name__ for n, m in model.named_modules()}
    order: list[LayerShape] = []
    x = torch.zeros(1, *input_shape, device=device_of(model, device))
    with preserve_state(model, train=False), torch.no_grad(), capture(model, names) as cap:
        cap.run(x)
        for name, k in cap.order:
            order.append(LayerShape(name, types[name], tuple(cap.calls[name][k].shape)))
    return order


#: Adaptive pools are the global-pooling step (VGG's 7x7 one included), never a feature layer.
_POOL_TYPES = ("AdaptiveAvgPool2d", "AdaptiveMaxPool2d", "SelectAdaptivePool2d")


def _is_spatial(s: LayerShape) -> bool:
    return len(s.shape) == 4 and s.shape[2] >= 2 and s.shape[3] >= 2 and s.type not in _POOL_TYPES


def auto_layer(model: nn.Module, input_shape: Sequence[int] = (3, 224, 224)) -> LayerRef:
    """The last module whose output is spatial (N, C, H, W with H, W >= 2): the usual CAM target.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten())
        >>> auto_layer(net, (3, 6, 6)).name
        '0'
    """
    modules = dict(model.named_modules())
    spatial = [s for s in probe_shapes(model, input_shape) if _is_spatial(s)]
    if not spatial:
        raise LayerError("the model has no layer with a spatial (N, C, H, W) output of at least 2x2; name a layer.")
    name = spatial[-1].name
    return LayerRef(name, modules[name])


def stage_layers(model: nn.Module, input_shape: Sequence[int] = (3, 224, 224)) -> list[LayerRef]:
    """One layer per stage, input to head.

    timm models declare their stages (``feature_info``); otherwise each spatial resolution (H, W) is a
    stage, ended by the last-finishing of its shallowest modules (ResNet-50: ``layer1``, not
    ``layer2.0.conv1`` that still runs at layer1's resolution).

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.MaxPool2d(2), torch.nn.Conv2d(4, 4, 1))
        >>> [r.name for r in stage_layers(net, (3, 10, 10))]
        ['0', '2']
    """
    modules = dict(model.named_modules())
    info = getattr(model, "feature_info", None)
    if isinstance(info, list) and info and all(isinstance(d, dict) and d.get("module") in modules for d in info):
        return [LayerRef(d["module"], modules[d["module"]]) for d in info]
    records = probe_shapes(model, input_shape)
    # a module called several times (ResNet's shared ReLU) is named by its last call only
    last_call = {s.name: i for i, s in enumerate(records)}
    # per resolution: the shallowest modules (whole blocks, not their first 1x1 conv), last to finish
    best: dict[tuple[int, int], tuple[int, str]] = {}
    for i, s in enumerate(records):
        if last_call[s.name] != i or not _is_spatial(s):
            continue
        depth = s.name.count(".")
        key = s.shape[2:]
        if key not in best or depth <= best[key][0]:
            best[key] = (depth, s.name)  # dict keeps first-appearance order of each resolution
    if not best:
        raise LayerError("the model has no layer with a spatial (N, C, H, W) output of at least 2x2.")
    last_at = {k: v[1] for k, v in best.items()}
    return [LayerRef(n, modules[n]) for n in last_at.values()]


def _suggest(name: str, names: list[str]) -> str:
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
    if close:
        return "did you mean " + ", ".join(f"'{c}'" for c in close) + "?"
    return f"see `convlens summary` for the {len(names)} layer names."


def resolve(
    model: nn.Module,
    spec: str | nn.Module | Sequence[str | nn.Module] | None = "auto",
    *,
    input_shape: Sequence[int] = (3, 224, 224),
) -> list[LayerRef]:
    """Turn a layer specification into a non-empty list of :class:`LayerRef` (no duplicates, spec order).

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3))
        >>> resolve(net, "0")[0].module is net[0]
        True
    """
    named = dict(model.named_modules())
    names = [n for n in named if n]
    if spec is None:
        spec = "auto"
    specs = [spec] if isinstance(spec, (str, nn.Module)) else list(spec)
    if not specs:
        raise LayerError("no layer given; name at least one layer or use 'auto'.")
    out: list[LayerRef] = []
    for s in specs:
        if isinstance(s, nn.Module):
            hits = [n for n, m in named.items() if m is s]
            if not hits:
                raise LayerError(f"the given {type(s).__name__} module is not part of this model.")
            out.append(LayerRef(hits[0], s))
        elif not isinstance(s, str):
            raise LayerError(f"a layer must be a name, glob, 'auto' or module; got {type(s).__name__}.")
        elif s == "auto":
            out.append(auto_layer(model, input_shape))
        elif s == "stages":
            out.extend(stage_layers(model, input_shape))
        elif s in named and s:
            out.append(LayerRef(s, named[s]))
        elif any(ch in s for ch in "*?"):
            rx = glob_to_regex(s)
            hits = [n for n in names if rx.fullmatch(n)]
            if not hits:
                raise LayerError(f"layer pattern '{s}' matches no layer; " + _suggest(s.replace("*", ""), names))
            out.extend(LayerRef(n, named[n]) for n in hits)
        else:
            raise LayerError(f"layer '{s}' not found in {type(model).__name__}; " + _suggest(s, names))
    unique: dict[str, LayerRef] = {}
    for r in out:
        unique.setdefault(r.name, r)
    return list(unique.values())
