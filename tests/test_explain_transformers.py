"""Transformers with target_layer='auto' and no hand-written reshape: convlens' layout conversion
(convlens.layers) agrees with pytorch-grad-cam + its documented reshape_transform on the same layer."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch

from convlens.explain import explain

pgc = pytest.importorskip("pytorch_grad_cam")
timm = pytest.importorskip("timm")
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402


def _vit_reshape(prefix: int, grid: int):
    def f(t):  # pytorch-grad-cam's ViT tutorial: drop the class token(s), tokens -> (N, C, h, w)
        return t[:, prefix:, :].reshape(t.size(0), grid, grid, t.size(2)).permute(0, 3, 1, 2)

    return f


def _swin_reshape(t):  # timm Swin stages are channels-last (N, h, w, C)
    return t.permute(0, 3, 1, 2)


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, layer, reshape",
    [
        ("vit_tiny_patch16_224", "blocks.11.norm1", _vit_reshape(1, 14)),
        ("deit_tiny_distilled_patch16_224", "blocks.11.norm1", _vit_reshape(2, 14)),
        ("swin_tiny_patch4_window7_224", "norm", _swin_reshape),
    ],
)
def test_transformer_auto_layer_matches_pytorch_grad_cam_with_reshape(name, layer, reshape):
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = timm.create_model(name, pretrained=False, num_classes=10).eval()
    x = torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    targets = [1, 4, 7]
    res = explain(model, x, "gradcam", "auto", targets)
    assert res.layers == [layer]
    m = copy.deepcopy(model)
    mods = dict(m.named_modules())
    with pgc.GradCAM(m, [mods[layer]], reshape_transform=reshape) as c:
        ref = c(x, [ClassifierOutputTarget(t) for t in targets])
    assert np.abs(res.maps.numpy() - ref).max() < 1e-4
