"""Data augmentation, Keras ``ImageDataGenerator`` style, on torchvision transforms v2 -- random PER IMAGE.

Each sample draws its own parameters (angle, shift, shear, zoom, flip) from its own
``torch.Generator``; :func:`sample_seed` derives that generator's seed from ``(seed, epoch, index)``,
so an epoch is reproducible, two images of one batch get different parameters, and every epoch
sees new variants. (torchvision's ``RandomAffine`` on a batched tensor draws ONE angle for the
whole batch, and from the global RNG; here the kernels are the same -- ``v2.functional.affine``,
``horizontal_flip`` -- but the draw is ours.)

The geometric model is one affine map per image about its centre:

    x' = T(tx, ty) . R(angle) . Sh(shear) . S(zoom) . x      (then an optional left-right flip)

with ``angle ~ U(-rotation, rotation)``, ``tx ~ U(-width_shift, width_shift) * W``,
``ty ~ U(-height_shift, height_shift) * H``, ``shear ~ U(-shear, shear)`` degrees,
``zoom ~ U(1 - zoom, 1 + zoom)``, ``flip ~ Bernoulli(0.5)``. Pixels that come from outside the
image are filled by ``fill_mode``: ``constant`` (``cval``), ``nearest`` (edge), ``reflect`` or
``wrap`` -- done by padding the image with that mode, transforming, and cropping the centre back.

Example:
    >>> import torch
    >>> aug = Augment(rotation=30, zoom=0.2, horizontal_flip=True)
    >>> img = torch.zeros(3, 16, 16, dtype=torch.uint8)
    >>> aug.apply(img, aug.sample(torch.Generator().manual_seed(0))).shape
    torch.Size([3, 16, 16])
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from convlens.errors import InputError

__all__ = ["Augment", "AugmentParams", "KerasAugment", "parse_augment_options", "sample_seed", "FILL_MODES"]

FILL_MODES = ("constant", "nearest", "reflect", "wrap")
_PAD_MODE = {"nearest": "edge", "reflect": "reflect", "constant": "constant"}


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed for sample ``index`` in ``epoch`` of a run seeded with ``seed`` (SplitMix-style hash).

    Independent of data order, batch and process (rank), so DDP and single-process runs augment
    the same sample the same way.

    Example:
        >>> sample_seed(0, 0, 1) != sample_seed(0, 0, 2) != sample_seed(0, 1, 1)
        True
    """
    ss = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(epoch) & 0xFFFFFFFF, int(index) & 0xFFFFFFFF, 0xC0])
    return int(ss.generate_state(1, dtype=np.uint64)[0]) >> 1


@dataclass(frozen=True)
class AugmentParams:
    """The random draw for ONE image (degrees, pixels, scale factor, flip)."""

    angle: float
    translate: tuple[float, float]  # (tx, ty) in pixels
    shear: float
    scale: float
    flip: bool


@dataclass(frozen=True)
class Augment:
    """Keras ``ImageDataGenerator`` options (same names, same meaning).

    Attributes:
        rotation: max rotation in degrees (``rotation_range``).
        width_shift, height_shift: max shift as a fraction of width / height.
        shear: max shear angle in degrees (``shear_range``).
        zoom: zoom range: scale drawn from ``[1 - zoom, 1 + zoom]`` (``zoom_range``).
        horizontal_flip: flip left-right with probability 0.5.
        fill_mode: ``constant``, ``nearest``, ``reflect`` or ``wrap``.
        cval: fill value (0..255) for ``constant``.
    """

    rotation: float = 0.0
    width_shift: float = 0.0
    height_shift: float = 0.0
    shear: float = 0.0
    zoom: float = 0.0
    horizontal_flip: bool = False
    fill_mode: str = "nearest"
    cval: float = 0.0

    def __post_init__(self) -> None:
        for name in ("rotation", "width_shift", "height_shift", "shear", "zoom"):
            v = float(getattr(self, name))
            if not np.isfinite(v) or v < 0:
                raise InputError(f"augmentation option {name} must be a finite number >= 0, got {v}.")
        if self.rotation > 180 or self.shear >= 90:
            raise InputError(
                f"rotation must be <= 180 and shear < 90 degrees; got rotation={self.rotation}, shear={self.shear}."
            )
        if self.width_shift > 1 or self.height_shift > 1 or self.zoom >= 1:
            raise InputError("width_shift and height_shift must be <= 1 and zoom < 1 (fractions).")
        if self.fill_mode not in FILL_MODES:
            raise InputError(f"fill_mode must be one of {', '.join(FILL_MODES)}; got '{self.fill_mode}'.")
        if not 0 <= self.cval <= 255:
            raise InputError(f"cval must be in 0..255, got {self.cval}.")

    @property
    def is_identity(self) -> bool:
        """True when no option is active (the transform returns its input)."""
        return not (
            self.rotation or self.width_shift or self.height_shift or self.shear or self.zoom or self.horizontal_flip
        )

    def sample(self, generator: torch.Generator, size: tuple[int, int] = (1, 1)) -> AugmentParams:
        """Draw one image's parameters from ``generator`` (``size`` = (H, W) turns shift fractions into pixels).

        Example:
            >>> Augment(rotation=10).sample(torch.Generator().manual_seed(0)).flip
            False
        """
        u = torch.rand(6, generator=generator, dtype=torch.float64).tolist()  # always 6 draws: stable streams
        h, w = size

        def sym(x: float, r: float) -> float:
            return (2.0 * x - 1.0) * r

        return AugmentParams(
            angle=sym(u[0], self.rotation),
            translate=(sym(u[1], self.width_shift) * w, sym(u[2], self.height_shift) * h),
            shear=sym(u[3], self.shear),
            scale=1.0 + sym(u[4], self.zoom),
            flip=bool(self.horizontal_flip and u[5] < 0.5),
        )

    def apply(self, image: torch.Tensor, params: AugmentParams) -> torch.Tensor:
        """Apply one draw to a ``(C, H, W)`` (uint8 or float) image tensor; same dtype and shape out."""
        if image.ndim != 3:
            raise InputError(f"augment expects one (C, H, W) image, got shape {tuple(image.shape)}.")
        out = image
        geometric = params.angle or params.translate != (0.0, 0.0) or params.shear or params.scale != 1.0
        if geometric:
            _, h, w = out.shape
            if self.fill_mode == "constant":
                out = TF.affine(
                    out,
                    angle=params.angle,
                    translate=list(params.translate),
                    scale=params.scale,
                    shear=[params.shear, 0.0],
                    interpolation=v2.InterpolationMode.BILINEAR,
                    fill=[float(self.cval)] * out.shape[0],
                )
            else:
                ph, pw = _border(params, h, w)  # exactly the border this draw samples from, +2 px
                if self.fill_mode in ("reflect", "wrap"):  # torch's reflect/circular pads must be < the image side
                    ph, pw = min(ph, h - 1), min(pw, w - 1)
                if self.fill_mode == "wrap":
                    f = out.float().unsqueeze(0)
                    padded = torch.nn.functional.pad(f, (pw, pw, ph, ph), mode="circular")[0].to(out.dtype)
                else:
                    padded = TF.pad(out, [pw, ph, pw, ph], padding_mode=_PAD_MODE[self.fill_mode])
                moved = TF.affine(
                    padded,
                    angle=params.angle,
                    translate=list(params.translate),
                    scale=params.scale,
                    shear=[params.shear, 0.0],
                    interpolation=v2.InterpolationMode.BILINEAR,
                    fill=None,
                )
                out = moved[:, ph : ph + h, pw : pw + w]
        if params.flip:
            out = TF.horizontal_flip(out)
        return out.contiguous()

    def __call__(self, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Draw parameters from ``generator`` and apply them to one ``(C, H, W)`` image.

        Example:
            >>> a = Augment(horizontal_flip=True)
            >>> a(torch.arange(4, dtype=torch.uint8).view(1, 2, 2), torch.Generator().manual_seed(3)).shape
            torch.Size([1, 2, 2])
        """
        if self.is_identity:
            return image
        return self.apply(image, self.sample(generator, tuple(image.shape[-2:])))

    def as_transform(self, generator: torch.Generator | None = None) -> KerasAugment:
        """This augmentation as a torchvision ``v2.Transform`` (composable with ``v2.Compose``).

        Example:
            >>> t = Augment(rotation=5).as_transform(torch.Generator().manual_seed(0))
            >>> t(torch.zeros(3, 8, 8)).shape
            torch.Size([3, 8, 8])
        """
        return KerasAugment(self, generator)

    def to_dict(self) -> dict[str, Any]:
        """The options as a plain dict (for JSON)."""
        return dataclasses.asdict(self)


def _border(params: AugmentParams, h: int, w: int) -> tuple[int, int]:
    """Pixels of padding needed so that every output pixel samples inside the padded image."""
    import math

    from torchvision.transforms.functional import _get_inverse_affine_matrix

    m = _get_inverse_affine_matrix([0.0, 0.0], params.angle, list(params.translate), params.scale, [params.shear, 0.0])
    over_x = over_y = 0.0
    for cx in (-w / 2, w / 2):
        for cy in (-h / 2, h / 2):
            x = m[0] * cx + m[1] * cy + m[2]
            y = m[3] * cx + m[4] * cy + m[5]
            over_x = max(over_x, abs(x) - w / 2)
            over_y = max(over_y, abs(y) - h / 2)
    return min(4 * h, math.ceil(over_y) + 2), min(4 * w, math.ceil(over_x) + 2)


class KerasAugment(v2.Transform):
    """``v2.Transform`` wrapper of :class:`Augment`: ``make_params`` draws from its own generator (or torch's
    global one when ``None``), ``transform`` applies the kernels. One call = one image = one draw."""

    def __init__(self, augment: Augment, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.augment = augment
        self.generator = generator

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        h, w = v2.query_size(flat_inputs)
        gen = self.generator if self.generator is not None else torch.default_generator
        return {"params": self.augment.sample(gen, (h, w))}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if isinstance(inpt, torch.Tensor) and inpt.ndim == 3:
            return self.augment.apply(inpt, params["params"])
        return inpt


_ALIASES = {
    "rotation_range": "rotation",
    "rotate": "rotation",
    "width_shift_range": "width_shift",
    "height_shift_range": "height_shift",
    "shift": "shift",
    "shear_range": "shear",
    "zoom_range": "zoom",
    "flip": "horizontal_flip",
    "hflip": "horizontal_flip",
}


def parse_augment_options(text: str | None) -> Augment:
    """Parse ``'rotation=30,zoom=0.2,horizontal_flip=true,fill_mode=reflect'`` into an :class:`Augment`.

    Keras names (``rotation_range``, ``zoom_range``...) are accepted too; ``shift=0.1`` sets both shifts.

    Example:
        >>> parse_augment_options("rotation=30,shift=0.1,flip=1").width_shift
        0.1
    """
    if text is None or not text.strip():
        return Augment()
    fields = {f.name: f for f in dataclasses.fields(Augment)}
    kw: dict[str, Any] = {}
    for part in (p.strip() for p in text.split(",") if p.strip()):
        if "=" not in part:
            raise InputError(f"augmentation option '{part}' must look like name=value (e.g. rotation=30).")
        key, _, value = (s.strip() for s in part.partition("="))
        key = _ALIASES.get(key, key)
        if key == "shift":
            kw["width_shift"] = kw["height_shift"] = _num(key, value)
            continue
        if key not in fields:
            raise InputError(f"unknown augmentation option '{key}'; use {', '.join(sorted(fields))} (or shift).")
        if key == "horizontal_flip":
            if value.lower() not in ("1", "0", "true", "false", "yes", "no"):
                raise InputError(f"horizontal_flip must be true or false, got '{value}'.")
            kw[key] = value.lower() in ("1", "true", "yes")
        elif key == "fill_mode":
            kw[key] = value
        else:
            kw[key] = _num(key, value)
    return Augment(**kw)


def _num(key: str, value: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise InputError(f"augmentation option {key} needs a number, got '{value}'.") from None
