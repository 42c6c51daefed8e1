"""Reading class scores from a model's output: the one rule every model-facing function uses.

Models return their class scores in many shapes: a plain (N, classes) tensor; a tuple whose first
2-D tensor is the logits (``(logits, features)``, torchvision's ``GoogLeNetOutputs`` /
``InceptionOutputs`` with auxiliary heads); a dict with a ``'logits'`` entry (or a single 2-D tensor);
or an object with a ``.logits`` attribute (Hugging Face ``ImageClassifierOutput`` and similar
``ModelOutput`` classes). :func:`logits` finds the (N, classes) tensor in each of these, or says in
one sentence what came instead.

Example:
    >>> import torch
    >>> logits({"logits": torch.zeros(2, 5), "features": torch.zeros(2, 8, 3, 3)}).shape
    torch.Size([2, 5])
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, overload

import torch

from convlens.errors import InputError

__all__ = ["logits"]


def _find(output: Any) -> torch.Tensor | None:
    if isinstance(output, torch.Tensor):
        return output if output.ndim == 2 else None
    if isinstance(output, Mapping):  # dicts and Hugging Face ModelOutput (an OrderedDict)
        cand = output.get("logits")
        if isinstance(cand, torch.Tensor) and cand.ndim == 2:
            return cand
        two_d = [o for o in output.values() if isinstance(o, torch.Tensor) and o.ndim == 2]
        return two_d[0] if len(two_d) == 1 else None
    if isinstance(output, (tuple, list)):  # (logits, aux...) and torchvision's named tuples
        return next((o for o in output if isinstance(o, torch.Tensor) and o.ndim == 2), None)
    cand = getattr(output, "logits", None)  # objects with a .logits attribute
    return cand if isinstance(cand, torch.Tensor) and cand.ndim == 2 else None


def _describe(output: Any) -> str:
    if isinstance(output, torch.Tensor):
        return f"shape {tuple(output.shape)}"
    if isinstance(output, Mapping):
        return f"a dict with keys {', '.join(repr(k) for k in list(output)[:6])}"
    return f"a {type(output).__name__}"


@overload
def logits(output: Any, *, required: Literal[True] = ...) -> torch.Tensor: ...
@overload
def logits(output: Any, *, required: Literal[False]) -> torch.Tensor | None: ...
def logits(output: Any, *, required: bool = True) -> torch.Tensor | None:
    """The (N, classes) class scores in a model output (module docstring for the accepted forms).

    Raises :class:`~convlens.errors.InputError` naming what the model returned when there are none;
    with ``required=False`` returns ``None`` instead.

    Example:
        >>> import torch
        >>> logits((torch.zeros(2, 5), torch.zeros(2, 8, 3, 3))).shape
        torch.Size([2, 5])
        >>> logits(torch.zeros(2, 8, 3, 3), required=False) is None
        True
    """
    found = _find(output)
    if found is None and required:
        raise InputError(
            f"the model's output is not a (N, classes) tensor of logits (got {_describe(output)}); a classifier returns "
            "one, a tuple whose first 2-D tensor is the logits, a dict with 'logits', or an object with .logits."
        )
    return found
