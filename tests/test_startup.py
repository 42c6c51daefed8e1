"""Start-up: what each command imports, and the embedded architecture against timm's own build."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

HEAVY = ("torch", "torchvision", "timm")


def _modules_after(code: str, tmp_path) -> set[str]:
    """Top-level packages in sys.modules after running ``code`` in a fresh interpreter."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    script = code + "\nimport sys, json\nprint(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_shape_does_not_import_torch(tmp_path):
    mods = _modules_after(
        "from convlens.cli import main\n"
        "import contextlib, io\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    assert main(['shape', '--input', '128x128x32', '--filters', '16', '--kernel', '3', '--stride', '2']) == 0\n"
        "    assert main(['shape', '--input', '32x32x3', '--kernel', '3', '--filters', '4', '--json']) == 0\n",
        tmp_path,
    )
    assert not mods & set(HEAVY), mods & set(HEAVY)


@pytest.mark.slow
def test_predict_on_the_embedded_model_imports_neither_timm_nor_torchvision(tmp_path, chelsea):
    from PIL import Image

    Image.fromarray(chelsea).save(tmp_path / "cat.png")
    mods = _modules_after(
        "from convlens.cli import main\nassert main(['predict', 'cat.png', '--json']) == 0\n", tmp_path
    )
    assert "torch" in mods
    assert not mods & {"timm", "torchvision", "matplotlib"}, mods & {"timm", "torchvision", "matplotlib"}


def test_embedded_architecture_equals_timm_tf_efficientnet_lite0():
    """The torch-only rebuild must be timm's network: same module tree, state-dict keys, feature taps, outputs."""
    import timm

    from convlens.models.effnet_lite_arch import EfficientNet

    ref = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    ours = EfficientNet().eval()
    assert [(n, type(m).__name__) for n, m in ref.named_modules()] == [
        (n, type(m).__name__) for n, m in ours.named_modules()
    ]
    assert ours.feature_info == list(ref.feature_info)
    g = torch.Generator().manual_seed(0)
    sd = {}
    for k, v in ref.state_dict().items():
        if not v.is_floating_point():
            sd[k] = v
        elif "running_var" in k:
            sd[k] = torch.rand(v.shape, generator=g) + 0.5
        else:
            sd[k] = torch.randn(v.shape, generator=g) * 0.1
    ref.load_state_dict(sd)
    ours.load_state_dict(sd)
    for size in ((224, 224), (97, 130)):  # odd sizes exercise the asymmetric 'SAME' padding
        x = torch.randn(2, 3, *size, generator=g)
        with torch.no_grad():
            np.testing.assert_allclose(ours(x).numpy(), ref(x).numpy(), rtol=1e-5, atol=1e-5)
    ref.reset_classifier(7)
    ours.reset_classifier(7)
    assert ours.num_classes == ref.num_classes == 7
    assert ours.get_classifier().weight.shape == ref.get_classifier().weight.shape


def test_packaged_imagenet_labels_are_torchvisions():
    from torchvision.models import ResNet18_Weights

    from convlens.models import imagenet_labels

    assert imagenet_labels() == list(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])
