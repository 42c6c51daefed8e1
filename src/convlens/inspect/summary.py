"""Layer summary: per module call, its output shape, parameters, MACs, window and receptive field.

Built on :func:`convlens.graph.trace`, so receptive fields are the maximum over every path of the real
graph (residual adds, inception/DenseNet concatenations, functional ops, modules called twice):

    r' = r + (k_eff - 1)·j,   j' = s·j,   k_eff = d·(k - 1) + 1      (conv and pool, per axis)

``receptive_field`` is (r_h, r_w) in input pixels, ``jump`` (j_h, j_w) the distance between neighbouring
units in input pixels (``None`` once the map is reduced to a global vector), ``start`` the centre of
unit (0, 0)'s field (negative when padding reaches outside the image).

MACs (multiply-accumulates, one image): convolutions ``H'·W'·C_out·(C_in/groups)·kH·kW``, linear layers
``out·in``, matrix products, attention (``nn.MultiheadAttention``, ``scaled_dot_product_attention``),
``tensordot``, ``nn.Bilinear`` and recurrent layers; bias, normalization, activation, pooling and additions
count 0. A container's MACs are those of every op computed inside it. An op that multiplies but has no MAC
formula (FFTs, ``kron``...) is listed in ``not_counted`` and its rows have ``macs_counted=False``: the
total is then a lower bound, never a silent 0. ``total_params`` counts each parameter tensor once.

Example:
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, bias=False), torch.nn.ReLU(), torch.nn.MaxPool2d(2))
    >>> s = summarize(net, (3, 10, 10))
    >>> [(r.name, r.output_shape, r.macs, r.receptive_field) for r in s.layers]
    [('0', (8, 8, 8), 13824, (3, 3)), ('1', (8, 8, 8), 0, (3, 3)), ('2', (4, 4, 8), 0, (4, 4))]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import nn

from convlens.errors import InputError, LayerError
from convlens.graph import Graph, trace

if TYPE_CHECKING:
    from convlens.models import ModelBundle

__all__ = ["LayerRecord", "Summary", "summarize", "summarize_model", "MAC_CONVENTION", "hwc"]

MAC_CONVENTION = (
    "multiply-accumulates per image: conv H'*W'*C_out*(C_in/groups)*kH*kW, linear out*in, matmul/bmm/einsum/"
    "tensordot/attention products, bilinear out*in1*in2, RNN/LSTM/GRU steps*rows*|W|; bias, normalization, "
    "activations, pooling and additions count 0"
)


def hwc(shape: Sequence[int], dims: Sequence[int] | None = None) -> tuple[int, ...]:
    """Torch shape without the batch, in the course's order: (N, C, H, W) -> (H, W, C); others unchanged.

    ``dims`` are the positions of H and W in ``shape`` when known (``(1, 2)`` for a channels-last
    (N, H, W, C) map such as Swin's or ConvNeXt's blocks); default ``(2, 3)``.

    Example:
        >>> hwc((1, 64, 56, 56)), hwc((1, 1000)), hwc((1, 56, 56, 96), dims=(1, 2))
        ((56, 56, 64), (1000,), (56, 56, 96))
    """
    s = tuple(int(v) for v in shape)
    if len(s) != 4:
        return s[1:]
    hd, wd = (2, 3) if dims is None else (int(dims[0]), int(dims[1]))
    cd = next(i for i in (1, 2, 3) if i not in (hd, wd))
    return (s[hd], s[wd], s[cd])


def _dims(graph: Graph, index: int | None) -> tuple[int, int] | None:
    """H/W positions of a call's 4-D output (None: assume N, C, H, W)."""
    if index is None or len(graph.nodes[index].shape) != 4:
        return None
    d = graph.spatial_dims(index)
    return d if d is not None and 0 not in d else None


@dataclass(frozen=True)
class LayerRecord:
    """One module call. ``output_shape`` is HxWxC (course notation) for maps; ``torch_shape`` is (N, C, H, W)."""

    name: str
    type: str
    call: int
    depth: int
    leaf: bool
    output_shape: tuple[int, ...] | None
    torch_shape: tuple[int, ...] | None
    params: int
    params_trainable: int
    params_frozen: int
    macs: int
    kernel: tuple[int, int] | None
    stride: tuple[int, int] | None
    padding: tuple[int, int] | None
    dilation: tuple[int, int] | None
    receptive_field: tuple[int | float, int | float] | None
    jump: tuple[int | float, int | float] | None
    start: tuple[int | float, int | float] | None
    rf_exact: bool
    #: False when an op inside this call multiplies but has no MAC formula: ``macs`` is then a lower bound
    macs_counted: bool = True


@dataclass(frozen=True)
class Summary:
    """Every module call of one forward pass plus totals (``input_shape`` is HxWxC)."""

    def _repr_html_(self) -> str:
        """Rich display in Jupyter: the renderer the report uses (:func:`convlens.plot.html.summary_html`), images inline."""
        from convlens.plot.html import summary_html

        return summary_html(self)

    model: str
    input_shape: tuple[int, int, int]
    layers: list[LayerRecord]
    total_params: int
    trainable_params: int
    frozen_params: int
    total_macs: int
    mac_convention: str = MAC_CONVENTION
    graph: Graph | None = field(default=None, repr=False, compare=False)
    #: ops the tracer saw that multiply but whose MACs are not counted: ``{"op", "module", "shape", "note"}``
    not_counted: list[dict] = field(default_factory=list)
    #: whether the model's weights are pretrained (set by :func:`summarize_model`; None for a bare module)
    pretrained: bool | None = None

    @property
    def macs_complete(self) -> bool:
        """True when every op that multiplies was counted (``total_macs`` is exact, not a lower bound)."""
        return not self.not_counted

    def layer(self, name: str | int, call: int = 0) -> LayerRecord:
        """The record of ``name`` (its ``call``-th call), or of row ``name`` when it is an int (negative
        counts from the end, as in Python), in the order of the full table (``depth=None``).

        Raises:
            LayerError: no such name or row (with close names), or a call the module never made.

        Example:
            >>> s = summarize(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU()), (3, 8, 8))
            >>> s.layer(1).type, s.layer("0").output_shape, s.layer(-1).name
            ('ReLU', (6, 6, 4), '1')
        """
        if isinstance(name, bool) or not isinstance(name, (str, int)):
            raise LayerError(f"a layer is a name (str) or a row number (int), got {type(name).__name__} {name!r}.")
        if isinstance(name, int):
            n = len(self.layers)
            if not -n <= name < n:
                raise LayerError(f"row {name} is out of range: the summary has {n} rows (0..{n - 1}, or -1..-{n}).")
            return self.layers[name]
        hits = [r for r in self.layers if r.name == name]
        if not hits:
            import difflib

            close = difflib.get_close_matches(name, [r.name for r in self.layers], n=3, cutoff=0.5)
            raise LayerError(
                f"layer '{name}' is not in the summary" + (f"; did you mean {', '.join(close)}?" if close else ".")
            )
        if not 0 <= call < len(hits):
            raise LayerError(f"layer '{name}' was called {len(hits)} time(s); call {call} does not exist.")
        return hits[call]

    def table(self, depth: int | None = 3) -> str:
        """The summary as plain text, framed like torchinfo's: one row per module call down to ``depth``,
        then the totals. ``print(summary)`` prints this.

        Example:
            >>> s = summarize(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3)), (3, 8, 8), name="tiny")
            >>> s.table().splitlines()[3].split()  # 6*6*4 outputs x 3*3*3 MACs each = 3,888
            ['0', 'Conv2d', '6x6x4', '112', '3,888', '3/1/0/1', '3', '1']
        """

        def pair(v: object) -> str:
            if v is None:
                return "-"
            a, b = v  # type: ignore[misc]
            return f"{a}" if a == b else f"{a}x{b}"

        head = ("layer", "type", "output HxWxC", "params", "MACs", "k/s/p/d", "RF", "jump")
        rows = []
        for r in self.at_depth(depth):
            win = "-" if r.kernel is None else "/".join(pair(v) for v in (r.kernel, r.stride, r.padding, r.dilation))
            rows.append(
                (
                    "  " * (r.depth - 1) + r.name + (f" #{r.call}" if r.call else ""),
                    r.type,
                    "x".join(map(str, r.output_shape or ())) or "-",
                    f"{r.params:,}",
                    f"{r.macs:,}" + ("" if r.macs_counted else "+"),
                    win,
                    pair(r.receptive_field) + ("" if r.rf_exact else "~"),
                    pair(r.jump) if r.jump is not None else "global",
                )
            )
        widths = [max([len(h), 20 if i == 0 else 0] + [len(row[i]) for row in rows]) for i, h in enumerate(head)]

        def line(cells: Sequence[str]) -> str:
            return "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

        rule = "=" * len(line(head))
        h, w, c = self.input_shape
        out = [rule, line(head), rule, *(line(r) for r in rows), rule]
        out += [
            f"{self.model} on {h}x{w}x{c} (HxWxC)",
            f"Total params: {self.total_params:,}",
            f"Trainable params: {self.trainable_params:,}",
            f"Non-trainable params: {self.frozen_params:,}",
            f"Total MACs: {self.total_macs:,} ({self.total_macs / 1e9:.3f} G)"
            + ("" if self.macs_complete else f" -- a lower bound: {len(self.not_counted)} op(s) not counted (+)"),
            rule,
        ]
        return "\n".join(out)

    def __str__(self) -> str:
        return self.table()

    def __repr__(self) -> str:
        return (
            f"Summary(model={self.model!r}, input_shape={self.input_shape}, layers={len(self.layers)}, "
            f"total_params={self.total_params:,}, total_macs={self.total_macs:,})"
        )

    def at_depth(self, depth: int | None) -> list[LayerRecord]:
        """Records of modules nested at most ``depth`` levels deep (``None``: all).

        A deeper module is listed too when none of its ancestors was called (the children of a
        ``ModuleList``/``ModuleDict`` that the model iterates, like CaiT's ``blocks_token_only``), so
        the rows always cover the whole forward pass.
        """
        if depth is not None and depth < 1:
            raise InputError(f"depth must be >= 1, got {depth}.")
        if depth is None:
            return list(self.layers)
        called = {r.name for r in self.layers}

        def uncovered(name: str) -> bool:
            parts = name.split(".")
            return not any(".".join(parts[:k]) in called for k in range(1, len(parts)))

        return [r for r in self.layers if r.depth <= depth or uncovered(r.name)]

    def to_dict(self, depth: int | None = None, *, channels_first: bool = False) -> dict:
        """The JSON form: ``{"layers": [...], "total_params", "total_macs", ...}`` (graph left out)."""
        layers = []
        for r in self.at_depth(depth):
            d = {k: getattr(r, k) for k in LayerRecord.__dataclass_fields__}
            if channels_first and r.output_shape is not None:
                o = r.output_shape
                d["output_shape"] = (
                    (o[2], o[0], o[1]) if len(o) == 3 and r.torch_shape is not None and len(r.torch_shape) == 4 else o
                )
            layers.append(d)
        h, w, c = self.input_shape
        return {
            "model": self.model,
            "input_shape": (c, h, w) if channels_first else self.input_shape,
            "layers": layers,
            "total_params": self.total_params,
            "trainable_params": self.trainable_params,
            "frozen_params": self.frozen_params,
            "total_macs": self.total_macs,
            "mac_convention": self.mac_convention,
            "macs_complete": self.macs_complete,
            "not_counted": [dict(d) for d in self.not_counted],
            "pretrained": self.pretrained,
        }


def summarize(
    model: nn.Module,
    input_shape: Sequence[int] = (3, 224, 224),
    *,
    name: str | None = None,
    device: str | torch.device | None = None,
) -> Summary:
    """Trace ``model`` on a zero image of ``input_shape`` = (C, H, W) and summarise every module call.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, stride=2), torch.nn.Conv2d(4, 4, 3, dilation=2))
        >>> r = summarize(net, (3, 32, 32)).layer("1")
        >>> r.receptive_field, r.jump, r.dilation
        ((11, 11), (2, 2), (2, 2))
    """
    graph = trace(model, tuple(input_shape), device=device)
    modules = dict(model.named_modules())
    # parameters per module (its whole subtree), each tensor once per module: one pass over full names
    counts: dict[str, list[int]] = {n: [0, 0] for n in modules}
    seen: set[tuple[str, int]] = set()
    for pname, p in model.named_parameters(remove_duplicate=False):
        parts = pname.split(".")[:-1]
        slot = 0 if p.requires_grad else 1
        for k in range(len(parts) + 1):
            prefix = ".".join(parts[:k])
            if prefix in counts and (prefix, id(p)) not in seen:
                seen.add((prefix, id(p)))
                counts[prefix][slot] += p.numel()
    records = []
    for c in graph.calls:
        node = graph.nodes[c.output] if c.output is not None else None
        geo = node.geometry if node is not None else None
        win = graph.window(c)
        tr, fr = counts[c.name]
        records.append(
            LayerRecord(
                name=c.name,
                type=c.type,
                call=c.call,
                depth=c.depth,
                leaf=c.leaf,
                output_shape=hwc(c.shape, _dims(graph, c.output)) if c.shape else None,
                torch_shape=c.shape,
                params=tr + fr,
                params_trainable=tr,
                params_frozen=fr,
                macs=sum(graph.nodes[i].macs for i in c.ops),
                kernel=win.kernel if win else None,
                stride=win.stride if win else None,
                padding=win.padding if win else None,
                dilation=win.dilation if win else None,
                receptive_field=geo.receptive_field if geo else None,
                jump=geo.jump if geo else None,
                start=geo.start if geo else None,
                rf_exact=geo.exact if geo else True,
                macs_counted=all(graph.nodes[i].counted for i in c.ops),
            )
        )

    # containers complete after their children; list them first, in call order, as torchinfo does
    def first_op(i: int) -> int:
        c = graph.calls[i]
        return min(c.ops) if c.ops else (c.output if c.output is not None else 0)

    order = sorted(range(len(records)), key=lambda i: (first_op(i), records[i].depth, i))
    records = [records[i] for i in order]
    tr_all, fr_all = counts[""]
    c_in, h, w = graph.input_shape
    return Summary(
        model=name or type(model).__name__,
        input_shape=(h, w, c_in),
        layers=records,
        total_params=tr_all + fr_all,
        trainable_params=tr_all,
        frozen_params=fr_all,
        total_macs=graph.total_macs,
        graph=graph,
        not_counted=[
            {"op": n.op, "module": n.module, "shape": n.shape, "note": n.note or "MACs not counted"}
            for n in graph.not_counted
        ],
    )


def summarize_model(bundle: ModelBundle, input_shape: Sequence[int] | None = None) -> Summary:
    """:func:`summarize` a loaded model at ``input_shape`` = (C, H, W) (default: the model's own input
    size), named after it and saying whether its weights are pretrained (``convlens summary --json``
    prints this summary's :meth:`Summary.to_dict`).

    Example:
        >>> from convlens.models import load_model
        >>> s = summarize_model(load_model("resnet18"), (3, 64, 64))
        >>> s.model, s.input_shape, s.pretrained, s.to_dict()["pretrained"]
        ('resnet18', (64, 64, 3), False, False)
    """
    from dataclasses import replace

    shape = tuple(bundle.meta.input_size if input_shape is None else input_shape)
    return replace(summarize(bundle.model, shape, name=bundle.meta.name), pretrained=bundle.pretrained)
