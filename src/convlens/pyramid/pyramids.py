"""Gaussian and Laplacian image pyramids (Burt & Adelson 1983), batched in torch.

One *reduce* step is OpenCV's ``pyrDown``: blur with the separable 5-tap binomial kernel
``g = [1, 4, 6, 4, 1] / 16`` (borders reflected without repeating the edge, "reflect-101":
``d c b | a b c d | c b a``), then keep every second row and column starting at 0, so an
``H x W`` level becomes ``ceil(H/2) x ceil(W/2)`` (odd sizes included).

*Expand* is the inverse-direction step: put the coarse samples back on the even grid of the
finer level's exact size, zeros elsewhere, and blur with ``2 g`` along each axis (``4 g g^T``
in 2-D, so the average value is kept).

    G_0 = x,  G_{k+1} = reduce(G_k)
    L_k = G_k - expand(G_{k+1})   (k < n-1),   L_{n-1} = G_{n-1}
    reconstruct: G_{n-1} = L_{n-1};  G_k = L_k + expand(G_{k+1})

The reconstruction telescopes, so it is exact up to floating-point rounding (float64 error far
below 1e-9) whatever ``expand`` does, as long as both directions use the same one.

Accepted inputs: ``(H, W)``, ``(C, H, W)`` or ``(N, C, H, W)``, as NumPy arrays or torch tensors.
Each level comes back with the same rank and kind (NumPy in -> NumPy out, on the same device for
tensors). Integer inputs are computed in float64.

Example:
    >>> import numpy as np
    >>> levels = gaussian_pyramid(np.ones((5, 7)), 3)
    >>> [lv.shape for lv in levels]
    [(5, 7), (3, 4), (2, 2)]
    >>> x = np.random.default_rng(0).random((2, 3, 9, 6))
    >>> float(np.abs(reconstruct(laplacian_pyramid(x, 4)) - x).max()) < 1e-12
    True
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from convlens.errors import InputError

__all__ = ["BINOMIAL_5", "reduce", "expand", "gaussian_pyramid", "laplacian_pyramid", "reconstruct", "max_levels"]

#: The 5-tap binomial kernel of OpenCV's pyrDown / Burt-Adelson's "a = 0.375" generating kernel.
BINOMIAL_5 = (1 / 16, 4 / 16, 6 / 16, 4 / 16, 1 / 16)


# ----------------------------------------------------------------------------------------------
# input handling: one (N, C, H, W) float tensor inside, the caller's kind and rank outside


def _check_not_hwc(shape: tuple[int, ...], name: str) -> None:
    """A 3-D input whose last axis is 3 or 4 wide and whose first is longer than 4 is almost surely an
    (H, W, C) image (what image readers return), not (C, H, W): refuse it instead of treating rows as channels."""
    if len(shape) == 3 and shape[2] in (3, 4) and shape[0] > 4:
        raise InputError(
            f"{name} has shape {tuple(shape)}, which looks like an (H, W, C) image; inputs are channels-first: pass "
            "image.transpose(2, 0, 1) (or convlens.match.image_to_chw(image)); a real (C, H, W) array this narrow can go "
            "as a (1, C, H, W) batch."
        )


def _to_nchw(x: Any, name: str = "x") -> tuple[torch.Tensor, dict]:
    """Convert an array/tensor of rank 2..4 into a floating (N, C, H, W) tensor + how to undo it."""
    is_numpy = not isinstance(x, torch.Tensor)
    if is_numpy:
        try:
            arr = np.asarray(x)
        except Exception as e:  # ragged lists etc.
            raise InputError(f"{name} must be an array of numbers, got {type(x).__name__} ({e}).") from None
        if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
            raise InputError(f"{name} must hold numbers, got dtype {arr.dtype}.")
        t = torch.from_numpy(np.ascontiguousarray(arr))
    else:
        t = x
    if t.ndim not in (2, 3, 4):
        raise InputError(f"{name} must be (H, W), (C, H, W) or (N, C, H, W); got shape {tuple(t.shape)}.")
    if 0 in t.shape:
        raise InputError(f"{name} must not be empty; got shape {tuple(t.shape)}.")
    _check_not_hwc(tuple(t.shape), name)
    if not t.is_floating_point():
        t = t.to(torch.float64)
    if not torch.isfinite(t).all():
        raise InputError(f"{name} contains NaN or infinite values; clean the input first.")
    ndim = t.ndim
    while t.ndim < 4:
        t = t.unsqueeze(0)
    return t, {"numpy": is_numpy, "ndim": ndim}


def _from_nchw(t: torch.Tensor, how: dict) -> Any:
    for _ in range(4 - how["ndim"]):
        t = t.squeeze(0)
    return t.detach().cpu().numpy() if how["numpy"] else t


# ----------------------------------------------------------------------------------------------
# the two steps


def _reflect101_index(n: int, pad: int, device: torch.device) -> torch.Tensor:
    """Indices of a length-``n`` axis padded by ``pad`` on both sides with reflect-101 borders.

    Folding repeats until the index is inside, so tiny axes (n = 1, 2) work like OpenCV's
    ``borderInterpolate`` (a length-1 axis replicates its only sample).
    """
    idx = torch.arange(-pad, n + pad, device=device)
    if n == 1:
        return torch.zeros_like(idx)
    period = 2 * (n - 1)
    idx = torch.remainder(idx, period)
    return torch.where(idx >= n, period - idx, idx)


def _blur(t: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
    """Separable 5-tap binomial blur of (N, C, H, W) with reflect-101 borders, times ``gain`` per axis."""
    n, c, h, w = t.shape
    k = torch.tensor(BINOMIAL_5, dtype=t.dtype, device=t.device) * gain
    t = t.index_select(2, _reflect101_index(h, 2, t.device)).index_select(3, _reflect101_index(w, 2, t.device))
    flat = t.reshape(n * c, 1, h + 4, w + 4)  # channels folded into the batch: one depthwise kernel
    flat = F.conv2d(flat, k.view(1, 1, 5, 1))  # (NC, 1, H, W+4)
    flat = F.conv2d(flat, k.view(1, 1, 1, 5))  # (NC, 1, H, W)
    return flat.reshape(n, c, h, w)


def reduce(x: Any) -> Any:
    """One pyrDown step: binomial blur, then keep rows/cols 0, 2, 4, ... (size ceil(H/2) x ceil(W/2)).

    ``reduce(x)[i, j] = sum_{u,v} g[u] g[v] x[2i + u - 2, 2j + v - 2]`` with reflect-101 borders.

    Example:
        >>> import numpy as np
        >>> reduce(np.arange(25.0).reshape(5, 5)).shape
        (3, 3)
    """
    t, how = _to_nchw(x)
    return _from_nchw(_blur(t)[:, :, ::2, ::2], how)


def _expand_t(t: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    n, c, h, w = t.shape
    H, W = size
    if not (h == (H + 1) // 2 and w == (W + 1) // 2):
        raise InputError(f"cannot expand a {h}x{w} level to {H}x{W}: the coarse level must be ceil(H/2) x ceil(W/2).")
    up = t.new_zeros((n, c, H, W))
    up[:, :, ::2, ::2] = t  # coarse samples back on the even grid, zeros between
    return _blur(up, gain=2.0)


def expand(x: Any, size: tuple[int, int]) -> Any:
    """Upsample a level to ``size = (H, W)``: zeros between samples, then blur with ``2 g`` per axis.

    ``size`` must be the finer level's size, i.e. the input is ``ceil(H/2) x ceil(W/2)``.

    Example:
        >>> import numpy as np
        >>> expand(np.ones((3, 3)), (5, 6)).shape
        (5, 6)
    """
    t, how = _to_nchw(x)
    return _from_nchw(_expand_t(t, (int(size[0]), int(size[1]))), how)


def max_levels(height: int, width: int) -> int:
    """Number of distinct pyramid levels down to 1x1: ``1 + ceil(log2(max(H, W)))``.

    Example:
        >>> max_levels(300, 451)
        10
    """
    n, h, w = 1, height, width
    while h > 1 or w > 1:
        h, w, n = (h + 1) // 2, (w + 1) // 2, n + 1
    return n


def _check_levels(levels: int, h: int, w: int) -> None:
    if isinstance(levels, bool) or not isinstance(levels, (int, np.integer)) or levels < 1:
        raise InputError(f"levels must be an integer >= 1, got {levels!r}.")
    top = max_levels(h, w)
    if levels > top:
        raise InputError(
            f"levels={levels} is too many for a {h}x{w} image: level {top - 1} is already 1x1; use levels <= {top}."
        )


def _gaussian_t(t: torch.Tensor, levels: int) -> list[torch.Tensor]:
    out = [t]
    for _ in range(levels - 1):
        out.append(_blur(out[-1])[:, :, ::2, ::2])
    return out


def gaussian_pyramid(x: Any, levels: int) -> list[Any]:
    """Gaussian pyramid ``[G_0 = x, G_1, ..., G_{levels-1}]`` with ``G_{k+1} = reduce(G_k)``.

    Args:
        x: (H, W), (C, H, W) or (N, C, H, W), NumPy array or torch tensor (kept on its device).
        levels: total number of levels including ``x`` itself (1 .. :func:`max_levels`).

    Example:
        >>> import torch
        >>> [tuple(g.shape) for g in gaussian_pyramid(torch.zeros(2, 3, 8, 8), 3)]
        [(2, 3, 8, 8), (2, 3, 4, 4), (2, 3, 2, 2)]
    """
    t, how = _to_nchw(x)
    _check_levels(levels, t.shape[2], t.shape[3])
    return [_from_nchw(g, how) for g in _gaussian_t(t, int(levels))]


def laplacian_pyramid(x: Any, levels: int) -> list[Any]:
    """Laplacian pyramid ``[L_0, ..., L_{levels-1}]``: ``L_k = G_k - expand(G_{k+1})``, last = ``G_{levels-1}``.

    Each band-pass level holds the detail lost between two Gaussian levels; the last level is the
    low-pass residual, so :func:`reconstruct` recovers ``x`` exactly.

    Example:
        >>> import numpy as np
        >>> [lv.shape for lv in laplacian_pyramid(np.zeros((3, 7, 5)), 3)]
        [(3, 7, 5), (3, 4, 3), (3, 2, 2)]
    """
    t, how = _to_nchw(x)
    _check_levels(levels, t.shape[2], t.shape[3])
    gauss = _gaussian_t(t, int(levels))
    lap = [g - _expand_t(g_next, (g.shape[2], g.shape[3])) for g, g_next in zip(gauss[:-1], gauss[1:], strict=True)]
    lap.append(gauss[-1])
    return [_from_nchw(lv, how) for lv in lap]


def reconstruct(laplacian_levels: list[Any]) -> Any:
    """Invert :func:`laplacian_pyramid`: ``G_{n-1} = L_{n-1}``, ``G_k = L_k + expand(G_{k+1})``; returns ``G_0``.

    Example:
        >>> import numpy as np
        >>> x = np.arange(30.0).reshape(5, 6)
        >>> bool(np.allclose(reconstruct(laplacian_pyramid(x, 3)), x, atol=1e-12))
        True
    """
    if isinstance(laplacian_levels, (np.ndarray, torch.Tensor)) or not len(laplacian_levels):
        raise InputError("reconstruct needs the list of levels returned by laplacian_pyramid (at least one level).")
    converted = [_to_nchw(lv, f"level {i}") for i, lv in enumerate(laplacian_levels)]
    how = converted[0][1]
    levels = [c[0] for c in converted]
    for i, (fine, coarse) in enumerate(zip(levels[:-1], levels[1:], strict=True)):
        if fine.shape[:2] != coarse.shape[:2] or (coarse.shape[2], coarse.shape[3]) != (
            (fine.shape[2] + 1) // 2,
            (fine.shape[3] + 1) // 2,
        ):
            raise InputError(
                f"level {i + 1} has shape {tuple(coarse.shape)} but level {i} {tuple(fine.shape)} needs the next "
                "level to be ceil(H/2) x ceil(W/2) with the same N and C; pass the list from laplacian_pyramid unchanged."
            )
    g = levels[-1]
    for lap in reversed(levels[:-1]):
        g = lap + _expand_t(g.to(lap.dtype), (lap.shape[2], lap.shape[3]))
    return _from_nchw(g, how)
