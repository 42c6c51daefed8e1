"""Blocks: shapes from real forwards, params against the modules, MACs against a hook count,
receptive fields against gradients, the residual identity, bad input."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from convlens.blocks import (
    Conv1x1,
    Inception,
    PlainBlock,
    ResidualBlock,
    block_cost,
    conv1x1_comparison,
    inception_comparison,
)
from convlens.errors import InputError


def _measured(block: nn.Module, hwc: tuple[int, int, int]) -> tuple[tuple[int, int, int], int, int]:
    """Output shape (H, W, C), parameter count and conv MACs counted from a real forward (hooks via
    convlens.hooks.capture: every conv's output shape times its weight count)."""
    from convlens.hooks import capture

    convs = {name: m for name, m in block.named_modules() if isinstance(m, nn.Conv2d)}
    with torch.no_grad(), capture(block.eval(), convs) as cap:
        y = cap.run(torch.zeros(1, hwc[2], hwc[0], hwc[1]))
    # H_out W_out F (C/g) kh kw per conv
    macs = sum(cap.activations[n].shape[2] * cap.activations[n].shape[3] * m.weight.numel() for n, m in convs.items())
    return (y.shape[2], y.shape[3], y.shape[1]), sum(p.numel() for p in block.parameters()), macs


def _rf_by_gradient(block: nn.Module, c: int, size: int = 33) -> int:
    """Extent of input pixels that influence the centre output pixel (empirical receptive field)."""
    block = block.eval()
    torch.manual_seed(0)
    for p in block.parameters():  # positive weights: no accidental cancellation of a tap
        p.data.uniform_(0.1, 1.0)
    x = torch.rand(1, c, size, size, requires_grad=True)
    y = block(x)
    y[0, :, y.shape[2] // 2, y.shape[3] // 2].sum().backward()
    rows = (x.grad[0].abs().sum(dim=(0, 2)) > 0).nonzero()
    return int(rows.max() - rows.min() + 1)


def test_inception_3a_defaults_match_paper():
    c = inception_comparison((28, 28, 192))
    assert c.output == (28, 28, 256)  # GoogLeNet Table 1, inception (3a)
    assert [b.output[2] for b in c.branches] == [64, 128, 32, 32]
    assert [b.receptive_field for b in c.branches] == [1, 3, 5, 3]  # the paper's 5x5 branch
    assert c.naive.output == (28, 28, 416)
    # weights by hand (Table 1 prints ~159K for (3a); the sum of its own widths gives 163,328); + biases
    weights = 192 * 64 + (192 * 96 + 96 * 128 * 9) + (192 * 16 + 16 * 32 * 25) + 192 * 32
    assert c.params == weights + (64 + 96 + 128 + 16 + 32 + 32)
    assert c.mac_saving == pytest.approx(c.naive.macs / c.reduced.macs) and c.mac_saving > 2


@pytest.mark.parametrize("reduce", [True, False])
def test_inception_cost_matches_module(reduce):
    blk = Inception(40, 8, 6, 12, 3, 5, 7, reduce=reduce)
    hwc = (9, 11, 40)
    cost = block_cost(blk, hwc)
    assert (cost.output, cost.params, cost.macs) == _measured(blk, hwc)


@pytest.mark.slow
@given(
    cin=st.integers(1, 12),
    cout=st.integers(1, 12),
    stride=st.integers(1, 3),
    kind=st.sampled_from(["basic", "bottleneck"]),
    norm=st.booleans(),
    size=st.integers(5, 12),
)
def test_residual_and_plain_cost_match_module(cin, cout, stride, kind, norm, size):
    hwc = (size, size + 1, cin)
    for blk in (
        ResidualBlock(cin, cout, stride, kind=kind, norm=norm),
        PlainBlock(cin, cout, stride, kind=kind, norm=norm),
    ):
        cost = block_cost(blk, hwc)
        assert (cost.output, cost.params, cost.macs) == _measured(blk, hwc)


def test_projection_shortcut_only_when_shape_changes():
    assert len(ResidualBlock(16, 16).branches["shortcut"]) == 0
    proj = ResidualBlock(16, 32).branches["shortcut"]
    assert isinstance(proj[0], nn.Conv2d) and proj[0].kernel_size == (1, 1)
    strided = ResidualBlock(16, 16, stride=2).branches["shortcut"]
    assert strided[0].stride == (2, 2)


def test_residual_is_plain_plus_identity():
    torch.manual_seed(0)
    res = ResidualBlock(8, norm=False)
    plain = PlainBlock(8, norm=False)
    plain.branches["main"].load_state_dict(res.branches["residual"].state_dict())
    x = torch.randn(2, 8, 6, 6)
    fx = plain.branches["main"](x)
    torch.testing.assert_close(res(x), torch.relu(fx + x))
    torch.testing.assert_close(plain(x), torch.relu(fx))
    # a residual block whose last conv is zero is the identity on non-negative inputs
    last = [m for m in res.branches["residual"] if isinstance(m, nn.Conv2d)][-1]
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    xp = x.relu()
    torch.testing.assert_close(res(xp), xp)


@pytest.mark.parametrize(
    "block, c",
    [
        (Inception(6, 2, 2, 3, 2, 3, 2), 6),
        (Inception(6, 2, 2, 3, 2, 3, 2, reduce=False), 6),
        (ResidualBlock(3, 4, stride=2, norm=False), 3),
        (PlainBlock(3, 4, kind="bottleneck", norm=False), 3),
        (Conv1x1(3, 5), 3),
    ],
)
def test_receptive_field_matches_gradient(block, c):
    cost = block_cost(block, (33, 33, c))
    assert cost.receptive_field == _rf_by_gradient(block, c)


def test_conv1x1_vs_3x3():
    c = conv1x1_comparison((28, 28, 64), 32)
    assert c.output == (28, 28, 32) and c.conv3x3.output == (28, 28, 32)
    assert c.params == 64 * 32 + 32 and c.macs == 28 * 28 * 64 * 32
    assert c.mac_ratio == pytest.approx(9.0)
    assert c.receptive_field == 1 and c.conv3x3.receptive_field == 3


def test_bad_input():
    with pytest.raises(InputError, match="positive"):
        Inception(0)
    with pytest.raises(InputError, match="kind"):
        ResidualBlock(4, kind="wide")
    with pytest.raises(InputError, match="expects"):
        ResidualBlock(4)(torch.zeros(1, 3, 5, 5))
    with pytest.raises(InputError, match=r"\(H, W, C\)"):
        inception_comparison((28, 28))
    with pytest.raises(InputError, match="input channels"):
        block_cost(Inception(192), (28, 28, 64))
    with pytest.raises(InputError, match="filters"):
        conv1x1_comparison((28, 28, 64), 0)
    with pytest.raises(InputError, match="convlens.blocks"):
        block_cost(nn.Conv2d(3, 3, 3), (8, 8, 3))
    odd = nn.Module()
    odd.branches, odd.merge = nn.ModuleDict({"a": nn.Sequential(nn.Conv2d(3, 3, 5))}), "single"
    with pytest.raises(InputError, match="larger"):
        block_cost(odd, (3, 3, 3))  # a 5x5 kernel without padding does not fit a 3x3 input


def test_cli_blocks(capsys):
    import json

    from convlens.cli import main

    assert main(["blocks", "inception", "--input", "28x28x192", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["output"] == [28, 28, 256] and out["naive"]["output"] == [28, 28, 416]
    assert out["macs"] == out["reduced"]["macs"] and out["mac_saving"] > 2
    assert [b["receptive_field"] for b in out["branches"]] == [1, 3, 5, 3]
    assert main(["blocks", "conv1x1", "--input", "28x28x64", "--filters", "32", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["output"] == [28, 28, 32] and out["params"] == 2080 and out["macs"] == 28 * 28 * 64 * 32
    assert out["conv3x3"]["output"] == [28, 28, 32]
    assert main(["blocks", "inception", "--input", "28x28"]) == 2
    assert "HxWxC" in capsys.readouterr().err
    assert main(["blocks", "inception", "--widths", "1,2,3"]) == 2
    assert main(["blocks", "inception"]) == 0
    assert "2.37x fewer" in capsys.readouterr().out


def test_cli_inception_on_few_channels_says_more_not_fewer(capsys):
    # on a 3-channel input the 1x1 "reductions" (96, 16 wide) widen it: the saving factor is < 1
    from convlens.cli import main

    assert main(["blocks", "inception", "--input", "7x7x3"]) == 0
    out = capsys.readouterr().out
    assert "x fewer" not in out and "x more" in out and "widen" in out
    assert main(["blocks", "inception", "--input", "28x28x192"]) == 0
    assert "2.37x fewer" in capsys.readouterr().out


@pytest.mark.parametrize("cls", ["ResidualBlock", "PlainBlock"])
def test_both_blocks_validate_mid_channels(cls):
    import convlens.blocks as blocks

    with pytest.raises(InputError, match="mid_channels"):
        getattr(blocks, cls)(16, 16, kind="bottleneck", mid_channels=0)


# -- blocks residual | bottleneck | depthwise against torchvision's own blocks --------------------


def _torch_macs(module, shape):
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc, torch.no_grad():
        module.eval()(torch.zeros(1, shape[2], shape[0], shape[1]))
    return fc.get_total_flops() // 2  # convolution FLOPs = 2 * MACs


@pytest.mark.parametrize("h, c, f, stride", [(56, 64, 64, 1), (56, 64, 128, 2), (15, 32, 48, 2), (7, 512, 512, 1)])
def test_cli_residual_block_equals_torchvision_basicblock(h, c, f, stride, capsys):
    import json

    from torchvision.models.resnet import BasicBlock, conv1x1

    from convlens.cli import main

    down = None if stride == 1 and c == f else torch.nn.Sequential(conv1x1(c, f, stride), torch.nn.BatchNorm2d(f))
    ref = BasicBlock(c, f, stride, down)
    argv = ["blocks", "residual", "--input", f"{h}x{h}x{c}", "--filters", str(f), "--stride", str(stride), "--json"]
    assert main(argv) == 0
    d = json.loads(capsys.readouterr().out)
    out = ref.eval()(torch.zeros(1, c, h, h)).shape
    assert d["output"] == [out[2], out[3], f]
    assert d["params"] == sum(p.numel() for p in ref.parameters())
    assert d["macs"] == _torch_macs(ref, (h, h, c))
    assert d["receptive_field"] == 1 + 2 + 2 * stride  # 3x3 then 3x3 after the stride: 1 + (3-1)*1 + (3-1)*s


@pytest.mark.parametrize("h, c, planes, stride", [(56, 256, 64, 1), (56, 64, 64, 1), (28, 256, 128, 2)])
def test_cli_bottleneck_equals_torchvision_bottleneck(h, c, planes, stride, capsys):
    import json

    from torchvision.models.resnet import Bottleneck, conv1x1

    from convlens.cli import main

    f = planes * 4
    down = None if stride == 1 and c == f else torch.nn.Sequential(conv1x1(c, f, stride), torch.nn.BatchNorm2d(f))
    ref = Bottleneck(c, planes, stride, down)
    argv = ["blocks", "bottleneck", "--input", f"{h}x{h}x{c}", "--filters", str(f), "--stride", str(stride)]
    assert main([*argv, "--mid", str(planes), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["params"] == sum(p.numel() for p in ref.parameters())
    assert d["macs"] == _torch_macs(ref, (h, h, c))
    assert d["output"][:2] == list(ref.eval()(torch.zeros(1, c, h, h)).shape[2:]) and d["receptive_field"] == 3


def test_cli_depthwise_block_equals_torchvision_conv_norm_activation(capsys):
    import json

    from torchvision.ops.misc import Conv2dNormActivation

    from convlens.cli import main

    c, f, h = 32, 64, 28
    ref = torch.nn.Sequential(Conv2dNormActivation(c, c, 3, 2, groups=c), Conv2dNormActivation(c, f, 1))
    assert main(["blocks", "depthwise", "--input", f"{h}x{h}x{c}", "--filters", str(f), "--stride", "2", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["params"] == sum(p.numel() for p in ref.parameters())
    assert d["macs"] == _torch_macs(ref, (h, h, c)) == 14 * 14 * c * (9 + f)  # H W C (9 + F)
    assert d["output"] == [14, 14, f] and d["receptive_field"] == 3
    assert main(["blocks", "depthwise", "--input", "8x8x4", "--mid", "2"]) == 2
