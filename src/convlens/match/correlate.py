"""Convolution read as template matching: raw, zero-mean and normalized cross-correlation.

A convolution layer (cross-correlation, as deep-learning frameworks compute it) slides a filter
``t`` over the image and takes a dot product with every window ``W_{y,x}``:

    raw(y, x)       = sum_{c,u,v} W[c, y+u, x+v] * t[c, u, v]                      = <W, t>
    zero_mean(y, x) = <W, t - mean(t)>                                             = <W - mean(W), t - mean(t)>
    zncc(y, x)      = <W - mean(W), t - mean(t)> / (||W - mean(W)|| * ||t - mean(t)||)   in [-1, 1]

The raw response grows with the window's brightness, so a bright patch beats the real match; the
zero-mean response ignores a brightness offset but still grows with contrast; ZNCC (the Pearson
correlation between window and template) ignores both and peaks where the image *looks like* the
template. The window statistics come from box filters (integral images):

    sum W = box(I),  ||W - mean W||^2 = box(I^2) - box(I)^2 / n,   n = C h w

Only "valid" positions are returned (the template fully inside): output (H-h+1) x (W-w+1), the
top-left corner of each window, as ``skimage.feature.match_template(pad_input=False)``.
Multi-channel windows are compared as one C x h x w volume.

Shapes: image (H, W), (C, H, W) or (N, C, H, W); template (h, w), (C, h, w) or (K, C, h, w)
(K templates at once). The response is (N, K, H', W') with the N axis dropped when the image had
no batch axis and the K axis dropped when the template had none. Tensors stay on their device;
NumPy in -> NumPy out.

Example:
    >>> import numpy as np
    >>> img = np.zeros((6, 6)); img[2:4, 3:5] = [[1, 2], [3, 4]]
    >>> r = correlate(img, np.array([[1.0, 2], [3, 4]]), method="zncc")
    >>> tuple(int(i) for i in np.unravel_index(r.argmax(), r.shape))
    (2, 3)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from convlens.errors import InputError
from convlens.pyramid.pyramids import _check_not_hwc

__all__ = ["METHODS", "correlate", "raw_correlation", "zero_mean_correlation", "ncc", "box_sum"]

#: Matching scores understood by :func:`correlate` ("ncc" is accepted as an alias of "zncc").
METHODS = ("raw", "zero_mean", "zncc")

# a flat window (denominator <= float32 eps) scores 0, as in skimage; skimage 0.26 takes the eps of the image's own
# float type (2.2e-16 for float64), so on float64 input it still scores windows whose denominator lies between the
# two (contrast ~1e-4 and below); convlens keeps one threshold for every input dtype and device
_FLAT_EPS = float(np.finfo(np.float32).eps)
# templates with more pixels than this are correlated through FFTs (same result, less time and
# memory: a direct float64 9x9 conv on a 300x451 image took ~10x the FFT's time when measured)
_FFT_MIN_TAPS = 25


def _as_tensor(x: Any, name: str) -> tuple[torch.Tensor, bool]:
    if isinstance(x, torch.Tensor):
        return x, False
    try:
        arr = np.asarray(x)
    except Exception as e:
        raise InputError(f"{name} must be an array of numbers, got {type(x).__name__} ({e}).") from None
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise InputError(f"{name} must hold numbers, got dtype {arr.dtype}.")
    return torch.from_numpy(np.ascontiguousarray(arr)), True


def _prepare(image: Any, template: Any, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, dict]:
    img, img_np = _as_tensor(image, "image")
    tpl, tpl_np = _as_tensor(template, "template")
    if img.ndim not in (2, 3, 4):
        raise InputError(f"image must be (H, W), (C, H, W) or (N, C, H, W); got shape {tuple(img.shape)}.")
    if tpl.ndim not in (2, 3, 4):
        raise InputError(f"template must be (h, w), (C, h, w) or (K, C, h, w); got shape {tuple(tpl.shape)}.")
    _check_not_hwc(tuple(img.shape), "image")
    _check_not_hwc(tuple(tpl.shape), "template")
    how = {"numpy": img_np, "drop_n": img.ndim < 4, "drop_k": tpl.ndim < 4}
    img4 = img.reshape((1,) * (4 - img.ndim) + tuple(img.shape))
    tpl4 = tpl.reshape((1,) * (4 - tpl.ndim) + tuple(tpl.shape))
    if 0 in img4.shape or 0 in tpl4.shape:
        raise InputError(f"image and template must not be empty; got {tuple(img.shape)} and {tuple(tpl.shape)}.")
    if img4.shape[1] != tpl4.shape[1]:
        raise InputError(
            f"image has {img4.shape[1]} channel(s) but template has {tpl4.shape[1]}; give both as (C, H, W) with the "
            "same C (convert both to grayscale or both to RGB)."
        )
    h, w = tpl4.shape[2:]
    if h > img4.shape[2] or w > img4.shape[3]:
        raise InputError(
            f"template {h}x{w} is larger than the image {img4.shape[2]}x{img4.shape[3]}; crop a smaller template."
        )
    img4 = img4.to(dtype)
    tpl4 = tpl4.to(device=img4.device, dtype=dtype)
    if not (torch.isfinite(img4).all() and torch.isfinite(tpl4).all()):
        raise InputError("image or template contains NaN or infinite values; clean the input first.")
    return img4, tpl4, how


def _finish(resp: torch.Tensor, how: dict) -> Any:
    if how["drop_k"]:
        resp = resp.squeeze(1)
    if how["drop_n"]:
        resp = resp.squeeze(0)
    return resp.detach().cpu().numpy() if how["numpy"] else resp


def box_sum(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Sum over every valid ``h x w`` window and all channels of (N, C, H, W): (N, 1, H-h+1, W-w+1).

    A box filter computed from the integral image ``S`` (cumulative sums along rows and columns,
    zero-padded on top/left), four look-ups per window whatever its size:
    ``box[y, x] = S[y+h, x+w] - S[y, x+w] - S[y+h, x] + S[y, x]``.

    Example:
        >>> box_sum(torch.ones(1, 2, 4, 4), (2, 3)).squeeze().tolist()
        [[12.0, 12.0], [12.0, 12.0], [12.0, 12.0]]
    """
    h, w = size
    s = x.sum(dim=1, keepdim=True)  # channels are part of the window: sum them first   (N, 1, H, W)
    S = F.pad(s.cumsum(dim=2).cumsum(dim=3), (1, 0, 1, 0))  # integral image            (N, 1, H+1, W+1)
    return S[:, :, h:, w:] - S[:, :, :-h, w:] - S[:, :, h:, :-w] + S[:, :, :-h, :-w]


def _xcorr_fft(img: torch.Tensor, tpl: torch.Tensor) -> torch.Tensor:
    """Valid cross-correlation via the convolution theorem: r = IFFT(FFT(I) * conj(FFT(t))), cropped.

    Circular correlation of size H x W never wraps for the valid positions y <= H - h, x <= W - w.
    """
    H, W = img.shape[2:]
    h, w = tpl.shape[2:]
    fi = torch.fft.rfft2(img, s=(H, W))  # (N, C, H, W//2+1)
    ft = torch.fft.rfft2(tpl, s=(H, W))  # (K, C, H, W//2+1)
    prod = torch.einsum("nchw,kchw->nkhw", fi, ft.conj())  # sum over channels: the window is C x h x w
    return torch.fft.irfft2(prod, s=(H, W))[:, :, : H - h + 1, : W - w + 1]


def _xcorr(img: torch.Tensor, tpl: torch.Tensor) -> torch.Tensor:
    """Valid cross-correlation (N, C, H, W) x (K, C, h, w) -> (N, K, H-h+1, W-w+1).

    A direct ``conv2d`` for small templates; for templates of more than ``_FFT_MIN_TAPS`` pixels the
    same convolution through FFTs (a direct conv would unfold C h w values per output position:
    ~50 GB for a 60x80 RGB template on a 600x900 image).
    """
    if tpl.shape[2] * tpl.shape[3] > _FFT_MIN_TAPS:
        return _xcorr_fft(img, tpl)
    return F.conv2d(img, tpl)


def _raw(img: torch.Tensor, tpl: torch.Tensor) -> torch.Tensor:
    return _xcorr(img, tpl)  # (N, K, H', W'): conv2d is cross-correlation, the template is the kernel


def _zero_mean(img: torch.Tensor, tpl: torch.Tensor) -> torch.Tensor:
    t0 = tpl - tpl.mean(dim=(1, 2, 3), keepdim=True)
    # subtracting a constant from the image changes nothing (sum t0 = 0) but keeps float sums small
    return _xcorr(img - img.mean(), t0)


def _zncc(img: torch.Tensor, tpl: torch.Tensor) -> torch.Tensor:
    c, h, w = tpl.shape[1:]
    n = c * h * w
    img = img - img.mean(dim=(1, 2, 3), keepdim=True)  # ZNCC is offset-invariant; centring avoids cancellation
    t0 = tpl - tpl.mean(dim=(1, 2, 3), keepdim=True)
    numerator = _xcorr(img, t0)  # <W, t0> = <W - mean W, t0>                        (N, K, H', W')
    s1 = box_sum(img, (h, w))  # sum W                                                   (N, 1, H', W')
    s2 = box_sum(img * img, (h, w))  # sum W^2
    window_var = (s2 - s1 * s1 / n).clamp_min(0.0)  # ||W - mean W||^2
    tpl_var = (t0 * t0).sum(dim=(1, 2, 3)).view(1, -1, 1, 1)  # ||t0||^2                (1, K, 1, 1)
    denominator = torch.sqrt(window_var * tpl_var)
    flat = denominator <= _FLAT_EPS
    r = numerator / torch.where(flat, 1.0, denominator)
    # Cauchy-Schwarz bounds r to [-1, 1]; float rounding of the sums can overshoot (1.0000000000000002 for a perfect match)
    return torch.where(flat, torch.zeros_like(numerator), r.clamp(-1.0, 1.0))


def correlate(image: Any, template: Any, method: str = "zncc", *, dtype: torch.dtype = torch.float64) -> Any:
    """Response map of ``template`` slid over ``image`` ("valid" positions, top-left anchored).

    Args:
        image: (H, W), (C, H, W) or (N, C, H, W) array/tensor.
        template: (h, w), (C, h, w) or (K, C, h, w); same C as the image.
        method: ``"raw"`` (<W, t>), ``"zero_mean"`` (<W, t - mean t>) or ``"zncc"``/``"ncc"`` (Pearson
            correlation of window and template, in [-1, 1]; 0 where the window or template is flat).
        dtype: computation dtype; float64 (default) matches scikit-image to ~1e-12.

    Returns:
        Response of shape (N, K, H-h+1, W-w+1) minus the axes the inputs lacked.

    Example:
        >>> import numpy as np
        >>> correlate(np.ones((4, 5)), np.ones((2, 2)), "raw").shape
        (3, 4)
    """
    m = "zncc" if method == "ncc" else method
    if m not in METHODS:
        raise InputError(f"method must be one of {', '.join(METHODS)} (or 'ncc'); got '{method}'.")
    img, tpl, how = _prepare(image, template, dtype)
    fn = {"raw": _raw, "zero_mean": _zero_mean, "zncc": _zncc}[m]
    return _finish(fn(img, tpl), how)


def raw_correlation(image: Any, template: Any) -> Any:
    """``correlate(image, template, "raw")``: a plain conv with the template as kernel.

    Example:
        >>> import numpy as np
        >>> raw_correlation(np.eye(3), np.eye(2)).tolist()
        [[2.0, 0.0], [0.0, 2.0]]
    """
    return correlate(image, template, "raw")


def zero_mean_correlation(image: Any, template: Any) -> Any:
    """``correlate(image, template, "zero_mean")``: conv with the mean-subtracted template.

    Example:
        >>> import numpy as np
        >>> float(zero_mean_correlation(np.full((3, 3), 7.0), np.eye(2)).max())
        0.0
    """
    return correlate(image, template, "zero_mean")


def ncc(image: Any, template: Any) -> Any:
    """``correlate(image, template, "zncc")``: zero-mean normalized cross-correlation in [-1, 1].

    Example:
        >>> import numpy as np
        >>> round(float(ncc(np.eye(3), np.eye(2)).max()), 6)
        1.0
    """
    return correlate(image, template, "zncc")
