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

Beyond Keras, in this order around the affine map: a **random resized crop** first (``crop=s``:
torchvision's ``RandomResizedCrop`` sampling -- area fraction ``U(s, 1)``, aspect ratio log-uniform
in [3/4, 4/3], resized back to the image size); after the flips, **colour jitter** as torchvision's
``ColorJitter`` (``brightness=b``: factor ``U(max(0, 1-b), 1+b)``, blended with black; ``contrast``:
with the mean grey; ``saturation``: with the grey image; applied in that order) and a **vertical
flip** (p = 0.5); last **cutout** (DeVries & Taylor 2017, "Improved Regularization of CNNs with
Cutout"): one square of side ``cutout * min(H, W)``, centred anywhere in the image (clipped at the
border), set to ``cval``.

There is ONE default pipeline, :data:`DEFAULT_AUGMENT` (:func:`default_augment` per dataset): the
``convlens augment`` preview and ``convlens train`` both take it from here, so the preview shows
what training does.

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

__all__ = [
    "Augment",
    "AugmentParams",
    "KerasAugment",
    "parse_augment_options",
    "sample_seed",
    "FILL_MODES",
    "DEFAULT_AUGMENT",
    "default_augment",
    "augment_for",
]

#: The augmentation ``convlens train`` applies when ``--augment`` is not given, and that ``convlens augment``
#: previews when ``--options`` is not given (Keras-book values: modest geometry, mirror images).
DEFAULT_AUGMENT = (
    "rotation=15,width_shift=0.1,height_shift=0.1,shear=10,zoom=0.1,horizontal_flip=true,fill_mode=nearest"
)


def default_augment(data: str) -> str:
    """The default augmentation options for a dataset (digits are never mirrored: a flipped 2 is no 2).

    Example:
        >>> "horizontal_flip=false" in default_augment("digits")
        True
    """
    if data == "digits":
        return DEFAULT_AUGMENT.replace("horizontal_flip=true", "horizontal_flip=false")
    return DEFAULT_AUGMENT


def augment_for(options: str | None, data: str = "lfw") -> Augment:
    """The augmentation a run uses: ``options`` parsed, the dataset's default when ``None``, and none
    at all for ``'none'``/``'off'``. Training and the preview both call this.

    Example:
        >>> augment_for(None, "digits").horizontal_flip, augment_for("none").is_identity
        (False, True)
    """
    if options is not None and options.strip().lower() in ("none", "off", ""):
        return Augment()
    return parse_augment_options(options if options is not None else default_augment(data))


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
    vflip: bool = False
    crop: tuple[int, int, int, int] | None = None  # (top, left, height, width) of the random resized crop
    brightness: float = 1.0  # colour-jitter factors (1 = unchanged)
    contrast: float = 1.0
    saturation: float = 1.0
    cutout: tuple[int, int, int, int] | None = None  # (top, left, height, width) of the erased square


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
        cval: fill value (0..255) for ``constant`` and for cutout.
        vertical_flip: flip top-bottom with probability 0.5.
        brightness, contrast, saturation: colour jitter strength (factor drawn from ``[max(0, 1-v), 1+v]``).
        crop: random resized crop keeping an area fraction drawn from ``[crop, 1]`` (0 = off).
        cutout: side of the erased square as a fraction of the shorter image side (0 = off).
    """

    rotation: float = 0.0
    width_shift: float = 0.0
    height_shift: float = 0.0
    shear: float = 0.0
    zoom: float = 0.0
    horizontal_flip: bool = False
    fill_mode: str = "nearest"
    cval: float = 0.0
    vertical_flip: bool = False
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    crop: float = 0.0
    cutout: float = 0.0

    def __post_init__(self) -> None:
        for name in ("brightness", "contrast", "saturation", "crop", "cutout"):
            v = float(getattr(self, name))
            if not np.isfinite(v) or v < 0 or (name in ("crop", "cutout") and v > 1):
                limit = "in [0, 1]" if name in ("crop", "cutout") else ">= 0"
                raise InputError(f"augmentation option {name} must be a finite number {limit}, got {v}.")
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
            self.rotation
            or self.width_shift
            or self.height_shift
            or self.shear
            or self.zoom
            or self.horizontal_flip
            or self.vertical_flip
            or self.brightness
            or self.contrast
            or self.saturation
            or self.crop
            or self.cutout
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

        # the options beyond Keras draw AFTER the six above, so Keras-only pipelines keep their old streams
        extra = not (self.vertical_flip or self.brightness or self.contrast or self.saturation)
        extra = extra and not (self.crop or self.cutout)
        v = [] if extra else torch.rand(8, generator=generator, dtype=torch.float64).tolist()

        def factor(x: float, r: float) -> float:  # torchvision ColorJitter: U(max(0, 1 - r), 1 + r)
            lo = max(0.0, 1.0 - r)
            return lo + x * (1.0 + r - lo)

        crop = self._crop_box(generator, h, w) if self.crop else None
        cut = None
        if self.cutout:
            side_h = side_w = max(1, round(self.cutout * min(h, w)))
            cy, cx = int(v[6] * h), int(v[7] * w)  # the centre lies anywhere; the square is clipped at the border
            top, left = max(0, cy - side_h // 2), max(0, cx - side_w // 2)
            cut = (top, left, min(h, cy - side_h // 2 + side_h) - top, min(w, cx - side_w // 2 + side_w) - left)
        return AugmentParams(
            angle=sym(u[0], self.rotation),
            translate=(sym(u[1], self.width_shift) * w, sym(u[2], self.height_shift) * h),
            shear=sym(u[3], self.shear),
            scale=1.0 + sym(u[4], self.zoom),
            flip=bool(self.horizontal_flip and u[5] < 0.5),
            vflip=bool(self.vertical_flip and v[0] < 0.5),
            crop=crop,
            brightness=factor(v[1], self.brightness) if self.brightness else 1.0,
            contrast=factor(v[2], self.contrast) if self.contrast else 1.0,
            saturation=factor(v[3], self.saturation) if self.saturation else 1.0,
            cutout=cut,
        )

    def _crop_box(self, generator: torch.Generator, h: int, w: int) -> tuple[int, int, int, int]:
        """torchvision's ``RandomResizedCrop.get_params`` with area scale ``(crop, 1)``, ratio ``(3/4, 4/3)``:
        up to 10 tries of a box that fits, else the whole image."""
        import math

        area = h * w
        log_r = (math.log(3 / 4), math.log(4 / 3))
        for _ in range(10):
            a, r, y, x = torch.rand(4, generator=generator, dtype=torch.float64).tolist()
            target = area * (self.crop + a * (1.0 - self.crop))
            ratio = math.exp(log_r[0] + r * (log_r[1] - log_r[0]))
            cw, ch = round(math.sqrt(target * ratio)), round(math.sqrt(target / ratio))
            if 0 < cw <= w and 0 < ch <= h:
                return int(y * (h - ch + 1)), int(x * (w - cw + 1)), ch, cw
        return 0, 0, h, w

    def apply(self, image: torch.Tensor, params: AugmentParams) -> torch.Tensor:
        """Apply one draw to a ``(C, H, W)`` (uint8 or float) image tensor; same dtype and shape out."""
        if image.ndim != 3:
            raise InputError(f"augment expects one (C, H, W) image, got shape {tuple(image.shape)}.")
        out = image
        if params.crop is not None:
            top, left, ch, cw = params.crop
            out = TF.resized_crop(
                out,
                top,
                left,
                ch,
                cw,
                list(out.shape[-2:]),
                interpolation=v2.InterpolationMode.BILINEAR,
                antialias=True,
            )
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
        if params.vflip:
            out = TF.vertical_flip(out)
        if out.shape[0] == 3 and (params.brightness != 1.0 or params.contrast != 1.0 or params.saturation != 1.0):
            out = TF.adjust_brightness(out, params.brightness)
            out = TF.adjust_contrast(out, params.contrast)
            out = TF.adjust_saturation(out, params.saturation)
        elif params.brightness != 1.0 or params.contrast != 1.0:  # grey or other channel counts: no saturation
            out = TF.adjust_brightness(out, params.brightness)
            if params.contrast != 1.0:
                mean = out.float().mean(dim=(-3, -2, -1), keepdim=True)
                blended = (params.contrast * out.float() + (1 - params.contrast) * mean).clamp(0, _bound(out))
                out = blended.to(out.dtype) if out.is_floating_point() else blended.round().to(out.dtype)
        if params.cutout is not None:
            top, left, ch, cw = params.cutout
            out = out.clone()
            out[:, top : top + ch, left : left + cw] = self.cval if not out.is_floating_point() else self.cval / 255.0
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


def _bound(t: torch.Tensor) -> float:
    return 1.0 if t.is_floating_point() else 255.0


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
    "vflip": "vertical_flip",
    "brightness_range": "brightness",
    "random_resized_crop": "crop",
    "erase": "cutout",
}

_BOOLS = ("horizontal_flip", "vertical_flip")


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
        if key in _BOOLS:
            if value.lower() not in ("1", "0", "true", "false", "yes", "no"):
                raise InputError(f"{key} must be true or false, got '{value}'.")
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
