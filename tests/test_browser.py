"""End to end in a real browser: the quick tour's ``index.html`` opened from ``file://`` in Debian's
headless Chromium (no browser download): no console errors, no network requests, every image
loaded, every section q1..q21 present, every navigation link resolves. Saves ``out/screenshot.png``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from _chromium import launch, needs_chromium
from _tour_run import OUT, quick_tour

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    needs_chromium,
]


def _open(page_path: Path, shot: Path | None):
    from playwright.sync_api import sync_playwright

    problems: list[str] = []
    with sync_playwright() as p:
        browser = launch(p)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on(
                "console",
                lambda m: problems.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning") else None,
            )
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
            page.on(
                "request",
                lambda r: (
                    problems.append(f"non-local request: {r.url}") if not r.url.startswith(("file:", "data:")) else None
                ),
            )
            page.goto(page_path.resolve().as_uri(), wait_until="load")
            facts = page.evaluate(
                """() => {
                  const imgs = [...document.images].map(i => ({src: i.getAttribute('src'), ok: i.complete && i.naturalWidth > 0}));
                  const ids = [...document.querySelectorAll('section.topic')].map(s => s.id);
                  const links = [...document.querySelectorAll('nav a')].map(a => a.getAttribute('href'));
                  const dangling = links.filter(h => !h.startsWith('#') || !document.getElementById(h.slice(1)));
                  const external = [...document.querySelectorAll('[src],[href]')]
                     .map(e => e.getAttribute('src') || e.getAttribute('href'))
                     .filter(u => /^(https?:)?\\/\\//.test(u));
                  return {imgs, ids, links, dangling, external, scripts: document.scripts.length};
                }"""
            )
            # follow a navigation link like a user: the target section scrolls into view
            target = facts["links"][-1] if facts["links"] else None
            in_view = None
            if target:
                page.click(f'nav a[href="{target}"]')
                page.wait_for_timeout(200)
                in_view = page.evaluate(
                    "(id) => { const r = document.getElementById(id).getBoundingClientRect();"
                    " return location.hash === '#' + id && r.top < innerHeight && r.bottom > 0; }",
                    target[1:],
                )
                page.evaluate("window.scrollTo(0, 0)")
            if shot is not None:
                shot.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(shot))
        finally:
            browser.close()
    return facts, problems, in_view


def test_tour_report_in_chromium():
    run = quick_tour()
    index = run.out_dir / "index.html"
    assert index.exists(), run.stderr[-3000:]
    shot = OUT / "screenshot.png"
    facts, problems, in_view = _open(index, shot)
    assert problems == [], problems
    assert facts["ids"] == [f"q{i}" for i in range(1, 22)]
    assert facts["links"] == [f"#q{i}" for i in range(1, 22)]
    assert facts["dangling"] == []
    assert facts["external"] == [] and facts["scripts"] == 0
    n_fig = sum(len(s["figures"]) for s in run.summary["sections"])
    assert len(facts["imgs"]) == n_fig
    bad = [i["src"] for i in facts["imgs"] if not i["ok"]]
    assert bad == [], f"images not loaded: {bad}"
    assert in_view is True
    assert shot.stat().st_size > 10_000


def test_broken_image_is_detected(tmp_path):
    """The check above can fail: a page with a missing figure is caught."""
    run = quick_tour()
    shutil.copy(run.out_dir / "index.html", tmp_path / "index.html")
    html = (tmp_path / "index.html").read_text()
    (tmp_path / "index.html").write_text(html.replace("</main>", '<img src="missing.png" alt="x"></main>'))
    facts, problems, _ = _open(tmp_path / "index.html", None)
    assert any(not i["ok"] for i in facts["imgs"])
    assert any("missing.png" in p for p in problems)
