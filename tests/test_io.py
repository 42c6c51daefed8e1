import numpy as np
import pytest
from PIL import Image

from convlens.errors import ConvlensError, InputError
from convlens.io import as_uint8_rgb, list_images, load_image


def _save(tmp_path, arr_or_img, name, **kw):
    img = arr_or_img if isinstance(arr_or_img, Image.Image) else Image.fromarray(arr_or_img)
    p = tmp_path / name
    img.save(p, **kw)
    return p


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "I;16", "I", "F", "CMYK", "1", "RGB"])
def test_every_mode_becomes_rgb(tmp_path, mode):
    img = Image.new(mode, (7, 5))
    ext = "tiff" if mode in ("I;16", "I", "F", "CMYK") else "png"
    p = _save(tmp_path, img, f"x.{ext}")
    arr = load_image(p)
    assert arr.shape == (5, 7, 3) and arr.dtype == np.uint8


def test_alpha_composited_on_white(tmp_path):
    p = _save(tmp_path, Image.new("RGBA", (3, 3), (0, 0, 0, 0)), "t.png")
    assert (load_image(p) == 255).all()


def test_16bit_gray_is_rescaled(tmp_path):
    a = np.array([[0, 1000], [2000, 4000]], dtype=np.uint16)
    p = _save(tmp_path, Image.fromarray(a), "g.png")
    out = load_image(p)[..., 0]
    assert out.min() == 0 and out.max() == 255


def test_exif_orientation_applied(tmp_path):
    img = Image.new("RGB", (6, 2))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    p = tmp_path / "o.jpg"
    img.save(p, exif=exif)
    assert load_image(p).shape == (6, 2, 3)


def test_truncated_file_names_the_file(tmp_path, chelsea):
    p = _save(tmp_path, chelsea, "c.png")
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="c.png"):
        load_image(p)


def test_not_an_image(tmp_path):
    p = tmp_path / "notes.jpg"
    p.write_text("hello")
    with pytest.raises(InputError, match="not an image"):
        load_image(p)


def test_bomb_guard_refuses_before_decoding(tmp_path):
    p = _save(tmp_path, Image.new("L", (300, 300)), "big.png")
    with pytest.raises(InputError, match="max_pixels"):
        load_image(p, max_pixels=10_000)
    assert load_image(p, max_pixels=None).shape == (300, 300, 3)


def test_urls_and_missing_refused(tmp_path):
    with pytest.raises(InputError, match="URL"):
        load_image("http://example.com/cat.jpg")
    with pytest.raises(ConvlensError, match="does not exist"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(ConvlensError, match="folder"):
        load_image(tmp_path)


def test_list_images(tmp_path):
    _save(tmp_path, np.zeros((2, 2, 3), np.uint8), "a.png")
    (tmp_path / "sub").mkdir()
    _save(tmp_path / "sub", np.zeros((2, 2, 3), np.uint8), "b.JPG")
    (tmp_path / "readme.txt").write_text("x")
    assert [p.name for p in list_images(tmp_path)] == ["a.png", "b.JPG"]


def test_as_uint8_rgb_validates():
    assert as_uint8_rgb(np.ones((2, 2, 1))).max() == 255
    with pytest.raises(InputError, match="NaN"):
        as_uint8_rgb(np.full((2, 2), np.nan))
    with pytest.raises(InputError, match="shape"):
        as_uint8_rgb(np.zeros((2, 2, 2)))


def test_list_images_skips_hidden(tmp_path):
    _save(tmp_path, np.zeros((2, 2, 3), np.uint8), "a.png")
    (tmp_path / ".ipynb_checkpoints").mkdir()
    _save(tmp_path / ".ipynb_checkpoints", np.zeros((2, 2, 3), np.uint8), "a-checkpoint.png")
    (tmp_path / "._a.png").write_bytes(b"\x00\x05\x16\x07")  # macOS resource fork
    assert [p.name for p in list_images(tmp_path)] == ["a.png"]


def test_iter_image_batches_one_policy(tmp_path):
    """A named file must be readable; inside a folder an unreadable file is skipped and reported in the
    batch (no list argument is mutated); a folder with nothing readable is one clear error."""
    from convlens.io import iter_image_batches

    d = tmp_path / "imgs"
    d.mkdir()
    for k in range(3):
        Image.fromarray(np.full((4, 5, 3), 40 * k, np.uint8)).save(d / f"{k}.png")
    (d / "1b.jpg").write_bytes(b"\xff\xd8 truncated")
    batches = list(iter_image_batches([d], 2))
    assert [[f.name for f in b.files] for b in batches] == [["0.png", "1.png"], ["2.png"]]
    assert [[s.path for s in b.skipped] for b in batches] == [[], [str(d / "1b.jpg")]]  # sorted: 1b.jpg is 3rd
    assert "1b.jpg" in batches[1].skipped[0].reason and [b.total for b in batches] == [4, 4]
    assert int(batches[1].images[0][0, 0, 0]) == 80  # the pixels of 2.png, in file order
    with pytest.raises(InputError, match="1b.jpg"):  # named explicitly: an error
        list(iter_image_batches([d / "0.png", d / "1b.jpg"], 8))
    with pytest.raises(InputError, match="1b.jpg"):
        list(iter_image_batches([d], 8, on_error="raise"))
    only_bad = tmp_path / "bad"
    only_bad.mkdir()
    (only_bad / "x.png").write_bytes(b"nope")
    with pytest.raises(InputError, match="none of the 1 image file"):
        list(iter_image_batches([only_bad]))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no image files found"):
        list(iter_image_batches([empty]))
