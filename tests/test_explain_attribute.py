"""Pixel attributions (convlens.explain.attribute) against Captum (oracle, test-only): raw values within
1e-4 on random-init ResNet-18 and MobileNetV3-Small, batch 3 with a different target per image."""

from __future__ import annotations

import copy

import pytest
import torch
from test_explain_methods import TARGETS, _net, _x
from torch import nn

from convlens.errors import InputError
from convlens.explain import attribute
from convlens.explain.pixel import attribution_map, rise_masks
from convlens.hooks import hook_count

captum = pytest.importorskip("captum.attr")


@pytest.fixture(scope="module", params=["resnet18", "mobilenet_v3_small"])
def net(request):
    return _net(request.param)


def _close(a, b, tol=1e-4):
    b = b.detach()
    scale = max(1.0, float(b.abs().max()))
    err = float((a - b).abs().max())
    assert err < tol * scale, f"max error {err:.3g} (scale {scale:.3g})"


def test_saliency_and_input_x_gradient_match_captum(net):
    x = _x(64)
    _close(attribute(net, x, "saliency", TARGETS), captum.Saliency(copy.deepcopy(net)).attribute(x, target=TARGETS))
    ref = captum.InputXGradient(copy.deepcopy(net)).attribute(x, target=TARGETS)
    _close(attribute(net, x, "inputxgradient", TARGETS, internal_batch_size=2), ref)


@pytest.mark.parametrize("method", ["gausslegendre", "riemann_trapezoid"])
def test_integrated_gradients_match_captum(net, method):
    x = _x(48)
    base = torch.full_like(x, 0.25)
    ig = captum.IntegratedGradients(copy.deepcopy(net))
    ref, ref_delta = ig.attribute(
        x, baselines=base, target=TARGETS, n_steps=8, method=method, return_convergence_delta=True
    )
    ours, delta = attribute(
        net, x, "integratedgradients", TARGETS, baselines=base, n_steps=8, method=method,
        internal_batch_size=5, return_convergence_delta=True,
    )  # fmt: skip
    _close(ours, ref)
    _close(delta, ref_delta)
    # default baseline: zeros in the model's input space, as Captum
    _close(
        attribute(net, x, "integratedgradients", TARGETS, n_steps=4),
        ig.attribute(x, target=TARGETS, n_steps=4),
    )


def test_smoothgrad_matches_captum_noise_tunnel_with_the_same_noise(net):
    x = _x(48)
    nt = captum.NoiseTunnel(captum.Saliency(copy.deepcopy(net)))
    torch.manual_seed(11)  # Captum draws its noise from the global generator
    ref = nt.attribute(x, nt_type="smoothgrad", nt_samples=4, stdevs=0.3, target=TARGETS)
    ours = attribute(net, x, "smoothgrad", TARGETS, nt_samples=4, stdevs=0.3, seed=11, internal_batch_size=5)
    _close(ours, ref)
    nt2 = captum.NoiseTunnel(captum.InputXGradient(copy.deepcopy(net)))
    torch.manual_seed(5)
    ref2 = nt2.attribute(x, nt_type="vargrad", nt_samples=3, stdevs=0.2, target=TARGETS)
    ours2 = attribute(net, x, "smoothgrad", TARGETS, base="inputxgradient", nt_type="vargrad", nt_samples=3,
                      stdevs=0.2, seed=5)  # fmt: skip
    _close(ours2, ref2)


@pytest.mark.slow
def test_occlusion_matches_captum(net):
    x = _x(32)
    occ = captum.Occlusion(copy.deepcopy(net))
    ref = occ.attribute(
        x, sliding_window_shapes=(3, 8, 8), strides=(3, 8, 8), target=TARGETS, baselines=0.5, perturbations_per_eval=16
    )
    ours = attribute(
        net, x, "occlusion", TARGETS, sliding_window_shapes=(3, 8, 8), strides=(3, 8, 8), baselines=0.5,
        internal_batch_size=16,
    )  # fmt: skip
    _close(ours, ref)
    ref1 = occ.attribute(
        x, sliding_window_shapes=(1, 16, 16), strides=(1, 8, 8), target=TARGETS, perturbations_per_eval=16
    )
    _close(attribute(net, x, "occlusion", TARGETS, sliding_window_shapes=(1, 16, 16), strides=(1, 8, 8)), ref1)


def test_rise_is_the_score_weighted_mask_average():
    """RISE has no Captum counterpart: check the paper's estimator with the same masks by a direct loop."""
    net = _net("mobilenet_v3_small")
    x = _x(32)
    ours = attribute(net, x, "rise", TARGETS, n_masks=12, mask_size=4, p=0.5, seed=3, internal_batch_size=7)
    masks = rise_masks(12, (32, 32), mask_size=4, p=0.5, generator=torch.Generator().manual_seed(3))
    want = torch.zeros(3, 32, 32)
    with torch.no_grad():
        for i in range(3):
            probs = net(x[i : i + 1] * masks[:, None]).softmax(1)[:, TARGETS[i]]
            want[i] = (probs[:, None, None] * masks).sum(0)
    want /= 12 * 0.5
    assert ours.shape == (3, 3, 32, 32)
    _close(ours[:, 0], want)
    assert torch.equal(ours[:, 0], ours[:, 2])


def test_attribute_restores_state_and_validates():
    net = _net("mobilenet_v3_small").train()
    x = _x(32)
    before = [p.requires_grad for p in net.parameters()]
    attribute(net, x, "saliency", TARGETS)
    assert net.training and [p.requires_grad for p in net.parameters()] == before
    assert all(p.grad is None for p in net.parameters()) and hook_count(net) == 0
    with pytest.raises(InputError, match="did you mean 'saliency'"):
        attribute(net, x, "salency")
    with pytest.raises(InputError, match="n_steps"):
        attribute(net, x, "integratedgradients", n_steps=0)
    with pytest.raises(InputError, match="sliding_window_shapes"):
        attribute(net, x, "occlusion", sliding_window_shapes=(3, 64, 64))
    with pytest.raises(InputError, match="broadcast"):
        attribute(net, x, "integratedgradients", baselines=torch.zeros(2, 3, 5, 5))
    with pytest.raises(InputError, match="unexpected keyword"):
        attribute(net, x, "saliency", n_steps=3)


def test_attribution_map_is_abs_channel_sum_normalized():
    a = torch.tensor([[[[2.0, -1.0], [0.0, 0.0]], [[0.0, -1.0], [0.0, 1.0]]]])
    assert attribution_map(a).tolist() == [[[1.0, 1.0], [0.0, 0.5]]]


def test_constant_model_gives_zero_attribution():
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 2))
    with torch.no_grad():
        net[1].weight.zero_()
    a = attribute(net, torch.randn(2, 3, 4, 4), "saliency", [0, 1])
    assert torch.isfinite(a).all() and float(a.abs().max()) == 0.0


def test_occlusion_defaults_are_an_eighth_of_each_side_with_half_window_strides():
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    x = torch.randn(2, 3, 32, 48, generator=torch.Generator().manual_seed(0))
    auto = attribute(net, x, "occlusion", [0, 3])
    ref = captum.Occlusion(net).attribute(x, sliding_window_shapes=(3, 4, 6), strides=(3, 2, 3), target=[0, 3])
    _close(auto, ref)
