"""Template matching and experiment speed: convlens ZNCC vs scikit-image ``match_template``, and the
experiments' single- vs two-thread CPU runs.

* ZNCC on skimage's chelsea (300x451): an RGB 60x80 template and a gray 9x9 template (both
  above 25 taps: FFT path), convlens (torch, float64) vs ``skimage.feature.match_template(pad_input=False)``,
  interleaved rounds in ONE process; medians and ratios (skimage time / convlens time). The max
  absolute difference between the two response maps is recorded too.
* ``vanishing_gradient(quick=True)`` with ``num_threads=1`` vs ``2`` (interleaved).

Results print and go to ``benchmarks/results/vision.json`` with the load average measured at the end
(how shared the machine was); compare ratios, not absolute times.

Run: ``.venv/bin/python benchmarks/bench_vision.py [--rounds 7] [--exp-rounds 2]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import _machine  # first: sets OMP_WAIT_POLICY=PASSIVE before torch loads
import numpy as np
import torch


def _time(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--exp-rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads for the ZNCC part")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    import skimage.data
    from skimage.feature import match_template

    from convlens.experiments import vanishing_gradient
    from convlens.match import correlate, image_to_chw

    img = skimage.data.chelsea().astype(np.float64) / 255
    cases = {
        "rgb_60x80_template": (img, img[80:140, 150:230]),
        "gray_9x9_template": (img.mean(axis=2), img.mean(axis=2)[100:109, 200:209]),
    }
    out: dict = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "torch_threads": args.threads,
        "rounds": args.rounds,
        "zncc": {},
    }
    for name, (im, tpl) in cases.items():
        ours_in = (image_to_chw(im), image_to_chw(tpl)) if im.ndim == 3 else (im, tpl)
        ours_fn = lambda: correlate(*ours_in, "zncc")  # noqa: E731
        sk_fn = lambda: match_template(im, tpl, pad_input=False)  # noqa: E731
        ours_fn(), sk_fn()  # warm-up
        t_ours, t_sk = [], []
        for _ in range(args.rounds):  # interleaved: contention hits both alike
            t_ours.append(_time(ours_fn))
            t_sk.append(_time(sk_fn))
        ref = sk_fn()
        ref = ref[..., 0] if ref.ndim == 3 else ref
        diff = float(np.abs(ours_fn() - ref).max())
        mo, ms = statistics.median(t_ours), statistics.median(t_sk)
        out["zncc"][name] = {
            "image": list(im.shape),
            "template": list(tpl.shape),
            "convlens_median_s": round(mo, 5),
            "skimage_median_s": round(ms, 5),
            "speedup_vs_skimage": round(ms / mo, 2),
            "max_abs_diff": diff,
        }
        print(
            f"zncc {name}: convlens {mo * 1e3:.1f} ms, skimage {ms * 1e3:.1f} ms, ratio {ms / mo:.2f}x, max |diff| {diff:.1e}"
        )

    t1, t2 = [], []
    for _ in range(args.exp_rounds):
        t1.append(_time(lambda: vanishing_gradient(quick=True, num_threads=1)))
        t2.append(_time(lambda: vanishing_gradient(quick=True, num_threads=2)))
    m1, m2 = statistics.median(t1), statistics.median(t2)
    out["vanishing_gradient_quick"] = {
        "threads1_median_s": round(m1, 2),
        "threads2_median_s": round(m2, 2),
        "ratio_2_over_1": round(m2 / m1, 2),
    }
    print(f"vanishing_gradient(quick=True): 1 thread {m1:.1f} s, 2 threads {m2:.1f} s ({m2 / m1:.1f}x)")
    out.update(_machine.machine())  # load averages at the end of the run
    path = Path(__file__).parent / "results" / "vision.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path}")
    return out


if __name__ == "__main__":
    main()
