"""Graph tracing: the one place convlens turns a running model into a dataflow graph.

:func:`trace` runs one forward pass of a probe input and records **every tensor operation** (module
or functional: ``F.relu``, ``torch.cat``, ``+``, ``flatten``, timm's dynamic ``F.pad`` of ``Conv2dSame``)
through a :class:`torch.overrides.TorchFunctionMode`, and every module call through
:func:`convlens.hooks.capture`. Each tensor remembers the op that produced it, so the graph is the
real one: residual adds, inception and DenseNet concatenations, modules called twice and data-dependent
Python control flow are all seen as they ran (``torch.fx`` symbolic tracing cannot follow shape-dependent
code such as timm's "same" padding; the recording sees concrete values, so it is the tracer for every
model).

Per node it keeps the output shape, the conv/pool window (kernel, stride, padding, dilation,
ceil_mode), the MACs and the **receptive-field geometry** of its output, propagated along all paths.

Receptive-field convention (per spatial axis, input pixels are integer positions, unit ``i`` of a
tensor sees the interval ``[lo + i*jump, hi + i*jump]``)::

    input:            lo = hi = 0, jump = 1
    conv/pool (k, s, p, d):  k_eff = d*(k-1) + 1
                      lo' = lo - p*jump,  hi' = hi + (k_eff - 1 - p)*jump,  jump' = s*jump
    F.pad (left pad a):      lo' = lo - a*jump, hi' = hi - a*jump
    merge (add, mul, cat on channels, any elementwise op):  lo = min lo_i, hi = max hi_i   (max over paths)
    reduction to no spatial extent (global pool, flatten, linear): the hull of all units,
                      [lo, hi + (n-1)*jump], the same for every output unit (jump = None: "global")

    receptive field r = hi - lo + 1,   start (centre of unit 0's field) = (lo + hi) / 2

ceil_mode only adds output units at the far border; the geometry of every unit is unchanged.

MAC convention: multiply-accumulates for one image (batch 1) of convolutions
(``H'·W'·C_out·(C_in/groups)·kH·kW``), linear layers (``out_numel·in_features``) and matrix products
(``matmul``/``bmm``/``mm``, ``scaled_dot_product_attention``); bias adds, normalization, activations,
pooling and additions count 0.

Example:
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.MaxPool2d(2), torch.nn.Conv2d(8, 8, 3))
    >>> g = trace(net, (3, 16, 16))
    >>> g.call("2").shape, g.geometry("2").receptive_field, g.geometry("2").jump
    ((1, 8, 6, 6), (8, 8), (2, 2))
"""

from __future__ import annotations

import difflib
import math
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from convlens.errors import InputError, LayerError
from convlens.hooks import capture, device_of, first_tensor, preserve_state

__all__ = ["Axis", "Geometry", "Window", "Node", "ModuleCall", "Graph", "trace", "tensors_in", "einsum_macs"]


# --------------------------------------------------------------------------------------------- geometry
@dataclass(frozen=True)
class Axis:
    """Receptive-field geometry of a tensor along one spatial axis.

    Unit ``i`` sees input pixels ``[lo + i*jump, hi + i*jump]``; ``jump=None`` means every unit sees
    ``[lo, hi]`` (a global field: after global pooling, or a map gated by a global squeeze-excitation).
    ``step`` is the layout: input pixels between neighbouring units of the map (equal to ``jump`` when
    the field translates; kept when the field is global but the map still has a spatial layout;
    None once the spatial axis is gone).
    """

    lo: float
    hi: float
    jump: float | None
    step: float | None = None

    @property
    def rf(self) -> float:
        """Receptive field size in input pixels: ``hi - lo + 1``."""
        return self.hi - self.lo + 1

    @property
    def start(self) -> float:
        """Centre of unit 0's receptive field, in input pixel coordinates."""
        return (self.lo + self.hi) / 2

    def hull(self, n: int) -> tuple[float, float]:
        """The input interval seen by all ``n`` units together."""
        if self.jump is None:
            return self.lo, self.hi
        return self.lo, self.hi + (n - 1) * self.jump


def _num(v: float) -> int | float:
    return int(v) if float(v).is_integer() else round(float(v), 4)


@dataclass(frozen=True)
class Geometry:
    """Receptive-field geometry of a tensor (H and W axes); ``exact=False`` when an op was approximated."""

    h: Axis
    w: Axis
    exact: bool = True
    #: positions of the H and W axes in the tensor ((2, 3) for NCHW, (1, 2) after a permute to NHWC);
    #: None when the tensor has no spatial layout
    dims: tuple[int, int] | None = (2, 3)

    @property
    def is_global(self) -> bool:
        """True when every unit sees the same region of the input."""
        return self.h.jump is None

    @property
    def receptive_field(self) -> tuple[int | float, int | float]:
        """(r_h, r_w) in input pixels."""
        return _num(self.h.rf), _num(self.w.rf)

    @property
    def jump(self) -> tuple[int | float, int | float] | None:
        """Distance in input pixels between neighbouring units (effective stride); None without a spatial layout."""
        if self.h.step is None or self.w.step is None:
            return None
        return _num(self.h.step), _num(self.w.step)

    @property
    def start(self) -> tuple[int | float, int | float]:
        """Centre of unit (0, 0)'s receptive field in input pixels (negative when padding reaches out)."""
        return _num(self.h.start), _num(self.w.start)


_INPUT_AXIS = Axis(0.0, 0.0, 1.0, 1.0)


@dataclass(frozen=True)
class Window:
    """Sliding-window geometry of one conv/pool/pad op: kernel, stride, padding (top, left), dilation."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int] = (1, 1)
    ceil_mode: bool = False


@dataclass
class Node:
    """One recorded tensor operation (or the model input, index 0)."""

    index: int
    op: str  # function name, e.g. 'conv2d', 'add_', 'cat', 'input'
    kind: str  # input | conv | pool | pad | adaptive_pool | resize | linear | matmul | elementwise | global | unknown | constant
    inputs: tuple[int, ...]
    shape: tuple[int, ...]
    geometry: Geometry | None  # None: the output does not depend on the model input
    window: Window | None = None
    macs: int = 0
    module: str | None = None  # innermost module call the op belongs to


@dataclass
class ModuleCall:
    """One call of a named module (a module called twice gives two calls)."""

    name: str
    type: str
    call: int
    depth: int
    leaf: bool
    output: int | None  # node index of the (first tensor) output
    inputs: tuple[int, ...]
    shape: tuple[int, ...] | None
    ops: tuple[int, ...] = ()  # the nodes computed by this call (from its inputs to its output)


@dataclass
class Graph:
    """A traced model: nodes in execution order (node 0 = input) and module calls in completion order."""

    nodes: list[Node]
    calls: list[ModuleCall]
    input_shape: tuple[int, ...]
    backend: str = "record"
    #: with ``trace(..., fx=True)``: the ``torch.fx`` GraphModule when symbolic tracing works, else None
    fx: Any = field(default=None, repr=False)
    #: why symbolic tracing failed (e.g. timm's shape-dependent "same" padding), when it was tried
    fx_error: str | None = None
    _by_name: dict[str, list[ModuleCall]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for c in self.calls:
            self._by_name.setdefault(c.name, []).append(c)

    @property
    def total_macs(self) -> int:
        """Sum of MACs over every op (each op once, whatever module it sits in)."""
        return sum(n.macs for n in self.nodes)

    def call(self, name: str, call: int = -1) -> ModuleCall:
        """The ``call``-th call (default: the last) of module ``name``; LayerError with close matches otherwise."""
        if name not in self._by_name:
            close = difflib.get_close_matches(name, list(self._by_name), n=3, cutoff=0.5)
            hint = (
                ("did you mean " + ", ".join(f"'{c}'" for c in close) + "?")
                if close
                else "see `convlens summary` for names."
            )
            raise LayerError(f"layer '{name}' was not called in the traced forward pass; {hint}")
        calls = self._by_name[name]
        try:
            return calls[call]
        except IndexError:
            raise LayerError(
                f"layer '{name}' was called {len(calls)} time(s); call index {call} does not exist."
            ) from None

    def geometry(self, name: str, call: int = -1) -> Geometry:
        """Receptive-field geometry of a module call's output."""
        c = self.call(name, call)
        g = None if c.output is None else self.nodes[c.output].geometry
        if g is None:
            raise LayerError(f"layer '{name}' has no output that depends on the input image.")
        return g

    def spatial_dims(self, index: int) -> tuple[int, int] | None:
        """Positions of H and W in node ``index``'s tensor, for laying it out as HxWxC.

        The node's own ``geometry.dims`` when known; otherwise (its field went global through a
        flatten/reshape, as in Swin's blocks that reshape (N, H, W, C) to tokens and back) the layout of
        the nearest 4-D ancestor whose layout is known; None when there is none.
        """
        node = self.nodes[index]
        if node.geometry is not None and node.geometry.dims is not None:
            return node.geometry.dims
        if len(node.shape) != 4:
            return None
        seen, todo = {index}, [index]
        while todo:  # breadth-first: the nearest ancestor wins
            nxt = []
            for i in todo:
                for j in self.nodes[i].inputs:
                    if j in seen:
                        continue
                    seen.add(j)
                    nj = self.nodes[j]
                    if len(nj.shape) == 4 and nj.geometry is not None and nj.geometry.dims is not None:
                        return nj.geometry.dims
                    nxt.append(j)
            todo = nxt
        return None

    def window(self, call: ModuleCall) -> Window | None:
        """The effective window of a call made of one conv/pool op (pads inside the call folded into padding)."""
        wins = [self.nodes[i] for i in call.ops if self.nodes[i].kind in ("conv", "pool")]
        if len(wins) != 1 or wins[0].window is None:
            return None
        w = wins[0].window
        pads = [self.nodes[i].window for i in call.ops if self.nodes[i].kind == "pad" and self.nodes[i].window]
        top = w.padding[0] + sum(p.padding[0] for p in pads)
        left = w.padding[1] + sum(p.padding[1] for p in pads)
        return Window(w.kernel, w.stride, (top, left), w.dilation, w.ceil_mode)


# ------------------------------------------------------------------------------------- op tables
def torch_functions(*names: str) -> set[Any]:
    """Every hashable callable named ``names`` in torch, torch.nn.functional, torch._C._nn and Tensor
    methods: what a ``TorchFunctionMode`` sees for those ops.

    Example:
        >>> F.conv2d in torch_functions("conv2d")
        True
    """
    out: set[Any] = set()
    for n in names:
        for ns in (torch, F, torch._C._nn, torch.Tensor):
            f = getattr(ns, n, None)
            if f is not None:
                try:
                    hash(f)
                except TypeError:
                    continue
                out.add(f)
    return out


_CONV = torch_functions("conv2d")
_MAXPOOL = torch_functions("max_pool2d", "max_pool2d_with_indices")
_AVGPOOL = torch_functions("avg_pool2d")
_LPPOOL = torch_functions("lp_pool2d")
_PAD = torch_functions("pad", "constant_pad_nd")
_ADAPTIVE = torch_functions("adaptive_avg_pool2d", "adaptive_max_pool2d", "adaptive_max_pool2d_with_indices")
_RESIZE = torch_functions("interpolate", "upsample", "upsample_nearest", "upsample_bilinear")
_LINEAR = torch_functions("linear")
_MATMUL = torch_functions("matmul", "__matmul__", "__rmatmul__", "bmm", "mm", "baddbmm", "addmm")
_SDPA = torch_functions("scaled_dot_product_attention")
_CONV_T = torch_functions("conv_transpose2d")
# 1-D/3-D convolutions (ECA gates, video/volume layers): counted in MACs; their field is not tracked
_CONV_ND = torch_functions("conv1d", "conv3d")
_EINSUM = torch_functions("einsum")
_CONV_T_ND = torch_functions("conv_transpose1d", "conv_transpose3d")
_ADDMM = torch_functions("baddbmm", "addmm")

_CONV_ARGS = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
_MAXPOOL_ARGS = ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")
_AVGPOOL_ARGS = ("input", "kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override")
_LPPOOL_ARGS = ("input", "norm_type", "kernel_size", "stride", "ceil_mode")
_PAD_ARGS = ("input", "pad", "mode", "value")


def _bind(names: Sequence[str], args: Sequence[Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
    d = dict(zip(names, args))
    d.update(kwargs)
    return d


def _pair(v: Any, default: int) -> tuple[int, int]:
    if v is None or (isinstance(v, (tuple, list)) and len(v) == 0):
        return default, default
    if isinstance(v, (tuple, list)):
        return (int(v[0]), int(v[0])) if len(v) == 1 else (int(v[-2]), int(v[-1]))
    return int(v), int(v)


def tensors_in(obj: Any) -> list[torch.Tensor]:
    """Every tensor inside nested tuples/lists/dicts, in order.

    Example:
        >>> len(tensors_in((torch.ones(1), [torch.ones(2), 3], {"a": torch.ones(3)})))
        3
    """
    out: list[torch.Tensor] = []
    _collect_tensors(obj, out)
    return out


def einsum_macs(equation: Any, operands: Sequence[torch.Tensor]) -> int:
    """Multiply-accumulates of ``torch.einsum(equation, *operands)`` for two or more operands: the
    product of the sizes of every index letter (output and contracted ones); 0 for one operand (a sum
    or a permutation multiplies nothing) or the sublist form.

    Example (a batched matmul b,i,j x b,j,k: 2*3*4*5 MACs):
        >>> einsum_macs("bij,bjk->bik", [torch.zeros(2, 3, 4), torch.zeros(2, 4, 5)])
        120
    """
    if not isinstance(equation, str) or len(operands) < 2:
        return 0
    subs = equation.replace(" ", "").split("->")[0].split(",")
    if len(subs) != len(operands):
        return 0
    n_ell = max((t.ndim - (len(sub) - 3) for sub, t in zip(subs, operands, strict=True) if "..." in sub), default=0)
    sizes: dict[str, int] = {}
    for sub, t in zip(subs, operands, strict=True):
        if "..." in sub:
            pre, post = sub.split("...")
            k = t.ndim - len(pre) - len(post)  # broadcast dims align from the right
            labels = list(pre) + [f"...{n_ell - k + i}" for i in range(k)] + list(post)
        else:
            labels = list(sub)
        if len(labels) != t.ndim:
            return 0
        for lab, n in zip(labels, t.shape, strict=True):
            sizes[lab] = max(sizes.get(lab, 1), int(n))
    return math.prod(sizes.values())


def _collect_tensors(obj: Any, out: list[torch.Tensor]) -> None:
    t = type(obj)
    if t is tuple or t is list:
        for o in obj:
            _collect_tensors(o, out)
    elif isinstance(obj, torch.Tensor):
        out.append(obj)
    elif t is dict or isinstance(obj, Mapping):
        for o in obj.values():
            _collect_tensors(o, out)
    elif t in (int, float, bool, str, type(None)):
        return
    elif isinstance(obj, (tuple, list)):
        for o in obj:
            _collect_tensors(o, out)


def _op_name(func: Any) -> str:
    if func in _MAXPOOL:
        return "max_pool2d"
    name = getattr(func, "__name__", None) or str(func)
    return "op" if name == "fn" else name


# ------------------------------------------------------------------------------- propagation rules
def _window_axis(a: Axis, k: int, s: int, p: int, d: int) -> Axis:
    step = None if a.step is None else a.step * s
    if a.jump is None:
        return Axis(a.lo, a.hi, None, step)
    k_eff = d * (k - 1) + 1
    return Axis(a.lo - p * a.jump, a.hi + (k_eff - 1 - p) * a.jump, a.jump * s, step)


def _hw(shape: tuple[int, ...], dims: tuple[int, int] | None) -> tuple[int, int] | None:
    if dims is None or len(shape) <= max(dims):
        return None
    return int(shape[dims[0]]), int(shape[dims[1]])


def _hull(g: Geometry, shape: tuple[int, ...], ax: int) -> tuple[float, float]:
    a = g.h if ax == 0 else g.w
    hw = _hw(shape, g.dims)
    return a.hull(hw[ax] if hw else 1)


def _to_global(g: Geometry, shape: tuple[int, ...]) -> Geometry:
    """All units of ``g`` merged into one field; no spatial layout left."""
    return Geometry(Axis(*_hull(g, shape, 0), None, None), Axis(*_hull(g, shape, 1), None, None), g.exact, None)


def _merge(
    keep: list[Geometry], others: list[tuple[Geometry, tuple[int, ...]]], out_shape: tuple[int, ...], exact: bool
) -> Geometry:
    """Max over paths. ``keep``: inputs whose layout the output keeps (same H, W at the same dims), merged
    unit by unit; ``others`` (broadcast or reduced operands) contribute their whole hull to every unit."""
    exact = exact and all(g.exact for g in keep) and all(g.exact for g, _ in others)
    dims = keep[0].dims if keep else None
    out_hw = _hw(out_shape, dims)
    axes = []
    for ax in (0, 1):
        ka = [(g.h if ax == 0 else g.w) for g in keep]
        steps = {a.step for a in ka if a.step is not None}
        if len(steps) > 1:
            exact = False
        step = max(steps) if steps else None
        trans = [a for a in ka if a.jump is not None]
        hulls = [(a.lo, a.hi) for a in ka if a.jump is None] + [_hull(g, s, ax) for g, s in others]
        if trans:
            lo, hi = min(a.lo for a in trans), max(a.hi for a in trans)
            jumps = {a.jump for a in trans}
            if len(jumps) > 1:
                exact = False
            jump: float | None = max(j for j in jumps if j is not None)
        else:
            lo, hi, jump = float("inf"), float("-inf"), None
        for glo, ghi in hulls:
            if jump is None:
                lo, hi = min(lo, glo), max(hi, ghi)
                continue
            n_out = out_hw[ax] if out_hw else 1
            if glo <= lo and ghi >= hi + (n_out - 1) * jump:
                lo, hi, jump = glo, ghi, None  # the broadcast operand already sees everything every unit sees
            else:  # partial overlap: the centre unit's union (an approximation)
                c = (n_out - 1) // 2
                lo = min(lo + c * jump, glo) - c * jump
                hi = max(hi + c * jump, ghi) - c * jump
                exact = False
        axes.append(Axis(lo, hi, jump, step))
    if (axes[0].jump is None) != (axes[1].jump is None):  # keep the two axes global together
        n = out_hw or (1, 1)
        axes = [Axis(*a.hull(k), None, a.step) for a, k in zip(axes, n, strict=True)]
    return Geometry(axes[0], axes[1], exact, dims if steps else None)


def _slice_geometry(g: Geometry, in_shape: tuple[int, ...], key: Any) -> Geometry | None:
    """Geometry after ``x[key]`` for keys of ints, slices and one Ellipsis; None when not expressible.

    A slice ``a:b:t`` on a spatial axis keeps units ``a, a+t, ...``: ``lo' = lo + a*jump``, ``jump' = t*jump``
    (crops, and the strided slices of space-to-depth / YOLO's Focus).
    """
    if g.dims is None:
        return None
    key = key if isinstance(key, tuple) else (key,)
    if any(not (k is Ellipsis or isinstance(k, (int, slice))) or isinstance(k, bool) for k in key):
        return None
    nd = len(in_shape)
    n_ell = sum(1 for k in key if k is Ellipsis)
    if n_ell > 1 or len(key) - n_ell > nd:
        return None
    if n_ell:
        i = next(j for j, k in enumerate(key) if k is Ellipsis)
        key = key[:i] + (slice(None),) * (nd - len(key) + 1) + key[i + 1 :]
    key = key + (slice(None),) * (nd - len(key))
    new_pos: dict[int, int] = {}
    axes: dict[int, Axis] = {}
    out_d = 0
    for d, k in enumerate(key):
        if isinstance(k, int):
            if d in g.dims:
                return None
            continue
        new_pos[d] = out_d
        out_d += 1
        if d in g.dims:
            a0, _, t = k.indices(in_shape[d])
            ax = g.h if d == g.dims[0] else g.w
            step = None if ax.step is None else ax.step * t
            if ax.jump is None:
                axes[d] = Axis(ax.lo, ax.hi, None, step)
            else:
                axes[d] = Axis(ax.lo + a0 * ax.jump, ax.hi + a0 * ax.jump, ax.jump * t, step)
    return Geometry(axes[g.dims[0]], axes[g.dims[1]], g.exact, (new_pos[g.dims[0]], new_pos[g.dims[1]]))


_GETITEM = torch_functions("__getitem__")
_PERMUTE = torch_functions("permute")
_TRANSPOSE = torch_functions("transpose", "swapaxes", "swapdims")


class _Recorder(TorchFunctionMode):
    """Records each torch function call whose output is a tensor as a :class:`Node`."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.nodes: list[Node] = []
        # id(tensor) -> (weak reference, node): outputs are not kept alive (the allocator can reuse their
        # memory, as in a plain forward); a dead reference means the id now belongs to another tensor
        self.producer: dict[int, tuple[weakref.ref[torch.Tensor], int]] = {}
        self.cap: Any = None
        self.batch = 1
        self.calls: list[ModuleCall] = []
        self.counts: dict[str, int] = {}
        self.modules = dict(model.named_modules())

    # -- nodes
    def add_input(self, x: torch.Tensor) -> None:
        self.batch = max(int(x.shape[0]), 1)  # MACs are reported per image: ops on windows/tokens keep their counts
        self._add(Node(0, "input", "input", (), tuple(x.shape), Geometry(_INPUT_AXIS, _INPUT_AXIS)), [x])

    def _add(self, node: Node, outs: list[torch.Tensor]) -> None:
        self.nodes.append(node)
        for t in outs:
            self.producer[id(t)] = (weakref.ref(t), node.index)

    def lookup(self, t: Any) -> int | None:
        """The node that produced tensor ``t`` (its latest in-place update included), or None."""
        hit = self.producer.get(id(t))
        if hit is None or hit[0]() is not t:
            return None
        return hit[1]

    def __torch_function__(
        self, func: Any, types: Any, args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None
    ) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        outs = tensors_in(out)
        if not outs or func is torch.Tensor.__setitem__:
            return out
        seen: list[int] = []
        for t in tensors_in((args, kwargs)):
            i = self.lookup(t)
            if i is not None and i not in seen:
                seen.append(i)
        try:
            node = self._make(func, args, kwargs, tuple(seen), outs[0])
        except Exception:  # noqa: BLE001 -- an op convlens cannot parse must not break the user's forward pass
            node = self._fallback(func, tuple(seen), outs[0])
        self._add(node, outs)
        return out

    def _fallback(self, func: Any, ins: tuple[int, ...], out: torch.Tensor) -> Node:
        """An op whose arguments could not be read: its field is the hull of its inputs, marked inexact."""
        items = [(self.nodes[i].geometry, self.nodes[i].shape) for i in ins if self.nodes[i].geometry is not None]
        geo = _merge([], items, tuple(out.shape), False) if items else None
        return Node(len(self.nodes), _op_name(func), "unknown" if items else "constant", ins, tuple(out.shape), geo)

    def _make(
        self, func: Any, args: Sequence[Any], kwargs: Mapping[str, Any], ins: tuple[int, ...], out: torch.Tensor
    ) -> Node:
        idx = len(self.nodes)
        shape = tuple(out.shape)
        name = _op_name(func)
        items = [(self.nodes[i].geometry, self.nodes[i].shape) for i in ins if self.nodes[i].geometry is not None]
        main_t = args[0] if args and isinstance(args[0], torch.Tensor) else kwargs.get("input")
        main_i = self.lookup(main_t) if isinstance(main_t, torch.Tensor) else None
        main = self.nodes[main_i] if main_i is not None and main_i in ins else None
        # an in-place op re-binds its tensor to this node: the producer lookup above ran before that
        macs, window, kind = 0, None, "elementwise"
        geo: Geometry | None = None
        if func in _CONV or func in _MAXPOOL or func in _AVGPOOL or func in _LPPOOL:
            if func in _CONV:
                a = _bind(_CONV_ARGS, args, kwargs)
                w = a["weight"]
                k = (int(w.shape[-2]), int(w.shape[-1]))
                d = _pair(a.get("dilation"), 1)
                pad = a.get("padding", 0)
                if isinstance(pad, str):
                    pad = (d[0] * (k[0] - 1) // 2, d[1] * (k[1] - 1) // 2) if pad == "same" else (0, 0)
                window = Window(k, _pair(a.get("stride"), 1), _pair(pad, 0), d)
                macs = int(out.numel() * w.shape[1] * k[0] * k[1]) // self.batch if out.ndim == 4 else 0
                kind = "conv"
            else:
                names = _MAXPOOL_ARGS if func in _MAXPOOL else _AVGPOOL_ARGS if func in _AVGPOOL else _LPPOOL_ARGS
                a = _bind(names, args, kwargs)
                k = _pair(a["kernel_size"], 1)
                s = a.get("stride")
                window = Window(
                    k,
                    k if not s else _pair(s, 1),
                    _pair(a.get("padding", 0), 0),
                    _pair(a.get("dilation", 1), 1),
                    bool(a.get("ceil_mode", False)),
                )
                kind = "pool"
            if main is not None and main.geometry is not None and out.ndim == 4:
                g = main.geometry
                if g.dims == (2, 3):
                    geo = Geometry(
                        _window_axis(g.h, window.kernel[0], window.stride[0], window.padding[0], window.dilation[0]),
                        _window_axis(g.w, window.kernel[1], window.stride[1], window.padding[1], window.dilation[1]),
                        g.exact,
                    )
                elif g.dims is None:
                    geo = g  # a window over a tensor without spatial layout (e.g. 1x1 conv on a pooled vector)
        elif (
            func in _PAD
            and main is not None
            and main.geometry is not None
            and out.ndim == 4
            and main.geometry.dims == (2, 3)
        ):
            a = _bind(_PAD_ARGS, args, kwargs)
            p = [int(v) for v in a["pad"]] + [0, 0, 0, 0]
            left, top = p[0], p[2]
            window = Window((1, 1), (1, 1), (top, left))
            g = main.geometry
            shift = lambda ax, n: (
                ax if ax.jump is None else Axis(ax.lo - n * ax.jump, ax.hi - n * ax.jump, ax.jump, ax.step)
            )  # noqa: E731
            geo, kind = Geometry(shift(g.h, top), shift(g.w, left), g.exact), "pad"
        elif func in _ADAPTIVE and main is not None and main.geometry is not None and out.ndim == 4:
            kind = "adaptive_pool"
            g = main.geometry
            if shape[-2:] == (1, 1) or g.dims != (2, 3):
                geo = _to_global(g, main.shape)
            else:
                axes, exact = [], g.exact
                for ax, n_in, n_out in ((g.h, main.shape[-2], shape[-2]), (g.w, main.shape[-1], shape[-1])):
                    if n_in % n_out == 0:
                        k = n_in // n_out
                        axes.append(_window_axis(ax, k, k, 0, 1))
                    else:  # windows [floor(i n/o), ceil((i+1) n/o)) vary in size: widest window, mean stride
                        kmax = max(-(-(i + 1) * n_in // n_out) - (i * n_in // n_out) for i in range(n_out))
                        step = None if ax.step is None else ax.step * n_in / n_out
                        if ax.jump is None:
                            axes.append(Axis(ax.lo, ax.hi, None, step))
                        else:
                            axes.append(Axis(ax.lo, ax.hi + (kmax - 1) * ax.jump, ax.jump * n_in / n_out, step))
                        exact = False
                geo = Geometry(axes[0], axes[1], exact)
        elif (
            func in _RESIZE
            and main is not None
            and main.geometry is not None
            and out.ndim == 4
            and main.geometry.dims == (2, 3)
        ):
            kind = "resize"  # nearest/bilinear upsampling: jump shrinks by the scale, +-1 input unit for interpolation
            g = main.geometry
            axes = []
            for ax, n_in, n_out in ((g.h, main.shape[-2], shape[-2]), (g.w, main.shape[-1], shape[-1])):
                r = n_in / n_out
                step = None if ax.step is None else ax.step * r
                if ax.jump is None:
                    axes.append(Axis(ax.lo, ax.hi, None, step))
                else:
                    axes.append(Axis(ax.lo - ax.jump, ax.hi + ax.jump, ax.jump * r, step))
            geo = Geometry(axes[0], axes[1], False)
        elif func in _GETITEM and main is not None and main.geometry is not None and len(args) > 1:
            geo = _slice_geometry(main.geometry, main.shape, args[1])
            kind = "layout" if geo is not None else kind
        elif (
            (func in _PERMUTE or func in _TRANSPOSE)
            and main is not None
            and main.geometry is not None
            and main.geometry.dims
        ):
            g, nd = main.geometry, len(main.shape)
            if func in _PERMUTE:
                perm = list(args[1:]) or list(kwargs.get("dims", ()))
                if len(perm) == 1 and isinstance(perm[0], (tuple, list)):
                    perm = list(perm[0])
                perm = [int(v) % nd for v in perm]
            else:
                a0 = int(args[1] if len(args) > 1 else kwargs.get("dim0", 0)) % nd
                a1 = int(args[2] if len(args) > 2 else kwargs.get("dim1", 1)) % nd
                perm = list(range(nd))
                perm[a0], perm[a1] = perm[a1], perm[a0]
            if sorted(perm) == list(range(nd)):
                kind = "layout"
                geo = Geometry(g.h, g.w, g.exact, (perm.index(g.dims[0]), perm.index(g.dims[1])))
        elif func in _LINEAR:
            kind = "linear"
            w = args[1] if len(args) > 1 else kwargs["weight"]
            macs = int(out.numel() * w.shape[-1]) // self.batch
        elif func in _MATMUL or func in _SDPA:
            kind = "matmul"
            ts = [t for t in tensors_in(args)][:3]
            if func in _SDPA and len(ts) >= 3:  # Q K^T and A V
                q, kk = ts[0], ts[1]
                macs = 2 * int(q.numel() * kk.shape[-2]) // self.batch if q.ndim >= 2 else 0
            elif len(ts) >= 2:
                a_t = ts[-2] if func in _ADDMM else ts[0]
                inner = int(a_t.shape[-1])
                macs = int(out.numel() * inner) // self.batch
        elif func in _EINSUM:
            kind = "matmul"
            macs = einsum_macs(args[0] if args else None, tensors_in(args[1:])) // self.batch
        elif func in _CONV_T:
            kind = "unknown"
            w = args[1] if len(args) > 1 else kwargs["weight"]
            inp = args[0]
            macs = int(inp.numel() * w.shape[1] * w.shape[-2] * w.shape[-1]) // self.batch
        elif func in _CONV_ND or func in _CONV_T_ND:
            # out positions x C_out x (C_in/groups) x taps; transposed: in positions x C_in x (C_out/groups) x taps
            kind = "unknown"
            w = args[1] if len(args) > 1 else kwargs["weight"]
            n = (args[0] if func in _CONV_T_ND else out).numel()
            macs = int(n * w.shape[1] * math.prod(w.shape[2:])) // self.batch
        if geo is None and items:
            # inputs whose spatial layout the output keeps: same rank, same H and W at the same positions
            # (or, for view/reshape, H and W still the last two axes); a linear/matmul keeps the layout
            # only when it acts on a non-spatial last axis (ConvNeXt's MLP on NHWC maps)
            keep = []
            for g, s in items:
                if g.dims is None:
                    continue
                if len(s) == len(shape) and _hw(s, g.dims) == _hw(shape, g.dims):
                    if kind in ("linear", "matmul") and len(shape) - 1 in g.dims:
                        continue
                    keep.append(g)
                elif (
                    kind == "elementwise"
                    and g.dims == (len(s) - 2, len(s) - 1)
                    and len(shape) >= 3
                    and shape[-2:] == s[-2:]
                ):
                    keep.append(Geometry(g.h, g.w, g.exact, (len(shape) - 2, len(shape) - 1)))
            if keep:
                others = [(g, s) for g, s in items if not any(g is k or (g.h is k.h and g.w is k.w) for k in keep)]
                geo = _merge(keep, others, shape, True)
            else:
                # the layout is gone (flatten, global pooling, mean, linear on vectors): one field for all units;
                # exact unless an unknown op still returns a spatial map (transposed convs, unfold)
                spatial_out = out.ndim == 4 and shape[-2:] != (1, 1) and any(g.dims is not None for g, _ in items)
                geo = _merge([], items, shape, not spatial_out)
                kind = "unknown" if spatial_out else ("global" if kind == "elementwise" else kind)
        if not items:
            kind = "constant"
        return Node(idx, name, kind, ins, shape, geo, window, macs)

    # -- module calls (called from inside the capture hook)
    def on_call(self, name: str, inputs: tuple[Any, ...], output: Any) -> None:
        t = first_tensor(output)
        out_i = self.lookup(t) if t is not None else None
        ins = tuple(dict.fromkeys(i for x in tensors_in(inputs) if (i := self.lookup(x)) is not None))
        if self.cap is not None:  # the tracer needs no stored outputs: let their memory be reused
            self.cap.calls.clear()
            self.cap.activations.clear()
        k = self.counts.get(name, 0)
        self.counts[name] = k + 1
        m = self.modules[name]
        self.calls.append(
            ModuleCall(
                name,
                type(m).__name__,
                k,
                name.count(".") + 1,
                next(m.children(), None) is None,
                out_i,
                ins,
                None if t is None else tuple(t.shape),
            )
        )


def _cone(nodes: list[Node], out: int, stop: Iterable[int]) -> tuple[int, ...]:
    """Nodes computed from ``stop`` (exclusive) up to ``out`` (inclusive), by walking the inputs back."""
    stop_set = set(stop)
    if out in stop_set:
        return ()
    seen = {out}
    todo = [out]
    while todo:
        i = todo.pop()
        for j in nodes[i].inputs:
            if j not in seen and j not in stop_set and j != 0:
                seen.add(j)
                todo.append(j)
    return tuple(sorted(seen))


def trace(
    model: nn.Module,
    input_shape: Sequence[int] = (3, 224, 224),
    *,
    x: torch.Tensor | None = None,
    device: str | torch.device | None = None,
    fx: bool = False,
) -> Graph:
    """Run one forward pass (eval mode, no grad, modes restored) and record the dataflow graph.

    The recording is the source of every number (it sees concrete shapes and every op of any model).
    With ``fx=True`` the model is also symbolically traced with ``torch.fx`` and the ``GraphModule`` is
    attached as ``graph.fx`` for callers who want to rewrite or pattern-match the graph; models fx cannot
    trace (Python control flow on shapes, as in timm's ``Conv2dSame``) get ``graph.fx = None`` and the
    reason in ``graph.fx_error``, and the recorded graph works the same.

    Args:
        model: any ``nn.Module`` taking one image batch.
        input_shape: (C, H, W) of the zero probe image (ignored when ``x`` is given).
        x: an explicit input batch (use batch size 1: MACs are per image).
        device: where to run; defaults to the model's device.
        fx: also try ``torch.fx.symbolic_trace`` (see above).

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, stride=2), torch.nn.ReLU(), torch.nn.Flatten())
        >>> g = trace(net, (3, 9, 9))
        >>> [n.op for n in g.nodes], g.total_macs
        (['input', 'conv2d', 'relu', 'flatten'], 1728)
    """
    if x is None:
        shape = tuple(input_shape)
        if len(shape) != 3 or not all(isinstance(v, int) and v >= 1 for v in shape):
            raise InputError(f"input_shape must be (C, H, W) with three positive ints, got {tuple(input_shape)}.")
        x = torch.zeros(1, *shape, device=device_of(model, device))
    elif not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise InputError(f"x must be an (N, C, H, W) tensor, got {getattr(x, 'shape', type(x).__name__)}.")
    names = [n for n, _ in model.named_modules() if n]
    rec = _Recorder(model)
    try:
        with (
            preserve_state(model, train=False),
            torch.no_grad(),
            capture(model, names, detach=False, on_call=rec.on_call) as cap,
        ):
            rec.add_input(x)
            rec.cap = cap
            with rec:
                cap.run(x)
    except (RuntimeError, ValueError, IndexError, TypeError, AssertionError) as e:  # timm asserts fixed input sizes
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(
            f"the model failed on a {'x'.join(str(v) for v in x.shape)} (NxCxHxW) input ({msg}); try a larger or differently shaped --input."
        ) from e
    nodes = rec.nodes
    for c in rec.calls:
        if c.output is not None:
            c.ops = _cone(nodes, c.output, c.inputs)
    for c in rec.calls:  # children complete first: the first call that owns a node is the innermost one
        for i in c.ops:
            if nodes[i].module is None:
                nodes[i].module = c.name
    gm, fx_error = None, None
    if fx:
        try:
            gm = torch.fx.symbolic_trace(model)
        except Exception as e:  # noqa: BLE001 -- any tracing failure means: use the recording only
            fx_error = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
    return Graph(nodes, rec.calls, tuple(x.shape[1:]), "record+fx" if gm is not None else "record", gm, fx_error)
