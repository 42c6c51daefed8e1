"""Template matching: NCC against skimage.feature.match_template, raw vs ZNCC behaviour,
batching/device, multi-scale search on chelsea rescaled by 0.5 and 2, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from skimage.feature import match_template
from skimage.transform import rescale

from convlens.errors import InputError
from convlens.match import correlate, find_template, find_template_multiscale, image_to_chw


@given(
    h=st.integers(4, 30),
    w=st.integers(4, 30),
    th=st.integers(1, 12),
    tw=st.integers(1, 12),
    c=st.sampled_from([1, 3]),
    seed=st.integers(0, 10_000),
)
def test_zncc_matches_skimage(h, w, th, tw, c, seed):
    th, tw = min(th, h), min(tw, w)
    rng = np.random.default_rng(seed)
    img = rng.uniform(0, 255, size=(h, w, c))
    img[: h // 3] = 7.0  # a flat region: both must give 0 there
    tpl = rng.uniform(0, 255, size=(th, tw, c))
    ours = correlate(img.transpose(2, 0, 1), tpl.transpose(2, 0, 1), "zncc")
    ref = match_template(img, tpl, pad_input=False)[..., 0]  # channel axis matched as a 3-D volume
    np.testing.assert_allclose(ours, ref, atol=1e-6)


def test_zncc_large_template_fft_path_matches_skimage(chelsea):
    img = chelsea[::2, ::2].astype(np.float64) / 255
    tpl = img[30:70, 60:110]  # 40 x 50 x 3: correlated through FFTs
    ours = correlate(image_to_chw(img), image_to_chw(tpl), "zncc")
    ref = match_template(img, tpl, pad_input=False)[..., 0]
    np.testing.assert_allclose(ours, ref, atol=1e-6)
    g = img.mean(axis=2)
    np.testing.assert_allclose(correlate(g, g[5:25, 7:40], "ncc"), match_template(g, g[5:25, 7:40]), atol=1e-6)


def test_raw_and_zero_mean_definitions():
    rng = np.random.default_rng(3)
    img, tpl = rng.random((9, 11)), rng.random((3, 4))
    windows = np.lib.stride_tricks.sliding_window_view(img, (3, 4))  # (7, 8, 3, 4)
    np.testing.assert_allclose(correlate(img, tpl, "raw"), (windows * tpl).sum((-1, -2)), atol=1e-12)
    np.testing.assert_allclose(
        correlate(img, tpl, "zero_mean"), (windows * (tpl - tpl.mean())).sum((-1, -2)), atol=1e-12
    )
    big = rng.random((10, 10))  # more taps than the direct-conv limit: the FFT path
    img2 = rng.random((30, 33))
    windows2 = np.lib.stride_tricks.sliding_window_view(img2, (10, 10))
    np.testing.assert_allclose(correlate(img2, big, "raw"), (windows2 * big).sum((-1, -2)), atol=1e-9)


def test_raw_fooled_by_bright_region_zncc_is_not():
    rng = np.random.default_rng(0)
    img = rng.uniform(0.2, 0.4, size=(60, 60))
    tpl = img[10:20, 30:42].copy()
    img[40:55, 5:25] = 1.0  # a bright, featureless patch
    assert find_template(img, tpl, "zncc").peak == (10, 30)
    raw_peak = find_template(img, tpl, "raw").peak
    assert 40 - 10 <= raw_peak[0] <= 55 and raw_peak[1] <= 25  # raw prefers the bright patch
    # zero-mean correlation ignores the offset but still rewards contrast; ZNCC is bounded
    assert find_template(img, tpl, "zncc").score == pytest.approx(1.0)


def test_zncc_invariant_to_gain_and_offset():
    rng = np.random.default_rng(1)
    img, tpl = rng.random((20, 25)), rng.random((5, 6))
    np.testing.assert_allclose(correlate(3.0 * img + 2.0, tpl), correlate(img, tpl), atol=1e-10)
    np.testing.assert_allclose(correlate(img, 0.5 * tpl - 4.0), correlate(img, tpl), atol=1e-10)


def test_batched_and_many_templates_and_dtype():
    x = torch.rand(4, 2, 16, 18, dtype=torch.float64)
    t = torch.rand(3, 2, 5, 4, dtype=torch.float64)
    out = correlate(x, t, "zncc")
    assert out.shape == (4, 3, 12, 15) and isinstance(out, torch.Tensor)
    for n in range(4):
        for k in range(3):
            torch.testing.assert_close(out[n, k], correlate(x[n], t[k], "zncc"))
    assert correlate(x[0], t[0]).shape == (12, 15)
    assert correlate(x, t[0]).shape == (4, 12, 15)
    assert isinstance(correlate(np.ones((5, 5)), np.ones((2, 2))), np.ndarray)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_device_follows_input():
    x = torch.rand(1, 3, 32, 32, device="cuda")
    out = correlate(x, x[0, :, 4:12, 5:15])
    assert out.device.type == "cuda"


@pytest.mark.slow
def test_multiscale_chelsea_rescaled(chelsea):
    img = chelsea.astype(np.float64) / 255
    y0, x0, th, tw = 80, 150, 60, 80
    tpl = image_to_chw(img[y0 : y0 + th, x0 : x0 + tw])
    for factor in (0.5, 2.0):
        scaled = rescale(img, factor, channel_axis=2, anti_aliasing=True)
        m = find_template_multiscale(image_to_chw(scaled), tpl, levels=3, template_levels=2)
        assert m.scale == factor
        ey, ex = y0 * factor, x0 * factor
        assert abs(m.peak[0] - ey) <= 2 * factor and abs(m.peak[1] - ex) <= 2 * factor, (factor, m.peak)
        assert m.score > 0.9
        assert m.best.size == (round(th * factor), round(tw * factor))
    unscaled = find_template_multiscale(image_to_chw(img), tpl, levels=3, template_levels=2)
    assert unscaled.peak == (y0, x0) and unscaled.scale == 1.0


def test_bad_input():
    with pytest.raises(InputError, match="channel"):
        correlate(np.zeros((3, 10, 10)), np.zeros((2, 3, 3)))
    with pytest.raises(InputError, match="larger than the image"):
        correlate(np.zeros((5, 5)), np.zeros((6, 2)))
    with pytest.raises(InputError, match="NaN"):
        correlate(np.full((5, 5), np.nan), np.zeros((2, 2)))
    with pytest.raises(InputError, match="method"):
        correlate(np.zeros((5, 5)), np.zeros((2, 2)), "sad")
    with pytest.raises(InputError, match="shape"):
        correlate(np.zeros(5), np.zeros((2, 2)))
    with pytest.raises(InputError, match="one image"):
        find_template(np.zeros((2, 1, 5, 5)), np.zeros((2, 2)))
    with pytest.raises(InputError, match="levels"):
        find_template_multiscale(np.zeros((9, 9)), np.zeros((2, 2)), levels=0)


def _save_png(path, arr):
    from PIL import Image

    Image.fromarray(arr).save(path)
    return str(path)


def test_cli_match_json_and_raw_vs_zncc(tmp_path, capsys, chelsea):
    from convlens.cli import main

    img = _save_png(tmp_path / "cat.png", chelsea)
    tpl = _save_png(tmp_path / "eye.png", chelsea[80:140, 150:230])
    out = tmp_path / "out"
    assert main(["match", img, tpl, "--out", str(out), "--json"]) == 0
    res = __import__("json").loads(capsys.readouterr().out)
    assert res["peak"] == [80, 150] and res["score"] == pytest.approx(1.0) and res["scale"] == 1.0
    raw = res["comparison"]["raw"]
    # raw correlation is pulled to a brighter window than the true match
    assert raw["peak"] != [80, 150] and raw["window_mean"] > res["comparison"]["zncc"]["window_mean"]
    assert "brightness" in res["explanation"]
    assert (out / "match.png").stat().st_size > 1000 and (out / "match.json").exists()
    assert main(["match", img, tpl, "--method", "raw", "--out", str(out), "--json"]) == 0
    assert __import__("json").loads(capsys.readouterr().out)["peak"] == raw["peak"]


@pytest.mark.slow
def test_cli_match_pyramid_finds_scale(tmp_path, capsys, chelsea):
    from convlens.cli import main

    big = (rescale(chelsea.astype(np.float64) / 255, 2.0, channel_axis=2) * 255).round().astype(np.uint8)
    img = _save_png(tmp_path / "big.png", big)
    tpl = _save_png(tmp_path / "eye.png", chelsea[80:140, 150:230])
    assert main(["match", img, tpl, "--pyramid", "--levels", "3", "--out", str(tmp_path / "o"), "--json"]) == 0
    res = __import__("json").loads(capsys.readouterr().out)
    assert res["scale"] == 2.0
    assert abs(res["peak"][0] - 160) <= 4 and abs(res["peak"][1] - 300) <= 4


def test_cli_match_errors(tmp_path, capsys, chelsea):
    from convlens.cli import main

    small = _save_png(tmp_path / "s.png", chelsea[:10, :10])
    big = _save_png(tmp_path / "b.png", chelsea)
    assert main(["match", small, big, "--out", str(tmp_path / "o")]) == 2
    assert "larger than the image" in capsys.readouterr().err
    assert main(["match", big, small, "--method", "sad", "--out", str(tmp_path / "o")]) == 2
    assert "--method" in capsys.readouterr().err
    (tmp_path / "bad.png").write_bytes(b"not a png")
    assert main(["match", str(tmp_path / "bad.png"), small, "--out", str(tmp_path / "o")]) == 2


def test_constant_template_is_an_error_not_a_match_at_origin(tmp_path, capsys, chelsea):
    # zero-mean/ZNCC of a constant template is 0 everywhere: the argmax (0, 0) would be reported as a match
    img = np.random.default_rng(0).random((20, 30))
    for method in ("zncc", "zero_mean"):
        with pytest.raises(InputError, match="constant"):
            find_template(img, np.full((4, 4), 0.5), method)
        with pytest.raises(InputError, match="constant"):
            find_template_multiscale(img, np.full((4, 4), 0.5), method)
    assert find_template(img, np.full((4, 4), 0.5), "raw").score > 0  # raw stays a plain conv
    from convlens.cli import main

    flat = _save_png(tmp_path / "flat.png", np.full((12, 12, 3), 128, np.uint8))
    big = _save_png(tmp_path / "b.png", chelsea[:60, :60])
    assert main(["match", big, flat, "--out", str(tmp_path / "o")]) == 2
    assert "constant colour" in capsys.readouterr().err


def test_zncc_never_leaves_minus_one_to_one(chelsea):
    # a perfect match scored 1.0000000000000002 from float rounding; the documented range is [-1, 1]
    img = chelsea[:20, :30].transpose(2, 0, 1) / 255.0
    r = correlate(img, img, "zncc")
    assert float(r.max()) == 1.0
    r = correlate(img, -img, "zncc")
    assert float(r.min()) == -1.0


def test_cli_match_gray_template_on_colour_image_matches_on_luma(tmp_path, capsys, chelsea):
    import json

    # a grayscale crop of a colour photo is a perfect match in brightness; across RGB channels ZNCC gave only 0.85
    from PIL import Image

    from convlens.cli import main

    img = _save_png(tmp_path / "c.png", chelsea[:150, :250])
    Image.fromarray(chelsea[80:140, 150:230]).convert("L").save(tmp_path / "g.png")
    assert main(["match", img, str(tmp_path / "g.png"), "--out", str(tmp_path / "o"), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["peak"] == [80, 150] and res["score"] > 0.999 and res["grayscale"] is True


def test_hwc_inputs_are_refused_and_numpy_int_levels_accepted(chelsea):
    with pytest.raises(InputError, match=r"\(H, W, C\)"):
        correlate(chelsea[:40, :50], chelsea[5:15, 5:15])
    with pytest.raises(InputError, match=r"\(H, W, C\)"):
        find_template(chelsea[:40, :50], chelsea[5:15, 5:15])
    img = chelsea[:40, :50].transpose(2, 0, 1) / 255.0
    m = find_template_multiscale(img, img[:, 5:17, 6:20], levels=np.int64(2), template_levels=np.int64(1))
    assert m.peak == (5, 6)


# -- several detections: threshold, max_matches, non-maximum suppression -------------------------


def _scene(seed=0):
    rng = np.random.default_rng(seed)
    img = rng.random((90, 120)) * 0.3
    tpl = rng.random((12, 15))
    spots = [(5, 10), (40, 70), (70, 20)]
    for y, x in spots:
        img[y : y + 12, x : x + 15] = tpl
    return img, tpl, spots


def test_find_matches_finds_every_copy_with_skimage_scores():
    from skimage.feature import match_template

    from convlens.match import find_matches, find_template

    img, tpl, spots = _scene()
    dets = find_matches(img, tpl, threshold=0.5, max_matches=10)
    assert sorted(d.peak for d in dets) == sorted(spots)
    ref = match_template(img, tpl)  # ZNCC, top-left anchored (H-h+1, W-w+1)
    for d in dets:
        assert d.score == pytest.approx(float(ref[d.peak]), abs=1e-6) and d.size == (12, 15) and d.scale == 1.0
    assert dets[0].peak == find_template(img, tpl).peak
    # without a threshold: K detections, none overlapping another by IoU > 0.3, best first
    many = find_matches(img, tpl, max_matches=8)
    assert len(many) == 8 and [d.score for d in many] == sorted((d.score for d in many), reverse=True)
    from convlens.match.search import _iou

    assert all(_iou(a, b) <= 0.3 for i, a in enumerate(many) for b in many[i + 1 :])
    assert find_matches(img, tpl, threshold=1.5) == []
    with pytest.raises(InputError):
        find_matches(img, tpl, max_matches=0)


def test_find_matches_pyramid_keeps_the_multiscale_best():
    from convlens.match import find_matches, find_template_multiscale

    rng = np.random.default_rng(3)
    img = rng.random((64, 80))
    tpl = img[8:28, 16:40]
    best = find_template_multiscale(img, tpl)
    d0 = find_matches(img, tpl, pyramid=True, max_matches=3)[0]
    assert (d0.peak, d0.scale) == (best.peak, best.scale) and d0.score == pytest.approx(best.score)


def test_cli_match_json_keeps_best_and_adds_matches(tmp_path, capsys):
    import json

    from PIL import Image

    from convlens.cli import main

    img, tpl, spots = _scene(1)
    Image.fromarray((img * 255).astype(np.uint8)).save(tmp_path / "img.png")
    Image.fromarray((tpl * 255).astype(np.uint8)).save(tmp_path / "tpl.png")
    argv = ["match", str(tmp_path / "img.png"), str(tmp_path / "tpl.png"), "--out", str(tmp_path / "m")]
    assert main([*argv, "--max-matches", "5", "--threshold", "0.9", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert sorted(tuple(m["peak"]) for m in d["matches"]) == sorted(spots)
    assert d["matches"][0]["peak"] == d["peak"] and d["matches"][0]["score"] == d["score"]
    assert {"peak", "score", "scale"} <= set(d["matches"][0])


def test_match_template_is_the_cli_pipeline_and_its_json(tmp_path, capsys):
    """The CLI prints the core report's serialization (plus the files it wrote): same fields, same numbers."""
    import json as _json

    from PIL import Image

    from convlens.cli import main
    from convlens.match import match_template
    from convlens.serialize import to_jsonable

    rng = np.random.default_rng(3)
    img = (rng.random((48, 64, 3)) * 255).astype(np.uint8)
    img[:, :32] //= 4  # a dark half: raw correlation prefers the bright half, ZNCC the pattern
    tpl = img[20:32, 6:22].copy()
    rep = match_template(img, tpl, "zncc", max_matches=2)
    assert rep.peak == [20, 6] and rep.comparison["zncc"].peak == [20, 6] and set(rep.comparison) == {"zncc", "raw"}
    # the window mean is the brightness of the matched window (hand check on the array)
    assert rep.comparison["zncc"].window_mean == pytest.approx(img[20:32, 6:22].mean() / 255, abs=1e-4)
    data = to_jsonable(rep)
    assert "best" not in data and data["matches"][0]["peak"] == [20, 6]
    Image.fromarray(img).save(tmp_path / "img.png")
    Image.fromarray(tpl).save(tmp_path / "tpl.png")
    args = ["match", str(tmp_path / "img.png"), str(tmp_path / "tpl.png"), "--max-matches", "2"]
    assert main([*args, "--out", str(tmp_path / "o"), "--json"]) == 0
    printed = _json.loads(capsys.readouterr().out)
    assert {k: v for k, v in printed.items() if k != "files"} == _json.loads(_json.dumps(data))


# -- exact fields of the single- and multi-scale results (hand-computed pyramids) ------------------


def test_find_template_reports_the_method_name_and_names_the_bad_argument():
    rng = np.random.default_rng(5)
    img = rng.random((12, 14))
    tpl = img[3:7, 5:10]  # 4 x 5 crop at (3, 5): ZNCC 1 there
    m = find_template(img, tpl, "ncc")  # "ncc" is an alias: the result says "zncc"
    assert (m.peak, m.method, m.size, m.scale) == ((3, 5), "zncc", (4, 5), 1.0)
    assert find_template(img, tpl, "zncc").method == "zncc"
    assert find_template(img, tpl, "zero_mean").method == "zero_mean"
    r = find_template(img, tpl, "raw")
    # raw response = sum of window * template; the oracle is the written-out sliding dot product
    ref = (np.lib.stride_tricks.sliding_window_view(img, (4, 5)) * tpl).sum((-1, -2))
    assert r.method == "raw" and r.peak == np.unravel_index(ref.argmax(), ref.shape)
    assert r.score == pytest.approx(ref.max(), abs=1e-12)
    with pytest.raises(InputError, match=r"^image must be one image"):
        find_template(np.zeros((2, 1, 5, 5)), np.ones((2, 2)))
    with pytest.raises(InputError, match=r"^template must be one image"):
        find_template(np.zeros((5, 5)), rng.random((2, 1, 2, 2)))


def _fields(m):
    return [(c.scale, c.image_level, c.template_level, c.size) for c in m.candidates]


def test_multiscale_default_scale_list_and_fields():
    # 128 x 128 image, 16 x 16 template, defaults levels=4, template_levels=2, min_template_size=8:
    # image levels 128, 64, 32, 16 (the last exactly the template height and width: still searched);
    # template level 1 is ceil(16/2) = 8 = min_template_size: still searched. size = 16 * scale.
    rng = np.random.default_rng(7)
    img = rng.random((128, 128))
    m = find_template_multiscale(img, img[16:32, 32:48], "ncc")
    assert _fields(m) == [
        (1.0, 0, 0, (16, 16)),
        (2.0, 1, 0, (32, 32)),
        (4.0, 2, 0, (64, 64)),
        (8.0, 3, 0, (128, 128)),
        (0.5, 0, 1, (8, 8)),
    ]
    assert m.candidates[0].peak == (16, 32) and m.candidates[0].score == pytest.approx(1.0)
    b = m.best
    assert (b.peak, b.scale, b.method, b.size, b.response.shape) == ((16, 32), 1.0, "zncc", (16, 16), (113, 113))
    assert b.score == pytest.approx(1.0)
    assert find_template_multiscale(img, img[16:32, 32:48], "zncc").best.method == "zncc"


def test_multiscale_raw_default_levels_is_four():
    # 1 x 1 template [[1]], raw: the response is the image itself; levels 16, 8, 4, 2 (a 5th, 1 x 1,
    # would still fit: the default stops at 4). Blurred levels are weighted means (weights sum to 1),
    # so their max is below the input max: the best is level 0 at the input's argmax, score = its value.
    rng = np.random.default_rng(8)
    img = rng.random((16, 16))
    m = find_template_multiscale(img, np.ones((1, 1)), "raw", template_levels=1)
    assert _fields(m) == [(1.0, 0, 0, (1, 1)), (2.0, 1, 0, (2, 2)), (4.0, 2, 0, (4, 4)), (8.0, 3, 0, (8, 8))]
    yx = np.unravel_index(img.argmax(), img.shape)
    assert m.peak == (int(yx[0]), int(yx[1])) and m.score == img.max() and m.best.method == "raw"
    np.testing.assert_array_equal(m.best.response, img)


def test_multiscale_default_template_levels_is_two():
    # 32 x 32 template on a 40 x 40 image: image level 1 is 20 x 20 < 32 (stop); template level 1 is
    # 16 x 16; the default template_levels=2 stops there (level 2, 8 x 8, would still be >= 8)
    rng = np.random.default_rng(9)
    img = rng.random((40, 40))
    m = find_template_multiscale(img, img[4:36, 6:38])
    assert _fields(m) == [(1.0, 0, 0, (32, 32)), (0.5, 0, 1, (16, 16))]
    assert (m.peak, m.scale) == ((4, 6), 1.0)


def test_multiscale_stops_on_either_side():
    rng = np.random.default_rng(10)
    # 14 x 20 template on 30 x 40: image level 1 is 15 x 20 (width exactly 20: searched), level 2 is
    # 8 x 10 (stop); template level 1 is 7 x 10: its SHORT side 7 < 8, so no template level
    img = rng.random((30, 40))
    m = find_template_multiscale(img, img[10:24, 12:32])
    assert _fields(m) == [(1.0, 0, 0, (14, 20)), (2.0, 1, 0, (28, 40))]
    assert (m.peak, m.scale, m.best.method) == ((10, 12), 1.0, "zncc")
    # 8 x 8 template on a tall narrow 16 x 64 image: level 1 is 8 x 32 (height exactly 8), level 2 is
    # 4 x 16, too short though wide enough: stop
    img = rng.random((16, 64))
    m = find_template_multiscale(img, img[5:13, 40:48], levels=4)
    assert _fields(m) == [(1.0, 0, 0, (8, 8)), (2.0, 1, 0, (16, 16))]
    assert m.peak == (5, 40)


def test_multiscale_level_arguments():
    rng = np.random.default_rng(11)
    img = rng.random((20, 20))
    tpl = img[2:10, 3:11]
    m = find_template_multiscale(img, tpl, levels=1, template_levels=1)  # 1 is the smallest valid value
    assert _fields(m) == [(1.0, 0, 0, (8, 8))] and m.peak == (2, 3)
    for bad in (True, 0, 2.5):
        with pytest.raises(InputError, match=r"^levels must"):
            find_template_multiscale(img, tpl, levels=bad)
        with pytest.raises(InputError, match=r"^template_levels must"):
            find_template_multiscale(img, tpl, template_levels=bad)


# -- correlate: several templates at once, numerically hard offsets ------------------------------


def test_zero_mean_subtracts_each_templates_own_mean():
    rng = np.random.default_rng(12)
    img = rng.random((7, 8))
    tpls = np.stack([rng.random((3, 3)), 5.0 + rng.random((3, 3))])[:, None]  # (K=2, C=1, 3, 3), means ~0.5, ~5.5
    out = correlate(img, tpls, "zero_mean")
    windows = np.lib.stride_tricks.sliding_window_view(img, (3, 3))  # (5, 6, 3, 3)
    for k in range(2):
        t0 = tpls[k, 0] - tpls[k, 0].mean()
        np.testing.assert_allclose(out[k], (windows * t0).sum((-1, -2)), atol=1e-12)


def test_zero_mean_exact_on_a_huge_offset():
    # image = 1e12 + small integers (exact in float64). sum(t - mean t) = 0, so the response equals that
    # of the small integers alone (the oracle); summing products of values ~1e12 would lose ~1e-4.
    rng = np.random.default_rng(13)
    k = rng.integers(0, 8, size=(9, 10)).astype(np.float64)
    tpl = rng.random((3, 3))
    out = correlate(1e12 + k, tpl, "zero_mean")
    ref = (np.lib.stride_tricks.sliding_window_view(k, (3, 3)) * (tpl - tpl.mean())).sum((-1, -2))
    np.testing.assert_allclose(out, ref, atol=1e-6)


def test_zncc_batch_images_with_very_different_offsets():
    # ZNCC ignores a brightness offset per image; a batch where one image sits at 1e6 must still
    # give each image its own skimage scores (the oracle runs on the image without the offset)
    rng = np.random.default_rng(14)
    a, b = rng.random((12, 13)), rng.random((12, 13))
    tpl = rng.random((3, 4))
    out = correlate(np.stack([a, 1e6 + b])[:, None], tpl, "zncc")  # (N=2, C=1, 12, 13) -> (2, 10, 10)
    np.testing.assert_allclose(out[0], match_template(a, tpl), atol=1e-6)
    np.testing.assert_allclose(out[1], match_template(b, tpl), atol=1e-6)


def test_zncc_flat_threshold_is_inclusive_at_float32_eps():
    # template [0, 1]: t0 = [-1/2, 1/2], ||t0||^2 = 1/2. Window [0, d]: W - mean W = [-d/2, d/2],
    # ||.||^2 = d^2/2, so denominator = sqrt(d^2/2 * 1/2) = d/2 and the numerator is d/2 as well.
    # d = 2^-22: denominator = 2^-23 = float32 eps exactly -> counted as flat -> 0 (documented: <= eps);
    # d = 2^-21: denominator = 2^-22 > eps -> 1 (a perfect, if faint, match)
    tpl = np.array([[0.0, 1.0]])
    assert correlate(np.array([[0.0, 2.0**-22]]), tpl).tolist() == [[0.0]]
    assert correlate(np.array([[0.0, 2.0**-21]]), tpl).tolist() == [[1.0]]
