import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from convlens.errors import ModelError
from convlens.inspect.predict import predict
from convlens.models import list_models, load_model
from convlens.models.preprocess import Preprocess


@pytest.mark.slow
def test_embedded_model_is_really_pretrained(lite0, chelsea, coffee):
    top_cat, top_coffee = predict(lite0, [chelsea, coffee], topk=1)
    assert top_cat[0].label == "Egyptian cat" and top_cat[0].prob > 0.5
    assert top_coffee[0].label == "espresso"


def test_eval_mode_and_meta(lite0):
    assert not lite0.model.training
    assert lite0.meta.num_params == sum(p.numel() for p in lite0.model.parameters())
    assert lite0.meta.num_classes == 1000 and len(lite0.labels) == 1000


def test_unknown_name_suggests():
    with pytest.raises(ModelError, match="did you mean 'resnet18'"):
        load_model("resnet81")


def test_list_models_sources():
    assert list_models("efficientnet_lite0", source="convlens") == ["efficientnet_lite0"]
    assert "resnet18" in list_models("resnet1*", source="torchvision")
    assert "resnet18" in list_models("resnet18")


def test_weights_roundtrip_safetensors_and_pt(tmp_path):
    torch.manual_seed(1)
    src = load_model("resnet18", num_classes=3)
    sd = {k: v.contiguous() for k, v in src.model.state_dict().items()}
    save_file(sd, tmp_path / "w.safetensors")
    torch.save(sd, tmp_path / "w.pt")
    for f in ("w.safetensors", "w.pt"):
        b = load_model("resnet18", weights=tmp_path / f)
        assert b.meta.num_classes == 3, "head size follows the weights file"
        assert torch.equal(b.model.fc.weight, src.model.fc.weight)


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_unsafe_pickle_refused(tmp_path):
    p = tmp_path / "evil.pt"
    torch.save({"x": _Evil()}, p)
    with pytest.raises(ModelError, match="code execution"):
        load_model("resnet18", weights=p)


def test_corrupt_and_mismatched_weights(tmp_path):
    p = tmp_path / "bad.safetensors"
    p.write_bytes(b"\x00\x01garbage")
    with pytest.raises(ModelError, match="corrupt"):
        load_model("resnet18", weights=p)
    q = tmp_path / "other.pt"
    torch.save({"fc.weight": torch.zeros(3, 7)}, q)
    with pytest.raises(ModelError, match="do not fit"):
        load_model("resnet18", weights=q)


def test_user_file_factory(tmp_path):
    f = tmp_path / "mynet.py"
    f.write_text(
        "import torch\n"
        "def build():\n"
        "    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 2))\n"
    )
    b = load_model(f"{f}:build")
    assert b.meta.source == "file" and b.meta.num_classes == 2
    with pytest.raises(ModelError, match="no callable"):
        load_model(f"{f}:nope")


def test_preprocess_modes():
    img = np.zeros((100, 50, 3), np.uint8)
    assert Preprocess(size=32, resize="crop").resize_image(img).shape == (32, 32, 3)
    assert Preprocess(size=32, resize="squash").resize_image(img).shape == (32, 32, 3)


def test_cli_predict_json_and_errors(tmp_path, chelsea):
    from PIL import Image

    p = tmp_path / "cat.png"
    Image.fromarray(chelsea).save(p)
    run = lambda *a: subprocess.run([sys.executable, "-m", "convlens", *a], capture_output=True, text=True)
    r = run("predict", str(p), "--topk", "2", "--json")
    assert r.returncode == 0, r.stderr
    import json

    data = json.loads(r.stdout)
    assert data[0]["top"][0]["label"] == "Egyptian cat" and set(data[0]["top"][0]) == {"class", "label", "prob"}
    r = run("predict", str(tmp_path / "none.png"))
    assert r.returncode == 2 and "Traceback" not in r.stderr and r.stderr.count("\n") == 1


def test_sidecar_labels_and_image_size(tmp_path):
    import json

    torch.manual_seed(2)
    src = load_model("resnet18", num_classes=2)
    save_file({k: v.contiguous() for k, v in src.model.state_dict().items()}, tmp_path / "model.safetensors")
    (tmp_path / "model.json").write_text(json.dumps({"labels": ["face", "other"], "image_size": 64}))
    b = load_model("resnet18", weights=tmp_path / "model.safetensors")
    assert b.labels == ["face", "other"] and b.label(1) == "other"
    assert b.preprocess.size == 64 and b.preprocess.resize == "squash" and b.meta.input_size == (3, 64, 64)
    assert b.preprocess(np.zeros((10, 30, 3), np.uint8)).shape == (1, 3, 64, 64)


def test_one_channel_user_model_gets_grayscale_input(tmp_path, chelsea):
    f = tmp_path / "graynet.py"
    f.write_text(
        "import torch\n"
        "def build():\n"
        "    return torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),\n"
        "                               torch.nn.Flatten(), torch.nn.Linear(4, 10))\n"
    )
    b = load_model(f"{f}:build")
    assert b.preprocess.channels == 1 and b.meta.input_size == (1, 224, 224)
    x = b.preprocess(chelsea)
    assert x.shape == (1, 1, 224, 224)
    gray = np.asarray(
        __import__("PIL.Image", fromlist=["Image"]).fromarray(b.preprocess.resize_image(chelsea)).convert("L")
    )
    back = b.preprocess.denormalize(x)[0, 0].numpy() * 255
    assert np.abs(back - gray).max() <= 1.0  # luma as Pillow computes it, within rounding
    top = predict(b, [chelsea], topk=2)[0]
    assert [t.label for t in top] == [f"class {t.cls}" for t in top]  # 10 outputs, no labels


def test_preprocess_rejects_bad_stats():
    from convlens.errors import InputError

    with pytest.raises(InputError, match="3 values"):
        Preprocess(mean=(0.5, 0.5), std=(0.5, 0.5))


def test_normalize_reduces_rgb_batches_for_gray_models():
    p = Preprocess(mean=(0.5,), std=(0.5,))
    rgb = torch.zeros(2, 3, 4, 4)
    rgb[:, 1] = 1.0  # pure green: luma 0.587
    out = p.normalize(rgb)
    assert out.shape == (2, 1, 4, 4) and torch.allclose(out, torch.full_like(out, (0.587 - 0.5) / 0.5))


def test_run_folder_and_wrong_model_hint(tmp_path):
    import json

    torch.manual_seed(3)
    src = load_model("resnet18", num_classes=2)
    run = tmp_path / "run"
    run.mkdir()
    save_file({k: v.contiguous() for k, v in src.model.state_dict().items()}, run / "model.safetensors")
    (run / "model.json").write_text(json.dumps({"labels": ["a", "b"], "model": "resnet18"}))
    b = load_model("resnet18", weights=run)  # the run folder itself
    assert b.labels == ["a", "b"] and b.meta.weights.endswith("model.safetensors")
    with pytest.raises(ModelError, match="pass --model resnet18"):
        load_model("efficientnet_lite0", weights=run / "model.safetensors")
    with pytest.raises(ModelError, match="folder without model.safetensors"):
        load_model("resnet18", weights=tmp_path)


def test_random_init_is_seeded_and_leaves_global_rng_alone():
    state = torch.random.get_rng_state()
    a, b = load_model("resnet18", num_classes=3), load_model("resnet18", num_classes=3)
    c = load_model("resnet18", num_classes=3, seed=1)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(a.model.conv1.weight, b.model.conv1.weight)
    assert not torch.equal(a.model.conv1.weight, c.model.conv1.weight)


def test_lazy_layers_are_materialized(tmp_path):
    f = tmp_path / "lazynet.py"
    f.write_text(
        "import torch\n"
        "def build():\n"
        "    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, stride=4), torch.nn.ReLU(), torch.nn.Flatten(),\n"
        "                               torch.nn.LazyLinear(5))\n"
    )
    b = load_model(f"{f}:build")
    assert b.meta.num_params == sum(p.numel() for p in b.model.parameters()) and b.meta.num_classes == 5


def test_user_model_with_dict_output_reports_its_classes(tmp_path):
    f = tmp_path / "dictnet.py"
    f.write_text(
        "import torch\n"
        "class Net(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.conv = torch.nn.Conv2d(3, 4, 3)\n"
        "        self.head = torch.nn.Linear(4, 7)\n"
        "    def forward(self, x):\n"
        "        f = self.conv(x).mean((2, 3))\n"
        "        return {'features': f, 'logits': self.head(f)}\n"
        "def build():\n"
        "    return Net()\n"
    )
    assert load_model(f"{f}:build").meta.num_classes == 7


# --- names shared by torchvision and timm, listing -----------------------------------------------


def test_list_models_substring_glob_and_sources():
    from convlens.models import list_model_sources

    pairs = list_model_sources("resnet")
    assert ("resnet18", "torchvision") in pairs and ("resnet18", "timm") in pairs  # shared name: both libraries
    assert ("wide_resnet50_2", "torchvision") in pairs  # substring, not only prefix
    assert all("resnet" in n.lower() for n, _ in pairs)
    assert [n for n, _ in list_model_sources("resnet1*", source="torchvision")] == [
        "resnet101",
        "resnet152",
        "resnet18",
    ]
    assert {s for _, s in list_model_sources("timm:convnext_t*")} == {"timm"}
    with pytest.raises(ModelError, match="source must be one of"):
        list_model_sources("*", source="foo")


def test_source_prefixes_pick_the_library():
    import timm
    import torchvision

    tv = load_model("torchvision:resnet18").model
    tm = load_model("timm:resnet18").model
    assert type(tv) is torchvision.models.ResNet and type(tm) is timm.models.ResNet
    assert type(load_model("resnet18").model) is torchvision.models.ResNet  # bare name: torchvision first
    assert load_model("timm:resnet18").meta.source == "timm"
    with pytest.raises(ModelError, match="did you mean 'timm:resnet18'"):
        load_model("timm:resnet1888")
    with pytest.raises(ModelError, match="torchvision has no model 'vit_tiny_patch16_224'"):
        load_model("torchvision:vit_tiny_patch16_224")


@pytest.mark.slow
def test_weights_of_the_other_library_are_recognised(tmp_path):
    """timm's efficientnet_b0 weights given to the bare name (torchvision's module): the error names the fix."""
    import timm

    sd = timm.create_model("efficientnet_b0").state_dict()
    save_file({k: v.contiguous() for k, v in sd.items()}, tmp_path / "w.safetensors")  # keys stored sorted
    with pytest.raises(ModelError, match=r"fit timm's 'efficientnet_b0'.*--model timm:efficientnet_b0"):
        load_model("efficientnet_b0", weights=tmp_path / "w.safetensors")
    b = load_model("timm:efficientnet_b0", weights=tmp_path / "w.safetensors")
    assert b.pretrained and b.meta.num_classes == 1000
    got = b.model.state_dict()
    assert all(torch.equal(got[k], v) for k, v in sd.items())


def test_cli_models_lists_sources_and_refuses_silent_empties(capsys):
    import json

    from convlens.cli import main

    assert main(["models", "resnet50", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert "resnet50" in data["models"]
    assert {"name": "resnet50", "source": "timm", "load_as": "timm:resnet50"} in data["sources"]
    assert {"name": "resnet50", "source": "torchvision", "load_as": "resnet50"} in data["sources"]
    assert main(["models", "--source", "foo"]) == 2
    assert "source must be one of" in capsys.readouterr().err
    assert main(["models", "no_such_net_xyz"]) == 2
    assert "no model matches" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize(("name", "n_params"), [("inception_v3", 27_161_264), ("googlenet", 6_624_904)])
def test_aux_head_models_are_built_as_torchvision_builds_them(tmp_path, name: str, n_params: int) -> None:
    """Regression (issue 16.4): inception_v3/googlenet were built without their auxiliary heads (23,834,568
    params for inception_v3) and official checkpoints failed with "14 unexpected keys". A checkpoint in the
    official layout (aux heads included) loads, and the logits equal torchvision's own model built the way
    its builder builds it when loading weights (aux heads, transform_input=True)."""
    import torchvision

    torch.manual_seed(0)
    ref = torchvision.models.get_model(name, weights=None, aux_logits=True, transform_input=True, init_weights=False)
    sd = ref.state_dict()
    assert any(k.startswith(("AuxLogits.", "aux1.")) for k in sd)
    path = tmp_path / f"{name}.pth"
    torch.save(sd, path)
    bundle = load_model(name, weights=path)
    assert bundle.meta.num_params == n_params == sum(p.numel() for p in bundle.model.parameters())
    if name == "googlenet":  # torchvision drops googlenet's aux heads after loading (aux_logits defaults to False)
        ref.aux_logits, ref.aux1, ref.aux2 = False, None, None
    x = torch.randn(1, 3, 299, 299)
    with torch.no_grad():
        torch.testing.assert_close(bundle.model(x), ref.eval()(x))
    assert load_model(name, device="meta").meta.num_params == n_params  # random init: the same architecture


@pytest.mark.slow
def test_training_setup_runs_inception_v3_below_its_aux_head_size(tmp_path) -> None:
    """inception_v3 is built with its aux head (issue 16.4), which cannot run in train mode below ~300 px;
    training reads the main logits only, so the training loop removes it: a train-mode forward at 96 px works."""
    from convlens.data import load_dataset
    from convlens.train.loop import TrainConfig, _Loop

    cfg = TrainConfig(data="digits", strategy="features", model="inception_v3", epochs=1, image_size=96)
    data = load_dataset("digits", image_size=96, val_fraction=0.2, seed=0)
    loop = _Loop(cfg.validated(), data, None, None)
    loop.model.train()
    out = loop.model(torch.zeros(2, 3, 96, 96))
    assert tuple(out.shape) == (2, data.num_classes)
    # the weights it saves (no aux keys) load back into load_model's inception_v3
    path = tmp_path / "trained.pth"
    torch.save(loop.model.state_dict(), path)
    assert load_model("inception_v3", weights=path).meta.num_params == sum(p.numel() for p in loop.model.parameters())
