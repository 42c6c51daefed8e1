"""Early vs deep layers: how a CNN trades spatial resolution for channels, field of view and abstraction.

For each stage (one layer per resolution, input to head) :func:`depth_profile` reports:

* spatial size H x W, channels C, receptive field r and jump j (from :mod:`convlens.graph`);
* the number of activations ``H·W·C`` and of weights in the stage ("depth compensates resolution":
  H·W shrinks 4x per stride-2 stage while C grows, so activations fall and weights rise);
* MACs of the stage;
* the spatial-frequency content of its maps: with ``P_c(f)`` the power spectrum of channel c (mean
  removed, 2-D FFT) and ``|f|`` the radial frequency in cycles per map pixel (Nyquist = 0.5),
  ``mean_frequency = Σ_c Σ_f |f| P_c(f) / Σ_c Σ_f P_c(f)`` and ``high_frequency = Σ_{|f|>0.25} P / Σ P``.
  ``mean_frequency_input = mean_frequency / jump`` expresses it in cycles per *input* pixel: deep maps
  vary slowly over the image;
* the first convolution's kernels (drawn as RGB tiles by :mod:`convlens.plot.inspect`).

Example:
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.MaxPool2d(2), torch.nn.Conv2d(8, 16, 3, padding=1))
    >>> p = depth_profile(net, torch.rand(1, 3, 16, 16))
    >>> [(s.name, s.spatial, s.channels, s.receptive_field) for s in p.stages]
    [('0', (16, 16), 8, (3, 3)), ('2', (8, 8), 16, (8, 8))]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from convlens.errors import InputError, LayerError
from convlens.graph import trace
from convlens.inspect.activations import get_activations
from convlens.layers import conv_weight, first_conv, layer_layouts
from convlens.serialize import to_jsonable

if TYPE_CHECKING:
    from convlens.models import ModelBundle

__all__ = ["StageProfile", "DepthProfile", "depth_profile", "depth_profile_image", "spatial_frequency"]


@dataclass(frozen=True)
class StageProfile:
    """One stage of the depth profile (see module docstring for the definitions)."""

    name: str
    spatial: tuple[int, int]
    channels: int
    receptive_field: tuple[int | float, int | float] | None
    jump: tuple[int | float, int | float] | None
    activations: int
    weights: int
    macs: int
    mean_frequency: float | None
    high_frequency: float | None
    mean_frequency_input: float | None


@dataclass(frozen=True)
class DepthProfile:
    """Stages input to head, weights of the head, and the first conv (name + kernels, not in JSON).
    ``image`` and ``pretrained`` are set by :func:`depth_profile_image` (the image file's name and
    whether the model's weights are pretrained); None for a bare :func:`depth_profile` call."""

    model: str
    input_shape: tuple[int, int, int]  # HxWxC
    stages: list[StageProfile]
    head_weights: int
    first_conv: str | None
    maps: dict[str, torch.Tensor] = field(default_factory=dict, repr=False, compare=False, metadata={"json": False})
    kernels: torch.Tensor | None = field(default=None, repr=False, compare=False, metadata={"json": False})
    image: str | None = None
    pretrained: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON form (numbers only; maps and kernels left out): :func:`convlens.serialize.to_jsonable`."""
        return to_jsonable(self)


def spatial_frequency(maps: torch.Tensor) -> tuple[float, float] | tuple[None, None]:
    """(mean radial frequency in cycles/pixel, fraction of power above 0.25 cycles/pixel) of (C, H, W) maps.

    ``None, None`` for maps smaller than 4x4 or without any variation.

    Example:
        >>> x = torch.arange(16.0).remainder(2).repeat(16, 1)[None]  # stripes at Nyquist along W
        >>> round(spatial_frequency(x)[0], 3), spatial_frequency(x)[1]
        (0.5, 1.0)
    """
    if maps.ndim != 3:
        raise InputError(f"maps must be (C, H, W), got {tuple(maps.shape)}.")
    c, h, w = maps.shape
    if h < 4 or w < 4:
        return None, None
    m = maps.double()
    m = m - m.mean(dim=(1, 2), keepdim=True)
    power = torch.fft.fft2(m).abs().pow(2).sum(0)  # (H, W)
    fy = torch.fft.fftfreq(h, dtype=torch.float64, device=m.device)[:, None]
    fx = torch.fft.fftfreq(w, dtype=torch.float64, device=m.device)[None, :]
    r = torch.sqrt(fy**2 + fx**2)
    total = float(power.sum())
    if total <= 1e-20:
        return None, None
    return float((power * r).sum()) / total, float(power[r > 0.25].sum()) / total


_PARAM_CONTAINERS = (nn.ParameterDict, nn.ParameterList)


def depth_profile(
    model: nn.Module,
    x: torch.Tensor,
    layers: str | Sequence[str] = "stages",
    *,
    name: str | None = None,
) -> DepthProfile:
    """Profile ``layers`` (default: one per stage) of ``model`` on the image batch ``x`` (first image used).

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, stride=2), torch.nn.Flatten(), torch.nn.LazyLinear(2))
        >>> _ = net(torch.zeros(1, 3, 9, 9))
        >>> p = depth_profile(net, torch.rand(1, 3, 9, 9))
        >>> p.stages[0].weights, p.head_weights
        (112, 130)
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise InputError(f"x must be an (N, C, H, W) tensor, got {getattr(x, 'shape', type(x).__name__)}.")
    acts = get_activations(model, x[:1], layers)
    graph = trace(model, x=x[:1])
    layouts = layer_layouts(model, tuple(x.shape[1:]))
    modules = dict(model.named_modules())
    # stage boundaries: the output node of each stage layer's last call, in execution order
    bounds = []
    for n in acts:
        c = graph.call(n)
        bounds.append((c.output if c.output is not None else -1, n))
    bounds.sort()
    # weights: each module's own parameters go to the first stage that ends after its (first) call
    owner: dict[str, str | None] = {}
    for c in graph.calls:
        if c.name in owner or c.output is None:
            continue
        owner[c.name] = next((n for b, n in bounds if c.output <= b), None)
    weights: dict[str | None, int] = {}
    seen: set[int] = set()
    # a parameter belongs to the module holding it, or, when that is a ParameterDict/List container (a Keras
    # layer keeps its weights in one), to the module holding the container; parameters of the root (cls
    # tokens, ...) are used first; those of modules that never run are not counted
    for pname, p in model.named_parameters():
        parts = pname.split(".")[:-1]
        while parts and ".".join(parts) not in owner and isinstance(modules[".".join(parts)], _PARAM_CONTAINERS):
            parts = parts[:-1]
        mname = ".".join(parts)
        if id(p) in seen or (parts and mname not in owner) or (not parts and not bounds):
            continue
        seen.add(id(p))
        stage = owner[mname] if parts else bounds[0][1]
        weights[stage] = weights.get(stage, 0) + p.numel()
    stages = []
    maps: dict[str, torch.Tensor] = {}
    prev = 0
    for b, n in bounds:
        t = acts[n]
        geo = graph.nodes[b].geometry if b >= 0 else None
        macs = sum(nd.macs for nd in graph.nodes[prev + 1 : b + 1])
        prev = max(prev, b)
        lay = layouts.get(n)
        if lay is not None and lay.fmt == "NHWC" and lay.is_map:
            t = lay.to_nchw(t)  # channels-last map (Swin, ConvNeXt blocks) -> (N, C, H, W), one conversion
        maps[n] = t[0]
        if t.ndim == 4:
            sp = (int(t.shape[2]), int(t.shape[3]))
            mf, hf = spatial_frequency(t[0])
        else:
            sp, (mf, hf) = (1, 1), (None, None)
        # a 3-D output is a token sequence (N, L, D): its channels are the D features
        channels = int(t.shape[-1]) if t.ndim == 3 else int(t.shape[1])
        jump = geo.jump if geo is not None else None
        mfi = mf / max(jump) if mf is not None and jump else None
        stages.append(
            StageProfile(
                n,
                sp,
                channels,
                geo.receptive_field if geo else None,
                jump,
                int(t[0].numel()),
                weights.get(n, 0),
                int(macs),
                mf,
                hf,
                mfi,
            )
        )
    try:
        ref = first_conv(model, tuple(x.shape[1:]))
        kernel = conv_weight(ref.module)
        fc: tuple[str, torch.Tensor] | None = (ref.name, kernel.detach()) if kernel is not None else None
    except LayerError:
        fc = None
    c_in, h, w = x.shape[1:]
    return DepthProfile(
        name or type(model).__name__,
        (int(h), int(w), int(c_in)),
        stages,
        weights.get(None, 0),
        fc[0] if fc else None,
        maps,
        fc[1] if fc else None,
    )


def depth_profile_image(
    bundle: ModelBundle, image: np.ndarray, layers: str | Sequence[str] = "stages", *, image_name: str = ""
) -> DepthProfile:
    """The depth-profile pipeline for one image: preprocess ``image`` (H, W, 3) uint8 for ``bundle``'s
    model and :func:`depth_profile` it, named after the model, with ``image_name`` and whether the weights
    are pretrained (``convlens depth-profile --json`` prints its :meth:`DepthProfile.to_dict`).

    Example:
        >>> from convlens.models import load_model
        >>> p = depth_profile_image(load_model("resnet18"), np.full((40, 40, 3), 128, np.uint8), image_name="grey")
        >>> p.model, p.image, p.pretrained, p.first_conv, [s.name for s in p.stages][:2]
        ('resnet18', 'grey', False, 'conv1', ['relu', 'layer1'])
    """
    from dataclasses import replace

    x = bundle.preprocess([image]).to(bundle.device)
    prof = depth_profile(bundle.model, x, layers, name=bundle.meta.name)
    return replace(prof, image=str(image_name), pretrained=bundle.pretrained)
