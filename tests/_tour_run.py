"""One ``convlens tour --quick`` per test session, shared by test_tour.py and test_browser.py.

The CLI runs in a subprocess (the real command, its exit status and stderr progress), writing to
``out/test-report/`` (git-ignored; kept as a CI artifact). ``quick_tour()`` memoizes the run, so
whichever test module asks first pays for it and the other reuses it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "out"
REPORT = OUT / "test-report"


@dataclass(frozen=True)
class TourRun:
    out_dir: Path
    returncode: int
    stderr: str
    stdout: str
    seconds: float

    @property
    def summary(self) -> dict:
        return json.loads((self.out_dir / "summary.json").read_text())


_RUN: TourRun | None = None


def quick_tour() -> TourRun:
    global _RUN
    if _RUN is None:
        if REPORT.exists():
            shutil.rmtree(REPORT)
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "convlens", "tour", "--quick", "--out", str(REPORT)],
            capture_output=True,
            text=True,
            env=env,
            timeout=900,
        )
        _RUN = TourRun(REPORT, proc.returncode, proc.stderr, proc.stdout, time.perf_counter() - t0)
    return _RUN
