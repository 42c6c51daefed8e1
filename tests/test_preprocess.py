"""bundle.preprocess never reinterprets its input (issue 16, item 2): every accepted kind of image gives the tensor
torchvision computes from the same picture as a PIL image; anything ambiguous is an InputError naming the layouts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from convlens.errors import InputError
from convlens.models.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocess

SIZE = 32


def oracle(img: np.ndarray) -> torch.Tensor:
    """torchvision's own pipeline on the PIL image: squash-resize, ToTensor, Normalize -> (1, 3, S, S)."""
    tf = T.Compose(
        [
            T.Resize((SIZE, SIZE), interpolation=T.InterpolationMode.BILINEAR),
            T.ToTensor(),
            T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )
    return tf(Image.fromarray(img)).unsqueeze(0)


@pytest.fixture(scope="module")
def pre() -> Preprocess:
    return Preprocess(size=SIZE, resize="squash")


@pytest.fixture(scope="module")
def img(chelsea) -> np.ndarray:
    return np.ascontiguousarray(chelsea[:150:2, :200:2])  # (75, 100, 3), small and not square


def kinds(img: np.ndarray, tmp_path) -> dict[str, object]:
    path = tmp_path / "im.png"
    Image.fromarray(img).save(path)
    chw = torch.from_numpy(img).permute(2, 0, 1)
    return {
        "PIL": Image.fromarray(img),
        "HWC uint8 array": img,
        "HWC float [0,1] array": img.astype(np.float32) / 255.0,
        "CHW float tensor": chw.float() / 255.0,
        "CHW uint8 tensor": chw,
        "NCHW float tensor": chw.float().unsqueeze(0) / 255.0,
        "HWC float tensor": torch.from_numpy(img).float() / 255.0,
        "CHW array": np.moveaxis(img, -1, 0),
        "NHWC array": img[None],
        "path str": str(path),
        "Path": path,
        "list of one": [Image.fromarray(img)],
    }


@pytest.mark.parametrize(
    "kind",
    [
        "PIL",
        "HWC uint8 array",
        "HWC float [0,1] array",
        "CHW float tensor",
        "CHW uint8 tensor",
        "NCHW float tensor",
        "HWC float tensor",
        "CHW array",
        "NHWC array",
        "path str",
        "Path",
        "list of one",
    ],
)
def test_every_kind_gives_the_tensor_torchvision_computes(pre, img, tmp_path, kind):
    x = pre(kinds(img, tmp_path)[kind])
    assert x.shape == (1, 3, SIZE, SIZE)
    # torchvision resizes the same PIL image; 1 unit of 0..255 after normalization is 1/255/0.225 = 0.0175
    assert torch.allclose(x, oracle(img), atol=1e-5), float((x - oracle(img)).abs().max())


def test_a_mixed_list_keeps_order_and_count(pre, img, tmp_path):
    k = kinds(img, tmp_path)
    flipped = np.ascontiguousarray(img[:, ::-1])
    batch = torch.stack([torch.from_numpy(img).permute(2, 0, 1), torch.from_numpy(flipped).permute(2, 0, 1)])
    x = pre([k["path str"], batch, Image.fromarray(flipped)])  # 1 + 2 + 1 images
    ref = torch.cat([oracle(img), oracle(img), oracle(flipped), oracle(flipped)])
    assert x.shape == (4, 3, SIZE, SIZE) and torch.allclose(x, ref, atol=1e-5)


def test_the_top1_of_a_chw_tensor_is_the_top1_of_the_image(lite0, chelsea):
    """The reported failure: a CHW tensor became 3 grayscale images and the top-1 changed."""
    x_img = lite0.preprocess(chelsea)
    x_t = lite0.preprocess(torch.from_numpy(chelsea).permute(2, 0, 1).float() / 255)
    assert x_t.shape == (1, 3, 224, 224) and torch.allclose(x_t, x_img, atol=1e-5)
    with torch.no_grad():
        assert int(lite0.model(x_t).argmax()) == int(lite0.model(x_img).argmax()) == 285


def test_gray_inputs(pre):
    g = np.random.default_rng(0).integers(0, 256, (20, 30), dtype=np.uint8)
    ref = oracle(np.repeat(g[..., None], 3, 2))
    for x in (g, torch.from_numpy(g), torch.from_numpy(g)[None], g[..., None], Image.fromarray(g, "L")):
        assert torch.allclose(pre(x), ref, atol=1e-5)


@pytest.mark.parametrize(
    "bad, words",
    [
        (torch.zeros(3, 5, 3), "ambiguous"),  # (C, H, W) or (H, W, C)?
        (torch.zeros(2, 3, 5, 4), "ambiguous"),  # (N, C, H, W) or (N, H, W, C)?
        (torch.zeros(5, 10, 10), "no axis of 1, 3 or 4 channels"),
        (np.zeros((5, 10, 10)), "no axis of 1, 3 or 4 channels"),
        (torch.zeros(10), "cannot read shape (10,)"),
        (torch.zeros(1, 1, 3, 8, 8), "cannot read shape"),
        (torch.zeros(0, 3, 8, 8), "cannot read shape"),
        (torch.randn(3, 8, 8), "already normalized"),
        (np.full((8, 8, 3), np.nan), "NaN"),
        (np.full((8, 8, 3), 300.0), "[0, 1]"),
        (42, "cannot preprocess a int"),
        ([], "no images"),
    ],
)
def test_ambiguous_or_bad_input_is_an_input_error_naming_the_layouts(pre, bad, words):
    with pytest.raises(InputError) as e:
        pre(bad)
    assert words in str(e.value)
    if "ambiguous" in words or "channels" in words:
        assert "(C, H, W)" in str(e.value) and "(H, W, C)" in str(e.value)


def test_a_missing_path_is_read_not_reshaped(pre, tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        pre(str(tmp_path / "nope.png"))


@given(
    h=st.integers(5, 40),
    w=st.integers(5, 40),
    n=st.integers(1, 3),
    seed=st.integers(0, 2**16),
)
def test_nchw_tensor_equals_its_images_as_pil(h, w, n, seed):
    pre = Preprocess(size=8, resize="crop")
    imgs = np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)
    t = torch.from_numpy(imgs).permute(0, 3, 1, 2)
    assert torch.equal(pre(t), pre([Image.fromarray(im) for im in imgs]))
