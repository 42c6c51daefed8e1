"""First-layer kernels shown directly: the weights of a conv on RGB input ARE small RGB images.

``tile_k = 0.5 + W_k / (2 * max|W|)`` maps each kernel (C_in = 3, kh, kw) to [0, 1] with 0.5 = zero
weight; ``max|W|`` is taken per kernel (``shared=False``, every tile uses its full contrast) or over
all kernels (``shared=True``, tiles comparable in strength).

Example:
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 5))
    >>> t = first_layer_kernels(net)
    >>> tuple(t.shape), bool((t >= 0).all() and (t <= 1).all())
    ((4, 3, 5, 5), True)
"""

from __future__ import annotations

import torch
from torch import nn

from convlens.errors import LayerError
from convlens.layers import conv_weight, first_conv, resolve

__all__ = ["first_layer_kernels"]


def first_layer_kernels(model: nn.Module, layer: str | None = None, *, shared: bool = False) -> torch.Tensor:
    """RGB tiles (C_out, 3, kh, kw) in [0, 1] of a conv layer on the image (default: the first); a
    1-input-channel conv (grayscale model) gives gray tiles (its kernel in all three channels).

    Example:
        >>> conv = torch.nn.Conv2d(3, 1, 1)
        >>> with torch.no_grad():
        ...     _ = conv.weight.copy_(torch.tensor([1.0, 0.0, -1.0]).view(1, 3, 1, 1))
        >>> first_layer_kernels(torch.nn.Sequential(conv)).flatten().tolist()
        [1.0, 0.5, 0.0]
    """
    if layer is None:
        first = first_conv(model)
        name, conv = first.name, first.module  # type: ignore[assignment]
    else:
        ref = resolve(model, layer)[0]
        name, conv = ref.name, ref.module  # type: ignore[assignment]
        kernel = conv_weight(conv)
        if kernel is None or kernel.shape[1] not in (1, 3) or getattr(conv, "groups", 1) != 1:
            got = (
                f"a {type(conv).__name__} with {kernel.shape[1] * getattr(conv, 'groups', 1)} input channels"
                if kernel is not None
                else f"a {type(conv).__name__}"
            )
            raise LayerError(
                f"layer '{name}' is {got}; only kernels of a conv on the image (3 input channels, or 1 for grayscale) are images."
            )
    kernel = conv_weight(conv)
    assert kernel is not None
    w = kernel.detach().float()  # (C_out, 3 or 1, kh, kw)
    if shared:
        scale = w.abs().max().clamp_min(1e-12)
    else:
        scale = w.abs().flatten(1).max(1).values.clamp_min(1e-12).view(-1, 1, 1, 1)
    tiles = (0.5 + w / (2 * scale)).clamp(0, 1).cpu()
    return tiles.expand(-1, 3, -1, -1).contiguous() if tiles.shape[1] == 1 else tiles  # grayscale kernels: gray tiles
