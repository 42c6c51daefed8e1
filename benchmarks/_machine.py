"""What every benchmark records about the machine it ran on, measured rather than claimed.

Import this module before torch: it sets ``OMP_WAIT_POLICY=PASSIVE`` (unless already set), so idle
OpenMP threads sleep instead of spinning on a machine shared with other jobs. :func:`machine` returns
the load averages at the end of the run (how busy the cores were: a 1-minute load above the
benchmark's own thread count means other jobs competed), the core count and the versions. No script
writes a hand-typed note such as "shared machine": the load average says how shared it was.

Example:
    >>> info = machine()
    >>> sorted(k for k in info if k.startswith("load_average"))
    ['load_average_15min', 'load_average_1min', 'load_average_5min']
"""

from __future__ import annotations

import os
import platform
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def machine() -> dict[str, Any]:
    """Load averages (1, 5, 15 min), cores, OMP wait policy, platform, python and torch versions."""
    one, five, fifteen = os.getloadavg()
    info: dict[str, Any] = {
        "load_average_1min": round(one, 2),
        "load_average_5min": round(five, 2),
        "load_average_15min": round(fifteen, 2),
        "cpu_count": os.cpu_count(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "platform": f"{platform.processor() or platform.machine()} {platform.system()}",
        "python": platform.python_version(),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    except ImportError:  # pragma: no cover - every benchmark here has torch
        pass
    return info
