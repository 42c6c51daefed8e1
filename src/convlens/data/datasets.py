"""Small labelled image datasets for training: the built-in ``lfw`` and ``digits`` (offline) and any
ImageFolder-layout folder (``root/<class>/*.jpg``, optionally ``root/train/`` + ``root/val/``).

Every image is read once through :func:`convlens.io.load_image` (the one image reader), resized to
``image_size`` x ``image_size`` RGB and kept in memory as uint8 -- the target is *small* data, and
decoding up front means a corrupt file is found, skipped, counted and reported before training,
never mid-epoch. Grayscale becomes 3 equal channels. Augmentation (:class:`~convlens.data.Augment`)
is applied per sample in ``__getitem__``, seeded by ``(seed, epoch, index)``.

Example:
    >>> ds = load_dataset("digits", image_size=16, seed=0)
    >>> ds.classes[:3], tuple(ds.train.images.shape[1:]), len(ds.train) + len(ds.val)
    (['0', '1', '2'], (3, 16, 16), 1797)
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from convlens.data.augment import Augment, sample_seed
from convlens.errors import ConvlensError, DataError
from convlens.io import IMAGE_EXTENSIONS, SkippedFile, as_uint8_rgb, load_image  # SkippedFile: io's, one type

__all__ = [
    "ImageDataset",
    "DatasetSplit",
    "SkippedFile",
    "load_dataset",
    "BUILTIN_DATASETS",
    "stratified_split",
    "to_tensor_images",
]

BUILTIN_DATASETS = ("lfw", "digits")


class ImageDataset(torch.utils.data.Dataset):
    """In-memory images ``(N, 3, S, S)`` uint8 + integer targets; items are ``(float image in [0, 1], target)``.

    ``augment`` (if not identity) is applied per item with a generator seeded by
    ``sample_seed(seed, epoch, index)``; call :meth:`set_epoch` each epoch (as with ``DistributedSampler``).

    Example:
        >>> ds = ImageDataset(torch.zeros(4, 3, 8, 8, dtype=torch.uint8), [0, 1, 0, 1], ["a", "b"])
        >>> x, y = ds[1]
        >>> tuple(x.shape), y
        ((3, 8, 8), 1)
    """

    def __init__(
        self,
        images: torch.Tensor,
        targets: list[int] | np.ndarray | torch.Tensor,
        classes: list[str],
        *,
        augment: Augment | None = None,
        seed: int = 0,
        skipped: list[SkippedFile] | None = None,
    ) -> None:
        if images.ndim != 4 or images.shape[1] != 3 or images.dtype != torch.uint8:
            raise DataError(f"images must be a uint8 (N, 3, H, W) tensor, got {images.dtype} {tuple(images.shape)}.")
        t = torch.as_tensor(np.asarray(targets), dtype=torch.long)
        if t.ndim != 1 or len(t) != len(images):
            raise DataError(f"got {len(t)} targets for {len(images)} images.")
        if len(t) and (int(t.min()) < 0 or int(t.max()) >= len(classes)):
            raise DataError(f"targets must lie in 0..{len(classes) - 1} for {len(classes)} classes.")
        self.images = images
        self.targets = t
        self.classes = list(classes)
        self.augment = augment
        self.seed = int(seed)
        self.epoch = 0
        self.skipped = list(skipped or [])

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation draws of ``epoch`` (each epoch sees new, reproducible variants)."""
        self.epoch = int(epoch)

    def with_augment(self, augment: Augment | None) -> ImageDataset:
        """A view of the same images with another augmentation."""
        return ImageDataset(
            self.images, self.targets, self.classes, augment=augment, seed=self.seed, skipped=self.skipped
        )

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        img = self.images[index]
        if self.augment is not None and not self.augment.is_identity:
            gen = torch.Generator().manual_seed(sample_seed(self.seed, self.epoch, int(index)))
            img = self.augment(img, gen)
        return img.float().div_(255.0), int(self.targets[index])

    def batch(self, indices: list[int] | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Items ``indices`` stacked: ``((B, 3, S, S) float in [0, 1], (B,) long)``; same values as ``self[i]``.

        Example:
            >>> ds = ImageDataset(torch.zeros(4, 3, 8, 8, dtype=torch.uint8), [0, 1, 0, 1], ["a", "b"])
            >>> ds.batch([2, 3])[1].tolist()
            [0, 1]
        """
        idx = torch.as_tensor(indices, dtype=torch.long)
        if self.augment is None or self.augment.is_identity:
            x = self.images[idx].float().div_(255.0)
        else:
            x = torch.stack([self[int(i)][0] for i in idx]) if len(idx) else self.images[:0].float()
        return x, self.targets[idx]

    def class_counts(self) -> dict[str, int]:
        """Images per class name."""
        counts = torch.bincount(self.targets, minlength=len(self.classes)).tolist()
        return dict(zip(self.classes, counts, strict=True))

    def fingerprint(self) -> str:
        """A short hash of images + targets (identifies cached features)."""
        h = hashlib.sha256()
        h.update(self.images.numpy().tobytes())
        h.update(self.targets.numpy().tobytes())
        return h.hexdigest()[:16]


@dataclass
class DatasetSplit:
    """Train and validation sets of one source, with the class names and the files skipped on reading."""

    name: str
    classes: list[str]
    train: ImageDataset
    val: ImageDataset
    image_size: int
    skipped: list[SkippedFile] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def summary(self) -> dict[str, object]:
        """Counts for reports: classes, train/val sizes, skipped files."""
        return {
            "name": self.name,
            "classes": self.classes,
            "image_size": self.image_size,
            "train": len(self.train),
            "val": len(self.val),
            "skipped": len(self.skipped),
            "skipped_files": [s.__dict__ for s in self.skipped],
        }


def to_tensor_images(arrays: list[np.ndarray] | np.ndarray, image_size: int) -> torch.Tensor:
    """Images (any size; (H, W) gray or (H, W, 3)) -> ``(N, 3, S, S)`` uint8, resized with bilinear (antialiased).

    Example:
        >>> to_tensor_images([np.zeros((25, 25))], 8).shape
        torch.Size([1, 3, 8, 8])
    """
    out = np.empty((len(arrays), image_size, image_size, 3), np.uint8)
    for i, a in enumerate(arrays):
        rgb = as_uint8_rgb(a)
        if rgb.shape[:2] != (image_size, image_size):
            rgb = np.asarray(Image.fromarray(rgb).resize((image_size, image_size), Image.BILINEAR))
        out[i] = rgb
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def stratified_split(
    targets: np.ndarray, val_fraction: float, seed: int, classes: list[str] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded stratified split: per class, ``round(val_fraction * n)`` (at least 1) samples go to validation.

    ``classes`` (optional) names the classes in error messages.

    Example:
        >>> tr, va = stratified_split(np.array([0] * 10 + [1] * 10), 0.2, seed=0)
        >>> len(tr), len(va), sorted(np.bincount(np.array([0] * 10 + [1] * 10)[va]).tolist())
        (16, 4, [2, 2])
    """
    if not 0 < val_fraction < 1:
        raise DataError(f"val_fraction must be in (0, 1), got {val_fraction}.")
    rng = np.random.default_rng(seed)
    train_idx: list[int] = []
    val_idx: list[int] = []
    for c in np.unique(targets):
        idx = np.flatnonzero(targets == c)
        if len(idx) < 2:
            cname = repr(classes[int(c)]) if classes is not None and 0 <= int(c) < len(classes) else str(c)
            raise DataError(
                f"class {cname} has {len(idx)} valid image(s); a train/val split needs at least 2 per class "
                "(add images, or give train/ and val/ folders)."
            )
        idx = idx[rng.permutation(len(idx))]
        n_val = min(len(idx) - 1, max(1, int(round(val_fraction * len(idx)))))
        val_idx += idx[:n_val].tolist()
        train_idx += idx[n_val:].tolist()
    return np.array(sorted(train_idx), dtype=np.int64), np.array(sorted(val_idx), dtype=np.int64)


def _builtin(name: str) -> tuple[list[np.ndarray], np.ndarray, list[str]]:
    if name == "lfw":
        import skimage.data

        faces = skimage.data.lfw_subset()  # (200, 25, 25) float in [0, 1]: 100 faces, then 100 non-faces
        imgs = [(f * 255).round().astype(np.uint8) for f in faces]
        return imgs, np.array([0] * 100 + [1] * 100), ["face", "non-face"]
    from sklearn.datasets import load_digits

    d = load_digits()  # (1797, 8, 8) values 0..16
    imgs = [(im * (255.0 / 16.0)).round().astype(np.uint8) for im in d.images]
    return imgs, np.asarray(d.target, dtype=np.int64), [str(c) for c in d.target_names]


def _scan_classes(root: Path) -> list[tuple[str, list[Path]]]:
    if not root.is_dir():
        raise DataError(f"dataset folder '{root}' does not exist or is not a folder.")
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    out = []
    for c in classes:
        # hidden entries are never data: .ipynb_checkpoints/ copies would duplicate images, macOS '._x.jpg' are not images
        files = sorted(
            q
            for q in c.rglob("*")
            if q.is_file()
            and q.suffix.lower() in IMAGE_EXTENSIONS
            and not any(part.startswith(".") for part in q.relative_to(c).parts)
        )
        out.append((c.name, files))
    return out


VAL_FOLDER_NAMES = ("val", "valid", "validation")


def _split_dirs(root: Path) -> tuple[Path | None, Path | None]:
    """``(root/train, root/val|valid|validation)`` when ``root/train`` holds class subfolders, else ``(None, None)``;
    the validation folder is None when there is none."""
    train = root / "train"
    if not train.is_dir() or not any(p.is_dir() and not p.name.startswith(".") for p in train.iterdir()):
        return None, None
    for name in VAL_FOLDER_NAMES:
        if (root / name).is_dir():
            return train, root / name
    return train, None


def _read_folder(
    root: Path, image_size: int, max_pixels: int | None, classes: list[str] | None = None
) -> tuple[torch.Tensor, np.ndarray, list[str], list[SkippedFile]]:
    scanned = _scan_classes(root)
    if not scanned:
        loose = [q for q in root.iterdir() if q.is_file() and q.suffix.lower() in IMAGE_EXTENSIONS]
        hint = f" (found {len(loose)} loose images: put each class in its own subfolder)" if loose else ""
        raise DataError(f"dataset folder '{root}' has no class subfolders; expected root/<class>/*.jpg{hint}.")
    names = [n for n, _ in scanned]
    if classes is not None and names != classes:
        raise DataError(f"'{root}' has classes {names} but the training folder has {classes}; they must match.")
    if classes is None and len(names) < 2:
        raise DataError(
            f"dataset folder '{root}' has {len(names)} class ({', '.join(names)}); classification needs at least 2."
        )
    arrays: list[np.ndarray] = []
    targets: list[int] = []
    skipped: list[SkippedFile] = []
    for ci, (cname, files) in enumerate(scanned):
        good = 0
        for f in files:
            try:
                arrays.append(load_image(f, max_pixels=max_pixels))
            except ConvlensError as e:
                skipped.append(SkippedFile(str(f), str(e)))
                continue
            targets.append(ci)
            good += 1
        if good == 0:
            why = f"all {len(files)} files are unreadable" if files else "it holds no image files"
            raise DataError(f"class '{cname}' in '{root}' has no valid image ({why}); add images or remove the folder.")
    return to_tensor_images(arrays, image_size), np.array(targets, dtype=np.int64), names, skipped


def load_dataset(
    source: str | os.PathLike[str],
    *,
    image_size: int = 64,
    val_fraction: float = 0.2,
    seed: int = 0,
    max_pixels: int | None = 64_000_000,
) -> DatasetSplit:
    """Load ``'lfw'``, ``'digits'`` or an ImageFolder path into a seeded, stratified train/val split.

    A folder with ``train/`` and ``val/`` (or ``valid/``, ``validation/``) subfolders uses them as given;
    ``train/`` alone (e.g. next to ``test/``, which is never read) is split; otherwise ``val_fraction``
    of each class (seeded by ``seed``) becomes validation. Unreadable files are skipped and listed
    in ``.skipped`` (and on each split); an empty folder, a single class, or a class without a
    valid image is a :class:`~convlens.errors.DataError`.

    Example:
        >>> ds = load_dataset("lfw", image_size=32)
        >>> ds.classes, len(ds.train), len(ds.val)
        (['face', 'non-face'], 160, 40)
    """
    if int(image_size) < 8:
        raise DataError(f"image_size must be >= 8 pixels, got {image_size}.")
    name = os.fspath(source)
    if name in BUILTIN_DATASETS:
        arrays, targets, classes = _builtin(name)
        images = to_tensor_images(arrays, image_size)
        tr, va = stratified_split(targets, val_fraction, seed, classes)
        train = ImageDataset(images[tr], targets[tr], classes, seed=seed)
        val = ImageDataset(images[va], targets[va], classes, seed=seed)
        return DatasetSplit(name, classes, train, val, image_size)
    root = Path(name)
    if not root.exists():
        raise DataError(
            f"dataset '{name}' is neither a built-in ({', '.join(BUILTIN_DATASETS)}) nor an existing folder."
        )
    train_dir, val_dir = _split_dirs(root)
    if train_dir is not None and val_dir is not None:
        x_tr, y_tr, classes, sk_tr = _read_folder(train_dir, image_size, max_pixels)
        x_va, y_va, _, sk_va = _read_folder(val_dir, image_size, max_pixels, classes=classes)
        skipped = sk_tr + sk_va
        train = ImageDataset(x_tr, y_tr, classes, seed=seed, skipped=sk_tr)
        val = ImageDataset(x_va, y_va, classes, seed=seed, skipped=sk_va)
    else:
        # root/train/<class>/ without a validation folder (e.g. train/ + test/): split train/, never
        # take 'train' and 'test' themselves for the classes
        images, targets, classes, skipped = _read_folder(train_dir or root, image_size, max_pixels)
        tr, va = stratified_split(targets, val_fraction, seed, classes)
        train = ImageDataset(images[tr], targets[tr], classes, seed=seed, skipped=skipped)
        val = ImageDataset(images[va], targets[va], classes, seed=seed, skipped=skipped)
    return DatasetSplit(root.name or name, classes, train, val, image_size, skipped)
