"""convlens.data: built-in datasets, ImageFolder reading (corrupt files skipped and counted), per-image augmentation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image
from torchvision.transforms import v2
from train_helpers import make_folder

from convlens.data import (
    Augment,
    ImageDataset,
    load_dataset,
    parse_augment_options,
    sample_seed,
    stratified_split,
    to_tensor_images,
)
from convlens.errors import DataError, InputError


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_lfw_builtin_is_balanced_and_split_stratified():
    ds = load_dataset("lfw", image_size=32, seed=3)
    assert ds.classes == ["face", "non-face"]
    assert len(ds.train) == 160 and len(ds.val) == 40
    assert ds.val.class_counts() == {"face": 20, "non-face": 20}
    assert ds.train.images.dtype == torch.uint8 and tuple(ds.train.images.shape[1:]) == (3, 32, 32)
    # gray -> 3 equal channels
    assert torch.equal(ds.train.images[:, 0], ds.train.images[:, 2])
    # the split is seeded: same seed same split, other seed another split
    again = load_dataset("lfw", image_size=32, seed=3)
    other = load_dataset("lfw", image_size=32, seed=4)
    assert torch.equal(ds.val.images, again.val.images)
    assert not torch.equal(ds.val.images, other.val.images)


def test_digits_builtin_matches_sklearn():
    from sklearn.datasets import load_digits

    ds = load_dataset("digits", image_size=8, val_fraction=0.25)
    d = load_digits()
    assert ds.num_classes == 10 and len(ds.train) + len(ds.val) == len(d.images)
    # at native size the pixels are sklearn's 0..16 scaled to 0..255
    total = int(ds.train.images[:, 0].sum()) + int(ds.val.images[:, 0].sum())
    assert total == int((d.images * (255 / 16)).round().sum())
    assert sorted(ds.train.class_counts().values())[0] > 100  # every digit well represented


def test_stratified_split_keeps_class_ratios():
    y = np.array([0] * 30 + [1] * 10 + [2] * 5)
    tr, va = stratified_split(y, 0.2, seed=0)
    assert sorted(np.concatenate([tr, va]).tolist()) == list(range(len(y)))
    assert np.bincount(y[va]).tolist() == [6, 2, 1]
    with pytest.raises(DataError, match="at least 2"):
        stratified_split(np.array([0, 0, 1]), 0.5, seed=0)


def _corrupt_files(root: Path) -> list[Path]:
    good = root / "left" / "000.png"
    truncated = root / "left" / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:40])
    fake = root / "right" / "notanimage.jpg"
    fake.write_text("this is not a jpeg")
    return [truncated, fake]


def test_imagefolder_skips_counts_and_reports_corrupt_files(tmp_path):
    root = make_folder(tmp_path / "data", n_per_class=10, size=20)
    bad = _corrupt_files(root)
    ds = load_dataset(root, image_size=16, seed=0)
    assert ds.classes == ["left", "right"]
    assert len(ds.train) + len(ds.val) == 20  # the 2 bad files are not in the data
    assert sorted(s.path for s in ds.skipped) == sorted(str(b) for b in bad)
    assert all(s.reason for s in ds.skipped) and ds.summary()["skipped"] == 2
    assert ds.train.skipped == ds.skipped  # the training set carries the report too
    # iterating a whole epoch never touches the disk again, so it cannot crash on those files
    x, y = ds.train.batch(list(range(len(ds.train))))
    assert x.shape == (len(ds.train), 3, 16, 16) and set(y.tolist()) == {0, 1}


def test_imagefolder_train_val_layout(tmp_path):
    make_folder(tmp_path / "d" / "train", n_per_class=6, size=12)
    make_folder(tmp_path / "d" / "val", n_per_class=2, size=12, seed=1)
    ds = load_dataset(tmp_path / "d", image_size=12)
    assert (len(ds.train), len(ds.val)) == (12, 4)
    make_folder(tmp_path / "e" / "train", n_per_class=2, size=12)
    make_folder(tmp_path / "e" / "val", n_per_class=2, size=12, classes=("left", "other"))
    with pytest.raises(DataError, match="must match"):
        load_dataset(tmp_path / "e", image_size=12)


def test_data_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no class subfolders"):
        load_dataset(tmp_path / "empty")
    loose = tmp_path / "loose"
    loose.mkdir()
    Image.new("RGB", (4, 4)).save(loose / "a.png")
    with pytest.raises(DataError, match="loose images"):
        load_dataset(loose)
    make_folder(tmp_path / "one", n_per_class=3, size=8, classes=("only",))
    with pytest.raises(DataError, match="at least 2"):
        load_dataset(tmp_path / "one")
    root = make_folder(tmp_path / "badclass", n_per_class=3, size=8)
    (root / "broken").mkdir()
    (root / "broken" / "x.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(DataError, match="class 'broken'.*no valid image"):
        load_dataset(root)
    (root / "broken" / "x.png").unlink()
    with pytest.raises(DataError, match="no image files"):
        load_dataset(root)
    with pytest.raises(DataError, match="neither a built-in"):
        load_dataset(tmp_path / "missing")
    with pytest.raises(DataError, match="image_size"):
        load_dataset("lfw", image_size=2)


def test_to_tensor_images_gray_and_color():
    t = to_tensor_images([np.full((5, 7), 9, np.uint8), np.zeros((3, 3, 3), np.uint8)], 4)
    assert t.shape == (2, 3, 4, 4) and int(t[0].min()) == 9 and int(t[1].max()) == 0


# -- augmentation -------------------------------------------------------------------------------


def _same_images(n: int = 4, size: int = 16) -> ImageDataset:
    img = torch.from_numpy(np.random.default_rng(0).integers(0, 255, (3, size, size), dtype=np.uint8))
    return ImageDataset(img.expand(n, 3, size, size).contiguous(), [0] * n, ["a"])


def test_augmentation_is_random_per_image_yet_reproducible():
    aug = Augment(rotation=30, width_shift=0.1, height_shift=0.1, shear=10, zoom=0.2, horizontal_flip=True)
    ds = _same_images().with_augment(aug)
    ds.set_epoch(0)
    x, _ = ds.batch([0, 1, 2, 3])
    # the four inputs are identical; per-image draws make four different outputs
    flat = x.flatten(1)
    assert all(not torch.equal(flat[i], flat[j]) for i in range(4) for j in range(i + 1, 4))
    again, _ = ds.batch([0, 1, 2, 3])
    assert torch.equal(x, again)  # same (seed, epoch, index) -> same draw
    assert torch.equal(ds[2][0], x[2])  # batch == item, any order
    ds.set_epoch(1)
    assert not torch.equal(ds.batch([0])[0], x[:1])  # a new epoch, new variants
    other = _same_images().with_augment(aug)
    other.seed = 1
    assert not torch.equal(other.batch([0])[0], x[:1])


def test_sample_seed_independent_streams():
    seeds = {sample_seed(s, e, i) for s in range(3) for e in range(3) for i in range(50)}
    assert len(seeds) == 450


def test_flip_only_equals_mirror_and_identity_is_untouched():
    img = torch.arange(2 * 3 * 5, dtype=torch.uint8).view(2, 3, 5)
    aug = Augment(horizontal_flip=True)
    flips = [aug.sample(torch.Generator().manual_seed(s)).flip for s in range(64)]
    assert 16 < sum(flips) < 48  # p = 0.5
    p = aug.sample(torch.Generator().manual_seed(flips.index(True)))
    assert torch.equal(aug.apply(img, p), img.flip(-1))
    assert Augment()(img, torch.Generator()) is img


@pytest.mark.parametrize("mode", ["nearest", "reflect", "wrap"])
def test_fill_modes_never_leave_empty_corners(mode):
    """A constant image stays constant under any draw when the border is filled from the image."""
    img = torch.full((3, 20, 30), 200, dtype=torch.uint8)
    aug = Augment(rotation=45, width_shift=0.3, height_shift=0.3, shear=20, zoom=0.4, fill_mode=mode)
    for s in range(6):
        out = aug(img, torch.Generator().manual_seed(s))
        assert out.shape == img.shape and out.dtype == torch.uint8
        assert int(out.min()) >= 199, (mode, s)
    const = Augment(rotation=45, zoom=0.4, fill_mode="constant", cval=0)
    outs = [const(img, torch.Generator().manual_seed(s)) for s in range(4)]
    assert any(int(o.min()) == 0 for o in outs)


def test_keras_augment_is_a_v2_transform():
    t = v2.Compose(
        [
            Augment(rotation=20, zoom=0.1).as_transform(torch.Generator().manual_seed(0)),
            v2.ToDtype(torch.float32, scale=True),
        ]
    )
    out = t(torch.zeros(3, 10, 10, dtype=torch.uint8))
    assert out.dtype == torch.float32 and out.shape == (3, 10, 10)


@given(
    rotation=st.floats(0, 180),
    shift=st.floats(0, 1),
    shear=st.floats(0, 80),
    zoom=st.floats(0, 0.9),
    mode=st.sampled_from(["constant", "nearest", "reflect", "wrap"]),
    h=st.integers(4, 24),
    w=st.integers(4, 24),
    seed=st.integers(0, 2**31),
)
def test_augment_any_options_keep_shape_and_dtype(rotation, shift, shear, zoom, mode, h, w, seed):
    aug = Augment(
        rotation=rotation,
        width_shift=shift,
        height_shift=shift,
        shear=shear,
        zoom=zoom,
        horizontal_flip=True,
        fill_mode=mode,
    )
    img = torch.randint(0, 255, (3, h, w), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))
    out = aug(img, torch.Generator().manual_seed(seed))
    assert out.shape == img.shape and out.dtype == img.dtype


def test_parse_augment_options():
    a = parse_augment_options("rotation_range=30, zoom=0.2, shift=0.1, horizontal_flip=true, fill_mode=reflect")
    assert (a.rotation, a.zoom, a.width_shift, a.height_shift, a.horizontal_flip, a.fill_mode) == (
        30,
        0.2,
        0.1,
        0.1,
        True,
        "reflect",
    )
    assert parse_augment_options(None).is_identity
    for bad, msg in [
        ("spin=3", "unknown augmentation option"),
        ("rotation", "name=value"),
        ("zoom=abc", "needs a number"),
        ("fill_mode=mirror", "fill_mode"),
        ("rotation=-5", ">= 0"),
        ("zoom=1.5", "zoom < 1"),
        ("horizontal_flip=maybe", "true or false"),
    ]:
        with pytest.raises(InputError, match=msg):
            parse_augment_options(bad)


def test_train_folder_with_test_or_valid_sibling_is_not_two_classes(tmp_path):
    # train/ + valid/ (Roboflow naming) is a train/val layout; train/ + test/ splits train/ (test/ is never read):
    # neither may silently become a 2-class 'train' vs 'test' problem
    make_folder(tmp_path / "a" / "train", n_per_class=5, size=12)
    make_folder(tmp_path / "a" / "valid", n_per_class=2, size=12, seed=1)
    ds = load_dataset(tmp_path / "a", image_size=12)
    assert ds.classes == ["left", "right"] and (len(ds.train), len(ds.val)) == (10, 4)
    make_folder(tmp_path / "b" / "train", n_per_class=5, size=12)
    make_folder(tmp_path / "b" / "test", n_per_class=2, size=12, seed=1)
    ds = load_dataset(tmp_path / "b", image_size=12)
    assert ds.classes == ["left", "right"] and len(ds.train) + len(ds.val) == 10


def test_too_few_images_error_names_the_class(tmp_path):
    make_folder(tmp_path / "d", n_per_class=3, size=8, classes=("cats and dogs", "lonely one"))
    for f in sorted((tmp_path / "d" / "lonely one").iterdir())[1:]:
        f.unlink()
    with pytest.raises(DataError, match="class 'lonely one' has 1 valid image"):
        load_dataset(tmp_path / "d", image_size=8)


def test_hidden_files_and_folders_in_a_class_are_ignored(tmp_path):
    root = make_folder(tmp_path / "d", n_per_class=4, size=10)
    ck = root / "left" / ".ipynb_checkpoints"
    ck.mkdir()
    (ck / "000-checkpoint.png").write_bytes((root / "left" / "000.png").read_bytes())  # a Jupyter copy: not a new image
    (root / "right" / "._000.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")  # macOS resource fork: not an image
    ds = load_dataset(root, image_size=10)
    assert len(ds.train) + len(ds.val) == 8 and ds.skipped == []


# -- colour jitter, vertical flip, random resized crop, cutout; one default pipeline --------------


def _photo(size=48):
    import skimage.data
    from PIL import Image

    return np.array(Image.fromarray(skimage.data.chelsea()).resize((size, size), Image.BILINEAR))


@pytest.mark.parametrize("kind, enhancer", [("brightness", "Brightness"), ("saturation", "Color")])
def test_colour_jitter_matches_pil_imageenhance(kind, enhancer):
    from PIL import Image, ImageEnhance

    from convlens.data import AugmentParams

    img = _photo()
    t = torch.from_numpy(img).permute(2, 0, 1).contiguous()
    p = AugmentParams(0.0, (0.0, 0.0), 0.0, 1.0, False, **{kind: 1.4})
    ours = Augment(**{kind: 0.5}).apply(t, p).permute(1, 2, 0).numpy().astype(int)
    ref = np.asarray(getattr(ImageEnhance, enhancer)(Image.fromarray(img)).enhance(1.4)).astype(int)
    assert np.abs(ours - ref).max() <= 2  # rounding of the blend only


def test_vertical_flip_crop_and_cutout_by_hand():
    from PIL import Image

    from convlens.data import AugmentParams

    img = _photo(40)
    t = torch.from_numpy(img).permute(2, 0, 1).contiguous()
    base = dict(angle=0.0, translate=(0.0, 0.0), shear=0.0, scale=1.0, flip=False)
    a = Augment(vertical_flip=True, crop=0.5, cutout=0.25, cval=7)
    flipped = a.apply(t, AugmentParams(**base, vflip=True)).permute(1, 2, 0).numpy()
    assert np.array_equal(flipped, img[::-1])
    cut = a.apply(t, AugmentParams(**base, cutout=(5, 30, 10, 10))).permute(1, 2, 0).numpy()
    mask = np.zeros(img.shape[:2], bool)
    mask[5:15, 30:40] = True
    assert (cut[mask] == 7).all() and np.array_equal(cut[~mask], img[~mask])
    crop = a.apply(t, AugmentParams(**base, crop=(4, 8, 20, 24))).permute(1, 2, 0).numpy().astype(int)
    ref = np.asarray(Image.fromarray(img[4:24, 8:32]).resize((40, 40), Image.BILINEAR)).astype(int)
    assert np.abs(crop - ref).mean() < 2.0  # torchvision's antialiased bilinear vs PIL's: same crop, same size


def test_new_options_draw_valid_boxes_and_keep_keras_streams():
    old = Augment(rotation=20, zoom=0.1, horizontal_flip=True)
    assert old.sample(torch.Generator().manual_seed(3)) == Augment(
        rotation=20, zoom=0.1, horizontal_flip=True, brightness=0.0
    ).sample(torch.Generator().manual_seed(3))
    a = Augment(crop=0.3, cutout=0.5, brightness=0.5, contrast=0.2, saturation=0.1, vertical_flip=True)
    for s in range(200):
        p = a.sample(torch.Generator().manual_seed(s), (30, 50))
        top, left, h, w = p.crop
        assert top >= 0 and top + h <= 30 and left >= 0 and left + w <= 50
        assert 0.3 * 1500 * 0.8 <= h * w <= 1500  # area fraction in [0.3, 1] up to rounding
        ct, cl, ch, cw = p.cutout
        assert ct >= 0 and ct + ch <= 30 and cl >= 0 and cl + cw <= 50 and ch <= 15 and cw <= 15
        assert 0.5 <= p.brightness <= 1.5 and 0.8 <= p.contrast <= 1.2 and 0.9 <= p.saturation <= 1.1
    x = torch.randint(0, 255, (3, 30, 50), dtype=torch.uint8)
    assert a(x, torch.Generator().manual_seed(0)).shape == x.shape
    with pytest.raises(InputError, match="crop"):
        Augment(crop=1.5)
    assert parse_augment_options("vflip=1,brightness=0.2,crop=0.5,cutout=0.2").vertical_flip


def test_preview_and_training_share_one_default(tmp_path, capsys):
    import json as _json

    from PIL import Image

    from convlens.cli import main
    from convlens.data import augment_for
    from convlens.train import TrainConfig

    for data in ("lfw", "digits"):
        assert TrainConfig(data=data).augment_options() == augment_for(None, data)
    Image.fromarray(_photo()).save(tmp_path / "a.png")
    assert main(["augment", str(tmp_path / "a.png"), "--n", "2", "--out", str(tmp_path / "g.png"), "--json"]) == 0
    shown = _json.loads(capsys.readouterr().out)["options"]
    assert shown == TrainConfig(data="lfw").augment_options().to_dict()
