"""Faithfulness metrics: imputation vs the ROAD reference (pytorch-grad-cam's copy), curve semantics on
models whose evidence is known, the randomization check, and the pretrained sanity case."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from convlens.errors import InputError
from convlens.explain import explain
from convlens.explain.methods import guided_backprop
from convlens.explain.metrics import (
    confidence_change,
    deletion_curve,
    insertion_curve,
    noisy_linear_impute,
    randomization_check,
    road,
    saliency_ranks,
    spearman,
)
from convlens.explain.pixel import attribute
from convlens.hooks import hook_count


class RegionNet(nn.Module):
    """Class 0's logit = 4 * mean of channel 0 over the top-left quadrant; class 1's = 0. The top-left
    quadrant is the true evidence for class 0."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(4.0))

    def forward(self, x):
        h, w = x.shape[2] // 2, x.shape[3] // 2
        s = self.scale * x[:, 0, :h, :w].mean((1, 2))
        return torch.stack([s, torch.zeros_like(s)], 1)


def _quadrant_map(n, h, w, good=True):
    m = torch.zeros(n, h, w)
    if good:
        m[:, : h // 2, : w // 2] = 1.0
    else:
        m[:, h // 2 :, w // 2 :] = 1.0
    return m + 0.01 * torch.arange(h * w).view(1, h, w) / (h * w)  # no ties


@pytest.fixture()
def region():
    torch.manual_seed(0)
    net = RegionNet().train()
    x = torch.rand(3, 3, 12, 12) + 0.5  # positive pixels: deleting evidence lowers class 0's score
    return net, x


def test_imputation_matches_road_reference():
    from pytorch_grad_cam.metrics.road import NoisyLinearImputer

    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 3, 14, 17, generator=g)
    keep = torch.rand(3, 14, 17, generator=g) > 0.5
    keep[1, 2:12, 3:15] = False  # one big hole
    keep[2, :, :6] = False  # a hole touching the border
    ours = noisy_linear_impute(x, keep, noise=0.0)
    ref = torch.stack([NoisyLinearImputer(noise=0.0)(x[i], keep[i].float()) for i in range(3)])
    assert torch.allclose(ours, ref, atol=1e-5)
    assert torch.equal(ours[keep[:, None].expand_as(x)], x[keep[:, None].expand_as(x)])  # kept pixels untouched


def test_imputation_noise_only_on_removed_pixels_and_seeded():
    x = torch.zeros(1, 2, 6, 6)
    keep = torch.ones(1, 6, 6, dtype=torch.bool)
    keep[0, 2:4, 2:4] = False
    a = noisy_linear_impute(x, keep, noise=0.5, generator=torch.Generator().manual_seed(3))
    b = noisy_linear_impute(x, keep, noise=0.5, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert torch.count_nonzero(a) == 8 and torch.count_nonzero(a[:, :, keep[0]]) == 0
    everything = noisy_linear_impute(x + 1, torch.zeros(1, 6, 6, dtype=torch.bool), noise=0.0)
    assert torch.equal(everything, torch.zeros_like(x))  # nothing to interpolate from: zeros, not NaN


@given(st.integers(1, 3), st.integers(1, 5), st.integers(1, 5))
def test_saliency_ranks_are_a_permutation_by_descending_value(n, h, w):
    m = torch.rand(n, h, w)
    r = saliency_ranks(m)
    for i in range(n):
        assert sorted(r[i].flatten().tolist()) == list(range(h * w))
        order = r[i].flatten().argsort()
        vals = m[i].flatten()[order]
        assert bool((vals[:-1] >= vals[1:]).all())


def test_deletion_and_insertion_reward_the_true_evidence(region):
    net, x = region
    good, bad = _quadrant_map(3, 12, 12, True), _quadrant_map(3, 12, 12, False)
    d_good = deletion_curve(net, x, good, 0, steps=8, batch_size=5)
    d_bad = deletion_curve(net, x, bad, 0, steps=8, batch_size=5)
    assert bool((d_good.auc < d_bad.auc).all())
    i_good = insertion_curve(net, x, good, 0, steps=8, baseline="zero")
    i_bad = insertion_curve(net, x, bad, 0, steps=8, baseline="zero")
    assert bool((i_good.auc > i_bad.auc).all())
    # endpoints: intact image, then everything deleted (zeros -> logits 0, 0 -> p = 0.5)
    with torch.no_grad():
        p0 = net(x).softmax(1)[:, 0]
    assert torch.allclose(d_good.scores[:, 0], p0) and torch.allclose(d_good.scores[:, -1], torch.full((3,), 0.5))
    assert d_good.fractions.tolist() == pytest.approx([k / 8 for k in range(9)], abs=1e-2)
    assert net.training and all(p.grad is None for p in net.parameters()) and hook_count(net) == 0


def test_curves_batch_equals_per_image(region):
    net, x = region
    maps = torch.rand(3, 12, 12)
    batch = deletion_curve(net, x, maps, [0, 1, 0], steps=5, batch_size=4)  # chunks cross images
    for i, t in enumerate([0, 1, 0]):
        one = deletion_curve(net, x[i : i + 1], maps[i : i + 1], t, steps=5)
        assert torch.allclose(batch.scores[i], one.scores[0], atol=1e-6)


def test_road_morf_below_lerf(region):
    net, _ = region
    # a bright 3x3 spot in the evidence quadrant: imputing it from its dark surroundings removes the
    # evidence (ROAD's imputation keeps smooth statistics, so the evidence must be a local detail)
    x = 0.05 * torch.rand(3, 3, 12, 12, generator=torch.Generator().manual_seed(1))
    x[:, :, 2:5, 2:5] = 3.0
    good = torch.zeros(3, 12, 12)
    good[:, 1:6, 1:6] = 0.5
    good[:, 2:5, 2:5] = 1.0
    good = good + 0.01 * torch.rand(3, 12, 12, generator=torch.Generator().manual_seed(2))
    morf = road(net, x, good, 0, percentiles=(10, 25, 40), order="morf")
    lerf = road(net, x, good, 0, percentiles=(10, 25, 40), order="lerf")
    assert morf.scores.shape == (3, 3) and bool((morf.mean < lerf.mean).all())
    again = road(net, x, good, 0, percentiles=(10, 25, 40), order="morf")
    assert torch.equal(again.scores, morf.scores)  # seeded noise


def test_confidence_change_formula(region):
    net, x = region
    maps = torch.rand(3, 12, 12)
    cc = confidence_change(net, x, maps, 0)
    with torch.no_grad():
        y = net(x).softmax(1)[:, 0]
        o = net(x * maps[:, None]).softmax(1)[:, 0]
    assert torch.allclose(cc.full, y) and torch.allclose(cc.masked, o)
    assert torch.allclose(cc.drop, 100 * (y - o).clamp(min=0) / y)
    assert cc.increase.tolist() == (o > y).tolist()
    assert cc.average_drop == pytest.approx(float(cc.drop.mean()))


def test_spearman_matches_scipy():
    from scipy.stats import spearmanr

    g = torch.Generator().manual_seed(0)
    a = torch.rand(4, 30, generator=g)
    b = a + 0.5 * torch.rand(4, 30, generator=g)
    b[2] = torch.round(b[2] * 3)  # ties
    ours = spearman(a, b)
    for i in range(4):
        assert ours[i].item() == pytest.approx(spearmanr(a[i].numpy(), b[i].numpy()).statistic, abs=1e-6)
    assert spearman(a[:1], torch.ones(1, 30)).item() == 0.0


def test_randomization_check_copies_the_model_and_decorrelates(resnet18_bundle):
    model = resnet18_bundle.model
    before = copy.deepcopy(model.state_dict())
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    sc = randomization_check(model, x, "gradcam", "layer3", [1, 2])
    assert sc.layers == ["fc", "layer4", "layer3", "layer2", "layer1", "bn1", "conv1"]
    assert sc.correlation.shape == (7, 2) and sc.maps.shape == (8, 2, 64, 64)
    assert float(sc.mean[-1]) < 0.5  # fully randomized: the map no longer follows the trained one
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert hook_count(model) == 0 and all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda n, x: deletion_curve(n, x, torch.rand(3, 5, 5)), "shape"),
        (lambda n, x: deletion_curve(n, x, torch.full((3, 12, 12), float("nan"))), "NaN"),
        (lambda n, x: deletion_curve(n, x, torch.rand(3, 12, 12), steps=0), "steps"),
        (lambda n, x: insertion_curve(n, x, torch.rand(3, 12, 12), baseline="grey"), "baseline"),
        (lambda n, x: road(n, x, torch.rand(3, 12, 12), percentiles=(50, 120)), "percentiles"),
        (lambda n, x: road(n, x, torch.rand(3, 12, 12), order="up"), "order"),
        (lambda n, x: confidence_change(n, x, torch.rand(3, 12, 12), [0, 1]), "targets"),
    ],
)
def test_metric_errors(region, call, match):
    net, x = region
    with pytest.raises(InputError, match=match):
        call(net, x)


def test_gradcam_beats_random_maps_on_chelsea(lite0, chelsea):
    """The embedded pretrained model on chelsea: deleting Grad-CAM's pixels first destroys the
    'Egyptian cat' probability faster than deleting random CAM-like maps' pixels (random 7x7 maps,
    upsampled like a CAM, so both remove coherent regions)."""
    x = lite0.preprocess(chelsea)
    res = explain(lite0.model, x, "gradcam", "bn2")
    g = torch.Generator().manual_seed(0)
    rand = torch.nn.functional.interpolate(torch.rand(4, 1, 7, 7, generator=g), size=(224, 224), mode="bilinear")[:, 0]
    maps = torch.cat([res.maps, rand])
    curve = deletion_curve(lite0.model, x.expand(5, -1, -1, -1), maps, int(res.targets[0]), steps=10)
    assert float(curve.auc[0]) < float(curve.auc[1:].mean())
    assert np.isfinite(curve.scores.numpy()).all()


# -- the formulas on models whose answer is known by hand ----------------------------------------------


class WeightedSum(nn.Module):
    """Score = sum_p w_p * mean_c x[c, p] with sum w = 1: on an all-ones image, removing pixels (to 0) lowers it
    by exactly their weight. Output: logits (log s, log(1 - s)), so class 0's softmax probability IS s."""

    def __init__(self, w: torch.Tensor):
        super().__init__()
        self.register_buffer("w", w / w.sum())

    def forward(self, x):
        s = (x.mean(1) * self.w).flatten(1).sum(1).clamp(0, 1)
        return torch.stack([torch.log(s), torch.log1p(-s)], 1)


@pytest.mark.parametrize("hw, steps", [((8, 8), 8), ((10, 10), 3), ((5, 7), 6)])
def test_deletion_insertion_auc_of_a_linear_model_is_one_half(hw, steps):
    """Uniform weights: the probability falls linearly, p(f) = 1 - f, whatever pixels go first, so the deletion AUC
    is exactly int_0^1 (1 - f) df = 1/2 and insertion (from 0) int_0^1 f df = 1/2, also where steps do not
    divide the pixel count (the trapezoid is exact on a line)."""
    h, w = hw
    net = WeightedSum(torch.ones(h, w))
    x = torch.ones(2, 3, h, w)
    maps = torch.rand(2, h, w, generator=torch.Generator().manual_seed(0))
    d = deletion_curve(net, x, maps, 0, steps=steps, baseline="zero")
    i = insertion_curve(net, x, maps, 0, steps=steps, baseline="zero")
    torch.testing.assert_close(d.scores, (1 - d.fractions).expand(2, -1), rtol=0, atol=1e-6)
    torch.testing.assert_close(i.scores, i.fractions.expand(2, -1), rtol=0, atol=1e-6)
    assert d.auc.tolist() == pytest.approx([0.5, 0.5], abs=1e-6) and i.auc.tolist() == pytest.approx([0.5, 0.5])


def test_deletion_insertion_auc_worked_by_hand():
    """Four pixels weighted 0.4, 0.3, 0.2, 0.1 and the map ranking them in that order, 4 steps (df = 1/4).
    Deletion: p = 1, .6, .3, .1, 0 -> AUC = 1/4 (.8 + .45 + .2 + .05) = 0.375.
    Insertion: p = 0, .4, .7, .9, 1 -> AUC = 1/4 (.2 + .55 + .8 + .95) = 0.625.
    The reversed map (least salient first) swaps them: deletion 0.625, insertion 0.375."""
    w = torch.tensor([[0.1, 0.4], [0.2, 0.3]])
    net = WeightedSum(w)
    x = torch.ones(2, 3, 2, 2)
    maps = torch.stack([w, -w])
    d = deletion_curve(net, x, maps, 0, steps=4, baseline="zero")
    i = insertion_curve(net, x, maps, 0, steps=4, baseline="zero")
    assert d.fractions.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert d.scores[0].tolist() == pytest.approx([1.0, 0.6, 0.3, 0.1, 0.0], abs=1e-6)
    assert i.scores[0].tolist() == pytest.approx([0.0, 0.4, 0.7, 0.9, 1.0], abs=1e-6)
    assert d.auc.tolist() == pytest.approx([0.375, 0.625], abs=1e-6)
    assert i.auc.tolist() == pytest.approx([0.625, 0.375], abs=1e-6)
    # a callable target scores the raw output (no softmax): exp(logit 0) = s gives the same numbers
    dc = deletion_curve(net, x, maps, lambda out: out[:, 0].exp(), steps=4, baseline="zero")
    assert dc.auc.tolist() == pytest.approx([0.375, 0.625], abs=1e-6)


def test_average_drop_and_increase_worked_by_hand():
    """Y = p on x, O = p on x * map. Increasing score s = mean(x) on ones: maps of mean 0.25 and 1 give
    O = 0.25, 1 -> drops 75 % and 0 %, Average Drop 37.5, no increase (1 > 1 is false).
    Decreasing score s = 1 - mean(x) / 2: Y = 0.5; map 0.5 -> O = 0.75 (an increase, drop 0); map 1 -> O = 0.5."""
    x = torch.ones(2, 3, 4, 4)
    up = WeightedSum(torch.ones(4, 4))
    maps = torch.stack([torch.full((4, 4), 0.25), torch.ones(4, 4)])
    cc = confidence_change(up, x, maps, 0)
    assert cc.full.tolist() == pytest.approx([1.0, 1.0]) and cc.masked.tolist() == pytest.approx([0.25, 1.0])
    assert cc.drop.tolist() == pytest.approx([75.0, 0.0], abs=1e-4)
    assert cc.average_drop == pytest.approx(37.5, abs=1e-4) and cc.increase_rate == 0.0

    class Down(nn.Module):
        def forward(self, x):
            return (1 - x.flatten(1).mean(1) / 2)[:, None]

    cc = confidence_change(Down(), x, torch.stack([torch.full((4, 4), 0.5), torch.ones(4, 4)]), lambda o: o[:, 0])
    assert cc.full.tolist() == pytest.approx([0.5, 0.5]) and cc.masked.tolist() == pytest.approx([0.75, 0.5])
    assert cc.drop.tolist() == pytest.approx([0.0, 0.0]) and cc.increase.tolist() == [True, False]
    assert cc.increase_rate == pytest.approx(50.0) and cc.average_drop == pytest.approx(0.0)


@pytest.mark.slow
def test_randomization_check_on_the_pretrained_model(lite0, chelsea):
    """Adebayo et al.'s check on the embedded PRETRAINED EfficientNet-Lite0 (random-init weights prove nothing: there
    is no learned structure to lose). The classifier alone randomized keeps the stem-to-head features, so the map
    still follows the trained one; randomizing the feature layers top-down destroys it; the model is untouched."""
    model = lite0.model
    before = copy.deepcopy(model.state_dict())
    x = torch.nn.functional.interpolate(lite0.preprocess(chelsea), size=(128, 128), mode="bilinear")
    sc = randomization_check(model, x, "gradcam", "bn2", 285)  # 285: Egyptian cat
    assert sc.layers == ["classifier", "bn2", "conv_head", "blocks", "bn1", "conv_stem"]
    torch.testing.assert_close(sc.maps[0], explain(model, x, "gradcam", "bn2", 285).maps)  # step 0: the model's map
    rho = sc.mean.tolist()
    # measured (128 px): 0.64 with the classifier randomized, 0.37 with everything; Grad-CAM passes the check
    assert rho[0] < 0.85, rho  # the class weights are gone: the class-specific map changes
    assert rho[-1] < 0.5 and rho[-1] < rho[0], rho  # the whole cascade: much less of the trained map remains
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_ssim_matches_skimage():
    from skimage.metrics import structural_similarity

    from convlens.explain.metrics import ssim

    g = torch.Generator().manual_seed(0)
    a = torch.rand(3, 20, 24, generator=g)
    b = (a + 0.3 * torch.rand(3, 20, 24, generator=g)).clamp(0, 1)
    ours = ssim(a, b)
    for i in range(3):
        ref = structural_similarity(a[i].numpy(), b[i].numpy(), data_range=1.0)
        assert ours[i].item() == pytest.approx(ref, abs=1e-5)


def test_sanity_check_gradcam_passes_and_model_ignoring_edge_detector_fails(resnet18_bundle):
    """Adebayo et al.'s point: Grad-CAM changes once the top block is random; an edge detector does not."""
    model = resnet18_bundle.model
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    sc = randomization_check(model, x, "gradcam", "layer3", [1, 2])
    assert sc.layers[0] == "fc" and float(sc.mean[0]) < 0.5 and sc.ssim.shape == sc.correlation.shape

    def edges(_model, xb, _targets):  # Sobel magnitude of the image: ignores the model entirely
        k = torch.tensor([[1.0, 0, -1], [2, 0, -2], [1, 0, -1]])
        gray = xb.mean(1, keepdim=True)
        gx = torch.nn.functional.conv2d(gray, k[None, None], padding=1)
        gy = torch.nn.functional.conv2d(gray, k.t()[None, None], padding=1)
        return (gx**2 + gy**2).sqrt()[:, 0]

    bad = randomization_check(model, x, edges)
    assert float(bad.correlation.min()) > 0.99 and float(bad.ssim.min()) > 0.99  # fails the check


def test_pointing_game_and_energy_by_hand():
    from convlens.explain.metrics import energy_in_box, pointing_game

    m = torch.zeros(3, 20, 30)
    m[0, 5, 7] = 1.0  # inside the box
    m[1, 5, 14] = 1.0  # 3 px right of it: a hit only with tolerance
    m[2, 18, 28] = 1.0  # far away
    box = torch.tensor([2.0, 3.0, 12.0, 9.0])  # x in [2, 12), y in [3, 9)
    assert pointing_game(m, box, tolerance=0).hit.tolist() == [True, False, False]
    pg = pointing_game(m, box, tolerance=3)
    assert pg.hit.tolist() == [True, True, False] and pg.accuracy == pytest.approx(2 / 3)
    assert pg.point[1].tolist() == [14, 5]
    u = torch.rand(2, 20, 30, generator=torch.Generator().manual_seed(0))
    mask = torch.zeros(20, 30)
    mask[3:9, 2:12] = 1
    e = energy_in_box(u, box)
    want = [float(u[i, 3:9, 2:12].sum() / u[i].sum()) for i in range(2)]
    assert e.tolist() == pytest.approx(want) and energy_in_box(u, mask).tolist() == pytest.approx(want)
    with pytest.raises(InputError, match="x1 > x0"):
        energy_in_box(u, torch.tensor([5.0, 0, 5, 3]))


def test_metrics_run_in_eval_mode_on_a_bundle_and_restore_the_mode():
    """Dropout in train mode would make every score random: the metrics evaluate in eval mode (the expected
    numbers are the eval-mode ones worked out above), accept a bundle-like object holding ``.model``, and
    leave the model's ``training`` flag as it was."""
    from types import SimpleNamespace

    net = nn.Sequential(nn.Dropout(0.9), WeightedSum(torch.ones(4, 4))).train()
    x = torch.ones(2, 3, 4, 4)
    maps = torch.stack([torch.full((4, 4), 0.25), torch.ones(4, 4)])
    for model in (net, SimpleNamespace(model=net)):
        cc = confidence_change(model, x, maps, 0)
        assert cc.masked.tolist() == pytest.approx([0.25, 1.0]) and cc.average_drop == pytest.approx(37.5, abs=1e-4)
        d = deletion_curve(model, x, torch.rand(2, 4, 4), 0, steps=4, baseline="zero")
        assert d.auc.tolist() == pytest.approx([0.5, 0.5], abs=1e-6)
        assert net.training and net[0].training


def test_randomized_parameters_keep_each_tensors_mean_and_std():
    """The cascading check re-draws a tensor from a Gaussian with ITS OWN mean and std (Adebayo et al.), so the
    randomized layer keeps its scale; a constant tensor (std 0) gets std 0.1 * max(|mean|, 1)."""
    from convlens.explain.metrics import _randomize_

    lin = nn.Linear(400, 300)
    with torch.no_grad():
        lin.weight.normal_(2.0, 3.0, generator=torch.Generator().manual_seed(1))
        lin.bias.fill_(5.0)
    before = lin.weight.detach().clone()
    _randomize_(lin, torch.Generator().manual_seed(0))
    w = lin.weight.detach()
    assert not torch.equal(w, before)
    assert float(w.mean()) == pytest.approx(float(before.mean()), abs=0.05)
    assert float(w.std()) == pytest.approx(float(before.std()), rel=0.02)
    assert float(lin.bias.mean()) == pytest.approx(5.0, abs=0.1) and float(lin.bias.std()) == pytest.approx(
        0.5, rel=0.2
    )


def test_randomization_draws_follow_the_documented_rule_exactly():
    """Per tensor, in parameter order, from one generator: noise * std + mean with the tensor's own mean and
    (unbiased) std; a single value or a constant tensor has no std, and gets 0.1 * max(|mean|, 1)."""
    from convlens.explain.metrics import _randomize_

    m = nn.Module()
    m.one = nn.Parameter(torch.tensor([5.0]))  # one value: std 0.1 * 5 = 0.5
    m.two = nn.Parameter(torch.tensor([1.0, 3.0]))  # std sqrt(2)
    m.small = nn.Parameter(torch.linspace(-1, 1, 50))  # std < 1
    m.const = nn.Parameter(torch.full((3,), -0.2))  # constant: std 0.1 * max(0.2, 1) = 0.1
    gen = torch.Generator().manual_seed(3)
    want = []
    for p, mean, std in (
        (m.one, 5.0, 0.5),
        (m.two, 2.0, 2**0.5),
        (m.small, 0.0, float(torch.linspace(-1, 1, 50).std())),
        (m.const, -0.2, 0.1),
    ):
        want.append(torch.randn(p.shape, generator=gen) * std + mean)
    _randomize_(m, torch.Generator().manual_seed(3))
    for p, w in zip(m.parameters(), want, strict=True):
        torch.testing.assert_close(p.detach(), w, rtol=1e-6, atol=1e-6)


def test_number_and_tensor_baselines_worked_by_hand():
    """Deleting toward a constant c on the linear model: p(f) = (1 - f) + f c, AUC = 1/2 + c/2 (c = 0.5: 0.75); a
    per-channel tensor baseline (0.2, 0.5, 0.8) has the same channel mean, so the same curve."""
    net = WeightedSum(torch.ones(4, 4))
    x = torch.ones(1, 3, 4, 4)
    maps = torch.rand(1, 4, 4, generator=torch.Generator().manual_seed(0))
    for baseline in (
        0.5,
        torch.tensor([0.2, 0.5, 0.8], dtype=torch.float64).view(1, 3, 1, 1),
    ):  # a float64 baseline too
        d = deletion_curve(net, x, maps, 0, steps=4, baseline=baseline)
        assert d.scores[0].tolist() == pytest.approx([1.0, 0.875, 0.75, 0.625, 0.5], abs=1e-6)
        assert float(d.auc[0]) == pytest.approx(0.75, abs=1e-6)
    with pytest.raises(InputError, match="does not broadcast"):
        deletion_curve(net, x, maps, 0, steps=4, baseline=torch.zeros(2, 3))
    with pytest.raises(InputError, match="baseline must be"):
        deletion_curve(net, x, maps, 0, steps=4, baseline=True)


def test_spearman_of_two_values_is_plus_or_minus_one():
    """Two samples: the rank correlation is exactly +1 or -1 (small norms of the centred ranks must not be
    mistaken for a constant row)."""
    a = torch.tensor([[1.0, 2.0], [1.0, 2.0]])
    b = torch.tensor([[3.0, 4.0], [4.0, 3.0]])
    assert spearman(a, b).tolist() == pytest.approx([1.0, -1.0])


def _scipy_blur(x: np.ndarray) -> np.ndarray:
    """The blur baseline by scipy: a Gaussian of sigma 5 cut at radius 5 (an 11-tap kernel, exp(-t^2 / 50)
    normalized to sum 1) along H and W, the border mirrored without repeating the edge pixel (scipy's 'mirror' is
    torch's 'reflect'); valid for images of at least 6 x 6 pixels, where a reflection reaches 5 pixels out."""
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(x.astype(np.float64), sigma=(0, 0, 5, 5), truncate=1.0, mode="mirror")


def _small_blur(x: np.ndarray, p: int) -> np.ndarray:
    """The blur baseline of an image with fewer than 6 rows or columns: reflect as far as the smaller side allows
    (p = min(H, W) - 1 pixels, on both axes), repeat the edge for the remaining 5 - p, then the 11-tap kernel."""
    from scipy.ndimage import correlate1d

    t = np.arange(-5, 6)
    k = np.exp(-(t**2) / 50.0)
    k /= k.sum()
    y = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (p, p), (p, p)), mode="reflect")
    y = np.pad(y, ((0, 0), (0, 0), (5 - p, 5 - p), (5 - p, 5 - p)), mode="edge")
    y = correlate1d(correlate1d(y, k, axis=3), k, axis=2)  # the padding is wide enough: no border mode used
    return y[:, :, 5:-5, 5:-5]


@pytest.mark.parametrize("hw", [(9, 13), (4, 7)])
def test_blur_baseline_matches_scipy(hw):
    """Insertion's default baseline is the blurred image: at f = 0 nothing is inserted yet, so on the weighted-sum
    model (class 0's probability IS sum_p w_p mean_c image) the first score is sum_p w_p mean_c blur(x); deletion's
    last point (everything deleted) is the same image. Random weights make the score depend on every pixel's blur."""
    h, w = hw
    g = torch.Generator().manual_seed(0)
    wts = torch.rand(h, w, generator=g) + 0.1
    net = WeightedSum(wts)
    x = torch.rand(2, 3, h, w, generator=g)
    maps = torch.rand(2, h, w, generator=g)
    blur = _scipy_blur(x.numpy()) if min(hw) >= 6 else _small_blur(x.numpy(), min(hw) - 1)
    wn = (wts / wts.sum()).double().numpy()
    want = (blur.mean(1) * wn).sum((1, 2))  # s of the blurred images
    whole = (x.double().numpy().mean(1) * wn).sum((1, 2))  # s of the intact images
    i = insertion_curve(net, x, maps, 0, steps=2)  # baseline="blur" is insertion's default
    d = deletion_curve(net, x, maps, 0, steps=2, baseline="blur")
    assert i.scores[:, 0].tolist() == pytest.approx(want.tolist(), abs=1e-6)
    assert i.scores[:, 2].tolist() == pytest.approx(whole.tolist(), abs=1e-6)
    assert d.scores[:, 2].tolist() == pytest.approx(want.tolist(), abs=1e-6)
    assert abs(want - whole).min() > 1e-3  # the blur does change the score (the test sees it)


def test_float64_tensor_baseline_on_a_float32_conv_model():
    """A float64 baseline tensor is cast to the input's dtype: a float32 convolution refuses float64 input. The 1x1
    convolution in front is the identity, so the curve is the worked one of the weighted-sum model toward the
    per-channel baseline (0.2, 0.5, 0.8), channel mean 0.5: p = 1 - f / 2, AUC 0.75."""
    conv = nn.Conv2d(3, 3, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
    net = nn.Sequential(conv, WeightedSum(torch.ones(4, 4)))
    x = torch.ones(1, 3, 4, 4)
    maps = torch.rand(1, 4, 4, generator=torch.Generator().manual_seed(0))
    base = torch.tensor([0.2, 0.5, 0.8], dtype=torch.float64).view(1, 3, 1, 1)
    for curve in (deletion_curve, insertion_curve):
        c = curve(net, x, maps, 0, steps=4, baseline=base)
        want = [1.0, 0.875, 0.75, 0.625, 0.5] if curve is deletion_curve else [0.5, 0.625, 0.75, 0.875, 1.0]
        assert c.scores[0].tolist() == pytest.approx(want, abs=1e-6)
        assert float(c.auc[0]) == pytest.approx(0.75, abs=1e-6)


class Inverted(nn.Module):
    """A wrapper module holding its network as ``.model`` and feeding it 1 - x: the metrics must score the wrapper
    (the module they are given), not the network inside it."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(1 - x)


def test_a_module_with_a_model_attribute_is_scored_itself():
    """Wrapper score s = 1 - mean(x) on the weighted-sum model with uniform weights. x = 0.5 everywhere: Y = 0.5.
    Confidence change, maps 0.5 and 1: O = 1 - 0.25 = 0.75 (an increase, drop 0) and 0.5 (no change).
    Deletion toward 0: deleted pixels count 1 - 0 = 1, so p(f) = 0.5 + f / 2, AUC 0.75.
    (The inner network alone would give O = 0.25 (drop 50 %) and p(f) = 0.5 - f / 2, AUC 0.25.)"""
    net = Inverted(WeightedSum(torch.ones(4, 4)))
    x = torch.full((2, 3, 4, 4), 0.5)
    cc = confidence_change(net, x, torch.stack([torch.full((4, 4), 0.5), torch.ones(4, 4)]), 0)
    assert cc.full.tolist() == pytest.approx([0.5, 0.5]) and cc.masked.tolist() == pytest.approx([0.75, 0.5])
    assert cc.drop.tolist() == pytest.approx([0.0, 0.0], abs=1e-4) and cc.increase.tolist() == [True, False]
    d = deletion_curve(net, x, torch.rand(2, 4, 4, generator=torch.Generator().manual_seed(0)), 0, steps=4)
    assert d.scores[0].tolist() == pytest.approx([0.5, 0.625, 0.75, 0.875, 1.0], abs=1e-6)
    assert d.auc.tolist() == pytest.approx([0.75, 0.75], abs=1e-6)


def test_curves_name_their_kind_and_take_a_bundle_as_the_model():
    """The worked 4-pixel case again: the curve says which it is, and the model may be an object holding the
    network in ``.model`` (a bundle), with the same AUCs (0.375, 0.625)."""
    w = torch.tensor([[0.1, 0.4], [0.2, 0.3]])
    net = WeightedSum(w)
    x = torch.ones(2, 3, 2, 2)
    maps = torch.stack([w, -w])

    class Bundle:
        model = net

    for model in (net, Bundle()):
        d = deletion_curve(model, x, maps, 0, steps=4, baseline="zero")
        i = insertion_curve(model, x, maps, 0, steps=4, baseline="zero")
        assert (d.kind, i.kind) == ("deletion", "insertion")
        assert d.auc.tolist() == pytest.approx([0.375, 0.625], abs=1e-6)


def test_saliency_ranks_break_ties_by_pixel_order_on_large_maps():
    """A 64x64 map of 4 plateaus (each value on 1024 pixels): within a plateau the earlier pixel (row-major)
    ranks first, so the ranks are the plateau's offset plus the pixel's position within it."""
    maps = torch.tensor([0.25, 1.0, 0.5, 0.75]).repeat_interleave(1024).reshape(1, 64, 64)
    ranks = saliency_ranks(maps).reshape(-1)
    offset = {1.0: 0, 0.75: 1024, 0.5: 2048, 0.25: 3072}
    for k, v in enumerate((0.25, 1.0, 0.5, 0.75)):
        assert ranks[k * 1024 : (k + 1) * 1024].tolist() == list(range(offset[v], offset[v] + 1024))


@pytest.mark.parametrize(
    "call",
    [
        lambda f, x, m: deletion_curve(f, x, m, steps=2),
        lambda f, x, m: insertion_curve(f, x, m, steps=2),
        lambda f, x, m: road(f, x, m, percentiles=(50,)),
        lambda f, x, m: confidence_change(f, x, m),
        lambda f, x, m: randomization_check(f, x),
        lambda f, x, m: guided_backprop(f, x, targets=0),
        lambda f, x, m: attribute(f, x, "saliency", 0),
    ],
)
def test_a_model_that_is_not_a_module_is_refused_by_name(call) -> None:  # noqa: ANN001
    """A plain function (or anything holding no nn.Module in ``.model``) gets one InputError naming its type,
    not an AttributeError from deep inside (device, eval mode)."""
    net = nn.Sequential(nn.Conv2d(3, 2, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    x, maps = torch.rand(1, 3, 6, 6), torch.rand(1, 6, 6)
    with pytest.raises(InputError, match=r"^model must be a torch\.nn\.Module or a ModelBundle, got function\.$"):
        call(lambda t: net(t), x, maps)
