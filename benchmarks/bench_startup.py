"""Start-up time of the CLI: `convlens shape` (pure arithmetic) and `convlens predict` on the embedded
model, against the anchor `python -c "import torch"`, in interleaved rounds of fresh processes.

Goals (issue 17): `shape` under 0.5 s (it must not import torch, torchvision or timm) and `predict`
of one image on the embedded EfficientNet-Lite0 within 3 s (it imports torch, but neither
torchvision nor timm). Medians of per-round wall times, and each command's ratio to `import torch`,
are printed and written to ``benchmarks/results/startup.json`` with the 1-minute load average.

Run: ``.venv/bin/python benchmarks/bench_startup.py [--rounds 7]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _wall(cmd: list[str], env: dict[str, str], cwd: str) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "startup.json"))
    args = ap.parse_args(argv)

    import numpy as np
    import skimage.data
    from PIL import Image

    src = str(Path(__file__).resolve().parents[1] / "src")
    env = dict(os.environ, PYTHONPATH=src, OMP_WAIT_POLICY="PASSIVE")
    py = sys.executable
    work = tempfile.mkdtemp(prefix="convlens-bench-startup-")
    Image.fromarray(np.asarray(skimage.data.chelsea())).save(Path(work) / "chelsea.png")
    commands = {
        "import torch": [py, "-c", "import torch"],
        "convlens shape": [py, "-m", "convlens", "shape", "--input", "128x128x32", "--filters", "16", "--kernel", "3"],
        "convlens predict (embedded)": [py, "-m", "convlens", "predict", "chelsea.png"],
        "python -c pass": [py, "-c", "pass"],
    }
    for cmd in commands.values():  # warm the file cache once
        _wall(cmd, env, work)
    times: dict[str, list[float]] = {k: [] for k in commands}
    for _ in range(args.rounds):
        for name, cmd in commands.items():
            times[name].append(_wall(cmd, env, work))
    med = {k: statistics.median(v) for k, v in times.items()}
    anchor = med["import torch"]
    print(f"{'command':32s} {'median s':>9s} {'ratio to import torch':>22s}")
    for k, v in med.items():
        print(f"{k:32s} {v:9.3f} {v / anchor:22.2f}")
    result = {
        "benchmark": "CLI start-up (fresh processes, interleaved rounds)",
        "rounds": args.rounds,
        "median_s": med,
        "ratio_to_import_torch": {k: v / anchor for k, v in med.items()},
        "all_s": times,
        "goals_s": {"convlens shape": 0.5, "convlens predict (embedded)": 3.0},
        "load_average_1min": os.getloadavg()[0],
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
