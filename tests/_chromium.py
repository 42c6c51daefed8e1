"""Debian's chromium for the browser tests (the report, the explorer, the graph SVG): one place for its path,
its launch flags and the skip marker, so every browser test runs the browser the same way."""

from __future__ import annotations

from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
# no background traffic, no sandbox (CI runs as root), no GPU: the page must work offline and headless
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs Debian's chromium (make test installs it with apt-get)"
)


def launch(playwright):  # -> playwright Browser
    """Start Debian's chromium headless through Playwright (no browser download)."""
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
