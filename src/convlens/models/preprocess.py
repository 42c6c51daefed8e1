"""Preprocessing: an RGB image becomes the normalized tensor a model expects.

``x = (resize(img) / 255 - mean) / std`` with the resize rule of the model's weights: ``'squash'``
(straight to size x size, aspect ignored) or ``'crop'`` (shorter side to size / crop_pct, then centre crop).
One-value ``mean``/``std`` make a 1-channel (grayscale, ITU-R 601 luma) input for 1-channel models.

Example:
    >>> import numpy as np
    >>> p = Preprocess(size=4, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    >>> x = p(np.full((8, 6, 3), 255, np.uint8))
    >>> tuple(x.shape), float(x.max())
    ((1, 3, 4, 4), 1.0)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from PIL import Image

from convlens.errors import InputError
from convlens.io import as_uint8_rgb

__all__ = ["Preprocess", "IMAGENET_MEAN", "IMAGENET_STD", "GRAY_MEAN", "GRAY_STD"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: for 1-channel models: ImageNet's statistics averaged over the colour channels
GRAY_MEAN = (0.449,)
GRAY_STD = (0.226,)

_RESAMPLE = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST}


@dataclass(frozen=True)
class Preprocess:
    """Resize + scale + normalize, as a callable on images (arrays (H,W,3) uint8, PIL images, or lists).

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

    def resize_image(self, image: np.ndarray | Image.Image) -> np.ndarray:
        """Only the geometric part: the ``(size, size, 3)`` uint8 image the model will see (for overlays).

        Example:
            >>> Preprocess(size=2).resize_image(np.zeros((5, 3, 3), np.uint8)).shape
            (2, 2, 3)
        """
        arr = np.asarray(image.convert("RGB")) if isinstance(image, Image.Image) else as_uint8_rgb(image)
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

    def __call__(self, images: np.ndarray | Image.Image | Sequence[np.ndarray | Image.Image]) -> torch.Tensor:
        """Images -> ``(N, C, size, size)`` float32 tensor (C = :attr:`channels`); one image gives N = 1.

        Example:
            >>> Preprocess(size=2, mean=(0.5,), std=(0.5,))(np.zeros((4, 4, 3), np.uint8)).shape
            torch.Size([1, 1, 2, 2])
        """
        if isinstance(images, (np.ndarray, Image.Image)):
            images = [images]
        if len(images) == 0:
            raise InputError("no images given to preprocess.")
        batch = np.stack([self.resize_image(im) for im in images])  # (N, H, W, 3) uint8
        t = torch.from_numpy(batch).permute(0, 3, 1, 2).float().div_(255.0)  # (N, 3, H, W)
        return self.normalize(t)  # (N, C, H, W): 1-channel preprocessing takes the luma
