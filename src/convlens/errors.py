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

import re

__all__ = [
    "ConvlensError",
    "InputError",
    "ModelError",
    "LayerError",
    "DataError",
    "RandomWeightsWarning",
    "MODEL_FAILURES",
    "first_line",
]


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


#: what a model's forward raises on an input it cannot take: torch ops (RuntimeError), Keras input specs
#: (ValueError), timm's fixed input sizes (AssertionError), index or type slips in a model's own forward.
#: Where convlens runs a model on an input it chose or was given, these become one InputError sentence.
MODEL_FAILURES: tuple[type[Exception], ...] = (RuntimeError, ValueError, IndexError, TypeError, AssertionError)


def first_line(e: BaseException) -> str:
    r"""The first line of ``e``'s message, or its type's name when it has none: what an error sentence quotes.

    Terminal colour codes are dropped, and Keras's wrapper line ("Exception encountered when calling
    Sequential.call().") gives way to the cause on the next line.

    Example:
        >>> first_line(AssertionError("Input height (48) doesn't match model (64).\nmore detail"))
        "Input height (48) doesn't match model (64)."
        >>> first_line(ValueError("Exception encountered when calling Sequential.call().\n\n\x1b[1mbad shape\x1b[0m"))
        'bad shape'
        >>> first_line(IndexError())
        'IndexError'
    """
    lines = [ln.strip() for ln in re.sub(r"\x1b\[[0-9;]*m", "", str(e)).splitlines() if ln.strip()]
    if len(lines) > 1 and lines[0].startswith("Exception encountered when calling"):
        lines = lines[1:]
    return lines[0] if lines else type(e).__name__
