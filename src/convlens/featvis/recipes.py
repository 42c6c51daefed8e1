"""Recipes: named, documented bundles of feature-visualization settings.

* :class:`KerasRecipe` (``recipe='keras'``) -- the Keras-book recipe (Chollet, *Deep Learning with
  Python*, ch. "Visualizing convnet filters"): start from uniform noise in [0.4, 0.6], take the gradient
  of the objective with respect to the raw pixels, L2-normalize it per image, and step a fixed
  ``lr = 10`` (``x <- x + lr * g / ||g||``); no transforms, no regularizer. The displayed image is the
  book's ``deprocess_image``: standardize each image, scale to std 0.25 (the book's 64/255), shift to
  0.5, clip to [0, 1] (the book's final 25-pixel crop is not done: the output keeps its size).
* :class:`LucidRecipe` (``recipe='lucid'``) -- Olah et al., "Feature Visualization", Distill 2017, as
  in Lucid/Lucent's ``render_vis`` defaults: Fourier parameterization with 1/f scaling (``sd=0.01``),
  colour decorrelation, sigmoid; Adam ``lr=0.05``; every step pad 12 (constant 0.5), jitter 8,
  random scale in {0.90, 0.92, ..., 1.10}, random rotation in {-10..10} degrees (0 six times as
  likely as any other angle), jitter 4 -- with per-image random parameters and the scale keeping the image size
  (Lucent resizes the whole batch by one factor). Jitter here is ``{-d//2, ..., d//2}`` so ``jitter=8``
  shifts by up to 4 pixels each way, like Lucid's crop-based jitter of 8.

Override any field: ``LucidRecipe(tv=1e-3)`` or ``get_recipe('lucid', lr=0.02)``.

Example:
    >>> get_recipe("keras").optimizer, get_recipe("lucid").parameterization
    ('normalized', 'fourier')
    >>> get_recipe("lucid", lr=0.02).lr
    0.02
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from convlens.errors import InputError
from convlens.featvis.transforms import Jitter, Pad, Pipeline, RandomRotate, RandomScale, Transform

__all__ = ["Recipe", "KerasRecipe", "LucidRecipe", "RECIPES", "get_recipe"]


@dataclass(frozen=True)
class Recipe:
    """Every knob of a feature-visualization run (base of the presets; all fields keyword-settable).

    Attributes:
        name: label stored in results.
        parameterization: ``'pixel'`` (raw pixels) or ``'fourier'`` (1/f-scaled spectrum).
        decorrelate: map the parameters through ImageNet colour decorrelation before the sigmoid.
        sigmoid: pixel parameterization only: squash with a sigmoid (Fourier always does).
        init_low, init_high: pixel (no sigmoid) init range, uniform per pixel.
        sd: std of the Gaussian init (Fourier spectrum, or sigmoid pixels).
        decay_power: exponent of the 1/f spectrum scaling.
        optimizer: ``'normalized'`` (x += lr * g/||g||, per image) or ``'adam'`` (maximizing).
        lr: step size of that optimizer.
        pad, pad_value: constant padding added before the random transforms (pixels, value).
        jitter: first random shift, up to ``jitter // 2`` pixels each way (0 = none).
        scales: random zoom factors (empty = none).
        angles: random rotation angles in degrees (empty = none).
        jitter_after: a second, final random shift, up to ``jitter_after // 2`` pixels (0 = none).
        l2, tv, blur: weights of the L2, total-variation and blur penalties (subtracted).
        input_size: resize the transformed image to this side before the model (Lucent's rule
            upsamples anything under 224 to 224); ``None`` feeds it as is.
        display: ``'standardize'`` (Keras deprocess) or ``'clamp'`` for the returned images.
    """

    name: str = "custom"
    parameterization: str = "fourier"
    decorrelate: bool = True
    sigmoid: bool = True
    init_low: float = 0.4
    init_high: float = 0.6
    sd: float = 0.01
    decay_power: float = 1.0
    optimizer: str = "adam"
    lr: float = 0.05
    pad: int = 12
    pad_value: float = 0.5
    jitter: int = 8
    scales: tuple[float, ...] = tuple(1 + (i - 5) / 50 for i in range(11))
    angles: tuple[float, ...] = tuple(range(-10, 11)) + (0,) * 5
    jitter_after: int = 4
    l2: float = 0.0
    tv: float = 0.0
    blur: float = 0.0
    input_size: int | None = None
    display: str = "clamp"
    extra: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if self.parameterization not in ("pixel", "fourier"):
            raise InputError(f"parameterization must be 'pixel' or 'fourier', got {self.parameterization!r}.")
        if self.optimizer not in ("normalized", "adam"):
            raise InputError(f"optimizer must be 'normalized' or 'adam', got {self.optimizer!r}.")
        if not self.lr > 0:
            raise InputError(f"lr must be > 0, got {self.lr}.")
        if self.display not in ("standardize", "clamp"):
            raise InputError(f"display must be 'standardize' or 'clamp', got {self.display!r}.")
        if self.input_size is not None and self.input_size < 1:
            raise InputError(f"input_size must be >= 1 or None, got {self.input_size}.")
        for k in ("l2", "tv", "blur"):
            if getattr(self, k) < 0:
                raise InputError(f"{k} weight must be >= 0, got {getattr(self, k)}.")

    def transforms(self) -> Pipeline:
        """The per-step random transforms this recipe applies, in order."""
        ts: list[Transform] = []
        if self.pad:
            ts.append(Pad(self.pad, value=self.pad_value))
        if self.jitter:
            ts.append(Jitter(self.jitter // 2))
        if self.scales:
            ts.append(RandomScale(self.scales))
        if self.angles:
            ts.append(RandomRotate(self.angles))
        if self.jitter_after:
            ts.append(Jitter(self.jitter_after // 2))
        return Pipeline(ts)


@dataclass(frozen=True)
class KerasRecipe(Recipe):
    """The Keras-book pixel gradient ascent: normalized gradient, fixed step ``lr=10``, no transforms.

    Example:
        >>> KerasRecipe().transforms().fused_groups()
        []
    """

    name: str = "keras"
    parameterization: str = "pixel"
    decorrelate: bool = False
    sigmoid: bool = False
    optimizer: str = "normalized"
    lr: float = 10.0
    pad: int = 0
    jitter: int = 0
    scales: tuple[float, ...] = ()
    angles: tuple[float, ...] = ()
    jitter_after: int = 0
    display: str = "standardize"


@dataclass(frozen=True)
class LucidRecipe(Recipe):
    """Lucid/Lucent defaults: Fourier + decorrelation + sigmoid, Adam 0.05, pad/jitter/scale/rotate/jitter.

    Example:
        >>> len(LucidRecipe().transforms().fused_groups())   # one pad, then ONE fused resampling
        2
    """

    name: str = "lucid"


RECIPES: dict[str, type[Recipe]] = {"keras": KerasRecipe, "lucid": LucidRecipe}


def get_recipe(recipe: str | Recipe, **overrides: object) -> Recipe:
    """A recipe by name (``'keras'``, ``'lucid'``) or as given, with fields overridden.

    Example:
        >>> get_recipe(KerasRecipe(), lr=1.0).lr
        1.0
    """
    if isinstance(recipe, Recipe):
        base = recipe
    elif isinstance(recipe, str) and recipe in RECIPES:
        base = RECIPES[recipe]()
    else:
        raise InputError(f"recipe must be one of {', '.join(RECIPES)} or a Recipe, got {recipe!r}.")
    if overrides:
        names = {f.name for f in dataclasses.fields(base)}
        bad = [k for k in overrides if k not in names]
        if bad:
            raise InputError(f"unknown recipe field '{bad[0]}'; fields are {', '.join(sorted(names))}.")
        base = dataclasses.replace(base, **overrides)  # type: ignore[arg-type]
    return base
