"""Perturbation CAMs: channel weights measured by running the model on altered copies (no gradients).

* :class:`AblationCAM` -- how much the target score drops when one channel of the target layer is
  removed;
* :class:`SSCAM` and :class:`ISCAM` -- Score-CAM with the channel masks smoothed by noise, or
  integrated along a path from zero.

All copies of all images of the batch run through the model in chunks of ``batch_size`` (the memory
budget: at most ``batch_size`` copies exist at once, masks and noise are made per chunk).

Example:
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.ReLU(),
    ...                           torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 2))
    >>> AblationCAM(net, "1", batch_size=3)(torch.randn(2, 3, 6, 6), targets=[0, 1]).maps.shape
    torch.Size([2, 6, 6])
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F

from convlens.errors import InputError, LayerError
from convlens.explain.base import BaseCAM, CAMContext, LayerSpec
from convlens.hooks import capture
from convlens.layers import layer_layouts

__all__ = ["AblationCAM", "SSCAM", "ISCAM"]


class AblationCAM(BaseCAM):
    r"""Ablation-CAM: a channel's weight is the relative drop of the target score when it is removed.

    .. math:: w_c = \frac{y^c - y^c_{A_c \leftarrow v}}{y^c}, \qquad M = \mathrm{ReLU}\Big(\sum_c w_c A_c\Big)

    :math:`y^c_{A_c \leftarrow v}` is the score with channel ``c`` of the target layer set to
    ``ablation_value`` (default 0, the paper's choice) and everything else unchanged. The layer's
    output is replaced by the stored activation with one channel ablated, so each copy runs the model
    once; all N x C ablations of the batch run in chunks of ``batch_size`` (pytorch-grad-cam ablates
    one image at a time).

    Relation to pytorch-grad-cam's ``AblationCAM``: identical when the layer's minimum is 0 (a ReLU
    output: pytorch-grad-cam then also writes 0). Otherwise pytorch-grad-cam writes
    ``min(A) - 1e7`` (meant to vanish in a following ReLU), which convlens does not copy: pass
    ``ablation_value=`` to choose another value.

    Desai & Ramaswamy, "Ablation-CAM: Visual Explanations for Deep Convolutional Network via
    Gradient-free Localization", WACV 2020.
    https://openaccess.thecvf.com/content_WACV_2020/papers/Desai_Ablation-CAM_Visual_Explanations_for_Deep_Convolutional_Network_via_Gradient-free_Localization_WACV_2020_paper.pdf

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 1), torch.nn.ReLU(),
        ...                           torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
        >>> AblationCAM(net, "1")(torch.randn(1, 3, 4, 4), targets=0).maps.shape
        torch.Size([1, 4, 4])
    """

    name = "ablationcam"
    uses_gradients = False

    def __init__(
        self, model: torch.nn.Module, target_layer: LayerSpec = "auto", *, ablation_value: float = 0.0, **kw: object
    ) -> None:
        super().__init__(model, target_layer, **kw)  # type: ignore[arg-type]
        self.ablation_value = float(ablation_value)

    def weights(self, a: torch.Tensor, g: torch.Tensor | None, ctx: CAMContext) -> torch.Tensor:
        n, c = a.shape[:2]
        assert ctx.scores is not None
        lay = layer_layouts(ctx.model, tuple(ctx.x.shape[1:])).get(ctx.layer)
        own = lay is not None and lay.fmt == "NHWC" and lay.is_map  # channels-last maps (Keras layers, Swin stages)
        total = n * c
        ablated = torch.empty(total, device=a.device, dtype=torch.float32)
        for start in range(0, total, ctx.batch_size):
            idx = torch.arange(start, min(start + ctx.batch_size, total), device=a.device)
            img, ch = idx // c, idx % c
            rows = torch.arange(idx.shape[0], device=a.device)

            def swap(t: torch.Tensor, img: torch.Tensor = img, ch: torch.Tensor = ch, rows: torch.Tensor = rows):
                if own and lay is not None and lay.to_nchw(t).shape[1:] == a.shape[1:]:
                    out = a[img].to(t.dtype)
                    out[rows, ch] = self.ablation_value
                    return lay.from_nchw(out).contiguous()  # back to the layer's own layout
                if t.shape[1:] != a.shape[1:]:
                    raise LayerError(
                        f"Ablation-CAM needs a layer with a (N, C, h, w) output; '{ctx.layer}' gives "
                        f"{tuple(t.shape)} (tokens or channels-last): use another method or layer."
                    )
                out = a[img].to(t.dtype)  # each copy's stored activation ...
                out[rows, ch] = self.ablation_value  # ... with its one channel removed
                return out

            with capture(ctx.model, {ctx.layer: ctx.module}, replace={ctx.layer: swap}) as cap, ctx.autocast():
                out = cap.run(ctx.x[img])
            ablated[idx] = ctx.score(out, img).float()
        y = ctx.scores.to(a.device)
        safe = torch.where(y == 0, torch.full_like(y, 1e-12), y)
        return (y[:, None] - ablated.view(n, c)) / safe[:, None]


def _minmax_lowres(a: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """torch-cam's mask normalization: per (image, channel) ``(A - min) / (max - min + eps)``."""
    lo = a.amin(dim=(2, 3), keepdim=True)
    a = a - lo
    return a / (a.amax(dim=(2, 3), keepdim=True) + eps)


class _NoisyScoreCAM(BaseCAM):
    """Shared loop of SS-CAM / IS-CAM: ``num_samples`` passes over the N x C channel masks."""

    uses_gradients = False
    default_samples: ClassVar[int] = 10
    in_all = False  # num_samples x Score-CAM's cost

    def __init__(
        self,
        model: torch.nn.Module,
        target_layer: LayerSpec = "auto",
        *,
        num_samples: int | None = None,
        std: float = 2.0,
        seed: int = 0,
        **kw: object,
    ) -> None:
        super().__init__(model, target_layer, **kw)  # type: ignore[arg-type]
        num_samples = self.default_samples if num_samples is None else num_samples
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise InputError(f"num_samples must be an int >= 1, got {num_samples!r}.")
        if not std >= 0:
            raise InputError(f"std must be >= 0, got {std!r}.")
        self.num_samples = num_samples
        self.std = float(std)
        self.seed = int(seed)

    def _input(self, x: torch.Tensor, mask: torch.Tensor, sample: int, gen: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def weights(self, a: torch.Tensor, g: torch.Tensor | None, ctx: CAMContext) -> torch.Tensor:
        n, c = a.shape[:2]
        size = (ctx.x.shape[2], ctx.x.shape[3])
        masks = _minmax_lowres(a).reshape(n * c, 1, *a.shape[2:])
        assert ctx.scores is not None
        base = ctx.scores.to(a.device)
        total = n * c
        acc = torch.zeros(total, device=a.device, dtype=torch.float32)
        gen = torch.Generator(device="cpu").manual_seed(self.seed)
        for sample in range(self.num_samples):
            for start in range(0, total, ctx.batch_size):
                idx = torch.arange(start, min(start + ctx.batch_size, total), device=a.device)
                img = idx // c
                up = F.interpolate(masks[idx], size=size, mode="bilinear", align_corners=False)  # (B, 1, H, W)
                with ctx.autocast():
                    out = ctx.model(self._input(ctx.x[img], up, sample, gen))
                acc[idx] += ctx.score(out, img).float() - base[img]
        return (acc / self.num_samples).view(n, c).softmax(dim=1)


class SSCAM(_NoisyScoreCAM):
    r"""SS-CAM (Smoothed Score-CAM): Score-CAM weights averaged over noisy copies of each channel mask.

    .. math::
        H_c = \mathrm{up}\Big(\frac{A_c - \min A_c}{\max A_c - \min A_c}\Big), \qquad
        w_c = \mathrm{softmax}_c\Big(\frac{1}{S}\sum_{s=1}^{S} y^c\big(x \odot (H_c + \delta_s)\big) - y^c(x)\Big),
        \qquad \delta_s \sim \mathcal{N}(0, \sigma^2)

    and :math:`M = \mathrm{ReLU}(\sum_c w_c A_c)`. Masks are normalized at the layer's resolution,
    then upsampled bilinearly (``align_corners=False``), as torch-cam's ``SSCAM``; the noise comes
    from a CPU generator seeded with ``seed`` and is drawn per chunk in the order torch-cam draws it,
    so the same seed gives torch-cam's maps. ``S x N x C`` forwards in chunks of ``batch_size``.

    Wang et al., "SS-CAM: Smoothed Score-CAM for Sharper Visual Feature Localization", 2020.
    https://arxiv.org/abs/2006.14255

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 1), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
        >>> SSCAM(net, "0", num_samples=2)(torch.randn(1, 3, 4, 4)).maps.shape
        torch.Size([1, 4, 4])
    """

    name = "sscam"
    default_samples = 35  # torch-cam's default

    def _input(self, x: torch.Tensor, mask: torch.Tensor, sample: int, gen: torch.Generator) -> torch.Tensor:
        noise = torch.randn(mask.shape, generator=gen, dtype=torch.float32) * self.std
        return x * (mask + noise.to(mask.device)).to(x.dtype)


class ISCAM(_NoisyScoreCAM):
    r"""IS-CAM (Integrated Score-CAM): Score-CAM weights integrated along scaled copies of each mask.

    .. math::
        w_c = \mathrm{softmax}_c\Big(\frac{1}{S}\sum_{s=1}^{S} y^c\big(k_s\, x \odot H_c\big) - y^c(x)\Big),
        \qquad k_s = \sum_{j=1}^{s} \frac{j}{S}

    (:math:`H_c` as in :class:`SSCAM`; the coefficient ``k_s`` is torch-cam's ``ISCAM``).
    Naidu et al., "IS-CAM: Integrated Score-CAM for axiomatic-based explanations", 2020.
    https://arxiv.org/abs/2010.03023

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 1), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
        >>> ISCAM(net, "0", num_samples=3)(torch.randn(1, 3, 4, 4)).maps.shape
        torch.Size([1, 4, 4])
    """

    name = "iscam"

    def _input(self, x: torch.Tensor, mask: torch.Tensor, sample: int, gen: torch.Generator) -> torch.Tensor:
        k = sum((j + 1) / self.num_samples for j in range(sample + 1))
        return k * (mask.to(x.dtype) * x)
