"""predict / predict_files: folders with corrupt files, (logits, aux) outputs, clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from convlens.cli import main
from convlens.errors import InputError
from convlens.inspect.predict import predict_files

_NET = """
import torch
class Net(torch.nn.Module):
    def __init__(self, aux):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, stride=4)
        self.aux = aux
    def forward(self, x):
        logits = self.conv(x).mean((2, 3))
        return (logits, {"map": x}) if self.aux else logits
def plain():
    torch.manual_seed(0)
    return Net(False)
def with_aux():
    torch.manual_seed(0)
    return Net(True)
def maps():
    return torch.nn.Conv2d(3, 2, 3)
"""


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    (tmp_path / "net.py").write_text(_NET)
    d = tmp_path / "imgs"
    d.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)).save(d / "a.png")
    Image.fromarray(rng.integers(0, 255, (9, 9), dtype=np.uint8)).save(d / "b.png")
    (d / "corrupt.jpg").write_bytes(b"not a jpeg at all")
    return d


def test_folder_with_a_corrupt_file_skips_it(folder: Path) -> None:
    """Regression: one unreadable file in a folder made `predict` fail for the whole folder."""
    net = f"{folder.parent / 'net.py'}:plain"
    skipped: list[tuple[str, str]] = []
    res = predict_files([folder], model=net, topk=2, batch_size=1, skipped=skipped)
    assert [Path(r.image).name for r in res] == ["a.png", "b.png"]
    assert [Path(p).name for p, _ in skipped] == ["corrupt.jpg"] and "corrupt.jpg" in skipped[0][1]
    with pytest.raises(InputError, match="corrupt.jpg"):  # named explicitly: an error
        predict_files([folder / "corrupt.jpg"], model=net)
    (folder / "a.png").unlink()
    (folder / "b.png").unlink()
    with pytest.raises(InputError, match="none of the 1 image file"):
        predict_files([folder], model=net)


def test_logits_with_aux_outputs_and_non_classifiers(folder: Path) -> None:
    """Regression: a model returning (logits, aux) was rejected as 'not a classifier'."""
    plain = predict_files([folder / "a.png"], model=f"{folder.parent / 'net.py'}:plain", topk=3)
    aux = predict_files([folder / "a.png"], model=f"{folder.parent / 'net.py'}:with_aux", topk=3)
    assert plain == aux and len(plain[0].top) == 3
    with pytest.raises(InputError, match=r"not a \(N, classes\) tensor of logits \(got shape \(1, 2, 222, 222\)\)"):
        predict_files([folder / "a.png"], model=f"{folder.parent / 'net.py'}:maps")


def test_cli_warns_on_stderr_and_keeps_json_clean(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    assert main(["predict", str(folder), "--model", f"{folder.parent / 'net.py'}:plain", "--json", "--topk", "1"]) == 0
    cap = capsys.readouterr()
    assert len(json.loads(cap.out)) == 2
    skipped = [line for line in cap.err.splitlines() if line.startswith("warning: skipped")]
    assert len(skipped) == 1 and "corrupt.jpg" in skipped[0]
    assert [json.loads(cap.out)[0]["pretrained"]] == [False]  # a random-init user model
