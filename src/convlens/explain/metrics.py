"""Faithfulness metrics for saliency maps: does the model's score really depend on the highlighted pixels?

* :func:`deletion_curve` / :func:`insertion_curve` (Petsiuk et al., RISE, BMVC 2018,
  https://arxiv.org/abs/1806.07421): remove (or insert) pixels from most to least salient and follow
  the target's probability; a faithful map gives a LOW deletion AUC and a HIGH insertion AUC.
* :func:`road` (Rong et al., "A Consistent and Efficient Evaluation Strategy for Attribution Methods",
  ICML 2022, https://arxiv.org/abs/2202.00449): remove a percentile of pixels, most relevant first
  (MoRF) or least relevant first (LeRF), and fill them by *noisy linear imputation*
  (:func:`noisy_linear_impute`) so the removal's shape leaks no class information.
* :func:`confidence_change`: Average Drop and Increase in Confidence (Chattopadhyay et al.,
  Grad-CAM++, https://arxiv.org/abs/1710.11063) on the explanation ``x * map``.
* :func:`pointing_game` and :func:`energy_in_box`: does the map point at a user-given box or mask?
* :func:`randomization_check`: the model-randomization sanity check (Adebayo et al., "Sanity Checks
  for Saliency Maps", NeurIPS 2018, https://arxiv.org/abs/1810.03292): randomize weights top-down,
  cascading, on a deep copy of the model; a map that does not change (high rank correlation) is not
  explaining the model.

All perturbed images of a batch run in chunks of ``batch_size`` through one ``no_grad`` forward each,
on the model's device; the model's modes are restored afterwards.

Example:
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(),
    ...                           torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 3))
    >>> x, maps = torch.randn(2, 3, 8, 8), torch.rand(2, 8, 8)
    >>> c = deletion_curve(net, x, maps, steps=4)
    >>> tuple(c.scores.shape), tuple(c.auc.shape)
    ((2, 5), (2,))
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from convlens.errors import InputError
from convlens.explain.base import (
    LayerSpec,
    Targets,
    _check_input,
    _check_model,
    call_target,
    class_logits,
    resolve_layers,
    target_scores,
)
from convlens.hooks import device_of, preserve_state

__all__ = [
    "Curve",
    "RoadResult",
    "ConfidenceChange",
    "SanityCheck",
    "deletion_curve",
    "insertion_curve",
    "road",
    "noisy_linear_impute",
    "confidence_change",
    "randomization_check",
    "spearman",
    "ssim",
    "PointingGame",
    "pointing_game",
    "energy_in_box",
    "saliency_ranks",
]


@dataclass
class Curve:
    """A deletion or insertion curve per image.

    Attributes:
        fractions: (S+1,) fraction of pixels removed (deletion) or inserted (insertion), 0 to 1.
        scores: (N, S+1) target probability (or callable score) at each fraction.
        auc: (N,) area under the curve (trapezoid rule over ``fractions``).
        kind: ``'deletion'`` or ``'insertion'``.
    """

    fractions: torch.Tensor
    scores: torch.Tensor
    auc: torch.Tensor
    kind: str


@dataclass
class RoadResult:
    """ROAD scores: target probability after imputing ``percentiles`` % of the pixels.

    Attributes:
        percentiles: (P,) percent of pixels removed.
        scores: (N, P) probabilities; ``mean`` (N,) their average (MoRF: lower = more faithful;
            LeRF: higher = more faithful).
        order: ``'morf'`` or ``'lerf'``.
    """

    percentiles: torch.Tensor
    scores: torch.Tensor
    mean: torch.Tensor
    order: str


@dataclass
class ConfidenceChange:
    """Average Drop / Increase in Confidence on the explanation ``x * map``.

    Attributes:
        full: (N,) probability of the target on the image, ``Y``.
        masked: (N,) on the explanation, ``O``.
        drop: (N,) ``100 * max(0, Y - O) / Y`` (percent).
        increase: (N,) bool, ``O > Y``.
        average_drop: mean of ``drop``; ``increase_rate``: percent of images with an increase.
    """

    full: torch.Tensor
    masked: torch.Tensor
    drop: torch.Tensor
    increase: torch.Tensor
    average_drop: float
    increase_rate: float


@dataclass
class SanityCheck:
    """Model-randomization check: rank correlation of each map with the original after randomizing
    the listed layers cumulatively (top-down).

    Attributes:
        layers: names randomized at each step (step k randomizes ``layers[: k + 1]``).
        correlation: (K, N) Spearman rank correlation per step and image.
        mean: (K,) average over images.
        maps: (K + 1, N, H, W) the original maps then the maps after each step (for figures).
        ssim: (K, N) structural similarity (:func:`ssim`) of each randomized map to the original.
    """

    layers: list[str]
    correlation: torch.Tensor
    mean: torch.Tensor
    maps: torch.Tensor
    ssim: torch.Tensor | None = None


# ----------------------------------------------------------------------------------------------------
# shared pieces


def _check_maps(maps: Any, x: torch.Tensor) -> torch.Tensor:
    if isinstance(maps, np.ndarray):
        maps = torch.from_numpy(maps)
    if not isinstance(maps, torch.Tensor):
        raise InputError(f"maps must be a tensor or array of shape (N, H, W), got {type(maps).__name__}.")
    if maps.ndim == 2:
        maps = maps[None]
    want = (x.shape[0], x.shape[2], x.shape[3])
    if tuple(maps.shape) != want:
        raise InputError(f"maps must have shape {want} (one map per image, input size), got {tuple(maps.shape)}.")
    maps = maps.to(device=x.device, dtype=torch.float32)
    if not bool(torch.isfinite(maps).all()):
        raise InputError("maps contain NaN or infinite values.")
    return maps


def saliency_ranks(maps: torch.Tensor) -> torch.Tensor:
    """(N, H, W) maps -> (N, H, W) long rank of each pixel, 0 = most salient (ties: earlier pixel first).

    Example:
        >>> saliency_ranks(torch.tensor([[[0.1, 0.9], [0.5, 0.5]]])).tolist()
        [[[3, 0], [1, 2]]]
    """
    n = maps.shape[0]
    flat = maps.reshape(n, -1)
    order = torch.sort(-flat, dim=1, stable=True).indices  # (N, HW) pixel ids, most salient first
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(flat.shape[1], device=maps.device).expand(n, -1))
    return ranks.reshape(maps.shape)


class _Scorer:
    """Target probability (softmax of the class) or a callable's score, for batches of perturbed copies."""

    def __init__(self, model: nn.Module, x: torch.Tensor, targets: Targets, batch_size: int) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InputError(f"batch_size must be an int >= 1, got {batch_size!r}.")
        self.model = model
        self.batch_size = batch_size
        self.fn = targets if callable(targets) and not isinstance(targets, torch.Tensor) else None
        out = model(x)
        if self.fn is not None:
            s, _, _ = target_scores(out, self.fn, x.shape[0])
            self.cls = None
            self.full = s.float()
        else:
            _, cls, p = target_scores(out, targets, x.shape[0])
            self.cls = cls
            assert p is not None
            self.full = p

    def score(self, out: torch.Tensor, img: torch.Tensor) -> torch.Tensor:
        if self.fn is not None:
            return call_target(self.fn, out, img.shape[0]).float()
        assert self.cls is not None
        logits = class_logits(out)
        assert logits is not None  # target_scores found them on the first forward
        return logits.float().softmax(1).gather(1, self.cls[img][:, None])[:, 0]

    def run(self, make: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], n_img: int, n_per: int) -> torch.Tensor:
        """Score ``make(img_idx, step_idx)`` for all (image, step) pairs, in chunks; -> (n_img, n_per)."""
        total = n_img * n_per
        dev = self.full.device
        out = torch.empty(total, device=dev, dtype=torch.float32)
        for start in range(0, total, self.batch_size):
            idx = torch.arange(start, min(start + self.batch_size, total), device=dev)
            img, step = idx // n_per, idx % n_per
            out[idx] = self.score(self.model(make(img, step)), img)
        return out.view(n_img, n_per)


def _gaussian_blur(x: torch.Tensor, ksize: int = 11, sigma: float = 5.0) -> torch.Tensor:
    """The ``'blur'`` baseline: a separable Gaussian (``ksize`` taps, ``exp(-t^2 / (2 sigma^2))`` normalized to
    sum 1) along H and W. The border is reflected without repeating the edge pixel (torch's ``'reflect'``) as far as
    the smaller side allows (``min(ksize // 2, H - 1, W - 1)`` pixels, on both axes), the rest of the kernel's
    reach repeats the edge."""
    r = ksize // 2
    t = torch.arange(ksize, device=x.device, dtype=x.dtype) - r
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = k / k.sum()
    c = x.shape[1]
    pad = min(r, x.shape[2] - 1, x.shape[3] - 1)
    y = F.pad(x, (pad, pad, pad, pad), mode="reflect") if pad > 0 else x
    kh = k.view(1, 1, 1, -1).expand(c, 1, 1, ksize)
    kv = k.view(1, 1, -1, 1).expand(c, 1, ksize, 1)
    y = F.conv2d(F.pad(y, (r - pad, r - pad, 0, 0), mode="replicate"), kh, groups=c)
    y = F.conv2d(F.pad(y, (0, 0, r - pad, r - pad), mode="replicate"), kv, groups=c)
    return y


def _baseline(x: torch.Tensor, baseline: str | float | torch.Tensor) -> torch.Tensor:
    if isinstance(baseline, torch.Tensor):
        b = baseline.to(device=x.device, dtype=x.dtype)
        try:
            return torch.broadcast_to(b, x.shape)
        except RuntimeError:
            raise InputError(
                f"baseline tensor of shape {tuple(b.shape)} does not broadcast to the input {tuple(x.shape)}."
            ) from None
    if isinstance(baseline, (int, float)) and not isinstance(baseline, bool):
        return torch.full_like(x, float(baseline))
    if baseline == "zero":
        return torch.zeros_like(x)
    if baseline == "blur":
        return _gaussian_blur(x)
    raise InputError(f"baseline must be 'zero', 'blur', a number or a tensor, got {baseline!r}.")


def _check_steps(steps: int) -> None:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise InputError(f"steps must be an int >= 1, got {steps!r}.")


def _curve(
    kind: str,
    model: nn.Module,
    x: torch.Tensor,
    maps: Any,
    targets: Targets,
    steps: int,
    baseline: str | float | torch.Tensor,
    batch_size: int,
) -> Curve:
    _check_steps(steps)
    model = _check_model(model)
    x = _check_input(x).to(device_of(model))
    maps = _check_maps(maps, x)
    n, _, h, w = x.shape
    hw = h * w
    with preserve_state(model, train=False), torch.no_grad():
        base = _baseline(x, baseline)
        ranks = saliency_ranks(maps)[:, None]  # (N, 1, H, W)
        counts = torch.round(torch.linspace(0, hw, steps + 1, device=x.device)).long()  # pixels changed per step
        scorer = _Scorer(model, x, targets, batch_size)

        def make(img: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
            changed = ranks[img] < counts[step].view(-1, 1, 1, 1)  # (B, 1, H, W) the top-k pixels
            if kind == "deletion":
                return torch.where(changed, base[img], x[img])
            return torch.where(changed, x[img], base[img])

        scores = scorer.run(make, n, steps + 1)
    fractions = counts.float() / hw
    auc = ((scores[:, 1:] + scores[:, :-1]) * 0.5 * (fractions[1:] - fractions[:-1])).sum(1)
    return Curve(fractions=fractions, scores=scores, auc=auc, kind=kind)


def deletion_curve(
    model: nn.Module,
    x: torch.Tensor,
    maps: torch.Tensor | np.ndarray,
    targets: Targets = None,
    *,
    steps: int = 20,
    baseline: str | float | torch.Tensor = "zero",
    batch_size: int = 32,
) -> Curve:
    r"""Deletion curve: replace the top ``k/steps`` most salient pixels by ``baseline`` (all channels),
    k = 0..steps, and record the target's probability; lower AUC = more faithful map.

    .. math:: \mathrm{AUC} = \int_0^1 p_c\big(x \text{ with the top-}f \text{ pixels deleted}\big)\, df

    ``baseline``: ``'zero'`` (0 in the normalized input = the dataset's mean colour), ``'blur'``,
    a number, or a tensor broadcastable to ``x``. ``targets`` as for :func:`convlens.explain.cam`
    (None = each image's top-1 on the intact image).

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 2))
        >>> c = deletion_curve(net, torch.randn(1, 3, 4, 4), torch.rand(1, 4, 4), steps=2)
        >>> c.fractions.tolist()
        [0.0, 0.5, 1.0]
    """
    return _curve("deletion", model, x, maps, targets, steps, baseline, batch_size)


def insertion_curve(
    model: nn.Module,
    x: torch.Tensor,
    maps: torch.Tensor | np.ndarray,
    targets: Targets = None,
    *,
    steps: int = 20,
    baseline: str | float | torch.Tensor = "blur",
    batch_size: int = 32,
) -> Curve:
    r"""Insertion curve: start from ``baseline`` (default a Gaussian blur of the image) and put back the
    top ``k/steps`` most salient pixels; higher AUC = more faithful map.

    .. math:: \mathrm{AUC} = \int_0^1 p_c\big(\text{baseline with the top-}f \text{ pixels of } x\big)\, df

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 2))
        >>> c = insertion_curve(net, torch.randn(1, 3, 4, 4), torch.rand(1, 4, 4), steps=2)
        >>> tuple(c.scores.shape)
        (1, 3)
    """
    return _curve("insertion", model, x, maps, targets, steps, baseline, batch_size)


# ----------------------------------------------------------------------------------------------------
# ROAD

#: neighbour offsets and weights of the linear imputation (ROAD): 1/6 edge neighbours, 1/12 diagonals
_ROAD_NEIGHBOURS = [
    ((dr, dc), 1 / 6 if dr == 0 or dc == 0 else 1 / 12) for dr in (-1, 0, 1) for dc in (-1, 0, 1) if (dr, dc) != (0, 0)
]


def _impute_one(img: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Solve the linear-imputation system of one (C, H, W) image for its removed pixels (sparse, exact)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.linalg import spsolve

    c, h, w = img.shape
    keep_flat = keep.reshape(-1)
    unknown = np.flatnonzero(~keep_flat)
    m = unknown.size
    out = img.reshape(c, -1).copy()
    if m == 0:
        return img
    if m == keep_flat.size:  # nothing to interpolate from: every pixel becomes 0 (the mean colour)
        return np.zeros_like(img)
    var_id = np.full(keep_flat.size, -1, dtype=np.int64)
    var_id[unknown] = np.arange(m)
    row, col = np.divmod(unknown, w)
    diag = np.zeros(m)
    rhs = np.zeros((m, c))
    rows, cols, vals = [], [], []
    for (dr, dc), wgt in _ROAD_NEIGHBOURS:
        rr, cc = row + dr, col + dc
        inside = (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w)
        eq = np.flatnonzero(inside)  # equations (removed pixels) that have this neighbour
        q = rr[inside] * w + cc[inside]  # the neighbour's pixel id
        diag[eq] += wgt
        known = keep_flat[q]
        rhs[eq[known]] += wgt * out[:, q[known]].T  # kept neighbours move to the right-hand side
        rows.append(eq[~known])
        cols.append(var_id[q[~known]])
        vals.append(np.full(int((~known).sum()), -wgt))
    rows.append(np.arange(m))
    cols.append(np.arange(m))
    vals.append(diag)
    a = coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(m, m)).tocsc()
    sol = spsolve(a, rhs)
    out[:, unknown] = np.asarray(sol).reshape(m, c).T
    return out.reshape(c, h, w)


def noisy_linear_impute(
    x: torch.Tensor,
    keep: torch.Tensor,
    *,
    noise: float = 0.01,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""ROAD's noisy linear imputation: each removed pixel becomes the weighted mean of its 8 neighbours
    (1/6 edge, 1/12 diagonal), solved jointly for all removed pixels, plus Gaussian noise.

    For each removed pixel :math:`p`: :math:`\sum_{q \in N(p)} w_q (v_p - v_q) = 0` over the neighbours
    inside the image, kept pixels fixed. The sparse system (one per image, the C channels as right-hand
    sides) is solved exactly with SciPy's sparse direct solver on the CPU -- an iterative solver on the
    device needs thousands of steps for the large smooth holes CAM maps make. Then ``v_p += noise * N(0, 1)``
    on removed pixels. An image with no kept pixel is filled with zeros.

    Args:
        x: (N, C, H, W) images; keep: (N, H, W) bool, True = pixel kept.

    Example:
        >>> x = torch.zeros(1, 1, 3, 3); x[0, 0, :, 0] = 1.0
        >>> keep = torch.ones(1, 3, 3, dtype=torch.bool); keep[0, 1, 1] = False
        >>> round(float(noisy_linear_impute(x, keep, noise=0.0)[0, 0, 1, 1]), 4)  # (1/6 + 2/12) of the 1s
        0.3333
    """
    if x.ndim != 4 or tuple(keep.shape) != (x.shape[0], x.shape[2], x.shape[3]):
        raise InputError(
            f"keep must have shape (N, H, W) = {(x.shape[0], x.shape[2], x.shape[3])}, got {tuple(keep.shape)}."
        )
    xs = x.detach().cpu().double().numpy()
    ks = keep.detach().cpu().bool().numpy()
    filled = torch.from_numpy(np.stack([_impute_one(xs[i], ks[i]) for i in range(xs.shape[0])]))
    filled = filled.to(device=x.device, dtype=x.dtype)
    if noise > 0:
        eps = torch.randn(filled.shape, generator=generator, dtype=torch.float32)
        removed = (~keep.bool())[:, None].to(x.device)
        filled = filled + noise * eps.to(device=x.device, dtype=x.dtype) * removed
    return filled


def road(
    model: nn.Module,
    x: torch.Tensor,
    maps: torch.Tensor | np.ndarray,
    targets: Targets = None,
    *,
    percentiles: Sequence[float] = (10, 20, 30, 40, 50, 60, 70, 80, 90),
    order: Literal["morf", "lerf"] = "morf",
    noise: float = 0.01,
    seed: int = 0,
    batch_size: int = 32,
) -> RoadResult:
    """ROAD: remove ``p`` % of the pixels -- most relevant first (``'morf'``) or least relevant first
    (``'lerf'``) -- impute them with :func:`noisy_linear_impute`, and score the target probability.

    MoRF: a faithful map makes the probability fall fast (low mean); LeRF: stay high.
    Randomness (the imputation noise) comes from ``seed``.

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 6 * 6, 2))
        >>> r = road(net, torch.randn(1, 3, 6, 6), torch.rand(1, 6, 6), percentiles=(20, 50))
        >>> r.percentiles.tolist(), tuple(r.scores.shape)
        ([20.0, 50.0], (1, 2))
    """
    if order not in ("morf", "lerf"):
        raise InputError(f"order must be 'morf' or 'lerf', got {order!r}.")
    pct = [float(p) for p in percentiles]
    if not pct or any(not 0 <= p < 100 for p in pct):
        raise InputError(f"percentiles must be a non-empty list of numbers in [0, 100), got {list(percentiles)}.")
    model = _check_model(model)
    x = _check_input(x).to(device_of(model))
    maps = _check_maps(maps, x)
    n, _, h, w = x.shape
    hw = h * w
    gen = torch.Generator(device="cpu").manual_seed(seed)
    with preserve_state(model, train=False), torch.no_grad():
        scorer = _Scorer(model, x, targets, batch_size)
        ranks = saliency_ranks(maps)  # (N, H, W)
        removed_counts = [int(round(p / 100 * hw)) for p in pct]
        imputed = []
        for k in removed_counts:
            keep = ranks >= k if order == "morf" else ranks < hw - k
            imputed.append(noisy_linear_impute(x, keep, noise=noise, generator=gen))
        stack = torch.stack(imputed, 1)  # (N, P, C, H, W)
        scores = scorer.run(lambda img, step: stack[img, step], n, len(pct))
    return RoadResult(percentiles=torch.tensor(pct), scores=scores, mean=scores.mean(1), order=order)


# ----------------------------------------------------------------------------------------------------
# Average drop / increase in confidence


def confidence_change(
    model: nn.Module,
    x: torch.Tensor,
    maps: torch.Tensor | np.ndarray,
    targets: Targets = None,
    *,
    batch_size: int = 32,
) -> ConfidenceChange:
    r"""Average Drop and Increase in Confidence of the explanation ``E = x \odot map``.

    .. math:: \mathrm{Drop} = \frac{100}{N}\sum_i \frac{\max(0, Y_i - O_i)}{Y_i}, \qquad
              \mathrm{Increase} = \frac{100}{N}\sum_i \mathbb{1}[O_i > Y_i]

    with ``Y`` the target probability on ``x`` and ``O`` on ``E`` (``x`` is the normalized input).

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 2))
        >>> cc = confidence_change(net, torch.randn(2, 3, 4, 4), torch.ones(2, 4, 4))
        >>> round(cc.average_drop, 6), cc.increase_rate
        (0.0, 0.0)
    """
    model = _check_model(model)
    x = _check_input(x).to(device_of(model))
    maps = _check_maps(maps, x)
    with preserve_state(model, train=False), torch.no_grad():
        scorer = _Scorer(model, x, targets, batch_size)
        masked = scorer.run(lambda img, step: x[img] * maps[img][:, None], x.shape[0], 1)[:, 0]
    y = scorer.full
    drop = 100 * torch.clamp(y - masked, min=0) / y.clamp_min(1e-12)
    inc = masked > y
    return ConfidenceChange(
        full=y,
        masked=masked,
        drop=drop,
        increase=inc,
        average_drop=float(drop.mean()),
        increase_rate=100 * float(inc.float().mean()),
    )


# ----------------------------------------------------------------------------------------------------
# model randomization sanity check


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation per row of (N, ...) tensors (ties get their average rank); 0 when constant.

    Example:
        >>> spearman(torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[10.0, 20.0, 15.0]])).tolist()
        [0.5]
    """
    from scipy.stats import rankdata

    ra = torch.from_numpy(rankdata(a.detach().reshape(a.shape[0], -1).cpu().double().numpy(), axis=1))
    rb = torch.from_numpy(rankdata(b.detach().reshape(b.shape[0], -1).cpu().double().numpy(), axis=1))
    ra = ra - ra.mean(1, keepdim=True)
    rb = rb - rb.mean(1, keepdim=True)
    den = ra.norm(dim=1) * rb.norm(dim=1)
    rho = torch.where(den > 0, (ra * rb).sum(1) / den.clamp_min(1e-300), torch.zeros_like(den))
    return rho.float()


def ssim(a: torch.Tensor, b: torch.Tensor, *, win_size: int = 7, data_range: float = 1.0) -> torch.Tensor:
    r"""Structural similarity per image of (N, H, W) maps, as ``skimage.metrics.structural_similarity``
    with its defaults (uniform ``win_size`` window, sample covariance, K1 = 0.01, K2 = 0.03, the mean
    over positions whose window lies inside the image), batched in torch.

    .. math:: \mathrm{SSIM} = \frac{(2\mu_a\mu_b + C_1)(2\sigma_{ab} + C_2)}{(\mu_a^2 + \mu_b^2 + C_1)(\sigma_a^2 + \sigma_b^2 + C_2)}

    Wang et al., "Image Quality Assessment: From Error Visibility to Structural Similarity", IEEE TIP 2004.

    Example:
        >>> m = torch.rand(1, 16, 16, generator=torch.Generator().manual_seed(0))
        >>> round(float(ssim(m, m)[0]), 6)
        1.0
    """
    if a.shape != b.shape or a.ndim != 3:
        raise InputError(
            f"ssim needs two (N, H, W) stacks of the same shape, got {tuple(a.shape)} and {tuple(b.shape)}."
        )
    if min(a.shape[1:]) < win_size:
        raise InputError(f"ssim needs maps of at least {win_size}x{win_size}, got {tuple(a.shape[1:])}.")
    x, y = a[:, None].double(), b[:, None].double()

    def mean(t: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(t, win_size, stride=1)

    ux, uy = mean(x), mean(y)
    cov = win_size**2 / (win_size**2 - 1)
    vx = cov * (mean(x * x) - ux * ux)
    vy = cov * (mean(y * y) - uy * uy)
    vxy = cov * (mean(x * y) - ux * uy)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.mean(dim=(1, 2, 3)).float()


def _randomize_(module: nn.Module, gen: torch.Generator) -> None:
    """Replace each parameter of ``module`` (all depths) by Gaussian noise with the tensor's own mean and std
    (a constant tensor, e.g. a fresh BatchNorm weight, gets std 0.1 * max(|mean|, 1))."""
    with torch.no_grad():
        for p in module.parameters():
            mean = float(p.float().mean())
            std = float(p.float().std()) if p.numel() > 1 else 0.0
            if not std > 0:
                std = 0.1 * max(abs(mean), 1.0)
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            p.copy_((noise * std + mean).to(device=p.device, dtype=p.dtype))


def randomization_check(
    model: nn.Module,
    x: torch.Tensor,
    method: str | Callable[[nn.Module, torch.Tensor, Targets], torch.Tensor] = "gradcam",
    target_layer: LayerSpec = "auto",
    targets: Targets = None,
    *,
    granularity: Literal["children", "modules"] = "children",
    seed: int = 0,
    **kw: Any,
) -> SanityCheck:
    r"""Cascading model randomization (Adebayo et al. 2018), top-down, on a deep COPY of ``model``.

    Works for every method of ``explain.METHODS`` and ``explain.ATTRIBUTIONS``, and for any callable
    ``method(model, x, targets) -> (N, H, W)`` maps (to check a saliency method of your own). A method
    that ignores the model (an edge detector) keeps Spearman and SSIM near 1 and fails the check.
    Step k re-draws the parameters of the k last parameterized children (``granularity='children'``)
    or modules with own parameters (``'modules'``), each tensor from a Gaussian with its own mean and
    std, and recomputes the maps for the SAME targets. Reported: the Spearman correlation
    :math:`\rho(M_0, M_k)` per image. Faithful maps decorrelate quickly; the user's model is untouched.

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(),
        ...                           torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 2))
        >>> sc = randomization_check(net, torch.randn(1, 3, 8, 8), "gradcam", "1")
        >>> sc.layers
        ['4', '0']
    """
    import warnings

    from convlens.explain.methods import explain

    if granularity not in ("children", "modules"):
        raise InputError(f"granularity must be 'children' or 'modules', got {granularity!r}.")
    model = _check_model(model)
    x = _check_input(x)
    work = copy.deepcopy(model)
    # the same layer(s), by name, in the copy
    names = [n for n, _ in resolve_layers(model, target_layer, tuple(x.shape[1:]))]
    if granularity == "children":
        groups = [(n, m) for n, m in work.named_children() if any(True for _ in m.parameters())]
    else:
        groups = [(n, m) for n, m in work.named_modules() if n and any(True for _ in m.parameters(recurse=False))]
    groups.reverse()  # top-down: the classifier first
    if not groups:
        raise InputError("the model has no parameters to randomize.")
    gen = torch.Generator(device="cpu").manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # randomized models often give flat maps

        def run(t: Targets) -> Any:
            if callable(method):
                from types import SimpleNamespace

                maps = method(work, x, t)
                return SimpleNamespace(maps=maps, targets=torch.full((x.shape[0],), -1))
            return explain(work, x, method, names, t, **kw)

        first = run(targets)
        fixed = first.targets if first.targets.min() >= 0 else targets  # same classes after randomization
        all_maps = [first.maps]
        corr = []
        sims: list[torch.Tensor | None] = []
        for _, m in groups:
            _randomize_(m, gen)
            res = run(fixed)
            all_maps.append(res.maps)
            corr.append(spearman(first.maps, res.maps))
            sims.append(ssim(first.maps.float().cpu(), res.maps.float().cpu()) if min(x.shape[2:]) >= 7 else None)
    c = torch.stack(corr)
    sim = torch.stack(sims) if all(v is not None for v in sims) else None  # type: ignore[arg-type]
    return SanityCheck(
        layers=[n for n, _ in groups], correlation=c, mean=c.mean(1), maps=torch.stack(all_maps).cpu(), ssim=sim
    )


# ----------------------------------------------------------------------------------------------------
# localization against a user-given box or mask


def _regions(regions: Any, n: int, hw: tuple[int, int], device: torch.device) -> torch.Tensor:
    """Boxes (4,) / (N, 4) ``(x0, y0, x1, y1)`` in pixels (x1, y1 exclusive) or masks (H, W) / (N, H, W)
    -> (N, H, W) bool."""
    r = torch.as_tensor(np.asarray(regions) if not isinstance(regions, torch.Tensor) else regions)
    h, w = hw
    if r.ndim in (1, 2) and r.shape[-1] == 4 and not (r.ndim == 2 and tuple(r.shape) == (h, w)):
        boxes = r.reshape(-1, 4).float().to(device)
        if boxes.shape[0] == 1:
            boxes = boxes.expand(n, 4)
        if boxes.shape[0] != n:
            raise InputError(f"give one box or one per image ({n}), got {boxes.shape[0]}.")
        if bool(((boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])).any()):
            raise InputError("boxes are (x0, y0, x1, y1) with x1 > x0 and y1 > y0.")
        ys = torch.arange(h, device=device)[None, :, None]
        xs = torch.arange(w, device=device)[None, None, :]
        b = boxes[:, :, None, None]
        return (xs >= b[:, 0]) & (xs < b[:, 2]) & (ys >= b[:, 1]) & (ys < b[:, 3])
    if r.ndim == 2:
        r = r[None].expand(n, -1, -1)
    if r.ndim != 3 or tuple(r.shape[1:]) != (h, w) or r.shape[0] != n:
        raise InputError(
            f"regions must be boxes (N, 4) or masks (N, H, W) matching the maps {(n, h, w)}, got {tuple(r.shape)}."
        )
    r = r.to(device) != 0
    if not bool(r.flatten(1).any(1).all()):
        raise InputError("every mask must mark at least one pixel.")
    return r


@dataclass
class PointingGame:
    """Pointing game per image: does the map's maximum fall in the region (within ``tolerance`` px)?

    Attributes:
        hit: (N,) bool; ``accuracy``: their mean; ``point``: (N, 2) the maximum's (x, y).
    """

    hit: torch.Tensor
    accuracy: float
    point: torch.Tensor


def pointing_game(maps: Any, regions: Any, *, tolerance: int = 15) -> PointingGame:
    """The pointing game (Zhang et al., "Top-down Neural Attention by Excitation Backprop", ECCV 2016,
    https://arxiv.org/abs/1608.00507): a hit when the map's maximum lies inside the box or mask, grown
    by ``tolerance`` pixels (15 in the paper). Batched on the maps' device.

    Example:
        >>> m = torch.zeros(2, 8, 8); m[0, 1, 1] = 1; m[1, 6, 6] = 1
        >>> pointing_game(m, torch.tensor([0, 0, 3, 3]), tolerance=0).hit.tolist()
        [True, False]
    """
    m = torch.as_tensor(maps).float()
    if m.ndim == 2:
        m = m[None]
    if m.ndim != 3 or not bool(torch.isfinite(m).all()):
        raise InputError(f"maps must be finite (N, H, W), got shape {tuple(m.shape)}.")
    n, h, w = m.shape
    reg = _regions(regions, n, (h, w), m.device).float()
    if tolerance > 0:
        k = 2 * int(tolerance) + 1
        reg = F.max_pool2d(reg[:, None], k, stride=1, padding=int(tolerance))[:, 0]
    flat = m.reshape(n, -1).argmax(1)
    ys, xs = flat // w, flat % w
    hit = reg[torch.arange(n, device=m.device), ys, xs] > 0
    return PointingGame(hit=hit, accuracy=float(hit.float().mean()), point=torch.stack([xs, ys], 1))


def energy_in_box(maps: Any, regions: Any) -> torch.Tensor:
    r"""Energy-based pointing game (Wang et al., Score-CAM, CVPR-W 2020): the share of the map's mass
    inside the box or mask, :math:`\sum_{p \in R} M_p / \sum_p M_p` per image (0 for an all-zero map).

    Example:
        >>> m = torch.ones(1, 4, 4)
        >>> energy_in_box(m, torch.tensor([0, 0, 2, 2])).tolist()
        [0.25]
    """
    m = torch.as_tensor(maps).float()
    if m.ndim == 2:
        m = m[None]
    if m.ndim != 3 or not bool(torch.isfinite(m).all()) or bool((m < 0).any()):
        raise InputError("maps must be finite, non-negative (N, H, W) (CAM maps in [0, 1]).")
    reg = _regions(regions, m.shape[0], tuple(m.shape[1:]), m.device)  # type: ignore[arg-type]
    total = m.flatten(1).sum(1)
    inside = (m * reg).flatten(1).sum(1)
    return torch.where(total > 0, inside / total.clamp_min(1e-30), torch.zeros_like(total))
