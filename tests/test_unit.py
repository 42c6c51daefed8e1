"""One unit: trace_unit against the model's own value and against independent per-channel torch
convolutions; unit_receptive_field against summarize and receptive_field_empirical; the effective field
against the gradient support; the `convlens unit` CLI contract."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torchvision.ops import Permute

from convlens.cli import main
from convlens.errors import InputError, LayerError
from convlens.hooks import hook_count
from convlens.inspect import (
    UnitReceptiveField,
    effective_receptive_field,
    get_activations,
    receptive_field_empirical,
    summarize,
    trace_unit,
    unit_receptive_field,
)
from convlens.inspect.erf import field_box

TRACED = (
    nn.Conv2d,
    nn.BatchNorm2d,
    nn.Linear,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.ReLU,
    nn.ReLU6,
    nn.Hardswish,
    nn.SiLU,
)


class HandNet(nn.Module):
    """Dilated, strided, grouped and depthwise convs, 'same' and reflect padding, ceil-mode and
    count_include_pad=False pools, an inplace ReLU, a functional residual add and a concatenation."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, stride=2, padding=2, dilation=2)
        self.bn = nn.BatchNorm2d(8)
        self.act = nn.ReLU(inplace=True)
        self.g = nn.Conv2d(8, 12, (3, 5), stride=(1, 2), padding=(1, 2), groups=4)
        self.dw = nn.Conv2d(12, 12, 3, padding="same", groups=12, bias=False)
        self.refl = nn.Conv2d(12, 12, 3, padding=1, padding_mode="reflect")
        self.pool = nn.MaxPool2d(3, 2, padding=1, ceil_mode=True)
        self.avg = nn.AvgPool2d(3, 2, padding=1, count_include_pad=False, ceil_mode=True)
        self.hs = nn.Hardswish()
        self.fc = nn.Linear(24, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.bn(self.a(x)))
        y = self.g(x)
        y = torch.add(self.dw(y), self.refl(y))  # a functional residual add
        z = torch.cat([self.pool(y), self.hs(self.avg(y))], 1)
        return self.fc(z.mean((2, 3)))


def _hand() -> nn.Module:
    torch.manual_seed(1)
    net = HandNet()
    with torch.no_grad():  # non-trivial running statistics
        net.bn.running_mean.uniform_(-1, 1)
        net.bn.running_var.uniform_(0.5, 2)
    return net.eval()


def _positions(shape: tuple[int, ...], rng: random.Random, n_corners: int = 3) -> list[tuple[int, ...]]:
    if len(shape) == 2:
        return [(rng.randrange(shape[1]),), (shape[1] - 1,)]
    c, h, w = shape[1:]
    corners = [(0, 0), (h - 1, w - 1), (0, w - 1)][:n_corners]
    return [(rng.randrange(c), i, j) for i, j in corners] + [(rng.randrange(c), rng.randrange(h), rng.randrange(w))]


def _check_all(model: nn.Module, x: torch.Tensor, *, oracle: bool = True) -> int:
    """Every traced layer type at border and random positions: traced total == the model's own value
    (with ``oracle``, that value is also read independently through get_activations)."""
    rng = random.Random(0)
    n = 0
    for name, m in model.named_modules():
        if not isinstance(m, TRACED):
            continue
        if oracle:
            acts = get_activations(model, x, f"{name}#0")[f"{name}#0"]
            positions = _positions(tuple(acts.shape), rng)
        else:  # the first trace (a corner) gives the shape; then the opposite corner and a random position
            first = trace_unit(model, x, name, (0, 0, 0), call=0)
            assert first.abs_error < 1e-4, (name, first.value, first.total)
            n += 1
            positions = _positions(first.output_shape, rng, 2)[1:]
        for at in positions:
            t = trace_unit(model, x, name, at, call=0)
            assert t.abs_error < 1e-4, (name, at, t.value, t.total)
            if oracle:
                assert t.value == pytest.approx(float(acts[(0, *at)]), abs=1e-6), (name, at)
            n += 1
    return n


def test_every_layer_of_hand_net() -> None:
    net = _hand()
    x = torch.randn(1, 3, 23, 29, generator=torch.Generator().manual_seed(0))
    assert _check_all(net, x) > 30
    assert hook_count(net) == 0


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small", "efficientnet_lite0"])
def test_every_layer_of_real_models(name: str, chelsea: np.ndarray) -> None:
    from convlens.models import load_model

    b = load_model(name)
    x = torch.nn.functional.interpolate(b.preprocess([chelsea]), size=(112, 112), mode="bilinear")  # CI time
    assert _check_all(b.model, x, oracle=False) > 100


def test_conv_terms_equal_per_channel_torch_convs() -> None:
    """Each input channel's sum is an independent one-channel F.conv2d of that channel with that kernel slice."""
    net = _hand()
    x = torch.randn(1, 3, 23, 29, generator=torch.Generator().manual_seed(2))
    h = get_activations(net, x, "act")["act"]  # the grouped conv's input
    conv = net.g
    for at in [(7, 0, 0), (5, 3, 7), (11, h.shape[2] - 1, 7)]:
        t = trace_unit(net, x, "g", at)
        c, i, j = at
        g = c // (conv.out_channels // conv.groups)
        assert t.in_channels == list(range(g * 2, g * 2 + 2))  # 8 inputs / 4 groups
        for term, k in zip(t.terms, t.in_channels, strict=True):
            with torch.no_grad():
                ref = F.conv2d(
                    h[:, k : k + 1], conv.weight[c : c + 1, k - g * 2 : k - g * 2 + 1], None, conv.stride, conv.padding
                )
            assert term.channel == k and term.sum == pytest.approx(float(ref[0, 0, i, j]), abs=1e-5)
        assert t.bias == pytest.approx(float(conv.bias[c].detach()))
        assert t.total == pytest.approx(sum(s.sum for s in t.terms) + t.bias, abs=1e-9)


def test_patch_reads_padding_at_the_border() -> None:
    net = _hand()
    x = torch.randn(1, 3, 23, 29, generator=torch.Generator().manual_seed(3))
    t = trace_unit(net, x, "a", (4, 0, 0))  # stride 2, padding 2, dilation 2: rows -2, 0, 2
    assert t.rows == [-2, 0, 2] and t.cols == [-2, 0, 2]
    assert t.in_padding.tolist() == [[True, True, True], [True, False, False], [True, False, False]]
    assert t.patch[:, 1:, 1:] == pytest.approx(x[0, :, 0:3:2, 0:3:2].numpy())
    assert np.all(t.patch[:, 0, :] == 0) and np.all(t.patch[:, :, 0] == 0)
    assert t.kernel == pytest.approx(net.a.weight[4].detach().numpy())


def test_timm_same_padding_is_read_as_the_module_applies_it(lite0, chelsea: np.ndarray) -> None:
    """conv_stem is timm's Conv2dSame: stride 2 on 224 pads 0 rows on top and 1 at the bottom (TF 'SAME')."""
    x = lite0.preprocess([chelsea])
    t = trace_unit(lite0.model, x, "conv_stem", (3, 111, 111))
    assert t.rows == [222, 223, 224] and t.cols == [222, 223, 224]
    assert t.in_padding[2].all() and t.in_padding[:, 2].all() and not t.in_padding[:2, :2].any()
    t0 = trace_unit(lite0.model, x, "conv_stem", (3, 0, 0))
    assert not t0.in_padding.any() and t0.abs_error < 1e-4


def test_batch_norm_numbers_are_the_running_statistics() -> None:
    net = _hand()
    x = torch.randn(1, 3, 23, 29)
    t = trace_unit(net, x, "bn", (5, 3, 4))
    bn = net.bn
    assert t.numbers["mean"] == pytest.approx(float(bn.running_mean[5]))
    assert t.numbers["var"] == pytest.approx(float(bn.running_var[5]))
    assert t.numbers["gamma"] == pytest.approx(float(bn.weight[5].detach())) and t.bias == pytest.approx(
        float(bn.bias[5].detach())
    )
    pre = get_activations(net, x, "a")["a"]
    assert t.numbers["x"] == pytest.approx(float(pre[0, 5, 3, 4]), abs=1e-6)


def test_inplace_relu_sees_its_input_before_it_ran() -> None:
    net = _hand()
    x = torch.randn(1, 3, 23, 29, generator=torch.Generator().manual_seed(4))
    pre = get_activations(net, x, "bn")["bn"]
    neg = torch.nonzero(pre[0] < 0)[0].tolist()
    t = trace_unit(net, x, "act", tuple(neg))
    assert (
        t.op.startswith("relu") and t.value == 0.0 and t.terms[0].sum == pytest.approx(float(pre[(0, *neg)]), abs=1e-6)
    )


def test_linear_terms_sorted_and_sum() -> None:
    net = _hand()
    x = torch.randn(1, 3, 23, 29)
    t = trace_unit(net, x, "fc", (3,))
    mags = [abs(s.sum) for s in t.terms]
    assert mags == sorted(mags, reverse=True) and len(t.terms) == 24
    assert t.total == pytest.approx(sum(s.sum for s in t.terms) + float(net.fc.bias[3].detach()), abs=1e-9)
    assert trace_unit(net, x, "fc", (3, 0, 0)).value == t.value


def test_residual_add_names_its_branches(resnet18_bundle, chelsea: np.ndarray) -> None:
    model = resnet18_bundle.model
    x = resnet18_bundle.preprocess([chelsea])
    acts = get_activations(model, x, ["layer2.0.bn2", "layer2.0.downsample"])
    t = trace_unit(model, x, "layer2.0", (9, 4, 6))
    assert t.op.startswith("relu") and t.inner is not None and t.inner.kind == "add"
    branches = {s.source: s.sum for s in t.inner.terms}
    assert set(branches) == {"layer2.0.bn2", "layer2.0.downsample.1"}
    assert branches["layer2.0.bn2"] == pytest.approx(float(acts["layer2.0.bn2"][0, 9, 4, 6]), abs=1e-5)
    assert branches["layer2.0.downsample.1"] == pytest.approx(float(acts["layer2.0.downsample"][0, 9, 4, 6]), abs=1e-5)
    assert t.abs_error < 1e-4 and t.inner.abs_error < 1e-4
    # identity shortcut: the block's own input
    t1 = trace_unit(model, x, "layer1.1", (2, 0, 55))
    assert {s.source for s in t1.inner.terms} == {"layer1.1.bn2", "input"}


def test_concat_and_functional_add_and_mean() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.l, self.r = nn.Conv2d(2, 3, 1), nn.Conv2d(2, 4, 3, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.cat([self.l(x), self.r(x)], 1) * 2 - 1

    torch.manual_seed(0)
    net = Net().eval()
    x = torch.randn(1, 2, 5, 5)
    whole = nn.Sequential(net)
    t = trace_unit(whole, x, "0", (5, 1, 2))  # (cat * 2) - 1
    assert t.kind == "add" and t.abs_error < 1e-5 and t.terms[1].sum == -1.0


def test_unsupported_op_and_bad_positions() -> None:
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Upsample(scale_factor=2))
    x = torch.randn(1, 1, 6, 6)
    with pytest.raises(LayerError, match="cannot expand"):
        trace_unit(net, x, "1", (0, 0, 0))
    with pytest.raises(InputError, match="outside"):
        trace_unit(net, x, "0", (2, 0, 0))
    with pytest.raises(InputError, match="NaN"):
        trace_unit(net, torch.full((1, 1, 6, 6), float("nan")), "0", (0, 0, 0))
    with pytest.raises(LayerError):
        trace_unit(net, x, "nope", (0, 0, 0))
    with pytest.raises(LayerError, match="call index"):
        trace_unit(net, x, "0#3", (0, 0, 0))
    assert hook_count(net) == 0


def test_modes_restored() -> None:
    net = _hand().train()
    net.fc.weight.requires_grad_(False)
    x = torch.randn(1, 3, 23, 29)
    trace_unit(net, x, "g", (0, 1, 1), field=True)
    assert net.training and net.bn.training and not net.fc.weight.requires_grad and net.a.weight.requires_grad
    assert net.a.weight.grad is None and hook_count(net) == 0


@pytest.mark.parametrize("layer", ["a", "g", "dw", "pool", "avg"])
def test_box_size_is_summary_rf_and_where_empirical_support_is(layer: str) -> None:
    net = _hand()
    size = (3, 47, 61)
    rec = summarize(net, size).layer(layer)
    out = get_activations(net, torch.zeros(1, *size), layer)[layer]
    h, w = out.shape[2:]
    for i, j in [(0, 0), (h // 2, w // 2), (h - 1, w - 1)]:
        u = unit_receptive_field(net, layer, (i, j), size)
        assert u.size == tuple(rec.receptive_field)
        emp = receptive_field_empirical(net, layer, size[1:], unit=(i, j))
        assert u.clipped_box == emp.box, (layer, i, j)
        t, l_, b, r = u.box
        assert u.padding == (max(0, -t), max(0, -l_), max(0, b - 46), max(0, r - 60))


@pytest.mark.slow
def test_box_on_real_model_matches_empirical(lite0) -> None:
    for layer, at in [("blocks.3.0.conv_pw", (5, 9)), ("blocks.1.0.conv_dw", (0, 0)), ("blocks.2", (27, 27))]:
        u = unit_receptive_field(lite0.model, layer, at, 224)
        emp = receptive_field_empirical(lite0.model, layer, 224, unit=at)
        assert u.clipped_box == emp.box
        assert u.size == tuple(summarize(lite0.model).layer(layer).receptive_field)


def test_effective_field_support_inside_box_and_single_conv_oracle() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 5, padding=2)).eval()
    x = torch.randn(1, 3, 16, 16)
    e = effective_receptive_field(net, x, "0", (1, 0, 7))
    # linear layer: dy/dx = the kernel; the map is sum_colour |w| over the box inside the image, normalised
    ref = net[0].weight[1].detach().abs().sum(0)[2:, :]
    ref = ref / ref.sum()
    assert e.map[0:3, 5:10] == pytest.approx(ref.numpy(), abs=1e-6)
    assert e.mass_in_box == pytest.approx(1.0) and e.support_box == (0, 5, 2, 9)
    assert 0 < e.r50 <= e.r90


def test_effective_field_on_real_model(lite0, chelsea: np.ndarray) -> None:
    x = lite0.preprocess([chelsea])
    t = trace_unit(lite0.model, x, "blocks.3.0.conv_pw", (17, 5, 9), field=True)
    top, left, bottom, right = t.rf.clipped_box
    sb = t.erf.support_box
    assert top <= sb[0] and left <= sb[1] and sb[2] <= bottom and sb[3] <= right
    assert t.erf.mass_in_box == pytest.approx(1.0, abs=1e-6)
    assert t.erf.r90 < t.rf.size[0] / 2  # Luo et al.: the effective field is much smaller
    assert float(np.abs(t.erf.map).sum()) == pytest.approx(1.0, abs=1e-4)
    head = trace_unit(lite0.model, x, "classifier", (285,), field=True)  # a flat layer: the global hull
    assert head.rf.is_global and head.rf.clipped_box == (0, 0, 223, 223) and head.erf.mass_in_box == 1.0


def _hand_erf(model: nn.Module, x: torch.Tensor, index: tuple[int, ...]) -> np.ndarray:
    """The oracle: sum over colour of |d out[index] / d x| by plain torch autograd, normalised to sum 1."""
    xg = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(model(xg)[index], xg)
    m = g[0].abs().sum(0)
    return (m / m.sum()).numpy()


def test_effective_field_of_channels_last_layer_is_channel_row_column() -> None:
    """(c, i, j) is channel c at row i, column j on an (N, H, W, C) output too: the ERF is the hand gradient
    of out[0, i, j, c] and the box that of the same unit of the NCHW twin (a 1x1 convolution)."""

    torch.manual_seed(0)
    conv, lin = nn.Conv2d(3, 5, 3, stride=2), nn.Linear(5, 7)
    nhwc = nn.Sequential(conv, Permute([0, 2, 3, 1]), lin).eval()  # layer "2" outputs (1, 6, 4, 7)
    twin = nn.Sequential(conv, nn.Conv2d(5, 7, 1)).eval()  # the same net, channels first
    twin[1].weight.data = lin.weight.data[:, :, None, None].clone()
    twin[1].bias.data = lin.bias.data.clone()
    x = torch.randn(1, 3, 13, 9)
    for c, i, j in ((3, 1, 2), (6, 5, 0), (0, 2, 3)):  # (3, 1, 2) also indexes (1, 6, 4, 7) as (0, c, i, j)
        e = effective_receptive_field(nhwc, x, "2", (c, i, j))
        assert e.map == pytest.approx(_hand_erf(nhwc, x, (0, i, j, c)), abs=1e-6)
        assert e.map == pytest.approx(_hand_erf(twin, x, (0, c, i, j)), abs=1e-6)
        assert e.support_box == (2 * i, 2 * j, 2 * i + 2, 2 * j + 2)  # kernel 3, stride 2, no padding
        u = unit_receptive_field(nhwc, "2", (c, i, j), (3, 13, 9))
        assert u.box == unit_receptive_field(twin, "1", (c, i, j), (3, 13, 9)).box == e.support_box
        assert e.mass_in_box == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(InputError, match="outside"):
        effective_receptive_field(nhwc, x, "2", (7, 1, 2))  # channel 7 of 7 channels


def test_trace_unit_field_on_convnext_channels_last_linear() -> None:
    """trace_unit(..., field=True) on ConvNeXt's channels-last Linear: channel 700 (of 1536) at row 3, column 0."""
    import torchvision

    torch.manual_seed(0)
    m = torchvision.models.convnext_tiny().eval()
    x = torch.randn(1, 3, 64, 64)
    layer = "features.5.0.block.3"  # outputs (1, 4, 4, 1536)
    t = trace_unit(m, x, layer, (700, 3, 0), field=True)
    assert t.erf.map == pytest.approx(
        _hand_erf(nn.Sequential(*[m.features[i] for i in range(5)], m.features[5][0].block[:4]), x, (0, 3, 0, 700)),
        abs=1e-6,
    )
    assert t.rf.unit == (3, 0) and t.erf.mass_in_box == pytest.approx(1.0, abs=1e-6)


@pytest.mark.slow
def test_cli_unit_json_contract(capsys, tmp_path, chelsea: np.ndarray) -> None:
    from PIL import Image

    img = tmp_path / "cat.png"
    Image.fromarray(chelsea).save(img)
    code = main(
        [
            "unit",
            str(img),
            "--layer",
            "blocks.3.0.conv_pw",
            "--at",
            "17,5,9",
            "--json",
            "--out",
            str(tmp_path / "o"),
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    d = json.loads(out)
    for key in ("layer", "at", "value", "total", "abs_error", "terms", "bias", "rf_box", "erf"):
        assert key in d
    assert d["at"] == [17, 5, 9] and d["abs_error"] < 1e-4 and len(d["terms"]) == 40
    assert set(d["terms"][0]) >= {"channel", "sum"} and set(d["erf"]) >= {"mass_in_box", "r50", "r90"}
    assert d["rf_box"] == [14, 46, 80, 112]
    for f in ("trace.png", "rf.png", "unit.json"):
        assert (tmp_path / "o" / f).stat().st_size > 100
    assert json.loads((tmp_path / "o" / "unit.json").read_text())["total"] == d["total"]
    code = main(["unit", str(img), "--layer", "blocks.3.0.conv_pw", "--at", "17,5"])
    assert code == 2 and "error: --at" in capsys.readouterr().err


def test_default_is_the_last_call_also_when_remembered() -> None:
    """A module used twice: the default traces its last call (as get_activations shows it), the first run
    and the later, early-stopped runs alike."""

    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.act = nn.Conv2d(1, 2, 3, padding=1), nn.ReLU()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.act(self.conv(self.act(x)) - 0.5)

    torch.manual_seed(0)
    net = Twice().eval()
    x = torch.randn(1, 1, 6, 6)
    last = get_activations(net, x, "act")["act"]
    for _ in range(2):
        t = trace_unit(net, x, "act", (1, 2, 3))
        assert t.call == 1 and t.value == pytest.approx(float(last[0, 1, 2, 3]))
    assert trace_unit(net, x, "act#0", (0, 2, 3)).call == 0


def test_channels_last_blocks_and_group_norm() -> None:
    """ConvNeXt's block (permute to NHWC, LayerNorm, Linear, permute back) and GroupNorm: exact at every step."""
    import torchvision

    torch.manual_seed(0)
    m = torchvision.models.convnext_tiny().eval()
    x = torch.randn(1, 3, 64, 64)
    for layer in ("features.1.0.block", "features.1.0.block.2", "features.4.0", "features.1.0", "features.0"):
        t = trace_unit(m, x, layer, (5, 3, 2))
        assert t.abs_error < 1e-4, layer
    assert trace_unit(m, x, "features.1.0.block", (5, 3, 2)).op == "linear"  # through the permute back to NCHW
    g = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Sequential(nn.GroupNorm(2, 8), nn.GELU())).eval()
    t = trace_unit(g, x, "1.0", (7, 2, 3))
    conv = get_activations(g, x, "0")["0"][0, 4:8]  # channel 7's group: channels 4..7
    assert t.numbers["mean"] == pytest.approx(float(conv.double().mean()), abs=1e-6) and t.abs_error < 1e-5
    act = trace_unit(g, x, "1", (7, 2, 3))  # GELU <- GroupNorm inside one block
    assert act.op == "gelu" and act.inner.kind == "norm" and act.inner.total == pytest.approx(t.total)


@settings(max_examples=25, deadline=None)
@given(
    k=st.integers(1, 4),
    s=st.integers(1, 3),
    p=st.integers(0, 3),
    d=st.integers(1, 2),
    g=st.sampled_from([1, 2, 4]),
    size=st.integers(6, 13),
    seed=st.integers(0, 2**16),
    pool=st.sampled_from(["max", "avg", "avg_nopad"]),
)
def test_any_conv_and_pool_geometry(k: int, s: int, p: int, d: int, g: int, size: int, seed: int, pool: str) -> None:
    """Random kernel/stride/padding/dilation/groups and pool windows: the traced total is the model's value at
    every border and a random position, and each conv term is a one-channel F.conv2d."""
    if d * (k - 1) + 1 > size + 2 * p:
        return
    gen = torch.Generator().manual_seed(seed)
    conv = nn.Conv2d(4, 8, k, stride=s, padding=p, dilation=d, groups=g)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen))
    kp = min(2, size)
    layer = (
        nn.MaxPool2d(kp, 2, padding=kp // 2, ceil_mode=True)
        if pool == "max"
        else nn.AvgPool2d(kp, 2, padding=kp // 2, ceil_mode=True, count_include_pad=pool == "avg")
    )
    net = nn.Sequential(conv, layer).eval()
    x = torch.randn(1, 4, size, size + 1, generator=gen)
    y = net[0](x)
    rng = random.Random(seed)
    for at in _positions((1, *y.shape[1:]), rng):
        t = trace_unit(net, x, "0", at)
        assert t.abs_error < 1e-4
        c, i, j = at
        grp = c // (8 // g)
        for term in t.terms:
            kk = term.channel - grp * (4 // g)
            with torch.no_grad():
                ref = F.conv2d(
                    x[:, term.channel : term.channel + 1], conv.weight[c : c + 1, kk : kk + 1], None, s, p, d
                )
            assert term.sum == pytest.approx(float(ref[0, 0, i, j]), abs=1e-4)
    z = net(x)
    for at in _positions((1, *z.shape[1:]), rng):
        assert trace_unit(net, x, "1", at).abs_error < 1e-4


def _grad_map(out: torch.Tensor, xg: torch.Tensor) -> np.ndarray:
    """The oracle for one scalar ``out`` computed by hand from ``xg``: sum over colour of |d out / d x| of the
    first image, by plain torch autograd, normalised to sum 1."""
    (g,) = torch.autograd.grad(out, xg, retain_graph=True)
    m = g[0].abs().sum(0)
    return (m / m.sum()).numpy()


class _Thrice(nn.Module):
    """One 3x3 convolution (padding 1) used three times, at 16x16, 8x8 and 4x4 (2x2 average pools between)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.pool = nn.Conv2d(1, 1, 3, padding=1), nn.AvgPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.pool(self.conv(self.pool(self.conv(x)))))


def test_effective_field_of_each_call_of_a_reused_module() -> None:
    """Call k of a module used three times is that call's field: the map is the hand gradient of the k-th
    output and the centre that of its box; 'conv#k' and call=k agree, the default is the last call."""
    torch.manual_seed(0)
    net = _Thrice().eval()
    x = torch.randn(1, 1, 16, 16)
    xg = x.clone().requires_grad_(True)
    y0 = net.conv(xg)
    y1 = net.conv(net.pool(y0))
    y2 = net.conv(net.pool(y1))
    i, j = 1, 2
    # unit (i, j) of call 0 sees x rows i-1..i+1; call 1: pooled rows i-1..i+1 = y0 rows 2i-2..2i+3 = x rows
    # 2i-3..2i+4 (centre 2i+0.5); call 2: pooled rows i-1..i+1 = y1 rows 2i-2..2i+3 = y0 rows 4i-6..4i+9 =
    # x rows 4i-7..4i+10 (centre 4i+1.5)
    expected = {
        0: (_grad_map(y0[0, 0, i, j], xg), (1.0, 2.0)),
        1: (_grad_map(y1[0, 0, i, j], xg), (2.5, 4.5)),
        2: (_grad_map(y2[0, 0, i, j], xg), (5.5, 9.5)),
    }
    for k, (ref, centre) in expected.items():
        for e in (
            effective_receptive_field(net, x, "conv", (0, i, j), call=k),
            effective_receptive_field(net, x, f"conv#{k}", (0, i, j)),
        ):
            assert e.map == pytest.approx(ref, abs=1e-6), k
            assert e.center == centre and e.mass_in_box == pytest.approx(1.0, abs=1e-6), k
    last = effective_receptive_field(net, x, "conv", (0, i, j))
    assert last.map == pytest.approx(expected[2][0], abs=1e-6) and last.center == (5.5, 9.5)
    box = unit_receptive_field(net, "conv", (i, j), (1, 16, 16))
    with pytest.raises(LayerError, match="call index 3"):  # the forward pass itself has 3 calls (0, 1, 2)
        effective_receptive_field(net, x, "conv", (0, i, j), call=3, rf=box)


def test_effective_field_box_is_at_the_image_size_and_channels() -> None:
    """The box comes from the graph at x's own (C, H, W): an adaptive pool's window depends on H and W, and
    the stem reading x is not the first convolution registered."""

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = nn.Conv2d(4, 2, 1)  # registered first, runs last
            self.stem = nn.Conv2d(1, 4, 3, padding=1)
            self.pool = nn.AdaptiveAvgPool2d(4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.pool(self.stem(x)))

    torch.manual_seed(0)
    net = Net().eval()
    x = torch.randn(1, 1, 8, 8)
    xg = x.clone().requires_grad_(True)
    for i, j in ((0, 0), (1, 3), (3, 2)):
        e = effective_receptive_field(net, x, "pool", (2, i, j))
        assert e.map == pytest.approx(_grad_map(net.pool(net.stem(xg))[0, 2, i, j], xg), abs=1e-6)
        # pool unit i averages stem rows 2i..2i+1 (8 -> 4: window 2, stride 2), which see x rows 2i-1..2i+2
        assert e.center == (2 * i + 0.5, 2 * j + 0.5) and e.mass_in_box == pytest.approx(1.0, abs=1e-6)
        assert e.support_box == (max(2 * i - 1, 0), max(2 * j - 1, 0), min(2 * i + 2, 7), min(2 * j + 2, 7))
    e = effective_receptive_field(net, x, "stem", (3, 5, 6))  # a 3x3 unit: rows 4..6, columns 5..7
    assert e.map == pytest.approx(_grad_map(net.stem(xg)[0, 3, 5, 6], xg), abs=1e-6)
    assert e.center == (5.0, 6.0) and e.support_box == (4, 5, 6, 7)


def test_effective_field_with_a_given_box_of_a_layer_the_blank_probe_skips() -> None:
    """A branch the network takes only on non-blank images is absent from the graph traced on zeros; with its
    box given (rf=...), the field is still the hand gradient, centred on that box."""

    class Gate(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c, self.extra = nn.Conv2d(1, 2, 3), nn.Conv2d(2, 2, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.c(x)
            return self.extra(y) if bool(x.abs().sum() > 0) else y

    torch.manual_seed(0)
    net = Gate().eval()
    x = torch.randn(1, 1, 9, 9)
    xg = x.clone().requires_grad_(True)
    i, j = 2, 3
    box = (i, j, i + 4, j + 4)  # two unpadded 3x3 convolutions: rows i..i+4, columns j..j+4
    rf = UnitReceptiveField(
        "extra", (i, j), (9, 9), box, box, (0, 0, 0, 0), (5, 5), (i + 2.0, j + 2.0), (1.0, 1.0), True, False
    )
    e = effective_receptive_field(net, x, "extra", (1, i, j), rf=rf)
    assert e.map == pytest.approx(_grad_map(net.extra(net.c(xg))[0, 1, i, j], xg), abs=1e-6)
    assert e.center == (4.0, 5.0) and e.support_box == box and e.mass_in_box == pytest.approx(1.0, abs=1e-6)


def test_effective_field_is_taken_in_eval_mode_and_leaves_the_model_as_it_was() -> None:
    """A training-mode model with batch norm and dropout: the field is the eval-mode hand gradient; mode,
    running statistics, requires_grad flags and .grad are untouched."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.Dropout(0.5), nn.Conv2d(3, 2, 3))
    with torch.no_grad():
        net[1].running_mean.uniform_(-1, 1)
        net[1].running_var.uniform_(0.5, 2)
    net[3].bias.requires_grad_(False)
    stats = (net[1].running_mean.clone(), net[1].running_var.clone(), int(net[1].num_batches_tracked))
    x = torch.randn(1, 2, 10, 10)
    net.eval()
    xg = x.clone().requires_grad_(True)
    ref = _grad_map(net(xg)[0, 1, 2, 3], xg)
    net.train()
    e = effective_receptive_field(net, x, "3", (1, 2, 3))
    assert e.map == pytest.approx(ref, abs=1e-6)
    assert net.training and net[1].training and net[2].training
    assert torch.equal(net[1].running_mean, stats[0]) and torch.equal(net[1].running_var, stats[1])
    assert int(net[1].num_batches_tracked) == stats[2]
    assert [p.requires_grad for p in net.parameters()] == [True] * 5 + [False]
    assert all(p.grad is None for p in net.parameters())


def test_effective_field_of_a_batch_is_that_of_its_first_image() -> None:
    """Only x[0] is read: with batch statistics (track_running_stats=False) a second image would change the
    first one's gradient, yet the field equals the hand gradient of the model on x[:1] alone."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2, track_running_stats=False), nn.Conv2d(2, 1, 3))
    net.eval()
    x = torch.randn(2, 1, 9, 9)
    e = effective_receptive_field(net, x, "2", (0, 2, 1))
    first = x[:1].clone().requires_grad_(True)
    assert e.map == pytest.approx(_grad_map(net(first)[0, 0, 2, 1], first), abs=1e-6)
    both = x.clone().requires_grad_(True)
    assert np.abs(e.map - _grad_map(net(both)[0, 0, 2, 1], both)).max() > 1e-3  # the batch does change it


def test_effective_field_of_a_flat_output_is_centred_on_the_image() -> None:
    """An (N, F) output has no box: the radii are around the image centre ((H-1)/2, (W-1)/2) = (2, 3.5) on a
    5x8 image. Output 1 reads pixel (2, 3) with weight 0.6 and pixel (0, 7) with weight -0.4."""
    net = nn.Sequential(nn.Flatten(), nn.Linear(40, 2, bias=False)).eval()
    with torch.no_grad():
        net[1].weight.zero_()
        net[1].weight[0, 0] = 1.0
        net[1].weight[1, 2 * 8 + 3] = 0.6
        net[1].weight[1, 0 * 8 + 7] = -0.4
    e = effective_receptive_field(net, torch.randn(1, 1, 5, 8), "1", (1,))
    ref = np.zeros((5, 8), dtype=np.float32)
    ref[2, 3], ref[0, 7] = 0.6, 0.4
    assert e.map == pytest.approx(ref, abs=1e-6) and e.center == (2.0, 3.5)
    # 0.6 of the mass at distance |(2, 3) - (2, 3.5)| = 0.5; all of it by distance sqrt(2^2 + 3.5^2) = 4.0311
    assert e.r50 == 0.5 and e.r90 == 4.0311
    assert e.mass_in_box == 1.0 and e.support_box == (0, 3, 2, 7) and not e.zero_gradient


def test_effective_field_of_a_layer_that_ignores_the_image_is_an_error() -> None:
    """A learned constant (a parameter broadcast over the batch) does not depend on the image: LayerError,
    even though the parameter itself requires grad."""

    class Prior(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.p = nn.Parameter(torch.randn(1, 3))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.p.expand(x.shape[0], -1)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.fc, self.prior = nn.Conv2d(1, 1, 3), nn.Linear(16, 3), Prior()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.conv(x).flatten(1)) + self.prior(x)

    net = Net().eval()
    with pytest.raises(LayerError, match="'prior' output does not depend on the image"):
        effective_receptive_field(net, torch.randn(1, 1, 6, 6), "prior", (1,))
    assert all(p.requires_grad for p in net.parameters())


def test_effective_field_through_a_stop_gradient_is_all_zero() -> None:
    """The image reaches the unit only through .detach(), and a plain tensor attribute that requires grad
    (a forgotten nn.Parameter) makes the output require grad: no gradient reaches the image, so the map is
    all zeros at the image's size and zero_gradient is set."""

    class Scale(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.s = torch.tensor(2.0, requires_grad=True)  # not registered: not a model parameter

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.detach() * self.s

    net = nn.Sequential(nn.Conv2d(3, 2, 3), nn.Flatten(), Scale()).eval()
    e = effective_receptive_field(net, torch.randn(1, 3, 7, 9), "2", (1,))
    assert e.zero_gradient and e.map.shape == (7, 9) and not e.map.any()
    assert (e.layer, e.at) == ("2", (1,))
    assert e.center == (3.0, 4.0) and e.r50 is None and e.r90 is None and e.mass_in_box is None


def test_effective_field_rejects_bad_x_and_positions() -> None:
    net = nn.Sequential(nn.Conv2d(1, 2, 3)).eval()
    with pytest.raises(InputError, match=r"x must be an \(N, C, H, W\) tensor, got torch.Size\(\[1, 6, 6\]\)"):
        effective_receptive_field(net, torch.randn(1, 6, 6), "0", (0, 1, 1))
    with pytest.raises(InputError, match="x must be an .* tensor, got"):
        effective_receptive_field(net, np.zeros((1, 1, 6, 6), dtype=np.float32), "0", (0, 1, 1))
    with pytest.raises(InputError, match=r"at \(1,\) does not index the layer's output of shape \(1, 2, 4, 4\)"):
        effective_receptive_field(net, torch.randn(1, 1, 6, 6), "0", (1,))


def test_effective_field_of_the_auto_layer_at_this_image_size() -> None:
    """'auto' is the last map larger than 1x1 at x's size: on 4x4 the second conv's output is 1x1, so it is
    the first conv (at 224 it would be the second)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 2)).eval()
    x = torch.randn(1, 3, 4, 4)
    e = effective_receptive_field(net, x, "auto", (3, 1, 0))
    xg = x.clone().requires_grad_(True)
    assert e.layer == "0" and e.map == pytest.approx(_grad_map(net[0](xg)[0, 3, 1, 0], xg), abs=1e-6)
    assert e.support_box == (1, 0, 3, 2)  # unit (1, 0) of an unpadded 3x3 conv: rows 1..3, columns 0..2


def test_global_field_is_the_same_box_for_every_unit() -> None:
    """A global field (jump None: after global pooling) does not move with the unit. By hand: a 3x3 conv with
    padding 1 on an 8x8 image has units seeing rows -1..8, so after the global average every output sees the
    box (-1, -1, 8, 8), one row/column of padding on each side; an axis [-1.5, 6.25] spans rows -2..7."""
    from convlens.graph import Axis, Geometry

    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 3))
    u = unit_receptive_field(net, "1", (0, 0), (1, 8, 8))
    assert (u.box, u.clipped_box, u.padding, u.size) == ((-1, -1, 8, 8), (0, 0, 7, 7), (1, 1, 1, 1), (10, 10))
    assert u.is_global and u.jump is None
    ax = Axis(-1.5, 6.25, None)
    for i, j in ((0, 0), (3, 2)):
        assert field_box(Geometry(ax, ax), i, j, (6, 9)) == ((-2, -2, 7, 7), (0, 0, 5, 7), (2, 2, 2, 0))


class _Fn(nn.Module):
    """A function applied as a layer (the torch call exactly as a model's forward would write it)."""

    def __init__(self, f) -> None:  # noqa: ANN001
        super().__init__()
        self.f = f

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.f(x)


@pytest.mark.parametrize(
    "middle",
    [
        lambda x: torch.max_pool2d(x, 3, 1),  # the builtin with positional arguments only: no padding, no dilation
        nn.MaxPool2d(3, 1, dilation=(1, 1)),
        nn.MaxPool2d(3, 1, dilation=[1, 1]),
        lambda x: torch.max_pool2d(torch.relu(input=x), 3, 1),  # relu with a keyword input
        nn.MaxPool2d(3, 1, ceil_mode=False),
    ],
)
def test_empirical_field_through_a_max_pool_or_relu_called_any_way(middle) -> None:  # noqa: ANN001
    """conv 3x3 -> 3x3 window (stride 1) -> conv 3x3: every unit sees 3 + 2 + 2 = 7 input pixels per axis,
    whichever way the pool or nonlinearity is called; unit (3, 4) sees rows 3..9, columns 4..10. The default
    unit of an 11x11 image is the centre of the 5x5 output, (2, 2): rows 2..8."""
    net = nn.Sequential(nn.Conv2d(1, 1, 3), _Fn(middle) if not isinstance(middle, nn.Module) else middle)
    net.append(nn.Conv2d(1, 1, 3))
    e = receptive_field_empirical(net, "2", 15, in_channels=1, unit=(3, 4))
    assert (e.box, e.size, e.pixels) == ((3, 4, 9, 10), (7, 7), 49)
    centre = receptive_field_empirical(net, "2", 11, in_channels=1)
    assert (centre.unit, centre.box) == ((2, 2), (2, 2, 8, 8))


@pytest.mark.parametrize("ceil", [False, True])
def test_empirical_field_through_a_strided_max_pool_keeps_its_ceil_mode(ceil: bool) -> None:
    """conv 3x3 on 13x13 -> 11x11 -> max pool 2, stride 2: 5x5 (floor) or 6x6 (ceil, a last half window).
    By hand: pool unit u reads conv rows 2u..2u+1, i.e. input rows 2u..2u+3; the default unit is the centre,
    5 // 2 = 2 (rows 4..7) or 6 // 2 = 3 (rows 6..9); ceil mode's last unit 5 reads conv row 10: rows 10..12."""
    net = nn.Sequential(nn.Conv2d(1, 1, 3), nn.MaxPool2d(2, 2, ceil_mode=ceil))
    e = receptive_field_empirical(net, "1", 13, in_channels=1)
    u = 3 if ceil else 2
    assert (e.unit, e.box) == ((u, u), (2 * u, 2 * u, 2 * u + 3, 2 * u + 3))
    if ceil:
        assert receptive_field_empirical(net, "1", 13, in_channels=1, unit=(5, 0)).box == (10, 0, 12, 3)
    else:  # the builtin called with positional arguments only: floor mode by default
        net = nn.Sequential(nn.Conv2d(1, 1, 3), _Fn(lambda x: torch.max_pool2d(x, 2, 2)))
        e = receptive_field_empirical(net, "1", 13, in_channels=1)
        assert (e.unit, e.box) == ((2, 2), (4, 4, 7, 7))


@pytest.mark.parametrize(
    "pool",
    [nn.AdaptiveMaxPool2d(3), lambda x: F.adaptive_max_pool2d(x, 3), lambda x: F.adaptive_max_pool2d(x, output_size=3)],
)
def test_empirical_field_through_an_adaptive_max_pool_is_its_whole_window(pool) -> None:  # noqa: ANN001
    """conv 3x3 on 11x11 -> 9x9 -> adaptive max pool to 3x3 (windows of 3, stride 3): by hand, pool unit
    (1, 2) reads conv rows 3..5 and columns 6..8, i.e. input rows 3..7 and columns 6..10: all 25 pixels."""
    net = nn.Sequential(nn.Conv2d(1, 1, 3), pool if isinstance(pool, nn.Module) else _Fn(pool))
    e = receptive_field_empirical(net, "1", 11, in_channels=1, unit=(1, 2))
    assert (e.box, e.pixels) == ((3, 6, 7, 10), 25)


class _Squares(nn.Module):
    """y = 0.01·x, then squared 12 times (y·y, or in place y.mul_(copy of y): never, every other time, or
    always): on the positive copy (a 3x3 conv of ones is 9) the values would underflow to 0 (0.09^4096)
    without the per-product rescaling, and the gradient with them. Only a chain of in-place products shows
    that the in-place ones rescale the tensor itself (the caller keeps ``y``, not what ``mul_`` returns)."""

    def __init__(self, inplace: str) -> None:
        super().__init__()
        self.inplace = inplace

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x * 0.01
        for k in range(12):
            if self.inplace == "always" or (self.inplace == "odd" and k % 2):
                y.mul_(y.clone())
            else:
                y = y * y
        return y


@pytest.mark.parametrize("inplace", ["never", "odd", "always"])
def test_empirical_field_through_repeated_products(inplace: str) -> None:
    """Products of image-dependent tensors do not change the field: conv 3x3 -> squares -> conv 3x3 is a 5x5
    field; unit (2, 3) sees rows 2..6, columns 3..7."""
    net = nn.Sequential(nn.Conv2d(1, 1, 3), _Squares(inplace), nn.Conv2d(1, 1, 3))
    e = receptive_field_empirical(net, "2", 11, in_channels=1, unit=(2, 3))
    assert (e.box, e.pixels) == ((2, 3, 6, 7), 25)


# ------------------------------------------------- empirical field through dilated / index-returning max pools
class _PoolBetweenConvs(nn.Module):
    """conv 3x3 -> pool -> conv 3x3 (the pool may return indices)."""

    def __init__(self, pool: nn.Module) -> None:
        super().__init__()
        self.a, self.p, self.b = nn.Conv2d(1, 2, 3), pool, nn.Conv2d(2, 2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.p(self.a(x))
        return self.b(y[0] if isinstance(y, tuple) else y)


@pytest.mark.parametrize(
    ("pool", "size", "box"),
    [
        # unit (3, 4) of b reads pool rows 3..5; each reads a-rows r, r+2, r+4 (dilation 2): a-rows 3..9, which
        # read input rows 3..11 (9 rows); columns the same from 4: 4..12
        (nn.MaxPool2d(3, 1, dilation=2), (9, 9), (3, 4, 11, 12)),
        # no dilation, indices returned: pool rows 3..5 read a-rows 3..7, input rows 3..9 (7x7)
        (nn.MaxPool2d(3, 1, return_indices=True), (7, 7), (3, 4, 9, 10)),
        (nn.MaxPool2d(3, 1, dilation=(2, 1), return_indices=True), (9, 7), (3, 4, 11, 10)),
    ],
)
def test_empirical_field_through_a_dilated_or_index_returning_max_pool(pool, size, box) -> None:
    """Every pixel of a (dilated) max-pool window reaches the unit (the mean of the window, not the max of the
    all-ones probe, whose gradient goes to one pixel): the field worked by hand, and equal to the traced one."""
    from convlens.graph import trace
    from convlens.inspect.rf import receptive_field_empirical

    m = _PoolBetweenConvs(pool)
    r = receptive_field_empirical(m, "b", 15, in_channels=1, unit=(3, 4))
    assert (r.size, r.box, r.pixels) == (size, box, size[0] * size[1])
    g = trace(m, (1, 15, 15)).geometry("b")
    assert g.receptive_field == size


def test_empirical_field_through_an_adaptive_max_pool_returning_indices() -> None:
    """adaptive_max_pool2d(.., 2, return_indices=True) on a 13x13 map: each output unit reads its whole window
    (rows 0..6 for unit 0: start floor(0*13/2) = 0, end ceil(13/2) = 7), then a 1x1 conv; unit (0, 0) of the
    1x1 conv sees input rows/cols 0..8 through the first 3x3 conv (9x9)."""
    from convlens.inspect.rf import receptive_field_empirical

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Conv2d(1, 2, 3), nn.Conv2d(2, 2, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.b(F.adaptive_max_pool2d(self.a(x), 2, return_indices=True)[0])

    r = receptive_field_empirical(Net(), "b", 15, in_channels=1, unit=(0, 0))
    assert (r.size, r.box) == ((9, 9), (0, 0, 8, 8))


def test_effective_field_statistics_by_hand_with_irrational_radii() -> None:
    """One 3x3 conv, unit (0, 2, 2) of a 7x7 image: ∂y/∂x is the kernel, |w| summed over the 3 colours is
    3 at the 4 corners and 0.3 at the 5 other taps (total 12 + 1.5 = 13.5). Around the box centre (2, 2):
    the centre holds 0.3/13.5 = 0.0222, the 4 edge taps 4·0.3/13.5 = 0.0889, so 50 % and 90 % are both
    first reached at the corners, at radius √2 = 1.41421356... -> 1.4142 (4 decimals). All mass is in the
    box; the support is the 3x3 window (1, 1)-(3, 3)."""
    # |w| counts: the sign of the corners must not matter
    net = _one_conv([[-1.0, 0.1, -1.0], [0.1, 0.1, 0.1], [-1.0, 0.1, -1.0]])
    e = effective_receptive_field(net, torch.rand(1, 3, 7, 7), "0", (0, 1, 1))
    assert (e.layer, e.at, e.center, e.support_box) == ("0", (0, 1, 1), (2.0, 2.0), (1, 1, 3, 3))
    assert e.zero_gradient is False
    assert (e.mass_in_box, e.r50, e.r90) == (1.0, 1.4142, 1.4142)
    expected = np.zeros((7, 7))
    expected[1:4, 1:4] = [[3.0, 0.3, 3.0], [0.3, 0.3, 0.3], [3.0, 0.3, 3.0]]
    assert e.map == pytest.approx(expected / 13.5, abs=1e-7)


def _one_conv(kernel: list[list[float]], dilation: tuple[int, int] = (1, 1)) -> nn.Sequential:
    """Conv2d(3 -> 1) whose kernel is ``kernel`` in every colour: sum over colours of |w| is 3·|kernel|."""
    k = torch.tensor(kernel)
    net = nn.Sequential(nn.Conv2d(3, 1, tuple(k.shape), dilation=dilation, bias=False))
    with torch.no_grad():
        net[0].weight.copy_(k.expand(1, 3, *k.shape))
    return net


def test_effective_field_mass_in_a_box_given_by_the_caller() -> None:
    """The box of unit (0, 1) measured against unit (1, 2)'s map. |kernel| = [[1, 0, 1], [0, 0, 0], [1, 0, 0]]
    (total 3) covers image rows 1..3, cols 2..4; the given box (rows 0..2, cols 1..3) holds kernel rows 0..1,
    cols 0..1: only the top-left 1, so 1/3 of the mass -> 0.333333 (6 decimals). The other two taps lie one
    row below and one column right of that box."""
    net = _one_conv([[1.0, 0.0, -1.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    box = unit_receptive_field(net, "0", (0, 1), (3, 7, 7))
    assert box.clipped_box == (0, 1, 2, 3)
    e = effective_receptive_field(net, torch.rand(1, 3, 7, 7), "0", (0, 1, 2), rf=box)
    assert e.mass_in_box == 0.333333 and e.center == (1.0, 2.0)


def test_effective_field_radius_where_the_mass_reaches_exactly_one_half() -> None:
    """|kernel| 1 at the centre and 0.25 at the 4 edge taps (total 2): the centre holds exactly 0.5, so the
    50 % radius is 0 (the pixel that reaches 0.5, not the next ring) and the 90 % radius is 1 (the edges)."""
    net = _one_conv([[0.0, 0.25, 0.0], [0.25, 1.0, -0.25], [0.0, 0.25, 0.0]])
    e = effective_receptive_field(net, torch.rand(1, 3, 5, 5), "0", (0, 1, 1))
    assert (e.r50, e.r90, e.support_box) == (0.0, 1.0, (1, 1, 3, 3))


def test_effective_field_radius_in_double_precision() -> None:
    """All the mass on one tap at offset (24, 4) from the box centre (a 3x3 kernel dilated (24, 4), only its
    bottom-right tap nonzero): the radius is √(24² + 4²) = √592 = 24.33105012... -> 24.3311. Distances in
    float32 would give 24.3310489 -> 24.331: the 4 decimals reported need the double-precision grid."""
    net = _one_conv([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 2.0]], dilation=(24, 4))
    e = effective_receptive_field(net, torch.rand(1, 3, 49, 9), "0", (0, 0, 0))
    assert (e.center, e.support_box) == ((24.0, 4.0), (48, 8, 48, 8))
    assert (e.r50, e.r90) == (24.3311, 24.3311)


class _FunctionalMaxPool(nn.Module):
    """conv a (3x3) -> F.max_pool2d(**kw) called functionally (optionally on an unbatched (C, H, W) map) ->
    conv b (2x2). Positive weights, so every window pixel can be the max for some image."""

    def __init__(self, kw: dict, unbatched: bool = False) -> None:
        super().__init__()
        self.kw, self.unbatched = kw, unbatched
        self.a, self.b = nn.Conv2d(1, 2, 3), nn.Conv2d(2, 2, 2)
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for conv in (self.a, self.b):
                conv.weight.copy_(torch.rand(conv.weight.shape, generator=g) + 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.a(x)
        y = y[0] if self.unbatched else y
        if "output_size" in self.kw:  # adaptive: return_indices given by keyword or (as True) by position
            kw = dict(self.kw)
            z = F.adaptive_max_pool2d(y, kw.pop("output_size"), *([True] if kw.pop("positional", False) else []), **kw)
        else:
            z = F.max_pool2d(y, **self.kw)
        if self.kw.get("return_indices") or self.kw.get("positional"):
            z, idx = z  # a caller that uses the indices (SegNet's unpooling) needs both
            assert idx.shape == z.shape
        return self.b(z[None] if self.unbatched else z)


def _argmax_union_support(net: nn.Module, size: tuple[int, int], unit: tuple[int, int], n: int = 300) -> np.ndarray:
    """Independent oracle: the pixels that reach the unit through the REAL max pool for some image. Each image
    sends the gradient through one max per window; over n random images every window position is the max
    at least once, so the union of the gradient supports is the set of pixels the unit can see."""
    g = torch.Generator().manual_seed(1)
    seen = np.zeros(size, bool)
    for _ in range(n):
        x = torch.rand(1, 1, *size, generator=g, requires_grad=True)
        net(x)[0, 0, unit[0], unit[1]].backward()
        seen |= (x.grad[0, 0] != 0).numpy()
    return seen


@pytest.mark.parametrize(
    ("kw", "unbatched"),
    [
        (dict(kernel_size=3, stride=2, padding=1, dilation=2, ceil_mode=True), False),
        (dict(kernel_size=3, stride=2, padding=1, dilation=2, ceil_mode=True), True),
        (dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2), return_indices=True), False),
        (dict(kernel_size=2, dilation=2), False),  # stride defaults to the kernel, padding to 0
        (dict(kernel_size=3, stride=1, padding=(0, 1), dilation=(2, 1)), False),
        (dict(kernel_size=2, stride=1, dilation=(1, 2)), False),
        (dict(kernel_size=2, stride=1, dilation=[2, 1]), False),
        (dict(kernel_size=2, stride=1, dilation=[1, 2]), False),  # a list that is not [1, 1]
        (dict(kernel_size=3, stride=2, return_indices=True), False),  # no dilation, indices used
        (dict(output_size=(3, 2), return_indices=True), False),
        (dict(output_size=(3, 2), positional=True), False),
        # ceil mode adds a last window past the edge: on the 14x12 map of a 16x14 image, (14 - 5) / 2 = 4.5 and
        # (12 - 5) / 2 = 3.5 windows -> 6 x 5 outputs, the last ones reading one row / column of padding
        (dict(kernel_size=3, stride=2, dilation=2, ceil_mode=True), False),
        (dict(kernel_size=3, stride=2, padding=1, dilation=2, ceil_mode=True, return_indices=True), True),
        # 16x15 image: the 14x13 map overhangs by one row ((14 - 5) / 2 = 4.5) but not by a column (13 - 5 = 8)
        (dict(kernel_size=3, stride=2, dilation=2, ceil_mode=True, image=(16, 15)), False),
    ],
)
def test_empirical_field_through_any_dilated_max_pool_call_equals_the_real_pools_reach(
    kw: dict, unbatched: bool
) -> None:
    """Functional max pools with dilation, stride, padding, ceil mode, tuple and list arguments, indices (used
    by the caller) and an unbatched map, and adaptive max pools returning indices: the measured field of corner,
    middle and last units equals the union of the real network's gradient supports over random images (box and
    pixel count), on a 17x15 image (16x14 for the ceil-mode cases, whose last windows then overhang)."""
    from convlens.inspect.rf import receptive_field_empirical

    kw = dict(kw)
    size = kw.pop("image", (16, 14) if kw.get("ceil_mode") else (17, 15))
    net = _FunctionalMaxPool(kw, unbatched)
    hh, ww = net(torch.zeros(1, 1, *size)).shape[-2:]
    for unit in ((0, 0), (hh // 2, ww // 2), (hh - 1, ww - 1)):
        seen = _argmax_union_support(net, size, unit)
        rows, cols = np.nonzero(seen)
        r = receptive_field_empirical(net, "b", size, in_channels=1, unit=unit)
        assert r.box == (rows.min(), cols.min(), rows.max(), cols.max()), (kw, unit)
        assert r.pixels == int(seen.sum()), (kw, unit)


def test_empirical_field_every_field_and_the_clipped_flag_edge_by_edge() -> None:
    """One 3x3 conv on a 7x9 image (5x7 units): unit (i, j) sees rows i..i+2, cols j..j+2 (9 pixels). The box
    is clipped when it touches any image edge: row 0 (top), col 0 (left), row 6 (bottom), col 8 (right), each
    alone, and not for an interior unit. The default unit is the middle one, (5 // 2, 7 // 2) = (2, 3)."""
    from convlens.inspect.rf import receptive_field_empirical

    net = nn.Sequential(nn.Conv2d(1, 1, 3))
    cases = {(0, 3): True, (2, 0): True, (4, 3): True, (2, 6): True, (2, 3): False, (4, 6): True}
    for (i, j), clipped in cases.items():
        r = receptive_field_empirical(net, "0", (7, 9), in_channels=1, unit=(i, j))
        assert (r.layer, r.unit, r.size, r.box, r.center, r.input_size, r.pixels) == (
            "0",
            (i, j),
            (3, 3),
            (i, j, i + 2, j + 2),
            (i + 1.0, j + 1.0),
            (7, 9),
            9,
        )
        assert r.clipped is clipped, (i, j)
    assert receptive_field_empirical(net, "0", (7, 9), in_channels=1).unit == (2, 3)
    for unit in ((5, 0), (0, 7), (-1, 0)):
        with pytest.raises(InputError, match="unit"):
            receptive_field_empirical(net, "0", (7, 9), in_channels=1, unit=unit)


def test_empirical_field_sizes_one_pixel_high_and_the_default_probe() -> None:
    """A 1-pixel-high image is a valid probe (a 1x3 kernel on 1x5: unit 1 sees cols 1..3); 0 is not. Without
    a size the probe is 224x224 (3 channels)."""
    from convlens.inspect.rf import receptive_field_empirical

    r = receptive_field_empirical(nn.Sequential(nn.Conv2d(1, 1, (1, 3))), "0", (1, 5), in_channels=1, unit=(0, 1))
    assert (r.size, r.box) == ((1, 3), (0, 1, 0, 3))
    with pytest.raises(InputError, match="input_size"):
        receptive_field_empirical(nn.Sequential(nn.Conv2d(1, 1, 1)), "0", (0, 5), in_channels=1)
    r = receptive_field_empirical(nn.Sequential(nn.Conv2d(3, 1, 5, stride=4)), "0")
    assert (r.input_size, r.unit, r.box) == ((224, 224), (27, 27), (108, 108, 112, 112))


def test_empirical_field_of_a_flat_output_is_refused_by_name() -> None:
    """A flattened (N, 50) output is neither a map nor tokens of a grid: a LayerError naming its shape."""
    from convlens.inspect.rf import receptive_field_empirical

    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten())
    with pytest.raises(LayerError, match=r"^layer '1' outputs shape \(1, 50\); an empirical receptive field needs"):
        receptive_field_empirical(net, "1", 7, in_channels=1)


def test_empirical_field_of_a_model_in_training_mode_is_measured_in_eval_mode() -> None:
    """Batch norm and dropout in training mode would spread the gradient over the whole image (batch
    statistics) or drop pixels at random: the field is measured in eval mode, two 3x3 convs -> 5x5 (unit
    (5, 5) sees rows and cols 5..9, 25 pixels), and the model is left in training mode."""
    from convlens.inspect.rf import receptive_field_empirical

    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Dropout(0.5), nn.Conv2d(2, 2, 3)).train()
    r = receptive_field_empirical(net, "3", 15, in_channels=1, unit=(5, 5))
    assert (r.size, r.box, r.pixels) == ((5, 5), (5, 5, 9, 9), 25)
    assert all(m.training for m in net.modules())


class _PatchTokens(nn.Module):
    """A ViT patch embedding: 4x4 patches, stride 4, flattened to (N, L, C) tokens in row-major order."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Conv2d(1, 2, 4, stride=4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class _TwoScales(nn.Module):
    """One patch embedding called twice: on the image (call 0) and on the image average-pooled by 2 (call 1)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = _PatchTokens()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(x).mean(1) + self.embed(F.avg_pool2d(x, 2)).mean(1)


def test_empirical_field_of_tokens_on_a_non_square_grid() -> None:
    """An 8x16 image makes a 2x4 grid of 4x4 patches (8 tokens). The default unit is the grid's centre
    (2 // 2, 4 // 2) = (1, 2), token 1·4 + 2 = 6: rows 4..7, columns 8..11. Unit (1, 3) is token 7, the
    bottom-right patch; row 2 is outside the grid."""
    net = nn.Sequential(_PatchTokens())
    e = receptive_field_empirical(net, "0", (8, 16), in_channels=1)
    assert (e.unit, e.box, e.pixels) == ((1, 2), (4, 8, 7, 11), 16)
    assert receptive_field_empirical(net, "0", (8, 16), in_channels=1, unit=(1, 3)).box == (4, 12, 7, 15)
    with pytest.raises(InputError, match=r"unit \(2, 0\) is outside the 2x4 output"):
        receptive_field_empirical(net, "0", (8, 16), in_channels=1, unit=(2, 0))


def test_empirical_field_of_tokens_of_each_call_of_a_reused_embedding() -> None:
    """16x16 image: call 0 embeds a 4x4 grid, its centre (2, 2) is token 10, rows and columns 8..11; call 1
    embeds the 8x8 half-size image, a 2x2 grid whose centre (1, 1) is pooled pixels 4..7, i.e. image rows and
    columns 8..15 (64 pixels). call=-1 is the last call."""
    net = _TwoScales()
    first = receptive_field_empirical(net, "embed", 16, in_channels=1)
    assert (first.unit, first.box, first.pixels) == ((2, 2), (8, 8, 11, 11), 16)
    assert receptive_field_empirical(net, "embed", 16, in_channels=1, unit=(0, 3)).box == (0, 12, 3, 15)
    for call in (1, -1):
        second = receptive_field_empirical(net, "embed", 16, in_channels=1, call=call)
        assert (second.unit, second.box, second.pixels) == ((1, 1), (8, 8, 15, 15), 64)


def test_empirical_field_of_the_auto_layer_at_the_probe_size() -> None:
    """'auto' is the last layer whose output is larger than 1x1 AT THE PROBE SIZE: on a 5x5 image the second
    3x3 conv gives 1x1, so 'auto' is the first conv (3x3 output, centre (1, 1): rows and columns 1..3); on
    7x7 it is the second (centre (1, 1) of its 3x3 output: rows and columns 1..5)."""
    net = nn.Sequential(nn.Conv2d(3, 1, 3), nn.Conv2d(1, 1, 3))
    small = receptive_field_empirical(net, "auto", 5)
    assert (small.layer, small.box) == ("0", (1, 1, 3, 3))
    large = receptive_field_empirical(net, "auto", 7)
    assert (large.layer, large.box) == ("1", (1, 1, 5, 5))


def test_effective_field_radius_when_the_farthest_pixel_holds_the_mass() -> None:
    """A 1x3 kernel with zero padding at unit (0, 0) of a 1x2 image: the box is columns -1..1, centre column 0;
    |w| = 0.01 on column 0 (distance 0) and 1 on column 1 (distance 1), the image's farthest pixel. 99 % of the
    mass is 1 pixel away, so both radii are 1 (the last pixel in distance order, not the one before)."""
    conv = nn.Conv2d(1, 1, (1, 3), padding=(0, 1), bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([0.0, 0.01, -1.0]).view(1, 1, 1, 3))
    e = effective_receptive_field(nn.Sequential(conv), torch.rand(1, 1, 1, 2), "0", (0, 0, 0))
    assert (e.center, e.support_box, e.r50, e.r90) == ((0.0, 0.0), (0, 0, 0, 1), 1.0, 1.0)


def _channels_last(norm: nn.Module) -> nn.Sequential:
    """``norm`` over the channels of each pixel, as ConvNeXt writes it: NCHW -> NHWC, norm, back."""
    return nn.Sequential(Permute([0, 2, 3, 1]), norm, Permute([0, 3, 1, 2]))


@pytest.mark.parametrize(
    "norm",
    [
        nn.GroupNorm(2, 8),
        nn.InstanceNorm2d(8, affine=True),
        _channels_last(nn.LayerNorm(8)),
        _channels_last(nn.RMSNorm(8)),
    ],
    ids=["group", "instance", "layer", "rms"],
)
def test_empirical_field_through_a_norm_with_per_image_statistics(norm: nn.Module) -> None:
    """conv 3x3 -> norm -> conv 3x3 is a 5x5 field, as the theory says: unit (3, 3) sees rows and columns 3..7.
    The norm's statistics are held constant (as BatchNorm's in eval mode). Computed on the positive copy, a
    LayerNorm or RMSNorm over its equal channels cancelled to 0 ("does not depend on the input image") and
    the statistics of GroupNorm and InstanceNorm made the field the whole 13x13 image."""
    net = nn.Sequential(nn.Conv2d(3, 8, 3), norm, nn.Conv2d(8, 8, 3)).eval()
    e = receptive_field_empirical(net, "2", 13, unit=(3, 3))
    assert (e.box, e.pixels) == ((3, 3, 7, 7), 25)
    assert e.size == unit_receptive_field(net, "2", (3, 3), (3, 13, 13)).size


def test_empirical_field_of_a_channels_last_map_is_read_as_rows_and_columns() -> None:
    """A 3x3 conv on a 9x13 image, then permuted to (N, H, W, C) = (1, 7, 11, 2): the default unit is the centre
    (3, 5) of the 7x11 map, which sees rows 3..5 and columns 5..7 (not W x C read as rows x columns)."""
    net = nn.Sequential(nn.Conv2d(1, 2, 3), Permute([0, 2, 3, 1]))
    e = receptive_field_empirical(net, "1", (9, 13), in_channels=1)
    assert (e.unit, e.box, e.pixels) == ((3, 5), (3, 5, 5, 7), 9)
    assert receptive_field_empirical(net, "1", (9, 13), in_channels=1, unit=(6, 10)).box == (6, 10, 8, 12)


def test_empirical_field_of_convnext_equals_the_theory_at_every_stage() -> None:
    """torchvision's ConvNeXt blocks (7x7 depthwise conv, NHWC LayerNorm and MLP, layer scale) on a 64x64 image:
    the 4x4 stem is a 4x4 field; each block adds (7 - 1)·4 = 24, so features.1.0 sees 28x28 (its centre unit
    (8, 8) sees rows 32 - 12 .. 35 + 12 = 20..47), its NHWC LayerNorm the same; the 2x2 stride-2 downsampling
    adds 4 more: 32x32, its centre unit (4, 4) reads units 8..9 of features.1, rows 20..47 and 24..51. The
    empirical field equals the traced theory at every layer."""
    from torchvision.models.convnext import CNBlockConfig, ConvNeXt

    from convlens.inspect.rf import receptive_field

    net = ConvNeXt([CNBlockConfig(16, 32, 1), CNBlockConfig(32, None, 1)]).eval()
    expected = {
        "features.0": (4, (32, 32, 35, 35)),
        "features.1.0.block.2": (28, (20, 20, 47, 47)),
        "features.1.0": (28, (20, 20, 47, 47)),
        "features.2": (32, (20, 20, 51, 51)),
    }
    for layer, (size, box) in expected.items():
        e = receptive_field_empirical(net, layer, 64)
        assert (e.size, e.box) == ((size, size), box), layer
        assert receptive_field(net, layer, (3, 64, 64)).receptive_field == (size, size), layer


class _FixedSize(nn.Module):
    """Like timm's PatchEmbed with a fixed img_size: asserts the input width."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[-1] == 16, f"Input width ({x.shape[-1]}) doesn't match model (16)."
        return self.conv(x)


def test_a_model_that_rejects_the_input_size_is_one_input_error() -> None:
    """An AssertionError (timm's fixed sizes) inside the forward is reported as one InputError that quotes it,
    by activations and by the empirical field; at its own size the model works (unit (7, 7) sees 7..9)."""
    net = _FixedSize()
    quoted = r"^the model failed on .*20.* \(Input width \(20\) doesn't match model \(16\)\.\)"
    with pytest.raises(InputError, match=quoted):
        get_activations(net, torch.rand(1, 3, 20, 20), ["conv"])
    with pytest.raises(InputError, match=quoted):
        receptive_field_empirical(net, "conv", 20)
    assert receptive_field_empirical(net, "conv", 16).box == (7, 7, 9, 9)


class _ChannelsLastTwice(nn.Module):
    """One conv + permute to (N, H, W, C), called on the image and on the image average-pooled by 2."""

    def __init__(self) -> None:
        super().__init__()
        self.m = nn.Sequential(nn.Conv2d(1, 2, 3), Permute([0, 2, 3, 1]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.m(x).mean((1, 2)) + self.m(F.avg_pool2d(x, 2)).mean((1, 2))


def test_empirical_field_of_each_call_of_a_channels_last_module() -> None:
    """16x16 image: call 0 gives a 14x14 channels-last map, centre (7, 7) sees rows and columns 7..9; call 1 runs
    on the 8x8 half-size image, a 6x6 map whose centre (3, 3) reads pooled pixels 3..5, image rows 6..11. The
    layout probe sees the last call's 6x6 grid; the first call is still read as rows and columns."""
    net = _ChannelsLastTwice()
    first = receptive_field_empirical(net, "m", 16, in_channels=1, call=0)
    assert (first.unit, first.box, first.pixels) == ((7, 7), (7, 7, 9, 9), 9)
    last = receptive_field_empirical(net, "m", 16, in_channels=1, call=-1)
    assert (last.unit, last.box, last.pixels) == ((3, 3), (6, 6, 11, 11), 36)


@pytest.mark.slow
def test_cli_unit_says_when_the_field_is_an_upper_bound(capsys, tmp_path, chelsea: np.ndarray) -> None:
    """After Swin's first window attention the traced field (the whole 224x224 image) is an upper bound
    (exact=False: the window partition is a reshape the tracer cannot follow); the text says so, and a
    stage before it (the 4x4 patch embedding) is printed as exact."""
    from PIL import Image

    img = tmp_path / "cat.png"
    Image.fromarray(chelsea).save(img)
    assert main(["unit", str(img), "--model", "swin_t", "--layer", "features.1.1.norm1", "--at", "0,10,10"]) == 0
    out = capsys.readouterr().out
    assert "receptive field 224x224 at most (an upper bound: the tracer approximated an op on the way):" in out
    assert main(["unit", str(img), "--model", "swin_t", "--layer", "features.1.0.norm1", "--at", "0,10,10"]) == 0
    out = capsys.readouterr().out
    assert "receptive field 4x4: box (top, left, bottom, right) (40, 40, 43, 43)" in out


class _HiddenIdentity(nn.Module):
    """A 1x1 identity conv, then a view the tracer cannot follow ((N, C, H/2, 2, W, 1)) and back: each output
    pixel is its input pixel, but the traced field is the whole image, an upper bound (exact=False)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 1, bias=False)
        with torch.no_grad():
            self.conv.weight.fill_(1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        n, c, h, w = y.shape
        return y.view(n, c, h // 2, 2, w, 1).view(n, c, h, w) * 1.0


def test_effective_field_radii_of_an_upper_bound_field_are_taken_at_the_units_place() -> None:
    """Unit (5, 2) of an 8x8 map on an 8x8 image holds all its gradient on pixel (5, 2). The traced box is the
    whole image (an upper bound), whose centre (3.5, 3.5) says nothing of the unit: the radii are measured from
    the unit's place, (5.5·8/8 - 0.5, 2.5·8/8 - 0.5) = (5, 2), so both are 0 (from the box centre they were
    √(1.5² + 1.5²) = 2.1213)."""
    net = nn.Sequential(_HiddenIdentity())
    x = torch.rand(1, 1, 8, 8)
    e = effective_receptive_field(net, x, "0", (0, 5, 2))
    rf = unit_receptive_field(net, "0", (5, 2), (1, 8, 8))
    assert (rf.exact, rf.size) == (False, (8, 8))
    assert (e.center, e.support_box, e.r50, e.r90, e.mass_in_box) == ((5.0, 2.0), (5, 2, 5, 2), 0.0, 0.0, 1.0)


def test_effective_field_of_each_call_of_a_channels_last_module() -> None:
    """The channels-last module called on the 16x16 image and on its 8x8 half: call 0's (1, 14, 14, 2) map is
    read as rows and columns too (the layout probe saw the last call's 6x6 grid). Channel 0 at (7, 7) has its
    gradient on the 3x3 window rows and columns 7..9; at call 1, (3, 3) reads pooled pixels 3..5: rows 6..11."""
    net = _ChannelsLastTwice()
    x = torch.rand(1, 1, 16, 16)
    first = effective_receptive_field(net, x, "m", (0, 7, 7), call=0)
    assert first.support_box == (7, 7, 9, 9)
    assert effective_receptive_field(net, x, "m", (0, 3, 3), call=1).support_box == (6, 6, 11, 11)
