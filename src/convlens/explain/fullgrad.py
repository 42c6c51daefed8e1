"""FullGrad: input-gradient and bias-gradient saliency, summed over every biased layer.

Example:
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
    ...                           torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 2))
    >>> res = FullGrad(net)(torch.randn(2, 3, 8, 8), targets=[0, 1])
    >>> tuple(res.maps.shape), res.layers
    ((2, 8, 8), ['0', '1'])
"""

from __future__ import annotations

from contextlib import ExitStack

import torch
import torch.nn.functional as F
from torch import nn

from convlens.errors import LayerError
from convlens.explain.base import (
    BaseCAM,
    CAMResult,
    Targets,
    first_component,
    normalize_maps,
    target_scores,
)
from convlens.hooks import capture, device_of, preserve_state
from convlens.layers import layer_layouts

__all__ = ["FullGrad", "bias_layers", "implicit_bias", "BIAS_ATTR", "BIAS_RELU_ATTR"]

#: a layer that is no torch ``Conv2d``/``BatchNorm2d`` (a Keras layer) may declare its FullGrad bias: a
#: callable returning its per-channel implicit bias ``(C,)`` ...
BIAS_ATTR = "convlens_bias"
#: ... and, when its output is ``relu(z)`` of the biased ``z`` (Keras ``Conv2D(activation="relu")``), this
#: flag: the gradient w.r.t. ``z`` is then the output's gradient where the output is positive
BIAS_RELU_ATTR = "convlens_bias_relu"


def bias_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The layers FullGrad sums over: every ``Conv2d`` and ``BatchNorm2d`` with a bias, and every layer that
    declares its bias (:data:`BIAS_ATTR`), in module order.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1, bias=False), torch.nn.BatchNorm2d(4))
        >>> [n for n, _ in bias_layers(net)]
        ['1']
    """
    return [
        (n, m)
        for n, m in model.named_modules()
        if (isinstance(m, (nn.Conv2d, nn.BatchNorm2d)) and getattr(m, "bias", None) is not None)
        or callable(getattr(m, BIAS_ATTR, None))
    ]


def implicit_bias(layer: nn.Module) -> torch.Tensor:
    r"""A layer's bias as FullGrad sees it: a conv's ``bias``; for BatchNorm in eval mode
    :math:`\beta - \mu \gamma / \sqrt{\sigma^2 + \epsilon}` (the constant it adds per channel).

    Example:
        >>> implicit_bias(torch.nn.BatchNorm2d(2).eval()).tolist()
        [0.0, 0.0]
    """
    declared = getattr(layer, BIAS_ATTR, None)
    if callable(declared) and not isinstance(layer, (nn.Conv2d, nn.BatchNorm2d)):
        return declared().detach()
    if isinstance(layer, nn.BatchNorm2d):
        rm = layer.running_mean if layer.running_mean is not None else torch.zeros_like(layer.bias)
        rv = layer.running_var if layer.running_var is not None else torch.ones_like(layer.bias)
        w = layer.weight if layer.weight is not None else torch.ones_like(layer.bias)
        return (layer.bias - rm * w / torch.sqrt(rv + layer.eps)).detach()
    return layer.bias.detach()


def _scale_channels(t: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """pytorch-grad-cam's ``scale_accross_batch_and_channels``: per (image, channel)
    ``(t - min) / (max - min + 1e-7)``, then bilinear resizing to ``size``."""
    t = t - t.amin(dim=(2, 3), keepdim=True)
    t = t / (t.amax(dim=(2, 3), keepdim=True) + 1e-7)
    if tuple(t.shape[2:]) != tuple(size):
        t = F.interpolate(t, size=size, mode="bilinear", align_corners=False)
    return t


class FullGrad(BaseCAM):
    r"""FullGrad: the input-gradient map plus the bias-gradient maps of every biased layer.

    .. math::
        M = \psi\big(|x \odot \nabla_x y^c|\big) + \sum_{l} \sum_{c} \psi\big(|b_{l,c}\, \nabla_{z_{l,c}} y^c|\big)

    where :math:`z_l` is layer :math:`l`'s output, :math:`b_l` its (implicit, :func:`implicit_bias`)
    bias, and :math:`\psi` min-max scales each channel (with pytorch-grad-cam's ``1e-7`` guard) and
    upsamples it bilinearly; the input term keeps its channels, each summed in. The target layer is
    ignored: every ``Conv2d``/``BatchNorm2d`` with a bias is used (:func:`bias_layers`), all in one
    forward and one ``autograd.grad``. ``raw`` holds the summed map under ``'fullgrad'``.

    Srinivas & Fleuret, "Full-Gradient Representation for Neural Network Visualization", NeurIPS 2019.
    https://arxiv.org/abs/1905.00780

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 1), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
        >>> FullGrad(net)(torch.randn(1, 3, 4, 4), targets=1).maps.shape
        torch.Size([1, 4, 4])
    """

    name = "fullgrad"
    supports_create_graph = False

    def _explain(self, x: torch.Tensor, targets: Targets = None) -> CAMResult:
        model = self.model
        dev = device_of(model)
        layers = bias_layers(model)
        if not layers:
            raise LayerError("FullGrad needs Conv2d or BatchNorm2d layers with a bias; this model has none.")
        names = [n for n, _ in layers]
        size = (x.shape[2], x.shape[3])
        with ExitStack() as stack:
            stack.enter_context(torch.inference_mode(False))
            stack.enter_context(torch.enable_grad())
            stack.enter_context(preserve_state(model, train=False, requires_grad=False))
            xi = x.detach().to(dev).clone().requires_grad_(True)
            with capture(model, dict(layers), detach=False, clone=True) as cap:
                with self._autocast(dev):
                    out = cap.run(xi)
                scores, cls, probs = target_scores(out, targets, x.shape[0])
                used = [n for n in names if n in cap.activations]
                acts = [cap.activations[n] for n in used]
            grads = torch.autograd.grad(scores.float().sum(), [xi, *acts], allow_unused=True)
            del out
            with torch.no_grad():
                terms = [_scale_channels((grads[0] * xi).abs().float(), size)]  # (N, 3, H, W)
                mods = dict(layers)
                lays = layer_layouts(model, tuple(x.shape[1:]))
                for n, a, g in zip(used, acts, grads[1:], strict=True):
                    lay = lays.get(n)
                    g4 = None if g is None or lay is None or not lay.is_map else lay.to_nchw(g)
                    if g4 is not None and lay is not None and getattr(mods[n], BIAS_RELU_ATTR, False):
                        a4 = lay.to_nchw(a.detach())
                        g4 = g4 * (a4 > 0) if a4.shape == g4.shape else None
                    if g4 is None or g4.shape[1] != implicit_bias(mods[n]).numel():
                        continue  # a layer off the target's path (no gradient) adds nothing
                    b = implicit_bias(mods[n]).to(g4.device, torch.float32)
                    terms.append(
                        _scale_channels((b[None, :, None, None] * g4.float()).abs(), size).sum(1, keepdim=True)
                    )
                stack_t = torch.cat(terms, dim=1)  # (N, 3 + L, H, W)
                if self.eigen_smooth:  # pytorch-grad-cam: the principal component at 1/8 resolution
                    small = (max(1, size[0] // 8), max(1, size[1] // 8))
                    pc = first_component(
                        _scale_channels(stack_t, small),
                        reference=F.interpolate(stack_t.sum(1, keepdim=True), size=small)[:, 0],
                    )
                    total = _scale_channels(pc[:, None], size)[:, 0]
                else:
                    total = stack_t.sum(1)
                lo = total.amin(dim=(1, 2), keepdim=True)
                maps = (total - lo) / ((total - lo).amax(dim=(1, 2), keepdim=True) + 1e-7)
                _, flat = normalize_maps(total)
        if bool(flat.any()):
            import warnings

            warnings.warn(
                f"fullgrad: {int(flat.sum())} of {x.shape[0]} maps are constant (zero input and bias gradients: "
                "the target score does not depend on the input), returning zeros for them.",
                RuntimeWarning,
                stacklevel=3,
            )
            maps = torch.where(flat[:, None, None], torch.zeros_like(maps), maps)
        return CAMResult(
            maps=maps.float().contiguous(),
            raw={"fullgrad": total.float()},
            targets=cls.detach(),
            scores=scores.detach().float(),
            probs=None if probs is None else probs.detach(),
            method=self.name,
            layers=used,
        )
