"""Training figures: learning curves, confusion matrix, strategy comparison.

Example:
    >>> hist = [{"epoch": 1, "train_loss": 1.0, "val_loss": 1.1, "train_accuracy": 0.5, "val_accuracy": 0.4}]
    >>> len(learning_curves(hist).axes)
    2
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from convlens.errors import InputError

__all__ = ["learning_curves", "confusion_matrix_plot", "comparison_plot"]


def learning_curves(history: Sequence[Mapping[str, Any]], *, title: str = "") -> Figure:
    """Train/val loss (left) and accuracy (middle) per epoch; stage changes drawn as dashed lines. When the
    history records each parameter group's learning rate (``lr_groups``), a third panel draws them on a log
    scale, each epoch as a segment from its first to its last step's LR (the cosine schedule within it), so
    discriminative fine-tuning rates (head vs. top-1, top-2 ... stages) are visible.

    Example:
        >>> learning_curves([{"epoch": 1, "train_loss": 1, "val_loss": 1, "train_accuracy": 0, "val_accuracy": 0}]).axes[0].get_ylabel()
        'loss'
        >>> g = [{"group": "head", "lr_start": 1e-3, "lr_end": 5e-4}]
        >>> h = {"epoch": 1, "train_loss": 1, "val_loss": 1, "train_accuracy": 0, "val_accuracy": 0, "lr_groups": g}
        >>> learning_curves([h]).axes[2].get_yscale()
        'log'
    """
    if not history:
        raise InputError("learning_curves needs at least one epoch of history.")
    ep = [h["epoch"] for h in history]
    with_lr = any(h.get("lr_groups") for h in history)
    panels = 3 if with_lr else 2
    fig = Figure(figsize=(4.5 * panels, 3.6), dpi=100)
    for i, (metric, ylabel) in enumerate((("loss", "loss"), ("accuracy", "accuracy"))):
        ax = fig.add_subplot(1, panels, i + 1)
        ax.plot(ep, [h[f"train_{metric}"] for h in history], marker="o", ms=3, label="train")
        ax.plot(ep, [h[f"val_{metric}"] for h in history], marker="s", ms=3, label="val")
        for a, b in zip(history, history[1:]):
            if a.get("stage") != b.get("stage"):
                ax.axvline(a["epoch"] + 0.5, color="gray", ls="--", lw=1)
                ax.text(a["epoch"] + 0.55, ax.get_ylim()[1], str(b.get("stage")), fontsize=7, va="top", color="gray")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(
            MaxNLocator(integer=True, min_n_ticks=1)
        )  # epochs are whole numbers (1 epoch gave 0.96 ... 1.04)
        ax.set_ylabel(ylabel)
        if metric == "accuracy":
            ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if with_lr:
        _lr_panel(fig.add_subplot(1, 3, 3), history)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def _lr_panel(ax: Any, history: Sequence[Mapping[str, Any]]) -> None:
    """One line per parameter-group name; epoch e spans x in [e - 1, e] from ``lr_start`` to ``lr_end``."""
    names: list[str] = []
    for h in history:
        for g in h.get("lr_groups") or []:
            if g["group"] not in names:
                names.append(g["group"])
    for k, name in enumerate(names):
        xs: list[float] = []
        ys: list[float] = []
        for h in history:
            for g in h.get("lr_groups") or []:
                if g["group"] == name:
                    xs += [h["epoch"] - 1, h["epoch"]]
                    ys += [g["lr_start"], g["lr_end"]]
            xs.append(float("nan"))  # a gap where the group did not train (e.g. top-1 in the head stage)
            ys.append(float("nan"))
        ax.plot(xs, ys, color=f"C{k}", lw=1.5, label=name)
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    ax.set_ylabel("learning rate (per group)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)


def confusion_matrix_plot(confusion: Sequence[Sequence[int]], classes: Sequence[str], *, title: str = "") -> Figure:
    """Counts with rows = true class, columns = predicted class; each cell annotated.

    Example:
        >>> confusion_matrix_plot([[3, 1], [0, 4]], ["a", "b"]).axes[0].get_xlabel()
        'predicted'
    """
    c = np.asarray(confusion, dtype=np.int64)
    if c.ndim != 2 or c.shape[0] != c.shape[1] or c.shape[0] != len(classes):
        raise InputError(f"confusion must be KxK for {len(classes)} classes, got shape {c.shape}.")
    k = len(classes)
    side = min(10.0, 2.0 + 0.45 * k)
    fig = Figure(figsize=(side + 1, side), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(c, cmap="Blues")
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_xticks(range(k), [str(x) for x in classes], rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(k), [str(x) for x in classes], fontsize=8)
    hi = c.max() if c.size else 0
    for i in range(k):
        for j in range(k):
            ax.text(
                j, i, str(c[i, j]), ha="center", va="center", fontsize=8, color="white" if c[i, j] > hi / 2 else "black"
            )
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    acc = np.trace(c) / max(1, c.sum())
    ax.set_title(title or f"validation confusion (accuracy {acc:.3f})", fontsize=10)
    fig.tight_layout()
    return fig


def comparison_plot(histories: Mapping[str, Sequence[Mapping[str, Any]]], *, title: str = "") -> Figure:
    """Val accuracy (left) and val loss (right) per epoch, one line per strategy.

    Example:
        >>> h = [{"epoch": 1, "val_loss": 1.0, "val_accuracy": 0.5}]
        >>> len(comparison_plot({"scratch": h, "features": h}).axes[0].lines)
        2
    """
    if not histories:
        raise InputError("comparison_plot needs at least one run.")
    fig = Figure(figsize=(9, 3.6), dpi=100)
    for i, (metric, ylabel) in enumerate((("val_accuracy", "val accuracy"), ("val_loss", "val loss"))):
        ax = fig.add_subplot(1, 2, i + 1)
        for name, hist in histories.items():
            ax.plot([h["epoch"] for h in hist], [h[metric] for h in hist], marker="o", ms=3, label=name)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(
            MaxNLocator(integer=True, min_n_ticks=1)
        )  # epochs are whole numbers (1 epoch gave 0.96 ... 1.04)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
