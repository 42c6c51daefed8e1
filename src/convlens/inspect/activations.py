"""Intermediate activations: what each layer outputs for one image, and which channels respond most.

:func:`get_activations` records layer outputs with :func:`convlens.hooks.capture` (hooks removed even on
exceptions, training flags restored, outputs cloned so that later in-place ops cannot change them).
For a module returning a tuple or dict, the first tensor is recorded; for a module called several
times, the last call.

Channel activity (for the top-k ranking) is the spatial mean of the channel's map,
``a_c = 1/(H·W) Σ_{i,j} A[c, i, j]``; sparsity is the fraction of values ``<= 0``.

Example:
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Conv2d(4, 2, 3))
    >>> acts = get_activations(net, torch.zeros(1, 3, 8, 8), ["0", "2"])
    >>> {k: tuple(v.shape) for k, v in acts.items()}
    {'0': (1, 4, 6, 6), '2': (1, 2, 4, 4)}
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from convlens.errors import MODEL_FAILURES, ConvlensError, InputError, LayerError, first_line
from convlens.hooks import capture, preserve_state
from convlens.inspect.summary import hwc
from convlens.layers import as_nchw, resolve
from convlens.serialize import to_jsonable

if TYPE_CHECKING:
    from convlens.models import ModelBundle

_CALL = re.compile(r"^(.+?)\s*#(\d+)$")  # 'relu#1' / 'relu #1': call 1 of layer relu

__all__ = [
    "Activations",
    "ChannelScore",
    "LayerActivationStats",
    "get_activations",
    "activation_stats",
    "top_channels",
    "to_nchw",
    "LayerActivation",
    "ActivationReport",
    "activation_report",
]


class Activations(dict):
    """``{layer name: activation tensor}`` as :func:`get_activations` returns it: a plain ``dict`` that
    also draws itself in Jupyter (the most active channels of each layer, images inline)."""

    def _repr_html_(self) -> str:
        """Rich display in Jupyter (:func:`convlens.plot.html.activations_html`)."""
        from convlens.plot.html import activations_html

        return activations_html(self)


@dataclass(frozen=True)
class ChannelScore:
    """A channel and its spatial-mean / max activation (first image of the batch)."""

    channel: int
    mean: float
    max: float


@dataclass(frozen=True)
class LayerActivationStats:
    """Summary numbers of one layer's activation (first image). ``output_shape`` is HxWxC."""

    layer: str
    output_shape: tuple[int, ...]
    mean: float
    std: float
    min: float
    max: float
    sparsity: float
    top_channels: list[ChannelScore]


def get_activations(
    model: nn.Module,
    x: torch.Tensor,
    layers: str | nn.Module | Sequence[str | nn.Module] = "stages",
) -> Activations:
    """Run ``model`` on ``x`` (eval mode, no grad; modes restored) and return ``{layer name: output}``
    (an :class:`Activations` dict).

    ``layers``: a name, glob (``features.*``), module, list of these, ``'stages'`` (the default: one
    layer per stage), or ``'auto'`` (THE auto layer of every front end, :func:`convlens.layers.auto_layer`
    at ``x``'s size -- the layer ``convlens cam`` explains). A module called
    several times records its last call; ``'name#k'`` picks call ``k`` (from 0, as ``relu #1`` in
    ``convlens summary``). Tensors are detached clones on the model's device, in the order the layers
    were resolved (``name#k`` picks last).

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.MaxPool2d(2))
        >>> list(get_activations(net, torch.zeros(1, 3, 10, 10))), list(get_activations(net, torch.zeros(1, 3, 10, 10), "auto"))
        (['0', '1'], ['1'])
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise InputError(f"x must be an (N, C, H, W) tensor, got {getattr(x, 'shape', type(x).__name__)}.")
    if not torch.isfinite(x).all():
        raise InputError("x contains NaN or infinite values; check the image and preprocessing.")
    items = list(layers) if isinstance(layers, (list, tuple)) else [layers]
    plain: list[Any] = []
    picks: list[tuple[str, int]] = []  # ('relu', 1) for 'relu#1'
    for item in items:
        m = _CALL.match(item) if isinstance(item, str) else None
        if m:
            picks.append((m.group(1), int(m.group(2))))
        else:
            plain.append(item)
    shape = tuple(x.shape[1:])
    names = [r.name for r in resolve(model, plain if len(plain) != 1 else plain[0], input_shape=shape)] if plain else []
    bases = [resolve(model, base, input_shape=shape)[0].name for base, _ in picks]
    hooked = list(dict.fromkeys(names + bases))
    with preserve_state(model, train=False), torch.no_grad(), capture(model, hooked, detach=True, clone=True) as cap:
        try:
            cap.run(x)
        except ConvlensError:
            raise
        except MODEL_FAILURES as e:
            raise InputError(f"the model failed on this {'x'.join(map(str, x.shape))} input ({first_line(e)}).") from e
        missing = [n for n in hooked if n not in cap.activations]
        if missing:
            raise LayerError(f"layer '{missing[0]}' did not run (or returned no tensor) in the forward pass.")
        out = Activations((n, cap.activations[n]) for n in names)
        for base, (_, k) in zip(bases, picks, strict=True):
            calls = cap.calls[base]
            if k >= len(calls):
                raise LayerError(
                    f"layer '{base}' ran {len(calls)} time(s) in the forward pass; '{base}#{k}' does not exist (calls count from 0)."
                )
            out[f"{base}#{k}"] = calls[k]
        return out


def to_nchw(model: nn.Module, x: torch.Tensor, acts: Mapping[str, torch.Tensor]) -> Activations:
    """``acts`` with every spatial map as (N, C, H, W): channels-last (N, H, W, C) maps (Swin, ConvNeXt
    blocks, ``Permute`` layers) permuted and (N, tokens, D) patch tokens reshaped to their grid, by THE
    layout conversion :func:`convlens.layers.as_nchw` at ``x``'s size; other tensors are returned unchanged.

    Example:
        >>> from torchvision.ops import Permute
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), Permute([0, 2, 3, 1]))
        >>> x = torch.zeros(1, 3, 9, 7)
        >>> tuple(to_nchw(net, x, get_activations(net, x, "1"))["1"].shape)
        (1, 4, 7, 5)
    """
    return Activations(as_nchw(model, acts, tuple(x.shape[1:])))


def top_channels(act: torch.Tensor, k: int = 8) -> list[ChannelScore]:
    """The ``k`` channels with the largest spatial-mean activation (first image).

    Maps are (N, C, H, W) (or (N, C)); a 3-D tensor is a token sequence (N, L, D) as transformers
    (ViT, timm) produce, whose channels are the D features, averaged over the L tokens.

    Example:
        >>> a = torch.zeros(1, 3, 2, 2); a[0, 2] = 5
        >>> top_channels(a, 1)[0].channel
        2
    """
    if act.ndim < 2:
        raise InputError(f"an activation needs a channel axis, got shape {tuple(act.shape)}.")
    a = act[0].float()
    if act.ndim == 3:  # (L, D) tokens: channels are the last axis
        a = a.transpose(0, 1)
    flat = a.reshape(a.shape[0], -1)
    means, maxs = flat.mean(1), flat.amax(1)
    idx = torch.argsort(means, descending=True, stable=True)[: max(0, k)]
    return [ChannelScore(int(i), float(means[i]), float(maxs[i])) for i in idx.tolist()]


def activation_stats(acts: Mapping[str, torch.Tensor], *, topk: int = 8) -> list[LayerActivationStats]:
    """Per layer: mean, std, min, max, sparsity (fraction <= 0) and the top-k channels (first image).

    Example:
        >>> activation_stats({"a": torch.tensor([[[[-1.0, 1.0]]]])})[0].sparsity
        0.5
    """
    out = []
    for name, t in acts.items():
        a = t[0].float()
        out.append(
            LayerActivationStats(
                name,
                hwc(tuple(t.shape)),
                float(a.mean()),
                float(a.std(unbiased=False)),
                float(a.min()),
                float(a.max()),
                float((a <= 0).float().mean()),
                top_channels(t, topk),
            )
        )
    return out


@dataclass(frozen=True, kw_only=True)
class LayerActivation(LayerActivationStats):
    """One layer of :func:`activation_report`: its statistics (the :class:`LayerActivationStats` fields), the
    channels a figure shows (the most active first) and, for an output without a spatial grid, a note
    saying why there is no figure. ``figure`` is the file a front end drew the maps to (None until one does)."""

    figure: str | None = None
    note: str | None = None
    #: the activation (N, C, H, W) (or (N, C) ...) on the model's device, for figures
    activation: torch.Tensor | None = field(default=None, repr=False, compare=False, metadata={"json": False})
    #: channels to draw, the most active first (empty without a spatial grid)
    shown_channels: list[int] = field(default_factory=list, repr=False, metadata={"json": False})


@dataclass(frozen=True)
class ActivationReport:
    """What one image does to chosen layers of a model (``convlens activations --json`` prints
    :meth:`to_dict`; the tensors stay out of the JSON)."""

    image: str
    model: str
    pretrained: bool
    layers: list[LayerActivation]

    def to_dict(self) -> dict[str, Any]:
        """JSON form: every field but the tensors (:func:`convlens.serialize.to_jsonable`)."""
        return to_jsonable(self)


def activation_report(
    bundle: ModelBundle,
    image: np.ndarray,
    layers: str | Sequence[str] = "stages",
    *,
    topk: int = 8,
    max_channels: int = 64,
    image_name: str = "",
) -> ActivationReport:
    """The activations pipeline: preprocess ``image`` (H, W, 3) uint8 for ``bundle``'s model, record
    ``layers`` (as :func:`get_activations`; a one-item list means that one spec, so ``["stages"]`` is
    ``"stages"``), convert each to (N, C, H, W) (:func:`to_nchw`), and return per layer the statistics
    (:func:`activation_stats`, ``topk`` channels listed) and the ``max_channels`` most active channels to draw.

    Example:
        >>> from convlens.models import load_model
        >>> b = load_model("resnet18")
        >>> r = activation_report(b, np.full((40, 40, 3), 128, np.uint8), ["layer1", "fc"], topk=2, max_channels=3)
        >>> [(x.layer, len(x.top_channels), len(x.shown_channels), x.note is None) for x in r.layers]
        [('layer1', 2, 3, True), ('fc', 2, 0, False)]
    """
    specs = [layers] if isinstance(layers, str) else list(layers)
    if not specs:
        raise InputError("layers is empty; give layer names or globs (see `convlens summary`), 'stages' or 'auto'.")
    if max_channels < 1 or topk < 1:
        raise InputError(f"topk and max_channels must be >= 1, got {topk} and {max_channels}.")
    x = bundle.preprocess([image]).to(bundle.device)
    acts = to_nchw(bundle.model, x, get_activations(bundle.model, x, specs if len(specs) != 1 else specs[0]))
    rows = []
    for st in activation_stats(acts, topk=topk):
        t = acts[st.layer]
        spatial = t.ndim == 4
        rows.append(
            LayerActivation(
                **{k: getattr(st, k) for k in st.__dataclass_fields__},
                note=None
                if spatial
                else f"output {tuple(t.shape)} has no spatial grid (e.g. pooled features or logits): statistics only, no figure",
                activation=t,
                shown_channels=[c.channel for c in top_channels(t, min(max_channels, t.shape[1]))] if spatial else [],
            )
        )
    return ActivationReport(str(image_name), bundle.meta.name, bundle.pretrained, rows)
