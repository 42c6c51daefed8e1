"""Which channels carry a Grad-CAM map: the map split into one term per channel, for teaching.

Grad-CAM (Selvaraju et al. 2017, Eq. 1-2) weighs each channel ``k`` of a layer's activations
``A_k`` by the spatial mean of the target score's gradient, ``alpha_k = mean_ij dy/dA_k,ij``, and
sums: ``L = ReLU(sum_k alpha_k A_k)``. Before the sum and the ReLU each term ``alpha_k A_k`` is a
map of its own -- what Captum's ``LayerGradCam(..., attr_dim_summation=False)`` returns. Its total
``sum_ij alpha_k A_k,ij`` says how much channel ``k`` adds to (or, when negative, removes from)
the map; a few channels usually carry most of it.

Example:
    >>> import torch
    >>> _ = torch.manual_seed(0)  # a random net can have fewer than 2 channels that add to the map
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
    ...                           torch.nn.Flatten(), torch.nn.Linear(4, 2))
    >>> c = gradcam_channels(net, torch.randn(1, 3, 8, 8), "1")
    >>> tuple(c.maps.shape), tuple(c.weights.shape), len(c.top(0, 2))
    ((1, 4, 6, 6), (1, 4), 2)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from convlens.errors import InputError, LayerError
from convlens.hooks import capture, device_of, preserve_state
from convlens.layers import resolve
from convlens.models.logits import logits as read_logits

__all__ = ["ChannelContributions", "gradcam_channels"]


@dataclass
class ChannelContributions:
    """Grad-CAM split by channel, for one layer (tensors detached, on the model's device).

    Attributes:
        layer: the layer's name.
        targets: (N,) the class explained per image.
        weights: (N, K) ``alpha_k``, the spatial mean of the gradient of the target score.
        maps: (N, K, h, w) ``alpha_k * A_k`` (before the channel sum and the ReLU).
        contribution: (N, K) ``sum_ij alpha_k A_k,ij``: what each channel adds to the map (signed).
        share: (N, K) ``contribution / sum_k |contribution|``.
    """

    layer: str
    targets: torch.Tensor
    weights: torch.Tensor
    maps: torch.Tensor
    contribution: torch.Tensor
    share: torch.Tensor

    def top(self, image: int = 0, k: int = 8) -> list[tuple[int, float]]:
        """The ``k`` channels with the largest positive contribution for ``image``: ``[(channel, share)]``.

        Example:
            >>> c = ChannelContributions("l", torch.zeros(1), torch.zeros(1, 3), torch.zeros(1, 3, 1, 1),
            ...                          torch.tensor([[1.0, 3.0, -2.0]]), torch.tensor([[1 / 6, 0.5, -1 / 3]]))
            >>> [(ch, round(sh, 3)) for ch, sh in c.top(0, 2)]
            [(1, 0.5), (0, 0.167)]
        """
        if not 0 <= image < self.share.shape[0]:
            raise InputError(f"image must be in 0..{self.share.shape[0] - 1}, got {image}.")
        vals, idx = self.contribution[image].topk(min(k, self.contribution.shape[1]))
        return [(int(i), float(self.share[image, i])) for v, i in zip(vals, idx, strict=True) if float(v) > 0]


def gradcam_channels(
    model: nn.Module,
    x: torch.Tensor,
    layer: str | nn.Module = "auto",
    targets: int | Sequence[int] | torch.Tensor | None = None,
) -> ChannelContributions:
    """Grad-CAM's per-channel terms ``alpha_k A_k`` at ``layer`` for the ``targets`` classes (top-1 when None).

    The model's ``training`` flags and ``requires_grad`` are restored afterwards; parameter ``.grad``
    is untouched (``torch.autograd.grad``).

    Raises:
        LayerError: a layer whose output is not an (N, C, h, w) map.
        InputError: a target outside the model's classes or a targets list of the wrong length.
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise InputError(f"x must be an (N, C, H, W) tensor, got {getattr(x, 'shape', type(x))}.")
    dev = device_of(model)
    x = x.to(dev)
    ref = resolve(model, layer, input_shape=tuple(x.shape[1:]))
    if len(ref) != 1:
        raise LayerError(f"give one layer for the channel split, got {len(ref)}: {[r.name for r in ref]}.")
    name = ref[0].name
    with preserve_state(model, train=False), capture(model, {name: ref[0].module}, detach=False, clone=True) as cap:
        xg = x.detach().requires_grad_(True)  # a graph even when every parameter is frozen
        out = read_logits(cap.run(xg))
        act = cap.activations[name]
        if not isinstance(act, torch.Tensor) or act.ndim != 4:
            shape = tuple(act.shape) if isinstance(act, torch.Tensor) else type(act).__name__
            raise LayerError(f"layer '{name}' gives {shape}, not an (N, C, h, w) map; pick a convolutional layer.")
        n, k = out.shape
        if targets is None:
            tgt = out.argmax(1)
        else:
            tgt = torch.as_tensor([targets] * n if isinstance(targets, int) else targets, device=out.device).long()
            if tgt.shape != (n,) or int(tgt.min()) < 0 or int(tgt.max()) >= k:
                raise InputError(f"targets must be {n} class indices in 0..{k - 1}, got {targets!r}.")
        score = out.gather(1, tgt[:, None]).sum()
        (grad,) = torch.autograd.grad(score, act)
    weights = grad.mean(dim=(2, 3))  # (N, K): alpha_k
    maps = weights[:, :, None, None] * act.detach()  # (N, K, h, w)
    contribution = maps.sum(dim=(2, 3))
    share = contribution / contribution.abs().sum(1, keepdim=True).clamp_min(1e-12)
    return ChannelContributions(name, tgt.detach(), weights.detach(), maps.detach(), contribution, share)
