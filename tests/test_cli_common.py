import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from convlens.cli import main
from convlens.cli.common import parse_int_list, parse_size, to_jsonable
from convlens.errors import InputError


@given(st.integers(1, 4096), st.integers(1, 4096), st.integers(1, 2048))
def test_parse_size_roundtrip(h, w, c):
    assert parse_size(f"{h}x{w}x{c}") == (h, w, c)
    assert parse_size(f"{c}x{h}x{w}", channels_first=True) == (h, w, c)


@pytest.mark.parametrize("bad", ["128x128", "axbxc", "0x4x4", "1x2x3x4", ""])
def test_parse_size_rejects(bad):
    with pytest.raises(InputError, match="--input"):
        parse_size(bad)


def test_parse_int_list():
    assert parse_int_list("0-3,7", name="--channels") == [0, 1, 2, 3, 7]
    for bad in ("3-1", "a", "1,,2", "-2"):
        with pytest.raises(InputError):
            parse_int_list(bad, name="--channels")


def test_to_jsonable_handles_numpy_torch_nan():
    import torch

    out = to_jsonable({"a": np.float32(1.5), "b": torch.tensor([1, 2]), "c": float("nan"), "d": (1, 2)})
    assert json.dumps(out) == '{"a": 1.5, "b": [1, 2], "c": null, "d": [1, 2]}'


def test_main_usage_error_exit_code(capsys):
    assert main(["no-such-command"]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_ensure_out_dir_unwritable_is_a_clear_input_error(tmp_path):
    from convlens.cli.common import ensure_out_dir
    from convlens.errors import InputError

    (tmp_path / "f").write_text("x")
    with pytest.raises(InputError, match="cannot create the --out folder"):
        ensure_out_dir(tmp_path / "f" / "sub")  # a file as a parent: mkdir raises NotADirectoryError


# --- one-line errors, threads -------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["summary", "--depth", "0"], "--depth"),
        (["cam", "x.png", "--alpha", "2"], "--alpha"),
        (["no-such-command"], "no-such-command"),
        (["shape", "--input"], "--input"),
        (["shape", "--input", "8x8x3", "--kernel", "3", "--filters", "2", "--bogus"], "--bogus"),
        (["predict"], "images"),
    ],
)
def test_usage_and_range_errors_are_one_line_exit_2(argv, needle, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], err


@pytest.fixture
def restore_threads(monkeypatch):
    import os

    import torch

    n = torch.get_num_threads()
    for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "CONVLENS_THREADS"):
        monkeypatch.setenv(k, os.environ.get(k, "")) if k in os.environ else monkeypatch.delenv(k, raising=False)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("where", ["before", "after"])
def test_global_threads_option_sets_torch_threads(where, restore_threads, capsys):
    import os

    import torch

    torch.set_num_threads(2)
    shape = ["shape", "--input", "8x8x3", "--kernel", "3", "--filters", "2"]
    argv = ["--threads", "1", *shape] if where == "before" else [*shape, "--threads", "1"]
    assert main(argv) == 0
    assert torch.get_num_threads() == 1 and os.environ["OMP_NUM_THREADS"] == "1"


def test_convlens_threads_env_and_bad_values(restore_threads, monkeypatch, capsys):
    import torch

    shape = ["shape", "--input", "8x8x3", "--kernel", "3", "--filters", "2"]
    torch.set_num_threads(2)
    monkeypatch.setenv("CONVLENS_THREADS", "1")
    assert main(shape) == 0 and torch.get_num_threads() == 1
    monkeypatch.setenv("CONVLENS_THREADS", "many")
    assert main(shape) == 2 and "CONVLENS_THREADS" in capsys.readouterr().err
    monkeypatch.delenv("CONVLENS_THREADS")
    assert main(["--threads", "0", *shape]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_default_threads_leave_busy_cores_alone():
    from convlens.runtime import free_cores, resolve_threads

    # hand-computed: round(cores - load), clipped to [1, min(cores, 8)]
    assert free_cores(cores=2, load=0.1) == 2
    assert free_cores(cores=2, load=1.6) == 1  # one core busy elsewhere -> don't fight for it
    assert free_cores(cores=4, load=9.0) == 1
    assert free_cores(cores=64, load=0.0) == 8
    assert resolve_threads(None, environ={"OMP_NUM_THREADS": "3"}, cores=2, load=2.0) == 3  # the user's choice wins
    assert resolve_threads(None, environ={"CONVLENS_THREADS": "2", "OMP_NUM_THREADS": "5"}) == 2


def test_max_pixels_global_option_is_followable_advice(tmp_path, capsys, monkeypatch):
    import os

    from PIL import Image

    monkeypatch.delenv("CONVLENS_MAX_PIXELS", raising=False)
    Image.new("RGB", (300, 200), (120, 30, 200)).save(tmp_path / "big.png")
    argv = ["predict", str(tmp_path / "big.png"), "--topk", "1", "--json"]
    assert main([*argv, "--max-pixels", "50000"]) == 2
    err = capsys.readouterr().err
    assert "pass --max-pixels 60000" in err and err.count("\n") == 1  # the advice names the flag and the number
    assert main(["--max-pixels", "60000", *argv]) == 0  # following it works
    capsys.readouterr()
    assert main([*argv, "--max-pixels", "0"]) == 0  # 0 = no limit
    assert "CONVLENS_MAX_PIXELS" not in os.environ  # the limit holds for one run only
    assert main([*argv, "--max-pixels", "-1"]) == 2


def test_activations_refuse_empty_layers_and_explain_missing_figures(tmp_path, capsys, chelsea):
    from PIL import Image

    Image.fromarray(chelsea).save(tmp_path / "cat.png")
    out = tmp_path / "acts"
    assert main(["activations", str(tmp_path / "cat.png"), "--layers", "", "--out", str(out)]) == 2
    assert "--layers is empty" in capsys.readouterr().err and not out.exists()
    argv = ["activations", str(tmp_path / "cat.png"), "--layers", "classifier,bn2", "--out", str(out), "--json"]
    assert main(argv) == 0
    rows = {r["layer"]: r for r in json.loads(capsys.readouterr().out)["layers"]}
    assert rows["classifier"]["figure"] is None and "no spatial grid" in rows["classifier"]["note"]
    assert rows["bn2"]["figure"] and rows["bn2"]["note"] is None
