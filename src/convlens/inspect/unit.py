"""One unit of a real network: the exact computation behind one output value.

:func:`trace_unit` answers "which input numbers, times which weights, plus which bias, give this
value?" for channel ``c`` at row ``i``, column ``j`` of any layer, on one image. It runs the model once
(eval mode, no grad, modes restored) with :func:`convlens.hooks.capture` on the layer and records the
**tensor operations the layer really executes** on that image (their arguments copied before they run,
so in-place activations cannot overwrite them). The last operation that produced the layer's output is
re-computed for that one position, in float64, from its captured input and the module's real weights:

* convolution (``F.conv2d``, any stride, dilation, groups/depthwise; zero padding from ``padding=``,
  ``padding='same'`` or an explicit ``F.pad`` before it, as timm's ``Conv2dSame`` does):
  ``y[c,i,j] = b[c] + Σ_{k ∈ group(c)} Σ_{u,v} x[k, i·s - p + u·d, j·s - p + v·d] · w[c, k, u, v]``,
  with one term per input channel (the per-channel sums of patch × kernel);
* linear: ``y[c] = b[c] + Σ_f x[f] · W[c, f]`` (one term per feature, largest contributions first);
* batch norm: ``y = (x - μ) / sqrt(σ² + ε) · γ + β`` with the running (eval) statistics;
* activations (ReLU, ReLU6, SiLU, hard-swish, sigmoid, GELU, ...): the function, its input and output;
* max/average/adaptive pooling and global means: the window, and the chosen or averaged value;
* residual add, multiplication and concatenation: the branches, each named by the module that produced it.

Operations that only move values (flatten, view, dropout in eval, clone) are followed to their input.
When the layer's top operation is a single-position one (activation, batch norm), ``inner`` holds the
trace of its input inside the same layer (ReLU ← add of branches in a ResNet block; ReLU6 ← batch norm
← convolution in a timm ``ConvBnAct``).

The result also states the model's own value at that position (``value``) and the difference to the
traced ``total`` (``abs_error``: below 1e-4 in float32 on every layer type above).

Example:
    >>> import torch
    >>> torch.manual_seed(0) and None
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU())
    >>> t = trace_unit(net, torch.randn(1, 3, 8, 8), "0", (2, 0, 5))
    >>> t.op, len(t.terms), t.abs_error < 1e-5, bool(t.in_padding[0].all())
    ('conv2d', 3, True, True)
"""

from __future__ import annotations

import math
import re
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from convlens.errors import MODEL_FAILURES, InputError, LayerError, first_line
from convlens.graph import bind_args, int_pair, tensors_in, torch_functions
from convlens.hooks import StopForward, capture, device_of, first_tensor, preserve_state
from convlens.layers import resolve

__all__ = ["Term", "UnitTrace", "trace_unit", "parse_layer_call"]

_CALL = re.compile(r"^(.+?)\s*#(\d+)$")
#: per model: (layer, input shape) -> how many times the layer ran in one forward pass. With it, the
#: default "last call" stops the forward right after that call next time (the explorer traces many units).
_CALL_COUNTS: weakref.WeakKeyDictionary[nn.Module, dict[tuple[str, tuple[int, ...]], int]] = weakref.WeakKeyDictionary()


# --------------------------------------------------------------------------------------------- results
@dataclass(frozen=True)
class Term:
    """One addend of a traced value: an input channel (conv), a feature (linear) or a branch (add/cat).

    ``channel`` is the input channel / feature / branch index, ``sum`` its contribution, ``source``
    the module (or op) that produced that input when known.
    """

    channel: int
    sum: float
    source: str | None = None


@dataclass
class UnitTrace:
    """The exact computation of one output value of ``layer`` (see the module docstring).

    ``value`` is the model's own activation, ``total`` the traced result and ``terms`` its addends
    (``total = Σ terms + bias`` for conv, linear, batch norm and add; the chosen/averaged value for
    pools; ``f(input)`` for activations). ``patch``/``kernel``/``in_padding`` (conv, pools) are
    (channels, kH, kW) arrays whose rows/cols are ``rows``/``cols`` of the layer's input map
    (negative or past the end: padding). ``numbers`` holds the named scalars of the formula.
    ``rf``/``erf`` are filled by ``trace_unit(..., field=True)``.
    """

    def _repr_html_(self) -> str:
        """Rich display in Jupyter: the renderer the report uses (:func:`convlens.plot.html.unit_trace_html`), images inline."""
        from convlens.plot.html import unit_trace_html

        return unit_trace_html(self)

    layer: str
    call: int
    at: tuple[int, ...]
    module_type: str
    op: str
    kind: str
    value: float
    total: float
    abs_error: float
    terms: list[Term]
    bias: float | None
    formula: str
    numbers: dict[str, float] = field(default_factory=dict)
    patch: np.ndarray | None = field(default=None, repr=False)
    kernel: np.ndarray | None = field(default=None, repr=False)
    in_padding: np.ndarray | None = field(default=None, repr=False)
    rows: list[int] = field(default_factory=list)
    cols: list[int] = field(default_factory=list)
    in_channels: list[int] = field(default_factory=list)
    input_shape: tuple[int, ...] = ()
    output_shape: tuple[int, ...] = ()
    inner: UnitTrace | None = None
    rf: Any = None  # convlens.inspect.erf.UnitReceptiveField when field=True
    erf: Any = None  # convlens.inspect.erf.EffectiveRF when field=True
    #: whether the model's weights are pretrained (set when trace_unit got a ModelBundle; then in the JSON)
    pretrained: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``convlens unit --json``; the server's unit endpoint returns the same)."""
        rf = self.rf
        d = {
            "layer": self.layer,
            "at": list(self.at),
            "value": self.value,
            "total": self.total,
            "abs_error": self.abs_error,
            "terms": [{"channel": t.channel, "sum": t.sum, "source": t.source} for t in self.terms],
            "bias": self.bias,
            "rf_box": list(rf.box) if rf is not None else None,
            "erf": self.erf.to_dict() if self.erf is not None else None,
            "call": self.call,
            "module_type": self.module_type,
            "op": self.op,
            "kind": self.kind,
            "formula": self.formula,
            "numbers": dict(self.numbers),
            "rows": list(self.rows),
            "cols": list(self.cols),
            "in_channels": list(self.in_channels),
            "patch": None if self.patch is None else self.patch.tolist(),
            "kernel": None if self.kernel is None else self.kernel.tolist(),
            "in_padding": None if self.in_padding is None else self.in_padding.tolist(),
            "input_shape": list(self.input_shape),
            "output_shape": list(self.output_shape),
            "rf": rf.to_dict() if rf is not None else None,
            "inner": self.inner.to_dict() if self.inner is not None else None,
        }
        if self.pretrained is not None:  # known for a ModelBundle's trace (top level only)
            d["pretrained"] = self.pretrained
        return d


# --------------------------------------------------------------------------------------------- the tape
@dataclass
class _Op:
    """One tensor operation run inside the traced layer call: its arguments copied before it ran."""

    func: Any
    name: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    out: torch.Tensor  # copy of the (first) output right after the op
    ins: list[int | None]  # per tensor argument (in tensors_in order): index of the producing op, or None
    outer: list[str]  # per tensor argument not produced inside the call: 'input', 'parameter' or 'constant'


def _snapshot(obj: Any) -> Any:
    if isinstance(obj, nn.Parameter):  # weights do not change during a forward pass: no copy
        return obj.detach()
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()
    if type(obj) in (tuple, list):
        return type(obj)(_snapshot(o) for o in obj)
    return obj


class _Tape(TorchFunctionMode):
    """Records every op of one layer call (entered by the layer's pre-hook, left by its hook)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[_Op] = []
        self.producer: dict[int, int] = {}
        self.keep: list[torch.Tensor] = []  # originals kept alive during the call: their ids stay unique
        self.sources: dict[int, str] = {}  # id(tensor) -> child module name / 'input'

    def reset(self, inputs: Sequence[Any]) -> None:
        self.ops, self.producer, self.keep, self.sources = [], {}, [], {}
        for t in tensors_in(inputs):
            self.keep.append(t)
            self.sources[id(t)] = "input"

    def __torch_function__(
        self, func: Any, types: Any, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None
    ) -> Any:
        kwargs = dict(kwargs or {})
        tin = tensors_in((args, kwargs))
        ins = [self.producer.get(id(t)) for t in tin]
        outer = [
            "input" if id(t) in self.sources else "parameter" if isinstance(t, nn.Parameter) else "constant"
            for t in tin
        ]
        sargs, skw = _snapshot(tuple(args)), {k: _snapshot(v) for k, v in kwargs.items()}
        out = func(*args, **kwargs)
        outs = tensors_in(out)
        if outs and func is not torch.Tensor.__setitem__:
            name = getattr(func, "__name__", None) or str(func)
            self.ops.append(_Op(func, name, sargs, skw, outs[0].detach().clone(), ins, outer))
            for t in outs:
                self.producer[id(t)] = len(self.ops) - 1
                self.keep.append(t)
            for t in tin:
                self.keep.append(t)
        return out


# --------------------------------------------------------------------------------------------- op handlers
@dataclass
class _Step:
    op: str
    kind: str
    total: float
    terms: list[Term]
    bias: float | None
    formula: str
    numbers: dict[str, float] = field(default_factory=dict)
    patch: np.ndarray | None = None
    kernel: np.ndarray | None = None
    in_padding: np.ndarray | None = None
    rows: list[int] = field(default_factory=list)
    cols: list[int] = field(default_factory=list)
    in_channels: list[int] = field(default_factory=list)
    input_shape: tuple[int, ...] = ()
    follow: tuple[int, tuple[int, ...]] | None = None  # (tensor-argument slot, position) to trace further


class _Ctx:
    """What a handler can ask: the tape, and which module produced a tensor argument."""

    def __init__(self, tape: _Tape, names: dict[int, str]) -> None:
        self.tape = tape
        self.names = names  # op index -> child module whose output that op produced

    def source(self, op: _Op, slot: int) -> str | None:
        if slot >= len(op.ins):
            return None
        src = op.ins[slot]
        if src is None:
            return op.outer[slot]
        return self.names.get(src) or self.tape.ops[src].name


_CONV_ARGS = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
_POOL_ARGS = ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")
_AVG_ARGS = ("input", "kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override")
_BN_ARGS = ("input", "running_mean", "running_var", "weight", "bias", "training", "momentum", "eps")
_PAD_ARGS = ("input", "pad", "mode", "value")


def _bind(names: Sequence[str], op: _Op) -> dict[str, Any]:
    return bind_args(names, op.args, op.kwargs)


def _zero_pad_before(ctx: _Ctx, op: _Op) -> tuple[tuple[int, int, int, int], tuple[int, ...]] | None:
    """(top, left, bottom, right) of a zero ``F.pad`` that produced ``op``'s input inside the layer, and the
    unpadded shape; None when the input was not padded there."""
    src = op.ins[0] if op.ins else None
    if src is None:
        return None
    pad_op = ctx.tape.ops[src]
    if pad_op.func not in _PAD:
        return None
    a = _bind(_PAD_ARGS, pad_op)
    if a.get("mode", "constant") != "constant" or float(a.get("value") or 0.0) != 0.0:
        return None
    p = [int(v) for v in a["pad"]] + [0, 0, 0, 0]
    return (p[2], p[0], p[3], p[1]), tuple(a["input"].shape)


def _window(start: int, k: int, d: int) -> list[int]:
    return [start + u * d for u in range(k)]


def _conv(ctx: _Ctx, op: _Op, pos: tuple[int, ...]) -> _Step:
    """``y[c,i,j] = b[c] + Σ_k Σ_{u,v} x[k, i·s-p+u·d, j·s-p+v·d] · w[c,k,u,v]`` over the group of ``c``."""
    a = _bind(_CONV_ARGS, op)
    x, w, b = a["input"], a["weight"], a.get("bias")
    _, c, i, j = pos
    k = (int(w.shape[-2]), int(w.shape[-1]))
    s, d = int_pair(a.get("stride"), 1), int_pair(a.get("dilation"), 1)
    pad = a.get("padding", 0)
    if isinstance(pad, str):  # 'same': PyTorch pads total d(k-1), the smaller half first; 'valid': none
        pad = (d[0] * (k[0] - 1) // 2, d[1] * (k[1] - 1) // 2) if pad == "same" else (0, 0)
    p = int_pair(pad, 0)
    groups = int(a.get("groups", 1) or 1)
    cin_g = int(w.shape[1])
    g = c // (int(w.shape[0]) // groups)
    chans = list(range(g * cin_g, (g + 1) * cin_g))
    rows, cols = _window(i * s[0] - p[0], k[0], d[0]), _window(j * s[1] - p[1], k[1], d[1])
    xp = x[0, chans].double()
    hh, ww = xp.shape[-2:]
    r_ok = torch.tensor([0 <= r < hh for r in rows])
    c_ok = torch.tensor([0 <= q < ww for q in cols])
    patch = torch.zeros(len(chans), k[0], k[1], dtype=torch.float64)
    rr = [min(max(r, 0), hh - 1) for r in rows]
    cc = [min(max(q, 0), ww - 1) for q in cols]
    vals = xp[:, rr][:, :, cc]
    mask = (r_ok[:, None] & c_ok[None, :]).to(xp.device)
    patch = torch.where(mask, vals, torch.zeros((), dtype=torch.float64, device=xp.device))
    # positions in the layer's own input: undo a zero F.pad the layer applied first (timm's Conv2dSame)
    padded = _zero_pad_before(ctx, op)
    in_pad = ~mask.cpu()
    shape_in = tuple(x.shape)
    if padded is not None:
        (top, left, _, _), shape_in = padded
        rows, cols = [r - top for r in rows], [q - left for q in cols]
        r_in = torch.tensor([0 <= r < shape_in[-2] for r in rows])
        c_in = torch.tensor([0 <= q < shape_in[-1] for q in cols])
        in_pad = ~(r_in[:, None] & c_in[None, :])
    kern = w[c].double()
    sums = (patch * kern).sum(dim=(1, 2))
    bias = float(b[c]) if b is not None else None
    src = ctx.source(ctx.tape.ops[op.ins[0]], 0) if padded is not None and op.ins[0] is not None else ctx.source(op, 0)
    terms = [Term(ch, float(v), src) for ch, v in zip(chans, sums.tolist(), strict=True)]
    total = float(sums.sum()) + (bias or 0.0)
    kind = "depthwise conv" if cin_g == 1 and groups > 1 else ("grouped conv" if groups > 1 else "conv")
    pad_text = f"padding {p[0]}x{p[1]}"
    if padded is not None:  # timm's Conv2dSame / TF 'SAME': the layer pads itself, unevenly, then convolves
        pt, pl, pb, pr = padded[0]
        pad_text = f"zero padding top {pt + p[0]}, left {pl + p[1]}, bottom {pb + p[0]}, right {pr + p[1]} (the layer's own F.pad)"
    formula = (
        f"y[{c},{i},{j}] = Σ over {len(chans)} input channel(s) of Σ patch × kernel ({k[0]}x{k[1]}, "
        f"stride {s[0]}x{s[1]}, {pad_text}, dilation {d[0]}x{d[1]}, groups {groups})"
        + (" + bias" if bias is not None else "")
    )
    return _Step(
        "conv2d",
        kind,
        total,
        terms,
        bias,
        formula,
        {"stride_h": s[0], "stride_w": s[1], "dilation_h": d[0], "dilation_w": d[1], "groups": groups},
        patch.cpu().numpy().astype(np.float32),
        kern.cpu().numpy().astype(np.float32),
        in_pad.numpy(),
        rows,
        cols,
        chans,
        shape_in,
    )


def _linear(ctx: _Ctx, op: _Op, pos: tuple[int, ...]) -> _Step:
    """``y[c] = b[c] + Σ_f x[f] · W[c, f]``; terms sorted by |contribution| (ties: feature order)."""
    x, w = op.args[0], op.args[1] if len(op.args) > 1 else op.kwargs["weight"]
    b = op.args[2] if len(op.args) > 2 else op.kwargs.get("bias")
    c = pos[-1]
    xv = x[pos[:-1]].double()
    contrib = xv * w[c].double()
    order = sorted(range(contrib.numel()), key=lambda f: (-abs(float(contrib[f])), f))
    cl = contrib.tolist()
    src = ctx.source(op, 0)
    terms = [Term(f, cl[f], src) for f in order]
    bias = float(b[c]) if b is not None else None
    total = float(contrib.sum()) + (bias or 0.0)
    return _Step(
        "linear",
        "linear",
        total,
        terms,
        bias,
        f"y[{c}] = Σ over {xv.numel()} features of x[f] · W[{c}, f]" + (" + b" if bias is not None else ""),
        input_shape=tuple(x.shape),
    )


def _batch_norm(ctx: _Ctx, op: _Op, pos: tuple[int, ...]) -> _Step:
    """``y = (x - μ) / sqrt(σ² + ε) · γ + β`` (running statistics in eval; batch statistics otherwise)."""
    a = _bind(_BN_ARGS, op)
    x = a["input"]
    c = pos[1]
    xv = float(x[pos].double())
    if a.get("training") or a.get("running_mean") is None:
        dims = [d for d in range(x.ndim) if d != 1]
        mean = float(x.double().mean(dims)[c])
        var = float(x.double().var(dims, unbiased=False)[c])
        stats = "batch"
    else:
        mean, var, stats = float(a["running_mean"][c]), float(a["running_var"][c]), "running"
    eps = float(a.get("eps", 1e-5))
    gamma = float(a["weight"][c]) if a.get("weight") is not None else 1.0
    beta = float(a["bias"][c]) if a.get("bias") is not None else 0.0
    xhat = (xv - mean) / math.sqrt(var + eps)
    return _Step(
        "batch_norm",
        "batchnorm",
        xhat * gamma + beta,
        [Term(c, xhat * gamma, ctx.source(op, 0))],
        beta,
        f"(x - mean) / sqrt(var + eps) * gamma + beta  ({stats} statistics)",
        {"x": xv, "mean": mean, "var": var, "eps": eps, "gamma": gamma, "beta": beta, "x_hat": xhat},
        input_shape=tuple(x.shape),
        follow=(0, pos),
    )


_ACT_FORMULA = {
    "relu": "max(0, x)",
    "relu_": "max(0, x)",
    "relu6": "min(max(0, x), 6)",
    "hardtanh": "min(max(x, min_val), max_val)",
    "hardtanh_": "min(max(x, min_val), max_val)",
    "silu": "x · sigmoid(x)",
    "hardswish": "x · relu6(x + 3) / 6",
    "hardsigmoid": "relu6(x + 3) / 6",
    "sigmoid": "1 / (1 + exp(-x))",
    "sigmoid_": "1 / (1 + exp(-x))",
    "tanh": "tanh(x)",
    "gelu": "x · Φ(x)",
    "leaky_relu": "x if x > 0 else slope · x",
    "leaky_relu_": "x if x > 0 else slope · x",
    "elu": "x if x > 0 else α(exp(x) - 1)",
    "mish": "x · tanh(softplus(x))",
    "softplus": "log(1 + exp(x))",
}


def _activation(ctx: _Ctx, op: _Op, pos: tuple[int, ...]) -> _Step:
    """The function itself applied to the one input number (in float64), e.g. ReLU6 = min(max(0, x), 6)."""
    x = op.args[0] if op.args else op.kwargs["input"]
    xv = x[pos].double().reshape(1)
    extra = {k: v for k, v in op.kwargs.items() if k not in ("input", "inplace")}
    rest = tuple(v for v in op.args[1:] if not isinstance(v, bool))  # hardtanh's bounds, leaky_relu's slope
    y = op.func(xv.clone(), *rest, **extra)
    numbers = {"x": float(xv)}
    if op.func in _HARDTANH:
        is6 = op.name.startswith("relu6")
        lo = 0.0 if is6 else rest[0] if rest else extra.get("min_val", -1.0)
        hi = 6.0 if is6 else rest[1] if len(rest) > 1 else extra.get("max_val", 1.0)
        numbers.update(min_val=float(lo), max_val=float(hi))
    name = op.name.rstrip("_")
    if op.func in _HARDTANH and numbers.get("min_val") == 0.0 and numbers.get("max_val") == 6.0:
        name = "relu6"  # nn.ReLU6 runs as hardtanh(x, 0, 6)
    return _Step(
        name if name == "relu6" else op.name,
        "activation",
        float(y.reshape(-1)[0]),
        [Term(pos[1] if len(pos) > 1 else pos[0], float(xv), ctx.source(op, 0))],
        None,
        f"{name}(x) = {_ACT_FORMULA.get(name, _ACT_FORMULA.get(op.name, name + '(x)'))}",
        numbers,
        input_shape=tuple(x.shape),
        follow=(0, pos),
    )


def _pool_window(x: torch.Tensor, c: int, rows: list[int], cols: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    hh, ww = x.shape[-2:]
    r_ok = torch.tensor([0 <= r < hh for r in rows])
    c_ok = torch.tensor([0 <= q < ww for q in cols])
    rr = [min(max(r, 0), hh - 1) for r in rows]
    cc = [min(max(q, 0), ww - 1) for q in cols]
    vals = x[0, c].double()[rr][:, cc].cpu()
    return vals, ~(r_ok[:, None] & c_ok[None, :])


def _max_pool(ctx: _Ctx, op: _Op, pos: tuple[int, ...]) -> _Step:
    """``y = max`` over the window ``x[c, i·s-p+u·d, j·s-p+v·d]`` (padding never wins: it is -inf)."""
    a = _bind(_POOL_ARGS, op)
    x = a["input"]
    _, c, i, j = pos
    k = int_pair(a["kernel_size"], 1)
    s = k if not a.get("stride") else int_pair(a["stride"], 1)
    p, d = int_pair(a.get("padding", 0), 0), int_pair(a.get("dilation", 1), 1)
    rows, cols = _window(i * s[0] - p[0], k[0], d[0]), _window(j * s[1] - p[1], k[1], d[1])
    vals, pad = _pool_window(x, c, rows, cols)
    masked = vals.masked_fill(pad, float("-inf"))
    flat = int(torch.argmax(masked))
    total = float(masked.reshape(-1)[flat])
    return _Step(
        "max_pool2d",
        "max pool",
        total,
        [Term(c, total, ctx.source(op, 0))],
        None,
        f"max over the {k[0]}x{k[1]} window (stride {s[0]}, padding {p[0]}); chosen at row {rows[flat // k[1]]}, col {cols[flat % k[1]]}",
        {"chosen_row": rows[flat // k[1]], "chosen_col": cols[flat % k[1]]},
        vals.numpy()[None].astype(np.float32),
        None,
        pad.numpy()[None],
        rows,
        cols,
        [c],
        tuple(x.shape),
    )


def _avg_pool(ctx: _Ctx, op: _Op, pos: tuple[int, ...]) -> _Step:
    """``y = Σ window / divisor`` (divisor: window inside the padded map with ``count_include_pad``, else
    the positions inside the map; ``divisor_override`` when given), as PyTorch computes it."""
    a = _bind(_AVG_ARGS, op)
    x = a["input"]
    _, c, i, j = pos
    k = int_pair(a["kernel_size"], 1)
    s = k if not a.get("stride") else int_pair(a["stride"], 1)
    p = int_pair(a.get("padding", 0), 0)
    rows, cols = _window(i * s[0] - p[0], k[0], 1), _window(j * s[1] - p[1], k[1], 1)
    vals, pad = _pool_window(x, c, rows, cols)
    hh, ww = x.shape[-2:]
    in_padded_r = sum(1 for r in rows if r < hh + p[0])
    in_padded_c = sum(1 for q in cols if q < ww + p[1])
    if a.get("divisor_override"):
        div = int(a["divisor_override"])
    elif a.get("count_include_pad", True):
        div = in_padded_r * in_padded_c
    else:
        div = int((~pad).sum())
    ssum = float(vals.masked_fill(pad, 0.0).sum())
    return _Step(
        "avg_pool2d",
        "avg pool",
        ssum / div,
        [Term(c, ssum / div, ctx.source(op, 0))],
        None,
        f"sum of the {k[0]}x{k[1]} window / {div}",
        {"sum": ssum, "divisor": div},
        vals.numpy()[None].astype(np.float32),
        None,
        pad.numpy()[None],
        rows,
        cols,
        [c],
        tuple(x.shape),
    )


def _adaptive(ctx: _Ctx, op: _Op, pos: tuple[int, ...]) -> _Step:
    """Window rows ``[floor(i·H/oh), ceil((i+1)·H/oh))`` (same for columns); mean or max over it."""
    x = op.args[0] if op.args else op.kwargs["input"]
    out_shape = op.out.shape
    _, c, i, j = pos
    hh, ww = x.shape[-2:]
    oh, ow = out_shape[-2:]
    r0, r1 = (i * hh) // oh, -(-((i + 1) * hh) // oh)
    c0, c1 = (j * ww) // ow, -(-((j + 1) * ww) // ow)
    rows, cols = list(range(r0, r1)), list(range(c0, c1))
    vals = x[0, c, r0:r1, c0:c1].double().cpu()
    is_max = "max" in op.name
    total = float(vals.max()) if is_max else float(vals.mean())
    return _Step(
        op.name,
        "max pool" if is_max else "avg pool",
        total,
        [Term(c, total, ctx.source(op, 0))],
        None,
        f"{'max' if is_max else 'mean'} over rows {r0}..{r1 - 1}, cols {c0}..{c1 - 1} ({vals.numel()} values)",
        {"count": vals.numel()},
        vals.numpy()[None].astype(np.float32),
        None,
        np.zeros((1, *vals.shape), bool),
        rows,
        cols,
        [c],
        tuple(x.shape),
    )


def _mean(ctx: _Ctx, op: _Op, pos: tuple[int, ...]) -> _Step:
    """A mean over dims (global average pooling written as ``x.mean((2, 3))``)."""
    x = op.args[0] if op.args else op.kwargs["input"]
    dims = op.args[1] if len(op.args) > 1 else op.kwargs.get("dim")
    if dims is None:
        raise _Unsupported("a mean over all dimensions")
    dims = [int(d) % x.ndim for d in (dims if isinstance(dims, (tuple, list)) else (dims,))]
    keep = bool(op.args[2] if len(op.args) > 2 else op.kwargs.get("keepdim", False))
    idx: list[Any] = []
    it = iter(pos)
    for d in range(x.ndim):
        if d in dims:
            idx.append(slice(None))
            if keep:
                next(it)
        else:
            idx.append(next(it))
    vals = x[tuple(idx)].double()
    total = float(vals.mean())
    c = pos[1] if len(pos) > 1 else pos[0]
    return _Step(
        "mean",
        "avg pool",
        total,
        [Term(c, total, ctx.source(op, 0))],
        None,
        f"mean over dims {dims} ({vals.numel()} values)",
        {"count": vals.numel()},
        input_shape=tuple(x.shape),
    )


def _broadcast_value(t: Any, out_shape: torch.Size, pos: tuple[int, ...]) -> float:
    if not isinstance(t, torch.Tensor):
        return float(t)
    tt = t.reshape((1,) * (len(out_shape) - t.ndim) + tuple(t.shape))
    idx = tuple(0 if tt.shape[d] == 1 else p for d, p in enumerate(pos))
    return float(tt[idx].double())


def _merge(ctx: _Ctx, op: _Op, pos: tuple[int, ...]) -> _Step:
    """Residual add / subtract / multiply: each branch's value at this position, and their sum (product).

    ``add(a, b, alpha)`` = a + alpha·b, ``sub`` = a - alpha·b, ``rsub`` (``2 - x``) = b - a, ``mul`` = a·b.
    """
    args = [*op.args, *(op.kwargs[k] for k in ("other",) if k in op.kwargs)]
    if len(args) < 2:
        raise _Unsupported(f"'{op.name}' with one operand")
    a, b = args[0], args[1]
    alpha = float(op.kwargs.get("alpha", 1.0))
    slots = iter(range(len(op.ins)))
    src_a = ctx.source(op, next(slots)) if isinstance(a, torch.Tensor) else "constant"
    src_b = ctx.source(op, next(slots)) if isinstance(b, torch.Tensor) else "constant"
    va, vb = _broadcast_value(a, op.out.shape, pos), _broadcast_value(b, op.out.shape, pos)
    name = op.name.strip("_")
    name = name[1:] if name in ("iadd", "isub", "imul") else name
    if name.endswith("mul"):
        terms = [Term(0, va, src_a), Term(1, vb, src_b)]
        return _Step(op.name, "multiply", va * vb, terms, None, "branch 0 × branch 1 (gate)", {"product": va * vb})
    if name == "rsub":
        terms = [Term(0, vb, src_b), Term(1, -alpha * va, src_a)]
    elif name.startswith("sub"):
        terms = [Term(0, va, src_a), Term(1, -alpha * vb, src_b)]
    else:
        terms = [Term(0, va, src_a), Term(1, alpha * vb, src_b)]
    total = terms[0].sum + terms[1].sum
    return _Step(op.name, "add", total, terms, None, "branch 0 + branch 1 (residual add / merge)")


def _cat(ctx: _Ctx, op: _Op, pos: tuple[int, ...]) -> _Step:
    """Concatenation: which input the position belongs to, and its value there."""
    seq = op.args[0] if op.args else op.kwargs["tensors"]
    dim = int(op.args[1] if len(op.args) > 1 else op.kwargs.get("dim", 0)) % op.out.ndim
    offset = 0
    for k, t in enumerate(seq):
        n = int(t.shape[dim])
        if pos[dim] < offset + n:
            inner = list(pos)
            inner[dim] -= offset
            v = float(t[tuple(inner)].double())
            return _Step(
                "cat",
                "concat",
                v,
                [Term(k, v, ctx.source(op, k))],
                None,
                f"input {k} of the concatenation (channels {offset}..{offset + n - 1}), its element {inner[dim]}",
                {"branch": k, "offset": offset},
            )
        offset += n
    raise _Unsupported("a position outside the concatenation")


def _passthrough(ctx: _Ctx, op: _Op, pos: tuple[int, ...]) -> _Step:
    """Ops that move values without changing them (flatten, view, dropout in eval): same flat element."""
    x = op.args[0] if op.args else op.kwargs["input"]
    if "dropout" in op.name and (op.args[2] if len(op.args) > 2 else op.kwargs.get("training", False)):
        raise _Unsupported("dropout in training mode")
    flat = int(np.ravel_multi_index(pos, tuple(op.out.shape)))
    if x.numel() != op.out.numel():
        raise _Unsupported(f"'{op.name}' changing the number of elements")
    xpos = tuple(int(v) for v in np.unravel_index(flat, tuple(x.shape)))
    v = float(x[xpos].double())
    return _Step(
        op.name, "passthrough", v, [Term(0, v, ctx.source(op, 0))], None, f"{op.name}: same value", follow=(0, xpos)
    )


def _permute(ctx: _Ctx, op: _Op, pos: tuple[int, ...]) -> _Step:
    """``x.permute(perm)`` (NHWC <-> NCHW in ConvNeXt blocks): output axis d is input axis perm[d]."""
    x = op.args[0] if op.args else op.kwargs["input"]
    perm = list(op.args[1:]) or list(op.kwargs.get("dims", ()))
    if len(perm) == 1 and isinstance(perm[0], (tuple, list)):
        perm = list(perm[0])
    if op.name in ("transpose", "swapaxes", "swapdims"):
        a0, a1 = (int(v) % x.ndim for v in perm[:2])
        perm = list(range(x.ndim))
        perm[a0], perm[a1] = perm[a1], perm[a0]
    perm = [int(v) % x.ndim for v in perm]
    xpos = [0] * x.ndim
    for d, p in enumerate(perm):
        xpos[p] = pos[d]
    v = float(x[tuple(xpos)].double())
    return _Step(
        op.name,
        "passthrough",
        v,
        [Term(0, v, ctx.source(op, 0))],
        None,
        f"{op.name}: same value",
        follow=(0, tuple(xpos)),
    )


def _norm_step(
    ctx: _Ctx, op: _Op, pos: tuple[int, ...], vals: torch.Tensor, ch: int, w: Any, b: Any, eps: float, what: str
) -> _Step:
    """``(x - mean) / sqrt(var + eps) · γ + β`` with the statistics over ``vals`` (biased variance)."""
    xv = float(op.args[0][pos].double())
    mean, var = float(vals.mean()), float(vals.var(unbiased=False))
    gamma = float(w.reshape(-1)[ch]) if w is not None else 1.0
    beta = float(b.reshape(-1)[ch]) if b is not None else 0.0
    xhat = (xv - mean) / math.sqrt(var + eps)
    return _Step(
        op.name,
        "norm",
        xhat * gamma + beta,
        [Term(ch, xhat * gamma, ctx.source(op, 0))],
        beta,
        f"(x - mean) / sqrt(var + eps) * gamma + beta, mean and var over {what} ({vals.numel()} values)",
        {"x": xv, "mean": mean, "var": var, "eps": eps, "gamma": gamma, "beta": beta, "x_hat": xhat},
        input_shape=tuple(op.args[0].shape),
        follow=(0, pos),
    )


def _layer_norm(ctx: _Ctx, op: _Op, pos: tuple[int, ...]) -> _Step:
    """LayerNorm over the last dims (ConvNeXt's channels-last norm): this position's statistics."""
    a = dict(zip(("input", "normalized_shape", "weight", "bias", "eps"), op.args))
    a.update(op.kwargs)
    x, n = a["input"], len(tuple(a["normalized_shape"]))
    vals = x[pos[: x.ndim - n]].double()
    ch = int(np.ravel_multi_index(pos[x.ndim - n :], tuple(x.shape[x.ndim - n :])))
    eps = float(a.get("eps", 1e-5))
    return _norm_step(ctx, op, pos, vals, ch, a.get("weight"), a.get("bias"), eps, "the normalized dims")


def _group_norm(ctx: _Ctx, op: _Op, pos: tuple[int, ...]) -> _Step:
    """GroupNorm: statistics over this channel's group of channels and all positions."""
    a = dict(zip(("input", "num_groups", "weight", "bias", "eps"), op.args))
    a.update(op.kwargs)
    x, g = a["input"], int(a["num_groups"])
    per = x.shape[1] // g
    c = pos[1]
    grp = c // per
    vals = x[pos[0], grp * per : (grp + 1) * per].double()
    eps = float(a.get("eps", 1e-5))
    return _norm_step(ctx, op, pos, vals, c, a.get("weight"), a.get("bias"), eps, f"group {grp}")


class _Unsupported(Exception):
    pass


_PAD = torch_functions("pad", "constant_pad_nd")
_HARDTANH = torch_functions("hardtanh", "hardtanh_", "relu6")
_HANDLERS: dict[Any, Callable[[_Ctx, _Op, tuple[int, ...]], _Step]] = {}
for _fns, _h in (
    (torch_functions("conv2d"), _conv),
    (torch_functions("linear"), _linear),
    (torch_functions("batch_norm"), _batch_norm),
    (torch_functions(*_ACT_FORMULA), _activation),
    (torch_functions("max_pool2d", "max_pool2d_with_indices"), _max_pool),
    (torch_functions("avg_pool2d"), _avg_pool),
    (torch_functions("adaptive_avg_pool2d", "adaptive_max_pool2d", "adaptive_max_pool2d_with_indices"), _adaptive),
    (torch_functions("mean"), _mean),
    (torch_functions("add", "add_", "__add__", "__radd__", "__iadd__", "sub", "sub_", "__sub__", "__rsub__",
                     "__isub__", "mul", "mul_", "__mul__", "__rmul__", "__imul__"), _merge),
    (torch_functions("cat", "concat", "concatenate"), _cat),
    (torch_functions("permute", "transpose", "swapaxes", "swapdims"), _permute),
    (torch_functions("layer_norm"), _layer_norm),
    (torch_functions("group_norm"), _group_norm),
    (torch_functions("flatten", "view", "reshape", "contiguous", "clone", "dropout", "dropout2d", "squeeze",
                     "unsqueeze", "detach", "alias", "to", "float"), _passthrough),
):  # fmt: skip
    for _f in _fns:
        _HANDLERS[_f] = _h
_SINGLE = ("batchnorm", "norm", "activation", "passthrough")  # ops of one input number: their input is traced too


def _resolve_step(ctx: _Ctx, op_index: int, pos: tuple[int, ...]) -> tuple[_Step, int, tuple[int, ...]]:
    """The step computing ``pos`` of op ``op_index``, following passthrough ops (flatten, dropout) back."""
    while True:
        op = ctx.tape.ops[op_index]
        h = _HANDLERS.get(op.func)
        if h is None:
            raise _Unsupported(f"the op '{op.name}'")
        step = h(ctx, op, pos)
        src = op.ins[step.follow[0]] if step.follow is not None and op.ins else None
        if step.kind != "passthrough" or src is None or step.follow is None:
            return step, op_index, pos
        op_index, pos = src, step.follow[1]


def _trace_chain(ctx: _Ctx, op_index: int, pos: tuple[int, ...]) -> list[tuple[_Step, int, tuple[int, ...]]]:
    """The top step, then the steps inside the layer that computed its input while that input is one
    number (activation <- batch norm <- conv): at most 8 steps."""
    chain = [_resolve_step(ctx, op_index, pos)]
    while len(chain) < 8:
        step, idx, _ = chain[-1]
        op = ctx.tape.ops[idx]
        if step.kind not in _SINGLE or step.follow is None or not op.ins or op.ins[step.follow[0]] is None:
            break
        try:
            nxt = _resolve_step(ctx, op.ins[step.follow[0]], step.follow[1])
        except (_Unsupported, IndexError, KeyError, TypeError, ValueError):
            break
        if nxt[0].kind == "passthrough":
            break
        chain.append(nxt)
    return chain


# --------------------------------------------------------------------------------------------- entry point
def parse_layer_call(layer: str) -> tuple[str, int | None]:
    """Split ``'name#k'`` (call ``k`` of a module used several times) into ``('name', k)``; plain names give None.

    Example:
        >>> parse_layer_call("layer1.0.relu#1"), parse_layer_call("conv1")
        (('layer1.0.relu', 1), ('conv1', None))
    """
    m = _CALL.match(layer)
    return (m.group(1), int(m.group(2))) if m else (layer, None)


def _position(out: torch.Tensor, at: Sequence[int], channels_last: bool) -> tuple[int, ...]:
    """(c, i, j) -> an index into ``out`` (batch 0): (0, c, i, j) for NCHW, (0, i, j, c) channels-last, (0, c) flat."""
    at = tuple(int(v) for v in at)
    if out.ndim == 4:
        if len(at) != 3:
            raise InputError(f"a (N, C, H, W) output needs a position (c, i, j), got {at}.")
        c, i, j = at
        idx = (0, i, j, c) if channels_last else (0, c, i, j)
    elif out.ndim == 2:
        if len(at) == 3 and at[1:] == (0, 0):
            at = at[:1]
        if len(at) != 1:
            raise InputError(f"a flat (N, F) output needs a position (c,) or (c, 0, 0), got {at}.")
        idx = (0, at[0])
    else:
        raise InputError(f"trace_unit reads (N, C, H, W) and (N, F) outputs; this layer outputs {tuple(out.shape)}.")
    if any(not 0 <= v < n for v, n in zip(idx, out.shape, strict=True)):
        dims = (out.shape[3], out.shape[1], out.shape[2]) if channels_last else tuple(out.shape[1:])
        raise InputError(
            f"position {at} is outside the layer's output of (C, H, W) = {tuple(int(v) for v in dims)}; "
            "positions count from 0."
        )
    return idx


def trace_unit(
    model: nn.Module,
    x: torch.Tensor,
    layer: str | nn.Module,
    at: Sequence[int],
    *,
    call: int | None = None,
    field: bool = False,
    device: str | torch.device | None = None,
) -> UnitTrace:
    """The exact computation of channel ``c`` at row ``i``, column ``j`` of ``layer``'s output on image ``x``.

    Args:
        model: any ``nn.Module`` (torchvision, timm, the user's), or a ModelBundle (then the trace
            records whether its weights are pretrained).
        x: the preprocessed image, (1, C, H, W) (only the first image of a batch is traced).
        layer: a module name (``'name#k'`` for call ``k`` of a module used several times) or module.
        at: ``(c, i, j)`` for (N, C, H, W) outputs; ``(c,)`` (or ``(c, 0, 0)``) for (N, F) outputs.
        call: which call of a module used several times (default: the last, as ``get_activations``);
            an explicit call stops the forward pass right after it.
        field: also compute the theoretical receptive-field box (``rf``,
            :func:`~convlens.inspect.erf.unit_receptive_field`) and the effective field (``erf``,
            :func:`~convlens.inspect.erf.effective_receptive_field`) of that unit.
        device: where to compute (default: the model's device).

    Raises:
        LayerError: the layer did not run, or its last operation is one trace_unit cannot expand.
        InputError: a bad image tensor or a position outside the layer's output.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 2))
        >>> t = trace_unit(net, torch.ones(1, 4), "0", (1,))
        >>> len(t.terms), round(t.total - t.value, 6)
        (4, 0.0)
    """
    pretrained = None
    if not isinstance(model, nn.Module) and hasattr(model, "model") and hasattr(model, "meta"):  # a ModelBundle
        pretrained, model = bool(model.pretrained), model.model
    if not isinstance(x, torch.Tensor) or x.ndim < 2:
        raise InputError(f"x must be an (N, C, H, W) tensor, got {getattr(x, 'shape', type(x).__name__)}.")
    if not torch.isfinite(x).all():
        raise InputError("x contains NaN or infinite values; check the image and preprocessing.")
    dev = device_of(model, device)
    x = x[:1].to(dev)
    if isinstance(layer, str):
        base, k = parse_layer_call(layer)
        call = k if k is not None else call
    else:
        base = layer
    refs = resolve(model, base, input_shape=tuple(x.shape[1:]))
    if len(refs) != 1:
        raise LayerError(f"trace_unit needs one layer; '{base}' names {len(refs)}.")
    name, module = refs[0].name, refs[0].module
    if call is not None and call < 0:
        raise InputError(f"call must be >= 0 (or None for the last call), got {call}.")
    memo = _CALL_COUNTS.setdefault(model, {})
    key = (name, tuple(x.shape[1:]))
    stop_at = call if call is not None else (memo[key] - 1 if key in memo else None)
    prefix = name + "."
    children = [n for n, _ in model.named_modules() if n.startswith(prefix)]
    tape = _Tape()
    state: dict[str, Any] = {"count": 0, "active": False, "result": None}
    child_out: dict[int, str] = {}

    def on_pre(n: str, inputs: tuple[Any, ...]) -> None:
        if n != name:
            return
        tape.reset(inputs)
        child_out.clear()
        tape.__enter__()
        state["active"] = True

    def on_call(n: str, inputs: tuple[Any, ...], output: Any) -> None:
        if n != name:
            t = first_tensor(output)
            # name an op's output by the innermost module that computed it (not an Identity passing it on)
            passes_on = t is not None and any(t is i for i in tensors_in(inputs))
            if state["active"] and t is not None and id(t) in tape.producer and not passes_on:
                child_out.setdefault(tape.producer[id(t)], n)
            return
        if state["active"]:
            tape.__exit__(None, None, None)
            state["active"] = False
        out = first_tensor(output)
        k = state["count"]
        state["count"] += 1
        if out is not None:
            src = tape.producer.get(id(out))
            state["result"] = (k, out.detach().clone(), src, list(tape.ops), dict(child_out), tuple(tensors_in(inputs)))
        tape.keep = []
        if stop_at is not None and k == stop_at:
            raise StopForward

    try:
        with (
            preserve_state(model, train=False),
            torch.no_grad(),
            capture(model, [name, *children], on_call=on_call, on_pre_call=on_pre) as cap,
        ):
            cap.run(x)  # a StopForward raised after the requested call ends the pass early
    except MODEL_FAILURES as e:
        raise InputError(f"the model failed on this {'x'.join(map(str, x.shape))} input ({first_line(e)}).") from e
    finally:
        if state["active"]:
            tape.__exit__(None, None, None)
    res = state["result"]
    if res is None:
        raise LayerError(f"layer '{name}' did not run (or returned no tensor) in the forward pass.")
    k, out, src, ops, names, _ = res
    if stop_at is None:  # a whole forward ran: remember how often the layer runs at this input size
        memo[key] = state["count"]
    if call is not None and k != call:
        raise LayerError(f"layer '{name}' was called {state['count']} time(s); call index {call} does not exist.")
    # channels-last maps: a linear/layer-norm over the last axis, or a layer that declares it (Keras adapter)
    declared_nhwc = getattr(module, "convlens_layout", None) == "NHWC"
    channels_last = out.ndim == 4 and (declared_nhwc or (src is not None and ops[src].name in ("linear", "layer_norm")))
    pos = _position(out, at, channels_last)
    mtype = type(module).__name__
    if src is None:
        raise LayerError(
            f"layer '{name}' ({mtype}) returns its input unchanged on this image; trace the layer before it."
        )
    tape.ops = ops
    ctx = _Ctx(tape, names)
    try:
        chain = _trace_chain(ctx, src, pos)
    except _Unsupported as e:
        raise LayerError(
            f"trace_unit cannot expand {e} that ends layer '{name}' ({mtype}); it expands convolutions, linear layers, "
            "batch norm, activations, pooling, adds and concatenations: pick one of those layers."
        ) from None
    except (IndexError, KeyError, TypeError, ValueError) as e:  # arguments in a form no handler expected
        raise LayerError(
            f"trace_unit could not read the arguments of the op '{ops[src].name}' that ends layer '{name}' "
            f"({mtype}): {type(e).__name__}: {e}"
        ) from e
    inner = None
    for st, idx, p in reversed(chain[1:]):
        op_out = ops[idx].out
        inner = _as_trace(st, name, k, at, mtype, float(op_out[p]), tuple(op_out.shape), inner)
    result = _as_trace(chain[0][0], name, k, at, mtype, float(out[pos]), tuple(out.shape), inner)
    if field:  # (a flat layer's field is the hull of everything before it: one box for every feature)
        from convlens.inspect.erf import effective_receptive_field, unit_receptive_field

        ij = (at[1], at[2]) if out.ndim == 4 else (0, 0)
        result.rf = unit_receptive_field(model, name, ij, tuple(x.shape[1:]), call=k)
        result.erf = effective_receptive_field(model, x, name, tuple(at), call=k, rf=result.rf)
    result.pretrained = pretrained
    return result


def _as_trace(
    st: _Step,
    layer: str,
    call: int,
    at: Sequence[int],
    mtype: str,
    value: float,
    out_shape: tuple[int, ...],
    inner: UnitTrace | None,
) -> UnitTrace:
    return UnitTrace(
        layer=layer,
        call=call,
        at=tuple(int(v) for v in at),
        module_type=mtype,
        op=st.op,
        kind=st.kind,
        value=value,
        total=st.total,
        abs_error=abs(value - st.total),
        terms=st.terms,
        bias=st.bias,
        formula=st.formula,
        numbers={k: v for k, v in st.numbers.items() if not k.startswith("__")},
        patch=st.patch,
        kernel=st.kernel,
        in_padding=st.in_padding,
        rows=st.rows,
        cols=st.cols,
        in_channels=st.in_channels,
        input_shape=st.input_shape,
        output_shape=out_shape,
        inner=inner,
    )
