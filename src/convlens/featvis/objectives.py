"""Objectives: what feature visualization maximizes.

An objective is a small callable ``f(acts) -> Tensor (N,)``: it maps the recorded activations of one
batch of N images to one value **per image** (to be maximized). ``acts`` is a mapping
``layer name -> activation`` plus two special keys: ``"input"`` (the parameterized images in [0, 1]
before any random transform, shape (N, 3, S, S)) and ``"output"`` (the model's output; present only
when some objective asks for it, because it costs the full forward pass).

Channel-like objectives take a per-image index list: ``Channel("layer3", [4, 9])`` scores image 0 by
channel 4 and image 1 by channel 9, so many channels render in one batch while each image's loss
comes only from its own channel (the gradient of ``sum_i f_i`` with respect to image i is the
gradient of ``f_i`` alone).

Objectives compose linearly: ``Channel(...) - 0.1 * TotalVariation()`` or
``0.5 * Channel("a", 3) + Neuron("b", 7)``. Regularizers (:class:`L2`, :class:`TotalVariation`,
:class:`Blur`) are objectives whose value is a *penalty*; subtract them.

Example:
    >>> import torch
    >>> acts = {"conv": torch.arange(2 * 3 * 2 * 2.0).view(2, 3, 2, 2)}
    >>> Channel("conv", [0, 2])(acts)          # image 0: mean of channel 0; image 1: of channel 2
    tensor([ 1.5000, 21.5000])
    >>> (Channel("conv", 1) - 0.5 * Channel("conv", 0))(acts)
    tensor([ 4.7500, 10.7500])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F

from convlens.errors import InputError, LayerError

__all__ = [
    "Objective",
    "Channel",
    "Neuron",
    "LayerL2",
    "ClassLogit",
    "L2",
    "TotalVariation",
    "Blur",
    "Weighted",
    "INPUT",
    "OUTPUT",
]

INPUT = "input"  #: key of the parameterized image (N, 3, S, S) in [0, 1] in ``acts``
OUTPUT = "output"  #: key of the model output in ``acts``


def _as_index_list(index: int | Sequence[int], what: str) -> list[int] | int:
    if isinstance(index, (int,)) and not isinstance(index, bool):
        if index < 0:
            raise InputError(f"{what} index must be >= 0, got {index}.")
        return int(index)
    try:
        out = [int(i) for i in index]  # type: ignore[union-attr]
    except TypeError:
        raise InputError(f"{what} must be an int or a list of ints, got {type(index).__name__}.") from None
    if not out:
        raise InputError(f"{what} list is empty; give at least one index.")
    if any(i < 0 for i in out):
        raise InputError(f"{what} indices must be >= 0, got {out}.")
    return out


class Objective:
    """Base class: a callable from activations to a per-image value ``(N,)``.

    Subclasses set ``layers`` (names they read; :data:`OUTPUT` for the model output) and
    ``batch_size`` (length of their per-image index list, or ``None`` when they work for any batch).
    """

    layers: tuple[str, ...] = ()
    batch_size: int | None = None

    def __call__(self, acts: Mapping[str, torch.Tensor]) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def check(self, acts: Mapping[str, torch.Tensor]) -> None:
        """Validate indices against the real activation shapes (raise one clear sentence)."""

    # linear composition -------------------------------------------------------------------------
    def __add__(self, other: Objective) -> Objective:
        return Weighted([(1.0, self), (1.0, _as_objective(other))])

    def __sub__(self, other: Objective) -> Objective:
        return Weighted([(1.0, self), (-1.0, _as_objective(other))])

    def __mul__(self, w: float) -> Objective:
        if not isinstance(w, (int, float)):
            return NotImplemented
        return Weighted([(float(w), self)])

    __rmul__ = __mul__

    def __neg__(self) -> Objective:
        return Weighted([(-1.0, self)])


def _as_objective(obj: object) -> Objective:
    if not isinstance(obj, Objective):
        raise InputError(f"objectives combine only with objectives, got {type(obj).__name__}.")
    return obj


class Weighted(Objective):
    """``sum_k w_k * f_k(acts)``: a weighted sum (or difference) of objectives.

    Example:
        >>> acts = {"x": torch.ones(1, 2, 3, 3)}
        >>> Weighted([(2.0, Channel("x", 0)), (-1.0, Channel("x", 1))])(acts)
        tensor([1.])
    """

    def __init__(self, terms: Sequence[tuple[float, Objective]]):
        flat: list[tuple[float, Objective]] = []
        for w, f in terms:
            f = _as_objective(f)
            if isinstance(f, Weighted):  # keep the tree flat
                flat.extend((w * w2, f2) for w2, f2 in f.terms)
            else:
                flat.append((float(w), f))
        sizes = {f.batch_size for _, f in flat if f.batch_size is not None}
        if len(sizes) > 1:
            raise InputError(
                f"combined objectives need per-image index lists of one length, got lengths {sorted(sizes)}."
            )
        self.terms = flat
        self.batch_size = sizes.pop() if sizes else None
        names: dict[str, None] = {}
        for _, f in flat:
            names.update(dict.fromkeys(f.layers))
        self.layers = tuple(names)

    def check(self, acts: Mapping[str, torch.Tensor]) -> None:
        for _, f in self.terms:
            f.check(acts)

    def __call__(self, acts: Mapping[str, torch.Tensor]) -> torch.Tensor:
        total = None
        for w, f in self.terms:
            v = w * f(acts)
            total = v if total is None else total + v
        assert total is not None
        return total

    def __repr__(self) -> str:
        return " + ".join(f"{w:g}*{f!r}" for w, f in self.terms)


class _Indexed(Objective):
    """Shared machinery of objectives that pick one channel (or class) per image."""

    what = "channel"

    def __init__(self, layer: str, index: int | Sequence[int]):
        if not isinstance(layer, str) or not layer:
            raise LayerError(f"an objective needs a layer name (str), got {layer!r}.")
        self.layer = layer
        self.index = _as_index_list(index, self.what)
        self.layers = (layer,)
        self.batch_size = len(self.index) if isinstance(self.index, list) else None

    def _act(self, acts: Mapping[str, torch.Tensor]) -> torch.Tensor:
        if self.layer not in acts:
            raise LayerError(
                f"layer '{self.layer}' produced no activation in the forward pass; pick a layer the model calls."
            )
        return acts[self.layer]

    def _indices(self, n: int, device: torch.device) -> torch.Tensor:
        if isinstance(self.index, int):
            return torch.full((n,), self.index, dtype=torch.long, device=device)
        if len(self.index) != n:
            raise InputError(
                f"{type(self).__name__} has {len(self.index)} per-image indices but the batch has {n} images."
            )
        return torch.tensor(self.index, dtype=torch.long, device=device)

    def check(self, acts: Mapping[str, torch.Tensor]) -> None:
        a = self._act(acts)
        if a.dim() < 2:
            raise LayerError(
                f"layer '{self.layer}' gives a {a.dim()}-D output; a {self.what} objective needs (N, C, ...)."
            )
        c = a.shape[1]
        idx = [self.index] if isinstance(self.index, int) else self.index
        bad = [i for i in idx if i >= c]
        if bad:
            where = "the model output" if self.layer == OUTPUT else f"layer '{self.layer}'"
            plural = "classes" if self.what == "class" else f"{self.what}s"
            raise InputError(f"{self.what} {bad[0]} is out of range for {where} with {c} {plural} (valid: 0-{c - 1}).")

    def _picked(self, acts: Mapping[str, torch.Tensor]) -> torch.Tensor:
        a = self._act(acts)
        n = a.shape[0]
        idx = self._indices(n, a.device)
        return a[torch.arange(n, device=a.device), idx]  # (N, ...) one channel per image

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.layer!r}, {self.index})"


class Channel(_Indexed):
    """Mean activation of one channel: ``f_i = mean_{y,x} A[i, c_i, y, x]`` (the Keras-book loss).

    Example:
        >>> Channel("x", 1)({"x": torch.arange(8.0).view(1, 2, 2, 2)})
        tensor([5.5000])
    """

    def __call__(self, acts: Mapping[str, torch.Tensor]) -> torch.Tensor:
        a = self._picked(acts)
        return a.flatten(1).mean(1) if a.dim() > 1 else a


class Neuron(_Indexed):
    """One unit of a channel, by default the centre one: ``f_i = A[i, c_i, H // 2, W // 2]``.

    Its gradient with respect to the input lives only inside that unit's receptive field.

    Example:
        >>> Neuron("x", 0)({"x": torch.arange(9.0).view(1, 1, 3, 3)})
        tensor([4.])
    """

    def __init__(self, layer: str, index: int | Sequence[int], y: int | None = None, x: int | None = None):
        super().__init__(layer, index)
        self.y, self.x = y, x

    def __call__(self, acts: Mapping[str, torch.Tensor]) -> torch.Tensor:
        a = self._picked(acts)
        if a.dim() == 1:
            return a
        if a.dim() != 3:
            raise LayerError(
                f"layer '{self.layer}' output is not (N, C, H, W); a neuron objective needs a spatial map."
            )
        h, w = a.shape[-2:]
        y = h // 2 if self.y is None else self.y
        x = w // 2 if self.x is None else self.x
        if not (0 <= y < h and 0 <= x < w):
            raise InputError(f"neuron position ({y}, {x}) is outside the {h}x{w} map of layer '{self.layer}'.")
        return a[:, y, x]


class ClassLogit(_Indexed):
    """The model output for one class per image (pre-softmax logit): ``f_i = z[i, k_i]``.

    Needs the whole forward pass (no truncation).

    Example:
        >>> ClassLogit([1, 0])({"output": torch.tensor([[0.0, 2.0], [3.0, 4.0]])})
        tensor([2., 3.])
    """

    what = "class"

    def __init__(self, index: int | Sequence[int]):
        super().__init__(OUTPUT, index)

    def __call__(self, acts: Mapping[str, torch.Tensor]) -> torch.Tensor:
        a = self._picked(acts)
        return a.flatten(1).mean(1) if a.dim() > 1 else a

    def __repr__(self) -> str:
        return f"ClassLogit({self.index})"


class LayerL2(Objective):
    """ "Deep dream": the mean squared activation of a whole layer, ``f_i = mean A[i]^2``.

    Example:
        >>> LayerL2("x")({"x": torch.full((2, 3, 2, 2), 2.0)})
        tensor([4., 4.])
    """

    def __init__(self, layer: str):
        if not isinstance(layer, str) or not layer:
            raise LayerError(f"an objective needs a layer name (str), got {layer!r}.")
        self.layer = layer
        self.layers = (layer,)

    def check(self, acts: Mapping[str, torch.Tensor]) -> None:
        if self.layer not in acts:
            raise LayerError(
                f"layer '{self.layer}' produced no activation in the forward pass; pick a layer the model calls."
            )

    def __call__(self, acts: Mapping[str, torch.Tensor]) -> torch.Tensor:
        a = acts[self.layer]
        return a.pow(2).flatten(1).mean(1)

    def __repr__(self) -> str:
        return f"LayerL2({self.layer!r})"


class _Penalty(Objective):
    """A regularizer on the (untransformed) image ``acts['input']``; subtract it from an objective."""

    layers = (INPUT,)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class L2(_Penalty):
    """Distance of the image from mid-grey: ``p_i = mean (x_i - 0.5)^2``.

    Example:
        >>> L2()({"input": torch.ones(1, 3, 2, 2)})
        tensor([0.2500])
    """

    def __call__(self, acts: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return (acts[INPUT] - 0.5).pow(2).flatten(1).mean(1)


class TotalVariation(_Penalty):
    """Anisotropic total variation: ``p_i = mean|x[y+1]-x[y]| + mean|x[:, x+1]-x[:, x]|``.

    Example:
        >>> TotalVariation()({"input": torch.tensor([[[[0.0, 1.0], [0.0, 1.0]]]])})
        tensor([1.])
    """

    def __call__(self, acts: Mapping[str, torch.Tensor]) -> torch.Tensor:
        x = acts[INPUT]
        dy = (x[..., 1:, :] - x[..., :-1, :]).abs().flatten(1).mean(1)
        dx = (x[..., :, 1:] - x[..., :, :-1]).abs().flatten(1).mean(1)
        return dy + dx


class Blur(_Penalty):
    """Lucid's blur-each-step regularizer: ``p_i = 0.5 * mean (x_i - stopgrad(blur3x3(x_i)))^2``.

    Its gradient pulls each pixel towards the local 3x3 mean (a small blur per step).

    Example:
        >>> float(Blur()({"input": torch.full((1, 3, 4, 4), 0.3)})[0])
        0.0
    """

    def __call__(self, acts: Mapping[str, torch.Tensor]) -> torch.Tensor:
        x = acts[INPUT]
        c = x.shape[1]
        k = torch.full((c, 1, 3, 3), 1.0 / 9.0, dtype=x.dtype, device=x.device)
        blurred = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k, groups=c).detach()
        return 0.5 * (x - blurred).pow(2).flatten(1).mean(1)
