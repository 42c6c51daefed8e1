"""``convlens serve`` latency: p50/p95 per endpoint with 1 and 4 concurrent clients, over real HTTP.

The server runs as ``convlens serve`` (a subprocess, the embedded EfficientNet-Lite0, 224 px, CPU);
clients are threads of this process using httpx. Goals (issue 14): a layer's activation grid < 500 ms
p95 once the image's one all-layer capture is done, a unit trace < 300 ms, a CAM < 1.5 s.

Anchors, interleaved with the requests in the same rounds (in this process, same thread count as the
server): a plain no-grad forward of the model, and the core calls the endpoints wrap
(``trace_unit(field=True)``, ``explain``). ``ratio_to_core`` = endpoint p50 / core call p50 is the
server's overhead (HTTP, JSON, PNG encoding, the page's extra fields).

Run: ``.venv/bin/python benchmarks/bench_serve.py [--rounds 8] [--threads 2]``; writes
``benchmarks/results/serve.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import _machine  # first: sets OMP_WAIT_POLICY=PASSIVE before torch loads
import torch

ROOT = Path(__file__).resolve().parents[1]
LAYERS = [
    "conv_stem",
    "blocks.0",
    "blocks.1.0.conv_pw",
    "blocks.2",
    "blocks.3.0.conv_dw",
    "blocks.4",
    "blocks.5.1",
    "bn2",
]
UNITS = [
    ("blocks.1.0.conv_pw", 17, 5, 9),
    ("blocks.3.0.conv_pw", 3, 7, 11),
    ("conv_stem", 0, 50, 60),
    ("blocks.5.0.conv_dw", 40, 3, 4),
]
TARGETS = [285, 282, 281, 287, 728]


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank) of a list of seconds, in ms."""
    s = sorted(values)
    k = max(0, min(len(s) - 1, round(q / 100 * len(s) + 0.5) - 1))
    return round(1000 * s[k], 2)


def start_server(threads: int) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": str(threads), "OMP_WAIT_POLICY": "PASSIVE"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "convlens", "serve", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        m = re.search(r"(http://127\.0\.0\.1:\d+)/", line)
        if m:
            return proc, m.group(1)
        if proc.poll() is not None:
            break
    proc.kill()
    raise SystemExit(f"server did not start: {proc.stderr.read()[-2000:]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    import httpx
    import skimage.data

    from convlens.explain import explain
    from convlens.inspect import trace_unit
    from convlens.models import load_model

    proc, base = start_server(args.threads)
    try:
        client = httpx.Client(base_url=base, timeout=120)
        images = {im["name"]: im["id"] for im in client.get("/api/images").json()}
        cid = images["chelsea"]
        t0 = time.perf_counter()
        assert client.get(f"/api/images/{cid}/activations", params={"layer": "conv_stem"}).status_code == 200
        first_capture = time.perf_counter() - t0  # the one all-layer capture of this image

        bundle = load_model("efficientnet_lite0")
        x = bundle.preprocess([skimage.data.chelsea()])

        def anchor_forward() -> None:
            with torch.no_grad():
                bundle.model(x)

        k = {"i": 0}

        def nxt(seq: list) -> object:
            k["i"] += 1
            return seq[k["i"] % len(seq)]

        def anchor_unit() -> None:
            layer, c, i, j = nxt(UNITS)
            trace_unit(bundle.model, x, layer, (c, i, j), field=True)

        def anchor_cam() -> None:
            explain(bundle.model, x, "gradcam", "bn2", [nxt(TARGETS)])

        def req(path: str, params: dict | None = None) -> float:
            t = time.perf_counter()
            r = client.get(path, params=params)
            assert r.status_code == 200, r.text
            return time.perf_counter() - t

        endpoints = {
            "status": lambda: req("/api/status"),
            "shape": lambda: req("/api/shape", {"input": "128x128x32", "kernel": 3, "stride": 2, "filters": 16}),
            "predict": lambda: req(f"/api/images/{cid}/predict"),
            "activations_grid": lambda: req(f"/api/images/{cid}/activations", {"layer": nxt(LAYERS), "limit": 16}),
            "unit": lambda: req(
                f"/api/images/{cid}/unit", dict(zip(("layer", "c", "i", "j"), nxt(UNITS), strict=True))
            ),
            "cam": lambda: req(f"/api/images/{cid}/cam", {"method": "gradcam", "target": nxt(TARGETS)}),
        }
        anchors = {
            "forward_no_grad": anchor_forward,
            "core_trace_unit": anchor_unit,
            "core_explain_gradcam": anchor_cam,
        }
        times: dict[str, dict[str, list[float]]] = {n: {"1": [], "4": []} for n in endpoints}
        anchor_times: dict[str, list[float]] = {n: [] for n in anchors}
        for fn in list(endpoints.values()) + list(anchors.values()):  # warm-up
            fn()
        pool = ThreadPoolExecutor(4)
        for _ in range(args.rounds):
            for name, fn in anchors.items():
                t = time.perf_counter()
                fn()
                anchor_times[name].append(time.perf_counter() - t)
            for name, fn in endpoints.items():
                times[name]["1"].append(fn())
                times[name]["4"].extend(pool.map(lambda _: fn(), range(4)))  # noqa: B023
        pool.shutdown()
        status = client.get("/api/status").json()
    finally:
        proc.send_signal(2)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()

    core = {k: statistics.median(v) for k, v in anchor_times.items()}
    per_core = {"unit": "core_trace_unit", "cam": "core_explain_gradcam", "predict": "forward_no_grad"}
    rows = {}
    goals = {"activations_grid": 500, "unit": 300, "cam": 1500}
    print(f"first all-layer capture of an image: {1000 * first_capture:.0f} ms")
    print(
        f"{'endpoint':<18}{'p50 1c':>10}{'p95 1c':>10}{'p50 4c':>10}{'p95 4c':>10}{'goal p95':>10}{'ratio to core':>15}"
    )
    for name, by in times.items():
        r = {
            "clients_1": {"p50_ms": pct(by["1"], 50), "p95_ms": pct(by["1"], 95), "n": len(by["1"])},
            "clients_4": {"p50_ms": pct(by["4"], 50), "p95_ms": pct(by["4"], 95), "n": len(by["4"])},
        }
        if name in goals:
            r["goal_p95_ms"] = goals[name]
            r["meets_goal_1_client"] = r["clients_1"]["p95_ms"] < goals[name]
        if name in per_core:
            r["core_p50_ms"] = round(1000 * core[per_core[name]], 2)
            r["ratio_to_core"] = round(r["clients_1"]["p50_ms"] / r["core_p50_ms"], 3)
        rows[name] = r
        print(
            f"{name:<18}{r['clients_1']['p50_ms']:>10.1f}{r['clients_1']['p95_ms']:>10.1f}{r['clients_4']['p50_ms']:>10.1f}"
            f"{r['clients_4']['p95_ms']:>10.1f}{goals.get(name, float('nan')):>10.0f}{r.get('ratio_to_core', float('nan')):>15.3f}"
        )
    print("anchors (ms, p50): " + ", ".join(f"{k} {1000 * v:.1f}" for k, v in core.items()))
    out = {
        "benchmark": "serve",
        "model": "efficientnet_lite0",
        "input": "224x224x3",
        "rounds": args.rounds,
        "first_capture_ms": round(1000 * first_capture, 1),
        "cache_bytes_after": status["cache_bytes"],
        "endpoints": rows,
        "anchors_p50_ms": {k: round(1000 * v, 2) for k, v in core.items()},
        "note": "4 clients: requests of one endpoint sent together; model calls are serialized by the server, so p95 grows with the queue",
        **_machine.machine(),
    }
    path = ROOT / "benchmarks" / "results" / "serve.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"-> {path}")


if __name__ == "__main__":
    main()
