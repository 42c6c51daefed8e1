"""Building blocks of modern CNNs, written so their structure can be read and costed.

Every block keeps its parallel paths in ``self.branches`` (an ``nn.ModuleDict`` of
``nn.Sequential``) and says how they merge in ``self.merge``:

* :class:`Conv1x1` — one ``1x1`` convolution (+ ReLU): a per-pixel linear map across channels,
  the cheap way to change the channel count (Lin et al. 2013, "Network in Network").
* :class:`Inception` — GoogLeNet's block (Szegedy et al. 2015, Fig. 2): 1x1, 3x3, 5x5 convs and a
  3x3 max pool side by side, concatenated on channels. The *naive* version (Fig. 2a) applies the
  3x3/5x5 convs to all input channels; the version *with dimension reductions* (Fig. 2b) puts 1x1
  convs before them (and after the pool). Defaults are inception (3a) from Table 1:
  64 | 96->128 | 16->32 | pool->32, with the paper's 5x5 branch (torchvision uses a 3x3 there).
* :class:`ResidualBlock` — He et al. 2016: ``y = relu(F(x) + shortcut(x))``; *basic* F is two 3x3
  convs, *bottleneck* F is 1x1 (reduce) -> 3x3 -> 1x1 (expand). The shortcut is the identity, or a
  1x1 projection (stride s, + BN) when the shape changes (option B of the paper).
* :class:`PlainBlock` — the same F without the shortcut: ``y = relu(F(x))``.
* :class:`DepthwiseSeparable` — MobileNet's block (Howard et al. 2017, Fig. 3): a depthwise 3x3
  conv (one filter per channel, ``groups = C``) + BN + ReLU, then a pointwise 1x1 conv + BN + ReLU.
  It costs ``H W C (9 + F)`` MACs instead of a 3x3 conv's ``9 H W C F``.

Layers use PyTorch's default initialisation. ``norm=True`` adds BatchNorm after each conv (convs
then have no bias, as in ResNet); ``norm=False`` keeps the conv biases.

Example:
    >>> import torch
    >>> Inception(192)(torch.zeros(1, 192, 28, 28)).shape
    torch.Size([1, 256, 28, 28])
    >>> ResidualBlock(64, 128, stride=2)(torch.zeros(2, 64, 8, 8)).shape
    torch.Size([2, 128, 4, 4])
"""

from __future__ import annotations

import torch
from torch import nn

from convlens.errors import InputError

__all__ = ["Conv1x1", "Inception", "ResidualBlock", "PlainBlock", "DepthwiseSeparable", "BLOCK_KINDS"]

#: Kinds of residual/plain block.
BLOCK_KINDS = ("basic", "bottleneck")


def _check_pos(**values: int) -> None:
    for name, v in values.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise InputError(f"{name} must be a positive integer, got {v!r}.")


def _conv(cin: int, cout: int, k: int, stride: int = 1, *, norm: bool, relu: bool) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=not norm)]
    if norm:
        layers.append(nn.BatchNorm2d(cout))
    if relu:
        layers.append(nn.ReLU(inplace=False))
    return layers


def _check_input(block: nn.Module, x: torch.Tensor, channels: int) -> None:
    if x.ndim != 4 or x.shape[1] != channels:
        raise InputError(f"{type(block).__name__} expects (N, {channels}, H, W) input, got shape {tuple(x.shape)}.")


class Conv1x1(nn.Module):
    """A 1x1 convolution ``in_channels -> out_channels`` (+ ReLU): mixes channels per pixel.

    ``y[f, i, j] = b[f] + sum_c w[f, c] x[c, i, j]`` — spatial size unchanged, ``C*F + F`` params.

    Example:
        >>> Conv1x1(64, 32)(torch.zeros(1, 64, 28, 28)).shape
        torch.Size([1, 32, 28, 28])
    """

    merge = "single"

    def __init__(self, in_channels: int, out_channels: int, *, relu: bool = True, stride: int = 1) -> None:
        super().__init__()
        _check_pos(in_channels=in_channels, out_channels=out_channels, stride=stride)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.branches = nn.ModuleDict(
            {"conv1x1": nn.Sequential(*_conv(in_channels, out_channels, 1, stride, norm=False, relu=relu))}
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(self, x, self.in_channels)
        return self.branches["conv1x1"](x)


class Inception(nn.Module):
    """GoogLeNet inception block; output channels ``ch1x1 + ch3x3 + ch5x5 + (pool_proj or in_channels)``.

    Branches (all stride 1, "same" padding, ReLU after each conv, concatenated on channels):

    ====== ===================================== ===========================
    branch reduced (``reduce=True``)             naive (``reduce=False``)
    ====== ===================================== ===========================
    1x1    1x1 conv -> ch1x1                     1x1 conv -> ch1x1
    3x3    1x1 -> ch3x3red, 3x3 -> ch3x3         3x3 conv -> ch3x3
    5x5    1x1 -> ch5x5red, 5x5 -> ch5x5         5x5 conv -> ch5x5
    pool   3x3 max pool (s1, p1), 1x1 -> pool_proj  3x3 max pool only (keeps in_channels)
    ====== ===================================== ===========================

    Defaults: inception (3a) of Szegedy et al. 2015, Table 1 (input 28x28x192 -> 28x28x256).

    Example:
        >>> Inception(192, reduce=False)(torch.zeros(1, 192, 28, 28)).shape[1]   # 64+128+32+192
        416
    """

    merge = "concat"

    def __init__(
        self,
        in_channels: int = 192,
        ch1x1: int = 64,
        ch3x3red: int = 96,
        ch3x3: int = 128,
        ch5x5red: int = 16,
        ch5x5: int = 32,
        pool_proj: int = 32,
        *,
        reduce: bool = True,
        norm: bool = False,
    ) -> None:
        super().__init__()
        _check_pos(in_channels=in_channels, ch1x1=ch1x1, ch3x3=ch3x3, ch5x5=ch5x5)
        if reduce:
            _check_pos(ch3x3red=ch3x3red, ch5x5red=ch5x5red, pool_proj=pool_proj)
        self.in_channels, self.reduce = in_channels, reduce
        c = dict(norm=norm, relu=True)
        if reduce:
            branches = {
                "1x1": _conv(in_channels, ch1x1, 1, **c),
                "3x3": _conv(in_channels, ch3x3red, 1, **c) + _conv(ch3x3red, ch3x3, 3, **c),
                "5x5": _conv(in_channels, ch5x5red, 1, **c) + _conv(ch5x5red, ch5x5, 5, **c),
                "pool": [nn.MaxPool2d(3, stride=1, padding=1)] + _conv(in_channels, pool_proj, 1, **c),
            }
            self.out_channels = ch1x1 + ch3x3 + ch5x5 + pool_proj
        else:
            branches = {
                "1x1": _conv(in_channels, ch1x1, 1, **c),
                "3x3": _conv(in_channels, ch3x3, 3, **c),
                "5x5": _conv(in_channels, ch5x5, 5, **c),
                "pool": [nn.MaxPool2d(3, stride=1, padding=1)],
            }
            self.out_channels = ch1x1 + ch3x3 + ch5x5 + in_channels
        self.branches = nn.ModuleDict({k: nn.Sequential(*v) for k, v in branches.items()})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(self, x, self.in_channels)
        return torch.cat([b(x) for b in self.branches.values()], dim=1)  # (N, sum of branch widths, H, W)


def _residual_function(
    in_channels: int, out_channels: int, stride: int, kind: str, mid_channels: int | None, norm: bool
) -> list[nn.Module]:
    """The layers of F; the last conv has no ReLU (it comes after the addition).

    Validates the arguments shared by :class:`ResidualBlock` and :class:`PlainBlock`.
    """
    _check_pos(in_channels=in_channels, out_channels=out_channels, stride=stride)
    if mid_channels is not None:
        _check_pos(mid_channels=mid_channels)
    if kind not in BLOCK_KINDS:
        raise InputError(f"kind must be one of {', '.join(BLOCK_KINDS)}; got '{kind}'.")
    if kind == "basic":
        return _conv(in_channels, out_channels, 3, stride, norm=norm, relu=True) + _conv(
            out_channels, out_channels, 3, norm=norm, relu=False
        )
    mid = mid_channels or max(1, out_channels // 4)  # expansion 4, as in ResNet-50
    return (
        _conv(in_channels, mid, 1, norm=norm, relu=True)
        + _conv(mid, mid, 3, stride, norm=norm, relu=True)
        + _conv(mid, out_channels, 1, norm=norm, relu=False)
    )


class ResidualBlock(nn.Module):
    """``y = relu(F(x) + shortcut(x))`` with a basic (3x3, 3x3) or bottleneck (1x1, 3x3, 1x1) F.

    The shortcut is the identity when ``stride == 1`` and ``in_channels == out_channels``; otherwise
    a projection ``1x1 conv (stride) [+ BN]`` so the shapes match for the addition.

    Example:
        >>> b = ResidualBlock(16, 16)
        >>> len(b.branches["shortcut"])          # identity: no layers
        0
        >>> ResidualBlock(64, 256, kind="bottleneck")(torch.zeros(1, 64, 7, 7)).shape
        torch.Size([1, 256, 7, 7])
    """

    merge = "add"

    def __init__(
        self,
        in_channels: int,
        out_channels: int | None = None,
        stride: int = 1,
        *,
        kind: str = "basic",
        mid_channels: int | None = None,
        norm: bool = True,
    ) -> None:
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        residual = _residual_function(in_channels, out_channels, stride, kind, mid_channels, norm)  # validates
        self.in_channels, self.out_channels, self.stride, self.kind = in_channels, out_channels, stride, kind
        shortcut: list[nn.Module] = []
        if stride != 1 or in_channels != out_channels:
            shortcut = [nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=not norm)]
            if norm:
                shortcut.append(nn.BatchNorm2d(out_channels))
        self.branches = nn.ModuleDict(
            {
                "residual": nn.Sequential(*residual),
                "shortcut": nn.Sequential(*shortcut),  # empty Sequential = identity
            }
        )
        self.relu = nn.ReLU(inplace=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(self, x, self.in_channels)
        return self.relu(self.branches["residual"](x) + self.branches["shortcut"](x))


class PlainBlock(nn.Module):
    """:class:`ResidualBlock` without the shortcut: ``y = relu(F(x))`` (same layers, same parameters
    as the residual path).

    Example:
        >>> PlainBlock(16, 32, stride=2)(torch.zeros(1, 16, 8, 8)).shape
        torch.Size([1, 32, 4, 4])
    """

    merge = "single"

    def __init__(
        self,
        in_channels: int,
        out_channels: int | None = None,
        stride: int = 1,
        *,
        kind: str = "basic",
        mid_channels: int | None = None,
        norm: bool = True,
    ) -> None:
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        main = _residual_function(in_channels, out_channels, stride, kind, mid_channels, norm)  # validates
        self.in_channels, self.out_channels, self.stride, self.kind = in_channels, out_channels, stride, kind
        self.branches = nn.ModuleDict({"main": nn.Sequential(*main)})
        self.relu = nn.ReLU(inplace=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(self, x, self.in_channels)
        return self.relu(self.branches["main"](x))


class DepthwiseSeparable(nn.Module):
    """MobileNet v1's depthwise separable block: depthwise ``k x k`` (stride) + BN + ReLU, then
    pointwise ``1x1`` to ``out_channels`` + BN + ReLU (convs without bias when ``norm``).

    Example:
        >>> DepthwiseSeparable(32, 64, stride=2)(torch.zeros(1, 32, 8, 8)).shape
        torch.Size([1, 64, 4, 4])
    """

    merge = "single"

    def __init__(
        self, in_channels: int, out_channels: int | None = None, stride: int = 1, *, kernel: int = 3, norm: bool = True
    ) -> None:
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        _check_pos(in_channels=in_channels, out_channels=out_channels, stride=stride, kernel=kernel)
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride
        depthwise: list[nn.Module] = [
            nn.Conv2d(
                in_channels, in_channels, kernel, stride=stride, padding=kernel // 2, groups=in_channels, bias=not norm
            )
        ]
        if norm:
            depthwise.append(nn.BatchNorm2d(in_channels))
        depthwise.append(nn.ReLU(inplace=False))
        self.branches = nn.ModuleDict(
            {"main": nn.Sequential(*depthwise, *_conv(in_channels, out_channels, 1, norm=norm, relu=True))}
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(self, x, self.in_channels)
        return self.branches["main"](x)
