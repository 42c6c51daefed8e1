"""Graph tracer and receptive fields: theory (graph) against the gradient measurement, on hand-built
branching models, random models (hypothesis) and the torchvision classics."""

from __future__ import annotations

import contextlib

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from convlens.errors import InputError, LayerError
from convlens.graph import Axis, Geometry, _hull, _merge, _slice_geometry, _to_global, trace
from convlens.hooks import hook_count
from convlens.inspect.rf import receptive_field, receptive_field_empirical
from convlens.layers import probe_shapes


def assert_rf_matches(model: nn.Module, layer: str, size: int, *, c: int = 3, call: int = 0) -> None:
    """Theoretical size AND position of the centre unit's field == the measured gradient support."""
    emp = receptive_field_empirical(model, layer, size, in_channels=c, call=call)
    geo = receptive_field(model, layer, (c, size, size), call=call)
    assert not emp.clipped, f"{layer}: field touches the border of a {size}px probe; test needs a larger input"
    assert emp.size == geo.receptive_field, (layer, emp, geo)
    centre = tuple(s + u * j for s, u, j in zip(geo.start, emp.unit, geo.jump, strict=True))
    assert emp.center == pytest.approx(centre), (layer, emp.center, centre)


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(2, 4, 3, stride=2)
        self.body = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 5, padding=2))
        self.short = nn.Conv2d(4, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        return F.relu(self.body(x) + self.short(x))


class Inception(nn.Module):
    """Branches of different reach concatenated on channels; the widest branch sets the field."""

    def __init__(self) -> None:
        super().__init__()
        self.b1 = nn.Conv2d(2, 2, 1)
        self.b3 = nn.Sequential(nn.Conv2d(2, 2, 1), nn.Conv2d(2, 2, 3, padding=1))
        self.b5 = nn.Sequential(nn.Conv2d(2, 2, 3, padding=1), nn.Conv2d(2, 2, 3, padding=2, dilation=2))
        self.pool = nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True)
        self.out = nn.Conv2d(8, 4, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.cat([self.b1(x), self.b3(x), self.b5(x), self.pool(x)], dim=1)
        return self.out(y)


class Twice(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 3)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.pool(self.conv(x)))


class Functional(nn.Module):
    """Only functional ops between modules, asymmetric TF-style 'same' padding, ceil_mode pooling."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(2, 3, 3)
        self.b = nn.Conv2d(3, 3, 3, stride=2)
        self.head = nn.Linear(3, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.a(x))
        x = F.pad(x, (0, 1, 0, 1))  # right/bottom only, like timm's Conv2dSame with stride 2
        x = self.b(x)
        x = F.max_pool2d(x, 3, 2, 0, ceil_mode=True)
        x = F.avg_pool2d(x, 2, 2, ceil_mode=True) + F.avg_pool2d(F.relu(x), 2, 2, ceil_mode=True)
        return self.head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def test_residual_add_takes_the_longer_path() -> None:
    net = Residual()
    g = trace(net, (2, 33, 33))
    # stem 3 (jump 2); body 3 then 5 -> 3 + 2*2 + 4*2 = 15; the 1x1 shortcut alone would give 3
    assert g.geometry("body").receptive_field == (15, 15)
    assert g.geometry("short").receptive_field == (3, 3)
    add = [n for n in g.nodes if n.op in ("add", "__add__")]
    assert add and add[0].geometry.receptive_field == (15, 15)
    assert_rf_matches(net, "body", 41, c=2)


def test_inception_concat_max_over_branches() -> None:
    net = Inception()
    g = trace(net, (2, 21, 21))
    assert g.geometry("b5").receptive_field == (7, 7)  # 3 then dilated 3 (k_eff 5)
    assert g.geometry("out").receptive_field == (9, 9)
    assert g.geometry("out").jump == (2, 2)
    assert_rf_matches(net, "out", 31, c=2)


def test_module_called_twice_has_two_calls() -> None:
    net = Twice()
    g = trace(net, (2, 20, 20))
    assert [c.call for c in g.calls if c.name == "conv"] == [0, 1]
    assert g.geometry("conv", 0).receptive_field == (3, 3)
    assert g.geometry("conv", 1).receptive_field == (8, 8)  # 3 -> pool 4 (jump 2) -> +2*2
    assert_rf_matches(net, "conv", 20, c=2, call=0)
    assert_rf_matches(net, "conv", 24, c=2, call=1)


def test_functional_ops_asymmetric_pad_and_ceil_mode() -> None:
    net = Functional()
    g = trace(net, (2, 40, 40))
    assert [n.op for n in g.nodes].count("relu") == 2
    assert g.geometry("b").start == (2, 2)  # left pad 0: unit 0 is centred on input pixel 2
    emp = receptive_field_empirical(net, "b", 40, in_channels=2)
    geo = g.geometry("b")
    assert emp.size == geo.receptive_field
    head = g.geometry("head")
    assert head.is_global and head.jump is None
    # shapes agree with a plain forward
    assert g.nodes[-1].shape == (1, 5)


def test_shapes_agree_with_probe(resnet18_bundle) -> None:
    g = trace(resnet18_bundle.model, (3, 64, 64))
    shapes = {(s.name, i): s.shape for i, s in enumerate(probe_shapes(resnet18_bundle.model, (3, 64, 64)))}
    got = {(c.name, i): c.shape for i, c in enumerate(g.calls)}
    assert got == shapes
    assert hook_count(resnet18_bundle.model) == 0
    assert not resnet18_bundle.model.training


def _random_net(draw: st.DrawFn) -> nn.Module:
    layers: list[nn.Module] = []
    ch = 2
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["conv", "maxpool", "avgpool", "res", "cat"]))
        k = draw(st.integers(1, 4))
        s = draw(st.integers(1, 2))
        d = draw(st.integers(1, 2))
        p = draw(st.integers(0, k // 2))
        if kind == "conv":
            layers.append(nn.Conv2d(ch, ch, k, stride=s, padding=draw(st.integers(0, k)), dilation=d))
        elif kind == "maxpool":
            layers.append(
                nn.MaxPool2d(max(k, 2), stride=s, padding=min(p, max(k, 2) // 2), ceil_mode=draw(st.booleans()))
            )
        elif kind == "avgpool":
            layers.append(
                nn.AvgPool2d(max(k, 2), stride=s, padding=min(p, max(k, 2) // 2), ceil_mode=draw(st.booleans()))
            )
        else:
            ko = 2 * draw(st.integers(0, 2)) + 1
            layers.append(_Branch(ch, ko, d, kind))
    return nn.Sequential(*layers)


class _Branch(nn.Module):
    def __init__(self, ch: int, k: int, d: int, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.a = nn.Conv2d(ch, ch, k, padding=d * (k - 1) // 2, dilation=d)
        self.b = nn.Conv2d(ch, ch, 3, padding=1)
        self.mix = nn.Conv2d(2 * ch, ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "res":
            return x + F.relu(self.a(x))
        # (slicing channels after the concat could drop the wider branch: fields are per tensor, over all channels)
        return self.mix(torch.cat([self.a(x), self.b(x)], 1))


@settings(max_examples=15)
@given(st.data())
def test_random_branching_nets_theory_equals_measurement(data: st.DataObject) -> None:
    net = _random_net(data.draw).eval()
    last = str(len(net) - 1)
    try:
        g = trace(net, (2, 64, 64))
    except InputError:
        return  # the random net shrinks a 64px input to nothing; nothing to compare
    rf = g.geometry(last).receptive_field[0]
    size = int(2 * rf + 24)
    if size > 160:
        return
    with contextlib.suppress(InputError):
        assert_rf_matches(net, last, size, c=2)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "layer", "size"),
    [
        ("vgg16", "features.23", 112),  # pool4: RF 100, jump 16
        ("googlenet", "inception3b", 112),  # inception concatenations, ceil_mode max-pools
        ("densenet121", "features.transition1", 96),  # dense concatenations, avg-pool
    ],
)
def test_torchvision_models_theory_equals_measurement(name: str, layer: str, size: int) -> None:
    import torchvision

    torch.manual_seed(0)
    kwargs = {"init_weights": False, "aux_logits": False} if name == "googlenet" else {}
    model = getattr(torchvision.models, name)(weights=None, **kwargs).eval()
    assert_rf_matches(model, layer, size)


def test_resnet18_theory_equals_measurement(resnet18_bundle) -> None:
    assert_rf_matches(resnet18_bundle.model, "layer2", 128)  # RF 99: residual adds + stride-2 shortcuts
    assert_rf_matches(resnet18_bundle.model, "layer3.0.conv1", 128)  # RF 115


def test_known_receptive_fields(resnet18_bundle) -> None:
    g = trace(resnet18_bundle.model, (3, 224, 224))
    assert g.geometry("layer4").receptive_field == (435, 435)  # the published ResNet-18 value
    assert g.geometry("layer4").jump == (32, 32)


def test_empirical_does_not_modify_the_model(resnet18_bundle) -> None:
    m = resnet18_bundle.model
    before = {k: v.clone() for k, v in m.state_dict().items()}
    receptive_field_empirical(m, "layer1", 64)
    after = m.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert hook_count(m) == 0 and not m.training


def test_bad_inputs() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 5), nn.Conv2d(4, 4, 5))
    with pytest.raises(InputError):
        trace(net, (3, 224))  # type: ignore[arg-type]
    with pytest.raises(InputError, match="failed on a 1x3x6x6"):
        trace(net, (3, 6, 6))
    with pytest.raises(LayerError, match="did you mean"):
        trace(net, (3, 16, 16)).call("1x")
    with pytest.raises(LayerError):
        receptive_field_empirical(net, "nope", 16)
    with pytest.raises(InputError):
        receptive_field_empirical(net, "1", 16, unit=(99, 0))


class _FixedSize(nn.Module):
    """Like timm's PatchEmbed: asserts the input size with torch._assert."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, 4, 4, stride=4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        torch._assert(x.shape[-1] == 16, f"Input width ({x.shape[-1]}) doesn't match model (16).")
        return self.proj(x)


def test_model_assertion_on_input_size_is_a_clear_error() -> None:
    """Regression: vit_tiny at --input 64x64x3 crashed with an AssertionError traceback."""
    net = _FixedSize()
    with pytest.raises(InputError, match=r"failed on a 1x3x8x8 \(NxCxHxW\) input \(Input width \(8\) doesn't match"):
        trace(net, (3, 8, 8))
    assert hook_count(net) == 0
    assert trace(net, (3, 16, 16)).call("proj").shape == (1, 4, 4, 4)


def test_channel_shuffle_and_squeeze_excitation() -> None:
    """ShuffleNet's view/transpose channel shuffle keeps the layout; an SE gate makes every field global."""
    import torchvision

    shuffle = torchvision.models.shufflenet_v2_x0_5().eval()
    assert_rf_matches(shuffle, "stage2", 96)  # RF 63 through chunk, cat, 5-D view and transpose
    mbv3 = torchvision.models.mobilenet_v3_small().eval()
    geo = receptive_field(mbv3, "features.1", (3, 64, 64))
    assert geo.is_global and geo.jump == (4, 4)  # global field, but still a 16x16 map with jump 4
    emp = receptive_field_empirical(mbv3, "features.1", 64)
    assert emp.pixels == 64 * 64  # the centre unit depends on every pixel, as the theory says


def test_convnext_nhwc_layout_is_followed() -> None:
    """torchvision's ConvNeXt permutes to NHWC for LayerNorm and Linear layers and back."""
    from torchvision.models.convnext import CNBlockConfig, ConvNeXt

    small = ConvNeXt([CNBlockConfig(16, 32, 1), CNBlockConfig(32, None, 1)]).eval()  # the real blocks, fewer of them
    g = trace(small, (3, 64, 64))
    geo = g.geometry("features.1.0")  # stem (4, jump 4) + a 7x7 depthwise conv at jump 4
    assert geo.receptive_field == (28, 28) and geo.jump == (4, 4) and geo.exact
    assert any(n.kind == "layout" for n in g.nodes)


class Focus(nn.Module):
    """YOLOv5's space-to-depth: four strided slices concatenated, then a crop, then a conv."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(12, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.cat([x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]], 1)
        return self.conv(y[:, :, 1:-1, :])


def test_strided_slices_and_crops() -> None:
    g = trace(Focus(), (3, 32, 32))
    geo = g.geometry("conv")
    assert geo.receptive_field == (6, 6) and geo.jump == (2, 2) and geo.exact  # 2 (union of offsets 0, 1) + 2*2
    assert geo.start == (4.5, 2.5)  # the crop starts one unit (2 px) down, none to the right
    assert_rf_matches(Focus(), "conv", 32)


def _plain_support(out_fn, x: torch.Tensor) -> torch.Tensor:
    """The oracle: pixels where the plain gradient of a scalar is non-zero, on the model as it is."""
    x = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(out_fn(x), x)
    return g[0].abs().sum(0) > 0


def _box(support: torch.Tensor) -> tuple[int, int, int, int]:
    rows, cols = torch.nonzero(support.any(1)).flatten(), torch.nonzero(support.any(0)).flatten()
    return int(rows.min()), int(cols.min()), int(rows.max()), int(cols.max())


def test_vit_patch_tokens_see_their_patch_until_attention_mixes_them() -> None:
    """Regression (issue 16.5): vit_tiny's patch_embed showed RF 224, 'global'. A token after the 16x16
    stride-16 patch conv sees exactly its patch (checked against the plain gradient of every probed token);
    the class token and position embedding keep that; the field becomes global at the first attention."""
    import timm

    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", img_size=64).eval()
    g = trace(vit, (3, 64, 64))
    for name in ("patch_embed", "pos_drop", "blocks.0.norm1"):
        geo = g.geometry(name)
        assert geo.receptive_field == (16, 16) and geo.jump == (16, 16) and geo.start == (7.5, 7.5), name
        assert not geo.is_global and geo.exact
    assert g.geometry("patch_embed").tokens == (1, 4, 4, 0) and g.geometry("pos_drop").tokens == (1, 4, 4, 1)
    assert g.geometry("blocks.0.attn").is_global and g.geometry("blocks.0.attn").receptive_field == (64, 64)
    x = torch.randn(1, 3, 64, 64, dtype=torch.float64)
    vit = vit.double()
    geo = g.geometry("patch_embed")
    for t in (0, 5, 15):  # token t = unit (t // 4, t % 4): its field by the geometry, vs the gradient
        sup = _plain_support(lambda x, t=t: vit.patch_embed(x)[0, t].sum(), x)
        (ch, cw), (rh, rw) = ((s + u * j) for s, u, j in zip(geo.start, (t // 4, t % 4), geo.jump)), geo.receptive_field
        assert _box(sup) == (ch - (rh - 1) / 2, cw - (rw - 1) / 2, ch + (rh - 1) / 2, cw + (rw - 1) / 2)
        assert int(sup.sum()) == rh * rw == 256
    emp = receptive_field_empirical(vit, "pos_drop", 64, unit=(1, 2))  # tokens measured directly too
    assert emp.size == (16, 16) and emp.box == (16, 32, 31, 47) and emp.pixels == 256
    tokens = lambda x: vit.blocks[0](vit._pos_embed(vit.patch_embed(x)))  # noqa: E731
    assert bool(_plain_support(lambda x: tokens(x)[0, 6].sum(), x).all())  # after attention: every pixel


def test_swin_windows_make_the_theory_an_upper_bound_not_an_exact_field() -> None:
    """torchvision's Swin partitions the (N, H, W, C) map into windows with a view the tracer cannot follow
    ((N, H/4, 4, W/4, 4, C) here). The first window attention mixes 4x4 tokens of 4x4 pixels: the centre unit
    of features.1.0 measures 16x16 (rows and columns 16..31), not the whole 32x32 image the theory gives. The
    theory is an upper bound there and must say so (exact=False; it said exact). Up to the partition it is exact
    and equals the measurement (the 4x4 patches)."""
    from torchvision.models.swin_transformer import SwinTransformer

    torch.manual_seed(0)
    swin = SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[2, 1], num_heads=[1, 1], window_size=[4, 4])
    g = trace(swin.eval(), (3, 32, 32))
    for name in ("features.0", "features.1.0.norm1"):
        assert (g.geometry(name).receptive_field, g.geometry(name).exact) == ((4, 4), True), name
        assert receptive_field_empirical(swin, name, 32).size == (4, 4), name
    emp = receptive_field_empirical(swin, "features.1.0", 32)
    assert (emp.size, emp.box) == ((16, 16), (16, 16, 31, 31))
    for name in ("features.1.0.attn", "features.1.0", "features.2"):
        geo = g.geometry(name)
        assert geo.receptive_field == (32, 32) and not geo.exact, name


class _HeadsAndBack(nn.Module):
    """Patch tokens (4x4 patches, (N, L, C)), their features split into 2 heads (N, L, 2, C/2) and merged back:
    what attention does to its queries before it mixes the tokens."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, 4, 4, stride=4)
        self.split, self.merge = nn.Unflatten(2, (2, 2)), nn.Flatten(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.merge(self.split(self.proj(x).flatten(2).transpose(1, 2)))


def test_splitting_features_into_heads_keeps_each_tokens_field() -> None:
    """A reshape that only splits the axes after the token axis moves no pixel between tokens: each token still
    sees its 4x4 patch (exact), and so does the merged result; token 6 of the 4x4 grid = unit (1, 2) sees rows
    4..7, columns 8..11. (The tracer lost the layout at the split and gave one field for all tokens.)"""
    net = _HeadsAndBack().eval()
    g = trace(net, (3, 16, 16))
    for name in ("split", "merge"):
        geo = g.geometry(name)
        assert (geo.receptive_field, geo.jump, geo.exact) == ((4, 4), (4, 4), True), name
        assert geo.tokens is not None and geo.tokens[1:] == (4, 4, 0), name
    emp = receptive_field_empirical(net, "merge", 16, unit=(1, 2))
    assert (emp.size, emp.box, emp.pixels) == ((4, 4), (4, 8, 7, 11), 16)


@pytest.mark.slow
def test_mobilenet_v3_squeeze_excitation_empirical_field() -> None:
    """Regression (issue 16.5): on the cancellation-free copy the SE gates (pool -> FC -> hard-sigmoid ->
    multiply) squared the values block after block up to inf (1e261 at features.8), so features.10-12
    'did not depend on the input'. The oracle: the plain gradient of the real model reaches every pixel."""
    import torchvision

    torch.manual_seed(0)
    m = torchvision.models.mobilenet_v3_small().eval()
    x = torch.randn(1, 3, 96, 96, dtype=torch.float64)
    md = torchvision.models.mobilenet_v3_small().eval().double()
    md.load_state_dict(m.state_dict())
    for layer in ("features.10", "features.11", "features.12"):
        emp = receptive_field_empirical(m, layer, 96)
        i = int(layer.split(".")[1])
        sup = _plain_support(lambda x, i=i: md.features[: i + 1](x)[0, :, 1, 1].sum(), x)
        assert emp.pixels == int(sup.sum()) == 96 * 96 and emp.box == _box(sup)
        assert receptive_field(m, layer, (3, 96, 96)).is_global


class _Resize(nn.Module):
    def __init__(self, **kw: object) -> None:
        super().__init__()
        self.a = nn.Conv2d(1, 1, 3)
        self.up = nn.Upsample(**kw)  # type: ignore[arg-type]
        self.b = nn.Conv2d(1, 1, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.up(self.a(x)))


@pytest.mark.slow
@pytest.mark.parametrize(
    "kw",
    [
        {"scale_factor": 2, "mode": "nearest"},
        {"scale_factor": 3, "mode": "nearest"},
        {"scale_factor": 1.5, "mode": "nearest"},
        {"scale_factor": 2, "mode": "nearest-exact"},
        {"scale_factor": 2, "mode": "bilinear"},
        {"scale_factor": 2, "mode": "bilinear", "align_corners": True},
        {"size": (7, 7), "mode": "bilinear"},  # 14 -> 7: exactly affine (taps 2o, 2o + 1)
        {"size": (9, 9), "mode": "bilinear"},
        {"scale_factor": 3, "mode": "bicubic"},
        {"scale_factor": 0.5, "mode": "nearest"},
    ],
)
def test_resize_fields_against_measurement(kw: dict) -> None:
    """Upsampling (issue 19): the resize rule reads PyTorch's own sampling positions, so the field SIZE
    of the resized map is exact: the widest unit measured by gradient support (nearest: the input's field;
    bilinear one input unit more; bicubic three more); each unit's centre is within half an input jump of
    the affine position (upsampling repeats units in steps, so it is flagged inexact); a whole-factor
    nearest downsampling is exactly affine and matches everywhere."""
    net = _Resize(**kw).eval()
    _units_match_measurement(net, "up", 16)


def _units_match_measurement(net: nn.Module, layer: str, n: int) -> None:
    """Every unit of ``layer`` (along the diagonal) measured by gradient support: the theory's size is the
    widest unit's, every inner unit's centre is within half an input jump of the affine position, and the
    geometry is flagged exact iff every unfilled unit is exactly the affine translate."""
    g = trace(net, (1, n, n))
    geo = g.geometry(layer)
    m = g.call(layer).shape[-1]
    sizes, inner = [], []
    for u in range(m):
        try:
            emp = receptive_field_empirical(net, layer, n, in_channels=1, unit=(u, u))
        except LayerError:  # a unit that reads no input unit (transposed conv with stride > kernel)
            continue
        if emp.clipped:  # the field runs past the image border: the measurement is cut
            continue
        sizes.append(emp.size[0])
        if m // 4 <= u < m - m // 4:  # inner units (border units read clamped or padded taps)
            inner.append((emp.size[0], abs(emp.center[0] - (geo.start[0] + u * geo.jump[0]))))
            assert inner[-1][1] <= 0.5, (u, emp, geo)
    assert max(sizes) == geo.receptive_field[0] == geo.receptive_field[1], (sizes, geo)
    affine = len({z for z, _ in inner}) == 1 and max(e for _, e in inner) < 1e-6
    if geo.exact:
        assert affine, (inner, geo)
    else:  # flagged approximate: some unit is not the affine translate (inner staircase, border, or no input)
        assert not affine or len(set(sizes)) > 1 or len(sizes) < m, (sizes, inner, geo)
    after = str(int(layer) + 1) if layer.isdigit() else "b"
    if g.geometry(after).exact:
        assert_rf_matches(net, after, n, c=1)
    else:  # after a further conv the staircase is approximated: within one pixel of the widest unit
        widest = max(
            receptive_field_empirical(net, after, n, in_channels=1, unit=(u, u)).size[0] for u in range(1, m - 3)
        )
        assert abs(g.geometry(after).receptive_field[0] - widest) < 1


@pytest.mark.slow
@pytest.mark.parametrize(
    "kw",
    [
        {"kernel_size": 2, "stride": 2},  # U-Net's up-conv: one input unit per output unit
        {"kernel_size": 4, "stride": 2, "padding": 1},  # DCGAN
        {"kernel_size": 3, "stride": 2, "padding": 1, "output_padding": 1},
        {"kernel_size": 3, "stride": 1, "dilation": 2},  # stride 1: exactly a conv
        {"kernel_size": 2, "stride": 3},  # some output units read no input
    ],
)
def test_transposed_conv_fields_against_measurement(kw: dict) -> None:
    """Transposed convs were 'unknown' (the hull, approximate): output unit o reads input units i with
    o = i·s - p + k·d; the field size is exact, stride 1 is exact outright."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 1, 3), nn.ConvTranspose2d(1, 1, **kw), nn.Conv2d(1, 1, 3)).eval()
    _units_match_measurement(net, "1", 16)


# ------------------------------------------------------------------ resize taps: PyTorch's own gradient support
def _support(
    mode: str, n_in: int, *, size: int | None = None, scale: float | None = None, **kw: object
) -> list[tuple[int, int]]:
    """(first, last) input unit each output unit of a 1-D ``F.interpolate`` depends on: the nonzero
    entries of its Jacobian row, measured by autograd (float64; |w| <= 1e-6 is PyTorch's rounding noise of
    a whole source position, e.g. 7e-9 in float32, 3e-17 in float64). Bilinear/bicubic need a 4-D input
    (height 1), trilinear a 5-D one, the others run on 3-D."""
    lead = {"bilinear": 1, "bicubic": 1, "trilinear": 2}.get(mode, 0)
    x = torch.zeros((1, 1) + (1,) * lead + (n_in,), dtype=torch.float64)
    if size is not None:
        kw["size"] = (1,) * lead + (size,)
    else:
        kw["scale_factor"] = (1.0,) * lead + (scale,)
    jac = torch.autograd.functional.jacobian(lambda t: F.interpolate(t, mode=mode, **kw).flatten(), x)
    rows = jac.reshape(-1, n_in).abs() > 1e-6
    return [(int(r.nonzero()[0]), int(r.nonzero()[-1])) for r in rows]


def _taps_of(mode: str, n_in: int, *, size: int | None = None, scale: float | None = None, **kw: object):
    """What the graph's resize rule passes to ``_taps`` for the same call (see ``graph._resize``)."""
    from convlens.graph import _taps

    n_out = size if size is not None else int(n_in * scale)  # F.interpolate's floor(n_in * scale_factor)
    given = None if kw.get("recompute_scale_factor") else scale
    align = bool(kw.get("align_corners"))
    if "antialias" in kw:
        return _taps(mode, n_in, n_out, given, align, bool(kw["antialias"]))
    return _taps(mode, n_in, n_out, given, align)  # antialias defaults to off, as in F.interpolate


_TAP_CASES = [
    # (mode, n_in, size or scale, extra kwargs): up and down, by size and by (non-integer) scale factor
    *[
        (m, n, dict(size=o) if isinstance(o, int) else dict(scale=o), {})
        for m in ("nearest", "nearest-exact", "area")
        for n, o in ((5, 12), (12, 5), (7, 1.7), (10, 0.6), (6, 6), (4, 1))
    ],
    ("nearest", 7, dict(scale=1.7), {"recompute_scale_factor": True}),
    *[
        (m, n, dict(size=o) if isinstance(o, int) else dict(scale=o), {"align_corners": al})
        for m in ("linear", "bilinear", "bicubic")
        for al in (False, True)
        for n, o in ((5, 12), (12, 5), (7, 1.7), (10, 0.6), (4, 2), (4, 1), (4, 4), (3, 11))
    ],
    ("trilinear", 5, dict(size=12), {"align_corners": True}),
    ("trilinear", 12, dict(size=5), {"align_corners": False}),
    ("bilinear", 7, dict(scale=1.7), {"recompute_scale_factor": True}),
    ("bicubic", 10, dict(scale=0.6), {"recompute_scale_factor": True, "align_corners": False}),
    # antialiased downsampling: the filter widens with the factor (1 < s <= 2, s > 2, s = 1)
    *[
        (m, n, dict(size=o), {"antialias": True, "align_corners": al})
        for m in ("bilinear", "bicubic")
        for al in (False, True)
        for n, o in ((12, 5), (10, 7), (9, 9))
    ],
    *[
        (m, n, dict(size=o) if isinstance(o, int) else dict(scale=o), {"antialias": True})
        for m in ("bilinear", "bicubic")
        for n, o in ((20, 6), (16, 0.3))
    ],
]
# cases the rule got wrong before it weighed the taps (kept apart so the cases above also run against older code):
# antialiased filters whose end unit sits exactly at the filter's edge (weight 0), antialiased upsampling with
# align_corners (aten's AA kernel centres unit o at (o + 1/2)s all the same), a source position a hair below a
# whole number (11 -> 9 by 9/11: unit 4 at 4.9999999 reads unit 5 only)
_TAP_FIXED_CASES = [
    *[
        (m, n, dict(size=o) if isinstance(o, int) else dict(scale=o), {"antialias": True, "align_corners": al})
        for m in ("bilinear", "bicubic")
        for al in (False, True)
        for n, o in ((10, 0.6), (6, 2), (9, 3), (7, 5), (16, 0.3), (20, 6))
    ],
    *[
        (m, n, dict(size=o), {"antialias": True, "align_corners": True})
        for m in ("bilinear", "bicubic")
        for n, o in ((2, 3), (3, 8), (4, 12), (5, 1), (3, 3))
    ],
    ("linear", 11, dict(scale=9 / 11), {}),
    ("bicubic", 11, dict(scale=9 / 11), {}),
]


@pytest.mark.parametrize(("mode", "n_in", "out", "kw"), _TAP_CASES)
def test_resize_taps_are_pytorchs_gradient_support(mode: str, n_in: int, out: dict, kw: dict) -> None:
    """Every output unit reads exactly the input units its Jacobian row is nonzero on."""
    assert _taps_of(mode, n_in, **out, **kw) == _support(mode, n_in, **out, **kw)


@pytest.mark.parametrize(("mode", "n_in", "out", "kw"), _TAP_FIXED_CASES)
def test_resize_taps_skip_zero_weights(mode: str, n_in: int, out: dict, kw: dict) -> None:
    """A unit the kernel indexes with weight 0 is not read: the field is the gradient support."""
    assert _taps_of(mode, n_in, **out, **kw) == _support(mode, n_in, **out, **kw)


def test_tap_axis_hand_computed() -> None:
    """``_tap_axis`` turns per-unit taps into one Axis; the arithmetic written out for each branch."""
    from convlens.graph import Axis, _tap_axis

    # a global field (jump None) stays global, whatever is read; the layout step scales by r: 2 * 0.5 = 1
    assert _tap_axis(Axis(-3, 5, None, 2.0), [(0, 1)], 0.5) == (Axis(-3, 5, None, 1.0), True)
    assert _tap_axis(Axis(-3, 5, None, None), [(0, 1)], 0.5) == (Axis(-3, 5, None, None), True)
    # no unit reads an input unit: the input's field, jump 2 * 3 = 6, step 2 * 3 = 6, not exact
    assert _tap_axis(Axis(-1, 1, 2.0, 2.0), [None, None], 3) == (Axis(-1, 1, 6.0, 6.0), False)
    # bilinear 4 -> 8 (half-pixel: x = o/2 - 1/4, clamped at both borders) of a field [-1, 1], jump 2; r = 1/2.
    # offset of unit o = centre 0 + (a + b)/2 * 2 - o * 1 = a + b - o: 0, 0, -1, 0, -1, 0, -1, -1;
    # sizes (b - a) * 2: 0, 2, 2, 2, 2, 2, 2, 0 -> widest 2; inner units 8//4 .. 8 - 8//4: offsets[2:6] =
    # -1, 0, -1, 0 -> start -0.5; half = (1 - (-1) + 2) / 2 = 2 -> [-2.5, 1.5]; jump = step = 2 * 1/2 = 1
    bilinear = [(0, 0), (0, 1), (0, 1), (1, 2), (1, 2), (2, 3), (2, 3), (3, 3)]
    assert _tap_axis(Axis(-1, 1, 2.0, 2.0), bilinear, 0.5) == (Axis(-2.5, 1.5, 1.0, 1.0), False)
    # nearest 6 -> 3 (taps 0, 2, 4) of a field [0, 2] (an unpadded 3x3 conv), jump 1, r = 2: every offset is
    # 1 + a - 2o = 1, every size 0 -> exactly the translate [1 - 1, 1 + 1] = [0, 2], jump 2
    assert _tap_axis(Axis(0, 2, 1.0, 1.0), [(0, 0), (2, 2), (4, 4)], 2) == (Axis(0, 2, 2.0, 2.0), True)
    # the same with the step gone (None): still exact, step stays None
    assert _tap_axis(Axis(0, 2, 1.0, None), [(0, 0), (2, 2), (4, 4)], 2) == (Axis(0, 2, 2.0, None), True)
    # one unit reads nothing: the others are exact translates (offsets 1 + a - o = 1), yet the map is not
    assert _tap_axis(Axis(0, 2, 1.0, 1.0), [(0, 0), None, (2, 2)], 1) == (Axis(0, 2, 1.0, 1.0), False)
    # equal offsets but different sizes: offsets 0 + (a + b)/2 - o = 0, 1 - 1 = 0, 2 - 2 = 0; sizes 0, 2, 0 ->
    # half = (0 - 0 + 2) / 2 = 1: [-1, 1], not exact (the outer units read one unit, the middle one three)
    assert _tap_axis(Axis(0, 0, 1.0, 1.0), [(0, 0), (0, 2), (2, 2)], 1) == (Axis(-1, 1, 1.0, 1.0), False)


def test_window_axis_without_layout_step() -> None:
    """A window over an axis whose layout step is gone (None) keeps it None; the field: k_eff = 1*(3-1)+1 = 3,
    lo = 0 - 1*1 = -1, hi = 0 + (3 - 1 - 1)*1 = 1, jump 1*2 = 2."""
    from convlens.graph import Axis, _window_axis

    assert _window_axis(Axis(0, 0, 1.0, None), 3, 2, 1, 1) == Axis(-1, 1, 2.0, None)
    assert _window_axis(Axis(0, 0, 1.0, 1.0), 3, 2, 1, 1) == Axis(-1, 1, 2.0, 2.0)


class _Interp(nn.Module):
    """``F.interpolate`` with any keyword (``nn.Upsample`` has no ``antialias``)."""

    def __init__(self, **kw: object) -> None:
        super().__init__()
        self.kw = kw

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, **self.kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kw",
    [
        {"size": (8, 8), "mode": "bilinear", "antialias": True},  # 14 -> 8: filter 1.75 units each side
        {"scale_factor": 0.6, "mode": "bicubic", "antialias": True},
        {"size": (7, 7), "mode": "area"},  # 14 -> 7: exactly a 2x2 average pool, stride 2
        {"size": (5, 5), "mode": "area"},  # 14 -> 5: windows of 3 and 4 units
        {"size": (6, 6), "mode": "nearest-exact"},
        {"scale_factor": 1.7, "mode": "bilinear", "recompute_scale_factor": True},
    ],
)
def test_resize_fields_against_measurement_more_modes(kw: dict) -> None:
    """The resize rule end to end (traced through ``F.interpolate``): each unit's gradient support."""
    net = nn.Sequential(nn.Conv2d(1, 1, 3), _Interp(**kw), nn.Conv2d(1, 1, 3)).eval()
    _units_match_measurement(net, "1", 16)


@pytest.mark.parametrize("mode", ["bilinear"])
def test_antialiased_resize_field_leaves_out_zero_weight_units(mode: str) -> None:
    """18 -> 6 antialiased (s = 3): the filter's last indexed unit sits exactly at its edge (weight 0), so the
    field is one input unit narrower than the units the kernel indexes; the gradient support says so."""
    kw = {"size": (6, 6), "mode": mode, "antialias": True}
    net = nn.Sequential(nn.Conv2d(1, 1, 3), _Interp(**kw), nn.Conv2d(1, 1, 3)).eval()
    _units_match_measurement(net, "1", 20)


@settings(max_examples=60)
@given(
    mode=st.sampled_from(["nearest", "nearest-exact", "area", "linear", "bilinear", "bicubic"]),
    n_in=st.integers(1, 13),
    n_out=st.integers(1, 13),
    flags=st.tuples(st.booleans(), st.booleans(), st.booleans()),
)
def test_resize_taps_random_against_pytorch(mode: str, n_in: int, n_out: int, flags: tuple) -> None:
    """Any size, either direction, by size or by scale factor: the taps are the gradient support."""
    align, antialias, by_scale = flags
    kw: dict = {}
    if mode in ("linear", "bilinear", "bicubic"):
        kw["align_corners"] = align
    if mode in ("bilinear", "bicubic"):
        kw["antialias"] = antialias
    out = {"scale": n_out / n_in} if by_scale and int(n_in * (n_out / n_in)) > 0 else {"size": n_out}
    assert _taps_of(mode, n_in, **out, **kw) == _support(mode, n_in, **out, **kw)


# ------------------------------------------------------------------ merge, slice, global: theory vs gradient
# (issue 19) The fields of merged, sliced and globalised tensors against the plain gradient of one output unit
# of a copy with positive weights on an all-ones input (no cancellation: every pixel the unit reads has a
# non-zero gradient), and the helpers' formulas worked by hand on direct calls. The models use non-square
# kernels and strides so that an H/W mix-up shows.


def _positive(net: nn.Module) -> nn.Module:
    """The model itself, made float64 with weights |w| + 0.1 (in place): no gradient cancels."""
    net = net.double().eval()
    with torch.no_grad():
        for p in net.parameters():
            p.abs_().add_(0.1)
    return net


def _unit_box(net: nn.Module, shape: tuple[int, ...], index: tuple[int, ...]) -> tuple[int, int, int, int]:
    """(row0, col0, row1, col1) of the pixels output ``index`` (all channels: a field is per tensor) depends on:
    the gradient oracle."""
    return _box(_plain_support(lambda x: net(x)[index].sum(), torch.ones(1, *shape, dtype=torch.float64)))


def _theory_box(geo: Geometry, i: int, j: int, h: int, w: int) -> tuple[int, int, int, int]:
    """Unit (i, j)'s field by the convention ([lo + i*jump, hi + i*jump]; a global axis: [lo, hi]), clipped to
    the h x w image (pixels outside are padding, which has no gradient)."""

    def axis(a: Axis, u: int, n: int) -> tuple[int, int]:
        lo, hi = (a.lo, a.hi) if a.jump is None else (a.lo + u * a.jump, a.hi + u * a.jump)
        return max(int(lo), 0), min(int(hi), n - 1)

    (r0, r1), (c0, c1) = axis(geo.h, i, h), axis(geo.w, j, w)
    return r0, c0, r1, c1


def _check_units(net: nn.Module, shape: tuple[int, int, int], layer: str = "out") -> Geometry:
    """Every unit on the border and the diagonal of ``layer``'s map: theory box == gradient box."""
    net = _positive(net)
    g = trace(net, shape)
    geo = g.geometry(layer)
    out = g.call(layer).shape
    (dh, dw), (h, w) = geo.dims, shape[1:]
    nh, nw = out[dh], out[dw]
    units = {(i, j) for i in range(nh) for j in range(nw) if i in (0, nh - 1) or j in (0, nw - 1) or i == j}
    for i, j in sorted(units):
        index: list = [slice(None)] * len(out)
        index[dh], index[dw] = i, j
        assert _unit_box(net, shape, tuple(index)) == _theory_box(geo, i, j, h, w), (layer, (i, j), geo)
    return geo


class _AddCat(nn.Module):
    """A (3, 5)-kernel stem with strides (1, 2), then a (5, 3) conv and a 1x1 shortcut, added or concatenated."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.how = how
        self.stem = nn.Conv2d(1, 2, (3, 5), stride=(1, 2))
        self.body = nn.Conv2d(2, 2, (5, 3), padding=(2, 1))
        self.short = nn.Conv2d(2, 2, 1)
        self.out = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        a, b = self.body(x), self.short(x)
        return self.out(a + b if self.how == "add" else torch.cat([b, a], 1))


@pytest.mark.parametrize("how", ["add", "cat"])
def test_residual_add_and_concat_of_different_fields_against_gradient(how: str) -> None:
    """stem: H [0, 2] jump 1; W [0, 4] jump 2. body (k 5x3, pad 2x1): H lo = 0 - 2*1 = -2, hi = 2 + (5-1-2)*1 = 4;
    W lo = 0 - 1*2 = -2, hi = 4 + (3-1-1)*2 = 6. The 1x1 shortcut keeps the stem's field, which lies inside
    body's: the merge is body's field, exact, on every unit (border units clipped to the 12x17 image)."""
    geo = _check_units(_AddCat(how), (1, 12, 17))
    assert geo.h.lo == -2 and geo.h.hi == 4 and geo.h.jump == 1
    assert geo.w.lo == -2 and geo.w.hi == 6 and geo.w.jump == 2
    assert geo.exact and geo.dims == (2, 3) and geo.jump == (1, 2)


class _Gated(nn.Module):
    """A (3, 5) conv with strides (1, 2), then a gate: ``se`` squeeze-excitation by the global mean; ``crop`` a
    gate pooled from the first two columns only; ``flat`` flattened into a linear layer; ``pool`` global pool."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.conv = nn.Conv2d(1, 2, (3, 5), stride=(1, 2))
        self.lin = nn.Linear(2 * 10 * 6, 3)
        self.out = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)  # (1, 2, 10, 6) on a 12x16 input
        if self.kind == "se":
            return self.out(y * torch.sigmoid(y.mean((2, 3), keepdim=True)))
        if self.kind == "crop":
            return self.out(y * F.adaptive_avg_pool2d(y[:, :, :, :2], 1))
        if self.kind == "flat":
            return self.out(self.lin(torch.flatten(y, 1)))
        return self.out(F.adaptive_avg_pool2d(y, 1))


@pytest.mark.parametrize("kind", ["se", "flat", "pool"])
def test_global_gate_flatten_and_pool_see_the_hull_against_gradient(kind: str) -> None:
    """conv: H [0, 2] jump 1 over 10 units, W [0, 4] jump 2 over 6 units. The hull of all units:
    H [0, 2 + 9*1] = [0, 11], W [0, 4 + 5*2] = [0, 14] (column 15 of the 16 is read by no unit). An SE gate
    covers every unit's field, so each gated unit sees the hull and keeps its 10x6 layout (steps 1, 2);
    flatten + linear and a global pool lose the layout."""
    net = _positive(_Gated(kind))
    g = trace(net, (1, 12, 16))
    geo = g.geometry("out")
    index = (0, slice(None), 4, 3) if kind == "se" else (0, 2) if kind == "flat" else (0, slice(None), 0, 0)
    assert _unit_box(net, (1, 12, 16), index) == (0, 0, 11, 14)
    hull_h, hull_w = (0, 11, None), (0, 14, None)
    assert (geo.h.lo, geo.h.hi, geo.h.jump) == hull_h and (geo.w.lo, geo.w.hi, geo.w.jump) == hull_w
    assert geo.exact is True
    if kind == "se":
        assert geo.is_global and geo.jump == (1, 2) and geo.dims == (2, 3)
    else:
        assert geo.jump is None and geo.dims is None


def test_gate_covering_one_axis_makes_both_axes_global() -> None:
    """A gate pooled from y[..., :2] covers H (rows [0, 11], every unit's rows) but only W columns [0, 3]
    (units 0, 1: [0, 2] and [1, 3]). W alone: partial overlap over 14 units (y is 10x14 on 12x16), centre
    c = (14-1)//2 = 6: lo = min(0 + 6*1, 0) - 6 = -6, hi = max(2 + 6*1, 3) - 6 = 2 (jump 1, approximate).
    H went global, so W goes global too, as the hull of its 14 units: [-6, 2 + 13*1] = [-6, 15]."""
    net = _Gated("crop")
    net.conv = nn.Conv2d(1, 2, 3)
    net = _positive(net)
    g = trace(net, (1, 12, 16))
    geo = g.geometry("out")
    assert geo.h == Axis(0, 11, None, 1) and geo.w == Axis(-6, 15, None, 1)
    assert geo.exact is False and geo.dims == (2, 3)
    # the oracle: together the units read rows 0..11 and every column; the theory (clipped) says the same
    sup = _plain_support(lambda x: net(x).sum(), torch.ones(1, 1, 12, 16, dtype=torch.float64))
    assert _box(sup) == _theory_box(geo, 0, 0, 12, 16) == (0, 0, 11, 15)
    # each unit reads its own 3x3 field and the gate's 12x4 block: inside the global box, never outside it
    r0, c0, r1, c1 = _unit_box(net, (1, 12, 16), (0, slice(None), 5, 9))
    assert (r0, c0, r1, c1) == (0, 0, 11, 11)  # rows of the gate, columns 0..(9 + 2)


class _Slice(nn.Module):
    """A (3, 5) conv with strides (2, 1) (H [0, 2] jump 2; W [0, 4] jump 1; 7x16 units on 15x20), then x[key]."""

    def __init__(self, key: object, gate: bool = False) -> None:
        super().__init__()
        self.key, self.gate = key, gate
        self.conv = nn.Conv2d(1, 3, (3, 5), stride=(2, 1))
        self.out = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        if self.gate:
            y = y * torch.sigmoid(y.mean((2, 3), keepdim=True))
        return self.out(y[self.key])


E = Ellipsis


@pytest.mark.parametrize(
    ("key", "h", "w", "dims"),
    [
        # units a, a+t, ...: lo' = lo + a*jump, hi' = hi + a*jump, jump' = t*jump
        ((0, E, slice(1, None, 2), slice(2, None, 3)), (2, 4, 4), (2, 6, 3), (1, 2)),  # H 0+1*2, W 0+2*1
        ((slice(None), slice(None), slice(1, None, 2), slice(None, None, 2)), (2, 4, 4), (0, 4, 2), (2, 3)),  # Focus
        ((E, slice(-4, None), slice(1, -1)), (6, 8, 2), (1, 5, 1), (2, 3)),  # -4 of 7 units is unit 3: 0 + 3*2
        ((slice(None), 1), (0, 2, 2), (0, 4, 1), (1, 2)),  # a channel: the int drops axis 1
        ((0, slice(0, 2), E, slice(3, 12, 4)), (0, 2, 2), (3, 7, 4), (1, 2)),  # Ellipsis covers H
        (slice(None, None, 1), (0, 2, 2), (0, 4, 1), (2, 3)),  # a bare slice (not a tuple) on the batch axis
    ],
)
def test_strided_slices_against_gradient(key: object, h: tuple, w: tuple, dims: tuple) -> None:
    geo = _check_units(_Slice(key), (1, 15, 20))
    assert (geo.h.lo, geo.h.hi, geo.h.jump) == h and (geo.w.lo, geo.w.hi, geo.w.jump) == w
    assert geo.dims == dims and geo.exact is True and geo.jump == (h[2], w[2])


def test_slicing_a_globally_gated_map_keeps_the_hull_and_stretches_the_layout() -> None:
    """After an SE gate every unit sees the hull H [0, 2 + 6*2] = [0, 14], W [0, 4 + 15*1] = [0, 19] (steps 2, 1);
    x[..., 1::2, ::3] keeps that field and multiplies the layout steps: 2*2 = 4, 1*3 = 3."""
    net = _positive(_Slice((E, slice(1, None, 2), slice(None, None, 3)), gate=True))
    geo = trace(net, (1, 15, 20)).geometry("out")
    assert geo.h == Axis(0, 14, None, 4) and geo.w == Axis(0, 19, None, 3) and geo.dims == (2, 3)
    assert _unit_box(net, (1, 15, 20), (0, slice(None), 1, 4)) == (0, 0, 14, 19)


def _g(h: tuple, w: tuple, exact: bool = True, dims: tuple | None = (2, 3), tokens: tuple | None = None) -> Geometry:
    return Geometry(Axis(*h), Axis(*w), exact, dims, tokens)


def test_merge_partial_broadcast_operand_takes_the_centre_units_union() -> None:
    """A broadcast operand that covers only part of what the units see: the centre unit c = (n - 1)//2 gets the
    union of its own field and the operand's hull, and every unit is that union translated (approximate).
    keep H [0, 2] jump 2 over n = 5 units, operand H [2, 5]: c = 4//2 = 2, centre field [0 + 4, 2 + 4] = [4, 6];
    lo = min(4, 2) - 4 = -2, hi = max(6, 5) - 4 = 2.
    keep W [0, 4] jump 2 over n = 6 units, operand W [3, 7]: c = 5//2 = 2, centre field [4, 8];
    lo = min(4, 3) - 4 = -1, hi = max(8, 7) - 4 = 4."""
    keep = _g((0, 2, 2, 2), (0, 4, 2, 2))
    gate = _g((2, 5, None, None), (3, 7, None, None), dims=None)
    got = _merge([keep], [(gate, (1, 2, 1, 1))], (1, 2, 5, 6), True)
    assert got == _g((-2, 2, 2, 2), (-1, 4, 2, 2), False)
    # the operand's hull reaches further than the centre unit on both sides (H [-3, 9] over 5 units of
    # [0, 2] jump 2: the units see [0, 10]; 9 < 10 so not covered): lo = min(4, -3) - 4 = -7, hi = max(6, 9) - 4 = 5
    got = _merge([keep], [(_g((-3, 9, None, None), (0, 14, None, None), dims=None), (1,))], (1, 2, 5, 6), True)
    # W [0, 14] covers [0, 4 + 5*2] = [0, 14]: global; H is not, so H becomes its hull over 5 units too:
    # [-7, 5 + 4*2] = [-7, 13]
    assert got == _g((-7, 13, None, 2), (0, 14, None, 2), False)


def test_merge_operand_covering_exactly_every_unit_is_global_and_one_short_is_not() -> None:
    """keep [0, 2] jump 2 over 5 units: together the units see [0, 2 + 4*2] = [0, 10]. An operand [0, 10]
    covers that (H: global [0, 10]); one of [0, 8] (W) does not: centre c = 2, lo = min(0 + 4, 0) - 4 = -4,
    hi = max(2 + 4, 8) - 4 = 4, and since H went global W goes global as its hull: [-4, 4 + 4*2] = [-4, 12]."""
    got = _merge([_g((0, 2, 2, 2), (0, 2, 2, 2))], [(_g((0, 10, None, None), (0, 8, None, None), dims=None), (1,))],
                 (1, 3, 5, 5), True)  # fmt: skip
    assert got == _g((0, 10, None, 2), (-4, 12, None, 2), False)


def test_merge_without_an_output_grid_counts_one_unit() -> None:
    """An output with no H/W grid (shape (1, 2)): every axis has one unit (n = 1, c = 0).
    keep [0, 2] jump 2; operand H [-1, 3] covers [0, 2 + 0] -> global [-1, 3]; W [1, 5] does not (1 > 0):
    lo = min(0, 1) = 0, hi = max(2, 5) = 5, then global with H as the hull of 1 unit: [0, 5]. And mirrored."""
    keep = _g((0, 2, 2, 2), (0, 2, 2, 2))
    got = _merge([keep], [(_g((-1, 3, None, None), (1, 5, None, None), dims=None), (1,))], (1, 2), True)
    assert (got.h, got.w) == (Axis(-1, 3, None, 2), Axis(0, 5, None, 2))
    got = _merge([keep], [(_g((1, 5, None, None), (-1, 3, None, None), dims=None), (1,))], (1, 2), True)
    assert (got.h, got.w) == (Axis(0, 5, None, 2), Axis(-1, 3, None, 2))


def test_merge_of_token_grids_uses_the_token_grid() -> None:
    """ViT tokens (axis 1, a 3x5 grid of 4x4 patches, one class token first): keep [0, 3] jump 4 on both axes.
    The units see H [0, 3 + 2*4] = [0, 11] and W [0, 3 + 4*4] = [0, 19]. An operand [0, 11] x [0, 11] covers H
    (global) but not W: c = (5-1)//2 = 2, lo = min(0 + 8, 0) - 8 = -8, hi = max(3 + 8, 11) - 8 = 3; then W goes
    global as the hull of its 5 units: [-8, 3 + 4*4] = [-8, 19]. The token layout is kept."""
    tok = _g((0, 3, 4, 4), (0, 3, 4, 4), dims=None, tokens=(1, 3, 5, 1))
    got = _merge([tok], [(_g((0, 11, None, None), (0, 11, None, None), dims=None), (1, 1, 8))], (1, 16, 8), True)
    assert got == _g((0, 11, None, 4), (-8, 19, None, 4), False, None, (1, 3, 5, 1))


def test_merge_exact_flag() -> None:
    """Exact only if every input is exact and the kept inputs share steps and jumps; the largest wins."""
    a = _g((0, 2, 1, 1), (0, 2, 1, 1))
    assert _merge([a, a], [], (1, 1, 4, 4), True) == a
    assert _merge([a, _g((0, 2, 1, 1), (0, 2, 1, 1), False)], [], (1, 1, 4, 4), True).exact is False
    assert _merge([a], [], (1, 1, 4, 4), False).exact is False  # the caller's own flag
    # same jump, steps 1 and 2 (H): step 2, approximate
    assert _merge([a, _g((0, 2, 1, 2), (0, 2, 1, 1))], [], (1, 1, 4, 4), True) == _g((0, 2, 1, 2), (0, 2, 1, 1), False)
    # same step, jumps 1 and 2 (W): lo = min(0, -1), hi = max(2, 3), jump 2, approximate
    assert _merge([a, _g((0, 2, 1, 1), (-1, 3, 2, 1))], [], (1, 1, 4, 4), True) == _g(
        (0, 2, 1, 1), (-1, 3, 2, 1), False
    )


def test_merge_of_global_operands_only_is_their_union() -> None:
    """No kept layout (flatten, global pooling): every operand's hull merged, one field, no layout. An operand
    with a layout contributes the hull of its units: H [0, 2] jump 1 over 3 units -> [0, 4], W [0, 4] jump 2
    over 4 units -> [0, 10]."""
    one, two = (
        _g((0, 3, None, None), (2, 4, None, None), dims=None),
        _g((1, 6, None, None), (-1, 2, None, None), False, None),
    )
    assert _merge([], [(one, (1, 5)), (two, (1, 5))], (1, 10), True) == _g(
        (0, 6, None, None), (-1, 4, None, None), False, None
    )
    assert _merge([], [(one, (1, 5)), (one, (1, 5))], (1, 10), False).exact is False  # the caller's flag
    mapped = _g((0, 2, 1, 1), (0, 4, 2, 2))
    assert _merge([], [(mapped, (1, 2, 3, 4))], (1, 24), True) == _g(
        (0, 4, None, None), (0, 10, None, None), True, None
    )


def test_to_global_and_hull_by_hand() -> None:
    """The hull of n units of [lo, hi] jump j is [lo, hi + (n-1)*j]: H [-1, 3] jump 2 over 5 -> [-1, 11],
    W [0, 6] jump 3 over 7 -> [0, 24]; a map without a grid is one unit; a global axis is its own hull."""
    g = _g((-1, 3, 2, 2), (0, 6, 3, 3))
    assert _hull(g, (1, 4, 5, 7), 0) == (-1, 11) and _hull(g, (1, 4, 5, 7), 1) == (0, 24)
    assert _hull(_g((-1, 3, 2, 2), (0, 6, 3, 3), dims=None), (1, 4), 0) == (-1, 3)
    assert _hull(_g((0, 9, None, 1), (1, 8, None, 1)), (1, 4, 5, 7), 1) == (1, 8)
    assert _to_global(g, (1, 4, 5, 7)) == _g((-1, 11, None, None), (0, 24, None, None), True, None)
    assert _to_global(_g((-1, 3, 2, 2), (0, 6, 3, 3), False), (1, 4, 5, 7)).exact is False


def test_slice_geometry_by_hand() -> None:
    """x[key] on H [0, 2] jump 2 (7 units) and W [0, 4] jump 1 (16 units): units a, a+t, ... of an axis give
    lo' = lo + a*jump, hi' = hi + a*jump, jump' = step' = t*jump; ints drop their axis."""
    g, shape = _g((0, 2, 2, 2), (0, 4, 1, 1)), (1, 3, 7, 16)
    # 0 drops the batch axis, ... covers C: H a = 1, t = 2 -> [2, 4] jump 4; W a = 2, t = 3 -> [2, 6] jump 3
    assert _slice_geometry(g, shape, (0, E, slice(1, None, 2), slice(2, None, 3))) == _g(
        (2, 4, 4, 4), (2, 6, 3, 3), dims=(1, 2)
    )
    # negative start -3 of 7 is unit 4: [0 + 4*2, 2 + 4*2] = [8, 10]; W 1:-1:2 -> [1, 5] jump 2
    assert _slice_geometry(g, shape, (slice(None), slice(None), slice(-3, None), slice(1, -1, 2))) == _g(
        (8, 10, 2, 2), (1, 5, 2, 2)
    )
    assert _slice_geometry(g, shape, 0) == _g((0, 2, 2, 2), (0, 4, 1, 1), dims=(1, 2))  # not a tuple: one int
    assert _slice_geometry(g, shape, slice(0, 1)) == g
    assert _slice_geometry(g, shape, (slice(None), 2)) == _g((0, 2, 2, 2), (0, 4, 1, 1), dims=(1, 2))
    assert _slice_geometry(_g((0, 2, 2, 2), (0, 4, 1, 1), False), shape, (E, slice(1, None))).exact is False
    # a global field keeps [lo, hi]; the layout step still stretches: 2*2 = 4 and 1*3 = 3
    glob = _g((-1, 12, None, 2), (0, 20, None, 1))
    assert _slice_geometry(glob, shape, (E, slice(1, None, 2), slice(None, None, 3))) == _g(
        (-1, 12, None, 4), (0, 20, None, 3)
    )
    nostep = _g((0, 9, None, None), (0, 9, None, None))
    assert _slice_geometry(nostep, shape, (E, slice(None, None, 2))) == nostep


@pytest.mark.parametrize(
    "key",
    [
        (slice(None), slice(None), 3),  # an int on H: the axis is gone
        (E, 2),  # an int on W
        (True,),  # a bool is a mask, not an index
        (None,),  # a new axis
        (E, E),  # two Ellipsis
        (0, 0, slice(None), slice(None), slice(None)),  # more indices than axes
        (E, 0, 0, slice(None), slice(None), slice(None)),
        (torch.tensor([0]),),  # advanced indexing
    ],
)
def test_slice_geometry_refuses(key: object) -> None:
    assert _slice_geometry(_g((0, 2, 2, 2), (0, 4, 1, 1)), (1, 3, 7, 16), key) is None
    assert _slice_geometry(_g((0, 2, 2, 2), (0, 4, 1, 1), dims=None), (1, 3, 7, 16), slice(None)) is None


# ------------------------------------------------------------------ the positive copy: which tensors are replaced
class _RootKernel(nn.Module):
    """A 3x3 kernel held by the root module itself, pruned to its centre tap, then a child 3x3 conv."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1, 1, 3, 3))
        with torch.no_grad():
            self.weight[0, 0, 1, 1] = 1.0
        self.body = nn.Conv2d(1, 1, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(F.conv2d(x, self.weight))


class _NormGate(nn.Module):
    """1x1 conv -> BatchNorm -> squeeze-excitation style product z · mean(z)."""

    def __init__(self, running_mean: float) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 1)
        self.bn = nn.BatchNorm2d(2)
        self.bn.running_mean.fill_(running_mean)
        self.out = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.bn(self.conv(x))
        return self.out(z * z.mean((2, 3), keepdim=True))


class _MaskedConv(nn.Module):
    """A PixelCNN-style causal conv: the kernel times a fixed 0/1 mask buffer (taps right of and below the
    centre cut), then a 1x1 conv."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1)
        mask = torch.ones(1, 1, 3, 3)
        mask[0, 0, 1, 2] = 0
        mask[0, 0, 2, :] = 0
        self.register_buffer("mask", mask)
        self.out = nn.Conv2d(1, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(F.conv2d(x, self.conv.weight * self.mask, self.conv.bias, padding=1))


class _DeepWide(nn.Module):
    """3x3 conv to 256 channels, 130 pointwise Linear 256 -> 256 on the channels-last map (ConvNeXt's
    pointwise layers), then a product z · mean(z)."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Conv2d(1, 256, 3)
        self.body = nn.Sequential(*[nn.Linear(256, 256) for _ in range(130)])
        self.out = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.body(self.inp(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.out(z * z.mean((2, 3), keepdim=True))


class _BlurPool(nn.Module):
    """Anti-aliased downsampling: a fixed binomial [1, 2, 1]² / 16 kernel kept as a float32 buffer, applied per
    channel with stride 2 (the buffer IS the conv weight, so it must follow the probe to float64)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        row = torch.tensor([1.0, 2.0, 1.0])
        self.register_buffer("filt", (row[:, None] * row[None, :] / 16).expand(2, 1, 3, 3).clone())
        self.out = nn.Conv2d(2, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(F.conv2d(self.conv(x), self.filt, stride=2, padding=1, groups=2))


def test_positive_copy_replaces_root_parameters_norm_statistics_not_masks() -> None:
    """The measurement runs on a copy whose weights are positive constants and whose BatchNorm statistics are
    mean 0 / variance 1, while other buffers (a mask) are the model's own. Boxes by hand:
    * root-level kernel (pruned to one tap in the real model) + 3x3 conv: 5x5 on a 9x9 probe, unit (2, 2)
      sees rows/cols 2..6; on the real weights it would be the 3x3 of the child conv alone;
    * BatchNorm with running mean 1 after a 1x1 conv whose copy outputs exactly 1: with the mean reset to 0
      the normalised map is 1/sqrt(1 + eps) > 0 and the gate sees the whole 5x5 probe (a kept mean of 1
      would make the map 0 and the product z · mean(z) would have no gradient at all);
    * the causal mask keeps the row above (3 taps) and the centre row up to the centre (2 taps): unit (4, 4)
      of a 9x9 probe sees rows 3..4, cols 3..5, 5 pixels;
    * a blur buffer used as a stride-2 conv weight: 3x3 conv (padding 1) then 3x3 at stride 2 (padding 1) is a
      5x5 field; unit (3, 3) of the 6x6 output of an 11x11 probe is centred on input pixel 6: rows 4..8."""
    e = receptive_field_empirical(_RootKernel(), "body", 9, in_channels=1)
    assert (e.unit, e.box, e.pixels) == ((2, 2), (2, 2, 6, 6), 25)
    e = receptive_field_empirical(_NormGate(1.0).eval(), "out", 5, in_channels=1)
    assert (e.unit, e.box, e.pixels) == ((2, 2), (0, 0, 4, 4), 25)
    e = receptive_field_empirical(_MaskedConv(), "out", 9, in_channels=1)
    assert (e.unit, e.box, e.size, e.pixels) == ((4, 4), (3, 3, 4, 5), (2, 3), 5)
    e = receptive_field_empirical(_BlurPool(), "out", 11, in_channels=1)
    assert (e.unit, e.box, e.pixels) == ((3, 3), (4, 4, 8, 8), 25)


def test_positive_copy_stays_finite_through_depth_and_width() -> None:
    """Each weight is 1/C_in (a channel average per tap), so a pointwise Linear maps the copy's value 1 to 1 at
    any width and depth. (A plain channel sum would reach 256^130 = 2^1040 > float64's 2^1024: inf, and the gate's
    rescaling inf/inf gives a NaN gradient.) The gate makes the field global: the whole 7x7 probe."""
    e = receptive_field_empirical(_DeepWide(), "out", 7, in_channels=1)
    assert (e.box, e.pixels) == ((0, 0, 6, 6), 49)
