"""EfficientNet-Lite0's architecture in plain torch, module for module as timm builds ``tf_efficientnet_lite0``.

Why a copy: importing timm imports torchvision, whose ops import ``torch._dynamo``; together about 2 s
of a 4.7 s ``convlens predict`` were spent importing libraries the embedded model does not need. This
file builds the same network -- the same module names (``conv_stem``, ``blocks.3.0.conv_pw``, ``bn2``),
the same class names (``Conv2dSame``, ``BatchNormAct2d``, ``InvertedResidual``...), the same state-dict
keys and the same arithmetic -- from torch alone. ``tests/test_models.py`` checks it against timm's own
``tf_efficientnet_lite0`` (keys, shapes and outputs), so the two cannot drift apart silently.

EfficientNet-Lite (Tan & Le 2019, "EfficientNet"; the Lite variants of the TensorFlow TPU repository)
removes squeeze-excitation, uses ReLU6, and keeps the stem (32) and head (1280) widths fixed. Blocks,
per stage (timm's arch_def): ``ds_r1_k3_s1_e1_c16``, ``ir_r2_k3_s2_e6_c24``, ``ir_r2_k5_s2_e6_c40``,
``ir_r3_k3_s2_e6_c80``, ``ir_r3_k5_s1_e6_c112``, ``ir_r4_k5_s2_e6_c192``, ``ir_r1_k3_s1_e6_c320``.
``tf_`` models pad like TensorFlow's 'SAME': a stride-1 convolution pads ``k // 2`` on every side, a
stride-2 one pads ``max((ceil(in/s) - 1)*s + k - in, 0)`` split with the extra pixel at the bottom/right.

Example:
    >>> import torch
    >>> net = EfficientNet()
    >>> net(torch.zeros(1, 3, 224, 224)).shape, sum(p.numel() for p in net.parameters())
    (torch.Size([1, 1000]), 4652008)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "EfficientNet",
    "Conv2dSame",
    "BatchNormAct2d",
    "DepthwiseSeparableConv",
    "InvertedResidual",
    "SelectAdaptivePool2d",
]

_BN_EPS = 1e-3  # TensorFlow's BatchNorm epsilon, as in timm's tf_ models

# (block type, repeats, kernel, first stride, expansion, out channels) -- timm's arch_def for the Lite family
_ARCH = (
    ("ds", 1, 3, 1, 1, 16),
    ("ir", 2, 3, 2, 6, 24),
    ("ir", 2, 5, 2, 6, 40),
    ("ir", 3, 3, 2, 6, 80),
    ("ir", 3, 5, 1, 6, 112),
    ("ir", 4, 5, 2, 6, 192),
    ("ir", 1, 3, 1, 6, 320),
)


def _same_pad(size: int, k: int, s: int, d: int) -> int:
    """Total TF-'SAME' padding along one axis: ``max((ceil(size/s) - 1)*s + (k-1)*d + 1 - size, 0)``.

    Example:
        >>> _same_pad(224, 3, 2, 1)
        1
    """
    return max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)


class Conv2dSame(nn.Conv2d):
    """A convolution that pads like TensorFlow's 'SAME' from the input's size (extra pixel bottom/right).

    Example:
        >>> Conv2dSame(3, 4, 3, stride=2, bias=False)(torch.zeros(1, 3, 7, 7)).shape
        torch.Size([1, 4, 4, 4])
    """

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs["padding"] = 0
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = x.shape[-2:]
        ph = _same_pad(int(ih), self.kernel_size[0], self.stride[0], self.dilation[0])
        pw = _same_pad(int(iw), self.kernel_size[1], self.stride[1], self.dilation[1])
        x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _conv(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    """timm's ``create_conv2d(pad_type='same')``: static padding where it is symmetric, else Conv2dSame."""
    if stride == 1 and (k - 1) % 2 == 0:
        return nn.Conv2d(cin, cout, k, stride, padding=(k - 1) // 2, groups=groups, bias=False)
    return Conv2dSame(cin, cout, k, stride=stride, groups=groups, bias=False)


class BatchNormAct2d(nn.BatchNorm2d):
    """BatchNorm followed by an activation (ReLU6 or none), one module as in timm.

    Example:
        >>> BatchNormAct2d(4, act=False).act
        Identity()
    """

    def __init__(self, num_features: int, act: bool = True) -> None:
        super().__init__(num_features, eps=_BN_EPS)
        self.drop = nn.Identity()
        self.act: nn.Module = nn.ReLU6(inplace=True) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.drop(super().forward(x)))


class DepthwiseSeparableConv(nn.Module):
    """Depthwise kxk conv -> BN+ReLU6 -> pointwise 1x1 conv -> BN (skip when shape is kept)."""

    def __init__(self, cin: int, cout: int, k: int, stride: int) -> None:
        super().__init__()
        self.has_skip = stride == 1 and cin == cout
        self.conv_dw = _conv(cin, cin, k, stride, groups=cin)
        self.bn1 = BatchNormAct2d(cin)
        self.aa = nn.Identity()
        self.se = nn.Identity()
        self.conv_pw = _conv(cin, cout, 1)
        self.bn2 = BatchNormAct2d(cout, act=False)
        self.drop_path = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.bn2(self.conv_pw(self.se(self.aa(self.bn1(self.conv_dw(x))))))
        return self.drop_path(x) + shortcut if self.has_skip else x


class InvertedResidual(nn.Module):
    """MobileNetV2's block: 1x1 expand -> BN+ReLU6 -> depthwise kxk -> BN+ReLU6 -> 1x1 project -> BN (+ skip)."""

    def __init__(self, cin: int, cout: int, k: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = cin * expand
        self.has_skip = stride == 1 and cin == cout
        self.conv_pw = _conv(cin, mid, 1)
        self.bn1 = BatchNormAct2d(mid)
        self.conv_dw = _conv(mid, mid, k, stride, groups=mid)
        self.bn2 = BatchNormAct2d(mid)
        self.aa = nn.Identity()
        self.se = nn.Identity()
        self.conv_pwl = _conv(mid, cout, 1)
        self.bn3 = BatchNormAct2d(cout, act=False)
        self.drop_path = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.bn2(self.conv_dw(self.bn1(self.conv_pw(x))))
        x = self.bn3(self.conv_pwl(self.se(self.aa(x))))
        return self.drop_path(x) + shortcut if self.has_skip else x


class SelectAdaptivePool2d(nn.Module):
    """Global average pooling then flatten: (N, C, H, W) -> (N, C)."""

    def __init__(self) -> None:
        super().__init__()
        self.pool_type = "avg"
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.flatten(self.pool(x))


class EfficientNet(nn.Module):
    """EfficientNet-Lite0 with timm's module tree and its classifier seams (``get_classifier``,
    ``reset_classifier``, ``forward_features``, ``forward_head``, ``feature_info``)."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.num_features = 1280
        self.drop_rate = 0.0
        self.conv_stem = _conv(3, 32, 3, 2)
        self.bn1 = BatchNormAct2d(32)
        stages: list[nn.Module] = []
        cin, reduction = 32, 2
        self.feature_info: list[dict[str, object]] = []
        for i, (kind, repeats, k, stride, expand, cout) in enumerate(_ARCH):
            blocks: list[nn.Module] = []
            for r in range(repeats):
                s = stride if r == 0 else 1
                blocks.append(
                    DepthwiseSeparableConv(cin, cout, k, s)
                    if kind == "ds"
                    else InvertedResidual(cin, cout, k, s, expand)
                )
                cin = cout
            reduction *= stride
            stages.append(nn.Sequential(*blocks))
            # timm lists a stage where the resolution drops next (or at the end): its feature taps
            nxt = _ARCH[i + 1][3] if i + 1 < len(_ARCH) else 2
            if nxt == 2:
                self.feature_info.append(
                    {"stage": i + 1, "reduction": reduction, "module": f"blocks.{i}", "num_chs": cout}
                )
        self.blocks = nn.Sequential(*stages)
        self.conv_head = _conv(cin, self.num_features, 1)
        self.bn2 = BatchNormAct2d(self.num_features)
        self.global_pool = SelectAdaptivePool2d()
        self.classifier: nn.Module = nn.Linear(self.num_features, num_classes)

    def get_classifier(self) -> nn.Module:
        """The head (timm's seam for transfer learning)."""
        return self.classifier

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A fresh ``Linear(1280, num_classes)`` head (torch's default init, as timm's ``create_classifier``),
        on the model's device and dtype and in its train/eval mode."""
        w = self.conv_stem.weight
        self.num_classes = num_classes
        head = nn.Linear(self.num_features, num_classes, device=w.device, dtype=w.dtype) if num_classes > 0 else None
        self.classifier = (head or nn.Identity()).train(self.training)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> the (N, 1280, H/32, W/32) feature map after ``bn2``."""
        x = self.bn1(self.conv_stem(x))
        x = self.blocks(x)
        return self.bn2(self.conv_head(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool, then the classifier (or the pooled features with ``pre_logits``)."""
        x = self.global_pool(x)
        return x if pre_logits else self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
