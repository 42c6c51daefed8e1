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
class Out:  # a Hugging Face-style output object
    def __init__(self, logits):
        self.logits = logits
class Wrapped(torch.nn.Module):
    def __init__(self, kind):
        super().__init__()
        self.net = Net(False)
        self.kind = kind
    def forward(self, x):
        f = self.net.conv(x)
        s = f.mean((2, 3))  # the same logits as Net(False)
        return {"features": f, "logits": s} if self.kind == "dict" else (s, f) if self.kind == "tuple" else Out(s)
def dict_out():
    torch.manual_seed(0)
    return Wrapped("dict")
def tuple_out():
    torch.manual_seed(0)
    return Wrapped("tuple")
def object_out():
    torch.manual_seed(0)
    return Wrapped("object")
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
    run = predict_files([folder], model=net, topk=2, batch_size=1)
    res = run.predictions
    assert [Path(r.image).name for r in res] == ["a.png", "b.png"]
    assert [Path(s.path).name for s in run.skipped] == ["corrupt.jpg"] and "corrupt.jpg" in run.skipped[0].reason
    with pytest.raises(InputError, match="corrupt.jpg"):  # named explicitly: an error
        predict_files([folder / "corrupt.jpg"], model=net)
    (folder / "a.png").unlink()
    (folder / "b.png").unlink()
    with pytest.raises(InputError, match="none of the 1 image file"):
        predict_files([folder], model=net)


def test_logits_with_aux_outputs_and_non_classifiers(folder: Path) -> None:
    """Regression: a model returning (logits, aux) was rejected as 'not a classifier'."""
    plain = predict_files([folder / "a.png"], model=f"{folder.parent / 'net.py'}:plain", topk=3).predictions
    aux = predict_files([folder / "a.png"], model=f"{folder.parent / 'net.py'}:with_aux", topk=3).predictions
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


def test_models_logits_rule_on_every_output_form() -> None:
    import torch

    from convlens.models import logits

    s = torch.randn(3, 5)
    f = torch.randn(3, 4, 2, 2)

    class HFOut:
        def __init__(self, logits):
            self.logits = logits

    assert logits(s) is s and logits((s, f)) is s and logits([f, s]) is s
    assert logits({"features": f, "logits": s}) is s and logits({"features": f, "out": s}) is s
    assert logits(HFOut(s)) is s
    with pytest.raises(InputError, match=r"got a dict with keys 'a', 'b'"):
        logits({"a": s, "b": s})  # two candidates, no 'logits': ambiguous
    assert logits(f, required=False) is None


@pytest.mark.parametrize("factory", ["dict_out", "tuple_out", "object_out"])
def test_predict_and_report_on_dict_tuple_and_object_output_models(
    folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], factory: str
) -> None:
    """`convlens predict` refused a {'logits': ...} model that `cam` explained ('got a dict')."""
    import json

    net = f"{folder.parent / 'net.py'}"
    ref = predict_files([folder / "a.png"], model=f"{net}:plain", topk=2).predictions
    assert predict_files([folder / "a.png"], model=f"{net}:{factory}", topk=2).predictions == ref  # same scores
    assert main(["predict", str(folder / "a.png"), "--model", f"{net}:{factory}", "--json", "--topk", "2"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [t["class"] for t in rows[0]["top"]] == [t.cls for t in ref[0].top]
    out = tmp_path / f"rep_{factory}"
    args = ["report", str(folder / "a.png"), "--model", f"{net}:{factory}", "--methods", "gradcam"]
    assert main([*args, "--no-metrics", "--filter-steps", "1", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ok"] is True and "failed" not in summary or not summary["failed"]
