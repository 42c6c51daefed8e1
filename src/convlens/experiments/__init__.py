"""Live experiments on bundled real data (sklearn digits): each a function returning a result
dataclass, deterministic for a given ``seed``, with a ``quick=True`` size for tests.

* ``vanishing-gradient`` — :func:`vanishing_gradient`: plain vs residual nets at depths 8/20/56,
  with and without BatchNorm; conv weight-gradient norms at init + brief training.
* ``pooling`` — :func:`pooling`: translation tolerance of max pooling and the size reduction table.
* ``depth-vs-resolution`` — :func:`depth_vs_resolution`: doubling channels when resolution halves
  vs fixed channels.

Example:
    >>> sorted(EXPERIMENTS)
    ['depth-vs-resolution', 'pooling', 'vanishing-gradient']
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from convlens.errors import InputError
from convlens.experiments.depth_resolution import DepthResolutionResult, NetSummary, depth_vs_resolution
from convlens.experiments.pooling import PoolingReduction, PoolingResult, pooling
from convlens.experiments.vanishing_gradient import VanishingGradientResult, VariantResult, vanishing_gradient

__all__ = [
    "EXPERIMENTS",
    "run_experiment",
    "vanishing_gradient",
    "VanishingGradientResult",
    "VariantResult",
    "pooling",
    "PoolingResult",
    "PoolingReduction",
    "depth_vs_resolution",
    "DepthResolutionResult",
    "NetSummary",
]

#: CLI name -> experiment function (each takes ``quick``, ``seed`` and ``device`` keywords)
EXPERIMENTS: dict[str, Callable[..., Any]] = {
    "vanishing-gradient": vanishing_gradient,
    "pooling": pooling,
    "depth-vs-resolution": depth_vs_resolution,
}


def run_experiment(name: str, *, quick: bool = False, seed: int = 0, device: str = "cpu") -> Any:
    """Run an experiment by its CLI name.

    Example:
        >>> run_experiment("pooling", quick=True).shifts
        [0, 1, 2, 3, 4]
    """
    if name not in EXPERIMENTS:
        raise InputError(f"unknown experiment '{name}'; choose one of {', '.join(sorted(EXPERIMENTS))}.")
    return EXPERIMENTS[name](quick=quick, seed=seed, device=device)
