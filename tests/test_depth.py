"""Depth profile: stage table against the model and the summary, spatial frequency, kernels, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from convlens.cli import main
from convlens.errors import InputError
from convlens.inspect.depth import depth_profile, depth_profile_image, spatial_frequency
from convlens.inspect.summary import summarize
from convlens.plot.inspect import depth_profile_figure, kernel_tiles


def test_resnet18_profile(resnet18_bundle) -> None:
    m = resnet18_bundle.model
    x = torch.rand(1, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    p = depth_profile(m, x)
    names = [s.name for s in p.stages]
    assert names[-4:] == ["layer1", "layer2", "layer3", "layer4"]
    # resolution falls, channels rise, field grows
    assert [s.spatial[0] for s in p.stages] == sorted((s.spatial[0] for s in p.stages), reverse=True)
    assert [s.channels for s in p.stages[-4:]] == [64, 128, 256, 512]
    s = summarize(m, (3, 96, 96))
    for st in p.stages:
        rec = s.layer(st.name)
        assert st.receptive_field == rec.receptive_field and st.activations == int(np.prod(rec.output_shape))
    # every parameter lands in exactly one stage or the head
    assert sum(st.weights for st in p.stages) + p.head_weights == s.total_params
    assert p.stages[-1].weights == sum(q.numel() for q in m.layer4.parameters())
    assert sum(st.macs for st in p.stages) <= s.total_macs
    assert p.first_conv == "conv1" and torch.equal(p.kernels, m.conv1.weight.detach())


def _leaf_span_macs(summary, stage_names: list[str]) -> list[int]:
    """Summary MACs of the leaf layers each stage covers: after the previous stage's last leaf, up to its own."""
    names = [r.name for r in summary.layers]
    leaves = [r for r in summary.layers if not any(n.startswith(r.name + ".") for n in names)]
    out, start = [], 0
    for st in stage_names:
        end = max(i for i, r in enumerate(leaves) if r.name == st or r.name.startswith(st + ".")) + 1
        out.append(sum(r.macs for r in leaves[start:end]))
        start = end
    return out


def test_stage_macs_equal_summary_and_torchinfo(resnet18_bundle) -> None:
    """Each stage's MACs are exactly those of its layers: the summary's per-layer MACs, and independently
    torchinfo's conv/linear MACs (BatchNorm, ReLU, pooling and the residual add count 0 MACs here)."""
    import torchinfo

    m = resnet18_bundle.model
    x = torch.rand(1, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    p = depth_profile(m, x)
    s = summarize(m, (3, 96, 96))
    names = [st.name for st in p.stages]
    assert [st.macs for st in p.stages] == _leaf_span_macs(s, names)
    for st in p.stages[-4:]:
        assert st.macs == s.layer(st.name).macs
    info = torchinfo.summary(m, input_size=(1, 3, 96, 96), verbose=0, device="cpu")
    conv_macs = [(r.var_name, r.macs) for r in info.summary_list if r.class_name in ("Conv2d", "Linear")]
    conv_only = [mac for name, mac in conv_macs if name != "fc"]
    assert sum(st.macs for st in p.stages) == sum(conv_only)  # the head (fc) lies after the last stage
    # layer4 by hand: 3x3 convs 256->512 stride 2 at 3x3 out, 512->512 x3, 1x1 downsample 256->512
    assert p.stages[-1].macs == 3 * 3 * 512 * (256 * 9 + 3 * 512 * 9 + 256)


def test_stage_macs_equal_summary_lite0(lite0) -> None:
    """The same on the embedded EfficientNet-Lite0 (depthwise convs, stages of several blocks)."""
    m = lite0.model
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    p = depth_profile(m, x)
    s = summarize(m, (3, 64, 64))
    assert [st.macs for st in p.stages] == _leaf_span_macs(s, [st.name for st in p.stages])
    assert 0 < sum(st.macs for st in p.stages) < s.total_macs


def test_spatial_frequency_orders_smooth_and_sharp_maps() -> None:
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    smooth = torch.cos(2 * np.pi * xx / 32)[None]  # 1/32 cycles per pixel
    sharp = torch.cos(2 * np.pi * 0.375 * (xx + yy))[None]
    f_s, h_s = spatial_frequency(smooth)
    f_x, h_x = spatial_frequency(sharp)
    assert f_s == pytest.approx(1 / 32)
    assert h_s == pytest.approx(0.0, abs=1e-9) and h_x == pytest.approx(1.0)
    assert f_x > 0.25
    assert spatial_frequency(torch.ones(2, 8, 8)) == (None, None)
    assert spatial_frequency(torch.rand(2, 3, 3)) == (None, None)
    with pytest.raises(InputError):
        spatial_frequency(torch.rand(8, 8))


def test_figures(resnet18_bundle) -> None:
    p = depth_profile(resnet18_bundle.model, torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1)))
    fig = depth_profile_figure(p)
    assert len(fig.axes) >= 3 + len(p.stages)
    assert len(kernel_tiles(p.kernels).axes) == 64
    with pytest.raises(InputError):
        kernel_tiles(torch.rand(3, 3, 3))


@pytest.mark.slow
def test_cli_depth_profile_lite0(tmp_path: Path, chelsea: np.ndarray, capsys: pytest.CaptureFixture[str]) -> None:
    img = tmp_path / "cat.png"
    Image.fromarray(chelsea).save(img)
    assert main(["depth-profile", str(img), "--out", str(tmp_path / "dp"), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    st = res["stages"]
    assert [s["name"] for s in st] == ["blocks.0", "blocks.1", "blocks.2", "blocks.4", "blocks.6"]
    assert [s["spatial"][0] for s in st] == [112, 56, 28, 14, 7]
    acts = [s["activations"] for s in st]
    weights = [s["weights"] for s in st]
    assert acts == sorted(acts, reverse=True) and weights == sorted(weights)  # the trade-off, measured
    freq = [s["mean_frequency_input"] for s in st]
    assert freq == sorted(freq, reverse=True)  # deeper maps vary more slowly over the image
    assert res["first_conv"] == "conv_stem"
    assert sum(weights) + res["head_weights"] == 4652008
    for f in res["figures"].values():
        assert Path(f).is_file()
    assert main(["depth-profile", str(tmp_path / "missing.png"), "--out", str(tmp_path / "dp")]) == 2
    assert capsys.readouterr().err.startswith("error:")


class _Tokens(nn.Module):
    """(N, C, H, W) -> (N, H*W, C) tokens, as ViT's patch embedding does."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(2).transpose(1, 2)


def test_channels_last_and_token_stages() -> None:
    """Regression: (N, H, W, C) stages (Swin, ConvNeXt blocks) reported W as channels and took the FFT
    over (W, C); (N, L, D) token stages reported the token count L as channels."""
    from torchvision.ops import Permute

    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 6, 3, stride=2),
        Permute([0, 2, 3, 1]),
        nn.LayerNorm(6),
        nn.Linear(6, 10),
        Permute([0, 3, 1, 2]),
        _Tokens(),
        nn.Linear(10, 5),
    )
    x = torch.rand(1, 3, 17, 25)
    p = depth_profile(net, x, ["0", "3", "6"])
    by = {s.name: s for s in p.stages}
    assert (by["0"].spatial, by["0"].channels) == ((8, 12), 6)
    assert (by["3"].spatial, by["3"].channels) == ((8, 12), 10)
    assert by["3"].activations == 8 * 12 * 10
    with torch.no_grad():
        nchw = net[:5](x)[0]  # the same map in (C, H, W)
    assert p.maps["3"].shape == (10, 8, 12) and torch.allclose(p.maps["3"], nchw)
    assert by["3"].mean_frequency == pytest.approx(spatial_frequency(nchw)[0])
    assert by["6"].channels == 5
    # a token sequence (N, L, D) stays one: no grid of its own, D channels, L·D activations, no frequencies
    assert (by["6"].spatial, by["6"].activations, by["6"].mean_frequency) == ((1, 1), 8 * 12 * 5, None)


def test_cli_table_columns_stay_aligned_with_long_stage_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Regression: DenseNet's 'features.denseblock1' pushed its row's columns out of line."""
    (tmp_path / "net.py").write_text(
        "import torch\n"
        "class Net(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.a_rather_long_stage_name = torch.nn.Conv2d(3, 4, 3, stride=2)\n"
        "        self.s2 = torch.nn.Conv2d(4, 8, 3, stride=2)\n"
        "    def forward(self, x):\n"
        "        return self.s2(self.a_rather_long_stage_name(x)).mean((2, 3))\n"
        "def make():\n"
        "    return Net()\n"
    )
    img = tmp_path / "x.png"
    Image.fromarray(np.full((40, 40, 3), 128, np.uint8)).save(img)
    assert (
        main(["depth-profile", str(img), "--model", f"{tmp_path / 'net.py'}:make", "--out", str(tmp_path / "dp")]) == 0
    )
    lines = capsys.readouterr().out.splitlines()
    header, rows = lines[0], lines[1:3]
    assert [r.split()[0] for r in rows] == ["a_rather_long_stage_name", "s2"]
    c_col = header.index(" C ") + 1  # channels are right-aligned under 'C'
    assert [r[c_col - 1 : c_col + 2] for r in rows] == [" 4 ", " 8 "]


def test_spatial_frequency_by_hand_at_the_smallest_size_and_with_two_frequencies() -> None:
    """Hand spectra. A 4x4 map (the smallest analysed) of stripes a·cos(2π·0.25·j) = a·[1, 0, -1, 0] has all
    its power at |f| = 0.25, which is not above 0.25: (0.25, 0.0), however faint (a = 0.01: total power
    16 · 8e-4 = 0.0128). Two frequencies 2·cos(2π j/8) + cos(2π·3j/8) have powers 4 : 1, so the mean is
    (4·1/8 + 1·3/8) / 5 = 0.175 and 1/5 = 0.2 of the power lies above 0.25; a constant offset per channel
    (+3, -3) is removed channel by channel and changes nothing. The maps are in double precision."""
    for shape in ((4, 4), (4, 8), (8, 4)):
        h, w = shape
        stripes = 0.01 * torch.cos(2 * np.pi * 0.25 * torch.arange(w, dtype=torch.float64)).repeat(h, 1)[None]
        f, hi = spatial_frequency(stripes)
        assert f == pytest.approx(0.25, rel=1e-9) and hi == pytest.approx(0.0, abs=1e-12), shape
    j8 = torch.arange(8, dtype=torch.float64)
    two = (2 * torch.cos(2 * np.pi * j8 / 8) + torch.cos(2 * np.pi * 3 * j8 / 8)).repeat(8, 1)
    f, hi = spatial_frequency(torch.stack([two + 3, -two - 3]))
    assert f == pytest.approx(0.175, rel=1e-9) and hi == pytest.approx(0.2, rel=1e-9)
    # 6x6: stripes along H and along W, both at 1/6 cycle per pixel; computed in double precision
    i6 = torch.arange(6, dtype=torch.float64)
    grid = torch.cos(2 * np.pi * i6 / 6)[:, None] + 0.5 * torch.cos(2 * np.pi * i6 / 6)[None, :]
    f, hi = spatial_frequency(grid[None])
    assert f == pytest.approx(1 / 6, rel=1e-12) and hi == pytest.approx(0.0, abs=1e-12)
    rng = torch.Generator().manual_seed(0)
    for small in ((1, 3, 8), (1, 8, 3), (2, 3, 3)):  # under 4 pixels along either axis: no spectrum
        assert spatial_frequency(torch.rand(small, generator=rng)) == (None, None)


def test_depth_profile_image_names_the_model_image_and_weights(resnet18_bundle) -> None:
    """The pipeline for one image: preprocessed to 224x224 for ResNet-18 (random weights, not pretrained),
    profiled at the layers asked for. By hand: layer1 is 56x56x64 = 200704 activations and holds the stem
    (conv1 3·64·7·7 = 9408, bn1 128) and its own 4 convs 64·64·9 = 36864 and 4 BNs of 128: 157504 weights;
    layer3 (14x14x256) holds layer2 (525568) and layer3 (2099712) = 2625280; the rest of ResNet-18's
    11689512 parameters are the head's."""
    img = np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    p = depth_profile_image(resnet18_bundle, img, ["layer1", "layer3"], image_name="cat.png")
    assert (p.model, p.image, p.pretrained, p.input_shape) == ("resnet18", "cat.png", False, (224, 224, 3))
    got = [(s.name, s.spatial, s.channels, s.activations, s.weights) for s in p.stages]
    assert got == [("layer1", (56, 56), 64, 200704, 157504), ("layer3", (14, 14), 256, 50176, 2625280)]
    assert p.head_weights == 11689512 - 157504 - 2625280
    plain = depth_profile_image(resnet18_bundle, img, ["layer4"])
    assert plain.image == "" and plain.pretrained is False and plain.to_dict()["image"] == ""
    assert [(s.name, s.spatial, s.channels) for s in plain.stages] == [("layer4", (7, 7), 512)]


def _numpy_spatial_frequency(maps: np.ndarray) -> tuple[float, float]:
    """The docstring's formula, independently in numpy: per-channel mean removed, |FFT|² summed over channels."""
    m = maps - maps.mean(axis=(1, 2), keepdims=True)
    p = (np.abs(np.fft.fft2(m)) ** 2).sum(0)
    r = np.hypot(np.fft.fftfreq(m.shape[1])[:, None], np.fft.fftfreq(m.shape[2])[None, :])
    return float((p * r).sum() / p.sum()), float(p[r > 0.25].sum() / p.sum())


def test_spatial_frequency_matches_numpy_and_has_an_inclusive_noise_floor() -> None:
    """Random maps with per-channel offsets (odd and even, square and not) against numpy to float64 precision.
    The floor: +a and -a two pixels apart on a 4x4 map have total power 16·2a² = 32a² (Parseval), exactly the
    1e-20 floor for this a (the 4-point FFT of ±a is exact), reported as no variation. Twice a is above it:
    |F|² ∝ |1 - (-1)^v|² puts all power at fx = ±0.25, spread evenly over fy = 0, ±0.25, -0.5: radii 0.25,
    2 x sqrt(1/8) and sqrt(5/16), three of the four above 0.25."""
    rng = np.random.default_rng(0)
    for shape in [(3, 7, 9), (2, 12, 5), (1, 4, 4)]:
        maps = rng.normal(size=shape) + 10 * rng.normal(size=(shape[0], 1, 1))
        got = spatial_frequency(torch.from_numpy(maps))
        assert got == pytest.approx(_numpy_spatial_frequency(maps), rel=1e-12, abs=0), shape
    a = 1.7677669529663688e-11
    pair = torch.zeros(1, 4, 4, dtype=torch.float64)
    pair[0, 0, 0], pair[0, 0, 2] = a, -a
    assert float(torch.fft.fft2(pair).abs().pow(2).sum()) == 1e-20
    assert spatial_frequency(pair) == (None, None)
    mean_r = (0.25 + 2 * np.sqrt(1 / 8) + np.sqrt(5 / 16)) / 4  # = 0.3790...
    assert spatial_frequency(2 * pair) == pytest.approx((mean_r, 0.75), rel=1e-12)


class _CalledOutOfOrder(nn.Module):
    """Registered a, b, act, head; called b -> act -> a -> head. The head only takes a 9x9 image (7x7 after b),
    so a probe at any other size fails and only the real input size finds the conv that reads the image."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 3, 1)
        self.b = nn.Conv2d(3, 3, 3)
        self.act = nn.ReLU()
        self.head = nn.Linear(3 * 7 * 7, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.a(self.act(self.b(x))).flatten(1))


def _frequencies_numpy(maps: np.ndarray) -> tuple[float, float]:
    """Independent numpy version of the documented definition: per-channel mean removed, power |FFT2|^2 summed
    over channels, radial frequency sqrt(fy^2 + fx^2) in cycles/pixel; (power-weighted mean, share above 0.25)."""
    m = maps.astype(np.float64) - maps.mean(axis=(1, 2), keepdims=True)
    power = (np.abs(np.fft.fft2(m)) ** 2).sum(0)
    fy, fx = np.meshgrid(np.fft.fftfreq(maps.shape[1]), np.fft.fftfreq(maps.shape[2]), indexing="ij")
    r = np.hypot(fy, fx)
    return float((power * r).sum() / power.sum()), float(power[r > 0.25].sum() / power.sum())


def test_depth_profile_every_field_by_hand_on_a_net_called_out_of_registration_order() -> None:
    """A batch of 3 (only the first image is profiled) through b = Conv(3->3, 3x3), a ReLU, a = Conv(3->3, 1x1)
    and a linear head. By hand: b has 3·3·3·3 + 3 = 84 weights and 7·7 outputs x 3 channels x 27 MACs = 3969
    MACs; the ReLU 0 and 0; a has 3·3 + 3 = 12 weights and 147 x 3 = 441 MACs; the head (147 -> 2) 147·2 + 2 =
    296 weights and 294 MACs, a flat output (spatial 1x1, no jump, no frequencies) that sees the whole 9x9
    image. Nothing is left for a head after the last stage (0). The conv that reads the image is b, the first
    one called, although a is registered first."""
    torch.manual_seed(0)
    net = _CalledOutOfOrder().eval()
    x = torch.rand(3, 3, 9, 9, generator=torch.Generator().manual_seed(1))
    p = depth_profile(net, x, ["b", "act", "a", "head"])
    assert (p.model, p.input_shape, p.head_weights, p.first_conv) == ("_CalledOutOfOrder", (9, 9, 3), 0, "b")
    assert torch.equal(p.kernels, net.b.weight.detach())
    rows = [
        (s.name, s.spatial, s.channels, s.receptive_field, s.jump, s.activations, s.weights, s.macs) for s in p.stages
    ]
    assert rows == [
        ("b", (7, 7), 3, (3, 3), (1, 1), 147, 84, 3969),
        ("act", (7, 7), 3, (3, 3), (1, 1), 147, 0, 0),
        ("a", (7, 7), 3, (3, 3), (1, 1), 147, 12, 441),
        ("head", (1, 1), 2, (9, 9), None, 2, 296, 294),
    ]
    head = p.stages[-1]
    assert (head.mean_frequency, head.high_frequency, head.mean_frequency_input) == (None, None, None)
    with torch.no_grad():
        b = net.b(x[:1])[0]
        maps = {"b": b, "act": torch.relu(b), "a": net.a(torch.relu(b)[None])[0]}
    for s in p.stages[:3]:
        mean, high = _frequencies_numpy(maps[s.name].numpy())
        assert s.mean_frequency == pytest.approx(mean, rel=1e-9)
        assert s.high_frequency == pytest.approx(high, rel=1e-9)
        assert s.mean_frequency_input == pytest.approx(mean, rel=1e-9)  # jump 1: the same in input pixels
        assert torch.equal(p.maps[s.name], maps[s.name])
    assert depth_profile(net, x, ["a"], name="my net").model == "my net"


def test_depth_profile_of_a_stage_that_is_the_input_itself() -> None:
    """An identity first layer outputs the input: its field is one pixel, its jump 1, no weights, no MACs."""
    net = nn.Sequential(nn.Identity(), nn.Conv2d(3, 2, 3))
    p = depth_profile(net, torch.rand(1, 3, 9, 9), ["0", "1"])
    rows = [(s.name, s.spatial, s.receptive_field, s.jump, s.weights, s.macs) for s in p.stages]
    # the conv: 2·3·3·3 + 2 = 56 weights, 7·7·2 outputs x 27 MACs = 2646
    assert rows == [("0", (9, 9), (1, 1), (1, 1), 0, 0), ("1", (7, 7), (3, 3), (1, 1), 56, 2646)]


@pytest.mark.parametrize("x", [np.zeros((1, 3, 8, 8), np.float32), [[1.0, 2.0]], torch.zeros(3, 8, 8)])
def test_depth_profile_refuses_what_is_not_an_image_batch(x: object) -> None:
    net = nn.Sequential(nn.Conv2d(3, 2, 3))
    with pytest.raises(InputError, match=r"^x must be an \(N, C, H, W\) tensor, got "):
        depth_profile(net, x)  # type: ignore[arg-type]


class _WithConstant(nn.Module):
    """A stage whose output does not depend on the image (a learned-constant branch): it sees no pixel."""

    def __init__(self) -> None:
        super().__init__()
        self.c = nn.Conv2d(3, 3, 3)
        self.k = _Ones()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c(x) + self.k(x)


class _Ones(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ones(1, 3, 7, 7)


def test_depth_profile_of_a_stage_that_sees_no_pixel() -> None:
    p = depth_profile(_WithConstant(), torch.rand(1, 3, 9, 9), ["c", "k"])
    k = p.stages[1]
    assert (k.spatial, k.channels, k.activations, k.weights, k.macs) == ((7, 7), 3, 147, 0, 0)
    assert (k.receptive_field, k.jump, k.mean_frequency, k.high_frequency) == (None, None, None, None)


class _KerasConv(nn.Module):
    """A Keras-style layer: its weights live in a ParameterDict (never called itself), used by F.conv2d."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.ParameterDict(
            {"kernel": nn.Parameter(torch.randn(4, 3, 3, 3)), "bias": nn.Parameter(torch.zeros(4))}
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.conv2d(x, self.w["kernel"], self.w["bias"])


class _Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = _KerasConv()
        self.post = nn.Conv2d(4, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.post(self.inner(x))


class _Bookkeeping(nn.Module):
    """Root parameter, nested Keras-style weights, a conv called twice, a module that never runs, a head."""

    def __init__(self) -> None:
        super().__init__()
        self.token = nn.Parameter(torch.full((1, 3, 1, 1), 0.5))
        self.block = _Block()
        self.tied = nn.Conv2d(4, 4, 1)
        self.act = nn.ReLU()
        self.unused = nn.Linear(10, 10)
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.tied(self.block(x + self.token))
        return self.head(self.tied(self.act(y)).mean((2, 3)))


def test_depth_profile_weights_go_to_the_stage_of_their_first_use() -> None:
    """By hand, on a 9x9 image: the root parameter (3 values) counts in the first stage; the Keras-style kernel
    4·3·3·3 + 4 = 112 in 'block.inner' (its ParameterDict is never called: the weights belong to the module
    that holds it); 'block.post' 4·4 + 4 = 20 in 'block'; 'tied' (20, called before and after the ReLU)
    once, in the first stage that ends after its FIRST call ('act'); nothing for 'tied''s own stage; the
    module that never runs is not counted; the head 4·2 + 2 = 10. MACs: 7·7·4 outputs x 27 = 5292 for the
    3x3 conv, 7·7·4 x 4 = 784 for each 1x1 call. There is no nn.Conv2d reading the image: no first conv."""
    torch.manual_seed(0)
    p = depth_profile(_Bookkeeping(), torch.rand(1, 3, 9, 9), ["block.inner", "block", "act", "tied"])
    assert [(s.name, s.weights, s.macs) for s in p.stages] == [
        ("block.inner", 3 + 112, 5292),
        ("block", 20, 784),
        ("act", 20, 784),
        ("tied", 0, 784),
    ]
    assert (p.head_weights, p.first_conv, p.kernels) == (10, None, None)


class _Stored(nn.Module):
    """Returns a stored map: its output comes from no traced operation, so it has no place in the graph."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("m", torch.rand(1, 4, 7, 7, generator=torch.Generator().manual_seed(0)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.m


class _UsesStored(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c = nn.Conv2d(3, 4, 3)
        self.stored = _Stored()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c(x) * self.stored(x)


def test_depth_profile_of_a_stage_outside_the_traced_graph() -> None:
    """No receptive field or jump for a map the trace cannot place; its size, channels and (0) weights are
    still reported, and the conv's stage is unaffected (3·4·9 + 4 = 112 weights, 7·7·4 x 27 = 5292 MACs)."""
    p = depth_profile(_UsesStored(), torch.rand(1, 3, 9, 9), ["c", "stored"])
    by = {s.name: s for s in p.stages}
    stored = by["stored"]
    assert (stored.spatial, stored.receptive_field, stored.jump, stored.weights, stored.macs) == (
        (7, 7),
        None,
        None,
        0,
        0,
    )
    assert (by["c"].receptive_field, by["c"].weights, by["c"].macs) == ((3, 3), 112, 5292)
