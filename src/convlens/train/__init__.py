"""Training: strategies from scratch to fine-tuning, freezing done right, resumable checkpoints, DDP.

Example:
    >>> from convlens.train import TrainConfig, plan_stages
    >>> [s.name for s in plan_stages(TrainConfig(strategy="finetune", epochs=4))]
    ['head', 'finetune']
"""

from convlens.train.loop import STRATEGIES, Stage, TrainConfig, TrainResult, TrainRun, default_augment, fit, plan_stages
from convlens.train.surgery import (
    apply_train_mode,
    base_stages,
    find_head,
    frozen_modules,
    reinitialize,
    replace_head,
    set_trainable,
    top_stage_groups,
)

__all__ = [
    "STRATEGIES",
    "Stage",
    "TrainConfig",
    "TrainResult",
    "TrainRun",
    "default_augment",
    "fit",
    "plan_stages",
    "apply_train_mode",
    "base_stages",
    "find_head",
    "frozen_modules",
    "reinitialize",
    "replace_head",
    "set_trainable",
    "top_stage_groups",
]
