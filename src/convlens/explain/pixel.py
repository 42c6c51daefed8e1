"""Pixel attributions: one relevance value per input element, raw, as Captum returns them.

``attribute(model, x, method, targets=None, **kw) -> Tensor (N, C, H, W)``. Methods (``ATTRIBUTIONS``):

* ``saliency`` -- :math:`|\\partial y^c / \\partial x|` (Simonyan et al. 2014, https://arxiv.org/abs/1312.6034);
* ``inputxgradient`` -- :math:`x \\odot \\partial y^c / \\partial x` (Shrikumar et al. 2016);
* ``integratedgradients`` -- :math:`(x - x') \\odot \\int_0^1 \\nabla y^c(x' + \\alpha (x - x'))\\, d\\alpha`
  by quadrature (Sundararajan et al. 2017, https://arxiv.org/abs/1703.01365);
* ``smoothgrad`` -- any of these averaged over Gaussian copies of the input (Smilkov et al. 2017,
  https://arxiv.org/abs/1706.03825; Captum's ``NoiseTunnel``);
* ``occlusion`` -- score drop when a sliding window is replaced by the baseline, averaged over the
  windows covering each element (Zeiler & Fergus 2014, https://arxiv.org/abs/1311.2901);
* ``rise`` -- score-weighted average of random smooth masks (Petsiuk et al. 2018,
  https://arxiv.org/abs/1806.07421).

Keyword names follow Captum's (``baselines``, ``n_steps``, ``method``, ``sliding_window_shapes``,
``strides``, ``nt_samples``, ``stdevs``, ``nt_type``, ``internal_batch_size``,
``return_convergence_delta``). Every method runs its perturbed or interpolated copies in chunks of
``internal_batch_size`` rows (default 32): memory is bounded whatever ``n_steps`` or the input size,
unlike Captum's IG, which expands all steps at once by default. The model's modes and parameter
flags are restored and parameter ``.grad`` is never written. Randomness (``smoothgrad``, ``rise``)
comes from a CPU generator seeded with ``seed``.

Example:
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3, padding=1), torch.nn.AdaptiveAvgPool2d(1),
    ...                           torch.nn.Flatten())
    >>> attribute(net, torch.randn(2, 3, 8, 8), "integratedgradients", targets=[0, 1], n_steps=8).shape
    torch.Size([2, 3, 8, 8])
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from convlens.errors import InputError
from convlens.explain.base import BaseCAM, Targets, _check_input, _check_model, target_scores
from convlens.hooks import device_of, preserve_state

__all__ = ["ATTRIBUTIONS", "attribute", "ig_quadrature", "rise_masks", "attribution_map"]

Scorer = Callable[[Any, torch.Tensor], torch.Tensor]


def _int(v: Any, name: str, lo: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
        raise InputError(f"{name} must be an int >= {lo}, got {v!r}.")
    return int(v)


def _baseline(x: torch.Tensor, baselines: Any) -> torch.Tensor:
    """``None`` -> zeros (in the model's input space, as Captum); a number; or a tensor broadcastable to x."""
    if baselines is None:
        return torch.zeros_like(x)
    if isinstance(baselines, (int, float)) and not isinstance(baselines, bool):
        return torch.full_like(x, float(baselines))
    if isinstance(baselines, torch.Tensor):
        try:
            return torch.broadcast_to(baselines.to(x.device, x.dtype), x.shape).clone()
        except RuntimeError:
            raise InputError(
                f"baselines of shape {tuple(baselines.shape)} do not broadcast to the input {tuple(x.shape)}."
            ) from None
    raise InputError(f"baselines must be None, a number or a tensor, got {type(baselines).__name__}.")


def ig_quadrature(n_steps: int, method: str = "gausslegendre") -> tuple[list[float], list[float]]:
    """``(step_sizes, alphas)`` of Captum's IG rules: ``gausslegendre`` (default), ``riemann_left``,
    ``riemann_right``, ``riemann_middle``, ``riemann_trapezoid``.

    Example:
        >>> ig_quadrature(3, "riemann_trapezoid")
        ([0.16666666666666666, 0.3333333333333333, 0.16666666666666666], [0.0, 0.5, 1.0])
    """
    n = _int(n_steps, "n_steps")
    if method == "gausslegendre":
        nodes, w = np.polynomial.legendre.leggauss(n)
        return list(0.5 * w), list(0.5 * (1 + nodes))
    kinds = ("riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid")
    if method not in kinds:
        raise InputError(f"method must be 'gausslegendre' or one of {', '.join(kinds)}; got {method!r}.")
    if n < 2:
        raise InputError("Riemann integration needs n_steps >= 2.")
    steps = [1 / n] * n
    if method == "riemann_trapezoid":
        steps[0] /= 2
        steps[-1] /= 2
        return steps, torch.linspace(0, 1, n).tolist()
    lo, hi = {
        "riemann_left": (0, 1 - 1 / n),
        "riemann_right": (1 / n, 1),
        "riemann_middle": (1 / (2 * n), 1 - 1 / (2 * n)),
    }[method]
    return steps, torch.linspace(lo, hi, n).tolist()


class _Ctx:
    """Model + targets of one attribution call: the classes are fixed on the clean input once."""

    def __init__(self, model: nn.Module, x: torch.Tensor, targets: Targets, batch: int, create_graph: bool) -> None:
        self.model, self.batch, self.create_graph = model, batch, create_graph
        with torch.no_grad():
            out = model(x)
            scores, cls, _ = target_scores(out, targets, x.shape[0])
        self.scores, self.cls = scores.float(), cls
        self.score: Scorer = BaseCAM._row_score(targets, cls)

    def grad(self, rows: torch.Tensor, img: torch.Tensor) -> torch.Tensor:
        """d score / d input for a batch of copies ``rows`` of images ``img``."""
        xi = rows if rows.requires_grad else rows.detach().requires_grad_(True)
        s = self.score(self.model(xi), img).float()
        (g,) = torch.autograd.grad(s.sum(), xi, create_graph=self.create_graph)
        return g

    def scores_of(self, rows: torch.Tensor, img: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.score(self.model(rows), img).float()


def _chunked_grads(ctx: _Ctx, make: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]], total: int):
    """Yield ``(index, gradients)`` over ``total`` rows built by ``make(index) -> (rows, image index)``."""
    dev = device_of(ctx.model)
    for start in range(0, total, ctx.batch):
        idx = torch.arange(start, min(start + ctx.batch, total), device=dev)
        rows, img = make(idx)
        yield idx, img, ctx.grad(rows, img)


def _saliency(ctx: _Ctx, x: torch.Tensor, abs: bool = True) -> torch.Tensor:  # noqa: A002
    g = torch.cat([g for _, _, g in _chunked_grads(ctx, lambda i: (x[i], i), x.shape[0])])
    return g.abs() if abs else g


def _input_x_gradient(ctx: _Ctx, x: torch.Tensor) -> torch.Tensor:
    return x * _saliency(ctx, x, abs=False)


def _integrated_gradients(
    ctx: _Ctx,
    x: torch.Tensor,
    baselines: Any = None,
    n_steps: int = 50,
    method: str = "gausslegendre",
    return_convergence_delta: bool = False,
) -> Any:
    steps, alphas = ig_quadrature(n_steps, method)
    b = _baseline(x, baselines)
    n = x.shape[0]
    k = len(alphas)
    al = torch.tensor(alphas, device=x.device, dtype=x.dtype)
    st = torch.tensor(steps, device=x.device, dtype=torch.float32)
    total = torch.zeros(x.shape, device=x.device, dtype=torch.float32)

    def make(idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        step, img = idx // n, idx % n  # Captum's order: all images at alpha_0, then alpha_1, ...
        a = al[step].view(-1, *([1] * (x.ndim - 1)))
        return b[img] + a * (x[img] - b[img]), img

    for idx, img, g in _chunked_grads(ctx, make, n * k):
        total = total.index_add(0, img, g.float() * st[idx // n].view(-1, *([1] * (x.ndim - 1))))
    attr = (x - b).float() * total
    if not return_convergence_delta:
        return attr
    idx = torch.arange(n, device=x.device)
    delta = attr.reshape(n, -1).sum(1) - (ctx.scores_of(x, idx) - ctx.scores_of(b, idx))
    return attr, delta


def _occlusion(
    ctx: _Ctx,
    x: torch.Tensor,
    sliding_window_shapes: Sequence[int] | None = None,
    strides: int | Sequence[int] | None = None,
    baselines: Any = None,
) -> torch.Tensor:
    if sliding_window_shapes is None:  # all channels, 1/8 of each side (28 px at 224)
        sliding_window_shapes = (x.shape[1], *(max(1, d // 8) for d in x.shape[2:]))
    if strides is None:  # half a window: each pixel is covered by about 4 windows
        strides = (x.shape[1], *(max(1, int(s) // 2) for s in tuple(sliding_window_shapes)[1:]))
    shape = tuple(int(s) for s in sliding_window_shapes)
    if len(shape) != x.ndim - 1 or any(s < 1 for s in shape) or any(s > d for s, d in zip(shape, x.shape[1:])):
        raise InputError(
            f"sliding_window_shapes must give one positive size per input dim (C, H, W) within {tuple(x.shape[1:])}, "
            f"got {tuple(sliding_window_shapes)}."
        )
    st = (int(strides),) * len(shape) if isinstance(strides, (int, np.integer)) else tuple(int(s) for s in strides)
    if len(st) != len(shape) or any(s < 1 for s in st):
        raise InputError(f"strides must be a positive int or one per input dim, got {strides!r}.")
    counts = [(d - s) // t + 1 for d, s, t in zip(x.shape[1:], shape, st)]
    n_win = int(np.prod(counts))
    b = _baseline(x, baselines)
    n = x.shape[0]
    idx_img = torch.arange(n, device=x.device)
    y = ctx.scores_of(x, idx_img)
    grids = [torch.arange(d, device=x.device) for d in x.shape[1:]]

    def window_masks(w: torch.Tensor) -> torch.Tensor:
        """(B,) window numbers -> (B, C, H, W) 0/1 masks (Captum's numbering: first dim fastest)."""
        m = torch.ones((w.shape[0], *x.shape[1:]), device=x.device, dtype=torch.bool)
        rem = w
        for dim, (cnt, s, t) in enumerate(zip(counts, shape, st)):
            start = (rem % cnt) * t
            rem = rem // cnt
            inside = (grids[dim][None, :] >= start[:, None]) & (grids[dim][None, :] < start[:, None] + s)
            view = [w.shape[0]] + [1] * (x.ndim - 1)
            view[dim + 1] = x.shape[dim + 1]
            m = m & inside.view(view)
        return m

    attr = torch.zeros(x.shape, device=x.device, dtype=torch.float32)
    cover = torch.zeros(x.shape[1:], device=x.device, dtype=torch.float32)
    total = n * n_win
    for start in range(0, total, ctx.batch):
        idx = torch.arange(start, min(start + ctx.batch, total), device=x.device)
        win, img = idx // n, idx % n
        m = window_masks(win)
        rows = torch.where(m, b[img], x[img])
        diff = y[img] - ctx.scores_of(rows, img)
        attr = attr.index_add(0, img, m.float() * diff.view(-1, *([1] * (x.ndim - 1))))
        cover = cover + m[img == 0].float().sum(0)
    return attr / cover.clamp_min(1.0)


def rise_masks(
    n_masks: int, size: tuple[int, int], *, mask_size: int = 7, p: float = 0.5, generator: torch.Generator | None = None
) -> torch.Tensor:
    """RISE's random masks (n_masks, H, W) in [0, 1]: a ``mask_size`` x ``mask_size`` grid of
    Bernoulli(``p``) cells, bilinearly upsampled to ``(s + 1) * cell`` and cropped at a random shift
    within one cell (Petsiuk et al. 2018, Sec. 3.2).

    Example:
        >>> m = rise_masks(4, (32, 32), mask_size=4, generator=torch.Generator().manual_seed(0))
        >>> tuple(m.shape), bool(m.min() >= 0) and bool(m.max() <= 1)
        ((4, 32, 32), True)
    """
    n_masks = _int(n_masks, "n_masks")
    s = _int(mask_size, "mask_size")
    if not 0 < p < 1:
        raise InputError(f"p must be in (0, 1), got {p!r}.")
    h, w = size
    ch, cw = int(np.ceil(h / s)), int(np.ceil(w / s))
    grid = (torch.rand((n_masks, 1, s, s), generator=generator) < p).float()
    up = F.interpolate(grid, size=((s + 1) * ch, (s + 1) * cw), mode="bilinear", align_corners=False)
    dy = torch.randint(0, ch, (n_masks,), generator=generator)
    dx = torch.randint(0, cw, (n_masks,), generator=generator)
    rows = (dy[:, None] + torch.arange(h)[None, :])[:, :, None]
    cols = (dx[:, None] + torch.arange(w)[None, :])[:, None, :]
    return up[torch.arange(n_masks)[:, None, None], 0, rows, cols].clamp(0.0, 1.0)


def _rise(
    ctx: _Ctx, x: torch.Tensor, n_masks: int = 2000, mask_size: int = 7, p: float = 0.5, seed: int = 0
) -> torch.Tensor:
    r""":math:`S = \frac{1}{N_M\, p} \sum_i y^c(x \odot M_i)\, M_i` (class targets: softmax probability)."""
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    masks = rise_masks(n_masks, (x.shape[2], x.shape[3]), mask_size=mask_size, p=p, generator=gen).to(x.device)
    n = x.shape[0]
    sal = torch.zeros((n, x.shape[2], x.shape[3]), device=x.device, dtype=torch.float32)
    prob = ctx.cls.min() >= 0  # class targets: probabilities, as the paper; a callable's own score otherwise
    for start in range(0, n * n_masks, ctx.batch):
        idx = torch.arange(start, min(start + ctx.batch, n * n_masks), device=x.device)
        mi, img = idx // n, idx % n
        with torch.no_grad():
            out = ctx.model(x[img] * masks[mi][:, None].to(x.dtype))
            if prob:
                from convlens.explain.base import class_logits

                logits = class_logits(out)
                assert logits is not None
                s = logits.float().softmax(1).gather(1, ctx.cls[img][:, None])[:, 0]
            else:
                s = ctx.score(out, img).float()
        sal = sal.index_add(0, img, s[:, None, None] * masks[mi])
    sal = sal / (n_masks * p)
    return sal[:, None].expand(-1, x.shape[1], -1, -1).contiguous()


_BASE = {
    "saliency": _saliency,
    "inputxgradient": _input_x_gradient,
    "integratedgradients": _integrated_gradients,
    "occlusion": _occlusion,
    "rise": _rise,
}


def _smoothgrad(
    ctx: _Ctx,
    x: torch.Tensor,
    base: str = "saliency",
    nt_samples: int = 5,
    stdevs: float = 1.0,
    nt_type: str = "smoothgrad",
    seed: int = 0,
    **kw: Any,
) -> torch.Tensor:
    """Captum's ``NoiseTunnel``: copy ``i * nt_samples + s`` is image ``i`` plus N(0, stdevs^2) noise;
    ``smoothgrad`` averages the base attributions, ``smoothgrad_sq`` their squares, ``vargrad`` is
    their variance."""
    if base not in _BASE or base == "smoothgrad":
        raise InputError(f"base must be one of {', '.join(_BASE)}, got {base!r}.")
    if nt_type not in ("smoothgrad", "smoothgrad_sq", "vargrad"):
        raise InputError(f"nt_type must be smoothgrad, smoothgrad_sq or vargrad, got {nt_type!r}.")
    k = _int(nt_samples, "nt_samples")
    if not float(stdevs) >= 0:
        raise InputError(f"stdevs must be >= 0, got {stdevs!r}.")
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    n = x.shape[0]
    s1 = torch.zeros(x.shape, device=x.device, dtype=torch.float32)
    s2 = torch.zeros_like(s1)
    fn = _BASE[base]
    cls_all = ctx.cls
    # noise is drawn chunk by chunk in Captum's row order (image-major), at most internal_batch_size rows at once
    for start in range(0, n * k, ctx.batch):
        idx = torch.arange(start, min(start + ctx.batch, n * k), device=x.device)
        img = idx // k
        noise = torch.randn((idx.shape[0], *x.shape[1:]), generator=gen, dtype=torch.float32) * float(stdevs)
        rows = x[img] + noise.to(x.device, x.dtype)
        sub = _SubCtx(ctx, img, cls_all)
        kw_rows = dict(kw)
        if isinstance(kw_rows.get("baselines"), torch.Tensor) and kw_rows["baselines"].shape[:1] == (n,):
            kw_rows["baselines"] = kw_rows["baselines"][img]
        a = fn(sub, rows, **kw_rows).float()  # type: ignore[operator]
        s1 = s1.index_add(0, img, a)
        s2 = s2.index_add(0, img, a * a)
    mean, sq = s1 / k, s2 / k
    if nt_type == "smoothgrad":
        return mean
    if nt_type == "smoothgrad_sq":
        return sq
    return sq - mean * mean


class _SubCtx(_Ctx):
    """A context whose rows are copies of images ``img`` of the parent batch (same classes/callable)."""

    def __init__(self, parent: _Ctx, img: torch.Tensor, cls: torch.Tensor) -> None:
        self.model, self.batch, self.create_graph = parent.model, parent.batch, parent.create_graph
        self.cls = cls[img]
        self.scores = parent.scores[img]
        self._parent_score, self._img = parent.score, img
        self.score = lambda out, rows: self._parent_score(out, self._img[rows])


ATTRIBUTIONS: dict[str, Callable[..., Any]] = {**_BASE, "smoothgrad": _smoothgrad}


def attribute(
    model: nn.Module,
    x: torch.Tensor,
    method: str,
    /,
    targets: Targets = None,
    *,
    internal_batch_size: int = 32,
    create_graph: bool = False,
    **kw: Any,
) -> Any:
    """Pixel attributions (N, C, H, W), raw (not normalized), for each image's target.

    ``method``: one of ``ATTRIBUTIONS`` (module docstring); ``model``, ``x`` and ``method`` are
    positional, so that ``method=`` stays free for Captum's IG keyword (the quadrature rule). ``targets`` as for CAMs: ``None`` (each
    image's top-1 on the clean input), an int, one int per image, or ``fn(output) -> (N,)`` (applied
    to chunks of copies, so it must score rows independently). Method keywords (Captum's names):
    ``abs`` (saliency, default True); ``baselines``, ``n_steps`` (50), ``method`` ('gausslegendre'),
    ``return_convergence_delta`` (integrated gradients: returns ``(attr, delta)`` with
    ``delta = sum(attr) - (y(x) - y(baseline))``); ``sliding_window_shapes``, ``strides``,
    ``baselines`` (occlusion; Captum has no defaults, convlens uses all channels x 1/8 of each side,
    stride half a window: 225 windows at 224 px); ``base``, ``nt_samples`` (5), ``stdevs`` (1.0), ``nt_type``, ``seed``
    and the base method's keywords (smoothgrad); ``n_masks``, ``mask_size``, ``p``, ``seed`` (rise).
    ``create_graph=True`` keeps the graph of the gradient methods (parameters keep their flags).

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3, padding=1), torch.nn.AdaptiveAvgPool2d(1),
        ...                           torch.nn.Flatten())
        >>> a = attribute(net, torch.randn(1, 3, 6, 6), "occlusion", 1, sliding_window_shapes=(3, 2, 2), strides=2)
        >>> tuple(a.shape)
        (1, 3, 6, 6)
    """
    model = _check_model(model)
    if not isinstance(method, str) or method.lower().replace("_", "").replace("-", "") not in ATTRIBUTIONS:
        close = difflib.get_close_matches(str(method).lower(), list(ATTRIBUTIONS), n=2, cutoff=0.5)
        hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
        raise InputError(f"unknown attribution method {method!r}; {hint}choose one of {', '.join(ATTRIBUTIONS)}.")
    key = method.lower().replace("_", "").replace("-", "")
    batch = _int(internal_batch_size, "internal_batch_size")
    x = _check_input(x)
    dev = device_of(model)
    with ExitStack() as stack:
        stack.enter_context(torch.inference_mode(False))
        stack.enter_context(torch.enable_grad())
        stack.enter_context(preserve_state(model, train=False, requires_grad=None if create_graph else False))
        xd = x.to(dev) if create_graph else x.detach().to(dev)
        if xd.is_inference():
            xd = xd.clone()
        ctx = _Ctx(model, xd.detach(), targets, batch, create_graph)
        try:
            out = ATTRIBUTIONS[key](ctx, xd, **kw)
        except TypeError as e:
            if "unexpected keyword" not in str(e):
                raise
            raise InputError(f"{key}: {str(e).split(') ', 1)[-1]}.") from None
    if create_graph:
        return out
    return tuple(o.detach() for o in out) if isinstance(out, tuple) else out.detach()


def attribution_map(attr: torch.Tensor) -> torch.Tensor:
    """A pixel attribution (N, C, H, W) as a map (N, H, W) in [0, 1]: the channel sum of ``|attr|``
    (Captum's ``visualize_image_attr`` default, ``sign='absolute_value'``), min-max per image.

    Example:
        >>> attribution_map(torch.tensor([[[[1.0, -3.0]], [[1.0, 0.0]]]])).tolist()
        [[[0.0, 1.0]]]
    """
    from convlens.explain.base import normalize_maps

    m, _ = normalize_maps(attr.detach().float().abs().sum(1))
    return m
