"""CAM family: agreement with pytorch-grad-cam 1.5.7 and Captum (oracles, test-only), batching, targets,
state restoration and robustness."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from convlens.errors import ConvlensError, InputError, LayerError
from convlens.explain import METHODS, cam, explain, finalize_maps, get_method, guided_backprop
from convlens.hooks import hook_count

pgc = pytest.importorskip("pytorch_grad_cam")
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

ORACLE = {
    "gradcam": pgc.GradCAM,
    "gradcam++": pgc.GradCAMPlusPlus,
    "xgradcam": pgc.XGradCAM,
    "layercam": pgc.LayerCAM,
    "hirescam": pgc.HiResCAM,
    "eigencam": pgc.EigenCAM,
}


def _oracle(name, model, layers, x, targets):
    """pytorch-grad-cam's maps on a deep copy (it calls model.eval(), fills .grad, may swap modules)."""
    m = copy.deepcopy(model)
    mods = dict(m.named_modules())
    with ORACLE[name](m, [mods[n] for n in layers]) as c:
        return c(x, [ClassifierOutputTarget(t) for t in targets])


def _oracle_eigencam_match(res, ref, size):
    """Eigen-CAM's principal direction has an arbitrary sign: accept the oracle's, whichever it is."""
    errs = []
    for s in (1.0, -1.0):
        maps, _ = finalize_maps([s * r for r in res.raw.values()], size)
        errs.append(np.abs(maps.numpy() - ref).max(axis=(1, 2)))
    return np.minimum(*errs).max()


@pytest.fixture(scope="module")
def r18(resnet18_bundle):
    return resnet18_bundle.model


@pytest.fixture(scope="module")
def x112():
    g = torch.Generator().manual_seed(1)
    return torch.randn(2, 3, 112, 112, generator=g)


@pytest.fixture(scope="module")
def lite_x(lite0, chelsea, coffee):
    """chelsea and coffee as the embedded model sees them, at 128 px to keep the oracle runs cheap."""
    x = lite0.preprocess([chelsea, coffee])
    return torch.nn.functional.interpolate(x, size=(128, 128), mode="bilinear", antialias=True)


# ---------------------------------------------------------------------------------------------- oracles


@pytest.mark.parametrize("name", list(ORACLE))
def test_agrees_with_pytorch_grad_cam_resnet18(r18, x112, name):
    targets = [3, 7]  # per-image targets (the pytorch-grad-cam #328 case)
    ref = _oracle(name, r18, ["layer4"], x112, targets)
    res = explain(r18, x112, name, "layer4", targets)
    assert res.maps.shape == (2, 112, 112) and res.targets.tolist() == targets
    if name == "eigencam":
        assert _oracle_eigencam_match(res, ref, (112, 112)) < 1e-4
    else:
        assert np.abs(res.maps.numpy() - ref).max() < 1e-4


@pytest.mark.parametrize("name", list(ORACLE))
def test_agrees_with_pytorch_grad_cam_lite0(lite0, lite_x, name):
    targets = [285, 967]  # Egyptian cat, espresso
    ref = _oracle(name, lite0.model, ["bn2"], lite_x, targets)
    res = explain(lite0.model, lite_x, name, "bn2", targets)
    if name == "eigencam":
        assert _oracle_eigencam_match(res, ref, (128, 128)) < 1e-4
    else:
        assert np.abs(res.maps.numpy() - ref).max() < 1e-4


def test_several_layers_agree_with_pytorch_grad_cam(r18, x112):
    ref = _oracle("gradcam", r18, ["layer3", "layer4"], x112, [1, 2])
    res = explain(r18, x112, "gradcam", ["layer3", "layer4"], [1, 2])
    assert res.layers == ["layer3", "layer4"] and set(res.raw) == {"layer3", "layer4"}
    assert np.abs(res.maps.numpy() - ref).max() < 1e-4


@pytest.mark.slow
def test_scorecam_agrees_with_pytorch_grad_cam(r18, lite0):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, 32, 32, generator=g)
    m = copy.deepcopy(r18)
    with pgc.ScoreCAM(m, [m.layer1]) as c:
        c.batch_size = 64
        ref = c(x, [ClassifierOutputTarget(t) for t in (5, 9)])
    ours = cam(r18, x, "scorecam", "layer1", [5, 9], batch_size=48)  # chunks cross image boundaries
    assert np.abs(ours.numpy() - ref).max() < 1e-4
    # the embedded model, a shallow 24-channel layer
    x2 = torch.randn(2, 3, 64, 64, generator=g)
    m2 = copy.deepcopy(lite0.model)
    with pgc.ScoreCAM(m2, [m2.blocks[1]]) as c:
        ref2 = c(x2, [ClassifierOutputTarget(t) for t in (285, 1)])
    ours2 = cam(lite0.model, x2, "scorecam", "blocks.1", [285, 1], batch_size=32)
    assert np.abs(ours2.numpy() - ref2).max() < 1e-4


def test_guided_backprop_and_guided_gradcam_agree_with_pytorch_grad_cam(r18, x112):
    from pytorch_grad_cam import GuidedBackpropReLUModel

    res = explain(r18, x112, "guided-gradcam", "layer4", [4, 8])
    gcam = explain(r18, x112, "gradcam", "layer4", [4, 8]).maps
    for i, t in enumerate((4, 8)):
        ref_gb = GuidedBackpropReLUModel(copy.deepcopy(r18), device="cpu")(
            x112[i : i + 1], target_category=t
        )  # (H, W, 3)
        ours_gb = res.extra["guided_backprop"][i].permute(1, 2, 0).numpy()
        scale = np.abs(ref_gb).max()
        assert np.abs(ours_gb - ref_gb).max() < 1e-4 * scale
        # guided Grad-CAM = guided backprop x Grad-CAM map (the pytorch-grad-cam recipe)
        ref_ggc = ref_gb * gcam[i].numpy()[..., None]
        assert np.abs(res.extra["guided"][i].permute(1, 2, 0).numpy() - ref_ggc).max() < 1e-4 * scale
    assert res.maps.shape == (2, 112, 112) and float(res.maps.max()) == pytest.approx(1.0)
    assert hook_count(r18) == 0


def test_guided_backprop_lite0_agrees(lite0, lite_x):
    from pytorch_grad_cam import GuidedBackpropReLUModel

    x = lite_x[:1]
    ref = GuidedBackpropReLUModel(copy.deepcopy(lite0.model), device="cpu")(x, target_category=285)
    # pytorch-grad-cam guides nn.ReLU only (lite0 has ReLU6): the same rule set gives the same gradient
    ours = guided_backprop(lite0.model, x, 285, relu_types=(nn.ReLU,))[0].permute(1, 2, 0).numpy()
    assert np.abs(ours - ref).max() < 1e-4 * np.abs(ref).max()
    guided = guided_backprop(lite0.model, x, 285)  # ReLU6 guided too: no negative gradient passes any ReLU6
    assert not torch.allclose(torch.from_numpy(ref).permute(2, 0, 1), guided[0])


def test_raw_gradcam_matches_captum_layergradcam(r18, x112):
    from captum.attr import LayerGradCam

    targets = torch.tensor([11, 22])
    m = copy.deepcopy(r18)
    ref = LayerGradCam(m, m.layer4).attribute(x112, target=targets)[:, 0]
    res = explain(r18, x112, "gradcam", "layer4", targets)
    raw = res.raw["layer4"]
    assert raw.shape == ref.shape == (2, 4, 4)
    assert torch.allclose(raw, ref.detach(), atol=1e-6 * float(ref.detach().abs().max()) + 1e-8, rtol=1e-4)


# ---------------------------------------------------------------------------------------------- batching, targets


@pytest.mark.parametrize("name", ["gradcam++", "eigencam", "guided-gradcam"])
def test_batch_equals_per_image(r18, x112, name):
    batch = explain(r18, x112, name, "layer4", [3, 7])
    for i, t in enumerate((3, 7)):
        one = explain(r18, x112[i : i + 1], name, "layer4", [t])
        assert torch.allclose(batch.maps[i], one.maps[0], atol=1e-5)
        assert torch.allclose(batch.raw["layer4"][i], one.raw["layer4"][0], atol=1e-5, rtol=1e-4)


def test_each_image_gets_its_own_target(r18, x112):
    x = torch.cat([x112[:1], x112[:1]])  # the same image twice, two different classes
    res = explain(r18, x, "gradcam", "layer4", [3, 500])
    assert res.targets.tolist() == [3, 500]
    assert not torch.allclose(res.raw["layer4"][0], res.raw["layer4"][1])
    alone = explain(r18, x[:1], "gradcam", "layer4", 500)
    assert torch.allclose(res.maps[1], alone.maps[0], atol=1e-5)


def test_targets_none_int_tensor_and_callable(r18, x112):
    with torch.no_grad():
        logits = r18(x112)
    top = explain(r18, x112, "gradcam", "layer4")
    assert top.targets.tolist() == logits.argmax(1).tolist()
    assert torch.allclose(top.scores, logits.max(1).values, atol=1e-4)
    assert torch.allclose(top.probs, logits.softmax(1).max(1).values, atol=1e-5)
    by_int = explain(r18, x112, "gradcam", "layer4", 7)
    by_tensor = explain(r18, x112, "gradcam", "layer4", torch.tensor([7, 7]))
    by_fn = explain(r18, x112, "gradcam", "layer4", lambda out: out[:, 7])
    assert by_int.targets.tolist() == [7, 7] and by_fn.targets.tolist() == [-1, -1] and by_fn.probs is None
    assert torch.allclose(by_int.maps, by_tensor.maps) and torch.allclose(by_int.maps, by_fn.maps, atol=1e-6)


class _MultiOut(nn.Module):
    """A model returning its logits inside a tuple / dict (next to a feature map), or only features."""

    def __init__(self, kind):
        super().__init__()
        self.kind = kind
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        f = self.conv(x)
        y = self.head(f.mean((2, 3)))
        return {"plain": y, "tuple": (y, f), "dict": {"feat": f, "logits": y}, "features": {"feat": f}}[self.kind]


@pytest.mark.parametrize("kind", ["tuple", "dict"])
@pytest.mark.parametrize("name", ["gradcam", "scorecam"])
def test_tuple_and_dict_outputs_use_their_logits_for_class_targets(kind, name):
    """Class targets used to fail on (logits, features) tuples and {'logits': ...} dicts (the CLI had no way out)."""
    from convlens.explain.metrics import deletion_curve

    torch.manual_seed(0)
    net = _MultiOut(kind).eval()
    x = torch.randn(2, 3, 8, 8)
    plain = _MultiOut("plain").eval()
    plain.load_state_dict(net.state_dict())
    res = explain(net, x, name, "conv", [1, 2])
    ref = explain(plain, x, name, "conv", [1, 2])
    assert res.targets.tolist() == [1, 2] and res.probs is not None
    assert torch.allclose(res.maps, ref.maps, atol=1e-6) and torch.allclose(res.probs, ref.probs)
    assert explain(net, x, name, "conv").targets.tolist() == plain(x).argmax(1).tolist()
    d = deletion_curve(net, x, res.maps, res.targets, steps=4)
    assert d.auc.shape == (2,) and bool(torch.isfinite(d.auc).all()) and hook_count(net) == 0


def test_output_without_logits_needs_callable_target():
    torch.manual_seed(0)
    net = _MultiOut("features")
    x = torch.randn(2, 3, 8, 8)
    with pytest.raises(InputError, match="callable"):
        cam(net, x, "gradcam", "conv")
    m = cam(net, x, "gradcam", "conv", lambda out: out["feat"][:, 1].mean((1, 2)))
    assert m.shape == (2, 8, 8) and hook_count(net) == 0


# ---------------------------------------------------------------------------------------------- state & errors


def test_tuple_output_layer_is_a_clear_error():
    class Pair(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)

        def forward(self, x):
            y = self.conv(x)
            return y, y.mean()

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.pair = Pair()
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(self.pair(x)[0].mean((2, 3)))

    net = Net()
    with pytest.raises(LayerError, match="plain tensor"):
        cam(net, torch.randn(1, 3, 8, 8), "gradcam", "pair")
    assert hook_count(net) == 0
    assert cam(net, torch.randn(1, 3, 8, 8), "gradcam", "pair.conv").shape == (1, 8, 8)


def _small_net(inplace=True):
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.BatchNorm2d(6),
        nn.ReLU(inplace=inplace),
        nn.Conv2d(6, 8, 3, padding=1),
        nn.ReLU(inplace=inplace),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 5),
    )


@pytest.mark.parametrize("name", list(METHODS))
def test_state_restored_no_param_grads_no_hooks(name):
    net = _small_net().train()
    net[0].weight.requires_grad_(False)
    x = torch.randn(3, 3, 10, 10)
    out = cam(net, x, name, "3", [0, 1, 2], batch_size=7)
    assert out.shape == (3, 10, 10) and torch.isfinite(out).all()
    assert all(m.training for m in net.modules())
    assert net[0].weight.requires_grad is False and net[3].weight.requires_grad is True
    assert all(p.grad is None for p in net.parameters())
    assert hook_count(net) == 0


@pytest.mark.parametrize(
    "kwargs, err",
    [
        ({"targets": [0, 1]}, InputError),  # 2 targets for 3 images
        ({"targets": 5}, InputError),  # class out of range
        ({"targets": lambda out: out[:, 0:2]}, InputError),  # callable shape
        ({"target_layer": "nope"}, LayerError),
        ({"target_layer": "6"}, LayerError),  # Flatten: (N, C) output
        ({"method": "gradcm"}, InputError),
    ],
)
def test_errors_leave_no_hooks_and_restore_state(kwargs, err):
    net = _small_net().train()
    x = torch.randn(3, 3, 10, 10)
    kw = {"method": "gradcam", "target_layer": "3", **kwargs}
    with pytest.raises(err) as info:
        cam(net, x, **kw)
    assert isinstance(info.value, ConvlensError) and str(info.value).endswith(".")
    assert hook_count(net) == 0 and all(m.training for m in net.modules())
    assert all(p.requires_grad and p.grad is None for p in net.parameters())


@pytest.mark.parametrize(
    "x, match",
    [
        (np.zeros((1, 3, 8, 8), np.float32), "torch.Tensor"),
        (torch.zeros(3, 8), "shape"),
        (torch.zeros(1, 3, 8, 8, dtype=torch.uint8), "float"),
        (torch.full((1, 3, 8, 8), float("nan")), "NaN"),
    ],
)
def test_bad_input(x, match):
    with pytest.raises(InputError, match=match):
        cam(_small_net(), x, "gradcam", "3")


def test_unknown_method_suggests():
    with pytest.raises(InputError, match="did you mean 'gradcam'"):
        get_method("gradcamm")
    assert get_method("Grad-CAM++").name == "gradcam++"


def test_inplace_relu_after_target_layer():
    net = _small_net(inplace=True).eval()
    ref_net = copy.deepcopy(net)
    for i, m in enumerate(ref_net):
        if isinstance(m, nn.ReLU):
            ref_net[i] = nn.ReLU(inplace=False)
    x = torch.randn(2, 3, 10, 10)
    res = explain(net, x, "hirescam", "3", [1, 2])  # the conv right before an in-place ReLU
    # manual HiResCAM with a full graph on the non-inplace twin
    acts = {}
    ref_net[3].register_forward_hook(lambda m, i, o: acts.setdefault("a", o))
    out = ref_net(x)
    (g,) = torch.autograd.grad(out[[0, 1], [1, 2]].sum(), acts["a"])
    manual = (g * acts["a"]).sum(1)
    assert (acts["a"] < 0).any()  # pre-ReLU values were captured, not the in-place result
    assert torch.allclose(res.raw["3"], manual.detach(), atol=1e-6)


def test_outer_no_grad_and_inference_mode(r18, x112):
    ref = cam(r18, x112, "gradcam", "layer4", [1, 2])
    with torch.no_grad():
        a = cam(r18, x112, "gradcam", "layer4", [1, 2])
    with torch.inference_mode():
        xi = x112.clone()  # an inference tensor
        b = cam(r18, xi, "gradcam", "layer4", [1, 2])
    assert torch.allclose(a, ref) and torch.allclose(b, ref)
    assert hook_count(r18) == 0


def test_amp_bf16_and_channels_last(r18, x112):
    ref = cam(r18, x112, "gradcam", "layer4", [1, 2])
    m_cl = copy.deepcopy(r18).to(memory_format=torch.channels_last)
    cl = cam(m_cl, x112.contiguous(memory_format=torch.channels_last), "gradcam", "layer4", [1, 2])
    assert torch.allclose(cl, ref, atol=1e-4)
    amp = cam(r18, x112, "gradcam", "layer4", [1, 2], amp=True)
    assert amp.dtype == torch.float32 and torch.isfinite(amp).all()
    corr = np.corrcoef(amp.flatten().numpy(), ref.flatten().numpy())[0, 1]
    assert corr > 0.9


def test_zero_gradient_and_constant_activations_give_zeros_and_warn():
    net = _small_net().eval()
    x = torch.zeros(2, 3, 10, 10)
    with torch.no_grad():
        for p in net[3].parameters():
            p.zero_()  # the target conv outputs zeros: constant activations, zero weights downstream
    for name in ("gradcam", "eigencam", "layercam"):
        with pytest.warns(RuntimeWarning, match="constant"):
            m = cam(net, x, name, "3")
        assert torch.equal(m, torch.zeros_like(m))


def test_auto_layer_and_module_spec(r18, x112, lite0, lite_x):
    assert explain(r18, x112, "gradcam").layers == ["layer4"]
    assert explain(r18, x112, "gradcam", r18.layer3).layers == ["layer3"]
    assert explain(lite0.model, lite_x[:1], "gradcam").layers == ["bn2"]
    assert explain(r18, x112, "gradcam", "layer4.*").layers == ["layer4.0", "layer4.1"]


def test_pretrained_gradcam_looks_at_the_cat(lite0, chelsea):
    x = lite0.preprocess(chelsea)
    res = explain(lite0.model, x, "gradcam", "bn2")
    assert lite0.label(int(res.targets[0])) == "Egyptian cat"
    m = res.maps[0]
    # chelsea's face/body fill the centre of the crop: the map's mass is there, not on the borders
    centre = m[56:168, 56:168].mean()
    border = torch.cat([m[:28].flatten(), m[-28:].flatten(), m[:, :28].flatten(), m[:, -28:].flatten()]).mean()
    assert centre > border


def test_no_memory_growth_over_repeated_calls():
    net = _small_net().eval()
    x = torch.randn(2, 3, 10, 10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(50):
            cam(net, x, "gradcam++", "3")
    assert hook_count(net) == 0
    import gc

    gc.collect()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        leaked = [
            o for o in gc.get_objects() if isinstance(o, torch.Tensor) and o.requires_grad and o.grad_fn is not None
        ]
    assert len(leaked) < 5


def test_non_square_input_and_module_list():
    net = _small_net().eval()
    x = torch.randn(2, 3, 9, 14)
    res = explain(net, x, "xgradcam", [net[0], "3"], [0, 1])
    assert res.maps.shape == (2, 9, 14) and res.layers == ["0", "3"]
    assert res.raw["0"].shape == (2, 9, 14)


@given(
    st.lists(st.floats(-1e6, 1e6, allow_nan=False, width=32), min_size=4, max_size=4).map(
        lambda v: torch.tensor(v).view(1, 2, 2)
    ),
    st.integers(2, 9),
)
def test_finalize_maps_is_in_unit_range_and_never_nan(raw, size):
    maps, flat = finalize_maps([raw, raw * 2], (size, size))
    assert maps.shape == (1, size, size) and torch.isfinite(maps).all()
    assert float(maps.min()) >= 0 and float(maps.max()) <= 1
    if bool(flat[0]):
        assert torch.equal(maps, torch.zeros_like(maps))
    else:
        assert float(maps.max()) == pytest.approx(1.0)


# ---------------------------------------------------------------------------------------------- transformers


@pytest.fixture(scope="module")
def vit():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)  # timm's init draws from the global RNG; test-only seeding
    return timm.create_model("vit_tiny_patch16_224", img_size=64).eval()


def test_vit_auto_layer_is_last_block_tokens_and_matches_oracle_reshape(vit):
    """'auto' on a ViT used to pick an attention internal (N, heads, T, d) and return meaningless maps."""
    from convlens.explain import resolve_layers

    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    assert resolve_layers(vit, "auto", (3, 64, 64))[0][0] == "blocks.11.norm1"
    res = explain(vit, x, "gradcam", "auto", [1, 2])
    assert res.raw["blocks.11.norm1"].shape == (2, 4, 4)

    def reshape(t):  # pytorch-grad-cam's documented ViT recipe: drop the class token, tokens -> grid
        return t[:, 1:, :].reshape(t.shape[0], 4, 4, t.shape[2]).permute(0, 3, 1, 2)

    m = copy.deepcopy(vit)
    with pgc.GradCAM(m, [m.blocks[-1].norm1], reshape_transform=reshape) as c:
        ref = c(x, [ClassifierOutputTarget(1), ClassifierOutputTarget(2)])
    assert np.abs(res.maps.numpy() - ref).max() < 1e-4


def test_non_map_layer_error(vit):
    # token grids (prefix/register tokens, non-square) are convlens.layers' job: tests/test_layers.py
    with pytest.raises(LayerError, match="feature map"):
        explain(vit, torch.randn(1, 3, 64, 64), "gradcam", "fc_norm")  # (N, D) after pooling: no map


def test_layer_called_twice_warns_which_call_is_used(r18, x112):
    """torchvision's BasicBlock reuses one ReLU module; its map silently used only the last call."""
    with pytest.warns(RuntimeWarning, match="'layer4.1.relu' is called several times"):
        res = explain(r18, x112[:1], "gradcam", "layer4.1.relu", [0])
    ref = explain(r18, x112[:1], "gradcam", "layer4", [0])  # the block's output is that last ReLU call
    assert torch.allclose(res.maps, ref.maps, atol=1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        explain(r18, x112[:1], "gradcam", "layer4.1.conv2", [0])


class _ChannelsLast(nn.Module):
    """Swin / timm-NHWC style: the late feature maps are (N, h, w, C)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 4, stride=4)
        self.norm = nn.LayerNorm(6)
        self.head = nn.Linear(6, 5)

    def forward(self, x):
        return self.head(self.norm(self.conv(x).permute(0, 2, 3, 1)).mean((1, 2)))


def test_channels_last_maps_auto_and_oracle():
    """An (N, h, w, C) layer was read as C=h, h=w, w=C (Swin's auto choice was an attention projection)."""
    from convlens.explain import resolve_layers

    torch.manual_seed(0)
    net = _ChannelsLast().eval()
    x = torch.randn(2, 3, 32, 48)
    assert resolve_layers(net, "auto", (3, 32, 48))[0][0] == "norm"
    res = explain(net, x, "gradcam", "auto", [1, 4])
    assert res.raw["norm"].shape == (2, 8, 12)
    m = copy.deepcopy(net)
    with pgc.GradCAM(m, [m.norm], reshape_transform=lambda t: t.permute(0, 3, 1, 2)) as c:
        ref = c(x, [ClassifierOutputTarget(1), ClassifierOutputTarget(4)])
    assert np.abs(res.maps.numpy() - ref).max() < 1e-4


def test_batch_bound_target_callable_gets_a_clear_error_in_scorecam_and_metrics():
    """A callable assuming the original batch crashed deep in Score-CAM with a raw shape-mismatch RuntimeError."""
    from convlens.explain.metrics import deletion_curve

    torch.manual_seed(0)
    net = _MultiOut("plain").eval()
    x = torch.randn(2, 3, 8, 8)
    bound = lambda out: out.gather(1, torch.tensor([[1], [2]]))[:, 0]  # noqa: E731 - only valid for N = 2
    with pytest.raises(InputError, match="must score each row on its own"):
        explain(net, x, "scorecam", "conv", bound, batch_size=3)
    maps = cam(net, x, "gradcam", "conv", bound)  # one batch: fine
    with pytest.raises(InputError, match="must score each row on its own"):
        deletion_curve(net, x, maps, bound, steps=4, batch_size=3)
    rowwise = explain(net, x, "scorecam", "conv", lambda out: out[:, 1], batch_size=3)
    assert torch.allclose(rowwise.maps, explain(net, x, "scorecam", "conv", 1, batch_size=3).maps, atol=1e-6)


@pytest.mark.parametrize("kind", ["hot spot", "cold spot"])
def test_eigencam_sign_is_pinned_by_a_known_answer(kind):
    """Activations whose right answer is obvious: every channel strongly on at one spot (or off at one spot) over
    small noise. The first principal component is that spot either way; the documented convention (the map
    correlates positively with the mean activation) makes the hot spot the map's maximum and the cold spot its
    minimum. A flipped sign would put a hot spot at 0 after the ReLU: pytorch-grad-cam's oracle accepts either."""
    from convlens.explain import EigenCAM

    g = torch.Generator().manual_seed(0)
    a = 0.05 * torch.rand(2, 6, 7, 7, generator=g) + 1.0
    spots = [(1, 5), (4, 2)]
    for i, (r, c) in enumerate(spots):
        a[i, :, r, c] = 5.0 if kind == "hot spot" else -3.0
    net = nn.Sequential(nn.Identity(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    res = EigenCAM(net, "0")(a, [0, 0])
    raw, maps = res.raw["0"], res.maps
    for i, (r, c) in enumerate(spots):
        spot = r * 7 + c
        if kind == "hot spot":
            assert int(raw[i].flatten().argmax()) == spot and float(raw[i, r, c]) > 0
            assert int(maps[i].flatten().argmax()) == spot and float(maps[i, r, c]) == pytest.approx(1.0)
        else:
            assert int(raw[i].flatten().argmin()) == spot and float(raw[i, r, c]) < 0
            assert float(maps[i, r, c]) == pytest.approx(0.0, abs=1e-6)


# -- Grad-CAM split by channel (Captum's attr_dim_summation=False) --------------------------------


def test_gradcam_channels_equal_captum_per_channel_layergradcam(resnet18_bundle):
    from captum.attr import LayerGradCam

    from convlens.explain import explain, gradcam_channels

    model = resnet18_bundle.model
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    c = gradcam_channels(model, x, "layer3", targets=[3, 7])
    ref = LayerGradCam(model, model.layer3).attribute(x, target=[3, 7], attr_dim_summation=False)
    torch.testing.assert_close(c.maps, ref.detach(), rtol=1e-4, atol=1e-6)
    # the channel terms sum to the Grad-CAM map before its ReLU
    raw = explain(model, x, "gradcam", "layer3", [3, 7]).raw["layer3"]
    torch.testing.assert_close(c.maps.sum(1), raw, rtol=1e-4, atol=1e-5)
    assert torch.allclose(c.share.abs().sum(1), torch.ones(2))
    top = c.top(0, 5)
    assert len(top) <= 5 and all(s > 0 for _, s in top)
    assert [ch for ch, _ in top] == c.contribution[0].topk(len(top)).indices.tolist()
    assert not model.training and all(p.grad is None for p in model.parameters())


def test_normalize_maps_worked_batch():
    """Per-image min-max with the flat rule ``range <= 1e-6 * max(|max|, |min|)``, NaN or zero range -> zeros.
    Image 1 sits exactly on the threshold: 1e-6 * 1e6 rounds to 1.0 in float32 and 1e6 - 999999 = 1, so it is
    flat; image 4's range 2 is not (its values 999999, 1e6, 1000001 -> 0, 0.5, 1)."""
    from convlens.explain.base import normalize_maps

    nan = float("nan")
    m = torch.tensor(
        [
            [[-0.125, 0.0, 0.125], [0.0625, -0.0625, 0.375]],  # min -1/8, range 1/2: (m + 1/8) * 2
            [[999999.0, 1e6, 1e6], [1e6, 999999.0, 1e6]],  # range 1 = 1e-6 * 1e6: flat
            [[0.0, 1.0, nan], [2.0, 3.0, 4.0]],  # NaN: flat
            [[1e6, 1000000.5, 1e6], [1e6, 1e6, 1e6]],  # range 0.5 < 1: flat
            [[999999.0, 1e6, 1000001.0], [1000001.0, 1e6, 999999.0]],  # range 2: (m - 999999) / 2
            [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]],  # zero range: flat
        ]
    )
    out, flat = normalize_maps(m)
    want = torch.zeros(6, 2, 3)
    want[0] = torch.tensor([[0.0, 0.25, 0.5], [0.375, 0.125, 1.0]])
    want[4] = torch.tensor([[0.0, 0.5, 1.0], [1.0, 0.5, 0.0]])
    assert flat.tolist() == [False, True, True, True, False, True]
    assert torch.equal(out, want)
