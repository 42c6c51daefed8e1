"""Preprocessing: an RGB image becomes the normalized tensor a model expects.

``x = (resize(img) / 255 - mean) / std`` with the resize rule of the model's weights: ``'squash'``
(straight to size x size, aspect ignored) or ``'crop'`` (shorter side to size / crop_pct, then centre crop).
One-value ``mean``/``std`` make a 1-channel (grayscale, ITU-R 601 luma) input for 1-channel models.

Accepted inputs (never reinterpreted; anything ambiguous is an :class:`~convlens.errors.InputError`
that names these layouts):

==========================  =========================================================================
kind                        meaning
==========================  =========================================================================
PIL image                   one image (any mode, converted as :func:`convlens.io.to_rgb` does)
path (``str``/``PathLike``)  one image file, read by :func:`convlens.io.load_image`
NumPy array                 ``(H, W)``, ``(H, W, C)`` one image, ``(N, H, W, C)`` a batch (channels
                            last, the array convention); ``(C, H, W)`` / ``(N, C, H, W)`` only when the
                            last axis cannot be channels
torch tensor                ``(C, H, W)`` one image, ``(N, C, H, W)`` a batch (channels first, the torch
                            convention); ``(H, W, C)`` / ``(N, H, W, C)`` and ``(H, W)`` when that is the
                            only reading; a shape where both readings fit, e.g. ``(3, 5, 3)``, is refused
list / tuple                any mix of the above, concatenated in order
==========================  =========================================================================

``C`` is 1 (gray), 3 (RGB) or 4 (RGBA). Values: uint8 0..255, or float in [0, 1] (0..255 floats are
rounded); an already-normalized tensor (negative values) is refused: it goes to the model directly.

Example:
    >>> import numpy as np
    >>> p = Preprocess(size=4, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    >>> x = p(np.full((8, 6, 3), 255, np.uint8))
    >>> tuple(x.shape), float(x.max())
    ((1, 3, 4, 4), 1.0)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image

from convlens.errors import InputError
from convlens.io import as_uint8_rgb, load_image, to_rgb

__all__ = ["Preprocess", "IMAGENET_MEAN", "IMAGENET_STD", "GRAY_MEAN", "GRAY_STD", "as_images"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: for 1-channel models: ImageNet's statistics averaged over the colour channels
GRAY_MEAN = (0.449,)
GRAY_STD = (0.226,)

_RESAMPLE = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST}

_CHANNELS = (1, 3, 4)  # gray, RGB, RGBA
_LAYOUTS = (
    "expected a PIL image, an image path, a NumPy array (H, W), (H, W, C) or (N, H, W, C), "
    "or a torch tensor (C, H, W) or (N, C, H, W), with C = 1, 3 or 4 (or a list of these)"
)

#: one image or a batch, in any of the accepted kinds (see the module docstring)
ImageInput = Any


def _channels_last(shape: tuple[int, ...], *, prefer_last: bool) -> bool:
    """Which axis holds the channels of a 3-D (one image) or 4-D (batch) shape: True = the last one.

    NumPy arrays prefer channels-last and tensors channels-first; the other reading is taken only when
    the preferred one is impossible, and a tensor shape that fits both is refused, never guessed."""
    first = shape[0] if len(shape) == 3 else shape[1]
    last_ok, first_ok = shape[-1] in _CHANNELS, first in _CHANNELS
    if not (last_ok or first_ok):
        raise InputError(f"cannot read shape {shape} as images: no axis of 1, 3 or 4 channels; {_LAYOUTS}.")
    if last_ok and first_ok and not prefer_last:
        kind = "(C, H, W) or (H, W, C)" if len(shape) == 3 else "(N, C, H, W) or (N, H, W, C)"
        raise InputError(
            f"tensor shape {shape} is ambiguous: it reads as {kind}; {_LAYOUTS}. Pass a PIL image or a NumPy "
            "(H, W, C) array instead."
        )
    return last_ok if prefer_last else not first_ok


def _array_images(a: np.ndarray, *, is_tensor: bool) -> list[np.ndarray]:
    """An array (NumPy, or a tensor's values) -> list of ``(H, W, C)`` arrays, without guessing."""
    if a.ndim == 2:
        return [a]  # (H, W) gray
    if a.ndim not in (3, 4) or 0 in a.shape:
        raise InputError(f"cannot read shape {tuple(a.shape)} as images; {_LAYOUTS}.")
    last = _channels_last(tuple(a.shape), prefer_last=not is_tensor)
    if a.ndim == 3:
        return [a if last else np.moveaxis(a, 0, -1)]
    return [im if last else np.moveaxis(im, 0, -1) for im in a]  # (N, ...) -> N images


def as_images(images: ImageInput) -> list[np.ndarray]:
    """Any accepted input (module docstring) -> list of ``(H, W, 3)`` uint8 RGB arrays, one per image.

    Example:
        >>> [im.shape for im in as_images(torch.zeros(2, 3, 4, 5))]
        [(4, 5, 3), (4, 5, 3)]
        >>> as_images(torch.zeros(3, 4, 5))[0].shape  # one CHW image, not 3 gray ones
        (4, 5, 3)
    """
    if isinstance(images, (list, tuple)):
        out = [im for item in images for im in as_images(item)]
        if not out:
            raise InputError("no images given to preprocess.")
        return out
    if isinstance(images, Image.Image):
        return [np.asarray(to_rgb(images))]
    if isinstance(images, (str, os.PathLike)):
        return [load_image(images)]
    if isinstance(images, torch.Tensor):
        a = images.detach().cpu()
        if a.is_floating_point() and a.numel() and float(a.min()) < 0:
            raise InputError(
                f"tensor values go down to {float(a.min()):.3g}: it looks already normalized; give it to the "
                "model directly, or give preprocess images in [0, 1] or 0..255."
            )
        a = a.float().numpy() if a.dtype in (torch.float16, torch.bfloat16) else a.numpy()
        raw = _array_images(a, is_tensor=True)
    elif isinstance(images, np.ndarray):
        raw = _array_images(images, is_tensor=False)
    else:
        raise InputError(f"cannot preprocess a {type(images).__name__}; {_LAYOUTS}.")
    return [as_uint8_rgb(im) for im in raw]


@dataclass(frozen=True)
class Preprocess:
    """Resize + scale + normalize, as a callable on images (every kind in the module docstring).

    Attributes:
        size: output side length in pixels (square).
        mean, std: per-channel normalization on the [0, 1] scale; 3 values (RGB input) or 1 value
            (grayscale input, for models whose first convolution takes one channel).
        resize: ``'squash'`` or ``'crop'`` (see module docstring).
        crop_pct: with ``'crop'``, the fraction of the resized shorter side kept (0.875 = 224 of 256).
        interpolation: ``'bilinear'``, ``'bicubic'`` or ``'nearest'`` (Pillow, antialiased).
    """

    size: int = 224
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    resize: Literal["squash", "crop"] = "crop"
    crop_pct: float = 0.875
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        if self.size < 1:
            raise InputError(f"preprocess size must be >= 1, got {self.size}.")
        if self.resize not in ("squash", "crop"):
            raise InputError(f"resize must be 'squash' or 'crop', got {self.resize!r}.")
        if self.interpolation not in _RESAMPLE:
            raise InputError(f"interpolation must be one of {sorted(_RESAMPLE)}, got {self.interpolation!r}.")
        if any(s <= 0 for s in self.std):
            raise InputError(f"std values must be > 0, got {self.std}.")
        if len(self.mean) not in (1, 3) or len(self.std) != len(self.mean):
            raise InputError(
                f"mean and std need 3 values (RGB) or 1 value (grayscale) each, got {len(self.mean)} and {len(self.std)}."
            )

    @property
    def channels(self) -> int:
        """Channels of the tensor this produces: 3 (RGB) or 1 (grayscale)."""
        return len(self.mean)

    def resize_image(self, image: ImageInput) -> np.ndarray:
        """Only the geometric part: the ``(size, size, 3)`` uint8 image the model will see (for overlays).

        ``image`` is ONE image of any accepted kind (module docstring).

        Example:
            >>> Preprocess(size=2).resize_image(np.zeros((5, 3, 3), np.uint8)).shape
            (2, 2, 3)
        """
        if isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3:
            arr = image  # the common case, already RGB uint8
        else:
            imgs = as_images(image)
            if len(imgs) != 1:
                raise InputError(f"resize_image takes one image, got {len(imgs)}.")
            arr = imgs[0]
        im = Image.fromarray(arr)
        resample = _RESAMPLE[self.interpolation]
        if self.resize == "squash":
            im = im.resize((self.size, self.size), resample)
        else:
            short = max(self.size, int(round(self.size / self.crop_pct)))
            w, h = im.size
            scale = short / min(w, h)
            nw, nh = max(self.size, round(w * scale)), max(self.size, round(h * scale))
            im = im.resize((nw, nh), resample)
            left, top = (nw - self.size) // 2, (nh - self.size) // 2
            im = im.crop((left, top, left + self.size, top + self.size))
        return np.asarray(im)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) in [0, 1] -> normalized. ``x' = (x - mean) / std``.

        RGB input to a 1-channel preprocess is first reduced to its luma ``0.299 R + 0.587 G + 0.114 B``
        (ITU-R 601, as Pillow's ``convert("L")``), so RGB batches feed grayscale models unchanged.

        Example:
            >>> float(Preprocess(mean=(0.5,) * 3, std=(0.5,) * 3).normalize(torch.ones(1, 3, 1, 1)).max())
            1.0
        """
        if self.channels == 1 and images.ndim == 4 and images.shape[1] == 3:
            luma = torch.tensor((0.299, 0.587, 0.114), dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
            images = (images * luma).sum(1, keepdim=True)  # (N, 1, H, W)
        mean = torch.tensor(self.mean, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
        return (images - mean) / std

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`normalize`, clamped to [0, 1].

        Example:
            >>> p = Preprocess()
            >>> bool(torch.allclose(p.denormalize(p.normalize(torch.full((1, 3, 2, 2), 0.25))), torch.tensor(0.25)))
            True
        """
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        return (x * std + mean).clamp(0, 1)

    def __call__(self, images: ImageInput | Sequence[ImageInput]) -> torch.Tensor:
        """Images -> ``(N, C, size, size)`` float32 tensor (C = :attr:`channels`); one image gives N = 1.

        Every kind of the module docstring is accepted; a ``(3, H, W)`` tensor is ONE image, a path is read.

        Example:
            >>> Preprocess(size=2, mean=(0.5,), std=(0.5,))(np.zeros((4, 4, 3), np.uint8)).shape
            torch.Size([1, 1, 2, 2])
            >>> Preprocess(size=2)(torch.rand(3, 5, 7)).shape
            torch.Size([1, 3, 2, 2])
        """
        batch = np.stack([self.resize_image(im) for im in as_images(images)])  # (N, H, W, 3) uint8
        t = torch.from_numpy(batch).permute(0, 3, 1, 2).float().div_(255.0)  # (N, 3, H, W)
        return self.normalize(t)  # (N, C, H, W): 1-channel preprocessing takes the luma
