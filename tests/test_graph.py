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
from convlens.graph import trace
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
