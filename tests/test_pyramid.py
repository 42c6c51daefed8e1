"""Pyramids: pyrDown against an independent scipy reference (reflect-101 = scipy 'mirror'),
exact Laplacian reconstruction, shapes/kinds/devices, odd sizes, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from scipy import ndimage

from convlens.errors import InputError
from convlens.pyramid import expand, gaussian_pyramid, laplacian_pyramid, max_levels, reconstruct, reduce


def _pyrdown_reference(img2d: np.ndarray) -> np.ndarray:
    """OpenCV pyrDown by definition: 5x5 binomial blur with reflect-101 borders, keep even rows/cols."""
    g = np.array([1, 4, 6, 4, 1], np.float64) / 16
    blurred = ndimage.correlate(img2d.astype(np.float64), np.outer(g, g), mode="mirror")
    return blurred[::2, ::2]


@given(h=st.integers(3, 23), w=st.integers(3, 23), seed=st.integers(0, 10_000))
def test_reduce_matches_reference(h, w, seed):
    x = np.random.default_rng(seed).normal(size=(h, w))
    got = reduce(x)
    assert got.shape == ((h + 1) // 2, (w + 1) // 2)
    np.testing.assert_allclose(got, _pyrdown_reference(x), atol=1e-12)


def _pyrup_reference(coarse: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Burt-Adelson expand / OpenCV pyrUp by definition: coarse samples on the even grid of the fine size, zeros
    between, then the 5x5 binomial blur times 4 (each axis keeps 1 sample in 2) with reflect-101 borders."""
    g = np.array([1, 4, 6, 4, 1], np.float64) / 16
    up = np.zeros(size)
    up[::2, ::2] = coarse
    return ndimage.correlate(up, 4 * np.outer(g, g), mode="mirror")


@given(h=st.integers(3, 23), w=st.integers(3, 23), seed=st.integers(0, 10_000))
def test_expand_matches_reference(h, w, seed):
    """Reconstruction is exact for ANY expand (it telescopes), so expand needs its own oracle."""
    c = np.random.default_rng(seed).normal(size=((h + 1) // 2, (w + 1) // 2))
    np.testing.assert_allclose(expand(c, (h, w)), _pyrup_reference(c, (h, w)), atol=1e-12)
    # and the Laplacian band of a level is exactly G_k - pyrUp(G_{k+1}) by this definition
    x = np.random.default_rng(seed + 1).normal(size=(h, w))
    lap = laplacian_pyramid(x, 2)
    np.testing.assert_allclose(lap[0], x - _pyrup_reference(_pyrdown_reference(x), (h, w)), atol=1e-12)


def test_expand_worked_values():
    """A unit impulse at an interior coarse sample spreads as outer(2g, 2g): 36/64 at its own place, 24/64 one step
    along an axis, 16/64 diagonally; a constant stays constant."""
    c = np.zeros((5, 5))
    c[2, 2] = 1.0
    up = expand(c, (9, 9))
    assert up[4, 4] == pytest.approx(36 / 64) and up[4, 5] == pytest.approx(24 / 64)
    assert up[5, 5] == pytest.approx(16 / 64) and up[4, 6] == pytest.approx(6 / 64) and up[4, 7] == 0.0
    assert up.sum() == pytest.approx(4.0)  # mass x4: one fine sample in 4 was a coarse one
    np.testing.assert_allclose(expand(np.full((4, 3), 2.5), (7, 6)), 2.5, atol=1e-12)


def test_opencv_pyrdown_worked_values():
    # 1-D check on a constant-plus-impulse signal: an impulse at 0 spreads as 6/16 (centre) after blur
    x = np.zeros((5, 5))
    x[0, 0] = 16.0 * 16.0
    out = reduce(x)
    # at (0,0) reflect-101 puts no extra copy at the centre: 6 * 6 = 36
    assert out[0, 0] == pytest.approx(36.0)
    # at (1,0) the impulse is 2 rows above the centre: weight 1 (row) * 6 (col)
    assert out[1, 0] == pytest.approx(6.0)


@given(
    n=st.integers(1, 2),
    c=st.integers(1, 3),
    h=st.integers(1, 40),
    w=st.integers(1, 40),
    seed=st.integers(0, 10_000),
)
def test_laplacian_reconstruct_exact_float64(n, c, h, w, seed):
    x = np.random.default_rng(seed).uniform(-100, 100, size=(n, c, h, w))
    levels = min(max_levels(h, w), 5)
    lap = laplacian_pyramid(x, levels)
    assert len(lap) == levels
    assert np.abs(reconstruct(lap) - x).max() < 1e-9


def test_shapes_ranks_and_kinds():
    x = np.random.default_rng(0).random((7, 13))
    g = gaussian_pyramid(x, 4)
    assert [lv.shape for lv in g] == [(7, 13), (4, 7), (2, 4), (1, 2)]
    assert all(isinstance(lv, np.ndarray) for lv in g)
    t = torch.rand(2, 3, 9, 10, dtype=torch.float32)
    lap = laplacian_pyramid(t, 3)
    assert all(isinstance(lv, torch.Tensor) and lv.dtype == torch.float32 for lv in lap)
    assert [tuple(lv.shape) for lv in lap] == [(2, 3, 9, 10), (2, 3, 5, 5), (2, 3, 3, 3)]
    assert torch.allclose(reconstruct(lap), t, atol=1e-5)
    chw = gaussian_pyramid(np.zeros((3, 8, 8), np.uint8), 2)
    assert chw[1].shape == (3, 4, 4) and chw[1].dtype == np.float64


def test_batched_equals_per_image():
    x = torch.rand(3, 2, 11, 8, dtype=torch.float64)
    batched = laplacian_pyramid(x, 3)
    for i in range(3):
        single = laplacian_pyramid(x[i, 1], 3)
        for b, s in zip(batched, single, strict=True):
            torch.testing.assert_close(b[i, 1], s)


def test_gaussian_keeps_mean_and_constant():
    x = np.full((9, 14), 3.5)
    for lv in gaussian_pyramid(x, 4):
        np.testing.assert_allclose(lv, 3.5, atol=1e-12)
    for lv in laplacian_pyramid(x, 4)[:-1]:  # a constant image has no detail
        np.testing.assert_allclose(lv, 0.0, atol=1e-12)


def test_band_pass_levels_carry_detail_of_their_scale():
    # a fine checkerboard lives in L0 only; reduce blurs it almost away
    y, x = np.mgrid[:32, :32]
    checker = ((y + x) % 2).astype(np.float64)
    lap = laplacian_pyramid(checker, 3)
    assert np.abs(lap[0]).mean() > 10 * np.abs(lap[1]).mean()


def test_expand_size_contract():
    assert expand(np.ones((3, 4)), (5, 7)).shape == (5, 7)
    with pytest.raises(InputError, match="ceil"):
        expand(np.ones((3, 4)), (9, 7))


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.zeros((2, 2, 2, 2, 2)), "H, W"),
        (np.zeros((0, 4)), "empty"),
        (np.array([[1.0, np.nan]]), "NaN"),
        (np.array([["a", "b"]]), "numbers"),
    ],
)
def test_bad_input(bad, match):
    with pytest.raises(InputError, match=match):
        gaussian_pyramid(bad, 2)


def test_bad_levels():
    with pytest.raises(InputError, match="levels"):
        gaussian_pyramid(np.zeros((4, 4)), 0)
    with pytest.raises(InputError, match="too many"):
        laplacian_pyramid(np.zeros((4, 4)), 5)  # 4 -> 2 -> 1: three levels at most
    assert len(gaussian_pyramid(np.zeros((4, 4)), 3)) == 3
    with pytest.raises(InputError, match="laplacian_pyramid"):
        reconstruct([np.zeros((4, 4)), np.zeros((3, 3))])
    with pytest.raises(InputError):
        reconstruct([])


def test_cli_pyramid(tmp_path, capsys, chelsea):
    import json

    from PIL import Image

    from convlens.cli import main

    p = tmp_path / "cat.png"
    Image.fromarray(chelsea[:101, :77]).save(p)  # odd sizes
    assert (
        main(["pyramid", str(p), "--levels", "4", "--kind", "laplacian", "--out", str(tmp_path / "o"), "--json"]) == 0
    )
    res = json.loads(capsys.readouterr().out)
    assert [lv["shape"] for lv in res["levels"]] == [[101, 77], [51, 39], [26, 20], [13, 10]]
    assert res["reconstruction_max_abs_error"] < 1e-9
    assert (tmp_path / "o" / "laplacian_pyramid.png").exists() and (tmp_path / "o" / "laplacian_level3.png").exists()
    assert main(["pyramid", str(p), "--kind", "steerable", "--out", str(tmp_path / "o")]) == 2
    assert main(["pyramid", str(p), "--levels", "40", "--out", str(tmp_path / "o")]) == 2
    assert "too many" in capsys.readouterr().err


def test_cli_pyramid_default_levels_fit_tiny_images(tmp_path, capsys):
    import json

    from PIL import Image

    from convlens.cli import main

    for (h, w), shapes in {
        (8, 8): [[8, 8], [4, 4], [2, 2], [1, 1]],
        (1, 1): [[1, 1]],
        (64, 64): [[64, 64], [32, 32], [16, 16], [8, 8], [4, 4]],
    }.items():
        p = tmp_path / f"img{h}.png"
        Image.fromarray(np.full((h, w, 3), 90, np.uint8)).save(p)
        assert main(["pyramid", str(p), "--out", str(tmp_path / "o"), "--json"]) == 0  # no --levels: default 5 or fewer
        assert [lv["shape"] for lv in json.loads(capsys.readouterr().out)["levels"]] == shapes


def test_hwc_image_is_refused_not_read_as_channels(chelsea):
    # load_image gives (H, W, 3): taking its 300 rows for channels built a meaningless 'pyramid' of 451x3 images
    with pytest.raises(InputError, match=r"\(H, W, C\)"):
        gaussian_pyramid(chelsea[:40, :30], 2)
    with pytest.raises(InputError, match=r"\(H, W, C\)"):
        laplacian_pyramid(torch.from_numpy(chelsea[:40, :30]), 2)
    levels = gaussian_pyramid(chelsea[:40, :30].transpose(2, 0, 1), 2)  # channels-first works
    assert levels[1].shape == (3, 20, 15)
    assert gaussian_pyramid(np.zeros((1, 8, 9, 3)), 2)[1].shape == (
        1,
        8,
        5,
        2,
    )  # a narrow (C, H, W) as a batch is allowed


def test_tall_and_wide_images_get_all_their_levels():
    """max_levels follows the LONGER side: a 16x2 image has 5 levels (16, 8, 4, 2, 1 rows), its transpose too."""
    for shape in ((16, 2), (2, 16)):
        levels = gaussian_pyramid(np.ones(shape), 5)
        assert [lv.shape for lv in levels][-1] == (1, 1) and len(levels) == 5
        assert len(laplacian_pyramid(np.ones(shape), 5)) == 5
        with pytest.raises(InputError, match="levels <= 5"):
            gaussian_pyramid(np.ones(shape), 6)


def test_reconstruct_names_the_bad_level_and_keeps_the_finest_dtype():
    x = np.random.default_rng(0).normal(size=(6, 10))
    lap = laplacian_pyramid(x, 3)
    with pytest.raises(InputError, match="level 1"):
        reconstruct([lap[0], np.full((2, 2), np.nan), lap[2]])
    with pytest.raises(InputError, match="level 2 has shape"):
        reconstruct([lap[0], lap[1], np.ones((3, 3))])
    mixed = [torch.from_numpy(lap[0]).float(), torch.from_numpy(lap[1]), torch.from_numpy(lap[2])]
    out = reconstruct(mixed)  # float32 finest level, float64 coarser ones: the result is the finest level's dtype
    assert out.dtype == torch.float32 and out.shape == (6, 10)
    torch.testing.assert_close(out, torch.from_numpy(x).float(), atol=1e-5, rtol=0)


def test_hwc_rule_boundaries_and_messages_name_the_input():
    """The (H, W, C) guess: a 3-D input whose last axis is 3 or 4 wide AND whose first is longer than 4."""
    with pytest.raises(InputError, match=r"^x has shape \(5, 2, 3\), which looks like an \(H, W, C\)"):
        reduce(np.zeros((5, 2, 3)))  # 5 rows > 4: an image, refused (whatever the width)
    with pytest.raises(InputError, match=r"^x has shape \(9, 2, 4\)"):
        reduce(np.zeros((9, 2, 4)))
    assert reduce(np.zeros((4, 9, 3))).shape == (4, 5, 2)  # 4 channels of 9x3: a valid (C, H, W)
    assert reduce(np.zeros((9, 9, 5))).shape == (9, 5, 3)  # last axis 5: not a colour axis
    with pytest.raises(InputError, match=r"^x contains NaN"):
        reduce(np.full((4, 4), np.nan))
    with pytest.raises(InputError, match=r"^level 1 has shape \(6, 2, 3\), which looks like"):
        reconstruct([np.zeros((12, 4)), np.zeros((6, 2, 3))])
