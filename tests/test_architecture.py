"""docs/architecture.md and the import-linter contracts CI checks are the same list of layers."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _contract_layers() -> list[str]:
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (layers,) = [c for c in cfg["contracts"] if c["type"] == "layers"]
    return [" | ".join(sorted(p.strip() for p in line.split("|"))) for line in layers["layers"]]


def _doc_layers() -> list[str]:
    text = (ROOT / "docs" / "architecture.md").read_text()
    block = re.search(r"<!-- layers:begin -->\s*```\n(.*?)```\s*<!-- layers:end -->", text, re.S)
    assert block, "docs/architecture.md lost its layers block"
    return [" | ".join(sorted(p.strip() for p in line.split("|"))) for line in block.group(1).splitlines() if line]


def test_documented_layers_are_the_checked_contract():
    assert _doc_layers() == _contract_layers()


def test_every_subpackage_and_module_sits_in_a_layer():
    """A new top-level module outside the contract would be checked by nothing."""
    placed = {name for line in _contract_layers() for name in line.split(" | ")}
    pkg = ROOT / "src" / "convlens"
    present = {p.stem for p in pkg.glob("*.py") if not p.stem.startswith("_")}
    present |= {p.name for p in pkg.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert present == placed, f"not in a layer: {sorted(present - placed)}; gone: {sorted(placed - present)}"
