"""`convlens cam`: files written, JSON contract, errors -> exit 2 with one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from convlens.cli import main
from convlens.cli.explain import all_methods
from convlens.explain import METHODS


@pytest.fixture(scope="module")
def img_dir(tmp_path_factory, chelsea, coffee):
    d = tmp_path_factory.mktemp("imgs")
    Image.fromarray(chelsea).save(d / "chelsea.png")
    Image.fromarray(coffee).save(d / "coffee.jpg")
    return d


def _json(capsys, args):
    assert main(args) == 0
    return json.loads(capsys.readouterr().out)


def test_cam_single_image_json_and_files(img_dir, tmp_path, capsys):
    rows = _json(capsys, ["cam", str(img_dir / "chelsea.png"), "--out", str(tmp_path), "--json"])
    assert len(rows) == 1
    r = rows[0]
    assert {"image", "target", "label", "score", "method", "layer", "map_file"} <= set(r) and "metrics" not in r
    assert (r["label"], r["target"], r["method"], r["layer"]) == ("Egyptian cat", 285, "gradcam", "bn2")
    assert 0.7 < r["score"] < 0.9
    m = np.load(r["map_file"])
    assert m.shape == (224, 224) and m.dtype == np.float32 and m.min() >= 0 and m.max() == pytest.approx(1.0)
    png = np.asarray(Image.open(r["overlay_file"]))
    assert png.shape == (224, 224, 3)


def test_cam_folder_several_methods_grid_and_target(img_dir, tmp_path, capsys):
    rows = _json(
        capsys,
        ["cam", str(img_dir), "--method", "gradcam,eigencam", "--target", "285", "--out", str(tmp_path), "--json"],
    )
    assert [(p["image"].rsplit("/", 1)[-1], p["method"]) for p in rows] == [
        ("chelsea.png", "gradcam"),
        ("chelsea.png", "eigencam"),
        ("coffee.jpg", "gradcam"),
        ("coffee.jpg", "eigencam"),
    ]
    assert all(p["target"] == 285 for p in rows)
    assert (tmp_path / "chelsea_methods.png").is_file() and (tmp_path / "coffee_eigencam.npy").is_file()


@pytest.mark.slow
def test_cam_metrics(img_dir, tmp_path, capsys):
    rows = _json(capsys, ["cam", str(img_dir / "coffee.jpg"), "--out", str(tmp_path), "--metrics", "--json"])
    met = rows[0]["metrics"]
    assert set(met) == {"deletion_auc", "insertion_auc", "drop_percent", "increase", "road_morf", "road_lerf"}
    assert 0 <= met["deletion_auc"] < met["insertion_auc"] <= 1


def test_cam_text_output(img_dir, tmp_path, capsys):
    assert main(["cam", str(img_dir / "chelsea.png"), "--method", "hirescam", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "Egyptian cat" in out and "hirescam" in out


@pytest.mark.parametrize(
    "args, match",
    [
        (["--method", "gradcm"], "did you mean 'gradcam'"),
        (["--target", "cat"], "--target"),
        (["--target", "5000"], "--target"),
        (["--layer", "nope"], "layer 'nope'"),
        (["--cmap", "viridis"], "--cmap"),
    ],
)
def test_cam_errors_exit_2(img_dir, tmp_path, capsys, args, match):
    assert main(["cam", str(img_dir / "chelsea.png"), "--out", str(tmp_path), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and match in err


def test_cam_missing_file_exit_2(tmp_path, capsys):
    assert main(["cam", str(tmp_path / "none.png"), "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_all_means_every_registered_method_but_the_sampled_ones():
    assert all_methods() == [m for m in METHODS if m not in ("sscam", "iscam")]


def test_cam_folder_with_corrupt_files_skips_and_warns(img_dir, tmp_path, capsys):
    d = tmp_path / "mixed"
    d.mkdir()
    (d / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"garbage" * 20)  # truncated JPEG
    (d / "empty.png").write_bytes(b"")
    Image.fromarray(np.asarray(Image.open(img_dir / "chelsea.png"))[:40, :300]).save(d / "wide.png")  # another size
    Image.open(img_dir / "chelsea.png").convert("L").save(d / "gray.png")
    out = tmp_path / "out"
    assert main(["cam", str(d), "--method", "eigencam", "--batch-size", "2", "--out", str(out), "--json"]) == 0
    cap = capsys.readouterr()
    rows = json.loads(cap.out)
    assert sorted(r["image"].rsplit("/", 1)[-1] for r in rows) == ["gray.png", "wide.png"]
    assert "bad.jpg" in cap.err and "empty.png" in cap.err and cap.err.count("warning: skipped") == 2
    assert (out / "gray_eigencam.npy").is_file() and (out / "wide_eigencam.npy").is_file()


def test_cam_only_unreadable_files_exit_2(tmp_path, capsys):
    (tmp_path / "bad.png").write_bytes(b"not an image")
    assert main(["cam", str(tmp_path / "bad.png"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "bad.png" in err and err.count("\n") == 1  # named: an error
    assert main(["cam", str(tmp_path), "--out", str(tmp_path / "o2")]) == 2  # in a folder: all skipped
    assert "none of the 1 image file(s) could be read" in capsys.readouterr().err


_DICT_MODEL = """
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4, 6)

    def forward(self, x):
        f = torch.relu(self.conv(x))
        return {"features": f, "logits": self.head(f.mean((2, 3)))}


def build(num_classes=None):
    torch.manual_seed(0)
    return Net()
"""


def test_cam_dict_output_model_file_with_target(img_dir, tmp_path, capsys):
    """A {'logits': ...} model could not be explained from the CLI, and --target said 'must be < 0'."""
    f = tmp_path / "dictnet.py"
    f.write_text(_DICT_MODEL)
    args = [
        "cam",
        str(img_dir / "chelsea.png"),
        "--model",
        f"{f}:build",
        "--method",
        "gradcam,scorecam",
        "--out",
        str(tmp_path / "o"),
    ]
    rows = _json(capsys, [*args, "--target", "5", "--json"])
    assert [(r["method"], r["target"], r["layer"]) for r in rows] == [("gradcam", 5, "conv"), ("scorecam", 5, "conv")]
    assert main([*args, "--target", "6"]) == 2
    assert "got 6" in capsys.readouterr().err


def test_cam_writes_a_labelled_figure_per_map(img_dir, tmp_path, capsys):
    rows = _json(capsys, ["cam", str(img_dir / "chelsea.png"), "--out", str(tmp_path), "--json"])
    fig = np.asarray(Image.open(rows[0]["figure_file"]))
    assert fig.ndim == 3 and fig.shape[1] > 224  # the overlay plus its colorbar, title above
