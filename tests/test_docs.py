"""Documentation numbers are generated, not retyped: every marked region of docs/*.md and README.md equals what
tools/docs_numbers.py renders from benchmarks/results/*.json and from recorded command runs (docs/generated/)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dn():
    spec = importlib.util.spec_from_file_location("docs_numbers", ROOT / "tools" / "docs_numbers.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_docs_equal_what_their_sources_render(dn):
    assert dn.drifted() == [], "docs drifted from their sources: run python tools/docs_numbers.py"


def test_every_region_has_a_renderer_and_every_renderer_is_used(dn):
    used = {m["name"] for p in dn.DOCS for m in dn.REGION.finditer(p.read_text())}
    assert used <= set(dn.RENDERERS)
    assert set(dn.RENDERERS) <= used, f"renderers no doc uses: {set(dn.RENDERERS) - used}"


def test_a_changed_benchmark_result_is_drift(dn, monkeypatch):
    """The check is not vacuous: a new measurement in benchmarks/results makes the quoting docs stale."""
    real = dn._result

    def changed(name):
        d = real(name)
        if name == "cam":
            d["ratios"]["convlens_vs_pytorch_grad_cam"] += 0.5
        return d

    monkeypatch.setattr(dn, "_result", changed)
    assert dn.drifted() == ["docs/explain.md: cam-speed"]


def test_retyped_number_in_a_region_is_drift(dn, tmp_path, monkeypatch):
    doc = tmp_path / "x.md"
    body = dn.RENDERERS["summary-speed"]()
    doc.write_text(f"<!-- generated: summary-speed -->\n{body}<!-- /generated -->\n")
    monkeypatch.setattr(dn, "DOCS", [doc])
    monkeypatch.setattr(dn, "ROOT", tmp_path)
    assert dn.drifted() == []
    doc.write_text(doc.read_text().replace("ratio 0.", "ratio 1."))
    assert dn.drifted() == ["x.md: summary-speed"]


@pytest.mark.slow
def test_recorded_pooling_run_is_what_the_command_prints_now(tmp_path):
    """The one recorded command fast enough for CI, re-run for real: same numbers (the timing aside), same JSON."""
    env = dict(os.environ, COLUMNS="120", OMP_NUM_THREADS="1", NO_COLOR="1", TERM="dumb")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, "-m", "convlens", "experiment", "pooling", "--out", "out/pool"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    recorded = (ROOT / "docs" / "generated" / "pooling.txt").read_text().splitlines()[1:]
    strip = lambda lines: [re.sub(r"^\(\d+\.\d s\) ", "", ln) for ln in lines]  # noqa: E731
    assert strip(proc.stdout.rstrip().splitlines()) == strip(recorded)
    now = json.loads((tmp_path / "out" / "pool" / "pooling.json").read_text())
    then = json.loads((ROOT / "docs" / "generated" / "pooling.json").read_text())
    assert list(now["feature_change"]) == list(then["feature_change"])
    for k, v in then["feature_change"].items():
        assert now["feature_change"][k] == pytest.approx(v, abs=1e-6), k
