"""Training runs on disk: one function writes a run folder, one compares strategies.

A run folder ``RUN_DIR`` holds (rank 0 writes, other DDP ranks only train)::

    checkpoint.json + checkpoint-NNNN.safetensors   resumable state (see convlens.train.checkpoint)
    features/                                        cached base outputs (strategy 'features')
    model.safetensors + model.json                   final weights + {"labels": [...], ...}
    metrics.json                                     {"strategy", "epochs_done", "train_loss", "val_loss",
                                                      "val_accuracy", "images_per_s", "pretrained",
                                                      "chance_accuracy", "at_chance"}
    history.json, data.json                          per-epoch records; dataset summary (skipped files)
    curves.png, confusion.png                        learning curves; validation confusion matrix

``convlens.models.load_model(name, weights=RUN_DIR/model.safetensors)`` reloads the trained model
with its labels.

Example:
    >>> import tempfile
    >>> cfg = TrainConfig(data="digits", strategy="features", model="resnet18", epochs=1, image_size=16)
    >>> run = run_training(cfg, tempfile.mkdtemp())
    >>> sorted(vars(run.result))[2:4]
    ['epochs_done', 'images_per_s']
"""

from __future__ import annotations

import csv
import io
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from convlens.errors import InputError
from convlens.train import checkpoint as ckpt
from convlens.train.loop import STRATEGIES, ProgressFn, TrainConfig, TrainResult, TrainRun, fit

__all__ = ["run_training", "compare", "Comparison", "parse_strategies", "strategy_dirname"]


def _finite(x: float) -> float | None:
    import math

    return x if isinstance(x, (int, float)) and math.isfinite(x) else None


def run_training(
    config: TrainConfig,
    out: str | os.PathLike[str],
    *,
    resume: bool = False,
    progress: ProgressFn | None = None,
) -> TrainRun:
    """Train (see :func:`convlens.train.fit`) with checkpoints in ``out`` and write the run folder."""
    from convlens.plot.train import confusion_matrix_plot, learning_curves
    from convlens.train.loop import _dist

    d = Path(out)
    if d.exists() and not d.is_dir():
        raise InputError(f"--out '{d}' exists and is not a folder.")
    d.mkdir(parents=True, exist_ok=True)
    run = fit(config, run_dir=d, resume=resume, progress=progress)
    if _dist()[1] != 0:
        return run
    ckpt.save_weights(
        d / "model.safetensors", run.model.state_dict(), {"model": config.model, "strategy": config.strategy}
    )
    ckpt.atomic_write_json(
        d / "model.json",
        {
            "labels": run.classes,
            "model": config.model,
            "strategy": config.strategy,
            "num_classes": len(run.classes),
            "head": run.head_name,
            "image_size": config.image_size,
            "note": "trained on images resized to image_size x image_size (gray -> RGB), normalized with the model's mean/std",
        },
    )
    metrics = {k: (_finite(v) if isinstance(v, float) else v) for k, v in asdict(run.result).items()}
    ckpt.atomic_write_json(d / "metrics.json", metrics)
    ckpt.atomic_write_json(d / "history.json", run.history)
    ckpt.atomic_write_json(d / "data.json", dict(run.data, config=config.to_dict()))
    title = f"{config.strategy} - {config.model} on {run.data.get('name', config.data)}"
    if run.history:
        learning_curves(run.history, title=title).savefig(d / "curves.png")
    confusion_matrix_plot(run.confusion, run.classes).savefig(d / "confusion.png")
    return run


def strategy_dirname(strategy: str) -> str:
    """Folder name of a strategy inside a comparison (``scratch+aug`` -> ``scratch_aug``).

    Example:
        >>> strategy_dirname("frozen+aug")
        'frozen_aug'
    """
    return strategy.replace("+", "_")


def parse_strategies(text: str) -> list[str]:
    """``'scratch,features'`` -> validated list (no duplicates).

    Example:
        >>> parse_strategies("scratch, finetune")
        ['scratch', 'finetune']
    """
    names = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in names if s not in STRATEGIES]
    if not names or bad:
        raise InputError(f"--compare takes strategies from {', '.join(STRATEGIES)} separated by commas; got '{text}'.")
    if len(set(names)) != len(names):
        raise InputError(f"--compare lists a strategy twice: '{text}'.")
    return names


@dataclass
class Comparison:
    """One row per strategy, in the order given, plus wall-clock seconds of each run."""

    rows: list[TrainResult]
    seconds: list[float]
    data: str
    model: str

    def table(self) -> list[dict[str, object]]:
        return [dict(asdict(r), seconds=round(s, 1)) for r, s in zip(self.rows, self.seconds, strict=True)]

    def to_dict(self) -> dict[str, object]:
        """The JSON form (``comparison.json``, ``convlens train --compare --json``): the data, the model and
        one row per strategy (its :class:`TrainResult` fields and ``seconds``), non-finite numbers as None."""
        from convlens.serialize import to_jsonable

        return to_jsonable({"data": self.data, "model": self.model, "rows": self.table()})

    def markdown(self) -> str:
        """A Markdown table of the comparison."""
        head = "| strategy | epochs | train loss | val loss | val accuracy | images/s | seconds |\n|---|---|---|---|---|---|---|\n"
        return head + "".join(
            f"| {r.strategy} | {r.epochs_done} | {r.train_loss:.3f} | {r.val_loss:.3f} | {r.val_accuracy:.3f} | "
            f"{r.images_per_s:.1f} | {s:.1f} |\n"
            for r, s in zip(self.rows, self.seconds, strict=True)
        )

    def csv(self) -> str:
        buf = io.StringIO()
        rows = self.table()
        w = csv.DictWriter(buf, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
        return buf.getvalue()


def compare(
    strategies: list[str],
    config: TrainConfig,
    out: str | os.PathLike[str],
    *,
    resume: bool = False,
    progress: ProgressFn | None = None,
) -> Comparison:
    """Train ``config`` once per strategy into ``out/<strategy>/``; write ``comparison.{json,md,csv,png}``."""
    from convlens.plot.train import comparison_plot

    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    rows, secs, hists = [], [], {}
    for s in strategies:
        cfg = replace(config, strategy=s)
        sub = d / strategy_dirname(s)
        if progress is not None:
            progress({"event": "run", "strategy": s, "out": str(sub)})
        t0 = time.perf_counter()
        run = run_training(cfg, sub, resume=resume and ckpt.has_checkpoint(sub), progress=progress)
        secs.append(time.perf_counter() - t0)
        rows.append(run.result)
        hists[s] = run.history
    comp = Comparison(rows, secs, config.data, config.model)
    ckpt.atomic_write_json(d / "comparison.json", comp.to_dict())
    (d / "comparison.md").write_text(comp.markdown())
    (d / "comparison.csv").write_text(comp.csv())
    comparison_plot(hists, title=f"{config.model} on {config.data}").savefig(d / "comparison.png")
    return comp
