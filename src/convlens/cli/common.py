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

__all__ = [
    "parse_size",
    "print_json",
    "to_jsonable",
    "console",
    "parse_int_list",
    "ensure_out_dir",
    "out_file",
    "prepare_out_file",
]


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


# Folders this run created, parents first: removed again (when left empty) if the command fails, so that a
# command stopped by bad data leaves no empty output folder behind (see ``cli.main``).
_CREATED_DIRS: list[Path] = []

#: image formats every ``--out FILE`` accepts (all written by matplotlib's savefig and by PIL)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".pdf", ".svg", ".tif", ".tiff", ".webp")


def _check_writable(folder: Path, *, what: str) -> None:
    """Raise an InputError unless ``folder`` exists as a writable folder or could be created as one.

    Nothing is created: the nearest existing ancestor is probed with a temporary file, which is
    removed again (``os.access`` says yes to root even on ``/proc``).
    """
    import tempfile

    anc = folder
    while not anc.exists():
        if anc.parent == anc:
            break
        anc = anc.parent
    if anc.exists() and not anc.is_dir():
        raise InputError(f"{what}: '{anc}' is a file, so '{folder}' cannot be a folder; choose another path.")
    try:
        with tempfile.TemporaryFile(dir=anc):
            pass
    except OSError as e:
        raise InputError(f"{what}: cannot write in '{anc}' ({e.strerror or e}); choose a writable folder.") from None


def ensure_out_dir(path: str | Path) -> Path:
    """Create an output folder (parents too) and return it; a file in the way is an InputError.

    Folders it creates are remembered: when the command then fails, the CLI removes the ones left
    empty.

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp()) / "a" / "b"
        >>> ensure_out_dir(d).is_dir(), remove_created_empty_dirs(), d.parent.exists()
        (True, None, False)
    """
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise InputError(f"--out '{p}' exists and is not a folder.")
    _check_writable(p, what=f"cannot create the --out folder '{p}'")
    missing = []
    q = p
    while not q.exists() and q.parent != q:
        missing.append(q)
        q = q.parent
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # read-only place, a file as a parent, no permission: one sentence, not a traceback
        raise InputError(
            f"cannot create the --out folder '{p}' ({e.strerror or e}); choose a writable folder."
        ) from None
    _CREATED_DIRS.extend(reversed(missing))
    return p


def remove_created_empty_dirs() -> None:
    """Remove the folders :func:`ensure_out_dir` created in this run that are still empty (deepest first)."""
    import contextlib

    for d in reversed(_CREATED_DIRS):
        with contextlib.suppress(OSError):  # not empty (the command wrote something worth keeping) or gone
            d.rmdir()
    _CREATED_DIRS.clear()


def forget_created_dirs() -> None:
    """The command succeeded: keep every folder it created."""
    _CREATED_DIRS.clear()


def out_file(
    path: str | Path, *, default_name: str, suffixes: Sequence[str] = IMAGE_SUFFIXES, name: str = "--out"
) -> Path:
    """Validate an output FILE before any work and return the path that will really be written.

    - ``DIR/`` (a trailing slash) or an existing folder: the file is ``DIR/default_name``;
    - no suffix: ``.png`` is added (as matplotlib would), and the returned path says so;
    - another suffix than ``suffixes`` (``x.txt``): an InputError;
    - a place that cannot be written (``/proc/x.png``, a file used as a folder): an InputError.

    Nothing is created; write with :func:`prepare_out_file` (which creates the parent folder).

    Example:
        >>> out_file("figs/", default_name="filters.png")
        PosixPath('figs/filters.png')
        >>> out_file("grid", default_name="filters.png")
        PosixPath('grid.png')
    """
    text = str(path)
    p = Path(path)
    if text.endswith(("/", "\\")) or p.is_dir():
        p = p / default_name
    elif not p.suffix:
        p = p.with_name(p.name + ".png")
    if p.suffix.lower() not in suffixes:
        raise InputError(
            f"{name} '{text}' must end in an image format ({', '.join(suffixes)}), got '{p.suffix}'; e.g. {name} {default_name}."
        )
    _check_writable(p.parent, what=f"{name} '{text}'")
    return p


def prepare_out_file(path: Path) -> Path:
    """Create the parent folder of a validated output file (remembered like :func:`ensure_out_dir`'s)."""
    if str(path.parent) not in ("", "."):
        ensure_out_dir(path.parent)
    return path


def check_choice(value: str, choices: Sequence[str], *, name: str) -> str:
    """Validate a string option against allowed values."""
    if value not in choices:
        raise InputError(f"{name} must be one of {', '.join(choices)}; got '{value}'.")
    return value
