"""The field of one unit on the image: the theoretical box (from the traced graph) and the effective field.

:func:`unit_receptive_field` places the receptive field of unit ``(i, j)`` of a layer on the input,
from the geometry :func:`convlens.graph.trace` propagates along **every path** of the real graph
(union over paths). Per axis, unit ``i`` sees input rows ``[lo + i·jump, hi + i·jump]``
(``lo`` goes negative when padding reaches out). The box is given before clipping to the image,
together with the rows/columns of it that lie in the padding; its size is the layer's receptive
field as :func:`convlens.inspect.summarize` reports it.

:func:`effective_receptive_field` measures what actually moves the unit on one image
(Luo, Li, Urtasun, Zemel 2016, "Understanding the Effective Receptive Field in Deep Convolutional
Neural Networks", NeurIPS): ``E(p) = Σ_colour |∂y_{c,i,j} / ∂x_{colour,p}|``, normalised to sum 1.
It reports the fraction of that mass inside the theoretical box (1 up to rounding: the gradient has
no path outside it) and the radii ``r50``/``r90`` around the box centre that hold 50 % and 90 % of it;
the paper's finding is that ``r90`` is much smaller than the theoretical field.

Example:
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 1, 3, padding=1), torch.nn.Conv2d(1, 1, 3, stride=2))
    >>> u = unit_receptive_field(net, "1", (0, 0), (1, 9, 9))
    >>> u.box, u.size, u.padding
    ((-1, -1, 3, 3), (5, 5), (1, 1, 0, 0))
"""

from __future__ import annotations

import contextlib
import math
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from convlens.errors import InputError, LayerError
from convlens.graph import Geometry, trace
from convlens.hooks import capture, device_of, first_tensor, preserve_state
from convlens.inspect.unit import parse_layer_call
from convlens.layers import layer_layouts, resolve

__all__ = ["UnitReceptiveField", "EffectiveRF", "unit_receptive_field", "effective_receptive_field", "field_box"]


@dataclass(frozen=True)
class UnitReceptiveField:
    """The theoretical field of unit ``(i, j)`` of ``layer`` on an ``input_size`` image.

    ``box`` = (top, left, bottom, right), inclusive, in input pixels, **before clipping** (may be negative
    or past the image); ``clipped_box`` the part inside the image; ``padding`` = rows above, columns left,
    rows below, columns right of the box that lie in the padding; ``size`` = (r_h, r_w) the receptive
    field; ``jump`` the distance between neighbouring units; ``exact`` False when an op was approximated
    (adaptive pooling with uneven windows, resizing); ``is_global`` when every unit sees the same box.
    """

    layer: str
    unit: tuple[int, int]
    input_size: tuple[int, int]
    box: tuple[int, int, int, int]
    clipped_box: tuple[int, int, int, int]
    padding: tuple[int, int, int, int]
    size: tuple[int, int]
    center: tuple[float, float]
    jump: tuple[float, float] | None
    exact: bool
    is_global: bool

    @property
    def in_image_fraction(self) -> float:
        """Fraction of the box's area that lies inside the image."""
        t, l_, b, r = self.clipped_box
        return (b - t + 1) * (r - l_ + 1) / (self.size[0] * self.size[1])

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "layer": self.layer,
            "unit": list(self.unit),
            "input_size": list(self.input_size),
            "box": list(self.box),
            "clipped_box": list(self.clipped_box),
            "padding": list(self.padding),
            "size": list(self.size),
            "center": list(self.center),
            "jump": None if self.jump is None else list(self.jump),
            "exact": self.exact,
            "is_global": self.is_global,
            "in_image_fraction": self.in_image_fraction,
        }


@dataclass(frozen=True)
class EffectiveRF:
    """The effective field of one unit on one image (Luo et al. 2016).

    ``map`` (H, W) is ``Σ_colour |∂y/∂x|`` normalised to sum 1 (all zeros when the gradient is zero, e.g.
    a ReLU unit that is off: then ``zero_gradient`` is True and the statistics are None). ``mass_in_box``
    is the fraction of the map inside the theoretical box, ``r50``/``r90`` the radii (pixels, around the
    box centre ``center``) holding 50 % / 90 % of it; ``support_box`` the bounding box of its non-zero pixels.
    """

    layer: str
    at: tuple[int, ...]
    map: np.ndarray = field(repr=False)
    center: tuple[float, float]
    mass_in_box: float | None
    r50: float | None
    r90: float | None
    support_box: tuple[int, int, int, int] | None
    zero_gradient: bool

    def to_dict(self) -> dict[str, Any]:
        """JSON form (the map itself is left out: it is an image-sized array)."""
        return {
            "mass_in_box": self.mass_in_box,
            "r50": self.r50,
            "r90": self.r90,
            "center": list(self.center),
            "support_box": None if self.support_box is None else list(self.support_box),
            "zero_gradient": self.zero_gradient,
        }


#: per model: the traced graph at an input size and module structure (geometry depends on neither the
#: weights nor the image, so the explorer's many unit boxes trace once)
_GRAPHS: weakref.WeakKeyDictionary[nn.Module, dict[tuple[Any, ...], Any]] = weakref.WeakKeyDictionary()


def _graph(model: nn.Module, shape: tuple[int, int, int]) -> Any:
    key = (shape, tuple((n, type(m).__name__) for n, m in model.named_modules()))
    cache = _GRAPHS.setdefault(model, {})
    if key not in cache:
        if len(cache) >= 4:
            cache.pop(next(iter(cache)))
        cache[key] = trace(model, shape)
    return cache[key]


def _size3(model: nn.Module, input_size: int | Sequence[int]) -> tuple[int, int, int]:
    if isinstance(input_size, int):
        dims: tuple[int, ...] = (input_size, input_size)
    else:
        dims = tuple(int(v) for v in input_size)
    if len(dims) == 2:  # the channels the first convolution reads (1 for a grayscale model)
        dims = (next((m.in_channels for m in model.modules() if isinstance(m, nn.Conv2d)), 3), *dims)
    if len(dims) != 3 or min(dims) < 1:
        raise InputError(f"input_size must be H, (H, W) or (C, H, W) of positive ints, got {input_size!r}.")
    return dims  # type: ignore[return-value]


def _one_layer(model: nn.Module, layer: str | nn.Module, shape: tuple[int, ...]) -> tuple[str, int | None]:
    call = None
    if isinstance(layer, str):
        layer, call = parse_layer_call(layer)
    refs = resolve(model, layer, input_shape=shape)
    if len(refs) != 1:
        raise LayerError(f"one layer is needed; '{layer}' names {len(refs)}.")
    return refs[0].name, call


def field_box(
    geo: Geometry, i: int, j: int, input_hw: tuple[int, int]
) -> tuple[tuple[int, int, int, int], tuple[int, int, int, int], tuple[int, int, int, int]]:
    """Unit ``(i, j)``'s box ``(top, left, bottom, right)`` before clipping, the box clipped to an
    ``input_hw`` image, and the rows/cols of it in the padding (above, left, below, right).

    Example:
        >>> from convlens.graph import Axis
        >>> ax = Axis(-1.0, 1.0, 2.0, 2.0)
        >>> field_box(Geometry(ax, ax), 0, 3, (8, 8))
        ((-1, 5, 1, 7), (0, 5, 1, 7), (1, 0, 0, 0))
    """
    bounds = []
    for ax, u in ((geo.h, i), (geo.w, j)):
        shift = 0.0 if ax.jump is None else u * ax.jump
        bounds.append((math.floor(ax.lo + shift), math.ceil(ax.hi + shift)))
    (top, bottom), (left, right) = bounds
    h, w = input_hw
    clipped = (max(top, 0), max(left, 0), min(bottom, h - 1), min(right, w - 1))
    padding = (max(0, -top), max(0, -left), max(0, bottom - (h - 1)), max(0, right - (w - 1)))
    return (top, left, bottom, right), clipped, padding


def unit_receptive_field(
    model: nn.Module,
    layer: str | nn.Module,
    at: Sequence[int],
    input_size: int | Sequence[int] = 224,
    *,
    call: int | None = None,
) -> UnitReceptiveField:
    """The theoretical receptive-field box of position ``at = (i, j)`` of ``layer`` on the input image.

    Per axis ``[lo + i·jump, hi + i·jump]`` from :func:`convlens.graph.trace` (union over all paths).

    Args:
        model: the network.
        layer: a module name (``'name#k'`` for call ``k``) or module.
        at: ``(i, j)`` (or ``(c, i, j)``: the channel does not change the field).
        input_size: H, (H, W) or (C, H, W) of the image.
        call: which call of a module used several times (default: the last).

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 5, stride=2), torch.nn.Conv2d(4, 4, 3))
        >>> unit_receptive_field(net, "1", (2, 3), 32).box
        (4, 6, 12, 14)
    """
    shape = _size3(model, input_size)
    name, k = _one_layer(model, layer, shape)
    call = k if k is not None else call
    at = tuple(int(v) for v in at)
    if len(at) == 3:
        at = at[1:]
    if len(at) != 2:
        raise InputError(f"at must be (i, j) or (c, i, j), got {at}.")
    graph = _graph(model, shape)
    c = graph.call(name, -1 if call is None else call)
    geo = graph.geometry(name, -1 if call is None else call)
    hw = None
    if c.output is not None and len(graph.nodes[c.output].shape) == 4:
        dims = geo.dims or graph.spatial_dims(c.output) or (2, 3)
        s = graph.nodes[c.output].shape
        hw = (int(s[dims[0]]), int(s[dims[1]]))
    i, j = at
    if hw is not None and not (0 <= i < hw[0] and 0 <= j < hw[1]):
        raise InputError(
            f"position {(i, j)} is outside the {hw[0]}x{hw[1]} output of '{name}'; positions count from 0."
        )
    h, w = shape[1], shape[2]
    box, clipped, padding = field_box(geo, i, j, (h, w))
    top, left, bottom, right = box
    jump = None if geo.h.jump is None or geo.w.jump is None else (float(geo.h.jump), float(geo.w.jump))
    return UnitReceptiveField(
        name,
        (i, j),
        (h, w),
        (top, left, bottom, right),
        clipped,
        padding,
        (bottom - top + 1, right - left + 1),
        ((top + bottom) / 2, (left + right) / 2),
        jump,
        geo.exact,
        geo.is_global,
    )


def effective_receptive_field(
    model: nn.Module,
    x: torch.Tensor,
    layer: str | nn.Module,
    at: Sequence[int],
    *,
    call: int | None = None,
    rf: UnitReceptiveField | None = None,
    device: str | torch.device | None = None,
) -> EffectiveRF:
    """``|∂y_{c,i,j}/∂x|`` summed over colour and normalised, with its mass inside the theoretical box
    and the radii holding 50 % / 90 % of it (Luo et al. 2016).

    The radii are measured from the centre of the unit's theoretical box; when that box is only an upper
    bound (``rf.exact`` False: Swin's windows, approximated ops), from the unit's place on its map scaled to
    the image, ``((i + ½)·H/h - ½, (j + ½)·W/w - ½)``.

    Gradients go only to the image (``torch.autograd.grad``; parameters' ``.grad`` stay untouched), in eval
    mode; modes and ``requires_grad`` flags are restored.

    Args:
        model: the network.
        x: the preprocessed image (1, C, H, W).
        layer: module name (``'name#k'``) or module.
        at: ``(c, i, j)`` (channel c at row i, column j) for spatial maps -- (N, C, H, W), channels-last
            (N, H, W, C) and patch tokens alike (:func:`convlens.layers.layer_layouts`) -- ``(c,)`` for
            (N, F) outputs.
        call: which call of a module used several times (default: the last).
        rf: the unit's theoretical field when already computed (else computed here).
        device: where to compute.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.Conv2d(2, 1, 3))
        >>> e = effective_receptive_field(net, torch.randn(1, 1, 12, 12), "1", (0, 4, 4))
        >>> e.mass_in_box, e.support_box
        (1.0, (4, 4, 8, 8))
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise InputError(f"x must be an (N, C, H, W) tensor, got {getattr(x, 'shape', type(x).__name__)}.")
    if not torch.isfinite(x).all():
        raise InputError("x contains NaN or infinite values; check the image and preprocessing.")
    dev = device_of(model, device)
    name, k = _one_layer(model, layer, tuple(x.shape[1:]))
    call = k if k is not None else call
    at = tuple(int(v) for v in at)
    if rf is None and len(at) == 3:
        rf = unit_receptive_field(model, name, at[1:], tuple(x.shape[1:]), call=call)
    # (c, i, j) is channel c at row i, column j whatever the layer's layout: channels-last maps and patch
    # tokens are brought to (N, C, h, w) by THE layout conversion before indexing (the gradient flows through it)
    lay = layer_layouts(model, tuple(x.shape[1:])).get(name)
    xg = x[:1].detach().to(dev).clone().requires_grad_(True)
    stop = name if call == 0 else None
    with (
        preserve_state(model, train=False, requires_grad=False),
        torch.enable_grad(),
        capture(model, [name], detach=False, stop_after=stop) as cap,
    ):
        cap.run(xg)
        calls = cap.calls.get(name, [])
        if not calls:
            raise LayerError(f"layer '{name}' did not run (or returned no tensor) in the forward pass.")
        if call is not None and call >= len(calls):
            raise LayerError(f"layer '{name}' was called {len(calls)} time(s); call index {call} does not exist.")
        y = first_tensor(calls[-1 if call is None else call])
        assert y is not None
        if lay is not None and lay.is_map and len(at) == 3:
            if lay.fmt == "NHWC":  # channels-last at any size (another call of the layer may have another grid)
                y = lay.channels_first(y)
            else:
                with contextlib.suppress(LayerError):  # tokens of a call of another shape: read them as they are
                    y = lay.to_nchw(y)
        if y.ndim == 4 and len(at) == 3:
            idx: tuple[int, ...] = (0, *at)
        elif y.ndim == 2:
            idx = (0, at[0])
        else:
            raise InputError(f"at {at} does not index the layer's output of shape {tuple(y.shape)}.")
        if any(not 0 <= v < n for v, n in zip(idx, y.shape, strict=True)):
            raise InputError(
                f"position {at} is outside the layer's output {tuple(y.shape[1:])}; positions count from 0."
            )
        if not y.requires_grad:
            raise LayerError(f"layer '{name}' output does not depend on the image through differentiable ops.")
        (g,) = torch.autograd.grad(y[idx], xg, allow_unused=True)
    emap = torch.zeros(x.shape[-2:]) if g is None else g[0].detach().abs().sum(0).double().cpu()
    total = float(emap.sum())
    hh, ww = emap.shape
    if rf is not None and (rf.exact or len(idx) != 4):
        cy, cx = rf.center
    elif len(idx) == 4:  # an upper bound's box says nothing of where the unit is: its place on the map, scaled
        (gh, gw), (i, j) = y.shape[-2:], idx[2:]
        cy, cx = (i + 0.5) * hh / gh - 0.5, (j + 0.5) * ww / gw - 0.5
    else:
        cy, cx = (hh - 1) / 2, (ww - 1) / 2
    if total == 0.0:
        return EffectiveRF(name, at, emap.float().numpy(), (cy, cx), None, None, None, None, True)
    emap = emap / total
    nz = torch.nonzero(emap > 0)
    support = (int(nz[:, 0].min()), int(nz[:, 1].min()), int(nz[:, 0].max()), int(nz[:, 1].max()))
    if rf is not None:
        t, l_, b, r = rf.clipped_box
        mass_in = float(emap[t : b + 1, l_ : r + 1].sum())
    else:
        mass_in = 1.0
    rows = torch.arange(hh, dtype=torch.float64)[:, None]
    cols = torch.arange(ww, dtype=torch.float64)[None, :]
    dist = torch.sqrt((rows - cy) ** 2 + (cols - cx) ** 2).reshape(-1)
    order = torch.argsort(dist, stable=True)
    cum = torch.cumsum(emap.reshape(-1)[order], 0)

    def radius(q: float) -> float:
        i = int(torch.searchsorted(cum, torch.tensor([q - 1e-12], dtype=torch.float64))[0])
        return float(dist[order[min(i, len(order) - 1)]])

    return EffectiveRF(
        name,
        at,
        emap.float().numpy(),
        (float(cy), float(cx)),
        round(min(mass_in, 1.0), 6),
        round(radius(0.5), 4),
        round(radius(0.9), 4),
        support,
        False,
    )
