"""Checkpoints: safetensors tensors + a JSON state, written atomically (temp file + ``os.replace``).

Layout in the run folder::

    checkpoint-0003.safetensors   model weights ("model/<name>") and optimizer tensors ("optim/<pid>/<key>")
    checkpoint.json               epoch, stage, config, optimizer param groups, scheduler, RNG states,
                                  history, and the name of the tensor file it belongs to

The tensor file of epoch ``e`` is written first under a new name, then ``checkpoint.json`` is
atomically replaced to point at it, then older tensor files are removed. A process killed at any
instant leaves a consistent pair (the previous or the new one). No pickle is involved.

Example:
    >>> import tempfile, torch
    >>> d = tempfile.mkdtemp()
    >>> save_checkpoint(d, {"w": torch.ones(2)}, {}, {"epoch": 1})
    >>> load_checkpoint(d)[2]["epoch"]
    1
"""

from __future__ import annotations

import base64
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from convlens.errors import DataError

__all__ = [
    "atomic_write_bytes",
    "atomic_write_json",
    "save_checkpoint",
    "load_checkpoint",
    "has_checkpoint",
    "split_optimizer_state",
    "merge_optimizer_state",
    "rng_state",
    "set_rng_state",
    "save_weights",
]

STATE_FILE = "checkpoint.json"


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to a temp file in the same folder, fsync, then ``os.replace`` it onto ``path``."""
    p = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """JSON version of :func:`atomic_write_bytes` (indented, trailing newline)."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


def _tensors_bytes(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> bytes:
    from safetensors.torch import save

    # clone: safetensors refuses shared storage (views, tied weights)
    return save({k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}, metadata=metadata)


def save_weights(
    path: str | os.PathLike[str], state_dict: dict[str, torch.Tensor], metadata: dict[str, str] | None = None
) -> None:
    """Atomically write a state dict as ``.safetensors``."""
    atomic_write_bytes(path, _tensors_bytes(state_dict, metadata))


def split_optimizer_state(sd: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``optimizer.state_dict()`` -> (tensors ``'<pid>/<key>'``, JSON-able rest).

    Example:
        >>> opt = torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=0.1, momentum=0.9)
        >>> t, rest = split_optimizer_state(opt.state_dict()); rest["param_groups"][0]["lr"]
        0.1
    """
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, st in sd["state"].items():
        scalars[str(pid)] = {}
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"{pid}/{k}"] = v
            else:
                scalars[str(pid)][k] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def merge_optimizer_state(tensors: dict[str, torch.Tensor], rest: dict[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`split_optimizer_state`."""
    state: dict[int, dict[str, Any]] = {int(pid): dict(v) for pid, v in rest["scalars"].items()}
    for key, v in tensors.items():
        pid, _, k = key.partition("/")
        state.setdefault(int(pid), {})[k] = v
    return {"state": state, "param_groups": rest["param_groups"]}


def rng_state() -> dict[str, Any]:
    """The global torch RNG states (CPU and CUDA) as base64 strings (dropout draws from them)."""
    out: dict[str, Any] = {"torch": base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = [base64.b64encode(s.numpy().tobytes()).decode() for s in torch.cuda.get_rng_state_all()]
    return out


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` saved."""
    raw = base64.b64decode(state["torch"])
    torch.set_rng_state(torch.frombuffer(bytearray(raw), dtype=torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        cuda = [torch.frombuffer(bytearray(base64.b64decode(s)), dtype=torch.uint8) for s in state["cuda"]]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)


def save_checkpoint(
    run_dir: str | os.PathLike[str],
    model_state: dict[str, torch.Tensor],
    optim_tensors: dict[str, torch.Tensor],
    state: dict[str, Any],
) -> None:
    """Write tensors, then atomically point ``checkpoint.json`` at them, then remove older tensor files."""
    d = Path(run_dir)
    d.mkdir(parents=True, exist_ok=True)
    name = f"checkpoint-{int(state.get('epoch', 0)):04d}.safetensors"
    tensors = {f"model/{k}": v for k, v in model_state.items()}
    tensors.update({f"optim/{k}": v for k, v in optim_tensors.items()})
    atomic_write_bytes(d / name, _tensors_bytes(tensors))
    atomic_write_json(d / STATE_FILE, dict(state, tensors=name))
    for old in d.glob("checkpoint-*.safetensors"):
        if old.name != name:
            old.unlink(missing_ok=True)


def has_checkpoint(run_dir: str | os.PathLike[str]) -> bool:
    """True when ``run_dir`` holds a checkpoint to resume from."""
    return (Path(run_dir) / STATE_FILE).is_file()


def load_checkpoint(
    run_dir: str | os.PathLike[str],
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, Any]]:
    """Read ``(model_state, optimizer_tensors, state)``; a missing or damaged checkpoint is a DataError."""
    from safetensors.torch import load_file

    d = Path(run_dir)
    try:
        state = json.loads((d / STATE_FILE).read_text())
        flat = load_file(str(d / state["tensors"]), device="cpu")
    except FileNotFoundError:
        raise DataError(f"'{d}' holds no checkpoint to resume from (no {STATE_FILE} or its tensor file).") from None
    except Exception as e:  # OSError, JSON errors, KeyError, SafetensorError on a damaged file
        raise DataError(f"the checkpoint in '{d}' is damaged ({type(e).__name__}: {e}); start a new run.") from None
    model = {k[len("model/") :]: v for k, v in flat.items() if k.startswith("model/")}
    optim = {k[len("optim/") :]: v for k, v in flat.items() if k.startswith("optim/")}
    return model, optim, state
