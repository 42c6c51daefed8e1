"""What excites a channel over a whole image folder: the k highest activations of each channel, each
with its image, position and receptive-field crop (dataset examples, as in Yosinski et al. 2015,
"Understanding Neural Networks Through Deep Visualization", and OpenAI Microscope).

:func:`top_patches` streams the folder in batches: per batch one forward pass (stopped right after the
layer when it runs once per forward), the batch's k best per channel, merged with the k best so far.
Memory is bounded by one batch plus k crops per channel, never by the folder size.

Ranking: activation descending; ties go to the earlier image, then the smaller row, then column
(the order of ``(image index, y, x)``), so the result is the same for any batch size.

Each patch carries the unit's theoretical receptive-field box on the image as the model saw it
(resized/cropped by the model's preprocessing) -- ``box`` before clipping, as
:func:`convlens.inspect.unit_receptive_field` gives it -- and the crop of that box inside the image.

Example:
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3))
    >>> imgs = torch.zeros(4, 3, 8, 8); imgs[2, :, 3, 4] = 1.0
    >>> with torch.no_grad():
    ...     _ = net[0].weight.fill_(1.0), net[0].bias.zero_()
    >>> r = top_patches(net, imgs, "0", [0], k=2)
    >>> [(p.image, p.y, p.x, p.value, p.box) for p in r.channels[0].patches]
    [('#2', 1, 2, 3.0, (1, 2, 3, 4)), ('#2', 1, 3, 3.0, (1, 3, 3, 5))]
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from convlens.errors import InputError, LayerError
from convlens.graph import trace
from convlens.hooks import capture, device_of, first_tensor, preserve_state
from convlens.inspect.erf import field_box
from convlens.inspect.unit import parse_layer_call
from convlens.io import find_images, iter_image_batches
from convlens.layers import resolve

__all__ = ["Patch", "ChannelPatches", "TopPatches", "top_patches"]


@dataclass(frozen=True)
class Patch:
    """One top activation: the image (file or ``#index``), position ``(y, x)`` in the layer's map, the
    value, the unit's box ``(top, left, bottom, right)`` on the model's input image (before clipping)
    and ``crop`` (h, w, 3) uint8, the part of the box inside that image."""

    image: str
    index: int
    y: int
    x: int
    value: float
    box: tuple[int, int, int, int]
    crop: np.ndarray = field(repr=False, compare=False)


@dataclass(frozen=True)
class ChannelPatches:
    """The top patches of one channel, best first."""

    channel: int
    patches: list[Patch]


@dataclass(frozen=True)
class TopPatches:
    """The result of :func:`top_patches`: per channel its top patches; how many images were read and
    which files inside a folder were skipped (unreadable), with the reason."""

    layer: str
    k: int
    channels: list[ChannelPatches]
    images: int
    input_size: tuple[int, int]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    #: whether the model's weights are pretrained (None when a bare module was given)
    pretrained: bool | None = None

    def to_json(self) -> list[dict[str, Any]]:
        """``convlens top-patches --json``: ``[{"channel", "patches": [{"image", "y", "x", "value", "box"}],
        "pretrained"}]``."""
        return [
            {
                "channel": c.channel,
                "patches": [
                    {"image": p.image, "y": p.y, "x": p.x, "value": p.value, "box": list(p.box), "index": p.index}
                    for p in c.patches
                ],
                "pretrained": self.pretrained,
            }
            for c in self.channels
        ]


# --------------------------------------------------------------------------------------------- input stream
def _batches(
    source: Any, batch_size: int, preprocess: Any, skipped: list[tuple[str, str]]
) -> tuple[int | None, Iterator[tuple[list[str], torch.Tensor]]]:
    """(number of images if known, iterator of (names, preprocessed batch)). A file named explicitly must
    be readable; unreadable files found inside a folder are skipped and reported in ``skipped``."""
    if isinstance(source, torch.Tensor):
        if source.ndim != 4:
            raise InputError(f"an image tensor must be (N, C, H, W), got shape {tuple(source.shape)}.")
        names = [f"#{i}" for i in range(source.shape[0])]
        return source.shape[0], (
            (names[i : i + batch_size], source[i : i + batch_size]) for i in range(0, source.shape[0], batch_size)
        )
    if isinstance(source, (str, os.PathLike)):
        source = [source]
    items = list(source)
    if items and all(isinstance(it, np.ndarray) for it in items):
        if preprocess is None:
            raise InputError("image arrays need the model's preprocessing: pass a ModelBundle or preprocess=.")
        names = [f"#{i}" for i in range(len(items))]

        def arrays() -> Iterator[tuple[list[str], torch.Tensor]]:
            for i in range(0, len(items), batch_size):
                yield names[i : i + batch_size], preprocess(items[i : i + batch_size])

        return len(items), arrays()
    paths: list[str | os.PathLike[str]] = []
    for it in items:
        if not isinstance(it, (str, os.PathLike)):
            raise InputError(f"images must be a folder, files, image arrays or a tensor; got {type(it).__name__}.")
        paths.append(it)
    if preprocess is None:
        raise InputError("image files need the model's preprocessing: pass a ModelBundle or preprocess=.")
    total = len(find_images(paths))

    def read() -> Iterator[tuple[list[str], torch.Tensor]]:
        for batch in iter_image_batches(paths, batch_size):  # io's one policy for unreadable files
            skipped.extend((s.path, s.reason) for s in batch.skipped)
            if batch.images:
                yield [str(f) for f in batch.files], preprocess(batch.images)

    return total, read()


# --------------------------------------------------------------------------------------------- ranking
def _batch_topk(vals: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, the k largest values and their column indices; ties broken by the smaller index. O(N)."""
    kk = min(k, vals.shape[1])
    kth = torch.topk(vals, kk, dim=1).values[:, -1:]
    out_v, out_i = [], []
    for row, t in zip(vals, kth, strict=True):
        above = torch.nonzero(row > t).flatten()
        ties = torch.nonzero(row == t).flatten()[: kk - above.numel()]
        idx = torch.cat([above, ties])
        v = row[idx]
        order = torch.sort(-v, stable=True).indices  # by value; indices were ascending within each group
        idx = idx[order]
        # a tie inside `above` with a smaller index later is impossible: above is ascending, sort is stable
        out_v.append(row[idx])
        out_i.append(idx)
    return torch.stack(out_v), torch.stack(out_i)


def _model_view(x: torch.Tensor, preprocess: Any) -> np.ndarray:
    """The batch as the model saw it, (B, H, W, 3) uint8 (denormalized; min-max per image without preprocessing)."""
    if preprocess is not None and hasattr(preprocess, "denormalize"):
        v = preprocess.denormalize(x.detach().float().cpu()).clamp(0, 1)
    else:
        flat = x.detach().float().cpu().flatten(1)
        lo, hi = flat.min(1).values, flat.max(1).values
        v = (x.detach().float().cpu() - lo[:, None, None, None]) / (hi - lo).clamp_min(1e-12)[:, None, None, None]
    if v.shape[1] == 1:
        v = v.expand(-1, 3, -1, -1)
    return (v[:, :3].permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)


def top_patches(
    model: nn.Module | Any,
    images_or_folder: str | os.PathLike[str] | Sequence[Any] | torch.Tensor,
    layer: str | nn.Module,
    channels: int | Sequence[int] | None = None,
    k: int = 9,
    batch_size: int = 32,
    *,
    preprocess: Any = None,
    call: int | None = None,
    device: str | torch.device | None = None,
    progress: Callable[[int, int | None], None] | None = None,
) -> TopPatches:
    """For each channel of ``layer``, the ``k`` images and positions with the highest activation over a
    whole folder, each with its receptive-field box and crop.

    Args:
        model: an ``nn.Module``, or a :class:`~convlens.models.ModelBundle` (its preprocessing is used).
        images_or_folder: a folder (recursive), image files, a list of (H, W, 3) uint8 arrays, or a
            preprocessed (N, C, H, W) tensor.
        layer: module name (``'name#k'``: call k) or module.
        channels: channel indices (default: all); for (N, F) outputs, feature indices.
        k: patches per channel.
        batch_size: images per forward pass (memory: one batch + k crops per channel).
        preprocess: the model's preprocessing (default: the bundle's).
        call: which call of a module used several times (default: the last).
        device: where to compute.
        progress: called as ``progress(images_done, images_total)`` after each batch (the CLI's bar).

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 1, 1, bias=False))
        >>> _ = torch.nn.init.ones_(net[0].weight)
        >>> x = torch.arange(8.0).reshape(2, 1, 2, 2)
        >>> [(p.image, p.y, p.x, p.value) for p in top_patches(net, x, "0", 0, k=3).channels[0].patches]
        [('#1', 1, 1, 7.0), ('#1', 1, 0, 6.0), ('#1', 0, 1, 5.0)]
    """
    pretrained = None  # known for a ModelBundle only
    if hasattr(model, "model") and hasattr(model, "preprocess") and not isinstance(model, nn.Module):
        preprocess = preprocess if preprocess is not None else model.preprocess
        pretrained = bool(model.pretrained) if hasattr(model, "pretrained") else None
        model = model.model
    if k < 1 or batch_size < 1:
        raise InputError(f"k and batch_size must be >= 1, got k={k}, batch_size={batch_size}.")
    dev = device_of(model, device)
    if isinstance(layer, str):
        layer, k_call = parse_layer_call(layer)
        call = k_call if k_call is not None else call
    skipped: list[tuple[str, str]] = []
    total, stream = _batches(images_or_folder, batch_size, preprocess, skipped)
    name = ""
    chans: list[int] = []
    best_v = best_i = None  # (Cs, <=k) values and global flat indices
    crops: list[list[np.ndarray]] = []
    meta: list[list[tuple[str, int, int, int, tuple[int, int, int, int]]]] = []
    geo = None
    seen = 0
    stop: str | None = None
    runs_once = False
    hw_in: tuple[int, int] = (0, 0)
    with preserve_state(model, train=False), torch.no_grad():
        for names, x in stream:
            x = x.to(dev)  # (NaN activations rank last: they become -inf below)
            if geo is None:  # first batch: resolve the layer, its field geometry, whether it runs once
                refs = resolve(model, layer, input_shape=tuple(x.shape[1:]))
                if len(refs) != 1:
                    raise LayerError(f"top_patches needs one layer; '{layer}' names {len(refs)}.")
                name = refs[0].name
                g = trace(model, x=x[:1])
                runs_once = len([c for c in g.calls if c.name == name]) == 1
                idx = -1 if call is None else call
                geo = g.geometry(name, idx)
                hw_in = (int(x.shape[-2]), int(x.shape[-1]))
            elif tuple(x.shape[-2:]) != hw_in:
                raise InputError(
                    f"all images must reach the model at one size; got {tuple(x.shape[-2:])} after {hw_in}."
                )
            stop = name if runs_once or call == 0 else None
            with capture(model, [name], stop_after=stop) as cap:
                cap.run(x)
            outs = cap.calls.get(name, [])
            if not outs or (call is not None and call >= len(outs)):
                raise LayerError(f"layer '{name}' did not run (call {call}) in the forward pass.")
            act = first_tensor(outs[-1 if call is None else call])
            assert act is not None
            if act.ndim == 2:
                act = act[:, :, None, None]
            if act.ndim != 4:
                raise LayerError(
                    f"layer '{name}' outputs shape {tuple(act.shape)}; top_patches needs (N, C, H, W) or (N, F)."
                )
            if not chans:
                n_ch = act.shape[1]
                chans = (
                    list(range(n_ch))
                    if channels is None
                    else ([channels] if isinstance(channels, int) else list(channels))
                )
                bad = [c for c in chans if not 0 <= c < n_ch]
                if bad or not chans:
                    raise InputError(f"channel {bad[0] if bad else '(none)'} is outside the layer's {n_ch} channels.")
                crops = [[] for _ in chans]
                meta = [[] for _ in chans]
            b, _, h, w = act.shape
            vals = act[:, chans].float().nan_to_num(nan=float("-inf")).permute(1, 0, 2, 3).reshape(len(chans), -1)
            v_new, i_new = _batch_topk(vals, k)
            g_new = i_new + seen * h * w  # global flat index: (image index, y, x) order
            if best_v is None:
                cat_v, cat_i = v_new, g_new
            else:
                cat_v, cat_i = torch.cat([best_v, v_new], 1), torch.cat([best_i, g_new], 1)
            order = torch.sort(-cat_v, dim=1, stable=True).indices[:, :k]  # old entries first: earlier images win ties
            best_v, best_i = torch.gather(cat_v, 1, order), torch.gather(cat_i, 1, order)
            views: dict[int, np.ndarray] = {}  # the images of this batch drawn from, as the model saw them
            n_old = 0 if not meta[0] else len(meta[0])
            for r in range(len(chans)):
                new_crops, new_meta = [], []
                for pos in order[r].tolist():
                    if pos < n_old:
                        new_crops.append(crops[r][pos])
                        new_meta.append(meta[r][pos])
                        continue
                    gi = int(cat_i[r, pos])
                    img_i, rem = divmod(gi, h * w)
                    y, xx = divmod(rem, w)
                    box, clip, _ = field_box(geo, y, xx, hw_in)
                    if img_i not in views:
                        views[img_i] = _model_view(x[img_i - seen : img_i - seen + 1], preprocess)[0]
                    t, l_, bt, rt = clip
                    new_crops.append(views[img_i][t : bt + 1, l_ : rt + 1].copy())
                    new_meta.append((names[img_i - seen], img_i, y, xx, box))
                crops[r], meta[r] = new_crops, new_meta
            seen += b
            if progress is not None:
                progress(seen, total)
    if geo is None:
        raise InputError("none of the image files could be read (corrupt or not images).")
    assert best_v is not None
    result = []
    for r, c in enumerate(chans):
        patches = [
            Patch(m[0], m[1], m[2], m[3], float(v), m[4], crop)
            for m, v, crop in zip(meta[r], best_v[r].tolist(), crops[r], strict=True)
        ]
        result.append(ChannelPatches(c, patches))
    return TopPatches(name, k, result, seen, hw_in, skipped, pretrained)
