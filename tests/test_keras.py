"""Keras 3 ``.keras`` models (torch backend) in every command (issue 18).

Oracles: Keras's own ``model.predict`` and ``count_params``; receptive fields measured as the support of
plain-torch input gradients; Grad-CAM computed by hand with ``torch.autograd`` on the Keras layer's
(N, H, W, C) output and logits computed by hand from the last Dense layer's weights.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

os.environ["KERAS_BACKEND"] = "torch"  # before keras is imported (conftest sets it too)
keras = pytest.importorskip("keras")

from convlens.cli import main  # noqa: E402
from convlens.errors import InputError, ModelError  # noqa: E402
from convlens.explain import METHODS, explain  # noqa: E402
from convlens.inspect import summarize  # noqa: E402
from convlens.inspect.activations import get_activations  # noqa: E402
from convlens.inspect.predict import predict  # noqa: E402
from convlens.models import load_model  # noqa: E402

L = keras.layers


def _randomize(model, seed: int) -> None:
    """Non-trivial weights everywhere, BatchNorm statistics included (fresh BN is the identity)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        ws = layer.get_weights()
        if not ws:
            continue
        if isinstance(layer, L.BatchNormalization):  # gamma, beta, moving mean, moving variance (> 0)
            ws = [
                rng.uniform(0.5, 1.5, w.shape) if i in (0, 3) else rng.normal(0, 0.2, w.shape) for i, w in enumerate(ws)
            ]
        else:
            ws = [rng.normal(0, 0.3, w.shape) for w in ws]
        layer.set_weights([w.astype("float32") for w in ws])


def chollet(size: int = 32) -> keras.Model:
    """The book's small convnet: Rescaling, Conv2D, BatchNormalization, MaxPooling2D, Dropout, Flatten, Dense."""
    m = keras.Sequential(
        [
            keras.Input((size, size, 3)),
            L.Rescaling(1.0 / 255),
            L.Conv2D(8, 3, activation="relu", name="conv1"),
            L.BatchNormalization(name="bn1"),
            L.MaxPooling2D(2, name="pool1"),
            L.Conv2D(16, 3, activation="relu", padding="same", name="conv2"),
            L.MaxPooling2D(2, name="pool2"),
            L.Dropout(0.5),
            L.Flatten(),
            L.Dense(5, activation="softmax", name="out"),
        ]
    )
    _randomize(m, 0)
    return m


def branchy(size: int = 24) -> keras.Model:
    """Functional: a residual Add and a Concatenate of a 1x1 and a 5x5 branch (no Rescaling: [0, 1] input)."""
    inp = keras.Input((size, size, 3))
    a = L.Conv2D(8, 3, padding="same", activation="relu", name="stem")(inp)
    b = L.Conv2D(8, 3, padding="same", name="res_conv")(a)
    r = L.Add(name="add")([a, b])
    c1 = L.Conv2D(4, 1, name="branch1x1")(r)
    c5 = L.Conv2D(4, 5, padding="same", strides=1, name="branch5x5")(r)
    cat = L.Concatenate(name="concat")([c1, c5])
    p = L.MaxPooling2D(2, name="pool")(cat)
    d = L.Conv2D(6, 3, strides=2, name="down")(p)
    g = L.GlobalAveragePooling2D()(d)
    out = L.Dense(3, activation="softmax", name="out")(g)
    m = keras.Model(inp, out)
    _randomize(m, 1)
    return m


def channels_first(size: int = 16) -> keras.Model:
    m = keras.Sequential(
        [
            keras.Input((3, size, size)),
            L.Conv2D(4, 3, data_format="channels_first", activation="relu", name="conv"),
            L.MaxPooling2D(2, data_format="channels_first", name="pool"),
            L.Flatten(),
            L.Dense(3, activation="softmax", name="out"),
        ]
    )
    _randomize(m, 2)
    return m


CONVS = {"chollet": ["conv1", "conv2"], "branchy": ["stem", "res_conv", "branch1x1", "branch5x5", "down"]}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    d = tmp_path_factory.mktemp("keras")
    out = {}
    for name, build in (("chollet", chollet), ("branchy", branchy), ("cf", channels_first)):
        m = build()
        m.save(d / f"{name}.keras")
        out[name] = (d / f"{name}.keras", m)
    (d / "chollet.json").write_text(json.dumps({"labels": ["a", "b", "c", "d", "e"]}))
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (45, 60, 3), dtype=np.uint8)).save(d / "img.png")
    return out


@pytest.fixture(scope="module")
def bundles(saved):
    return {k: load_model(str(p)) for k, (p, _) in saved.items()}


def _keras_input(img: np.ndarray, size: int, scale: float) -> np.ndarray:
    """What a Keras user feeds: the image resized (PIL bilinear, aspect ignored) as float, in 0..255 * scale."""
    im = Image.fromarray(img).resize((size, size), Image.BILINEAR)
    return (np.asarray(im, dtype=np.float32) * scale)[None]


@pytest.mark.parametrize("name, scale", [("chollet", 1.0), ("branchy", 1 / 255)])
def test_predict_equals_keras_model_predict(saved, bundles, name, scale):
    path, m = saved[name]
    b = bundles[name]
    img = np.random.default_rng(3).integers(0, 256, (45, 60, 3), dtype=np.uint8)
    size = m.inputs[0].shape[1]
    ref = m.predict(_keras_input(img, size, scale), verbose=0)[0]  # Rescaling inside chollet: raw 0..255
    top = predict(b, [img], topk=len(ref))[0]
    got = np.zeros_like(ref)
    for t in top:
        got[t.cls] = t.prob
    np.testing.assert_allclose(got, ref, atol=1e-5)
    assert b.meta.source == "keras" and b.pretrained and b.meta.input_size == (3, size, size)


def test_labels_from_the_model_json_sidecar(bundles):
    assert bundles["chollet"].labels == ["a", "b", "c", "d", "e"] and bundles["chollet"].meta.num_classes == 5
    assert bundles["branchy"].labels is None and bundles["branchy"].label(2) == "class 2"


@pytest.mark.parametrize("name", ["chollet", "branchy", "cf"])
def test_params_equal_count_params(saved, bundles, name):
    _, m = saved[name]
    b = bundles[name]
    s = summarize(b.model, b.meta.input_size)
    assert b.meta.num_params == s.total_params == m.count_params()
    for layer in m.layers:  # per layer too, under its Keras name
        if isinstance(layer, L.InputLayer):
            continue
        assert s.layer(layer.name).params == layer.count_params(), layer.name


def _empirical_rf(net: torch.nn.Module, layer: torch.nn.Module, size: int, channels_last: bool) -> tuple[int, int]:
    """Support of d(centre unit)/d(input), unioned over random inputs (max pooling and ReLU route the gradient
    through one cell per window per input; over many inputs every cell of the field is reached)."""
    out = {}
    h = layer.register_forward_hook(lambda mod, i, o: out.__setitem__("y", o))
    support = torch.zeros(size, size, dtype=torch.bool)
    g = torch.Generator().manual_seed(0)
    try:
        for _ in range(24):
            x = torch.rand(1, 3, size, size, generator=g).mul(255).requires_grad_(True)
            net(x)
            y = out["y"]
            y = y.permute(0, 3, 1, 2) if channels_last else y  # (N, C, h, w) for indexing only
            (grad,) = torch.autograd.grad(y[0, :, y.shape[2] // 2, y.shape[3] // 2].sum(), x)
            support |= grad[0].abs().sum(0) > 0
    finally:
        h.remove()
    rows = torch.nonzero(support.any(1)).flatten()
    cols = torch.nonzero(support.any(0)).flatten()
    return int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)


@pytest.mark.parametrize("name", ["chollet", "branchy"])
def test_receptive_field_of_each_conv_equals_the_gradient_field(bundles, name):
    b = bundles[name]
    size = b.meta.input_size[1]
    s = summarize(b.model, b.meta.input_size)
    modules = dict(b.model.named_modules())
    for conv in CONVS[name]:
        rf = s.layer(conv).receptive_field
        assert rf[0] < size, (conv, rf)  # measured inside the image, not clipped by its border
        assert _empirical_rf(b.model, modules[conv], size, channels_last=True) == tuple(rf), conv
        assert s.layer(conv).kernel is not None  # the traced graph saw the convolution itself


def _gradcam_by_hand(m, layer_name: str, x_nhwc: torch.Tensor, target: int, size: int) -> torch.Tensor:
    """Grad-CAM with plain torch on the Keras model itself: the layer's (1, h, w, C) output A, the logits
    z = dense_input @ W + b from the last Dense layer's weights, w_c = mean_hw dz/dA, relu(sum_c w_c A_c),
    min-max normalized, bilinear upsampling (align_corners=False), min-max again."""
    keep = {}
    hs = [
        m.get_layer(layer_name).register_forward_hook(lambda mod, i, o: keep.__setitem__("A", o)),
        m.layers[-1].register_forward_hook(lambda mod, i, o: keep.__setitem__("feat", i[0])),
    ]
    try:
        m(x_nhwc, training=False)
    finally:
        for h in hs:
            h.remove()
    kernel, bias = (torch.as_tensor(w) for w in m.layers[-1].get_weights())
    z = keep["feat"] @ kernel + bias
    (g,) = torch.autograd.grad(z[0, target], keep["A"])
    w = g[0].mean(dim=(0, 1))  # (C,)
    cam = torch.relu((keep["A"][0] * w).sum(-1))  # (h, w)

    def minmax(t):
        return (t - t.min()) / (t.max() - t.min())

    up = F.interpolate(minmax(cam)[None, None], size=(size, size), mode="bilinear", align_corners=False)[0, 0]
    return minmax(up)


@pytest.mark.parametrize(
    "name, layer",
    [
        ("chollet", "conv2"),  # a square (1, 15, 15, 16) NHWC map: read by its declared layout, not its shape
        ("chollet", "bn1"),
        ("branchy", "concat"),
    ],
)
def test_gradcam_equals_gradcam_by_hand(saved, bundles, name, layer):
    _, m = saved[name]
    b = bundles[name]
    size = b.meta.input_size[1]
    img = np.random.default_rng(5).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    x = b.preprocess(img)
    res = explain(b.model, x, "gradcam", layer)
    target = int(res.targets[0])
    ref = _gradcam_by_hand(m, layer, x.permute(0, 2, 3, 1).clone(), target, size)
    assert torch.allclose(res.maps[0], ref, atol=1e-4), float((res.maps[0] - ref).abs().max())


def _state(m) -> tuple:
    return (
        [w.copy() for w in m.get_weights()],
        [(layer.name, len(layer._forward_hooks), len(layer._forward_pre_hooks), layer.training) for layer in m.layers],
        [getattr(layer, "activation", None) for layer in m.layers],
    )


def test_hooks_removed_and_model_unchanged_after_every_call(bundles):
    b = bundles["branchy"]
    m = b.model.keras_model
    before = _state(m)
    x = b.preprocess(np.random.default_rng(0).integers(0, 256, (30, 30, 3), dtype=np.uint8))
    for method in ("gradcam", "gradcam++", "layercam", "eigencam", "scorecam"):
        explain(b.model, x, method, "auto")
    get_activations(b.model, x, ["stem", "concat"])
    summarize(b.model, b.meta.input_size)
    predict(b, [np.zeros((9, 9, 3), np.uint8)])
    with pytest.raises(Exception):  # noqa: B017 - any failure inside a hooked call must still clean up
        explain(b.model, torch.zeros(1, 3, 7, 7), "gradcam", "concat")
    after = _state(m)
    assert before[1] == after[1] and before[2] == after[2]
    assert all(np.array_equal(p, q) for p, q in zip(before[0], after[0], strict=True))
    assert not b.model.training


def test_activations_are_nchw_and_equal_the_keras_layer_output(saved, bundles):
    _, m = saved["chollet"]
    b = bundles["chollet"]
    x = b.preprocess(np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    sub = keras.Model(m.inputs, m.get_layer("conv2").output)
    ref = torch.as_tensor(np.asarray(sub(x.permute(0, 2, 3, 1), training=False).detach())).permute(0, 3, 1, 2)
    from convlens.inspect.activations import to_nchw

    acts = to_nchw(b.model, x, get_activations(b.model, x, ["conv2"]))
    assert acts["conv2"].shape == (1, 16, 15, 15) and torch.allclose(acts["conv2"], ref, atol=1e-5)


def test_channels_first_model(saved, bundles):
    path, m = saved["cf"]
    b = bundles["cf"]
    assert b.meta.extra["data_format"] == "channels_first" and b.meta.input_size == (3, 16, 16)
    img = np.random.default_rng(4).integers(0, 256, (20, 20, 3), dtype=np.uint8)
    x = b.preprocess(img)
    ref = m.predict(x.numpy(), verbose=0)[0]  # channels_first: Keras takes (N, C, H, W) as is
    with torch.no_grad():
        got = torch.softmax(b.model(x), 1)[0].numpy()
    np.testing.assert_allclose(got, ref, atol=1e-5)
    s = summarize(b.model, b.meta.input_size)
    assert s.layer("conv").receptive_field == (3, 3) and s.layer("pool").receptive_field == (4, 4)
    assert s.layer("conv").output_shape == (14, 14, 4)
    res = explain(b.model, x, "gradcam", "conv")
    assert res.maps.shape == (1, 16, 16) and float(res.maps.max()) == pytest.approx(1.0)


def test_sigmoid_binary_head_becomes_two_logits(tmp_path):
    m = keras.Sequential([keras.Input((8, 8, 3)), L.Conv2D(2, 3), L.Flatten(), L.Dense(1, activation="sigmoid")])
    _randomize(m, 7)
    m.save(tmp_path / "cats_dogs.keras")
    b = load_model(str(tmp_path / "cats_dogs.keras"))
    x = torch.rand(4, 3, 8, 8)
    p = m.predict(x.permute(0, 2, 3, 1).numpy(), verbose=0)[:, 0]
    with torch.no_grad():
        probs = torch.softmax(b.model(x), 1)
    assert b.meta.num_classes == 2
    np.testing.assert_allclose(probs[:, 1].numpy(), p, atol=1e-6)


def test_errors_are_one_sentence(tmp_path, saved):
    with pytest.raises(ModelError, match="does not exist"):
        load_model(str(tmp_path / "missing.keras"))
    (tmp_path / "bad.keras").write_bytes(b"not a zip")
    with pytest.raises(ModelError, match="Keras could not load"):
        load_model(str(tmp_path / "bad.keras"))
    with pytest.raises(ModelError, match="drop --weights"):
        load_model(str(saved["chollet"][0]), weights=saved["chollet"][0])


def test_a_keras_model_at_another_input_size_is_one_input_error(bundles):
    """The book's convnet is built for 32x32: at 40x40 its Dense layer's input spec raises a ValueError deep in
    the forward, behind Keras's "Exception encountered when calling Sequential.call()." and colour codes;
    activations, the empirical field and the unit trace report it as one InputError quoting the cause."""
    from convlens.inspect import receptive_field_empirical, trace_unit

    net, x = bundles["chollet"].model, torch.rand(1, 3, 40, 40)
    expected = r"^the model failed on .*40.* \(Input 0 .* of layer 'out' is incompatible .* received input with shape \(1, 1296\)\)"
    with pytest.raises(InputError, match=expected):
        get_activations(net, x, ["conv1"])
    with pytest.raises(InputError, match=expected):
        receptive_field_empirical(net, "conv1", 40)
    with pytest.raises(InputError, match=expected):
        trace_unit(net, x, "conv1", (0, 3, 3))


def test_keras_with_another_backend_or_missing_is_a_clear_error(monkeypatch):
    import sys
    import types

    from convlens.models import keras_adapter

    fake = types.SimpleNamespace(__version__="3.15.1", backend=types.SimpleNamespace(backend=lambda: "tensorflow"))
    monkeypatch.setitem(sys.modules, "keras", fake)
    with pytest.raises(ModelError, match="'tensorflow' backend.*KERAS_BACKEND=torch"):
        keras_adapter.import_keras()
    monkeypatch.setitem(sys.modules, "keras", None)  # import keras -> ImportError
    with pytest.raises(ModelError, match=r"convlens\[keras\]"):
        keras_adapter.import_keras()


def test_every_command_runs_on_a_keras_model(saved, tmp_path, capsys):
    path = str(saved["chollet"][0])
    img = str(saved["chollet"][0].parent / "img.png")
    runs = {
        "predict": ["predict", img, "--model", path, "--topk", "2"],
        "summary": ["summary", "--model", path],
        "activations": ["activations", img, "--model", path, "--layers", "conv1,conv2", "--out", str(tmp_path / "a")],
        "depth-profile": ["depth-profile", img, "--model", path, "--out", str(tmp_path / "d")],
        "cam": ["cam", img, "--model", path, "--method", "all", "--layer", "conv2", "--out", str(tmp_path / "c")],
        "filters": ["filters", "--model", path, "--layer", "conv2", "--channels", "0-1", "--steps", "2"]
        + ["--size", "32", "--out", str(tmp_path / "f.png")],
    }
    out = {}
    for name, args in runs.items():
        assert main(args + ["--json"]) == 0, (name, capsys.readouterr().err)
        out[name] = json.loads(capsys.readouterr().out)
    assert out["predict"][0]["top"][0]["label"] in "abcde" and out["predict"][0]["pretrained"] is True
    assert out["summary"]["total_params"] == saved["chollet"][1].count_params()
    assert [r["layer"] for r in out["activations"]["layers"]] == ["conv1", "conv2"]
    assert out["activations"]["layers"][1]["output_shape"] == [15, 15, 16]  # HxWxC, read as NCHW underneath
    assert {r["method"] for r in out["cam"]} >= {"gradcam", "gradcam++", "scorecam", "eigencam", "layercam"}
    assert all(np.load(r["map_file"]).shape == (32, 32) for r in out["cam"])
    assert len(out["filters"]["channels"]) == 2
    assert [s["name"] for s in out["depth-profile"]["stages"]][-1] in ("pool2", "dropout")


def test_train_refuses_keras_models(saved, tmp_path, capsys):
    assert main(["train", "--data", "digits", "--model", str(saved["chollet"][0]), "--out", str(tmp_path / "t")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "Keras" in err and len(err.strip().splitlines()) == 1


def _torch_twin(m) -> torch.nn.Module:
    """The Chollet model rebuilt in plain torch from the Keras weights (separate ReLU modules, NHWC flatten)."""
    w = {layer.name: [torch.as_tensor(a) for a in layer.get_weights()] for layer in m.layers}

    def conv(name, cin, cout, pad):
        c = torch.nn.Conv2d(cin, cout, 3, padding=pad)
        c.weight.data = w[name][0].permute(3, 2, 0, 1).contiguous()
        c.bias.data = w[name][1]
        return c

    bn = torch.nn.BatchNorm2d(8, eps=m.get_layer("bn1").epsilon)
    bn.weight.data, bn.bias.data, bn.running_mean.data, bn.running_var.data = w["bn1"]
    fc = torch.nn.Linear(16 * 7 * 7, 5)
    fc.weight.data, fc.bias.data = w["out"][0].T.contiguous(), w["out"][1]

    class Twin(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.relu1, self.bn1 = conv("conv1", 3, 8, 0), torch.nn.ReLU(), bn
            self.conv2, self.relu2, self.fc = conv("conv2", 8, 16, 1), torch.nn.ReLU(), fc

        def forward(self, x):
            x = F.max_pool2d(self.bn1(self.relu1(self.conv1(x / 255.0))), 2)
            x = F.max_pool2d(self.relu2(self.conv2(x)), 2)
            return self.fc(x.permute(0, 2, 3, 1).flatten(1))  # Keras flattens (h, w, C)

    return Twin().eval()


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_cam_method_on_keras_equals_it_on_the_torch_twin(saved, bundles, method):
    """The same network in Keras and in plain torch gives the same map for every method: Keras's fused
    Conv2D(activation='relu') output is the twin's ReLU output, FullGrad reads each layer's declared bias
    and pre-activation gradient, Ablation-CAM puts its ablated copies back in the layer's NHWC layout."""
    _, m = saved["chollet"]
    b = bundles["chollet"]
    twin = _torch_twin(m)
    x = b.preprocess(np.random.default_rng(8).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    with torch.no_grad():
        assert torch.allclose(twin(x), b.model(x), atol=1e-4)
    ours = explain(b.model, x, method, "conv2", [2])
    ref = explain(twin, x, method, "relu2", [2])
    assert torch.allclose(ours.maps, ref.maps, atol=1e-4), float((ours.maps - ref.maps).abs().max())


def test_nested_models_expose_their_layers(tmp_path):
    """The book's pattern: a data_augmentation Sequential, Rescaling, and a conv base used as one layer."""
    aug = keras.Sequential([L.RandomFlip("horizontal"), L.RandomZoom(0.2)], name="data_augmentation")
    base = keras.Sequential(
        [keras.Input((20, 20, 3)), L.Conv2D(4, 3, activation="relu", name="b1"), L.MaxPooling2D(name="bp")],
        name="conv_base",
    )
    inp = keras.Input((20, 20, 3))
    x = base(L.Rescaling(1 / 255)(aug(inp)))
    m = keras.Model(inp, L.Dense(2, activation="softmax", name="out")(L.GlobalAveragePooling2D()(x)))
    _randomize(m.get_layer("conv_base"), 9)
    m.save(tmp_path / "nested.keras")
    b = load_model(str(tmp_path / "nested.keras"))
    names = {n for n, _ in b.model.named_modules()}
    assert {"conv_base", "conv_base.b1", "conv_base.bp", "data_augmentation.random_flip"} <= names
    assert b.meta.num_params == m.count_params() and b.meta.extra["rescaling"]  # Rescaling after augmentation
    x = b.preprocess(np.random.default_rng(2).integers(0, 256, (30, 30, 3), dtype=np.uint8))
    with torch.no_grad():
        got = torch.softmax(b.model(x), 1).numpy()
    np.testing.assert_allclose(got, m.predict(x.permute(0, 2, 3, 1).numpy(), verbose=0), atol=1e-5)
    assert summarize(b.model, b.meta.input_size).layer("conv_base.b1").receptive_field == (3, 3)
    acts = get_activations(b.model, x, ["conv_base.b1"])
    assert acts["conv_base.b1"].shape[0] == 1 and 18 in acts["conv_base.b1"].shape


@pytest.mark.parametrize("layer", ["conv1", "bn1", "pool1", "conv2", "pool2"])
def test_unit_traces_the_keras_layer_value_at_channel_row_column(saved, bundles, layer):
    """(c, i, j) is channel c at row i, column j of the Keras (1, h, w, C) output, read through the layer's
    declared NHWC layout and the permutes Keras runs around its convolutions and pools."""
    from convlens.inspect import trace_unit

    _, m = saved["chollet"]
    b = bundles["chollet"]
    x = b.preprocess(np.random.default_rng(6).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    sub = keras.Model(m.inputs, m.get_layer(layer).output)
    ref = np.asarray(sub(x.permute(0, 2, 3, 1), training=False).detach())  # (1, h, w, C)
    c, i, j = 3, 5, 6
    t = trace_unit(b.model, x, layer, (c, i, j))
    assert t.value == pytest.approx(float(ref[0, i, j, c]), abs=1e-5)
    assert t.total == pytest.approx(t.value, abs=1e-4)  # the expansion adds up to the value


def test_the_explorer_serves_a_keras_model(saved):
    from fastapi.testclient import TestClient

    from convlens.serve import Explorer, create_app

    ex = Explorer(load_model(str(saved["chollet"][0])))
    try:
        c = TestClient(create_app(ex))
        status = c.get("/api/status").json()
        assert status["pretrained"] is True and status["input_size"] == [3, 32, 32] and status["num_classes"] == 5
        assert c.get("/api/layers").json()["total_params"] == saved["chollet"][1].count_params()
        iid = c.get("/api/images").json()[0]["id"]
        assert c.get(f"/api/images/{iid}/predict").json()[0]["label"] in "abcde"
        assert c.get(f"/api/images/{iid}/activations", params={"layer": "conv2"}).json()["shape"] == [16, 15, 15]
        assert c.get(f"/api/images/{iid}/cam", params={"layer": "conv2"}).json()["layer"] == "conv2"
        unit = c.get(f"/api/images/{iid}/unit", params={"layer": "conv2", "c": 1, "i": 5, "j": 6})
        assert unit.status_code == 200, unit.text
    finally:
        ex.close()


def test_depth_profile_weights_and_first_conv_kernels(saved, bundles, tmp_path, capsys):
    from convlens.featvis import first_layer_kernels
    from convlens.inspect.depth import depth_profile

    _, m = saved["chollet"]
    b = bundles["chollet"]
    x = b.preprocess(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    p = depth_profile(b.model, x)
    # every weight is in exactly one stage or the head: conv1 + bn1 in the first stage, conv2 in the second
    assert sum(s.weights for s in p.stages) + p.head_weights == m.count_params()
    by_stage = {s.name: s.weights for s in p.stages}
    assert by_stage["rescaling"] == 0  # the 32x32 stage: the input, rescaled
    assert by_stage["bn1"] == m.get_layer("conv1").count_params() + m.get_layer("bn1").count_params()  # 30x30
    assert p.first_conv == "conv1"
    kernel = torch.as_tensor(m.get_layer("conv1").get_weights()[0]).permute(3, 2, 0, 1)  # (8, 3, 3, 3)
    assert torch.allclose(p.kernels, kernel)
    tiles = first_layer_kernels(b.model)
    scale = kernel.abs().flatten(1).max(1).values.view(-1, 1, 1, 1)
    assert torch.allclose(tiles, (0.5 + kernel / (2 * scale)).clamp(0, 1), atol=1e-6)
    out = tmp_path / "k.png"
    assert (
        main(["filters", "--model", str(saved["chollet"][0]), "--kernels", "--layer", "auto", "--out", str(out)]) == 0
    )
    assert out.is_file() and "8 kernels of conv1" in capsys.readouterr().out


def test_a_final_softmax_layer_gives_its_input_as_logits(tmp_path):
    """keras.layers.Softmax at the end (not an activation argument): predict must not softmax twice."""
    inp = keras.Input((8, 8, 3))
    z = L.Dense(4, name="logits")(L.Flatten()(L.Conv2D(2, 3, name="c")(inp)))
    m = keras.Model(inp, L.Softmax(name="probs")(z))
    _randomize(m, 11)
    m.save(tmp_path / "sm.keras")
    b = load_model(str(tmp_path / "sm.keras"))
    assert b.meta.extra["head"] == "softmax_layer" and b.meta.num_classes == 4
    img = np.random.default_rng(1).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    ref = m.predict(_keras_input(img, 8, 1 / 255), verbose=0)[0]
    got = np.zeros_like(ref)
    for t in predict(b, [img], topk=4)[0]:
        got[t.cls] = t.prob
    np.testing.assert_allclose(got, ref, atol=1e-5)
    assert len(b.model.keras_model.get_layer("probs")._forward_pre_hooks) == 0


def test_layer_names_that_are_module_attributes(tmp_path):
    """A Keras layer named like an nn.Module attribute ('head' is common; 'forward', 'training') still works."""
    m = keras.Sequential(
        [keras.Input((6, 6, 3)), L.Conv2D(2, 3, name="forward"), L.Flatten(name="training"), L.Dense(3, name="head")]
    )
    m.save(tmp_path / "names.keras")
    b = load_model(str(tmp_path / "names.keras"))
    names = [n for n, _ in b.model.named_children()]
    assert names == ["forward_", "training_", "head"]
    assert b.model(torch.rand(1, 3, 6, 6)).shape == (1, 3) and not b.model.training
