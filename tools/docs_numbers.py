"""Numbers in the docs come from here: regenerated from their sources, never retyped.

A marked region of a Markdown file under docs/ (or README.md)::

    <!-- generated: NAME -->
    ...whatever RENDERERS[NAME]() returns...
    <!-- /generated -->

is owned by this script. Its sources are

* ``benchmarks/results/*.json``, written by the benchmark scripts;
* ``docs/generated/NAME.txt`` (+ ``NAME.json``): the verbatim stdout (and JSON result) of a real
  command run, recorded by ``--run NAME`` together with the figures it wrote (copied to docs/img/).

Usage::

    python tools/docs_numbers.py                 # re-render every region from the stored sources (seconds)
    python tools/docs_numbers.py --run pooling   # re-run a recorded command first (or --run all), then render
    python tools/docs_numbers.py --check         # exit 1 and name the regions that drifted (tests/test_docs.py)

After re-running a benchmark, run this script and commit the docs with the JSON. A region quoting a
number that its source does not hold cannot exist: the test fails until the docs are regenerated.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
GENERATED = ROOT / "docs" / "generated"
DOCS = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]

REGION = re.compile(r"(<!-- generated: (?P<name>[\w.-]+) -->\n)(?P<body>.*?)(<!-- /generated -->)", re.S)

# -- recorded command runs ------------------------------------------------------------------------------------------

#: name -> (convlens arguments, output folder, {figure written there: name under docs/img/})
COMMANDS: dict[str, tuple[list[str], str, dict[str, str]]] = {
    "vanishing-gradient": (
        ["experiment", "vanishing-gradient", "--out", "out/vg"],
        "out/vg",
        {
            "vanishing_gradient_grad_norms.png": "vision_vanishing_gradient_grad_norms.png",
            "vanishing_gradient_training.png": "vision_vanishing_gradient_training.png",
        },
    ),
    "pooling": (["experiment", "pooling", "--out", "out/pool"], "out/pool", {"pooling.png": "vision_pooling.png"}),
    "depth-vs-resolution": (
        ["experiment", "depth-vs-resolution", "--out", "out/dvr"],
        "out/dvr",
        {"depth_vs_resolution.png": "vision_depth_vs_resolution.png"},
    ),
}


def run_command(name: str) -> None:
    """Run ``convlens ARGS`` in a scratch folder (1 thread, 120 columns) and record its stdout, JSON and figures."""
    args, out, figures = COMMANDS[name]
    env = dict(os.environ, COLUMNS="120", OMP_NUM_THREADS="1", NO_COLOR="1", TERM="dumb")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run(
            [sys.executable, "-m", "convlens", *args], cwd=tmp, env=env, capture_output=True, text=True, check=False
        )
        if proc.returncode != 0:
            raise SystemExit(f"convlens {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
        GENERATED.mkdir(parents=True, exist_ok=True)
        (GENERATED / f"{name}.txt").write_text(f"$ convlens {' '.join(args)}\n{proc.stdout.rstrip()}\n")
        for js in Path(tmp, out).glob("*.json"):
            shutil.copy(js, GENERATED / f"{name}.json")
        for src, dst in figures.items():
            shutil.copy(Path(tmp, out, src), ROOT / "docs" / "img" / dst)


def _recorded(name: str) -> str:
    return (GENERATED / f"{name}.txt").read_text().rstrip("\n")


def _recorded_json(name: str) -> dict[str, Any]:
    return json.loads((GENERATED / f"{name}.json").read_text())


def _console(name: str) -> Callable[[], str]:
    return lambda: f"```console\n{_recorded(name)}\n```\n"


# -- benchmark results ---------------------------------------------------------------------------------------------


def _result(name: str) -> dict[str, Any]:
    return json.loads((RESULTS / f"{name}.json").read_text())


def _load(d: dict[str, Any]) -> str:
    la = d.get("load_average_1min")
    return f"load average {la:.2f}" if la is not None else "load average not recorded"


def _ms(s: float) -> str:
    return f"{s * 1000:.0f} ms"


def cam_speed() -> str:
    rows = []
    for file, label in (("cam", "2 threads"), ("cam_threads1", "1 thread")):
        d = _result(file)
        m, r = d["median_s"], d["ratios"]
        rows.append(
            f"| {label} (`{file}.json`, {d['rounds']} rounds, {_load(d)}) | {_ms(m['forward_no_grad'])} | "
            f"{_ms(m['convlens'])} | {_ms(m['pytorch_grad_cam'])} | {_ms(m['captum'])} | "
            f"{r['convlens_vs_pytorch_grad_cam']:.2f}x | {r['convlens_vs_captum']:.2f}x | {r['convlens_vs_forward']:.2f}x |"
        )
    d = _result("cam")
    head = (
        f"{d['model']}, batch {d['batch']}, {d['size']} px, {d['device']}; medians of interleaved rounds "
        "(ratios: the other's time / convlens's time, higher = convlens faster):\n\n"
        "| run | no-grad forward | convlens | pytorch-grad-cam | Captum | vs pytorch-grad-cam | vs Captum | vs forward |\n"
        "|---|---|---|---|---|---|---|---|\n"
    )
    return head + "\n".join(rows) + "\n"


def summary_speed() -> str:
    d = _result("summary")
    return (
        f"Speed (`benchmarks/bench_summary.py`, {d['benchmark']}, {d['rounds']} interleaved rounds, "
        f"{d['torch_threads']} torch thread, {_load(d)}): {d['anchor']} median {d['anchor_median_s']:.3f} s, "
        f"convlens {d['convlens_median_s']:.3f} s, ratio {d['ratio_convlens_over_anchor']:.2f} (lower is better), "
        f"while also computing receptive fields, jumps and the op graph; both count "
        f"{d['agree']['total_params'][0]:,} parameters in {d['agree']['rows'][0]} rows.\n"
    )


def vision_bench() -> str:
    d = _result("vision")
    lines = [
        f"`benchmarks/bench_vision.py` (interleaved rounds, medians, {d['torch_threads']} torch thread, {_load(d)}; "
        "`benchmarks/results/vision.json`):",
        "",
        "| case | convlens ZNCC | skimage `match_template` | ratio | max abs diff |",
        "|---|---|---|---|---|",
    ]
    labels = {
        "rgb_60x80_template": "chelsea RGB 300x451, template 60x80x3 (FFT path)",
        "gray_9x9_template": "chelsea gray 300x451, template 9x9 (FFT path)",
    }
    for key, z in d["zncc"].items():
        sp = z["speedup_vs_skimage"]
        ratio = f"{sp:.1f}x faster" if sp >= 1 else f"{sp:.2f}x (slower)"
        lines.append(
            f"| {labels.get(key, key)} | {z['convlens_median_s'] * 1e3:.1f} ms | {z['skimage_median_s'] * 1e3:.1f} ms | "
            f"{ratio} | {z['max_abs_diff']:.1e} |"
        )
    v = d["vanishing_gradient_quick"]
    lines += [
        "",
        f"`vanishing_gradient(quick=True)`: {v['threads1_median_s']:.1f} s with 1 thread vs "
        f"{v['threads2_median_s']:.1f} s with 2 threads ({v['ratio_2_over_1']:.1f}x slower with 2).",
    ]
    return "\n".join(lines) + "\n"


def featvis_bench() -> str:
    d = _result("featvis")
    c = d["config"]
    lines = [
        f"Measured once: {c['model']}, `{c['layer']}`, {c['channels']} channels, {c['steps']} steps, "
        f"{c['rounds']} interleaved rounds (rotated order), {d['machine']['device']}, "
        f"{d['machine']['torch_threads']} torch threads, {_load(d)}:",
        "",
        "```",
        f"$ python benchmarks/bench_featvis.py --channels {c['channels']} --steps {c['steps']} --rounds {c['rounds']}",
        "```",
        "",
        f"| method | s/channel | s per round ({c['channels']} channels) |",
        "|---|---|---|",
    ]
    for k, v in d["seconds_per_channel_median"].items():
        per_round = ", ".join(f"{t:.1f}" for t in d["raw_seconds_per_round"][k])
        lines.append(f"| `{k}` | {v:.2f} | {per_round} |")
    lines += ["", "| ratio (higher = convlens faster) | |", "|---|---|"]
    lines += [f"| `{k}` | {v:.2f}x |" for k, v in d["ratios_higher_means_convlens_faster"].items()]
    return "\n".join(lines) + "\n"


def train_bench() -> str:
    d = _result("train")
    loop, head = d["loop"], d["head"]
    ratios = [o / p for o, p in zip(loop["convlens_images_per_s"], loop["plain_images_per_s"], strict=True)]
    return (
        f"Measured once ({d['rounds']} rounds, ABBA order, {d['model']} at {d['image_size']} px, batch "
        f"{d['batch_size']}, {d['train_images']} lfw training images, {d['machine']}, {_load(d)}):\n\n"
        "| measure | convlens | anchor | ratio | goal |\n|---|---|---|---|---|\n"
        f"| training loop, images/s (warm 2nd epoch, `scratch`) | {loop['median_convlens']:.1f} (median) | "
        f"plain PyTorch loop {loop['median_plain']:.1f} | **{loop['ratio']:.2f}x** | {loop['goal']}x |\n"
        f"| head epoch on cached features vs `frozen+aug` epoch | {_median(head['features_epoch_s']) * 1e3:.1f} ms | "
        f"{_median(head['frozen_aug_epoch_s']):.2f} s | **{head['speedup_per_epoch']:.0f}x faster** | {head['goal']} |\n"
        f"| same, over 10 epochs including the one-time base pass | | | {head['speedup_10_epochs_incl_base_pass']:.1f}x | |\n\n"
        f"Per-round loop ratios ranged {min(ratios):.2f}-{max(ratios):.2f}.\n"
    )


def unit_bench() -> str:
    d = _result("unit")
    t, tp, m = d["trace_unit"], d["top_patches"], d["memory"]
    lines = [
        f"`benchmarks/bench_unit.py` (embedded efficientnet_lite0, CPU, {d['rounds']} interleaved rounds, medians, "
        f"{d['torch_threads']} torch thread, {_load(d['machine'])}; `benchmarks/results/unit.json`):",
        "",
        f"| `trace_unit` on chelsea (one forward pass: {_ms(t['forward_median_s'])}) | time | ratio to one forward (goal <= 1.2) |",
        "|---|---|---|",
    ]
    for k, v in t["trace_unit_median_s"].items():
        lines.append(f"| `{k}` | {_ms(v)} | {t['ratio_trace_unit_over_forward'][k]:.2f}x |")
    lines += [
        "",
        f"| `top_patches`, {tp['images']} images, batch {tp['batch_size']}, {tp['channels']} channels, k={tp['k']} | "
        "plain no-grad forward, images/s | top_patches, images/s | ratio (goal >= 0.9) |",
        "|---|---|---|---|",
    ]
    for layer, v in tp["layers"].items():
        lines.append(
            f"| up to `{layer}` | {v['forward_images_per_s']:.1f} | {v['top_patches_images_per_s']:.1f} | "
            f"{v['ratio_images_per_s_top_patches_over_forward']:.2f}x |"
        )
    lines += [
        "",
        f"Flat memory: {m['images']:,} JPEG files through `top_patches` (`{m['layer']}`, batch {m['batch_size']}, 16 "
        f"channels, k=9) in a fresh process: resident set {m['rss_mb_after_250_images']:.0f} MB after 250 images, "
        f"{m['rss_mb_after_all_images']:.0f} MB after all {m['images']:,}; peak {m['peak_rss_mb']:.0f} MB vs "
        f"{m['peak_rss_mb_of_a_250_image_run']:.0f} MB for a 250-image run ({m['images_per_s']:.1f} images/s "
        "including JPEG decoding).",
    ]
    return "\n".join(lines) + "\n"


def _median(v: list[float]) -> float:
    s = sorted(v)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def pooling_shifts() -> str:
    d = _recorded_json("pooling")
    changes = d["feature_change"]
    parts = [f"{k} {', '.join('0' if v == 0 else f'{v:.3f}' for v in vals)}" for k, vals in changes.items()]
    return f"Measured change per shift {d['shifts'][0]}..{d['shifts'][-1]} px: {'; '.join(parts)}.\n"


def serve_speed() -> str:
    d = _result("serve")
    labels = {
        "activations_grid": f"activation grid of a layer (after the image's first capture, {d['first_capture_ms']:.0f} ms)",
        "unit": "unit trace (`trace_unit(field=True)`)",
        "cam": "CAM (Grad-CAM, one target)",
        "predict": "predict",
    }
    lines = [
        f"`benchmarks/results/serve.json`: {d['rounds']} rounds, {d['torch_threads']} torch threads, {_load(d)}.",
        "",
        "| endpoint | p50 / p95, 1 client (ms) | p50 / p95, 4 clients (ms) | goal (p95) |",
        "|---|---|---|---|",
    ]
    for key, label in labels.items():
        e = d["endpoints"][key]
        one, four, goal = e["clients_1"], e["clients_4"], e.get("goal_p95_ms")
        verdict = (
            ""
            if goal is None
            else f"< {goal:g} ms: " + ("met" if max(one["p95_ms"], four["p95_ms"]) < goal else "**not met**")
        )
        lines.append(
            f"| {label} | {one['p50_ms']:.0f} / {one['p95_ms']:.0f} | {four['p50_ms']:.0f} / {four['p95_ms']:.0f} | {verdict} |"
        )
    a = d["anchors_p50_ms"]
    lines += [
        "",
        f"In-process anchors in the same rounds (p50): a no-grad forward {a['forward_no_grad']:.0f} ms, "
        f"`trace_unit(field=True)` {a['core_trace_unit']:.0f} ms, Grad-CAM {a['core_explain_gradcam']:.0f} ms.",
    ]
    return "\n".join(lines) + "\n"


RENDERERS: dict[str, Callable[[], str]] = {
    "cam-speed": cam_speed,
    "summary-speed": summary_speed,
    "vision-bench": vision_bench,
    "featvis-bench": featvis_bench,
    "train-bench": train_bench,
    "pooling-shifts": pooling_shifts,
    "unit-bench": unit_bench,
    "serve-speed": serve_speed,
    **{f"cmd-{name}": _console(name) for name in COMMANDS},
}


# -- regions -------------------------------------------------------------------------------------------------------


def render(text: str) -> str:
    """``text`` with every marked region re-rendered (an unknown name is an error)."""

    def sub(m: re.Match[str]) -> str:
        name = m["name"]
        if name not in RENDERERS:
            raise SystemExit(f"unknown generated region '{name}'; known: {', '.join(sorted(RENDERERS))}")
        return m.group(1) + RENDERERS[name]() + m.group(4)

    return REGION.sub(sub, text)


def drifted() -> list[str]:
    """'file: region' for every region whose text differs from what its source renders."""
    out = []
    for path in DOCS:
        text = path.read_text()
        for m in REGION.finditer(text):
            want = RENDERERS[m["name"]]() if m["name"] in RENDERERS else None
            if want != m["body"]:
                out.append(f"{path.relative_to(ROOT)}: {m['name']}")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", action="append", default=[], help=f"re-run a recorded command: {', '.join(COMMANDS)}, all")
    ap.add_argument("--check", action="store_true", help="only report drifted regions (exit 1 if any)")
    a = ap.parse_args(argv)
    if a.check:
        bad = drifted()
        for b in bad:
            print(f"drifted: {b} (run python tools/docs_numbers.py)")
        return 1 if bad else 0
    for name in COMMANDS if "all" in a.run else a.run:
        if name not in COMMANDS:
            raise SystemExit(f"unknown command '{name}'; known: {', '.join(COMMANDS)}")
        print(f"running {name} ...", file=sys.stderr)
        run_command(name)
    for path in DOCS:
        text = path.read_text()
        new = render(text)
        if new != text:
            path.write_text(new)
            print(f"updated {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
