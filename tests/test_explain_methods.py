"""The round-2 CAM methods (Ablation-CAM, FullGrad, Eigen-Grad-CAM, Smooth Grad-CAM++, SS-CAM, IS-CAM)
and the aug_smooth / eigen_smooth options, against pytorch-grad-cam 1.5.7 and torch-cam (oracles,
test-only), on random-init ResNet-18 and MobileNetV3-Small, batch 3 with a different target per image."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from convlens.errors import InputError
from convlens.explain import METHODS, explain, finalize_maps

pgc = pytest.importorskip("pytorch_grad_cam")
from pytorch_grad_cam.ablation_layer import AblationLayer  # noqa: E402
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

TARGETS = [1, 5, 8]


def _net(kind: str) -> nn.Module:
    """Random init, with BatchNorm statistics calibrated on random images (as training would set them):
    fresh MobileNetV3 statistics shrink activations to ~1e-9 logits, where the oracles' 1e-7 guards
    in their min-max normalization dominate the maps."""
    torch.manual_seed(0)
    if kind == "resnet18":
        net = torchvision.models.resnet18(num_classes=10)
    else:
        net = torchvision.models.mobilenet_v3_small(num_classes=10)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None  # cumulative average over the calibration batches
    net.train()
    with torch.no_grad():
        for _ in range(2):
            net(torch.randn(8, 3, 64, 64))
    return net.eval()


#: a layer per model whose output is a map at small inputs (and cheap for the perturbation methods)
LAYER = {"resnet18": "layer4", "mobilenet_v3_small": "features.9"}
SMALL_LAYER = {"resnet18": "layer1", "mobilenet_v3_small": "features.3"}


@pytest.fixture(scope="module", params=["resnet18", "mobilenet_v3_small"])
def model_kind(request):
    return request.param, _net(request.param)


def _x(size: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _pgc(cls, model, layer, x, targets, **call_kw):
    m = copy.deepcopy(model)
    mods = dict(m.named_modules())
    with cls(m, [mods[layer]] if layer else []) as c:
        return c(x, [ClassifierOutputTarget(t) for t in targets], **call_kw)


def _either_sign(res, ref, size):
    """A principal component's sign is arbitrary: accept the oracle's."""
    errs = []
    for s in (1.0, -1.0):
        maps, _ = finalize_maps([s * r for r in res.raw.values()], size)
        errs.append(np.abs(maps.numpy() - ref).max(axis=(1, 2)))
    return np.minimum(*errs).max()


def _torchcam_final(low: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """torch-cam's low-res normalized maps -> upsampled and min-max normalized like convlens."""
    maps, _ = finalize_maps([low], size)
    return maps.numpy()


def test_new_methods_are_registered():
    for name in ("ablationcam", "fullgrad", "eigengradcam", "smoothgradcam++", "sscam", "iscam"):
        assert name in METHODS


def test_eigengradcam_agrees_with_pytorch_grad_cam(model_kind):
    kind, net = model_kind
    x = _x(96)
    ref = _pgc(pgc.EigenGradCAM, net, LAYER[kind], x, TARGETS)
    res = explain(net, x, "eigengradcam", LAYER[kind], TARGETS)
    assert res.targets.tolist() == TARGETS
    assert _either_sign(res, ref, (96, 96)) < 1e-4


@pytest.mark.slow
def test_fullgrad_agrees_with_pytorch_grad_cam(model_kind):
    kind, net = model_kind
    x = _x(64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = _pgc(pgc.FullGrad, net, None, x, TARGETS)
    res = explain(net, x, "fullgrad", "auto", TARGETS)
    assert np.isfinite(res.maps.numpy()).all()
    assert np.abs(res.maps.numpy() - ref).max() < 1e-4


class _ZeroAblation(AblationLayer):
    """pytorch-grad-cam's ablation layer writing 0 always (convlens' documented ablation value)."""

    def __call__(self, x):
        out = self.activations
        for i in range(out.size(0)):
            out[i, self.indices[i], :] = 0
        return out


@pytest.mark.slow
def test_ablationcam_agrees_with_pytorch_grad_cam(model_kind):
    kind, net = model_kind
    x = _x(32 if kind == "resnet18" else 64)
    layer = SMALL_LAYER[kind]
    m = copy.deepcopy(net)
    mods = dict(m.named_modules())
    # resnet18.layer1 ends in a ReLU (min 0): pytorch-grad-cam's own rule also writes 0 there;
    # MobileNet's Hardswish goes negative, where convlens writes 0 and pytorch-grad-cam min - 1e7
    abl = AblationLayer() if kind == "resnet18" else _ZeroAblation()
    with pgc.AblationCAM(m, [mods[layer]], ablation_layer=abl, batch_size=64) as c:
        ref = c(x, [ClassifierOutputTarget(t) for t in TARGETS])
    res = explain(net, x, "ablationcam", layer, TARGETS, batch_size=50)  # chunks cross image boundaries
    assert np.abs(res.maps.numpy() - ref).max() < 1e-4


def test_smoothgradcampp_without_noise_is_gradcampp(model_kind):
    kind, net = model_kind
    x = _x(96)
    ref = _pgc(pgc.GradCAMPlusPlus, net, LAYER[kind], x, TARGETS)
    res = explain(net, x, "smoothgradcam++", LAYER[kind], TARGETS, num_samples=1, std=0.0)
    assert np.abs(res.maps.numpy() - ref).max() < 1e-4


@pytest.mark.slow
def test_smoothgradcampp_averages_derivatives_over_noisy_inputs():
    """The documented formula, computed here with plain autograd on the same noisy copies."""
    net = _net("resnet18")
    x = _x(64)
    res = explain(net, x, "smoothgradcam++", "layer4", TARGETS, num_samples=3, std=0.5, seed=7)
    gen = torch.Generator().manual_seed(7)
    feats = {}
    h = net.layer4.register_forward_hook(lambda m, i, o: feats.__setitem__("a", o))
    d = []
    try:
        with torch.no_grad():
            net(x)
        a = feats["a"].detach()
        for _ in range(3):
            xn = (x + torch.randn(x.shape, generator=gen) * 0.5).requires_grad_(True)
            out = net(xn)
            (g,) = torch.autograd.grad(out[torch.arange(3), TARGETS].sum(), feats["a"])
            d.append(g)
    finally:
        h.remove()
    g = torch.stack(d)
    d1, d2, d3 = g.mean(0), (g**2).mean(0), (g**3).mean(0)
    alpha = d2 / (2 * d2 + a.sum((2, 3), keepdim=True) * d3 + 1e-6)
    alpha = torch.where(d2 != 0, alpha, torch.zeros_like(alpha))
    w = (alpha * torch.relu(d1)).sum((2, 3))
    want, _ = finalize_maps([(w[:, :, None, None] * a).sum(1)], (64, 64))
    assert torch.allclose(res.maps, want, atol=1e-4)
    again = explain(net, x, "smoothgradcam++", "layer4", TARGETS, num_samples=3, std=0.5, seed=7)
    assert torch.equal(again.maps, res.maps)  # seeded, no global RNG


@pytest.mark.slow
@pytest.mark.parametrize("name", ["sscam", "iscam"])
def test_sscam_iscam_agree_with_torchcam(model_kind, name):
    tc = pytest.importorskip("torchcam.methods")
    kind, net = model_kind
    size = 32 if kind == "resnet18" else 64
    x = _x(size)
    layer = SMALL_LAYER[kind]
    kw = {"num_samples": 2, "std": 0.5} if name == "sscam" else {"num_samples": 3}
    m = copy.deepcopy(net)
    cls = tc.SSCAM if name == "sscam" else tc.ISCAM
    with cls(m, layer, batch_size=64, input_shape=(3, size, size), **kw) as ext:
        with torch.no_grad():
            m(x)
        torch.manual_seed(3)  # torch-cam draws its noise from the global generator
        (low,) = ext(class_idx=TARGETS)
    ref = _torchcam_final(low, (size, size))
    res = explain(net, x, name, layer, TARGETS, batch_size=64, seed=3, **kw)
    assert np.abs(res.maps.numpy() - ref).max() < 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("name", ["gradcam", "layercam"])
def test_aug_smooth_and_eigen_smooth_agree_with_pytorch_grad_cam(name):
    net = _net("resnet18")
    x = _x(64)
    cls = {"gradcam": pgc.GradCAM, "layercam": pgc.LayerCAM}[name]
    ref = _pgc(cls, net, "layer4", x, TARGETS, aug_smooth=True)
    res = explain(net, x, name, "layer4", TARGETS, aug_smooth=True)
    assert np.abs(res.maps.numpy() - ref).max() < 1e-4
    ref_e = _pgc(cls, net, "layer4", x, TARGETS, eigen_smooth=True)
    res_e = explain(net, x, name, "layer4", TARGETS, eigen_smooth=True)
    assert _either_sign(res_e, ref_e, (64, 64)) < 1e-4


@pytest.mark.slow
def test_eigen_smooth_for_a_score_method_matches_pytorch_grad_cam():
    net = _net("mobilenet_v3_small")
    x = _x(64)
    m = copy.deepcopy(net)
    with pgc.ScoreCAM(m, [m.features[3]]) as c:
        ref = c(x, [ClassifierOutputTarget(t) for t in TARGETS], eigen_smooth=True)
    res = explain(net, x, "scorecam", "features.3", TARGETS, eigen_smooth=True)
    assert _either_sign(res, ref, (64, 64)) < 1e-4


@pytest.mark.parametrize("name", ["ablationcam", "fullgrad", "eigengradcam", "smoothgradcam++", "sscam", "iscam"])
def test_new_methods_are_finite_and_batch_independent(name):
    net = _net("mobilenet_v3_small")
    x = _x(64)
    kw = {"num_samples": 2} if name in ("sscam", "iscam", "smoothgradcam++") else {}
    res = explain(net, x, name, "features.3", TARGETS, **kw)
    assert res.maps.shape == (3, 64, 64) and torch.isfinite(res.maps).all()
    assert float(res.maps.amax(dim=(1, 2)).min()) > 0  # no all-zero map here
    one = explain(net, x[1:2], name, "features.3", TARGETS[1:2], **kw)
    if name not in ("sscam", "smoothgradcam++"):  # their noise depends on the batch shape
        assert torch.allclose(one.maps[0], res.maps[1], atol=1e-4)


def test_constant_map_warns_why():
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    with torch.no_grad():
        net[3].weight.zero_()  # the head ignores every feature: zero gradient everywhere
    with pytest.warns(RuntimeWarning, match="zero gradient at layer '0'"):
        res = explain(net, torch.randn(2, 3, 8, 8), "gradcam", "0", [0, 1])
    assert float(res.maps.abs().max()) == 0.0
    flat = nn.Sequential(nn.Conv2d(3, 4, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    with pytest.warns(RuntimeWarning, match="constant activations at layer '0'"):
        explain(flat, torch.ones(1, 3, 6, 6), "gradcam", "0", 0)


def test_option_errors():
    net = _net("mobilenet_v3_small")
    with pytest.raises(InputError, match="num_samples"):
        explain(net, _x(32), "sscam", "features.3", TARGETS, num_samples=0)
    with pytest.raises(InputError, match="create_graph"):
        explain(net, _x(32), "scorecam", "features.3", TARGETS, create_graph=True)


def test_ablation_needs_nchw_layer_error():
    class Tok(nn.Module):
        def forward(self, x):
            return x.flatten(2).transpose(1, 2)  # (N, hw, C) tokens

    net = nn.Sequential(nn.Conv2d(3, 4, 4, stride=4), Tok(), nn.Flatten(), nn.Linear(4 * 16, 2))
    from convlens.errors import LayerError

    with pytest.raises(LayerError, match="Ablation-CAM"):
        explain(net, torch.randn(1, 3, 16, 16), "ablationcam", "1", 0)
    _ = F  # keep the import used


@pytest.mark.parametrize("name", ["gradcam", "layercam"])
def test_create_graph_maps_carry_parameter_gradients_equal_to_finite_differences(name):
    """explain(..., create_graph=True) inside a loss: d loss / d theta equals a central difference."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.Tanh(), nn.Conv2d(6, 5, 3, padding=1), nn.Softplus(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 3),
    )  # fmt: skip
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    weight = torch.rand(2, 8, 8, generator=torch.Generator().manual_seed(2))

    def loss() -> torch.Tensor:
        return (explain(net, x, name, "3", [0, 2], create_graph=True).maps * weight).sum()

    val = loss()
    params = list(net.parameters())
    grads = torch.autograd.grad(val, params, allow_unused=True)  # the head's bias does not move the map
    assert grads[5] is None and all(p.grad is None for p in params) and all(p.requires_grad for p in params)
    assert any(float(g.abs().max()) > 0 for g in grads[:4])  # the conv layers get gradients from the map
    for pi, idx in ((0, (1, 0, 1, 1)), (2, (3, 2, 0, 2)), (4, (1, 3))):
        p = params[pi]
        h = 1e-3
        with torch.no_grad():
            old = float(p[idx])
            p[idx] = old + h
            up = float(loss())
            p[idx] = old - h
            down = float(loss())
            p[idx] = old
        fd = (up - down) / (2 * h)
        assert float(grads[pi][idx]) == pytest.approx(fd, rel=2e-2, abs=1e-3)


# -- hand-worked cases for the weight functions and the shared pipeline (mutation testing, issue 19) -------------


def _pc_oracle(m: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """numpy's first principal component of each (C, h, w) stack: positions x channels, channel means removed,
    projected on the first right singular vector, signed to correlate positively with ``ref`` (N, h, w)."""
    out = []
    for mi, ri in zip(m.astype(np.float64), ref.astype(np.float64), strict=True):
        flat = mi.reshape(mi.shape[0], -1).T
        flat = flat - flat.mean(0)
        _, _, vt = np.linalg.svd(flat)
        proj = flat @ vt[0]
        r = ri.ravel() - ri.mean()
        out.append((proj if proj @ r >= 0 else -proj).reshape(mi.shape[1:]))
    return np.stack(out)


def test_first_component_treats_nan_and_inf_as_zero():
    from convlens.explain.base import first_component

    nan, inf = float("nan"), float("inf")
    # one channel: the first right singular vector of an (hw, 1) matrix is [+-1], so the map is the channel with
    # its mean removed, signed to correlate with the channel sum (the channel itself):
    # cleaned [0, 1, 0, 0], mean 0.25 -> [-0.25, 0.75, -0.25, -0.25]
    m = torch.tensor([[[[nan, 1.0], [inf, -inf]]]])
    want = torch.tensor([[[-0.25, 0.75], [-0.25, -0.25]]])
    assert torch.allclose(first_component(m), want, atol=1e-7)
    # three channels, two images: numpy's SVD of the matrix with every non-finite entry written as 0
    a = torch.rand(2, 3, 3, 4, generator=torch.Generator().manual_seed(0))
    a[0, 0, 1, 2], a[0, 2, 0, 0], a[1, 1, 2, 3], a[1, 0, 0, 1] = nan, inf, -inf, nan
    clean = np.where(np.isfinite(a.numpy()), a.numpy(), 0.0)
    want = _pc_oracle(clean, clean.sum(1))
    assert np.abs(first_component(a).numpy() - want).max() < 1e-5


def test_first_component_sign_follows_the_reference():
    from convlens.explain.base import first_component

    m = torch.tensor([[[[0.0, 1.0], [2.0, 5.0]]]])  # one channel, mean 2
    p = torch.tensor([[[-2.0, -1.0], [0.0, 3.0]]])  # the channel minus its mean: the map up to its sign
    assert torch.allclose(first_component(m), p)  # default reference: the channel sum, i.e. the channel
    assert torch.allclose(first_component(m, reference=-m[:, 0]), -p)  # a given reference decides
    # r (mean 0): sum p*r = 2 - 0.01 + 0 + 1.47 = 3.46 > 0 -> +p; its ratios p/r (2 - 100 + 0 + 6.1) would say -p
    r = torch.tensor([[[-1.0, 0.01], [0.5, 0.49]]])
    assert torch.allclose(first_component(m, reference=r), p)
    # a constant reference ties (zero correlation either way): the map keeps the SVD's sign, never zeros
    tie = first_component(m, reference=torch.full((1, 2, 2), 3.0))
    assert torch.allclose(tie, p) or torch.allclose(tie, -p)


class _Log(nn.Module):
    def forward(self, x):
        return torch.log(x)  # -inf where x == 0


class _CleanMean(nn.Module):
    def forward(self, a):
        return torch.nan_to_num(a, neginf=0.0).mean((2, 3))


def test_eigencam_sign_convention_holds_when_activations_are_not_finite():
    """A layer giving -inf at some positions (log of 0): the principal component treats them as 0, and its sign
    must still make the map correlate positively with the mean activation over channels (of the same cleaned
    activations). The reference used to be the raw channel mean, -inf there, which left every image's sign to the
    SVD backend (3 of these 8 maps came out flipped)."""
    x = torch.rand(8, 4, 5, 5, generator=torch.Generator().manual_seed(0)) + 0.5
    x[:, :, 2, 3] = 0.0
    x[:, 1, 0, 0] = 0.0
    net = nn.Sequential(_Log(), _CleanMean())
    res = explain(net, x, "eigencam", "0", 0)
    clean = torch.nan_to_num(torch.log(x), neginf=0.0).numpy()
    want = _pc_oracle(clean, clean.mean(1))
    assert np.abs(res.raw["0"].numpy() - want).max() < 1e-4


class _Weighted(nn.Module):
    """Logits ``y_k = sum_{c,ij} W[k, c, ij] f(A)_{c,ij}`` of an (N, C, h, w) input, f = identity or tanh: the
    gradient of class k at the input is ``W[k]`` (times ``1 - tanh(A)^2``), known in closed form."""

    def __init__(self, w: torch.Tensor, tanh: bool = False):
        super().__init__()
        self.w = nn.Parameter(w)
        self.tanh = tanh

    def forward(self, a):
        f = torch.tanh(a) if self.tanh else a
        return torch.einsum("kcij,ncij->nk", self.w, f)


def _smooth_oracle(x, w, targets, num_samples, std, seed):
    """Smooth Grad-CAM++ of ``Identity -> _Weighted(w, tanh=True)`` at the identity layer, written out: noise
    drawn as documented (a CPU generator seeded with ``seed``, one float32 (N, C, H, W) draw per sample), the
    gradient of y_t at the noisy copy ``W[t] (1 - tanh(x + eps)^2)``, D^p its mean p-th power, then
    alpha = D2 / (2 D2 + sum_ab A D3 + 1e-6) (0 where D2 = 0), w_c = sum_ij alpha relu(D1), raw = sum_c w_c A_c."""
    gen = torch.Generator().manual_seed(seed)
    grads = []
    for _ in range(num_samples):
        xn = x + torch.randn(x.shape, generator=gen, dtype=torch.float32) * std
        grads.append(w[targets] * (1 - torch.tanh(xn) ** 2))
    g = torch.stack(grads)
    d1, d2, d3 = g.mean(0), (g**2).mean(0), (g**3).mean(0)
    alpha = d2 / (2 * d2 + x.sum((2, 3), keepdim=True) * d3 + 1e-6)
    alpha = torch.where(d2 != 0, alpha, torch.zeros_like(alpha))
    wc = (alpha * torch.relu(d1)).sum((2, 3))
    return (wc[:, :, None, None] * x).sum(1)


@pytest.mark.parametrize("default_dtype", [torch.float32, torch.float64])
def test_smoothgradcampp_weights_equal_the_formula_on_a_tanh_head(default_dtype):
    """Unlike a conv + GAP head (ResNet's layer4), a tanh after the layer makes its gradient depend on the noise, so
    which noise, its sign, and the mean over samples all show. The noise stays a float32 draw (reproducible) when
    a student's default dtype is float64, whose draw from the same seed is another sequence."""
    torch.manual_seed(123)  # the global generator must not be the one used
    x = torch.rand(2, 3, 4, 5, generator=torch.Generator().manual_seed(0)) - 0.3
    w = torch.randn(4, 3, 4, 5, generator=torch.Generator().manual_seed(1))
    net = nn.Sequential(nn.Identity(), _Weighted(w.clone(), tanh=True))
    want = _smooth_oracle(x, w, torch.tensor([2, 0]), num_samples=3, std=0.4, seed=5)
    old = torch.get_default_dtype()
    torch.set_default_dtype(default_dtype)
    try:
        res = explain(net, x, "smoothgradcam++", "0", [2, 0], num_samples=3, std=0.4, seed=5)
    finally:
        torch.set_default_dtype(old)
    assert torch.allclose(res.raw["0"], want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["gradcam++", "smoothgradcam++"])
def test_gradcampp_where_the_gradient_is_exactly_one(name):
    """A linear head with W[t] = 1: G = 1 at every position (also for every noisy copy), so
    alpha_c = 1 / (2 + sum_ab A_c + 1e-6) and w_c = hw alpha_c (relu(1) = 1)."""
    x = torch.rand(1, 2, 3, 3, generator=torch.Generator().manual_seed(0))
    w = torch.zeros(2, 2, 3, 3)
    w[1] = 1.0
    net = nn.Sequential(nn.Identity(), _Weighted(w))
    res = explain(net, x, name, "0", 1)
    alpha = 1.0 / (2.0 + x.sum((2, 3)) + 1e-6)  # (1, C)
    want = ((9 * alpha)[:, :, None, None] * x).sum(1)
    assert torch.allclose(res.raw["0"], want, rtol=1e-6)


def test_xgradcam_channel_whose_activations_sum_to_zero():
    """Channel 0 = [[1, -1, 0], [0, 0, 0]] sums to 0: w_0 = sum G A / (0 + 1e-7) = (2 * 1) / 1e-7 = 2e7 (the
    guard's sign decides the weight's); channel 1 = 1..6, W[1, 1] = 0.5: w_1 = 0.5 * 21 / (21 + 1e-7)."""
    x = torch.zeros(1, 2, 2, 3)
    x[0, 0, 0, 0], x[0, 0, 0, 1] = 1.0, -1.0
    x[0, 1] = torch.arange(1.0, 7.0).reshape(2, 3)
    w = torch.zeros(2, 2, 2, 3)
    w[1, 0, 0, 0] = 2.0
    w[1, 1] = 0.5
    net = nn.Sequential(nn.Identity(), _Weighted(w))
    res = explain(net, x, "xgradcam", "0", 1)
    want = 2e7 * x[:, 0] + 0.5 * 21 / (21 + 1e-7) * x[:, 1]
    assert torch.allclose(res.raw["0"], want, rtol=1e-6)


def test_target_scores_errors_say_what_the_output_or_callable_gave():
    from convlens.explain.base import target_scores

    out = torch.zeros(2, 3)
    head = "a target callable must return one score per image, shape (2,), got "
    with pytest.raises(InputError) as e:
        target_scores(out, lambda o: o[:, :2], 2)
    assert str(e.value) == head + "(2, 2)."
    with pytest.raises(InputError) as e:
        target_scores(out, lambda o: [1.0, 2.0], 2)
    assert str(e.value) == head + "list."
    need = (
        "class targets need (N, classes) logits in the model output (a tensor, a tuple's first 2-D tensor or a "
        "dict's 'logits'), got {}; pass a callable targets=fn(output) returning (N,) scores."
    )
    for output, got in ((torch.zeros(2, 3, 4), "(2, 3, 4)"), (torch.zeros(3, 5), "(3, 5)"), ([1, 2], "list")):
        with pytest.raises(InputError) as e:
            target_scores(output, 0, 2)
        assert str(e.value) == need.format(got)


def test_target_scores_of_a_callable_and_of_a_0d_tensor_target():
    from convlens.explain.base import target_scores

    out = torch.tensor([[1.0, 3.0, 0.0], [2.0, 0.0, 4.0]])
    s, cls, probs = target_scores(out, lambda o: o[:, 2] * 2, 2)
    assert s.tolist() == [0.0, 8.0] and cls.dtype == torch.long and cls.tolist() == [-1, -1] and probs is None
    # a 0-d tensor is one class for every image: scores out[i, 1] = 3, 0; softmax probabilities by hand
    s, cls, probs = target_scores(out, torch.tensor(1), 2)
    assert s.tolist() == [3.0, 0.0] and cls.tolist() == [1, 1]
    e = np.exp
    want = [e(3) / (e(1) + e(3) + e(0)), e(0) / (e(2) + e(0) + e(4))]
    assert np.allclose(probs.numpy(), want, rtol=1e-6)


def _score_oracle(x, w, targets):
    """Score-CAM at an identity layer under ``_Weighted(w)``: the upsampled channel is the channel itself,
    H_c = (A_c - min) / (max - min + 1e-8), s_c = y_t(x * H_c), w = softmax_c(s), raw = sum_c w_c A_c."""
    lo = x.amin((2, 3), keepdim=True)
    hi = x.amax((2, 3), keepdim=True)
    h = (x - lo) / (hi - lo + 1e-8)  # (N, C, H, W): one mask per channel
    masked = x[:, None] * h[:, :, None]  # (N, C masks, C, H, W)
    s = torch.einsum("ncij,nmcij->nm", w[targets], masked)
    return (s.softmax(1)[:, :, None, None] * x).sum(1)


def test_scorecam_on_a_non_square_input_with_a_tiny_range_channel_in_chunks():
    """2 images x 3 channels = 6 masked copies in chunks of 4 (+ the first forward of 2): the head sees batches
    of 4, then 2. Channel 2 of image 0 spans 2e-8: its mask peaks at 2e-8 / (2e-8 + 1e-8) = 2/3, not 1."""
    x = torch.rand(2, 3, 2, 3, generator=torch.Generator().manual_seed(0))
    x[0, 2] = torch.tensor([[0.0, 2e-8, 1e-8], [0.0, 0.5e-8, 1.5e-8]])
    w = torch.randn(4, 3, 2, 3, generator=torch.Generator().manual_seed(1))
    head = _Weighted(w.clone())
    rows = []
    head.register_forward_hook(lambda m, i, o: rows.append(i[0].shape[0]))
    net = nn.Sequential(nn.Identity(), head)
    res = explain(net, x, "scorecam", "0", [3, 1], batch_size=4)
    assert rows[-2:] == [4, 2]  # (before them: the first forward and a 1-image probe of the layer layouts)
    assert torch.allclose(res.raw["0"], _score_oracle(x, w, torch.tensor([3, 1])), rtol=1e-5, atol=1e-7)


def test_scorecam_and_smoothgradcampp_on_a_bfloat16_model():
    """A bfloat16 model gets bfloat16 masked / noisy inputs (a float32 copy would not enter its einsum); the
    weights still follow the formulas, within bfloat16's 3 significant digits."""
    x = torch.rand(2, 3, 2, 3, generator=torch.Generator().manual_seed(0)).bfloat16()
    w = torch.randn(4, 3, 2, 3, generator=torch.Generator().manual_seed(1)).bfloat16()
    res = explain(nn.Sequential(nn.Identity(), _Weighted(w.clone())), x, "scorecam", "0", [3, 1])
    want = _score_oracle(x.float(), w.float(), torch.tensor([3, 1]))
    assert torch.allclose(res.raw["0"], want, rtol=5e-3)
    x = torch.rand(2, 3, 4, 5, generator=torch.Generator().manual_seed(0)).bfloat16() - 0.3
    w = torch.randn(4, 3, 4, 5, generator=torch.Generator().manual_seed(1)).bfloat16()
    net = nn.Sequential(nn.Identity(), _Weighted(w.clone(), tanh=True))
    res = explain(net, x, "smoothgradcam++", "0", [2, 0], num_samples=3, std=0.4, seed=5)
    want = _smooth_oracle(x.float(), w.float(), torch.tensor([2, 0]), num_samples=3, std=0.4, seed=5)
    assert torch.allclose(res.raw["0"], want, rtol=5e-3, atol=5e-3)


@pytest.mark.parametrize(
    ("targets", "msg"),
    [
        (True, "targets must be None, an int, one int per image or a callable, got True."),
        ("cat", "targets must be None, an int, one int per image or a callable, got str."),
        (2.0, "targets must be None, an int, one int per image or a callable, got float."),
        ([0, 1, 2], "got 3 targets for a batch of 2 images; give one class per image or a single int."),
        (torch.tensor([1]), "got 1 targets for a batch of 2 images; give one class per image or a single int."),
        ([0, 3], "target classes must be ints in [0, 2], got 3."),
        ([-1, 0], "target classes must be ints in [0, 2], got -1."),
        ([True, 0], "target classes must be ints in [0, 2], got True."),
        ([0, 1.0], "target classes must be ints in [0, 2], got 1.0."),
    ],
)
def test_target_scores_rejects_bad_targets_by_name(targets, msg):
    from convlens.explain.base import target_scores

    with pytest.raises(InputError) as e:
        target_scores(torch.zeros(2, 3), targets, 2)
    assert str(e.value) == msg


def test_target_scores_of_ints_a_list_and_a_tensor():
    from convlens.explain.base import target_scores

    out = torch.tensor([[1.0, 3.0, 0.0], [2.0, 0.0, 4.0]])  # 2 images, 3 classes
    o = out.numpy().astype(np.float64)
    for targets, cls in (
        (0, [0, 0]),
        (2, [2, 2]),
        ([2, 0], [2, 0]),
        ((1, 2), [1, 2]),
        (torch.tensor([[0], [1]]), [0, 1]),
    ):
        s, c, probs = target_scores(out, targets, 2)
        assert c.dtype == torch.long and c.tolist() == cls
        assert s.tolist() == [float(out[i, k]) for i, k in enumerate(cls)]
        assert np.allclose(probs.numpy(), [np.exp(o[i, k]) / np.exp(o[i]).sum() for i, k in enumerate(cls)])
    s, c, _ = target_scores(out, None, 2)  # each image's top-1
    assert c.tolist() == [1, 2] and s.tolist() == [3.0, 4.0]
