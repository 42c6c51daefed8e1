"""Differentiable random transforms applied to the images at every ascent step (transformation robustness).

As in torchvision's transforms v2, each transform validates its arguments in ``__init__``, draws its
randomness separately (:meth:`draw`: one row of parameters per step, from ONE image's generator) and
applies a pure function of (image, parameters). Unlike torchvision, parameters are **per image**:
every image of the batch draws its own shift, scale and angle.

:class:`Jitter`, :class:`RandomScale` and :class:`RandomRotate` are affine; :class:`Pipeline` fuses
each run of consecutive affine transforms into ONE ``affine_grid`` + ``grid_sample`` (the product of
their sampling matrices), so pad + jitter + scale + rotate + jitter costs one pad and one bilinear
resampling per step, whatever the number of transforms. All parameters for all steps are drawn once
up front (on the CPU, one generator per image) and moved to the device in one copy.

Conventions (pixel coordinates centred on the image; matrices map an output pixel to where it is
sampled from in the input): jitter by (dx, dy) samples ``p - d``; scale s samples ``p / s`` (s > 1
enlarges); rotation by a degrees samples ``R(-a) p``. Outside the image, ``grid_sample`` repeats the
border (after :class:`Pad`, the constant pad value).

Example:
    >>> import torch
    >>> pipe = Pipeline([Pad(2), Jitter(1), RandomRotate([-5, 0, 5])])
    >>> gens = [torch.Generator().manual_seed(i) for i in range(3)]
    >>> plan = pipe.plan(n=3, size=8, steps=4, generators=gens)
    >>> tuple(plan(torch.rand(3, 3, 8, 8), step=0).shape)
    (3, 3, 12, 12)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from convlens.errors import InputError

__all__ = ["Transform", "Pad", "Jitter", "RandomScale", "RandomRotate", "Pipeline", "Plan"]


class Transform:
    """Base class. ``out_size(size)`` is the side length after the transform."""

    def out_size(self, size: int) -> int:
        return size


class Pad(Transform):
    """Pad every side by ``width`` pixels with ``value`` (mode 'constant') or by reflection.

    Example:
        >>> Pad(1)(torch.zeros(1, 3, 2, 2)).shape
        torch.Size([1, 3, 4, 4])
    """

    def __init__(self, width: int, mode: str = "constant", value: float = 0.5):
        if width < 0:
            raise InputError(f"pad width must be >= 0, got {width}.")
        if mode not in ("constant", "reflect", "replicate"):
            raise InputError(f"pad mode must be 'constant', 'reflect' or 'replicate', got {mode!r}.")
        self.width, self.mode, self.value = int(width), mode, float(value)

    def out_size(self, size: int) -> int:
        return size + 2 * self.width

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.width == 0:
            return x
        if self.mode == "constant":
            return F.pad(x, [self.width] * 4, mode="constant", value=self.value)
        return F.pad(x, [self.width] * 4, mode=self.mode)

    def __repr__(self) -> str:
        return f"Pad({self.width}, {self.mode!r}, {self.value})"


class AffineTransform(Transform):
    """A random affine map; subclasses define :meth:`draw` and :meth:`matrix`."""

    def draw(self, generator: torch.Generator, steps: int) -> torch.Tensor:  # pragma: no cover - abstract
        """(steps, k) parameters for one image."""
        raise NotImplementedError

    def matrix(self, params: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """(..., k) parameters -> (..., 3, 3) sampling matrices in centred pixel coordinates."""
        raise NotImplementedError


def _choice(values: torch.Tensor, generator: torch.Generator, steps: int) -> torch.Tensor:
    idx = torch.randint(len(values), (steps,), generator=generator)
    return values[idx]


class Jitter(AffineTransform):
    """Integer shift by (dx, dy), each uniform in ``{-d, ..., d}``.

    Example:
        >>> Jitter(2).draw(torch.Generator().manual_seed(0), 5).abs().max() <= 2
        tensor(True)
    """

    def __init__(self, d: int):
        if d < 0:
            raise InputError(f"jitter must be >= 0 pixels, got {d}.")
        self.d = int(d)

    def draw(self, generator: torch.Generator, steps: int) -> torch.Tensor:
        return torch.randint(-self.d, self.d + 1, (steps, 2), generator=generator).float()

    def matrix(self, params: torch.Tensor) -> torch.Tensor:
        m = torch.eye(3, dtype=params.dtype, device=params.device).expand(*params.shape[:-1], 3, 3).clone()
        m[..., 0, 2] = -params[..., 0]
        m[..., 1, 2] = -params[..., 1]
        return m

    def __repr__(self) -> str:
        return f"Jitter({self.d})"


class RandomScale(AffineTransform):
    """Zoom about the centre by a factor drawn uniformly from ``scales`` (the output keeps its size).

    Example:
        >>> RandomScale([0.9, 1.1]).draw(torch.Generator().manual_seed(0), 3).shape
        torch.Size([3, 1])
    """

    def __init__(self, scales: Sequence[float]):
        vals = [float(s) for s in scales]
        if not vals or any(not (s > 0) for s in vals):
            raise InputError(f"scales must be a non-empty list of positive numbers, got {list(scales)}.")
        self.scales = torch.tensor(vals)

    def draw(self, generator: torch.Generator, steps: int) -> torch.Tensor:
        return _choice(self.scales, generator, steps)[:, None]

    def matrix(self, params: torch.Tensor) -> torch.Tensor:
        inv = 1.0 / params[..., 0]
        m = torch.zeros(*params.shape[:-1], 3, 3, dtype=params.dtype, device=params.device)
        m[..., 0, 0] = inv
        m[..., 1, 1] = inv
        m[..., 2, 2] = 1.0
        return m

    def __repr__(self) -> str:
        return f"RandomScale({[round(float(s), 4) for s in self.scales]})"


class RandomRotate(AffineTransform):
    """Rotate about the centre by an angle (degrees) drawn uniformly from ``angles``.

    Example:
        >>> RandomRotate([90]).matrix(torch.zeros(1, 1) + 90)[0].round().abs().tolist()
        [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]
    """

    def __init__(self, angles: Sequence[float]):
        vals = [float(a) for a in angles]
        if not vals or any(not math.isfinite(a) for a in vals):
            raise InputError(f"angles must be a non-empty list of finite degrees, got {list(angles)}.")
        self.angles = torch.tensor(vals)

    def draw(self, generator: torch.Generator, steps: int) -> torch.Tensor:
        return _choice(self.angles, generator, steps)[:, None]

    def matrix(self, params: torch.Tensor) -> torch.Tensor:
        a = torch.deg2rad(params[..., 0])
        c, s = torch.cos(a), torch.sin(a)
        m = torch.zeros(*params.shape[:-1], 3, 3, dtype=params.dtype, device=params.device)
        # sample from R(-a) p: [[c, s], [-s, c]]
        m[..., 0, 0], m[..., 0, 1] = c, s
        m[..., 1, 0], m[..., 1, 1] = -s, c
        m[..., 2, 2] = 1.0
        return m

    def __repr__(self) -> str:
        return f"RandomRotate({[round(float(a), 3) for a in self.angles]})"


class Plan:
    """A pipeline with all its random parameters drawn: ``plan(x, step)`` applies step ``step``'s transforms."""

    def __init__(self, ops: list[Callable[[torch.Tensor, int], torch.Tensor]], out_size: int):
        self.ops = ops
        self.out_size = out_size

    def __call__(self, x: torch.Tensor, step: int) -> torch.Tensor:
        for op in self.ops:
            x = op(x, step)
        return x


class Pipeline:
    """An ordered list of transforms, with consecutive affine ones fused into one resampling.

    Example:
        >>> Pipeline([Pad(12), Jitter(4), RandomScale([1.0]), Jitter(2)]).fused_groups()
        ["Pad(12, 'constant', 0.5)", 'affine[Jitter(4), RandomScale([1.0]), Jitter(2)]']
    """

    def __init__(self, transforms: Sequence[Transform] = ()):
        for t in transforms:
            if not isinstance(t, Transform):
                raise InputError(
                    f"transforms must be convlens.featvis.transforms.Transform objects, got {type(t).__name__}."
                )
        self.transforms = list(transforms)

    def _groups(self) -> list[Transform | list[AffineTransform]]:
        groups: list[Transform | list[AffineTransform]] = []
        for t in self.transforms:
            if isinstance(t, AffineTransform):
                if groups and isinstance(groups[-1], list):
                    groups[-1].append(t)
                else:
                    groups.append([t])
            else:
                groups.append(t)
        return groups

    def fused_groups(self) -> list[str]:
        """Human-readable list of the operations one step runs."""
        return [f"affine[{', '.join(map(repr, g))}]" if isinstance(g, list) else repr(g) for g in self._groups()]

    def plan(
        self,
        n: int,
        size: int,
        steps: int,
        generators: Sequence[torch.Generator],
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> Plan:
        """Draw every image's parameters for every step (image i only from ``generators[i]``)."""
        if len(generators) != n:
            raise InputError(f"need one generator per image: {n} images, got {len(generators)} generators.")
        ops: list[Callable[[torch.Tensor, int], torch.Tensor]] = []
        cur = size
        for g in self._groups():
            if isinstance(g, list):
                # sampling matrix of "apply t1 then t2 then ...": B1 @ B2 @ ... (see module docstring)
                total = torch.eye(3).expand(steps, n, 3, 3)
                for t in g:
                    params = torch.stack([t.draw(gen, steps) for gen in generators], dim=1)  # (steps, N, k)
                    total = total @ t.matrix(params)
                # centred pixel coords -> normalized coords (align_corners=False): u = p / (S / 2)
                half = cur / 2.0
                d = torch.diag(torch.tensor([half, half, 1.0]))
                d_inv = torch.diag(torch.tensor([1.0 / half, 1.0 / half, 1.0]))
                theta = (d_inv @ total @ d)[..., :2, :].to(device=device, dtype=dtype)  # (steps, N, 2, 3)
                side = cur

                def affine(x: torch.Tensor, step: int, theta: torch.Tensor = theta, side: int = side) -> torch.Tensor:
                    grid = F.affine_grid(theta[step], [x.shape[0], x.shape[1], side, side], align_corners=False)
                    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

                ops.append(affine)
            else:
                t = g
                ops.append(lambda x, step, t=t: t(x))
                cur = t.out_size(cur)
        return Plan(ops, cur)
