"""Helpers shared by the CLI commands: size parsing, JSON/table output, model options.

Example:
    >>> parse_size("128x128x32")
    (128, 128, 32)
    >>> parse_size("32x128x128", channels_first=True)
    (128, 128, 32)
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from convlens.arith.query import parse_size  # re-exported: one parser for the course's HxWxC notation
from convlens.errors import InputError
from convlens.serialize import to_jsonable  # re-exported: the one serializer lives below every front end

__all__ = ["parse_size", "print_json", "to_jsonable", "console", "parse_int_list", "ensure_out_dir"]


def parse_int_list(text: str, *, name: str) -> list[int]:
    """Parse ``0-15``, ``1,3,7`` or ``0-3,8`` into a list of ints.

    Example:
        >>> parse_int_list("0-2,5", name="--channels")
        [0, 1, 2, 5]
    """
    import re

    out: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if m is None or (m.group(2) is not None and int(m.group(2)) < int(m.group(1))):
            raise InputError(f"{name} must be non-negative integers or ranges like '0-15' or '1,3,7', got '{text}'.")
        lo = int(m.group(1))
        out.extend(range(lo, int(m.group(2) or lo) + 1))
    if not out:
        raise InputError(f"{name} is empty.")
    return out


def print_json(obj: Any) -> None:
    """Write ``obj`` as JSON to stdout (the only thing ``--json`` writes there)."""
    sys.stdout.write(json.dumps(to_jsonable(obj), indent=2) + "\n")
    sys.stdout.flush()


def console(stderr: bool = False):  # -> rich.console.Console
    """A rich console; colour only when the stream is a terminal."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    return Console(
        file=stream,
        highlight=False,
        no_color=not stream.isatty(),
        soft_wrap=False,
        width=None if stream.isatty() else 120,
    )


def ensure_out_dir(path: str | Path) -> Path:
    """Create an output folder (parents too) and return it; a file in the way is an InputError."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise InputError(f"--out '{p}' exists and is not a folder.")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # read-only place, a file as a parent, no permission: one sentence, not a traceback
        raise InputError(
            f"cannot create the --out folder '{p}' ({e.strerror or e}); choose a writable folder."
        ) from None
    return p


def check_choice(value: str, choices: Sequence[str], *, name: str) -> str:
    """Validate a string option against allowed values."""
    if value not in choices:
        raise InputError(f"{name} must be one of {', '.join(choices)}; got '{value}'.")
    return value
