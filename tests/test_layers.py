import pytest
from torch import nn

from convlens.errors import LayerError
from convlens.layers import glob_to_regex, resolve


def test_auto_skips_global_pool_and_head(resnet18_bundle):
    assert [r.name for r in resolve(resnet18_bundle.model, "auto")] == ["layer4"]


def test_stages_resnet18(resnet18_bundle):
    assert [r.name for r in resolve(resnet18_bundle.model, "stages")] == [
        "relu",
        "layer1",
        "layer2",
        "layer3",
        "layer4",
    ]


def test_stages_timm_feature_info(lite0):
    assert [r.name for r in resolve(lite0.model, "stages")] == [
        "blocks.0",
        "blocks.1",
        "blocks.2",
        "blocks.4",
        "blocks.6",
    ]
    assert [r.name for r in resolve(lite0.model, "auto")] == ["bn2"]


def test_glob_segments(resnet18_bundle):
    names = [r.name for r in resolve(resnet18_bundle.model, "layer1.*")]
    assert names == ["layer1.0", "layer1.1"]
    deep = [r.name for r in resolve(resnet18_bundle.model, "layer1.**conv*")]
    assert "layer1.0.conv1" in deep and all(n.startswith("layer1.") for n in deep)
    assert not glob_to_regex("*").fullmatch("a.b")


def test_unknown_layer_suggests(resnet18_bundle):
    with pytest.raises(LayerError, match="did you mean 'layer4.1.conv2'"):
        resolve(resnet18_bundle.model, "layer4.1.cnv2")


def test_module_object_and_foreign_module(resnet18_bundle):
    m = resnet18_bundle.model
    assert resolve(m, m.layer3)[0].name == "layer3"
    with pytest.raises(LayerError, match="not part"):
        resolve(m, nn.Conv2d(1, 1, 1))


def test_no_spatial_layer():
    with pytest.raises(LayerError, match="spatial"):
        resolve(nn.Sequential(nn.Flatten(), nn.Linear(12, 2)), "auto", input_shape=(3, 2, 2))
