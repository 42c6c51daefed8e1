"""The drawn network graph: nodes and edges against torch.fx's own graph of resnet18, collapsing by
depth, valid SVG, the `convlens graph` JSON contract, and rendering in Chromium."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import torch
from _chromium import launch, needs_chromium
from torch import nn

from convlens.cli import main
from convlens.errors import InputError
from convlens.inspect.netgraph import network_graph
from convlens.plot.svg import graph_svg

SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture(scope="module")
def r18():
    import torchvision

    torch.manual_seed(0)
    return torchvision.models.resnet18().eval()


def test_resnet18_full_depth_is_fx_graph(r18) -> None:
    """One node per traced op and one merge per residual add: the same counts torch.fx's symbolic trace gives."""
    fx = torch.fx.symbolic_trace(r18).graph
    fx_nodes = [n for n in fx.nodes if n.op != "output"]
    fx_edges = sum(len(n.all_input_nodes) for n in fx_nodes)
    fx_adds = [n for n in fx_nodes if n.op == "call_function" and "add" in str(n.target)]
    g = network_graph(r18, (3, 224, 224))
    assert len(g.nodes) == len(fx_nodes) == 70
    assert len(g.edges) == fx_edges
    assert len(g.merges) == len(fx_adds) == 8 and all(m.type.startswith("add") for m in g.merges)
    fx_convs = [
        n.target for n in fx_nodes if n.op == "call_module" and isinstance(r18.get_submodule(n.target), nn.Conv2d)
    ]
    assert [n.name for n in g.nodes if n.type == "Conv2d"] == fx_convs
    # every edge goes down the layout, every node of a rank on its own spot
    ranks = {n.id: n.rank for n in g.nodes}
    assert all(ranks[a] < ranks[b] for a, b in g.edges)
    spots = [(n.x, n.y) for n in g.nodes]
    assert len(set(spots)) == len(spots)
    conv1 = next(n for n in g.nodes if n.name == "conv1")
    assert (conv1.output_shape, conv1.kernel, conv1.stride, conv1.padding, conv1.receptive_field, conv1.jump) == (
        (112, 112, 64),
        (7, 7),
        (2, 2),
        (3, 3),
        (7, 7),
        (2, 2),
    )
    assert conv1.params == 64 * 3 * 49 and conv1.macs == 112 * 112 * 64 * 3 * 49


def test_collapse_to_depth(r18) -> None:
    g = network_graph(r18, (3, 224, 224), depth=1)
    names = [n.name for n in g.nodes]
    assert names == [
        "input",
        "conv1",
        "bn1",
        "relu",
        "maxpool",
        "layer1",
        "layer2",
        "layer3",
        "layer4",
        "avgpool",
        "flatten",
        "fc",
    ]
    assert g.edges == [(i, i + 1) for i in range(len(names) - 1)]
    assert sum(n.params for n in g.nodes) == sum(p.numel() for p in r18.parameters())
    full = network_graph(r18, (3, 224, 224))
    assert sum(n.macs for n in g.nodes) == sum(n.macs for n in full.nodes) > 1.8e9
    blocks = network_graph(r18, (3, 224, 224), depth=2)
    assert [n.name for n in blocks.nodes if n.name.startswith("layer2")] == ["layer2.0", "layer2.1"]
    layer3 = next(n for n in g.nodes if n.name == "layer3")
    assert layer3.output_shape == (14, 14, 256) and layer3.jump == (16, 16)
    with pytest.raises(InputError):
        network_graph(r18, (3, 64, 64), depth=0)


def test_concat_is_a_merge_and_svg_is_valid_xml() -> None:
    class Incept(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 4, 1), nn.Conv2d(3, 4, 3, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.cat([self.a(x), self.b(x)], 1)

    g = network_graph(Incept(), (3, 8, 8))
    (cat,) = g.merges
    assert cat.type == "cat" and cat.output_shape == (8, 8, 8) and cat.receptive_field == (3, 3)
    assert sorted(a for a, b in g.edges if b == cat.id) == [1, 2]
    svg = graph_svg(g, title="a <b> & c")
    root = ET.fromstring(svg)
    nodes = root.findall(f".//{SVG}g[@class='node merge']")
    assert len(nodes) == 1 and nodes[0].get("data-name") == cat.name
    assert "a &lt;b&gt; &amp; c" in svg


def test_cli_graph_json_contract(capsys, tmp_path: Path) -> None:
    code = main(["graph", "--model", "resnet18", "--input", "64x64x3", "--out", str(tmp_path / "g.svg"), "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    d = json.loads(out)
    node_keys = {"id", "name", "type", "output_shape", "params", "macs", "receptive_field", "jump"}
    assert node_keys <= set(d["nodes"][0]) and len(d["nodes"]) == 70
    assert all(len(e) == 2 for e in d["edges"]) and len(d["edges"]) == 77
    root = ET.parse(tmp_path / "g.svg").getroot()
    assert len(root.findall(f".//{SVG}g[@data-id]")) == 70
    assert main(["graph", "--model", "resnet18", "--depth", "0"]) == 2


@pytest.mark.browser
@pytest.mark.slow
@needs_chromium
def test_svg_renders_in_chromium(r18, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    path = tmp_path / "r18.svg"
    path.write_text(graph_svg(network_graph(r18, (3, 224, 224))), encoding="utf-8")
    problems: list[str] = []
    with sync_playwright() as p:
        browser = launch(p)
        try:
            page = browser.new_page()
            page.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.goto(path.resolve().as_uri(), wait_until="load")
            facts = page.evaluate(
                """() => {
                  const nodes = [...document.querySelectorAll('g.node')];
                  const boxes = nodes.map(n => n.getBBox());
                  return {n: nodes.length, merges: document.querySelectorAll('g.node.merge').length,
                          drawn: boxes.filter(b => b.width > 100 && b.height > 40).length,
                          edges: document.querySelectorAll('path.edge').length,
                          svgw: document.documentElement.getBBox().width};
                }"""
            )
        finally:
            browser.close()
    assert problems == []
    assert facts == {"n": 70, "merges": 8, "drawn": 70, "edges": 77, "svgw": facts["svgw"]} and facts["svgw"] > 200


def test_collapse_keeps_a_containers_own_ops_as_op_nodes() -> None:
    """A container shallower than --depth is expanded: its children are nodes and its own functional op
    (torchvision's BasicConv2d applies F.relu after its conv and bn children) is an op node, not a second
    copy of the container with its parameters counted again."""

    class BasicConv(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.relu(self.bn(self.conv(x)))

    net = nn.Sequential(BasicConv(), nn.Flatten())
    g = network_graph(net, (3, 6, 6), depth=2)
    assert [(n.name, n.kind) for n in g.nodes] == [
        ("input", "input"),
        ("0.conv", "module"),
        ("0.bn", "module"),
        ("0 · relu", "op"),
        ("1", "module"),
    ]
    assert sum(n.params for n in g.nodes) == sum(p.numel() for p in net.parameters())
    assert [n.name for n in network_graph(net, (3, 6, 6), depth=1).nodes] == ["input", "0", "1"]
