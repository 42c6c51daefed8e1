"""The class-activation-map pipeline, once: hooks, one forward, one ``autograd.grad``, combine, ReLU,
upsample, normalize -- batched in torch on the model's device.

A CAM method only says how to turn a layer's activations ``A`` (N, C, h, w) and the gradients
``G = d score / d A`` into a low-resolution map (N, h, w): either per-channel weights ``w`` (N, C)
with ``M = sum_c w_c A_c`` (:meth:`BaseCAM.weights`), or the map directly (:meth:`BaseCAM.combine`).
Everything else lives here:

1. resolve the target layer(s) (``'auto'`` = :func:`convlens.layers.auto_layer`, the one rule of every
   front end) and bring each to (N, C, h, w) with :func:`convlens.layers.layer_layouts` (channels-last
   maps permuted, transformer tokens reshaped to their patch grid without class/register tokens);
2. one forward pass with :func:`convlens.hooks.capture` (``detach=False, clone=True``) under
   :func:`convlens.hooks.preserve_state` (``train=False, requires_grad=False``): parameters need no
   gradient, and the first target layer's output becomes an autograd leaf, so no graph is built below
   it and the backward pass stops there;
3. one ``torch.autograd.grad(sum_i score_i, A)`` for the whole batch (images are independent in eval
   mode, so the gradient of the sum is each image's own gradient) -- never ``.backward()``, so no
   parameter's ``.grad`` is ever touched;
4. the method's map, then ``relu``, per-image min-max on the low-res map, bilinear upsampling to the
   input size, mean over layers and a final per-image min-max (the normalization of pytorch-grad-cam,
   so maps agree with it).

Example:
    >>> import torch
    >>> from convlens.explain import GradCAM
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(),
    ...                           torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 2))
    >>> res = GradCAM(net, "1")(torch.randn(2, 3, 8, 8), targets=[0, 1])
    >>> tuple(res.maps.shape), tuple(res.raw["1"].shape), res.targets.tolist()
    ((2, 8, 8), (2, 8, 8), [0, 1])
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass, field
from typing import Any, ClassVar, Union

import torch
import torch.nn.functional as F
from torch import nn

from convlens.errors import InputError, LayerError, first_line
from convlens.hooks import capture, device_of, preserve_state
from convlens.layers import auto_layer, layer_layouts
from convlens.models.logits import logits

__all__ = [
    "BaseCAM",
    "CAMResult",
    "CAMContext",
    "Targets",
    "LayerSpec",
    "finalize_maps",
    "normalize_maps",
    "target_scores",
    "class_logits",
    "call_target",
    "resolve_layers",
    "first_component",
]

#: ``None`` (each image's top-1), one class for all, one class per image, or ``fn(output) -> (N,) scores``.
Targets = Union[None, int, Sequence[int], torch.Tensor, Callable[[Any], torch.Tensor]]  # noqa: UP007
#: ``'auto'``, a name, a glob, a module, or a list of these (maps of several layers are averaged).
LayerSpec = Union[str, nn.Module, Sequence[str | nn.Module], None]  # noqa: UP007


@dataclass
class CAMResult:
    """What a CAM run gives back (all tensors detached, on the model's device).

    Attributes:
        maps: (N, H, W) float32 in [0, 1], upsampled to the input size.
        raw: layer name -> (N, h, w) float32 map at the layer's resolution, before ReLU and normalization
            (Grad-CAM: ``sum_c mean(G_c) A_c``, what Captum's ``LayerGradCam`` returns).
        targets: (N,) long, the class explained for each image (-1 when ``targets`` was a callable).
        scores: (N,) float32, the explained score (logit, or the callable's value) of each image.
        probs: (N,) float32 softmax probability of the target class, or ``None`` for a callable target
            or a non-(N, K) output.
        method: registry name of the method.
        layers: names of the target layers, in the order given.
        extra: method-specific tensors (Guided Grad-CAM: ``'guided'`` (N, 3, H, W)).
    """

    def _repr_html_(self) -> str:
        """Rich display in Jupyter: the renderer the report uses (:func:`convlens.plot.html.cam_html`), images inline."""
        from convlens.plot.html import cam_html

        return cam_html(self)

    maps: torch.Tensor
    raw: dict[str, torch.Tensor]
    targets: torch.Tensor
    scores: torch.Tensor
    probs: torch.Tensor | None
    method: str
    layers: list[str]
    extra: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class CAMContext:
    """What a method's weight/map function may need besides ``A`` and ``G`` (Score-CAM runs the model)."""

    model: nn.Module
    x: torch.Tensor  # (N, C, H, W) input, on the model's device
    score: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (outputs, image index (B,)) -> (B,) scores
    batch_size: int
    autocast: Callable[[], Any]  # a fresh autocast (or null) context
    layer: str = ""  # the target layer whose map is being computed
    module: nn.Module | None = None  # that layer's module (Ablation-CAM replaces its output)
    targets: torch.Tensor | None = None  # (N,) classes (-1 for a callable target)
    scores: torch.Tensor | None = None  # (N,) the explained scores on the unperturbed input


# ----------------------------------------------------------------------------------------------------
# validation and targets


def _why_flat(name: str, a: torch.Tensor, g: torch.Tensor | None) -> str:
    """Why a layer may give a constant map: zero gradient or constant activations ('' when neither)."""
    if g is not None and not bool((g != 0).any()):
        return f"zero gradient at layer '{name}': the target score does not depend on it (dead path or wrong layer)"
    flat = a.reshape(a.shape[0], a.shape[1], -1)
    if not bool((flat.amax(-1) != flat.amin(-1)).any()):
        return f"constant activations at layer '{name}': no spatial variation to show (wrong layer, or a 1x1 map)"
    return ""


def _check_model(model: Any) -> nn.Module:
    """The ``nn.Module`` to explain: ``model`` itself, or the one a ModelBundle (or CAM) holds in ``.model``."""
    module = model if isinstance(model, nn.Module) else getattr(model, "model", model)
    if not isinstance(module, nn.Module):
        raise InputError(f"model must be a torch.nn.Module or a ModelBundle, got {type(model).__name__}.")
    return module


def _check_input(x: Any) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise InputError(
            f"x must be a torch.Tensor of shape (N, C, H, W), got {type(x).__name__}; use bundle.preprocess(images)."
        )
    if x.ndim == 3:
        x = x.unsqueeze(0)
    if x.ndim != 4:
        raise InputError(f"x must have shape (N, C, H, W), got {tuple(x.shape)}.")
    if not x.is_floating_point():
        raise InputError(f"x must be a float tensor (normalized images), got {x.dtype}; use bundle.preprocess(images).")
    if x.shape[0] == 0:
        raise InputError("x is an empty batch (N = 0).")
    if not bool(torch.isfinite(x).all()):
        raise InputError("x contains NaN or infinite values; check the preprocessing.")
    return x


def call_target(fn: Callable[[Any], torch.Tensor], out: Any, b: int) -> torch.Tensor:
    """``fn(out)`` on a batch of ``b`` perturbed copies (Score-CAM masks, metric curves), checked to be (b,).

    Such batches mix copies of several images, so a target callable must score rows independently
    (``lambda out: out[:, 3]``), not assume the original batch.

    Example:
        >>> call_target(lambda o: o[:, 1], torch.zeros(4, 3), 4).shape
        torch.Size([4])
    """
    hint = (
        f"the target callable is also applied to batches of {b} perturbed copies (Score-CAM masks, metric curves), "
        "so it must score each row on its own (e.g. lambda out: out[:, 3]), not assume the original batch"
    )
    try:
        s = fn(out)
    except (RuntimeError, IndexError, ValueError) as e:
        raise InputError(f"{hint}; it failed with: {first_line(e)}.") from None
    if not isinstance(s, torch.Tensor) or s.shape != (b,):
        got = tuple(s.shape) if isinstance(s, torch.Tensor) else type(s).__name__
        raise InputError(f"{hint}; it returned {got} instead of ({b},).")
    return s


def class_logits(output: Any) -> torch.Tensor | None:
    """The (N, classes) logits in a model output, or ``None``: :func:`convlens.models.logits` (the one rule).

    Example:
        >>> class_logits((torch.zeros(2, 5), torch.zeros(2, 8, 3, 3))).shape
        torch.Size([2, 5])
    """
    return logits(output, required=False)


def target_scores(output: Any, targets: Targets, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Pick each image's explained score from the model output.

    Returns ``(scores (N,), classes (N,) long or -1, probs (N,) or None)``. ``score_i = output[i, c_i]``.

    Example:
        >>> s, c, p = target_scores(torch.tensor([[1.0, 3.0], [2.0, 0.0]]), None, 2)
        >>> s.tolist(), c.tolist()
        ([3.0, 2.0], [1, 0])
    """
    if callable(targets) and not isinstance(targets, torch.Tensor):
        s = targets(output)
        if not isinstance(s, torch.Tensor) or s.shape != (n,):
            got = tuple(s.shape) if isinstance(s, torch.Tensor) else type(s).__name__
            raise InputError(f"a target callable must return one score per image, shape ({n},), got {got}.")
        dev = s.device
        return s, torch.full((n,), -1, dtype=torch.long, device=dev), None
    logits = class_logits(output)
    if logits is None or logits.shape[0] != n:
        shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise InputError(
            f"class targets need (N, classes) logits in the model output (a tensor, a tuple's first 2-D tensor or a "
            f"dict's 'logits'), got {shape}; pass a callable targets=fn(output) returning (N,) scores."
        )
    output = logits
    k = output.shape[1]
    if targets is None:
        cls = output.detach().argmax(1)
    else:
        if isinstance(targets, bool):
            raise InputError(f"targets must be None, an int, one int per image or a callable, got {targets!r}.")
        if isinstance(targets, int):
            cls_list = [targets] * n
        elif isinstance(targets, torch.Tensor):
            if targets.ndim == 0:
                cls_list = [int(targets)] * n
            else:
                cls_list = [int(t) for t in targets.reshape(-1).tolist()]
        elif isinstance(targets, Sequence) and not isinstance(targets, str):
            cls_list = list(targets)
        else:
            raise InputError(
                f"targets must be None, an int, one int per image or a callable, got {type(targets).__name__}."
            )
        if len(cls_list) != n:
            raise InputError(
                f"got {len(cls_list)} targets for a batch of {n} images; give one class per image or a single int."
            )
        for t in cls_list:
            if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < k:
                raise InputError(f"target classes must be ints in [0, {k - 1}], got {t!r}.")
        cls = torch.tensor(cls_list, dtype=torch.long, device=output.device)
    scores = output.gather(1, cls[:, None])[:, 0]
    probs = output.detach().float().softmax(1).gather(1, cls[:, None])[:, 0]
    return scores, cls, probs


# ----------------------------------------------------------------------------------------------------
# layers: 'auto' and the layout of a layer's output are convlens.layers' (one rule for every front end)


def resolve_layers(model: nn.Module, spec: LayerSpec, input_shape: Sequence[int]) -> list[tuple[str, nn.Module]]:
    """Layer spec -> [(name, module)] by :func:`convlens.layers.resolve` at the input's (C, H, W).

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1))
        >>> resolve_layers(net, "auto", (3, 8, 8))[0][0]
        '0'
    """
    from convlens.layers import resolve

    return [(r.name, r.module) for r in resolve(model, spec, input_shape=tuple(input_shape))]


def _better_layer(model: nn.Module, input_shape: tuple[int, ...]) -> str:
    """Advice naming the layer 'auto' picks at this input size (the last map larger than 1x1)."""
    try:
        name = auto_layer(model, input_shape).name
    except LayerError:
        return "no layer of this model is larger than 1x1 at this size: use a larger input."
    return f"use '{name}' (the last layer larger than 1x1 at this size, what 'auto' picks)."


# ----------------------------------------------------------------------------------------------------
# normalization (batched, NaN-free)


def normalize_maps(m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image min-max to [0, 1] over all but the first dim: ``(m - min) / (max - min)``.

    A map whose range is zero (or below float noise, ``1e-6 * max|m|``) or that holds NaN becomes
    zeros. Returns ``(normalized, flat)`` where ``flat`` (N,) bool marks those images.

    Example:
        >>> out, flat = normalize_maps(torch.tensor([[[1.0, 3.0]], [[2.0, 2.0]]]))
        >>> out.tolist(), flat.tolist()
        ([[[0.0, 1.0]], [[0.0, 0.0]]], [False, True])
    """
    n = m.shape[0]
    flat_m = m.reshape(n, -1)
    bad = ~torch.isfinite(flat_m).all(1)
    lo = flat_m.amin(1)
    hi = flat_m.amax(1)
    rng = hi - lo
    scale = torch.maximum(hi.abs(), lo.abs())
    flat = bad | ~(rng > 1e-6 * scale) | (rng <= 0)
    safe = torch.where(flat, torch.ones_like(rng), rng)
    out = (flat_m - lo[:, None]) / safe[:, None]
    out = torch.where(flat[:, None], torch.zeros_like(out), out)
    return out.reshape(m.shape), flat


def finalize_maps(raws: Sequence[torch.Tensor], size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw low-res maps of one or more layers -> (N, H, W) maps in [0, 1].

    ``M = minmax(mean_l upsample(minmax(relu(raw_l))))`` with bilinear upsampling (``align_corners=False``,
    as ``cv2.resize``). Returns ``(maps, flat)``; ``flat`` (N,) marks images whose map is all zeros
    because the map was constant (zero gradient, constant activations) or not finite.

    Example:
        >>> maps, flat = finalize_maps([torch.tensor([[[0.0, 1.0], [2.0, -1.0]]])], (4, 4))
        >>> tuple(maps.shape), float(maps.max()), float(maps.min()), flat.tolist()
        ((1, 4, 4), 1.0, 0.0, [False])
    """
    ups = []
    for raw in raws:
        low, _ = normalize_maps(torch.relu(raw.float()))
        up = F.interpolate(low[:, None], size=size, mode="bilinear", align_corners=False)
        ups.append(up[:, 0])
    mean = torch.stack(ups).mean(0) if len(ups) > 1 else ups[0]
    maps, flat = normalize_maps(mean)
    return maps.contiguous(), flat


# ----------------------------------------------------------------------------------------------------
# the base class


def _leaf(t: torch.Tensor) -> torch.Tensor:
    """Start the autograd graph here (unless it already started upstream, e.g. an earlier target layer)."""
    return t if t.requires_grad else t.detach().requires_grad_(True)


def first_component(m: torch.Tensor, reference: torch.Tensor | None = None) -> torch.Tensor:
    r"""Projection of each image's (C, h, w) stack on its first principal component: (N, C, h, w) -> (N, h, w).

    With :math:`\tilde A \in \mathbb{R}^{hw \times C}` the positions x channels matrix with each
    channel's mean removed and :math:`v_1` its first right singular vector, the map is
    :math:`\tilde A v_1` (Eigen-CAM, and pytorch-grad-cam's ``eigen_smooth``). The sign of :math:`v_1`
    is arbitrary; it is chosen so the map correlates positively with ``reference`` (N, h, w) (default:
    the channel sum of ``m``), so results do not depend on the SVD backend.

    Example:
        >>> m = torch.zeros(1, 2, 2, 2); m[0, :, 0, 0] = 1.0
        >>> first_component(m)[0].argmax().item()
        0
    """
    n, c, h, w = m.shape
    m = torch.nan_to_num(m, nan=0.0, posinf=0.0, neginf=0.0)
    flat = m.reshape(n, c, h * w).transpose(1, 2)  # (N, hw, C)
    flat = flat - flat.mean(dim=1, keepdim=True)
    _, _, vh = torch.linalg.svd(flat, full_matrices=False)  # vh: (N, min(hw, C), C)
    proj = (flat @ vh[:, 0, :, None])[..., 0]  # (N, hw)
    ref = (m.sum(1) if reference is None else reference).reshape(n, h * w)
    ref = ref - ref.mean(1, keepdim=True)
    sign = torch.sign((proj * ref).sum(1))
    sign = torch.where(sign == 0, torch.ones_like(sign), sign)
    return (proj * sign[:, None]).reshape(n, h, w)


#: pytorch-grad-cam's test-time augmentations for ``aug_smooth`` (ttach: horizontal flip x multiply
#: 0.9/1/1.1): (augment input, de-augment map) pairs, in ttach's order.
_TTA: tuple[tuple[bool, float], ...] = tuple((f, k) for f in (False, True) for k in (0.9, 1.0, 1.1))


class BaseCAM:
    """One CAM method bound to a model and its target layer(s); calling it explains a batch.

    Subclasses define only :meth:`weights` (per-channel weights), :meth:`weighted` (per-channel
    weighted activations) or :meth:`combine` (the map). The pipeline (module docstring) is shared:
    one forward, one ``autograd.grad``, all batched on the model's device. The model's ``training``
    flags and ``requires_grad`` are restored and every hook removed after each call, also when it
    raises; parameter ``.grad`` is never written.

    Args:
        model: an ``nn.Module`` (a :class:`~convlens.models.ModelBundle` is accepted too).
        target_layer: ``'auto'``, a name, a glob, a module, or several (their maps are averaged).
        amp: run the forward under autocast (bfloat16 on CPU, float16 on CUDA); maps are float32.
        batch_size: chunk size for methods that run extra forwards (Score-CAM family, Ablation-CAM).
        aug_smooth: test-time augmentation (pytorch-grad-cam's ``aug_smooth``): the final maps of the
            6 views {identity, horizontal flip} x {input x 0.9, 1, 1.1} are flipped back and averaged
            (not re-normalized, as pytorch-grad-cam). Costs 6 runs.
        eigen_smooth: replace the channel sum of the weighted activations ``w_c A_c`` by their first
            principal component (:func:`first_component`; pytorch-grad-cam's ``eigen_smooth``), which
            removes noise. Eigen-CAM and Eigen-Grad-CAM already are a principal component.
        create_graph: keep the autograd graph: the maps carry gradients to the model's parameters (and
            its input), so they can enter a training loss (gradients methods only; the target layer is
            not made a leaf, ``autograd.grad(..., create_graph=True)``). Parameter flags are untouched.
    """

    #: registry name (``convlens.explain.METHODS``)
    name: ClassVar[str] = "base"
    #: False for methods that need no backward pass (Eigen-CAM, Score-CAM)
    uses_gradients: ClassVar[bool] = True
    #: False for gradient methods whose maps cannot carry parameter gradients (FullGrad, Smooth Grad-CAM++)
    supports_create_graph: ClassVar[bool] = True
    #: part of ``--method all`` (False for methods costing many times Score-CAM's C forwards per image)
    in_all: ClassVar[bool] = True

    def __init__(
        self,
        model: nn.Module,
        target_layer: LayerSpec = "auto",
        *,
        amp: bool = False,
        batch_size: int = 32,
        aug_smooth: bool = False,
        eigen_smooth: bool = False,
        create_graph: bool = False,
    ) -> None:
        model = _check_model(model)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InputError(f"batch_size must be an int >= 1, got {batch_size!r}.")
        if create_graph and not (self.uses_gradients and self.supports_create_graph):
            raise InputError(
                f"create_graph=True needs a gradient method; {self.name} runs no backward pass "
                "(use gradcam, gradcam++, xgradcam, layercam or hirescam)."
            )
        self.model = model
        self.target_layer = target_layer
        self.amp = bool(amp)
        self.batch_size = batch_size
        self.aug_smooth = bool(aug_smooth)
        self.eigen_smooth = bool(eigen_smooth)
        self.create_graph = bool(create_graph)

    # -- what a method defines ------------------------------------------------------------------

    def weights(self, a: torch.Tensor, g: torch.Tensor | None, ctx: CAMContext) -> torch.Tensor:
        """Per-channel weights (N, C) from activations ``a`` and gradients ``g`` (N, C, h, w)."""
        raise NotImplementedError(f"{type(self).__name__} must define weights(), weighted() or combine().")

    def weighted(self, a: torch.Tensor, g: torch.Tensor | None, ctx: CAMContext) -> torch.Tensor:
        """Per-channel weighted activations (N, C, h, w); default ``w_c A_c`` with :meth:`weights`."""
        w = self.weights(a, g, ctx)
        return w[:, :, None, None].to(a.dtype) * a

    def combine(self, a: torch.Tensor, g: torch.Tensor | None, ctx: CAMContext) -> torch.Tensor:
        """The raw map (N, h, w): the channel sum of :meth:`weighted` (its first principal component
        with ``eigen_smooth``)."""
        wa = self.weighted(a, g, ctx)
        if self.eigen_smooth:
            return first_component(wa)
        return wa.sum(1)

    # -- the pipeline ---------------------------------------------------------------------------

    def _autocast(self, device: torch.device) -> Any:
        if not self.amp:
            return nullcontext()
        dtype = torch.bfloat16 if device.type == "cpu" else torch.float16
        return torch.autocast(device_type=device.type, dtype=dtype)

    def __call__(self, x: torch.Tensor, targets: Targets = None) -> CAMResult:
        """Explain a batch ``x`` (N, C, H, W): one map per image, for each image's own target."""
        x = _check_input(x)
        if not self.aug_smooth:
            return self._explain(x, targets)
        views = []
        first: CAMResult | None = None
        for flip, k in _TTA:
            xv = x.flip(-1) if flip else x
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                res = self._explain(xv * k if k != 1.0 else xv, targets)
            views.append(res.maps.flip(-1) if flip else res.maps)
            if not flip and k == 1.0:
                first = res
        assert first is not None
        first.maps = torch.stack(views).mean(0)
        return first

    def _explain(self, x: torch.Tensor, targets: Targets = None) -> CAMResult:
        model = self.model
        dev = device_of(model)
        layers = resolve_layers(model, self.target_layer, tuple(x.shape[1:]))
        names = [n for n, _ in layers]
        n_img = x.shape[0]
        keep = self.create_graph
        with ExitStack() as stack:
            # an outer inference_mode / no_grad must not stop us: gradients are enabled locally
            stack.enter_context(torch.inference_mode(False))
            stack.enter_context(torch.enable_grad() if self.uses_gradients else torch.no_grad())
            stack.enter_context(preserve_state(model, train=False, requires_grad=None if keep else False))
            x = x.to(dev) if keep else x.detach().to(dev)
            if x.is_inference():
                x = x.clone()  # an inference tensor cannot enter an autograd graph; a normal copy can
            with capture(
                model,
                {n: m for n, m in layers},
                detach=not self.uses_gradients,
                clone=self.uses_gradients,  # in-place ops after the layer (ReLU(inplace=True)) can't touch A
                replace={n: _leaf for n in names} if self.uses_gradients and not keep else None,
            ) as cap:
                with self._autocast(dev):
                    out = cap.run(x)
                missing = [n for n in names if n not in cap.activations]
                if missing:
                    raise LayerError(
                        f"layer '{missing[0]}' was not called in the forward pass; pick a layer the model uses."
                    )
                scores, cls, probs = target_scores(out, targets, n_img)
                acts = [cap.activations[n] for n in names]
                reused = [n for n in names if len(cap.calls.get(n, ())) > 1]
            grads: list[torch.Tensor | None] = [None] * len(acts)
            if self.uses_gradients:
                # ONE backward for the batch, only as deep as the target layer(s); parameters untouched
                if not scores.requires_grad or not all(a.requires_grad for a in acts):
                    raise LayerError(
                        f"the model output does not depend on layer '{names[0]}' through a tensor output "
                        "(a layer returning a tuple or dict cannot carry the gradient); pick a layer whose output is a plain tensor."
                    )
                got = torch.autograd.grad(scores.float().sum(), acts, allow_unused=True, create_graph=keep)
                for n, g in zip(names, got, strict=True):
                    if g is None:
                        raise LayerError(
                            f"the model output does not depend on layer '{n}' through a tensor output; "
                            "pick a layer whose output is a plain tensor feeding the head."
                        )
                grads = list(got)
            del out
            ctx = CAMContext(
                model=model,
                x=x.detach(),
                score=self._row_score(targets, cls),
                batch_size=self.batch_size,
                autocast=lambda: self._autocast(dev),
                targets=cls.detach(),
                scores=scores.detach().float(),
            )
            raws: dict[str, torch.Tensor] = {}
            diagnosis: list[str] = []
            with torch.enable_grad() if keep else torch.no_grad():
                lays = layer_layouts(model, tuple(x.shape[1:]))
                for (n, mod), a, g in zip(layers, acts, grads, strict=True):
                    lay = lays.get(n)
                    if lay is None or not lay.is_map:
                        raise LayerError(
                            f"layer '{n}' output has shape {tuple(a.shape)}; CAM needs a (N, C, h, w) feature map "
                            "or (N, tokens, D) patch tokens on the image's grid."
                        )
                    a32 = lay.to_nchw(a if keep else a.detach()).float()
                    g32 = None if g is None else lay.to_nchw(g if keep else g.detach()).float()
                    ctx.layer, ctx.module = n, mod
                    raws[n] = self.combine(a32, g32, ctx).float()
                    diagnosis.append(_why_flat(n, a32, g32))
                one_by_one = [n for n in names if lays[n].area == 1]
                maps, flat = finalize_maps(list(raws.values()), (x.shape[2], x.shape[3]))
        if one_by_one:
            better = _better_layer(model, tuple(x.shape[1:]))
            warnings.warn(
                f"layer '{one_by_one[0]}' is a 1x1 map at this {x.shape[2]}x{x.shape[3]} input: a 1x1 map cannot "
                f"localize anything (every pixel gets the same value); {better}",
                RuntimeWarning,
                stacklevel=2,
            )
        for n in reused:  # e.g. torchvision's BasicBlock applies one ReLU module twice
            warnings.warn(
                f"layer '{n}' is called several times in one forward pass; the map uses its last call "
                "(name a module that runs once, e.g. its parent block, for a single well-defined map).",
                RuntimeWarning,
                stacklevel=3,
            )
        if bool(flat.any()):
            k = int(flat.sum())
            why = "; ".join(d for d in diagnosis if d) or (
                "no positive evidence: every weighted activation is <= 0 for the target (try another target or layer)"
            )
            warnings.warn(
                f"{self.name}: {k} of {n_img} maps are constant, returning zeros for them ({why}).",
                RuntimeWarning,
                stacklevel=3,
            )
        if not keep:
            raws = {n: r.detach() for n, r in raws.items()}
        return CAMResult(
            maps=maps if keep else maps.detach(),
            raw=raws,
            targets=cls.detach(),
            scores=scores.detach().float(),
            probs=None if probs is None else probs.detach(),
            method=self.name,
            layers=names,
        )

    @staticmethod
    def _row_score(targets: Targets, cls: torch.Tensor) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """Score function for extra forwards on copies of images ``idx`` (Score-CAM)."""
        if callable(targets) and not isinstance(targets, torch.Tensor):
            fn = targets

            def score_callable(out: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
                return call_target(fn, out, idx.shape[0])

            return score_callable

        def score_class(out: Any, idx: torch.Tensor) -> torch.Tensor:
            logits = class_logits(out)
            assert logits is not None  # the first forward found them
            return logits.gather(1, cls[idx][:, None])[:, 0]

        return score_class
