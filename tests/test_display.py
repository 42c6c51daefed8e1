"""Rich display in notebooks: every main result type renders itself through ``_repr_html_`` with the
renderers the report uses (``convlens.plot.html``): inline images, no files written, numbers that
match independent computations."""

from __future__ import annotations

import base64
import io
import os
import re

import numpy as np
import pytest
import torch
from PIL import Image


def _images(html: str) -> list[Image.Image]:
    return [
        Image.open(io.BytesIO(base64.b64decode(m)))
        for m in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    ]


@pytest.fixture
def in_empty_dir(tmp_path):
    """Run in an empty folder and check nothing was written there."""
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        yield tmp_path
    finally:
        os.chdir(cwd)
    assert list(tmp_path.iterdir()) == []


def test_summary_html_has_the_real_totals(in_empty_dir):
    from convlens.inspect import summarize

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 3))
    html = summarize(net, (3, 17, 17))._repr_html_()
    total = sum(p.numel() for p in net.parameters())  # torch's own count
    assert f"total params {total:,}" in html
    # conv MACs by hand: 8x8 outputs x 8 filters x 3*3*3 taps + 6x6 x 4 x 8*3*3
    assert f"{8 * 8 * 8 * 27 + 6 * 6 * 4 * 72:,}" in html
    assert "<table" in html and "8x8x8" in html


def test_shape_html_shows_63_and_the_reason(in_empty_dir):
    from convlens.arith import output_shape

    html = output_shape((128, 128), 3, stride=2, in_channels=32, out_channels=16)._repr_html_()
    assert "output 63x63x16" in html and "(128 + 0 + 0 - 3) / 2 + 1 = 63.5" in html
    html_tf = output_shape((128, 128), 3, stride=2, padding="same", convention="tf")._repr_html_()
    assert "output 64x64" in html_tf


def test_conv_trace_html_adds_up(in_empty_dir):
    from convlens.arith import trace

    x = np.arange(2 * 4 * 4, dtype=float).reshape(2, 4, 4)
    w = np.ones((1, 2, 2, 2))
    t = trace(x, w, 1, 1, bias=np.array([0.5]))
    ref = torch.nn.functional.conv2d(torch.tensor(x)[None], torch.tensor(w), torch.tensor([0.5], dtype=torch.float64))[
        0, 0, 1, 1
    ].item()
    html = t._repr_html_()
    assert f"= {ref:.4g}" in html


def test_unit_trace_html(in_empty_dir):
    from convlens.inspect import trace_unit

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3, padding=1))
    x = torch.randn(1, 2, 6, 6)
    html = trace_unit(net, x, "0", (1, 2, 3))._repr_html_()
    assert f"model value {net(x)[0, 1, 2, 3].item():.4g}" in html and "(ok)" in html
    assert len(_images(html)) == 1


def test_activations_html_draws_each_spatial_layer(in_empty_dir):
    from convlens.inspect import get_activations

    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 6, 3),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(6, 2),
    )
    acts = get_activations(net, torch.randn(1, 3, 12, 12), ["0", "2", "4"])
    assert isinstance(acts, dict) and list(acts) == ["0", "2", "4"]
    html = acts._repr_html_()
    assert len(_images(html)) == 2 and "not a spatial map" in html  # two maps drawn; the linear output listed


def test_cam_html_one_tile_per_image(in_empty_dir):
    from convlens.explain import explain

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(4, 3),
    )
    res = explain(net, torch.randn(3, 3, 8, 8), "gradcam", "0", targets=[0, 1, 2])
    html = res._repr_html_()
    assert "gradcam on 0: 3 map(s)" in html and "class 2" in html
    (img,) = _images(html)
    assert img.width > img.height  # three tiles side by side


def test_featvis_html(in_empty_dir):
    from convlens.featvis import visualize

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())
    res = visualize(net, "1", [0, 2], steps=2, size=16, return_result=True)
    html = res._repr_html_()
    assert len(_images(html)) == 1  # one grid, titles drawn inside the image
    assert "feature visualization of 1, channels 0, 2" in html


def test_training_html(in_empty_dir):
    from convlens.train.loop import TrainConfig, TrainResult, TrainRun

    hist = [
        {
            "epoch": e,
            "stage": "head",
            "train_loss": 1.0 / e,
            "val_loss": 1.2 / e,
            "train_accuracy": 0.5,
            "val_accuracy": 0.4 + 0.1 * e,
        }
        for e in (1, 2)
    ]
    run = TrainRun(
        result=TrainResult("head", 2, 0.5, 0.6, 0.6, 123.0),
        history=hist,
        confusion=[[1, 0], [0, 1]],
        classes=["a", "b"],
        model=torch.nn.Identity(),
        head_name="fc",
        config=TrainConfig(),
        seconds=3.0,
    )
    html = run._repr_html_()
    assert "training run (head, 2 epochs" in html and len(_images(html)) == 1
