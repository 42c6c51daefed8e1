"""Slow, process-level training tests: SIGKILL mid-run then ``--resume``; 2-process torchrun (gloo) == 1 process.

Both run the one training command, ``python -m convlens train`` (under torchrun: ``-m convlens train``)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from train_helpers import TINY_MODEL, make_folder

from convlens.train import TrainConfig, fit

pytestmark = pytest.mark.slow

ENV = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("tinyd"), n_per_class=20, size=24)


def _args(folder, out, **kw) -> list[str]:
    opts = {
        "--data": str(folder),
        "--model": TINY_MODEL,
        "--image-size": "32",
        "--batch-size": "8",
        "--seed": "0",
        "--lr": "0.003",
        "--unfreeze": "1",
        "--out": str(out),
    }
    opts.update({k: str(v) for k, v in kw.items()})
    return [x for kv in opts.items() for x in kv]


def _in_process(folder, **kw) -> dict:
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        opts = dict(data=str(folder), model=TINY_MODEL, image_size=32, batch_size=8, seed=0, lr=0.003, unfreeze=1)
        c = TrainConfig(**{**opts, **kw})
        r = fit(c)
    finally:
        torch.set_num_threads(n)
    return {"result": r.result, "history": r.history}


def test_sigkill_then_resume_matches_uninterrupted_run(folder, tmp_path):
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "convlens",
        "train",
        "--strategy",
        "finetune",
        "--epochs",
        "12",
        "--head-epochs",
        "3",
    ] + _args(folder, out, **{"--image-size": 48})
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    state_file = out / "checkpoint.json"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if state_file.is_file():
            break
        time.sleep(0.01)
    assert proc.poll() is None, "training ended before it could be killed: " + proc.stderr.read().decode()[-500:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    state = json.loads(state_file.read_text())
    done = state["epoch"]
    assert 1 <= done < 12 and [h["epoch"] for h in state["history"]] == list(range(1, done + 1))
    assert done < 3, "killed after the head stage: resume would not cross the freeze -> unfreeze boundary"
    res = subprocess.run(cmd + ["--resume", "--json"], env=ENV, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    resumed = json.loads(res.stdout)
    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == list(range(1, 13))
    assert [h["stage"] for h in history] == ["head"] * 3 + ["finetune"] * 9
    full = _in_process(folder, strategy="finetune", epochs=12, head_epochs=3, image_size=48)
    assert resumed["epochs_done"] == 12
    for k in ("train_loss", "val_loss", "val_accuracy"):
        assert resumed[k] == pytest.approx(getattr(full["result"], k), rel=1e-4, abs=1e-5), k
    for a, b in zip(history, full["history"], strict=True):
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-4, abs=1e-5)


def test_torchrun_two_processes_match_one_process(folder, tmp_path):
    out = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "convlens",
        "train",
        "--strategy",
        "finetune",
        "--epochs",
        "2",
        "--json",
    ] + _args(folder, out)
    res = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    ddp = json.loads((out / "metrics.json").read_text())
    hist = json.loads((out / "history.json").read_text())
    assert sorted(p.name for p in out.glob("checkpoint*")) == ["checkpoint-0002.safetensors", "checkpoint.json"]
    single = _in_process(folder, strategy="finetune", epochs=2)
    assert hist[0]["images"] == single["history"][0]["images"] == 32  # the global batch covers the data once
    for k in ("train_loss", "val_loss", "val_accuracy"):
        assert ddp[k] == pytest.approx(getattr(single["result"], k), rel=1e-4, abs=1e-5), k
