"""CAMs over folders: explain.folder.cam_files and `convlens cam DIR --out OUT` -- index.jsonl, atomic
outputs, --resume, targets by name/topK/box/mask/like, --sanity, and torchrun with 2 CPU processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from convlens.cli import main
from convlens.errors import InputError
from convlens.explain.folder import cam_files
from convlens.explain.targets import parse_target

TINY = """
import torch
def make():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, stride=2, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 5))
"""


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("many")
    g = np.random.default_rng(0)
    for i in range(12):
        Image.fromarray(g.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(d / f"img{i:02d}.png")
    (d / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return d


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    p = tmp_path_factory.mktemp("model") / "tiny.py"
    p.write_text(TINY)
    return f"{p}:make"


def _index(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "index.jsonl").read_text().splitlines()]


def test_folder_index_matches_json_and_resume_skips(folder, tiny, tmp_path, capsys):
    out = tmp_path / "o"
    args = ["cam", str(folder), "--model", tiny, "--out", str(out), "--method", "gradcam,saliency",
            "--batch-size", "5", "--workers", "2", "--json"]  # fmt: skip
    assert main(args) == 0
    cap = capsys.readouterr()
    rows = json.loads(cap.out)
    assert "skipped unreadable file" in cap.err and "broken.jpg" in cap.err
    assert len(rows) == 24 and _index(out) == rows  # one line per image and method, the --json record
    assert [Path(r["image"]).name for r in rows[::2]] == [f"img{i:02d}.png" for i in range(12)]
    assert {r["method"] for r in rows} == {"gradcam", "saliency"}
    assert not list(out.glob(".*.tmp")) and not list((out / ".records").glob(".*.tmp"))
    m = np.load(rows[1]["map_file"])
    assert m.shape == (224, 224) and m.min() >= 0 and m.max() <= 1
    # a rerun with --resume recomputes nothing: outputs untouched, index identical
    stamp = {p: p.stat().st_mtime_ns for p in out.glob("*.npy")}
    os.remove(out / "img03_gradcam.npy")  # ... except an image whose record is gone
    os.remove(out / ".records" / "img03_gradcam.json")
    assert main([*args, "--resume"]) == 0
    rows2 = json.loads(capsys.readouterr().out)
    assert rows2 == rows and _index(out) == rows
    changed = [p.name for p, t in stamp.items() if p.exists() and p.stat().st_mtime_ns != t]
    assert sorted(changed) == ["img03_gradcam.npy", "img03_saliency.npy"]  # that image only, rewritten


def test_cam_files_returns_records_and_rate(folder, tiny, tmp_path):
    res = cam_files([folder / "img00.png", folder / "img01.png"], model=tiny, out=tmp_path, workers=0)
    assert [Path(r.image).name for r in res.records] == ["img00.png", "img01.png"]
    assert res.images == 2 and res.resumed == 0 and res.images_per_second > 0
    assert all(Path(r.figure_file).is_file() for r in res.records)  # a small run gets labelled figures
    quick = cam_files([folder / "img02.png"], model=tiny, out=tmp_path / "q", workers=0, figures=False)
    assert quick.records[0].figure_file is None and not list((tmp_path / "q").glob("*_labelled.png"))
    with pytest.raises(InputError, match="broken.jpg"):  # named explicitly: its own error
        cam_files([folder / "broken.jpg"], model=tiny, out=tmp_path / "b", workers=0)


def test_targets_by_name_topk_and_errors(lite0):
    assert parse_target("Egyptian CAT", lite0) == 285
    assert parse_target("top2", lite0).k == 2
    with pytest.raises(InputError, match="did you mean 'Egyptian cat'"):
        parse_target("egyptain cat", lite0, what="--target")
    with pytest.raises(InputError, match="box:x0,y0,x1,y1"):
        parse_target("box:1,2,3", lite0)
    with pytest.raises(InputError, match="< 1000"):
        parse_target(1000, lite0)


def test_cli_target_name_and_top2(tmp_path, capsys, chelsea):
    Image.fromarray(chelsea).save(tmp_path / "c.png")
    assert main(["cam", str(tmp_path / "c.png"), "--out", str(tmp_path / "o"), "--target", "tabby", "--json"]) == 0
    (r,) = json.loads(capsys.readouterr().out)
    assert (r["target"], r["label"]) == (281, "tabby")
    assert main(["cam", str(tmp_path / "c.png"), "--out", str(tmp_path / "o"), "--target", "top2", "--json"]) == 0
    (r2,) = json.loads(capsys.readouterr().out)
    import torch as _t

    from convlens.models import load_model

    b = load_model("efficientnet_lite0")
    with _t.no_grad():
        second = int(b.model(b.preprocess([chelsea])).argsort(1, descending=True)[0, 1])
    assert r2["target"] == second != 285


@pytest.mark.slow
def test_cli_sanity_json(tmp_path, capsys, chelsea):
    Image.fromarray(chelsea).save(tmp_path / "c.png")
    assert main(["cam", str(tmp_path / "c.png"), "--out", str(tmp_path / "o"), "--sanity", "--json"]) == 0
    (r,) = json.loads(capsys.readouterr().out)
    s = r["sanity"]
    assert set(s) == {"layers", "spearman", "ssim"} and len(s["layers"]) == len(s["spearman"]) == len(s["ssim"])
    assert s["layers"][0] == "classifier" and s["spearman"][0] < 0.5  # decorrelates once the top is random


def _torchrun(folder, tiny, out, *extra):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "convlens",
           "cam", str(folder), "--model", tiny, "--out", str(out), "--workers", "0", "--batch-size", "1", *extra]  # fmt: skip
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_torchrun_two_cpu_processes_kill_one_rank_then_resume(folder, tiny, tmp_path):
    out = tmp_path / "dist"
    p = _torchrun(folder, tiny, out)
    # kill one worker once the set is under way (torchrun then stops the other)
    deadline = time.time() + 120
    while time.time() < deadline and p.poll() is None and len(list((out / ".records").glob("*.json"))) < 2:
        time.sleep(0.05)
    kids = subprocess.run(["pgrep", "-P", str(p.pid)], capture_output=True, text=True).stdout.split()
    if p.poll() is None and kids:
        os.kill(int(kids[-1]), signal.SIGKILL)
    p.communicate(timeout=300)
    p2 = _torchrun(folder, tiny, out, "--resume", "--json")
    stdout, stderr = p2.communicate(timeout=300)
    assert p2.returncode == 0, stderr
    rows = json.loads(stdout)
    names = [Path(r["image"]).name for r in rows]
    assert names == [f"img{i:02d}.png" for i in range(12)]  # complete, in order, no duplicates
    assert _index(out) == rows and len(list((out / ".records").glob("*.json"))) == 12
    single = cam_files([folder], model=tiny, out=tmp_path / "one", workers=0)
    for a, b in zip(rows, single.records, strict=True):
        assert a["target"] == b.target and np.allclose(np.load(a["map_file"]), np.load(b.map_file), atol=1e-5)
    _ = torch
