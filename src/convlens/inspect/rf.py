"""Receptive fields: theoretical (from the traced graph) and empirical (from gradients).

Theory (:func:`receptive_field`): the per-axis recursion of :mod:`convlens.graph`, maximised over every
path of the real graph, ``r' = r + (k_eff - 1)·j``, ``j' = s·j`` with ``k_eff = d·(k-1) + 1``.

Measurement (:func:`receptive_field_empirical`): the input pixels that can influence one unit are
those where ``∂y_unit/∂x ≠ 0``. On a trained network that gradient can vanish or cancel (ReLUs that
are off, max-pools that route to one pixel, weights of opposite sign), so the measurement runs on a
**cancellation-free copy** of the model:

* every weight tensor (``ndim >= 2``) is replaced by ``1 / shape[1]`` (positive, a channel average per
  tap), biases by 0, norm scales by 1, BatchNorm statistics by mean 0 / variance 1 (eval mode),
  through ``torch.func.functional_call`` with broadcast constants (no copy of the weights);
* pointwise nonlinearities (ReLU, ReLU6, hardtanh, GELU, SiLU, sigmoid, hard-swish, ...) and dropout
  act as the identity, and max-pools become average pools with the same window (so every pixel of
  a window gets gradient, not only the arg-max);
* the computation runs in float64 on an all-ones image.

The copy is then a linear map with only positive coefficients (and positive products for
multiplicative gates), so ``∂y/∂x_p > 0`` exactly for the pixels p connected to the unit by some
path and 0 elsewhere: the support is the union over all paths, what the theory claims. The user's
model is never modified. Norms with per-image statistics (LayerNorm, GroupNorm, InstanceNorm, RMSNorm)
hold their statistics constant, as BatchNorm does in eval mode: they act as the identity, so a field counts
the paths through their values (as the theory does), not through their statistics. Attention over all
tokens makes fields global anyway (window attention: the window).

Example:
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.MaxPool2d(2), torch.nn.Conv2d(4, 4, 3, dilation=2))
    >>> e = receptive_field_empirical(net, "2", 32)
    >>> e.size == receptive_field(net, "2", (3, 32, 32)).receptive_field
    True
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from convlens.errors import MODEL_FAILURES, ConvlensError, InputError, LayerError, first_line
from convlens.graph import Geometry, int_pair, torch_functions, trace
from convlens.hooks import capture, device_of, preserve_state
from convlens.layers import layer_layouts, resolve

__all__ = ["EmpiricalRF", "receptive_field", "receptive_field_empirical"]


@dataclass(frozen=True)
class EmpiricalRF:
    """Measured receptive field of one unit of ``layer``.

    ``size`` = (rows, cols) of the bounding box of pixels with non-zero gradient; ``box`` =
    (top, left, bottom, right) inclusive; ``center`` its centre; ``clipped`` is True when the box
    touches the image border (the true field may extend beyond the image: use a larger input).
    """

    layer: str
    unit: tuple[int, int]
    size: tuple[int, int]
    box: tuple[int, int, int, int]
    center: tuple[float, float]
    input_size: tuple[int, int]
    clipped: bool
    pixels: int  # number of pixels with non-zero gradient


def receptive_field(
    model: nn.Module, layer: str, input_shape: Sequence[int] = (3, 224, 224), *, call: int = 0
) -> Geometry:
    """Theoretical receptive-field geometry of ``layer``'s output (max over all paths of the traced graph).

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 5, stride=2), torch.nn.Conv2d(4, 4, 3))
        >>> receptive_field(net, "1", (3, 32, 32)).receptive_field
        (9, 9)
    """
    ref = resolve(model, layer, input_shape=tuple(input_shape))
    if len(ref) != 1:
        raise LayerError(f"receptive_field needs one layer; '{layer}' names {len(ref)}.")
    return trace(model, tuple(input_shape)).geometry(ref[0].name, call)


def _identity(x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    return x


_IDENTITY_NAMES = (
    "relu",
    "relu_",
    "relu6",
    "hardtanh",
    "hardtanh_",
    "leaky_relu",
    "leaky_relu_",
    "elu",
    "elu_",
    "selu",
    "selu_",
    "celu",
    "celu_",
    "gelu",
    "silu",
    "sigmoid",
    "sigmoid_",
    "hardsigmoid",
    "hardswish",
    "tanh",
    "tanh_",
    "softplus",
    "mish",
    "threshold",
    "threshold_",
    "rrelu",
    "rrelu_",
    "dropout",
    "dropout2d",
    "dropout1d",
    "alpha_dropout",
    "feature_alpha_dropout",
    "dropout_",
    # norms with per-image statistics: their statistics are held constant (as BatchNorm's are in eval mode),
    # so they act as their affine part, the identity on the copy (scale 1, shift 0). Computed, LayerNorm and
    # RMSNorm over the copy's equal channels cancel to 0 (ConvNeXt's stem "did not depend on the input"), and
    # the statistics of GroupNorm and InstanceNorm would make every field the whole image.
    "layer_norm",
    "group_norm",
    "instance_norm",
    "rms_norm",
)


_IDENTITY = torch_functions(*_IDENTITY_NAMES)
#: products of two tensors: on the positive copy a squeeze-excitation gate (pool -> FC -> hard-sigmoid ->
#: multiply) squares the values, block after block, until they overflow to inf and the gradient is NaN
#: (mobilenet_v3_small's features.9 already reached 1e261). Their output is divided by its (detached)
#: maximum: a positive constant factor, so the gradient's support is unchanged.
_PRODUCTS = torch_functions("mul", "__mul__", "__rmul__", "mul_", "__imul__", "matmul", "__matmul__", "bmm", "einsum")
_INPLACE_PRODUCTS = torch_functions("mul_", "__imul__")
_MAXPOOL = torch_functions("max_pool2d", "max_pool2d_with_indices")
_ADAPTIVE_MAX = torch_functions("adaptive_max_pool2d", "adaptive_max_pool2d_with_indices")
_MAXPOOL_ARGS = ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")


class _Functional:
    """Callable that runs ``model`` with substituted tensors (``torch.func.functional_call``)."""

    def __init__(self, model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
        self.model, self.tensors = model, tensors

    def __call__(self, x: torch.Tensor) -> Any:
        return torch.func.functional_call(self.model, self.tensors, (x,), tie_weights=True, strict=False)


class _Monotone(TorchFunctionMode):
    """Nonlinearities -> identity, max-pool -> average pool over the same window."""

    def __torch_function__(
        self, func: Any, types: Any, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None
    ) -> Any:
        kwargs = dict(kwargs or {})
        if func in _IDENTITY:
            return args[0] if args else kwargs["input"]
        if func in _MAXPOOL:
            a = dict(zip(_MAXPOOL_ARGS, args))
            a.update(kwargs)
            dil = a.get("dilation", 1)
            if not a.get("return_indices") and dil in (1, (1, 1), [1, 1]):
                return F.avg_pool2d(
                    a["input"],
                    a["kernel_size"],
                    a.get("stride") or None,
                    a.get("padding", 0),
                    bool(a.get("ceil_mode", False)),
                    True,
                )
            # dilated windows or indices asked for: the real op gives the output size (and the indices), the
            # values are the mean over the same dilated window, so every pixel of it gets gradient
            real = func(*args, **kwargs)
            values = _window_mean(a, real[0] if isinstance(real, tuple) else real)
            return (values, real[1]) if isinstance(real, tuple) else values
        if func in _ADAPTIVE_MAX:
            a = dict(zip(("input", "output_size", "return_indices"), args))
            a.update(kwargs)
            mean = F.adaptive_avg_pool2d(a["input"], a["output_size"])
            if not a.get("return_indices"):
                return mean
            return mean, func(*args, **kwargs)[1]
        out = func(*args, **kwargs)
        if func in _PRODUCTS and isinstance(out, torch.Tensor) and out.is_floating_point():
            n_dep = sum(1 for t in args if isinstance(t, torch.Tensor) and t.requires_grad)
            if n_dep >= 2:  # a product of two image-dependent tensors squares the values: rescale it
                with torch.no_grad():
                    scale = out.detach().abs().amax().clamp_min(1e-300)
                if func in _INPLACE_PRODUCTS:
                    return out.div_(scale)
                return out / scale
        return out


def _window_mean(a: Mapping[str, Any], like: torch.Tensor) -> torch.Tensor:
    """Mean of each (dilated) max-pool window, shaped like the max pool's output ``like``: a depthwise
    convolution with a constant kernel over the zero-padded input (padded further at the bottom/right for
    ``ceil_mode``'s extra windows)."""
    x = a["input"]
    batched = x.ndim == 4
    x = x if batched else x.unsqueeze(0)
    k = int_pair(a["kernel_size"], 1)
    s = int_pair(a.get("stride") or a["kernel_size"], 1)
    p = int_pair(a.get("padding", 0), 0)
    d = int_pair(a.get("dilation", 1), 1)
    ho, wo = like.shape[-2:]
    need = [(n - 1) * st + dl * (kk - 1) + 1 for n, st, dl, kk in zip((ho, wo), s, d, k, strict=True)]
    extra = [max(0, nd - (size + 2 * pp)) for nd, size, pp in zip(need, x.shape[-2:], p, strict=True)]
    x = F.pad(x, (p[1], p[1] + extra[1], p[0], p[0] + extra[0]))
    c = x.shape[1]
    w = torch.full((c, 1, *k), 1.0 / (k[0] * k[1]), dtype=x.dtype, device=x.device)
    out = F.conv2d(x, w, stride=s, dilation=d, groups=c)[..., :ho, :wo]
    return out if batched else out.squeeze(0)


def _positive_tensors(model: nn.Module, device: torch.device) -> dict[str, torch.Tensor]:
    """Replacement parameters/buffers for ``functional_call``: broadcast constants, no copy of the weights."""
    out: dict[str, torch.Tensor] = {}

    def const(v: float, shape: torch.Size) -> torch.Tensor:
        return torch.tensor(v, dtype=torch.float64, device=device).expand(shape)

    for mod_name, mod in model.named_modules():
        prefix = f"{mod_name}." if mod_name else ""
        for name, p in mod.named_parameters(recurse=False):
            v = 1.0 / max(int(p.shape[1]), 1) if p.ndim >= 2 else (0.0 if "bias" in name else 1.0)
            out[prefix + name] = const(v, p.shape)
        for name, b in mod.named_buffers(recurse=False):
            if name == "running_mean":
                out[prefix + name] = const(0.0, b.shape)
            elif name == "running_var":
                out[prefix + name] = const(1.0, b.shape)
            elif b.is_floating_point():
                out[prefix + name] = b.detach().to(device=device, dtype=torch.float64)
    return out


def receptive_field_empirical(
    model: nn.Module,
    layer: str,
    input_size: int | Sequence[int] = 224,
    *,
    in_channels: int = 3,
    unit: tuple[int, int] | None = None,
    call: int = 0,
    device: str | torch.device | None = None,
) -> EmpiricalRF:
    """Measure the receptive field of one unit of ``layer`` as the support of ``∂y_unit/∂x``.

    The unit is the centre of the layer's output map (``unit=(row, col)`` to choose); the score is the
    sum over its channels; channels-last (N, H, W, C) maps are read as rows and columns too. A layer that
    outputs tokens of a flattened grid (``(N, L, C)`` after a ViT's patch embedding,
    :attr:`convlens.graph.Geometry.tokens`) is measured on the token of unit (row, col). Runs on a
    cancellation-free copy (see module docstring); ``model`` is untouched.

    Args:
        model: the network.
        layer: one module name (or glob matching one module).
        input_size: H (square) or (H, W) of the probe image; make it larger than the field.
        in_channels: channels of the probe image.
        unit: output position to measure; defaults to the centre (H'//2, W'//2).
        call: which call of a module called several times (default: the first; -1: the last, which runs the whole forward).
        device: where to compute (defaults to the model's device).

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 1, 3), torch.nn.Conv2d(1, 1, 3, stride=2), torch.nn.Conv2d(1, 1, 3))
        >>> receptive_field_empirical(net, "2", 21, in_channels=1).size
        (9, 9)
    """
    size = (int(input_size), int(input_size)) if isinstance(input_size, int) else tuple(int(v) for v in input_size)
    if len(size) != 2 or min(size) < 1:
        raise InputError(f"input_size must be an int or (H, W) of positive ints, got {input_size!r}.")
    refs = resolve(model, layer, input_shape=(in_channels, *size))
    if len(refs) != 1:
        raise LayerError(f"receptive_field_empirical needs one layer; '{layer}' names {len(refs)}.")
    name = refs[0].name
    dev = device_of(model, device)
    x = torch.ones(1, in_channels, *size, dtype=torch.float64, device=dev, requires_grad=True)
    stop = name if call == 0 else None
    tensors = _positive_tensors(model, dev)
    with preserve_state(model, train=False), _Monotone(), capture(model, [name], detach=False, stop_after=stop) as cap:
        try:
            cap.model = _Functional(model, tensors)
            cap.run(x)
        except ConvlensError:
            raise
        except MODEL_FAILURES as e:
            raise InputError(f"the model failed on a {size[0]}x{size[1]} probe in float64 ({first_line(e)}).") from e
    calls = cap.calls.get(name, [])
    if not calls:
        raise LayerError(f"layer '{name}' was not called in the forward pass.")
    try:
        y = calls[call]
    except IndexError:
        raise LayerError(f"layer '{name}' was called {len(calls)} time(s); call index {call} does not exist.") from None
    tokens = None
    if y.ndim == 4:  # channels-last maps (Swin, ConvNeXt's blocks) as (N, C, H, W), by THE layout conversion
        lay = layer_layouts(model, (in_channels, *size)).get(name)
        if lay is not None and lay.fmt == "NHWC":  # the probe saw the last call: this call's grid may differ
            y = lay.channels_first(y)
    else:  # (N, L, C) tokens of a flattened grid (a ViT's patch embedding): unit (r, c) is one token
        geo = trace(model, (in_channels, *size), device=dev).geometry(name, call)
        tokens = geo.tokens
        if tokens is None or tokens[0] >= y.ndim:
            raise LayerError(
                f"layer '{name}' outputs shape {tuple(y.shape)}; an empirical receptive field needs an (N, C, H, W) "
                "map or tokens of a flattened grid."
            )
    grid = (tokens[1], tokens[2]) if tokens else (int(y.shape[2]), int(y.shape[3]))
    uh, uw = unit if unit is not None else (grid[0] // 2, grid[1] // 2)
    if not (0 <= uh < grid[0] and 0 <= uw < grid[1]):
        raise InputError(f"unit {(uh, uw)} is outside the {grid[0]}x{grid[1]} output of '{name}'.")
    if tokens:
        score = y[0].select(tokens[0] - 1, tokens[3] + uh * grid[1] + uw).sum()
    else:
        score = y[0, :, uh, uw].sum()
    (grad,) = torch.autograd.grad(score, x)
    support = grad[0].abs().sum(0) > 0
    rows = torch.nonzero(support.any(1)).flatten()
    cols = torch.nonzero(support.any(0)).flatten()
    if rows.numel() == 0:
        raise LayerError(f"unit {(uh, uw)} of '{name}' does not depend on the input image.")
    top, bottom, left, right = int(rows.min()), int(rows.max()), int(cols.min()), int(cols.max())
    clipped = top == 0 or left == 0 or bottom == size[0] - 1 or right == size[1] - 1
    return EmpiricalRF(
        name,
        (int(uh), int(uw)),
        (bottom - top + 1, right - left + 1),
        (top, left, bottom, right),
        ((top + bottom) / 2, (left + right) / 2),
        size,
        clipped,
        int(support.sum()),
    )
