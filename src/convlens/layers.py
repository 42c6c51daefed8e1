"""Naming layers: the one place a user's layer specification becomes modules.

A specification is:

* ``"auto"`` -- THE target layer of every front end (CAM, activations, feature visualization, report,
  tour, CLI), chosen by :func:`auto_layer`: the model's declared default layer (the registry's
  ``default_layer``) when its map is larger than 1x1 at the actual input size, else the last layer whose
  output is a spatial map larger than 1x1 at that size (for a transformer: the first token layer of its
  last block);
* ``"stages"`` -- one layer per spatial resolution (the end of each stage), for early-vs-deep views;
* a qualified name (``"layer4.1.conv2"``), or a glob where ``*`` stays inside one dotted segment and
  ``**`` crosses segments (``"features.*"`` = the direct children of ``features``);
* an ``nn.Module`` object that belongs to the model;
* a list of any of these.

Unknown names raise :class:`~convlens.errors.LayerError` with the closest existing names.

This module also owns the ONE conversion of a layer's output to an (N, C, H, W) map
(:func:`layer_layouts`, :class:`Layout`, :func:`as_nchw`): channels-last maps (Swin, ConvNeXt blocks,
Keras) and (N, tokens, D) transformer outputs are recognized from how the model computes them (a traced
forward pass, timm's ``num_prefix_tokens`` / ``patch_embed`` grid, or a layout the module declares),
never guessed from square-looking sizes; and :func:`first_conv`, the convolution that reads the image.

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
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from convlens.errors import ConvlensError, LayerError
from convlens.hooks import capture, device_of, preserve_state

__all__ = [
    "LayerRef",
    "LayerShape",
    "Layout",
    "resolve",
    "probe_shapes",
    "auto_layer",
    "stage_layers",
    "glob_to_regex",
    "layer_layouts",
    "as_nchw",
    "first_conv",
    "conv_weight",
    "CONV_WEIGHT_ATTR",
    "DEFAULT_LAYER_ATTR",
    "LAYOUT_ATTR",
    "MAX_PREFIX_TOKENS",
]

#: attribute a model may carry naming its preferred ``"auto"`` layer (set from the registry's ``default_layer``
#: by :class:`convlens.models.ModelBundle`); honoured by :func:`auto_layer` when that layer is a map > 1x1.
DEFAULT_LAYER_ATTR = "convlens_default_layer"
#: attribute a module may carry declaring its output layout ("NCHW", "NHWC", "NLC" or "NCL", as timm's
#: ``Format``); adapters whose layers compute channels-last (Keras) declare it once instead of being traced.
LAYOUT_ATTR = "convlens_layout"
#: a token layer's leading non-patch tokens (class, distillation, register tokens) when the model does not
#: say how many it has (timm models say it: ``num_prefix_tokens``)
MAX_PREFIX_TOKENS = 16

_FORMATS = ("NCHW", "NHWC", "NLC", "NCL")


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


@dataclass(frozen=True)
class Layout:
    """How one layer's output is laid out, in timm's ``Format`` vocabulary.

    ``fmt`` is ``"NCHW"``, ``"NHWC"`` (channels-last maps), ``"NLC"`` (``prefix`` leading tokens, then a
    row-major ``grid`` of patch tokens, D features), ``"NCL"`` (channels, then the flattened grid),
    ``"NC"`` (a vector per image) or ``"other"`` (anything that is no map of the image: attention
    internals, window-batched tokens, 1-d sequences). ``grid`` is the map's (h, w) at the probed input
    size; ``source`` says how the layout was known (``"declared"``, ``"timm"``, ``"traced"``, ``"shape"``).

    Example:
        >>> lay = Layout("NLC", grid=(2, 3), prefix=1, source="timm")
        >>> tuple(lay.to_nchw(torch.zeros(5, 1 + 6, 8)).shape), lay.is_map
        ((5, 8, 2, 3), True)
    """

    fmt: str
    grid: tuple[int, int] | None = None
    prefix: int = 0
    source: str = "shape"

    @property
    def is_map(self) -> bool:
        """True when the output is a spatial map of the image, convertible to (N, C, h, w)."""
        return self.fmt in _FORMATS and self.grid is not None

    @property
    def area(self) -> int:
        """Number of map positions ``h * w`` (0 for a non-map)."""
        return self.grid[0] * self.grid[1] if self.grid is not None and self.is_map else 0

    def to_nchw(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` (this layer's output, any batch size) as an (N, C, h, w) map; prefix tokens dropped.

        Raises :class:`~convlens.errors.LayerError` for a non-map layout or a tensor of another shape.

        Example:
            >>> tuple(Layout("NHWC", grid=(2, 5)).to_nchw(torch.zeros(1, 2, 5, 7)).shape)
            (1, 7, 2, 5)
        """
        if not self.is_map:
            raise LayerError(
                f"an output of shape {tuple(t.shape)} ({self.fmt}) is not a spatial map; a map needs a (N, C, h, w) "
                "feature map or (N, tokens, D) patch tokens on the image's grid."
            )
        assert self.grid is not None
        h, w = self.grid
        n = t.shape[0]
        if self.fmt == "NCHW" and t.ndim == 4 and tuple(t.shape[2:]) == (h, w):
            return t
        if self.fmt == "NHWC" and t.ndim == 4 and tuple(t.shape[1:3]) == (h, w):
            return t.permute(0, 3, 1, 2)  # (N, h, w, C) -> (N, C, h, w)
        if self.fmt == "NLC" and t.ndim == 3 and t.shape[1] == self.prefix + h * w:
            return t[:, self.prefix :, :].reshape(n, h, w, t.shape[2]).permute(0, 3, 1, 2)  # (N, D, h, w)
        if self.fmt == "NCL" and t.ndim == 3 and t.shape[2] == h * w:
            return t.reshape(n, t.shape[1], h, w)
        raise LayerError(
            f"a tensor of shape {tuple(t.shape)} does not fit the layer's {self.fmt} layout on a {h}x{w} grid "
            "(the layout was probed at another input size)."
        )

    def channels_first(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` with its channel axis second, for per-channel statistics at any input size: NHWC maps are
        permuted to (N, C, h, w), NLC tokens transposed to (N, D, tokens); everything else is unchanged.

        Example:
            >>> tuple(Layout("NLC", grid=(2, 2), prefix=1).channels_first(torch.zeros(1, 9, 4)).shape)
            (1, 4, 9)
        """
        if self.fmt == "NHWC" and t.ndim == 4:
            return t.permute(0, 3, 1, 2)
        if self.fmt == "NLC" and t.ndim == 3:
            return t.transpose(1, 2)
        return t

    def from_nchw(self, t: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`to_nchw` for maps without prefix tokens: an (N, C, h, w) map back in this
        layer's own layout, to replace the layer's output (Ablation-CAM's ablated copies).

        Example:
            >>> tuple(Layout("NHWC", grid=(2, 5)).from_nchw(torch.zeros(1, 7, 2, 5)).shape)
            (1, 2, 5, 7)
        """
        if t.ndim == 4 and self.fmt == "NCHW":
            return t
        if t.ndim == 4 and self.fmt == "NHWC":
            return t.permute(0, 2, 3, 1)  # (N, C, h, w) -> (N, h, w, C)
        if t.ndim == 4 and self.fmt == "NCL":
            return t.flatten(2)
        if t.ndim == 4 and self.fmt == "NLC" and self.prefix == 0:
            return t.flatten(2).transpose(1, 2)  # (N, h*w, C)
        raise LayerError(
            f"an (N, C, h, w) map cannot be put back into a {self.fmt} output with {self.prefix} prefix tokens."
        )


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


# ---------------------------------------------------------------------------------------------------- layouts


@dataclass(frozen=True)
class _Call:
    """One module call of the layout probe (completion order)."""

    name: str
    type: str
    shape: tuple[int, ...]
    layout: Layout


# per model: {(input shape, module-structure fingerprint): calls}; one traced forward per model and input size
_PROBES: weakref.WeakKeyDictionary[nn.Module, dict[tuple, list[_Call]]] = weakref.WeakKeyDictionary()


def _declared(module: nn.Module) -> str | None:
    """A layout the module declares: ``convlens_layout``, or timm's ``output_fmt`` (a ``Format`` or str)."""
    for attr in (LAYOUT_ATTR, "output_fmt"):
        v = getattr(module, attr, None)
        v = getattr(v, "value", v)  # timm's Format is a str Enum
        if isinstance(v, str) and v.upper() in _FORMATS:
            return v.upper()
    return None


def _timm_tokens(model: nn.Module, hw: tuple[int, int]) -> tuple[int, tuple[int, int]] | None:
    """``(num_prefix_tokens, patch grid)`` from timm's own attributes (``num_prefix_tokens``,
    ``patch_embed.dynamic_feat_size``/``grid_size``), or None for a model that is not a timm token model."""
    pe = getattr(model, "patch_embed", None)
    npt = getattr(model, "num_prefix_tokens", None)
    if pe is None or not isinstance(npt, int):
        return None
    size = getattr(pe, "dynamic_feat_size", None)
    grid = size(hw) if callable(size) else getattr(pe, "grid_size", None)
    if grid is None or len(grid) != 2:
        return None
    return npt, (int(grid[0]), int(grid[1]))


class _Truncated(nn.Module):
    """``model`` run only up to ``stop`` (the rest of the network never runs), for a truncated probe."""

    def __init__(self, model: nn.Module, stop: str) -> None:
        super().__init__()
        self.model = model
        self.stop = stop

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with capture(self.model, [self.stop], detach=False, stop_after=self.stop) as cap:
            cap.run(x)
        return cap.activations[self.stop]


def _traced_layouts(model: nn.Module, input_shape: tuple[int, ...], stop_after: str | None = None) -> list[_Call]:
    from convlens.graph import trace

    graph = trace(_Truncated(model, stop_after) if stop_after else model, input_shape)
    if stop_after:  # the wrapper's names carry its 'model.' prefix
        for c in graph.calls:
            c.name = c.name.removeprefix("model.")
        graph.calls = [c for c in graph.calls if c.name != "model" and c.name != ""]
    nodes = graph.nodes
    modules = dict(model.named_modules())
    hw = (int(input_shape[-2]), int(input_shape[-1]))
    timm_tokens = _timm_tokens(model, hw)
    # timm models declare the format of their stage outputs (``output_fmt``: NHWC for Swin) and the stages'
    # reductions (``feature_info``): a 4-D output on one of those grids, in that format, is a stage map
    model_fmt = _declared(model)
    info = getattr(model, "feature_info", None)
    reductions = [d.get("reduction") for d in info if isinstance(d, dict)] if isinstance(info, list) else []
    stage_grids = {(hw[0] // r, hw[1] // r) for r in reductions if isinstance(r, int) and r > 0}

    def own_grid(i: int) -> tuple[tuple[int, int], tuple[int, int]] | None:
        """(dims, (h, w)) of a 4-D node whose H/W axes the tracer followed."""
        nd = nodes[i]
        if len(nd.shape) != 4 or nd.geometry is None or nd.geometry.dims is None:
            return None
        d = tuple(nd.geometry.dims)
        if 0 in d:
            return None
        return d, (int(nd.shape[d[0]]), int(nd.shape[d[1]]))  # type: ignore[return-value]

    def ancestor_grid(i: int) -> tuple[tuple[int, int], tuple[int, int]] | None:
        """The nearest ancestor map (breadth-first) whose H/W axes the tracer followed."""
        seen, todo = {i}, [i]
        while todo:
            nxt = []
            for k in todo:
                for j in nodes[k].inputs:
                    if j in seen:
                        continue
                    seen.add(j)
                    g = own_grid(j)
                    if g is not None and nodes[j].shape[0] == 1:
                        return g
                    nxt.append(j)
            todo = nxt
        return None

    out: list[_Call] = []
    for c in graph.calls:
        shape = tuple(c.shape) if c.shape is not None else ()
        decl = _declared(modules[c.name]) if c.name in modules else None
        lay = Layout("other")
        if not shape or c.output is None or shape[0] != 1:  # window-batched tokens (Swin attention) are no map
            lay = Layout("other" if len(shape) != 2 else "NC")
        elif len(shape) == 2:
            lay = Layout("NC")
        elif len(shape) == 4:
            if decl in ("NCHW", "NHWC"):
                d = (2, 3) if decl == "NCHW" else (1, 2)
                lay = Layout(decl, (int(shape[d[0]]), int(shape[d[1]])), source="declared")
            else:
                g = own_grid(c.output)
                # timm: stages in the model's declared format; a timm model declaring none computes NCHW
                # (MobileViT: the tracer loses the axes in its unfold/fold attention, the stages stay maps)
                fmt = model_fmt if model_fmt in ("NCHW", "NHWC") else ("NCHW" if model_fmt is None else None)
                if g is None and fmt is not None and stage_grids:
                    d = (2, 3) if fmt == "NCHW" else (1, 2)
                    if (int(shape[d[0]]), int(shape[d[1]])) in stage_grids:
                        g = (d, (int(shape[d[0]]), int(shape[d[1]])))
                if g is None:  # H/W axes went through a reshape (Swin blocks): same sizes as the nearest map's
                    a = ancestor_grid(c.output)
                    if a is not None and (int(shape[a[0][0]]), int(shape[a[0][1]])) == a[1]:
                        g = a
                if g is not None and g[0] in ((2, 3), (1, 2)):
                    lay = Layout("NCHW" if g[0] == (2, 3) else "NHWC", g[1], source="traced")
        elif len(shape) == 3:
            if timm_tokens is not None and decl is None:
                npt, (gh, gw) = timm_tokens
                if shape[1] in (npt + gh * gw, gh * gw):
                    lay = Layout("NLC", (gh, gw), shape[1] - gh * gw, source="timm")
            if lay.fmt == "other":  # not timm's token grid (or not timm): the traced patch-embedding grid
                a = ancestor_grid(c.output)
                if a is not None:
                    (gh, gw), area = a[1], a[1][0] * a[1][1]
                    if decl in (None, "NLC") and 0 <= shape[1] - area <= MAX_PREFIX_TOKENS:
                        lay = Layout("NLC", (gh, gw), shape[1] - area, source="declared" if decl else "traced")
                    elif decl in (None, "NCL") and shape[2] == area:
                        lay = Layout("NCL", (gh, gw), source="declared" if decl else "traced")
        out.append(_Call(c.name, c.type, shape, lay))
    return out


def _shape_layouts(model: nn.Module, input_shape: tuple[int, ...]) -> list[_Call]:
    """Layouts from output shapes alone (models the tracer cannot follow): 4-D = NCHW, else no map."""
    out = []
    for s in probe_shapes(model, input_shape):
        if len(s.shape) == 4 and s.shape[0] == 1:
            lay = Layout("NCHW", (int(s.shape[2]), int(s.shape[3])), source="shape")
        else:
            lay = Layout("NC" if len(s.shape) == 2 else "other")
        out.append(_Call(s.name, s.type, s.shape, lay))
    return out


def _probe(model: nn.Module, input_shape: Sequence[int], stop_after: str | None = None) -> list[_Call]:
    """Every module call (completion order) with its output layout; cached per model, input shape and structure."""
    shape = tuple(int(v) for v in input_shape)
    key = (shape, stop_after, tuple((n, id(m)) for n, m in model.named_modules()))
    cache = _PROBES.setdefault(model, {})
    if key not in cache:
        try:
            calls = _traced_layouts(model, shape, stop_after)
        except ConvlensError as e:  # the tracer could not follow the model: fall back to plain shapes
            if stop_after is not None:
                raise
            try:
                calls = _shape_layouts(model, shape)
            except Exception:  # noqa: BLE001 -- the model itself rejects this input: the tracer's error says so
                raise e from None
        cache.clear()  # keep the latest input size only: a probe holds no tensors, but sizes vary in loops
        cache[key] = calls
    return cache[key]


def layer_layouts(
    model: nn.Module, input_shape: Sequence[int] = (3, 224, 224), *, stop_after: str | None = None
) -> dict[str, Layout]:
    """``{layer name: Layout}`` of every module's (last) call for an input of ``input_shape`` (C, H, W).

    How a layout is known, in order: a layout the module declares (``convlens_layout``, or timm's
    ``output_fmt``); for timm token models, timm's ``num_prefix_tokens`` and ``patch_embed`` grid; else one
    traced forward pass (:func:`convlens.graph.trace`), which follows the H and W axes through permutes
    (channels-last maps) and flattens (tokens: ``T = prefix + h * w`` of the nearest traced map, at most
    :data:`MAX_PREFIX_TOKENS` prefix tokens). Outputs whose batch axis is not the image batch (window
    attention) and attention internals (N, heads, T, d) are ``"other"``. Cached per model and input size.
    ``stop_after``: probe only up to that layer (the rest of the network never runs, as in truncated
    feature visualization); later layers are absent from the result.

    Example:
        >>> from torchvision.ops import Permute
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), Permute([0, 2, 3, 1]))
        >>> lay = layer_layouts(net, (3, 9, 7))
        >>> lay["0"].fmt, lay["1"].fmt, lay["1"].grid
        ('NCHW', 'NHWC', (7, 5))
    """
    return {c.name: c.layout for c in _probe(model, input_shape, stop_after)}


def as_nchw(
    model: nn.Module, outputs: Mapping[str, torch.Tensor], input_shape: Sequence[int] = (3, 224, 224)
) -> dict[str, torch.Tensor]:
    """THE conversion of layer outputs to (N, C, H, W): ``outputs`` (``{layer name: tensor}``, as
    :func:`convlens.inspect.get_activations` returns) with every spatial map brought to (N, C, h, w) --
    channels-last maps permuted, (N, tokens, D) patch tokens reshaped to their grid without their prefix
    (class/register) tokens -- by :func:`layer_layouts` at ``input_shape`` (the model input's (C, H, W)).
    Outputs that are no map (vectors, attention internals) are returned unchanged. ``'name#k'`` keys
    (call k of a reused module) use the module's layout.

    Example:
        >>> from torchvision.ops import Permute
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), Permute([0, 2, 3, 1]))
        >>> x = torch.zeros(2, 3, 9, 7)
        >>> tuple(as_nchw(net, {"1": net(x)}, (3, 9, 7))["1"].shape)
        (2, 4, 7, 5)
    """
    lays = layer_layouts(model, input_shape)
    out = {}
    for name, t in outputs.items():
        lay = lays.get(name) or lays.get(re.sub(r"\s*#\d+$", "", name))
        out[name] = lay.to_nchw(t) if lay is not None and lay.is_map and _fits(lay, t) else t
    return out


def _fits(lay: Layout, t: torch.Tensor) -> bool:
    try:
        lay.to_nchw(t)
    except LayerError:
        return False
    return True


# ---------------------------------------------------------------------------------------------------- auto


#: Adaptive pools are the global-pooling step (VGG's 7x7 one included), never a feature layer.
_POOL_TYPES = ("AdaptiveAvgPool2d", "AdaptiveMaxPool2d", "SelectAdaptivePool2d")


def _block_of(name: str) -> str | None:
    """The repeated block a layer sits in (``blocks.11`` for ``blocks.11.norm1``), if its name has an index."""
    parts = name.split(".")
    for i, seg in enumerate(parts[:-1]):
        if seg.isdigit() or seg.rsplit("_", 1)[-1].isdigit():
            return ".".join(parts[: i + 1])
    return None


def auto_layer(model: nn.Module, input_shape: Sequence[int] = (3, 224, 224)) -> LayerRef:
    """THE ``"auto"`` layer: where every front end looks by default (CAM target, activations, filters).

    1. The layer the model declares (``model.convlens_default_layer``, set from the registry's
       ``default_layer``), when its output is a map larger than 1x1 at this input size.
    2. Else the last module whose output is a spatial map larger than 1x1 at ``input_shape`` (C, H, W)
       (NCHW, or channels-last / tokens as :func:`layer_layouts` recognizes them), global pools excluded:
       the usual Grad-CAM target (Selvaraju et al. 2017, section 3: the last convolutional layer). A map
       that shrank to 1x1 (a CNN trained at 32 px) cannot localize anything, so it never wins.
    3. A transformer (token maps after the last 4-D map): the first token layer of its last block
       (``blocks.11.norm1``), because later token layers reach a class-token head only through the class
       token, so their patch tokens get no gradient (pytorch-grad-cam's ViT recipe uses the same layer).

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten())
        >>> auto_layer(net, (3, 6, 6)).name
        '0'
        >>> auto_layer(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Conv2d(4, 4, 2)), (3, 4, 4)).name
        '0'
    """
    modules = dict(model.named_modules())
    calls = _probe(model, input_shape)
    lays = {c.name: c.layout for c in calls}
    default = getattr(model, DEFAULT_LAYER_ATTR, None)
    if isinstance(default, str) and default in modules and lays.get(default, Layout("other")).area > 1:
        return LayerRef(default, modules[default])
    maps = [i for i, c in enumerate(calls) if c.layout.area > 1 and c.type not in _POOL_TYPES]
    if not maps:
        raise LayerError(
            f"the model has no layer whose output is a spatial map larger than 1x1 at input size "
            f"{'x'.join(str(v) for v in input_shape[-2:])}; name a layer, or use a larger input."
        )
    last_4d = max((i for i in maps if calls[i].layout.fmt in ("NCHW", "NHWC")), default=-1)
    tokens = [i for i in maps if i > last_4d and calls[i].layout.fmt == "NLC"]
    blocks = [b for b in (_block_of(calls[i].name) for i in tokens) if b is not None]
    if blocks:
        name = next(calls[i].name for i in tokens if calls[i].name.startswith(blocks[-1] + "."))
    else:
        name = calls[maps[-1]].name
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


def _is_spatial(s: LayerShape) -> bool:
    return len(s.shape) == 4 and s.shape[2] >= 2 and s.shape[3] >= 2 and s.type not in _POOL_TYPES


#: a module that is no torch ``Conv2d`` (a Keras ``Conv2D``) may expose its kernel in torch's layout: a
#: callable returning ``(C_out, C_in / groups, kH, kW)``
CONV_WEIGHT_ATTR = "convlens_conv_weight"


def conv_weight(module: nn.Module) -> torch.Tensor | None:
    """The ``(C_out, C_in / groups, kH, kW)`` kernel of a 2-D convolution: an ``nn.Conv2d``'s weight, or the
    kernel a module declares (:data:`CONV_WEIGHT_ATTR`); None for any other module.

    Example:
        >>> tuple(conv_weight(torch.nn.Conv2d(3, 8, 5)).shape), conv_weight(torch.nn.ReLU())
        ((8, 3, 5, 5), None)
    """
    if isinstance(module, nn.Conv2d):
        return module.weight
    declared = getattr(module, CONV_WEIGHT_ATTR, None)
    w = declared() if callable(declared) else None
    return w if isinstance(w, torch.Tensor) and w.ndim == 4 else None


def first_conv(model: nn.Module, input_shape: Sequence[int] | None = None) -> LayerRef:
    """The convolution that reads the image: the first ``nn.Conv2d`` called in a forward pass whose input
    channels are the image's (3 for RGB, 1 for a grayscale model) and that is not grouped.

    ``input_shape`` (C, H, W) is the probe input (default: C from the first such conv in module order,
    224x224); a model that rejects the probe falls back to module order.

    Example:
        >>> class Net(torch.nn.Module):  # registered late, called first
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.head = torch.nn.Conv2d(4, 2, 1)
        ...         self.stem = torch.nn.Conv2d(3, 4, 3)
        ...     def forward(self, x):
        ...         return self.head(self.stem(x))
        >>> first_conv(Net(), (3, 8, 8)).name
        'stem'
    """
    modules = dict(model.named_modules())

    def reads_image(m: nn.Module, c: int | None) -> bool:
        w = conv_weight(m)
        return w is not None and getattr(m, "groups", 1) == 1 and (w.shape[1] == c if c else w.shape[1] in (1, 3))

    in_order = [n for n, m in modules.items() if n and reads_image(m, None)]
    if not in_order:
        raise LayerError("the model has no Conv2d with 3 (or 1) input channels; name the layer whose kernels to show.")
    first_w = conv_weight(modules[in_order[0]])
    assert first_w is not None
    shape = tuple(input_shape) if input_shape is not None else (int(first_w.shape[1]), 224, 224)
    try:
        called = [c.name for c in _probe(model, shape)]
    except ConvlensError:
        called = in_order
    name = next((n for n in called if n in modules and reads_image(modules[n], shape[0])), in_order[0])
    return LayerRef(name, modules[name])


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

    ``input_shape`` (C, H, W) is the size the layers will see: ``"auto"`` and ``"stages"`` depend on it.

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
