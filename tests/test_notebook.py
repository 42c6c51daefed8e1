"""``examples/course.ipynb`` runs top to bottom on this venv's Python (a kernel spec written to a temp
folder: the user's Jupyter and IPython folders are not touched), with no error, and its results
render as HTML (``_repr_html_``) with the course's answers in them."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "examples" / "course.ipynb"


@pytest.mark.slow
def test_course_notebook_runs_offline(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")

    spec = tmp_path / "jupyter" / "kernels" / "convlens-venv"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "convlens venv",
                "language": "python",
            }
        )
    )
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))
    monkeypatch.setenv("PYTHONPATH", str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    work = tmp_path / "work"
    work.mkdir()

    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=900, kernel_name="convlens-venv", resources={"metadata": {"path": str(work)}}
    )
    client.execute()  # raises CellExecutionError on the first failing cell

    code = [c for c in nb.cells if c.cell_type == "code"]
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert errors == []
    html = [o["data"]["text/html"] for c in code for o in c.outputs if "text/html" in o.get("data", {})]
    assert len(html) >= 10  # results draw themselves
    joined = "\n".join(html)
    assert "output 63x63x16" in joined and "output 64x64x16" in joined  # topic 8: torch vs TF
    assert "data:image/png;base64," in joined  # figures inline
    assert list(work.iterdir()) == []  # nothing written next to the notebook

    def result_of(snippet: str) -> dict:
        cell = next(c for c in code if snippet in c.source)
        return next(o["data"] for o in cell.outputs if o.output_type == "execute_result")

    assert result_of("changed = [")["text/plain"] == "[]"  # topic 15: the frozen base did not move
    assert "(ok)" in result_of("trace_unit(")["text/html"]  # topic 21: the traced total matches the model
    assert "45" in result_of("trace(xs, w, 1, 1)")["text/html"]  # topic 1: 9 + 18 + 18
