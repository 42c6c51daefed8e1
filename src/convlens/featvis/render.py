"""Feature visualization by gradient ascent on the input, batched over channels, truncated at the layer.

One run optimizes N images at once. Each step:

1. ``img = param()`` -- the N images in [0, 1] (pixels, or Fourier + decorrelation + sigmoid);
2. ``x = transforms(img)`` -- per-image random pad/jitter/scale/rotate (one fused resampling);
3. ``acts = forward(normalize(x))`` through :func:`convlens.hooks.capture` with ``stop_after`` the
   deepest layer the objective reads: the rest of the network never runs (the model output is
   computed only when an objective asks for it, e.g. :class:`ClassLogit`);
4. ``f = objective(acts) - penalties`` gives one value per image; ``g = d(sum_i f_i)/d params``
   (``torch.autograd.grad``: the model's parameters get no ``.grad``) -- image i's gradient comes only
   from ``f_i``, so the batch is N independent ascents;
5. ascent step: ``p += lr * g / ||g||`` per image (Keras) or Adam (Lucid).

Token layers: a layer's layout comes from :func:`convlens.layers.layer_layouts` (the one place that knows
it): (N, T, D) transformer tokens are read channels-first, so channel ``c`` is feature ``c`` averaged over
the tokens (not token ``c``); a channels-last (N, h, w, C) map (Swin) is read as (N, C, h, w).

Randomness: image i has its own ``torch.Generator`` seeded from ``(seed, key_i)`` (key = the channel
index for channel objectives), used for its init noise and all its transform parameters, so an image
is the same whether rendered alone or in a batch, and on any device.

The model runs in eval mode with ``requires_grad=False`` on its parameters; both are restored after
(:func:`convlens.hooks.preserve_state`), and every hook is removed, even on errors.

Example:
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Conv2d(4, 4, 3))
    >>> imgs = visualize(net, "1", [0, 3], recipe="keras", steps=5, size=16)
    >>> tuple(imgs.shape), bool((imgs >= 0).all() and (imgs <= 1).all())
    ((2, 3, 16, 16), True)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from convlens.errors import ConvlensError, InputError, LayerError, first_line
from convlens.featvis.objectives import (
    INPUT,
    L2,
    OUTPUT,
    Blur,
    Channel,
    ClassLogit,
    LayerL2,
    Neuron,
    Objective,
    TotalVariation,
)
from convlens.featvis.param import FourierImage, ImageParam, PixelImage
from convlens.featvis.recipes import Recipe, get_recipe
from convlens.hooks import capture, device_of, preserve_state
from convlens.layers import Layout, layer_layouts
from convlens.models.preprocess import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["FeatvisResult", "render", "visualize", "build_objective", "OBJECTIVES", "image_generators"]

OBJECTIVES = ("channel", "neuron", "layer", "class")


@dataclass
class FeatvisResult:
    """What :func:`render` returns.

    Attributes:
        images: (N, 3, S, S) in [0, 1], on the compute device (what to show).
        values: (N,) the objective (without the recipe's penalties) on the final, untransformed image.
        start_values: (N,) the same at the first step (initial noise image, after that step's random
            transforms; untransformed when ``steps == 0``).
        history: (steps, N) the optimized value (objective - penalties, on the transformed image) per step.
        keys: per-image keys (channel indices for channel objectives).
        layer: the layer(s) read, ``'output'`` for the model output.
        objective: a readable description of the objective.
        recipe: the recipe used.
        truncated_after: the layer the forward pass stopped at (``None``: full forward).
        raw: (N, 3, S, S) the final image as the model saw it, before the display mapping (Keras
            pixels are unbounded; Lucid's equal ``images``).
    """

    def _repr_html_(self) -> str:
        """Rich display in Jupyter: the renderer the report uses (:func:`convlens.plot.html.featvis_html`), images inline."""
        from convlens.plot.html import featvis_html

        return featvis_html(self)

    images: torch.Tensor
    values: torch.Tensor
    start_values: torch.Tensor
    history: torch.Tensor
    keys: list[int]
    layer: list[str]
    objective: str
    recipe: Recipe
    seed: int
    steps: int
    size: int
    truncated_after: str | None = None
    raw: torch.Tensor | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def image_generators(seed: int, keys: Sequence[int]) -> list[torch.Generator]:
    """One CPU generator per image, seeded from ``(seed, key)`` only (batch-independent).

    Example:
        >>> a, b = image_generators(0, [3, 3])
        >>> bool(torch.rand(1, generator=a) == torch.rand(1, generator=b))
        True
    """
    return [torch.Generator().manual_seed(int(seed) * 1_000_003 + int(k) + 1) for k in keys]


def build_objective(kind: str, layer: str | None, channels: Sequence[int] | int) -> Objective:
    """The objective named ``kind`` for one channel (or class) per image.

    ``'channel'``: :class:`Channel`; ``'neuron'``: :class:`Neuron` (centre unit); ``'layer'``:
    :class:`LayerL2` (deep dream; one image per entry of ``channels``, which then only seed them);
    ``'class'``: :class:`ClassLogit` (``channels`` are class indices, ``layer`` is ignored).

    Example:
        >>> build_objective("neuron", "conv1", [0, 1])
        Neuron('conv1', [0, 1])
    """
    if kind not in OBJECTIVES:
        raise InputError(f"objective must be one of {', '.join(OBJECTIVES)} or an Objective, got {kind!r}.")
    if kind == "class":
        return ClassLogit(channels)
    if layer is None:
        raise LayerError(f"objective '{kind}' needs a layer name.")
    if kind == "channel":
        return Channel(layer, channels)
    if kind == "neuron":
        return Neuron(layer, channels)
    return LayerL2(layer)


def _mean_std(model: Any, mean: Sequence[float] | None, std: Sequence[float] | None) -> tuple[nn.Module, tuple, tuple]:
    from convlens.models import ModelBundle

    if isinstance(model, ModelBundle):
        m, s = model.preprocess.mean, model.preprocess.std
        model = model.model
    else:
        m, s = IMAGENET_MEAN, IMAGENET_STD
    if not isinstance(model, nn.Module):
        raise InputError(f"model must be a torch.nn.Module or a convlens ModelBundle, got {type(model).__name__}.")
    m = tuple(float(v) for v in (mean if mean is not None else m))
    s = tuple(float(v) for v in (std if std is not None else s))
    if len(m) not in (1, 3) or len(s) != len(m) or any(not v > 0 for v in s):
        raise InputError(
            f"mean and std need 3 values (RGB model) or 1 value (grayscale model) each, std > 0; got mean={m}, std={s}."
        )
    return model, m, s


#: ITU-R 601 luma weights: a 1-channel model sees ``gray = 0.299 R + 0.587 G + 0.114 B``
_LUMA = (0.299, 0.587, 0.114)


def _layer_order(model: nn.Module, names: list[str], probe: torch.Tensor) -> str:
    """The capture layer that finishes last in a forward pass (where truncation may stop)."""
    with torch.no_grad(), capture(model, names) as cap:
        cap.run(probe)
    done = [n for n, _ in cap.order if n in names]
    missing = [n for n in names if n not in cap.calls]
    if missing:
        raise LayerError(f"layer '{missing[0]}' is not called in the forward pass; pick a layer the model uses.")
    return done[-1]


def _fixed_size(model: Any) -> int | None:
    """The square input side a ModelBundle was made for (``meta.input_size``), else ``None``."""
    from convlens.models import ModelBundle

    if isinstance(model, ModelBundle):
        h, w = model.meta.input_size[-2:]
        return int(h) if h == w else None
    return None


def _forward_error(run: Callable[[torch.Tensor], Any], x: torch.Tensor) -> str | None:
    """``run(x)`` once (no grad; the truncated forward); the exception's first line if the model rejects the input, else ``None``."""
    try:
        with torch.no_grad():
            run(x)
    except ConvlensError:
        raise
    except Exception as e:  # shape asserts (ViT), size mismatches in Linear heads, ...
        return first_line(e)
    return None


def _display(x: torch.Tensor, recipe: Recipe) -> torch.Tensor:
    if recipe.display == "standardize":  # Keras book deprocess_image: mean 0.5, std 64/255, clip
        flat = x.flatten(1)
        mu = flat.mean(1).view(-1, 1, 1, 1)
        sd = flat.std(1).view(-1, 1, 1, 1)
        x = (x - mu) / (sd + 1e-5) * (64.0 / 255.0) + 0.5
    return x.clamp(0.0, 1.0)


def render(
    model: nn.Module | Any,
    objective: Objective,
    *,
    n: int | None = None,
    keys: Sequence[int] | None = None,
    recipe: str | Recipe = "lucid",
    steps: int = 256,
    size: int = 128,
    seed: int = 0,
    device: str | torch.device | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    callback: Callable[[int, int], None] | None = None,
) -> FeatvisResult:
    """Maximize ``objective`` by gradient ascent on N input images; the lower-level engine of :func:`visualize`.

    Args:
        model: an ``nn.Module`` or a :class:`~convlens.models.ModelBundle` (its preprocessing mean/std
            normalize the images; a bare module uses ImageNet's unless ``mean``/``std`` are given --
            pass ``mean=(0, 0, 0), std=(1, 1, 1)`` to feed [0, 1] pixels unchanged).
        objective: an :class:`~convlens.featvis.objectives.Objective` (per-image values).
        n: batch size; defaults to the objective's per-image list length, else ``len(keys)``, else 1.
        keys: per-image seeds keys (default 0..N-1).
        recipe: ``'keras'``, ``'lucid'`` or a :class:`Recipe`.
        steps, size, seed: ascent steps, image side length, base seed.
        device: where to compute (the model must already be there); default: the model's device.
        callback: called as ``callback(step, steps)`` after every step (progress bars).

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3), torch.nn.ReLU())
        >>> r = render(net, Channel("0", [0, 1]), recipe="keras", steps=3, size=8)
        >>> bool((r.values > r.start_values).all())
        True
    """
    fixed_size = _fixed_size(model)
    model, mean_t, std_t = _mean_std(model, mean, std)
    if not isinstance(objective, Objective):
        raise InputError(f"objective must be a convlens Objective, got {type(objective).__name__}.")
    rec = get_recipe(recipe)
    if not isinstance(steps, int) or steps < 0:
        raise InputError(f"steps must be an integer >= 0, got {steps!r}.")
    if not isinstance(size, int) or size < 1:
        raise InputError(f"size must be an integer >= 1, got {size!r}.")
    if not isinstance(seed, int) or seed < 0:
        raise InputError(f"seed must be an integer >= 0, got {seed!r}.")
    if n is None:
        n = objective.batch_size or (len(keys) if keys is not None else 1)
    if objective.batch_size is not None and objective.batch_size != n:
        raise InputError(f"the objective has {objective.batch_size} per-image indices but n={n} images were asked for.")
    keys = list(range(n)) if keys is None else [int(k) for k in keys]
    if len(keys) != n:
        raise InputError(f"need one key per image: {n} images, got {len(keys)} keys.")

    dev = device_of(model, device)
    model_dev = device_of(model)
    if (
        any(True for _ in model.parameters())
        and model_dev != dev
        and not (dev.type == model_dev.type and dev.index is None)
    ):
        raise InputError(
            f"the model is on {model_dev} but device={dev}; move it first (model.to('{dev}')) or pass device=None."
        )

    named = dict(model.named_modules())
    layer_names = [name for name in objective.layers if name not in (INPUT, OUTPUT)]
    for name in layer_names:
        if name not in named:
            from convlens.layers import resolve

            resolve(model, name)  # raises LayerError with close matches
    need_output = OUTPUT in objective.layers

    gens = image_generators(seed, keys)
    if rec.parameterization == "fourier":
        param: ImageParam = FourierImage(
            n, size, sd=rec.sd, decay_power=rec.decay_power, decorrelate=rec.decorrelate, generators=gens, device=dev
        )
    else:
        param = PixelImage(
            n,
            size,
            low=rec.init_low,
            high=rec.init_high,
            sigmoid=rec.sigmoid,
            decorrelate=rec.decorrelate,
            sd=rec.sd,
            generators=gens,
            device=dev,
        )
    plan = rec.transforms().plan(n, size, max(steps, 1), gens, device=dev)

    penalties: list[tuple[float, Objective]] = [
        (w, f) for w, f in ((rec.l2, L2()), (rec.tv, TotalVariation()), (rec.blur, Blur())) if w > 0
    ]
    mean_v = torch.tensor(mean_t, device=dev).view(1, -1, 1, 1)
    std_v = torch.tensor(std_t, device=dev).view(1, -1, 1, 1)
    gray = len(mean_t) == 1  # a 1-channel model: optimize an RGB image, show and feed its luma
    luma = torch.tensor(_LUMA, device=dev).view(1, 3, 1, 1)

    in_size = [rec.input_size]  # may become the model's fixed input size (below)

    def to_model(x: torch.Tensor) -> torch.Tensor:
        if in_size[0] is not None and x.shape[-1] != in_size[0]:
            x = F.interpolate(x, size=(in_size[0], in_size[0]), mode="bilinear", align_corners=True)
        if gray:
            x = (x * luma).sum(1, keepdim=True)  # (N, 1, S, S)
        return (x - mean_v) / std_v

    if rec.optimizer == "adam":
        opt: torch.optim.Optimizer | None = torch.optim.Adam(param.params, lr=rec.lr, maximize=True)
    else:
        opt = None

    history: list[torch.Tensor] = []
    with preserve_state(model, train=False, requires_grad=False):
        stop: str | None = None
        if not need_output and layer_names:
            img1 = param().detach()[:1]
            if fixed_size is not None and in_size[0] is None:  # a fixed-size model (ViT) accepts only its own size
                img1 = F.interpolate(img1, size=(fixed_size, fixed_size), mode="bilinear", align_corners=True)
            stop = layer_names[0] if len(layer_names) == 1 else _layer_order(model, layer_names, to_model(img1))

        # each layer's layout (channels-last maps, tokens) as convlens.layers knows it; the format does not
        # depend on the size, so any size the model accepts will do (a fixed-size model: its own)
        layouts: dict[str, Layout] = {}
        for side in dict.fromkeys(s for s in (in_size[0] or size, fixed_size) if s):
            if layer_names and not layouts:
                try:
                    layouts = layer_layouts(model, (len(mean_t), side, side), stop_after=stop)
                except InputError:
                    continue
        with capture(model, layer_names, detach=False, clone=len(layer_names) > 1, stop_after=stop) as cap:
            # a model with a fixed input size (ViT) rejects the recipe's padded/jittered size: resize to its size
            with torch.no_grad():
                x_probe = (plan(param().detach(), 0) if steps > 0 else param().detach())[:1]
            err = _forward_error(cap.run, to_model(x_probe))
            if err is not None:
                resized = (
                    None if fixed_size is None else to_model(F.interpolate(x_probe, size=(fixed_size, fixed_size)))
                )
                if in_size[0] is None and resized is not None and _forward_error(cap.run, resized) is None:
                    in_size[0] = fixed_size
                else:
                    raise InputError(
                        f"the model failed on a {x_probe.shape[-2]}x{x_probe.shape[-1]} input (the image after the recipe's "
                        f"transforms): {err}; give a model that accepts it or a recipe with input_size set to the model's size."
                    )

            def evaluate(img: torch.Tensor, x: torch.Tensor) -> dict[str, torch.Tensor]:
                out = cap.run(to_model(x))
                acts: dict[str, torch.Tensor] = dict(cap.activations)
                for name in layer_names:
                    a = acts.get(name)
                    if a is None:
                        continue
                    lay = layouts.get(name)
                    if (
                        lay is not None
                    ):  # (N, T, D) tokens -> (N, D, T), (N, h, w, C) -> (N, C, h, w): channel c is feature c
                        acts[name] = lay.channels_first(a)
                acts[INPUT] = img
                if need_output:
                    if out is None or not isinstance(out, torch.Tensor):
                        raise InputError("a class objective needs a model whose forward returns a tensor of logits.")
                    acts[OUTPUT] = out
                return acts

            start_values: torch.Tensor | None = None
            if steps == 0:
                with torch.no_grad():
                    img0 = param()
                    acts0 = evaluate(img0, img0)
                    objective.check(acts0)
                    start_values = objective(acts0).detach().clone()
                    del acts0

            for step in range(steps):
                img = param()
                acts = evaluate(img, plan(img, step))
                if start_values is None:  # first step: validate indices, record the starting value
                    objective.check(acts)
                value = objective(acts)
                if start_values is None:
                    start_values = value.detach().clone()
                for w, pen in penalties:
                    value = value - w * pen(acts)
                if not bool(value.requires_grad):
                    raise LayerError("the objective does not depend on the input image; check the layer and channels.")
                grads = torch.autograd.grad(value.sum(), param.params)
                history.append(value.detach())
                with torch.no_grad():
                    if opt is None:
                        for p, g in zip(param.params, grads, strict=True):
                            norm = g.flatten(1).norm(dim=1).clamp_min(1e-6).view(-1, *([1] * (g.dim() - 1)))
                            p.add_(g / norm, alpha=rec.lr)
                    else:
                        for p, g in zip(param.params, grads, strict=True):
                            p.grad = g
                        opt.step()
                        opt.zero_grad(set_to_none=True)
                del acts, value, grads
                if callback is not None:
                    callback(step + 1, steps)

            with torch.no_grad():
                img = param()
                values = objective(evaluate(img, img)).detach().clone()
                images = _display(img, rec)
                if gray:  # show what the model sees: the luma, as a gray RGB image
                    images = (images * luma).sum(1, keepdim=True).expand(-1, 3, -1, -1).contiguous()
    for p in param.params:
        p.grad = None
    hist = torch.stack(history) if history else torch.zeros(0, n, device=dev)
    return FeatvisResult(
        images=images.detach(),
        values=values,
        start_values=start_values if start_values is not None else values,
        history=hist,
        keys=keys,
        layer=list(objective.layers),
        objective=repr(objective),
        recipe=rec,
        seed=seed,
        steps=steps,
        size=size,
        truncated_after=stop,
        raw=img.detach(),
    )


def target_layer(model: nn.Module | Any, layer: str | nn.Module, *, size: int = 128) -> str:
    """The name of the one layer ``layer`` means for feature visualization at ``size`` px: a module or name
    as given, ``'auto'`` as :func:`convlens.layers.auto_layer` picks it at the size the model sees (``size``,
    or a fixed-size model's own input size, e.g. 224 for a ViT). A glob matching several layers is an error.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1))
        >>> target_layer(net, "auto", size=16)
        '1'
    """
    from convlens.layers import resolve

    fixed = _fixed_size(model)
    module, mean_t, _ = _mean_std(model, None, None)
    try:
        refs = resolve(module, layer, input_shape=(len(mean_t), size, size))
    except InputError:  # the model rejects this size (fixed-size ViT): its own size is what it will see
        if fixed is None:
            raise
        refs = resolve(module, layer, input_shape=(len(mean_t), fixed, fixed))
    if len(refs) > 1:
        raise InputError(f"layer '{layer}' matches {len(refs)} layers; name exactly one.")
    return refs[0].name


def visualize(
    model: nn.Module | Any,
    layer: str | nn.Module | None,
    channels: Sequence[int] | int,
    objective: str | Objective = "channel",
    recipe: str | Recipe = "lucid",
    steps: int = 256,
    size: int = 128,
    seed: int = 0,
    device: str | torch.device | None = None,
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    callback: Callable[[int, int], None] | None = None,
    return_result: bool = False,
) -> torch.Tensor | FeatvisResult:
    """Images that maximize ``objective`` for each of ``channels`` of ``layer``: (len(channels), 3, size, size) in [0, 1].

    All channels render in ONE batch (image i's loss comes only from channel ``channels[i]``), the
    forward pass stops at ``layer``, and channel c's image depends only on (seed, c), not on which
    other channels share the batch. ``objective``: ``'channel'`` (mean of the channel's map, the
    Keras-book loss), ``'neuron'`` (its centre unit), ``'layer'`` (deep dream, L2 of the layer),
    ``'class'`` (logits; ``channels`` are classes) or any
    :class:`~convlens.featvis.objectives.Objective`. ``recipe``: ``'lucid'`` (readable: Fourier +
    decorrelation + transforms), ``'keras'`` (the book's pixel ascent) or a :class:`Recipe`.
    ``layer``: a name, a module, or ``'auto'`` (:func:`target_layer`, the layer every front end uses).
    ``return_result=True`` returns the :class:`FeatvisResult` (final objective values, history).

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU())
        >>> visualize(net, "1", [0, 5], steps=2, size=16).shape
        torch.Size([2, 3, 16, 16])
    """
    from convlens.models import ModelBundle

    module = model.model if isinstance(model, ModelBundle) else model
    if isinstance(layer, nn.Module) or layer == "auto":
        if not isinstance(module, nn.Module):
            raise InputError(f"model must be a torch.nn.Module or a convlens ModelBundle, got {type(model).__name__}.")
        layer = target_layer(model, layer, size=size)
    if isinstance(channels, int) and not isinstance(channels, bool):
        channels = [channels]
    chans = list(channels)
    if not chans:
        raise InputError("channels is empty; give at least one channel index.")
    if isinstance(objective, str):
        obj = build_objective(objective, layer, chans)
    elif isinstance(objective, Objective):
        obj = objective
    else:
        raise InputError(
            f"objective must be one of {', '.join(OBJECTIVES)} or an Objective, got {type(objective).__name__}."
        )
    res = render(
        model,
        obj,
        n=len(chans),
        keys=chans,
        recipe=recipe,
        steps=steps,
        size=size,
        seed=seed,
        device=device,
        mean=mean,
        std=std,
        callback=callback,
    )
    return res if return_result else res.images
