"""Layer summary: shapes, params and MACs against torchinfo/torch; the embedded EfficientNet-Lite0; CLI."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from convlens.cli import main
from convlens.errors import InputError
from convlens.inspect.rf import receptive_field_empirical
from convlens.inspect.summary import hwc, summarize


def _chain() -> nn.Module:
    """A plain chain where torchinfo's MAC convention (weights x output positions) equals ours: no bias, no norm."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 5, stride=2, padding=2, bias=False),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=2, dilation=2, bias=False),
        nn.MaxPool2d(3, 2, ceil_mode=True),
        nn.Conv2d(16, 32, 3, groups=4, bias=False),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 10, bias=False),
    )


@pytest.mark.parametrize("size", [(3, 32, 32), (3, 37, 29)])
def test_chain_matches_torchinfo(size: tuple[int, int, int]) -> None:
    torchinfo = pytest.importorskip("torchinfo")
    net = _chain()
    s = summarize(net, size)
    ref = torchinfo.summary(net, input_size=(1, *size), verbose=0, depth=5)
    ref_layers = [li for li in ref.summary_list if li.depth >= 1]
    assert [r.name for r in s.layers] == [str(i) for i in range(len(net))]
    for mine, theirs in zip(s.layers, ref_layers, strict=True):
        assert mine.torch_shape == tuple(theirs.output_size), mine.name
        assert mine.params == theirs.num_params, mine.name
        assert mine.macs == theirs.macs, mine.name
    assert s.total_params == ref.total_params
    assert s.total_macs == ref.total_mult_adds


def test_params_trainable_frozen_and_unique(resnet18_bundle) -> None:
    model = resnet18_bundle.model
    s = summarize(model, (3, 64, 64))
    assert s.total_params == sum(p.numel() for p in model.parameters()) == resnet18_bundle.meta.num_params
    # freeze layer1: the split changes, the model's flags are restored afterwards
    flags = [p.requires_grad for p in model.parameters()]
    try:
        for p in model.layer1.parameters():
            p.requires_grad_(False)
        s2 = summarize(model, (3, 64, 64))
        assert s2.frozen_params == sum(p.numel() for p in model.layer1.parameters())
        assert s2.layer("layer1").params_frozen == s2.layer("layer1").params
    finally:
        for p, f in zip(model.parameters(), flags, strict=True):
            p.requires_grad_(f)
    # torchvision's published MAC count for ResNet-18 at 224: 1.81 GFLOPS (= GMACs in its convention)
    assert abs(summarize(model).total_macs / 1e9 - 1.814) < 0.01


def test_shared_module_counted_once() -> None:
    conv = nn.Conv2d(3, 3, 3, padding=1, bias=False)

    class Shared(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = conv

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(self.conv(x))

    s = summarize(Shared(), (3, 8, 8))
    rows = [r for r in s.layers if r.name == "conv"]
    assert [r.call for r in rows] == [0, 1]
    assert [r.receptive_field for r in rows] == [(3, 3), (5, 5)]
    assert s.total_params == 81
    assert s.total_macs == 2 * 8 * 8 * 3 * 3 * 9


def test_matmul_and_attention_macs() -> None:
    class Attn(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            t = x.flatten(2).transpose(1, 2)  # (1, HW, C)
            return torch.softmax(t @ t.transpose(1, 2), -1) @ t

    s = summarize(Attn(), (4, 3, 3))
    assert s.total_macs == 2 * 9 * 9 * 4

    class Windows(nn.Module):  # Swin-style: windows become the leading dim of a batch-1 trace
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            t = x.flatten(2).transpose(1, 2).reshape(2, 8, x.shape[1])  # (windows, tokens, C)
            return torch.bmm(t, t.transpose(1, 2))

    assert summarize(Windows(), (4, 4, 4)).total_macs == 2 * 8 * 8 * 4


@pytest.mark.slow
def test_efficientnet_lite0_summary(lite0) -> None:
    s = summarize(lite0.model, (3, 224, 224))
    assert s.total_params == lite0.meta.num_params
    stem = s.layer("conv_stem")
    assert stem.type == "Conv2dSame" and stem.kernel == (3, 3) and stem.stride == (2, 2)
    assert stem.output_shape == (112, 112, 32)
    assert s.layer("bn2").output_shape == (7, 7, 1280) and s.layer("bn2").jump == (32, 32)
    assert 0.38e9 < s.total_macs < 0.40e9  # timm lists tf_efficientnet_lite0 at 0.4 GMACs
    # TF "same" padding pads right/bottom only: check the geometry against the measurement
    s96 = summarize(lite0.model, (3, 96, 96))
    emp = receptive_field_empirical(lite0.model, "blocks.2", 96)
    rec = s96.layer("blocks.2")
    assert not emp.clipped
    assert emp.size == rec.receptive_field
    assert emp.center == tuple(st + u * j for st, u, j in zip(rec.start, emp.unit, rec.jump, strict=True))


def test_depth_filter_and_json_shape_order() -> None:
    s = summarize(_chain(), (3, 32, 32))
    d = s.to_dict(1)
    assert set(d) >= {"layers", "total_params", "total_macs"}
    first = d["layers"][0]
    assert {"name", "type", "output_shape", "params", "macs", "receptive_field", "jump"} <= set(first)
    assert first["output_shape"] == (16, 16, 8)
    assert s.to_dict(1, channels_first=True)["layers"][0]["output_shape"] == (8, 16, 16)
    assert hwc((1, 5)) == (5,)
    with pytest.raises(InputError):
        s.at_depth(0)


def test_cli_summary_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["summary", "--model", "resnet18", "--input", "64x64x3", "--depth", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    names = [r["name"] for r in out["layers"]]
    assert names[:4] == ["conv1", "bn1", "relu", "maxpool"] and "layer1.0" not in names
    l4 = out["layers"][names.index("layer4")]
    assert l4["output_shape"] == [2, 2, 512] and l4["receptive_field"] == [435, 435] and l4["jump"] == [32, 32]
    assert out["total_params"] == 11689512
    assert (
        main(["summary", "--model", "resnet18", "--input", "3x64x64", "--channels-first", "--depth", "1", "--json"])
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert out["layers"][names.index("layer4")]["output_shape"] == [512, 2, 2]


def test_cli_summary_table_and_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["summary", "--model", "resnet18", "--input", "64x64x3", "--depth", "1"]) == 0
    assert "layer4" in capsys.readouterr().out
    assert main(["summary", "--model", "resnet_18"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and err.count("\n") == 1
    assert main(["summary", "--model", "resnet18", "--input", "64x64"]) == 2
    assert main(["summary", "--model", "vgg11", "--input", "4x4x3"]) == 2
    assert "error:" in capsys.readouterr().err


def test_summary_leaves_a_training_model_untouched() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(inplace=True)).train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    s = summarize(net, (3, 9, 9))
    assert net.training and all(m.training for m in net.modules())
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # BN statistics not updated
    assert s.layer("2").receptive_field == (3, 3)  # in-place ReLU: same tensor, same field


def test_channels_last_maps_are_shown_hwc() -> None:
    """Regression: Swin/ConvNeXt-style (N, H, W, C) outputs were shown as 'W x C x H' (56x96x56)."""
    from torchvision.ops import Permute

    net = nn.Sequential(nn.Conv2d(3, 12, 4, stride=4), Permute([0, 2, 3, 1]), nn.LayerNorm(12), nn.Linear(12, 20))
    s = summarize(net, (3, 32, 24))
    assert s.layer("0").output_shape == (8, 6, 12)
    assert s.layer("1").output_shape == (8, 6, 12)
    assert s.layer("3").output_shape == (8, 6, 20)
    assert s.layer("3").torch_shape == (1, 8, 6, 20)
    cf = {d["name"]: d["output_shape"] for d in s.to_dict(channels_first=True)["layers"]}
    assert cf["0"] == (12, 8, 6) and cf["3"] == (20, 8, 6)


class _TokenBlock(nn.Module):
    """Swin-style: (N, H, W, C) -> tokens (N, H*W, C) -> Linear -> back to (N, H, W, C)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.mlp = nn.Linear(c, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, h, w, c = x.shape
        return self.mlp(x.reshape(n, h * w, c)).reshape(n, h, w, c)


class _Gate(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3), keepdim=True)


def test_channels_last_layout_survives_token_reshapes() -> None:
    """Regression: after a reshape to tokens and back (Swin blocks) the map was shown as 'W x C x H'."""
    from torchvision.ops import Permute

    net = nn.Sequential(nn.Conv2d(3, 12, 4, stride=4), Permute([0, 2, 3, 1]), _TokenBlock(12), _TokenBlock(12))
    s = summarize(net, (3, 32, 24))
    assert s.layer("2").output_shape == (8, 6, 12) and s.layer("3").output_shape == (8, 6, 12)
    gated = summarize(nn.Sequential(nn.Conv2d(3, 5, 3), _Gate()), (3, 9, 7))
    assert gated.layer("1").output_shape == (1, 1, 5)  # an NCHW gate stays 1x1xC


class _NdConvs(nn.Module):
    """ECA-style Conv1d gate, a Conv3d over (C, H, W) and 1-D/3-D transposed convs, with groups."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.eca = nn.Conv1d(1, 1, 3, padding=1, bias=False)
        self.c3 = nn.Conv3d(2, 4, 3, padding=1, groups=2)
        self.t1 = nn.ConvTranspose1d(8, 4, 3, stride=2, groups=2)
        self.t3 = nn.ConvTranspose3d(4, 2, 2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        g = torch.sigmoid(self.eca(y.mean((2, 3))[:, None]))[:, 0, :, None, None]
        v = self.c3((y * g).reshape(1, 2, 4, *y.shape[-2:]))
        a = self.t1(y.flatten(2))
        return self.t3(v).mean() + a.mean()


def test_1d_and_3d_convolutions_count_their_macs() -> None:
    """Regression: Conv1d/Conv3d (ECA gates, volume layers) and their transposes counted 0 MACs."""
    from torch.utils.flop_counter import FlopCounterMode

    net = _NdConvs().eval()
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        net(torch.zeros(1, 3, 6, 5))
    s = summarize(net, (3, 6, 5))
    assert s.total_macs == fc.get_total_flops() // 2
    assert s.layer("c3").macs == 4 * 4 * 6 * 5 * (2 // 2) * 27 and s.layer("eca").macs == 8 * 3


class _EinsumAttention(nn.Module):
    """torchvision MaxViT-style attention written with einsum (with an ellipsis)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.flatten(2).transpose(1, 2).reshape(1, 2, -1, x.shape[1] // 2)  # (B, heads, L, d)
        a = torch.einsum("b h i d, b h j d -> b h i j", t, t).softmax(-1)
        return torch.einsum("...ij,...jd->...id", a, t) + torch.einsum("bhid->bhdi", t).mean()


def test_einsum_products_count_their_macs() -> None:
    """Regression: einsum attention (torchvision maxvit_t) counted 0 MACs (3% of the model missing)."""
    from torch.utils.flop_counter import FlopCounterMode

    net = _EinsumAttention()
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        net(torch.zeros(1, 6, 4, 5))
    s = summarize(net, (6, 4, 5))
    assert s.total_macs == fc.get_total_flops() // 2 == 2 * (2 * 20 * 20 * 3)


class _IteratedList(nn.Module):
    """CaiT-style: an nn.ModuleList iterated in forward is never called itself."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3)
        self.blocks = nn.ModuleList([nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU()) for _ in range(2)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for b in self.blocks:
            x = b(x)
        return x


def test_depth_filter_keeps_children_of_uncalled_containers() -> None:
    """Regression: at --depth 1 CaiT's blocks_token_only.* rows vanished (params and MACs not covered)."""
    s = summarize(_IteratedList(), (3, 8, 8))
    rows = s.at_depth(1)
    assert [r.name for r in rows] == ["stem", "blocks.0", "blocks.1"]
    assert sum(r.params for r in rows) == s.total_params and sum(r.macs for r in rows) == s.total_macs
    assert [r.name for r in s.at_depth(3)] == [
        "stem",
        "blocks.0",
        "blocks.0.0",
        "blocks.0.1",
        "blocks.1",
        "blocks.1.0",
        "blocks.1.1",
    ]


def test_cli_deep_layer_names_are_not_cut(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    """Regression: at --depth 5 the table cut names to 'features.1.…' (ambiguous rows)."""
    (tmp_path / "deep.py").write_text(
        "import torch\n"
        "def make():\n"
        "    m = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())\n"
        "    for _ in range(3):\n"
        "        outer = torch.nn.Sequential()\n"
        "        outer.add_module('encoder_stage_with_a_long_descriptive_name', m)\n"
        "        m = outer\n"
        "    return m\n"
    )
    assert main(["summary", "--model", f"{tmp_path / 'deep.py'}:make", "--input", "8x8x3", "--depth", "9"]) == 0
    out = capsys.readouterr().out
    first_col = "".join(line.split("│")[1].strip() for line in out.splitlines() if line.startswith("│"))
    stem = ".".join(["encoder_stage_with_a_long_descriptive_name"] * 3)
    assert f"{stem}.0" in first_col and f"{stem}.1" in first_col and "…" not in first_col


# ------------------------------------------------------------------ MACs of attention and composite ops
def _tv_classification_entries() -> list[tuple[str, object]]:
    import torchvision

    return [
        (name, w)
        for name in torchvision.models.list_models(module=torchvision.models)
        for w in torchvision.models.get_model_weights(name)
    ]


def _crop(w: object) -> int:
    return int(w.transforms.keywords.get("crop_size", 224))  # type: ignore[attr-defined]


@pytest.mark.slow
def test_vit_family_macs_equal_torchvision_documented_ops() -> None:
    """Every torchvision ViT weights entry (224 to 518 px): MACs == the `_ops` GFLOPS torchvision documents
    (its "FLOPs" are multiply-accumulates). nn.MultiheadAttention used to count 0: vit_b_16 gave 11.27 G."""
    import torchvision

    entries = [(n, w) for n, w in _tv_classification_entries() if n.startswith("vit_")]
    assert len(entries) >= 10
    for name, w in entries:
        with torch.device("meta"):
            model = torchvision.models.get_model(name, weights=None, image_size=_crop(w))
        s = summarize(model, (3, _crop(w), _crop(w)), device="meta")
        assert s.macs_complete, (name, s.not_counted)
        assert round(s.total_macs / 1e9, 3) == pytest.approx(w.meta["_ops"], abs=1e-9), (name, w, s.total_macs)
    with torch.device("meta"):
        b16 = torchvision.models.vit_b_16()
    assert round(summarize(b16, (3, 224, 224), device="meta").total_macs / 1e9, 3) == 17.564


@pytest.mark.slow
def test_every_torchvision_classifier_macs_and_params_equal_its_metadata() -> None:
    """Walk every torchvision classification builder and weights entry: total MACs at the entry's crop size
    == its documented `_ops` (rounded to 3 decimals as torchvision prints them), and load_model's
    num_params == its `num_params` (aux heads as torchvision builds them, issue 16.4). Built on the meta
    device, so the ~120 entries take seconds."""
    import warnings

    import torchvision

    from convlens.models import load_model

    checked = 0
    for name in torchvision.models.list_models(module=torchvision.models):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            bundle = load_model(name, device="meta")
        size = bundle.meta.input_size[-1]
        entries = list(torchvision.models.get_model_weights(name))
        same_size = [w for w in entries if _crop(w) == size] or [entries[0]]
        assert bundle.meta.num_params in {w.meta["num_params"] for w in same_size}, (name, bundle.meta.num_params)
        traced: dict[int, int] = {}  # crop size -> MACs (entries at one size share the architecture)
        for w in entries if not name.startswith("vit_") else ():  # ViTs: the test above
            if _crop(w) not in traced:
                s = summarize(bundle.model, (3, _crop(w), _crop(w)), device="meta")
                assert s.macs_complete, (name, s.not_counted)
                traced[_crop(w)] = s.total_macs
            assert round(traced[_crop(w)] / 1e9, 3) == pytest.approx(w.meta["_ops"], abs=1e-9), (name, w)
            checked += 1
    assert checked >= 100  # 105 entries besides the 10 ViT ones


def _small_vit() -> nn.Module:
    from torchvision.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    return VisionTransformer(32, 8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64, num_classes=10).eval()


def test_attention_macs_equal_flop_counter_where_it_sees_them() -> None:
    """FlopCounterMode (MACs = FLOPs / 2) is a valid oracle only when attention runs as matmuls it counts:
    with grad enabled (nn.MultiheadAttention's slow path) and the math SDPA kernel. Under no_grad it takes
    the fused `_native_multi_head_attention` kernel and on CPU the flash SDPA kernel, which it misses."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    vit, x = _small_vit(), torch.randn(1, 3, 32, 32)
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as fc:
        vit(x)
    s = summarize(vit, (3, 32, 32))
    assert s.total_macs == fc.get_total_flops() // 2
    # attention by hand: 2 layers x (Q K^T + A V) = 2 x 2 x 17 tokens x 17 x 32 channels
    attn = sum(r.macs for r in s.layers if r.type == "MultiheadAttention")
    assert attn == 2 * (4 * 17 * 32 * 32 + 2 * 17 * 17 * 32)
    with torch.no_grad(), FlopCounterMode(display=False) as fc_nograd:
        vit(x)
    assert fc_nograd.get_total_flops() // 2 < s.total_macs - 2 * 2 * 17 * 17 * 32  # it misses whole attention blocks

    class Cross(nn.Module):  # not batch_first, kdim/vdim != embed_dim, a bias_k: every MHA argument counts
        def __init__(self) -> None:
            super().__init__()
            self.q = nn.Conv2d(3, 8, 1)
            self.mha = nn.MultiheadAttention(8, 2, kdim=3, vdim=5, add_bias_kv=True)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            t = x.flatten(2).permute(2, 0, 1)  # (L, N, C)
            q = self.q(x).flatten(2).permute(2, 0, 1)
            return self.mha(q, t, torch.cat([t, t[..., :2]], -1))[0]

    net = Cross().eval()
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as fc:
        net(torch.randn(1, 3, 4, 5))
    assert summarize(net, (3, 4, 5)).total_macs == fc.get_total_flops() // 2


class _Seq(nn.Module):
    """An image read as a sequence of 16 tokens by a recurrent layer."""

    def __init__(self, rnn: nn.Module) -> None:
        super().__init__()
        self.rnn = rnn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rnn(x.flatten(2).transpose(1, 2))[0]


@pytest.mark.parametrize(
    "rnn",
    [
        lambda: nn.LSTM(3, 5, num_layers=2, bidirectional=True, batch_first=True),
        lambda: nn.LSTM(3, 6, proj_size=2, batch_first=True),
        lambda: nn.GRU(3, 5, num_layers=2, batch_first=True),
        lambda: nn.RNN(3, 4, nonlinearity="relu", batch_first=True),
    ],
)
def test_recurrent_layer_macs_equal_flop_counter(rnn) -> None:
    """LSTM/GRU/RNN counted 0. Oracle: FlopCounterMode on torch's reference (non-oneDNN) RNN, which runs
    the gates as matmuls it counts."""
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    net = _Seq(rnn()).eval()
    with torch.backends.mkldnn.flags(enabled=False), FlopCounterMode(display=False) as fc:
        net(torch.randn(1, 3, 4, 4))
    s = summarize(net, (3, 4, 4))
    assert s.total_macs == fc.get_total_flops() // 2 > 0 and s.macs_complete


def test_tensordot_and_bilinear_macs() -> None:
    """tensordot against FlopCounterMode; nn.Bilinear (which FlopCounterMode misses) against the linear
    layer it equals on the outer product x1 ⊗ x2, which FlopCounterMode counts."""
    from torch.utils.flop_counter import FlopCounterMode

    class TD(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            t = x.flatten(2)  # (1, 3, 20)
            return torch.tensordot(t, t.transpose(1, 2)[0], dims=([2], [0]))

    with FlopCounterMode(display=False) as fc:
        TD()(torch.randn(1, 3, 4, 5))
    assert summarize(TD(), (3, 4, 5)).total_macs == fc.get_total_flops() // 2 == 3 * 20 * 3

    torch.manual_seed(0)
    bil = nn.Bilinear(3, 4, 6)

    class Bil(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bil = bil

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            t = x.flatten(2).transpose(1, 2)[0]  # (20, 3)
            return self.bil(t, torch.cat([t, t[:, :1]], 1))

    x = torch.randn(1, 3, 4, 5)
    t = x.flatten(2).transpose(1, 2)[0]
    x2 = torch.cat([t, t[:, :1]], 1)
    outer = (t[:, :, None] * x2[:, None, :]).flatten(1)
    with FlopCounterMode(display=False) as fc:
        ref = F.linear(outer, bil.weight.flatten(1), bil.bias)
    torch.testing.assert_close(Bil()(x), ref)  # the same map
    assert summarize(Bil(), (3, 4, 5)).total_macs == fc.get_total_flops() // 2 == 20 * 6 * 3 * 4


class _Spectral(nn.Module):
    """A GFNet-style global filter (FFT) and a Kronecker product: multiplications convlens has no formula for."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        f = torch.fft.rfft2(y)
        return torch.fft.irfft2(f * f, s=y.shape[-2:]) + torch.kron(y[0, 0], torch.ones(1, 1))


def test_an_op_that_cannot_be_counted_is_shown_as_not_counted(capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    s = summarize(_Spectral(), (3, 8, 8))
    ops = {d["op"] for d in s.not_counted}
    assert {"fft_rfft2", "fft_irfft2", "kron"} <= ops and not s.macs_complete
    assert s.total_macs == 8 * 8 * 4 * 3 * 9  # only the conv: a lower bound, announced as such
    d = s.to_dict()
    assert d["macs_complete"] is False and {n["op"] for n in d["not_counted"]} == ops
    assert d["layers"][0]["macs_counted"] is True  # the conv row is exact
    (tmp_path / "spec.py").write_text(
        "import torch\nfrom torch import nn\n"
        "class S(nn.Module):\n"
        "    def __init__(self):\n        super().__init__()\n        self.conv = nn.Conv2d(3, 4, 3, padding=1)\n"
        "    def forward(self, x):\n        return torch.fft.rfft2(self.conv(x)).abs()\n"
        "def make():\n    return S()\n"
    )
    assert main(["summary", "--model", f"{tmp_path / 'spec.py'}:make", "--input", "8x8x3"]) == 0
    out = capsys.readouterr().out
    assert "not counted (the total is a lower bound): fft_rfft2" in out


def test_a_failing_handler_surfaces(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug in an op handler raises under strict tracing (the test suite) and is visible otherwise."""
    from convlens import graph

    def broken(op: graph.OpCall) -> graph.OpResult:
        raise KeyError("bug")

    monkeypatch.setitem(graph.HANDLERS, F.conv2d, broken)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    with pytest.raises(graph.HandlerError, match="handler for 'conv2d' failed: KeyError"):
        graph.trace(net, (3, 8, 8), strict=True)
    g = graph.trace(net, (3, 8, 8), strict=False)
    bad = [n for n in g.nodes if n.op == "conv2d"]
    assert bad[0].kind == "unknown" and not bad[0].counted and "KeyError" in (bad[0].note or "")
    assert g.not_counted == bad


def test_print_summary_is_a_table_like_torchinfo_not_a_dataclass_repr(resnet18_bundle):
    import torchinfo

    from convlens.errors import LayerError

    s = summarize(resnet18_bundle.model, (3, 224, 224), name="resnet18")
    text = str(s)
    ref = torchinfo.summary(resnet18_bundle.model, input_size=(1, 3, 224, 224), verbose=0)
    assert f"Total params: {ref.total_params:,}" in text and f"Trainable params: {ref.trainable_params:,}" in text
    assert len(text) < 10_000 and "LayerRecord(" not in text and "LayerRecord(" not in repr(s)
    rows = {line.split()[0]: line.split() for line in text.splitlines() if line.startswith("layer")}
    assert rows["layer4"][-3:] == ["-", "435", "32"]  # the RF and jump of the CLI table
    assert s.layer(5) is s.layers[5] and s.layer(-1) is s.layers[-1]
    assert s.layer("layer1.0.relu", call=1).call == 1
    for bad in (999, -999, 1.5, None):
        with pytest.raises(LayerError):
            s.layer(bad)
    with pytest.raises(LayerError, match="called 2 time"):
        s.layer("layer1.0.relu", call=2)


def test_aten_ops_are_counted_and_extension_ops_are_not_counted() -> None:
    """torch.ops.aten.mm is the same product as torch.mm; an op of a compiled extension (torch.ops.<lib>)
    is opaque to the tracer: shown as not counted instead of a silent 0."""
    import contextlib

    lib = torch.library.Library("convlens_test", "FRAGMENT")
    with contextlib.suppress(RuntimeError):  # defined once per process
        lib.define("opaque(Tensor x) -> Tensor")
        lib.impl("opaque", lambda x: x * 2, "CompositeExplicitAutograd")

    class Ext(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.ones(4, 5))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            t = x.flatten(1)[:, :4]
            return torch.ops.convlens_test.opaque(torch.ops.aten.mm(t, self.w)) + torch.ops.aten.mm.default(t, self.w)

    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        Ext()(torch.zeros(1, 1, 2, 2))
    s = summarize(Ext(), (1, 2, 2))
    assert s.total_macs == fc.get_total_flops() // 2 == 2 * 4 * 5
    assert [d["op"] for d in s.not_counted] == ["convlens_test::opaque"] and not s.macs_complete


# ------------------------------------------------------------------------------- einsum MACs by hand (issue 19)
@pytest.mark.parametrize(
    ("equation", "shapes", "macs", "flop_counter"),
    [
        ("bij,bjk->bik", [(2, 3, 4), (2, 4, 5)], 2 * 3 * 4 * 5, True),  # batched matmul: b*i*j*k
        ("ij,jk", [(2, 3), (3, 4)], 2 * 3 * 4, True),  # implicit output (no '->')
        ("ij,j->i", [(3, 4), (4,)], 3 * 4, True),  # matrix-vector
        ("b h i d, b h j d -> b h i j", [(1, 2, 3, 4), (1, 2, 5, 4)], 2 * 3 * 5 * 4, True),  # spaces are ignored
        # the ellipsis covers 2 dims of the first operand and 1 of the second, aligned from the right:
        # batch (2, 3) x (3,) -> 2*3, then i*j*k = 4*5*6
        ("...ij,...jk->...ik", [(2, 3, 4, 5), (3, 5, 6)], 2 * 3 * 4 * 5 * 6, True),
        ("b...ij,b...jk->b...ik", [(2, 3, 4, 5), (2, 3, 5, 6)], 2 * 3 * 4 * 5 * 6, True),  # letters around it
        ("...ij,jk", [(2, 3, 4), (4, 5)], 2 * 3 * 4 * 5, True),
        ("bij,bjk->bik", [(2, 3, 4), (1, 4, 5)], 2 * 3 * 4 * 5, True),  # b broadcast from 1: counts as 2
        ("ij,jk->ik", [(1, 4), (4, 5)], 1 * 4 * 5, True),  # a size-1 letter counts 1
        ("i,j->ij", [(3,), (4,)], 3 * 4, False),  # outer product: one multiply per output (torch: a mul)
        ("ii,i->i", [(3, 3), (3,)], 3, False),  # diagonal times vector: i repeated is one letter
        ("ij,jk->ik", [(3, 4), (1, 5)], 3 * 4 * 5, False),  # j broadcast from 1 in the second operand
        ("ii->i", [(3, 3)], 0, False),  # one operand (a trace, a sum, a permutation) multiplies nothing
        ("ij->ji", [(3, 4)], 0, False),
        # three operands: torch contracts left to right, two at a time: (ij,jk -> ik) 2*3*4, then (ik,kl -> il) 2*4*5
        ("ij,jk,kl->il", [(2, 3), (3, 4), (4, 5)], 2 * 3 * 4 + 2 * 4 * 5, True),
        ("ij,jk,kl", [(2, 3), (3, 4), (4, 5)], 2 * 3 * 4 + 2 * 4 * 5, True),  # implicit output: i, l
        # four: (ab,bc) 2*3*4, then (ac,cd) 2*4*5, then (ad,de) 2*5*6
        ("ab,bc,cd,de->ae", [(2, 3), (3, 4), (4, 5), (5, 6)], 2 * 3 * 4 + 2 * 4 * 5 + 2 * 5 * 6, True),
        # b stays for the second product: 2*3*4*5, then 2*3*5*6
        ("bij,bjk,bkl->bil", [(2, 3, 4), (2, 4, 5), (2, 5, 6)], 2 * 3 * 4 * 5 + 2 * 3 * 5 * 6, True),
        # x appears in one operand only: summed out first (no multiplies), then the 2x3 @ 3x4 product
        ("ijx,jk->ik", [(2, 3, 7), (3, 4)], 2 * 3 * 4, True),
        # full contraction: i and k summed out first, then a dot product over j
        ("ij,jk->", [(2, 3), (3, 4)], 3, True),
        ("ix,jy->ij", [(2, 9), (3, 8)], 2 * 3, False),  # x, y summed out, then an outer product
        # the batch (...) = 2 stays to the output; a summed out first; X contracted by the first product and not
        # carried on: (X: 2*4*5) then (b: 2*5*6)
        ("...aX,...Xb,...bc->...c", [(2, 3, 4), (2, 4, 5), (2, 5, 6)], 2 * 4 * 5 + 2 * 5 * 6, True),
        # the ellipsis (7) is contracted by the first product, absent from the output: 7*2*3*4, then 2*4*5
        ("...ij,...jk,kl->il", [(7, 2, 3), (7, 3, 4), (4, 5)], 7 * 2 * 3 * 4 + 2 * 4 * 5, True),
        ("ij,jk,kl->il", [(2, 3), (3, 4)], 0, False),  # three subscripts, two operands: not counted
        ("ij,jk->ik", [(2, 3, 4), (4, 5)], 0, False),  # three dims for two letters: not counted
    ],
)
def test_einsum_macs_by_hand_and_against_flop_counter(
    equation: str, shapes: list, macs: int, flop_counter: bool
) -> None:
    """MACs of an einsum, contracted two operands at a time from the left as torch does: each product costs
    the product of the sizes of the letters it involves (a broadcast letter at its largest size, an ellipsis as
    one letter per dim aligned from the right; a letter no one else needs is summed out first, for free);
    FlopCounterMode's FLOPs / 2 where torch runs the products as matrix products."""
    from torch.utils.flop_counter import FlopCounterMode

    from convlens.graph import einsum_macs

    ops = [torch.ones(s) for s in shapes]
    assert einsum_macs(equation, ops) == macs
    if flop_counter:
        with FlopCounterMode(display=False) as fc:
            torch.einsum(equation, *ops)
        assert fc.get_total_flops() == 2 * macs


def test_einsum_macs_of_the_sublist_form_is_zero() -> None:
    from convlens.graph import einsum_macs

    a, b = torch.ones(2, 3), torch.ones(3, 4)
    assert einsum_macs([0, 1], [a, b]) == 0 and einsum_macs(None, [a, b]) == 0
