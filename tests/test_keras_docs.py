"""docs/keras.md is a tested example: its script trains and saves the model, its commands run on it, and the
architecture numbers it shows (the summary table) are what the command prints today."""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import pytest

os.environ["KERAS_BACKEND"] = "torch"
pytest.importorskip("keras")

DOC = Path(__file__).resolve().parents[1] / "docs" / "keras.md"


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", DOC.read_text(), flags=re.S)


@pytest.mark.slow
def test_the_keras_page_runs_as_written(tmp_path, monkeypatch, capsys):
    import keras

    from convlens.cli import main

    # Keras numbers auto-named layers per process ('rescaling_2' after other tests built two): start from a clean
    # session so the page's layer names are the ones a reader running it alone gets
    keras.backend.clear_session()
    monkeypatch.chdir(tmp_path)
    script, api = _blocks("python")[:2]
    exec(compile(script, str(DOC), "exec"), {"__name__": "keras_doc"})  # builds, trains 2 epochs, saves
    assert {"faces.keras", "faces.json", "face.png"} <= {p.name for p in tmp_path.iterdir()}
    capsys.readouterr()
    for block in _blocks("console"):
        lines = block.splitlines()
        for i, line in enumerate(lines):
            if not line.startswith("$ convlens "):
                continue
            args = shlex.split(line[len("$ convlens ") :])
            assert main(args) == 0, (line, capsys.readouterr().err)
            printed = capsys.readouterr().out
            if args[0] == "summary":  # data-independent numbers: the table and totals exactly as documented
                shown = []
                for doc_line in lines[i + 1 :]:
                    if doc_line.startswith("$ "):
                        break
                    shown.append(doc_line)

                def numbers(text_lines: list[str]) -> list[str]:
                    keep = [t for t in text_lines if t.startswith(("│", "total params"))]
                    return keep + [t.split(";")[0] for t in text_lines if t.startswith("total MACs")]

                assert numbers(printed.splitlines()) == numbers(shown)
                assert len(numbers(shown)) > 5
    ns: dict = {}
    exec(compile(api, str(DOC), "exec"), ns)
    assert tuple(ns["x"].shape) == (1, 1, 25, 25) and tuple(ns["maps"].shape) == (1, 25, 25)
    assert ns["bundle"].meta.source == "keras" and ns["bundle"].pretrained
