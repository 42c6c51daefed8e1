"""The traced network as a standalone SVG document, written natively (no Graphviz): one box per
node of a :class:`convlens.inspect.netgraph.NetworkGraph` at its layout position, with its name,
type, output HxWxC, k/s/p/d, receptive field, jump, params and MACs; merge nodes (residual adds,
concatenations) drawn as rounded orange boxes; edges as curves with arrows (skip connections
bend around the nodes they pass); dashed boxes around blocks. Each node is a
``<g class="node" data-id=... data-name=... data-module=...>`` with a ``<title>`` tooltip, so a
page (the explorer) can select and collapse blocks by module path.

Example:
    >>> import torch, xml.etree.ElementTree as ET
    >>> from convlens.inspect.netgraph import network_graph
    >>> svg = graph_svg(network_graph(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3)), (3, 8, 8)))
    >>> ET.fromstring(svg).tag.endswith("svg"), svg.count('<g class="node ')
    (True, 2)
"""

from __future__ import annotations

from typing import Any
from xml.sax.saxutils import escape, quoteattr

from convlens.inspect.netgraph import NODE_HEIGHT, NODE_WIDTH, NetworkGraph

__all__ = ["graph_svg"]

_FILL = {"input": "#e8eef8", "op": "#f7f7f7", "module": "#eef6ee", "merge": "#fde9d9"}
_STROKE = {"input": "#4a6fa5", "op": "#777777", "module": "#4f8a4f", "merge": "#d0702a"}


def _si(v: int) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= div:
            return f"{v / div:.3g}{unit}"
    return str(v)


def _pair(v: Any) -> str:
    if v is None:
        return "-"
    a, b = v
    return f"{a}" if a == b else f"{a}x{b}"


def _lines(n: Any) -> list[str]:
    shape = "x".join(map(str, n.output_shape)) if n.output_shape else "-"
    second = f"{n.type} · {shape}"
    third = []
    if n.kernel is not None:
        third.append(f"k{_pair(n.kernel)} s{_pair(n.stride)} p{_pair(n.padding)} d{_pair(n.dilation)}")
    if n.receptive_field is not None:
        third.append(f"RF {_pair(n.receptive_field)}")
        third.append(f"j {_pair(n.jump)}" if n.jump is not None else "global")
    fourth = []
    if n.params:
        fourth.append(f"params {_si(n.params)}")
    if n.macs:
        fourth.append(f"MACs {_si(n.macs)}")
    return [n.name, second, " · ".join(third), " · ".join(fourth)]


def _fit(text: str, width: float, size: float) -> str:
    chars = int(width / (size * 0.58))
    return text if len(text) <= chars else text[: max(1, chars - 1)] + "…"


def graph_svg(graph: NetworkGraph, *, title: str | None = None) -> str:
    """The SVG document (a string) of a laid-out network graph.

    Example:
        >>> import torch
        >>> from convlens.inspect.netgraph import network_graph
        >>> "<title>" in graph_svg(network_graph(torch.nn.Sequential(torch.nn.ReLU()), (1, 4, 4)))
        True
    """
    w, h = graph.width, graph.height
    pos = {n.id: n for n in graph.nodes}
    head = title or (
        f"{graph.model} on {'x'.join(map(str, graph.input_shape))} (HxWxC): {len(graph.nodes)} nodes, "
        f"{len(graph.merges)} merges" + (f", collapsed to depth {graph.depth}" if graph.depth else ", every traced op")
    )
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w:.0f}" height="{h:.0f}" viewBox="0 0 {w:.0f} {h:.0f}" '
        'font-family="DejaVu Sans, Helvetica, Arial, sans-serif" class="convlens-graph">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse">'
        '<path d="M 0 0 L 10 5 L 0 10 z" fill="#666"/></marker></defs>',
        f'<rect x="0" y="0" width="{w:.0f}" height="{h:.0f}" fill="white"/>',
        f'<text x="12" y="22" font-size="14" font-weight="bold">{escape(head)}</text>',
        '<g class="clusters">',
    ]
    for c in sorted(graph.clusters, key=lambda c: c.depth):
        if c.depth == 1:  # stage labels run down the left edge, block labels along the top
            lx, ly = c.x + 11, c.y + c.height / 2
            label = f'<text x="{lx:.1f}" y="{ly:.1f}" font-size="10" fill="#5a6778" text-anchor="middle" transform="rotate(-90 {lx:.1f} {ly:.1f})">'
        else:
            label = f'<text x="{c.x + 6:.1f}" y="{c.y + 11:.1f}" font-size="10" fill="#5a6778">'
        out.append(
            f'<g class="cluster" data-name={quoteattr(c.name)} data-depth="{c.depth}">'
            f'<rect x="{c.x:.1f}" y="{c.y:.1f}" width="{c.width:.1f}" height="{c.height:.1f}" rx="8" '
            f'fill="{"#f4f7fb" if c.depth == 1 else "none"}" stroke="#9aa7b8" stroke-dasharray="5,4"/>'
            f"{label}{escape(c.name)} ({escape(c.type)})</text></g>"
        )
    out.append('</g><g class="edges" fill="none" stroke="#666" stroke-width="1.3">')
    for a, b in graph.edges:
        na, nb = pos[a], pos[b]
        x0, y0 = na.x + NODE_WIDTH / 2, na.y + NODE_HEIGHT
        x1, y1 = nb.x + NODE_WIDTH / 2, nb.y
        span = nb.rank - na.rank
        if span > 1 and abs(x0 - x1) < 1.0:  # a skip connection: bend around the nodes between
            bend = NODE_WIDTH * 0.62
            d = f"M {x0:.1f} {y0:.1f} C {x0 + bend:.1f} {y0 + 30:.1f}, {x1 + bend:.1f} {y1 - 30:.1f}, {x1:.1f} {y1:.1f}"
        else:
            my = (y0 + y1) / 2
            d = f"M {x0:.1f} {y0:.1f} C {x0:.1f} {my:.1f}, {x1:.1f} {my:.1f}, {x1:.1f} {y1:.1f}"
        out.append(f'<path class="edge" data-from="{a}" data-to="{b}" d="{d}" marker-end="url(#arrow)"/>')
    out.append('</g><g class="nodes">')
    for n in graph.nodes:
        lines = _lines(n)
        tip = "\n".join(line for line in lines if line)
        out.append(
            f'<g class="node {n.kind}" id="node-{n.id}" data-id="{n.id}" data-name={quoteattr(n.name)} '
            f'data-type={quoteattr(n.type)} data-module={quoteattr(n.module or "")} data-kind="{n.kind}">'
            f"<title>{escape(tip)}</title>"
            f'<rect x="{n.x:.1f}" y="{n.y:.1f}" width="{NODE_WIDTH:.0f}" height="{NODE_HEIGHT:.0f}" '
            f'rx="{14 if n.kind == "merge" else 4}" fill="{_FILL[n.kind]}" stroke="{_STROKE[n.kind]}" stroke-width="1.4"/>'
        )
        for k, line in enumerate(lines):
            if not line:
                continue
            size = 11.5 if k == 0 else 10
            weight = ' font-weight="bold"' if k == 0 else ""
            out.append(
                f'<text x="{n.x + 7:.1f}" y="{n.y + 15 + 15 * k:.1f}" font-size="{size}"{weight} fill="#222">'
                f"{escape(_fit(line, NODE_WIDTH - 12, size))}</text>"
            )
        out.append("</g>")
    out.append("</g></svg>")
    return "\n".join(out) + "\n"
