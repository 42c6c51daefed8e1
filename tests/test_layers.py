import pytest
from torch import nn

from convlens.errors import LayerError
from convlens.layers import glob_to_regex, resolve


def test_auto_skips_global_pool_and_head(resnet18_bundle):
    assert [r.name for r in resolve(resnet18_bundle.model, "auto")] == ["layer4"]


def test_stages_resnet18(resnet18_bundle):
    assert [r.name for r in resolve(resnet18_bundle.model, "stages")] == [
        "relu",
        "layer1",
        "layer2",
        "layer3",
        "layer4",
    ]


def test_stages_timm_feature_info(lite0):
    assert [r.name for r in resolve(lite0.model, "stages")] == [
        "blocks.0",
        "blocks.1",
        "blocks.2",
        "blocks.4",
        "blocks.6",
    ]
    assert [r.name for r in resolve(lite0.model, "auto")] == ["bn2"]


def test_glob_segments(resnet18_bundle):
    names = [r.name for r in resolve(resnet18_bundle.model, "layer1.*")]
    assert names == ["layer1.0", "layer1.1"]
    deep = [r.name for r in resolve(resnet18_bundle.model, "layer1.**conv*")]
    assert "layer1.0.conv1" in deep and all(n.startswith("layer1.") for n in deep)
    assert not glob_to_regex("*").fullmatch("a.b")


def test_unknown_layer_suggests(resnet18_bundle):
    with pytest.raises(LayerError, match="did you mean 'layer4.1.conv2'"):
        resolve(resnet18_bundle.model, "layer4.1.cnv2")


def test_module_object_and_foreign_module(resnet18_bundle):
    m = resnet18_bundle.model
    assert resolve(m, m.layer3)[0].name == "layer3"
    with pytest.raises(LayerError, match="not part"):
        resolve(m, nn.Conv2d(1, 1, 1))


def test_no_spatial_layer():
    with pytest.raises(LayerError, match="spatial"):
        resolve(nn.Sequential(nn.Flatten(), nn.Linear(12, 2)), "auto", input_shape=(3, 2, 2))


# ---------------------------------------------------------------------------------------------- layouts

import json  # noqa: E402
import warnings  # noqa: E402

import torch  # noqa: E402

from convlens.hooks import capture  # noqa: E402
from convlens.layers import as_nchw, auto_layer, first_conv, layer_layouts  # noqa: E402


def _block_output(model, name, x):
    with torch.no_grad(), capture(model, [name]) as cap:
        cap.run(x)
    return cap.activations[name]


@pytest.mark.parametrize(
    "kwargs, hw, grid, prefix",
    [
        ({}, (32, 48), (2, 3), 1),  # class token, non-square grid
        ({"reg_tokens": 4}, (48, 32), (3, 2), 5),  # class + 4 register tokens
        ({"class_token": False, "global_pool": "avg"}, (32, 32), (2, 2), 0),
    ],
)
def test_timm_vit_tokens_match_forward_intermediates(kwargs, hw, grid, prefix):
    """The oracle is timm's own forward_intermediates(output_fmt='NCHW'): no square-grid guess."""
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)  # timm's init draws from the global RNG; test-only seeding
    vit = timm.create_model("vit_tiny_patch16_224", img_size=hw, depth=2, **kwargs).eval()
    x = torch.randn(2, 3, *hw)
    lay = layer_layouts(vit, (3, *hw))["blocks.1"]
    assert (lay.fmt, lay.grid, lay.prefix, lay.source) == ("NLC", grid, prefix, "timm")
    ours = as_nchw(vit, {"blocks.1": _block_output(vit, "blocks.1", x)}, (3, *hw))["blocks.1"]
    with torch.no_grad():
        ref = vit.forward_intermediates(x, indices=[1], output_fmt="NCHW", intermediates_only=True)[0]
    assert ours.shape == ref.shape and torch.equal(ours, ref)
    # attention internals (N, heads, T, d) are no map of the image, whatever their sizes
    assert not layer_layouts(vit, (3, *hw))["blocks.1.attn.q_norm"].is_map


def test_timm_swin_stages_match_forward_intermediates():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    swin = timm.create_model("swin_tiny_patch4_window7_224", img_size=(64, 96), window_size=2, depths=(1, 1, 1, 1))
    swin.eval()
    x = torch.randn(1, 3, 64, 96)
    lays = layer_layouts(swin, (3, 64, 96))
    assert [lays[f"layers.{i}"].grid for i in range(4)] == [(16, 24), (8, 12), (4, 6), (2, 3)]
    assert {lays[f"layers.{i}"].fmt for i in range(4)} == {"NHWC"} and lays["norm"].fmt == "NHWC"
    outs = {f"layers.{i}": _block_output(swin, f"layers.{i}", x) for i in range(4)}
    ours = as_nchw(swin, outs, (3, 64, 96))
    with torch.no_grad():
        refs = swin.forward_intermediates(x, indices=[0, 1, 2, 3], intermediates_only=True)
    for i, ref in enumerate(refs):
        assert torch.equal(ours[f"layers.{i}"], ref)
    # window attention works on (N * windows, tokens, C): no map of the image
    assert not lays["layers.0.blocks.0.attn"].is_map


def test_torchvision_vit_tokens_traced_without_timm():
    from torchvision.models import VisionTransformer

    torch.manual_seed(0)
    vit = VisionTransformer(image_size=32, patch_size=8, num_layers=1, num_heads=2, hidden_dim=16, mlp_dim=16).eval()
    lay = layer_layouts(vit, (3, 32, 32))["encoder.layers.encoder_layer_0"]
    assert (lay.fmt, lay.grid, lay.prefix, lay.source) == ("NLC", (4, 4), 1, "traced")
    x = torch.randn(1, 3, 32, 32)
    t = _block_output(vit, "encoder.layers.encoder_layer_0", x)
    # hand oracle: drop the class token, row-major patches -> (D, 4, 4)
    assert torch.equal(lay.to_nchw(t)[0, :, 1, 2], t[0, 1 + 1 * 4 + 2])


def test_declared_layout_wins_and_channels_first():
    class NHWCConv(nn.Module):  # an adapter computing channels-last (Keras) declares it once
        convlens_layout = "NHWC"

        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 5, 3)

        def forward(self, x):
            return self.conv(x).permute(0, 2, 3, 1).contiguous()

    net = nn.Sequential(NHWCConv())
    lay = layer_layouts(net, (3, 8, 6))["0"]
    assert (lay.fmt, lay.grid, lay.source) == ("NHWC", (6, 4), "declared")
    t = net(torch.randn(2, 3, 8, 6))
    assert torch.equal(lay.to_nchw(t), t.permute(0, 3, 1, 2)) and torch.equal(lay.channels_first(t), lay.to_nchw(t))
    with pytest.raises(LayerError, match="does not fit"):
        lay.to_nchw(torch.zeros(2, 5, 5, 5))


# ---------------------------------------------------------------------------------------------- auto


def test_auto_never_picks_a_1x1_map_and_the_default_layer_only_when_larger(resnet18_bundle, lite0):
    m = resnet18_bundle.model
    assert auto_layer(m, (3, 224, 224)).name == "layer4"
    assert auto_layer(m, (3, 32, 32)).name == "layer3"  # layer4 is 1x1 at 32 px: it cannot localize
    # the registry's default layer is honoured ...
    assert lite0.model.convlens_default_layer == "bn2" and auto_layer(lite0.model).name == "bn2"
    # ... unless it is 1x1 at this size (efficientnet at 32 px: bn2 is 1x1, the last 2x2 map wins)
    small = auto_layer(lite0.model, (3, 32, 32)).name
    lays = layer_layouts(lite0.model, (3, 32, 32))
    assert small != "bn2" and lays["bn2"].grid == (1, 1) and lays[small].area > 1


def test_explicit_1x1_layer_works_and_warns_naming_a_better_layer(resnet18_bundle):
    from convlens.explain import explain

    x = torch.randn(1, 3, 32, 32)
    with pytest.warns(RuntimeWarning, match=r"'layer4' is a 1x1 map.*cannot localize.*use 'layer3'"):
        res = explain(resnet18_bundle.model, x, "gradcam", "layer4", [0])
    assert res.layers == ["layer4"] and res.maps.shape == (1, 32, 32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        explain(resnet18_bundle.model, x, "gradcam", "layer3", [0])  # 2x2: no 1x1 warning


def test_first_conv_is_the_first_called_not_the_first_registered():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.late = nn.Conv2d(3, 4, 1)  # registered first, runs second (on 3-channel features)
            self.stem = nn.Conv2d(3, 3, 3)

        def forward(self, x):
            return self.late(self.stem(x))

    assert first_conv(Net(), (3, 8, 8)).name == "stem"
    gray = nn.Sequential(nn.Conv2d(1, 2, 3))
    assert first_conv(gray).name == "0"
    with pytest.raises(LayerError, match="no Conv2d"):
        first_conv(nn.Sequential(nn.Conv2d(4, 2, 1)))


# ------------------------------------------------------------------------------ one 'auto' for every front end

_AUTO = {
    "resnet18": "layer4",
    "efficientnet_lite0": "bn2",  # the registry's default layer (embedded, pretrained)
    "vit_tiny_patch16_224": "blocks.11.norm1",  # the first token layer of the last block
    "convnext_tiny": "features",
    "swin_tiny_patch4_window7_224": "norm",  # channels-last (N, 7, 7, C)
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(_AUTO))
def test_the_same_auto_layer_in_every_front_end(name, tmp_path, capsys, chelsea):
    """resolve, explain, get_activations, visualize and `convlens cam/activations/filters/report` all mean
    the same layer by 'auto' (the issue: resolve and explain disagreed on ViT)."""
    from PIL import Image

    from convlens.cli import main
    from convlens.explain import explain
    from convlens.featvis import visualize
    from convlens.inspect import get_activations
    from convlens.models import load_model

    bundle = load_model(name)
    x = bundle.preprocess([chelsea])
    want = _AUTO[name]
    assert [r.name for r in resolve(bundle.model, "auto", input_shape=tuple(x.shape[1:]))] == [want]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # random weights may give flat maps
        assert explain(bundle, x, "gradcam", "auto").layers == [want]
    assert list(get_activations(bundle.model, x, "auto")) == [want]
    size = bundle.meta.input_size[-1]
    assert visualize(bundle, "auto", [0], steps=1, size=size, return_result=True).layer == [want]

    img = tmp_path / "cat.png"
    Image.fromarray(chelsea).save(img)
    capsys.readouterr()
    assert main(["cam", str(img), "--model", name, "--out", str(tmp_path / "cam"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["layer"] == want
    args = ["activations", str(img), "--model", name, "--layers", "auto", "--out", str(tmp_path / "act"), "--json"]
    assert main(args) == 0
    assert [r["layer"] for r in json.loads(capsys.readouterr().out)["layers"]] == [want]
    args = ["filters", "--model", name, "--layer", "auto", "--channels", "0", "--steps", "1"]
    assert main([*args, "--size", str(size), "--out", str(tmp_path / "f.png"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["layer"] == want
    args = ["report", str(img), "--model", name, "--methods", "gradcam", "--no-metrics", "--filter-steps", "1"]
    assert main([*args, "--out", str(tmp_path / "rep")]) == 0
    summary = json.loads((tmp_path / "rep" / "summary.json").read_text())
    assert json.dumps(summary).count(f'"CAM layer": ["{want}"]') == 1, summary


def test_timm_mobilevitv2_stages_stay_maps_and_auto_is_in_the_last_stage():
    """MobileViT-v2 unfolds each stage into patches for its attention, where the tracer loses the H/W axes.
    timm models that declare no ``output_fmt`` compute NCHW, so their stage outputs (on timm's declared stage
    grids) are still maps. Before, every layer after stage 2 was "other" and "auto" fell back to
    ``stages.3.0.conv1_1x1``, at 1/8 of the input instead of the last 1/32 stage. Oracle: timm's
    ``forward_intermediates`` (the stages' NCHW outputs)."""
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    net = timm.create_model("mobilevitv2_050").eval()
    x = torch.randn(1, 3, 128, 128)
    lays = layer_layouts(net, (3, 128, 128))
    with torch.no_grad():
        refs = net.forward_intermediates(x, indices=[3, 4], intermediates_only=True)
    outs = {f"stages.{i}": _block_output(net, f"stages.{i}", x) for i in (3, 4)}
    ours = as_nchw(net, outs, (3, 128, 128))
    for i, ref in zip((3, 4), refs, strict=True):
        assert lays[f"stages.{i}"].fmt == "NCHW" and lays[f"stages.{i}"].grid == tuple(ref.shape[2:])
        assert torch.equal(ours[f"stages.{i}"], ref)
    auto = resolve(net, "auto", input_shape=(3, 128, 128))[0].name
    assert lays[auto].grid == tuple(refs[-1].shape[2:]), auto  # a layer of the last (4x4) stage
    # the patches x tokens tensors inside the attention are no map of the image
    assert not lays["stages.3.1.transformer"].is_map
