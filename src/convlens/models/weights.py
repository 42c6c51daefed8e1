"""Safe weight files: ``.safetensors`` (no code at all) or ``.pt``/``.pth`` loaded with ``weights_only=True``.

A pickle that needs code execution to load is refused: convlens never runs code from a weights file.

Example:
    >>> import torch, tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "w.pt")
    >>> torch.save({"a": torch.ones(2)}, p)
    >>> read_state_dict(p)["a"].tolist()
    [1.0, 1.0]
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import torch

from convlens.errors import ModelError

__all__ = ["read_state_dict"]

_NESTED_KEYS = ("state_dict", "model_state_dict", "model", "weights", "params")


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a state dict from a local ``.safetensors``, ``.pt``, ``.pth`` or ``.bin`` file, on CPU.

    Checkpoints that nest the weights under ``state_dict``/``model`` are unwrapped; a
    ``module.`` prefix (from DataParallel/DDP) is stripped.

    Raises:
        ModelError: missing file, unknown extension, unsafe pickle, or no tensors inside.
    """
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"weights file '{p}' does not exist.")
    suffix = p.suffix.lower()
    try:
        if suffix == ".safetensors":
            from safetensors.torch import load_file

            sd: object = load_file(str(p), device="cpu")
        elif suffix in (".pt", ".pth", ".bin", ".ckpt"):
            sd = torch.load(p, map_location="cpu", weights_only=True)
        else:
            raise ModelError(f"weights file '{p}' must end in .safetensors, .pt, .pth, .bin or .ckpt.")
    except ModelError:
        raise
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "unsafe pickle"
        raise ModelError(
            f"weights file '{p}' needs code execution to load and was refused (weights_only=True): {first}"
        ) from None
    except Exception as e:  # safetensors/zip errors on truncated or corrupt files
        raise ModelError(f"weights file '{p}' is corrupt or not a weights file ({type(e).__name__}: {e}).") from None
    if isinstance(sd, dict):
        for key in _NESTED_KEYS:
            if key in sd and isinstance(sd[key], dict):
                sd = sd[key]
                break
    if not isinstance(sd, dict) or not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ModelError(f"weights file '{p}' holds no state dict of tensors.")
    if all(k.startswith("module.") for k in sd):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    return dict(sd)
