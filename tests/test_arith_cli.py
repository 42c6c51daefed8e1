"""CLI contract of `convlens shape`, `conv` and `pool`: JSON keys, human derivation, exit 2 on bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from convlens.cli import main

X3 = [[[1, 1, 1], [1, 1, 1], [1, 1, 1]], [[2, 2, 2], [2, 2, 2], [2, 2, 2]], [[1, 1, 1], [1, 1, 1], [1, 1, 1]]]
K3 = [[[1, 1, 1], [1, 1, 1], [1, 1, 1]], [[1, 1, 1], [1, 1, 1], [1, 1, 1]], [[2, 2, 2], [2, 2, 2], [2, 2, 2]]]


def run(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_shape_json_contract(capsys):
    code, out, err = run(
        capsys, "shape", "--input", "128x128x32", "--filters", "16", "--kernel", "3", "--stride", "2", "--json"
    )
    assert code == 0 and err == ""
    d = json.loads(out)
    assert d["output"] == [63, 63, 16]
    assert d["padding"] == [0, 0, 0, 0]
    assert "floor" in d["formula"]
    assert d["axes"][0]["exact"] == 63.5 and d["axes"][0]["uncovered"] == 1
    assert d["cost"]["params"] == 16 * 32 * 9 + 16
    assert d["cost"]["macs"] == 63 * 63 * 16 * 32 * 9


def test_shape_tf_same_and_channels_first(capsys):
    code, out, _ = run(
        capsys,
        "shape",
        "--input",
        "32x128x128",
        "--channels-first",
        "--filters",
        "16",
        "--kernel",
        "3",
        "--stride",
        "2",
        "--padding",
        "same",
        "--convention",
        "tf",
        "--json",
    )
    d = json.loads(out)
    assert code == 0 and d["output"] == [64, 64, 16] and d["padding"] == [0, 1, 0, 1]


def test_shape_human_shows_derivation_and_why_not_64(capsys):
    code, out, _ = run(capsys, "shape", "--input", "128x128x32", "--filters", "16", "--kernel", "3", "--stride", "2")
    assert code == 0
    for needle in (
        "(128 + 0 + 0 - 3) / 2 + 1 = 63.5 -> floor -> 63",
        "not 64",
        "SAME",
        "63x63x16",
        "MACs",
        "not counted",
    ):
        assert needle in out


@pytest.mark.parametrize("op,want", [("maxpool", [2, 2, 3]), ("avgpool", [2, 2, 3])])
def test_shape_pool_ops(capsys, op, want):
    code, out, _ = run(capsys, "shape", "--input", "4x4x3", "--kernel", "2", "--op", op, "--json")
    assert code == 0 and json.loads(out)["output"] == want


def test_conv_trace_json_contract(capsys):
    code, out, err = run(
        capsys, "conv", "--input", json.dumps(X3), "--kernel", json.dumps(K3), "--trace", "0,0", "--json"
    )
    assert code == 0 and err == ""
    d = json.loads(out)
    assert d["output"] == [[45.0]]
    t = d["trace"]
    assert [c["channel"] for c in t["channels"]] == [0, 1, 2]
    assert [c["sum"] for c in t["channels"]] == [9.0, 18.0, 18.0]
    assert t["bias"] == 0.0 and t["total"] == 45.0


def test_conv_files_bias_and_human_trace(capsys, tmp_path):
    x = np.random.default_rng(1).standard_normal((2, 5, 5))
    k = np.random.default_rng(2).standard_normal((3, 2, 3, 3))
    np.save(tmp_path / "x.npy", x)
    (tmp_path / "k.json").write_text(json.dumps(k.tolist()))
    code, out, _ = run(
        capsys,
        "conv",
        "--input",
        str(tmp_path / "x.npy"),
        "--kernel",
        str(tmp_path / "k.json"),
        "--bias",
        "[0.5, -1, 2]",
        "--padding",
        "1",
        "--stride",
        "2",
        "--json",
    )
    assert code == 0
    want = F.conv2d(
        torch.from_numpy(x)[None],
        torch.from_numpy(k),
        torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64),
        stride=2,
        padding=1,
    )[0].numpy()
    np.testing.assert_allclose(np.array(json.loads(out)["output"]), want, atol=1e-12)
    code, out, _ = run(
        capsys,
        "conv",
        "--input",
        str(tmp_path / "x.npy"),
        "--kernel",
        str(tmp_path / "k.json"),
        "--padding",
        "1",
        "--trace",
        "0,0",
        "--filter",
        "2",
    )
    assert code == 0
    assert "channel" in out and "total" in out and "*" in out  # padded cells are marked


def test_pool_json(capsys):
    x = [[1, 3, 2, 4], [5, 6, 7, 8], [1, 0, 2, 2], [9, 1, 1, 3]]
    code, out, _ = run(
        capsys, "pool", "--input", json.dumps(x), "--kind", "max", "--kernel", "2", "--stride", "2", "--json"
    )
    assert code == 0 and json.loads(out)["output"] == [[6.0, 8.0], [9.0, 3.0]]
    code, out, _ = run(
        capsys,
        "pool",
        "--input",
        json.dumps([x]),
        "--kind",
        "avg",
        "--kernel",
        "3",
        "--stride",
        "2",
        "--padding",
        "1",
        "--ceil-mode",
        "--json",
    )
    want = F.avg_pool2d(torch.tensor([x], dtype=torch.float64), 3, 2, 1, ceil_mode=True).numpy()
    assert code == 0 and np.allclose(json.loads(out)["output"], want, atol=1e-12)


@pytest.mark.parametrize(
    "args",
    [
        ["shape", "--input", "128x128", "--filters", "16", "--kernel", "3"],
        ["shape", "--input", "128x128x32", "--kernel", "3"],  # conv without --filters
        ["shape", "--input", "128x128x32", "--filters", "16", "--kernel", "3", "--stride", "0"],
        ["shape", "--input", "128x128x32", "--filters", "16", "--kernel", "3", "--stride", "2", "--padding", "same"],
        ["shape", "--input", "4x4x3", "--filters", "1", "--kernel", "7"],
        ["shape", "--input", "4x4x3", "--filters", "1", "--kernel", "3", "--op", "minpool"],
        ["conv", "--input", "[[[1,2],[3]]]", "--kernel", "[[[1]]]"],
        ["conv", "--input", '[[["a",2],[3,4]]]', "--kernel", "[[[1]]]"],
        ["conv", "--input", "[[[1,NaN],[3,4]]]", "--kernel", "[[[1]]]"],
        ["conv", "--input", "[[[1,2],[3,4]]]", "--kernel", "[[[1]],[[1]]]"],  # 2 channels vs 1
        ["conv", "--input", "[[[1,2],[3,4]]]", "--kernel", "[[[1,1,1],[1,1,1],[1,1,1]]]"],
        ["conv", "--input", "not json", "--kernel", "[[[1]]]"],
        ["conv", "--input", "[[[1,2],[3,4]]]", "--kernel", "[[[1]]]", "--trace", "5,5"],
        ["conv", "--input", "[[[1,2],[3,4]]]", "--kernel", "[[[1]]]", "--trace", "x"],
        ["pool", "--input", "[[1,2],[3,4]]", "--kind", "max", "--kernel", "2", "--padding", "2"],
        ["pool", "--input", "[[1,2],[3,4]]", "--kind", "median"],
    ],
)
def test_bad_input_exit_2_one_line(capsys, args):
    code, out, err = run(capsys, *args)
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err


def test_corrupt_npy_file_exit_2(capsys, tmp_path):
    bad = tmp_path / "x.npy"
    bad.write_bytes(b"\x93NUMPY garbage")
    code, _, err = run(capsys, "conv", "--input", str(bad), "--kernel", "[[[1]]]")
    assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_console_script_subprocess():
    """The installed entry point: JSON on stdout only, and a user error is one stderr line + exit 2."""
    ok = subprocess.run(
        [
            sys.executable,
            "-m",
            "convlens",
            "shape",
            "--input",
            "28x28x64",
            "--filters",
            "32",
            "--kernel",
            "1",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ok.returncode == 0 and json.loads(ok.stdout)["output"] == [28, 28, 32]
    bad = subprocess.run(
        [sys.executable, "-m", "convlens", "shape", "--input", "128x128", "--filters", "3", "--kernel", "3"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and bad.stdout == "" and "Traceback" not in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("groups", ["0", "-2", "3"])
def test_conv_bad_groups_names_groups(capsys, groups):
    """Regression: --groups 0 was reported as a filter-depth mismatch instead of a bad --groups."""
    code, out, err = run(
        capsys, "conv", "--input", "[[[1,2],[3,4]],[[1,2],[3,4]]]", "--kernel", "[[[1]]]", "--groups", groups
    )
    assert code == 2 and out == ""
    assert err.startswith(f"error: --groups must be >= 1 and divide the input's 2 channel(s), got {groups}.")


def test_wide_maps_print_whole_numbers_and_missing_files_are_named(capsys, tmp_path):
    """Regression: a 16-column table of 6-digit values was squeezed to '6.3…' cells; a missing .npy
    path was reported as invalid JSON."""
    x = np.random.default_rng(0).uniform(1, 9, (1, 20, 20)) + 1e-7
    np.save(tmp_path / "x.npy", x)
    code, out, err = run(capsys, "conv", "--input", str(tmp_path / "x.npy"), "--kernel", "[[1]]")
    assert code == 0 and "…" not in out
    assert max(len(line) for line in out.splitlines()) <= 120
    assert "top-left 16x" in out and f"{x[0, 0, 0]:.6g}" in out
    code, out, err = run(capsys, "conv", "--input", str(tmp_path / "missing.npy"), "--kernel", "[[1]]")
    assert code == 2 and "missing.npy' does not exist" in err


@pytest.mark.parametrize(
    "args, msg",
    [
        (["--filters", "2", "--ceil-mode"], "--ceil-mode is a pooling option"),
        (["--op", "maxpool", "--filters", "5"], "--filters and --groups describe convolutions"),
        (["--op", "avgpool", "--groups", "3"], "--filters and --groups describe convolutions"),
    ],
)
def test_shape_flags_that_do_not_apply_are_errors(capsys, args, msg):
    """Regression: --ceil-mode on a conv and --filters/--groups on a pool were silently ignored."""
    code, out, err = run(capsys, "shape", "--input", "7x7x3", "--kernel", "3", "--stride", "2", *args)
    assert code == 2 and out == "" and msg in err


def test_long_inline_json_is_read_as_json_not_as_a_path(capsys) -> None:
    """A 1x6x6 input written inline is longer than a file name may be (255 bytes): it must be parsed as JSON,
    not crash with OSError 'File name too long' while being tried as a path."""
    x = np.arange(36, dtype=np.float64).reshape(1, 6, 6) + 0.123456789
    k = np.array([[[[0.5, -1.0], [2.0, 0.25]]]])
    text = json.dumps(x.tolist())
    assert len(text) > 255
    code, out, err = run(capsys, "conv", "--input", text, "--kernel", json.dumps(k.tolist()), "--json")
    assert code == 0 and err == "", err
    want = F.conv2d(torch.from_numpy(x)[None], torch.from_numpy(k))[0].numpy()  # (F, H, W)
    np.testing.assert_allclose(np.array(json.loads(out)["output"]), want, atol=1e-9)
