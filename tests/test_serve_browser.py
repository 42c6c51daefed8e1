"""``convlens serve`` end to end: the real command as a subprocess on a free port, driven in Debian's
headless Chromium (Playwright, no browser download). Every request that is not for 127.0.0.1 is
blocked and recorded; console errors fail the test. Takes the page screenshot (copied to ``docs/serve-screenshot.png`` with ``CONVLENS_UPDATE_DOCS=1``).

Also checks the process itself: the URL is printed once the server answers, and SIGINT (Ctrl-C)
stops it cleanly (exit 0, temp folder removed).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import pytest
from _chromium import launch, needs_chromium

ROOT = Path(__file__).resolve().parents[1]
DOCS_SHOT = ROOT / "docs" / "serve-screenshot.png"


class Served:
    def __init__(self, *args: str, tmp: Path | None = None) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
        if tmp is not None:  # the server's temp folder goes here (tempfile reads TMPDIR)
            env["TMPDIR"] = str(tmp)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "convlens", "serve", "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.url = None
        deadline = time.monotonic() + 240
        line = ""
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            m = re.search(r"(http://127\.0\.0\.1:\d+/)", line)
            if m:
                self.url = m.group(1)
                break
            if self.proc.poll() is not None:
                break
        assert self.url, f"no URL printed: {line!r} {self.proc.stderr.read() if self.proc.poll() is not None else ''}"

    def stop(self) -> tuple[int, str]:
        self.proc.send_signal(signal.SIGINT)
        try:
            rc = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = -9
        return rc, self.proc.stderr.read()


@pytest.mark.slow
def test_serve_starts_answers_and_stops_cleanly_on_ctrl_c(tmp_path):
    import json

    s = Served("--model", "resnet18", tmp=tmp_path)
    try:
        status = json.loads(urllib.request.urlopen(s.url + "api/status", timeout=30).read())
        assert status["model"] == "resnet18" and status["pretrained"] is False
        assert len(list(tmp_path.glob("convlens-serve-*"))) == 1  # its private temp folder, while it runs
    finally:
        rc, err = s.stop()
    assert rc == 0, err
    assert "stopped." in err and "Traceback" not in err
    assert list(tmp_path.glob("convlens-serve-*")) == []  # removed on Ctrl-C


@pytest.mark.slow
def test_serve_warns_when_not_on_loopback_and_refuses_a_busy_port():
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    s = Served("--model", "resnet18", "--host", "0.0.0.0")
    try:
        port = urlparse(s.url).port
        busy = subprocess.run(
            [
                sys.executable,
                "-m",
                "convlens",
                "serve",
                "--model",
                "resnet18",
                "--port",
                str(port),
                "--host",
                "0.0.0.0",
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=240,
        )
        assert busy.returncode == 2 and busy.stderr.strip().splitlines()[-1].startswith("error: cannot listen")
    finally:
        rc, err = s.stop()
    assert "warning: binding to 0.0.0.0" in err and rc == 0


@pytest.mark.browser
@pytest.mark.slow
@needs_chromium
def test_explorer_in_chromium(tmp_path):
    from playwright.sync_api import sync_playwright

    s = Served()
    problems: list[str] = []
    outside: list[str] = []
    try:
        with sync_playwright() as p:
            browser = launch(p)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})

                def route(r):
                    if urlparse(r.request.url).hostname == "127.0.0.1" or r.request.url.startswith(("data:", "blob:")):
                        r.continue_()
                    else:
                        outside.append(r.request.url)
                        r.abort()

                page.route("**/*", route)

                def console(m):
                    if m.type != "error":
                        return
                    # the one expected failure: the corrupt upload answered with a 4xx (Chromium logs it)
                    if "status of 400" in m.text and m.location.get("url", "").endswith("/api/images"):
                        return
                    problems.append(f"console {m.type}: {m.text} at {m.location}")

                page.on("console", console)
                page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
                page.goto(s.url)
                page.wait_for_selector("body[data-ready='1']", timeout=180_000)

                # 1. chelsea: "Egyptian cat" in the top-5
                page.select_option("#image-select", label="chelsea")
                page.wait_for_function(
                    "() => [...document.querySelectorAll('#top5 li .label')].some(e => e.textContent === 'Egyptian cat')",
                    timeout=60_000,
                )
                labels = page.eval_on_selector_all("#top5 li .label", "els => els.map(e => e.textContent)")
                assert "Egyptian cat" in labels and len(labels) == 5

                # 2. a layer, then a cell: the trace's total equals the displayed activation; the RF box is drawn
                # the network as a drawn graph: clicking a node selects its layer
                page.check("input[name=net-view][value=graph]")
                page.wait_for_selector("#network-graph svg g.node", timeout=60_000)
                page.click("#network-graph g.node[data-module='blocks.1']")
                page.wait_for_function(
                    "() => document.getElementById('acts-layer').textContent.startsWith('blocks.1:')", timeout=60_000
                )
                page.check("input[name=net-view][value=table]")
                page.fill("#net-depth", "4")
                page.dispatch_event("#net-depth", "input")
                page.click("tr.layer-row[data-layer='blocks.1.0.conv_pw']")
                page.wait_for_selector("#acts-grid canvas", timeout=60_000)
                page.click("#acts-grid .cell:nth-child(2) canvas", position={"x": 40, "y": 60})
                shown = float(page.get_attribute("#unit-value", "data-value"))
                features = page.evaluate("() => fetch('/api/status').then(r => r.json()).then(s => s.features)")
                if features["unit"]:
                    page.wait_for_function(
                        "() => document.getElementById('trace-total').dataset.value !== undefined", timeout=60_000
                    )
                    total = float(page.get_attribute("#trace-total", "data-value"))
                    assert abs(total - shown) < 1e-4, (total, shown)
                    page.wait_for_selector("#rf-box:not([hidden])", timeout=30_000)
                    box = page.eval_on_selector("#rf-box", "b => b.getBoundingClientRect().width")
                    assert box > 0
                else:
                    assert "no unit tracing" in page.text_content("#unit-message")

                # 3. the CAM overlay loads
                page.click("#top5 li:nth-child(1)")
                page.wait_for_function(
                    "() => { const i = document.getElementById('cam-heat'); return i.complete && i.naturalWidth > 0; }",
                    timeout=60_000,
                )
                assert "Egyptian cat" in page.text_content("#cam-info")

                # 4. the playground: 128 / 3 / 2 -> 63 (torch) and 64 (TF SAME)
                for k, v in (("input", 128), ("kernel", 3), ("stride", 2), ("padding", 0), ("dilation", 1)):
                    page.fill(f"#pg-{k}-n", str(v))
                page.wait_for_function(
                    "() => document.getElementById('pg-torch').textContent === '63' && document.getElementById('pg-tf-same').textContent === '64'",
                    timeout=30_000,
                )
                assert "63" in page.text_content("#pg-formula")
                # ... and its transposed convolution: 63 back to 127, or 128 with output_padding 1
                page.select_option("#pg-op", "convtranspose")
                page.fill("#pg-input-n", "63")
                page.fill("#pg-outpad", "1")
                page.wait_for_function(
                    "() => document.getElementById('pg-torch').textContent === '128'", timeout=30_000
                )
                assert "ConvTranspose2d" in page.text_content("#pg-code")
                page.select_option("#pg-op", "conv")
                page.fill("#pg-outpad", "0")
                page.fill("#pg-input-n", "128")
                page.wait_for_function("() => document.getElementById('pg-torch').textContent === '63'", timeout=30_000)

                # 5. a corrupt upload: an error message, and the page keeps working
                page.set_input_files(
                    "#upload-input",
                    files=[{"name": "broken.png", "mimeType": "image/png", "buffer": b"\x89PNG\r\n\x1a\nnot really"}],
                )
                page.wait_for_selector("#error-bar:not([hidden])", timeout=30_000)
                assert "not an image" in page.text_content("#error-text") or "corrupt" in page.text_content(
                    "#error-text"
                )
                page.select_option("#image-select", label="coffee")
                page.wait_for_function(
                    "() => [...document.querySelectorAll('#top5 li .label')].some(e => e.textContent === 'espresso')",
                    timeout=60_000,
                )
                page.select_option("#image-select", label="chelsea")
                page.wait_for_function(
                    "() => [...document.querySelectorAll('#top5 li .label')].some(e => e.textContent === 'Egyptian cat')",
                    timeout=60_000,
                )
                assert page.is_hidden("#error-bar")  # choosing an image clears the message
                page.wait_for_selector("#acts-grid .cell:nth-child(2) canvas", timeout=60_000)
                page.click("#acts-grid .cell:nth-child(2) canvas", position={"x": 40, "y": 60})
                page.wait_for_function(
                    "() => { const i = document.getElementById('cam-heat'); return i.complete && i.naturalWidth > 0; }",
                    timeout=60_000,
                )
                if features["unit"]:  # after switching images, the grid and the trace are still of one image
                    page.wait_for_function(
                        "() => document.getElementById('trace-total').dataset.value !== undefined", timeout=60_000
                    )
                    total = float(page.get_attribute("#trace-total", "data-value"))
                    shown = float(page.get_attribute("#unit-value", "data-value"))
                    assert abs(total - shown) < 1e-4, (total, shown)
                page.wait_for_timeout(1500)

                # 7. the screenshot for the README: taken on every run, copied over docs/ only when asked
                # (CONVLENS_UPDATE_DOCS=1), so a test run never dirties the checkout
                shot = tmp_path / "serve-screenshot.png"
                page.screenshot(path=str(shot), full_page=True)
            finally:
                browser.close()
    finally:
        rc, err = s.stop()
    # 6. no console errors, nothing left 127.0.0.1
    assert problems == [], problems
    assert outside == [], outside
    assert rc == 0, err
    assert shot.stat().st_size > 50_000
    if os.environ.get("CONVLENS_UPDATE_DOCS") == "1":
        shutil.copyfile(shot, DOCS_SHOT)
