"""The HTML/JSON writers (self-contained, escaped, valid JSON) and the per-image report."""

from __future__ import annotations

import json
import re
import time

import numpy as np
import pytest
from matplotlib.figure import Figure

from convlens.report import write_tour_report
from convlens.report.html import format_value, write_page
from convlens.tour import Section, Table, TourFigure, TourResult


def _fig() -> Figure:
    fig = Figure(figsize=(2, 2))
    fig.add_subplot(1, 1, 1).plot([0, 1], [1, 0])
    return fig


def _sections():
    ok = Section(
        "q1",
        1,
        "A <b>bold</b> title",
        "Is <script> escaped?",
        results={"nan": float("nan"), "arr": np.arange(3), "x": 0.5},
        tables=[Table(["name", "value"], [["a&b", 1.23456789]], caption="cap")],
        figures=[TourFigure("first", _fig()), TourFigure("second", _fig())],
        explanation="One.\n\nTwo <i>.",
        api="f(x)",
        cli="convlens f",
    )
    bad = Section(
        "q2", 2, "Broken", "Why?", status="error", error="ValueError: boom", traceback="Traceback ...\nValueError: boom"
    )
    return [ok, bad]


def test_page_is_self_contained_and_escaped(tmp_path):
    page = write_page(_sections(), tmp_path, title="t")
    html = page.read_text()
    assert 'id="q1"' in html and 'id="q2"' in html
    assert 'href="#q1"' in html and 'href="#q2"' in html
    assert "<script" not in html.lower() and "&lt;script&gt;" in html  # user text escaped, no scripts
    assert "&lt;b&gt;bold&lt;/b&gt;" in html and "a&amp;b" in html
    assert not re.search(r'(src|href)="(https?:)?//', html)  # nothing from the network
    assert "This section failed: ValueError: boom" in html
    # figures saved next to the page, referenced by relative name, released from memory
    for name in ("q1-1.png", "q1-2.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f'src="{name}"' in html
    assert all(f.figure is None and f.file for f in _sections_saved(tmp_path))


def _sections_saved(tmp_path):
    secs = _sections()
    write_page(secs, tmp_path / "again", title="t")
    return secs[0].figures


def test_tour_summary_json_is_strict(tmp_path):
    secs = _sections()
    tour = TourResult(secs, quick=True, seed=0, device="cpu", seconds=1.5)
    write_tour_report(tour, tmp_path)
    text = (tmp_path / "summary.json").read_text()
    data = json.loads(text)  # strict JSON: NaN became null
    assert "NaN" not in text
    assert data["ok"] is False and data["failed"] == ["q2"] and data["mode"] == "quick"
    s1 = data["sections"][0]
    assert s1["results"] == {"nan": None, "arr": [0, 1, 2], "x": 0.5}
    assert s1["figures"] == [{"file": "q1-1.png", "caption": "first"}, {"file": "q1-2.png", "caption": "second"}]
    assert s1["tables"][0]["rows"] == [["a&b", 1.23456789]]
    assert data["sections"][1]["status"] == "error" and data["sections"][1]["error"] == "ValueError: boom"


def test_format_value():
    assert format_value(1 / 3) == "0.3333"
    assert format_value(12345678.0) == "1.235e+07"
    assert format_value(np.float32(0.5)) == "0.5"
    assert format_value(list(range(20))).endswith(", ...]")
    assert format_value(True) == "True"


# ---------------------------------------------------------------- the per-image report (convlens report)

_TINY = """
import torch.nn as nn

def tiny():
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=4, padding=1), nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(16, 16, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5),
    )
"""


@pytest.fixture()
def tiny_model(tmp_path):
    import torch

    torch.manual_seed(0)
    f = tmp_path / "tiny.py"
    f.write_text(_TINY)
    return f"{f}:tiny"


@pytest.mark.slow
def test_image_report_cli(tmp_path, tiny_model, chelsea, coffee):
    from PIL import Image

    from convlens.cli import main

    imgs = tmp_path / "imgs"
    imgs.mkdir()
    Image.fromarray(chelsea).save(imgs / "chelsea.png")
    Image.fromarray(coffee).save(imgs / "coffee.jpg")
    out = tmp_path / "rep"
    cpu0 = time.process_time()
    rc = main(
        [
            "report",
            str(imgs),
            "--model",
            tiny_model,
            "--out",
            str(out),
            "--methods",
            "gradcam,eigencam",
            "--filter-steps",
            "2",
            "--topk",
            "3",
        ]
    )
    assert rc == 0
    cpu = time.process_time() - cpu0
    data = json.loads((out / "summary.json").read_text())
    assert [s["id"] for s in data["sections"]] == ["img1", "img2"] and data["ok"] is True
    # each section's CPU time is measured (it was always 0.0), and all of them fit in the whole run's
    assert all(s["cpu_seconds"] > 0 for s in data["sections"])
    assert sum(s["cpu_seconds"] for s in data["sections"]) <= cpu
    for s in data["sections"]:
        assert s["status"] == "ok", s["error"]
        assert len(s["tables"][0]["rows"]) == 3  # top-3 prediction
        assert s["tables"][-1]["columns"][0] == "method" and [r[0] for r in s["tables"][-1]["rows"]] == [
            "gradcam",
            "eigencam",
        ]
        for r in s["tables"][-1]["rows"]:
            assert 0.0 <= r[1] <= 1.0 and 0.0 <= r[2] <= 1.0  # AUCs of probabilities
        assert len(s["figures"]) >= 4
        for f in s["figures"]:
            assert (out / f["file"]).stat().st_size > 1000
    html = (out / "index.html").read_text()
    assert 'id="img1"' in html and 'id="img2"' in html and "<script" not in html


@pytest.mark.slow
def test_image_report_corrupt_file_in_a_folder_is_skipped_and_reported(tmp_path, tiny_model, chelsea, capsys):
    """As `cam` and `predict` do (one policy, convlens.io.iter_image_batches): a corrupt file inside a
    folder is skipped and reported; named explicitly it is an error."""
    from PIL import Image

    from convlens.cli import main
    from convlens.errors import InputError
    from convlens.report.image import image_report

    imgs = tmp_path / "imgs"
    imgs.mkdir()
    Image.fromarray(chelsea).save(imgs / "a.png")
    (imgs / "b.jpg").write_bytes(b"\xff\xd8\xff\xe0 a truncated jpeg")
    Image.fromarray(chelsea[::2, ::2]).save(imgs / "c.png")
    args = ["report", str(imgs), "--model", tiny_model, "--methods", "gradcam", "--no-metrics", "--filter-steps", "1"]
    assert main([*args, "--out", str(tmp_path / "rep")]) == 0
    err = capsys.readouterr().err
    assert "warning: skipped" in err and "b.jpg" in err
    data = json.loads((tmp_path / "rep" / "summary.json").read_text())
    assert [(s["id"], s["status"], s["title"]) for s in data["sections"]] == [
        ("img1", "ok", str(imgs / "a.png")),
        ("img2", "ok", str(imgs / "c.png")),
    ]
    assert [s["path"] for s in data["skipped"]] == [str(imgs / "b.jpg")] and data["failed"] == []
    assert "b.jpg" in data["skipped"][0]["reason"] and "b.jpg" in (tmp_path / "rep" / "index.html").read_text()
    with pytest.raises(InputError, match="b.jpg"):
        image_report([imgs / "b.jpg"], tmp_path / "rep2", model=tiny_model, methods=["gradcam"])


def test_image_report_bad_arguments(tmp_path, tiny_model):
    from convlens.errors import ConvlensError
    from convlens.report.image import image_report

    (tmp_path / "empty").mkdir()
    with pytest.raises(ConvlensError, match="gradcma|method"):
        image_report([tmp_path], tmp_path / "o", model=tiny_model, methods=["gradcma"])
    with pytest.raises(ConvlensError):
        image_report([tmp_path / "empty"], tmp_path / "o", model=tiny_model, methods=["gradcam"])
    # an unknown layer is the same mistake for every image: one error up front, not a report of N failed sections
    import numpy as np
    from PIL import Image

    from convlens.errors import LayerError

    Image.fromarray(np.full((16, 16, 3), 100, np.uint8)).save(tmp_path / "g.png")
    with pytest.raises(ConvlensError, match="at least one CAM method"):  # --methods "": once, not per image
        image_report([tmp_path / "g.png"], tmp_path / "o2", model=tiny_model, methods=[])
    with pytest.raises(LayerError, match="nosuch"):
        image_report([tmp_path / "g.png"], tmp_path / "o2", model=tiny_model, methods=["gradcam"], layer="nosuch")
    assert not (tmp_path / "o2").exists()


@pytest.mark.parametrize(
    "module",
    [
        "convlens.tour",
        "convlens.tour.core",
        "convlens.tour.course",
        "convlens.report.page",
        "convlens.report",
        "convlens.report.html",
        "convlens.plot.tour",
    ],
)
def test_docstring_examples(module):
    import doctest
    import importlib

    res = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert res.failed == 0 and res.attempted > 0
