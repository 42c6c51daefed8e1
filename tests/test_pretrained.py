"""Random weights are announced (issue 16, item 1): every model-facing command says in its JSON whether the
weights are pretrained, and a random-weights run prints ONE loud warning naming the fix (--weights FILE)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from convlens.cli import main
from convlens.errors import RandomWeightsWarning
from convlens.models import load_model

NET = """
import torch.nn as nn

def tiny():
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3),
    )
"""


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("pre")
    (d / "net.py").write_text(NET)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(d / "img.png")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        model = load_model(f"{d}/net.py:tiny").model
    torch.save(model.state_dict(), d / "w.pt")
    return d


def _commands(d, out):
    model = ["--model", f"{d}/net.py:tiny"]
    img = str(d / "img.png")
    return {
        "predict": ["predict", img, *model],
        "cam": ["cam", img, *model, "--out", str(out / "cam")],
        "summary": ["summary", *model],
        "activations": ["activations", img, *model, "--out", str(out / "act")],
        "depth-profile": ["depth-profile", img, *model, "--out", str(out / "depth")],
        "filters": [
            "filters",
            *model,
            "--layer",
            "2",
            "--channels",
            "0-1",
            "--steps",
            "2",
            "--out",
            str(out / "f.png"),
        ],
        "filters --kernels": ["filters", *model, "--kernels", "--layer", "auto", "--out", str(out / "k.png")],
        "unit": ["unit", img, *model, "--layer", "2", "--at", "1,3,4"],
        "graph": ["graph", *model],
        "top-patches": ["top-patches", img, *model, "--layer", "2", "--channels", "0-1"],
    }


def _pretrained_flags(data) -> list[bool]:
    rows = data if isinstance(data, list) else [data]
    return [r["pretrained"] for r in rows]


@pytest.mark.parametrize(
    "command",
    [
        "predict",
        "cam",
        "summary",
        "activations",
        "depth-profile",
        "filters",
        "filters --kernels",
        "unit",
        "graph",
        "top-patches",
    ],
)
def test_every_model_command_states_pretrained_and_warns_once(files, tmp_path, capsys, command):
    args = _commands(files, tmp_path)[command]
    assert main(args + ["--json"]) == 0
    cap = capsys.readouterr()
    assert _pretrained_flags(json.loads(cap.out)) and not any(_pretrained_flags(json.loads(cap.out)))
    loud = [line for line in cap.err.splitlines() if line.startswith("WARNING:")]
    assert len(loud) == 1, cap.err  # one loud line, not one per image or per load
    assert "RANDOM weights" in loud[0] and "--weights FILE" in loud[0]
    # the same command with trained weights: pretrained, and no warning at all
    assert main(args + ["--weights", str(files / "w.pt"), "--json"]) == 0
    cap = capsys.readouterr()
    assert all(_pretrained_flags(json.loads(cap.out)))
    assert "RANDOM" not in cap.err


def test_cam_on_many_images_still_warns_once(files, tmp_path, capsys):
    for k in range(3):
        Image.open(files / "img.png").save(tmp_path / f"i{k}.png")
    cmd = ["cam", str(tmp_path), "--model", f"{files}/net.py:tiny", "--method", "gradcam,layercam"]
    assert main(cmd + ["--out", str(tmp_path / "o"), "--json"]) == 0
    cap = capsys.readouterr()
    assert [r["pretrained"] for r in json.loads(cap.out)] == [False] * 6
    assert cap.err.count("WARNING:") == 1


def test_report_summary_states_pretrained(files, tmp_path, capsys):
    out = tmp_path / "rep"
    cmd = ["report", str(files / "img.png"), "--model", f"{files}/net.py:tiny", "--methods", "gradcam"]
    assert main(cmd + ["--no-metrics", "--filter-steps", "1", "--layer", "2", "--out", str(out)]) == 0
    assert json.loads((out / "summary.json").read_text())["pretrained"] is False
    err = capsys.readouterr().err
    assert err.count("WARNING:") == 1 and "--weights FILE" in err
    assert "RANDOM weights" in (out / "index.html").read_text()


def test_bundle_attribute_and_library_warning(files):
    with pytest.warns(RandomWeightsWarning, match="--weights FILE"):
        b = load_model("resnet18")
    assert b.pretrained is False and b.meta.pretrained is False
    with warnings.catch_warnings():
        warnings.simplefilter("error", RandomWeightsWarning)  # trained weights: no warning
        assert load_model("efficientnet_lite0").pretrained is True
        assert load_model(f"{files}/net.py:tiny", weights=files / "w.pt").pretrained is True


def test_main_restores_the_callers_warning_display(files, capsys):
    before = warnings.showwarning
    assert main(["summary", "--model", f"{files}/net.py:tiny", "--json"]) == 0
    assert warnings.showwarning is before
    capsys.readouterr()


@pytest.mark.slow
def test_train_transfer_strategy_on_random_backbone_warns_it_is_not_transfer_learning(tmp_path, capsys):
    from train_helpers import TINY_MODEL, make_folder

    folder = make_folder(tmp_path / "data", n_per_class=6, size=16)
    base = ["train", "--data", str(folder), "--model", TINY_MODEL, "--epochs", "1", "--batch-size", "4"]
    base += ["--image-size", "16", "--json"]
    assert main(base + ["--strategy", "features", "--out", str(tmp_path / "f")]) == 0
    cap = capsys.readouterr()
    assert json.loads(cap.out)["pretrained"] is False
    loud = [line for line in cap.err.splitlines() if line.startswith("WARNING:")]
    assert len(loud) == 1 and "NOT transfer learning" in loud[0] and "--weights FILE" in loud[0], cap.err
    # from scratch, random init is the point: no warning
    assert main(base + ["--strategy", "scratch", "--out", str(tmp_path / "s")]) == 0
    cap = capsys.readouterr()
    assert json.loads(cap.out)["pretrained"] is False and "WARNING" not in cap.err
    # trained weights for the backbone: transfer learning, pretrained, silent
    w = tmp_path / "s" / "model.safetensors"
    assert main(base + ["--strategy", "features", "--weights", str(w), "--out", str(tmp_path / "w")]) == 0
    cap = capsys.readouterr()
    assert json.loads(cap.out)["pretrained"] is True and "WARNING" not in cap.err
