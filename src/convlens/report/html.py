"""Self-contained HTML pages: one ``index.html`` with a navigation column, one ``<section>`` per
topic (its ``id`` is the section id, e.g. ``q7``: a contract), figures saved as PNG files next to it,
and a ``summary.json``. No scripts, no web fonts, no network resources: it opens from ``file://``.

Example:
    >>> import tempfile, pathlib
    >>> from convlens.report.page import Section, Table
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> s = Section("q1", 1, "One", "Why?", tables=[Table(["a"], [[1]])], explanation="Because.")
    >>> page = write_page([s], d, title="demo")
    >>> 'id="q1"' in page.read_text()
    True
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from convlens.plot.html import format_value, table_html
from convlens.report.page import Section, Table

__all__ = ["write_page", "write_summary", "render_page", "format_value", "save_figures"]

_CSS = """
:root { --fg:#1d2330; --muted:#5b6475; --line:#dde2ea; --bg:#fbfcfe; --accent:#2c5fa8; --bad:#b3261e; --good:#1e7b34; }
* { box-sizing: border-box; }
body { margin:0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; color:var(--fg); background:var(--bg); }
nav { position:fixed; top:0; left:0; bottom:0; width:270px; overflow-y:auto; padding:16px 12px; border-right:1px solid var(--line); background:#fff; }
nav h1 { font-size:18px; margin:0 0 4px; }
nav p.meta { font-size:12px; color:var(--muted); margin:0 0 12px; }
nav ol { padding-left:0; margin:0; list-style:none; }
nav li { margin:1px 0; }
nav a { display:block; padding:3px 6px; border-radius:4px; color:var(--fg); text-decoration:none; font-size:13px; }
nav a:hover { background:#eef2f8; }
nav a .num { display:inline-block; width:2.4em; color:var(--muted); }
nav a.error { color:var(--bad); }
main { margin-left:270px; padding:16px 32px 64px; max-width:1200px; }
header.top { padding:8px 0 16px; border-bottom:1px solid var(--line); }
section.topic { padding:18px 0 22px; border-bottom:1px solid var(--line); }
section.topic h2 { margin:0 0 4px; font-size:21px; }
section.topic h2 .num { color:var(--muted); font-weight:normal; margin-right:6px; }
p.question { font-size:16px; font-style:italic; margin:0 0 10px; color:#34405a; }
p.timing { font-size:12px; color:var(--muted); margin:0 0 8px; }
.badge { display:inline-block; font-size:11px; padding:1px 7px; border-radius:9px; margin-left:8px; vertical-align:middle; color:#fff; background:var(--good); }
.badge.error { background:var(--bad); }
div.error { border:1px solid var(--bad); background:#fdf0ef; padding:8px 12px; border-radius:6px; }
div.error p { margin:0 0 6px; color:var(--bad); font-weight:600; }
table { border-collapse:collapse; margin:8px 0 14px; font-size:13px; }
caption { caption-side:top; text-align:left; font-size:13px; color:var(--muted); padding-bottom:4px; }
th, td { border:1px solid var(--line); padding:3px 8px; text-align:right; font-variant-numeric: tabular-nums; }
th { background:#f1f4f9; }
td:first-child, th:first-child { text-align:left; }
dl.results { display:grid; grid-template-columns:max-content auto; gap:2px 14px; font-size:13px; margin:8px 0 12px; }
dl.results dt { color:var(--muted); }
dl.results dd { margin:0; font-variant-numeric: tabular-nums; }
figure { margin:10px 0 16px; }
figure img { max-width:100%; height:auto; border:1px solid var(--line); background:#fff; }
figcaption { font-size:13px; color:var(--muted); }
pre { background:#f3f5f9; border:1px solid var(--line); padding:8px 10px; overflow-x:auto; font-size:12.5px; border-radius:4px; }
h3 { font-size:14px; margin:12px 0 4px; color:#34405a; }
details summary { cursor:pointer; color:var(--muted); font-size:13px; }
"""


def _esc(s: Any) -> str:
    return html.escape(str(s), quote=True)


def _table_html(t: Table) -> str:
    return table_html(t.columns, t.rows, t.caption)  # the renderer notebooks use too (convlens.plot.html)


def _results_html(results: dict[str, Any]) -> str:
    if not results:
        return ""
    items = "".join(f"<dt>{_esc(k)}</dt><dd>{_esc(format_value(v))}</dd>" for k, v in results.items())
    return f'<dl class="results">{items}</dl>'


def _paragraphs(text: str) -> str:
    return "".join(f"<p>{_esc(p.strip())}</p>" for p in text.split("\n\n") if p.strip())


def save_figures(sections: Sequence[Section], out_dir: Path, *, dpi: int = 90) -> None:
    """Save every section's figures as ``<id>-<k>.png`` in ``out_dir`` and release them
    (``TourFigure.file`` set, ``figure`` cleared)."""
    for s in sections:
        for k, f in enumerate(s.figures, 1):
            if f.figure is None:
                continue
            name = f"{s.id}-{k}.png"
            f.figure.savefig(out_dir / name, dpi=dpi, facecolor="white")
            f.file = name
            f.figure = None


def _section_html(s: Section) -> str:
    badge = '<span class="badge error">error</span>' if not s.ok else ""
    out = [
        f'<section class="topic" id="{_esc(s.id)}">',
        f'<h2><span class="num">{s.number}.</span>{_esc(s.title)}{badge}</h2>',
        f'<p class="question">{_esc(s.question)}</p>',
        f'<p class="timing">computed live in {s.seconds:.1f} s</p>',
    ]
    if not s.ok:
        out.append(f'<div class="error"><p>This section failed: {_esc(s.error)}</p>')
        if s.traceback:
            out.append(f"<details><summary>details</summary><pre>{_esc(s.traceback)}</pre></details>")
        out.append("</div>")
    out.append(_results_html(s.results))
    out.extend(_table_html(t) for t in s.tables)
    for f in s.figures:
        if f.file:
            out.append(
                f'<figure><img src="{_esc(f.file)}" alt="{_esc(f.caption or s.title)}" loading="eager">'
                f"<figcaption>{_esc(f.caption)}</figcaption></figure>"
            )
    if s.explanation:
        out.append(_paragraphs(s.explanation))
    if s.api:
        out.append(f"<h3>API</h3><pre><code>{_esc(s.api)}</code></pre>")
    if s.cli:
        out.append(f"<h3>CLI</h3><pre><code>{_esc(s.cli)}</code></pre>")
    out.append("</section>")
    return "\n".join(out)


_ERR_CLASS = ' class="error"'


def render_page(sections: Sequence[Section], *, title: str, intro: str = "", meta: str = "") -> str:
    """The whole HTML page as a string (figures must already be saved: see :func:`save_figures`)."""
    nav = "".join(
        f'<li><a href="#{_esc(s.id)}"{_ERR_CLASS if not s.ok else ""}>'
        f'<span class="num">{s.number}.</span>{_esc(s.title)}</a></li>'
        for s in sections
    )
    body = "\n".join(_section_html(s) for s in sections)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,">'
        f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body>"
        f'<nav><h1>{_esc(title)}</h1><p class="meta">{_esc(meta)}</p><ol>{nav}</ol></nav>'
        f'<main><header class="top"><h1>{_esc(title)}</h1>{_paragraphs(intro)}'
        f'<p class="timing">{_esc(meta)}</p></header>\n{body}\n</main></body></html>\n'
    )


def write_page(
    sections: Sequence[Section], out_dir: str | Path, *, title: str, intro: str = "", meta: str = "", dpi: int = 90
) -> Path:
    """Save the figures and write ``out_dir/index.html``; returns its path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_figures(sections, out, dpi=dpi)
    page = out / "index.html"
    page.write_text(render_page(sections, title=title, intro=intro, meta=meta), encoding="utf-8")
    return page


def _jsonable(v: Any) -> Any:
    from convlens.serialize import to_jsonable

    return to_jsonable(v)


def section_summary(s: Section) -> dict[str, Any]:
    """A section as plain JSON data (figures as file names)."""
    return {
        "id": s.id,
        "number": s.number,
        "title": s.title,
        "question": s.question,
        "status": s.status,
        "error": s.error,
        "seconds": round(s.seconds, 3),
        "cpu_seconds": round(s.cpu_seconds, 3),
        "results": _jsonable(s.results),
        "tables": [{"caption": t.caption, "columns": t.columns, "rows": _jsonable(t.rows)} for t in s.tables],
        "figures": [{"file": f.file, "caption": f.caption} for f in s.figures],
        "api": s.api,
        "cli": s.cli,
    }


def write_summary(path: str | Path, sections: Sequence[Section], **header: Any) -> Path:
    """Write ``summary.json``: the header fields, then every section (see :func:`section_summary`)."""
    p = Path(path)
    data = dict(_jsonable(header))
    data["sections"] = [section_summary(s) for s in sections]
    data["failed"] = [s.id for s in sections if not s.ok]
    p.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return p
