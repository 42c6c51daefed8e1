"""Process-wide run-time settings: how many CPU threads torch may use.

torch's default is one intra-op thread per physical core, whatever else the machine is doing. On a
shared or busy machine that oversubscribes the cores: threads wait on each other at every
synchronisation point, and a `convlens train` run measured 69.7 s instead of 11.8 s. convlens
therefore picks its own default, in this order:

1. ``--threads N`` on the command line (any command), or ``threads=N`` here;
2. the ``CONVLENS_THREADS`` environment variable;
3. ``OMP_NUM_THREADS`` when the user set it (torch honours it; convlens leaves it alone);
4. the *free* cores: the cores this process may run on (``os.sched_getaffinity``) minus the
   1-minute load average, rounded, at least 1 and at most 8 (torch's CPU kernels gain little
   beyond that on the small batches convlens runs).

Nothing here imports torch: commands that do not need it (``convlens shape``) stay fast. The
choice is written to ``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` before torch is imported (worker
processes inherit it) and applied with ``torch.set_num_threads`` if torch is already loaded.

Example:
    >>> resolve_threads(3, environ={})
    3
    >>> resolve_threads(None, environ={"CONVLENS_THREADS": "2"})
    2
    >>> resolve_threads(None, environ={}, cores=4, load=10.0)
    1
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

from convlens.errors import InputError

__all__ = ["resolve_threads", "free_cores", "apply_threads", "MAX_DEFAULT_THREADS"]

MAX_DEFAULT_THREADS = 8


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def free_cores(cores: int | None = None, load: float | None = None) -> int:
    """Cores not busy with other work: ``round(cores - load_1min)``, clipped to ``[1, min(cores, 8)]``.

    Example:
        >>> free_cores(cores=16, load=3.2), free_cores(cores=2, load=0.0), free_cores(cores=2, load=5.0)
        (8, 2, 1)
    """
    cores = _usable_cores() if cores is None else cores
    if load is None:
        try:
            load = os.getloadavg()[0]
        except OSError:  # pragma: no cover - no load average on this platform
            load = 0.0
    return max(1, min(cores, MAX_DEFAULT_THREADS, round(cores - load)))


def _parse(text: str, source: str) -> int:
    try:
        n = int(text.strip())
    except ValueError:
        n = 0
    if n < 1:
        raise InputError(f"{source} must be a positive whole number of threads, got '{text}'.")
    return n


def resolve_threads(
    threads: int | None,
    *,
    environ: Mapping[str, str] | None = None,
    cores: int | None = None,
    load: float | None = None,
) -> int:
    """The number of torch CPU threads to use: explicit, else ``CONVLENS_THREADS``, else
    ``OMP_NUM_THREADS``, else :func:`free_cores`.

    Raises:
        InputError: a value that is not a positive integer (naming where it came from).

    Example:
        >>> resolve_threads(None, environ={"OMP_NUM_THREADS": "4"})
        4
    """
    env = os.environ if environ is None else environ
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise InputError(f"--threads must be a positive whole number, got {threads!r}.")
        return threads
    if env.get("CONVLENS_THREADS", "").strip():
        return _parse(env["CONVLENS_THREADS"], "CONVLENS_THREADS")
    if env.get("OMP_NUM_THREADS", "").strip():
        return _parse(env["OMP_NUM_THREADS"], "OMP_NUM_THREADS")
    return free_cores(cores, load)


def apply_threads(n: int) -> int:
    """Make torch use ``n`` intra-op CPU threads in this process and the processes it starts.

    Sets ``OMP_NUM_THREADS`` and ``MKL_NUM_THREADS`` (read when torch is first imported, and by
    worker processes), and calls ``torch.set_num_threads(n)`` when torch is already imported.
    Returns ``n``.

    Example:
        >>> import os, torch
        >>> saved, n_before = dict(os.environ), torch.get_num_threads()
        >>> apply_threads(1), torch.get_num_threads(), os.environ["OMP_NUM_THREADS"]
        (1, 1, '1')
        >>> os.environ.clear(); os.environ.update(saved); torch.set_num_threads(n_before)
    """
    os.environ["OMP_NUM_THREADS"] = str(n)
    os.environ["MKL_NUM_THREADS"] = str(n)
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "set_num_threads"):
        torch.set_num_threads(n)
    return n
