"""Tiny data for the training tests: an ImageFolder of 2 easy classes (bright left vs bright right half)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

TINY_MODEL = "test_efficientnet"  # timm's 0.1 M-parameter EfficientNet (BatchNorm, stages, reset_classifier)


def make_folder(
    root: Path, n_per_class: int = 20, size: int = 24, classes: tuple[str, ...] = ("left", "right"), seed: int = 0
) -> Path:
    rng = np.random.default_rng(seed)
    for ci, c in enumerate(classes):
        d = root / c
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            img = rng.integers(0, 60, (size, size, 3)).astype(np.uint8)
            half = slice(0, size // 2) if ci % 2 == 0 else slice(size // 2, size)
            img[:, half] += 150
            Image.fromarray(img).save(d / f"{i:03d}.png")
    return root
