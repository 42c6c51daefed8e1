"""User-facing errors.

Every error a user can cause is a :class:`ConvlensError` with one sentence that says what was
expected, what arrived and, where it helps, how to fix it. The CLI prints that sentence to stderr
and exits with status 2; library callers catch ``ConvlensError`` (or a subclass).

Example:
    >>> from convlens.errors import InputError
    >>> try:
    ...     raise InputError("stride must be >= 1, got 0.")
    ... except ConvlensError as e:
    ...     print(e)
    stride must be >= 1, got 0.
"""

from __future__ import annotations

__all__ = ["ConvlensError", "InputError", "ModelError", "LayerError", "DataError", "RandomWeightsWarning"]


class ConvlensError(Exception):
    """Base class of every error convlens raises on bad input or configuration."""


class InputError(ConvlensError, ValueError):
    """A bad argument, array, shape or image file."""


class ModelError(ConvlensError):
    """A model that cannot be found, built or loaded (unknown name, bad weights file)."""


class LayerError(ConvlensError, KeyError):
    """A layer specification that matches no layer, or a layer unusable for the request."""

    def __str__(self) -> str:  # KeyError would quote the message; keep it one plain sentence
        return str(self.args[0]) if self.args else ""


class DataError(ConvlensError):
    """A dataset that is empty, unreadable or unusable for training."""


class RandomWeightsWarning(UserWarning):
    """A model runs with random (untrained) weights, so its predictions, maps and filters mean nothing.

    :func:`convlens.models.load_model` warns with it; the CLI prints it once, loudly, on stderr.
    """
