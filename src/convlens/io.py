"""Reading images: the one place where files become arrays.

``load_image`` turns any image file Pillow can read into an ``(H, W, 3)`` ``uint8`` RGB array:
EXIF orientation applied, every mode (L, LA, P, RGBA, I;16, I, F, CMYK, ...) converted to RGB,
decompression bombs refused before decoding, truncated or corrupt files refused with the file name.
URLs are never fetched.

Example:
    >>> import numpy as np, tempfile, os
    >>> from PIL import Image
    >>> path = os.path.join(tempfile.mkdtemp(), "gray.png")
    >>> Image.fromarray(np.full((4, 6), 128, np.uint8)).save(path)
    >>> load_image(path).shape
    (4, 6, 3)
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from convlens.errors import InputError

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "default_max_pixels",
    "IMAGE_EXTENSIONS",
    "load_image",
    "to_rgb",
    "list_images",
    "as_uint8_rgb",
    "find_images",
    "iter_image_batches",
    "ImageBatch",
    "SkippedFile",
]

#: Largest image (in pixels) read by default: 8K x 8K. Larger files are refused before decoding.
DEFAULT_MAX_PIXELS = 64_000_000

#: File endings treated as images when a folder is given.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert a Pillow image of any mode to 8-bit RGB.

    Alpha is composited on white (a transparent background reads as paper, not as black).
    16/32-bit integer and float grayscale are rescaled from their own min..max to 0..255.

    Example:
        >>> to_rgb(Image.new("LA", (2, 2))).mode
        'RGB'
    """
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
        scaled = np.zeros_like(arr) if hi <= lo else (arr - lo) / (hi - lo) * 255.0
        gray = np.nan_to_num(scaled).round().astype(np.uint8)
        return Image.fromarray(np.stack([gray] * 3, axis=-1), "RGB")
    return img.convert("RGB")


def default_max_pixels() -> int | None:
    """The pixel limit used when a caller does not choose one: ``CONVLENS_MAX_PIXELS`` (set by the CLI's
    global ``--max-pixels N``; 0 = no limit) or :data:`DEFAULT_MAX_PIXELS`.

    Example:
        >>> default_max_pixels() == DEFAULT_MAX_PIXELS or "CONVLENS_MAX_PIXELS" in os.environ
        True
    """
    text = os.environ.get("CONVLENS_MAX_PIXELS", "").strip()
    if not text:
        return DEFAULT_MAX_PIXELS
    try:
        n = int(text)
    except ValueError:
        raise InputError(
            f"CONVLENS_MAX_PIXELS must be a whole number of pixels (0 = no limit), got '{text}'."
        ) from None
    if n < 0:
        raise InputError(f"CONVLENS_MAX_PIXELS must be >= 0 (0 = no limit), got {n}.")
    return n or None


def load_image(path: str | os.PathLike[str], *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read an image file as an ``(H, W, 3)`` uint8 RGB array.

    Args:
        path: a local file. ``http://`` and similar URLs are refused: convlens never downloads.
        max_pixels: refuse images with more pixels than this (decompression-bomb guard);
            ``None`` disables the check. Left at :data:`DEFAULT_MAX_PIXELS`, the process-wide
            :func:`default_max_pixels` applies (the CLI's ``--max-pixels``).

    Raises:
        InputError: missing file, URL, not an image, truncated/corrupt data, or too many pixels.

    Example:
        >>> import tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "x.png")
        >>> Image.new("P", (3, 2)).save(p)
        >>> load_image(p).dtype
        dtype('uint8')
    """
    text = os.fspath(path)
    if "://" in text:
        raise InputError(f"image '{text}' is a URL; convlens reads local files only (download it first).")
    p = Path(text)
    if not p.exists():
        raise InputError(f"image file '{p}' does not exist.")
    if p.is_dir():
        raise InputError(f"image path '{p}' is a folder; give an image file.")
    if max_pixels == DEFAULT_MAX_PIXELS:
        max_pixels = default_max_pixels()
    pil_limit = Image.MAX_IMAGE_PIXELS
    # Pillow's own bomb guard must not undercut a limit the user raised on purpose
    if max_pixels is None or (pil_limit is not None and max_pixels > pil_limit):
        Image.MAX_IMAGE_PIXELS = None if max_pixels is None else max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(p) as im:
                w, h = im.size
                if max_pixels is not None and w * h > max_pixels:
                    raise InputError(
                        f"image '{p}' has {w}x{h} = {w * h:,} pixels, more than the limit of {max_pixels:,}; "
                        f"if you trust the file, pass --max-pixels {w * h} (0 = no limit; max_pixels= in Python)."
                    )
                im.load()  # decode now so truncation is caught here, not later
                im = ImageOps.exif_transpose(im) or im
                rgb = to_rgb(im)
                arr = np.array(rgb, dtype=np.uint8)
    except InputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise InputError(f"image '{p}' looks like a decompression bomb and was refused ({e}).") from None
    except UnidentifiedImageError:
        raise InputError(f"file '{p}' is not an image Pillow can read.") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise InputError(f"image '{p}' is truncated or corrupt ({e}).") from None
    finally:
        Image.MAX_IMAGE_PIXELS = pil_limit
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InputError(f"image '{p}' decoded to an unusable array of shape {arr.shape}.")
    return arr


def list_images(path: str | os.PathLike[str]) -> list[Path]:
    """Expand a file or folder into a sorted list of image files (folders: by extension, recursive).

    Hidden files and folders (``.ipynb_checkpoints/``, macOS ``._x.jpg``) inside a folder are skipped.

    Example:
        >>> import tempfile
        >>> list_images(tempfile.mkdtemp())
        []
    """
    p = Path(path)
    if p.is_dir():
        return sorted(
            q
            for q in p.rglob("*")
            if q.is_file()
            and q.suffix.lower() in IMAGE_EXTENSIONS
            and not any(part.startswith(".") for part in q.relative_to(p).parts)
        )
    if not p.exists():
        raise InputError(f"image path '{p}' does not exist.")
    return [p]


def as_uint8_rgb(image: np.ndarray) -> np.ndarray:
    """Validate an in-memory image and return it as ``(H, W, 3)`` uint8.

    Accepts (H, W), (H, W, 1), (H, W, 3), (H, W, 4) arrays, uint8 or float in [0, 1].

    Example:
        >>> as_uint8_rgb(np.zeros((2, 2))).shape
        (2, 2, 3)
    """
    a = np.asarray(image)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4) or a.shape[0] == 0 or a.shape[1] == 0:
        raise InputError(f"image array must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4); got shape {a.shape}.")
    if a.dtype != np.uint8:
        af = a.astype(np.float64)
        if not np.isfinite(af).all():
            raise InputError("image array contains NaN or infinite values.")
        if af.min() < 0 or af.max() > 1.0 + 1e-6:
            if af.max() <= 255 and af.min() >= 0:
                a = af.round().astype(np.uint8)
            else:
                raise InputError(f"float image values must lie in [0, 1] (or 0..255); got {af.min():g}..{af.max():g}.")
        else:
            a = (af * 255.0).round().astype(np.uint8)
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    elif a.shape[2] == 4:
        a = np.asarray(to_rgb(Image.fromarray(a, "RGBA")))
    return np.ascontiguousarray(a)


# ---------------------------------------------------------------------------------------------------- batches


@dataclass(frozen=True)
class SkippedFile:
    """A file found inside a folder that could not be read: its path and why (one sentence)."""

    path: str
    reason: str


@dataclass(frozen=True)
class ImageBatch:
    """Up to ``batch_size`` readable images and their files, plus the folder files skipped in this batch.

    ``start`` is the index of the batch's first file among all ``total`` files found (for progress bars).
    """

    files: list[Path]
    images: list[np.ndarray]
    skipped: list[SkippedFile]
    start: int
    total: int


#: what to do with an unreadable file: "folder" (a file named explicitly is an error, one found inside a
#: folder is skipped and reported -- the policy of every command), "raise" (always an error), "skip" (never)
OnError = Literal["folder", "raise", "skip"]


def find_images(paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[tuple[Path, bool]]:
    """Every image file under ``paths`` (files as given, folders searched recursively, sorted), each with
    ``True`` when it was named explicitly. No image at all is an :class:`~convlens.errors.InputError`.

    Example:
        >>> import tempfile
        >>> d = tempfile.mkdtemp()
        >>> Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(f"{d}/a.png")
        >>> [(p.name, explicit) for p, explicit in find_images([d, f"{d}/a.png"])]
        [('a.png', False), ('a.png', True)]
    """
    items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    found: list[tuple[Path, bool]] = []
    for p in items:
        explicit = not Path(p).is_dir()
        found += [(f, explicit) for f in list_images(p)]
    if not found:
        raise InputError(f"no image files found in {', '.join(str(p) for p in items) or 'the given paths'}.")
    return found


def iter_image_batches(
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    batch_size: int = 32,
    *,
    on_error: OnError = "folder",
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> Iterator[ImageBatch]:
    """Read the images under ``paths`` in batches of ``batch_size`` files, with ONE policy for unreadable
    files (``on_error``, default ``"folder"``): a file named explicitly is an :class:`InputError`; a file
    found inside a folder is skipped and reported in its batch's ``skipped`` (never by mutating an
    argument). Only ``batch_size`` images are in memory at a time. When no file at all could be read, the
    iteration ends with an :class:`InputError` saying so (after yielding the batches with their skips).

    Example:
        >>> import tempfile
        >>> d = tempfile.mkdtemp()
        >>> Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(f"{d}/a.png")
        >>> _ = open(f"{d}/b.jpg", "wb").write(b"not a jpeg")
        >>> [(len(b.images), [Path(s.path).name for s in b.skipped]) for b in iter_image_batches([d], 8)]
        [(1, ['b.jpg'])]
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size must be an int >= 1, got {batch_size!r}.")
    if on_error not in ("folder", "raise", "skip"):
        raise InputError(f"on_error must be 'folder', 'raise' or 'skip', got {on_error!r}.")
    files = find_images(paths)
    read = 0
    for start in range(0, len(files), batch_size):
        ok: list[Path] = []
        images: list[np.ndarray] = []
        skipped: list[SkippedFile] = []
        for f, explicit in files[start : start + batch_size]:
            try:
                images.append(load_image(f, max_pixels=max_pixels))
            except InputError as e:
                if on_error == "raise" or (on_error == "folder" and explicit):
                    raise
                skipped.append(SkippedFile(str(f), str(e)))
                continue
            ok.append(f)
        read += len(images)
        yield ImageBatch(ok, images, skipped, start, len(files))
    if read == 0:
        raise InputError(f"none of the {len(files)} image file(s) found could be read (corrupt or not images).")
