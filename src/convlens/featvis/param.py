"""Image parameterizations: the tensors gradient ascent actually changes, and how they become images.

* :class:`PixelImage` -- raw pixels (the Keras-book recipe). ``image = p`` (optionally decorrelated
  and squashed by a sigmoid).
* :class:`FourierImage` -- Lucid's spectral parameterization. The image is the inverse real FFT of a
  learned spectrum scaled by ``1 / max(|f|, 1/S)^decay`` (natural images have a ~1/f amplitude
  spectrum, so equal steps in this space change coarse structure as readily as fine detail), then
  ImageNet colour decorrelation (a fixed 3x3 matrix: the square root of the colour covariance) and a
  sigmoid into [0, 1]:
  ``image = sigmoid(C @ irfft2(scale * spectrum) / 4)``.

Each image of the batch gets its own initial noise from its own ``torch.Generator`` (drawn on the
CPU, then moved to the device), so image i does not depend on the batch it is rendered in nor on
the device.

Example:
    >>> import torch
    >>> gens = [torch.Generator().manual_seed(i) for i in range(2)]
    >>> img = FourierImage(2, 16, generators=gens)
    >>> x = img()
    >>> tuple(x.shape), bool(((x > 0) & (x < 1)).all())
    ((2, 3, 16, 16), True)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from convlens.errors import InputError

__all__ = ["ImageParam", "PixelImage", "FourierImage", "COLOR_CORRELATION_SVD_SQRT", "decorrelate_colors"]

#: square root of ImageNet's colour covariance (from Lucid); columns normalized to max norm 1 below
COLOR_CORRELATION_SVD_SQRT = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
_COLOR = COLOR_CORRELATION_SVD_SQRT / COLOR_CORRELATION_SVD_SQRT.norm(dim=0).max()


def decorrelate_colors(t: torch.Tensor) -> torch.Tensor:
    """Map decorrelated channels to RGB: ``rgb[c] = sum_k C[c, k] t[k]`` per pixel (C: normalized sqrt covariance).

    Example:
        >>> tuple(decorrelate_colors(torch.zeros(1, 3, 2, 2)).shape)
        (1, 3, 2, 2)
    """
    m = _COLOR.to(dtype=t.dtype, device=t.device)
    return torch.einsum("ck,nkhw->nchw", m, t)


def _check_gens(n: int, generators: Sequence[torch.Generator] | None) -> list[torch.Generator]:
    if generators is None:
        return [torch.Generator().manual_seed(i) for i in range(n)]
    if len(generators) != n:
        raise InputError(f"need one generator per image: {n} images, got {len(generators)} generators.")
    return list(generators)


class ImageParam:
    """Base: ``params`` (leaf tensors to optimize) and ``__call__() -> (N, 3, S, S)`` image."""

    params: list[torch.Tensor]

    def __call__(self) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class PixelImage(ImageParam):
    """Raw pixels. Init: uniform in ``[low, high]`` per pixel (Keras book: 0.4-0.6).

    With ``sigmoid=True`` the image is ``sigmoid(decorrelate(p))`` (Lucent's pixel image) and the init
    is Gaussian with std ``sd`` around 0 instead.

    Example:
        >>> p = PixelImage(1, 4, low=0.4, high=0.6)
        >>> bool(((p() >= 0.4) & (p() <= 0.6)).all())
        True
    """

    def __init__(
        self,
        n: int,
        size: int,
        *,
        low: float = 0.4,
        high: float = 0.6,
        sigmoid: bool = False,
        decorrelate: bool = False,
        sd: float = 0.01,
        generators: Sequence[torch.Generator] | None = None,
        device: torch.device | str = "cpu",
    ):
        if size < 1 or n < 1:
            raise InputError(f"image size and count must be >= 1, got size {size}, count {n}.")
        gens = _check_gens(n, generators)
        if sigmoid:
            init = torch.stack([torch.randn(3, size, size, generator=g) * sd for g in gens])
        else:
            init = torch.stack([torch.rand(3, size, size, generator=g) * (high - low) + low for g in gens])
        self.pixels = init.to(device).requires_grad_(True)  # (N, 3, S, S)
        self.params = [self.pixels]
        self.sigmoid = sigmoid
        self.decorrelate = decorrelate

    def __call__(self) -> torch.Tensor:
        x = self.pixels
        if self.decorrelate:
            x = decorrelate_colors(x)
        return torch.sigmoid(x) if self.sigmoid else x


def _rfft2d_freqs(h: int, w: int) -> torch.Tensor:
    """|f| of the ``rfft2`` grid of an h x w image, shape (h, w // 2 + 1)."""
    fy = torch.fft.fftfreq(h)[:, None]
    fx = torch.fft.rfftfreq(w)[None, :]
    return torch.sqrt(fx * fx + fy * fy)


class FourierImage(ImageParam):
    """Lucid's Fourier parameterization with 1/f scaling, colour decorrelation and sigmoid.

    ``image = sigmoid(decorrelate(irfft2(spectrum * scale, norm='ortho') / 4))`` where
    ``scale = 1 / max(|f|, 1 / max(H, W)) ** decay_power``; the spectrum starts as Gaussian noise
    with std ``sd`` (real and imaginary parts).

    Example:
        >>> FourierImage(1, 8).params[0].shape
        torch.Size([1, 3, 8, 5, 2])
    """

    def __init__(
        self,
        n: int,
        size: int,
        *,
        sd: float = 0.01,
        decay_power: float = 1.0,
        decorrelate: bool = True,
        generators: Sequence[torch.Generator] | None = None,
        device: torch.device | str = "cpu",
    ):
        if size < 1 or n < 1:
            raise InputError(f"image size and count must be >= 1, got size {size}, count {n}.")
        gens = _check_gens(n, generators)
        freqs = _rfft2d_freqs(size, size)  # (S, S//2+1)
        scale = 1.0 / torch.clamp(freqs, min=1.0 / size) ** decay_power
        self.scale = scale[None, None, :, :, None].to(device)  # (1, 1, S, S//2+1, 1)
        shape = (3, *freqs.shape, 2)  # real and imaginary parts
        init = torch.stack([torch.randn(shape, generator=g) * sd for g in gens])
        self.spectrum = init.to(device).requires_grad_(True)  # (N, 3, S, S//2+1, 2)
        self.params = [self.spectrum]
        self.size = size
        self.decorrelate = decorrelate

    def __call__(self) -> torch.Tensor:
        spec = torch.view_as_complex(self.spectrum * self.scale)
        x = torch.fft.irfftn(spec, s=(self.size, self.size), dim=(-2, -1), norm="ortho") / 4.0  # Lucid's constant
        if self.decorrelate:
            x = decorrelate_colors(x)
        return torch.sigmoid(x)
