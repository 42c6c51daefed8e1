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
