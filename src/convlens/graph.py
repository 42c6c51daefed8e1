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
import os
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from convlens.errors import MODEL_FAILURES, InputError, LayerError, first_line
from convlens.hooks import capture, device_of, first_tensor, preserve_state

__all__ = [
    "bind_args",
    "int_pair",
    "Axis",
    "Geometry",
    "Window",
    "Node",
    "ModuleCall",
    "Graph",
    "OpCall",
    "OpResult",
    "HANDLERS",
    "HandlerError",
    "handles",
    "trace",
    "tensors_in",
    "einsum_macs",
]


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
    #: (axis, grid_h, grid_w, first) when H and W were flattened into one token axis in row-major order (a
    #: ViT patch embedding's (N, L, C) tokens): token ``first + t`` is unit ``(t // grid_w, t % grid_w)``;
    #: tokens before ``first`` (a class token) depend on no pixel; ``dims`` is None
    tokens: tuple[int, int, int, int] | None = None

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
    # input | conv | conv_transpose | pool | pad | adaptive_pool | resize | layout | linear | matmul | elementwise |
    # global | unknown | constant
    kind: str
    inputs: tuple[int, ...]
    shape: tuple[int, ...]
    geometry: Geometry | None  # None: the output does not depend on the model input
    window: Window | None = None
    macs: int = 0
    module: str | None = None  # innermost module call the op belongs to
    counted: bool = True  # False: the op multiplies but convlens has no MAC formula for it (macs is not its cost)
    note: str | None = None  # why an op is not counted or its handler failed


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
    _by_name: dict[str, list[ModuleCall]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for c in self.calls:
            self._by_name.setdefault(c.name, []).append(c)

    @property
    def total_macs(self) -> int:
        """Sum of MACs over every op (each op once, whatever module it sits in)."""
        return sum(n.macs for n in self.nodes)

    @property
    def not_counted(self) -> list[Node]:
        """Ops the tracer saw that multiply but whose MACs it could not count (``total_macs`` is a lower bound)."""
        return [n for n in self.nodes if not n.counted]

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
    """Every hashable callable named ``names`` in torch, torch.nn.functional, torch._C._nn, torch._VF,
    torch.fft / torch.linalg (as ``fft_*`` / ``linalg_*``) and Tensor methods: what a ``TorchFunctionMode``
    sees for those ops.

    Example:
        >>> F.conv2d in torch_functions("conv2d")
        True
    """
    out: set[Any] = set()
    for n in names:
        for ns in (torch, F, torch._C._nn, torch._VF, torch._C._fft, torch._C._linalg, torch.Tensor):
            f = getattr(ns, n, None)
            if f is not None:
                try:
                    hash(f)
                except TypeError:
                    continue
                out.add(f)
    return out


def bind_args(names: Sequence[str], args: Sequence[Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """An op's positional ``args`` named by ``names``, updated with its ``kwargs`` (how the op handlers and
    :func:`convlens.inspect.trace_unit` read a recorded call).

    Example:
        >>> bind_args(("input", "kernel_size", "stride"), ("x", 3), {"stride": 2})
        {'input': 'x', 'kernel_size': 3, 'stride': 2}
    """
    d = dict(zip(names, args))
    d.update(kwargs)
    return d


def int_pair(v: Any, default: int) -> tuple[int, int]:
    """A conv/pool size argument as ``(h, w)``: an int is both, a 1-list is both, a longer list gives its last
    two (``(d, h, w)`` -> ``(h, w)``); None or empty is ``default``.

    Example:
        >>> int_pair(3, 1), int_pair([2], 1), int_pair((1, 2, 3), 1), int_pair(None, 0)
        ((3, 3), (2, 2), (2, 3), (0, 0))
    """
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
    """Multiply-accumulates of ``torch.einsum(equation, *operands)`` as torch computes it (without opt_einsum):
    the operands are contracted left to right, two at a time. Before each pairwise product, a letter that only
    one side uses and nothing after needs (a later operand or the output) is summed out, which multiplies
    nothing; the product then costs the product of the sizes of the letters left on either side (a broadcast
    letter at its largest size, an ellipsis as one letter per dim aligned from the right). 0 for one operand
    (a sum or a permutation multiplies nothing) or the sublist form.

    Example (a batched matmul b,i,j x b,j,k: 2*3*4*5 MACs; a chain ij,jk,kl: 2*3*4 + 2*4*5):
        >>> einsum_macs("bij,bjk->bik", [torch.zeros(2, 3, 4), torch.zeros(2, 4, 5)])
        120
        >>> einsum_macs("ij,jk,kl->il", [torch.zeros(2, 3), torch.zeros(3, 4), torch.zeros(4, 5)])
        64
    """
    if not isinstance(equation, str) or len(operands) < 2:
        return 0
    lhs, arrow, rhs = equation.replace(" ", "").partition("->")
    subs = lhs.split(",")
    if len(subs) != len(operands):
        return 0
    sizes: dict[str, int] = {}
    labels: list[list[str]] = []
    for sub, t in zip(subs, operands, strict=True):
        if "..." in sub:
            pre, post = sub.split("...")
            k = t.ndim - len(pre) - len(post)  # broadcast dims align from the right: "...1" is the last
            labs = list(pre) + [f"...{k - i}" for i in range(k)] + list(post)
        else:
            labs = list(sub)
        if len(labs) != t.ndim:
            return 0
        labels.append(labs)
        for lab, n in zip(labs, t.shape, strict=True):
            sizes[lab] = max(sizes.get(lab, 1), int(n))
    ellipsis = {lab for lab in sizes if lab.startswith("...")}
    if arrow:
        out = set(rhs.replace("...", "")) | (ellipsis if "..." in rhs else set())
    else:  # implicit output: the letters used once, and the ellipsis
        used = [lab for labs in labels for lab in labs if not lab.startswith("...")]
        out = {lab for lab in used if used.count(lab) == 1} | ellipsis
    macs, cur = 0, set(labels[0])
    for i in range(1, len(labels)):
        rest = out.union(*labels[i + 1 :])
        other = set(labels[i])
        involved = {lab for lab in cur if lab in other or lab in rest} | {
            lab for lab in other if lab in cur or lab in rest
        }
        macs += math.prod(sizes[lab] for lab in involved)
        cur = involved & rest
    return macs


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


def _grid(g: Geometry, shape: tuple[int, ...]) -> tuple[int, int] | None:
    """Units along H and W of a tensor with geometry ``g``: its H/W axes, or the grid of a token axis."""
    if g.tokens is not None:
        return g.tokens[1], g.tokens[2]
    return _hw(shape, g.dims)


def _hull(g: Geometry, shape: tuple[int, ...], ax: int) -> tuple[float, float]:
    a = g.h if ax == 0 else g.w
    hw = _grid(g, shape)
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
    tokens = keep[0].tokens if keep else None
    out_hw = (tokens[1], tokens[2]) if tokens else _hw(out_shape, dims)
    axes = []
    steps: set[float] = set()
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
    if not steps:
        dims = tokens = None
    return Geometry(axes[0], axes[1], exact, dims, tokens)


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


# ------------------------------------------------------------------------------------ op handlers
@dataclass
class OpCall:
    """What an op handler sees: the call, its output and the node of its main (first) tensor input.

    ``items`` are (geometry, shape) of every input that depends on the image; ``batch`` the image
    batch (MACs are per image).
    """

    func: Any
    args: Sequence[Any]
    kwargs: Mapping[str, Any]
    out: torch.Tensor
    main: Node | None
    items: list[tuple[Geometry, tuple[int, ...]]]
    batch: int = 1
    #: the node that produced a tensor argument (None for constants and parameters)
    node_of: Callable[[Any], Node | None] = lambda t: None

    @property
    def shape(self) -> tuple[int, ...]:
        """Output shape."""
        return tuple(self.out.shape)

    def arg(self, i: int, name: str, default: Any = None) -> Any:
        """Positional argument ``i`` or keyword ``name``."""
        return self.args[i] if len(self.args) > i else self.kwargs.get(name, default)

    def spatial(self, layout: bool = True) -> Geometry | None:
        """The main input's geometry when it has an (N, C, H, W) layout (``layout=False``: any geometry)."""
        g = self.main.geometry if self.main is not None else None
        if g is None or (layout and g.dims != (2, 3)):
            return None
        return g


@dataclass
class OpResult:
    """What an op handler returns. ``geometry=None`` lets the generic layout/merge rule decide;
    ``counted=False`` marks an op that multiplies but whose MACs convlens cannot count."""

    kind: str = "elementwise"
    geometry: Geometry | None = None
    window: Window | None = None
    macs: int = 0
    counted: bool = True
    note: str | None = None


Handler = Callable[[OpCall], OpResult]
#: torch callable -> handler (the pattern of ``torch.utils.flop_counter``'s registered formulas)
HANDLERS: dict[Any, Handler] = {}
_NAMES: dict[Any, str] = {}
_BY_NAME: dict[str, Handler] = {}


def handles(*names: str) -> Callable[[Handler], Handler]:
    """Register the decorated function as the handler of the torch ops ``names`` (every namespace).

    Example:
        >>> @handles("my_op_that_torch_does_not_have")
        ... def _h(op: OpCall) -> OpResult:
        ...     return OpResult()
        >>> HANDLERS[F.conv2d].__name__
        '_window_op'
    """

    def deco(fn: Handler) -> Handler:
        for n in names:
            _BY_NAME[n] = fn
            for f in torch_functions(n):
                HANDLERS[f] = fn
                _NAMES[f] = n
        return fn

    return deco


def _handler(func: Any) -> Handler:
    """The handler of ``func``: registered callables; ``torch.ops.aten.X`` by the name ``X`` (its arguments
    follow the functional form for the ops registered here); an op of another ``torch.ops`` namespace (a
    compiled extension) is opaque: not counted; anything else: :func:`_default`."""
    h = HANDLERS.get(func)
    if h is not None:
        return h
    if isinstance(func, torch._ops.OpOverload):
        ns, name = func.namespace, func._opname
    elif isinstance(func, torch._ops.OpOverloadPacket):
        ns, _, name = func._qualified_op_name.partition("::")
    else:
        return _default
    return _BY_NAME.get(name, _default) if ns == "aten" else _opaque


def _op_name(func: Any) -> str:
    if isinstance(func, (torch._ops.OpOverloadPacket, torch._ops.OpOverload)):
        return str(func.name() if isinstance(func, torch._ops.OpOverload) else func._qualified_op_name)
    if func in _NAMES:
        return "max_pool2d" if _NAMES[func] == "max_pool2d_with_indices" else _NAMES[func]
    name = getattr(func, "__name__", None) or str(func)
    return "op" if name == "fn" else name


_POOL_ARGS = {
    "max_pool2d": ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices"),
    "avg_pool2d": ("input", "kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override"),
    "lp_pool2d": ("input", "norm_type", "kernel_size", "stride", "ceil_mode"),
}


@handles("conv2d", "max_pool2d", "max_pool2d_with_indices", "avg_pool2d", "lp_pool2d")
def _window_op(op: OpCall) -> OpResult:
    """conv/pool: window from the arguments; MACs ``out·(C_in/groups)·kH·kW``; field by the window rule."""
    name = _op_name(op.func)
    macs = 0
    if name == "conv2d":
        w = op.arg(1, "weight")
        k, d = (int(w.shape[-2]), int(w.shape[-1])), int_pair(op.arg(5, "dilation", 1), 1)
        pad = op.arg(4, "padding", 0)
        if isinstance(pad, str):
            pad = (d[0] * (k[0] - 1) // 2, d[1] * (k[1] - 1) // 2) if pad == "same" else (0, 0)
        window = Window(k, int_pair(op.arg(3, "stride", 1), 1), int_pair(pad, 0), d)
        macs = int(op.out.numel() * w.shape[1] * k[0] * k[1]) // op.batch if op.out.ndim == 4 else 0
    else:
        a = bind_args(_POOL_ARGS[name], op.args, op.kwargs)
        k, s = int_pair(a["kernel_size"], 1), a.get("stride")
        pad, dil = int_pair(a.get("padding", 0), 0), int_pair(a.get("dilation", 1), 1)
        window = Window(k, k if not s else int_pair(s, 1), pad, dil, bool(a.get("ceil_mode", False)))
    g, geo = op.spatial(layout=False), None
    if g is not None and op.out.ndim == 4:
        if g.dims == (2, 3):
            wa = [(window.kernel[i], window.stride[i], window.padding[i], window.dilation[i]) for i in (0, 1)]
            geo = Geometry(_window_axis(g.h, *wa[0]), _window_axis(g.w, *wa[1]), g.exact)
        elif g.dims is None and g.tokens is None:
            geo = g  # a window over a tensor without spatial layout (e.g. 1x1 conv on a pooled vector)
    return OpResult("conv" if name == "conv2d" else "pool", geo, window, macs)


@handles("pad", "constant_pad_nd")
def _pad(op: OpCall) -> OpResult:
    """F.pad: a left/top pad ``a`` shifts every field by ``-a·jump`` (window (1, 1) with that padding)."""
    g = op.spatial()
    if g is None or op.out.ndim != 4:
        return OpResult()
    p = [int(v) for v in op.arg(1, "pad")] + [0, 0, 0, 0]
    left, top = p[0], p[2]

    def shift(ax: Axis, n: int) -> Axis:
        return ax if ax.jump is None else Axis(ax.lo - n * ax.jump, ax.hi - n * ax.jump, ax.jump, ax.step)

    return OpResult("pad", Geometry(shift(g.h, top), shift(g.w, left), g.exact), Window((1, 1), (1, 1), (top, left)))


@handles("adaptive_avg_pool2d", "adaptive_max_pool2d", "adaptive_max_pool2d_with_indices")
def _adaptive_pool(op: OpCall) -> OpResult:
    """Adaptive pooling: windows ``[floor(i·n/o), ceil((i+1)·n/o))``; exact when ``o`` divides ``n``."""
    g = op.spatial(layout=False)
    if g is None or op.out.ndim != 4:
        return OpResult()
    assert op.main is not None
    n_hw, o_hw = op.main.shape[-2:], op.shape[-2:]
    if o_hw == (1, 1) or g.dims != (2, 3):
        return OpResult("adaptive_pool", _to_global(g, op.main.shape))
    axes, exact = [], g.exact
    for ax, n_in, n_out in ((g.h, n_hw[0], o_hw[0]), (g.w, n_hw[1], o_hw[1])):
        if n_in % n_out == 0:
            axes.append(_window_axis(ax, n_in // n_out, n_in // n_out, 0, 1))
            continue
        kmax = max(-(-(i + 1) * n_in // n_out) - (i * n_in // n_out) for i in range(n_out))
        step = None if ax.step is None else ax.step * n_in / n_out
        if ax.jump is None:
            axes.append(Axis(ax.lo, ax.hi, None, step))
        else:  # windows vary in size: widest window, mean stride
            axes.append(Axis(ax.lo, ax.hi + (kmax - 1) * ax.jump, ax.jump * n_in / n_out, step))
        exact = False
    return OpResult("adaptive_pool", Geometry(axes[0], axes[1], exact))


def _taps(
    mode: str, n_in: int, n_out: int, scale: float | None, align: bool, antialias: bool = False
) -> list[tuple[int, int]]:
    """First and last input unit read by each output unit of a 1-D resize, as PyTorch's kernels index:
    ``nearest`` ``floor(o·s)``; ``nearest-exact`` ``floor((o + ½)·s)``; linear ``x = (o + ½)·s - ½``
    (clamped at 0) or ``o·(n_in-1)/(n_out-1)`` with ``align_corners``, reading ``floor(x)`` and the next
    unit unless ``x`` is whole (its weight is then 0; "whole" within 1e-9 on either side, PyTorch's own
    rounding); cubic ``floor(x) - 1 .. floor(x) + 2`` (one unit when ``x`` is whole); area: the
    adaptive-pool windows; antialiased (bilinear/bicubic, any direction): the triangle or cubic filter
    widened to ``max(s, 1)`` (linear) or ``2·max(s, 1)`` (cubic) units around the centre ``(o + ½)·s``
    (also with ``align_corners``: PyTorch's antialiased kernels place every unit that way), the units
    whose filter weight is not 0. ``s = 1/scale_factor`` when one was given, else ``n_in/n_out``."""
    s = (1.0 / scale) if scale else n_in / n_out
    if align and mode in ("linear", "bilinear", "bicubic", "trilinear"):
        s = (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
    out = []
    for o in range(n_out):
        if antialias and mode in ("bilinear", "bicubic"):
            a, b = _aa_taps(mode == "bicubic", n_in, (o + 0.5) * s, max(s, 1.0))
        elif mode == "area":
            a, b = o * n_in // n_out, -(-(o + 1) * n_in // n_out) - 1
        elif mode in ("nearest", "nearest-exact"):
            a = b = min(int(math.floor((o + (0.5 if mode == "nearest-exact" else 0.0)) * s)), n_in - 1)
        else:
            x = o * s if align else (o + 0.5) * s - 0.5
            if mode != "bicubic":
                x = max(x, 0.0)
            f = round(x)
            whole = abs(x - f) < 1e-9
            f = f if whole else math.floor(x)
            a, b = (f, f) if whole else ((f - 1, f + 2) if mode == "bicubic" else (f, f + 1))
        out.append((min(max(a, 0), n_in - 1), min(max(b, 0), n_in - 1)))
    return out


def _aa_taps(cubic: bool, n_in: int, c: float, w: float) -> tuple[int, int]:
    """First and last input unit with a nonzero weight in PyTorch's antialiased filter (``aten``'s
    ``_compute_weights_aa``): units ``int(c - support + ½) .. int(c + support + ½) - 1`` (clamped to the
    input), support ``w`` (triangle) or ``2·w`` (cubic), unit ``j``'s weight the filter at ``(j + ½ - c)/w``;
    the triangle is 0 from distance 1, the cubic (a = -½) at distance 1 and from 2."""
    support = (2.0 if cubic else 1.0) * w
    units = range(max(int(c - support + 0.5), 0), min(int(c + support + 0.5), n_in))

    def read(j: int) -> bool:
        d = abs((j + 0.5 - c) / w)
        return d < 2 - 1e-9 and abs(d - 1) > 1e-9 if cubic else d < 1 - 1e-9

    hit = [j for j in units if read(j)]  # never empty: the unit under the centre has weight > 0
    return hit[0], hit[-1]


def _tap_axis(ax: Axis, taps: Sequence[tuple[int, int] | None], r: float) -> tuple[Axis, bool]:
    """The field of output units that read input units ``taps[o] = (first, last)`` (None: no input unit):
    the exact size of the widest unit, jump ``r`` input jumps, the start at the mean offset of the inner
    units' centres; True when every unit is exactly that translate."""
    step = None if ax.step is None else ax.step * r
    if ax.jump is None:
        return Axis(ax.lo, ax.hi, None, step), True
    jump = ax.jump * r
    live = [(o, t) for o, t in enumerate(taps) if t is not None]
    if not live:
        return Axis(ax.lo, ax.hi, jump, step), False
    offs = [(ax.lo + ax.hi) / 2 + (a + b) / 2 * ax.jump - o * jump for o, (a, b) in live]
    sizes = [(b - a) * ax.jump for _, (a, b) in live]
    mid = offs[len(offs) // 4 : len(offs) - len(offs) // 4]  # border units may read clamped taps
    start, half = sum(mid) / len(mid), (ax.hi - ax.lo + max(sizes)) / 2
    exact = len(live) == len(taps) and max(offs) - min(offs) < 1e-9 and min(sizes) == max(sizes)
    return Axis(start - half, start + half, jump, step), exact


@handles("interpolate", "upsample", "upsample_nearest", "upsample_bilinear")
def _resize(op: OpCall) -> OpResult:
    """Resizing: each output unit reads the input units :func:`_taps` names. Its field is their hull:
    the size is exact (the widest unit, e.g. the input's field for nearest, one input jump more for
    bilinear, three more for bicubic); jump = input jump x n_in/n_out; the start is the mean offset of
    the inner units' centres (border units read clamped taps). ``exact`` when every unit's field is that
    translate (e.g. nearest downsampling by a whole factor); upsampling repeats units in steps, so there
    the positions are within half an input jump."""
    g = op.spatial()
    if g is None or op.out.ndim != 4:
        return OpResult()
    assert op.main is not None
    name = _op_name(op.func)
    mode = {"upsample_nearest": "nearest", "upsample_bilinear": "bilinear"}.get(name) or op.arg(3, "mode", "nearest")
    align = bool(op.arg(4, "align_corners", False)) or name == "upsample_bilinear"
    sf = None if op.arg(5, "recompute_scale_factor") else op.arg(2, "scale_factor")
    sfs = (sf, sf) if not isinstance(sf, (tuple, list)) else tuple(sf)
    antialias = bool(op.arg(6, "antialias", False))
    axes, exact = [], g.exact
    for ax, n_in, n_out, scale in zip((g.h, g.w), op.main.shape[-2:], op.shape[-2:], sfs, strict=True):
        taps = _taps(str(mode), int(n_in), int(n_out), float(scale) if scale else None, align, antialias)
        axis, ok = _tap_axis(ax, taps, n_in / n_out)
        axes.append(axis)
        exact = exact and ok
    return OpResult("resize", Geometry(axes[0], axes[1], exact))


@handles("cat", "concat", "concatenate")
def _cat(op: OpCall) -> OpResult:
    """Concatenating constant tokens (a ViT's class/register tokens) to patch tokens along the token axis:
    the patch tokens keep their fields, shifted by the tokens put before them. Other concatenations: the
    generic rule (channels: max over the inputs)."""
    ts = op.arg(0, "tensors")
    nodes = [op.node_of(t) for t in ts] if isinstance(ts, (list, tuple)) else []
    dep = [(i, n.geometry) for i, n in enumerate(nodes) if n is not None and n.geometry is not None]
    if len(dep) != 1 or dep[0][1].tokens is None:
        return OpResult()
    i, g = dep[0]
    assert g.tokens is not None
    a, gh, gw, first = g.tokens
    if int(op.arg(1, "dim", 0)) % op.out.ndim != a:
        return OpResult()
    before = sum(int(t.shape[a]) for t in ts[:i])
    return OpResult("layout", Geometry(g.h, g.w, g.exact, None, (a, gh, gw, first + before)))


def _token_slice(g: Geometry, shape: tuple[int, ...], key: Any) -> Geometry | None:
    """``x[:, k:]`` dropping leading constant tokens (``k <= first``); None for any other key."""
    assert g.tokens is not None
    a, gh, gw, first = g.tokens
    key = key if isinstance(key, tuple) else (key,)
    if len(key) != a + 1 or any(k != slice(None) for k in key[:a]) or not isinstance(key[a], slice):
        return None
    start, stop, step = key[a].indices(shape[a])
    if step != 1 or start > first or stop < first + gh * gw:
        return None
    return Geometry(g.h, g.w, g.exact, None, (a, gh, gw, first - start))


@handles("__getitem__")
def _getitem(op: OpCall) -> OpResult:
    """Indexing with ints/slices: crops and strided slices move and stretch the field."""
    g = op.spatial(layout=False)
    if g is not None and g.tokens is not None and op.main is not None and len(op.args) > 1:
        geo = _token_slice(g, op.main.shape, op.args[1])
        return OpResult("layout" if geo is not None else "elementwise", geo)
    geo = _slice_geometry(g, op.main.shape, op.args[1]) if g is not None and op.main and len(op.args) > 1 else None
    return OpResult("layout" if geo is not None else "elementwise", geo)


@handles("permute", "transpose", "swapaxes", "swapdims")
def _permute(op: OpCall) -> OpResult:
    """Axis permutations move the H/W (or token) axes; the fields are unchanged."""
    g = op.spatial(layout=False)
    if g is None or (g.dims is None and g.tokens is None):
        return OpResult()
    assert op.main is not None
    nd = len(op.main.shape)
    if _op_name(op.func) == "permute":
        perm = list(op.args[1:]) or list(op.kwargs.get("dims", ()))
        if len(perm) == 1 and isinstance(perm[0], (tuple, list)):
            perm = list(perm[0])
        perm = [int(v) % nd for v in perm]
    else:
        a0, a1 = int(op.arg(1, "dim0", 0)) % nd, int(op.arg(2, "dim1", 1)) % nd
        perm = list(range(nd))
        perm[a0], perm[a1] = perm[a1], perm[a0]
    if sorted(perm) != list(range(nd)):
        return OpResult()
    if g.tokens is not None:
        t = g.tokens
        return OpResult("layout", Geometry(g.h, g.w, g.exact, None, (perm.index(t[0]), t[1], t[2], t[3])))
    assert g.dims is not None
    return OpResult("layout", Geometry(g.h, g.w, g.exact, (perm.index(g.dims[0]), perm.index(g.dims[1]))))


@handles("flatten", "reshape", "view", "unflatten")
def _reshape(op: OpCall) -> OpResult:
    """Merging the H and W axes into one token axis (``x.flatten(2)``, ViT patch embeddings) keeps each
    token's field (``tokens`` layout); splitting a token axis back into its grid restores H and W.
    Other reshapes: the generic rule."""
    g, shape = op.spatial(layout=False), op.shape
    if g is None or op.main is None:
        return OpResult()
    s = op.main.shape
    if g.dims is not None and g.dims[1] == g.dims[0] + 1:
        d = g.dims[0]
        if shape == s[:d] + (s[d] * s[d + 1],) + s[d + 2 :] and len(shape) >= 2:
            return OpResult("layout", Geometry(g.h, g.w, g.exact, None, (d, int(s[d]), int(s[d + 1]), 0)))
    if g.tokens is not None:
        a, gh, gw, first = g.tokens
        if first == 0 and s[a] == gh * gw and shape == s[:a] + (gh, gw) + s[a + 1 :]:
            return OpResult("layout", Geometry(g.h, g.w, g.exact, (a, a + 1)))
        if shape == s:
            return OpResult("layout", g)
    last = max(g.dims) if g.dims is not None else (g.tokens[0] if g.tokens is not None else None)
    if last is not None and len(s) > last + 1 and shape[: last + 1] == s[: last + 1]:
        return OpResult("layout", g)  # only the axes after the map's (features into heads and back): kept
    return OpResult()


@handles("linear")
def _linear(op: OpCall) -> OpResult:
    """Linear layer: ``out_numel · in_features`` MACs."""
    w = op.arg(1, "weight")
    return OpResult("linear", macs=int(op.out.numel() * w.shape[-1]) // op.batch)


@handles("matmul", "__matmul__", "__rmatmul__", "bmm", "mm", "baddbmm", "addmm", "linalg_matmul")
def _matmul(op: OpCall) -> OpResult:
    """Matrix products: ``out_numel · inner`` MACs (``inner`` = last axis of the left factor)."""
    ts = tensors_in(op.args)[:3]
    if len(ts) < 2:
        return OpResult("matmul")
    a_t = ts[-2] if _op_name(op.func) in ("baddbmm", "addmm") else ts[0]
    return OpResult("matmul", macs=int(op.out.numel() * int(a_t.shape[-1])) // op.batch)


@handles("scaled_dot_product_attention")
def _sdpa(op: OpCall) -> OpResult:
    """Attention ``softmax(Q K^T) V``: ``L·S·E`` for ``Q K^T`` plus ``L·S·E_v`` for ``A V`` per head."""
    ts = tensors_in(op.args)
    if len(ts) < 3 or ts[0].ndim < 2:
        return OpResult("matmul")
    q, k = ts[0], ts[1]
    return OpResult("matmul", macs=int((q.numel() + op.out.numel()) * k.shape[-2]) // op.batch)


@handles("multi_head_attention_forward")
def _mha(op: OpCall) -> OpResult:
    """``nn.MultiheadAttention`` (one opaque call): Q/K/V projections ``L·E·E + S·E_k·E + S·E_v·E``,
    attention ``2·L·S·E`` and the output projection ``L·E·E``, per batch item."""
    q, k, v = op.arg(0, "query"), op.arg(1, "key"), op.arg(2, "value")  # (L, N, E) or unbatched (L, E)
    e = int(op.arg(3, "embed_dim_to_check"))
    n = 1 if q.ndim == 2 else int(q.shape[1])
    extra = int(op.arg(7, "bias_k") is not None) + int(bool(op.arg(9, "add_zero_attn", False)))
    ql, sl = int(q.shape[0]), int(k.shape[0])  # bias_k / a zero key add keys after the projections
    macs = n * (
        ql * e * e + sl * int(k.shape[-1]) * e + sl * int(v.shape[-1]) * e + 2 * ql * (sl + extra) * e + ql * e * e
    )
    return OpResult("matmul", macs=macs // op.batch)


@handles("einsum")
def _einsum(op: OpCall) -> OpResult:
    """einsum: its operands contracted two at a time from the left, as torch does (:func:`einsum_macs`)."""
    return OpResult("matmul", macs=einsum_macs(op.args[0] if op.args else None, tensors_in(op.args[1:])) // op.batch)


@handles("tensordot")
def _tensordot(op: OpCall) -> OpResult:
    """tensordot ``(M, K) x (K, N)``: ``M·K·N = sqrt(|a|·|b|·|out|)`` MACs, whatever ``dims`` says."""
    ts = tensors_in(op.args[:2])
    if len(ts) < 2:
        return OpResult("matmul", counted=False)
    return OpResult("matmul", macs=math.isqrt(ts[0].numel() * ts[1].numel() * op.out.numel()) // op.batch)


@handles("bilinear")
def _bilinear(op: OpCall) -> OpResult:
    """``nn.Bilinear`` ``y_o = x1^T W_o x2``: ``out_numel · in1 · in2`` MACs."""
    w = op.arg(2, "weight")
    return OpResult("linear", macs=int(op.out.numel() * w.shape[1] * w.shape[2]) // op.batch)


@handles("lstm", "gru", "rnn_tanh", "rnn_relu")
def _rnn(op: OpCall) -> OpResult:
    """Recurrent layers (every layer, direction and gate): ``steps · rows · Σ |W|`` over the weight
    matrices (input, hidden and projection), i.e. ``4·H·(I + H)`` per LSTM step, ``3·H·(I + H)`` per GRU step."""
    x = op.args[0]
    packed = len(op.args) > 1 and isinstance(op.args[1], torch.Tensor) and op.args[1].ndim == 1
    params = op.args[3] if packed else op.args[2]
    if packed or x.ndim == 2:
        positions = int(x.shape[0])  # packed data: one row per (step, sequence); unbatched: one per step
    else:
        positions = int(x.shape[0] * x.shape[1])
    weights = sum(int(p.numel()) for p in params if isinstance(p, torch.Tensor) and p.ndim == 2)
    return OpResult("linear", macs=positions * weights // op.batch)


@handles("lstm_cell", "gru_cell", "rnn_tanh_cell", "rnn_relu_cell")
def _rnn_cell(op: OpCall) -> OpResult:
    """One recurrent step: ``rows · (|W_ih| + |W_hh|)`` MACs."""
    x, w_ih, w_hh = op.args[0], op.arg(2, "w_ih"), op.arg(3, "w_hh")
    rows = 1 if x.ndim == 1 else int(x.shape[0])
    return OpResult("linear", macs=rows * (int(w_ih.numel()) + int(w_hh.numel())) // op.batch)


@handles("conv_transpose2d")
def _conv_transpose2d(op: OpCall) -> OpResult:
    """Transposed conv: ``in_numel · (C_out/groups) · kH·kW`` MACs. Output unit ``o`` receives input
    unit ``i`` through tap ``k`` when ``o = i·s - p + k·d``: it reads ``i`` from ``ceil((o + p - d(K-1))/s)``
    to ``floor((o + p)/s)`` (units beyond the map count, as padding does for a conv). Stride 1 is exactly
    a conv; stride s > 1 repeats inputs in steps (a U-Net's 2x2/2 up-conv reads one unit per output)."""
    w, inp = op.arg(1, "weight"), op.args[0]
    macs = int(inp.numel() * w.shape[1] * w.shape[-2] * w.shape[-1]) // op.batch
    g = op.spatial()
    if g is None or op.out.ndim != 4 or op.main is None:
        return OpResult("unknown", macs=macs)
    s, p, d = (
        int_pair(op.arg(3, "stride", 1), 1),
        int_pair(op.arg(4, "padding", 0), 0),
        int_pair(op.arg(7, "dilation", 1), 1),
    )
    axes, exact = [], g.exact
    for i, ax in enumerate((g.h, g.w)):
        k, n_out = int(w.shape[2 + i]), int(op.shape[2 + i])
        taps = []
        for o in range(n_out):
            src = [(o + p[i] - t * d[i]) // s[i] for t in range(k) if (o + p[i] - t * d[i]) % s[i] == 0]
            taps.append((min(src), max(src)) if src else None)
        axis, ok = _tap_axis(ax, taps, 1 / s[i])
        axes.append(axis)
        exact = exact and ok
    return OpResult("conv_transpose", Geometry(axes[0], axes[1], exact), macs=macs)


@handles("conv1d", "conv3d", "conv_transpose1d", "conv_transpose3d")
def _conv_nd(op: OpCall) -> OpResult:
    """1-D/3-D (transposed) convs (ECA gates, volume layers): out (transposed: in) positions x C_out x
    (C_in/groups) x taps; their field is not tracked."""
    w = op.arg(1, "weight")
    n = (op.args[0] if "transpose" in _op_name(op.func) else op.out).numel()
    return OpResult("unknown", macs=int(n * w.shape[1] * math.prod(w.shape[2:])) // op.batch)


#: ops that multiply but that convlens does not count: they are marked "not counted", never 0
_UNCOUNTED = (
    "_native_multi_head_attention",
    "kron",
    "outer",
    "ger",
    "dot",
    "vdot",
    "inner",
    "mv",
    "addmv",
    "addr",
    "addbmm",
    "chain_matmul",
    "conv_tbc",
    "fft_fft",
    "fft_ifft",
    "fft_rfft",
    "fft_irfft",
    "fft_fft2",
    "fft_ifft2",
    "fft_rfft2",
    "fft_irfft2",
    "fft_fftn",
    "fft_ifftn",
    "fft_rfftn",
    "fft_irfftn",
    "stft",
    "istft",
    "linalg_multi_dot",
    "linalg_vecdot",
    "convolution",  # aten.convolution / aten._convolution called directly (the functional forms are counted)
    "_convolution",
)


@handles(*_UNCOUNTED)
def _uncounted(op: OpCall) -> OpResult:
    """An op that multiplies, without a MAC formula here: visible as not counted."""
    return OpResult("unknown", counted=False, note="MACs not counted")


def _opaque(op: OpCall) -> OpResult:
    """A compiled extension's op (``torch.ops.<library>.<op>``): the tracer cannot see what it computes."""
    return OpResult("unknown", counted=False, note="opaque extension op: MACs not counted")


def _generic(op: OpCall, res: OpResult) -> OpResult:
    """Where a handler left the field open: inputs whose layout the output keeps are merged unit by unit
    (elementwise ops, cat on channels, norms, views that keep H and W last, a linear/matmul on a
    non-spatial last axis as in ConvNeXt's NHWC MLP); the others contribute their whole hull."""
    shape, kind = op.shape, res.kind
    keep: list[Geometry] = []
    for g, s in op.items:
        if g.tokens is not None:
            a = g.tokens[0]
            if len(s) == len(shape) and s[a] == shape[a] and not (kind in ("linear", "matmul") and a == len(s) - 1):
                keep.append(g)
            continue
        if g.dims is None:
            continue
        if len(s) == len(shape) and _hw(s, g.dims) == _hw(shape, g.dims):
            if kind in ("linear", "matmul") and len(shape) - 1 in g.dims:
                continue
            keep.append(g)
        elif kind == "elementwise" and g.dims == (len(s) - 2, len(s) - 1) and len(shape) >= 3 and shape[-2:] == s[-2:]:
            keep.append(Geometry(g.h, g.w, g.exact, (len(shape) - 2, len(shape) - 1)))
    if keep:
        others = [(g, s) for g, s in op.items if not any(g is k or (g.h is k.h and g.w is k.w) for k in keep)]
        res.geometry = _merge(keep, others, shape, True)
        return res
    # the layout is gone (flatten, global pooling, mean, linear on vectors): one field for all units;
    # exact unless an unknown op still returns a spatial map (transposed convs, unfold), or a reshape moved
    # the map's positions where the tracer cannot follow them (Swin's windows: (N, H, W, C) -> (N, H/7, 7,
    # W/7, 7, C)): what the following ops mix is then unknown, and one field for all is only an upper bound
    spatial_out = op.out.ndim == 4 and shape[-2:] != (1, 1) and any(g.dims is not None for g, _ in op.items)
    rearranged = (
        _op_name(op.func) in ("reshape", "view", "unflatten")
        and len(shape) >= 3
        and any(g.dims is not None or g.tokens is not None for g, _ in op.items)
    )
    res.geometry = _merge([], op.items, shape, not (spatial_out or rearranged))
    res.kind = "unknown" if spatial_out else ("global" if kind == "elementwise" else kind)
    return res


def _default(op: OpCall) -> OpResult:
    """Ops without a handler (activations, norms, additions, concatenations, reductions...): 0 MACs and
    the generic field rule."""
    return OpResult()


class HandlerError(RuntimeError):
    """An op handler failed on arguments it should understand (a convlens bug, raised in strict mode)."""


def _strict_default() -> bool:
    return os.environ.get("CONVLENS_STRICT_TRACE", "") not in ("", "0")


class _Recorder(TorchFunctionMode):
    """Records each torch function call whose output is a tensor as a :class:`Node`."""

    def __init__(self, model: nn.Module, strict: bool = False) -> None:
        super().__init__()
        self.nodes: list[Node] = []
        # id(tensor) -> (weak reference, node): outputs are not kept alive (the allocator can reuse their
        # memory, as in a plain forward); a dead reference means the id now belongs to another tensor
        self.producer: dict[int, tuple[weakref.ref[torch.Tensor], int]] = {}
        self.cap: Any = None
        self.batch = 1
        self.strict = strict
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

    def _node_of(self, t: Any) -> Node | None:
        i = self.lookup(t) if isinstance(t, torch.Tensor) else None
        return None if i is None else self.nodes[i]

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
        self._add(self._make(func, args, kwargs, tuple(seen), outs[0]), outs)
        return out

    def _make(
        self, func: Any, args: Sequence[Any], kwargs: Mapping[str, Any], ins: tuple[int, ...], out: torch.Tensor
    ) -> Node:
        items = [(self.nodes[i].geometry, self.nodes[i].shape) for i in ins if self.nodes[i].geometry is not None]
        main_t = args[0] if args and isinstance(args[0], torch.Tensor) else kwargs.get("input")
        main_i = self.lookup(main_t) if isinstance(main_t, torch.Tensor) else None
        # an in-place op re-binds its tensor to this node: the producer lookup above ran before that
        main = self.nodes[main_i] if main_i is not None and main_i in ins else None
        op = OpCall(func, args, kwargs, out, main, items, self.batch, self._node_of)  # type: ignore[arg-type]
        handler = _handler(func)
        try:
            res = handler(op)
        except Exception as e:  # noqa: BLE001 -- a handler bug: loud in strict mode (tests), visible otherwise
            if self.strict:
                raise HandlerError(f"the graph handler for '{_op_name(func)}' failed: {type(e).__name__}: {e}") from e
            res = OpResult("unknown", counted=False, note=f"handler failed: {type(e).__name__}: {e}")
            res.geometry = _merge([], items, op.shape, False) if items else None
        if res.geometry is None and items:
            res = _generic(op, res)
        kind = res.kind if items else "constant"
        return Node(
            len(self.nodes), _op_name(func), kind, ins, op.shape, res.geometry, res.window, res.macs,
            counted=res.counted, note=res.note,
        )  # fmt: skip

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
    strict: bool | None = None,
) -> Graph:
    """Run one forward pass (eval mode, no grad, modes restored) and record the dataflow graph.

    Every op goes through the handler registered for it in :data:`HANDLERS` (one small function per
    op family: binding, MACs, receptive-field geometry, layout); ops without a handler get 0 MACs and the
    generic field rule. An op that multiplies but has no MAC formula is recorded with ``counted=False``
    (see :attr:`Graph.not_counted`). A handler that fails is a convlens bug: with ``strict`` (default: the
    ``CONVLENS_STRICT_TRACE`` environment variable, set by the test suite) it raises :class:`HandlerError`;
    otherwise the op is recorded as ``unknown``, not counted, with the error in ``node.note``.

    Args:
        model: any ``nn.Module`` taking one image batch.
        input_shape: (C, H, W) of the zero probe image (ignored when ``x`` is given).
        x: an explicit input batch (use batch size 1: MACs are per image).
        device: where to run; defaults to the model's device (``"meta"`` traces without computing).
        strict: raise on a handler error instead of recording the op as unknown.

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
        dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), None)  # a .double() model
        x = torch.zeros(1, *shape, device=device_of(model, device), dtype=dtype)
    elif not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise InputError(f"x must be an (N, C, H, W) tensor, got {getattr(x, 'shape', type(x).__name__)}.")
    names = [n for n, _ in model.named_modules() if n]
    rec = _Recorder(model, _strict_default() if strict is None else strict)
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
    except HandlerError:
        raise
    except MODEL_FAILURES as e:
        raise InputError(
            f"the model failed on a {'x'.join(str(v) for v in x.shape)} (NxCxHxW) input ({first_line(e)}); try a larger or differently shaped --input."
        ) from e
    nodes = rec.nodes
    for c in rec.calls:
        if c.output is not None:
            c.ops = _cone(nodes, c.output, c.inputs)
    for c in rec.calls:  # children complete first: the first call that owns a node is the innermost one
        for i in c.ops:
            if nodes[i].module is None:
                nodes[i].module = c.name
    return Graph(nodes, rec.calls, tuple(x.shape[1:]), "record")
