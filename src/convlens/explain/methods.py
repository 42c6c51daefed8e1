"""The CAM methods: each is only its weight (or map) function; the pipeline is :class:`BaseCAM`.

Notation: ``A`` (N, C, h, w) the target layer's activations, ``G = dy^c / dA`` their gradients for
each image's target score ``y^c``, sums over the spatial positions ``(i, j)``.

Example:
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(),
    ...                           torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 3))
    >>> x = torch.randn(2, 3, 8, 8)
    >>> sorted(METHODS)[:3]
    ['ablationcam', 'eigencam', 'eigengradcam']
    >>> all(tuple(METHODS[m](net, "1")(x).maps.shape) == (2, 8, 8) for m in METHODS)
    True
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from convlens.errors import InputError
from convlens.explain.base import (
    BaseCAM,
    CAMContext,
    CAMResult,
    LayerSpec,
    Targets,
    _check_input,
    _check_model,
    _leaf,
    first_component,
    normalize_maps,
    target_scores,
)
from convlens.explain.fullgrad import FullGrad
from convlens.explain.perturbation import ISCAM, SSCAM, AblationCAM
from convlens.hooks import capture, device_of, preserve_state
from convlens.layers import layer_layouts

__all__ = [
    "GradCAM",
    "GradCAMPlusPlus",
    "XGradCAM",
    "LayerCAM",
    "HiResCAM",
    "EigenCAM",
    "ScoreCAM",
    "GuidedGradCAM",
    "EigenGradCAM",
    "SmoothGradCAMPlusPlus",
    "AblationCAM",
    "FullGrad",
    "SSCAM",
    "ISCAM",
    "guided_backprop",
    "METHODS",
    "get_method",
    "explain",
    "cam",
]


def _spatial_sum(t: torch.Tensor) -> torch.Tensor:
    return t.sum(dim=(2, 3))


class GradCAM(BaseCAM):
    r"""Grad-CAM: channel weights are the spatially averaged gradients.

    .. math:: w_c = \frac{1}{hw}\sum_{ij} G_{c,ij}, \qquad M = \mathrm{ReLU}\Big(\sum_c w_c A_c\Big)

    Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based
    Localization", ICCV 2017. https://arxiv.org/abs/1610.02391

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 1), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
        >>> GradCAM(net, "0")(torch.randn(1, 3, 4, 4), targets=1).maps.shape
        torch.Size([1, 4, 4])
    """

    name = "gradcam"

    def weights(self, a: torch.Tensor, g: torch.Tensor | None, ctx: CAMContext) -> torch.Tensor:
        assert g is not None
        return g.mean(dim=(2, 3))


class GradCAMPlusPlus(BaseCAM):
    r"""Grad-CAM++: positive gradients weighted per position (closed form for an exponential score).

    .. math::
        \alpha_{c,ij} = \frac{G_{c,ij}^2}{2G_{c,ij}^2 + \sum_{ab} A_{c,ab}\, G_{c,ij}^3}, \qquad
        w_c = \sum_{ij} \alpha_{c,ij}\, \mathrm{ReLU}(G_{c,ij})

    (Eq. 19 with ``alpha = 0`` where ``G = 0``; a 1e-6 guard in the denominator.)
    Chattopadhyay et al., "Grad-CAM++: Improved Visual Explanations for Deep Convolutional Networks",
    WACV 2018. https://arxiv.org/abs/1710.11063

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 1), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
        >>> GradCAMPlusPlus(net, "0")(torch.randn(1, 3, 4, 4)).maps.shape
        torch.Size([1, 4, 4])
    """

    name = "gradcam++"

    def weights(self, a: torch.Tensor, g: torch.Tensor | None, ctx: CAMContext) -> torch.Tensor:
        assert g is not None
        g2 = g * g
        g3 = g2 * g
        sum_a = a.sum(dim=(2, 3), keepdim=True)
        alpha = g2 / (2 * g2 + sum_a * g3 + 1e-6)
        alpha = torch.where(g != 0, alpha, torch.zeros_like(alpha))
        return _spatial_sum(alpha * torch.relu(g))


class SmoothGradCAMPlusPlus(BaseCAM):
    r"""Smooth Grad-CAM++: Grad-CAM++ with its derivatives averaged over noisy copies of the input.

    With :math:`D^{(p)} = \frac{1}{S}\sum_s G_s^p`, :math:`G_s` the gradient at the layer for
    :math:`x + \epsilon_s`, :math:`\epsilon_s \sim \mathcal{N}(0, \sigma^2)`:

    .. math::
        \alpha_{c,ij} = \frac{D^{(2)}_{c,ij}}{2 D^{(2)}_{c,ij} + \sum_{ab} A_{c,ab}\, D^{(3)}_{c,ij}}, \qquad
        w_c = \sum_{ij} \alpha_{c,ij}\, \mathrm{ReLU}\big(D^{(1)}_{c,ij}\big)

    (``A`` from the clean input). With ``std=0`` and one sample this is exactly Grad-CAM++ (the
    documented relation convlens tests). torch-cam's ``SmoothGradCAMpp`` differs on purpose in two
    places: it weights with the LAST sample's gradient instead of the mean, and it sums
    :math:`A \odot D^{(3)}` over positions in the denominator. Noise: a CPU generator seeded with
    ``seed``, one (N, C, H, W) draw per sample (torch-cam's order). ``num_samples`` forward/backward
    passes of the whole batch.

    Omeiza et al., "Smooth Grad-CAM++: An Enhanced Inference Level Visualization Technique for Deep
    Convolutional Neural Network Models", 2019. https://arxiv.org/abs/1908.01224

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 1), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
        >>> SmoothGradCAMPlusPlus(net, "0", num_samples=2)(torch.randn(1, 3, 4, 4)).maps.shape
        torch.Size([1, 4, 4])
    """

    name = "smoothgradcam++"
    supports_create_graph = False

    def __init__(
        self,
        model: nn.Module,
        target_layer: LayerSpec = "auto",
        *,
        num_samples: int = 4,
        std: float = 0.3,
        seed: int = 0,
        **kw: object,
    ) -> None:
        super().__init__(model, target_layer, **kw)  # type: ignore[arg-type]
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise InputError(f"num_samples must be an int >= 1, got {num_samples!r}.")
        if not std >= 0:
            raise InputError(f"std must be >= 0, got {std!r}.")
        self.num_samples, self.std, self.seed = num_samples, float(std), int(seed)

    def weights(self, a: torch.Tensor, g: torch.Tensor | None, ctx: CAMContext) -> torch.Tensor:
        gen = torch.Generator(device="cpu").manual_seed(self.seed)
        idx = torch.arange(a.shape[0], device=a.device)
        d1, d2, d3 = torch.zeros_like(a), torch.zeros_like(a), torch.zeros_like(a)
        for _ in range(self.num_samples):
            noise = torch.randn(ctx.x.shape, generator=gen, dtype=torch.float32) * self.std
            xn = ctx.x + noise.to(ctx.x.device, ctx.x.dtype)
            with torch.enable_grad():
                with capture(
                    ctx.model, {ctx.layer: ctx.module}, detach=False, clone=True, replace={ctx.layer: _leaf}
                ) as cap:
                    with ctx.autocast():
                        out = cap.run(xn)
                    act = cap.activations[ctx.layer]
                (gs,) = torch.autograd.grad(ctx.score(out, idx).float().sum(), act)
            gs4 = layer_layouts(ctx.model, tuple(ctx.x.shape[1:]))[ctx.layer].to_nchw(gs.detach()).float()
            d1 += gs4
            d2 += gs4 * gs4
            d3 += gs4 * gs4 * gs4
        d1, d2, d3 = d1 / self.num_samples, d2 / self.num_samples, d3 / self.num_samples
        sum_a = a.sum(dim=(2, 3), keepdim=True)
        alpha = d2 / (2 * d2 + sum_a * d3 + 1e-6)
        alpha = torch.where(d2 != 0, alpha, torch.zeros_like(alpha))
        return _spatial_sum(alpha * torch.relu(d1))


class XGradCAM(BaseCAM):
    r"""XGrad-CAM: gradients weighted by the normalized activations (axiom-based).

    .. math:: w_c = \sum_{ij} \frac{A_{c,ij}}{\sum_{ab} A_{c,ab}}\, G_{c,ij}

    (a 1e-7 guard in the denominator). Fu et al., "Axiom-based Grad-CAM: Towards Accurate
    Visualization and Explanation of CNNs", BMVC 2020. https://arxiv.org/abs/2008.02312

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 1), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
        >>> XGradCAM(net, "0")(torch.randn(1, 3, 4, 4)).maps.shape
        torch.Size([1, 4, 4])
    """

    name = "xgradcam"

    def weights(self, a: torch.Tensor, g: torch.Tensor | None, ctx: CAMContext) -> torch.Tensor:
        assert g is not None
        sum_a = a.sum(dim=(2, 3), keepdim=True)
        return _spatial_sum(g * a / (sum_a + 1e-7))


class LayerCAM(BaseCAM):
    r"""LayerCAM: each position weighted by its own positive gradient (works on shallow layers too).

    .. math:: M = \mathrm{ReLU}\Big(\sum_c \mathrm{ReLU}(G_c) \odot A_c\Big)

    Jiang et al., "LayerCAM: Exploring Hierarchical Class Activation Maps for Localization",
    IEEE TIP 2021. https://ieeexplore.ieee.org/document/9462463

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 1), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
        >>> LayerCAM(net, "0")(torch.randn(1, 3, 4, 4)).maps.shape
        torch.Size([1, 4, 4])
    """

    name = "layercam"

    def weighted(self, a: torch.Tensor, g: torch.Tensor | None, ctx: CAMContext) -> torch.Tensor:
        assert g is not None
        return torch.relu(g) * a


class HiResCAM(BaseCAM):
    r"""HiResCAM: element-wise gradient times activation (provably faithful for conv + GAP heads).

    .. math:: M = \mathrm{ReLU}\Big(\sum_c G_c \odot A_c\Big)

    Draelos & Carin, "Use HiResCAM instead of Grad-CAM for faithful explanations of convolutional
    neural networks", 2020. https://arxiv.org/abs/2011.08891

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 1), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
        >>> HiResCAM(net, "0")(torch.randn(1, 3, 4, 4)).maps.shape
        torch.Size([1, 4, 4])
    """

    name = "hirescam"

    def weighted(self, a: torch.Tensor, g: torch.Tensor | None, ctx: CAMContext) -> torch.Tensor:
        assert g is not None
        return g * a


class EigenCAM(BaseCAM):
    r"""Eigen-CAM: the first principal component of the activations (no gradients, class-agnostic).

    With :math:`\tilde A \in \mathbb{R}^{hw \times C}` the activations with each channel's mean removed
    and :math:`v_1` its first right singular vector, :math:`M = \tilde A v_1` (reshaped to h x w).
    The sign of :math:`v_1` is arbitrary; convlens picks the one whose map correlates positively with
    the mean activation over channels (salient = strongly activated), so results are reproducible
    across SVD backends. Non-finite activations count as 0, in the component and in that mean. Targets only
    set the reported class and score.

    Muhammad & Yeasin, "Eigen-CAM: Class Activation Map using Principal Components", IJCNN 2020.
    https://arxiv.org/abs/2008.00299

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 1), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
        >>> EigenCAM(net, "0")(torch.randn(1, 3, 4, 4)).maps.shape
        torch.Size([1, 4, 4])
    """

    name = "eigencam"
    uses_gradients = False

    def combine(self, a: torch.Tensor, g: torch.Tensor | None, ctx: CAMContext) -> torch.Tensor:
        # the default reference, the channel sum of the cleaned activations, has the channel mean's sign; a
        # reference taken from the raw activations would carry their inf/NaN and lose the sign convention
        return first_component(a)


class EigenGradCAM(BaseCAM):
    r"""Eigen-Grad-CAM: the first principal component of the gradient-weighted activations.

    .. math:: M = \tilde P v_1, \qquad P_{c,ij} = G_{c,ij} A_{c,ij}

    (:func:`~convlens.explain.base.first_component`: ``P`` as a positions x channels matrix, channel
    means removed, projected on its first right singular vector; the sign is chosen so the map
    correlates with :math:`\sum_c G_c A_c`). Class-specific like Grad-CAM, denoised like Eigen-CAM
    (pytorch-grad-cam's ``EigenGradCAM``). Muhammad & Yeasin 2020 (as Eigen-CAM).

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 1), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
        >>> EigenGradCAM(net, "0")(torch.randn(1, 3, 4, 4), targets=1).maps.shape
        torch.Size([1, 4, 4])
    """

    name = "eigengradcam"

    def combine(self, a: torch.Tensor, g: torch.Tensor | None, ctx: CAMContext) -> torch.Tensor:
        assert g is not None
        return first_component(g * a)


class ScoreCAM(BaseCAM):
    r"""Score-CAM: each channel, upsampled and min-max scaled, masks the input; the target's score on
    the masked image is the channel's weight (softmax over channels). No gradients.

    .. math::
        H_c = \frac{\mathrm{up}(A_c) - \min}{\max - \min}, \qquad
        w_c = \mathrm{softmax}_c\big(y^c(x \odot H_c)\big), \qquad M = \mathrm{ReLU}\Big(\sum_c w_c A_c\Big)

    The N x C masked forwards run in chunks of ``batch_size`` (masks made per chunk, never all at once).
    Upsampling of the masks is bilinear with ``align_corners=True`` (as pytorch-grad-cam).
    A callable target is applied to the outputs of masked copies and must score each row on its own.
    Wang et al., "Score-CAM: Score-Weighted Visual Explanations for Convolutional Neural Networks",
    CVPR-W 2020. https://arxiv.org/abs/1910.01279

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 1), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
        >>> ScoreCAM(net, "0", batch_size=4)(torch.randn(2, 3, 4, 4)).maps.shape
        torch.Size([2, 4, 4])
    """

    name = "scorecam"
    uses_gradients = False

    def weights(self, a: torch.Tensor, g: torch.Tensor | None, ctx: CAMContext) -> torch.Tensor:
        n, c, h, w = a.shape
        size = (ctx.x.shape[2], ctx.x.shape[3])
        flat = a.reshape(n * c, 1, h, w)
        scores = torch.empty(n * c, device=a.device, dtype=torch.float32)
        for start in range(0, n * c, ctx.batch_size):
            idx = torch.arange(start, min(start + ctx.batch_size, n * c), device=a.device)
            img = idx // c
            up = F.interpolate(flat[idx], size=size, mode="bilinear", align_corners=True)  # (B, 1, H, W)
            lo = up.amin(dim=(2, 3), keepdim=True)
            hi = up.amax(dim=(2, 3), keepdim=True)
            mask = (up - lo) / (hi - lo + 1e-8)
            with ctx.autocast():
                out = ctx.model(ctx.x[img] * mask.to(ctx.x.dtype))
            scores[idx] = ctx.score(out, img).float()
        return scores.view(n, c).softmax(dim=1)


# ----------------------------------------------------------------------------------------------------
# guided backpropagation


#: a module whose output is a ReLU's output (a Keras layer with ``activation="relu"``) may say so with
#: this attribute set to True: guided backpropagation then treats it as a ReLU
RELU_OUTPUT_ATTR = "convlens_relu_output"


def _guide(t: torch.Tensor) -> torch.Tensor:
    """Register the guided rule on a ReLU output: only positive gradients flow back through it."""
    if t.requires_grad:
        t.register_hook(lambda g: g.clamp(min=0))  # a tensor hook: it dies with this forward's graph
    return t


def guided_backprop(
    model: nn.Module,
    x: torch.Tensor,
    targets: Targets = None,
    *,
    relu_types: Sequence[type[nn.Module]] = (nn.ReLU, nn.ReLU6),
    amp: bool = False,
) -> torch.Tensor:
    r"""Guided backpropagation: the input gradient where every ReLU passes back only positive gradients.

    At each ReLU with input :math:`z`: :math:`R^{in} = \mathbb{1}[z > 0]\, \mathrm{ReLU}(R^{out})`
    (ordinary backprop keeps negative :math:`R^{out}` too). Returns (N, C, H, W) gradients w.r.t. ``x``
    for each image's target (one forward, one ``autograd.grad``).

    The rule is attached through :func:`convlens.hooks.capture` (``replace=``) on every module of
    ``relu_types`` as a tensor hook on that forward's output: the model's modules are never swapped,
    nothing remains after the call. Functional ``F.relu`` calls are not modules and stay ordinary, except
    in a module that declares its output is a ReLU's (:data:`RELU_OUTPUT_ATTR`: a Keras layer with
    ``activation="relu"``), which gets the same rule on its output.

    Springenberg et al., "Striving for Simplicity: The All Convolutional Net", ICLR-W 2015.
    https://arxiv.org/abs/1412.6806

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3), torch.nn.ReLU(), torch.nn.Flatten())
        >>> guided_backprop(net, torch.randn(1, 3, 4, 4), targets=0).shape
        torch.Size([1, 3, 4, 4])
    """
    model = _check_model(model)
    x = _check_input(x)
    types = tuple(relu_types)
    names = [
        n
        for n, m in model.named_modules()
        if n and (isinstance(m, types) or getattr(m, RELU_OUTPUT_ATTR, False) is True)
    ]
    dev = device_of(model)
    with torch.inference_mode(False), torch.enable_grad(), preserve_state(model, train=False, requires_grad=False):
        xi = x.detach().to(dev).clone().requires_grad_(True)
        with capture(model, names, replace={n: _guide for n in names}) as cap:
            ctx = (
                torch.autocast(dev.type, dtype=torch.bfloat16 if dev.type == "cpu" else torch.float16) if amp else None
            )
            if ctx is None:
                out = cap.run(xi)
            else:
                with ctx:
                    out = cap.run(xi)
            cap.activations.clear()
            cap.calls.clear()
        scores, _, _ = target_scores(out, targets, xi.shape[0])
        (grad,) = torch.autograd.grad(scores.float().sum(), xi)
    return grad.detach().float()


class GuidedGradCAM(GradCAM):
    r"""Guided Grad-CAM: guided backpropagation (fine detail) times the upsampled Grad-CAM map (where).

    .. math:: \mathrm{GGC}_{k,uv} = R^{guided}_{k,uv} \cdot M^{\mathrm{Grad\text{-}CAM}}_{uv}

    ``maps`` holds ``minmax(max_k |GGC_k|)`` (N, H, W); the signed (N, C, H, W) product is in
    ``result.extra['guided']`` and plain guided backprop in ``result.extra['guided_backprop']``.
    Costs two forwards (Grad-CAM, then guided backprop). Selvaraju et al. 2017 (as Grad-CAM).

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 1), torch.nn.ReLU(),
        ...                           torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
        >>> res = GuidedGradCAM(net, "1")(torch.randn(1, 3, 4, 4))
        >>> tuple(res.extra["guided"].shape)
        (1, 3, 4, 4)
    """

    name = "guided-gradcam"

    def __call__(self, x: torch.Tensor, targets: Targets = None) -> CAMResult:
        res = super().__call__(x, targets)
        tgt = targets if callable(targets) and not isinstance(targets, torch.Tensor) else res.targets
        gb = guided_backprop(self.model, x, tgt, amp=self.amp)
        guided = gb * res.maps[:, None]
        res.maps, _ = normalize_maps(guided.abs().amax(dim=1))
        res.extra["guided"] = guided
        res.extra["guided_backprop"] = gb
        return res


# ----------------------------------------------------------------------------------------------------
# registry

METHODS: dict[str, type[BaseCAM]] = {
    cls.name: cls
    for cls in (
        GradCAM,
        GradCAMPlusPlus,
        XGradCAM,
        LayerCAM,
        HiResCAM,
        EigenCAM,
        ScoreCAM,
        GuidedGradCAM,
        AblationCAM,
        FullGrad,
        EigenGradCAM,
        SmoothGradCAMPlusPlus,
        SSCAM,
        ISCAM,
    )
}


def get_method(name: str) -> type[BaseCAM]:
    """The CAM class registered under ``name`` (case-insensitive; ``grad-cam`` and ``gradcam_pp`` style aliases ok).

    Example:
        >>> get_method("GradCAM++").__name__
        'GradCAMPlusPlus'
    """
    if not isinstance(name, str):
        raise InputError(f"method must be a name, got {type(name).__name__}.")
    key = name.lower().replace("_", "-")
    key = {
        "grad-cam": "gradcam",
        "gradcampp": "gradcam++",
        "gradcam-pp": "gradcam++",
        "grad-cam++": "gradcam++",
        "xgrad-cam": "xgradcam",
        "layer-cam": "layercam",
        "hires-cam": "hirescam",
        "eigen-cam": "eigencam",
        "score-cam": "scorecam",
        "guidedgradcam": "guided-gradcam",
        "ablation-cam": "ablationcam",
        "full-grad": "fullgrad",
        "eigen-grad-cam": "eigengradcam",
        "eigengrad-cam": "eigengradcam",
        "smoothgradcampp": "smoothgradcam++",
        "smooth-gradcam++": "smoothgradcam++",
        "smooth-grad-cam++": "smoothgradcam++",
        "ss-cam": "sscam",
        "is-cam": "iscam",
    }.get(key, key)
    if key not in METHODS:
        close = difflib.get_close_matches(key, list(METHODS), n=2, cutoff=0.5)
        hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
        raise InputError(f"unknown CAM method '{name}'; {hint}choose one of {', '.join(METHODS)}.")
    return METHODS[key]


def explain(
    model: nn.Module,
    x: torch.Tensor,
    method: str = "gradcam",
    target_layer: LayerSpec = "auto",
    targets: Targets = None,
    **kw: object,
) -> CAMResult:
    """Run one CAM method on a batch; the full :class:`CAMResult` (maps, raw low-res maps, targets, scores).

    ``kw`` goes to the method's constructor (``amp=True``, ``batch_size=`` for Score-CAM,
    ``aug_smooth``, ``eigen_smooth``, ``create_graph``). A pixel attribution name
    (``explain.ATTRIBUTIONS``: ``saliency``, ``integratedgradients`` ...) runs
    :func:`~convlens.explain.attribute` and returns its map (channel sum of ``|attr|``, normalized)
    with the raw attribution in ``extra['attribution']``; ``target_layer`` is then unused.

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 1), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
        >>> res = explain(net, torch.randn(1, 3, 4, 4), "hirescam", "0", targets=[1])
        >>> res.method, res.layers, tuple(res.raw["0"].shape)
        ('hirescam', ['0'], (1, 4, 4))
    """
    from convlens.explain.pixel import ATTRIBUTIONS

    key = method.lower().replace("_", "").replace("-", "") if isinstance(method, str) else method
    if key in ATTRIBUTIONS:
        return _attribution_result(model, x, key, targets, **kw)
    cls = get_method(method)
    return cls(model, target_layer, **kw)(x, targets)  # type: ignore[arg-type]


def _attribution_result(model: nn.Module, x: torch.Tensor, method: str, targets: Targets, **kw: object) -> CAMResult:
    """A pixel attribution as a :class:`CAMResult`: ``maps`` = :func:`attribution_map` (channel sum of
    ``|attr|``, min-max), ``raw['input']`` the channel sum of the attribution, ``extra['attribution']``
    the (N, C, H, W) values; targets/scores/probs from one no-grad forward."""
    from convlens.explain.pixel import attribute, attribution_map

    model = _check_model(model)
    x = _check_input(x)
    kw = dict(kw)
    if "batch_size" in kw:  # the CAM chunk size is the attribution's memory budget
        kw.setdefault("internal_batch_size", kw.pop("batch_size"))
    attr = attribute(model, x, method, targets, **kw)
    dev = device_of(model)
    with torch.no_grad(), preserve_state(model, train=False):
        scores, cls, probs = target_scores(model(x.to(dev)), targets, x.shape[0])
    return CAMResult(
        maps=attribution_map(attr),
        raw={"input": attr.sum(1)},
        targets=cls,
        scores=scores.float(),
        probs=probs,
        method=method,
        layers=["input"],
        extra={"attribution": attr},
    )


def cam(
    model: nn.Module,
    x: torch.Tensor,
    method: str = "gradcam",
    target_layer: LayerSpec = "auto",
    targets: Targets = None,
    **kw: object,
) -> torch.Tensor:
    """Class activation maps (N, H, W) in [0, 1], upsampled to the input size, on the model's device.

    The raw maps and the targets used are in :func:`explain`'s result (``explain(...).raw``).
    ``targets``: None (each image's top-1), an int, one class per image, or ``fn(output) -> (N,)``.

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 1), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
        >>> m = cam(net, torch.randn(2, 3, 4, 4), "gradcam", "0", targets=[0, 1])
        >>> tuple(m.shape), bool(m.min() >= 0) and bool(m.max() <= 1)
        ((2, 4, 4), True)
    """
    return explain(model, x, method, target_layer, targets, **kw).maps
