"""Benchmarks measure instead of claiming: the load average is recorded, never a hand-typed "shared machine"
note, and bench_cam's contenders do not pay for pytorch-grad-cam's hooks."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str):
    sys.path.insert(0, str(BENCH))  # the scripts import their sibling _machine, as when run from benchmarks/
    try:
        spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    finally:
        sys.path.remove(str(BENCH))


@pytest.mark.parametrize("script", sorted(p.name for p in BENCH.glob("bench_*.py")))
def test_scripts_record_the_load_average_and_type_no_shared_machine_note(script):
    src = (BENCH / script).read_text()
    assert not re.search(r"shared (machine|with other jobs)|SHARED|contended\)", src), script
    assert "_machine.machine()" in src or "getloadavg" in src, f"{script} does not record the load average"


def _find(d, key):
    """The first value of ``key`` anywhere in nested dicts (scripts put the machine record at top level or under
    a 'machine' key)."""
    if isinstance(d, dict):
        if key in d:
            return True, d[key]
        for v in d.values():
            found, value = _find(v, key)
            if found:
                return True, value
    return False, None


def test_results_carry_the_load_average_and_no_typed_claim():
    """Every result states its load average (null only with the reason it was not measured)."""
    for p in sorted((BENCH / "results").glob("*.json")):
        d = json.loads(p.read_text())
        found, value = _find(d, "load_average_1min")
        assert found, f"{p.name} has no load average"
        assert value is not None or _find(d, "load_note")[0], p.name
        assert not re.search(r"shared machine|SHARED|shared with other jobs", p.read_text()), p.name


def test_machine_info_is_measured():
    mod = _load("_machine")
    info = mod.machine()
    assert info["cpu_count"] >= 1 and info["load_average_1min"] >= 0 and info["torch"] == torch.__version__
    json.dumps(info)


def test_bench_cam_removes_pytorch_grad_cam_hooks_between_rounds():
    """After each contender's round the model holds no hook: the next contender runs on a clean model."""
    import torchvision

    from convlens.hooks import hook_count

    bench = _load("bench_cam")
    model = torchvision.models.resnet18(num_classes=4).eval()
    x = torch.randn(1, 3, 32, 32)
    contenders = bench.make_contenders(model, x, torch.zeros(1, dtype=torch.long))
    assert hook_count(model) == 0
    for name, run in contenders.items():
        run()
        assert hook_count(model) == 0, f"{name} left hooks on the model"
