"""top_patches: equal to a brute-force ranking over all activations kept in memory, for any batch
size (ties included); crops are the receptive-field boxes; folder policy; the CLI contract."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from convlens.cli import main
from convlens.errors import InputError
from convlens.inspect import get_activations, top_patches, unit_receptive_field


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    import skimage.data as d

    root = tmp_path_factory.mktemp("imgs")
    for name in ("astronaut", "chelsea", "coffee", "rocket", "retina", "hubble_deep_field"):
        a = getattr(d, name)()
        Image.fromarray(a[..., :3]).save(root / f"{name}.png")
    (root / "sub").mkdir()
    Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(root / "sub" / "black.png")  # ties everywhere
    (root / "broken.jpg").write_bytes(b"not an image")
    return root


def _brute(model, x: torch.Tensor, layer: str, channels: list[int], k: int) -> dict[int, list[tuple]]:
    act = get_activations(model, x, layer)[layer]
    out = {}
    for c in channels:
        rows = [
            (-float(act[n, c, y, xx]), n, y, xx)
            for n in range(act.shape[0])
            for y in range(act.shape[2])
            for xx in range(act.shape[3])
        ]
        rows.sort()
        out[c] = [(n, y, xx, -v) for v, n, y, xx in rows[:k]]
    return out


@pytest.mark.parametrize("batch_size", [1, 3, 32])
def test_equals_brute_force_on_a_folder(lite0, folder: Path, batch_size: int) -> None:
    from convlens.io import list_images, load_image

    files = [f for f in list_images(folder) if f.suffix == ".png"]
    x = lite0.preprocess([load_image(f) for f in files])
    layer, chans, k = "blocks.1.0.bn2", [0, 5, 11], 12  # after ReLU6: many ties at 0 and 6
    res = top_patches(lite0, folder, layer, chans, k=k, batch_size=batch_size)
    assert res.images == len(files) == 7 and [Path(p).name for p, _ in res.skipped] == ["broken.jpg"]
    want = _brute(lite0.model, x, layer, chans, k)
    for cp in res.channels:
        got = [(p.index, p.y, p.x, p.value) for p in cp.patches]
        assert [g[:3] for g in got] == [w[:3] for w in want[cp.channel]]
        assert [g[3] for g in got] == pytest.approx([w[3] for w in want[cp.channel]], abs=1e-5)
        assert all(Path(p.image) == files[p.index] for p in cp.patches)


def test_crops_are_the_receptive_field_boxes(lite0, folder: Path) -> None:
    from convlens.io import load_image

    res = top_patches(lite0, folder / "coffee.png", "blocks.2.0.conv_pw", [3], k=4)
    view = lite0.preprocess.resize_image(load_image(folder / "coffee.png"))
    for p in res.channels[0].patches:
        u = unit_receptive_field(lite0.model, "blocks.2.0.conv_pw", (p.y, p.x), 224)
        assert p.box == u.box
        t, l_, b, r = u.clipped_box
        # the crop is the model's view (the preprocessing's resize) inside the box, +-1 for the float round trip
        assert np.abs(p.crop.astype(int) - view[t : b + 1, l_ : r + 1].astype(int)).max() <= 1


def test_tensor_input_and_errors() -> None:
    net = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.ReLU())
    x = torch.randn(10, 2, 9, 9, generator=torch.Generator().manual_seed(0))
    a = top_patches(net, x, "1", None, k=5, batch_size=4)
    b = top_patches(net, x, "1", None, k=5, batch_size=10)
    assert [c.channel for c in a.channels] == [0, 1, 2]
    assert [[(p.index, p.y, p.x) for p in c.patches] for c in a.channels] == [
        [(p.index, p.y, p.x) for p in c.patches] for c in b.channels
    ]
    with pytest.raises(InputError, match="outside"):
        top_patches(net, x, "1", [3])
    with pytest.raises(InputError, match="k and batch_size"):
        top_patches(net, x, "1", [0], k=0)
    with pytest.raises(InputError, match="preprocessing"):
        top_patches(net, [np.zeros((9, 9, 3), np.uint8)], "1", [0])


def test_explicit_broken_file_is_an_error(lite0, folder: Path) -> None:
    with pytest.raises(InputError, match="broken.jpg"):
        top_patches(lite0, [folder / "broken.jpg"], "blocks.1", [0])


@pytest.mark.slow
def test_cli_top_patches_json_contract(capsys, folder: Path, tmp_path: Path) -> None:
    code = main(
        [
            "top-patches",
            str(folder),
            "--layer",
            "blocks.2",
            "--channels",
            "0-2,7",
            "--k",
            "3",
            "--out",
            str(tmp_path / "g.png"),
            "--json",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    d = json.loads(out)
    assert [c["channel"] for c in d] == [0, 1, 2, 7]
    p = d[0]["patches"][0]
    assert {"image", "y", "x", "value", "box"} <= set(p) and len(d[0]["patches"]) == 3
    assert "skipped" in err and "broken.jpg" in err
    assert (tmp_path / "g.png").stat().st_size > 1000
    assert main(["top-patches", str(folder), "--layer", "blocks.2", "--channels", "x"]) == 2
