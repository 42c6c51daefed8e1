"""The traced graph as a drawable network: nodes with shapes, params, MACs, windows and receptive
fields, edges, merges, and a layered layout -- the data behind ``convlens graph`` (SVG or JSON) and
the explorer's network panel.

Built on :func:`convlens.graph.trace` (the real dataflow of one forward pass). At full depth
(``depth=None``) there is **one node per traced op** (a convolution, a ReLU, each residual ``add``,
``cat``, ``flatten``, ...); with ``depth=N`` every module call nested at most ``N`` levels deep
becomes one node holding all of its ops (a ResNet ``layer1.0`` block, or the whole ``layer1`` with
``depth=1``), with its MACs summed and its params counted once. Ops that read two or more traced
tensors are **merge** nodes (residual adds, inception/DenseNet concatenations, SE gates).

Layout (Sugiyama-style, computed here so every renderer draws the same picture): rank = longest
path from the input; within a rank, nodes sit at the mean x of their predecessors, pushed apart to a
minimum gap, in execution order.

Example:
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten())
    >>> g = network_graph(net, (3, 8, 8))
    >>> [(n.name, n.type, n.output_shape) for n in g.nodes]
    [('input', 'input', (8, 8, 3)), ('0', 'Conv2d', (6, 6, 4)), ('1', 'ReLU', (6, 6, 4)), ('2', 'Flatten', (144,))]
    >>> g.edges
    [(0, 1), (1, 2), (2, 3)]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from convlens.errors import InputError
from convlens.graph import Graph, ModuleCall, trace
from convlens.inspect.summary import hwc

__all__ = ["GraphNode", "GraphCluster", "NetworkGraph", "network_graph", "NODE_WIDTH", "NODE_HEIGHT"]

#: node box size and gaps of the layout, in SVG user units (pixels)
NODE_WIDTH, NODE_HEIGHT, GAP_X, GAP_Y, MARGIN = 210.0, 66.0, 26.0, 34.0, 24.0


@dataclass(frozen=True)
class GraphNode:
    """One drawn node: a traced op (full depth) or a module call collapsed to one box.

    ``kind``: ``input``, ``op``, ``module`` (a collapsed call) or ``merge`` (reads two or more branches).
    ``output_shape`` is HxWxC for maps (as ``convlens summary``); ``kernel/stride/padding/dilation``
    are set for a conv/pool op or a module made of one; ``receptive_field``/``jump`` in input pixels
    (``jump`` None once the map is global). ``x``, ``y`` are the box's top-left corner in the layout.
    """

    id: int
    name: str
    type: str
    kind: str
    output_shape: tuple[int, ...] | None
    params: int
    macs: int
    kernel: tuple[int, int] | None
    stride: tuple[int, int] | None
    padding: tuple[int, int] | None
    dilation: tuple[int, int] | None
    receptive_field: tuple[int | float, int | float] | None
    jump: tuple[int | float, int | float] | None
    module: str | None
    ops: tuple[int, ...]
    rank: int = 0
    x: float = 0.0
    y: float = 0.0


@dataclass(frozen=True)
class GraphCluster:
    """A box drawn around the nodes of one container module call (a block, a stage)."""

    name: str
    type: str
    depth: int
    nodes: tuple[int, ...]
    x: float
    y: float
    width: float
    height: float


@dataclass(frozen=True)
class NetworkGraph:
    """Nodes, edges ``(from_id, to_id)``, clusters and the layout's size."""

    model: str
    input_shape: tuple[int, int, int]
    depth: int | None
    nodes: list[GraphNode]
    edges: list[tuple[int, int]]
    clusters: list[GraphCluster] = field(default_factory=list)
    width: float = 0.0
    height: float = 0.0
    #: whether the model's weights are pretrained (known when a ModelBundle was given; None for a bare module)
    pretrained: bool | None = None

    @property
    def merges(self) -> list[GraphNode]:
        """Nodes where branches meet (residual adds, concatenations, gates)."""
        return [n for n in self.nodes if n.kind == "merge"]

    def to_dict(self) -> dict[str, Any]:
        """The JSON form of ``convlens graph --json``: ``{"nodes": [...], "edges": [[from, to], ...], ...}``."""
        keys = (
            "id",
            "name",
            "type",
            "kind",
            "output_shape",
            "params",
            "macs",
            "receptive_field",
            "jump",
            "kernel",
            "stride",
            "padding",
            "dilation",
            "module",
            "rank",
            "x",
            "y",
        )
        return {
            "model": self.model,
            "input_shape": list(self.input_shape),
            "depth": self.depth,
            "nodes": [{k: _plain(getattr(n, k)) for k in keys} for n in self.nodes],
            "edges": [[a, b] for a, b in self.edges],
            "clusters": [
                {k: _plain(getattr(c, k)) for k in ("name", "type", "depth", "nodes", "x", "y", "width", "height")}
                for c in self.clusters
            ],
            "width": self.width,
            "height": self.height,
            "node_size": [NODE_WIDTH, NODE_HEIGHT],
            "pretrained": self.pretrained,
        }


def _plain(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


def _params(model: nn.Module) -> dict[str, int]:
    """Parameters of each module's subtree, each tensor once."""
    return {n: sum(p.numel() for p in m.parameters()) for n, m in model.named_modules()}


def _label(call: ModuleCall) -> str:
    return call.name + (f" #{call.call}" if call.call else "")


def network_graph(
    model: nn.Module,
    input_size: Sequence[int] = (3, 224, 224),
    *,
    depth: int | None = None,
    name: str | None = None,
    graph: Graph | None = None,
    device: str | torch.device | None = None,
) -> NetworkGraph:
    """Trace ``model`` on a zero ``input_size`` = (C, H, W) image and lay out its graph.

    Args:
        model: any ``nn.Module``, or a ModelBundle (its name and whether it is pretrained are recorded).
        input_size: (C, H, W) of the probe.
        depth: None = one node per traced op; N = every module call at most N levels deep collapsed to one node.
        name: the model's name for titles.
        graph: an already traced graph of this model (skips tracing).
        device: where to trace.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU()), torch.nn.Flatten())
        >>> [n.name for n in network_graph(net, (1, 5, 5), depth=1).nodes]
        ['input', '0', '1']
    """
    if depth is not None and depth < 1:
        raise InputError(f"depth must be >= 1 (or None for every op), got {depth}.")
    pretrained = None
    if not isinstance(model, nn.Module) and hasattr(model, "model") and hasattr(model, "meta"):  # a ModelBundle
        pretrained, name, model = bool(model.pretrained), name or model.meta.name, model.model
    g = graph if graph is not None else trace(model, tuple(input_size), device=device)
    params = _params(model)
    nodes = g.nodes
    keep = [n.index for n in nodes if n.kind != "constant"]
    keep_set = set(keep)
    # group every op: the deepest module call at most `depth` levels deep whose ops contain it
    owner: dict[int, int] = {}
    if depth is not None:
        for ci in sorted(range(len(g.calls)), key=lambda i: g.calls[i].depth):
            c = g.calls[ci]
            if c.depth <= depth:
                for i in c.ops:
                    owner[i] = ci
    # leaf call whose output an op is: names full-depth nodes after their module ('layer1.0.conv1')
    out_of: dict[int, int] = {}
    first_call: set[int] = set()
    seen_names: set[str] = set()
    for ci, c in enumerate(g.calls):
        if c.leaf and c.output is not None and c.output not in out_of:
            out_of[c.output] = ci
        if c.name not in seen_names:
            seen_names.add(c.name)
            first_call.add(ci)
    groups: dict[Any, list[int]] = {}
    for i in keep:
        # a module at the collapse depth (or a leaf) is one node; a shallower container's own functional ops
        # (the F.relu after a BasicConv2d's children, a block's residual add) stay op nodes beside its children
        c = g.calls[owner[i]] if i in owner else None
        key = ("call", owner[i]) if c is not None and (c.depth == depth or c.leaf) else ("op", i)
        groups.setdefault(key, []).append(i)
    order = sorted(groups, key=lambda k: min(groups[k]))
    gid = {k: n for n, k in enumerate(order)}
    op_gid = {i: gid[k] for k, ops in groups.items() for i in ops}
    edges: list[tuple[int, int]] = []
    for i in keep:
        for j in nodes[i].inputs:
            if j in keep_set and op_gid[j] != op_gid[i] and (op_gid[j], op_gid[i]) not in edges:
                edges.append((op_gid[j], op_gid[i]))
    edges.sort()
    preds: dict[int, list[int]] = {}
    for a, b in edges:
        preds.setdefault(b, []).append(a)
    built: list[GraphNode] = []
    for k in order:
        ops = tuple(sorted(groups[k]))
        n_id = gid[k]
        if k[0] == "call":
            c = g.calls[k[1]]
            out = c.output if c.output is not None and c.output in keep_set else ops[-1]
            win = g.window(c)
            nm, tp, kind = _label(c), c.type, "module"
            prm = params.get(c.name, 0) if k[1] in first_call else 0
        else:
            node = nodes[k[1]]
            out = node.index
            ci = out_of.get(out)
            win = node.window if node.kind in ("conv", "pool") else None
            if node.kind == "input":
                nm, tp, kind, prm = "input", "input", "input", 0
            elif ci is not None:  # (an in-place module such as ReLU(inplace=True) owns no new node)
                c = g.calls[ci]
                nm, tp, kind = _label(c), c.type, "op"
                prm = params.get(c.name, 0) if ci in first_call else 0
                win = g.window(c) or win
            else:
                nm = f"{node.module} · {node.op}" if node.module else node.op
                tp, kind, prm = node.op, "op", 0
        n_in = len({op_gid[j] for i in ops for j in nodes[i].inputs if j in keep_set and op_gid[j] != n_id})
        if n_in >= 2 and kind == "op":
            kind = "merge"
        on = nodes[out]
        geo = on.geometry
        dims = g.spatial_dims(out) if len(on.shape) == 4 else None
        built.append(
            GraphNode(
                id=n_id,
                name=nm,
                type=tp,
                kind=kind,
                output_shape=hwc(on.shape, dims if dims and 0 not in dims else None) if on.shape else None,
                params=int(prm),
                macs=int(sum(nodes[i].macs for i in ops)),
                kernel=win.kernel if win else None,
                stride=win.stride if win else None,
                padding=win.padding if win else None,
                dilation=win.dilation if win else None,
                receptive_field=geo.receptive_field if geo else None,
                jump=geo.jump if geo else None,
                module=(g.calls[k[1]].name if k[0] == "call" else nodes[k[1]].module),
                ops=ops,
            )
        )
    placed, width, height = _layout(built, preds)
    clusters = _clusters(g, placed, depth)
    c_in, h, w = (int(v) for v in g.input_shape)
    return NetworkGraph(
        name or type(model).__name__, (h, w, c_in), depth, placed, edges, clusters, width, height, pretrained
    )


def _layout(nodes: list[GraphNode], preds: dict[int, list[int]]) -> tuple[list[GraphNode], float, float]:
    """Ranks by longest path (edges from later to earlier nodes are ignored), x at the mean of the
    predecessors' x, pushed apart to ``NODE_WIDTH + GAP_X`` within a rank."""
    rank: dict[int, int] = {}
    for n in nodes:  # nodes are in execution order
        ps = [rank[p] for p in preds.get(n.id, []) if p in rank]
        rank[n.id] = max(ps) + 1 if ps else 0
    xs: dict[int, float] = {}
    by_rank: dict[int, list[GraphNode]] = {}
    for n in nodes:
        by_rank.setdefault(rank[n.id], []).append(n)
    step = NODE_WIDTH + GAP_X
    for r in sorted(by_rank):
        row = by_rank[r]
        want = []
        for n in row:
            ps = [xs[p] for p in preds.get(n.id, []) if p in xs]
            want.append((sum(ps) / len(ps) if ps else 0.0, n.id))
        want.sort()
        pos = [w for w, _ in want]
        for k in range(1, len(pos)):
            pos[k] = max(pos[k], pos[k - 1] + step)
        shift = (sum(w for w, _ in want) - sum(pos)) / len(pos)  # keep the row centred on what it wanted
        for (_, nid), p in zip(want, pos, strict=True):
            xs[nid] = p + shift
    lo = min(xs.values()) if xs else 0.0
    hi = max(xs.values()) if xs else 0.0
    out = []
    for n in nodes:
        x = xs[n.id] - lo + MARGIN + 40.0
        y = rank[n.id] * (NODE_HEIGHT + GAP_Y) + MARGIN + 30.0
        out.append(
            GraphNode(**{**{f: getattr(n, f) for f in n.__dataclass_fields__}, "rank": rank[n.id], "x": x, "y": y})
        )
    width = hi - lo + NODE_WIDTH + 2 * MARGIN + 80.0
    height = (max(rank.values()) + 1 if rank else 1) * (NODE_HEIGHT + GAP_Y) + 2 * MARGIN + 30.0
    return out, width, height


def _clusters(g: Graph, nodes: list[GraphNode], depth: int | None) -> list[GraphCluster]:
    """Boxes around container calls (depth 1 and 2, deeper than the collapse depth) that hold two or more nodes."""
    out = []
    for c in g.calls:
        if c.leaf or c.depth > 2 or (depth is not None and c.depth >= depth) or not c.ops:
            continue
        ops = set(c.ops)
        members = [n for n in nodes if n.ops and set(n.ops) <= ops]
        if len(members) < 2:
            continue
        pad = 20.0 if c.depth == 1 else 8.0  # a stage's box holds its blocks' boxes and a label down its side
        x0 = min(n.x for n in members) - pad
        y0 = min(n.y for n in members) - (8.0 if c.depth == 1 else 14.0) - (6.0 if c.depth == 1 else 0.0)
        x1 = max(n.x for n in members) + NODE_WIDTH + pad
        y1 = max(n.y for n in members) + NODE_HEIGHT + (12.0 if c.depth == 1 else 6.0)
        out.append(GraphCluster(_label(c), c.type, c.depth, tuple(n.id for n in members), x0, y0, x1 - x0, y1 - y0))
    return out
