"""Feature visualization: known-kernel oracle, rising objectives, batch independence, state hygiene."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from convlens.errors import ConvlensError, InputError, LayerError
from convlens.featvis import (
    L2,
    Blur,
    Channel,
    ClassLogit,
    FourierImage,
    Jitter,
    KerasRecipe,
    LayerL2,
    LucidRecipe,
    Neuron,
    Pad,
    Pipeline,
    PixelImage,
    RandomRotate,
    RandomScale,
    TotalVariation,
    decorrelate_colors,
    first_layer_kernels,
    get_recipe,
    render,
    visualize,
)
from convlens.hooks import hook_count

RAW = dict(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


def _kernel_net() -> tuple[nn.Module, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    k = torch.randn(1, 3, 5, 5, generator=g)
    conv = nn.Conv2d(3, 1, 5, bias=False)
    with torch.no_grad():
        conv.weight.copy_(k)
    return nn.Sequential(conv), k


def _small_net(seed: int = 0, gain: float = 1.0) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.GELU(), nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.GELU(), nn.Conv2d(8, 6, 3)
    )
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.mul_(gain)
    return net


def _pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(np.corrcoef(a.flatten().double().numpy(), b.flatten().double().numpy())[0, 1])


def test_neuron_visualization_reproduces_known_kernel():
    net, k = _kernel_net()
    size = 21
    r = visualize(net, "0", [0], objective="neuron", recipe="keras", steps=30, size=size, return_result=True, **RAW)
    # output map 17x17, centre unit (8, 8) sees input rows/cols 8..12
    o = (size - 5) // 2 + 0
    out_centre = (size - 4) // 2
    o = out_centre
    assert r.raw is not None
    rf = r.raw[0, :, o : o + 5, o : o + 5]
    assert _pearson(rf, k) > 0.99  # the ascent adds lr * k/||k|| each step
    # outside the receptive field the gradient is zero: pixels stay at their initial noise (0.4-0.6)
    mask = torch.ones(size, size, dtype=torch.bool)
    mask[o : o + 5, o : o + 5] = False
    outside = r.raw[0][:, mask]
    assert float(outside.min()) >= 0.4 and float(outside.max()) <= 0.6
    # the displayed image (Keras deprocess, clipped at +-2 std) keeps the pattern on a small canvas
    small = visualize(net, "0", [0], objective="neuron", recipe="keras", steps=30, size=13, **RAW)
    o = (13 - 4) // 2
    assert _pearson(small[0, :, o : o + 5, o : o + 5], k) > 0.9


@pytest.mark.slow
@pytest.mark.parametrize("recipe, steps", [("keras", 25), ("lucid", 40)])
def test_channel_objective_rises_for_every_channel(recipe, steps):
    net = _small_net(gain=2.0)
    r = visualize(net, "5", list(range(6)), recipe=recipe, steps=steps, size=32, return_result=True)
    # the starting noise: each channel's value over 16 different initial images of the recipe
    per = [c for c in range(6) for _ in range(16)]
    noise = render(net, Channel("5", per), keys=list(range(96)), recipe=recipe, steps=0, size=32).start_values
    noise_sd = noise.view(6, 16).std(1)
    gain = r.values - r.start_values
    assert bool((gain > 5 * noise_sd).all()), (gain, noise_sd)
    assert r.history.shape == (steps, 6)
    assert torch.isfinite(r.images).all() and float(r.images.min()) >= 0 and float(r.images.max()) <= 1
    assert r.truncated_after == "5"


@pytest.mark.parametrize("recipe", ["keras", "lucid"])
def test_batched_equals_one_at_a_time(recipe):
    net = _small_net(1)
    chans = [4, 0, 2]
    batched = visualize(net, "2", chans, recipe=recipe, steps=8, size=20, seed=3)
    single = torch.cat([visualize(net, "2", [c], recipe=recipe, steps=8, size=20, seed=3) for c in chans])
    assert torch.allclose(batched, single, atol=1e-4)
    assert batched.shape == (3, 3, 20, 20)


def test_deterministic_and_seed_matters():
    net = _small_net()
    a = visualize(net, "2", [0, 1], steps=4, size=16, seed=5)
    b = visualize(net, "2", [0, 1], steps=4, size=16, seed=5)
    c = visualize(net, "2", [0, 1], steps=4, size=16, seed=6)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_truncated_forward_never_runs_later_layers():
    calls = []

    class Boom(nn.Module):
        def forward(self, x):
            calls.append(1)
            raise RuntimeError("the forward pass went past the target layer")

    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), Boom())
    visualize(net, "1", [0, 3], steps=3, size=12)
    assert calls == []


def test_state_hooks_and_parameters_restored():
    net = _small_net().train()
    net[0].weight.requires_grad_(False)  # a mixed state must come back as it was
    before = {k: v.clone() for k, v in net.state_dict().items()}
    flags = [p.requires_grad for p in net.parameters()]
    visualize(net, "4", [0, 1], recipe="lucid", steps=3, size=16)
    assert hook_count(net) == 0
    assert net.training and all(m.training for m in net.modules())
    assert [p.requires_grad for p in net.parameters()] == flags
    assert all(p.grad is None for p in net.parameters())
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN running stats untouched too


def test_cleanup_after_exception():
    net = _small_net().train()

    def cb(step, steps):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        visualize(net, "2", [0], steps=3, size=16, callback=cb)
    assert hook_count(net) == 0 and net.training
    assert all(p.requires_grad for p in net.parameters())
    with pytest.raises(InputError, match="channel 99 is out of range for layer '2' with 8 channels"):
        visualize(net, "2", [0, 99], steps=2, size=16)
    assert hook_count(net) == 0 and net.training


def test_bad_layer_and_channel_errors():
    net = _small_net()
    with pytest.raises(LayerError, match="did you mean"):
        visualize(net, "22", [0], steps=1, size=16)
    with pytest.raises(InputError, match=">= 0"):
        visualize(net, "2", [-1], steps=1, size=16)
    with pytest.raises(InputError, match="objective must be one of"):
        visualize(net, "2", [0], objective="banana", steps=1, size=16)
    with pytest.raises(InputError, match="recipe must be one of"):
        visualize(net, "2", [0], recipe="tf", steps=1, size=16)
    with pytest.raises(InputError, match="size"):
        visualize(net, "2", [0], steps=1, size=0)
    with pytest.raises(InputError, match="channels is empty"):
        visualize(net, "2", [], steps=1, size=16)
    with pytest.raises(ConvlensError, match="model must be"):
        visualize("resnet", "2", [0], steps=1, size=16)
    with pytest.raises(InputError, match="device"):
        visualize(net, "2", [0], steps=1, size=16, device="meta")
    assert hook_count(net) == 0


def test_objective_composition_and_other_objectives():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    torch.manual_seed(0)
    obj = Channel("0", [0, 1]) - 0.5 * Channel("0", [2, 3]) - 0.01 * TotalVariation()
    r = render(net, obj, recipe="keras", steps=10, size=16)
    assert r.truncated_after == "0" and bool((r.values > r.start_values).all())
    cls = render(net, ClassLogit([0, 2]), recipe="keras", steps=10, size=16)
    assert cls.truncated_after is None and bool((cls.values > cls.start_values).all())
    dream = visualize(net, "1", [0, 1], objective="layer", recipe="keras", steps=10, size=16, return_result=True)
    assert bool((dream.values > dream.start_values).all())
    # two layers: truncation stops at the deeper one
    two = render(net, Channel("0", 0) + LayerL2("1"), n=2, recipe="keras", steps=2, size=16)
    assert two.truncated_after == "1"
    # regularizers via the recipe
    reg = visualize(net, "0", [0], recipe=LucidRecipe(l2=0.1, tv=0.1, blur=0.1), steps=3, size=16)
    assert torch.isfinite(reg).all()
    with pytest.raises(InputError, match="one length"):
        Channel("0", [0, 1]) + Channel("0", [1, 2, 3])


@settings(max_examples=25)
@given(n=st.integers(1, 4), c=st.integers(1, 5), data=st.data())
def test_channel_and_neuron_pick_per_image(n, c, data):
    idx = data.draw(st.lists(st.integers(0, c - 1), min_size=n, max_size=n))
    a = torch.randn(n, c, 5, 3)
    acts = {"x": a}
    want_ch = torch.stack([a[i, idx[i]].mean() for i in range(n)])
    want_nr = torch.stack([a[i, idx[i], 2, 1] for i in range(n)])
    assert torch.allclose(Channel("x", idx)(acts), want_ch)
    assert torch.allclose(Neuron("x", idx)(acts), want_nr)
    img = {"input": torch.rand(n, 3, 4, 4)}
    for pen in (L2(), TotalVariation(), Blur()):
        assert pen(img).shape == (n,) and bool((pen(img) >= 0).all())


def test_transforms_geometry_and_fusion():
    x = torch.zeros(1, 1, 9, 9)
    x[0, 0, 4, 4] = 1.0

    class Fixed(Jitter):
        def draw(self, generator, steps):
            return torch.tensor([[2.0, -1.0]] * steps)

    y = Pipeline([Fixed(2)]).plan(1, 9, 1, [torch.Generator()])(x, 0)
    assert torch.allclose(y[0, 0, 3, 6], torch.tensor(1.0), atol=1e-5)  # moved +2 in x, -1 in y
    # fused affine (shift then shift) == the sum of the shifts
    z = Pipeline([Fixed(2), Fixed(2)]).plan(1, 9, 1, [torch.Generator()])(x, 0)
    assert torch.allclose(z[0, 0, 2, 8], torch.tensor(1.0), atol=1e-5)
    # per-image parameters: each image of a batch gets its own angle
    gens = [torch.Generator().manual_seed(i) for i in range(6)]
    pipe = Pipeline([Pad(2), RandomScale([0.8, 1.2]), RandomRotate(list(range(-30, 31)))])
    plan = pipe.plan(6, 9, 1, gens)
    out = plan(x.expand(6, 1, 9, 9).contiguous(), 0)
    assert out.shape == (6, 1, 13, 13)
    assert len({tuple(o.flatten().round(decimals=4).tolist()) for o in out}) > 1
    # gradients flow through the transform
    xi = torch.rand(2, 3, 9, 9, requires_grad=True)
    g = torch.autograd.grad(plan.__class__(plan.ops, plan.out_size)(xi.repeat(3, 1, 1, 1), 0).sum(), xi)[0]
    assert torch.isfinite(g).all() and float(g.abs().sum()) > 0
    with pytest.raises(InputError):
        RandomScale([0.0])
    with pytest.raises(InputError):
        Pad(-1)


def test_fourier_param_and_recipes():
    img = FourierImage(2, 17)  # odd size works
    x = img()
    assert x.shape == (2, 3, 17, 17) and bool(((x > 0) & (x < 1)).all())
    assert get_recipe("keras") == KerasRecipe()
    with pytest.raises(InputError, match="unknown recipe field"):
        get_recipe("lucid", learning_rate=1)
    with pytest.raises(InputError):
        KerasRecipe(optimizer="sgd")


def test_bundle_and_first_layer_kernels(resnet18_bundle):
    tiles = first_layer_kernels(resnet18_bundle.model)
    assert tiles.shape == (64, 3, 7, 7) and float(tiles.min()) >= 0 and float(tiles.max()) <= 1
    w = resnet18_bundle.model.conv1.weight.detach()
    assert _pearson(tiles[5], w[5]) > 0.999  # an affine map of the weights themselves
    with pytest.raises(LayerError):
        first_layer_kernels(resnet18_bundle.model, "layer1.0.conv1")
    imgs = visualize(resnet18_bundle, "layer1.0.conv1", [0, 1], steps=2, size=32)
    assert imgs.shape == (2, 3, 32, 32)
    assert hook_count(resnet18_bundle.model) == 0 and not resnet18_bundle.model.training


@pytest.mark.slow
def test_cli_filters(tmp_path, capsys):
    from convlens.cli import main

    out = tmp_path / "grid.png"
    code = main(
        [
            "filters",
            "--model",
            "resnet18",
            "--layer",
            "layer1.0.conv1",
            "--channels",
            "0-2",
            "--steps",
            "2",
            "--size",
            "32",
            "--recipe",
            "keras",
            "--out",
            str(out),
            "--json",
        ]
    )
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    assert [c["channel"] for c in data["channels"]] == [0, 1, 2]
    assert all(isinstance(c["value"], float) for c in data["channels"])
    assert out.exists() and out.stat().st_size > 1000
    code = main(
        ["filters", "--model", "resnet18", "--layer", "auto", "--kernels", "--out", str(tmp_path / "k.png"), "--json"]
    )
    assert code == 0
    assert json.loads(capsys.readouterr().out)["layer"] == "conv1"
    code = main(["filters", "--model", "resnet18", "--layer", "nope", "--out", str(out), "--steps", "1"])
    assert code == 2
    assert "error:" in capsys.readouterr().err


def test_grayscale_model_gets_luma_input():
    """A 1-channel model (one-value mean/std) is fed the luma of the optimized image and shown in gray."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 4, 3))
    res = visualize(net, "2", [0, 1], steps=6, size=16, recipe="keras", mean=(0.5,), std=(0.25,), return_result=True)
    assert res.images.shape == (2, 3, 16, 16)
    assert torch.equal(res.images[:, 0], res.images[:, 1]) and torch.equal(res.images[:, 1], res.images[:, 2])
    assert bool((res.values > res.start_values).all())


def test_cli_class_objective_reports_output_and_clear_range_error(tmp_path, capsys):
    """The class objective works at the output (--layer is refused, see below); the range error said 'classs'."""
    from convlens.cli import main

    out = tmp_path / "c.png"
    args = [
        "filters",
        "--model",
        "resnet18",
        "--objective",
        "class",
        "--steps",
        "1",
        "--size",
        "16",
        "--out",
        str(out),
    ]
    assert main([*args, "--channels", "3", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["layer"] == "output"
    assert main([*args, "--channels", "0,1000"]) == 2
    err = capsys.readouterr().err
    assert "class 1000 is out of range for the model output with 1000 classes (valid: 0-999)" in err


class _FixedSize(torch.nn.Module):
    """A model that, like a ViT, asserts its input size."""

    def __init__(self, side):
        super().__init__()
        self.side = side
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.relu = torch.nn.ReLU()

    def forward(self, x):
        assert x.shape[-1] == self.side, f"Input width ({x.shape[-1]}) doesn't match model ({self.side})."
        return self.relu(self.conv(x))


def test_fixed_input_size_model_resized_to_its_size_or_clear_error():
    """A ViT-like model used to crash with a raw AssertionError traceback on the recipe's padded size."""
    from convlens.models import ModelBundle, ModelMeta, Preprocess

    torch.manual_seed(0)
    net = _FixedSize(20)
    bundle = ModelBundle(
        net, Preprocess(size=20), None, ModelMeta("fixed", "file", False, 4, 112, input_size=(3, 20, 20))
    )
    for recipe in ("lucid", "keras"):
        res = visualize(bundle, "conv", [0, 1], recipe=recipe, steps=2, size=12, return_result=True)
        assert res.images.shape == (2, 3, 12, 12) and bool(torch.isfinite(res.values).all())
    from convlens.featvis.objectives import Channel

    two = visualize(
        bundle,
        None,
        [0, 1],
        objective=Channel("conv", [0, 1]) + Channel("relu", [2, 3]),
        steps=1,
        size=12,
        return_result=True,
    )
    assert two.truncated_after == "relu"
    with pytest.raises(InputError, match=r"the model failed on a 36x36 input .*doesn't match model \(20\)"):
        visualize(net, "conv", [0], recipe="lucid", steps=1, size=12)  # a bare module: no known size


class _TinyTokens(torch.nn.Module):
    """Patch embedding -> (N, T, D) tokens -> Linear, as in a ViT / Mixer."""

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Conv2d(3, 6, 4, stride=4)
        self.mlp = torch.nn.Linear(6, 10)

    def forward(self, x):
        return self.mlp(self.embed(x).flatten(2).transpose(1, 2))  # (N, T, 10)


def test_token_layer_channels_are_features_not_tokens():
    """A ViT layer's 'channel' c used to be token c (a 16x16 image has 16 tokens here, not 10 features)."""
    torch.manual_seed(0)
    net = _TinyTokens()
    res = visualize(net, "mlp", [9, 2], recipe="keras", steps=3, size=16, return_result=True)
    assert bool((res.values > res.start_values).all())
    with torch.no_grad():
        x = (res.raw - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(
            1, 3, 1, 1
        )
        feats = net(x).mean(1)  # mean over tokens
    assert torch.allclose(res.values, feats[[0, 1], [9, 2]], atol=1e-4)
    with pytest.raises(InputError, match="channel 10 is out of range for layer 'mlp' with 10 channels"):
        visualize(net, "mlp", [10], steps=1, size=16)


def test_cli_filters_error_is_one_line_without_progress_residue(tmp_path, capsys):
    from convlens.cli import main

    args = [
        "filters",
        "--model",
        "resnet18",
        "--layer",
        "layer1",
        "--channels",
        "0,64",
        "--steps",
        "1",
        "--size",
        "16",
        "--out",
        str(tmp_path / "g.png"),
    ]
    assert main(args) == 2
    warn, err = capsys.readouterr().err.splitlines(keepends=True)  # random resnet18: one warning line, one error
    assert warn.startswith("WARNING: model 'resnet18' has RANDOM weights")
    assert err.startswith("error: channel 64 is out of range for layer 'layer1'")


class _NHWC(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 6, 4, stride=4)
        self.norm = torch.nn.LayerNorm(6)

    def forward(self, x):
        return self.norm(self.conv(x).permute(0, 2, 3, 1))  # (N, h, w, C) as in Swin


def test_channels_last_layer_channels_are_the_last_dim():
    """A Swin-style (N, h, w, C) layer's 'channel' c used to be row c of the map."""
    torch.manual_seed(0)
    net = _NHWC()
    res = visualize(net, "norm", [5, 0], objective="neuron", recipe="keras", steps=3, size=32, return_result=True)
    with torch.no_grad():
        x = (res.raw - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(
            1, 3, 1, 1
        )
        a = net(x)  # (2, 8, 8, 6)
    assert torch.allclose(res.values, torch.stack([a[0, 4, 4, 5], a[1, 4, 4, 0]]), atol=1e-4)
    with pytest.raises(InputError, match="channel 6 is out of range for layer 'norm' with 6 channels"):
        visualize(net, "norm", [6], steps=1, size=32)


def test_grayscale_first_conv_kernels_are_gray_tiles():
    """A 1-channel (grayscale) model had 'no Conv2d with 3 input channels' for --kernels."""
    from convlens.featvis import first_conv

    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 5), torch.nn.ReLU(), torch.nn.Conv2d(4, 4, 3))
    assert first_conv(net).name == "0"  # a LayerRef now: convlens.layers owns first_conv
    tiles = first_layer_kernels(net)
    assert tiles.shape == (4, 3, 5, 5) and torch.equal(tiles[:, 0], tiles[:, 2])
    w = net[0].weight.detach()[:, 0]
    assert torch.allclose(tiles[:, 1], 0.5 + w / (2 * w.abs().flatten(1).max(1).values.view(-1, 1, 1)))
    with pytest.raises(LayerError, match="layer '2' is a Conv2d with 4 input channels"):
        first_layer_kernels(net, "2")


def test_grids_of_many_tiles_are_square_ish():
    """512 channels used to make an 8 x 64 grid (1440 x 11560 px)."""
    from convlens.plot.featvis import featvis_grid, kernel_grid

    fig = featvis_grid(np.zeros((100, 3, 2, 2), np.float32), list(range(100)))
    w, h = fig.get_size_inches()
    assert 0.7 < w / h < 1.5 and len(fig.axes) == 100
    assert kernel_grid(torch.rand(3, 3, 2, 2)).get_size_inches()[0] == pytest.approx(
        3 * 1.0 + 4 * 0.12
    )  # 3 tiles + gaps


# -- the recipes against their sources: Keras's step, Lucent's parameterization and transforms -------------


def test_keras_step_moves_the_image_by_exactly_lr_along_the_normalized_gradient():
    """``x1 = x0 + lr * g / ||g||`` per image, with g computed here by hand: a correlation ignores scale."""
    net = _small_net(3)
    x0 = render(net, Channel("5", [1, 4]), recipe="keras", steps=0, size=12, seed=5, **RAW).raw
    x1 = render(net, Channel("5", [1, 4]), recipe="keras", steps=1, size=12, seed=5, **RAW).raw
    x = x0.clone().requires_grad_(True)
    net.eval()
    out = net(x)  # (2, 6, 6, 6): image i maximizes the mean of channel [1, 4][i]
    value = out[0, 1].mean() + out[1, 4].mean()
    (g,) = torch.autograd.grad(value, x)
    step = 10.0 * g / g.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    torch.testing.assert_close(x1, x0 + step, rtol=1e-5, atol=1e-5)
    assert (x1 - x0).flatten(1).norm(dim=1).tolist() == pytest.approx([10.0, 10.0], rel=1e-5)


@pytest.mark.parametrize("size", [8, 16, 18])
@pytest.mark.parametrize("decorrelate", [True, False])
def test_fourier_parameterization_equals_lucent(size, decorrelate):
    """Lucent's ``fft_image`` + ``to_valid_rgb`` on the SAME spectrum: 1/f scaling, the /4 constant, colour
    decorrelation and the sigmoid (even sizes: Lucent keeps an extra frequency column for odd widths)."""
    from lucent.optvis.param.color import to_valid_rgb
    from lucent.optvis.param.spatial import fft_image

    for decay in (1.0, 1.5):
        ours = FourierImage(2, size, sd=0.5, decay_power=decay, decorrelate=decorrelate)
        params, image_f = fft_image((2, 3, size, size), sd=0.5, decay_power=decay)
        assert params[0].shape == ours.spectrum.shape
        with torch.no_grad():
            params[0].copy_(ours.spectrum)
            torch.testing.assert_close(ours(), to_valid_rgb(image_f, decorrelate=decorrelate)(), rtol=0, atol=1e-6)


class _Shift(Jitter):
    """A jitter whose draw is one fixed shift (the affine pipeline applies it like any other)."""

    def __init__(self, dx: int, dy: int):
        super().__init__(max(abs(dx), abs(dy)))
        self.shift = (float(dx), float(dy))

    def draw(self, generator, steps):
        return torch.tensor([self.shift] * steps)


def test_transforms_equal_lucent_where_claimed():
    """Pad: Lucent's ``pad(12, 'constant', 0.5)`` exactly. Jitter: an exact integer shift, kornia's ``translate``
    with align_corners=True (Lucent's call leaves kornia 0.4.1's default, which resamples by a fraction of a pixel,
    so it is not the reference). Rotation by a: kornia's ``warp_affine`` of ``get_rotation_matrix2d`` by -a about the
    centre (Lucent's ``random_rotate``): the recipe's angle set is symmetric, so the distributions are Lucent's.
    Compared away from the borders, where ours repeats the border and kornia fills zeros."""
    import kornia
    from kornia.geometry.transform import translate
    from lucent.optvis import transform as lt

    x = torch.rand(2, 3, 20, 20, generator=torch.Generator().manual_seed(0))
    gens = [torch.Generator().manual_seed(i) for i in range(2)]
    torch.testing.assert_close(Pad(12)(x), lt.pad(12, mode="constant", constant_value=0.5)(x), rtol=0, atol=0)
    for dx, dy in [(2, -3), (3, 1), (-4, 0)]:
        ours = Pipeline([_Shift(dx, dy)]).plan(2, 20, 1, gens)(x, 0)
        ref = translate(x, torch.tensor([[dx, dy]] * 2).float(), align_corners=True)
        torch.testing.assert_close(ours[..., 4:-4, 4:-4], ref[..., 4:-4, 4:-4], rtol=0, atol=1e-5)
        torch.testing.assert_close(
            ours[..., 4:-4, 4:-4], torch.roll(x, (dy, dx), (2, 3))[..., 4:-4, 4:-4], rtol=0, atol=1e-5
        )
    centre = torch.full((2, 2), (20 - 1) / 2)
    for a in (7.0, -10.0, 90.0):
        ours = Pipeline([RandomRotate([a])]).plan(2, 20, 1, gens)(x, 0)
        m = kornia.get_rotation_matrix2d(centre, torch.full((2,), -a), torch.ones(2, 2))
        ref = kornia.warp_affine(x, m, dsize=(20, 20))
        torch.testing.assert_close(ours[..., 5:-5, 5:-5], ref[..., 5:-5, 5:-5], rtol=0, atol=1e-5)
    # the Lucid recipe's parameters are Lucent's standard_transforms' (read from their closures)
    params = [
        dict(zip(t.__code__.co_freevars, (c.cell_contents for c in t.__closure__))) for t in lt.standard_transforms
    ]
    rec = LucidRecipe()
    assert (rec.pad, rec.pad_value) == (params[0]["w"], params[0]["constant_value"]) and params[0]["mode"] == "constant"
    assert (rec.jitter, rec.jitter_after) == (params[1]["d"], params[4]["d"])
    assert list(rec.scales) == pytest.approx(params[2]["scales"]) and list(rec.angles) == params[3]["angles"]
    assert sorted(-a for a in rec.angles) == sorted(rec.angles)  # symmetric: the rotation sign cannot matter
    assert (rec.parameterization, rec.decorrelate, rec.optimizer, rec.lr) == ("fourier", True, "adam", 0.05)


def test_cli_filters_class_objective_refuses_a_layer_and_titles_by_class(capsys, tmp_path):
    from convlens.cli import main
    from convlens.plot.featvis import featvis_grid

    argv = ["filters", "--objective", "class", "--channels", "285", "--steps", "1", "--size", "16"]
    assert main([*argv, "--layer", "blocks.3", "--out", str(tmp_path / "f.png")]) == 2
    err = capsys.readouterr().err
    assert "--layer blocks.3 would be ignored" in err and err.count("\n") == 1 and not (tmp_path / "f.png").exists()
    assert main(["filters", "--channels", "0", "--out", str(tmp_path / "f.png")]) == 2
    assert "--layer is required" in capsys.readouterr().err
    fig = featvis_grid(torch.rand(2, 3, 4, 4), [285, 967], values=[1.0, 2.0], labels=["Egyptian cat", "espresso"])
    assert [ax.get_title() for ax in fig.axes] == ["Egyptian cat (285)  (1)", "espresso (967)  (2)"]


# -- image parameterizations: init distributions, generators, colour decorrelation ---------------------------------

# Lucid's colour matrix written out; its longest column is column 0: sqrt(.26^2 + .27^2 + .27^2) = sqrt(.2134) = 0.46195
# (column 1: sqrt(.09^2 + 0 + .09^2) = 0.1273, column 2: sqrt(.02^2 + .05^2 + .03^2) = 0.0616)
_SQRT_COV = [[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]]
_MAX_NORM = math.sqrt(0.26**2 + 0.27**2 + 0.27**2)


def _decorrelate_by_hand(t: torch.Tensor) -> torch.Tensor:
    """rgb[c] = sum_k (M[c][k] / 0.46195) * t[k], one channel at a time."""
    out = torch.zeros_like(t, dtype=torch.float64)
    for c in range(3):
        for k in range(3):
            out[:, c] += _SQRT_COV[c][k] / _MAX_NORM * t[:, k].double()
    return out


def _gens(*seeds: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(s) for s in seeds]


def test_pixel_image_defaults_are_uniform_0p4_0p6_from_seeds_0_to_n():
    """Defaults: uniform in [0.4, 0.6], image i from ``Generator().manual_seed(i)``, no sigmoid, no decorrelation."""
    p = PixelImage(2, 6)
    want = torch.stack([torch.rand(3, 6, 6, generator=g) * (0.6 - 0.4) + 0.4 for g in _gens(0, 1)])
    torch.testing.assert_close(p.pixels.detach(), want, rtol=0, atol=1e-7)
    torch.testing.assert_close(p().detach(), want, rtol=0, atol=1e-7)  # the image IS the pixels
    assert p.params == [p.pixels] and p.pixels.requires_grad and p.pixels.is_leaf
    assert p.pixels.device.type == "cpu"


def test_pixel_image_uniform_bounds_and_per_image_generators():
    gens = _gens(11, 12, 13)
    p = PixelImage(3, 48, low=-1.0, high=3.0, generators=gens)
    x = p.pixels.detach()
    # 3 * 48 * 48 = 6912 draws per image from U(-1, 3): min/max within 0.01 of the bounds, mean 1 +- 0.05
    # (sd of the mean = 4 / sqrt(12) / sqrt(6912) = 0.014)
    for img in x:
        assert -1.0 <= float(img.min()) < -0.99 and 2.99 < float(img.max()) <= 3.0
        assert abs(float(img.mean()) - 1.0) < 0.05
    # image i is torch.rand of ITS generator only (fresh generators with the same seeds)
    for i, seed in enumerate((11, 12, 13)):
        want = torch.rand(3, 48, 48, generator=torch.Generator().manual_seed(seed)) * 4.0 - 1.0
        torch.testing.assert_close(x[i], want, rtol=0, atol=1e-6)


def test_pixel_image_sigmoid_init_is_gaussian_sd_and_image_is_sigmoid_of_pixels():
    p = PixelImage(2, 32, sigmoid=True, sd=0.3, generators=_gens(5, 6))
    want = torch.stack([torch.randn(3, 32, 32, generator=g) * 0.3 for g in _gens(5, 6)])
    torch.testing.assert_close(p.pixels.detach(), want, rtol=0, atol=1e-7)
    # 3072 N(0, 0.3^2) draws per image: sd within 5 %, mean within 0.03 (sd of the mean 0.3 / sqrt(3072) = 0.0054)
    for img in p.pixels.detach():
        assert abs(float(img.std()) - 0.3) < 0.015 and abs(float(img.mean())) < 0.03
    torch.testing.assert_close(p().detach(), 1.0 / (1.0 + torch.exp(-want)), rtol=0, atol=1e-6)
    # default sd 0.01
    small = PixelImage(1, 32, sigmoid=True, generators=_gens(5))
    torch.testing.assert_close(small.pixels.detach()[0], want[0] / 0.3 * 0.01, rtol=0, atol=1e-7)
    assert abs(float(small.pixels.detach().std()) - 0.01) < 0.0005


def test_pixel_image_decorrelate_matches_the_hand_matrix_and_lucent():
    from lucent.optvis.param.color import to_valid_rgb

    for sigmoid in (True, False):
        p = PixelImage(2, 5, sigmoid=sigmoid, decorrelate=True, sd=1.0, generators=_gens(3, 4))
        raw = p.pixels.detach()
        lin = _decorrelate_by_hand(raw)
        want = torch.sigmoid(lin) if sigmoid else lin
        torch.testing.assert_close(p().detach().double(), want, rtol=0, atol=1e-6)
        ref = to_valid_rgb(lambda raw=raw: raw, decorrelate=True)()  # Lucent always squashes
        if sigmoid:
            torch.testing.assert_close(p().detach(), ref, rtol=0, atol=1e-6)
    # decorrelate_colors keeps the input's dtype (float64 in, float64 out) and is linear per pixel
    t = torch.randn(2, 3, 4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    out = decorrelate_colors(t)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, _decorrelate_by_hand(t), rtol=0, atol=1e-7)


def test_image_params_check_size_count_generators_and_device():
    for cls in (PixelImage, FourierImage):
        with pytest.raises(InputError, match="got size 0, count 1"):
            cls(1, 0)
        with pytest.raises(InputError, match="got size 4, count 0"):
            cls(0, 4)
        with pytest.raises(InputError, match="2 images, got 1 generators"):
            cls(2, 4, generators=_gens(0))
        assert cls(1, 1)().shape == (1, 3, 1, 1)  # the smallest image is allowed
    assert PixelImage(2, 3, device="meta").pixels.device.type == "meta"
    f = FourierImage(2, 4, device="meta")
    assert f.spectrum.device.type == "meta" and f.scale.device.type == "meta"


def test_fourier_image_defaults_equal_lucent_and_seeded_spectrum():
    """Defaults: sd 0.01, decay 1, decorrelated; spectrum of image i = randn((3, S, S//2+1, 2)) of seed i * 0.01."""
    from lucent.optvis.param.color import to_valid_rgb
    from lucent.optvis.param.spatial import fft_image

    ours = FourierImage(2, 8)
    want = torch.stack([torch.randn((3, 8, 5, 2), generator=g) * 0.01 for g in _gens(0, 1)])
    torch.testing.assert_close(ours.spectrum.detach(), want, rtol=0, atol=1e-8)
    assert ours.params == [ours.spectrum] and ours.spectrum.requires_grad
    params, image_f = fft_image((2, 3, 8, 8), sd=0.01, decay_power=1.0)
    with torch.no_grad():
        params[0].copy_(want * 50)  # a spectrum large enough that the colour matrix and the sigmoid matter
        ours.spectrum.copy_(want * 50)
        torch.testing.assert_close(ours(), to_valid_rgb(image_f, decorrelate=True)(), rtol=0, atol=1e-6)


def test_rfft2d_freqs_equal_numpy_on_a_non_square_grid():
    from convlens.featvis.param import _rfft2d_freqs

    want = np.sqrt(np.fft.fftfreq(5)[:, None] ** 2 + np.fft.rfftfreq(8)[None, :] ** 2)  # (5, 5)
    np.testing.assert_allclose(_rfft2d_freqs(5, 8).numpy(), want, rtol=0, atol=1e-7)


# -- transforms: parameters drawn, matrices, padding, and the fused resampling against a hand-written resampler -----


def test_pad_equals_torch_pad_for_every_mode_width_and_value():
    import torch.nn.functional as F

    x = torch.rand(2, 3, 4, 5, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(Pad(2)(x), F.pad(x, (2, 2, 2, 2), mode="constant", value=0.5), rtol=0, atol=0)
    assert float(Pad(1)(x)[0, 0, 0, 0]) == 0.5 and Pad(1)(x).shape == (2, 3, 6, 7)
    torch.testing.assert_close(Pad(3, value=-2.0)(x), F.pad(x, (3, 3, 3, 3), value=-2.0), rtol=0, atol=0)
    for mode in ("reflect", "replicate"):
        torch.testing.assert_close(Pad(2, mode)(x), F.pad(x, (2, 2, 2, 2), mode=mode), rtol=0, atol=0)
    assert torch.equal(Pad(0)(x), x) and Pad(0).out_size(9) == 9
    assert Pad(3).out_size(10) == 16  # 10 + 2 * 3
    assert repr(Pad(2, "reflect")) == "Pad(2, 'reflect', 0.5)"
    with pytest.raises(InputError, match="pad width must be >= 0, got -1"):
        Pad(-1)
    with pytest.raises(InputError, match="pad mode .* got 'circular'"):
        Pad(1, "circular")


def test_jitter_draws_every_integer_in_minus_d_to_d_from_the_given_generator():
    r = Jitter(2).draw(torch.Generator().manual_seed(4), 400)
    assert r.shape == (400, 2) and r.dtype == torch.float32
    want = torch.randint(-2, 3, (400, 2), generator=torch.Generator().manual_seed(4)).float()  # {-2, ..., 2}
    assert torch.equal(r, want)
    for col in (0, 1):  # 400 draws of 5 values: every value appears in each column
        assert sorted(set(r[:, col].tolist())) == [-2.0, -1.0, 0.0, 1.0, 2.0]
    assert torch.equal(Jitter(0).draw(torch.Generator(), 3), torch.zeros(3, 2))
    with pytest.raises(InputError, match="jitter must be >= 0 pixels, got -1"):
        Jitter(-1)


def test_random_scale_and_rotate_draw_uniformly_from_their_lists():
    scales = RandomScale([0.5, 2.0, 3.0]).draw(torch.Generator().manual_seed(2), 300)
    idx = torch.randint(3, (300,), generator=torch.Generator().manual_seed(2))
    assert scales.shape == (300, 1) and torch.equal(scales[:, 0], torch.tensor([0.5, 2.0, 3.0])[idx])
    assert sorted(set(scales[:, 0].tolist())) == [0.5, 2.0, 3.0]
    angles = RandomRotate([-10, 0, 45]).draw(torch.Generator().manual_seed(3), 300)
    idx = torch.randint(3, (300,), generator=torch.Generator().manual_seed(3))
    assert angles.shape == (300, 1) and torch.equal(angles[:, 0], torch.tensor([-10.0, 0.0, 45.0])[idx])
    assert sorted(set(angles[:, 0].tolist())) == [-10.0, 0.0, 45.0]
    RandomScale([0.5])  # scales below 1 (zoom out) are valid
    RandomRotate([0.0, 10.0])
    for bad in ([], [0.0], [-1.0]):
        with pytest.raises(InputError, match="scales must be a non-empty list of positive numbers"):
            RandomScale(bad)
    for bad in ([], [float("inf")], [float("nan")]):
        with pytest.raises(InputError, match="angles must be a non-empty list of finite degrees"):
            RandomRotate(bad)
    assert repr(RandomScale([1 / 3, 1.1])) == "RandomScale([0.3333, 1.1])"
    assert repr(RandomRotate([1 / 3, -5])) == "RandomRotate([0.333, -5.0])"


def _jitter_matrix(dx: float, dy: float) -> list[list[float]]:
    return [[1.0, 0.0, -dx], [0.0, 1.0, -dy], [0.0, 0.0, 1.0]]  # samples p - d


def _scale_matrix(s: float) -> list[list[float]]:
    return [[1.0 / s, 0.0, 0.0], [0.0, 1.0 / s, 0.0], [0.0, 0.0, 1.0]]  # samples p / s


def _rotate_matrix(deg: float) -> list[list[float]]:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return [[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]]  # samples R(-a) p


def test_affine_matrices_equal_hand_written_ones_batched_in_float64():
    params = torch.tensor([[[2.0, -3.0], [0.0, 1.0], [-4.0, 5.0]]] * 2, dtype=torch.float64)  # (2 steps, 3 images, 2)
    m = Jitter(5).matrix(params)
    assert m.shape == (2, 3, 3, 3) and m.dtype == torch.float64
    want = [[_jitter_matrix(*p) for p in row] for row in params.tolist()]
    torch.testing.assert_close(m, torch.tensor(want, dtype=torch.float64), rtol=0, atol=0)
    s = torch.tensor([[[0.5], [2.0], [1.25]]] * 2, dtype=torch.float64)
    m = RandomScale([1.0]).matrix(s)
    assert m.shape == (2, 3, 3, 3) and m.dtype == torch.float64
    want = [[_scale_matrix(v[0]) for v in row] for row in s.tolist()]
    torch.testing.assert_close(m, torch.tensor(want, dtype=torch.float64), rtol=0, atol=1e-15)
    a = torch.tensor([[[30.0], [-90.0], [7.5]]] * 2, dtype=torch.float64)
    m = RandomRotate([0.0]).matrix(a)
    assert m.shape == (2, 3, 3, 3) and m.dtype == torch.float64
    want = [[_rotate_matrix(v[0]) for v in row] for row in a.tolist()]
    torch.testing.assert_close(m, torch.tensor(want, dtype=torch.float64), rtol=0, atol=1e-12)
    for t, k in ((Jitter(1), 2), (RandomScale([1.0]), 1), (RandomRotate([0.0]), 1)):  # built where the params live
        assert t.matrix(torch.ones(4, k, device="meta")).device.type == "meta"


def _resample_by_hand(img: np.ndarray, a: np.ndarray) -> np.ndarray:
    """Output pixel (r, c) = input at ``a @ p`` (p: centred pixel coordinates), bilinear, coordinates clamped to the
    image (border repeat). Centre of an S-pixel axis: (S - 1) / 2."""
    _, size, _ = img.shape
    c0 = (size - 1) / 2
    out = np.empty_like(img)
    for r in range(size):
        for c in range(size):
            qx, qy, _ = a @ np.array([c - c0, r - c0, 1.0])
            u = min(max(qx + c0, 0.0), size - 1.0)
            v = min(max(qy + c0, 0.0), size - 1.0)
            x0, y0 = int(math.floor(u)), int(math.floor(v))
            x1, y1 = min(x0 + 1, size - 1), min(y0 + 1, size - 1)
            fx, fy = u - x0, v - y0
            top = (1 - fx) * img[:, y0, x0] + fx * img[:, y0, x1]
            bottom = (1 - fx) * img[:, y1, x0] + fx * img[:, y1, x1]
            out[:, r, c] = (1 - fy) * top + fy * bottom
    return out


def test_pipeline_plan_equals_hand_drawn_parameters_and_hand_resampling():
    """Pad(2) + jitter(2) + scale + rotate + jitter(1), 2 images x 3 steps, float64 (matrices composed in float32): each image's parameters drawn
    here from a fresh generator of its seed in the transforms' order, the sampling matrix J1 @ S @ R @ J2 built by
    hand, the padded image (np.pad, 0.5) resampled by hand. Zooming out by 0.8 and shifting reaches past the padded
    border, where the border value repeats."""
    import warnings

    seeds, steps, size = (21, 22), 3, 7
    scales, angles = [0.8, 1.25], [-20.0, 10.0, 30.0]
    pipe = Pipeline([Pad(2), Jitter(2), RandomScale(scales), RandomRotate(angles), Jitter(1)])
    plan = pipe.plan(2, size, steps, _gens(*seeds), dtype=torch.float64)
    assert plan.out_size == 11  # 7 + 2 * 2
    x = torch.rand(2, 3, size, size, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    padded = np.pad(x.numpy(), ((0, 0), (0, 0), (2, 2), (2, 2)), constant_values=0.5)
    draws = []
    for seed in seeds:
        g = torch.Generator().manual_seed(seed)
        j1 = torch.randint(-2, 3, (steps, 2), generator=g).tolist()
        sc = torch.randint(2, (steps,), generator=g).tolist()
        ro = torch.randint(3, (steps,), generator=g).tolist()
        j2 = torch.randint(-1, 2, (steps, 2), generator=g).tolist()
        draws.append((j1, sc, ro, j2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no per-step warnings (e.g. grid_sample's align_corners default)
        for step in range(steps):
            y = plan(x, step)
            assert y.shape == (2, 3, 11, 11) and y.dtype == torch.float64
            for i, (j1, sc, ro, j2) in enumerate(draws):
                a = (
                    np.array(_jitter_matrix(*j1[step]))
                    @ np.array(_scale_matrix(scales[sc[step]]))
                    @ np.array(_rotate_matrix(angles[ro[step]]))
                    @ np.array(_jitter_matrix(*j2[step]))
                )
                np.testing.assert_allclose(y[i].numpy(), _resample_by_hand(padded[i], a), rtol=0, atol=1e-6)
    meta = pipe.plan(2, size, steps, _gens(*seeds), device="meta")
    assert meta(torch.zeros(2, 3, size, size, device="meta"), 1).device.type == "meta"


def test_pipeline_checks_and_names_its_fused_groups():
    pipe = Pipeline([Jitter(3), Pad(12), Jitter(4), RandomScale([1.1, 0.9]), RandomRotate([-5, 5]), Pad(1, "reflect")])
    assert pipe.fused_groups() == [
        "affine[Jitter(3)]",
        "Pad(12, 'constant', 0.5)",
        "affine[Jitter(4), RandomScale([1.1, 0.9]), RandomRotate([-5.0, 5.0])]",
        "Pad(1, 'reflect', 0.5)",
    ]
    with pytest.raises(InputError, match="Transform objects, got int"):
        Pipeline([Pad(1), 3])
    with pytest.raises(InputError, match="2 images, got 3 generators"):
        pipe.plan(2, 8, 1, _gens(0, 1, 2))
