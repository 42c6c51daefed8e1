"""Targets beyond classification (explain.targets) against pytorch-grad-cam with the same score written as
its per-sample target callables (oracle, test-only): torchvision Faster R-CNN / RetinaNet (random init)
with the box score, FCN / DeepLabV3 with the mask sum, embeddings with cosine similarity, multi-label."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from convlens.errors import InputError
from convlens.explain import explain
from convlens.explain.targets import BoxScoreTarget, EmbeddingTarget, MaskTarget, MultiLabelTarget, box_iou

pgc = pytest.importorskip("pytorch_grad_cam")


def _pgc_gradcam(model, layer, x, per_sample):
    m = copy.deepcopy(model)
    mods = dict(m.named_modules())
    with pgc.GradCAM(m, [mods[layer]]) as c:
        return c(x, [per_sample] * x.shape[0])


def test_box_iou_matches_torchvision():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(5, 4, generator=g) * 50
    a[:, 2:] += a[:, :2]
    b = torch.rand(3, 4, generator=g) * 50
    b[:, 2:] += b[:, :2]
    assert torch.allclose(box_iou(a, b), torchvision.ops.box_iou(a, b), atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["fasterrcnn", "retinanet"])
def test_detector_box_score_target_matches_oracle(kind):
    torch.manual_seed(0)
    kw = {"weights": None, "weights_backbone": None, "num_classes": 5, "min_size": 128, "max_size": 128}
    if kind == "fasterrcnn":
        det = torchvision.models.detection.fasterrcnn_resnet50_fpn(**kw).eval()
        det.roi_heads.score_thresh = 0.0
    else:
        det = torchvision.models.detection.retinanet_resnet50_fpn(**kw).eval()
        det.score_thresh = 0.0  # random init scores sit near the 0.01 prior
    x = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    box, label = (20.0, 30.0, 90.0, 100.0), 2
    target = BoxScoreTarget(box, label)

    def one(o):  # the same score, per sample, as pytorch-grad-cam targets are written
        keep = o["labels"] == label
        iou = torchvision.ops.box_iou(o["boxes"], torch.tensor([box]))[:, 0]
        return (o["scores"] * iou)[keep].max()

    ref = _pgc_gradcam(det, "backbone.body.layer4", x, one)
    res = explain(det, x, "gradcam", "backbone.body.layer4", target)
    assert res.maps.shape == (2, 128, 128) and torch.isfinite(res.maps).all()
    assert float(res.scores.min()) > 0
    assert np.abs(res.maps.numpy() - ref).max() < 1e-4
    with pytest.raises(InputError, match="detection model"):
        target(torch.zeros(2, 5))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["fcn", "deeplabv3"])
def test_segmentation_mask_target_matches_oracle(kind):
    torch.manual_seed(0)
    seg = getattr(torchvision.models.segmentation, f"{kind}_resnet50")(
        weights=None, weights_backbone=None, num_classes=4, aux_loss=False
    ).eval()
    x = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(2))
    mask = torch.zeros(96, 96)
    mask[20:60, 30:80] = 1
    from pytorch_grad_cam.utils.model_targets import SemanticSegmentationTarget

    class Out(nn.Module):  # pytorch-grad-cam wants a tensor output
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, t):
            return self.m(t)["out"]

    wrapped = Out(seg)
    ref = _pgc_gradcam(wrapped, "m.backbone.layer4", x, SemanticSegmentationTarget(3, mask.numpy()))
    res = explain(seg, x, "gradcam", "backbone.layer4", MaskTarget(mask, 3))
    assert np.abs(res.maps.numpy() - ref).max() < 1e-4


def test_embedding_and_multilabel_targets_match_oracle():
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=16).eval()
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        concept = net(torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(4)))[0]
    ref = _pgc_gradcam(net, "layer4", x, lambda o: nn.CosineSimilarity(dim=0)(o, concept))  # pgc's concept target
    res = explain(net, x, "gradcam", "layer4", EmbeddingTarget(concept))
    assert np.abs(res.maps.numpy() - ref).max() < 1e-4
    ref2 = _pgc_gradcam(net, "layer4", x, lambda o: torch.sigmoid(o[[2, 5, 7]]).sum())
    res2 = explain(net, x, "gradcam", "layer4", MultiLabelTarget([2, 5, 7]))
    assert np.abs(res2.maps.numpy() - ref2).max() < 1e-4
    with torch.no_grad():
        assert torch.allclose(res2.scores, torch.sigmoid(net(x)[:, [2, 5, 7]]).sum(1), atol=1e-6)
