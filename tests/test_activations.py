"""Activations: against a manual forward, tuple/dict outputs, globs and 'auto', cleanup, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from convlens.cli import main
from convlens.errors import InputError, LayerError
from convlens.hooks import hook_count
from convlens.inspect.activations import activation_stats, get_activations, top_channels
from convlens.layers import resolve


def test_matches_manual_forward(resnet18_bundle) -> None:
    m = resnet18_bundle.model
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    acts = get_activations(m, x, ["bn1", "layer1", "layer2.0.conv1", "fc"])
    with torch.no_grad():
        bn1 = m.bn1(m.conv1(x))
        l1 = m.layer1(m.maxpool(torch.relu(bn1)))
        l2c1 = m.layer2[0].conv1(l1)
        fc = m(x)
    # bn1 is followed by an in-place ReLU: the recorded tensor must still hold negative values
    torch.testing.assert_close(acts["bn1"], bn1)
    assert (acts["bn1"] < 0).any()
    torch.testing.assert_close(acts["layer1"], l1)
    torch.testing.assert_close(acts["layer2.0.conv1"], l2c1)
    torch.testing.assert_close(acts["fc"], fc)
    assert hook_count(m) == 0 and not m.training


def test_stages_is_the_default_auto_is_the_one_auto_layer_and_globs(resnet18_bundle) -> None:
    m = resnet18_bundle.model
    x = torch.zeros(1, 3, 64, 64)
    auto = get_activations(m, x)  # the default: one layer per stage
    assert list(auto) == [r.name for r in resolve(m, "stages", input_shape=(3, 64, 64))]
    assert list(get_activations(m, x, "stages")) == list(auto)
    # 'auto' is the layer every front end means by it (layer4 is 2x2 at 64 px, so still the CAM layer)
    assert list(get_activations(m, x, "auto")) == ["layer4"]
    assert list(get_activations(m, torch.zeros(1, 3, 32, 32), "auto")) == ["layer3"]  # layer4 is 1x1 there
    sizes = [t.shape[-1] for t in auto.values()]
    assert sizes == sorted(sizes, reverse=True) and len(set(sizes)) == len(sizes)
    glob = get_activations(m, x, "layer*")
    assert list(glob) == ["layer1", "layer2", "layer3", "layer4"]


class TupleDict(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        y = self.conv(x)
        return {"feat": y, "pooled": y.mean((2, 3))}


class Wrapper(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = TupleDict()
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.body(x)
        return self.head(out["pooled"]), out["feat"]


def test_tuple_and_dict_outputs() -> None:
    net = Wrapper().eval()
    x = torch.rand(1, 3, 8, 8)
    acts = get_activations(net, x, ["body", "head"])
    torch.testing.assert_close(acts["body"], net.body.conv(x).detach())  # a dict's first tensor
    assert acts["head"].shape == (1, 2)


def test_hooks_removed_and_mode_restored_on_error() -> None:
    class Boom(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.conv(x)
            raise RuntimeError("boom")

    net = Boom().train()
    with pytest.raises(InputError, match=r"^the model failed on this 1x3x8x8 input \(boom\)\.$"):
        get_activations(net, torch.zeros(1, 3, 8, 8), ["conv"])
    assert hook_count(net) == 0 and net.training


def test_bad_inputs(resnet18_bundle) -> None:
    m = resnet18_bundle.model
    with pytest.raises(LayerError, match="did you mean 'layer4'"):
        get_activations(m, torch.zeros(1, 3, 32, 32), ["layer5"])
    with pytest.raises(InputError):
        get_activations(m, torch.zeros(3, 32, 32), "auto")
    with pytest.raises(InputError, match="NaN"):
        get_activations(m, torch.full((1, 3, 32, 32), float("nan")), "auto")


def test_stats_and_top_channels() -> None:
    a = torch.zeros(1, 4, 3, 3)
    a[0, 3] = 2.0
    a[0, 1, 0, 0] = 9.0  # a high max, a low mean
    a[0, 0] = -1.0
    assert [c.channel for c in top_channels(a, 2)] == [3, 1]
    st = activation_stats({"x": a}, topk=3)[0]
    assert st.output_shape == (3, 3, 4)
    assert st.max == 9.0 and st.min == -1.0
    assert st.sparsity == pytest.approx((36 - 9 - 1) / 36)


def test_top_channels_of_token_sequences_are_features() -> None:
    """Regression: a ViT block's (N, 197, 192) output listed token indices as 'channels'."""
    t = torch.zeros(1, 5, 3)  # 5 tokens, 3 features
    t[0, :, 2] = 1.0
    t[0, 4, :] = 7.0  # one loud token must not become a "channel"
    top = top_channels(t, 3)
    assert [c.channel for c in top][0] == 2 and max(c.channel for c in top) < 3
    assert top[0].mean == pytest.approx((4 * 1 + 7) / 5) and top[0].max == 7.0


@pytest.mark.slow
def test_cli_activations(
    tmp_path: Path, chelsea: np.ndarray, capsys: pytest.CaptureFixture[str], resnet18_bundle
) -> None:
    from safetensors.torch import save_file

    img = tmp_path / "cat.png"
    Image.fromarray(chelsea).save(img)
    weights = tmp_path / "r18.safetensors"
    save_file({k: v.contiguous() for k, v in resnet18_bundle.model.state_dict().items()}, str(weights))
    out = tmp_path / "out"
    args = [
        "activations",
        str(img),
        "--model",
        "resnet18",
        "--weights",
        str(weights),
        "--layers",
        "layer1,layer3",
        "--max-channels",
        "8",
        "--out",
        str(out),
        "--json",
    ]
    assert main(args) == 0
    res = json.loads(capsys.readouterr().out)
    assert [r["layer"] for r in res["layers"]] == ["layer1", "layer3"]
    for r in res["layers"]:
        assert Path(r["figure"]).is_file() and len(r["top_channels"]) == 8
    assert res["layers"][1]["output_shape"] == [14, 14, 256]
    first = (out / "act_layer1.png").read_bytes()
    assert main(args) == 0  # deterministic output
    capsys.readouterr()
    assert (out / "act_layer1.png").read_bytes() == first
    # bad inputs: one error line, exit 2 (after the one random-weights warning line: no --weights here)
    assert main(["activations", str(img), "--model", "resnet18", "--layers", "layer9", "--out", str(out)]) == 2
    warn, err = capsys.readouterr().err.splitlines(keepends=True)
    assert warn.startswith("WARNING: model 'resnet18' has RANDOM weights")
    assert err.startswith("error:") and "did you mean" in err
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    assert main(["activations", str(bad), "--model", "resnet18", "--weights", str(weights), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "bad.jpg" in err and err.count("\n") == 1


def test_channels_last_maps_become_nchw() -> None:
    """Regression: a (N, H, W, C) map (ConvNeXt/Swin blocks) was drawn and ranked as if H were channels."""
    from torchvision.ops import Permute

    from convlens.inspect.activations import to_nchw

    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 6, 3, stride=2), Permute([0, 2, 3, 1]), nn.LayerNorm(6), Permute([0, 3, 1, 2]), nn.ReLU()
    )
    x = torch.rand(2, 3, 15, 11)
    acts = get_activations(net, x, ["0", "2", "4"])
    fixed = to_nchw(net, x, acts)
    assert acts["2"].shape == (2, 7, 5, 6) and fixed["2"].shape == (2, 6, 7, 5)
    assert torch.equal(fixed["2"], acts["2"].permute(0, 3, 1, 2))
    assert fixed["0"] is acts["0"] and fixed["4"] is acts["4"]  # NCHW maps untouched
    st = activation_stats(fixed)
    assert st[1].output_shape == (7, 5, 6) and len(st[1].top_channels) == 6
    assert hook_count(net) == 0


def test_stages_inside_a_list_is_one_per_stage_too() -> None:
    """Regression: `--layers stages,layer1` gave only the last stage + layer1, while `--layers stages`
    gives one layer per stage."""
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 4, 3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 2, 1),
    )
    x = torch.rand(1, 3, 20, 20)
    alone = list(get_activations(net, x, "stages"))
    assert len(alone) > 1
    mixed = list(get_activations(net, x, ["stages", "3"]))
    assert set(alone) <= set(mixed) and "3" in mixed


class _Reused(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.shared = nn.Conv2d(4, 4, 3, padding=1)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shared(self.pool(self.shared(self.stem(x))))


def test_name_hash_k_picks_one_call_of_a_reused_module() -> None:
    """Regression: only the last call of a module used twice could be inspected (summary lists 'shared #0')."""
    torch.manual_seed(0)
    net = _Reused()
    x = torch.rand(1, 3, 8, 8)
    acts = get_activations(net, x, ["shared", "shared#0", "shared #1"])
    assert list(acts) == ["shared", "shared#0", "shared#1"]
    assert acts["shared#0"].shape == (1, 4, 8, 8) and acts["shared#1"].shape == (1, 4, 4, 4)
    with torch.no_grad():
        assert torch.allclose(acts["shared#0"], net.shared(net.stem(x)))
    assert torch.equal(acts["shared"], acts["shared#1"])
    with pytest.raises(LayerError, match="ran 2 time"):
        get_activations(net, x, "shared#2")
    with pytest.raises(LayerError, match="did you mean"):
        get_activations(net, x, "sharred#0")
    assert hook_count(net) == 0


@pytest.mark.slow
def test_cli_activations_draws_vit_token_layers_on_their_patch_grid(
    tmp_path: Path, chelsea: np.ndarray, capsys: pytest.CaptureFixture[str]
) -> None:
    """`activations --model vit_tiny_patch16_224` wrote nothing: its stages are (N, 197, 192) tokens.
    Through the one layout conversion they are (192, 14, 14) maps, drawn and ranked per feature."""
    img = tmp_path / "cat.png"
    Image.fromarray(chelsea).save(img)
    args = ["activations", str(img), "--model", "vit_tiny_patch16_224", "--layers", "blocks.11,auto"]
    assert main([*args, "--max-channels", "4", "--out", str(tmp_path / "o"), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["layers"]
    assert [r["layer"] for r in rows] == ["blocks.11", "blocks.11.norm1"]
    for r in rows:
        assert r["output_shape"] == [14, 14, 192] and Path(r["figure"]).is_file()
